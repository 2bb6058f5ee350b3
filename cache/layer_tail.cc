#include "cache/layer_tail.h"

#include <cstring>
#include <utility>

namespace lazycrypt::cache {

TailCachingSource::TailCachingSource(BlobSource& inner, ChunkStore* store, std::string blob_key)
    : inner_(inner), store_(store), blob_key_(std::move(blob_key)) {}

void TailCachingSource::LoadStored() {
  if (loaded_) return;
  loaded_ = true;
  if (store_ == nullptr) return;
  // An unreadable or invalid store key is a cache miss, never a failed open.
  Result<std::optional<StoredTail>> got = store_->GetTail(blob_key_);
  if (!got.ok() || !*got) return;
  StoredTail& tail = **got;
  // A tail that does not end where the blob ends belongs to no blob of this size: ignored.
  if (tail.blob_offset > size() || tail.bytes.size() != size() - tail.blob_offset) return;
  stored_ = std::move(tail);
}

uint64_t TailCachingSource::stored_bytes() {
  LoadStored();
  return stored_ ? stored_->bytes.size() : 0;
}

bool TailCachingSource::Serve(const std::vector<uint8_t>& bytes, uint64_t bytes_offset,
                              uint64_t offset, MutableByteSpan out) const {
  if (bytes.empty() || offset < bytes_offset) return false;
  const uint64_t skip = offset - bytes_offset;
  if (skip > bytes.size() || out.size() > bytes.size() - skip) return false;
  if (!out.empty()) std::memcpy(out.data(), bytes.data() + skip, out.size());
  return true;
}

Status TailCachingSource::ReadAt(uint64_t offset, MutableByteSpan out) {
  LoadStored();
  if (stored_ && Serve(stored_->bytes, stored_->blob_offset, offset, out)) {
    ++reads_from_store_;
    return Status::Ok();
  }
  if (Serve(kept_, kept_offset_, offset, out)) return Status::Ok();
  ++reads_from_inner_;
  LC_RETURN_IF_ERROR(inner_.ReadAt(offset, out));
  if (store_ == nullptr || offset > size() || out.size() > size() - offset) return Status::Ok();
  const uint64_t end = offset + out.size();
  if (end == size() && (kept_.empty() || offset < kept_offset_)) {
    kept_.assign(out.begin(), out.end());  // the tail read (footer and maybe the TOC)
    kept_offset_ = offset;
  } else if (!kept_.empty() && end == kept_offset_) {
    kept_.insert(kept_.begin(), out.begin(), out.end());  // the rest of a larger TOC
    kept_offset_ = offset;
  }
  return Status::Ok();
}

Status TailCachingSource::Persist(uint64_t from) {
  if (store_ == nullptr || from >= size()) return Status::Ok();
  if (stored_ && stored_->blob_offset <= from) return Status::Ok();  // there already
  if (kept_.empty() || kept_offset_ > from) {
    return Status::FailedPrecondition("layer tail: bytes from offset " + std::to_string(from) +
                                      " were not read, cannot store them");
  }
  const uint64_t skip = from - kept_offset_;
  LC_RETURN_IF_ERROR(
      store_->PutTail(blob_key_, from, ByteSpan(kept_).subspan(static_cast<size_t>(skip))));
  kept_ = {};
  return Status::Ok();
}

Status TailCachingSource::Drop() {
  stored_.reset();
  loaded_ = true;
  if (store_ == nullptr) return Status::Ok();
  return store_->DropTail(blob_key_);
}

}  // namespace lazycrypt::cache
