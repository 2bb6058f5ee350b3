#include "keywrap/envelope.h"

#include <openssl/crypto.h>

#include <nlohmann/json.hpp>

#include "keywrap/base64.h"
#include "keywrap/json_util.h"
#include "keywrap/jwe.h"

namespace lazycrypt::keywrap {
namespace {

using crypto::SecureBuffer;
using nlohmann::json;

// Appends `text` as a JSON string the way Go's encoding/json spells it, for printable ASCII
// (Go's HTML-safe escaping of <, > and & included).
Status AppendGoString(std::string& out, std::string_view text, std::string_view what) {
  out.push_back('"');
  for (char c : text) {
    if (c < 0x20 || c > 0x7e) {
      return Status::InvalidArgument(std::string(what) +
                                     " must be printable ASCII to be serialized");
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '<':
        out += "\\u003c";
        break;
      case '>':
        out += "\\u003e";
        break;
      case '&':
        out += "\\u0026";
        break;
      default:
        out.push_back(c);
    }
  }
  out.push_back('"');
  return Status::Ok();
}

// Go writes a nil []byte as null and any other as a base64 string.
void AppendGoBytes(std::string& out, ByteSpan bytes, bool empty_is_null) {
  if (bytes.empty() && empty_is_null) {
    out += "null";
    return;
  }
  out.push_back('"');
  AppendBase64(out, bytes);
  out.push_back('"');
}

Status AppendCipherOptions(std::string& out, const CipherOptions& options) {
  out.push_back('{');
  bool first = true;
  for (const auto& [name, value] : options) {  // std::map: sorted like Go's map marshalling
    if (!first) out.push_back(',');
    first = false;
    LC_RETURN_IF_ERROR(AppendGoString(out, name, "cipher option name"));
    out.push_back(':');
    AppendGoBytes(out, value, /*empty_is_null=*/false);
  }
  out.push_back('}');
  return Status::Ok();
}

size_t Base64Size(size_t n) { return (n + 2) / 3 * 4; }

size_t CipherOptionsSizeBound(const CipherOptions& options) {
  size_t size = 2;
  for (const auto& [name, value] : options) size += 6 * name.size() + Base64Size(value.size()) + 8;
  return size;
}

Status Bad(std::string_view what, std::string_view member, std::string_view problem) {
  return Status::Corruption(std::string(what) + ": '" + std::string(member) + "' " +
                            std::string(problem));
}

Result<CipherOptions> ParseCipherOptions(const json& object, std::string_view what) {
  CipherOptions options;
  auto it = object.find("cipheroptions");
  if (it == object.end() || it->is_null()) return options;
  if (!it->is_object()) return Bad(what, "cipheroptions", "is not a JSON object");
  for (const auto& [name, value] : it->items()) {
    if (value.is_null()) {
      options[name] = {};
      continue;
    }
    if (!value.is_string()) return Bad(what, "cipheroptions", "holds a non-string value");
    auto bytes = Base64Decode(value.get_ref<const std::string&>());
    if (!bytes.ok()) {
      return Bad(what, "cipheroptions",
                 "entry " + internal::Quote(name) + " is " + bytes.status().message());
    }
    options[name] = std::move(*bytes);
  }
  return options;
}

// A string member; "" for absent or null (Go leaves the field at its zero value).
Result<std::string> ParseStringMember(const json& object, const char* member,
                                      std::string_view what) {
  auto it = object.find(member);
  if (it == object.end() || it->is_null()) return std::string();
  if (!it->is_string()) return Bad(what, member, "is not a string");
  return it->get<std::string>();
}

Result<json> ParseObject(std::string_view text, std::string_view what) {
  auto parsed = internal::ParseJson(text, what);
  if (!parsed.ok()) return parsed.status();
  if (!parsed->is_object()) return Status::Corruption(std::string(what) + " is not a JSON object");
  return std::move(*parsed);
}

Result<PrivateLayerOptions> ParsePrivate(std::string_view text) {
  constexpr std::string_view kWhat = "private layer options";
  LC_ASSIGN_OR_RETURN(json object, ParseObject(text, kWhat));
  PrivateLayerOptions options;
  auto symkey = object.find("symkey");
  if (symkey != object.end() && !symkey->is_null()) {
    if (!symkey->is_string()) return Bad(kWhat, "symkey", "is not a string");
    auto& encoded = symkey->get_ref<std::string&>();
    auto key = Base64DecodeSecret(encoded);
    OPENSSL_cleanse(encoded.data(), encoded.size());
    if (!key.ok()) return Bad(kWhat, "symkey", "is " + key.status().message());
    options.symkey = std::move(*key);
  }
  LC_ASSIGN_OR_RETURN(options.digest, ParseStringMember(object, "digest", kWhat));
  LC_ASSIGN_OR_RETURN(options.cipher_options, ParseCipherOptions(object, kWhat));
  auto previous = object.find("previouslayersdigest");
  if (previous != object.end()) {
    LC_ASSIGN_OR_RETURN(options.previous_layers_digest,
                        ParseStringMember(object, "previouslayersdigest", kWhat));
  }
  return options;
}

Result<PublicLayerOptions> ParsePublic(std::string_view text) {
  constexpr std::string_view kWhat = "public layer options";
  LC_ASSIGN_OR_RETURN(json object, ParseObject(text, kWhat));
  PublicLayerOptions options;
  LC_ASSIGN_OR_RETURN(options.cipher, ParseStringMember(object, "cipher", kWhat));
  auto hmac = object.find("hmac");
  if (hmac != object.end() && !hmac->is_null()) {
    if (!hmac->is_string()) return Bad(kWhat, "hmac", "is not a string");
    auto bytes = Base64Decode(hmac->get_ref<const std::string&>());
    if (!bytes.ok()) return Bad(kWhat, "hmac", "is " + bytes.status().message());
    options.hmac = std::move(*bytes);
  }
  LC_ASSIGN_OR_RETURN(options.cipher_options, ParseCipherOptions(object, kWhat));
  return options;
}

// Orders failures for UnwrapLayerKeys' report: the most telling one wins.
int Severity(StatusCode code) {
  switch (code) {
    case StatusCode::kAuthFailed:
      return 3;
    case StatusCode::kNotFound:
      return 1;
    default:
      return 2;
  }
}

}  // namespace

Result<SecureBuffer> SerializePrivateLayerOptions(const PrivateLayerOptions& options) {
  std::string out;
  // Sized up front so the string never reallocates: a reallocation would leave an unwiped copy
  // of the encoded key behind.
  out.reserve(128 + Base64Size(options.symkey.size()) + 6 * options.digest.size() +
              CipherOptionsSizeBound(options.cipher_options) +
              6 * options.previous_layers_digest.value_or("").size());
  const char* capacity_before = out.data();
  Status status = [&]() -> Status {
    out += "{\"symkey\":";
    AppendGoBytes(out, options.symkey.span(), /*empty_is_null=*/true);
    out += ",\"digest\":";
    LC_RETURN_IF_ERROR(AppendGoString(out, options.digest, "digest"));
    out += ",\"cipheroptions\":";
    LC_RETURN_IF_ERROR(AppendCipherOptions(out, options.cipher_options));
    if (options.previous_layers_digest) {
      out += ",\"previouslayersdigest\":";
      LC_RETURN_IF_ERROR(
          AppendGoString(out, *options.previous_layers_digest, "previous layers digest"));
    }
    out += "}";
    return Status::Ok();
  }();
  SecureBuffer result(AsBytes(out));
  OPENSSL_cleanse(out.data(), out.size());
  if (out.data() != capacity_before) return Status::Internal("privopts buffer reallocated");
  if (!status.ok()) return status;
  return result;
}

Result<PrivateLayerOptions> ParsePrivateLayerOptions(std::string_view json_text) {
  try {
    return ParsePrivate(json_text);
  } catch (const std::exception&) {
    return Status::Internal("private layer options: unexpected exception");
  }
}

Result<std::string> SerializePublicLayerOptions(const PublicLayerOptions& options) {
  std::string out = "{\"cipher\":";
  LC_RETURN_IF_ERROR(AppendGoString(out, options.cipher, "cipher"));
  out += ",\"hmac\":";
  AppendGoBytes(out, options.hmac, /*empty_is_null=*/true);
  out += ",\"cipheroptions\":";
  LC_RETURN_IF_ERROR(AppendCipherOptions(out, options.cipher_options));
  out += "}";
  return out;
}

Result<PublicLayerOptions> ParsePublicLayerOptions(std::string_view json_text) {
  try {
    return ParsePublic(json_text);
  } catch (const std::exception&) {
    return Status::Internal("public layer options: unexpected exception");
  }
}

Result<std::string> EncodePubOptsAnnotation(const PublicLayerOptions& options) {
  LC_ASSIGN_OR_RETURN(std::string json_text, SerializePublicLayerOptions(options));
  return Base64Encode(AsBytes(json_text));
}

Result<PublicLayerOptions> DecodePubOptsAnnotation(std::string_view annotation_value) {
  auto bytes = Base64Decode(annotation_value);
  if (!bytes.ok()) {
    return bytes.status().WithContext(std::string(kPubOptsAnnotation));
  }
  return ParsePublicLayerOptions(AsStringView(*bytes));
}

Result<std::string> WrapLayerKeys(const PrivateLayerOptions& options,
                                  const std::vector<PublicKey>& keys) {
  if (keys.empty()) return Status::InvalidArgument("no public keys to wrap the layer key for");
  std::vector<JweRecipient> recipients;
  recipients.reserve(keys.size());
  for (const auto& key : keys) recipients.push_back({&key, DefaultJweKeyAlgorithm(key)});
  LC_ASSIGN_OR_RETURN(SecureBuffer plaintext, SerializePrivateLayerOptions(options));
  LC_ASSIGN_OR_RETURN(std::string jwe, EncryptJwe(plaintext.span(), recipients));
  return Base64Encode(AsBytes(jwe));
}

Result<std::vector<std::string_view>> SplitAnnotationEntries(std::string_view value,
                                                             size_t max_entries,
                                                             std::string_view what) {
  std::vector<std::string_view> entries;
  size_t start = 0;
  while (true) {
    if (entries.size() == max_entries) {
      return Status::Corruption(std::string(what) + " has more than " + std::to_string(max_entries) +
                                " entries (the limit)");
    }
    size_t comma = value.find(',', start);
    entries.push_back(value.substr(start, comma == std::string_view::npos ? comma : comma - start));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return entries;
}

Status CheckLayerRecipientCount(std::string_view annotation_value) {
  LC_ASSIGN_OR_RETURN(std::vector<std::string_view> entries,
                      SplitAnnotationEntries(annotation_value, kMaxLayerRecipients,
                                             kJweKeysAnnotation));
  size_t total = 0;
  for (std::string_view entry : entries) {
    auto jwe = Base64Decode(entry);
    if (!jwe.ok()) continue;
    auto n = CountJweRecipients(AsStringView(*jwe));
    if (!n.ok()) continue;
    total += *n;
    if (total > kMaxLayerRecipients) {
      return Status::Corruption(std::string(kJweKeysAnnotation) + " names more than " +
                                std::to_string(kMaxLayerRecipients) +
                                " recipients (the limit per layer)");
    }
  }
  return Status::Ok();
}

Result<PrivateLayerOptions> UnwrapLayerKeys(std::string_view annotation_value,
                                            const std::vector<PrivateKey>& keys) {
  if (keys.empty()) return Status::InvalidArgument("no private keys to unwrap the layer key with");
  if (annotation_value.empty()) {
    return Status::Corruption(std::string(kJweKeysAnnotation) + " is empty");
  }
  LC_RETURN_IF_ERROR(CheckLayerRecipientCount(annotation_value));
  LC_ASSIGN_OR_RETURN(std::vector<std::string_view> entries,
                      SplitAnnotationEntries(annotation_value, kMaxLayerRecipients,
                                             kJweKeysAnnotation));

  std::optional<Status> worst;
  auto note = [&](Status s, size_t entry) {
    if (entries.size() > 1) {
      s = s.WithContext("JWE entry " + std::to_string(entry + 1) + " of " +
                        std::to_string(entries.size()));
    }
    if (!worst || Severity(s.code()) > Severity(worst->code())) worst = std::move(s);
  };

  for (size_t i = 0; i < entries.size(); ++i) {
    auto jwe = Base64Decode(entries[i]);
    if (!jwe.ok()) {
      note(jwe.status().WithContext(std::string(kJweKeysAnnotation)), i);
      continue;
    }
    for (const auto& key : keys) {
      auto plaintext = DecryptJwe(AsStringView(*jwe), key);
      if (plaintext.ok()) {
        auto parsed = ParsePrivateLayerOptions(AsStringView(plaintext->span()));
        if (!parsed.ok()) return parsed.status().WithContext("inside the layer's JWE");
        return parsed;
      }
      // Every key gets its chance even after an error: another key may fit another recipient.
      if (plaintext.status().code() != StatusCode::kNotFound) note(plaintext.status(), i);
    }
  }
  if (worst) return *worst;
  std::string names;
  for (const auto& key : keys) {
    if (!names.empty()) names += ", ";
    names += key.name();
  }
  return Status::NotFound("no private key given (" + names +
                          ") matches a recipient of the layer's JWE");
}

}  // namespace lazycrypt::keywrap
