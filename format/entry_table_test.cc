// EntryTable: the packed entries a LayerIndex keeps for reads give back every field of every
// entry, and cost a bounded number of bytes per entry (the table's own accounting).
#include "format/entry_table.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace lazycrypt::format {
namespace {

Entry Make(std::string name, EntryType type) {
  Entry e;
  e.name = std::move(name);
  e.type = type;
  e.mode = type == EntryType::kDirectory ? 0755 : 0644;
  e.uname = "root";
  e.gname = "root";
  return e;
}

std::vector<Entry> EveryKind() {
  std::vector<Entry> v;
  v.push_back(Make(".", EntryType::kDirectory));
  Entry f = Make("usr/bin/tool", EntryType::kRegular);
  f.mode = 07777;
  f.uid = (uint64_t{1} << 40) + 3;  // wider than st_uid: kept as the TOC has it
  f.gid = UINT64_MAX;
  f.uname = "a-rather-long-user-name-past-the-small-string-size";
  f.gname = "";
  f.mtime_sec = -1234567890123;
  f.mtime_nsec = 999999999;
  f.size = (uint64_t{1} << 40) + 17;
  f.data_offset = (uint64_t{1} << 41) + 512;
  f.xattrs = {{"security.capability", std::string("\x01\x00\x00\x02\xff", 5)},
              {"user.a", ""},
              {"user.z", std::string(3000, 'v')}};
  v.push_back(f);
  Entry sym = Make("usr/bin/sh", EntryType::kSymlink);
  sym.mode = 0777;
  sym.link_target = "../../bin/busybox";
  v.push_back(sym);
  Entry hard = Make("usr/bin/tool2", EntryType::kHardlink);
  hard.link_target = "usr/bin/tool";
  v.push_back(hard);
  Entry chr = Make("dev/null", EntryType::kCharDevice);
  chr.dev_major = 1;
  chr.dev_minor = 3;
  v.push_back(chr);
  Entry blk = Make("dev/sda", EntryType::kBlockDevice);
  blk.dev_major = UINT32_MAX;
  blk.dev_minor = 0;
  v.push_back(blk);
  v.push_back(Make("run/fifo", EntryType::kFifo));
  // Names with odd (NUL-free) bytes, at the longest a component and a path may be.
  Entry odd = Make(std::string("odd/\x01\x7f\xff\xfe \t\n\\\"'") + "\xc3\xa9", EntryType::kRegular);
  v.push_back(odd);
  std::string long_path;
  while (long_path.size() + 256 <= 4095) long_path += std::string(255, 'p') + "/";
  long_path += std::string(4095 - long_path.size(), 'q');
  v.push_back(Make(long_path, EntryType::kRegular));
  Entry dir_x = Make("etc", EntryType::kDirectory);
  dir_x.xattrs = {{"trusted.overlay.opaque", "y"}};
  v.push_back(dir_x);
  v.push_back(Make("etc", EntryType::kDirectory));  // a repeated name
  return v;
}

TEST(EntryTable, RoundTripsEveryFieldOfEveryKind) {
  const std::vector<Entry> entries = EveryKind();
  ASSERT_EQ(entries.back().name, "etc");
  auto table = EntryTable::Pack(entries);
  ASSERT_TRUE(table.ok()) << table.status().ToString();
  ASSERT_EQ(table->size(), entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    SCOPED_TRACE(i);
    const EntryView v = (*table)[i];
    EXPECT_EQ(v.index(), i);
    EXPECT_EQ(v.Materialize(), entries[i]);
    const Entry& e = entries[i];
    EXPECT_EQ(v.name(), e.name);
    EXPECT_EQ(v.type(), e.type);
    EXPECT_EQ(v.mode(), e.mode);
    EXPECT_EQ(v.uid(), e.uid);
    EXPECT_EQ(v.gid(), e.gid);
    EXPECT_EQ(v.uname(), e.uname);
    EXPECT_EQ(v.gname(), e.gname);
    EXPECT_EQ(v.mtime_sec(), e.mtime_sec);
    EXPECT_EQ(v.mtime_nsec(), e.mtime_nsec);
    EXPECT_EQ(v.size(), e.size);
    EXPECT_EQ(v.data_offset(), e.data_offset);
    EXPECT_EQ(v.link_target(), e.link_target);
    EXPECT_EQ(v.dev_major(), e.dev_major);
    EXPECT_EQ(v.dev_minor(), e.dev_minor);
    ASSERT_EQ(v.xattrs().size(), e.xattrs.size());
    size_t k = 0;
    for (const auto& [name, value] : e.xattrs) {
      EXPECT_EQ(v.xattrs()[k].name, name);
      EXPECT_EQ(v.xattrs()[k].value, value);
      ++k;
    }
  }
  // Iteration gives the same views, in order.
  size_t n = 0;
  for (EntryView v : *table) EXPECT_EQ(v, (*table)[n++]);
  EXPECT_EQ(n, entries.size());
}

TEST(EntryTable, ViewsSurviveTheTableBeingMovedBeforeUse) {
  auto table = EntryTable::Pack(EveryKind());
  ASSERT_TRUE(table.ok());
  EntryTable moved = std::move(table).value();
  EXPECT_EQ(moved[1].xattrs()[2].value, std::string(3000, 'v'));
  EXPECT_EQ(moved[2].link_target(), "../../bin/busybox");
}

TEST(EntryTable, EmptyTable) {
  auto table = EntryTable::Pack({});
  ASSERT_TRUE(table.ok());
  EXPECT_TRUE(table->empty());
  EXPECT_EQ(table->begin(), table->end());
}

// A node_modules-like layer: many small files under few owners, no xattrs, no links. The table
// costs its 48-byte record plus the name's bytes per entry (owners are interned once; nothing
// per entry for the link, device and xattr fields it does not have).
TEST(EntryTable, SmallFilesCostARecordAndTheirNameEach) {
  std::vector<Entry> entries;
  size_t name_bytes = 0;
  for (int i = 0; i < 10000; ++i) {
    Entry e = Make("node_modules/pkg" + std::to_string(i % 300) + "/lib/file" +
                       std::to_string(i) + ".js",
                   i % 20 == 0 ? EntryType::kDirectory : EntryType::kRegular);
    e.uid = i % 2;
    e.uname = i % 2 ? "node" : "root";
    e.size = e.type == EntryType::kRegular ? 100 + i : 0;
    e.data_offset = 512 * static_cast<uint64_t>(i);
    name_bytes += e.name.size();
    entries.push_back(std::move(e));
  }
  auto table = EntryTable::Pack(entries);
  ASSERT_TRUE(table.ok());
  EXPECT_LE(table->memory_bytes(), entries.size() * 48 + name_bytes + 256);
  // The parse type's footprint, for scale: a format::Entry alone, before any allocation.
  EXPECT_GE(sizeof(Entry), 200u);
}

TEST(EntryTable, XattrsAndLinksCostOnlyTheEntriesThatHaveThem) {
  std::vector<Entry> plain, some;
  for (int i = 0; i < 1000; ++i) {
    plain.push_back(Make("f" + std::to_string(i), EntryType::kRegular));
    Entry e = plain.back();
    if (i == 7) e.xattrs = {{"user.x", "1"}, {"user.y", "2"}};
    some.push_back(e);
  }
  auto a = EntryTable::Pack(plain);
  auto b = EntryTable::Pack(some);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE((*a)[7].xattrs().empty());
  EXPECT_EQ((*b)[7].xattrs().size(), 2u);
  EXPECT_TRUE((*b)[8].xattrs().empty());
  // One side record and two xattr views (plus their 14 bytes), nothing for the other 999.
  EXPECT_LE(b->memory_bytes() - a->memory_bytes(), 24u + 2 * sizeof(XattrView) + 14u);
}

}  // namespace
}  // namespace lazycrypt::format
