#include "keywrap/jwe.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <array>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "crypto/aes_gcm.h"
#include "crypto/random.h"
#include "keywrap/base64.h"
#include "keywrap/json_util.h"
#include "keywrap/jwe_internal.h"
#include "keywrap/openssl_util.h"

namespace lazycrypt::keywrap {
namespace {

using crypto::SecureBuffer;
using internal::EvpPkeyCtxPtr;
using internal::EvpPkeyPtr;
using internal::Quote;
using nlohmann::json;
using nlohmann::ordered_json;

constexpr std::string_view kContentEncryption = "A256GCM";
constexpr size_t kCekSize = crypto::kAes256KeySize;
constexpr size_t kWrappedCekSize = kCekSize + 8;  // RFC 3394 adds one 64-bit block

struct Curve {
  std::string_view jose;  // "P-256"
  const char* openssl;    // "prime256v1"
  size_t coordinate_bytes;
};
constexpr std::array<Curve, 3> kCurves = {{
    {"P-256", "prime256v1", 32},
    {"P-384", "secp384r1", 48},
    {"P-521", "secp521r1", 66},
}};

const Curve* FindCurve(std::string_view jose) {
  for (const auto& c : kCurves) {
    if (c.jose == jose) return &c;
  }
  return nullptr;
}

std::optional<JweKeyAlgorithm> ParseKeyAlgorithm(std::string_view name) {
  for (auto a :
       {JweKeyAlgorithm::kRsaOaep, JweKeyAlgorithm::kRsaOaep256, JweKeyAlgorithm::kEcdhEsA256kw}) {
    if (JweKeyAlgorithmName(a) == name) return a;
  }
  return std::nullopt;
}

const char* OaepDigest(JweKeyAlgorithm algorithm) {
  return algorithm == JweKeyAlgorithm::kRsaOaep256 ? "SHA256" : "SHA1";
}

Status Malformed(const std::string& what) {
  return Status::Corruption("JWE is malformed: " + what);
}

// ---------------------------------------------------------------------------------------------
// Key management primitives.

Result<EvpPkeyCtxPtr> RsaOaepContext(EVP_PKEY* key, JweKeyAlgorithm algorithm, bool encrypt) {
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr));
  if (!ctx) return internal::OpenSslError("EVP_PKEY_CTX_new_from_pkey");
  int init = encrypt ? EVP_PKEY_encrypt_init(ctx.get()) : EVP_PKEY_decrypt_init(ctx.get());
  if (init != 1) return internal::OpenSslError("RSA-OAEP init");
  const char* md = OaepDigest(algorithm);
  if (EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx.get(), md, nullptr) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx.get(), md, nullptr) != 1) {
    return internal::OpenSslError("RSA-OAEP parameters");
  }
  return ctx;
}

Result<std::vector<uint8_t>> RsaOaepEncrypt(EVP_PKEY* key, JweKeyAlgorithm algorithm,
                                            ByteSpan cek) {
  LC_ASSIGN_OR_RETURN(EvpPkeyCtxPtr ctx, RsaOaepContext(key, algorithm, /*encrypt=*/true));
  size_t size = 0;
  if (EVP_PKEY_encrypt(ctx.get(), nullptr, &size, cek.data(), cek.size()) != 1) {
    return internal::OpenSslError("RSA-OAEP encrypt");
  }
  std::vector<uint8_t> out(size);
  if (EVP_PKEY_encrypt(ctx.get(), out.data(), &size, cek.data(), cek.size()) != 1) {
    return internal::OpenSslError("RSA-OAEP encrypt");
  }
  out.resize(size);
  return out;
}

// AuthFailed when the ciphertext is not for this key (OAEP decoding fails) or holds no CEK.
Result<SecureBuffer> RsaOaepDecrypt(EVP_PKEY* key, JweKeyAlgorithm algorithm, ByteSpan wrapped) {
  if (wrapped.size() != static_cast<size_t>(EVP_PKEY_get_size(key))) {
    return Status::AuthFailed("encrypted key size does not match the RSA modulus");
  }
  LC_ASSIGN_OR_RETURN(EvpPkeyCtxPtr ctx, RsaOaepContext(key, algorithm, /*encrypt=*/false));
  size_t size = 0;
  if (EVP_PKEY_decrypt(ctx.get(), nullptr, &size, wrapped.data(), wrapped.size()) != 1) {
    return internal::OpenSslError("RSA-OAEP decrypt");
  }
  SecureBuffer out(size);
  if (EVP_PKEY_decrypt(ctx.get(), out.data(), &size, wrapped.data(), wrapped.size()) != 1) {
    internal::ClearOpenSslErrors();
    return Status::AuthFailed("RSA-OAEP decryption failed");
  }
  if (size != kCekSize) return Status::AuthFailed("RSA-OAEP payload is not a 256-bit key");
  return SecureBuffer(out.span().first(size));
}

Result<EvpPkeyPtr> EcPublicKeyFromCoordinates(const Curve& curve, ByteSpan x, ByteSpan y) {
  std::vector<uint8_t> point;
  point.reserve(1 + x.size() + y.size());
  point.push_back(0x04);  // SEC 1 uncompressed point
  point.insert(point.end(), x.begin(), x.end());
  point.insert(point.end(), y.begin(), y.end());
  internal::OsslParamBldPtr builder(OSSL_PARAM_BLD_new());
  if (!builder ||
      OSSL_PARAM_BLD_push_utf8_string(builder.get(), OSSL_PKEY_PARAM_GROUP_NAME, curve.openssl,
                                      0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(builder.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    return internal::OpenSslError("building EC key parameters");
  }
  internal::OsslParamPtr params(OSSL_PARAM_BLD_to_param(builder.get()));
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) {
    return internal::OpenSslError("EVP_PKEY_fromdata_init");
  }
  EVP_PKEY* raw = nullptr;
  int ok = EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get());
  EvpPkeyPtr key(raw);
  if (ok != 1 || !key) {
    internal::ClearOpenSslErrors();
    return Status::Corruption("not a point on " + std::string(curve.jose));
  }
  EvpPkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    internal::ClearOpenSslErrors();
    return Status::Corruption("not a point on " + std::string(curve.jose));
  }
  return key;
}

struct WrappedCek {
  ordered_json header;  // the recipient's header parameters, in go-jose's order
  std::vector<uint8_t> encrypted_key;
};

Result<ordered_json> EphemeralKeyJson(EVP_PKEY* ephemeral, const Curve& curve) {
  BIGNUM* x_raw = nullptr;
  BIGNUM* y_raw = nullptr;
  int ok_x = EVP_PKEY_get_bn_param(ephemeral, OSSL_PKEY_PARAM_EC_PUB_X, &x_raw);
  int ok_y = EVP_PKEY_get_bn_param(ephemeral, OSSL_PKEY_PARAM_EC_PUB_Y, &y_raw);
  internal::BignumPtr x(x_raw), y(y_raw);
  if (ok_x != 1 || ok_y != 1) return internal::OpenSslError("reading the ephemeral EC point");
  std::vector<uint8_t> xb(curve.coordinate_bytes), yb(curve.coordinate_bytes);
  if (BN_bn2binpad(x.get(), xb.data(), static_cast<int>(xb.size())) < 0 ||
      BN_bn2binpad(y.get(), yb.data(), static_cast<int>(yb.size())) < 0) {
    return internal::OpenSslError("encoding the ephemeral EC point");
  }
  // go-jose marshals a JSONWebKey with its struct order: kty, crv, x, y.
  ordered_json epk;
  epk["kty"] = "EC";
  epk["crv"] = std::string(curve.jose);
  epk["x"] = Base64UrlEncode(xb);
  epk["y"] = Base64UrlEncode(yb);
  return epk;
}

Result<WrappedCek> WrapCek(const JweRecipient& recipient, size_t index, ByteSpan cek) {
  const PublicKey& key = *recipient.key;
  std::string who = "JWE recipient " + std::to_string(index + 1) + " (" + key.name() + ")";
  WrappedCek out;
  out.header["alg"] = std::string(JweKeyAlgorithmName(recipient.algorithm));
  switch (recipient.algorithm) {
    case JweKeyAlgorithm::kRsaOaep:
    case JweKeyAlgorithm::kRsaOaep256: {
      if (key.kind() != KeyKind::kRsa) {
        return Status::InvalidArgument(who + ": " +
                                       std::string(JweKeyAlgorithmName(recipient.algorithm)) +
                                       " needs an RSA key");
      }
      LC_ASSIGN_OR_RETURN(out.encrypted_key,
                          RsaOaepEncrypt(key.evp_pkey(), recipient.algorithm, cek));
      return out;
    }
    case JweKeyAlgorithm::kEcdhEsA256kw: {
      const Curve* curve = key.kind() == KeyKind::kEc ? FindCurve(key.curve()) : nullptr;
      if (curve == nullptr) {
        return Status::InvalidArgument(who + ": ECDH-ES+A256KW needs an EC key");
      }
      EvpPkeyPtr ephemeral(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve->openssl));
      if (!ephemeral) return internal::OpenSslError("generating an ephemeral EC key");
      LC_ASSIGN_OR_RETURN(SecureBuffer z,
                          internal::EcdhSharedSecret(ephemeral.get(), key.evp_pkey()));
      LC_ASSIGN_OR_RETURN(SecureBuffer kek,
                          internal::ConcatKdfSha256(z.span(), "ECDH-ES+A256KW", {}, {}, 32));
      LC_ASSIGN_OR_RETURN(out.encrypted_key, internal::AesKeyWrap256(kek.span(), cek));
      LC_ASSIGN_OR_RETURN(out.header["epk"], EphemeralKeyJson(ephemeral.get(), *curve));
      return out;
    }
  }
  return Status::InvalidArgument(who + ": unknown key algorithm");
}

// ---------------------------------------------------------------------------------------------
// Parsing.

struct ParsedRecipient {
  json header;  // object, or null when absent
  std::vector<uint8_t> encrypted_key;
};

struct ParsedJwe {
  std::string protected_b64;  // exactly as serialized: it is part of the AAD
  json protected_header;      // object, or null when absent
  json unprotected;           // object, or null when absent
  std::optional<std::string> aad_b64;
  std::vector<uint8_t> iv, ciphertext, tag;
  std::vector<ParsedRecipient> recipients;
};

// A string member: nullptr when absent, Corruption when present with another type.
Result<const std::string*> StringMember(const json& object, const char* member,
                                        const std::string& where) {
  auto it = object.find(member);
  if (it == object.end()) return static_cast<const std::string*>(nullptr);
  if (!it->is_string()) return Malformed(where + "'" + member + "' is not a string");
  return &it->get_ref<const std::string&>();
}

// An object member: null when absent, Corruption when present with another type.
Result<json> ObjectMember(const json& object, const char* member, const std::string& where) {
  auto it = object.find(member);
  if (it == object.end()) return json(nullptr);
  if (!it->is_object()) return Malformed(where + "'" + member + "' is not a JSON object");
  return *it;
}

Result<std::vector<uint8_t>> DecodeMember(std::string_view b64, const std::string& what) {
  auto decoded = Base64UrlDecode(b64);
  if (!decoded.ok()) return Malformed(what + " is " + decoded.status().message());
  return std::move(*decoded);
}

Result<std::vector<uint8_t>> RequiredBinary(const json& object, const char* member) {
  LC_ASSIGN_OR_RETURN(const std::string* text, StringMember(object, member, ""));
  if (text == nullptr) return Malformed(std::string("no '") + member + "' member");
  return DecodeMember(*text, std::string("'") + member + "'");
}

Result<json> DecodeProtectedHeader(std::string_view b64) {
  LC_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, DecodeMember(b64, "'protected'"));
  auto header = internal::ParseJson(AsStringView(bytes), "JWE protected header");
  if (!header.ok()) return Malformed(header.status().message());
  if (!header->is_object()) return Malformed("protected header is not a JSON object");
  return std::move(*header);
}

Result<ParsedJwe> ParseCompact(std::string_view text) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (parts.size() < 6) {
    size_t dot = text.find('.', start);
    parts.push_back(text.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (parts.size() != 5) {
    return Malformed("neither a JSON object nor five '.'-separated compact parts");
  }
  ParsedJwe jwe;
  jwe.protected_b64 = std::string(parts[0]);
  LC_ASSIGN_OR_RETURN(jwe.protected_header, DecodeProtectedHeader(parts[0]));
  ParsedRecipient recipient;
  recipient.header = json(nullptr);
  LC_ASSIGN_OR_RETURN(recipient.encrypted_key, DecodeMember(parts[1], "encrypted key"));
  jwe.recipients.push_back(std::move(recipient));
  jwe.unprotected = json(nullptr);
  LC_ASSIGN_OR_RETURN(jwe.iv, DecodeMember(parts[2], "iv"));
  LC_ASSIGN_OR_RETURN(jwe.ciphertext, DecodeMember(parts[3], "ciphertext"));
  LC_ASSIGN_OR_RETURN(jwe.tag, DecodeMember(parts[4], "tag"));
  return jwe;
}

Result<size_t> CountJweRecipientsImpl(std::string_view text) {
  if (text.size() > kMaxJweBytes) {
    return Malformed(std::to_string(text.size()) + " bytes is larger than the " +
                     std::to_string(kMaxJweBytes) + "-byte limit");
  }
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos || text[first] != '{') return size_t{1};  // compact
  auto parsed = internal::ParseJson(text, "JWE");
  if (!parsed.ok()) return Malformed(parsed.status().message());
  if (!parsed->is_object()) return Malformed("not a JSON object");
  auto recipients = parsed->find("recipients");
  if (recipients == parsed->end()) return size_t{1};  // flattened
  if (!recipients->is_array()) return Malformed("'recipients' is not an array");
  return recipients->size();
}

Result<ParsedJwe> ParseJsonSerialization(std::string_view text) {
  auto parsed = internal::ParseJson(text, "JWE");
  if (!parsed.ok()) return Malformed(parsed.status().message());
  const json& top = *parsed;
  if (!top.is_object()) return Malformed("not a JSON object");

  ParsedJwe jwe;
  LC_ASSIGN_OR_RETURN(const std::string* protected_b64, StringMember(top, "protected", ""));
  jwe.protected_header = json(nullptr);
  if (protected_b64 != nullptr && !protected_b64->empty()) {  // "" means none, as in go-jose
    jwe.protected_b64 = *protected_b64;
    LC_ASSIGN_OR_RETURN(jwe.protected_header, DecodeProtectedHeader(*protected_b64));
  }
  LC_ASSIGN_OR_RETURN(jwe.unprotected, ObjectMember(top, "unprotected", ""));

  auto recipients = top.find("recipients");
  if (recipients != top.end()) {
    // General serialization. go-jose also writes the first recipient's key at the top level;
    // that copy is ignored, as go-jose ignores it. A flattened "header" beside "recipients" would
    // leave it unclear which header applies, so it is rejected.
    if (top.contains("header")) return Malformed("both 'recipients' and a flattened 'header'");
    if (!recipients->is_array()) return Malformed("'recipients' is not an array");
    if (recipients->empty()) return Malformed("'recipients' is empty");
    if (recipients->size() > kMaxJweRecipients) {
      return Malformed(std::to_string(recipients->size()) + " recipients (at most " +
                       std::to_string(kMaxJweRecipients) + ")");
    }
    for (size_t i = 0; i < recipients->size(); ++i) {
      const json& r = (*recipients)[i];
      std::string where = "recipient " + std::to_string(i + 1) + ": ";
      if (!r.is_object()) return Malformed(where + "not a JSON object");
      ParsedRecipient recipient;
      LC_ASSIGN_OR_RETURN(recipient.header, ObjectMember(r, "header", where));
      LC_ASSIGN_OR_RETURN(const std::string* key, StringMember(r, "encrypted_key", where));
      if (key != nullptr) {
        LC_ASSIGN_OR_RETURN(recipient.encrypted_key, DecodeMember(*key, where + "'encrypted_key'"));
      }
      jwe.recipients.push_back(std::move(recipient));
    }
  } else {
    ParsedRecipient recipient;
    LC_ASSIGN_OR_RETURN(recipient.header, ObjectMember(top, "header", ""));
    LC_ASSIGN_OR_RETURN(const std::string* key, StringMember(top, "encrypted_key", ""));
    if (key != nullptr) {
      LC_ASSIGN_OR_RETURN(recipient.encrypted_key, DecodeMember(*key, "'encrypted_key'"));
    }
    jwe.recipients.push_back(std::move(recipient));
  }

  LC_ASSIGN_OR_RETURN(const std::string* aad, StringMember(top, "aad", ""));
  if (aad != nullptr) {
    LC_ASSIGN_OR_RETURN(std::vector<uint8_t> ignored, DecodeMember(*aad, "'aad'"));
    (void)ignored;
    jwe.aad_b64 = *aad;
  }
  LC_ASSIGN_OR_RETURN(jwe.iv, RequiredBinary(top, "iv"));
  LC_ASSIGN_OR_RETURN(jwe.ciphertext, RequiredBinary(top, "ciphertext"));
  LC_ASSIGN_OR_RETURN(jwe.tag, RequiredBinary(top, "tag"));
  return jwe;
}

std::string_view TrimAsciiSpace(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

// What one recipient asks for, after its headers are merged and checked.
struct RecipientPlan {
  JweKeyAlgorithm algorithm = JweKeyAlgorithm::kRsaOaep;
  const Curve* curve = nullptr;  // ECDH only
  std::vector<uint8_t> epk_x, epk_y, apu, apv;
};

Result<json> MergeHeaders(const ParsedJwe& jwe, const ParsedRecipient& recipient,
                          const std::string& where) {
  json merged = json::object();
  for (const json* source : {&jwe.protected_header, &jwe.unprotected, &recipient.header}) {
    if (!source->is_object()) continue;
    for (const auto& [name, value] : source->items()) {
      // RFC 7516 §7.2.1: the names in the three headers MUST be disjoint.
      if (merged.contains(name)) {
        return Malformed(where + "header parameter " + Quote(name) +
                         " appears in more than one header");
      }
      merged[name] = value;
    }
  }
  return merged;
}

Result<std::vector<uint8_t>> OptionalBinaryHeader(const json& header, const char* name,
                                                  const std::string& where) {
  LC_ASSIGN_OR_RETURN(const std::string* text, StringMember(header, name, where));
  if (text == nullptr) return std::vector<uint8_t>{};
  return DecodeMember(*text, where + "'" + name + "'");
}

Result<RecipientPlan> PlanRecipient(const json& header, const ParsedRecipient& recipient,
                                    const std::string& where) {
  if (auto crit = header.find("crit"); crit != header.end()) {
    if (!crit->is_array()) return Malformed(where + "'crit' is not an array");
    std::string names;
    for (const auto& name : *crit) {
      if (!name.is_string()) return Malformed(where + "'crit' holds a non-string");
      if (!names.empty()) names += ", ";
      names += Quote(name.get_ref<const std::string&>());
    }
    return Status::Unsupported("JWE critical header parameter(s) " + names + " not supported");
  }
  if (auto zip = header.find("zip"); zip != header.end()) {
    return Status::Unsupported(
        "JWE compression (\"zip\": " +
        (zip->is_string() ? Quote(zip->get_ref<const std::string&>()) : std::string("?")) +
        ") is not supported");
  }
  LC_ASSIGN_OR_RETURN(const std::string* enc, StringMember(header, "enc", where));
  if (enc == nullptr) return Malformed(where + "no 'enc' header parameter");
  if (*enc != kContentEncryption) {
    return Status::Unsupported("JWE content encryption " + Quote(*enc) +
                               " is not supported (only A256GCM)");
  }
  LC_ASSIGN_OR_RETURN(const std::string* alg, StringMember(header, "alg", where));
  if (alg == nullptr) return Malformed(where + "no 'alg' header parameter");
  std::optional<JweKeyAlgorithm> algorithm = ParseKeyAlgorithm(*alg);
  if (!algorithm) {
    return Status::Unsupported("JWE key algorithm " + Quote(*alg) +
                               " is not supported (RSA-OAEP, RSA-OAEP-256, ECDH-ES+A256KW)");
  }
  RecipientPlan plan;
  plan.algorithm = *algorithm;
  if (*algorithm != JweKeyAlgorithm::kEcdhEsA256kw) {
    if (recipient.encrypted_key.empty()) return Malformed(where + "no encrypted key");
    return plan;
  }
  if (recipient.encrypted_key.size() != kWrappedCekSize) {
    return Malformed(where + "ECDH-ES+A256KW encrypted key is " +
                     std::to_string(recipient.encrypted_key.size()) + " bytes, not 40");
  }
  LC_ASSIGN_OR_RETURN(json epk, ObjectMember(header, "epk", where));
  if (epk.is_null()) return Malformed(where + "ECDH-ES+A256KW without 'epk'");
  LC_ASSIGN_OR_RETURN(const std::string* kty, StringMember(epk, "kty", where + "epk: "));
  if (kty == nullptr || *kty != "EC") return Malformed(where + "epk 'kty' is not \"EC\"");
  LC_ASSIGN_OR_RETURN(const std::string* crv, StringMember(epk, "crv", where + "epk: "));
  if (crv == nullptr) return Malformed(where + "epk has no 'crv'");
  plan.curve = FindCurve(*crv);
  if (plan.curve == nullptr) {
    return Status::Unsupported("JWE epk curve " + Quote(*crv) +
                               " is not supported (P-256, P-384, P-521)");
  }
  for (auto [name, out] : {std::pair{"x", &plan.epk_x}, std::pair{"y", &plan.epk_y}}) {
    LC_ASSIGN_OR_RETURN(const std::string* text, StringMember(epk, name, where + "epk: "));
    if (text == nullptr) return Malformed(where + "epk has no '" + name + "'");
    LC_ASSIGN_OR_RETURN(*out, DecodeMember(*text, where + "epk '" + name + "'"));
    if (out->size() != plan.curve->coordinate_bytes) {
      return Malformed(where + "epk '" + name + "' is " + std::to_string(out->size()) + " bytes, " +
                       std::string(plan.curve->jose) + " needs " +
                       std::to_string(plan.curve->coordinate_bytes));
    }
  }
  LC_ASSIGN_OR_RETURN(plan.apu, OptionalBinaryHeader(header, "apu", where));
  LC_ASSIGN_OR_RETURN(plan.apv, OptionalBinaryHeader(header, "apv", where));
  return plan;
}

// Recovers the CEK of one recipient with `key`. AuthFailed when the recipient is not for this
// key; Corruption for an invalid epk; other codes are real failures.
Result<SecureBuffer> UnwrapCek(const RecipientPlan& plan, const ParsedRecipient& recipient,
                               const PrivateKey& key, const std::string& where) {
  if (plan.algorithm != JweKeyAlgorithm::kEcdhEsA256kw) {
    return RsaOaepDecrypt(key.evp_pkey(), plan.algorithm, recipient.encrypted_key);
  }
  auto peer = EcPublicKeyFromCoordinates(*plan.curve, plan.epk_x, plan.epk_y);
  if (!peer.ok()) return Malformed(where + "epk is " + peer.status().message());
  LC_ASSIGN_OR_RETURN(SecureBuffer z, internal::EcdhSharedSecret(key.evp_pkey(), peer->get()));
  LC_ASSIGN_OR_RETURN(SecureBuffer kek, internal::ConcatKdfSha256(z.span(), "ECDH-ES+A256KW",
                                                                  plan.apu, plan.apv, kCekSize));
  return internal::AesKeyUnwrap256(kek.span(), recipient.encrypted_key);
}

bool Fits(const RecipientPlan& plan, const PrivateKey& key) {
  if (plan.algorithm == JweKeyAlgorithm::kEcdhEsA256kw) {
    return key.kind() == KeyKind::kEc && plan.curve->jose == key.curve();
  }
  return key.kind() == KeyKind::kRsa;
}

Result<SecureBuffer> Decrypt(std::string_view text, const PrivateKey& key) {
  if (text.size() > kMaxJweBytes) {
    return Malformed(std::to_string(text.size()) + " bytes is larger than the " +
                     std::to_string(kMaxJweBytes) + "-byte limit");
  }
  text = TrimAsciiSpace(text);
  if (text.empty()) return Malformed("empty");
  ParsedJwe jwe;
  if (text.front() == '{' || text.front() == '[') {
    LC_ASSIGN_OR_RETURN(jwe, ParseJsonSerialization(text));
  } else {
    LC_ASSIGN_OR_RETURN(jwe, ParseCompact(text));
  }
  if (jwe.iv.size() != crypto::kGcmNonceSize) {
    return Malformed("'iv' is " + std::to_string(jwe.iv.size()) + " bytes, A256GCM needs 12");
  }
  if (jwe.tag.size() != crypto::kGcmTagSize) {
    return Malformed("'tag' is " + std::to_string(jwe.tag.size()) + " bytes, A256GCM needs 16");
  }

  // Check every recipient before trying any, so that a JWE is judged the same whichever key
  // reads it.
  std::vector<RecipientPlan> plans;
  for (size_t i = 0; i < jwe.recipients.size(); ++i) {
    std::string where =
        jwe.recipients.size() > 1 ? "recipient " + std::to_string(i + 1) + ": " : std::string();
    LC_ASSIGN_OR_RETURN(json header, MergeHeaders(jwe, jwe.recipients[i], where));
    LC_ASSIGN_OR_RETURN(RecipientPlan plan, PlanRecipient(header, jwe.recipients[i], where));
    plans.push_back(std::move(plan));
  }

  std::string aad = jwe.protected_b64;
  if (jwe.aad_b64) aad += "." + *jwe.aad_b64;

  bool content_failed = false;
  std::optional<Status> recipient_error;  // e.g. an epk off the curve; another may still work
  for (size_t i = 0; i < plans.size(); ++i) {
    if (!Fits(plans[i], key)) continue;
    std::string where = "recipient " + std::to_string(i + 1) + ": ";
    auto cek = UnwrapCek(plans[i], jwe.recipients[i], key, where);
    if (!cek.ok()) {
      if (cek.status().code() == StatusCode::kAuthFailed) continue;  // not wrapped for this key
      if (cek.status().code() != StatusCode::kCorruption) return cek.status();
      if (!recipient_error) recipient_error = cek.status();
      continue;
    }
    LC_ASSIGN_OR_RETURN(crypto::AesGcm gcm, crypto::AesGcm::Create(cek->span()));
    SecureBuffer plaintext(jwe.ciphertext.size());
    Status opened = gcm.Open(jwe.iv, AsBytes(aad), jwe.ciphertext, jwe.tag, plaintext.span());
    if (opened.ok()) return plaintext;
    if (opened.code() != StatusCode::kAuthFailed) return opened;
    content_failed = true;
  }
  if (content_failed) {
    return Status::AuthFailed(
        "JWE authentication failed: the content does not verify under the key recovered with " +
        key.name() + " (tampered or spliced JWE)");
  }
  if (recipient_error) return *recipient_error;
  return Status::NotFound("no recipient of this JWE matches key " + key.name());
}

Result<std::string> Encrypt(ByteSpan plaintext, std::span<const JweRecipient> recipients) {
  if (recipients.empty()) return Status::InvalidArgument("JWE needs at least one recipient");
  if (recipients.size() > kMaxJweRecipients) {
    // DecryptJwe would refuse it: never write what no reader accepts.
    return Status::InvalidArgument(std::to_string(recipients.size()) +
                                   " recipients for one JWE (at most " +
                                   std::to_string(kMaxJweRecipients) + ")");
  }
  for (size_t i = 0; i < recipients.size(); ++i) {
    if (recipients[i].key == nullptr) {
      return Status::InvalidArgument("JWE recipient " + std::to_string(i + 1) + " has no key");
    }
  }
  LC_ASSIGN_OR_RETURN(SecureBuffer cek, crypto::RandomKey(kCekSize));
  std::vector<WrappedCek> wrapped;
  for (size_t i = 0; i < recipients.size(); ++i) {
    LC_ASSIGN_OR_RETURN(WrappedCek w, WrapCek(recipients[i], i, cek.span()));
    wrapped.push_back(std::move(w));
  }

  // go-jose sorts header names (it marshals a map): "alg" < "enc" < "epk".
  ordered_json protected_header;
  if (wrapped.size() == 1) {
    protected_header["alg"] = wrapped[0].header["alg"];
    protected_header["enc"] = std::string(kContentEncryption);
    if (wrapped[0].header.contains("epk")) protected_header["epk"] = wrapped[0].header["epk"];
  } else {
    protected_header["enc"] = std::string(kContentEncryption);
  }
  std::string protected_b64 = Base64UrlEncode(AsBytes(protected_header.dump()));

  std::array<uint8_t, crypto::kGcmNonceSize> iv;
  LC_RETURN_IF_ERROR(crypto::RandomBytes(iv));
  std::array<uint8_t, crypto::kGcmTagSize> tag;
  std::vector<uint8_t> ciphertext(plaintext.size());
  LC_ASSIGN_OR_RETURN(crypto::AesGcm gcm, crypto::AesGcm::Create(cek.span()));
  LC_RETURN_IF_ERROR(gcm.Seal(iv, AsBytes(protected_b64), plaintext, ciphertext, tag));

  // go-jose's rawJSONWebEncryption field order: protected, unprotected, header, recipients, aad,
  // encrypted_key, iv, ciphertext, tag.
  ordered_json out;
  out["protected"] = protected_b64;
  if (wrapped.size() > 1) {
    ordered_json list = ordered_json::array();
    for (const auto& w : wrapped) {
      ordered_json r;
      r["header"] = w.header;
      r["encrypted_key"] = Base64UrlEncode(w.encrypted_key);
      list.push_back(std::move(r));
    }
    out["recipients"] = std::move(list);
  }
  out["encrypted_key"] = Base64UrlEncode(wrapped[0].encrypted_key);
  out["iv"] = Base64UrlEncode(iv);
  out["ciphertext"] = Base64UrlEncode(ciphertext);
  out["tag"] = Base64UrlEncode(tag);
  return out.dump();
}

}  // namespace

std::string_view JweKeyAlgorithmName(JweKeyAlgorithm algorithm) {
  switch (algorithm) {
    case JweKeyAlgorithm::kRsaOaep:
      return "RSA-OAEP";
    case JweKeyAlgorithm::kRsaOaep256:
      return "RSA-OAEP-256";
    case JweKeyAlgorithm::kEcdhEsA256kw:
      return "ECDH-ES+A256KW";
  }
  return "?";
}

JweKeyAlgorithm DefaultJweKeyAlgorithm(const PublicKey& key) {
  return key.kind() == KeyKind::kEc ? JweKeyAlgorithm::kEcdhEsA256kw : JweKeyAlgorithm::kRsaOaep;
}

Result<size_t> CountJweRecipients(std::string_view jwe) { return CountJweRecipientsImpl(jwe); }

Result<std::string> EncryptJwe(ByteSpan plaintext, std::span<const JweRecipient> recipients) {
  try {
    return Encrypt(plaintext, recipients);
  } catch (const std::exception& e) {
    return Status::Internal(std::string("JWE encryption: ") + e.what());
  }
}

Result<SecureBuffer> DecryptJwe(std::string_view jwe, const PrivateKey& key) {
  try {
    return Decrypt(jwe, key);
  } catch (const std::exception& e) {
    // Only reachable through a bug (every member's type is checked before use); untrusted
    // bytes are not echoed.
    return Status::Internal("JWE decryption: unexpected exception");
  }
}

// ---------------------------------------------------------------------------------------------
// Building blocks (jwe_internal.h).

namespace internal {

Result<SecureBuffer> EcdhSharedSecret(EVP_PKEY* own, EVP_PKEY* peer) {
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, own, nullptr));
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1) {
    return OpenSslError("ECDH init");
  }
  if (EVP_PKEY_derive_set_peer_ex(ctx.get(), peer, /*validate_peer=*/1) != 1) {
    ClearOpenSslErrors();
    return Status::Corruption("ECDH peer key is not valid for this curve");
  }
  size_t size = 0;
  if (EVP_PKEY_derive(ctx.get(), nullptr, &size) != 1) return OpenSslError("ECDH derive");
  SecureBuffer z(size);
  if (EVP_PKEY_derive(ctx.get(), z.data(), &size) != 1) return OpenSslError("ECDH derive");
  if (size != z.size()) return SecureBuffer(z.span().first(size));
  return z;
}

Result<SecureBuffer> ConcatKdfSha256(ByteSpan z, std::string_view algorithm_id, ByteSpan apu,
                                     ByteSpan apv, size_t key_size_bytes) {
  std::vector<uint8_t> other_info;
  auto put32 = [&](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) other_info.push_back(uint8_t(v >> shift));
  };
  auto put_prefixed = [&](ByteSpan data) {
    put32(static_cast<uint32_t>(data.size()));
    other_info.insert(other_info.end(), data.begin(), data.end());
  };
  put_prefixed(AsBytes(algorithm_id));
  put_prefixed(apu);
  put_prefixed(apv);
  put32(static_cast<uint32_t>(key_size_bytes * 8));  // SuppPubInfo; SuppPrivInfo is empty

  EvpKdfPtr kdf(EVP_KDF_fetch(nullptr, "SSKDF", nullptr));
  if (!kdf) return OpenSslError("EVP_KDF_fetch(SSKDF)");
  EvpKdfCtxPtr ctx(EVP_KDF_CTX_new(kdf.get()));
  if (!ctx) return OpenSslError("EVP_KDF_CTX_new");
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(z.data()),
                                        z.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, other_info.data(), other_info.size()),
      OSSL_PARAM_construct_end(),
  };
  SecureBuffer out(key_size_bytes);
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1) {
    return OpenSslError("Concat KDF");
  }
  return out;
}

namespace {

const EVP_CIPHER* Aes256Wrap() {
  static EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "id-aes256-wrap", nullptr);
  return cipher;
}

Result<EvpCipherCtxPtr> KeyWrapContext(ByteSpan kek, bool encrypt) {
  if (kek.size() != 32) {
    return Status::InvalidArgument("AES-256 key wrap needs a 32-byte KEK, not " +
                                   std::to_string(kek.size()));
  }
  const EVP_CIPHER* cipher = Aes256Wrap();
  if (cipher == nullptr) return OpenSslError("EVP_CIPHER_fetch(id-aes256-wrap)");
  EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return OpenSslError("EVP_CIPHER_CTX_new");
  EVP_CIPHER_CTX_set_flags(ctx.get(), EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
  if (EVP_CipherInit_ex2(ctx.get(), cipher, kek.data(), nullptr, encrypt ? 1 : 0, nullptr) != 1) {
    return OpenSslError("AES key wrap init");
  }
  return ctx;
}

}  // namespace

Result<std::vector<uint8_t>> AesKeyWrap256(ByteSpan kek, ByteSpan key) {
  if (key.size() < 16 || key.size() % 8 != 0) {
    return Status::InvalidArgument("AES key wrap needs a key of 16 or more bytes, in 8s");
  }
  LC_ASSIGN_OR_RETURN(EvpCipherCtxPtr ctx, KeyWrapContext(kek, /*encrypt=*/true));
  std::vector<uint8_t> out(key.size() + 8 + 16);
  int length = 0;
  if (EVP_EncryptUpdate(ctx.get(), out.data(), &length, key.data(), static_cast<int>(key.size())) !=
      1) {
    return OpenSslError("AES key wrap");
  }
  int final_length = 0;
  if (EVP_EncryptFinal_ex(ctx.get(), out.data() + length, &final_length) != 1) {
    return OpenSslError("AES key wrap");
  }
  out.resize(static_cast<size_t>(length + final_length));
  return out;
}

Result<SecureBuffer> AesKeyUnwrap256(ByteSpan kek, ByteSpan wrapped) {
  if (wrapped.size() < 24 || wrapped.size() % 8 != 0) {
    return Status::AuthFailed("AES key unwrap: " + std::to_string(wrapped.size()) +
                              " bytes is not a wrapped key");
  }
  LC_ASSIGN_OR_RETURN(EvpCipherCtxPtr ctx, KeyWrapContext(kek, /*encrypt=*/false));
  SecureBuffer out(wrapped.size() + 16);
  int length = 0;
  if (EVP_DecryptUpdate(ctx.get(), out.data(), &length, wrapped.data(),
                        static_cast<int>(wrapped.size())) != 1 ||
      length <= 0) {
    ClearOpenSslErrors();
    return Status::AuthFailed("AES key unwrap: integrity check failed");
  }
  int final_length = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), out.data() + length, &final_length) != 1) {
    ClearOpenSslErrors();
    return Status::AuthFailed("AES key unwrap: integrity check failed");
  }
  return SecureBuffer(out.span().first(static_cast<size_t>(length + final_length)));
}

}  // namespace internal
}  // namespace lazycrypt::keywrap
