#include "format/entry_table.h"

#include <map>
#include <tuple>

namespace lazycrypt::format {

static_assert(sizeof(EntryTable::Iterator) <= 16);

std::string_view EntryView::name() const {
  const auto& r = table_->record(index_);
  return std::string_view(table_->arena_.data() + r.name_offset, r.name_size);
}
EntryType EntryView::type() const { return table_->record(index_).type; }
uint32_t EntryView::mode() const { return table_->record(index_).mode; }
uint64_t EntryView::uid() const { return table_->owners_[table_->record(index_).owner].uid; }
uint64_t EntryView::gid() const { return table_->owners_[table_->record(index_).owner].gid; }
std::string_view EntryView::uname() const {
  return table_->slice(table_->owners_[table_->record(index_).owner].uname);
}
std::string_view EntryView::gname() const {
  return table_->slice(table_->owners_[table_->record(index_).owner].gname);
}
int64_t EntryView::mtime_sec() const { return table_->record(index_).mtime_sec; }
uint32_t EntryView::mtime_nsec() const { return table_->record(index_).mtime_nsec; }
uint64_t EntryView::size() const { return table_->record(index_).size; }
uint64_t EntryView::data_offset() const { return table_->record(index_).data_offset; }
std::string_view EntryView::link_target() const {
  const auto* x = table_->extra(index_);
  return x ? table_->slice(x->link_target) : std::string_view();
}
uint32_t EntryView::dev_major() const {
  const auto* x = table_->extra(index_);
  return x ? x->dev_major : 0;
}
uint32_t EntryView::dev_minor() const {
  const auto* x = table_->extra(index_);
  return x ? x->dev_minor : 0;
}
std::span<const XattrView> EntryView::xattrs() const {
  const auto* x = table_->extra(index_);
  if (x == nullptr || x->xattr_count == 0) return {};
  return std::span<const XattrView>(table_->xattrs_.data() + x->first_xattr, x->xattr_count);
}

Entry EntryView::Materialize() const {
  Entry e;
  e.name = std::string(name());
  e.type = type();
  e.mode = mode();
  e.uid = uid();
  e.gid = gid();
  e.uname = std::string(uname());
  e.gname = std::string(gname());
  e.mtime_sec = mtime_sec();
  e.mtime_nsec = mtime_nsec();
  e.size = size();
  e.link_target = std::string(link_target());
  e.dev_major = dev_major();
  e.dev_minor = dev_minor();
  for (const XattrView& x : xattrs()) e.xattrs.emplace(std::string(x.name), std::string(x.value));
  e.data_offset = data_offset();
  return e;
}

Result<EntryTable> EntryTable::Pack(std::span<const Entry> entries) {
  constexpr uint64_t kMaxIndex = kNone - 1;
  if (entries.size() > kMaxIndex) {
    return Status::Corruption("entry table: more than 2^32 - 2 entries");
  }
  // Sizes first, so that every vector is allocated once at its final size (no growth slack
  // left in a table that lives as long as the mount).
  uint64_t arena_bytes = 0;
  size_t extra_count = 0, xattr_count = 0;
  std::map<std::tuple<uint64_t, uint64_t, std::string_view, std::string_view>, uint32_t> owner_of;
  for (const Entry& e : entries) {
    if (e.name.size() > UINT16_MAX || e.mode > UINT16_MAX) {
      return Status::Corruption("entry table: an entry was not validated (name or mode too large)");
    }
    arena_bytes += e.name.size();
    auto [it, added] = owner_of.try_emplace({e.uid, e.gid, e.uname, e.gname}, 0);
    if (added) arena_bytes += e.uname.size() + e.gname.size();
    if (!e.link_target.empty() || e.dev_major != 0 || e.dev_minor != 0 || !e.xattrs.empty()) {
      ++extra_count;
      arena_bytes += e.link_target.size();
      for (const auto& [k, v] : e.xattrs) arena_bytes += k.size() + v.size();
      xattr_count += e.xattrs.size();
    }
  }
  if (arena_bytes > UINT32_MAX) {
    return Status::Corruption("entry table: names, link targets and xattrs take more than 4 GiB");
  }
  if (owner_of.size() > kMaxIndex || extra_count > kMaxIndex || xattr_count > kMaxIndex) {
    return Status::Corruption("entry table: more than 2^32 - 2 owners, link targets or xattrs");
  }

  EntryTable t;
  t.records_.reserve(entries.size());
  t.arena_.reserve(static_cast<size_t>(arena_bytes));
  t.owners_.reserve(owner_of.size());
  t.extras_.reserve(extra_count);
  std::vector<std::pair<Slice, Slice>> xattr_slices;
  xattr_slices.reserve(xattr_count);
  auto append = [&t](std::string_view s) {
    Slice slice{static_cast<uint32_t>(t.arena_.size()), static_cast<uint32_t>(s.size())};
    t.arena_.insert(t.arena_.end(), s.begin(), s.end());
    return slice;
  };
  for (auto& [key, index] : owner_of) {
    index = static_cast<uint32_t>(t.owners_.size());
    const auto& [uid, gid, uname, gname] = key;
    Owner o{uid, gid, {}, {}};
    o.uname = append(uname);
    o.gname = append(gname);
    t.owners_.push_back(o);
  }
  for (const Entry& e : entries) {
    Record r;
    r.data_offset = e.data_offset;
    r.size = e.size;
    r.mtime_sec = e.mtime_sec;
    r.mtime_nsec = e.mtime_nsec;
    r.owner = owner_of.at({e.uid, e.gid, e.uname, e.gname});
    const Slice name = append(e.name);
    r.name_offset = name.offset;
    r.name_size = static_cast<uint16_t>(name.size);
    r.mode = static_cast<uint16_t>(e.mode);
    r.type = e.type;
    if (!e.link_target.empty() || e.dev_major != 0 || e.dev_minor != 0 || !e.xattrs.empty()) {
      r.extra = static_cast<uint32_t>(t.extras_.size());
      Extra x;
      x.link_target = append(e.link_target);
      x.dev_major = e.dev_major;
      x.dev_minor = e.dev_minor;
      x.first_xattr = static_cast<uint32_t>(xattr_slices.size());
      x.xattr_count = static_cast<uint32_t>(e.xattrs.size());
      for (const auto& [k, v] : e.xattrs) {  // std::map: sorted by name
        Slice ks = append(k);
        xattr_slices.emplace_back(ks, append(v));
      }
      t.extras_.push_back(x);
    }
    t.records_.push_back(r);
  }
  // The arena is complete (and never reallocates again): the xattr views can point into it.
  t.xattrs_.reserve(xattr_slices.size());
  for (const auto& [k, v] : xattr_slices) t.xattrs_.push_back({t.slice(k), t.slice(v)});
  return t;
}

size_t EntryTable::memory_bytes() const {
  return records_.capacity() * sizeof(Record) + arena_.capacity() +
         owners_.capacity() * sizeof(Owner) + extras_.capacity() * sizeof(Extra) +
         xattrs_.capacity() * sizeof(XattrView);
}

}  // namespace lazycrypt::format
