#include "format/toc.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "compress/compress.h"
#include "crypto/secure_buffer.h"
#include "format/toc.pb.h"

namespace lazycrypt::format {
namespace {

// Linux limits: a path component (NAME_MAX) and a whole path or symlink target (PATH_MAX - 1). A
// layer beyond them could not be extracted by anyone either.
constexpr size_t kMaxComponentSize = 255;
constexpr size_t kMaxPathSize = 4095;
constexpr size_t kMaxOwnerNameSize = 4096;
constexpr size_t kMaxXattrNameSize = 255;     // XATTR_NAME_MAX
constexpr size_t kMaxXattrValueSize = 65536;  // XATTR_SIZE_MAX

std::string Num(uint64_t v) { return std::to_string(v); }

bool HasNul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

// Names stay out of reader-side messages (the TOC is confidential, errors reach logs); the
// writer, whose user owns the names, asks for them.
Status EntryError(size_t index, const std::string* name, const std::string& what) {
  return Status::Corruption("TOC entry " + Num(index) + (name ? " '" + *name + "'" : "") + ": " +
                            what);
}

}  // namespace

std::string_view EntryTypeName(EntryType type) {
  switch (type) {
    case EntryType::kRegular: return "regular file";
    case EntryType::kDirectory: return "directory";
    case EntryType::kSymlink: return "symlink";
    case EntryType::kHardlink: return "hardlink";
    case EntryType::kCharDevice: return "character device";
    case EntryType::kBlockDevice: return "block device";
    case EntryType::kFifo: return "fifo";
  }
  return "unknown type";
}

Result<std::string> NormalizeEntryName(std::string_view raw) {
  if (raw.empty()) return Status::Corruption("name is empty");
  if (HasNul(raw)) return Status::Corruption("name contains a NUL byte");
  std::string out;
  out.reserve(raw.size());
  size_t pos = 0;
  while (pos <= raw.size()) {
    size_t slash = raw.find('/', pos);
    if (slash == std::string_view::npos) slash = raw.size();
    std::string_view part = raw.substr(pos, slash - pos);
    pos = slash + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") return Status::Corruption("name has a '..' component");
    if (part.size() > kMaxComponentSize) {
      return Status::Corruption("name has a " + Num(part.size()) + "-byte component (limit " +
                                Num(kMaxComponentSize) + ")");
    }
    if (!out.empty()) out.push_back('/');
    out.append(part);
  }
  if (out.empty()) return std::string(".");
  if (out.size() > kMaxPathSize) {
    return Status::Corruption("name is " + Num(out.size()) + " bytes long (limit " +
                              Num(kMaxPathSize) + ")");
  }
  return out;
}

bool IsNormalizedName(std::string_view name) {
  auto normalized = NormalizeEntryName(name);
  return normalized.ok() && *normalized == name;
}

Status ValidateEntry(const Entry& e, uint64_t tar_size) {
  if (!IsNormalizedName(e.name)) {
    auto n = NormalizeEntryName(e.name);
    return Status::Corruption(n.ok() ? std::string("name is not in normalized form")
                                     : n.status().message());
  }
  switch (e.type) {
    case EntryType::kRegular:
    case EntryType::kDirectory:
    case EntryType::kSymlink:
    case EntryType::kHardlink:
    case EntryType::kCharDevice:
    case EntryType::kBlockDevice:
    case EntryType::kFifo:
      break;
    default:
      return Status::Corruption("type " + Num(static_cast<unsigned>(e.type)) + " is unknown");
  }
  if (e.name == "." && e.type != EntryType::kDirectory) {
    return Status::Corruption("the root '.' is a " + std::string(EntryTypeName(e.type)) +
                              ", not a directory");
  }
  if (e.mode > 07777) return Status::Corruption("mode " + Num(e.mode) + " has bits above 07777");
  if (e.mtime_nsec >= 1000000000u) {
    return Status::Corruption("mtime nanoseconds " + Num(e.mtime_nsec) + " >= 1e9");
  }
  if (e.uname.size() > kMaxOwnerNameSize || e.gname.size() > kMaxOwnerNameSize) {
    return Status::Corruption("user or group name is longer than " + Num(kMaxOwnerNameSize) +
                              " bytes");
  }
  if (e.type == EntryType::kRegular) {
    if (e.data_offset > tar_size || e.size > tar_size - e.data_offset) {
      return Status::Corruption("data range [" + Num(e.data_offset) + ", +" + Num(e.size) +
                                ") is outside the " + Num(tar_size) + "-byte tar stream");
    }
  } else if (e.size != 0 || e.data_offset != 0) {
    return Status::Corruption(std::string(EntryTypeName(e.type)) +
                              " has a data size or offset (only regular files have data)");
  }
  switch (e.type) {
    case EntryType::kSymlink:
      if (e.link_target.empty()) return Status::Corruption("symlink target is empty");
      if (HasNul(e.link_target)) return Status::Corruption("symlink target contains a NUL byte");
      if (e.link_target.size() > kMaxPathSize) {
        return Status::Corruption("symlink target is " + Num(e.link_target.size()) +
                                  " bytes long (limit " + Num(kMaxPathSize) + ")");
      }
      break;
    case EntryType::kHardlink:
      if (!IsNormalizedName(e.link_target) || e.link_target == ".") {
        return Status::Corruption("hardlink target is not a normalized entry name");
      }
      break;
    default:
      if (!e.link_target.empty()) {
        return Status::Corruption(std::string(EntryTypeName(e.type)) + " has a link target");
      }
  }
  if (e.type != EntryType::kCharDevice && e.type != EntryType::kBlockDevice &&
      (e.dev_major != 0 || e.dev_minor != 0)) {
    return Status::Corruption(std::string(EntryTypeName(e.type)) + " has device numbers");
  }
  for (const auto& [name, value] : e.xattrs) {
    if (name.empty() || name.size() > kMaxXattrNameSize || HasNul(name)) {
      return Status::Corruption("an xattr name is empty, longer than " + Num(kMaxXattrNameSize) +
                                " bytes or contains NUL");
    }
    if (value.size() > kMaxXattrValueSize) {
      return Status::Corruption("an xattr value is " + Num(value.size()) + " bytes (limit " +
                                Num(kMaxXattrValueSize) + ")");
    }
  }
  return Status::Ok();
}

Status TocLimits::Validate(std::string_view what) const {
  auto check = [&](uint64_t v, uint64_t max, const char* name) -> Status {
    if (v == 0 || v > max) {
      return Status::InvalidArgument(std::string(what) + ": " + name + " " + Num(v) +
                                     " is outside 1.." + Num(max) + " (the format's maximum)");
    }
    return Status::Ok();
  };
  LC_RETURN_IF_ERROR(check(max_serialized_bytes, kMaxTocSerializedSize, "max_bytes"));
  LC_RETURN_IF_ERROR(check(max_chunks, kMaxChunks, "max_chunks"));
  return check(max_entries, kMaxTocEntries, "max_entries");
}

uint64_t TocLimits::MaxSealedBytes() const {
  return kTocSizePrefixSize + compress::ZstdCompressor::Bound(max_serialized_bytes) + kTagSize;
}

void EntryToProto(Entry e, v1::Entry* p) {
  p->set_name(std::move(e.name));
  p->set_type(static_cast<v1::EntryType>(static_cast<int>(e.type)));  // same numbering
  p->set_mode(e.mode);
  p->set_uid(e.uid);
  p->set_gid(e.gid);
  p->set_uname(std::move(e.uname));
  p->set_gname(std::move(e.gname));
  p->set_mtime_sec(e.mtime_sec);
  p->set_mtime_nsec(e.mtime_nsec);
  p->set_size(e.size);
  p->set_link_target(std::move(e.link_target));
  p->set_dev_major(e.dev_major);
  p->set_dev_minor(e.dev_minor);
  for (const auto& [k, v] : e.xattrs) {  // std::map: sorted, unique
    v1::Xattr* x = p->add_xattrs();
    x->set_name(k);
    x->set_value(v);
  }
  p->set_data_offset(e.data_offset);
}

Result<Entry> EntryFromProto(const v1::Entry& p) {
  Entry e;
  const int type = p.type();
  if (type < static_cast<int>(EntryType::kRegular) || type > static_cast<int>(EntryType::kFifo)) {
    return Status::Corruption("type " + std::to_string(type) + " is unknown");
  }
  e.name = p.name();
  e.type = static_cast<EntryType>(type);
  e.mode = p.mode();
  e.uid = p.uid();
  e.gid = p.gid();
  e.uname = p.uname();
  e.gname = p.gname();
  e.mtime_sec = p.mtime_sec();
  e.mtime_nsec = p.mtime_nsec();
  e.size = p.size();
  e.link_target = p.link_target();
  e.dev_major = p.dev_major();
  e.dev_minor = p.dev_minor();
  e.data_offset = p.data_offset();
  const std::string* previous_name = nullptr;
  for (const v1::Xattr& x : p.xattrs()) {
    if (previous_name != nullptr && !(*previous_name < x.name())) {
      return Status::Corruption("xattr names are not sorted and unique");
    }
    previous_name = &x.name();
    e.xattrs.emplace_hint(e.xattrs.end(), x.name(), x.value());
  }
  return e;
}

Result<Toc> TocFromProto(const v1::Toc& proto, bool name_entries_in_errors, const TocLimits& limits) {
  Toc toc;
  toc.version = proto.version();
  if (toc.version == 1) {
    return Status::Corruption(
        "TOC has no chunk digests (written by an older lazycrypt); re-encrypt the image");
  }
  if (toc.version != kTocVersion) {
    return Status::Corruption("TOC: version " + Num(toc.version) + " is not supported (need " +
                              Num(kTocVersion) + ")");
  }
  toc.target_chunk_size = proto.target_chunk_size();
  if (toc.target_chunk_size < kMinChunkSizeBytes || toc.target_chunk_size > kMaxChunkSizeBytes) {
    return Status::Corruption("TOC: target chunk size " + Num(toc.target_chunk_size) +
                              " is outside " + Num(kMinChunkSizeBytes) + ".." +
                              Num(kMaxChunkSizeBytes));
  }

  // Chunk table.
  const int chunk_count = proto.chunks_size();
  if (chunk_count < 1 || static_cast<uint64_t>(chunk_count) > limits.max_chunks) {
    return Status::Corruption("TOC: chunk count " + Num(chunk_count) + " is outside 1.." +
                              Num(limits.max_chunks) + " (limit)");
  }
  toc.chunks.resize(chunk_count);
  uint64_t blob_offset = kBlobHeaderSize;
  uint64_t tar_offset = 0;
  for (int i = 0; i < chunk_count; ++i) {
    const v1::Chunk& c = proto.chunks(i);
    ChunkInfo& info = toc.chunks[i];
    info.index = static_cast<uint64_t>(i);
    info.payload_size = c.payload_size();
    info.raw_size = c.raw_size();
    info.stored = c.stored();
    info.last = (i == chunk_count - 1);
    if (info.raw_size == 0 || info.raw_size > toc.target_chunk_size) {
      return Status::Corruption("TOC chunk " + Num(i) + ": raw size " + Num(info.raw_size) +
                                " is outside 1.." + Num(toc.target_chunk_size));
    }
    if (info.stored ? info.payload_size != info.raw_size
                    : (info.payload_size == 0 ||
                       info.payload_size > MaxCompressedPayloadSize(info.raw_size))) {
      return Status::Corruption("TOC chunk " + Num(i) + ": payload size " +
                                Num(info.payload_size) + " is impossible for a " +
                                (info.stored ? "stored" : "compressed") + " chunk of " +
                                Num(info.raw_size) + " raw bytes");
    }
    if (c.record_sha256().size() != info.record_sha256.size()) {
      return Status::Corruption("TOC chunk " + Num(i) + ": record digest is " +
                                Num(c.record_sha256().size()) + " bytes, need 32");
    }
    std::memcpy(info.record_sha256.data(), c.record_sha256().data(), info.record_sha256.size());
    info.blob_offset = blob_offset;
    info.tar_offset = tar_offset;
    // No overflow: at most kMaxChunks records of at most ~17 MiB each.
    blob_offset += info.record_size();
    tar_offset += info.raw_size;
  }
  toc.tar_size = proto.tar_size();
  if (tar_offset != toc.tar_size) {
    return Status::Corruption("TOC: chunks hold " + Num(tar_offset) +
                              " raw bytes but the tar stream size is " + Num(toc.tar_size));
  }
  if (proto.tar_sha256().size() != toc.diff_id.size()) {
    return Status::Corruption("TOC: tar SHA-256 is " + Num(proto.tar_sha256().size()) +
                              " bytes, need 32");
  }
  std::memcpy(toc.diff_id.data(), proto.tar_sha256().data(), toc.diff_id.size());

  // Entries.
  const int entry_count = proto.entries_size();
  if (static_cast<uint64_t>(entry_count) > limits.max_entries) {
    return Status::Corruption("TOC: " + Num(entry_count) + " entries (limit " +
                              Num(limits.max_entries) + ")");
  }
  toc.entries.reserve(entry_count);  // no reallocation below: `seen` keeps views into names
  // Type of the latest entry of each name, for hardlink targets.
  std::unordered_map<std::string_view, EntryType> seen;
  seen.reserve(entry_count);
  for (int i = 0; i < entry_count; ++i) {
    const v1::Entry& p = proto.entries(i);
    const std::string* err_name = name_entries_in_errors ? &p.name() : nullptr;
    auto decoded = EntryFromProto(p);
    if (!decoded.ok()) return EntryError(i, err_name, decoded.status().message());
    Entry& e = toc.entries.emplace_back(std::move(decoded).value());
    if (Status s = ValidateEntry(e, toc.tar_size); !s.ok()) {
      return EntryError(i, err_name, s.message());
    }
    if (e.type == EntryType::kHardlink) {
      auto target = seen.find(e.link_target);
      if (target == seen.end()) {
        return EntryError(i, err_name, "hardlink target is not an earlier entry");
      }
      if (target->second == EntryType::kDirectory) {
        return EntryError(i, err_name, "hardlink target is a directory");
      }
    }
    seen[e.name] = e.type;
  }

  // Prefetch marks: indexes of regular entries, strictly increasing (so unique and bounded).
  const int prefetch_count = proto.prefetch_size();
  if (prefetch_count > entry_count) {
    return Status::Corruption("TOC: " + Num(prefetch_count) + " prefetch marks for " +
                              Num(entry_count) + " entries");
  }
  toc.prefetch.reserve(prefetch_count);
  for (int i = 0; i < prefetch_count; ++i) {
    const uint32_t index = proto.prefetch(i);
    if (index >= static_cast<uint32_t>(entry_count)) {
      return Status::Corruption("TOC prefetch mark " + Num(i) + ": entry index " + Num(index) +
                                " is outside the " + Num(entry_count) + " entries");
    }
    if (!toc.prefetch.empty() && index <= toc.prefetch.back()) {
      return Status::Corruption("TOC prefetch mark " + Num(i) + ": entry index " + Num(index) +
                                " is not greater than the previous mark's " +
                                Num(toc.prefetch.back()) + " (marks must be strictly increasing)");
    }
    const Entry& e = toc.entries[index];
    if (e.type != EntryType::kRegular) {
      return Status::Corruption("TOC prefetch mark " + Num(i) + ": entry " + Num(index) +
                                (name_entries_in_errors ? " '" + e.name + "'" : "") + " is a " +
                                std::string(EntryTypeName(e.type)) + ", not a regular file");
    }
    toc.prefetch.push_back(index);
  }
  return toc;
}

EntryWireSchema::EntryWireSchema(uint64_t max_entries) {
  using K = WireField::Kind;
  xattr_fields_[0] = {1, K::kBytes};
  xattr_fields_[1] = {2, K::kBytes};
  xattr_ = {"an xattr", xattr_fields_};
  const K kinds[15] = {K::kBytes,  K::kVarint, K::kVarint, K::kVarint, K::kVarint,
                       K::kBytes,  K::kBytes,  K::kVarint, K::kVarint, K::kVarint,
                       K::kBytes,  K::kVarint, K::kVarint, K::kRepeatedMessage, K::kVarint};
  for (int i = 0; i < 15; ++i) entry_fields_[i] = {i + 1, kinds[i]};
  WireField& xattrs = entry_fields_[13];  // field 14
  xattrs.message = &xattr_;
  xattrs.max_total = max_entries > UINT64_MAX / 4 ? UINT64_MAX : 4 * max_entries;
  xattrs.max_per_parent = kMaxXattrsPerEntry;
  xattrs.name = "xattrs";
  entry_ = {"an entry", entry_fields_};
}

Result<Toc> ParseToc(ByteSpan serialized, const TocLimits& limits) {
  if (serialized.size() > limits.max_serialized_bytes) {
    return Status::Corruption("TOC: " + Num(serialized.size()) + " bytes (limit " +
                              Num(limits.max_serialized_bytes) + ")");
  }
  // Bounded on the wire before anything is built (format/wire_bounds.h).
  {
    using K = WireField::Kind;
    static constexpr WireField kChunkFields[] = {
        {1, K::kVarint}, {2, K::kVarint}, {3, K::kVarint}, {4, K::kBytes}};
    static constexpr WireMessage kChunk = {"a chunk", kChunkFields};
    const uint64_t max_entries = std::min(limits.max_entries, kMaxTocEntries);
    const uint64_t max_chunks = std::min(limits.max_chunks, kMaxChunks);
    const EntryWireSchema entry(max_entries);
    const WireField toc_fields[] = {
        {1, K::kVarint},
        {2, K::kVarint},
        {3, K::kRepeatedMessage, &kChunk, max_chunks, UINT64_MAX, "chunks"},
        {4, K::kVarint},
        {5, K::kBytes},
        {6, K::kRepeatedMessage, &entry.entry(), max_entries, UINT64_MAX, "entries"},
        {7, K::kRepeatedVarint, nullptr, max_entries, UINT64_MAX, "prefetch marks"},
    };
    LC_RETURN_IF_ERROR(CheckWireShape(serialized, WireMessage{"the TOC", toc_fields}, "TOC"));
  }
  v1::Toc proto;
  if (!proto.ParseFromArray(serialized.data(), static_cast<int>(serialized.size()))) {
    return Status::Corruption("TOC: protobuf does not parse");
  }
  return TocFromProto(proto, /*name_entries_in_errors=*/false, limits);
}

Result<Toc> DecodeTocPlaintext(ByteSpan plaintext, const TocLimits& limits) {
  if (plaintext.size() < kTocSizePrefixSize) {
    return Status::Corruption("TOC: plaintext is " + Num(plaintext.size()) +
                              " bytes, shorter than its size prefix");
  }
  uint64_t serialized_size = LoadLe64(plaintext.data());
  if (serialized_size > limits.max_serialized_bytes) {
    return Status::Corruption("TOC: claims " + Num(serialized_size) + " bytes (limit " +
                              Num(limits.max_serialized_bytes) + ")");
  }
  std::vector<uint8_t> serialized(serialized_size);
  crypto::ScopedWipe wipe_serialized(serialized);  // the serialized TOC holds the file names
  compress::ZstdDecompressor decompressor;
  Status s = decompressor.DecompressExact(plaintext.subspan(kTocSizePrefixSize), serialized);
  if (!s.ok()) return s.WithContext("TOC");
  return ParseToc(serialized, limits);
}

Result<std::vector<uint8_t>> EncodeTocPlaintext(ByteSpan serialized, int zstd_level) {
  if (serialized.size() > kMaxTocSerializedSize) {
    return Status::InvalidArgument("TOC: " + Num(serialized.size()) +
                                   " bytes serialized, over the format's limit of " +
                                   Num(kMaxTocSerializedSize) + " (too many entries)");
  }
  std::vector<uint8_t> out(kTocSizePrefixSize + compress::ZstdCompressor::Bound(serialized.size()));
  StoreLe64(out.data(), serialized.size());
  compress::ZstdCompressor compressor(zstd_level);
  LC_ASSIGN_OR_RETURN(size_t n, compressor.Compress(
                                    serialized, MutableByteSpan(out).subspan(kTocSizePrefixSize)));
  out.resize(kTocSizePrefixSize + n);
  return out;
}

}  // namespace lazycrypt::format
