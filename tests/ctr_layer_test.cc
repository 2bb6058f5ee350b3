// The lazily served ocicrypt AES-CTR layers (lazylayer/ctr_layer.h: ocicrypt-estargz and indexed
// ocicrypt), mounted with a real FUSE mount over an in-memory blob, without a registry:
//   - the background verification yields to reads only boundedly: with readers that never let
//     the blob source rest (every read fetches: no opened-chunk memory; a slow source), it still
//     completes while they read (both formats: the same code). Before the bound it waited for a
//     pause that never came, and a bad layer was never quarantined;
//   - an indexed layer serves the tar's files (chunk i = span i) and verifies; an index whose
//     table of contents is not the tar's (a key holder can seal any), or whose span digest is
//     not the blob's, serves EIO or is quarantined, never other bytes.
// Needs root and /dev/fuse.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cache/chunk_store.h"
#include "common/io.h"
#include "compress/compress.h"
#include "crypto/digest.h"
#include "estargz/writer.h"
#include "format/toc.h"
#include "image/estargz_layer.h"
#include "image/layer.h"
#include "image/oci.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"
#include "lazylayer/estargz_layer.h"
#include "lazylayer/indexed_layer.h"
#include "tests/command_util.h"
#include "tests/harness/subprocess.h"
#include "tests/integration_util.h"
#include "tests/lazy_handler_util.h"
#include "tests/snapshotter_util.h"
#include "tests/test_util.h"
#include "zindex/zindex.h"
#include "zindex/zindex.pb.h"
#include "zindex/zindex_internal.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::MustRun;
using testing::ReadErrno;

// Every read sleeps first: a registry far away. The first read of a chunk (a small read: the
// verification reads the blob whole) after Arm does not return until Release: a read in flight for as long
// as the test wants, so that the verification never sees a moment without a fetch.
class SlowSource final : public BlobSource {
 public:
  SlowSource(std::vector<uint8_t> bytes, std::chrono::milliseconds delay)
      : inner_(std::move(bytes)), delay_(delay) {}
  uint64_t size() const override { return inner_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    if (armed_.load() && out.size() < inner_.size() / 2 && !held_one_.exchange(true)) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return released_; });
    }
    std::this_thread::sleep_for(delay_);
    return inner_.ReadAt(offset, out);
  }
  // From now on (the mount's own reads are done).
  void Arm() { armed_.store(true); }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }

 private:
  MemoryBlobSource inner_;
  std::chrono::milliseconds delay_;
  std::atomic<bool> armed_{false}, held_one_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
};

class CtrLayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse (FUSE mounts)";
    }
    auto tmp = harness::TempDir::Create("ctr-layer");
    ASSERT_TRUE(tmp.ok());
    tmp_ = std::make_unique<harness::TempDir>(std::move(tmp).value());
    const fs::path root = tmp_->path();
    fs::create_directories(root / "keys");
    key_ = testing::GenerateKeyPair(root / "keys", "ec256", "node");
    // Four files of 512 KiB that do not compress: many chunks (and spans) to read.
    const fs::path src = root / "src";
    fs::create_directories(src / "d");
    for (int i = 0; i < 4; ++i) {
      MustRun({"dd", "if=/dev/urandom", "of=" + (src / "d" / ("f" + std::to_string(i))).string(),
               "bs=64k", "count=8", "status=none"});
    }
    // And text that deflate compresses with back-references (a span's window matters).
    std::string text;
    for (int i = 0; text.size() < (512u << 10); ++i) {
      text += "line " + std::to_string(i % 1000) + ": the same few words again and again\n";
    }
    testing::WriteFileString(src / "d" / "t.txt", text);
    MustRun({"tar", "--numeric-owner", "-C", src.string(), "-cf", (root / "layer.tar").string(),
             "d"});
    tar_ = testing::ReadFileString(root / "layer.tar");
    mountpoint_ = root / "mnt";
    fs::create_directories(mountpoint_);
    auto priv = keywrap::PrivateKey::Load(key_.priv.string());
    ASSERT_TRUE(priv.ok()) << priv.status().ToString();
    std::vector<keywrap::PrivateKey> keys;
    keys.push_back(std::move(*priv));
    keys_ = std::make_unique<keywrap::KeyRing>(std::move(keys));
  }

  void TearDown() override {
    if (tmp_) testing::AbortFuseConnectionsUnder(tmp_->path());
  }

  keywrap::Recipients Recipients() {
    auto pub = keywrap::PublicKey::Load(key_.pub);
    EXPECT_TRUE(pub.ok()) << pub.status().ToString();
    std::vector<keywrap::PublicKey> pubs;
    pubs.push_back(std::move(*pub));
    return keywrap::Recipients(std::move(pubs));
  }

  // The tar as an ocicrypt-estargz layer (64 KiB chunks).
  void MakeEstargzLayer() {
    MemoryInputStream in(AsBytes(tar_));
    image::Descriptor source;
    source.media_type = "application/vnd.oci.image.layer.v1.tar";
    source.digest = crypto::OciDigest(crypto::Sha256::Of(AsBytes(tar_)));
    source.size = tar_.size();
    estargz::WriterOptions o;
    o.chunk_size_bytes = 64 << 10;
    o.spool_dir = tmp_->path();
    MemoryOutputStream out;
    auto made = image::EncryptEstargzOcicryptLayer(in, source, out, Recipients(), o);
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    descriptor_ = made->descriptor;
    blob_ = out.bytes();
  }

  // The tar gzip-compressed and encrypted as skopeo does (standard ocicrypt), its diff_id.
  void MakeOcicryptLayer() {
    const fs::path tar = tmp_->path() / "layer.tar";
    MustRun({"gzip", "-n", "-k", "-f", tar.string()});
    const std::string gz = testing::ReadFileString(tar.string() + ".gz");
    image::Descriptor original;
    original.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
    original.digest = crypto::OciDigest(crypto::Sha256::Of(AsBytes(gz)));
    original.size = gz.size();
    MemoryInputStream in(AsBytes(gz));
    MemoryOutputStream out;
    auto encrypted = image::EncryptOcicryptLayer(in, original, out, Recipients());
    ASSERT_TRUE(encrypted.ok()) << encrypted.status().ToString();
    descriptor_ = *encrypted;
    descriptor_.digest = crypto::OciDigest(crypto::Sha256::Of(out.bytes()));
    descriptor_.size = out.bytes().size();
    blob_ = out.bytes();
    diff_id_ = crypto::OciDigest(crypto::Sha256::Of(AsBytes(tar_)));
  }

  image::OcicryptLayerCipher Cipher() {
    auto cipher = image::UnwrapOcicryptLayer(descriptor_, *keys_);
    EXPECT_TRUE(cipher.ok()) << cipher.status().ToString();
    return std::move(*cipher);
  }

  std::vector<uint8_t> SealedIndex(uint64_t span_bytes = 64 << 10) {
    MemoryInputStream in(blob_);
    zindex::BuildOptions o;
    o.span_bytes = span_bytes;
    auto sealed = zindex::BuildSealedIndex(in, descriptor_, Cipher(), o);
    EXPECT_TRUE(sealed.ok()) << sealed.status().ToString();
    return sealed.ok() ? *sealed : std::vector<uint8_t>{};
  }

  // Mounted from only the core of `sealed` (as the snapshotter does), its windows read from
  // `index_source` (default: `sealed` in memory).
  Result<std::unique_ptr<lazylayer::MountedIndexedLayer>> MountIndexed(
      std::shared_ptr<BlobSource> source, const std::vector<uint8_t>& sealed,
      const lazylayer::IndexedMountOptions& o, std::shared_ptr<BlobSource> index_source = nullptr) {
    image::OcicryptLayerCipher cipher = Cipher();
    LC_ASSIGN_OR_RETURN(const uint64_t core, zindex::SealedCoreBytes(sealed));
    LC_ASSIGN_OR_RETURN(auto index,
                        zindex::OpenedIndex::Open(ByteSpan(sealed).first(static_cast<size_t>(core)),
                                                  sealed.size(), descriptor_, cipher));
    if (!index_source) index_source = std::make_shared<MemoryBlobSource>(sealed);
    return lazylayer::MountedIndexedLayer::Mount(
        mountpoint_, std::move(source), std::move(index_source), descriptor_, std::move(cipher),
        std::move(index),
        lazylayer::IndexedStoreKey(descriptor_.digest,
                                   crypto::OciDigest(crypto::Sha256::Of(sealed))),
        o);
  }

  std::shared_ptr<const zindex::OpenedIndex> Opened(const std::vector<uint8_t>& sealed) {
    auto index = zindex::OpenedIndex::Open(sealed, sealed.size(), descriptor_, Cipher());
    EXPECT_TRUE(index.ok()) << index.status().ToString();
    return index.ok() ? *index : nullptr;
  }

  // `sealed` as a key holder could re-make it: unsealed with the layer key, `edit`ed (the core's
  // proto and the windows area, under the seal's salt), sealed again (FORMAT.md §11.5: sealing
  // is not signing).
  std::vector<uint8_t> Recraft(
      const std::vector<uint8_t>& sealed,
      const std::function<void(zindex::v2::Index&, zindex::internal::UnsealedIndex&)>& edit) {
    image::OcicryptLayerCipher cipher = Cipher();
    auto u = zindex::internal::UnsealIndex(sealed, descriptor_.digest, descriptor_.size,
                                           cipher.key.span());
    EXPECT_TRUE(u.ok()) << u.status().ToString();
    if (!u.ok()) return {};
    zindex::v2::Index index;
    EXPECT_TRUE(index.ParseFromArray(u->serialized.data(), static_cast<int>(u->serialized.size())));
    edit(index, *u);
    const std::string serialized = index.SerializeAsString();
    auto resealed = zindex::internal::SealIndex(AsBytes(serialized), u->salt, u->windows_area,
                                                descriptor_.digest, descriptor_.size,
                                                cipher.key.span());
    EXPECT_TRUE(resealed.ok()) << resealed.status().ToString();
    return resealed.ok() ? *resealed : std::vector<uint8_t>{};
  }
  std::vector<uint8_t> Recraft(const std::vector<uint8_t>& sealed,
                               const std::function<void(zindex::v2::Index&)>& edit) {
    return Recraft(sealed, [&](zindex::v2::Index& index, zindex::internal::UnsealedIndex&) {
      edit(index);
    });
  }

  // The plain window of span `i` of `index` (what its checkpoint holds): the tar bytes before
  // the span's start.
  std::vector<uint8_t> PlainWindow(const zindex::v2::Index& index, int i) {
    const auto& span = index.spans(i);
    const uint64_t end = span.out_offset();
    return std::vector<uint8_t>(tar_.begin() + static_cast<ptrdiff_t>(end - span.window_size()),
                                tar_.begin() + static_cast<ptrdiff_t>(end));
  }

  // Span `i`'s sealed window replaced by `sealed_window` in `u`'s windows area and pinned by its
  // digest in the core (as its key holder would), the later spans' window offsets moved by the
  // difference in size.
  static void ReplaceWindow(zindex::v2::Index& index, zindex::internal::UnsealedIndex& u, int i,
                            const std::vector<uint8_t>& sealed_window) {
    auto* span = index.mutable_spans(i);
    const uint64_t at = span->window_offset(), old = span->window_sealed_size();
    std::vector<uint8_t> area(u.windows_area.begin(),
                              u.windows_area.begin() + static_cast<ptrdiff_t>(at));
    area.insert(area.end(), sealed_window.begin(), sealed_window.end());
    area.insert(area.end(), u.windows_area.begin() + static_cast<ptrdiff_t>(at + old),
                u.windows_area.end());
    u.windows_area = std::move(area);
    span->set_window_sealed_size(static_cast<uint32_t>(sealed_window.size()));
    const crypto::Sha256Digest pin = crypto::Sha256::Of(sealed_window);
    span->set_window_sha256(std::string(pin.begin(), pin.end()));
    const int64_t delta = static_cast<int64_t>(sealed_window.size()) - static_cast<int64_t>(old);
    for (int j = i + 1; j < index.spans_size(); ++j) {
      auto* later = index.mutable_spans(j);
      if (later->window_size() == 0) continue;
      later->set_window_offset(static_cast<uint64_t>(static_cast<int64_t>(later->window_offset()) +
                                                     delta));
    }
  }

  // The first span with a window that starts inside d/t.txt (deflate back-references there reach
  // into the window), -1 when none.
  static int TextSpanWithAWindow(const zindex::v2::Index& index) {
    uint64_t begin = 0, end = 0;
    for (const auto& e : index.entries()) {
      if (e.name() == "d/t.txt") {
        begin = e.data_offset() + 4096;
        end = e.data_offset() + e.size() - 4096;
      }
    }
    for (int i = 0; i < index.spans_size(); ++i) {
      const auto& span = index.spans(i);
      if (span.out_offset() >= begin && span.out_offset() < end && span.window_size() > 0) return i;
    }
    return -1;
  }

  // Span `i`'s window as the index's maker could seal another: every byte changed (XOR with a
  // constant: the same LZ structure, so a size zstd is likely to keep), sealed under `salt` for
  // span i, of exactly the honest sealed size (a size the core pins). Empty when no constant
  // keeps the size.
  std::vector<uint8_t> OtherSealedWindow(const zindex::v2::Index& index, int i,
                                         const zindex::internal::Salt& salt) {
    const std::vector<uint8_t> plain = PlainWindow(index, i);
    image::OcicryptLayerCipher cipher = Cipher();
    for (int x = 1; x < 256; ++x) {
      std::vector<uint8_t> changed = plain;
      for (uint8_t& b : changed) b ^= static_cast<uint8_t>(x);
      auto sealed = zindex::internal::SealWindow(changed, static_cast<uint32_t>(i), salt,
                                                 descriptor_.digest, descriptor_.size,
                                                 cipher.key.span());
      EXPECT_TRUE(sealed.ok()) << sealed.status().ToString();
      if (sealed.ok() && sealed->size() == index.spans(i).window_sealed_size()) return *sealed;
    }
    return {};
  }

  // Waits (up to 30 s) for the verification to end.
  template <typename L>
  static lazylayer::Verification WaitForVerification(const L& layer) {
    for (int i = 0; i < 300 && layer.verification() == lazylayer::Verification::kPending; ++i) {
      std::this_thread::sleep_for(100ms);
    }
    return layer.verification();
  }

  // Readers that keep the blob source busy: each reads 4 KiB of its own file at a changing
  // offset with O_DIRECT (no page cache), and nothing keeps opened chunks, so every read fetches;
  // the first fetch stays in flight until the end (SlowSource).
  // Returns once `done` says so or after `limit`; true when `done` said so first.
  bool ReadWithoutPauseUntil(SlowSource& source, const std::function<bool()>& done,
                             std::chrono::seconds limit) {
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> reads{0};
    source.Arm();
    std::vector<std::thread> readers;
    for (int r = 0; r < 4; ++r) {
      readers.emplace_back([&, r] {
        const fs::path file = mountpoint_ / "d" / ("f" + std::to_string(r));
        int fd = ::open(file.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
        if (fd < 0) fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
        ASSERT_GE(fd, 0) << std::strerror(errno);
        void* buf = nullptr;
        ASSERT_EQ(::posix_memalign(&buf, 4096, 4096), 0);
        uint64_t i = 0;
        while (!stop.load()) {
          (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
          const off_t at = static_cast<off_t>(((i++ * 7 + r) % 8) * (64 << 10));
          if (::pread(fd, buf, 4096, at) > 0) reads.fetch_add(1);
        }
        std::free(buf);
        ::close(fd);
      });
    }
    const auto deadline = std::chrono::steady_clock::now() + limit;
    bool finished = false;
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) {
        finished = true;
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
    stop.store(true);
    source.Release();
    for (auto& t : readers) t.join();
    EXPECT_GT(reads.load(), 10u) << "the readers did not read";
    return finished;
  }

  std::unique_ptr<harness::TempDir> tmp_;
  testing::KeyPair key_;
  std::unique_ptr<keywrap::KeyRing> keys_;
  std::string tar_;
  fs::path mountpoint_;
  image::Descriptor descriptor_;
  std::vector<uint8_t> blob_;
  std::string diff_id_;
};

// The bound in these tests (the default is 120 s, FORMAT.md §8.4). LC_TEST_YIELD_BOUND_MS
// overrides it: 4294967295 (about 50 days) is the unbounded yield these tests must fail with.
uint32_t TestYieldBoundMs() {
  const char* v = std::getenv("LC_TEST_YIELD_BOUND_MS");
  return v != nullptr ? static_cast<uint32_t>(std::strtoul(v, nullptr, 10)) : 300;
}

TEST_F(CtrLayerTest, EstargzVerificationCompletesWhileReadsNeverPause) {
  MakeEstargzLayer();
  lazylayer::EstargzMountOptions o;
  o.prefetch = false;
  o.opened_chunk_cache_bytes = 0;  // keeps nothing: every read fetches
  o.mount.fill_page_cache = false;
  o.verify_max_yield_ms = TestYieldBoundMs();
  o.verify_start_delay_ms = 200;  // the readers are reading by then
  auto source = std::make_shared<SlowSource>(blob_, 15ms);
  auto layer = lazylayer::MountedEstargzLayer::Mount(mountpoint_, source, descriptor_, *keys_, o);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  const bool ended = ReadWithoutPauseUntil(*source, 
      [&] { return (*layer)->verification() != lazylayer::Verification::kPending; }, 15s);
  EXPECT_TRUE(ended) << "the verification waited for the readers to pause (yielded "
                     << (*layer)->verification_yielded().count() << " ms)";
  EXPECT_EQ((*layer)->verification(), lazylayer::Verification::kVerified)
      << (*layer)->verification_status().ToString();
  EXPECT_GT((*layer)->verification_yielded().count(), 0) << "it did not yield to the readers";
}

TEST_F(CtrLayerTest, IndexedVerificationCompletesWhileReadsNeverPause) {
  MakeOcicryptLayer();
  const std::vector<uint8_t> sealed = SealedIndex();
  lazylayer::IndexedMountOptions o;
  o.opened_chunk_cache_bytes = 0;
  o.mount.fill_page_cache = false;
  o.verify_max_yield_ms = TestYieldBoundMs();
  o.verify_start_delay_ms = 200;
  auto source = std::make_shared<SlowSource>(blob_, 15ms);
  auto layer = MountIndexed(source, sealed, o);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  const bool ended = ReadWithoutPauseUntil(*source, 
      [&] { return (*layer)->verification() != lazylayer::Verification::kPending; }, 15s);
  EXPECT_TRUE(ended) << "the verification waited for the readers to pause (yielded "
                     << (*layer)->verification_yielded().count() << " ms)";
  EXPECT_EQ((*layer)->verification(), lazylayer::Verification::kVerified)
      << (*layer)->verification_status().ToString();
}

// The index's table of contents as its maker wrote it is what the mount serves; a key holder can
// seal one whose metadata is not the tar's (here: setuid on a file the tar has 0644). Served until
// the verification reads the real tar, then quarantined ("entry N: mode differs"): every read EIO.
TEST_F(CtrLayerTest, IndexWithAFabricatedEntryIsQuarantinedByTheVerification) {
  MakeOcicryptLayer();
  bool edited = false;
  const std::vector<uint8_t> sealed = Recraft(SealedIndex(), [&](zindex::v2::Index& index) {
    for (auto& e : *index.mutable_entries()) {
      if (e.name() == "d/f1") {
        e.set_mode(04755);
        edited = true;
      }
    }
  });
  ASSERT_TRUE(edited);
  lazylayer::IndexedMountOptions o;
  o.verify_start_delay_ms = 500;
  auto layer = MountIndexed(std::make_shared<MemoryBlobSource>(blob_), sealed, o);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  // The window: served as the index says (the bytes are the real ones; the mode is not).
  EXPECT_EQ(fs::status(mountpoint_ / "d" / "f1").permissions() & fs::perms::set_uid,
            fs::perms::set_uid);
  EXPECT_EQ(WaitForVerification(**layer), lazylayer::Verification::kFailed);
  const Status s = (*layer)->verification_status();
  EXPECT_NE(s.message().find("mode differs"), std::string::npos) << s.ToString();
  EXPECT_EQ(s.message().find("d/f1"), std::string::npos) << "a file name in " << s.ToString();
  EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "f0"), EIO);
}

// A span digest that is not the blob's (sealed with the right key): the span is never served
// (EIO, counted), the other spans are, and the verification quarantines the layer.
TEST_F(CtrLayerTest, IndexWithAWrongSpanDigestServesEioNeverOtherBytes) {
  MakeOcicryptLayer();
  const std::vector<uint8_t> honest = SealedIndex();
  // The span holding a byte in the middle of d/f3's data.
  const std::vector<uint8_t> sealed = Recraft(honest, [&](zindex::v2::Index& index) {
    uint64_t at = 0;
    for (const auto& e : index.entries()) {
      if (e.name() == "d/f3") at = e.data_offset() + e.size() / 2;
    }
    ASSERT_GT(at, 0u);
    int span = 0;
    while (span + 1 < index.spans_size() && index.spans(span + 1).out_offset() <= at) ++span;
    std::string d = index.spans(span).ciphertext_sha256();
    d[0] = static_cast<char>(d[0] ^ 1);
    index.mutable_spans(span)->set_ciphertext_sha256(d);
  });
  lazylayer::IndexedMountOptions o;
  o.verify_start_delay_ms = 3600 * 1000;  // reads first
  auto layer = MountIndexed(std::make_shared<MemoryBlobSource>(blob_), sealed, o);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  std::string f0;
  EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "f0", &f0), 0);
  EXPECT_EQ(f0, testing::ReadFileString(tmp_->path() / "src" / "d" / "f0"));
  EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "f3"), EIO);
  EXPECT_GE((*layer)->stats().auth_failures, 1u);
  (*layer).reset();

  o.verify_start_delay_ms = 0;
  layer = MountIndexed(std::make_shared<MemoryBlobSource>(blob_), sealed, o);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  EXPECT_EQ(WaitForVerification(**layer), lazylayer::Verification::kFailed);
  EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "f0"), EIO);
}

// The window (and checkpoint) of a span are pinned by nothing but the seal (FORMAT.md §11.5): a key
// holder can seal one whose window differs, so that the span's ciphertext passes its digest and
// inflates to as many bytes, but other ones (the back-references copy from the window). Entries
// and diff_id are untouched; only the span-by-span comparison with the real tar catches it.
TEST_F(CtrLayerTest, IndexWithAFabricatedWindowIsQuarantinedByTheVerification) {
  MakeOcicryptLayer();
  bool edited = false;
  const std::vector<uint8_t> sealed =
      Recraft(SealedIndex(), [&](zindex::v2::Index& index, zindex::internal::UnsealedIndex& u) {
        const int i = TextSpanWithAWindow(index);
        ASSERT_GE(i, 0) << "no span starts inside the text";
        std::vector<uint8_t> window = PlainWindow(index, i);
        for (uint8_t& b : window) b ^= 0x20;  // other letters, same length
        image::OcicryptLayerCipher cipher = Cipher();
        auto resealed = zindex::internal::SealWindow(window, static_cast<uint32_t>(i), u.salt,
                                                     descriptor_.digest, descriptor_.size,
                                                     cipher.key.span());
        ASSERT_TRUE(resealed.ok()) << resealed.status().ToString();
        ReplaceWindow(index, u, i, *resealed);
        edited = true;
      });
  ASSERT_TRUE(edited);
  lazylayer::IndexedMountOptions o;
  auto layer = MountIndexed(std::make_shared<MemoryBlobSource>(blob_), sealed, o);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  EXPECT_EQ(WaitForVerification(**layer), lazylayer::Verification::kFailed);
  const Status s = (*layer)->verification_status();
  EXPECT_NE(s.message().find("decodes to other bytes"), std::string::npos) << s.ToString();
  EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "t.txt"), EIO);
}

// The index blob as a registry serves it: span `span`'s window range answered with `instead`
// (same size) while `serve_instead` is set; everything else (the verification's large reads
// included) as it is. Records the ranges asked for.
class WindowSwapSource final : public BlobSource {
 public:
  WindowSwapSource(std::vector<uint8_t> blob, zindex::OpenedIndex::Range window,
                   std::vector<uint8_t> instead)
      : inner_(std::move(blob)), window_(window), instead_(std::move(instead)) {}
  uint64_t size() const override { return inner_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      asked_.push_back({offset, out.size()});
    }
    if (serve_instead.load() && offset == window_.offset && out.size() == window_.size &&
        instead_.size() == out.size()) {
      std::memcpy(out.data(), instead_.data(), out.size());
      return Status::Ok();
    }
    return inner_.ReadAt(offset, out);
  }
  std::vector<zindex::OpenedIndex::Range> asked() {
    std::lock_guard<std::mutex> lock(mu_);
    return asked_;
  }
  std::atomic<bool> serve_instead{true};

 private:
  MemoryBlobSource inner_;
  zindex::OpenedIndex::Range window_;
  std::vector<uint8_t> instead_;
  std::mutex mu_;
  std::vector<zindex::OpenedIndex::Range> asked_;
};

// A blob source that must not be read (a span opened again from the chunk store).
class UnreachableSource final : public BlobSource {
 public:
  explicit UnreachableSource(uint64_t size) : size_(size) {}
  uint64_t size() const override { return size_; }
  Status ReadAt(uint64_t, MutableByteSpan) override {
    reads.fetch_add(1);
    return Status::Unavailable("unreachable (test)");
  }
  std::atomic<int> reads{0};

 private:
  uint64_t size_;
};

// A read fetches each span's window from the index blob by exactly its range (the core the mount
// opened holds none), counted in the layer's stats, and serves the file's bytes.
TEST_F(CtrLayerTest, AReadFetchesItsSpansWindowsFromTheIndexBlobByRange) {
  MakeOcicryptLayer();
  const std::vector<uint8_t> sealed = SealedIndex();
  auto opened = Opened(sealed);
  ASSERT_TRUE(opened);
  auto index_source = std::make_shared<WindowSwapSource>(sealed, zindex::OpenedIndex::Range{},
                                                         std::vector<uint8_t>{});
  lazylayer::IndexedMountOptions o;
  o.verify = false;
  auto layer =
      MountIndexed(std::make_shared<MemoryBlobSource>(blob_), sealed, o, index_source);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  std::string text;
  EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "t.txt", &text), 0);
  EXPECT_EQ(text, testing::ReadFileString(tmp_->path() / "src" / "d" / "t.txt"));
  const auto asked = index_source->asked();
  ASSERT_FALSE(asked.empty()) << "no window fetched";
  for (const auto& r : asked) {
    bool a_window = false;
    for (size_t i = 0; i < opened->span_count(); ++i) {
      const auto w = opened->span_window(i);
      if (w.size > 0 && w.offset == r.offset && w.size == r.size) a_window = true;
    }
    EXPECT_TRUE(a_window) << "asked the index blob for [" << r.offset << ", +" << r.size
                          << "), not a span's window";
    EXPECT_GE(r.offset, opened->sealed_core_bytes());
  }
  const cache::LayerStats stats = (*layer)->stats();
  EXPECT_EQ(stats.index_fetch_requests, asked.size());
  uint64_t bytes = 0;
  for (const auto& r : asked) bytes += r.size;
  EXPECT_EQ(stats.index_bytes_fetched, bytes);
  EXPECT_GE(stats.blob_bytes_fetched, bytes);  // the windows count as fetched bytes too
}

// A window the registry alters (here: one of another seal with every byte changed, of the
// same size, so that it decompresses and, unauthenticated, would inflate the span to other bytes
// as the next test shows; another span's window when one has the size; a flipped byte) is never
// used: the file that needs it
// answers EIO, the other files read. The window authenticates only as its own span's, of this seal.
TEST_F(CtrLayerTest, AWindowTheRegistryAltersIsEioForItsFileNeverOtherBytes) {
  MakeOcicryptLayer();
  const std::vector<uint8_t> sealed = SealedIndex();
  image::OcicryptLayerCipher cipher = Cipher();
  auto u = zindex::internal::UnsealIndex(sealed, descriptor_.digest, descriptor_.size,
                                         cipher.key.span());
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  zindex::v2::Index index;
  ASSERT_TRUE(index.ParseFromArray(u->serialized.data(), static_cast<int>(u->serialized.size())));
  const int i = TextSpanWithAWindow(index);
  ASSERT_GE(i, 0) << "no span starts inside the text";
  auto opened = Opened(sealed);
  ASSERT_TRUE(opened);
  const zindex::OpenedIndex::Range w = opened->span_window(static_cast<size_t>(i));
  const std::string text = testing::ReadFileString(tmp_->path() / "src" / "d" / "t.txt");
  const std::string f0 = testing::ReadFileString(tmp_->path() / "src" / "d" / "f0");

  zindex::internal::Salt other_salt = u->salt;
  other_salt[0] ^= 1;  // another seal of the same layer
  std::vector<std::pair<std::string, std::vector<uint8_t>>> altered;
  altered.emplace_back("a window of another seal, one byte changed",
                       OtherSealedWindow(index, i, other_salt));
  ASSERT_EQ(altered.back().second.size(), w.size) << "no change keeps the size";
  for (size_t j = 0; j < opened->span_count(); ++j) {  // another span's, if one has the size
    const auto wj = opened->span_window(j);
    if (j != static_cast<size_t>(i) && wj.size == w.size) {
      altered.emplace_back("span " + std::to_string(j) + "'s window",
                           std::vector<uint8_t>(sealed.begin() + static_cast<ptrdiff_t>(wj.offset),
                                                sealed.begin() +
                                                    static_cast<ptrdiff_t>(wj.offset + wj.size)));
      break;
    }
  }
  {
    std::vector<uint8_t> flipped(sealed.begin() + static_cast<ptrdiff_t>(w.offset),
                                 sealed.begin() + static_cast<ptrdiff_t>(w.offset + w.size));
    flipped[flipped.size() / 2] ^= 0x01;
    altered.emplace_back("its window with a byte flipped", std::move(flipped));
  }
  for (const auto& [what, bytes] : altered) {
    SCOPED_TRACE(what);
    auto index_source = std::make_shared<WindowSwapSource>(sealed, w, bytes);
    lazylayer::IndexedMountOptions o;
    o.verify_start_delay_ms = 3600 * 1000;  // reads first
    auto layer = MountIndexed(std::make_shared<MemoryBlobSource>(blob_), sealed, o, index_source);
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    std::string got;
    EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "t.txt", &got), EIO)
        << (got == text ? "served the right bytes" : "served other bytes");
    EXPECT_GE((*layer)->stats().auth_failures, 1u);
    std::string other;
    EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "f0", &other), 0);
    EXPECT_EQ(other, f0);
    // The registry answers right again: the span is fetched again (no error kept) and reads.
    index_source->serve_instead.store(false);
    EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "t.txt", &got), 0);
    EXPECT_EQ(got, text);
    (*layer).reset();
  }
}

// A key holder can seal two windows for one span (both authenticate under the seal), and a
// registry could serve one to the mount's read and the other to the verification. The core pins
// each window by its SHA-256 (FORMAT.md §11.2): the second window, served to the read, is refused
// before it is opened (EIO, never its other bytes); the verification, served the honest one,
// verifies; the read is right once the registry serves the pinned window.
TEST_F(CtrLayerTest, AWindowOtherThanTheOnePinnedByTheCoreIsEioNeverOtherBytes) {
  MakeOcicryptLayer();
  const std::vector<uint8_t> sealed = SealedIndex();
  image::OcicryptLayerCipher cipher = Cipher();
  auto u = zindex::internal::UnsealIndex(sealed, descriptor_.digest, descriptor_.size,
                                         cipher.key.span());
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  zindex::v2::Index index;
  ASSERT_TRUE(index.ParseFromArray(u->serialized.data(), static_cast<int>(u->serialized.size())));
  const int i = TextSpanWithAWindow(index);
  ASSERT_GE(i, 0) << "no span starts inside the text";
  auto opened = Opened(sealed);
  ASSERT_TRUE(opened);
  const zindex::OpenedIndex::Range w = opened->span_window(static_cast<size_t>(i));
  const std::vector<uint8_t> second = OtherSealedWindow(index, i, u->salt);  // this seal's key
  ASSERT_EQ(second.size(), w.size) << "no change keeps the size";
  // Refused by the core's digest before it is opened (under the seal alone it would
  // authenticate: its maker holds the key).
  ASSERT_TRUE(opened->DecodeSpan(static_cast<size_t>(i),
                                 ByteSpan(blob_).subspan(opened->span_ciphertext(i).offset,
                                                         opened->span_ciphertext(i).size),
                                 second)
                  .status()
                  .message()
                  .ends_with("window digest mismatch"));
  auto index_source = std::make_shared<WindowSwapSource>(sealed, w, second);
  lazylayer::IndexedMountOptions o;
  o.verify_start_delay_ms = 3600 * 1000;  // reads first
  auto layer = MountIndexed(std::make_shared<MemoryBlobSource>(blob_), sealed, o, index_source);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  const std::string text = testing::ReadFileString(tmp_->path() / "src" / "d" / "t.txt");
  std::string got;
  EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "t.txt", &got), EIO)
      << (got == text ? "served the right bytes" : "served other bytes");
  EXPECT_GE((*layer)->stats().auth_failures, 1u);
  index_source->serve_instead.store(false);
  EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "t.txt", &got), 0);
  EXPECT_EQ(got, text);
}

// A span kept in the chunk store is kept with its window: mounted again (a restart) over a
// registry that cannot be reached, the file reads from disk alone.
TEST_F(CtrLayerTest, ASpanOpenedAgainFromTheStoreNeedsNoNetwork) {
  MakeOcicryptLayer();
  const std::vector<uint8_t> sealed = SealedIndex();
  auto store = cache::ChunkStore::Open(tmp_->path() / "store");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  lazylayer::IndexedMountOptions o;
  o.verify = false;
  o.store = store->get();
  const std::string text = testing::ReadFileString(tmp_->path() / "src" / "d" / "t.txt");
  {
    auto layer = MountIndexed(std::make_shared<MemoryBlobSource>(blob_), sealed, o);
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    std::string got;
    EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "t.txt", &got), 0);
    EXPECT_EQ(got, text);
    EXPECT_GE((*layer)->stats().index_fetch_requests, 1u);
  }
  auto blob = std::make_shared<UnreachableSource>(blob_.size());
  auto index_blob = std::make_shared<UnreachableSource>(sealed.size());
  auto layer = MountIndexed(blob, sealed, o, index_blob);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  std::string got;
  EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "t.txt", &got), 0);
  EXPECT_EQ(got, text);
  EXPECT_EQ(blob->reads.load(), 0);
  EXPECT_EQ(index_blob->reads.load(), 0);
  EXPECT_EQ((*layer)->stats().disk_corrupt, 0u);
}

// Without a chunk store, windows are kept in memory: a span whose opened bytes were dropped is
// fetched again without its window.
TEST_F(CtrLayerTest, WithoutAStoreASpanFetchedAgainReusesItsWindow) {
  MakeOcicryptLayer();
  const std::vector<uint8_t> sealed = SealedIndex();
  lazylayer::IndexedMountOptions o;
  o.verify = false;
  o.opened_chunk_cache_bytes = 0;  // keeps no opened span: every read fetches
  o.mount.fill_page_cache = false;
  auto layer = MountIndexed(std::make_shared<MemoryBlobSource>(blob_), sealed, o);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  const std::string text = testing::ReadFileString(tmp_->path() / "src" / "d" / "t.txt");
  std::string got;
  EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "t.txt", &got), 0);
  EXPECT_EQ(got, text);
  const cache::LayerStats first = (*layer)->stats();
  ASSERT_GE(first.index_fetch_requests, 1u);
  {  // out of the kernel's page cache: read through the layer again
    int fd = ::open((mountpoint_ / "d" / "t.txt").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  EXPECT_EQ(ReadErrno(mountpoint_ / "d" / "t.txt", &got), 0);
  EXPECT_EQ(got, text);
  const cache::LayerStats second = (*layer)->stats();
  EXPECT_GT(second.chunks_fetched, first.chunks_fetched) << "the spans were not fetched again";
  EXPECT_EQ(second.index_fetch_requests, first.index_fetch_requests);
}

// What the snapshotter opens an index with (FORMAT.md 11.8): no span whose ciphertext the mount
// refuses to fetch (such an index would mount with spans that are always EIO), the serialized
// plaintext at most 4x the sealed bytes, never above the format's own bounds.
TEST(IndexedLayerLimits, NoSpanTheMountRefusesToFetchAndPlaintextAtMostFourTimesTheSealed) {
  constexpr uint64_t kMiB = uint64_t{1} << 20;
  const zindex::Limits l = lazylayer::IndexedLayerLimits(64 * kMiB);
  EXPECT_EQ(l.max_sealed_bytes, 64 * kMiB);
  EXPECT_EQ(l.max_plaintext_bytes, 256 * kMiB);
  EXPECT_EQ(l.max_span_bytes, zindex::kMaxSpanBytes);
  EXPECT_EQ(l.max_span_ciphertext_bytes, zindex::kMaxSpanBytes + (zindex::kMaxSpanBytes >> 4));
  EXPECT_LT(l.max_span_ciphertext_bytes, zindex::kMaxSpanCiphertextBytes);
  const zindex::Limits big = lazylayer::IndexedLayerLimits(~uint64_t{0});
  EXPECT_EQ(big.max_sealed_bytes, zindex::kMaxSealedIndexBytes);
  EXPECT_EQ(big.max_plaintext_bytes, zindex::kMaxIndexPlaintextBytes);
}

// A chunk whose opening throws (std::bad_alloc from a span's buffers) fails its reader with an
// error, and its flight ends: the next reader opens it again. (Before: the exception left the
// chunk in flight with a promise nobody would set; every later reader of it failed for good.)
class OpenThrowsOnceData final : public lazylayer::CtrLayerData {
 public:
  static constexpr size_t kChunkBytes = 4096;
  OpenThrowsOnceData()
      : CtrLayerData(std::make_shared<lazylayer::CountingSource>(std::make_shared<MemoryBlobSource>(
                         std::vector<uint8_t>(kChunkBytes, 0x5a))),
                     lazylayer::OpenedChunkSlot(lazylayer::CtrLayerOptions{}), nullptr, "t") {}
  const format::LayerIndex& index() const override { std::abort(); }  // never asked here
  Result<size_t> ReadFile(format::EntryView, uint64_t, MutableByteSpan) override {
    return Status::Unsupported("not a file system");
  }
  cache::LayerStats stats() const override { return {}; }
  int opens() const { return opens_.load(); }

 protected:
  Result<CiphertextRange> ChunkCiphertext(uint32_t) const override {
    return CiphertextRange{0, kChunkBytes};
  }
  Result<cache::OpenedChunkPtr> OpenCiphertext(uint32_t, ByteSpan ciphertext, ByteSpan) override {
    if (opens_.fetch_add(1) == 0) throw std::bad_alloc();
    auto chunk = std::make_shared<cache::OpenedChunk>(ciphertext.size());
    std::memcpy(chunk->data(), ciphertext.data(), ciphertext.size());
    return cache::OpenedChunkPtr(std::move(chunk));
  }

 private:
  std::atomic<int> opens_{0};
};

TEST(CtrLayerData, AChunkWhoseOpeningThrowsFailsItsReaderAndIsOpenedAgainLater) {
  OpenThrowsOnceData data;
  Result<cache::OpenedChunkPtr> first = Status::Internal("not called");
  EXPECT_NO_THROW(first = data.Chunk(0));
  EXPECT_FALSE(first.ok());
  Result<cache::OpenedChunkPtr> second = Status::Internal("not called");
  EXPECT_NO_THROW(second = data.Chunk(0));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ((*second)->size(), OpenThrowsOnceData::kChunkBytes);
  EXPECT_EQ((*second)->data()[0], 0x5a);
  EXPECT_EQ(data.opens(), 2);
}

}  // namespace
}  // namespace lazycrypt
