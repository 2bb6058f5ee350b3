#include "common/io.h"

#include <algorithm>
#include <cstring>

namespace lazycrypt {

Status ReadFull(InputStream& in, MutableByteSpan out, std::string_view what) {
  size_t done = 0;
  while (done < out.size()) {
    LC_ASSIGN_OR_RETURN(size_t n, in.Read(out.subspan(done)));
    if (n == 0) {
      return Status::Corruption("unexpected end of " + std::string(what));
    }
    done += n;
  }
  return Status::Ok();
}

Result<size_t> MemoryInputStream::Read(MutableByteSpan out) {
  size_t n = std::min({out.size(), data_.size() - pos_, max_read_bytes_});
  if (n > 0) std::memcpy(out.data(), data_.data() + pos_, n);
  pos_ += n;
  return n;
}

Status MemoryOutputStream::Write(ByteSpan data) {
  if (closed_) return Status::FailedPrecondition("write after close");
  bytes_.insert(bytes_.end(), data.begin(), data.end());
  return Status::Ok();
}

Status MemoryOutputStream::Close() {
  closed_ = true;
  return Status::Ok();
}

Status MemoryBlobSource::ReadAt(uint64_t offset, MutableByteSpan out) {
  if (offset > bytes_.size() || out.size() > bytes_.size() - offset) {
    return Status::Corruption("read of " + std::to_string(out.size()) + " bytes at offset " +
                              std::to_string(offset) + " is past the end of a " +
                              std::to_string(bytes_.size()) + "-byte blob");
  }
  if (!out.empty()) std::memcpy(out.data(), bytes_.data() + offset, out.size());
  return Status::Ok();
}

Result<size_t> BlobInputStream::Read(MutableByteSpan out) {
  uint64_t left = blob_.size() - pos_;
  size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), left));
  if (n == 0) return size_t{0};
  LC_RETURN_IF_ERROR(blob_.ReadAt(pos_, out.first(n)));
  pos_ += n;
  return n;
}

Result<uint64_t> CopyStream(InputStream& in, OutputStream& out) {
  std::vector<uint8_t> buf(256 * 1024);
  uint64_t total = 0;
  for (;;) {
    LC_ASSIGN_OR_RETURN(size_t n, in.Read(buf));
    if (n == 0) return total;
    LC_RETURN_IF_ERROR(out.Write(ByteSpan(buf.data(), n)));
    total += n;
  }
}

}  // namespace lazycrypt
