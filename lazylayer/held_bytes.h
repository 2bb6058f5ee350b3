// A blob read whole by its mount (a small layer: [fetch] whole_layer_bytes), held in memory so
// that the reads inside it need no request, until Release. Shared by the GCM format's mount
// (lazylayer/mounted_layer.cc) and the CTR layers' CountingSource (lazylayer/ctr_layer.h).
// The bytes are ciphertext: dropped, not wiped. Thread-safe.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "common/io.h"

namespace lazycrypt::lazylayer {

class HeldBytes {
 public:
  // `bytes`: the blob from offset 0, served from now on.
  void Hold(std::vector<uint8_t> bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    bytes_ = std::move(bytes);
    holding_.store(!bytes_.empty());
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    holding_.store(false);
    std::vector<uint8_t>().swap(bytes_);
  }
  bool holding() const { return holding_.load(); }
  // True when [offset, offset + out.size()) lies in the held bytes (then copied to `out`). No
  // lock taken when nothing is held (every read of a large layer asks).
  bool Serve(uint64_t offset, MutableByteSpan out) {
    if (!holding_.load()) return false;
    std::lock_guard<std::mutex> lock(mu_);
    if (offset > bytes_.size() || out.size() > bytes_.size() - offset) return false;
    std::copy_n(bytes_.data() + offset, out.size(), out.data());
    return true;
  }

 private:
  std::atomic<bool> holding_{false};
  std::mutex mu_;
  std::vector<uint8_t> bytes_;  // guarded by mu_: the blob from offset 0, or nothing
};

}  // namespace lazycrypt::lazylayer
