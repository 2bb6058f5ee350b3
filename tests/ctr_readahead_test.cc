// Read-ahead of the lazily served ocicrypt AES-CTR layers (lazylayer/ctr_layer.h: ocicrypt-estargz
// and indexed ocicrypt), mounted with a real FUSE mount over an in-memory blob that can hold its
// requests (no registry). Reads are O_DIRECT (each pread is one FUSE read of exactly its range):
//   - a read from a file's start has the file's following chunks' fetches in flight at once
//     (counted by the source while it holds them, never timed), each fetched once;
//   - a read needing several chunks loads them in parallel;
//   - a jump into a file reads ahead nothing, its continuation does;
//   - read-ahead stops at the file's end and at readahead_bytes; 0 disables it;
//   - a layer destroyed while read-ahead fetches are in flight ends cleanly, and nothing of it
//     touches the source afterwards.
// Needs root and /dev/fuse.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/io.h"
#include "crypto/digest.h"
#include "estargz/writer.h"
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
#include "tests/snapshotter_util.h"
#include "tests/test_util.h"
#include "zindex/zindex.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::MustRun;

constexpr uint64_t kChunk = 64 << 10;  // estargz chunks and zindex spans in these tests

// A blob in memory whose requests, once Hold() is called, wait until Release() (at most 30 s, so
// that a failing test does not hang); counts the requests in flight and the most at once.
class HoldingSource final : public BlobSource {
 public:
  explicit HoldingSource(std::vector<uint8_t> bytes) : inner_(std::move(bytes)) {}
  uint64_t size() const override { return inner_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (closed_) touched_after_close_ = true;
      ++requests_;
      ++in_flight_;
      max_in_flight_ = std::max(max_in_flight_, in_flight_);
      cv_.notify_all();
      if (holding_) cv_.wait_for(lock, 30s, [&] { return !holding_; });
    }
    Status s = inner_.ReadAt(offset, out);
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    cv_.notify_all();
    return s;
  }
  void Hold() {
    std::lock_guard<std::mutex> lock(mu_);
    holding_ = true;
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      holding_ = false;
    }
    cv_.notify_all();
  }
  // Waits (up to 10 s) until `n` requests are in flight at once; false if never.
  bool WaitForInFlight(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return in_flight_ >= n; });
  }
  // From now on a request is a use after its layer's end.
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  int in_flight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return in_flight_;
  }
  int max_in_flight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_in_flight_;
  }
  uint64_t requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  bool touched_after_close() const {
    std::lock_guard<std::mutex> lock(mu_);
    return touched_after_close_;
  }

 private:
  MemoryBlobSource inner_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool holding_ = false, closed_ = false, touched_after_close_ = false;
  int in_flight_ = 0, max_in_flight_ = 0;
  uint64_t requests_ = 0;
};

class CtrLayerReadAhead : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse (FUSE mounts)";
    }
    auto tmp = harness::TempDir::Create("ctr-readahead");
    ASSERT_TRUE(tmp.ok());
    tmp_ = std::make_unique<harness::TempDir>(std::move(tmp).value());
    const fs::path root = tmp_->path();
    fs::create_directories(root / "keys");
    key_ = testing::GenerateKeyPair(root / "keys", "ec256", "node");
    // a: 1 MiB (16 chunks), b: 256 KiB (4 chunks); random, so spans are about a chunk each.
    src_ = root / "src";
    fs::create_directories(src_ / "d");
    MustRun({"dd", "if=/dev/urandom", "of=" + (src_ / "d" / "a").string(), "bs=64k", "count=16",
             "status=none"});
    MustRun({"dd", "if=/dev/urandom", "of=" + (src_ / "d" / "b").string(), "bs=64k", "count=4",
             "status=none"});
    MustRun({"tar", "--numeric-owner", "-C", src_.string(), "-cf", (root / "layer.tar").string(),
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

  // Options of a layer whose only requests after mounting are chunk fetches.
  template <typename O>
  static O Quiet() {
    O o;
    o.prefetch = false;
    o.verify = false;
    o.mount.fill_page_cache = false;
    return o;
  }

  // The tar as an ocicrypt-estargz layer (64 KiB chunks).
  void MakeEstargz() {
    MemoryInputStream in(AsBytes(tar_));
    image::Descriptor plain;
    plain.media_type = "application/vnd.oci.image.layer.v1.tar";
    plain.digest = crypto::OciDigest(crypto::Sha256::Of(AsBytes(tar_)));
    plain.size = tar_.size();
    estargz::WriterOptions w;
    w.chunk_size_bytes = kChunk;
    w.spool_dir = tmp_->path();
    MemoryOutputStream out;
    auto made = image::EncryptEstargzOcicryptLayer(in, plain, out, Recipients(), w);
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    estargz_descriptor_ = made->descriptor;
    estargz_blob_ = out.bytes();
  }

  // MakeEstargz's layer from `source` (null: the blob in memory).
  Result<std::unique_ptr<lazylayer::MountedEstargzLayer>> MountEstargz(
      std::shared_ptr<BlobSource> source, const lazylayer::EstargzMountOptions& o) {
    if (!source) source = std::make_shared<MemoryBlobSource>(estargz_blob_);
    return lazylayer::MountedEstargzLayer::Mount(mountpoint_, std::move(source),
                                                 estargz_descriptor_, *keys_, o);
  }

  // The tar gzip-compressed and encrypted as skopeo does, and its index (64 KiB spans).
  void MakeIndexed() {
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
    indexed_descriptor_ = *encrypted;
    indexed_descriptor_.digest = crypto::OciDigest(crypto::Sha256::Of(out.bytes()));
    indexed_descriptor_.size = out.bytes().size();
    indexed_blob_ = out.bytes();
    MemoryInputStream blob(indexed_blob_);
    zindex::BuildOptions b;
    b.span_bytes = kChunk;
    auto sealed = zindex::BuildSealedIndex(blob, indexed_descriptor_, Cipher(), b);
    ASSERT_TRUE(sealed.ok()) << sealed.status().ToString();
    sealed_ = *sealed;
    auto index = zindex::OpenedIndex::Open(sealed_, sealed_.size(), indexed_descriptor_, Cipher());
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    index_ = *index;
  }

  image::OcicryptLayerCipher Cipher() {
    auto cipher = image::UnwrapOcicryptLayer(indexed_descriptor_, *keys_);
    EXPECT_TRUE(cipher.ok()) << cipher.status().ToString();
    return std::move(*cipher);
  }

  Result<std::unique_ptr<lazylayer::MountedIndexedLayer>> MountIndexed(
      std::shared_ptr<BlobSource> source, const lazylayer::IndexedMountOptions& o) {
    return lazylayer::MountedIndexedLayer::Mount(
        mountpoint_, std::move(source), std::make_shared<MemoryBlobSource>(sealed_),
        indexed_descriptor_, Cipher(), index_,
        lazylayer::IndexedStoreKey(indexed_descriptor_.digest,
                                   crypto::OciDigest(crypto::Sha256::Of(sealed_))),
        o);
  }

  // The spans holding file `name`'s data: [first, end).
  std::pair<uint64_t, uint64_t> SpansOf(const std::string& name) {
    const format::LayerIndex& li = *index_->layer_index();
    for (size_t k = 0; k < li.entries().size(); ++k) {
      const format::EntryView e = li.entries()[k];
      if (e.name() != name) continue;
      return {li.ChunkForTarOffset(e.data_offset()),
              li.ChunkForTarOffset(e.data_offset() + e.size() - 1) + 1};
    }
    ADD_FAILURE() << "no " << name;
    return {0, 0};
  }

  // The span holding byte `offset` of file `name`'s data.
  uint64_t SpanAt(const std::string& name, uint64_t offset) {
    const format::LayerIndex& li = *index_->layer_index();
    for (size_t k = 0; k < li.entries().size(); ++k) {
      const format::EntryView e = li.entries()[k];
      if (e.name() == name) return li.ChunkForTarOffset(e.data_offset() + offset);
    }
    ADD_FAILURE() << "no " << name;
    return 0;
  }

  // `bytes` at `offset` of the mounted `name`, read with O_DIRECT: one FUSE read of that range.
  std::string DirectRead(const std::string& name, uint64_t offset, size_t bytes) {
    const fs::path path = mountpoint_ / "d" / name;
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    EXPECT_GE(fd, 0) << std::strerror(errno);
    if (fd < 0) return {};
    void* buf = nullptr;
    EXPECT_EQ(::posix_memalign(&buf, 4096, bytes), 0);
    const ssize_t n = ::pread(fd, buf, bytes, static_cast<off_t>(offset));
    EXPECT_EQ(n, static_cast<ssize_t>(bytes)) << std::strerror(errno);
    std::string out = n > 0 ? std::string(static_cast<char*>(buf), static_cast<size_t>(n)) : "";
    std::free(buf);
    ::close(fd);
    return out;
  }
  // The whole file, in O_DIRECT reads of 128 KiB from its start.
  std::string DirectReadAll(const std::string& name) {
    const uint64_t size = fs::file_size(src_ / "d" / name);
    std::string all;
    for (uint64_t at = 0; at < size; at += 128 << 10) {
      all += DirectRead(name, at, static_cast<size_t>(std::min<uint64_t>(128 << 10, size - at)));
    }
    return all;
  }
  std::string Source(const std::string& name, uint64_t offset, size_t bytes) {
    return testing::ReadFileString(src_ / "d" / name).substr(offset, bytes);
  }

  // Waits (up to 20 s) until no read-ahead is queued or loading.
  template <typename L>
  static void WaitIdle(const L& layer) {
    for (int i = 0; i < 400 && !layer.readahead_idle(); ++i) std::this_thread::sleep_for(50ms);
    EXPECT_TRUE(layer.readahead_idle()) << "read-ahead still loading after 20 s";
  }

  std::unique_ptr<harness::TempDir> tmp_;
  testing::KeyPair key_;
  std::unique_ptr<keywrap::KeyRing> keys_;
  fs::path src_, mountpoint_;
  std::string tar_;
  image::Descriptor estargz_descriptor_, indexed_descriptor_;
  std::vector<uint8_t> estargz_blob_, indexed_blob_, sealed_;
  std::shared_ptr<const zindex::OpenedIndex> index_;
};

// The first 4 KiB of a 16-chunk file: while every request is held, the reader's chunk and the
// following chunks' fetches are in flight at once (before: one at a time, the reader's). Each
// chunk of the file is fetched once (the reader waits for the read-ahead's load of its chunk),
// nothing of the next file (read-ahead stops at the file's end), and the bytes are the file's.
TEST_F(CtrLayerReadAhead, EstargzReadFromTheStartFetchesTheFollowingChunksAtOnce) {
  MakeEstargz();
  auto source = std::make_shared<HoldingSource>(estargz_blob_);
  auto layer = MountEstargz(source, Quiet<lazylayer::EstargzMountOptions>());
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  const uint64_t mount_requests = source->requests();  // footer and TOC
  source->Hold();
  auto first = std::async(std::launch::async, [&] { return DirectRead("a", 0, 4096); });
  EXPECT_TRUE(source->WaitForInFlight(3))
      << "at most " << source->max_in_flight() << " fetch(es) in flight at once";
  source->Release();
  EXPECT_EQ(first.get(), Source("a", 0, 4096));
  EXPECT_EQ((*layer)->readahead_chunks(), 15u);
  WaitIdle(**layer);
  EXPECT_EQ((*layer)->stats().chunks_fetched, 16u);
  EXPECT_EQ(DirectReadAll("a"), Source("a", 0, 1 << 20));
  EXPECT_EQ((*layer)->stats().chunks_fetched, 16u) << "a chunk read ahead was fetched again";
  EXPECT_EQ(source->requests() - mount_requests, 16u);
}

// The same for an indexed layer's spans (each a ciphertext range and its window).
TEST_F(CtrLayerReadAhead, IndexedReadFromTheStartFetchesTheFollowingSpansAtOnce) {
  MakeIndexed();
  const auto [first_span, end_span] = SpansOf("d/a");
  ASSERT_GE(end_span - first_span, 8u);
  auto source = std::make_shared<HoldingSource>(indexed_blob_);
  auto layer = MountIndexed(source, Quiet<lazylayer::IndexedMountOptions>());
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  source->Hold();
  auto first = std::async(std::launch::async, [&] { return DirectRead("a", 0, 4096); });
  EXPECT_TRUE(source->WaitForInFlight(3))
      << "at most " << source->max_in_flight() << " fetch(es) in flight at once";
  source->Release();
  EXPECT_EQ(first.get(), Source("a", 0, 4096));
  WaitIdle(**layer);
  EXPECT_EQ((*layer)->readahead_chunks(), end_span - first_span - 1);
  EXPECT_EQ((*layer)->stats().chunks_fetched, end_span - first_span);
  EXPECT_EQ(DirectReadAll("a"), Source("a", 0, 1 << 20));
  EXPECT_EQ((*layer)->stats().chunks_fetched, end_span - first_span)
      << "a span read ahead was fetched again";
}

// One read that needs four chunks (a jump: no read-ahead past it) loads them in parallel.
TEST_F(CtrLayerReadAhead, AReadNeedingSeveralChunksLoadsThemAtOnce) {
  MakeEstargz();
  auto source = std::make_shared<HoldingSource>(estargz_blob_);
  auto layer = MountEstargz(source, Quiet<lazylayer::EstargzMountOptions>());
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  source->Hold();
  auto read = std::async(std::launch::async, [&] { return DirectRead("a", 4 * kChunk, 4 * kChunk); });
  EXPECT_TRUE(source->WaitForInFlight(2))
      << "at most " << source->max_in_flight() << " fetch(es) in flight at once";
  source->Release();
  EXPECT_EQ(read.get(), Source("a", 4 * kChunk, 4 * kChunk));
  WaitIdle(**layer);
  EXPECT_EQ((*layer)->readahead_chunks(), 3u);  // its own after its first, nothing after it
  EXPECT_EQ((*layer)->stats().chunks_fetched, 4u);
}

// A read in the middle of a file is no sequential read: nothing is read ahead. The read that
// continues it is: the rest of the file is.
TEST_F(CtrLayerReadAhead, AJumpIntoAFileReadsAheadNothingItsContinuationDoes) {
  MakeEstargz();
  auto layer = MountEstargz(nullptr, Quiet<lazylayer::EstargzMountOptions>());
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  EXPECT_EQ(DirectRead("a", 8 * kChunk, 4096), Source("a", 8 * kChunk, 4096));
  EXPECT_EQ((*layer)->readahead_chunks(), 0u);
  WaitIdle(**layer);
  EXPECT_EQ((*layer)->stats().chunks_fetched, 1u);
  EXPECT_EQ(DirectRead("a", 8 * kChunk + 4096, 4096), Source("a", 8 * kChunk + 4096, 4096));
  EXPECT_EQ((*layer)->readahead_chunks(), 7u);  // chunks 9..15
  WaitIdle(**layer);
  EXPECT_EQ((*layer)->stats().chunks_fetched, 8u);
}

// readahead_bytes = 5 chunks (and a little: a chunk counts as what is fetched for it when that
// is more than its tar bytes, as gzip's few bytes of framing make it): a read from the start of
// the 16-chunk file reads 5 ahead; of the 4-chunk file, the 3 it has left (its end).
TEST_F(CtrLayerReadAhead, StopsAtReadaheadBytesAndAtTheFilesEnd) {
  MakeEstargz();
  MakeIndexed();
  auto o = Quiet<lazylayer::EstargzMountOptions>();
  o.readahead_bytes = 5 * kChunk + 4096;
  auto layer = MountEstargz(nullptr, o);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  EXPECT_EQ(DirectRead("a", 0, 4096), Source("a", 0, 4096));
  EXPECT_EQ((*layer)->readahead_chunks(), 5u);
  WaitIdle(**layer);
  EXPECT_EQ((*layer)->stats().chunks_fetched, 6u);
  EXPECT_EQ(DirectRead("b", 0, 4096), Source("b", 0, 4096));
  EXPECT_EQ((*layer)->readahead_chunks(), 5u + 3u);
  WaitIdle(**layer);
  EXPECT_EQ((*layer)->stats().chunks_fetched, 6u + 4u);
  layer->reset();

  // The indexed layer's spans too (spans of about a chunk: 2 of them within 2.5 chunks).
  const auto [first_span, end_span] = SpansOf("d/a");
  auto io = Quiet<lazylayer::IndexedMountOptions>();
  io.readahead_bytes = kChunk * 5 / 2;
  auto indexed = MountIndexed(std::make_shared<MemoryBlobSource>(indexed_blob_), io);
  ASSERT_TRUE(indexed.ok()) << indexed.status().ToString();
  EXPECT_EQ(DirectRead("a", 0, 4096), Source("a", 0, 4096));
  // The read's own spans after its first (the file's data may start at the end of a span), then
  // the spans within the budget.
  const uint64_t next_span = SpanAt("d/a", 4095) + 1;
  uint64_t within = 0, expected = 0;
  for (uint64_t j = next_span; j < end_span; ++j) {
    within += std::max<uint64_t>(index_->layer_index()->chunks()[j].raw_size,
                                 index_->span_ciphertext(j).size + index_->span_window(j).size);
    if (within > io.readahead_bytes) break;
    ++expected;
  }
  EXPECT_GE(expected, 1u);
  EXPECT_LT(expected, end_span - next_span);
  EXPECT_EQ((*indexed)->readahead_chunks(), next_span - first_span - 1 + expected);
  WaitIdle(**indexed);
  EXPECT_EQ((*indexed)->stats().chunks_fetched, next_span - first_span + expected);
}

// readahead_bytes = 0: a read from a file's start, and the reads that continue it, load only
// their own chunks, one by one. (The default reads ahead: the other tests.)
TEST_F(CtrLayerReadAhead, ZeroDisablesIt) {
  auto o = Quiet<lazylayer::EstargzMountOptions>();
  o.readahead_bytes = 0;
  MakeEstargz();
  auto source = std::make_shared<HoldingSource>(estargz_blob_);
  {
    auto layer = MountEstargz(source, o);
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    EXPECT_EQ(DirectRead("a", 0, 4096), Source("a", 0, 4096));
    EXPECT_EQ((*layer)->stats().chunks_fetched, 1u);
    EXPECT_EQ(DirectRead("a", 4096, 2 * kChunk), Source("a", 4096, 2 * kChunk));
    EXPECT_EQ(DirectReadAll("a"), Source("a", 0, 1 << 20));
    EXPECT_EQ((*layer)->readahead_chunks(), 0u);
    EXPECT_EQ((*layer)->stats().chunks_fetched, 16u);
    EXPECT_EQ(source->max_in_flight(), 1);
  }
  // The same reads with the default: read ahead.
  auto layer = MountEstargz(nullptr, Quiet<lazylayer::EstargzMountOptions>());
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  EXPECT_EQ(DirectRead("a", 0, 4096), Source("a", 0, 4096));
  EXPECT_EQ((*layer)->readahead_chunks(), 15u);
}

// The layer destroyed while its read-ahead fetches are held in the source (and more are queued):
// the destruction waits for the fetches in flight, drops the queue, and ends; nothing of the
// layer is in the source or calls it afterwards.
TEST_F(CtrLayerReadAhead, DestroyedWhileReadAheadIsInFlightEndsCleanly) {
  MakeIndexed();
  auto source = std::make_shared<HoldingSource>(indexed_blob_);
  auto layer = MountIndexed(source, Quiet<lazylayer::IndexedMountOptions>());
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  // The file's first span opened by a jump (no read-ahead), then the read that continues it
  // needs nothing but starts the read-ahead, which the source holds.
  EXPECT_EQ(DirectRead("a", 4096, 4096), Source("a", 4096, 4096));
  EXPECT_EQ((*layer)->readahead_chunks(), 0u);
  source->Hold();
  EXPECT_EQ(DirectRead("a", 8192, 4096), Source("a", 8192, 4096));
  EXPECT_TRUE(source->WaitForInFlight(2))
      << "at most " << source->max_in_flight() << " fetch(es) in flight at once";
  EXPECT_GT((*layer)->readahead_chunks(), 4u);  // more than the workers: some queued
  auto destroyed = std::async(std::launch::async, [&] {
    layer->reset();
    source->Close();
  });
  // The destruction is under way (or done) when the held fetches end.
  EXPECT_EQ(destroyed.wait_for(200ms), std::future_status::timeout)
      << "destroyed without waiting for its fetches in flight";
  source->Release();
  ASSERT_EQ(destroyed.wait_for(30s), std::future_status::ready) << "the destruction hangs";
  destroyed.get();
  EXPECT_EQ(source->in_flight(), 0);
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(source->touched_after_close()) << "a read-ahead fetch after the layer's end";
}

}  // namespace
}  // namespace lazycrypt
