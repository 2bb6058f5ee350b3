// TocTarMatcher and the decoders that run it: a TOC must describe its tar stream exactly, and
// nothing but zero bytes may follow the end-of-archive marker (docs/FORMAT.md §4, §5). Hostile
// TOCs are sealed with the layer key, as any key holder can (tests/forged_layer.h).
#include "format/toc_tar_match.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <random>

#include "format/decrypt.h"
#include "format/layer_reader.h"
#include "format/writer.h"
#include "tar/tar_writer.h"
#include "tests/forged_layer.h"

namespace lazycrypt::format {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

LayerKey Key() {
  LayerKey k(kLayerKeySize);
  for (size_t i = 0; i < k.size(); ++i) k.data()[i] = static_cast<uint8_t>(0x40 + i);
  return k;
}

tar::Entry TarEntry(std::string name, tar::EntryType type, uint64_t size = 0) {
  tar::Entry e;
  e.name = std::move(name);
  e.type = type;
  e.mode = type == tar::EntryType::kDirectory ? 0755 : 0644;
  e.uid = 1000;
  e.gid = 100;
  e.uname = "user";
  e.gname = "users";
  e.mtime_sec = 1700000000;
  e.size = size;
  return e;
}

// A small layer: a PAX global header first (as the writer's salt header), a directory, two
// files (one spanning several 64 KiB chunks), a symlink, a hardlink, a device, xattrs; then the
// end-of-archive marker and `trailer` (zeros by default).
std::vector<uint8_t> SampleTar(ByteSpan trailer = {}, size_t record_size = 10240) {
  MemoryOutputStream out;
  tar::TarWriter w(out);
  EXPECT_TRUE(w.AppendGlobalHeader({{"comment", "lazycrypt-layer-salt:00"}}).ok());
  EXPECT_TRUE(w.AppendEntry(TarEntry("./", tar::EntryType::kDirectory)).ok());
  EXPECT_TRUE(w.AppendEntry(TarEntry("./etc/", tar::EntryType::kDirectory)).ok());
  std::string small = "hello, lazycrypt\n";
  EXPECT_TRUE(w.AppendEntry(TarEntry("./etc/motd", tar::EntryType::kRegular, small.size()),
                            AsBytes(small)).ok());
  std::vector<uint8_t> big(200000);
  std::mt19937 rng(7);
  for (auto& b : big) b = static_cast<uint8_t>(rng());
  tar::Entry bin = TarEntry("./bin/tool", tar::EntryType::kRegular, big.size());
  bin.mode = 0755;
  bin.xattrs["security.capability"] = std::string("\x01\x00\x00\x02", 4);
  EXPECT_TRUE(w.AppendEntry(bin, big).ok());
  tar::Entry link = TarEntry("./bin/sh", tar::EntryType::kSymlink);
  link.link_name = "tool";
  EXPECT_TRUE(w.AppendEntry(link).ok());
  tar::Entry hard = TarEntry("./bin/tool2", tar::EntryType::kHardlink);
  hard.link_name = "./bin/tool";
  EXPECT_TRUE(w.AppendEntry(hard).ok());
  tar::Entry dev = TarEntry("./dev-null", tar::EntryType::kCharDevice);
  dev.dev_major = 1;
  dev.dev_minor = 3;
  EXPECT_TRUE(w.AppendEntry(dev).ok());
  EXPECT_TRUE(w.Finish(record_size).ok());
  std::vector<uint8_t> tar = out.Take();
  tar.insert(tar.end(), trailer.begin(), trailer.end());
  return tar;
}

std::vector<Entry> Honest(ByteSpan tar) {
  auto entries = testing::HonestTocEntries(tar);
  EXPECT_TRUE(entries.ok()) << entries.status().ToString();
  return entries.ok() ? *entries : std::vector<Entry>{};
}

// Feeds `tar` to a matcher in pieces of `piece` bytes.
Status Match(ByteSpan tar, const std::vector<Entry>& entries, size_t piece = 4096) {
  TocTarMatcher m(entries);
  for (size_t pos = 0; pos < tar.size(); pos += piece) {
    LC_RETURN_IF_ERROR(m.Feed(tar.subspan(pos, std::min(piece, tar.size() - pos))));
  }
  return m.Finish();
}

Status MatchCollecting(ByteSpan tar, const std::vector<Entry>& entries) {
  TocTarMatcher m;
  LC_RETURN_IF_ERROR(m.Feed(tar));
  return m.Finish(entries);
}

TEST(TocTarMatcher, HonestTocMatchesInAnyFeedSizes) {
  auto tar = SampleTar();
  auto entries = Honest(tar);
  ASSERT_EQ(entries.size(), 7u);  // the global header has no entry
  for (size_t piece : {size_t{97}, size_t{511}, size_t{512}, size_t{65536}, tar.size()}) {
    Status s = Match(tar, entries, piece);
    EXPECT_TRUE(s.ok()) << piece << ": " << s.ToString();
  }
  EXPECT_TRUE(MatchCollecting(tar, entries).ok());
}

// Every field an author could bend, one at a time; the message names the entry index and the
// field, never the name.
TEST(TocTarMatcher, EachDifferingFieldIsNamedByEntryIndex) {
  auto tar = SampleTar();
  const auto honest = Honest(tar);
  struct Case {
    size_t index;
    std::string field;
    std::function<void(Entry&)> bend;
  };
  const std::vector<Case> cases = {
      {2, "name", [](Entry& e) { e.name = "etc/shadow"; }},
      {2, "type", [](Entry& e) { e.type = EntryType::kFifo; e.size = 0; e.data_offset = 0; }},
      {3, "mode", [](Entry& e) { e.mode = 04755; }},
      {3, "uid", [](Entry& e) { e.uid = 0; }},
      {3, "gid", [](Entry& e) { e.gid = 0; }},
      {3, "uname", [](Entry& e) { e.uname = "root"; }},
      {3, "gname", [](Entry& e) { e.gname = "root"; }},
      {3, "mtime", [](Entry& e) { e.mtime_nsec = 1; }},
      {2, "size", [](Entry& e) { e.size += 1; }},
      {2, "data offset", [](Entry& e) { e.data_offset += 512; }},
      {4, "link target", [](Entry& e) { e.link_target = "/etc/shadow"; }},
      {6, "device number", [](Entry& e) { e.dev_minor = 5; }},
      {3, "xattrs", [](Entry& e) { e.xattrs.clear(); }},
  };
  for (const Case& c : cases) {
    auto entries = honest;
    c.bend(entries[c.index]);
    const std::string want = "TOC does not match the tar stream: entry " + std::to_string(c.index) +
                             ": " + c.field + " differs";
    for (const Status& s : {Match(tar, entries), MatchCollecting(tar, entries)}) {
      EXPECT_EQ(s.code(), StatusCode::kCorruption) << c.field;
      EXPECT_EQ(s.message(), want) << c.field;
      EXPECT_THAT(s.message(), AllOf(Not(HasSubstr("motd")), Not(HasSubstr("tool"))));
    }
  }
}

TEST(TocTarMatcher, ExtraOrMissingEntries) {
  auto tar = SampleTar();
  auto extra = Honest(tar);
  extra.push_back(extra[2]);
  extra.back().name = "etc/planted";
  auto missing = Honest(tar);
  missing.pop_back();
  for (const Status& s : {Match(tar, extra), MatchCollecting(tar, extra)}) {
    EXPECT_EQ(s.message(), "TOC does not match the tar stream: the TOC lists 8 entries, the tar "
                           "stream has 7");
  }
  EXPECT_EQ(Match(tar, missing).message(),
            "TOC does not match the tar stream: the TOC lists 6 entries, the tar stream has more");
  EXPECT_EQ(MatchCollecting(tar, missing).message(),
            "TOC does not match the tar stream: the TOC lists 6 entries, the tar stream has 7");
}

TEST(TocTarMatcher, OnlyZeroBytesMayFollowTheEndOfArchive) {
  std::vector<uint8_t> zeros(3000, 0);
  auto padded = SampleTar(zeros);
  EXPECT_TRUE(Match(padded, Honest(padded)).ok());
  auto bare = SampleTar({}, 0);  // the marker and nothing after it
  EXPECT_TRUE(Match(bare, Honest(bare)).ok());

  std::vector<uint8_t> junk(3000, 0);
  junk[2500] = 'X';
  auto tar = SampleTar(junk);
  const uint64_t at = tar.size() - 500;
  for (const Status& s : {Match(tar, Honest(tar)), MatchCollecting(tar, Honest(tar))}) {
    EXPECT_EQ(s.code(), StatusCode::kCorruption);
    EXPECT_THAT(s.message(), HasSubstr("data after the end-of-archive marker (a non-zero byte at "
                                       "offset " + std::to_string(at) + ")"));
  }
}

// The attack of issue 15: a file's bytes hidden after the end-of-archive marker, where tar
// readers (scanners, eager unpacks) never look, and a TOC entry pointing at them for the lazy
// mount to serve.
TEST(TocTarMatcher, EntryPointingPastTheArchiveEndIsRefused) {
  std::string planted = "planted!";
  std::vector<uint8_t> trailer(1024, 0);
  std::copy(planted.begin(), planted.end(), trailer.begin() + 512);
  auto tar = SampleTar(trailer, 0);
  auto entries = Honest(tar);
  entries[2].data_offset = tar.size() - 512;  // etc/motd now reads "planted!..."
  entries[2].size = planted.size();
  ASSERT_TRUE(ValidateEntry(entries[2], tar.size()).ok());
  Status s = Match(tar, entries);
  EXPECT_EQ(s.message(), "TOC does not match the tar stream: entry 2: size differs");

  // Even with the trailer all zeros, pointing a file at it is a differing data offset.
  auto zero_tail = SampleTar(std::vector<uint8_t>(1024, 0), 0);
  auto moved = Honest(zero_tail);
  moved[2].data_offset = zero_tail.size() - 512;
  EXPECT_EQ(Match(zero_tail, moved).message(),
            "TOC does not match the tar stream: entry 2: data offset differs");
}

TEST(TocTarMatcher, TarThatDoesNotParseIsReportedWithoutNames) {
  auto tar = SampleTar();
  auto entries = Honest(tar);
  auto broken = tar;
  broken[1024 + 512 + 100] ^= 0x01;  // the second entry's header: its checksum no longer fits
  Status s = Match(broken, entries);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("TOC does not match the tar stream: entry 1: the tar "
                                           "stream does not parse ("),
                                 Not(HasSubstr("etc"))));
}

TEST(TocTarMatcher, DestroyedWithoutFinishStopsItsThread) {
  auto tar = SampleTar();
  auto entries = Honest(tar);
  TocTarMatcher m(entries);
  ASSERT_TRUE(m.Feed(ByteSpan(tar).first(700)).ok());
}

// ---- Through the decoders -----------------------------------------------------------------------

Result<std::vector<uint8_t>> Eager(const testing::ForgedLayer& f) {
  MemoryBlobSource blob(f.blob);
  MemoryOutputStream out;
  LC_RETURN_IF_ERROR(DecryptLayer(blob, Key(), f.toc_digest, out).status());
  return out.Take();
}

Result<std::vector<uint8_t>> Stream(const testing::ForgedLayer& f) {
  MemoryInputStream in(f.blob, 5000);
  MemoryOutputStream out;
  LC_RETURN_IF_ERROR(DecryptLayerStream(in, Key(), f.toc_digest, out).status());
  return out.Take();
}

TEST(DecryptChecksTheTocAgainstTheTar, HonestForgedLayerDecodesBothWays) {
  auto tar = SampleTar();
  auto forged = testing::ForgeLayer(tar, Honest(tar), Key());
  ASSERT_TRUE(forged.ok()) << forged.status().ToString();
  for (auto r : {Eager(*forged), Stream(*forged)}) {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(*r == tar);
  }
}

TEST(DecryptChecksTheTocAgainstTheTar, BothDecodersRefuseAHostileToc) {
  auto tar = SampleTar();
  struct Case {
    std::string want;
    std::function<void(std::vector<Entry>&)> bend;
  };
  const std::vector<Case> cases = {
      {"entry 3: mode differs", [](auto& e) { e[3].mode = 04755; }},
      {"entry 2: size differs", [](auto& e) { e[2].size = 3; }},
      {"entry 4: link target differs", [](auto& e) { e[4].link_target = "/etc/shadow"; }},
      {"the TOC lists 6 entries", [](auto& e) { e.pop_back(); }},
  };
  for (const Case& c : cases) {
    auto entries = Honest(tar);
    c.bend(entries);
    auto forged = testing::ForgeLayer(tar, entries, Key());
    ASSERT_TRUE(forged.ok()) << forged.status().ToString();
    for (auto r : {Eager(*forged), Stream(*forged)}) {
      ASSERT_FALSE(r.ok()) << c.want;
      EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
      EXPECT_THAT(r.status().message(), HasSubstr("TOC does not match the tar stream: " + c.want));
    }
    // The lazy reader alone cannot tell (it reads only the file's chunks): that is what the
    // background verification of a mount is for (cache::CachedLayer).
    MemoryBlobSource blob(forged->blob);
    EXPECT_TRUE(LayerReader::Open(blob, Key(), forged->toc_digest).ok());
  }
}

TEST(DecryptChecksTheTocAgainstTheTar, BothDecodersRefuseDataAfterTheArchiveEnd) {
  std::vector<uint8_t> junk(512, 0);
  junk[7] = 1;
  auto tar = SampleTar(junk);
  auto forged = testing::ForgeLayer(tar, Honest(tar), Key());
  ASSERT_TRUE(forged.ok()) << forged.status().ToString();
  for (auto r : {Eager(*forged), Stream(*forged)}) {
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.status().message(), HasSubstr("data after the end-of-archive marker"));
  }
}

TEST(LayerWriterTrailingData, RefusesASourceWithDataAfterItsEndOfArchive) {
  std::vector<uint8_t> junk(777, 0);
  junk[600] = 0x5a;
  auto tar = SampleTar(junk);
  MemoryInputStream in(tar);
  MemoryOutputStream out;
  auto r = WriteLayer(in, Key(), out);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(r.status().message(),
              AllOf(HasSubstr("only zero bytes after the end-of-archive marker"),
                    HasSubstr("a non-zero byte at offset " + std::to_string(tar.size() - 177))));

  auto zeros = SampleTar(std::vector<uint8_t>(777, 0));
  MemoryInputStream zin(zeros);
  MemoryOutputStream zout;
  auto ok = WriteLayer(zin, Key(), zout);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  // What the writer produces passes every decoder's TOC/tar match.
  testing::ForgedLayer written;
  written.blob = zout.Take();
  written.toc_digest = ok->toc_digest;
  EXPECT_TRUE(Eager(written).ok());
  EXPECT_TRUE(Stream(written).ok());
}

}  // namespace
}  // namespace lazycrypt::format
