// The snapshotter's observability endpoint: an HTTP server (libmicrohttpd) on the config's
// `[metrics] address` (host:port) serving
//   GET /metrics  Prometheus text exposition format 0.0.4: per mounted layer, labelled
//                 {layer="sha256:...",image="..."}, and daemon-wide gauges/counters;
//   GET /status   JSON: the same per-layer data plus snapshot id, mountpoint and the share of the
//                 layer present on local disk (what `lazycrypt status` prints).
// Only counters, names and paths are exposed: never key material or file contents.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "snapshotter/log.h"
#include "snapshotter/remote.h"

namespace lazycrypt::snapshotter {

// Daemon-wide counters of remote-layer mounts (TryMount that mounted or Restore, and their
// failures). Thread-safe (atomics).
struct MountCounters {
  std::atomic<uint64_t> mounts{0};
  std::atomic<uint64_t> mount_failures{0};
  std::atomic<uint64_t> refusals{0};  // Checks that refused a use of a layer
};

// What one scrape shows.
struct MetricsSnapshot {
  std::vector<RemoteLayerInfo> layers;
  uint64_t mounts_total = 0;
  uint64_t mount_failures_total = 0;
  uint64_t refused_uses_total = 0;
  uint64_t starts_total = 0;  // starts of a daemon on this root (the first one counts 1)
  RestartInfo restart;
  PlaintextCacheInfo plaintext_cache;
};

// Wraps `inner` so that every TryMount that mounts and every Restore that succeeds counts in
// counters->mounts, and every one that fails in counters->mount_failures ("not mine" counts in
// neither); every Check that refuses counts in counters->refusals. Everything else is forwarded. REQUIRES: `counters` outlives the result.
std::shared_ptr<RemoteLayerHandler> CountMounts(std::shared_ptr<RemoteLayerHandler> inner,
                                                MountCounters* counters);

// Prometheus text format 0.0.4 of `snapshot` (HELP/TYPE for every family, counters named
// *_total, label values escaped: backslash, double quote and newline). Layers sorted by digest,
// then snapshot id, so output is stable.
std::string RenderPrometheus(const MetricsSnapshot& snapshot);
// The /status JSON document: {"mounted_layers": N, "mounts_total": ..., "mount_failures_total":
// ..., "quarantined_layers": ..., "refused_uses_total": ..., "layers": [{"layer", "image",
// "snapshot_id", "mountpoint", "present_percent", "verification", "quarantined", ...}]}.
std::string RenderStatusJson(const MetricsSnapshot& snapshot);
// The share of the layer's chunks on local disk, 0..100 (0 for a layer without chunks).
double PresentPercent(const RemoteLayerInfo& layer);
// `value` escaped as a Prometheus label value (\\, \", \n).
std::string EscapeLabelValue(std::string_view value);

// "127.0.0.1:9100", "localhost:9100", "[::1]:9100" → host and port; without a host (":9100" or
// "9100") the host is kDefaultMetricsHost: the endpoint is on loopback unless a host is written
// out ("0.0.0.0:9100" for every interface). InvalidArgument naming the text when the port is not
// a number in 0..65535 (0 = any free port) or the form is not one of these.
inline constexpr std::string_view kDefaultMetricsHost = "127.0.0.1";
struct HostPort {
  std::string host;  // without brackets
  uint16_t port = 0;
};
Result<HostPort> ParseHostPort(std::string_view address);
// "localhost", "::1", "127.x.y.z": the daemon warns at start when the endpoint is not on one.
bool IsLoopbackHost(std::string_view host);

// Produces the data for one request. Called on the server's threads, concurrently; must be
// thread-safe and must not throw.
using MetricsSource = std::function<MetricsSnapshot()>;

// The HTTP endpoint. Serves from libmicrohttpd's internal thread until destroyed; the destructor
// stops it and waits for requests in flight. Not copyable.
class MetricsServer {
 public:
  // Binds `address` (ParseHostPort; the host is resolved, numeric or a name such as localhost,
  // and only that address is bound). IoError naming the address when it cannot be bound.
  static Result<std::unique_ptr<MetricsServer>> Start(std::string_view address,
                                                      MetricsSource source, LogSink log);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The bound port (the chosen one when the address asked for port 0).
  uint16_t port() const;

 private:
  struct Impl;
  explicit MetricsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lazycrypt::snapshotter
