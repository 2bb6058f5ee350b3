// docker://REF: ImageSource / ImageDestination over the registry client (registry/registry.h).
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "common/file_io.h"
#include "crypto/digest.h"
#include "image/transport.h"
#include "registry/registry.h"

namespace lazycrypt::image {

registry::ClientOptions RegistryClientOptions(const TransportOptions& options) {
  registry::ClientOptions client;
  client.plain_http = options.plain_http;
  client.tls_verify = options.tls_verify;
  if (!options.authfile.empty()) client.auth_files = {options.authfile};
  client.hosts_dir = options.hosts_dir;
  return client;
}

namespace {

Result<std::unique_ptr<registry::Client>> MakeClient(const TransportOptions& options) {
  return registry::Client::Create(RegistryClientOptions(options));
}

// Collects at most `limit` bytes.
class BoundedOutputStream final : public OutputStream {
 public:
  BoundedOutputStream(uint64_t limit, std::string what) : limit_(limit), what_(std::move(what)) {}
  Status Write(ByteSpan data) override {
    if (bytes_.size() + data.size() > limit_) {
      return Status::Corruption(what_ + ": larger than its descriptor's " + std::to_string(limit_) +
                                " bytes");
    }
    bytes_.insert(bytes_.end(), data.begin(), data.end());
    return Status::Ok();
  }
  Status Close() override { return Status::Ok(); }
  std::vector<uint8_t> Take() { return std::move(bytes_); }

 private:
  uint64_t limit_;
  std::string what_;
  std::vector<uint8_t> bytes_;
};

class RegistrySource final : public ImageSource {
 public:
  RegistrySource(registry::Reference ref, std::unique_ptr<registry::Client> client)
      : ref_(std::move(ref)), client_(std::move(client)) {}

  std::string Name() const override { return "docker://" + ref_.ToString(); }

  Result<Descriptor> ResolveRoot() override {
    LC_ASSIGN_OR_RETURN(registry::Manifest m, client_->GetManifest(ref_));
    Descriptor d;
    d.media_type = m.media_type;
    d.digest = m.digest;
    d.size = m.bytes.size();
    if (d.media_type.empty() || (!IsManifestMediaType(d.media_type) && !IsIndexMediaType(d.media_type))) {
      // Some registries answer with a generic content type: take the document's own.
      auto index = ParseIndex(m.bytes);
      d.media_type = index.ok() && !index->manifests.empty() ? std::string(kMediaTypeOciIndex)
                                                             : std::string(kMediaTypeOciManifest);
    }
    return d;
  }

  Result<std::vector<uint8_t>> ReadBlob(const Descriptor& d, uint64_t max_bytes) override {
    LC_RETURN_IF_ERROR(ValidateDigest(d.digest, "descriptor"));
    std::string what = "blob " + d.digest;
    if (d.size > max_bytes) {
      return Status::Corruption(what + ": size " + std::to_string(d.size) + " exceeds the limit of " +
                                std::to_string(max_bytes) + " bytes for a " + d.media_type);
    }
    std::vector<uint8_t> bytes;
    if (IsManifestMediaType(d.media_type) || IsIndexMediaType(d.media_type)) {
      LC_ASSIGN_OR_RETURN(registry::Manifest m, client_->GetManifest(ref_.WithDigest(d.digest)));
      bytes = std::move(m.bytes);
    } else {
      BoundedOutputStream out(d.size, what);
      LC_RETURN_IF_ERROR(client_->GetBlob(ref_, d.digest, out));
      bytes = out.Take();
    }
    if (bytes.size() != d.size) {
      return Status::Corruption(what + ": has " + std::to_string(bytes.size()) +
                                " bytes, its descriptor says " + std::to_string(d.size));
    }
    std::string actual = crypto::OciDigest(crypto::Sha256::Of(bytes));
    if (actual != d.digest) return Status::AuthFailed(what + ": digest mismatch: content is " + actual);
    return bytes;
  }

  Result<std::unique_ptr<BlobSource>> OpenBlob(const Descriptor& d) override {
    LC_RETURN_IF_ERROR(ValidateDigest(d.digest, "descriptor"));
    return client_->OpenBlob(ref_, d.digest, d.size);
  }

  Result<std::unique_ptr<BlobSource>> OpenBlobForScan(const Descriptor& d) override {
    LC_ASSIGN_OR_RETURN(auto blob, OpenBlob(d));
    return NewReadAheadBlobSource(std::move(blob));
  }

  // One GET into an unlinked temporary file (the blob as stored: ciphertext for encrypted
  // layers), its digest verified as it streams; the file goes when the source is destroyed.
  Result<std::unique_ptr<BlobSource>> OpenVerifiedBlob(const Descriptor& d) override {
    const char* tmpdir = ::getenv("TMPDIR");
    std::string templ =
        std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/lazycrypt-blob-XXXXXX";
    int raw_fd = ::mkstemp(templ.data());
    if (raw_fd < 0) return Status::IoError("mkstemp " + templ + ": " + std::strerror(errno));
    UniqueFd fd(raw_fd);
    FdOutputStream out(fd.get());
    Status fetched = client_->GetBlob(ref_, d.digest, out);
    if (!fetched.ok()) {
      ::unlink(templ.c_str());
      return fetched;
    }
    auto opened = FileBlobSource::Open(templ);
    ::unlink(templ.c_str());  // the open descriptor keeps the bytes until the source goes
    LC_RETURN_IF_ERROR(opened.status());
    std::unique_ptr<BlobSource> blob = std::move(*opened);
    if (blob->size() != d.size) {
      return Status::Corruption("blob " + d.digest + " has " + std::to_string(blob->size()) +
                                " bytes, its descriptor says " + std::to_string(d.size));
    }
    return blob;
  }

 private:
  registry::Reference ref_;
  std::unique_ptr<registry::Client> client_;
};

// Spools a blob to a temporary file (its digest is known only at the end), then pushes it on
// Close(). REQUIRES: does not outlive the RegistryDestination (it borrows its client and ref).
class RegistryBlobSink final : public BlobSink {
 public:
  RegistryBlobSink(registry::Client& client, const registry::Reference& repo,
                   std::filesystem::path path, UniqueFd fd)
      : client_(client), repo_(repo), path_(std::move(path)), fd_(std::move(fd)), out_(fd_.get()) {}
  ~RegistryBlobSink() override {
    if (!path_.empty()) ::unlink(path_.c_str());
  }

  Status Write(ByteSpan data) override {
    if (closed_) return Status::FailedPrecondition("write after close");
    hasher_.Update(data);
    size_ += data.size();
    return out_.Write(data);
  }

  Status Close() override {
    if (closed_) return Status::Ok();
    closed_ = true;
    digest_ = crypto::OciDigest(hasher_.Finish());
    LC_ASSIGN_OR_RETURN(auto blob, FileBlobSource::Open(path_));
    ::unlink(path_.c_str());
    path_.clear();
    if (blob->size() != size_) return Status::IoError("spooled blob changed size");
    return client_.PushBlob(repo_, digest_, *blob);
  }

  const std::string& digest() const override { return digest_; }
  uint64_t size() const override { return size_; }

 private:
  registry::Client& client_;
  const registry::Reference& repo_;
  std::filesystem::path path_;
  UniqueFd fd_;
  FdOutputStream out_;
  crypto::Sha256 hasher_;
  std::string digest_;
  uint64_t size_ = 0;
  bool closed_ = false;
};

class RegistryDestination final : public ImageDestination {
 public:
  RegistryDestination(registry::Reference ref, std::unique_ptr<registry::Client> client)
      : ref_(std::move(ref)), client_(std::move(client)), tag_(ref_.tag) {}

  std::string Name() const override { return "docker://" + ref_.ToString(); }
  const std::string& tag() const override { return tag_; }

  Result<bool> HasBlob(const Descriptor& d) override {
    auto size = client_->StatBlob(ref_, d.digest);
    if (size.ok()) return *size == d.size;
    if (size.status().code() == StatusCode::kNotFound) return false;
    return size.status();
  }

  Result<std::unique_ptr<BlobSink>> NewBlob() override {
    const char* tmpdir = ::getenv("TMPDIR");
    std::string templ = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/lazycrypt-push-XXXXXX";
    int fd = ::mkstemp(templ.data());
    if (fd < 0) return Status::IoError("mkstemp " + templ + ": " + std::strerror(errno));
    return std::unique_ptr<BlobSink>(
        std::make_unique<RegistryBlobSink>(*client_, ref_, templ, UniqueFd(fd)));
  }

  Result<Descriptor> PutBlob(std::string media_type, ByteSpan data) override {
    Descriptor d;
    d.media_type = std::move(media_type);
    d.digest = crypto::OciDigest(crypto::Sha256::Of(data));
    d.size = data.size();
    MemoryBlobSource blob(std::vector<uint8_t>(data.begin(), data.end()));
    LC_RETURN_IF_ERROR(client_->PushBlob(ref_, d.digest, blob));
    return d;
  }

  Result<Descriptor> PutManifest(std::string media_type, ByteSpan data) override {
    Descriptor d;
    d.media_type = std::move(media_type);
    d.digest = crypto::OciDigest(crypto::Sha256::Of(data));
    d.size = data.size();
    // By digest: nothing is tagged until Commit.
    LC_ASSIGN_OR_RETURN(std::string pushed,
                        client_->PutManifest(ref_.WithDigest(d.digest), data, d.media_type));
    if (pushed != d.digest) {
      return Status::Internal("registry stored manifest " + d.digest + " as " + pushed);
    }
    manifests_[d.digest] = {d.media_type, std::vector<uint8_t>(data.begin(), data.end())};
    return d;
  }

  Status Commit(const Descriptor& root) override {
    if (committed_) return Status::FailedPrecondition("image already committed");
    auto it = manifests_.find(root.digest);
    if (it == manifests_.end()) {
      return Status::FailedPrecondition("manifest " + root.digest + " was not pushed");
    }
    registry::Reference tagged = ref_;
    tagged.digest.clear();
    LC_RETURN_IF_ERROR(client_->PutManifest(tagged, it->second.second, it->second.first).status());
    committed_ = true;
    return Status::Ok();
  }

  // Nothing is tagged before Commit; pushed blobs and untagged manifests are left to the
  // registry's garbage collection.
  void Abort() override {}

 private:
  registry::Reference ref_;
  std::unique_ptr<registry::Client> client_;
  std::string tag_;
  std::map<std::string, std::pair<std::string, std::vector<uint8_t>>> manifests_;
  bool committed_ = false;
};

}  // namespace

Result<std::unique_ptr<ImageSource>> OpenRegistrySource(const ImageReference& ref,
                                                        const TransportOptions& options) {
  LC_ASSIGN_OR_RETURN(registry::Reference reference, registry::Reference::Parse(ref.docker));
  LC_ASSIGN_OR_RETURN(auto client, MakeClient(options));
  return std::unique_ptr<ImageSource>(
      std::make_unique<RegistrySource>(std::move(reference), std::move(client)));
}

Result<std::unique_ptr<ImageDestination>> OpenRegistryDestination(const ImageReference& ref,
                                                                  const TransportOptions& options) {
  LC_ASSIGN_OR_RETURN(registry::Reference reference, registry::Reference::Parse(ref.docker));
  if (!reference.digest.empty()) {
    return Status::InvalidArgument("destination '" + ref.ToString() +
                                   "' names a digest; a destination needs a tag");
  }
  if (reference.tag.empty()) reference.tag = std::string(kDefaultTag);
  LC_ASSIGN_OR_RETURN(auto client, MakeClient(options));
  return std::unique_ptr<ImageDestination>(
      std::make_unique<RegistryDestination>(std::move(reference), std::move(client)));
}

}  // namespace lazycrypt::image
