// Internal to keywrap/: the JWE building blocks, exposed only so that keywrap's tests can check
// them against the RFC known-answer vectors. Not part of the library's interface.
#pragma once

#include <openssl/types.h>

#include <cstdint>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "crypto/secure_buffer.h"

namespace lazycrypt::keywrap::internal {

// ECDH shared secret Z (the x coordinate, padded to the field size) of `own` (a private EC key)
// and `peer` (a public key on the same curve). The peer key is validated first.
Result<crypto::SecureBuffer> EcdhSharedSecret(EVP_PKEY* own, EVP_PKEY* peer);

// Concat KDF with SHA-256 (NIST SP 800-56A §5.8.1, as RFC 7518 §4.6.2 profiles it), computed with
// OpenSSL's SSKDF: OtherInfo = len32(alg)||alg || len32(apu)||apu || len32(apv)||apv ||
// be32(key_size_bytes*8).
Result<crypto::SecureBuffer> ConcatKdfSha256(ByteSpan z, std::string_view algorithm_id,
                                             ByteSpan apu, ByteSpan apv, size_t key_size_bytes);

// AES-256 key wrap (RFC 3394, OpenSSL's "id-aes256-wrap"). REQUIRES kek.size() == 32.
Result<std::vector<uint8_t>> AesKeyWrap256(ByteSpan kek, ByteSpan key);
// AuthFailed when the integrity check fails (wrong KEK or tampered input).
Result<crypto::SecureBuffer> AesKeyUnwrap256(ByteSpan kek, ByteSpan wrapped);

}  // namespace lazycrypt::keywrap::internal
