// TOC validation: name normalization, every rule of ValidateEntry/TocFromProto, the plaintext
// envelope (size prefix + zstd) and its limits.
#include "format/toc.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include "format/toc.pb.h"
#include "tests/test_util.h"

namespace lazycrypt::format {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// ---- Names -------------------------------------------------------------------------------------

TEST(NormalizeEntryName, NormalizesTarSpellings) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"a", "a"},
      {"./a/b/", "a/b"},
      {"/abs/x", "abs/x"},
      {"./", "."},
      {".", "."},
      {"/", "."},
      {"a//b/./c/", "a/b/c"},
      {"././x", "x"},
      {"dir/.wh..wh..opq", "dir/.wh..wh..opq"},
      {".wh.file", ".wh.file"},
      {"...", "..."},
      {"a/..b/c..", "a/..b/c.."},
  };
  for (const auto& [raw, want] : cases) {
    auto got = NormalizeEntryName(raw);
    ASSERT_TRUE(got.ok()) << raw << ": " << got.status().ToString();
    EXPECT_EQ(*got, want) << raw;
    EXPECT_TRUE(IsNormalizedName(want)) << want;
  }
}

TEST(NormalizeEntryName, RejectsUnsafeNames) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"..", "'..'"},
      {"../etc/passwd", "'..'"},
      {"a/../../b", "'..'"},
      {"a/..", "'..'"},
      {"/..", "'..'"},
      {"", "empty"},
      {std::string("a\0b", 3), "NUL"},
      {std::string(256, 'n'), "256-byte component"},
      {[] {
         std::string deep;
         for (int i = 0; i < 20; ++i) deep += std::string(250, 'd') + "/";
         return deep;
       }(),
       "bytes long"},
  };
  for (const auto& [raw, want] : cases) {
    auto got = NormalizeEntryName(raw);
    ASSERT_FALSE(got.ok()) << raw;
    EXPECT_EQ(got.status().code(), StatusCode::kCorruption);
    EXPECT_THAT(got.status().message(), HasSubstr(want)) << raw;
  }
  EXPECT_TRUE(NormalizeEntryName(std::string(255, 'n')).ok());
}

TEST(IsNormalizedName, RejectsEveryNonCanonicalSpelling) {
  for (const char* name : {"./a", "/a", "a/", "a//b", "a/./b", "", "..", "./"}) {
    EXPECT_FALSE(IsNormalizedName(name)) << name;
  }
  for (const char* name : {"a", "a/b", ".", ".hidden/x"}) EXPECT_TRUE(IsNormalizedName(name)) << name;
}

// ---- TOC validation ----------------------------------------------------------------------------

v1::Entry* AddEntry(v1::Toc& toc, const std::string& name, v1::EntryType type) {
  v1::Entry* e = toc.add_entries();
  e->set_name(name);
  e->set_type(type);
  e->set_mode(0755);
  return e;
}

// A valid TOC: 2 chunks (64 KiB + 1000 bytes) and one of every entry type.
v1::Toc ValidProto() {
  v1::Toc toc;
  toc.set_version(kTocVersion);
  toc.set_target_chunk_size(64 * 1024);
  v1::Chunk* c0 = toc.add_chunks();
  c0->set_payload_size(5000);
  c0->set_raw_size(64 * 1024);
  c0->set_record_sha256(std::string(32, '\x10'));
  v1::Chunk* c1 = toc.add_chunks();
  c1->set_payload_size(1000);
  c1->set_raw_size(1000);
  c1->set_stored(true);
  c1->set_record_sha256(std::string(32, '\x11'));
  toc.set_tar_size(64 * 1024 + 1000);
  toc.set_tar_sha256(std::string(32, '\x42'));
  AddEntry(toc, ".", v1::ENTRY_TYPE_DIRECTORY);
  v1::Entry* file = AddEntry(toc, "dir/file", v1::ENTRY_TYPE_REGULAR);
  file->set_size(60000);
  file->set_data_offset(1024);
  file->set_uid(3000000);
  file->set_gid(4000000);
  file->set_uname("user");
  file->set_mtime_sec(-5);
  file->set_mtime_nsec(999999999);
  v1::Xattr* x1 = file->add_xattrs();
  x1->set_name("security.capability");
  x1->set_value(std::string("\x01\x00\x00\x02", 4));
  v1::Xattr* x2 = file->add_xattrs();
  x2->set_name("user.comment");
  x2->set_value("hi");
  AddEntry(toc, "dir/hard", v1::ENTRY_TYPE_HARDLINK)->set_link_target("dir/file");
  AddEntry(toc, "dir/sym", v1::ENTRY_TYPE_SYMLINK)->set_link_target("../anything/at/all");
  v1::Entry* chr = AddEntry(toc, "dev/null", v1::ENTRY_TYPE_CHAR_DEVICE);
  chr->set_dev_major(1);
  chr->set_dev_minor(3);
  AddEntry(toc, "dev/loop0", v1::ENTRY_TYPE_BLOCK_DEVICE)->set_dev_major(7);
  AddEntry(toc, "fifo", v1::ENTRY_TYPE_FIFO);
  AddEntry(toc, "whiteouts/.wh.gone", v1::ENTRY_TYPE_REGULAR)->set_data_offset(0);
  return toc;
}

std::vector<uint8_t> Serialize(const v1::Toc& toc) {
  std::string s = toc.SerializeAsString();
  return {s.begin(), s.end()};
}

TEST(ParseToc, AcceptsValidTocAndDerivesOffsets) {
  auto toc = ParseToc(Serialize(ValidProto()));
  ASSERT_TRUE(toc.ok()) << toc.status().ToString();
  ASSERT_EQ(toc->chunks.size(), 2u);
  EXPECT_EQ(toc->chunks[0].blob_offset, kBlobHeaderSize);
  EXPECT_EQ(toc->chunks[0].tar_offset, 0u);
  EXPECT_FALSE(toc->chunks[0].last);
  EXPECT_EQ(toc->chunks[1].blob_offset, kBlobHeaderSize + 12 + 5000 + 16);
  EXPECT_EQ(toc->chunks[1].tar_offset, 64u * 1024);
  EXPECT_TRUE(toc->chunks[1].last);
  EXPECT_TRUE(toc->chunks[1].stored);
  EXPECT_EQ(toc->records_end(), kBlobHeaderSize + (12 + 5000 + 16) + (12 + 1000 + 16));
  EXPECT_EQ(toc->tar_size, 64u * 1024 + 1000);
  EXPECT_EQ(toc->diff_id[0], 0x42);
  EXPECT_EQ(toc->chunks[0].record_sha256[0], 0x10);
  EXPECT_EQ(toc->chunks[1].record_sha256[31], 0x11);
  ASSERT_EQ(toc->entries.size(), 8u);
  const Entry& f = toc->entries[1];
  EXPECT_EQ(f.name, "dir/file");
  EXPECT_EQ(f.type, EntryType::kRegular);
  EXPECT_EQ(f.uid, 3000000u);
  EXPECT_EQ(f.mtime_sec, -5);
  EXPECT_EQ(f.mtime_nsec, 999999999u);
  EXPECT_EQ(f.xattrs.at("security.capability"), std::string("\x01\x00\x00\x02", 4));
  EXPECT_EQ(toc->entries[4].dev_minor, 3u);
}

// Applies `mutate` to a valid TOC and expects ParseToc to fail with `want` in the message.
void ExpectRejected(const std::function<void(v1::Toc&)>& mutate, const std::string& want) {
  v1::Toc proto = ValidProto();
  mutate(proto);
  auto toc = ParseToc(Serialize(proto));
  ASSERT_FALSE(toc.ok()) << "accepted; wanted: " << want;
  EXPECT_EQ(toc.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(toc.status().message(), HasSubstr(want));
}

TEST(ParseToc, RejectsBadHeaderFields) {
  ExpectRejected([](v1::Toc& t) { t.set_version(3); }, "version 3");
  ExpectRejected([](v1::Toc& t) { t.set_version(0); }, "version 0");
  ExpectRejected([](v1::Toc& t) { t.set_target_chunk_size(1000); }, "target chunk size");
  ExpectRejected([](v1::Toc& t) { t.set_target_chunk_size(32u << 20); }, "target chunk size");
  ExpectRejected([](v1::Toc& t) { t.set_tar_sha256("short"); }, "SHA-256");
}

TEST(ParseToc, RejectsBadChunkTables) {
  ExpectRejected([](v1::Toc& t) { t.clear_chunks(); }, "chunk count 0");
  ExpectRejected([](v1::Toc& t) { t.mutable_chunks(1)->set_raw_size(0); }, "raw size 0");
  ExpectRejected([](v1::Toc& t) { t.mutable_chunks(0)->set_raw_size(64 * 1024 + 1); },
                 "raw size 65537");
  ExpectRejected([](v1::Toc& t) { t.mutable_chunks(1)->set_payload_size(999); }, "stored");
  ExpectRejected([](v1::Toc& t) { t.mutable_chunks(0)->set_payload_size(0); }, "compressed");
  ExpectRejected([](v1::Toc& t) { t.mutable_chunks(0)->set_payload_size(1u << 30); }, "compressed");
  ExpectRejected([](v1::Toc& t) { t.set_tar_size(t.tar_size() + 1); }, "raw bytes but");
}

// TOC version 2 pins every record (FORMAT.md §4); a version 1 TOC has no pins and is refused.
TEST(ParseToc, RequiresOneRecordDigestPerChunk) {
  ExpectRejected([](v1::Toc& t) { t.set_version(1); },
                 "TOC has no chunk digests (written by an older lazycrypt); re-encrypt the image");
  ExpectRejected([](v1::Toc& t) { t.mutable_chunks(1)->clear_record_sha256(); },
                 "TOC chunk 1: record digest is 0 bytes, need 32");
  ExpectRejected([](v1::Toc& t) { t.mutable_chunks(0)->set_record_sha256(std::string(31, 'x')); },
                 "TOC chunk 0: record digest is 31 bytes, need 32");
  ExpectRejected([](v1::Toc& t) { t.mutable_chunks(0)->set_record_sha256(std::string(33, 'x')); },
                 "record digest is 33 bytes");
}

TEST(ParseToc, RejectsBadEntries) {
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(1)->set_name("./dir/file"); }, "normalized");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(1)->set_name("dir/../x"); }, "'..'");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(1)->set_name(""); }, "empty");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(1)->set_name(std::string("a\0b", 3)); },
                 "NUL");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(1)->set_type(v1::ENTRY_TYPE_UNSPECIFIED); },
                 "type 0");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(1)->set_type(static_cast<v1::EntryType>(99)); },
                 "type 99");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(0)->set_type(v1::ENTRY_TYPE_REGULAR); },
                 "root '.'");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(1)->set_mode(010000); }, "mode");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(1)->set_mtime_nsec(1000000000); }, "nanosec");
  // Data ranges outside the tar stream, including an overflowing one.
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(1)->set_size(70000); }, "outside");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(1)->set_data_offset(UINT64_MAX); }, "outside");
  ExpectRejected(
      [](v1::Toc& t) {
        t.mutable_entries(1)->set_data_offset(16);
        t.mutable_entries(1)->set_size(UINT64_MAX - 8);
      },
      "outside");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(0)->set_size(1); }, "only regular files");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(6)->set_data_offset(5); }, "only regular files");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(3)->clear_link_target(); }, "symlink target");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(1)->set_link_target("x"); }, "link target");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(6)->set_dev_major(1); }, "device numbers");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(1)->set_uname(std::string(5000, 'u')); },
                 "user or group name");
}

TEST(ParseToc, RejectsBadHardlinks) {
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(2)->set_link_target("fifo"); },
                 "not an earlier entry");  // fifo comes later
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(2)->set_link_target("nowhere"); },
                 "not an earlier entry");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(2)->set_link_target("."); }, "hardlink target");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(2)->set_link_target("./dir/file"); },
                 "hardlink target");
  ExpectRejected(
      [](v1::Toc& t) {
        AddEntry(t, "dir", v1::ENTRY_TYPE_DIRECTORY);
        AddEntry(t, "link-to-dir", v1::ENTRY_TYPE_HARDLINK)->set_link_target("dir");
      },
      "is a directory");
}

TEST(ParseToc, RejectsBadXattrs) {
  ExpectRejected([](v1::Toc& t) { std::swap(*t.mutable_entries(1)->mutable_xattrs(0),
                                            *t.mutable_entries(1)->mutable_xattrs(1)); },
                 "sorted");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(1)->mutable_xattrs(1)->set_name(
                                      "security.capability"); },
                 "unique");
  ExpectRejected([](v1::Toc& t) { t.mutable_entries(1)->mutable_xattrs(0)->set_name(""); },
                 "xattr name");
  ExpectRejected([](v1::Toc& t) {
                   t.mutable_entries(1)->mutable_xattrs(1)->set_value(std::string(65537, 'v'));
                 },
                 "xattr value");
}

TEST(ParseToc, ErrorsDoNotContainEntryNames) {
  v1::Toc proto = ValidProto();
  AddEntry(proto, "top-secret-project/plan.txt", v1::ENTRY_TYPE_REGULAR)->set_mode(077777);
  auto toc = ParseToc(Serialize(proto));
  ASSERT_FALSE(toc.ok());
  EXPECT_THAT(toc.status().message(), HasSubstr("TOC entry 8"));
  EXPECT_THAT(toc.status().message(), Not(HasSubstr("top-secret")));
}

TEST(ParseToc, RejectsGarbageAndAllowsDuplicateNames) {
  std::vector<uint8_t> garbage = {0xff, 0xff, 0xff, 0xff, 0x0f};
  EXPECT_EQ(ParseToc(garbage).status().code(), StatusCode::kCorruption);
  EXPECT_THAT(ParseToc(garbage).status().message(), HasSubstr("TOC: unknown field"));
  garbage = {0x2a, 0x05, 0x01};  // tar_sha256 (bytes), longer than the input
  EXPECT_THAT(ParseToc(garbage).status().message(), HasSubstr("protobuf does not parse"));
  v1::Toc proto = ValidProto();
  AddEntry(proto, "fifo", v1::ENTRY_TYPE_FIFO);  // a later entry replaces an earlier one
  EXPECT_TRUE(ParseToc(Serialize(proto)).ok());
}

// ---- Prefetch marks -----------------------------------------------------------------------------

TEST(ParseToc, AcceptsPrefetchMarksOfRegularFiles) {
  v1::Toc proto = ValidProto();
  proto.add_prefetch(1);  // dir/file
  proto.add_prefetch(7);  // whiteouts/.wh.gone (an empty regular file is still a regular file)
  auto toc = ParseToc(Serialize(proto));
  ASSERT_TRUE(toc.ok()) << toc.status().ToString();
  EXPECT_EQ(toc->prefetch, (std::vector<uint32_t>{1, 7}));
}

TEST(ParseToc, TocWithoutPrefetchFieldHasNoMarks) {
  // A TOC written before the field existed: proto3 leaves it absent on the wire.
  v1::Toc proto = ValidProto();
  std::vector<uint8_t> bytes = Serialize(proto);
  auto toc = ParseToc(bytes);
  ASSERT_TRUE(toc.ok()) << toc.status().ToString();
  EXPECT_TRUE(toc->prefetch.empty());
  proto.add_prefetch(1);
  EXPECT_GT(Serialize(proto).size(), bytes.size());  // the field does change the bytes
}

TEST(ParseToc, RejectsBadPrefetchMarks) {
  ExpectRejected([](v1::Toc& t) { t.add_prefetch(8); }, "prefetch mark 0: entry index 8 is outside");
  ExpectRejected([](v1::Toc& t) { t.add_prefetch(UINT32_MAX); }, "is outside the 8 entries");
  ExpectRejected([](v1::Toc& t) { t.add_prefetch(7); t.add_prefetch(1); },
                 "prefetch mark 1: entry index 1 is not greater than the previous mark's 7");
  ExpectRejected([](v1::Toc& t) { t.add_prefetch(1); t.add_prefetch(1); }, "strictly increasing");
  ExpectRejected([](v1::Toc& t) { t.add_prefetch(0); }, "entry 0 is a directory, not a regular");
  ExpectRejected([](v1::Toc& t) { t.add_prefetch(1); t.add_prefetch(2); },
                 "prefetch mark 1: entry 2 is a hardlink");
  ExpectRejected([](v1::Toc& t) { t.add_prefetch(3); }, "symlink");
  ExpectRejected([](v1::Toc& t) { t.add_prefetch(4); }, "character device");
  ExpectRejected([](v1::Toc& t) { t.add_prefetch(6); }, "fifo");
  ExpectRejected(
      [](v1::Toc& t) {
        for (uint32_t i = 0; i < 9; ++i) t.add_prefetch(i);
      },
      "9 prefetch marks for 8 entries");
}

TEST(ParseToc, PrefetchErrorsDoNotContainEntryNames) {
  v1::Toc proto = ValidProto();
  AddEntry(proto, "top-secret-dir", v1::ENTRY_TYPE_DIRECTORY);
  proto.add_prefetch(8);
  auto toc = ParseToc(Serialize(proto));
  ASSERT_FALSE(toc.ok());
  EXPECT_THAT(toc.status().message(), HasSubstr("entry 8 is a directory"));
  EXPECT_THAT(toc.status().message(), Not(HasSubstr("top-secret")));
  // The writer's self-check names it.
  auto named = TocFromProto(proto, /*name_entries_in_errors=*/true);
  ASSERT_FALSE(named.ok());
  EXPECT_THAT(named.status().message(), HasSubstr("'top-secret-dir'"));
}

TEST(ParseToc, FuzzSeedWithPrefetchMarksParses) {
  // format/fuzz_corpus/toc/serialized-3-prefetch: byte 0 selects ParseToc, then serialized-1's
  // TOC with prefetch = [1, 7] appended (field 7, packed).
  std::string seed = lazycrypt::testing::ReadFileString(
      lazycrypt::testing::SourceDir() / "format/fuzz_corpus/toc/serialized-3-prefetch");
  ASSERT_GT(seed.size(), 5u);
  auto toc = ParseToc(AsBytes(std::string_view(seed).substr(1)));
  ASSERT_TRUE(toc.ok()) << toc.status().ToString();
  EXPECT_EQ(toc->prefetch, (std::vector<uint32_t>{1, 7}));
}

// ---- Plaintext envelope ------------------------------------------------------------------------

TEST(TocPlaintext, RoundTrips) {
  std::vector<uint8_t> serialized = Serialize(ValidProto());
  auto plaintext = EncodeTocPlaintext(serialized, 3);
  ASSERT_TRUE(plaintext.ok()) << plaintext.status().ToString();
  EXPECT_EQ(LoadLe64(plaintext->data()), serialized.size());
  auto toc = DecodeTocPlaintext(*plaintext);
  ASSERT_TRUE(toc.ok()) << toc.status().ToString();
  EXPECT_EQ(toc->entries.size(), 8u);
}

TEST(TocPlaintext, RejectsHugeClaimedSizeBeforeAllocating) {
  std::vector<uint8_t> plaintext(8 + 16, 0);
  StoreLe64(plaintext.data(), uint64_t{1} << 40);  // 1 TiB
  auto toc = DecodeTocPlaintext(plaintext);
  ASSERT_FALSE(toc.ok());
  EXPECT_THAT(toc.status().message(), HasSubstr("claims 1099511627776 bytes"));
}

TEST(TocPlaintext, RejectsWrongSizeTruncatedFrameAndShortInput) {
  std::vector<uint8_t> serialized = Serialize(ValidProto());
  auto plaintext = EncodeTocPlaintext(serialized, 3);
  ASSERT_TRUE(plaintext.ok());
  std::vector<uint8_t> wrong_size = *plaintext;
  StoreLe64(wrong_size.data(), serialized.size() + 1);
  EXPECT_EQ(DecodeTocPlaintext(wrong_size).status().code(), StatusCode::kCorruption);
  std::vector<uint8_t> truncated(plaintext->begin(), plaintext->end() - 1);
  EXPECT_EQ(DecodeTocPlaintext(truncated).status().code(), StatusCode::kCorruption);
  std::vector<uint8_t> trailing = *plaintext;
  trailing.push_back(0);
  EXPECT_EQ(DecodeTocPlaintext(trailing).status().code(), StatusCode::kCorruption);
  EXPECT_THAT(DecodeTocPlaintext(ByteSpan(plaintext->data(), 7)).status().message(),
              HasSubstr("size prefix"));
}

}  // namespace
}  // namespace lazycrypt::format
