#include "snapshotter/metadata_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <set>

#include "snapshotter/test_util.h"

namespace lazycrypt::snapshotter {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;

TimePoint T(int64_t ns) { return TimePoint(std::chrono::nanoseconds(ns)); }

class MetadataStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty());
    db_ = tmp_.path() / "metadata.db";
    auto s = MetadataStore::Open(db_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }
  testing::ScopedTempDir tmp_;
  fs::path db_;
  std::unique_ptr<MetadataStore> store_;
};

int SqliteUserVersion(const fs::path& db) {
  sqlite3* h = nullptr;
  sqlite3_open(db.c_str(), &h);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, nullptr);
  int v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
  sqlite3_finalize(st);
  sqlite3_close(h);
  return v;
}

void SqliteExec(const fs::path& db, const char* sql) {
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(h, sql, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(h);
  sqlite3_close(h);
}

TEST_F(MetadataStoreTest, FileIsPrivateWalAndVersioned) {
  struct stat st;
  ASSERT_EQ(stat(db_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(SqliteUserVersion(db_), MetadataStore::kSchemaVersion);
  EXPECT_TRUE(fs::exists(tmp_.path() / "metadata.db-wal"));
}

TEST_F(MetadataStoreTest, CreateGetParentsChildren) {
  auto a = store_->Create(SnapshotKind::kActive, "a", "", {{"k", "v"}, {"empty", ""}}, T(5));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->id, 1);
  EXPECT_EQ(a->info.labels, (Labels{{"k", "v"}}));
  EXPECT_EQ(a->info.created, T(5));
  ASSERT_TRUE(store_->CommitActive("a", "A", {100, 3}, {{"c", "1"}}, false, T(7)).ok());
  auto b = store_->Create(SnapshotKind::kActive, "b", "A", {}, T(8));
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(store_->CommitActive("b", "B", {}, {}, true, T(9)).ok());
  ASSERT_TRUE(store_->Create(SnapshotKind::kView, "v", "B", {}, T(10)).ok());
  ASSERT_TRUE(store_->Create(SnapshotKind::kActive, "w", "A", {}, T(10)).ok());

  EXPECT_THAT(*store_->ParentIds("v"), ElementsAre(2, 1));
  EXPECT_THAT(*store_->ParentIds("A"), ElementsAre());
  EXPECT_THAT(*store_->Children("A"), ElementsAre("B", "w"));
  EXPECT_THAT(*store_->Children("v"), ElementsAre());
  EXPECT_EQ(*store_->IdOf("B"), 2);
  EXPECT_EQ(store_->IdOf("a").status().code(), StatusCode::kNotFound);
  auto A = store_->Get("A");
  ASSERT_TRUE(A.ok());
  EXPECT_EQ(A->info.kind, SnapshotKind::kCommitted);
  EXPECT_EQ(A->info.created, T(7));
  EXPECT_EQ(A->info.updated, T(7));
  EXPECT_EQ(A->usage, (SnapshotUsage{100, 3}));
  EXPECT_FALSE(A->remote);
  EXPECT_TRUE(store_->Get("B")->remote);
  EXPECT_EQ(store_->Get("B")->info.parent, "A");
  EXPECT_THAT(*store_->AllIds(), ElementsAre(1, 2, 3, 4));
  auto all = store_->List();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 4u);
  EXPECT_EQ((*all)[0].info.name, "A");
  EXPECT_EQ((*all)[0].info.labels, (Labels{{"c", "1"}}));
}

TEST_F(MetadataStoreTest, ErrorsMatchContainerdStorage) {
  EXPECT_EQ(store_->Create(SnapshotKind::kCommitted, "x", "", {}, T(1)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Create(SnapshotKind::kActive, "", "", {}, T(1)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Create(SnapshotKind::kActive, "x", "missing", {}, T(1)).status().code(),
            StatusCode::kNotFound);
  ASSERT_TRUE(store_->Create(SnapshotKind::kActive, "x", "", {}, T(1)).ok());
  EXPECT_EQ(store_->Create(SnapshotKind::kView, "x", "", {}, T(1)).status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->Create(SnapshotKind::kView, "y", "x", {}, T(1)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CommitActive("nope", "n", {}, {}, false, T(2)).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store_->CommitActive("x", "x", {}, {}, false, T(2)).status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->Remove("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->UpdateInfo({"nope", "", SnapshotKind::kActive, {}, {}, {}}, {}, T(3))
                .status()
                .code(),
            StatusCode::kNotFound);
}

TEST_F(MetadataStoreTest, CommitRenamesChildrenParentAndKeepsId) {
  ASSERT_TRUE(store_->Create(SnapshotKind::kActive, "a", "", {}, T(1)).ok());
  ASSERT_TRUE(store_->CommitActive("a", "A", {}, {}, false, T(2)).ok());
  ASSERT_TRUE(store_->Create(SnapshotKind::kActive, "b", "A", {}, T(3)).ok());
  EXPECT_EQ(store_->Remove("A").status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(store_->Get("A").ok());
  auto removed = store_->Remove("b");
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(removed->id, 2);
  ASSERT_TRUE(store_->Remove("A").ok());
  // AUTOINCREMENT: removed IDs never come back.
  auto c = store_->Create(SnapshotKind::kActive, "c", "", {}, T(4));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->id, 3);
}

TEST_F(MetadataStoreTest, ExplicitTransactionRollsBackOnDestruction) {
  {
    auto txn = store_->Begin();
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE(store_->Create(SnapshotKind::kActive, "a", "", {{"k", "v"}}, T(1)).ok());
    EXPECT_TRUE(store_->Get("a").ok());  // visible inside
    EXPECT_EQ(store_->Begin().status().code(), StatusCode::kInternal);  // no nesting
  }
  EXPECT_EQ(store_->Get("a").status().code(), StatusCode::kNotFound);
  {
    auto txn = store_->Begin();
    ASSERT_TRUE(store_->Create(SnapshotKind::kActive, "b", "", {}, T(1)).ok());
    ASSERT_TRUE((*txn)->Commit().ok());
    EXPECT_EQ((*txn)->Commit().code(), StatusCode::kFailedPrecondition);
  }
  EXPECT_TRUE(store_->Get("b").ok());
  // A failed step inside a method's own transaction leaves no partial rows.
  EXPECT_FALSE(store_->CommitActive("b", "b", {}, {{"x", "y"}}, false, T(2)).ok());
  EXPECT_EQ(store_->Get("b")->info.kind, SnapshotKind::kActive);
  EXPECT_TRUE(store_->Get("b")->info.labels.empty());
}

TEST_F(MetadataStoreTest, ReopenKeepsEverything) {
  ASSERT_TRUE(store_->Create(SnapshotKind::kActive, "a", "", {{"k", "v"}}, T(11)).ok());
  ASSERT_TRUE(store_->CommitActive("a", "A", {7, 1}, {{"x", "y"}}, true, T(12)).ok());
  ASSERT_TRUE(store_->Create(SnapshotKind::kView, "v", "A", {}, T(13)).ok());
  auto before = store_->List();
  store_.reset();
  auto reopened = MetadataStore::Open(db_);
  ASSERT_TRUE(reopened.ok());
  auto after = (*reopened)->List();
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), before->size());
  for (size_t i = 0; i < after->size(); ++i) {
    EXPECT_EQ((*after)[i].id, (*before)[i].id);
    EXPECT_EQ((*after)[i].info, (*before)[i].info);
    EXPECT_EQ((*after)[i].usage, (*before)[i].usage);
    EXPECT_EQ((*after)[i].remote, (*before)[i].remote);
  }
}

TEST_F(MetadataStoreTest, RefusesNewerSchemaAndForeignDatabases) {
  store_.reset();
  SqliteExec(db_, "PRAGMA user_version = 2");
  auto newer = MetadataStore::Open(db_);
  EXPECT_EQ(newer.status().code(), StatusCode::kUnsupported);
  EXPECT_THAT(newer.status().message(), ::testing::HasSubstr("version 2"));

  const fs::path foreign = tmp_.path() / "foreign.db";
  SqliteExec(foreign, "CREATE TABLE t (x)");
  EXPECT_EQ(MetadataStore::Open(foreign).status().code(), StatusCode::kCorruption);

  const fs::path garbage = tmp_.path() / "garbage.db";
  std::ofstream(garbage) << std::string(8192, 'G');
  auto g = MetadataStore::Open(garbage);
  EXPECT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), ::testing::HasSubstr("garbage.db"));
}

// A writer killed with SIGKILL in the middle of a stream of transactions leaves a store that
// opens, passes sqlite's integrity check and holds only whole transactions: every snapshot has
// its labels and an existing parent.
TEST_F(MetadataStoreTest, ConsistentAfterKill9) {
  store_.reset();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto s = MetadataStore::Open(db_);
    if (!s.ok()) _exit(3);
    std::string parent;
    for (int i = 0;; ++i) {
      std::string key = "k" + std::to_string(i);
      if (!(*s)->Create(SnapshotKind::kActive, key, parent, {{"n", key}, {"m", "2"}}, T(i)).ok())
        _exit(4);
      if (!(*s)->CommitActive(key, "c" + std::to_string(i), {i, 1}, {{"n", key}, {"m", "2"}},
                              false, T(i)).ok())
        _exit(5);
      parent = "c" + std::to_string(i);
    }
  }
  // Let it write for a while, then kill it mid-stream.
  usleep(400 * 1000);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "writer exited early with " << WEXITSTATUS(status);

  auto s = MetadataStore::Open(db_);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  auto all = (*s)->List();
  ASSERT_TRUE(all.ok());
  ASSERT_GT(all->size(), 2u) << "writer made no progress";
  std::set<std::string> names;
  for (const auto& r : *all) names.insert(r.info.name);
  for (const auto& r : *all) {
    EXPECT_EQ(r.info.labels.size(), 2u) << r.info.name;
    if (!r.info.parent.empty()) {
      EXPECT_TRUE(names.count(r.info.parent)) << r.info.name;
    }
    EXPECT_EQ(r.info.kind == SnapshotKind::kCommitted, r.info.name[0] == 'c') << r.info.name;
  }
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db_.c_str(), &h), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, nullptr);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "ok");
  sqlite3_finalize(st);
  sqlite3_prepare_v2(h, "PRAGMA foreign_key_check", -1, &st, nullptr);
  EXPECT_EQ(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  sqlite3_close(h);
}

}  // namespace
}  // namespace lazycrypt::snapshotter
