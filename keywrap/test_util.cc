#include "keywrap/test_util.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

extern char** environ;

namespace lazycrypt::keywrap::testing {

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "keywrap-test-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp failed";
    return;
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

int Run(const std::vector<std::string>& argv, std::string* output) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  std::string collected;
  if (rc == 0) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(pipe_fds[0], buf, sizeof buf)) != 0) {
      if (n < 0) {
        if (errno == EINTR) continue;
        break;
      }
      collected.append(buf, static_cast<size_t>(n));
    }
  } else {
    collected = "posix_spawnp(" + argv[0] + ") failed: " + std::to_string(rc);
  }
  ::close(pipe_fds[0]);
  if (output != nullptr) *output = collected;
  if (rc != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool RunOk(const std::vector<std::string>& argv, std::string* output) {
  std::string out;
  int rc = Run(argv, &out);
  if (output != nullptr) *output = out;
  if (rc != 0) {
    std::string command;
    for (const auto& a : argv) command += a + " ";
    ADD_FAILURE() << command << "exited with " << rc << ":\n" << out;
    return false;
  }
  return true;
}

void WriteFile(const std::filesystem::path& path, std::string_view contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  if (!out) ADD_FAILURE() << "writing " << path;
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "reading " << path;
    return {};
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::filesystem::path SourceDir() {
  if (const char* root = std::getenv("LAZYCRYPT_SOURCE_DIR"); root != nullptr && *root != 0) {
    return std::filesystem::path(root) / "keywrap";
  }
  return KEYWRAP_SOURCE_DIR;
}

namespace {

std::mutex key_mutex;

TempDir& KeyTempDir() {
  static TempDir* dir = new TempDir();  // removed by the atexit handler below
  static bool registered = [] {
    std::atexit([] { delete dir; });
    return true;
  }();
  (void)registered;
  return *dir;
}

KeyPairFiles Generate(const std::string& label, const std::vector<std::string>& genkey_args) {
  KeyPairFiles files{KeyTempDir() / (label + ".pem"), KeyTempDir() / (label + ".pub.pem")};
  std::vector<std::string> gen = genkey_args;
  gen.push_back("-out");
  gen.push_back(files.private_pem.string());
  RunOk(gen);
  RunOk({"openssl", "pkey", "-in", files.private_pem.string(), "-pubout", "-out",
         files.public_pem.string()});
  return files;
}

const KeyPairFiles& Cached(const std::string& label, const std::vector<std::string>& args) {
  std::lock_guard<std::mutex> lock(key_mutex);
  static std::map<std::string, std::unique_ptr<KeyPairFiles>> cache;
  auto& slot = cache[label];
  if (!slot) slot = std::make_unique<KeyPairFiles>(Generate(label, args));
  return *slot;
}

std::vector<std::string> RsaArgs(int bits) {
  return {"openssl", "genpkey",  "-algorithm",
          "RSA",     "-pkeyopt", "rsa_keygen_bits:" + std::to_string(bits)};
}

std::vector<std::string> EcArgs(std::string_view curve) {
  std::string name = curve == "P-256" ? "prime256v1" : curve == "P-384" ? "secp384r1" : "secp521r1";
  return {"openssl", "ecparam", "-name", name, "-genkey", "-noout"};
}

}  // namespace

const KeyPairFiles& RsaKeyFiles(int bits) {
  return Cached("rsa" + std::to_string(bits), RsaArgs(bits));
}

const KeyPairFiles& EcKeyFiles(std::string_view curve) {
  return Cached("ec-" + std::string(curve), EcArgs(curve));
}

const KeyPairFiles& OtherRsaKeyFiles() { return Cached("rsa2048-other", RsaArgs(2048)); }
const KeyPairFiles& OtherEcKeyFiles() { return Cached("ec-P-256-other", EcArgs("P-256")); }

const std::filesystem::path& KeyDir() { return KeyTempDir().path(); }

}  // namespace lazycrypt::keywrap::testing
