// What a filesystem needs from one mounted layer: its verified index and authenticated reads of
// file data. The FUSE filesystem (fusefs/) is written against this interface; the chunk cache
// (cache/cached_layer.h) and the uncached DirectLayerData below implement it.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "format/layer_index.h"
#include "format/layer_reader.h"

namespace lazycrypt::cache {

// Where the background verification of a mounted layer stands (CachedLayer::StartVerification,
// docs/FORMAT.md §8.4).
enum class VerificationState : uint8_t {
  kOff,       // not started (a layer nobody verifies, e.g. a one-shot read)
  kPending,   // started; not every byte hashed yet (or the source is failing: it retries)
  kVerified,  // every chunk hashed: the tar stream is the TOC's tar_sha256 and the TOC matches it
  kFailed,    // it is not: the layer is quarantined, every read of its files fails
};
// "off", "pending", "verified", "failed".
std::string_view VerificationStateName(VerificationState state);

// Counters of one layer, as `lazycrypt mount` statistics and the snapshotter's metrics show them.
// A snapshot: values are read without a lock and may be mutually a little out of date.
struct LayerStats {
  uint64_t blob_bytes_fetched = 0;   // bytes read from the blob source (registry or file)
  uint64_t fetch_requests = 0;       // requests to the blob source (one multi-range request = 1)
  uint64_t chunks_fetched = 0;       // chunk records fetched from the blob source
  uint64_t chunks_opened = 0;        // records authenticated + decrypted (+ decompressed)
  uint64_t cache_hits = 0;           // chunk reads served from the opened-chunk or disk cache
  uint64_t cache_misses = 0;         // chunk reads that had to fetch
  uint64_t auth_failures = 0;        // chunks that failed authentication (each is EIO to readers)
  uint64_t chunks_present = 0;       // chunks whose ciphertext is on local disk now
  uint64_t chunk_count = 0;          // chunks in the layer
  uint64_t fetch_nanos = 0;          // total wall time spent in blob fetches
  uint64_t bytes_present = 0;        // record bytes of this layer on local disk now
  uint64_t memory_cache_bytes = 0;   // opened (plaintext) chunk bytes held in memory now
  uint64_t disk_corrupt = 0;         // cached records that failed authentication (dropped, refetched)
  uint64_t fetch_errors = 0;         // ranged requests that failed
  VerificationState verification = VerificationState::kOff;
  uint64_t verified_chunks = 0;        // chunks the verification has hashed so far
  uint64_t verification_retries = 0;   // verification batches that failed and were tried again
  uint64_t verification_failures = 0;  // 1 once the layer failed verification (quarantined)
  uint64_t quarantined_reads = 0;      // reads refused because the layer is quarantined
  // An indexed ocicrypt layer's span windows, fetched by range from its index blob with their
  // spans (also counted in blob_bytes_fetched, fetch_requests, fetch_errors and fetch_nanos).
  uint64_t index_bytes_fetched = 0;
  uint64_t index_fetch_requests = 0;
};

// Authenticated file bytes lent without a copy: `spans`, in order, are the bytes read; they point
// into plaintext that `pins` keep alive (and that is wiped when the last pin goes). Every chunk
// the spans touch was verified whole before the view was made.
struct FileView {
  std::vector<ByteSpan> spans;
  std::vector<std::shared_ptr<const void>> pins;
  // Optional: the rest of the file's bytes in the chunks that were opened for this view (each
  // piece: where it starts in the file, and its bytes, kept alive by the same pins). A
  // filesystem may hand them to the kernel's page cache, so that nearby reads do not open the
  // same chunks again. Empty when the implementation has no such bytes (the default ViewFile).
  struct Piece {
    uint64_t file_offset;
    ByteSpan bytes;
  };
  std::vector<Piece> around;
  size_t size() const {
    size_t n = 0;
    for (ByteSpan s : spans) n += s.size();
    return n;
  }
};

// Thread-safe: every method may be called concurrently.
class LayerData {
 public:
  virtual ~LayerData() = default;
  virtual const format::LayerIndex& index() const = 0;
  // Reads up to out.size() bytes of regular file `entry` (a view of index().entries(); views of
  // another layer's entries are InvalidArgument) from `offset`;
  // returns the count (0 at or past the end of the file). Never writes unauthenticated bytes to
  // `out`: AuthFailed/Corruption for a chunk that fails verification, Unavailable/
  // DeadlineExceeded when the blob cannot be fetched (callers map both to EIO).
  virtual Result<size_t> ReadFile(format::EntryView entry, uint64_t offset,
                                  MutableByteSpan out) = 0;
  // The same bytes as ReadFile(entry, offset, up to `size` bytes), lent instead of copied (the
  // FUSE filesystem replies straight from them). Errors as ReadFile's. The default copies once,
  // through ReadFile, into a buffer that is wiped when released.
  virtual Result<FileView> ViewFile(format::EntryView entry, uint64_t offset, size_t size);
  virtual LayerStats stats() const = 0;
  // True once the layer's verification failed: every read fails (the failure was logged once,
  // by the layer; readers need not log each read).
  virtual bool quarantined() const { return false; }
};

// No caching at all: every ReadFile fetches and opens the covering chunks (format::LayerReader).
// For tests and for `lazycrypt layer cat`-like one-shot reads. `blob` must outlive the result.
std::unique_ptr<LayerData> DirectLayerData(std::unique_ptr<format::LayerReader> reader);

}  // namespace lazycrypt::cache
