#include "lazylayer/snapshot_handler.h"

#include <dirent.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "cache/registry_source.h"
#include "common/file_io.h"
#include "cache/timed_source.h"
#include "decoder/decoder.h"
#include "crypto/digest.h"
#include "image/envelope.h"
#include "fusefs/fuse_resume.h"
#include "image/oci.h"
#include "image/referrers.h"
#include "lazylayer/estargz_layer.h"
#include "lazylayer/indexed_layer.h"
#include "lazylayer/labels.h"
#include "lazylayer/ocicrypt_unpack.h"
#include "lazylayer/restore_record.h"
#include "zindex/zindex.h"

namespace lazycrypt::lazylayer {
namespace {

// The platform manifests `source` points at (by digest when the CRI label gives it, else by the
// image reference's tag, every platform's through an index when there is one).
// `digests`, when not null, gets each manifest's digest (the subject its referrers name).
Result<std::vector<image::Manifest>> FetchManifests(registry::Client& client,
                                                    const LayerSource& source,
                                                    std::vector<std::string>* digests = nullptr) {
  LC_ASSIGN_OR_RETURN(registry::Reference ref, registry::Reference::Parse(source.image_ref));
  if (!source.manifest_digest.empty()) ref = ref.WithDigest(source.manifest_digest);
  LC_ASSIGN_OR_RETURN(registry::Manifest root, client.GetManifest(ref));

  std::vector<registry::Manifest> fetched;
  if (image::IsIndexMediaType(root.media_type)) {
    LC_ASSIGN_OR_RETURN(image::Index index, image::ParseIndex(root.bytes));
    // One request per platform manifest: an index may list thousands.
    constexpr size_t kMaxIndexManifests = 64;
    if (index.manifests.size() > kMaxIndexManifests) {
      return Status::InvalidArgument("image " + source.image_ref + ": its index lists " +
                                     std::to_string(index.manifests.size()) +
                                     " manifests, more than the " +
                                     std::to_string(kMaxIndexManifests) +
                                     " a lazy mount looks through");
    }
    for (const image::Descriptor& d : index.manifests) {
      if (!image::IsManifestMediaType(d.media_type) || image::IsIndexMediaType(d.media_type)) {
        continue;
      }
      LC_ASSIGN_OR_RETURN(registry::Manifest m, client.GetManifest(ref.WithDigest(d.digest)));
      fetched.push_back(std::move(m));
    }
  } else {
    fetched.push_back(std::move(root));
  }
  std::vector<image::Manifest> out;
  for (const registry::Manifest& m : fetched) {
    LC_ASSIGN_OR_RETURN(image::Manifest manifest, image::ParseManifest(m.bytes));
    out.push_back(std::move(manifest));
    if (digests != nullptr) digests->push_back(m.digest);
  }
  return out;
}

// The descriptor of the layer `source` names, in `manifests`.
Result<image::Descriptor> FindLayerIn(const std::vector<image::Manifest>& manifests,
                                      const LayerSource& source) {
  for (const image::Manifest& manifest : manifests) {
    for (const image::Descriptor& layer : manifest.layers) {
      if (layer.digest == source.layer_digest) return layer;
    }
  }
  return Status::NotFound("image " + source.image_ref + " has no layer " + source.layer_digest);
}

// A lazycrypt layer's descriptor must be what its labels say: lazycrypt's media type and the
// pinned TOC digest.
Status CheckLazycryptDescriptor(const image::Descriptor& layer, const LayerSource& source) {
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
  return Status::Ok();
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

// A failure to unwrap the layer key with the node's keys (NotFound: no key file, or none is a
// recipient) as the refusal containerd shows: PermissionDenied "<what>: no key on this node
// unwraps it (...)". Other errors keep their code, with `what` as context.
Status NoKeyOr(const std::string& what, const Status& s) {
  if (s.code() == StatusCode::kNotFound) {
    return Status::PermissionDenied(what + ": no key on this node unwraps it (" + s.message() + ")");
  }
  return s.WithContext(what);
}

// One line per file system object: name, then lstat and stat (through a symlink, as a key
// loader reads it) identity and times. Missing objects are written as such.
void AppendStat(std::string& out, const std::filesystem::path& path) {
  auto one = [&](int rc, const struct stat& st) {
    if (rc != 0) {
      out += " -";
      return;
    }
    out += ' ' + std::to_string(st.st_dev) + ':' + std::to_string(st.st_ino) + ':' +
           std::to_string(st.st_mode) + ':' + std::to_string(st.st_size) + ':' +
           std::to_string(st.st_mtim.tv_sec) + '.' + std::to_string(st.st_mtim.tv_nsec) + ':' +
           std::to_string(st.st_ctim.tv_sec) + '.' + std::to_string(st.st_ctim.tv_nsec);
  };
  struct stat l {}, f {};
  out += path.string();
  one(::lstat(path.c_str(), &l), l);
  one(::stat(path.c_str(), &f), f);
  out += '\n';
}

// The store key MountedLayer uses by default for a layer's cached ciphertext (mounted_layer.cc):
// for a layer that is not mounted now (its restore failed), whose CachedLayer cannot say.
std::string DefaultStoreKey(const std::string& layer_digest, const std::string& toc_digest) {
  return LayerStoreKey(layer_digest, toc_digest);
}

// An indexed ocicrypt layer's restore record is its descriptor with these annotations added: the
// digest of the sealed index blob it was mounted with (the store key, and the blob its windows
// are read from),
constexpr std::string_view kRecordSealedIndexDigest = "org.lazycrypt.snapshotter.zindex-digest";
// ... that blob's size (decimal bytes; records written before it was kept ask the registry's
// HEAD),
constexpr std::string_view kRecordSealedIndexSize = "org.lazycrypt.snapshotter.zindex-size";
// ... and the digest and size of its header and sealed core (zindex v2: what opens it), kept
// beside the record (IndexedSealedPath; sealed: no key, no name readable without the layer key),
// and what a restore asks the registry for, and nothing more, when the kept copy is gone.
constexpr std::string_view kRecordSealedCoreDigest = "org.lazycrypt.snapshotter.zindex-core-digest";
constexpr std::string_view kRecordSealedCoreBytes = "org.lazycrypt.snapshotter.zindex-core-bytes";

std::filesystem::path IndexedSealedPath(const std::filesystem::path& target_dir) {
  return RestoreRecordPath(target_dir).parent_path() / "lazycrypt-zindex";
}

bool IsIndexedRecord(const image::Descriptor& recorded) {
  return recorded.annotations.count(std::string(kRecordSealedIndexDigest)) != 0;
}

// A sealed index found for a layer: its header and sealed core (what opened it; the windows are
// read from the blob by range when their spans are), the blob's digest and size, the opened index.
struct FoundIndex {
  std::vector<uint8_t> core;
  std::string digest;
  uint64_t size = 0;
  std::shared_ptr<const zindex::OpenedIndex> index;
};

// What [ocicrypt] index_max_bytes bounds: an index's header and core (TOC and span table), what
// a mount fetches before it serves and keeps on disk; `index_max_bytes` as configured.
uint64_t MaxCoreBytes(uint64_t index_max_bytes) {
  return std::min(zindex::kMaxSealedIndexBytes, index_max_bytes);
}

// OpenedIndex::Open's limits for a mount whose index core is at most `max_core_bytes`: the
// serialized index at most 4x that, no span the mount would refuse to fetch
// (IndexedLayerLimits), and the whole blob, windows area included, at most the format's
// kMaxSealedIndexBytes (the windows are fetched by range with their spans, never whole: a large
// layer with small spans has a windows area far above the core's limit and is still served).
// `max_entries`: the node's [limits] toc_max_entries (what parsing a core may build).
zindex::Limits IndexLimits(uint64_t max_core_bytes, uint64_t max_entries = zindex::kMaxEntries) {
  zindex::Limits limits = IndexedLayerLimits(max_core_bytes);
  limits.max_sealed_bytes = zindex::kMaxSealedIndexBytes;
  limits.max_entries = std::min(limits.max_entries, max_entries);
  return limits;
}

// From an index's first bytes (at least its header): its header-and-core size, refused above
// `max_core_bytes` ([ocicrypt] index_max_bytes) or the format's bounds.
Result<uint64_t> CoreBytesWithin(ByteSpan header, uint64_t max_core_bytes) {
  LC_ASSIGN_OR_RETURN(const uint64_t core_bytes,
                      zindex::SealedCoreBytes(header, IndexLimits(max_core_bytes)));
  if (core_bytes > max_core_bytes) {
    return Status::FailedPrecondition(
        "its core (TOC and span table) is " + std::to_string(core_bytes) +
        " bytes, more than the " + std::to_string(max_core_bytes) +
        " accepted ([ocicrypt] index_max_bytes)");
  }
  return core_bytes;
}

// Opens the sealed index whose header and core are `core` (the whole blob: `sealed_size` bytes)
// for `descriptor` with `cipher` and requires its diff_id to give the snapshot's chain ID `name`
// on `parent_chain` (FORMAT.md 11.5, 1 and 2). Errors name no file. Opened within what an
// indexed mount serves (IndexLimits: a core of at most `max_core_bytes`, [ocicrypt]
// index_max_bytes): an index it could not serve whole is refused here, and the layer unpacked.
Result<std::shared_ptr<const zindex::OpenedIndex>> OpenIndexFor(
    ByteSpan core, uint64_t sealed_size, const image::Descriptor& descriptor,
    const image::OcicryptLayerCipher& cipher, const std::string& parent_chain,
    const std::string& name, uint64_t max_core_bytes, uint64_t max_entries) {
  // A core kept on disk under a larger limit is refused as a fetched one would be.
  LC_RETURN_IF_ERROR(CoreBytesWithin(core, max_core_bytes).status());
  LC_ASSIGN_OR_RETURN(auto index,
                      zindex::OpenedIndex::Open(core, sealed_size, descriptor, cipher,
                                                IndexLimits(max_core_bytes, max_entries)));
  const std::string chain = ChainIdOf(parent_chain, index->diff_id());
  if (chain != name) {
    return Status::AuthFailed("its diff_id " + index->diff_id() + " gives chain ID " + chain +
                              ", not the snapshot's " + name);
  }
  return index;
}

const char* VerificationName(Verification v) {
  switch (v) {
    case Verification::kPending: return "pending";
    case Verification::kVerified: return "verified";
    case Verification::kFailed: return "failed";
  }
  return "pending";
}

int64_t MillisSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

}  // namespace

namespace {

// Every entry under `dir`, recursively (sub-directories as the key loader walks them, at most
// `depth` levels, never through a symlink), in name order: a key deleted, replaced or re-moded
// anywhere in the tree changes the fingerprint, not only at its top.
void AppendTree(std::string& out, const std::filesystem::path& dir, int depth) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::filesystem::path path = dir / name;
    AppendStat(out, path);
    struct stat st {};
    if (depth > 0 && ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      AppendTree(out, path, depth - 1);
    }
  }
}

// As deep as decoder::LoadDecryptionKeysDir walks a key directory.
constexpr int kKeyDirDepth = 16;

// The fd store name of a layer's FUSE connection: the snapshot it serves and the connection's
// number (the mount's minor device), so that a held fd is matched to the mount it belongs to.
constexpr std::string_view kFuseFdPrefix = "lcfuse.";
std::string FuseFdName(int64_t snapshot_id, dev_t device) {
  return std::string(kFuseFdPrefix) + std::to_string(snapshot_id) + "." +
         std::to_string(minor(device));
}
// (snapshot id, connection number) of a name FuseFdName made; nullopt for any other name.
std::optional<std::pair<int64_t, unsigned>> ParseFuseFdName(std::string_view name) {
  if (!name.starts_with(kFuseFdPrefix)) return std::nullopt;
  name.remove_prefix(kFuseFdPrefix.size());
  const size_t dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == name.size()) return std::nullopt;
  int64_t id = 0;
  unsigned connection = 0;
  for (char c : name.substr(0, dot)) {
    if (c < '0' || c > '9' || id > (INT64_MAX - 9) / 10) return std::nullopt;
    id = id * 10 + (c - '0');
  }
  for (char c : name.substr(dot + 1)) {
    if (c < '0' || c > '9' || connection > (UINT32_MAX - 9) / 10) return std::nullopt;
    connection = connection * 10 + static_cast<unsigned>(c - '0');
  }
  return std::pair{id, connection};
}

// A restore failure that a later attempt may not see (the registry or a key provider did not
// answer), as opposed to one it will see again (no key, a quarantine, a layer that lies).
bool RetryableRestoreFailure(const Status& s) {
  switch (s.code()) {
    case StatusCode::kAuthFailed:
    case StatusCode::kPermissionDenied:
    case StatusCode::kCorruption:
    case StatusCode::kInvalidArgument:
    case StatusCode::kUnsupported:
      return false;
    default:
      return true;
  }
}

// A quarantine outlives the process: the failure is written next to the snapshot's fs
// directory (snapshots/<id>/lazycrypt-quarantined, 0600, the reason: layer digest and status,
// never a file name), and a restore or Check after a restart refuses the layer with it instead
// of mounting it again as "pending".
std::filesystem::path QuarantineMarker(const std::filesystem::path& target_dir) {
  return target_dir.parent_path() / "lazycrypt-quarantined";
}

// The recorded reason, or nullopt when the layer was never quarantined.
std::optional<std::string> ReadQuarantine(const std::filesystem::path& target_dir) {
  auto bytes = ReadFileBytes(QuarantineMarker(target_dir));
  if (!bytes.ok()) return std::nullopt;
  return std::string(bytes->begin(), bytes->end());
}

}  // namespace

std::string KeySetFingerprint(const SnapshotHandlerOptions& options) {
  std::string out;
  for (const auto& dir : options.key_dirs) {
    AppendStat(out, dir);
    AppendTree(out, dir, kKeyDirDepth);
  }
  for (const auto& [key, password] : options.key_passwords) AppendStat(out, password);
  return out;
}

Status DetachStaleMount(const std::filesystem::path& dir) {
  if (::umount2(dir.c_str(), MNT_DETACH) == 0) return Status::Ok();
  const int err = errno;
  if (err == EINVAL || err == ENOENT) return Status::Ok();  // not a mount point
  return ErrnoStatus("detach " + dir.string(), err);
}

// What a lazily mounted layer's background verification does when it ends: a failure is
// recorded beside the snapshot (Restore and Check refuse it from then on, also after a restart)
// and logged; a success is logged.
std::function<void(const Status&)> VerificationRecorder(snapshotter::LogSink log,
                                                         std::string digest, std::string name,
                                                         std::filesystem::path target_dir) {
  return [log, digest, name, target_dir](const Status& s) {
    if (!s.ok()) {
      const std::string reason = "layer " + digest + " (snapshot " + name +
                                 ") quarantined: its content does not match the diff_id its "
                                 "image claims: " + s.message();
      Status w = WriteFileAtomically(QuarantineMarker(target_dir), AsBytes(reason), 0600);
      if (!w.ok() && log) {
        log(snapshotter::LogLevel::kError,
            "cannot record the quarantine of layer " + digest + ": " + w.ToString());
      }
    }
    if (!log) return;
    if (s.ok()) {
      log(snapshotter::LogLevel::kInfo, "layer " + digest + " (snapshot " + name +
                                            ") verified against its diff_id");
    } else {
      log(snapshotter::LogLevel::kError,
          "layer " + digest + " (snapshot " + name +
              ") quarantined: its content does not match the diff_id its image claims: " +
              s.ToString());
    }
  };
}

struct SnapshotHandler::Impl {
  SnapshotHandlerOptions options;
  std::unique_ptr<registry::Client> client;

  // What Check unwraps for a layer, and its last answer.
  struct KeyState {
    image::Descriptor descriptor;  // from the manifest: its key annotations are what Check unwraps
    // The last Check's unwrap answer (OK or PermissionDenied) and the key-set fingerprint it was
    // computed under.
    std::optional<std::string> checked_fingerprint;
    Status checked;
  };
  struct Mounted : KeyState {
    std::unique_ptr<MountedLayer> layer;
    std::string fd_name;  // its FUSE fd in options.fd_store ("" when not kept there)
    LayerSource source;
    std::chrono::steady_clock::time_point mounted_at;
  };
  mutable std::mutex mu;
  std::map<int64_t, Mounted> mounts;  // by snapshot id
  // Standard ocicrypt layers this snapshotter unpacked (UnpackOcicrypt), by snapshot id: files on
  // disk, nothing mounted; every use is still authorized by the node's keys (Check).
  struct Unpacked : KeyState {
    std::string layer_digest;
    std::string image_ref;
    snapshotter::SnapshotUsage usage;
  };
  std::map<int64_t, Unpacked> unpacked_layers;
  // ocicrypt-estargz layers (FORMAT.md §10) mounted lazily (MountEstargz), by snapshot id. Kept
  // over a restart as the GCM format's mounts are (fd store, restore record).
  // Indexed ocicrypt layers (MountIndexed, FORMAT.md §11) too: both are CTR layers with the same
  // bookkeeping (lazylayer/ctr_layer.h).
  struct EstargzMounted : KeyState {
    std::unique_ptr<CtrMountedLayer> layer;
    std::string fd_name;  // its FUSE fd in options.fd_store ("" when not kept there)
    std::string layer_digest;
    std::string image_ref;
    std::chrono::steady_clock::time_point mounted_at;
  };
  std::map<int64_t, EstargzMounted> estargz_mounts;
  uint64_t ocicrypt_unpacked = 0;  // layers unpacked by this process

  // FindLayer's manifests, by "<image ref>@<manifest digest or nothing>".
  static constexpr auto kManifestsByTagFor = std::chrono::seconds(60);
  static constexpr auto kManifestsByDigestFor = std::chrono::minutes(10);
  static constexpr size_t kMaxCachedManifests = 256;
  static constexpr size_t kMaxCachedLayers = 4096;
  size_t cached_layers = 0;  // layer descriptors in manifest_cache (approximate after expiry)
  struct CachedManifests {
    std::vector<image::Manifest> manifests;
    std::vector<std::string> digests;  // of manifests[i]
    // The zindex referrers of manifests[i] (FindIndexReferrers), by manifest digest: asked once
    // per pull, kept as long as the manifests.
    std::map<std::string, std::vector<image::Descriptor>> referrers;
    std::chrono::steady_clock::time_point fetched;
  };
  std::mutex manifest_mu;
  std::map<std::string, CachedManifests> manifest_cache;
  // Layers opened ahead of their Prepare (WarmLaterLayers); null when options.warmup is off.
  std::unique_ptr<LayerWarmup> warmup;

  // FUSE connections a previous daemon left in the fd store, by snapshot id (taken at Create;
  // each is claimed by its snapshot's Restore, the rest dropped by RestoreFinished).
  struct Held {
    std::string name;
    unsigned connection = 0;
    UniqueFd fd;
  };
  std::map<int64_t, std::vector<Held>> held;
  // Resumed mounts whose layer is not restored yet (retried in the background until
  // options.restore_retry_for has passed) or was given up (failed: every read EIO). A null
  // mount is being tried right now by whoever took it out.
  struct Restoring {
    std::unique_ptr<fusefs::FuseMount> mount;
    snapshotter::RestoreRequest request;
    std::string fd_name;
    std::string layer_digest;
    Status last;
    bool failed = false;
    bool removed = false;  // the snapshot went while an attempt had the mount out
    int attempts = 0;
    std::chrono::steady_clock::time_point since, next_try;
  };
  std::map<int64_t, Restoring> restoring;
  snapshotter::RestartInfo restart;  // counters; layers_restoring and requests_waited computed
  uint64_t waited_by_gone_mounts = 0;  // requests_waited of resumed mounts no longer here
  std::thread restore_thread;
  std::condition_variable restore_cv;
  bool stopping = false;

  void Log(const std::string& message) const {
    if (options.log) options.log(snapshotter::LogLevel::kInfo, message);
  }

  // Mounts the layer that `labels` name for snapshot `name` (its chain ID) on `parent` (the
  // parent snapshot's name), after checking that the layer's TOC gives that chain ID.
  // With `resumed`, the mount a previous daemon left at target_dir gets the layer instead of a
  // new mount (see MountedLayer::Mount); it stays the caller's on failure.
  Result<bool> Mount(int64_t snapshot_id, const std::string& name, const std::string& parent,
                     const std::map<std::string, std::string>& labels,
                     const std::filesystem::path& target_dir,
                     std::unique_ptr<fusefs::FuseMount>* resumed = nullptr) {
    LC_ASSIGN_OR_RETURN(std::optional<LayerSource> source, SourceFromLabels(labels));
    if (!source) {
      if (!options.unpack_ocicrypt) return false;
      return UnpackOcicrypt(snapshot_id, name, parent, labels, target_dir, resumed);
    }
    const std::string what = "layer " + source->layer_digest;
    auto parent_chain = ChainIdOfSnapshotName(parent);
    if (!parent_chain.ok()) return parent_chain.status().WithContext(what);
    auto phase_start = std::chrono::steady_clock::now();
    // Mounted before (a restart): the descriptor and the ranges that open the layer are on local
    // disk, so that it is served again while its registry is unreachable.
    const std::filesystem::path record_path = RestoreRecordPath(target_dir);
    std::optional<RestoreRecord> record;
    if (auto read = ReadRestoreRecord(record_path); read.ok()) {
      if (read->descriptor.digest == source->layer_digest) record = std::move(*read);
    } else if (read.status().code() != StatusCode::kNotFound) {
      Warn(read.status().ToString() + "; asking the registry");
    }
    Result<image::Descriptor> descriptor =
        record ? Result<image::Descriptor>(record->descriptor) : FindLayer(*source);
    if (descriptor.ok() && !record) {
      if (Status c = CheckLazycryptDescriptor(*descriptor, *source); !c.ok()) descriptor = c;
    }
    if (!descriptor.ok()) return descriptor.status().WithContext(what);
    const int64_t manifest_ms = MillisSince(phase_start);
    phase_start = std::chrono::steady_clock::now();
    auto keys = LoadNodeKeys(options);
    if (!keys.ok()) return NoKeyOr(what, keys.status());
    const int64_t keys_ms = MillisSince(phase_start);
    // Opened ahead by the warm-up an earlier Prepare of the image started (WarmLaterLayers):
    // only mounted here, and checked below exactly as a layer this Prepare opens.
    std::optional<WarmLayer> warm;
    if (!record) warm = ClaimWarm(*source, *descriptor);
    std::shared_ptr<cache::TimedBlobSource> timed;
    std::shared_ptr<RecordingBlobSource> recording;
    std::shared_ptr<cache::MultiRangeBlobSource> layer_source;
    std::optional<std::vector<RecordedRange>> warm_ranges;
    if (warm) {
      timed = warm->timed;
      warm_ranges = std::move(warm->ranges);
    } else {
      auto repo = registry::Reference::Parse(source->image_ref);
      if (!repo.ok()) return repo.status().WithContext(what);
      auto blob =
          cache::OpenRegistryBlobSource(*client, *repo, descriptor->digest, descriptor->size);
      if (!blob.ok()) return blob.status().WithContext(what);
      // Timed for the debug log's per-mount line (bench/coldstart reads it): while mounting, the
      // reads are the blob header and the sealed TOC (the prefetch runs after, in the
      // background).
      timed = std::make_shared<cache::TimedBlobSource>(
          std::shared_ptr<cache::MultiRangeBlobSource>(std::move(*blob)));
      if (record) {
        layer_source = std::make_shared<ReplayBlobSource>(timed, std::move(record->ranges));
      } else {
        recording = std::make_shared<RecordingBlobSource>(timed);
        layer_source = recording;
      }
    }

    MountLayerOptions layer_options = options.layer;
    layer_options.store = options.store.get();
    layer_options.on_verified =
        VerificationRecorder(options.log, source->layer_digest, name, target_dir);
    phase_start = std::chrono::steady_clock::now();
    const bool is_resume = resumed != nullptr && *resumed != nullptr;
    Result<std::unique_ptr<MountedLayer>> mounted =
        warm ? AttachWarm(std::move(*warm), target_dir, layer_options, resumed)
             : MountedLayer::Mount(target_dir, layer_source, nullptr, *descriptor, *keys,
                                   layer_options, resumed);
    if (!mounted.ok()) return NoKeyOr(what, mounted.status());
    std::unique_ptr<MountedLayer> layer = std::move(*mounted);
    const int64_t mount_ms = MillisSince(phase_start);
    // The chain ID containerd will reuse this layer by must be the one its content gives: the
    // TOC's tar_sha256 (the diff_id the background verification checks the content against),
    // not the diff_id the image's config claims.
    const std::string diff_id = crypto::OciDigest(layer->layer().index().diff_id());
    const std::string expected = ChainIdOf(*parent_chain, diff_id);
    if (expected != name) {
      layer.reset();  // unmounts
      return Status::AuthFailed(
          what + ": refusing to mount it as snapshot " + name + ": its TOC gives diff_id " +
          diff_id + ", so its chain ID on " +
          (parent_chain->empty() ? std::string("no parent") : "parent " + *parent_chain) +
          " is " + expected + " (the image's config claims another diff_id for this layer)");
    }
    if (recording || warm_ranges) {
      RestoreRecord fresh{*descriptor, recording ? recording->Take() : std::move(*warm_ranges)};
      // Opened from the chunk store (nothing read, nothing recorded): the record keeps the
      // descriptor; a restart finds footer and TOC in the store again.
      if (fresh.ranges.empty() && !layer->opened_from_store()) {
        Warn(what + ": too large to keep what opens it; a restart needs its registry");
      } else if (Status w = WriteRestoreRecord(record_path, fresh); !w.ok()) {
        Warn(what + ": cannot keep what opens it (a restart needs its registry): " +
             w.ToString());
      }
    }
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
    Log(std::string(is_resume ? "resumed layer " : "mounted layer ") + source->layer_digest +
        " of " + source->image_ref + " at " + target_dir.string() + " (" +
        std::to_string(layer->layer().index().chunks().size()) + " chunks, " +
        std::to_string(layer->blob_size()) + " bytes, key " + layer->key_name() + ")");
    // Kept outside this process, so that the connection outlives it (after the mount: systemd
    // drops a /dev/fuse fd that is not mounted yet). A resumed one is in the store already.
    std::string fd_name;
    if (options.fd_store) {
      fd_name = FuseFdName(snapshot_id, layer->fuse().device());
      if (!is_resume) {
        Status put = options.fd_store->Put(fd_name, layer->fuse().fuse_fd());
        if (!put.ok()) {
          fd_name.clear();
          if (options.log) {
            options.log(snapshotter::LogLevel::kWarn,
                        "layer " + source->layer_digest + " at " + target_dir.string() +
                            " will not survive a restart of the snapshotter: keeping its FUSE "
                            "fd in the " + std::string(options.fd_store->kind()) +
                            " fd store failed: " + put.ToString());
          }
        }
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    Mounted& m = mounts[snapshot_id];
    m = Mounted{};
    m.mounted_at = std::chrono::steady_clock::now();
    m.fd_name = std::move(fd_name);
    m.layer = std::move(layer);
    m.source = std::move(*source);
    m.descriptor = std::move(*descriptor);
    return true;
  }

  // The layer `source` names, from its image's manifest(s): fetched once per pull and shared by
  // the Prepares of its layers (kept kManifestsByDigestFor when the CRI label names the manifest
  // by digest, which cannot change; kManifestsByTagFor by tag, the time a pull takes, so that a
  // tag moved later is asked again).
  Result<image::Descriptor> FindLayer(const LayerSource& source) {
    const std::string key = source.image_ref + "@" + source.manifest_digest;
    const auto now = std::chrono::steady_clock::now();
    const auto keep = source.manifest_digest.empty() ? kManifestsByTagFor : kManifestsByDigestFor;
    {
      std::lock_guard<std::mutex> lock(manifest_mu);
      auto it = manifest_cache.find(key);
      if (it != manifest_cache.end() && now - it->second.fetched < keep) {
        auto found = FindLayerIn(it->second.manifests, source);
        // A layer not in the kept copy (a tag moved meanwhile): asked again below.
        if (found.ok()) return found;
      }
    }
    std::vector<std::string> digests;
    LC_ASSIGN_OR_RETURN(std::vector<image::Manifest> manifests,
                        FetchManifests(*client, source, &digests));
    auto found = FindLayerIn(manifests, source);
    std::lock_guard<std::mutex> lock(manifest_mu);
    for (auto it = manifest_cache.begin(); it != manifest_cache.end();) {
      it = now - it->second.fetched >= kManifestsByDigestFor ? manifest_cache.erase(it)
                                                              : std::next(it);
    }
    // Bounded by entries and by the layer descriptors they hold (whose annotations carry the
    // wrapped keys): a tenant pulling from registries of its own cannot grow it without bound.
    size_t layers = 0;
    for (const image::Manifest& m : manifests) layers += m.layers.size();
    if (layers > kMaxCachedLayers) return found;  // not kept
    if (manifest_cache.size() >= kMaxCachedManifests ||
        cached_layers + layers > kMaxCachedLayers) {
      manifest_cache.clear();
      cached_layers = 0;
    }
    cached_layers += layers;
    manifest_cache[key] = CachedManifests{std::move(manifests), std::move(digests), {}, now};
    return found;
  }

  // The zindex referrers (artifact type zindex::kArtifactType) of the manifest that holds
  // `source`'s layer, and that manifest's digest: asked once per pull, kept beside the manifests
  // (FindLayer) with their lifetime.
  Result<std::vector<image::Descriptor>> FindIndexReferrers(const LayerSource& source,
                                                           const registry::Reference& repo,
                                                           std::string& subject) {
    const std::string key = source.image_ref + "@" + source.manifest_digest;
    auto subject_in = [&](const CachedManifests& c) -> std::string {
      for (size_t i = 0; i < c.manifests.size() && i < c.digests.size(); ++i) {
        for (const image::Descriptor& l : c.manifests[i].layers) {
          if (l.digest == source.layer_digest) return c.digests[i];
        }
      }
      return "";
    };
    {
      std::lock_guard<std::mutex> lock(manifest_mu);
      if (auto it = manifest_cache.find(key); it != manifest_cache.end()) {
        subject = subject_in(it->second);
        if (auto r = it->second.referrers.find(subject);
            !subject.empty() && r != it->second.referrers.end()) {
          return r->second;
        }
      }
    }
    if (subject.empty()) {  // not kept (too many layers, or expired): asked again, not kept
      CachedManifests fresh;
      LC_ASSIGN_OR_RETURN(fresh.manifests, FetchManifests(*client, source, &fresh.digests));
      subject = subject_in(fresh);
      if (subject.empty()) {
        return Status::NotFound("image " + source.image_ref + " has no layer " +
                                source.layer_digest);
      }
    }
    LC_ASSIGN_OR_RETURN(std::vector<image::Descriptor> listed,
                        image::ListReferrers(*client, repo, subject, zindex::kArtifactType));
    std::lock_guard<std::mutex> lock(manifest_mu);
    if (auto it = manifest_cache.find(key); it != manifest_cache.end()) {
      it->second.referrers[subject] = listed;
    }
    return listed;
  }

  // The sealed index of ocicrypt layer `descriptor` (FORMAT.md §11): among the zindex referrers
  // of its manifest, the first artifact (newest listed first) with a sealed index for this layer
  // that opens with its key and whose diff_id gives `name` on `parent_chain`. NotFound when
  // there is none; otherwise the last reason one was refused (never a file name).
  // What the registry lists is bounded (FORMAT.md 11.8): kMaxArtifactsTried artifact manifests,
  // kMaxSealedFetched sealed blobs fetched in all (an artifact may list thousands for this
  // layer), each digest fetched once, and no request started after options.index_lookup_timeout.
  Result<FoundIndex> FindSealedIndex(const LayerSource& source, const registry::Reference& repo,
                                     const image::Descriptor& descriptor,
                                     const image::OcicryptLayerCipher& cipher,
                                     const std::string& parent_chain, const std::string& name) {
    const auto started = std::chrono::steady_clock::now();
    auto out_of_time = [&] {
      return options.index_lookup_timeout.count() > 0 &&
             std::chrono::steady_clock::now() - started >= options.index_lookup_timeout;
    };
    std::string subject;
    LC_ASSIGN_OR_RETURN(std::vector<image::Descriptor> referrers,
                        FindIndexReferrers(source, repo, subject));
    Status last = Status::NotFound("no index referrer of manifest " + subject);
    const uint64_t max_core_bytes = MaxCoreBytes(options.index_max_bytes);
    constexpr size_t kMaxArtifactsTried = 8;
    constexpr size_t kMaxSealedFetched = 4;
    std::set<std::string> fetched;  // sealed blob digests fetched (at most kMaxSealedFetched)
    auto stop = [&]() -> std::optional<Status> {
      if (fetched.size() >= kMaxSealedFetched) {
        return Status::NotFound("none of the " + std::to_string(kMaxSealedFetched) +
                                " sealed indexes fetched (the most tried) was usable; the "
                                "last: " + last.ToString());
      }
      if (out_of_time()) {
        return Status::DeadlineExceeded(
            "the index lookup took longer than " +
            std::to_string(options.index_lookup_timeout.count()) + " ms; the last: " +
            last.ToString());
      }
      return std::nullopt;
    };
    size_t tried = 0;
    for (auto r = referrers.rbegin(); r != referrers.rend() && tried < kMaxArtifactsTried; ++r) {
      if (auto s = stop()) return *s;
      ++tried;
      auto artifact =
          image::FetchReferrerManifest(*client, repo, *r, subject, zindex::kArtifactType);
      if (!artifact.ok()) {
        last = artifact.status().WithContext("referrer " + r->digest);
        continue;
      }
      for (const image::Descriptor& blob : artifact->manifest.layers) {
        if (blob.media_type != zindex::kSealedIndexMediaType ||
            blob.Annotation(zindex::kAnnotationLayerDigest) != descriptor.digest ||
            fetched.count(blob.digest) != 0) {
          continue;
        }
        const std::string what = "index " + blob.digest + " (referrer " + r->digest + ")";
        // The whole blob is bounded by the format only: its windows are fetched by range.
        if (blob.size == 0 || blob.size > zindex::kMaxSealedIndexBytes) {
          last = Status::FailedPrecondition(
              what + ": " + std::to_string(blob.size) + " bytes, not a sealed index (at most " +
              std::to_string(zindex::kMaxSealedIndexBytes) + ")");
          continue;
        }
        if (auto s = stop()) return *s;
        fetched.insert(blob.digest);
        // Only the header and core (the windows are fetched with their spans); authenticated by
        // their seal, which binds the blob's size, when opened (the digest covers the whole blob).
        auto core = FetchSealedCore(repo, blob.digest, blob.size,
                                    blob.Annotation(zindex::kAnnotationCoreBytes), max_core_bytes);
        if (!core.ok()) {
          last = core.status().WithContext(what);
          continue;
        }
        auto index = OpenIndexFor(*core, blob.size, descriptor, cipher, parent_chain, name,
                                  max_core_bytes, options.layer.cache.toc_limits.max_entries);
        if (!index.ok()) {
          last = index.status().WithContext(what);
          continue;
        }
        return FoundIndex{std::move(*core), blob.digest, blob.size, std::move(*index)};
      }
    }
    return last;
  }

  // The header and sealed core of index blob `digest` (`size` bytes, at most
  // kMaxSealedIndexBytes, checked by the caller), exactly as many bytes as its header says
  // (zindex::SealedCoreBytes), at most `max_core_bytes` ([ocicrypt] index_max_bytes), by range:
  // [0, hint) in ONE request when `hint` (decimal: the kAnnotationCoreBytes of its descriptor,
  // or what a restore recorded) is at least a header and at most the blob and `max_core_bytes`,
  // else (absent or invalid) the header first; then the rest of the core in one more request if
  // the header says it is longer (refused above `max_core_bytes`). Never beyond `size`.
  Result<std::vector<uint8_t>> FetchSealedCore(const registry::Reference& repo,
                                               const std::string& digest, uint64_t size,
                                               std::string_view hint, uint64_t max_core_bytes) {
    uint64_t first = zindex::kSealedHeaderBytes;
    uint64_t hinted = 0;
    if (!hint.empty() &&
        std::from_chars(hint.data(), hint.data() + hint.size(), hinted).ptr ==
            hint.data() + hint.size() &&
        hinted >= zindex::kSealedHeaderBytes && hinted <= size && hinted <= max_core_bytes) {
      first = hinted;
    }
    first = std::min(first, size);
    LC_ASSIGN_OR_RETURN(std::vector<uint8_t> core, client->GetBlobRange(repo, digest, 0, first));
    if (core.size() != first) {
      return Status::Corruption("the registry answered " + std::to_string(core.size()) +
                                " bytes for the first " + std::to_string(first));
    }
    LC_ASSIGN_OR_RETURN(const uint64_t core_bytes, CoreBytesWithin(core, max_core_bytes));
    if (core_bytes > size) {
      return Status::Corruption("its header says its core is " + std::to_string(core_bytes) +
                                " bytes, the blob is " + std::to_string(size));
    }
    if (core_bytes > core.size()) {
      LC_ASSIGN_OR_RETURN(
          std::vector<uint8_t> rest,
          client->GetBlobRange(repo, digest, core.size(), core_bytes - core.size()));
      if (rest.size() != core_bytes - core.size()) {
        return Status::Corruption("the registry answered " + std::to_string(rest.size()) +
                                  " bytes for the rest of its core");
      }
      core.insert(core.end(), rest.begin(), rest.end());
    }
    core.resize(static_cast<size_t>(core_bytes));  // windows fetched with the hint: not kept
    return core;
  }

  // The lazycrypt layers after `source`'s in its image's manifest, handed to the warm-up to be
  // opened in parallel while containerd prepares the layers one by one (layer_warmup.h). Best
  // effort: what fails here is done, and reported, by the layer's own Prepare.
  void WarmLaterLayers(const std::map<std::string, std::string>& labels) {
    if (!warmup) return;
    auto source = SourceFromLabels(labels);
    if (!source.ok() || !*source) return;
    // The manifest the Prepare resolves next anyway (cached: one request per pull).
    if (!FindLayer(**source).ok()) return;
    std::vector<WarmRequest> requests;
    {
      std::lock_guard<std::mutex> lock(manifest_mu);
      auto it = manifest_cache.find((*source)->image_ref + "@" + (*source)->manifest_digest);
      if (it == manifest_cache.end()) return;
      for (const image::Manifest& manifest : it->second.manifests) {
        // containerd prepares bottom-up: the layers below this one are committed already.
        bool after = false;
        for (const image::Descriptor& layer : manifest.layers) {
          if (layer.digest == (*source)->layer_digest) {
            after = true;
            continue;
          }
          if (!after || image::ClassifyLayer(layer.media_type) != image::LayerKind::kLazycrypt) {
            continue;
          }
          const std::string toc = layer.Annotation(image::kAnnotationLazycryptTocDigest);
          if (toc.empty()) continue;
          WarmRequest r;
          r.key = WarmKey((*source)->image_ref, layer.digest, toc);
          r.source = **source;
          r.source.layer_digest = layer.digest;
          r.source.toc_digest = toc;
          r.descriptor = layer;
          requests.push_back(std::move(r));
        }
        if (after) break;
      }
    }
    if (requests.empty()) return;
    const size_t queued = warmup->Start(std::move(requests));
    if (queued > 0) {
      Log("opening " + std::to_string(queued) + " later layer(s) of " + (*source)->image_ref +
          " ahead of their Prepares");
    }
  }

  // What the warm-up's workers do for one layer: what Mount does before its FUSE mount.
  Result<WarmLayer> OpenAhead(const WarmRequest& request) {
    WarmLayer out;
    out.descriptor = request.descriptor;
    // Before the keys are read: a key changed meanwhile changes the fingerprint a claim compares.
    out.key_fingerprint = KeySetFingerprint(options);
    LC_ASSIGN_OR_RETURN(keywrap::KeyRing keys, LoadNodeKeys(options));
    LC_ASSIGN_OR_RETURN(registry::Reference repo,
                        registry::Reference::Parse(request.source.image_ref));
    LC_ASSIGN_OR_RETURN(auto blob, cache::OpenRegistryBlobSource(*client, repo,
                                                                 request.descriptor.digest,
                                                                 request.descriptor.size));
    out.timed = std::make_shared<cache::TimedBlobSource>(
        std::shared_ptr<cache::MultiRangeBlobSource>(std::move(blob)));
    auto recording = std::make_shared<RecordingBlobSource>(out.timed);
    MountLayerOptions layer_options = options.layer;
    layer_options.store = options.store.get();
    LC_ASSIGN_OR_RETURN(out.layer, MountedLayer::Open(recording, nullptr, request.descriptor,
                                                      keys, layer_options));
    // What opened it, as Mount records it (the prefetch's reads after this are not kept).
    out.ranges = recording->Take();
    return out;
  }

  // The layer the warm-up opened for `source`, when it was opened for exactly `descriptor` (the
  // one this Prepare resolved and checked) under the node's key set as it is now; else nullopt
  // (the Prepare opens it itself).
  std::optional<WarmLayer> ClaimWarm(const LayerSource& source,
                                     const image::Descriptor& descriptor) {
    if (!warmup) return std::nullopt;
    bool waited = false;
    std::optional<WarmLayer> warm = warmup->Claim(
        WarmKey(source.image_ref, source.layer_digest, source.toc_digest), &waited);
    if (!warm) return std::nullopt;
    const std::string what = "layer " + source.layer_digest + " of " + source.image_ref;
    if (!(warm->descriptor == descriptor)) {
      Log(what + ": opened ahead for another descriptor (the manifest changed); opened again");
      return std::nullopt;
    }
    if (warm->key_fingerprint != KeySetFingerprint(options)) {
      Log(what + ": opened ahead, but the node's keys changed since; opened again");
      return std::nullopt;
    }
    Log(what + ": opened ahead of its Prepare (" + (waited ? "waited for it" : "ready") + ", " +
        std::to_string(warm->open_ms) + " ms, " + std::to_string(warm->timed->reads()) +
        " blob reads); mounting it");
    return warm;
  }

  static Result<std::unique_ptr<MountedLayer>> AttachWarm(
      WarmLayer warm, const std::filesystem::path& target_dir,
      const MountLayerOptions& layer_options, std::unique_ptr<fusefs::FuseMount>* resumed) {
    LC_RETURN_IF_ERROR(warm.layer->Attach(target_dir, layer_options, resumed));
    return std::move(warm.layer);
  }

  // A standard ocicrypt layer, unpacked by this snapshotter (lazylayer/ocicrypt_unpack.h) into
  // target_dir for snapshot `name` on `parent`: true once it is there and its diff_id gives
  // `name`; false for any layer that is not an ocicrypt layer (containerd pulls it as usual).
  // An ocicrypt-estargz layer is mounted lazily instead (MountEstargz); `resumed` is for those
  // only (a mount a previous daemon left): false for any other layer.
  Result<bool> UnpackOcicrypt(int64_t snapshot_id, const std::string& name,
                              const std::string& parent,
                              const std::map<std::string, std::string>& labels,
                              const std::filesystem::path& target_dir,
                              std::unique_ptr<fusefs::FuseMount>* resumed = nullptr) {
    LC_ASSIGN_OR_RETURN(std::optional<LayerSource> source, AnySourceFromLabels(labels));
    if (!source) return false;
    const std::string what = "layer " + source->layer_digest;
    // Mounted lazily before (a restart): its record holds the descriptor and what opened it.
    std::optional<RestoreRecord> lazy_record;
    if (auto read = ReadRestoreRecord(RestoreRecordPath(target_dir)); read.ok()) {
      if (read->descriptor.digest == source->layer_digest &&
          (IsEstargzOcicryptLayer(read->descriptor) || IsIndexedRecord(read->descriptor))) {
        lazy_record = std::move(*read);
      }
    }
    if (resumed != nullptr && !lazy_record) return false;
    // Which kind of layer it is, only the manifest says (containerd passes no media type).
    auto descriptor =
        lazy_record ? Result<image::Descriptor>(lazy_record->descriptor) : FindLayer(*source);
    if (!descriptor.ok()) {
      // Not knowing is not refusing: containerd pulls it itself (and fails there if it must).
      Warn(what + " of " + source->image_ref + ": left to containerd, its manifest could not be "
           "read: " + descriptor.status().ToString());
      return false;
    }
    if (image::ClassifyLayer(descriptor->media_type) != image::LayerKind::kOcicrypt) return false;
    auto parent_chain_or = ChainIdOfSnapshotName(parent);
    if (!parent_chain_or.ok()) return parent_chain_or.status().WithContext(what);
    const std::string parent_chain = *parent_chain_or;
    auto keys = LoadNodeKeys(options);
    if (!keys.ok()) return NoKeyOr(what, keys.status());
    auto repo = registry::Reference::Parse(source->image_ref);
    if (!repo.ok()) return repo.status().WithContext(what);
    if (IsEstargzOcicryptLayer(*descriptor)) {
      std::vector<RecordedRange> ranges;
      if (lazy_record) ranges = std::move(lazy_record->ranges);
      return MountEstargz(snapshot_id, name, parent_chain, *descriptor, *source, *repo, *keys,
                          target_dir, std::move(ranges), resumed);
    }
    if (lazy_record) {  // mounted from its index before a restart (IsIndexedRecord)
      return RestoreIndexed(snapshot_id, name, parent_chain, lazy_record->descriptor, *source,
                            *repo, *keys, target_dir, resumed);
    }
    // Only a Prepare unpacks, into its new, empty directory: never a restore into the lower
    // directory of running containers (a snapshot whose unpacked-layer record went missing).
    std::error_code ec;
    if (!std::filesystem::is_empty(target_dir, ec) || ec) {
      return Status::FailedPrecondition(
          what + ": snapshot " + name + " holds files but no unpacked-layer record (" +
          UnpackedRecordPath(target_dir).string() + "); remove the image and pull it again");
    }
    // Only the unwrap can mean "no key" (a refusal Check and purge act on).
    auto cipher = image::UnwrapOcicryptLayer(*descriptor, *keys);
    if (!cipher.ok()) return NoKeyOr(what, cipher.status());
    // Served lazily when `lazycrypt index` made a usable index for it (FORMAT.md §11); any
    // reason there is none is logged, and the layer unpacked. Never without the background
    // verification: an index is only a key holder's claim (§11.5, 4).
    if (options.lazy_index && options.layer.verify) {
      auto found = FindSealedIndex(*source, *repo, *descriptor, *cipher, parent_chain, name);
      if (found.ok()) {
        auto mounted = MountIndexed(snapshot_id, name, parent_chain, *descriptor, *source, *repo,
                                    std::move(*cipher), std::move(*found), target_dir, nullptr);
        if (mounted.ok()) return mounted;
        Log(what + " of " + source->image_ref + ": not served from its index, unpacked instead: " +
            mounted.status().ToString());
        cipher = image::UnwrapOcicryptLayer(*descriptor, *keys);  // moved into the failed mount
        if (!cipher.ok()) return NoKeyOr(what, cipher.status());
      } else {
        Log(what + " of " + source->image_ref + ": no usable index, unpacked (" +
            found.status().ToString() + ")");
      }
    }
    Log("unpacking ocicrypt " + what + " of " + source->image_ref + " (" +
        std::to_string(descriptor->size) + " bytes, " + descriptor->media_type + ")");
    auto unpacked = UnpackOcicryptLayer(*client, *repo, *descriptor, *cipher,
                                        target_dir.parent_path(), target_dir);
    if (!unpacked.ok()) {
      Status s = unpacked.status();
      // A blob the registry does not have, or a file system that refuses a node, is not a
      // revoked key: not PermissionDenied/NotFound, which Check and purge treat as such.
      if (s.code() == StatusCode::kNotFound || s.code() == StatusCode::kPermissionDenied) {
        s = Status::Unavailable(s.message());
      }
      return s.WithContext(what + " (standard ocicrypt, unpacked by lazycrypt)");
    }
    const std::string expected = ChainIdOf(parent_chain, unpacked->diff_id);
    if (expected != name) {
      return Status::AuthFailed(
          what + ": refusing to commit it as snapshot " + name + ": its content has diff_id " +
          unpacked->diff_id + ", so its chain ID on " +
          (parent_chain.empty() ? std::string("no parent") : "parent " + parent_chain) + " is " +
          expected + " (the image's config claims another diff_id for this layer)");
    }
    UnpackedRecord record;
    record.descriptor = *descriptor;
    record.size_bytes = static_cast<int64_t>(unpacked->applied.regular_bytes);
    record.inodes = static_cast<int64_t>(unpacked->applied.entries);
    LC_RETURN_IF_ERROR(WriteUnpackedRecord(target_dir, record).WithContext(what));
    Log("unpacked ocicrypt " + what + " of " + source->image_ref + " at " + target_dir.string() +
        " (" + std::to_string(unpacked->applied.entries) + " entries, " +
        std::to_string(unpacked->applied.regular_bytes) + " bytes, key " + unpacked->key_name +
        "; fetch " + std::to_string(unpacked->fetch_ms) + " ms, verify " +
        std::to_string(unpacked->verify_ms) + " ms, unpack " +
        std::to_string(unpacked->unpack_ms) + " ms)");
    std::lock_guard<std::mutex> lock(mu);
    ++ocicrypt_unpacked;
    AddUnpackedLocked(snapshot_id, source->image_ref, std::move(record));
    return true;
  }

  // Registers an unpacked layer (after its unpack, or from its record after a restart). mu held.
  void AddUnpackedLocked(int64_t snapshot_id, std::string image_ref, UnpackedRecord record) {
    Unpacked& u = unpacked_layers[snapshot_id];
    u = Unpacked{};
    u.layer_digest = record.descriptor.digest;
    u.image_ref = std::move(image_ref);
    u.usage = snapshotter::SnapshotUsage{record.size_bytes, record.inodes};
    u.descriptor = std::move(record.descriptor);
  }

  // An ocicrypt-estargz layer (its descriptor pins its eStargz TOC), mounted lazily at
  // target_dir (lazylayer/estargz_layer.h): true once mounted. Its diff_id is known only when the
  // background verification has read the whole layer; that verification requires it to give
  // `name` on `parent_chain` and quarantines the layer otherwise (until then Check bounds the
  // window with verify_deadline, as for the GCM format).
  Result<bool> MountEstargz(int64_t snapshot_id, const std::string& name,
                            const std::string& parent_chain, const image::Descriptor& descriptor,
                            const LayerSource& source, const registry::Reference& repo,
                            const keywrap::KeyRing& keys, const std::filesystem::path& target_dir,
                            std::vector<RecordedRange> recorded,
                            std::unique_ptr<fusefs::FuseMount>* resumed) {
    const std::string what = "ocicrypt-estargz layer " + source.layer_digest;
    auto blob = cache::OpenRegistryBlobSource(*client, repo, descriptor.digest, descriptor.size);
    if (!blob.ok()) return blob.status().WithContext(what);
    // As for the GCM format: the ranges that open the layer (footer, TOC) are kept beside the
    // snapshot, so that a restart serves it again while its registry is unreachable.
    std::shared_ptr<cache::MultiRangeBlobSource> registry_source(std::move(*blob));
    std::shared_ptr<RecordingBlobSource> recording;
    std::shared_ptr<BlobSource> layer_source;
    if (!recorded.empty()) {
      layer_source = std::make_shared<ReplayBlobSource>(registry_source, std::move(recorded));
    } else {
      recording = std::make_shared<RecordingBlobSource>(registry_source);
      layer_source = recording;
    }
    EstargzMountOptions o;
    SetCtrOptions(o, parent_chain, name, source.layer_digest, target_dir);
    // The node's [limits] on what one layer's TOC may make the daemon build (entries, JSON).
    o.limits.toc.max_entries =
        std::min(o.limits.toc.max_entries, options.layer.cache.toc_limits.max_entries);
    o.limits.toc.max_json_bytes =
        std::min(o.limits.toc.max_json_bytes, options.layer.cache.toc_limits.max_serialized_bytes);
    const bool is_resume = resumed != nullptr && *resumed != nullptr;
    auto mounted =
        MountedEstargzLayer::Mount(target_dir, layer_source, descriptor, keys, o, resumed);
    if (!mounted.ok()) return NoKeyOr(what, mounted.status());
    if (recording) {
      RestoreRecord fresh{descriptor, recording->Take()};
      if (Status w = WriteRestoreRecord(RestoreRecordPath(target_dir), fresh); !w.ok()) {
        Warn(what + ": cannot keep what opens it (a restart needs its registry): " +
             w.ToString());
      }
    }
    AddCtrMount(snapshot_id, std::move(*mounted), descriptor, source, target_dir, is_resume, what);
    return true;
  }

  // The options of a lazily served ocicrypt CTR layer (ocicrypt-estargz, indexed): its
  // verification must give the snapshot's chain ID `name` on `parent_chain`.
  void SetCtrOptions(CtrLayerOptions& o, const std::string& parent_chain, const std::string& name,
                     const std::string& layer_digest, const std::filesystem::path& target_dir) {
    o.mount = options.layer.mount;
    o.store = options.store.get();
    o.opened_cache = options.layer.cache.opened_cache;  // the node-wide plaintext budget
    o.prefetch = options.layer.prefetch;
    o.readahead_bytes = options.layer.cache.readahead_bytes;
    o.whole_layer_bytes = options.layer.whole_layer_bytes;
    o.verify = options.layer.verify;
    o.verify_start_delay_ms = options.layer.verify_start_delay_ms;
    o.verify_rate_bytes_per_sec = options.layer.background_rate_bytes_per_sec > 0
                                      ? options.layer.background_rate_bytes_per_sec
                                      : options.layer.verify_rate_bytes_per_sec;
    o.check_diff_id = [parent_chain, name](const std::string& diff_id) -> Status {
      const std::string chain = ChainIdOf(parent_chain, diff_id);
      if (chain == name) return Status::Ok();
      return Status::AuthFailed("its content has diff_id " + diff_id + ", so its chain ID is " +
                                chain + ", not the snapshot's " + name);
    };
    o.on_verified = VerificationRecorder(options.log, layer_digest, name, target_dir);
  }

  // Registers a mounted CTR layer: its FUSE fd kept in the fd store (so that the connection
  // outlives this process, as MountLayer's), the mount logged.
  void AddCtrMount(int64_t snapshot_id, std::unique_ptr<CtrMountedLayer> mounted,
                   const image::Descriptor& descriptor, const LayerSource& source,
                   const std::filesystem::path& target_dir, bool is_resume,
                   const std::string& what) {
    std::string fd_name;
    if (options.fd_store) {
      fd_name = FuseFdName(snapshot_id, mounted->fuse().device());
      if (!is_resume) {
        if (Status put = options.fd_store->Put(fd_name, mounted->fuse().fuse_fd()); !put.ok()) {
          fd_name.clear();
          Warn(what + " at " + target_dir.string() + " will not survive a restart of the "
               "snapshotter: keeping its FUSE fd in the fd store failed: " + put.ToString());
        }
      }
    }
    Log(std::string(is_resume ? "resumed " : "mounted ") + what + " of " + source.image_ref +
        " lazily at " + target_dir.string() +
        " (" + std::to_string(mounted->chunk_count()) + " chunks, " +
        std::to_string(descriptor.size) + " bytes, key " + mounted->key_name() + ")");
    std::lock_guard<std::mutex> lock(mu);
    EstargzMounted& m = estargz_mounts[snapshot_id];
    m = EstargzMounted{};
    m.layer = std::move(mounted);
    m.fd_name = std::move(fd_name);
    m.layer_digest = source.layer_digest;
    m.image_ref = source.image_ref;
    m.descriptor = descriptor;
    m.mounted_at = std::chrono::steady_clock::now();
  }

  // A standard ocicrypt layer served lazily from its sealed index `found` (FORMAT.md §11,
  // lazylayer/indexed_layer.h), opened by FindSealedIndex (or RestoreIndexed) with `cipher`, its
  // windows read from the index blob in the same repository: true once mounted. Its restore
  // record is its descriptor marked with the index blob's digest and size and its core's
  // (kRecordSealedIndexDigest...), the core kept beside it.
  Result<bool> MountIndexed(int64_t snapshot_id, const std::string& name,
                            const std::string& parent_chain, const image::Descriptor& descriptor,
                            const LayerSource& source, const registry::Reference& repo,
                            image::OcicryptLayerCipher cipher, FoundIndex found,
                            const std::filesystem::path& target_dir,
                            std::unique_ptr<fusefs::FuseMount>* resumed) {
    const std::string what = "indexed ocicrypt layer " + source.layer_digest;
    auto blob = cache::OpenRegistryBlobSource(*client, repo, descriptor.digest, descriptor.size);
    if (!blob.ok()) return blob.status().WithContext(what);
    IndexedMountOptions o;
    SetCtrOptions(o, parent_chain, name, source.layer_digest, target_dir);
    const bool is_resume = resumed != nullptr && *resumed != nullptr;
    std::shared_ptr<BlobSource> layer_source(std::move(*blob));
    auto index_blob = cache::OpenRegistryBlobSource(*client, repo, found.digest, found.size);
    if (!index_blob.ok()) return index_blob.status().WithContext(what + ": its index");
    std::shared_ptr<BlobSource> index_source(std::move(*index_blob));
    auto mounted = MountedIndexedLayer::Mount(
        target_dir, std::move(layer_source), std::move(index_source), descriptor,
        std::move(cipher), found.index,
        // Named by the core it opened with (authenticated, and what lays out the records), not
        // by the index blob's digest, which no byte fetched by range is checked against.
        IndexedStoreKey(descriptor.digest, crypto::OciDigest(crypto::Sha256::Of(found.core))), o,
        resumed);
    if (!mounted.ok()) return mounted.status().WithContext(what);
    if (!is_resume) {
      RestoreRecord fresh{descriptor, {}};
      fresh.descriptor.annotations[std::string(kRecordSealedIndexDigest)] = found.digest;
      fresh.descriptor.annotations[std::string(kRecordSealedIndexSize)] =
          std::to_string(found.size);
      fresh.descriptor.annotations[std::string(kRecordSealedCoreDigest)] =
          crypto::OciDigest(crypto::Sha256::Of(found.core));
      fresh.descriptor.annotations[std::string(kRecordSealedCoreBytes)] =
          std::to_string(found.core.size());
      Status w = WriteFileAtomically(IndexedSealedPath(target_dir), found.core, 0600);
      if (w.ok()) w = WriteRestoreRecord(RestoreRecordPath(target_dir), fresh);
      if (!w.ok()) {
        Warn(what + ": cannot keep what opens it (a restart needs its registry): " +
             w.ToString());
      }
    }
    AddCtrMount(snapshot_id, std::move(*mounted), descriptor, source, target_dir, is_resume,
                what + " (index " + found.digest + ")");
    return true;
  }

  // An indexed layer again after a restart (its record: IsIndexedRecord): the index's core from
  // beside the record (or the registry, by the recorded range), opened and checked again as at
  // its first mount, the layer given to the resumed mount (or mounted afresh), its windows read
  // from the recorded index blob.
  Result<bool> RestoreIndexed(int64_t snapshot_id, const std::string& name,
                              const std::string& parent_chain, const image::Descriptor& recorded,
                              const LayerSource& source, const registry::Reference& repo,
                              const keywrap::KeyRing& keys,
                              const std::filesystem::path& target_dir,
                              std::unique_ptr<fusefs::FuseMount>* resumed) {
    const std::string what = "indexed ocicrypt layer " + source.layer_digest;
    // Served from an index only with the background verification (an index is a key holder's
    // claim, FORMAT.md 11.5, 4), as at a Prepare: not restored otherwise (fail closed; not
    // retried: only a restart with another configuration changes the answer).
    if (!options.layer.verify || !options.lazy_index) {
      return Status::Unsupported(
          what + " (snapshot " + name + ") is not restored from its index: " +
          (!options.layer.verify ? "the layer verification is off"
                                 : "[ocicrypt] lazy_index is off") +
          "; remove the image and pull it again to have it unpacked");
    }
    image::Descriptor descriptor = recorded;
    const std::string sealed_digest = descriptor.Annotation(kRecordSealedIndexDigest);
    const std::string recorded_size = descriptor.Annotation(kRecordSealedIndexSize);
    const std::string core_digest = descriptor.Annotation(kRecordSealedCoreDigest);
    const std::string core_bytes = descriptor.Annotation(kRecordSealedCoreBytes);
    for (std::string_view k : {kRecordSealedIndexDigest, kRecordSealedIndexSize,
                               kRecordSealedCoreDigest, kRecordSealedCoreBytes}) {
      descriptor.annotations.erase(std::string(k));
    }
    if (core_digest.empty()) {  // mounted from a zindex v1 index (its whole blob kept)
      return Status::Unsupported(
          what + " (snapshot " + name + ") was mounted from a zindex version 1 index, which is "
          "no longer read; remove the image and pull it again (re-run `lazycrypt index` to serve "
          "it lazily)");
    }
    auto cipher = image::UnwrapOcicryptLayer(descriptor, keys);
    if (!cipher.ok()) return NoKeyOr(what, cipher.status());
    const std::string index_what = what + ": its index " + sealed_digest;
    const uint64_t max_core_bytes = MaxCoreBytes(options.index_max_bytes);
    FoundIndex found;
    found.digest = sealed_digest;
    if (!recorded_size.empty()) {
      const char* end = recorded_size.data() + recorded_size.size();
      if (std::from_chars(recorded_size.data(), end, found.size).ptr != end) {
        return Status::Corruption(index_what + ": its restore record's size \"" + recorded_size +
                                  "\" is not a number");
      }
    } else {
      auto stat = client->StatBlob(repo, sealed_digest);
      if (!stat.ok()) return stat.status().WithContext(index_what);
      found.size = *stat;
    }
    if (found.size == 0 || found.size > zindex::kMaxSealedIndexBytes) {
      return Status::AuthFailed(index_what + ": " + std::to_string(found.size) +
                                " bytes, not a sealed index (at most " +
                                std::to_string(zindex::kMaxSealedIndexBytes) + ")");
    }
    auto kept = ReadFileBytes(IndexedSealedPath(target_dir));
    if (kept.ok() && crypto::OciDigest(crypto::Sha256::Of(*kept)) == core_digest) {
      found.core = std::move(*kept);
    } else {
      // Exactly its header and core, by range (the recorded size as the hint): a registry's body
      // is never buffered past what was asked for.
      auto fetched =
          FetchSealedCore(repo, sealed_digest, found.size, core_bytes, max_core_bytes);
      if (!fetched.ok()) return fetched.status().WithContext(index_what);
      found.core = std::move(*fetched);
      if (crypto::OciDigest(crypto::Sha256::Of(found.core)) != core_digest) {
        return Status::AuthFailed(index_what + " is not the one it was mounted with");
      }
    }
    auto index = OpenIndexFor(found.core, found.size, descriptor, *cipher, parent_chain, name,
                              max_core_bytes, options.layer.cache.toc_limits.max_entries);
    if (!index.ok()) return index.status().WithContext(index_what);
    found.index = std::move(*index);
    return MountIndexed(snapshot_id, name, parent_chain, descriptor, source, repo,
                        std::move(*cipher), std::move(found), target_dir, resumed);
  }

  // The unwrap part of Check, cached per key-set generation.
  Status CheckKeys(int64_t snapshot_id, const std::string& what) {
    const std::string fingerprint = KeySetFingerprint(options);
    image::Descriptor descriptor;
    {
      std::lock_guard<std::mutex> lock(mu);
      KeyState* state = KeyCheckOf(snapshot_id);
      if (state == nullptr) return Status::FailedPrecondition(what + ": not mounted");
      if (state->checked_fingerprint == fingerprint) return state->checked;
      descriptor = state->descriptor;
    }
    Status result;
    auto keys = LoadNodeKeys(options);
    if (!keys.ok()) {
      result = NoKeyOr(what, keys.status());
    } else {
      auto unwrapped = image::UnwrapLayerPrivopts(descriptor, *keys);
      if (!unwrapped.ok()) result = NoKeyOr(what, unwrapped.status());
    }
    // Only definite answers are kept: a key provider that did not answer is asked again.
    if (result.ok() || result.code() == StatusCode::kPermissionDenied) {
      std::lock_guard<std::mutex> lock(mu);
      if (KeyState* state = KeyCheckOf(snapshot_id)) {
        if (state->checked.ok() != result.ok() || !state->checked_fingerprint) {
          Log(what + (result.ok() ? ": the node's keys unwrap it" : ": " + result.message()));
        }
        state->checked_fingerprint = fingerprint;
        state->checked = result;
      }
    }
    return result;
  }

  // The key check state of a mounted or unpacked layer (mu held); null when it is neither.
  KeyState* KeyCheckOf(int64_t snapshot_id) {
    if (auto it = mounts.find(snapshot_id); it != mounts.end()) return &it->second;
    if (auto it = unpacked_layers.find(snapshot_id); it != unpacked_layers.end()) {
      return &it->second;
    }
    if (auto it = estargz_mounts.find(snapshot_id); it != estargz_mounts.end()) {
      return &it->second;
    }
    return nullptr;
  }

  void Warn(const std::string& message) const {
    if (options.log) options.log(snapshotter::LogLevel::kWarn, message);
  }

  void DropHeld(const std::string& name) {
    if (!options.fd_store) return;
    Status s = options.fd_store->Remove(name);
    if (!s.ok()) Warn("cannot drop FUSE fd " + name + " from the fd store: " + s.ToString());
  }

  // The mount a previous daemon left for `info`'s snapshot, served again (not yet with its
  // layer), or null when there is none (or it is not the mount at target_dir any more: then its
  // fd is dropped). Registers it as being restored.
  std::unique_ptr<fusefs::FuseMount> ResumeHeld(const snapshotter::RestoreRequest& info) {
    std::vector<Held> candidates;
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = held.find(info.snapshot_id);
      if (it == held.end()) return nullptr;
      candidates = std::move(it->second);
      held.erase(it);
    }
    const fusefs::MountOptions& mount_options = options.layer.mount;
    auto device = fusefs::FuseMountDevice(info.target_dir, mount_options.subtype);
    Held h;
    for (Held& c : candidates) {
      if (device.ok() && minor(*device) == c.connection && !h.fd.valid()) {
        h = std::move(c);
        continue;
      }
      Warn("FUSE fd " + c.name + " kept by the previous daemon is not the mount at " +
           info.target_dir.string() + " (" +
           (device.ok() ? "that is connection " + std::to_string(minor(*device))
                        : device.status().message()) +
           "); dropped");
      DropHeld(c.name);
    }
    if (!h.fd.valid()) return nullptr;
    // Only a FUSE device fd is served (the store is trusted like this daemon, but a wrong fd
    // must not become a mount's server).
    struct stat st {};
    if (::fstat(h.fd.get(), &st) != 0 || !S_ISCHR(st.st_mode) ||
        st.st_rdev != makedev(10, 229)) {
      Warn("FUSE fd " + h.name + " from the fd store is not /dev/fuse; dropped");
      DropHeld(h.name);
      return nullptr;
    }
    // A connection that ended (aborted, or its mount gone) meanwhile serves no one.
    struct pollfd ended {h.fd.get(), 0, 0};
    if (::poll(&ended, 1, 0) > 0 && (ended.revents & (POLLERR | POLLHUP | POLLNVAL))) {
      Warn("FUSE fd " + h.name + " from the fd store: its connection has ended; dropped");
      DropHeld(h.name);
      return nullptr;
    }
    fusefs::MountOptions resume_options = mount_options;
    if (resume_options.layer_name == fusefs::MountOptions().layer_name) {
      resume_options.layer_name = "snapshot " + info.name;
    }
    auto resumed = fusefs::FuseMount::Resume(std::move(h.fd), info.target_dir, resume_options);
    if (!resumed.ok()) {
      Warn("cannot resume the FUSE mount at " + info.target_dir.string() + ": " +
           resumed.status().ToString() + "; it is mounted afresh");
      DropHeld(h.name);
      return nullptr;
    }
    const Status resend = (*resumed)->resend_status();
    if (!resend.ok()) {
      Warn("resumed the FUSE mount at " + info.target_dir.string() + " but " + resend.message());
    }
    std::lock_guard<std::mutex> lock(mu);
    ++restart.fds_resumed;
    if (resend.ok()) ++restart.resend_notifications;
    Restoring& r = restoring[info.snapshot_id];
    r = Restoring{};
    r.request = info;
    r.fd_name = h.name;
    auto source = AnySourceFromLabels(info.labels);
    r.layer_digest = source.ok() && *source ? (*source)->layer_digest : std::string("(unknown)");
    r.since = std::chrono::steady_clock::now();
    return std::move(*resumed);
  }

  // One restore attempt of a resumed mount. On success it is a mounted layer; on failure it goes
  // back to `restoring` (retried later) or, when the failure will not change or the retry time
  // is over, is given up: every read of it fails with EIO from then on.
  Status TryRestoreResumed(const snapshotter::RestoreRequest& info,
                           std::unique_ptr<fusefs::FuseMount> mount) {
    Status s;
    if (auto reason = ReadQuarantine(info.target_dir)) {
      s = Status::AuthFailed(*reason);
    } else {
      auto mounted = Mount(info.snapshot_id, info.name, info.parent, info.labels,
                           info.target_dir, &mount);
      if (mounted.ok() && *mounted) {
        std::unique_lock<std::mutex> lock(mu);
        auto it = restoring.find(info.snapshot_id);
        const bool removed = it != restoring.end() && it->second.removed;
        const std::string fd_name = it != restoring.end() ? it->second.fd_name : std::string();
        if (it != restoring.end()) restoring.erase(it);
        if (!removed) {
          ++restart.layers_restored;
          return Status::Ok();
        }
        // The snapshot was removed while this attempt ran: nothing may keep its mount.
        auto m = mounts.find(info.snapshot_id);
        std::unique_ptr<MountedLayer> gone;
        if (m != mounts.end()) {
          gone = std::move(m->second.layer);
          mounts.erase(m);
        }
        std::unique_ptr<CtrMountedLayer> gone_estargz;
        if (auto e = estargz_mounts.find(info.snapshot_id); e != estargz_mounts.end()) {
          gone_estargz = std::move(e->second.layer);
          estargz_mounts.erase(e);
        }
        lock.unlock();
        if (gone) (void)gone->Unmount();
        gone.reset();
        if (gone_estargz) (void)gone_estargz->Unmount();
        gone_estargz.reset();
        DropHeld(fd_name);
        return Status::NotFound("snapshot " + info.name + " was removed while being restored");
      }
      s = mounted.ok() ? Status::FailedPrecondition("snapshot " + info.name +
                                                    " is marked remote but its labels name no "
                                                    "lazycrypt layer")
                       : mounted.status();
    }
    std::unique_lock<std::mutex> lock(mu);
    auto found = restoring.find(info.snapshot_id);
    if (found == restoring.end() || found->second.removed || !mount) {
      // Removed meanwhile, or the attempt consumed the resumed mount (a failure after it was
      // given its layer, e.g. a chain ID that does not match: the mount was torn down with it).
      const std::string fd_name = found != restoring.end() ? found->second.fd_name : "";
      if (found != restoring.end()) restoring.erase(found);
      lock.unlock();
      if (mount) (void)mount->Unmount();
      mount.reset();
      if (!fd_name.empty()) DropHeld(fd_name);
      Warn("resumed mount of snapshot " + info.name + " dropped: " + s.ToString());
      return s;
    }
    Restoring& r = found->second;
    ++r.attempts;
    r.last = s;
    const auto now = std::chrono::steady_clock::now();
    if (stopping) {
      r.mount = std::move(mount);
      return s;
    }
    if (!RetryableRestoreFailure(s) || now - r.since >= options.restore_retry_for) {
      mount->Fail();
      const bool already = r.failed;
      r.failed = true;
      if (!already && options.log) {
        options.log(snapshotter::LogLevel::kError,
                    "gave up restoring layer " + r.layer_digest + " (snapshot " + info.name +
                        ") after " + std::to_string(r.attempts) +
                        " attempts: every read of it fails with EIO until a use of it restores "
                        "it: " + s.ToString());
      }
    } else {
      // 1 s, 2 s, 4 s ... at most 30 s between attempts.
      const int shift = std::min(r.attempts - 1, 5);
      r.next_try = now + std::min(std::chrono::seconds(1 << shift), std::chrono::seconds(30));
      Warn("layer " + r.layer_digest + " (snapshot " + info.name + ") resumed but not restored " +
           "yet (attempt " + std::to_string(r.attempts) + "; its uncached reads wait): " +
           s.ToString());
      if (!restore_thread.joinable()) restore_thread = std::thread([this] { RestoreLoop(); });
      restore_cv.notify_all();
    }
    r.mount = std::move(mount);
    return s;
  }

  // Retries the resumed mounts that are not restored yet, each when its time has come.
  void RestoreLoop() {
    std::unique_lock<std::mutex> lock(mu);
    while (!stopping) {
      auto next = std::chrono::steady_clock::time_point::max();
      std::optional<int64_t> due;
      const auto now = std::chrono::steady_clock::now();
      for (auto& [id, r] : restoring) {
        if (r.failed || !r.mount) continue;
        if (r.next_try <= now) {
          due = id;
          break;
        }
        next = std::min(next, r.next_try);
      }
      if (!due) {
        if (next == std::chrono::steady_clock::time_point::max()) {
          restore_cv.wait(lock);
        } else {
          restore_cv.wait_until(lock, next);
        }
        continue;
      }
      Restoring& r = restoring[*due];
      std::unique_ptr<fusefs::FuseMount> mount = std::move(r.mount);
      const snapshotter::RestoreRequest request = r.request;
      lock.unlock();
      (void)TryRestoreResumed(request, std::move(mount));
      lock.lock();
    }
  }

  uint64_t RequestsWaitedLocked() const {
    uint64_t n = waited_by_gone_mounts;
    for (const auto& [id, m] : mounts) n += m.layer->fuse().requests_waited();
    for (const auto& [id, r] : restoring) n += r.mount ? r.mount->requests_waited() : 0;
    return n;
  }
};

SnapshotHandler::SnapshotHandler(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SnapshotHandler::~SnapshotHandler() {
  impl_->warmup.reset();  // its workers use the registry client and the options
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->restore_cv.notify_all();
  if (impl_->restore_thread.joinable()) impl_->restore_thread.join();
  const bool keep = impl_->options.fd_store && impl_->options.keep_mounts_on_exit;
  std::map<int64_t, Impl::Mounted> mounts;
  std::map<int64_t, Impl::Restoring> restoring;
  std::map<int64_t, Impl::EstargzMounted> estargz_mounts;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    mounts.swap(impl_->mounts);
    restoring.swap(impl_->restoring);
    estargz_mounts.swap(impl_->estargz_mounts);
  }
  if (keep) {
    // The next daemon resumes them: running containers keep reading.
    for (auto& [id, m] : mounts) m.layer->LeaveMounted();
    for (auto& [id, e] : estargz_mounts) e.layer->LeaveMounted();
    for (auto& [id, r] : restoring) {
      if (r.mount) r.mount->LeaveMounted();
    }
    impl_->Log("left " + std::to_string(mounts.size() + estargz_mounts.size() + restoring.size()) +
               " lazy layer mount(s) to the next snapshotter (" +
               std::string(impl_->options.fd_store->kind()) + " fd store)");
    return;
  }
  // First nothing is kept for a next daemon (a stop cut short by its bound must not leave a
  // connection that no one serves), then each mount goes.
  for (auto& [id, m] : mounts) {
    if (!m.fd_name.empty()) impl_->DropHeld(m.fd_name);
  }
  for (auto& [id, e] : estargz_mounts) {
    if (!e.fd_name.empty()) impl_->DropHeld(e.fd_name);
  }
  for (auto& [id, r] : restoring) impl_->DropHeld(r.fd_name);
  for (auto& [id, m] : mounts) {
    (void)m.layer->Unmount();  // busy: the destructor detaches it and aborts its connection
    m.layer.reset();
  }
  for (auto& [id, r] : restoring) {
    if (r.mount) (void)r.mount->Unmount();
    r.mount.reset();
  }
  for (auto& [id, e] : estargz_mounts) {
    (void)e.layer->Unmount();  // busy: the destructor detaches it and aborts its connection
    e.layer.reset();
  }
}

Result<std::unique_ptr<SnapshotHandler>> SnapshotHandler::Create(SnapshotHandlerOptions options) {
  auto impl = std::make_unique<Impl>();
  LC_ASSIGN_OR_RETURN(impl->client, registry::Client::Create(options.registry));
  if (options.fd_store) {
    impl->restart.fd_store = std::string(options.fd_store->kind());
    LC_ASSIGN_OR_RETURN(std::vector<fdstore::NamedFd> held, options.fd_store->List());
    for (fdstore::NamedFd& h : held) {
      auto parsed = ParseFuseFdName(h.name);
      if (!parsed) continue;  // not ours
      ++impl->restart.fds_found;
      impl->held[parsed->first].push_back(Impl::Held{h.name, parsed->second, std::move(h.fd)});
    }
  }
  impl->options = std::move(options);
  if (impl->options.warmup.workers > 0) {
    Impl* self = impl.get();
    impl->warmup = std::make_unique<LayerWarmup>(
        impl->options.warmup,
        [self](const WarmRequest& request) { return self->OpenAhead(request); },
        impl->options.log);
  }
  return std::unique_ptr<SnapshotHandler>(new SnapshotHandler(std::move(impl)));
}

Result<bool> SnapshotHandler::TryMount(const snapshotter::PrepareRequest& info) {
  auto target = info.labels.find(std::string(snapshotter::kTargetSnapshotLabel));
  if (target == info.labels.end()) return false;
  // Before this layer's own work, so that the later layers open while it does.
  impl_->WarmLaterLayers(info.labels);
  return impl_->Mount(info.snapshot_id, target->second, info.parent, info.labels, info.target_dir);
}

LayerWarmupStats SnapshotHandler::Warmup() const {
  return impl_->warmup ? impl_->warmup->stats() : LayerWarmupStats{};
}

Status SnapshotHandler::Unmount(int64_t snapshot_id, const std::filesystem::path& target_dir) {
  Impl::Mounted mounted;
  Impl::Restoring resumed;
  std::unique_ptr<CtrMountedLayer> estargz;
  std::string estargz_fd_name;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    // An unpacked layer has nothing mounted: the snapshotter removes its files.
    if (impl_->unpacked_layers.erase(snapshot_id) != 0) return Status::Ok();
    if (auto e = impl_->estargz_mounts.find(snapshot_id); e != impl_->estargz_mounts.end()) {
      estargz = std::move(e->second.layer);
      estargz_fd_name = std::move(e->second.fd_name);
      impl_->estargz_mounts.erase(e);
    }
    auto it = impl_->mounts.find(snapshot_id);
    if (it != impl_->mounts.end()) {
      impl_->waited_by_gone_mounts += it->second.layer->fuse().requests_waited();
      mounted = std::move(it->second);
      impl_->mounts.erase(it);
    }
    auto r = impl_->restoring.find(snapshot_id);
    if (r != impl_->restoring.end() && r->second.mount) {
      impl_->waited_by_gone_mounts += r->second.mount->requests_waited();
      resumed = std::move(r->second);
      impl_->restoring.erase(r);
    } else if (r != impl_->restoring.end()) {
      // An attempt has the mount out: it tears the mount down when it sees this.
      r->second.removed = true;
      return Status::Ok();
    }
  }
  if (estargz) {
    if (!estargz_fd_name.empty()) impl_->DropHeld(estargz_fd_name);
    impl_->Log("unmounting lazily served ocicrypt layer " + estargz->digest() + " at " +
               target_dir.string());
    (void)estargz->Unmount();  // busy: the destructor detaches it lazily
    return Status::Ok();
  }
  // Whatever happens to the mount, its connection is not kept for a next daemon any more.
  if (!mounted.fd_name.empty()) impl_->DropHeld(mounted.fd_name);
  if (resumed.mount) {
    impl_->Log("unmounting resumed layer " + resumed.layer_digest + " at " + target_dir.string());
    (void)resumed.mount->Unmount();  // busy: its destructor detaches it and aborts it
    resumed.mount.reset();
    impl_->DropHeld(resumed.fd_name);
    if (!mounted.layer) return Status::Ok();
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
  // A standard ocicrypt layer unpacked before the restart: its files are on disk; what Check
  // unwraps comes from its record.
  if (auto record = ReadUnpackedRecord(info.target_dir); record.ok()) {
    auto source = AnySourceFromLabels(info.labels);
    if (source.ok() && *source && (*source)->layer_digest != record->descriptor.digest) {
      return Status::Corruption("snapshot " + info.name + ": its unpacked-layer record names " +
                                record->descriptor.digest + ", its labels " +
                                (*source)->layer_digest);
    }
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->AddUnpackedLocked(info.snapshot_id,
                             source.ok() && *source ? (*source)->image_ref : std::string(),
                             std::move(*record));
    return Status::Ok();
  } else if (record.status().code() != StatusCode::kNotFound) {
    return record.status();  // refused (its use would go unauthorized), never remounted
  }
  // A resumed mount still being restored (a later use asks again), or given up.
  std::unique_ptr<fusefs::FuseMount> resumed;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    // Restored meanwhile (in the background): nothing to do.
    if (impl_->mounts.count(info.snapshot_id) != 0) return Status::Ok();
    auto it = impl_->restoring.find(info.snapshot_id);
    if (it != impl_->restoring.end()) {
      Impl::Restoring& r = it->second;
      const std::string what = "layer " + r.layer_digest + " (snapshot " + info.name + ")";
      if (!r.mount) return Status::Unavailable(what + ": being restored after a restart");
      // Also a given-up one: a use after the cause went (a key put back) serves it again.
      resumed = std::move(r.mount);
    }
  }
  // The mount a previous daemon left here: the same mount, served again.
  if (!resumed) resumed = impl_->ResumeHeld(info);
  if (resumed) {
    Status s = impl_->TryRestoreResumed(info, std::move(resumed));
    if (s.ok() || !RetryableRestoreFailure(s)) return s;
    return Status::Unavailable("being restored after a restart (its reads wait; retried in the "
                               "background): " + s.ToString());
  }
  LC_RETURN_IF_ERROR(DetachStaleMount(info.target_dir));
  if (auto reason = ReadQuarantine(info.target_dir)) return Status::AuthFailed(*reason);
  LC_ASSIGN_OR_RETURN(bool mounted, impl_->Mount(info.snapshot_id, info.name, info.parent,
                                                 info.labels, info.target_dir));
  if (!mounted) {
    return Status::FailedPrecondition("snapshot " + info.name +
                                      " is marked remote but its labels name no lazycrypt layer");
  }
  return Status::Ok();
}

Status SnapshotHandler::Check(const snapshotter::CheckRequest& info) {
  std::string what;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->mounts.find(info.snapshot_id);
    auto unpacked = impl_->unpacked_layers.find(info.snapshot_id);
    if (auto e = impl_->estargz_mounts.find(info.snapshot_id); e != impl_->estargz_mounts.end()) {
      what = "layer " + e->second.layer_digest + " (snapshot " + info.name + ")";
      const CtrMountedLayer& layer = *e->second.layer;
      if (layer.verification() == Verification::kFailed) {
        return Status::AuthFailed(what + ": quarantined: " +
                                  layer.verification_status().message());
      }
      const auto deadline = impl_->options.verify_deadline;
      if (impl_->options.layer.verify && layer.verification() == Verification::kPending &&
          deadline.count() > 0 &&
          std::chrono::steady_clock::now() - e->second.mounted_at > deadline) {
        return Status::Unavailable(what + ": not verified against its diff_id within " +
                                   std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                                      deadline).count()) +
                                   " s of its mount; refused until its verification ends");
      }
    } else if (it == impl_->mounts.end() && unpacked != impl_->unpacked_layers.end()) {
      // Unpacked (files on disk): only the keys decide.
      what = "layer " + unpacked->second.layer_digest + " (snapshot " + info.name + ")";
    } else if (it == impl_->mounts.end()) {
      if (auto r = impl_->restoring.find(info.snapshot_id); r != impl_->restoring.end()) {
        const std::string what =
            "layer " + r->second.layer_digest + " (snapshot " + info.name + ")";
        if (r->second.failed) {
          return r->second.last.WithContext(what + ": could not be restored after a restart");
        }
        return Status::Unavailable(what + ": being restored after a restart (" +
                                   r->second.last.message() + ")");
      }
      if (auto reason = ReadQuarantine(info.target_dir)) return Status::AuthFailed(*reason);
      auto source = SourceFromLabels(info.labels);
      const std::string layer =
          source.ok() && *source ? (*source)->layer_digest : std::string("(unknown)");
      return Status::FailedPrecondition("layer " + layer + " (snapshot " + info.name +
                                        "): not mounted");
    }
  }
  if (!what.empty()) return impl_->CheckKeys(info.snapshot_id, what);
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->mounts.find(info.snapshot_id);
    if (it == impl_->mounts.end()) {
      return Status::FailedPrecondition("snapshot " + info.name + ": not mounted");
    }
    what = "layer " + it->second.source.layer_digest + " (snapshot " + info.name + ")";
    const MountedLayer& layer = *it->second.layer;
    if (layer.verification() == Verification::kFailed) {
      return Status::AuthFailed(what + ": quarantined: its content does not match the diff_id "
                                       "its image claims (" +
                                layer.verification_status().message() + ")");
    }
    const auto deadline = impl_->options.verify_deadline;
    if (layer.verification() == Verification::kPending && deadline.count() > 0 &&
        std::chrono::steady_clock::now() - it->second.mounted_at > deadline) {
      return Status::Unavailable(
          what + ": not verified against its diff_id within " +
          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(deadline).count()) +
          " s of its mount (" + layer.verification_status().message() +
          "); refused until its verification ends");
    }
  }
  return impl_->CheckKeys(info.snapshot_id, what);
}

Result<snapshotter::PurgedLayer> SnapshotHandler::Purge(const snapshotter::CheckRequest& info) {
  snapshotter::PurgedLayer out;
  std::string store_key;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->mounts.find(info.snapshot_id);
    if (it != impl_->mounts.end()) {
      out.layer_digest = it->second.source.layer_digest;
      store_key = it->second.layer->layer().store_key();
    }
    if (auto u = impl_->unpacked_layers.find(info.snapshot_id); u != impl_->unpacked_layers.end()) {
      out.layer_digest = u->second.layer_digest;
      out.note = "unpacked standard ocicrypt layer: its files are removed with the snapshot";
    }
    if (auto e = impl_->estargz_mounts.find(info.snapshot_id); e != impl_->estargz_mounts.end()) {
      out.layer_digest = e->second.layer_digest;
      store_key = e->second.layer->store_key();
    }
  }
  if (out.layer_digest.empty()) {  // not mounted (its restore failed): from its labels
    auto source = SourceFromLabels(info.labels);
    if (source.ok() && *source) {
      out.layer_digest = (*source)->layer_digest;
      store_key = impl_->options.layer.cache.store_key.empty()
                      ? DefaultStoreKey(out.layer_digest, (*source)->toc_digest)
                      : impl_->options.layer.cache.store_key;
    }
  }
  LC_RETURN_IF_ERROR(Unmount(info.snapshot_id, info.target_dir));
  if (!impl_->options.store || store_key.empty()) return out;
  {
    // Another snapshot (the same layer on another parent) may still read these chunks.
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (const auto& [id, m] : impl_->mounts) {
      if (m.layer->layer().store_key() == store_key) {
        out.note = "cached ciphertext kept: snapshot id " + std::to_string(id) +
                   " still mounts the same layer";
        return out;
      }
    }
    for (const auto& [id, e] : impl_->estargz_mounts) {
      if (e.layer->store_key() == store_key) {
        out.note = "cached ciphertext kept: snapshot id " + std::to_string(id) +
                   " still mounts the same layer";
        return out;
      }
    }
  }
  out.bytes_freed = impl_->options.store->BytesPresent(store_key);
  Status removed = impl_->options.store->RemoveBlob(store_key);
  if (!removed.ok()) {
    out.bytes_freed = 0;
    out.note = "removing its cached ciphertext failed: " + removed.message();
  }
  impl_->Log("purged layer " + out.layer_digest + " (snapshot " + info.name + "): " +
             std::to_string(out.bytes_freed) + " cached bytes removed");
  return out;
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
    s.verification = m.layer->verification();
    out.push_back(std::move(s));
  }
  for (const auto& [id, e] : impl_->estargz_mounts) {
    MountedLayerStatus s;
    s.snapshot_id = id;
    s.image_ref = e.image_ref;
    s.layer_digest = e.layer_digest;
    s.mountpoint = e.layer->mountpoint();
    s.blob_size = e.layer->blob_size();
    s.stats = e.layer->stats();
    s.verification = e.layer->verification();
    out.push_back(std::move(s));
  }
  for (const auto& [id, r] : impl_->restoring) {
    MountedLayerStatus s;
    s.snapshot_id = id;
    auto source = SourceFromLabels(r.request.labels);
    if (source.ok() && *source) s.image_ref = (*source)->image_ref;
    s.layer_digest = r.layer_digest;
    s.mountpoint = r.request.target_dir;
    s.restore_state = r.failed ? "failed" : "restoring";
    s.restore_error = r.last.ToString();
    out.push_back(std::move(s));
  }
  return out;
}

void SnapshotHandler::RestoreFinished() {
  std::map<int64_t, std::vector<Impl::Held>> orphans;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    orphans.swap(impl_->held);
  }
  for (auto& [id, list] : orphans) {
    for (Impl::Held& h : list) {
      // No committed lazy snapshot claims it (removed while no daemon ran, or the metadata was
      // lost): its connection ends when the last copy of its fd closes.
      impl_->Warn("FUSE fd " + h.name + " kept by the previous daemon belongs to no snapshot "
                  "restored now; dropped");
      impl_->DropHeld(h.name);
    }
  }
}

snapshotter::RestartInfo SnapshotHandler::Restarts() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  snapshotter::RestartInfo out = impl_->restart;
  for (const auto& [id, r] : impl_->restoring) {
    (r.failed ? out.layers_restore_failed : out.layers_restoring) += 1;
  }
  out.requests_waited = impl_->RequestsWaitedLocked();
  return out;
}

snapshotter::PlaintextCacheInfo SnapshotHandler::PlaintextCache() const {
  snapshotter::PlaintextCacheInfo out;
  const std::shared_ptr<cache::OpenedChunkCache>& opened = impl_->options.layer.cache.opened_cache;
  if (!opened) return out;
  const cache::OpenedChunkCacheStats s = opened->stats();
  out.present = true;
  out.budget_bytes = s.budget_bytes;
  out.bytes_held = s.bytes_held;
  out.chunks_held = s.chunks_held;
  out.hits = s.hits;
  out.misses = s.misses;
  out.evictions = s.evictions;
  out.evicted_bytes = s.evicted_bytes;
  out.not_kept = s.not_kept;
  out.trims = s.trims;
  return out;
}

std::optional<snapshotter::SnapshotUsage> SnapshotHandler::CachedUsage(int64_t snapshot_id) const {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto u = impl_->unpacked_layers.find(snapshot_id);
    if (u != impl_->unpacked_layers.end()) return u->second.usage;
  }
  return RemoteLayerHandler::CachedUsage(snapshot_id);
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
    info.verification = s.restore_state.empty() ? VerificationName(s.verification) : "";
    info.quarantined = s.restore_state.empty() && s.verification == Verification::kFailed;
    info.restore_state = std::move(s.restore_state);
    info.restore_error = std::move(s.restore_error);
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace lazycrypt::lazylayer
