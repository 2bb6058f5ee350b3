// Real FUSE mounts of lazycrypt layers (root, /dev/fuse): the mounted layer equals GNU tar's
// extraction of the original layer (with overlay whiteouts converted as containerd does) in
// content and metadata, for busybox and for a tree with every tar feature; layers stacked under
// overlayfs equal the image unpacked layer by layer; a tampered chunk is EIO while everything
// else reads; 16 concurrent readers get the right bytes; unmounting leaves an empty mount point.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include "cache/layer_data.h"
#include "common/file_io.h"
#include "format/layer_reader.h"
#include "format/writer.h"
#include "fusefs/fuse_fs.h"
#include "tests/test_util.h"
#include "tests/tree_compare.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;

fs::path DataScript(const std::string& name) { return SourceDir() / "tests" / "data" / name; }

void Sh(const std::string& command) {
  auto r = RunCommand(command);
  ASSERT_EQ(r.exit_code, 0) << command << "\n" << r.output;
}

void GnuTar(const fs::path& tree, const fs::path& tar) {
  Sh("tar --format=pax --xattrs --xattrs-include='*' --numeric-owner -C " +
      ShellQuote(tree.string()) + " -cf " + ShellQuote(tar.string()) + " .");
}

void GnuUntar(const fs::path& tar, const fs::path& dir, const std::string& extra = "") {
  fs::create_directories(dir);
  Sh("tar --xattrs --xattrs-include='*' --same-owner -p --numeric-owner " + extra + " -C " +
      ShellQuote(dir.string()) + " -xf " + ShellQuote(tar.string()));
}

void ExpectNoDifferences(const std::vector<std::string>& diffs, const std::string& what) {
  EXPECT_TRUE(diffs.empty()) << what << ": " << diffs.size() << " differences, e.g.:\n"
                             << (diffs.empty() ? "" : diffs[0]) << "\n"
                             << (diffs.size() > 1 ? diffs[1] : "") << "\n"
                             << (diffs.size() > 2 ? diffs[2] : "");
}

// Makes a GNU tar extraction look like containerd's overlay applier's output: `D/.wh.X` becomes a
// char device 0/0 `D/X` (permission bits 0, the whiteout's owner and mtime), `D/.wh..wh..opq`
// becomes xattr trusted.overlay.opaque=y on D. Directory mtimes are preserved.
void ConvertWhiteouts(const fs::path& root) {
  std::vector<fs::path> whiteouts;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    if (it->path().filename().string().starts_with(".wh.")) whiteouts.push_back(it->path());
  }
  for (const fs::path& w : whiteouts) {
    fs::path dir = w.parent_path();
    struct stat dir_st {}, w_st {};
    ASSERT_EQ(::lstat(dir.c_str(), &dir_st), 0);
    ASSERT_EQ(::lstat(w.c_str(), &w_st), 0);
    ASSERT_EQ(::unlink(w.c_str()), 0) << w;
    std::string name = w.filename().string();
    if (name == ".wh..wh..opq") {
      ASSERT_EQ(::lsetxattr(dir.c_str(), "trusted.overlay.opaque", "y", 1, 0), 0) << dir;
    } else {
      fs::path target = dir / name.substr(4);
      ASSERT_EQ(::mknod(target.c_str(), S_IFCHR, makedev(0, 0)), 0) << target;
      ASSERT_EQ(::chmod(target.c_str(), 0), 0);
      ASSERT_EQ(::lchown(target.c_str(), w_st.st_uid, w_st.st_gid), 0);
      struct timespec t[2] = {w_st.st_mtim, w_st.st_mtim};
      ASSERT_EQ(::utimensat(AT_FDCWD, target.c_str(), t, AT_SYMLINK_NOFOLLOW), 0);
    }
    struct timespec t[2] = {dir_st.st_atim, dir_st.st_mtim};
    ASSERT_EQ(::utimensat(AT_FDCWD, dir.c_str(), t, AT_SYMLINK_NOFOLLOW), 0);
  }
}

format::LayerKey TestKey() {
  std::vector<uint8_t> k(32);
  for (int i = 0; i < 32; ++i) k[i] = static_cast<uint8_t>(0x5a ^ (i * 7));
  return format::LayerKey(k);
}

// A lazycrypt blob of a tar, with small chunks so that files span chunks.
struct EncryptedLayer {
  fs::path blob;
  crypto::Sha256Digest toc_digest{};
};

EncryptedLayer Encrypt(const fs::path& tar, const fs::path& blob) {
  EncryptedLayer out{blob, {}};
  auto in = FdInputStream::Open(tar);
  EXPECT_TRUE(in.ok());
  auto os = AtomicFileOutputStream::Create(blob);
  EXPECT_TRUE(os.ok());
  if (!in.ok() || !os.ok()) return out;
  format::WriterOptions options;
  options.chunk_size_bytes = 64 << 10;
  options.threads = 2;
  auto r = format::WriteLayer(**in, TestKey(), **os, options);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE((*os)->Close().ok());
  if (r.ok()) out.toc_digest = r->toc_digest;
  return out;
}

// Members in destruction order: the mount goes first, the blob last.
struct MountedLayer {
  std::unique_ptr<FileBlobSource> blob;
  std::shared_ptr<cache::LayerData> data;
  std::unique_ptr<fusefs::FuseMount> mount;
};

std::unique_ptr<MountedLayer> MountLayer(const EncryptedLayer& layer, const fs::path& mountpoint,
                                         fusefs::MountOptions options = {}) {
  auto m = std::make_unique<MountedLayer>();
  auto blob = FileBlobSource::Open(layer.blob);
  EXPECT_TRUE(blob.ok()) << blob.status().ToString();
  if (!blob.ok()) return nullptr;
  m->blob = std::move(blob).value();
  auto reader = format::LayerReader::Open(*m->blob, TestKey(), layer.toc_digest);
  EXPECT_TRUE(reader.ok()) << reader.status().ToString();
  if (!reader.ok()) return nullptr;
  m->data = cache::DirectLayerData(std::move(reader).value());
  fs::create_directories(mountpoint);
  options.layer_name = layer.blob.filename().string();
  auto mount = fusefs::FuseMount::Mount(mountpoint, m->data, options);
  EXPECT_TRUE(mount.ok()) << mount.status().ToString();
  if (!mount.ok()) return nullptr;
  m->mount = std::move(mount).value();
  return m;
}

bool IsMountPoint(const fs::path& p) {
  struct stat a {}, b {};
  if (::stat(p.c_str(), &a) != 0 || ::stat(p.parent_path().c_str(), &b) != 0) return false;
  return a.st_dev != b.st_dev;
}

class FuseMountTree : public ::testing::TestWithParam<std::string> {};

TEST_P(FuseMountTree, MountEqualsGnuTarExtraction) {
  const std::string kind = GetParam();
  TempDir tmp("lazycrypt-fusefs");
  fs::path tree = tmp / "tree";
  if (kind == "busybox") {
    Sh("bash " + ShellQuote(DataScript("make-busybox-image.sh").string()) + " --rootfs " +
        ShellQuote(tree.string()));
  } else {
    Sh("bash " + ShellQuote(DataScript("make-feature-tree.sh").string()) + " " +
        ShellQuote(tree.string()));
  }
  GnuTar(tree, tmp / "layer.tar");
  EncryptedLayer layer = Encrypt(tmp / "layer.tar", tmp / "layer.blob");
  GnuUntar(tmp / "layer.tar", tmp / "expected");
  ConvertWhiteouts(tmp / "expected");

  auto access_log = std::make_shared<fusefs::AccessLog>();
  fusefs::MountOptions options;
  options.access_recorder = fusefs::NewAccessLogRecorder(access_log);
  auto m = MountLayer(layer, tmp / "mnt", options);
  ASSERT_TRUE(m);
  fs::path mnt = tmp / "mnt";
  ASSERT_TRUE(IsMountPoint(mnt));

  ExpectNoDifferences(CompareTrees(mnt, tmp / "expected"), kind + ": mount vs GNU tar");
  TreeCensus census = CountTree(mnt);
  EXPECT_GE(census.regular, 5u);
  EXPECT_GT(census.symlinks, 2u);
  EXPECT_GT(census.dirs, 3u);
  std::set<std::string> opened;  // one name per regular inode (each reported once)
  for (const auto& a : access_log->Accesses()) EXPECT_TRUE(opened.insert(a.path).second) << a.path;
  EXPECT_GE(opened.size(), census.regular - census.hardlinked / 2);

  // statfs: sizes from the layer, read-only.
  struct statvfs sv {};
  ASSERT_EQ(::statvfs(mnt.c_str(), &sv), 0);
  EXPECT_TRUE(sv.f_flag & ST_RDONLY);
  // The layer's tar stream is the source tar behind the salt header (FORMAT.md 5.1).
  EXPECT_EQ(sv.f_blocks,
            (fs::file_size(tmp / "layer.tar") + format::kLayerSaltHeaderSize + 4095) / 4096);
  EXPECT_EQ(sv.f_files, m->data->index().entries().size());

  // Writes are refused.
  errno = 0;
  EXPECT_EQ(::open((mnt / "newfile").c_str(), O_WRONLY | O_CREAT, 0644), -1);
  EXPECT_EQ(errno, EROFS);
  errno = 0;
  EXPECT_EQ(::mkdir((mnt / "newdir").c_str(), 0755), -1);
  EXPECT_EQ(errno, EROFS);

  if (kind == "features") {
    EXPECT_GE(census.char_devices, 2u);  // chardev + the whiteout
    EXPECT_GE(census.block_devices, 1u);
    EXPECT_GE(census.fifos, 1u);
    EXPECT_GE(census.hardlinked, 4u);
    EXPECT_GE(census.with_xattrs, 5u);  // 4 user/security + the opaque directory
    EXPECT_GE(census.nonzero_nsec_mtimes, 4u);
    EXPECT_TRUE(opened.contains("data/script.sh"));
    EXPECT_TRUE(opened.contains("data/random-3MiB.bin"));
    errno = 0;
    EXPECT_EQ(::open((mnt / "small.txt").c_str(), O_RDWR), -1);
    EXPECT_EQ(errno, EROFS);

    // Whiteouts as overlayfs expects them from a lowerdir.
    struct stat st {};
    ASSERT_EQ(::lstat((mnt / "whiteouts/deleted-file").c_str(), &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode));
    EXPECT_EQ(st.st_rdev, makedev(0, 0));
    EXPECT_NE(::lstat((mnt / "whiteouts/.wh.deleted-file").c_str(), &st), 0);
    EXPECT_NE(::lstat((mnt / "whiteouts/opaque/.wh..wh..opq").c_str(), &st), 0);
    char v[8] = {};
    EXPECT_EQ(::lgetxattr((mnt / "whiteouts/opaque").c_str(), "trusted.overlay.opaque", v, sizeof v), 1);
    EXPECT_EQ(v[0], 'y');

    // getxattr(2)/listxattr(2) protocol: size probe, ERANGE, ENODATA.
    fs::path f = mnt / "small.txt";
    EXPECT_EQ(::lgetxattr(f.c_str(), "user.comment", nullptr, 0), 12);
    char small[4];
    errno = 0;
    EXPECT_EQ(::lgetxattr(f.c_str(), "user.comment", small, sizeof small), -1);
    EXPECT_EQ(errno, ERANGE);
    char big[64] = {};
    ASSERT_EQ(::lgetxattr(f.c_str(), "user.comment", big, sizeof big), 12);
    EXPECT_EQ(std::string(big, 12), "a user xattr");
    errno = 0;
    EXPECT_EQ(::lgetxattr(f.c_str(), "user.absent", big, sizeof big), -1);
    EXPECT_EQ(errno, ENODATA);
    ssize_t list_size = ::llistxattr(f.c_str(), nullptr, 0);
    EXPECT_EQ(list_size, static_cast<ssize_t>(sizeof "user.comment"));
    errno = 0;
    EXPECT_EQ(::llistxattr(f.c_str(), small, sizeof small), -1);
    EXPECT_EQ(errno, ERANGE);
  }

  ASSERT_TRUE(m->mount->Unmount().ok());
  EXPECT_FALSE(IsMountPoint(mnt));
}

INSTANTIATE_TEST_SUITE_P(Trees, FuseMountTree, ::testing::Values("busybox", "features"),
                         [](const auto& info) { return info.param; });

// Applies one layer tar to an unpacked image the way an image is unpacked: whiteouts first
// (opaque: the lower contents of the directory go; .wh.X: X goes), then the layer's other entries.
void ApplyLayer(const fs::path& tar, const fs::path& rootfs, const fs::path& scratch) {
  GnuUntar(tar, scratch);
  std::vector<fs::path> whiteouts;
  for (auto it = fs::recursive_directory_iterator(scratch); it != fs::recursive_directory_iterator(); ++it) {
    if (it->path().filename().string().starts_with(".wh.")) whiteouts.push_back(it->path());
  }
  for (const fs::path& w : whiteouts) {
    fs::path rel_dir = fs::relative(w.parent_path(), scratch);
    fs::path dir = rootfs / rel_dir;
    std::string name = w.filename().string();
    if (name == ".wh..wh..opq") {
      if (fs::exists(dir)) {
        for (const auto& child : fs::directory_iterator(dir)) fs::remove_all(child.path());
      }
    } else {
      fs::remove_all(dir / name.substr(4));
    }
  }
  GnuUntar(tar, rootfs, "--exclude='.wh.*'");
}

TEST(FuseMountOverlay, StackedLayersEqualUnpackedImage) {
  TempDir tmp("lazycrypt-fusefs");
  // Layer 1: the base.
  Sh("set -e; d=" + ShellQuote((tmp / "t1").string()) +
      "; mkdir -p $d/a $d/b/y $d/d $d/keepdir; echo one >$d/a/1; echo two >$d/a/2; echo x >$d/b/x;"
      " echo z >$d/b/y/z; echo c >$d/c; echo keep >$d/d/keep; echo k >$d/keepdir/k;"
      " ln -s a/1 $d/link; touch -d '2020-01-01 00:00:00.5' $d/a/1 $d");
  // Layer 2: deletes the file c and the directory b/y, makes a opaque (a/1 and a/2 vanish,
  // a/new appears), adds d/added.
  Sh("set -e; d=" + ShellQuote((tmp / "t2").string()) +
      "; mkdir -p $d/a $d/b $d/d; : >$d/.wh.c; : >$d/b/.wh.y; : >$d/a/.wh..wh..opq;"
      " echo new >$d/a/new; echo added >$d/d/added; chmod 0700 $d/d; touch -d '2021-02-03 04:05:06' $d/d $d");
  // Layer 3: brings c back as a directory, replaces d/keep, adds e/file.
  Sh("set -e; d=" + ShellQuote((tmp / "t3").string()) +
      "; mkdir -p $d/c $d/d $d/e; echo again >$d/c/inside; echo replaced >$d/d/keep;"
      " echo e >$d/e/file; chmod 0700 $d/d; touch -d '2022-03-04 05:06:07.25' $d/e/file $d/d $d");
  std::vector<std::unique_ptr<MountedLayer>> mounts;
  std::string lowerdirs;
  for (int i = 1; i <= 3; ++i) {
    std::string n = std::to_string(i);
    GnuTar(tmp / ("t" + n), tmp / ("l" + n + ".tar"));
    EncryptedLayer layer = Encrypt(tmp / ("l" + n + ".tar"), tmp / ("l" + n + ".blob"));
    mounts.push_back(MountLayer(layer, tmp / ("m" + n)));
    ASSERT_TRUE(mounts.back());
    lowerdirs = (tmp / ("m" + n)).string() + (lowerdirs.empty() ? "" : ":" + lowerdirs);
    ApplyLayer(tmp / ("l" + n + ".tar"), tmp / "expected", tmp / ("scratch" + n));
  }
  fs::create_directory(tmp / "merged");
  std::string opts = "lowerdir=" + lowerdirs;
  ASSERT_EQ(::mount("overlay", (tmp / "merged").c_str(), "overlay", MS_RDONLY, opts.c_str()), 0)
      << "overlayfs refused the FUSE lowerdirs: " << std::strerror(errno);
  auto diffs = CompareTrees(tmp / "merged", tmp / "expected");
  // Spot checks that the whiteouts were honoured, so the comparison is not vacuous.
  EXPECT_FALSE(fs::exists(tmp / "merged/b/y"));
  EXPECT_FALSE(fs::exists(tmp / "merged/a/1"));
  EXPECT_TRUE(fs::is_directory(tmp / "merged/c"));
  EXPECT_EQ(ReadFileString(tmp / "merged/d/keep"), "replaced\n");
  EXPECT_EQ(ReadFileString(tmp / "merged/a/new"), "new\n");
  EXPECT_EQ(ReadFileString(tmp / "merged/keepdir/k"), "k\n");
  EXPECT_EQ(ListFiles(tmp / "merged"),
            (std::vector<std::string>{"a/new", "b/x", "c/inside", "d/added", "d/keep", "e/file",
                                      "keepdir/k"}));
  ASSERT_EQ(::umount2((tmp / "merged").c_str(), 0), 0);
  ExpectNoDifferences(diffs, "overlay of 3 FUSE layers vs unpacked image");
  for (auto& m : mounts) EXPECT_TRUE(m->mount->Unmount().ok());
}

// Two 256 KiB random files; returns their contents.
std::pair<std::string, std::string> MakeTwoFileTree(const fs::path& tmp) {
  fs::create_directories(tmp / "t");
  Sh("head -c 262144 /dev/urandom >" + ShellQuote((tmp / "t/a.bin").string()) +
      "; head -c 262144 /dev/urandom >" + ShellQuote((tmp / "t/b.bin").string()));
  return {ReadFileString(tmp / "t/a.bin"), ReadFileString(tmp / "t/b.bin")};
}

TEST(FuseMountTamper, TamperedChunkIsEioOtherFilesReadFine) {
  TempDir tmp("lazycrypt-fusefs");
  auto [a, b] = MakeTwoFileTree(tmp.path());
  GnuTar(tmp / "t", tmp / "l.tar");
  EncryptedLayer layer = Encrypt(tmp / "l.tar", tmp / "l.blob");
  auto m = MountLayer(layer, tmp / "mnt");
  ASSERT_TRUE(m);
  // Flip a byte inside the sealed payload of the chunk holding a.bin's byte 100000 (the index is
  // already open: only chunk reads see the damage).
  const format::LayerIndex& index = m->data->index();
  std::optional<format::EntryView> ea = index.Find("a.bin");
  ASSERT_TRUE(ea);
  format::ChunkRange bad = index.ChunksForRange(*ea, 100000, 1);
  ASSERT_FALSE(bad.empty());
  const format::ChunkInfo& chunk = index.chunks()[bad.first];
  FlipBit(tmp / "l.blob", chunk.blob_offset + format::kRecordHeaderSize + 5, 0x40);

  int fd = ::open((tmp / "mnt/a.bin").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::vector<char> buf(4096);
  for (int attempt = 0; attempt < 2; ++attempt) {  // the failure is not cached as data
    errno = 0;
    EXPECT_EQ(::pread(fd, buf.data(), buf.size(), 100000), -1);
    EXPECT_EQ(errno, EIO);
  }
  ::close(fd);
  // cat of the whole file fails too; b.bin reads completely and correctly.
  EXPECT_NE(RunCommand("cat " + ShellQuote((tmp / "mnt/a.bin").string()) + " >/dev/null").exit_code, 0);
  EXPECT_TRUE(ReadFileString(tmp / "mnt/b.bin") == b);
  EXPECT_TRUE(m->mount->Unmount().ok());
}

TEST(FuseMountConcurrency, SixteenReadersGetIdenticalCorrectBytes) {
  TempDir tmp("lazycrypt-fusefs");
  fs::create_directories(tmp / "t/sub");
  Sh("set -e; cd " + ShellQuote((tmp / "t").string()) +
      "; head -c 3000000 /dev/urandom >big.bin; seq 1 300000 >sub/text.txt;"
      " head -c 70001 /dev/urandom >sub/odd.bin; echo small >small");
  std::vector<std::string> names{"big.bin", "sub/text.txt", "sub/odd.bin", "small"};
  std::vector<std::string> originals;
  for (const auto& n : names) originals.push_back(ReadFileString(tmp / "t" / n));
  GnuTar(tmp / "t", tmp / "l.tar");
  EncryptedLayer layer = Encrypt(tmp / "l.tar", tmp / "l.blob");
  auto m = MountLayer(layer, tmp / "mnt");
  ASSERT_TRUE(m);

  std::atomic<int> mismatches{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      // Odd readers bypass the page cache (O_DIRECT) so that the FUSE server really serves
      // concurrent requests; read sizes differ per thread.
      bool direct = t % 2 == 1;
      size_t piece = direct ? 4096 * (1 + t) : 1000 + 977 * t;
      for (size_t k = 0; k < names.size(); ++k) {
        size_t i = (k + t) % names.size();
        int fd = ::open((tmp / "mnt" / names[i]).c_str(), O_RDONLY | (direct ? O_DIRECT : 0));
        if (fd < 0) {
          ++failures;
          continue;
        }
        void* mem = nullptr;
        if (posix_memalign(&mem, 4096, piece) != 0) {
          ++failures;
          ::close(fd);
          continue;
        }
        std::string got;
        off_t off = 0;
        while (true) {
          ssize_t n = ::pread(fd, mem, piece, off);
          if (n < 0) {
            ++failures;
            break;
          }
          if (n == 0) break;
          got.append(static_cast<char*>(mem), static_cast<size_t>(n));
          off += n;
        }
        std::free(mem);
        ::close(fd);
        if (got != originals[i]) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_TRUE(m->mount->Unmount().ok());
}

TEST(FuseMountLifecycle, UnmountIdleBusyAndDestructor) {
  TempDir tmp("lazycrypt-fusefs");
  auto [a, b] = MakeTwoFileTree(tmp.path());
  GnuTar(tmp / "t", tmp / "l.tar");
  EncryptedLayer layer = Encrypt(tmp / "l.tar", tmp / "l.blob");

  // Idle: unmount works, is idempotent, and leaves an empty directory.
  auto m = MountLayer(layer, tmp / "mnt");
  ASSERT_TRUE(m);
  EXPECT_TRUE(ReadFileString(tmp / "mnt/a.bin") == a);
  ASSERT_TRUE(m->mount->Unmount().ok());
  EXPECT_TRUE(m->mount->Unmount().ok());
  EXPECT_FALSE(IsMountPoint(tmp / "mnt"));
  EXPECT_TRUE(fs::is_empty(tmp / "mnt"));

  // Busy: an open file keeps it mounted (FailedPrecondition), closing it lets it go.
  m = MountLayer(layer, tmp / "mnt");
  ASSERT_TRUE(m);
  int fd = ::open((tmp / "mnt/b.bin").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  Status busy = m->mount->Unmount();
  EXPECT_EQ(busy.code(), StatusCode::kFailedPrecondition) << busy.ToString();
  EXPECT_TRUE(IsMountPoint(tmp / "mnt"));
  char c;
  EXPECT_EQ(::pread(fd, &c, 1, 0), 1);  // still served
  EXPECT_EQ(c, b[0]);
  ::close(fd);
  EXPECT_TRUE(m->mount->Unmount().ok());
  EXPECT_TRUE(fs::is_empty(tmp / "mnt"));

  // Destructor with a file still open: detaches and aborts instead of hanging; the open file
  // then fails instead of returning data.
  m = MountLayer(layer, tmp / "mnt");
  ASSERT_TRUE(m);
  fd = ::open((tmp / "mnt/a.bin").c_str(), O_RDONLY | O_DIRECT);
  ASSERT_GE(fd, 0);
  m->mount.reset();
  EXPECT_FALSE(IsMountPoint(tmp / "mnt"));
  void* mem = nullptr;
  ASSERT_EQ(posix_memalign(&mem, 4096, 4096), 0);
  EXPECT_EQ(::pread(fd, mem, 4096, 0), -1);
  std::free(mem);
  ::close(fd);
}

TEST(FuseMountOptions, RejectsBadOptionsAndMissingMountPoint) {
  TempDir tmp("lazycrypt-fusefs");
  auto [a, b] = MakeTwoFileTree(tmp.path());
  GnuTar(tmp / "t", tmp / "l.tar");
  EncryptedLayer layer = Encrypt(tmp / "l.tar", tmp / "l.blob");
  auto blob = FileBlobSource::Open(layer.blob);
  ASSERT_TRUE(blob.ok());
  auto reader = format::LayerReader::Open(**blob, TestKey(), layer.toc_digest);
  ASSERT_TRUE(reader.ok());
  std::shared_ptr<cache::LayerData> data = cache::DirectLayerData(std::move(reader).value());
  fusefs::MountOptions bad;
  bad.fsname = "x,allow_root";
  auto r1 = fusefs::FuseMount::Mount(tmp.path(), data, bad);
  EXPECT_EQ(r1.status().code(), StatusCode::kInvalidArgument);
  auto r2 = fusefs::FuseMount::Mount(tmp / "missing", data, {});
  EXPECT_EQ(r2.status().code(), StatusCode::kInvalidArgument);
  auto r3 = fusefs::FuseMount::Mount(tmp.path(), nullptr, {});
  EXPECT_EQ(r3.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(IsMountPoint(tmp.path()));
}

}  // namespace
}  // namespace lazycrypt::testing
