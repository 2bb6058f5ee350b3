#include "lazylayer/labels.h"

#include "common/io.h"
#include "crypto/digest.h"
#include "image/oci.h"

namespace lazycrypt::lazylayer {
namespace {

std::string Get(const std::map<std::string, std::string>& labels, std::string_view name) {
  auto it = labels.find(std::string(name));
  return it == labels.end() ? std::string() : it->second;
}

}  // namespace

namespace {

// The image reference, layer digest and manifest digest labels (CRI's first: the kubelet's view
// of the image; the stargz family otherwise), validated; empty fields when absent.
Result<LayerSource> ImageLabels(const std::map<std::string, std::string>& labels) {
  LayerSource source;
  std::string_view digest_label = kLabelCriLayerDigest;
  source.image_ref = Get(labels, kLabelCriImageRef);
  source.layer_digest = Get(labels, kLabelCriLayerDigest);
  if (source.image_ref.empty()) {
    digest_label = kLabelStargzDigest;
    source.image_ref = Get(labels, kLabelStargzReference);
    source.layer_digest = Get(labels, kLabelStargzDigest);
  }
  if (!source.layer_digest.empty()) {
    LC_RETURN_IF_ERROR(
        image::ValidateDigest(source.layer_digest, "label " + std::string(digest_label)));
  }
  source.manifest_digest = Get(labels, kLabelCriManifestDigest);
  if (!source.manifest_digest.empty()) {
    LC_RETURN_IF_ERROR(image::ValidateDigest(source.manifest_digest,
                                             "label " + std::string(kLabelCriManifestDigest)));
  }
  return source;
}

}  // namespace

Result<std::optional<LayerSource>> SourceFromLabels(
    const std::map<std::string, std::string>& labels) {
  const std::string toc_digest = Get(labels, image::kAnnotationLazycryptTocDigest);
  if (toc_digest.empty()) return std::optional<LayerSource>();
  LC_RETURN_IF_ERROR(image::ValidateDigest(
      toc_digest, "label " + std::string(image::kAnnotationLazycryptTocDigest)));
  LC_ASSIGN_OR_RETURN(LayerSource source, ImageLabels(labels));
  source.toc_digest = toc_digest;
  if (source.image_ref.empty() || source.layer_digest.empty()) {
    return Status::InvalidArgument(
        "a lazycrypt layer (label " + std::string(image::kAnnotationLazycryptTocDigest) +
        ") came without the image reference and layer digest labels; pull it with `lazycrypt "
        "pull`, `ctr-remote images rpull`, the CRI plugin with "
        "disable_snapshot_annotations = false, or (containerd 2.x's transfer service: `ctr "
        "images pull`, the CRI pull) [proxy_plugins.<name>.exports] "
        "enable_remote_snapshot_annotations = \"true\"");
  }
  return std::optional<LayerSource>(std::move(source));
}

Result<std::optional<LayerSource>> AnySourceFromLabels(
    const std::map<std::string, std::string>& labels) {
  LC_ASSIGN_OR_RETURN(LayerSource source, ImageLabels(labels));
  if (source.image_ref.empty() || source.layer_digest.empty()) return std::optional<LayerSource>();
  return std::optional<LayerSource>(std::move(source));
}

std::string ChainIdOf(std::string_view parent_chain_id, std::string_view diff_id) {
  if (parent_chain_id.empty()) return std::string(diff_id);
  const std::string joined = std::string(parent_chain_id) + " " + std::string(diff_id);
  return crypto::OciDigest(crypto::Sha256::Of(AsBytes(joined)));
}

Result<std::string> ChainIdOfSnapshotName(std::string_view name) {
  if (name.empty()) return std::string();
  std::string_view chain = name;
  // "<namespace>/<seq>/<key>": a namespace has no '/', seq is decimal.
  const size_t first = name.find('/');
  if (first != std::string_view::npos) {
    const size_t second = name.find('/', first + 1);
    const std::string_view seq =
        second == std::string_view::npos ? std::string_view() : name.substr(first + 1, second - first - 1);
    if (seq.empty() || seq.find_first_not_of("0123456789") != std::string_view::npos) {
      return Status::InvalidArgument("parent snapshot \"" + std::string(name) +
                                     "\" is neither a chain ID nor <namespace>/<n>/<chain ID>");
    }
    chain = name.substr(second + 1);
  }
  // Chain IDs are sha256 digests (image-spec).
  LC_RETURN_IF_ERROR(image::ValidateDigest(chain, "the chain ID of parent snapshot \"" +
                                                      std::string(name) + "\""));
  return std::string(chain);
}

}  // namespace lazycrypt::lazylayer
