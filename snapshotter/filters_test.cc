#include "snapshotter/filters.h"

#include <gtest/gtest.h>

namespace lazycrypt::snapshotter {
namespace {

SnapshotInfo Info() {
  SnapshotInfo i;
  i.name = "sha256:abc";
  i.parent = "sha256:def";
  i.kind = SnapshotKind::kCommitted;
  i.labels = {{"containerd.io/snapshot.ref", "sha256:abc"},
              {"containerd.io/gc.root", "2024"},
              {"team", "a b"},
              {"plain", "x"}};
  return i;
}

bool M(const std::vector<std::string>& f, const SnapshotInfo& i = Info()) {
  auto p = SnapshotFilter::Parse(f);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return p.ok() && p->Match(i);
}

TEST(SnapshotFilter, FieldsAndOperators) {
  EXPECT_TRUE(M({}));
  EXPECT_TRUE(M({"name==sha256:abc"}));
  EXPECT_FALSE(M({"name==sha256:ab"}));
  EXPECT_TRUE(M({"parent==\"sha256:def\""}));
  EXPECT_TRUE(M({"kind==committed"}));
  EXPECT_FALSE(M({"kind==active"}));
  EXPECT_TRUE(M({"labels.plain"}));
  EXPECT_FALSE(M({"labels.missing"}));
  EXPECT_TRUE(M({"labels.\"containerd.io/snapshot.ref\""}));
  EXPECT_TRUE(M({"labels.\"containerd.io/gc.root\"==2024"}));
  EXPECT_TRUE(M({"labels.team==\"a b\""}));
  EXPECT_TRUE(M({"labels.missing!=x"}));  // absent counts as "" for !=
  EXPECT_FALSE(M({"labels.plain!=x"}));
  EXPECT_TRUE(M({"labels.plain~=^x$"}));
  EXPECT_TRUE(M({"name~=/abc$/"}));
  EXPECT_FALSE(M({"name~=^abc"}));
  EXPECT_TRUE(M({" name == sha256:abc , kind==committed "}));
  EXPECT_FALSE(M({"name==sha256:abc,kind==view"}));
  EXPECT_TRUE(M({"kind==view", "kind==committed"}));
  EXPECT_FALSE(M({"unknownfield"}));
  EXPECT_FALSE(M({"labels"}));
}

// The filter containerd's metadata layer sends after a remote Prepare answered ALREADY_EXISTS
// (metadata/snapshot.go: labels."containerd.io/snapshot.ref"==%s,parent==%q).
TEST(SnapshotFilter, ContainerdTargetLookup) {
  EXPECT_TRUE(M({"labels.\"containerd.io/snapshot.ref\"==sha256:abc,parent==\"sha256:def\""}));
  EXPECT_FALSE(M({"labels.\"containerd.io/snapshot.ref\"==sha256:abc,parent==\"\""}));
  SnapshotInfo bottom = Info();
  bottom.parent.clear();
  EXPECT_TRUE(M({"labels.\"containerd.io/snapshot.ref\"==sha256:abc,parent==\"\""}, bottom));
  EXPECT_FALSE(M({"labels.\"containerd.io/snapshot.ref\"==sha256:abd,parent==\"\""}, bottom));
}

TEST(SnapshotFilter, RejectsMalformedFilters) {
  for (const char* bad : {"name==", "==x", "name=x", "name==a,", ",", "labels.\"open",
                          "name~=[", "name==a b", "labels.\"a\\q\"==1"}) {
    auto p = SnapshotFilter::Parse({bad});
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << bad;
    if (!p.ok()) {
      EXPECT_NE(p.status().message().find("filter"), std::string::npos) << bad;
    }
  }
}

}  // namespace
}  // namespace lazycrypt::snapshotter
