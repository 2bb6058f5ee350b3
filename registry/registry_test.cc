// Unit tests for the parsers of the registry client (no network): references, WWW-Authenticate,
// multipart/byteranges, docker config.json credentials, containerd hosts.toml.
#include <gtest/gtest.h>

#include <atomic>

#include "crypto/digest.h"
#include "keywrap/base64.h"
#include "registry/registry.h"
#include "tests/harness/fake_http_server.h"

namespace lazycrypt::registry {
namespace {

const std::string kDigest = "sha256:" + std::string(64, 'a');

TEST(Reference, DockerHubDefaults) {
  auto r = Reference::Parse("busybox");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->registry, "docker.io");
  EXPECT_EQ(r->repository, "library/busybox");
  EXPECT_EQ(r->tag, "latest");
  EXPECT_EQ(r->digest, "");
  EXPECT_EQ(r->ToString(), "docker.io/library/busybox:latest");

  auto u = Reference::Parse("someone/app:1.2");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->registry, "docker.io");
  EXPECT_EQ(u->repository, "someone/app");
  EXPECT_EQ(u->tag, "1.2");

  auto idx = Reference::Parse("index.docker.io/alpine");
  ASSERT_TRUE(idx.ok());
  EXPECT_EQ(idx->registry, "docker.io");
  EXPECT_EQ(idx->repository, "library/alpine");
}

TEST(Reference, HostPortTagAndDigest) {
  auto r = Reference::Parse("127.0.0.1:5000/team/app:v1@" + kDigest);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->registry, "127.0.0.1:5000");
  EXPECT_EQ(r->repository, "team/app");
  EXPECT_EQ(r->tag, "v1");
  EXPECT_EQ(r->digest, kDigest);
  EXPECT_EQ(r->ManifestRef(), kDigest);
  EXPECT_EQ(r->Name(), "127.0.0.1:5000/team/app");

  auto d = Reference::Parse("localhost/app@" + kDigest);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->registry, "localhost");
  EXPECT_EQ(d->repository, "app");  // not docker.io: no library/ prefix
  EXPECT_EQ(d->tag, "");
  EXPECT_EQ(d->ManifestRef(), kDigest);

  auto p = Reference::Parse("localhost:5000/app");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->registry, "localhost:5000");
  EXPECT_EQ(p->tag, "latest");
}

TEST(Reference, RejectsMalformed) {
  for (const std::string& bad : std::vector<std::string>{
           "", "app/UPPER", "app:", "app:-tag", "app@sha256:abc", "app@" + kDigest.substr(0, 70),
        "127.0.0.1:5000/", "a//b", "app/-x", "app:tag with space", "app..x", "@" + kDigest,
        "app@sha256:" + std::string(64, 'A')}) {
    auto r = Reference::Parse(bad);
    EXPECT_FALSE(r.ok()) << "accepted '" << bad << "'";
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    }
  }
}

TEST(Reference, MessageNamesTheReference) {
  auto r = Reference::Parse("host.io/Bad");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("host.io/Bad"), std::string::npos) << r.status().message();
}

TEST(AuthChallenge, ParsesBearer) {
  auto c = ParseAuthChallenge(
      R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull")");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->scheme, "bearer");
  EXPECT_EQ(c->params.at("realm"), "https://auth.docker.io/token");
  EXPECT_EQ(c->params.at("service"), "registry.docker.io");
  EXPECT_EQ(c->params.at("scope"), "repository:library/busybox:pull");
}

TEST(AuthChallenge, ParsesBasicUnquotedAndEscapes) {
  auto c = ParseAuthChallenge(R"(Basic realm="a \"q\" b", Charset=UTF-8)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->scheme, "basic");
  EXPECT_EQ(c->params.at("realm"), "a \"q\" b");
  EXPECT_EQ(c->params.at("charset"), "UTF-8");
}

TEST(AuthChallenge, RejectsBroken) {
  EXPECT_FALSE(ParseAuthChallenge("").ok());
  EXPECT_FALSE(ParseAuthChallenge(R"(Bearer realm="unterminated)").ok());
  EXPECT_FALSE(ParseAuthChallenge("Bearer realm").ok());
}

std::string Part(const std::string& boundary, uint64_t a, const std::string& data, uint64_t total) {
  return "--" + boundary + "\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes " +
         std::to_string(a) + "-" + std::to_string(a + data.size() - 1) + "/" + std::to_string(total) +
         "\r\n\r\n" + data + "\r\n";
}

TEST(Multipart, ParsesParts) {
  std::string data1 = "hello\r\n--notboundary", data2 = std::string("\0\1\2", 3);
  std::string body = Part("XYZ", 10, data1, 100) + Part("XYZ", 50, data2, 100) + "--XYZ--\r\n";
  auto parts = ParseMultipartByteranges(AsBytes(body), "XYZ");
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].offset, 10u);
  EXPECT_EQ(std::string((*parts)[0].bytes.begin(), (*parts)[0].bytes.end()), data1);
  EXPECT_EQ((*parts)[1].offset, 50u);
  EXPECT_EQ(std::string((*parts)[1].bytes.begin(), (*parts)[1].bytes.end()), data2);
}

TEST(Multipart, RejectsTruncationsAndMissingHeaders) {
  std::string body = Part("B", 0, "abcdef", 10) + Part("B", 7, "xyz", 10) + "--B--\r\n";
  ASSERT_TRUE(ParseMultipartByteranges(AsBytes(body), "B").ok());
  // Every truncation before the closing delimiter must fail, never yield short data.
  size_t closing = body.rfind("--B--");
  for (size_t n = 0; n < closing; ++n) {
    auto r = ParseMultipartByteranges(AsBytes(std::string_view(body).substr(0, n)), "B");
    EXPECT_FALSE(r.ok()) << "truncated to " << n;
  }
  std::string no_range = "--B\r\nContent-Type: x\r\n\r\nabc\r\n--B--";
  auto r = ParseMultipartByteranges(AsBytes(no_range), "B");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("Content-Range"), std::string::npos);
  EXPECT_FALSE(ParseMultipartByteranges(AsBytes(body), "").ok());
  EXPECT_FALSE(ParseMultipartByteranges(AsBytes(body), "OTHER").ok());
}

TEST(DockerConfig, ReadsAuthField) {
  // "alice:pa:ss" base64
  std::string cfg = R"({"auths":{"https://127.0.0.1:5000/v1/":{"auth":"YWxpY2U6cGE6c3M="}}})";
  auto c = CredentialsFromDockerConfig(cfg, "127.0.0.1:5000");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->username, "alice");
  EXPECT_EQ(c->password, "pa:ss");
  EXPECT_EQ(CredentialsFromDockerConfig(cfg, "127.0.0.1:5001").status().code(), StatusCode::kNotFound);
}

TEST(DockerConfig, DockerHubAliasesAndUsernamePassword) {
  std::string cfg = R"({"auths":{"https://index.docker.io/v1/":{"username":"bob","password":"pw"}}})";
  auto c = CredentialsFromDockerConfig(cfg, "docker.io");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->username, "bob");
  EXPECT_EQ(c->password, "pw");
}

TEST(DockerConfig, CredHelpersAreReportedNotRun) {
  std::string cfg = R"({"auths":{},"credHelpers":{"gcr.io":"gcloud"}})";
  auto c = CredentialsFromDockerConfig(cfg, "gcr.io");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(c.status().message().find("docker-credential-gcloud"), std::string::npos);
  std::string store = R"({"auths":{"quay.io":{}},"credsStore":"desktop"})";
  EXPECT_EQ(CredentialsFromDockerConfig(store, "quay.io").status().code(), StatusCode::kUnsupported);
}

TEST(DockerConfig, RejectsMalformedWithoutEchoingSecrets) {
  EXPECT_EQ(CredentialsFromDockerConfig("{not json", "h").status().code(), StatusCode::kCorruption);
  auto c = CredentialsFromDockerConfig(R"({"auths":{"h":{"auth":"c2VjcmV0bm9jb2xvbg=="}}})", "h");
  ASSERT_FALSE(c.ok());  // "secretnocolon"
  EXPECT_EQ(c.status().message().find("secret"), std::string::npos) << c.status().message();
  EXPECT_FALSE(CredentialsFromDockerConfig(R"({"auths":{"h":{"auth":"!!"}}})", "h").ok());
}

TEST(HostsToml, MirrorsInFileOrderThenServer) {
  std::string toml = R"(
server = "https://registry.example.com"

[host."https://zz-mirror.example.com"]
  capabilities = ["pull", "resolve"]
  skip_verify = true

[host."http://aa-mirror.example.com:8080/v2/custom"]
  capabilities = ["pull"]
  ca = "/etc/ca.pem"
  [host."http://aa-mirror.example.com:8080/v2/custom".header]
    x-token = "abc"
)";
  auto eps = ParseHostsToml(toml, "registry.example.com", "https://default");
  ASSERT_TRUE(eps.ok()) << eps.status().ToString();
  ASSERT_EQ(eps->size(), 3u);
  EXPECT_EQ((*eps)[0].base_url, "https://zz-mirror.example.com/v2");
  EXPECT_TRUE((*eps)[0].pull);
  EXPECT_TRUE((*eps)[0].resolve);
  EXPECT_FALSE((*eps)[0].push);
  EXPECT_TRUE((*eps)[0].skip_verify);
  EXPECT_EQ((*eps)[1].base_url, "http://aa-mirror.example.com:8080/v2/custom");
  EXPECT_FALSE((*eps)[1].resolve);
  EXPECT_EQ((*eps)[1].ca_file, "/etc/ca.pem");
  EXPECT_EQ((*eps)[1].headers.at("x-token"), "abc");
  EXPECT_EQ((*eps)[2].base_url, "https://registry.example.com/v2");
  EXPECT_TRUE((*eps)[2].push);
}

TEST(HostsToml, DefaultServerAndErrors) {
  auto eps = ParseHostsToml("", "h:1", "http://h:1");
  ASSERT_TRUE(eps.ok());
  ASSERT_EQ(eps->size(), 1u);
  EXPECT_EQ((*eps)[0].base_url, "http://h:1/v2");
  auto bad = ParseHostsToml("server = [", "h:1", "http://h:1");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kCorruption);
  EXPECT_NE(bad.status().message().find("h:1"), std::string::npos);
  EXPECT_FALSE(ParseHostsToml("[host.\"mirror-no-scheme\"]\n", "h", "http://h").ok());
  EXPECT_FALSE(ParseHostsToml("[host.\"http://m\"]\ncapabilities=[\"fly\"]\n", "h", "http://h").ok());
}

TEST(Client, RejectsBadOptions) {
  ClientOptions o;
  o.max_attempts = 0;
  EXPECT_FALSE(Client::Create(o).ok());
}

TEST(Client, ConnectionRefusedFailsFastWithNamedError) {
  ClientOptions o;
  o.plain_http = true;
  o.max_attempts = 2;
  o.initial_backoff = std::chrono::milliseconds(10);
  o.auth_files = {"/nonexistent"};
  auto c = Client::Create(o);
  ASSERT_TRUE(c.ok());
  auto ref = Reference::Parse("127.0.0.1:1/app:latest");
  ASSERT_TRUE(ref.ok());
  auto m = (*c)->GetManifest(*ref);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kUnavailable) << m.status().ToString();
  EXPECT_NE(m.status().message().find("127.0.0.1:1/app"), std::string::npos) << m.status().message();
  EXPECT_NE(m.status().message().find("2 attempts"), std::string::npos) << m.status().message();
}

// ---- against scripted fakes ----

using harness::FakeHttpServer;
using harness::FakeRequest;
using harness::FakeResponse;

ClientOptions FakeOptions() {
  ClientOptions o;
  o.plain_http = true;
  o.auth_files = {"/nonexistent/lc-registry-test/config.json"};
  o.initial_backoff = std::chrono::milliseconds(5);
  o.max_backoff = std::chrono::milliseconds(20);
  o.request_timeout = std::chrono::seconds(10);
  return o;
}

const std::string kManifest = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]})";

std::string Digest(std::string_view s) { return crypto::OciDigest(crypto::Sha256::Of(AsBytes(s))); }

// A registry that demands bearer tokens from its own /token endpoint (basic auth alice:pw, or
// anonymous when allow_anonymous).
struct BearerFake {
  std::unique_ptr<FakeHttpServer> server;
  std::atomic<bool> allow_anonymous{false};

  void Start() {
    auto s = FakeHttpServer::Start([this](const FakeRequest& r) { return Handle(r); });
    ASSERT_TRUE(s.ok());
    server = std::move(*s);
  }
  FakeResponse Handle(const FakeRequest& r) {
    if (r.Path() == "/token") {
      std::string auth = r.Header("Authorization");
      std::string good = "Basic " + keywrap::Base64Encode(AsBytes("alice:pw"));
      if (auth == good) return {200, {}, R"({"token":"tok-user","expires_in":300})"};
      if (auth.empty() && allow_anonymous) return {200, {}, R"({"access_token":"tok-anon"})"};
      return {401, {}, R"({"errors":[{"code":"UNAUTHORIZED","message":"bad creds"}]})"};
    }
    std::string auth = r.Header("Authorization");
    if (auth != "Bearer tok-user" && auth != "Bearer tok-anon") {
      return {401,
              {{"WWW-Authenticate", "Bearer realm=\"" + server->url() +
                                        "/token\",service=\"fake-registry\",scope=\"repository:app:pull\""}},
              R"({"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]})"};
    }
    if (r.Path() == "/v2/app/manifests/latest") {
      return {200, {{"Content-Type", std::string(kOciIndex)}, {"Docker-Content-Digest", Digest(kManifest)}}, kManifest};
    }
    return {404, {}, R"({"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]})"};
  }
};

TEST(Bearer, FetchesTokenWithCredentialsAndCachesIt) {
  BearerFake fake;
  fake.Start();
  ClientOptions o = FakeOptions();
  o.credentials = Credentials{"alice", "pw"};
  auto c = Client::Create(o);
  ASSERT_TRUE(c.ok());
  auto ref = Reference::Parse(fake.server->host() + "/app:latest");
  ASSERT_TRUE(ref.ok());
  for (int i = 0; i < 3; ++i) {
    auto m = (*c)->GetManifest(*ref);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(std::string(m->bytes.begin(), m->bytes.end()), kManifest);
    EXPECT_EQ(m->media_type, kOciIndex);
    EXPECT_EQ(m->digest, Digest(kManifest));
  }
  int token_requests = 0;
  for (const auto& r : fake.server->Requests()) {
    if (r.Path() != "/token") continue;
    ++token_requests;
    EXPECT_NE(r.target.find("service=fake-registry"), std::string::npos) << r.target;
    EXPECT_NE(r.target.find("scope=repository%3Aapp%3Apull"), std::string::npos) << r.target;
  }
  EXPECT_EQ(token_requests, 1) << "the token was not cached";
  // 1 anonymous try + 1 token + 3 authorized GETs.
  EXPECT_EQ(fake.server->Requests().size(), 5u);
}

TEST(Bearer, AnonymousToken) {
  BearerFake fake;
  fake.allow_anonymous = true;
  fake.Start();
  auto c = Client::Create(FakeOptions());
  ASSERT_TRUE(c.ok());
  auto m = (*c)->GetManifest(*Reference::Parse(fake.server->host() + "/app:latest"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
}

TEST(Bearer, WrongCredentialsAreNamed) {
  BearerFake fake;
  fake.Start();
  ClientOptions o = FakeOptions();
  o.credentials = Credentials{"alice", "nope"};
  auto c = Client::Create(o);
  ASSERT_TRUE(c.ok());
  auto m = (*c)->GetManifest(*Reference::Parse(fake.server->host() + "/app:latest"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(m.status().message().find("wrong credentials for " + fake.server->host()), std::string::npos)
      << m.status().message();
  EXPECT_EQ(m.status().message().find("nope"), std::string::npos);
}

TEST(Manifest, DigestMismatchesAreRejected) {
  std::string tampered = kManifest + " ";
  auto s = FakeHttpServer::Start([&](const FakeRequest& r) -> FakeResponse {
    if (r.Path() == "/v2/app/manifests/latest") {
      // Claims the digest of the untampered manifest.
      return {200, {{"Content-Type", std::string(kOciIndex)}, {"Docker-Content-Digest", Digest(kManifest)}}, tampered};
    }
    return {200, {{"Content-Type", std::string(kOciIndex)}}, tampered};
  });
  ASSERT_TRUE(s.ok());
  auto c = Client::Create(FakeOptions());
  ASSERT_TRUE(c.ok());
  auto by_tag = (*c)->GetManifest(*Reference::Parse((*s)->host() + "/app:latest"));
  ASSERT_FALSE(by_tag.ok());
  EXPECT_EQ(by_tag.status().code(), StatusCode::kAuthFailed);
  auto by_digest = (*c)->GetManifest(*Reference::Parse((*s)->host() + "/app@" + Digest(kManifest)));
  ASSERT_FALSE(by_digest.ok());
  EXPECT_EQ(by_digest.status().code(), StatusCode::kAuthFailed) << by_digest.status().ToString();
  EXPECT_NE(by_digest.status().message().find("hashes to " + Digest(tampered)), std::string::npos);
}

std::string Blob() {
  std::string b;
  for (int i = 0; i < 1000; ++i) b += static_cast<char>('a' + i % 26);
  return b;
}

TEST(Ranges, ServerIgnoringRangeStillYieldsTheRightBytes) {
  const std::string blob = Blob();
  auto s = FakeHttpServer::Start([&](const FakeRequest&) -> FakeResponse { return {200, {}, blob}; });
  ASSERT_TRUE(s.ok());
  auto c = Client::Create(FakeOptions());
  ASSERT_TRUE(c.ok());
  auto repo = *Reference::Parse((*s)->host() + "/app");
  auto r = (*c)->GetBlobRange(repo, Digest(blob), 500, 20);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(std::string(r->begin(), r->end()), blob.substr(500, 20));
  std::vector<ByteRange> ranges = {{3, 4}, {990, 10}};
  auto m = (*c)->GetBlobRanges(repo, Digest(blob), ranges);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(std::string((*m)[0].begin(), (*m)[0].end()), blob.substr(3, 4));
  EXPECT_EQ(std::string((*m)[1].begin(), (*m)[1].end()), blob.substr(990, 10));
}

TEST(Ranges, MultipartWithQuotedBoundaryAndCoalescedParts) {
  const std::string blob = Blob();
  auto s = FakeHttpServer::Start([&](const FakeRequest& r) -> FakeResponse {
    EXPECT_EQ(r.Header("Range"), "bytes=10-19,15-29,700-709");
    // The server coalesces the overlapping first two ranges into one part, and sends parts out
    // of order.
    std::string body = "--b0undary\r\nContent-Range: bytes 700-709/1000\r\n\r\n" + blob.substr(700, 10) +
                       "\r\n--b0undary\r\nContent-Range: bytes 10-29/1000\r\n\r\n" + blob.substr(10, 20) +
                       "\r\n--b0undary--\r\n";
    return {206, {{"Content-Type", "multipart/byteranges; boundary=\"b0undary\""}}, body};
  });
  ASSERT_TRUE(s.ok());
  auto c = Client::Create(FakeOptions());
  ASSERT_TRUE(c.ok());
  std::vector<ByteRange> ranges = {{10, 10}, {15, 15}, {700, 10}};
  auto m = (*c)->GetBlobRanges(*Reference::Parse((*s)->host() + "/app"), Digest(blob), ranges);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  for (size_t i = 0; i < ranges.size(); ++i) {
    EXPECT_EQ(std::string((*m)[i].begin(), (*m)[i].end()), blob.substr(ranges[i].offset, ranges[i].length));
  }
  EXPECT_EQ((*s)->Requests().size(), 1u);
}

TEST(Ranges, WrongContentRangeIsCorruption) {
  const std::string blob = Blob();
  auto s = FakeHttpServer::Start([&](const FakeRequest&) -> FakeResponse {
    return {206, {{"Content-Range", "bytes 0-9/1000"}}, blob.substr(0, 10)};
  });
  ASSERT_TRUE(s.ok());
  auto c = Client::Create(FakeOptions());
  ASSERT_TRUE(c.ok());
  auto r = (*c)->GetBlobRange(*Reference::Parse((*s)->host() + "/app"), Digest(blob), 100, 10);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption) << r.status().ToString();
}

}  // namespace
}  // namespace lazycrypt::registry
