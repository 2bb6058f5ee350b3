// ChunkStore: chunk records (ciphertext, exactly as in the blob) kept on local disk under a
// directory the daemon owns, with a size cap shared by every blob and LRU eviction by chunk.
// Plaintext never goes here: callers store records as fetched and authenticate them (GCM) every
// time they open one, so a record damaged on disk is detected then and dropped (Drop).
//
// Layout of `dir` (created 0700; files 0600):
//   <dir>/<blob_key>.data   sparse file: each record at its own blob offset
//   <dir>/<blob_key>.slots  16 bytes per chunk index: u64 LE blob offset, u32 LE record size,
//                           u32 LE crc32(index, offset, size). All zero (or a bad crc) = absent.
//   <dir>/<blob_key>.tail   the blob's last bytes that open it (footer and sealed TOC, see
//                           PutTail): "LCTAIL1\n", u64 LE blob offset, u64 LE length, u32 LE
//                           crc32 of the bytes, the bytes. Written atomically (rename).
// A record is written before its slot, and a slot is cleared before its bytes are punched out
// (fallocate PUNCH_HOLE), so after a crash a slot names either a complete record or one whose
// bytes were torn — the latter fails authentication when opened and is dropped and refetched.
// Reopening the store (Open) reads every slots file and so finds what is present.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"

namespace lazycrypt::cache {

struct ChunkStoreOptions {
  // Cap on the record bytes kept across all blobs. Least recently used chunks are evicted to stay
  // under it. A record larger than the cap is not stored.
  uint64_t capacity_bytes = uint64_t{10} << 30;
  // fdatasync the data file before writing a slot. Off by default: a torn record is caught by
  // authentication anyway.
  bool sync_writes = false;
};

// The end of a blob as PutTail kept it: bytes [blob_offset, blob_offset + bytes.size()).
struct StoredTail {
  uint64_t blob_offset = 0;
  std::vector<uint8_t> bytes;
};

struct ChunkStoreStats {
  uint64_t usage_bytes = 0;     // record bytes present across all blobs
  uint64_t capacity_bytes = 0;
  uint64_t chunks_present = 0;  // across all blobs
  uint64_t evictions = 0;       // chunks evicted for space since Open
  uint64_t blobs = 0;           // blobs with at least one file in the store
};

// Thread-safe: every method may be called concurrently (one mutex for the bookkeeping, a
// reader/writer lock per blob for its files; never held across anything but local disk I/O).
class ChunkStore {
 public:
  // Creates `dir` (mode 0700, parents as needed) or reopens it (its mode is reset to 0700) and
  // loads the slots of every blob found there. Blobs with an unreadable or inconsistent slots
  // file are removed. Usage above the capacity is evicted at once.
  static Result<std::unique_ptr<ChunkStore>> Open(const std::filesystem::path& dir,
                                                  const ChunkStoreOptions& options = {});
  virtual ~ChunkStore() = default;

  // blob_key names a blob in the store: 1..128 characters of [A-Za-z0-9._-], not starting with
  // '.' (InvalidArgument otherwise). CachedLayer uses "toc-<hex of the pinned TOC digest>".
  // chunk is the chunk index, blob_offset the record's offset in the blob.

  // Reads the record of `chunk` into `out` if present with exactly this offset and
  // out.size() as its size; returns false when absent. Marks it most recently used.
  virtual Result<bool> Get(std::string_view blob_key, uint64_t chunk, uint64_t blob_offset,
                           MutableByteSpan out) = 0;
  // Stores a record (replacing any), evicting least recently used chunks of any blob to make
  // room. Returns false (and stores nothing) if the record alone exceeds the capacity.
  virtual Result<bool> Put(std::string_view blob_key, uint64_t chunk, uint64_t blob_offset,
                           ByteSpan record) = 0;
  virtual bool Contains(std::string_view blob_key, uint64_t chunk) const = 0;
  // Forgets a record (e.g. one that failed authentication) and punches its bytes out.
  virtual Status Drop(std::string_view blob_key, uint64_t chunk) = 0;
  // Deletes every record of a blob and its files (its tail included).
  virtual Status RemoveBlob(std::string_view blob_key) = 0;

  // The blob's tail: the bytes at its end that open it (a lazycrypt layer's sealed TOC and
  // footer), kept so that a layer the node has seen is opened again without a registry request
  // (issue 19), after a restart too. Ciphertext as fetched; whoever uses it checks it exactly as
  // bytes fresh from the registry (the TOC digest pinned by the manifest, on every use), and
  // drops it (DropTail) when it fails. One tail per blob (replaced by the next PutTail); not
  // counted against capacity_bytes nor evicted with the records (a sealed TOC is a small part of
  // its layer, and the layer's records are worth little without it); RemoveBlob deletes it.
  // InvalidArgument when bytes is empty or larger than the capacity.
  virtual Status PutTail(std::string_view blob_key, uint64_t blob_offset, ByteSpan bytes) = 0;
  // nullopt when there is none, or when the file does not parse or fails its crc (it is then
  // removed).
  virtual Result<std::optional<StoredTail>> GetTail(std::string_view blob_key) = 0;
  virtual Status DropTail(std::string_view blob_key) = 0;

  // Chunks and record bytes present for one blob.
  virtual uint64_t ChunksPresent(std::string_view blob_key) const = 0;
  virtual uint64_t BytesPresent(std::string_view blob_key) const = 0;
  virtual ChunkStoreStats stats() const = 0;
  virtual const std::filesystem::path& dir() const = 0;
};

// InvalidArgument naming the problem unless `key` is a valid blob key (see ChunkStore).
Status ValidateBlobKey(std::string_view key);

}  // namespace lazycrypt::cache
