// MetadataStore: the snapshotter's crash-safe metadata (sqlite3, WAL, synchronous=FULL). One row
// per snapshot, keyed by its key/name, with a numeric ID that is never reused (the ID names the
// snapshot's directory), kind, parent, labels, timestamps, usage and a "remote" mark. Every
// multi-row change runs in one transaction, so after a crash (kill -9) the store is the state of
// the last committed transaction. Semantics and error kinds follow containerd's
// snapshots/storage (bolt.go), which its overlayfs snapshotter uses.
//
// Thread-safety: NOT thread-safe; the owner serializes calls (Snapshotter holds a mutex).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "snapshotter/types.h"

namespace lazycrypt::snapshotter {

// One snapshot as stored.
struct SnapshotRecord {
  int64_t id = 0;
  SnapshotInfo info;
  SnapshotUsage usage;   // set on commit; zero for active/view snapshots
  bool remote = false;   // committed from a remote layer (RemoteLayerHandler)
};

class MetadataStore {
 public:
  // The schema version this binary writes (sqlite user_version).
  static constexpr int kSchemaVersion = 1;

  // Opens (creating if needed, mode 0600) the database at `path` and migrates the schema.
  // Unsupported if the file's schema is newer than kSchemaVersion; Corruption if it is not a
  // lazycrypt metadata database.
  static Result<std::unique_ptr<MetadataStore>> Open(const std::filesystem::path& path);

  virtual ~MetadataStore() = default;

  // An explicit transaction spanning several calls (e.g. a row insert and the directory rename
  // that must happen with it). Rolled back on destruction unless Commit() succeeded. While one
  // is open, the store's methods run inside it instead of opening their own. Do not nest.
  class Transaction {
   public:
    virtual ~Transaction() = default;
    virtual Status Commit() = 0;
  };
  virtual Result<std::unique_ptr<Transaction>> Begin() = 0;

  // NotFound "snapshot <key> does not exist".
  virtual Result<SnapshotRecord> Get(const std::string& key) = 0;
  // IDs of the parent chain of `key`'s snapshot, nearest first (empty without parent).
  virtual Result<std::vector<int64_t>> ParentIds(const std::string& key) = 0;
  // Names of the direct children of `key`.
  virtual Result<std::vector<std::string>> Children(const std::string& key) = 0;
  // name -> id; NotFound if absent.
  virtual Result<int64_t> IdOf(const std::string& key) = 0;
  // Every ID in the store.
  virtual Result<std::vector<int64_t>> AllIds() = 0;
  // Every snapshot, ordered by name.
  virtual Result<std::vector<SnapshotRecord>> List() = 0;

  // Creates an active or view snapshot. InvalidArgument for another kind, an empty key or a
  // parent that is not committed; NotFound for a missing parent; AlreadyExists for a taken key.
  virtual Result<SnapshotRecord> Create(SnapshotKind kind, const std::string& key,
                                        const std::string& parent, const Labels& labels,
                                        TimePoint now) = 0;
  // Turns active `key` into committed `name` (same ID; labels replaced, not inherited; created =
  // updated = now; children's parent name follows). AlreadyExists if `name` exists; NotFound if
  // `key` does not; FailedPrecondition if it is not active.
  virtual Result<SnapshotRecord> CommitActive(const std::string& key, const std::string& name,
                                              const SnapshotUsage& usage, const Labels& labels,
                                              bool remote, TimePoint now) = 0;
  // Removes `key`. NotFound if absent; FailedPrecondition if it has children. Returns the
  // removed record.
  virtual Result<SnapshotRecord> Remove(const std::string& key) = 0;
  // containerd's UpdateInfo: field paths "labels" (replace all) and "labels.<k>" (set/delete one;
  // an empty or missing value deletes); no paths = replace labels. InvalidArgument for any other
  // path; NotFound if absent. Labels with empty values are never stored.
  virtual Result<SnapshotInfo> UpdateInfo(const SnapshotInfo& info,
                                          const std::vector<std::string>& field_paths,
                                          TimePoint now) = 0;
};

}  // namespace lazycrypt::snapshotter
