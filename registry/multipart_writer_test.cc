// MultipartRangeWriter: a multipart/byteranges answer written straight into the caller's buffers
// whatever way the network cuts it, parts in any order or coalesced, and hostile framing.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "registry/registry.h"

namespace lazycrypt::registry {
namespace {

std::string Blob() {
  std::string b;
  for (int i = 0; i < 5000; ++i) b += static_cast<char>('a' + (i * 7 + i / 13) % 26);
  return b;
}

std::string Part(const std::string& blob, uint64_t first, uint64_t last) {
  return "--XYZ\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes " +
         std::to_string(first) + "-" + std::to_string(last) + "/" + std::to_string(blob.size()) +
         "\r\n\r\n" + blob.substr(first, last - first + 1) + "\r\n";
}

struct Targets {
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<RangeInto> into;
  Targets(std::initializer_list<std::pair<uint64_t, uint64_t>> ranges) {  // (offset, length)
    for (auto [o, n] : ranges) bufs.emplace_back(n, 0);
    size_t i = 0;
    for (auto [o, n] : ranges) into.push_back({o, bufs[i++]});
  }
  std::string Got(size_t i) const { return std::string(bufs[i].begin(), bufs[i].end()); }
};

// Feeds `body` in pieces of random sizes (1 byte .. max_piece).
Status FeedInPieces(MultipartRangeWriter& w, const std::string& body, size_t max_piece,
                    uint32_t seed) {
  std::mt19937 rng(seed);
  size_t at = 0;
  while (at < body.size()) {
    const size_t n = std::min(body.size() - at, 1 + rng() % max_piece);
    LC_RETURN_IF_ERROR(w.Feed(AsBytes(std::string_view(body).substr(at, n))));
    at += n;
  }
  return Status::Ok();
}

TEST(MultipartRangeWriter, FillsEveryTargetHoweverTheBodyIsCut) {
  const std::string blob = Blob();
  const std::string body = "preamble --XY not it\r\n" + Part(blob, 10, 109) +
                           Part(blob, 1000, 2999) + Part(blob, 4000, 4001) + "--XYZ--\r\nepilogue";
  for (size_t max_piece : {size_t{1}, size_t{2}, size_t{7}, size_t{64}, size_t{100000}}) {
    for (uint32_t seed = 0; seed < 5; ++seed) {
      Targets t{{10, 100}, {1000, 2000}, {4000, 2}};
      MultipartRangeWriter w("XYZ", t.into);
      ASSERT_TRUE(FeedInPieces(w, body, max_piece, seed).ok()) << max_piece;
      ASSERT_TRUE(w.Finish().ok());
      for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(w.complete(i)) << i;
      EXPECT_EQ(t.Got(0), blob.substr(10, 100));
      EXPECT_EQ(t.Got(1), blob.substr(1000, 2000));
      EXPECT_EQ(t.Got(2), blob.substr(4000, 2));
    }
  }
}

TEST(MultipartRangeWriter, PartsInAnyOrderAndCoalescedParts) {
  const std::string blob = Blob();
  // One part covers the first two targets (a server may merge close ranges), then the first
  // target comes again (ignored), the last target in two parts.
  const std::string body = Part(blob, 3000, 3099) + Part(blob, 0, 299) + Part(blob, 0, 9) +
                           Part(blob, 3100, 3199) + "--XYZ--";
  Targets t{{0, 100}, {200, 100}, {3000, 200}};
  MultipartRangeWriter w("XYZ", t.into);
  ASSERT_TRUE(FeedInPieces(w, body, 33, 1).ok());
  ASSERT_TRUE(w.Finish().ok());
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(w.complete(i)) << i;
  EXPECT_EQ(t.Got(0), blob.substr(0, 100));
  EXPECT_EQ(t.Got(1), blob.substr(200, 100));
  EXPECT_EQ(t.Got(2), blob.substr(3000, 200));
}

TEST(MultipartRangeWriter, MissingOrGappedBytesLeaveTheTargetIncomplete) {
  const std::string blob = Blob();
  // Target 0: its middle never comes (a gap: the later bytes are not taken). Target 1: absent.
  const std::string body = Part(blob, 0, 49) + Part(blob, 60, 99) + "--XYZ--";
  Targets t{{0, 100}, {500, 10}};
  MultipartRangeWriter w("XYZ", t.into);
  ASSERT_TRUE(w.Feed(AsBytes(body)).ok());
  ASSERT_TRUE(w.Finish().ok());
  EXPECT_FALSE(w.complete(0));
  EXPECT_FALSE(w.complete(1));
}

TEST(MultipartRangeWriter, SingleRangeBodyThroughWriteAt) {
  const std::string blob = Blob();
  Targets t{{100, 50}, {400, 50}};
  MultipartRangeWriter w("", t.into);
  // A 200 with the whole blob, in pieces.
  for (size_t at = 0; at < blob.size(); at += 37) {
    w.WriteAt(at, AsBytes(std::string_view(blob).substr(at, 37)));
  }
  EXPECT_TRUE(w.complete(0));
  EXPECT_TRUE(w.complete(1));
  EXPECT_EQ(t.Got(1), blob.substr(400, 50));
}

TEST(MultipartRangeWriter, HostileFramingIsCorruptionNamingThePart) {
  const std::string blob = Blob();
  struct Case {
    std::string body;
    std::string error;  // in Feed, or in Finish when it ends
  };
  const std::vector<Case> cases = {
      {Part(blob, 0, 9) + "--XYZ\r\nContent-Type: x\r\n\r\n0123", "part 1 has no Content-Range"},
      {"--XYZ\r\nContent-Range: bytes 9-3/5000\r\n\r\n", "part 0: malformed Content-Range"},
      {"--XYZ\r\n" + std::string(20000, 'h'), "part 0: headers longer than 16 KiB"},
      {"--XYZ junk\r\n", "part 0: no CRLF after the boundary"},
      {"--XYZ\r\nContent-Range: bytes 0-9/5000\r\n\r\n0123456789XX--XYZ--", "part 0 is not followed"},
      {Part(blob, 0, 9), "ends inside part 0"},
      {"no boundary at all", "boundary not found"},
  };
  for (const Case& c : cases) {
    Targets t{{0, 10}};
    MultipartRangeWriter w("XYZ", t.into);
    Status s = w.Feed(AsBytes(c.body));
    if (s.ok()) s = w.Finish();
    ASSERT_FALSE(s.ok()) << c.body.substr(0, 60);
    EXPECT_EQ(s.code(), StatusCode::kCorruption);
    EXPECT_NE(s.message().find(c.error), std::string::npos) << s.ToString();
  }
}

}  // namespace
}  // namespace lazycrypt::registry
