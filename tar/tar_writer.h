// A small tar writer for tests and tools: builds ordinary, unusual and hostile tar streams byte by
// byte without GNU tar. It is deliberately simple (no hardlink detection, no sparse files, no
// reading from disk): the caller says exactly what each entry is.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "tar/tar_reader.h"

namespace lazycrypt::tar {

enum class Flavor {
  kPax,  // POSIX.1-2001: ustar headers ("ustar\0" "00"), PAX 'x' headers when a field does not fit
  kGnu,  // GNU: "ustar  \0" headers, 'L'/'K' long-name blocks, base-256 numbers when octal overflows
};

struct WriteOptions {
  // PAX: put path and linkpath into PAX records even when they fit the header fields.
  bool force_pax_path = false;
  // PAX: never split a long name into the ustar prefix field (long names go to PAX 'path').
  bool no_prefix = false;
  // Write size, uid, gid and mtime in GNU base-256 even when octal fits (either flavour).
  bool base256_numbers = false;
  // PAX: store the size in a PAX 'size' record (the header field holds 0).
  bool pax_size = false;
  // PAX: write xattrs as LIBARCHIVE.xattr.<url-escaped name>=<base64 value> instead of
  // SCHILY.xattr.<name>=<raw value>.
  bool libarchive_xattrs = false;
  // Records appended verbatim (keys and values unchecked) to this entry's PAX 'x' header, which
  // is then written in either flavour. For hostile streams: "GNU.sparse.size", bad values, ...
  std::vector<std::pair<std::string, std::string>> extra_pax;
  // A raw PAX 'x' body to use instead of the records built above (e.g. with a bad length).
  std::optional<std::string> raw_pax_body;
  // The typeflag byte to write instead of the one for entry.type ('S', 'V', '\0', ...).
  std::optional<char> typeflag;
};

// Writes to `out` (not owned, must outlive the writer). Not thread-safe.
class TarWriter {
 public:
  explicit TarWriter(OutputStream& out, Flavor flavor = Flavor::kPax);
  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;

  // Writes the entry's header blocks (extended headers as needed), then `data`, zero-padded to a
  // block boundary. REQUIRES: data.size() == entry.size (InvalidArgument otherwise).
  // Uses entry.{name, link_name, type, mode, uid, gid, uname, gname, mtime_sec, mtime_nsec,
  // size, dev_major, dev_minor, xattrs}; ignores the offsets.
  Status AppendEntry(const Entry& entry, ByteSpan data = {}, const WriteOptions& options = {});

  // Header blocks only: the caller then supplies entry.size data bytes and the padding itself
  // (e.g. to stream a huge entry from a generator). Returns the data offset.
  Result<uint64_t> AppendHeader(const Entry& entry, const WriteOptions& options = {});

  // A PAX global ('g') header with these records, in this order.
  Status AppendGlobalHeader(const std::vector<std::pair<std::string, std::string>>& records);

  // Arbitrary bytes (a hand-made header block, garbage, a truncated block).
  Status AppendRaw(ByteSpan bytes);

  // The end-of-archive marker (two zero blocks), then zeros up to a multiple of record_size
  // (GNU tar's default record is 10240 bytes; 0 for no padding). Does not Close `out`.
  Status Finish(size_t record_size = 10240);

  uint64_t offset() const { return offset_; }

 private:
  Status Write(ByteSpan bytes);
  Status WritePadding(uint64_t size);
  Status WriteExtended(char type, std::string_view name, std::string_view body,
                       const Entry& entry);

  OutputStream& out_;
  Flavor flavor_;
  uint64_t offset_ = 0;
};

// One PAX record: "<len> <key>=<value>\n" with the self-including length computed.
std::string PaxRecord(std::string_view key, std::string_view value);

// Recomputes the checksum field of a 512-byte header block (after a test patched a field).
// REQUIRES: block.size() == 512.
void SetHeaderChecksum(MutableByteSpan block);

}  // namespace lazycrypt::tar
