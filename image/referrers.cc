#include "image/referrers.h"

#include <algorithm>
#include <cstring>
#include <future>
#include <set>
#include <system_error>

#include <nlohmann/json.hpp>

#include "crypto/digest.h"

namespace lazycrypt::image {
namespace {

using Json = nlohmann::ordered_json;

// A BlobSource over bytes the caller keeps alive (PushBlob reads the blob once or twice).
class SpanBlobSource final : public BlobSource {
 public:
  explicit SpanBlobSource(ByteSpan bytes) : bytes_(bytes) {}
  uint64_t size() const override { return bytes_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    if (offset > bytes_.size() || out.size() > bytes_.size() - offset) {
      return Status::Corruption("read past the end of an in-memory blob");
    }
    if (!out.empty()) std::memcpy(out.data(), bytes_.data() + offset, out.size());
    return Status::Ok();
  }

 private:
  ByteSpan bytes_;
};

bool IsTagChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

std::string Sanitized(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (!IsTagChar(c)) c = '-';
  }
  return out;
}

// The member `name` of a JSON object serialized in `extra_json`, when it is a string.
std::string ExtraString(const std::string& extra_json, std::string_view name) {
  if (extra_json.empty() || extra_json == "{}") return "";
  Json j = Json::parse(extra_json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return "";
  auto it = j.find(std::string(name));
  if (it == j.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

Status CheckSubjectDigest(const registry::Reference& repo, std::string_view digest) {
  Status s = ValidateDigest(digest, "subject digest");
  if (!s.ok()) return s.WithContext(repo.Name());
  return Status::Ok();
}

// The referrers index's entries that are manifests (or indexes) with a valid digest, filtered by
// artifact type, each digest once, appended to `out` (bounded by kMaxReferrers).
Status AppendEntries(const registry::Reference& repo, const Index& index,
                     std::string_view artifact_type, std::set<std::string>& seen,
                     std::vector<Descriptor>& out) {
  for (const Descriptor& d : index.manifests) {
    if (!IsManifestMediaType(d.media_type) && !IsIndexMediaType(d.media_type)) continue;
    if (!artifact_type.empty() && ArtifactTypeOf(d) != artifact_type) continue;
    if (!seen.insert(d.digest).second) continue;
    if (out.size() >= kMaxReferrers) {
      return Status::Corruption(repo.Name() + ": more than " + std::to_string(kMaxReferrers) +
                                " referrers listed");
    }
    out.push_back(d);
  }
  return Status::Ok();
}

// The fallback tag's index, or nullopt when the tag does not exist or is not an image index
// (the spec: then there are no referrers). Transport and auth errors are errors.
Result<std::optional<Index>> FetchFallbackIndex(registry::Client& client,
                                                const registry::Reference& repo,
                                                std::string_view subject_digest) {
  registry::Reference tag_ref{repo.registry, repo.repository, ReferrersTag(subject_digest), ""};
  auto manifest = client.GetManifest(tag_ref);
  if (manifest.status().code() == StatusCode::kNotFound) return std::optional<Index>();
  if (!manifest.ok()) return manifest.status();
  if (!IsIndexMediaType(manifest->media_type)) return std::optional<Index>();
  auto index = ParseIndex(manifest->bytes);
  if (!index.ok()) return std::optional<Index>();
  return std::optional<Index>(std::move(index).value());
}

std::string SubjectJson(const Descriptor& subject) {
  Descriptor d;
  d.media_type = subject.media_type;
  d.digest = subject.digest;
  d.size = subject.size;
  return SerializeDescriptor(d);
}

}  // namespace

std::string ReferrersTag(std::string_view digest) {
  size_t colon = digest.find(':');
  std::string_view alg = colon == std::string_view::npos ? std::string_view() : digest.substr(0, colon);
  std::string_view encoded = colon == std::string_view::npos ? digest : digest.substr(colon + 1);
  return Sanitized(alg.substr(0, 32)) + "-" + Sanitized(encoded.substr(0, 64));
}

std::string ArtifactTypeOf(const Descriptor& d) { return ExtraString(d.extra_json, "artifactType"); }

Result<std::vector<Descriptor>> ListReferrers(registry::Client& client, const registry::Reference& repo,
                                              std::string_view subject_digest,
                                              std::string_view artifact_type) {
  LC_RETURN_IF_ERROR(CheckSubjectDigest(repo, subject_digest));
  std::vector<Descriptor> out;
  std::set<std::string> seen;
  // The tag fallback is asked at the same time as the API: on a registry without the API (the
  // API answers 404) its answer is then ready, not a round trip later (an indexed layer's pull
  // waits for this lookup). On a registry with the API the fallback's answer is dropped, errors
  // too. Without a thread to spare, after the API's 404, as before.
  std::future<Result<std::optional<Index>>> fallback_early;
  try {
    fallback_early = std::async(std::launch::async, [&client, repo, subject_digest] {
      return FetchFallbackIndex(client, repo, subject_digest);
    });
  } catch (const std::system_error&) {
  }
  auto pages = client.GetReferrers(repo, subject_digest, artifact_type);
  if (pages.ok()) {
    for (const auto& page : *pages) {
      auto index = ParseIndex(page.bytes);
      if (!index.ok()) {
        return index.status().WithContext(repo.Name() + ": the referrers of " +
                                          std::string(subject_digest));
      }
      LC_RETURN_IF_ERROR(AppendEntries(repo, *index, artifact_type, seen, out));
    }
    return out;
  }
  if (pages.status().code() != StatusCode::kNotFound) return pages.status();
  LC_ASSIGN_OR_RETURN(auto fallback, fallback_early.valid()
                                         ? fallback_early.get()
                                         : FetchFallbackIndex(client, repo, subject_digest));
  if (fallback) LC_RETURN_IF_ERROR(AppendEntries(repo, *fallback, artifact_type, seen, out));
  return out;
}

Result<std::string> PushReferrer(registry::Client& client, const registry::Reference& repo,
                                 const Descriptor& subject, std::string_view artifact_type,
                                 const std::vector<ArtifactBlob>& blobs,
                                 const std::map<std::string, std::string>& annotations) {
  LC_RETURN_IF_ERROR(CheckSubjectDigest(repo, subject.digest));
  if (artifact_type.empty()) {
    return Status::InvalidArgument(repo.Name() + ": a referrer needs an artifact type");
  }
  if (!IsManifestMediaType(subject.media_type) && !IsIndexMediaType(subject.media_type)) {
    return Status::InvalidArgument(repo.Name() + ": the subject " + subject.digest +
                                   " is not a manifest (" + subject.media_type + ")");
  }

  // Blobs first (the empty config among them), then the manifest that names them.
  Manifest manifest;
  manifest.media_type = std::string(kMediaTypeOciManifest);
  manifest.config.media_type = std::string(kMediaTypeOciEmpty);
  manifest.config.digest = std::string(kOciEmptyDigest);
  manifest.config.size = kOciEmptyJson.size();
  SpanBlobSource empty(AsBytes(kOciEmptyJson));
  LC_RETURN_IF_ERROR(client.PushBlob(repo, kOciEmptyDigest, empty));
  for (const ArtifactBlob& blob : blobs) {
    Descriptor d;
    d.media_type = blob.media_type;
    d.digest = crypto::OciDigest(crypto::Sha256::Of(blob.bytes));
    d.size = blob.bytes.size();
    d.annotations = blob.annotations;
    SpanBlobSource source(blob.bytes);
    LC_RETURN_IF_ERROR(client.PushBlob(repo, d.digest, source));
    manifest.layers.push_back(std::move(d));
  }
  manifest.annotations = annotations;
  Json extra = Json::object();
  extra["artifactType"] = std::string(artifact_type);
  extra["subject"] = Json::parse(SubjectJson(subject));
  manifest.extra_json = extra.dump();
  const std::string bytes = SerializeManifest(manifest);
  const std::string digest = crypto::OciDigest(crypto::Sha256::Of(AsBytes(bytes)));
  LC_ASSIGN_OR_RETURN(auto answer, client.PutManifestWithAnswer(repo.WithDigest(digest), AsBytes(bytes),
                                                                kMediaTypeOciManifest));
  if (answer.digest != digest) {
    return Status::Corruption(repo.Name() + ": the registry stored the referrer as " +
                              answer.digest + ", expected " + digest);
  }
  if (!answer.oci_subject.empty()) {
    // The registry indexes subjects itself (Referrers API): no tag to maintain.
    if (answer.oci_subject != subject.digest) {
      return Status::Corruption(repo.Name() + ": the registry filed referrer " + digest +
                                " under subject " + answer.oci_subject + ", not " + subject.digest);
    }
    return digest;
  }

  // No Referrers API: read, modify, write the fallback tag's index, then read it back: another
  // pusher's read-modify-write that interleaved with ours may have dropped our entry (the registry
  // offers no conditional PUT); add it again then, a few times at most.
  Descriptor entry;
  entry.media_type = std::string(kMediaTypeOciManifest);
  entry.digest = digest;
  entry.size = bytes.size();
  entry.annotations = annotations;
  Json entry_extra = Json::object();
  entry_extra["artifactType"] = std::string(artifact_type);
  entry.extra_json = entry_extra.dump();
  const registry::Reference tag_ref{repo.registry, repo.repository, ReferrersTag(subject.digest), ""};
  constexpr int kTagAttempts = 3;
  for (int attempt = 0;; ++attempt) {
    LC_ASSIGN_OR_RETURN(auto existing, FetchFallbackIndex(client, repo, subject.digest));
    Index index;
    if (existing) index = std::move(*existing);
    const bool listed = std::any_of(index.manifests.begin(), index.manifests.end(),
                                    [&](const Descriptor& d) { return d.digest == digest; });
    if (listed) return digest;
    if (attempt == kTagAttempts) {
      return Status::Unavailable(repo.Name() + ": referrer " + digest + " pushed, but the referrers tag " +
                                 tag_ref.tag + " lost it " + std::to_string(kTagAttempts) +
                                 " times to concurrent updates");
    }
    if (index.manifests.size() >= kMaxReferrers) {
      return Status::FailedPrecondition(repo.Name() + ": the referrers tag of " + subject.digest +
                                        " already lists " + std::to_string(kMaxReferrers) +
                                        " referrers");
    }
    index.schema_version = 2;
    index.media_type = std::string(kMediaTypeOciIndex);
    index.manifests.push_back(entry);
    const std::string index_bytes = SerializeIndex(index);
    auto put = client.PutManifest(tag_ref, AsBytes(index_bytes), kMediaTypeOciIndex);
    if (!put.ok()) {
      return put.status().WithContext("referrer " + digest + " pushed, but the referrers tag " +
                                      tag_ref.tag + " was not updated");
    }
  }
}

Result<ReferrerManifest> FetchReferrerManifest(registry::Client& client,
                                               const registry::Reference& repo,
                                               const Descriptor& listed,
                                               std::string_view subject_digest,
                                               std::string_view artifact_type) {
  LC_RETURN_IF_ERROR(ValidateDigest(listed.digest, "referrer digest"));
  LC_ASSIGN_OR_RETURN(registry::Manifest fetched, client.GetManifest(repo.WithDigest(listed.digest)));
  const std::string what = repo.Name() + ": referrer " + listed.digest;
  if (fetched.digest != listed.digest) {
    return Status::AuthFailed(what + ": fetched manifest hashes to " + fetched.digest);
  }
  if (fetched.bytes.size() != listed.size) {
    return Status::Corruption(what + ": " + std::to_string(fetched.bytes.size()) +
                              " bytes, listed as " + std::to_string(listed.size));
  }
  auto manifest = ParseManifest(fetched.bytes);
  if (!manifest.ok()) return manifest.status().WithContext(what);
  ReferrerManifest out;
  out.descriptor = listed;
  out.artifact_type = ExtraString(manifest->extra_json, "artifactType");
  if (out.artifact_type.empty()) out.artifact_type = manifest->config.media_type;
  if (!artifact_type.empty() && out.artifact_type != artifact_type) {
    return Status::Corruption(what + ": artifact type " + out.artifact_type + ", listed as " +
                              std::string(artifact_type));
  }
  std::string subject;
  if (!manifest->extra_json.empty() && manifest->extra_json != "{}") {
    Json extra = Json::parse(manifest->extra_json, nullptr, /*allow_exceptions=*/false);
    if (extra.is_object() && extra.contains("subject") && extra["subject"].is_object()) {
      auto s = extra["subject"].find("digest");
      if (s != extra["subject"].end() && s->is_string()) subject = s->get<std::string>();
    }
  }
  if (subject != subject_digest) {
    return Status::Corruption(what + ": its subject is " + (subject.empty() ? "absent" : subject) +
                              ", not " + std::string(subject_digest));
  }
  out.manifest = std::move(manifest).value();
  return out;
}

}  // namespace lazycrypt::image
