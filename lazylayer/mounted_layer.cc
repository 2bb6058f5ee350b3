#include "lazylayer/mounted_layer.h"

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <span>

#include "cache/layer_tail.h"
#include "cache/multi_range_source.h"
#include "crypto/digest.h"
#include "format/layout.h"
#include "image/layer.h"
#include "lazylayer/held_bytes.h"

namespace lazycrypt::lazylayer {
namespace {

// A blob that a mount has read whole (MountLayerOptions::whole_layer_bytes): reads inside it
// are served from memory until Release, every other read (and every read after it) goes to
// `inner`. A MultiRangeBlobSource, so that the layer keeps sending several ranges in one
// request when `inner` can.
class HeldBlobSource final : public cache::MultiRangeBlobSource {
 public:
  explicit HeldBlobSource(std::shared_ptr<BlobSource> inner)
      : inner_(std::move(inner)),
        multi_(dynamic_cast<cache::MultiRangeBlobSource*>(inner_.get())) {}
  uint64_t size() const override { return inner_->size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    if (Serve(offset, out)) return Status::Ok();
    return inner_->ReadAt(offset, out);
  }
  Status ReadRanges(std::span<const cache::RangeRead> ranges) override {
    bool all = true;
    for (const cache::RangeRead& r : ranges) all = all && Serve(r.offset, r.out);
    if (all) return Status::Ok();
    if (multi_ != nullptr) return multi_->ReadRanges(ranges);
    for (const cache::RangeRead& r : ranges) LC_RETURN_IF_ERROR(inner_->ReadAt(r.offset, r.out));
    return Status::Ok();
  }
  // The blob from offset 0 (the whole blob, read by the caller): served from memory from now on.
  void Hold(std::vector<uint8_t> bytes) { held_.Hold(std::move(bytes)); }
  // The bytes are ciphertext (and the sealed TOC): dropped, not wiped.
  void Release() { held_.Release(); }

 private:
  bool Serve(uint64_t offset, MutableByteSpan out) { return held_.Serve(offset, out); }

  const std::shared_ptr<BlobSource> inner_;
  cache::MultiRangeBlobSource* const multi_;
  HeldBytes held_;
};

}  // namespace

std::string LayerStoreKey(std::string_view layer_digest, std::string_view toc_digest) {
  std::string key(layer_digest);
  for (char& c : key) {
    if (c == ':') c = '-';
  }
  const size_t colon = toc_digest.find(':');
  std::string_view toc_hex =
      colon == std::string_view::npos ? toc_digest : toc_digest.substr(colon + 1);
  return key + "-toc-" + std::string(toc_hex.substr(0, 48));
}

Result<std::unique_ptr<MountedLayer>> MountedLayer::Mount(
    const std::filesystem::path& mountpoint, std::shared_ptr<BlobSource> source,
    std::shared_ptr<void> keepalive, const image::Descriptor& descriptor,
    const keywrap::KeyRing& keys, const MountLayerOptions& options,
    std::unique_ptr<fusefs::FuseMount>* resumed) {
  LC_ASSIGN_OR_RETURN(std::unique_ptr<MountedLayer> layer,
                      Open(std::move(source), std::move(keepalive), descriptor, keys, options));
  LC_RETURN_IF_ERROR(layer->Attach(mountpoint, options, resumed));
  return layer;
}

Result<std::unique_ptr<MountedLayer>> MountedLayer::Open(std::shared_ptr<BlobSource> source,
                                                         std::shared_ptr<void> keepalive,
                                                         const image::Descriptor& descriptor,
                                                         const keywrap::KeyRing& keys,
                                                         const MountLayerOptions& options) {
  std::unique_ptr<MountedLayer> layer(new MountedLayer());
  layer->keepalive_ = std::move(keepalive);
  layer->source_ = std::move(source);
  layer->digest_ = descriptor.digest;
  layer->blob_size_ = descriptor.size;
  const std::string what = "layer " + descriptor.digest;

  // Footer and sealed TOC: from the chunk store when this node has opened the layer before (no
  // request), else in one ranged read (the toc-size annotation, or a tail guess), kept in the
  // store once they have opened the layer. The store's bytes are checked exactly as the
  // registry's (the pinned TOC digest first of all), on every mount.
  const std::string tail_key =
      !options.cache.store_key.empty()
          ? options.cache.store_key
          : LayerStoreKey(descriptor.digest,
                          descriptor.Annotation(image::kAnnotationLazycryptTocDigest));
  // Reads go through `held`: nothing held (every read passes through) unless the layer is small
  // and new to this node, in which case footer, TOC and every chunk come in the one request the
  // mount makes anyway.
  auto held = std::make_shared<HeldBlobSource>(layer->source_);
  cache::TailCachingSource tail(*held, options.store, tail_key);
  const bool whole = descriptor.size > 0 && descriptor.size <= options.whole_layer_bytes &&
                     layer->source_->size() == descriptor.size && tail.stored_bytes() == 0;
  if (whole) {
    std::vector<uint8_t> bytes(static_cast<size_t>(descriptor.size));
    LC_RETURN_IF_ERROR(layer->source_->ReadAt(0, bytes).WithContext(what + ": reading it whole"));
    held->Hold(std::move(bytes));
  }
  format::TailReadOptions tail_read;
  if (const uint64_t stored = tail.stored_bytes(); stored > format::kFooterSize) {
    tail_read.toc_size_hint = stored - format::kFooterSize;
  }
  // The node's [limits] (options.cache.toc_limits): what parsing a hostile TOC may build.
  auto verified =
      image::OpenLayerIndex(tail, descriptor, keys, tail_read, options.cache.toc_limits);
  if (!verified.ok() && tail.reads_from_store() > 0) {
    // The stored copy did not open the layer (damaged, or not this blob's): dropped, and the
    // layer opened from its source as on a first mount.
    std::fprintf(stderr, "lazycrypt: layer %s: the cached TOC did not open it (%s); fetching it\n",
                 descriptor.digest.c_str(), verified.status().ToString().c_str());
    std::fflush(stderr);
    (void)tail.Drop();
    verified = image::OpenLayerIndex(tail, descriptor, keys, {}, options.cache.toc_limits);
  }
  if (!verified.ok()) return verified.status().WithContext(what);
  layer->key_name_ = verified->key_name;
  layer->opened_from_store_ = tail.reads_from_inner() == 0;
  if (tail.reads_from_inner() > 0) {
    if (Status kept = tail.Persist(verified->index->toc_offset()); !kept.ok()) {
      // Not fatal: the next mount of the layer fetches them again.
      std::fprintf(stderr, "lazycrypt: layer %s: cannot cache its TOC: %s\n",
                   descriptor.digest.c_str(), kept.ToString().c_str());
      std::fflush(stderr);
    }
  }

  cache::CachedLayerOptions cache_options = options.cache;
  if (cache_options.store_key.empty()) {
    cache_options.store_key =
        LayerStoreKey(descriptor.digest, crypto::OciDigest(verified->index->toc_digest()));
  }
  auto cached = cache::CachedLayer::Create(
      std::move(verified->index), std::move(verified->opener),
      whole ? std::static_pointer_cast<BlobSource>(held) : layer->source_, options.store,
      cache_options);
  if (!cached.ok()) return cached.status().WithContext(what);
  layer->layer_ = std::move(*cached);

  if (whole) {
    // Every chunk authenticated, opened and stored from the bytes held (no request), in the
    // background: claimed before the mount serves anything, so a read waits for it rather than
    // fetching. A chunk that fails is fetched again, and fails again, by the read that needs it.
    // The bytes are dropped when it ends.
    if (Status all = layer->layer_->StartPrefetchAll([held] { held->Release(); }); !all.ok()) {
      held->Release();
      return all.WithContext(what);
    }
  } else if (options.prefetch) {
    // In the background, claimed before the mount serves anything: reads of marked files wait
    // for its request, other reads go ahead. A failed prefetch is not fatal: the reads that
    // need those chunks fetch them again.
    (void)layer->layer_->StartPrefetchMarked();
  }
  return layer;
}

Status MountedLayer::Attach(const std::filesystem::path& mountpoint,
                            const MountLayerOptions& options,
                            std::unique_ptr<fusefs::FuseMount>* resumed) {
  if (mount_) return Status::FailedPrecondition("layer " + digest_ + ": mounted already");
  const std::string what = "layer " + digest_;
  MountedLayer* layer = this;
  fusefs::MountOptions mount_options = options.mount;
  if (mount_options.layer_name == fusefs::MountOptions().layer_name) {
    mount_options.layer_name = what;
  }
  if (resumed != nullptr && *resumed != nullptr) {
    // The same mount, served again: the requests waiting for it get this layer.
    LC_RETURN_IF_ERROR((*resumed)->Provide(layer->layer_).WithContext(what));
    layer->mount_ = std::move(*resumed);
  } else {
    auto mounted = fusefs::FuseMount::Mount(mountpoint, layer->layer_, mount_options);
    if (!mounted.ok()) return mounted.status().WithContext(what);
    layer->mount_ = std::move(*mounted);
  }

  if (options.verify) {
    // Also completes the layer in the store: no separate background fetch.
    cache::VerifyOptions verify;
    verify.rate_bytes_per_sec = options.background_rate_bytes_per_sec > 0
                                    ? options.background_rate_bytes_per_sec
                                    : options.verify_rate_bytes_per_sec;
    verify.expected_diff_id = options.expected_diff_id;
    verify.start_delay = std::chrono::milliseconds(options.verify_start_delay_ms);
    // The layer outlives the thread: ~MountedLayer stops the verification first.
    verify.on_done = [self = layer, user = options.on_verified](const Status& s) {
      self->OnVerified(s, user);
    };
    LC_RETURN_IF_ERROR(layer->layer_->StartVerification(std::move(verify)).WithContext(what));
  } else if (options.background_rate_bytes_per_sec > 0 && options.store != nullptr) {
    LC_RETURN_IF_ERROR(layer->layer_->StartBackgroundFetch(options.background_rate_bytes_per_sec));
  }
  return Status::Ok();
}

MountedLayer::~MountedLayer() {
  if (layer_) layer_->StopBackgroundFetch();
  mount_.reset();  // unmounts (lazily if busy) before the cache and the source go
  layer_.reset();
  source_.reset();
  keepalive_.reset();
}

void MountedLayer::OnVerified(const Status& result,
                              const std::function<void(const Status&)>& user) {
  // The caller first (it records the quarantine on disk): a crash during the invalidation
  // must not leave a next daemon without the record.
  if (user) user(verification_status());
  if (!result.ok()) {
    // Once per layer (the verification ends once). Names the layer, never a file.
    std::fprintf(stderr,
                 "lazycrypt: layer %s: verification failed, layer quarantined (every read of its "
                 "files fails with EIO): %s\n",
                 digest_.c_str(), result.message().c_str());
    std::fflush(stderr);
    if (mount_) mount_->InvalidateFileData();
  }
}

Verification MountedLayer::verification() const {
  switch (layer_->verification()) {
    case cache::VerificationState::kVerified: return Verification::kVerified;
    case cache::VerificationState::kFailed: return Verification::kFailed;
    case cache::VerificationState::kOff:
    case cache::VerificationState::kPending: break;
  }
  return Verification::kPending;
}

Status MountedLayer::verification_status() const {
  return layer_->verification_status().WithContext("layer " + digest_);
}

void MountedLayer::LeaveMounted() {
  if (layer_) layer_->StopBackgroundFetch();
  if (mount_) mount_->LeaveMounted();
}

Status MountedLayer::Unmount() {
  if (!mount_) return Status::Ok();
  return mount_->Unmount();
}

}  // namespace lazycrypt::lazylayer
