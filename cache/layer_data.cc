#include "cache/layer_data.h"

#include <atomic>

namespace lazycrypt::cache {
namespace {

class DirectLayerDataImpl final : public LayerData {
 public:
  explicit DirectLayerDataImpl(std::unique_ptr<format::LayerReader> reader)
      : reader_(std::move(reader)) {}
  const format::LayerIndex& index() const override { return reader_->index(); }
  Result<size_t> ReadFile(const format::Entry& entry, uint64_t offset,
                          MutableByteSpan out) override {
    auto n = reader_->ReadFile(entry, offset, out);
    if (!n.ok() && n.status().code() == StatusCode::kAuthFailed) {
      auth_failures_.fetch_add(1, std::memory_order_relaxed);
    }
    return n;
  }
  LayerStats stats() const override {
    LayerStats s;
    s.chunk_count = reader_->index().chunks().size();
    s.auth_failures = auth_failures_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  std::unique_ptr<format::LayerReader> reader_;
  std::atomic<uint64_t> auth_failures_{0};
};

}  // namespace

std::unique_ptr<LayerData> DirectLayerData(std::unique_ptr<format::LayerReader> reader) {
  return std::make_unique<DirectLayerDataImpl>(std::move(reader));
}

}  // namespace lazycrypt::cache
