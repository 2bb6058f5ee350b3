#include "snapshotter/metrics.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <mutex>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tools/status.h"

namespace lazycrypt::snapshotter {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

RemoteLayerInfo SampleLayer() {
  RemoteLayerInfo l;
  l.snapshot_id = 7;
  l.image_ref = "127.0.0.1:5000/app:1";
  l.layer_digest = "sha256:00aa11bb22cc33dd44ee55ff66778899aabbccddeeff00112233445566778899";
  l.mountpoint = "/var/lib/lazycrypt/snapshots/7/fs";
  l.blob_size_bytes = 12'600'000;
  l.bytes_fetched = 3'145'728;
  l.fetch_requests = 4;
  l.chunks_fetched = 3;
  l.chunks_opened = 5;
  l.cache_hits = 9;
  l.cache_misses = 3;
  l.auth_failures = 1;
  l.fetch_errors = 2;
  l.fetch_nanos = 1'500'000'000;
  l.bytes_present = 3'100'000;
  l.chunks_present = 3;
  l.chunk_count = 12;
  return l;
}

TEST(Metrics, EscapesLabelValues) {
  EXPECT_EQ(EscapeLabelValue("plain:1"), "plain:1");
  EXPECT_EQ(EscapeLabelValue("a\\b"), "a\\\\b");
  EXPECT_EQ(EscapeLabelValue("say \"hi\""), "say \\\"hi\\\"");
  EXPECT_EQ(EscapeLabelValue("two\nlines"), "two\\nlines");
  EXPECT_EQ(EscapeLabelValue("\\\"\n"), "\\\\\\\"\\n");
}

TEST(Metrics, RendersKnownLayerStatsAsExactLines) {
  MetricsSnapshot snap;
  snap.layers.push_back(SampleLayer());
  snap.mounts_total = 3;
  snap.mount_failures_total = 1;
  const std::string text = RenderPrometheus(snap);
  const std::string labels =
      "{layer=\"sha256:00aa11bb22cc33dd44ee55ff66778899aabbccddeeff00112233445566778899\","
      "image=\"127.0.0.1:5000/app:1\"}";
  for (const std::string& line : {
           std::string("# TYPE lazycrypt_mounted_layers gauge\nlazycrypt_mounted_layers 1\n"),
           std::string("# TYPE lazycrypt_mounts_total counter\nlazycrypt_mounts_total 3\n"),
           std::string("lazycrypt_mount_failures_total 1\n"),
           "# TYPE lazycrypt_layer_fetched_bytes_total counter\nlazycrypt_layer_fetched_bytes_total" +
               labels + " 3145728\n",
           "\nlazycrypt_layer_fetch_requests_total" + labels + " 4\n",
           "\nlazycrypt_layer_fetch_errors_total" + labels + " 2\n",
           "\nlazycrypt_layer_fetch_seconds_total" + labels + " 1.5\n",
           "\nlazycrypt_layer_chunks_fetched_total" + labels + " 3\n",
           "\nlazycrypt_layer_chunks_opened_total" + labels + " 5\n",
           "\nlazycrypt_layer_cache_hits_total" + labels + " 9\n",
           "\nlazycrypt_layer_cache_misses_total" + labels + " 3\n",
           "\nlazycrypt_layer_auth_failures_total" + labels + " 1\n",
           "# TYPE lazycrypt_layer_present_bytes gauge\nlazycrypt_layer_present_bytes" + labels +
               " 3100000\n",
           "\nlazycrypt_layer_present_chunks" + labels + " 3\n",
           "# TYPE lazycrypt_layer_chunks gauge\nlazycrypt_layer_chunks" + labels + " 12\n",
           "\nlazycrypt_layer_blob_bytes" + labels + " 12600000\n",
       }) {
    EXPECT_THAT(text, HasSubstr(line));
  }
  // Every family has HELP then TYPE; every counter ends in _total; every line ends in \n.
  size_t help = 0, type = 0;
  std::istringstream in(text);
  std::string line, last_help;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) {
      ++help;
      last_help = line.substr(7, line.find(' ', 7) - 7);
    } else if (line.rfind("# TYPE ", 0) == 0) {
      ++type;
      const std::string name = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_EQ(name, last_help) << "TYPE without its HELP: " << line;
      if (line.ends_with(" counter")) {
        EXPECT_TRUE(name.ends_with("_total")) << line;
      } else {
        EXPECT_TRUE(line.ends_with(" gauge")) << line;
        EXPECT_FALSE(name.ends_with("_total")) << line;
      }
    } else {
      EXPECT_EQ(line.rfind("lazycrypt_", 0), 0u) << line;
    }
  }
  // 3 + 2 (quarantined layers, refused uses) + 8 (restarts) daemon-wide, 14 per layer.
  EXPECT_EQ(help, 27u);
  EXPECT_EQ(type, 27u);
  EXPECT_THAT(text, HasSubstr("# TYPE lazycrypt_starts_total counter\n"));
  EXPECT_THAT(text, HasSubstr("\nlazycrypt_restart_fds_resumed 0\n"));
  EXPECT_THAT(text, HasSubstr("\nlazycrypt_restart_layers_failed 0\n"));
  EXPECT_EQ(text.back(), '\n');
}

TEST(Metrics, EscapesHostileImageRefInSampleLines) {
  MetricsSnapshot snap;
  RemoteLayerInfo l = SampleLayer();
  l.image_ref = "evil\"} 99\nlazycrypt_mounted_layers 5\\";
  snap.layers.push_back(l);
  const std::string text = RenderPrometheus(snap);
  EXPECT_THAT(text, HasSubstr("image=\"evil\\\"} 99\\nlazycrypt_mounted_layers 5\\\\\"} 9\n"));
  EXPECT_THAT(text, Not(HasSubstr("\nlazycrypt_mounted_layers 5")));
}

TEST(Metrics, NoLayersStillHasDaemonFamilies) {
  const std::string text = RenderPrometheus(MetricsSnapshot{});
  EXPECT_THAT(text, HasSubstr("\nlazycrypt_mounted_layers 0\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE lazycrypt_layer_cache_hits_total counter\n"));
  EXPECT_THAT(text, Not(HasSubstr("{layer=")));
}

TEST(Metrics, SortsLayersByDigest) {
  MetricsSnapshot snap;
  RemoteLayerInfo b = SampleLayer(), a = SampleLayer();
  b.layer_digest = "sha256:bbbb";
  a.layer_digest = "sha256:aaaa";
  snap.layers = {b, a};
  const std::string text = RenderPrometheus(snap);
  EXPECT_LT(text.find("layer=\"sha256:aaaa\""), text.find("layer=\"sha256:bbbb\""));
}

TEST(Metrics, StatusJsonCarriesPerLayerDataAndPercent) {
  MetricsSnapshot snap;
  snap.layers.push_back(SampleLayer());
  snap.mounts_total = 2;
  const auto doc = nlohmann::json::parse(RenderStatusJson(snap));
  EXPECT_EQ(doc.at("mounted_layers"), 1);
  EXPECT_EQ(doc.at("mounts_total"), 2);
  EXPECT_EQ(doc.at("mount_failures_total"), 0);
  ASSERT_EQ(doc.at("layers").size(), 1u);
  const auto& l = doc.at("layers")[0];
  EXPECT_EQ(l.at("layer"), SampleLayer().layer_digest);
  EXPECT_EQ(l.at("image"), "127.0.0.1:5000/app:1");
  EXPECT_EQ(l.at("snapshot_id"), 7);
  EXPECT_EQ(l.at("mountpoint"), "/var/lib/lazycrypt/snapshots/7/fs");
  EXPECT_DOUBLE_EQ(l.at("present_percent").get<double>(), 25.0);
  EXPECT_EQ(l.at("bytes_fetched"), 3145728);
  EXPECT_EQ(l.at("cache_hits"), 9);
  EXPECT_EQ(l.at("cache_misses"), 3);
  EXPECT_EQ(l.at("auth_failures"), 1);
  EXPECT_DOUBLE_EQ(l.at("fetch_seconds").get<double>(), 1.5);
}

TEST(Metrics, PresentPercentBounds) {
  RemoteLayerInfo l;
  EXPECT_EQ(PresentPercent(l), 0.0);
  l.chunk_count = 4;
  l.chunks_present = 4;
  EXPECT_EQ(PresentPercent(l), 100.0);
  l.chunks_present = 9;  // a racy snapshot never shows more than all of it
  EXPECT_EQ(PresentPercent(l), 100.0);
  l.chunks_present = 1;
  EXPECT_EQ(PresentPercent(l), 25.0);
}

TEST(Metrics, ParsesHostPort) {
  auto a = ParseHostPort("127.0.0.1:9100");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 9100);
  auto b = ParseHostPort("[::1]:0");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->port, 0);
  // No host: loopback, not every interface.
  for (const char* loopback : {":9100", "9100"}) {
    auto c = ParseHostPort(loopback);
    ASSERT_TRUE(c.ok()) << loopback << ": " << c.status().ToString();
    EXPECT_EQ(c->host, "127.0.0.1") << loopback;
    EXPECT_EQ(c->port, 9100) << loopback;
  }
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("::"));
  EXPECT_FALSE(IsLoopbackHost("10.0.0.1"));
  for (const char* bad : {"", "host:", "host:65536", "host:-1", "host:12x", "9x",
                          "::1:9100", "[::1]9100", "[::1"}) {
    auto r = ParseHostPort(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    }
  }
}

class FakeHandler final : public RemoteLayerHandler {
 public:
  Result<bool> TryMount(const PrepareRequest& info) override {
    if (info.key == "fail") return Status::NotFound("layer sha256:x: no key for it");
    return info.key == "mine";
  }
  Status Unmount(int64_t, const std::filesystem::path&) override { return Status::Ok(); }
  Status Restore(const RestoreRequest& info) override {
    return info.name == "bad" ? Status::FailedPrecondition("no") : Status::Ok();
  }
  Status Check(const CheckRequest& info) override {
    return info.name == "revoked" ? Status::PermissionDenied("layer sha256:x: no key") : Status::Ok();
  }
  std::vector<RemoteLayerInfo> MountedLayers() const override { return {SampleLayer()}; }
};

TEST(Metrics, CountMountsCountsMountsAndFailuresOnly) {
  MountCounters counters;
  auto handler = CountMounts(std::make_shared<FakeHandler>(), &counters);
  PrepareRequest p;
  p.key = "mine";
  EXPECT_TRUE(*handler->TryMount(p));
  p.key = "not-mine";
  EXPECT_FALSE(*handler->TryMount(p));
  p.key = "fail";
  EXPECT_EQ(handler->TryMount(p).status().code(), StatusCode::kNotFound);
  RestoreRequest r;
  r.name = "good";
  EXPECT_TRUE(handler->Restore(r).ok());
  r.name = "bad";
  EXPECT_FALSE(handler->Restore(r).ok());
  EXPECT_EQ(counters.mounts.load(), 2u);
  EXPECT_EQ(counters.mount_failures.load(), 2u);
  ASSERT_EQ(handler->MountedLayers().size(), 1u);
  EXPECT_EQ(handler->MountedLayers()[0].snapshot_id, 7);
  // Checks are forwarded (never answered by the wrapper) and refusals counted.
  CheckRequest c;
  c.name = "fine";
  EXPECT_TRUE(handler->Check(c).ok());
  c.name = "revoked";
  EXPECT_EQ(handler->Check(c).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(counters.refusals.load(), 1u);
}

TEST(Metrics, QuarantinedLayersAndRefusalsAreCountedAndShown) {
  MetricsSnapshot snap;
  RemoteLayerInfo bad = SampleLayer();
  bad.verification = "failed";
  bad.quarantined = true;
  RemoteLayerInfo good = SampleLayer();
  good.layer_digest = "sha256:ff";
  good.verification = "verified";
  snap.layers = {bad, good};
  snap.refused_uses_total = 5;
  const std::string text = RenderPrometheus(snap);
  EXPECT_THAT(text, HasSubstr("# TYPE lazycrypt_quarantined_layers gauge\nlazycrypt_quarantined_layers 1\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE lazycrypt_refused_uses_total counter\nlazycrypt_refused_uses_total 5\n"));
  EXPECT_THAT(text, HasSubstr("\nlazycrypt_layer_quarantined{layer=\"" + bad.layer_digest));
  const nlohmann::json doc = nlohmann::json::parse(RenderStatusJson(snap));
  EXPECT_EQ(doc.at("quarantined_layers"), 1);
  EXPECT_EQ(doc.at("refused_uses_total"), 5);
  for (const auto& l : doc.at("layers")) {
    EXPECT_EQ(l.at("quarantined").get<bool>(), l.at("layer") == bad.layer_digest);
    EXPECT_EQ(l.at("verification"), l.at("layer") == bad.layer_digest ? "failed" : "verified");
  }
}

TEST(MetricsServer, ServesMetricsAndStatusOnLoopback) {
  std::mutex mu;
  int scrapes = 0;
  auto server = MetricsServer::Start(
      "127.0.0.1:0",
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        ++scrapes;
        MetricsSnapshot s;
        s.layers.push_back(SampleLayer());
        s.mounts_total = 1;
        return s;
      },
      NullLogSink());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  ASSERT_NE((*server)->port(), 0);
  const std::string address = "127.0.0.1:" + std::to_string((*server)->port());

  auto metrics = tools::HttpGetFromDaemon(address, "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status().ToString();
  EXPECT_THAT(*metrics, HasSubstr("\nlazycrypt_mounted_layers 1\n"));
  EXPECT_THAT(*metrics, HasSubstr("lazycrypt_layer_cache_hits_total{layer=\"sha256:00aa11bb"));
  EXPECT_EQ(*metrics, RenderPrometheus([] {
              MetricsSnapshot s;
              s.layers.push_back(SampleLayer());
              s.mounts_total = 1;
              return s;
            }()));

  auto status = tools::HttpGetFromDaemon(address, "/status");
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  const auto doc = nlohmann::json::parse(*status);
  EXPECT_EQ(doc.at("layers")[0].at("mountpoint"), "/var/lib/lazycrypt/snapshots/7/fs");

  auto missing = tools::HttpGetFromDaemon(address, "/nothing");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(scrapes, 2);  // the 404 did not ask the source
  }

  // `lazycrypt status` against it: a table naming the layer, and the raw JSON with --json.
  char* out_buf = nullptr;
  size_t out_len = 0;
  FILE* out = open_memstream(&out_buf, &out_len);
  ASSERT_NE(out, nullptr);
  tools::Output io;
  io.out = out;
  tools::StatusFlags flags;
  flags.address = address;
  Status run = tools::RunStatus(flags, io);
  std::fclose(out);
  const std::string table(out_buf, out_len);
  std::free(out_buf);
  ASSERT_TRUE(run.ok()) << run.ToString();
  EXPECT_THAT(table, HasSubstr("LAYER"));
  EXPECT_THAT(table, HasSubstr("sha256:00aa11bb22cc "));
  EXPECT_THAT(table, HasSubstr("127.0.0.1:5000/app:1"));
  EXPECT_THAT(table, HasSubstr("25.0%"));
  EXPECT_THAT(table, HasSubstr("9/3"));
}

TEST(MetricsServer, SecondBindOnTheSamePortFails) {
  auto server = MetricsServer::Start("127.0.0.1:0", [] { return MetricsSnapshot{}; }, NullLogSink());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  // A bound port refuses a second bind on the same address.
  auto again = MetricsServer::Start("127.0.0.1:" + std::to_string((*server)->port()),
                                    [] { return MetricsSnapshot{}; }, NullLogSink());
  EXPECT_FALSE(again.ok());
  if (!again.ok()) {
    EXPECT_THAT(again.status().message(), HasSubstr("cannot listen"));
  }
}

TEST(MetricsServer, RejectsBadAddress) {
  auto r = MetricsServer::Start("nohost", [] { return MetricsSnapshot{}; }, NullLogSink());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

TEST(LazycryptStatus, ClearErrorWhenDaemonNotReachable) {
  // A port that was just free: nothing listens there.
  uint16_t port = 0;
  {
    auto s = MetricsServer::Start("127.0.0.1:0", [] { return MetricsSnapshot{}; }, NullLogSink());
    ASSERT_TRUE(s.ok());
    port = (*s)->port();
  }
  tools::StatusFlags flags;
  flags.address = "127.0.0.1:" + std::to_string(port);
  tools::Output io;
  Status st = tools::RunStatus(flags, io);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_THAT(st.message(), HasSubstr("cannot reach"));
  EXPECT_THAT(st.message(), HasSubstr(flags.address));
}

TEST(LazycryptStatus, ClearErrorWhenMetricsAreOff) {
  char dir_template[] = "/tmp/lc-metrics-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::filesystem::path dir(dir_template);
  const std::filesystem::path config = dir / "config.toml";
  FILE* f = std::fopen(config.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("[metrics]\naddress = \"\"\n", f);
  std::fclose(f);
  tools::StatusFlags flags;
  flags.config = config.string();
  Status st = tools::RunStatus(flags, tools::Output{});
  std::filesystem::remove_all(dir);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("metrics are off"));
}

TEST(LazycryptStatus, TableOfNoLayersAndBadJson) {
  auto empty = tools::FormatStatusTable(RenderStatusJson(MetricsSnapshot{}));
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, "no remote layers mounted\n");
  EXPECT_EQ(tools::FormatStatusTable("{\"layers\": [{}]}").status().code(), StatusCode::kCorruption);
  EXPECT_EQ(tools::FormatStatusTable("<html>").status().code(), StatusCode::kCorruption);
}

}  // namespace
}  // namespace lazycrypt::snapshotter
