#include "estargz/writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <future>
#include <thread>
#include <ctime>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>

#include "common/file_io.h"
#include "common/spool_file.h"
#include "compress/compress.h"
#include "crypto/random.h"
#include "format/toc.h"
#include "tar/tar_reader.h"
#include "tar/tar_writer.h"

namespace lazycrypt::estargz {

namespace {

constexpr size_t kCopyBufferBytes = 256 << 10;
constexpr uint64_t kTarBlock = 512;

// Counts and hashes what goes to the blob.
class BlobSink final : public OutputStream {
 public:
  explicit BlobSink(OutputStream& out) : out_(out) {}
  Status Write(ByteSpan data) override {
    LC_RETURN_IF_ERROR(out_.Write(data));
    hash_.Update(data);
    size_ += data.size();
    return Status::Ok();
  }
  Status Close() override { return Status::Ok(); }  // the caller closes `out`
  uint64_t size() const { return size_; }
  crypto::Sha256Digest Finish() { return hash_.Finish(); }

 private:
  OutputStream& out_;
  crypto::Sha256 hash_;
  uint64_t size_ = 0;
};

// "2006-01-02T15:04:05Z" of a tar mtime rounded to the second, "" for 0 (Go's formatModtime).
std::string FormatModtime(int64_t sec, uint32_t nsec) {
  if (sec == 0) return "";
  if (nsec >= 500000000) ++sec;
  time_t t = static_cast<time_t>(sec);
  struct tm tm {};
  if (gmtime_r(&t, &tm) == nullptr) return "";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::string_view TocType(tar::EntryType t) {
  switch (t) {
    case tar::EntryType::kRegular: return "reg";
    case tar::EntryType::kHardlink: return "hardlink";
    case tar::EntryType::kSymlink: return "symlink";
    case tar::EntryType::kCharDevice: return "char";
    case tar::EntryType::kBlockDevice: return "block";
    case tar::EntryType::kDirectory: return "dir";
    case tar::EntryType::kFifo: return "fifo";
  }
  return "reg";
}

// The normalized name, or "" when the name does not normalize (it then matches nothing).
std::string Normalized(std::string_view raw) {
  auto n = format::NormalizeEntryName(raw);
  return n.ok() ? *n : std::string();
}

bool IsReservedName(std::string_view raw) {
  std::string n = Normalized(raw);
  return n == kTocTarName || n == kPrefetchLandmark || n == kNoPrefetchLandmark;
}

// Writes the blob: members, TOC entries, hashes. One per conversion.
class Emitter {
 public:
  Emitter(OutputStream& out, const WriterOptions& options) : sink_(out), options_(options) {}

  // Uncompressed bytes into the open member (a new one if none is open).
  Status Write(ByteSpan data) {
    if (data.empty()) return Status::Ok();
    member_open_ = true;
    member_.insert(member_.end(), data.begin(), data.end());
    diff_.Update(data);
    uncompressed_ += data.size();
    return Status::Ok();
  }

  // Ends the open member: it is compressed (on a worker when threads > 1) and written in order.
  Status CloseMember() {
    if (!member_open_) return Status::Ok();
    member_open_ = false;
    ++members_closed_;
    std::vector<uint8_t> raw = std::move(member_);
    member_ = {};
    if (threads_ <= 1) {
      LC_ASSIGN_OR_RETURN(std::vector<uint8_t> gz, Compress(raw, options_.gzip_level));
      return WriteMember(gz);
    }
    if (inflight_.size() >= 2 * threads_) LC_RETURN_IF_ERROR(WriteOldest());
    inflight_.push_back(std::async(std::launch::async, &Emitter::Compress, std::move(raw),
                                   options_.gzip_level));
    return Status::Ok();
  }

  // One tar entry: its header blocks exactly as the source has them, then `size` data bytes
  // from `data`, then the padding.
  Status AppendEntry(const tar::Entry& e, ByteSpan raw_header, InputStream& data) {
    LC_RETURN_IF_ERROR(Write(raw_header));
    TocEntry ent;
    ent.name = e.name;
    ent.type = std::string(TocType(e.type));
    ent.mode = e.mode;
    ent.uid = e.uid;
    ent.gid = e.gid;
    ent.uname = NameIfChanged(last_uname_, e.uid, e.uname);
    ent.gname = NameIfChanged(last_gname_, e.gid, e.gname);
    ent.modtime = FormatModtime(e.mtime_sec, e.mtime_nsec);
    ent.xattrs = e.xattrs;
    if (e.type == tar::EntryType::kSymlink || e.type == tar::EntryType::kHardlink) {
      ent.link_name = e.link_name;
    }
    if (e.type == tar::EntryType::kCharDevice || e.type == tar::EntryType::kBlockDevice) {
      ent.dev_major = e.dev_major;
      ent.dev_minor = e.dev_minor;
    }
    ++entry_count_;
    if (e.type != tar::EntryType::kRegular) {
      toc_.entries.push_back(std::move(ent));
      return Status::Ok();
    }
    ent.size = e.size;
    size_t reg_index = toc_.entries.size();
    crypto::Sha256 file_hash;
    uint64_t written = 0;
    const uint64_t chunk = options_.chunk_size_bytes;
    if (buffer_.empty()) buffer_.resize(kCopyBufferBytes);
    while (written < e.size) {
      uint64_t n = std::min(chunk, e.size - written);
      if (e.size - written >= chunk) ent.chunk_size = chunk;  // a short last chunk says 0
      // Every chunk of file data begins a gzip member of its own.
      LC_RETURN_IF_ERROR(CloseMember());
      // The member's blob offset is known once every member before it is compressed: noted by
      // index here, filled in by Finish.
      member_of_entry_.emplace_back(toc_.entries.size(), members_closed_);
      ent.chunk_offset = written;
      crypto::Sha256 chunk_hash;
      for (uint64_t left = n; left > 0;) {
        MutableByteSpan piece(buffer_.data(), std::min<uint64_t>(left, buffer_.size()));
        LC_RETURN_IF_ERROR(ReadFull(data, piece, "tar entry data"));
        chunk_hash.Update(piece);
        file_hash.Update(piece);
        LC_RETURN_IF_ERROR(Write(piece));
        left -= piece.size();
      }
      ent.chunk_digest = crypto::OciDigest(chunk_hash.Finish());
      toc_.entries.push_back(std::move(ent));
      ++chunk_count_;
      written += n;
      ent = TocEntry{};
      ent.name = e.name;
      ent.type = "chunk";
    }
    if (e.size == 0) toc_.entries.push_back(std::move(ent));
    toc_.entries[reg_index].digest = crypto::OciDigest(file_hash.Finish());
    static const uint8_t kZeros[kTarBlock] = {};
    uint64_t pad = (kTarBlock - e.size % kTarBlock) % kTarBlock;
    return Write(ByteSpan(kZeros, pad));
  }

  Status AppendLandmark(std::string_view name) {
    tar::Entry e;
    e.name = std::string(name);
    e.type = tar::EntryType::kRegular;
    e.size = 1;
    MemoryOutputStream header;
    tar::TarWriter tw(header);
    LC_RETURN_IF_ERROR(tw.AppendHeader(e).status());
    const uint8_t content[1] = {kLandmarkContents};
    MemoryInputStream data(content);
    return AppendEntry(e, header.bytes(), data);
  }

  // The TOC member and the footer.
  Result<WriteResult> Finish(std::string salt_hex) {
    LC_RETURN_IF_ERROR(CloseMember());
    while (!inflight_.empty()) LC_RETURN_IF_ERROR(WriteOldest());
    for (const auto& [entry, member] : member_of_entry_) {
      toc_.entries[entry].offset = member_offsets_.at(member);
    }
    WriteResult r;
    r.toc_offset = sink_.size();
    toc_.salt_hex = std::move(salt_hex);
    LC_ASSIGN_OR_RETURN(std::string json, SerializeToc(toc_));
    r.toc_digest = crypto::Sha256::Of(AsBytes(json));
    tar::Entry e;
    e.name = std::string(kTocTarName);
    e.type = tar::EntryType::kRegular;
    e.size = json.size();
    MemoryOutputStream toc_tar;
    tar::TarWriter tw(toc_tar);
    LC_RETURN_IF_ERROR(tw.AppendEntry(e, AsBytes(json)));
    LC_RETURN_IF_ERROR(tw.Finish(/*record_size=*/0));  // the end marker, as Go's tar.Writer.Close
    LC_RETURN_IF_ERROR(Write(toc_tar.bytes()));
    LC_RETURN_IF_ERROR(CloseMember());
    while (!inflight_.empty()) LC_RETURN_IF_ERROR(WriteOldest());
    r.toc_size = sink_.size() - r.toc_offset;
    auto footer = MakeFooter(r.toc_offset);
    LC_RETURN_IF_ERROR(sink_.Write(footer));
    r.blob_size = sink_.size();
    r.blob_digest = sink_.Finish();
    r.diff_id = diff_.Finish();
    r.uncompressed_size = uncompressed_;
    r.entry_count = entry_count_;
    r.chunk_count = chunk_count_;
    return r;
  }

 private:
  static Result<std::vector<uint8_t>> Compress(std::vector<uint8_t> raw, int level) {
    MemoryOutputStream gz;
    auto z = compress::NewGzipOutputStream(gz, level);
    LC_RETURN_IF_ERROR(z->Write(raw));
    LC_RETURN_IF_ERROR(z->Close());
    return gz.Take();
  }

  Status WriteMember(ByteSpan gz) {
    member_offsets_.push_back(sink_.size());
    return sink_.Write(gz);
  }

  Status WriteOldest() {
    Result<std::vector<uint8_t>> gz = inflight_.front().get();
    inflight_.pop_front();
    if (!gz.ok()) return gz.status();
    return WriteMember(*gz);
  }

  // eStargz writes userName/groupName only where it differs from the last one for that id.
  static std::string NameIfChanged(std::map<uint64_t, std::string>& last, uint64_t id,
                                   const std::string& name) {
    if (name.empty()) return "";
    auto [it, inserted] = last.try_emplace(id, name);
    if (!inserted && it->second == name) return "";
    it->second = name;
    return name;
  }

  BlobSink sink_;
  const WriterOptions& options_;
  const size_t threads_ = options_.threads > 0 ? static_cast<size_t>(options_.threads)
                                                : std::max(1u, std::thread::hardware_concurrency());
  std::vector<uint8_t> member_;  // the open member's uncompressed bytes
  bool member_open_ = false;
  uint64_t members_closed_ = 0;
  std::deque<std::future<Result<std::vector<uint8_t>>>> inflight_;  // in blob order
  std::vector<uint64_t> member_offsets_;                           // by member index
  std::vector<std::pair<size_t, uint64_t>> member_of_entry_;        // TOC entry -> member index
  crypto::Sha256 diff_;
  uint64_t uncompressed_ = 0;
  uint64_t entry_count_ = 0;
  uint64_t chunk_count_ = 0;
  Toc toc_;
  std::map<uint64_t, std::string> last_uname_, last_gname_;
  std::vector<uint8_t> buffer_;
};

// A TarReader's current entry data as a stream.
class EntryDataStream final : public InputStream {
 public:
  explicit EntryDataStream(tar::TarReader& reader) : reader_(reader) {}
  Result<size_t> Read(MutableByteSpan out) override { return reader_.ReadData(out); }

 private:
  tar::TarReader& reader_;
};

// [offset, offset + size) of a BlobSource as a stream.
class RangeStream final : public InputStream {
 public:
  RangeStream(BlobSource& blob, uint64_t offset, uint64_t size)
      : blob_(blob), pos_(offset), left_(size) {}
  Result<size_t> Read(MutableByteSpan out) override {
    size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), left_));
    if (n == 0) return size_t{0};
    LC_RETURN_IF_ERROR(blob_.ReadAt(pos_, out.first(n)));
    pos_ += n;
    left_ -= n;
    return n;
  }

 private:
  BlobSource& blob_;
  uint64_t pos_, left_;
};

Result<std::string> MakeSalt(const WriterOptions& options) {
  if (options.salt_hex) return *options.salt_hex;
  uint8_t salt[32];
  LC_RETURN_IF_ERROR(crypto::RandomBytes(salt));
  return crypto::HexEncode(salt);
}

// No prefetch list: one pass, the landmark first, then the entries as they come.
Result<WriteResult> WriteInOrder(InputStream& tar, OutputStream& out,
                                 const WriterOptions& options) {
  LC_ASSIGN_OR_RETURN(std::string salt, MakeSalt(options));
  Emitter emitter(out, options);
  crypto::Sha256 source_hash;
  std::vector<uint8_t> pending;  // what Next() consumed: padding of the last entry, then headers
  bool capture = false;
  tar::TarReader reader(tar, [&](ByteSpan raw) {
    source_hash.Update(raw);
    if (capture) pending.insert(pending.end(), raw.begin(), raw.end());
    return Status::Ok();
  });
  LC_RETURN_IF_ERROR(emitter.AppendLandmark(kNoPrefetchLandmark));
  std::vector<uint8_t> discard(kCopyBufferBytes);
  for (;;) {
    pending.clear();
    capture = true;
    auto next = reader.Next();
    capture = false;
    if (!next.ok()) return next.status();
    if (!next->has_value()) break;
    const tar::Entry& e = **next;
    if (IsReservedName(e.name)) {
      for (;;) {
        LC_ASSIGN_OR_RETURN(size_t n, reader.ReadData(discard));
        if (n == 0) break;
      }
      continue;
    }
    uint64_t header_size = e.data_offset - e.header_offset;
    if (header_size > pending.size()) return Status::Internal("estargz: tar header accounting");
    ByteSpan header(pending.data() + pending.size() - header_size, header_size);
    EntryDataStream data(reader);
    LC_RETURN_IF_ERROR(emitter.AppendEntry(e, header, data));
  }
  LC_RETURN_IF_ERROR(reader.DrainToEnd().status());
  LC_ASSIGN_OR_RETURN(WriteResult r, emitter.Finish(std::move(salt)));
  r.source_diff_id = source_hash.Finish();
  return r;
}

// With a prefetch list: spool, index, then write the listed files (and their directories) first.
Result<WriteResult> WriteReordered(InputStream& tar, OutputStream& out,
                                   const WriterOptions& options) {
  LC_ASSIGN_OR_RETURN(std::string salt, MakeSalt(options));
  LC_ASSIGN_OR_RETURN(auto spool, SpoolFile::Create(options.spool_dir));
  crypto::Sha256 source_hash;
  {
    std::vector<uint8_t> buf(kCopyBufferBytes);
    for (;;) {
      LC_ASSIGN_OR_RETURN(size_t n, tar.Read(buf));
      if (n == 0) break;
      ByteSpan piece(buf.data(), n);
      source_hash.Update(piece);
      LC_RETURN_IF_ERROR(spool->Append(piece));
    }
  }
  std::vector<tar::Entry> entries;
  {
    BlobInputStream in(*spool);
    tar::TarReader reader(in);
    for (;;) {
      LC_ASSIGN_OR_RETURN(auto next, reader.Next());
      if (!next) break;
      if (IsReservedName(next->name)) continue;
      entries.push_back(std::move(*next));
    }
  }
  // Names that occur once can move; a name given twice keeps its order (the later entry wins
  // at extraction, and moving one of them would change which).
  std::unordered_map<std::string, std::vector<size_t>> by_name;
  for (size_t i = 0; i < entries.size(); ++i) by_name[Normalized(entries[i].name)].push_back(i);
  auto unique_index = [&](const std::string& name) -> std::optional<size_t> {
    auto it = by_name.find(name);
    if (it == by_name.end() || it->second.size() != 1) return std::nullopt;
    return it->second.front();
  };
  std::vector<size_t> order;
  std::vector<bool> moved(entries.size(), false);
  WriteResult report;
  for (const std::string& path : options.prefetch_paths) {
    std::optional<size_t> file = unique_index(path);
    if (!file || entries[*file].type != tar::EntryType::kRegular) {
      auto it = by_name.find(path);
      report.prefetch_not_moved.push_back(
          path + (it == by_name.end() ? ": not in this layer"
                  : it->second.size() > 1 ? ": the layer has several entries of that name"
                                          : ": not a regular file"));
      continue;
    }
    if (moved[*file]) continue;  // listed twice
    // The directories above it first (those with an entry of their own), root included.
    std::vector<std::string> parents = {"."};
    for (size_t slash = path.find('/'); slash != std::string::npos; slash = path.find('/', slash + 1)) {
      parents.push_back(path.substr(0, slash));
    }
    for (const std::string& dir : parents) {
      std::optional<size_t> d = unique_index(dir);
      if (d && !moved[*d] && entries[*d].type == tar::EntryType::kDirectory) {
        moved[*d] = true;
        order.push_back(*d);
      }
    }
    moved[*file] = true;
    order.push_back(*file);
    report.prefetch_moved.push_back(path);
  }
  Emitter emitter(out, options);
  std::vector<uint8_t> header;
  auto emit = [&](const tar::Entry& e) -> Status {
    header.resize(e.data_offset - e.header_offset);
    LC_RETURN_IF_ERROR(spool->ReadAt(e.header_offset, header));
    RangeStream data(*spool, e.data_offset, e.type == tar::EntryType::kRegular ? e.size : 0);
    return emitter.AppendEntry(e, header, data);
  };
  for (size_t i : order) LC_RETURN_IF_ERROR(emit(entries[i]));
  LC_RETURN_IF_ERROR(emitter.AppendLandmark(report.prefetch_moved.empty() ? kNoPrefetchLandmark
                                                                          : kPrefetchLandmark));
  for (size_t i = 0; i < entries.size(); ++i) {
    if (!moved[i]) LC_RETURN_IF_ERROR(emit(entries[i]));
  }
  LC_ASSIGN_OR_RETURN(WriteResult r, emitter.Finish(std::move(salt)));
  r.source_diff_id = source_hash.Finish();
  r.prefetch_moved = std::move(report.prefetch_moved);
  r.prefetch_not_moved = std::move(report.prefetch_not_moved);
  return r;
}

}  // namespace

Result<WriteResult> WriteEstargz(InputStream& tar, OutputStream& out, const WriterOptions& options) {
  if (options.chunk_size_bytes < 4096 || options.chunk_size_bytes > (1ull << 30)) {
    return Status::InvalidArgument("estargz: chunk size " + std::to_string(options.chunk_size_bytes) +
                                   " is outside 4 KiB .. 1 GiB");
  }
  if (options.gzip_level < 1 || options.gzip_level > 9) {
    return Status::InvalidArgument("estargz: gzip level must be 1..9");
  }
  if (options.prefetch_paths.empty()) return WriteInOrder(tar, out, options);
  return WriteReordered(tar, out, options);
}

}  // namespace lazycrypt::estargz
