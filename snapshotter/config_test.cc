#include "snapshotter/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "snapshotter/test_util.h"

namespace lazycrypt::snapshotter {
namespace {

using ::testing::HasSubstr;

TEST(Config, DefaultsWhenEmpty) {
  auto c = ParseConfig("", "t.toml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->address, "/run/lazycrypt/snapshotter.sock");
  EXPECT_EQ(c->root, "/var/lib/lazycrypt");
  EXPECT_EQ(c->log_level, LogLevel::kInfo);
  EXPECT_EQ(c->socket_mode, 0600u);
  ASSERT_EQ(c->keys.dirs.size(), 1u);
  EXPECT_EQ(c->keys.dirs[0], "/etc/containerd/ocicrypt/keys");
  EXPECT_EQ(c->cache.max_bytes, uint64_t{10} << 30);
  EXPECT_TRUE(c->fetch.prefetch);
  EXPECT_EQ(c->fetch.background_rate_bytes_per_sec, 0u);
  EXPECT_EQ(c->fetch.verify_delay_ms, 10000u);
  EXPECT_EQ(c->fetch.verify_rate_bytes_per_sec, 0u);
  EXPECT_EQ(c->fetch.verify_deadline_s, 1800u);
  EXPECT_EQ(c->registry.hosts_dir, "/etc/containerd/certs.d");
  EXPECT_EQ(c->metrics.address, "");
}

TEST(Config, ParsesEverySetting) {
  auto c = ParseConfig(R"(
address = "/run/x/s.sock"
root = "/srv/lc"
log_level = "debug"
socket_mode = "0660"
[keys]
dirs = ["/k1", "/k2"]
[cache]
max_bytes = 1048576
[fetch]
prefetch = false
whole_layer_bytes = 0
background_rate = 5000000
verify_delay_ms = 0
verify_rate = 20000000
verify_deadline_s = 60
[registry]
hosts_dir = "/etc/lc/hosts"
[metrics]
address = "127.0.0.1:9100"
)", "t.toml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->address, "/run/x/s.sock");
  EXPECT_EQ(c->root, "/srv/lc");
  EXPECT_EQ(c->log_level, LogLevel::kDebug);
  EXPECT_EQ(c->socket_mode, 0660u);
  ASSERT_EQ(c->keys.dirs.size(), 2u);
  EXPECT_EQ(c->keys.dirs[1], "/k2");
  EXPECT_EQ(c->cache.max_bytes, 1048576u);
  EXPECT_FALSE(c->fetch.prefetch);
  EXPECT_EQ(c->fetch.whole_layer_bytes, 0u);
  EXPECT_EQ(c->fetch.background_rate_bytes_per_sec, 5000000u);
  EXPECT_EQ(c->fetch.verify_delay_ms, 0u);
  EXPECT_EQ(c->fetch.verify_rate_bytes_per_sec, 20000000u);
  EXPECT_EQ(c->fetch.verify_deadline_s, 60u);
  EXPECT_EQ(c->registry.hosts_dir, "/etc/lc/hosts");
  EXPECT_EQ(c->metrics.address, "127.0.0.1:9100");
}

void ExpectError(const std::string& toml, const std::string& needle1, const std::string& needle2 = "") {
  auto c = ParseConfig(toml, "t.toml");
  ASSERT_FALSE(c.ok()) << toml;
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << toml;
  EXPECT_THAT(c.status().message(), HasSubstr(needle1)) << toml;
  EXPECT_THAT(c.status().message(), HasSubstr(needle2)) << toml;
  EXPECT_THAT(c.status().message(), HasSubstr("t.toml")) << toml;
}

TEST(Config, UnknownKeysAreNamed) {
  ExpectError("adress = \"/x\"", "unknown key \"adress\"");
  ExpectError("[cache]\nmaxbytes = 1", "unknown key \"cache.maxbytes\"");
  ExpectError("[fetch]\nrate = 1", "unknown key \"fetch.rate\"");
  ExpectError("[nope]\n", "unknown key \"nope\"");
}

TEST(Config, BadValuesNameKeyAndValue) {
  ExpectError("log_level = \"loud\"", "log_level", "loud");
  ExpectError("address = \"relative.sock\"", "address", "relative.sock");
  ExpectError("root = 5", "root", "5");
  ExpectError("socket_mode = \"0666\"", "socket_mode", "0666");
  ExpectError("socket_mode = \"rw\"", "socket_mode", "rw");
  ExpectError("[keys]\ndirs = [\"/ok\", \"rel\"]", "keys.dirs[1]", "rel");
  ExpectError("[keys]\ndirs = \"/k\"", "keys.dirs", "/k");
  ExpectError("[cache]\nmax_bytes = -1", "cache.max_bytes", "-1");
  ExpectError("[cache]\nmax_bytes = 0", "cache.max_bytes", "0");
  ExpectError("[cache]\nmax_bytes = \"1G\"", "cache.max_bytes", "1G");
  ExpectError("[fetch]\nprefetch = \"yes\"", "fetch.prefetch", "yes");
  ExpectError("[fetch]\nwhole_layer_bytes = 1073741825", "fetch.whole_layer_bytes",
              "1073741825");
  ExpectError("[fetch]\nbackground_rate = 1.5", "fetch.background_rate", "1.5");
  ExpectError("[fetch]\nverify_delay_ms = 3600001", "fetch.verify_delay_ms", "3600001");
  ExpectError("[fetch]\nverify_delay_ms = -1", "fetch.verify_delay_ms", "-1");
  ExpectError("[fetch]\nverify = false", "fetch.verify", "");
  ExpectError("[metrics]\naddress = \"localhost\"", "metrics.address", "localhost");
  ExpectError("[metrics]\naddress = \"h:99999\"", "metrics.address", "h:99999");
  ExpectError("cache = 3", "cache", "3");
}

TEST(Config, KeyProviderConfigAndKeyPasswords) {
  auto c = ParseConfig(R"([keys]
dirs = ["/k"]
provider_config = "/etc/lazycrypt/ocicrypt_keyprovider.conf"
[keys.passwords]
"/k/./node.pem" = "/etc/lazycrypt/node.pem.pass"
)",
                       "t.toml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->keys.provider_config, "/etc/lazycrypt/ocicrypt_keyprovider.conf");
  ASSERT_EQ(c->keys.passwords.size(), 1u);
  EXPECT_EQ(c->keys.passwords.at("/k/node.pem"), "/etc/lazycrypt/node.pem.pass");
  EXPECT_TRUE(ParseConfig("", "t.toml")->keys.provider_config.empty());
  ExpectError("[keys]\nprovider_config = \"rel.conf\"", "keys.provider_config", "rel.conf");
  ExpectError("[keys.passwords]\n\"node.pem\" = \"/p\"", "keys.passwords", "node.pem");
  ExpectError("[keys.passwords]\n\"/k/node.pem\" = \"p\"", "keys.passwords", "\"p\"");
  ExpectError("[keys]\npasswords = 1", "keys.passwords", "1");
}

TEST(Config, SyntaxErrorsHaveALine) {
  ExpectError("address = \"/x\"\n[cache\n", "t.toml:2");
}

TEST(Config, LoadConfigReadsFilesAndNamesMissingOnes) {
  testing::ScopedTempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  auto path = tmp.path() / "c.toml";
  std::ofstream(path) << "root = \"/r\"\n";
  auto c = LoadConfig(path);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->root, "/r");
  auto missing = LoadConfig(tmp.path() / "none.toml");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  std::ofstream(path) << "log_level = \"x\"\n";
  auto bad = LoadConfig(path);
  EXPECT_THAT(bad.status().message(), HasSubstr(path.string()));
}

// deploy/containerd/lazycrypt-snapshotter.toml parses and documents the defaults exactly.
TEST(Config, ShippedSampleIsValidAndStatesTheDefaults) {
  const char* env = std::getenv("LAZYCRYPT_SOURCE_DIR");
  std::filesystem::path src = env && *env ? env : LAZYCRYPT_SOURCE_DIR_DEFAULT;
  auto sample = LoadConfig(src / "deploy/containerd/lazycrypt-snapshotter.toml");
  ASSERT_TRUE(sample.ok()) << sample.status().ToString();
  Config defaults;
  EXPECT_EQ(sample->address, defaults.address);
  EXPECT_EQ(sample->root, defaults.root);
  EXPECT_EQ(sample->log_level, defaults.log_level);
  EXPECT_EQ(sample->socket_mode, defaults.socket_mode);
  EXPECT_EQ(sample->keys.dirs, defaults.keys.dirs);
  EXPECT_EQ(sample->cache.max_bytes, defaults.cache.max_bytes);
  EXPECT_EQ(sample->cache.plaintext_budget_bytes, defaults.cache.plaintext_budget_bytes);
  EXPECT_EQ(sample->fetch.open_ahead, defaults.fetch.open_ahead);
  EXPECT_EQ(sample->fetch.whole_layer_bytes, defaults.fetch.whole_layer_bytes);
  EXPECT_EQ(sample->fetch.prefetch, defaults.fetch.prefetch);
  EXPECT_EQ(sample->fetch.background_rate_bytes_per_sec,
            defaults.fetch.background_rate_bytes_per_sec);
  EXPECT_EQ(sample->fetch.verify_delay_ms, defaults.fetch.verify_delay_ms);
  EXPECT_EQ(sample->fetch.verify_rate_bytes_per_sec, defaults.fetch.verify_rate_bytes_per_sec);
  EXPECT_EQ(sample->registry.hosts_dir, defaults.registry.hosts_dir);
  EXPECT_EQ(sample->metrics.address, defaults.metrics.address);
  EXPECT_EQ(sample->ocicrypt.lazy_index, defaults.ocicrypt.lazy_index);
  EXPECT_EQ(sample->ocicrypt.index_max_bytes, defaults.ocicrypt.index_max_bytes);
}

TEST(Config, OcicryptSection) {
  auto defaults = ParseConfig("");
  ASSERT_TRUE(defaults.ok());
  EXPECT_TRUE(defaults->ocicrypt.unpack);
  auto c = ParseConfig("[ocicrypt]\nunpack = false\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->ocicrypt.unpack);
  ExpectError("[ocicrypt]\nunpack = 1", "ocicrypt.unpack");
  ExpectError("[ocicrypt]\neager = true", "unknown key \"ocicrypt.eager\"");
  EXPECT_TRUE(defaults->ocicrypt.lazy_index);
  EXPECT_EQ(defaults->ocicrypt.index_max_bytes, uint64_t{64} << 20);
  auto off = ParseConfig("[ocicrypt]\nlazy_index = false\nindex_max_bytes = 1048576\n");
  ASSERT_TRUE(off.ok()) << off.status().ToString();
  EXPECT_FALSE(off->ocicrypt.lazy_index);
  EXPECT_EQ(off->ocicrypt.index_max_bytes, 1048576u);
  ExpectError("[ocicrypt]\nlazy_index = \"yes\"", "ocicrypt.lazy_index");
  ExpectError("[ocicrypt]\nindex_max_bytes = 0", "ocicrypt.index_max_bytes");
  ExpectError("[ocicrypt]\nindex_max_bytes = 268435457", "ocicrypt.index_max_bytes");
}

TEST(Config, RestartSection) {
  auto defaults = ParseConfig("");
  ASSERT_TRUE(defaults.ok());
  EXPECT_FALSE(defaults->restart.unmount_on_exit);
  EXPECT_TRUE(defaults->restart.holder_socket.empty());
  EXPECT_EQ(defaults->restart.restore_retry_s, 300u);
  auto c = ParseConfig("[restart]\nunmount_on_exit = true\nholder_socket = \"/run/x/h.sock\"\n"
                       "restore_retry_s = 30\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->restart.unmount_on_exit);
  EXPECT_EQ(c->restart.holder_socket, "/run/x/h.sock");
  EXPECT_EQ(c->restart.restore_retry_s, 30u);
  ExpectError("[restart]\nunmount_on_exit = \"yes\"", "restart.unmount_on_exit");
  ExpectError("[restart]\nholder_socket = \"rel.sock\"", "restart.holder_socket", "rel.sock");
  ExpectError("[restart]\nkeep = 1", "unknown key \"restart.keep\"");
}

}  // namespace
}  // namespace lazycrypt::snapshotter
