// Writes an eStargz blob (docs/FORMAT.md §10) from an uncompressed tar stream, as
// `ctr-remote image convert --estargz` lays it out: one gzip member per chunk of regular-file
// data, the landmark file (`.prefetch.landmark` after the files to prefetch, or
// `.no.prefetch.landmark` first), the TOC member (`stargz.index.json`, with every file's and every
// chunk's SHA-256) and the 51-byte footer.
//
// Tar entries are copied losslessly: each entry's header blocks (PAX, GNU long names, all) and
// data go into the blob byte for byte; only the archive's end marker and what follows it are
// replaced by the TOC entry and a new end marker. Entries named `stargz.index.json` or a landmark
// are dropped (a layer converted twice has one TOC).
//
// Thread-safety: one call is independent of any other; it compresses members on its own threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/io.h"
#include "common/spool_file.h"
#include "common/status.h"
#include "crypto/digest.h"
#include "estargz/toc.h"

namespace lazycrypt::estargz {

struct WriterOptions {
  // File data per gzip member (eStargz's ChunkSize). 4 KiB .. 1 GiB.
  uint64_t chunk_size_bytes = kDefaultChunkSizeBytes;
  // zlib level 1..9. ctr-remote uses 9; 6 is about twice as fast for about 1 % more bytes.
  int gzip_level = 6;
  // Members compressed at once (each on its own; the output does not depend on it). 0: one per
  // core. At most 2 x threads members (each a chunk plus the headers after it) are held in memory.
  int threads = 0;
  // Normalized entry names (format::NormalizeEntryName; image/prefetch_plan.h gives them) of
  // regular files of this layer to put first, in this order, before `.prefetch.landmark`. Each
  // is moved together with the directory entries above it (as ctr-remote does). A name that is
  // not exactly one regular-file entry of the layer is left in place and reported. Moving needs
  // random access: the uncompressed tar is then spooled to an unnamed temporary file (O_TMPFILE)
  // in spool_dir.
  std::vector<std::string> prefetch_paths;
  std::filesystem::path spool_dir = "/var/tmp";
  // The TOC's salt (toc.h). Tests fix it; nullopt: 32 fresh random bytes.
  std::optional<std::string> salt_hex;
};

struct WriteResult {
  crypto::Sha256Digest blob_digest{};  // of the eStargz blob (what ocicrypt then encrypts)
  uint64_t blob_size = 0;
  crypto::Sha256Digest diff_id{};      // of the blob's uncompressed tar stream (TOC entry included)
  uint64_t uncompressed_size = 0;      // io.containers.estargz.uncompressed-size
  crypto::Sha256Digest toc_digest{};   // of the TOC JSON (stargz.index.json's content)
  uint64_t toc_offset = 0;             // of the TOC member
  uint64_t toc_size = 0;               // of the TOC member (compressed): blob_size - toc_offset - 51
  crypto::Sha256Digest source_diff_id{};  // of the source tar stream as read (to EOF)
  uint64_t entry_count = 0;            // tar entries written, landmark included
  uint64_t chunk_count = 0;            // data chunks (gzip members holding file data)
  std::vector<std::string> prefetch_moved;  // prefetch_paths moved before the landmark
  std::vector<std::string> prefetch_not_moved;  // the others: "name: why"
};

// Reads the uncompressed tar `tar` to its end and writes the eStargz blob to `out` (not Closed).
// Errors: the tar reader's (Corruption/Unsupported naming the entry), a name JSON cannot hold
// (Unsupported), I/O errors of `out` or the spool file.
Result<WriteResult> WriteEstargz(InputStream& tar, OutputStream& out, const WriterOptions& options);

}  // namespace lazycrypt::estargz
