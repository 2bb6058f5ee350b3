// The registry client against a real docker-registry (tests/harness/RegistryProcess), with a
// fault-injecting proxy (FaultProxy) for retries and deadlines.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <random>
#include <thread>

#include "crypto/digest.h"
#include "keywrap/base64.h"
#include "registry/registry.h"
#include "tests/harness/fault_proxy.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"

namespace lazycrypt::registry {
namespace {

using namespace std::chrono_literals;
using harness::Fault;
using harness::FaultProxy;
using harness::FaultRule;
using harness::RegistryProcess;

std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::string DigestOf(ByteSpan b) { return crypto::OciDigest(crypto::Sha256::Of(b)); }

ClientOptions FastOptions() {
  ClientOptions o;
  o.plain_http = true;
  o.auth_files = {"/nonexistent/lc-registry-test/config.json"};  // never the developer's
  o.initial_backoff = 20ms;
  o.max_backoff = 200ms;
  o.request_timeout = 20s;
  o.low_speed_time = std::chrono::seconds(5);
  return o;
}

Reference Ref(const std::string& host, const std::string& repo_and_tag) {
  auto r = Reference::Parse(host + "/" + repo_and_tag);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : Reference{};
}

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = RegistryProcess::Start();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    reg_ = std::move(*r);
    auto c = Client::Create(FastOptions());
    ASSERT_TRUE(c.ok());
    client_ = std::move(*c);
  }
  // Pushes bytes as a blob of repo; returns its digest.
  std::string Push(Client& client, const Reference& repo, const std::vector<uint8_t>& bytes,
                   std::string_view mount_from = {}) {
    std::string d = DigestOf(bytes);
    MemoryBlobSource src(bytes);
    Status s = client.PushBlob(repo, d, src, mount_from);
    EXPECT_TRUE(s.ok()) << s.ToString() << "\n" << reg_->Log();
    return d;
  }
  std::unique_ptr<RegistryProcess> reg_;
  std::unique_ptr<Client> client_;
};

TEST_F(RegistryTest, BlobPushStatGetRoundTrip) {
  auto repo = Ref(reg_->host(), "app");
  auto bytes = RandomBytes(3 << 20, 1);
  std::string d = Push(*client_, repo, bytes);
  auto size = client_->StatBlob(repo, d);
  ASSERT_TRUE(size.ok()) << size.status().ToString();
  EXPECT_EQ(*size, bytes.size());
  MemoryOutputStream out;
  ASSERT_TRUE(client_->GetBlob(repo, d, out).ok());
  EXPECT_EQ(out.bytes(), bytes);
  // Pushing again is a no-op (HEAD finds it).
  Push(*client_, repo, bytes);

  // Empty blob.
  std::vector<uint8_t> empty;
  std::string de = Push(*client_, repo, empty);
  MemoryOutputStream eout;
  ASSERT_TRUE(client_->GetBlob(repo, de, eout).ok());
  EXPECT_TRUE(eout.bytes().empty());
}

TEST_F(RegistryTest, MissingBlobAndWrongDigestClaims) {
  auto repo = Ref(reg_->host(), "app");
  std::string missing = DigestOf(AsBytes("not there"));
  auto st = client_->StatBlob(repo, missing);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().code(), StatusCode::kNotFound);
  EXPECT_NE(st.status().message().find(reg_->host() + "/app: blob " + missing + " not found"),
            std::string::npos)
      << st.status().message();
  MemoryOutputStream out;
  EXPECT_EQ(client_->GetBlob(repo, missing, out).code(), StatusCode::kNotFound);
  // The registry rejects an upload whose bytes do not match the claimed digest.
  auto bytes = RandomBytes(1000, 2);
  MemoryBlobSource src(bytes);
  Status s = client_->PushBlob(repo, missing, src);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(reg_->host() + "/app"), std::string::npos) << s.message();
  EXPECT_EQ(client_->GetBlob(repo, "sha256:xyz", out).code(), StatusCode::kInvalidArgument);
}

TEST_F(RegistryTest, GetBlobDetectsCorruptedStorage) {
  auto repo = Ref(reg_->host(), "app");
  auto bytes = RandomBytes(100000, 3);
  std::string d = Push(*client_, repo, bytes);
  // Flip a byte of the stored blob on the registry's disk.
  std::string hex = d.substr(7);
  auto path = reg_->storage_dir() / "docker/registry/v2/blobs/sha256" / hex.substr(0, 2) / hex / "data";
  ASSERT_TRUE(std::filesystem::exists(path)) << path;
  bytes[5000] ^= 1;
  ASSERT_TRUE(harness::WriteFile(path, AsStringView(bytes)).ok());
  MemoryOutputStream out;
  Status s = client_->GetBlob(repo, d, out);
  EXPECT_EQ(s.code(), StatusCode::kAuthFailed) << s.ToString();
  EXPECT_NE(s.message().find("hashes to"), std::string::npos);
}

TEST_F(RegistryTest, ChunkedUpload) {
  ClientOptions o = FastOptions();
  o.chunked_upload_threshold = 100000;
  o.upload_chunk_bytes = 65536;
  auto c = Client::Create(o);
  ASSERT_TRUE(c.ok());
  auto repo = Ref(reg_->host(), "chunky");
  auto bytes = RandomBytes(300001, 4);
  std::string d = Push(**c, repo, bytes);
  MemoryOutputStream out;
  ASSERT_TRUE(client_->GetBlob(repo, d, out).ok());
  EXPECT_EQ(out.bytes(), bytes);
}

TEST_F(RegistryTest, StreamedUploadAppendsInOrderAndTheFinalPutNamesTheDigest) {
  // A blob whose digest is known only at the end: PATCHes as the bytes come, then the PUT.
  auto repo = Ref(reg_->host(), "streamed");
  auto bytes = RandomBytes(250000, 8);
  ByteSpan all(bytes);
  auto upload = client_->StartUpload(repo);
  ASSERT_TRUE(upload.ok()) << upload.status().ToString();
  ASSERT_TRUE((*upload)->Append(all.first(100000)).ok());
  ASSERT_TRUE((*upload)->Append(all.subspan(100000, 1)).ok());
  ASSERT_TRUE((*upload)->Append(all.subspan(100001, 99999)).ok());
  EXPECT_EQ((*upload)->size(), 200000u);
  Status finished = (*upload)->Finish(DigestOf(bytes), all.subspan(200000));
  ASSERT_TRUE(finished.ok()) << finished.ToString() << reg_->Log();
  EXPECT_EQ((*upload)->size(), bytes.size());
  MemoryOutputStream out;
  ASSERT_TRUE(client_->GetBlob(repo, DigestOf(bytes), out).ok());
  EXPECT_EQ(out.bytes(), bytes);

  // A digest that is not the content's is refused by the registry, and the message says which.
  auto wrong = client_->StartUpload(repo);
  ASSERT_TRUE(wrong.ok()) << wrong.status().ToString();
  ASSERT_TRUE((*wrong)->Append(all.first(5000)).ok());
  std::string claimed = DigestOf(all.first(4999));
  Status refused = (*wrong)->Finish(claimed, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("finish upload of " + claimed), std::string::npos)
      << refused.ToString();
  EXPECT_EQ(client_->StatBlob(repo, claimed).status().code(), StatusCode::kNotFound);
}

std::string MakeManifest(const std::string& config_digest, size_t config_size,
                         const std::string& layer_digest, size_t layer_size) {
  return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
         R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
         config_digest + R"(","size":)" + std::to_string(config_size) +
         R"(},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":")" +
         layer_digest + R"(","size":)" + std::to_string(layer_size) + "}]}";
}

TEST_F(RegistryTest, ManifestPushResolveByTagAndDigest) {
  auto repo = Ref(reg_->host(), "team/app:v1");
  std::string config = R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}})";
  std::vector<uint8_t> cfg(config.begin(), config.end());
  auto layer = RandomBytes(5000, 5);
  std::string cd = Push(*client_, repo, cfg);
  std::string ld = Push(*client_, repo, layer);
  std::string manifest = MakeManifest(cd, cfg.size(), ld, layer.size());
  auto pushed = client_->PutManifest(repo, AsBytes(manifest), kOciManifest);
  ASSERT_TRUE(pushed.ok()) << pushed.status().ToString() << reg_->Log();
  EXPECT_EQ(*pushed, DigestOf(AsBytes(manifest)));

  auto m = client_->GetManifest(repo);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(std::string(m->bytes.begin(), m->bytes.end()), manifest);
  EXPECT_EQ(m->media_type, kOciManifest);
  EXPECT_EQ(m->digest, *pushed);

  auto by_digest = client_->GetManifest(repo.WithDigest(*pushed));
  ASSERT_TRUE(by_digest.ok()) << by_digest.status().ToString();
  EXPECT_EQ(by_digest->bytes, m->bytes);

  auto missing = client_->GetManifest(Ref(reg_->host(), "team/app:nope"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), reg_->host() + "/team/app: manifest 'nope' not found");
  auto other_repo = client_->GetManifest(Ref(reg_->host(), "nosuch:latest"));
  EXPECT_EQ(other_repo.status().code(), StatusCode::kNotFound);
}

TEST_F(RegistryTest, ManifestReferringToMissingBlobIsRejected) {
  auto repo = Ref(reg_->host(), "app:bad");
  std::string d = DigestOf(AsBytes("absent"));
  std::string manifest = MakeManifest(d, 6, d, 6);
  auto pushed = client_->PutManifest(repo, AsBytes(manifest), kOciManifest);
  ASSERT_FALSE(pushed.ok());
  EXPECT_NE(pushed.status().message().find("PUT manifest 'bad'"), std::string::npos)
      << pushed.status().message();
}

TEST_F(RegistryTest, RangesMultiRangesAndBlobSource) {
  auto repo = Ref(reg_->host(), "ranges");
  auto bytes = RandomBytes(1 << 20, 6);
  std::string d = Push(*client_, repo, bytes);
  auto slice = [&](uint64_t off, uint64_t len) {
    return std::vector<uint8_t>(bytes.begin() + off, bytes.begin() + off + len);
  };
  for (auto [off, len] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0, 1}, {0, 4096}, {12345, 777}, {bytes.size() - 1, 1}, {0, bytes.size()}}) {
    auto r = client_->GetBlobRange(repo, d, off, len);
    ASSERT_TRUE(r.ok()) << off << "+" << len << ": " << r.status().ToString();
    EXPECT_EQ(*r, slice(off, len)) << off << "+" << len;
  }
  auto past = client_->GetBlobRange(repo, d, bytes.size() - 10, 20);
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.status().code(), StatusCode::kCorruption) << past.status().ToString();

  std::vector<ByteRange> ranges = {{100, 50}, {500000, 1000}, {7, 3}, {1048000, 576}, {200, 0}};
  auto multi = client_->GetBlobRanges(repo, d, ranges);
  ASSERT_TRUE(multi.ok()) << multi.status().ToString();
  ASSERT_EQ(multi->size(), ranges.size());
  for (size_t i = 0; i < ranges.size(); ++i) {
    EXPECT_EQ((*multi)[i], slice(ranges[i].offset, ranges[i].length)) << "range " << i;
  }

  auto src = client_->OpenBlob(repo, d);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  EXPECT_EQ((*src)->size(), bytes.size());
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        uint64_t off = (static_cast<uint64_t>(t) * 100003 + i * 7919) % (bytes.size() - 5000);
        std::vector<uint8_t> buf(4096 + t);
        if (!(*src)->ReadAt(off, buf).ok() || buf != slice(off, buf.size())) bad.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  std::vector<uint8_t> over(10);
  EXPECT_EQ((*src)->ReadAt(bytes.size() - 5, over).code(), StatusCode::kCorruption);
}

TEST_F(RegistryTest, MultiRangeIsOneRequest) {
  auto proxy = FaultProxy::Start(reg_->port());
  ASSERT_TRUE(proxy.ok());
  auto repo = Ref((*proxy)->host(), "ranges");
  auto bytes = RandomBytes(100000, 14);
  std::string d = Push(*client_, repo, bytes);
  size_t before = (*proxy)->RequestLines().size();
  std::vector<ByteRange> ranges = {{10, 20}, {5000, 100}, {99990, 10}};
  auto multi = client_->GetBlobRanges(repo, d, ranges);
  ASSERT_TRUE(multi.ok()) << multi.status().ToString();
  for (size_t i = 0; i < ranges.size(); ++i) {
    auto from = bytes.begin() + static_cast<std::ptrdiff_t>(ranges[i].offset);
    EXPECT_EQ((*multi)[i], std::vector<uint8_t>(from, from + static_cast<std::ptrdiff_t>(ranges[i].length)));
  }
  auto heads = (*proxy)->RequestHeads();
  ASSERT_EQ(heads.size(), before + 1) << "expected one multi-range GET";
  EXPECT_NE(heads.back().find("Range: bytes=10-29,5000-5099,99990-99999"), std::string::npos) << heads.back();
  // When the multi-range answer fails for good, single-range fallbacks still deliver.
  (*proxy)->AddFault({.fault = Fault::kHttp500, .count = 4, .match = "/blobs/"});
  ClientOptions o = FastOptions();
  o.max_attempts = 4;
  auto c = Client::Create(o);
  ASSERT_TRUE(c.ok());
  auto again = (*c)->GetBlobRanges(repo, d, ranges);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, *multi);
}

TEST_F(RegistryTest, MultiRangeFallsBackWhenServerSendsWholeBlob) {
  // Go's ServeContent answers 200 with the whole blob when the ranges add up to more than it;
  // overlapping ranges do that here. The client must still cut the right bytes.
  auto repo = Ref(reg_->host(), "ranges");
  auto bytes = RandomBytes(1000, 7);
  std::string d = Push(*client_, repo, bytes);
  std::vector<ByteRange> ranges = {{0, 900}, {100, 900}};
  auto multi = client_->GetBlobRanges(repo, d, ranges);
  ASSERT_TRUE(multi.ok()) << multi.status().ToString();
  EXPECT_EQ((*multi)[0], std::vector<uint8_t>(bytes.begin(), bytes.begin() + 900));
  EXPECT_EQ((*multi)[1], std::vector<uint8_t>(bytes.begin() + 100, bytes.end()));
}

TEST_F(RegistryTest, CrossRepositoryMount) {
  auto proxy = FaultProxy::Start(reg_->port());
  ASSERT_TRUE(proxy.ok());
  auto a = Ref((*proxy)->host(), "src");
  auto b = Ref((*proxy)->host(), "dst");
  auto bytes = RandomBytes(200000, 8);
  std::string d = Push(*client_, a, bytes);
  size_t before = (*proxy)->RequestLines().size();
  Push(*client_, b, bytes, "src");
  auto lines = (*proxy)->RequestLines();
  bool mounted = false;
  for (size_t i = before; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i].find("PUT "), std::string::npos) << "uploaded instead of mounting: " << lines[i];
    EXPECT_EQ(lines[i].find("PATCH "), std::string::npos) << lines[i];
    if (lines[i].find("mount=") != std::string::npos) mounted = true;
  }
  EXPECT_TRUE(mounted);
  MemoryOutputStream out;
  ASSERT_TRUE(client_->GetBlob(b, d, out).ok());
  EXPECT_EQ(out.bytes(), bytes);
  // Mounting a blob the source repository does not have opens an upload instead.
  auto other = RandomBytes(10, 9);
  auto m = client_->MountBlob(b, DigestOf(other), "src");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_FALSE(*m);
}

// ---- auth ----

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = RegistryProcess::Start({.username = "alice", .password = "wonder:land"});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    reg_ = std::move(*r);
    auto d = harness::TempDir::Create("lc-registry-auth");
    ASSERT_TRUE(d.ok());
    dir_ = std::make_unique<harness::TempDir>(std::move(*d));
  }
  Status Roundtrip(Client& c) {
    auto repo = Ref(reg_->host(), "secure");
    auto bytes = RandomBytes(1000, 10);
    MemoryBlobSource src(bytes);
    std::string d = DigestOf(bytes);
    LC_RETURN_IF_ERROR(c.PushBlob(repo, d, src));
    MemoryOutputStream out;
    LC_RETURN_IF_ERROR(c.GetBlob(repo, d, out));
    if (out.bytes() != bytes) return Status::Internal("bytes differ");
    return Status::Ok();
  }
  std::string ConfigJson(const std::string& userpass) {
    return R"({"auths":{")" + reg_->host() + R"(":{"auth":")" + keywrap::Base64Encode(AsBytes(userpass)) +
           R"("}}})";
  }
  std::unique_ptr<RegistryProcess> reg_;
  std::unique_ptr<harness::TempDir> dir_;
};

TEST_F(AuthTest, ExplicitRightCredentials) {
  ClientOptions o = FastOptions();
  o.credentials = Credentials{"alice", "wonder:land"};
  auto c = Client::Create(o);
  ASSERT_TRUE(c.ok());
  Status s = Roundtrip(**c);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST_F(AuthTest, WrongCredentialsAreNamed) {
  ClientOptions o = FastOptions();
  o.credentials = Credentials{"alice", "wrong-password"};
  auto c = Client::Create(o);
  ASSERT_TRUE(c.ok());
  Status s = Roundtrip(**c);
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), "401 unauthorized: wrong credentials for " + reg_->host());
  EXPECT_EQ(s.message().find("wrong-password"), std::string::npos);
}

TEST_F(AuthTest, NoCredentials) {
  auto c = Client::Create(FastOptions());
  ASSERT_TRUE(c.ok());
  auto m = (*c)->GetManifest(Ref(reg_->host(), "secure:latest"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(m.status().message().find("requires credentials"), std::string::npos) << m.status().message();
}

TEST_F(AuthTest, CredentialsFromConfigFiles) {
  auto good = *dir_ / "good.json";
  auto bad = *dir_ / "bad.json";
  ASSERT_TRUE(harness::WriteFile(good, ConfigJson("alice:wonder:land")).ok());
  ASSERT_TRUE(harness::WriteFile(bad, ConfigJson("alice:nope")).ok());
  {
    ClientOptions o = FastOptions();
    o.auth_files = {good};
    auto c = Client::Create(o);
    ASSERT_TRUE(c.ok());
    Status s = Roundtrip(**c);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  {
    ClientOptions o = FastOptions();
    o.auth_files = {bad};
    auto c = Client::Create(o);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(Roundtrip(**c).code(), StatusCode::kPermissionDenied);
  }
  {
    // REGISTRY_AUTH_FILE wins over DOCKER_CONFIG (DefaultAuthFiles order).
    auto docker_dir = *dir_ / "docker";
    std::filesystem::create_directory(docker_dir);
    ASSERT_TRUE(harness::WriteFile(docker_dir / "config.json", ConfigJson("alice:nope")).ok());
    setenv("REGISTRY_AUTH_FILE", good.c_str(), 1);
    setenv("DOCKER_CONFIG", docker_dir.c_str(), 1);
    ClientOptions o = FastOptions();
    o.auth_files.clear();
    auto c = Client::Create(o);
    ASSERT_TRUE(c.ok());
    Status s = Roundtrip(**c);
    unsetenv("REGISTRY_AUTH_FILE");
    EXPECT_TRUE(s.ok()) << s.ToString();
    // Only DOCKER_CONFIG (wrong password) now.
    auto c2 = Client::Create(o);
    ASSERT_TRUE(c2.ok());
    EXPECT_EQ(Roundtrip(**c2).code(), StatusCode::kPermissionDenied);
    unsetenv("DOCKER_CONFIG");
  }
}

// ---- TLS ----

TEST(Tls, VerifiesCertificatesUnlessToldNotTo) {
  harness::RegistryOptions ro;
  ro.tls = true;
  auto reg = RegistryProcess::Start(ro);
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  auto repo = Ref((*reg)->host(), "tls");
  auto bytes = RandomBytes(3000, 20);
  std::string d = DigestOf(bytes);

  ClientOptions strict = FastOptions();
  strict.plain_http = false;
  strict.max_attempts = 1;
  auto c = Client::Create(strict);
  ASSERT_TRUE(c.ok());
  auto st = (*c)->StatBlob(repo, d);
  ASSERT_FALSE(st.ok()) << "a self-signed certificate was accepted";
  EXPECT_NE(st.status().message().find((*reg)->host() + "/tls"), std::string::npos) << st.status().message();
  EXPECT_NE(st.status().message().find("certificate"), std::string::npos) << st.status().message();

  ClientOptions trusting = strict;
  trusting.ca_file = (*reg)->ca_file().string();
  auto tc = Client::Create(trusting);
  ASSERT_TRUE(tc.ok());
  MemoryBlobSource src(bytes);
  Status s = (*tc)->PushBlob(repo, d, src);
  ASSERT_TRUE(s.ok()) << s.ToString();

  ClientOptions insecure = strict;
  insecure.tls_verify = false;
  auto ic = Client::Create(insecure);
  ASSERT_TRUE(ic.ok());
  MemoryOutputStream out;
  s = (*ic)->GetBlob(repo, d, out);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out.bytes(), bytes);
}

// ---- hosts.toml mirrors ----

TEST(Mirror, MirrorIsTriedFirstAndFallsBackToServer) {
  auto upstream = RegistryProcess::Start();
  auto mirror = RegistryProcess::Start();
  ASSERT_TRUE(upstream.ok() && mirror.ok());
  auto mirror_proxy = FaultProxy::Start((*mirror)->port());
  ASSERT_TRUE(mirror_proxy.ok());
  auto c = Client::Create(FastOptions());
  ASSERT_TRUE(c.ok());
  // "cached" exists on the mirror and upstream; "fresh" only upstream.
  auto cached = RandomBytes(4000, 11), fresh = RandomBytes(5000, 12);
  for (auto* host : {&(*upstream), &(*mirror)}) {
    MemoryBlobSource s(cached);
    ASSERT_TRUE((*c)->PushBlob(Ref((*host)->host(), "lib/app"), DigestOf(cached), s).ok());
  }
  MemoryBlobSource fs(fresh);
  ASSERT_TRUE((*c)->PushBlob(Ref((*upstream)->host(), "lib/app"), DigestOf(fresh), fs).ok());

  auto hosts = harness::TempDir::Create("lc-hosts");
  ASSERT_TRUE(hosts.ok());
  std::string upstream_host = (*upstream)->host();
  std::filesystem::create_directories(*hosts / upstream_host);
  ASSERT_TRUE(harness::WriteFile(*hosts / upstream_host / "hosts.toml",
                                 "server = \"http://" + upstream_host + "\"\n\n[host.\"http://" +
                                     (*mirror_proxy)->host() + "\"]\n  capabilities = [\"pull\", \"resolve\"]\n")
                  .ok());
  ClientOptions o = FastOptions();
  o.hosts_dir = hosts->path();
  auto mc = Client::Create(o);
  ASSERT_TRUE(mc.ok());
  auto repo = Ref(upstream_host, "lib/app");

  MemoryOutputStream out;
  ASSERT_TRUE((*mc)->GetBlob(repo, DigestOf(cached), out).ok());
  EXPECT_EQ(out.bytes(), cached);
  int mirror_requests = (*mirror_proxy)->requests();
  EXPECT_GE(mirror_requests, 1) << "the mirror was not tried first";

  MemoryOutputStream out2;
  Status s = (*mc)->GetBlob(repo, DigestOf(fresh), out2);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out2.bytes(), fresh);
  EXPECT_GT((*mirror_proxy)->requests(), mirror_requests) << "the mirror was skipped";

  // A dead mirror: every request to it resets; the server still answers.
  (*mirror_proxy)->AddFault({.fault = Fault::kReset, .count = -1, .match = ""});
  MemoryOutputStream out3;
  s = (*mc)->GetBlob(repo, DigestOf(cached), out3);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out3.bytes(), cached);
  EXPECT_GT((*mirror_proxy)->faults_injected(), 0);
}

// ---- faults ----

class FaultTest : public RegistryTest {
 protected:
  void SetUp() override {
    RegistryTest::SetUp();
    auto p = FaultProxy::Start(reg_->port());
    ASSERT_TRUE(p.ok());
    proxy_ = std::move(*p);
    bytes_ = RandomBytes(600000, 13);
    digest_ = Push(*client_, Ref(reg_->host(), "f"), bytes_);
    repo_ = Ref(proxy_->host(), "f");
  }
  std::unique_ptr<Client> MakeClient(ClientOptions o) {
    auto c = Client::Create(o);
    EXPECT_TRUE(c.ok());
    return c.ok() ? std::move(*c) : nullptr;
  }
  std::unique_ptr<FaultProxy> proxy_;
  std::vector<uint8_t> bytes_;
  std::string digest_;
  Reference repo_;
};

TEST_F(FaultTest, ResetsAndServerErrorsAreRetried) {
  proxy_->AddFault({.fault = Fault::kReset, .count = 1, .match = "GET /v2/f/blobs/"});
  proxy_->AddFault({.fault = Fault::kHttp500, .count = 1, .match = "GET /v2/f/blobs/"});
  proxy_->AddFault({.fault = Fault::kHttp503, .count = 1, .match = "GET /v2/f/blobs/", .retry_after_seconds = 0});
  auto c = MakeClient(FastOptions());
  MemoryOutputStream out;
  Status s = c->GetBlob(repo_, digest_, out);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out.bytes(), bytes_);
  EXPECT_EQ(proxy_->faults_injected(), 3);
}

TEST_F(FaultTest, TooManyRequestsHonoursRetryAfter) {
  proxy_->AddFault({.fault = Fault::kHttp429, .count = 1, .match = "/blobs/", .retry_after_seconds = 1});
  auto c = MakeClient(FastOptions());
  auto start = std::chrono::steady_clock::now();
  auto r = c->GetBlobRange(repo_, digest_, 10, 100);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, std::vector<uint8_t>(bytes_.begin() + 10, bytes_.begin() + 110));
  EXPECT_GE(elapsed, 950ms) << "Retry-After: 1 was not honoured";
  EXPECT_EQ(proxy_->faults_injected(), 1);
}

TEST_F(FaultTest, TruncatedBodiesResume) {
  proxy_->AddFault({.fault = Fault::kTruncate, .count = 2, .match = "/blobs/"});
  auto c = MakeClient(FastOptions());
  MemoryOutputStream out;
  Status s = c->GetBlob(repo_, digest_, out);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out.bytes(), bytes_);
  EXPECT_EQ(proxy_->faults_injected(), 2);
  // The retries asked for the missing tail, not the whole blob again: the first answer was cut
  // at 300000 bytes, the resumed one (300000 long) at 150000 more.
  std::string heads;
  for (const auto& h : proxy_->RequestHeads()) heads += h;
  EXPECT_NE(heads.find("Range: bytes=300000-\r\n"), std::string::npos) << heads;
  EXPECT_NE(heads.find("Range: bytes=450000-\r\n"), std::string::npos) << heads;

  proxy_->AddFault({.fault = Fault::kTruncate, .count = 1, .match = "/blobs/"});
  auto r = c->GetBlobRange(repo_, digest_, 1000, 300000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, std::vector<uint8_t>(bytes_.begin() + 1000, bytes_.begin() + 301000));
}

TEST_F(FaultTest, StreamedUploadRetriesRefusedPatchesAndFailsClearlyWhenAnAnswerIsLost) {
  // A PATCH answered 500 was not applied: it is sent again and the upload goes on.
  proxy_->AddFault({.fault = Fault::kHttp500, .count = 1, .match = "PATCH "});
  auto c = MakeClient(FastOptions());
  auto bytes = RandomBytes(300000, 21);
  ByteSpan all(bytes);
  auto upload = c->StartUpload(repo_);
  ASSERT_TRUE(upload.ok()) << upload.status().ToString();
  ASSERT_TRUE((*upload)->Append(all.first(100000)).ok());
  EXPECT_EQ(proxy_->faults_injected(), 1);
  ASSERT_TRUE((*upload)->Append(all.subspan(100000, 100000)).ok());
  Status finished = (*upload)->Finish(DigestOf(bytes), all.subspan(200000));
  ASSERT_TRUE(finished.ok()) << finished.ToString() << reg_->Log();
  MemoryOutputStream out;
  ASSERT_TRUE(client_->GetBlob(Ref(reg_->host(), "f"), DigestOf(bytes), out).ok());
  EXPECT_EQ(out.bytes(), bytes);

  // A PATCH the registry applied but whose answer was lost: the retry is refused (the registry
  // drops the session), and the upload fails at once naming the PATCH; nothing is stored.
  proxy_->AddFault({.fault = Fault::kLoseResponse, .count = 1, .match = "PATCH "});
  auto other = RandomBytes(300000, 22);
  auto second = c->StartUpload(repo_);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  auto start = std::chrono::steady_clock::now();
  Status lost = (*second)->Append(other);
  ASSERT_FALSE(lost.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  EXPECT_NE(lost.message().find(proxy_->host() + "/f: PATCH upload at byte 0: HTTP 404"),
            std::string::npos) << lost.ToString();
  EXPECT_EQ(client_->StatBlob(Ref(reg_->host(), "f"), DigestOf(other)).status().code(),
            StatusCode::kNotFound);
}

TEST_F(FaultTest, PersistentServerErrorsFailClearly) {
  proxy_->AddFault({.fault = Fault::kHttp500, .count = -1, .match = ""});
  ClientOptions o = FastOptions();
  o.max_attempts = 3;
  auto c = MakeClient(o);
  auto start = std::chrono::steady_clock::now();
  auto m = c->GetManifest(Ref(proxy_->host(), "f:latest"));
  ASSERT_FALSE(m.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(m.status().code(), StatusCode::kUnavailable);
  const std::string& msg = m.status().message();
  EXPECT_NE(msg.find(proxy_->host() + "/f: GET manifest 'latest'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("HTTP 500"), std::string::npos) << msg;
  EXPECT_NE(msg.find("3 attempts"), std::string::npos) << msg;
  EXPECT_EQ(proxy_->faults_injected(), 3);
}

TEST_F(FaultTest, PersistentResetsFailClearly) {
  proxy_->AddFault({.fault = Fault::kReset, .count = -1, .match = ""});
  ClientOptions o = FastOptions();
  o.max_attempts = 3;
  auto c = MakeClient(o);
  auto r = c->StatBlob(repo_, digest_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_NE(r.status().message().find("gave up after 3 attempts"), std::string::npos) << r.status().message();
}

TEST_F(FaultTest, StallsHitTheDeadline) {
  ClientOptions o = FastOptions();
  o.max_attempts = 2;
  o.low_speed_time = std::chrono::seconds(1);
  o.request_timeout = 3s;
  auto c = MakeClient(o);
  // One stall: the retry succeeds.
  proxy_->AddFault({.fault = Fault::kStall, .count = 1, .match = "/blobs/", .stall = 20s});
  auto r = c->GetBlobRange(repo_, digest_, 0, 10);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, std::vector<uint8_t>(bytes_.begin(), bytes_.begin() + 10));
  // Stalls forever: fails within attempts x deadline, not after the 20 s stall.
  proxy_->AddFault({.fault = Fault::kStall, .count = -1, .match = "/blobs/", .stall = 20s});
  auto start = std::chrono::steady_clock::now();
  auto r2 = c->GetBlobRange(repo_, digest_, 0, 10);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.status().code(), StatusCode::kDeadlineExceeded) << r2.status().ToString();
  EXPECT_LT(elapsed, 8s);
  EXPECT_NE(r2.status().message().find(proxy_->host() + "/f"), std::string::npos);
}

}  // namespace
}  // namespace lazycrypt::registry
