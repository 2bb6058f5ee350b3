// OCI referrers (OCI distribution spec 1.1): artifacts whose manifest names another manifest as
// its `subject`, found with the Referrers API (GET /v2/<name>/referrers/<digest>) or, on
// registries without it (the distribution 2.8 `docker-registry`), with the referrers tag schema:
// an OCI image index tagged "<alg>-<hex>" that pushers keep up to date.
//
// What a referrers list is worth: nothing by itself. Anyone who can push to the repository can
// add to it; the list (API answer or fallback tag) is not content-addressed. It only says where
// to look. A caller fetches a referrer's manifest by digest (verified), checks its subject and
// artifactType (FetchReferrerManifest), then authenticates the artifact's content on its own
// terms (a sealed zindex opens only with the layer's key).
//
// Thread-safety: free functions, independent per call (the registry::Client is thread-safe).
// Concurrent PushReferrer calls for one subject on a registry without the API race on the tag
// (the spec leaves that to clients; the registry has no conditional PUT): each pusher reads the tag
// back after writing it and adds its entry again when an interleaved update dropped it (3 times at
// most, then Unavailable; the manifest itself stays stored either way).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "image/oci.h"
#include "registry/registry.h"

namespace lazycrypt::image {

// The empty descriptor's media type and content (image-spec 1.1): the config of an artifact
// manifest that needs none.
inline constexpr std::string_view kMediaTypeOciEmpty = "application/vnd.oci.empty.v1+json";
inline constexpr std::string_view kOciEmptyJson = "{}";
inline constexpr std::string_view kOciEmptyDigest =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

// Bounds on what a referrers list may make us hold (the bytes of each page are already bounded by
// the registry client's manifest limit).
inline constexpr size_t kMaxReferrers = 4096;

// The referrers tag schema: "<alg truncated to 32>-<encoded truncated to 64>", characters not
// allowed in a tag replaced by '-'. "sha256:ab..." → "sha256-ab...".
std::string ReferrersTag(std::string_view digest);

// A descriptor's (or manifest's extra_json) "artifactType", "" when absent.
std::string ArtifactTypeOf(const Descriptor& d);

// GET /v2/<name>/referrers/<subject digest>?artifactType=...; when the registry has no Referrers
// API (404), the tag fallback (404 there, or not an image index: no referrers), which is asked
// in parallel with the API (one round trip either way; its answer is dropped when the API has
// one). Entries are
// filtered here by artifact_type ("" = all) whether or not the registry applied the filter;
// malformed entries (bad digest, not a manifest media type) are dropped, duplicates kept once.
// Other failures (auth, 5xx after retries, more than kMaxReferrers) are errors.
Result<std::vector<Descriptor>> ListReferrers(registry::Client& client, const registry::Reference& repo,
                                              std::string_view subject_digest,
                                              std::string_view artifact_type);

struct ArtifactBlob {
  std::string media_type;
  std::vector<uint8_t> bytes;
  std::map<std::string, std::string> annotations;
};

// Pushes the blobs, the empty config, and an OCI image manifest (artifactType, config = the empty
// descriptor, layers = the blobs in order, subject, annotations) by digest; when the registry
// does not answer the manifest PUT with an OCI-Subject header, also updates the fallback tag's
// index: adds this manifest (artifactType and annotations copied into its descriptor, as the
// Referrers API would list it), keeps the other entries, never lists one digest twice, and reads
// the tag back until it lists this manifest (see the race above). Returns the manifest digest.
Result<std::string> PushReferrer(registry::Client& client, const registry::Reference& repo,
                                 const Descriptor& subject, std::string_view artifact_type,
                                 const std::vector<ArtifactBlob>& blobs,
                                 const std::map<std::string, std::string>& annotations = {});

// A referrer's manifest, fetched by the listed digest (the client verifies it), with its size
// checked against the listed descriptor, its subject digest == subject_digest and its
// artifactType == artifact_type (when not ""). Corruption naming the mismatch otherwise (a list
// entry is only a claim).
struct ReferrerManifest {
  Descriptor descriptor;  // as listed
  Manifest manifest;
  std::string artifact_type;
};
Result<ReferrerManifest> FetchReferrerManifest(registry::Client& client,
                                               const registry::Reference& repo,
                                               const Descriptor& listed,
                                               std::string_view subject_digest,
                                               std::string_view artifact_type);

}  // namespace lazycrypt::image
