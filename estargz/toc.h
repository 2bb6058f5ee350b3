// The eStargz table of contents and footer (github.com/containerd/stargz-snapshotter, estargz/
// types.go and gzip.go, format version 1), shared by estargz/writer.h and estargz/reader.h.
// docs/FORMAT.md §10 is the byte-level description lazycrypt follows.
//
// An eStargz blob is a concatenation of gzip members whose decompressed bytes are one tar stream:
//
//   | member 0 | member 1 | ... | TOC member | footer (51) |
//
// A regular file's data begins a new member at every chunk (default 4 MiB of file data), so each
// chunk can be fetched and inflated on its own; tar headers and padding fall in whatever member is
// open. The TOC member holds a tar of one file, `stargz.index.json` (the JSON below), and the
// footer is an empty gzip member whose FEXTRA field names the TOC member's offset.
//
// Thread-safety: free functions, no shared state.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "common/status.h"

namespace lazycrypt::estargz {

inline constexpr std::string_view kTocTarName = "stargz.index.json";
inline constexpr std::string_view kPrefetchLandmark = ".prefetch.landmark";
inline constexpr std::string_view kNoPrefetchLandmark = ".no.prefetch.landmark";
inline constexpr uint8_t kLandmarkContents = 0x0f;  // the one byte of either landmark file
inline constexpr size_t kFooterSize = 51;
inline constexpr uint64_t kDefaultChunkSizeBytes = 4 << 20;  // eStargz's default
inline constexpr int kTocVersion = 1;

// Annotations of the (encrypted) layer descriptor. docs/FORMAT.md §10.3 says why the standard
// `containerd.io/snapshot/stargz/toc.digest` is NOT set on an encrypted layer.
inline constexpr std::string_view kAnnotationTocDigest =
    "containerd.io/snapshot/lazycrypt.estargz-toc-digest";
inline constexpr std::string_view kAnnotationTocSize =
    "containerd.io/snapshot/lazycrypt.estargz-toc-size";
inline constexpr std::string_view kAnnotationUncompressedSize =
    "io.containers.estargz.uncompressed-size";
inline constexpr std::string_view kAnnotationStargzTocDigest =
    "containerd.io/snapshot/stargz/toc.digest";

// One TOC entry, as the JSON holds it (Go's estargz.TOCEntry; zero values are omitted in JSON).
struct TocEntry {
  std::string name;  // the tar entry's name as written (readers normalize it)
  std::string type;  // "dir", "reg", "symlink", "hardlink", "char", "block", "fifo" or "chunk"
  uint64_t size = 0;          // "reg": the file's size
  std::string modtime;        // RFC 3339 UTC, whole seconds; "" for the zero time / the epoch
  std::string link_name;      // "symlink", "hardlink"
  uint32_t mode = 0;          // permission bits (07777)
  uint64_t uid = 0, gid = 0;
  std::string uname, gname;   // only where it changes for that uid/gid (eStargz's convention)
  uint64_t offset = 0;        // "reg" (size > 0) and "chunk": blob offset of the chunk's member
  uint64_t inner_offset = 0;  // uncompressed offset of the chunk inside that member
  uint32_t dev_major = 0, dev_minor = 0;
  std::map<std::string, std::string> xattrs;  // name -> raw value (base64 in JSON)
  std::string digest;         // "reg": sha256:<hex> of the whole file
  uint64_t chunk_offset = 0;  // offset of this chunk in the file
  uint64_t chunk_size = 0;    // 0: to the end of the file
  std::string chunk_digest;   // sha256:<hex> of the chunk's uncompressed bytes
};

struct Toc {
  int version = kTocVersion;
  std::vector<TocEntry> entries;
  // lazycrypt's addition, "lazycryptSalt": 32 random bytes (hex) per conversion, so that neither
  // the TOC digest (a public annotation) nor the diff_id of two conversions of one layer ever
  // match (docs/FORMAT.md §10.2). eStargz readers ignore unknown members. Empty: omitted.
  std::string salt_hex;
};

// The JSON text (tab-indented, members in eStargz's order, zero values omitted).
// Unsupported when a name, link name or xattr name is not valid UTF-8 (JSON cannot hold it; Go's
// estargz would silently replace the bytes). Messages name the entry by index only.
Result<std::string> SerializeToc(const Toc& toc);

// Limits a reader applies to an untrusted TOC before it allocates for it.
struct TocLimits {
  uint64_t max_json_bytes = 256ull << 20;
  uint64_t max_entries = 8ull << 20;
};

// Parses the JSON shape only (types, non-negative integers, base64 xattrs, version 1); the
// meaning (names, chunk tiling, offsets) is checked by estargz::Index (reader.h). Corruption
// "estargz TOC: ..." naming the entry index, never its name.
Result<Toc> ParseToc(std::string_view json, const TocLimits& limits = {});

// The 51-byte footer: an empty gzip member (stored block) whose FEXTRA holds subfield 'S','G'
// with "%016x" of toc_offset then "STARGZ".
std::array<uint8_t, kFooterSize> MakeFooter(uint64_t toc_offset);
// Checks every byte of the footer (a lazycrypt reader accepts exactly what MakeFooter writes, and
// what Go's gzip writer writes: only the OS byte and XFL may differ) and returns the TOC offset.
// Corruption "estargz footer: ..." otherwise.
Result<uint64_t> ParseFooter(ByteSpan footer);

}  // namespace lazycrypt::estargz
