#include "image/layout.h"

#include "registry/registry.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <system_error>

#include <nlohmann/json.hpp>

#include "common/json_depth.h"
#include "crypto/digest.h"

namespace lazycrypt::image {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kOciLayoutFile = "oci-layout";
constexpr std::string_view kIndexFile = "index.json";
constexpr std::string_view kOciLayoutContent = R"({"imageLayoutVersion":"1.0.0"})";
constexpr std::string_view kEmptyIndexContent = R"({"schemaVersion":2,"manifests":[]})";
constexpr int kMaxIndexDepth = 4;

std::string_view HostArchitecture() {
#if defined(__x86_64__)
  return "amd64";
#elif defined(__aarch64__)
  return "arm64";
#elif defined(__arm__)
  return "arm";
#elif defined(__powerpc64__)
  return "ppc64le";
#elif defined(__s390x__)
  return "s390x";
#elif defined(__riscv)
  return "riscv64";
#else
  return "unknown";
#endif
}

std::string JoinTags(const Index& index) {
  std::string out;
  for (const Descriptor& d : index.manifests) {
    std::string tag = d.Annotation(kAnnotationRefName);
    if (tag.empty()) continue;
    if (!out.empty()) out += ", ";
    out += tag;
  }
  return out.empty() ? "none" : out;
}

std::string ShortDigest(std::string_view digest) {
  return std::string(digest.substr(0, std::min<size_t>(digest.size(), 7 + 12)));
}

Status WriteAllFd(int fd, ByteSpan data, const fs::path& what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write " + what.string());
    }
    data = data.subspan(static_cast<size_t>(n));
  }
  return Status::Ok();
}

void FsyncDir(const fs::path& dir) {
  UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.valid()) ::fsync(dfd.get());
}

class VerifyingInputStream final : public InputStream {
 public:
  VerifyingInputStream(InputStream& in, const Descriptor& expected, std::string what)
      : in_(in), expected_digest_(expected.digest), expected_size_(expected.size),
        what_(std::move(what)) {}

  Result<size_t> Read(MutableByteSpan out) override {
    if (!failure_.ok()) return failure_;
    LC_ASSIGN_OR_RETURN(size_t n, in_.Read(out));
    if (n > 0) {
      count_ += n;
      if (count_ > expected_size_) {
        failure_ = Status::Corruption(what_ + ": longer than the " +
                                      std::to_string(expected_size_) +
                                      " bytes its descriptor says");
        return failure_;
      }
      hash_.Update(out.first(n));
      return n;
    }
    if (!checked_ && !out.empty()) {
      checked_ = true;
      if (count_ != expected_size_) {
        failure_ = Status::Corruption(what_ + ": has " + std::to_string(count_) +
                                      " bytes, its descriptor says " +
                                      std::to_string(expected_size_));
        return failure_;
      }
      std::string actual = crypto::OciDigest(hash_.Finish());
      if (actual != expected_digest_) {
        failure_ = Status::AuthFailed(what_ + ": digest mismatch: descriptor says " +
                                      expected_digest_ + ", content is " + actual);
        return failure_;
      }
    }
    return size_t{0};
  }

 private:
  InputStream& in_;
  std::string expected_digest_;
  uint64_t expected_size_;
  std::string what_;
  crypto::Sha256 hash_;
  uint64_t count_ = 0;
  bool checked_ = false;
  Status failure_;
};

bool IsEmptyDir(const fs::path& dir) {
  std::error_code ec;
  return fs::is_empty(dir, ec) && !ec;
}

}  // namespace

// --- ImageReference --------------------------------------------------------------------------

Status ValidateTag(std::string_view tag) {
  auto word = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  };
  bool ok = !tag.empty() && tag.size() <= 128 && word(tag[0]);
  for (char c : tag) ok = ok && (word(c) || c == '.' || c == '-');
  if (!ok) {
    return Status::InvalidArgument("invalid tag '" + std::string(tag.substr(0, 200)) +
                                   "': a tag is 1-128 characters of [A-Za-z0-9_.-] not starting "
                                   "with '.' or '-'");
  }
  return Status::Ok();
}

Result<ImageReference> ImageReference::Parse(std::string_view text) {
  constexpr std::string_view kOci = "oci:";
  if (text.starts_with("docker://")) {
    ImageReference ref;
    ref.docker = std::string(text.substr(9));
    auto parsed = registry::Reference::Parse(ref.docker);
    if (!parsed.ok()) return parsed.status();
    return ref;
  }
  if (text.starts_with("docker:")) {
    return Status::InvalidArgument("image reference '" + std::string(text) +
                                   "': the registry transport is spelled docker://HOST/REPO[:TAG]");
  }
  if (!text.starts_with(kOci)) {
    size_t colon = text.find(':');
    if (colon != std::string_view::npos && colon > 0 &&
        text.substr(0, colon).find('/') == std::string_view::npos) {
      return Status::Unsupported("image reference '" + std::string(text) + "': transport '" +
                                 std::string(text.substr(0, colon)) +
                                 ":' is not supported; use oci:DIR[:TAG]");
    }
    return Status::InvalidArgument("image reference '" + std::string(text) +
                                   "' has no transport; use oci:DIR[:TAG]");
  }
  std::string_view rest = text.substr(kOci.size());
  ImageReference ref;
  size_t colon = rest.find(':');
  std::string_view dir = rest.substr(0, colon);
  if (dir.empty()) {
    return Status::InvalidArgument("image reference '" + std::string(text) +
                                   "': the directory is empty; use oci:DIR[:TAG]");
  }
  ref.dir = fs::path(std::string(dir));
  if (colon != std::string_view::npos) {
    ref.tag = std::string(rest.substr(colon + 1));
    LC_RETURN_IF_ERROR(ValidateTag(ref.tag).WithContext("image reference '" + std::string(text) + "'"));
  }
  return ref;
}

std::string ImageReference::ToString() const {
  if (is_registry()) return "docker://" + docker;
  std::string out = "oci:" + dir.string();
  if (!tag.empty()) out += ":" + tag;
  return out;
}

std::unique_ptr<InputStream> NewVerifyingInputStream(InputStream& in, const Descriptor& expected,
                                                     std::string what) {
  return std::make_unique<VerifyingInputStream>(in, expected, std::move(what));
}

// --- OciLayout -------------------------------------------------------------------------------

Result<std::unique_ptr<OciLayout>> OciLayout::Open(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    return Status::NotFound("OCI layout " + dir.string() + " does not exist");
  }
  if (!fs::is_directory(dir, ec)) {
    return Status::InvalidArgument("OCI layout " + dir.string() + " is not a directory");
  }
  auto marker = ReadFileBytes(dir / kOciLayoutFile);
  if (!marker.ok()) {
    if (marker.status().code() == StatusCode::kNotFound) {
      return Status::NotFound(dir.string() + " is not an OCI layout (no oci-layout file)");
    }
    return marker.status();
  }
  LC_RETURN_IF_ERROR(CheckJsonDepth(AsStringView(*marker), dir.string() + "/oci-layout"));
  try {
    auto j = nlohmann::json::parse(AsStringView(*marker));
    if (!j.is_object() || !j.contains("imageLayoutVersion") ||
        !j["imageLayoutVersion"].is_string()) {
      return Status::Corruption(dir.string() + "/oci-layout: missing \"imageLayoutVersion\"");
    }
    std::string version = j["imageLayoutVersion"].get<std::string>();
    if (version != "1.0.0") {
      return Status::Unsupported(dir.string() + "/oci-layout: imageLayoutVersion '" + version +
                                 "' is not supported (only 1.0.0)");
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(dir.string() + "/oci-layout: invalid JSON: " + e.what());
  }
  std::unique_ptr<OciLayout> layout(new OciLayout(dir));
  LC_RETURN_IF_ERROR(layout->ReadIndex().status());
  return layout;
}

fs::path OciLayout::BlobPath(std::string_view digest) const {
  size_t colon = digest.find(':');
  return dir_ / "blobs" / std::string(digest.substr(0, colon)) /
         std::string(digest.substr(colon + 1));
}

bool OciLayout::HasBlob(std::string_view digest) const {
  if (!ValidateDigest(digest, "digest").ok()) return false;
  struct stat st {};
  return ::stat(BlobPath(digest).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

Result<Index> OciLayout::ReadIndex() const {
  fs::path path = dir_ / kIndexFile;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus("stat " + path.string());
  if (static_cast<uint64_t>(st.st_size) > kMaxMetadataBlobBytes) {
    return Status::Corruption(path.string() + ": " + std::to_string(st.st_size) +
                              " bytes is too large for an index");
  }
  LC_ASSIGN_OR_RETURN(auto bytes, ReadFileBytes(path));
  auto index = ParseIndex(bytes);
  if (!index.ok()) return index.status().WithContext(path.string());
  return index;
}

Result<Descriptor> OciLayout::ResolveInIndex(const Index& index, std::string_view tag,
                                             std::string_view where, int depth,
                                             bool descend) const {
  std::vector<const Descriptor*> matches;
  if (tag.empty() && index.manifests.size() == 1) {
    matches.push_back(&index.manifests[0]);
  } else {
    std::string_view wanted = tag.empty() ? kDefaultTag : tag;
    for (const Descriptor& d : index.manifests) {
      if (d.Annotation(kAnnotationRefName) == wanted) matches.push_back(&d);
    }
    if (matches.empty()) {
      if (tag.empty()) {
        return Status::NotFound(std::string(where) + ": no tag given, " +
                                std::to_string(index.manifests.size()) +
                                " manifests and none tagged 'latest' (tags: " + JoinTags(index) +
                                ")");
      }
      return Status::NotFound(std::string(where) + ": tag '" + std::string(tag) +
                              "' not found (tags: " + JoinTags(index) + ")");
    }
  }
  if (matches.size() > 1) {
    // Several entries for one tag: one per platform, as some tools write them.
    std::vector<const Descriptor*> host;
    for (const Descriptor* d : matches) {
      if (d->platform && d->platform->os == "linux" &&
          d->platform->architecture == HostArchitecture()) {
        host.push_back(d);
      }
    }
    if (host.size() != 1) {
      return Status::InvalidArgument(std::string(where) + ": tag '" + std::string(tag) +
                                     "' names " + std::to_string(matches.size()) +
                                     " manifests and none is uniquely for linux/" +
                                     std::string(HostArchitecture()));
    }
    matches = host;
  }
  const Descriptor& chosen = *matches[0];
  if (IsManifestMediaType(chosen.media_type)) return chosen;
  if (!descend && IsIndexMediaType(chosen.media_type)) return chosen;
  if (!IsIndexMediaType(chosen.media_type)) {
    return Status::Unsupported(std::string(where) + ": " + ShortDigest(chosen.digest) +
                               " has media type '" + chosen.media_type +
                               "', not an image manifest or index");
  }
  if (depth >= kMaxIndexDepth) {
    return Status::Corruption(std::string(where) + ": image indexes nested deeper than " +
                              std::to_string(kMaxIndexDepth));
  }
  LC_ASSIGN_OR_RETURN(auto bytes, ReadBlob(chosen));
  auto nested = ParseIndex(bytes);
  if (!nested.ok()) return nested.status().WithContext("index " + chosen.digest);
  std::vector<const Descriptor*> candidates;
  for (const Descriptor& d : nested->manifests) {
    if (nested->manifests.size() == 1 ||
        (d.platform && d.platform->os == "linux" &&
         d.platform->architecture == HostArchitecture())) {
      candidates.push_back(&d);
    }
  }
  if (candidates.empty()) {
    return Status::NotFound("index " + chosen.digest + ": no manifest for linux/" +
                            std::string(HostArchitecture()));
  }
  Index sub;
  sub.manifests.push_back(*candidates[0]);
  return ResolveInIndex(sub, "", "index " + chosen.digest, depth + 1, true);
}

Result<Descriptor> OciLayout::ResolveManifest(std::string_view tag) const {
  LC_ASSIGN_OR_RETURN(Index index, ReadIndex());
  if (index.manifests.empty()) {
    return Status::NotFound(dir_.string() + "/index.json lists no images");
  }
  return ResolveInIndex(index, tag, dir_.string(), 0, true);
}

Result<Descriptor> OciLayout::ResolveRoot(std::string_view tag) const {
  LC_ASSIGN_OR_RETURN(Index index, ReadIndex());
  if (index.manifests.empty()) {
    return Status::NotFound(dir_.string() + "/index.json lists no images");
  }
  return ResolveInIndex(index, tag, dir_.string(), 0, false);
}

Result<std::vector<uint8_t>> OciLayout::ReadBlob(const Descriptor& d, uint64_t max_bytes) const {
  LC_RETURN_IF_ERROR(ValidateDigest(d.digest, "descriptor"));
  std::string what = "blob " + d.digest;
  if (d.size > max_bytes) {
    return Status::Corruption(what + ": size " + std::to_string(d.size) + " exceeds the limit of " +
                              std::to_string(max_bytes) + " bytes for a " + d.media_type);
  }
  fs::path path = BlobPath(d.digest);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::NotFound(what + " is missing from " + dir_.string());
    return ErrnoStatus("stat " + path.string());
  }
  if (static_cast<uint64_t>(st.st_size) != d.size) {
    return Status::Corruption(what + ": file has " + std::to_string(st.st_size) +
                              " bytes, its descriptor says " + std::to_string(d.size));
  }
  LC_ASSIGN_OR_RETURN(auto bytes, ReadFileBytes(path));
  if (bytes.size() != d.size) {
    return Status::Corruption(what + " changed size while being read");
  }
  std::string actual = crypto::OciDigest(crypto::Sha256::Of(bytes));
  if (actual != d.digest) {
    return Status::AuthFailed(what + ": digest mismatch: content is " + actual);
  }
  return bytes;
}

Result<std::unique_ptr<FileBlobSource>> OciLayout::OpenBlob(const Descriptor& d) const {
  LC_RETURN_IF_ERROR(ValidateDigest(d.digest, "descriptor"));
  fs::path path = BlobPath(d.digest);
  auto blob = FileBlobSource::Open(path);
  if (!blob.ok()) {
    if (blob.status().code() == StatusCode::kNotFound) {
      return Status::NotFound("blob " + d.digest + " is missing from " + dir_.string());
    }
    return blob.status();
  }
  if ((*blob)->size() != d.size) {
    return Status::Corruption("blob " + d.digest + ": file has " +
                              std::to_string((*blob)->size()) + " bytes, its descriptor says " +
                              std::to_string(d.size));
  }
  return blob;
}

Status OciLayout::VerifyBlob(const Descriptor& d) const {
  LC_ASSIGN_OR_RETURN(auto blob, OpenBlob(d));
  BlobInputStream raw(*blob);
  auto verifying = NewVerifyingInputStream(raw, d, "blob " + d.digest);
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    LC_ASSIGN_OR_RETURN(size_t n, verifying->Read(buf));
    if (n == 0) return Status::Ok();
  }
}

Result<LoadedImage> LoadImageWith(const Descriptor& manifest_descriptor,
                                  const BlobReader& read_blob) {
  LoadedImage image;
  image.manifest_descriptor = manifest_descriptor;
  LC_ASSIGN_OR_RETURN(image.manifest_bytes, read_blob(manifest_descriptor));
  auto manifest = ParseManifest(image.manifest_bytes);
  if (!manifest.ok()) {
    return manifest.status().WithContext("manifest " + manifest_descriptor.digest);
  }
  image.manifest = std::move(manifest).value();
  auto config_bytes = read_blob(image.manifest.config);
  if (!config_bytes.ok()) return config_bytes.status().WithContext("config");
  image.config_bytes = std::move(config_bytes).value();
  auto config = ParseImageConfig(image.config_bytes);
  if (!config.ok()) return config.status().WithContext("config " + image.manifest.config.digest);
  image.config = std::move(config).value();
  if (image.config.diff_ids.size() != image.manifest.layers.size()) {
    return Status::Corruption("config " + image.manifest.config.digest + " has " +
                              std::to_string(image.config.diff_ids.size()) +
                              " diff_ids for the manifest's " +
                              std::to_string(image.manifest.layers.size()) + " layers");
  }
  return image;
}

Result<LoadedImage> LoadImage(const OciLayout& layout, std::string_view tag) {
  LC_ASSIGN_OR_RETURN(Descriptor manifest_descriptor, layout.ResolveManifest(tag));
  return LoadImageWith(manifest_descriptor,
                       [&layout](const Descriptor& d) { return layout.ReadBlob(d); });
}

// --- BlobWriter ------------------------------------------------------------------------------

struct BlobWriter::Hasher {
  crypto::Sha256 sha;
};

BlobWriter::BlobWriter(ImageWriter* owner, UniqueFd fd, fs::path tmp)
    : owner_(owner), fd_(std::move(fd)), tmp_(std::move(tmp)), hasher_(std::make_unique<Hasher>()) {}

BlobWriter::~BlobWriter() {
  if (!closed_) {
    fd_.reset();
    ::unlink(tmp_.c_str());
  }
}

Status BlobWriter::Write(ByteSpan data) {
  if (closed_ || !fd_.valid()) return Status::FailedPrecondition("blob write after close");
  LC_RETURN_IF_ERROR(WriteAllFd(fd_.get(), data, tmp_));
  hasher_->sha.Update(data);
  size_ += data.size();
  return Status::Ok();
}

Status BlobWriter::Close() {
  if (closed_ || !fd_.valid()) return Status::FailedPrecondition("blob closed twice");
  if (::fsync(fd_.get()) != 0) return ErrnoStatus("fsync " + tmp_.string());
  fd_.reset();
  digest_ = crypto::OciDigest(hasher_->sha.Finish());
  fs::path target = owner_->layout().BlobPath(digest_);
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0) {
    ::unlink(tmp_.c_str());  // content-addressed: the same bytes are there already
  } else {
    if (::rename(tmp_.c_str(), target.c_str()) != 0) return ErrnoStatus("rename to " + target.string());
    owner_->RecordCreated(target);
    FsyncDir(target.parent_path());
  }
  closed_ = true;
  return Status::Ok();
}

Descriptor BlobWriter::MakeDescriptor(std::string media_type) const {
  Descriptor d;
  d.media_type = std::move(media_type);
  d.digest = digest_;
  d.size = size_;
  return d;
}

// --- ImageWriter -----------------------------------------------------------------------------

Result<std::unique_ptr<ImageWriter>> ImageWriter::Begin(const fs::path& dir) {
  std::error_code ec;
  std::vector<fs::path> created;
  bool create_layout = false;
  if (fs::exists(dir, ec)) {
    if (!fs::is_directory(dir, ec)) {
      return Status::InvalidArgument("destination " + dir.string() + " is not a directory");
    }
    if (!fs::exists(dir / kOciLayoutFile, ec)) {
      if (!IsEmptyDir(dir)) {
        return Status::FailedPrecondition("destination " + dir.string() +
                                          " exists, is not empty and is not an OCI layout");
      }
      create_layout = true;
    }
  } else {
    fs::path parent = dir.parent_path();
    if (!parent.empty() && !fs::is_directory(parent, ec)) {
      return Status::NotFound("destination " + dir.string() + ": parent directory " +
                              parent.string() + " does not exist");
    }
    if (::mkdir(dir.c_str(), 0755) != 0) return ErrnoStatus("mkdir " + dir.string());
    created.push_back(dir);
    create_layout = true;
  }
  // On an error below, remove what was created so far.
  auto cleanup = [&created]() {
    for (auto it = created.rbegin(); it != created.rend(); ++it) {
      std::error_code ignored;
      fs::remove(*it, ignored);
    }
  };
  if (create_layout) {
    for (auto [name, content] : {std::pair{kOciLayoutFile, kOciLayoutContent},
                                 std::pair{kIndexFile, kEmptyIndexContent}}) {
      Status s = WriteFileAtomically(dir / name, AsBytes(content));
      if (!s.ok()) {
        cleanup();
        return s;
      }
      created.push_back(dir / name);
    }
  }
  for (const fs::path& sub : {dir / "blobs", dir / "blobs" / "sha256"}) {
    if (fs::is_directory(sub, ec)) continue;
    if (::mkdir(sub.c_str(), 0755) != 0) {
      Status s = ErrnoStatus("mkdir " + sub.string());
      cleanup();
      return s;
    }
    created.push_back(sub);
  }
  auto layout = OciLayout::Open(dir);
  if (!layout.ok()) {
    cleanup();
    return layout.status();
  }
  return std::unique_ptr<ImageWriter>(
      new ImageWriter(std::move(layout).value(), create_layout, std::move(created)));
}

ImageWriter::~ImageWriter() { Abort(); }

void ImageWriter::Abort() {
  if (committed_) return;
  for (auto it = created_paths_.rbegin(); it != created_paths_.rend(); ++it) {
    std::error_code ignored;
    fs::remove(*it, ignored);  // a file, or a directory if (as expected) it is empty
  }
  created_paths_.clear();
}

Result<std::unique_ptr<BlobWriter>> ImageWriter::NewBlob() {
  if (committed_) return Status::FailedPrecondition("image already committed");
  fs::path dir = layout_->dir() / "blobs" / "sha256";
  std::string templ = (dir / ".lazycrypt-tmp-XXXXXX").string();
  int fd = ::mkstemp(templ.data());
  if (fd < 0) return ErrnoStatus("create temporary blob in " + dir.string());
  UniqueFd owned(fd);
  if (::fchmod(fd, 0644) != 0) {
    Status s = ErrnoStatus("chmod " + templ);
    ::unlink(templ.c_str());
    return s;
  }
  return std::unique_ptr<BlobWriter>(new BlobWriter(this, std::move(owned), fs::path(templ)));
}

Result<Descriptor> ImageWriter::PutBlob(std::string media_type, ByteSpan data) {
  LC_ASSIGN_OR_RETURN(auto writer, NewBlob());
  LC_RETURN_IF_ERROR(writer->Write(data));
  LC_RETURN_IF_ERROR(writer->Close());
  return writer->MakeDescriptor(std::move(media_type));
}

Status ImageWriter::CopyBlob(const OciLayout& src, const Descriptor& d) {
  LC_RETURN_IF_ERROR(ValidateDigest(d.digest, "descriptor"));
  if (layout_->HasBlob(d.digest)) return Status::Ok();
  LC_ASSIGN_OR_RETURN(auto blob, src.OpenBlob(d));
  BlobInputStream raw(*blob);
  auto verifying = NewVerifyingInputStream(raw, d, "blob " + d.digest);
  LC_ASSIGN_OR_RETURN(auto writer, NewBlob());
  LC_RETURN_IF_ERROR(CopyStream(*verifying, *writer).status());
  LC_RETURN_IF_ERROR(writer->Close());
  if (writer->digest() != d.digest) {
    return Status::Internal("copied blob " + d.digest + " came out as " + writer->digest());
  }
  return Status::Ok();
}

Status ImageWriter::Commit(std::string_view tag, const Descriptor& manifest) {
  if (committed_) return Status::FailedPrecondition("image already committed");
  LC_RETURN_IF_ERROR(ValidateTag(tag));
  if (!layout_->HasBlob(manifest.digest)) {
    return Status::FailedPrecondition("manifest " + manifest.digest + " is not in " +
                                      layout_->dir().string());
  }
  LC_ASSIGN_OR_RETURN(Index index, layout_->ReadIndex());
  std::erase_if(index.manifests, [&](const Descriptor& d) {
    return d.Annotation(kAnnotationRefName) == tag;
  });
  Descriptor entry = manifest;
  entry.annotations[std::string(kAnnotationRefName)] = std::string(tag);
  index.manifests.push_back(std::move(entry));
  LC_RETURN_IF_ERROR(
      WriteFileAtomically(layout_->dir() / kIndexFile, AsBytes(SerializeIndex(index))));
  committed_ = true;
  created_paths_.clear();
  return Status::Ok();
}

}  // namespace lazycrypt::image
