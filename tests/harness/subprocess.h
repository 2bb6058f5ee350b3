// Test harness: child processes, temp dirs and TCP helpers for integration tests that run real
// daemons (docker-registry, containerd, our own binaries). Tests only; never linked into products.
//
// Every daemon runs in its own process group and is stopped by PID / process group, never by
// name, so concurrent test runs on one machine do not interfere.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace lazycrypt::harness {

// A directory made with mkdtemp under $TMPDIR (or /tmp), removed recursively on destruction.
// Move-only.
class TempDir {
 public:
  // prefix: a short name that shows up in the directory name ("registry", "containerd").
  static Result<TempDir> Create(std::string_view prefix = "lc");
  TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  const std::filesystem::path& path() const { return path_; }
  // path() / name
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

 private:
  explicit TempDir(std::filesystem::path path) : path_(std::move(path)) {}
  std::filesystem::path path_;
};

// A running child process in its own process group. The destructor stops it (see Stop).
// Not thread-safe.
class Subprocess {
 public:
  // Starts argv[0] (searched in PATH) with the current environment plus `env` ("KEY=VALUE"
  // entries, overriding variables of the same name). stdout/stderr go to the given files
  // (created/truncated; empty path = /dev/null); stdin is /dev/null.
  static Result<std::unique_ptr<Subprocess>> Start(const std::vector<std::string>& argv,
                                                  const std::vector<std::string>& env = {},
                                                  const std::filesystem::path& stdout_path = {},
                                                  const std::filesystem::path& stderr_path = {});
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  // True while the child has not exited (reaps it if it has).
  bool Running();
  // Sends SIGTERM to the process group, waits up to `grace`, then SIGKILLs the group and reaps
  // the child. Idempotent. Returns the exit status as waitpid encodes it (or -1 if unknown).
  int Stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  // Waits for the child to exit on its own. DeadlineExceeded when it is still running after
  // `timeout` (the child keeps running). Returns the exit code (128+signal if killed).
  Result<int> Wait(std::chrono::milliseconds timeout);
  // Sends `sig` to the child's process group.
  Status Signal(int sig);

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  // Reaps without blocking; true if the child has exited.
  bool TryReap();

  pid_t pid_;
  std::optional<int> wait_status_;
};

struct CommandResult {
  int exit_code = -1;  // 128+signal if the command was killed by a signal
  std::string stdout_text;
  std::string stderr_text;
};

// Runs argv to completion. DeadlineExceeded (naming the command) if it runs longer than
// `timeout`; the command's process group is then killed.
Result<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(60),
                                 const std::vector<std::string>& env = {});

// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it back, close).
Result<int> PickFreePort();

// Waits until a TCP connect to 127.0.0.1:port succeeds. DeadlineExceeded after `timeout`.
Status WaitForTcp(int port, std::chrono::milliseconds timeout);

// Reads a whole file (for logs in failure messages). Empty string if unreadable.
std::string ReadFileOrEmpty(const std::filesystem::path& path);

// Writes a whole file (mode 0644), replacing it.
Status WriteFile(const std::filesystem::path& path, std::string_view content);

}  // namespace lazycrypt::harness
