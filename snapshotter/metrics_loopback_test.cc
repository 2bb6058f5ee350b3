// /metrics and /status stay on loopback unless an operator writes a host out: an address without
// one (":PORT", "PORT") in the config binds 127.0.0.1, seen in the kernel's socket table.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "snapshotter/config.h"
#include "snapshotter/metrics.h"

namespace lazycrypt::snapshotter {
namespace {

// The local addresses (hex, as /proc/net/tcp{,6} print them) of sockets listening on `port`.
std::vector<std::string> ListeningAddresses(uint16_t port) {
  std::vector<std::string> found;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state;
      fields >> slot >> local >> remote >> state;
      const size_t colon = local.rfind(':');
      if (state != "0A" || colon == std::string::npos) continue;  // 0A = LISTEN
      if (std::stoul(local.substr(colon + 1), nullptr, 16) == port) {
        found.push_back(local.substr(0, colon));
      }
    }
  }
  return found;
}

TEST(MetricsLoopback, AnAddressWithoutHostListensOnLoopbackOnly) {
  for (const char* address : {":0", "0"}) {
    auto server = MetricsServer::Start(address, [] { return MetricsSnapshot{}; },
                                       [](LogLevel, std::string_view) {});
    ASSERT_TRUE(server.ok()) << address << ": " << server.status().ToString();
    const auto listening = ListeningAddresses((*server)->port());
    ASSERT_EQ(listening.size(), 1u) << address;
    EXPECT_EQ(listening[0], "0100007F") << address << ": not 127.0.0.1";
  }
}

TEST(MetricsLoopback, AnExplicitHostIsStillHonoured) {
  auto server = MetricsServer::Start("0.0.0.0:0", [] { return MetricsSnapshot{}; },
                                     [](LogLevel, std::string_view) {});
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const auto listening = ListeningAddresses((*server)->port());
  ASSERT_EQ(listening.size(), 1u);
  EXPECT_EQ(listening[0], "00000000");
}

TEST(MetricsLoopback, ConfigTakesAPortWithoutHost) {
  for (const char* address : {":9187", "9187", "0.0.0.0:9187", "[::1]:9187"}) {
    auto c = ParseConfig(std::string("[metrics]\naddress = \"") + address + "\"\n");
    ASSERT_TRUE(c.ok()) << address << ": " << c.status().ToString();
    EXPECT_EQ(c->metrics.address, address);
  }
  EXPECT_EQ(ParseConfig("").value().metrics.address, "");  // off unless configured
  EXPECT_FALSE(ParseConfig("[metrics]\naddress = \"localhost\"\n").ok());
  EXPECT_FALSE(ParseConfig("[metrics]\naddress = \":0\"\n").ok());  // a config needs a real port
}

}  // namespace
}  // namespace lazycrypt::snapshotter
