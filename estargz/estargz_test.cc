#include <sys/resource.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "compress/compress.h"
#include "crypto/digest.h"
#include "crypto/ocicrypt_ctr.h"
#include "estargz/reader.h"
#include "estargz/toc.h"
#include "estargz/writer.h"
#include "tar/tar_reader.h"
#include "tar/tar_writer.h"

namespace lazycrypt::estargz {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return v;
}

struct SourceFile {
  tar::Entry entry;
  std::vector<uint8_t> data;
};

tar::Entry Make(std::string name, tar::EntryType type, uint64_t size = 0) {
  tar::Entry e;
  e.name = std::move(name);
  e.type = type;
  e.size = size;
  e.mode = type == tar::EntryType::kDirectory ? 0755 : 0644;
  e.uid = 1000;
  e.gid = 1000;
  e.uname = "user";
  e.gname = "group";
  e.mtime_sec = 1700000000;
  return e;
}

// A layer with one of everything, including a file of several chunks at a 4 KiB chunk size.
std::vector<SourceFile> SampleFiles() {
  std::vector<SourceFile> files;
  files.push_back({Make("usr/", tar::EntryType::kDirectory), {}});
  files.push_back({Make("usr/bin/", tar::EntryType::kDirectory), {}});
  files.push_back({Make("usr/bin/app", tar::EntryType::kRegular, 10000), Pattern(10000, 1)});
  files.push_back({Make("etc/", tar::EntryType::kDirectory), {}});
  files.push_back({Make("etc/small", tar::EntryType::kRegular, 100), Pattern(100, 2)});
  files.push_back({Make("etc/empty", tar::EntryType::kRegular, 0), {}});
  files.push_back({Make("etc/exact", tar::EntryType::kRegular, 4096), Pattern(4096, 3)});
  auto sym = Make("etc/link", tar::EntryType::kSymlink);
  sym.link_name = "../usr/bin/app";
  files.push_back({sym, {}});
  auto hard = Make("etc/hard", tar::EntryType::kHardlink);
  hard.link_name = "etc/small";
  files.push_back({hard, {}});
  auto dev = Make("dev-null", tar::EntryType::kCharDevice);
  dev.dev_major = 1;
  dev.dev_minor = 3;
  files.push_back({dev, {}});
  auto x = Make("etc/xattr", tar::EntryType::kRegular, 5);
  x.xattrs["security.capability"] = std::string("\x01\x00\xff", 3);
  files.push_back({x, Pattern(5, 4)});
  std::string long_name = "deep/" + std::string(150, 'd') + "/file";
  files.push_back({Make(long_name, tar::EntryType::kRegular, 700), Pattern(700, 5)});
  return files;
}

std::vector<uint8_t> BuildTar(const std::vector<SourceFile>& files) {
  MemoryOutputStream out;
  tar::TarWriter w(out);
  for (const auto& f : files) EXPECT_TRUE(w.AppendEntry(f.entry, f.data).ok());
  EXPECT_TRUE(w.Finish().ok());
  return out.Take();
}

struct Built {
  std::vector<uint8_t> blob;
  WriteResult result;
};

Built Write(const std::vector<uint8_t>& tar_bytes, WriterOptions options = {}) {
  if (!options.salt_hex) options.salt_hex = std::string(64, 'a');
  MemoryInputStream in(tar_bytes, 777);  // short reads
  MemoryOutputStream out;
  auto r = WriteEstargz(in, out, options);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return {out.Take(), r.ok() ? *r : WriteResult{}};
}

std::vector<uint8_t> Gunzip(ByteSpan blob) {
  MemoryInputStream in(blob);
  auto z = compress::NewGzipInputStream(in);
  std::vector<uint8_t> all, buf(1 << 16);
  for (;;) {
    auto n = z->Read(buf);
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    if (!n.ok() || *n == 0) break;
    all.insert(all.end(), buf.begin(), buf.begin() + *n);
  }
  return all;
}

struct TarFile {
  tar::Entry entry;
  std::vector<uint8_t> data;
};

std::vector<TarFile> ReadTar(ByteSpan tar_bytes) {
  MemoryInputStream in(tar_bytes);
  tar::TarReader r(in);
  std::vector<TarFile> out;
  for (;;) {
    auto e = r.Next();
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    if (!e.ok() || !e->has_value()) break;
    TarFile f{**e, std::vector<uint8_t>((*e)->size)};
    size_t got = 0;
    while (got < f.data.size()) {
      auto n = r.ReadData(MutableByteSpan(f.data).subspan(got));
      EXPECT_TRUE(n.ok());
      if (!n.ok() || *n == 0) break;
      got += *n;
    }
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<std::string> Names(const std::vector<TarFile>& files) {
  std::vector<std::string> names;
  for (const auto& f : files) names.push_back(f.entry.name);
  return names;
}

// A blob source that counts what is read through it.
class CountingSource final : public BlobSource {
 public:
  explicit CountingSource(BlobSource& inner) : inner_(inner) {}
  uint64_t size() const override { return inner_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    bytes_ += out.size();
    return inner_.ReadAt(offset, out);
  }
  uint64_t bytes() const { return bytes_; }

 private:
  BlobSource& inner_;
  std::atomic<uint64_t> bytes_{0};
};

// --- footer ---------------------------------------------------------------------------------------

TEST(EstargzFooter, RoundTripsAndIsAnEmptyGzipMember) {
  auto f = MakeFooter(0x123456789abcdefull);
  EXPECT_EQ(AsStringView(ByteSpan(f).subspan(16, 22)), "0123456789abcdefSTARGZ");
  auto off = ParseFooter(f);
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(*off, 0x123456789abcdefull);
  EXPECT_TRUE(Gunzip(f).empty());  // zlib checks the CRC and ISIZE of the empty member
}

TEST(EstargzFooter, RejectsEveryChangedByteButXflAndOs) {
  auto good = MakeFooter(4242);
  for (size_t i = 0; i < kFooterSize; ++i) {
    auto f = good;
    f[i] ^= 0x40;
    auto r = ParseFooter(f);
    if (i == 8 || i == 9) {
      EXPECT_TRUE(r.ok()) << i;
    } else {
      EXPECT_FALSE(r.ok()) << "byte " << i;
    }
  }
  EXPECT_FALSE(ParseFooter(ByteSpan(good).first(50)).ok());
}

// --- writer ---------------------------------------------------------------------------------------

TEST(EstargzWriter, TarStreamIsLandmarkThenSourceThenToc) {
  auto files = SampleFiles();
  auto source = BuildTar(files);
  WriterOptions options;
  options.chunk_size_bytes = 4096;
  Built b = Write(source, options);
  auto plain = Gunzip(b.blob);
  EXPECT_EQ(crypto::Sha256::Of(plain), b.result.diff_id);
  EXPECT_EQ(plain.size(), b.result.uncompressed_size);
  EXPECT_EQ(b.result.source_diff_id, crypto::Sha256::Of(source));
  EXPECT_EQ(crypto::Sha256::Of(b.blob), b.result.blob_digest);
  EXPECT_EQ(b.blob.size(), b.result.blob_size);
  EXPECT_EQ(b.result.toc_offset + b.result.toc_size + kFooterSize, b.blob.size());
  auto out = ReadTar(plain);
  ASSERT_EQ(out.size(), files.size() + 2);
  EXPECT_EQ(out.front().entry.name, kNoPrefetchLandmark);
  EXPECT_EQ(out.front().data, std::vector<uint8_t>{kLandmarkContents});
  EXPECT_EQ(out.back().entry.name, kTocTarName);
  for (size_t i = 0; i < files.size(); ++i) {
    tar::Entry want = files[i].entry, got = out[i + 1].entry;
    got.header_offset = got.data_offset = want.header_offset = want.data_offset = 0;
    EXPECT_EQ(got, want) << i;
    EXPECT_EQ(out[i + 1].data, files[i].data) << i;
  }
  EXPECT_EQ(crypto::Sha256::Of(out.back().data), b.result.toc_digest);
  // 10000 bytes at 4 KiB: 3 chunks; 4096: 1; the others with data: 1 each; the landmark: 1.
  EXPECT_EQ(b.result.chunk_count, 3u + 1 + 1 + 1 + 1 + 1);
}

TEST(EstargzWriter, SourceHeadersAreCopiedByteForByte) {
  auto files = SampleFiles();
  auto source = BuildTar(files);
  Built b = Write(source);
  auto plain = Gunzip(b.blob);
  // After the landmark (512 + 512 bytes), the source's entries up to its end marker.
  MemoryInputStream in(source);
  tar::TarReader r(in);
  uint64_t end = 0;
  for (;;) {
    auto e = r.Next();
    ASSERT_TRUE(e.ok());
    if (!e->has_value()) break;
    end = (*e)->data_offset + ((*e)->size + 511) / 512 * 512;
  }
  ASSERT_GE(plain.size(), 1024 + end);
  EXPECT_EQ(0, std::memcmp(plain.data() + 1024, source.data(), end));
}

TEST(EstargzWriter, EveryDataChunkStartsAGzipMember) {
  auto source = BuildTar(SampleFiles());
  WriterOptions options;
  options.chunk_size_bytes = 4096;
  Built b = Write(source, options);
  MemoryBlobSource blob(b.blob);
  auto index = OpenIndex(blob, b.result.toc_digest);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  for (const ChunkRef& c : (*index)->chunks()) {
    ASSERT_LT(c.compressed_offset + 2, b.blob.size());
    EXPECT_EQ(b.blob[c.compressed_offset], 0x1f);
    EXPECT_EQ(b.blob[c.compressed_offset + 1], 0x8b);
    EXPECT_EQ(c.inner_offset, 0u);
    // The member alone inflates (it is complete), and begins with the chunk's bytes.
    auto member = Gunzip(ByteSpan(b.blob).subspan(c.compressed_offset, c.compressed_size));
    ASSERT_GE(member.size(), c.size);
    EXPECT_EQ(crypto::Sha256::Of(ByteSpan(member).first(c.size)), c.digest);
  }
}

TEST(EstargzWriter, ThreadsDoNotChangeTheBlob) {
  auto source = BuildTar(SampleFiles());
  WriterOptions one, four;
  one.chunk_size_bytes = four.chunk_size_bytes = 4096;
  one.threads = 1;
  four.threads = 4;
  Built a = Write(source, one);
  Built b = Write(source, four);
  EXPECT_EQ(a.blob, b.blob);
  EXPECT_EQ(a.result.toc_digest, b.result.toc_digest);
  MemoryBlobSource blob(b.blob);
  EXPECT_TRUE(OpenIndex(blob, b.result.toc_digest).ok());
}

TEST(EstargzWriter, SaltMakesEveryConversionItsOwn) {
  auto source = BuildTar(SampleFiles());
  WriterOptions a, b;
  a.salt_hex = std::nullopt;
  b.salt_hex = std::nullopt;
  MemoryInputStream in_a(source), in_b(source);
  MemoryOutputStream out_a, out_b;
  auto ra = WriteEstargz(in_a, out_a, a);
  auto rb = WriteEstargz(in_b, out_b, b);
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_NE(ra->toc_digest, rb->toc_digest);
  EXPECT_NE(ra->diff_id, rb->diff_id);
  EXPECT_EQ(ra->source_diff_id, rb->source_diff_id);
}

TEST(EstargzWriter, DropsAnEarlierTocAndLandmarks) {
  std::vector<SourceFile> files;
  files.push_back({Make("stargz.index.json", tar::EntryType::kRegular, 3), Pattern(3, 9)});
  files.push_back({Make("./.prefetch.landmark", tar::EntryType::kRegular, 1), {0x0f}});
  files.push_back({Make("a", tar::EntryType::kRegular, 3), Pattern(3, 8)});
  Built b = Write(BuildTar(files));
  EXPECT_THAT(Names(ReadTar(Gunzip(b.blob))),
              ElementsAre(".no.prefetch.landmark", "a", "stargz.index.json"));
}

TEST(EstargzWriter, RefusesANameThatIsNotUtf8WithoutNamingIt) {
  std::vector<SourceFile> files;
  files.push_back({Make("secret-\xff\xfe", tar::EntryType::kRegular, 1), {1}});
  auto tar_bytes = BuildTar(files);
  MemoryInputStream in(tar_bytes);
  MemoryOutputStream out;
  auto r = WriteEstargz(in, out, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_THAT(r.status().message(), HasSubstr("not valid UTF-8"));
  EXPECT_THAT(r.status().message(), ::testing::Not(HasSubstr("secret")));
}

TEST(EstargzWriter, PrefetchListMovesFilesAndTheirDirectoriesBeforeTheLandmark) {
  auto files = SampleFiles();
  WriterOptions options;
  options.prefetch_paths = {"etc/small", "usr/bin/app", "nope", "etc/link", "etc/small"};
  options.spool_dir = ::testing::TempDir();
  Built b = Write(BuildTar(files), options);
  EXPECT_THAT(b.result.prefetch_moved, ElementsAre("etc/small", "usr/bin/app"));
  EXPECT_THAT(b.result.prefetch_not_moved,
              ElementsAre("nope: not in this layer", "etc/link: not a regular file"));
  auto out = ReadTar(Gunzip(b.blob));
  auto names = Names(out);
  ASSERT_GE(names.size(), 6u);
  EXPECT_THAT(std::vector<std::string>(names.begin(), names.begin() + 6),
              ElementsAre("etc/", "etc/small", "usr/", "usr/bin/", "usr/bin/app",
                          ".prefetch.landmark"));
  EXPECT_EQ(names.size(), files.size() + 2);
  EXPECT_EQ(names.back(), "stargz.index.json");
  MemoryBlobSource blob(b.blob);
  auto index = OpenIndex(blob, b.result.toc_digest);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_TRUE((*index)->has_prefetch_landmark());
  std::vector<std::string> prefetch;
  for (uint32_t i : (*index)->prefetch_entries()) prefetch.push_back((*index)->entries()[i].name);
  EXPECT_THAT(prefetch, ElementsAre("etc/small", "usr/bin/app"));
  // The unmoved rest keeps its order, data included.
  std::map<std::string, std::vector<uint8_t>> data;
  for (const auto& f : out) data[f.entry.name] = f.data;
  for (const auto& f : files) EXPECT_EQ(data[f.entry.name], f.data) << f.entry.name;
}

// --- reader ---------------------------------------------------------------------------------------

TEST(EstargzReader, IndexDescribesEveryFileAndEveryChunkVerifies) {
  auto files = SampleFiles();
  WriterOptions options;
  options.chunk_size_bytes = 4096;
  Built b = Write(BuildTar(files), options);
  MemoryBlobSource blob(b.blob);
  auto opened = OpenIndex(blob, b.result.toc_digest);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  const Index& index = **opened;
  EXPECT_EQ(index.toc_offset(), b.result.toc_offset);
  EXPECT_TRUE(index.prefetch_entries().empty());
  EXPECT_FALSE(index.has_prefetch_landmark());
  ASSERT_EQ(index.entries().size(), files.size() + 1);  // + the landmark
  EXPECT_EQ(index.entries()[0].name, ".no.prefetch.landmark");
  for (size_t i = 0; i < files.size(); ++i) {
    const Entry& e = index.entries()[i + 1];
    const tar::Entry& want = files[i].entry;
    std::string want_name = want.name;
    if (want_name.back() == '/') want_name.pop_back();
    EXPECT_EQ(e.name, want_name);
    EXPECT_EQ(e.mode, want.mode);
    EXPECT_EQ(e.uid, 1000u);
    EXPECT_EQ(e.uname, "user");  // written once, carried by the reader
    EXPECT_EQ(e.gname, "group");
    EXPECT_EQ(e.modtime, "2023-11-14T22:13:20Z");
    EXPECT_EQ(e.xattrs, want.xattrs);
    if (want.type != tar::EntryType::kRegular) continue;
    EXPECT_EQ(e.size, files[i].data.size());
    EXPECT_EQ(e.file_digest, crypto::Sha256::Of(files[i].data));
    std::vector<uint8_t> whole;
    for (const ChunkRef& c : index.ChunksOf(static_cast<uint32_t>(i + 1))) {
      EXPECT_EQ(c.file_offset, whole.size());
      std::vector<uint8_t> buf(c.size);
      Status s = ReadChunk(blob, c, buf);
      ASSERT_TRUE(s.ok()) << s.ToString();
      whole.insert(whole.end(), buf.begin(), buf.end());
    }
    EXPECT_EQ(whole, files[i].data) << want.name;
  }
  EXPECT_EQ(index.ChunksOf(3).size(), 3u);  // usr/bin/app, 10000 bytes
  EXPECT_EQ(index.entries()[8].type, EntryType::kSymlink);
  EXPECT_EQ(index.entries()[8].link_name, "../usr/bin/app");
  EXPECT_EQ(index.entries()[9].type, EntryType::kHardlink);
  EXPECT_EQ(index.entries()[9].link_name, "etc/small");
  EXPECT_EQ(index.entries()[10].dev_minor, 3u);
}

TEST(EstargzReader, RefusesATocThatIsNotThePinnedOne) {
  Built b = Write(BuildTar(SampleFiles()));
  MemoryBlobSource blob(b.blob);
  crypto::Sha256Digest other = b.result.toc_digest;
  other[0] ^= 1;
  auto r = OpenIndex(blob, other);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kAuthFailed);
  EXPECT_THAT(r.status().message(), HasSubstr("estargz TOC digest mismatch"));
}

TEST(EstargzReader, EveryFlippedByteOfTheBlobFailsOpenOrItsChunk) {
  auto files = SampleFiles();
  WriterOptions options;
  options.chunk_size_bytes = 4096;
  Built b = Write(BuildTar(files), options);
  // Flipping a byte that a read uses must never yield different bytes: either open or a chunk
  // read fails, or the flipped byte lies in no chunk's data (a header, padding, an unused
  // gzip trailer) and every chunk still reads back correctly.
  std::map<uint64_t, std::vector<uint8_t>> want;  // chunk offset -> bytes
  {
    MemoryBlobSource blob(b.blob);
    auto index = OpenIndex(blob, b.result.toc_digest);
    ASSERT_TRUE(index.ok());
    for (const ChunkRef& c : (*index)->chunks()) {
      std::vector<uint8_t> buf(c.size);
      ASSERT_TRUE(ReadChunk(blob, c, buf).ok());
      want[c.compressed_offset] = buf;
    }
  }
  size_t failures = 0;
  for (size_t i = 0; i < b.blob.size(); i += 7) {
    auto bytes = b.blob;
    bytes[i] ^= 0x10;
    MemoryBlobSource blob(bytes);
    auto index = OpenIndex(blob, b.result.toc_digest);
    if (!index.ok()) {
      ++failures;
      continue;
    }
    for (const ChunkRef& c : (*index)->chunks()) {
      std::vector<uint8_t> buf(c.size);
      Status s = ReadChunk(blob, c, buf);
      if (!s.ok()) {
        ++failures;
        continue;
      }
      EXPECT_EQ(buf, want[c.compressed_offset]) << "flipped byte " << i;
    }
  }
  EXPECT_GT(failures, 0u);
}

TEST(EstargzReader, ThroughCtrReadsOnlyTheFooterTocAndTheChunkAsked) {
  auto files = SampleFiles();
  files.push_back({Make("big", tar::EntryType::kRegular, 1 << 20), Pattern(1 << 20, 7)});
  Built b = Write(BuildTar(files));
  std::vector<uint8_t> key(32, 7), nonce(16, 9);
  std::vector<uint8_t> cipher(b.blob.size());
  ASSERT_TRUE(crypto::AesCtrXorAt(key, nonce, 0, b.blob, cipher).ok());
  MemoryBlobSource ciphertext(cipher);
  CountingSource counting(ciphertext);
  auto view = CtrPlaintextView::Create(counting, key, nonce);
  ASSERT_TRUE(view.ok());
  auto index = OpenIndex(**view, b.result.toc_digest);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_EQ(counting.bytes(), b.blob.size() - b.result.toc_offset);
  const Index& ix = **index;
  uint32_t small = 5;
  ASSERT_EQ(ix.entries()[small].name, "etc/small");
  const ChunkRef& c = ix.ChunksOf(small)[0];
  std::vector<uint8_t> buf(c.size);
  ASSERT_TRUE(ReadChunk(**view, c, buf).ok());
  EXPECT_EQ(buf, files[4].data);
  EXPECT_LT(counting.bytes(), b.blob.size() - b.result.toc_offset + 64 * 1024 + 1);
  EXPECT_LT(counting.bytes(), b.blob.size() / 4);
  // A wrong key gives no index.
  std::vector<uint8_t> wrong(32, 8);
  auto bad = CtrPlaintextView::Create(ciphertext, wrong, nonce);
  ASSERT_TRUE(bad.ok());
  EXPECT_FALSE(OpenIndex(**bad, b.result.toc_digest).ok());
}

// --- hostile TOCs ---------------------------------------------------------------------------------

Toc GoodToc() {
  Toc toc;
  TocEntry d;
  d.name = "a/";
  d.type = "dir";
  toc.entries.push_back(d);
  TocEntry f;
  f.name = "a/f";
  f.type = "reg";
  f.size = 10;
  f.offset = 100;
  f.chunk_size = 6;
  f.chunk_digest = crypto::OciDigest({});
  toc.entries.push_back(f);
  TocEntry c;
  c.name = "a/f";
  c.type = "chunk";
  c.offset = 200;
  c.chunk_offset = 6;
  c.chunk_digest = crypto::OciDigest({});
  toc.entries.push_back(c);
  return toc;
}

Status BuildStatus(const Toc& toc, uint64_t toc_offset = 1000) {
  return Index::Build(toc, toc_offset, {}).status();
}

TEST(EstargzReader, GoodHandMadeTocBuildsWithCompressedSizes) {
  auto index = Index::Build(GoodToc(), 1000, {});
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  ASSERT_EQ((*index)->chunks().size(), 2u);
  EXPECT_EQ((*index)->chunks()[0].compressed_size, 100u);
  EXPECT_EQ((*index)->chunks()[1].compressed_size, 800u);
  EXPECT_EQ((*index)->chunks()[1].size, 4u);
  EXPECT_EQ((*index)->chunks()[1].file_offset, 6u);
}

TEST(EstargzReader, RefusesHostileTocs) {
  struct Case {
    const char* what;
    std::function<void(Toc&)> change;
    uint64_t toc_offset = 1000;
  };
  std::vector<Case> cases = {
      {"gap between chunks", [](Toc& t) { t.entries[2].chunk_offset = 7; }},
      {"chunk past the end", [](Toc& t) { t.entries[2].chunk_size = 5; }},
      {"missing last chunk", [](Toc& t) { t.entries.pop_back(); }},
      {"offsets not increasing", [](Toc& t) { t.entries[2].offset = 100; }},
      {"offset at the TOC", [](Toc& t) { t.entries[2].offset = 1000; }},
      {"no chunk digest", [](Toc& t) { t.entries[1].chunk_digest = ""; }},
      {"bad chunk digest", [](Toc& t) { t.entries[1].chunk_digest = "sha256:12"; }},
      {"chunk after a dir", [](Toc& t) { std::swap(t.entries[0], t.entries[1]); }},
      {"dotdot name", [](Toc& t) { t.entries[0].name = "../x"; }},
      {"unknown type", [](Toc& t) { t.entries[0].type = "sock"; }},
      {"data on a dir", [](Toc& t) { t.entries[0].offset = 5; }},
      {"hard link to nothing",
       [](Toc& t) {
         TocEntry h;
         h.name = "h";
         h.type = "hardlink";
         h.link_name = "nothing";
         t.entries.push_back(h);
       }},
      {"symlink without target",
       [](Toc& t) {
         TocEntry s;
         s.name = "s";
         s.type = "symlink";
         t.entries.push_back(s);
       }},
      {"chunk too large", [](Toc& t) {
         t.entries[1].size = 1ull << 40;
         t.entries[1].chunk_size = 0;
         t.entries.pop_back();
       }},
  };
  ASSERT_TRUE(BuildStatus(GoodToc()).ok());
  for (const Case& c : cases) {
    Toc toc = GoodToc();
    c.change(toc);
    Status s = BuildStatus(toc, c.toc_offset);
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << c.what << ": " << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr("estargz TOC")) << c.what;
  }
}

TEST(EstargzToc, JsonRoundTripsAndRefusesBadShapes) {
  Toc toc = GoodToc();
  toc.entries[0].xattrs["user.k"] = std::string("\0\x01", 2);
  toc.salt_hex = "00ff";
  auto json = SerializeToc(toc);
  ASSERT_TRUE(json.ok());
  EXPECT_THAT(*json, HasSubstr("\n\t\"entries\": [\n\t\t{\n\t\t\t\"name\": \"a/\""));
  auto back = ParseToc(*json);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->entries.size(), 3u);
  EXPECT_EQ(back->entries[0].xattrs.at("user.k"), std::string("\0\x01", 2));
  EXPECT_EQ(back->entries[2].chunk_offset, 6u);
  EXPECT_EQ(back->salt_hex, "00ff");
  for (const char* bad : {
           "[]", "{\"version\":2,\"entries\":[]}", "{\"version\":1}",
           "{\"version\":1,\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":-1}]}",
           "{\"version\":1,\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":1.5}]}",
           "{\"version\":1,\"entries\":[{\"name\":1,\"type\":\"reg\"}]}",
           "{\"version\":1,\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"xattrs\":{\"k\":\"!!\"}}]}",
           "{\"version\":1,\"entries\":[1]}", "{\"version\":1,\"entries\":[",
       }) {
    auto r = ParseToc(bad);
    EXPECT_FALSE(r.ok()) << bad;
  }
  TocLimits small;
  small.max_entries = 2;
  EXPECT_FALSE(ParseToc(*json, small).ok());
}

// The TOC is read without a JSON DOM (estargz/toc.cc TocSax): members no reader needs cost
// nothing however many values they hold, entries are refused as they pass the limit, and the
// DOM reader's semantics hold (the last of a duplicated member wins, null is absent).
TEST(EstargzToc, UnknownMembersAreSkippedNotBuilt) {
  // 24 Mi values in a member eStargz does not define (48 MiB of JSON): a DOM would build 24 Mi
  // values of 16 bytes each (and grow its vector by doubling) before anything looked at them.
  std::string json = "{\"version\":1,\"junk\":[";
  constexpr size_t kValues = size_t{24} << 20;
  json.reserve(json.size() + 2 * kValues + 64);
  for (size_t i = 0; i < kValues; ++i) json += "0,";
  json += "0],\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":1}]}";
  struct rusage before {};
  ASSERT_EQ(getrusage(RUSAGE_SELF, &before), 0);
  auto toc = ParseToc(json);
  struct rusage after {};
  ASSERT_EQ(getrusage(RUSAGE_SELF, &after), 0);
  ASSERT_TRUE(toc.ok()) << toc.status().ToString();
  ASSERT_EQ(toc->entries.size(), 1u);
  EXPECT_EQ(toc->entries[0].size, 1u);
  // ru_maxrss is KiB: the peak grew by less than 64 MiB (a DOM: 512 MiB, measured). ctest runs
  // each test in a process of its own, so no earlier test's peak hides this one's.
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 64 * 1024)
      << "parsing the TOC raised the peak RSS by " << (after.ru_maxrss - before.ru_maxrss) / 1024
      << " MiB";
}

TEST(EstargzToc, EntriesAreCountedAsTheyOpenAndMembersKeepTheirMeaning) {
  TocLimits small;
  small.max_entries = 3;
  auto over = ParseToc("{\"version\":1,\"entries\":[{},{},{},{}]}", small);
  ASSERT_FALSE(over.ok());
  EXPECT_THAT(over.status().message(), HasSubstr("more than 3 entries"));
  EXPECT_TRUE(ParseToc("{\"version\":1,\"entries\":[{},{},{}]}", small).ok());

  // The last of a duplicated member wins; null is absent; unknown members (also nested) are
  // ignored; mode keeps the permission bits.
  auto toc = ParseToc(
      "{\"entries\":[{\"name\":\"x\"}],\"version\":1,\"extra\":{\"a\":[1,{\"b\":null}]},"
      "\"entries\":[{\"name\":\"a\",\"name\":\"b\",\"type\":\"reg\",\"size\":null,\"size\":7,"
      "\"mode\":33188,\"future\":[{\"name\":\"no\"}],\"xattrs\":{\"user.k\":\"AAE=\"},"
      "\"devMajor\":1}]}");
  ASSERT_TRUE(toc.ok()) << toc.status().ToString();
  ASSERT_EQ(toc->entries.size(), 1u);
  EXPECT_EQ(toc->entries[0].name, "b");
  EXPECT_EQ(toc->entries[0].size, 7u);
  EXPECT_EQ(toc->entries[0].mode, 0644u);
  EXPECT_EQ(toc->entries[0].dev_major, 1u);
  EXPECT_EQ(toc->entries[0].xattrs.at("user.k"), std::string("\0\x01", 2));
  // A later null is absent, as the DOM reader (and Go's decoder) had it.
  auto nulled = ParseToc(
      "{\"version\":1,\"entries\":[{\"name\":\"a\",\"name\":null,\"size\":7,\"size\":null,"
      "\"xattrs\":{\"user.k\":\"AAE=\"},\"xattrs\":null}]}");
  ASSERT_TRUE(nulled.ok()) << nulled.status().ToString();
  EXPECT_EQ(nulled->entries[0].name, "");
  EXPECT_EQ(nulled->entries[0].size, 0u);
  EXPECT_TRUE(nulled->entries[0].xattrs.empty());

  for (const char* bad : {
           "{\"version\":1,\"entries\":{}}", "{\"version\":1.0,\"entries\":[]}",
           "{\"version\":\"1\",\"entries\":[]}", "{\"version\":1,\"entries\":[[]]}",
           "{\"version\":1,\"entries\":[{\"xattrs\":[]}]}",
           "{\"version\":1,\"entries\":[{\"xattrs\":{\"k\":null}}]}",
           "{\"version\":1,\"entries\":[{\"size\":{}}]}",
           "{\"version\":1,\"entries\":[{\"devMinor\":2147483648}]}",
           "{\"version\":1,\"entries\":[],\"lazycryptSalt\":[]}",
           "{\"version\":1,\"entries\":[]} trailing", "1", "\"x\"",
       }) {
    auto r = ParseToc(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) EXPECT_THAT(r.status().message(), HasSubstr("estargz TOC")) << bad;
  }
}

TEST(EstargzReader, ExtractTocJsonRefusesOtherMembers) {
  std::vector<SourceFile> files;
  files.push_back({Make("not-the-toc", tar::EntryType::kRegular, 2), {'{', '}'}});
  auto tar_bytes = BuildTar(files);
  MemoryOutputStream gz;
  auto z = compress::NewGzipOutputStream(gz);
  ASSERT_TRUE(z->Write(tar_bytes).ok());
  ASSERT_TRUE(z->Close().ok());
  auto r = ExtractTocJson(gz.bytes());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("not stargz.index.json"));
  EXPECT_FALSE(ExtractTocJson(AsBytes("garbage")).ok());
}

}  // namespace
}  // namespace lazycrypt::estargz
