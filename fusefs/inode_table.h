// The file system tree of one layer, as an extraction of its tar would look, with overlay
// whiteouts converted the way containerd's overlay applier converts them (archive/tar.go +
// OverlayConvertWhiteout), so the tree works as an overlayfs lowerdir. Pure: no FUSE, no I/O.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"
#include "format/entry_table.h"
#include "format/toc.h"

namespace lazycrypt::fusefs {

// The root directory's inode number (== FUSE_ROOT_ID).
inline constexpr uint64_t kRootInode = 1;

using XattrMap = std::map<std::string, std::string>;

struct DirEntry {
  // One path component; never "", "." or "..". Points into the entries' arena
  // (format::EntryTable::arena()): every component is part of some entry's name.
  std::string_view name;
  uint32_t ino = 0;   // inode numbers are 32 bits in the table (Build refuses more)
  uint32_t mode = 0;  // type bits | permission bits (as st_mode)
};

// How the entries of a layer become a tree (applied in tar order):
// - a later entry with the same name replaces the earlier one; a directory replacing a directory
//   keeps its children and takes the new mode/owner/mtime (xattrs are merged, new values win);
//   anything else replacing a directory drops the directory's subtree;
// - missing parent directories are implied: mode 0755, uid/gid 0, mtime 0;
// - a hardlink shares the inode its target name has at that point of the stream (a later
//   replacement of the target name does not affect it); the inode keeps its own metadata;
// - `dir/.wh.NAME` becomes a character device 0/0 `dir/NAME` (permission bits 0, owner and mtime of
//   the whiteout entry); `dir/.wh..wh..opq` sets xattr trusted.overlay.opaque=y on `dir` and is
//   not listed itself;
// - xattrs `trusted.overlay.*` carried by the tar itself are dropped (they would steer overlayfs:
//   redirect, metacopy, origin), except `trusted.overlay.opaque`;
// - a parent path component that is not a directory, a hardlink whose target is missing or a
//   directory, a whiteout naming "", "." or "..", and a root entry that is not a directory are
//   Corruption.
// Inode numbers are assigned once, depth first in name order from kRootInode, and never change.
// nlink: directories 2 + subdirectories; others the number of names sharing the inode.
//
// Immutable after Build, hence thread-safe. The entry table passed to Build must outlive the
// table (a LayerIndex's: owners, mtimes, sizes, names and link targets are read from it).
// Memory: a packed 32-byte record per inode, a 24-byte DirEntry per name (the name's bytes are
// the entry table's); symlink targets, xattrs and device numbers only for the inodes that have
// them. Paths are not stored (Path walks the parents).
class InodeTable {
 public:
  static Result<std::unique_ptr<const InodeTable>> Build(const format::EntryTable& entries);
  virtual ~InodeTable() = default;

  // NotFound when `parent` is unknown or has no child `name`; FailedPrecondition when `parent`
  // is not a directory.
  virtual Result<uint64_t> Lookup(uint64_t parent, std::string_view name) const = 0;
  // NotFound for an unknown inode. st_ino, st_mode, st_nlink, st_uid, st_gid, st_rdev, st_size
  // (regular: data size; symlink: target length; directory: 4096), st_blksize, st_blocks and
  // st_atim/st_mtim/st_ctim (all the entry's mtime) are filled in.
  virtual Result<struct stat> Attr(uint64_t ino) const = 0;
  // The children of directory `ino`, sorted by name (bytewise). FailedPrecondition if not a
  // directory.
  virtual Result<std::span<const DirEntry>> ReadDir(uint64_t ino) const = 0;
  // The parent directory of directory `ino` (the root is its own parent).
  virtual Result<uint64_t> Parent(uint64_t ino) const = 0;
  // InvalidArgument unless `ino` is a symlink.
  virtual Result<std::string_view> Readlink(uint64_t ino) const = 0;
  virtual Result<const XattrMap*> Xattrs(uint64_t ino) const = 0;
  // Whether any inode has an xattr (the TOC's, or trusted.overlay.opaque from a `.wh..wh..opq`).
  // False lets the FUSE mount tell the kernel once that the layer has none (fuse_fs.cc).
  virtual bool has_xattrs() const = 0;
  // The TOC entry holding the data of regular file `ino` (for LayerData::ReadFile).
  // InvalidArgument unless `ino` is a regular file.
  virtual Result<format::EntryView> DataEntry(uint64_t ino) const = 0;
  // One path of `ino` relative to the root ("" for the root), for logs and the open recorder.
  virtual std::string Path(uint64_t ino) const = 0;
  // Number of inodes in the tree (root included).
  virtual uint64_t inode_count() const = 0;
  // Heap bytes of the table's own records (not the entry table's): its own accounting.
  virtual size_t memory_bytes() const = 0;
};

}  // namespace lazycrypt::fusefs
