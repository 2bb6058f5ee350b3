#include "estargz/reader.h"

#include <algorithm>
#include <array>
#include <map>
#include <unordered_map>

#include "compress/compress.h"
#include "crypto/ocicrypt_ctr.h"
#include "format/toc.h"
#include "tar/tar_reader.h"

namespace lazycrypt::estargz {

namespace {

std::string Where(size_t index) { return "estargz TOC: entry " + std::to_string(index); }

Result<EntryType> ParseType(std::string_view t) {
  if (t == "reg") return EntryType::kRegular;
  if (t == "dir") return EntryType::kDirectory;
  if (t == "symlink") return EntryType::kSymlink;
  if (t == "hardlink") return EntryType::kHardlink;
  if (t == "char") return EntryType::kCharDevice;
  if (t == "block") return EntryType::kBlockDevice;
  if (t == "fifo") return EntryType::kFifo;
  return Status::Corruption("unknown type");
}

// [offset, offset + size) of a BlobSource as a stream, read in pieces (so an inflater pulls
// only what it needs).
class RangeStream final : public InputStream {
 public:
  RangeStream(BlobSource& blob, uint64_t offset, uint64_t size)
      : blob_(blob), pos_(offset), left_(size) {}
  Result<size_t> Read(MutableByteSpan out) override {
    size_t n = static_cast<size_t>(std::min<uint64_t>({out.size(), left_, kPieceBytes}));
    if (n == 0) return size_t{0};
    LC_RETURN_IF_ERROR(blob_.ReadAt(pos_, out.first(n)));
    pos_ += n;
    left_ -= n;
    return n;
  }

 private:
  static constexpr uint64_t kPieceBytes = 64 << 10;
  BlobSource& blob_;
  uint64_t pos_, left_;
};

}  // namespace

bool Index::IsEstargzMetadataName(std::string_view name) {
  return name == kTocTarName || name == kPrefetchLandmark || name == kNoPrefetchLandmark;
}

Result<std::shared_ptr<const Index>> Index::Build(const Toc& toc, uint64_t toc_offset,
                                                  const crypto::Sha256Digest& toc_digest,
                                                  const ReaderLimits& limits) {
  std::shared_ptr<Index> index(new Index());
  index->toc_offset_ = toc_offset;
  index->toc_digest_ = toc_digest;
  auto& entries = index->entries_;
  auto& chunks = index->chunks_;
  std::unordered_map<std::string, uint32_t> by_name;  // the last entry of each name
  std::map<uint64_t, std::string> unames, gnames;
  bool have_last = false;
  uint64_t last_offset = 0, last_inner = 0;
  int64_t open_file = -1;  // the regular file whose chunks may follow
  uint64_t next_file_offset = 0;

  auto add_chunk = [&](size_t i, const TocEntry& te, uint64_t size) -> Status {
    if (size == 0 || size > limits.max_chunk_bytes) {
      return Status::Corruption(Where(i) + ": chunk size " + std::to_string(size) +
                                " is 0 or over the limit of " + std::to_string(limits.max_chunk_bytes));
    }
    if (te.inner_offset > limits.max_inner_offset_bytes) {
      return Status::Corruption(Where(i) + ": innerOffset over the limit");
    }
    if (te.offset >= toc_offset) {
      return Status::Corruption(Where(i) + ": chunk offset " + std::to_string(te.offset) +
                                " is not before the TOC at " + std::to_string(toc_offset));
    }
    if (have_last && (te.offset < last_offset ||
                      (te.offset == last_offset && te.inner_offset <= last_inner))) {
      return Status::Corruption(Where(i) + ": chunk offsets do not increase");
    }
    if (te.chunk_digest.empty()) return Status::Corruption(Where(i) + ": no chunkDigest");
    auto digest = crypto::ParseOciDigest(te.chunk_digest);
    if (!digest.ok()) return Status::Corruption(Where(i) + ": chunkDigest is not a sha256 digest");
    if (chunks.size() >= UINT32_MAX) return Status::Corruption(Where(i) + ": too many chunks");
    have_last = true;
    last_offset = te.offset;
    last_inner = te.inner_offset;
    ChunkRef c;
    c.entry = static_cast<uint32_t>(open_file);
    c.compressed_offset = te.offset;
    c.inner_offset = te.inner_offset;
    c.file_offset = next_file_offset;
    c.size = size;
    c.digest = *digest;
    chunks.push_back(c);
    Entry& file = entries[static_cast<size_t>(open_file)];
    ++file.chunk_count;
    next_file_offset += size;
    return Status::Ok();
  };
  auto close_file = [&](size_t i) -> Status {
    if (open_file < 0) return Status::Ok();
    const Entry& file = entries[static_cast<size_t>(open_file)];
    if (next_file_offset != file.size) {
      return Status::Corruption(Where(i) + ": the chunks of the file before it cover " +
                                std::to_string(next_file_offset) + " of its " +
                                std::to_string(file.size) + " bytes");
    }
    open_file = -1;
    return Status::Ok();
  };

  for (size_t i = 0; i < toc.entries.size(); ++i) {
    const TocEntry& te = toc.entries[i];
    if (te.type == "chunk") {
      if (open_file < 0 || next_file_offset >= entries[static_cast<size_t>(open_file)].size) {
        return Status::Corruption(Where(i) + ": a chunk that follows no unfinished regular file");
      }
      if (te.chunk_offset != next_file_offset) {
        return Status::Corruption(Where(i) + ": chunkOffset " + std::to_string(te.chunk_offset) +
                                  ", expected " + std::to_string(next_file_offset));
      }
      uint64_t left = entries[static_cast<size_t>(open_file)].size - next_file_offset;
      uint64_t size = te.chunk_size == 0 ? left : te.chunk_size;
      if (size > left) return Status::Corruption(Where(i) + ": chunk runs past the end of its file");
      LC_RETURN_IF_ERROR(add_chunk(i, te, size));
      continue;
    }
    LC_RETURN_IF_ERROR(close_file(i));
    auto type = ParseType(te.type);
    if (!type.ok()) return Status::Corruption(Where(i) + ": unknown type");
    auto name = format::NormalizeEntryName(te.name);
    if (!name.ok()) return Status::Corruption(Where(i) + ": the name is not a valid path");
    if (entries.size() >= UINT32_MAX) return Status::Corruption(Where(i) + ": too many entries");
    Entry e;
    e.name = std::move(*name);
    e.type = *type;
    e.mode = te.mode;
    e.uid = te.uid;
    e.gid = te.gid;
    if (!te.uname.empty()) unames[te.uid] = te.uname;
    if (!te.gname.empty()) gnames[te.gid] = te.gname;
    e.uname = te.uname.empty() ? unames[te.uid] : te.uname;
    e.gname = te.gname.empty() ? gnames[te.gid] : te.gname;
    e.modtime = te.modtime;
    e.xattrs = te.xattrs;
    e.dev_major = te.dev_major;
    e.dev_minor = te.dev_minor;
    switch (e.type) {
      case EntryType::kSymlink:
        if (te.link_name.empty()) return Status::Corruption(Where(i) + ": a symlink without a target");
        e.link_name = te.link_name;
        break;
      case EntryType::kHardlink: {
        auto target = format::NormalizeEntryName(te.link_name);
        if (!target.ok() || !by_name.contains(*target)) {
          return Status::Corruption(Where(i) + ": a hard link to no earlier entry");
        }
        e.link_name = std::move(*target);
        break;
      }
      default:
        break;
    }
    const uint32_t self = static_cast<uint32_t>(entries.size());
    if (e.type == EntryType::kRegular) {
      e.size = te.size;
      if (e.size > tar::kMaxEntrySize) return Status::Corruption(Where(i) + ": file size out of range");
      if (!te.digest.empty()) {
        auto d = crypto::ParseOciDigest(te.digest);
        if (!d.ok()) return Status::Corruption(Where(i) + ": digest is not a sha256 digest");
        e.file_digest = *d;
      }
      e.first_chunk = static_cast<uint32_t>(chunks.size());
      if (e.name == kPrefetchLandmark && !index->has_prefetch_landmark_) {
        index->has_prefetch_landmark_ = true;
        for (uint32_t j = 0; j < self; ++j) {
          if (entries[j].type == EntryType::kRegular && entries[j].size > 0 &&
              !IsEstargzMetadataName(entries[j].name)) {
            index->prefetch_.push_back(j);
          }
        }
      }
    } else if (te.size != 0 || te.offset != 0 || !te.chunk_digest.empty()) {
      return Status::Corruption(Where(i) + ": data fields on an entry that is not a regular file");
    }
    by_name[e.name] = self;
    entries.push_back(std::move(e));
    if (entries.back().type == EntryType::kRegular && entries.back().size > 0) {
      open_file = self;
      next_file_offset = 0;
      if (te.chunk_offset != 0) return Status::Corruption(Where(i) + ": first chunkOffset is not 0");
      uint64_t size = te.chunk_size == 0 ? te.size : te.chunk_size;
      if (size > te.size) return Status::Corruption(Where(i) + ": chunk runs past the end of its file");
      LC_RETURN_IF_ERROR(add_chunk(i, te, size));
    }
  }
  LC_RETURN_IF_ERROR(close_file(toc.entries.size()));
  // A chunk's member ends where the next member with data begins (or at the TOC member).
  uint64_t boundary = toc_offset;
  for (size_t j = chunks.size(); j-- > 0;) {
    if (j + 1 < chunks.size() && chunks[j + 1].compressed_offset > chunks[j].compressed_offset) {
      boundary = chunks[j + 1].compressed_offset;
    }
    chunks[j].compressed_size = boundary - chunks[j].compressed_offset;
  }
  return std::shared_ptr<const Index>(std::move(index));
}

Result<std::vector<uint8_t>> ExtractTocJson(ByteSpan toc_member, const ReaderLimits& limits) {
  if (toc_member.size() > limits.max_toc_member_bytes) {
    return Status::Corruption("estargz TOC member: " + std::to_string(toc_member.size()) +
                              " bytes, over the limit of " +
                              std::to_string(limits.max_toc_member_bytes));
  }
  MemoryInputStream compressed(toc_member);
  auto inflated = compress::NewGzipInputStream(compressed);
  tar::TarReader reader(*inflated);
  auto first = reader.Next();
  if (!first.ok()) return first.status().WithContext("estargz TOC member");
  if (!first->has_value()) return Status::Corruption("estargz TOC member: an empty tar");
  const tar::Entry& e = **first;
  auto name = format::NormalizeEntryName(e.name);
  if (e.type != tar::EntryType::kRegular || !name.ok() || *name != kTocTarName) {
    return Status::Corruption("estargz TOC member: its first file is not stargz.index.json");
  }
  if (e.size > limits.toc.max_json_bytes) {
    return Status::Corruption("estargz TOC: " + std::to_string(e.size) +
                              " bytes of JSON, over the limit of " +
                              std::to_string(limits.toc.max_json_bytes));
  }
  std::vector<uint8_t> json(static_cast<size_t>(e.size));
  size_t got = 0;
  while (got < json.size()) {
    LC_ASSIGN_OR_RETURN(size_t n, reader.ReadData(MutableByteSpan(json).subspan(got)));
    if (n == 0) return Status::Corruption("estargz TOC member: stargz.index.json is cut short");
    got += n;
  }
  return json;
}

Result<std::shared_ptr<const Index>> OpenIndex(BlobSource& plain,
                                               const crypto::Sha256Digest& pinned_toc_digest,
                                               const ReaderLimits& limits) {
  const uint64_t blob_size = plain.size();
  if (blob_size < kFooterSize) {
    return Status::Corruption("estargz: the blob (" + std::to_string(blob_size) +
                              " bytes) is smaller than the footer");
  }
  std::array<uint8_t, kFooterSize> footer;
  LC_RETURN_IF_ERROR(plain.ReadAt(blob_size - kFooterSize, footer).WithContext("estargz footer"));
  LC_ASSIGN_OR_RETURN(uint64_t toc_offset, ParseFooter(footer));
  if (toc_offset > blob_size - kFooterSize) {
    return Status::Corruption("estargz footer: TOC offset " + std::to_string(toc_offset) +
                              " is past the footer at " + std::to_string(blob_size - kFooterSize));
  }
  uint64_t member_size = blob_size - kFooterSize - toc_offset;
  if (member_size > limits.max_toc_member_bytes) {
    return Status::Corruption("estargz TOC member: " + std::to_string(member_size) +
                              " bytes, over the limit of " +
                              std::to_string(limits.max_toc_member_bytes));
  }
  std::vector<uint8_t> member(static_cast<size_t>(member_size));
  LC_RETURN_IF_ERROR(plain.ReadAt(toc_offset, member).WithContext("estargz TOC member"));
  LC_ASSIGN_OR_RETURN(std::vector<uint8_t> json, ExtractTocJson(member, limits));
  crypto::Sha256Digest digest = crypto::Sha256::Of(json);
  if (digest != pinned_toc_digest) {
    return Status::AuthFailed("estargz TOC digest mismatch: the manifest pins " +
                              crypto::OciDigest(pinned_toc_digest) + ", the blob's is " +
                              crypto::OciDigest(digest));
  }
  LC_ASSIGN_OR_RETURN(Toc toc, ParseToc(AsStringView(json), limits.toc));
  return Index::Build(toc, toc_offset, digest, limits);
}

Status ReadChunk(BlobSource& plain, const ChunkRef& chunk, MutableByteSpan out) {
  if (out.size() != chunk.size) {
    return Status::InvalidArgument("estargz: ReadChunk needs a buffer of the chunk's size");
  }
  if (chunk.compressed_offset > plain.size() ||
      chunk.compressed_size > plain.size() - chunk.compressed_offset) {
    return Status::Corruption("estargz chunk: its member lies outside the blob");
  }
  RangeStream compressed(plain, chunk.compressed_offset, chunk.compressed_size);
  auto inflated = compress::NewGzipInputStream(compressed);
  std::vector<uint8_t> skip(static_cast<size_t>(std::min<uint64_t>(chunk.inner_offset, 64 << 10)));
  for (uint64_t left = chunk.inner_offset; left > 0;) {
    MutableByteSpan piece(skip.data(), static_cast<size_t>(std::min<uint64_t>(left, skip.size())));
    LC_RETURN_IF_ERROR(ReadFull(*inflated, piece, "estargz chunk member"));
    left -= piece.size();
  }
  LC_RETURN_IF_ERROR(ReadFull(*inflated, out, "estargz chunk member"));
  if (crypto::Sha256::Of(out) != chunk.digest) {
    return Status::AuthFailed("estargz chunk at " + std::to_string(chunk.compressed_offset) +
                              ": digest mismatch");
  }
  return Status::Ok();
}

Result<std::unique_ptr<CtrPlaintextView>> CtrPlaintextView::Create(
    BlobSource& ciphertext, std::span<const uint8_t> key, std::span<const uint8_t> nonce) {
  if (key.size() != crypto::kCtrKeySize || nonce.size() != crypto::kCtrNonceSize) {
    return Status::InvalidArgument("estargz: AES-CTR needs a 32-byte key and a 16-byte nonce");
  }
  return std::unique_ptr<CtrPlaintextView>(new CtrPlaintextView(
      ciphertext, crypto::SecureBuffer(key), std::vector<uint8_t>(nonce.begin(), nonce.end())));
}

Status CtrPlaintextView::ReadAt(uint64_t offset, MutableByteSpan out) {
  LC_RETURN_IF_ERROR(ciphertext_.ReadAt(offset, out));
  return crypto::AesCtrXorAt(key_.span(), nonce_, offset, out, out);
}

}  // namespace lazycrypt::estargz
