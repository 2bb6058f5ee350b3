#include "compress/compress.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <zstd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "common/file_io.h"

namespace lazycrypt::compress {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// `printf 'hello, lazycrypt\n' | zstd -q -c` (zstd 1.5.4: content size and checksum recorded).
const std::vector<uint8_t> kZstdCliHello = {
    0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58, 0x89, 0x00, 0x00, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x2c,
    0x20, 0x6c, 0x61, 0x7a, 0x79, 0x63, 0x72, 0x79, 0x70, 0x74, 0x0a, 0x10, 0x9b, 0x04, 0x2f};
// The same with --no-check.
const std::vector<uint8_t> kZstdCliHelloNoCheck = {
    0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58, 0x89, 0x00, 0x00, 0x68, 0x65, 0x6c, 0x6c,
    0x6f, 0x2c, 0x20, 0x6c, 0x61, 0x7a, 0x79, 0x63, 0x72, 0x79, 0x70, 0x74, 0x0a};
// `printf 'hello, lazycrypt\n' | gzip -n -c` (gzip 1.12).
const std::vector<uint8_t> kGzipCliHello = {
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xcb, 0x48, 0xcd,
    0xc9, 0xc9, 0xd7, 0x51, 0xc8, 0x49, 0xac, 0xaa, 0x4c, 0x2e, 0xaa, 0x2c, 0x28,
    0xe1, 0x02, 0x00, 0x32, 0x28, 0x54, 0x2c, 0x11, 0x00, 0x00, 0x00};
constexpr std::string_view kHello = "hello, lazycrypt\n";

std::vector<uint8_t> Concat(std::initializer_list<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::vector<uint8_t> StringBytes(std::string_view s) { return {s.begin(), s.end()}; }

// Half random (incompressible), half repetitive text: exercises both literal and match paths.
std::vector<uint8_t> TestData(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    if ((i / 4096) % 2 == 0) {
      out[i] = static_cast<uint8_t>(rng());
    } else {
      out[i] = static_cast<uint8_t>("lazycrypt layer "[i % 16]);
    }
  }
  return out;
}

// Returns at most `max_piece` bytes per Read, to exercise short reads from the source.
using TrickleInputStream = MemoryInputStream;

class FailingInputStream final : public InputStream {
 public:
  Result<size_t> Read(MutableByteSpan) override { return Status::IoError("disk on fire"); }
};

class FailingOutputStream final : public OutputStream {
 public:
  Status Write(ByteSpan) override { return Status::IoError("pipe closed"); }
  Status Close() override { return Status::Ok(); }
};

// Reads `in` to the end in pieces of `piece` bytes.
Result<std::vector<uint8_t>> ReadAll(InputStream& in, size_t piece = 65536) {
  std::vector<uint8_t> out;
  std::vector<uint8_t> buf(piece);
  for (;;) {
    LC_ASSIGN_OR_RETURN(size_t n, in.Read(buf));
    if (n == 0) return out;
    if (n > piece) return Status::Internal("Read returned more than asked");
    out.insert(out.end(), buf.begin(), buf.begin() + n);
  }
}

Result<std::vector<uint8_t>> Decompress(ByteSpan compressed, size_t piece = 65536,
                                        size_t source_piece = SIZE_MAX) {
  TrickleInputStream src(compressed, source_piece);
  LC_ASSIGN_OR_RETURN(auto stream, NewDecompressingStream(src));
  return ReadAll(*stream, piece);
}

std::vector<uint8_t> ZstdStream(ByteSpan raw, size_t piece, int level = 3, int threads = 1) {
  MemoryOutputStream mem;
  auto z = NewZstdOutputStream(mem, level, threads);
  for (size_t pos = 0; pos < raw.size(); pos += piece) {
    EXPECT_TRUE(z->Write(raw.subspan(pos, std::min(piece, raw.size() - pos))).ok());
  }
  EXPECT_TRUE(z->Close().ok());
  EXPECT_FALSE(mem.closed()) << "Close must not close the underlying stream";
  return mem.Take();
}

std::vector<uint8_t> GzipStream(ByteSpan raw, size_t piece, int level = 6) {
  MemoryOutputStream mem;
  auto z = NewGzipOutputStream(mem, level);
  for (size_t pos = 0; pos < raw.size(); pos += piece) {
    EXPECT_TRUE(z->Write(raw.subspan(pos, std::min(piece, raw.size() - pos))).ok());
  }
  EXPECT_TRUE(z->Close().ok());
  EXPECT_FALSE(mem.closed());
  return mem.Take();
}

// ---------------------------------------------------------------------------------------------

TEST(DetectCompression, Magics) {
  EXPECT_EQ(DetectCompression(kGzipCliHello), Compression::kGzip);
  EXPECT_EQ(DetectCompression(kZstdCliHello), Compression::kZstd);
  const uint8_t gzip2[] = {0x1f, 0x8b};
  EXPECT_EQ(DetectCompression(gzip2), Compression::kGzip);
  const uint8_t zstd3[] = {0x28, 0xb5, 0x2f};
  EXPECT_EQ(DetectCompression(zstd3), Compression::kNone);
  const uint8_t almost_zstd[] = {0x28, 0xb5, 0x2f, 0xfe};
  EXPECT_EQ(DetectCompression(almost_zstd), Compression::kNone);
  const uint8_t almost_gzip[] = {0x1f, 0x8c, 0x08};
  EXPECT_EQ(DetectCompression(almost_gzip), Compression::kNone);
  EXPECT_EQ(DetectCompression(AsBytes("ustar")), Compression::kNone);
  EXPECT_EQ(DetectCompression({}), Compression::kNone);
  EXPECT_EQ(CompressionName(Compression::kZstd), "zstd");
  EXPECT_EQ(CompressionName(Compression::kGzip), "gzip");
  EXPECT_EQ(CompressionName(Compression::kNone), "none");
}

// --- one-shot ---------------------------------------------------------------------------------

TEST(ZstdOneShot, DecompressesCliFrames) {
  ZstdDecompressor d;
  std::vector<uint8_t> out(kHello.size());
  ASSERT_TRUE(d.DecompressExact(kZstdCliHello, out).ok());
  EXPECT_EQ(AsStringView(out), kHello);
  std::fill(out.begin(), out.end(), 0);
  ASSERT_TRUE(d.DecompressExact(kZstdCliHelloNoCheck, out).ok());
  EXPECT_EQ(AsStringView(out), kHello);
}

TEST(ZstdOneShot, RoundTripsManySizesWithOneContext) {
  ZstdCompressor c(3);
  ZstdDecompressor d;
  for (size_t n : {size_t{0}, size_t{1}, size_t{17}, size_t{4096}, size_t{65537},
                   size_t{1} << 20, (size_t{1} << 20) + 3}) {
    SCOPED_TRACE(n);
    auto raw = TestData(n, static_cast<uint32_t>(n));
    std::vector<uint8_t> frame(ZstdCompressor::Bound(n));
    auto len = c.Compress(raw, frame);
    ASSERT_TRUE(len.ok()) << len.status().ToString();
    ASSERT_LE(*len, frame.size());
    frame.resize(*len);
    // The frame records its content size.
    EXPECT_EQ(ZSTD_getFrameContentSize(frame.data(), frame.size()), n);
    EXPECT_EQ(ZSTD_findFrameCompressedSize(frame.data(), frame.size()), frame.size());
    std::vector<uint8_t> out(n, 0xAA);
    Status s = d.DecompressExact(frame, out);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(out, raw);
  }
}

TEST(ZstdOneShot, CompressesRepetitiveData) {
  ZstdCompressor c(19);
  std::vector<uint8_t> raw(1 << 20, 'x');
  std::vector<uint8_t> frame(ZstdCompressor::Bound(raw.size()));
  auto len = c.Compress(raw, frame);
  ASSERT_TRUE(len.ok());
  EXPECT_LT(*len, 1000u);
}

TEST(ZstdOneShot, OutputTooSmallIsInvalidArgument) {
  ZstdCompressor c;
  auto raw = TestData(10000, 1);
  std::vector<uint8_t> frame(100);
  auto len = c.Compress(raw, frame);
  ASSERT_FALSE(len.ok());
  EXPECT_EQ(len.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(len.status().message(), HasSubstr("too small"));
}

class ZstdExactTest : public ::testing::Test {
 protected:
  void SetUp() override {
    raw_ = TestData(20000, 7);
    frame_.resize(ZstdCompressor::Bound(raw_.size()));
    auto len = ZstdCompressor().Compress(raw_, frame_);
    ASSERT_TRUE(len.ok());
    frame_.resize(*len);
  }
  Status Decompress(ByteSpan frame, size_t out_size) {
    std::vector<uint8_t> out(out_size);
    return d_.DecompressExact(frame, out);
  }
  std::vector<uint8_t> raw_;
  std::vector<uint8_t> frame_;
  ZstdDecompressor d_;
};

TEST_F(ZstdExactTest, RejectsWrongExpectedSize) {
  for (size_t n : {raw_.size() - 1, raw_.size() + 1, size_t{0}}) {
    Status s = Decompress(frame_, n);
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << n;
    EXPECT_THAT(s.message(), HasSubstr("claims content size 20000"));
  }
  EXPECT_TRUE(Decompress(frame_, raw_.size()).ok());
}

TEST_F(ZstdExactTest, RejectsWrongSizeWithoutContentSizeInHeader) {
  // A frame that does not record its content size (streaming output) is checked by decoding.
  auto frame = ZstdStream(raw_, 1000);
  ASSERT_EQ(ZSTD_getFrameContentSize(frame.data(), frame.size()), ZSTD_CONTENTSIZE_UNKNOWN);
  EXPECT_TRUE(Decompress(frame, raw_.size()).ok());
  Status smaller = Decompress(frame, raw_.size() - 1);
  EXPECT_EQ(smaller.code(), StatusCode::kCorruption);
  EXPECT_THAT(smaller.message(), StartsWith("zstd: "));
  Status larger = Decompress(frame, raw_.size() + 1);
  EXPECT_EQ(larger.code(), StatusCode::kCorruption);
  EXPECT_THAT(larger.message(), HasSubstr("decompressed to 20000 bytes, expected 20001"));
}

TEST_F(ZstdExactTest, RejectsTrailingBytes) {
  auto with_trailer = Concat({frame_, {0}});
  Status s = Decompress(with_trailer, raw_.size());
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("1 trailing bytes"));
  // A second complete frame is trailing bytes too.
  auto two = Concat({frame_, frame_});
  EXPECT_EQ(Decompress(two, raw_.size()).code(), StatusCode::kCorruption);
  EXPECT_EQ(Decompress(two, 2 * raw_.size()).code(), StatusCode::kCorruption);
}

TEST_F(ZstdExactTest, RejectsEveryTruncation) {
  for (size_t len = 0; len < frame_.size(); ++len) {
    Status s = Decompress(ByteSpan(frame_).first(len), raw_.size());
    ASSERT_EQ(s.code(), StatusCode::kCorruption) << "length " << len;
    ASSERT_THAT(s.message(), StartsWith("zstd: "));
  }
}

TEST_F(ZstdExactTest, RejectsSkippableFrame) {
  std::vector<uint8_t> skippable = {0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4};
  Status s = Decompress(skippable, 0);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), HasSubstr("skippable"));
}

TEST_F(ZstdExactTest, RejectsGarbage) {
  Status s = Decompress(AsBytes("this is not zstd at all"), 10);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_THAT(s.message(), StartsWith("zstd: "));
}

TEST_F(ZstdExactTest, BitFlipsInHeaderRejectedAndNeverOverrun) {
  // The frame carries no checksum (GCM authenticates chunks), so a flip inside a literal may
  // decode to other bytes of the right length. Flips in the magic and frame header must fail,
  // and no flip may ever yield a success with the wrong length or crash.
  const size_t header_len = 6;  // magic (4) + descriptor (1) + first byte of content size
  for (size_t i = 0; i < frame_.size(); ++i) {
    for (int bit : {0, 3, 7}) {
      auto bad = frame_;
      bad[i] ^= static_cast<uint8_t>(1u << bit);
      std::vector<uint8_t> out(raw_.size());
      Status s = d_.DecompressExact(bad, out);
      if (i < header_len) {
        EXPECT_FALSE(s.ok()) << "flip at byte " << i << " bit " << bit;
      }
      if (!s.ok()) {
        ASSERT_EQ(s.code(), StatusCode::kCorruption);
      }
    }
  }
}

// --- streaming zstd ---------------------------------------------------------------------------

TEST(ZstdStream, RoundTripsAtOddPieceSizes) {
  auto raw = TestData((1 << 20) + 12345, 3);
  for (size_t write_piece : {size_t{1} << 20, size_t{65537}, size_t{4093}, size_t{7}}) {
    auto compressed = write_piece == 7 ? ZstdStream(ByteSpan(raw).first(50000), 7)
                                       : ZstdStream(raw, write_piece);
    size_t expect_len = write_piece == 7 ? 50000 : raw.size();
    for (size_t read_piece : {size_t{1}, size_t{13}, size_t{4096}, size_t{1} << 20}) {
      if (read_piece == 1 && expect_len > 100000) continue;  // keep it quick
      for (size_t source_piece : {size_t{3}, SIZE_MAX}) {
        SCOPED_TRACE(testing::Message() << write_piece << "/" << read_piece << "/"
                                        << source_piece);
        auto out = Decompress(compressed, read_piece, source_piece);
        ASSERT_TRUE(out.ok()) << out.status().ToString();
        ASSERT_EQ(out->size(), expect_len);
        EXPECT_TRUE(std::equal(out->begin(), out->end(), raw.begin()));
      }
    }
  }
}

TEST(ZstdStream, MultithreadedOutputRoundTrips) {
  auto raw = TestData(3 << 20, 11);
  auto compressed = ZstdStream(raw, 100003, 3, 2);
  auto out = Decompress(compressed);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, raw);
}

TEST(ZstdStream, EmptyInputMakesAValidEmptyFrame) {
  auto compressed = ZstdStream({}, 1);
  ASSERT_FALSE(compressed.empty());
  auto out = Decompress(compressed);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_TRUE(out->empty());
}

TEST(ZstdStream, ConcatenatedFramesAndSkippableFrames) {
  auto a = TestData(70000, 1);
  auto b = TestData(3, 2);
  std::vector<uint8_t> skippable = {0x5f, 0x2a, 0x4d, 0x18, 2, 0, 0, 0, 0xde, 0xad};
  auto stream = Concat({ZstdStream(a, 999), skippable, kZstdCliHello, ZstdStream({}, 1),
                        ZstdStream(b, 1)});
  for (size_t source_piece : {size_t{1}, size_t{5}, SIZE_MAX}) {
    auto out = Decompress(stream, 4096, source_piece);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_EQ(*out, Concat({a, StringBytes(kHello), b}));
  }
}

TEST(ZstdStream, RejectsEveryTruncation) {
  auto raw = TestData(30000, 5);
  auto compressed = Concat({ZstdStream(raw, 30000), kZstdCliHello});
  // Keep 4 bytes so that detection still sees zstd; shorter prefixes are tested with the
  // explicit zstd reader.
  for (size_t len = 0; len < compressed.size(); ++len) {
    if (len == ZstdStream(raw, 30000).size()) continue;  // a clean frame boundary
    MemoryInputStream src(ByteSpan(compressed).first(len));
    auto z = NewZstdInputStream(src);
    auto out = ReadAll(*z);
    ASSERT_FALSE(out.ok()) << "length " << len;
    ASSERT_EQ(out.status().code(), StatusCode::kCorruption);
    ASSERT_THAT(out.status().message(), StartsWith("zstd: "));
  }
}

TEST(ZstdStream, EmptyInputIsCorruptionForExplicitReader) {
  MemoryInputStream src({});
  auto z = NewZstdInputStream(src);
  auto out = ReadAll(*z);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message(), "zstd: empty stream");
}

TEST(ZstdStream, RejectsEveryBitFlipWhenChecksummed) {
  // zstd's CLI writes a content checksum; the streaming reader must verify it, so a flip in the
  // magic, the block headers, the data or the checksum must fail. Two header fields are not
  // protected by the format: the unused bit 4 of the frame header descriptor (byte 4) and the
  // window descriptor (byte 5); a flip there may be accepted, but then only with the right bytes.
  for (size_t i = 0; i < kZstdCliHello.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto bad = kZstdCliHello;
      bad[i] ^= static_cast<uint8_t>(1u << bit);
      MemoryInputStream src(bad);
      auto z = NewZstdInputStream(src);
      auto out = ReadAll(*z);
      bool unprotected = (i == 4 && bit == 4) || i == 5;
      if (out.ok()) {
        EXPECT_TRUE(unprotected) << "flip at byte " << i << " bit " << bit << " accepted";
        EXPECT_EQ(AsStringView(*out), kHello) << "flip at byte " << i << " bit " << bit;
      } else {
        EXPECT_EQ(out.status().code(), StatusCode::kCorruption);
        EXPECT_THAT(out.status().message(), StartsWith("zstd: "));
      }
    }
  }
}

TEST(ZstdStream, RejectsTrailingGarbage) {
  auto stream = Concat({kZstdCliHello, StringBytes("garbage!")});
  auto out = Decompress(stream);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(out.status().message(), StartsWith("zstd: "));
  auto zeros = Concat({kZstdCliHello, std::vector<uint8_t>(512, 0)});
  EXPECT_FALSE(Decompress(zeros).ok());
}

TEST(ZstdStream, ErrorIsSticky) {
  auto stream = Concat({kZstdCliHello, StringBytes("garbage!")});
  MemoryInputStream src(stream);
  auto z = NewZstdInputStream(src);
  std::vector<uint8_t> buf(4096);
  Result<size_t> r = size_t{0};
  do {
    r = z->Read(buf);
  } while (r.ok() && *r > 0);
  ASSERT_FALSE(r.ok());
  auto again = z->Read(buf);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status(), r.status());
}

TEST(ZstdStream, WriteAfterCloseFails) {
  MemoryOutputStream mem;
  auto z = NewZstdOutputStream(mem);
  ASSERT_TRUE(z->Write(AsBytes("abc")).ok());
  ASSERT_TRUE(z->Close().ok());
  EXPECT_EQ(z->Write(AsBytes("d")).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(z->Close().ok());  // idempotent
  auto out = Decompress(mem.bytes());
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(AsStringView(*out), "abc");
}

TEST(ZstdStream, PropagatesSinkAndSourceErrors) {
  FailingOutputStream sink;
  auto z = NewZstdOutputStream(sink);
  auto raw = TestData(1 << 20, 9);
  Status w = z->Write(raw);
  Status c = z->Close();
  // zstd buffers: the failure shows at the first Write that flushes, or at Close.
  Status first = !w.ok() ? w : c;
  EXPECT_EQ(first.code(), StatusCode::kIoError);
  EXPECT_EQ(first.message(), "pipe closed");

  FailingInputStream src;
  auto r = NewDecompressingStream(src);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "disk on fire");
  auto zin = NewZstdInputStream(src);
  std::vector<uint8_t> buf(10);
  auto rr = zin->Read(buf);
  ASSERT_FALSE(rr.ok());
  EXPECT_EQ(rr.status().code(), StatusCode::kIoError);
}

// --- gzip -------------------------------------------------------------------------------------

TEST(GzipStream, DecompressesCliOutput) {
  auto out = Decompress(kGzipCliHello, 3, 2);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(AsStringView(*out), kHello);
}

TEST(GzipStream, RoundTripsAtOddPieceSizes) {
  auto raw = TestData((1 << 20) + 777, 4);
  for (size_t write_piece : {size_t{1} << 20, size_t{65537}, size_t{4093}}) {
    auto compressed = GzipStream(raw, write_piece);
    ASSERT_EQ(DetectCompression(compressed), Compression::kGzip);
    for (size_t read_piece : {size_t{13}, size_t{4096}, size_t{1} << 21}) {
      for (size_t source_piece : {size_t{7}, SIZE_MAX}) {
        SCOPED_TRACE(testing::Message() << write_piece << "/" << read_piece << "/"
                                        << source_piece);
        auto out = Decompress(compressed, read_piece, source_piece);
        ASSERT_TRUE(out.ok()) << out.status().ToString();
        EXPECT_EQ(*out, raw);
      }
    }
  }
}

TEST(GzipStream, MultipleMembers) {
  auto a = TestData(100000, 1);
  auto b = TestData(1, 2);
  auto stream = Concat({GzipStream(a, 5000), GzipStream({}, 1), kGzipCliHello, GzipStream(b, 1)});
  for (size_t source_piece : {size_t{1}, size_t{10}, SIZE_MAX}) {
    auto out = Decompress(stream, 1000, source_piece);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_EQ(*out, Concat({a, StringBytes(kHello), b}));
  }
}

TEST(GzipStream, RejectsEveryTruncation) {
  auto stream = Concat({kGzipCliHello, kGzipCliHello});
  for (size_t len = 0; len < stream.size(); ++len) {
    if (len == kGzipCliHello.size()) continue;  // a clean member boundary
    MemoryInputStream src(ByteSpan(stream).first(len));
    auto z = NewGzipInputStream(src);
    auto out = ReadAll(*z, 7);
    ASSERT_FALSE(out.ok()) << "length " << len;
    ASSERT_EQ(out.status().code(), StatusCode::kCorruption);
    ASSERT_THAT(out.status().message(), StartsWith("gzip: "));
  }
}

TEST(GzipStream, BitFlipsNeverYieldWrongBytes) {
  // Bytes 4..9 (mtime, extra flags, OS) and the FTEXT hint (bit 0 of the flags, byte 3) are not
  // covered by any check in RFC 1952, and deflate has ignored bits (padding before a stored
  // block's length, after the last code). Everything else is checked through the CRC-32 and the
  // length, so a flip either fails or leaves the output unchanged, and only a few can pass.
  auto raw = TestData(10000, 8);
  auto stream = GzipStream(raw, 3000);
  int accepted = 0;
  int tried = 0;
  for (size_t i = 0; i < stream.size(); ++i) {
    if (i >= 4 && i < 10) continue;
    for (int bit : {0, 1, 4, 7}) {
      if (i == 3 && bit == 0) continue;
      auto bad = stream;
      bad[i] ^= static_cast<uint8_t>(1u << bit);
      MemoryInputStream src(bad);
      auto z = NewGzipInputStream(src);
      auto out = ReadAll(*z);
      ++tried;
      if (out.ok()) {
        ++accepted;
        ASSERT_EQ(*out, raw) << "flip at byte " << i << " bit " << bit << " gave wrong bytes";
      } else {
        ASSERT_EQ(out.status().code(), StatusCode::kCorruption);
        ASSERT_THAT(out.status().message(), StartsWith("gzip: "));
      }
    }
  }
  EXPECT_LE(accepted, 8) << "of " << tried;
}

TEST(GzipStream, NamesTheLibraryError) {
  auto bad = kGzipCliHello;
  bad[bad.size() - 8] ^= 1;  // CRC-32
  MemoryInputStream src(bad);
  auto z = NewGzipInputStream(src);
  auto out = ReadAll(*z);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message(), "gzip: incorrect data check");
}

TEST(GzipStream, RejectsTrailingGarbageAndEmptyInput) {
  auto out = Decompress(Concat({kGzipCliHello, std::vector<uint8_t>(1024, 0)}));
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kCorruption);
  MemoryInputStream empty({});
  auto z = NewGzipInputStream(empty);
  auto e = ReadAll(*z);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().message(), "gzip: empty stream");
}

TEST(GzipStream, RejectsZlibAndRawDeflate) {
  // A zlib-wrapped stream (78 9c ...) is not gzip, and must not be accepted by the gzip reader.
  const std::vector<uint8_t> zlib = {0x78, 0x9c, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07,
                                     0x00, 0x06, 0x2c, 0x02, 0x15};
  MemoryInputStream src(zlib);
  auto z = NewGzipInputStream(src);
  auto out = ReadAll(*z);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kCorruption);
}

// --- pass-through and interop -----------------------------------------------------------------

TEST(NewDecompressingStream, PassesPlainBytesThrough) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{3}, size_t{4}, size_t{5}, size_t{100000}}) {
    auto raw = TestData(n, 12);
    if (n >= 2) raw[0] = 'u';  // not a magic
    for (size_t source_piece : {size_t{1}, SIZE_MAX}) {
      TrickleInputStream src(raw, source_piece);
      Compression detected = Compression::kGzip;
      auto stream = NewDecompressingStream(src, &detected);
      ASSERT_TRUE(stream.ok());
      EXPECT_EQ(detected, Compression::kNone);
      auto out = ReadAll(**stream, 3);
      ASSERT_TRUE(out.ok());
      EXPECT_EQ(*out, raw) << n;
    }
  }
}

TEST(NewDecompressingStream, ReportsDetectedFormat) {
  Compression detected = Compression::kNone;
  MemoryInputStream a(kGzipCliHello);
  ASSERT_TRUE(NewDecompressingStream(a, &detected).ok());
  EXPECT_EQ(detected, Compression::kGzip);
  MemoryInputStream b(kZstdCliHello);
  ASSERT_TRUE(NewDecompressingStream(b, &detected).ok());
  EXPECT_EQ(detected, Compression::kZstd);
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "compress_test.XXXXXX").string();
    char* p = mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

int RunShell(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

TEST(Interop, CliToolsReadOurOutputAndWeReadTheirs) {
  TempDir dir;
  auto raw = TestData(3 << 20, 21);
  auto raw_path = dir.path() / "raw";
  ASSERT_TRUE(WriteFileAtomically(raw_path, raw).ok());

  // Ours → CLI.
  ASSERT_TRUE(WriteFileAtomically(dir.path() / "ours.zst", ZstdStream(raw, 65536, 3, 2)).ok());
  ASSERT_TRUE(WriteFileAtomically(dir.path() / "ours.gz", GzipStream(raw, 65536)).ok());
  std::string d = dir.path().string();
  ASSERT_EQ(RunShell("zstd -q -d -c '" + d + "/ours.zst' | cmp -s - '" + d + "/raw'"), 0);
  ASSERT_EQ(RunShell("gzip -d -c '" + d + "/ours.gz' | cmp -s - '" + d + "/raw'"), 0);

  // CLI → ours: multi-threaded zstd at a high level, and two concatenated gzip members.
  ASSERT_EQ(RunShell("zstd -q -T2 -19 -c '" + d + "/raw' > '" + d + "/cli.zst'"), 0);
  ASSERT_EQ(RunShell("gzip -9 -c '" + d + "/raw' > '" + d + "/cli.gz' && gzip -1 -c '" + d +
                "/raw' >> '" + d + "/cli.gz'"),
            0);
  auto zst = ReadFileBytes(dir.path() / "cli.zst");
  ASSERT_TRUE(zst.ok());
  auto out = Decompress(*zst, 100001, 4099);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, raw);
  auto gz = ReadFileBytes(dir.path() / "cli.gz");
  ASSERT_TRUE(gz.ok());
  auto out2 = Decompress(*gz, 65536, 1000);
  ASSERT_TRUE(out2.ok()) << out2.status().ToString();
  EXPECT_EQ(*out2, Concat({raw, raw}));
}

TEST(GzipOutput, RejectsBadLevel) {
  MemoryOutputStream mem;
  auto z = NewGzipOutputStream(mem, 42);
  Status s = z->Write(AsBytes("x"));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("level 42"));
}

}  // namespace
}  // namespace lazycrypt::compress
