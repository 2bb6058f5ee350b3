// Unpacks an (uncompressed) OCI layer tar into an empty directory in overlayfs lower-layer form,
// the way containerd's overlay applier does (pkg/archive Apply + OverlayConvertWhiteout): whiteout
// files become 0/0 character devices, opaque markers become trusted.overlay.opaque=y, directory
// mtimes are set last. The archive's author is an attacker (docs: DESIGN.md threat model): nothing
// is ever created, written, linked or changed outside `dir`, and no symlink the archive created is
// ever followed. unpack/README.md lists every rule and where it differs from containerd.
#pragma once

#include <cstdint>
#include <filesystem>

#include "common/io.h"
#include "common/status.h"

namespace lazycrypt::unpack {

struct ApplyOptions {
  // chown every entry to the archive's uid/gid (a root daemon). false: entries keep the caller's
  // uid/gid (tests, tools run as a user); modes, setuid bits included, are applied either way.
  bool preserve_owner = true;
  // Refuse absurd archives: more entries than this is Unsupported, naming the limit.
  uint64_t max_entries = 10'000'000;
  // Refuse a layer whose regular files hold more than this many bytes in all (a decompression
  // bomb filling the node's disk): Unsupported naming the limit. 0 = no limit.
  uint64_t max_regular_bytes = 0;
  // The directories whose mtimes are set last are remembered by path; their paths may take at
  // most this many bytes in memory (a hostile archive of millions of deep directories):
  // Unsupported naming the limit.
  uint64_t max_directory_path_bytes = uint64_t{256} << 20;
  // false: errors name the entry by its number ("entry #12") and carry no path, link target or
  // xattr name from the archive (whose names are confidential for an encrypted layer; the
  // snapshotter's messages reach containerd's events and logs).
  bool names_in_errors = true;
  // After the end-of-archive marker, read `tar_stream` to its end (the bytes are not parsed, as
  // containerd ignores them). false: stop after the marker (see ApplyLayer for what that means).
  bool drain_to_end = false;
};

struct ApplyStats {
  uint64_t entries = 0;          // entries in the archive (every header that names a file)
  uint64_t regular_bytes = 0;    // file data written
  uint64_t whiteouts = 0;        // .wh.<name> entries turned into 0/0 char devices
  uint64_t opaque_dirs = 0;      // .wh..wh..opq turned into trusted.overlay.opaque=y
  uint64_t xattrs_skipped = 0;   // xattrs not applied: trusted.*, user.overlay.* (policy), and
                                 // those the filesystem refuses as containerd tolerates (ENOTSUP;
                                 // EPERM for user.* on a non-regular, non-directory file)
  uint64_t skipped_entries = 0;  // the root entry ("./") and aufs metadata (.wh..wh.<other>)
};

// Reads the uncompressed layer tar from `tar_stream` with tar::TarReader until its end-of-archive
// marker and creates its entries under `dir` (an existing, empty directory) in overlayfs
// lower-layer form.
//
// Stream position: the archive is parsed up to its end-of-archive marker and no further, but the
// reader reads `tar_stream` in blocks of up to 128 KiB, so when this returns OK up to 128 KiB past
// the marker may already have been read from `tar_stream` (and discarded). To hash the whole
// stream (diff_id), wrap `tar_stream` in a stream that hashes every byte its Read returns, then
// read it to its end after ApplyLayer returns (or set drain_to_end).
//
// On error, what was created under `dir` is left for the caller to remove (it removes the whole
// snapshot); `tar_stream` is left wherever the error happened. Errors name the entry ("unpack:
// entry 'a/b': ..."): entry names come from the plain layer. Not thread-safe for the same `dir`.
Result<ApplyStats> ApplyLayer(InputStream& tar_stream, const std::filesystem::path& dir,
                              const ApplyOptions& options = {});

}  // namespace lazycrypt::unpack
