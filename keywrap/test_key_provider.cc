// lazycrypt-test-key-provider: an ocicrypt key provider for tests only (never installed). It wraps
// privopts with AES-256-GCM under a 32-byte key read from --key-file, and serves the keyprovider
// protocol either as a command (one JSON request on stdin, the answer on stdout) or, with
// --grpc ADDRESS, as keyprovider.KeyProviderService on that address until killed.
//   --name NAME            the provider name whose parameters it reads (default "test")
//   --require-param P      refuse (exit 3 / gRPC PERMISSION_DENIED) unless P is among them
//   --garbage              answer with bytes that are not JSON (to test error handling)
// Packet: "LCTKP1" || nonce (12) || ciphertext || tag (16).
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "common/file_io.h"
#include "crypto/aes_gcm.h"
#include "crypto/random.h"
#include "keywrap/keyprovider.grpc.pb.h"
#include "keywrap/keyprovider.h"

namespace lazycrypt::keywrap {
namespace {

namespace protocol = keyprovider_protocol;
constexpr std::string_view kMagic = "LCTKP1";

struct Flags {
  std::string key_file, grpc, name = "test", require_param;
  bool garbage = false;
};

Result<std::string> Handle(const Flags& flags, const crypto::AesGcm& aead, std::string_view request_json) {
  if (flags.garbage) return std::string("this is not json {");
  LC_ASSIGN_OR_RETURN(protocol::Request request, protocol::ParseRequest(request_json, flags.name));
  if (!flags.require_param.empty() &&
      std::find(request.params.begin(), request.params.end(), flags.require_param) ==
          request.params.end()) {
    return Status::PermissionDenied("parameter '" + flags.require_param + "' not given");
  }
  if (request.op == "keywrap") {
    std::vector<uint8_t> packet(kMagic.size() + crypto::kGcmNonceSize + request.payload.size() +
                                crypto::kGcmTagSize);
    std::copy(kMagic.begin(), kMagic.end(), packet.begin());
    auto nonce = std::span(packet).subspan(kMagic.size(), crypto::kGcmNonceSize);
    LC_RETURN_IF_ERROR(crypto::RandomBytes(nonce));
    auto ct = std::span(packet).subspan(kMagic.size() + crypto::kGcmNonceSize, request.payload.size());
    auto tag = std::span(packet).subspan(packet.size() - crypto::kGcmTagSize);
    LC_RETURN_IF_ERROR(aead.Seal(nonce, AsBytes(kMagic), request.payload.span(), ct, tag));
    return protocol::WrapResponse(packet);
  }
  ByteSpan packet = request.payload.span();
  if (packet.size() < kMagic.size() + crypto::kGcmNonceSize + crypto::kGcmTagSize ||
      AsStringView(packet.subspan(0, kMagic.size())) != kMagic) {
    return Status::Corruption("not a test provider packet");
  }
  const size_t n = packet.size() - kMagic.size() - crypto::kGcmNonceSize - crypto::kGcmTagSize;
  crypto::SecureBuffer plain(n);
  LC_RETURN_IF_ERROR(aead.Open(packet.subspan(kMagic.size(), crypto::kGcmNonceSize), AsBytes(kMagic),
                               packet.subspan(kMagic.size() + crypto::kGcmNonceSize, n),
                               packet.subspan(packet.size() - crypto::kGcmTagSize), plain.span()));
  crypto::SecureBuffer answer = protocol::UnwrapResponse(plain.span());
  return std::string(AsStringView(answer.span()));
}

class Service final : public ::keyprovider::KeyProviderService::Service {
 public:
  Service(const Flags& flags, const crypto::AesGcm& aead) : flags_(flags), aead_(aead) {}
  grpc::Status WrapKey(grpc::ServerContext*, const ::keyprovider::keyProviderKeyWrapProtocolInput* in,
                       ::keyprovider::keyProviderKeyWrapProtocolOutput* out) override {
    return Serve(*in, out);
  }
  grpc::Status UnWrapKey(grpc::ServerContext*, const ::keyprovider::keyProviderKeyWrapProtocolInput* in,
                         ::keyprovider::keyProviderKeyWrapProtocolOutput* out) override {
    return Serve(*in, out);
  }

 private:
  grpc::Status Serve(const ::keyprovider::keyProviderKeyWrapProtocolInput& in,
                     ::keyprovider::keyProviderKeyWrapProtocolOutput* out) {
    auto answer = Handle(flags_, aead_, in.keyproviderkeywrapprotocolinput());
    if (!answer.ok()) return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, answer.status().message());
    out->set_keyproviderkeywrapprotocoloutput(*answer);
    return grpc::Status::OK;
  }
  const Flags& flags_;
  const crypto::AesGcm& aead_;
};

int Main(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--key-file") flags.key_file = value();
    else if (a == "--grpc") flags.grpc = value();
    else if (a == "--name") flags.name = value();
    else if (a == "--require-param") flags.require_param = value();
    else if (a == "--garbage") flags.garbage = true;
    else {
      std::cerr << "unknown flag " << a << "\n";
      return 2;
    }
  }
  auto key = ReadFileBytes(flags.key_file);
  if (!key.ok()) {
    std::cerr << key.status().ToString() << "\n";
    return 2;
  }
  auto aead = crypto::AesGcm::Create(*key);
  if (!aead.ok()) {
    std::cerr << flags.key_file << ": " << aead.status().ToString() << "\n";
    return 2;
  }
  if (!flags.grpc.empty()) {
    Service service(flags, *aead);
    grpc::ServerBuilder builder;
    builder.AddListeningPort(flags.grpc, grpc::InsecureServerCredentials());
    builder.RegisterService(&service);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (!server) {
      std::cerr << "cannot listen on " << flags.grpc << "\n";
      return 1;
    }
    std::cout << "serving " << flags.grpc << std::endl;
    server->Wait();
    return 0;
  }
  std::string request((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  auto answer = Handle(flags, *aead, request);
  if (!answer.ok()) {
    std::cerr << answer.status().ToString() << "\n";
    return 3;
  }
  std::cout << *answer;
  return 0;
}

}  // namespace
}  // namespace lazycrypt::keywrap

int main(int argc, char** argv) { return lazycrypt::keywrap::Main(argc, argv); }
