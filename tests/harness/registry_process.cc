#include "tests/harness/registry_process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include <openssl/evp.h>

#include "common/file_io.h"

namespace lazycrypt::harness {
namespace {

using Clock = std::chrono::steady_clock;

std::string Base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(n);
  return out;
}

std::string Config(const std::filesystem::path& dir, int port, const RegistryOptions& o,
                   bool auth) {
  std::string cfg;
  cfg += "version: 0.1\n";
  cfg += "log:\n  level: info\n  accesslog:\n    disabled: false\n";
  cfg += "storage:\n  filesystem:\n    rootdirectory: " + (dir / "storage").string() + "\n";
  if (o.enable_delete) cfg += "  delete:\n    enabled: true\n";
  cfg += "http:\n  addr: 127.0.0.1:" + std::to_string(port) + "\n";
  if (o.tls) {
    cfg += "  tls:\n    certificate: " + (dir / "cert.pem").string() + "\n    key: " +
           (dir / "key.pem").string() + "\n";
  }
  if (auth) {
    cfg += "auth:\n  htpasswd:\n    realm: lazycrypt-test\n    path: " +
           (dir / "htpasswd").string() + "\n";
  }
  return cfg;
}

}  // namespace

Result<int> HttpGetStatus(int port, const std::string& path, const std::string& userpass) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket");
  timeval tv{2, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus("connect 127.0.0.1:" + std::to_string(port));
  }
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                    "\r\nConnection: close\r\n";
  if (!userpass.empty()) req += "Authorization: Basic " + Base64(userpass) + "\r\n";
  req += "\r\n";
  if (send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    return ErrnoStatus("send to 127.0.0.1:" + std::to_string(port));
  }
  std::string resp;
  char buf[512];
  while (resp.find("\r\n") == std::string::npos) {
    ssize_t n = recv(fd.get(), buf, sizeof(buf), 0);
    if (n <= 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  // "HTTP/1.1 200 OK"
  if (resp.size() < 12 || resp.compare(0, 5, "HTTP/") != 0) {
    return Status::Corruption("127.0.0.1:" + std::to_string(port) + path +
                              ": no HTTP status line in the answer");
  }
  auto sp = resp.find(' ');
  return std::atoi(resp.c_str() + sp + 1);
}

Result<std::unique_ptr<RegistryProcess>> RegistryProcess::Start(const RegistryOptions& options) {
  bool auth = !options.username.empty() && !options.password.empty();
  Status last;
  // The free port may be taken between PickFreePort and the registry's bind: retry a few times.
  for (int attempt = 0; attempt < 3; ++attempt) {
    LC_ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("lc-registry"));
    if (auth) {
      LC_ASSIGN_OR_RETURN(auto hp, RunCommand({"htpasswd", "-Bbn", options.username,
                                               options.password},
                                              std::chrono::seconds(30)));
      if (hp.exit_code != 0) {
        return Status::Internal("htpasswd -Bbn failed: " + hp.stderr_text);
      }
      LC_RETURN_IF_ERROR(WriteFile(dir / "htpasswd", hp.stdout_text));
    }
    if (options.tls) {
      LC_ASSIGN_OR_RETURN(
          auto ossl,
          RunCommand({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                      "subjectAltName=IP:127.0.0.1", "-keyout", (dir / "key.pem").string(), "-out",
                      (dir / "cert.pem").string()},
                     std::chrono::seconds(30)));
      if (ossl.exit_code != 0) return Status::Internal("openssl req failed: " + ossl.stderr_text);
    }
    LC_ASSIGN_OR_RETURN(int port, PickFreePort());
    LC_RETURN_IF_ERROR(WriteFile(dir / "config.yml", Config(dir.path(), port, options, auth)));
    auto log = dir / "registry.log";
    LC_ASSIGN_OR_RETURN(auto proc,
                        Subprocess::Start({"docker-registry", "serve", (dir / "config.yml").string()},
                                          {}, log, log));
    auto deadline = Clock::now() + std::chrono::seconds(20);
    bool ready = false;
    while (Clock::now() < deadline && proc->Running()) {
      auto code = HttpGetStatus(port, "/v2/");
      if (code.ok() && (options.tls ? *code == 400 : (*code == 200 || *code == 401))) {
        ready = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    if (ready) {
      return std::unique_ptr<RegistryProcess>(
          new RegistryProcess(std::move(dir), port, options.tls, std::move(proc)));
    }
    proc->Stop(std::chrono::milliseconds(500));
    last = Status::Unavailable("docker-registry on 127.0.0.1:" + std::to_string(port) +
                               " did not answer /v2/; log: " + ReadFileOrEmpty(log));
  }
  return last;
}

RegistryProcess::~RegistryProcess() { Stop(); }

void RegistryProcess::Stop() {
  if (proc_) proc_->Stop(std::chrono::seconds(5));
}

std::string RegistryProcess::Log() const { return ReadFileOrEmpty(dir_ / "registry.log"); }

}  // namespace lazycrypt::harness
