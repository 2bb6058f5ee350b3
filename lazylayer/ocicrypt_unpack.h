// The snapshotter's eager path for standard ocicrypt layers (AES_256_CTR_HMAC_SHA256, what skopeo,
// buildah, podman and ctr-imgcrypt make): the snapshotter decrypts and unpacks them itself, so that
// an encrypted image runs through lazycrypt on any containerd and any pull path (containerd 2.x's
// transfer service hands a stream processor no keys; docs/KUBERNETES.md).
//
// Order, so that nothing unauthenticated is parsed and nothing is committed before every check:
//   1. the layer key is unwrapped with the node's keys (no key: refused before any download);
//   2. the encrypted blob is downloaded into an unnamed temporary file (ciphertext only; O_TMPFILE
//      in the snapshot's own directory, gone with its fd, never visible by name), its digest
//      checked against the manifest's descriptor;
//   3. the whole file is decrypted once into nothing: the HMAC over the ciphertext and the
//      plaintext's digest pinned in privopts must match; otherwise refused, nothing was parsed;
//   4. only then decrypted again, decompressed and unpacked (unpack::ApplyLayer) into the
//      snapshot's directory, the tar's SHA-256 (the diff_id) computed on the way; the caller checks
//      it against the chain ID containerd asked for before it commits anything.
// On error the caller removes target_dir's contents (the snapshotter removes the whole snapshot).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/status.h"
#include "image/layer.h"
#include "image/oci.h"
#include "keywrap/keyring.h"
#include "registry/registry.h"
#include "unpack/apply.h"

namespace lazycrypt::lazylayer {

struct OcicryptUnpackResult {
  std::string diff_id;        // "sha256:..." of the layer's tar, as unpacked
  std::string key_name;       // the private key (or provider) that unwrapped the layer key
  uint64_t blob_bytes = 0;    // downloaded
  unpack::ApplyStats applied;
  int64_t fetch_ms = 0;       // download (2)
  int64_t verify_ms = 0;      // HMAC and digest pass (3)
  int64_t unpack_ms = 0;      // decrypt, decompress and unpack (4)
};

// `layer` is the ocicrypt descriptor from the image's manifest (with its key annotations) and
// `cipher` its key, unwrapped by the caller (image::UnwrapOcicryptLayer: only that step can mean
// "no key"); `scratch_dir` holds the temporary file (same file system as target_dir, e.g. its
// parent). Bounds: the download stops at the descriptor's size, and needs that much free space;
// the unpacked files may hold at most max(kMinUnpackedBound, kMaxExpansion x blob size) bytes.
// Errors name the layer's problem, never a file of it (entries by number): AuthFailed for a
// digest, HMAC or privopts-digest mismatch, Corruption for a malformed layer, Unsupported for a
// bound, IoError / Unavailable for the disk and the registry.
inline constexpr uint64_t kMinUnpackedBound = uint64_t{1} << 30;
inline constexpr uint64_t kMaxExpansion = 50;
Result<OcicryptUnpackResult> UnpackOcicryptLayer(registry::Client& client,
                                                 const registry::Reference& repo,
                                                 const image::Descriptor& layer,
                                                 const image::OcicryptLayerCipher& cipher,
                                                 const std::filesystem::path& scratch_dir,
                                                 const std::filesystem::path& target_dir);

}  // namespace lazycrypt::lazylayer
