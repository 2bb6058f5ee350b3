// Eager decryption of a whole blob back into the layer's tar stream (docs/FORMAT.md, "Decoding").
#pragma once

#include <optional>

#include "common/io.h"
#include "common/status.h"
#include "crypto/digest.h"
#include "format/keys.h"

namespace lazycrypt::format {

enum class DecryptOutput {
  kTar,      // the original uncompressed tar stream, byte for byte
  kTarZstd,  // zstd frames that decompress to exactly that stream (compressed chunks' frames are
             // passed through; stored chunks are compressed at zstd_level)
};

struct DecryptOptions {
  DecryptOutput output = DecryptOutput::kTar;
  int threads = 0;     // chunk-opening threads; 0 = one per core
  int zstd_level = 3;  // for stored chunks in kTarZstd mode
};

// Random access (a file or a registry blob): LayerIndex::Open (footer, key commitment, pinned TOC
// digest, TOC), then the blob header against its copy in the footer, then every chunk in order
// (opened in parallel, written in order), then the SHA-256 of the tar stream against the TOC's
// diff_id, and the TOC against the tar stream (format/toc_tar_match.h: same entries, in order,
// field for field; only zero bytes after the end-of-archive marker). Returns that verified diff_id.
// Output is written as chunks are verified; if this returns an error, discard what was written
// (the output is never unauthenticated bytes, but may be incomplete). Does not Close() `out`.
Result<crypto::Sha256Digest> DecryptLayer(BlobSource& blob, const LayerKey& key,
                                          const crypto::Sha256Digest& pinned_toc_digest,
                                          OutputStream& out, const DecryptOptions& options = {});

// Forward-only (a pipe: containerd's stream processor reads the blob from stdin): the blob header
// (key commitment checked at once), then records until the one flagged last, then the sealed
// TOC and footer (everything up to EOF), which must agree with what was seen: the footer's
// header copy and TOC offset, the pinned TOC digest (when given), the TOC's tag, its chunk table
// against the records, its diff_id against the SHA-256 of what was emitted, and its entries
// against the tar stream (as DecryptLayer).
// Same output contract as DecryptLayer: an error means discard the output.
Result<crypto::Sha256Digest> DecryptLayerStream(
    InputStream& blob, const LayerKey& key,
    const std::optional<crypto::Sha256Digest>& pinned_toc_digest, OutputStream& out,
    const DecryptOptions& options = {});

}  // namespace lazycrypt::format
