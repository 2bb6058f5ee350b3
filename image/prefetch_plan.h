// Resolving `lazycrypt encrypt --prefetch-list` paths in an image's merged file system: the view a
// container gets when the layers are stacked (later layers win, whiteouts of upper layers hide
// what is below). A listed path is followed through symlinks (absolute and relative, chains,
// symlinked directories) and hard links to the regular file it names, and that file's entry is
// marked in the one layer that holds its data. Symlink resolution is confined to the image root,
// as a container sees it: an absolute target starts at the image root, ".." never climbs above it.
//
// Why a plan before the conversion: the layer writer marks files while it streams its layer, but
// where `/bin/sh` leads depends on every layer of the image (a symlink in layer 2 may name a file
// of layer 0). So the plain layers are read once (tar headers; data is skipped but still
// decompressed and its digest checked) to build the merged view, then each layer is written with
// the names that resolve into it.
//
// Thread-safety: functions are independent; no shared state.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "image/oci.h"
#include "image/transport.h"
#include "tar/tar_reader.h"

namespace lazycrypt::image {

// Symlinks followed per path before giving up (Linux's MAXSYMLINKS): loops end here.
inline constexpr int kMaxPrefetchSymlinkHops = 40;

// One entry of one layer, as the merged view needs it. Names are normalized
// (format::NormalizeEntryName, no leading '/').
struct TreeEntry {
  std::string name;
  tar::EntryType type = tar::EntryType::kRegular;
  // Symlink: the target as the archive gives it. Hard link: the normalized name of the entry in
  // the same layer it links to.
  std::string link;
};

// What one layer does to the merged view, in archive order.
struct LayerTree {
  std::vector<TreeEntry> entries;        // without whiteout entries and the root "."
  std::vector<std::string> whiteouts;    // ".wh.NAME": NAME (and below it) of lower layers hidden
  std::vector<std::string> opaque_dirs;  // ".wh..wh..opq" in DIR: DIR's lower contents hidden
  bool readable = true;                  // false: encrypted or not a tar layer (not read)
};

// How one listed path came out.
struct PrefetchResolution {
  std::string path;           // as listed (normalized, e.g. "bin/sh")
  bool marked = false;        // a regular file of a layer that is written as lazycrypt
  // The file the path resolves to (also when it was not marked because of its layer):
  std::optional<size_t> layer;  // the layer holding its data
  std::string file;             // its entry name in that layer (e.g. "bin/busybox")
  bool via_symlink = false;     // a symlink was followed on the way
  bool via_hardlink = false;    // the path is a hard link to `file`
  // Not marked: why, e.g. "not found", "a directory", "a character device",
  // "too many levels of symbolic links (40 followed)", "bin/sh/x: bin/sh is not a directory",
  // "in layer 1, which is not written as a lazycrypt layer".
  std::string reason;
};

struct PrefetchPlan {
  std::vector<PrefetchResolution> paths;  // in the order listed
  // Per layer index: the entry names to mark (format::WriterOptions::prefetch_paths).
  std::vector<std::vector<std::string>> layer_marks;
  // Layers that could not be read to build the view (already encrypted, not a tar layer): files
  // only they hold are reported "not found".
  std::vector<size_t> unread_layers;
};

// The merged view of `layers` (index 0 = base) and every path of `paths` resolved in it. A path
// is marked only when its file lives in a layer of `lazycrypt_layers` (the layers being written
// in the lazycrypt format). Pure: no I/O.
PrefetchPlan PlanPrefetch(const std::vector<LayerTree>& layers,
                          const std::vector<std::string>& paths,
                          const std::set<size_t>& lazycrypt_layers);

// Adds one archive entry to `tree` as ScanLayerTree does: `name` normalized (no leading '/'), the
// root "." skipped, whiteout and opaque markers to their lists; `link` a symlink's target as
// given or a hard link's normalized target. For layers read otherwise (a zindex's entries).
void AddLayerTreeEntry(LayerTree& tree, std::string name, tar::EntryType type, std::string link);

// Reads the tar headers of a plain layer blob (tar, tar+gzip, tar+zstd), checking its digest.
// Errors name nothing but the tar's own problems; callers add the layer's name.
Result<LayerTree> ScanLayerTree(ImageSource& src, const Descriptor& layer);

// ScanLayerTree for every plain layer of `manifest` (others are `readable = false`), then
// PlanPrefetch.
Result<PrefetchPlan> PlanImagePrefetch(ImageSource& src, const Manifest& manifest,
                                       const std::vector<std::string>& paths,
                                       const std::set<size_t>& lazycrypt_layers);

}  // namespace lazycrypt::image
