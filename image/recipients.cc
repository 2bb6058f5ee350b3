#include "image/recipients.h"

#include <set>

#include "image/convert_internal.h"
#include "image/envelope.h"
#include "image/layer.h"
#include "keywrap/base64.h"
#include "keywrap/envelope.h"
#include "keywrap/jwe.h"

namespace lazycrypt::image {

namespace {

// The privopts bytes exactly as wrapped (not re-serialized), from the first JWE entry a key opens.
Result<crypto::SecureBuffer> UnwrapPrivoptsBytes(std::string_view annotation,
                                                 const keywrap::KeyRing& keys) {
  LC_ASSIGN_OR_RETURN(std::vector<JweEntryInfo> entries, ListJweEntries(annotation));
  for (const JweEntryInfo& entry : entries) {
    auto jwe = keywrap::Base64Decode(entry.text);
    if (!jwe.ok()) continue;
    for (const keywrap::PrivateKey& key : keys.keys()) {
      auto plaintext = keywrap::DecryptJwe(AsStringView(*jwe), key);
      if (plaintext.ok()) return std::move(plaintext).value();
    }
  }
  // None opened: UnwrapPrivopts ranks the failures and names the keys.
  auto unwrapped = UnwrapPrivopts(annotation, keys);
  if (!unwrapped.ok()) return unwrapped.status();
  return Status::Internal("keys.jwe: a key opened the layer on the second attempt only");
}

std::string JoinEntries(const std::vector<std::string_view>& entries) {
  std::string out;
  for (std::string_view e : entries) {
    if (!out.empty()) out += ',';
    out += e;
  }
  return out;
}

}  // namespace

Result<std::string> ChangeLayerRecipients(const Descriptor& layer,
                                          const keywrap::KeyRing& keys,
                                          const std::vector<keywrap::PublicKey>& recipients,
                                          RecipientChange change) {
  if (keys.empty()) return Status::InvalidArgument("no private keys given (use --key)");
  if (recipients.empty()) return Status::InvalidArgument("no recipients given (use --recipient)");
  std::string annotation = layer.Annotation(kAnnotationEncKeysJwe);
  if (annotation.empty()) {
    return Status::Corruption("missing annotation " + std::string(kAnnotationEncKeysJwe));
  }
  // The caller must be a recipient, and a lazycrypt layer must be sound, before anything changes.
  if (ClassifyLayer(layer.media_type) == LayerKind::kLazycrypt) {
    LC_RETURN_IF_ERROR(UnwrapLazycryptLayer(layer, keys).status());
  }
  LC_ASSIGN_OR_RETURN(crypto::SecureBuffer privopts, UnwrapPrivoptsBytes(annotation, keys));
  LC_ASSIGN_OR_RETURN(std::vector<JweEntryInfo> entries, ListJweEntries(annotation));

  std::vector<std::string> kids;
  for (const keywrap::PublicKey& r : recipients) {
    LC_ASSIGN_OR_RETURN(std::string kid, RecipientKeyId(r));
    kids.push_back(std::move(kid));
  }
  auto named = [&](const std::string& kid) {
    for (const JweEntryInfo& e : entries) {
      for (const std::string& k : e.kids) {
        if (k == kid) return true;
      }
    }
    return false;
  };

  if (change == RecipientChange::kAdd) {
    for (size_t i = 0; i < recipients.size(); ++i) {
      if (named(kids[i])) {
        return Status::AlreadyExists(recipients[i].name() + " is already a recipient");
      }
    }
    size_t existing = 0;
    for (const JweEntryInfo& e : entries) existing += e.kids.size();
    if (existing + recipients.size() > keywrap::kMaxLayerRecipients) {
      return Status::InvalidArgument("the layer has " + std::to_string(existing) + " recipients; adding " +
                                     std::to_string(recipients.size()) + " would pass the limit of " +
                                     std::to_string(keywrap::kMaxLayerRecipients));
    }
    LC_ASSIGN_OR_RETURN(std::string added, WrapPrivoptsPerRecipient(privopts.span(), recipients));
    return annotation + "," + added;
  }

  std::set<std::string> removed(kids.begin(), kids.end());
  for (size_t i = 0; i < recipients.size(); ++i) {
    if (!named(kids[i])) {
      return Status::NotFound(recipients[i].name() + " (" + kids[i].substr(0, 19) +
                              "..) is not named as a recipient (a JWE written by ocicrypt names "
                              "no key ids; its recipients cannot be removed one by one)");
    }
  }
  std::vector<std::string_view> kept;
  for (size_t e = 0; e < entries.size(); ++e) {
    size_t hits = 0;
    for (const std::string& k : entries[e].kids) hits += removed.contains(k) ? 1 : 0;
    if (hits == 0) {
      kept.push_back(entries[e].text);
    } else if (hits != entries[e].kids.size()) {
      return Status::Unsupported("keys.jwe entry " + std::to_string(e + 1) +
                                 " wraps the key for a removed recipient together with others; it "
                                 "cannot be split without re-encrypting");
    }
  }
  if (kept.empty()) {
    return Status::FailedPrecondition("refusing to remove the last recipient (the layer could "
                                      "never be decrypted again)");
  }
  return JoinEntries(kept);
}

Result<ConvertReport> ChangeRecipients(ImageSource& src, ImageDestination& dst,
                                       const keywrap::KeyRing& keys,
                                       const std::vector<keywrap::PublicKey>& recipients,
                                       RecipientChange change, const RecipientsOptions& options) {
  if (keys.empty()) return Status::InvalidArgument("no private keys given (use --key)");
  if (recipients.empty()) return Status::InvalidArgument("no recipients given (use --recipient)");
  ConvertReport scratch;
  auto convert_image = [&](const LoadedImage& image,
                           const std::string& platform) -> Result<Descriptor> {
    auto convert_layer = [&](size_t i, const Descriptor& d, LayerReport& layer) -> Status {
      std::string name = LayerName(i, d);
      LC_RETURN_IF_ERROR(CopyBlob(src, dst, d).WithContext(name));
      layer.result = d;
      layer.result.media_type = OciLayerMediaType(d.media_type);
      LayerKind kind = ClassifyLayer(d.media_type);
      if (kind != LayerKind::kLazycrypt && kind != LayerKind::kOcicrypt) {
        layer.action = "copied";
        return Status::Ok();
      }
      auto changed = ChangeLayerRecipients(d, keys, recipients, change);
      if (!changed.ok()) return changed.status().WithContext(name);
      layer.result.annotations[std::string(kAnnotationEncKeysJwe)] = std::move(changed).value();
      layer.action = change == RecipientChange::kAdd ? "recipients added" : "recipients removed";
      return Status::Ok();
    };
    return internal::ConvertOneImage(src, dst, image, platform, convert_layer, options.on_layer,
                                     scratch);
  };
  auto precheck = [&](const LoadedRoot& root) -> Status {
    for (const LoadedImage& image : root.images) {
      for (const Descriptor& d : image.manifest.layers) {
        LayerKind kind = ClassifyLayer(d.media_type);
        if (kind == LayerKind::kLazycrypt || kind == LayerKind::kOcicrypt) return Status::Ok();
      }
    }
    return Status::InvalidArgument(src.Name() + ": no encrypted layer");
  };
  LC_ASSIGN_OR_RETURN(ConvertReport report,
                      internal::ConvertRoot(src, dst, precheck, convert_image));
  report.layers = std::move(scratch.layers);
  return report;
}

Result<ConvertReport> ChangeRecipients(const ImageReference& src, const ImageReference& dst,
                                       const keywrap::KeyRing& keys,
                                       const std::vector<keywrap::PublicKey>& recipients,
                                       RecipientChange change, const RecipientsOptions& options) {
  if (keys.empty()) return Status::InvalidArgument("no private keys given (use --key)");
  if (recipients.empty()) return Status::InvalidArgument("no recipients given (use --recipient)");
  LC_ASSIGN_OR_RETURN(auto source, OpenImageSource(src));
  LC_ASSIGN_OR_RETURN(auto destination, OpenImageDestination(dst));
  return ChangeRecipients(*source, *destination, keys, recipients, change, options);
}

}  // namespace lazycrypt::image
