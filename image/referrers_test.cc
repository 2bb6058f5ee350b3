// image/referrers.h: the Referrers API path with an in-memory registry::Client that has the API
// (the test registry does not), and the tag-schema fallback against a real docker-registry 2.8
// (tests/harness/registry_process.h).
#include "image/referrers.h"

#include <functional>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "crypto/digest.h"
#include "tests/harness/fake_http_server.h"
#include "tests/harness/registry_process.h"

namespace lazycrypt::image {
namespace {

using ::testing::HasSubstr;

std::string DigestOf(ByteSpan bytes) { return crypto::OciDigest(crypto::Sha256::Of(bytes)); }
std::string DigestOf(const std::string& s) { return DigestOf(AsBytes(s)); }

// An in-memory registry with (api = true) or without the Referrers API. Only what referrers use
// is implemented; blob reads are not.
class FakeRegistry final : public registry::Client {
 public:
  explicit FakeRegistry(bool api) : api_(api) {}

  std::map<std::string, registry::Manifest> manifests;  // by digest
  std::map<std::string, std::string> tags;              // tag → digest
  std::map<std::string, std::vector<uint8_t>> blobs;
  int referrers_calls = 0;
  int tag_puts = 0;
  // When set, GetReferrers answers these pages instead of computing them.
  std::optional<std::vector<ReferrersPage>> canned_pages;
  // Called after each tag PUT (e.g. another pusher's interleaved update).
  std::function<void(const std::string& tag)> after_tag_put;

  Result<registry::Manifest> GetManifest(const registry::Reference& ref) override {
    std::string digest = ref.digest;
    if (digest.empty()) {
      auto t = tags.find(ref.tag);
      if (t == tags.end()) return Status::NotFound("manifest '" + ref.tag + "' not found");
      digest = t->second;
    }
    auto it = manifests.find(digest);
    if (it == manifests.end()) return Status::NotFound("manifest " + digest + " not found");
    return it->second;
  }
  Result<std::string> PutManifest(const registry::Reference& ref, ByteSpan bytes,
                                  std::string_view media_type) override {
    LC_ASSIGN_OR_RETURN(auto answer, PutManifestWithAnswer(ref, bytes, media_type));
    return answer.digest;
  }
  Result<PutManifestAnswer> PutManifestWithAnswer(const registry::Reference& ref, ByteSpan bytes,
                                                  std::string_view media_type) override {
    registry::Manifest m;
    m.bytes.assign(bytes.begin(), bytes.end());
    m.media_type = std::string(media_type);
    m.digest = DigestOf(bytes);
    manifests[m.digest] = m;
    if (!ref.tag.empty()) {
      tags[ref.tag] = m.digest;
      ++tag_puts;
      if (after_tag_put) {
        auto hook = std::move(after_tag_put);  // not re-entered by the hook's own PUT
        hook(ref.tag);
        after_tag_put = std::move(hook);
      }
    }
    PutManifestAnswer answer{m.digest, ""};
    auto j = nlohmann::json::parse(AsStringView(bytes));
    if (api_ && j.contains("subject")) answer.oci_subject = j["subject"]["digest"];
    return answer;
  }
  Result<std::vector<ReferrersPage>> GetReferrers(const registry::Reference& repo,
                                                  std::string_view subject_digest,
                                                  std::string_view artifact_type) override {
    ++referrers_calls;
    if (!api_) return Client::GetReferrers(repo, subject_digest, artifact_type);
    if (canned_pages) return *canned_pages;
    // Like a registry that does not filter (no OCI-Filters-Applied): every referrer.
    nlohmann::json index = {{"schemaVersion", 2},
                            {"mediaType", kMediaTypeOciIndex},
                            {"manifests", nlohmann::json::array()}};
    for (const auto& [digest, m] : manifests) {
      auto j = nlohmann::json::parse(AsStringView(m.bytes));
      if (!j.contains("subject") || j["subject"]["digest"] != subject_digest) continue;
      nlohmann::json d = {{"mediaType", m.media_type}, {"digest", digest}, {"size", m.bytes.size()}};
      if (j.contains("artifactType")) d["artifactType"] = j["artifactType"];
      if (j.contains("annotations")) d["annotations"] = j["annotations"];
      index["manifests"].push_back(d);
    }
    ReferrersPage page;
    std::string s = index.dump();
    page.bytes.assign(s.begin(), s.end());
    page.media_type = std::string(kMediaTypeOciIndex);
    return std::vector<ReferrersPage>{page};
  }
  Result<uint64_t> StatBlob(const registry::Reference&, std::string_view digest) override {
    auto it = blobs.find(std::string(digest));
    if (it == blobs.end()) return Status::NotFound("blob");
    return it->second.size();
  }
  Status GetBlob(const registry::Reference&, std::string_view, OutputStream&) override {
    return Status::Unsupported("fake");
  }
  Result<std::vector<uint8_t>> GetBlobRange(const registry::Reference&, std::string_view, uint64_t,
                                            uint64_t) override {
    return Status::Unsupported("fake");
  }
  Result<std::vector<std::vector<uint8_t>>> GetBlobRanges(const registry::Reference&,
                                                          std::string_view,
                                                          std::span<const registry::ByteRange>) override {
    return Status::Unsupported("fake");
  }
  Result<std::unique_ptr<BlobSource>> OpenBlob(const registry::Reference&, std::string_view,
                                               uint64_t) override {
    return Status::Unsupported("fake");
  }
  Status PushBlob(const registry::Reference&, std::string_view digest, BlobSource& data,
                  std::string_view) override {
    std::vector<uint8_t> bytes(data.size());
    LC_RETURN_IF_ERROR(data.ReadAt(0, bytes));
    if (DigestOf(bytes) != digest) return Status::InvalidArgument("digest mismatch");
    blobs[std::string(digest)] = std::move(bytes);
    return Status::Ok();
  }
  Result<bool> MountBlob(const registry::Reference&, std::string_view, std::string_view) override {
    return false;
  }
  Result<std::unique_ptr<registry::BlobUpload>> StartUpload(const registry::Reference&) override {
    return Status::Unsupported("fake");
  }

 private:
  bool api_;
};

const registry::Reference kRepo{"registry.test", "team/app", "", ""};

Descriptor Subject() {
  Descriptor d;
  d.media_type = std::string(kMediaTypeOciManifest);
  d.digest = DigestOf(std::string("the image manifest"));
  d.size = 18;
  return d;
}

std::vector<ArtifactBlob> Blobs(const std::string& text) {
  ArtifactBlob b;
  b.media_type = "application/vnd.test.blob";
  b.bytes.assign(text.begin(), text.end());
  b.annotations["org.test.layer"] = text;
  return {b};
}

TEST(ReferrersTag, FollowsTheTagSchema) {
  EXPECT_EQ(ReferrersTag("sha256:" + std::string(64, 'a')), "sha256-" + std::string(64, 'a'));
  EXPECT_EQ(ReferrersTag("sha512:" + std::string(128, 'b')), "sha512-" + std::string(64, 'b'));
  // The spec's third example: both parts truncated, separators replaced.
  EXPECT_EQ(ReferrersTag("test+algorithm+using+algorithm+separators+and+lots+of+characters+to+"
                         "excercise+overall+truncation:alsoSome=InTheEncodedSectionToShowHyphen"
                         "ReplacementAndLotsAndLotsOfCharactersToExcerciseEncodedTruncation"),
            "test-algorithm-using-algorithm-s-alsoSome-InTheEncodedSectionToShowHyphenReplacement"
            "AndLotsAndLot");
}

TEST(Referrers, ApiPathPushesManifestWithSubjectAndListsFilteredByType) {
  FakeRegistry reg(/*api=*/true);
  auto a = PushReferrer(reg, kRepo, Subject(), "application/vnd.test.a", Blobs("one"),
                        {{"org.test.note", "first"}});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto b = PushReferrer(reg, kRepo, Subject(), "application/vnd.test.b", Blobs("two"));
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(reg.tag_puts, 0) << "the registry answered OCI-Subject: no fallback tag to maintain";
  EXPECT_EQ(reg.blobs.count(std::string(kOciEmptyDigest)), 1u);

  // The manifest: artifactType, subject, empty config, one layer with its annotation.
  auto m = nlohmann::json::parse(AsStringView(reg.manifests.at(*a).bytes));
  EXPECT_EQ(m["artifactType"], "application/vnd.test.a");
  EXPECT_EQ(m["subject"]["digest"], Subject().digest);
  EXPECT_EQ(m["config"]["mediaType"], kMediaTypeOciEmpty);
  EXPECT_EQ(m["config"]["size"], 2);
  EXPECT_EQ(m["layers"][0]["annotations"]["org.test.layer"], "one");
  EXPECT_EQ(m["annotations"]["org.test.note"], "first");

  auto listed = ListReferrers(reg, kRepo, Subject().digest, "application/vnd.test.a");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 1u) << "filtered here: the fake registry does not filter";
  EXPECT_EQ((*listed)[0].digest, *a);
  EXPECT_EQ(ArtifactTypeOf((*listed)[0]), "application/vnd.test.a");
  EXPECT_EQ((*listed)[0].Annotation("org.test.note"), "first");

  auto all = ListReferrers(reg, kRepo, Subject().digest, "");
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->size(), 2u);

  auto fetched = FetchReferrerManifest(reg, kRepo, (*listed)[0], Subject().digest,
                                       "application/vnd.test.a");
  ASSERT_TRUE(fetched.ok()) << fetched.status().ToString();
  ASSERT_EQ(fetched->manifest.layers.size(), 1u);
  EXPECT_EQ(fetched->manifest.layers[0].Annotation("org.test.layer"), "one");
}

TEST(Referrers, ApiAnswerThatIsNotAnIndexIsAnErrorNotAnEmptyList) {
  FakeRegistry reg(/*api=*/true);
  registry::Client::ReferrersPage page;
  std::string junk = R"({"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:zz"}]})";
  page.bytes.assign(junk.begin(), junk.end());
  reg.canned_pages = std::vector<registry::Client::ReferrersPage>{page};
  auto listed = ListReferrers(reg, kRepo, Subject().digest, "");
  ASSERT_FALSE(listed.ok());
  EXPECT_EQ(listed.status().code(), StatusCode::kCorruption) << listed.status().ToString();
  EXPECT_THAT(listed.status().message(), HasSubstr("referrers of " + Subject().digest));
}

TEST(Referrers, ListedEntriesThatAreNotManifestsAreDroppedAndDuplicatesKeptOnce) {
  FakeRegistry reg(/*api=*/true);
  std::string d1 = DigestOf(std::string("m1"));
  nlohmann::json index = {
      {"schemaVersion", 2},
      {"manifests",
       {{{"mediaType", "application/octet-stream"}, {"digest", d1}, {"size", 2}, {"artifactType", "t"}},
        {{"mediaType", kMediaTypeOciManifest}, {"digest", d1}, {"size", 2}, {"artifactType", "t"}},
        {{"mediaType", kMediaTypeOciManifest}, {"digest", d1}, {"size", 2}, {"artifactType", "t"}}}}};
  registry::Client::ReferrersPage page;
  std::string s = index.dump();
  page.bytes.assign(s.begin(), s.end());
  reg.canned_pages = std::vector<registry::Client::ReferrersPage>{page, page};
  auto listed = ListReferrers(reg, kRepo, Subject().digest, "t");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_EQ(listed->size(), 1u);
}

TEST(Referrers, FetchRefusesAManifestWhoseSubjectOrTypeIsNotTheListedOne) {
  FakeRegistry reg(/*api=*/true);
  Descriptor other = Subject();
  other.digest = DigestOf(std::string("another image"));
  auto pushed = PushReferrer(reg, kRepo, other, "application/vnd.test.a", Blobs("x"));
  ASSERT_TRUE(pushed.ok()) << pushed.status().ToString();
  Descriptor listed;
  listed.media_type = std::string(kMediaTypeOciManifest);
  listed.digest = *pushed;
  listed.size = reg.manifests.at(*pushed).bytes.size();
  // A list (API answer or fallback tag: anyone may write it) claims it refers to Subject().
  auto fetched = FetchReferrerManifest(reg, kRepo, listed, Subject().digest, "application/vnd.test.a");
  ASSERT_FALSE(fetched.ok());
  EXPECT_THAT(fetched.status().message(), HasSubstr("its subject is " + other.digest));
  auto typed = FetchReferrerManifest(reg, kRepo, listed, other.digest, "application/vnd.test.b");
  ASSERT_FALSE(typed.ok());
  EXPECT_THAT(typed.status().message(), HasSubstr("artifact type application/vnd.test.a"));
  listed.size += 1;
  auto sized = FetchReferrerManifest(reg, kRepo, listed, other.digest, "");
  ASSERT_FALSE(sized.ok());
  EXPECT_THAT(sized.status().message(), HasSubstr("listed as"));
}

TEST(Referrers, FallbackTagWithoutApiKeepsOthersAndNeverListsTwice) {
  FakeRegistry reg(/*api=*/false);
  // Someone else's referrer already in the tag.
  std::string foreign = DigestOf(std::string("a signature"));
  nlohmann::json index = {{"schemaVersion", 2},
                          {"mediaType", kMediaTypeOciIndex},
                          {"manifests",
                           {{{"mediaType", kMediaTypeOciManifest},
                             {"digest", foreign},
                             {"size", 11},
                             {"artifactType", "application/vnd.test.sig"}}}}};
  std::string s = index.dump();
  ASSERT_TRUE(reg.PutManifest({kRepo.registry, kRepo.repository, ReferrersTag(Subject().digest), ""},
                              AsBytes(s), kMediaTypeOciIndex)
                  .ok());
  auto a = PushReferrer(reg, kRepo, Subject(), "application/vnd.test.a", Blobs("one"));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto again = PushReferrer(reg, kRepo, Subject(), "application/vnd.test.a", Blobs("one"));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, *a);

  auto all = ListReferrers(reg, kRepo, Subject().digest, "");
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].digest, foreign);
  EXPECT_EQ((*all)[1].digest, *a);
  auto sigs = ListReferrers(reg, kRepo, Subject().digest, "application/vnd.test.sig");
  ASSERT_TRUE(sigs.ok());
  EXPECT_EQ(sigs->size(), 1u);
}

// Another pusher's read-modify-write interleaves with ours: it read the tag before our PUT and
// writes its version (without our entry) right after. Reading back, we add ours again; both stay.
TEST(Referrers, AnInterleavedTagUpdateThatDropsOurEntryIsRepaired) {
  FakeRegistry reg(/*api=*/false);
  const registry::Reference tag_ref{kRepo.registry, kRepo.repository, ReferrersTag(Subject().digest), ""};
  std::string theirs = DigestOf(std::string("their referrer"));
  int interleaved = 0;
  reg.after_tag_put = [&](const std::string&) {
    if (interleaved++ > 0) return;
    nlohmann::json index = {{"schemaVersion", 2},
                            {"mediaType", kMediaTypeOciIndex},
                            {"manifests",
                             {{{"mediaType", kMediaTypeOciManifest},
                               {"digest", theirs},
                               {"size", 9},
                               {"artifactType", "application/vnd.test.sig"}}}}};
    std::string s = index.dump();
    ASSERT_TRUE(reg.PutManifest(tag_ref, AsBytes(s), kMediaTypeOciIndex).ok());
  };
  auto ours = PushReferrer(reg, kRepo, Subject(), "application/vnd.test.a", Blobs("one"));
  ASSERT_TRUE(ours.ok()) << ours.status().ToString();
  auto all = ListReferrers(reg, kRepo, Subject().digest, "");
  ASSERT_TRUE(all.ok());
  std::set<std::string> digests;
  for (const auto& d : *all) digests.insert(d.digest);
  EXPECT_EQ(digests, (std::set<std::string>{theirs, *ours}));
}

// A tag that keeps losing our entry is an error after a few attempts, not a silent loss.
TEST(Referrers, ATagThatKeepsLosingOurEntryIsAnError) {
  FakeRegistry reg(/*api=*/false);
  const registry::Reference tag_ref{kRepo.registry, kRepo.repository, ReferrersTag(Subject().digest), ""};
  std::string empty = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]})";
  reg.after_tag_put = [&](const std::string&) {
    ASSERT_TRUE(reg.PutManifest(tag_ref, AsBytes(empty), kMediaTypeOciIndex).ok());
  };
  auto ours = PushReferrer(reg, kRepo, Subject(), "application/vnd.test.a", Blobs("one"));
  ASSERT_FALSE(ours.ok());
  EXPECT_EQ(ours.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(ours.status().message(), HasSubstr("lost it 3 times"));
}

TEST(Referrers, NoApiAndNoTagMeansNoReferrers) {
  FakeRegistry reg(/*api=*/false);
  auto listed = ListReferrers(reg, kRepo, Subject().digest, "application/vnd.test.a");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_TRUE(listed->empty());
  EXPECT_EQ(reg.referrers_calls, 1);
}

TEST(Referrers, RejectsAMalformedSubjectDigest) {
  FakeRegistry reg(/*api=*/true);
  EXPECT_EQ(ListReferrers(reg, kRepo, "sha256:nothex", "").status().code(), StatusCode::kCorruption);
  Descriptor bad = Subject();
  bad.digest = "latest";
  EXPECT_FALSE(PushReferrer(reg, kRepo, bad, "t", {}).ok());
}

// ---- against a real docker-registry 2.8 (no Referrers API: the tag fallback) ----

class ReferrersRegistry : public ::testing::Test {
 protected:
  void SetUp() override {
    auto reg = harness::RegistryProcess::Start();
    ASSERT_TRUE(reg.ok()) << reg.status().ToString();
    registry_ = std::move(reg).value();
    registry::ClientOptions options;
    options.plain_http = true;
    auto client = registry::Client::Create(options);
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(client).value();
    repo_ = {registry_->host(), "team/app", "", ""};
    // A real image manifest as the subject (the registry needs its blobs).
    std::string config = R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}})";
    MemoryBlobSource config_blob(std::vector<uint8_t>(config.begin(), config.end()));
    ASSERT_TRUE(client_->PushBlob(repo_, DigestOf(config), config_blob).ok());
    Manifest m;
    m.media_type = std::string(kMediaTypeOciManifest);
    m.config.media_type = std::string(kMediaTypeOciConfig);
    m.config.digest = DigestOf(config);
    m.config.size = config.size();
    std::string bytes = SerializeManifest(m);
    auto digest = client_->PutManifest({repo_.registry, repo_.repository, "v1", ""}, AsBytes(bytes),
                                       kMediaTypeOciManifest);
    ASSERT_TRUE(digest.ok()) << digest.status().ToString();
    subject_.media_type = std::string(kMediaTypeOciManifest);
    subject_.digest = *digest;
    subject_.size = bytes.size();
  }

  std::unique_ptr<harness::RegistryProcess> registry_;
  std::unique_ptr<registry::Client> client_;
  registry::Reference repo_;
  Descriptor subject_;
};

TEST_F(ReferrersRegistry, TwoReferrersPushedThroughTheTagFallbackAreListedAndOthersFiltered) {
  auto none = ListReferrers(*client_, repo_, subject_.digest, "application/vnd.test.a");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_TRUE(none->empty());

  auto a1 = PushReferrer(*client_, repo_, subject_, "application/vnd.test.a", Blobs("one"));
  ASSERT_TRUE(a1.ok()) << a1.status().ToString() << "\n" << registry_->Log();
  auto a2 = PushReferrer(*client_, repo_, subject_, "application/vnd.test.a", Blobs("two"),
                         {{"org.test.note", "second"}});
  ASSERT_TRUE(a2.ok()) << a2.status().ToString();
  auto b = PushReferrer(*client_, repo_, subject_, "application/vnd.test.b", Blobs("three"));
  ASSERT_TRUE(b.ok()) << b.status().ToString();

  // The registry really has no API (the fallback was taken) and the tag holds all three.
  auto tag = client_->GetManifest({repo_.registry, repo_.repository, ReferrersTag(subject_.digest), ""});
  ASSERT_TRUE(tag.ok()) << tag.status().ToString();
  EXPECT_EQ(tag->media_type, kMediaTypeOciIndex);

  auto listed = ListReferrers(*client_, repo_, subject_.digest, "application/vnd.test.a");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 2u);
  std::set<std::string> digests{(*listed)[0].digest, (*listed)[1].digest};
  EXPECT_EQ(digests, (std::set<std::string>{*a1, *a2}));
  for (const Descriptor& d : *listed) {
    auto fetched = FetchReferrerManifest(*client_, repo_, d, subject_.digest, "application/vnd.test.a");
    ASSERT_TRUE(fetched.ok()) << fetched.status().ToString();
    ASSERT_EQ(fetched->manifest.layers.size(), 1u);
    std::vector<uint8_t> blob;
    MemoryOutputStream out;
    ASSERT_TRUE(client_->GetBlob(repo_, fetched->manifest.layers[0].digest, out).ok());
    std::string text(out.bytes().begin(), out.bytes().end());
    EXPECT_EQ(text, d.digest == *a1 ? "one" : "two");
  }
  auto others = ListReferrers(*client_, repo_, subject_.digest, "application/vnd.test.b");
  ASSERT_TRUE(others.ok());
  ASSERT_EQ(others->size(), 1u);
  EXPECT_EQ((*others)[0].digest, *b);
}

// ---- the real registry::Client against a scripted server with the Referrers API ----

using harness::FakeHttpServer;
using harness::FakeRequest;
using harness::FakeResponse;

std::unique_ptr<registry::Client> PlainClient() {
  registry::ClientOptions options;
  options.plain_http = true;
  options.max_attempts = 1;
  auto client = registry::Client::Create(options);
  EXPECT_TRUE(client.ok());
  return client.ok() ? std::move(client).value() : nullptr;
}

std::string IndexOf(const std::vector<std::pair<std::string, std::string>>& digest_and_type) {
  nlohmann::json index = {{"schemaVersion", 2}, {"mediaType", kMediaTypeOciIndex},
                          {"manifests", nlohmann::json::array()}};
  for (const auto& [digest, type] : digest_and_type) {
    index["manifests"].push_back(
        {{"mediaType", kMediaTypeOciManifest}, {"digest", digest}, {"size", 100}, {"artifactType", type}});
  }
  return index.dump();
}

TEST(ReferrersHttp, ApiPagesAreFollowedAndFilteredHereToo) {
  const std::string subject = Subject().digest;
  const std::string a1 = DigestOf(std::string("a1")), a2 = DigestOf(std::string("a2"));
  const std::string b1 = DigestOf(std::string("b1"));
  const std::string c1 = DigestOf(std::string("c1"));
  const std::string path = "/v2/team/app/referrers/" + subject;
  const std::string tag_path = "/v2/team/app/manifests/" + ReferrersTag(subject);
  auto server = FakeHttpServer::Start([&](const FakeRequest& r) -> FakeResponse {
    if (r.Path() == tag_path) {
      // A stale fallback tag: asked in parallel with the API, its answer must be dropped.
      return {200, {{"Content-Type", std::string(kMediaTypeOciIndex)}}, IndexOf({{c1, "type/a"}})};
    }
    if (r.Path() != path) return {404, {}, ""};
    std::vector<std::pair<std::string, std::string>> ct = {{"Content-Type", std::string(kMediaTypeOciIndex)}};
    if (r.target.find("last=") == std::string::npos) {
      ct.push_back({"Link", "<" + path + "?n=2&last=x>; rel=\"next\""});
      return {200, ct, IndexOf({{a1, "type/a"}, {b1, "type/b"}})};
    }
    return {200, ct, IndexOf({{a2, "type/a"}})};  // a registry that ignored the filter
  });
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto client = PlainClient();
  registry::Reference repo{(*server)->host(), "team/app", "", ""};
  auto listed = ListReferrers(*client, repo, subject, "type/a");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].digest, a1);
  EXPECT_EQ((*listed)[1].digest, a2);
  // The API's two pages (the fallback tag may have been asked alongside; its answer, c1, is not
  // in the list).
  std::vector<FakeRequest> api;
  for (const auto& r : (*server)->Requests()) {
    if (r.Path() == path) api.push_back(r);
  }
  ASSERT_EQ(api.size(), 2u);
  EXPECT_THAT(api[0].target, HasSubstr("?artifactType=type/a"));
  for (const Descriptor& d : *listed) EXPECT_NE(d.digest, c1) << "the fallback's answer was used";
}

TEST(ReferrersHttp, ANextPageOnAnotherHostIsRefused) {
  const std::string subject = Subject().digest;
  auto server = FakeHttpServer::Start([&](const FakeRequest&) -> FakeResponse {
    return {200,
            {{"Content-Type", std::string(kMediaTypeOciIndex)},
             {"Link", "<http://elsewhere.invalid/v2/team/app/referrers/x?last=1>; rel=\"next\""}},
            IndexOf({})};
  });
  ASSERT_TRUE(server.ok());
  auto client = PlainClient();
  auto listed = ListReferrers(*client, {(*server)->host(), "team/app", "", ""}, subject, "");
  ASSERT_FALSE(listed.ok());
  EXPECT_THAT(listed.status().message(), HasSubstr("links its next page elsewhere"));
}

// A registry that answers the manifest PUT with OCI-Subject: the referrers tag is not touched.
// Without the header: the tag is read (404) and written with the one referrer.
class ReferrersPush : public ::testing::TestWithParam<bool> {};

TEST_P(ReferrersPush, TheTagIsMaintainedOnlyWithoutAnOciSubjectAnswer) {
  const bool api = GetParam();
  const Descriptor subject = Subject();
  std::mutex mu;
  std::string tag_body;
  auto server = FakeHttpServer::Start([&](const FakeRequest& r) -> FakeResponse {
    const std::string blobs = "/v2/team/app/blobs/";
    if (r.method == "HEAD" && r.Path().rfind(blobs, 0) == 0) return {404, {}, ""};
    if (r.method == "POST" && r.Path() == blobs + "uploads/") {
      return {202, {{"Location", "/v2/team/app/blobs/uploads/u1"}}, ""};
    }
    if (r.method == "PUT" && r.Path() == blobs + "uploads/u1") return {201, {}, ""};
    if (r.method == "PUT" && r.Path().rfind("/v2/team/app/manifests/", 0) == 0) {
      std::vector<std::pair<std::string, std::string>> h;
      if (r.Path().find("/manifests/sha256:") != std::string::npos && api) {
        h.push_back({"OCI-Subject", subject.digest});
      } else if (r.Path() == "/v2/team/app/manifests/" + ReferrersTag(subject.digest)) {
        std::lock_guard<std::mutex> l(mu);
        tag_body = r.body;
      }
      return {201, h, ""};
    }
    if (r.method == "GET" && r.Path() == "/v2/team/app/manifests/" + ReferrersTag(subject.digest)) {
      std::lock_guard<std::mutex> l(mu);
      if (!tag_body.empty()) {
        return {200, {{"Content-Type", std::string(kMediaTypeOciIndex)}}, tag_body};
      }
    }
    return {404, {}, ""};
  });
  ASSERT_TRUE(server.ok());
  auto client = PlainClient();
  registry::Reference repo{(*server)->host(), "team/app", "", ""};
  auto pushed = PushReferrer(*client, repo, subject, "type/a", Blobs("one"));
  ASSERT_TRUE(pushed.ok()) << pushed.status().ToString();
  size_t tag_requests = 0;
  for (const auto& r : (*server)->Requests()) {
    if (r.Path() == "/v2/team/app/manifests/" + ReferrersTag(subject.digest)) ++tag_requests;
  }
  if (api) {
    EXPECT_EQ(tag_requests, 0u);
    return;
  }
  EXPECT_EQ(tag_requests, 3u) << "a GET (404), a PUT and a GET (read back) of the referrers tag";
  std::lock_guard<std::mutex> l(mu);
  auto index = ParseIndex(AsBytes(tag_body));
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  ASSERT_EQ(index->manifests.size(), 1u);
  EXPECT_EQ(index->manifests[0].digest, *pushed);
  EXPECT_EQ(ArtifactTypeOf(index->manifests[0]), "type/a");
}

INSTANTIATE_TEST_SUITE_P(OciSubject, ReferrersPush, ::testing::Bool());

}  // namespace
}  // namespace lazycrypt::image
