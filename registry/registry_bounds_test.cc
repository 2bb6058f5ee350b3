// Size and nesting bounds of the registry client against scripted hostile servers: what the
// client buffers is capped by what it asked for, never by what the server chooses to send.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "crypto/digest.h"
#include "registry/registry.h"
#include "tests/harness/fake_http_server.h"

namespace lazycrypt::registry {
namespace {

using harness::FakeHttpServer;
using harness::FakeRequest;
using harness::FakeResponse;
using ::testing::HasSubstr;

ClientOptions FakeOptions() {
  ClientOptions o;
  o.plain_http = true;
  o.auth_files = {"/nonexistent/lc-registry-bounds-test/config.json"};
  o.initial_backoff = std::chrono::milliseconds(5);
  o.max_backoff = std::chrono::milliseconds(20);
  o.request_timeout = std::chrono::seconds(20);
  return o;
}

std::string Digest(std::string_view s) { return crypto::OciDigest(crypto::Sha256::Of(AsBytes(s))); }

std::string PatternBlob(size_t size) {
  std::string b(size, '\0');
  for (size_t i = 0; i < size; ++i) b[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
  return b;
}

constexpr uint64_t kMiB = 1u << 20;

// A server that ignores Range and answers every GET with the whole 64 MiB blob (200). The
// multi-range request is cut off as soon as the body passes what two small ranges can need;
// the per-range fallback keeps only the bytes it asked for.
TEST(RegistryBounds, WholeBlob200ToMultiRangeIsCutOffNotBuffered) {
  const std::string blob = PatternBlob(64 * kMiB);
  auto s = FakeHttpServer::Start([&](const FakeRequest&) -> FakeResponse { return {200, {}, blob}; });
  ASSERT_TRUE(s.ok());
  auto c = Client::Create(FakeOptions());
  ASSERT_TRUE(c.ok());
  std::vector<ByteRange> ranges = {{3, 4}, {5000, 100}};
  auto m = (*c)->GetBlobRanges(*Reference::Parse((*s)->host() + "/app"), Digest("x"), ranges);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(std::string((*m)[0].begin(), (*m)[0].end()), blob.substr(3, 4));
  EXPECT_EQ(std::string((*m)[1].begin(), (*m)[1].end()), blob.substr(5000, 100));
  // Three requests (the multi-range one, then one per range), each stopped early: far less than
  // one whole blob came in (libcurl hands over at most 16 KiB... per callback; allow slack).
  EXPECT_EQ((*s)->Requests().size(), 3u);
  EXPECT_LT((*c)->BodyBytesReceived(), 1 * kMiB);
}

// A 206 multipart answer whose parts carry far more than was asked (a padded part) is cut off
// the same way.
TEST(RegistryBounds, OversizedMultipartAnswerIsCutOff) {
  const std::string blob = PatternBlob(16 * kMiB);
  auto s = FakeHttpServer::Start([&](const FakeRequest& r) -> FakeResponse {
    if (r.Header("Range").find(',') != std::string::npos) {
      std::string body = "--b\r\nContent-Range: bytes 0-" + std::to_string(blob.size() - 1) + "/" +
                         std::to_string(blob.size()) + "\r\n\r\n" + blob + "\r\n--b--\r\n";
      return {206, {{"Content-Type", "multipart/byteranges; boundary=b"}}, body};
    }
    return {200, {}, blob};
  });
  ASSERT_TRUE(s.ok());
  auto c = Client::Create(FakeOptions());
  ASSERT_TRUE(c.ok());
  std::vector<ByteRange> ranges = {{10, 10}, {100, 10}};
  auto m = (*c)->GetBlobRanges(*Reference::Parse((*s)->host() + "/app"), Digest("x"), ranges);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(std::string((*m)[1].begin(), (*m)[1].end()), blob.substr(100, 10));
  EXPECT_LT((*c)->BodyBytesReceived(), 1 * kMiB);
}

TEST(RegistryBounds, OversizedManifestIsRefusedNamingTheLimit) {
  const std::string huge = "{\"schemaVersion\":2,\"x\":\"" + std::string(5 * kMiB, 'a') + "\"}";
  auto s = FakeHttpServer::Start([&](const FakeRequest&) -> FakeResponse {
    return {200, {{"Content-Type", "application/vnd.oci.image.manifest.v1+json"}}, huge};
  });
  ASSERT_TRUE(s.ok());
  auto c = Client::Create(FakeOptions());
  ASSERT_TRUE(c.ok());
  auto m = (*c)->GetManifest(*Reference::Parse((*s)->host() + "/app:latest"));
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr("exceeds the limit of 4194304 bytes"));
  EXPECT_EQ((*s)->Requests().size(), 1u);  // not retried
  EXPECT_LT((*c)->BodyBytesReceived(), 5 * kMiB);
}

TEST(RegistryBounds, OversizedOrDeepTokenAnswerIsRefused) {
  std::string token_body;
  std::unique_ptr<FakeHttpServer> server;
  auto s = FakeHttpServer::Start([&](const FakeRequest& r) -> FakeResponse {
    if (r.Path() == "/token") return {200, {}, token_body};
    return {401, {{"WWW-Authenticate", "Bearer realm=\"" + server->url() + "/token\",service=\"f\""}}, ""};
  });
  ASSERT_TRUE(s.ok());
  server = std::move(*s);
  auto ref = *Reference::Parse(server->host() + "/app:latest");

  token_body = "{\"token\":\"" + std::string(2 * kMiB, 't') + "\"}";
  auto c = Client::Create(FakeOptions());
  ASSERT_TRUE(c.ok());
  auto m = (*c)->GetManifest(ref);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr("exceeds the limit of 1048576 bytes"));

  token_body = std::string(100000, '[');
  auto c2 = Client::Create(FakeOptions());
  ASSERT_TRUE(c2.ok());
  auto m2 = (*c2)->GetManifest(ref);
  ASSERT_FALSE(m2.ok());
  EXPECT_THAT(m2.status().message(), HasSubstr("JSON nested deeper than 64 levels"));
}

// Found by registry_fuzz: a 250-character one-component name on docker.io parsed, but its
// normalized form (with "library/") did not.
TEST(RegistryBounds, RepositoryLengthCountsTheLibraryPrefix) {
  EXPECT_FALSE(Reference::Parse(std::string(250, 'a')).ok());
  auto fits = Reference::Parse(std::string(247, 'a'));
  ASSERT_TRUE(fits.ok());
  EXPECT_EQ(fits->repository.size(), 255u);
  EXPECT_TRUE(Reference::Parse(fits->ToString()).ok());
  EXPECT_TRUE(Reference::Parse("registry.example:5000/" + std::string(255, 'a')).ok());
}

TEST(RegistryBounds, TokenResponseParser) {
  EXPECT_EQ(*ParseTokenResponse(R"({"token":"a","access_token":"b"})"), "a");
  EXPECT_EQ(*ParseTokenResponse(R"({"access_token":"b"})"), "b");
  EXPECT_FALSE(ParseTokenResponse("[]").ok());
  EXPECT_FALSE(ParseTokenResponse("{").ok());
  EXPECT_THAT(ParseTokenResponse(std::string(100000, '[')).status().message(), HasSubstr("deeper than"));
}

}  // namespace
}  // namespace lazycrypt::registry
