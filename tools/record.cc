#include "tools/record.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "common/json_depth.h"
#include "fusefs/access_log.h"
#include "image/convert.h"
#include "image/transport.h"
#include "lazylayer/mounted_layer.h"
#include "tools/mount.h"

extern char** environ;

namespace lazycrypt::tools {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

constexpr const char* kDefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---- guards --------------------------------------------------------------------------------

// A private temporary directory (mode 0700), removed with its contents on destruction. Declared
// before the mount guards that live inside it, so it goes last.
class TempDir {
 public:
  static Result<TempDir> Create() {
    std::error_code ec;
    fs::path base = fs::temp_directory_path(ec);
    if (ec) base = "/tmp";
    std::string templ = (base / "lazycrypt-record-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) return ErrnoStatus("mkdtemp in " + base.string());
    return TempDir(templ);
  }
  TempDir(TempDir&& o) noexcept : path_(std::exchange(o.path_, fs::path())) {}
  TempDir& operator=(TempDir&&) = delete;
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  explicit TempDir(fs::path p) : path_(std::move(p)) {}
  fs::path path_;
};

// A mount (overlayfs, tmpfs) unmounted on destruction: detached lazily if busy.
class ScopedMount {
 public:
  static Result<std::unique_ptr<ScopedMount>> Mount(const std::string& source, const fs::path& target,
                                                    const std::string& type, unsigned long flags,
                                                    const std::string& data) {
    if (::mount(source.c_str(), target.c_str(), type.c_str(), flags, data.c_str()) != 0) {
      return ErrnoStatus("mount " + type + " at '" + target.string() + "'");
    }
    return std::unique_ptr<ScopedMount>(new ScopedMount(target));
  }
  ~ScopedMount() { (void)Unmount(); }
  // OK once unmounted; a busy mount is detached lazily (and reported).
  Status Unmount() {
    if (!mounted_) return Status::Ok();
    mounted_ = false;
    if (::umount2(target_.c_str(), 0) == 0) return Status::Ok();
    int err = errno;
    ::umount2(target_.c_str(), MNT_DETACH);
    return ErrnoStatus("umount '" + target_.string() + "' (detached it)", err);
  }
  ScopedMount(const ScopedMount&) = delete;
  ScopedMount& operator=(const ScopedMount&) = delete;

 private:
  explicit ScopedMount(fs::path target) : target_(std::move(target)) {}
  fs::path target_;
  bool mounted_ = true;
};

// Blocks SIGINT/SIGTERM/SIGHUP (taken with sigtimedwait while the container runs: an interrupt
// ends the run early and still cleans up) and ignores SIGPIPE (a tar that dies while we feed it);
// restores both on destruction. Constructed before any thread starts, so every thread inherits
// the mask.
class SignalScope {
 public:
  SignalScope() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGHUP);
    ::pthread_sigmask(SIG_BLOCK, &set_, &old_mask_);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ignore, &old_pipe_);
  }
  ~SignalScope() {
    ::sigaction(SIGPIPE, &old_pipe_, nullptr);
    ::pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  // Waits up to `ms` for one of the signals; returns it or 0.
  int Wait(int64_t ms) const {
    timespec t{static_cast<time_t>(ms / 1000), static_cast<long>((ms % 1000) * 1000000)};
    int sig = ::sigtimedwait(&set_, nullptr, &t);
    return sig > 0 ? sig : 0;
  }
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

 private:
  sigset_t set_;
  sigset_t old_mask_;
  struct sigaction old_pipe_ {};
};

// ---- child processes -------------------------------------------------------------------------

// Starts argv[0] (PATH lookup) with stdin from `stdin_fd` (-1: /dev/null) and stdout+stderr to
// `out_fd`, default signal mask and dispositions.
Result<pid_t> Spawn(const std::vector<std::string>& argv, int stdin_fd, int out_fd) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stdin_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
  } else {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  }
  posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, out_fd, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return ErrnoStatus("cannot start " + argv[0], rc);
  return pid;
}

// Exit code, or 128 + signal.
int WaitExit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 255;
}

// Runs argv to completion, output to `out_fd`.
Result<int> RunProgram(const std::vector<std::string>& argv, int out_fd) {
  LC_ASSIGN_OR_RETURN(pid_t pid, Spawn(argv, -1, out_fd));
  return WaitExit(pid);
}

std::string LastLines(const fs::path& file, size_t max_lines) {
  std::ifstream in(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
    if (lines.size() > max_lines) lines.erase(lines.begin());
  }
  std::string out;
  for (const auto& l : lines) out += (out.empty() ? "  | " : "\n  | ") + l;
  return out;
}

Result<UniqueFd> OpenLog(const fs::path& file) {
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus("create '" + file.string() + "'");
  return UniqueFd(fd);
}

// The runc executable: `name` as given when it holds a '/', else found in PATH.
Result<std::string> FindExecutable(const std::string& name) {
  auto usable = [](const fs::path& p) { return ::access(p.c_str(), X_OK) == 0 && !fs::is_directory(p); };
  if (name.find('/') != std::string::npos) {
    if (usable(name)) return name;
    return Status::NotFound("runc not found at '" + name + "' (--runc)");
  }
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (!dir.empty() && usable(fs::path(dir) / name)) return (fs::path(dir) / name).string();
  }
  return Status::NotFound("'" + name + "' not found in PATH: lazycrypt record runs the container "
                          "with runc (apt-get install runc, or name it with --runc PATH)");
}

// ---- the image's process ---------------------------------------------------------------------

struct ProcessSpec {
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::string cwd = "/";
  std::string user;  // the config's User ("" = root)
};

Result<ProcessSpec> ProcessFromConfig(const std::vector<uint8_t>& config_bytes,
                                      const std::vector<std::string>& command) {
  ProcessSpec p;
  Json cfg;
  LC_RETURN_IF_ERROR(CheckJsonDepth(AsStringView(config_bytes), "image config"));
  try {
    Json j = Json::parse(config_bytes.begin(), config_bytes.end());
    if (j.contains("config") && j["config"].is_object()) cfg = j["config"];
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("image config: not valid JSON: ") + e.what());
  }
  auto strings = [&cfg](const char* key) -> Result<std::vector<std::string>> {
    std::vector<std::string> out;
    if (!cfg.contains(key) || cfg[key].is_null()) return out;
    if (!cfg[key].is_array()) {
      return Status::Corruption(std::string("image config: config.") + key + " is not an array");
    }
    for (const auto& v : cfg[key]) {
      if (!v.is_string()) {
        return Status::Corruption(std::string("image config: config.") + key + " holds a non-string");
      }
      out.push_back(v.get<std::string>());
    }
    return out;
  };
  LC_ASSIGN_OR_RETURN(auto entrypoint, strings("Entrypoint"));
  LC_ASSIGN_OR_RETURN(auto cmd, strings("Cmd"));
  LC_ASSIGN_OR_RETURN(p.env, strings("Env"));
  if (!command.empty()) {
    p.args = command;
  } else {
    p.args = entrypoint;
    p.args.insert(p.args.end(), cmd.begin(), cmd.end());
  }
  if (p.args.empty()) {
    return Status::InvalidArgument("the image config has no Entrypoint or Cmd: give the command "
                                   "to run after `--`");
  }
  bool has_path = false;
  for (const auto& e : p.env) has_path |= e.starts_with("PATH=");
  if (!has_path) p.env.push_back(kDefaultPath);
  if (cfg.contains("WorkingDir") && cfg["WorkingDir"].is_string() &&
      !cfg["WorkingDir"].get<std::string>().empty()) {
    p.cwd = cfg["WorkingDir"].get<std::string>();
    if (p.cwd[0] != '/') p.cwd = "/" + p.cwd;
  }
  if (cfg.contains("User") && cfg["User"].is_string()) p.user = cfg["User"].get<std::string>();
  return p;
}

// Looks `name` up in an /etc/passwd- or /etc/group-style file of the root file system: field 2
// (the id) of the line whose field 0 is `name`.
std::optional<uint32_t> LookupId(const fs::path& file, const std::string& name) {
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> fields;
    std::stringstream s(line);
    for (std::string f; std::getline(s, f, ':');) fields.push_back(f);
    if (fields.size() >= 3 && fields[0] == name) {
      char* end = nullptr;
      unsigned long v = std::strtoul(fields[2].c_str(), &end, 10);
      if (end != fields[2].c_str() && *end == '\0') return static_cast<uint32_t>(v);
    }
  }
  return std::nullopt;
}

bool IsNumber(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos && s.size() < 10;
}

// "uid[:gid]" or "name[:group]" (names resolved in the image's /etc/passwd and /etc/group, as
// container runtimes do) → {uid, gid}. Without a group: the user's primary group (0 for a bare
// uid not in /etc/passwd).
Result<std::pair<uint32_t, uint32_t>> ResolveUser(const std::string& user, const fs::path& rootfs) {
  if (user.empty()) return std::make_pair(0u, 0u);
  std::string u = user, g;
  if (auto colon = user.find(':'); colon != std::string::npos) {
    u = user.substr(0, colon);
    g = user.substr(colon + 1);
  }
  uint32_t uid = 0, gid = 0;
  std::optional<uint32_t> primary_gid;
  {
    std::ifstream in(rootfs / "etc/passwd");
    for (std::string line; std::getline(in, line);) {
      std::vector<std::string> f;
      std::stringstream s(line);
      for (std::string x; std::getline(s, x, ':');) f.push_back(x);
      if (f.size() < 4) continue;
      if ((IsNumber(u) && f[2] == u) || f[0] == u) {
        if (IsNumber(f[3])) primary_gid = static_cast<uint32_t>(std::stoul(f[3]));
        if (!IsNumber(u) && IsNumber(f[2])) uid = static_cast<uint32_t>(std::stoul(f[2]));
        break;
      }
    }
  }
  if (IsNumber(u)) {
    uid = static_cast<uint32_t>(std::stoul(u));
  } else if (!primary_gid && !LookupId(rootfs / "etc/passwd", u)) {
    return Status::InvalidArgument("image config User '" + user + "': no user '" + u +
                                   "' in the image's /etc/passwd");
  }
  if (g.empty()) {
    gid = primary_gid.value_or(0);
  } else if (IsNumber(g)) {
    gid = static_cast<uint32_t>(std::stoul(g));
  } else if (auto id = LookupId(rootfs / "etc/group", g)) {
    gid = *id;
  } else {
    return Status::InvalidArgument("image config User '" + user + "': no group '" + g +
                                   "' in the image's /etc/group");
  }
  return std::make_pair(uid, gid);
}

// The OCI runtime config: `runc spec`'s default with our process, root and the host network.
Status WriteBundleConfig(const fs::path& bundle, const fs::path& rootfs, const ProcessSpec& p,
                         std::pair<uint32_t, uint32_t> ids) {
  const fs::path file = bundle / "config.json";
  LC_ASSIGN_OR_RETURN(auto bytes, ReadFileBytes(file));
  Json j;
  try {
    j = Json::parse(bytes.begin(), bytes.end());
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("`runc spec` wrote invalid JSON: ") + e.what());
  }
  Json& proc = j["process"];
  proc["terminal"] = false;
  proc["args"] = p.args;
  proc["env"] = p.env;
  proc["cwd"] = p.cwd;
  proc["user"] = Json{{"uid", ids.first}, {"gid", ids.second}};
  j["root"] = Json{{"path", rootfs.string()}, {"readonly", false}};
  // The host network: no network namespace of its own (nothing to set up; enough for start-up).
  if (j.contains("linux") && j["linux"].contains("namespaces")) {
    Json kept = Json::array();
    for (const auto& ns : j["linux"]["namespaces"]) {
      if (ns.value("type", "") != "network") kept.push_back(ns);
    }
    j["linux"]["namespaces"] = kept;
  }
  const std::string text = j.dump(2);
  return WriteFileAtomically(file, ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()),
                             0600);
}

// ---- layers ------------------------------------------------------------------------------------

// OCI whiteouts (".wh.NAME", ".wh..wh..opq") of an unpacked plain layer → overlayfs's (a 0/0
// character device, the trusted.overlay.opaque xattr), so the layer works as a lowerdir.
Status ConvertWhiteouts(const fs::path& dir) {
  std::vector<fs::path> whiteouts;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it); it.increment(ec)) {
    if (it->path().filename().string().starts_with(".wh.")) whiteouts.push_back(it->path());
  }
  if (ec) return Status::IoError("walking '" + dir.string() + "': " + ec.message());
  for (const auto& w : whiteouts) {
    const std::string name = w.filename().string();
    const fs::path parent = w.parent_path();
    fs::remove_all(w, ec);
    if (ec) return Status::IoError("removing '" + w.string() + "': " + ec.message());
    if (name == ".wh..wh..opq") {
      if (::setxattr(parent.c_str(), "trusted.overlay.opaque", "y", 1, 0) != 0) {
        return ErrnoStatus("marking '" + parent.string() + "' opaque");
      }
    } else {
      const fs::path target = parent / name.substr(4);
      fs::remove_all(target, ec);
      if (::mknod(target.c_str(), S_IFCHR | 0000, makedev(0, 0)) != 0) {
        return ErrnoStatus("whiteout '" + target.string() + "'");
      }
    }
  }
  return Status::Ok();
}

// Unpacks a plain (tar, tar+gzip, tar+zstd) layer into `dir` with GNU tar, its blob verified
// against the descriptor's digest as it is read.
Status UnpackPlainLayer(image::ImageSource& src, const image::Descriptor& d, const fs::path& dir,
                        const fs::path& log_file) {
  LC_ASSIGN_OR_RETURN(auto blob, src.OpenVerifiedBlob(d));
  std::vector<std::string> argv = {"tar", "-x", "-p", "--numeric-owner", "--xattrs",
                                   "--xattrs-include=*", "-C", dir.string(), "-f", "-"};
  const std::string& mt = d.media_type;
  if (mt.ends_with("gzip")) argv.push_back("-z");
  if (mt.ends_with("zstd")) argv.push_back("--zstd");
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus("pipe");
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  LC_ASSIGN_OR_RETURN(UniqueFd log, OpenLog(log_file));
  LC_ASSIGN_OR_RETURN(pid_t pid, Spawn(argv, read_end.get(), log.get()));
  read_end = UniqueFd();
  Status fed = Status::Ok();
  std::vector<uint8_t> buf(1 << 20);
  for (uint64_t off = 0; off < blob->size() && fed.ok();) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), blob->size() - off));
    fed = blob->ReadAt(off, MutableByteSpan(buf.data(), n));
    for (size_t done = 0; fed.ok() && done < n;) {
      ssize_t w = ::write(write_end.get(), buf.data() + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        fed = ErrnoStatus("writing the layer to tar");
        break;
      }
      done += static_cast<size_t>(w);
    }
    off += n;
  }
  write_end = UniqueFd();
  int code = WaitExit(pid);
  LC_RETURN_IF_ERROR(fed);  // a failed read explains a failed tar better than tar does
  if (code != 0) {
    return Status::IoError("tar could not unpack it (exit " + std::to_string(code) + "):\n" +
                           LastLines(log_file, 10));
  }
  return ConvertWhiteouts(dir);
}

struct LayerState {
  image::LayerKind kind = image::LayerKind::kPlain;
  std::string name;  // image::LayerName
  std::unique_ptr<lazylayer::MountedLayer> mounted;
};

}  // namespace

Result<int64_t> ParseDurationMs(std::string_view text) {
  std::string t(text);
  double scale = 1000;
  if (t.ends_with("ms")) {
    scale = 1;
    t.resize(t.size() - 2);
  } else if (t.ends_with("s")) {
    t.resize(t.size() - 1);
  } else if (t.ends_with("m")) {
    scale = 60000;
    t.resize(t.size() - 1);
  }
  char* end = nullptr;
  double v = t.empty() ? 0 : std::strtod(t.c_str(), &end);
  if (t.empty() || end == nullptr || *end != '\0' || !(v > 0) || !std::isfinite(v) ||
      v * scale > 86400.0 * 1000) {
    return Status::InvalidArgument("duration '" + std::string(text) +
                                   "': expected e.g. 10s, 500ms, 2m (more than 0, at most a day)");
  }
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(v * scale)));
}

Status RunRecord(const RecordFlags& flags, const Output& io) {
  auto period_ms = ParseDurationMs(flags.period);
  if (!period_ms.ok()) return period_ms.status().WithContext("--period");
  if (flags.output.empty()) return Status::InvalidArgument("no --output LIST given");
  std::error_code ec;
  const fs::path output_dir = fs::absolute(flags.output, ec).parent_path();
  if (!fs::is_directory(output_dir, ec)) {
    return Status::InvalidArgument("--output " + flags.output + ": directory '" +
                                   output_dir.string() + "' does not exist");
  }
  if (::geteuid() != 0) {
    return Status::PermissionDenied("lazycrypt record must run as root (it mounts FUSE and "
                                    "overlayfs and runs the container with runc)");
  }
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    return Status::FailedPrecondition("/dev/fuse is missing or not usable: lazycrypt record "
                                      "mounts the image's lazycrypt layers with FUSE");
  }
  LC_ASSIGN_OR_RETURN(const std::string runc, FindExecutable(flags.runc));
  std::vector<keywrap::PrivateKey> keys;
  for (const auto& spec : flags.keys) {
    LC_ASSIGN_OR_RETURN(auto key, LoadKey(spec));
    keys.push_back(std::move(key));
  }

  SignalScope signals;  // before any thread (registry client, FUSE sessions) starts

  LC_ASSIGN_OR_RETURN(auto ref, image::ImageReference::Parse(flags.src));
  LC_ASSIGN_OR_RETURN(auto transport, TransportOptionsFrom(flags.transport));
  LC_ASSIGN_OR_RETURN(auto source, image::OpenImageSource(ref, transport));
  auto root = image::LoadRoot(*source);
  if (!root.ok()) return root.status().WithContext(ref.ToString());
  LC_ASSIGN_OR_RETURN(const image::LoadedImage* img, PickImage(*root, flags.platform));
  LC_ASSIGN_OR_RETURN(ProcessSpec process, ProcessFromConfig(img->config_bytes, flags.command));
  const auto& descriptors = img->manifest.layers;
  if (descriptors.empty()) return Status::InvalidArgument(ref.ToString() + " has no layers");

  // Cheap checks before mounting anything.
  bool any_lazy = false;
  for (size_t i = 0; i < descriptors.size(); ++i) {
    const auto kind = image::ClassifyLayer(descriptors[i].media_type);
    const std::string name = image::LayerName(i, descriptors[i]);
    if (kind == image::LayerKind::kOcicrypt) {
      return Status::Unsupported(name + " is ocicrypt-encrypted (" + descriptors[i].media_type +
                                 "): record needs lazycrypt or plain layers (`lazycrypt decrypt` "
                                 "or `lazycrypt encrypt` it first)");
    }
    if (kind == image::LayerKind::kUnknown) {
      return Status::Unsupported(name + ": media type " + descriptors[i].media_type +
                                 " is not a layer lazycrypt can mount or unpack");
    }
    any_lazy |= kind == image::LayerKind::kLazycrypt;
  }
  if (!any_lazy) {
    return Status::InvalidArgument(
        ref.ToString() + " has no lazycrypt layer: record sees reads only through lazycrypt "
        "mounts (encrypt the image first; the list it records also fits `encrypt "
        "--prefetch-list` of the plain image)");
  }
  if (keys.empty()) {
    return Status::InvalidArgument(ref.ToString() + " has lazycrypt layers: give their private "
                                   "key with --key PRIV.pem");
  }

  // Everything below lives in `tmp`; guards are destroyed in reverse order: container, overlay,
  // tmpfs, FUSE layers, then the directory.
  LC_ASSIGN_OR_RETURN(TempDir tmp, TempDir::Create());
  const fs::path dir = tmp.path();
  const std::string dir_text = dir.string();
  if (dir_text.find_first_of(":,") != std::string::npos) {
    return Status::InvalidArgument("temporary directory '" + dir_text + "' holds ':' or ',' "
                                   "(overlayfs options cannot name it); set TMPDIR elsewhere");
  }
  auto log = std::make_shared<fusefs::AccessLog>();
  std::vector<LayerState> layers(descriptors.size());
  for (size_t i = 0; i < descriptors.size(); ++i) {
    const auto& d = descriptors[i];
    LayerState& layer = layers[i];
    layer.kind = image::ClassifyLayer(d.media_type);
    layer.name = image::LayerName(i, d);
    const fs::path layer_dir = dir / "layers" / std::to_string(i);
    fs::create_directories(layer_dir, ec);
    if (ec) return Status::IoError("mkdir '" + layer_dir.string() + "': " + ec.message());
    if (layer.kind == image::LayerKind::kPlain) {
      Status s = UnpackPlainLayer(*source, d, layer_dir, dir / ("tar-" + std::to_string(i) + ".log"));
      if (!s.ok()) return s.WithContext("unpacking " + layer.name);
      continue;
    }
    MountFlags defaults;
    auto blob = OpenLayerBlob(ref, *source, transport, defaults, d);
    if (!blob.ok()) return blob.status().WithContext(layer.name);
    lazylayer::MountLayerOptions options;
    options.prefetch = false;  // record what is read, not what was marked before
    options.mount.fsname = "lazycrypt-record";
    options.mount.layer_name = layer.name;
    options.mount.access_recorder = fusefs::NewAccessLogRecorder(log, i);
    auto mounted = lazylayer::MountedLayer::Mount(layer_dir, blob->source, blob->keepalive, d, keys,
                                                  options);
    if (!mounted.ok()) return mounted.status().WithContext(layer.name);
    layer.mounted = std::move(mounted).value();
  }

  // overlayfs: the layers (topmost first) under a writable upper directory on a private tmpfs.
  const fs::path rw = dir / "rw", rootfs = dir / "rootfs", bundle = dir / "bundle";
  for (const auto& p : {rw, rootfs, bundle}) fs::create_directories(p, ec);
  if (ec) return Status::IoError("mkdir in '" + dir_text + "': " + ec.message());
  LC_ASSIGN_OR_RETURN(auto tmpfs, ScopedMount::Mount("lazycrypt-record", rw, "tmpfs",
                                                     MS_NOSUID | MS_NODEV, "mode=0755"));
  fs::create_directories(rw / "upper", ec);
  fs::create_directories(rw / "work", ec);
  if (ec) return Status::IoError("mkdir in the tmpfs: " + ec.message());
  std::string lowerdirs;
  for (size_t i = descriptors.size(); i-- > 0;) {
    lowerdirs += (lowerdirs.empty() ? "" : ":") + (dir / "layers" / std::to_string(i)).string();
  }
  const std::string overlay_options = "lowerdir=" + lowerdirs + ",upperdir=" +
                                      (rw / "upper").string() + ",workdir=" + (rw / "work").string();
  auto overlay = ScopedMount::Mount("overlay", rootfs, "overlay", 0, overlay_options);
  if (!overlay.ok()) return overlay.status().WithContext("stacking the layers");

  LC_ASSIGN_OR_RETURN(auto ids, ResolveUser(process.user, rootfs));

  // The bundle: `runc spec`'s defaults, then our process and root.
  const fs::path runc_log = dir / "runc.log";
  {
    LC_ASSIGN_OR_RETURN(UniqueFd out, OpenLog(runc_log));
    LC_ASSIGN_OR_RETURN(int code, RunProgram({runc, "spec", "--bundle", bundle.string()}, out.get()));
    if (code != 0) {
      return Status::IoError("`runc spec` failed (exit " + std::to_string(code) + "):\n" +
                             LastLines(runc_log, 10));
    }
  }
  LC_RETURN_IF_ERROR(WriteBundleConfig(bundle, rootfs, process, ids));

  // Run for at most the period.
  const std::string state_root = (dir / "runc").string();
  const std::string id = "lazycrypt-record-" + std::to_string(::getpid());
  const fs::path container_log = dir / "container.log";
  struct ContainerGuard {
    std::string runc, state_root, id;
    int log_fd;
    ~ContainerGuard() {
      (void)RunProgram({runc, "--root", state_root, "kill", id, "KILL"}, log_fd);
      (void)RunProgram({runc, "--root", state_root, "delete", "--force", id}, log_fd);
    }
  };
  LC_ASSIGN_OR_RETURN(UniqueFd out, OpenLog(container_log));
  LC_ASSIGN_OR_RETURN(UniqueFd cleanup_out, OpenLog(dir / "runc-cleanup.log"));
  if (!io.quiet) {
    std::string shown;
    for (const auto& a : process.args) shown += (shown.empty() ? "" : " ") + a;
    std::fprintf(io.err, "running %s with runc for at most %s\n", shown.c_str(),
                 flags.period.c_str());
    std::fflush(io.err);
  }
  const auto started = Clock::now();
  int exit_code = -1;
  bool stopped = false;
  int interrupted = 0;
  {
    ContainerGuard guard{runc, state_root, id, cleanup_out.get()};
    LC_ASSIGN_OR_RETURN(pid_t pid, Spawn({runc, "--root", state_root, "run", "--bundle",
                                          bundle.string(), id},
                                         -1, out.get()));
    const auto deadline = started + std::chrono::milliseconds(*period_ms);
    for (;;) {
      int status = 0;
      pid_t done = ::waitpid(pid, &status, WNOHANG);
      if (done == pid) {
        exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      const auto now = Clock::now();
      if (now >= deadline || interrupted != 0) {
        stopped = true;
        (void)RunProgram({runc, "--root", state_root, "kill", id, "KILL"}, cleanup_out.get());
        // runc run returns once the container's init is gone; make sure it does.
        const auto bound = Clock::now() + std::chrono::seconds(10);
        while (::waitpid(pid, &status, WNOHANG) == 0) {
          if (Clock::now() >= bound) {
            ::kill(pid, SIGKILL);
            WaitExit(pid);
            break;
          }
          signals.Wait(50);
        }
        break;
      }
      const int64_t left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
      interrupted = signals.Wait(std::min<int64_t>(50, std::max<int64_t>(1, left)));
    }
  }
  const double ran_sec =
      std::chrono::duration<double>(Clock::now() - started).count();

  // runc's own failures (bad bundle, missing binary in the image) are errors; the process's
  // exit status is not.
  const std::string tail = LastLines(container_log, 15);
  if (!stopped && exit_code != 0 &&
      (tail.find("level=error") != std::string::npos || tail.find("runc run failed") != std::string::npos)) {
    return Status::IoError("runc could not run the container (exit " + std::to_string(exit_code) +
                           "):\n" + tail);
  }

  // Unmount everything before writing the list: the list says what was read, and a failure to
  // unmount is reported.
  Status unmounted = (*overlay)->Unmount();
  overlay->reset();
  if (Status s = tmpfs->Unmount(); unmounted.ok()) unmounted = s;
  for (auto& layer : layers) {
    if (!layer.mounted) continue;
    if (Status s = layer.mounted->Unmount(); unmounted.ok() && !s.ok()) unmounted = s;
  }

  const auto accesses = log->Accesses();
  const std::string list = fusefs::FormatAccessList(accesses);
  LC_RETURN_IF_ERROR(WriteFileAtomically(flags.output,
                                         ByteSpan(reinterpret_cast<const uint8_t*>(list.data()),
                                                  list.size()),
                                         0600)
                         .WithContext("--output " + flags.output));

  if (!io.quiet) {
    if (interrupted != 0) {
      std::fprintf(io.err, "interrupted (signal %d): stopped the container after %.1f s\n",
                   interrupted, ran_sec);
    } else if (stopped) {
      std::fprintf(io.err, "stopped the container after the period (%.1f s)\n", ran_sec);
    } else {
      std::fprintf(io.err, "the container exited with status %d after %.1f s\n", exit_code,
                   ran_sec);
      if (exit_code != 0) std::fprintf(io.err, "its last output:\n%s\n", tail.c_str());
    }
    uint64_t total_bytes = 0;
    for (size_t i = 0; i < layers.size(); ++i) {
      if (layers[i].kind != image::LayerKind::kLazycrypt) {
        std::fprintf(io.err, "  %s: plain, unpacked (not recorded)\n", layers[i].name.c_str());
        continue;
      }
      size_t files = 0;
      uint64_t bytes = 0;
      for (const auto& a : accesses) {
        if (a.source != i) continue;
        ++files;
        if (auto e = layers[i].mounted->layer().index().Find(a.path)) bytes += e->size();
      }
      total_bytes += bytes;
      std::fprintf(io.err, "  %s: %zu files read, %s\n", layers[i].name.c_str(), files,
                   FormatBytes(bytes).c_str());
    }
    std::fprintf(io.err, "recorded %zu files (%s) in %s\n", accesses.size(),
                 FormatBytes(total_bytes).c_str(), flags.output.c_str());
  }
  return unmounted;
}

}  // namespace lazycrypt::tools
