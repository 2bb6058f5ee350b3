// OCI image types (descriptor, manifest, index, image config) as lazycrypt reads and writes them,
// with the media types and annotations of the ocicrypt convention and of lazycrypt.
//
// Parsing is strict about what lazycrypt relies on (digests, sizes, media types) and lenient about
// the rest: members a struct does not model are kept verbatim (`extra_json`) and written back when
// the struct is serialized, so rewriting a manifest does not drop fields lazycrypt does not know.
// Image configs are never re-serialized: ImageConfig only extracts what lazycrypt needs and the
// caller keeps (and copies) the original bytes, so the config digest stays valid.
//
// Errors: malformed JSON or a bad field is Corruption naming the document and the field
// ("manifest: layers[2].digest: 'sha256:xy' is not a sha256 digest"); a digest algorithm other
// than sha256 is Unsupported. All functions are thread-compatible (no shared state).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"

namespace lazycrypt::image {

// --- Media types -------------------------------------------------------------------------------
inline constexpr std::string_view kMediaTypeOciLayout = "application/vnd.oci.layout.header.v1+json";
inline constexpr std::string_view kMediaTypeOciManifest =
    "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kMediaTypeOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kMediaTypeOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kMediaTypeOciLayerTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kMediaTypeOciLayerTarGzip =
    "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kMediaTypeOciLayerTarZstd =
    "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kMediaTypeOciNondistributableTar =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
inline constexpr std::string_view kMediaTypeOciNondistributableTarGzip =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
inline constexpr std::string_view kMediaTypeOciNondistributableTarZstd =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
// ocicrypt (skopeo --encryption-key, imgcrypt): the plain type + "+encrypted".
inline constexpr std::string_view kMediaTypeOcicryptLayerTar =
    "application/vnd.oci.image.layer.v1.tar+encrypted";
inline constexpr std::string_view kMediaTypeOcicryptLayerTarGzip =
    "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
inline constexpr std::string_view kMediaTypeOcicryptLayerTarZstd =
    "application/vnd.oci.image.layer.v1.tar+zstd+encrypted";
// lazycrypt's chunked format (docs/FORMAT.md).
inline constexpr std::string_view kMediaTypeLazycryptLayer =
    "application/vnd.oci.image.layer.v1.tar+lazycrypt+encrypted";
inline constexpr std::string_view kEncryptedSuffix = "+encrypted";
// Docker schema 2 (read; written back as OCI when lazycrypt rewrites a manifest).
inline constexpr std::string_view kMediaTypeDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kMediaTypeDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kMediaTypeDockerConfig =
    "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kMediaTypeDockerLayerTarGzip =
    "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kMediaTypeDockerForeignLayerTarGzip =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

// --- Annotations -------------------------------------------------------------------------------
inline constexpr std::string_view kAnnotationRefName = "org.opencontainers.image.ref.name";
inline constexpr std::string_view kAnnotationEncKeysJwe = "org.opencontainers.image.enc.keys.jwe";
inline constexpr std::string_view kAnnotationEncPubopts = "org.opencontainers.image.enc.pubopts";
// Every annotation of the ocicrypt convention starts with this; lazycrypt drops them from a layer
// it decrypts and refuses to encrypt a layer that carries them.
inline constexpr std::string_view kAnnotationEncPrefix = "org.opencontainers.image.enc.";
// The SHA-256 of a lazycrypt layer's sealed TOC ("sha256:<hex>"). Under containerd.io/snapshot/ so
// that containerd passes it to the snapshotter as a label.
inline constexpr std::string_view kAnnotationLazycryptTocDigest =
    "containerd.io/snapshot/lazycrypt.toc-digest";

// The size in bytes of a lazycrypt layer's sealed TOC, in decimal ("12345"): a hint that lets a
// reader fetch the footer and the whole TOC in one ranged request (format::TailReadOptions).
// Optional (older images lack it) and not trusted: a wrong value costs a second request, never a
// check. Under containerd.io/snapshot/ like the TOC digest.
inline constexpr std::string_view kAnnotationLazycryptTocSize =
    "containerd.io/snapshot/lazycrypt.toc-size";

// The cipher name lazycrypt layers carry in ocicrypt's pubopts and privopts. Short on purpose: the
// privopts JSON must stay under 190 bytes.
inline constexpr std::string_view kLazycryptCipherName = "LAZYCRYPT_GCM_V1";

// --- Layer classification ------------------------------------------------------------------------
enum class LayerKind {
  kPlain,      // an OCI or Docker tar layer, uncompressed or gzip/zstd
  kOcicrypt,   // ocicrypt AES_256_CTR_HMAC_SHA256 over a plain layer (media type + "+encrypted")
  kLazycrypt,  // lazycrypt's chunked format
  kUnknown,    // anything else (not a layer lazycrypt can process)
};
std::string_view LayerKindName(LayerKind kind);  // "plain", "ocicrypt", "lazycrypt", "unknown"
LayerKind ClassifyLayer(std::string_view media_type);
// For kOcicrypt: the media type without "+encrypted". Otherwise: the media type itself.
std::string StripEncryptedSuffix(std::string_view media_type);
// The OCI equivalent of a Docker layer media type (other types are returned unchanged).
std::string OciLayerMediaType(std::string_view media_type);

// The annotations without ocicrypt's (org.opencontainers.image.enc.*) and lazycrypt's TOC digest
// and size:
// what a layer keeps when it is decrypted, or carries over when it is encrypted.
std::map<std::string, std::string> WithoutEncryptionAnnotations(
    const std::map<std::string, std::string>& annotations);

// --- Types ---------------------------------------------------------------------------------------
struct Platform {
  std::string architecture;
  std::string os;
  std::string os_version;
  std::vector<std::string> os_features;
  std::string variant;
  bool operator==(const Platform&) const = default;
};

struct Descriptor {
  std::string media_type;
  std::string digest;  // "sha256:<64 lowercase hex>", validated on parse
  uint64_t size = 0;
  std::map<std::string, std::string> annotations;
  std::optional<Platform> platform;
  std::vector<std::string> urls;
  // Members not modelled above (e.g. "artifactType", "data"), a JSON object kept verbatim.
  std::string extra_json = "{}";

  // The annotation's value, or "" if absent.
  std::string Annotation(std::string_view name) const;
  bool operator==(const Descriptor&) const = default;
};

struct Manifest {
  int schema_version = 2;
  std::string media_type;  // may be empty in an OCI manifest (it is optional there)
  Descriptor config;
  std::vector<Descriptor> layers;
  std::map<std::string, std::string> annotations;
  std::string extra_json = "{}";
};

struct Index {
  int schema_version = 2;
  std::string media_type;  // often empty in an OCI layout's index.json
  std::vector<Descriptor> manifests;
  std::map<std::string, std::string> annotations;
  std::string extra_json = "{}";
};

// The parts of an image config lazycrypt needs. Parse only; never re-serialize a config.
struct ImageConfig {
  std::string architecture;
  std::string os;
  std::vector<std::string> diff_ids;  // rootfs.diff_ids, each a validated sha256 digest
};

// Validates an OCI digest string: "sha256:" + 64 lowercase hex (Corruption otherwise; other
// algorithms are Unsupported). `what` names the field in the message.
Status ValidateDigest(std::string_view digest, std::string_view what);

Result<Descriptor> ParseDescriptor(ByteSpan json);
std::string SerializeDescriptor(const Descriptor& d);

// Accepts OCI image manifests (mediaType absent or OCI) and Docker schema 2 manifests.
Result<Manifest> ParseManifest(ByteSpan json);
// Compact JSON. Known members first (schemaVersion, mediaType, config, layers, annotations), then
// the extra members.
std::string SerializeManifest(const Manifest& m);

// Accepts OCI indexes (and index.json of a layout) and Docker manifest lists.
Result<Index> ParseIndex(ByteSpan json);
std::string SerializeIndex(const Index& index);

Result<ImageConfig> ParseImageConfig(ByteSpan json);

// True for the manifest / index media types (OCI and Docker).
bool IsManifestMediaType(std::string_view media_type);
bool IsIndexMediaType(std::string_view media_type);

}  // namespace lazycrypt::image
