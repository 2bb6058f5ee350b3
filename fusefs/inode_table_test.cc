#include "fusefs/inode_table.h"

#include <sys/sysmacros.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <set>
#include <vector>

namespace lazycrypt::fusefs {
namespace {

using format::Entry;
using format::EntryType;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

Entry Dir(std::string name, uint32_t mode = 0755, int64_t mtime = 100) {
  Entry e;
  e.name = std::move(name);
  e.type = EntryType::kDirectory;
  e.mode = mode;
  e.mtime_sec = mtime;
  return e;
}
Entry File(std::string name, uint64_t size = 10, uint32_t mode = 0644) {
  Entry e;
  e.name = std::move(name);
  e.type = EntryType::kRegular;
  e.mode = mode;
  e.size = size;
  e.mtime_sec = 200;
  e.mtime_nsec = 123456789;
  e.uid = 1000;
  e.gid = 2000;
  return e;
}
Entry Link(std::string name, std::string target, EntryType type = EntryType::kHardlink) {
  Entry e;
  e.name = std::move(name);
  e.type = type;
  e.mode = 0777;
  e.link_target = std::move(target);
  return e;
}

// A table with the entries it points into (Build's contract: entries outlive the table).
class Tree {
 public:
  explicit Tree(const std::vector<Entry>& entries) {
    auto packed = format::EntryTable::Pack(entries);
    EXPECT_TRUE(packed.ok()) << packed.status().ToString();
    if (!packed.ok()) return;
    entries_ = std::make_unique<format::EntryTable>(std::move(packed).value());
    auto t = InodeTable::Build(*entries_);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    if (t.ok()) table_ = std::move(t).value();
  }
  explicit operator bool() const { return table_ != nullptr; }
  const format::EntryTable& entries() const { return *entries_; }
  const InodeTable& operator*() const { return *table_; }
  const InodeTable* operator->() const { return table_.get(); }

 private:
  std::unique_ptr<format::EntryTable> entries_;
  std::unique_ptr<const InodeTable> table_;
};

// For the entries Build refuses: the packed entries die with the call (no table outlives them).
Result<bool> BuildError(const std::vector<Entry>& entries) {
  auto packed = format::EntryTable::Pack(entries);
  if (!packed.ok()) return packed.status();
  auto built = InodeTable::Build(*packed);
  if (!built.ok()) return built.status();
  return true;
}

Tree BuildOk(std::vector<Entry> entries) { return Tree(std::move(entries)); }

// Resolves a slash-separated path from the root; 0 if missing.
uint64_t Resolve(const InodeTable& t, const std::string& path) {
  uint64_t cur = kRootInode;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string::npos) end = path.size();
    auto next = t.Lookup(cur, path.substr(pos, end - pos));
    if (!next.ok()) return 0;
    cur = *next;
    pos = end + 1;
  }
  return cur;
}

std::vector<std::string> Names(const InodeTable& t, uint64_t dir) {
  std::vector<std::string> out;
  auto children = t.ReadDir(dir);
  EXPECT_TRUE(children.ok());
  if (!children.ok()) return out;
  for (const DirEntry& d : *children) out.emplace_back(d.name);
  return out;
}

struct stat AttrOf(const InodeTable& t, const std::string& path) {
  uint64_t ino = Resolve(t, path);
  EXPECT_NE(ino, 0u) << path;
  auto st = t.Attr(ino);
  EXPECT_TRUE(st.ok()) << path;
  struct stat empty {};
  return st.ok() ? *st : empty;
}

TEST(InodeTable, RootIsImpliedWithDefaultMetadata) {
  auto t = BuildOk({File("a")});
  ASSERT_TRUE(t);
  struct stat st = AttrOf(*t, "");
  EXPECT_EQ(st.st_ino, kRootInode);
  EXPECT_EQ(st.st_mode, S_IFDIR | 0755u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mtim.tv_sec, 0);
  EXPECT_EQ(st.st_nlink, 2u);
  EXPECT_EQ(*t->Parent(kRootInode), kRootInode);
}

TEST(InodeTable, RootEntryGivesRootMetadata) {
  Entry root = Dir(".", 0700, 555);
  root.uid = 7;
  auto t = BuildOk({root, File("a")});
  ASSERT_TRUE(t);
  struct stat st = AttrOf(*t, "");
  EXPECT_EQ(st.st_mode, S_IFDIR | 0700u);
  EXPECT_EQ(st.st_uid, 7u);
  EXPECT_EQ(st.st_mtim.tv_sec, 555);
}

TEST(InodeTable, AttributesOfEveryType) {
  Entry chr;
  chr.name = "dev/null";
  chr.type = EntryType::kCharDevice;
  chr.mode = 0666;
  chr.dev_major = 1;
  chr.dev_minor = 3;
  Entry blk = chr;
  blk.name = "dev/loop0";
  blk.type = EntryType::kBlockDevice;
  blk.dev_major = 7;
  blk.dev_minor = 0;
  Entry fifo;
  fifo.name = "fifo";
  fifo.type = EntryType::kFifo;
  fifo.mode = 0600;
  auto t = BuildOk({Dir("dev"), chr, blk, fifo, File("f", 1000), Link("sym", "f/../x", EntryType::kSymlink)});
  ASSERT_TRUE(t);
  struct stat f = AttrOf(*t, "f");
  EXPECT_EQ(f.st_mode, S_IFREG | 0644u);
  EXPECT_EQ(f.st_size, 1000);
  EXPECT_EQ(f.st_blocks, 2);
  EXPECT_EQ(f.st_uid, 1000u);
  EXPECT_EQ(f.st_gid, 2000u);
  EXPECT_EQ(f.st_mtim.tv_sec, 200);
  EXPECT_EQ(f.st_mtim.tv_nsec, 123456789);
  EXPECT_EQ(f.st_nlink, 1u);
  struct stat c = AttrOf(*t, "dev/null");
  EXPECT_EQ(c.st_mode, S_IFCHR | 0666u);
  EXPECT_EQ(c.st_rdev, makedev(1, 3));
  struct stat b = AttrOf(*t, "dev/loop0");
  EXPECT_EQ(b.st_mode, S_IFBLK | 0666u);
  EXPECT_EQ(b.st_rdev, makedev(7, 0));
  EXPECT_EQ(AttrOf(*t, "fifo").st_mode, S_IFIFO | 0600u);
  struct stat l = AttrOf(*t, "sym");
  EXPECT_EQ(l.st_mode, S_IFLNK | 0777u);
  EXPECT_EQ(l.st_size, 6);
  EXPECT_EQ(*t->Readlink(Resolve(*t, "sym")), "f/../x");
  EXPECT_EQ(t->Readlink(Resolve(*t, "f")).status().code(), StatusCode::kInvalidArgument);
  auto data = t->DataEntry(Resolve(*t, "f"));
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(data->name(), "f");
  EXPECT_FALSE(t->DataEntry(Resolve(*t, "dev")).ok());
  EXPECT_FALSE(t->DataEntry(Resolve(*t, "sym")).ok());
}

TEST(InodeTable, ImpliedParentsAreRootOwned0755WithZeroMtime) {
  auto t = BuildOk({File("a/b/c/file")});
  ASSERT_TRUE(t);
  for (const char* dir : {"a", "a/b", "a/b/c"}) {
    struct stat st = AttrOf(*t, dir);
    EXPECT_EQ(st.st_mode, S_IFDIR | 0755u) << dir;
    EXPECT_EQ(st.st_uid, 0u) << dir;
    EXPECT_EQ(st.st_gid, 0u) << dir;
    EXPECT_EQ(st.st_mtim.tv_sec, 0) << dir;
  }
  EXPECT_EQ(t->Path(Resolve(*t, "a/b/c/file")), "a/b/c/file");
  EXPECT_EQ(t->inode_count(), 5u);
}

TEST(InodeTable, ImpliedParentTakesMetadataOfALaterEntry) {
  auto t = BuildOk({File("a/file"), Dir("a", 0710, 999)});
  ASSERT_TRUE(t);
  struct stat st = AttrOf(*t, "a");
  EXPECT_EQ(st.st_mode, S_IFDIR | 0710u);
  EXPECT_EQ(st.st_mtim.tv_sec, 999);
  EXPECT_THAT(Names(*t, Resolve(*t, "a")), ElementsAre("file"));
}

TEST(InodeTable, LaterFileReplacesEarlierFile) {
  Entry second = File("x", 77, 0600);
  auto t = BuildOk({File("x", 5), second});
  ASSERT_TRUE(t);
  struct stat st = AttrOf(*t, "x");
  EXPECT_EQ(st.st_size, 77);
  EXPECT_EQ(st.st_mode, S_IFREG | 0600u);
  EXPECT_THAT(Names(*t, kRootInode), ElementsAre("x"));
  EXPECT_EQ(t->inode_count(), 2u);  // the replaced inode is gone
}

TEST(InodeTable, DirReplacingDirKeepsChildrenTakesMetadataMergesXattrs) {
  Entry d1 = Dir("d", 0755, 1);
  d1.xattrs["user.a"] = "1";
  d1.xattrs["user.b"] = "old";
  Entry d2 = Dir("d", 0700, 2);
  d2.uid = 33;
  d2.xattrs["user.b"] = "new";
  auto t = BuildOk({d1, File("d/kept"), d2, File("d/added")});
  ASSERT_TRUE(t);
  uint64_t d = Resolve(*t, "d");
  EXPECT_THAT(Names(*t, d), ElementsAre("added", "kept"));
  struct stat st = AttrOf(*t, "d");
  EXPECT_EQ(st.st_mode, S_IFDIR | 0700u);
  EXPECT_EQ(st.st_uid, 33u);
  EXPECT_EQ(st.st_mtim.tv_sec, 2);
  const XattrMap* x = *t->Xattrs(d);
  EXPECT_EQ(*x, (XattrMap{{"user.a", "1"}, {"user.b", "new"}}));
}

TEST(InodeTable, FileReplacingDirDropsSubtreeAndDirReplacingFile) {
  auto t = BuildOk({Dir("d"), File("d/child"), Dir("d/sub"), File("d/sub/deep"), File("d", 3),
                    File("e"), Dir("e", 0711)});
  ASSERT_TRUE(t);
  EXPECT_EQ(AttrOf(*t, "d").st_mode, S_IFREG | 0644u);
  EXPECT_EQ(Resolve(*t, "d/child"), 0u);
  EXPECT_EQ(t->Lookup(Resolve(*t, "d"), "child").status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(AttrOf(*t, "e").st_mode, S_IFDIR | 0711u);
  EXPECT_EQ(t->inode_count(), 3u);  // root, d, e
  EXPECT_EQ(AttrOf(*t, "").st_nlink, 3u);  // 2 + one subdirectory
}

TEST(InodeTable, HardlinksShareOneInodeAndCountNames) {
  Entry f = File("dir/f", 42);
  f.xattrs["user.k"] = "v";
  auto t = BuildOk({f, Link("h1", "dir/f"), Link("dir/h2", "dir/f"), Link("h3", "h1")});
  ASSERT_TRUE(t);
  uint64_t ino = Resolve(*t, "dir/f");
  ASSERT_NE(ino, 0u);
  for (const char* p : {"h1", "dir/h2", "h3"}) EXPECT_EQ(Resolve(*t, p), ino) << p;
  struct stat st = AttrOf(*t, "h3");
  EXPECT_EQ(st.st_nlink, 4u);
  EXPECT_EQ(st.st_size, 42);
  EXPECT_EQ(st.st_mode, S_IFREG | 0644u);  // the inode's own metadata, not the link header's
  EXPECT_EQ((*t->Xattrs(Resolve(*t, "h1")))->at("user.k"), "v");
  EXPECT_EQ(t->DataEntry(Resolve(*t, "h1"))->name(), "dir/f");
}

TEST(InodeTable, HardlinkKeepsInodeWhenTargetNameIsReplacedAndNlinkCountsOnlyReachableNames) {
  auto t = BuildOk({File("f", 1), Link("g", "f"), File("f", 2), Dir("d"), File("d/x", 9),
                    Link("keep", "d/x"), File("d", 0)});
  ASSERT_TRUE(t);
  EXPECT_NE(Resolve(*t, "f"), Resolve(*t, "g"));
  EXPECT_EQ(AttrOf(*t, "g").st_size, 1);
  EXPECT_EQ(AttrOf(*t, "g").st_nlink, 1u);
  EXPECT_EQ(AttrOf(*t, "f").st_size, 2);
  // d/x disappeared with its directory: "keep" is its only name now.
  EXPECT_EQ(AttrOf(*t, "keep").st_nlink, 1u);
  EXPECT_EQ(AttrOf(*t, "keep").st_size, 9);
}

TEST(InodeTable, RejectsHardlinkToMissingOrDirectoryTarget) {
  auto missing = BuildError(std::vector<Entry>{File("a"), Link("h", "nope")});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(missing.status().message(), HasSubstr("TOC entry 1: hardlink target does not exist"));
  EXPECT_THAT(missing.status().message(), Not(HasSubstr("nope")));  // names are confidential
  auto dir = BuildError(std::vector<Entry>{Dir("d"), Link("h", "d")});
  ASSERT_FALSE(dir.ok());
  EXPECT_THAT(dir.status().message(), HasSubstr("is a directory"));
}

TEST(InodeTable, RejectsFileAsParentAndNonDirectoryRoot) {
  auto t = BuildError(std::vector<Entry>{File("a"), File("a/b")});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(t.status().message(), HasSubstr("TOC entry 1: a parent directory is not a directory"));
  EXPECT_THAT(t.status().message(), Not(HasSubstr("'a")));
  auto root = BuildError(std::vector<Entry>{File(".")});
  ASSERT_FALSE(root.ok());
  EXPECT_THAT(root.status().message(), HasSubstr("not a directory"));
}

TEST(InodeTable, WhiteoutBecomesCharDevice00WithOwnerAndMtime) {
  Entry wh = File("etc/.wh.passwd", 0, 0644);
  wh.uid = 5;
  wh.gid = 6;
  wh.mtime_sec = 4242;
  wh.mtime_nsec = 7;
  auto t = BuildOk({Dir("etc"), wh});
  ASSERT_TRUE(t);
  EXPECT_THAT(Names(*t, Resolve(*t, "etc")), ElementsAre("passwd"));
  struct stat st = AttrOf(*t, "etc/passwd");
  EXPECT_EQ(st.st_mode, static_cast<mode_t>(S_IFCHR));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  EXPECT_EQ(st.st_uid, 5u);
  EXPECT_EQ(st.st_gid, 6u);
  EXPECT_EQ(st.st_mtim.tv_sec, 4242);
  EXPECT_EQ(st.st_mtim.tv_nsec, 7);
  EXPECT_EQ(Resolve(*t, "etc/.wh.passwd"), 0u);
}

TEST(InodeTable, WhiteoutReplacesFileOfSameLayerAndImpliesParent) {
  auto t = BuildOk({File("a/victim"), File("a/.wh.victim"), File("b/.wh.gone")});
  ASSERT_TRUE(t);
  EXPECT_TRUE(S_ISCHR(AttrOf(*t, "a/victim").st_mode));
  EXPECT_TRUE(S_ISCHR(AttrOf(*t, "b/gone").st_mode));
  EXPECT_EQ(AttrOf(*t, "b").st_mode, S_IFDIR | 0755u);
}

TEST(InodeTable, OpaqueMarkerSetsXattrAndIsNotListed) {
  auto t = BuildOk({Dir("o"), File("o/.wh..wh..opq"), File("o/new"), Dir("plain")});
  ASSERT_TRUE(t);
  uint64_t o = Resolve(*t, "o");
  EXPECT_THAT(Names(*t, o), ElementsAre("new"));
  EXPECT_EQ(**t->Xattrs(o), (XattrMap{{"trusted.overlay.opaque", "y"}}));
  EXPECT_TRUE((*t->Xattrs(Resolve(*t, "plain")))->empty());
  // A later entry for the same directory keeps it opaque.
  auto t2 = BuildOk({Dir("o"), File("o/.wh..wh..opq"), Dir("o", 0700)});
  ASSERT_TRUE(t2);
  EXPECT_EQ((*t2->Xattrs(Resolve(*t2, "o")))->count("trusted.overlay.opaque"), 1u);
  // An opaque marker under a missing directory implies it.
  auto t3 = BuildOk({File("x/y/.wh..wh..opq")});
  ASSERT_TRUE(t3);
  EXPECT_EQ((*t3->Xattrs(Resolve(*t3, "x/y")))->at("trusted.overlay.opaque"), "y");
  EXPECT_TRUE(Names(*t3, Resolve(*t3, "x/y")).empty());
}

TEST(InodeTable, WhiteoutOfDotDotOrEmptyNameIsRejected) {
  for (const char* bad : {"d/.wh...", "d/.wh..", ".wh."}) {
    auto t = BuildError(std::vector<Entry>{File(bad)});
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_EQ(t.status().code(), StatusCode::kCorruption) << bad;
    EXPECT_THAT(t.status().message(), HasSubstr("names no file")) << bad;
  }
}

TEST(InodeTable, TarOverlayXattrsAreDroppedExceptOpaque) {
  Entry d = Dir("d");
  d.xattrs["trusted.overlay.redirect"] = "/etc";
  d.xattrs["trusted.overlay.metacopy"] = "";
  d.xattrs["trusted.overlay.opaque"] = "y";
  d.xattrs["trusted.other"] = "kept";
  d.xattrs["security.capability"] = std::string("\x01\x00\x00\x02", 4);
  auto t = BuildOk({d});
  ASSERT_TRUE(t);
  EXPECT_EQ(**t->Xattrs(Resolve(*t, "d")),
            (XattrMap{{"security.capability", std::string("\x01\x00\x00\x02", 4)},
                      {"trusted.other", "kept"},
                      {"trusted.overlay.opaque", "y"}}));
}

TEST(InodeTable, ListingsAreSortedBytewiseAndNeverHoldDotOrDotDot) {
  auto t = BuildOk({File("b"), File("a"), File("B"), File("a.b"), File("a-b"), Dir("z"),
                    File("\xc3\xa9"), File("_")});
  ASSERT_TRUE(t);
  EXPECT_THAT(Names(*t, kRootInode), ElementsAre("B", "_", "a", "a-b", "a.b", "b", "z", "\xc3\xa9"));
  EXPECT_EQ(t->Lookup(kRootInode, "..").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(t->Lookup(kRootInode, ".").status().code(), StatusCode::kNotFound);
  // Every DirEntry's mode matches the inode's attributes.
  auto root_children = t->ReadDir(kRootInode);
  ASSERT_TRUE(root_children.ok());
  for (const DirEntry& d : *root_children) {
    EXPECT_EQ(d.mode, t->Attr(d.ino)->st_mode) << d.name;
  }
}

TEST(InodeTable, InodeNumbersAreDenseDepthFirstAndStable) {
  std::vector<Entry> entries{File("b/2"), File("a/1"), File("c"), File("a/0")};
  auto t1 = BuildOk(entries);
  auto t2 = BuildOk(entries);
  ASSERT_TRUE(t1 && t2);
  EXPECT_EQ(Resolve(*t1, "a"), 2u);
  EXPECT_EQ(Resolve(*t1, "a/0"), 3u);
  EXPECT_EQ(Resolve(*t1, "a/1"), 4u);
  EXPECT_EQ(Resolve(*t1, "b"), 5u);
  EXPECT_EQ(Resolve(*t1, "b/2"), 6u);
  EXPECT_EQ(Resolve(*t1, "c"), 7u);
  for (const char* p : {"a", "a/0", "a/1", "b", "b/2", "c"}) {
    EXPECT_EQ(Resolve(*t1, p), Resolve(*t2, p)) << p;
    EXPECT_EQ(t1->Attr(Resolve(*t1, p))->st_ino, Resolve(*t1, p)) << p;
  }
  EXPECT_EQ(*t1->Parent(Resolve(*t1, "b")), kRootInode);
  EXPECT_FALSE(t1->Attr(0).ok());
  EXPECT_FALSE(t1->Attr(8).ok());
  EXPECT_EQ(t1->Lookup(99, "x").status().code(), StatusCode::kNotFound);
}

TEST(InodeTable, DirectoryNlinkIsTwoPlusSubdirectories) {
  auto t = BuildOk({Dir("d"), Dir("d/s1"), Dir("d/s2"), File("d/f"), Link("d/h", "d/f")});
  ASSERT_TRUE(t);
  EXPECT_EQ(AttrOf(*t, "d").st_nlink, 4u);
  EXPECT_EQ(AttrOf(*t, "d/s1").st_nlink, 2u);
  EXPECT_EQ(AttrOf(*t, "d/f").st_nlink, 2u);
}

// Paths are not stored: Path walks the parents. A hardlinked inode gets the path of the name
// numbered first (depth first, name order); symlink targets and device numbers stay exact.
TEST(InodeTable, PathsOfNestedAndHardlinkedInodesAndPackedExtras) {
  Entry chr = File("dev/tty", 0, 0620);
  chr.type = EntryType::kCharDevice;
  chr.dev_major = 5;
  chr.dev_minor = 0;
  auto t = BuildOk({File("z/target"), Link("a/link", "z/target"),
                    Link("s", "a/nowhere", EntryType::kSymlink), chr,
                    Link("empty", "", EntryType::kSymlink)});
  ASSERT_TRUE(t);
  EXPECT_EQ(t->Path(kRootInode), "");
  EXPECT_EQ(t->Path(Resolve(*t, "z/target")), "a/link");  // "a" comes before "z"
  EXPECT_EQ(Resolve(*t, "a/link"), Resolve(*t, "z/target"));
  EXPECT_EQ(t->Path(Resolve(*t, "dev/tty")), "dev/tty");
  EXPECT_EQ(t->Path(99999), "");
  EXPECT_EQ(*t->Readlink(Resolve(*t, "s")), "a/nowhere");
  EXPECT_EQ(AttrOf(*t, "s").st_size, 9);
  EXPECT_EQ(*t->Readlink(Resolve(*t, "empty")), "");
  EXPECT_EQ(AttrOf(*t, "dev/tty").st_rdev, makedev(5, 0));
  EXPECT_EQ(AttrOf(*t, "z/target").st_rdev, 0u);
  EXPECT_TRUE((*t->Xattrs(Resolve(*t, "z/target")))->empty());
}

// has_xattrs decides whether the mount tells the kernel "no xattr here" once (fuse_fs.cc):
// any xattr kept, an opaque marker, on any inode, makes it true; dropped ones do not.
TEST(InodeTable, HasXattrsCountsKeptXattrsAndOpaqueMarksOnly) {
  auto none = BuildOk({Dir("d"), File("d/f"), File("d/.wh.gone", 0)});
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_xattrs());

  Entry dropped = File("f");
  dropped.xattrs["trusted.overlay.metacopy"] = "";
  auto only_dropped = BuildOk({dropped});
  ASSERT_TRUE(only_dropped);
  EXPECT_FALSE(only_dropped->has_xattrs());

  auto opaque = BuildOk({Dir("d"), File("d/.wh..wh..opq", 0)});
  ASSERT_TRUE(opaque);
  EXPECT_TRUE(opaque->has_xattrs());

  Entry kept = File("deep/er/f");
  kept.xattrs["user.k"] = "v";
  auto one = BuildOk({File("a"), kept});
  ASSERT_TRUE(one);
  EXPECT_TRUE(one->has_xattrs());
}


// The memory a mounted layer of many small files costs in the tree: 32 bytes per inode and 24 per
// name (the table's own accounting), no byte of any name: listings and symlink targets point
// into the entry table's arena.
TEST(InodeTable, SmallFilesCostARecordAndADirentEachAndNoNameBytes) {
  std::vector<Entry> entries;
  for (int d = 0; d < 100; ++d) {
    entries.push_back(Dir("node_modules/pkg" + std::to_string(d)));
    for (int f = 0; f < 100; ++f) {
      entries.push_back(File("node_modules/pkg" + std::to_string(d) + "/file" + std::to_string(f) +
                             ".js"));
    }
  }
  entries.push_back(Link("node_modules/pkg0/sh", "../bin/busybox", EntryType::kSymlink));
  Tree t = BuildOk(entries);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->inode_count(), entries.size() + 2);  // + the root and node_modules (implied)
  const uint64_t inodes = t->inode_count() + 1;     // + the unused record 0
  const size_t names = entries.size() + 1;       // every inode but the root has one name
  EXPECT_LE(t->memory_bytes(), inodes * 32 + names * 24 + 256);
  const std::string_view arena = t.entries().arena();
  auto in_arena = [&](std::string_view s) {
    return s.data() >= arena.data() && s.data() + s.size() <= arena.data() + arena.size();
  };
  for (uint64_t dir : {kRootInode, Resolve(*t, "node_modules"), Resolve(*t, "node_modules/pkg7")}) {
    for (const DirEntry& d : *t->ReadDir(dir)) EXPECT_TRUE(in_arena(d.name)) << d.name;
  }
  EXPECT_TRUE(in_arena(*t->Readlink(Resolve(*t, "node_modules/pkg0/sh"))));
  // Owner, mtime and size come from the entry the inode shows.
  struct stat st = AttrOf(*t, "node_modules/pkg3/file9.js");
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 2000u);
  EXPECT_EQ(st.st_size, 10);
  EXPECT_EQ(st.st_mtim.tv_nsec, 123456789);
  EXPECT_EQ(AttrOf(*t, "node_modules").st_mtim.tv_sec, 0);  // implied: mtime 0
}

}  // namespace
}  // namespace lazycrypt::fusefs
