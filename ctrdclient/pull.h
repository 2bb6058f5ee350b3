// `lazycrypt pull`: pulls an image into containerd through its gRPC API (content, images, leases,
// snapshots, diff) the way containerd's own pull + unpack does, adding the labels a remote
// snapshotter needs to mount layers itself (containerd.io/snapshot.ref, the stargz and CRI
// reference/digest labels set from the reference given, the layer's other containerd.io/snapshot/*
// annotations; see SnapshotLabels).
//
// Per layer, in order: a snapshot already committed under the chain ID is "present"; otherwise
// Prepare(key, parent, labels) answering ALREADY_EXISTS means the remote snapshotter mounted it
// ("remote"); a successful Prepare means an ordinary layer: the blob is fetched into the content
// store (digest verified), containerd's diff service applies it onto the mounts, the diff ID is
// checked against the config and the snapshot committed ("applied"). Every call after the lease is
// created carries it, and what the pull finds already present (blobs, committed snapshots) is
// added to it before it is looked at, so that a garbage collection during the pull (e.g. right
// after `ctr images rm`) cannot remove what the pull labels and builds on; the lease is deleted at
// the end, whatever happened. The image record (name = the normalized reference, target = the
// manifest or index) is created or updated.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "image/oci.h"
#include "registry/registry.h"

namespace lazycrypt::ctrdclient {

enum class LayerOutcome {
  kPresent,  // the snapshot existed already (an earlier pull)
  kRemote,   // the snapshotter answered Prepare with ALREADY_EXISTS: it mounted the layer itself
  kApplied,  // fetched, applied by containerd's diff service, committed
};
std::string_view LayerOutcomeName(LayerOutcome outcome);  // "present", "remote", "applied"

struct LayerPullReport {
  size_t index = 0;
  std::string digest;      // the layer blob's
  std::string media_type;
  uint64_t size = 0;
  std::string diff_id;
  std::string chain_id;
  LayerOutcome outcome = LayerOutcome::kPresent;
  uint64_t bytes_fetched = 0;  // from the registry (0 unless applied and not in the content store)
  std::chrono::milliseconds duration{0};
};

struct PullReport {
  std::string image_name;  // the image record's name (normalized reference)
  image::Descriptor target;  // the image record's target (index or manifest)
  std::string manifest_digest;
  std::string config_digest;
  std::string chain_id;  // of the top layer (what gc.ref.snapshot.<snapshotter> names)
  std::vector<LayerPullReport> layers;
  uint64_t bytes_fetched = 0;  // everything fetched from the registry (manifests, config, layers)
  std::chrono::milliseconds duration{0};
};

// Progress events, in order: "resolved" (manifest chosen), "layer" (one per layer, when it is
// done; `layer` is set), "image" (the image record is written). Called on the pulling thread.
struct PullEvent {
  std::string stage;
  const LayerPullReport* layer = nullptr;  // for "layer" only; valid during the call
  std::string message;  // a human-readable line
};
using PullProgress = std::function<void(const PullEvent&)>;

struct PullOptions {
  // containerd's gRPC socket (a path; "unix://" prefix accepted).
  std::string address = "/run/containerd/containerd.sock";
  std::string ns = "default";
  std::string ref;  // "registry/repo:tag" or "...@sha256:..."
  std::string snapshotter = "lazycrypt";
  std::string platform = "linux/amd64";  // os/arch[/variant], chosen from an index
  registry::ClientOptions registry;
  // Expiry of the pull's lease (containerd.io/gc.expire), in case the pull dies before deleting it.
  std::chrono::seconds lease_expiry{3600};
  // Deadline of one short call (Stat, Prepare, Commit, Info, Create...).
  std::chrono::milliseconds call_timeout{60000};
  // Deadline of one blob write or one Diff.Apply (large layers).
  std::chrono::milliseconds transfer_timeout{30 * 60 * 1000};
  PullProgress progress;
};

// Pulls options.ref into containerd. Errors name the step and the layer ("layer 2 (sha256:...):
// apply: ..."); NotFound when the image does not exist in the registry; Unavailable when
// containerd cannot be reached. Not thread-safe per call, but calls may run concurrently.
Result<PullReport> PullImage(const PullOptions& options);

}  // namespace lazycrypt::ctrdclient
