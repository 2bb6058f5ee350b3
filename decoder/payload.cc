#include "decoder/payload.h"

#include <google/protobuf/any.pb.h>
#include <openssl/crypto.h>

#include <nlohmann/json.hpp>

#include "common/json_depth.h"
#include "keywrap/base64.h"

namespace lazycrypt::decoder {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kPrivKeys = "privkeys";
constexpr std::string_view kPrivKeysPasswords = "privkeys-passwords";

// A Go [][]byte as encoding/json writes it: null or an array of base64 strings (null entries are
// nil slices).
Result<std::vector<crypto::SecureBuffer>> ParseByteSlices(const Json& value,
                                                          std::string_view name) {
  std::vector<crypto::SecureBuffer> out;
  if (value.is_null()) return out;
  if (!value.is_array()) {
    return Status::Corruption("payload: DecryptConfig.Parameters[\"" + std::string(name) +
                              "\"] is not an array");
  }
  for (size_t i = 0; i < value.size(); ++i) {
    const Json& item = value[i];
    if (item.is_null()) {
      out.emplace_back();
      continue;
    }
    if (!item.is_string()) {
      return Status::Corruption("payload: DecryptConfig.Parameters[\"" + std::string(name) +
                                "\"][" + std::to_string(i) + "] is not a base64 string");
    }
    auto bytes = keywrap::Base64DecodeSecret(item.get_ref<const std::string&>());
    if (!bytes.ok()) {
      return Status::Corruption("payload: DecryptConfig.Parameters[\"" + std::string(name) +
                                "\"][" + std::to_string(i) + "] is not valid base64");
    }
    out.push_back(std::move(*bytes));
  }
  return out;
}

// Overwrites the base64 key and password strings left in the parsed JSON tree.
void WipeSecretStrings(Json& root) {
  auto dc = root.find("DecryptConfig");
  if (dc == root.end() || !dc->is_object()) return;
  auto params = dc->find("Parameters");
  if (params == dc->end() || !params->is_object()) return;
  for (std::string_view name : {kPrivKeys, kPrivKeysPasswords}) {
    auto it = params->find(name);
    if (it == params->end() || !it->is_array()) continue;
    for (Json& item : *it) {
      if (item.is_string()) {
        auto& str = item.get_ref<std::string&>();
        OPENSSL_cleanse(str.data(), str.size());
      }
    }
  }
}

Result<StreamPayload> ParsePayloadJson(Json& root) {
  if (root.is_discarded() || !root.is_object()) {
    return Status::Corruption("payload: value is not a JSON object");
  }
  StreamPayload payload;
  auto desc_it = root.find("Descriptor");
  if (desc_it == root.end() || !desc_it->is_object()) {
    return Status::Corruption("payload: no \"Descriptor\" object (the layer descriptor)");
  }
  std::string desc_text = desc_it->dump();
  auto descriptor = image::ParseDescriptor(AsBytes(desc_text));
  if (!descriptor.ok()) {
    return Status::Corruption("payload: Descriptor: " + descriptor.status().message());
  }
  payload.descriptor = std::move(*descriptor);

  auto dc_it = root.find("DecryptConfig");
  if (dc_it == root.end() || dc_it->is_null()) return payload;
  if (!dc_it->is_object()) return Status::Corruption("payload: DecryptConfig is not an object");
  auto params_it = dc_it->find("Parameters");
  if (params_it == dc_it->end() || params_it->is_null()) return payload;
  if (!params_it->is_object()) {
    return Status::Corruption("payload: DecryptConfig.Parameters is not an object");
  }
  std::vector<crypto::SecureBuffer> keys, passwords;
  if (auto it = params_it->find(kPrivKeys); it != params_it->end()) {
    LC_ASSIGN_OR_RETURN(keys, ParseByteSlices(*it, kPrivKeys));
  }
  if (auto it = params_it->find(kPrivKeysPasswords); it != params_it->end()) {
    LC_ASSIGN_OR_RETURN(passwords, ParseByteSlices(*it, kPrivKeysPasswords));
  }
  // ocicrypt keeps the two lists parallel; a missing or empty entry means "no password".
  for (size_t i = 0; i < keys.size(); ++i) {
    PayloadPrivateKey key;
    key.key_bytes = std::move(keys[i]);
    if (i < passwords.size() && !passwords[i].empty()) key.password = std::move(passwords[i]);
    payload.private_keys.push_back(std::move(key));
  }
  return payload;
}

}  // namespace

Result<StreamPayload> ParseStreamPayload(ByteSpan bytes) {
  google::protobuf::Any any;
  // The value holds private keys (base64): wiped on every path out of this function.
  struct Wiper {
    google::protobuf::Any& any;
    ~Wiper() { OPENSSL_cleanse(any.mutable_value()->data(), any.value().size()); }
  } wiper{any};
  if (bytes.size() > static_cast<size_t>(INT32_MAX) ||
      !any.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Status::Corruption("payload: not a protobuf google.protobuf.Any (" +
                              std::to_string(bytes.size()) + " bytes)");
  }
  if (any.type_url() != kPayloadTypeUrl) {
    return Status::Unsupported("payload: type_url \"" + any.type_url() + "\" is not " +
                               std::string(kPayloadTypeUrl));
  }
  LC_RETURN_IF_ERROR(CheckJsonDepth(any.value(), "payload JSON"));
  try {
    Json root = Json::parse(any.value(), nullptr, /*allow_exceptions=*/false);
    auto payload = ParsePayloadJson(root);
    if (!root.is_discarded()) WipeSecretStrings(root);
    return payload;
  } catch (const std::exception& e) {
    // nlohmann throws on type mismatches we did not foresee; never let it escape.
    return Status::Corruption(std::string("payload: malformed JSON: ") + e.what());
  }
}

Result<std::string> SerializeStreamPayload(const image::Descriptor& descriptor,
                                           const std::vector<PayloadPrivateKey>& private_keys) {
  try {
    Json root = Json::object();
    Json params = Json::object();
    if (!private_keys.empty()) {
      Json keys = Json::array(), passwords = Json::array();
      for (const auto& key : private_keys) {
        keys.push_back(keywrap::Base64Encode(key.key_bytes.span()));
        passwords.push_back(key.password ? Json(keywrap::Base64Encode(key.password->span()))
                                         : Json(nullptr));
      }
      params[std::string(kPrivKeys)] = std::move(keys);
      params[std::string(kPrivKeysPasswords)] = std::move(passwords);
    }
    root["DecryptConfig"] = Json{{"Parameters", std::move(params)}};
    root["Descriptor"] = Json::parse(image::SerializeDescriptor(descriptor));
    google::protobuf::Any any;
    any.set_type_url(std::string(kPayloadTypeUrl));
    any.set_value(root.dump());
    std::string out;
    if (!any.SerializeToString(&out)) return Status::Internal("payload: protobuf serialization failed");
    return out;
  } catch (const std::exception& e) {
    return Status::Internal(std::string("payload: JSON serialization failed: ") + e.what());
  }
}

}  // namespace lazycrypt::decoder
