#include "cache/chunk_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <list>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/file_io.h"

namespace lazycrypt::cache {
namespace {

namespace fs = std::filesystem;

constexpr size_t kSlotSize = 16;
constexpr std::string_view kDataSuffix = ".data";
constexpr std::string_view kSlotsSuffix = ".slots";
constexpr std::string_view kTailSuffix = ".tail";
constexpr std::string_view kTailMagic = "LCTAIL1\n";
constexpr size_t kTailPrefixSize = 8 + 8 + 8 + 4;

void PutLe(uint8_t* p, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t GetLe(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

uint32_t SlotCrc(uint64_t chunk, uint64_t offset, uint32_t size) {
  uint8_t buf[20];
  PutLe(buf, chunk, 8);
  PutLe(buf + 8, offset, 8);
  PutLe(buf + 16, size, 4);
  return static_cast<uint32_t>(crc32(crc32(0L, Z_NULL, 0), buf, sizeof buf));
}

std::array<uint8_t, kSlotSize> EncodeSlot(uint64_t chunk, uint64_t offset, uint32_t size) {
  std::array<uint8_t, kSlotSize> s{};
  PutLe(s.data(), offset, 8);
  PutLe(s.data() + 8, size, 4);
  PutLe(s.data() + 12, SlotCrc(chunk, offset, size), 4);
  return s;
}

Status PwriteAll(int fd, ByteSpan data, uint64_t offset, std::string_view what) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(what);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Reads exactly out.size() bytes; false if the file is shorter.
Result<bool> PreadAll(int fd, MutableByteSpan out, uint64_t offset, std::string_view what) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(what);
    }
    if (n == 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

Result<UniqueFd> OpenRw(const fs::path& path) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus("chunk store: open " + path.string());
  UniqueFd owned(fd);
  // A file created by an earlier run with a wider umask or mode is narrowed.
  if (fchmod(fd, 0600) != 0) return ErrnoStatus("chunk store: chmod " + path.string());
  return owned;
}

struct BlobState;

struct ChunkMeta {
  uint64_t offset = 0;
  uint32_t size = 0;
  std::list<std::pair<BlobState*, uint64_t>>::iterator lru;
};

struct BlobState {
  std::string key;
  UniqueFd data;
  UniqueFd slots;
  std::shared_mutex io;  // shared: reading records; exclusive: writing records or slots
  // Guarded by the store's mutex:
  std::unordered_map<uint64_t, ChunkMeta> chunks;
  uint64_t bytes = 0;
  bool removed = false;
};

using LruList = std::list<std::pair<BlobState*, uint64_t>>;

class ChunkStoreImpl final : public ChunkStore {
 public:
  ChunkStoreImpl(fs::path dir, ChunkStoreOptions options)
      : dir_(std::move(dir)), options_(options) {}

  Status Load();

  Result<bool> Get(std::string_view blob_key, uint64_t chunk, uint64_t blob_offset,
                   MutableByteSpan out) override;
  Result<bool> Put(std::string_view blob_key, uint64_t chunk, uint64_t blob_offset,
                   ByteSpan record) override;
  bool Contains(std::string_view blob_key, uint64_t chunk) const override;
  Status Drop(std::string_view blob_key, uint64_t chunk) override;
  Status RemoveBlob(std::string_view blob_key) override;
  Status PutTail(std::string_view blob_key, uint64_t blob_offset, ByteSpan bytes) override;
  Result<std::optional<StoredTail>> GetTail(std::string_view blob_key) override;
  Status DropTail(std::string_view blob_key) override;
  uint64_t ChunksPresent(std::string_view blob_key) const override;
  uint64_t BytesPresent(std::string_view blob_key) const override;
  ChunkStoreStats stats() const override;
  const fs::path& dir() const override { return dir_; }

 private:
  // A blob's files and valid slots as found by Load.
  struct Found {
    fs::file_time_type mtime;
    std::shared_ptr<BlobState> blob;
    std::vector<std::pair<uint64_t, std::pair<uint64_t, uint32_t>>> chunks;
  };
  Result<Found> LoadBlob(const std::string& key, const fs::path& slots_path) const;

  struct Victim {
    std::shared_ptr<BlobState> blob;
    uint64_t chunk;
    uint64_t offset;
    uint32_t size;
  };

  fs::path DataPath(std::string_view key) const {
    return dir_ / (std::string(key) + std::string(kDataSuffix));
  }
  fs::path SlotsPath(std::string_view key) const {
    return dir_ / (std::string(key) + std::string(kSlotsSuffix));
  }
  fs::path TailPath(std::string_view key) const {
    return dir_ / (std::string(key) + std::string(kTailSuffix));
  }

  std::shared_ptr<BlobState> Find(std::string_view key) const {  // REQUIRES mu_
    auto it = blobs_.find(std::string(key));
    return it == blobs_.end() ? nullptr : it->second;
  }
  Result<std::shared_ptr<BlobState>> FindOrCreate(std::string_view key);  // REQUIRES mu_

  // Removes a chunk's bookkeeping. REQUIRES mu_.
  void Forget(BlobState& blob, uint64_t chunk) {
    auto it = blob.chunks.find(chunk);
    if (it == blob.chunks.end()) return;
    lru_.erase(it->second.lru);
    blob.bytes -= it->second.size;
    usage_ -= it->second.size;
    blob.chunks.erase(it);
  }
  // Records a chunk as present and most recently used. REQUIRES mu_, chunk not present.
  void Remember(BlobState& blob, uint64_t chunk, uint64_t offset, uint32_t size) {
    lru_.emplace_front(&blob, chunk);
    blob.chunks[chunk] = ChunkMeta{offset, size, lru_.begin()};
    blob.bytes += size;
    usage_ += size;
  }
  // Clears the slot and punches out the bytes of a chunk already forgotten, unless it was
  // stored again meanwhile. Takes blob.io exclusively.
  Status Erase(BlobState& blob, uint64_t chunk, uint64_t offset, uint32_t size);

  const fs::path dir_;
  const ChunkStoreOptions options_;

  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<BlobState>> blobs_;
  LruList lru_;          // front = most recently used
  uint64_t usage_ = 0;   // present bytes + bytes reserved by Puts in progress
  uint64_t evictions_ = 0;
};

Result<std::shared_ptr<BlobState>> ChunkStoreImpl::FindOrCreate(std::string_view key) {
  if (auto b = Find(key)) return b;
  auto blob = std::make_shared<BlobState>();
  blob->key = std::string(key);
  LC_ASSIGN_OR_RETURN(blob->data, OpenRw(DataPath(key)));
  LC_ASSIGN_OR_RETURN(blob->slots, OpenRw(SlotsPath(key)));
  blobs_[blob->key] = blob;
  return blob;
}

Result<ChunkStoreImpl::Found> ChunkStoreImpl::LoadBlob(const std::string& key,
                                                     const fs::path& slots_path) const {
  Found f;
  std::error_code file_ec;
  f.mtime = fs::last_write_time(slots_path, file_ec);
  f.blob = std::make_shared<BlobState>();
  f.blob->key = key;
  LC_ASSIGN_OR_RETURN(f.blob->data, OpenRw(DataPath(key)));
  LC_ASSIGN_OR_RETURN(f.blob->slots, OpenRw(SlotsPath(key)));
  LC_ASSIGN_OR_RETURN(std::vector<uint8_t> slots, ReadFileBytes(SlotsPath(key)));
  struct stat st {};
  if (fstat(f.blob->data.get(), &st) != 0) return ErrnoStatus("chunk store: stat data of " + key);
  const uint64_t data_size = static_cast<uint64_t>(st.st_size);
  for (size_t i = 0; i + kSlotSize <= slots.size(); i += kSlotSize) {
    const uint8_t* s = slots.data() + i;
    const uint64_t offset = GetLe(s, 8);
    const uint32_t size = static_cast<uint32_t>(GetLe(s + 8, 4));
    const uint32_t crc = static_cast<uint32_t>(GetLe(s + 12, 4));
    const uint64_t chunk = i / kSlotSize;
    if (size == 0) continue;
    // A torn or stale slot, or a record past the end of the data file: absent.
    if (crc != SlotCrc(chunk, offset, size) || offset > data_size || size > data_size - offset) {
      continue;
    }
    f.chunks.push_back({chunk, {offset, size}});
  }
  return f;
}

Status ChunkStoreImpl::Load() {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return Status::IoError("chunk store: create " + dir_.string() + ": " + ec.message());
  if (chmod(dir_.c_str(), 0700) != 0) return ErrnoStatus("chunk store: chmod " + dir_.string());

  std::vector<Found> found;
  std::vector<fs::path> orphans;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    std::error_code file_ec;  // per-file trouble makes that file's blob absent, not Open fail
    const std::string name = e.path().filename().string();
    auto has_suffix = [&](std::string_view s) {
      return name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    if (has_suffix(kDataSuffix)) {
      std::string key = name.substr(0, name.size() - kDataSuffix.size());
      if (!ValidateBlobKey(key).ok() || !fs::exists(SlotsPath(key), file_ec)) orphans.push_back(e.path());
      continue;
    }
    if (!has_suffix(kSlotsSuffix)) continue;  // not ours: leave it alone
    std::string key = name.substr(0, name.size() - kSlotsSuffix.size());
    if (!ValidateBlobKey(key).ok()) continue;
    if (!fs::exists(DataPath(key), file_ec)) {
      orphans.push_back(e.path());
      continue;
    }
    // A blob whose files cannot be read is left out (its chunks are absent); Open still works.
    Result<Found> f = LoadBlob(key, e.path());
    if (!f.ok()) continue;
    found.push_back(std::move(*f));
  }
  if (ec) return Status::IoError("chunk store: list " + dir_.string() + ": " + ec.message());
  for (const auto& p : orphans) fs::remove(p, ec);
  ec.clear();

  // Oldest blobs first so that the most recently written ones end up most recently used.
  std::sort(found.begin(), found.end(),
            [](const Found& a, const Found& b) { return a.mtime < b.mtime; });
  std::vector<Victim> victims;
  {
    std::lock_guard lock(mu_);
    for (auto& f : found) {
      for (const auto& [chunk, loc] : f.chunks) Remember(*f.blob, chunk, loc.first, loc.second);
      blobs_[f.blob->key] = f.blob;
    }
    while (usage_ > options_.capacity_bytes && !lru_.empty()) {
      auto [blob, chunk] = lru_.back();
      const ChunkMeta& m = blob->chunks.at(chunk);
      victims.push_back({blobs_.at(blob->key), chunk, m.offset, m.size});
      Forget(*blob, chunk);
      ++evictions_;
    }
  }
  for (const auto& v : victims) LC_RETURN_IF_ERROR(Erase(*v.blob, v.chunk, v.offset, v.size));
  return Status::Ok();
}

Status ChunkStoreImpl::Erase(BlobState& blob, uint64_t chunk, uint64_t offset, uint32_t size) {
  std::unique_lock io(blob.io);
  {
    std::lock_guard lock(mu_);
    if (blob.removed || blob.chunks.count(chunk) != 0) return Status::Ok();  // stored again
  }
  const std::array<uint8_t, kSlotSize> zero{};
  LC_RETURN_IF_ERROR(PwriteAll(blob.slots.get(), zero, chunk * kSlotSize,
                               "chunk store: clear slot of " + blob.key));
  if (fallocate(blob.data.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                static_cast<off_t>(offset), static_cast<off_t>(size)) != 0 &&
      errno != EOPNOTSUPP) {
    return ErrnoStatus("chunk store: punch hole in " + blob.key);
  }
  return Status::Ok();
}

Result<bool> ChunkStoreImpl::Get(std::string_view blob_key, uint64_t chunk, uint64_t blob_offset,
                                 MutableByteSpan out) {
  LC_RETURN_IF_ERROR(ValidateBlobKey(blob_key));
  std::shared_ptr<BlobState> blob;
  {
    std::lock_guard lock(mu_);
    blob = Find(blob_key);
  }
  if (!blob) return false;
  // Holding io shared keeps an eviction from punching the record while it is read.
  std::shared_lock io(blob->io);
  {
    std::lock_guard lock(mu_);
    if (blob->removed) return false;
    auto it = blob->chunks.find(chunk);
    if (it == blob->chunks.end()) return false;
    if (it->second.offset != blob_offset || it->second.size != out.size()) return false;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
  }
  LC_ASSIGN_OR_RETURN(bool complete, PreadAll(blob->data.get(), out, blob_offset,
                                              "chunk store: read " + std::string(blob_key)));
  return complete;
}

Result<bool> ChunkStoreImpl::Put(std::string_view blob_key, uint64_t chunk, uint64_t blob_offset,
                                 ByteSpan record) {
  LC_RETURN_IF_ERROR(ValidateBlobKey(blob_key));
  if (record.empty() || record.size() > UINT32_MAX) {
    return Status::InvalidArgument("chunk store: record of " + std::to_string(record.size()) +
                                   " bytes");
  }
  if (record.size() > options_.capacity_bytes) return false;
  const uint32_t size = static_cast<uint32_t>(record.size());
  std::shared_ptr<BlobState> blob;
  std::vector<Victim> victims;
  {
    std::lock_guard lock(mu_);
    LC_ASSIGN_OR_RETURN(blob, FindOrCreate(blob_key));
    Forget(*blob, chunk);  // replaced below
    while (usage_ + size > options_.capacity_bytes && !lru_.empty()) {
      auto [victim, victim_chunk] = lru_.back();
      const ChunkMeta& m = victim->chunks.at(victim_chunk);
      victims.push_back({blobs_.at(victim->key), victim_chunk, m.offset, m.size});
      Forget(*victim, victim_chunk);
      ++evictions_;
    }
    usage_ += size;  // reserved until the record is written
  }
  Status status;
  for (const auto& v : victims) {
    Status s = Erase(*v.blob, v.chunk, v.offset, v.size);
    if (status.ok()) status = s;
  }
  std::unique_lock io(blob->io);
  if (status.ok()) {
    status = PwriteAll(blob->data.get(), record, blob_offset,
                       "chunk store: write " + std::string(blob_key));
  }
  if (status.ok() && options_.sync_writes && fdatasync(blob->data.get()) != 0) {
    status = ErrnoStatus("chunk store: fdatasync " + std::string(blob_key));
  }
  if (status.ok()) {
    auto slot = EncodeSlot(chunk, blob_offset, size);
    status = PwriteAll(blob->slots.get(), slot, chunk * kSlotSize,
                       "chunk store: write slot of " + std::string(blob_key));
  }
  std::lock_guard lock(mu_);
  usage_ -= size;
  if (!status.ok()) return status;
  if (blob->removed) return false;
  Forget(*blob, chunk);  // a concurrent Put of the same chunk finished first
  Remember(*blob, chunk, blob_offset, size);
  return true;
}

bool ChunkStoreImpl::Contains(std::string_view blob_key, uint64_t chunk) const {
  std::lock_guard lock(mu_);
  auto blob = Find(blob_key);
  return blob && blob->chunks.count(chunk) != 0;
}

Status ChunkStoreImpl::Drop(std::string_view blob_key, uint64_t chunk) {
  LC_RETURN_IF_ERROR(ValidateBlobKey(blob_key));
  std::shared_ptr<BlobState> blob;
  uint64_t offset = 0;
  uint32_t size = 0;
  {
    std::lock_guard lock(mu_);
    blob = Find(blob_key);
    if (!blob) return Status::Ok();
    auto it = blob->chunks.find(chunk);
    if (it == blob->chunks.end()) return Status::Ok();
    offset = it->second.offset;
    size = it->second.size;
    Forget(*blob, chunk);
  }
  return Erase(*blob, chunk, offset, size);
}

Status ChunkStoreImpl::RemoveBlob(std::string_view blob_key) {
  LC_RETURN_IF_ERROR(ValidateBlobKey(blob_key));
  std::shared_ptr<BlobState> blob;
  {
    std::lock_guard lock(mu_);
    blob = Find(blob_key);
    if (blob) {
      while (!blob->chunks.empty()) Forget(*blob, blob->chunks.begin()->first);
      blob->removed = true;
      blobs_.erase(blob->key);
    }
  }
  if (blob) {
    std::unique_lock io(blob->io);  // waits for readers and writers of its files
  }
  std::error_code ec;
  fs::remove(SlotsPath(blob_key), ec);
  if (ec) return Status::IoError("chunk store: remove slots of " + std::string(blob_key) + ": " +
                                 ec.message());
  fs::remove(DataPath(blob_key), ec);
  if (ec) return Status::IoError("chunk store: remove data of " + std::string(blob_key) + ": " +
                                 ec.message());
  return DropTail(blob_key);
}

Status ChunkStoreImpl::PutTail(std::string_view blob_key, uint64_t blob_offset, ByteSpan bytes) {
  LC_RETURN_IF_ERROR(ValidateBlobKey(blob_key));
  if (bytes.empty() || bytes.size() > options_.capacity_bytes) {
    return Status::InvalidArgument("chunk store: tail of " + std::to_string(bytes.size()) +
                                   " bytes (1..capacity " +
                                   std::to_string(options_.capacity_bytes) + ")");
  }
  std::vector<uint8_t> file(kTailPrefixSize + bytes.size());
  std::memcpy(file.data(), kTailMagic.data(), kTailMagic.size());
  PutLe(file.data() + 8, blob_offset, 8);
  PutLe(file.data() + 16, bytes.size(), 8);
  PutLe(file.data() + 24, crc32(crc32(0L, Z_NULL, 0), bytes.data(), static_cast<uInt>(bytes.size())),
        4);
  std::memcpy(file.data() + kTailPrefixSize, bytes.data(), bytes.size());
  // Atomic: a reader (another mount of the same layer) sees the old tail or the new one.
  return WriteFileAtomically(TailPath(blob_key), file, 0600)
      .WithContext("chunk store: write tail of " + std::string(blob_key));
}

Result<std::optional<StoredTail>> ChunkStoreImpl::GetTail(std::string_view blob_key) {
  LC_RETURN_IF_ERROR(ValidateBlobKey(blob_key));
  const fs::path path = TailPath(blob_key);
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::optional<StoredTail>();
  Result<std::vector<uint8_t>> file = ReadFileBytes(path);
  if (!file.ok()) {
    if (file.status().code() == StatusCode::kNotFound) return std::optional<StoredTail>();
    return file.status().WithContext("chunk store: read tail of " + std::string(blob_key));
  }
  const std::vector<uint8_t>& f = *file;
  bool valid = f.size() > kTailPrefixSize &&
               std::memcmp(f.data(), kTailMagic.data(), kTailMagic.size()) == 0 &&
               GetLe(f.data() + 16, 8) == f.size() - kTailPrefixSize;
  if (valid) {
    const uint32_t crc = static_cast<uint32_t>(
        crc32(crc32(0L, Z_NULL, 0), f.data() + kTailPrefixSize,
              static_cast<uInt>(f.size() - kTailPrefixSize)));
    valid = crc == static_cast<uint32_t>(GetLe(f.data() + 24, 4));
  }
  if (!valid) {  // torn or damaged: absent (the caller fetches it again)
    fs::remove(path, ec);
    return std::optional<StoredTail>();
  }
  StoredTail tail;
  tail.blob_offset = GetLe(f.data() + 8, 8);
  tail.bytes.assign(f.begin() + kTailPrefixSize, f.end());
  return std::optional<StoredTail>(std::move(tail));
}

Status ChunkStoreImpl::DropTail(std::string_view blob_key) {
  LC_RETURN_IF_ERROR(ValidateBlobKey(blob_key));
  std::error_code ec;
  fs::remove(TailPath(blob_key), ec);
  if (ec) return Status::IoError("chunk store: remove tail of " + std::string(blob_key) + ": " +
                                 ec.message());
  return Status::Ok();
}

uint64_t ChunkStoreImpl::ChunksPresent(std::string_view blob_key) const {
  std::lock_guard lock(mu_);
  auto blob = Find(blob_key);
  return blob ? blob->chunks.size() : 0;
}

uint64_t ChunkStoreImpl::BytesPresent(std::string_view blob_key) const {
  std::lock_guard lock(mu_);
  auto blob = Find(blob_key);
  return blob ? blob->bytes : 0;
}

ChunkStoreStats ChunkStoreImpl::stats() const {
  std::lock_guard lock(mu_);
  ChunkStoreStats s;
  s.capacity_bytes = options_.capacity_bytes;
  s.evictions = evictions_;
  s.blobs = blobs_.size();
  for (const auto& [key, blob] : blobs_) {
    s.usage_bytes += blob->bytes;
    s.chunks_present += blob->chunks.size();
  }
  return s;
}

}  // namespace

Status ValidateBlobKey(std::string_view key) {
  if (key.empty() || key.size() > 128) {
    return Status::InvalidArgument("chunk store: blob key must be 1..128 characters, got " +
                                   std::to_string(key.size()));
  }
  if (key[0] == '.') return Status::InvalidArgument("chunk store: blob key starts with '.'");
  for (char c : key) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return Status::InvalidArgument("chunk store: blob key has a character outside [A-Za-z0-9._-]");
    }
  }
  return Status::Ok();
}

Result<std::unique_ptr<ChunkStore>> ChunkStore::Open(const fs::path& dir,
                                                     const ChunkStoreOptions& options) {
  if (dir.empty()) return Status::InvalidArgument("chunk store: empty directory path");
  auto store = std::make_unique<ChunkStoreImpl>(dir, options);
  LC_RETURN_IF_ERROR(store->Load());
  return std::unique_ptr<ChunkStore>(std::move(store));
}

}  // namespace lazycrypt::cache
