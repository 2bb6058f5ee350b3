#include "compress/compress.h"

#include <isa-l/igzip_lib.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace lazycrypt::compress {

namespace internal {
void ZstdCCtxDeleter::operator()(ZSTD_CCtx_s* cctx) const { ZSTD_freeCCtx(cctx); }
void ZstdDCtxDeleter::operator()(ZSTD_DCtx_s* dctx) const { ZSTD_freeDCtx(dctx); }
}  // namespace internal

namespace {

constexpr size_t kGzipInBufferSize = 64 * 1024;
constexpr size_t kGzipOutBufferSize = 64 * 1024;
constexpr uint8_t kGzipMagic[] = {0x1f, 0x8b};
constexpr uint8_t kZstdMagic[] = {0x28, 0xb5, 0x2f, 0xfd};

using CCtxPtr = std::unique_ptr<ZSTD_CCtx, internal::ZstdCCtxDeleter>;
using DCtxPtr = std::unique_ptr<ZSTD_DCtx, internal::ZstdDCtxDeleter>;

std::string ZstdError(size_t code) { return std::string("zstd: ") + ZSTD_getErrorName(code); }

bool IsSkippableMagic(ByteSpan b) {
  if (b.size() < 4) return false;
  uint32_t magic = uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 |
                   uint32_t{b[3]} << 24;
  return (magic & 0xFFFFFFF0u) == ZSTD_MAGIC_SKIPPABLE_START;
}

// z_stream must not move once initialised (zlib's state points back at it), so it lives on the
// heap; the deleter ends it with deflateEnd.
struct DeflateDeleter {
  void operator()(z_stream* zs) const {
    deflateEnd(zs);
    delete zs;
  }
};
using DeflatePtr = std::unique_ptr<z_stream, DeflateDeleter>;

uInt ClampToUInt(size_t n) { return static_cast<uInt>(std::min<size_t>(n, UINT_MAX)); }

std::string GzipError(const z_stream& zs, int ret) {
  std::string msg = "gzip: ";
  if (zs.msg != nullptr) {
    msg += zs.msg;
  } else {
    msg += zError(ret);
  }
  return msg;
}

// Replays bytes already taken from `in` (while detecting the compression), then reads `in`.
class PrefixedInputStream final : public InputStream {
 public:
  PrefixedInputStream(std::vector<uint8_t> prefix, InputStream& in)
      : prefix_(std::move(prefix)), in_(in) {}

  Result<size_t> Read(MutableByteSpan out) override {
    if (out.empty()) return size_t{0};
    if (pos_ < prefix_.size()) {
      size_t n = std::min(out.size(), prefix_.size() - pos_);
      std::memcpy(out.data(), prefix_.data() + pos_, n);
      pos_ += n;
      return n;
    }
    return in_.Read(out);
  }

 private:
  std::vector<uint8_t> prefix_;
  size_t pos_ = 0;
  InputStream& in_;
};

// A stream whose every Read fails with the same status (a factory that cannot return a Status
// reports its failure this way).
class FailedInputStream final : public InputStream {
 public:
  explicit FailedInputStream(Status s) : status_(std::move(s)) {}
  Result<size_t> Read(MutableByteSpan) override { return status_; }

 private:
  Status status_;
};

class FailedOutputStream final : public OutputStream {
 public:
  explicit FailedOutputStream(Status s) : status_(std::move(s)) {}
  Status Write(ByteSpan) override { return status_; }
  Status Close() override { return status_; }

 private:
  Status status_;
};

// gzip members (RFC 1952) inflated with ISA-L's igzip (several times zlib's speed, the larger
// share of converting a gzip layer); igzip parses each member's header and checks its CRC-32 and
// length. The inflate state is large (~80 KiB), so it lives on the heap.
std::string IsalError(int ret) {
  switch (ret) {
    case ISAL_INVALID_BLOCK: return "gzip: invalid deflate block";
    case ISAL_INVALID_SYMBOL: return "gzip: invalid code in deflate data";
    case ISAL_INVALID_LOOKBACK: return "gzip: invalid distance too far back";
    case ISAL_INVALID_WRAPPER: return "gzip: incorrect header check";
    case ISAL_UNSUPPORTED_METHOD: return "gzip: unknown compression method";
    case ISAL_INCORRECT_CHECKSUM: return "gzip: incorrect data check";
    case ISAL_NEED_DICT: return "gzip: stream needs a preset dictionary";
    default: return "gzip: inflate error " + std::to_string(ret);
  }
}

class GzipInputStream final : public InputStream {
 public:
  GzipInputStream(InputStream& src, std::unique_ptr<InputStream> owned)
      : owned_(std::move(owned)), src_(src), state_(std::make_unique<inflate_state>()),
        in_buf_(kGzipInBufferSize) {
    isal_inflate_init(state_.get());
    state_->crc_flag = ISAL_GZIP;
  }

  Result<size_t> Read(MutableByteSpan out) override {
    if (!error_.ok()) return error_;
    if (out.empty() || done_) return size_t{0};
    for (;;) {
      if (state_->block_state == ISAL_BLOCK_FINISH) {
        // A member ended; what follows it (if anything) is the next member.
        ++members_;
        in_member_ = false;
        uint8_t* next_in = state_->next_in;
        const uint32_t avail_in = state_->avail_in;
        isal_inflate_reset(state_.get());
        state_->crc_flag = ISAL_GZIP;
        state_->next_in = next_in;
        state_->avail_in = avail_in;
      }
      if (state_->avail_in == 0) {
        LC_ASSIGN_OR_RETURN(size_t n, src_.Read(in_buf_));
        if (n == 0) {
          if (in_member_) return Fail(Status::Corruption("gzip: truncated stream"));
          if (members_ == 0) return Fail(Status::Corruption("gzip: empty stream"));
          done_ = true;
          return size_t{0};
        }
        state_->next_in = in_buf_.data();
        state_->avail_in = static_cast<uint32_t>(n);
      }
      in_member_ = true;
      const uint32_t avail_in_before = state_->avail_in;
      state_->next_out = out.data();
      state_->avail_out = static_cast<uint32_t>(std::min<size_t>(out.size(), UINT32_MAX));
      const uint32_t avail_out_before = state_->avail_out;
      int ret = isal_inflate(state_.get());
      if (ret < 0 || ret == ISAL_NEED_DICT) return Fail(Status::Corruption(IsalError(ret)));
      const size_t produced = avail_out_before - state_->avail_out;
      if (produced > 0) return produced;
      if (state_->avail_in == avail_in_before && state_->avail_in > 0 &&
          state_->block_state != ISAL_BLOCK_FINISH) {
        return Fail(Status::Internal("gzip: inflate made no progress"));
      }
    }
  }

 private:
  Status Fail(Status s) {
    error_ = s;
    return s;
  }

  std::unique_ptr<InputStream> owned_;  // may be null; src_ refers to it when set
  InputStream& src_;
  std::unique_ptr<inflate_state> state_;
  std::vector<uint8_t> in_buf_;
  bool in_member_ = false;
  bool done_ = false;
  uint64_t members_ = 0;
  Status error_;
};

class ZstdInputStream final : public InputStream {
 public:
  ZstdInputStream(InputStream& src, std::unique_ptr<InputStream> owned, DCtxPtr dctx)
      : owned_(std::move(owned)), src_(src), dctx_(std::move(dctx)),
        in_buf_(ZSTD_DStreamInSize()) {}

  Result<size_t> Read(MutableByteSpan out) override {
    if (!error_.ok()) return error_;
    if (out.empty() || done_) return size_t{0};
    for (;;) {
      if (in_.pos == in_.size) {
        LC_ASSIGN_OR_RETURN(size_t n, src_.Read(in_buf_));
        if (n == 0) {
          if (in_frame_) return Fail(Status::Corruption("zstd: truncated stream"));
          if (!saw_input_) return Fail(Status::Corruption("zstd: empty stream"));
          done_ = true;
          return size_t{0};
        }
        saw_input_ = true;
        in_ = ZSTD_inBuffer{in_buf_.data(), n, 0};
      }
      ZSTD_outBuffer o{out.data(), out.size(), 0};
      size_t ret = ZSTD_decompressStream(dctx_.get(), &o, &in_);
      if (ZSTD_isError(ret)) {
        if (ZSTD_getErrorCode(ret) == ZSTD_error_memory_allocation) {
          return Fail(Status::Internal(ZstdError(ret)));
        }
        return Fail(Status::Corruption(ZstdError(ret)));
      }
      // 0: a frame has been completely decoded and flushed; the next call starts a new one.
      in_frame_ = ret != 0;
      if (o.pos > 0) return o.pos;
    }
  }

 private:
  Status Fail(Status s) {
    error_ = s;
    return s;
  }

  std::unique_ptr<InputStream> owned_;
  InputStream& src_;
  DCtxPtr dctx_;
  std::vector<uint8_t> in_buf_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  bool in_frame_ = false;
  bool saw_input_ = false;
  bool done_ = false;
  Status error_;
};

class ZstdOutputStream final : public OutputStream {
 public:
  ZstdOutputStream(OutputStream& out, CCtxPtr cctx)
      : out_(out), cctx_(std::move(cctx)), buf_(ZSTD_CStreamOutSize()) {}

  Status Write(ByteSpan data) override {
    if (!error_.ok()) return error_;
    if (closed_) return Status::FailedPrecondition("zstd: Write after Close");
    ZSTD_inBuffer in{data.data(), data.size(), 0};
    while (in.pos < in.size) {
      LC_RETURN_IF_ERROR(Step(&in, ZSTD_e_continue, nullptr));
    }
    return Status::Ok();
  }

  Status Close() override {
    if (!error_.ok()) return error_;
    if (closed_) return Status::Ok();
    ZSTD_inBuffer in{nullptr, 0, 0};
    size_t remaining = 1;
    while (remaining != 0) {
      LC_RETURN_IF_ERROR(Step(&in, ZSTD_e_end, &remaining));
    }
    closed_ = true;
    return Status::Ok();
  }

 private:
  Status Step(ZSTD_inBuffer* in, ZSTD_EndDirective mode, size_t* remaining) {
    ZSTD_outBuffer o{buf_.data(), buf_.size(), 0};
    size_t ret = ZSTD_compressStream2(cctx_.get(), &o, in, mode);
    if (ZSTD_isError(ret)) {
      error_ = Status::Internal(ZstdError(ret));
      return error_;
    }
    if (remaining != nullptr) *remaining = ret;
    if (o.pos > 0) {
      Status s = out_.Write(ByteSpan(buf_.data(), o.pos));
      if (!s.ok()) {
        error_ = s;
        return s;
      }
    }
    return Status::Ok();
  }

  OutputStream& out_;
  CCtxPtr cctx_;
  std::vector<uint8_t> buf_;
  bool closed_ = false;
  Status error_;
};

class GzipOutputStream final : public OutputStream {
 public:
  GzipOutputStream(OutputStream& out, DeflatePtr zs)
      : out_(out), zs_(std::move(zs)), buf_(kGzipOutBufferSize) {}

  Status Write(ByteSpan data) override {
    if (!error_.ok()) return error_;
    if (closed_) return Status::FailedPrecondition("gzip: Write after Close");
    size_t pos = 0;
    while (pos < data.size()) {
      uInt n = ClampToUInt(data.size() - pos);
      zs_->next_in = const_cast<Bytef*>(data.data() + pos);  // zlib's API is not const-correct
      zs_->avail_in = n;
      while (zs_->avail_in > 0) {
        LC_RETURN_IF_ERROR(Step(Z_NO_FLUSH, nullptr));
      }
      pos += n;
    }
    return Status::Ok();
  }

  Status Close() override {
    if (!error_.ok()) return error_;
    if (closed_) return Status::Ok();
    zs_->next_in = nullptr;
    zs_->avail_in = 0;
    bool finished = false;
    while (!finished) {
      LC_RETURN_IF_ERROR(Step(Z_FINISH, &finished));
    }
    closed_ = true;
    return Status::Ok();
  }

 private:
  Status Step(int flush, bool* finished) {
    zs_->next_out = buf_.data();
    zs_->avail_out = static_cast<uInt>(buf_.size());
    int ret = deflate(zs_.get(), flush);
    if (ret != Z_OK && ret != Z_STREAM_END && ret != Z_BUF_ERROR) {
      error_ = Status::Internal(GzipError(*zs_, ret));
      return error_;
    }
    if (finished != nullptr) *finished = ret == Z_STREAM_END;
    size_t produced = buf_.size() - zs_->avail_out;
    if (produced > 0) {
      Status s = out_.Write(ByteSpan(buf_.data(), produced));
      if (!s.ok()) {
        error_ = s;
        return s;
      }
    }
    return Status::Ok();
  }

  OutputStream& out_;
  DeflatePtr zs_;
  std::vector<uint8_t> buf_;
  bool closed_ = false;
  Status error_;
};

std::unique_ptr<InputStream> MakeGzip(InputStream& src, std::unique_ptr<InputStream> owned) {
  return std::make_unique<GzipInputStream>(src, std::move(owned));
}

std::unique_ptr<InputStream> MakeZstd(InputStream& src, std::unique_ptr<InputStream> owned) {
  DCtxPtr dctx(ZSTD_createDCtx());
  if (!dctx) {
    return std::make_unique<FailedInputStream>(
        Status::Internal("zstd: cannot allocate a decompression context"));
  }
  return std::make_unique<ZstdInputStream>(src, std::move(owned), std::move(dctx));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// One-shot zstd

ZstdCompressor::ZstdCompressor(int level) : cctx_(ZSTD_createCCtx()), level_(level) {
  if (cctx_) {
    // Errors (an out-of-range level is clamped by zstd, not rejected) surface in Compress.
    ZSTD_CCtx_setParameter(cctx_.get(), ZSTD_c_compressionLevel, level_);
    ZSTD_CCtx_setParameter(cctx_.get(), ZSTD_c_contentSizeFlag, 1);
    ZSTD_CCtx_setParameter(cctx_.get(), ZSTD_c_checksumFlag, 0);
  }
}

size_t ZstdCompressor::Bound(size_t raw_size) { return ZSTD_compressBound(raw_size); }

Result<size_t> ZstdCompressor::Compress(ByteSpan raw, MutableByteSpan out) {
  if (!cctx_) return Status::Internal("zstd: cannot allocate a compression context");
  size_t n = ZSTD_compress2(cctx_.get(), out.data(), out.size(), raw.data(), raw.size());
  if (ZSTD_isError(n)) {
    if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) {
      return Status::InvalidArgument("zstd: output buffer of " + std::to_string(out.size()) +
                                     " bytes is too small for " + std::to_string(raw.size()) +
                                     " input bytes (use ZstdCompressor::Bound)");
    }
    return Status::Internal(ZstdError(n));
  }
  return n;
}

ZstdDecompressor::ZstdDecompressor() : dctx_(ZSTD_createDCtx()) {}

Status ZstdDecompressor::DecompressExact(ByteSpan frame, MutableByteSpan out) {
  if (!dctx_) return Status::Internal("zstd: cannot allocate a decompression context");
  if (IsSkippableMagic(frame)) {
    return Status::Corruption("zstd: skippable frame where a data frame was expected");
  }
  size_t csize = ZSTD_findFrameCompressedSize(frame.data(), frame.size());
  if (ZSTD_isError(csize)) return Status::Corruption(ZstdError(csize));
  if (csize != frame.size()) {
    return Status::Corruption("zstd: " + std::to_string(frame.size() - csize) +
                              " trailing bytes after the frame");
  }
  unsigned long long claimed = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (claimed == ZSTD_CONTENTSIZE_ERROR) return Status::Corruption("zstd: invalid frame header");
  if (claimed != ZSTD_CONTENTSIZE_UNKNOWN && claimed != out.size()) {
    return Status::Corruption("zstd: frame claims content size " + std::to_string(claimed) +
                              ", expected " + std::to_string(out.size()));
  }
  size_t n = ZSTD_decompressDCtx(dctx_.get(), out.data(), out.size(), frame.data(), frame.size());
  if (ZSTD_isError(n)) {
    if (ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation) {
      return Status::Internal(ZstdError(n));
    }
    return Status::Corruption(ZstdError(n));
  }
  if (n != out.size()) {
    return Status::Corruption("zstd: frame decompressed to " + std::to_string(n) +
                              " bytes, expected " + std::to_string(out.size()));
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Detection and streams

std::string_view CompressionName(Compression c) {
  switch (c) {
    case Compression::kNone:
      return "none";
    case Compression::kGzip:
      return "gzip";
    case Compression::kZstd:
      return "zstd";
  }
  return "unknown";
}

Compression DetectCompression(ByteSpan first_bytes) {
  if (first_bytes.size() >= sizeof(kGzipMagic) &&
      std::memcmp(first_bytes.data(), kGzipMagic, sizeof(kGzipMagic)) == 0) {
    return Compression::kGzip;
  }
  if (first_bytes.size() >= sizeof(kZstdMagic) &&
      std::memcmp(first_bytes.data(), kZstdMagic, sizeof(kZstdMagic)) == 0) {
    return Compression::kZstd;
  }
  return Compression::kNone;
}

Result<std::unique_ptr<InputStream>> NewDecompressingStream(InputStream& in) {
  return NewDecompressingStream(in, nullptr);
}

Result<std::unique_ptr<InputStream>> NewDecompressingStream(InputStream& in,
                                                            Compression* detected) {
  std::vector<uint8_t> prefix(sizeof(kZstdMagic));
  size_t have = 0;
  while (have < prefix.size()) {
    LC_ASSIGN_OR_RETURN(size_t n, in.Read(MutableByteSpan(prefix).subspan(have)));
    if (n == 0) break;
    have += n;
  }
  prefix.resize(have);
  Compression c = DetectCompression(prefix);
  if (detected != nullptr) *detected = c;
  auto prefixed = std::make_unique<PrefixedInputStream>(std::move(prefix), in);
  InputStream& src = *prefixed;
  switch (c) {
    case Compression::kGzip:
      return MakeGzip(src, std::move(prefixed));
    case Compression::kZstd:
      return MakeZstd(src, std::move(prefixed));
    case Compression::kNone:
      break;
  }
  return std::unique_ptr<InputStream>(std::move(prefixed));
}

std::unique_ptr<InputStream> NewGzipInputStream(InputStream& in) { return MakeGzip(in, nullptr); }

std::unique_ptr<InputStream> NewZstdInputStream(InputStream& in) { return MakeZstd(in, nullptr); }

std::unique_ptr<OutputStream> NewZstdOutputStream(OutputStream& out, int level, int threads) {
  CCtxPtr cctx(ZSTD_createCCtx());
  if (!cctx) {
    return std::make_unique<FailedOutputStream>(
        Status::Internal("zstd: cannot allocate a compression context"));
  }
  size_t r = ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  if (ZSTD_isError(r)) {
    return std::make_unique<FailedOutputStream>(
        Status::InvalidArgument("zstd: compression level " + std::to_string(level) + ": " +
                                ZSTD_getErrorName(r)));
  }
  if (threads > 1) {
    r = ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_nbWorkers, threads);
    if (ZSTD_isError(r)) {
      return std::make_unique<FailedOutputStream>(
          Status::Unsupported("zstd: " + std::to_string(threads) + " worker threads: " +
                              ZSTD_getErrorName(r)));
    }
  }
  return std::make_unique<ZstdOutputStream>(out, std::move(cctx));
}

std::unique_ptr<OutputStream> NewGzipOutputStream(OutputStream& out, int level) {
  DeflatePtr zs(new z_stream{});
  int ret = deflateInit2(zs.get(), level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  if (ret != Z_OK) {
    Status s = ret == Z_STREAM_ERROR
                   ? Status::InvalidArgument("gzip: compression level " + std::to_string(level) +
                                             " is out of range")
                   : Status::Internal(GzipError(*zs, ret));
    delete zs.release();  // deflateEnd must not run on a stream whose init failed
    return std::make_unique<FailedOutputStream>(std::move(s));
  }
  return std::make_unique<GzipOutputStream>(out, std::move(zs));
}

}  // namespace lazycrypt::compress
