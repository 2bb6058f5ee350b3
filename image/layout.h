// OCI image layouts on disk (https://github.com/opencontainers/image-spec/blob/main/image-layout.md)
// as skopeo and umoci write them: DIR/oci-layout, DIR/index.json, DIR/blobs/sha256/<hex>.
//
// Reading verifies: every blob read is checked against its descriptor's size and digest (small
// metadata blobs at once; layer blobs as they stream, see NewVerifyingInputStream).
// Writing is crash- and error-safe: blobs are written to a temporary file beside their final name,
// fsynced and renamed to their content address (skipped when the blob is present already), and
// index.json is replaced atomically, last. An ImageWriter that is not committed removes every blob
// it added (and the layout itself if it created it): a failed conversion leaves the destination as
// it was.
//
// Thread-safety: OciLayout is immutable and thread-safe for reads. ImageWriter and BlobWriter are
// not thread-safe. Two processes writing the same layout at once may lose one's index.json update.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/file_io.h"
#include "common/io.h"
#include "common/status.h"
#include "image/oci.h"

namespace lazycrypt::image {

// Manifests, indexes and configs larger than this are refused (the OCI distribution spec lets
// registries refuse manifests over 4 MiB; configs are similar in size).
inline constexpr uint64_t kMaxMetadataBlobBytes = 8u << 20;
// The tag assumed when a destination reference has none, and tried when a source has several
// manifests and no tag.
inline constexpr std::string_view kDefaultTag = "latest";

// An image reference in skopeo's spelling:
//   "oci:DIR[:TAG]"  an OCI layout (the first ':' after "oci:" separates DIR from TAG, so DIR
//                    cannot contain ':');
//   "docker://REF"   a registry: host[:port]/repo[:tag][@digest] (docker.io defaults as docker's).
// Other transports are Unsupported by name; text without a transport is InvalidArgument.
struct ImageReference {
  std::filesystem::path dir;
  std::string tag;     // oci: empty = the default (see OciLayout::ResolveManifest / kDefaultTag)
  std::string docker;  // docker://: the registry reference after "docker://"; empty for oci:

  bool is_registry() const { return !docker.empty(); }
  static Result<ImageReference> Parse(std::string_view text);
  std::string ToString() const;  // "oci:DIR", "oci:DIR:TAG" or "docker://REF"
};

// A tag is what OCI allows in org.opencontainers.image.ref.name for a tag:
// [A-Za-z0-9_][A-Za-z0-9._-]{0,127}. InvalidArgument naming it otherwise.
Status ValidateTag(std::string_view tag);

// Wraps `in` (not owned): passes its bytes through while hashing them, and fails the read that
// would go past expected.size (Corruption) and the read that reaches end of stream if the size or
// SHA-256 differs (Corruption / AuthFailed "<what>: digest mismatch: expected ..., got ...").
// Callers must read to end of stream (a 0-byte Read) for the check to happen.
std::unique_ptr<InputStream> NewVerifyingInputStream(InputStream& in, const Descriptor& expected,
                                                     std::string what);

// An existing OCI layout, read-only.
class OciLayout {
 public:
  // Checks DIR/oci-layout (imageLayoutVersion "1.0.0") and that index.json parses.
  // NotFound if DIR or its oci-layout file does not exist.
  static Result<std::unique_ptr<OciLayout>> Open(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  // DIR/blobs/sha256/<hex>. REQUIRES: ValidateDigest(digest) is OK.
  std::filesystem::path BlobPath(std::string_view digest) const;
  bool HasBlob(std::string_view digest) const;

  // Reads and parses DIR/index.json (freshly: it may have changed since Open).
  Result<Index> ReadIndex() const;

  // The manifest the tag names. tag "" means: the only manifest of index.json, else "latest".
  // When the tag names an image index (a multi-platform image), the manifest for this machine's
  // platform (linux/<arch>) is chosen, or its only manifest. NotFound lists the tags present.
  Result<Descriptor> ResolveManifest(std::string_view tag) const;
  // Like ResolveManifest, but an image index the tag names is returned itself (not descended
  // into): what a whole multi-platform image is converted from.
  Result<Descriptor> ResolveRoot(std::string_view tag) const;

  // Reads a whole blob, checking that the file exists, its size equals d.size (checked before
  // reading), d.size <= max_bytes, and its SHA-256 equals d.digest.
  Result<std::vector<uint8_t>> ReadBlob(const Descriptor& d,
                                        uint64_t max_bytes = kMaxMetadataBlobBytes) const;

  // Opens a blob for random access, checking existence and size (not the digest: a lazy reader
  // authenticates what it reads by other means; use NewVerifyingInputStream or VerifyBlob).
  Result<std::unique_ptr<FileBlobSource>> OpenBlob(const Descriptor& d) const;

  // Hashes the whole blob and compares size and digest.
  Status VerifyBlob(const Descriptor& d) const;

 private:
  explicit OciLayout(std::filesystem::path dir) : dir_(std::move(dir)) {}
  Result<Descriptor> ResolveInIndex(const Index& index, std::string_view tag,
                                    std::string_view where, int depth, bool descend) const;
  std::filesystem::path dir_;
};

// A manifest with its config, as an image is loaded for conversion.
struct LoadedImage {
  Descriptor manifest_descriptor;
  std::vector<uint8_t> manifest_bytes;
  Manifest manifest;
  std::vector<uint8_t> config_bytes;  // kept verbatim: never re-serialized
  ImageConfig config;
};

// Reads (through read_blob, which verifies size and digest) and parses the manifest and its
// config, and checks that the config has one diff_id per layer. Shared by every transport.
using BlobReader = std::function<Result<std::vector<uint8_t>>(const Descriptor&)>;
Result<LoadedImage> LoadImageWith(const Descriptor& manifest_descriptor,
                                  const BlobReader& read_blob);

// Resolves the tag, then LoadImageWith over the layout's blobs.
Result<LoadedImage> LoadImage(const OciLayout& layout, std::string_view tag);

class ImageWriter;

// Streams one blob into a layout. Bytes go to a temporary file in DIR/blobs/sha256; Close()
// fsyncs it and renames it to its digest (or drops it when that blob exists already). Destroying
// it without a successful Close() removes the temporary file.
// REQUIRES: does not outlive the ImageWriter that created it.
class BlobWriter final : public OutputStream {
 public:
  ~BlobWriter() override;
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;

  Status Write(ByteSpan data) override;
  Status Close() override;

  // REQUIRES: Close() returned OK.
  const std::string& digest() const { return digest_; }
  uint64_t size() const { return size_; }
  Descriptor MakeDescriptor(std::string media_type) const;

 private:
  friend class ImageWriter;
  struct Hasher;
  BlobWriter(ImageWriter* owner, UniqueFd fd, std::filesystem::path tmp);

  ImageWriter* owner_;
  UniqueFd fd_;
  std::filesystem::path tmp_;
  std::unique_ptr<Hasher> hasher_;
  std::string digest_;
  uint64_t size_ = 0;
  bool closed_ = false;
};

// Writes one image into a layout (creating the layout if DIR does not exist or is empty).
// Until Commit() succeeds, destroying it removes the blobs it added and, if it created the
// layout, the layout's files and directories. Not thread-safe.
class ImageWriter {
 public:
  // DIR's parent must exist. A non-empty DIR must already be an OCI layout.
  static Result<std::unique_ptr<ImageWriter>> Begin(const std::filesystem::path& dir);
  ~ImageWriter();
  ImageWriter(const ImageWriter&) = delete;
  ImageWriter& operator=(const ImageWriter&) = delete;

  const OciLayout& layout() const { return *layout_; }
  bool created_layout() const { return created_layout_; }

  Result<std::unique_ptr<BlobWriter>> NewBlob();
  // Writes `data` as a blob (skipped if present) and returns its descriptor.
  Result<Descriptor> PutBlob(std::string media_type, ByteSpan data);
  // Copies a blob from another layout, verifying its digest and size on the way (skipped if this
  // layout has it already).
  Status CopyBlob(const OciLayout& src, const Descriptor& d);

  // Points `tag` at `manifest` in index.json (replacing what the tag named before; other entries
  // are kept) with an atomic rewrite. After this, nothing is rolled back.
  Status Commit(std::string_view tag, const Descriptor& manifest);

  // Removes what was added (as the destructor would). Idempotent; no-op after Commit().
  void Abort();

 private:
  friend class BlobWriter;
  ImageWriter(std::unique_ptr<OciLayout> layout, bool created_layout,
              std::vector<std::filesystem::path> created_paths)
      : layout_(std::move(layout)),
        created_layout_(created_layout),
        created_paths_(std::move(created_paths)) {}
  void RecordCreated(std::filesystem::path path) { created_paths_.push_back(std::move(path)); }

  std::unique_ptr<OciLayout> layout_;
  bool created_layout_;
  // Files and directories this writer created, in creation order (removed in reverse).
  std::vector<std::filesystem::path> created_paths_;
  bool committed_ = false;
};

}  // namespace lazycrypt::image
