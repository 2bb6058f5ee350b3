// End to end: WriteLayer → LayerIndex / LayerReader / DecryptLayer / DecryptLayerStream, on tar
// streams from tar/TarWriter and from GNU tar, plain, gzip and zstd; laziness (exact byte ranges
// fetched); every tamper the format must catch; writer determinism; bounded writer memory.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <mutex>
#include <cmath>
#include <random>
#include <set>

#include "common/file_io.h"
#include "compress/compress.h"
#include "crypto/aes_gcm.h"
#include "crypto/digest.h"
#include "format/chunk.h"
#include "format/decrypt.h"
#include "format/layer_index.h"
#include "format/layer_reader.h"
#include "format/toc.pb.h"
#include "format/writer.h"
#include "tar/tar_reader.h"
#include "tar/tar_writer.h"
#include "tests/test_util.h"

namespace lazycrypt::format {
namespace {

using ::testing::AllOf;
using ::testing::Each;
using ::testing::HasSubstr;

constexpr size_t kChunk = kMinChunkSizeBytes;  // 64 KiB: many chunks from small layers

// ---- Helpers -----------------------------------------------------------------------------------

std::vector<uint8_t> Pattern(size_t n, uint32_t seed, bool compressible) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  if (compressible) {
    static const char* words[] = {"lazy ", "crypt ", "chunk ", "layer ", "tar\n", "zstd "};
    size_t i = 0;
    while (i < n) {
      const char* w = words[rng() % 6];
      for (const char* p = w; *p && i < n; ++p) v[i++] = static_cast<uint8_t>(*p);
    }
  } else {
    for (auto& b : v) b = static_cast<uint8_t>(rng());
  }
  return v;
}

tar::Entry TarEntry(std::string name, tar::EntryType type, uint32_t mode = 0644) {
  tar::Entry e;
  e.name = std::move(name);
  e.type = type;
  e.mode = mode;
  e.uid = 1000;
  e.gid = 1000;
  e.uname = "user";
  e.gname = "group";
  e.mtime_sec = 1700000000;
  e.mtime_nsec = 123456789;
  return e;
}

// A layer with every entry type and tar feature a container layer carries.
std::vector<uint8_t> BuildFeatureTar(tar::Flavor flavor) {
  MemoryOutputStream out;
  tar::TarWriter w(out, flavor);
  auto add = [&](tar::Entry e, const std::vector<uint8_t>& data = {},
                 const tar::WriteOptions& o = {}) {
    e.size = data.size();
    Status s = w.AppendEntry(e, data, o);
    if (!s.ok()) ADD_FAILURE() << e.name << ": " << s.ToString();
  };
  add(TarEntry("./", tar::EntryType::kDirectory, 0755));
  add(TarEntry("./bin/", tar::EntryType::kDirectory, 0755));
  {
    tar::Entry e = TarEntry("./bin/tool", tar::EntryType::kRegular, 04755);
    if (flavor == tar::Flavor::kPax) {  // GNU headers cannot carry xattrs
      e.xattrs["user.comment"] = "a tool";
      e.xattrs["security.capability"] = std::string("\x01\x00\x00\x02\x00\x04\x00\x00", 8);
    }
    add(e, Pattern(200 * 1024 + 17, 1, true));  // > chunk size, compressible
  }
  add(TarEntry("./bin/noise", tar::EntryType::kRegular), Pattern(150 * 1024 + 3, 2, false));
  add(TarEntry("./empty", tar::EntryType::kRegular));
  add(TarEntry("./tiny/", tar::EntryType::kDirectory, 01777));
  for (int i = 0; i < 300; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "./tiny/f%03d", i);
    std::string body = "tiny file " + std::to_string(i) + "\n";
    add(TarEntry(name, tar::EntryType::kRegular), std::vector<uint8_t>(body.begin(), body.end()));
  }
  // Exactly one chunk each, incompressible: equal-size stored records (the swap test uses them).
  add(TarEntry("./exact/a", tar::EntryType::kRegular), Pattern(kChunk, 3, false));
  add(TarEntry("./exact/b", tar::EntryType::kRegular), Pattern(kChunk, 4, false));
  add(TarEntry("./" + std::string(150, 'L'), tar::EntryType::kRegular), Pattern(1000, 5, true));
  std::string deep;
  for (int i = 0; i < 6; ++i) deep += "directory-with-a-long-name-number-" + std::to_string(i) + "/";
  add(TarEntry(deep + "file", tar::EntryType::kRegular), Pattern(3000, 6, true));  // > 255 bytes
  {
    tar::Entry e = TarEntry("./link", tar::EntryType::kSymlink, 0777);
    e.link_name = "bin/tool";
    add(e);
    e = TarEntry("./long-target-link", tar::EntryType::kSymlink, 0777);
    e.link_name = std::string(300, 't') + "/../x";
    add(e);
    e = TarEntry("./hard", tar::EntryType::kHardlink);
    e.link_name = "./bin/tool";
    add(e);
  }
  {
    tar::Entry e = TarEntry("./dev/null", tar::EntryType::kCharDevice, 0666);
    e.dev_major = 1;
    e.dev_minor = 3;
    add(e);
    e = TarEntry("./dev/sda", tar::EntryType::kBlockDevice, 0660);
    e.dev_major = 8;
    e.dev_minor = 0;
    add(e);
    add(TarEntry("./fifo", tar::EntryType::kFifo));
  }
  add(TarEntry("./etc/.wh.passwd", tar::EntryType::kRegular));
  add(TarEntry("./etc/.wh..wh..opq", tar::EntryType::kRegular));
  {
    tar::Entry e = TarEntry("./owned", tar::EntryType::kRegular, 0600);
    e.uid = 3000000;  // needs PAX or base-256
    e.gid = 4000000;
    add(e, Pattern(10, 7, true));
  }
  Status s = w.Finish();
  if (!s.ok()) ADD_FAILURE() << s.ToString();
  return out.Take();
}

// GNU tar's output for the shared feature tree (tests/data/make-feature-tree.sh).
std::vector<uint8_t> BuildGnuTar(bool pax) {
  testing::TempDir dir("lazycrypt-format-gnutar");
  std::filesystem::path tree = dir / "tree";
  std::string script = (testing::SourceDir() / "tests/data/make-feature-tree.sh").string();
  auto made = testing::RunCommand("bash " + testing::ShellQuote(script) + " " +
                                  testing::ShellQuote(tree.string()));
  if (made.exit_code != 0) {
    ADD_FAILURE() << "make-feature-tree.sh failed: " << made.output;
    return {};
  }
  std::filesystem::path out = dir / "layer.tar";
  std::string flags = pax ? "--format=pax --xattrs --xattrs-include='*'" : "--format=gnu";
  auto tarred = testing::RunCommand("tar " + flags + " -C " + testing::ShellQuote(tree.string()) +
                                    " -cf " + testing::ShellQuote(out.string()) + " .");
  if (tarred.exit_code != 0) {
    ADD_FAILURE() << "tar failed: " << tarred.output;
    return {};
  }
  std::string bytes = testing::ReadFileString(out);
  return {bytes.begin(), bytes.end()};
}

std::vector<uint8_t> CompressLayer(ByteSpan tar, compress::Compression c) {
  if (c == compress::Compression::kNone) return {tar.begin(), tar.end()};
  MemoryOutputStream mem;
  std::unique_ptr<OutputStream> s = c == compress::Compression::kGzip
                                        ? compress::NewGzipOutputStream(mem)
                                        : compress::NewZstdOutputStream(mem);
  EXPECT_TRUE(s->Write(tar).ok());
  EXPECT_TRUE(s->Close().ok());
  return mem.Take();
}

std::vector<uint8_t> DecompressZstd(ByteSpan data) {
  MemoryInputStream in(data);
  auto z = compress::NewZstdInputStream(in);
  MemoryOutputStream out;
  auto n = CopyStream(*z, out);
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  return out.Take();
}

struct SourceEntry {
  tar::Entry entry;
  std::vector<uint8_t> data;
};

std::vector<SourceEntry> ParseSource(ByteSpan tar_bytes) {
  MemoryInputStream in(tar_bytes);
  tar::TarReader reader(in);
  std::vector<SourceEntry> out;
  for (;;) {
    auto next = reader.Next();
    EXPECT_TRUE(next.ok()) << next.status().ToString();
    if (!next.ok() || !next->has_value()) break;
    SourceEntry se{**next, {}};
    se.data.resize(se.entry.size);
    size_t done = 0;
    while (done < se.data.size()) {
      auto n = reader.ReadData(MutableByteSpan(se.data).subspan(done));
      EXPECT_TRUE(n.ok() && *n > 0);
      if (!n.ok() || *n == 0) break;
      done += *n;
    }
    out.push_back(std::move(se));
  }
  return out;
}

LayerKey TestKey(uint8_t seed = 7) {
  std::vector<uint8_t> k(32);
  for (int i = 0; i < 32; ++i) k[i] = static_cast<uint8_t>(seed * 31 + i);
  return LayerKey(k);
}

WriterOptions SmallChunks(int threads = 2) {
  WriterOptions o;
  o.chunk_size_bytes = kChunk;
  o.threads = threads;
  return o;
}

struct Written {
  std::vector<uint8_t> blob;
  WriteResult result;
};

Written WriteBlob(ByteSpan layer, const LayerKey& key, const WriterOptions& options = SmallChunks()) {
  MemoryInputStream in(layer);
  MemoryOutputStream out;
  auto r = WriteLayer(in, key, out, options);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return {};
  EXPECT_FALSE(out.closed());
  return {out.Take(), *r};
}

// The tar stream a blob written from `source_tar` holds, and what decrypting it gives: its salt
// header (FORMAT.md §5.1), then the source byte for byte.
std::vector<uint8_t> BlobTar(const Written& w, ByteSpan source_tar) {
  auto header = ParseBlobHeader(ByteSpan(w.blob).first(kBlobHeaderSize));
  EXPECT_TRUE(header.ok());
  if (!header.ok()) return {};
  std::vector<uint8_t> out = LayerSaltTarHeader(header->salt);
  out.insert(out.end(), source_tar.begin(), source_tar.end());
  return out;
}

Result<std::vector<uint8_t>> Eager(const std::vector<uint8_t>& blob, const LayerKey& key,
                                   const crypto::Sha256Digest& pinned,
                                   DecryptOutput mode = DecryptOutput::kTar, int threads = 2,
                                   std::vector<uint8_t>* partial = nullptr) {
  MemoryBlobSource source(blob);
  MemoryOutputStream out;
  DecryptOptions o;
  o.output = mode;
  o.threads = threads;
  auto r = DecryptLayer(source, key, pinned, out, o);
  if (partial) *partial = out.bytes();
  if (!r.ok()) return r.status();
  return out.Take();
}

Result<std::vector<uint8_t>> Stream(const std::vector<uint8_t>& blob, const LayerKey& key,
                                    std::optional<crypto::Sha256Digest> pinned,
                                    DecryptOutput mode = DecryptOutput::kTar, int threads = 2,
                                    std::vector<uint8_t>* partial = nullptr) {
  MemoryInputStream in(blob);
  MemoryOutputStream out;
  DecryptOptions o;
  o.output = mode;
  o.threads = threads;
  auto r = DecryptLayerStream(in, key, pinned, out, o);
  if (partial) *partial = out.bytes();
  if (!r.ok()) return r.status();
  return out.Take();
}

// Records every ReadAt (the test's view of the network).
class CountingBlobSource final : public BlobSource {
 public:
  explicit CountingBlobSource(BlobSource& inner) : inner_(inner) {}
  uint64_t size() const override { return inner_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      reads_.emplace_back(offset, out.size());
    }
    return inner_.ReadAt(offset, out);
  }
  std::vector<std::pair<uint64_t, uint64_t>> reads() {
    std::lock_guard<std::mutex> lock(mu_);
    return reads_;
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    reads_.clear();
  }

 private:
  BlobSource& inner_;
  std::mutex mu_;
  std::vector<std::pair<uint64_t, uint64_t>> reads_;
};

EntryType FormatType(tar::EntryType t) {
  switch (t) {
    case tar::EntryType::kRegular: return EntryType::kRegular;
    case tar::EntryType::kHardlink: return EntryType::kHardlink;
    case tar::EntryType::kSymlink: return EntryType::kSymlink;
    case tar::EntryType::kCharDevice: return EntryType::kCharDevice;
    case tar::EntryType::kBlockDevice: return EntryType::kBlockDevice;
    case tar::EntryType::kDirectory: return EntryType::kDirectory;
    case tar::EntryType::kFifo: return EntryType::kFifo;
  }
  return EntryType::kRegular;
}

std::string Norm(const std::string& name) {
  auto n = NormalizeEntryName(name);
  EXPECT_TRUE(n.ok()) << name;
  return n.ok() ? *n : "";
}

// Every entry's metadata equals its tar header; every file's bytes equal its data, read whole
// and at random offsets/lengths through LayerReader.
void CheckIndexAgainstSource(const LayerReader& reader, const std::vector<SourceEntry>& source,
                             uint32_t seed) {
  const LayerIndex& index = reader.index();
  ASSERT_EQ(index.entries().size(), source.size());
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < source.size(); ++i) {
    const tar::Entry& t = source[i].entry;
    const EntryView view = index.entries()[i];
    const Entry e = view.Materialize();
    SCOPED_TRACE("entry " + std::to_string(i) + " '" + t.name + "'");
    EXPECT_EQ(e.name, Norm(t.name));
    EXPECT_EQ(e.type, FormatType(t.type));
    EXPECT_EQ(e.mode, t.mode);
    EXPECT_EQ(e.uid, t.uid);
    EXPECT_EQ(e.gid, t.gid);
    EXPECT_EQ(e.uname, t.uname);
    EXPECT_EQ(e.gname, t.gname);
    EXPECT_EQ(e.mtime_sec, t.mtime_sec);
    EXPECT_EQ(e.mtime_nsec, t.mtime_nsec);
    EXPECT_EQ(e.xattrs, t.xattrs);
    if (t.type == tar::EntryType::kRegular) {
      EXPECT_EQ(e.size, t.size);
      // The blob's tar stream is the salt header, then the source (FORMAT.md §5.1).
      EXPECT_EQ(e.data_offset, t.data_offset + kLayerSaltHeaderSize);
    } else {
      EXPECT_EQ(e.size, 0u);
    }
    if (t.type == tar::EntryType::kSymlink) {
      EXPECT_EQ(e.link_target, t.link_name);
    }
    if (t.type == tar::EntryType::kHardlink) {
      EXPECT_EQ(e.link_target, Norm(t.link_name));
    }
    if (t.type == tar::EntryType::kCharDevice || t.type == tar::EntryType::kBlockDevice) {
      EXPECT_EQ(e.dev_major, t.dev_major);
      EXPECT_EQ(e.dev_minor, t.dev_minor);
    }
    if (e.type != EntryType::kRegular) continue;

    const std::vector<uint8_t>& data = source[i].data;
    std::vector<uint8_t> whole(data.size() + 10, 0xEE);
    auto n = reader.ReadFile(view, 0, whole);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    ASSERT_EQ(*n, data.size());
    ASSERT_TRUE(std::equal(data.begin(), data.end(), whole.begin()));
    for (int k = 0; k < 4 && !data.empty(); ++k) {
      uint64_t off = rng() % data.size();
      size_t len = 1 + rng() % std::min<size_t>(data.size() + 100, 3 * kChunk);
      std::vector<uint8_t> part(len);
      auto got = reader.ReadFile(view, off, part);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      size_t want = std::min<uint64_t>(len, data.size() - off);
      ASSERT_EQ(*got, want) << "offset " << off << " length " << len;
      ASSERT_TRUE(std::equal(data.begin() + off, data.begin() + off + want, part.begin()))
          << "offset " << off << " length " << len;
    }
    std::vector<uint8_t> past(10);
    EXPECT_EQ(*reader.ReadFile(view, data.size(), past), 0u);
  }
}

// The chunking policy: chunks never exceed T; a file of at most T bytes lies in one chunk; a
// larger file starts on a chunk boundary.
// The writer's chunking (FORMAT.md §5) with the default options: a file that fits in a chunk
// lies in one; a larger one starts on a boundary; a file of at least kDefaultOwnChunkFromBytes
// shares no chunk with another file's data; and chunks holding data of several files stay
// within kDefaultPackChunkBytes.
void CheckChunkingPolicy(const LayerIndex& index) {
  for (const ChunkInfo& c : index.chunks()) EXPECT_LE(c.raw_size, index.target_chunk_size());
  const auto chunks = index.chunks();
  std::vector<int> files_in(chunks.size(), 0);
  std::vector<bool> holds_own(chunks.size(), false);
  for (EntryView view : index.entries()) {
    const Entry e = view.Materialize();
    if (e.type != EntryType::kRegular || e.size == 0) continue;
    ChunkRange r = index.ChunksForRange(e, 0, e.size);
    if (e.size <= index.target_chunk_size()) {
      EXPECT_EQ(r.count, 1u) << e.name;
    } else {
      EXPECT_EQ(chunks[r.first].tar_offset, e.data_offset) << e.name;
    }
    for (uint64_t c = r.first; c < r.first + r.count; ++c) {
      ++files_in[c];
      if (e.size >= kDefaultOwnChunkFromBytes) holds_own[c] = true;
    }
  }
  for (size_t c = 0; c < chunks.size(); ++c) {
    if (files_in[c] < 2) continue;
    EXPECT_FALSE(holds_own[c]) << "chunk " << c << " holds a file of its own and another's data";
    EXPECT_LE(chunks[c].raw_size, kDefaultPackChunkBytes + 64 * 1024) << "chunk " << c;
  }
}

// ---- Round trips -------------------------------------------------------------------------------

enum class Source { kTarWriterPax, kTarWriterGnu, kGnuTarPax, kGnuTarGnu };

const std::vector<uint8_t>& SourceTar(Source s) {
  static std::map<Source, std::vector<uint8_t>> cache;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(s);
  if (it != cache.end()) return it->second;
  std::vector<uint8_t> tar;
  switch (s) {
    case Source::kTarWriterPax: tar = BuildFeatureTar(tar::Flavor::kPax); break;
    case Source::kTarWriterGnu: tar = BuildFeatureTar(tar::Flavor::kGnu); break;
    case Source::kGnuTarPax: tar = BuildGnuTar(true); break;
    case Source::kGnuTarGnu: tar = BuildGnuTar(false); break;
  }
  return cache.emplace(s, std::move(tar)).first->second;
}

class LayerRoundTrip
    : public ::testing::TestWithParam<std::tuple<Source, compress::Compression>> {};

TEST_P(LayerRoundTrip, EveryDecodingPathGivesBackTheTarAndEveryFile) {
  const auto [source, compression] = GetParam();
  const std::vector<uint8_t>& tar = SourceTar(source);
  ASSERT_GT(tar.size(), 100000u);
  const std::vector<uint8_t> layer = CompressLayer(tar, compression);
  const LayerKey key = TestKey();
  Written w = WriteBlob(layer, key);
  ASSERT_FALSE(w.blob.empty());

  // WriteResult describes what was written.
  const std::vector<uint8_t> salted = BlobTar(w, tar);
  EXPECT_EQ(w.result.diff_id, crypto::Sha256::Of(salted));
  EXPECT_EQ(w.result.tar_size, salted.size());
  EXPECT_EQ(w.result.source_diff_id, crypto::Sha256::Of(tar));
  EXPECT_EQ(w.result.source_tar_size, tar.size());
  EXPECT_EQ(w.result.blob_size, w.blob.size());
  EXPECT_EQ(w.result.blob_digest, crypto::Sha256::Of(w.blob));
  EXPECT_GT(w.result.chunk_count, 10u);
  auto source_entries = ParseSource(tar);
  EXPECT_EQ(w.result.entry_count, source_entries.size());
  auto header = ParseBlobHeader(ByteSpan(w.blob).first(kBlobHeaderSize));
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(w.result.key_commitment, header->commitment);
  EXPECT_EQ(w.result.key_commitment, DeriveKeys(key, header->salt)->commitment);

  // Eager, kTar: byte for byte.
  auto eager = Eager(w.blob, key, w.result.toc_digest);
  ASSERT_TRUE(eager.ok()) << eager.status().ToString();
  EXPECT_TRUE(*eager == salted);
  // Eager, kTarZstd: decompresses to the same.
  auto eager_zstd = Eager(w.blob, key, w.result.toc_digest, DecryptOutput::kTarZstd);
  ASSERT_TRUE(eager_zstd.ok()) << eager_zstd.status().ToString();
  EXPECT_EQ(compress::DetectCompression(*eager_zstd), compress::Compression::kZstd);
  EXPECT_TRUE(DecompressZstd(*eager_zstd) == salted);
  // Stream, with and without a pinned digest, both outputs.
  for (bool pin : {true, false}) {
    std::optional<crypto::Sha256Digest> pinned;
    if (pin) pinned = w.result.toc_digest;
    auto streamed = Stream(w.blob, key, pinned);
    ASSERT_TRUE(streamed.ok()) << streamed.status().ToString();
    EXPECT_TRUE(*streamed == salted);
    auto streamed_zstd = Stream(w.blob, key, pinned, DecryptOutput::kTarZstd);
    ASSERT_TRUE(streamed_zstd.ok()) << streamed_zstd.status().ToString();
    EXPECT_TRUE(DecompressZstd(*streamed_zstd) == salted);
  }

  // Lazy: the index and every file.
  MemoryBlobSource blob(w.blob);
  auto reader = LayerReader::Open(blob, key, w.result.toc_digest);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  const LayerIndex& index = (*reader)->index();
  EXPECT_EQ(index.diff_id(), w.result.diff_id);
  EXPECT_EQ(index.tar_size(), salted.size());
  EXPECT_EQ(index.chunks().size(), w.result.chunk_count);
  EXPECT_EQ(index.toc_digest(), w.result.toc_digest);
  EXPECT_EQ(crypto::Sha256::Of(ByteSpan(w.blob).subspan(index.toc_offset(), index.toc_size())),
            w.result.toc_digest);
  CheckIndexAgainstSource(**reader, source_entries, static_cast<uint32_t>(source) * 10 +
                                                        static_cast<uint32_t>(compression));
  CheckChunkingPolicy(index);
  // Chunks concatenate to the tar stream.
  std::vector<uint8_t> joined;
  for (uint64_t i = 0; i < index.chunks().size(); ++i) {
    auto chunk = (*reader)->ReadChunk(i);
    ASSERT_TRUE(chunk.ok()) << chunk.status().ToString();
    joined.insert(joined.end(), (*chunk)->begin(), (*chunk)->end());
  }
  EXPECT_TRUE(joined == salted);
}

std::string RoundTripName(
    const ::testing::TestParamInfo<std::tuple<Source, compress::Compression>>& info) {
  static const char* const kSources[] = {"TarWriterPax", "TarWriterGnu", "GnuTarPax", "GnuTarGnu"};
  return std::string(kSources[static_cast<int>(std::get<0>(info.param))]) +
         std::string(compress::CompressionName(std::get<1>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(
    AllSources, LayerRoundTrip,
    ::testing::Combine(::testing::Values(Source::kTarWriterPax, Source::kTarWriterGnu,
                                         Source::kGnuTarPax, Source::kGnuTarGnu),
                       ::testing::Values(compress::Compression::kNone,
                                         compress::Compression::kGzip,
                                         compress::Compression::kZstd)),
    RoundTripName);

TEST(FormatRoundTrip, FeatureTreeHasWhatItShould) {
  // Guards the sources themselves: if GNU tar or the script stopped producing a feature, the
  // round trips above would silently test less.
  auto entries = ParseSource(SourceTar(Source::kGnuTarPax));
  std::set<tar::EntryType> types;
  bool xattr = false, capability = false, long_name = false, whiteout = false, big = false;
  for (const auto& se : entries) {
    types.insert(se.entry.type);
    xattr |= se.entry.xattrs.count("user.comment") > 0;
    capability |= se.entry.xattrs.count("security.capability") > 0;
    long_name |= se.entry.name.size() > 255;
    whiteout |= se.entry.name.find(".wh..wh..opq") != std::string::npos;
    big |= se.entry.size > kChunk;
  }
  EXPECT_EQ(types.size(), 7u);
  EXPECT_TRUE(xattr && capability && long_name && whiteout && big);
}

TEST(FormatRoundTrip, TrailingZerosAfterTheArchiveAreKept) {
  // Zero padding after the end-of-archive marker is part of the diff_id and comes back (other
  // bytes there are refused: toc_tar_match_test.cc).
  std::vector<uint8_t> tar = SourceTar(Source::kTarWriterPax);
  std::vector<uint8_t> junk(777, 0);
  tar.insert(tar.end(), junk.begin(), junk.end());
  Written w = WriteBlob(tar, TestKey());
  EXPECT_EQ(w.result.source_diff_id, crypto::Sha256::Of(tar));
  EXPECT_EQ(w.result.diff_id, crypto::Sha256::Of(BlobTar(w, tar)));
  auto eager = Eager(w.blob, TestKey(), w.result.toc_digest);
  ASSERT_TRUE(eager.ok()) << eager.status().ToString();
  EXPECT_TRUE(*eager == BlobTar(w, tar));
}

TEST(FormatRoundTrip, SingleChunkLayer) {
  MemoryOutputStream out;
  tar::TarWriter w(out);
  tar::Entry e = TarEntry("only", tar::EntryType::kRegular);
  std::string body = "just one file";
  e.size = body.size();
  ASSERT_TRUE(w.AppendEntry(e, AsBytes(body)).ok());
  ASSERT_TRUE(w.Finish(0).ok());
  std::vector<uint8_t> tar = out.Take();
  Written written = WriteBlob(tar, TestKey());
  EXPECT_EQ(written.result.chunk_count, 1u);
  auto streamed = Stream(written.blob, TestKey(), written.result.toc_digest);
  ASSERT_TRUE(streamed.ok()) << streamed.status().ToString();
  EXPECT_TRUE(*streamed == BlobTar(written, tar));
  MemoryBlobSource blob(written.blob);
  auto reader = LayerReader::Open(blob, TestKey(), written.result.toc_digest);
  ASSERT_TRUE(reader.ok());
  std::optional<EntryView> only = (*reader)->index().Find("only");
  ASSERT_TRUE(only);
  std::string got(body.size(), '\0');
  EXPECT_EQ(*(*reader)->ReadFile(*only, 0, MutableByteSpan(reinterpret_cast<uint8_t*>(got.data()),
                                                            got.size())),
            body.size());
  EXPECT_EQ(got, body);
}

// ---- Index queries -----------------------------------------------------------------------------

class Fixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tar_ = new std::vector<uint8_t>(SourceTar(Source::kTarWriterPax));
    written_ = new Written(WriteBlob(*tar_, TestKey()));
    // Same key, same tar, another salt: for the cross-layer splice.
    other_ = new Written(WriteBlob(*tar_, TestKey()));
    // What written() decrypts to: its salt header (FORMAT.md §5.1), then the source.
    *tar_ = BlobTar(*written_, *tar_);
  }
  static void TearDownTestSuite() {
    delete tar_;
    delete written_;
    delete other_;
  }
  static const std::vector<uint8_t>& tar() { return *tar_; }
  static const Written& written() { return *written_; }
  static const Written& other() { return *other_; }
  static const crypto::Sha256Digest& pinned() { return written_->result.toc_digest; }

  static std::shared_ptr<const LayerIndex> OpenIndex(const std::vector<uint8_t>& blob) {
    MemoryBlobSource source(blob);
    auto index = LayerIndex::Open(source, TestKey(), pinned());
    EXPECT_TRUE(index.ok()) << index.status().ToString();
    return index.ok() ? *index : nullptr;
  }

  static std::vector<uint8_t>* tar_;
  static Written* written_;
  static Written* other_;
};
std::vector<uint8_t>* Fixture::tar_ = nullptr;
Written* Fixture::written_ = nullptr;
Written* Fixture::other_ = nullptr;

using LayerIndexTest = Fixture;

TEST_F(LayerIndexTest, FindNormalizedNamesAndTheRoot) {
  auto index = OpenIndex(written().blob);
  ASSERT_NE(index, nullptr);
  std::optional<EntryView> root = index->Find(".");
  ASSERT_TRUE(root);
  EXPECT_EQ(root->type(), EntryType::kDirectory);
  std::optional<EntryView> tool = index->Find("bin/tool");
  ASSERT_TRUE(tool);
  EXPECT_EQ(tool->mode(), 04755u);
  EXPECT_EQ(tool->size(), 200u * 1024 + 17);
  EXPECT_FALSE(index->Find("./bin/tool"));  // lookups take normalized names
  EXPECT_FALSE(index->Find("bin/too"));
  EXPECT_FALSE(index->Find("zzz"));
  std::optional<EntryView> hard = index->Find("hard");
  ASSERT_TRUE(hard);
  EXPECT_EQ(hard->type(), EntryType::kHardlink);
  EXPECT_EQ(hard->link_target(), "bin/tool");
  EXPECT_TRUE(index->Find("etc/.wh..wh..opq"));
}

TEST_F(LayerIndexTest, FindReturnsTheLastOfDuplicateNames) {
  MemoryOutputStream out;
  tar::TarWriter w(out);
  for (std::string body : {"first", "second!"}) {
    tar::Entry e = TarEntry("dup", tar::EntryType::kRegular);
    e.size = body.size();
    ASSERT_TRUE(w.AppendEntry(e, AsBytes(body)).ok());
  }
  ASSERT_TRUE(w.Finish().ok());
  Written d = WriteBlob(out.bytes(), TestKey());
  MemoryBlobSource source(d.blob);
  auto index = LayerIndex::Open(source, TestKey(), d.result.toc_digest);
  ASSERT_TRUE(index.ok());
  EXPECT_EQ((*index)->entries().size(), 2u);
  EXPECT_EQ((*index)->Find("dup")->size(), 7u);
}

TEST_F(LayerIndexTest, ChunksForRangeCoversExactlyTheRange) {
  auto index = OpenIndex(written().blob);
  std::optional<EntryView> tool = index->Find("bin/tool");
  ASSERT_TRUE(tool);
  // The file starts on a chunk boundary (it is larger than T).
  ChunkRange all = index->ChunksForRange(*tool, 0, tool->size());
  EXPECT_EQ(index->chunks()[all.first].tar_offset, tool->data_offset());
  EXPECT_EQ(all.count, 4u);  // 200 KiB + 17 bytes over 64 KiB chunks
  EXPECT_EQ(index->ChunksForRange(*tool, 0, 1), (ChunkRange{all.first, 1}));
  EXPECT_EQ(index->ChunksForRange(*tool, kChunk - 1, 2), (ChunkRange{all.first, 2}));
  EXPECT_EQ(index->ChunksForRange(*tool, kChunk, kChunk), (ChunkRange{all.first + 1, 1}));
  EXPECT_EQ(index->ChunksForRange(*tool, tool->size() - 1, 100), (ChunkRange{all.first + 3, 1}));
  EXPECT_TRUE(index->ChunksForRange(*tool, tool->size(), 1).empty());
  EXPECT_TRUE(index->ChunksForRange(*tool, 0, 0).empty());
  EXPECT_TRUE(index->ChunksForRange(*index->Find("bin"), 0, 10).empty());
}

TEST_F(LayerIndexTest, ReadFileRejectsNonRegularEntries) {
  MemoryBlobSource source(written().blob);
  auto reader = LayerReader::Open(source, TestKey(), pinned());
  ASSERT_TRUE(reader.ok());
  std::vector<uint8_t> out(10);
  for (const char* name : {"bin", "link", "hard", "dev/null", "fifo"}) {
    std::optional<EntryView> e = (*reader)->index().Find(name);
    ASSERT_TRUE(e) << name;
    EXPECT_EQ((*reader)->ReadFile(*e, 0, out).status().code(), StatusCode::kInvalidArgument)
        << name;
  }
  // A view of another layer's entries (here: another index over the same blob) is refused.
  auto other = OpenIndex(written().blob);
  ASSERT_NE(other, nullptr);
  EXPECT_EQ((*reader)->ReadFile(*other->Find("bin/tool"), 0, out).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*reader)->ReadFile(EntryView(), 0, out).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(LayerIndexTest, ReaderRefusesAnOpenerOfAnotherBlob) {
  MemoryBlobSource source(written().blob);
  auto index = OpenIndex(written().blob);
  auto other_header = ParseBlobHeader(ByteSpan(other().blob).first(kBlobHeaderSize));
  auto opener = ChunkOpener::Create(TestKey(), *other_header);
  ASSERT_TRUE(opener.ok());
  EXPECT_EQ(LayerReader::Create(source, index, *opener).status().code(),
            StatusCode::kFailedPrecondition);
}

// ---- Laziness ----------------------------------------------------------------------------------

using LayerLaziness = Fixture;

TEST_F(LayerLaziness, OpenReadsOnlyTheFooterAndTheToc) {
  MemoryBlobSource inner(written().blob);
  CountingBlobSource blob(inner);
  // A tail guess of the footer alone: the footer, then the TOC it names.
  TailReadOptions footer_only;
  footer_only.tail_guess_bytes = kFooterSize;
  auto index = LayerIndex::Open(blob, TestKey(), pinned(), {}, footer_only);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  const uint64_t size = written().blob.size();
  EXPECT_EQ(blob.reads(), (std::vector<std::pair<uint64_t, uint64_t>>{
                              {size - kFooterSize, kFooterSize},
                              {(*index)->toc_offset(), (*index)->toc_size()}}));
  EXPECT_EQ((*index)->toc_offset() + (*index)->toc_size() + kFooterSize, size);
}

// Issue 19: on a network every ReadAt is a round trip; footer and TOC come in one when the tail
// read holds both.
TEST_F(LayerLaziness, OpenReadsFooterAndTocInOneReadWhenTheTailHoldsThem) {
  MemoryBlobSource inner(written().blob);
  const uint64_t size = written().blob.size();
  uint64_t toc_offset = 0, toc_size = 0;
  {
    CountingBlobSource blob(inner);
    TailReadOptions footer_only;
    footer_only.tail_guess_bytes = kFooterSize;
    auto index = LayerIndex::Open(blob, TestKey(), pinned(), {}, footer_only);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    toc_offset = (*index)->toc_offset();
    toc_size = (*index)->toc_size();
  }
  // The TOC's size known (the descriptor's toc-size annotation): exactly TOC + footer.
  {
    CountingBlobSource blob(inner);
    TailReadOptions hinted;
    hinted.toc_size_hint = toc_size;
    auto index = LayerIndex::Open(blob, TestKey(), pinned(), {}, hinted);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    EXPECT_EQ(blob.reads(), (std::vector<std::pair<uint64_t, uint64_t>>{
                                {toc_offset, toc_size + kFooterSize}}));
  }
  // A guess larger than TOC + footer: one read of the guess (capped at the blob's size).
  {
    CountingBlobSource blob(inner);
    TailReadOptions guess;
    guess.tail_guess_bytes = toc_size + kFooterSize + 1000;
    auto index = LayerIndex::Open(blob, TestKey(), pinned(), {}, guess);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    const uint64_t want = std::min<uint64_t>(size, toc_size + kFooterSize + 1000);
    EXPECT_EQ(blob.reads(),
              (std::vector<std::pair<uint64_t, uint64_t>>{{size - want, want}}));
  }
  // A hint that is too small (it is not trusted): the rest of the TOC in a second read.
  {
    CountingBlobSource blob(inner);
    TailReadOptions wrong;
    wrong.toc_size_hint = toc_size / 2;
    auto index = LayerIndex::Open(blob, TestKey(), pinned(), {}, wrong);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    const uint64_t first = toc_size / 2 + kFooterSize;
    EXPECT_EQ(blob.reads(), (std::vector<std::pair<uint64_t, uint64_t>>{
                                {size - first, first}, {toc_offset, toc_size - toc_size / 2}}));
  }
  // A hint over the TOC limit is ignored (the guess is read instead), and the pin still decides.
  {
    CountingBlobSource blob(inner);
    TailReadOptions huge;
    huge.toc_size_hint = uint64_t{1} << 62;
    huge.tail_guess_bytes = kFooterSize;
    auto index = LayerIndex::Open(blob, TestKey(), pinned(), {}, huge);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    EXPECT_EQ(blob.reads().size(), 2u);
    crypto::Sha256Digest other = pinned();
    other[0] ^= 1;
    TailReadOptions hinted;
    hinted.toc_size_hint = toc_size;
    EXPECT_EQ(LayerIndex::Open(blob, TestKey(), other, {}, hinted).status().code(),
              StatusCode::kAuthFailed);
  }
}

TEST_F(LayerLaziness, Reading4KiBFetchesOnlyTheCoveringRecord) {
  MemoryBlobSource inner(written().blob);
  CountingBlobSource blob(inner);
  auto reader = LayerReader::Open(blob, TestKey(), pinned());
  ASSERT_TRUE(reader.ok());
  const LayerIndex& index = (*reader)->index();
  std::optional<EntryView> tool = index.Find("bin/tool");
  ASSERT_TRUE(tool);

  // 4 KiB inside the second chunk of the file: exactly that record.
  blob.Clear();
  std::vector<uint8_t> out(4096);
  ASSERT_EQ(*(*reader)->ReadFile(*tool, kChunk + 1000, out), 4096u);
  const ChunkInfo& second = index.chunks()[index.ChunkForTarOffset(tool->data_offset()) + 1];
  EXPECT_EQ(blob.reads(), (std::vector<std::pair<uint64_t, uint64_t>>{
                              {second.blob_offset, second.record_size()}}));
  std::vector<uint8_t> expect = Pattern(200 * 1024 + 17, 1, true);
  EXPECT_TRUE(std::equal(out.begin(), out.end(), expect.begin() + kChunk + 1000));

  // 4 KiB straddling a boundary: both records, in one read.
  blob.Clear();
  ASSERT_EQ(*(*reader)->ReadFile(*tool, 2 * kChunk - 2048, out), 4096u);
  const ChunkInfo& third = index.chunks()[second.index + 1];
  EXPECT_EQ(blob.reads(), (std::vector<std::pair<uint64_t, uint64_t>>{
                              {second.blob_offset, second.record_size() + third.record_size()}}));
  EXPECT_TRUE(std::equal(out.begin(), out.end(), expect.begin() + 2 * kChunk - 2048));

  // A tiny file shares a chunk with its neighbours: one record.
  blob.Clear();
  std::optional<EntryView> tiny = index.Find("tiny/f123");
  ASSERT_TRUE(tiny);
  std::vector<uint8_t> small(64);
  ASSERT_EQ(*(*reader)->ReadFile(*tiny, 0, small), tiny->size());
  const ChunkInfo& holder = index.chunks()[index.ChunkForTarOffset(tiny->data_offset())];
  EXPECT_EQ(blob.reads(), (std::vector<std::pair<uint64_t, uint64_t>>{
                              {holder.blob_offset, holder.record_size()}}));
  EXPECT_EQ(std::string(small.begin(), small.begin() + tiny->size()), "tiny file 123\n");
}

// ---- Tampering ---------------------------------------------------------------------------------

// Each tamper is checked on every path that reads the damaged bytes, and each path must fail with
// a named error and give back no byte that was not authenticated.
class LayerTamper : public Fixture {
 protected:
  // Index of the chunk holding `name`'s first data byte.
  static const ChunkInfo& ChunkOf(const LayerIndex& index, const char* name) {
    return index.chunks()[index.ChunkForTarOffset(index.Find(name)->data_offset())];
  }

  // The eager and stream decoders must fail, writing at most a strict prefix of the true tar.
  // damage_in_chunks: the failing check is a chunk's, so the output must stop before it. Damage
  // to the TOC or footer is found by the stream decoder only after every chunk was emitted (the
  // caller discards the output on error): the output is then still the authentic layer.
  static void ExpectDecodersFail(const std::vector<uint8_t>& blob, StatusCode eager_code,
                                 const std::string& eager_text, StatusCode stream_code,
                                 const std::string& stream_text,
                                 const LayerKey& key = TestKey(), bool damage_in_chunks = true) {
    for (DecryptOutput mode : {DecryptOutput::kTar, DecryptOutput::kTarZstd}) {
      std::vector<uint8_t> partial;
      auto e = Eager(blob, key, pinned(), mode, 2, &partial);
      ASSERT_FALSE(e.ok()) << "eager accepted a tampered blob";
      EXPECT_EQ(e.status().code(), eager_code) << e.status().ToString();
      EXPECT_THAT(e.status().message(), HasSubstr(eager_text));
      if (mode == DecryptOutput::kTar) ExpectPrefix(partial, damage_in_chunks);

      auto s = Stream(blob, key, pinned(), mode, 2, &partial);
      ASSERT_FALSE(s.ok()) << "stream accepted a tampered blob";
      EXPECT_EQ(s.status().code(), stream_code) << s.status().ToString();
      EXPECT_THAT(s.status().message(), HasSubstr(stream_text));
      if (mode == DecryptOutput::kTar) ExpectPrefix(partial, damage_in_chunks);
    }
  }

  static void ExpectStrictPrefix(const std::vector<uint8_t>& partial) { ExpectPrefix(partial, true); }
  static void ExpectPrefix(const std::vector<uint8_t>& partial, bool strict) {
    if (strict) {
      ASSERT_LT(partial.size(), tar().size());
    } else {
      ASSERT_LE(partial.size(), tar().size());
    }
    EXPECT_TRUE(std::equal(partial.begin(), partial.end(), tar().begin()))
        << "decoder emitted bytes that are not the layer's";
  }

  // The lazy path: the index opens (the damage is in a chunk), reading the file fails and leaves
  // the buffer zeroed; reading a file elsewhere still works.
  static void ExpectLazyReadFails(const std::vector<uint8_t>& blob, const char* damaged_file,
                                  StatusCode code, const std::string& text) {
    MemoryBlobSource source(blob);
    auto reader = LayerReader::Open(source, TestKey(), pinned());
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    std::optional<EntryView> e = (*reader)->index().Find(damaged_file);
    ASSERT_TRUE(e);
    std::vector<uint8_t> out(e->size(), 0xAA);
    auto n = (*reader)->ReadFile(*e, 0, out);
    ASSERT_FALSE(n.ok());
    EXPECT_EQ(n.status().code(), code) << n.status().ToString();
    EXPECT_THAT(n.status().message(), HasSubstr(text));
    EXPECT_THAT(out, Each(0));
    std::vector<uint8_t> ok(8);
    EXPECT_TRUE((*reader)->ReadFile(*(*reader)->index().Find("owned"), 0, ok).ok());
  }

  static std::vector<uint8_t> Flipped(uint64_t offset, uint8_t mask = 0x01) {
    std::vector<uint8_t> blob = written().blob;
    blob.at(offset) ^= mask;
    return blob;
  }
};

TEST_F(LayerTamper, FlippedChunkCiphertextByte) {
  auto index = OpenIndex(written().blob);
  for (const char* file : {"bin/tool", "bin/noise"}) {  // a compressed and a stored chunk
    const ChunkInfo& c = ChunkOf(*index, file);
    auto blob = Flipped(c.blob_offset + kRecordHeaderSize + c.payload_size / 2);
    // The record's pin is checked before GCM (the stream path, without the TOC yet, opens it).
    ExpectLazyReadFails(blob, file, StatusCode::kAuthFailed,
                        "does not match the digest pinned in the TOC");
    ExpectDecodersFail(blob, StatusCode::kAuthFailed, "chunk " + std::to_string(c.index),
                       StatusCode::kAuthFailed, "chunk " + std::to_string(c.index));
  }
}

TEST_F(LayerTamper, FlippedChunkTagByte) {
  auto index = OpenIndex(written().blob);
  const ChunkInfo& c = ChunkOf(*index, "bin/tool");
  auto blob = Flipped(c.blob_end() - 1, 0x80);
  ExpectLazyReadFails(blob, "bin/tool", StatusCode::kAuthFailed,
                      "does not match the digest pinned in the TOC");
  ExpectDecodersFail(blob, StatusCode::kAuthFailed, "does not match the digest pinned in the TOC",
                     StatusCode::kAuthFailed, "authentication failed");
}

TEST_F(LayerTamper, FlippedRecordHeaderByte) {
  auto index = OpenIndex(written().blob);
  const ChunkInfo& c = ChunkOf(*index, "bin/tool");
  // The payload size's low byte: the reader compares with the chunk table before anything else.
  auto blob = Flipped(c.blob_offset);
  ExpectLazyReadFails(blob, "bin/tool", StatusCode::kCorruption, "does not match the chunk table");
  // The stream decoder trusts the header for framing, then the record (or the next one, now
  // misframed) fails authentication or parsing.
  std::vector<uint8_t> partial;
  auto s = Stream(blob, TestKey(), pinned(), DecryptOutput::kTar, 2, &partial);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("chunk " + std::to_string(c.index)));
  ExpectStrictPrefix(partial);
  auto e = Eager(blob, TestKey(), pinned());
  EXPECT_THAT(e.status().message(), HasSubstr("does not match the chunk table"));
  // A reserved byte.
  blob = Flipped(c.blob_offset + 10);
  ExpectLazyReadFails(blob, "bin/tool", StatusCode::kCorruption, "does not match the chunk table");
  ExpectDecodersFail(blob, StatusCode::kCorruption, "does not match the chunk table",
                     StatusCode::kCorruption, "reserved");
}

TEST_F(LayerTamper, FlippedLastFlag) {
  auto index = OpenIndex(written().blob);
  // Clearing it on the final record, and setting it on a middle one.
  const ChunkInfo& final_chunk = index->chunks().back();
  auto blob = Flipped(final_chunk.blob_offset + 8, kRecordFlagLast);
  ExpectDecodersFail(blob, StatusCode::kCorruption, "does not match the chunk table",
                     StatusCode::kAuthFailed, "chunk " + std::to_string(final_chunk.index));
  const ChunkInfo& middle = ChunkOf(*index, "bin/noise");
  blob = Flipped(middle.blob_offset + 8, kRecordFlagLast);
  ExpectLazyReadFails(blob, "bin/noise", StatusCode::kCorruption, "does not match the chunk table");
  ExpectDecodersFail(blob, StatusCode::kCorruption, "does not match the chunk table",
                     StatusCode::kAuthFailed, "chunk " + std::to_string(middle.index));
}

TEST_F(LayerTamper, FlippedTocByte) {
  auto index = OpenIndex(written().blob);
  auto blob = Flipped(index->toc_offset() + index->toc_size() / 2);
  MemoryBlobSource source(blob);
  // Against the pinned digest: refused before decryption.
  auto opened = LayerIndex::Open(source, TestKey(), pinned());
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), StatusCode::kAuthFailed);
  EXPECT_THAT(opened.status().message(),
              AllOf(HasSubstr("TOC digest mismatch: pinned " + crypto::OciDigest(pinned())),
                    HasSubstr("blob has sha256:")));
  // Even if the manifest were changed to pin the damaged TOC, GCM refuses it.
  auto repinned = crypto::Sha256::Of(
      ByteSpan(blob).subspan(index->toc_offset(), index->toc_size()));
  opened = LayerIndex::Open(source, TestKey(), repinned);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), StatusCode::kAuthFailed);
  EXPECT_THAT(opened.status().message(), HasSubstr("TOC: authentication failed"));
  ExpectDecodersFail(blob, StatusCode::kAuthFailed, "TOC digest mismatch",
                     StatusCode::kAuthFailed, "TOC digest mismatch", TestKey(),
                     /*damage_in_chunks=*/false);
  // The stream decoder without a pinned digest still authenticates the TOC.
  auto s = Stream(blob, TestKey(), std::nullopt);
  EXPECT_THAT(s.status().message(), HasSubstr("TOC: authentication failed"));
}

TEST_F(LayerTamper, FlippedFooterBytes) {
  const uint64_t footer = written().blob.size() - kFooterSize;
  struct Case {
    uint64_t offset;
    StatusCode code;
    std::string text;
  };
  const std::vector<Case> cases = {
      {footer + 0, StatusCode::kCorruption, "magic"},               // header copy: magic
      {footer + 8, StatusCode::kCorruption, "version"},             // header copy: version
      {footer + 20, StatusCode::kAuthFailed, "wrong layer key"},    // header copy: salt
      {footer + 60, StatusCode::kAuthFailed, "wrong layer key"},    // header copy: commitment
      {footer + 80, StatusCode::kCorruption, "!= blob size"},       // toc_offset
      {footer + 88, StatusCode::kCorruption, "!= blob size"},       // toc_size
      {footer + 100, StatusCode::kCorruption, "end magic"},         // end magic
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("footer byte " + std::to_string(c.offset - footer));
    auto blob = Flipped(c.offset);
    MemoryBlobSource source(blob);
    auto opened = LayerIndex::Open(source, TestKey(), pinned());
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.status().code(), c.code) << opened.status().ToString();
    EXPECT_THAT(opened.status().message(), HasSubstr(c.text));
    auto e = Eager(blob, TestKey(), pinned());
    EXPECT_EQ(e.status().code(), c.code);
    std::vector<uint8_t> partial;
    auto s = Stream(blob, TestKey(), pinned(), DecryptOutput::kTar, 2, &partial);
    ASSERT_FALSE(s.ok());
    ExpectPrefix(partial, /*strict=*/false);
  }
}

TEST_F(LayerTamper, FlippedBlobHeaderByte) {
  for (uint64_t offset : {0, 8, 20, 60}) {
    SCOPED_TRACE("header byte " + std::to_string(offset));
    auto blob = Flipped(offset);
    // The lazy path never reads the header (the footer holds its copy): the index still opens.
    MemoryBlobSource source(blob);
    EXPECT_TRUE(LayerIndex::Open(source, TestKey(), pinned()).ok());
    // The eager path compares it with the footer's copy.
    auto e = Eager(blob, TestKey(), pinned());
    ASSERT_FALSE(e.ok());
    EXPECT_THAT(e.status().message(), HasSubstr("blob header does not match its copy"));
    // The stream path reads it first: bad magic/version, or a salt/commitment that does not fit
    // the key.
    std::vector<uint8_t> partial;
    auto s = Stream(blob, TestKey(), pinned(), DecryptOutput::kTar, 2, &partial);
    ASSERT_FALSE(s.ok());
    EXPECT_THAT(s.status().message(), offset < 16 ? HasSubstr("blob header")
                                                  : HasSubstr("wrong layer key"));
    EXPECT_TRUE(partial.empty());
  }
}

TEST_F(LayerTamper, SwappedChunks) {
  auto index = OpenIndex(written().blob);
  const ChunkInfo& a = ChunkOf(*index, "exact/a");
  const ChunkInfo& b = ChunkOf(*index, "exact/b");
  ASSERT_NE(a.index, b.index);
  ASSERT_EQ(a.record_size(), b.record_size());  // same sizes: only the crypto can tell
  ASSERT_TRUE(a.stored && b.stored);
  std::vector<uint8_t> blob = written().blob;
  std::swap_ranges(blob.begin() + a.blob_offset, blob.begin() + a.blob_end(),
                   blob.begin() + b.blob_offset);
  ExpectLazyReadFails(blob, "exact/a", StatusCode::kAuthFailed, "chunk " + std::to_string(a.index));
  ExpectLazyReadFails(blob, "exact/b", StatusCode::kAuthFailed, "chunk " + std::to_string(b.index));
  ExpectDecodersFail(blob, StatusCode::kAuthFailed, "chunk " + std::to_string(a.index),
                     StatusCode::kAuthFailed, "chunk " + std::to_string(a.index));
}

TEST_F(LayerTamper, ChunkFromAnotherLayerWithTheSameKey) {
  auto index = OpenIndex(written().blob);
  const ChunkInfo& c = ChunkOf(*index, "bin/tool");
  // The other blob holds the same tar under the same key: byte-identical plaintext, same sizes,
  // only the salt differs (and with it the salt header, so the first chunk's compressed size may
  // differ by a byte or two: take the other blob's record of the same index).
  MemoryBlobSource other_source(other().blob);
  auto other_index = LayerIndex::Open(other_source, TestKey(), other().result.toc_digest);
  ASSERT_TRUE(other_index.ok()) << other_index.status().ToString();
  const ChunkInfo& oc = (*other_index)->chunks()[c.index];
  ASSERT_EQ(oc.record_size(), c.record_size());
  std::vector<uint8_t> blob = written().blob;
  std::copy(other().blob.begin() + oc.blob_offset, other().blob.begin() + oc.blob_end(),
            blob.begin() + c.blob_offset);
  ASSERT_NE(blob, written().blob);
  ExpectLazyReadFails(blob, "bin/tool", StatusCode::kAuthFailed, "chunk " + std::to_string(c.index));
  ExpectDecodersFail(blob, StatusCode::kAuthFailed, "chunk " + std::to_string(c.index),
                     StatusCode::kAuthFailed, "chunk " + std::to_string(c.index));
  // And the other blob's TOC does not open under this blob's pin.
  MemoryBlobSource source(other().blob);
  EXPECT_THAT(LayerIndex::Open(source, TestKey(), pinned()).status().message(),
              HasSubstr("TOC digest mismatch"));
}

TEST_F(LayerTamper, RecordsTruncatedOrExtended) {
  auto index = OpenIndex(written().blob);
  const auto chunks = index->chunks();
  const ChunkInfo& last = chunks.back();
  const ChunkInfo& before_last = chunks[chunks.size() - 2];
  const std::vector<uint8_t>& good = written().blob;
  // 1. The final record removed (TOC and footer kept): a truncated sequence.
  std::vector<uint8_t> dropped(good.begin(), good.begin() + last.blob_offset);
  dropped.insert(dropped.end(), good.begin() + last.blob_end(), good.end());
  // 2. A record cut short in the middle.
  std::vector<uint8_t> cut(good.begin(), good.begin() + before_last.blob_offset + 100);
  // 3. A record repeated (an extended sequence).
  std::vector<uint8_t> repeated(good.begin(), good.begin() + last.blob_offset);
  repeated.insert(repeated.end(), good.begin() + before_last.blob_offset,
                  good.begin() + before_last.blob_end());
  repeated.insert(repeated.end(), good.begin() + last.blob_offset, good.end());
  for (const auto* blob : {&dropped, &cut, &repeated}) {
    SCOPED_TRACE(blob == &dropped ? "dropped" : blob == &cut ? "cut" : "repeated");
    MemoryBlobSource source(*blob);
    auto opened = LayerIndex::Open(source, TestKey(), pinned());
    ASSERT_FALSE(opened.ok());  // the footer no longer sits where the TOC says
    EXPECT_EQ(opened.status().code(), StatusCode::kCorruption);
    std::vector<uint8_t> partial;
    auto s = Stream(*blob, TestKey(), pinned(), DecryptOutput::kTar, 2, &partial);
    ASSERT_FALSE(s.ok());
    EXPECT_THAT(s.status().code(), ::testing::AnyOf(StatusCode::kAuthFailed,
                                                    StatusCode::kCorruption));
    ExpectStrictPrefix(partial);
  }
  // The repeated record is authenticated at a different index: named as such.
  auto s = Stream(repeated, TestKey(), pinned());
  EXPECT_EQ(s.status().code(), StatusCode::kAuthFailed);
  EXPECT_THAT(s.status().message(), HasSubstr("chunk " + std::to_string(last.index)));
}

TEST_F(LayerTamper, BlobTruncatedOrExtendedByOneByte) {
  const std::vector<uint8_t>& good = written().blob;
  std::vector<uint8_t> shorter(good.begin(), good.end() - 1);
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  std::vector<uint8_t> longer_front = good;  // a byte before the footer
  longer_front.insert(longer_front.end() - kFooterSize, 0);
  for (const auto* blob : {&shorter, &longer, &longer_front}) {
    MemoryBlobSource source(*blob);
    auto opened = LayerIndex::Open(source, TestKey(), pinned());
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.status().code(), StatusCode::kCorruption) << opened.status().ToString();
    EXPECT_THAT(opened.status().message(), HasSubstr("footer"));
    EXPECT_FALSE(Eager(*blob, TestKey(), pinned()).ok());
    std::vector<uint8_t> partial;
    auto s = Stream(*blob, TestKey(), pinned(), DecryptOutput::kTar, 2, &partial);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), StatusCode::kCorruption) << s.status().ToString();
  }
  // Only the footer and nothing else; only the header; nothing.
  for (size_t n : {size_t{0}, kBlobHeaderSize, kBlobHeaderSize + 5}) {
    std::vector<uint8_t> stub(good.begin(), good.begin() + n);
    EXPECT_FALSE(Stream(stub, TestKey(), pinned()).ok());
    EXPECT_EQ(Eager(stub, TestKey(), pinned()).status().code(), StatusCode::kCorruption);
  }
}

TEST_F(LayerTamper, WrongKey) {
  LayerKey wrong = TestKey(8);
  MemoryBlobSource source(written().blob);
  auto opened = LayerIndex::Open(source, wrong, pinned());
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), StatusCode::kAuthFailed);
  EXPECT_THAT(opened.status().message(), HasSubstr("wrong layer key"));
  auto index = OpenIndex(written().blob);
  EXPECT_THAT(ChunkOpener::Create(wrong, index->header()).status().message(),
              HasSubstr("wrong layer key"));
  ExpectDecodersFail(written().blob, StatusCode::kAuthFailed, "wrong layer key",
                     StatusCode::kAuthFailed, "wrong layer key", wrong);
  LayerKey short_key(std::vector<uint8_t>(16, 1));
  EXPECT_EQ(LayerIndex::Open(source, short_key, pinned()).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(LayerTamper, WrongPinnedTocDigest) {
  crypto::Sha256Digest wrong = pinned();
  wrong[31] ^= 1;
  MemoryBlobSource source(written().blob);
  auto opened = LayerIndex::Open(source, TestKey(), wrong);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), StatusCode::kAuthFailed);
  EXPECT_EQ(opened.status().message(), "TOC digest mismatch: pinned " + crypto::OciDigest(wrong) +
                                           ", blob has " + crypto::OciDigest(pinned()));
  EXPECT_FALSE(Eager(written().blob, TestKey(), wrong).ok());
  auto s = Stream(written().blob, TestKey(), wrong);
  EXPECT_THAT(s.status().message(), HasSubstr("TOC digest mismatch"));
}

// ---- Salt header (FORMAT.md §5.1) ---------------------------------------------------------------

TEST(LayerSaltHeader, IsOnePaxGlobalCommentRecordNamingTheSalt) {
  Salt salt{};
  for (size_t i = 0; i < salt.size(); ++i) salt[i] = static_cast<uint8_t>(0xa0 + i);
  std::vector<uint8_t> h = LayerSaltTarHeader(salt);
  ASSERT_EQ(h.size(), kLayerSaltHeaderSize);
  EXPECT_EQ(h[156], 'g');
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(h.data()), 17), "pax_global_header");
  const std::string record =
      tar::PaxRecord("comment", "lazycrypt-layer-salt:" + crypto::HexEncode(salt));
  EXPECT_EQ(record.substr(0, 11), "97 comment=");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(h.data()) + 512, record.size()), record);
  EXPECT_TRUE(std::all_of(h.begin() + 512 + record.size(), h.end(), [](uint8_t b) { return b == 0; }));
}

// Two conversions of one layer never share a diff_id, and neither has the source's: chain IDs
// of encrypted layers are their own (issue 15, 1(a); the imgcrypt CVE-2022-24778 class).
TEST(LayerSaltHeader, EveryWriteHasItsOwnDiffId) {
  const std::vector<uint8_t>& tar = SourceTar(Source::kGnuTarPax);
  Written a = WriteBlob(tar, TestKey());
  Written b = WriteBlob(tar, TestKey());
  const crypto::Sha256Digest plain = crypto::Sha256::Of(tar);
  EXPECT_EQ(a.result.source_diff_id, plain);
  EXPECT_EQ(b.result.source_diff_id, plain);
  EXPECT_NE(a.result.diff_id, plain);
  EXPECT_NE(b.result.diff_id, plain);
  EXPECT_NE(a.result.diff_id, b.result.diff_id);
  // Each blob's eager output is its own salt header + the source, hashing to its diff_id.
  for (const Written* w : {&a, &b}) {
    auto eager = Eager(w->blob, TestKey(), w->result.toc_digest);
    ASSERT_TRUE(eager.ok()) << eager.status().ToString();
    EXPECT_EQ(crypto::Sha256::Of(*eager), w->result.diff_id);
    EXPECT_TRUE(*eager == BlobTar(*w, tar));
  }
}

// The decrypted tar (salt header first) extracts to exactly the source's files, with GNU tar
// (silently) and with our own reader (which lists no entry for the header).
TEST(LayerSaltHeader, DecryptedTarExtractsToTheSourceFiles) {
  const std::vector<uint8_t>& tar = SourceTar(Source::kGnuTarPax);
  Written w = WriteBlob(tar, TestKey());
  auto eager = Eager(w.blob, TestKey(), w.result.toc_digest);
  ASSERT_TRUE(eager.ok()) << eager.status().ToString();

  // Our reader: the same entries and data; offsets moved by the header.
  std::vector<SourceEntry> from_source = ParseSource(tar);
  std::vector<SourceEntry> from_decrypted = ParseSource(*eager);
  ASSERT_EQ(from_decrypted.size(), from_source.size());
  for (size_t i = 0; i < from_source.size(); ++i) {
    tar::Entry want = from_source[i].entry;
    want.data_offset += kLayerSaltHeaderSize;
    // The first entry's header sequence now starts at the salt header (offset 0).
    want.header_offset = i == 0 ? 0 : want.header_offset + kLayerSaltHeaderSize;
    EXPECT_EQ(from_decrypted[i].entry, want) << "entry " << i;
    EXPECT_TRUE(from_decrypted[i].data == from_source[i].data) << "entry " << i;
  }

  // GNU tar: no warning on stderr, and the same tree as the source extracts to.
  testing::TempDir dir("lazycrypt-format-salt");
  ASSERT_TRUE(WriteFileAtomically(dir / "source.tar", tar).ok());
  ASSERT_TRUE(WriteFileAtomically(dir / "decrypted.tar", *eager).ok());
  for (const char* name : {"source", "decrypted"}) {
    std::filesystem::create_directories(dir / name);
    const std::string err = (dir / (std::string(name) + ".err")).string();
    // (The source tree has a file dated 2030: GNU tar's timestamp warning is not ours.)
    auto x = testing::RunCommand("tar --warning=no-timestamp --xattrs --xattrs-include='*' -xpf " +
                                 testing::ShellQuote((dir / (std::string(name) + ".tar")).string()) +
                                 " -C " + testing::ShellQuote((dir / name).string()) + " 2>" +
                                 testing::ShellQuote(err));
    ASSERT_EQ(x.exit_code, 0) << name << ": " << x.output << testing::ReadFileString(err);
    EXPECT_EQ(testing::ReadFileString(err), "") << name;
  }
  const std::string listing =
      "cd %s && find . -printf '%%p %%y %%m %%U %%G %%s %%T@ %%l\\n' | sort && "
      "find . -type f -print0 | sort -z | xargs -0 sha256sum";
  char a[1024], b[1024];
  std::snprintf(a, sizeof(a), listing.c_str(), testing::ShellQuote((dir / "source").string()).c_str());
  std::snprintf(b, sizeof(b), listing.c_str(),
                testing::ShellQuote((dir / "decrypted").string()).c_str());
  auto la = testing::RunCommand(a);
  auto lb = testing::RunCommand(b);
  ASSERT_EQ(la.exit_code, 0) << la.output;
  EXPECT_GT(la.output.size(), 100u);
  EXPECT_EQ(la.output, lb.output);
}

// ---- Writer ------------------------------------------------------------------------------------

TEST(LayerWriter, ParallelWritersProduceTheSameLayer) {
  const std::vector<uint8_t>& tar = SourceTar(Source::kGnuTarPax);
  Written one = WriteBlob(tar, TestKey(), SmallChunks(1));
  Written three = WriteBlob(tar, TestKey(), SmallChunks(3));
  EXPECT_NE(one.blob, three.blob);  // different salts
  EXPECT_EQ(one.result.source_diff_id, three.result.source_diff_id);
  EXPECT_NE(one.result.diff_id, three.result.diff_id);  // different salt headers
  MemoryBlobSource a(one.blob), b(three.blob);
  auto ia = LayerIndex::Open(a, TestKey(), one.result.toc_digest);
  auto ib = LayerIndex::Open(b, TestKey(), three.result.toc_digest);
  ASSERT_TRUE(ia.ok() && ib.ok());
  // The same chunking and the same records' sizes, except the first chunk's compressed size:
  // it holds the salt header, whose 64 hex digits differ (and record digests differ with salts).
  ASSERT_EQ((*ia)->chunks().size(), (*ib)->chunks().size());
  for (size_t i = 0; i < (*ia)->chunks().size(); ++i) {
    const ChunkInfo& x = (*ia)->chunks()[i];
    const ChunkInfo& y = (*ib)->chunks()[i];
    EXPECT_EQ(x.raw_size, y.raw_size) << i;
    EXPECT_EQ(x.tar_offset, y.tar_offset) << i;
    EXPECT_EQ(x.stored, y.stored) << i;
    if (i > 0) EXPECT_EQ(x.payload_size, y.payload_size) << i;
  }
  ASSERT_EQ((*ia)->entries().size(), (*ib)->entries().size());
  for (size_t i = 0; i < (*ia)->entries().size(); ++i) {
    EXPECT_EQ((*ia)->entries()[i].Materialize(), (*ib)->entries()[i].Materialize()) << i;
  }
  auto da = Eager(one.blob, TestKey(), one.result.toc_digest, DecryptOutput::kTar, 1);
  auto db = Eager(three.blob, TestKey(), three.result.toc_digest, DecryptOutput::kTar, 3);
  ASSERT_TRUE(da.ok() && db.ok());
  EXPECT_TRUE(*da == BlobTar(one, tar));
  EXPECT_TRUE(*db == BlobTar(three, tar));
}

std::vector<uint8_t> TarOf(const std::vector<std::pair<tar::Entry, std::string>>& entries,
                           const tar::WriteOptions& options = {}) {
  MemoryOutputStream out;
  tar::TarWriter w(out);
  for (auto [e, data] : entries) {
    e.size = data.size();
    EXPECT_TRUE(w.AppendEntry(e, AsBytes(data), options).ok());
  }
  EXPECT_TRUE(w.Finish().ok());
  return out.Take();
}

Status WriteStatus(const std::vector<uint8_t>& layer, const WriterOptions& o = SmallChunks()) {
  MemoryInputStream in(layer);
  MemoryOutputStream out;
  return WriteLayer(in, TestKey(), out, o).status();
}

// ---- Blobs forged by a key holder --------------------------------------------------------------
// A holder of the layer key can seal anything. These checks are what keeps such a blob from being
// read inconsistently (different bytes on the lazy and the eager path, or a truncated layer).

class Forge {
 public:
  Forge() {
    for (size_t i = 0; i < kSaltSize; ++i) header_.salt[i] = static_cast<uint8_t>(0x90 + i);
    keys_ = std::move(DeriveKeys(key_, header_.salt)).value();
    header_.commitment = keys_.commitment;
    sealer_ = std::move(ChunkSealer::FromKeys(keys_, header_.salt)).value();
    BlobHeaderBytes hb = EncodeBlobHeader(header_);
    blob_.assign(hb.begin(), hb.end());
    toc_.set_version(kTocVersion);
    toc_.set_target_chunk_size(kChunk);
  }

  const LayerKey& key() const { return key_; }

  // Seals raw as the next record with the given last flag; the TOC lists `listed_raw_size`
  // (default: the true size).
  void AddChunk(ByteSpan raw, bool last, std::optional<uint32_t> listed_raw_size = std::nullopt) {
    std::vector<uint8_t> record;
    compress::ZstdCompressor compressor(3);
    ASSERT_TRUE(sealer_->Seal(next_index_++, last, raw, compressor, record).ok());
    auto h = ParseRecordHeader(ByteSpan(record).first(kRecordHeaderSize));
    v1::Chunk* c = toc_.add_chunks();
    c->set_payload_size(h->payload_size);
    c->set_raw_size(listed_raw_size.value_or(h->raw_size));
    c->set_stored(h->stored);
    const crypto::Sha256Digest pin = crypto::Sha256::Of(record);
    c->set_record_sha256(pin.data(), pin.size());
    blob_.insert(blob_.end(), record.begin(), record.end());
  }
  // Lists a regular file as the writer would (the decoders match the TOC against the tar).
  void AddEntry(const tar::Entry& e) {
    v1::Entry* p = toc_.add_entries();
    auto name = NormalizeEntryName(e.name);
    p->set_name(*name);
    p->set_type(v1::ENTRY_TYPE_REGULAR);
    p->set_mode(e.mode);
    p->set_uid(e.uid);
    p->set_gid(e.gid);
    p->set_uname(e.uname);
    p->set_gname(e.gname);
    p->set_mtime_sec(e.mtime_sec);
    p->set_mtime_nsec(e.mtime_nsec);
    p->set_size(e.size);
    p->set_data_offset(e.data_offset);
  }
  void AddJunk(size_t n) { blob_.insert(blob_.end(), n, 0x5a); }

  // Seals the TOC (tar_sha256 = SHA-256 of `tar`, or `listed_diff_id`) and appends the footer.
  std::vector<uint8_t> Finish(ByteSpan tar, std::optional<crypto::Sha256Digest> listed_diff_id =
                                                std::nullopt) {
    uint64_t tar_size = 0;
    for (const auto& c : toc_.chunks()) tar_size += c.raw_size();
    toc_.set_tar_size(tar_size);
    crypto::Sha256Digest diff_id = listed_diff_id.value_or(crypto::Sha256::Of(tar));
    toc_.set_tar_sha256(diff_id.data(), diff_id.size());
    std::string serialized = toc_.SerializeAsString();
    auto plaintext = EncodeTocPlaintext(AsBytes(serialized), 3);
    std::vector<uint8_t> sealed(plaintext->size() + kTagSize);
    auto gcm = crypto::AesGcm::Create(keys_.toc_key.span());
    EXPECT_TRUE(gcm->Seal(TocNonce(), MakeTocAad(EncodeBlobHeader(header_), sealed.size()),
                          *plaintext, MutableByteSpan(sealed).first(plaintext->size()),
                          MutableByteSpan(sealed).subspan(plaintext->size()))
                    .ok());
    toc_digest_ = crypto::Sha256::Of(sealed);
    uint64_t toc_offset = blob_.size();
    blob_.insert(blob_.end(), sealed.begin(), sealed.end());
    FooterBytes footer = EncodeFooter(header_, toc_offset, sealed.size());
    blob_.insert(blob_.end(), footer.begin(), footer.end());
    return blob_;
  }
  const crypto::Sha256Digest& toc_digest() const { return toc_digest_; }
  void SetTocVersionForTest(uint32_t version) { toc_.set_version(version); }

 private:
  LayerKey key_ = TestKey(3);
  DerivedKeys keys_;
  BlobHeader header_;
  std::unique_ptr<ChunkSealer> sealer_;
  std::vector<uint8_t> blob_;
  v1::Toc toc_;
  uint64_t next_index_ = 0;
  crypto::Sha256Digest toc_digest_{};
};

class KeyHolderForgery : public ::testing::Test {
 protected:
  void SetUp() override {
    tar_ = TarOf({{TarEntry("file", tar::EntryType::kRegular),
                   std::string(AsStringView(Pattern(100000, 11, true)))}});
    auto entries = ParseSource(tar_);
    ASSERT_EQ(entries.size(), 1u);
    file_ = entries[0].entry;
    ASSERT_GT(tar_.size(), kChunk);
  }
  ByteSpan First() const { return ByteSpan(tar_).first(kChunk); }
  ByteSpan Rest() const { return ByteSpan(tar_).subspan(kChunk); }

  // Reads the file through the lazy path.
  static Status LazyRead(const std::vector<uint8_t>& blob, const Forge& forge) {
    MemoryBlobSource source(blob);
    auto reader = LayerReader::Open(source, forge.key(), forge.toc_digest());
    if (!reader.ok()) return reader.status();
    std::vector<uint8_t> out((*reader)->index().Find("file")->size(), 0xAA);
    auto n = (*reader)->ReadFile(*(*reader)->index().Find("file"), 0, out);
    if (n.ok()) return Status::Ok();
    EXPECT_THAT(out, Each(0));
    return n.status();
  }

  std::vector<uint8_t> tar_;
  tar::Entry file_;
};

TEST_F(KeyHolderForgery, HonestBlobFromTheBuilderDecodes) {
  Forge f;
  f.AddChunk(First(), false);
  f.AddChunk(Rest(), true);
  f.AddEntry(file_);
  auto blob = f.Finish(tar_);
  EXPECT_TRUE(LazyRead(blob, f).ok());
  auto e = Eager(blob, f.key(), f.toc_digest());
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_TRUE(*e == tar_);
  auto s = Stream(blob, f.key(), f.toc_digest());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_TRUE(*s == tar_);
}

TEST_F(KeyHolderForgery, TocChunkTableDisagreesWithTheRecords) {
  // Same offsets (payload sizes kept), but the TOC moves 536 bytes from chunk 0 to chunk 1.
  Forge f;
  f.AddChunk(First(), false, kChunk - 536);
  f.AddChunk(Rest(), true, static_cast<uint32_t>(Rest().size() + 536));
  f.AddEntry(file_);
  auto blob = f.Finish(tar_);
  EXPECT_THAT(LazyRead(blob, f).message(), HasSubstr("does not match the chunk table"));
  EXPECT_THAT(Eager(blob, f.key(), f.toc_digest()).status().message(),
              HasSubstr("does not match the chunk table"));
  EXPECT_THAT(Stream(blob, f.key(), f.toc_digest()).status().message(),
              HasSubstr("chunk 0: record header does not match the TOC's chunk table"));
}

TEST_F(KeyHolderForgery, TocDiffIdIsNotTheTarsSha256) {
  Forge f;
  f.AddChunk(First(), false);
  f.AddChunk(Rest(), true);
  f.AddEntry(file_);
  crypto::Sha256Digest wrong{};
  wrong[0] = 1;
  auto blob = f.Finish(tar_, wrong);
  for (auto r : {Eager(blob, f.key(), f.toc_digest()), Stream(blob, f.key(), f.toc_digest())}) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kAuthFailed);
    EXPECT_THAT(r.status().message(), HasSubstr("diff_id mismatch: the TOC says sha256:0100"));
  }
}

TEST_F(KeyHolderForgery, FinalRecordWithoutTheLastFlag) {
  Forge f;
  f.AddChunk(First(), false);
  f.AddChunk(Rest(), false);
  f.AddEntry(file_);
  auto blob = f.Finish(tar_);
  EXPECT_THAT(LazyRead(blob, f).message(), HasSubstr("does not match the chunk table"));
  EXPECT_FALSE(Eager(blob, f.key(), f.toc_digest()).ok());
  // The stream decoder runs on into the TOC, which does not parse as a record.
  EXPECT_FALSE(Stream(blob, f.key(), f.toc_digest()).ok());
}

TEST_F(KeyHolderForgery, LastFlagOnAnEarlierRecord) {
  Forge f;
  f.AddChunk(First(), true);
  f.AddChunk(Rest(), true);
  f.AddEntry(file_);
  auto blob = f.Finish(tar_);
  EXPECT_THAT(LazyRead(blob, f).message(), HasSubstr("does not match the chunk table"));
  EXPECT_FALSE(Eager(blob, f.key(), f.toc_digest()).ok());
  // The stream decoder stops after record 0: what follows is not where the footer puts the TOC.
  EXPECT_THAT(Stream(blob, f.key(), f.toc_digest()).status().message(),
              HasSubstr("footer puts the TOC at blob offset"));
}

TEST_F(KeyHolderForgery, BytesBetweenTheRecordsAndTheToc) {
  Forge f;
  f.AddChunk(First(), false);
  f.AddChunk(Rest(), true);
  f.AddEntry(file_);
  f.AddJunk(100);
  auto blob = f.Finish(tar_);
  MemoryBlobSource source(blob);
  auto index = LayerIndex::Open(source, f.key(), f.toc_digest());
  ASSERT_FALSE(index.ok());
  EXPECT_THAT(index.status().message(), HasSubstr("chunk table ends at blob offset"));
  EXPECT_THAT(Stream(blob, f.key(), f.toc_digest()).status().message(),
              HasSubstr("footer puts the TOC at blob offset"));
}

TEST(LayerWriter, RejectsUnsafeNamesByName) {
  for (const char* name : {"../evil", "a/../../evil", "./x/.."}) {
    Status s = WriteStatus(TarOf({{TarEntry(name, tar::EntryType::kRegular), "x"}}));
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << name;
    EXPECT_THAT(s.message(), AllOf(HasSubstr(std::string("tar entry '") + name + "'"),
                                   HasSubstr("'..'")));
  }
  tar::Entry link = TarEntry("l", tar::EntryType::kHardlink);
  link.link_name = "../../etc/shadow";
  EXPECT_THAT(WriteStatus(TarOf({{link, ""}})).message(),
              AllOf(HasSubstr("tar entry 'l'"), HasSubstr("hardlink target")));
  link.link_name = "nowhere";
  EXPECT_THAT(WriteStatus(TarOf({{link, ""}})).message(), HasSubstr("not an earlier entry"));
  tar::Entry root_file = TarEntry("./", tar::EntryType::kRegular);
  EXPECT_THAT(WriteStatus(TarOf({{root_file, "x"}})).message(), HasSubstr("root '.'"));
}

TEST(LayerWriter, PassesTarParserErrorsThrough) {
  tar::WriteOptions sparse;
  sparse.typeflag = 'S';
  Status s = WriteStatus(TarOf({{TarEntry("sparse", tar::EntryType::kRegular), "data"}}, sparse));
  EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.ToString();
  EXPECT_THAT(s.message(), HasSubstr("sparse"));
  std::vector<uint8_t> garbage = Pattern(5000, 3, false);
  EXPECT_FALSE(WriteStatus(garbage).ok());
  EXPECT_FALSE(WriteStatus({}).ok());
  std::vector<uint8_t> truncated = TarOf({{TarEntry("f", tar::EntryType::kRegular),
                                           std::string(3000, 'x')}});
  truncated.resize(1500);
  EXPECT_EQ(WriteStatus(truncated).code(), StatusCode::kCorruption);
}

// A compressed layer is decompressed on a read-ahead thread: its errors must still come through,
// after the bytes before them, and a layer several read-ahead buffers long must round-trip.
class FailAfterInputStream final : public InputStream {
 public:
  FailAfterInputStream(ByteSpan data, size_t fail_at) : data_(data), fail_at_(fail_at) {}
  Result<size_t> Read(MutableByteSpan out) override {
    if (pos_ >= fail_at_) return Status::IoError("disk on fire at byte " + std::to_string(pos_));
    size_t n = std::min({out.size(), data_.size() - pos_, fail_at_ - pos_});
    std::memcpy(out.data(), data_.data() + pos_, n);
    pos_ += n;
    return n;
  }

 private:
  ByteSpan data_;
  size_t fail_at_;
  size_t pos_ = 0;
};

TEST(LayerWriter, CompressedSourceErrorsComeThroughTheReadAhead) {
  // ~6 MiB of tar: more than the read-ahead's four 1 MiB buffers.
  std::vector<std::pair<tar::Entry, std::string>> files;
  for (int i = 0; i < 6; ++i) {
    std::vector<uint8_t> data = Pattern(1 << 20, 100 + i, i % 2 == 0);
    tar::Entry e = TarEntry("f" + std::to_string(i), tar::EntryType::kRegular);
    files.push_back({e, std::string(data.begin(), data.end())});
  }
  std::vector<uint8_t> tar = TarOf(files);
  for (compress::Compression c : {compress::Compression::kGzip, compress::Compression::kZstd}) {
    SCOPED_TRACE(std::string(compress::CompressionName(c)));
    std::vector<uint8_t> layer = CompressLayer(tar, c);
    Written whole = WriteBlob(layer, TestKey());
    auto eager = Eager(whole.blob, TestKey(), whole.result.toc_digest);
    ASSERT_TRUE(eager.ok()) << eager.status().ToString();
    EXPECT_TRUE(*eager == BlobTar(whole, tar));
    EXPECT_EQ(whole.result.source_diff_id, crypto::Sha256::Of(tar));

    std::vector<uint8_t> truncated(layer.begin(), layer.begin() + layer.size() * 2 / 3);
    Status s = WriteStatus(truncated);
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr(std::string(compress::CompressionName(c))));

    for (size_t fail_at : {size_t{100}, layer.size() / 2, layer.size() - 1}) {
      FailAfterInputStream in(layer, fail_at);
      MemoryOutputStream out;
      auto r = WriteLayer(in, TestKey(), out, SmallChunks());
      ASSERT_FALSE(r.ok()) << "fail_at " << fail_at;
      EXPECT_EQ(r.status().code(), StatusCode::kIoError) << r.status().ToString();
      EXPECT_THAT(r.status().message(), HasSubstr("disk on fire at byte " + std::to_string(fail_at)));
    }
  }
}

TEST(LayerWriter, RejectsBadOptionsAndKeys) {
  auto tar = TarOf({{TarEntry("f", tar::EntryType::kRegular), "x"}});
  WriterOptions o = SmallChunks();
  o.chunk_size_bytes = kMinChunkSizeBytes - 1;
  EXPECT_EQ(WriteStatus(tar, o).code(), StatusCode::kInvalidArgument);
  o.chunk_size_bytes = kMaxChunkSizeBytes + 1;
  EXPECT_EQ(WriteStatus(tar, o).code(), StatusCode::kInvalidArgument);
  o = SmallChunks();
  o.threads = -1;
  EXPECT_EQ(WriteStatus(tar, o).code(), StatusCode::kInvalidArgument);
  MemoryInputStream in(tar);
  MemoryOutputStream out;
  EXPECT_EQ(WriteLayer(in, LayerKey(std::vector<uint8_t>(31)), out, SmallChunks()).status().code(),
            StatusCode::kInvalidArgument);
}

// Fails every Write after `budget` bytes.
class FailingOutputStream final : public OutputStream {
 public:
  explicit FailingOutputStream(uint64_t budget) : budget_(budget) {}
  Status Write(ByteSpan data) override {
    if (data.size() > budget_) return Status::IoError("disk full (test)");
    budget_ -= data.size();
    return Status::Ok();
  }
  Status Close() override { return Status::Ok(); }

 private:
  uint64_t budget_;
};

TEST(LayerWriter, OutputErrorsStopThePipeline) {
  const std::vector<uint8_t>& tar = SourceTar(Source::kTarWriterPax);
  const uint64_t size = WriteBlob(tar, TestKey()).blob.size();
  ASSERT_GT(size, 200000u);
  // In the header, in the records (the emitter's write), in the TOC, in the footer.
  for (uint64_t budget : {uint64_t{0}, uint64_t{100}, size / 3, size - 300, size - 50}) {
    for (int threads : {1, 3}) {
      MemoryInputStream in(tar);
      FailingOutputStream out(budget);
      auto r = WriteLayer(in, TestKey(), out, SmallChunks(threads));
      ASSERT_FALSE(r.ok()) << budget;
      EXPECT_EQ(r.status().code(), StatusCode::kIoError) << r.status().ToString();
      EXPECT_THAT(r.status().message(), HasSubstr("disk full"));
    }
  }
}

TEST(LayerWriter, DefaultChunkSizeIsOneMiB) {
  EXPECT_EQ(WriterOptions{}.chunk_size_bytes, size_t{1} << 20);
  const std::vector<uint8_t>& tar = SourceTar(Source::kGnuTarGnu);
  WriterOptions o;
  o.threads = 2;
  Written w = WriteBlob(tar, TestKey(), o);
  MemoryBlobSource source(w.blob);
  auto index = LayerIndex::Open(source, TestKey(), w.result.toc_digest);
  ASSERT_TRUE(index.ok());
  EXPECT_EQ((*index)->target_chunk_size(), 1u << 20);
  CheckChunkingPolicy(**index);
  EXPECT_GE((*index)->chunks().size(), 5u);  // ~4.5 MiB with a 3 MiB file on its own chunks
}

// A tar stream generated on the fly: one regular file of `size` bytes (half random, half
// repetitive per 64 KiB block), never held in memory.
class GeneratedTarStream final : public InputStream {
 public:
  explicit GeneratedTarStream(uint64_t size) : size_(size) {
    MemoryOutputStream header;
    tar::TarWriter w(header);
    tar::Entry e = TarEntry("big.bin", tar::EntryType::kRegular);
    e.size = size;
    auto off = w.AppendHeader(e);
    EXPECT_TRUE(off.ok());
    prefix_ = header.Take();
    MemoryOutputStream end;
    tar::TarWriter w2(end);
    EXPECT_TRUE(w2.Finish(0).ok());
    suffix_.assign((512 - size % 512) % 512, 0);
    suffix_.insert(suffix_.end(), end.bytes().begin(), end.bytes().end());
  }

  uint64_t total_size() const { return prefix_.size() + size_ + suffix_.size(); }

  Result<size_t> Read(MutableByteSpan out) override {
    size_t done = 0;
    while (done < out.size()) {
      if (pos_ < prefix_.size()) {
        size_t n = std::min(out.size() - done, prefix_.size() - pos_);
        std::memcpy(out.data() + done, prefix_.data() + pos_, n);
        pos_ += n;
        done += n;
      } else if (pos_ < prefix_.size() + size_) {
        uint64_t data_pos = pos_ - prefix_.size();
        size_t n = static_cast<size_t>(std::min<uint64_t>(out.size() - done, size_ - data_pos));
        for (size_t i = 0; i < n; ++i) {
          uint64_t p = data_pos + i;
          if ((p >> 15) & 1) {
            out[done + i] = static_cast<uint8_t>(p);
          } else {
            state_ ^= state_ << 13;
            state_ ^= state_ >> 7;
            state_ ^= state_ << 17;
            out[done + i] = static_cast<uint8_t>(state_);
          }
        }
        pos_ += n;
        done += n;
      } else {
        uint64_t s = pos_ - prefix_.size() - size_;
        if (s >= suffix_.size()) break;
        size_t n = std::min(out.size() - done, static_cast<size_t>(suffix_.size() - s));
        std::memcpy(out.data() + done, suffix_.data() + s, n);
        pos_ += n;
        done += n;
      }
    }
    return done;
  }

 private:
  uint64_t size_;
  uint64_t pos_ = 0;
  uint64_t state_ = 88172645463325252ull;
  std::vector<uint8_t> prefix_, suffix_;
};

// Counts and hashes without keeping anything.
class DiscardingOutputStream final : public OutputStream {
 public:
  Status Write(ByteSpan data) override {
    size_ += data.size();
    return Status::Ok();
  }
  Status Close() override { return Status::Ok(); }
  uint64_t size() const { return size_; }

 private:
  uint64_t size_ = 0;
};

uint64_t PeakRssKiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6));
  }
  return 0;
}

TEST(LayerWriter, MemoryStaysBoundedForALargeLayer) {
  const uint64_t kSize = uint64_t{512} << 20;
  GeneratedTarStream in(kSize);
  DiscardingOutputStream out;
  WriterOptions o;  // default 1 MiB chunks
  o.threads = 2;
  uint64_t before = PeakRssKiB();
  auto r = WriteLayer(in, TestKey(), out, o);
  uint64_t after = PeakRssKiB();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source_tar_size, in.total_size());
  EXPECT_EQ(r->tar_size, in.total_size() + kLayerSaltHeaderSize);
  EXPECT_EQ(r->chunk_count, 514u);  // the header chunk, 512 data chunks, the end marker
  EXPECT_EQ(out.size(), r->blob_size);
  EXPECT_LT(r->blob_size, kSize * 3 / 4);  // the repetitive halves compressed
  EXPECT_LT(after - before, 200u * 1024) << "peak RSS grew by " << (after - before) / 1024
                                         << " MiB";
}

// ---- Prefetch marks (WriterOptions::prefetch_paths → Toc::prefetch) ----------------------------

TEST(LayerWriter, MarksTheLastRegularEntryOfEachPrefetchPath) {
  MemoryOutputStream out;
  tar::TarWriter w(out);
  auto add = [&](const std::string& name, tar::EntryType type, std::string body = "",
                 std::string link = "") {
    tar::Entry e = TarEntry(name, type);
    e.size = body.size();
    e.link_name = link;
    ASSERT_TRUE(w.AppendEntry(e, AsBytes(body)).ok()) << name;
  };
  add("./", tar::EntryType::kDirectory);                        // 0
  add("./bin/", tar::EntryType::kDirectory);                    // 1
  add("./bin/sh", tar::EntryType::kRegular, "shell v1");        // 2
  add("./etc/conf", tar::EntryType::kRegular, "conf");          // 3
  add("./bin/sh", tar::EntryType::kRegular, "shell v2!");       // 4: replaces 2
  add("./lib", tar::EntryType::kDirectory);                     // 5: listed, not a file
  add("./link", tar::EntryType::kSymlink, "", "etc/conf");      // 6: listed, a symlink
  add("./hard", tar::EntryType::kHardlink, "", "etc/conf");     // 7: listed, a hardlink
  add("./usr/big", tar::EntryType::kRegular, std::string(3 * kChunk, 'b'));  // 8
  add("./unlisted", tar::EntryType::kRegular, "x");             // 9
  ASSERT_TRUE(w.Finish().ok());
  const std::vector<uint8_t> tar_bytes = out.Take();

  WriterOptions o = SmallChunks();
  o.prefetch_paths = {"usr/big", "bin/sh", "lib", "link", "hard", "not/in/this/layer", "bin/sh"};
  Written d = WriteBlob(tar_bytes, TestKey(), o);
  ASSERT_FALSE(d.blob.empty());
  MemoryBlobSource source(d.blob);
  auto index = LayerIndex::Open(source, TestKey(), d.result.toc_digest);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  std::span<const uint32_t> marks = (*index)->prefetch_entries();
  ASSERT_EQ(std::vector<uint32_t>(marks.begin(), marks.end()), (std::vector<uint32_t>{4, 8}));
  EXPECT_EQ((*index)->entries()[4].name(), "bin/sh");
  EXPECT_EQ((*index)->entries()[4].size(), 9u);
  EXPECT_EQ((*index)->entries()[8].name(), "usr/big");

  // Marks change nothing in the data: the eager decryption is still the tar, byte for byte.
  auto eager = Eager(d.blob, TestKey(), d.result.toc_digest);
  ASSERT_TRUE(eager.ok()) << eager.status().ToString();
  EXPECT_EQ(*eager, BlobTar(d, tar_bytes));

  // Without marks: an empty list, same tar.
  Written plain = WriteBlob(tar_bytes, TestKey());
  MemoryBlobSource plain_source(plain.blob);
  auto plain_index = LayerIndex::Open(plain_source, TestKey(), plain.result.toc_digest);
  ASSERT_TRUE(plain_index.ok());
  EXPECT_TRUE((*plain_index)->prefetch_entries().empty());
  EXPECT_EQ(plain.result.source_diff_id, d.result.source_diff_id);
}

// Listed files' data gets chunks of its own (FORMAT.md §5 rule 4): fetching the chunks of the
// listed files fetches no byte of an unlisted file; the tar and diff_id stay the same.
// A lazy start reads scattered files: a file of 64 KiB or more gets chunks of its own (reading
// it fetches nothing else), smaller ones share chunks of at most 256 KiB (their headers ride
// along); own_chunk_from_bytes = 0 gives back the size-only policy (fewer, fuller chunks).
TEST(LayerWriter, FilesFrom64KiBGetChunksOfTheirOwnSmallerOnesShareUpTo256KiB) {
  MemoryOutputStream out;
  tar::TarWriter w(out);
  std::mt19937 rng(7);
  uint64_t own_files = 0;
  for (int i = 0; i < 120; ++i) {
    // 1 KiB .. 300 KiB, log-uniform, as a tree of sources and data files is.
    const size_t size = static_cast<size_t>(1024 * std::exp(std::uniform_real_distribution<>(0, std::log(300.0))(rng)));
    if (size >= kDefaultOwnChunkFromBytes) ++own_files;
    tar::Entry e = TarEntry("./d/f" + std::to_string(i), tar::EntryType::kRegular);
    std::string body(size, static_cast<char>('a' + i % 26));
    for (size_t k = 0; k < body.size(); k += 61) body[k] = static_cast<char>(rng());
    e.size = body.size();
    ASSERT_TRUE(w.AppendEntry(e, AsBytes(body)).ok());
  }
  ASSERT_TRUE(w.Finish().ok());
  const std::vector<uint8_t> tar_bytes = out.Take();
  ASSERT_GT(own_files, 10u);

  Written d = WriteBlob(tar_bytes, TestKey(), WriterOptions{});
  MemoryBlobSource source(d.blob);
  auto index = LayerIndex::Open(source, TestKey(), d.result.toc_digest);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  CheckChunkingPolicy(**index);
  EXPECT_GE((*index)->chunks().size(), own_files);

  WriterOptions size_only;
  size_only.own_chunk_from_bytes = 0;
  Written old = WriteBlob(tar_bytes, TestKey(), size_only);
  MemoryBlobSource old_source(old.blob);
  auto old_index = LayerIndex::Open(old_source, TestKey(), old.result.toc_digest);
  ASSERT_TRUE(old_index.ok());
  EXPECT_LT((*old_index)->chunks().size(), (*index)->chunks().size());
  EXPECT_EQ(old.result.source_diff_id, d.result.source_diff_id);
  auto eager = Eager(d.blob, TestKey(), d.result.toc_digest);
  ASSERT_TRUE(eager.ok()) << eager.status().ToString();
  EXPECT_EQ(*eager, BlobTar(d, tar_bytes));
}

TEST(LayerWriter, PrefetchListedFilesDoNotShareChunksWithUnlistedOnes) {
  MemoryOutputStream out;
  tar::TarWriter w(out);
  std::vector<std::string> listed;
  for (int i = 0; i < 40; ++i) {
    tar::Entry e = TarEntry("./f" + std::to_string(100 + i), tar::EntryType::kRegular);
    const std::string body(3000 + 97 * i, static_cast<char>('a' + i % 26));
    e.size = body.size();
    ASSERT_TRUE(w.AppendEntry(e, AsBytes(body)).ok());
    if (i % 7 == 3) listed.push_back("f" + std::to_string(100 + i));
  }
  ASSERT_TRUE(w.Finish().ok());
  const std::vector<uint8_t> tar_bytes = out.Take();

  WriterOptions o = SmallChunks();
  o.prefetch_paths = listed;
  Written d = WriteBlob(tar_bytes, TestKey(), o);
  ASSERT_FALSE(d.blob.empty());
  MemoryBlobSource source(d.blob);
  auto index = LayerIndex::Open(source, TestKey(), d.result.toc_digest);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  ASSERT_EQ((*index)->prefetch_entries().size(), listed.size());

  // Which chunks hold data of listed files, and which of unlisted ones: never the same chunk.
  const auto chunks = (*index)->chunks();
  std::vector<int> kind(chunks.size(), 0);  // 1 listed, 2 unlisted, 3 both
  for (EntryView view : (*index)->entries()) {
    const Entry e = view.Materialize();
    if (e.type != EntryType::kRegular || e.size == 0) continue;
    const bool is_listed = std::find(listed.begin(), listed.end(), e.name) != listed.end();
    for (size_t c = 0; c < chunks.size(); ++c) {
      if (chunks[c].tar_offset < e.data_offset + e.size && e.data_offset < chunks[c].tar_end()) {
        kind[c] |= is_listed ? 1 : 2;
      }
    }
  }
  for (size_t c = 0; c < chunks.size(); ++c) EXPECT_NE(kind[c], 3) << "chunk " << c;
  EXPECT_GT(std::count(kind.begin(), kind.end(), 1), 0);

  // Without marks the small files share chunks (fewer chunks); the tar and diff_id are the same.
  Written plain = WriteBlob(tar_bytes, TestKey());
  EXPECT_EQ(plain.result.source_diff_id, d.result.source_diff_id);
  MemoryBlobSource plain_source(plain.blob);
  auto plain_index = LayerIndex::Open(plain_source, TestKey(), plain.result.toc_digest);
  ASSERT_TRUE(plain_index.ok());
  EXPECT_LT((*plain_index)->chunks().size(), chunks.size());
  auto eager = Eager(d.blob, TestKey(), d.result.toc_digest);
  ASSERT_TRUE(eager.ok()) << eager.status().ToString();
  EXPECT_EQ(*eager, BlobTar(d, tar_bytes));
}

TEST(LayerWriter, RejectsPrefetchPathsNotInNormalizedForm) {
  MemoryOutputStream tar_out;
  tar::TarWriter w(tar_out);
  ASSERT_TRUE(w.AppendEntry(TarEntry("a", tar::EntryType::kRegular)).ok());
  ASSERT_TRUE(w.Finish().ok());
  for (std::string bad : {"/a", "./a", "a/", "a/../b", ""}) {
    WriterOptions o = SmallChunks();
    o.prefetch_paths = {bad};
    MemoryInputStream in(tar_out.bytes());
    MemoryOutputStream out;
    auto r = WriteLayer(in, TestKey(), out, o);
    ASSERT_FALSE(r.ok()) << "accepted '" << bad << "'";
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("prefetch path '" + bad + "'"));
  }
}

// ---- Writer: the incompressibility probe (WriterOptions::probe_incompressible) -----------------

// A file whose four probe samples (16 KiB at 0, 1/3, 2/3 and the end of a 256 KiB chunk) are
// random while everything between them is text: the probe's documented blind spot.
std::vector<uint8_t> RandomAtProbeSamples(size_t chunk) {
  std::vector<uint8_t> v = Pattern(chunk, 41, /*compressible=*/true);
  const size_t sample = 16 * 1024;
  const size_t stride = (chunk - sample) / 3;
  std::vector<uint8_t> noise = Pattern(sample, 43, /*compressible=*/false);
  for (size_t i = 0; i < 4; ++i) std::copy(noise.begin(), noise.end(), v.begin() + i * stride);
  return v;
}

struct ProbeLayer {
  std::vector<uint8_t> tar;
  Written written;
  std::shared_ptr<const LayerIndex> index;
  const ChunkInfo& ChunkOf(const char* name) const {
    return index->chunks()[index->ChunkForTarOffset(index->Find(name)->data_offset())];
  }
};

ProbeLayer WriteProbeLayer(bool probe, size_t chunk) {
  MemoryOutputStream out;
  tar::TarWriter w(out);
  std::vector<std::pair<std::string, std::vector<uint8_t>>> files = {
      // Alone in a chunk below the probe's minimum size (the next file does not fit beside it).
      {"small-noise", Pattern(120 * 1024, 13, false)},
      {"noise", Pattern(chunk, 11, false)},
      {"text", Pattern(chunk, 12, true)},
      {"samples-random", RandomAtProbeSamples(chunk)},
  };
  for (auto& [name, data] : files) {
    tar::Entry e = TarEntry(name, tar::EntryType::kRegular);
    e.size = data.size();
    EXPECT_TRUE(w.AppendEntry(e, data).ok());
  }
  EXPECT_TRUE(w.Finish().ok());
  ProbeLayer layer;
  layer.tar = out.Take();
  WriterOptions options;
  options.chunk_size_bytes = chunk;
  options.threads = 2;
  options.probe_incompressible = probe;
  layer.written = WriteBlob(layer.tar, TestKey(), options);
  MemoryBlobSource source(layer.written.blob);
  auto index = LayerIndex::Open(source, TestKey(), layer.written.result.toc_digest);
  EXPECT_TRUE(index.ok()) << index.status().ToString();
  if (index.ok()) layer.index = *index;
  return layer;
}

TEST(WriterProbe, StoresWhatItsSamplesCannotCompressAndCompressesTheRest) {
  constexpr size_t kProbeChunk = 256 * 1024;
  ProbeLayer on = WriteProbeLayer(true, kProbeChunk);
  ProbeLayer off = WriteProbeLayer(false, kProbeChunk);
  ASSERT_NE(on.index, nullptr);
  ASSERT_NE(off.index, nullptr);
  // Random data is stored either way; text is compressed either way.
  EXPECT_TRUE(on.ChunkOf("noise").stored);
  EXPECT_TRUE(off.ChunkOf("noise").stored);
  EXPECT_FALSE(on.ChunkOf("text").stored);
  EXPECT_FALSE(off.ChunkOf("text").stored);
  EXPECT_LT(on.ChunkOf("text").payload_size, kProbeChunk / 2);
  // The blind spot: with the probe the chunk is stored raw, without it zstd finds the text.
  EXPECT_TRUE(on.ChunkOf("samples-random").stored);
  EXPECT_FALSE(off.ChunkOf("samples-random").stored);
  EXPECT_LT(off.ChunkOf("samples-random").payload_size, kProbeChunk * 3 / 4);
  // Below the probe's minimum size the chunk goes through zstd and ShouldStore as before.
  EXPECT_LT(on.ChunkOf("small-noise").raw_size, 128u * 1024);
  EXPECT_TRUE(on.ChunkOf("small-noise").stored);
  EXPECT_GT(on.written.blob.size(), off.written.blob.size());
  // Both layers decrypt to the very same tar, with the same diff_id.
  EXPECT_EQ(on.written.result.source_diff_id, off.written.result.source_diff_id);
  for (const ProbeLayer* layer : {&on, &off}) {
    auto eager = Eager(layer->written.blob, TestKey(), layer->written.result.toc_digest);
    ASSERT_TRUE(eager.ok()) << eager.status().ToString();
    EXPECT_TRUE(*eager == BlobTar(layer->written, layer->tar));
  }
}

// ---- Records pinned by the TOC (FORMAT.md §4, §7) ------------------------------------------------
// A co-recipient (or the author) holds the layer key: it can re-seal a record with the right
// chunk key, nonce and AAD for its index, and GCM accepts it. The TOC's per-record SHA-256 (pinned
// through the TOC digest in the manifest) is what refuses it, on every path.

class PinnedRecords : public ::testing::Test {
 protected:
  static constexpr std::string_view kMarker = "the author wrote this text";
  static constexpr std::string_view kForged = "A CO-RECIPIENT FORGED THIS";

  void SetUp() override {
    std::vector<uint8_t> data = Pattern(100 * 1024, 77, /*compressible=*/false);  // stored chunks
    std::memcpy(data.data(), kMarker.data(), kMarker.size());
    tar::Entry e = TarEntry("secret", tar::EntryType::kRegular);
    e.size = data.size();
    MemoryOutputStream out;
    tar::TarWriter w(out);
    ASSERT_TRUE(w.AppendEntry(e, data).ok());
    ASSERT_TRUE(w.Finish().ok());
    written_ = WriteBlob(out.bytes(), TestKey());
    MemoryBlobSource source(written_.blob);
    auto index = LayerIndex::Open(source, TestKey(), written_.result.toc_digest);
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    index_ = *index;
    entry_ = index_->Find("secret");
    ASSERT_TRUE(entry_);
    chunk_ = index_->chunks()[index_->ChunksForRange(*entry_, 0, 1).first];
    ASSERT_TRUE(chunk_.stored);

    // The forgery: open the record with the layer key, change the text, seal it again as the same
    // chunk (same header, so same size, nonce and AAD).
    auto header = ParseBlobHeader(ByteSpan(written_.blob).first(kBlobHeaderSize));
    ASSERT_TRUE(header.ok());
    auto keys = DeriveKeys(TestKey(), header->salt);
    ASSERT_TRUE(keys.ok());
    auto opener = ChunkOpener::FromKeys(*keys, header->salt);
    auto sealer = ChunkSealer::FromKeys(*keys, header->salt);
    ASSERT_TRUE(opener.ok() && sealer.ok());
    ByteSpan record = ByteSpan(written_.blob).subspan(chunk_.blob_offset, chunk_.record_size());
    std::vector<uint8_t> payload(chunk_.payload_size);
    ASSERT_TRUE((*opener)->OpenPayload(chunk_.index, record, payload).ok());
    const uint64_t at = entry_->data_offset() - chunk_.tar_offset;
    ASSERT_EQ(std::string_view(reinterpret_cast<const char*>(payload.data()) + at, kMarker.size()),
              kMarker);
    std::memcpy(payload.data() + at, kForged.data(), kForged.size());
    std::vector<uint8_t> forged_record;
    ASSERT_TRUE((*sealer)->SealRaw(chunk_.index, chunk_.record_header(), payload, forged_record).ok());
    ASSERT_EQ(forged_record.size(), chunk_.record_size());
    forged_ = written_.blob;
    std::copy(forged_record.begin(), forged_record.end(), forged_.begin() + chunk_.blob_offset);

    // What makes this a forgery the pin alone catches: GCM accepts the record as chunk i.
    std::vector<uint8_t> raw(chunk_.raw_size);
    ASSERT_TRUE((*opener)->Open(chunk_.index, forged_record, raw).ok());
    ASSERT_EQ(std::string_view(reinterpret_cast<const char*>(raw.data()) + at, kForged.size()),
              kForged);
  }

  std::string WantMessage() const {
    return "chunk " + std::to_string(chunk_.index) +
           ": record does not match the digest pinned in the TOC";
  }

  Written written_;
  std::shared_ptr<const LayerIndex> index_;
  std::optional<EntryView> entry_;  // of index_; each reader looks up its own
  ChunkInfo chunk_;
  std::vector<uint8_t> forged_;
};

TEST_F(PinnedRecords, LazyReadRefusesAResealedRecord) {
  MemoryBlobSource source(forged_);
  auto reader = LayerReader::Open(source, TestKey(), written_.result.toc_digest);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();  // footer and TOC are untouched
  std::vector<uint8_t> out(kMarker.size(), 0xEE);
  auto n = (*reader)->ReadFile(*(*reader)->index().Find("secret"), 0, out);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), StatusCode::kAuthFailed);
  EXPECT_THAT(n.status().message(), HasSubstr(WantMessage()));
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](uint8_t b) { return b == 0; }));
  auto chunk = (*reader)->ReadChunk(chunk_.index);
  EXPECT_EQ(chunk.status().code(), StatusCode::kAuthFailed);
  // A record from a ciphertext cache goes through the same check.
  std::vector<uint8_t> raw(chunk_.raw_size, 0xEE);
  Status s = (*reader)->OpenRecord(
      chunk_.index, ByteSpan(forged_).subspan(chunk_.blob_offset, chunk_.record_size()), raw);
  EXPECT_THAT(s.message(), HasSubstr(WantMessage()));
  EXPECT_TRUE(std::all_of(raw.begin(), raw.end(), [](uint8_t b) { return b == 0; }));
  // The untouched blob reads the author's text.
  MemoryBlobSource good(written_.blob);
  auto good_reader = LayerReader::Open(good, TestKey(), written_.result.toc_digest);
  ASSERT_TRUE(good_reader.ok());
  ASSERT_TRUE((*good_reader)->ReadFile(*(*good_reader)->index().Find("secret"), 0, out).ok());
  EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(out.data()), out.size()), kMarker);
}

TEST_F(PinnedRecords, EagerDecryptRefusesAResealedRecord) {
  for (DecryptOutput mode : {DecryptOutput::kTar, DecryptOutput::kTarZstd}) {
    auto eager = Eager(forged_, TestKey(), written_.result.toc_digest, mode);
    ASSERT_FALSE(eager.ok());
    EXPECT_EQ(eager.status().code(), StatusCode::kAuthFailed);
    EXPECT_THAT(eager.status().message(), HasSubstr(WantMessage()));
  }
}

TEST_F(PinnedRecords, StreamDecryptRefusesAResealedRecord) {
  for (bool pin : {true, false}) {
    std::optional<crypto::Sha256Digest> pinned;
    if (pin) pinned = written_.result.toc_digest;
    for (DecryptOutput mode : {DecryptOutput::kTar, DecryptOutput::kTarZstd}) {
      auto streamed = Stream(forged_, TestKey(), pinned, mode);
      ASSERT_FALSE(streamed.ok());
      EXPECT_EQ(streamed.status().code(), StatusCode::kAuthFailed);
      EXPECT_THAT(streamed.status().message(), HasSubstr(WantMessage()));
    }
  }
}

// A blob whose TOC says version 1 (no pins) is refused by every reader, with the same message.
TEST(PinnedRecordsToc, AnOldTocWithoutPinsIsRefusedEverywhere) {
  Forge forge;
  MemoryOutputStream out;
  tar::TarWriter w(out);
  tar::Entry e = TarEntry("f", tar::EntryType::kRegular);
  e.size = 10;
  ASSERT_TRUE(w.AppendEntry(e, AsBytes("0123456789")).ok());
  ASSERT_TRUE(w.Finish(0).ok());
  std::vector<uint8_t> raw = out.Take();
  forge.AddChunk(raw, /*last=*/true);
  forge.SetTocVersionForTest(1);
  std::vector<uint8_t> blob = forge.Finish(raw);
  const std::string want =
      "TOC has no chunk digests (written by an older lazycrypt); re-encrypt the image";
  MemoryBlobSource source(blob);
  auto index = LayerIndex::Open(source, forge.key(), forge.toc_digest());
  ASSERT_FALSE(index.ok());
  EXPECT_THAT(index.status().message(), HasSubstr(want));
  auto eager = Eager(blob, forge.key(), forge.toc_digest());
  EXPECT_THAT(eager.status().message(), HasSubstr(want));
  auto streamed = Stream(blob, forge.key(), forge.toc_digest());
  EXPECT_THAT(streamed.status().message(), HasSubstr(want));
}

}  // namespace
}  // namespace lazycrypt::format
