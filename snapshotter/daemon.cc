#include "snapshotter/daemon.h"

#include <signal.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "common/file_io.h"

#include "common/version.h"
#include "snapshotter/admin.h"
#include "snapshotter/metrics.h"
#include "snapshotter/service.h"
#include "snapshotter/snapshotter.h"

namespace lazycrypt::snapshotter {
namespace {

// Counts this start in `path` (how many times a daemon started on this root), for metrics and
// the log. 1 when the count cannot be kept.
uint64_t CountStart(const std::filesystem::path& path, const LogSink& log) {
  uint64_t starts = 0;
  if (auto bytes = ReadFileBytes(path); bytes.ok()) {
    const std::string text(bytes->begin(), bytes->end());
    starts = std::strtoull(text.c_str(), nullptr, 10);
  }
  ++starts;
  const std::string text = std::to_string(starts) + "\n";
  Status s = WriteFileAtomically(path, AsBytes(text), 0600);
  if (!s.ok()) log(LogLevel::kWarn, "cannot count this start: " + s.ToString());
  return starts;
}

}  // namespace

int DaemonMain(int argc, char** argv, const RemoteHandlerFactory& make_remote) {
  if (argc > 1 && std::string_view(argv[1]) == "purge") return PurgeMain(argc - 1, argv + 1);
  CLI::App app{"lazycrypt-snapshotter: containerd remote snapshotter serving encrypted layers "
               "lazily. `lazycrypt-snapshotter purge --help`: remove the layers this node may no "
               "longer use, from the running daemon"};
  std::string config_path, address, root, log_level;
  app.set_version_flag("--version", VersionLine("lazycrypt-snapshotter"));
  app.add_option("--config", config_path, "TOML config file");
  app.add_option("--address", address, "unix socket path (overrides the config's address)");
  app.add_option("--root", root, "state directory (overrides the config's root)");
  app.add_option("--log-level", log_level, "debug, info, warn, error (overrides the config)");
  bool unmount_on_exit = false;
  app.add_flag("--unmount-on-exit", unmount_on_exit,
               "on SIGTERM/SIGINT unmount every lazy layer instead of leaving the mounts to the "
               "next daemon (containers still reading one then fail); [restart] unmount_on_exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  Config config;
  if (!config_path.empty()) {
    auto loaded = LoadConfig(config_path);
    if (!loaded.ok()) {
      std::cerr << "lazycrypt-snapshotter: " << loaded.status().ToString() << "\n";
      return 2;
    }
    config = std::move(*loaded);
  }
  if (unmount_on_exit) config.restart.unmount_on_exit = true;
  if (!address.empty()) config.address = address;
  if (!root.empty()) config.root = root;
  if (!log_level.empty()) {
    auto level = ParseLogLevel(log_level);
    if (!level.ok()) {
      std::cerr << "lazycrypt-snapshotter: --log-level: " << level.status().message() << "\n";
      return 2;
    }
    config.log_level = *level;
  }
  if (!config.address.is_absolute() || !config.root.is_absolute()) {
    std::cerr << "lazycrypt-snapshotter: address and root must be absolute paths\n";
    return 2;
  }
  // Mount points are found again after a restart by their path in /proc/self/mountinfo, which
  // names them canonically (no symlink, no "..", no "//").
  {
    std::error_code ec;
    auto canonical = std::filesystem::weakly_canonical(config.root, ec);
    if (!ec) config.root = canonical;
  }

  // Block the stop signals before any thread starts; this thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const LogSink log = StderrLogSink(config.log_level);
  SnapshotterOptions options;
  options.root = config.root;
  options.log = log;
  MountCounters mount_counters;  // outlives the handler wrapper and the metrics server
  std::shared_ptr<RemoteLayerHandler> remote_handler;
  if (make_remote) {
    auto remote = make_remote(config, log);
    if (!remote.ok()) {
      log(LogLevel::kError, "remote layers: " + remote.status().ToString());
      return 1;
    }
    if (*remote) remote_handler = CountMounts(std::move(*remote), &mount_counters);
    options.remote = remote_handler;
  }
  auto sn = Snapshotter::Open(options);
  if (!sn.ok()) {
    log(LogLevel::kError, "opening " + config.root.string() + ": " + sn.status().ToString());
    return 1;
  }
  const uint64_t starts = CountStart(config.root / "lazycrypt-starts", log);
  if (remote_handler) {
    const RestartInfo restart = remote_handler->Restarts();
    if (restart.fds_found > 0) {
      log(LogLevel::kInfo,
          "start " + std::to_string(starts) + " on this root: " +
              std::to_string(restart.fds_resumed) + " of " + std::to_string(restart.fds_found) +
              " FUSE mounts left by the previous daemon resumed (" + restart.fd_store +
              " fd store), " + std::to_string(restart.layers_restored) + " layers restored, " +
              std::to_string(restart.layers_restoring) + " being restored, " +
              std::to_string(restart.layers_restore_failed) + " failed");
    }
  }
  ServerOptions server_options;
  server_options.socket_path = config.address;
  server_options.socket_mode = config.socket_mode;
  server_options.log = log;
  auto server = SnapshotServer::Start(sn->get(), server_options);
  if (!server.ok()) {
    log(LogLevel::kError, server.status().ToString());
    return 1;
  }
  // The operator's endpoint (`lazycrypt-snapshotter purge`), beside the containerd socket.
  // Without it the daemon still serves containerd (e.g. a socket path too long for ".admin").
  std::unique_ptr<AdminServer> admin;
  if (auto started = AdminServer::Start(AdminSocketPath(config.address), sn->get(), log);
      started.ok()) {
    admin = std::move(*started);
  } else {
    log(LogLevel::kError, "no admin socket (`lazycrypt-snapshotter purge` cannot reach this "
                          "daemon): " + started.status().ToString());
  }
  std::unique_ptr<MetricsServer> metrics;
  if (!config.metrics.address.empty()) {
    MetricsSource source = [&remote_handler, &mount_counters, starts]() {
      MetricsSnapshot snapshot;
      snapshot.starts_total = starts;
      if (remote_handler) {
        snapshot.layers = remote_handler->MountedLayers();
        snapshot.restart = remote_handler->Restarts();
        snapshot.plaintext_cache = remote_handler->PlaintextCache();
      }
      snapshot.mounts_total = mount_counters.mounts.load(std::memory_order_relaxed);
      snapshot.mount_failures_total = mount_counters.mount_failures.load(std::memory_order_relaxed);
      snapshot.refused_uses_total = mount_counters.refusals.load(std::memory_order_relaxed);
      return snapshot;
    };
    auto started = MetricsServer::Start(config.metrics.address, std::move(source), log);
    if (!started.ok()) {
      log(LogLevel::kError, started.status().ToString());
      (*server)->Shutdown();
      return 1;
    }
    metrics = std::move(*started);
    log(LogLevel::kInfo, "metrics on http://" + config.metrics.address + "/metrics (port " +
                             std::to_string(metrics->port()) + ")");
    if (auto hp = ParseHostPort(config.metrics.address); hp.ok() && !IsLoopbackHost(hp->host)) {
      log(LogLevel::kWarn, "metrics and /status on " + config.metrics.address +
                               " are reachable from other hosts (layer digests, image "
                               "references, fetch statistics); \":PORT\" keeps them on loopback");
    }
  }
  log(LogLevel::kInfo, "lazycrypt-snapshotter ready (root " + config.root.string() + ")");

  int sig = 0;
  sigwait(&stop_signals, &sig);
  log(LogLevel::kInfo, std::string("received ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") +
                           ", shutting down" +
                           (config.restart.unmount_on_exit
                                ? " (unmounting every lazy layer: --unmount-on-exit)"
                                : " (lazy mounts stay for the next daemon)"));
  // A stop never hangs: whatever is still running after this long is cut short. The mounts
  // are in the fd store (or, with --unmount-on-exit, were being unmounted).
  std::thread([log] {
    std::this_thread::sleep_for(std::chrono::seconds(15));
    log(LogLevel::kError, "shutdown still not done after 15 s; exiting now");
    std::_Exit(1);
  }).detach();
  metrics.reset();  // no scrape may reach the handler while it goes away
  admin.reset();
  (*server)->Shutdown();
  server->reset();
  sn->reset();
  log(LogLevel::kInfo, "stopped");
  return 0;
}

}  // namespace lazycrypt::snapshotter
