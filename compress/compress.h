// zstd and gzip: one-shot zstd for chunks, streaming decompressors for layer blobs, a streaming
// zstd compressor for writing layers.
//
// Errors: malformed compressed input is Status::Corruption("zstd: <library text>") or
// Status::Corruption("gzip: <library text>"); a caller error (output buffer too small to compress
// into, Write after Close) is InvalidArgument / FailedPrecondition; an allocation failure inside a
// library is Internal.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "common/io.h"
#include "common/status.h"

// zstd's context types (zstd.h: typedef struct ZSTD_CCtx_s ZSTD_CCtx), so this header need not
// include zstd.h.
struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

namespace lazycrypt::compress {

namespace internal {
struct ZstdCCtxDeleter {
  void operator()(ZSTD_CCtx_s* cctx) const;
};
struct ZstdDCtxDeleter {
  void operator()(ZSTD_DCtx_s* dctx) const;
};
}  // namespace internal

// One-shot zstd with a reused context. Not thread-safe; use one per worker thread. Move-only.
class ZstdCompressor {
 public:
  explicit ZstdCompressor(int level = 3);

  // Largest frame Compress can produce for raw_size input bytes.
  static size_t Bound(size_t raw_size);

  // Writes one complete zstd frame (content size recorded in the frame header, no checksum: the
  // chunk is authenticated by GCM) into out and returns its length.
  // InvalidArgument if out is smaller than the frame (Bound(raw.size()) always suffices).
  Result<size_t> Compress(ByteSpan raw, MutableByteSpan out);

 private:
  std::unique_ptr<ZSTD_CCtx_s, internal::ZstdCCtxDeleter> cctx_;
  int level_;
};

// One-shot zstd decompression with a reused context. Not thread-safe; one per worker thread.
// Move-only.
class ZstdDecompressor {
 public:
  ZstdDecompressor();

  // Decompresses exactly one frame that must produce exactly out.size() bytes; Corruption
  // otherwise (also for trailing bytes after the frame, a skippable frame, or a frame that claims
  // a different content size). On error the contents of out are unspecified.
  Status DecompressExact(ByteSpan frame, MutableByteSpan out);

 private:
  std::unique_ptr<ZSTD_DCtx_s, internal::ZstdDCtxDeleter> dctx_;
};

enum class Compression { kNone, kGzip, kZstd };

// "none", "gzip", "zstd".
std::string_view CompressionName(Compression c);

// gzip: 1f 8b; zstd: 28 b5 2f fd; anything else (including too few bytes) is kNone.
Compression DetectCompression(ByteSpan first_bytes);

// Peeks at the first bytes of `in` and wraps it with the decompressor they call for (or passes it
// through unchanged for kNone). `in` is not owned and must outlive the result. Handles
// multi-member gzip and multi-frame zstd (concatenated streams are legal in layers). An empty
// input is an empty kNone stream.
Result<std::unique_ptr<InputStream>> NewDecompressingStream(InputStream& in);

// Like NewDecompressingStream, and also reports what was detected.
Result<std::unique_ptr<InputStream>> NewDecompressingStream(InputStream& in,
                                                            Compression* detected);

// Decoders for a known format. `in` is not owned and must outlive the result.
// The gzip reader accepts one or more concatenated gzip members (RFC 1952) and nothing else: an
// empty input, bytes after a member that do not start a new member, or a truncated member is
// Corruption. Each member's CRC-32 and length are verified by zlib.
std::unique_ptr<InputStream> NewGzipInputStream(InputStream& in);
// The zstd reader accepts one or more concatenated frames (skippable frames included); an empty
// input or a truncated frame is Corruption. Frame checksums, when present, are verified.
std::unique_ptr<InputStream> NewZstdInputStream(InputStream& in);

// Streaming zstd compressor writing to `out` (not owned, must outlive the result). Close() ends
// the frame and does NOT close `out`. threads > 1 uses zstd's multithreaded mode
// (ZSTD_c_nbWorkers). The frame does not record its content size (unknown in advance).
// Not thread-safe.
std::unique_ptr<OutputStream> NewZstdOutputStream(OutputStream& out, int level = 3,
                                                  int threads = 1);

// Streaming gzip compressor (one member) writing to `out` (not owned). Close() writes the gzip
// trailer and does NOT close `out`. Mainly for tests and tools that must produce tar+gzip.
std::unique_ptr<OutputStream> NewGzipOutputStream(OutputStream& out, int level = 6);

}  // namespace lazycrypt::compress
