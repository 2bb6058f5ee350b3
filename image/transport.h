// Image transports: where images are read from (ImageSource) and written to (ImageDestination),
// by descriptor. Conversion (image/convert.h) is written against these two interfaces only; the OCI
// layout ("oci:DIR[:TAG]") and a registry ("docker://REF", registry/registry.h) implement them.
//
// Contracts every implementation keeps:
//  - Sources verify what they hand out whole (ReadBlob: size and digest); OpenBlob gives random
//    access checked for size only (callers stream it through NewVerifyingInputStream, or rely on
//    the lazycrypt format's own authentication).
//  - Destinations are transactional: blobs first, manifests next, the tag (Commit) last. Until
//    Commit succeeds nothing the destination's tag names changes; Abort (or destruction without
//    Commit) removes what can be removed (an OCI layout is left exactly as it was; a registry keeps
//    unreferenced blobs, which its garbage collector reclaims, but no manifest is tagged that
//    points at a missing blob).
//
// Thread-safety: an ImageSource may be read from several threads (ReadBlob/OpenBlob are const in
// effect); an ImageDestination and its BlobSinks are used from one thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "image/layout.h"
#include "image/oci.h"
#include "registry/registry.h"

namespace lazycrypt::image {

class ImageSource {
 public:
  virtual ~ImageSource() = default;
  // "oci:DIR:TAG", for messages.
  virtual std::string Name() const = 0;
  // What the reference names: an image manifest or an image index (not descended into).
  virtual Result<Descriptor> ResolveRoot() = 0;
  // A whole small blob (manifest, index, config), size and digest checked. d.size > max_bytes is
  // Corruption before anything is read.
  virtual Result<std::vector<uint8_t>> ReadBlob(const Descriptor& d,
                                                uint64_t max_bytes = kMaxMetadataBlobBytes) = 0;
  // Random access to a blob whose size equals d.size (digest not checked; see above).
  virtual Result<std::unique_ptr<BlobSource>> OpenBlob(const Descriptor& d) = 0;
  // The same, for a consumer that reads the blob front to back (copy, encrypt, decrypt, verify):
  // a registry source reads ahead in large ranges instead of one request per read.
  virtual Result<std::unique_ptr<BlobSource>> OpenBlobForScan(const Descriptor& d) {
    return OpenBlob(d);
  }
  // A blob whose bytes were checked against d's size and digest, for a consumer that reads all of
  // it in any order (decrypting a lazycrypt layer reads footer, TOC, then records). By default
  // OpenBlobForScan + VerifyBlobDigest; a registry source downloads the blob once into an unlinked
  // temporary file, verifying the digest as it streams, instead of fetching it twice.
  virtual Result<std::unique_ptr<BlobSource>> OpenVerifiedBlob(const Descriptor& d);
};

// Wraps `inner`: reads are served from a window of `window_bytes` fetched with one ReadAt at the
// first miss (clamped to the blob's end). Thread-safe (one mutex; parallel readers of nearby
// ranges share the window).
std::unique_ptr<BlobSource> NewReadAheadBlobSource(std::unique_ptr<BlobSource> inner,
                                                   size_t window_bytes = 8u << 20);

// A blob being written to a destination. Close() makes it durable under its digest, or, where
// the destination uploads as it goes (docker://), hands its last bytes to that upload: the
// destination's next PutManifest waits for it and fails with the upload's error.
class BlobSink : public OutputStream {
 public:
  // REQUIRES: Close() returned OK.
  virtual const std::string& digest() const = 0;
  virtual uint64_t size() const = 0;
  Descriptor MakeDescriptor(std::string media_type) const {
    Descriptor d;
    d.media_type = std::move(media_type);
    d.digest = digest();
    d.size = size();
    return d;
  }
};

class ImageDestination {
 public:
  virtual ~ImageDestination() = default;
  virtual std::string Name() const = 0;
  // The tag Commit will set (the reference's, or kDefaultTag).
  virtual const std::string& tag() const = 0;
  virtual Result<bool> HasBlob(const Descriptor& d) = 0;
  // `what` names the blob in messages ("layer 1 (sha256:ab…)").
  virtual Result<std::unique_ptr<BlobSink>> NewBlob(std::string what) = 0;
  // Writes `data` as a blob (skipped if present) and returns its descriptor.
  virtual Result<Descriptor> PutBlob(std::string media_type, ByteSpan data) = 0;
  // Writes a manifest or index (untagged), once every blob written before it is durable (the
  // first failure of a background upload is returned here). REQUIRES: every blob it references
  // was written.
  virtual Result<Descriptor> PutManifest(std::string media_type, ByteSpan data) = 0;
  // Points tag() at `root` (a manifest or index written by PutManifest). Nothing is rolled back
  // after this.
  virtual Status Commit(const Descriptor& root) = 0;
  // Undoes what can be undone. Idempotent; no-op after Commit.
  virtual void Abort() = 0;
};

// Copies blob `d` from src to dst unless dst has it, verifying size and digest on the way.
Status CopyBlob(ImageSource& src, ImageDestination& dst, const Descriptor& d);

// Hashes the whole blob and compares size and digest with `d`.
Status VerifyBlobDigest(BlobSource& blob, const Descriptor& d);

// --- OCI layout ---------------------------------------------------------------------------------
// REQUIRES ref.dir names an existing layout (NotFound otherwise).
Result<std::unique_ptr<ImageSource>> OpenOciSource(const ImageReference& ref);
// Creates the layout when DIR is absent or empty (see ImageWriter::Begin).
Result<std::unique_ptr<ImageDestination>> OpenOciDestination(const ImageReference& ref);

// --- Registry (docker://) -------------------------------------------------------------------------
// Sources read manifests by digest and blobs with Range requests (lazy); destinations push every
// blob first (streamed as it is written, in PATCH chunks), manifests by digest next, and only
// Commit puts the manifest under the tag. Abort leaves pushed blobs to the registry's garbage
// collector; no tag ever names a manifest whose blobs are missing.
struct TransportOptions {
  bool plain_http = false;          // http:// to the registry (a local test registry)
  bool tls_verify = true;           // false: do not verify its TLS certificate
  std::filesystem::path authfile;   // docker-style config.json; empty = the default files
  // containerd's hosts directory (<hosts_dir>/<host>/hosts.toml, then _default/hosts.toml):
  // mirrors and per-host settings. Empty = none (callers pick the default, see tools/).
  std::filesystem::path hosts_dir;
};
Result<std::unique_ptr<ImageSource>> OpenRegistrySource(const ImageReference& ref,
                                                        const TransportOptions& options);
// The registry client settings `options` stand for (for callers that use registry::Client).
registry::ClientOptions RegistryClientOptions(const TransportOptions& options);
Result<std::unique_ptr<ImageDestination>> OpenRegistryDestination(const ImageReference& ref,
                                                                  const TransportOptions& options);

// By transport (see ImageReference::Parse). `options` applies to docker:// only.
Result<std::unique_ptr<ImageSource>> OpenImageSource(const ImageReference& ref,
                                                     const TransportOptions& options = {});
Result<std::unique_ptr<ImageDestination>> OpenImageDestination(
    const ImageReference& ref, const TransportOptions& options = {});

// --- Loading ------------------------------------------------------------------------------------

// A manifest with its config, as an image is loaded for conversion (diff_ids count checked).
Result<LoadedImage> LoadManifest(ImageSource& src, const Descriptor& manifest);

// The root and, when it is an index, the index with its image manifests loaded (entries that
// are not image manifests, e.g. attestations, are kept in `index` but have no LoadedImage).
struct LoadedRoot {
  Descriptor root;
  std::vector<uint8_t> root_bytes;
  std::optional<Index> index;           // set when root is an image index
  std::vector<LoadedImage> images;      // one per image manifest (index order)
  std::vector<size_t> image_positions;  // images[i] is index->manifests[image_positions[i]]
};
Result<LoadedRoot> LoadRoot(ImageSource& src);

}  // namespace lazycrypt::image
