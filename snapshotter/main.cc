// lazycrypt-snapshotter: containerd's remote snapshotter for lazycrypt images. Thin main: the
// daemon (snapshotter/daemon.h) with lazycrypt's FUSE layers as its remote-layer handler.
#include <optional>

#include "cache/chunk_store.h"
#include "cache/opened_chunk_cache.h"
#include "crypto/process_hardening.h"
#include "fdstore/fd_store.h"
#include "keywrap/keyprovider.h"
#include "lazylayer/snapshot_handler.h"
#include "snapshotter/daemon.h"

namespace {

using lazycrypt::Result;
using lazycrypt::snapshotter::Config;
using lazycrypt::snapshotter::LogSink;
using lazycrypt::snapshotter::RemoteLayerHandler;

Result<std::shared_ptr<RemoteLayerHandler>> MakeLazycryptHandler(const Config& config,
                                                                 const LogSink& log) {
  namespace ll = lazycrypt::lazylayer;
  ll::SnapshotHandlerOptions options;
  options.key_dirs = config.keys.dirs;
  options.key_passwords = config.keys.passwords;
  // As ocicrypt (containerd's CRI, ctd-decoder): every configured provider is tried on a layer
  // carrying its annotation. A configured file that is missing or invalid stops the daemon.
  std::optional<std::filesystem::path> provider_config;
  if (!config.keys.provider_config.empty()) {
    provider_config = config.keys.provider_config;
  } else {
    provider_config = lazycrypt::keywrap::KeyProviderConfigPathFromEnv();
  }
  if (provider_config) {
    LC_ASSIGN_OR_RETURN(auto providers, lazycrypt::keywrap::LoadKeyProviderConfig(*provider_config));
    options.key_providers = lazycrypt::keywrap::MakeAllKeyProviders(providers);
  }
  options.registry.hosts_dir = config.registry.hosts_dir;
  // Told apart from `lazycrypt pull`'s requests in a registry's access log.
  options.registry.user_agent = "lazycrypt-snapshotter/0.1";
  lazycrypt::cache::ChunkStoreOptions store_options;
  store_options.capacity_bytes = config.cache.max_bytes;
  LC_ASSIGN_OR_RETURN(std::unique_ptr<lazycrypt::cache::ChunkStore> store,
                      lazycrypt::cache::ChunkStore::Open(config.root / "cache", store_options));
  options.store = std::move(store);
  // One plaintext budget for every layer the daemon mounts (GCM, ocicrypt-estargz, indexed),
  // and chunk-sized buffers handed back to the kernel when freed, so that RSS follows it.
  lazycrypt::cache::ReturnChunkBuffersToTheKernel();
  lazycrypt::cache::OpenedChunkCacheOptions opened_options;
  opened_options.budget_bytes = config.cache.plaintext_budget_bytes;
  options.layer.cache.opened_cache = lazycrypt::cache::OpenedChunkCache::Create(opened_options);
  options.layer.prefetch = config.fetch.prefetch;
  options.layer.whole_layer_bytes = config.fetch.whole_layer_bytes;
  options.layer.background_rate_bytes_per_sec = config.fetch.background_rate_bytes_per_sec;
  options.layer.verify = true;  // never off in the daemon (FORMAT.md §8.4)
  options.layer.verify_start_delay_ms = config.fetch.verify_delay_ms;
  options.layer.verify_rate_bytes_per_sec = config.fetch.verify_rate_bytes_per_sec;
  options.verify_deadline = std::chrono::seconds(config.fetch.verify_deadline_s);
  options.layer.cache.read_retry_for = std::chrono::seconds(config.fetch.read_retry_s);
  options.warmup.workers = config.fetch.open_ahead;
  options.layer.mount.log_file_names = config.log_file_names;
  if (config.log_file_names) {
    log(lazycrypt::snapshotter::LogLevel::kWarn,
        "log_file_names = true: log lines will name files inside encrypted layers by their "
        "decrypted paths; turn it off outside debugging");
  }
  lazycrypt::format::TocLimits& toc_limits = options.layer.cache.toc_limits;
  if (config.limits.toc_max_bytes) toc_limits.max_serialized_bytes = config.limits.toc_max_bytes;
  if (config.limits.toc_max_chunks) toc_limits.max_chunks = config.limits.toc_max_chunks;
  if (config.limits.toc_max_entries) toc_limits.max_entries = config.limits.toc_max_entries;
  LC_RETURN_IF_ERROR(toc_limits.Validate("config [limits]"));
  options.log = log;

  // Restarts: every layer's FUSE connection is kept in an fd store, so that the next daemon
  // resumes the mounts and running containers keep reading (README "Restarts and upgrades").
  // The connections must not be cloned per thread: the kernel fails the requests a clone had
  // read when the clone closes, while those read from the kept fd wait for the next daemon.
  options.layer.mount.clone_fd = false;
  options.keep_mounts_on_exit = !config.restart.unmount_on_exit;
  options.unpack_ocicrypt = config.ocicrypt.unpack;
  options.lazy_index = config.ocicrypt.lazy_index;
  options.index_max_bytes = config.ocicrypt.index_max_bytes;
  options.restore_retry_for = std::chrono::seconds(config.restart.restore_retry_s);
  lazycrypt::fdstore::FdStoreOptions store_opts;
  store_opts.holder_socket = config.restart.holder_socket.empty()
                                 ? config.root / "fdholder" / "fdholder.sock"
                                 : config.restart.holder_socket;
  // Installed next to this binary (the package's /usr/bin, the build tree's bin/).
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) store_opts.holder_binary = self.parent_path() / "lazycrypt-fdholder";
  auto fd_store = lazycrypt::fdstore::OpenFdStore(store_opts);
  if (fd_store.ok()) {
    options.fd_store = std::move(*fd_store);
    // A kill -9 must let the process end at once (fusefs/fuse_fs.h MountOptions).
    options.layer.mount.fill_page_cache = false;
    log(lazycrypt::snapshotter::LogLevel::kInfo,
        "lazy mounts survive restarts: their FUSE fds are kept in the " +
            std::string(options.fd_store->kind()) + " fd store");
  } else {
    log(lazycrypt::snapshotter::LogLevel::kWarn,
        "no fd store (" + fd_store.status().ToString() +
            "): lazy mounts end when this daemon does, and running containers lose their files");
  }
  LC_ASSIGN_OR_RETURN(std::unique_ptr<ll::SnapshotHandler> handler,
                      ll::SnapshotHandler::Create(std::move(options)));
  return std::shared_ptr<RemoteLayerHandler>(std::move(handler));
}

}  // namespace

int main(int argc, char** argv) {
  lazycrypt::crypto::HardenProcess("lazycrypt-snapshotter");  // before any key or plaintext
  return lazycrypt::snapshotter::DaemonMain(argc, argv, MakeLazycryptHandler);
}
