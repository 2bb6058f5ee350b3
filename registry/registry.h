// An OCI distribution (registry v2) client over libcurl: image references, manifest resolve/push,
// blob GET (whole with digest verification, single and multi Range), blob HEAD/push/mount, a
// Range-backed BlobSource for lazy reads, auth (anonymous, basic, bearer-token challenges,
// docker config.json credentials), containerd hosts.toml mirrors, retries with backoff and
// per-request deadlines.
//
// Thread-safety: a Client is thread-safe; all methods may be called concurrently. It bounds the
// number of requests in flight (ClientOptions::max_parallel) and reuses connections.
// Credentials are never logged nor put in error messages.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"

namespace lazycrypt::registry {

// Media types a manifest GET accepts.
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";

// host[:port]/repo[:tag][@digest]. Docker Hub defaults: no host → "docker.io", a one-component
// repository on docker.io → "library/<name>", no tag and no digest → "latest".
struct Reference {
  std::string registry;    // "docker.io", "127.0.0.1:5000", "localhost:5000"
  std::string repository;  // "library/busybox", "team/app"
  std::string tag;         // empty when only a digest was given
  std::string digest;      // "sha256:<hex>" or empty

  static Result<Reference> Parse(std::string_view text);
  // "registry/repository[:tag][@digest]"
  std::string ToString() const;
  // "registry/repository" — the prefix of every error message about this repository.
  std::string Name() const { return registry + "/" + repository; }
  // The digest when set, else the tag: what goes in /v2/<repo>/manifests/<here>.
  std::string ManifestRef() const { return digest.empty() ? tag : digest; }
  // Same registry and repository, another tag/digest.
  Reference WithDigest(std::string d) const { return {registry, repository, "", std::move(d)}; }
};

// Credentials for one registry host. Held only in memory; never logged.
struct Credentials {
  std::string username;
  std::string password;
  bool empty() const { return username.empty() && password.empty(); }
};

// Credentials from a docker-style config.json: auths.<host>.auth (base64 "user:pass") or
// auths.<host>.username/password. Keys may be "host", "https://host", "http://host/v1/" etc.;
// docker.io also matches "https://index.docker.io/v1/". A credHelpers/credsStore entry for the
// host yields an Unsupported error naming the helper (credential helpers are not run).
// NotFound when the file has no entry for the host.
Result<Credentials> CredentialsFromDockerConfig(std::string_view config_json, std::string_view host);

// The config files searched, in order: REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json,
// ~/.docker/config.json (only those that are set).
std::vector<std::filesystem::path> DefaultAuthFiles();

// One endpoint of a registry host: the default server or a hosts.toml mirror.
struct Endpoint {
  std::string base_url;  // "https://mirror.example/v2" (no trailing slash), always ends in the API root
  bool pull = true;      // serves blobs and manifests by digest
  bool resolve = true;   // serves tag → manifest
  bool push = true;
  bool skip_verify = false;
  std::string ca_file;  // PEM bundle for TLS verification; empty = system default
  std::map<std::string, std::string> headers;
};

// containerd's hosts.toml (<hosts_dir>/<host>/hosts.toml): mirrors in file order, then the server.
// `host` is the registry host as in a Reference ("docker.io", "127.0.0.1:5000"); default_server
// is the URL used when the file sets no `server`. A host URL without a path gets "/v2".
// `capabilities` default to pull+resolve+push, as in containerd.
Result<std::vector<Endpoint>> ParseHostsToml(std::string_view toml_text, std::string_view host,
                                             const std::string& default_server);

struct ClientOptions {
  // Talk plain HTTP (no TLS) to the registry's default server.
  bool plain_http = false;
  // Skip TLS certificate verification of the default server.
  bool tls_verify = true;
  std::string ca_file;
  // containerd hosts directory ("/etc/containerd/certs.d"); empty = none.
  std::filesystem::path hosts_dir;
  // Explicit credentials for every host (override config files).
  std::optional<Credentials> credentials;
  // Docker-style config files searched for credentials; empty = DefaultAuthFiles().
  std::vector<std::filesystem::path> auth_files;

  int max_parallel = 8;     // requests in flight across all threads
  int max_attempts = 4;     // per request, including the first
  std::chrono::milliseconds initial_backoff{200};
  std::chrono::milliseconds max_backoff{5000};
  std::chrono::milliseconds max_retry_after{10000};  // cap on a server's Retry-After
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds request_timeout{300000};  // total per attempt (blobs may be big)
  // An attempt fails when fewer than low_speed_bytes per second arrive for low_speed_time.
  long low_speed_bytes = 1;
  std::chrono::seconds low_speed_time{30};

  // PushBlob uploads blobs larger than this in PATCH chunks of upload_chunk_bytes; a streamed
  // upload (StartUpload, e.g. `lazycrypt encrypt` into docker://) PATCHes upload_chunk_bytes at
  // a time.
  uint64_t chunked_upload_threshold = 64ull << 20;
  uint64_t upload_chunk_bytes = 16ull << 20;
  std::string user_agent = "lazycrypt/0.1";
};

struct Manifest {
  std::vector<uint8_t> bytes;
  std::string media_type;
  std::string digest;  // "sha256:..." of bytes (verified when fetched by digest)
};

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// One range of a multi-range read, written in place: exactly out.size() bytes at `offset`.
struct RangeInto {
  uint64_t offset = 0;
  std::span<uint8_t> out;
};

class BlobUpload;

class Client {
 public:
  static Result<std::unique_ptr<Client>> Create(ClientOptions options = {});
  virtual ~Client() = default;

  // Fetches the manifest named by ref (tag or digest), accepting OCI and Docker manifests and
  // indexes. Verifies the digest when ref has one (AuthFailed on mismatch). NotFound names the
  // repository and the tag. Mirrors from hosts.toml are tried first.
  virtual Result<Manifest> GetManifest(const Reference& ref) = 0;

  // PUTs the manifest under ref's tag (or digest) on the first host with the push capability
  // (the server unless hosts.toml says otherwise). Returns the manifest's digest.
  virtual Result<std::string> PutManifest(const Reference& ref, ByteSpan bytes,
                                          std::string_view media_type) = 0;

  // PutManifest, and what the registry said beyond the digest: the OCI-Subject header a
  // registry with the Referrers API (OCI distribution 1.1) sends back for a manifest with a
  // `subject` ("" when absent: the pusher must maintain the referrers tag itself). The default
  // (fakes) reports no header.
  struct PutManifestAnswer {
    std::string digest;
    std::string oci_subject;
  };
  virtual Result<PutManifestAnswer> PutManifestWithAnswer(const Reference& ref, ByteSpan bytes,
                                                          std::string_view media_type) {
    auto digest = PutManifest(ref, bytes, media_type);
    if (!digest.ok()) return digest.status();
    return PutManifestAnswer{std::move(digest).value(), ""};
  }

  // GET /v2/<repo>/referrers/<subject_digest>[?artifactType=...] (OCI distribution 1.1), every
  // page (Link rel="next") up to kMaxReferrersPages, each at most 4 MiB like a manifest.
  // NotFound when the registry has no Referrers API (it answered 404: callers fall back to the
  // referrers tag schema); the default (fakes, registries without it) is NotFound too.
  struct ReferrersPage {
    std::vector<uint8_t> bytes;  // an OCI image index (not content-addressed: parse, don't trust)
    std::string media_type;      // Content-Type without parameters
    bool artifact_type_filter_applied = false;  // OCI-Filters-Applied lists artifactType
  };
  static constexpr size_t kMaxReferrersPages = 16;
  virtual Result<std::vector<ReferrersPage>> GetReferrers(const Reference& repo,
                                                          std::string_view subject_digest,
                                                          std::string_view artifact_type) {
    (void)subject_digest;
    (void)artifact_type;
    return Status::NotFound(repo.Name() + ": no Referrers API");
  }

  // HEAD: the blob's size, or NotFound.
  virtual Result<uint64_t> StatBlob(const Reference& repo, std::string_view digest) = 0;

  // Streams the whole blob into out (not Closed), verifying its digest as it goes; an
  // interrupted transfer resumes with a Range request. On AuthFailed (digest mismatch) the bytes
  // already written must be discarded by the caller.
  virtual Status GetBlob(const Reference& repo, std::string_view digest, OutputStream& out) = 0;

  // Reads exactly `length` bytes at `offset` (Range GET). Corruption if the blob is shorter.
  virtual Result<std::vector<uint8_t>> GetBlobRange(const Reference& repo, std::string_view digest,
                                                    uint64_t offset, uint64_t length) = 0;

  // Reads several ranges with one multi-range request when the server answers
  // multipart/byteranges; falls back to one request per range otherwise. Results in the order of
  // `ranges`.
  virtual Result<std::vector<std::vector<uint8_t>>> GetBlobRanges(
      const Reference& repo, std::string_view digest, std::span<const ByteRange> ranges) = 0;
  // The same, written straight into the caller's buffers: the client's answer streams into each
  // `out` as it arrives (multipart framing parsed on the fly), so a response of N bytes costs
  // the caller's N bytes and nothing else, where GetBlobRanges holds it once more per copy.
  // REQUIRES non-overlapping ranges. On error the contents of every `out` are unspecified.
  // The default calls GetBlobRanges and copies (for fakes).
  virtual Status ReadBlobRangesInto(const Reference& repo, std::string_view digest,
                                    std::span<const RangeInto> ranges) {
    std::vector<ByteRange> wanted;
    wanted.reserve(ranges.size());
    for (const RangeInto& r : ranges) wanted.push_back({r.offset, r.out.size()});
    auto parts = GetBlobRanges(repo, digest, wanted);
    if (!parts.ok()) return parts.status();
    if (parts->size() != ranges.size()) {
      return Status::Corruption("blob " + std::string(digest) + ": asked for " +
                                std::to_string(ranges.size()) + " ranges, got " +
                                std::to_string(parts->size()));
    }
    for (size_t i = 0; i < ranges.size(); ++i) {
      if ((*parts)[i].size() != ranges[i].out.size()) {
        return Status::Corruption("blob " + std::string(digest) + ": range at " +
                                  std::to_string(ranges[i].offset) + " came back with " +
                                  std::to_string((*parts)[i].size()) + " bytes, wanted " +
                                  std::to_string(ranges[i].out.size()));
      }
      std::copy((*parts)[i].begin(), (*parts)[i].end(), ranges[i].out.begin());
    }
    return Status::Ok();
  }

  // A thread-safe BlobSource over Range GETs. size 0 = HEAD the blob to learn it.
  // The client must outlive the source.
  virtual Result<std::unique_ptr<BlobSource>> OpenBlob(const Reference& repo,
                                                       std::string_view digest,
                                                       uint64_t size = 0) = 0;

  // Uploads a blob unless the registry has it already (HEAD). When mount_from names another
  // repository on the same registry, tries a cross-repository mount first. Small blobs go in one
  // POST+PUT, large ones in PATCH chunks. The digest is the caller's claim; the registry
  // verifies it.
  virtual Status PushBlob(const Reference& repo, std::string_view digest, BlobSource& data,
                          std::string_view mount_from = {}) = 0;

  // POST ?mount=<digest>&from=<from_repo>. True if mounted (201), false if the registry started
  // an ordinary upload instead (202; the upload is abandoned).
  virtual Result<bool> MountBlob(const Reference& repo, std::string_view digest,
                                 std::string_view from_repo) = 0;

  // Opens an upload session (POST) for a blob whose bytes are produced as it goes up and whose
  // digest is known only at the end: no temporary copy is needed. The client must outlive it.
  virtual Result<std::unique_ptr<BlobUpload>> StartUpload(const Reference& repo) = 0;

  // Response body bytes received from servers so far, over all requests (including bytes of
  // transfers cut off at a size limit). For metrics and for tests of those limits.
  virtual uint64_t BodyBytesReceived() const { return 0; }
  // HTTP requests sent (each attempt and each redirect hop counted once per transfer), and new
  // connections they opened: with connection reuse the second stays near the number of hosts.
  // For metrics and tests.
  virtual uint64_t RequestsSent() const { return 0; }
  virtual uint64_t ConnectionsOpened() const { return 0; }
};

// One upload session (OCI distribution "chunked upload"): PATCHes in order, then a PUT with the
// digest. Each request is retried like any other (the caller keeps the bytes of one Append, not
// of the blob). Not thread-safe: one caller at a time.
class BlobUpload {
 public:
  virtual ~BlobUpload() = default;
  // PATCHes the next `data.size()` (> 0) bytes of the blob.
  virtual Status Append(ByteSpan data) = 0;
  // PUT ?digest= with `last` (the blob's final bytes, may be empty) as its body: the registry
  // checks the digest against everything it received and stores the blob. A blob that fits in
  // memory goes up in this one request.
  virtual Status Finish(std::string_view digest, ByteSpan last) = 0;
  // Abandons the session (DELETE, best effort). Also done by the destructor of an unfinished
  // upload.
  virtual void Cancel() = 0;
  // Bytes appended so far.
  virtual uint64_t size() const = 0;
};

// Parses a multipart/byteranges body (RFC 7233 §4.1) with the given boundary. Each part must
// carry a Content-Range header. Returns (offset, bytes) per part in body order; `bytes` views
// `body` (no copy: valid while it lives).
struct RangePart {
  uint64_t offset = 0;
  ByteSpan bytes;
};
Result<std::vector<RangePart>> ParseMultipartByteranges(ByteSpan body, std::string_view boundary);

// Writes a multipart/byteranges body (RFC 7233 §4.1) into the caller's buffers as it arrives,
// keeping only the framing between parts (bounded): the bytes of each part go straight to the
// targets they cover. A target is complete once its bytes have come in order from its start
// (parts in any order, a part covering several targets, a target covered by several parts);
// bytes no target wants are dropped. The client reads what stays incomplete again on its own.
// Malformed framing (no boundary, a part without Content-Range, headers over 16 KiB, a part not
// followed by the boundary) is Corruption naming the part's number. Not thread-safe.
class MultipartRangeWriter {
 public:
  // `targets`: sorted by offset, not overlapping; they must outlive the writer. An empty
  // `boundary` makes a writer for a body that is one range (use WriteAt only).
  MultipartRangeWriter(std::string boundary, std::span<const RangeInto> targets);
  Status Feed(ByteSpan data);
  // Corruption when the closing boundary did not come.
  Status Finish() const;
  // Writes the blob bytes at `offset` into the targets they cover (a single-range body).
  void WriteAt(uint64_t offset, ByteSpan bytes);
  bool complete(size_t target) const;

 private:
  enum class State { kPreamble, kAfterBoundary, kHeaders, kBody, kAfterBody, kDone };
  Status ParseFraming();
  std::string delimiter_;  // "--" + boundary
  std::span<const RangeInto> targets_;
  std::vector<uint64_t> next_;  // per target: filled up to this blob offset
  State state_ = State::kPreamble;
  std::string pending_;  // framing bytes not parsed yet
  size_t part_ = 0;      // parts begun so far
  uint64_t part_offset_ = 0, part_left_ = 0;
};

// WWW-Authenticate: `<scheme> k="v",k2=v2`. Lowercase scheme and parameter names.
struct AuthChallenge {
  std::string scheme;  // "basic", "bearer"
  std::map<std::string, std::string> params;
};
Result<AuthChallenge> ParseAuthChallenge(std::string_view header);

// The bearer token in a token server's JSON answer ("token", else "access_token"; Docker's token
// authentication spec). Corruption when it is not JSON, nests too deep, or has no token.
Result<std::string> ParseTokenResponse(std::string_view body);

}  // namespace lazycrypt::registry
