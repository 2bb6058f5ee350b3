#include "format/writer.h"

#include "format/toc_tar_match.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <thread>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "compress/compress.h"
#include "crypto/aes_gcm.h"
#include "crypto/random.h"
#include "format/chunk.h"
#include "format/ordered_pipeline.h"
#include "format/toc.h"
#include "format/toc.pb.h"
#include "tar/tar_reader.h"
#include "tar/tar_writer.h"

namespace lazycrypt::format {
namespace {

struct ChunkJob {
  uint64_t index = 0;
  bool last = false;
  std::vector<uint8_t> raw;
};

struct SealedChunk {
  RecordHeader header;
  std::vector<uint8_t> record;
  crypto::Sha256Digest record_sha256{};  // pinned in the TOC
};

// Everything written to the blob goes through here: counted, and hashed once (when asked).
class BlobSink {
 public:
  BlobSink(OutputStream& out, bool hash) : out_(out), hash_(hash) {}
  Status Write(ByteSpan data) {
    LC_RETURN_IF_ERROR(out_.Write(data));
    if (hash_) sha_.Update(data);
    size_ += data.size();
    return Status::Ok();
  }
  uint64_t size() const { return size_; }
  crypto::Sha256Digest Finish() { return hash_ ? sha_.Finish() : crypto::Sha256Digest{}; }

 private:
  OutputStream& out_;
  const bool hash_;
  crypto::Sha256 sha_;
  uint64_t size_ = 0;
};

// Cuts the raw tar stream into chunks (docs/FORMAT.md, "Chunking policy") and hashes it. Runs on
// the parse thread: Append is the TarReader's tee.
class Chunker {
 public:
  using Submit = std::function<Status(ChunkJob)>;
  Chunker(size_t target, size_t own_chunk_from, size_t pack_chunk, internal::BufferPool& pool,
          Submit submit)
      : target_(target),
        own_chunk_from_(own_chunk_from),
        pack_chunk_(pack_chunk),
        pool_(pool),
        submit_(std::move(submit)) {
    current_ = pool_.Get();
    current_.reserve(target_);
  }

  Status Append(ByteSpan data) {
    hash_.Update(data);
    total_ += data.size();
    while (!data.empty()) {
      // A chunk is sent off only when the next byte arrives, so the final one can carry the
      // last flag however the stream ends.
      if (current_.size() == target_ || (cut_before_next_byte_ && !current_.empty())) {
        LC_RETURN_IF_ERROR(Cut(/*last=*/false));
      }
      cut_before_next_byte_ = false;
      size_t n = std::min(target_ - current_.size(), data.size());
      current_.insert(current_.end(), data.begin(), data.begin() + n);
      data = data.subspan(n);
    }
    return Status::Ok();
  }

  // Called before the data of a regular file of `size` bytes: a file that fits in a chunk must
  // not straddle two, a larger one starts on a chunk boundary, the data of a file of at least
  // own_chunk_from_ bytes shares no chunk with another file's (smaller files share chunks of at
  // most pack_chunk_), and the data of files listed for prefetch (`listed`) never shares a chunk
  // with the data of unlisted files, so that fetching the listed files fetches nothing else.
  void BeforeFileData(uint64_t size, bool listed) {
    if (size == 0) return;
    const bool other_kind = holds_data_ && holds_listed_ != listed;
    const bool own = own_chunk_from_ != 0 && size >= own_chunk_from_;
    const bool unpackable =
        own_chunk_from_ != 0 && holds_data_ &&
        (own || holds_own_ || current_.size() + size > pack_chunk_);
    if (!current_.empty() && (current_.size() + size > target_ || other_kind || unpackable)) {
      cut_before_next_byte_ = true;
    }
    holds_data_ = true;  // the current chunk, or the one the pending cut starts
    holds_listed_ = listed;
    holds_own_ = own;
  }
  // Sends the final chunk with the last flag.
  Status Finish() {
    if (current_.empty()) {
      return Status::Corruption("the layer's tar stream is empty");
    }
    return Cut(/*last=*/true);
  }

  uint64_t total() const { return total_; }
  crypto::Sha256Digest Digest() { return hash_.Finish(); }

 private:
  Status Cut(bool last) {
    ChunkJob job{next_index_++, last, std::move(current_)};
    current_ = pool_.Get();
    current_.reserve(target_);
    return submit_(std::move(job));
  }

  const size_t target_;
  const size_t own_chunk_from_;  // 0: file-aligned chunking off
  const size_t pack_chunk_;
  internal::BufferPool& pool_;
  Submit submit_;
  std::vector<uint8_t> current_;
  bool cut_before_next_byte_ = false;
  // Whether the current chunk holds file data, and of a listed file. After a cut at the size
  // limit the state is that of the file being cut (conservative when the cut fell on headers).
  bool holds_data_ = false;
  bool holds_listed_ = false;
  bool holds_own_ = false;  // data of a file of at least own_chunk_from_ bytes
  uint64_t next_index_ = 0;
  uint64_t total_ = 0;
  crypto::Sha256 hash_;
};

// Reads `inner` on a thread of its own, up to kReadAheadBuffers buffers of kReadAheadBytes ahead
// of the consumer, so that decompressing a gzip or zstd layer (and whatever the caller's stream
// does below it, e.g. hash the blob) overlaps parsing and chunking: on one thread, inflating a
// gzip layer is the writer's slowest serial step. Errors of `inner` reach the reader after the
// bytes read before them. REQUIRES: `inner` outlives this object and is not used by anyone else
// until it is destroyed (the destructor stops and joins the thread).
class ReadAheadInputStream final : public InputStream {
 public:
  explicit ReadAheadInputStream(InputStream& inner) : inner_(inner) {
    thread_ = std::thread([this] { FillLoop(); });
  }
  ReadAheadInputStream(const ReadAheadInputStream&) = delete;
  ReadAheadInputStream& operator=(const ReadAheadInputStream&) = delete;
  ~ReadAheadInputStream() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  Result<size_t> Read(MutableByteSpan out) override {
    if (out.empty()) return size_t{0};
    while (pos_ == current_.size()) {
      std::unique_lock<std::mutex> lock(mu_);
      if (current_.capacity() > 0) free_.push_back(std::move(current_));
      current_.clear();
      pos_ = 0;
      cv_.notify_all();
      cv_.wait(lock, [&] { return !full_.empty() || done_; });
      if (full_.empty()) {
        if (!status_.ok()) return status_;
        return size_t{0};
      }
      current_ = std::move(full_.front());
      full_.pop_front();
    }
    size_t n = std::min(out.size(), current_.size() - pos_);
    std::memcpy(out.data(), current_.data() + pos_, n);
    pos_ += n;
    return n;
  }

 private:
  static constexpr size_t kReadAheadBytes = 1 << 20;
  static constexpr size_t kReadAheadBuffers = 4;

  void FillLoop() {
    for (;;) {
      std::vector<uint8_t> buffer;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || full_.size() < kReadAheadBuffers; });
        if (stop_) return;
        if (!free_.empty()) {
          buffer = std::move(free_.back());
          free_.pop_back();
        }
      }
      buffer.resize(kReadAheadBytes);
      size_t filled = 0;
      Status error;
      while (filled < buffer.size()) {
        Result<size_t> n = inner_.Read(MutableByteSpan(buffer).subspan(filled));
        if (!n.ok()) {
          error = n.status();
          break;
        }
        if (*n == 0) break;
        filled += *n;
      }
      buffer.resize(filled);
      const bool last = !error.ok() || filled < kReadAheadBytes;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (filled > 0) full_.push_back(std::move(buffer));
        if (last) {
          status_ = std::move(error);
          done_ = true;
        }
      }
      cv_.notify_all();
      if (last) return;
    }
  }

  InputStream& inner_;
  std::thread thread_;
  // The consumer's buffer (touched by the consumer only).
  std::vector<uint8_t> current_;
  size_t pos_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<uint8_t>> full_;   // filled, in order
  std::vector<std::vector<uint8_t>> free_;  // consumed, for reuse
  bool done_ = false;                       // the fill thread has stopped (EOF or error)
  bool stop_ = false;                       // the consumer is going away
  Status status_;                           // the error that ended the stream, if any
};

// The incompressibility probe (WriterOptions::probe_incompressible): zstd at its fastest level
// over a few samples spread across the chunk. Only when no sample saves at least what
// ChunkSealer::ShouldStore asks of a whole chunk is the chunk stored without trying zstd at the
// configured level: random and already-compressed data then cost one GCM pass instead of a full
// zstd pass whose output would be thrown away.
constexpr size_t kProbeMinChunkBytes = 128 * 1024;
constexpr size_t kProbeSampleBytes = 16 * 1024;
constexpr int kProbeSamples = 4;
constexpr int kProbeZstdLevel = 1;

struct ProbeScratch {
  ProbeScratch() : compressor(kProbeZstdLevel),
                            out(compress::ZstdCompressor::Bound(kProbeSampleBytes)) {}
  compress::ZstdCompressor compressor;
  std::vector<uint8_t> out;
};

// True when every sample of `raw` is incompressible. Errors count as "compressible" (the full
// compression then runs and reports them).
bool LooksIncompressible(ByteSpan raw, ProbeScratch& probe) {
  if (raw.size() < kProbeMinChunkBytes) return false;
  const size_t stride = (raw.size() - kProbeSampleBytes) / (kProbeSamples - 1);
  for (int i = 0; i < kProbeSamples; ++i) {
    ByteSpan sample = raw.subspan(static_cast<size_t>(i) * stride, kProbeSampleBytes);
    auto n = probe.compressor.Compress(sample, probe.out);
    if (!n.ok() || !ChunkSealer::ShouldStore(sample.size(), *n)) return false;
  }
  return true;
}

std::string TarEntryName(const tar::Entry& e) {
  return "tar entry '" + e.name + "' at offset " + std::to_string(e.header_offset);
}

// tar entry → TOC entry, with the TOC's rules applied (and named) now rather than at the end.
// The source stream's offsets move by `tar_offset_shift` (the salt header before it).
Status AddEntry(const tar::Entry& e, uint64_t tar_offset_shift, v1::Toc& toc) {
  // The same conversion the TOC/tar matcher checks a TOC against (toc_tar_match.h).
  auto converted = TocEntryFromTar(e);
  if (!converted.ok()) return converted.status().WithContext(TarEntryName(e));
  Entry entry = std::move(converted).value();
  if (e.type == tar::EntryType::kRegular) entry.data_offset += tar_offset_shift;
  // The data range is checked against the final tar size by the self-check at the end.
  LC_RETURN_IF_ERROR(ValidateEntry(entry, UINT64_MAX).WithContext(TarEntryName(e)));

  EntryToProto(std::move(entry), toc.add_entries());
  return Status::Ok();
}

}  // namespace

std::vector<uint8_t> LayerSaltTarHeader(const Salt& salt) {
  MemoryOutputStream out;
  tar::TarWriter writer(out, tar::Flavor::kPax);
  // Writing into memory cannot fail.
  (void)writer.AppendGlobalHeader({{"comment", "lazycrypt-layer-salt:" + crypto::HexEncode(salt)}});
  return out.Take();
}

Result<WriteResult> WriteLayer(InputStream& layer, const LayerKey& key, OutputStream& blob,
                               const WriterOptions& options) {
  if (options.chunk_size_bytes < kMinChunkSizeBytes ||
      options.chunk_size_bytes > kMaxChunkSizeBytes) {
    return Status::InvalidArgument("chunk size " + std::to_string(options.chunk_size_bytes) +
                                   " is outside " + std::to_string(kMinChunkSizeBytes) + ".." +
                                   std::to_string(kMaxChunkSizeBytes));
  }
  if (options.threads < 0) return Status::InvalidArgument("threads must be >= 0");
  const int threads = internal::ResolveThreads(options.threads);

  // Keys and header.
  BlobHeader header;
  LC_RETURN_IF_ERROR(crypto::RandomBytes(header.salt));
  LC_ASSIGN_OR_RETURN(DerivedKeys keys, DeriveKeys(key, header.salt));
  header.commitment = keys.commitment;
  const BlobHeaderBytes header_bytes = EncodeBlobHeader(header);
  LC_ASSIGN_OR_RETURN(std::unique_ptr<ChunkSealer> sealer, ChunkSealer::FromKeys(keys, header.salt));

  BlobSink sink(blob, options.hash_blob);
  LC_RETURN_IF_ERROR(sink.Write(header_bytes));

  // Chunks: parse thread → sealing workers → in-order emitter.
  std::vector<compress::ZstdCompressor> compressors;
  compressors.reserve(threads);
  for (int i = 0; i < threads; ++i) compressors.emplace_back(options.zstd_level);
  std::vector<ProbeScratch> probes(options.probe_incompressible ? threads : 0);
  internal::BufferPool raw_pool, record_pool;
  // The emitter's; read after pipeline.Finish().
  std::vector<std::pair<RecordHeader, crypto::Sha256Digest>> chunk_table;
  v1::Toc toc;
  toc.set_version(kTocVersion);
  toc.set_target_chunk_size(static_cast<uint32_t>(options.chunk_size_bytes));

  internal::OrderedPipeline<ChunkJob, SealedChunk> pipeline(
      threads, 2 * static_cast<size_t>(threads),
      [&](int worker, ChunkJob& job) -> Result<SealedChunk> {
        SealedChunk sealed;
        sealed.record = record_pool.Get();
        const bool store =
            !probes.empty() && LooksIncompressible(job.raw, probes[static_cast<size_t>(worker)]);
        LC_RETURN_IF_ERROR(sealer->Seal(job.index, job.last, job.raw, compressors[worker],
                                        sealed.record, /*force_stored=*/store));
        raw_pool.Put(std::move(job.raw));
        auto parsed = ParseRecordHeader(ByteSpan(sealed.record).first(kRecordHeaderSize));
        if (!parsed.ok()) return parsed.status().WithContext("writer produced a bad record");
        sealed.header = *parsed;
        sealed.record_sha256 = crypto::Sha256::Of(sealed.record);  // on the worker, in parallel
        return sealed;
      },
      [&](SealedChunk& sealed) -> Status {
        LC_RETURN_IF_ERROR(sink.Write(sealed.record));
        chunk_table.emplace_back(sealed.header, sealed.record_sha256);
        record_pool.Put(std::move(sealed.record));
        return Status::Ok();
      });

  Chunker chunker(options.chunk_size_bytes, options.own_chunk_from_bytes,
                  options.pack_chunk_bytes, raw_pool,
                  [&](ChunkJob job) { return pipeline.Submit(std::move(job)); });
  // The salt header goes first: the layer's tar stream, and so its diff_id, is this blob's own.
  const std::vector<uint8_t> salt_header = LayerSaltTarHeader(header.salt);
  if (salt_header.size() != kLayerSaltHeaderSize) {
    return Status::Internal("writer: salt header is " + std::to_string(salt_header.size()) +
                            " bytes");
  }
  LC_RETURN_IF_ERROR(chunker.Append(salt_header));

  // Prefetch: normalized name → index of its last regular entry so far (kNotMarked: none yet).
  constexpr uint32_t kNotMarked = UINT32_MAX;
  std::unordered_map<std::string, uint32_t> prefetch_wanted;
  for (const std::string& path : options.prefetch_paths) {
    if (!IsNormalizedName(path)) {
      return Status::InvalidArgument("prefetch path '" + path + "' is not in normalized form");
    }
    prefetch_wanted.emplace(path, kNotMarked);
  }

  // Parse the tar stream; the tee feeds the chunker every byte in order.
  compress::Compression detected = compress::Compression::kNone;
  LC_ASSIGN_OR_RETURN(std::unique_ptr<InputStream> decompressed,
                      compress::NewDecompressingStream(layer, &detected));
  // A compressed layer is decompressed on a thread of its own (an uncompressed one is only
  // copied: not worth a thread).
  std::unique_ptr<InputStream> read_ahead;
  if (detected != compress::Compression::kNone) {
    read_ahead = std::make_unique<ReadAheadInputStream>(*decompressed);
  }
  InputStream* tar_stream = read_ahead ? read_ahead.get() : decompressed.get();
  // The source's own digest: what its image config must name (a second SHA-256 pass: the
  // salt header in front gives the blob's stream a different one).
  crypto::Sha256 source_hash;
  uint64_t source_size = 0;
  tar::TarReader reader(*tar_stream, [&](ByteSpan raw) {
    source_hash.Update(raw);
    source_size += raw.size();
    return chunker.Append(raw);
  });
  for (;;) {
    LC_ASSIGN_OR_RETURN(std::optional<tar::Entry> entry, reader.Next());
    if (!entry.has_value()) break;
    if (static_cast<uint64_t>(toc.entries_size()) >= kMaxTocEntries) {
      return Status::InvalidArgument("layer has more than " + std::to_string(kMaxTocEntries) +
                                     " entries (the format's limit)");
    }
    LC_RETURN_IF_ERROR(AddEntry(*entry, kLayerSaltHeaderSize, toc));
    if (entry->type == tar::EntryType::kRegular) {
      // Prefetch marks: the last regular entry of each listed name wins. Every listed entry
      // gets chunks of its own kind (an earlier entry of a listed name too: harmless).
      bool listed = false;
      if (!prefetch_wanted.empty()) {
        const int index = toc.entries_size() - 1;
        auto wanted = prefetch_wanted.find(toc.entries(index).name());
        if (wanted != prefetch_wanted.end()) {
          wanted->second = static_cast<uint32_t>(index);
          listed = true;
        }
      }
      chunker.BeforeFileData(entry->size, listed);
    }
  }
  {
    std::vector<uint32_t> marks;
    for (const auto& [name, index] : prefetch_wanted) {
      if (index != kNotMarked) marks.push_back(index);
    }
    std::sort(marks.begin(), marks.end());
    for (uint32_t index : marks) toc.add_prefetch(index);
  }
  // Only zero padding may follow the end-of-archive marker (FORMAT.md §5): bytes there would be
  // in the diff_id but in no entry, hidden from every reader.
  if (Status s = reader.DrainZerosToEnd().status(); !s.ok()) {
    return s.WithContext("the source layer cannot be converted: lazycrypt layers hold only zero "
                         "bytes after the end-of-archive marker");
  }
  LC_RETURN_IF_ERROR(chunker.Finish());
  // (The chunker is never empty: the salt header is in it.)
  if (source_size == 0) return Status::Corruption("the layer's tar stream is empty");
  LC_RETURN_IF_ERROR(pipeline.Finish());

  for (const auto& [h, digest] : chunk_table) {
    v1::Chunk* c = toc.add_chunks();
    c->set_payload_size(h.payload_size);
    c->set_raw_size(h.raw_size);
    c->set_stored(h.stored);
    c->set_record_sha256(digest.data(), digest.size());
  }
  WriteResult result;
  result.tar_size = chunker.total();
  result.diff_id = chunker.Digest();
  result.source_tar_size = source_size;
  result.source_diff_id = source_hash.Finish();
  result.chunk_count = static_cast<uint64_t>(toc.chunks_size());
  result.entry_count = static_cast<uint64_t>(toc.entries_size());
  result.key_commitment = keys.commitment;
  toc.set_tar_size(result.tar_size);
  toc.set_tar_sha256(result.diff_id.data(), result.diff_id.size());

  // Self-check: the TOC must pass the very validation every reader applies (data ranges against
  // the final size, hardlink targets).
  {
    auto checked = TocFromProto(toc, /*name_entries_in_errors=*/true);
    if (!checked.ok()) return checked.status().WithContext("layer cannot be represented");
    if (checked->records_end() != sink.size()) {
      return Status::Internal("writer: chunk table ends at " +
                              std::to_string(checked->records_end()) + " but " +
                              std::to_string(sink.size()) + " bytes were written");
    }
  }

  // Seal and write the TOC, then the footer.
  size_t serialized_size = toc.ByteSizeLong();
  if (serialized_size > kMaxTocSerializedSize) {
    return Status::InvalidArgument("TOC would be " + std::to_string(serialized_size) +
                                   " bytes, over the format's limit of " +
                                   std::to_string(kMaxTocSerializedSize));
  }
  std::vector<uint8_t> serialized(serialized_size);
  if (!toc.SerializeToArray(serialized.data(), static_cast<int>(serialized.size()))) {
    return Status::Internal("writer: TOC serialization failed");
  }
  toc.Clear();
  LC_ASSIGN_OR_RETURN(std::vector<uint8_t> plaintext,
                      EncodeTocPlaintext(serialized, options.zstd_level));
  std::vector<uint8_t>().swap(serialized);
  const uint64_t sealed_size = plaintext.size() + kTagSize;
  std::vector<uint8_t> sealed(sealed_size);
  LC_ASSIGN_OR_RETURN(crypto::AesGcm toc_gcm, crypto::AesGcm::Create(keys.toc_key.span()));
  TocAad aad = MakeTocAad(header_bytes, sealed_size);
  LC_RETURN_IF_ERROR(toc_gcm.Seal(TocNonce(), aad, plaintext,
                                  MutableByteSpan(sealed).first(plaintext.size()),
                                  MutableByteSpan(sealed).subspan(plaintext.size(), kTagSize)));
  const uint64_t toc_offset = sink.size();
  result.toc_digest = crypto::Sha256::Of(sealed);
  result.toc_size = sealed.size();
  LC_RETURN_IF_ERROR(sink.Write(sealed));
  LC_RETURN_IF_ERROR(sink.Write(EncodeFooter(header, toc_offset, sealed_size)));
  result.blob_size = sink.size();
  result.blob_digest = sink.Finish();
  return result;
}

}  // namespace lazycrypt::format
