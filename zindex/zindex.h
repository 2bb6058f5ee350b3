// A seekable index for an unmodified ocicrypt AES-CTR layer (gzip tar under
// AES_256_CTR_HMAC_SHA256): gzip checkpoints at deflate block boundaries (zran's technique), the
// tar's table of contents, and a SHA-256 of the ciphertext each span needs, sealed with keys
// derived from the layer's CTR key. Format v2: the sealed blob is a small "core" (TOC and span
// table, fetched at mount) followed by each span's 32 KiB window sealed on its own (fetched by
// range with the span, only when the span is read). docs/FORMAT.md §11 is the byte-level spec and
// threat model.
//
// Thread-safety: BuildIndex / BuildSealedIndex are independent per call; an UnsealedIndex is used
// by one thread at a time. OpenedIndex is immutable after Open;
// every const method may run concurrently (DecodeSpan keeps its inflate state per call).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "crypto/digest.h"
#include "crypto/secure_buffer.h"
#include "format/layer_index.h"
#include "image/layer.h"
#include "image/oci.h"

namespace lazycrypt::zindex {

// v1 artifacts are not looked up by a v2 reader (their artifact type differs): such a layer is
// unpacked eagerly, as one without an index.
inline constexpr std::string_view kArtifactType = "application/vnd.lazycrypt.zindex.v2";
inline constexpr std::string_view kSealedIndexMediaType =
    "application/vnd.lazycrypt.zindex.v2.sealed";
// On each index blob's descriptor in the artifact manifest: the layer digest it indexes.
inline constexpr std::string_view kAnnotationLayerDigest = "org.lazycrypt.zindex.layer-digest";
// On each index blob's descriptor too: SealedCoreBytes of the blob, decimal. A hint so that a
// reader fetches header and core in one ranged request; the header is the truth (a smaller hint
// costs a second request, a larger one fetches some windows for nothing).
inline constexpr std::string_view kAnnotationCoreBytes = "org.lazycrypt.zindex.core-bytes";
// The largest sealed index anyone makes or opens, the whole blob (header, core and windows area;
// a reader refuses a larger blob before reading it).
inline constexpr uint64_t kMaxSealedIndexBytes = uint64_t{256} << 20;

// The format's own maxima (FORMAT.md §11); Limits may lower them, never raise them.
inline constexpr uint64_t kMaxIndexPlaintextBytes = uint64_t{512} << 20;  // serialized proto
inline constexpr uint64_t kMaxSpans = uint64_t{1} << 20;
inline constexpr uint64_t kMaxEntries = uint64_t{8} << 20;                // = format::kMaxTocEntries
// A span's uncompressed size (a span ends at the first deflate block boundary after span_bytes,
// so one deflate block longer than this, e.g. a crafted run of zeros, makes the layer unindexable).
inline constexpr uint64_t kMaxSpanBytes = uint64_t{64} << 20;
// A span's ciphertext (it may exceed its uncompressed size: stored blocks, gzip headers, the
// trailer and empty members it carries).
inline constexpr uint64_t kMaxSpanCiphertextBytes = 2 * kMaxSpanBytes + (uint64_t{1} << 20);
inline constexpr size_t kWindowBytes = 32768;  // deflate's window: the most a checkpoint keeps
// The sealed blob's fixed header (magic, version, seal salt, core length, core nonce).
inline constexpr size_t kSealedHeaderBytes = 64;

struct BuildOptions {
  // A checkpoint at the first deflate block boundary after every span_bytes of uncompressed
  // output (and one at every gzip member start). 64 KiB .. kMaxSpanBytes / 2.
  uint64_t span_bytes = uint64_t{512} << 10;
  // zstd level of the serialized index and of each window before sealing.
  int zstd_level = 3;
};

// What Open accepts, checked before allocating for it. Defaults: the format's maxima.
struct Limits {
  uint64_t max_sealed_bytes = kMaxSealedIndexBytes;
  uint64_t max_plaintext_bytes = kMaxIndexPlaintextBytes;
  uint64_t max_spans = kMaxSpans;
  uint64_t max_entries = kMaxEntries;
  uint64_t max_span_bytes = kMaxSpanBytes;
  // What a reader fetches for one span (a lazy mount refuses larger fetches: an index it cannot
  // serve whole is refused here rather than mounted with spans that always fail).
  uint64_t max_span_ciphertext_bytes = kMaxSpanCiphertextBytes;
};

// From at least the first kSealedHeaderBytes of a sealed index: how many bytes from its start
// OpenedIndex::Open needs (header + sealed core). Corruption for a wrong magic or version ("zindex
// version 1 is no longer read; ..."), fewer than kSealedHeaderBytes, or a core beyond
// limits.max_sealed_bytes / max_plaintext_bytes.
Result<uint64_t> SealedCoreBytes(ByteSpan header, const Limits& limits = {});

// A layer's index made but not yet sealed (BuildIndex): the windows area is sealed already (under
// this index's salt); the core is sealed by Seal, with the prefetch marks given then. Move-only;
// the plaintext it holds (entry names, link targets, spans) is in memory only and wiped when it is
// released, as is its copy of the layer key.
class UnsealedIndex {
 public:
  UnsealedIndex(UnsealedIndex&&) noexcept;
  UnsealedIndex& operator=(UnsealedIndex&&) noexcept;
  ~UnsealedIndex();

  // The layer's entries as the index lists them (normalized names, types, link targets), in tar
  // order: what image::PlanPrefetch needs for this layer's part of the merged view. Empty for a
  // moved-from index.
  const std::vector<format::Entry>& entries() const;
  // The whole sealed blob (header, core with `prefetch_names` marked, windows area), under the
  // salt the windows were sealed with. `prefetch_names`: normalized entry names of REGULAR files
  // of this layer (duplicates ignored; a name listed twice in the tar marks its last entry, the
  // one extraction keeps); InvalidArgument "prefetch path 'NAME' is not a regular file of the
  // layer" otherwise (this error names the path: the caller listed it). The marks become the
  // core's `prefetch` (FORMAT.md §11.2), in entry order.
  Result<std::vector<uint8_t>> Seal(const std::vector<std::string>& prefetch_names) &&;

 private:
  struct State;
  explicit UnsealedIndex(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
  friend Result<UnsealedIndex> BuildIndex(InputStream&, const image::Descriptor&,
                                          const image::OcicryptLayerCipher&, const BuildOptions&);
};

// Reads the whole encrypted layer from `ciphertext` (the blob `encrypted` describes; `cipher`
// from image::UnwrapOcicryptLayer) once, in bounded memory (no plaintext reaches the disk),
// checks HMAC, blob digest and plaintext digest, and returns the index with its windows sealed
// under a fresh random salt (two seals never share a key); UnsealedIndex::Seal seals the core.
// Returns nothing unless every check passed. Unsupported when the layer is not gzip (e.g. zstd or
// an uncompressed tar) or a deflate block is longer than kMaxSpanBytes; Corruption for a tar or
// gzip stream that does not parse (entries named by number, never by name).
Result<UnsealedIndex> BuildIndex(InputStream& ciphertext, const image::Descriptor& encrypted,
                                 const image::OcicryptLayerCipher& cipher,
                                 const BuildOptions& options = {});

// BuildIndex, then Seal({}): the WHOLE sealed index (header, core, windows area), nothing marked.
Result<std::vector<uint8_t>> BuildSealedIndex(InputStream& ciphertext,
                                              const image::Descriptor& encrypted,
                                              const image::OcicryptLayerCipher& cipher,
                                              const BuildOptions& options = {});

class OpenedIndex {
 public:
  // Authenticates, decompresses, parses and validates the core. `sealed_prefix`: at least
  // SealedCoreBytes bytes from the start of the sealed blob (more is ignored: a caller holding
  // the whole blob passes it all); `sealed_size`: the whole sealed blob's size (the artifact
  // descriptor's size; authenticated through the core's AAD, and the windows area must end
  // exactly there). AuthFailed when tampered or sealed for another layer/key/size; Corruption
  // naming the problem (never a file name), e.g. a prefix shorter than the core.
  static Result<std::shared_ptr<const OpenedIndex>> Open(ByteSpan sealed_prefix,
                                                         uint64_t sealed_size,
                                                         const image::Descriptor& encrypted,
                                                         const image::OcicryptLayerCipher& cipher,
                                                         const Limits& limits = {});
  ~OpenedIndex();
  OpenedIndex(const OpenedIndex&) = delete;
  OpenedIndex& operator=(const OpenedIndex&) = delete;

  // For fusefs: chunk i == span i; chunks tile [0, tar_size()); diff_id as the index claims it.
  std::shared_ptr<const format::LayerIndex> layer_index() const;
  size_t span_count() const;
  struct Range {
    uint64_t offset = 0, size = 0;
  };
  // The blob bytes span i needs (they may overlap the neighbours' by one byte: a deflate block
  // boundary falls inside a byte). REQUIRES i < span_count().
  Range span_ciphertext(size_t i) const;
  // The tar stream bytes span i yields. REQUIRES i < span_count().
  Range span_uncompressed(size_t i) const;
  // The sealed blob bytes span i's window needs (absolute offset in the sealed blob, inside the
  // windows area); size 0 when the span has no window (member starts). REQUIRES i < span_count().
  Range span_window(size_t i) const;
  // Checks SHA-256(ciphertext) (exactly span_ciphertext(i)) against the index ("span i digest
  // mismatch", AuthFailed), SHA-256(sealed_window) (exactly span_window(i) of the sealed blob,
  // empty when its size is 0) against the core's window digest ("span i window digest mismatch",
  // AuthFailed: the core pins which window, not only its size), authenticates it (AuthFailed
  // "span i window does not authenticate") and
  // decompresses it to the window's size (Corruption) before anything is inflated; decrypts with
  // CTR, inflates from checkpoint i to exactly the span's uncompressed size (Corruption
  // otherwise). The plaintext and the window are wiped when released. InvalidArgument when i is
  // out of range or ciphertext / sealed_window has the wrong size.
  Result<crypto::SecureBuffer> DecodeSpan(size_t i, ByteSpan ciphertext,
                                          ByteSpan sealed_window) const;
  const std::string& diff_id() const;  // "sha256:<hex>" claimed by the index's maker
  uint64_t tar_size() const;           // bytes of the uncompressed tar stream
  uint64_t blob_size() const;          // the encrypted layer's size (= encrypted.size)
  uint64_t sealed_size() const;        // the whole sealed blob
  uint64_t sealed_core_bytes() const;  // what Open needed (what a restart keeps on disk)

 private:
  struct Impl;
  explicit OpenedIndex(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lazycrypt::zindex
