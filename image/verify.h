// Verifying an image end to end without writing anything: every blob fetched and authenticated.
//  - lazycrypt layers: the key unwrapped, the pinned TOC, the blob header, every chunk (AES-GCM
//    tag) and the tar stream's diff_id against the TOC and the config, then the blob's digest;
//  - ocicrypt layers: the key unwrapped, the HMAC over the whole ciphertext, and the plaintext's
//    digest against privopts; then the blob's digest;
//  - plain layers and configs: size and digest.
// The first failure is returned, naming the platform (for an index), the layer and, for a
// lazycrypt chunk, the chunk: "layer 1 (sha256:ab12..): chunk 5: ...".
//
// Thread-safety: independent calls; nothing shared.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "image/convert.h"
#include "image/transport.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"

namespace lazycrypt::image {

struct VerifyLayerReport {
  std::string platform;  // "" unless the image is an index
  size_t index = 0;
  Descriptor descriptor;
  LayerKind kind = LayerKind::kUnknown;
  std::string key_name;     // encrypted layers: the key that opened it
  uint64_t chunk_count = 0;  // lazycrypt layers: chunks authenticated
};

struct VerifyReport {
  Descriptor root;
  size_t platform_count = 0;
  std::vector<VerifyLayerReport> layers;
};

struct VerifyOptions {
  ProgressCallback on_progress;  // while a layer's blob is read (see image/convert.h)
  std::function<void(const VerifyLayerReport&)> on_layer;
};

Result<VerifyReport> VerifyImage(ImageSource& src, const keywrap::KeyRing& keys,
                                 const VerifyOptions& options = {});
Result<VerifyReport> VerifyImage(const ImageReference& src,
                                 const keywrap::KeyRing& keys,
                                 const VerifyOptions& options = {});

}  // namespace lazycrypt::image
