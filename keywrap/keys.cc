#include "keywrap/keys.h"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common/file_io.h"
#include "crypto/secure_buffer.h"
#include "keywrap/openssl_util.h"

namespace lazycrypt::keywrap {

void detail::EvpPkeyFree::operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }

namespace {

using crypto::SecureBuffer;
using detail::KeyInfo;
using detail::OwnedEvpPkey;

// Key files are small; anything bigger is not a key and is not read into memory.
constexpr uint64_t kMaxKeyFileBytes = 1 << 20;
// ocicrypt reads at most this much from a password descriptor (processPwdString).
constexpr size_t kMaxFdPasswordBytes = 64;

struct DecoderCtxFree {
  void operator()(OSSL_DECODER_CTX* ctx) const { OSSL_DECODER_CTX_free(ctx); }
};
using DecoderCtxPtr = std::unique_ptr<OSSL_DECODER_CTX, DecoderCtxFree>;

// Hands the password (if any) to OpenSSL and records whether OpenSSL asked for one, which is how
// "needs a password" is told apart from "not a key".
struct PassphraseState {
  std::optional<ByteSpan> password;
  bool asked = false;
};

int PassphraseCallback(char* pass, size_t pass_size, size_t* pass_len, const OSSL_PARAM[],
                       void* arg) {
  auto* state = static_cast<PassphraseState*>(arg);
  state->asked = true;
  if (!state->password || state->password->size() > pass_size) return 0;
  if (!state->password->empty()) {
    std::memcpy(pass, state->password->data(), state->password->size());
  }
  *pass_len = state->password->size();
  return 1;
}

// Decodes PEM or DER (auto-detected) restricted to `selection` and, if given, one structure.
// Returns null (and clears OpenSSL's queue) if nothing decodes.
OwnedEvpPkey DecodeKey(ByteSpan bytes, int selection, const char* keytype, const char* structure,
                       PassphraseState* passphrase) {
  EVP_PKEY* raw = nullptr;
  DecoderCtxPtr ctx(OSSL_DECODER_CTX_new_for_pkey(&raw, nullptr, structure, keytype, selection,
                                                  nullptr, nullptr));
  if (!ctx) {
    internal::ClearOpenSslErrors();
    return nullptr;
  }
  PassphraseState no_password;
  OSSL_DECODER_CTX_set_passphrase_cb(ctx.get(), PassphraseCallback,
                                     passphrase != nullptr ? passphrase : &no_password);
  const unsigned char* data = bytes.data();
  size_t length = bytes.size();
  int ok = OSSL_DECODER_from_data(ctx.get(), &data, &length);
  OwnedEvpPkey key(raw);
  internal::ClearOpenSslErrors();
  if (ok != 1) return nullptr;
  return key;
}

Result<KeyInfo> Describe(EVP_PKEY* key, std::string_view name) {
  KeyInfo info;
  info.name = std::string(name);
  if (EVP_PKEY_is_a(key, "RSA")) {
    info.kind = KeyKind::kRsa;
    info.bits = EVP_PKEY_get_bits(key);
    if (info.bits < 1024) {
      return Status::Unsupported(info.name + ": RSA key of " + std::to_string(info.bits) +
                                 " bits is too small (at least 1024)");
    }
    return info;
  }
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[80] = {0};
    size_t group_len = 0;
    if (EVP_PKEY_get_group_name(key, group, sizeof group, &group_len) != 1) {
      internal::ClearOpenSslErrors();
      return Status::Unsupported(info.name +
                                 ": EC key with explicit curve parameters is not supported "
                                 "(use a named curve: P-256, P-384 or P-521)");
    }
    std::string_view g(group, group_len);
    if (g == "prime256v1" || g == "P-256") {
      info.curve = "P-256";
    } else if (g == "secp384r1" || g == "P-384") {
      info.curve = "P-384";
    } else if (g == "secp521r1" || g == "P-521") {
      info.curve = "P-521";
    } else {
      return Status::Unsupported(info.name + ": EC curve " + std::string(g) +
                                 " is not supported (P-256, P-384 or P-521)");
    }
    info.kind = KeyKind::kEc;
    info.bits = EVP_PKEY_get_bits(key);
    return info;
  }
  const char* type = EVP_PKEY_get0_type_name(key);
  return Status::Unsupported(info.name + ": " + (type != nullptr ? type : "this kind of") +
                             " keys are not supported (RSA or EC P-256/P-384/P-521)");
}

bool HasPrivatePart(EVP_PKEY* key) {
  BIGNUM* raw = nullptr;
  const char* param = EVP_PKEY_is_a(key, "RSA") ? OSSL_PKEY_PARAM_RSA_D : OSSL_PKEY_PARAM_PRIV_KEY;
  int ok = EVP_PKEY_get_bn_param(key, param, &raw);
  internal::BignumPtr owned(raw);
  internal::ClearOpenSslErrors();
  return ok == 1 && raw != nullptr;
}

std::string OctalMode(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

// Checks the opened file and reads it whole into wiped memory; the mode check only when
// `check_mode` (the caller checks it otherwise, from *mode).
Result<SecureBuffer> ReadCheckedSecret(UniqueFd fd, const std::filesystem::path& path,
                                       bool check_mode = true, unsigned* mode = nullptr) {
  const std::string p = path.string();
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(p);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(p + ": not a regular file");
  const uid_t euid = ::geteuid();
  if (st.st_uid != euid && st.st_uid != 0) {
    return Status::PermissionDenied(p + ": owned by uid " + std::to_string(st.st_uid) +
                                    "; key files must belong to this user (uid " +
                                    std::to_string(euid) + ") or root");
  }
  if (check_mode) LC_RETURN_IF_ERROR(CheckPrivateKeyMode(st.st_mode, path));
  if (mode != nullptr) *mode = st.st_mode;
  if (static_cast<uint64_t>(st.st_size) > kMaxKeyFileBytes) {
    return Status::InvalidArgument(p + ": " + std::to_string(st.st_size) +
                                   " bytes is too large for a key file");
  }
  SecureBuffer buffer(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < buffer.size()) {
    ssize_t n = ::read(fd.get(), buffer.data() + done, buffer.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(p);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done != buffer.size()) return SecureBuffer(buffer.span().first(done));
  return buffer;
}

// O_NOFOLLOW makes open fail with ELOOP on a symbolic link; O_NONBLOCK keeps a FIFO planted in
// place of a key from blocking the open (fstat then refuses it).
constexpr int kSecretOpenFlags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK;

Status OpenFailure(const std::filesystem::path& path) {
  if (errno == ELOOP) {
    return Status::InvalidArgument(path.string() +
                                   ": is a symbolic link; key files must be regular files (copy "
                                   "the key into place with mode 0600 instead of linking it)");
  }
  return ErrnoStatus(path.string());
}

Result<SecureBuffer> ReadSecretFile(const std::filesystem::path& path) {
  return ReadPrivateKeyFile(path);
}

// ocicrypt's processPwdString.
Result<SecureBuffer> ReadPassword(std::string_view spec) {
  auto bytes = [](std::string_view s) { return SecureBuffer(AsBytes(s)); };
  if (spec.starts_with("file=")) {
    return ReadSecretFile(std::filesystem::path(std::string(spec.substr(5))));
  }
  if (spec.starts_with("pass=")) return bytes(spec.substr(5));
  if (spec.starts_with("fd=")) {
    std::string_view number = spec.substr(3);
    int fd = -1;
    auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), fd);
    if (ec != std::errc() || end != number.data() + number.size() || fd < 0) {
      return Status::InvalidArgument("could not parse password file descriptor '" +
                                     std::string(number) + "'");
    }
    UniqueFd owned(fd);  // ocicrypt closes the descriptor after reading it
    SecureBuffer buffer(kMaxFdPasswordBytes);
    ssize_t n;
    do {
      n = ::read(owned.get(), buffer.data(), buffer.size());
    } while (n < 0 && errno == EINTR);
    if (n < 0) return ErrnoStatus("reading password from descriptor " + std::to_string(fd));
    return SecureBuffer(buffer.span().first(static_cast<size_t>(n)));
  }
  return bytes(spec);
}

}  // namespace

Result<crypto::SecureBuffer> ReadPrivateKeyFile(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), kSecretOpenFlags));
  if (!fd.valid()) return OpenFailure(path);
  return ReadCheckedSecret(std::move(fd), path);
}

Result<KeyFileContents> ReadKeyDirEntryAt(int dir_fd, const std::string& name,
                                          const std::filesystem::path& display_path) {
  UniqueFd fd(::openat(dir_fd, name.c_str(), kSecretOpenFlags));
  if (!fd.valid()) return OpenFailure(display_path);
  KeyFileContents out;
  LC_ASSIGN_OR_RETURN(out.bytes,
                      ReadCheckedSecret(std::move(fd), display_path, /*check_mode=*/false,
                                        &out.mode));
  return out;
}

Status CheckPrivateKeyMode(unsigned mode, const std::filesystem::path& display_path) {
  if ((mode & 0077) == 0) return Status::Ok();
  const std::string p = display_path.string();
  return Status::PermissionDenied(p + ": mode " + OctalMode(mode) +
                                  " lets group or others read a private key (chmod 600 " + p +
                                  ")");
}

Result<crypto::SecureBuffer> ReadOpenedPrivateKeyFile(UniqueFd fd,
                                                      const std::filesystem::path& display_path) {
  return ReadCheckedSecret(std::move(fd), display_path);
}

bool IsTemporaryKeyFileName(std::string_view name) {
  if (name.empty() || name.front() == '.' || name.back() == '~') return true;
  for (std::string_view suffix : {".tmp", ".swp", ".swx"}) {
    if (name.ends_with(suffix)) return true;
  }
  return name.find(".dpkg-") != std::string_view::npos ||
         name.find(".ucf-") != std::string_view::npos;
}

Result<PublicKey> PublicKey::Load(const std::filesystem::path& path) {
  auto bytes = ReadFileBytes(path);
  if (!bytes.ok()) return bytes.status();
  return Parse(*bytes, path.string());
}

Result<PublicKey> PublicKey::Parse(ByteSpan bytes, std::string_view name) {
  OwnedEvpPkey key =
      DecodeKey(bytes, EVP_PKEY_PUBLIC_KEY, nullptr, "SubjectPublicKeyInfo", nullptr);
  if (!key) {
    // PKCS#1 RSAPublicKey ("RSA PUBLIC KEY"): OpenSSL calls this the RSA "type-specific" form.
    key = DecodeKey(bytes, EVP_PKEY_PUBLIC_KEY, "RSA", "type-specific", nullptr);
  }
  if (!key) {
    PassphraseState probe;
    bool is_private =
        DecodeKey(bytes, EVP_PKEY_KEYPAIR, nullptr, nullptr, &probe) != nullptr || probe.asked;
    return Status::InvalidArgument(
        std::string(name) +
        (is_private ? ": is a private key; a public key is needed here"
                    : ": not a public key (PEM or DER SubjectPublicKeyInfo, or PEM PKCS#1 "
                      "RSA PUBLIC KEY)"));
  }
  LC_ASSIGN_OR_RETURN(KeyInfo info, Describe(key.get(), name));
  return PublicKey(std::move(key), std::move(info));
}

Result<PrivateKey> PrivateKey::Load(std::string_view path_spec) {
  // strings.Split(spec, ":") in ocicrypt: a password only when there are exactly two parts.
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t colon = path_spec.find(':', start);
    parts.push_back(
        path_spec.substr(start, colon == std::string_view::npos ? colon : colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  std::optional<SecureBuffer> password;
  if (parts.size() == 2) {
    auto read = ReadPassword(parts[1]);
    if (!read.ok()) return read.status().WithContext(std::string(parts[0]) + ": password");
    password = std::move(*read);
  }
  std::optional<ByteSpan> password_bytes;
  if (password) password_bytes = password->span();
  return LoadFile(std::filesystem::path(std::string(parts[0])), password_bytes);
}

Result<PrivateKey> PrivateKey::LoadFile(const std::filesystem::path& path,
                                        std::optional<ByteSpan> password) {
  UniqueFd fd(::open(path.c_str(), kSecretOpenFlags));
  if (!fd.valid()) return OpenFailure(path);
  unsigned mode = 0;
  LC_ASSIGN_OR_RETURN(SecureBuffer bytes,
                      ReadCheckedSecret(std::move(fd), path, /*check_mode=*/false, &mode));
  auto key = Parse(bytes.span(), password, path.string());
  // An exposed private key is refused whether or not it decodes (encrypted, wrong password);
  // a public key or a file that is no key at all gets the message that says so instead.
  if ((mode & 0077) != 0 &&
      (key.ok() || key.status().message().find("password") != std::string::npos)) {
    return CheckPrivateKeyMode(mode, path);
  }
  return key;
}

Result<PrivateKey> PrivateKey::Parse(ByteSpan bytes, std::optional<ByteSpan> password,
                                     std::string_view name) {
  PassphraseState passphrase;
  passphrase.password = password;
  OwnedEvpPkey key = DecodeKey(bytes, EVP_PKEY_KEYPAIR, nullptr, nullptr, &passphrase);
  if (!key) {
    std::string n(name);
    if (passphrase.asked && !password) {
      return Status::InvalidArgument(n + ": encrypted private key needs a password (use " + n +
                                     ":password)");
    }
    if (passphrase.asked) {
      return Status::PermissionDenied(n + ": wrong password for encrypted private key");
    }
    bool is_public = DecodeKey(bytes, EVP_PKEY_PUBLIC_KEY, nullptr, nullptr, nullptr) != nullptr;
    return Status::InvalidArgument(
        n + (is_public ? ": is a public key; a private key is needed here"
                       : ": not a private key (PEM or DER; PKCS#1, PKCS#8, SEC1)"));
  }
  LC_ASSIGN_OR_RETURN(KeyInfo info, Describe(key.get(), name));
  if (!HasPrivatePart(key.get())) {
    return Status::InvalidArgument(std::string(name) +
                                   ": is a public key; a private key is needed here");
  }
  return PrivateKey(std::move(key), std::move(info));
}

Result<PublicKey> PrivateKey::Public() const {
  unsigned char* der = nullptr;
  int length = i2d_PUBKEY(key_.get(), &der);
  if (length <= 0) return internal::OpenSslError(info_.name + ": encoding the public key");
  const unsigned char* cursor = der;
  OwnedEvpPkey pub(d2i_PUBKEY(nullptr, &cursor, length));
  OPENSSL_free(der);
  if (!pub) return internal::OpenSslError(info_.name + ": decoding the public key");
  return PublicKey(std::move(pub), info_);
}

}  // namespace lazycrypt::keywrap

namespace lazycrypt::keywrap {

PublicKey PublicKey::Share() const {
  EVP_PKEY_up_ref(key_.get());
  return PublicKey(detail::OwnedEvpPkey(key_.get()), info_);
}

PrivateKey PrivateKey::Share() const {
  EVP_PKEY_up_ref(key_.get());
  return PrivateKey(detail::OwnedEvpPkey(key_.get()), info_);
}

}  // namespace lazycrypt::keywrap
