#include "estargz/toc.h"

#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/json_depth.h"
#include "keywrap/base64.h"

namespace lazycrypt::estargz {

namespace {

using OrderedJson = nlohmann::ordered_json;

std::string EntryWhere(size_t index) { return "estargz TOC: entry " + std::to_string(index); }

OrderedJson EntryJson(const TocEntry& e) {
  // Go's encoding/json order of estargz.TOCEntry's fields; omitempty on all but name and type.
  OrderedJson j = OrderedJson::object();
  j["name"] = e.name;
  j["type"] = e.type;
  if (e.size) j["size"] = e.size;
  if (!e.modtime.empty()) j["modtime"] = e.modtime;
  if (!e.link_name.empty()) j["linkName"] = e.link_name;
  if (e.mode) j["mode"] = e.mode;
  if (e.uid) j["uid"] = e.uid;
  if (e.gid) j["gid"] = e.gid;
  if (!e.uname.empty()) j["userName"] = e.uname;
  if (!e.gname.empty()) j["groupName"] = e.gname;
  if (e.offset) j["offset"] = e.offset;
  if (e.inner_offset) j["innerOffset"] = e.inner_offset;
  if (e.dev_major) j["devMajor"] = e.dev_major;
  if (e.dev_minor) j["devMinor"] = e.dev_minor;
  if (!e.xattrs.empty()) {
    OrderedJson x = OrderedJson::object();  // Go sorts map keys; std::map iterates sorted
    for (const auto& [k, v] : e.xattrs) x[k] = keywrap::Base64Encode(AsBytes(v));
    j["xattrs"] = std::move(x);
  }
  if (!e.digest.empty()) j["digest"] = e.digest;
  if (e.chunk_offset) j["chunkOffset"] = e.chunk_offset;
  if (e.chunk_size) j["chunkSize"] = e.chunk_size;
  if (!e.chunk_digest.empty()) j["chunkDigest"] = e.chunk_digest;
  return j;
}

constexpr uint64_t kMaxInt64 = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
constexpr uint64_t kMaxInt32 = static_cast<uint64_t>(std::numeric_limits<int32_t>::max());

// The footer's fixed bytes, with the 16 hex digits of the offset at [16, 32).
constexpr size_t kHexAt = 16;
constexpr uint8_t kFooterHead[16] = {0x1f, 0x8b, 0x08, 0x04,  // gzip, deflate, FLG = FEXTRA
                                     0, 0, 0, 0,              // MTIME
                                     0, 0xff,                 // XFL, OS (Go: 255)
                                     26, 0,                   // XLEN = 4 + 22
                                     'S', 'G', 22, 0};        // SI1, SI2, LEN = 16 + 6
constexpr uint8_t kFooterTail[19] = {'S', 'T', 'A', 'R', 'G', 'Z',
                                     0x01, 0x00, 0x00, 0xff, 0xff,  // final stored block, 0 bytes
                                     0, 0, 0, 0,                    // CRC-32 of nothing
                                     0, 0, 0, 0};                   // ISIZE 0
static_assert(sizeof(kFooterHead) + 16 + sizeof(kFooterTail) == kFooterSize);

// The TOC read with nlohmann's SAX interface straight into Toc, never as a JSON DOM: the TOC is
// written by the image's author (pinned by digest, not vetted), and a DOM costs a heap object per
// JSON value (16+ bytes each, plus a map per object) for values nobody reads: 256 MiB of
// `"x":[0,0,...]` in an unknown member would build 128 Mi values (GiBs) before any check, and
// 8 Mi empty `{}` entries a map each before the count check. Here unknown members are skipped
// as they stream by, entries are counted as they open (refused at max_entries + 1) and xattrs
// too: what is built is bounded by the limits, not by the JSON.
//
// Semantics are the DOM reader's (the tests pin them): members in any order, the last of a
// duplicated member wins (a null one too: null is absent), integers are non-negative and within
// Go's types. Stricter in one respect: a duplicated member's invalid earlier value is refused
// even when a valid one follows.
class TocSax {
 public:
  using Json = nlohmann::json;
  explicit TocSax(const TocLimits& limits) : limits_(limits) {}

  bool null() { return Scalar(Value{Kind::kNull}); }
  bool boolean(bool) { return Scalar(Value{Kind::kOther}); }
  bool number_integer(Json::number_integer_t v) {
    return Scalar(Value{v == 0 ? Kind::kZero : Kind::kNegative});
  }
  bool number_unsigned(Json::number_unsigned_t v) {
    Value value{Kind::kUnsigned};
    value.u = v;
    return Scalar(value);
  }
  bool number_float(Json::number_float_t, const Json::string_t&) {
    return Scalar(Value{Kind::kOther});
  }
  bool string(Json::string_t& v) {
    Value value{Kind::kString};
    value.s = &v;
    return Scalar(value);
  }
  bool binary(Json::binary_t&) { return Scalar(Value{Kind::kOther}); }
  bool key(Json::string_t& k) {
    if (stack_.back() != Where::kSkip) key_ = k;
    return true;
  }
  bool start_object(std::size_t) { return Open(/*object=*/true); }
  bool start_array(std::size_t) { return Open(/*object=*/false); }
  bool end_object() { return Close(); }
  bool end_array() { return Close(); }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception&) {
    if (status_.ok()) {
      status_ = Status::Corruption("estargz TOC: not a JSON object (the JSON does not parse at byte " +
                                   std::to_string(position) + ")");
    }
    return false;
  }

  Result<Toc> Finish(bool parsed) && {
    if (!status_.ok()) return status_;
    if (!parsed || !root_seen_) return Status::Corruption("estargz TOC: not a JSON object");
    if (!version_ok_) {
      return Status::Corruption("estargz TOC: \"version\" is not " + std::to_string(kTocVersion));
    }
    if (!entries_array_) return Status::Corruption("estargz TOC: \"entries\" is not an array");
    return std::move(toc_);
  }

 private:
  enum class Where { kTop, kRoot, kEntries, kEntry, kXattrs, kSkip };
  enum class Kind { kNull, kZero, kNegative, kUnsigned, kString, kOther, kContainer };
  struct Value {
    Kind kind;
    uint64_t u = 0;
    Json::string_t* s = nullptr;
  };

  bool Fail(Status s) {
    if (status_.ok()) status_ = std::move(s);
    return false;
  }
  size_t entry_index() const { return toc_.entries.size() - 1; }

  // A non-negative integer member (null: absent, i.e. 0, also after an earlier duplicate). Go's
  // decoder takes int64; larger is refused.
  bool Uint(const Value& v, uint64_t max, uint64_t& out) {
    if (v.kind == Kind::kNull || v.kind == Kind::kZero) {
      out = 0;
      return true;
    }
    if (v.kind == Kind::kUnsigned && v.u <= max) {
      out = v.u;
      return true;
    }
    return Fail(Status::Corruption(EntryWhere(entry_index()) + ": \"" + key_ +
                                   "\" is not an integer in 0.." + std::to_string(max)));
  }
  bool String(const Value& v, std::string& out) {
    if (v.kind == Kind::kNull) {
      out.clear();
      return true;
    }
    if (v.kind != Kind::kString) {
      return Fail(Status::Corruption(EntryWhere(entry_index()) + ": \"" + key_ +
                                     "\" is not a string"));
    }
    out = std::move(*v.s);
    return true;
  }

  // A member of an entry (a container value arrives as kContainer; only "xattrs" may be one).
  bool EntryMember(const Value& v) {
    TocEntry& e = toc_.entries.back();
    const std::string& k = key_;
    if (k == "name") return String(v, e.name);
    if (k == "type") return String(v, e.type);
    if (k == "size") return Uint(v, kMaxInt64, e.size);
    if (k == "modtime") return String(v, e.modtime);
    if (k == "linkName") return String(v, e.link_name);
    if (k == "mode") {
      uint64_t mode = e.mode;
      if (!Uint(v, kMaxInt64, mode)) return false;
      // tar.Header.Mode may carry the file-type bits (c_ISREG, ...); only the permission bits
      // mean anything here (Go's TOCEntry.Stat masks the same way).
      e.mode = static_cast<uint32_t>(mode & 07777);
      return true;
    }
    if (k == "uid") return Uint(v, kMaxInt64, e.uid);
    if (k == "gid") return Uint(v, kMaxInt64, e.gid);
    if (k == "userName") return String(v, e.uname);
    if (k == "groupName") return String(v, e.gname);
    if (k == "offset") return Uint(v, kMaxInt64, e.offset);
    if (k == "innerOffset") return Uint(v, kMaxInt64, e.inner_offset);
    if (k == "devMajor" || k == "devMinor") {
      uint64_t dev = k == "devMajor" ? e.dev_major : e.dev_minor;
      if (!Uint(v, kMaxInt32, dev)) return false;
      (k == "devMajor" ? e.dev_major : e.dev_minor) = static_cast<uint32_t>(dev);
      return true;
    }
    if (k == "digest") return String(v, e.digest);
    if (k == "chunkOffset") return Uint(v, kMaxInt64, e.chunk_offset);
    if (k == "chunkSize") return Uint(v, kMaxInt64, e.chunk_size);
    if (k == "chunkDigest") return String(v, e.chunk_digest);
    if (k == "xattrs") {
      if (v.kind == Kind::kNull) {
        xattrs_ -= e.xattrs.size();
        e.xattrs.clear();
        return true;
      }
      return Fail(Status::Corruption(EntryWhere(entry_index()) + ": \"xattrs\" is not an object"));
    }
    return true;  // a member eStargz does not define: ignored, as Go's decoder does
  }

  bool Xattr(const Value& v) {
    if (v.kind != Kind::kString) {
      return Fail(Status::Corruption(EntryWhere(entry_index()) + ": an xattr value is not a string"));
    }
    auto value = keywrap::Base64Decode(*v.s);
    if (!value.ok()) {
      return Fail(Status::Corruption(EntryWhere(entry_index()) + ": an xattr value is not base64"));
    }
    auto& xattrs = toc_.entries.back().xattrs;
    if (xattrs.count(key_) == 0) {
      if (xattrs.size() >= kMaxXattrsPerEntry || xattrs_ >= max_xattrs()) {
        return Fail(Status::Corruption(EntryWhere(entry_index()) + ": more xattrs than the limit (" +
                                       std::to_string(kMaxXattrsPerEntry) + " per entry, " +
                                       std::to_string(max_xattrs()) + " in all)"));
      }
      ++xattrs_;
    }
    xattrs[key_] = std::string(value->begin(), value->end());
    return true;
  }
  uint64_t max_xattrs() const {
    return limits_.max_entries > UINT64_MAX / 4 ? UINT64_MAX : 4 * limits_.max_entries;
  }

  bool Scalar(const Value& v) {
    switch (stack_.back()) {
      case Where::kTop:
        return Fail(Status::Corruption("estargz TOC: not a JSON object"));
      case Where::kSkip:
        return true;
      case Where::kRoot:
        if (key_ == "version") {
          version_ok_ = v.kind == Kind::kUnsigned && v.u == static_cast<uint64_t>(kTocVersion);
        } else if (key_ == "lazycryptSalt") {
          if (v.kind != Kind::kString) {
            return Fail(Status::Corruption("estargz TOC: \"lazycryptSalt\" is not a string"));
          }
          toc_.salt_hex = std::move(*v.s);
        } else if (key_ == "entries") {
          entries_array_ = false;
        }
        return true;
      case Where::kEntries:
        return Fail(Status::Corruption(EntryWhere(toc_.entries.size()) + ": not an object"));
      case Where::kEntry:
        return EntryMember(v);
      case Where::kXattrs:
        return Xattr(v);
    }
    return true;
  }

  bool Open(bool object) {
    Where next = Where::kSkip;
    switch (stack_.back()) {
      case Where::kTop:
        if (!object) return Fail(Status::Corruption("estargz TOC: not a JSON object"));
        root_seen_ = true;
        next = Where::kRoot;
        break;
      case Where::kSkip:
        break;
      case Where::kRoot:
        if (key_ == "version") {
          version_ok_ = false;
        } else if (key_ == "lazycryptSalt") {
          return Fail(Status::Corruption("estargz TOC: \"lazycryptSalt\" is not a string"));
        } else if (key_ == "entries") {
          entries_array_ = !object;
          if (!object) {
            toc_.entries.clear();  // the last "entries" wins
            xattrs_ = 0;
            next = Where::kEntries;
          }
        }
        break;
      case Where::kEntries:
        if (!object) {
          return Fail(Status::Corruption(EntryWhere(toc_.entries.size()) + ": not an object"));
        }
        if (toc_.entries.size() >= limits_.max_entries) {
          return Fail(Status::Corruption("estargz TOC: more than " +
                                         std::to_string(limits_.max_entries) +
                                         " entries, over the limit"));
        }
        toc_.entries.emplace_back();
        next = Where::kEntry;
        break;
      case Where::kEntry:
        if (key_ == "xattrs" && object) {
          xattrs_ -= toc_.entries.back().xattrs.size();
          toc_.entries.back().xattrs.clear();  // the last "xattrs" wins
          next = Where::kXattrs;
        } else if (!EntryMember(Value{Kind::kContainer})) {
          return false;
        }
        break;
      case Where::kXattrs:
        return Xattr(Value{Kind::kContainer});
    }
    stack_.push_back(next);
    return true;
  }

  bool Close() {
    stack_.pop_back();
    return true;
  }

  static constexpr size_t kMaxXattrsPerEntry = 4096;
  const TocLimits& limits_;
  Status status_;
  Toc toc_;
  std::vector<Where> stack_{Where::kTop};
  std::string key_;
  uint64_t xattrs_ = 0;
  bool root_seen_ = false, version_ok_ = false, entries_array_ = false;
};


}  // namespace

Result<std::string> SerializeToc(const Toc& toc) {
  OrderedJson j = OrderedJson::object();
  j["version"] = toc.version;
  OrderedJson entries = OrderedJson::array();
  for (const TocEntry& e : toc.entries) entries.push_back(EntryJson(e));
  j["entries"] = std::move(entries);
  if (!toc.salt_hex.empty()) j["lazycryptSalt"] = toc.salt_hex;
  try {
    // Strict UTF-8 (the default handler): a name that is not UTF-8 is refused, not mangled.
    return j.dump(1, '\t');
  } catch (const nlohmann::json::exception&) {
    // Find which entry, without naming it (names are confidential).
    for (size_t i = 0; i < toc.entries.size(); ++i) {
      try {
        (void)EntryJson(toc.entries[i]).dump();
      } catch (const nlohmann::json::exception&) {
        return Status::Unsupported("estargz: tar entry " + std::to_string(i) +
                                   " has a name, link name or xattr name that is not valid "
                                   "UTF-8, which the eStargz JSON TOC cannot hold");
      }
    }
    return Status::Internal("estargz: the TOC could not be serialized");
  }
}

Result<Toc> ParseToc(std::string_view json, const TocLimits& limits) {
  if (json.size() > limits.max_json_bytes) {
    return Status::Corruption("estargz TOC: " + std::to_string(json.size()) +
                              " bytes of JSON, over the limit of " +
                              std::to_string(limits.max_json_bytes));
  }
  LC_RETURN_IF_ERROR(CheckJsonDepth(json, "estargz TOC"));
  TocSax sax(limits);
  const bool parsed = nlohmann::json::sax_parse(json.begin(), json.end(), &sax,
                                                nlohmann::json::input_format_t::json,
                                                /*strict=*/true);
  return std::move(sax).Finish(parsed);
}

std::array<uint8_t, kFooterSize> MakeFooter(uint64_t toc_offset) {
  std::array<uint8_t, kFooterSize> f{};
  std::memcpy(f.data(), kFooterHead, sizeof(kFooterHead));
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(toc_offset));
  std::memcpy(f.data() + kHexAt, hex, 16);
  std::memcpy(f.data() + kHexAt + 16, kFooterTail, sizeof(kFooterTail));
  return f;
}

Result<uint64_t> ParseFooter(ByteSpan footer) {
  if (footer.size() != kFooterSize) {
    return Status::Corruption("estargz footer: " + std::to_string(footer.size()) +
                              " bytes, not " + std::to_string(kFooterSize));
  }
  for (size_t i = 0; i < sizeof(kFooterHead); ++i) {
    if (i == 8 || i == 9) continue;  // XFL and OS: informational in RFC 1952
    if (footer[i] != kFooterHead[i]) {
      return Status::Corruption("estargz footer: byte " + std::to_string(i) +
                                " is not the eStargz footer's (not an eStargz blob?)");
    }
  }
  if (std::memcmp(footer.data() + kHexAt + 16, kFooterTail, sizeof(kFooterTail)) != 0) {
    return Status::Corruption("estargz footer: no STARGZ magic or not an empty gzip member");
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < 16; ++i) {
    uint8_t c = footer[kHexAt + i];
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) return Status::Corruption("estargz footer: the TOC offset is not 16 lowercase hex digits");
    offset = offset << 4 | static_cast<uint64_t>(v);
  }
  if (offset > kMaxInt64) return Status::Corruption("estargz footer: TOC offset out of range");
  return offset;
}

}  // namespace lazycrypt::estargz
