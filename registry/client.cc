// The registry client over libcurl. Structure:
//   CurlPool      — easy handles reused across requests plus one share (connections, DNS, TLS
//                   sessions); handles are RAII, returned to the pool after each request.
//   PerformOnce   — one HTTP exchange with deadlines; body to a sink or a string.
//   Send          — auth (anonymous → challenge → basic/bearer, tokens cached per scope) and
//                   retries with exponential backoff + jitter on connection errors, 5xx and 429.
//   Client methods — endpoints from hosts.toml (mirrors first for pulls), then Send.
#include <curl/curl.h>

#include <algorithm>
#include <optional>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/json_depth.h"
#include "crypto/digest.h"
#include "keywrap/base64.h"
#include "registry/registry.h"

namespace lazycrypt::registry {
namespace {

using Clock = std::chrono::steady_clock;

// Caps on bodies held in memory (a hostile registry or token server must not make us buffer
// without bound). The distribution registry itself refuses manifests over 4 MiB.
constexpr size_t kMaxManifestBytes = 4u << 20;
constexpr size_t kMaxTokenBytes = 1u << 20;
// Any other collected 2xx body (upload session answers, HEAD): a few hundred bytes in practice.
constexpr size_t kMaxOtherBodyBytes = 1u << 20;
// Error bodies are only summarized: the rest is dropped, not an error.
constexpr size_t kMaxErrorBodyBytes = 64u << 10;
// A multi-range answer may add, per part, a boundary line and part headers (RFC 7233 §4.1; a
// boundary is at most 70 characters), and the server may coalesce ranges separated by gaps
// smaller than that overhead; plus the closing boundary.
constexpr uint64_t kMultipartPartOverheadBytes = 512;
constexpr uint64_t kMultipartSlackBytes = 4096;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return std::string(s);
}

std::string UrlEscape(std::string_view s) {
  std::string out;
  static const char* hex = "0123456789ABCDEF";
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

void EnsureCurlGlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlEasyDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
using CurlEasy = std::unique_ptr<CURL, CurlEasyDeleter>;
struct CurlSlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using CurlSlist = std::unique_ptr<curl_slist, CurlSlistDeleter>;
struct CurlShareDeleter {
  void operator()(CURLSH* s) const { curl_share_cleanup(s); }
};
using CurlShare = std::unique_ptr<CURLSH, CurlShareDeleter>;

// Easy handles (each keeps its connections) and a share for connections/DNS/TLS sessions.
// Thread-safe.
class CurlPool {
 public:
  CurlPool() {
    share_.reset(curl_share_init());
    if (share_) {
      curl_share_setopt(share_.get(), CURLSHOPT_LOCKFUNC, &CurlPool::Lock);
      curl_share_setopt(share_.get(), CURLSHOPT_UNLOCKFUNC, &CurlPool::Unlock);
      curl_share_setopt(share_.get(), CURLSHOPT_USERDATA, this);
      curl_share_setopt(share_.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
      curl_share_setopt(share_.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
      curl_share_setopt(share_.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    }
  }
  ~CurlPool() {
    free_.clear();  // easy handles go before the share they use
  }
  CurlPool(const CurlPool&) = delete;
  CurlPool& operator=(const CurlPool&) = delete;

  CurlEasy Acquire() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!free_.empty()) {
        CurlEasy h = std::move(free_.back());
        free_.pop_back();
        return h;
      }
    }
    return CurlEasy(curl_easy_init());
  }
  void Release(CurlEasy h) {
    if (!h) return;
    curl_easy_reset(h.get());
    std::lock_guard<std::mutex> l(mu_);
    if (free_.size() < 32) free_.push_back(std::move(h));
  }
  CURLSH* share() const { return share_.get(); }

 private:
  static void Lock(CURL*, curl_lock_data data, curl_lock_access, void* self) {
    static_cast<CurlPool*>(self)->locks_[static_cast<size_t>(data) % kLocks].lock();
  }
  static void Unlock(CURL*, curl_lock_data data, void* self) {
    static_cast<CurlPool*>(self)->locks_[static_cast<size_t>(data) % kLocks].unlock();
  }
  static constexpr size_t kLocks = CURL_LOCK_DATA_LAST;
  std::mutex locks_[kLocks];
  CurlShare share_;
  std::mutex mu_;
  std::vector<CurlEasy> free_;
};

// Bounds requests in flight.
class Semaphore {
 public:
  explicit Semaphore(int n) : n_(n) {}
  void Acquire() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return n_ > 0; });
    --n_;
  }
  void Release() {
    {
      std::lock_guard<std::mutex> l(mu_);
      ++n_;
    }
    cv_.notify_one();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_;
};

struct Response {
  long status = 0;
  std::map<std::string, std::string> headers;  // lowercase names, last value wins
  std::string body;                            // when no sink consumed it
  CURLcode curl_code = CURLE_OK;
  std::string curl_error;
  bool sink_stopped = false;  // the sink asked to stop early (it has what it needs)
  bool body_too_large = false;  // a collected 2xx body passed Request::max_body_bytes

  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// Receives the body of a 2xx answer. Returns false to stop the transfer (not an error).
using Sink = std::function<bool(const Response& head, ByteSpan data)>;

struct Request {
  std::string method = "GET";
  std::string url;
  std::vector<std::string> headers;
  ByteSpan body;          // PUT/PATCH/POST payload
  Sink sink;              // null: collect the body in Response::body
  // A collected 2xx body longer than this aborts the transfer with an error naming the limit.
  size_t max_body_bytes = kMaxOtherBodyBytes;
  // Called before each attempt (may add headers, e.g. a resumed Range, or reset sink state).
  std::function<void(std::vector<std::string>& headers)> prepare;
};

// "<registry>/<repo>: <what>" error helpers. The distribution error body is summarized.
std::string SummarizeErrorBody(const std::string& body) {
  if (body.empty()) return "";
  if (!CheckJsonDepth(body, "error body").ok()) return "(an error body nested too deep to read)";
  try {
    auto j = nlohmann::json::parse(body);
    if (j.contains("errors") && j["errors"].is_array() && !j["errors"].empty()) {
      std::string out;
      for (const auto& e : j["errors"]) {
        if (!out.empty()) out += "; ";
        out += e.value("code", "") + ": " + e.value("message", "");
      }
      return out;
    }
  } catch (const std::exception&) {
  }
  std::string s = body.substr(0, 200);
  for (char& c : s) {
    if (!std::isprint(static_cast<unsigned char>(c))) c = ' ';
  }
  return Trim(s);
}

bool RetryableCurl(CURLcode c) {
  switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
      return true;
    default:
      return false;
  }
}

bool RetryableHttp(long status) {
  return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

// "bytes a-b/total" → {a, b, total or -1}
std::optional<std::tuple<uint64_t, uint64_t, int64_t>> ParseContentRange(const std::string& v) {
  unsigned long long a = 0, b = 0;
  char total[32] = {0};
  if (std::sscanf(v.c_str(), "bytes %llu-%llu/%31s", &a, &b, total) < 2 || b < a) return std::nullopt;
  int64_t t = (total[0] && total[0] != '*') ? std::atoll(total) : -1;
  return std::make_tuple(uint64_t{a}, uint64_t{b}, t);
}

struct HostState {
  std::vector<Endpoint> endpoints;
  std::optional<Credentials> credentials;
  Status credentials_status;  // why credentials are absent (for messages)
  bool basic = false;         // the server asked for basic auth
  std::map<std::string, std::string> tokens;  // scope → bearer token
};

class BlobRangeSource;

class ClientImpl final : public Client {
 public:
  explicit ClientImpl(ClientOptions o) : opts_(std::move(o)), slots_(std::max(1, opts_.max_parallel)) {
    std::random_device rd;
    rng_.seed(rd());
  }

  Result<Manifest> GetManifest(const Reference& ref) override;
  Result<std::string> PutManifest(const Reference& ref, ByteSpan bytes,
                                  std::string_view media_type) override;
  Result<PutManifestAnswer> PutManifestWithAnswer(const Reference& ref, ByteSpan bytes,
                                                  std::string_view media_type) override;
  Result<std::vector<ReferrersPage>> GetReferrers(const Reference& repo,
                                                  std::string_view subject_digest,
                                                  std::string_view artifact_type) override;
  Result<uint64_t> StatBlob(const Reference& repo, std::string_view digest) override;
  Status GetBlob(const Reference& repo, std::string_view digest, OutputStream& out) override;
  Result<std::vector<uint8_t>> GetBlobRange(const Reference& repo, std::string_view digest,
                                            uint64_t offset, uint64_t length) override;
  Result<std::vector<std::vector<uint8_t>>> GetBlobRanges(const Reference& repo,
                                                          std::string_view digest,
                                                          std::span<const ByteRange> ranges) override;
  Status ReadBlobRangesInto(const Reference& repo, std::string_view digest,
                            std::span<const RangeInto> ranges) override;
  Result<std::unique_ptr<BlobSource>> OpenBlob(const Reference& repo, std::string_view digest,
                                               uint64_t size) override;
  Status PushBlob(const Reference& repo, std::string_view digest, BlobSource& data,
                  std::string_view mount_from) override;
  Result<bool> MountBlob(const Reference& repo, std::string_view digest,
                         std::string_view from_repo) override;
  Result<std::unique_ptr<BlobUpload>> StartUpload(const Reference& repo) override;

  // Reads exactly out.size() bytes at offset into out.
  Status ReadRangeInto(const Reference& repo, std::string_view digest, uint64_t offset,
                       MutableByteSpan out);

 private:
  friend class BlobUploadImpl;
  enum class Cap { kResolve, kPull, kPush };

  Result<std::vector<Endpoint>> Endpoints(const std::string& host, Cap cap);
  HostState& StateLocked(const std::string& host);
  Response PerformOnce(const Endpoint& ep, const Request& req, const std::vector<std::string>& headers);
  // One request with auth and retries. `what` names the operation for messages
  // ("GET manifest 'latest'"). Returns the final response (any status) or a transport error.
  Result<Response> Send(const Reference& repo, const Endpoint& ep, const std::string& scope,
                        Request req, const std::string& what);
  Status FetchToken(const Reference& repo, const Endpoint& ep, const AuthChallenge& ch,
                    const std::string& scope);
  std::optional<std::string> AuthHeader(const std::string& host, const std::string& scope);
  std::chrono::milliseconds Backoff(int attempt, const Response& r);
  Status HttpError(const Reference& repo, const std::string& what, const Response& r);

  // Runs `fn` on each endpoint with `cap` until one succeeds; the last error otherwise.
  template <typename T, typename Fn>
  Result<T> OnEndpoints(const Reference& repo, Cap cap, Fn fn) {
    LC_ASSIGN_OR_RETURN(auto eps, Endpoints(repo.registry, cap));
    Status last = Status::Internal("no endpoints");
    for (const auto& ep : eps) {
      Result<T> r = fn(ep);
      if (r.ok()) return r;
      last = r.status();
      // A digest mismatch or malformed data from a mirror is worth trying the next endpoint;
      // so is NotFound (mirrors may lag). All errors fall through.
    }
    return last;
  }

  ClientOptions opts_;
  CurlPool pool_;
  Semaphore slots_;
  std::mutex mu_;  // guards hosts_ and rng_
  std::map<std::string, HostState> hosts_;
  std::mt19937_64 rng_;
  std::atomic<uint64_t> body_bytes_received_{0};
  std::atomic<uint64_t> requests_sent_{0};
  std::atomic<uint64_t> connections_opened_{0};

 public:
  uint64_t RequestsSent() const override {
    return requests_sent_.load(std::memory_order_relaxed);
  }
  uint64_t ConnectionsOpened() const override {
    return connections_opened_.load(std::memory_order_relaxed);
  }
  uint64_t BodyBytesReceived() const override {
    return body_bytes_received_.load(std::memory_order_relaxed);
  }
};

size_t WriteCallback(char* ptr, size_t size, size_t nmemb, void* userdata);
size_t HeaderCallback(char* ptr, size_t size, size_t nmemb, void* userdata);

struct TransferState {
  Response* resp;
  const Request* req;
  std::atomic<uint64_t>* body_bytes_received;  // the client's counter, across all transfers
  bool head_done = false;
};

size_t HeaderCallback(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* st = static_cast<TransferState*>(userdata);
  size_t n = size * nmemb;
  std::string_view line(ptr, n);
  if (line.substr(0, 5) == "HTTP/") {
    // A new response (after a redirect or a 100 Continue): start over.
    st->resp->headers.clear();
    auto sp = line.find(' ');
    if (sp != std::string_view::npos) st->resp->status = std::atol(std::string(line.substr(sp + 1, 3)).c_str());
    return n;
  }
  auto colon = line.find(':');
  if (colon != std::string_view::npos) {
    st->resp->headers[Lower(Trim(line.substr(0, colon)))] = Trim(line.substr(colon + 1));
  }
  return n;
}

size_t WriteCallback(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* st = static_cast<TransferState*>(userdata);
  size_t n = size * nmemb;
  ByteSpan data(reinterpret_cast<const uint8_t*>(ptr), n);
  st->body_bytes_received->fetch_add(n, std::memory_order_relaxed);
  bool success = st->resp->status >= 200 && st->resp->status < 300;
  if (success && st->req->sink) {
    if (!st->req->sink(*st->resp, data)) {
      st->resp->sink_stopped = true;
      return CURL_WRITEFUNC_ERROR;
    }
    return n;
  }
  size_t limit = success ? st->req->max_body_bytes : kMaxErrorBodyBytes;
  if (st->resp->body.size() + n > limit) {
    if (!success) {
      st->resp->body.append(ptr, limit - st->resp->body.size());  // enough to summarize
      return n;
    }
    st->resp->body_too_large = true;
    return CURL_WRITEFUNC_ERROR;
  }
  st->resp->body.append(ptr, n);
  return n;
}

Response ClientImpl::PerformOnce(const Endpoint& ep, const Request& req,
                                 const std::vector<std::string>& headers) {
  Response resp;
  CurlEasy h = pool_.Acquire();
  if (!h) {
    resp.curl_code = CURLE_FAILED_INIT;
    resp.curl_error = "curl_easy_init failed";
    return resp;
  }
  CURL* c = h.get();
  TransferState st{&resp, &req, &body_bytes_received_};
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(c, CURLOPT_SHARE, pool_.share());
  curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_USERAGENT, opts_.user_agent.c_str());
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(opts_.connect_timeout.count()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(opts_.request_timeout.count()));
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, opts_.low_speed_bytes);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(opts_.low_speed_time.count()));
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  // Round trips decide cold start (issue 19): every request of every layer reuses the share's
  // connections (no new TCP and TLS handshake), HTTP/2 where a TLS registry offers it (libcurl's
  // default since 7.62, stated here because curl_easy_reset would not keep it), and TCP
  // keep-alive so that an idle connection between two pulls survives NAT timeouts.
  curl_easy_setopt(c, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &HeaderCallback);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &st);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &WriteCallback);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &st);
  if (ep.skip_verify) {
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (!ep.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, ep.ca_file.c_str());

  if (req.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (req.method != "GET") {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.body.empty() ? "" : reinterpret_cast<const char*>(req.body.data()));
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    // After a redirect keep the method (curl would turn POST into GET on 301/302/303).
    curl_easy_setopt(c, CURLOPT_POSTREDIR, static_cast<long>(CURL_REDIR_POST_ALL));
  }
  CurlSlist list;
  std::vector<std::string> all = headers;
  for (const auto& [k, v] : ep.headers) all.push_back(k + ": " + v);
  if (req.method != "GET" && req.method != "HEAD") all.push_back("Expect:");
  for (const auto& hdr : all) {
    curl_slist* n = curl_slist_append(list.get(), hdr.c_str());
    if (!n) break;
    list.release();
    list.reset(n);
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list.get());

  slots_.Acquire();
  resp.curl_code = curl_easy_perform(c);
  slots_.Release();
  requests_sent_.fetch_add(1, std::memory_order_relaxed);
  long new_connections = 0;
  if (curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &new_connections) == CURLE_OK &&
      new_connections > 0) {
    connections_opened_.fetch_add(static_cast<uint64_t>(new_connections),
                                  std::memory_order_relaxed);
  }
  if (resp.curl_code == CURLE_WRITE_ERROR && resp.sink_stopped) resp.curl_code = CURLE_OK;
  if (resp.curl_code == CURLE_WRITE_ERROR && resp.body_too_large) {
    // Not retryable (CURLE_WRITE_ERROR): the same server would send the same body again.
    resp.curl_error = "the response body exceeds the limit of " + std::to_string(req.max_body_bytes) +
                      " bytes for this request (transfer aborted)";
  } else if (resp.curl_code != CURLE_OK) {
    resp.curl_error = errbuf[0] ? errbuf : curl_easy_strerror(resp.curl_code);
  } else {
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (code) resp.status = code;
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, nullptr);
  pool_.Release(std::move(h));
  return resp;
}

HostState& ClientImpl::StateLocked(const std::string& host) {
  auto it = hosts_.find(host);
  if (it != hosts_.end()) return it->second;
  HostState& st = hosts_[host];
  // Credentials.
  if (opts_.credentials) {
    st.credentials = opts_.credentials;
  } else {
    auto files = opts_.auth_files.empty() ? DefaultAuthFiles() : opts_.auth_files;
    st.credentials_status = Status::NotFound("no credentials for " + host + " in any auth file");
    for (const auto& f : files) {
      std::ifstream in(f, std::ios::binary);
      if (!in) continue;
      std::stringstream ss;
      ss << in.rdbuf();
      auto c = CredentialsFromDockerConfig(ss.str(), host);
      if (c.ok()) {
        st.credentials = std::move(*c);
        st.credentials_status = Status::Ok();
        break;
      }
      if (c.status().code() != StatusCode::kNotFound) {
        st.credentials_status = c.status().WithContext(f.string());
        break;
      }
    }
  }
  return st;
}

Result<std::vector<Endpoint>> ClientImpl::Endpoints(const std::string& host, Cap cap) {
  std::vector<Endpoint> all;
  {
    std::lock_guard<std::mutex> l(mu_);
    HostState& st = StateLocked(host);
    if (st.endpoints.empty()) {
      std::string server_host = host == "docker.io" ? "registry-1.docker.io" : host;
      std::string default_server = (opts_.plain_http ? "http://" : "https://") + server_host;
      std::vector<Endpoint> eps;
      bool from_file = false;
      if (!opts_.hosts_dir.empty()) {
        for (const std::string& dir : {host, std::string("_default")}) {
          auto path = opts_.hosts_dir / dir / "hosts.toml";
          std::ifstream in(path, std::ios::binary);
          if (!in) continue;
          std::stringstream ss;
          ss << in.rdbuf();
          auto parsed = ParseHostsToml(ss.str(), host, default_server);
          if (!parsed.ok()) return parsed.status().WithContext(path.string());
          eps = std::move(*parsed);
          from_file = true;
          break;
        }
      }
      if (!from_file) {
        Endpoint ep;
        ep.base_url = default_server + "/v2";
        eps.push_back(ep);
      }
      // Client-wide TLS options apply to the server endpoint (the last one).
      if (!opts_.tls_verify) eps.back().skip_verify = true;
      if (!opts_.ca_file.empty() && eps.back().ca_file.empty()) eps.back().ca_file = opts_.ca_file;
      st.endpoints = std::move(eps);
    }
    all = st.endpoints;
  }
  std::vector<Endpoint> out;
  for (auto& ep : all) {
    bool ok = cap == Cap::kResolve ? ep.resolve : cap == Cap::kPull ? ep.pull : ep.push;
    if (ok) out.push_back(std::move(ep));
  }
  if (out.empty()) {
    return Status::FailedPrecondition(host + ": no host in hosts.toml has the capability to " +
                                      (cap == Cap::kResolve ? "resolve" : cap == Cap::kPull ? "pull" : "push"));
  }
  return out;
}

std::optional<std::string> ClientImpl::AuthHeader(const std::string& host, const std::string& scope) {
  std::lock_guard<std::mutex> l(mu_);
  HostState& st = StateLocked(host);
  if (auto it = st.tokens.find(scope); it != st.tokens.end()) {
    return "Authorization: Bearer " + it->second;
  }
  if (st.basic && st.credentials) {
    std::string up = st.credentials->username + ":" + st.credentials->password;
    std::string h = "Authorization: Basic " + keywrap::Base64Encode(AsBytes(up));
    std::fill(up.begin(), up.end(), '\0');
    return h;
  }
  return std::nullopt;
}

std::chrono::milliseconds ClientImpl::Backoff(int attempt, const Response& r) {
  if (std::string ra = r.Header("retry-after"); !ra.empty()) {
    char* end = nullptr;
    long secs = std::strtol(ra.c_str(), &end, 10);
    if (end != ra.c_str() && secs >= 0) {
      return std::min(std::chrono::milliseconds(secs * 1000), opts_.max_retry_after);
    }
  }
  auto base = opts_.initial_backoff * (1LL << std::min(attempt - 1, 16));
  base = std::min<std::chrono::milliseconds>(base, opts_.max_backoff);
  std::lock_guard<std::mutex> l(mu_);
  // Full jitter in [base/2, base].
  std::uniform_int_distribution<long long> d(base.count() / 2, std::max<long long>(base.count(), 1));
  return std::chrono::milliseconds(d(rng_));
}

Status ClientImpl::FetchToken(const Reference& repo, const Endpoint& ep, const AuthChallenge& ch,
                              const std::string& scope) {
  auto realm = ch.params.find("realm");
  if (realm == ch.params.end() || realm->second.empty()) {
    return Status::Corruption(repo.registry + ": bearer challenge without a realm");
  }
  std::string url = realm->second;
  url += url.find('?') == std::string::npos ? '?' : '&';
  bool first = true;
  auto add = [&](const std::string& k, const std::string& v) {
    if (!first) url += '&';
    first = false;
    url += k + "=" + UrlEscape(v);
  };
  if (auto s = ch.params.find("service"); s != ch.params.end()) add("service", s->second);
  // Our scope(s), space separated, each as its own parameter; plus the server's if different.
  std::vector<std::string> scopes;
  std::istringstream ss(scope);
  for (std::string s; ss >> s;) scopes.push_back(s);
  if (auto s = ch.params.find("scope"); s != ch.params.end() &&
      std::find(scopes.begin(), scopes.end(), s->second) == scopes.end()) {
    scopes.push_back(s->second);
  }
  for (const auto& s : scopes) add("scope", s);

  std::optional<Credentials> creds;
  {
    std::lock_guard<std::mutex> l(mu_);
    creds = StateLocked(repo.registry).credentials;
  }
  Request req;
  req.url = url;
  req.max_body_bytes = kMaxTokenBytes;
  std::vector<std::string> headers;
  if (creds) {
    std::string up = creds->username + ":" + creds->password;
    headers.push_back("Authorization: Basic " + keywrap::Base64Encode(AsBytes(up)));
    std::fill(up.begin(), up.end(), '\0');
  }
  Endpoint token_ep = ep;
  token_ep.headers.clear();
  Response r;
  for (int attempt = 1;; ++attempt) {
    r = PerformOnce(token_ep, req, headers);
    bool retry = r.curl_code != CURLE_OK ? RetryableCurl(r.curl_code) : RetryableHttp(r.status);
    if (!retry || attempt >= opts_.max_attempts) break;
    std::this_thread::sleep_for(Backoff(attempt, r));
  }
  if (r.curl_code != CURLE_OK) {
    if (r.body_too_large) {
      return Status::Corruption(repo.registry + ": token server " + realm->second + ": " + r.curl_error);
    }
    return Status::Unavailable(repo.registry + ": token server " + realm->second + ": " + r.curl_error);
  }
  if (r.status == 401 || r.status == 403) {
    return Status::PermissionDenied(std::to_string(r.status) + " unauthorized: " +
                                    (creds ? "wrong credentials for " : "no credentials for ") +
                                    repo.registry + " (token server refused)");
  }
  if (r.status != 200) {
    return Status::Unavailable(repo.registry + ": token server answered HTTP " + std::to_string(r.status));
  }
  auto token = ParseTokenResponse(r.body);
  if (!token.ok()) return token.status().WithContext(repo.registry);
  std::lock_guard<std::mutex> l(mu_);
  StateLocked(repo.registry).tokens[scope] = std::move(*token);
  return Status::Ok();
}

Status ClientImpl::HttpError(const Reference& repo, const std::string& what, const Response& r) {
  std::string msg = repo.Name() + ": " + what + ": HTTP " + std::to_string(r.status);
  std::string detail = SummarizeErrorBody(r.body);
  if (!detail.empty()) msg += " (" + detail + ")";
  if (r.status == 404) return Status::NotFound(msg);
  if (r.status == 401 || r.status == 403) return Status::PermissionDenied(msg);
  if (RetryableHttp(r.status)) return Status::Unavailable(msg);
  return Status::IoError(msg);
}

Result<Response> ClientImpl::Send(const Reference& repo, const Endpoint& ep, const std::string& scope,
                                  Request req, const std::string& what) {
  int auth_rounds = 0;
  Response r;
  auto started = Clock::now();
  for (int attempt = 1;;) {
    std::vector<std::string> headers = req.headers;
    if (req.prepare) req.prepare(headers);
    auto auth = AuthHeader(repo.registry, scope);
    if (auth) headers.push_back(*auth);
    r = PerformOnce(ep, req, headers);
    if (r.curl_code == CURLE_OK && r.status == 401 && auth_rounds < 2) {
      ++auth_rounds;
      auto hdr = r.Header("www-authenticate");
      auto ch = ParseAuthChallenge(hdr);
      if (!ch.ok()) return ch.status().WithContext(repo.registry);
      bool have_creds;
      Status why_not;
      {
        std::lock_guard<std::mutex> l(mu_);
        HostState& st = StateLocked(repo.registry);
        have_creds = st.credentials.has_value();
        why_not = st.credentials_status;
      }
      if (ch->scheme == "basic") {
        if (!have_creds) {
          return Status::PermissionDenied("401 unauthorized: " + repo.registry +
                                          " requires credentials and none were found (" +
                                          why_not.message() + ")");
        }
        bool already;
        {
          std::lock_guard<std::mutex> l(mu_);
          HostState& st = StateLocked(repo.registry);
          already = st.basic;
          st.basic = true;
        }
        if (already && auth) {
          return Status::PermissionDenied("401 unauthorized: wrong credentials for " + repo.registry);
        }
        continue;
      }
      if (ch->scheme == "bearer") {
        if (auth && auth->find("Bearer") != std::string::npos && auth_rounds > 1) {
          return Status::PermissionDenied("401 unauthorized: the token for " + repo.registry +
                                          " was refused" + (have_creds ? " (wrong credentials?)" : ""));
        }
        LC_RETURN_IF_ERROR(FetchToken(repo, ep, *ch, scope));
        continue;
      }
      return Status::Unsupported(repo.registry + ": unsupported auth scheme '" + ch->scheme + "'");
    }
    if (r.curl_code == CURLE_OK && r.status == 401) {
      return Status::PermissionDenied("401 unauthorized: wrong credentials for " + repo.registry);
    }
    bool retry = r.curl_code != CURLE_OK ? RetryableCurl(r.curl_code) : RetryableHttp(r.status);
    if (!retry) break;
    if (attempt >= opts_.max_attempts) {
      auto secs = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
      if (r.curl_code != CURLE_OK) {
        StatusCode code = r.curl_code == CURLE_OPERATION_TIMEDOUT ? StatusCode::kDeadlineExceeded
                                                                  : StatusCode::kUnavailable;
        return Status(code, repo.Name() + ": " + what + ": " + r.curl_error + " (gave up after " +
                                std::to_string(attempt) + " attempts, " + std::to_string(secs) + " ms)");
      }
      return HttpError(repo, what + " (gave up after " + std::to_string(attempt) + " attempts)", r);
    }
    std::this_thread::sleep_for(Backoff(attempt, r));
    ++attempt;
  }
  if (r.curl_code != CURLE_OK) {
    return Status::IoError(repo.Name() + ": " + what + ": " + r.curl_error);
  }
  return r;
}

std::string ManifestUrl(const Endpoint& ep, const Reference& ref, const std::string& which) {
  return ep.base_url + "/" + ref.repository + "/manifests/" + which;
}
std::string BlobUrl(const Endpoint& ep, const Reference& ref, std::string_view digest) {
  return ep.base_url + "/" + ref.repository + "/blobs/" + std::string(digest);
}
std::string PullScope(const Reference& r) { return "repository:" + r.repository + ":pull"; }
std::string PushScope(const Reference& r) { return "repository:" + r.repository + ":pull,push"; }

Status CheckDigestSyntax(const Reference& repo, std::string_view digest) {
  if (digest.substr(0, 7) != "sha256:") {
    return Status::InvalidArgument(repo.Name() + ": unsupported digest '" + std::string(digest) +
                                   "' (only sha256)");
  }
  auto d = crypto::ParseOciDigest(digest);
  if (!d.ok()) return Status::InvalidArgument(repo.Name() + ": malformed digest '" + std::string(digest) + "'");
  return Status::Ok();
}

// ---- manifests ----

Result<Manifest> ClientImpl::GetManifest(const Reference& ref) {
  std::string which = ref.ManifestRef();
  if (which.empty()) return Status::InvalidArgument(ref.Name() + ": reference has no tag or digest");
  if (!ref.digest.empty()) LC_RETURN_IF_ERROR(CheckDigestSyntax(ref, ref.digest));
  Cap cap = ref.digest.empty() ? Cap::kResolve : Cap::kPull;
  return OnEndpoints<Manifest>(ref, cap, [&](const Endpoint& ep) -> Result<Manifest> {
    Request req;
    req.url = ManifestUrl(ep, ref, which);
    req.max_body_bytes = kMaxManifestBytes;
    req.headers.push_back("Accept: " + std::string(kOciManifest) + ", " + std::string(kOciIndex) + ", " +
                          std::string(kDockerManifest) + ", " + std::string(kDockerManifestList));
    std::string what = "GET manifest '" + which + "'";
    LC_ASSIGN_OR_RETURN(Response r, Send(ref, ep, PullScope(ref), req, what));
    if (r.status == 404) {
      return Status::NotFound(ref.Name() + ": manifest '" + which + "' not found");
    }
    if (r.status != 200) return HttpError(ref, what, r);
    Manifest m;
    m.bytes.assign(r.body.begin(), r.body.end());
    m.media_type = r.Header("content-type");
    if (auto semi = m.media_type.find(';'); semi != std::string::npos) m.media_type = Trim(m.media_type.substr(0, semi));
    m.digest = crypto::OciDigest(crypto::Sha256::Of(m.bytes));
    if (!ref.digest.empty() && m.digest != ref.digest) {
      return Status::AuthFailed(ref.Name() + ": manifest fetched by digest " + ref.digest +
                                " hashes to " + m.digest);
    }
    std::string claimed = r.Header("docker-content-digest");
    if (!claimed.empty() && claimed.substr(0, 7) == "sha256:" && claimed != m.digest) {
      return Status::AuthFailed(ref.Name() + ": manifest '" + which + "' hashes to " + m.digest +
                                " but the registry claims " + claimed);
    }
    if (m.media_type.empty() || m.media_type == "application/json" || m.media_type == "text/plain") {
      // Fall back to the manifest's own mediaType field.
      LC_RETURN_IF_ERROR(CheckJsonDepth(r.body, ref.Name() + ": manifest '" + which + "'"));
      try {
        auto j = nlohmann::json::parse(r.body);
        if (j.is_object() && j.contains("mediaType") && j["mediaType"].is_string()) {
          m.media_type = j["mediaType"].get<std::string>();
        }
      } catch (const std::exception&) {
        return Status::Corruption(ref.Name() + ": manifest '" + which + "' is not JSON");
      }
    }
    return m;
  });
}

Result<std::string> ClientImpl::PutManifest(const Reference& ref, ByteSpan bytes,
                                            std::string_view media_type) {
  LC_ASSIGN_OR_RETURN(PutManifestAnswer answer, PutManifestWithAnswer(ref, bytes, media_type));
  return std::move(answer.digest);
}

Result<Client::PutManifestAnswer> ClientImpl::PutManifestWithAnswer(const Reference& ref,
                                                                    ByteSpan bytes,
                                                                    std::string_view media_type) {
  std::string which = ref.ManifestRef();
  if (which.empty()) return Status::InvalidArgument(ref.Name() + ": reference has no tag or digest");
  std::string digest = crypto::OciDigest(crypto::Sha256::Of(bytes));
  if (!ref.digest.empty() && ref.digest != digest) {
    return Status::InvalidArgument(ref.Name() + ": manifest bytes hash to " + digest + ", not " + ref.digest);
  }
  // Pushes go to the first host with the push capability (as containerd does), no fallback:
  // blobs and manifests must land on the same registry.
  LC_ASSIGN_OR_RETURN(auto eps, Endpoints(ref.registry, Cap::kPush));
  const Endpoint& ep = eps.front();
  {
    Request req;
    req.method = "PUT";
    req.url = ManifestUrl(ep, ref, which);
    req.body = bytes;
    req.headers.push_back("Content-Type: " + std::string(media_type));
    std::string what = "PUT manifest '" + which + "'";
    LC_ASSIGN_OR_RETURN(Response r, Send(ref, ep, PushScope(ref), req, what));
    if (r.status != 201 && r.status != 200) return HttpError(ref, what, r);
    std::string claimed = r.Header("docker-content-digest");
    if (!claimed.empty() && claimed != digest) {
      return Status::Corruption(ref.Name() + ": registry stored manifest '" + which + "' as " +
                                claimed + ", expected " + digest);
    }
    return PutManifestAnswer{digest, r.Header("oci-subject")};
  }
}

// The target of a Link header's rel="next" (RFC 5988: `<url>; rel="next"`), made absolute
// against the endpoint's scheme and host when it is a path. "" when there is none. A page on
// another origin is refused (Corruption): the request would carry this registry's credentials.
Result<std::string> NextPageUrl(const Reference& repo, const Endpoint& ep, const std::string& link) {
  size_t open = link.find('<');
  if (open == std::string::npos) return std::string();
  size_t close = link.find('>', open);
  if (close == std::string::npos) return std::string();
  std::string params = Lower(link.substr(close));
  if (params.find("rel=\"next\"") == std::string::npos && params.find("rel=next") == std::string::npos) {
    return std::string();
  }
  std::string target = link.substr(open + 1, close - open - 1);
  size_t scheme_end = ep.base_url.find("://");
  size_t host_end = scheme_end == std::string::npos ? std::string::npos
                                                    : ep.base_url.find('/', scheme_end + 3);
  std::string origin = ep.base_url.substr(0, host_end);
  if (!target.empty() && target.front() == '/') return origin + target;
  if (target.rfind(origin + "/", 0) == 0) return target;
  return Status::Corruption(repo.Name() + ": the referrers list links its next page elsewhere");
}

Result<std::vector<Client::ReferrersPage>> ClientImpl::GetReferrers(const Reference& repo,
                                                                    std::string_view subject_digest,
                                                                    std::string_view artifact_type) {
  LC_RETURN_IF_ERROR(CheckDigestSyntax(repo, subject_digest));
  using Pages = std::vector<ReferrersPage>;
  return OnEndpoints<Pages>(repo, Cap::kPull, [&](const Endpoint& ep) -> Result<Pages> {
    Pages pages;
    std::string url = ep.base_url + "/" + repo.repository + "/referrers/" + std::string(subject_digest);
    if (!artifact_type.empty()) url += "?artifactType=" + UrlEscape(artifact_type);
    const std::string what = "GET referrers of " + std::string(subject_digest);
    while (!url.empty()) {
      if (pages.size() >= kMaxReferrersPages) {
        return Status::Corruption(repo.Name() + ": " + what + ": more than " +
                                  std::to_string(kMaxReferrersPages) + " pages");
      }
      Request req;
      req.url = url;
      req.max_body_bytes = kMaxManifestBytes;
      req.headers.push_back("Accept: " + std::string(kOciIndex));
      LC_ASSIGN_OR_RETURN(Response r, Send(repo, ep, PullScope(repo), req, what));
      if (r.status == 404) {
        // Only the first page tells whether the API exists; a later 404 is an error.
        if (pages.empty()) return Status::NotFound(repo.Name() + ": no Referrers API (" + what + ": HTTP 404)");
        return HttpError(repo, what, r);
      }
      if (r.status != 200) return HttpError(repo, what, r);
      ReferrersPage page;
      page.bytes.assign(r.body.begin(), r.body.end());
      page.media_type = r.Header("content-type");
      if (auto semi = page.media_type.find(';'); semi != std::string::npos) {
        page.media_type = Trim(page.media_type.substr(0, semi));
      }
      page.artifact_type_filter_applied =
          Lower(r.Header("oci-filters-applied")).find("artifacttype") != std::string::npos;
      pages.push_back(std::move(page));
      LC_ASSIGN_OR_RETURN(url, NextPageUrl(repo, ep, r.Header("link")));
    }
    return pages;
  });
}

// ---- blobs ----

Result<uint64_t> ClientImpl::StatBlob(const Reference& repo, std::string_view digest) {
  LC_RETURN_IF_ERROR(CheckDigestSyntax(repo, digest));
  return OnEndpoints<uint64_t>(repo, Cap::kPull, [&](const Endpoint& ep) -> Result<uint64_t> {
    Request req;
    req.method = "HEAD";
    req.url = BlobUrl(ep, repo, digest);
    std::string what = "HEAD blob " + std::string(digest);
    LC_ASSIGN_OR_RETURN(Response r, Send(repo, ep, PullScope(repo), req, what));
    if (r.status == 404) return Status::NotFound(repo.Name() + ": blob " + std::string(digest) + " not found");
    if (r.status != 200) return HttpError(repo, what, r);
    std::string len = r.Header("content-length");
    if (len.empty()) return Status::Corruption(repo.Name() + ": HEAD blob " + std::string(digest) + ": no Content-Length");
    return static_cast<uint64_t>(std::strtoull(len.c_str(), nullptr, 10));
  });
}

Status ClientImpl::GetBlob(const Reference& repo, std::string_view digest, OutputStream& out) {
  LC_RETURN_IF_ERROR(CheckDigestSyntax(repo, digest));
  // Progress survives attempts and endpoints: a retry resumes at `written` with a Range request.
  uint64_t written = 0;
  crypto::Sha256 sha;
  Status write_status;
  auto r = OnEndpoints<bool>(repo, Cap::kPull, [&](const Endpoint& ep) -> Result<bool> {
    write_status = Status::Ok();
    Request req;
    req.url = BlobUrl(ep, repo, digest);
    uint64_t attempt_start = 0;  // the offset this attempt's body starts at
    uint64_t skip = 0;           // bytes to drop (a server that ignored our Range)
    req.prepare = [&](std::vector<std::string>& headers) {
      attempt_start = written;
      skip = 0;
      if (written > 0) headers.push_back("Range: bytes=" + std::to_string(written) + "-");
    };
    req.sink = [&](const Response& head, ByteSpan data) {
      if (head.status == 206 && written == attempt_start && skip == 0) {
        auto cr = ParseContentRange(head.Header("content-range"));
        if (!cr || std::get<0>(*cr) != attempt_start) {
          write_status = Status::Corruption(repo.Name() + ": GET blob " + std::string(digest) +
                                            ": resumed at " + std::to_string(attempt_start) +
                                            " but the server answered Content-Range '" +
                                            head.Header("content-range") + "'");
          return false;
        }
      }
      if (head.status == 200 && attempt_start > 0 && skip == 0 && written == attempt_start) {
        skip = attempt_start;  // full body again: drop what we have
        attempt_start = 0;
      }
      if (skip > 0) {
        uint64_t drop = std::min<uint64_t>(skip, data.size());
        data = data.subspan(drop);
        skip -= drop;
      }
      if (data.empty()) return true;
      write_status = out.Write(data);
      if (!write_status.ok()) return false;
      sha.Update(data);
      written += data.size();
      return true;
    };
    std::string what = "GET blob " + std::string(digest);
    LC_ASSIGN_OR_RETURN(Response resp, Send(repo, ep, PullScope(repo), req, what));
    if (!write_status.ok()) return write_status;
    if (resp.status == 404) return Status::NotFound(repo.Name() + ": blob " + std::string(digest) + " not found");
    if (resp.status == 416 && written > 0) return true;  // resumed exactly at the end
    if (resp.status != 200 && resp.status != 206) return HttpError(repo, what, resp);
    return true;
  });
  if (!r.ok()) return r.status();
  std::string got = crypto::OciDigest(sha.Finish());
  if (got != digest) {
    return Status::AuthFailed(repo.Name() + ": blob " + std::string(digest) + " hashes to " + got +
                              " (" + std::to_string(written) + " bytes)");
  }
  return Status::Ok();
}

Status ClientImpl::ReadRangeInto(const Reference& repo, std::string_view digest, uint64_t offset,
                                 MutableByteSpan out) {
  if (out.empty()) return Status::Ok();
  LC_RETURN_IF_ERROR(CheckDigestSyntax(repo, digest));
  uint64_t filled = 0;
  auto r = OnEndpoints<bool>(repo, Cap::kPull, [&](const Endpoint& ep) -> Result<bool> {
    Request req;
    req.url = BlobUrl(ep, repo, digest);
    uint64_t body_pos = 0;      // offset in the blob of the next body byte of this attempt
    bool bad_range = false;
    req.prepare = [&](std::vector<std::string>& headers) {
      body_pos = UINT64_MAX;
      headers.push_back("Range: bytes=" + std::to_string(offset + filled) + "-" +
                        std::to_string(offset + out.size() - 1));
    };
    req.sink = [&](const Response& head, ByteSpan data) {
      if (body_pos == UINT64_MAX) {
        if (head.status == 206) {
          auto cr = ParseContentRange(head.Header("content-range"));
          if (!cr || std::get<0>(*cr) != offset + filled) {
            bad_range = true;
            return false;
          }
          body_pos = std::get<0>(*cr);
        } else {
          body_pos = 0;  // 200: the whole blob
        }
      }
      uint64_t want_begin = offset + filled;
      uint64_t want_end = offset + out.size();
      uint64_t begin = body_pos, end = body_pos + data.size();
      body_pos = end;
      if (end <= want_begin) return true;
      uint64_t from = std::max(begin, want_begin);
      uint64_t to = std::min(end, want_end);
      if (from < to) {
        std::memcpy(out.data() + (from - offset), data.data() + (from - begin), to - from);
        filled = to - offset;
      }
      // Stop only a body that runs past the range (a 200 with the whole blob, or a server
      // answering more than asked: cut off as it arrives). A body that ends exactly at the
      // range's end is read to its end, so that curl keeps the connection for the next request
      // (stopping at the last byte aborts the transfer and closes the connection: one new TCP and
      // TLS handshake per ranged read).
      return end <= want_end;
    };
    std::string what = "GET blob " + std::string(digest) + " range " + std::to_string(offset) + "+" +
                       std::to_string(out.size());
    LC_ASSIGN_OR_RETURN(Response resp, Send(repo, ep, PullScope(repo), req, what));
    if (bad_range) {
      return Status::Corruption(repo.Name() + ": " + what + ": server answered Content-Range '" +
                                resp.Header("content-range") + "'");
    }
    if (resp.status == 404) return Status::NotFound(repo.Name() + ": blob " + std::string(digest) + " not found");
    if (resp.status == 416) {
      return Status::Corruption(repo.Name() + ": " + what + ": range not satisfiable (blob is shorter)");
    }
    if (resp.status != 200 && resp.status != 206) return HttpError(repo, what, resp);
    if (filled < out.size()) {
      return Status::Corruption(repo.Name() + ": " + what + ": blob ended after " +
                                std::to_string(offset + filled) + " bytes");
    }
    return true;
  });
  return r.status();
}

Result<std::vector<uint8_t>> ClientImpl::GetBlobRange(const Reference& repo, std::string_view digest,
                                                      uint64_t offset, uint64_t length) {
  std::vector<uint8_t> out(length);
  LC_RETURN_IF_ERROR(ReadRangeInto(repo, digest, offset, out));
  return out;
}

Result<std::vector<std::vector<uint8_t>>> ClientImpl::GetBlobRanges(const Reference& repo,
                                                                    std::string_view digest,
                                                                    std::span<const ByteRange> ranges) {
  std::vector<std::vector<uint8_t>> results(ranges.size());
  std::vector<RangeInto> into(ranges.size());
  for (size_t i = 0; i < ranges.size(); ++i) {
    results[i].resize(ranges[i].length);
    into[i] = {ranges[i].offset, results[i]};
  }
  LC_RETURN_IF_ERROR(ReadBlobRangesInto(repo, digest, into));
  return results;
}

Status ClientImpl::ReadBlobRangesInto(const Reference& repo, std::string_view digest,
                                      std::span<const RangeInto> ranges) {
  LC_RETURN_IF_ERROR(CheckDigestSyntax(repo, digest));
  // The non-empty ranges, by offset (the writer wants them sorted; the request asks for them so).
  std::vector<RangeInto> targets;
  for (const RangeInto& r : ranges) {
    if (!r.out.empty()) targets.push_back(r);
  }
  std::sort(targets.begin(), targets.end(),
            [](const RangeInto& a, const RangeInto& b) { return a.offset < b.offset; });
  std::vector<bool> done(targets.size(), false);
  // Whatever one request did not bring is read with a request of its own (ReadRangeInto keeps
  // only the bytes it asked for).
  auto read_the_rest = [&]() -> Status {
    for (size_t i = 0; i < targets.size(); ++i) {
      if (!done[i]) LC_RETURN_IF_ERROR(ReadRangeInto(repo, digest, targets[i].offset, targets[i].out));
    }
    return Status::Ok();
  };
  if (targets.size() <= 1) return read_the_rest();

  std::string spec = "bytes=";
  uint64_t wanted = 0;
  for (size_t k = 0; k < targets.size(); ++k) {
    if (k) spec += ",";
    spec += std::to_string(targets[k].offset) + "-" +
            std::to_string(targets[k].offset + targets[k].out.size() - 1);
    wanted += targets[k].out.size();
  }
  auto eps = Endpoints(repo.registry, Cap::kPull);
  if (!eps.ok()) return eps.status();
  const Endpoint& ep = eps->front();
  Request req;
  req.url = BlobUrl(ep, repo, digest);
  // The answer is written into the targets as it arrives (MultipartRangeWriter): nothing but
  // the framing between parts is held here. More than the ranges plus their multipart framing
  // is never needed: a server that sends more (the whole blob, padded parts) is cut off as the
  // bytes arrive, and what did not come is read one request per range.
  const uint64_t max_body =
      wanted + kMultipartPartOverheadBytes * targets.size() + kMultipartSlackBytes;
  std::optional<MultipartRangeWriter> writer;
  bool multipart = false;
  uint64_t received = 0, plain_at = 0;
  Status parse_status;
  req.prepare = [&](std::vector<std::string>& headers) {
    writer.reset();
    received = 0;
    parse_status = Status::Ok();
    headers.push_back("Range: " + spec);
  };
  req.sink = [&](const Response& head, ByteSpan data) {
    received += data.size();
    if (received > max_body) return false;
    if (!writer) {
      const std::string ctype = Lower(head.Header("content-type"));
      multipart = head.status == 206 && ctype.find("multipart/byteranges") != std::string::npos;
      std::string boundary;
      if (multipart) {
        const std::string raw = head.Header("content-type");
        auto b = ctype.find("boundary=");
        if (b == std::string::npos) return false;
        boundary = raw.substr(b + 9);
        if (auto semi = boundary.find(';'); semi != std::string::npos) {
          boundary = boundary.substr(0, semi);
        }
        boundary = Trim(boundary);
        if (boundary.size() >= 2 && boundary.front() == '"' && boundary.back() == '"') {
          boundary = boundary.substr(1, boundary.size() - 2);
        }
        if (boundary.empty()) return false;
      } else if (head.status == 206) {
        auto cr = ParseContentRange(head.Header("content-range"));
        if (!cr) return false;
        plain_at = std::get<0>(*cr);
      } else {
        plain_at = 0;  // 200: the whole blob
      }
      writer.emplace(std::move(boundary), targets);
    }
    if (multipart) {
      parse_status = writer->Feed(data);
      return parse_status.ok();
    }
    writer->WriteAt(plain_at, data);
    plain_at += data.size();
    return true;
  };
  const std::string what = "GET blob " + std::string(digest) + " ranges " + spec;
  auto resp = Send(repo, ep, PullScope(repo), req, what);
  if (!parse_status.ok()) return parse_status.WithContext(repo.Name() + ": " + what);
  if (resp.ok() && resp->status == 206 && multipart && writer) {
    LC_RETURN_IF_ERROR(writer->Finish().WithContext(repo.Name() + ": " + what));
  }
  if (writer) {
    for (size_t i = 0; i < targets.size(); ++i) done[i] = writer->complete(i);
  }
  return read_the_rest();
}

class BlobRangeSource final : public BlobSource {
 public:
  BlobRangeSource(ClientImpl& client, Reference repo, std::string digest, uint64_t size)
      : client_(client), repo_(std::move(repo)), digest_(std::move(digest)), size_(size) {}
  uint64_t size() const override { return size_; }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    if (offset > size_ || out.size() > size_ - offset) {
      return Status::Corruption(repo_.Name() + ": blob " + digest_ + ": read of " +
                                std::to_string(out.size()) + " bytes at " + std::to_string(offset) +
                                " is past its end (" + std::to_string(size_) + " bytes)");
    }
    return client_.ReadRangeInto(repo_, digest_, offset, out);
  }

 private:
  ClientImpl& client_;
  const Reference repo_;
  const std::string digest_;
  const uint64_t size_;
};

Result<std::unique_ptr<BlobSource>> ClientImpl::OpenBlob(const Reference& repo, std::string_view digest,
                                                         uint64_t size) {
  LC_RETURN_IF_ERROR(CheckDigestSyntax(repo, digest));
  if (size == 0) {
    LC_ASSIGN_OR_RETURN(size, StatBlob(repo, digest));
  }
  return std::unique_ptr<BlobSource>(new BlobRangeSource(*this, repo, std::string(digest), size));
}

// Resolves a Location header against the endpoint's scheme://host.
std::string ResolveLocation(const Endpoint& ep, const std::string& loc) {
  if (loc.find("://") != std::string::npos) return loc;
  auto scheme = ep.base_url.find("://");
  auto path = ep.base_url.find('/', scheme + 3);
  std::string origin = ep.base_url.substr(0, path);
  if (!loc.empty() && loc.front() == '/') return origin + loc;
  return origin + "/" + loc;
}

Result<bool> ClientImpl::MountBlob(const Reference& repo, std::string_view digest,
                                   std::string_view from_repo) {
  LC_RETURN_IF_ERROR(CheckDigestSyntax(repo, digest));
  LC_ASSIGN_OR_RETURN(auto eps, Endpoints(repo.registry, Cap::kPush));
  const Endpoint& ep = eps.front();
  Request req;
  req.method = "POST";
  req.url = ep.base_url + "/" + repo.repository + "/blobs/uploads/?mount=" + UrlEscape(digest) +
            "&from=" + UrlEscape(from_repo);
  std::string scope = PushScope(repo) + " repository:" + std::string(from_repo) + ":pull";
  std::string what = "mount blob " + std::string(digest) + " from " + std::string(from_repo);
  LC_ASSIGN_OR_RETURN(Response r, Send(repo, ep, scope, req, what));
  if (r.status == 201) return true;
  if (r.status == 202) {
    // An upload session was opened instead; cancel it (best effort).
    std::string loc = r.Header("location");
    if (!loc.empty()) {
      Request del;
      del.method = "DELETE";
      del.url = ResolveLocation(ep, loc);
      (void)Send(repo, ep, PushScope(repo), del, "cancel upload");
    }
    return false;
  }
  return HttpError(repo, what, r);
}

// An upload session: PATCHes with Content-Range, then the PUT. A PATCH that failed before the
// registry took it (5xx, 429, a refused connection) is retried like any request. One whose
// answer was lost after the registry applied it cannot be: docker distribution then drops the
// session ("upload resumed at wrong offset"), and the upload fails naming the PATCH.
class BlobUploadImpl final : public BlobUpload {
 public:
  BlobUploadImpl(ClientImpl& client, Reference repo, Endpoint ep, std::string location)
      : client_(client), repo_(std::move(repo)), ep_(std::move(ep)), scope_(PushScope(repo_)),
        location_(std::move(location)) {}
  ~BlobUploadImpl() override { Cancel(); }

  Status Append(ByteSpan data) override {
    if (done_) return Status::FailedPrecondition("upload session already ended");
    if (data.empty()) return Status::Ok();
    Request patch;
    patch.method = "PATCH";
    patch.url = location_;
    patch.body = data;
    patch.headers.push_back("Content-Type: application/octet-stream");
    patch.headers.push_back("Content-Range: " + std::to_string(pos_) + "-" +
                            std::to_string(pos_ + data.size() - 1));
    const std::string what = "PATCH upload at byte " + std::to_string(pos_);
    LC_ASSIGN_OR_RETURN(Response r, client_.Send(repo_, ep_, scope_, patch, what));
    if (r.status != 202) return client_.HttpError(repo_, what, r);
    std::string next = r.Header("location");
    if (!next.empty()) location_ = ResolveLocation(ep_, next);
    pos_ += data.size();
    return Status::Ok();
  }

  Status Finish(std::string_view digest, ByteSpan last) override {
    if (done_) return Status::FailedPrecondition("upload session already ended");
    LC_RETURN_IF_ERROR(CheckDigestSyntax(repo_, digest));
    Request put;
    put.method = "PUT";
    put.url = location_ + (location_.find('?') == std::string::npos ? "?" : "&") +
              "digest=" + UrlEscape(digest);
    if (!last.empty()) {
      put.body = last;
      put.headers.push_back("Content-Type: application/octet-stream");
    }
    const std::string what = "finish upload of " + std::string(digest);
    LC_ASSIGN_OR_RETURN(Response r, client_.Send(repo_, ep_, scope_, put, what));
    if (r.status != 201) return client_.HttpError(repo_, what, r);
    done_ = true;
    pos_ += last.size();
    return Status::Ok();
  }

  void Cancel() override {
    if (done_) return;
    done_ = true;
    // One attempt, no retries: the registry expires abandoned sessions on its own.
    Request del;
    del.method = "DELETE";
    del.url = location_;
    std::vector<std::string> headers;
    if (auto auth = client_.AuthHeader(repo_.registry, scope_)) headers.push_back(*auth);
    (void)client_.PerformOnce(ep_, del, headers);
  }

  uint64_t size() const override { return pos_; }

 private:
  ClientImpl& client_;
  const Reference repo_;
  const Endpoint ep_;
  const std::string scope_;
  std::string location_;
  uint64_t pos_ = 0;
  bool done_ = false;
};

Result<std::unique_ptr<BlobUpload>> ClientImpl::StartUpload(const Reference& repo) {
  LC_ASSIGN_OR_RETURN(auto eps, Endpoints(repo.registry, Cap::kPush));
  const Endpoint& ep = eps.front();
  Request start;
  start.method = "POST";
  start.url = ep.base_url + "/" + repo.repository + "/blobs/uploads/";
  const std::string what = "start upload";
  LC_ASSIGN_OR_RETURN(Response r, Send(repo, ep, PushScope(repo), start, what));
  if (r.status != 202) return HttpError(repo, what, r);
  std::string location = r.Header("location");
  if (location.empty()) return Status::Corruption(repo.Name() + ": " + what + ": no Location");
  return std::unique_ptr<BlobUpload>(
      std::make_unique<BlobUploadImpl>(*this, repo, ep, ResolveLocation(ep, location)));
}

Status ClientImpl::PushBlob(const Reference& repo, std::string_view digest, BlobSource& data,
                            std::string_view mount_from) {
  LC_RETURN_IF_ERROR(CheckDigestSyntax(repo, digest));
  auto existing = StatBlob(repo, digest);
  if (existing.ok()) {
    if (*existing == data.size()) return Status::Ok();
  } else if (existing.status().code() != StatusCode::kNotFound) {
    return existing.status();
  }
  if (!mount_from.empty() && mount_from != repo.repository) {
    auto mounted = MountBlob(repo, digest, mount_from);
    if (mounted.ok() && *mounted) return Status::Ok();
  }
  const std::string what = "push of blob " + std::string(digest);
  LC_ASSIGN_OR_RETURN(auto upload, StartUpload(repo));
  // Small blobs go up in the final PUT (one request), large ones in PATCH chunks first.
  const uint64_t size = data.size();
  if (size <= opts_.chunked_upload_threshold) {
    std::vector<uint8_t> buf(size);
    LC_RETURN_IF_ERROR(data.ReadAt(0, buf));
    return upload->Finish(digest, buf).WithContext(what);
  }
  std::vector<uint8_t> buf;
  for (uint64_t pos = 0; pos < size;) {
    uint64_t n = std::min<uint64_t>(opts_.upload_chunk_bytes, size - pos);
    buf.resize(n);
    LC_RETURN_IF_ERROR(data.ReadAt(pos, buf));
    LC_RETURN_IF_ERROR(upload->Append(buf).WithContext(what));
    pos += n;
  }
  return upload->Finish(digest, {}).WithContext(what);
}

}  // namespace

Result<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  EnsureCurlGlobalInit();
  if (options.max_attempts < 1) return Status::InvalidArgument("registry client: max_attempts must be >= 1");
  if (options.upload_chunk_bytes == 0) return Status::InvalidArgument("registry client: upload_chunk_bytes is 0");
  return std::unique_ptr<Client>(new ClientImpl(std::move(options)));
}

}  // namespace lazycrypt::registry
