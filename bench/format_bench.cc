// Throughput of lc_format's hot paths (Google Benchmark). bench/run.sh runs this with
// --benchmark_format=json, puts every figure next to `openssl speed -evp aes-256-gcm` measured in
// the same run and writes docs/BENCHMARKS.md. Nothing here asserts a timing.
//
// Benchmarks (names are what run.sh's jq queries select on):
//   open/<kind>/chunk:<S>    ChunkOpener::Open of sealed records of S raw bytes; kind is random
//                            (incompressible: stored records, pure GCM), text (synthetic text)
//                            or binary (the bytes of the libcrypto this process loaded).
//                            Counter payload_ratio = sealed payload bytes / raw bytes.
//   gcm_open/chunk:<S>       crypto::AesGcm::Open alone on S bytes (the floor under open/random).
//   reader/seq/chunk:<S>/read:<R>
//                            LayerReader::ReadFile, R-byte sequential reads of the first 4 MiB of
//                            large files (random, text, binary and zero-filled in turn), over a
//                            MemoryBlobSource (record fetch = memcpy; no FUSE).
//                            Counter opened_ratio = raw bytes of the chunks opened / bytes read.
//   reader/rand4k/chunk:<S>  LayerReader::ReadFile of 4 KiB at random 4 KiB-aligned offsets of
//                            random file bytes. Counters: fetch_bytes (record bytes fetched per
//                            read), opened_bytes (raw bytes opened per read); and, like
//                            reader/seq, the layer's blob_ratio (blob / tar), toc_bytes, chunks.
//   convert/threads:<N>      WriteLayer of the mixed tar into a discarding sink (wall time;
//                            cpu_time is the whole process's).
//   zstd3/chunk:<S>          ZstdCompressor level 3 over the mixed tar in S-byte pieces, 1 thread:
//                            the compression share of conversion.
//   decrypt/<tar|tar_zstd>/threads:<N>
//                            DecryptLayer of the mixed layer into a discarding sink (wall time;
//                            cpu_time is the whole process's).
//
// The mixed tar (LAZYCRYPT_BENCH_TAR_MIB, default 256 MiB; LAZYCRYPT_BENCH_WRITE_TAR=PATH writes
// it to PATH instead of benchmarking) is generated deterministically: 1/3
// random bytes, 1/3 compressible (synthetic text and real machine code), 1/3 zero-filled files
// and small files. Every data set is checked once (records open to their input, reads match the
// tar, decryption reproduces the diff_id) before it is timed; a failed check fails the benchmark
// and makes the process exit with status 1.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/file_io.h"
#include "common/io.h"
#include "common/status.h"
#include "compress/compress.h"
#include "crypto/aes_gcm.h"
#include "crypto/random.h"
#include "format/chunk.h"
#include "format/decrypt.h"
#include "format/keys.h"
#include "format/layer_reader.h"
#include "format/layout.h"
#include "format/writer.h"
#include "tar/tar_writer.h"

namespace lazycrypt::bench {
namespace {

using format::ChunkInfo;
using format::LayerKey;

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = 1024 * 1024;

// Set when any benchmark reports an error; main() then exits with status 1.
bool g_failed = false;

void Fail(benchmark::State& state, const Status& status) {
  g_failed = true;
  state.SkipWithError(status.ToString().c_str());
}

// ---- Deterministic data --------------------------------------------------------------------

// SplitMix64: a tiny, fast, seedable generator. Benchmark data must be identical run to run;
// it need not be cryptographically random, only incompressible to zstd.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi].
  uint64_t Between(uint64_t lo, uint64_t hi) { return lo + Next() % (hi - lo + 1); }
  double Unit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

enum class DataKind { kRandom, kText, kBinary };

const char* KindName(DataKind kind) {
  switch (kind) {
    case DataKind::kRandom: return "random";
    case DataKind::kText: return "text";
    case DataKind::kBinary: return "binary";
  }
  return "?";
}

void FillRandom(MutableByteSpan out, uint64_t seed) {
  Rng rng(seed);
  size_t i = 0;
  for (; i + 8 <= out.size(); i += 8) {
    uint64_t v = rng.Next();
    std::memcpy(out.data() + i, &v, 8);
  }
  for (; i < out.size(); ++i) out[i] = static_cast<uint8_t>(rng.Next());
}

// Synthetic text: lines of words drawn with a skewed (roughly Zipfian) frequency from a fixed
// vocabulary, with indentation, punctuation and numbers. zstd -3 takes it to about 40 %.
class TextGenerator {
 public:
  TextGenerator() {
    Rng rng(0x7e47);
    static constexpr char kLetters[] = "etaoinshrdlucmfwypvbgkqjxz_";
    words_.reserve(kWords);
    for (size_t i = 0; i < kWords; ++i) {
      size_t len = 2 + rng.Next() % 9;
      std::string w;
      for (size_t j = 0; j < len; ++j) {
        // Skew letters towards the front of the table, as in English.
        double u = rng.Unit();
        w.push_back(kLetters[static_cast<size_t>(u * u * (sizeof kLetters - 1))]);
      }
      words_.push_back(std::move(w));
    }
  }

  void Fill(MutableByteSpan out, uint64_t seed) const {
    Rng rng(seed);
    size_t pos = 0;
    size_t line = 0;
    auto put = [&](std::string_view s) {
      size_t n = std::min(s.size(), out.size() - pos);
      std::memcpy(out.data() + pos, s.data(), n);
      pos += n;
      line += n;
    };
    while (pos < out.size()) {
      if (line == 0) put(std::string_view("        ", rng.Next() % 3 * 4));
      double u = rng.Unit();
      put(words_[static_cast<size_t>(u * u * u * kWords)]);
      uint64_t r = rng.Next() % 100;
      if (r < 6) {
        put(" = ");
        put(std::to_string(rng.Next() % 100000));
      } else if (r < 10) {
        put(", ");
      } else if (r < 12) {
        put(".");
      }
      if (line > 40 + rng.Next() % 60) {
        put(rng.Next() % 4 == 0 ? ";\n" : "\n");
        line = 0;
      } else {
        put(" ");
      }
    }
  }

 private:
  static constexpr size_t kWords = 4096;
  std::vector<std::string> words_;
};

const TextGenerator& Text() {
  static const TextGenerator* text = new TextGenerator();
  return *text;
}

// The bytes of a real binary: the libcrypto this process has loaded (found in /proc/self/maps),
// else this executable. Same Debian release, same bytes.
struct BinarySample {
  std::string path;
  std::vector<uint8_t> bytes;
};

const BinarySample& Binary() {
  static const BinarySample* sample = [] {
    auto* s = new BinarySample;
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
      size_t slash = line.find('/');
      if (slash != std::string::npos && line.find("libcrypto.so") != std::string::npos) {
        s->path = line.substr(slash);
        break;
      }
    }
    if (s->path.empty()) s->path = "/proc/self/exe";
    auto bytes = ReadFileBytes(s->path);
    if (bytes.ok() && bytes->size() >= 64 * kKiB) s->bytes = std::move(bytes).value();
    return s;
  }();
  return *sample;
}

// Cyclic window of the binary sample starting at a seed-chosen offset.
void FillBinary(MutableByteSpan out, uint64_t seed) {
  const std::vector<uint8_t>& src = Binary().bytes;
  if (src.empty()) {  // no sample readable: fall back to text (reported in the JSON context)
    Text().Fill(out, seed);
    return;
  }
  size_t from = Rng(seed).Next() % src.size();
  size_t pos = 0;
  while (pos < out.size()) {
    size_t n = std::min(out.size() - pos, src.size() - from);
    std::memcpy(out.data() + pos, src.data() + from, n);
    pos += n;
    from = 0;
  }
}

void Fill(DataKind kind, MutableByteSpan out, uint64_t seed) {
  switch (kind) {
    case DataKind::kRandom: return FillRandom(out, seed);
    case DataKind::kText: return Text().Fill(out, seed);
    case DataKind::kBinary: return FillBinary(out, seed);
  }
}

// ---- Keys and sinks ------------------------------------------------------------------------

// One layer key for the whole run (key material: never printed).
const LayerKey& BenchKey() {
  static const LayerKey* key = [] {
    auto k = format::NewLayerKey();
    if (!k.ok()) {
      std::fprintf(stderr, "format_bench: %s\n", k.status().ToString().c_str());
      std::exit(1);
    }
    return new LayerKey(std::move(k).value());
  }();
  return *key;
}

// Counts and drops what is written: conversion and decryption are timed without a file system.
class DiscardOutputStream final : public OutputStream {
 public:
  Status Write(ByteSpan data) override {
    bytes_ += data.size();
    return Status::Ok();
  }
  Status Close() override { return Status::Ok(); }
  uint64_t bytes() const { return bytes_; }

 private:
  uint64_t bytes_ = 0;
};

// ---- Sealed record rings -------------------------------------------------------------------

// Records cycled through by open/*: at least 4 and at least 16 MiB of raw bytes, so the working
// set is not one cache-hot buffer.
constexpr size_t kRingRawBytes = 16 * kMiB;

struct Ring {
  DataKind kind = DataKind::kRandom;
  size_t chunk_size = 0;
  std::shared_ptr<const format::ChunkOpener> opener;
  std::vector<std::vector<uint8_t>> records;
  std::vector<ChunkInfo> chunks;
  uint64_t raw_bytes = 0;
  uint64_t payload_bytes = 0;
};

Result<std::unique_ptr<Ring>> BuildRing(DataKind kind, size_t chunk_size) {
  auto ring = std::make_unique<Ring>();
  ring->kind = kind;
  ring->chunk_size = chunk_size;
  format::Salt salt{};
  LC_RETURN_IF_ERROR(crypto::RandomBytes(salt));
  LC_ASSIGN_OR_RETURN(format::DerivedKeys keys, format::DeriveKeys(BenchKey(), salt));
  LC_ASSIGN_OR_RETURN(std::unique_ptr<format::ChunkSealer> sealer,
                      format::ChunkSealer::FromKeys(keys, salt));
  LC_ASSIGN_OR_RETURN(ring->opener, format::ChunkOpener::FromKeys(keys, salt));
  compress::ZstdCompressor compressor(3);
  const size_t count = std::max<size_t>(4, kRingRawBytes / chunk_size);
  std::vector<uint8_t> raw(chunk_size), check(chunk_size);
  for (size_t i = 0; i < count; ++i) {
    Fill(kind, raw, 1000 * chunk_size + i);
    std::vector<uint8_t> record;
    LC_RETURN_IF_ERROR(sealer->Seal(i, /*last=*/false, raw, compressor, record));
    LC_ASSIGN_OR_RETURN(format::RecordHeader header,
                        format::ParseRecordHeader(ByteSpan(record).first(format::kRecordHeaderSize)));
    ChunkInfo chunk;
    chunk.index = i;
    chunk.payload_size = header.payload_size;
    chunk.raw_size = header.raw_size;
    chunk.stored = header.stored;
    chunk.last = header.last;
    chunk.record_sha256 = crypto::Sha256::Of(record);  // the TOC's pin (checked by Open)
    // The check that makes the timing mean something: the record opens to its input.
    LC_RETURN_IF_ERROR(ring->opener->Open(chunk, record, check));
    if (check != raw) return Status::Internal("open: chunk " + std::to_string(i) + " differs");
    ring->raw_bytes += raw.size();
    ring->payload_bytes += header.payload_size;
    ring->records.push_back(std::move(record));
    ring->chunks.push_back(chunk);
  }
  return ring;
}

// One ring at a time is kept (a benchmark's repetitions reuse it).
Result<const Ring*> GetRing(DataKind kind, size_t chunk_size) {
  static std::unique_ptr<Ring> cached;
  if (!cached || cached->kind != kind || cached->chunk_size != chunk_size) {
    cached.reset();
    LC_ASSIGN_OR_RETURN(cached, BuildRing(kind, chunk_size));
  }
  return cached.get();
}

void BM_Open(benchmark::State& state, DataKind kind, size_t chunk_size) {
  auto ring = GetRing(kind, chunk_size);
  if (!ring.ok()) return Fail(state, ring.status());
  const Ring& r = **ring;
  std::vector<uint8_t> out(chunk_size);  // reused, like a read reply buffer
  size_t i = 0;
  for (auto _ : state) {
    Status s = r.opener->Open(r.chunks[i], r.records[i], out);
    if (!s.ok()) {
      Fail(state, s);
      break;
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
    if (++i == r.records.size()) i = 0;
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * chunk_size));
  state.counters["payload_ratio"] =
      static_cast<double>(r.payload_bytes) / static_cast<double>(r.raw_bytes);
}

// AES-256-GCM alone, same ring shape as open/random: what is left of Open after parsing, AAD
// building and the per-chunk context setup are taken away.
void BM_GcmOpen(benchmark::State& state, size_t size) {
  auto key = crypto::RandomKey(crypto::kAes256KeySize);
  if (!key.ok()) return Fail(state, key.status());
  auto gcm = crypto::AesGcm::Create(key->span());
  if (!gcm.ok()) return Fail(state, gcm.status());
  const size_t count = std::max<size_t>(4, kRingRawBytes / size);
  std::vector<std::vector<uint8_t>> cts(count), tags(count, std::vector<uint8_t>(16));
  std::vector<uint8_t> nonce(crypto::kGcmNonceSize, 0), aad(format::kChunkAadSize, 0x5a);
  for (size_t i = 0; i < count; ++i) {
    cts[i].resize(size);
    FillRandom(cts[i], 77 + i);
    nonce[11] = static_cast<uint8_t>(i);
    Status s = gcm->Seal(nonce, aad, cts[i], cts[i], tags[i]);
    if (!s.ok()) return Fail(state, s);
  }
  std::vector<uint8_t> out(size);
  size_t i = 0;
  for (auto _ : state) {
    nonce[11] = static_cast<uint8_t>(i);
    Status s = gcm->Open(nonce, aad, cts[i], tags[i], out);
    if (!s.ok()) {
      Fail(state, s);
      break;
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
    if (++i == count) i = 0;
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

// ---- The mixed layer -----------------------------------------------------------------------

struct MixedTar {
  std::vector<uint8_t> bytes;
  uint64_t file_bytes = 0;
  uint64_t files = 0;
};

size_t MixedTarBytes() {
  const char* env = std::getenv("LAZYCRYPT_BENCH_TAR_MIB");
  long mib = env != nullptr ? std::strtol(env, nullptr, 10) : 256;
  if (mib < 4) mib = 4;
  return static_cast<size_t>(mib) * kMiB;
}

// LAZYCRYPT_BENCH_TAR_SEED (default 0): another deterministic draw of the same mix (file sizes,
// order and contents), so bench/run.sh can build an image of several different layers.
uint64_t MixedTarSeed() {
  const char* env = std::getenv("LAZYCRYPT_BENCH_TAR_SEED");
  return env != nullptr ? std::strtoull(env, nullptr, 10) : 0;
}

// File kinds of the mixed tar, recognisable by the file name's suffix.
enum class FileKind { kRandom, kText, kBinary, kZeros, kSmall };
constexpr const char* kKindSuffix[] = {".dat", ".txt", ".so", ".img", ".cfg"};
constexpr int kLargeKinds = 4;  // kRandom..kZeros: the sequential-read benchmarks' files

std::optional<FileKind> KindOfName(std::string_view name) {
  for (int k = 0; k < 5; ++k) {
    if (name.ends_with(kKindSuffix[k])) return static_cast<FileKind>(k);
  }
  return std::nullopt;
}

Result<MixedTar> BuildMixedTar() {
  const uint64_t third = MixedTarBytes() / 3;
  struct Spec {
    FileKind kind;
    uint64_t size;
  };
  std::vector<Spec> specs;
  const uint64_t variant = MixedTarSeed();
  Rng rng(0x1a2e5 + variant * 0x9e3779b97f4a7c15ULL);
  auto add = [&](FileKind kind, uint64_t budget, uint64_t lo, uint64_t hi) {
    for (uint64_t sum = 0; sum < budget;) {
      uint64_t size = std::min(rng.Between(lo, hi), budget - sum);
      specs.push_back({kind, size});
      sum += size;
    }
  };
  add(FileKind::kRandom, third, 256 * kKiB, 12 * kMiB);
  add(FileKind::kText, third / 2, 64 * kKiB, 6 * kMiB);
  add(FileKind::kBinary, third - third / 2, 64 * kKiB, 6 * kMiB);
  add(FileKind::kZeros, third / 2, 1 * kMiB, 16 * kMiB);
  add(FileKind::kSmall, third - third / 2, 128, 32 * kKiB);
  for (size_t i = specs.size(); i > 1; --i) std::swap(specs[i - 1], specs[rng.Next() % i]);

  MemoryOutputStream sink;
  tar::TarWriter writer(sink);
  constexpr int kDirs = 16;
  auto base_entry = [](std::string name, tar::EntryType type, uint32_t mode) {
    tar::Entry e;
    e.name = std::move(name);
    e.type = type;
    e.mode = mode;
    e.uname = e.gname = "root";
    e.mtime_sec = 1700000000;
    return e;
  };
  LC_RETURN_IF_ERROR(writer.AppendEntry(base_entry("usr/", tar::EntryType::kDirectory, 0755)));
  LC_RETURN_IF_ERROR(writer.AppendEntry(base_entry("usr/lib/", tar::EntryType::kDirectory, 0755)));
  for (int d = 0; d < kDirs; ++d) {
    LC_RETURN_IF_ERROR(writer.AppendEntry(
        base_entry("usr/lib/d" + std::to_string(d) + "/", tar::EntryType::kDirectory, 0755)));
  }
  MixedTar tar;
  std::vector<uint8_t> data;
  for (size_t i = 0; i < specs.size(); ++i) {
    const Spec& spec = specs[i];
    data.assign(spec.size, 0);
    const uint64_t seed = 0xf11e0000 + i + (variant << 32);
    switch (spec.kind) {
      case FileKind::kRandom: FillRandom(data, seed); break;
      case FileKind::kText: Text().Fill(data, seed); break;
      case FileKind::kBinary: FillBinary(data, seed); break;
      case FileKind::kZeros: break;
      case FileKind::kSmall: {
        DataKind k = seed % 4 == 0 ? DataKind::kRandom
                     : seed % 4 == 1 ? DataKind::kBinary : DataKind::kText;
        Fill(k, data, seed);
        break;
      }
    }
    tar::Entry e = base_entry("usr/lib/d" + std::to_string(i % kDirs) + "/f" + std::to_string(i) +
                                  kKindSuffix[static_cast<int>(spec.kind)],
                              tar::EntryType::kRegular, 0644);
    e.size = spec.size;
    LC_RETURN_IF_ERROR(writer.AppendEntry(e, data));
    tar.file_bytes += spec.size;
    ++tar.files;
  }
  LC_RETURN_IF_ERROR(writer.Finish());
  tar.bytes = sink.Take();
  return tar;
}

Result<const MixedTar*> GetMixedTar() {
  static std::unique_ptr<MixedTar> cached;
  if (!cached) {
    LC_ASSIGN_OR_RETURN(MixedTar tar, BuildMixedTar());
    cached = std::make_unique<MixedTar>(std::move(tar));
  }
  return cached.get();
}

// The mixed tar converted at one chunk size, with a reader over it.
struct Layer {
  size_t chunk_size = 0;
  format::WriteResult written;
  std::unique_ptr<MemoryBlobSource> blob;
  std::unique_ptr<format::LayerReader> reader;
  std::vector<format::EntryView> files;  // regular files with data, in tar order
  std::vector<uint64_t> file_ends;          // prefix sums of their sizes
  // Per large kind (random, text, binary, zeros): its files of at least kStretchBytes (or its
  // largest file when none is that large), in tar order.
  std::array<std::vector<format::EntryView>, kLargeKinds> large;
};

// What the sequential benchmarks read of each file they visit.
constexpr uint64_t kStretchBytes = 4 * kMiB;

Result<std::unique_ptr<Layer>> BuildLayer(size_t chunk_size) {
  LC_ASSIGN_OR_RETURN(const MixedTar* tar, GetMixedTar());
  auto layer = std::make_unique<Layer>();
  layer->chunk_size = chunk_size;
  MemoryInputStream in(tar->bytes);
  MemoryOutputStream out;
  format::WriterOptions options;
  options.chunk_size_bytes = chunk_size;
  LC_ASSIGN_OR_RETURN(layer->written, format::WriteLayer(in, BenchKey(), out, options));
  layer->blob = std::make_unique<MemoryBlobSource>(out.Take());
  LC_ASSIGN_OR_RETURN(layer->reader, format::LayerReader::Open(*layer->blob, BenchKey(),
                                                               layer->written.toc_digest));
  uint64_t end = 0;
  for (format::EntryView e : layer->reader->index().entries()) {
    if (e.type() != format::EntryType::kRegular || e.size() == 0) continue;
    layer->files.push_back(e);
    end += e.size();
    layer->file_ends.push_back(end);
  }
  if (layer->files.empty()) return Status::Internal("mixed layer has no files");
  for (int k = 0; k < kLargeKinds; ++k) {
    std::optional<format::EntryView> largest;
    for (format::EntryView e : layer->files) {
      if (KindOfName(e.name()) != static_cast<FileKind>(k)) continue;
      if (e.size() >= kStretchBytes) layer->large[k].push_back(e);
      if (!largest || e.size() > largest->size()) largest = e;
    }
    if (!largest) return Status::Internal("mixed layer lacks a file kind");
    if (layer->large[k].empty()) layer->large[k].push_back(*largest);
  }
  // Reads must return the tar's bytes: check the first few files of every size class.
  std::vector<uint8_t> buf;
  for (size_t i = 0; i < std::min<size_t>(layer->files.size(), 12); ++i) {
    const format::EntryView e = layer->files[i];
    buf.assign(e.size(), 0);
    LC_ASSIGN_OR_RETURN(size_t n, layer->reader->ReadFile(e, 0, buf));
    // The blob's tar stream is the salt header, then the source tar (docs/FORMAT.md §5.1).
    const uint64_t source_offset = e.data_offset() - format::kLayerSaltHeaderSize;
    if (n != e.size() || std::memcmp(buf.data(), tar->bytes.data() + source_offset, n) != 0) {
      return Status::Internal("reader: file '" + std::string(e.name()) +
                              "' does not read back as in the tar");
    }
  }
  return layer;
}

// Keeps the default-size layer and the last other one.
Result<const Layer*> GetLayer(size_t chunk_size) {
  static std::map<size_t, std::unique_ptr<Layer>> cache;
  auto it = cache.find(chunk_size);
  if (it != cache.end()) return it->second.get();
  for (auto i = cache.begin(); i != cache.end();) {
    i = i->first == format::kDefaultChunkSizeBytes ? std::next(i) : cache.erase(i);
  }
  LC_ASSIGN_OR_RETURN(std::unique_ptr<Layer> layer, BuildLayer(chunk_size));
  return cache.emplace(chunk_size, std::move(layer)).first->second.get();
}

// Raw bytes of the chunks a ReadFile of [offset, offset + n) opens: the whole of every chunk the
// range touches (LayerReader keeps no plaintext between calls).
uint64_t OpenedBytes(const format::LayerIndex& index, format::EntryView e, uint64_t offset,
                     size_t n) {
  format::ChunkRange range = index.ChunksForRange(e, offset, n);
  uint64_t opened = 0;
  for (uint64_t i = range.first; i < range.first + range.count; ++i) {
    opened += index.chunks()[i].raw_size;
  }
  return opened;
}

void SetLayerCounters(benchmark::State& state, const Layer& layer) {
  const auto& index = layer.reader->index();
  state.counters["blob_ratio"] = static_cast<double>(layer.written.blob_size) /
                                 static_cast<double>(layer.written.tar_size);
  state.counters["toc_bytes"] = static_cast<double>(index.toc_size());
  state.counters["chunks"] = static_cast<double>(layer.written.chunk_count);
}

// Sequential reads of large files: one iteration reads the first kStretchBytes of the next file
// of each large kind (random, text, binary, zeros), read_size bytes per ReadFile call, so every
// iteration delivers the same balanced mix whatever the chunk size.
void BM_ReaderSequential(benchmark::State& state, size_t chunk_size, size_t read_size) {
  auto layer_or = GetLayer(chunk_size);
  if (!layer_or.ok()) return Fail(state, layer_or.status());
  const Layer& layer = **layer_or;
  const auto& index = layer.reader->index();
  std::vector<uint8_t> buf(read_size);
  std::array<size_t, kLargeKinds> next{};
  int64_t bytes = 0;
  double opened = 0;
  auto read_stretch = [&](format::EntryView e) -> Status {
    const uint64_t end = std::min<uint64_t>(e.size(), kStretchBytes);
    for (uint64_t offset = 0; offset < end;) {
      LC_ASSIGN_OR_RETURN(
          size_t n, layer.reader->ReadFile(e, offset, MutableByteSpan(buf).first(std::min<uint64_t>(
                                                          read_size, end - offset))));
      if (n == 0) return Status::Internal("reader: '" + std::string(e.name()) + "' ended early");
      benchmark::DoNotOptimize(buf.data());
      bytes += static_cast<int64_t>(n);
      opened += static_cast<double>(OpenedBytes(index, e, offset, n));
      offset += n;
    }
    return Status::Ok();
  };
  for (auto _ : state) {
    Status s;
    for (int k = 0; k < kLargeKinds && s.ok(); ++k) {
      s = read_stretch(layer.large[k][next[k]]);
      next[k] = (next[k] + 1) % layer.large[k].size();
    }
    if (!s.ok()) {
      Fail(state, s);
      break;
    }
  }
  state.SetBytesProcessed(bytes);
  state.counters["opened_ratio"] = bytes > 0 ? opened / static_cast<double>(bytes) : 0;
  SetLayerCounters(state, layer);
}

// 4 KiB reads at 4 KiB-aligned offsets, drawn uniformly over all file bytes.
void BM_ReaderRandom4k(benchmark::State& state, size_t chunk_size) {
  auto layer_or = GetLayer(chunk_size);
  if (!layer_or.ok()) return Fail(state, layer_or.status());
  const Layer& layer = **layer_or;
  const auto& index = layer.reader->index();
  constexpr size_t kRead = 4 * kKiB;
  std::vector<uint8_t> buf(kRead);
  Rng rng(0x4a4d);  // same read sequence for every chunk size
  const uint64_t total = layer.file_ends.back();
  int64_t bytes = 0;
  double fetched = 0;
  double opened = 0;
  for (auto _ : state) {
    const uint64_t pick = rng.Next() % total;
    const size_t f = static_cast<size_t>(
        std::upper_bound(layer.file_ends.begin(), layer.file_ends.end(), pick) -
        layer.file_ends.begin());
    const format::EntryView e = layer.files[f];
    const uint64_t in_file = pick - (layer.file_ends[f] - e.size());
    const uint64_t offset = in_file / kRead * kRead;
    auto n = layer.reader->ReadFile(e, offset, buf);
    if (!n.ok()) {
      Fail(state, n.status());
      break;
    }
    benchmark::DoNotOptimize(buf.data());
    bytes += static_cast<int64_t>(*n);
    format::ChunkRange range = index.ChunksForRange(e, offset, *n);
    fetched += static_cast<double>(index.RecordsEnd(range) - index.RecordsBegin(range));
    opened += static_cast<double>(OpenedBytes(index, e, offset, *n));
  }
  state.SetBytesProcessed(bytes);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.counters["fetch_bytes"] =
      benchmark::Counter(fetched, benchmark::Counter::kAvgIterations);
  state.counters["opened_bytes"] = benchmark::Counter(opened, benchmark::Counter::kAvgIterations);
  SetLayerCounters(state, layer);
}

void BM_Convert(benchmark::State& state, int threads) {
  auto tar = GetMixedTar();
  if (!tar.ok()) return Fail(state, tar.status());
  format::WriterOptions options;
  options.threads = threads;
  double blob_ratio = 0;
  for (auto _ : state) {
    MemoryInputStream in((*tar)->bytes);
    DiscardOutputStream out;
    auto written = format::WriteLayer(in, BenchKey(), out, options);
    if (!written.ok()) {
      Fail(state, written.status());
      break;
    }
    if (written->source_tar_size != (*tar)->bytes.size() || written->blob_size != out.bytes()) {
      Fail(state, Status::Internal("convert: sizes do not add up"));
      break;
    }
    blob_ratio = static_cast<double>(written->blob_size) / static_cast<double>(written->tar_size);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * (*tar)->bytes.size()));
  state.counters["blob_ratio"] = blob_ratio;
}

void BM_Zstd(benchmark::State& state, size_t piece) {
  auto tar = GetMixedTar();
  if (!tar.ok()) return Fail(state, tar.status());
  const std::vector<uint8_t>& bytes = (*tar)->bytes;
  compress::ZstdCompressor compressor(3);
  std::vector<uint8_t> out(compress::ZstdCompressor::Bound(piece));
  size_t pos = 0;
  int64_t done = 0;
  for (auto _ : state) {
    size_t n = std::min(piece, bytes.size() - pos);
    auto c = compressor.Compress(ByteSpan(bytes).subspan(pos, n), out);
    if (!c.ok()) {
      Fail(state, c.status());
      break;
    }
    benchmark::DoNotOptimize(out.data());
    done += static_cast<int64_t>(n);
    pos += n;
    if (pos == bytes.size()) pos = 0;
  }
  state.SetBytesProcessed(done);
}

void BM_Decrypt(benchmark::State& state, format::DecryptOutput output, int threads) {
  auto layer_or = GetLayer(format::kDefaultChunkSizeBytes);
  if (!layer_or.ok()) return Fail(state, layer_or.status());
  const Layer& layer = **layer_or;
  format::DecryptOptions options;
  options.output = output;
  options.threads = threads;
  double out_ratio = 0;
  for (auto _ : state) {
    DiscardOutputStream out;
    auto diff_id = format::DecryptLayer(*layer.blob, BenchKey(), layer.written.toc_digest, out,
                                        options);
    if (!diff_id.ok()) {
      Fail(state, diff_id.status());
      break;
    }
    if (*diff_id != layer.written.diff_id) {
      Fail(state, Status::Internal("decrypt: diff_id differs from the writer's"));
      break;
    }
    out_ratio = static_cast<double>(out.bytes()) / static_cast<double>(layer.written.tar_size);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * layer.written.tar_size));
  state.counters["output_ratio"] = out_ratio;
}

// ---- Registration --------------------------------------------------------------------------

std::string Name(std::string base, std::initializer_list<std::pair<const char*, size_t>> args) {
  for (const auto& [k, v] : args) base += "/" + std::string(k) + ":" + std::to_string(v);
  return base;
}

void RegisterAll() {
  // Chunk sizes of the chunk-size study (the reader and record benchmarks), plus 64 KiB for open.
  const std::vector<size_t> study = {128 * kKiB, 256 * kKiB, 512 * kKiB,
                                     1 * kMiB,   2 * kMiB,   4 * kMiB};
  std::vector<size_t> open_sizes = study;
  open_sizes.insert(open_sizes.begin(), 64 * kKiB);

  for (DataKind kind : {DataKind::kRandom, DataKind::kText, DataKind::kBinary}) {
    for (size_t s : open_sizes) {
      benchmark::RegisterBenchmark(Name(std::string("open/") + KindName(kind), {{"chunk", s}}).c_str(),
                                   BM_Open, kind, s);
    }
  }
  for (size_t s : {64 * kKiB, 256 * kKiB, 1 * kMiB, 4 * kMiB}) {
    benchmark::RegisterBenchmark(Name("gcm_open", {{"chunk", s}}).c_str(), BM_GcmOpen, s);
  }
  // The default layer first (it stays cached), then the study.
  const size_t def = format::kDefaultChunkSizeBytes;
  benchmark::RegisterBenchmark(Name("reader/seq", {{"chunk", def}, {"read", 128 * kKiB}}).c_str(),
                               BM_ReaderSequential, def, 128 * kKiB);
  benchmark::RegisterBenchmark(Name("reader/seq", {{"chunk", def}, {"read", def}}).c_str(),
                               BM_ReaderSequential, def, def);
  for (int threads : {1, 2}) {
    benchmark::RegisterBenchmark(Name("decrypt/tar", {{"threads", threads}}).c_str(), BM_Decrypt,
                                 format::DecryptOutput::kTar, threads)
        ->UseRealTime()->MeasureProcessCPUTime();
  }
  benchmark::RegisterBenchmark(Name("decrypt/tar_zstd", {{"threads", 2}}).c_str(), BM_Decrypt,
                               format::DecryptOutput::kTarZstd, 2)
      ->UseRealTime()->MeasureProcessCPUTime();
  for (int threads : {1, 2}) {
    benchmark::RegisterBenchmark(Name("convert", {{"threads", threads}}).c_str(), BM_Convert,
                                 threads)
        ->UseRealTime()->MeasureProcessCPUTime();
  }
  benchmark::RegisterBenchmark(Name("zstd3", {{"chunk", def}}).c_str(), BM_Zstd, def);
  for (size_t s : study) {
    benchmark::RegisterBenchmark(Name("reader/rand4k", {{"chunk", s}}).c_str(), BM_ReaderRandom4k,
                                 s);
    if (s != def) {
      benchmark::RegisterBenchmark(Name("reader/seq", {{"chunk", s}, {"read", 128 * kKiB}}).c_str(),
                                   BM_ReaderSequential, s, 128 * kKiB);
    }
  }
}

}  // namespace
}  // namespace lazycrypt::bench

int main(int argc, char** argv) {
  // LAZYCRYPT_BENCH_WRITE_TAR=PATH: write the mixed tar to PATH and exit (bench/run.sh gives it
  // to skopeo and the lazycrypt CLI, so they convert exactly the layer measured here).
  if (const char* path = std::getenv("LAZYCRYPT_BENCH_WRITE_TAR"); path != nullptr && *path) {
    auto tar = lazycrypt::bench::GetMixedTar();
    lazycrypt::Status s = tar.ok() ? lazycrypt::WriteFileAtomically(path, (*tar)->bytes)
                                   : tar.status();
    if (!s.ok()) {
      std::fprintf(stderr, "format_bench: %s\n", s.ToString().c_str());
      return 1;
    }
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  lazycrypt::bench::RegisterAll();
  benchmark::AddCustomContext("default_chunk_size_bytes",
                              std::to_string(lazycrypt::format::kDefaultChunkSizeBytes));
  benchmark::AddCustomContext("default_zstd_level",
                              std::to_string(lazycrypt::format::kDefaultZstdLevel));
  benchmark::AddCustomContext("mixed_tar_bytes_requested",
                              std::to_string(lazycrypt::bench::MixedTarBytes()));
  benchmark::AddCustomContext("binary_sample", lazycrypt::bench::Binary().bytes.empty()
                                                   ? "none (text used instead)"
                                                   : lazycrypt::bench::Binary().path);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return lazycrypt::bench::g_failed ? 1 : 0;
}
