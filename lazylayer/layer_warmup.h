// Work done ahead of containerd's Prepares (issue 19, "All layers at once"): containerd prepares
// the layers of an image one after another, each waiting for the one below to be committed, so
// the per-layer round trips (footer + sealed TOC, key unwrap, prefetch start) would add up layer
// by layer. The first lazycrypt layer's Prepare therefore hands every later lazycrypt layer of the
// image to a LayerWarmup, whose small worker pool opens them in parallel (MountedLayer::Open:
// unwrap, footer and TOC verified against the pin, prefetch started) without mounting anything;
// the later Prepare of each layer claims its opened layer and only mounts it.
//
// Nothing a Prepare checks is skipped by a claim: the claimant resolves its layer from the
// manifest and checks it against its own labels as before, the opened layer must be for exactly
// the descriptor it resolved and for the node's key set as it is now (else the claim is dropped
// and the Prepare opens the layer itself), and the chain-ID binding, quarantine and Check are
// applied to the claimed layer exactly as to one opened by the Prepare. A warm-up failure is
// nobody's error: the layer's own Prepare does the work and reports its own failure.
//
// Bounded: `workers` threads, at most `max_layers` layers queued, opening or opened at a time
// (more are left to their Prepares), and an opened layer nobody claims within `keep_for` is
// destroyed (its unwrapped key is wiped with it).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cache/timed_source.h"
#include "common/status.h"
#include "image/oci.h"
#include "lazylayer/labels.h"
#include "lazylayer/mounted_layer.h"
#include "lazylayer/restore_record.h"
#include "snapshotter/log.h"

namespace lazycrypt::lazylayer {

// One layer to open ahead.
struct WarmRequest {
  std::string key;  // WarmKey(source.image_ref, layer digest, pinned TOC digest)
  LayerSource source;
  image::Descriptor descriptor;  // from the image's manifest
};

// What a warm-up opened: everything the layer's Prepare would have done before its FUSE mount.
struct WarmLayer {
  image::Descriptor descriptor;  // the one it was opened for
  std::string key_fingerprint;   // KeySetFingerprint() when its keys were loaded
  std::unique_ptr<MountedLayer> layer;  // Open()ed, not attached
  std::vector<RecordedRange> ranges;    // what opened it (the restore record's ranges)
  std::shared_ptr<cache::TimedBlobSource> timed;  // its blob reads (for the timing log line)
  int64_t open_ms = 0;
};

// The key a warm-up entry is found by: the image the Prepare names, the layer, its pinned TOC.
std::string WarmKey(const std::string& image_ref, const std::string& layer_digest,
                    const std::string& toc_digest);

struct LayerWarmupOptions {
  size_t workers = 4;
  size_t max_layers = 16;
  std::chrono::milliseconds keep_for{std::chrono::minutes(2)};
};

// Counters (the snapshotter's log and tests read them).
struct LayerWarmupStats {
  uint64_t queued = 0;         // layers handed to the pool
  uint64_t opened = 0;         // opened by the pool
  uint64_t failed = 0;         // the pool's open failed (the Prepare then did it)
  uint64_t claimed_ready = 0;  // a Prepare found its layer opened
  uint64_t claimed_waited = 0; // a Prepare waited for the pool to finish its layer
  uint64_t expired = 0;        // opened, never claimed, destroyed
  uint64_t skipped = 0;        // not queued: over max_layers
};

// Thread-safe.
class LayerWarmup {
 public:
  using OpenFn = std::function<Result<WarmLayer>(const WarmRequest&)>;
  LayerWarmup(LayerWarmupOptions options, OpenFn open, snapshotter::LogSink log);
  // Queued layers are dropped, the ones being opened finish, every opened layer is destroyed.
  ~LayerWarmup();
  LayerWarmup(const LayerWarmup&) = delete;
  LayerWarmup& operator=(const LayerWarmup&) = delete;

  // Queues each request whose key is not queued, being opened, opened or recently failed
  // already, up to max_layers. Returns how many were queued.
  size_t Start(std::vector<WarmRequest> requests);

  // The opened layer for `key`: taken at once when ready; waited for when being opened; nullopt
  // when there is none, when it is still queued (taken out of the queue: the caller opens it
  // itself, sooner than the pool would) or when its open failed. `waited` says whether it was
  // being opened when asked.
  std::optional<WarmLayer> Claim(const std::string& key, bool* waited = nullptr);

  LayerWarmupStats stats() const;

 private:
  enum class State { kQueued, kOpening, kReady, kFailed };
  struct Entry {
    State state = State::kQueued;
    WarmRequest request;
    std::optional<WarmLayer> layer;
    std::chrono::steady_clock::time_point since;  // queued, or ready/failed since
  };
  void Work();
  // Removes the entries past keep_for (mu_ held); returns the opened layers to destroy (outside
  // the lock: a layer's destruction stops its prefetch).
  std::vector<WarmLayer> ExpireLocked(std::chrono::steady_clock::time_point now);
  void Log(snapshotter::LogLevel level, const std::string& message) const {
    if (log_) log_(level, message);
  }

  const LayerWarmupOptions options_;
  const OpenFn open_;
  const snapshotter::LogSink log_;
  mutable std::mutex mu_;
  std::condition_variable cv_;       // work queued, an entry changed state, stopping
  std::map<std::string, Entry> entries_;
  std::deque<std::string> queue_;    // keys in kQueued, in order
  std::vector<std::thread> threads_;  // started on demand, up to options_.workers
  size_t idle_ = 0;
  bool stopping_ = false;
  LayerWarmupStats stats_;
};

}  // namespace lazycrypt::lazylayer
