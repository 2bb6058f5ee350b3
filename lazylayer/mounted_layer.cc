#include "lazylayer/mounted_layer.h"

#include "image/layer.h"

namespace lazycrypt::lazylayer {

Result<std::unique_ptr<MountedLayer>> MountedLayer::Mount(
    const std::filesystem::path& mountpoint, std::shared_ptr<BlobSource> source,
    std::shared_ptr<void> keepalive, const image::Descriptor& descriptor,
    const keywrap::KeyRing& keys, const MountLayerOptions& options) {
  std::unique_ptr<MountedLayer> layer(new MountedLayer());
  layer->keepalive_ = std::move(keepalive);
  layer->source_ = std::move(source);
  layer->digest_ = descriptor.digest;
  layer->blob_size_ = descriptor.size;
  const std::string what = "layer " + descriptor.digest;

  auto verified = image::OpenLayerIndex(*layer->source_, descriptor, keys);
  if (!verified.ok()) return verified.status().WithContext(what);
  layer->key_name_ = verified->key_name;

  cache::CachedLayerOptions cache_options = options.cache;
  if (cache_options.store_key.empty()) {
    // One blob per digest; the digest is what containerd and the registry name it by.
    cache_options.store_key = descriptor.digest;
    for (char& c : cache_options.store_key) {
      if (c == ':') c = '-';
    }
  }
  auto cached = cache::CachedLayer::Create(std::move(verified->index), std::move(verified->opener),
                                           layer->source_, options.store, cache_options);
  if (!cached.ok()) return cached.status().WithContext(what);
  layer->layer_ = std::move(*cached);

  if (options.prefetch) {
    // In the background, claimed before the mount serves anything: reads of marked files wait
    // for its request, other reads go ahead. A failed prefetch is not fatal: the reads that
    // need those chunks fetch them again.
    (void)layer->layer_->StartPrefetchMarked();
  }

  fusefs::MountOptions mount_options = options.mount;
  if (mount_options.layer_name == fusefs::MountOptions().layer_name) {
    mount_options.layer_name = "layer " + descriptor.digest;
  }
  auto mounted = fusefs::FuseMount::Mount(mountpoint, layer->layer_, mount_options);
  if (!mounted.ok()) return mounted.status().WithContext(what);
  layer->mount_ = std::move(*mounted);

  if (options.background_rate_bytes_per_sec > 0 && options.store != nullptr) {
    LC_RETURN_IF_ERROR(layer->layer_->StartBackgroundFetch(options.background_rate_bytes_per_sec));
  }
  return layer;
}

MountedLayer::~MountedLayer() {
  if (layer_) layer_->StopBackgroundFetch();
  mount_.reset();  // unmounts (lazily if busy) before the cache and the source go
  layer_.reset();
  source_.reset();
  keepalive_.reset();
}

Verification MountedLayer::verification() const { return Verification::kPending; }

Status MountedLayer::verification_status() const {
  return Status::Unavailable("layer " + digest_ + ": verification pending");
}

Status MountedLayer::Unmount() {
  if (!mount_) return Status::Ok();
  return mount_->Unmount();
}

}  // namespace lazycrypt::lazylayer
