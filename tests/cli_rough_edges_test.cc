// Issue 19, "Rough edges a newcomer hit on the way":
//  - `encrypt --prefetch-list` follows symlinks and hard links in the merged image (whiteouts of
//    upper layers honoured, confined to the image root) and reports per path what was marked;
//  - `layer ls|cat` read docker:// images; `inspect --json` lists the marked files per layer;
//  - a flag a subcommand does not take is named together with the subcommand and its flags;
//  - `lazycrypt pull` says that lazy layers are fetched later, `lazycrypt status` totals it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "image/prefetch_plan.h"
#include "tests/harness/registry_process.h"
#include "tests/integration_util.h"
#include "tools/commands.h"
#include "tools/pull.h"
#include "tools/status.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using image::LayerTree;
using image::TreeEntry;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Q(const fs::path& p) { return ShellQuote(p.string()); }
std::string Oci(const fs::path& dir) { return ShellQuote("oci:" + dir.string()); }

TreeEntry File(std::string name) { return {std::move(name), tar::EntryType::kRegular, ""}; }
TreeEntry Dir(std::string name) { return {std::move(name), tar::EntryType::kDirectory, ""}; }
TreeEntry Link(std::string name, std::string target) {
  return {std::move(name), tar::EntryType::kSymlink, std::move(target)};
}
TreeEntry Hard(std::string name, std::string target) {
  return {std::move(name), tar::EntryType::kHardlink, std::move(target)};
}

// --- PlanPrefetch: the merged view and the walk, without I/O --------------------------------

std::vector<LayerTree> ThreeLayers() {
  LayerTree base;
  base.entries = {
      Dir("bin"),      File("bin/busybox"),        Link("bin/sh", "busybox"),
      Link("bin/ash", "/bin/busybox"),             Link("usr/bin/env", "../../bin/busybox"),
      Dir("lib"),      File("lib/ld.so"),          Link("lib64", "lib"),
      Link("loop/a", "b"),                         Link("loop/b", "a"),
      Link("escape", "../../../../bin/busybox"),   Link("abs-escape", "/../../etc/passwd"),
      Dir("etc"),      File("etc/passwd"),         File("etc/shadow"),
      File("etc/hosts"),
      {"dev/null", tar::EntryType::kCharDevice, ""},
      Link("chain1", "chain2"),                    Link("chain2", "/bin/sh"),
      Hard("cat", "bin/busybox"),
      File("old/dir/file"),                        File("opaque/x"),
  };
  LayerTree upper;
  upper.whiteouts = {"etc/shadow"};
  upper.opaque_dirs = {"opaque"};
  upper.entries = {
      File("opaque/y"),
      File("etc/hosts"),                // replaces the base's
      Link("old", "/etc"),              // a symlink over a directory: old/dir/file is gone
      Hard("etc/hosts-link", "etc/hosts"),
  };
  LayerTree copied;  // written as it is (not lazycrypt)
  copied.entries = {File("srv/data")};
  return {base, upper, copied};
}

TEST(PrefetchPlan, FollowsLinksInTheMergedImageAndSaysWhyNot) {
  const std::vector<std::string> paths = {
      "bin/sh",      "bin/ash",     "usr/bin/env",  "lib64/ld.so",    "loop/a",
      "escape",      "abs-escape",  "chain1",       "cat",            "etc/shadow",
      "etc/hosts",   "etc/hosts-link", "old/dir/file", "opaque/x",    "opaque/y",
      "dev/null",    "etc",         "lib64",        "etc/passwd/x",   "srv/data",
      "bin/busybox",
  };
  const image::PrefetchPlan plan = image::PlanPrefetch(ThreeLayers(), paths, {0, 1});
  EXPECT_THAT(
      tools::PrefetchPlanLines(plan),
      ElementsAre(
          "prefetch /bin/sh: marked /bin/busybox in layer 0 (via symlink)",
          "prefetch /bin/ash: marked /bin/busybox in layer 0 (via symlink)",
          "prefetch /usr/bin/env: marked /bin/busybox in layer 0 (via symlink)",
          "prefetch /lib64/ld.so: marked /lib/ld.so in layer 0 (via symlink)",
          "prefetch /loop/a: not marked: too many levels of symbolic links (40 followed: a loop?)",
          "prefetch /escape: marked /bin/busybox in layer 0 (via symlink)",
          "prefetch /abs-escape: marked /etc/passwd in layer 0 (via symlink)",
          "prefetch /chain1: marked /bin/busybox in layer 0 (via symlink)",
          "prefetch /cat: marked /bin/busybox in layer 0 (via hard link)",
          "prefetch /etc/shadow: not marked: not found",
          "prefetch /etc/hosts: marked in layer 1",
          "prefetch /etc/hosts-link: marked /etc/hosts in layer 1 (via hard link)",
          "prefetch /old/dir/file: not marked: not found (/etc/dir does not exist)",
          "prefetch /opaque/x: not marked: not found",
          "prefetch /opaque/y: marked in layer 1",
          "prefetch /dev/null: not marked: a character device",
          "prefetch /etc: not marked: a directory",
          "prefetch /lib64: not marked: a directory",
          "prefetch /etc/passwd/x: not marked: /etc/passwd is a regular file, not a directory",
          "prefetch /srv/data: not marked: in layer 2, which is not written as a lazycrypt layer",
          "prefetch /bin/busybox: marked in layer 0",
          "prefetch: 12 of 21 paths marked"));
  // What each layer's writer is told to mark: every file once, the upper /etc/hosts only.
  ASSERT_EQ(plan.layer_marks.size(), 3u);
  EXPECT_THAT(plan.layer_marks[0], ElementsAre("bin/busybox", "lib/ld.so", "etc/passwd"));
  EXPECT_THAT(plan.layer_marks[1], ElementsAre("etc/hosts", "opaque/y"));
  EXPECT_TRUE(plan.layer_marks[2].empty());
}

TEST(PrefetchPlan, UnreadLayersAreSaidAndHideNothing) {
  std::vector<LayerTree> layers = ThreeLayers();
  layers[1] = LayerTree{};
  layers[1].readable = false;  // e.g. already ocicrypt-encrypted
  const image::PrefetchPlan plan = image::PlanPrefetch(layers, {"etc/shadow", "srv/data"}, {0});
  EXPECT_THAT(tools::PrefetchPlanLines(plan),
              ElementsAre("prefetch /etc/shadow: marked in layer 0",
                          "prefetch /srv/data: not marked: in layer 2, which is not written as a "
                          "lazycrypt layer",
                          "prefetch: 1 of 2 paths marked (encrypted layer 1 not read: what only "
                          "they hold counts as not found)"));
}

// --- The real CLI on a two-layer busybox image --------------------------------------------------

class RoughEdges : public ::testing::Test {
 protected:
  void SetUp() override {
    MakeBusyboxImage(tmp_ / "src");
    key_ = GenerateKeyPair(tmp_.path(), "ec256", "ec");
    // Layer 1: a whiteout, a hard link, a relative directory symlink, an absolute symlink into
    // layer 0, and a symlink loop.
    const fs::path extra = tmp_ / "extra";
    fs::create_directories(extra / "etc");
    fs::create_directories(extra / "opt" / "app");
    fs::create_directories(extra / "usr" / "local" / "bin");
    WriteFileString(extra / "etc" / ".wh.group", "");
    WriteFileString(extra / "opt" / "app" / "a.bin", std::string(100000, 'a'));
    fs::create_hard_link(extra / "opt" / "app" / "a.bin", extra / "opt" / "app" / "z-link");
    fs::create_symlink("app", extra / "opt" / "current");
    fs::create_symlink("/bin/busybox", extra / "usr" / "local" / "bin" / "tool");
    fs::create_symlink("loop2", extra / "loop1");
    fs::create_symlink("loop1", extra / "loop2");
    // Sorted by name: a.bin is archived as the file, z-link as the hard link to it.
    ASSERT_EQ(RunCommand("tar --sort=name --format=pax -C " + Q(extra) + " -cf " +
                         Q(tmp_ / "extra.tar") + " . && umoci raw add-layer --image " +
                         Q(tmp_ / "src") + " " + Q(tmp_ / "extra.tar"))
                  .exit_code,
              0);
    WriteFileString(tmp_ / "prefetch.txt",
                    "/bin/sh\n"
                    "/opt/current/z-link\n"
                    "/usr/local/bin/tool\n"
                    "/etc/group\n"
                    "/loop1\n"
                    "/etc\n");
  }
  std::string Recipient() const { return "-r " + ShellQuote("jwe:" + key_.pub.string()); }
  std::string Encrypt(const std::string& extra, const std::string& dst) {
    return "encrypt " + Recipient() + " --prefetch-list " + Q(tmp_ / "prefetch.txt") + " " + extra +
           " " + Oci(tmp_ / "src") + " " + dst;
  }
  static std::vector<std::string> PrefetchFiles(const nlohmann::json& layer) {
    return layer.at("prefetchFiles").get<std::vector<std::string>>();
  }

  TempDir tmp_;
  KeyPair key_;
};

TEST_F(RoughEdges, PrefetchListFollowsSymlinksAndHardLinksAcrossLayers) {
  auto enc = Lazycrypt(Encrypt("", Oci(tmp_ / "enc")));
  ASSERT_EQ(enc.exit_code, 0) << enc.output;
  EXPECT_THAT(enc.output,
              HasSubstr("  prefetch /bin/sh: marked /bin/busybox in layer 0 (via symlink)\n"
                        "  prefetch /opt/current/z-link: marked /opt/app/a.bin in layer 1 (via "
                        "symlink and hard link)\n"
                        "  prefetch /usr/local/bin/tool: marked /bin/busybox in layer 0 (via "
                        "symlink)\n"
                        "  prefetch /etc/group: not marked: not found\n"
                        "  prefetch /loop1: not marked: too many levels of symbolic links (40 "
                        "followed: a loop?)\n"
                        "  prefetch /etc: not marked: a directory\n"
                        "  prefetch: 3 of 6 paths marked\n"));

  // inspect --json lists the marked files per layer (no --files needed).
  auto r = Lazycrypt("inspect --json -k " + Q(key_.priv) + " " + Oci(tmp_ / "enc"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j["layers"].size(), 2u);
  EXPECT_THAT(PrefetchFiles(j["layers"][0]), ElementsAre("bin/busybox"));
  EXPECT_THAT(PrefetchFiles(j["layers"][1]), ElementsAre("opt/app/a.bin"));
  EXPECT_EQ(j["layers"][1]["prefetchCount"], 1);

  // Only layer 0 written as lazycrypt: the file of layer 1 is named, with the reason.
  auto only0 = Lazycrypt(Encrypt("--layers 0", Oci(tmp_ / "enc0")));
  ASSERT_EQ(only0.exit_code, 0) << only0.output;
  EXPECT_THAT(only0.output,
              HasSubstr("  prefetch /opt/current/z-link: not marked: /opt/app/a.bin is in layer 1, "
                        "which is not written as a lazycrypt layer\n"));
  EXPECT_THAT(only0.output, HasSubstr("  prefetch: 2 of 6 paths marked\n"));
}

TEST_F(RoughEdges, LayerCommandsReadDockerImages) {
  auto registry = harness::RegistryProcess::Start();
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  const std::string ref = "docker://" + (*registry)->host() + "/lazycrypt/rough:enc";
  const std::string via = " --plain-http --hosts-dir '' ";
  auto push = Lazycrypt(Encrypt("--plain-http --hosts-dir ''", ref));
  ASSERT_EQ(push.exit_code, 0) << push.output << (*registry)->Log();

  auto ls = Lazycrypt("layer ls" + via + "-k " + Q(key_.priv) + " --layer 0 " + ref);
  ASSERT_EQ(ls.exit_code, 0) << ls.output;
  EXPECT_THAT(ls.output, HasSubstr("\nbin/busybox  [prefetch]\n"));
  EXPECT_THAT(ls.output, HasSubstr("\netc/passwd\n"));
  auto ls1 = Lazycrypt("layer ls --long" + via + "-k " + Q(key_.priv) + " --layer 1 " + ref);
  ASSERT_EQ(ls1.exit_code, 0) << ls1.output;
  EXPECT_THAT(ls1.output, HasSubstr(" opt/app/a.bin  [prefetch]\n"));
  EXPECT_THAT(ls1.output, HasSubstr(" opt/app/z-link link to opt/app/a.bin\n"));

  auto cat = Lazycrypt("layer cat" + via + "-k " + Q(key_.priv) + " --layer 0 " + ref +
                       " etc/hostname");
  ASSERT_EQ(cat.exit_code, 0) << cat.output;
  EXPECT_EQ(cat.output, "lazycrypt-sample\n");

  auto dec = Lazycrypt("layer decrypt" + via + "-k " + Q(key_.priv) + " --layer 1 " + ref + " " +
                       Q(tmp_ / "layer1.tar"));
  ASSERT_EQ(dec.exit_code, 0) << dec.output;
  EXPECT_EQ(RunCommand("tar -xOf " + Q(tmp_ / "layer1.tar") + " ./opt/app/a.bin | wc -c").output,
            "100000\n");

  auto inspect = Lazycrypt("inspect --json" + via + "-k " + Q(key_.priv) + " " + ref);
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  auto j = nlohmann::json::parse(inspect.output);
  EXPECT_THAT(PrefetchFiles(j["layers"][0]), ElementsAre("bin/busybox"));
  EXPECT_THAT(PrefetchFiles(j["layers"][1]), ElementsAre("opt/app/a.bin"));

  // The registry is named when the image is not there.
  auto missing = Lazycrypt("layer ls" + via + "-k " + Q(key_.priv) + " docker://" +
                           (*registry)->host() + "/lazycrypt/absent:1");
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_THAT(missing.output, HasSubstr("lazycrypt: "));
  EXPECT_THAT(missing.output, HasSubstr("lazycrypt/absent"));
}

// --- Flags a command does not take --------------------------------------------------------------

TEST(RoughEdgesCli, UnknownFlagsNameTheCommandAndItsFlags) {
  auto ls = Lazycrypt("layer ls --bogus -k k.pem oci:/nonexistent");
  EXPECT_EQ(ls.exit_code, 1);
  EXPECT_EQ(ls.output,
            "lazycrypt: 'lazycrypt layer ls' does not take '--bogus' (its flags: --help/-h, "
            "--key/-k, --layer/-l, --platform, --descriptor/-d, --plain-http, --tls-verify, "
            "--authfile, --hosts-dir, --long, and the global --quiet/-q; arguments: SOURCE)\n"
            "Run 'lazycrypt layer ls --help' for more information.\n");
  auto status = Lazycrypt("status --bogus=3");
  EXPECT_EQ(status.exit_code, 1);
  EXPECT_EQ(status.output,
            "lazycrypt: 'lazycrypt status' does not take '--bogus=3' (its flags: --help/-h, "
            "--address, --config, --json, and the global --quiet/-q)\n"
            "Run 'lazycrypt status --help' for more information.\n");
  auto extra = Lazycrypt("verify -k k.pem oci:a oci:b");
  EXPECT_EQ(extra.exit_code, 1);
  EXPECT_THAT(extra.output,
              HasSubstr("lazycrypt: 'lazycrypt verify' has no place for the argument 'oci:b' "
                        "(its flags: --help/-h, --key/-k, --plain-http, --tls-verify, --authfile, "
                        "--hosts-dir, and the global --quiet/-q; arguments: SRC)\n"));
  EXPECT_THAT(extra.output, ::testing::Not(HasSubstr("not expected")));
}

// --- pull and status summaries ------------------------------------------------------------------

TEST(RoughEdgesCli, PullSaysLazyLayersAreFetchedLater) {
  ctrdclient::PullReport report;
  report.image_name = "127.0.0.1:5000/app:enc";
  report.manifest_digest = "sha256:0123456789abcdef0123456789abcdef";
  report.duration = std::chrono::milliseconds(812);
  report.bytes_fetched = 4096;
  report.layers.resize(3);
  report.layers[0].outcome = ctrdclient::LayerOutcome::kApplied;
  report.layers[1].outcome = ctrdclient::LayerOutcome::kRemote;
  report.layers[2].outcome = ctrdclient::LayerOutcome::kRemote;
  EXPECT_EQ(tools::PullSummary(report, "lazycrypt"),
            "pulled 127.0.0.1:5000/app:enc (sha256:0123456789ab) in 812 ms: 2 layers mounted "
            "lazily by lazycrypt, 1 downloaded and unpacked, 0 already present; 4 KiB fetched "
            "now; the files of the lazily mounted layers are fetched as the container reads them "
            "(see `lazycrypt status` for the bytes fetched since)");
  for (auto& l : report.layers) l.outcome = ctrdclient::LayerOutcome::kApplied;
  EXPECT_EQ(tools::PullSummary(report, "overlayfs"),
            "pulled 127.0.0.1:5000/app:enc (sha256:0123456789ab) in 812 ms: 0 layers mounted "
            "lazily by overlayfs, 3 downloaded and unpacked, 0 already present; 4 KiB fetched now");
}

TEST(RoughEdgesCli, StatusTotalsTheBytesFetchedSinceMounting) {
  auto layer = [](const std::string& digest, uint64_t fetched) {
    return nlohmann::json{{"layer", digest},        {"image", "r/app:enc"},
                          {"mountpoint", "/m"},     {"present_percent", 50.0},
                          {"bytes_fetched", fetched}, {"cache_hits", 1},
                          {"cache_misses", 2},      {"auth_failures", 0}};
  };
  nlohmann::json doc = {{"layers", {layer("sha256:aaaaaaaaaaaaaaaa", 1 << 20),
                                    layer("sha256:bbbbbbbbbbbbbbbb", 512 << 10)}}};
  auto table = tools::FormatStatusTable(doc.dump());
  ASSERT_TRUE(table.ok()) << table.status().ToString();
  EXPECT_THAT(*table, HasSubstr("\n2 layers mounted lazily: 1.5 MiB fetched from the registry "
                                "since they were mounted\n"));
  EXPECT_THAT(*table, HasSubstr("1 MiB"));
  EXPECT_THAT(*table, HasSubstr("512 KiB"));
}

}  // namespace
}  // namespace lazycrypt::testing
