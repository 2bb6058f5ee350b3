// OpenRegistryBlobSource over a mocked registry::Client: single reads go through OpenBlob's
// source, multi-range reads through one GetBlobRanges call, and malformed answers are errors.
#include "cache/registry_source.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace lazycrypt::cache {
namespace {

using ::testing::_;
using ::testing::ElementsAre;
using ::testing::Return;

class MockClient : public registry::Client {
 public:
  MOCK_METHOD(Result<registry::Manifest>, GetManifest, (const registry::Reference&), (override));
  MOCK_METHOD(Result<std::string>, PutManifest,
              (const registry::Reference&, ByteSpan, std::string_view), (override));
  MOCK_METHOD(Result<uint64_t>, StatBlob, (const registry::Reference&, std::string_view),
              (override));
  MOCK_METHOD(Status, GetBlob, (const registry::Reference&, std::string_view, OutputStream&),
              (override));
  MOCK_METHOD(Result<std::vector<uint8_t>>, GetBlobRange,
              (const registry::Reference&, std::string_view, uint64_t, uint64_t), (override));
  MOCK_METHOD(Result<std::vector<std::vector<uint8_t>>>, GetBlobRanges,
              (const registry::Reference&, std::string_view, std::span<const registry::ByteRange>),
              (override));
  MOCK_METHOD(Result<std::unique_ptr<BlobSource>>, OpenBlob,
              (const registry::Reference&, std::string_view, uint64_t), (override));
  MOCK_METHOD(Status, PushBlob,
              (const registry::Reference&, std::string_view, BlobSource&, std::string_view),
              (override));
  MOCK_METHOD(Result<bool>, MountBlob,
              (const registry::Reference&, std::string_view, std::string_view), (override));
  MOCK_METHOD(Result<std::unique_ptr<registry::BlobUpload>>, StartUpload,
              (const registry::Reference&), (override));
};

std::vector<uint8_t> Blob() {
  std::vector<uint8_t> b(1000);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7 + 3);
  return b;
}

registry::Reference Repo() { return {"127.0.0.1:5000", "team/app", "", ""}; }
const std::string kDigest = "sha256:" + std::string(64, 'a');

std::unique_ptr<MultiRangeBlobSource> OpenWithMock(MockClient& client) {
  EXPECT_CALL(client, OpenBlob(_, std::string_view(kDigest), 0))
      .WillOnce([](const registry::Reference&, std::string_view, uint64_t) {
        return Result<std::unique_ptr<BlobSource>>(std::make_unique<MemoryBlobSource>(Blob()));
      });
  auto src = OpenRegistryBlobSource(client, Repo(), kDigest);
  EXPECT_TRUE(src.ok()) << src.status().ToString();
  return src.ok() ? std::move(*src) : nullptr;
}

TEST(RegistryBlobSource, ReadAtUsesTheClientsBlobSource) {
  MockClient client;
  auto src = OpenWithMock(client);
  ASSERT_TRUE(src);
  EXPECT_EQ(src->size(), 1000u);
  std::vector<uint8_t> out(10);
  ASSERT_TRUE(src->ReadAt(100, out).ok());
  EXPECT_TRUE(std::equal(out.begin(), out.end(), Blob().begin() + 100));
}

TEST(RegistryBlobSource, SeveralRangesAreOneGetBlobRangesCall) {
  MockClient client;
  auto src = OpenWithMock(client);
  ASSERT_TRUE(src);
  EXPECT_CALL(client, GetBlobRanges(_, std::string_view(kDigest), _))
      .WillOnce([](const registry::Reference& repo, std::string_view,
                   std::span<const registry::ByteRange> ranges) {
        EXPECT_EQ(repo.repository, "team/app");
        std::vector<std::vector<uint8_t>> parts;
        auto blob = Blob();
        for (const auto& r : ranges) {
          parts.emplace_back(blob.begin() + r.offset, blob.begin() + r.offset + r.length);
        }
        EXPECT_EQ(ranges.size(), 3u);
        return Result<std::vector<std::vector<uint8_t>>>(std::move(parts));
      });
  std::vector<uint8_t> a(10), b(20), c(5);
  std::vector<RangeRead> ranges = {{0, a}, {300, b}, {995, c}};
  ASSERT_TRUE(src->ReadRanges(ranges).ok());
  auto blob = Blob();
  EXPECT_TRUE(std::equal(a.begin(), a.end(), blob.begin()));
  EXPECT_TRUE(std::equal(b.begin(), b.end(), blob.begin() + 300));
  EXPECT_TRUE(std::equal(c.begin(), c.end(), blob.begin() + 995));
}

TEST(RegistryBlobSource, MalformedAnswersAndBadRangesAreErrors) {
  MockClient client;
  auto src = OpenWithMock(client);
  ASSERT_TRUE(src);
  std::vector<uint8_t> a(10), b(20);
  std::vector<RangeRead> ranges = {{0, a}, {300, b}};
  EXPECT_CALL(client, GetBlobRanges(_, _, _))
      .WillOnce(Return(Result<std::vector<std::vector<uint8_t>>>(
          std::vector<std::vector<uint8_t>>{std::vector<uint8_t>(10)})))
      .WillOnce(Return(Result<std::vector<std::vector<uint8_t>>>(
          std::vector<std::vector<uint8_t>>{std::vector<uint8_t>(10), std::vector<uint8_t>(19)})))
      .WillOnce(Return(Result<std::vector<std::vector<uint8_t>>>(
          Status::Unavailable("registry down"))));
  EXPECT_EQ(src->ReadRanges(ranges).code(), StatusCode::kCorruption);  // too few parts
  EXPECT_EQ(src->ReadRanges(ranges).code(), StatusCode::kCorruption);  // short part
  EXPECT_EQ(src->ReadRanges(ranges).code(), StatusCode::kUnavailable);
  // Past the end: refused before asking.
  std::vector<RangeRead> past = {{0, a}, {995, b}};
  EXPECT_EQ(src->ReadRanges(past).code(), StatusCode::kCorruption);
}

TEST(RegistryBlobSource, OpenBlobFailurePropagates) {
  MockClient client;
  EXPECT_CALL(client, OpenBlob(_, _, 42))
      .WillOnce(Return(Result<std::unique_ptr<BlobSource>>(Status::NotFound("no such blob"))));
  auto src = OpenRegistryBlobSource(client, Repo(), kDigest, 42);
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace lazycrypt::cache
