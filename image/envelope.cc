#include "image/envelope.h"

#include <openssl/crypto.h>
#include <openssl/x509.h>

#include <memory>
#include <span>

#include <nlohmann/json.hpp>

#include "common/json_depth.h"
#include "keywrap/base64.h"
#include "keywrap/envelope.h"
#include "keywrap/jwe.h"

namespace lazycrypt::image {

namespace {

// The JWE entries of a keys annotation, refusing more recipients than a layer may have.
Result<std::vector<std::string_view>> JweEntries(std::string_view keys_jwe_annotation) {
  LC_RETURN_IF_ERROR(keywrap::CheckLayerRecipientCount(keys_jwe_annotation));
  return keywrap::SplitAnnotationEntries(keys_jwe_annotation, keywrap::kMaxLayerRecipients,
                                         kAnnotationEncKeysJwe);
}

// Higher is more informative: a key that decrypted but did not verify beats a malformed entry,
// which beats "not a recipient".
int Severity(StatusCode code) {
  switch (code) {
    case StatusCode::kAuthFailed: return 3;
    case StatusCode::kCorruption:
    case StatusCode::kUnsupported: return 2;
    case StatusCode::kNotFound: return 1;
    default: return 2;
  }
}

// The "cipher" member of privopts (keywrap's parser ignores members ocicrypt does not define).
Result<std::string> PrivoptsCipher(ByteSpan privopts) {
  LC_RETURN_IF_ERROR(CheckJsonDepth(AsStringView(privopts), "privopts"));
  try {
    auto j = nlohmann::json::parse(AsStringView(privopts));
    auto it = j.find("cipher");
    if (it == j.end() || it->is_null()) return std::string();
    if (!it->is_string()) return Status::Corruption("privopts: \"cipher\" is not a string");
    return it->get<std::string>();
  } catch (const nlohmann::json::exception&) {
    return Status::Corruption("privopts: invalid JSON");
  }
}

void MergeHeader(const nlohmann::json& header, JweRecipientInfo& info) {
  if (!header.is_object()) return;
  if (info.alg.empty() && header.contains("alg") && header["alg"].is_string()) {
    info.alg = header["alg"].get<std::string>();
  }
  if (info.kid.empty() && header.contains("kid") && header["kid"].is_string()) {
    info.kid = header["kid"].get<std::string>();
  }
  if (info.crv.empty() && header.contains("epk") && header["epk"].is_object() &&
      header["epk"].contains("crv") && header["epk"]["crv"].is_string()) {
    info.crv = header["epk"]["crv"].get<std::string>();
  }
}

}  // namespace

std::string KeyNames(const std::vector<keywrap::PrivateKey>& keys) {
  std::string out = "[";
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i > 0) out += ", ";
    out += keys[i].name();
  }
  return out + "]";
}

Result<crypto::SecureBuffer> SerializeLazycryptPrivopts(const format::LayerKey& key,
                                                        const crypto::Sha256Digest& toc_digest) {
  if (key.size() != format::kLayerKeySize) {
    return Status::InvalidArgument("layer key must be " + std::to_string(format::kLayerKeySize) +
                                   " bytes");
  }
  std::string json;
  json.reserve(256);  // never reallocates: no unwiped copy of the key is left behind
  json += R"({"symkey":")";
  keywrap::AppendBase64(json, key.span());
  json += R"(","cipher":")";
  json += kLazycryptCipherName;
  json += R"(","digest":")";
  json += crypto::OciDigest(toc_digest);
  json += R"(","cipheroptions":{}})";
  crypto::SecureBuffer out(AsBytes(json));
  OPENSSL_cleanse(json.data(), json.size());
  if (out.size() >= kMaxPrivoptsBytes) {
    return Status::Internal("lazycrypt privopts is " + std::to_string(out.size()) +
                            " bytes, over the limit of " + std::to_string(kMaxPrivoptsBytes));
  }
  return out;
}

Result<std::map<std::string, std::string>> WrapPrivoptsForProviders(
    ByteSpan privopts, const std::vector<std::shared_ptr<const keywrap::KeyProvider>>& providers) {
  std::map<std::string, std::string> out;
  if (providers.size() > keywrap::kMaxKeyProviderPackets) {
    return Status::InvalidArgument(std::to_string(providers.size()) + " key providers for one layer (at most " +
                                   std::to_string(keywrap::kMaxKeyProviderPackets) + ")");
  }
  for (const auto& provider : providers) {
    auto packet = provider->WrapKey(privopts);
    if (!packet.ok()) return packet.status().WithContext("wrapping the layer key");
    if (packet->empty()) {
      return Status::Corruption("key provider '" + provider->name() + "' returned an empty annotation");
    }
    std::string& value = out[keywrap::KeyProviderAnnotation(provider->name())];
    if (!value.empty()) value += ',';  // the same provider twice: one packet per pass, as ocicrypt
    value += keywrap::Base64Encode(*packet);
  }
  return out;
}

Result<LazycryptAnnotations> MakeLazycryptAnnotations(
    const format::LayerKey& key, const crypto::Sha256Digest& toc_digest,
    const format::KeyCommitment& commitment, const keywrap::Recipients& recipients) {
  if (recipients.empty()) return Status::InvalidArgument("no recipients to wrap the layer key for");
  LC_ASSIGN_OR_RETURN(crypto::SecureBuffer privopts, SerializeLazycryptPrivopts(key, toc_digest));
  LazycryptAnnotations out;
  if (!recipients.public_keys().empty()) {
    LC_ASSIGN_OR_RETURN(out.keys_jwe,
                        WrapPrivoptsPerRecipient(privopts.span(), recipients.public_keys()));
  }
  LC_ASSIGN_OR_RETURN(out.provider_keys,
                      WrapPrivoptsForProviders(privopts.span(), recipients.providers()));
  keywrap::PublicLayerOptions pub;
  pub.cipher = std::string(kLazycryptCipherName);
  pub.cipher_options[std::string(kCommitmentCipherOption)] =
      std::vector<uint8_t>(commitment.begin(), commitment.end());
  LC_ASSIGN_OR_RETURN(out.pubopts, keywrap::EncodePubOptsAnnotation(pub));
  out.toc_digest = crypto::OciDigest(toc_digest);
  return out;
}

Result<std::string> RecipientKeyId(const keywrap::PublicKey& key) {
  unsigned char* der = nullptr;
  int len = i2d_PUBKEY(key.evp_pkey(), &der);
  if (len <= 0 || der == nullptr) {
    return Status::Internal(key.name() + ": cannot encode the public key as DER");
  }
  std::unique_ptr<unsigned char, void (*)(unsigned char*)> owned(
      der, [](unsigned char* p) { OPENSSL_free(p); });
  return crypto::OciDigest(crypto::Sha256::Of(ByteSpan(der, static_cast<size_t>(len))));
}

Result<std::string> WrapPrivoptsPerRecipient(ByteSpan privopts,
                                             const std::vector<keywrap::PublicKey>& recipients) {
  if (recipients.empty()) return Status::InvalidArgument("no recipients to wrap the layer key for");
  if (recipients.size() > keywrap::kMaxLayerRecipients) {
    return Status::InvalidArgument(std::to_string(recipients.size()) + " recipients for one layer (at most " +
                                   std::to_string(keywrap::kMaxLayerRecipients) + ")");
  }
  std::string out;
  for (const keywrap::PublicKey& r : recipients) {
    LC_ASSIGN_OR_RETURN(std::string kid, RecipientKeyId(r));
    keywrap::JweRecipient one{&r, keywrap::DefaultJweKeyAlgorithm(r)};
    LC_ASSIGN_OR_RETURN(std::string jwe, keywrap::EncryptJwe(privopts, std::span(&one, 1)));
    std::string with_kid;
    try {
      // A single-recipient JWE is in the flattened serialization; its per-recipient unprotected
      // header ("header") is where the key id goes (RFC 7516 §7.2.2).
      nlohmann::ordered_json j = nlohmann::ordered_json::parse(jwe);
      if (j.contains("recipients")) return Status::Internal("expected a flattened JWE");
      j["header"]["kid"] = kid;
      with_kid = j.dump();
    } catch (const nlohmann::json::exception& e) {
      return Status::Internal(std::string("JWE JSON: ") + e.what());
    }
    if (!out.empty()) out += ',';
    out += keywrap::Base64Encode(AsBytes(with_kid));
  }
  return out;
}

Result<std::vector<JweEntryInfo>> ListJweEntries(std::string_view annotation_value) {
  std::vector<JweEntryInfo> out;
  if (annotation_value.empty()) return out;
  LC_ASSIGN_OR_RETURN(std::vector<std::string_view> entries, JweEntries(annotation_value));
  for (size_t i = 0; i < entries.size(); ++i) {
    auto recipients = ListJweRecipients(entries[i]);
    if (!recipients.ok()) {
      return recipients.status().WithContext("keys.jwe entry " + std::to_string(i + 1));
    }
    JweEntryInfo info;
    info.text = entries[i];
    for (const JweRecipientInfo& r : *recipients) info.kids.push_back(r.kid);
    out.push_back(std::move(info));
  }
  return out;
}

Result<LazycryptPublicInfo> ParseLazycryptPublicInfo(const Descriptor& layer) {
  LazycryptPublicInfo info;
  std::string toc = layer.Annotation(kAnnotationLazycryptTocDigest);
  if (toc.empty()) {
    return Status::Corruption("missing annotation " + std::string(kAnnotationLazycryptTocDigest));
  }
  auto toc_digest = crypto::ParseOciDigest(toc);
  if (!toc_digest.ok()) {
    return toc_digest.status().WithContext("annotation " + std::string(kAnnotationLazycryptTocDigest));
  }
  info.toc_digest = *toc_digest;
  std::string pubopts = layer.Annotation(kAnnotationEncPubopts);
  if (pubopts.empty()) {
    return Status::Corruption("missing annotation " + std::string(kAnnotationEncPubopts));
  }
  auto pub = keywrap::DecodePubOptsAnnotation(pubopts);
  if (!pub.ok()) return pub.status().WithContext("annotation " + std::string(kAnnotationEncPubopts));
  if (pub->cipher != kLazycryptCipherName) {
    return Status::Unsupported("pubopts cipher '" + pub->cipher.substr(0, 64) + "' is not " +
                               std::string(kLazycryptCipherName));
  }
  auto c = pub->cipher_options.find(std::string(kCommitmentCipherOption));
  if (c == pub->cipher_options.end() || c->second.size() != format::kCommitmentSize) {
    return Status::Corruption("pubopts: cipheroptions.commitment must be " +
                              std::to_string(format::kCommitmentSize) + " bytes");
  }
  std::copy(c->second.begin(), c->second.end(), info.commitment.begin());
  return info;
}

Result<UnwrappedPrivopts> UnwrapPrivopts(std::string_view keys_jwe_annotation,
                                         const keywrap::KeyRing& ring) {
  const std::vector<keywrap::PrivateKey>& keys = ring.keys();
  if (keys.empty()) return Status::InvalidArgument("no private keys given (use --key)");
  if (keys_jwe_annotation.empty()) {
    return Status::Corruption("missing annotation " + std::string(kAnnotationEncKeysJwe));
  }
  LC_ASSIGN_OR_RETURN(std::vector<std::string_view> entries, JweEntries(keys_jwe_annotation));
  std::optional<Status> worst;
  auto note = [&](Status s, size_t entry) {
    if (entries.size() > 1) {
      s = s.WithContext("JWE " + std::to_string(entry + 1) + " of " + std::to_string(entries.size()));
    }
    if (!worst || Severity(s.code()) > Severity(worst->code())) worst = std::move(s);
  };
  for (size_t i = 0; i < entries.size(); ++i) {
    auto jwe = keywrap::Base64Decode(entries[i]);
    if (!jwe.ok()) {
      note(jwe.status().WithContext(std::string(kAnnotationEncKeysJwe)), i);
      continue;
    }
    for (const keywrap::PrivateKey& key : keys) {
      auto plaintext = keywrap::DecryptJwe(AsStringView(*jwe), key);
      if (!plaintext.ok()) {
        if (plaintext.status().code() != StatusCode::kNotFound) note(plaintext.status(), i);
        continue;
      }
      auto opts = keywrap::ParsePrivateLayerOptions(AsStringView(plaintext->span()));
      if (!opts.ok()) return opts.status().WithContext("privopts unwrapped with " + key.name());
      LC_ASSIGN_OR_RETURN(std::string cipher, PrivoptsCipher(plaintext->span()));
      UnwrappedPrivopts out{std::move(opts).value(), std::move(cipher), key.name()};
      return out;
    }
  }
  if (worst) return *worst;
  return Status::NotFound("none of the keys " + KeyNames(keys) + " is a recipient");
}

Result<UnwrappedPrivopts> UnwrapLayerPrivopts(const Descriptor& layer, const keywrap::KeyRing& keys) {
  if (keys.empty()) {
    return Status::InvalidArgument("no private keys or key providers given (use --key)");
  }
  const std::string jwe = layer.Annotation(kAnnotationEncKeysJwe);
  if (keys.providers().empty()) {
    if (jwe.empty()) {
      // Say which providers could open it rather than "missing annotation".
      std::string wrapped_for;
      for (const auto& [name, value] : layer.annotations) {
        if (name.starts_with(keywrap::kKeyProviderAnnotationPrefix)) {
          wrapped_for += (wrapped_for.empty() ? "" : ", ") + std::string("provider:") +
                         name.substr(keywrap::kKeyProviderAnnotationPrefix.size());
        }
      }
      if (!wrapped_for.empty()) {
        return Status::NotFound("the layer key is wrapped only for key providers [" + wrapped_for +
                                "]; none of the keys " + keys.Describe() +
                                " can unwrap it (use --key provider:NAME)");
      }
    }
    return UnwrapPrivopts(jwe, keys);
  }

  std::optional<Status> worst;
  auto note = [&](Status s) {
    if (!worst || Severity(s.code()) > Severity(worst->code())) worst = std::move(s);
  };
  bool any_annotation = !jwe.empty();
  if (!keys.keys().empty() && !jwe.empty()) {
    auto unwrapped = UnwrapPrivopts(jwe, keys);
    if (unwrapped.ok()) return unwrapped;
    if (unwrapped.status().code() != StatusCode::kNotFound) note(unwrapped.status());
  }
  std::vector<std::string> absent;  // providers the layer has no annotation for
  for (const auto& provider : keys.providers()) {
    const std::string label = "provider:" + provider->name();
    const std::string annotation = layer.Annotation(keywrap::KeyProviderAnnotation(provider->name()));
    if (annotation.empty()) {
      absent.push_back(label);
      continue;
    }
    any_annotation = true;
    LC_ASSIGN_OR_RETURN(std::vector<std::string_view> packets,
                        keywrap::SplitAnnotationEntries(
                            annotation, keywrap::kMaxKeyProviderPackets,
                            keywrap::KeyProviderAnnotation(provider->name())));
    for (std::string_view entry : packets) {
      auto packet = keywrap::Base64Decode(entry);
      if (!packet.ok()) {
        note(packet.status().WithContext(keywrap::KeyProviderAnnotation(provider->name())));
        continue;
      }
      auto privopts = provider->UnwrapKey(*packet);
      if (!privopts.ok()) {
        // The provider's own error names it; a refusal is as informative as a malformed entry.
        note(privopts.status().code() == StatusCode::kNotFound
                 ? Status::Unavailable(privopts.status().message())
                 : privopts.status());
        continue;
      }
      auto opts = keywrap::ParsePrivateLayerOptions(AsStringView(privopts->span()));
      if (!opts.ok()) return opts.status().WithContext("privopts unwrapped with " + label);
      LC_ASSIGN_OR_RETURN(std::string cipher, PrivoptsCipher(privopts->span()));
      return UnwrappedPrivopts{std::move(opts).value(), std::move(cipher), label};
    }
  }
  if (!any_annotation) {
    return Status::Corruption("missing annotation " + std::string(kAnnotationEncKeysJwe) +
                              " (and no " + std::string(keywrap::kKeyProviderAnnotationPrefix) +
                              "<name> annotation for " + keys.Describe() + ")");
  }
  if (worst) return worst->WithContext("none of " + keys.Describe() + " unwrapped the layer key");
  std::string why;
  if (!absent.empty()) {
    why = " (the layer has no annotation for";
    for (const std::string& a : absent) why += " " + a;
    why += ")";
  }
  return Status::NotFound("none of " + keys.Describe() + " is a recipient" + why);
}

Result<LazycryptLayerSecret> UnwrapLazycryptLayer(const Descriptor& layer,
                                                  const keywrap::KeyRing& keys) {
  LC_ASSIGN_OR_RETURN(LazycryptPublicInfo pub, ParseLazycryptPublicInfo(layer));
  LC_ASSIGN_OR_RETURN(UnwrappedPrivopts unwrapped, UnwrapLayerPrivopts(layer, keys));
  keywrap::PrivateLayerOptions& opts = unwrapped.options;
  if (unwrapped.cipher != kLazycryptCipherName) {
    return Status::Unsupported("privopts cipher '" + unwrapped.cipher.substr(0, 64) + "' is not " +
                               std::string(kLazycryptCipherName));
  }
  if (opts.symkey.size() != format::kLayerKeySize) {
    return Status::Corruption("privopts symkey is " + std::to_string(opts.symkey.size()) +
                              " bytes, not " + std::to_string(format::kLayerKeySize));
  }
  auto digest = crypto::ParseOciDigest(opts.digest);
  if (!digest.ok()) return digest.status().WithContext("privopts digest");
  if (*digest != pub.toc_digest) {
    return Status::AuthFailed("annotation " + std::string(kAnnotationLazycryptTocDigest) + " (" +
                              crypto::OciDigest(pub.toc_digest) +
                              ") disagrees with the wrapped TOC digest " + opts.digest);
  }
  LazycryptLayerSecret secret;
  secret.key = std::move(opts.symkey);
  secret.toc_digest = *digest;
  secret.commitment = pub.commitment;
  secret.key_name = std::move(unwrapped.key_name);
  return secret;
}

Result<std::vector<JweRecipientInfo>> ListJweRecipients(std::string_view annotation_value) {
  std::vector<JweRecipientInfo> out;
  if (annotation_value.empty()) return out;
  LC_ASSIGN_OR_RETURN(std::vector<std::string_view> entries, JweEntries(annotation_value));
  for (size_t i = 0; i < entries.size(); ++i) {
    std::string where = "keys.jwe entry " + std::to_string(i + 1);
    auto jwe = keywrap::Base64Decode(entries[i]);
    if (!jwe.ok()) return jwe.status().WithContext(where);
    LC_RETURN_IF_ERROR(CheckJsonDepth(AsStringView(*jwe), where));
    try {
      auto j = nlohmann::json::parse(AsStringView(*jwe));
      if (!j.is_object()) return Status::Corruption(where + ": not a JSON object");
      nlohmann::json protected_header = nlohmann::json::object();
      if (j.contains("protected") && j["protected"].is_string()) {
        auto decoded = keywrap::Base64UrlDecode(j["protected"].get<std::string>());
        if (!decoded.ok()) return decoded.status().WithContext(where + ": protected header");
        LC_RETURN_IF_ERROR(CheckJsonDepth(AsStringView(*decoded), where + ": protected header"));
        protected_header = nlohmann::json::parse(AsStringView(*decoded));
      }
      nlohmann::json shared = j.contains("unprotected") ? j["unprotected"] : nlohmann::json::object();
      auto add = [&](const nlohmann::json& per_recipient) {
        JweRecipientInfo info;
        MergeHeader(per_recipient, info);
        MergeHeader(shared, info);
        MergeHeader(protected_header, info);
        out.push_back(std::move(info));
      };
      if (j.contains("recipients") && j["recipients"].is_array()) {
        for (const auto& r : j["recipients"]) {
          add(r.contains("header") ? r["header"] : nlohmann::json::object());
        }
      } else {
        add(j.contains("header") ? j["header"] : nlohmann::json::object());
      }
    } catch (const nlohmann::json::exception& e) {
      return Status::Corruption(where + ": invalid JSON: " + e.what());
    }
  }
  return out;
}

}  // namespace lazycrypt::image
