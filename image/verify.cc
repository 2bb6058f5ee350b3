#include "image/verify.h"

#include "crypto/digest.h"
#include "image/convert_internal.h"
#include "image/layer.h"

namespace lazycrypt::image {

namespace {

// Discards what it is given (decrypted bytes we only need authenticated).
class DiscardingOutputStream final : public OutputStream {
 public:
  Status Write(ByteSpan) override { return Status::Ok(); }
  Status Close() override { return Status::Ok(); }
};

Status VerifyLayer(ImageSource& src, const LoadedImage& image, size_t i,
                   const keywrap::KeyRing& keys, const VerifyOptions& options,
                   VerifyLayerReport& report) {
  const Descriptor& d = image.manifest.layers[i];
  std::string name = LayerName(i, d);
  report.index = i;
  report.descriptor = d;
  report.kind = ClassifyLayer(d.media_type);
  auto blob = src.OpenBlobForScan(d);
  if (!blob.ok()) return blob.status().WithContext(name);
  if (report.kind == LayerKind::kLazycrypt) {
    auto tracked = internal::NewProgressBlobSource(**blob, name, options.on_progress);
    DiscardingOutputStream sink;
    auto decrypted = DecryptLazycryptLayer(*tracked, d, keys, sink, format::DecryptOutput::kTar);
    if (!decrypted.ok()) return decrypted.status().WithContext(name);
    std::string diff_id = crypto::OciDigest(decrypted->diff_id);
    if (diff_id != image.config.diff_ids[i]) {
      return Status::AuthFailed(name + ": decrypted tar has diff_id " + diff_id +
                                ", the config says " + image.config.diff_ids[i]);
    }
    report.key_name = decrypted->key_name;
    auto opened = OpenedLayer::Open(std::move(blob).value(), d, keys);
    if (!opened.ok()) return opened.status().WithContext(name);
    report.chunk_count = (*opened)->index().chunks().size();
    LC_ASSIGN_OR_RETURN(blob, src.OpenBlobForScan(d));
  } else if (report.kind == LayerKind::kOcicrypt) {
    BlobInputStream unwatched(**blob);
    auto raw_watched = internal::NewProgressInputStream(unwatched, name, d.size, options.on_progress);
    InputStream& raw = *raw_watched;
    DiscardingOutputStream sink;
    auto decrypted = DecryptOcicryptLayer(raw, d, sink, keys);
    if (!decrypted.ok()) return decrypted.status().WithContext(name);
    report.key_name = decrypted->key_name;
  }
  // Every kind: the blob is the one the manifest names.
  return VerifyBlobDigest(**blob, d).WithContext(name);
}

}  // namespace

Result<VerifyReport> VerifyImage(ImageSource& src, const keywrap::KeyRing& keys,
                                 const VerifyOptions& options) {
  LC_ASSIGN_OR_RETURN(LoadedRoot root, LoadRoot(src));
  VerifyReport report;
  report.root = root.root;
  if (root.index) report.platform_count = root.images.size();
  for (size_t k = 0; k < root.images.size(); ++k) {
    const LoadedImage& image = root.images[k];
    std::string platform =
        root.index ? internal::PlatformLabel(root.index->manifests[root.image_positions[k]]) : "";
    for (size_t i = 0; i < image.manifest.layers.size(); ++i) {
      VerifyLayerReport layer;
      layer.platform = platform;
      Status s = VerifyLayer(src, image, i, keys, options, layer);
      if (!s.ok()) {
        if (root.index) s = s.WithContext("platform " + (platform.empty() ? "?" : platform));
        return s.WithContext(src.Name());
      }
      if (options.on_layer) options.on_layer(layer);
      report.layers.push_back(std::move(layer));
    }
  }
  return report;
}

Result<VerifyReport> VerifyImage(const ImageReference& src,
                                 const keywrap::KeyRing& keys,
                                 const VerifyOptions& options) {
  LC_ASSIGN_OR_RETURN(auto source, OpenImageSource(src));
  return VerifyImage(*source, keys, options);
}

}  // namespace lazycrypt::image
