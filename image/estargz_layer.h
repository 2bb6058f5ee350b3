// `lazycrypt encrypt --format ocicrypt-estargz`, one layer: the plain layer rewritten as eStargz
// (estargz/writer.h), then encrypted exactly as `--format ocicrypt` encrypts a layer
// (EncryptOcicryptLayer: AES_256_CTR_HMAC_SHA256, privopts digest = the eStargz blob's digest,
// media type tar+gzip+encrypted), so imgcrypt, skopeo and containerd's stream processors decrypt
// and unpack it unchanged, and a lazy reader can serve it by CTR ranges (estargz/reader.h).
// docs/FORMAT.md §10.
//
// Thread-safety: the function is independent per call.
#pragma once

#include <string>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "estargz/writer.h"
#include "image/convert.h"
#include "image/oci.h"
#include "image/transport.h"
#include "keywrap/keys.h"

namespace lazycrypt::image {

struct EstargzOcicryptResult {
  // The encrypted layer: media type application/vnd.oci.image.layer.v1.tar+gzip+encrypted, the
  // ocicrypt annotations, estargz::kAnnotationTocDigest / kAnnotationTocSize /
  // kAnnotationUncompressedSize, and `source`'s other annotations (minus encryption and stale
  // eStargz ones).
  Descriptor descriptor;
  estargz::WriteResult write;  // write.diff_id is the layer's new diff_id
};

// `tar` is the source layer's uncompressed tar stream (read to its end); `source` its descriptor.
// The eStargz blob is spooled to an unnamed temporary file in options.spool_dir (ocicrypt's
// privopts must name its digest), then encrypted into `out` (not Closed).
Result<EstargzOcicryptResult> EncryptEstargzOcicryptLayer(InputStream& tar,
                                                          const Descriptor& source,
                                                          OutputStream& out,
                                                          const keywrap::Recipients& recipients,
                                                          const estargz::WriterOptions& options);

namespace internal {
// EncryptImage's step for one ocicrypt-estargz layer: `raw` is the source blob as stored (its
// digest and size are checked against `source`, the tar's SHA-256 against config_diff_id),
// `prefetch_marks` the entry names image/prefetch_plan.h resolved into this layer. Closes `sink`
// and fills layer (result, action, diff_id, toc_digest, counts). Errors start with `name`.
Status EncryptEstargzLayer(const std::string& name, InputStream& raw, const Descriptor& source,
                           const std::string& config_diff_id, BlobSink& sink,
                           const keywrap::Recipients& recipients,
                           estargz::WriterOptions options, std::vector<std::string> prefetch_marks,
                           LayerReport& layer);
}  // namespace internal

}  // namespace lazycrypt::image
