// The containerd releases the integration tests run against: the system's (Debian 12's 1.6) and
// peers unpacked from Debian packages into the build tree's cache (Debian 13's 1.7, unstable's
// 2.1; nothing installed system-wide), for value-parameterized tests. Header-only; tests only.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "common/status.h"
#include "tests/harness/subprocess.h"
#include "tests/test_util.h"

namespace lazycrypt::testing {

// Unpacks a Debian package of `suite` (trixie, sid) into `dir` once (fetch-debian-package.sh;
// nothing installed system-wide) and returns the absolute path of `binary` in it.
inline Result<std::string> FetchDebianBinary(const std::string& suite,
                                             const std::filesystem::path& dir,
                                             const std::string& package,
                                             const std::string& binary) {
  const std::filesystem::path script = SourceDir() / "tests" / "data" / "fetch-debian-package.sh";
  auto r = harness::RunCommand({script.string(), suite, dir.string(), package, binary},
                               std::chrono::seconds(300));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return Status::Unavailable("fetching " + package + " (" + suite + ") failed: " +
                               r->stderr_text + r->stdout_text);
  }
  return r->stdout_text.substr(0, r->stdout_text.find('\n'));
}

#ifdef LAZYCRYPT_TEST_CACHE
// containerd peers fetched into the build tree's cache: Debian 13's 1.7 and unstable's 2.1 (their
// ctr and containerd-shim-runc-v2 beside containerd; they run on Debian 12's libc). The system's
// containerd (Debian 12's 1.6) is "containerd".
inline Result<std::string> Containerd17Binary() {
  return FetchDebianBinary("trixie", LAZYCRYPT_TEST_CACHE "/containerd17", "containerd",
                           "usr/bin/containerd");
}
inline Result<std::string> Containerd21Binary() {
  return FetchDebianBinary("sid", LAZYCRYPT_TEST_CACHE "/containerd21", "containerd",
                           "usr/bin/containerd");
}

// A containerd the integration tests run against, for value-parameterized tests.
struct ContainerdPeer {
  std::string name;            // "containerd_1_6": a test-name suffix
  std::string version_prefix;  // what its --version says first: "1.6."
  Result<std::string> (*binary)();
};
inline Result<std::string> SystemContainerdBinary() { return std::string("containerd"); }
inline std::vector<ContainerdPeer> AllContainerdPeers() {
  return {{"containerd_1_6", "1.6.", &SystemContainerdBinary},
          {"containerd_1_7", "1.7.", &Containerd17Binary},
          {"containerd_2_1", "2.1.", &Containerd21Binary}};
}
// gtest prints the parameter by its name rather than its bytes.
inline void PrintTo(const ContainerdPeer& peer, std::ostream* os) { *os << peer.name; }
// For INSTANTIATE_TEST_SUITE_P's name generator.
inline std::string ContainerdPeerName(const ::testing::TestParamInfo<ContainerdPeer>& info) {
  return info.param.name;
}
#endif

}  // namespace lazycrypt::testing
