// ApplyLayer on real files in a temp dir (run as root: ownership, devices, trusted.* xattrs).
// The attack tests each check that nothing outside the layer directory changed *and* that the
// archive is refused, so that removing a check makes them fail.
#include "unpack/apply.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/io.h"
#include "tar/tar_writer.h"

namespace lazycrypt::unpack {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using tar::Entry;
using tar::EntryType;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "unpack_test.XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp: " << strerror(errno);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

Entry Make(std::string name, EntryType type, uint32_t mode) {
  Entry e;
  e.name = std::move(name);
  e.type = type;
  e.mode = mode;
  e.mtime_sec = 1'600'000'000;
  return e;
}
Entry File(std::string name, uint32_t mode = 0644) {
  return Make(std::move(name), EntryType::kRegular, mode);
}
Entry Dir(std::string name, uint32_t mode = 0755) {
  return Make(std::move(name), EntryType::kDirectory, mode);
}
Entry Symlink(std::string name, std::string target) {
  Entry e = Make(std::move(name), EntryType::kSymlink, 0777);
  e.link_name = std::move(target);
  return e;
}
Entry Hardlink(std::string name, std::string target, uint32_t mode = 0644) {
  Entry e = Make(std::move(name), EntryType::kHardlink, mode);
  e.link_name = std::move(target);
  return e;
}

class TarBuilder {
 public:
  TarBuilder& Add(Entry e, std::string_view data = {}) {
    e.size = data.size();
    Status s = writer_.AppendEntry(e, AsBytes(data));
    EXPECT_TRUE(s.ok()) << s.ToString();
    return *this;
  }
  std::vector<uint8_t> Finish(size_t record_size = 10240) {
    EXPECT_TRUE(writer_.Finish(record_size).ok());
    return out_.Take();
  }

 private:
  MemoryOutputStream out_;
  tar::TarWriter writer_{out_};
};

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void WriteFile(const fs::path& p, std::string_view data) {
  std::ofstream(p, std::ios::binary) << data;
}
struct stat Lstat(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(lstat(p.c_str(), &st), 0) << p << ": " << strerror(errno);
  return st;
}
bool Exists(const fs::path& p) {
  struct stat st {};
  return lstat(p.c_str(), &st) == 0;
}
std::string GetXattr(const fs::path& p, const char* name) {
  char buf[256];
  ssize_t n = lgetxattr(p.c_str(), name, buf, sizeof buf);
  return n < 0 ? std::string("<none>") : std::string(buf, static_cast<size_t>(n));
}

// The layer directory (empty) and, beside it, an "outside" directory an attacker aims at,
// holding a file "secret".
class ApplyLayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directory(layer());
    fs::create_directory(outside());
    WriteFile(secret(), "secret data");
    chmod(secret().c_str(), 0600);
    chmod(outside().c_str(), 0700);
    struct timespec times[2] = {{kSecretMtime, 0}, {kSecretMtime, 0}};
    utimensat(AT_FDCWD, secret().c_str(), times, 0);
  }
  static constexpr time_t kSecretMtime = 1'500'000'000;
  fs::path layer() const { return tmp_.path() / "layer"; }
  fs::path outside() const { return tmp_.path() / "outside"; }
  fs::path secret() const { return outside() / "secret"; }

  Result<ApplyStats> Apply(const std::vector<uint8_t>& tar, const ApplyOptions& options = {}) {
    MemoryInputStream in(tar, /*max_read_bytes=*/7000);  // short reads, as from a decompressor
    return ApplyLayer(in, layer(), options);
  }

  // Nothing outside the layer directory was touched.
  void ExpectOutsideUntouched() {
    EXPECT_EQ(ReadFile(secret()), "secret data");
    struct stat st = Lstat(secret());
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(st.st_nlink, 1u);
    EXPECT_EQ(st.st_uid, 0u);
    EXPECT_EQ(st.st_mtim.tv_sec, kSecretMtime);
    EXPECT_EQ(Lstat(outside()).st_mode & 07777, 0700u);
    EXPECT_EQ(GetXattr(outside(), "trusted.overlay.opaque"), "<none>");
    std::vector<std::string> names;
    for (const auto& d : fs::directory_iterator(outside())) names.push_back(d.path().filename());
    EXPECT_EQ(names, std::vector<std::string>{"secret"});
    std::vector<std::string> top;
    for (const auto& d : fs::directory_iterator(tmp_.path())) top.push_back(d.path().filename());
    std::sort(top.begin(), top.end());
    EXPECT_EQ(top, (std::vector<std::string>{"layer", "outside"}));
  }

  // A macro so that a failure names the line of the attack.
#define EXPECT_REFUSED(tar, message_part) \
  do {                                    \
    SCOPED_TRACE(#tar);                   \
    ExpectRefused(tar, message_part);     \
  } while (0)
  void ExpectRefused(const std::vector<uint8_t>& tar, std::string_view message_part) {
    fs::remove_all(layer());  // each attempt starts from an empty layer
    fs::create_directory(layer());
    Result<ApplyStats> r = Apply(tar);
    ASSERT_FALSE(r.ok()) << "the archive was applied";
    EXPECT_THAT(r.status().message(), HasSubstr(std::string(message_part))) << r.status().ToString();
    ExpectOutsideUntouched();
  }

  TempDir tmp_;
};

// ---------------------------------------------------------------------------------------------
// What it creates

TEST_F(ApplyLayerTest, EveryTypeWithOwnerModeAndMtime) {
  Entry dir = Dir("d/", 0750);
  dir.uid = 1000, dir.gid = 1001, dir.mtime_sec = 1'000'000'000;
  Entry file = File("d/f", 0640);
  file.uid = 1002, file.gid = 1003, file.mtime_sec = 1'234'567'890, file.mtime_nsec = 5000;
  // Pointing at the test's own secret, never at a host file: were a symlink followed by mistake,
  // only the temp dir would change (and ExpectOutsideUntouched fails).
  Entry link = Symlink("d/s", secret().string());
  link.uid = 1004, link.gid = 1005, link.mtime_sec = 1'111'111'111;
  Entry hard = Hardlink("d/h", "d/f", 0640);
  hard.uid = 1002, hard.gid = 1003, hard.mtime_sec = 1'234'567'890, hard.mtime_nsec = 5000;
  Entry chr = Make("d/null", EntryType::kCharDevice, 0666);
  chr.dev_major = 1, chr.dev_minor = 3;
  Entry blk = Make("d/loop", EntryType::kBlockDevice, 0660);
  blk.dev_major = 7, blk.dev_minor = 0, blk.gid = 6;
  Entry fifo = Make("d/fifo", EntryType::kFifo, 0620);
  fifo.uid = 7;
  auto tar = TarBuilder()
                 .Add(dir).Add(file, "hello").Add(link).Add(hard).Add(chr).Add(blk).Add(fifo)
                 .Finish();
  Result<ApplyStats> r = Apply(tar);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->entries, 7u);
  EXPECT_EQ(r->regular_bytes, 5u);

  struct stat st = Lstat(layer() / "d");
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1001u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'000'000'000);  // set last, after its children were created

  st = Lstat(layer() / "d/f");
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(ReadFile(layer() / "d/f"), "hello");
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_uid, 1002u);
  EXPECT_EQ(st.st_gid, 1003u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'234'567'890);
  EXPECT_EQ(st.st_mtim.tv_nsec, 5000);
  EXPECT_EQ(st.st_nlink, 2u);
  EXPECT_EQ(st.st_ino, Lstat(layer() / "d/h").st_ino);

  st = Lstat(layer() / "d/s");
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(fs::read_symlink(layer() / "d/s"), secret());
  EXPECT_EQ(st.st_uid, 1004u);
  EXPECT_EQ(st.st_gid, 1005u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'111'111'111);

  st = Lstat(layer() / "d/null");
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(1, 3));
  EXPECT_EQ(st.st_mode & 07777, 0666u);
  st = Lstat(layer() / "d/loop");
  EXPECT_TRUE(S_ISBLK(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(7, 0));
  EXPECT_EQ(st.st_gid, 6u);
  st = Lstat(layer() / "d/fifo");
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0620u);
  EXPECT_EQ(st.st_uid, 7u);
  ExpectOutsideUntouched();
}

TEST_F(ApplyLayerTest, SetuidSetgidStickySurviveChown) {
  Entry su = File("su", 04755);
  su.uid = 1000, su.gid = 1000;
  Entry sg = Dir("sg/", 02775);
  sg.gid = 50;
  Entry sticky = Dir("tmp/", 01777);
  auto tar = TarBuilder().Add(su, "#!/bin/sh\n").Add(sg).Add(File("sg/x", 0644)).Add(sticky).Finish();
  ASSERT_TRUE(Apply(tar).ok());
  EXPECT_EQ(Lstat(layer() / "su").st_mode & 07777, 04755u);
  EXPECT_EQ(Lstat(layer() / "su").st_uid, 1000u);
  EXPECT_EQ(Lstat(layer() / "sg").st_mode & 07777, 02775u);
  EXPECT_EQ(Lstat(layer() / "sg/x").st_gid, 0u);  // chowned to the header, not the setgid dir's
  EXPECT_EQ(Lstat(layer() / "tmp").st_mode & 07777, 01777u);
}

TEST_F(ApplyLayerTest, PreserveOwnerFalseKeepsTheCallersOwner) {
  Entry f = File("f", 04755);
  f.uid = 1000, f.gid = 1000;
  ApplyOptions options;
  options.preserve_owner = false;
  ASSERT_TRUE(Apply(TarBuilder().Add(f, "x").Finish(), options).ok());
  struct stat st = Lstat(layer() / "f");
  EXPECT_EQ(st.st_uid, getuid());
  EXPECT_EQ(st.st_mode & 07777, 04755u);
}

TEST_F(ApplyLayerTest, LargeFileMovesInBigReads) {
  std::string data(3 * 1024 * 1024 + 123, '\0');
  std::mt19937 rng(7);
  for (char& c : data) c = static_cast<char>(rng());
  auto tar = TarBuilder().Add(File("big"), data).Add(File("after"), "tail").Finish();
  Result<ApplyStats> r = Apply(tar);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->regular_bytes, data.size() + 4);
  EXPECT_TRUE(ReadFile(layer() / "big") == data);
  EXPECT_EQ(ReadFile(layer() / "after"), "tail");
}

TEST_F(ApplyLayerTest, ManySmallFiles) {
  TarBuilder b;
  for (int d = 0; d < 10; ++d) {
    b.Add(Dir("usr/lib/d" + std::to_string(d) + "/"));
    for (int f = 0; f < 200; ++f) {
      b.Add(File("usr/lib/d" + std::to_string(d) + "/f" + std::to_string(f)), "content");
    }
  }
  Result<ApplyStats> r = Apply(b.Finish());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->entries, 10u * 201);
  EXPECT_EQ(r->regular_bytes, 10u * 200 * 7);
  EXPECT_EQ(ReadFile(layer() / "usr/lib/d9/f199"), "content");
}

TEST_F(ApplyLayerTest, XattrsAppliedExceptOverlayAndTrusted) {
  Entry d = Dir("d/");
  d.xattrs = {{"user.dir", "dv"},
              {"trusted.overlay.opaque", "y"},
              {"trusted.overlay.redirect", "/etc"},
              {"user.overlay.opaque", "y"},
              {"trusted.other", "z"}};
  Entry f = File("d/f");
  f.xattrs = {{"user.file", std::string("a\0b", 3)}};
  Entry s = Symlink("d/s", "f");
  s.xattrs = {{"user.onsymlink", "no"}};  // the kernel refuses user.* on symlinks: tolerated
  Entry fifo = Make("d/p", EntryType::kFifo, 0644);
  fifo.xattrs = {{"security.test", "v"}};  // not user.*: set through the parent fd
  auto tar = TarBuilder().Add(d).Add(f, "x").Add(s).Add(fifo).Finish();
  Result<ApplyStats> r = Apply(tar);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(GetXattr(layer() / "d", "user.dir"), "dv");
  EXPECT_EQ(GetXattr(layer() / "d", "trusted.overlay.opaque"), "<none>");
  EXPECT_EQ(GetXattr(layer() / "d", "trusted.overlay.redirect"), "<none>");
  EXPECT_EQ(GetXattr(layer() / "d", "user.overlay.opaque"), "<none>");
  EXPECT_EQ(GetXattr(layer() / "d", "trusted.other"), "<none>");
  EXPECT_EQ(GetXattr(layer() / "d/f", "user.file"), std::string("a\0b", 3));
  EXPECT_EQ(GetXattr(layer() / "d/s", "user.onsymlink"), "<none>");
  EXPECT_EQ(GetXattr(layer() / "d/p", "security.test"), "v");
  EXPECT_EQ(r->xattrs_skipped, 5u);
}

TEST_F(ApplyLayerTest, WhiteoutsBecomeZeroZeroCharDevices) {
  Entry wh = File("a/.wh.gone");
  wh.uid = 1000, wh.gid = 1000;
  auto tar = TarBuilder().Add(Dir("a/")).Add(wh).Add(File(".wh.top")).Finish();
  Result<ApplyStats> r = Apply(tar);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->whiteouts, 2u);
  for (const char* p : {"a/gone", "top"}) {
    struct stat st = Lstat(layer() / p);
    EXPECT_TRUE(S_ISCHR(st.st_mode)) << p;
    EXPECT_EQ(st.st_rdev, makedev(0, 0)) << p;
  }
  EXPECT_EQ(Lstat(layer() / "a/gone").st_uid, 1000u);
  EXPECT_FALSE(Exists(layer() / "a/.wh.gone"));
  EXPECT_FALSE(Exists(layer() / ".wh.top"));
}

TEST_F(ApplyLayerTest, OpaqueDirectoryGetsTheOverlayXattr) {
  auto tar = TarBuilder()
                 .Add(Dir("d/"))
                 .Add(File("d/.wh..wh..opq"))
                 .Add(File("d/kept"), "k")
                 .Add(File("e/.wh..wh..opq"))  // parent missing from the archive: created
                 .Finish();
  Result<ApplyStats> r = Apply(tar);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->opaque_dirs, 2u);
  EXPECT_EQ(GetXattr(layer() / "d", "trusted.overlay.opaque"), "y");
  EXPECT_EQ(GetXattr(layer() / "e", "trusted.overlay.opaque"), "y");
  EXPECT_FALSE(Exists(layer() / "d/.wh..wh..opq"));
  EXPECT_EQ(ReadFile(layer() / "d/kept"), "k");
}

TEST_F(ApplyLayerTest, AufsMetadataAndRootEntrySkipped) {
  Entry root = Dir("./", 0700);
  root.uid = 1000;
  auto tar = TarBuilder()
                 .Add(root)
                 .Add(Dir(".wh..wh.plnk/"))
                 .Add(File(".wh..wh.aufs"))
                 .Add(File("x"), "x")
                 .Finish();
  struct stat before = Lstat(layer());
  Result<ApplyStats> r = Apply(tar);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->skipped_entries, 3u);
  EXPECT_FALSE(Exists(layer() / ".wh..wh.plnk"));
  EXPECT_FALSE(Exists(layer() / "plnk"));
  EXPECT_FALSE(Exists(layer() / ".wh..wh.aufs"));
  struct stat after = Lstat(layer());
  EXPECT_EQ(after.st_mode, before.st_mode);  // containerd leaves the root alone
  EXPECT_EQ(after.st_uid, before.st_uid);
}

TEST_F(ApplyLayerTest, MissingParentsCreated0755) {
  ::umask(077);  // created parents do not depend on the umask
  auto tar = TarBuilder().Add(File("a/b/c", 0600), "c").Finish();
  Result<ApplyStats> r = Apply(tar);
  ::umask(022);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (const char* p : {"a", "a/b"}) {
    struct stat st = Lstat(layer() / p);
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << p;
    EXPECT_EQ(st.st_mode & 07777, 0755u) << p;
    EXPECT_EQ(st.st_uid, 0u) << p;
  }
  EXPECT_EQ(ReadFile(layer() / "a/b/c"), "c");
}

TEST_F(ApplyLayerTest, LaterEntryReplacesEarlierOne) {
  auto tar = TarBuilder()
                 .Add(File("x"), "first")
                 .Add(File("x"), "second")
                 .Add(File("y"), "file")
                 .Add(Dir("y/"))                 // a directory replaces a file
                 .Add(Dir("z/"))
                 .Add(File("z/inner"), "i")
                 .Add(Dir("z/sub/"))
                 .Add(File("z/sub/deep"), "d")
                 .Add(File("z"), "now a file")   // a file replaces a directory tree
                 .Add(Symlink("s", "x"))
                 .Add(File("s"), "not through")  // a file replaces a symlink (not written through)
                 .Add(Dir("m/", 0700))
                 .Add(File("m/keep"), "k")
                 .Add(Dir("m/", 0755))           // a directory entry for a directory: metadata
                 .Add(File(".wh.w"))
                 .Add(File("w"), "back")         // a file replaces a whiteout
                 .Add(File("v"), "v")
                 .Add(File(".wh.v"))             // a whiteout replaces a file
                 .Finish();
  Result<ApplyStats> r = Apply(tar);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(ReadFile(layer() / "x"), "second");
  EXPECT_TRUE(S_ISDIR(Lstat(layer() / "y").st_mode));
  EXPECT_TRUE(S_ISREG(Lstat(layer() / "z").st_mode));
  EXPECT_EQ(ReadFile(layer() / "z"), "now a file");
  EXPECT_TRUE(S_ISREG(Lstat(layer() / "s").st_mode));
  EXPECT_EQ(ReadFile(layer() / "s"), "not through");
  EXPECT_EQ(ReadFile(layer() / "x"), "second");
  EXPECT_EQ(Lstat(layer() / "m").st_mode & 07777, 0755u);
  EXPECT_EQ(ReadFile(layer() / "m/keep"), "k");
  EXPECT_EQ(ReadFile(layer() / "w"), "back");
  EXPECT_TRUE(S_ISCHR(Lstat(layer() / "v").st_mode));
}

TEST_F(ApplyLayerTest, ParentDirectoriesFollowReplacementsAndInterleaving) {
  auto tar = TarBuilder()
                 .Add(File("p/q/a"), "a")
                 .Add(File("p"), "file")      // the tree holding the last parent goes away
                 .Add(Dir("p/"))
                 .Add(File("p/q/b"), "b")     // a new p/q, not the removed one
                 .Add(File("r/x"), "x")
                 .Add(File("s/y"), "y")
                 .Add(File("r/z"), "z")       // back to an earlier parent
                 .Add(File("s/.wh.y"))
                 .Add(File(".wh.r"))          // the parent of an earlier entry whited out
                 .Add(File("r2/w"), "w")
                 .Finish();
  Result<ApplyStats> r = Apply(tar);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(Exists(layer() / "p/q/a"));
  EXPECT_EQ(ReadFile(layer() / "p/q/b"), "b");
  EXPECT_TRUE(S_ISCHR(Lstat(layer() / "r").st_mode));
  EXPECT_TRUE(S_ISCHR(Lstat(layer() / "s/y").st_mode));
  EXPECT_EQ(ReadFile(layer() / "r2/w"), "w");
  // A file below a whited-out name: the whiteout is not a directory.
  Result<ApplyStats> bad = Apply(TarBuilder().Add(File("r/again")).Finish());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("'r', which is not a directory"));
}

TEST_F(ApplyLayerTest, DirectoryMtimeSetAfterChildrenAndBoundedLikeContainerd) {
  Entry d = Dir("d/");
  d.mtime_sec = 1'000, d.mtime_nsec = 7;
  Entry old = File("old");
  old.mtime_sec = -5;  // before 1970: containerd uses the epoch
  auto tar = TarBuilder().Add(d).Add(File("d/f"), "f").Add(Dir("d/g/")).Add(old).Finish();
  ASSERT_TRUE(Apply(tar).ok());
  struct stat st = Lstat(layer() / "d");
  EXPECT_EQ(st.st_mtim.tv_sec, 1'000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 7);
  EXPECT_EQ(Lstat(layer() / "old").st_mtim.tv_sec, 0);
}

TEST_F(ApplyLayerTest, HardlinkToSymlinkLinksTheSymlinkItself) {
  Entry h = Hardlink("h", "s", 04777);
  h.uid = 1234;
  auto tar = TarBuilder().Add(Symlink("s", secret().string())).Add(h).Finish();
  Result<ApplyStats> r = Apply(tar);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  struct stat st = Lstat(layer() / "h");
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(st.st_ino, Lstat(layer() / "s").st_ino);
  ExpectOutsideUntouched();  // not linked, chowned or chmodded through the symlink
}

TEST_F(ApplyLayerTest, SymlinkEntryPointingOutsideIsCreatedButNotFollowed) {
  Entry s = Symlink("s", secret().string());
  s.uid = 4321;
  s.xattrs = {{"security.x", "v"}};
  ASSERT_TRUE(Apply(TarBuilder().Add(s).Finish()).ok());
  EXPECT_EQ(fs::read_symlink(layer() / "s"), secret());
  EXPECT_EQ(Lstat(layer() / "s").st_uid, 4321u);
  EXPECT_EQ(GetXattr(secret(), "security.x"), "<none>");
  ExpectOutsideUntouched();
}

TEST_F(ApplyLayerTest, StreamPositionAfterTheMarker) {
  std::vector<uint8_t> tar = TarBuilder().Add(File("f"), "data").Finish(/*record_size=*/0);
  const size_t marker_end = tar.size();
  std::string trailer(300 * 1024, 'T');  // more than the reader buffers
  tar.insert(tar.end(), trailer.begin(), trailer.end());

  // A wrapper that sees every byte read, as a diff_id hasher would.
  class Recording final : public InputStream {
   public:
    explicit Recording(InputStream& in) : in_(in) {}
    Result<size_t> Read(MutableByteSpan out) override {
      Result<size_t> n = in_.Read(out);
      if (n.ok()) seen.insert(seen.end(), out.begin(), out.begin() + *n);
      return n;
    }
    std::vector<uint8_t> seen;

   private:
    InputStream& in_;
  };
  for (bool drain : {false, true}) {
    SCOPED_TRACE(drain);
    fs::remove_all(layer());
    fs::create_directory(layer());
    MemoryInputStream mem(tar);
    Recording rec(mem);
    ApplyOptions options;
    options.drain_to_end = drain;
    ASSERT_TRUE(ApplyLayer(rec, layer(), options).ok());
    EXPECT_GE(rec.seen.size(), marker_end);
    if (drain) EXPECT_EQ(rec.seen.size(), tar.size());
    else EXPECT_LT(rec.seen.size(), tar.size());  // not drained: the caller reads the rest
    std::vector<uint8_t> buf(64 * 1024);
    for (;;) {
      Result<size_t> n = rec.Read(buf);
      ASSERT_TRUE(n.ok());
      if (*n == 0) break;
    }
    EXPECT_TRUE(rec.seen == tar);  // every byte seen exactly once, in order
  }
}

TEST_F(ApplyLayerTest, MaxEntries) {
  ApplyOptions options;
  options.max_entries = 2;
  auto tar = TarBuilder().Add(File("a")).Add(File("b")).Add(File("c")).Finish();
  Result<ApplyStats> r = Apply(tar, options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_THAT(r.status().message(), HasSubstr("max_entries"));
}

TEST_F(ApplyLayerTest, TruncatedDataIsCorruption) {
  auto tar = TarBuilder().Add(File("f"), std::string(5000, 'x')).Finish(0);
  tar.resize(2048);
  Result<ApplyStats> r = Apply(tar);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption) << r.status().ToString();
}

// ---------------------------------------------------------------------------------------------
// Attacks: the image author tries to reach outside the layer directory.

TEST_F(ApplyLayerTest, AttackDotDotName) {
  EXPECT_REFUSED(TarBuilder().Add(File("../x"), "x").Finish(), "'..'");
  EXPECT_REFUSED(TarBuilder().Add(File("a/../../x"), "x").Finish(), "'..'");
  EXPECT_REFUSED(TarBuilder().Add(Dir("../outside/", 0777)).Finish(), "'..'");
  EXPECT_REFUSED(TarBuilder().Add(File("../outside/secret"), "pwned").Finish(), "'..'");
}

TEST_F(ApplyLayerTest, AttackAbsoluteName) {
  EXPECT_REFUSED(TarBuilder().Add(File((outside() / "x").string()), "x").Finish(), "absolute");
  EXPECT_REFUSED(TarBuilder().Add(File(secret().string()), "pwned").Finish(), "absolute");
  EXPECT_FALSE(Exists(layer() / outside().relative_path() / "x"));
}

TEST_F(ApplyLayerTest, AttackWriteThroughSymlink) {
  const std::string out = outside().string();
  EXPECT_REFUSED(TarBuilder().Add(Symlink("a", out)).Add(File("a/x"), "x").Finish(), "symlink");
  EXPECT_REFUSED(TarBuilder().Add(Symlink("b", "../outside")).Add(File("b/x"), "x").Finish(),
                "symlink");
  EXPECT_REFUSED(TarBuilder().Add(Symlink("c", out)).Add(File("c/secret"), "pwned").Finish(),
                "symlink");
  EXPECT_REFUSED(TarBuilder().Add(Symlink("d", out)).Add(Dir("d/sub/")).Finish(), "symlink");
  EXPECT_REFUSED(TarBuilder().Add(Symlink("e", out)).Add(Symlink("e/l", secret().string())).Finish(), "symlink");
  // Deeper: a directory, then a symlink below it, then a write two levels through.
  EXPECT_REFUSED(
      TarBuilder().Add(Dir("f/")).Add(Symlink("f/g", out)).Add(File("f/g/h/x"), "x").Finish(),
      "symlink");
  // Even a symlink that stays inside is not walked through (containerd would resolve it).
  EXPECT_REFUSED(TarBuilder().Add(Dir("real/")).Add(Symlink("in", "real")).Add(File("in/x")).Finish(),
                "symlink");
  EXPECT_FALSE(Exists(layer() / "real/x"));
}

TEST_F(ApplyLayerTest, AttackDirectoryEntryOverSymlinkReplacesIt) {
  // "a" -> outside, then "a/" as a directory with mode 0777 and another owner: the symlink is
  // replaced by a directory; outside's mode and owner do not change.
  Entry d = Dir("a/", 0777);
  d.uid = 1000;
  auto tar = TarBuilder().Add(Symlink("a", outside().string())).Add(d).Finish();
  ASSERT_TRUE(Apply(tar).ok());
  EXPECT_TRUE(S_ISDIR(Lstat(layer() / "a").st_mode));
  ExpectOutsideUntouched();
}

TEST_F(ApplyLayerTest, AttackEntryOverSymlinkReplacesIt) {
  // "s" -> the secret, then "s" as a file, a device, a hard link: each replaces the symlink; the
  // data, mode and owner never reach the secret.
  Entry f = File("s", 06777);
  f.uid = 1000;
  Entry dev = Make("t", EntryType::kCharDevice, 0666);
  dev.dev_major = 1, dev.dev_minor = 3;
  auto tar = TarBuilder()
                 .Add(Symlink("s", secret().string()))
                 .Add(f, "pwned")
                 .Add(Symlink("t", secret().string()))
                 .Add(dev)
                 .Add(File("target"), "t")
                 .Add(Symlink("u", secret().string()))
                 .Add(Hardlink("u", "target"))
                 .Finish();
  Result<ApplyStats> r = Apply(tar);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(ReadFile(layer() / "s"), "pwned");
  EXPECT_TRUE(S_ISCHR(Lstat(layer() / "t").st_mode));
  EXPECT_EQ(ReadFile(layer() / "u"), "t");
  ExpectOutsideUntouched();
}

TEST_F(ApplyLayerTest, AttackHardlinkOutside) {
  EXPECT_REFUSED(TarBuilder().Add(Hardlink("h", "../outside/secret")).Finish(), "'..'");
  EXPECT_REFUSED(TarBuilder().Add(Hardlink("h", secret().string())).Finish(), "absolute");
  EXPECT_REFUSED(
      TarBuilder().Add(Symlink("a", outside().string())).Add(Hardlink("h", "a/secret")).Finish(),
      "symlink");
  EXPECT_REFUSED(TarBuilder().Add(Hardlink("h", "missing")).Finish(), "does not exist");
  EXPECT_REFUSED(TarBuilder().Add(Dir("d/")).Add(Hardlink("h", "d")).Finish(), "is a directory");
  EXPECT_REFUSED(TarBuilder().Add(Dir("d/")).Add(Hardlink("h", "./")).Finish(), "layer root");
}

TEST_F(ApplyLayerTest, AttackWhiteoutTricks) {
  EXPECT_REFUSED(TarBuilder().Add(File(".wh..")).Finish(), "does not name a file");   // "."
  EXPECT_REFUSED(TarBuilder().Add(File(".wh...")).Finish(), "does not name a file");  // ".."
  EXPECT_REFUSED(TarBuilder().Add(File("a/.wh...")).Finish(), "does not name a file");
  EXPECT_REFUSED(TarBuilder().Add(Dir("a/.wh.../")).Finish(), "does not name a file");
  EXPECT_REFUSED(TarBuilder().Add(File(".wh.")).Finish(), "does not name a file");
  // ".wh..." as a directory component is just a name: it stays inside.
  fs::remove_all(layer());
  fs::create_directory(layer());
  ASSERT_TRUE(Apply(TarBuilder().Add(File(".wh.../outside/secret"), "in").Finish()).ok());
  EXPECT_EQ(ReadFile(layer() / ".wh.../outside/secret"), "in");
  ExpectOutsideUntouched();
  // A whiteout or an opaque marker through a symlink would replace or mark something outside.
  EXPECT_REFUSED(
      TarBuilder().Add(Symlink("a", outside().string())).Add(File("a/.wh.secret")).Finish(),
      "symlink");
  EXPECT_REFUSED(
      TarBuilder().Add(Symlink("a", outside().string())).Add(File("a/.wh..wh..opq")).Finish(),
      "symlink");
  EXPECT_EQ(GetXattr(layer(), "trusted.overlay.opaque"), "<none>");
  EXPECT_EQ(GetXattr(tmp_.path(), "trusted.overlay.opaque"), "<none>");
}

TEST_F(ApplyLayerTest, ErrorsNameTheEntry) {
  Result<ApplyStats> r = Apply(TarBuilder().Add(File("ok")).Add(File("bad/../../x")).Finish());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(r.status().message(), HasSubstr("unpack: entry 'bad/../../x'"));
}

TEST_F(ApplyLayerTest, WithoutNamesInErrorsTheEntryIsANumber) {
  ApplyOptions options;
  options.names_in_errors = false;
  Result<ApplyStats> r =
      Apply(TarBuilder().Add(File("ok")).Add(File("secret-name/../../x")).Finish(), options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(r.status().message(), HasSubstr("unpack: entry #2"));
  EXPECT_THAT(r.status().message(), Not(HasSubstr("secret-name")));
}

TEST_F(ApplyLayerTest, MaxRegularBytesStopsADecompressionBomb) {
  ApplyOptions options;
  options.max_regular_bytes = 6000;
  auto tar = TarBuilder().Add(File("a"), std::string(4000, 'x')).Add(File("b"), std::string(4000, 'y')).Finish();
  Result<ApplyStats> r = Apply(tar, options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_THAT(r.status().message(), HasSubstr("max_regular_bytes"));
}

TEST_F(ApplyLayerTest, RepeatedDirectoriesAreRememberedOnceAndTheirPathsBounded) {
  // The same directory listed 1000 times costs one record (its last mtime wins).
  TarBuilder repeated;
  for (int i = 0; i < 1000; ++i) {
    Entry d = Dir("d");
    d.mtime_sec = 1000 + i;
    repeated.Add(d);
  }
  ApplyOptions small;
  small.max_directory_path_bytes = 10;
  Result<ApplyStats> r = Apply(repeated.Finish(), small);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  struct stat st {};
  ASSERT_EQ(::lstat((layer() / "d").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1999);
  // Distinct directories beyond the bound are refused, naming it.
  TempDir other;
  TarBuilder many;
  for (int i = 0; i < 5; ++i) many.Add(Dir("dir" + std::to_string(i)));
  const std::vector<uint8_t> many_tar = many.Finish();
  MemoryInputStream in(many_tar);
  Result<ApplyStats> refused = ApplyLayer(in, other.path(), small);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kUnsupported);
  EXPECT_THAT(refused.status().message(), HasSubstr("max_directory_path_bytes"));
}

// ---------------------------------------------------------------------------------------------
// The result works as an overlayfs lower layer: whiteouts hide, opaque dirs hide, files show.

TEST_F(ApplyLayerTest, OverlayMountHonoursWhiteoutsAndOpaqueDirs) {
  fs::path lower = tmp_.path() / "lower", merged = tmp_.path() / "merged";
  fs::create_directories(lower / "gone-dir");
  fs::create_directories(lower / "opaque");
  WriteFile(lower / "gone", "g");
  WriteFile(lower / "kept", "k");
  WriteFile(lower / "gone-dir/x", "x");
  WriteFile(lower / "opaque/hidden", "h");
  fs::create_directory(merged);
  auto tar = TarBuilder()
                 .Add(File(".wh.gone"))
                 .Add(File(".wh.gone-dir"))
                 .Add(Dir("opaque/"))
                 .Add(File("opaque/.wh..wh..opq"))
                 .Add(File("opaque/new"), "n")
                 .Finish();
  ASSERT_TRUE(Apply(tar).ok());
  std::string options = "lowerdir=" + layer().string() + ":" + lower.string();
  if (mount("overlay", merged.c_str(), "overlay", MS_RDONLY, options.c_str()) != 0) {
    GTEST_SKIP() << "cannot mount overlayfs here: " << strerror(errno);
  }
  struct Unmount {
    fs::path p;
    ~Unmount() { umount2(p.c_str(), MNT_DETACH); }
  } unmount{merged};
  EXPECT_FALSE(Exists(merged / "gone"));
  EXPECT_FALSE(Exists(merged / "gone-dir"));
  EXPECT_EQ(ReadFile(merged / "kept"), "k");
  EXPECT_FALSE(Exists(merged / "opaque/hidden"));
  EXPECT_EQ(ReadFile(merged / "opaque/new"), "n");
}

}  // namespace
}  // namespace lazycrypt::unpack
