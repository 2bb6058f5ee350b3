// Which layer containerd asks the snapshotter for: read from the Prepare labels. containerd
// passes a remote snapshotter only `containerd.io/snapshot.ref` and labels prefixed
// `containerd.io/snapshot/` (layer annotations with that prefix included), so the image is named
// by one of two label families:
//   CRI (disable_snapshot_annotations = false):  containerd.io/snapshot/cri.image-ref,
//     .../cri.layer-digest, and in newer releases .../cri.manifest-digest;
//   stargz's `ctr-remote images rpull` and `lazycrypt pull`: containerd.io/snapshot/remote/
//     stargz.reference, .../stargz.digest (and .../stargz.layers, unused here).
// A lazycrypt layer carries containerd.io/snapshot/lazycrypt.toc-digest from its descriptor.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace lazycrypt::lazylayer {

inline constexpr std::string_view kLabelCriImageRef = "containerd.io/snapshot/cri.image-ref";
inline constexpr std::string_view kLabelCriLayerDigest = "containerd.io/snapshot/cri.layer-digest";
inline constexpr std::string_view kLabelCriManifestDigest =
    "containerd.io/snapshot/cri.manifest-digest";
inline constexpr std::string_view kLabelStargzReference =
    "containerd.io/snapshot/remote/stargz.reference";
inline constexpr std::string_view kLabelStargzDigest = "containerd.io/snapshot/remote/stargz.digest";
inline constexpr std::string_view kLabelStargzLayers = "containerd.io/snapshot/remote/stargz.layers";

struct LayerSource {
  std::string image_ref;        // "127.0.0.1:5000/app:1" (as containerd names it)
  std::string layer_digest;     // "sha256:..."
  std::string manifest_digest;  // "" unless the CRI label names it
  std::string toc_digest;       // the pinned TOC digest label ("sha256:...")
};

// nullopt when the labels do not name a lazycrypt layer (no toc-digest label): the layer is left
// to containerd's ordinary pull. InvalidArgument naming the label when one is malformed, or when
// a lazycrypt layer comes without an image reference or layer digest (the message says which
// pull paths send them).
Result<std::optional<LayerSource>> SourceFromLabels(const std::map<std::string, std::string>& labels);

// Any layer's image reference and layer digest labels (toc_digest left empty), for layers that
// are not lazycrypt's (a standard ocicrypt layer the snapshotter unpacks itself). nullopt when
// the labels name no image and layer (a pull path that sends none); InvalidArgument naming the
// label when one is malformed.
Result<std::optional<LayerSource>> AnySourceFromLabels(
    const std::map<std::string, std::string>& labels);

// containerd's identity.ChainID of a layer on top of a chain (opencontainers/image-spec
// identity/chainid.go): the bottom layer's chain ID is its diff_id; otherwise
// "sha256:" + hex(SHA-256("<parent chain ID> <diff_id>")), the two digests as written
// ("sha256:<hex>") joined by one space. `parent_chain_id` "" = bottom layer.
std::string ChainIdOf(std::string_view parent_chain_id, std::string_view diff_id);

// The chain ID that a parent snapshot's name stands for, as a snapshotter behind containerd sees
// it: containerd's metadata names the snapshots it commits "<namespace>/<seq>/<chain ID>"
// (metadata/snapshot.go createKey) while a remote snapshotter commits its own under the bare
// chain ID. "" for "" (no parent). An error naming the name when what remains is not a sha256
// digest.
Result<std::string> ChainIdOfSnapshotName(std::string_view name);

}  // namespace lazycrypt::lazylayer
