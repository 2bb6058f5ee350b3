// The names and values a containerd client must get exactly right: chain IDs, the labels a pull
// puts on content (so containerd's garbage collector keeps an image's children) and on snapshots
// (so a remote snapshotter can find the layer), the unpack key format, platform matching.
// Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "image/oci.h"

namespace lazycrypt::ctrdclient {

// Label names (containerd 1.6).
inline constexpr std::string_view kLabelSnapshotRef = "containerd.io/snapshot.ref";
// Layer annotations with this prefix reach the snapshotter as labels (snapshots.FilterInheritedLabels).
inline constexpr std::string_view kInheritedLabelPrefix = "containerd.io/snapshot/";
// What stargz's `ctr-remote images rpull` adds (stargz-snapshotter fs/source/source.go).
inline constexpr std::string_view kLabelStargzReference = "containerd.io/snapshot/remote/stargz.reference";
inline constexpr std::string_view kLabelStargzDigest = "containerd.io/snapshot/remote/stargz.digest";
inline constexpr std::string_view kLabelStargzLayers = "containerd.io/snapshot/remote/stargz.layers";
inline constexpr std::string_view kStargzLabelPrefix = "containerd.io/snapshot/remote/stargz.";
// What containerd's CRI plugin sets (pkg/cri/server/image_pull.go, snapshot annotations on).
inline constexpr std::string_view kCriLabelPrefix = "containerd.io/snapshot/cri.";
inline constexpr std::string_view kLabelCriImageRef = "containerd.io/snapshot/cri.image-ref";
inline constexpr std::string_view kLabelCriLayerDigest = "containerd.io/snapshot/cri.layer-digest";
inline constexpr std::string_view kLabelCriImageLayers = "containerd.io/snapshot/cri.image-layers";
inline constexpr std::string_view kLabelCriManifestDigest =
    "containerd.io/snapshot/cri.manifest-digest";
inline constexpr std::string_view kLabelGcExpire = "containerd.io/gc.expire";
inline constexpr std::string_view kLabelGcRefContentConfig = "containerd.io/gc.ref.content.config";
inline constexpr std::string_view kLabelGcRefContentLayerPrefix = "containerd.io/gc.ref.content.l.";
inline constexpr std::string_view kLabelGcRefContentManifestPrefix = "containerd.io/gc.ref.content.m.";
inline constexpr std::string_view kLabelGcRefSnapshotPrefix = "containerd.io/gc.ref.snapshot.";
inline constexpr std::string_view kLabelUncompressed = "containerd.io/uncompressed";
inline constexpr std::string_view kLabelDistributionSourcePrefix = "containerd.io/distribution.source.";
// containerd refuses a label whose key and value together exceed this (labels.Validate).
inline constexpr size_t kMaxLabelBytes = 4096;

// identity.ChainID per prefix: result[i] is the chain ID of diff_ids[0..i].
//   ChainID(L0) = DiffID(L0); ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln)).
// The digests are used as given (callers validate them).
std::vector<std::string> ChainIds(const std::vector<std::string>& diff_ids);

// The `.layers` label value for the layer at `from`: the digests of layers[from..] joined with
// ",", cut (whole digests only) so that key + value stay within kMaxLabelBytes — exactly as
// stargz's AppendDefaultLabelsHandlerWrapper does. REQUIRES: from < layers.size().
std::string StargzLayersLabel(const std::vector<std::string>& layer_digests, size_t from);

// The labels of the Prepare/Commit of layer `index` of an image: the layer's annotations under
// containerd.io/snapshot/ (e.g. lazycrypt's TOC digest) except the ones that say where the layer
// comes from; those are lazycrypt pull's own: the stargz reference/digest/layers labels and the
// CRI image-ref/layer-digest(/manifest-digest, when given) labels, from image_ref as given and the
// layer's digest; and containerd.io/snapshot.ref = chain_id.
// An image's own containerd.io/snapshot/cri.* and containerd.io/snapshot/remote/stargz.*
// annotations are dropped: the snapshotter fetches the manifest and layers these labels name with
// the node's registry credentials, and an image must not choose another image for that.
// REQUIRES: index < layers.size().
std::map<std::string, std::string> SnapshotLabels(const std::string& image_ref,
                                                  const std::vector<image::Descriptor>& layers,
                                                  size_t index, const std::string& chain_id,
                                                  const std::string& manifest_digest = "");
// True for the inherited label names that only the puller may set (the two families above).
bool IsSourceLabel(std::string_view key);

// The content labels that keep a manifest's children: gc.ref.content.config and
// gc.ref.content.l.<i> per layer (images.SetChildrenLabels).
std::map<std::string, std::string> ManifestGcLabels(const image::Manifest& manifest);
// An index's: gc.ref.content.m.<i> for each manifest kept (the platform's), in order.
std::map<std::string, std::string> IndexGcLabels(const std::vector<std::string>& manifest_digests);

// containerd's unpack key: "extract-<unique> <chain_id>" (snapshots.UnpackKeyFormat); unique is
// "<nanoseconds>-<base64url of 3 random bytes>" as in containerd's uniquePart().
std::string UnpackKey(std::string_view unique, std::string_view chain_id);
// A fresh unique part (time + CSPRNG).
std::string NewUniquePart();

// "os/arch[/variant]", e.g. "linux/amd64", "linux/arm64/v8". InvalidArgument otherwise.
Result<image::Platform> ParsePlatform(std::string_view text);
// True when the descriptor's platform has the wanted os and architecture (and variant, when the
// wanted one names a variant).
bool PlatformMatches(const image::Platform& wanted, const image::Platform& candidate);

// RFC 3339 UTC ("2026-11-23T08:50:00Z") of now + seconds: the gc.expire label value.
std::string ExpiryTimestamp(long long seconds_from_now);

}  // namespace lazycrypt::ctrdclient
