// JSON Web Encryption (RFC 7516) as ocicrypt's JWE key wrapper uses it (keywrap/jwe in ocicrypt,
// built on go-jose): content encryption A256GCM with a fresh random CEK per JWE; the CEK wrapped
// per recipient with RSA-OAEP (SHA-1, ocicrypt's choice for RSA keys), RSA-OAEP-256, or
// ECDH-ES+A256KW (ocicrypt's choice for EC keys; Concat KDF per RFC 7518 §4.6, AES key wrap per
// RFC 3394) on P-256, P-384 and P-521.
//
// Output is byte-for-byte shaped like go-jose's MultiEncrypter + FullSerialize:
//  - one recipient: the flattened JSON serialization
//      {"protected":B64({"alg":..,"enc":"A256GCM"[,"epk":{..}]}),"encrypted_key":..,"iv":..,
//       "ciphertext":..,"tag":..}
//  - several: the general JSON serialization with {"enc":"A256GCM"} protected and "alg"/"epk" in
//    each recipient's "header", plus go-jose's top-level copy of the first "encrypted_key".
// Thread-safety: free functions without shared state; keys are only read.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "common/io.h"
#include "common/status.h"
#include "crypto/secure_buffer.h"
#include "keywrap/keys.h"

namespace lazycrypt::keywrap {

enum class JweKeyAlgorithm { kRsaOaep, kRsaOaep256, kEcdhEsA256kw };

// "RSA-OAEP", "RSA-OAEP-256", "ECDH-ES+A256KW".
std::string_view JweKeyAlgorithmName(JweKeyAlgorithm algorithm);

// ocicrypt's choice: RSA-OAEP for RSA keys, ECDH-ES+A256KW for EC keys.
JweKeyAlgorithm DefaultJweKeyAlgorithm(const PublicKey& key);

struct JweRecipient {
  const PublicKey* key = nullptr;  // borrowed; must outlive the EncryptJwe call
  JweKeyAlgorithm algorithm = JweKeyAlgorithm::kRsaOaep;
};

// Largest JWE text DecryptJwe accepts; ocicrypt's are a few hundred bytes per recipient.
inline constexpr size_t kMaxJweBytes = 1 << 20;
// Most recipients DecryptJwe accepts in one JWE (each may cost an RSA decryption).
inline constexpr size_t kMaxJweRecipients = 128;

// How many recipients a JWE names (1 for the compact and flattened serializations), without
// decrypting anything. Corruption when it is not a JWE this parser could read that far.
Result<size_t> CountJweRecipients(std::string_view jwe);

// Encrypts `plaintext` for every recipient. InvalidArgument for no recipients or an algorithm that
// does not fit its key (RSA-OAEP with an EC key).
Result<std::string> EncryptJwe(ByteSpan plaintext, std::span<const JweRecipient> recipients);

// Decrypts a JWE in the general or flattened JSON serialization, or the compact one, with `key`:
// every recipient whose "alg" fits the key (RSA-OAEP/RSA-OAEP-256 for RSA, ECDH-ES+A256KW whose
// "epk" is on the key's curve for EC) is tried until one yields a CEK under which the content
// authenticates; the AAD is ASCII(protected) [+ "." + aad] exactly as serialized.
// Errors:
//   Corruption  "JWE is malformed: ..."  (syntax, base64, missing or mistyped members, sizes,
//               duplicate members, a header parameter in two headers, an epk off its curve)
//   Unsupported "JWE ..." naming the "alg", "enc", "zip" or "crit" entry that is not supported
//   NotFound    "no recipient of this JWE matches key <key name>"
//   AuthFailed  "JWE authentication failed: ..." (a CEK was recovered but the content does not
//               verify: tampered ciphertext, iv, tag, protected header, or a spliced recipient)
Result<crypto::SecureBuffer> DecryptJwe(std::string_view jwe, const PrivateKey& key);

}  // namespace lazycrypt::keywrap
