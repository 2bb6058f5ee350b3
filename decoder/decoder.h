// lazycrypt-decoder: a containerd stream processor (the eager fallback for nodes without the
// lazycrypt snapshotter). containerd runs it with the layer blob on stdin, reads the decoded
// layer from stdout, sets STREAM_PROCESSOR_MEDIATYPE to the blob's media type and, when a client
// asked for one, passes imgcrypt's payload (the layer descriptor and keys) on fd 3
// (decoder/payload.h). A non-zero exit with a message on stderr fails the pull.
//
//   lazycrypt layers  -> tar+zstd: every chunk authenticated, the blob's key commitment checked
//                        against the key and against pubopts, the pinned TOC digest (privopts and
//                        annotation) and the TOC's diff_id against the emitted tar checked.
//   ocicrypt layers   -> the original layer (tar / tar+gzip / tar+zstd), HMAC and digest checked
//                        at the end (as ctd-decoder does), so one processor name can serve both.
//
// Thread-safety: free functions, no shared state. Never puts key bytes into messages.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "crypto/digest.h"
#include "decoder/payload.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"

namespace lazycrypt::decoder {

inline constexpr std::string_view kMediaTypeEnvVar = "STREAM_PROCESSOR_MEDIATYPE";

// Loads every regular file under `dir` (recursively, like ctd-decoder's filepath.Walk) as an
// unencrypted private key. Errors name the file: a symbolic link (ctd-decoder refuses them too),
// an unreadable file, or a file that is not an unencrypted RSA/EC private key (a password-protected
// key is refused, as ctd-decoder refuses it). x.509 certificates and GPG key rings, which
// ctd-decoder also takes from the directory (for PKCS#7 and OpenPGP, not JWE), are skipped.
// NotFound if `dir` does not exist. Files are visited in name order: key order is deterministic.
Result<std::vector<keywrap::PrivateKey>> LoadDecryptionKeysDir(const std::filesystem::path& dir);

// Password files for password-protected node keys: key file (lexically normal path, as found under
// the directory) → file holding its password (one trailing newline is dropped).
using KeyPasswordFiles = std::map<std::filesystem::path, std::filesystem::path>;
// As above, but a key named in `passwords` is decrypted with that password (errors name the key:
// PermissionDenied for a wrong password, or for a password file that is group/world-accessible or
// owned by another user), and, when `warnings` is given, an encrypted key without a password is
// skipped with a warning naming the file instead of failing the whole directory. (ctd-decoder and
// containerd's CRI fail the whole directory on an encrypted key; the snapshotter uses this form.)
Result<std::vector<keywrap::PrivateKey>> LoadDecryptionKeysDir(const std::filesystem::path& dir,
                                                               const KeyPasswordFiles& passwords,
                                                               std::vector<std::string>* warnings);
// A key password file's contents in wiped memory, after the ownership/mode check above.
Result<crypto::SecureBuffer> ReadKeyPasswordFile(const std::filesystem::path& path);

// The payload's private keys, named "payload key 1", ... in messages.
Result<std::vector<keywrap::PrivateKey>> LoadPayloadKeys(const StreamPayload& payload);

struct DecodeRequest {
  // STREAM_PROCESSOR_MEDIATYPE; empty = take the payload descriptor's media type.
  std::string media_type;
  // The payload from fd 3; required (the descriptor carries the wrapped keys).
  std::optional<StreamPayload> payload;
  int threads = 0;  // chunk-opening threads; 0 = one per core
};

struct DecodeResult {
  std::string output_media_type;  // what was written to `out`
  std::string key_name;           // the private key that unwrapped the layer key
  std::optional<crypto::Sha256Digest> diff_id;  // lazycrypt: the verified diff_id
};

// Decodes `in` into `out` with `keys`. Errors are prefixed "layer <digest>: " when the digest is
// known and name the problem: no payload (with the reason containerd sends none), media type
// mismatch or unsupported, NotFound "none of the keys [...] is a recipient", AuthFailed for a
// tampered chunk/TOC/header or a wrong key, Corruption for a truncated or malformed blob.
// On error, what was written to `out` must be discarded (containerd does, on the non-zero exit).
Result<DecodeResult> Decode(const DecodeRequest& request,
                            const keywrap::KeyRing& keys, InputStream& in,
                            OutputStream& out);

}  // namespace lazycrypt::decoder
