// keyprovider: config parsing, the JSON protocol, KeyRing order, and both transports against our
// test provider (lazycrypt-test-key-provider) run for real as a subprocess / gRPC server.
#include "keywrap/keyprovider.h"

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "keywrap/keys.h"
#include "keywrap/test_util.h"
#include "tests/harness/subprocess.h"

namespace lazycrypt::keywrap {
namespace {

using testing::TempDir;
using testing::WriteFile;
namespace protocol = keyprovider_protocol;

std::string Text(ByteSpan b) { return std::string(AsStringView(b)); }

TEST(KeyProviderConfig, ParsesCommandAndGrpcProviders) {
  auto config = ParseKeyProviderConfig(R"({"key-providers":{
      "kms":{"cmd":{"path":"/usr/bin/kms","args":["-a","b"]}},
      "agent":{"grpc":"unix:///run/agent.sock"}}})",
                                       "p.json");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  ASSERT_EQ(config->providers.size(), 2u);
  const KeyProviderAttrs& kms = config->providers.at("kms");
  ASSERT_TRUE(kms.command.has_value());
  EXPECT_EQ(kms.command->path, "/usr/bin/kms");
  EXPECT_EQ(kms.command->args, (std::vector<std::string>{"-a", "b"}));
  EXPECT_EQ(config->providers.at("agent").grpc, "unix:///run/agent.sock");
  EXPECT_FALSE(config->providers.at("agent").command.has_value());
}

TEST(KeyProviderConfig, MissingFileIsNamed) {
  auto config = LoadKeyProviderConfig("/nonexistent/lazycrypt/ocicrypt_keyprovider.conf");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), StatusCode::kNotFound);
  EXPECT_NE(config.status().message().find("/nonexistent/lazycrypt/ocicrypt_keyprovider.conf"),
            std::string::npos);
}

TEST(KeyProviderConfig, RejectsBadJsonNamingTheFile) {
  TempDir dir;
  WriteFile(dir / "bad.conf", "{\"key-providers\": {");
  auto config = LoadKeyProviderConfig(dir / "bad.conf");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find("bad.conf"), std::string::npos)
      << config.status().ToString();
}

TEST(KeyProviderConfig, RejectsUnknownTransportAndBadMembers) {
  auto neither = ParseKeyProviderConfig(R"({"key-providers":{"x":{"http":"h"}}})", "c");
  ASSERT_FALSE(neither.ok());
  EXPECT_NE(neither.status().message().find("'x'"), std::string::npos);
  auto none = ParseKeyProviderConfig(R"({"key-providers":{"x":{}}})", "c");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("unknown transport"), std::string::npos)
      << none.status().ToString();
  auto both = ParseKeyProviderConfig(
      R"({"key-providers":{"x":{"grpc":"a:1","cmd":{"path":"/bin/true"}}}})", "c");
  EXPECT_FALSE(both.ok());
  EXPECT_FALSE(ParseKeyProviderConfig(R"({"key-providers":{"x":{"cmd":{"path":"rel"}}}})", "c").ok());
  EXPECT_FALSE(ParseKeyProviderConfig(R"({"key-providers":{"x":{"cmd":{"args":[]}}}})", "c").ok());
  EXPECT_FALSE(ParseKeyProviderConfig(R"({"key-providers":{"x":{"grpc":""}}})", "c").ok());
  EXPECT_FALSE(ParseKeyProviderConfig(R"({"providers":{}})", "c").ok());
  EXPECT_FALSE(ParseKeyProviderConfig(R"([])", "c").ok());
}

TEST(KeyProviderSpec, SplitsAtTheFirstColonLikeOcicrypt) {
  auto plain = ParseKeyProviderSpec("provider:kms");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->name, "kms");
  EXPECT_EQ(plain->params, "Enabled");
  auto with = ParseKeyProviderSpec("provider:kms:key=arn:aws:1");
  ASSERT_TRUE(with.ok());
  EXPECT_EQ(with->name, "kms");
  EXPECT_EQ(with->params, "key=arn:aws:1");
  EXPECT_FALSE(ParseKeyProviderSpec("provider:").ok());
  EXPECT_FALSE(ParseKeyProviderSpec("provider::x").ok());
  EXPECT_FALSE(ParseKeyProviderSpec("jwe:pub.pem").ok());
  EXPECT_TRUE(IsKeyProviderSpec("provider:x"));
  EXPECT_FALSE(IsKeyProviderSpec("key.pem"));
}

TEST(KeyProviderProtocol, RequestsRoundTripThroughTheProviderSide) {
  KeyProviderSpec spec{"kms", "key-7"};
  const std::string privopts = R"({"symkey":"AAAA","cipher":"X","digest":"sha256:00"})";
  crypto::SecureBuffer wrap = protocol::WrapRequest(spec, AsBytes(privopts));
  auto parsed = protocol::ParseRequest(AsStringView(wrap.span()), "kms");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->op, "keywrap");
  EXPECT_EQ(parsed->params, (std::vector<std::string>{"key-7"}));
  EXPECT_EQ(Text(parsed->payload.span()), privopts);
  // ocicrypt's member names and nesting.
  const std::string wrap_text(AsStringView(wrap.span()));
  EXPECT_NE(wrap_text.find("\"keywrapparams\":{\"ec\":{\"Parameters\":{\"kms\":[\""), std::string::npos);

  const std::vector<uint8_t> packet = {1, 2, 3, 0, 255};
  crypto::SecureBuffer unwrap = protocol::UnwrapRequest(spec, packet);
  auto p2 = protocol::ParseRequest(AsStringView(unwrap.span()), "kms");
  ASSERT_TRUE(p2.ok()) << p2.status().ToString();
  EXPECT_EQ(p2->op, "keyunwrap");
  EXPECT_EQ(std::vector<uint8_t>(p2->payload.span().begin(), p2->payload.span().end()), packet);
  EXPECT_NE(std::string(AsStringView(unwrap.span())).find("\"keyunwrapparams\":{\"dc\":{\"Parameters\""),
            std::string::npos);

  auto w = protocol::ParseWrapResponse(protocol::WrapResponse(packet), "p");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, packet);
  crypto::SecureBuffer answer = protocol::UnwrapResponse(AsBytes(privopts));
  auto u = protocol::ParseUnwrapResponse(AsStringView(answer.span()), "p");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(Text(u->span()), privopts);
}

TEST(KeyProviderProtocol, MalformedProviderOutputIsAClearError) {
  auto not_json = protocol::ParseUnwrapResponse("Segmentation fault", "key provider 'kms'");
  ASSERT_FALSE(not_json.ok());
  EXPECT_EQ(not_json.status().code(), StatusCode::kCorruption);
  EXPECT_NE(not_json.status().message().find("key provider 'kms' output"), std::string::npos)
      << not_json.status().ToString();
  auto empty = protocol::ParseUnwrapResponse(R"({"keyunwrapresults":{"optsdata":null}})", "p");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("empty keyunwrapresults.optsdata"), std::string::npos);
  EXPECT_FALSE(protocol::ParseUnwrapResponse(R"({"keyunwrapresults":{"optsdata":"!!"}})", "p").ok());
  EXPECT_FALSE(protocol::ParseWrapResponse(R"({"keyunwrapresults":{"optsdata":"AA=="}})", "p").ok());
  EXPECT_FALSE(protocol::ParseWrapResponse(R"("x")", "p").ok());
}

class NamedProvider final : public KeyProvider {
 public:
  explicit NamedProvider(std::string name) : name_(std::move(name)) {}
  const std::string& name() const override { return name_; }
  Result<std::vector<uint8_t>> WrapKey(ByteSpan) const override { return Status::Unsupported("x"); }
  Result<crypto::SecureBuffer> UnwrapKey(ByteSpan) const override { return Status::Unsupported("x"); }

 private:
  std::string name_;
};

TEST(KeyRing, KeepsKeysAndProvidersInOrder) {
  std::vector<PrivateKey> keys;
  for (const auto* f : {&testing::RsaKeyFiles(2048), &testing::EcKeyFiles("P-256")}) {
    auto k = PrivateKey::LoadFile(f->private_pem, std::nullopt);
    ASSERT_TRUE(k.ok());
    keys.push_back(std::move(k).value());
  }
  KeyRing ring(keys);  // shares: the caller's keys stay usable
  EXPECT_EQ(keys.size(), 2u);
  ring.AddProvider(std::make_shared<NamedProvider>("b"));
  ring.AddProvider(std::make_shared<NamedProvider>("a"));
  ASSERT_EQ(ring.keys().size(), 2u);
  EXPECT_EQ(ring.keys()[0].name(), keys[0].name());
  EXPECT_EQ(ring.keys()[0].evp_pkey(), keys[0].evp_pkey());
  EXPECT_EQ(ring.providers()[0]->name(), "b");
  EXPECT_EQ(ring.Describe(),
            "[" + keys[0].name() + ", " + keys[1].name() + ", provider:b, provider:a]");
  EXPECT_FALSE(ring.empty());
  EXPECT_TRUE(KeyRing().empty());
  EXPECT_EQ(KeyProviderAnnotation("kms"), "org.opencontainers.image.enc.keys.provider.kms");
}

// Our test provider, for real.
class KeyProviderTransport : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(dir_ / "kek", std::ios::binary) << std::string(32, '\x42');
  }
  KeyProviderConfig Config(const std::string& json) {
    auto c = ParseKeyProviderConfig(json, "test.conf");
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(c).value() : KeyProviderConfig{};
  }
  std::string CmdJson(const std::string& extra = "") {
    return R"({"key-providers":{"test":{"cmd":{"path":")" + std::string(TEST_KEY_PROVIDER) +
           R"(","args":["--key-file",")" + (dir_ / "kek").string() + "\"" + extra + "]}}}}";
  }
  TempDir dir_;
};

void ExpectRoundTrip(const KeyProvider& provider) {
  const std::string privopts = R"({"symkey":"c2VjcmV0","cipher":"LAZYCRYPT_GCM_V1"})";
  auto packet = provider.WrapKey(AsBytes(privopts));
  ASSERT_TRUE(packet.ok()) << packet.status().ToString();
  EXPECT_EQ(std::string(packet->begin(), packet->end()).find("c2VjcmV0"), std::string::npos);
  auto back = provider.UnwrapKey(*packet);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(Text(back->span()), privopts);
  (*packet)[packet->size() - 1] ^= 1;
  EXPECT_FALSE(provider.UnwrapKey(*packet).ok());
}

TEST_F(KeyProviderTransport, CommandWrapsAndUnwraps) {
  auto provider = MakeKeyProvider(Config(CmdJson()), {"test", "Enabled"});
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  ExpectRoundTrip(**provider);
}

TEST_F(KeyProviderTransport, CommandParamsReachTheProvider) {
  KeyProviderConfig config = Config(CmdJson(R"(,"--require-param","tenant-9")"));
  auto right = MakeKeyProvider(config, {"test", "tenant-9"});
  ASSERT_TRUE(right.ok());
  EXPECT_TRUE((*right)->WrapKey(AsBytes(std::string("x"))).ok());
  auto wrong = MakeKeyProvider(config, {"test", "Enabled"});
  ASSERT_TRUE(wrong.ok());
  auto refused = (*wrong)->WrapKey(AsBytes(std::string("x")));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("exited with status 3"), std::string::npos)
      << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("tenant-9"), std::string::npos);
}

TEST_F(KeyProviderTransport, CommandGarbageOutputIsCorruption) {
  auto provider = MakeKeyProvider(Config(CmdJson(R"(,"--garbage")")), {"test", "Enabled"});
  ASSERT_TRUE(provider.ok());
  auto r = (*provider)->UnwrapKey(AsBytes(std::string("p")));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
  EXPECT_NE(r.status().message().find("key provider 'test'"), std::string::npos) << r.status().ToString();
}

TEST_F(KeyProviderTransport, CommandThatHangsIsKilledAtTheDeadline) {
  KeyProviderConfig config =
      Config(R"({"key-providers":{"slow":{"cmd":{"path":"/bin/sleep","args":["30"]}}}})");
  KeyProviderOptions options;
  options.timeout = std::chrono::milliseconds(300);
  auto provider = MakeKeyProvider(config, {"slow", "Enabled"}, options);
  ASSERT_TRUE(provider.ok());
  auto r = (*provider)->UnwrapKey(AsBytes(std::string("p")));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
}

TEST_F(KeyProviderTransport, UnconfiguredProviderIsNamed) {
  auto provider = MakeKeyProvider(Config(CmdJson()), {"kms", "Enabled"});
  ASSERT_FALSE(provider.ok());
  EXPECT_EQ(provider.status().code(), StatusCode::kNotFound);
  EXPECT_NE(provider.status().message().find("'kms' is not configured in test.conf (it has: [test])"),
            std::string::npos)
      << provider.status().ToString();
}

TEST_F(KeyProviderTransport, GrpcOnAUnixSocketWrapsAndUnwraps) {
  const std::string address = "unix://" + (dir_ / "kp.sock").string();
  auto server = harness::Subprocess::Start(
      {TEST_KEY_PROVIDER, "--key-file", (dir_ / "kek").string(), "--grpc", address});
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  for (int i = 0; i < 100 && !std::filesystem::exists(dir_ / "kp.sock"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(std::filesystem::exists(dir_ / "kp.sock"));
  KeyProviderConfig config =
      Config(R"({"key-providers":{"agent":{"grpc":")" + address + R"("}}})");
  auto providers = MakeAllKeyProviders(config);
  ASSERT_EQ(providers.size(), 1u);
  ExpectRoundTrip(*providers[0]);
  (*server)->Stop();
  // The server is gone: a clear error naming the provider, within the deadline.
  KeyProviderOptions options;
  options.timeout = std::chrono::milliseconds(2000);
  auto gone = MakeKeyProvider(config, {"agent", "Enabled"}, options);
  ASSERT_TRUE(gone.ok());
  auto r = (*gone)->UnwrapKey(AsBytes(std::string("p")));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("key provider 'agent' (grpc "), std::string::npos)
      << r.status().ToString();
}

}  // namespace
}  // namespace lazycrypt::keywrap
