// An exact, streaming tar parser. It knows the byte offset of every header and every file's data
// in the (uncompressed) stream, and hands every byte it consumes to a tee, in order, exactly once,
// so a caller can hash, chunk or copy the stream while parsing it.
//
// Formats: V7, ustar (with the `prefix` field), POSIX pax ('x' per-entry and 'g' global extended
// headers) and GNU (long name 'L' / long link 'K' blocks, base-256 numbers). Everything a
// container image layer uses is supported; anything else is rejected by name, never dropped:
// GNU sparse files ('S', GNU.sparse.* PAX keys), multi-volume ('M'), volume labels ('V'), GNU
// dumpdirs ('D'), unknown typeflags. See tar/README.md for the exact rules.
//
// Errors: malformed input is Status::Corruption, a well-formed but unsupported construct is
// Status::Unsupported; messages name the entry (when known) and the byte offset, e.g.
//   "tar entry 'a/b' at offset 1536: unsupported type 'S' (GNU sparse file)".
// Messages contain entry names (metadata from the archive), never file data.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"

namespace lazycrypt::tar {

enum class EntryType { kRegular, kHardlink, kSymlink, kCharDevice, kBlockDevice, kDirectory, kFifo };

// "regular file", "hard link", "symlink", "character device", "block device", "directory", "fifo".
std::string_view EntryTypeName(EntryType type);

struct Entry {
  std::string name;       // full path as the archive gives it (after PAX/GNU long-name resolution);
                          // never empty, never contains NUL; directories usually end in '/'
  std::string link_name;  // symlink target or hardlink target (non-empty for those two types);
                          // whatever the header holds for other types
  EntryType type = EntryType::kRegular;
  uint32_t mode = 0;      // permission bits incl. setuid/setgid/sticky (07777)
  uint64_t uid = 0, gid = 0;
  std::string uname, gname;
  int64_t mtime_sec = 0;  // may be negative (before 1970)
  uint32_t mtime_nsec = 0;  // 0..999999999, from PAX mtime when present
  uint64_t size = 0;      // data bytes that follow (0 for non-regular)
  uint32_t dev_major = 0, dev_minor = 0;  // character and block devices only
  std::map<std::string, std::string> xattrs;  // from SCHILY.xattr.* and LIBARCHIVE.xattr.* (decoded)
  // Offset in the uncompressed stream of this entry's first header block: the PAX 'x' / GNU
  // 'L'/'K' block if any, and also any PAX 'g' global header that directly precedes it, so that
  // [header_offset, data_offset + size + padding) of consecutive entries tile the stream.
  uint64_t header_offset = 0;
  uint64_t data_offset = 0;  // offset of the first data byte (== end of its last header block)

  bool operator==(const Entry&) const = default;
};

// Receives every byte the parser consumes from the stream, in order, exactly once. A non-OK
// status stops the parse and is returned by the call that fed the tee.
using Tee = std::function<Status(ByteSpan raw)>;

// Not thread-safe. After any call returns an error, every later call returns that same error.
class TarReader {
 public:
  // `in` is not owned and must outlive the reader; `tee` may be null.
  explicit TarReader(InputStream& in, Tee tee = nullptr);
  ~TarReader();
  TarReader(const TarReader&) = delete;
  TarReader& operator=(const TarReader&) = delete;

  // Skips (and tees) the rest of the current entry's data and padding, then parses the next
  // entry's header blocks. When it returns an entry, the tee has been given exactly
  // entry.data_offset bytes. Returns std::nullopt at the end-of-archive marker (two zero blocks;
  // one zero block followed by EOF is accepted as GNU tar does; so is EOF exactly at a header
  // boundary with no marker at all, as Go's archive/tar and GNU tar accept and umoci writes), and
  // again on every later call. EOF inside a header, its data or an extended header is Corruption.
  Result<std::optional<Entry>> Next();

  // Reads the current entry's data (and tees it) into out; returns the byte count, 0 at the end
  // of the data (or before the first Next()). Data moves with at most one memcpy: large reads
  // go straight from the stream into out.
  Result<size_t> ReadData(MutableByteSpan out);

  // REQUIRES: Next() returned std::nullopt (FailedPrecondition otherwise).
  // Consumes and tees everything left in the stream (the rest of the zero record padding and
  // anything after it) until EOF. Returns the byte count.
  Result<uint64_t> DrainToEnd();
  // DrainToEnd for streams that may hold nothing but zero bytes after the marker (lazycrypt
  // layers, docs/FORMAT.md §5): Corruption "tar: data after the end-of-archive marker (a
  // non-zero byte at offset N)" at the first other byte, which is not teed.
  Result<uint64_t> DrainZerosToEnd();

  // Bytes consumed (= teed) so far.
  uint64_t offset() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Limits applied to untrusted archives.
inline constexpr uint64_t kMaxExtendedHeaderSize = 1 << 20;   // one PAX 'x'/'g' or GNU 'L'/'K' block
inline constexpr uint64_t kMaxExtendedHeadersPerEntry = 8 << 20;  // sum over one entry's blocks
inline constexpr uint64_t kMaxEntrySize = uint64_t{1} << 44;  // 16 TiB: anything larger is absurd

}  // namespace lazycrypt::tar
