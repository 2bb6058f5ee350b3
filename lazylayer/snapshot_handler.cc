#include "lazylayer/snapshot_handler.h"

#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <map>
#include <mutex>

#include "cache/registry_source.h"
#include "cache/timed_source.h"
#include "decoder/decoder.h"
#include "image/oci.h"
#include "lazylayer/labels.h"

namespace lazycrypt::lazylayer {
namespace {

// The layer descriptor named by `source`, from the manifest the labels point at (by digest when
// the CRI label gives it, else by the image reference's tag, through an index when there is one).
Result<image::Descriptor> FindLayer(registry::Client& client, const LayerSource& source) {
  LC_ASSIGN_OR_RETURN(registry::Reference ref, registry::Reference::Parse(source.image_ref));
  if (!source.manifest_digest.empty()) ref = ref.WithDigest(source.manifest_digest);
  LC_ASSIGN_OR_RETURN(registry::Manifest root, client.GetManifest(ref));

  std::vector<registry::Manifest> manifests;
  if (image::IsIndexMediaType(root.media_type)) {
    LC_ASSIGN_OR_RETURN(image::Index index, image::ParseIndex(root.bytes));
    for (const image::Descriptor& d : index.manifests) {
      if (!image::IsManifestMediaType(d.media_type) || image::IsIndexMediaType(d.media_type)) {
        continue;
      }
      LC_ASSIGN_OR_RETURN(registry::Manifest m, client.GetManifest(ref.WithDigest(d.digest)));
      manifests.push_back(std::move(m));
    }
  } else {
    manifests.push_back(std::move(root));
  }
  for (const registry::Manifest& m : manifests) {
    LC_ASSIGN_OR_RETURN(image::Manifest manifest, image::ParseManifest(m.bytes));
    for (const image::Descriptor& layer : manifest.layers) {
      if (layer.digest != source.layer_digest) continue;
      if (image::ClassifyLayer(layer.media_type) != image::LayerKind::kLazycrypt) {
        return Status::InvalidArgument("the labels mark it as lazycrypt's, but the manifest of " +
                                       source.image_ref + " gives it media type '" +
                                       layer.media_type + "'");
      }
      const std::string pinned = layer.Annotation(image::kAnnotationLazycryptTocDigest);
      if (pinned != source.toc_digest) {
        return Status::AuthFailed("the TOC digest label (" + source.toc_digest +
                                  ") differs from the manifest's annotation (" + pinned + ")");
      }
      return layer;
    }
  }
  return Status::NotFound("image " + source.image_ref + " has no layer " + source.layer_digest);
}

// The node's key files (password-protected ones with their configured password; others without
// one are skipped with a warning) followed by the configured key providers.
Result<keywrap::KeyRing> LoadNodeKeys(const SnapshotHandlerOptions& options) {
  keywrap::KeyRing keys;
  std::string searched;
  std::vector<std::string> warnings;
  for (const auto& dir : options.key_dirs) {
    searched += (searched.empty() ? "" : ", ") + dir.string();
    auto loaded = decoder::LoadDecryptionKeysDir(dir, options.key_passwords, &warnings);
    if (!loaded.ok()) {
      if (loaded.status().code() == StatusCode::kNotFound) continue;
      return loaded.status();
    }
    for (auto& k : *loaded) keys.AddKey(std::move(k));
  }
  if (options.log) {
    for (const std::string& w : warnings) options.log(snapshotter::LogLevel::kWarn, w);
  }
  for (const auto& provider : options.key_providers) keys.AddProvider(provider);
  if (keys.empty()) {
    std::string message = "no private keys in the node key directories (" + searched + ")";
    for (const std::string& w : warnings) message += "; " + w;
    return Status::NotFound(message + " and no key providers");
  }
  return keys;
}

int64_t MillisSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

}  // namespace

Status DetachStaleMount(const std::filesystem::path& dir) {
  if (::umount2(dir.c_str(), MNT_DETACH) == 0) return Status::Ok();
  const int err = errno;
  if (err == EINVAL || err == ENOENT) return Status::Ok();  // not a mount point
  return ErrnoStatus("detach " + dir.string(), err);
}

struct SnapshotHandler::Impl {
  SnapshotHandlerOptions options;
  std::unique_ptr<registry::Client> client;

  struct Mounted {
    std::unique_ptr<MountedLayer> layer;
    LayerSource source;
  };
  mutable std::mutex mu;
  std::map<int64_t, Mounted> mounts;  // by snapshot id

  void Log(const std::string& message) const {
    if (options.log) options.log(snapshotter::LogLevel::kInfo, message);
  }

  Result<bool> Mount(int64_t snapshot_id, const std::map<std::string, std::string>& labels,
                     const std::filesystem::path& target_dir) {
    LC_ASSIGN_OR_RETURN(std::optional<LayerSource> source, SourceFromLabels(labels));
    if (!source) return false;
    const std::string what = "layer " + source->layer_digest;
    auto phase_start = std::chrono::steady_clock::now();
    auto descriptor = FindLayer(*client, *source);
    if (!descriptor.ok()) return descriptor.status().WithContext(what);
    const int64_t manifest_ms = MillisSince(phase_start);
    phase_start = std::chrono::steady_clock::now();
    auto keys = LoadNodeKeys(options);
    if (!keys.ok()) return keys.status().WithContext(what);
    const int64_t keys_ms = MillisSince(phase_start);
    auto repo = registry::Reference::Parse(source->image_ref);
    if (!repo.ok()) return repo.status().WithContext(what);
    auto blob = cache::OpenRegistryBlobSource(*client, *repo, descriptor->digest, descriptor->size);
    if (!blob.ok()) return blob.status().WithContext(what);
    // Timed for the debug log's per-mount line (bench/coldstart reads it): while mounting, the
    // reads are the blob header and the sealed TOC (the prefetch runs after, in the background).
    auto timed = std::make_shared<cache::TimedBlobSource>(
        std::shared_ptr<cache::MultiRangeBlobSource>(std::move(*blob)));

    MountLayerOptions layer_options = options.layer;
    layer_options.store = options.store.get();
    phase_start = std::chrono::steady_clock::now();
    LC_ASSIGN_OR_RETURN(std::unique_ptr<MountedLayer> layer,
                        MountedLayer::Mount(target_dir, timed, nullptr, *descriptor, *keys,
                                            layer_options));
    const int64_t mount_ms = MillisSince(phase_start);
    if (options.log) {
      // Key unwrap, TOC verification, starting the prefetch and the FUSE mount are inside
      // mount_ms; the blob reads among them (header, sealed TOC) are counted apart.
      options.log(snapshotter::LogLevel::kDebug,
                  "mount timing " + source->layer_digest + ": manifest_ms=" +
                      std::to_string(manifest_ms) + " keys_ms=" + std::to_string(keys_ms) +
                      " mount_ms=" + std::to_string(mount_ms) +
                      " blob_reads=" + std::to_string(timed->reads()) +
                      " blob_read_bytes=" + std::to_string(timed->bytes()) +
                      " blob_read_ms=" + std::to_string(timed->millis()));
    }
    Log("mounted layer " + source->layer_digest + " of " + source->image_ref + " at " +
        target_dir.string() + " (" + std::to_string(layer->layer().index().chunks().size()) +
        " chunks, " + std::to_string(layer->blob_size()) + " bytes, key " + layer->key_name() +
        ")");
    std::lock_guard<std::mutex> lock(mu);
    mounts[snapshot_id] = Mounted{std::move(layer), std::move(*source)};
    return true;
  }
};

SnapshotHandler::SnapshotHandler(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SnapshotHandler::~SnapshotHandler() = default;

Result<std::unique_ptr<SnapshotHandler>> SnapshotHandler::Create(SnapshotHandlerOptions options) {
  auto impl = std::make_unique<Impl>();
  LC_ASSIGN_OR_RETURN(impl->client, registry::Client::Create(options.registry));
  impl->options = std::move(options);
  return std::unique_ptr<SnapshotHandler>(new SnapshotHandler(std::move(impl)));
}

Result<bool> SnapshotHandler::TryMount(const snapshotter::PrepareRequest& info) {
  return impl_->Mount(info.snapshot_id, info.labels, info.target_dir);
}

Status SnapshotHandler::Unmount(int64_t snapshot_id, const std::filesystem::path& target_dir) {
  Impl::Mounted mounted;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->mounts.find(snapshot_id);
    if (it != impl_->mounts.end()) {
      mounted = std::move(it->second);
      impl_->mounts.erase(it);
    }
  }
  if (mounted.layer) {
    impl_->Log("unmounting layer " + mounted.source.layer_digest + " at " + target_dir.string());
    Status s = mounted.layer->Unmount();
    if (!s.ok()) {
      // Busy (a container still has it under overlayfs): the destructor detaches it lazily.
      mounted.layer.reset();
    }
    return Status::Ok();
  }
  return DetachStaleMount(target_dir);
}

Status SnapshotHandler::Restore(const snapshotter::RestoreRequest& info) {
  LC_RETURN_IF_ERROR(DetachStaleMount(info.target_dir));
  LC_ASSIGN_OR_RETURN(bool mounted, impl_->Mount(info.snapshot_id, info.labels, info.target_dir));
  if (!mounted) {
    return Status::FailedPrecondition("snapshot " + info.name +
                                      " is marked remote but its labels name no lazycrypt layer");
  }
  return Status::Ok();
}

std::vector<MountedLayerStatus> SnapshotHandler::Layers() const {
  std::vector<MountedLayerStatus> out;
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (const auto& [id, m] : impl_->mounts) {
    MountedLayerStatus s;
    s.snapshot_id = id;
    s.image_ref = m.source.image_ref;
    s.layer_digest = m.source.layer_digest;
    s.mountpoint = m.layer->mountpoint();
    s.blob_size = m.layer->blob_size();
    s.stats = m.layer->stats();
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<snapshotter::RemoteLayerInfo> SnapshotHandler::MountedLayers() const {
  std::vector<snapshotter::RemoteLayerInfo> out;
  for (MountedLayerStatus& s : Layers()) {
    snapshotter::RemoteLayerInfo info;
    info.snapshot_id = s.snapshot_id;
    info.image_ref = std::move(s.image_ref);
    info.layer_digest = std::move(s.layer_digest);
    info.mountpoint = std::move(s.mountpoint);
    info.blob_size_bytes = s.blob_size;
    info.bytes_fetched = s.stats.blob_bytes_fetched;
    info.fetch_requests = s.stats.fetch_requests;
    info.chunks_fetched = s.stats.chunks_fetched;
    info.chunks_opened = s.stats.chunks_opened;
    info.cache_hits = s.stats.cache_hits;
    info.cache_misses = s.stats.cache_misses;
    info.auth_failures = s.stats.auth_failures;
    info.fetch_errors = s.stats.fetch_errors;
    info.fetch_nanos = s.stats.fetch_nanos;
    info.bytes_present = s.stats.bytes_present;
    info.chunks_present = s.stats.chunks_present;
    info.chunk_count = s.stats.chunk_count;
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace lazycrypt::lazylayer
