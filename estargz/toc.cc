#include "estargz/toc.h"

#include <cstdio>
#include <cstring>
#include <limits>

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

// A non-negative integer member (absent: 0). Go's decoder takes int64; larger is refused.
Status GetUint(const nlohmann::json& obj, const char* key, uint64_t max, uint64_t& out,
               size_t index) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return Status::Ok();
  if (it->is_number_unsigned()) {
    uint64_t v = it->get<uint64_t>();
    if (v <= max) {
      out = v;
      return Status::Ok();
    }
  } else if (it->is_number_integer() && it->get<int64_t>() == 0) {
    return Status::Ok();
  }
  return Status::Corruption(EntryWhere(index) + ": \"" + key +
                            "\" is not an integer in 0.." + std::to_string(max));
}

Status GetString(const nlohmann::json& obj, const char* key, std::string& out, size_t index) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return Status::Ok();
  if (!it->is_string()) {
    return Status::Corruption(EntryWhere(index) + ": \"" + key + "\" is not a string");
  }
  out = it->get<std::string>();
  return Status::Ok();
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
  nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::Corruption("estargz TOC: not a JSON object");
  }
  Toc toc;
  auto version = j.find("version");
  if (version == j.end() || !version->is_number_integer() ||
      version->get<int64_t>() != kTocVersion) {
    return Status::Corruption("estargz TOC: \"version\" is not " + std::to_string(kTocVersion));
  }
  auto salt = j.find("lazycryptSalt");
  if (salt != j.end()) {
    if (!salt->is_string()) return Status::Corruption("estargz TOC: \"lazycryptSalt\" is not a string");
    toc.salt_hex = salt->get<std::string>();
  }
  auto entries = j.find("entries");
  if (entries == j.end() || !entries->is_array()) {
    return Status::Corruption("estargz TOC: \"entries\" is not an array");
  }
  if (entries->size() > limits.max_entries) {
    return Status::Corruption("estargz TOC: " + std::to_string(entries->size()) +
                              " entries, over the limit of " + std::to_string(limits.max_entries));
  }
  toc.entries.reserve(entries->size());
  for (size_t i = 0; i < entries->size(); ++i) {
    const nlohmann::json& o = (*entries)[i];
    if (!o.is_object()) return Status::Corruption(EntryWhere(i) + ": not an object");
    TocEntry e;
    uint64_t mode = 0, dev_major = 0, dev_minor = 0;
    LC_RETURN_IF_ERROR(GetString(o, "name", e.name, i));
    LC_RETURN_IF_ERROR(GetString(o, "type", e.type, i));
    LC_RETURN_IF_ERROR(GetUint(o, "size", kMaxInt64, e.size, i));
    LC_RETURN_IF_ERROR(GetString(o, "modtime", e.modtime, i));
    LC_RETURN_IF_ERROR(GetString(o, "linkName", e.link_name, i));
    LC_RETURN_IF_ERROR(GetUint(o, "mode", kMaxInt64, mode, i));
    LC_RETURN_IF_ERROR(GetUint(o, "uid", kMaxInt64, e.uid, i));
    LC_RETURN_IF_ERROR(GetUint(o, "gid", kMaxInt64, e.gid, i));
    LC_RETURN_IF_ERROR(GetString(o, "userName", e.uname, i));
    LC_RETURN_IF_ERROR(GetString(o, "groupName", e.gname, i));
    LC_RETURN_IF_ERROR(GetUint(o, "offset", kMaxInt64, e.offset, i));
    LC_RETURN_IF_ERROR(GetUint(o, "innerOffset", kMaxInt64, e.inner_offset, i));
    LC_RETURN_IF_ERROR(GetUint(o, "devMajor", kMaxInt32, dev_major, i));
    LC_RETURN_IF_ERROR(GetUint(o, "devMinor", kMaxInt32, dev_minor, i));
    LC_RETURN_IF_ERROR(GetString(o, "digest", e.digest, i));
    LC_RETURN_IF_ERROR(GetUint(o, "chunkOffset", kMaxInt64, e.chunk_offset, i));
    LC_RETURN_IF_ERROR(GetUint(o, "chunkSize", kMaxInt64, e.chunk_size, i));
    LC_RETURN_IF_ERROR(GetString(o, "chunkDigest", e.chunk_digest, i));
    // tar.Header.Mode may carry the file-type bits (c_ISREG, ...); only the permission bits mean
    // anything here (Go's TOCEntry.Stat masks the same way).
    e.mode = static_cast<uint32_t>(mode & 07777);
    e.dev_major = static_cast<uint32_t>(dev_major);
    e.dev_minor = static_cast<uint32_t>(dev_minor);
    auto x = o.find("xattrs");
    if (x != o.end() && !x->is_null()) {
      if (!x->is_object()) return Status::Corruption(EntryWhere(i) + ": \"xattrs\" is not an object");
      for (auto it = x->begin(); it != x->end(); ++it) {
        if (!it->is_string()) {
          return Status::Corruption(EntryWhere(i) + ": an xattr value is not a string");
        }
        auto value = keywrap::Base64Decode(it->get<std::string>());
        if (!value.ok()) {
          return Status::Corruption(EntryWhere(i) + ": an xattr value is not base64");
        }
        e.xattrs[it.key()] = std::string(value->begin(), value->end());
      }
    }
    toc.entries.push_back(std::move(e));
  }
  return toc;
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
