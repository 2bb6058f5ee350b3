#include "tools/mount.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "cache/chunk_store.h"
#include "cache/opened_chunk_cache.h"
#include "cache/registry_source.h"
#include "common/file_io.h"
#include "crypto/digest.h"
#include "fusefs/access_log.h"
#include "image/convert.h"
#include "image/transport.h"
#include "lazylayer/mounted_layer.h"
#include "registry/registry.h"

namespace lazycrypt::tools {

namespace {

using Clock = std::chrono::steady_clock;

std::filesystem::path NormalizedMountpoint(const std::filesystem::path& mountpoint) {
  std::error_code ec;
  auto canonical = std::filesystem::canonical(mountpoint, ec);
  if (!ec) return canonical;
  return std::filesystem::absolute(mountpoint, ec).lexically_normal();
}

std::filesystem::path StatsFileFor(const std::string& given, const std::filesystem::path& mountpoint) {
  if (!given.empty()) return given;
  return DefaultStatsFile(mountpoint);
}

// "linux/amd64[/v8]"
Result<image::Platform> ParsePlatform(const std::string& text) {
  image::Platform p;
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, '/');) parts.push_back(part);
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty()) {
    return Status::InvalidArgument("--platform '" + text + "': expected OS/ARCH[/VARIANT]");
  }
  p.os = parts[0];
  p.architecture = parts[1];
  if (parts.size() == 3) p.variant = parts[2];
  return p;
}

}  // namespace

Result<const image::LoadedImage*> PickImage(const image::LoadedRoot& root,
                                            const std::string& platform_text) {
  if (!root.index) {
    if (root.images.size() != 1) return Status::Corruption("the image has no manifest");
    return &root.images[0];
  }
  LC_ASSIGN_OR_RETURN(image::Platform want,
                      ParsePlatform(platform_text.empty() ? "linux/amd64" : platform_text));
  std::string seen;
  for (size_t i = 0; i < root.images.size(); ++i) {
    const auto& d = root.index->manifests[root.image_positions[i]];
    if (!d.platform) continue;
    const auto& p = *d.platform;
    seen += (seen.empty() ? "" : ", ") + p.os + "/" + p.architecture +
            (p.variant.empty() ? "" : "/" + p.variant);
    if (p.os == want.os && p.architecture == want.architecture &&
        (want.variant.empty() || p.variant == want.variant)) {
      return &root.images[i];
    }
  }
  return Status::NotFound("the image index has no " + want.os + "/" + want.architecture +
                          (want.variant.empty() ? "" : "/" + want.variant) +
                          " image (platforms: " + (seen.empty() ? "none" : seen) +
                          "); choose one with --platform");
}

namespace {

Result<size_t> PickLayer(const image::LoadedImage& img, int requested, const std::string& src) {
  const auto& layers = img.manifest.layers;
  if (requested >= 0) {
    if (static_cast<size_t>(requested) >= layers.size()) {
      return Status::InvalidArgument("--layer " + std::to_string(requested) + ": " + src +
                                     " has " + std::to_string(layers.size()) + " layers");
    }
    const auto kind = image::ClassifyLayer(layers[requested].media_type);
    if (kind != image::LayerKind::kLazycrypt) {
      return Status::InvalidArgument(
          "--layer " + std::to_string(requested) + ": layer " + std::to_string(requested) +
          " of " + src + " is a " + std::string(image::LayerKindName(kind)) + " layer (" +
          layers[requested].media_type + "), not a lazycrypt layer: only lazycrypt layers mount");
    }
    return static_cast<size_t>(requested);
  }
  std::vector<size_t> lazy;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (image::ClassifyLayer(layers[i].media_type) == image::LayerKind::kLazycrypt) lazy.push_back(i);
  }
  if (lazy.size() == 1) return lazy[0];
  if (lazy.empty()) {
    return Status::InvalidArgument(src + " has no lazycrypt layer (encrypt it with `lazycrypt "
                                   "encrypt`)");
  }
  std::string list;
  for (size_t i : lazy) list += (list.empty() ? "" : ", ") + std::to_string(i);
  return Status::InvalidArgument(src + " has " + std::to_string(lazy.size()) +
                                 " lazycrypt layers (" + list + "): choose one with --layer N");
}

}  // namespace

Result<OpenedBlob> OpenLayerBlob(const image::ImageReference& ref, image::ImageSource& src,
                                 const image::TransportOptions& transport,
                                 const MountFlags& flags, const image::Descriptor& d) {
  OpenedBlob out;
  if (!ref.is_registry()) {
    LC_ASSIGN_OR_RETURN(auto blob, src.OpenBlob(d));
    out.source = std::shared_ptr<BlobSource>(std::move(blob));
    return out;
  }
  // A client of our own for the layer's chunk reads: multi-range requests and the read tuning.
  registry::ClientOptions options = image::RegistryClientOptions(transport);
  if (flags.registry_timeout_sec > 0) {
    auto ms = std::chrono::milliseconds(
        static_cast<int64_t>(std::ceil(flags.registry_timeout_sec * 1000)));
    options.request_timeout = ms;
    options.connect_timeout = std::min(options.connect_timeout, ms);
    options.low_speed_time = std::chrono::seconds(
        std::max<int64_t>(1, static_cast<int64_t>(std::ceil(flags.registry_timeout_sec))));
    options.max_retry_after = std::min(options.max_retry_after, ms);
    options.max_backoff = std::min(options.max_backoff, ms);
  }
  if (flags.registry_attempts > 0) options.max_attempts = flags.registry_attempts;
  LC_ASSIGN_OR_RETURN(auto repo, registry::Reference::Parse(ref.docker));
  LC_ASSIGN_OR_RETURN(auto client_unique, registry::Client::Create(std::move(options)));
  std::shared_ptr<registry::Client> client(std::move(client_unique));
  LC_ASSIGN_OR_RETURN(auto blob, cache::OpenRegistryBlobSource(*client, repo, d.digest, d.size));
  out.source = std::shared_ptr<BlobSource>(std::move(blob));
  out.keepalive = client;
  return out;
}

namespace {

// --- stats file ------------------------------------------------------------------------------

nlohmann::ordered_json StatsJson(const lazylayer::MountedLayer& m, const std::string& src,
                                 size_t layer_index, const std::filesystem::path& mountpoint,
                                 bool running) {
  const cache::LayerStats s = m.stats();
  nlohmann::ordered_json j;
  j["mountpoint"] = mountpoint.string();
  j["pid"] = static_cast<int64_t>(::getpid());
  j["running"] = running;
  j["source"] = src;
  j["layer"] = layer_index;
  j["digest"] = m.digest();
  j["key"] = m.key_name();
  j["blob_size"] = m.blob_size();
  j["chunk_count"] = s.chunk_count;
  j["chunks_present"] = s.chunks_present;
  j["bytes_present"] = s.bytes_present;
  j["percent_present"] =
      s.chunk_count == 0 ? 100.0
                         : std::round(1000.0 * static_cast<double>(s.chunks_present) /
                                      static_cast<double>(s.chunk_count)) / 10.0;
  j["blob_bytes_fetched"] = s.blob_bytes_fetched;
  j["fetch_requests"] = s.fetch_requests;
  j["fetch_errors"] = s.fetch_errors;
  j["fetch_seconds"] = static_cast<double>(s.fetch_nanos) / 1e9;
  j["chunks_fetched"] = s.chunks_fetched;
  j["chunks_opened"] = s.chunks_opened;
  j["cache_hits"] = s.cache_hits;
  j["cache_misses"] = s.cache_misses;
  j["auth_failures"] = s.auth_failures;
  j["disk_corrupt"] = s.disk_corrupt;
  j["memory_cache_bytes"] = s.memory_cache_bytes;
  j["verification"] = std::string(cache::VerificationStateName(s.verification));
  if (Status v = m.verification_status(); !v.ok() && s.verification == cache::VerificationState::kFailed) {
    j["verification_error"] = v.message();  // names the layer digest, never a file
  }
  j["verified_chunks"] = s.verified_chunks;
  j["verification_retries"] = s.verification_retries;
  j["verification_failures"] = s.verification_failures;
  j["quarantined_reads"] = s.quarantined_reads;
  j["updated_unix"] = static_cast<int64_t>(::time(nullptr));
  return j;
}

Status WriteStats(const std::filesystem::path& file, const nlohmann::ordered_json& j) {
  std::string text = j.dump(2) + "\n";
  return WriteFileAtomically(
      file, ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()), 0644);
}

// True while `mountpoint` is a fuse.lazycrypt mount in this mount namespace.
bool IsMounted(const std::filesystem::path& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  // Field 5 is the mount point with ' ', '\t', '\n' and '\\' octal-escaped.
  std::string escaped;
  for (char c : mountpoint.string()) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\%03o", static_cast<unsigned char>(c));
      escaped += buf;
    } else {
      escaped += c;
    }
  }
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    if (point != escaped) continue;
    auto dash = line.find(" - ");
    if (dash != std::string::npos && line.compare(dash + 3, 5, "fuse.") == 0) return true;
  }
  return false;
}

// Whether `pid` is alive (a zombie counts as gone).
bool ProcessAlive(pid_t pid) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.empty()) return false;
  auto close = text.rfind(')');
  if (close == std::string::npos || close + 2 >= text.size()) return true;
  return text[close + 2] != 'Z' && text[close + 2] != 'X';
}

// Mounts and serves. `notify_fd` >= 0 (daemon child): the mount's outcome is written there
// ("OK <message>" or "ERR <message>") and the fd closed as soon as it is known.
Status MountAndServe(const MountFlags& flags, const Output& io, int notify_fd) {
  // A long-lived server as the snapshotter is: chunk-sized buffers go back to the kernel when
  // freed, instead of staying in malloc's heaps above the plaintext budget (BENCHMARKS.md §9).
  cache::ReturnChunkBuffersToTheKernel();
  auto notify = [&](const Status& s, const std::string& ok_text) {
    if (notify_fd < 0) return;
    std::string msg = s.ok() ? "OK " + ok_text : "ERR " + s.message();
    const char* p = msg.data();
    size_t left = msg.size();
    while (left > 0) {
      ssize_t n = ::write(notify_fd, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      p += n;
      left -= static_cast<size_t>(n);
    }
    ::close(notify_fd);
    notify_fd = -1;
  };
  auto fail = [&](Status s) {
    notify(s, "");
    return s;
  };

  // SIGINT/SIGTERM/SIGHUP are taken with sigtimedwait below: block them before any thread starts
  // (registry client, FUSE session) so that every thread inherits the mask and the signals come
  // to this one.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  ::pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::error_code ec;
  if (flags.mountpoint.empty()) return fail(Status::InvalidArgument("no mountpoint given"));
  if (!std::filesystem::is_directory(flags.mountpoint, ec)) {
    return fail(Status::InvalidArgument("mountpoint '" + flags.mountpoint +
                                        "': not an existing directory"));
  }
  const std::filesystem::path mountpoint = NormalizedMountpoint(flags.mountpoint);
  if (IsMounted(mountpoint)) {
    return fail(Status::FailedPrecondition("mountpoint '" + mountpoint.string() +
                                           "': a FUSE file system is already mounted there"));
  }
  const std::filesystem::path stats_file = StatsFileFor(flags.stats_file, mountpoint);

  auto ref = image::ImageReference::Parse(flags.src);
  if (!ref.ok()) return fail(ref.status());
  auto keys = LoadKeyRing(flags.keys, /*required=*/true);
  if (!keys.ok()) return fail(keys.status());

  lazylayer::MountLayerOptions options;
  options.prefetch = !flags.no_prefetch;
  options.verify = !flags.no_verify;
  options.mount.allow_other = flags.allow_other;
  options.mount.log_file_names = flags.log_file_names;
  if (flags.log_file_names) {
    std::fprintf(stderr, "lazycrypt: warning: --log-file-names: log lines will name files in the "
                         "layer by their decrypted paths\n");
  }
  std::shared_ptr<fusefs::AccessLog> access_log;
  if (!flags.record_file.empty()) {
    const auto dir = std::filesystem::absolute(flags.record_file, ec).parent_path();
    if (!std::filesystem::is_directory(dir, ec)) {
      return fail(Status::InvalidArgument("--record " + flags.record_file + ": directory '" +
                                          dir.string() + "' does not exist"));
    }
    access_log = std::make_shared<fusefs::AccessLog>();
    options.mount.access_recorder = fusefs::NewAccessLogRecorder(access_log);
  }
  if (!flags.background_rate.empty()) {
    std::string rate = flags.background_rate;
    if (rate.ends_with("/s")) rate.resize(rate.size() - 2);
    auto bytes = ParseByteSize(rate);
    if (!bytes.ok()) return fail(bytes.status().WithContext("--background-rate"));
    if (flags.cache_dir.empty()) {
      return fail(Status::InvalidArgument("--background-rate needs --cache-dir (the background "
                                          "fetch fills the disk cache)"));
    }
    options.background_rate_bytes_per_sec = *bytes;
  }
  std::unique_ptr<cache::ChunkStore> store;
  if (!flags.cache_dir.empty()) {
    cache::ChunkStoreOptions store_options;
    if (!flags.cache_size.empty()) {
      auto bytes = ParseByteSize(flags.cache_size);
      if (!bytes.ok()) return fail(bytes.status().WithContext("--cache-size"));
      store_options.capacity_bytes = *bytes;
    }
    auto opened = cache::ChunkStore::Open(flags.cache_dir, store_options);
    if (!opened.ok()) return fail(opened.status().WithContext("--cache-dir " + flags.cache_dir));
    store = std::move(opened).value();
  } else if (!flags.cache_size.empty()) {
    return fail(Status::InvalidArgument("--cache-size needs --cache-dir"));
  }
  options.store = store.get();
  format::TocLimits& toc_limits = options.cache.toc_limits;
  if (!flags.toc_max_bytes.empty()) {
    auto bytes = ParseByteSize(flags.toc_max_bytes);
    if (!bytes.ok()) return fail(bytes.status().WithContext("--toc-max-bytes"));
    toc_limits.max_serialized_bytes = *bytes;
  }
  if (flags.toc_max_chunks) toc_limits.max_chunks = flags.toc_max_chunks;
  if (flags.toc_max_entries) toc_limits.max_entries = flags.toc_max_entries;
  if (Status st = toc_limits.Validate("--toc-max-*"); !st.ok()) return fail(st);

  auto transport = TransportOptionsFrom(flags.transport);
  if (!transport.ok()) return fail(transport.status());
  auto source = image::OpenImageSource(*ref, *transport);
  if (!source.ok()) return fail(source.status());
  auto root = image::LoadRoot(**source);
  if (!root.ok()) return fail(root.status().WithContext(ref->ToString()));
  auto img = PickImage(*root, flags.platform);
  if (!img.ok()) return fail(img.status().WithContext(ref->ToString()));
  auto layer_index = PickLayer(**img, flags.layer, ref->ToString());
  if (!layer_index.ok()) return fail(layer_index.status());
  const image::Descriptor descriptor = (*img)->manifest.layers[*layer_index];

  auto blob = OpenLayerBlob(*ref, **source, *transport, flags, descriptor);
  if (!blob.ok()) {
    return fail(blob.status().WithContext(image::LayerName(*layer_index, descriptor)));
  }

  auto mounted = lazylayer::MountedLayer::Mount(mountpoint, blob->source, blob->keepalive,
                                                descriptor, *keys, options);
  if (!mounted.ok()) {
    return fail(mounted.status().WithContext(image::LayerName(*layer_index, descriptor)));
  }
  auto& m = **mounted;
  const std::string src_name = ref->ToString();

  std::filesystem::create_directories(stats_file.parent_path(), ec);
  if (stats_file.parent_path() == kStatsDir) ::chmod(kStatsDir, 0700);  // never a --stats-file's dir
  Status written = WriteStats(stats_file, StatsJson(m, src_name, *layer_index, mountpoint, true));
  if (!written.ok()) {
    (void)m.Unmount();
    return fail(written.WithContext("stats file"));
  }
  const std::string summary = "mounted " + image::LayerName(*layer_index, descriptor) + " of " +
                              src_name + " (" + std::to_string(m.stats().chunk_count) +
                              " chunks, key " + m.key_name() + ") at " + mountpoint.string();
  if (notify_fd < 0 && !io.quiet) {
    std::fprintf(io.err, "%s; stats in %s\n", summary.c_str(), stats_file.c_str());
    std::fflush(io.err);
  }
  notify(Status::Ok(), summary);

  // Serve: poll for signals and an unmount from outside; stats every second.
  auto next_stats = Clock::now() + std::chrono::seconds(1);
  for (;;) {
    timespec wait{0, 200 * 1000 * 1000};
    int sig = ::sigtimedwait(&signals, nullptr, &wait);
    if (sig > 0) break;
    if (!IsMounted(mountpoint)) break;
    if (Clock::now() >= next_stats) {
      (void)WriteStats(stats_file, StatsJson(m, src_name, *layer_index, mountpoint, true));
      next_stats = Clock::now() + std::chrono::seconds(1);
    }
  }
  auto final_stats = StatsJson(m, src_name, *layer_index, mountpoint, false);
  Status unmounted = m.Unmount();
  mounted->reset();  // busy: detaches lazily and aborts the connection
  (void)WriteStats(stats_file, final_stats);
  if (!unmounted.ok() && !io.quiet) {
    std::fprintf(io.err, "lazycrypt: %s (detached it)\n", unmounted.message().c_str());
  }
  if (access_log) {
    const std::string list = fusefs::FormatAccessList(access_log->Accesses());
    LC_RETURN_IF_ERROR(WriteFileAtomically(
        flags.record_file, ByteSpan(reinterpret_cast<const uint8_t*>(list.data()), list.size()),
        0600).WithContext("--record " + flags.record_file));
    if (!io.quiet) {
      std::fprintf(io.err, "recorded %zu files read in %s\n", access_log->size(),
                   flags.record_file.c_str());
    }
  }
  return Status::Ok();
}

Status RunDaemon(const MountFlags& flags, const Output& io) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::IoError(std::string("pipe: ") + std::strerror(errno));
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return Status::IoError(std::string("fork: ") + std::strerror(err));
  }
  if (pid == 0) {
    ::close(fds[0]);
    ::setsid();
    int null_in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = flags.log_file.empty()
                  ? ::open("/dev/null", O_WRONLY | O_CLOEXEC)
                  : ::open(flags.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (out < 0) {
      std::string msg = "ERR --log " + flags.log_file + ": " + std::strerror(errno);
      (void)!::write(fds[1], msg.data(), msg.size());
      ::_exit(1);
    }
    if (null_in >= 0) ::dup2(null_in, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    if (::chdir("/") != 0) {
      // Relative paths were resolved below by absolute(); keep going from where we are.
    }
    Output child_io = io;
    child_io.out = stdout;
    child_io.err = stderr;
    child_io.progress = false;
    Status s = MountAndServe(flags, child_io, fds[1]);
    if (!s.ok()) std::fprintf(stderr, "lazycrypt: %s\n", s.message().c_str());
    std::fflush(nullptr);
    ::_exit(s.ok() ? 0 : 1);
  }
  ::close(fds[1]);
  std::string reply;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (reply.starts_with("OK ")) {
    std::fprintf(io.out, "%s (pid %d)\n", reply.substr(3).c_str(), static_cast<int>(pid));
    return Status::Ok();
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (reply.starts_with("ERR ")) return Status::Unavailable(reply.substr(4));
  return Status::Internal("the mount process exited without reporting (status " +
                          std::to_string(status) + ")");
}

Result<nlohmann::json> ReadStatsFile(const std::filesystem::path& file,
                                     const std::filesystem::path& mountpoint) {
  auto bytes = ReadFileBytes(file);
  if (!bytes.ok()) {
    return Status::NotFound("no statistics for '" + mountpoint.string() + "' (" + file.string() +
                            ": " + bytes.status().message() +
                            "); is it a `lazycrypt mount` mountpoint? (--stats-file names another file)");
  }
  try {
    return nlohmann::json::parse(bytes->begin(), bytes->end());
  } catch (const std::exception& e) {
    return Status::Corruption(file.string() + ": not valid JSON: " + e.what());
  }
}

}  // namespace

std::filesystem::path DefaultStatsFile(const std::filesystem::path& mountpoint) {
  const std::string abs = NormalizedMountpoint(mountpoint).string();
  auto digest = crypto::Sha256::Of(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(abs.data()), abs.size()));
  return std::filesystem::path(kStatsDir) / (crypto::HexEncode(digest).substr(0, 16) + ".json");
}

Status RunMount(const MountFlags& flags, const Output& io) {
  if (flags.daemon) {
    // Cheap checks in the parent, for a prompt error; the child repeats them.
    std::error_code ec;
    if (!std::filesystem::is_directory(flags.mountpoint, ec)) {
      return Status::InvalidArgument("mountpoint '" + flags.mountpoint +
                                     "': not an existing directory");
    }
    MountFlags child = flags;
    // The child chdirs to "/": make paths absolute first.
    auto abs = [](std::string& p) {
      if (!p.empty()) p = std::filesystem::absolute(p).lexically_normal().string();
    };
    abs(child.mountpoint);
    abs(child.cache_dir);
    abs(child.stats_file);
    abs(child.log_file);
    abs(child.record_file);
    for (auto& k : child.keys) {
      // PATH or PATH:PASSWORD; only the path part is made absolute.
      auto colon = k.find(':');
      std::string path = colon == std::string::npos ? k : k.substr(0, colon);
      std::string rest = colon == std::string::npos ? "" : k.substr(colon);
      if (!path.empty() && path[0] != '/') k = std::filesystem::absolute(path).string() + rest;
    }
    if (child.src.starts_with("oci:")) {
      std::string rest = child.src.substr(4);
      if (!rest.empty() && rest[0] != '/') child.src = "oci:" + std::filesystem::absolute(rest).string();
    }
    if (!child.transport.authfile.empty()) abs(child.transport.authfile);
    if (!child.transport.hosts_dir.empty()) abs(child.transport.hosts_dir);
    return RunDaemon(child, io);
  }
  return MountAndServe(flags, io, -1);
}

Status RunUmount(const UmountFlags& flags, const Output& io) {
  if (flags.mountpoint.empty()) return Status::InvalidArgument("no mountpoint given");
  const std::filesystem::path mountpoint = NormalizedMountpoint(flags.mountpoint);
  const std::filesystem::path stats_file = StatsFileFor(flags.stats_file, mountpoint);
  pid_t pid = 0;
  if (auto j = ReadStatsFile(stats_file, mountpoint); j.ok()) {
    pid = static_cast<pid_t>(j->value("pid", 0));
    if (!j->value("running", true)) pid = 0;
  }
  if (!IsMounted(mountpoint)) {
    if (pid != 0 && ProcessAlive(pid)) {
      // Unmounted already; the process notices within a moment.
    } else {
      return Status::NotFound("'" + mountpoint.string() + "' is not a mounted lazycrypt layer");
    }
  } else if (::geteuid() == 0) {
    if (::umount2(mountpoint.c_str(), 0) != 0) {
      int err = errno;
      if (err == EBUSY) {
        return Status::FailedPrecondition("cannot unmount '" + mountpoint.string() +
                                          "': busy (files open on it, a process's working "
                                          "directory, or an overlay mount using it)");
      }
      return Status::IoError("umount '" + mountpoint.string() + "': " + std::strerror(err));
    }
  } else {
    auto quoted = [](const std::string& s) {
      std::string q = "'";
      for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
      return q + "'";
    };
    std::string cmd = "fusermount3 -u " + quoted(mountpoint.string()) + " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) return Status::IoError("cannot run fusermount3");
    std::string output;
    char buf[512];
    while (size_t n = std::fread(buf, 1, sizeof buf, p)) output.append(buf, n);
    int rc = ::pclose(p);
    if (rc != 0) {
      while (!output.empty() && output.back() == '\n') output.pop_back();
      if (output.find("busy") != std::string::npos) {
        return Status::FailedPrecondition("cannot unmount '" + mountpoint.string() + "': busy (" +
                                          output + ")");
      }
      return Status::IoError("fusermount3 -u '" + mountpoint.string() + "': " + output);
    }
  }
  if (pid != 0) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(
                                             static_cast<int64_t>(flags.wait_seconds * 1000));
    while (ProcessAlive(pid)) {
      if (Clock::now() >= deadline) {
        return Status::DeadlineExceeded("unmounted '" + mountpoint.string() +
                                        "', but its process " + std::to_string(pid) +
                                        " is still running");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  if (!io.quiet) std::fprintf(io.err, "unmounted %s\n", mountpoint.c_str());
  return Status::Ok();
}

Status RunStats(const StatsFlags& flags, const Output& io) {
  if (flags.mountpoint.empty()) return Status::InvalidArgument("no mountpoint given");
  const std::filesystem::path mountpoint = NormalizedMountpoint(flags.mountpoint);
  const std::filesystem::path stats_file = StatsFileFor(flags.stats_file, mountpoint);
  LC_ASSIGN_OR_RETURN(nlohmann::json j, ReadStatsFile(stats_file, mountpoint));
  const pid_t pid = static_cast<pid_t>(j.value("pid", 0));
  const bool running = j.value("running", false) && ProcessAlive(pid);
  j["running"] = running;
  if (flags.json) {
    std::fprintf(io.out, "%s\n", j.dump(2).c_str());
    return Status::Ok();
  }
  auto u = [&](const char* key) { return j.value(key, uint64_t{0}); };
  std::fprintf(io.out, "mountpoint       %s\n", j.value("mountpoint", "").c_str());
  std::fprintf(io.out, "process          %d (%s)\n", static_cast<int>(pid),
               running ? "running" : "gone: these are its last statistics");
  std::fprintf(io.out, "source           %s layer %d\n", j.value("source", "").c_str(),
               j.value("layer", -1));
  std::fprintf(io.out, "layer            %s  %s\n", j.value("digest", "").c_str(),
               FormatBytes(u("blob_size")).c_str());
  std::fprintf(io.out, "present          %.1f%%  (%llu of %llu chunks, %s on disk)\n",
               j.value("percent_present", 0.0), static_cast<unsigned long long>(u("chunks_present")),
               static_cast<unsigned long long>(u("chunk_count")), FormatBytes(u("bytes_present")).c_str());
  std::fprintf(io.out, "fetched          %s in %llu requests (%llu failed), %.3f s\n",
               FormatBytes(u("blob_bytes_fetched")).c_str(),
               static_cast<unsigned long long>(u("fetch_requests")),
               static_cast<unsigned long long>(u("fetch_errors")), j.value("fetch_seconds", 0.0));
  std::fprintf(io.out, "chunks           %llu fetched, %llu opened\n",
               static_cast<unsigned long long>(u("chunks_fetched")),
               static_cast<unsigned long long>(u("chunks_opened")));
  std::fprintf(io.out, "cache            %llu hits, %llu misses, %s in memory\n",
               static_cast<unsigned long long>(u("cache_hits")),
               static_cast<unsigned long long>(u("cache_misses")),
               FormatBytes(u("memory_cache_bytes")).c_str());
  std::fprintf(io.out, "failures         %llu chunks failed authentication, %llu cached records "
               "corrupt\n", static_cast<unsigned long long>(u("auth_failures")),
               static_cast<unsigned long long>(u("disk_corrupt")));
  std::fprintf(io.out, "verification     %s  (%llu of %llu chunks hashed, %llu retries)\n",
               j.value("verification", "off").c_str(),
               static_cast<unsigned long long>(u("verified_chunks")),
               static_cast<unsigned long long>(u("chunk_count")),
               static_cast<unsigned long long>(u("verification_retries")));
  if (j.contains("verification_error")) {
    std::fprintf(io.out, "quarantined      every read of its files fails (EIO; %llu refused): %s\n",
                 static_cast<unsigned long long>(u("quarantined_reads")),
                 j.value("verification_error", "").c_str());
  }
  return Status::Ok();
}

}  // namespace lazycrypt::tools
