// A quarantined layer on a real FUSE mount (root, /dev/fuse; docs/FORMAT.md §8.4): its metadata
// is the author's as much as its bytes, so lookup, getattr (but the root's), readlink, readdir,
// getxattr and listxattr fail with EIO once it is quarantined; and the page-cache filler stores
// nothing for a layer that became quarantined after a read was answered.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "cache/layer_data.h"
#include "format/layer_reader.h"
#include "format/writer.h"
#include "fusefs/fuse_fs.h"
#include "tar/tar_writer.h"
#include "tests/test_util.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;

format::LayerKey Key() {
  std::vector<uint8_t> k(32);
  for (int i = 0; i < 32; ++i) k[i] = static_cast<uint8_t>(0x3c ^ (i * 5));
  return format::LayerKey(k);
}

constexpr uint64_t kBigSize = 1 << 20;

tar::Entry Node(std::string name, tar::EntryType type, uint32_t mode, uint64_t size = 0) {
  tar::Entry e;
  e.name = std::move(name);
  e.type = type;
  e.mode = mode;
  e.mtime_sec = 1700000000;
  e.size = size;
  return e;
}

// ./d/f (with xattr user.k), ./s -> d/f, ./big.bin (1 MiB).
std::vector<uint8_t> SampleTar() {
  MemoryOutputStream out;
  tar::TarWriter w(out);
  EXPECT_TRUE(w.AppendEntry(Node("./", tar::EntryType::kDirectory, 0755)).ok());
  EXPECT_TRUE(w.AppendEntry(Node("./d/", tar::EntryType::kDirectory, 0755)).ok());
  const std::string f = "planted";
  tar::Entry fe = Node("./d/f", tar::EntryType::kRegular, 0644, f.size());
  fe.xattrs["user.k"] = "v";
  EXPECT_TRUE(w.AppendEntry(fe, ByteSpan(reinterpret_cast<const uint8_t*>(f.data()), f.size())).ok());
  tar::Entry s = Node("./s", tar::EntryType::kSymlink, 0777);
  s.link_name = "d/f";
  EXPECT_TRUE(w.AppendEntry(s).ok());
  std::vector<uint8_t> big(kBigSize);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>('a' + i % 23);
  EXPECT_TRUE(w.AppendEntry(Node("./big.bin", tar::EntryType::kRegular, 0644, big.size()), big).ok());
  EXPECT_TRUE(w.Finish().ok());
  return out.Take();
}

// DirectLayerData whose quarantine the test sets. ViewFile lends the whole file as `around`
// (as CachedLayer lends the rest of the chunks it opened), so that small reads feed the
// page-cache filler; each view's release (the filler is done with it) is counted.
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
    auto whole = std::make_shared<std::vector<uint8_t>>(entry.size());
    size_t done = 0;
    while (done < whole->size()) {
      LC_ASSIGN_OR_RETURN(size_t n, inner_->ReadFile(entry, done, MutableByteSpan(
                                                               whole->data() + done,
                                                               whole->size() - done)));
      if (n == 0) break;
      done += n;
    }
    cache::FileView view;
    const size_t want =
        offset >= done ? 0 : static_cast<size_t>(std::min<uint64_t>(size, done - offset));
    view.spans.push_back(ByteSpan(whole->data() + offset, want));
    view.around.push_back({0, ByteSpan(whole->data(), done)});
    view.pins.push_back(whole);
    view.pins.push_back(std::shared_ptr<const void>(nullptr, [this](const void*) {
      std::lock_guard l(mu_);
      ++views_released_;
      cv_.notify_all();
    }));
    // The verification fails while this view waits for the filler.
    if (quarantine_after_next_view_.exchange(false)) quarantined_.store(true);
    return view;
  }
  cache::LayerStats stats() const override { return inner_->stats(); }
  bool quarantined() const override { return quarantined_.load(); }

  void Quarantine() { quarantined_.store(true); }
  void QuarantineAfterNextView() { quarantine_after_next_view_.store(true); }
  bool WaitForViewsReleased(int n) {
    std::unique_lock l(mu_);
    return cv_.wait_for(l, std::chrono::seconds(20), [&] { return views_released_ >= n; });
  }

 private:
  std::unique_ptr<cache::LayerData> inner_;
  std::atomic<bool> quarantined_{false};
  std::atomic<bool> quarantine_after_next_view_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  int views_released_ = 0;
};

class FuseQuarantine : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tar = SampleTar();
    MemoryInputStream in(tar);
    MemoryOutputStream out;
    format::WriterOptions o;
    o.chunk_size_bytes = format::kMinChunkSizeBytes;
    auto w = format::WriteLayer(in, Key(), out, o);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    blob_ = std::make_unique<MemoryBlobSource>(out.Take());
    auto reader = format::LayerReader::Open(*blob_, Key(), w->toc_digest);
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    layer_ = std::make_shared<QuarantinableLayer>(cache::DirectLayerData(std::move(*reader)));
    mnt_ = tmp_.path() / "mnt";
    fs::create_directories(mnt_);
    fusefs::MountOptions mo;
    mo.layer_name = "quarantine-test";
    auto mount = fusefs::FuseMount::Mount(mnt_, layer_, mo);
    ASSERT_TRUE(mount.ok()) << mount.status().ToString();
    mount_ = std::move(*mount);
  }
  void TearDown() override {
    if (mount_) EXPECT_TRUE(mount_->Unmount().ok());
  }
  std::string P(const std::string& rel) const { return (mnt_ / rel).string(); }

  TempDir tmp_{"lazycrypt-quarantine"};
  std::unique_ptr<MemoryBlobSource> blob_;
  std::shared_ptr<QuarantinableLayer> layer_;
  fs::path mnt_;
  std::unique_ptr<fusefs::FuseMount> mount_;  // destroyed first
};

TEST_F(FuseQuarantine, MetadataFailsWithEioOnceQuarantinedRootStillStats) {
  // Before: everything is served (and cached by the kernel).
  struct stat st {};
  ASSERT_EQ(::lstat(P("d/f").c_str(), &st), 0);
  char target[64] = {};
  ASSERT_EQ(::readlink(P("s").c_str(), target, sizeof target), 3);
  char value[16] = {};
  ASSERT_EQ(::getxattr(P("d/f").c_str(), "user.k", value, sizeof value), 1);
  DIR* dir = ::opendir(P("d").c_str());
  ASSERT_NE(dir, nullptr);
  int names = 0;
  while (::readdir(dir) != nullptr) ++names;
  ::closedir(dir);
  EXPECT_EQ(names, 3);

  layer_->Quarantine();
  mount_->InvalidateFileData();  // what MountedLayer does when the verification fails

  errno = 0;
  EXPECT_EQ(::lstat(P("d/f").c_str(), &st), -1);
  EXPECT_EQ(errno, EIO);
  errno = 0;
  EXPECT_EQ(::lstat(P("never-looked-up").c_str(), &st), -1);
  EXPECT_EQ(errno, EIO);  // not ENOENT: which names exist is the author's too
  errno = 0;
  EXPECT_EQ(::readlink(P("s").c_str(), target, sizeof target), -1);
  EXPECT_EQ(errno, EIO);
  errno = 0;
  EXPECT_EQ(::getxattr(P("d/f").c_str(), "user.k", value, sizeof value), -1);
  EXPECT_EQ(errno, EIO);
  errno = 0;
  EXPECT_EQ(::listxattr(P("d/f").c_str(), value, sizeof value), -1);
  EXPECT_EQ(errno, EIO);
  dir = ::opendir(P("d").c_str());
  if (dir != nullptr) {
    errno = 0;
    EXPECT_EQ(::readdir(dir), nullptr);
    EXPECT_EQ(errno, EIO);
    ::closedir(dir);
  } else {
    EXPECT_EQ(errno, EIO);
  }
  // The root still answers getattr, so that the mount can be unmounted (TearDown checks that).
  EXPECT_EQ(::stat(mnt_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

TEST_F(FuseQuarantine, FillerStoresNothingOnceTheLayerIsQuarantined) {
  int fd = ::open(P("big.bin").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  // No kernel read-ahead: the FUSE read is this one page, the filler gets the rest of the file.
  ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);
  layer_->QuarantineAfterNextView();
  char page[4096];
  ASSERT_EQ(::pread(fd, page, sizeof page, 0), static_cast<ssize_t>(sizeof page));
  EXPECT_EQ(page[1], 'b');
  ASSERT_TRUE(layer_->quarantined());
  // The filler is done with the view (stored or skipped it).
  ASSERT_TRUE(layer_->WaitForViewsReleased(1));
  // Had it stored the rest of the file, the kernel would serve this page without asking.
  errno = 0;
  EXPECT_EQ(::pread(fd, page, sizeof page, kBigSize / 2), -1);
  EXPECT_EQ(errno, EIO);
  ::close(fd);
}

}  // namespace
}  // namespace lazycrypt::testing
