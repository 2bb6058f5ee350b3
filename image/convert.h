// Image conversion between plain, ocicrypt-encrypted and lazycrypt-encrypted OCI images on any
// transport (image/transport.h): the library behind `lazycrypt encrypt|decrypt|inspect` (tools/ is a thin CLI over it).
//
// Every conversion reads the source image (verifying the digest of every blob it reads), writes
// new blobs into the destination layout and, only when every layer succeeded, the manifest and
// the destination tag in index.json. On any error the destination is left exactly as it was
// (ImageWriter removes what it added). Errors name the layer: "layer 2 (sha256:ab12..): ...".
// The image config is never rewritten (its diff_ids stay valid: decrypting a lazycrypt layer
// reproduces the original tar byte for byte).
//
// Thread-safety: each call is independent; the lazycrypt writer uses its own threads.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "estargz/writer.h"
#include "format/writer.h"
#include "image/layout.h"
#include "image/oci.h"
#include "image/prefetch_plan.h"
#include "image/transport.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"

namespace lazycrypt::image {

enum class EncryptionFormat {
  kLazycrypt,  // lazycrypt's chunked AES-256-GCM format (lazy mounts)
  kOcicrypt,   // ocicrypt's AES_256_CTR_HMAC_SHA256 over the original blob (skopeo/imgcrypt)
  // The layer rewritten as eStargz, then ocicrypt's AES_256_CTR_HMAC_SHA256 (image/
  // estargz_layer.h): eager nodes decrypt it unchanged; a new diff_id per conversion.
  kOcicryptEstargz,
};
// "lazycrypt", "ocicrypt", "ocicrypt-estargz"
std::string_view EncryptionFormatName(EncryptionFormat f);
Result<EncryptionFormat> ParseEncryptionFormat(std::string_view name);

// What happened to one layer, for reports.
struct LayerReport {
  size_t index = 0;
  std::string platform;  // "linux/arm64" for an image of a multi-platform index; "" otherwise
  std::string action;  // "encrypted (lazycrypt)", "decrypted (ocicrypt)", "copied", ...
  Descriptor source;
  Descriptor result;
  double seconds = 0;
  // lazycrypt layers: what the format reports.
  uint64_t chunk_count = 0;
  uint64_t entry_count = 0;
  std::string toc_digest;
  std::string key_name;  // decrypt: the key that unwrapped the layer
  // Set when the layer's diff_id changed (a lazycrypt layer's tar stream begins with its salt
  // header, docs/FORMAT.md §5.1): the image config written for the result names this one.
  std::string diff_id;
};

struct ConvertReport {
  Descriptor source_manifest;
  Descriptor manifest;  // the written manifest or index (with the ref.name annotation)
  std::string tag;      // the destination tag
  size_t platform_count = 0;  // > 0: the source was an index, converted per platform
  std::vector<LayerReport> layers;
};

// Called after each layer is done (e.g. to print progress). May be empty.
using LayerCallback = std::function<void(const LayerReport&)>;
// Called while a layer blob is read: what ("layer 1 (sha256:..)"), bytes of it read so far, its
// size. Advisory (may be called from a worker thread, at most a few times per MiB). May be empty.
using ProgressCallback =
    std::function<void(const std::string& what, uint64_t done_bytes, uint64_t total_bytes)>;

// Called once per image (platform) when writer.prefetch_paths is resolved (image/prefetch_plan.h),
// before its layers are converted: per listed path what is marked, in which layer, or why not.
using PrefetchPlanCallback =
    std::function<void(const std::string& platform, const PrefetchPlan& plan)>;

struct EncryptOptions {
  EncryptionFormat format = EncryptionFormat::kLazycrypt;
  // Indices of the layers to encrypt (0 = the base layer); nullopt = every plain layer.
  // Listing a layer that is already encrypted or not a tar layer is InvalidArgument.
  std::optional<std::vector<size_t>> layers;
  // lazycrypt format only, but writer.prefetch_paths also serve ocicrypt-estargz. They are paths
  // of the image's merged file system:
  // each is resolved (symlinks, hard links, whiteouts; image/prefetch_plan.h, which reads the
  // plain layers once more) and marked in the one layer that holds the file it names.
  format::WriterOptions writer;
  // ocicrypt-estargz only (its prefetch paths come from writer.prefetch_paths, as above).
  estargz::WriterOptions estargz;
  PrefetchPlanCallback on_prefetch_plan;  // may be empty
  LayerCallback on_layer;
  ProgressCallback on_progress;
};

// Encrypts the chosen layers of src for `recipients` (at least one) and writes the image to dst.
// lazycrypt: a fresh 32-byte key per layer; the descriptor gets the lazycrypt media type and the
// keys.jwe, pubopts and toc-digest annotations (see image/envelope.h); the writer's diff_id must
// equal the config's. ocicrypt: exactly what ocicrypt writes (privopts {symkey, digest =
// original blob digest, cipheroptions {nonce}}, pubopts {cipher, hmac, cipheroptions {}}, media
// type + "+encrypted"). A Docker schema 2 manifest is written back as an OCI manifest.
Result<ConvertReport> EncryptImage(const ImageReference& src, const ImageReference& dst,
                                   const keywrap::Recipients& recipients,
                                   const EncryptOptions& options);

// The compression of the plain layers DecryptImage writes for lazycrypt layers.
enum class LayerCompression {
  kZstd,  // application/vnd.oci.image.layer.v1.tar+zstd (default: compressed chunks pass through)
  kGzip,  // ...tar+gzip (for tools that predate zstd layers, e.g. umoci 0.4)
  kNone,  // ...tar
};
Result<LayerCompression> ParseLayerCompression(std::string_view name);  // "zstd", "gzip", "none"

struct DecryptOptions {
  LayerCompression compression = LayerCompression::kZstd;
  LayerCallback on_layer;
  ProgressCallback on_progress;
};

// The same on open transports. An image index is converted per platform image (entries under
// platform unknown/unknown, e.g. attestations, are dropped: they name the old manifests), and an
// index is written. On error `dst` is aborted.
Result<ConvertReport> EncryptImage(ImageSource& src, ImageDestination& dst,
                                   const keywrap::Recipients& recipients,
                                   const EncryptOptions& options);

// Decrypts every encrypted layer of src with `keys` and writes a plain image to dst.
// lazycrypt layers become tar+zstd (or per options.compression; every chunk and the TOC authenticated, the diff_id checked
// against the config); ocicrypt layers become the original blob (HMAC checked, digest checked
// against privopts, media type without "+encrypted"). A layer none of the keys opens fails the
// whole conversion: "layer 2 (sha256:ab..): none of the keys [a.pem, b.pem] is a recipient".
Result<ConvertReport> DecryptImage(const ImageReference& src, const ImageReference& dst,
                                   const keywrap::KeyRing& keys,
                                   const DecryptOptions& options = {});

Result<ConvertReport> DecryptImage(ImageSource& src, ImageDestination& dst,
                                   const keywrap::KeyRing& keys,
                                   const DecryptOptions& options = {});

// --- Inspection ------------------------------------------------------------------------------

struct FileInfo {
  std::string name;
  std::string type;  // "regular", "directory", ...
  uint32_t mode = 0;
  uint64_t uid = 0, gid = 0;
  uint64_t size = 0;
  std::string link_target;
  bool prefetch = false;  // marked for prefetch at conversion time (`encrypt --prefetch-list`)
};

struct LayerInfo {
  size_t index = 0;
  Descriptor descriptor;
  LayerKind kind = LayerKind::kUnknown;
  std::string diff_id;
  std::string cipher;                   // from pubopts (encrypted layers)
  std::vector<std::string> recipients;  // "RSA-OAEP", "ECDH-ES+A256KW (P-256)", ...
  std::string toc_digest;               // lazycrypt layers
  // With a key that opens the layer (lazycrypt layers):
  bool opened = false;
  std::string key_name;
  std::string open_error;  // why a key was given but the layer was not opened
  uint64_t chunk_count = 0;
  uint32_t target_chunk_size = 0;
  uint64_t tar_size = 0;
  uint64_t blob_bytes_read = 0;  // how much of the blob opening the index read (laziness)
  std::vector<FileInfo> files;   // only with InspectOptions::list_files
  uint64_t file_count = 0;
  uint64_t prefetch_count = 0;   // regular files marked for prefetch in the TOC
  std::vector<std::string> prefetch_files;  // their names, in TOC order (when opened)
};

struct ImageInfo {
  std::string reference;
  Descriptor manifest;
  std::string manifest_media_type;
  Descriptor config;
  std::string os, architecture;
  std::vector<LayerInfo> layers;
  // When the reference names an image index: one ImageInfo per platform image (each with its
  // manifest descriptor's platform), and `layers` is empty.
  std::vector<ImageInfo> platforms;
};

struct InspectOptions {
  bool list_files = false;
};

// Describes src without changing anything. With keys, opens each lazycrypt layer's index (reading
// only its footer and sealed TOC) and reports its chunks and files; a layer the keys do not open
// is reported in LayerInfo::open_error, not as an error of the call.
Result<ImageInfo> InspectImage(const ImageReference& src,
                               const keywrap::KeyRing& keys,
                               const InspectOptions& options = {});

Result<ImageInfo> InspectImage(ImageSource& src, const keywrap::KeyRing& keys,
                               const InspectOptions& options = {});

// "layer 2 (sha256:0123456789ab..)"
std::string LayerName(size_t index, const Descriptor& d);

}  // namespace lazycrypt::image
