// Single-layer encryption and decryption, in both formats, on streams and blobs: the building
// blocks of image conversion (image/convert.h) and of `lazycrypt layer ...`.
//
// Thread-safety: free functions are independent; OpenedLayer is immutable after Open and as
// thread-safe as format::LayerReader (reads may run concurrently).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "crypto/digest.h"
#include "crypto/secure_buffer.h"
#include "format/decrypt.h"
#include "format/layer_reader.h"
#include "format/writer.h"
#include "image/envelope.h"
#include "image/oci.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"

namespace lazycrypt::image {

// A BlobSource that counts what is read through it (to show and test laziness). Thread-safe.
class CountingBlobSource final : public BlobSource {
 public:
  explicit CountingBlobSource(std::unique_ptr<BlobSource> inner) : inner_(std::move(inner)) {}
  uint64_t size() const override { return inner_->size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    reads_.fetch_add(1, std::memory_order_relaxed);
    bytes_.fetch_add(out.size(), std::memory_order_relaxed);
    return inner_->ReadAt(offset, out);
  }
  uint64_t bytes_read() const { return bytes_.load(std::memory_order_relaxed); }
  uint64_t read_calls() const { return reads_.load(std::memory_order_relaxed); }

 private:
  std::unique_ptr<BlobSource> inner_;
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> reads_{0};
};

// --- lazycrypt format ----------------------------------------------------------------------------

struct LazycryptEncryptResult {
  Descriptor descriptor;  // lazycrypt media type, blob digest and size, the three annotations
  format::WriteResult write;
};

// Encrypts one layer (tar, tar+gzip or tar+zstd) read from `layer` into `blob` with a fresh layer
// key wrapped for `recipients`. Does not Close() `blob`. The descriptor's annotations are only
// the lazycrypt ones (callers merge in the original layer's other annotations). With
// !options.hash_blob the descriptor's digest is left empty: the caller takes it from `blob`.
Result<LazycryptEncryptResult> EncryptLazycryptLayer(
    InputStream& layer, OutputStream& blob, const keywrap::Recipients& recipients,
    const format::WriterOptions& options);

// What a lazy reader needs from a lazycrypt layer, verified: the layer key unwrapped from the
// descriptor's annotations with one of `keys`, the sealed TOC read from `blob` (two ReadAt: footer
// and TOC) and checked against the pinned digest, the key commitment in pubopts checked against
// the blob's, and the chunk opener. The key itself is not kept (the opener holds the derived chunk
// key). Errors as OpenedLayer::Open's. `blob` is only read during the call.
struct VerifiedLayerIndex {
  std::shared_ptr<const format::LayerIndex> index;
  std::shared_ptr<const format::ChunkOpener> opener;
  std::string key_name;  // which of `keys` unwrapped it
};
// The footer and the sealed TOC are read as `tail` says; without a toc_size_hint there, the
// descriptor's toc-size annotation (when it parses) is the hint. `limits`: what the TOC may hold
// (the snapshotter's [limits]; checked before parsing builds anything).
Result<VerifiedLayerIndex> OpenLayerIndex(BlobSource& blob, const Descriptor& descriptor,
                                          const keywrap::KeyRing& keys,
                                          format::TailReadOptions tail = {},
                                          const format::TocLimits& limits = {});

// A lazycrypt layer opened for random access: its key unwrapped, its TOC verified against the
// pinned digest, and the key commitment in pubopts checked against the blob's.
class OpenedLayer {
 public:
  // `descriptor` must be a lazycrypt layer's (annotations included); `blob` its bytes.
  static Result<std::unique_ptr<OpenedLayer>> Open(std::unique_ptr<BlobSource> blob,
                                                   const Descriptor& descriptor,
                                                   const keywrap::KeyRing& keys);

  const format::LayerReader& reader() const { return *reader_; }
  const format::LayerIndex& index() const { return reader_->index(); }
  const std::string& key_name() const { return key_name_; }
  // Bytes and ReadAt calls made on the blob so far (opening reads only footer and TOC).
  uint64_t blob_bytes_read() const { return blob_->bytes_read(); }
  uint64_t blob_read_calls() const { return blob_->read_calls(); }

 private:
  OpenedLayer() = default;
  std::unique_ptr<CountingBlobSource> blob_;
  std::unique_ptr<format::LayerReader> reader_;
  std::string key_name_;
};

// Eagerly decrypts a lazycrypt layer into `out` (tar or tar+zstd), every chunk and the TOC
// authenticated, the diff_id verified against the TOC; the caller compares it with the config.
// Does not Close() `out`; on error discard what was written.
struct LazycryptDecryptResult {
  crypto::Sha256Digest diff_id{};
  std::string key_name;
  crypto::Sha256Digest toc_digest{};
};
Result<LazycryptDecryptResult> DecryptLazycryptLayer(BlobSource& blob, const Descriptor& descriptor,
                                                     const keywrap::KeyRing& keys,
                                                     OutputStream& out,
                                                     format::DecryptOutput output);

// --- ocicrypt format (AES_256_CTR_HMAC_SHA256) -----------------------------------------------

// Encrypts the original layer blob `plain` (whose descriptor is `original`) into `out` exactly as
// ocicrypt does, and returns the encrypted descriptor (media type + "+encrypted", the keys.jwe and
// pubopts annotations; the original's other annotations kept). Reads `plain` to its end and
// fails if its digest or size differs from `original`. Does not Close() `out`.
Result<Descriptor> EncryptOcicryptLayer(InputStream& plain, const Descriptor& original,
                                        OutputStream& out,
                                        const keywrap::Recipients& recipients);

// An ocicrypt layer's cipher, unwrapped with the node's keys and checked (cipher name, key and
// nonce sizes, an HMAC present, privopts' digest well formed), for callers that decrypt in
// several passes (the snapshotter checks the HMAC over the whole blob before it decrypts for
// use). The key is wiped when this is destroyed.
struct OcicryptLayerCipher {
  crypto::SecureBuffer key;
  std::vector<uint8_t> nonce;
  std::vector<uint8_t> hmac;
  Descriptor original;  // media type without "+encrypted", privopts' digest, size == blob size
  std::string key_name;
};
// Errors as DecryptOcicryptLayer's, before any byte is read.
Result<OcicryptLayerCipher> UnwrapOcicryptLayer(const Descriptor& encrypted,
                                                const keywrap::KeyRing& keys);
// Decrypts `in` (the encrypted blob; not owned) as it is read. The last Read (end of stream)
// fails with AuthFailed unless the encrypted blob's digest and size match `encrypted`, the HMAC
// matches, and the plaintext's digest and size match cipher.original. Everything read is
// unverified until then.
Result<std::unique_ptr<InputStream>> NewOcicryptDecryptingStream(
    InputStream& in, const Descriptor& encrypted, const OcicryptLayerCipher& cipher);

struct OcicryptDecryptResult {
  Descriptor original;  // media type without "+encrypted", digest from privopts, size
  std::string key_name;
};
// Decrypts an ocicrypt layer (`encrypted` is its descriptor with annotations) read from `in` into
// `out`: unwraps privopts with `keys`, checks the cipher, the HMAC over the whole ciphertext and
// the plaintext's digest against privopts' digest. Everything written is unverified until this
// returns OK (write to a BlobWriter and Close() it only then). Does not Close() `out`.
Result<OcicryptDecryptResult> DecryptOcicryptLayer(InputStream& in, const Descriptor& encrypted,
                                                   OutputStream& out,
                                                   const keywrap::KeyRing& keys);

}  // namespace lazycrypt::image
