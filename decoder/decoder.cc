#include "decoder/decoder.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <cstdio>
#include <cstring>
#include <functional>
#include <system_error>

#include "common/file_io.h"
#include "crypto/secure_buffer.h"
#include "format/decrypt.h"
#include "format/layout.h"
#include "image/envelope.h"
#include "image/layer.h"
#include "image/oci.h"

namespace lazycrypt::decoder {
namespace {

namespace fs = std::filesystem;

// Subdirectories deeper than this under a key directory are refused (a loop guard; key
// directories are flat or one level deep in practice).
constexpr int kMaxKeyDirDepth = 16;

Status SymlinkRefused(const fs::path& path) {
  return Status::InvalidArgument(
      path.string() +
      ": symbolic links are not supported in decryption keys paths (as with ctd-decoder); a "
      "Kubernetes Secret volume presents keys as symbolic links: copy them into the directory "
      "with mode 0600 instead, as deploy/kubernetes/node-keys.yaml does");
}

// A file found in a key directory: the directory it is in (open) and its name there.
using KeyFileVisitor = std::function<Status(int dir_fd, const std::string& name,
                                            const fs::path& path)>;

// Visits the regular files under the directory open as `dir_fd`, in fs::path order (names sorted
// per directory, depth first), without following any symbolic link: each entry is classified
// with fstatat(AT_SYMLINK_NOFOLLOW) and opened relative to its directory with O_NOFOLLOW, so
// nothing outside the tree is reached whatever is renamed meanwhile. Skips the names key
// distribution tools use for files in transit (keywrap::IsTemporaryKeyFileName) and anything
// that is neither a directory nor a regular file (sockets, FIFOs); refuses symbolic links.
Status WalkKeyDir(int dir_fd, const fs::path& path, int depth, const KeyFileVisitor& visit) {
  if (depth > kMaxKeyDirDepth) {
    return Status::InvalidArgument(path.string() + ": key directories nested deeper than " +
                                   std::to_string(kMaxKeyDirDepth) + " levels");
  }
  std::vector<std::string> names;
  {
    const int listing_fd = ::dup(dir_fd);  // closedir closes it; dir_fd stays ours
    if (listing_fd < 0) return ErrnoStatus("reading decryption keys path " + path.string());
    DIR* listing = ::fdopendir(listing_fd);
    if (listing == nullptr) {
      ::close(listing_fd);
      return ErrnoStatus("reading decryption keys path " + path.string());
    }
    errno = 0;
    while (const dirent* e = ::readdir(listing)) {
      const std::string name = e->d_name;
      if (name != "." && name != ".." && !keywrap::IsTemporaryKeyFileName(name)) {
        names.push_back(name);
      }
      errno = 0;
    }
    const int read_errno = errno;
    ::closedir(listing);
    if (read_errno != 0) {
      errno = read_errno;
      return ErrnoStatus("reading decryption keys path " + path.string());
    }
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const fs::path child = path / name;
    struct stat st {};
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;  // removed since the listing (a key being replaced)
      return ErrnoStatus(child.string());
    }
    if (S_ISLNK(st.st_mode)) return SymlinkRefused(child);
    if (S_ISDIR(st.st_mode)) {
      UniqueFd sub(::openat(dir_fd, name.c_str(),
                            O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub.valid()) {
        if (errno == ELOOP || errno == ENOTDIR) return SymlinkRefused(child);
        return ErrnoStatus(child.string());
      }
      LC_RETURN_IF_ERROR(WalkKeyDir(sub.get(), child, depth + 1, visit));
      continue;
    }
    if (S_ISREG(st.st_mode)) LC_RETURN_IF_ERROR(visit(dir_fd, name, child));
  }
  return Status::Ok();
}

// ctd-decoder (ocicrypt's SortDecryptionKeys) also accepts x.509 certificates (for PKCS#7) and
// GPG private key rings (for OpenPGP) in the keys directory. Neither can unwrap a JWE, so they
// are skipped rather than refused; anything else that is not a private key is an error there too.
bool IsCertificateOrGpgKeyring(ByteSpan bytes) {
  if (bytes.empty()) return false;
  // OpenPGP secret-key packet (tag 5), old format (0b10 0101 xx) or new format (0xC5).
  const uint8_t first = bytes[0];
  if ((first & 0xfc) == 0x94 || first == 0xc5) return true;
  const unsigned char* p = bytes.data();
  if (X509* cert = d2i_X509(nullptr, &p, static_cast<long>(bytes.size()))) {
    X509_free(cert);
    return true;
  }
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())), &BIO_free);
  if (!bio) return false;
  if (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    X509_free(cert);
    return true;
  }
  ERR_clear_error();
  return false;
}

// Replays the first kBlobHeaderSize bytes (read ahead to check the key commitment against
// pubopts before anything is decrypted) and then reads through.
class HeaderPeekStream final : public InputStream {
 public:
  HeaderPeekStream(InputStream& inner, format::BlobHeaderBytes header)
      : inner_(inner), header_(header) {}
  Result<size_t> Read(MutableByteSpan out) override {
    if (pos_ < header_.size()) {
      size_t n = std::min(out.size(), header_.size() - pos_);
      std::memcpy(out.data(), header_.data() + pos_, n);
      pos_ += n;
      return n;
    }
    return inner_.Read(out);
  }

 private:
  InputStream& inner_;
  format::BlobHeaderBytes header_;
  size_t pos_ = 0;
};

bool IsOcicryptLayerType(std::string_view mt) {
  return mt == image::kMediaTypeOcicryptLayerTar || mt == image::kMediaTypeOcicryptLayerTarGzip ||
         mt == image::kMediaTypeOcicryptLayerTarZstd;
}

Result<DecodeResult> DecodeLazycrypt(const image::Descriptor& descriptor, int threads,
                                     const keywrap::KeyRing& keys,
                                     InputStream& in, OutputStream& out) {
  // Unwrap first: a missing key fails before a byte of the blob is read.
  LC_ASSIGN_OR_RETURN(image::LazycryptLayerSecret secret,
                      image::UnwrapLazycryptLayer(descriptor, keys));
  format::BlobHeaderBytes header_bytes{};
  LC_RETURN_IF_ERROR(ReadFull(in, header_bytes, "blob header"));
  LC_ASSIGN_OR_RETURN(format::BlobHeader header, format::ParseBlobHeader(header_bytes));
  if (CRYPTO_memcmp(header.commitment.data(), secret.commitment.data(),
                    secret.commitment.size()) != 0) {
    return Status::AuthFailed(
        "the blob's key commitment differs from the one published in "
        "org.opencontainers.image.enc.pubopts (blob and annotations do not belong together)");
  }
  HeaderPeekStream blob(in, header_bytes);
  format::DecryptOptions options;
  options.output = format::DecryptOutput::kTarZstd;
  options.threads = threads;
  LC_ASSIGN_OR_RETURN(crypto::Sha256Digest diff_id,
                      format::DecryptLayerStream(blob, secret.key, secret.toc_digest, out, options));
  DecodeResult result;
  result.output_media_type = std::string(image::kMediaTypeOciLayerTarZstd);
  result.key_name = secret.key_name;
  result.diff_id = diff_id;
  return result;
}

}  // namespace

Result<crypto::SecureBuffer> ReadKeyPasswordFile(const fs::path& path) {
  auto read = keywrap::ReadPrivateKeyFile(path);
  if (!read.ok()) return read.status().WithContext("key password file");
  crypto::SecureBuffer& bytes = *read;
  size_t n = bytes.size();
  if (n > 0 && bytes.data()[n - 1] == '\n') --n;
  if (n > 0 && bytes.data()[n - 1] == '\r') --n;
  return crypto::SecureBuffer(bytes.span().subspan(0, n));
}

Result<std::vector<keywrap::PrivateKey>> LoadDecryptionKeysDir(const fs::path& dir) {
  return LoadDecryptionKeysDir(dir, {}, nullptr);
}

Result<std::vector<keywrap::PrivateKey>> LoadDecryptionKeysDir(const fs::path& dir,
                                                               const KeyPasswordFiles& passwords,
                                                               std::vector<std::string>* warnings) {
  UniqueFd top(::open(dir.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY));
  if (!top.valid()) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return Status::NotFound("decryption keys path " + dir.string() + " does not exist");
    }
    if (errno == ELOOP) return SymlinkRefused(dir);
    return ErrnoStatus("decryption keys path " + dir.string());
  }
  std::vector<keywrap::PrivateKey> keys;
  auto load = [&](const fs::path& file, crypto::SecureBuffer bytes) -> Status {
    auto password_file = passwords.find(file.lexically_normal());
    if (password_file != passwords.end()) {
      LC_ASSIGN_OR_RETURN(crypto::SecureBuffer password,
                          ReadKeyPasswordFile(password_file->second));
      auto key = keywrap::PrivateKey::Parse(bytes.span(), password.span(), file.string());
      if (!key.ok()) return key.status().WithContext("decryption keys path");
      keys.push_back(std::move(*key));
      return Status::Ok();
    }
    auto key = keywrap::PrivateKey::Parse(bytes.span(), std::nullopt, file.string());
    if (!key.ok() && IsCertificateOrGpgKeyring(bytes.span())) return Status::Ok();
    if (!key.ok() && warnings != nullptr &&
        key.status().message().find("needs a password") != std::string::npos) {
      warnings->push_back(file.string() +
                          ": encrypted private key without a configured password; skipped (name "
                          "its password file in [keys.passwords])");
      return Status::Ok();
    }
    if (!key.ok()) {
      return Status(key.status().code(),
                    "decryption keys path: " + key.status().message() +
                        " (keys in the directory must be unencrypted, as ctd-decoder reads them)");
    }
    keys.push_back(std::move(*key));
    return Status::Ok();
  };
  struct stat st {};
  if (::fstat(top.get(), &st) != 0) return ErrnoStatus("decryption keys path " + dir.string());
  if (S_ISDIR(st.st_mode)) {
    LC_RETURN_IF_ERROR(WalkKeyDir(
        top.get(), dir, 0, [&](int dir_fd, const std::string& name, const fs::path& file) {
          LC_ASSIGN_OR_RETURN(keywrap::KeyFileContents read,
                              keywrap::ReadKeyDirEntryAt(dir_fd, name, file));
          // Certificates are public and may be readable by all; anything else must not be.
          if (IsCertificateOrGpgKeyring(read.bytes.span())) return Status::Ok();
          LC_RETURN_IF_ERROR(keywrap::CheckPrivateKeyMode(read.mode, file));
          return load(file, std::move(read.bytes));
        }));
  } else if (S_ISREG(st.st_mode)) {
    // filepath.Walk on a file visits the file; the checks run on the descriptor opened above.
    LC_ASSIGN_OR_RETURN(crypto::SecureBuffer bytes,
                        keywrap::ReadOpenedPrivateKeyFile(std::move(top), dir));
    LC_RETURN_IF_ERROR(load(dir, std::move(bytes)));
  } else {
    return Status::InvalidArgument("decryption keys path " + dir.string() +
                                   " is neither a directory nor a regular file");
  }
  return keys;
}

Result<std::vector<keywrap::PrivateKey>> LoadPayloadKeys(const StreamPayload& payload) {
  std::vector<keywrap::PrivateKey> keys;
  for (size_t i = 0; i < payload.private_keys.size(); ++i) {
    const PayloadPrivateKey& p = payload.private_keys[i];
    std::optional<ByteSpan> password;
    if (p.password) password = p.password->span();
    LC_ASSIGN_OR_RETURN(keywrap::PrivateKey key,
                        keywrap::PrivateKey::Parse(p.key_bytes.span(), password,
                                                   "payload key " + std::to_string(i + 1)));
    keys.push_back(std::move(key));
  }
  return keys;
}

Result<DecodeResult> Decode(const DecodeRequest& request,
                            const keywrap::KeyRing& keys, InputStream& in,
                            OutputStream& out) {
  if (!request.payload) {
    return Status::FailedPrecondition(
        "no payload on fd 3, so the layer descriptor (with its wrapped keys) is unknown: "
        "containerd passes one only to a stream processor named " +
        std::string(kPayloadToolIdTarGzip) + " or " + std::string(kPayloadToolIdTar) +
        ", and only when pulling through CRI (image_decryption.key_model = \"node\") or "
        "imgcrypt's ctr-enc; see deploy/containerd/stream-processor.toml");
  }
  const image::Descriptor& descriptor = request.payload->descriptor;
  const std::string prefix = "layer " + descriptor.digest + ": ";
  std::string media_type = request.media_type.empty() ? descriptor.media_type
                                                      : request.media_type;
  if (media_type != descriptor.media_type) {
    return Status::InvalidArgument(prefix + std::string(kMediaTypeEnvVar) + " is \"" +
                                   media_type + "\" but the payload's descriptor says \"" +
                                   descriptor.media_type + "\"");
  }
  if (keys.empty()) {
    return Status::NotFound(prefix + "no decryption keys (give --decryption-keys-path DIR with "
                                     "the node's private keys, or keys in the payload)");
  }
  if (media_type == image::kMediaTypeLazycryptLayer) {
    auto result = DecodeLazycrypt(descriptor, request.threads, keys, in, out);
    if (!result.ok()) {
      return Status(result.status().code(), prefix + result.status().message());
    }
    return result;
  }
  if (IsOcicryptLayerType(media_type)) {
    auto result = image::DecryptOcicryptLayer(in, descriptor, out, keys);
    if (!result.ok()) {
      return Status(result.status().code(), prefix + result.status().message());
    }
    DecodeResult decoded;
    decoded.output_media_type = result->original.media_type;
    decoded.key_name = result->key_name;
    return decoded;
  }
  return Status::Unsupported(prefix + "media type \"" + media_type +
                             "\" is neither lazycrypt's (" +
                             std::string(image::kMediaTypeLazycryptLayer) +
                             ") nor an ocicrypt layer type");
}

}  // namespace lazycrypt::decoder
