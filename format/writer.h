// Encrypting a layer into a lazycrypt blob (docs/FORMAT.md, "Writing").
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "crypto/digest.h"
#include "format/keys.h"
#include "format/layout.h"

namespace lazycrypt::format {

struct WriterOptions {
  // Target chunk size T, kMinChunkSizeBytes..kMaxChunkSizeBytes.
  size_t chunk_size_bytes = kDefaultChunkSizeBytes;
  // File-aligned chunks (docs/FORMAT.md §5, rule 3): the data of a file of at least this many
  // bytes never shares a chunk with another file's data, so that a lazy reader of that file
  // fetches it and nothing else; smaller files share chunks of at most pack_chunk_bytes. 0 =
  // off (files share chunks up to T). Chunks stay within T whatever these are.
  size_t own_chunk_from_bytes = kDefaultOwnChunkFromBytes;
  size_t pack_chunk_bytes = kDefaultPackChunkBytes;
  // zstd level for chunks and the TOC.
  int zstd_level = kDefaultZstdLevel;
  // Compression/sealing threads; 0 = one per core.
  int threads = 0;
  // Before compressing a chunk (>= 128 KiB), try zstd's fastest level on four 16 KiB samples
  // spread over it; when none of them would be kept compressed (ChunkSealer::ShouldStore), store
  // the chunk without running the full compression. Saves the zstd pass on random and
  // already-compressed data; a chunk whose compressible bytes all fall between the samples is
  // then stored raw (larger blob, same plaintext). false = always compress, then decide.
  bool probe_incompressible = true;
  // Files to mark for prefetch (Toc::prefetch), in normalized form (NormalizeEntryName). A name
  // the layer holds as a regular file marks its last regular entry of that name; names the layer
  // lacks, or holds only as another type, mark nothing (the list is image-wide, see
  // `lazycrypt encrypt --prefetch-list`).
  std::vector<std::string> prefetch_paths;
  // false: the blob is not hashed here and WriteResult::blob_digest stays zero, for callers
  // whose output stream hashes what it is given anyway (a destination's blob sink): one
  // SHA-256 pass over the blob instead of two.
  bool hash_blob = true;
};

struct WriteResult {
  crypto::Sha256Digest blob_digest{};  // SHA-256 of every byte written (zero if !hash_blob)
  uint64_t blob_size = 0;
  crypto::Sha256Digest toc_digest{};   // SHA-256 of the sealed TOC: pin it in the manifest
  uint64_t toc_size = 0;                // bytes of the sealed TOC (the footer's toc_size)
  // SHA-256 of the blob's uncompressed tar stream: the layer salt header (LayerSaltTarHeader),
  // then the source tar stream. The new layer's diff_id: write it into the image config.
  crypto::Sha256Digest diff_id{};
  uint64_t tar_size = 0;                // bytes of that stream (source + kLayerSaltHeaderSize)
  // SHA-256 and size of the source tar stream as read (after decompression, without the salt
  // header): the diff_id the source image's config must name.
  crypto::Sha256Digest source_diff_id{};
  uint64_t source_tar_size = 0;
  uint64_t chunk_count = 0;
  uint64_t entry_count = 0;
  KeyCommitment key_commitment{};      // publish in pubopts
};

// The layer salt header (docs/FORMAT.md §5.1): the first record of every lazycrypt blob's tar
// stream, a PAX global extended header ('g', name "pax_global_header") whose one record is
// "comment=lazycrypt-layer-salt:<64 lowercase hex of the blob's salt>", padded to 512 bytes.
// It makes every conversion's diff_id (and so its chain IDs) unique: never the plain original's,
// never another encryption's. Extractors ignore it (`comment` is ignored by POSIX; Go's
// archive/tar users, containerd included, skip global headers).
inline constexpr size_t kLayerSaltHeaderSize = 1024;
std::vector<uint8_t> LayerSaltTarHeader(const Salt& salt);

// Reads a layer (tar, tar+gzip or tar+zstd, detected from its first bytes), and writes it as a
// lazycrypt blob sealed under `key` to `blob`. The blob's tar stream is LayerSaltTarHeader(salt)
// followed by the source tar stream byte for byte (TOC data offsets count the header). Streams: memory stays around
// (3 × threads + 2) × chunk_size_bytes plus the TOC, whatever the layer size, plus 4 MiB of
// read-ahead for a compressed layer (decompressed on a thread of its own).
// Does not Close() `blob`; on error the bytes written so far are garbage (write to an
// AtomicFileOutputStream and Close() it only on success).
// Errors: InvalidArgument for bad options or key; the tar parser's Corruption/Unsupported
// ("tar entry 'a/b': unsupported type 'S' (GNU sparse file)"); Corruption naming an unsafe entry
// ("tar entry '../x': name has a '..' component"); `blob`'s own errors.
// Thread-safety: uses its own threads; `layer` and `blob` are touched by one thread at a time.
Result<WriteResult> WriteLayer(InputStream& layer, const LayerKey& key, OutputStream& blob,
                               const WriterOptions& options = {});

}  // namespace lazycrypt::format
