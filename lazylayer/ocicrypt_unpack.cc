#include "lazylayer/ocicrypt_unpack.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <memory>
#include <vector>

#include "common/file_io.h"
#include "common/io.h"
#include "compress/compress.h"
#include "crypto/digest.h"
#include "image/layer.h"

namespace lazycrypt::lazylayer {
namespace {

int64_t MillisSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

// Counts what is written and drops it (the verification pass).
class DiscardOutputStream final : public OutputStream {
 public:
  Status Write(ByteSpan data) override {
    bytes_ += data.size();
    return Status::Ok();
  }
  Status Close() override { return Status::Ok(); }
  uint64_t bytes() const { return bytes_; }

 private:
  uint64_t bytes_ = 0;
};

// Passes reads through and hashes them (the diff_id of the tar stream).
class HashingInputStream final : public InputStream {
 public:
  explicit HashingInputStream(InputStream& in) : in_(in) {}
  Result<size_t> Read(MutableByteSpan out) override {
    LC_ASSIGN_OR_RETURN(size_t n, in_.Read(out));
    sha_.Update(out.first(n));
    return n;
  }
  std::string Digest() { return crypto::OciDigest(sha_.Finish()); }

 private:
  InputStream& in_;
  crypto::Sha256 sha_;
};

// An unnamed file in `dir` (O_TMPFILE: no name ever exists; a crash leaves nothing behind), or
// where the file system cannot, a named one unlinked at once.
Result<UniqueFd> OpenScratchFile(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return UniqueFd(fd);
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
    return ErrnoStatus("create a temporary file in " + dir.string());
  }
  std::string name = (dir / "lazycrypt-ocicrypt-XXXXXX").string();
  fd = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("create a temporary file in " + dir.string());
  ::unlink(name.c_str());
  ::fchmod(fd, 0600);
  return UniqueFd(fd);
}

Status Rewind(int fd) {
  if (::lseek(fd, 0, SEEK_SET) != 0) return ErrnoStatus("rewind the downloaded layer");
  return Status::Ok();
}

}  // namespace

Result<OcicryptUnpackResult> UnpackOcicryptLayer(registry::Client& client,
                                                 const registry::Reference& repo,
                                                 const image::Descriptor& layer,
                                                 const keywrap::KeyRing& keys,
                                                 const std::filesystem::path& scratch_dir,
                                                 const std::filesystem::path& target_dir) {
  OcicryptUnpackResult result;
  // 1. The key first: a node without one downloads nothing.
  LC_ASSIGN_OR_RETURN(image::OcicryptLayerCipher cipher, image::UnwrapOcicryptLayer(layer, keys));
  result.key_name = cipher.key_name;

  // 2. Ciphertext into an unnamed file; the client checks the digest as it streams.
  auto start = std::chrono::steady_clock::now();
  LC_ASSIGN_OR_RETURN(UniqueFd file, OpenScratchFile(scratch_dir));
  {
    FdOutputStream out(file.get());
    LC_RETURN_IF_ERROR(client.GetBlob(repo, layer.digest, out).WithContext("download"));
  }
  struct stat st {};
  if (::fstat(file.get(), &st) != 0) return ErrnoStatus("stat the downloaded layer");
  result.blob_bytes = static_cast<uint64_t>(st.st_size);
  if (result.blob_bytes != layer.size) {
    return Status::Corruption("the registry served " + std::to_string(result.blob_bytes) +
                              " bytes, the manifest says " + std::to_string(layer.size));
  }
  result.fetch_ms = MillisSince(start);

  // 3. Authenticate the whole blob before any of its plaintext is parsed.
  start = std::chrono::steady_clock::now();
  {
    LC_RETURN_IF_ERROR(Rewind(file.get()));
    FdInputStream in(file.get());
    LC_ASSIGN_OR_RETURN(auto plain, image::NewOcicryptDecryptingStream(in, layer, cipher));
    DiscardOutputStream discard;
    LC_RETURN_IF_ERROR(CopyStream(*plain, discard).status());
  }
  result.verify_ms = MillisSince(start);

  // 4. Decrypt again (the same checks run at the end), decompress, unpack, hash the tar.
  start = std::chrono::steady_clock::now();
  LC_RETURN_IF_ERROR(Rewind(file.get()));
  FdInputStream in(file.get());
  LC_ASSIGN_OR_RETURN(auto plain, image::NewOcicryptDecryptingStream(in, layer, cipher));
  LC_ASSIGN_OR_RETURN(auto tar_stream, compress::NewDecompressingStream(*plain));
  HashingInputStream hashed(*tar_stream);
  LC_ASSIGN_OR_RETURN(result.applied, unpack::ApplyLayer(hashed, target_dir));
  // What follows the end-of-archive marker is part of the diff_id too; reading to the end also
  // runs the decrypting stream's final checks again.
  std::vector<uint8_t> rest(64 << 10);
  while (true) {
    LC_ASSIGN_OR_RETURN(size_t n, hashed.Read(rest));
    if (n == 0) break;
  }
  result.diff_id = hashed.Digest();
  result.unpack_ms = MillisSince(start);
  return result;
}

}  // namespace lazycrypt::lazylayer
