#include "format/layer_reader.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace lazycrypt::format {
namespace {

void Zero(MutableByteSpan out) {
  if (!out.empty()) OPENSSL_cleanse(out.data(), out.size());
}

}  // namespace

Result<std::unique_ptr<LayerReader>> LayerReader::Create(BlobSource& blob,
                                                         std::shared_ptr<const LayerIndex> index,
                                                         std::shared_ptr<const ChunkOpener> opener) {
  if (!index || !opener) return Status::InvalidArgument("LayerReader: null index or opener");
  if (opener->salt() != index->header().salt) {
    return Status::FailedPrecondition("LayerReader: the chunk opener belongs to another blob");
  }
  if (blob.size() != index->blob_size()) {
    return Status::FailedPrecondition("LayerReader: blob is " + std::to_string(blob.size()) +
                                      " bytes, the index was opened on " +
                                      std::to_string(index->blob_size()));
  }
  return std::unique_ptr<LayerReader>(
      new LayerReader(blob, std::move(index), std::move(opener)));
}

Result<std::unique_ptr<LayerReader>> LayerReader::Open(
    BlobSource& blob, const LayerKey& key, const crypto::Sha256Digest& pinned_toc_digest) {
  LC_ASSIGN_OR_RETURN(std::shared_ptr<const LayerIndex> index,
                      LayerIndex::Open(blob, key, pinned_toc_digest));
  LC_ASSIGN_OR_RETURN(std::shared_ptr<const ChunkOpener> opener,
                      ChunkOpener::Create(key, index->header()));
  return Create(blob, std::move(index), std::move(opener));
}

Status LayerReader::OpenRecord(uint64_t index, ByteSpan record, MutableByteSpan raw_out) const {
  auto chunks = index_->chunks();
  if (index >= chunks.size()) {
    Zero(raw_out);
    return Status::InvalidArgument("chunk " + std::to_string(index) + " does not exist (the blob has " +
                                   std::to_string(chunks.size()) + ")");
  }
  return opener_->Open(chunks[index], record, raw_out);
}

Result<std::shared_ptr<const std::vector<uint8_t>>> LayerReader::ReadChunk(uint64_t index) const {
  auto chunks = index_->chunks();
  if (index >= chunks.size()) {
    return Status::InvalidArgument("chunk " + std::to_string(index) + " does not exist (the blob has " +
                                   std::to_string(chunks.size()) + ")");
  }
  const ChunkInfo& chunk = chunks[index];
  auto record = std::make_unique_for_overwrite<uint8_t[]>(chunk.record_size());
  MutableByteSpan record_span(record.get(), chunk.record_size());
  LC_RETURN_IF_ERROR(blob_.ReadAt(chunk.blob_offset, record_span)
                         .WithContext("chunk " + std::to_string(index)));
  // Plaintext: wiped when the last holder lets go (or when opening fails).
  std::shared_ptr<std::vector<uint8_t>> raw(new std::vector<uint8_t>(chunk.raw_size),
                                            [](std::vector<uint8_t>* bytes) {
                                              Zero(*bytes);
                                              delete bytes;
                                            });
  LC_RETURN_IF_ERROR(opener_->Open(chunk, record_span, *raw));
  return std::shared_ptr<const std::vector<uint8_t>>(std::move(raw));
}

Result<size_t> LayerReader::ReadFile(EntryView entry, uint64_t offset,
                                     MutableByteSpan out) const {
  if (!index_->Holds(entry)) {
    return Status::InvalidArgument("ReadFile: entry is not one of this layer's");
  }
  if (entry.type() != EntryType::kRegular) {
    return Status::InvalidArgument("ReadFile: entry is a " +
                                   std::string(EntryTypeName(entry.type())) +
                                   ", not a regular file");
  }
  const uint64_t entry_size = entry.size();
  if (offset >= entry_size || out.empty()) return size_t{0};
  const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), entry_size - offset));
  const MutableByteSpan caller_out = out;
  out = out.first(n);
  const ChunkRange range = index_->ChunksForRange(entry, offset, n);
  const uint64_t records_begin = index_->RecordsBegin(range);
  const uint64_t records_size = index_->RecordsEnd(range) - records_begin;

  // One fetch for every record the range touches: they are adjacent in the blob.
  auto records = std::make_unique_for_overwrite<uint8_t[]>(records_size);
  if (Status s = blob_.ReadAt(records_begin, MutableByteSpan(records.get(), records_size));
      !s.ok()) {
    Zero(caller_out);
    return s;
  }

  const uint64_t want_begin = entry.data_offset() + offset;
  const uint64_t want_end = want_begin + n;
  auto chunks = index_->chunks();
  std::unique_ptr<uint8_t[]> partial;  // for chunks only partly inside `out`
  size_t partial_size = 0;
  for (uint64_t i = range.first; i < range.first + range.count; ++i) {
    const ChunkInfo& chunk = chunks[i];
    ByteSpan record(records.get() + (chunk.blob_offset - records_begin), chunk.record_size());
    const uint64_t from = std::max(chunk.tar_offset, want_begin);
    const uint64_t to = std::min(chunk.tar_end(), want_end);
    MutableByteSpan dst = out.subspan(from - want_begin, to - from);
    Status s;
    if (from == chunk.tar_offset && to == chunk.tar_end()) {
      s = opener_->Open(chunk, record, dst);  // the whole chunk: decrypt in place
    } else {
      if (partial_size < chunk.raw_size) {
        partial = std::make_unique_for_overwrite<uint8_t[]>(chunk.raw_size);
        partial_size = chunk.raw_size;
      }
      MutableByteSpan raw(partial.get(), chunk.raw_size);
      s = opener_->Open(chunk, record, raw);
      if (s.ok()) std::memcpy(dst.data(), raw.data() + (from - chunk.tar_offset), dst.size());
    }
    if (!s.ok()) {
      Zero(caller_out);
      return s;
    }
  }
  return n;
}

}  // namespace lazycrypt::format
