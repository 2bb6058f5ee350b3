// docker://REF: ImageSource / ImageDestination over the registry client (registry/registry.h).
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

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

// Uploads blobs as they are written, on a thread of its own: a sink hands over each
// chunk_bytes (the client's upload_chunk_bytes) of its blob as they fill, the thread PATCHes them in order (each PATCH
// retried on its own), and the sink's Close hands over the rest with the digest for the final
// PUT. Nothing is spooled to disk, and the upload of one layer overlaps the conversion of the
// next. At most kMaxQueued chunks wait, so a conversion faster than the link waits for it
// (memory stays bounded). The first failure is kept; every later chunk is dropped and every
// sink's next Write fails with it. REQUIRES: does not outlive the client and the reference it
// borrows.
class BackgroundUploader {
 public:
  // One blob being streamed; shared by its sink and the upload thread (which alone touches
  // `session`).
  struct Upload {
    explicit Upload(std::string what) : what(std::move(what)) {}
    const std::string what;  // for messages: "layer 1 (sha256:ab…)"
    std::unique_ptr<registry::BlobUpload> session;
  };

  BackgroundUploader(registry::Client& client, const registry::Reference& repo, size_t chunk_bytes)
      : client_(client), repo_(repo), chunk_bytes_(chunk_bytes) {}

  // The size of each PATCH the sinks hand over.
  size_t chunk_bytes() const { return chunk_bytes_; }
  ~BackgroundUploader() { Stop(); }

  // Queues the next `bytes` of `upload`; with `finish_digest`, they are its last and the upload
  // ends with the PUT naming that digest. Blocks while kMaxQueued chunks wait. The failure of an
  // earlier upload, if any (then `bytes` are dropped).
  Status Enqueue(std::shared_ptr<Upload> upload, std::vector<uint8_t> bytes,
                 std::string finish_digest = {}) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !first_error_.ok() || stop_ || queue_.size() < kMaxQueued; });
    if (!first_error_.ok()) return first_error_;
    if (stop_) return Status::FailedPrecondition("the destination was aborted");
    queue_.push_back({std::move(upload), std::move(bytes), std::move(finish_digest)});
    if (!thread_.joinable()) {
      try {
        thread_ = std::thread([this] { Loop(); });
      } catch (const std::system_error& e) {
        queue_.clear();
        first_error_ = Status::Internal(std::string("cannot start the upload thread: ") + e.what());
        return first_error_;
      }
    }
    cv_.notify_all();
    return Status::Ok();
  }
  // An empty buffer with room for chunk_bytes() (one a finished chunk left, when there is).
  std::vector<uint8_t> TakeBuffer() {
    std::vector<uint8_t> buffer;
    {
      std::lock_guard lock(mu_);
      if (!spare_.empty()) {
        buffer = std::move(spare_.back());
        spare_.pop_back();
      }
    }
    buffer.clear();
    buffer.reserve(chunk_bytes_);
    return buffer;
  }
  // The failure of an upload so far, without waiting.
  Status Failed() const {
    std::lock_guard lock(mu_);
    return first_error_;
  }
  // Waits until every queued chunk is sent (or one upload failed); the first failure.
  Status Wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return queue_.empty() && !busy_; });
    return first_error_;
  }
  // Drops what is queued, waits for the request in progress, ends the thread. Idempotent.
  void Stop() {
    std::deque<Job> dropped;  // destroyed outside the lock: abandoning a session is a request
    {
      std::lock_guard lock(mu_);
      stop_ = true;
      dropped.swap(queue_);
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  static constexpr size_t kMaxQueued = 3;
  struct Job {
    std::shared_ptr<Upload> upload;
    std::vector<uint8_t> bytes;
    std::string finish_digest;  // empty: more bytes follow
  };

  Status Run(Job& job) {
    Upload& up = *job.upload;
    if (!up.session) {
      LC_ASSIGN_OR_RETURN(up.session, client_.StartUpload(repo_));
    }
    if (job.finish_digest.empty()) return up.session->Append(job.bytes);
    Status s = up.session->Finish(job.finish_digest, job.bytes);
    up.session.reset();  // ended (or, on failure, cancelled)
    return s;
  }

  void Loop() {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopped
        job = std::move(queue_.front());
        queue_.pop_front();
        busy_ = true;
      }
      cv_.notify_all();  // room in the queue
      Status s = Run(job);
      if (!s.ok()) {
        std::string what = job.upload->what;
        if (!job.finish_digest.empty()) what += " as " + job.finish_digest;
        s = s.WithContext("push of " + what);
      }
      std::deque<Job> dropped;  // destroyed outside the lock, as `job` below
      {
        std::lock_guard lock(mu_);
        busy_ = false;
        if (!s.ok() && first_error_.ok()) {
          first_error_ = s;
          dropped.swap(queue_);
        }
        // Reused by the next chunk: no fresh pages to fault in for every 16 MiB.
        if (spare_.size() < kMaxQueued && job.bytes.capacity() == chunk_bytes_) {
          spare_.push_back(std::move(job.bytes));
        }
      }
      job = {};  // an abandoned session goes outside the lock
      dropped.clear();
      cv_.notify_all();
    }
  }

  registry::Client& client_;
  const registry::Reference& repo_;
  const size_t chunk_bytes_;
  mutable std::mutex mu_;
  std::condition_variable cv_;  // queue changed, a request ended, or stop
  std::deque<Job> queue_;
  std::vector<std::vector<uint8_t>> spare_;  // sent chunks' buffers
  bool busy_ = false;
  bool stop_ = false;
  Status first_error_;
  std::thread thread_;
};

// Streams a blob to the destination's BackgroundUploader as it is written (its digest is known
// only at the end); Close() hands over the last bytes with the digest. The destination's
// PutManifest waits for the upload and reports its failure. REQUIRES: does not outlive the
// RegistryDestination.
class RegistryBlobSink final : public BlobSink {
 public:
  RegistryBlobSink(BackgroundUploader& uploader, std::string what)
      : uploader_(uploader), upload_(std::make_shared<BackgroundUploader::Upload>(std::move(what))) {}

  Status Write(ByteSpan data) override {
    if (closed_) return Status::FailedPrecondition("write after close");
    hasher_.Update(data);
    size_ += data.size();
    while (!data.empty()) {
      if (buffer_.capacity() == 0) buffer_ = uploader_.TakeBuffer();
      size_t n = std::min(data.size(), uploader_.chunk_bytes() - buffer_.size());
      buffer_.insert(buffer_.end(), data.begin(), data.begin() + static_cast<ptrdiff_t>(n));
      data = data.subspan(n);
      if (buffer_.size() == uploader_.chunk_bytes()) {
        LC_RETURN_IF_ERROR(uploader_.Enqueue(upload_, std::exchange(buffer_, {})));
      }
    }
    return Status::Ok();
  }

  Status Close() override {
    if (closed_) return Status::Ok();
    closed_ = true;
    digest_ = crypto::OciDigest(hasher_.Finish());
    return uploader_.Enqueue(upload_, std::exchange(buffer_, {}), digest_);
  }

  const std::string& digest() const override { return digest_; }
  uint64_t size() const override { return size_; }

 private:
  BackgroundUploader& uploader_;
  std::shared_ptr<BackgroundUploader::Upload> upload_;
  std::vector<uint8_t> buffer_;  // bytes not yet handed over
  crypto::Sha256 hasher_;
  std::string digest_;
  uint64_t size_ = 0;
  bool closed_ = false;
};

class RegistryDestination final : public ImageDestination {
 public:
  RegistryDestination(registry::Reference ref, std::unique_ptr<registry::Client> client,
                      size_t upload_chunk_bytes)
      : ref_(std::move(ref)), client_(std::move(client)), tag_(ref_.tag),
        uploader_(std::make_unique<BackgroundUploader>(*client_, ref_, upload_chunk_bytes)) {}
  ~RegistryDestination() override { uploader_->Stop(); }

  std::string Name() const override { return "docker://" + ref_.ToString(); }
  const std::string& tag() const override { return tag_; }

  Result<bool> HasBlob(const Descriptor& d) override {
    auto size = client_->StatBlob(ref_, d.digest);
    if (size.ok()) return *size == d.size;
    if (size.status().code() == StatusCode::kNotFound) return false;
    return size.status();
  }

  Result<std::unique_ptr<BlobSink>> NewBlob(std::string what) override {
    LC_RETURN_IF_ERROR(uploader_->Failed());  // no point in converting more
    return std::unique_ptr<BlobSink>(std::make_unique<RegistryBlobSink>(*uploader_, std::move(what)));
  }

  Result<Descriptor> PutBlob(std::string media_type, ByteSpan data) override {
    Descriptor d;
    d.media_type = std::move(media_type);
    d.digest = crypto::OciDigest(crypto::Sha256::Of(data));
    d.size = data.size();
    // A layer upload that failed in the background is the first failure to report.
    LC_RETURN_IF_ERROR(uploader_->Wait());
    MemoryBlobSource blob(std::vector<uint8_t>(data.begin(), data.end()));
    LC_RETURN_IF_ERROR(client_->PushBlob(ref_, d.digest, blob).WithContext("push of blob " + d.digest));
    return d;
  }

  Result<Descriptor> PutManifest(std::string media_type, ByteSpan data) override {
    // Every blob the manifest references is in the registry before it is.
    LC_RETURN_IF_ERROR(uploader_->Wait());
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

  // Nothing is tagged before Commit; queued uploads are dropped; pushed blobs and untagged
  // manifests are left to the registry's garbage collection.
  void Abort() override { uploader_->Stop(); }

 private:
  registry::Reference ref_;
  std::unique_ptr<registry::Client> client_;
  std::string tag_;
  std::map<std::string, std::pair<std::string, std::vector<uint8_t>>> manifests_;
  bool committed_ = false;
  std::unique_ptr<BackgroundUploader> uploader_;  // last: stopped before the client goes
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
  const registry::ClientOptions client_options = RegistryClientOptions(options);
  LC_ASSIGN_OR_RETURN(auto client, registry::Client::Create(client_options));
  return std::unique_ptr<ImageDestination>(std::make_unique<RegistryDestination>(
      std::move(reference), std::move(client), static_cast<size_t>(client_options.upload_chunk_bytes)));
}

}  // namespace lazycrypt::image
