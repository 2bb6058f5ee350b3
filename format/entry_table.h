// The entries of a layer as LayerIndex keeps them for reads: packed and immutable. A
// format::Entry (toc.h) is the parse/write type (four std::strings, an xattr std::map, 64-bit
// fields: about 240 bytes plus the name's allocation); a mounted layer of 100,000 small files
// kept 100,000 of them for its whole life. Here an entry is a 48-byte record; names, link
// targets and xattrs live in one byte arena; owners (uid, gid, uname, gname) are interned;
// link targets, device numbers and xattrs sit in a side table only for the entries that have
// any. Readers get an EntryView (two words, no allocation) or, where they want the full struct,
// materialize a format::Entry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "format/toc.h"

namespace lazycrypt::format {

class EntryTable;

// One xattr of an entry: views into its table's arena.
struct XattrView {
  std::string_view name;
  std::string_view value;
};

// One entry of an EntryTable, by index. Cheap to copy (a pointer and an index); valid as long as
// its table. Views of the same table and index compare equal (the identity readers key on).
class EntryView {
 public:
  EntryView() = default;

  uint32_t index() const { return index_; }
  const EntryTable* table() const { return table_; }

  std::string_view name() const;  // normalized; the root is "."
  EntryType type() const;
  uint32_t mode() const;
  uint64_t uid() const;
  uint64_t gid() const;
  std::string_view uname() const;
  std::string_view gname() const;
  int64_t mtime_sec() const;
  uint32_t mtime_nsec() const;
  uint64_t size() const;         // regular files: data bytes; 0 otherwise
  uint64_t data_offset() const;  // regular files: offset of the first data byte in the tar
  std::string_view link_target() const;  // symlinks and hardlinks; "" otherwise
  uint32_t dev_major() const;
  uint32_t dev_minor() const;
  // Sorted by name (as Entry::xattrs iterates); empty for most entries.
  std::span<const XattrView> xattrs() const;

  // The full struct (allocates: the name, owner names, link target, xattrs). For tools, tests
  // and the verification, not for the per-request paths.
  Entry Materialize() const;

  bool operator==(const EntryView& o) const { return table_ == o.table_ && index_ == o.index_; }

 private:
  friend class EntryTable;
  EntryView(const EntryTable* table, uint32_t index) : table_(table), index_(index) {}
  const EntryTable* table_ = nullptr;
  uint32_t index_ = 0;
};

// Immutable after Pack, hence thread-safe. Not copyable (views point at it); movable only before
// any view is taken (LayerIndex holds it by value and never moves it after construction).
class EntryTable {
 public:
  EntryTable() = default;
  EntryTable(EntryTable&&) = default;
  EntryTable& operator=(EntryTable&&) = default;
  EntryTable(const EntryTable&) = delete;
  EntryTable& operator=(const EntryTable&) = delete;

  // REQUIRES: every entry passed ValidateEntry (names and link targets <= 4095 bytes, mode <=
  // 07777, nsec < 1e9). Corruption when the arena would pass 4 GiB or more than 2^32 - 2
  // entries, link targets, owners or xattrs (a TOC within the format's limits never does).
  static Result<EntryTable> Pack(std::span<const Entry> entries);

  size_t size() const { return records_.size(); }
  bool empty() const { return records_.empty(); }
  // REQUIRES i < size().
  EntryView operator[](size_t i) const { return EntryView(this, static_cast<uint32_t>(i)); }

  class Iterator {
   public:
    using iterator_category = std::random_access_iterator_tag;
    using value_type = EntryView;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = EntryView;
    Iterator() = default;
    Iterator(const EntryTable* t, size_t i) : t_(t), i_(i) {}
    EntryView operator*() const { return (*t_)[i_]; }
    EntryView operator[](difference_type n) const { return (*t_)[i_ + n]; }
    Iterator& operator++() { ++i_; return *this; }
    Iterator operator++(int) { Iterator r = *this; ++i_; return r; }
    Iterator& operator--() { --i_; return *this; }
    Iterator operator--(int) { Iterator r = *this; --i_; return r; }
    Iterator& operator+=(difference_type n) { i_ += n; return *this; }
    Iterator& operator-=(difference_type n) { i_ -= n; return *this; }
    Iterator operator+(difference_type n) const { return Iterator(t_, i_ + n); }
    friend Iterator operator+(difference_type n, Iterator it) { return it + n; }
    Iterator operator-(difference_type n) const { return Iterator(t_, i_ - n); }
    difference_type operator-(const Iterator& o) const {
      return static_cast<difference_type>(i_) - static_cast<difference_type>(o.i_);
    }
    bool operator==(const Iterator& o) const { return i_ == o.i_; }
    auto operator<=>(const Iterator& o) const { return i_ <=> o.i_; }

   private:
    const EntryTable* t_ = nullptr;
    size_t i_ = 0;
  };
  Iterator begin() const { return Iterator(this, 0); }
  Iterator end() const { return Iterator(this, size()); }

  // Heap bytes the table owns (records, arena, owners, side tables): its own accounting, the
  // figure the memory tests bound.
  size_t memory_bytes() const;
  // The arena: every name, owner name, link target and xattr, back to back. Views returned by
  // EntryView point into it; InodeTable points its listings' names into it too.
  std::string_view arena() const { return std::string_view(arena_.data(), arena_.size()); }

 private:
  friend class EntryView;
  static constexpr uint32_t kNone = UINT32_MAX;
  struct Slice {
    uint32_t offset = 0;
    uint32_t size = 0;
  };
  // 48 bytes. mode fits 12 bits and names 4095 bytes (ValidateEntry); the rest of an entry is in
  // owners_ (few distinct per layer) and extras_ (few entries have one).
  struct Record {
    uint64_t data_offset = 0;
    uint64_t size = 0;
    int64_t mtime_sec = 0;
    uint32_t name_offset = 0;
    uint32_t mtime_nsec = 0;
    uint32_t owner = 0;
    uint32_t extra = kNone;
    uint16_t name_size = 0;
    uint16_t mode = 0;
    EntryType type = EntryType::kRegular;
  };
  static_assert(sizeof(Record) == 48, "the per-entry cost of a mounted layer");
  struct Owner {
    uint64_t uid = 0, gid = 0;
    Slice uname, gname;
  };
  struct Extra {
    Slice link_target;
    uint32_t dev_major = 0, dev_minor = 0;
    uint32_t first_xattr = 0, xattr_count = 0;
  };

  const Record& record(uint32_t i) const { return records_[i]; }
  const Extra* extra(uint32_t i) const {
    const uint32_t x = records_[i].extra;
    return x == kNone ? nullptr : &extras_[x];
  }
  std::string_view slice(Slice s) const { return std::string_view(arena_.data() + s.offset, s.size); }

  std::vector<Record> records_;
  std::vector<char> arena_;  // a vector: its buffer stays put when the table moves
  std::vector<Owner> owners_;
  std::vector<Extra> extras_;
  std::vector<XattrView> xattrs_;  // views into arena_, set once it is complete
};

}  // namespace lazycrypt::format
