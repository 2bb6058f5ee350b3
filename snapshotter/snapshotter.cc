#include "snapshotter/snapshotter.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <set>
#include <system_error>
#include <unordered_set>

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

// Removes a tree without descending into other filesystems (a remote layer still mounted, a
// leftover mount): such a mount point makes the removal fail instead of deleting its contents.
Status RemoveTree(const fs::path& p, dev_t dev) {
  struct stat st;
  if (::lstat(p.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return ErrnoStatus("lstat " + p.string());
  }
  if (S_ISDIR(st.st_mode)) {
    if (st.st_dev != dev) {
      return Status::FailedPrecondition(p.string() + " is a mount point; not removing it");
    }
    std::error_code ec;
    std::vector<fs::path> children;
    for (fs::directory_iterator it(p, ec), end; !ec && it != end; it.increment(ec)) {
      children.push_back(it->path());
    }
    if (ec) return Status::IoError("listing " + p.string() + ": " + ec.message());
    for (const auto& c : children) LC_RETURN_IF_ERROR(RemoveTree(c, dev));
    if (::rmdir(p.c_str()) != 0) return ErrnoStatus("rmdir " + p.string());
    return Status::Ok();
  }
  if (::unlink(p.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("unlink " + p.string());
  return Status::Ok();
}

Status RemoveTree(const fs::path& p) {
  struct stat st;
  if (::lstat(p.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return ErrnoStatus("lstat " + p.string());
  }
  // The tree's own device is the one of its parent directory, so a mount at p itself is caught.
  struct stat parent;
  if (::lstat(p.parent_path().c_str(), &parent) != 0) return ErrnoStatus("lstat " + p.string());
  return RemoveTree(p, parent.st_dev);
}

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
        Log(LogLevel::kWarn, "failed to restore remote snapshot " + rec.info.name + " (id " +
                                 std::to_string(rec.id) + "): " + s.ToString() +
                                 "; remove it with `ctr snapshots rm`");
      } else {
        Log(LogLevel::kInfo, "restored remote snapshot " + rec.info.name);
      }
    }
    return Status::Ok();
  }

  Result<std::vector<Mount>> Prepare(const std::string& key, const std::string& parent,
                                     const Labels& labels) override {
    auto target = labels.find(std::string(kTargetSnapshotLabel));
    if (target == labels.end() || !options_.remote) {
      return CreateSnapshot(SnapshotKind::kActive, key, parent, labels);
    }
    return PrepareRemote(key, parent, labels, target->second);
  }

  Result<std::vector<Mount>> View(const std::string& key, const std::string& parent,
                                  const Labels& labels) override {
    return CreateSnapshot(SnapshotKind::kView, key, parent, labels);
  }

  Result<std::vector<Mount>> Mounts(const std::string& key) override {
    std::lock_guard lock(mu_);
    LC_ASSIGN_OR_RETURN(auto rec, store_->Get(key));
    if (rec.info.kind != SnapshotKind::kActive && rec.info.kind != SnapshotKind::kView) {
      return Status::FailedPrecondition("requested snapshot " + key + " not active or view");
    }
    LC_ASSIGN_OR_RETURN(auto parents, store_->ParentIds(key));
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
    }
    // As containerd (asyncRemove=false): the row is gone; a directory that cannot be removed now
    // is an orphan for Cleanup.
    Status s = RemoveTree(SnapshotDir(removed.id));
    if (!s.ok()) Log(LogLevel::kWarn, "remove snapshot " + key + ": " + s.ToString());
    return Status::Ok();
  }

  Result<SnapshotInfo> Stat(const std::string& key) override {
    std::lock_guard lock(mu_);
    LC_ASSIGN_OR_RETURN(auto rec, store_->Get(key));
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
    return rec.usage;
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
    int64_t id;
    std::vector<int64_t> parents;
    {
      std::lock_guard lock(mu_);
      auto existing = store_->IdOf(target);
      if (existing.ok()) return Status::AlreadyExists("target snapshot \"" + target + "\"");
      if (existing.status().code() != StatusCode::kNotFound) return existing.status();
      LC_ASSIGN_OR_RETURN(auto created, CreateLocked(SnapshotKind::kActive, key, parent, labels));
      id = created.first;
      parents = std::move(created.second);
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
