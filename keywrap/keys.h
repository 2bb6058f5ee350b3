// The asymmetric keys of the ocicrypt JWE scheme: the public keys layers are wrapped for and the
// private keys that unwrap them. RSA (at least 1024 bits) and EC on P-256, P-384 and P-521, the
// key types ocicrypt's JWE key wrapper handles. Both are move-only owners of an OpenSSL EVP_PKEY;
// both are immutable after loading, so const methods may be called from several threads.
#pragma once

#include <openssl/types.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/file_io.h"
#include "common/io.h"
#include "common/status.h"
#include "crypto/secure_buffer.h"

namespace lazycrypt::keywrap {

enum class KeyKind { kRsa, kEc };

namespace detail {
struct EvpPkeyFree {
  void operator()(EVP_PKEY* key) const;
};
using OwnedEvpPkey = std::unique_ptr<EVP_PKEY, EvpPkeyFree>;

// What a loaded key is; shared by PublicKey and PrivateKey.
struct KeyInfo {
  KeyKind kind = KeyKind::kRsa;
  std::string curve;  // JOSE curve name ("P-256") for EC keys; empty for RSA
  int bits = 0;       // modulus size for RSA, field size for EC
  std::string name;   // a label for messages: the file path, or what the caller named the bytes
};
}  // namespace detail

// Reads a private key (or a password) file into wiped memory, refusing a file that anyone but its
// owner could read. The file is opened with O_NOFOLLOW (a symbolic link as the last component is
// refused, never followed) and every check is made on the opened descriptor (fstat), so nothing
// can be swapped in between a check and the read. Errors name the file and the reason:
//   InvalidArgument "<path>: is a symbolic link; key files must be regular files (...)"
//   InvalidArgument "<path>: not a regular file"
//   PermissionDenied "<path>: mode 0644 lets group or others read a private key (chmod 600 ...)"
//   PermissionDenied "<path>: owned by uid N; key files must belong to this user (uid M) or root"
//   InvalidArgument "<path>: N bytes is too large for a key file" (over 1 MiB)
//   NotFound / PermissionDenied / IoError from open(2), naming the file.
Result<crypto::SecureBuffer> ReadPrivateKeyFile(const std::filesystem::path& path);
// For key directories, which may also hold public x.509 certificates: `name` inside the
// directory open as `dir_fd` (openat with O_NOFOLLOW), with every check above except the mode
// one, which the caller applies (CheckPrivateKeyMode) to what turns out to be a private key.
// `display_path` names the file in messages.
struct KeyFileContents {
  crypto::SecureBuffer bytes;
  unsigned mode = 0;  // st_mode of the opened file
};
Result<KeyFileContents> ReadKeyDirEntryAt(int dir_fd, const std::string& name,
                                          const std::filesystem::path& display_path);
// PermissionDenied "<path>: mode 0644 lets group or others read a private key (chmod 600 ...)"
// when `mode` gives group or others any access.
Status CheckPrivateKeyMode(unsigned mode, const std::filesystem::path& display_path);
// The same checks on a file the caller opened (with O_NOFOLLOW); takes ownership of `fd`.
Result<crypto::SecureBuffer> ReadOpenedPrivateKeyFile(UniqueFd fd,
                                                      const std::filesystem::path& display_path);
// Names that key-distribution tools use for files on their way in, which a key directory reader
// skips: hidden names (".k8s-node.pem.tmp" of deploy/kubernetes/node-keys.yaml, Kubernetes'
// "..data" and "..2026_..." entries), editor backups ("~" suffix, ".swp"), ".tmp", and dpkg's
// ".dpkg-new"/".dpkg-old"/".dpkg-dist"/".dpkg-tmp"...
bool IsTemporaryKeyFileName(std::string_view name);

class PublicKey {
 public:
  // Reads a public key file: PEM SubjectPublicKeyInfo ("PUBLIC KEY"), PEM PKCS#1 ("RSA PUBLIC
  // KEY"), or DER SubjectPublicKeyInfo. Messages name the file.
  static Result<PublicKey> Load(const std::filesystem::path& path);
  // Same formats from memory; `name` labels the key in messages.
  static Result<PublicKey> Parse(ByteSpan bytes, std::string_view name = "public key");

  KeyKind kind() const { return info_.kind; }
  const std::string& curve() const { return info_.curve; }
  int bits() const { return info_.bits; }
  const std::string& name() const { return info_.name; }
  // Borrowed; valid while this PublicKey lives. For OpenSSL calls inside lazycrypt.
  EVP_PKEY* evp_pkey() const { return key_.get(); }
  // Another owner of the same immutable key (EVP_PKEY_up_ref).
  PublicKey Share() const;

 private:
  friend class PrivateKey;
  PublicKey(detail::OwnedEvpPkey key, detail::KeyInfo info)
      : key_(std::move(key)), info_(std::move(info)) {}
  detail::OwnedEvpPkey key_;
  detail::KeyInfo info_;
};

class PrivateKey {
 public:
  // Loads a key named the way ocicrypt (and so skopeo's --decryption-key and containerd's
  // imgcrypt) names one, from helpers/parse_helpers.go: the spec is split at every ':'; with
  // exactly two parts the second is the password, otherwise the first part is the file and there
  // is no password. The password part is read as ocicrypt does:
  //   file=<path>  the whole file (a trailing newline is part of the password, as in ocicrypt)
  //   pass=<text>  the text
  //   fd=<n>       up to 64 bytes from one read(2) of descriptor n, which is then closed
  //   <text>       the text itself
  // Password copies lazycrypt makes are wiped after use; `path_spec` itself belongs to the caller.
  static Result<PrivateKey> Load(std::string_view path_spec);
  // Reads one file, with an optional password (an empty password is a password).
  static Result<PrivateKey> LoadFile(const std::filesystem::path& path,
                                     std::optional<ByteSpan> password);
  // PEM or DER: PKCS#1 RSA, PKCS#8 (plain or encrypted), SEC1 EC, and legacy PEM encryption
  // ("Proc-Type: 4,ENCRYPTED"). `name` labels the key in messages. Errors:
  //   InvalidArgument "<name>: encrypted private key needs a password (use <name>:password)"
  //   PermissionDenied "<name>: wrong password for encrypted private key"
  //   InvalidArgument "<name>: not a private key (PEM or DER; PKCS#1, PKCS#8, SEC1)"
  //   Unsupported "<name>: ED25519 keys are not supported (RSA or EC P-256/P-384/P-521)"
  static Result<PrivateKey> Parse(ByteSpan bytes, std::optional<ByteSpan> password,
                                  std::string_view name = "private key");

  // The matching public key (a separate EVP_PKEY without the private part).
  Result<PublicKey> Public() const;
  // Another owner of the same immutable key (EVP_PKEY_up_ref): no key bytes are copied.
  PrivateKey Share() const;

  KeyKind kind() const { return info_.kind; }
  const std::string& curve() const { return info_.curve; }
  int bits() const { return info_.bits; }
  const std::string& name() const { return info_.name; }
  // Borrowed; valid while this PrivateKey lives. For OpenSSL calls inside lazycrypt.
  EVP_PKEY* evp_pkey() const { return key_.get(); }

 private:
  PrivateKey(detail::OwnedEvpPkey key, detail::KeyInfo info)
      : key_(std::move(key)), info_(std::move(info)) {}
  detail::OwnedEvpPkey key_;
  detail::KeyInfo info_;
};

}  // namespace lazycrypt::keywrap
