// ocicrypt's layer key envelope: the JSON "private options" (the layer key and what goes with it)
// wrapped per recipient into the annotation org.opencontainers.image.enc.keys.jwe, and the public
// options in org.opencontainers.image.enc.pubopts. The JSON is exactly what Go's encoding/json
// writes for ocicrypt's blockcipher.PrivateLayerBlockCipherOptions and
// PublicLayerBlockCipherOptions: members in struct order, []byte as standard padded base64,
// map[string][]byte with sorted keys, a nil slice as null.
//
//   privopts: {"symkey":"<b64>","digest":"sha256:..","cipheroptions":{"nonce":"<b64>"}}
//   pubopts:  {"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"<b64>","cipheroptions":{}}
//
// The keys annotation holds base64(JWE) entries separated by commas: ocicrypt appends one entry
// per wrapping pass (one JWE carrying all recipients of that pass).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "crypto/secure_buffer.h"
#include "keywrap/keys.h"

namespace lazycrypt::keywrap {

inline constexpr std::string_view kJweKeysAnnotation = "org.opencontainers.image.enc.keys.jwe";
inline constexpr std::string_view kPubOptsAnnotation = "org.opencontainers.image.enc.pubopts";
inline constexpr std::string_view kPkcs7KeysAnnotation = "org.opencontainers.image.enc.keys.pkcs7";
inline constexpr std::string_view kPgpKeysAnnotation = "org.opencontainers.image.enc.keys.pgp";
// ocicrypt's key providers use "org.opencontainers.image.enc.keys.provider.<name>".
inline constexpr std::string_view kKeyProviderAnnotationPrefix =
    "org.opencontainers.image.enc.keys.provider.";
// Every ocicrypt annotation starts with this (ocicrypt's FilterOutAnnotations drops them all).
inline constexpr std::string_view kEncryptionAnnotationPrefix = "org.opencontainers.image.enc.";

// Most recipients one layer's keys annotation may name, over all its comma-separated JWE entries,
// and most packets one key-provider annotation may hold. Each recipient can cost an RSA
// decryption per node key, each packet a provider call, on a node's pull path; real layers have a
// handful. Readers refuse more before decrypting anything; writers refuse to produce more.
inline constexpr size_t kMaxLayerRecipients = 256;
inline constexpr size_t kMaxKeyProviderPackets = 256;

// The comma-separated entries of an annotation value (one empty entry for ""). Corruption
// "<what> has more than <max_entries> entries (the limit)" when there are more.
Result<std::vector<std::string_view>> SplitAnnotationEntries(std::string_view value,
                                                             size_t max_entries,
                                                             std::string_view what);

// OK when the keys annotation's JWE entries name at most kMaxLayerRecipients recipients in all
// (entries that do not decode are left to the unwrapping to report). Corruption naming the count
// and the limit otherwise.
Status CheckLayerRecipientCount(std::string_view annotation_value);

// ocicrypt's one cipher (blockcipher.AES256CTR).
inline constexpr std::string_view kOcicryptAes256CtrCipher = "AES_256_CTR_HMAC_SHA256";

using CipherOptions = std::map<std::string, std::vector<uint8_t>>;

// The secret half. Move-only (holds the layer key).
struct PrivateLayerOptions {
  crypto::SecureBuffer symkey;   // the layer key ("symkey")
  std::string digest;            // digest of the plain layer ("digest"), e.g. "sha256:..."
  CipherOptions cipher_options;  // "cipheroptions", e.g. {"nonce": 16 bytes} for AES-CTR
  // "previouslayersdigest": only newer ocicrypt releases have this member. Written only when set;
  // read when present.
  std::optional<std::string> previous_layers_digest;
};

struct PublicLayerOptions {
  std::string cipher;            // "cipher", e.g. kOcicryptAes256CtrCipher
  std::vector<uint8_t> hmac;     // "hmac"; written as null when empty (a nil []byte)
  CipherOptions cipher_options;  // "cipheroptions"; written as {} when empty
};

// Go encoding/json bytes of the private options, in wiped memory. InvalidArgument if a string
// (digest, option name) holds anything but printable ASCII: those have no single Go spelling
// worth matching and never occur in practice.
Result<crypto::SecureBuffer> SerializePrivateLayerOptions(const PrivateLayerOptions& options);
// Accepts what Go's decoder accepts for these structs in practice: members by exact name,
// unknown members ignored, null for any member. Corruption naming the member otherwise.
Result<PrivateLayerOptions> ParsePrivateLayerOptions(std::string_view json);

Result<std::string> SerializePublicLayerOptions(const PublicLayerOptions& options);
Result<PublicLayerOptions> ParsePublicLayerOptions(std::string_view json);

// The pubopts annotation value: base64(SerializePublicLayerOptions), and back.
Result<std::string> EncodePubOptsAnnotation(const PublicLayerOptions& options);
Result<PublicLayerOptions> DecodePubOptsAnnotation(std::string_view annotation_value);

// The value of org.opencontainers.image.enc.keys.jwe for a new layer: one JWE for all `keys`
// (RSA-OAEP for RSA keys, ECDH-ES+A256KW for EC keys, as ocicrypt chooses), base64-encoded.
// To add recipients to an existing layer, append "," + the new value, as ocicrypt does.
Result<std::string> WrapLayerKeys(const PrivateLayerOptions& options,
                                  const std::vector<PublicKey>& keys);

// Tries every key on every comma-separated JWE entry. Errors, when no pair works:
//   AuthFailed  if some entry's CEK was recovered but its content did not verify,
//   Corruption / Unsupported  if an entry is malformed or unsupported (named by position),
//   NotFound "no private key given (...) matches a recipient of the layer's JWE" otherwise,
// each the first of its kind, in that order of precedence.
Result<PrivateLayerOptions> UnwrapLayerKeys(std::string_view annotation_value,
                                            const std::vector<PrivateKey>& keys);

}  // namespace lazycrypt::keywrap
