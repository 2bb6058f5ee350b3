#include "snapshotter/snapshotter.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <system_error>
#include <unordered_set>

#include "common/file_io.h"
#include "snapshotter/filters.h"
#include "snapshotter/metadata_store.h"

namespace lazycrypt::snapshotter {
namespace fs = std::filesystem;
namespace {

TimePoint Now() {
  return std::chrono::time_point_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now());
}

// containerd's labels.Validate.
Status ValidateLabels(const Labels& labels) {
  for (const auto& [k, v] : labels) {
    if (k.size() + v.size() > kMaxLabelBytes) {
      return Status::InvalidArgument("label key and value greater than maximum size (4096 bytes), "
                                     "key: " + k.substr(0, 10));
    }
  }
  return Status::Ok();
}

Status MakeDir(const fs::path& p, mode_t mode) {
  if (::mkdir(p.c_str(), mode) != 0) return ErrnoStatus("mkdir " + p.string());
  if (::chmod(p.c_str(), mode) != 0) return ErrnoStatus("chmod " + p.string());  // despite umask
  return Status::Ok();
}

// Removes a snapshot's directory without descending into other filesystems (a remote layer
// still mounted, a leftover mount: the removal fails instead of deleting its contents) and
// without following a link a container left in its upper directory (common/file_io.h).
Status RemoveTree(const fs::path& p) { return RemoveTreeAt(AT_FDCWD, p.string()); }

class SnapshotterImpl final : public Snapshotter {
 public:
  SnapshotterImpl(SnapshotterOptions options, std::unique_ptr<MetadataStore> store, bool index_off)
      : options_(std::move(options)), store_(std::move(store)), index_off_(index_off) {}

  fs::path SnapshotDir(int64_t id) const override {
    return options_.root / "snapshots" / std::to_string(id);
  }
  fs::path FsDir(int64_t id) const { return SnapshotDir(id) / "fs"; }
  fs::path WorkDir(int64_t id) const { return SnapshotDir(id) / "work"; }

  void Log(LogLevel level, const std::string& msg) const {
    if (options_.log) options_.log(level, msg);
  }

  Status RestoreRemote() {
    std::vector<SnapshotRecord> all;
    {
      std::lock_guard lock(mu_);
      LC_ASSIGN_OR_RETURN(all, store_->List());
    }
    for (const auto& rec : all) {
      if (!rec.remote || rec.info.kind != SnapshotKind::kCommitted) continue;
      if (!options_.remote) {
        Log(LogLevel::kWarn, "remote snapshot " + rec.info.name +
                                 " cannot be restored: no remote layer handler configured");
        continue;
      }
      RestoreRequest req{rec.info.name, rec.info.parent, rec.info.labels, FsDir(rec.id), rec.id};
      Status s = options_.remote->Restore(req);
      if (!s.ok()) {
        // Fail closed: until a later use restores it, every use is refused with this error
        // (the directory under it is empty: serving it would hide the layer's files and bring
        // back the files its whiteouts deleted).
        Log(LogLevel::kWarn, "failed to restore remote snapshot " + rec.info.name + " (id " +
                                 std::to_string(rec.id) + "): " + s.ToString() +
                                 "; it is refused until a later use restores it");
        std::lock_guard lock(mu_);
        unavailable_[rec.id] = Unavailable{NotMounted(rec, s), std::chrono::steady_clock::now()};
      } else {
        Log(LogLevel::kInfo, "restored remote snapshot " + rec.info.name);
      }
    }
    // What a previous daemon left and no snapshot claimed can go now.
    if (options_.remote) options_.remote->RestoreFinished();
    return Status::Ok();
  }

  Result<std::vector<Mount>> Prepare(const std::string& key, const std::string& parent,
                                     const Labels& labels) override {
    auto target = labels.find(std::string(kTargetSnapshotLabel));
    // Containers (and plain layers unpacked on top) see every layer below: each must be usable.
    LC_RETURN_IF_ERROR(AuthorizeChainOf(parent));
    if (target == labels.end() || !options_.remote) {
      return CreateSnapshot(SnapshotKind::kActive, key, parent, labels);
    }
    return PrepareRemote(key, parent, labels, target->second);
  }

  Result<std::vector<Mount>> View(const std::string& key, const std::string& parent,
                                  const Labels& labels) override {
    LC_RETURN_IF_ERROR(AuthorizeChainOf(parent));
    return CreateSnapshot(SnapshotKind::kView, key, parent, labels);
  }

  Result<std::vector<Mount>> Mounts(const std::string& key) override {
    SnapshotRecord rec;
    std::vector<int64_t> parents;
    {
      std::lock_guard lock(mu_);
      LC_ASSIGN_OR_RETURN(rec, store_->Get(key));
      if (rec.info.kind != SnapshotKind::kActive && rec.info.kind != SnapshotKind::kView) {
        return Status::FailedPrecondition("requested snapshot " + key + " not active or view");
      }
      LC_ASSIGN_OR_RETURN(parents, store_->ParentIds(key));
    }
    LC_RETURN_IF_ERROR(AuthorizeChainOf(rec.info.parent));
    return MountsFor(rec.id, rec.info.kind, parents);
  }

  Status Commit(const std::string& name, const std::string& key, const Labels& labels) override {
    LC_RETURN_IF_ERROR(ValidateLabels(labels));
    std::lock_guard lock(mu_);
    LC_ASSIGN_OR_RETURN(auto rec, store_->Get(key));
    LC_ASSIGN_OR_RETURN(auto usage, DiskUsage(FsDir(rec.id)));
    auto committed = store_->CommitActive(key, name, usage, labels, /*remote=*/false, Now());
    if (!committed.ok()) {
      return committed.status().WithContext("failed to commit snapshot " + key);
    }
    return Status::Ok();
  }

  Status Remove(const std::string& key) override {
    SnapshotRecord removed;
    {
      std::lock_guard lock(mu_);
      LC_ASSIGN_OR_RETURN(auto txn, store_->Begin());
      LC_ASSIGN_OR_RETURN(removed, store_->Remove(key));
      if (removed.remote && options_.remote) {
        Status s = options_.remote->Unmount(removed.id, FsDir(removed.id));
        if (!s.ok()) {
          return s.WithContext("remove snapshot " + key + ": unmounting its remote layer");
        }
      }
      LC_RETURN_IF_ERROR(txn->Commit());
      unavailable_.erase(removed.id);
    }
    // As containerd (asyncRemove=false): the row is gone; a directory that cannot be removed now
    // is an orphan for Cleanup.
    Status s = RemoveTree(SnapshotDir(removed.id));
    if (!s.ok()) Log(LogLevel::kWarn, "remove snapshot " + key + ": " + s.ToString());
    return Status::Ok();
  }

  Result<SnapshotInfo> Stat(const std::string& key) override {
    SnapshotRecord rec;
    {
      std::lock_guard lock(mu_);
      LC_ASSIGN_OR_RETURN(rec, store_->Get(key));
    }
    // containerd's unpackers Stat(chainID) to decide that a layer is present (1.6 before
    // anything else; 1.7/2.x after a Prepare that containerd answered AlreadyExists from its own
    // metadata): the one call that reaches us when a layer is reused. FailedPrecondition (not
    // NotFound) makes the pull fail with our message instead of fetching the layer again.
    // The whole chain below it, not only the snapshot: IsUnpacked and ApplyLayers Stat only an
    // image's top layer, which may be a plain layer above a refused remote one.
    if (rec.info.kind == SnapshotKind::kCommitted) LC_RETURN_IF_ERROR(AuthorizeChainOf(key));
    return rec.info;
  }

  Result<SnapshotInfo> Update(const SnapshotInfo& info,
                              const std::vector<std::string>& field_paths) override {
    LC_RETURN_IF_ERROR(ValidateLabels(info.labels));
    std::lock_guard lock(mu_);
    return store_->UpdateInfo(info, field_paths, Now());
  }

  Status Walk(const std::vector<std::string>& filters,
              const std::function<Status(const SnapshotInfo&)>& fn) override {
    LC_ASSIGN_OR_RETURN(auto filter, SnapshotFilter::Parse(filters));
    std::vector<SnapshotRecord> all;
    {
      std::lock_guard lock(mu_);
      LC_ASSIGN_OR_RETURN(all, store_->List());
    }
    for (const auto& rec : all) {
      if (filter.Match(rec.info)) LC_RETURN_IF_ERROR(fn(rec.info));
    }
    return Status::Ok();
  }

  Result<SnapshotUsage> Usage(const std::string& key) override {
    SnapshotRecord rec;
    {
      std::lock_guard lock(mu_);
      LC_ASSIGN_OR_RETURN(rec, store_->Get(key));
    }
    // As containerd: the tree walk runs after the metadata lookup, without the lock.
    if (rec.info.kind == SnapshotKind::kActive) return DiskUsage(FsDir(rec.id));
    // A lazily mounted layer: what is cached on disk for it now (it grows as the container
    // reads), never its full size and never a walk of the FUSE mount (that would count bytes
    // that were never fetched). Not mounted now (restore failed): nothing is cached for it but
    // what was stored at commit.
    if (rec.remote && options_.remote) {
      if (auto cached = options_.remote->CachedUsage(rec.id)) return *cached;
    }
    return rec.usage;
  }

  Result<PurgeReport> Purge() override {
    if (!options_.remote) return PurgeReport{};
    std::vector<SnapshotRecord> all;
    {
      std::lock_guard lock(mu_);
      LC_ASSIGN_OR_RETURN(all, store_->List());
    }
    struct Candidate {
      SnapshotRecord rec;
      std::string reason;
      bool done = false;
    };
    std::vector<Candidate> candidates;
    for (auto& rec : all) {
      if (!rec.remote || rec.info.kind != SnapshotKind::kCommitted) continue;
      Status s = Authorize(rec);
      if (s.code() == StatusCode::kPermissionDenied || s.code() == StatusCode::kAuthFailed) {
        candidates.push_back(Candidate{std::move(rec), s.message()});
      }
    }
    PurgeReport report;
    // Children first: removing a layer makes the one below it removable, so repeat until a pass
    // removes nothing.
    for (bool progress = true; progress;) {
      progress = false;
      for (Candidate& c : candidates) {
        if (c.done) continue;
        PurgedLayer purged;
        {
          std::lock_guard lock(mu_);
          LC_ASSIGN_OR_RETURN(auto children, store_->Children(c.rec.info.name));
          if (!children.empty()) continue;
          LC_ASSIGN_OR_RETURN(auto txn, store_->Begin());
          auto removed = store_->Remove(c.rec.info.name);
          if (!removed.ok()) {
            if (removed.status().code() == StatusCode::kNotFound) {  // removed meanwhile
              c.done = true;
              continue;
            }
            return removed.status().WithContext("purge " + c.rec.info.name);
          }
          CheckRequest req{c.rec.info.name, c.rec.info.parent, c.rec.info.labels,
                           FsDir(c.rec.id), c.rec.id};
          auto p = options_.remote->Purge(req);
          if (!p.ok()) return p.status().WithContext("purge " + c.rec.info.name);
          purged = std::move(*p);
          LC_RETURN_IF_ERROR(txn->Commit());
          unavailable_.erase(c.rec.id);
        }
        Status s = RemoveTree(SnapshotDir(c.rec.id));
        if (!s.ok()) Log(LogLevel::kWarn, "purge " + c.rec.info.name + ": " + s.ToString());
        Log(LogLevel::kInfo, "purged remote snapshot " + c.rec.info.name + " (layer " +
                                 purged.layer_digest + ", " + std::to_string(purged.bytes_freed) +
                                 " cached bytes freed): " + c.reason);
        report.bytes_freed += purged.bytes_freed;
        report.removed.push_back(PurgeReport::Removed{c.rec.info.name, purged.layer_digest,
                                                      c.reason, purged.bytes_freed,
                                                      std::move(purged.note)});
        c.done = true;
        progress = true;
      }
    }
    for (Candidate& c : candidates) {
      if (c.done) continue;
      std::vector<std::string> children;
      {
        std::lock_guard lock(mu_);
        auto ch = store_->Children(c.rec.info.name);
        if (ch.ok()) children = std::move(*ch);
      }
      std::string names;
      for (const auto& n : children) names += (names.empty() ? "" : ", ") + n;
      report.kept.push_back(PurgeReport::Kept{
          c.rec.info.name, c.reason,
          std::to_string(children.size()) + " snapshot(s) in use are based on it (" + names +
              "): remove those containers or images first"});
    }
    return report;
  }

  Status Cleanup() override {
    std::lock_guard lock(mu_);
    LC_ASSIGN_OR_RETURN(auto ids, store_->AllIds());
    std::unordered_set<std::string> live;
    for (auto id : ids) live.insert(std::to_string(id));
    const fs::path dir = options_.root / "snapshots";
    std::error_code ec;
    std::vector<fs::path> orphans;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (!live.count(it->path().filename().string())) orphans.push_back(it->path());
    }
    if (ec) return Status::IoError("listing " + dir.string() + ": " + ec.message());
    Status first;
    for (const auto& p : orphans) {
      Status s = RemoveTree(p);
      if (!s.ok() && options_.remote) {
        // A remote layer left mounted in an orphan (a crash between mount and commit).
        const std::string name = p.filename().string();
        char* end = nullptr;
        long long id = std::strtoll(name.c_str(), &end, 10);
        if (end && *end == '\0' && id > 0 && options_.remote->Unmount(id, p / "fs").ok()) {
          s = RemoveTree(p);
        }
      }
      if (!s.ok()) {
        Log(LogLevel::kWarn, "cleanup: " + s.ToString());
        if (first.ok()) first = s.WithContext("cleanup");
      } else {
        Log(LogLevel::kInfo, "cleanup: removed " + p.string());
      }
    }
    return first;
  }

 private:
  std::vector<Mount> MountsFor(int64_t id, SnapshotKind kind,
                               const std::vector<int64_t>& parents) const {
    if (parents.empty()) {
      return {Mount{"bind", FsDir(id).string(),
                    {kind == SnapshotKind::kView ? "ro" : "rw", "rbind"}}};
    }
    std::vector<std::string> options;
    if (index_off_) options.push_back("index=off");
    if (kind == SnapshotKind::kActive) {
      options.push_back("workdir=" + WorkDir(id).string());
      options.push_back("upperdir=" + FsDir(id).string());
    } else if (parents.size() == 1) {
      return {Mount{"bind", FsDir(parents[0]).string(), {"ro", "rbind"}}};
    }
    std::string lower = "lowerdir=";
    for (size_t i = 0; i < parents.size(); ++i) {
      if (i) lower += ':';
      lower += FsDir(parents[i]).string();
    }
    options.push_back(std::move(lower));
    return {Mount{"overlay", "overlay", std::move(options)}};
  }

  // The refusal of a snapshot whose layer is not mounted because Restore failed with `error`
  // (its code kept: Purge tells a missing key from a registry outage by it).
  static Status NotMounted(const SnapshotRecord& rec, const Status& error) {
    return error.WithContext("snapshot " + rec.info.name + " is not mounted (restoring it failed)");
  }

  // OK or the handler's refusal (its code as remote.h's Check) of a use of `rec` now; OK for a
  // snapshot that is not a committed remote one. Retries a failed Restore at most once per
  // restore_retry_interval. REQUIRES: mu_ not held.
  Status Authorize(const SnapshotRecord& rec) {
    if (!rec.remote || rec.info.kind != SnapshotKind::kCommitted) return Status::Ok();
    if (!options_.remote) {
      return Status::FailedPrecondition("snapshot " + rec.info.name +
                                        " is a remote layer and no remote layer handler is "
                                        "configured");
    }
    bool retry = false;
    {
      std::lock_guard lock(mu_);
      auto it = unavailable_.find(rec.id);
      if (it != unavailable_.end()) {
        const auto now = std::chrono::steady_clock::now();
        if (now - it->second.last_attempt < options_.restore_retry_interval) {
          return it->second.error;
        }
        it->second.last_attempt = now;  // other users meanwhile get the last error
        retry = true;
      }
    }
    if (retry) {
      RestoreRequest req{rec.info.name, rec.info.parent, rec.info.labels, FsDir(rec.id), rec.id};
      Status s = options_.remote->Restore(req);
      std::lock_guard lock(mu_);
      auto it = unavailable_.find(rec.id);
      if (!s.ok()) {
        Status refusal = NotMounted(rec, s);
        if (it != unavailable_.end()) it->second.error = refusal;
        Log(LogLevel::kWarn, "restoring remote snapshot " + rec.info.name + " again: " +
                                 s.ToString());
        return refusal;
      }
      if (it != unavailable_.end()) unavailable_.erase(it);
      auto still = store_->IdOf(rec.info.name);
      if (!still.ok() || *still != rec.id) {
        // Removed (or purged) while it was being mounted: nothing may keep that mount.
        (void)options_.remote->Unmount(rec.id, FsDir(rec.id));
        return Status::NotFound("snapshot " + rec.info.name + " does not exist");
      }
      Log(LogLevel::kInfo, "restored remote snapshot " + rec.info.name + " (on use)");
    }
    return options_.remote->Check(
        CheckRequest{rec.info.name, rec.info.parent, rec.info.labels, FsDir(rec.id), rec.id});
  }

  // A refusal as containerd gets it: FailedPrecondition with the handler's message.
  static Status Gate(const Status& refusal) {
    if (refusal.ok()) return refusal;
    return Status::FailedPrecondition(refusal.message());
  }

  // Authorizes every remote snapshot in the chain that starts at committed `parent` ("" = none).
  // REQUIRES: mu_ not held.
  Status AuthorizeChainOf(const std::string& parent) {
    if (parent.empty() || !options_.remote) return Status::Ok();
    std::vector<SnapshotRecord> chain;
    {
      std::lock_guard lock(mu_);
      for (std::string name = parent; !name.empty();) {
        auto rec = store_->Get(name);
        if (!rec.ok()) {
          // A missing parent is the caller's error to report (Create names it).
          if (rec.status().code() == StatusCode::kNotFound) break;
          return rec.status();
        }
        name = rec->info.parent;
        if (rec->remote) chain.push_back(std::move(*rec));
      }
    }
    for (const SnapshotRecord& rec : chain) LC_RETURN_IF_ERROR(Gate(Authorize(rec)));
    return Status::Ok();
  }

  // containerd's createSnapshot. REQUIRES: mu_ not held.
  Result<std::vector<Mount>> CreateSnapshot(SnapshotKind kind, const std::string& key,
                                            const std::string& parent, const Labels& labels) {
    LC_RETURN_IF_ERROR(ValidateLabels(labels));
    std::lock_guard lock(mu_);
    LC_ASSIGN_OR_RETURN(auto created, CreateLocked(kind, key, parent, labels));
    return MountsFor(created.first, kind, created.second);
  }

  // Returns the new ID and its parent IDs. REQUIRES: mu_ held.
  Result<std::pair<int64_t, std::vector<int64_t>>> CreateLocked(SnapshotKind kind,
                                                                 const std::string& key,
                                                                 const std::string& parent,
                                                                 const Labels& labels) {
    LC_ASSIGN_OR_RETURN(auto txn, store_->Begin());
    LC_ASSIGN_OR_RETURN(auto rec, store_->Create(kind, key, parent, labels, Now()));
    LC_ASSIGN_OR_RETURN(auto parents, store_->ParentIds(key));
    // Build the directory under a temporary name, rename it into place inside the transaction.
    std::string tmpl = (options_.root / "snapshots" / "new-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) return ErrnoStatus("mkdtemp " + tmpl);
    const fs::path tmp(tmpl);
    auto fail = [&](Status s) {
      (void)RemoveTree(tmp);
      return s.WithContext("prepare snapshot " + key);
    };
    if (Status s = MakeDir(tmp / "fs", 0755); !s.ok()) return fail(s);
    if (kind == SnapshotKind::kActive) {
      if (Status s = MakeDir(tmp / "work", 0711); !s.ok()) return fail(s);
    }
    if (!parents.empty()) {
      // containerd: the new upper dir takes the owner of the nearest parent's fs.
      struct stat st;
      if (::stat(FsDir(parents[0]).c_str(), &st) != 0) {
        return fail(ErrnoStatus("stat parent fs " + FsDir(parents[0]).string()));
      }
      if (::lchown((tmp / "fs").c_str(), st.st_uid, st.st_gid) != 0) {
        return fail(ErrnoStatus("chown " + (tmp / "fs").string()));
      }
    }
    const fs::path final_dir = SnapshotDir(rec.id);
    if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
      return fail(ErrnoStatus("rename " + tmp.string() + " to " + final_dir.string()));
    }
    if (Status s = txn->Commit(); !s.ok()) {
      (void)RemoveTree(final_dir);
      return s.WithContext("prepare snapshot " + key);
    }
    return std::make_pair(rec.id, std::move(parents));
  }

  // stargz-snapshotter's Prepare → prepareRemoteSnapshot → Commit (see remote.h).
  Result<std::vector<Mount>> PrepareRemote(const std::string& key, const std::string& parent,
                                           const Labels& labels, const std::string& target) {
    LC_RETURN_IF_ERROR(ValidateLabels(labels));
    int64_t id = 0;
    std::vector<int64_t> parents;
    std::optional<SnapshotRecord> existing;
    {
      std::lock_guard lock(mu_);
      auto got = store_->Get(target);
      if (got.ok()) {
        existing = std::move(*got);
      } else if (got.status().code() != StatusCode::kNotFound) {
        return got.status();
      } else {
        LC_ASSIGN_OR_RETURN(auto created, CreateLocked(SnapshotKind::kActive, key, parent, labels));
        id = created.first;
        parents = std::move(created.second);
      }
    }
    if (existing) {
      // The layer is reused (another image, another containerd namespace): the node must still
      // be allowed to use it before containerd is told that it exists.
      LC_RETURN_IF_ERROR(Gate(Authorize(*existing)));
      return Status::AlreadyExists("target snapshot \"" + target + "\"");
    }
    PrepareRequest req{key, parent, labels, FsDir(id), id};
    auto mounted = options_.remote->TryMount(req);
    if (!mounted.ok()) {
      Log(LogLevel::kWarn, "remote snapshot " + target + " for " + key +
                               ": " + mounted.status().ToString());
      (void)RemoveActive(key);
      return mounted.status().WithContext("prepare remote snapshot " + target);
    }
    if (!*mounted) {
      Log(LogLevel::kDebug, "prepare " + key + ": not a remote layer, ordinary prepare");
      return MountsFor(id, SnapshotKind::kActive, parents);
    }
    Labels committed_labels = labels;
    committed_labels[std::string(kRemoteLabel)] = "true";
    Status commit;
    {
      std::lock_guard lock(mu_);
      auto rec = store_->CommitActive(key, target, SnapshotUsage{}, committed_labels,
                                      /*remote=*/true, Now());
      commit = rec.status();
    }
    if (!commit.ok()) {
      Log(LogLevel::kWarn, "failed to commit remote snapshot " + target + ": " + commit.ToString());
      (void)options_.remote->Unmount(id, FsDir(id));
      (void)RemoveActive(key);
      if (commit.code() == StatusCode::kAlreadyExists) {
        // Another Prepare committed the same layer first: as good as ours.
        return Status::AlreadyExists("target snapshot \"" + target + "\"");
      }
      return commit.WithContext("commit remote snapshot " + target);
    }
    Log(LogLevel::kInfo, "prepared remote snapshot " + target + " (id " + std::to_string(id) + ")");
    return Status::AlreadyExists("target snapshot \"" + target + "\"");
  }

  // Drops an active snapshot made by PrepareRemote that did not become a remote snapshot.
  Status RemoveActive(const std::string& key) {
    SnapshotRecord rec;
    {
      std::lock_guard lock(mu_);
      LC_ASSIGN_OR_RETURN(rec, store_->Remove(key));
    }
    return RemoveTree(SnapshotDir(rec.id));
  }

  const SnapshotterOptions options_;
  std::mutex mu_;
  std::unique_ptr<MetadataStore> store_;  // guarded by mu_
  const bool index_off_;
  // Remote snapshots whose Restore failed, by ID: refused with `error` until a retry succeeds.
  struct Unavailable {
    Status error;
    std::chrono::steady_clock::time_point last_attempt;
  };
  std::map<int64_t, Unavailable> unavailable_;  // guarded by mu_
};

}  // namespace

Result<SnapshotUsage> DiskUsage(const fs::path& root) {
  struct stat st;
  if (::lstat(root.c_str(), &st) != 0) return ErrnoStatus("disk usage of " + root.string());
  const dev_t dev = st.st_dev;
  std::set<std::pair<dev_t, ino_t>> seen;
  SnapshotUsage usage;
  auto count = [&](const struct stat& s) {
    if (seen.insert({s.st_dev, s.st_ino}).second) {
      usage.size_bytes += static_cast<int64_t>(s.st_blocks) * 512;
      usage.inodes++;
    }
  };
  count(st);
  std::vector<fs::path> stack = {root};
  while (!stack.empty()) {
    fs::path dir = std::move(stack.back());
    stack.pop_back();
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      struct stat cs;
      if (::lstat(it->path().c_str(), &cs) != 0) return ErrnoStatus("lstat " + it->path().string());
      if (cs.st_dev != dev) continue;
      count(cs);
      if (S_ISDIR(cs.st_mode)) stack.push_back(it->path());
    }
    if (ec) return Status::IoError("disk usage: listing " + dir.string() + ": " + ec.message());
  }
  return usage;
}

Result<std::unique_ptr<Snapshotter>> Snapshotter::Open(SnapshotterOptions options) {
  if (options.root.empty()) return Status::InvalidArgument("snapshotter root must be set");
  if (!options.log) options.log = NullLogSink();
  struct stat st;
  if (::stat(options.root.c_str(), &st) != 0) {
    if (errno != ENOENT) return ErrnoStatus("snapshotter root " + options.root.string());
    std::error_code ec;
    fs::create_directories(options.root.parent_path(), ec);
    if (ec) return Status::IoError("creating " + options.root.parent_path().string() + ": " +
                                   ec.message());
    LC_RETURN_IF_ERROR(MakeDir(options.root, 0700));
  } else if (!S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument("snapshotter root " + options.root.string() +
                                   " is not a directory");
  }
  const fs::path snapshots = options.root / "snapshots";
  if (::mkdir(snapshots.c_str(), 0700) != 0 && errno != EEXIST) {
    return ErrnoStatus("mkdir " + snapshots.string());
  }
  LC_ASSIGN_OR_RETURN(auto store, MetadataStore::Open(options.root / "metadata.db"));
  bool index_off = options.overlay_index_off.has_value()
                       ? *options.overlay_index_off
                       : ::access("/sys/module/overlay/parameters/index", F_OK) == 0;
  auto impl = std::make_unique<SnapshotterImpl>(std::move(options), std::move(store), index_off);
  LC_RETURN_IF_ERROR(impl->RestoreRemote());
  return std::unique_ptr<Snapshotter>(std::move(impl));
}

}  // namespace lazycrypt::snapshotter
