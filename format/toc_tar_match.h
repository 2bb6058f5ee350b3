// Checks that a TOC describes its tar stream exactly (docs/FORMAT.md §4 and §5, "The TOC matches
// the tar stream"). A key holder can seal any TOC over any tar: without this check an entry could
// point at bytes after the end-of-archive marker, so that scanners and eager unpacks see one file
// and the lazy mount serves another. Every eager consumer (DecryptLayer, DecryptLayerStream) and
// the background verification of a lazy mount (cache::CachedLayer) run it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/io.h"
#include "common/status.h"
#include "format/entry_table.h"
#include "format/toc.h"

namespace lazycrypt::tar {
struct Entry;
}

namespace lazycrypt::format {

// The TOC entry an honest writer lists for one tar entry: name normalized (§4), type, mode,
// owners, mtime, size and data offset (regular files), link target (symlinks as given; hardlinks
// normalized), device numbers (devices), xattrs. Corruption (never naming the entry: names are
// confidential) for a name or hardlink target that cannot be normalized. Does not apply
// ValidateEntry; the writer does, naming the entry, since its user owns the names.
Result<Entry> TocEntryFromTar(const tar::Entry& tar_entry);

// Fed the tar stream's bytes in order, it parses them with tar::TarReader (headers only; file
// data is skipped) and requires, entry by entry, that the TOC lists exactly the entries
// TocEntryFromTar gives, in the same order, no more and no fewer, and that nothing but zero bytes
// follows the end-of-archive marker. PAX global headers ('g') have no TOC entry (the tar reader,
// like containerd, ignores them; the writer puts one at the start of every layer).
//
// Errors (Corruption) start with "TOC does not match the tar stream: " and name the entry by its
// index and the field that differs ("entry 3: mode differs"), never a file name; a stream that
// does not parse as tar is reported by offset and entry index only (the tar reader's own message
// names files).
//
// Not thread-safe: one producer calls Feed and Finish. Parses on a thread of its own (the tar
// reader pulls; the decoders push), handing each span over without copying it first: Feed
// returns once the span has been parsed, so the caller may reuse it. Destruction without Finish
// stops that thread.
class TocTarMatcher {
 public:
  // Compares each entry as soon as it is parsed (fails at the first difference). `toc_entries`
  // must outlive the matcher.
  explicit TocTarMatcher(std::span<const Entry> toc_entries);
  // The same over a LayerIndex's packed entries (one entry materialized at a time).
  explicit TocTarMatcher(const EntryTable& toc_entries);
  // For the forward-only decoder, which reads the TOC after the tar stream: collects what the
  // stream holds (at most kMaxTocEntries entries) and compares it in Finish(toc_entries).
  TocTarMatcher();
  ~TocTarMatcher();
  TocTarMatcher(const TocTarMatcher&) = delete;
  TocTarMatcher& operator=(const TocTarMatcher&) = delete;

  // The next bytes of the tar stream. Returns the first mismatch found so far (sticky).
  Status Feed(ByteSpan tar_bytes);
  // The stream has ended: the result of the whole comparison. Call once. For a matcher built
  // without entries, use Finish(toc_entries) instead.
  Status Finish();
  Status Finish(std::span<const Entry> toc_entries);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lazycrypt::format
