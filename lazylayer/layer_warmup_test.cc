#include "lazylayer/layer_warmup.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

namespace lazycrypt::lazylayer {
namespace {

using namespace std::chrono_literals;

WarmRequest Request(const std::string& digest) {
  WarmRequest r;
  r.source.image_ref = "registry.test/app:1";
  r.source.layer_digest = digest;
  r.source.toc_digest = "sha256:toc";
  r.descriptor.digest = digest;
  r.key = WarmKey(r.source.image_ref, digest, r.source.toc_digest);
  return r;
}

// An open function the test releases layer by layer; it records what it was asked for.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  std::set<std::string> released;
  std::set<std::string> fail;
  std::vector<std::string> opened;
  std::atomic<int> running{0};
  Result<WarmLayer> Open(const WarmRequest& r) {
    std::unique_lock<std::mutex> lock(mu);
    opened.push_back(r.descriptor.digest);
    ++running;
    cv.wait(lock, [&] { return released.count(r.descriptor.digest) != 0; });
    --running;
    if (fail.count(r.descriptor.digest) != 0) return Status::Unavailable("registry down");
    WarmLayer out;
    out.descriptor = r.descriptor;
    return out;
  }
  void Release(const std::string& digest, bool failing = false) {
    std::lock_guard<std::mutex> lock(mu);
    released.insert(digest);
    if (failing) fail.insert(digest);
    cv.notify_all();
  }
  size_t Opened() {
    std::lock_guard<std::mutex> lock(mu);
    return opened.size();
  }
};

void WaitFor(const std::function<bool()>& done) {
  for (int i = 0; i < 500 && !done(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(done());
}

TEST(LayerWarmup, OpensInParallelAndAClaimWaitsForTheOpenUnderWay) {
  Gate gate;
  LayerWarmupOptions o;
  o.workers = 2;
  LayerWarmup warmup(o, [&](const WarmRequest& r) { return gate.Open(r); }, nullptr);
  EXPECT_EQ(warmup.Start({Request("sha256:a"), Request("sha256:b"), Request("sha256:c")}), 3u);
  // Two workers: two opens at once, the third queued.
  WaitFor([&] { return gate.running.load() == 2; });
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(gate.Opened(), 2u);
  // Starting them again queues nothing.
  EXPECT_EQ(warmup.Start({Request("sha256:a"), Request("sha256:b")}), 0u);

  std::thread release([&] {
    std::this_thread::sleep_for(100ms);
    gate.Release("sha256:a");
  });
  bool waited = false;
  auto a = warmup.Claim(Request("sha256:a").key, &waited);
  release.join();
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(waited);
  EXPECT_EQ(a->descriptor.digest, "sha256:a");
  // Claimed once only.
  EXPECT_FALSE(warmup.Claim(Request("sha256:a").key).has_value());

  gate.Release("sha256:b");
  gate.Release("sha256:c");
  WaitFor([&] { return warmup.stats().opened == 3; });
  auto c = warmup.Claim(Request("sha256:c").key, &waited);
  ASSERT_TRUE(c.has_value());
  EXPECT_FALSE(waited);
  const LayerWarmupStats s = warmup.stats();
  EXPECT_EQ(s.queued, 3u);
  EXPECT_EQ(s.claimed_waited, 1u);
  EXPECT_EQ(s.claimed_ready, 1u);
}

TEST(LayerWarmup, AQueuedLayerIsLeftToItsClaimantAndAFailureToItsPrepare) {
  Gate gate;
  LayerWarmupOptions o;
  o.workers = 1;
  LayerWarmup warmup(o, [&](const WarmRequest& r) { return gate.Open(r); }, nullptr);
  warmup.Start({Request("sha256:a"), Request("sha256:b")});
  WaitFor([&] { return gate.running.load() == 1; });
  // b is still queued: the claimant opens it itself, the pool never does.
  EXPECT_FALSE(warmup.Claim(Request("sha256:b").key).has_value());
  gate.Release("sha256:a", /*failing=*/true);
  WaitFor([&] { return warmup.stats().failed == 1; });
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(gate.Opened(), 1u) << "the claimed-away layer was opened by the pool too";
  EXPECT_FALSE(warmup.Claim(Request("sha256:a").key).has_value());
  // A failed layer is not retried by a Start of the same pull (its Prepare does the work).
  EXPECT_EQ(warmup.Start({Request("sha256:a")}), 1u) << "the claim removed the failed entry";
}

TEST(LayerWarmup, UnclaimedLayersExpireAndTheCapBoundsWhatIsHeld) {
  Gate gate;
  gate.Release("sha256:a");
  gate.Release("sha256:b");
  gate.Release("sha256:c");
  LayerWarmupOptions o;
  o.workers = 4;
  o.max_layers = 2;
  o.keep_for = 100ms;
  LayerWarmup warmup(o, [&](const WarmRequest& r) { return gate.Open(r); }, nullptr);
  EXPECT_EQ(warmup.Start({Request("sha256:a"), Request("sha256:b"), Request("sha256:c")}), 2u);
  EXPECT_EQ(warmup.stats().skipped, 1u);
  WaitFor([&] { return warmup.stats().opened == 2; });
  // Nobody claims them: they are destroyed once keep_for has passed, without any other call.
  WaitFor([&] { return warmup.stats().expired == 2; });
  EXPECT_FALSE(warmup.Claim(Request("sha256:a").key).has_value());
  EXPECT_EQ(warmup.Start({Request("sha256:c")}), 1u) << "room again once they expired";
}

TEST(LayerWarmup, DestructionWithOpensUnderWayAndQueuedLayers) {
  Gate gate;
  LayerWarmupOptions o;
  o.workers = 1;
  auto warmup = std::make_unique<LayerWarmup>(
      o, [&](const WarmRequest& r) { return gate.Open(r); }, nullptr);
  warmup->Start({Request("sha256:a"), Request("sha256:b")});
  WaitFor([&] { return gate.running.load() == 1; });
  std::thread release([&] {
    std::this_thread::sleep_for(50ms);
    gate.Release("sha256:a");
  });
  warmup.reset();  // waits for the open under way, drops the queued one
  release.join();
  EXPECT_EQ(gate.Opened(), 1u);
}

}  // namespace
}  // namespace lazycrypt::lazylayer
