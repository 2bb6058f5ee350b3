#include "format/decrypt.h"

#include <cstring>
#include <string>
#include <vector>

#include "compress/compress.h"
#include "format/chunk.h"
#include "format/layer_index.h"
#include "format/ordered_pipeline.h"
#include "format/toc_tar_match.h"

namespace lazycrypt::format {
namespace {

// A decoded chunk on its way to the output: raw bytes (hashed), and in kTarZstd mode the frame
// that is written instead of them.
struct Decoded {
  std::vector<uint8_t> raw;
  std::vector<uint8_t> frame;
  crypto::Sha256Digest record_sha256{};  // stream path: compared with the TOC's pin at the end
};

// Per-worker zstd contexts.
struct WorkerCodecs {
  explicit WorkerCodecs(int level) : compressor(level) {}
  compress::ZstdCompressor compressor;
  compress::ZstdDecompressor decompressor;
};

// Shared by both decoders: opens records, emits output in order, hashes the tar stream and
// hands it to the TOC/tar matcher.
class ChunkDecoder {
 public:
  ChunkDecoder(const ChunkOpener& opener, const DecryptOptions& options, OutputStream& out,
               TocTarMatcher& matcher)
      : opener_(opener), options_(options), out_(out), matcher_(matcher) {
    int threads = internal::ResolveThreads(options.threads);
    codecs_.reserve(threads);
    for (int i = 0; i < threads; ++i) codecs_.emplace_back(options.zstd_level);
  }

  int threads() const { return static_cast<int>(codecs_.size()); }

  // Opens `record` as chunk `index`; when `expected` is given, its header must be that entry's.
  Result<Decoded> Decode(int worker, uint64_t index, const ChunkInfo* expected, ByteSpan record) {
    if (expected != nullptr) {
      RecordHeaderBytes want = EncodeRecordHeader(expected->record_header());
      if (record.size() < kRecordHeaderSize ||
          std::memcmp(record.data(), want.data(), kRecordHeaderSize) != 0) {
        return Status::Corruption("chunk " + std::to_string(index) +
                                  ": record header does not match the chunk table");
      }
      // The pin before the key: a record sealed by another key holder is never opened.
      LC_RETURN_IF_ERROR(CheckRecordDigest(*expected, record));
    }
    if (record.size() < kRecordHeaderSize) {
      return Status::Corruption("chunk " + std::to_string(index) + ": record is truncated");
    }
    LC_ASSIGN_OR_RETURN(RecordHeader header, ParseRecordHeader(record.first(kRecordHeaderSize)));
    Decoded d;
    // Without the TOC yet (stream path), hash the record here, on the worker, for the check
    // against the pins once the TOC is open.
    if (expected == nullptr) d.record_sha256 = crypto::Sha256::Of(record);
    d.raw = pool_.Get();
    if (options_.output == DecryptOutput::kTar) {
      d.raw.resize(header.raw_size);
      LC_RETURN_IF_ERROR(opener_.Open(index, record, d.raw));
      return d;
    }
    // kTarZstd: the payload is either already a frame (pass it through, decompress only to hash)
    // or the raw bytes (compress them into a frame).
    WorkerCodecs& codecs = codecs_[worker];
    std::vector<uint8_t> payload = pool_.Get();
    payload.resize(header.payload_size);
    LC_RETURN_IF_ERROR(opener_.OpenPayload(index, record, payload).status());
    if (header.stored) {
      d.raw = std::move(payload);
      d.frame = pool_.Get();
      d.frame.resize(compress::ZstdCompressor::Bound(d.raw.size()));
      LC_ASSIGN_OR_RETURN(size_t n, codecs.compressor.Compress(d.raw, d.frame));
      d.frame.resize(n);
    } else {
      d.raw.resize(header.raw_size);
      Status s = codecs.decompressor.DecompressExact(payload, d.raw);
      if (!s.ok()) return s.WithContext("chunk " + std::to_string(index));
      d.frame = std::move(payload);
    }
    return d;
  }

  Status Emit(Decoded& d) {
    record_digests_.push_back(d.record_sha256);
    hash_.Update(d.raw);
    tar_size_ += d.raw.size();
    LC_RETURN_IF_ERROR(matcher_.Feed(d.raw));
    LC_RETURN_IF_ERROR(out_.Write(options_.output == DecryptOutput::kTar ? d.raw : d.frame));
    pool_.Put(std::move(d.raw));
    pool_.Put(std::move(d.frame));
    return Status::Ok();
  }

  uint64_t tar_size() const { return tar_size_; }
  // SHA-256 of each record emitted, in order (stream path; zero when the pin was checked first).
  const std::vector<crypto::Sha256Digest>& record_digests() const { return record_digests_; }
  crypto::Sha256Digest Finish() { return hash_.Finish(); }

 private:
  const ChunkOpener& opener_;
  const DecryptOptions& options_;
  OutputStream& out_;
  TocTarMatcher& matcher_;
  std::vector<WorkerCodecs> codecs_;
  internal::BufferPool pool_;
  crypto::Sha256 hash_;
  uint64_t tar_size_ = 0;
  std::vector<crypto::Sha256Digest> record_digests_;
};

Status CheckDiffId(const crypto::Sha256Digest& from_toc, const crypto::Sha256Digest& computed) {
  if (from_toc != computed) {
    return Status::AuthFailed("diff_id mismatch: the TOC says " + crypto::OciDigest(from_toc) +
                              ", the chunks decrypt to " + crypto::OciDigest(computed));
  }
  return Status::Ok();
}

// Reads `in` to its end, failing once more than `limit` bytes arrive.
Result<std::vector<uint8_t>> ReadToEnd(InputStream& in, uint64_t limit) {
  std::vector<uint8_t> out;
  size_t pos = 0;
  for (;;) {
    if (out.size() - pos < 64 * 1024) out.resize(out.size() + 256 * 1024);
    LC_ASSIGN_OR_RETURN(size_t n, in.Read(MutableByteSpan(out).subspan(pos)));
    if (n == 0) break;
    pos += n;
    if (pos > limit) {
      return Status::Corruption("more than " + std::to_string(limit) +
                                " bytes follow the last chunk (the TOC and footer limit)");
    }
  }
  out.resize(pos);
  return out;
}

}  // namespace

Result<crypto::Sha256Digest> DecryptLayer(BlobSource& blob, const LayerKey& key,
                                          const crypto::Sha256Digest& pinned_toc_digest,
                                          OutputStream& out, const DecryptOptions& options) {
  if (options.threads < 0) return Status::InvalidArgument("threads must be >= 0");
  LC_ASSIGN_OR_RETURN(std::shared_ptr<const LayerIndex> index,
                      LayerIndex::Open(blob, key, pinned_toc_digest));
  BlobHeaderBytes header_bytes;
  LC_RETURN_IF_ERROR(blob.ReadAt(0, header_bytes).WithContext("blob header"));
  if (header_bytes != index->header_bytes()) {
    return Status::Corruption("blob header does not match its copy in the footer");
  }
  LC_ASSIGN_OR_RETURN(std::shared_ptr<const ChunkOpener> opener,
                      ChunkOpener::Create(key, index->header()));

  TocTarMatcher matcher(index->entries());
  ChunkDecoder decoder(*opener, options, out, matcher);
  auto chunks = index->chunks();
  internal::OrderedPipeline<uint64_t, Decoded> pipeline(
      decoder.threads(), 2 * static_cast<size_t>(decoder.threads()),
      [&](int worker, uint64_t& i) -> Result<Decoded> {
        const ChunkInfo& chunk = chunks[i];
        std::vector<uint8_t> record(chunk.record_size());
        LC_RETURN_IF_ERROR(
            blob.ReadAt(chunk.blob_offset, record).WithContext("chunk " + std::to_string(i)));
        return decoder.Decode(worker, i, &chunk, record);
      },
      [&](Decoded& d) { return decoder.Emit(d); });
  for (uint64_t i = 0; i < chunks.size(); ++i) {
    if (!pipeline.Submit(i).ok()) break;  // Finish reports the error
  }
  LC_RETURN_IF_ERROR(pipeline.Finish());
  crypto::Sha256Digest diff_id = decoder.Finish();
  if (decoder.tar_size() != index->tar_size()) {
    return Status::Internal("decrypted " + std::to_string(decoder.tar_size()) +
                            " bytes, the TOC says " + std::to_string(index->tar_size()));
  }
  LC_RETURN_IF_ERROR(CheckDiffId(index->diff_id(), diff_id));
  LC_RETURN_IF_ERROR(matcher.Finish());
  return diff_id;
}

Result<crypto::Sha256Digest> DecryptLayerStream(
    InputStream& blob, const LayerKey& key,
    const std::optional<crypto::Sha256Digest>& pinned_toc_digest, OutputStream& out,
    const DecryptOptions& options) {
  if (options.threads < 0) return Status::InvalidArgument("threads must be >= 0");
  BlobHeaderBytes header_bytes;
  LC_RETURN_IF_ERROR(ReadFull(blob, header_bytes, "blob header"));
  LC_ASSIGN_OR_RETURN(BlobHeader header, ParseBlobHeader(header_bytes));
  LC_ASSIGN_OR_RETURN(DerivedKeys keys, DeriveAndCheckKeys(key, header));
  LC_ASSIGN_OR_RETURN(std::shared_ptr<const ChunkOpener> opener,
                      ChunkOpener::FromKeys(keys, header.salt));

  struct Job {
    uint64_t index;
    std::vector<uint8_t> record;
  };
  // The TOC comes last in a stream: the matcher collects the tar's entries until then.
  TocTarMatcher matcher;
  ChunkDecoder decoder(*opener, options, out, matcher);
  internal::OrderedPipeline<Job, Decoded> pipeline(
      decoder.threads(), 2 * static_cast<size_t>(decoder.threads()),
      [&](int worker, Job& job) { return decoder.Decode(worker, job.index, nullptr, job.record); },
      [&](Decoded& d) { return decoder.Emit(d); });

  // Records until the one flagged last. Its flag is trusted here only to know where to stop: every
  // record is authenticated (flags included) before Finish returns, and the TOC's chunk table is
  // compared with what was read.
  std::vector<RecordHeader> seen;
  uint64_t offset = kBlobHeaderSize;
  // An error in reading is reported after the pipeline's own, which concerns earlier chunks and
  // is the root cause when, say, a tampered flag made the reader run past the last record.
  auto fail = [&](Status s) -> Status {
    Status earlier = pipeline.Finish();
    return earlier.ok() ? s : earlier;
  };
  for (uint64_t i = 0;; ++i) {
    if (i >= kMaxChunks) {
      return fail(Status::Corruption("more than " + std::to_string(kMaxChunks) + " chunks"));
    }
    std::string where = "chunk " + std::to_string(i) + " at blob offset " + std::to_string(offset);
    RecordHeaderBytes hb;
    if (Status s = ReadFull(blob, hb, where + " header"); !s.ok()) return fail(s);
    auto parsed = ParseRecordHeader(hb);
    if (!parsed.ok()) return fail(parsed.status().WithContext(where));
    const RecordHeader& h = *parsed;
    std::vector<uint8_t> record(h.record_size());
    std::memcpy(record.data(), hb.data(), kRecordHeaderSize);
    if (Status s = ReadFull(blob, MutableByteSpan(record).subspan(kRecordHeaderSize), where);
        !s.ok()) {
      return fail(s);
    }
    seen.push_back(h);
    offset += h.record_size();
    if (Status s = pipeline.Submit(Job{i, std::move(record)}); !s.ok()) return fail(s);
    if (h.last) break;
  }
  LC_RETURN_IF_ERROR(pipeline.Finish());

  // The sealed TOC and the footer: everything left.
  LC_ASSIGN_OR_RETURN(std::vector<uint8_t> trailer,
                      ReadToEnd(blob, MaxSealedTocSize() + kFooterSize));
  if (trailer.size() < kFooterSize + kTagSize + 1) {
    return Status::Corruption("blob ends " + std::to_string(trailer.size()) +
                              " bytes after its last chunk, before a TOC and footer");
  }
  const uint64_t blob_size = offset + trailer.size();
  LC_ASSIGN_OR_RETURN(Footer footer,
                      ParseFooter(ByteSpan(trailer).last(kFooterSize), blob_size));
  if (footer.header_bytes != header_bytes) {
    return Status::Corruption("blob header does not match its copy in the footer");
  }
  if (footer.toc_offset != offset) {
    return Status::Corruption("footer puts the TOC at blob offset " +
                              std::to_string(footer.toc_offset) + " but the last chunk ends at " +
                              std::to_string(offset));
  }
  LC_ASSIGN_OR_RETURN(
      Toc toc, internal::OpenSealedToc(ByteSpan(trailer).first(footer.toc_size), keys, header_bytes,
                                       pinned_toc_digest ? &*pinned_toc_digest : nullptr));
  if (toc.chunks.size() != seen.size()) {
    return Status::Corruption("TOC lists " + std::to_string(toc.chunks.size()) +
                              " chunks, the blob holds " + std::to_string(seen.size()));
  }
  for (size_t i = 0; i < seen.size(); ++i) {
    if (toc.chunks[i].record_header() != seen[i]) {
      return Status::Corruption("chunk " + std::to_string(i) +
                                ": record header does not match the TOC's chunk table");
    }
    // Records arrive before the TOC: each was hashed as it streamed (output already written
    // is discarded by the caller on this error).
    if (i >= decoder.record_digests().size() ||
        decoder.record_digests()[i] != toc.chunks[i].record_sha256) {
      return Status::AuthFailed("chunk " + std::to_string(i) +
                                ": record does not match the digest pinned in the TOC");
    }
  }
  crypto::Sha256Digest diff_id = decoder.Finish();
  if (decoder.tar_size() != toc.tar_size) {
    return Status::Corruption("decrypted " + std::to_string(decoder.tar_size()) +
                              " bytes, the TOC says " + std::to_string(toc.tar_size));
  }
  LC_RETURN_IF_ERROR(CheckDiffId(toc.diff_id, diff_id));
  LC_RETURN_IF_ERROR(matcher.Finish(toc.entries));
  return diff_id;
}

}  // namespace lazycrypt::format
