// Compares two directory trees in content and metadata, the way a container runtime would see
// them: file types, permission bits (setuid/setgid/sticky included), owners, mtimes to the
// nanosecond, regular file contents, symlink targets, device numbers, extended attributes (all
// namespaces, read with llistxattr/lgetxattr) and hardlink identity (which paths share an inode).
// Never follows symlinks. Tests only.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace lazycrypt::testing {

struct TreeCompareOptions {
  bool compare_root_metadata = true;  // the mode/owner/mtime of the two roots themselves
  bool compare_mtimes = true;
};

// Every difference as a line ("etc/passwd: mode 100644 != 100600"); empty when equal.
std::vector<std::string> CompareTrees(const std::filesystem::path& a, const std::filesystem::path& b,
                                      const TreeCompareOptions& options = {});

// How many entries of each kind the tree holds ("regular", "dir", "symlink", "char", "block",
// "fifo", "hardlinked", "xattr"), to assert that a comparison covered every feature.
struct TreeCensus {
  size_t regular = 0, dirs = 0, symlinks = 0, char_devices = 0, block_devices = 0, fifos = 0;
  size_t hardlinked = 0;  // regular files with st_nlink > 1
  size_t with_xattrs = 0;
  size_t nonzero_nsec_mtimes = 0;
};
TreeCensus CountTree(const std::filesystem::path& root);

}  // namespace lazycrypt::testing
