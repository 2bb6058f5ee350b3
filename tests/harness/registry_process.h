// A real `docker-registry` (distribution 2.8) for integration tests: filesystem storage in its own
// mkdtemp directory, plain HTTP on 127.0.0.1:<free port>, optional htpasswd basic auth (the
// registry accepts basic auth over plain HTTP; no TLS needed). Stopped by PID on destruction.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "common/status.h"
#include "tests/harness/subprocess.h"

namespace lazycrypt::harness {

struct RegistryOptions {
  // When both are non-empty, the registry requires basic auth with this one user
  // (htpasswd file generated with `htpasswd -Bbn`).
  std::string username;
  std::string password;
  // Allow DELETE of manifests and blobs.
  bool enable_delete = true;
  // Serve HTTPS with a fresh self-signed certificate for 127.0.0.1 (see ca_file()).
  bool tls = false;
};

// Not thread-safe (start/stop from one thread); the registry itself serves any number of clients.
class RegistryProcess {
 public:
  // Starts the registry and waits (up to 20 s) until GET /v2/ answers 200 or 401 (with TLS: until
  // it answers a plain-HTTP probe with Go's 400).
  static Result<std::unique_ptr<RegistryProcess>> Start(const RegistryOptions& options = {});
  ~RegistryProcess();
  RegistryProcess(const RegistryProcess&) = delete;
  RegistryProcess& operator=(const RegistryProcess&) = delete;

  // "127.0.0.1:PORT"
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  // "http://127.0.0.1:PORT" (https:// with options.tls)
  std::string url() const { return (tls_ ? "https://" : "http://") + host(); }
  // With options.tls: the self-signed certificate (PEM) clients can trust. Empty otherwise.
  std::filesystem::path ca_file() const { return tls_ ? dir_ / "cert.pem" : std::filesystem::path(); }
  // The registry's storage root (filesystem driver) — tests may inspect or corrupt blobs here.
  std::filesystem::path storage_dir() const { return dir_ / "storage"; }
  // The registry's log (stdout and stderr); useful in failure messages.
  std::string Log() const;
  // Stops the registry (SIGTERM, then SIGKILL). Idempotent.
  void Stop();

 private:
  RegistryProcess(TempDir dir, int port, bool tls, std::unique_ptr<Subprocess> proc)
      : dir_(std::move(dir)), port_(port), tls_(tls), proc_(std::move(proc)) {}

  TempDir dir_;
  int port_;
  bool tls_;
  std::unique_ptr<Subprocess> proc_;
};

// Issues a plain HTTP/1.1 GET to 127.0.0.1:port/path (optional basic-auth user:password) and
// returns the status code. For readiness checks and simple assertions in tests.
Result<int> HttpGetStatus(int port, const std::string& path, const std::string& userpass = "");

}  // namespace lazycrypt::harness
