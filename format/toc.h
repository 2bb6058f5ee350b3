// The TOC as C++ values, and the functions that turn untrusted TOC bytes into them. Parsing and
// validation need no key (format/toc_fuzz.cc calls them directly); LayerIndex (layer_index.h) is
// the only way a reader gets a TOC from a blob, after its digest and tag are verified.
// All functions are thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "crypto/digest.h"
#include "format/layout.h"
#include "format/wire_bounds.h"

namespace lazycrypt::format {

namespace v1 {
class Toc;  // format/toc.pb.h; kept out of this header
class Entry;
}

// The TOC's `version` field (not the blob header's, which stays kFormatVersion). Version 2 added
// a SHA-256 per chunk record; readers refuse version 1 ("TOC has no chunk digests").
inline constexpr uint32_t kTocVersion = 2;

enum class EntryType : uint8_t {
  kRegular = 1,
  kDirectory = 2,
  kSymlink = 3,
  kHardlink = 4,
  kCharDevice = 5,
  kBlockDevice = 6,
  kFifo = 7,
};
std::string_view EntryTypeName(EntryType type);

// One file system object of the layer, as the tar stream describes it.
struct Entry {
  std::string name;         // normalized (see NormalizeEntryName); the root directory is "."
  EntryType type = EntryType::kRegular;
  uint32_t mode = 0;        // permission bits incl. setuid/setgid/sticky (<= 07777)
  uint64_t uid = 0, gid = 0;
  std::string uname, gname;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;  // < 1e9
  uint64_t size = 0;        // regular files: data bytes; 0 otherwise
  std::string link_target;  // symlink: target as given; hardlink: normalized name of an earlier entry
  uint32_t dev_major = 0, dev_minor = 0;  // devices only
  std::map<std::string, std::string> xattrs;
  uint64_t data_offset = 0;  // regular files: offset of the first data byte in the tar stream

  bool operator==(const Entry&) const = default;
};

// One chunk record, with the offsets a reader derives from the cumulative sizes.
struct ChunkInfo {
  uint64_t index = 0;
  uint32_t payload_size = 0;
  uint32_t raw_size = 0;
  bool stored = false;
  bool last = false;         // index == chunk count - 1
  uint64_t blob_offset = 0;  // offset of the record (its header) in the blob
  uint64_t tar_offset = 0;   // offset of its first raw byte in the tar stream
  // SHA-256 of the record's bytes in the blob (header, ciphertext, tag), pinned by the TOC.
  crypto::Sha256Digest record_sha256{};

  uint64_t record_size() const { return kRecordHeaderSize + uint64_t{payload_size} + kTagSize; }
  uint64_t blob_end() const { return blob_offset + record_size(); }
  uint64_t tar_end() const { return tar_offset + raw_size; }
  RecordHeader record_header() const { return {payload_size, raw_size, last, stored}; }
  bool operator==(const ChunkInfo&) const = default;
};

// A validated TOC. Invariants (established by ParseToc/TocFromProto):
// - version kTocVersion; every chunk has its record's SHA-256; kMinChunkSizeBytes <= target_chunk_size <= kMaxChunkSizeBytes;
// - 1 <= chunks.size() <= kMaxChunks; every chunk 1 <= raw_size <= target_chunk_size, payload
//   sizes as ParseRecordHeader requires; offsets cumulative from kBlobHeaderSize / 0; exactly the
//   final chunk has last = true; sum of raw sizes == tar_size;
// - entries.size() <= kMaxTocEntries; every entry valid (see ValidateEntry), and every hardlink
//   names an earlier non-directory entry;
// - prefetch: strictly increasing indexes into entries, each of a regular file.
struct Toc {
  uint32_t version = 0;
  uint32_t target_chunk_size = 0;
  std::vector<ChunkInfo> chunks;
  uint64_t tar_size = 0;
  crypto::Sha256Digest diff_id{};
  std::vector<Entry> entries;
  // Regular files marked for prefetch at conversion time, as indexes into `entries` (see above).
  std::vector<uint32_t> prefetch;

  // Blob offset where the sealed TOC must start: the end of the last record.
  uint64_t records_end() const { return chunks.empty() ? kBlobHeaderSize : chunks.back().blob_end(); }
};

// Turns a raw tar path into the TOC's normalized form: leading "/" and "./" dropped, empty and "."
// components dropped, trailing "/" dropped; "" (after dropping) becomes ".". Corruption for a ".."
// component, a NUL byte, an empty raw name, a component over 255 bytes or a path over 4095 bytes.
Result<std::string> NormalizeEntryName(std::string_view raw);
// True iff name is already in normalized form (NormalizeEntryName(name) == name).
bool IsNormalizedName(std::string_view name);

// Checks one entry on its own (not hardlink targets, which need the entries before it).
// tar_size bounds regular files' data ranges. Messages start with "entry 'name': ".
Status ValidateEntry(const Entry& entry, uint64_t tar_size);

// What a reader accepts of one TOC, checked before it allocates for it. The defaults are the
// format's own maxima (what any writer may produce); a daemon may lower them, e.g. to bound the
// memory one hostile layer can pin (`[limits]` in the snapshotter's config, `lazycrypt mount
// --toc-max-*`). Errors name the limit: "TOC: 9000000 entries (limit 8388608)".
struct TocLimits {
  uint64_t max_serialized_bytes = kMaxTocSerializedSize;
  uint64_t max_chunks = kMaxChunks;
  uint64_t max_entries = kMaxTocEntries;
  // InvalidArgument naming `what` and the limit unless every limit is in 1..the format's maximum.
  Status Validate(std::string_view what = "TOC limits") const;
  // The largest sealed TOC (size prefix, zstd frame, tag) whose plaintext could fit
  // max_serialized_bytes: LayerIndex::Open refuses a footer claiming more before reading it.
  uint64_t MaxSealedBytes() const;
};

// One entry ↔ its protobuf message (the TOC's entries, and the zindex's, format::v1::Entry).
// EntryToProto takes the entry by value so callers can move its strings. EntryFromProto checks
// only what the message alone can break (an unknown type: Corruption "type N is unknown";
// xattr names not strictly increasing: "xattr names are not sorted and unique"); callers add
// which entry it is and run ValidateEntry.
void EntryToProto(Entry e, v1::Entry* p);
Result<Entry> EntryFromProto(const v1::Entry& p);

// The most xattrs one entry may carry (FORMAT.md §4), and in all: 4 per allowed entry. Checked on
// the wire, before parsing (format/wire_bounds.h).
inline constexpr uint64_t kMaxXattrsPerEntry = 4096;

// The wire schema of an Entry message and its Xattr messages, for CheckWireShape (the TOC's, and
// the zindex core's entries): every field of §4's Entry, nothing else; xattrs at most
// kMaxXattrsPerEntry per entry and 4 * max_entries in all. Not copyable (it points into itself).
class EntryWireSchema {
 public:
  explicit EntryWireSchema(uint64_t max_entries);
  EntryWireSchema(const EntryWireSchema&) = delete;
  EntryWireSchema& operator=(const EntryWireSchema&) = delete;
  const WireMessage& entry() const { return entry_; }

 private:
  WireField xattr_fields_[2];
  WireMessage xattr_;
  WireField entry_fields_[15];
  WireMessage entry_;
};

// Serialized protobuf → validated Toc. Corruption naming the problem ("TOC entry 3 'a/b': ...").
Result<Toc> ParseToc(ByteSpan serialized, const TocLimits& limits = {});
// Protobuf message → validated Toc (what ParseToc does after parsing). Error messages name entries
// by index only, unless name_entries_in_errors (the writer's self-check: its user owns the names).
Result<Toc> TocFromProto(const v1::Toc& proto, bool name_entries_in_errors = false,
                         const TocLimits& limits = {});

// The sealed TOC's plaintext: u64 LE serialized size || one zstd frame of the serialized Toc.
// DecodeTocPlaintext checks the size against limits.max_serialized_bytes before allocating,
// decompresses exactly that many bytes and calls ParseToc.
Result<Toc> DecodeTocPlaintext(ByteSpan plaintext, const TocLimits& limits = {});
// serialized → plaintext (zstd at `zstd_level`). InvalidArgument if serialized is too large.
Result<std::vector<uint8_t>> EncodeTocPlaintext(ByteSpan serialized, int zstd_level);

}  // namespace lazycrypt::format
