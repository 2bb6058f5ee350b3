#include "snapshotter/metadata_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include "common/file_io.h"

namespace lazycrypt::snapshotter {
namespace {

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

int64_t ToNanos(TimePoint t) { return t.time_since_epoch().count(); }
TimePoint FromNanos(int64_t ns) { return TimePoint(std::chrono::nanoseconds(ns)); }

// One prepared statement with typed binds and steps.
class Stmt {
 public:
  Stmt(sqlite3* db, StmtPtr s) : db_(db), s_(std::move(s)) {}
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(s_.get(), i, v);
    return *this;
  }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(s_.get(), i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindNull(int i) {
    sqlite3_bind_null(s_.get(), i);
    return *this;
  }
  // True when a row is available, false when done.
  Result<bool> Step() {
    int rc = sqlite3_step(s_.get());
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return Status::IoError(std::string("metadata store: ") + sqlite3_errmsg(db_));
  }
  Status Run() {
    auto r = Step();
    return r.ok() ? Status::Ok() : r.status();
  }
  int64_t Int(int col) const { return sqlite3_column_int64(s_.get(), col); }
  bool IsNull(int col) const { return sqlite3_column_type(s_.get(), col) == SQLITE_NULL; }
  std::string Text(int col) const {
    const auto* p = sqlite3_column_text(s_.get(), col);
    int n = sqlite3_column_bytes(s_.get(), col);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
  }

 private:
  sqlite3* db_;
  StmtPtr s_;
};

constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE snapshots (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  key TEXT NOT NULL UNIQUE,
  kind INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),
  parent_id INTEGER REFERENCES snapshots(id),
  created_ns INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL,
  size_bytes INTEGER NOT NULL DEFAULT 0,
  inodes INTEGER NOT NULL DEFAULT 0,
  remote INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX snapshots_parent ON snapshots(parent_id);
CREATE TABLE labels (
  snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (snapshot_id, name)
);
)sql";

constexpr const char* kSelectSnapshot =
    "SELECT s.id, s.key, s.kind, p.key, s.created_ns, s.updated_ns, s.size_bytes, s.inodes, "
    "s.remote FROM snapshots s LEFT JOIN snapshots p ON s.parent_id = p.id ";

class SqliteMetadataStore final : public MetadataStore {
 public:
  explicit SqliteMetadataStore(DbPtr db) : db_(std::move(db)) {}

  Status Init() {
    LC_RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL"));
    LC_RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL"));
    LC_RETURN_IF_ERROR(Exec("PRAGMA foreign_keys=ON"));
    sqlite3_busy_timeout(db_.get(), 5000);
    LC_ASSIGN_OR_RETURN(auto version, QueryInt("PRAGMA user_version"));
    if (version > kSchemaVersion) {
      return Status::Unsupported("metadata store schema version " + std::to_string(version) +
                                 " is newer than this binary's (" +
                                 std::to_string(kSchemaVersion) + ")");
    }
    if (version == kSchemaVersion) {
      // Sanity: it must be our database.
      LC_ASSIGN_OR_RETURN(auto n, QueryInt("SELECT count(*) FROM sqlite_master WHERE type='table' "
                                           "AND name IN ('snapshots','labels')"));
      if (n != 2) return Status::Corruption("metadata store: tables missing for schema version 1");
      return Status::Ok();
    }
    LC_ASSIGN_OR_RETURN(auto tables, QueryInt("SELECT count(*) FROM sqlite_master"));
    if (tables != 0) {
      return Status::Corruption("metadata store: database has tables but no lazycrypt schema");
    }
    return InTxn([&]() -> Status {
      LC_RETURN_IF_ERROR(Exec(kSchemaV1));
      return Exec("PRAGMA user_version = " + std::to_string(kSchemaVersion));
    });
  }

  class SqliteTransaction final : public Transaction {
   public:
    explicit SqliteTransaction(SqliteMetadataStore* store) : store_(store) {}
    ~SqliteTransaction() override {
      if (!done_) {
        (void)store_->Exec("ROLLBACK");
        store_->in_txn_ = false;
      }
    }
    Status Commit() override {
      if (done_) return Status::FailedPrecondition("transaction already finished");
      done_ = true;
      store_->in_txn_ = false;
      Status s = store_->Exec("COMMIT");
      if (!s.ok()) (void)store_->Exec("ROLLBACK");
      return s;
    }

   private:
    SqliteMetadataStore* store_;
    bool done_ = false;
  };

  Result<std::unique_ptr<Transaction>> Begin() override {
    if (in_txn_) return Status::Internal("metadata store: nested transaction");
    LC_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    in_txn_ = true;
    return std::unique_ptr<Transaction>(new SqliteTransaction(this));
  }

  Result<SnapshotRecord> Get(const std::string& key) override {
    LC_ASSIGN_OR_RETURN(auto rec, Find(key));
    if (!rec) return Status::NotFound("snapshot " + key + " does not exist");
    return *std::move(rec);
  }

  Result<std::vector<int64_t>> ParentIds(const std::string& key) override {
    LC_ASSIGN_OR_RETURN(auto st, Prepare(
        "WITH RECURSIVE chain(id, parent_id, depth) AS ("
        " SELECT id, parent_id, 0 FROM snapshots WHERE key = ?1"
        " UNION ALL SELECT s.id, s.parent_id, c.depth + 1 FROM snapshots s"
        " JOIN chain c ON s.id = c.parent_id)"
        " SELECT id FROM chain WHERE depth > 0 ORDER BY depth"));
    st.Bind(1, key);
    std::vector<int64_t> ids;
    for (;;) {
      LC_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      ids.push_back(st.Int(0));
    }
    return ids;
  }

  Result<std::vector<std::string>> Children(const std::string& key) override {
    LC_ASSIGN_OR_RETURN(auto st, Prepare(
        "SELECT c.key FROM snapshots c JOIN snapshots p ON c.parent_id = p.id WHERE p.key = ?1 "
        "ORDER BY c.key"));
    st.Bind(1, key);
    std::vector<std::string> out;
    for (;;) {
      LC_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out.push_back(st.Text(0));
    }
    return out;
  }

  Result<int64_t> IdOf(const std::string& key) override {
    LC_ASSIGN_OR_RETURN(auto st, Prepare("SELECT id FROM snapshots WHERE key = ?1"));
    st.Bind(1, key);
    LC_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return Status::NotFound("snapshot " + key + " does not exist");
    return st.Int(0);
  }

  Result<std::vector<int64_t>> AllIds() override {
    LC_ASSIGN_OR_RETURN(auto st, Prepare("SELECT id FROM snapshots ORDER BY id"));
    std::vector<int64_t> ids;
    for (;;) {
      LC_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      ids.push_back(st.Int(0));
    }
    return ids;
  }

  Result<std::vector<SnapshotRecord>> List() override {
    LC_ASSIGN_OR_RETURN(auto st, Prepare(std::string(kSelectSnapshot) + "ORDER BY s.key"));
    std::vector<SnapshotRecord> out;
    for (;;) {
      LC_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out.push_back(RowToRecord(st));
    }
    for (auto& rec : out) {
      LC_ASSIGN_OR_RETURN(rec.info.labels, LabelsOf(rec.id));
    }
    return out;
  }

  Result<SnapshotRecord> Create(SnapshotKind kind, const std::string& key,
                                const std::string& parent, const Labels& labels,
                                TimePoint now) override {
    if (kind != SnapshotKind::kActive && kind != SnapshotKind::kView) {
      return Status::InvalidArgument("snapshot type " + std::string(SnapshotKindName(kind)) +
                                     " invalid; only snapshots of type Active or View can be "
                                     "created");
    }
    if (key.empty()) return Status::InvalidArgument("snapshot key must not be empty");
    SnapshotRecord rec;
    LC_RETURN_IF_ERROR(InTxn([&]() -> Status {
      std::optional<int64_t> parent_id;
      if (!parent.empty()) {
        LC_ASSIGN_OR_RETURN(auto p, Find(parent));
        if (!p) return Status::NotFound("missing parent \"" + parent + "\" bucket");
        if (p->info.kind != SnapshotKind::kCommitted) {
          return Status::InvalidArgument("parent \"" + parent + "\" is not committed snapshot");
        }
        parent_id = p->id;
      }
      LC_ASSIGN_OR_RETURN(auto existing, Find(key));
      if (existing) return Status::AlreadyExists("snapshot " + key);
      LC_ASSIGN_OR_RETURN(auto st, Prepare(
          "INSERT INTO snapshots (key, kind, parent_id, created_ns, updated_ns) "
          "VALUES (?1, ?2, ?3, ?4, ?4)"));
      st.Bind(1, key).Bind(2, static_cast<int64_t>(kind)).Bind(4, ToNanos(now));
      if (parent_id) st.Bind(3, *parent_id); else st.BindNull(3);
      LC_RETURN_IF_ERROR(st.Run());
      int64_t id = sqlite3_last_insert_rowid(db_.get());
      LC_RETURN_IF_ERROR(WriteLabels(id, labels));
      LC_ASSIGN_OR_RETURN(rec, Get(key));
      return Status::Ok();
    }));
    return rec;
  }

  Result<SnapshotRecord> CommitActive(const std::string& key, const std::string& name,
                                      const SnapshotUsage& usage, const Labels& labels,
                                      bool remote, TimePoint now) override {
    if (name.empty()) return Status::InvalidArgument("committed snapshot name must not be empty");
    SnapshotRecord rec;
    LC_RETURN_IF_ERROR(InTxn([&]() -> Status {
      LC_ASSIGN_OR_RETURN(auto taken, Find(name));
      if (taken) return Status::AlreadyExists("committed snapshot " + name + ": already exists");
      LC_ASSIGN_OR_RETURN(auto active, Find(key));
      if (!active) return Status::NotFound("failed to get active snapshot \"" + key + "\"");
      if (active->info.kind != SnapshotKind::kActive) {
        return Status::FailedPrecondition("snapshot \"" + key + "\" is not active");
      }
      LC_ASSIGN_OR_RETURN(auto st, Prepare(
          "UPDATE snapshots SET key = ?2, kind = ?3, created_ns = ?4, updated_ns = ?4, "
          "size_bytes = ?5, inodes = ?6, remote = ?7 WHERE id = ?1"));
      st.Bind(1, active->id).Bind(2, name).Bind(3, static_cast<int64_t>(SnapshotKind::kCommitted))
          .Bind(4, ToNanos(now)).Bind(5, usage.size_bytes).Bind(6, usage.inodes)
          .Bind(7, static_cast<int64_t>(remote ? 1 : 0));
      LC_RETURN_IF_ERROR(st.Run());
      LC_RETURN_IF_ERROR(WriteLabels(active->id, labels));
      LC_ASSIGN_OR_RETURN(rec, Get(name));
      return Status::Ok();
    }));
    return rec;
  }

  Result<SnapshotRecord> Remove(const std::string& key) override {
    SnapshotRecord rec;
    LC_RETURN_IF_ERROR(InTxn([&]() -> Status {
      LC_ASSIGN_OR_RETURN(auto found, Find(key));
      if (!found) return Status::NotFound("snapshot " + key + " does not exist");
      rec = *std::move(found);
      LC_ASSIGN_OR_RETURN(auto kids, Prepare("SELECT count(*) FROM snapshots WHERE parent_id = ?1"));
      kids.Bind(1, rec.id);
      LC_ASSIGN_OR_RETURN(bool row, kids.Step());
      if (row && kids.Int(0) > 0) {
        return Status::FailedPrecondition("cannot remove snapshot " + key + " with child");
      }
      LC_ASSIGN_OR_RETURN(auto del, Prepare("DELETE FROM snapshots WHERE id = ?1"));
      del.Bind(1, rec.id);
      return del.Run();
    }));
    return rec;
  }

  Result<SnapshotInfo> UpdateInfo(const SnapshotInfo& info,
                                  const std::vector<std::string>& field_paths,
                                  TimePoint now) override {
    SnapshotInfo updated;
    LC_RETURN_IF_ERROR(InTxn([&]() -> Status {
      LC_ASSIGN_OR_RETURN(auto found, Find(info.name));
      if (!found) return Status::NotFound("snapshot " + info.name + " does not exist");
      updated = found->info;
      if (field_paths.empty()) {
        updated.labels = info.labels;
      } else {
        for (const auto& path : field_paths) {
          if (path.rfind("labels.", 0) == 0) {
            std::string k = path.substr(7);
            auto it = info.labels.find(k);
            if (it == info.labels.end() || it->second.empty()) {
              updated.labels.erase(k);
            } else {
              updated.labels[k] = it->second;
            }
          } else if (path == "labels") {
            updated.labels = info.labels;
          } else {
            return Status::InvalidArgument("cannot update \"" + path + "\" field on snapshot \"" +
                                           info.name + "\"");
          }
        }
      }
      std::erase_if(updated.labels, [](const auto& kv) { return kv.second.empty(); });
      updated.updated = now;
      LC_ASSIGN_OR_RETURN(auto st, Prepare("UPDATE snapshots SET updated_ns = ?2 WHERE id = ?1"));
      st.Bind(1, found->id).Bind(2, ToNanos(now));
      LC_RETURN_IF_ERROR(st.Run());
      return WriteLabels(found->id, updated.labels);
    }));
    return updated;
  }

 private:
  Status Exec(const std::string& sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_.get(), sql.c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      return Status::IoError("metadata store: " + msg);
    }
    return Status::Ok();
  }

  Result<Stmt> Prepare(const std::string& sql) {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v2(db_.get(), sql.c_str(), -1, &raw, nullptr);
    StmtPtr s(raw);
    if (rc != SQLITE_OK) {
      return Status::Internal(std::string("metadata store: preparing SQL: ") +
                              sqlite3_errmsg(db_.get()));
    }
    return Stmt(db_.get(), std::move(s));
  }

  Result<int64_t> QueryInt(const std::string& sql) {
    LC_ASSIGN_OR_RETURN(auto st, Prepare(sql));
    LC_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return Status::Internal("metadata store: no row for " + sql);
    return st.Int(0);
  }

  // Runs fn in the open transaction, or in a new one committed on success.
  template <typename Fn>
  Status InTxn(Fn&& fn) {
    if (in_txn_) return fn();
    LC_ASSIGN_OR_RETURN(auto txn, Begin());
    LC_RETURN_IF_ERROR(fn());
    return txn->Commit();
  }

  static SnapshotRecord RowToRecord(const Stmt& st) {
    SnapshotRecord rec;
    rec.id = st.Int(0);
    rec.info.name = st.Text(1);
    rec.info.kind = static_cast<SnapshotKind>(st.Int(2));
    rec.info.parent = st.IsNull(3) ? std::string() : st.Text(3);
    rec.info.created = FromNanos(st.Int(4));
    rec.info.updated = FromNanos(st.Int(5));
    rec.usage.size_bytes = st.Int(6);
    rec.usage.inodes = st.Int(7);
    rec.remote = st.Int(8) != 0;
    return rec;
  }

  Result<std::optional<SnapshotRecord>> Find(const std::string& key) {
    LC_ASSIGN_OR_RETURN(auto st, Prepare(std::string(kSelectSnapshot) + "WHERE s.key = ?1"));
    st.Bind(1, key);
    LC_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return std::optional<SnapshotRecord>();
    SnapshotRecord rec = RowToRecord(st);
    LC_ASSIGN_OR_RETURN(rec.info.labels, LabelsOf(rec.id));
    return std::optional<SnapshotRecord>(std::move(rec));
  }

  Result<Labels> LabelsOf(int64_t id) {
    LC_ASSIGN_OR_RETURN(auto st, Prepare("SELECT name, value FROM labels WHERE snapshot_id = ?1"));
    st.Bind(1, id);
    Labels labels;
    for (;;) {
      LC_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      labels[st.Text(0)] = st.Text(1);
    }
    return labels;
  }

  // Replaces the labels of `id` (empty values are not stored, as in containerd).
  Status WriteLabels(int64_t id, const Labels& labels) {
    LC_ASSIGN_OR_RETURN(auto del, Prepare("DELETE FROM labels WHERE snapshot_id = ?1"));
    del.Bind(1, id);
    LC_RETURN_IF_ERROR(del.Run());
    for (const auto& [k, v] : labels) {
      if (v.empty()) continue;
      LC_ASSIGN_OR_RETURN(auto ins,
                          Prepare("INSERT INTO labels (snapshot_id, name, value) VALUES (?1,?2,?3)"));
      ins.Bind(1, id).Bind(2, k).Bind(3, v);
      LC_RETURN_IF_ERROR(ins.Run());
    }
    return Status::Ok();
  }

  DbPtr db_;
  bool in_txn_ = false;
};

}  // namespace

Result<std::unique_ptr<MetadataStore>> MetadataStore::Open(const std::filesystem::path& path) {
  // Create the file 0600 ourselves so sqlite never creates it with the umask's mode.
  {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd.valid()) return ErrnoStatus("metadata store " + path.string());
  }
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  DbPtr db(raw);
  if (rc != SQLITE_OK) {
    return Status::IoError("metadata store " + path.string() + ": " +
                           (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  auto store = std::make_unique<SqliteMetadataStore>(std::move(db));
  Status s = store->Init();
  if (!s.ok()) {
    if (s.message().find("file is not a database") != std::string::npos) {
      return Status::Corruption("metadata store " + path.string() + ": not a database");
    }
    return s.WithContext("metadata store " + path.string());
  }
  return std::unique_ptr<MetadataStore>(std::move(store));
}

std::string_view SnapshotKindName(SnapshotKind kind) {
  switch (kind) {
    case SnapshotKind::kView: return "view";
    case SnapshotKind::kActive: return "active";
    case SnapshotKind::kCommitted: return "committed";
    default: return "unknown";
  }
}

}  // namespace lazycrypt::snapshotter
