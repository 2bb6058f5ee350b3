#include "lazylayer/ocicrypt_unpack.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <memory>
#include <vector>

#include "common/file_io.h"
#include "common/io.h"
#include "common/spool_file.h"
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
    bytes_ += n;
    return n;
  }
  std::string Digest() { return crypto::OciDigest(sha_.Finish()); }
  uint64_t bytes() const { return bytes_; }

 private:
  InputStream& in_;
  crypto::Sha256 sha_;
  uint64_t bytes_ = 0;
};

// Passes writes on until more than `limit` bytes came: a registry cannot fill the disk with a
// blob longer than its descriptor says.
class BoundedOutputStream final : public OutputStream {
 public:
  BoundedOutputStream(OutputStream& out, uint64_t limit) : out_(out), limit_(limit) {}
  Status Write(ByteSpan data) override {
    written_ += data.size();
    if (written_ > limit_) {
      return Status::Corruption("the registry sent more than the " + std::to_string(limit_) +
                                " bytes the manifest gives the layer");
    }
    return out_.Write(data);
  }
  Status Close() override { return Status::Ok(); }

 private:
  OutputStream& out_;
  const uint64_t limit_;
  uint64_t written_ = 0;
};

}  // namespace

Result<OcicryptUnpackResult> UnpackOcicryptLayer(registry::Client& client,
                                                 const registry::Reference& repo,
                                                 const image::Descriptor& layer,
                                                 const image::OcicryptLayerCipher& cipher,
                                                 const std::filesystem::path& scratch_dir,
                                                 const std::filesystem::path& target_dir) {
  OcicryptUnpackResult result;
  // 1. (The caller unwrapped the key: a node without one downloads nothing.)
  result.key_name = cipher.key_name;
  struct statvfs fs {};
  if (::statvfs(scratch_dir.c_str(), &fs) == 0 &&
      static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize < layer.size) {
    return Status::IoError("not enough free space in " + scratch_dir.string() + " for the " +
                           std::to_string(layer.size) + "-byte layer");
  }

  // 2. Ciphertext into an unnamed file; the client checks the digest as it streams.
  auto start = std::chrono::steady_clock::now();
  LC_ASSIGN_OR_RETURN(std::unique_ptr<SpoolFile> file, SpoolFile::Create(scratch_dir));
  {
    BoundedOutputStream out(*file, layer.size);
    LC_RETURN_IF_ERROR(client.GetBlob(repo, layer.digest, out).WithContext("download"));
  }
  result.blob_bytes = file->size();
  if (result.blob_bytes != layer.size) {
    return Status::Corruption("the registry served " + std::to_string(result.blob_bytes) +
                              " bytes, the manifest says " + std::to_string(layer.size));
  }
  result.fetch_ms = MillisSince(start);

  // 3. Authenticate the whole blob before any of its plaintext is parsed.
  start = std::chrono::steady_clock::now();
  {
    BlobInputStream in(*file);
    LC_ASSIGN_OR_RETURN(auto plain, image::NewOcicryptDecryptingStream(in, layer, cipher));
    DiscardOutputStream discard;
    LC_RETURN_IF_ERROR(CopyStream(*plain, discard).status());
  }
  result.verify_ms = MillisSince(start);

  // 4. Decrypt again (the same checks run at the end), decompress, unpack, hash the tar.
  start = std::chrono::steady_clock::now();
  BlobInputStream in(*file);
  LC_ASSIGN_OR_RETURN(auto plain, image::NewOcicryptDecryptingStream(in, layer, cipher));
  LC_ASSIGN_OR_RETURN(auto tar_stream, compress::NewDecompressingStream(*plain));
  HashingInputStream hashed(*tar_stream);
  unpack::ApplyOptions apply;
  apply.names_in_errors = false;  // the layer's names are confidential
  apply.max_regular_bytes = std::max(kMinUnpackedBound, kMaxExpansion * layer.size);
  auto applied = unpack::ApplyLayer(hashed, target_dir, apply);
  if (!applied.ok()) {
    // The tar reader's own errors name the entry: withheld too (the unpacker's say "entry #N").
    const Status& s = applied.status();
    if (s.message().starts_with("unpack: entry #") || s.message().starts_with("unpack: the layer")) {
      return s;
    }
    return Status(s.code(), "unpack: the layer's tar is " + std::string(StatusCodeName(s.code())) +
                                " after " + std::to_string(hashed.bytes()) +
                                " bytes (entry names withheld)");
  }
  result.applied = *applied;
  // What follows the end-of-archive marker is part of the diff_id too; reading to the end also
  // runs the decrypting stream's final checks again.
  std::vector<uint8_t> rest(64 << 10);
  while (true) {
    LC_ASSIGN_OR_RETURN(size_t n, hashed.Read(rest));
    if (n == 0) break;
  }
  result.diff_id = hashed.Digest();
  // On disk before the caller records the layer as unpacked (a power loss must not leave a
  // record vouching for files that never reached the disk).
  {
    UniqueFd dir(::open(target_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir.valid() || ::syncfs(dir.get()) != 0) return ErrnoStatus("sync " + target_dir.string());
  }
  result.unpack_ms = MillisSince(start);
  return result;
}

}  // namespace lazycrypt::lazylayer
