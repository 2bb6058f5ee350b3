// libFuzzer target: LayerIndex::Open and the eager decoders (DecryptLayer, DecryptLayerStream)
// behind the authentication. A fixed-key harness seals the fuzzer's bytes with the format
// library's own primitives (ChunkSealer, the TOC key's AES-GCM, EncodeTocPlaintext,
// EncodeFooter), so every input authenticates and the parsing after it is what gets fuzzed.
//
// Input byte 0 selects what the fuzzer's bytes become (the rest is `in`):
//   0 (mod 3)  the TOC: `in` is a serialized v1::Toc. Records matching its chunk table are
//              sealed (stored chunks: pattern bytes; compressed ones: pattern payloads, which
//              do not decompress, and whose digests the fuzzer cannot match) when they fit in
//              4 MiB; otherwise only Open runs, over a blob whose record bytes read as zeros.
//   1          the chunk payloads: `in` is a list of [flags u8][raw_size u24 LE][len u16 LE]
//              [len bytes]; flags bit 0 = a stored chunk (raw_size := len), bit 1 = the harness
//              compresses the bytes (raw data in, a real zstd frame out), else the bytes are the
//              zstd frame as is. The harness writes the consistent chunk table, tar size and
//              diff_id (when it can compute it) and record digests into a TOC without entries.
//   2          the TOC and the tar stream: `in` is [u32 LE n][n bytes serialized v1::Toc][tar
//              bytes]. The harness replaces the TOC's version, chunk table (with record
//              digests), tar size and diff_id with those of the tar bytes cut into chunks, so
//              the checks of entries against the tar run.
// Every outcome must be a Status; a decoder that succeeds must have produced tar_size bytes.
//
// Seeds: LAZYCRYPT_FUZZ_WRITE_SEEDS=<dir> ./sealed_layer_fuzz writes a seed for each mode from a
// small tar sealed by WriteLayer, and exits. LAZYCRYPT_FUZZ_VERBOSE=1 prints each outcome (to see
// how far an input gets).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "compress/compress.h"
#include "crypto/aes_gcm.h"
#include "crypto/digest.h"
#include "format/chunk.h"
#include "format/decrypt.h"
#include "format/keys.h"
#include "format/layer_index.h"
#include "format/layout.h"
#include "format/toc.h"
#include "format/toc.pb.h"
#include "format/writer.h"

using namespace lazycrypt;
using namespace lazycrypt::format;

namespace {

constexpr size_t kMaxMaterializedRecordBytes = 4u << 20;
constexpr size_t kMaxChunksFromInput = 64;
constexpr uint32_t kMaxRawSizeFromInput = 1u << 20;

uint32_t TocVersion();

// The fixed key, salt and everything derived from them, made once.
struct Fixture {
  LayerKey key;
  BlobHeader header;
  BlobHeaderBytes header_bytes{};
  DerivedKeys keys;
  std::unique_ptr<ChunkSealer> sealer;
};

const Fixture& GetFixture() {
  static const Fixture* f = [] {
    auto* fx = new Fixture();
    std::vector<uint8_t> key_bytes(kLayerKeySize, 0x42);
    fx->key = LayerKey(key_bytes);
    fx->header.salt.fill(0x17);
    auto keys = DeriveKeys(fx->key, fx->header.salt);
    if (!keys.ok()) std::abort();
    fx->keys = std::move(*keys);
    fx->header.commitment = fx->keys.commitment;
    fx->header_bytes = EncodeBlobHeader(fx->header);
    auto sealer = ChunkSealer::FromKeys(fx->keys, fx->header.salt);
    if (!sealer.ok()) std::abort();
    fx->sealer = std::move(*sealer);
    return fx;
  }();
  return *f;
}

// header || records (materialized, or `zero_records` bytes reading as zeros) || tail.
class PiecewiseBlob final : public BlobSource {
 public:
  PiecewiseBlob(std::vector<uint8_t> head, uint64_t zero_records, std::vector<uint8_t> tail)
      : head_(std::move(head)), zeros_(zero_records), tail_(std::move(tail)) {}
  uint64_t size() const override { return head_.size() + zeros_ + tail_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    if (offset > size() || out.size() > size() - offset) return Status::Corruption("read past the end");
    size_t done = 0;
    while (done < out.size()) {
      uint64_t pos = offset + done;
      size_t n;
      if (pos < head_.size()) {
        n = std::min<uint64_t>(out.size() - done, head_.size() - pos);
        std::memcpy(out.data() + done, head_.data() + pos, n);
      } else if (pos < head_.size() + zeros_) {
        n = std::min<uint64_t>(out.size() - done, head_.size() + zeros_ - pos);
        std::memset(out.data() + done, 0, n);
      } else {
        pos -= head_.size() + zeros_;
        n = std::min<uint64_t>(out.size() - done, tail_.size() - pos);
        std::memcpy(out.data() + done, tail_.data() + pos, n);
      }
      done += n;
    }
    return Status::Ok();
  }

 private:
  std::vector<uint8_t> head_;
  uint64_t zeros_;
  std::vector<uint8_t> tail_;
};

// Counts bytes, keeps none.
class CountingOutput final : public OutputStream {
 public:
  Status Write(ByteSpan data) override {
    bytes += data.size();
    return Status::Ok();
  }
  Status Close() override { return Status::Ok(); }
  uint64_t bytes = 0;
};

// Seals `plaintext` as the TOC of a blob whose TOC starts at toc_offset; appends sealed TOC and
// footer to `tail` and returns the sealed TOC's digest.
crypto::Sha256Digest SealTocInto(ByteSpan plaintext, uint64_t toc_offset, std::vector<uint8_t>& tail) {
  const Fixture& fx = GetFixture();
  const uint64_t sealed_size = plaintext.size() + kTagSize;
  std::vector<uint8_t> sealed(sealed_size);
  auto gcm = crypto::AesGcm::Create(fx.keys.toc_key.span());
  if (!gcm.ok()) std::abort();
  TocAad aad = MakeTocAad(fx.header_bytes, sealed_size);
  if (!gcm->Seal(TocNonce(), aad, plaintext, MutableByteSpan(sealed).first(plaintext.size()),
                 MutableByteSpan(sealed).subspan(plaintext.size(), kTagSize))
           .ok()) {
    std::abort();
  }
  crypto::Sha256Digest digest = crypto::Sha256::Of(sealed);
  tail.insert(tail.end(), sealed.begin(), sealed.end());
  FooterBytes footer = EncodeFooter(fx.header, toc_offset, sealed_size);
  tail.insert(tail.end(), footer.begin(), footer.end());
  return digest;
}

void Report(const char* what, const Status& st) {
  static const bool verbose = std::getenv("LAZYCRYPT_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "%s: %s\n", what, st.ToString().c_str());
}

// Open, then both decoders, over the same blob.
void RunDecoders(PiecewiseBlob& blob, const crypto::Sha256Digest& pinned, bool decode) {
  const Fixture& fx = GetFixture();
  auto index = LayerIndex::Open(blob, fx.key, pinned);
  Report("LayerIndex::Open", index.status());
  if (!index.ok()) {
    if (index.status().ok()) std::abort();
    return;
  }
  const LayerIndex& li = **index;
  if (li.chunks().empty() || li.toc_offset() + li.toc_size() + kFooterSize != blob.size()) std::abort();
  for (EntryView e : li.entries()) {
    if (!li.Find(e.name())) std::abort();
  }
  if (!decode) return;
  DecryptOptions options;
  options.threads = 1;
  {
    CountingOutput out;
    auto r = DecryptLayer(blob, fx.key, pinned, out, options);
    Report("DecryptLayer", r.status());
    if (r.ok() && out.bytes != li.tar_size()) std::abort();
  }
  {
    BlobInputStream in(blob);
    CountingOutput out;
    auto r = DecryptLayerStream(in, fx.key, pinned, out, options);
    Report("DecryptLayerStream", r.status());
    if (r.ok() && out.bytes != li.tar_size()) std::abort();
  }
}

void FuzzToc(ByteSpan serialized) {
  const Fixture& fx = GetFixture();
  auto plaintext = EncodeTocPlaintext(serialized, 1);
  if (!plaintext.ok()) return;
  std::vector<uint8_t> head(fx.header_bytes.begin(), fx.header_bytes.end());
  uint64_t zero_records = 0;
  bool decode = false;
  auto toc = ParseToc(serialized);
  if (toc.ok()) {
    uint64_t records = toc->records_end() - kBlobHeaderSize;
    if (records <= kMaxMaterializedRecordBytes) {
      std::vector<uint8_t> record;
      for (const ChunkInfo& c : toc->chunks) {
        std::vector<uint8_t> payload(c.payload_size);
        for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(c.index + i * 31);
        if (!fx.sealer->SealRaw(c.index, c.record_header(), payload, record).ok()) std::abort();
        head.insert(head.end(), record.begin(), record.end());
      }
      decode = true;
    } else {
      zero_records = records;
    }
  }
  std::vector<uint8_t> tail;
  crypto::Sha256Digest pinned = SealTocInto(*plaintext, head.size() + zero_records, tail);
  PiecewiseBlob blob(std::move(head), zero_records, std::move(tail));
  RunDecoders(blob, pinned, decode);
}

struct RawChunk {
  RecordHeader header;
  std::vector<uint8_t> payload;
  std::vector<uint8_t> raw;  // empty when unknown (a fuzzer frame that does not decompress)
};

// Seals `chunks` and a TOC naming them (plus `toc` as given for everything else), and runs.
void SealAndRun(std::vector<RawChunk>& chunks, v1::Toc& toc) {
  const Fixture& fx = GetFixture();
  if (chunks.empty()) return;
  toc.set_version(TocVersion());
  uint32_t target = static_cast<uint32_t>(kMinChunkSizeBytes);
  uint64_t tar_size = 0;
  crypto::Sha256 diff;
  bool diff_known = true;
  toc.clear_chunks();
  std::vector<uint8_t> head(fx.header_bytes.begin(), fx.header_bytes.end());
  std::vector<uint8_t> record;
  for (size_t i = 0; i < chunks.size(); ++i) {
    RawChunk& c = chunks[i];
    c.header.last = i + 1 == chunks.size();
    target = std::max(target, c.header.raw_size);
    tar_size += c.header.raw_size;
    if (c.raw.size() == c.header.raw_size) {
      diff.Update(c.raw);
    } else {
      diff_known = false;
    }
    v1::Chunk* pc = toc.add_chunks();
    pc->set_payload_size(c.header.payload_size);
    pc->set_raw_size(c.header.raw_size);
    pc->set_stored(c.header.stored);
    if (!fx.sealer->SealRaw(i, c.header, c.payload, record).ok()) std::abort();
    // The record's digest, where the TOC has a field for it (by reflection: the harness builds
    // with TOCs before and after per-record digests).
    if (const auto* field = v1::Chunk::descriptor()->FindFieldByName("record_sha256")) {
      crypto::Sha256Digest record_digest = crypto::Sha256::Of(record);
      pc->GetReflection()->SetString(pc, field, std::string(record_digest.begin(), record_digest.end()));
    }
    head.insert(head.end(), record.begin(), record.end());
  }
  toc.set_target_chunk_size(target);
  toc.set_tar_size(tar_size);
  crypto::Sha256Digest d{};
  if (diff_known) d = diff.Finish();
  toc.set_tar_sha256(std::string(d.begin(), d.end()));
  std::string serialized;
  if (!toc.SerializeToString(&serialized)) return;
  auto plaintext = EncodeTocPlaintext(AsBytes(serialized), 1);
  if (!plaintext.ok()) return;
  std::vector<uint8_t> tail;
  crypto::Sha256Digest pinned = SealTocInto(*plaintext, head.size(), tail);
  PiecewiseBlob blob(std::move(head), 0, std::move(tail));
  RunDecoders(blob, pinned, true);
}

// A compressed chunk of `raw` (stored when zstd does not help), as the writer would make it.
RawChunk ChunkOf(ByteSpan raw, bool force_stored) {
  RawChunk c;
  c.raw.assign(raw.begin(), raw.end());
  c.header.raw_size = static_cast<uint32_t>(raw.size());
  if (!force_stored) {
    static compress::ZstdCompressor z(1);  // one context for the process (single-threaded)
    std::vector<uint8_t> frame(compress::ZstdCompressor::Bound(raw.size()));
    auto n = z.Compress(raw, frame);
    if (n.ok() && !ChunkSealer::ShouldStore(raw.size(), *n)) {
      frame.resize(*n);
      c.payload = std::move(frame);
      c.header.payload_size = static_cast<uint32_t>(c.payload.size());
      c.header.stored = false;
      return c;
    }
  }
  c.payload = c.raw;
  c.header.payload_size = c.header.raw_size;
  c.header.stored = true;
  return c;
}

void FuzzChunks(ByteSpan in) {
  std::vector<RawChunk> chunks;
  size_t pos = 0;
  while (pos + 6 <= in.size() && chunks.size() < kMaxChunksFromInput) {
    uint8_t flags = in[pos];
    uint32_t raw_size = (in[pos + 1] | in[pos + 2] << 8 | uint32_t{in[pos + 3]} << 16) % kMaxRawSizeFromInput + 1;
    size_t len = in[pos + 4] | in[pos + 5] << 8;
    pos += 6;
    len = std::min(len, in.size() - pos);
    ByteSpan bytes = in.subspan(pos, len);
    pos += len;
    if (bytes.empty()) continue;
    if (flags & 1) {
      chunks.push_back(ChunkOf(bytes, true));
    } else if (flags & 2) {
      chunks.push_back(ChunkOf(bytes, false));
    } else {
      RawChunk c;
      c.header.raw_size = raw_size;
      c.header.payload_size = static_cast<uint32_t>(bytes.size());
      c.header.stored = false;
      c.payload.assign(bytes.begin(), bytes.end());
      std::vector<uint8_t> raw(raw_size);
      compress::ZstdDecompressor z;
      if (z.DecompressExact(bytes, raw).ok()) c.raw = std::move(raw);
      chunks.push_back(std::move(c));
    }
  }
  v1::Toc toc;
  SealAndRun(chunks, toc);
}

void FuzzTocAndTar(ByteSpan in) {
  if (in.size() < 4) return;
  uint32_t n = LoadLe32(in.data());
  in = in.subspan(4);
  if (n > in.size()) return;
  v1::Toc toc;
  if (!toc.ParseFromArray(in.data(), static_cast<int>(n))) return;
  ByteSpan tar = in.subspan(n);
  if (tar.empty()) return;
  // Chunks of kMinChunkSizeBytes (the fuzzer's tars are small), compressed as the writer does.
  std::vector<RawChunk> chunks;
  for (size_t off = 0; off < tar.size(); off += kMinChunkSizeBytes) {
    chunks.push_back(ChunkOf(tar.subspan(off, std::min<size_t>(kMinChunkSizeBytes, tar.size() - off)), false));
  }
  SealAndRun(chunks, toc);
}

// ---- seeds ----

void AppendOctal(std::vector<uint8_t>& h, size_t at, size_t width, uint64_t v) {
  std::snprintf(reinterpret_cast<char*>(&h[at]), width, "%0*llo", static_cast<int>(width - 1),
                static_cast<unsigned long long>(v));
}

void AddTarEntry(std::vector<uint8_t>& tar, const std::string& name, char type, std::string_view data,
                 const std::string& link = "") {
  std::vector<uint8_t> h(512, 0);
  std::memcpy(&h[0], name.data(), name.size());
  AppendOctal(h, 100, 8, type == '5' ? 0755 : 0644);
  AppendOctal(h, 108, 8, 0);
  AppendOctal(h, 116, 8, 0);
  AppendOctal(h, 124, 12, data.size());
  AppendOctal(h, 136, 12, 1700000000);
  h[156] = static_cast<uint8_t>(type);
  std::memcpy(&h[157], link.data(), link.size());
  std::memcpy(&h[257], "ustar\0" "00", 8);
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (uint8_t b : h) sum += b;
  std::snprintf(reinterpret_cast<char*>(&h[148]), 8, "%06o", sum);
  tar.insert(tar.end(), h.begin(), h.end());
  tar.insert(tar.end(), data.begin(), data.end());
  tar.resize((tar.size() + 511) / 512 * 512, 0);
}

void WriteFile(const std::string& path, ByteSpan bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) std::abort();
}

// A small layer as WriteLayer seals it, opened back: its serialized TOC and its tar stream.
struct WriterSample {
  std::vector<uint8_t> serialized;
  std::vector<uint8_t> stream;  // as the TOC's offsets count it
};

const WriterSample& Sample() {
  static const WriterSample* s = [] {
    auto* sample = new WriterSample();
    std::vector<uint8_t> tar;
    AddTarEntry(tar, "etc/", '5', "");
    AddTarEntry(tar, "etc/hello.txt", '0', "hello, lazycrypt\n");
    AddTarEntry(tar, "etc/link", '2', "", "hello.txt");
    AddTarEntry(tar, "etc/hard", '1', "", "etc/hello.txt");
    AddTarEntry(tar, "etc/.wh.gone", '0', "");
    AddTarEntry(tar, "var/lib/", '5', "");
    AddTarEntry(tar, "var/lib/.wh..wh..opq", '0', "");
    AddTarEntry(tar, "etc/hello.txt", '0', "replaced\n");
    tar.resize(tar.size() + 1024, 0);
    const Fixture& fx = GetFixture();
    MemoryInputStream src(tar);
    MemoryOutputStream blob_out;
    WriterOptions wo;
    wo.threads = 1;
    auto written = WriteLayer(src, fx.key, blob_out, wo);
    if (!written.ok()) std::abort();
    const std::vector<uint8_t>& blob = blob_out.bytes();
    // The TOC the writer sealed, opened back into its serialized form.
    auto footer = ParseFooter(ByteSpan(blob).last(kFooterSize), blob.size());
    if (!footer.ok()) std::abort();
    auto keys = DeriveAndCheckKeys(fx.key, footer->header);
    if (!keys.ok()) std::abort();
    auto gcm = crypto::AesGcm::Create(keys->toc_key.span());
    ByteSpan sealed = ByteSpan(blob).subspan(footer->toc_offset, footer->toc_size);
    std::vector<uint8_t> plaintext(sealed.size() - kTagSize);
    TocAad aad = MakeTocAad(footer->header_bytes, sealed.size());
    if (!gcm->Open(TocNonce(), aad, sealed.first(plaintext.size()), sealed.last(kTagSize), plaintext).ok()) {
      std::abort();
    }
    uint64_t serialized_size = LoadLe64(plaintext.data());
    std::vector<uint8_t>& serialized = sample->serialized;
    serialized.resize(serialized_size);
    compress::ZstdDecompressor z;
    if (!z.DecompressExact(ByteSpan(plaintext).subspan(kTocSizePrefixSize), serialized).ok()) std::abort();
    // The blob's tar stream, as the TOC's offsets count it.
    MemoryBlobSource source(blob);
    MemoryOutputStream tar_out;
    if (!DecryptLayer(source, fx.key, written->toc_digest, tar_out).ok()) std::abort();
    sample->stream = tar_out.Take();
    return sample;
  }();
  return *s;
}

// The TOC version the writer writes (so the harness needs no change when it moves).
uint32_t TocVersion() {
  static const uint32_t version = [] {
    v1::Toc toc;
    const WriterSample& s = Sample();
    if (!toc.ParseFromArray(s.serialized.data(), static_cast<int>(s.serialized.size()))) std::abort();
    return toc.version();
  }();
  return version;
}

void WriteSeeds(const std::string& dir) {
  const std::vector<uint8_t>& serialized = Sample().serialized;
  const std::vector<uint8_t>& stream = Sample().stream;

  std::vector<uint8_t> seed = {0};
  seed.insert(seed.end(), serialized.begin(), serialized.end());
  WriteFile(dir + "/toc", seed);

  seed = {1};
  for (size_t off = 0; off < stream.size(); off += 1024) {
    size_t len = std::min<size_t>(1024, stream.size() - off);
    uint8_t flags = (off / 1024) % 3 == 0 ? 2 : (off / 1024) % 3 == 1 ? 1 : 2;
    seed.insert(seed.end(), {flags, 0, 0, 0, static_cast<uint8_t>(len), static_cast<uint8_t>(len >> 8)});
    seed.insert(seed.end(), stream.begin() + off, stream.begin() + off + len);
  }
  WriteFile(dir + "/chunks", seed);

  seed = {2, 0, 0, 0, 0};
  StoreLe32(&seed[1], static_cast<uint32_t>(serialized.size()));
  seed.insert(seed.end(), serialized.begin(), serialized.end());
  seed.insert(seed.end(), stream.begin(), stream.end());
  WriteFile(dir + "/toc-and-tar", seed);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("LAZYCRYPT_FUZZ_WRITE_SEEDS")) {
    WriteSeeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  ByteSpan in(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      FuzzToc(in);
      break;
    case 1:
      FuzzChunks(in);
      break;
    case 2:
      FuzzTocAndTar(in);
      break;
  }
  return 0;
}
