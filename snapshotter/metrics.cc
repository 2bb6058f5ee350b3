#include "snapshotter/metrics.h"

#include <microhttpd.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <initializer_list>
#include <tuple>
#include <nlohmann/json.hpp>

namespace lazycrypt::snapshotter {
namespace {

// --- Mount counting -------------------------------------------------------------------------

class CountingHandler final : public RemoteLayerHandler {
 public:
  CountingHandler(std::shared_ptr<RemoteLayerHandler> inner, MountCounters* counters)
      : inner_(std::move(inner)), counters_(counters) {}

  Result<bool> TryMount(const PrepareRequest& info) override {
    Result<bool> r = inner_->TryMount(info);
    if (!r.ok()) {
      counters_->mount_failures.fetch_add(1, std::memory_order_relaxed);
    } else if (*r) {
      counters_->mounts.fetch_add(1, std::memory_order_relaxed);
    }
    return r;
  }
  Status Unmount(int64_t snapshot_id, const std::filesystem::path& target_dir) override {
    return inner_->Unmount(snapshot_id, target_dir);
  }
  Status Restore(const RestoreRequest& info) override {
    Status s = inner_->Restore(info);
    (s.ok() ? counters_->mounts : counters_->mount_failures)
        .fetch_add(1, std::memory_order_relaxed);
    return s;
  }
  Status Check(const CheckRequest& info) override {
    Status s = inner_->Check(info);
    if (!s.ok()) counters_->refusals.fetch_add(1, std::memory_order_relaxed);
    return s;
  }
  Result<PurgedLayer> Purge(const CheckRequest& info) override { return inner_->Purge(info); }
  std::vector<RemoteLayerInfo> MountedLayers() const override { return inner_->MountedLayers(); }
  std::optional<SnapshotUsage> CachedUsage(int64_t snapshot_id) const override {
    return inner_->CachedUsage(snapshot_id);
  }
  void RestoreFinished() override { inner_->RestoreFinished(); }
  RestartInfo Restarts() const override { return inner_->Restarts(); }
  PlaintextCacheInfo PlaintextCache() const override { return inner_->PlaintextCache(); }

 private:
  std::shared_ptr<RemoteLayerHandler> inner_;
  MountCounters* counters_;
};

// --- Rendering -------------------------------------------------------------------------------

std::vector<const RemoteLayerInfo*> SortedLayers(const MetricsSnapshot& snapshot) {
  std::vector<const RemoteLayerInfo*> out;
  for (const RemoteLayerInfo& l : snapshot.layers) out.push_back(&l);
  std::sort(out.begin(), out.end(), [](const RemoteLayerInfo* a, const RemoteLayerInfo* b) {
    if (a->layer_digest != b->layer_digest) return a->layer_digest < b->layer_digest;
    return a->snapshot_id < b->snapshot_id;
  });
  return out;
}

// Shortest round-tripping decimal form ("1.5", "0", "2.5e-07"), as Prometheus parses floats.
std::string FormatDouble(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  if (ec != std::errc()) return "0";
  return std::string(buf, end);
}

uint64_t QuarantinedCount(const MetricsSnapshot& snapshot) {
  uint64_t n = 0;
  for (const RemoteLayerInfo& l : snapshot.layers) n += l.quarantined ? 1 : 0;
  return n;
}

double FetchSeconds(const RemoteLayerInfo& l) { return static_cast<double>(l.fetch_nanos) / 1e9; }

struct LayerFamily {
  const char* name;
  const char* type;  // "counter" or "gauge"
  const char* help;
  std::string (*value)(const RemoteLayerInfo&);
};

#define LC_U64_FIELD(field) [](const RemoteLayerInfo& l) { return std::to_string(l.field); }

const LayerFamily kLayerFamilies[] = {
    {"lazycrypt_layer_fetched_bytes_total", "counter",
     "Bytes of the layer blob fetched from the registry.", LC_U64_FIELD(bytes_fetched)},
    {"lazycrypt_layer_fetch_requests_total", "counter",
     "Ranged requests made for the layer blob.", LC_U64_FIELD(fetch_requests)},
    {"lazycrypt_layer_fetch_errors_total", "counter",
     "Ranged requests for the layer blob that failed.", LC_U64_FIELD(fetch_errors)},
    {"lazycrypt_layer_fetch_seconds_total", "counter",
     "Wall time spent fetching the layer blob, in seconds.",
     [](const RemoteLayerInfo& l) { return FormatDouble(FetchSeconds(l)); }},
    {"lazycrypt_layer_chunks_fetched_total", "counter",
     "Chunk records fetched from the registry.", LC_U64_FIELD(chunks_fetched)},
    {"lazycrypt_layer_chunks_opened_total", "counter",
     "Chunk records authenticated and decrypted.", LC_U64_FIELD(chunks_opened)},
    {"lazycrypt_layer_cache_hits_total", "counter",
     "Chunk reads served from the memory or disk cache.", LC_U64_FIELD(cache_hits)},
    {"lazycrypt_layer_cache_misses_total", "counter",
     "Chunk reads that had to fetch.", LC_U64_FIELD(cache_misses)},
    {"lazycrypt_layer_auth_failures_total", "counter",
     "Chunks that failed authentication (each an I/O error to readers).",
     LC_U64_FIELD(auth_failures)},
    {"lazycrypt_layer_present_bytes", "gauge",
     "Ciphertext bytes of the layer on local disk.", LC_U64_FIELD(bytes_present)},
    {"lazycrypt_layer_present_chunks", "gauge",
     "Chunks of the layer whose ciphertext is on local disk.", LC_U64_FIELD(chunks_present)},
    {"lazycrypt_layer_chunks", "gauge", "Chunks in the layer.", LC_U64_FIELD(chunk_count)},
    {"lazycrypt_layer_blob_bytes", "gauge", "Size of the layer blob in the registry.",
     LC_U64_FIELD(blob_size_bytes)},
    {"lazycrypt_layer_quarantined", "gauge",
     "1 when the layer failed its background verification and every use of it is refused.",
     [](const RemoteLayerInfo& l) { return std::string(l.quarantined ? "1" : "0"); }},
};

#undef LC_U64_FIELD

void AppendHeader(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;  // constant texts without backslashes or newlines
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

// --- HTTP ------------------------------------------------------------------------------------

struct MhdDaemonDeleter {
  void operator()(MHD_Daemon* d) const { MHD_stop_daemon(d); }
};
struct MhdResponseDeleter {
  void operator()(MHD_Response* r) const { MHD_destroy_response(r); }
};
struct AddrInfoDeleter {
  void operator()(addrinfo* a) const { freeaddrinfo(a); }
};

}  // namespace

std::shared_ptr<RemoteLayerHandler> CountMounts(std::shared_ptr<RemoteLayerHandler> inner,
                                                MountCounters* counters) {
  return std::make_shared<CountingHandler>(std::move(inner), counters);
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

double PresentPercent(const RemoteLayerInfo& layer) {
  if (layer.chunk_count == 0) return 0.0;
  const uint64_t present = std::min(layer.chunks_present, layer.chunk_count);
  return 100.0 * static_cast<double>(present) / static_cast<double>(layer.chunk_count);
}

std::string RenderPrometheus(const MetricsSnapshot& snapshot) {
  const std::vector<const RemoteLayerInfo*> layers = SortedLayers(snapshot);
  std::string out;
  AppendHeader(out, "lazycrypt_mounted_layers", "gauge", "Remote layers mounted now.");
  out += "lazycrypt_mounted_layers " + std::to_string(layers.size()) + "\n";
  AppendHeader(out, "lazycrypt_mounts_total", "counter",
               "Remote layers mounted (on Prepare or restored after a restart).");
  out += "lazycrypt_mounts_total " + std::to_string(snapshot.mounts_total) + "\n";
  AppendHeader(out, "lazycrypt_mount_failures_total", "counter",
               "Remote layer mounts that failed.");
  out += "lazycrypt_mount_failures_total " + std::to_string(snapshot.mount_failures_total) + "\n";
  AppendHeader(out, "lazycrypt_quarantined_layers", "gauge",
               "Mounted layers whose content did not match their diff_id (every use refused).");
  out += "lazycrypt_quarantined_layers " + std::to_string(QuarantinedCount(snapshot)) + "\n";
  AppendHeader(out, "lazycrypt_refused_uses_total", "counter",
               "Uses of a remote layer refused (no key on the node, quarantined, unavailable).");
  out += "lazycrypt_refused_uses_total " + std::to_string(snapshot.refused_uses_total) + "\n";
  const RestartInfo& r = snapshot.restart;
  for (const auto& [name, type, help, value] :
       std::initializer_list<std::tuple<const char*, const char*, const char*, uint64_t>>{
           {"lazycrypt_starts_total", "counter",
            "Starts of the snapshotter on this root (restarts + 1).", snapshot.starts_total},
           {"lazycrypt_restart_fds_found", "gauge",
            "FUSE connections the fd store held for this daemon at its start.", r.fds_found},
           {"lazycrypt_restart_fds_resumed", "gauge",
            "Of them, resumed: the same mount served again.", r.fds_resumed},
           {"lazycrypt_restart_resend_notifications", "gauge",
            "Resumed connections whose kernel resent the requests the previous daemon had read "
            "(FUSE_NOTIFY_RESEND).",
            r.resend_notifications},
           {"lazycrypt_restart_layers_restored", "gauge",
            "Lazy layers served again after this daemon's start.", r.layers_restored},
           {"lazycrypt_restart_layers_restoring", "gauge",
            "Resumed layers being restored now (their uncached reads wait).", r.layers_restoring},
           {"lazycrypt_restart_layers_failed", "gauge",
            "Resumed layers that could not be restored (their reads fail with EIO).",
            r.layers_restore_failed},
           {"lazycrypt_restart_requests_waited", "gauge",
            "FUSE requests that waited for a layer being restored.", r.requests_waited},
       }) {
    AppendHeader(out, name, type, help);
    out += std::string(name) + " " + std::to_string(value) + "\n";
  }
  if (const PlaintextCacheInfo& p = snapshot.plaintext_cache; p.present) {
    for (const auto& [name, type, help, value] :
         std::initializer_list<std::tuple<const char*, const char*, const char*, uint64_t>>{
             {"lazycrypt_plaintext_budget_bytes", "gauge",
              "Node-wide budget of opened (decrypted) chunks kept in memory ([cache] "
              "plaintext_budget).",
              p.budget_bytes},
             {"lazycrypt_plaintext_bytes", "gauge",
              "Opened chunk bytes the node-wide cache holds now (readers may pin a few more).",
              p.bytes_held},
             {"lazycrypt_plaintext_chunks", "gauge", "Opened chunks the node-wide cache holds now.",
              p.chunks_held},
             {"lazycrypt_plaintext_hits_total", "counter",
              "Chunk lookups the node-wide opened-chunk cache answered.", p.hits},
             {"lazycrypt_plaintext_misses_total", "counter",
              "Chunk lookups it did not (the chunk was read from disk or fetched).", p.misses},
             {"lazycrypt_plaintext_evictions_total", "counter",
              "Opened chunks dropped to stay within the budget (wiped once no reader pins them).",
              p.evictions},
             {"lazycrypt_plaintext_evicted_bytes_total", "counter", "Their bytes.",
              p.evicted_bytes},
             {"lazycrypt_plaintext_not_kept_total", "counter",
              "Opened chunks larger than the whole budget: served, not kept.", p.not_kept},
             {"lazycrypt_plaintext_trims_total", "counter",
              "Times freed memory was handed back to the kernel after large evictions.", p.trims},
         }) {
      AppendHeader(out, name, type, help);
      out += std::string(name) + " " + std::to_string(value) + "\n";
    }
  }
  for (const LayerFamily& family : kLayerFamilies) {
    AppendHeader(out, family.name, family.type, family.help);
    for (const RemoteLayerInfo* l : layers) {
      out += family.name;
      out += "{layer=\"" + EscapeLabelValue(l->layer_digest) + "\",image=\"" +
             EscapeLabelValue(l->image_ref) + "\"} " + family.value(*l) + "\n";
    }
  }
  return out;
}

std::string RenderStatusJson(const MetricsSnapshot& snapshot) {
  nlohmann::json layers = nlohmann::json::array();
  for (const RemoteLayerInfo* l : SortedLayers(snapshot)) {
    layers.push_back({
        {"layer", l->layer_digest},
        {"image", l->image_ref},
        {"snapshot_id", l->snapshot_id},
        {"mountpoint", l->mountpoint.string()},
        {"present_percent", PresentPercent(*l)},
        {"blob_size_bytes", l->blob_size_bytes},
        {"bytes_present", l->bytes_present},
        {"chunks_present", l->chunks_present},
        {"chunk_count", l->chunk_count},
        {"bytes_fetched", l->bytes_fetched},
        {"fetch_requests", l->fetch_requests},
        {"fetch_errors", l->fetch_errors},
        {"fetch_seconds", FetchSeconds(*l)},
        {"chunks_fetched", l->chunks_fetched},
        {"chunks_opened", l->chunks_opened},
        {"cache_hits", l->cache_hits},
        {"cache_misses", l->cache_misses},
        {"auth_failures", l->auth_failures},
        {"verification", l->verification},
        {"quarantined", l->quarantined},
        {"restore_state", l->restore_state},
        {"restore_error", l->restore_error},
    });
  }
  nlohmann::json doc = {
      {"mounted_layers", snapshot.layers.size()},
      {"mounts_total", snapshot.mounts_total},
      {"mount_failures_total", snapshot.mount_failures_total},
      {"quarantined_layers", QuarantinedCount(snapshot)},
      {"refused_uses_total", snapshot.refused_uses_total},
      {"starts_total", snapshot.starts_total},
      {"restart",
       {{"fd_store", snapshot.restart.fd_store},
        {"fds_found", snapshot.restart.fds_found},
        {"fds_resumed", snapshot.restart.fds_resumed},
        {"resend_notifications", snapshot.restart.resend_notifications},
        {"layers_restored", snapshot.restart.layers_restored},
        {"layers_restoring", snapshot.restart.layers_restoring},
        {"layers_failed", snapshot.restart.layers_restore_failed},
        {"requests_waited", snapshot.restart.requests_waited}}},
      {"layers", std::move(layers)},
  };
  if (const PlaintextCacheInfo& p = snapshot.plaintext_cache; p.present) {
    doc["plaintext_cache"] = {{"budget_bytes", p.budget_bytes}, {"bytes_held", p.bytes_held},
                              {"chunks_held", p.chunks_held},   {"hits", p.hits},
                              {"misses", p.misses},             {"evictions", p.evictions},
                              {"evicted_bytes", p.evicted_bytes}, {"not_kept", p.not_kept},
                              {"trims", p.trims}};
  }
  // Replace invalid UTF-8 (a label is untrusted text) rather than throw.
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

bool IsLoopbackHost(std::string_view host) {
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

Result<HostPort> ParseHostPort(std::string_view address) {
  const std::string quoted = "metrics address \"" + std::string(address) + "\"";
  HostPort out;
  std::string_view port_text;
  if (!address.empty() && address.find(':') == std::string_view::npos &&
      address.find_first_not_of("0123456789") == std::string_view::npos) {
    port_text = address;  // a bare port
  } else if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() ||
        address[close + 1] != ':') {
      return Status::InvalidArgument(quoted + ": expected [IPV6]:PORT");
    }
    out.host = std::string(address.substr(1, close - 1));
    port_text = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string_view::npos) {
      return Status::InvalidArgument(quoted + ": expected HOST:PORT");
    }
    out.host = std::string(address.substr(0, colon));
    if (out.host.find(':') != std::string::npos) {
      return Status::InvalidArgument(quoted + ": an IPv6 host must be in brackets, [::1]:PORT");
    }
    port_text = address.substr(colon + 1);
  }
  // No host: loopback, never every interface (Go's net.Listen would take ":9100" as all of
  // them). Exposing the endpoint takes a host written out, e.g. "0.0.0.0:9100".
  if (out.host.empty()) out.host = std::string(kDefaultMetricsHost);
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
      port > 65535) {
    return Status::InvalidArgument(quoted + ": the port is not a number in 0..65535");
  }
  out.port = static_cast<uint16_t>(port);
  return out;
}

struct MetricsServer::Impl {
  MetricsSource source;
  LogSink log;
  std::unique_ptr<MHD_Daemon, MhdDaemonDeleter> daemon;
  uint16_t port = 0;

  static MHD_Result Reply(MHD_Connection* connection, unsigned status_code,
                          const std::string& body, const char* content_type) {
    std::unique_ptr<MHD_Response, MhdResponseDeleter> response(MHD_create_response_from_buffer(
        body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY));
    if (!response) return MHD_NO;
    MHD_add_response_header(response.get(), MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (status_code == MHD_HTTP_METHOD_NOT_ALLOWED) {
      MHD_add_response_header(response.get(), MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    }
    return MHD_queue_response(connection, status_code, response.get());
  }

  // libmicrohttpd's access handler: a C callback, so nothing may throw out of it.
  static MHD_Result Handle(void* cls, MHD_Connection* connection, const char* url,
                           const char* method, const char* /*version*/,
                           const char* /*upload_data*/, size_t* upload_data_size,
                           void** /*req_cls*/) {
    auto* self = static_cast<Impl*>(cls);
    try {
      if (std::strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
          std::strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        *upload_data_size = 0;  // ignore any body
        return Reply(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n",
                     "text/plain; charset=utf-8");
      }
      const std::string_view path(url);
      if (path == "/metrics") {
        return Reply(connection, MHD_HTTP_OK, RenderPrometheus(self->source()),
                     "text/plain; version=0.0.4; charset=utf-8");
      }
      if (path == "/status") {
        return Reply(connection, MHD_HTTP_OK, RenderStatusJson(self->source()),
                     "application/json");
      }
      return Reply(connection, MHD_HTTP_NOT_FOUND, "not found: try /metrics or /status\n",
                   "text/plain; charset=utf-8");
    } catch (const std::exception& e) {
      if (self->log) self->log(LogLevel::kError, std::string("metrics request: ") + e.what());
    } catch (...) {
      if (self->log) self->log(LogLevel::kError, "metrics request: unknown exception");
    }
    return Reply(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n",
                 "text/plain; charset=utf-8");
  }
};

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetricsServer::~MetricsServer() = default;  // the daemon stops before source/log go
uint16_t MetricsServer::port() const { return impl_->port; }

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(std::string_view address,
                                                            MetricsSource source, LogSink log) {
  LC_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(address));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port_text = std::to_string(hp.port);
  const int gai = getaddrinfo(hp.host.c_str(), port_text.c_str(), &hints, &found);
  if (gai != 0) {
    return Status::InvalidArgument("metrics address \"" + std::string(address) +
                                   "\": cannot resolve host: " + gai_strerror(gai));
  }
  std::unique_ptr<addrinfo, AddrInfoDeleter> addrs(found);

  auto impl = std::make_unique<Impl>();
  impl->source = std::move(source);
  impl->log = std::move(log);
  std::string last_error = "no address";
  for (const addrinfo* a = addrs.get(); a != nullptr; a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    if (a->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    errno = 0;
    MHD_Daemon* d = MHD_start_daemon(
        flags, hp.port, nullptr, nullptr, &Impl::Handle, impl.get(), MHD_OPTION_SOCK_ADDR,
        a->ai_addr, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_CONNECTION_LIMIT, 64u,
        MHD_OPTION_END);
    if (d == nullptr) {
      last_error = errno != 0 ? std::strerror(errno) : "libmicrohttpd could not start";
      continue;
    }
    impl->daemon.reset(d);
    const MHD_DaemonInfo* info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    impl->port = info != nullptr ? info->port : hp.port;
    return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl)));
  }
  return Status::IoError("metrics address \"" + std::string(address) + "\": cannot listen: " +
                         last_error);
}

}  // namespace lazycrypt::snapshotter
