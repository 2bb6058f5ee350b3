#include "fusefs/inode_table.h"

#include <sys/sysmacros.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace lazycrypt::fusefs {
namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
constexpr std::string_view kOverlayXattrPrefix = "trusted.overlay.";
constexpr std::string_view kOpaqueXattr = "trusted.overlay.opaque";
constexpr uint32_t kNoEntry = UINT32_MAX;

// A node while the tree is being built (indexes into a vector; index 0 is the root).
struct BuildNode {
  uint32_t mode = 0;  // type | permission bits
  // The entry whose owner and mtime the node shows (regular files: also its data), or kNoEntry
  // (implied directories, a root without "." entry: root-owned, mtime 0).
  uint32_t meta = kNoEntry;
  dev_t rdev = 0;
  std::string_view link_target;  // symlinks (points into the entry table)
  XattrMap xattrs;
  bool opaque = false;
  // Directories. Names point into the entry table's arena (every name here is a component of
  // an entry's name), so the build copies no name.
  std::map<std::string_view, size_t> children;
  bool is_dir() const { return S_ISDIR(mode); }
};

uint32_t TypeBits(format::EntryType type) {
  switch (type) {
    case format::EntryType::kRegular: return S_IFREG;
    case format::EntryType::kDirectory: return S_IFDIR;
    case format::EntryType::kSymlink: return S_IFLNK;
    case format::EntryType::kCharDevice: return S_IFCHR;
    case format::EntryType::kBlockDevice: return S_IFBLK;
    case format::EntryType::kFifo: return S_IFIFO;
    case format::EntryType::kHardlink: return 0;
  }
  return 0;
}

void MergeXattrs(std::span<const format::XattrView> from, XattrMap& into) {
  for (const auto& [name, value] : from) {
    if (name.starts_with(kOverlayXattrPrefix) && name != kOpaqueXattr) continue;
    into[std::string(name)] = std::string(value);
  }
}

void TakeMetadata(format::EntryView e, BuildNode& n) {
  n.mode = (n.mode & S_IFMT) | (e.mode() & 07777);
  n.meta = e.index();
}

class TreeBuilder {
 public:
  TreeBuilder() {
    BuildNode root;
    root.mode = S_IFDIR | 0755;
    nodes_.push_back(std::move(root));
  }

  Status Add(format::EntryView e) {
    const format::EntryType type = e.type();
    if (e.name() == ".") {
      if (type != format::EntryType::kDirectory) {
        return Status::Corruption("the root is a " +
                                  std::string(format::EntryTypeName(type)) + ", not a directory");
      }
      TakeMetadata(e, nodes_[0]);
      MergeXattrs(e.xattrs(), nodes_[0].xattrs);
      return Status::Ok();
    }
    std::string_view name = e.name();
    size_t slash = name.rfind('/');
    std::string_view dir_path = slash == std::string_view::npos ? "" : name.substr(0, slash);
    std::string_view base = slash == std::string_view::npos ? name : name.substr(slash + 1);
    LC_ASSIGN_OR_RETURN(size_t parent, ResolveDir(dir_path));

    if (base == kOpaqueMarker) {
      nodes_[parent].opaque = true;
      return Status::Ok();
    }
    if (base.starts_with(kWhiteoutPrefix)) {
      std::string_view hidden = base.substr(kWhiteoutPrefix.size());
      if (hidden.empty() || hidden == "." || hidden == "..") {
        return Status::Corruption("a whiteout that names no file");
      }
      BuildNode w;
      w.mode = S_IFCHR;  // permission bits 0, device 0/0: what overlayfs takes as a whiteout
      w.meta = e.index();
      Place(parent, hidden, NewNode(std::move(w)));
      return Status::Ok();
    }

    auto existing = nodes_[parent].children.find(base);
    switch (type) {
      case format::EntryType::kDirectory: {
        if (existing != nodes_[parent].children.end() && nodes_[existing->second].is_dir()) {
          BuildNode& d = nodes_[existing->second];
          TakeMetadata(e, d);
          MergeXattrs(e.xattrs(), d.xattrs);
          return Status::Ok();
        }
        BuildNode d;
        d.mode = S_IFDIR;
        TakeMetadata(e, d);
        MergeXattrs(e.xattrs(), d.xattrs);
        Place(parent, base, NewNode(std::move(d)));
        return Status::Ok();
      }
      case format::EntryType::kHardlink: {
        LC_ASSIGN_OR_RETURN(size_t target, ResolveExisting(e.link_target()));
        if (target == kMissing) {
          return Status::Corruption("hardlink target does not exist (no earlier entry)");
        }
        if (nodes_[target].is_dir()) {
          return Status::Corruption("hardlink target is a directory");
        }
        Place(parent, base, target);
        return Status::Ok();
      }
      default: {
        BuildNode n;
        n.mode = TypeBits(type);
        if (n.mode == 0) {
          return Status::Corruption("unknown type");
        }
        TakeMetadata(e, n);
        MergeXattrs(e.xattrs(), n.xattrs);
        if (type == format::EntryType::kRegular) {
          // n.meta (set above) is the entry holding the data.
        } else if (type == format::EntryType::kSymlink) {
          n.link_target = e.link_target();
        } else if (type == format::EntryType::kCharDevice ||
                   type == format::EntryType::kBlockDevice) {
          n.rdev = makedev(e.dev_major(), e.dev_minor());
        }
        Place(parent, base, NewNode(std::move(n)));
        return Status::Ok();
      }
    }
  }

  std::vector<BuildNode>& nodes() { return nodes_; }

 private:
  static constexpr size_t kMissing = static_cast<size_t>(-1);

  size_t NewNode(BuildNode n) {
    nodes_.push_back(std::move(n));
    return nodes_.size() - 1;
  }

  // Binds `name` in directory `parent` to node `child`, replacing what was there.
  void Place(size_t parent, std::string_view name, size_t child) {
    auto& children = nodes_[parent].children;
    auto it = children.find(name);
    if (it == children.end()) {
      children.emplace(name, child);
    } else {
      it->second = child;
    }
  }

  // The directory at `path` ("" = root), creating missing ones (implied: 0755, root, mtime 0).
  Result<size_t> ResolveDir(std::string_view path) {
    size_t cur = 0;
    size_t pos = 0;
    while (pos < path.size()) {
      size_t end = path.find('/', pos);
      if (end == std::string_view::npos) end = path.size();
      std::string_view comp = path.substr(pos, end - pos);
      auto it = nodes_[cur].children.find(comp);
      if (it == nodes_[cur].children.end()) {
        BuildNode d;
        d.mode = S_IFDIR | 0755;
        size_t idx = NewNode(std::move(d));
        nodes_[cur].children.emplace(comp, idx);
        cur = idx;
      } else {
        if (!nodes_[it->second].is_dir()) {
          return Status::Corruption("a parent directory is not a directory");
        }
        cur = it->second;
      }
      pos = end + 1;
    }
    return cur;
  }

  // The node at `path`, or kMissing. Never creates anything.
  Result<size_t> ResolveExisting(std::string_view path) {
    if (path == ".") return size_t{0};
    size_t cur = 0;
    size_t pos = 0;
    while (pos < path.size()) {
      size_t end = path.find('/', pos);
      if (end == std::string_view::npos) end = path.size();
      if (!nodes_[cur].is_dir()) return kMissing;
      auto it = nodes_[cur].children.find(path.substr(pos, end - pos));
      if (it == nodes_[cur].children.end()) return kMissing;
      cur = it->second;
      pos = end + 1;
    }
    return cur;
  }

  std::vector<BuildNode> nodes_;
};

// One inode, packed (32 bytes): what every inode has. Owner, mtime and a regular file's size
// and data come from its entry in the layer's EntryTable (`meta`); names are views into that
// table's arena; the listings are in one array (dirents_); what few inodes have (a symlink
// target, xattrs, a device number) in extras_.
struct Node {
  uint32_t mode = 0;
  uint32_t nlink = 0;
  uint32_t meta = kNoEntry;       // the entry shown (see BuildNode::meta)
  uint32_t parent = kRootInode;   // the directory of the first path (depth first)
  uint32_t first_child = 0;       // directories: dirents_[first_child, first_child + child_count)
  uint32_t child_count = 0;
  uint32_t name_dirent = kNone;   // a dirent in `parent` naming this inode (Path); root: none
  uint32_t extra = kNone;         // index into extras_, or none
  static constexpr uint32_t kNone = UINT32_MAX;
};
static_assert(sizeof(Node) == 32, "the per-inode cost of a mounted layer");
static_assert(sizeof(DirEntry) == 24, "the per-name cost of a mounted layer");

struct Extra {
  std::string_view link_target;  // symlinks (points into the entry table)
  XattrMap xattrs;
  dev_t rdev = 0;
};

class InodeTableImpl final : public InodeTable {
 public:
  InodeTableImpl(const format::EntryTable& entries, std::vector<Node> nodes,
                 std::vector<DirEntry> dirents, std::vector<Extra> extras)
      : entries_(entries),
        nodes_(std::move(nodes)),
        dirents_(std::move(dirents)),
        extras_(std::move(extras)) {
    has_xattrs_ = std::any_of(extras_.begin(), extras_.end(),
                              [](const Extra& e) { return !e.xattrs.empty(); });
  }

  Result<uint64_t> Lookup(uint64_t parent, std::string_view name) const override {
    LC_ASSIGN_OR_RETURN(std::span<const DirEntry> children, ReadDir(parent));
    auto it = std::lower_bound(children.begin(), children.end(), name,
                               [](const DirEntry& d, std::string_view n) { return d.name < n; });
    if (it == children.end() || it->name != name) {
      // Names stay out of the message: the directory's path is decrypted data.
      return Status::NotFound("no such entry in directory inode " + std::to_string(parent));
    }
    return uint64_t{it->ino};
  }

  Result<struct stat> Attr(uint64_t ino) const override {
    LC_ASSIGN_OR_RETURN(const Node* n, Get(ino));
    const Extra* x = ExtraOf(*n);
    struct stat st {};
    st.st_ino = ino;
    st.st_mode = n->mode;
    st.st_nlink = n->nlink;
    if (n->meta != kNoEntry) {
      const format::EntryView e = entries_[n->meta];
      st.st_uid = static_cast<uint32_t>(e.uid());  // st_uid/st_gid are 32 bits
      st.st_gid = static_cast<uint32_t>(e.gid());
      st.st_mtim.tv_sec = e.mtime_sec();
      st.st_mtim.tv_nsec = e.mtime_nsec();
      if (S_ISREG(n->mode)) st.st_size = static_cast<off_t>(e.size());
    }
    st.st_rdev = x ? x->rdev : 0;
    if (S_ISLNK(n->mode)) {
      st.st_size = static_cast<off_t>(x ? x->link_target.size() : 0);
    } else if (S_ISDIR(n->mode)) {
      st.st_size = 4096;
    }
    st.st_blksize = 4096;
    st.st_blocks = (st.st_size + 511) / 512;
    st.st_atim = st.st_mtim;
    st.st_ctim = st.st_mtim;
    return st;
  }

  Result<std::span<const DirEntry>> ReadDir(uint64_t ino) const override {
    LC_ASSIGN_OR_RETURN(const Node* n, Get(ino));
    if (!S_ISDIR(n->mode)) {
      return Status::FailedPrecondition("inode " + std::to_string(ino) + " is not a directory");
    }
    return std::span<const DirEntry>(dirents_.data() + n->first_child, n->child_count);
  }

  Result<uint64_t> Parent(uint64_t ino) const override {
    LC_ASSIGN_OR_RETURN(const Node* n, Get(ino));
    if (!S_ISDIR(n->mode)) {
      return Status::FailedPrecondition("inode " + std::to_string(ino) + " is not a directory");
    }
    return uint64_t{n->parent};
  }

  Result<std::string_view> Readlink(uint64_t ino) const override {
    LC_ASSIGN_OR_RETURN(const Node* n, Get(ino));
    if (!S_ISLNK(n->mode)) {
      return Status::InvalidArgument("inode " + std::to_string(ino) + " is not a symlink");
    }
    const Extra* x = ExtraOf(*n);
    return x ? x->link_target : std::string_view();
  }

  Result<const XattrMap*> Xattrs(uint64_t ino) const override {
    LC_ASSIGN_OR_RETURN(const Node* n, Get(ino));
    const Extra* x = ExtraOf(*n);
    return x ? &x->xattrs : &no_xattrs_;
  }
  bool has_xattrs() const override { return has_xattrs_; }

  Result<format::EntryView> DataEntry(uint64_t ino) const override {
    LC_ASSIGN_OR_RETURN(const Node* n, Get(ino));
    if (!S_ISREG(n->mode) || n->meta == kNoEntry) {
      return Status::InvalidArgument("inode " + std::to_string(ino) + " is not a regular file");
    }
    return entries_[n->meta];
  }

  std::string Path(uint64_t ino) const override {
    if (!Get(ino).ok()) return "";
    std::vector<std::string_view> parts;
    while (ino != kRootInode && nodes_[ino].name_dirent != Node::kNone) {
      parts.push_back(dirents_[nodes_[ino].name_dirent].name);
      ino = nodes_[ino].parent;
    }
    std::string path;
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
      if (!path.empty()) path.push_back('/');
      path.append(*it);
    }
    return path;
  }

  uint64_t inode_count() const override { return nodes_.size() - 1; }

  size_t memory_bytes() const override {
    size_t bytes = nodes_.capacity() * sizeof(Node) + dirents_.capacity() * sizeof(DirEntry) +
                   extras_.capacity() * sizeof(Extra);
    for (const Extra& x : extras_) {
      for (const auto& [k, v] : x.xattrs) bytes += 64 + k.capacity() + v.capacity();
    }
    return bytes;
  }

 private:
  Result<const Node*> Get(uint64_t ino) const {
    if (ino < kRootInode || ino >= nodes_.size()) {
      return Status::NotFound("no inode " + std::to_string(ino));
    }
    return &nodes_[ino];
  }
  const Extra* ExtraOf(const Node& n) const {
    return n.extra == Node::kNone ? nullptr : &extras_[n.extra];
  }

  const format::EntryTable& entries_;  // owner, mtime, size and data; names point into it
  std::vector<Node> nodes_;            // index == inode number; [0] unused
  std::vector<DirEntry> dirents_;      // every listing, each sorted by name
  std::vector<Extra> extras_;
  const XattrMap no_xattrs_;
  bool has_xattrs_ = false;
};

}  // namespace

Result<std::unique_ptr<const InodeTable>> InodeTable::Build(const format::EntryTable& entries) {
  TreeBuilder builder;
  // Errors give the entry's index, never its name or link target: they reach logs and
  // containerd (pod events), and the names in a TOC are confidential (FORMAT.md §4).
  for (size_t i = 0; i < entries.size(); ++i) {
    Status added = builder.Add(entries[i]);
    if (!added.ok()) {
      return Status(added.code(), "TOC entry " + std::to_string(i) + ": " + added.message());
    }
  }
  std::vector<BuildNode>& built = builder.nodes();
  // Inode numbers and listing indexes are 32 bits in the packed table.
  if (built.size() >= Node::kNone) {
    return Status::InvalidArgument("the layer has more than 2^32 - 2 inodes");
  }

  // Number the reachable nodes depth first in name order; count names per node.
  constexpr uint32_t kUnnumbered = 0;
  std::vector<uint32_t> ino_of(built.size(), kUnnumbered);  // build index -> inode
  std::vector<uint32_t> build_index(1);                    // inode -> build index
  std::vector<Node> nodes(1);
  nodes.reserve(built.size() + 1);  // an upper bound (replaced nodes are not reachable)
  std::vector<Extra> extras;
  struct Pending {
    size_t idx;
    uint32_t parent;
  };
  std::vector<Pending> stack{{0, kRootInode}};
  while (!stack.empty()) {
    Pending p = stack.back();
    stack.pop_back();
    if (ino_of[p.idx] != kUnnumbered) {
      ++nodes[ino_of[p.idx]].nlink;  // another name of a hardlinked inode
      continue;
    }
    const uint32_t ino = static_cast<uint32_t>(nodes.size());
    ino_of[p.idx] = ino;
    BuildNode& b = built[p.idx];
    Node n;
    n.mode = b.mode;
    n.meta = b.meta;
    n.nlink = b.is_dir() ? 2 : 1;
    n.parent = p.parent;
    if (b.opaque) b.xattrs[std::string(kOpaqueXattr)] = "y";
    if (S_ISLNK(b.mode) || !b.xattrs.empty() || b.rdev != 0) {
      n.extra = static_cast<uint32_t>(extras.size());
      extras.push_back({b.link_target, std::move(b.xattrs), b.rdev});
    }
    nodes.push_back(n);
    build_index.push_back(static_cast<uint32_t>(p.idx));
    for (auto c = b.children.rbegin(); c != b.children.rend(); ++c) {
      stack.push_back({c->second, ino});
    }
  }
  // The listings, in inode order; names stay where they are (the entry table's arena).
  size_t dirent_count = 0;
  for (uint32_t ino = kRootInode; ino < nodes.size(); ++ino) {
    dirent_count += built[build_index[ino]].children.size();
  }
  if (dirent_count >= Node::kNone) {
    return Status::InvalidArgument("the layer has more than 2^32 - 2 names");
  }
  std::vector<DirEntry> dirents;
  dirents.reserve(dirent_count);
  for (uint32_t ino = kRootInode; ino < nodes.size(); ++ino) {
    BuildNode& b = built[build_index[ino]];
    if (!b.is_dir()) continue;
    Node& dir = nodes[ino];
    dir.first_child = static_cast<uint32_t>(dirents.size());
    dir.child_count = static_cast<uint32_t>(b.children.size());
    for (const auto& [name, idx] : b.children) {  // std::map: already sorted by name
      const uint32_t child = ino_of[idx];
      if (nodes[child].parent == ino && nodes[child].name_dirent == Node::kNone) {
        nodes[child].name_dirent = static_cast<uint32_t>(dirents.size());
      }
      dirents.push_back({name, child, nodes[child].mode});
      if (S_ISDIR(nodes[child].mode)) ++dir.nlink;
    }
    b.children.clear();  // the build's map, freed as we go
  }
  nodes.shrink_to_fit();  // they live as long as the mount: no growth slack
  extras.shrink_to_fit();
  return std::unique_ptr<const InodeTable>(std::make_unique<InodeTableImpl>(
      entries, std::move(nodes), std::move(dirents), std::move(extras)));
}

}  // namespace lazycrypt::fusefs
