// ocicrypt's keyprovider protocol (containers/ocicrypt keywrap/keyprovider, config/keyprovider-config):
// a layer key is wrapped and unwrapped by an external program or gRPC service (a KMS, an attestation
// agent) instead of a key file.
//
// Configuration: the JSON file named by OCICRYPT_KEYPROVIDER_CONFIG (or by our own config/flags):
//   {"key-providers": {"kms":  {"cmd": {"path": "/usr/bin/kms-wrap", "args": ["--region", "x"]}},
//                      "agent": {"grpc": "unix:///run/agent.sock"}}}     (or "grpc": "host:port")
//
// Messages (the same JSON for both transports; []byte members are padded standard base64):
//   in:  {"op":"keywrap",  "keywrapparams":{"ec":{"Parameters":{"<name>":["<params>"]},
//                                                 "DecryptConfig":{"Parameters":null}},
//                                           "optsdata":"<privopts>"}, "keyunwrapparams":{...}}
//        {"op":"keyunwrap","keywrapparams":{...}, "keyunwrapparams":{"dc":{"Parameters":
//                                           {"<name>":["<params>"]}},"annotation":"<packet>"}}
//   out: {"keywrapresults":{"annotation":"<packet>"}}  /  {"keyunwrapresults":{"optsdata":"<privopts>"}}
// Command transport: the JSON on the program's stdin, the answer on its stdout, exit status 0.
// gRPC transport: keyprovider.KeyProviderService/WrapKey and /UnWrapKey (keywrap/keyprovider.proto),
// the JSON as the bytes field of each message.
// The layer annotation org.opencontainers.image.enc.keys.provider.<name> holds base64(packet),
// several packets separated by commas.
//
// Deliberate differences from ocicrypt: the "dc"/"ec" we send carry only the provider's own
// parameters (ocicrypt also forwards any private keys and passwords it holds); every call has a
// deadline; a configured file that does not exist is an error, not "no providers".
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "crypto/secure_buffer.h"
#include "keywrap/keyring.h"

namespace lazycrypt::keywrap {

inline constexpr std::string_view kKeyProviderConfigEnv = "OCICRYPT_KEYPROVIDER_CONFIG";
// What ocicrypt passes as a provider's parameter when "provider:NAME" has none.
inline constexpr std::string_view kKeyProviderDefaultParams = "Enabled";

struct KeyProviderCommand {
  std::string path;
  std::vector<std::string> args;
};
// Exactly one of `command` and `grpc` is set.
struct KeyProviderAttrs {
  std::optional<KeyProviderCommand> command;
  std::string grpc;  // gRPC target: "host:port", "unix:///path", "unix:path"
};
struct KeyProviderConfig {
  std::map<std::string, KeyProviderAttrs> providers;
  std::string source;  // the file it came from, for messages
};

// Errors name `source` and the provider: InvalidArgument for JSON that is not an object with a
// "key-providers" object, a provider with neither or both of "cmd" and "grpc" ("unknown transport"),
// an empty or relative cmd path, an empty grpc address, or unknown members.
Result<KeyProviderConfig> ParseKeyProviderConfig(std::string_view json, std::string_view source);
// NotFound "<path>: key provider config file does not exist" when missing.
Result<KeyProviderConfig> LoadKeyProviderConfig(const std::filesystem::path& path);
// The file named by OCICRYPT_KEYPROVIDER_CONFIG, or nullopt when the variable is unset or empty.
std::optional<std::filesystem::path> KeyProviderConfigPathFromEnv();

// "provider:NAME[:params]" as skopeo and ocicrypt spell a provider on the command line.
struct KeyProviderSpec {
  std::string name;
  std::string params = std::string(kKeyProviderDefaultParams);
};
bool IsKeyProviderSpec(std::string_view spec);
// InvalidArgument for a spec without "provider:" or with an empty name.
Result<KeyProviderSpec> ParseKeyProviderSpec(std::string_view spec);

struct KeyProviderOptions {
  std::chrono::milliseconds timeout{30000};  // per call, both transports
};

// A provider of `config` with the parameters of `spec`. NotFound naming the config file and the
// providers it has when `spec.name` is not among them.
Result<std::shared_ptr<const KeyProvider>> MakeKeyProvider(const KeyProviderConfig& config,
                                                           const KeyProviderSpec& spec,
                                                           const KeyProviderOptions& options = {});
// Every provider of `config` in name order with the default parameters: what ocicrypt's decoders
// (ctd-decoder, containerd's CRI) do with a configured provider file.
std::vector<std::shared_ptr<const KeyProvider>> MakeAllKeyProviders(
    const KeyProviderConfig& config, const KeyProviderOptions& options = {});

// The protocol's JSON, exposed for tests and for our test provider.
namespace keyprovider_protocol {
// Request bytes, in wiped memory (a wrap request carries the privopts).
crypto::SecureBuffer WrapRequest(const KeyProviderSpec& spec, ByteSpan optsdata);
crypto::SecureBuffer UnwrapRequest(const KeyProviderSpec& spec, ByteSpan annotation_packet);
// Corruption naming `who` for output that is not JSON, not an object, lacks the result or holds
// bad base64.
Result<std::vector<uint8_t>> ParseWrapResponse(std::string_view json, std::string_view who);
Result<crypto::SecureBuffer> ParseUnwrapResponse(std::string_view json, std::string_view who);

// Provider side (our test provider): the operation, the parameters given for `name`, and the
// payload (optsdata for keywrap, annotation for keyunwrap).
struct Request {
  std::string op;
  std::vector<std::string> params;
  crypto::SecureBuffer payload;
};
Result<Request> ParseRequest(std::string_view json, std::string_view name);
std::string WrapResponse(ByteSpan annotation_packet);
crypto::SecureBuffer UnwrapResponse(ByteSpan optsdata);
}  // namespace keyprovider_protocol

}  // namespace lazycrypt::keywrap
