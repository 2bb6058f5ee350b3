// libFuzzer target: TOC → inode tree. The input is a serialized TOC; what ParseToc accepts (a
// validated TOC, as LayerIndex::Open would hand it over) becomes an InodeTable, which is then
// walked from the root: every directory listed, every child looked up by name and stat'ed, every
// symlink read. The tree must hold together: a listed child is found again by Lookup with the
// same inode and mode, a directory's children name it as their parent, inode numbers stay below
// inode_count()+1, and the walk visits each directory once.
#include <sys/stat.h>

#include <cstdint>
#include <cstdlib>
#include <set>
#include <vector>

#include "format/toc.h"
#include "fusefs/inode_table.h"

using namespace lazycrypt;
using lazycrypt::fusefs::InodeTable;
using lazycrypt::fusefs::kRootInode;

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

void Walk(const InodeTable& table) {
  const uint64_t max_ino = table.inode_count();
  std::vector<uint64_t> dirs = {kRootInode};
  std::set<uint64_t> seen_dirs = {kRootInode};
  while (!dirs.empty()) {
    uint64_t dir = dirs.back();
    dirs.pop_back();
    auto children = table.ReadDir(dir);
    Check(children.ok());
    (void)table.Xattrs(dir);
    (void)table.Path(dir);
    for (const fusefs::DirEntry& child : *children) {
      Check(!child.name.empty() && child.name != "." && child.name != "..");
      Check(child.ino >= kRootInode && child.ino <= max_ino);
      auto found = table.Lookup(dir, child.name);
      Check(found.ok() && *found == child.ino);
      auto attr = table.Attr(child.ino);
      Check(attr.ok() && attr->st_mode == child.mode && attr->st_ino == child.ino);
      if (S_ISDIR(attr->st_mode)) {
        auto parent = table.Parent(child.ino);
        Check(parent.ok() && *parent == dir);
        Check(seen_dirs.insert(child.ino).second);  // a directory has one name
        dirs.push_back(child.ino);
      } else if (S_ISLNK(attr->st_mode)) {
        auto target = table.Readlink(child.ino);
        Check(target.ok() && attr->st_size == static_cast<off_t>(target->size()));
      } else if (S_ISREG(attr->st_mode)) {
        auto entry = table.DataEntry(child.ino);
        Check(entry.ok() && entry->type() == format::EntryType::kRegular);
        Check(attr->st_size == static_cast<off_t>(entry->size()));
      } else {
        Check(!table.DataEntry(child.ino).ok());
      }
    }
  }
  Check(!table.Attr(max_ino + 1).ok());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto toc = format::ParseToc(ByteSpan(data, size));
  if (!toc.ok()) return 0;
  auto packed = format::EntryTable::Pack(toc->entries);
  if (!packed.ok()) return 0;
  auto table = InodeTable::Build(*packed);
  if (!table.ok()) {
    Check(!table.status().ok());
    return 0;
  }
  Walk(**table);
  return 0;
}
