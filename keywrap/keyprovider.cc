#include "keywrap/keyprovider.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <system_error>

#include "common/file_io.h"
#include "keywrap/base64.h"
#include "keywrap/json_util.h"
#include "keywrap/keyprovider.grpc.pb.h"

namespace lazycrypt::keywrap {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxProviderOutputBytes = 1 << 20;
constexpr size_t kMaxStderrBytes = 512;

std::string Quoted(std::string_view s) { return internal::Quote(s); }

using internal::WipedString;

Status CheckMembers(const json& object, std::initializer_list<std::string_view> allowed,
                    const std::string& where) {
  for (const auto& [key, value] : object.items()) {
    bool known = false;
    for (std::string_view a : allowed) known = known || key == a;
    if (!known) return Status::InvalidArgument(where + ": unknown member " + Quoted(key));
  }
  return Status::Ok();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Configuration

Result<KeyProviderConfig> ParseKeyProviderConfig(std::string_view text, std::string_view source) {
  const std::string src(source);
  auto parsed = internal::ParseJson(text, src);
  if (!parsed.ok()) return Status::InvalidArgument(parsed.status().message());
  const json& root = *parsed;
  if (!root.is_object()) return Status::InvalidArgument(src + ": not a JSON object");
  auto providers = root.find("key-providers");
  if (providers == root.end() || !providers->is_object()) {
    return Status::InvalidArgument(src + ": needs a \"key-providers\" object");
  }
  KeyProviderConfig config;
  config.source = src;
  for (const auto& [name, attrs] : providers->items()) {
    const std::string where = src + ": key provider " + Quoted(name);
    if (name.empty()) return Status::InvalidArgument(src + ": a key provider has an empty name");
    if (!attrs.is_object()) return Status::InvalidArgument(where + ": not a JSON object");
    LC_RETURN_IF_ERROR(CheckMembers(attrs, {"cmd", "grpc"}, where));
    const bool has_cmd = attrs.contains("cmd") && !attrs["cmd"].is_null();
    const bool has_grpc = attrs.contains("grpc") && !attrs["grpc"].is_null();
    if (has_cmd == has_grpc) {
      return Status::InvalidArgument(
          where + ": unknown transport: needs exactly one of \"cmd\" {path, args} or \"grpc\" "
                  "\"host:port\"/\"unix:///path\"");
    }
    KeyProviderAttrs out;
    if (has_cmd) {
      const json& cmd = attrs["cmd"];
      if (!cmd.is_object()) return Status::InvalidArgument(where + ": \"cmd\" is not an object");
      LC_RETURN_IF_ERROR(CheckMembers(cmd, {"path", "args"}, where + " cmd"));
      if (!cmd.contains("path") || !cmd["path"].is_string() ||
          cmd["path"].get<std::string>().empty()) {
        return Status::InvalidArgument(where + ": \"cmd\" needs a \"path\"");
      }
      KeyProviderCommand command;
      command.path = cmd["path"].get<std::string>();
      if (command.path.front() != '/') {
        return Status::InvalidArgument(where + ": cmd path " + Quoted(command.path) +
                                       " must be absolute");
      }
      if (cmd.contains("args") && !cmd["args"].is_null()) {
        if (!cmd["args"].is_array()) {
          return Status::InvalidArgument(where + ": cmd \"args\" is not an array of strings");
        }
        for (const json& a : cmd["args"]) {
          if (!a.is_string()) {
            return Status::InvalidArgument(where + ": cmd \"args\" is not an array of strings");
          }
          command.args.push_back(a.get<std::string>());
        }
      }
      out.command = std::move(command);
    } else {
      if (!attrs["grpc"].is_string() || attrs["grpc"].get<std::string>().empty()) {
        return Status::InvalidArgument(where + ": \"grpc\" must be a non-empty address string");
      }
      out.grpc = attrs["grpc"].get<std::string>();
    }
    config.providers.emplace(name, std::move(out));
  }
  return config;
}

Result<KeyProviderConfig> LoadKeyProviderConfig(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return Status::NotFound(path.string() + ": key provider config file does not exist");
  }
  auto bytes = ReadFileBytes(path);
  if (!bytes.ok()) return bytes.status().WithContext("key provider config");
  return ParseKeyProviderConfig(AsStringView(*bytes), path.string());
}

std::optional<std::filesystem::path> KeyProviderConfigPathFromEnv() {
  const char* value = std::getenv(std::string(kKeyProviderConfigEnv).c_str());
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::filesystem::path(value);
}

bool IsKeyProviderSpec(std::string_view spec) { return spec.starts_with("provider:"); }

Result<KeyProviderSpec> ParseKeyProviderSpec(std::string_view spec) {
  if (!IsKeyProviderSpec(spec)) {
    return Status::InvalidArgument(Quoted(spec) + " is not provider:NAME[:params]");
  }
  std::string_view rest = spec.substr(std::string_view("provider:").size());
  KeyProviderSpec out;
  // As ocicrypt's EncryptWithKeyProvider/DecryptWithKeyProvider: split at the first ':' only.
  size_t colon = rest.find(':');
  if (colon != std::string_view::npos && colon > 0) {
    out.name = std::string(rest.substr(0, colon));
    out.params = std::string(rest.substr(colon + 1));
  } else {
    out.name = std::string(rest);
  }
  if (out.name.empty() || out.name.find(':') != std::string::npos) {
    return Status::InvalidArgument(Quoted(spec) + ": empty provider name (provider:NAME[:params])");
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Transports

namespace {

namespace proto = ::keyprovider;

// Runs `command` with `input` on stdin; its stdout (wiped memory), or an error naming `who`.
// Kills the child when `timeout` passes. The child's stderr (first bytes) goes into messages.
Result<crypto::SecureBuffer> RunCommand(const KeyProviderCommand& command, ByteSpan input,
                                        std::chrono::milliseconds timeout, const std::string& who) {
  // stdin is a socketpair, written with MSG_NOSIGNAL: a provider that exits before reading its
  // input must not SIGPIPE the daemon.
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_pipe) != 0) {
    return Status::IoError(who + ": socketpair: " + std::strerror(errno));
  }
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    close(in_pipe[0]);
    close(in_pipe[1]);
    return Status::IoError(who + ": pipe: " + std::strerror(errno));
  }
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1]}) close(fd);
    return Status::IoError(who + ": pipe: " + std::strerror(errno));
  }
  // Everything the child needs is built before fork (only async-signal-safe calls after it).
  std::vector<std::string> args;
  args.push_back(command.path);
  args.insert(args.end(), command.args.begin(), command.args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_t pid = fork();
  if (pid < 0) {
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) close(fd);
    return Status::IoError(who + ": fork: " + std::strerror(errno));
  }
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    // Descriptors the daemon opened without O_CLOEXEC (FUSE, sockets) stay out of the provider.
    close_range(3, ~0U, 0);
    execv(argv[0], argv.data());
    static const char kMsg[] = "exec failed\n";
    ssize_t ignored = write(2, kMsg, sizeof(kMsg) - 1);
    (void)ignored;
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);

  WipedString out;
  out.text.reserve(64 * 1024);
  std::string err;
  size_t written = 0;
  int in_fd = in_pipe[1];
  if (input.empty()) {
    close(in_fd);
    in_fd = -1;
  }
  int out_fd = out_pipe[0], err_fd = err_pipe[0];
  const auto deadline = Clock::now() + timeout;
  Status failure = Status::Ok();
  char buf[16384];
  while (out_fd >= 0 || err_fd >= 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      failure = Status::DeadlineExceeded(who + ": no answer within " +
                                         std::to_string(timeout.count()) + " ms (killed)");
      break;
    }
    pollfd fds[3];
    int n = 0;
    if (in_fd >= 0) fds[n++] = {in_fd, POLLOUT, 0};
    if (out_fd >= 0) fds[n++] = {out_fd, POLLIN, 0};
    if (err_fd >= 0) fds[n++] = {err_fd, POLLIN, 0};
    int ready = poll(fds, n, static_cast<int>(left.count()));
    if (ready < 0) {
      if (errno == EINTR) continue;
      failure = Status::IoError(who + ": poll: " + std::strerror(errno));
      break;
    }
    for (int i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == in_fd) {
        ssize_t w = send(in_fd, input.data() + written, input.size() - written, MSG_NOSIGNAL);
        if (w > 0) written += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN && errno != EINTR) written = input.size();  // EPIPE: stop
        if (written == input.size()) {
          close(in_fd);
          in_fd = -1;
        }
      } else {
        ssize_t r = read(fds[i].fd, buf, sizeof(buf));
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (r <= 0) {
          close(fds[i].fd);
          (fds[i].fd == out_fd ? out_fd : err_fd) = -1;
          continue;
        }
        if (fds[i].fd == out_fd) {
          if (out.text.size() + static_cast<size_t>(r) > kMaxProviderOutputBytes) {
            failure = Status::Corruption(who + ": output larger than " +
                                         std::to_string(kMaxProviderOutputBytes) + " bytes");
          } else {
            out.text.append(buf, static_cast<size_t>(r));
          }
        } else if (err.size() < kMaxStderrBytes) {
          err.append(buf, std::min(static_cast<size_t>(r), kMaxStderrBytes - err.size()));
        }
      }
    }
    if (!failure.ok()) break;
  }
  OPENSSL_cleanse(buf, sizeof(buf));
  for (int fd : {in_fd, out_fd, err_fd}) {
    if (fd >= 0) close(fd);
  }
  if (!failure.ok()) kill(pid, SIGKILL);
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (!failure.ok()) return failure;
  while (!err.empty() && (err.back() == '\n' || err.back() == '\r')) err.pop_back();
  const std::string err_note = err.empty() ? "" : ": " + Quoted(err);
  if (WIFSIGNALED(wstatus)) {
    return Status::Unavailable(who + ": killed by signal " + std::to_string(WTERMSIG(wstatus)) + err_note);
  }
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    return Status::Unavailable(who + ": exited with status " + std::to_string(WEXITSTATUS(wstatus)) +
                               err_note);
  }
  return crypto::SecureBuffer(AsBytes(out.text));
}

class ProviderBase : public KeyProvider {
 public:
  ProviderBase(KeyProviderSpec spec, std::string transport, KeyProviderOptions options)
      : spec_(std::move(spec)),
        who_("key provider " + Quoted(spec_.name) + " (" + transport + ")"),
        options_(options) {}
  const std::string& name() const override { return spec_.name; }

  Result<std::vector<uint8_t>> WrapKey(ByteSpan optsdata) const override {
    crypto::SecureBuffer request = keyprovider_protocol::WrapRequest(spec_, optsdata);
    LC_ASSIGN_OR_RETURN(crypto::SecureBuffer answer, Call(request.span(), /*wrap=*/true));
    return keyprovider_protocol::ParseWrapResponse(AsStringView(answer.span()), who_);
  }
  Result<crypto::SecureBuffer> UnwrapKey(ByteSpan annotation_packet) const override {
    crypto::SecureBuffer request = keyprovider_protocol::UnwrapRequest(spec_, annotation_packet);
    LC_ASSIGN_OR_RETURN(crypto::SecureBuffer answer, Call(request.span(), /*wrap=*/false));
    return keyprovider_protocol::ParseUnwrapResponse(AsStringView(answer.span()), who_);
  }

 protected:
  virtual Result<crypto::SecureBuffer> Call(ByteSpan request, bool wrap) const = 0;
  KeyProviderSpec spec_;
  std::string who_;
  KeyProviderOptions options_;
};

class CommandProvider final : public ProviderBase {
 public:
  CommandProvider(KeyProviderSpec spec, KeyProviderCommand command, KeyProviderOptions options)
      : ProviderBase(std::move(spec), "cmd " + command.path, options), command_(std::move(command)) {}

 private:
  Result<crypto::SecureBuffer> Call(ByteSpan request, bool) const override {
    return RunCommand(command_, request, options_.timeout, who_);
  }
  KeyProviderCommand command_;
};

class GrpcProvider final : public ProviderBase {
 public:
  GrpcProvider(KeyProviderSpec spec, const std::string& target, KeyProviderOptions options)
      : ProviderBase(std::move(spec), "grpc " + target, options),
        stub_(proto::KeyProviderService::NewStub(
            grpc::CreateChannel(target, grpc::InsecureChannelCredentials()))) {}

 private:
  Result<crypto::SecureBuffer> Call(ByteSpan request, bool wrap) const override {
    proto::keyProviderKeyWrapProtocolInput in;
    in.set_keyproviderkeywrapprotocolinput(std::string(AsStringView(request)));
    proto::keyProviderKeyWrapProtocolOutput out;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + options_.timeout);
    grpc::Status status = wrap ? stub_->WrapKey(&context, in, &out) : stub_->UnWrapKey(&context, in, &out);
    WipedString wipe_in{std::move(*in.mutable_keyproviderkeywrapprotocolinput())};
    WipedString answer{std::move(*out.mutable_keyproviderkeywrapprotocoloutput())};
    if (!status.ok()) {
      const std::string msg = who_ + ": " + (wrap ? "WrapKey" : "UnWrapKey") + " failed: " +
                              Quoted(status.error_message());
      if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
        return Status::DeadlineExceeded(msg + " (deadline " + std::to_string(options_.timeout.count()) +
                                        " ms)");
      }
      return Status::Unavailable(msg);
    }
    return crypto::SecureBuffer(AsBytes(answer.text));
  }
  std::unique_ptr<proto::KeyProviderService::Stub> stub_;
};

std::shared_ptr<const KeyProvider> Make(const KeyProviderAttrs& attrs, KeyProviderSpec spec,
                                        const KeyProviderOptions& options) {
  if (attrs.command) return std::make_shared<CommandProvider>(std::move(spec), *attrs.command, options);
  return std::make_shared<GrpcProvider>(std::move(spec), attrs.grpc, options);
}

}  // namespace

Result<std::shared_ptr<const KeyProvider>> MakeKeyProvider(const KeyProviderConfig& config,
                                                           const KeyProviderSpec& spec,
                                                           const KeyProviderOptions& options) {
  auto it = config.providers.find(spec.name);
  if (it == config.providers.end()) {
    std::string names;
    for (const auto& [name, attrs] : config.providers) names += (names.empty() ? "" : ", ") + name;
    return Status::NotFound("key provider " + Quoted(spec.name) + " is not configured in " +
                            (config.source.empty() ? std::string("(no key provider config)")
                                                   : config.source) +
                            " (it has: [" + names + "])");
  }
  return Make(it->second, spec, options);
}

std::vector<std::shared_ptr<const KeyProvider>> MakeAllKeyProviders(const KeyProviderConfig& config,
                                                                    const KeyProviderOptions& options) {
  std::vector<std::shared_ptr<const KeyProvider>> out;
  for (const auto& [name, attrs] : config.providers) {
    KeyProviderSpec spec;
    spec.name = name;
    out.push_back(Make(attrs, std::move(spec), options));
  }
  return out;
}

}  // namespace lazycrypt::keywrap
