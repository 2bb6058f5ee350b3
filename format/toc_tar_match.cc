#include "format/toc_tar_match.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "format/layout.h"
#include "tar/tar_reader.h"

namespace lazycrypt::format {
namespace {

constexpr std::string_view kMismatch = "TOC does not match the tar stream: ";

Status Mismatch(const std::string& what) {
  return Status::Corruption(std::string(kMismatch) + what);
}

EntryType TocType(tar::EntryType t) {
  switch (t) {
    case tar::EntryType::kRegular: return EntryType::kRegular;
    case tar::EntryType::kHardlink: return EntryType::kHardlink;
    case tar::EntryType::kSymlink: return EntryType::kSymlink;
    case tar::EntryType::kCharDevice: return EntryType::kCharDevice;
    case tar::EntryType::kBlockDevice: return EntryType::kBlockDevice;
    case tar::EntryType::kDirectory: return EntryType::kDirectory;
    case tar::EntryType::kFifo: return EntryType::kFifo;
  }
  return EntryType::kRegular;  // unreachable: the tar reader has no other type
}

// The first field in which `toc` and `tar` differ, or "" when they are equal. Names only the
// field, never its value (names, link targets and xattrs are confidential).
std::string_view FirstDifference(const Entry& toc, const Entry& tar) {
  if (toc.name != tar.name) return "name";
  if (toc.type != tar.type) return "type";
  if (toc.mode != tar.mode) return "mode";
  if (toc.uid != tar.uid) return "uid";
  if (toc.gid != tar.gid) return "gid";
  if (toc.uname != tar.uname) return "uname";
  if (toc.gname != tar.gname) return "gname";
  if (toc.mtime_sec != tar.mtime_sec || toc.mtime_nsec != tar.mtime_nsec) return "mtime";
  if (toc.size != tar.size) return "size";
  if (toc.data_offset != tar.data_offset) return "data offset";
  if (toc.link_target != tar.link_target) return "link target";
  if (toc.dev_major != tar.dev_major || toc.dev_minor != tar.dev_minor) return "device number";
  if (toc.xattrs != tar.xattrs) return "xattrs";
  return "";
}

Status CompareEntry(size_t index, const Entry& toc, const Entry& tar) {
  std::string_view field = FirstDifference(toc, tar);
  if (field.empty()) return Status::Ok();
  return Mismatch("entry " + std::to_string(index) + ": " + std::string(field) + " differs");
}

}  // namespace

Result<Entry> TocEntryFromTar(const tar::Entry& e) {
  LC_ASSIGN_OR_RETURN(std::string name, NormalizeEntryName(e.name));
  Entry entry;
  entry.name = std::move(name);
  entry.type = TocType(e.type);
  entry.mode = e.mode;
  entry.uid = e.uid;
  entry.gid = e.gid;
  entry.uname = e.uname;
  entry.gname = e.gname;
  entry.mtime_sec = e.mtime_sec;
  entry.mtime_nsec = e.mtime_nsec;
  if (e.type == tar::EntryType::kRegular) {
    entry.size = e.size;
    entry.data_offset = e.data_offset;
  }
  if (e.type == tar::EntryType::kSymlink) {
    entry.link_target = e.link_name;
  } else if (e.type == tar::EntryType::kHardlink) {
    auto target = NormalizeEntryName(e.link_name);
    if (!target.ok()) return target.status().WithContext("hardlink target");
    entry.link_target = std::move(target).value();
  }
  if (e.type == tar::EntryType::kCharDevice || e.type == tar::EntryType::kBlockDevice) {
    entry.dev_major = e.dev_major;
    entry.dev_minor = e.dev_minor;
  }
  for (const auto& [k, v] : e.xattrs) entry.xattrs.emplace(k, v);
  return entry;
}

class TocTarMatcher::Impl {
 public:
  explicit Impl(std::optional<std::span<const Entry>> expected) : expected_(expected) {}
  explicit Impl(const EntryTable& table) : table_(&table) {}
  ~Impl() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  Status Feed(ByteSpan bytes) {
    LC_RETURN_IF_ERROR(Start());
    std::unique_lock lock(mu_);
    if (finished_) return Status::FailedPrecondition("TocTarMatcher: Feed after Finish");
    if (done_) return result_;
    if (bytes.empty()) return Status::Ok();
    pending_ = bytes;
    cv_.notify_all();
    // The parser copies the span into its buffer (or fails); only then may the caller reuse it.
    cv_.wait(lock, [&] { return pending_.empty() || done_; });
    pending_ = {};
    return done_ ? result_ : Status::Ok();
  }

  Status Finish(std::optional<std::span<const Entry>> late) {
    LC_RETURN_IF_ERROR(Start());
    {
      std::unique_lock lock(mu_);
      if (finished_) return Status::FailedPrecondition("TocTarMatcher: Finish called twice");
      finished_ = true;
      eof_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return done_; });
    }
    thread_.join();
    LC_RETURN_IF_ERROR(result_);
    if (!collecting()) return Status::Ok();  // compared as the stream went
    if (!late) return Status::FailedPrecondition("TocTarMatcher: Finish needs the TOC's entries");
    const size_t n = std::min(late->size(), collected_.size());
    for (size_t i = 0; i < n; ++i) LC_RETURN_IF_ERROR(CompareEntry(i, (*late)[i], collected_[i]));
    return CountStatus(collected_.size(), late->size());
  }

  bool collecting() const { return !expected_.has_value() && table_ == nullptr; }

 private:
  // What the tar reader reads from: the span Feed is handing over, then EOF after Finish.
  class Channel final : public InputStream {
   public:
    explicit Channel(Impl& m) : m_(m) {}
    Result<size_t> Read(MutableByteSpan out) override {
      std::unique_lock lock(m_.mu_);
      m_.cv_.wait(lock, [&] { return !m_.pending_.empty() || m_.eof_ || m_.stop_; });
      if (m_.stop_) return Status::Unavailable("TocTarMatcher: stopped");
      if (m_.pending_.empty()) return size_t{0};  // EOF
      const size_t n = std::min(out.size(), m_.pending_.size());
      std::memcpy(out.data(), m_.pending_.data(), n);
      m_.pending_ = m_.pending_.subspan(n);
      if (m_.pending_.empty()) m_.cv_.notify_all();
      return n;
    }

   private:
    Impl& m_;
  };

  Status Start() {
    if (started_) return Status::Ok();
    started_ = true;
    try {
      thread_ = std::thread([this] { ParseLoop(); });
    } catch (const std::system_error& e) {
      std::lock_guard lock(mu_);
      done_ = true;
      result_ = Status::Internal(std::string("TocTarMatcher: cannot start a thread: ") + e.what());
      return result_;
    }
    return Status::Ok();
  }

  static Status CountStatus(size_t in_tar, size_t in_toc) {
    if (in_tar == in_toc) return Status::Ok();
    return Mismatch("the TOC lists " + std::to_string(in_toc) + " entries, the tar stream has " +
                    std::to_string(in_tar));
  }

  // A failure of the tar reader: its message names files, so only where it happened is told.
  Status ParseError(const Status& s, const tar::TarReader& reader) const {
    return Mismatch("entry " + std::to_string(entries_seen_) + ": the tar stream does not parse (" +
                    std::string(StatusCodeName(s.code())) + " at tar offset " +
                    std::to_string(reader.offset()) + ")");
  }

  Status OnEntry(const tar::Entry& e) {
    const size_t index = entries_seen_++;
    auto entry = TocEntryFromTar(e);
    if (!entry.ok()) {
      return Mismatch("entry " + std::to_string(index) + ": the tar entry cannot be listed (" +
                      entry.status().message() + ")");
    }
    if (collecting()) {
      if (collected_.size() >= kMaxTocEntries) {
        return Mismatch("the tar stream has more than " + std::to_string(kMaxTocEntries) +
                        " entries (the format's limit)");
      }
      collected_.push_back(std::move(entry).value());
      return Status::Ok();
    }
    if (index >= expected_size()) {
      return Mismatch("the TOC lists " + std::to_string(expected_size()) +
                      " entries, the tar stream has more");
    }
    if (table_ != nullptr) return CompareEntry(index, (*table_)[index].Materialize(), *entry);
    return CompareEntry(index, (*expected_)[index], *entry);
  }

  void ParseLoop() {
    Channel channel(*this);
    tar::TarReader reader(channel);
    Status result;
    for (;;) {
      auto next = reader.Next();
      if (!next.ok()) {
        result = ParseError(next.status(), reader);
        break;
      }
      if (!next->has_value()) {
        if (!collecting()) result = CountStatus(entries_seen_, expected_size());
        if (!result.ok()) break;
        // Only zero padding may follow the marker (FORMAT.md §5): bytes there are in the diff_id
        // but in no entry, a place to hide content from every reader. The message names no file.
        auto drained = reader.DrainZerosToEnd();
        if (!drained.ok()) result = drained.status().WithContext("the layer's tar stream");
        break;
      }
      result = OnEntry(**next);
      if (!result.ok()) break;
    }
    std::lock_guard lock(mu_);
    // A stop is not a finding: the matcher is going away.
    result_ = stop_ ? Status::Unavailable("TocTarMatcher: stopped") : std::move(result);
    done_ = true;
    cv_.notify_all();
  }

  size_t expected_size() const { return table_ != nullptr ? table_->size() : expected_->size(); }

  // What the stream is compared with as it goes: one of these (neither: collecting).
  const std::optional<std::span<const Entry>> expected_;
  const EntryTable* const table_ = nullptr;  // materialized one entry at a time
  bool started_ = false;  // producer only
  std::thread thread_;

  std::mutex mu_;
  std::condition_variable cv_;
  ByteSpan pending_;       // guarded by mu_: bytes handed over, not yet copied by the parser
  bool eof_ = false;       // guarded by mu_: Finish was called
  bool stop_ = false;      // guarded by mu_: the matcher is being destroyed
  bool done_ = false;      // guarded by mu_: the parser has ended; result_ is final
  bool finished_ = false;  // guarded by mu_
  Status result_;          // guarded by mu_

  // The parse thread's (read by the producer only after done_).
  size_t entries_seen_ = 0;
  std::vector<Entry> collected_;
};

TocTarMatcher::TocTarMatcher(std::span<const Entry> toc_entries)
    : impl_(std::make_unique<Impl>(toc_entries)) {}
TocTarMatcher::TocTarMatcher(const EntryTable& toc_entries)
    : impl_(std::make_unique<Impl>(toc_entries)) {}
TocTarMatcher::TocTarMatcher() : impl_(std::make_unique<Impl>(std::nullopt)) {}
TocTarMatcher::~TocTarMatcher() = default;

Status TocTarMatcher::Feed(ByteSpan tar_bytes) { return impl_->Feed(tar_bytes); }
Status TocTarMatcher::Finish() { return impl_->Finish(std::nullopt); }
Status TocTarMatcher::Finish(std::span<const Entry> toc_entries) {
  return impl_->Finish(toc_entries);
}

}  // namespace lazycrypt::format
