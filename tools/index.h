// `lazycrypt index`: makes the seekable index (zindex/zindex.h, docs/FORMAT.md §11) of every
// standard ocicrypt AES-CTR gzip layer of an image in a registry, and pushes the sealed indexes as
// one OCI artifact per image manifest (artifactType zindex::kArtifactType, subject = the manifest;
// image/referrers.h; each index blob's descriptor carries zindex::kAnnotationCoreBytes), so that
// the lazycrypt snapshotter can serve those layers lazily.
//
// Each layer is read once from the registry as a stream (the plaintext never reaches the disk nor
// is held whole in memory), its HMAC, blob digest and plaintext digest checked; nothing is pushed
// unless every layer to index passed. An image whose manifest already has an index artifact is
// left alone unless --force.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "tools/commands.h"

namespace lazycrypt::tools {

struct IndexFlags {
  std::vector<std::string> keys;
  std::string span_size;  // "" = the format's default (zindex::BuildOptions: 512 KiB)
  bool force = false;     // push a new index even when one already exists for the manifest
  bool json = false;      // the report as JSON on `out`
  // File of absolute paths to mark for prefetch (ParsePrefetchList's format); "" = none. Resolved
  // in each image manifest's merged view (image::PlanPrefetch); files of the layers indexed are
  // marked in their index (FORMAT.md §11.4).
  std::string prefetch_list;
  std::string image;      // docker://HOST/REPO[:TAG] (oci: layouts are refused, see RunIndex)
  TransportFlags transport;
};

// One line per layer on `out` (indexed: sizes, span count, files marked, time; or why skipped), a
// line per image manifest (pushed as referrer sha256:..., or an index already exists) and, with
// --prefetch-list, a line per listed path (PrefetchPlanLines: marked, or why not); with --json the
// same as one JSON document. A --prefetch-list that marks nothing (every image skipped, or no path
// a file of an indexed layer) is warned about on `err`, even with --quiet; like `encrypt
// --prefetch-list`, that is not an error (exit 0, the index pushed without marks). A multi-platform image: every platform's manifest is indexed (each its own
// artifact). Errors name the layer (a key that does not unwrap it, an HMAC or digest mismatch:
// the layer is refused and nothing is pushed). oci: layouts are Unsupported (an artifact with a
// subject lives in a registry, where the snapshotter looks for it).
Status RunIndex(const IndexFlags& flags, const Output& io);

}  // namespace lazycrypt::tools
