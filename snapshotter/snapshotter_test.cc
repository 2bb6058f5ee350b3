#include "snapshotter/snapshotter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "snapshotter/test_util.h"

namespace lazycrypt::snapshotter {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

// A RemoteLayerHandler that "mounts" by writing a marker file into the target directory, for
// layers labelled test/remote=yes; test/remote=fail makes TryMount fail.
class FakeRemote final : public RemoteLayerHandler {
 public:
  Result<bool> TryMount(const PrepareRequest& info) override {
    std::lock_guard lock(mu);
    try_mounts.push_back(info);
    auto it = info.labels.find("test/remote");
    if (it == info.labels.end()) return false;
    if (it->second == "fail") return Status::NotFound("layer sha256:abc: no key for it");
    if (!fs::is_directory(info.target_dir)) return Status::Internal("target dir missing");
    std::ofstream(info.target_dir / "layer-marker") << info.labels.at("containerd.io/snapshot.ref");
    return true;
  }
  Status Unmount(int64_t id, const fs::path& dir) override {
    std::lock_guard lock(mu);
    unmounts.push_back(id);
    fs::remove(dir / "layer-marker");
    return Status::Ok();
  }
  Status Restore(const RestoreRequest& info) override {
    std::lock_guard lock(mu);
    restores.push_back(info);
    return restore_error;
  }
  // Refuses the snapshots named in `refuse` with their status.
  Status Check(const CheckRequest& info) override {
    std::lock_guard lock(mu);
    checks.push_back(info.name);
    auto it = refuse.find(info.name);
    return it == refuse.end() ? Status::Ok() : it->second;
  }
  Result<PurgedLayer> Purge(const CheckRequest& info) override {
    std::lock_guard lock(mu);
    purges.push_back(info.name);
    unmounts.push_back(info.snapshot_id);
    return PurgedLayer{"sha256:layer-of-" + info.name, 1000, ""};
  }

  std::mutex mu;
  std::vector<PrepareRequest> try_mounts;
  std::vector<int64_t> unmounts;
  std::vector<RestoreRequest> restores;
  std::vector<std::string> checks;
  std::vector<std::string> purges;
  std::map<std::string, Status> refuse;
  Status restore_error;
  // What MountedLayers reports (the default CachedUsage looks through it).
  std::vector<RemoteLayerInfo> mounted;
  std::vector<RemoteLayerInfo> MountedLayers() const override { return mounted; }
};

class SnapshotterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty());
    root_ = tmp_.path() / "state";
    Reopen();
  }
  void Reopen(std::shared_ptr<RemoteLayerHandler> remote = nullptr, bool index_off = false) {
    sn_.reset();
    SnapshotterOptions o;
    o.root = root_;
    o.remote = std::move(remote);
    o.overlay_index_off = index_off;
    auto opened = Snapshotter::Open(o);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    sn_ = std::move(*opened);
  }
  fs::path Fs(int64_t id) const { return root_ / "snapshots" / std::to_string(id) / "fs"; }
  fs::path Work(int64_t id) const { return root_ / "snapshots" / std::to_string(id) / "work"; }

  // Prepares `key` on `parent`, writes a file, commits it as `name`.
  void Layer(const std::string& name, const std::string& parent) {
    auto m = sn_->Prepare(name + "-active", parent, {});
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    ASSERT_TRUE(sn_->Commit(name, name + "-active", {}).ok());
  }

  testing::ScopedTempDir tmp_;
  fs::path root_;
  std::unique_ptr<Snapshotter> sn_;
};

TEST_F(SnapshotterTest, RootIsCreatedPrivate) {
  struct stat st;
  ASSERT_EQ(stat(root_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  ASSERT_EQ(stat((root_ / "snapshots").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
}

TEST_F(SnapshotterTest, PrepareWithoutParentIsRwBindOfItsFs) {
  auto m = sn_->Prepare("a", "", {{"l", "v"}});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_THAT(*m, ElementsAre(Mount{"bind", Fs(1).string(), {"rw", "rbind"}}));
  EXPECT_TRUE(fs::is_directory(Fs(1)));
  EXPECT_TRUE(fs::is_directory(Work(1)));
  struct stat st;
  ASSERT_EQ(stat(Fs(1).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(stat(Work(1).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0711u);
  auto info = sn_->Stat("a");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->kind, SnapshotKind::kActive);
  EXPECT_EQ(info->name, "a");
  EXPECT_EQ(info->parent, "");
  EXPECT_EQ(info->labels, (Labels{{"l", "v"}}));
  EXPECT_EQ(info->created, info->updated);
  auto again = sn_->Mounts("a");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *m);
}

TEST_F(SnapshotterTest, ViewWithoutParentIsRoBindAndHasNoWorkDir) {
  auto m = sn_->View("v", "", {});
  ASSERT_TRUE(m.ok());
  EXPECT_THAT(*m, ElementsAre(Mount{"bind", Fs(1).string(), {"ro", "rbind"}}));
  EXPECT_TRUE(fs::is_directory(Fs(1)));
  EXPECT_FALSE(fs::exists(Work(1)));
  EXPECT_EQ(sn_->Stat("v")->kind, SnapshotKind::kView);
}

TEST_F(SnapshotterTest, ViewOfOneParentIsRoBindOfTheParent) {
  Layer("base", "");
  auto m = sn_->View("v", "base", {});
  ASSERT_TRUE(m.ok());
  EXPECT_THAT(*m, ElementsAre(Mount{"bind", Fs(1).string(), {"ro", "rbind"}}));
}

TEST_F(SnapshotterTest, ActiveOnParentsIsOverlayNearestFirst) {
  Layer("l1", "");
  Layer("l2", "l1");
  Layer("l3", "l2");
  auto m = sn_->Prepare("c", "l3", {});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_THAT(*m, ElementsAre(Mount{
                      "overlay", "overlay",
                      {"workdir=" + Work(4).string(), "upperdir=" + Fs(4).string(),
                       "lowerdir=" + Fs(3).string() + ":" + Fs(2).string() + ":" + Fs(1).string()}}));
  EXPECT_EQ(sn_->Stat("c")->parent, "l3");
}

TEST_F(SnapshotterTest, ActiveOnOneParentIsOverlayToo) {
  Layer("l1", "");
  auto m = sn_->Prepare("c", "l1", {});
  ASSERT_TRUE(m.ok());
  EXPECT_THAT(*m, ElementsAre(Mount{"overlay", "overlay",
                                    {"workdir=" + Work(2).string(), "upperdir=" + Fs(2).string(),
                                     "lowerdir=" + Fs(1).string()}}));
}

TEST_F(SnapshotterTest, ViewOnTwoParentsIsOverlayWithLowerdirOnly) {
  Layer("l1", "");
  Layer("l2", "l1");
  auto m = sn_->View("v", "l2", {});
  ASSERT_TRUE(m.ok());
  EXPECT_THAT(*m, ElementsAre(Mount{"overlay", "overlay",
                                    {"lowerdir=" + Fs(2).string() + ":" + Fs(1).string()}}));
}

TEST_F(SnapshotterTest, IndexOffComesFirstWhenEnabled) {
  Reopen(nullptr, /*index_off=*/true);
  Layer("l1", "");
  auto m = sn_->Prepare("c", "l1", {});
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->size(), 1u);
  EXPECT_THAT((*m)[0].options,
              ElementsAre("index=off", "workdir=" + Work(2).string(), "upperdir=" + Fs(2).string(),
                          "lowerdir=" + Fs(1).string()));
  // Bind mounts never carry overlay options.
  auto b = sn_->Prepare("b", "", {});
  EXPECT_THAT((*b)[0].options, ElementsAre("rw", "rbind"));
}

TEST_F(SnapshotterTest, NewUpperTakesOwnerOfParentFs) {
  Layer("l1", "");
  ASSERT_EQ(chown(Fs(1).c_str(), 1234, 5678), 0);
  ASSERT_TRUE(sn_->Prepare("c", "l1", {}).ok());
  struct stat st;
  ASSERT_EQ(stat(Fs(2).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
}

TEST_F(SnapshotterTest, PrepareErrors) {
  ASSERT_TRUE(sn_->Prepare("a", "", {}).ok());
  auto dup = sn_->Prepare("a", "", {});
  EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists) << dup.status().ToString();
  auto dup_view = sn_->View("a", "", {});
  EXPECT_EQ(dup_view.status().code(), StatusCode::kAlreadyExists);
  auto missing = sn_->Prepare("b", "nope", {});
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope"));
  auto active_parent = sn_->Prepare("b", "a", {});
  EXPECT_EQ(active_parent.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(active_parent.status().message(), HasSubstr("not committed"));
  EXPECT_EQ(sn_->Prepare("", "", {}).status().code(), StatusCode::kInvalidArgument);
  auto big = sn_->Prepare("big", "", {{"k", std::string(4096, 'x')}});
  EXPECT_EQ(big.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(sn_->Prepare("fits", "", {{"k", std::string(4095, 'x')}}).ok());
  // Failed prepares leave no snapshot and no directory behind.
  EXPECT_EQ(sn_->Stat("b").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(sn_->Stat("big").status().code(), StatusCode::kNotFound);
  int dirs = 0;
  for (const auto& e : fs::directory_iterator(root_ / "snapshots")) {
    (void)e;
    ++dirs;
  }
  EXPECT_EQ(dirs, 2);
}

TEST_F(SnapshotterTest, CommitMakesCommittedSnapshotWithUsageAndNewLabels) {
  ASSERT_TRUE(sn_->Prepare("a", "", {{"old", "1"}}).ok());
  std::string data(10000, 'z');
  std::ofstream(Fs(1) / "file") << data;
  struct stat dir_st, file_st;
  ASSERT_EQ(stat(Fs(1).c_str(), &dir_st), 0);
  ASSERT_EQ(stat((Fs(1) / "file").c_str(), &file_st), 0);
  ASSERT_TRUE(sn_->Commit("c", "a", {{"new", "2"}}).ok());
  EXPECT_EQ(sn_->Stat("a").status().code(), StatusCode::kNotFound);
  auto info = sn_->Stat("c");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->kind, SnapshotKind::kCommitted);
  EXPECT_EQ(info->labels, (Labels{{"new", "2"}}));  // replaced, not inherited
  auto usage = sn_->Usage("c");
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->inodes, 2);
  EXPECT_EQ(usage->size_bytes, (dir_st.st_blocks + file_st.st_blocks) * 512);
  EXPECT_GE(usage->size_bytes, 10000);
  // The committed snapshot keeps its ID and directory; files stay.
  EXPECT_TRUE(fs::exists(Fs(1) / "file"));
}

TEST_F(SnapshotterTest, CommitErrors) {
  ASSERT_TRUE(sn_->Prepare("a", "", {}).ok());
  ASSERT_TRUE(sn_->Prepare("b", "", {}).ok());
  ASSERT_TRUE(sn_->View("v", "", {}).ok());
  EXPECT_EQ(sn_->Commit("x", "missing", {}).code(), StatusCode::kNotFound);
  EXPECT_EQ(sn_->Commit("b", "a", {}).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(sn_->Commit("x", "v", {}).code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(sn_->Commit("c", "a", {}).ok());
  EXPECT_EQ(sn_->Commit("d", "c", {}).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(sn_->Commit("d", "b", {{"k", std::string(5000, 'x')}}).code(),
            StatusCode::kInvalidArgument);
  // Nothing changed by the failures.
  EXPECT_EQ(sn_->Stat("a").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(sn_->Stat("b")->kind, SnapshotKind::kActive);
  EXPECT_EQ(sn_->Stat("v")->kind, SnapshotKind::kView);
}

TEST_F(SnapshotterTest, MountsErrors) {
  Layer("l1", "");
  EXPECT_EQ(sn_->Mounts("l1").status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(sn_->Mounts("nope").status().code(), StatusCode::kNotFound);
}

TEST_F(SnapshotterTest, RemoveRefusesParentsAndDeletesDirectories) {
  Layer("l1", "");
  ASSERT_TRUE(sn_->Prepare("c", "l1", {}).ok());
  Status s = sn_->Remove("l1");
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(sn_->Stat("l1").ok());
  EXPECT_EQ(sn_->Remove("nope").code(), StatusCode::kNotFound);
  std::ofstream(Fs(2) / "f") << "x";
  ASSERT_TRUE(sn_->Remove("c").ok());
  EXPECT_FALSE(fs::exists(Fs(2).parent_path()));
  EXPECT_EQ(sn_->Stat("c").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(sn_->Remove("l1").ok());
  EXPECT_FALSE(fs::exists(Fs(1).parent_path()));
  EXPECT_EQ(sn_->Remove("l1").code(), StatusCode::kNotFound);
}

TEST_F(SnapshotterTest, UpdateLabelsWithFieldMasks) {
  ASSERT_TRUE(sn_->Prepare("a", "", {{"keep", "1"}, {"x", "2"}}).ok());
  auto before = sn_->Stat("a");
  ASSERT_TRUE(before.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(2));

  SnapshotInfo in;
  in.name = "a";
  in.labels = {{"x", "changed"}, {"y", "ignored"}};
  auto one = sn_->Update(in, {"labels.x"});
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->labels, (Labels{{"keep", "1"}, {"x", "changed"}}));
  EXPECT_EQ(one->created, before->created);
  EXPECT_GT(one->updated, before->updated);
  EXPECT_EQ(one->kind, SnapshotKind::kActive);

  // labels.<k> with no value in the request deletes it.
  in.labels = {};
  auto del = sn_->Update(in, {"labels.keep"});
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(del->labels, (Labels{{"x", "changed"}}));

  in.labels = {{"only", "this"}, {"empty", ""}};
  auto all = sn_->Update(in, {"labels"});
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->labels, (Labels{{"only", "this"}}));

  in.labels = {{"nomask", "1"}};
  auto nomask = sn_->Update(in, {});
  ASSERT_TRUE(nomask.ok());
  EXPECT_EQ(nomask->labels, (Labels{{"nomask", "1"}}));
  EXPECT_EQ(sn_->Stat("a")->labels, (Labels{{"nomask", "1"}}));

  auto bad = sn_->Update(in, {"parent"});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("parent"));
  EXPECT_EQ(sn_->Update(in, {"labels.a", "kind"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(sn_->Stat("a")->labels, (Labels{{"nomask", "1"}}));  // failed update changed nothing
  in.name = "nope";
  EXPECT_EQ(sn_->Update(in, {}).status().code(), StatusCode::kNotFound);
}

std::vector<std::string> Names(Snapshotter& sn, const std::vector<std::string>& filters,
                               Status* status = nullptr) {
  std::vector<std::string> out;
  Status s = sn.Walk(filters, [&](const SnapshotInfo& info) {
    out.push_back(info.name);
    return Status::Ok();
  });
  if (status) *status = s;
  return out;
}

TEST_F(SnapshotterTest, WalkWithContainerdFilters) {
  Layer("l1", "");
  ASSERT_TRUE(sn_->Update({"l1", "", SnapshotKind::kCommitted,
                           {{"containerd.io/snapshot.ref", "sha256:1"}}, {}, {}},
                          {"labels"}).ok());
  Layer("l2", "l1");
  ASSERT_TRUE(sn_->Prepare("c1", "l2", {{"team", "a"}}).ok());
  ASSERT_TRUE(sn_->View("v1", "l1", {{"team", "b"}}).ok());

  EXPECT_THAT(Names(*sn_, {}), ElementsAre("c1", "l1", "l2", "v1"));
  EXPECT_THAT(Names(*sn_, {""}), ElementsAre("c1", "l1", "l2", "v1"));
  EXPECT_THAT(Names(*sn_, {"parent==l1"}), ElementsAre("l2", "v1"));
  EXPECT_THAT(Names(*sn_, {"kind==committed"}), ElementsAre("l1", "l2"));
  EXPECT_THAT(Names(*sn_, {"kind==view"}), ElementsAre("v1"));
  EXPECT_THAT(Names(*sn_, {"labels.\"containerd.io/snapshot.ref\""}), ElementsAre("l1"));
  EXPECT_THAT(Names(*sn_, {"labels.\"containerd.io/snapshot.ref\"==\"sha256:1\""}),
              ElementsAre("l1"));
  EXPECT_THAT(Names(*sn_, {"labels.team==a"}), ElementsAre("c1"));
  EXPECT_THAT(Names(*sn_, {"labels.team!=a"}), ElementsAre("l1", "l2", "v1"));
  EXPECT_THAT(Names(*sn_, {"labels.team==a", "labels.team==b"}), ElementsAre("c1", "v1"));
  EXPECT_THAT(Names(*sn_, {"parent==l1,kind==view"}), ElementsAre("v1"));
  EXPECT_THAT(Names(*sn_, {"name~=^l"}), ElementsAre("l1", "l2"));
  EXPECT_THAT(Names(*sn_, {"name==nothing"}), IsEmpty());
  Status s;
  Names(*sn_, {"name=="}, &s);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  Names(*sn_, {"labels.\"unterminated"}, &s);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  Names(*sn_, {"name~=("}, &s);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  // An error from the callback stops the walk and is returned.
  int calls = 0;
  s = sn_->Walk({}, [&](const SnapshotInfo&) {
    ++calls;
    return Status::Unavailable("stop");
  });
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_EQ(calls, 1);
}

TEST_F(SnapshotterTest, UsageOfActiveIsLiveDiskUse) {
  ASSERT_TRUE(sn_->Prepare("a", "", {}).ok());
  auto empty = sn_->Usage("a");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->inodes, 1);
  std::ofstream(Fs(1) / "big") << std::string(1 << 20, 'q');
  fs::create_directory(Fs(1) / "d");
  std::ofstream(Fs(1) / "d" / "small") << "x";
  ASSERT_EQ(link((Fs(1) / "big").c_str(), (Fs(1) / "d" / "hardlink").c_str()), 0);
  auto full = sn_->Usage("a");
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->inodes, 4);  // fs, big (counted once despite the hard link), d, small
  EXPECT_GE(full->size_bytes, empty->size_bytes + (1 << 20));
  EXPECT_LT(full->size_bytes, empty->size_bytes + (1 << 20) + 64 * 1024);
  ASSERT_TRUE(sn_->View("v", "", {}).ok());
  EXPECT_EQ(*sn_->Usage("v"), SnapshotUsage{});
  EXPECT_EQ(sn_->Usage("nope").status().code(), StatusCode::kNotFound);
}

TEST_F(SnapshotterTest, ReopenFindsEverythingAndNeverReusesIds) {
  Layer("l1", "");
  ASSERT_TRUE(sn_->Prepare("a", "l1", {{"k", "v"}}).ok());
  ASSERT_TRUE(sn_->Prepare("gone", "", {}).ok());
  ASSERT_TRUE(sn_->Remove("gone").ok());
  auto before = sn_->Stat("a");
  auto mounts_before = sn_->Mounts("a");
  Reopen();
  auto after = sn_->Stat("a");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, *before);
  EXPECT_EQ(*sn_->Mounts("a"), *mounts_before);
  EXPECT_EQ(sn_->Stat("l1")->kind, SnapshotKind::kCommitted);
  EXPECT_EQ(sn_->Stat("gone").status().code(), StatusCode::kNotFound);
  auto m = sn_->Prepare("new", "", {});
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)[0].source, Fs(4).string());  // 3 was "gone"; IDs are not reused
}

TEST_F(SnapshotterTest, CleanupRemovesOnlyOrphans) {
  Layer("l1", "");
  ASSERT_TRUE(sn_->Prepare("a", "l1", {}).ok());
  fs::create_directories(root_ / "snapshots" / "99" / "fs" / "deep");
  std::ofstream(root_ / "snapshots" / "99" / "fs" / "deep" / "f") << "x";
  fs::create_directories(root_ / "snapshots" / "new-abc123" / "fs");
  ASSERT_TRUE(sn_->Cleanup().ok());
  EXPECT_FALSE(fs::exists(root_ / "snapshots" / "99"));
  EXPECT_FALSE(fs::exists(root_ / "snapshots" / "new-abc123"));
  EXPECT_TRUE(fs::is_directory(Fs(1)));
  EXPECT_TRUE(fs::is_directory(Fs(2)));
  EXPECT_TRUE(fs::is_directory(Work(2)));
}

TEST(DiskUsage, NamesMissingRoot) {
  auto u = DiskUsage("/nonexistent/lazycrypt/x");
  EXPECT_EQ(u.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(u.status().message(), HasSubstr("/nonexistent/lazycrypt/x"));
}

// --- the remote-layer flow -------------------------------------------------------------------

class RemoteTest : public SnapshotterTest {
 protected:
  void SetUp() override {
    SnapshotterTest::SetUp();
    remote_ = std::make_shared<FakeRemote>();
    Reopen(remote_);
  }
  std::shared_ptr<FakeRemote> remote_;
};

// Usage of a lazily mounted layer is what is cached on disk for it now (it grows as it is read),
// not zero as stored at commit and not the layer's full size.
TEST_F(RemoteTest, UsageOfARemoteLayerIsWhatItsCacheHoldsNow) {
  Labels labels = {{"containerd.io/snapshot.ref", "sha256:chain1"}, {"test/remote", "yes"}};
  ASSERT_EQ(sn_->Prepare("extract-1", "", labels).status().code(), StatusCode::kAlreadyExists);
  RemoteLayerInfo layer;
  layer.snapshot_id = 1;
  layer.blob_size_bytes = 50 << 20;
  layer.bytes_present = 3 << 20;
  remote_->mounted = {layer};
  EXPECT_EQ(*sn_->Usage("sha256:chain1"), (SnapshotUsage{3 << 20, 1}));
  remote_->mounted[0].bytes_present = 7 << 20;
  EXPECT_EQ(*sn_->Usage("sha256:chain1"), (SnapshotUsage{7 << 20, 1}));
  // Not mounted (e.g. its restore failed): what was stored at commit.
  remote_->mounted.clear();
  EXPECT_EQ(*sn_->Usage("sha256:chain1"), SnapshotUsage{});
}

TEST_F(RemoteTest, RemoteLayerIsCommittedUnderTheRefAndAnswersAlreadyExists) {
  Labels labels = {{"containerd.io/snapshot.ref", "sha256:chain1"},
                   {"containerd.io/snapshot/cri.layer-digest", "sha256:layer1"},
                   {"test/remote", "yes"}};
  auto r = sn_->Prepare("extract-1 sha256:chain1", "", labels);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(r.status().message(), "target snapshot \"sha256:chain1\"");

  ASSERT_EQ(remote_->try_mounts.size(), 1u);
  const auto& req = remote_->try_mounts[0];
  EXPECT_EQ(req.key, "extract-1 sha256:chain1");
  EXPECT_EQ(req.parent, "");
  EXPECT_EQ(req.labels, labels);
  EXPECT_EQ(req.target_dir, Fs(1));
  EXPECT_EQ(req.snapshot_id, 1);

  EXPECT_EQ(sn_->Stat("extract-1 sha256:chain1").status().code(), StatusCode::kNotFound);
  auto info = sn_->Stat("sha256:chain1");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->kind, SnapshotKind::kCommitted);
  Labels want = labels;
  want["containerd.io/snapshot/lazycrypt.remote"] = "true";
  EXPECT_EQ(info->labels, want);
  EXPECT_TRUE(fs::exists(Fs(1) / "layer-marker"));

  // A second pull of the same layer: AlreadyExists without mounting again.
  auto again = sn_->Prepare("extract-2 sha256:chain1", "", labels);
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(remote_->try_mounts.size(), 1u);
  EXPECT_EQ(sn_->Stat("extract-2 sha256:chain1").status().code(), StatusCode::kNotFound);

  // The next layer stacks on it; a container's snapshot sees both.
  Labels l2 = {{"containerd.io/snapshot.ref", "sha256:chain2"}, {"test/remote", "yes"}};
  EXPECT_EQ(sn_->Prepare("extract-3", "sha256:chain1", l2).status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(remote_->try_mounts.back().parent, "sha256:chain1");
  auto m = sn_->Prepare("container", "sha256:chain2", {});
  ASSERT_TRUE(m.ok());
  EXPECT_THAT((*m)[0].options,
              ElementsAre("workdir=" + Work(3).string(), "upperdir=" + Fs(3).string(),
                          "lowerdir=" + Fs(2).string() + ":" + Fs(1).string()));
}

TEST_F(RemoteTest, NotOursFallsBackToOrdinaryPrepare) {
  Labels labels = {{"containerd.io/snapshot.ref", "sha256:plain"}};
  auto m = sn_->Prepare("extract", "", labels);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_THAT(*m, ElementsAre(Mount{"bind", Fs(1).string(), {"rw", "rbind"}}));
  EXPECT_EQ(remote_->try_mounts.size(), 1u);
  EXPECT_EQ(sn_->Stat("extract")->kind, SnapshotKind::kActive);
  // containerd unpacks then commits it itself.
  ASSERT_TRUE(sn_->Commit("sha256:plain", "extract", labels).ok());
  EXPECT_EQ(sn_->Stat("sha256:plain")->labels, labels);  // no remote mark
  ASSERT_TRUE(sn_->Remove("sha256:plain").ok());
  EXPECT_TRUE(remote_->unmounts.empty());
}

TEST_F(RemoteTest, MountFailureReturnsTheErrorAndLeavesNothing) {
  Labels labels = {{"containerd.io/snapshot.ref", "sha256:nokey"}, {"test/remote", "fail"}};
  auto r = sn_->Prepare("extract", "", labels);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("no key for it"));
  EXPECT_EQ(sn_->Stat("extract").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(sn_->Stat("sha256:nokey").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(fs::is_empty(root_ / "snapshots"));
}

TEST_F(RemoteTest, NoRefLabelNeverAsksTheHandler) {
  ASSERT_TRUE(sn_->Prepare("c", "", {{"test/remote", "yes"}}).ok());
  EXPECT_TRUE(remote_->try_mounts.empty());
}

TEST_F(RemoteTest, RemoveUnmountsAndRestartRestores) {
  Labels a = {{"containerd.io/snapshot.ref", "sha256:a"}, {"test/remote", "yes"}};
  Labels b = {{"containerd.io/snapshot.ref", "sha256:b"}, {"test/remote", "yes"}};
  ASSERT_EQ(sn_->Prepare("ka", "", a).status().code(), StatusCode::kAlreadyExists);
  ASSERT_EQ(sn_->Prepare("kb", "sha256:a", b).status().code(), StatusCode::kAlreadyExists);
  Layer("plain", "");  // ordinary committed snapshot: not restored

  auto fresh = std::make_shared<FakeRemote>();
  Reopen(fresh);
  ASSERT_EQ(fresh->restores.size(), 2u);
  std::map<std::string, RestoreRequest> by_name;
  for (const auto& r : fresh->restores) by_name[r.name] = r;
  ASSERT_TRUE(by_name.count("sha256:a") && by_name.count("sha256:b"));
  EXPECT_EQ(by_name["sha256:a"].snapshot_id, 1);
  EXPECT_EQ(by_name["sha256:a"].target_dir, Fs(1));
  EXPECT_EQ(by_name["sha256:b"].parent, "sha256:a");
  EXPECT_EQ(by_name["sha256:b"].labels.at("containerd.io/snapshot/lazycrypt.remote"), "true");
  EXPECT_EQ(by_name["sha256:b"].labels.at("test/remote"), "yes");

  EXPECT_EQ(sn_->Remove("sha256:a").code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(fresh->unmounts.empty());
  ASSERT_TRUE(sn_->Remove("sha256:b").ok());
  EXPECT_THAT(fresh->unmounts, ElementsAre(2));
  EXPECT_FALSE(fs::exists(Fs(2).parent_path()));
  ASSERT_TRUE(sn_->Remove("sha256:a").ok());
  EXPECT_THAT(fresh->unmounts, ElementsAre(2, 1));
  ASSERT_TRUE(sn_->Remove("plain").ok());
  EXPECT_THAT(fresh->unmounts, ElementsAre(2, 1));
}

TEST_F(RemoteTest, ConcurrentPreparesOfOneLayerCommitOnce) {
  Labels labels = {{"containerd.io/snapshot.ref", "sha256:same"}, {"test/remote", "yes"}};
  std::vector<std::thread> threads;
  std::vector<StatusCode> codes(4);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      codes[i] = sn_->Prepare("k" + std::to_string(i), "", labels).status().code();
    });
  }
  for (auto& t : threads) t.join();
  for (auto c : codes) EXPECT_EQ(c, StatusCode::kAlreadyExists);
  EXPECT_THAT(Names(*sn_, {}), ElementsAre("sha256:same"));
  // Every losing mount was undone.
  EXPECT_EQ(remote_->unmounts.size(), remote_->try_mounts.size() - 1);
  int dirs = 0;
  for (const auto& e : fs::directory_iterator(root_ / "snapshots")) {
    (void)e;
    ++dirs;
  }
  EXPECT_EQ(dirs, 1);
}

// --- authorization on every use, fail closed, purge ---------------------------------------

class GateTest : public RemoteTest {
 protected:
  void SetUp() override {
    RemoteTest::SetUp();
    ASSERT_EQ(sn_->Prepare("ka", "", a_).status().code(), StatusCode::kAlreadyExists);
    ASSERT_EQ(sn_->Prepare("kb", "sha256:a", b_).status().code(), StatusCode::kAlreadyExists);
  }
  void Refuse(const std::string& name, Status s) {
    std::lock_guard lock(remote_->mu);
    remote_->refuse[name] = std::move(s);
  }
  Labels a_ = {{"containerd.io/snapshot.ref", "sha256:a"}, {"test/remote", "yes"}};
  Labels b_ = {{"containerd.io/snapshot.ref", "sha256:b"}, {"test/remote", "yes"}};
};

// Every way containerd reuses a committed remote snapshot asks the handler first; a refusal is
// FailedPrecondition with the handler's message (never NotFound: containerd would pull again).
TEST_F(GateTest, EveryUseOfARefusedLayerIsFailedPreconditionWithTheHandlersMessage) {
  ASSERT_TRUE(sn_->Stat("sha256:b").ok());
  ASSERT_TRUE(sn_->Prepare("c0", "sha256:b", {}).ok());
  ASSERT_TRUE(sn_->View("v0", "sha256:b", {}).ok());
  const std::string no_key = "layer sha256:la (snapshot sha256:a): no key on this node unwraps it";
  Refuse("sha256:a", Status::PermissionDenied(no_key));
  auto expect_refused = [&](const Status& s, const char* what) {
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << what << ": " << s.ToString();
    EXPECT_EQ(s.message(), no_key) << what;
  };
  expect_refused(sn_->Stat("sha256:a").status(), "Stat (1.6 unpacker, 2nd pull in a namespace)");
  expect_refused(sn_->Prepare("again", "", a_).status(), "Prepare with an existing target");
  expect_refused(sn_->Prepare("c1", "sha256:b", {}).status(), "container Prepare on top");
  expect_refused(sn_->View("v1", "sha256:b", {}).status(), "View on top");
  expect_refused(sn_->Mounts("c0").status(), "Mounts of an existing container snapshot");
  expect_refused(sn_->Mounts("v0").status(), "Mounts of an existing view");
  expect_refused(sn_->Prepare("kc", "sha256:b", {{"containerd.io/snapshot.ref", "sha256:c"},
                                                 {"test/remote", "yes"}}).status(),
                 "Prepare of a new layer on top");
  // Nothing was created by the refused calls.
  EXPECT_EQ(sn_->Stat("c1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(sn_->Stat("v1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(sn_->Stat("sha256:c").status().code(), StatusCode::kNotFound);
  // Stat of a layer above is refused too: containerd's IsUnpacked and ApplyLayers Stat only an
  // image's top layer.
  expect_refused(sn_->Stat("sha256:b").status(), "Stat of the layer above");
  // The key is back: every use works again.
  Refuse("sha256:a", Status::Ok());
  EXPECT_TRUE(sn_->Stat("sha256:a").ok());
  EXPECT_TRUE(sn_->Prepare("c1", "sha256:b", {}).ok());
  EXPECT_TRUE(sn_->Mounts("c0").ok());
  EXPECT_EQ(sn_->Prepare("again", "", a_).status().code(), StatusCode::kAlreadyExists);
}

TEST_F(GateTest, QuarantinedLayerRefused) {
  const std::string q = "layer sha256:lb (snapshot sha256:b): quarantined: its content does not "
                        "match the diff_id its image claims";
  Refuse("sha256:b", Status::AuthFailed(q));
  EXPECT_EQ(sn_->Stat("sha256:b").status(), Status::FailedPrecondition(q));
  EXPECT_EQ(sn_->Prepare("c", "sha256:b", {}).status(), Status::FailedPrecondition(q));
  EXPECT_EQ(sn_->Prepare("x", "sha256:a", b_).status(), Status::FailedPrecondition(q));
  EXPECT_TRUE(sn_->Stat("sha256:a").ok()) << "the layer below is not quarantined";
}

TEST_F(GateTest, FailedRestoreFailsClosedAndIsRetriedOnUseAtMostOncePerInterval) {
  auto fresh = std::make_shared<FakeRemote>();
  fresh->restore_error = Status::PermissionDenied("layer sha256:la: no key on this node unwraps it");
  SnapshotterOptions o;
  o.root = root_;
  o.remote = fresh;
  o.overlay_index_off = false;
  o.restore_retry_interval = std::chrono::milliseconds(300);
  sn_.reset();
  auto opened = Snapshotter::Open(o);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  sn_ = std::move(*opened);
  EXPECT_EQ(fresh->restores.size(), 2u);
  // Never the empty directory under the snapshot: refused, naming the layer.
  auto st = sn_->Stat("sha256:a");
  EXPECT_EQ(st.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.status().message(), HasSubstr("sha256:la"));
  EXPECT_THAT(st.status().message(), HasSubstr("not mounted"));
  EXPECT_EQ(sn_->Prepare("c", "sha256:b", {}).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(sn_->Prepare("k", "", a_).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(fresh->restores.size(), 2u) << "retried within the interval";
  // The key is back: after the interval one use restores it.
  {
    std::lock_guard lock(fresh->mu);
    fresh->restore_error = Status::Ok();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(350));
  EXPECT_TRUE(sn_->Stat("sha256:a").ok());
  EXPECT_TRUE(sn_->Prepare("c", "sha256:b", {}).ok());
  EXPECT_EQ(fresh->restores.size(), 4u);  // a and b once more each
  EXPECT_TRUE(sn_->Stat("sha256:b").ok());
  EXPECT_EQ(fresh->restores.size(), 4u);
}

TEST_F(GateTest, PurgeRemovesRevokedAndQuarantinedLayersChildrenFirstAndKeepsThoseInUse) {
  Labels c = {{"containerd.io/snapshot.ref", "sha256:c"}, {"test/remote", "yes"}};
  ASSERT_EQ(sn_->Prepare("kc", "", c).status().code(), StatusCode::kAlreadyExists);
  ASSERT_TRUE(sn_->Prepare("container", "sha256:c", {}).ok());
  Layer("plain", "");
  Refuse("sha256:a", Status::PermissionDenied("layer sha256:la: no key"));
  Refuse("sha256:b", Status::AuthFailed("layer sha256:lb: quarantined"));
  Refuse("sha256:c", Status::PermissionDenied("layer sha256:lc: no key"));
  auto report = sn_->Purge();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_EQ(report->removed.size(), 2u);
  EXPECT_EQ(report->removed[0].snapshot, "sha256:b");  // the child before its parent
  EXPECT_EQ(report->removed[0].layer_digest, "sha256:layer-of-sha256:b");
  EXPECT_EQ(report->removed[0].reason, "layer sha256:lb: quarantined");
  EXPECT_EQ(report->removed[1].snapshot, "sha256:a");
  EXPECT_EQ(report->bytes_freed, 2000u);
  ASSERT_EQ(report->kept.size(), 1u);
  EXPECT_EQ(report->kept[0].snapshot, "sha256:c");
  EXPECT_THAT(report->kept[0].why_kept, HasSubstr("container"));
  EXPECT_THAT(remote_->purges, ElementsAre("sha256:b", "sha256:a"));
  EXPECT_EQ(sn_->Stat("sha256:a").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(Fs(1).parent_path()));
  EXPECT_FALSE(fs::exists(Fs(2).parent_path()));
  EXPECT_TRUE(sn_->Stat("plain").ok());
  // A layer refused for another reason (registry down) is not purged.
  Refuse("sha256:c", Status::Unavailable("layer sha256:lc: registry unreachable"));
  ASSERT_TRUE(sn_->Remove("container").ok());
  report = sn_->Purge();
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->removed.empty());
  EXPECT_TRUE(report->kept.empty());
}

}  // namespace
}  // namespace lazycrypt::snapshotter
