// Shared by convert.cc, recipients.cc: the per-image and per-root conversion skeleton. Not a
// public interface.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "image/convert.h"
#include "image/transport.h"

namespace lazycrypt::image::internal {

// "linux/arm64[/v8]" from a descriptor's platform, "" without one.
std::string PlatformLabel(const Descriptor& d);

// Converts one layer: sets layer.result and layer.action (and what else it knows).
using LayerConverter = std::function<Status(size_t i, const Descriptor& d, LayerReport& layer)>;

// Converts one image: copies its config verbatim, converts each layer in order (reporting it to
// on_layer and appending it to report.layers), writes the new OCI manifest. Returns its descriptor.
Result<Descriptor> ConvertOneImage(ImageSource& src, ImageDestination& dst, const LoadedImage& image,
                                   const std::string& platform, const LayerConverter& convert_layer,
                                   const LayerCallback& on_layer, ConvertReport& report);

// Converts one platform image; returns the new manifest's descriptor.
using ImageConverter =
    std::function<Result<Descriptor>(const LoadedImage& image, const std::string& platform)>;

// Loads src's root, runs `precheck` (may be empty) on it, converts every platform image with
// `convert_image`, writes the index (when the root is one; entries keep platform and
// annotations) and commits. On error the destination is aborted.
Result<ConvertReport> ConvertRoot(ImageSource& src, ImageDestination& dst,
                                  const std::function<Status(const LoadedRoot&)>& precheck,
                                  const ImageConverter& convert_image);

// Pass-through wrappers that report how far into a blob reading has got (for ProgressCallback).
// `inner` is borrowed. Thread-safe as far as `inner` is; the reported high-water mark is advisory.
std::unique_ptr<InputStream> NewProgressInputStream(InputStream& inner, std::string what,
                                                    uint64_t total, const ProgressCallback& cb);
std::unique_ptr<BlobSource> NewProgressBlobSource(BlobSource& inner, std::string what,
                                                  const ProgressCallback& cb);

}  // namespace lazycrypt::image::internal
