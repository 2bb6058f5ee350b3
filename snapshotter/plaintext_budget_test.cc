// The node-wide plaintext budget in the snapshotter: `[cache] plaintext_budget` parsed, its
// gauges and counters in /metrics and /status, forwarded by the CountMounts wrapper.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "snapshotter/config.h"
#include "snapshotter/metrics.h"

namespace lazycrypt::snapshotter {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(PlaintextBudget, ConfigDefaultIsOneBudgetOf256MiB) {
  auto c = ParseConfig("", "t.toml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->cache.plaintext_budget_bytes, uint64_t{256} << 20);
}

TEST(PlaintextBudget, ConfigParsesTheBudgetAndZero) {
  auto c = ParseConfig("[cache]\nplaintext_budget = 67108864\nmax_bytes = 1000\n", "t.toml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->cache.plaintext_budget_bytes, uint64_t{64} << 20);
  EXPECT_EQ(c->cache.max_bytes, 1000u);
  auto zero = ParseConfig("[cache]\nplaintext_budget = 0\n", "t.toml");
  ASSERT_TRUE(zero.ok()) << zero.status().ToString();
  EXPECT_EQ(zero->cache.plaintext_budget_bytes, 0u);
}

TEST(PlaintextBudget, ConfigRejectsBadValuesByName) {
  for (const char* bad : {"[cache]\nplaintext_budget = -1\n", "[cache]\nplaintext_budget = \"1G\"\n",
                          "[cache]\nplaintext_budget = 1.5\n"}) {
    auto c = ParseConfig(bad, "t.toml");
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_THAT(c.status().message(), HasSubstr("cache.plaintext_budget")) << bad;
  }
  auto typo = ParseConfig("[cache]\nplaintext_budget_bytes = 1\n", "t.toml");
  ASSERT_FALSE(typo.ok());
  EXPECT_THAT(typo.status().message(), HasSubstr("plaintext_budget_bytes"));
}

MetricsSnapshot WithBudget() {
  MetricsSnapshot s;
  s.plaintext_cache.present = true;
  s.plaintext_cache.budget_bytes = 268435456;
  s.plaintext_cache.bytes_held = 1048576;
  s.plaintext_cache.chunks_held = 1;
  s.plaintext_cache.hits = 11;
  s.plaintext_cache.misses = 12;
  s.plaintext_cache.evictions = 13;
  s.plaintext_cache.evicted_bytes = 14;
  s.plaintext_cache.not_kept = 15;
  s.plaintext_cache.trims = 16;
  return s;
}

TEST(PlaintextBudget, MetricsShowTheNodeWideGaugesAndCounters) {
  const std::string text = RenderPrometheus(WithBudget());
  EXPECT_THAT(text, HasSubstr("# TYPE lazycrypt_plaintext_budget_bytes gauge\n"
                              "lazycrypt_plaintext_budget_bytes 268435456\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE lazycrypt_plaintext_bytes gauge\nlazycrypt_plaintext_bytes 1048576\n"));
  EXPECT_THAT(text, HasSubstr("\nlazycrypt_plaintext_chunks 1\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE lazycrypt_plaintext_hits_total counter\n"
                              "lazycrypt_plaintext_hits_total 11\n"));
  EXPECT_THAT(text, HasSubstr("\nlazycrypt_plaintext_misses_total 12\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE lazycrypt_plaintext_evictions_total counter\n"
                              "lazycrypt_plaintext_evictions_total 13\n"));
  EXPECT_THAT(text, HasSubstr("\nlazycrypt_plaintext_evicted_bytes_total 14\n"));
  EXPECT_THAT(text, HasSubstr("\nlazycrypt_plaintext_not_kept_total 15\n"));
  EXPECT_THAT(text, HasSubstr("\nlazycrypt_plaintext_trims_total 16\n"));
  // Absent when the handler has no budget (e.g. a fake remote).
  EXPECT_THAT(RenderPrometheus(MetricsSnapshot{}), Not(HasSubstr("lazycrypt_plaintext_")));
}

TEST(PlaintextBudget, StatusJsonCarriesTheBudget) {
  auto doc = nlohmann::json::parse(RenderStatusJson(WithBudget()));
  ASSERT_TRUE(doc.contains("plaintext_cache"));
  EXPECT_EQ(doc["plaintext_cache"]["budget_bytes"], 268435456u);
  EXPECT_EQ(doc["plaintext_cache"]["bytes_held"], 1048576u);
  EXPECT_EQ(doc["plaintext_cache"]["evictions"], 13u);
  EXPECT_FALSE(nlohmann::json::parse(RenderStatusJson(MetricsSnapshot{})).contains("plaintext_cache"));
}

class BudgetHandler final : public RemoteLayerHandler {
 public:
  Result<bool> TryMount(const PrepareRequest&) override { return false; }
  Status Unmount(int64_t, const std::filesystem::path&) override { return Status::Ok(); }
  Status Restore(const RestoreRequest&) override { return Status::Ok(); }
  Status Check(const CheckRequest&) override { return Status::Ok(); }
  PlaintextCacheInfo PlaintextCache() const override { return WithBudget().plaintext_cache; }
};

TEST(PlaintextBudget, CountMountsForwardsTheBudget) {
  MountCounters counters;
  auto handler = CountMounts(std::make_shared<BudgetHandler>(), &counters);
  const PlaintextCacheInfo p = handler->PlaintextCache();
  EXPECT_TRUE(p.present);
  EXPECT_EQ(p.budget_bytes, 268435456u);
  EXPECT_EQ(p.trims, 16u);
}

}  // namespace
}  // namespace lazycrypt::snapshotter
