// What the kernel asks a lazycrypt FUSE mount, through overlayfs as a container sees it (root,
// /dev/fuse, overlayfs; issue 19 "many small files"): a layer without xattrs is asked GETXATTR
// once per connection, not once per file and per container; opens and opendirs are done by the
// kernel (no OPEN/RELEASE/OPENDIR/RELEASEDIR after the first); and nothing of the layer is lost
// on the way: opaque directories and whiteouts still hide the layers below, the TOC's xattrs
// still read, opens are still recorded for `lazycrypt record`, and a quarantine still fails
// every read and listing. Counts come from FuseMount::request_counts; no timing is asserted.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <set>

#include "cache/layer_data.h"
#include "format/layer_reader.h"
#include "format/writer.h"
#include "fusefs/access_log.h"
#include "fusefs/fuse_fs.h"
#include "tar/tar_writer.h"
#include "tests/test_util.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;

format::LayerKey Key() {
  std::vector<uint8_t> k(32);
  for (int i = 0; i < 32; ++i) k[i] = static_cast<uint8_t>(0x71 ^ (i * 3));
  return format::LayerKey(k);
}

tar::Entry Node(std::string name, tar::EntryType type, uint32_t mode, uint64_t size = 0) {
  tar::Entry e;
  e.name = std::move(name);
  e.type = type;
  e.mode = mode;
  e.mtime_sec = 1700000000;
  e.size = size;
  return e;
}

std::string Content(const std::string& path) { return "content of " + path + "\n"; }

// A tar built entry by entry; regular files hold Content(name).
class TarBuilder {
 public:
  TarBuilder() : writer_(out_) { Dir("./"); }
  TarBuilder& Dir(const std::string& name) {
    EXPECT_TRUE(writer_.AppendEntry(Node(name, tar::EntryType::kDirectory, 0755)).ok());
    return *this;
  }
  TarBuilder& File(const std::string& name, std::map<std::string, std::string> xattrs = {}) {
    const std::string data = Content(name);
    tar::Entry e = Node(name, tar::EntryType::kRegular, 0644, data.size());
    e.xattrs = std::move(xattrs);
    EXPECT_TRUE(writer_
                    .AppendEntry(e, ByteSpan(reinterpret_cast<const uint8_t*>(data.data()),
                                             data.size()))
                    .ok());
    return *this;
  }
  // An empty regular file: a whiteout (.wh.NAME) or an opaque marker (.wh..wh..opq).
  TarBuilder& Marker(const std::string& name) {
    EXPECT_TRUE(writer_.AppendEntry(Node(name, tar::EntryType::kRegular, 0644)).ok());
    return *this;
  }
  std::vector<uint8_t> Take() {
    EXPECT_TRUE(writer_.Finish().ok());
    return out_.Take();
  }

 private:
  MemoryOutputStream out_;
  tar::TarWriter writer_;
};

// ./pkgN/{a,b,c}.js for N < packages (no xattr anywhere).
std::vector<uint8_t> ManySmallFiles(int packages) {
  TarBuilder t;
  for (int p = 0; p < packages; ++p) {
    const std::string dir = "./pkg" + std::to_string(p) + "/";
    t.Dir(dir);
    for (const char* f : {"a.js", "b.js", "c.js"}) t.File(dir + f);
  }
  return t.Take();
}

// DirectLayerData whose quarantine the test sets.
class QuarantinableLayer final : public cache::LayerData {
 public:
  explicit QuarantinableLayer(std::unique_ptr<cache::LayerData> inner) : inner_(std::move(inner)) {}
  const format::LayerIndex& index() const override { return inner_->index(); }
  Result<size_t> ReadFile(format::EntryView entry, uint64_t offset,
                          MutableByteSpan out) override {
    if (quarantined()) return Status::AuthFailed("layer quarantined");
    return inner_->ReadFile(entry, offset, out);
  }
  Result<cache::FileView> ViewFile(format::EntryView entry, uint64_t offset,
                                   size_t size) override {
    if (quarantined()) return Status::AuthFailed("layer quarantined");
    return inner_->ViewFile(entry, offset, size);
  }
  cache::LayerStats stats() const override { return inner_->stats(); }
  bool quarantined() const override { return quarantined_.load(); }
  void Quarantine() { quarantined_.store(true); }

 private:
  std::unique_ptr<cache::LayerData> inner_;
  std::atomic<bool> quarantined_{false};
};

// One mounted layer. Members in destruction order: the mount goes first.
struct Mounted {
  std::unique_ptr<MemoryBlobSource> blob;
  std::shared_ptr<QuarantinableLayer> layer;
  std::unique_ptr<fusefs::FuseMount> mount;
  fs::path dir;
};

std::unique_ptr<Mounted> MountTar(const std::vector<uint8_t>& tar, const fs::path& dir,
                                  fusefs::MountOptions options = {}) {
  MemoryInputStream in(tar);
  MemoryOutputStream out;
  format::WriterOptions wo;
  wo.chunk_size_bytes = format::kMinChunkSizeBytes;
  auto written = format::WriteLayer(in, Key(), out, wo);
  EXPECT_TRUE(written.ok()) << written.status().ToString();
  if (!written.ok()) return nullptr;
  auto m = std::make_unique<Mounted>();
  m->blob = std::make_unique<MemoryBlobSource>(out.Take());
  auto reader = format::LayerReader::Open(*m->blob, Key(), written->toc_digest);
  EXPECT_TRUE(reader.ok()) << reader.status().ToString();
  if (!reader.ok()) return nullptr;
  m->layer = std::make_shared<QuarantinableLayer>(cache::DirectLayerData(std::move(*reader)));
  m->dir = dir;
  fs::create_directories(dir);
  options.layer_name = "metadata-test";
  auto mount = fusefs::FuseMount::Mount(dir, m->layer, options);
  EXPECT_TRUE(mount.ok()) << mount.status().ToString();
  if (!mount.ok()) return nullptr;
  m->mount = std::move(*mount);
  return m;
}

// A read-only overlayfs over `lowerdirs` (top first, ':'-separated) at tmp/name/merged with an
// upper and work dir, as containerd mounts a container's rootfs. Unmounted on destruction.
class Overlay {
 public:
  Overlay(const fs::path& tmp, const std::string& name, const std::string& lowerdirs)
      : merged_(tmp / name / "merged") {
    fs::create_directories(tmp / name / "upper");
    fs::create_directories(tmp / name / "work");
    fs::create_directories(merged_);
    const std::string opts = "lowerdir=" + lowerdirs + ",upperdir=" + (tmp / name / "upper").string() +
                             ",workdir=" + (tmp / name / "work").string() + ",index=off";
    mounted_ = ::mount("overlay", merged_.c_str(), "overlay", 0, opts.c_str()) == 0;
    error_ = mounted_ ? "" : std::strerror(errno);
  }
  ~Overlay() {
    if (mounted_) ::umount2(merged_.c_str(), MNT_DETACH);
  }
  Overlay(const Overlay&) = delete;
  Overlay& operator=(const Overlay&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  fs::path operator/(const std::string& rel) const { return merged_ / rel; }
  const fs::path& path() const { return merged_; }

 private:
  fs::path merged_;
  bool mounted_ = false;
  std::string error_;
};

// What a container's `find` + `cat` do: lstat every entry, read every regular file (checking
// its bytes). Returns the number of regular files read.
int StatAndReadAll(const fs::path& root) {
  int files = 0;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    struct stat st {};
    EXPECT_EQ(::lstat(it->path().c_str(), &st), 0) << it->path();
    if (!S_ISREG(st.st_mode)) continue;
    const std::string rel = "./" + fs::relative(it->path(), root).string();
    EXPECT_EQ(ReadFileString(it->path()), Content(rel)) << rel;
    ++files;
  }
  return files;
}

TEST(FuseMetadata, OverlaysOverALayerWithoutXattrsAskGetxattrOnceNotPerFile) {
  TempDir tmp("lazycrypt-metadata");
  auto m = MountTar(ManySmallFiles(20), tmp / "layer");
  ASSERT_TRUE(m);
  // Three containers in a row on the same layer, each with an overlay of its own.
  for (const char* name : {"c1", "c2", "c3"}) {
    Overlay ovl(tmp.path(), name, m->dir.string());
    ASSERT_TRUE(ovl.mounted()) << ovl.error();
    EXPECT_EQ(StatAndReadAll(ovl.path()), 60);
    // No xattr in the layer: overlayfs and users see none.
    char buf[64];
    errno = 0;
    EXPECT_EQ(::getxattr((ovl / "pkg0/a.js").c_str(), "user.k", buf, sizeof buf), -1);
    EXPECT_TRUE(errno == ENODATA || errno == EOPNOTSUPP) << std::strerror(errno);
    const ssize_t listed = ::listxattr((ovl / "pkg0/a.js").c_str(), buf, sizeof buf);
    EXPECT_TRUE(listed == 0 || (listed == -1 && errno == EOPNOTSUPP)) << std::strerror(errno);
  }
  const fusefs::RequestCounts c = m->mount->request_counts();
  // Before: one GETXATTR (trusted.overlay.metacopy) per file and container, 180 at least.
  EXPECT_LE(c.getxattr, 1u);
  EXPECT_LE(c.listxattr, 1u);
}

TEST(FuseMetadata, KernelOpensFilesAndDirectoriesItselfAfterTheFirst) {
  TempDir tmp("lazycrypt-metadata");
  auto m = MountTar(ManySmallFiles(10), tmp / "layer");
  ASSERT_TRUE(m);
  for (int round = 0; round < 2; ++round) {
    EXPECT_EQ(StatAndReadAll(m->dir), 30);
    Overlay ovl(tmp.path(), "c" + std::to_string(round), m->dir.string());
    ASSERT_TRUE(ovl.mounted()) << ovl.error();
    EXPECT_EQ(StatAndReadAll(ovl.path()), 30);
  }
  const fusefs::RequestCounts c = m->mount->request_counts();
  // The first of each is answered ENOSYS; none is sent again, and nothing is released.
  EXPECT_LE(c.open, 1u);
  EXPECT_LE(c.opendir, 1u);
  EXPECT_EQ(c.release, 0u);
  EXPECT_EQ(c.releasedir, 0u);
  // Every file was read once, then from the page cache (the kernel keeps it across opens).
  EXPECT_GE(c.read, 30u);
  EXPECT_LE(c.read, 30u + 1u);
}

TEST(FuseMetadata, OpensAreStillSeenWhenRecording) {
  TempDir tmp("lazycrypt-metadata");
  auto log = std::make_shared<fusefs::AccessLog>();
  fusefs::MountOptions options;
  options.access_recorder = fusefs::NewAccessLogRecorder(log);
  auto m = MountTar(ManySmallFiles(3), tmp / "layer", options);
  ASSERT_TRUE(m);
  EXPECT_EQ(StatAndReadAll(m->dir), 9);
  std::set<std::string> opened;
  for (const auto& a : log->Accesses()) opened.insert(a.path);
  EXPECT_EQ(opened.size(), 9u);
  EXPECT_GE(m->mount->request_counts().open, 9u);
}

// security.capability (VFS_CAP_REVISION_2, little endian) granting CAP_NET_RAW, as `ping` has.
std::string NetRawCapability() {
  std::string v(20, '\0');
  v[3] = 0x02;  // magic_etc = VFS_CAP_REVISION_2
  v[5] = 0x20;  // permitted (low word): 1 << CAP_NET_RAW (13)
  return v;
}

// A layer with xattrs (an opaque directory and whiteouts, a TOC xattr) on top of a plain lower
// directory, under one overlayfs: what the upper layer hides stays hidden, what it holds reads.
TEST(FuseMetadata, OpaqueDirectoriesWhiteoutsAndTocXattrsStillWorkThroughOverlay) {
  TempDir tmp("lazycrypt-metadata");
  // The layer below, plain on disk.
  const fs::path below = tmp / "below";
  fs::create_directories(below / "d");
  fs::create_directories(below / "keep");
  WriteFileString(below / "d/old", "old");
  WriteFileString(below / "gone", "gone");
  WriteFileString(below / "keep/x", "x");
  auto m = MountTar(TarBuilder()
                        .Dir("./d/")
                        .Marker("./d/.wh..wh..opq")
                        .File("./d/new", {{"user.k", "v"}})
                        .Marker("./.wh.gone")
                        .File("./keep/y", {{"security.capability", NetRawCapability()}})
                        .File("./plain")
                        .Take(),
                    tmp / "layer");
  ASSERT_TRUE(m);
  for (const char* name : {"c1", "c2"}) {
    Overlay ovl(tmp.path(), name, m->dir.string() + ":" + below.string());
    ASSERT_TRUE(ovl.mounted()) << ovl.error();
    struct stat st {};
    // Opaque: the lower d/old is hidden, the layer's d/new is there.
    errno = 0;
    EXPECT_EQ(::lstat((ovl / "d/old").c_str(), &st), -1);
    EXPECT_EQ(errno, ENOENT);
    EXPECT_EQ(ReadFileString(ovl / "d/new"), Content("./d/new"));
    std::set<std::string> in_d;
    for (const auto& e : fs::directory_iterator(ovl / "d")) in_d.insert(e.path().filename());
    EXPECT_EQ(in_d, (std::set<std::string>{"new"}));
    // Whiteout: gone is gone; keep/ merges both layers.
    errno = 0;
    EXPECT_EQ(::lstat((ovl / "gone").c_str(), &st), -1);
    EXPECT_EQ(errno, ENOENT);
    EXPECT_EQ(ReadFileString(ovl / "keep/x"), "x");
    EXPECT_EQ(ReadFileString(ovl / "keep/y"), Content("./keep/y"));
    // The TOC's xattrs, through the overlay.
    char value[16] = {};
    ASSERT_EQ(::getxattr((ovl / "d/new").c_str(), "user.k", value, sizeof value), 1);
    EXPECT_EQ(value[0], 'v');
    char cap[32] = {};
    ASSERT_EQ(::getxattr((ovl / "keep/y").c_str(), "security.capability", cap, sizeof cap), 20);
    EXPECT_EQ(std::string(cap, 20), NetRawCapability());
    errno = 0;
    EXPECT_EQ(::getxattr((ovl / "plain").c_str(), "user.k", value, sizeof value), -1);
    EXPECT_EQ(errno, ENODATA);
  }
  // And on the bare mount: the opaque mark and the listing.
  char value[16] = {};
  EXPECT_EQ(::lgetxattr((m->dir / "d").c_str(), "trusted.overlay.opaque", value, sizeof value), 1);
  char names[128] = {};
  const ssize_t n = ::listxattr((m->dir / "d/new").c_str(), names, sizeof names);
  ASSERT_EQ(n, 7);
  EXPECT_STREQ(names, "user.k");
  // This layer answers xattr questions itself (ENOSYS would have hidden the above).
  EXPECT_GE(m->mount->request_counts().getxattr, 2u);
}

// With the kernel opening files and directories itself and caching them for the mount's
// lifetime, a quarantine still fails what the layer would serve: reads of files open before it,
// new opens' reads, listings, stats.
TEST(FuseMetadata, QuarantineStillFailsReadsListingsAndStatsWithKernelOpens) {
  TempDir tmp("lazycrypt-metadata");
  auto m = MountTar(ManySmallFiles(2), tmp / "layer");
  ASSERT_TRUE(m);
  Overlay ovl(tmp.path(), "c1", m->dir.string());
  ASSERT_TRUE(ovl.mounted()) << ovl.error();
  EXPECT_EQ(StatAndReadAll(ovl.path()), 6);
  EXPECT_EQ(StatAndReadAll(m->dir), 6);
  const int open_before = ::open((m->dir / "pkg1/a.js").c_str(), O_RDONLY);
  ASSERT_GE(open_before, 0);

  m->layer->Quarantine();
  m->mount->InvalidateFileData();

  char buf[64];
  errno = 0;
  EXPECT_EQ(::pread(open_before, buf, sizeof buf, 0), -1);
  EXPECT_EQ(errno, EIO);
  ::close(open_before);
  const int fd = ::open((m->dir / "pkg0/b.js").c_str(), O_RDONLY);
  if (fd >= 0) {
    errno = 0;
    EXPECT_EQ(::read(fd, buf, sizeof buf), -1);
    EXPECT_EQ(errno, EIO);
    ::close(fd);
  } else {
    EXPECT_EQ(errno, EIO);
  }
  struct stat st {};
  errno = 0;
  EXPECT_EQ(::lstat((m->dir / "pkg0/c.js").c_str(), &st), -1);
  EXPECT_EQ(errno, EIO);
  DIR* dir = ::opendir((m->dir / "pkg1").c_str());
  if (dir != nullptr) {
    errno = 0;
    EXPECT_EQ(::readdir(dir), nullptr);
    EXPECT_EQ(errno, EIO);
    ::closedir(dir);
  } else {
    EXPECT_EQ(errno, EIO);
  }
  // Through the container's overlay, which had read everything: the file data is gone too.
  errno = 0;
  const int ofd = ::open((ovl / "pkg0/a.js").c_str(), O_RDONLY);
  if (ofd >= 0) {
    errno = 0;
    EXPECT_EQ(::read(ofd, buf, sizeof buf), -1);
    EXPECT_EQ(errno, EIO);
    ::close(ofd);
  } else {
    EXPECT_EQ(errno, EIO);
  }
}

}  // namespace
}  // namespace lazycrypt::testing
