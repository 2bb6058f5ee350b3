// The key envelope of a lazycrypt layer, in ocicrypt's convention (docs/FORMAT.md, "Key envelope
// (ocicrypt)"): the layer key travels in a "privopts" JSON wrapped per recipient by keywrap's JWE
// into org.opencontainers.image.enc.keys.jwe; pubopts names lazycrypt's cipher and publishes the
// key commitment; the TOC digest is pinned twice: inside privopts (authenticated by the JWE) and in
// the containerd.io/snapshot/lazycrypt.toc-digest annotation (for the snapshotter, which sees only
// labels), and the two must agree.
//
//   privopts: {"symkey":"<b64 K>","cipher":"LAZYCRYPT_GCM_V1","digest":"sha256:<TOC digest>",
//              "cipheroptions":{}}                      (always < 190 bytes: kMaxPrivoptsBytes)
//   pubopts:  {"cipher":"LAZYCRYPT_GCM_V1","hmac":null,"cipheroptions":{"commitment":"<b64 C>"}}
//
// lazycrypt writes one JWE per recipient, each naming its recipient by a key id (see
// RecipientKeyId); ocicrypt's one-JWE-per-pass annotations are read alike: the annotation may
// hold several base64 JWEs separated by commas. Also: listing a JWE's recipients without a key.
//
// Thread-safety: free functions, no shared state. Never puts key bytes in messages.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "crypto/digest.h"
#include "crypto/secure_buffer.h"
#include "format/keys.h"
#include "format/layout.h"
#include "image/oci.h"
#include "keywrap/envelope.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"

namespace lazycrypt::image {

// privopts must fit in one RSA-2048 OAEP-SHA256 block (256 - 2*32 - 2 bytes), so that key
// providers and wrappers that encrypt privopts directly (not via a JWE CEK) can carry it.
inline constexpr size_t kMaxPrivoptsBytes = 190;
inline constexpr std::string_view kCommitmentCipherOption = "commitment";

// The privopts JSON of a lazycrypt layer, in wiped memory.
Result<crypto::SecureBuffer> SerializeLazycryptPrivopts(const format::LayerKey& key,
                                                        const crypto::Sha256Digest& toc_digest);

// The key id lazycrypt writes into each JWE recipient's unprotected header ("kid"), so that a
// recipient can later be found (and removed) by its public key alone: "sha256:<hex>" of the key's
// DER SubjectPublicKeyInfo. Not secret; not authenticated (it only locates an entry).
Result<std::string> RecipientKeyId(const keywrap::PublicKey& key);

// A keys.jwe annotation value with one JWE per recipient (base64, comma-separated, as ocicrypt
// reads them), each recipient's header carrying its RecipientKeyId. InvalidArgument without
// recipients.
Result<std::string> WrapPrivoptsPerRecipient(ByteSpan privopts,
                                             const std::vector<keywrap::PublicKey>& recipients);

// Each comma-separated entry of a keys.jwe value with the key ids of its recipients ("" for a
// recipient without one). Corruption naming the entry when it is not base64 JSON of a JWE.
struct JweEntryInfo {
  std::string_view text;  // the base64 entry (a view into the annotation value)
  std::vector<std::string> kids;
};
Result<std::vector<JweEntryInfo>> ListJweEntries(std::string_view annotation_value);

// What an encrypted layer descriptor gets.
// Each provider's annotation for `privopts`: KeyProviderAnnotation(name) → base64(the packet its
// "keywrap" returned). Errors name the provider.
Result<std::map<std::string, std::string>> WrapPrivoptsForProviders(
    ByteSpan privopts, const std::vector<std::shared_ptr<const keywrap::KeyProvider>>& providers);

struct LazycryptAnnotations {
  std::string keys_jwe;    // org.opencontainers.image.enc.keys.jwe ("" without public keys)
  std::map<std::string, std::string> provider_keys;  // org.opencontainers.image.enc.keys.provider.*
  std::string pubopts;     // org.opencontainers.image.enc.pubopts
  std::string toc_digest;  // containerd.io/snapshot/lazycrypt.toc-digest
};
// InvalidArgument without recipients.
Result<LazycryptAnnotations> MakeLazycryptAnnotations(const format::LayerKey& key,
                                                      const crypto::Sha256Digest& toc_digest,
                                                      const format::KeyCommitment& commitment,
                                                      const keywrap::Recipients& recipients);

// The public half, readable without a key: from pubopts and the TOC digest annotation.
// Corruption/Unsupported naming the annotation when missing or malformed, or when pubopts names
// another cipher.
struct LazycryptPublicInfo {
  crypto::Sha256Digest toc_digest{};
  format::KeyCommitment commitment{};
};
Result<LazycryptPublicInfo> ParseLazycryptPublicInfo(const Descriptor& layer);

// Any layer's privopts after unwrapping, with the key that opened it.
struct UnwrappedPrivopts {
  keywrap::PrivateLayerOptions options;
  std::string cipher;    // privopts "cipher" (lazycrypt's extension; "" in ocicrypt's privopts)
  std::string key_name;  // the private key that unwrapped it
};
// Tries every key on every comma-separated JWE of a keys.jwe annotation value. Errors (no layer
// prefix; callers add one), the most informative one when several JWEs/keys fail:
//   AuthFailed  a key recovered a JWE's CEK but its content did not verify
//   Corruption / Unsupported  a malformed or unsupported JWE or privopts
//   NotFound    "none of the keys [a.pem, b.pem] is a recipient"
// Uses only the private keys of `keys` (providers have their own annotations).
Result<UnwrappedPrivopts> UnwrapPrivopts(std::string_view keys_jwe_annotation,
                                         const keywrap::KeyRing& keys);

// Any layer's privopts, trying the private keys on its keys.jwe annotation, then each provider of
// `keys` in order on its org.opencontainers.image.enc.keys.provider.<name> annotation (every
// comma-separated base64 packet; ocicrypt's keyprovider protocol). key_name is the key file or
// "provider:<name>". Errors as UnwrapPrivopts; a provider that fails (not reachable, refuses,
// answers garbage) counts like a malformed entry and is named; without any success and without a
// more informative error: NotFound "none of [a.pem, provider:kms] is a recipient (...)" naming
// the providers whose annotation the layer lacks.
Result<UnwrappedPrivopts> UnwrapLayerPrivopts(const Descriptor& layer, const keywrap::KeyRing& keys);

// The secret half after unwrapping.
struct LazycryptLayerSecret {
  format::LayerKey key;
  crypto::Sha256Digest toc_digest{};  // from privopts; equals the annotation (checked)
  format::KeyCommitment commitment{};  // from pubopts (LayerIndex::Open checks the blob's)
  std::string key_name;               // the private key that unwrapped it
};

// Tries every key on every JWE of the layer; checks the privopts cipher, its 32-byte symkey, and
// that its digest equals the TOC digest annotation. Errors (no layer prefix; callers add one):
//   NotFound    "none of the keys [a.pem, b.pem] is a recipient"
//   AuthFailed  a JWE that decrypted with a key did not verify, or the digests disagree
//   Corruption / Unsupported  malformed annotations or privopts
Result<LazycryptLayerSecret> UnwrapLazycryptLayer(const Descriptor& layer,
                                                  const keywrap::KeyRing& keys);

// A recipient as a JWE names it (no key needed).
struct JweRecipientInfo {
  std::string alg;  // "RSA-OAEP", "ECDH-ES+A256KW", ...
  std::string crv;  // EC: the curve of the ephemeral key ("P-256"); empty otherwise
  std::string kid;  // the "kid" header if any (ocicrypt writes none)
};
// Lists the recipients of every JWE in a keys.jwe annotation value. Corruption for an entry that
// is not base64 JSON of a JWE.
Result<std::vector<JweRecipientInfo>> ListJweRecipients(std::string_view annotation_value);

// "[a.pem, b.pem]"
std::string KeyNames(const std::vector<keywrap::PrivateKey>& keys);

}  // namespace lazycrypt::image
