// ocicrypt's layer cipher "AES_256_CTR_HMAC_SHA256", streaming, both directions, byte-compatible
// with github.com/containers/ocicrypt (blockcipher/blockcipher_aes_ctr.go), i.e. with what skopeo,
// buildah, podman and containerd's imgcrypt produce and accept:
//
//   - key: 32 random bytes (privopts "symkey"). The SAME 32 bytes key both AES-256 and the HMAC.
//   - nonce: 16 bytes (privopts "cipheroptions": {"nonce": ...}); it is the whole initial AES-CTR
//     counter block, incremented as one 128-bit big-endian integer (Go's cipher.NewCTR, OpenSSL's
//     AES-256-CTR). Go panics on any other length; we return InvalidArgument.
//   - HMAC-SHA256(key, ciphertext) over the whole encrypted blob, nothing else (no nonce, no length);
//     published in pubopts "hmac" (PublicLayerBlockCipherOptions.Hmac). Old ocicrypt releases (before
//     the Hmac field existed) put it in pubopts "cipheroptions": {"hmac": ...}.
//   - ciphertext length == plaintext length; no header, no padding.
// Go's encoding/json writes []byte as standard base64 with padding; the JSON envelope itself is
// keywrap/'s concern, not this file's.
//
// Key material lives only inside OpenSSL contexts, which OpenSSL cleanses when they are freed.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "common/io.h"
#include "common/status.h"
#include "crypto/digest.h"

namespace lazycrypt::crypto {

inline constexpr std::string_view kOcicryptAesCtrCipherName = "AES_256_CTR_HMAC_SHA256";
inline constexpr size_t kCtrKeySize = 32;
inline constexpr size_t kCtrNonceSize = 16;
inline constexpr size_t kCtrHmacSize = 32;

// Encrypts everything written to it into `out` (not owned; must outlive the stream) and MACs the
// ciphertext. Close() finishes the MAC and does NOT close `out`. Not thread-safe.
// Obtain one with NewCtrHmacEncryptingStream below.
class CtrHmacEncryptingStream : public OutputStream {
 public:
  ~CtrHmacEncryptingStream() override = default;

  // The HMAC-SHA256 of all ciphertext (the pubopts "hmac" value).
  // REQUIRES: Close() returned OK (FailedPrecondition otherwise).
  virtual Result<Sha256Digest> hmac() const = 0;

  // Bytes of ciphertext written to `out` so far.
  virtual uint64_t bytes_written() const = 0;
};

// REQUIRES: key.size() == kCtrKeySize, nonce.size() == kCtrNonceSize (InvalidArgument otherwise).
// A nonce must never be reused with the same key: draw both with RandomBytes/RandomKey.
Result<std::unique_ptr<CtrHmacEncryptingStream>> NewCtrHmacEncryptingStream(
    OutputStream& out, std::span<const uint8_t> key, std::span<const uint8_t> nonce);

// Decrypts `in` (not owned; must outlive the stream), checking the HMAC when `in` ends.
//
// SECURITY: plaintext is returned as it is decrypted, BEFORE it is authenticated. Treat everything
// read as unverified until Read() has returned 0 (end of stream); only then has the HMAC matched.
// If the HMAC does not match, the Read() that reaches the end returns AuthFailed (and so does every
// later Read()); the caller must then discard everything it received (delete the unpacked files,
// fail the pull). A stream that is cut short is indistinguishable from a tampered one: AuthFailed.
//
// REQUIRES: key 32 bytes, nonce 16 bytes, expected_hmac 32 bytes (InvalidArgument otherwise; like
// ocicrypt, a missing HMAC is refused rather than skipped). Not thread-safe.
Result<std::unique_ptr<InputStream>> NewCtrHmacDecryptingStream(
    InputStream& in, std::span<const uint8_t> key, std::span<const uint8_t> nonce,
    std::span<const uint8_t> expected_hmac);

// Random access into an AES-256-CTR stream (no MAC): XORs the key stream that starts at byte
// `offset` of the stream into `in`, writing `out` (same size; may alias `in` exactly). Encrypts
// and decrypts alike. The result equals bytes [offset, offset + in.size()) of what the streams
// above produce/consume. Nothing here authenticates: callers must verify the bytes another way
// (e.g. chunk digests from a signed TOC). Thread-safe.
Status AesCtrXorAt(std::span<const uint8_t> key, std::span<const uint8_t> nonce, uint64_t offset,
                   std::span<const uint8_t> in, std::span<uint8_t> out);

}  // namespace lazycrypt::crypto
