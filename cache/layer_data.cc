#include "cache/layer_data.h"

#include <openssl/crypto.h>

#include <atomic>

namespace lazycrypt::cache {

std::string_view VerificationStateName(VerificationState state) {
  switch (state) {
    case VerificationState::kOff: return "off";
    case VerificationState::kPending: return "pending";
    case VerificationState::kVerified: return "verified";
    case VerificationState::kFailed: return "failed";
  }
  return "unknown";
}

namespace {

// Plaintext copied out for a FileView; wiped on release.
class WipedBytes {
 public:
  explicit WipedBytes(size_t size)
      : bytes_(std::make_unique_for_overwrite<uint8_t[]>(size)), size_(size) {}
  ~WipedBytes() { OPENSSL_cleanse(bytes_.get(), size_); }
  WipedBytes(const WipedBytes&) = delete;
  WipedBytes& operator=(const WipedBytes&) = delete;
  uint8_t* data() { return bytes_.get(); }

 private:
  std::unique_ptr<uint8_t[]> bytes_;
  size_t size_;
};

class DirectLayerDataImpl final : public LayerData {
 public:
  explicit DirectLayerDataImpl(std::unique_ptr<format::LayerReader> reader)
      : reader_(std::move(reader)) {}
  const format::LayerIndex& index() const override { return reader_->index(); }
  Result<size_t> ReadFile(format::EntryView entry, uint64_t offset,
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

Result<FileView> LayerData::ViewFile(format::EntryView entry, uint64_t offset, size_t size) {
  if (!index().Holds(entry)) {
    return Status::InvalidArgument("ViewFile: entry " + std::to_string(entry.index()) +
                                   " is not one of this layer's");
  }
  const uint64_t entry_size = entry.size();
  const size_t want =
      offset >= entry_size ? 0 : static_cast<size_t>(std::min<uint64_t>(size, entry_size - offset));
  FileView view;
  if (want == 0) return view;
  auto buf = std::make_shared<WipedBytes>(want);
  size_t done = 0;
  while (done < want) {
    LC_ASSIGN_OR_RETURN(size_t n,
                        ReadFile(entry, offset + done, MutableByteSpan(buf->data() + done, want - done)));
    if (n == 0) break;
    done += n;
  }
  view.spans.push_back(ByteSpan(buf->data(), done));
  view.pins.push_back(std::move(buf));
  return view;
}

std::unique_ptr<LayerData> DirectLayerData(std::unique_ptr<format::LayerReader> reader) {
  return std::make_unique<DirectLayerDataImpl>(std::move(reader));
}

}  // namespace lazycrypt::cache
