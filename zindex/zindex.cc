#include "zindex/zindex.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>

#include <openssl/crypto.h>

#include "compress/compress.h"
#include "crypto/aes_gcm.h"
#include "crypto/hkdf.h"
#include "crypto/ocicrypt_ctr.h"
#include "crypto/random.h"
#include "format/toc.h"
#include "format/toc_tar_match.h"
#include "tar/tar_reader.h"
#include "zindex/zindex.pb.h"
#include "zindex/zindex_internal.h"

namespace lazycrypt::zindex {
namespace {

constexpr std::array<uint8_t, 8> kSealedMagic = {'l', 'z', 'c', 'z', 'i', 'd', 'x', 0x01};
constexpr uint32_t kSealedVersion = 2;
constexpr uint32_t kIndexVersion = 2;
constexpr std::string_view kCoreKeyInfoPrefix = "lazycrypt zindex v2 core key ";
constexpr std::string_view kWindowKeyInfoPrefix = "lazycrypt zindex v2 window key ";
constexpr std::array<uint8_t, 8> kWindowAadMagic = {'l', 'z', 'c', 'z', 'w', 'i', 'n', 0x02};
// Header offsets (FORMAT.md §11.1).
constexpr size_t kVersionAt = 8, kSaltAt = 12, kCoreSizeAt = 44, kCoreNonceAt = 52;
static_assert(kCoreNonceAt + 12 == kSealedHeaderBytes);
// A window's seal: one zstd frame (at least 1 byte) and the GCM tag.
constexpr uint64_t kMinWindowSealedBytes = 1 + 16;
uint64_t MaxWindowSealedBytes() { return compress::ZstdCompressor::Bound(kWindowBytes) + 16; }
constexpr uint64_t kMinSpanBytes = uint64_t{64} << 10;
// A span's ciphertext may exceed its uncompressed size (stored blocks, gzip headers, the trailer
// and empty members it carries); more than this is refused on both sides.
uint64_t MaxSpanCiphertextBytes(uint64_t max_span_bytes) { return 2 * max_span_bytes + (1 << 20); }
static_assert(kMaxSpanCiphertextBytes == 2 * kMaxSpanBytes + (1 << 20));

std::string Num(uint64_t v) { return std::to_string(v); }

void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// ---- Sealing (FORMAT.md §11.1) -----------------------------------------------------------------

// The core key or the window key of one seal: HKDF-SHA256(layer key, seal salt, info || digest).
// The derived key lives in a SecureBuffer (here and inside AesGcm): wiped when released.
Result<crypto::AesGcm> SealCipher(std::span<const uint8_t> ctr_key, ByteSpan salt,
                                  std::string_view info_prefix, std::string_view layer_digest) {
  if (ctr_key.size() != crypto::kCtrKeySize) {
    return Status::InvalidArgument("zindex: the layer key is " + Num(ctr_key.size()) +
                                   " bytes, need 32");
  }
  std::string info(info_prefix);
  info += layer_digest;
  LC_ASSIGN_OR_RETURN(crypto::SecureBuffer key,
                      crypto::HkdfSha256(ctr_key, salt, AsBytes(info), 32));
  return crypto::AesGcm::Create(key.span());
}

// header[0, 52) (magic .. n) || blob size || layer digest || sealed blob total size.
std::vector<uint8_t> CoreAad(ByteSpan header, std::string_view layer_digest, uint64_t blob_size,
                             uint64_t sealed_size) {
  std::vector<uint8_t> aad(header.begin(), header.begin() + kCoreNonceAt);
  uint8_t u64[8];
  PutU64(u64, blob_size);
  aad.insert(aad.end(), u64, u64 + 8);
  aad.insert(aad.end(), layer_digest.begin(), layer_digest.end());
  PutU64(u64, sealed_size);
  aad.insert(aad.end(), u64, u64 + 8);
  return aad;
}

// "lzczwin" 0x02 || blob size || span u32 || window_size u32 || layer digest.
std::vector<uint8_t> WindowAad(std::string_view layer_digest, uint64_t blob_size, uint32_t span,
                               uint32_t window_size) {
  std::vector<uint8_t> aad(kWindowAadMagic.size() + 8 + 4 + 4);
  std::memcpy(aad.data(), kWindowAadMagic.data(), kWindowAadMagic.size());
  PutU64(aad.data() + 8, blob_size);
  PutU32(aad.data() + 16, span);
  PutU32(aad.data() + 20, window_size);
  aad.insert(aad.end(), layer_digest.begin(), layer_digest.end());
  return aad;
}

// Span i's window nonce: u32 LE i || 8 zero bytes. Unique per window under one window key; the
// key is unique per seal (random salt), so no (key, nonce) pair is ever used twice.
std::array<uint8_t, crypto::kGcmNonceSize> WindowNonce(uint32_t span) {
  std::array<uint8_t, crypto::kGcmNonceSize> nonce{};
  PutU32(nonce.data(), span);
  return nonce;
}

Result<std::vector<uint8_t>> SealOneWindow(const crypto::AesGcm& gcm, ByteSpan window,
                                           uint32_t span, std::string_view layer_digest,
                                           uint64_t blob_size, compress::ZstdCompressor& zstd) {
  std::vector<uint8_t> sealed(compress::ZstdCompressor::Bound(window.size()) + crypto::kGcmTagSize);
  LC_ASSIGN_OR_RETURN(size_t frame, zstd.Compress(window, sealed));
  sealed.resize(frame + crypto::kGcmTagSize);
  const auto nonce = WindowNonce(span);
  const std::vector<uint8_t> aad =
      WindowAad(layer_digest, blob_size, span, static_cast<uint32_t>(window.size()));
  LC_RETURN_IF_ERROR(gcm.Seal(nonce, aad, ByteSpan(sealed).first(frame),
                              MutableByteSpan(sealed).first(frame),
                              MutableByteSpan(sealed).last(crypto::kGcmTagSize)));
  return sealed;
}

// The checks of the fixed header that need no key (SealedCoreBytes, Open, UnsealIndex).
Result<uint64_t> CheckHeader(ByteSpan header, uint64_t max_sealed_bytes,
                             uint64_t max_plaintext_bytes) {
  max_sealed_bytes = std::min(max_sealed_bytes, kMaxSealedIndexBytes);
  max_plaintext_bytes = std::min(max_plaintext_bytes, kMaxIndexPlaintextBytes);
  // A v1 blob's header is 24 bytes: its version is readable from 12 bytes on.
  if (header.size() < kSaltAt) {
    return Status::Corruption("zindex: the sealed index is " + Num(header.size()) +
                              " bytes, too short for a header");
  }
  if (!std::equal(kSealedMagic.begin(), kSealedMagic.end(), header.begin())) {
    return Status::Corruption("zindex: not a sealed lazycrypt zindex (magic is wrong)");
  }
  const uint32_t version = GetU32(header.data() + kVersionAt);
  if (version == 1) {
    return Status::Corruption("zindex version 1 is no longer read; re-run `lazycrypt index`");
  }
  if (version != kSealedVersion) {
    return Status::Corruption("zindex: sealed version " + Num(version) +
                              " is not supported (need " + Num(kSealedVersion) + ")");
  }
  if (header.size() < kSealedHeaderBytes) {
    return Status::Corruption("zindex: " + Num(header.size()) + " bytes of the sealed index, need " +
                              Num(kSealedHeaderBytes) + " for its header");
  }
  const uint64_t n = GetU64(header.data() + kCoreSizeAt);
  // The core plaintext is the size prefix and a zstd frame of at most max_plaintext_bytes.
  const uint64_t max_n = std::min<uint64_t>(
      8 + compress::ZstdCompressor::Bound(static_cast<size_t>(max_plaintext_bytes)),
      max_sealed_bytes > internal::kCoreOverheadBytes
          ? max_sealed_bytes - internal::kCoreOverheadBytes
          : 0);
  if (n < 9 || n > max_n) {
    return Status::Corruption("zindex: the sealed index's core is " + Num(n) + " bytes (limit " +
                              Num(max_n) + ")");
  }
  return internal::kCoreOverheadBytes + n;
}

// Authenticates and decompresses the core (`core`: exactly header + sealed core) of a sealed blob
// of `sealed_size` bytes: the serialized Index. REQUIRES CheckHeader passed on it.
Result<std::vector<uint8_t>> UnsealCore(ByteSpan core, uint64_t sealed_size,
                                        std::string_view layer_digest, uint64_t blob_size,
                                        std::span<const uint8_t> ctr_key,
                                        uint64_t max_plaintext_bytes) {
  max_plaintext_bytes = std::min(max_plaintext_bytes, kMaxIndexPlaintextBytes);
  LC_ASSIGN_OR_RETURN(crypto::AesGcm gcm,
                      SealCipher(ctr_key, core.subspan(kSaltAt, internal::kSaltBytes),
                                 kCoreKeyInfoPrefix, layer_digest));
  const size_t n = core.size() - internal::kCoreOverheadBytes;
  std::vector<uint8_t> plaintext(n);
  crypto::ScopedWipe wipe(plaintext);
  const std::vector<uint8_t> aad = CoreAad(core, layer_digest, blob_size, sealed_size);
  if (Status s = gcm.Open(core.subspan(kCoreNonceAt, crypto::kGcmNonceSize), aad,
                          core.subspan(kSealedHeaderBytes, n), core.last(crypto::kGcmTagSize),
                          plaintext);
      !s.ok()) {
    if (s.code() != StatusCode::kAuthFailed) return s;
    return Status::AuthFailed(
        "zindex: the sealed index does not authenticate (altered, made for another layer, of "
        "another size, or sealed with another key)");
  }
  const uint64_t serialized_size = GetU64(plaintext.data());
  if (serialized_size > max_plaintext_bytes) {
    return Status::Corruption("zindex: the index claims " + Num(serialized_size) +
                              " bytes (limit " + Num(max_plaintext_bytes) + ")");
  }
  std::vector<uint8_t> serialized(static_cast<size_t>(serialized_size));
  compress::ZstdDecompressor zstd;
  if (Status s = zstd.DecompressExact(ByteSpan(plaintext).subspan(8), serialized); !s.ok()) {
    crypto::ScopedWipe wipe_serialized(serialized);
    return Status::Corruption("zindex: " + s.message());
  }
  return serialized;
}

// ---- zlib with wiped allocations ---------------------------------------------------------------

// inflate's state holds up to 32 KiB of plaintext (its window); these allocators wipe every block
// zlib frees.
voidpf WipingAlloc(voidpf, uInt items, uInt size) {
  const size_t bytes = static_cast<size_t>(items) * size;
  auto* block = static_cast<uint8_t*>(std::malloc(bytes + 16));
  if (block == nullptr) return Z_NULL;
  std::memcpy(block, &bytes, sizeof(bytes));
  return block + 16;
}
void WipingFree(voidpf, voidpf address) {
  if (address == Z_NULL) return;
  uint8_t* block = static_cast<uint8_t*>(address) - 16;
  size_t bytes = 0;
  std::memcpy(&bytes, block, sizeof(bytes));
  OPENSSL_cleanse(block + 16, bytes);
  std::free(block);
}

// RAII over an inflate stream.
class Inflater {
 public:
  Inflater() {
    std::memset(&strm_, 0, sizeof(strm_));
    strm_.zalloc = WipingAlloc;
    strm_.zfree = WipingFree;
  }
  ~Inflater() {
    if (initialized_) inflateEnd(&strm_);
  }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;
  // window_bits: 31 gzip, -15 raw deflate.
  Status Init(int window_bits) {
    if (inflateInit2(&strm_, window_bits) != Z_OK) return Status::Internal("zlib: inflateInit2 failed");
    initialized_ = true;
    return Status::Ok();
  }
  z_stream& strm() { return strm_; }
  std::string Message(std::string_view fallback) const {
    return strm_.msg != nullptr ? std::string(strm_.msg) : std::string(fallback);
  }

 private:
  z_stream strm_;
  bool initialized_ = false;
};

// ---- Building ----------------------------------------------------------------------------------

// Passes the ciphertext through and keeps the bytes no span has hashed yet, so that span digests
// cover exactly the blob bytes (the decrypting stream above it only yields plaintext).
class CiphertextTee final : public InputStream {
 public:
  explicit CiphertextTee(InputStream& in) : in_(in) {}
  Result<size_t> Read(MutableByteSpan out) override {
    LC_ASSIGN_OR_RETURN(size_t n, in_.Read(out));
    kept_.insert(kept_.end(), out.begin(), out.begin() + static_cast<ptrdiff_t>(n));
    read_ += n;
    return n;
  }
  // Hashes blob bytes [from, to). REQUIRES kept_start() <= from <= to <= bytes_read().
  void Hash(uint64_t from, uint64_t to, crypto::Sha256& sha) const {
    const size_t at = head_ + static_cast<size_t>(from - kept_start_);
    sha.Update(ByteSpan(kept_).subspan(at, static_cast<size_t>(to - from)));
  }
  // Forgets blob bytes before `offset` (compacting now and then, not on every call).
  void Forget(uint64_t offset) {
    if (offset <= kept_start_) return;
    head_ += static_cast<size_t>(offset - kept_start_);
    kept_start_ = offset;
    if (head_ > (size_t{1} << 20) && head_ > kept_.size() / 2) {
      kept_.erase(kept_.begin(), kept_.begin() + static_cast<ptrdiff_t>(head_));
      head_ = 0;
    }
  }
  uint64_t bytes_read() const { return read_; }

 private:
  InputStream& in_;
  std::vector<uint8_t> kept_;  // blob bytes [kept_start_ - head_, read_)
  size_t head_ = 0;
  uint64_t kept_start_ = 0;
  uint64_t read_ = 0;
};

struct Checkpoint {
  uint64_t in = 0;
  uint32_t bits = 0;
  uint64_t out = 0;
  bool member_start = false;
  std::vector<uint8_t> window;
};

struct BuiltSpan {
  Checkpoint at;
  crypto::Sha256Digest ciphertext_sha256{};
};

// The uncompressed tar stream of the gzip layer, read through zlib with Z_BLOCK so that every
// deflate block boundary is seen (zran): it records checkpoints and span digests as the tar
// reader pulls bytes through it, and hashes the whole stream (the diff_id).
class IndexingInflateStream final : public InputStream {
 public:
  IndexingInflateStream(InputStream& gzip, CiphertextTee& tee, const BuildOptions& options)
      : gzip_(gzip), tee_(tee), options_(options), in_buf_(size_t{1} << 16), wipe_in_(in_buf_) {}
  // The ring and the checkpoints' windows are plaintext (the windows of spans already sealed
  // were wiped then).
  ~IndexingInflateStream() {
    OPENSSL_cleanse(ring_.data(), ring_.size());
    if (pending_) OPENSSL_cleanse(pending_->window.data(), pending_->window.size());
    for (BuiltSpan& s : spans_) OPENSSL_cleanse(s.at.window.data(), s.at.window.size());
  }
  IndexingInflateStream(const IndexingInflateStream&) = delete;
  IndexingInflateStream& operator=(const IndexingInflateStream&) = delete;

  Status Init() { return inflater_.Init(31); }

  Result<size_t> Read(MutableByteSpan out) override {
    if (!status_.ok()) return status_;
    auto n = ReadImpl(out);
    if (!n.ok()) status_ = n.status();
    return n;
  }

  bool finished() const { return finished_; }
  uint64_t tar_size() const { return out_total_; }
  crypto::Sha256Digest diff_id() { return diff_sha_.Finish(); }
  std::vector<BuiltSpan>& spans() { return spans_; }

 private:
  Result<size_t> ReadImpl(MutableByteSpan out) {
    z_stream& strm = inflater_.strm();
    size_t produced = 0;
    while (produced < out.size() && !finished_) {
      if (strm.avail_in == 0 && !source_eof_) {
        LC_ASSIGN_OR_RETURN(size_t n, gzip_.Read(in_buf_));
        if (n == 0) {
          source_eof_ = true;  // the decrypting stream's checks all passed
        } else {
          if (consumed_in_ == 0 && (n < 2 || in_buf_[0] != 0x1f || in_buf_[1] != 0x8b)) {
            return Status::Unsupported("zindex: the layer is not gzip-compressed");
          }
          strm.next_in = in_buf_.data();
          strm.avail_in = static_cast<uInt>(n);
        }
      }
      if (member_ended_) {
        if (strm.avail_in == 0) {
          if (source_eof_) LC_RETURN_IF_ERROR(Finish());
          continue;
        }
        // Another gzip member follows (multi-member gzip: pigz, eStargz).
        if (inflateReset(&strm) != Z_OK) return Status::Internal("zlib: inflateReset failed");
        member_ended_ = false;
        member_header_ = true;
      }
      strm.next_out = out.data() + produced;
      strm.avail_out = static_cast<uInt>(std::min<size_t>(out.size() - produced, 1 << 30));
      const uInt in_before = strm.avail_in, out_before = strm.avail_out;
      const int ret = inflate(&strm, Z_BLOCK);
      consumed_in_ += in_before - strm.avail_in;
      const size_t got = out_before - strm.avail_out;
      if (got > 0) {
        LC_RETURN_IF_ERROR(OnOutput(out.subspan(produced, got)));
        produced += got;
      }
      if (ret == Z_STREAM_END) {
        member_ended_ = true;
        continue;
      }
      if (ret == Z_BUF_ERROR && strm.avail_in == 0) {
        if (source_eof_) return Status::Corruption("gzip: the stream is truncated");
        continue;
      }
      if (ret != Z_OK) return Status::Corruption("gzip: " + inflater_.Message("inflate failed"));
      if ((strm.data_type & 0xc0) == 0x80) LC_RETURN_IF_ERROR(OnBlockBoundary(strm.data_type & 7));
      HashSettledCiphertext();
    }
    return produced;
  }

  Status OnOutput(ByteSpan bytes) {
    if (pending_) LC_RETURN_IF_ERROR(Commit());
    diff_sha_.Update(bytes);
    // The window ring: the last kWindowBytes of output.
    ByteSpan tail = bytes.size() > kWindowBytes ? bytes.last(kWindowBytes) : bytes;
    for (size_t done = 0; done < tail.size();) {
      const size_t at = static_cast<size_t>((out_total_ + bytes.size() - tail.size() + done) %
                                            kWindowBytes);
      const size_t n = std::min(tail.size() - done, kWindowBytes - at);
      std::memcpy(ring_.data() + at, tail.data() + done, n);
      done += n;
    }
    out_total_ += bytes.size();
    if (spans_.empty()) return Status::Internal("zindex: output before the first checkpoint");
    if (out_total_ - spans_.back().at.out > kMaxSpanBytes) {
      return Status::Unsupported("zindex: a deflate block longer than " + Num(kMaxSpanBytes) +
                                 " bytes (the layer cannot be indexed)");
    }
    return Status::Ok();
  }

  Status OnBlockBoundary(uint32_t bits) {
    if (member_header_) {
      // The first block of a member: a checkpoint without a window. A pending one is replaced: the
      // member it starts produced nothing (an empty member, e.g. eStargz's footer).
      member_header_ = false;
      if (bits != 0) return Status::Internal("zindex: a gzip header ended inside a byte");
      member_out_ = out_total_;
      pending_ = Checkpoint{consumed_in_, 0, out_total_, true, {}};
      return Status::Ok();
    }
    const uint64_t last_out = pending_ ? pending_->out : spans_.back().at.out;
    if (out_total_ - last_out < options_.span_bytes) return Status::Ok();
    Checkpoint cp{consumed_in_, bits, out_total_, false, {}};
    const size_t window = static_cast<size_t>(std::min<uint64_t>(kWindowBytes, out_total_ - member_out_));
    cp.window.resize(window);
    for (size_t i = 0; i < window; ++i) {
      cp.window[i] = ring_[static_cast<size_t>((out_total_ - window + i) % kWindowBytes)];
    }
    pending_ = std::move(cp);
    return Status::Ok();
  }

  // The pending checkpoint produced its first byte: it starts a span, which ends the previous one.
  Status Commit() {
    Checkpoint cp = std::move(*pending_);
    pending_.reset();
    if (!spans_.empty()) {
      LC_RETURN_IF_ERROR(EndSpan(cp.in));
      if (cp.bits != 0) tee_.Hash(cp.in - 1, cp.in, span_sha_);
      hashed_upto_ = cp.in;
    }
    if (spans_.size() >= kMaxSpans) {
      return Status::Unsupported("zindex: more than " + Num(kMaxSpans) + " spans");
    }
    spans_.push_back(BuiltSpan{std::move(cp), {}});
    return Status::Ok();
  }

  uint64_t SpanStart(const BuiltSpan& s) const {
    return spans_.size() == 1 ? 0 : s.at.in - (s.at.bits != 0 ? 1 : 0);
  }

  Status EndSpan(uint64_t end) {
    BuiltSpan& last = spans_.back();
    if (end - SpanStart(last) > MaxSpanCiphertextBytes(kMaxSpanBytes)) {
      return Status::Unsupported("zindex: a span needs more than " +
                                 Num(MaxSpanCiphertextBytes(kMaxSpanBytes)) + " ciphertext bytes");
    }
    tee_.Hash(hashed_upto_, end, span_sha_);
    last.ciphertext_sha256 = span_sha_.Finish();
    span_sha_.Reset();
    return Status::Ok();
  }

  // Hashes into the open span every ciphertext byte no later span can need, and forgets it: a
  // later checkpoint is at or after what inflate consumed (a pending one at its own offset), and
  // may need the byte before it.
  void HashSettledCiphertext() {
    if (spans_.empty()) return;
    const uint64_t bound = pending_ ? pending_->in : consumed_in_;
    if (bound == 0 || bound - 1 <= hashed_upto_) return;
    tee_.Hash(hashed_upto_, bound - 1, span_sha_);
    hashed_upto_ = bound - 1;
    tee_.Forget(hashed_upto_);
  }

  Status Finish() {
    finished_ = true;
    if (spans_.empty()) return Status::Unsupported("zindex: the layer's tar stream is empty");
    // A pending checkpoint left is a trailing empty member: the last span carries its bytes.
    pending_.reset();
    return EndSpan(tee_.bytes_read());
  }

  InputStream& gzip_;
  CiphertextTee& tee_;
  const BuildOptions& options_;
  Inflater inflater_;
  std::vector<uint8_t> in_buf_;
  crypto::ScopedWipe wipe_in_;
  std::array<uint8_t, kWindowBytes> ring_{};
  bool source_eof_ = false, member_ended_ = false, member_header_ = true, finished_ = false;
  uint64_t consumed_in_ = 0, out_total_ = 0, member_out_ = 0, hashed_upto_ = 0;
  std::optional<Checkpoint> pending_;
  std::vector<BuiltSpan> spans_;
  crypto::Sha256 span_sha_;
  crypto::Sha256 diff_sha_;
  Status status_;
};


void Cleanse(std::string* s) { OPENSSL_cleanse(s->data(), s->size()); }

// A parsed entry's plaintext (name, owners, link target, xattrs), wiped before it is freed.
void WipeEntry(format::Entry& e) {
  Cleanse(&e.name);
  Cleanse(&e.uname);
  Cleanse(&e.gname);
  Cleanse(&e.link_target);
  // A map's keys are const in place: each node is extracted (then owned here, its key mutable),
  // wiped, and freed when `node` goes.
  while (!e.xattrs.empty()) {
    auto node = e.xattrs.extract(e.xattrs.begin());
    Cleanse(&node.key());
    Cleanse(&node.mapped());
  }
}

// An index message's plaintext wiped in place (entries: names, owners, link targets, xattrs;
// spans: where the layer's deflate blocks fall and the ciphertext digests; the tar's digest), so
// that freeing it leaves none behind.
void WipeIndex(v2::Index& index) {
  for (format::v1::Entry& e : *index.mutable_entries()) {
    Cleanse(e.mutable_name());
    Cleanse(e.mutable_uname());
    Cleanse(e.mutable_gname());
    Cleanse(e.mutable_link_target());
    for (format::v1::Xattr& x : *e.mutable_xattrs()) {
      Cleanse(x.mutable_name());
      Cleanse(x.mutable_value());
    }
  }
  for (v2::Span& span : *index.mutable_spans()) {
    Cleanse(span.mutable_ciphertext_sha256());
    Cleanse(span.mutable_window_sha256());
    span.set_in_offset(0);
    span.set_in_bits(0);
    span.set_out_offset(0);
    span.set_window_size(0);
    span.set_window_offset(0);
    span.set_window_sealed_size(0);
  }
  Cleanse(index.mutable_tar_sha256());
  index.set_tar_size(0);
}

// Parsed entries' plaintext, wiped when the scope holding them ends, whatever way it ends.
class ScopedEntriesWipe {
 public:
  explicit ScopedEntriesWipe(std::vector<format::Entry>& entries) : entries_(entries) {}
  ~ScopedEntriesWipe() {
    for (format::Entry& e : entries_) WipeEntry(e);
  }
  ScopedEntriesWipe(const ScopedEntriesWipe&) = delete;
  ScopedEntriesWipe& operator=(const ScopedEntriesWipe&) = delete;

 private:
  std::vector<format::Entry>& entries_;
};

// The parsed index holds the layer's plaintext (names, owners, link targets, xattrs, windows):
// wiped in place when the scope that parsed it ends, whatever way it ends.
class ScopedIndexWipe {
 public:
  explicit ScopedIndexWipe(v2::Index& index) : index_(index) {}
  ~ScopedIndexWipe() { WipeIndex(index_); }
  ScopedIndexWipe(const ScopedIndexWipe&) = delete;
  ScopedIndexWipe& operator=(const ScopedIndexWipe&) = delete;

 private:
  v2::Index& index_;
};


// Tar parse errors name files; the index's maker may pass them on (names are confidential).
Status RedactedTarError(const Status& s, size_t entries_before, uint64_t offset) {
  return Status(s.code(), "zindex: the tar stream does not parse after entry " +
                              Num(entries_before) + " (near offset " + Num(offset) + ")");
}

}  // namespace

// ---- Sealing seam ------------------------------------------------------------------------------

namespace internal {

Result<UnsealedIndex> UnsealIndex(ByteSpan sealed, std::string_view layer_digest,
                                  uint64_t blob_size, std::span<const uint8_t> ctr_key,
                                  uint64_t max_sealed_bytes, uint64_t max_plaintext_bytes) {
  if (sealed.size() > std::min(max_sealed_bytes, kMaxSealedIndexBytes)) {
    return Status::Corruption("zindex: the sealed index is " + Num(sealed.size()) +
                              " bytes (limit " + Num(std::min(max_sealed_bytes, kMaxSealedIndexBytes)) +
                              ")");
  }
  LC_ASSIGN_OR_RETURN(uint64_t core, CheckHeader(sealed, max_sealed_bytes, max_plaintext_bytes));
  if (core > sealed.size()) {
    return Status::Corruption("zindex: the sealed index is " + Num(sealed.size()) +
                              " bytes, its core needs " + Num(core));
  }
  UnsealedIndex out;
  LC_ASSIGN_OR_RETURN(out.serialized,
                      UnsealCore(sealed.first(static_cast<size_t>(core)), sealed.size(),
                                 layer_digest, blob_size, ctr_key, max_plaintext_bytes));
  std::memcpy(out.salt.data(), sealed.data() + kSaltAt, kSaltBytes);
  out.windows_area.assign(sealed.begin() + static_cast<ptrdiff_t>(core), sealed.end());
  return out;
}

Result<std::vector<uint8_t>> SealIndex(ByteSpan serialized, const Salt& salt,
                                       ByteSpan windows_area, std::string_view layer_digest,
                                       uint64_t blob_size, std::span<const uint8_t> ctr_key,
                                       int zstd_level) {
  if (serialized.size() > kMaxIndexPlaintextBytes) {
    return Status::InvalidArgument("zindex: the index is " + Num(serialized.size()) +
                                   " bytes (limit " + Num(kMaxIndexPlaintextBytes) + ")");
  }
  LC_ASSIGN_OR_RETURN(crypto::AesGcm gcm,
                      SealCipher(ctr_key, salt, kCoreKeyInfoPrefix, layer_digest));
  compress::ZstdCompressor zstd(zstd_level);
  std::vector<uint8_t> plaintext(8 + compress::ZstdCompressor::Bound(serialized.size()));
  crypto::ScopedWipe wipe(plaintext);
  PutU64(plaintext.data(), serialized.size());
  LC_ASSIGN_OR_RETURN(size_t frame, zstd.Compress(serialized, MutableByteSpan(plaintext).subspan(8)));
  const size_t n = 8 + frame;
  const uint64_t total = kCoreOverheadBytes + n + windows_area.size();
  if (total > kMaxSealedIndexBytes) {
    return Status::InvalidArgument("zindex: the sealed index would be " + Num(total) +
                                   " bytes (limit " + Num(kMaxSealedIndexBytes) + ")");
  }
  std::vector<uint8_t> sealed(static_cast<size_t>(total));
  std::memcpy(sealed.data(), kSealedMagic.data(), kSealedMagic.size());
  PutU32(sealed.data() + kVersionAt, kSealedVersion);
  std::memcpy(sealed.data() + kSaltAt, salt.data(), salt.size());
  PutU64(sealed.data() + kCoreSizeAt, n);
  MutableByteSpan nonce = MutableByteSpan(sealed).subspan(kCoreNonceAt, crypto::kGcmNonceSize);
  LC_RETURN_IF_ERROR(crypto::RandomBytes(nonce));
  const std::vector<uint8_t> aad = CoreAad(sealed, layer_digest, blob_size, total);
  LC_RETURN_IF_ERROR(gcm.Seal(nonce, aad, ByteSpan(plaintext).first(n),
                              MutableByteSpan(sealed).subspan(kSealedHeaderBytes, n),
                              MutableByteSpan(sealed).subspan(kSealedHeaderBytes + n,
                                                              crypto::kGcmTagSize)));
  if (!windows_area.empty()) {
    std::memcpy(sealed.data() + kCoreOverheadBytes + n, windows_area.data(), windows_area.size());
  }
  return sealed;
}

Result<std::vector<uint8_t>> SealWindow(ByteSpan window, uint32_t span, const Salt& salt,
                                        std::string_view layer_digest, uint64_t blob_size,
                                        std::span<const uint8_t> ctr_key, int zstd_level) {
  LC_ASSIGN_OR_RETURN(crypto::AesGcm gcm,
                      SealCipher(ctr_key, salt, kWindowKeyInfoPrefix, layer_digest));
  compress::ZstdCompressor zstd(zstd_level);
  return SealOneWindow(gcm, window, span, layer_digest, blob_size, zstd);
}

}  // namespace internal

// ---- Building: BuildIndex, UnsealedIndex::Seal --------------------------------------------------

// Between BuildIndex and Seal: the core to seal (spans set, entries added by Seal) and what
// sealing it needs. The entries, the core (spans, tar digest, its copy of the entries) and the
// salt are wiped on release, sealed or not (the key copy is a SecureBuffer).
struct UnsealedIndex::State {
  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
    for (format::Entry& e : entries) WipeEntry(e);
    WipeIndex(index);
    OPENSSL_cleanse(salt.data(), salt.size());
  }
  v2::Index index;  // everything but entries and prefetch
  std::vector<format::Entry> entries;
  internal::Salt salt{};
  std::vector<uint8_t> windows_area;  // sealed already
  crypto::SecureBuffer key;
  std::string layer_digest;
  uint64_t blob_size = 0;
  int zstd_level = 3;
};

UnsealedIndex::UnsealedIndex(std::unique_ptr<State> state) : state_(std::move(state)) {}
UnsealedIndex::UnsealedIndex(UnsealedIndex&&) noexcept = default;
UnsealedIndex& UnsealedIndex::operator=(UnsealedIndex&&) noexcept = default;
UnsealedIndex::~UnsealedIndex() = default;

const std::vector<format::Entry>& UnsealedIndex::entries() const {
  // A moved-from or sealed index lists nothing (its plaintext is gone).
  static const std::vector<format::Entry> kNone;
  return state_ != nullptr ? state_->entries : kNone;
}

Result<std::vector<uint8_t>> UnsealedIndex::Seal(const std::vector<std::string>& prefetch_names) && {
  if (state_ == nullptr) return Status::Internal("zindex: Seal of a moved-from index");
  // Consumed whatever happens: the plaintext is wiped when this returns.
  std::unique_ptr<State> state = std::move(state_);
  std::vector<uint32_t> marks;
  if (!prefetch_names.empty()) {
    // The last entry of a name is the one extraction keeps (and the merged view resolves to).
    std::map<std::string_view, uint32_t> last;
    for (size_t i = 0; i < state->entries.size(); ++i) {
      last[state->entries[i].name] = static_cast<uint32_t>(i);
    }
    for (const std::string& name : prefetch_names) {
      auto it = last.find(name);
      if (it == last.end() || state->entries[it->second].type != format::EntryType::kRegular) {
        return Status::InvalidArgument("prefetch path '" + name +
                                       "' is not a regular file of the layer");
      }
      marks.push_back(it->second);
    }
    std::sort(marks.begin(), marks.end());
    marks.erase(std::unique(marks.begin(), marks.end()), marks.end());
  }
  v2::Index& index = state->index;
  ScopedIndexWipe wipe_index(index);
  for (const format::Entry& e : state->entries) format::EntryToProto(e, index.add_entries());
  for (uint32_t m : marks) index.add_prefetch(m);
  std::string serialized;
  if (!index.SerializeToString(&serialized)) return Status::Internal("zindex: serialization failed");
  std::vector<uint8_t> bytes(serialized.begin(), serialized.end());
  crypto::ScopedWipe wipe_bytes(bytes);
  OPENSSL_cleanse(serialized.data(), serialized.size());
  return internal::SealIndex(bytes, state->salt, state->windows_area, state->layer_digest,
                             state->blob_size, state->key.span(), state->zstd_level);
}

Result<std::vector<uint8_t>> BuildSealedIndex(InputStream& ciphertext,
                                              const image::Descriptor& encrypted,
                                              const image::OcicryptLayerCipher& cipher,
                                              const BuildOptions& options) {
  LC_ASSIGN_OR_RETURN(UnsealedIndex unsealed, BuildIndex(ciphertext, encrypted, cipher, options));
  return std::move(unsealed).Seal({});
}

Result<UnsealedIndex> BuildIndex(InputStream& ciphertext, const image::Descriptor& encrypted,
                                 const image::OcicryptLayerCipher& cipher,
                                 const BuildOptions& options) {
  if (options.span_bytes < kMinSpanBytes || options.span_bytes > kMaxSpanBytes / 2) {
    return Status::InvalidArgument("zindex: span size " + Num(options.span_bytes) +
                                   " is outside " + Num(kMinSpanBytes) + ".." +
                                   Num(kMaxSpanBytes / 2));
  }
  LC_RETURN_IF_ERROR(crypto::ParseOciDigest(encrypted.digest).status());
  CiphertextTee tee(ciphertext);
  LC_ASSIGN_OR_RETURN(std::unique_ptr<InputStream> gzip,
                      image::NewOcicryptDecryptingStream(tee, encrypted, cipher));
  IndexingInflateStream stream(*gzip, tee, options);
  LC_RETURN_IF_ERROR(stream.Init());

  auto state = std::make_unique<UnsealedIndex::State>();
  zindex::v2::Index& index = state->index;
  index.set_version(kIndexVersion);
  index.set_layer_digest(encrypted.digest);
  index.set_blob_size(encrypted.size);
  index.set_span_bytes(options.span_bytes);

  format::Toc toc;  // the entries, and the self-check below (what Open will build)
  ScopedEntriesWipe wipe_entries(toc.entries);  // on every way out (moved to `state` on success)
  tar::TarReader reader(stream);
  for (;;) {
    auto next = reader.Next();
    if (!next.ok()) return RedactedTarError(next.status(), toc.entries.size(), reader.offset());
    if (!next->has_value()) break;
    if (toc.entries.size() >= kMaxEntries) {
      return Status::Unsupported("zindex: more than " + Num(kMaxEntries) + " tar entries");
    }
    auto entry = format::TocEntryFromTar(**next);
    if (!entry.ok()) {
      return Status::Corruption("zindex: tar entry " + Num(toc.entries.size()) +
                                " cannot be indexed: " + entry.status().message());
    }
    toc.entries.push_back(std::move(*entry));
  }
  // The matcher the snapshotter's verification uses accepts only zeros after the marker.
  if (auto drained = reader.DrainZerosToEnd(); !drained.ok()) {
    return RedactedTarError(drained.status(), toc.entries.size(), reader.offset());
  }
  if (!stream.finished()) return Status::Internal("zindex: the layer was not read to its end");
  // Here the decrypting stream has seen its end: HMAC, blob digest and plaintext digest matched.

  toc.tar_size = stream.tar_size();
  toc.diff_id = stream.diff_id();
  std::vector<BuiltSpan>& spans = stream.spans();
  for (size_t i = 0; i < spans.size(); ++i) {
    format::ChunkInfo c;
    c.index = i;
    c.tar_offset = spans[i].at.out;
    const uint64_t end = i + 1 < spans.size() ? spans[i + 1].at.out : toc.tar_size;
    c.raw_size = static_cast<uint32_t>(end - c.tar_offset);
    c.last = i + 1 == spans.size();
    toc.chunks.push_back(c);
  }
  index.set_tar_size(toc.tar_size);
  index.set_tar_sha256(toc.diff_id.data(), toc.diff_id.size());
  // A fresh salt per seal: fresh core and window keys, so span-numbered window nonces are never
  // reused under one key (two seals of one layer, by two key holders or with two span sizes).
  internal::Salt& salt = state->salt;
  LC_RETURN_IF_ERROR(crypto::RandomBytes(salt));
  LC_ASSIGN_OR_RETURN(crypto::AesGcm window_gcm,
                      SealCipher(cipher.key.span(), salt, kWindowKeyInfoPrefix, encrypted.digest));
  compress::ZstdCompressor zstd(options.zstd_level);
  std::vector<uint8_t>& windows_area = state->windows_area;
  for (size_t i = 0; i < spans.size(); ++i) {
    BuiltSpan& s = spans[i];
    zindex::v2::Span* p = index.add_spans();
    p->set_in_offset(s.at.in);
    p->set_in_bits(s.at.bits);
    p->set_out_offset(s.at.out);
    p->set_member_start(s.at.member_start);
    p->set_window_size(static_cast<uint32_t>(s.at.window.size()));
    if (!s.at.window.empty()) {
      LC_ASSIGN_OR_RETURN(std::vector<uint8_t> sealed_window,
                          SealOneWindow(window_gcm, s.at.window, static_cast<uint32_t>(i),
                                        encrypted.digest, encrypted.size, zstd));
      OPENSSL_cleanse(s.at.window.data(), s.at.window.size());  // plaintext, no longer needed
      p->set_window_offset(windows_area.size());
      p->set_window_sealed_size(static_cast<uint32_t>(sealed_window.size()));
      // The core pins the window's bytes, not only its size (FORMAT.md §11.2).
      const crypto::Sha256Digest window_sha256 = crypto::Sha256::Of(sealed_window);
      p->set_window_sha256(window_sha256.data(), window_sha256.size());
      windows_area.insert(windows_area.end(), sealed_window.begin(), sealed_window.end());
      if (windows_area.size() > kMaxSealedIndexBytes) {
        return Status::Unsupported("zindex: the windows alone exceed " +
                                   Num(kMaxSealedIndexBytes) + " bytes (use larger spans)");
      }
    }
    p->set_ciphertext_sha256(s.ciphertext_sha256.data(), s.ciphertext_sha256.size());
  }
  // Self-check: the entry rules a reader applies to the core's entries (FromVerifiedForeignToc,
  // format/layer_index.cc: ValidateEntry, data inside the tar stream, hard links naming an earlier
  // non-directory; the span table is tiled by construction above). Checked here on the entries
  // themselves: FromVerifiedForeignToc consumes a Toc, and a copy handed to it would be freed
  // (and packed) there unwiped. A round trip through Open in every test keeps the two in step.
  {
    std::map<std::string_view, format::EntryType> seen;
    for (size_t i = 0; i < toc.entries.size(); ++i) {
      const format::Entry& e = toc.entries[i];
      if (!format::ValidateEntry(e, toc.tar_size).ok()) {  // its message may name the entry
        return Status::Corruption("zindex: the layer's tar cannot be served: entry " + Num(i) +
                                  " is not valid");
      }
      if (e.type == format::EntryType::kHardlink) {
        auto target = seen.find(e.link_target);
        if (target == seen.end() || target->second == format::EntryType::kDirectory) {
          return Status::Corruption("zindex: the layer's tar cannot be served: entry " + Num(i) +
                                    ": hardlink target is not an earlier non-directory entry");
        }
      }
      seen[e.name] = e.type;
    }
  }
  // The entries stay in memory until Seal (with the marks chosen from them); moved, not copied.
  state->entries = std::move(toc.entries);
  toc.entries.clear();
  state->key = cipher.key.Clone();
  state->layer_digest = encrypted.digest;
  state->blob_size = encrypted.size;
  state->zstd_level = options.zstd_level;
  return UnsealedIndex(std::move(state));
}

// ---- OpenedIndex -------------------------------------------------------------------------------

struct OpenedIndex::Impl {
  crypto::SecureBuffer key;
  std::vector<uint8_t> nonce;
  // The window key of this seal (its key bytes are a SecureBuffer inside AesGcm).
  std::optional<crypto::AesGcm> window_gcm;
  std::shared_ptr<const format::LayerIndex> layer_index;
  std::string layer_digest;
  std::string diff_id;
  uint64_t tar_size = 0;
  uint64_t blob_size = 0;
  uint64_t sealed_size = 0;
  uint64_t sealed_core_bytes = 0;
  struct Span {
    uint64_t in = 0;
    uint32_t bits = 0;
    uint64_t out = 0, out_size = 0;
    Range ciphertext;
    uint32_t window_size = 0;
    Range window;  // absolute in the sealed blob
    crypto::Sha256Digest sha256{};
    crypto::Sha256Digest window_sha256{};  // of the sealed window; unused without one
  };
  std::vector<Span> spans;
};

OpenedIndex::OpenedIndex(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
OpenedIndex::~OpenedIndex() = default;

Result<uint64_t> SealedCoreBytes(ByteSpan header, const Limits& limits) {
  return CheckHeader(header, limits.max_sealed_bytes, limits.max_plaintext_bytes);
}

Result<std::shared_ptr<const OpenedIndex>> OpenedIndex::Open(ByteSpan sealed_prefix,
                                                             uint64_t sealed_size,
                                                             const image::Descriptor& encrypted,
                                                             const image::OcicryptLayerCipher& cipher,
                                                             const Limits& limits) {
  if (cipher.nonce.size() != crypto::kCtrNonceSize) {
    return Status::InvalidArgument("zindex: the layer nonce is " + Num(cipher.nonce.size()) +
                                   " bytes, need 16");
  }
  const uint64_t max_sealed_bytes = std::min(limits.max_sealed_bytes, kMaxSealedIndexBytes);
  if (sealed_size > max_sealed_bytes) {
    return Status::Corruption("zindex: the sealed index is " + Num(sealed_size) +
                              " bytes (limit " + Num(max_sealed_bytes) + ")");
  }
  LC_ASSIGN_OR_RETURN(const uint64_t core_bytes, SealedCoreBytes(sealed_prefix, limits));
  if (core_bytes > sealed_size) {
    return Status::Corruption("zindex: the sealed index is " + Num(sealed_size) +
                              " bytes, but its header says its core alone is " + Num(core_bytes));
  }
  if (sealed_prefix.size() < core_bytes) {
    return Status::Corruption("zindex: " + Num(sealed_prefix.size()) +
                              " bytes of the sealed index given, its core needs " +
                              Num(core_bytes) + " (SealedCoreBytes)");
  }
  const ByteSpan core = sealed_prefix.first(static_cast<size_t>(core_bytes));
  LC_ASSIGN_OR_RETURN(std::vector<uint8_t> serialized,
                      UnsealCore(core, sealed_size, encrypted.digest, encrypted.size,
                                 cipher.key.span(), limits.max_plaintext_bytes));
  crypto::ScopedWipe wipe_serialized(serialized);
  // Bounded on the wire before anything is built (format/wire_bounds.h): a key holder's core of
  // a few KiB can decompress to hundreds of MiB of empty entries or spans.
  {
    using K = format::WireField::Kind;
    static constexpr format::WireField kSpanFields[] = {
        {1, K::kVarint}, {2, K::kVarint}, {3, K::kVarint}, {4, K::kVarint}, {5, K::kVarint},
        {7, K::kBytes},  {8, K::kVarint}, {9, K::kVarint}, {10, K::kBytes}};
    static constexpr format::WireMessage kSpan = {"a span", kSpanFields};
    const uint64_t max_entries = std::min(limits.max_entries, kMaxEntries);
    const format::EntryWireSchema entry(max_entries);
    const format::WireField index_fields[] = {
        {1, K::kVarint},
        {2, K::kBytes},
        {3, K::kVarint},
        {4, K::kVarint},
        {5, K::kBytes},
        {6, K::kVarint},
        {7, K::kRepeatedMessage, &kSpan, std::min(limits.max_spans, kMaxSpans), UINT64_MAX,
         "spans"},
        {8, K::kRepeatedMessage, &entry.entry(), max_entries, UINT64_MAX, "entries"},
        {9, K::kRepeatedVarint, nullptr, max_entries, UINT64_MAX, "prefetch marks"},
    };
    LC_RETURN_IF_ERROR(format::CheckWireShape(
        serialized, format::WireMessage{"the index", index_fields}, "zindex"));
  }
  zindex::v2::Index index;
  ScopedIndexWipe wipe_index(index);
  if (!index.ParseFromArray(serialized.data(), static_cast<int>(serialized.size()))) {
    return Status::Corruption("zindex: the index does not parse");
  }
  if (index.version() != kIndexVersion) {
    return Status::Corruption("zindex: index version " + Num(index.version()) +
                              " is not supported (need " + Num(kIndexVersion) + ")");
  }
  // Bound to the layer by the AAD already; checked again so a maker's bug cannot pass.
  if (index.layer_digest() != encrypted.digest || index.blob_size() != encrypted.size) {
    return Status::Corruption("zindex: the index names another layer");
  }
  if (index.tar_sha256().size() != 32) {
    return Status::Corruption("zindex: the tar SHA-256 is " + Num(index.tar_sha256().size()) +
                              " bytes, need 32");
  }
  const uint64_t blob_size = index.blob_size(), tar_size = index.tar_size();
  const uint64_t max_span_bytes = std::min(limits.max_span_bytes, kMaxSpanBytes);
  const uint64_t max_span_ciphertext =
      std::min(MaxSpanCiphertextBytes(max_span_bytes), limits.max_span_ciphertext_bytes);
  const uint64_t span_count = static_cast<uint64_t>(index.spans_size());
  if (span_count < 1 || span_count > std::min(limits.max_spans, kMaxSpans)) {
    return Status::Corruption("zindex: span count " + Num(span_count) + " is outside 1.." +
                              Num(std::min(limits.max_spans, kMaxSpans)) + " (limit)");
  }
  if (static_cast<uint64_t>(index.entries_size()) > std::min(limits.max_entries, kMaxEntries)) {
    return Status::Corruption("zindex: " + Num(index.entries_size()) + " entries (limit " +
                              Num(std::min(limits.max_entries, kMaxEntries)) + ")");
  }

  auto impl = std::make_unique<Impl>();
  impl->spans.resize(span_count);
  uint64_t member_out = 0;
  const uint64_t windows_area_bytes = sealed_size - core_bytes;
  uint64_t windows_end = 0;  // in the windows area
  for (size_t i = 0; i < span_count; ++i) {
    const zindex::v2::Span& p = index.spans(static_cast<int>(i));
    Impl::Span& s = impl->spans[i];
    const std::string what = "zindex: span " + Num(i) + ": ";
    s.in = p.in_offset();
    s.bits = p.in_bits();
    s.out = p.out_offset();
    if (s.bits > 7) return Status::Corruption(what + "bit count " + Num(s.bits) + " is over 7");
    if (i == 0 && (s.out != 0 || !p.member_start())) {
      return Status::Corruption(what + "the first span must start the first gzip member at 0");
    }
    if (p.member_start() && s.bits != 0) {
      return Status::Corruption(what + "a member start inside a byte");
    }
    if (s.in >= blob_size || (s.bits != 0 && s.in == 0)) {
      return Status::Corruption(what + "checkpoint is past the end of the blob");
    }
    if (i > 0) {
      const Impl::Span& prev = impl->spans[i - 1];
      if (s.in <= prev.in || s.out <= prev.out) {
        return Status::Corruption(what + "offsets do not increase (spans overlap)");
      }
    }
    if (s.out >= tar_size) return Status::Corruption(what + "checkpoint is past the end of the tar stream");
    if (p.member_start()) member_out = s.out;
    s.window_size = p.window_size();
    const uint64_t expected_window = std::min<uint64_t>(kWindowBytes, s.out - member_out);
    if (s.window_size != expected_window) {
      return Status::Corruption(what + "window of " + Num(s.window_size) + " bytes, need " +
                                Num(expected_window));
    }
    // The windows area: each span's sealed window in span order, contiguous, to the blob's end.
    if (s.window_size == 0) {
      if (p.window_offset() != 0 || p.window_sealed_size() != 0) {
        return Status::Corruption(what + "a sealed window for a span without a window");
      }
      if (!p.window_sha256().empty()) {
        return Status::Corruption(what + "a window digest for a span without a window");
      }
    } else {
      if (p.window_sha256().size() != s.window_sha256.size()) {
        return Status::Corruption(what + "window digest is " + Num(p.window_sha256().size()) +
                                  " bytes, need 32");
      }
      std::memcpy(s.window_sha256.data(), p.window_sha256().data(), s.window_sha256.size());
      if (p.window_sealed_size() < kMinWindowSealedBytes ||
          p.window_sealed_size() > MaxWindowSealedBytes()) {
        return Status::Corruption(what + "sealed window of " + Num(p.window_sealed_size()) +
                                  " bytes is impossible (" + Num(kMinWindowSealedBytes) + ".." +
                                  Num(MaxWindowSealedBytes()) + ")");
      }
      if (p.window_offset() != windows_end) {
        return Status::Corruption(what + "sealed window at " + Num(p.window_offset()) +
                                  " of the windows area, need " + Num(windows_end) +
                                  " (windows are contiguous, in span order)");
      }
      if (p.window_sealed_size() > windows_area_bytes - windows_end) {
        return Status::Corruption(what + "sealed window ends past the end of the sealed index");
      }
      s.window = Range{core_bytes + windows_end, p.window_sealed_size()};
      windows_end += p.window_sealed_size();
    }
    if (p.ciphertext_sha256().size() != s.sha256.size()) {
      return Status::Corruption(what + "ciphertext digest is " +
                                Num(p.ciphertext_sha256().size()) + " bytes, need 32");
    }
    std::memcpy(s.sha256.data(), p.ciphertext_sha256().data(), s.sha256.size());
  }
  if (windows_end != windows_area_bytes) {
    return Status::Corruption("zindex: the windows end at " + Num(windows_end) +
                              " of a windows area of " + Num(windows_area_bytes) +
                              " bytes (the sealed index's size is wrong)");
  }
  for (size_t i = 0; i < span_count; ++i) {
    Impl::Span& s = impl->spans[i];
    const bool last = i + 1 == span_count;
    s.out_size = (last ? tar_size : impl->spans[i + 1].out) - s.out;
    if (s.out_size > max_span_bytes) {
      return Status::Corruption("zindex: span " + Num(i) + ": " + Num(s.out_size) +
                                " uncompressed bytes (limit " + Num(max_span_bytes) + ")");
    }
    const uint64_t start = i == 0 ? 0 : s.in - (s.bits != 0 ? 1 : 0);
    const uint64_t end = last ? blob_size : impl->spans[i + 1].in;
    if (end - start > max_span_ciphertext) {
      return Status::Corruption("zindex: span " + Num(i) + ": " + Num(end - start) +
                                " ciphertext bytes (limit " + Num(max_span_ciphertext) + ")");
    }
    s.ciphertext = Range{start, end - start};
  }

  format::Toc toc;
  toc.tar_size = tar_size;
  std::memcpy(toc.diff_id.data(), index.tar_sha256().data(), toc.diff_id.size());
  toc.chunks.reserve(span_count);
  for (size_t i = 0; i < span_count; ++i) {
    format::ChunkInfo c;
    c.index = i;
    c.tar_offset = impl->spans[i].out;
    c.raw_size = static_cast<uint32_t>(impl->spans[i].out_size);  // <= kMaxSpanBytes
    c.last = i + 1 == span_count;
    toc.chunks.push_back(c);
  }
  toc.entries.reserve(index.entries_size());
  for (int i = 0; i < index.entries_size(); ++i) {
    auto decoded = format::EntryFromProto(index.entries(i));
    if (!decoded.ok()) {
      return Status::Corruption("zindex: entry " + Num(i) + ": " + decoded.status().message());
    }
    format::Entry e = std::move(decoded).value();
    toc.entries.push_back(std::move(e));
  }
  // Prefetch marks: strictly increasing indexes of entries (so unique, and no more of them than
  // entries), none of an entry a later entry of the same name shadows (extraction keeps the last;
  // Seal marks only that one); FromVerifiedForeignToc checks that each is a regular file.
  const int mark_count = index.prefetch_size();
  if (mark_count > index.entries_size()) {
    return Status::Corruption("zindex: " + Num(mark_count) + " prefetch marks for " +
                              Num(index.entries_size()) + " entries");
  }
  toc.prefetch.reserve(static_cast<size_t>(mark_count));
  for (int i = 0; i < mark_count; ++i) {
    const uint32_t mark = index.prefetch(i);
    if (mark >= static_cast<uint32_t>(index.entries_size())) {
      return Status::Corruption("zindex: prefetch mark " + Num(i) + ": entry index " + Num(mark) +
                                " is outside the " + Num(index.entries_size()) + " entries");
    }
    if (!toc.prefetch.empty() && mark <= toc.prefetch.back()) {
      return Status::Corruption("zindex: prefetch mark " + Num(i) + ": entry index " + Num(mark) +
                                " is not greater than the previous mark's " +
                                Num(toc.prefetch.back()) + " (marks must be strictly increasing)");
    }
    toc.prefetch.push_back(mark);
  }
  if (!toc.prefetch.empty()) {
    // The last entry of each name: a mark elsewhere names a file nobody reads (the error names
    // the mark by number, never the entry's name: names are confidential).
    std::map<std::string_view, uint32_t> last;
    for (size_t i = 0; i < toc.entries.size(); ++i) {
      last[toc.entries[i].name] = static_cast<uint32_t>(i);
    }
    for (size_t i = 0; i < toc.prefetch.size(); ++i) {
      const uint32_t mark = toc.prefetch[i];
      const uint32_t kept = last.find(toc.entries[mark].name)->second;
      if (kept != mark) {
        return Status::Corruption("zindex: prefetch mark " + Num(i) + ": entry index " +
                                  Num(mark) + " is shadowed by entry " + Num(kept) +
                                  " of the same name (marks name the entry extraction keeps)");
      }
    }
  }
  LC_ASSIGN_OR_RETURN(impl->layer_index,
                      format::LayerIndex::FromVerifiedForeignToc(
                          std::move(toc), crypto::Sha256::Of(core), blob_size));
  LC_ASSIGN_OR_RETURN(impl->window_gcm,
                      SealCipher(cipher.key.span(), core.subspan(kSaltAt, internal::kSaltBytes),
                                 kWindowKeyInfoPrefix, encrypted.digest));
  impl->layer_digest = encrypted.digest;
  impl->sealed_size = sealed_size;
  impl->sealed_core_bytes = core_bytes;
  impl->key = cipher.key.Clone();
  impl->nonce = cipher.nonce;
  impl->diff_id = crypto::OciDigest(impl->layer_index->diff_id());
  impl->tar_size = tar_size;
  impl->blob_size = blob_size;
  return std::shared_ptr<const OpenedIndex>(new OpenedIndex(std::move(impl)));
}

std::shared_ptr<const format::LayerIndex> OpenedIndex::layer_index() const {
  return impl_->layer_index;
}
size_t OpenedIndex::span_count() const { return impl_->spans.size(); }
OpenedIndex::Range OpenedIndex::span_ciphertext(size_t i) const {
  return impl_->spans[i].ciphertext;
}
OpenedIndex::Range OpenedIndex::span_uncompressed(size_t i) const {
  return Range{impl_->spans[i].out, impl_->spans[i].out_size};
}
const std::string& OpenedIndex::diff_id() const { return impl_->diff_id; }
uint64_t OpenedIndex::tar_size() const { return impl_->tar_size; }
uint64_t OpenedIndex::blob_size() const { return impl_->blob_size; }

uint64_t OpenedIndex::sealed_size() const { return impl_->sealed_size; }
uint64_t OpenedIndex::sealed_core_bytes() const { return impl_->sealed_core_bytes; }
OpenedIndex::Range OpenedIndex::span_window(size_t i) const { return impl_->spans[i].window; }

Result<crypto::SecureBuffer> OpenedIndex::DecodeSpan(size_t i, ByteSpan ciphertext,
                                                     ByteSpan sealed_window) const {
  if (i >= impl_->spans.size()) {
    return Status::InvalidArgument("zindex: span " + Num(i) + " of " +
                                   Num(impl_->spans.size()));
  }
  const Impl::Span& s = impl_->spans[i];
  const std::string what = "zindex: span " + Num(i) + ": ";
  if (ciphertext.size() != s.ciphertext.size) {
    return Status::InvalidArgument(what + Num(ciphertext.size()) + " ciphertext bytes given, need " +
                                   Num(s.ciphertext.size));
  }
  if (sealed_window.size() != s.window.size) {
    return Status::InvalidArgument(what + Num(sealed_window.size()) +
                                   " sealed window bytes given, need " + Num(s.window.size));
  }
  if (!crypto::ConstantTimeEquals(crypto::Sha256::Of(ciphertext), s.sha256)) {
    return Status::AuthFailed("zindex: span " + Num(i) + " digest mismatch");
  }
  // The window is pinned by the core (a key holder can seal several for one span: the seal alone
  // would accept any of them), then authenticated and decompressed, before anything is
  // decrypted or inflated.
  crypto::SecureBuffer window(s.window_size);
  if (s.window_size != 0) {
    if (!crypto::ConstantTimeEquals(crypto::Sha256::Of(sealed_window), s.window_sha256)) {
      return Status::AuthFailed("zindex: span " + Num(i) + " window digest mismatch");
    }
    const size_t frame_size = sealed_window.size() - crypto::kGcmTagSize;
    crypto::SecureBuffer frame(frame_size);
    const auto nonce = WindowNonce(static_cast<uint32_t>(i));
    const std::vector<uint8_t> aad =
        WindowAad(impl_->layer_digest, impl_->blob_size, static_cast<uint32_t>(i), s.window_size);
    if (Status st = impl_->window_gcm->Open(nonce, aad, sealed_window.first(frame_size),
                                            sealed_window.last(crypto::kGcmTagSize), frame.span());
        !st.ok()) {
      if (st.code() != StatusCode::kAuthFailed) return st;
      return Status::AuthFailed("zindex: span " + Num(i) + " window does not authenticate");
    }
    compress::ZstdDecompressor zstd;
    if (Status st = zstd.DecompressExact(frame.span(), window.span()); !st.ok()) {
      return Status::Corruption(what + "window: " + st.message());
    }
  }
  crypto::SecureBuffer gzip(ciphertext.size());
  LC_RETURN_IF_ERROR(crypto::AesCtrXorAt(impl_->key.span(), impl_->nonce, s.ciphertext.offset,
                                         ciphertext, gzip.span()));
  // The span's deflate data starts at s.in (bits before it in the byte at s.in - 1).
  const size_t data_at = static_cast<size_t>(s.in - s.ciphertext.offset);
  Inflater inflater;
  LC_RETURN_IF_ERROR(inflater.Init(-15));
  z_stream& strm = inflater.strm();
  if (s.bits != 0) {
    const int byte = gzip.data()[data_at - 1];
    if (inflatePrime(&strm, static_cast<int>(s.bits), byte >> (8 - s.bits)) != Z_OK) {
      return Status::Internal("zlib: inflatePrime failed");
    }
  }
  if (s.window_size != 0) {
    if (inflateSetDictionary(&strm, window.data(), static_cast<uInt>(window.size())) != Z_OK) {
      return Status::Internal("zlib: inflateSetDictionary failed");
    }
  }
  crypto::SecureBuffer out(static_cast<size_t>(s.out_size));
  strm.next_in = gzip.data() + data_at;
  strm.avail_in = static_cast<uInt>(gzip.size() - data_at);
  strm.next_out = out.data();
  strm.avail_out = static_cast<uInt>(out.size());
  const int ret = inflate(&strm, Z_NO_FLUSH);
  if (strm.avail_out == 0 && (ret == Z_OK || ret == Z_STREAM_END || ret == Z_BUF_ERROR)) {
    return out;
  }
  if (ret == Z_STREAM_END) return Status::Corruption(what + "a gzip member ends inside the span");
  if (ret == Z_OK || ret == Z_BUF_ERROR) {
    return Status::Corruption(what + "the deflate data ends before the span's " +
                              Num(s.out_size) + " bytes");
  }
  return Status::Corruption(what + "gzip: " + inflater.Message("inflate failed"));
}

}  // namespace lazycrypt::zindex
