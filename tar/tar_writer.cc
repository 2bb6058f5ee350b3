#include "tar/tar_writer.h"

#include "tar/header_layout.h"

#include <openssl/evp.h>

#include <array>
#include <cstring>

namespace lazycrypt::tar {

namespace {

using namespace internal;  // the header layout (tar/header_layout.h)

// Copies s into the field (truncating); the rest of the field stays NUL.
void PutString(Block& b, Field f, std::string_view s) {
  if (s.empty()) return;
  std::memcpy(b.data() + f.offset, s.data(), std::min(s.size(), f.length));
}

// Largest value the field holds in octal (length-1 digits and a NUL).
uint64_t OctalMax(Field f) { return (uint64_t{1} << (3 * (f.length - 1))) - 1; }

void PutOctal(Block& b, Field f, uint64_t v) {
  for (size_t i = f.length - 1; i-- > 0;) {
    b[f.offset + i] = static_cast<uint8_t>('0' + (v & 7));
    v >>= 3;
  }
  b[f.offset + f.length - 1] = 0;
}

// GNU base-256: big-endian two's complement with the top bit of the first byte set.
Status PutBase256(Block& b, Field f, int64_t v) {
  const size_t value_bytes = f.length - 1;
  if (value_bytes < 8) {
    int64_t limit = int64_t{1} << (8 * value_bytes - 1);
    if (v >= limit || v < -limit) {
      return Status::InvalidArgument("tar writer: " + std::to_string(v) +
                                     " does not fit a base-256 field of " +
                                     std::to_string(f.length) + " bytes");
    }
  }
  uint64_t u = static_cast<uint64_t>(v);
  for (size_t i = f.length; i-- > 0;) {
    b[f.offset + i] = static_cast<uint8_t>(u & 0xff);
    u = v < 0 ? (u >> 8) | (uint64_t{0xff} << 56) : u >> 8;
  }
  b[f.offset] = v < 0 ? 0xff : 0x80;
  return Status::Ok();
}

// Octal when it fits (and base-256 is not forced), else base-256.
Status PutNumber(Block& b, Field f, int64_t v, bool force_base256) {
  if (!force_base256 && v >= 0 && static_cast<uint64_t>(v) <= OctalMax(f)) {
    PutOctal(b, f, static_cast<uint64_t>(v));
    return Status::Ok();
  }
  return PutBase256(b, f, v);
}

char TypeflagFor(EntryType t) {
  switch (t) {
    case EntryType::kRegular:
      return '0';
    case EntryType::kHardlink:
      return '1';
    case EntryType::kSymlink:
      return '2';
    case EntryType::kCharDevice:
      return '3';
    case EntryType::kBlockDevice:
      return '4';
    case EntryType::kDirectory:
      return '5';
    case EntryType::kFifo:
      return '6';
  }
  return '0';
}

void PutMagic(Block& b, Flavor flavor) {
  if (flavor == Flavor::kPax) {
    std::memcpy(b.data() + kMagicVersion.offset, "ustar\0" "00", 8);
  } else {
    std::memcpy(b.data() + kMagicVersion.offset, "ustar  \0", 8);
  }
}

// Splits a name into ustar prefix (<= 155) and name (<= 100) at a '/', if possible.
bool SplitUstarName(std::string_view name, std::string_view* prefix, std::string_view* rest) {
  for (size_t p = name.find('/'); p != std::string_view::npos; p = name.find('/', p + 1)) {
    if (p > kPrefix.length) return false;
    size_t rest_len = name.size() - p - 1;
    if (rest_len == 0) return false;
    if (rest_len <= kName.length) {
      *prefix = name.substr(0, p);
      *rest = name.substr(p + 1);
      return !prefix->empty();
    }
  }
  return false;
}

// libarchive's escaping of xattr names: '%XX' for bytes outside '!'..'~' and for '%' and '='.
std::string UrlEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 33 || c > 126 || c == '%' || c == '=') {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += ch;
    }
  }
  return out;
}

// Standard base64 without '=' padding, as libarchive writes it.
std::string Base64Unpadded(std::string_view s) {
  std::string out(4 * ((s.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(s.data()),
                          static_cast<int>(s.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  return out;
}

std::string PaxTime(int64_t sec, uint32_t nsec) {
  if (nsec == 0) return std::to_string(sec);
  // PAX writes negative times as -(|t|): -1.25 s is sec = -2, nsec = 750000000.
  bool negative = sec < 0;
  uint64_t whole = negative ? static_cast<uint64_t>(-(sec + 1)) : static_cast<uint64_t>(sec);
  uint32_t frac = negative ? 1000000000u - nsec : nsec;
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%09u", frac);
  return (negative ? "-" : "") + std::to_string(whole) + "." + buf;
}

}  // namespace

std::string PaxRecord(std::string_view key, std::string_view value) {
  // " key=value\n" plus the length's own digits.
  size_t base = 1 + key.size() + 1 + value.size() + 1;
  size_t len = base + 1;
  while (std::to_string(len).size() + base != len) len = std::to_string(len).size() + base;
  return std::to_string(len) + " " + std::string(key) + "=" + std::string(value) + "\n";
}

void SetHeaderChecksum(MutableByteSpan block) {
  std::memset(block.data() + kChecksum.offset, ' ', kChecksum.length);
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlockSize; ++i) sum += block[i];
  // GNU tar's layout: six octal digits, NUL, space.
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%06o", static_cast<unsigned>(sum));
  std::memcpy(block.data() + kChecksum.offset, buf, 6);
  block[kChecksum.offset + 6] = 0;
  block[kChecksum.offset + 7] = ' ';
}

TarWriter::TarWriter(OutputStream& out, Flavor flavor) : out_(out), flavor_(flavor) {}

Status TarWriter::Write(ByteSpan bytes) {
  LC_RETURN_IF_ERROR(out_.Write(bytes));
  offset_ += bytes.size();
  return Status::Ok();
}

Status TarWriter::WritePadding(uint64_t size) {
  static const uint8_t kZeros[kBlockSize] = {};
  size_t pad = static_cast<size_t>((kBlockSize - size % kBlockSize) % kBlockSize);
  return Write(ByteSpan(kZeros, pad));
}

Status TarWriter::AppendRaw(ByteSpan bytes) { return Write(bytes); }

Status TarWriter::WriteExtended(char type, std::string_view name, std::string_view body,
                                const Entry& entry) {
  Block b{};
  PutString(b, kName, name);
  PutOctal(b, kMode, 0644);
  PutOctal(b, kUid, 0);
  PutOctal(b, kGid, 0);
  PutOctal(b, kSize, body.size());
  PutOctal(b, kMtime, entry.mtime_sec > 0 && static_cast<uint64_t>(entry.mtime_sec) <= OctalMax(kMtime)
                          ? static_cast<uint64_t>(entry.mtime_sec)
                          : 0);
  b[kTypeflag] = static_cast<uint8_t>(type);
  PutMagic(b, flavor_);
  SetHeaderChecksum(b);
  LC_RETURN_IF_ERROR(Write(b));
  LC_RETURN_IF_ERROR(Write(AsBytes(body)));
  return WritePadding(body.size());
}

Result<uint64_t> TarWriter::AppendHeader(const Entry& e, const WriteOptions& opt) {
  const bool pax = flavor_ == Flavor::kPax;
  std::string records;
  auto add = [&](std::string_view k, std::string_view v) { records += PaxRecord(k, v); };
  Block b{};

  // Names.
  std::string_view name_field = e.name;
  std::string_view prefix_field;
  bool long_name = false;
  if (pax) {
    std::string_view prefix, rest;
    if (opt.force_pax_path) {
      add("path", e.name);
    } else if (e.name.size() <= kName.length) {
      // fits
    } else if (!opt.no_prefix && SplitUstarName(e.name, &prefix, &rest)) {
      prefix_field = prefix;
      name_field = rest;
    } else {
      add("path", e.name);
    }
    if (opt.force_pax_path || e.link_name.size() > kLinkname.length) add("linkpath", e.link_name);
  } else {
    long_name = e.name.size() > kName.length;
  }
  const bool long_link = !pax && e.link_name.size() > kLinkname.length;

  // Numbers.
  const bool b256 = opt.base256_numbers;
  uint64_t size_field = e.size;
  if (pax && !b256 && (opt.pax_size || e.size > OctalMax(kSize))) {
    add("size", std::to_string(e.size));
    size_field = 0;
  }
  uint64_t uid_field = e.uid, gid_field = e.gid;
  if (pax && !b256 && e.uid > OctalMax(kUid)) {
    add("uid", std::to_string(e.uid));
    uid_field = 0;
  }
  if (pax && !b256 && e.gid > OctalMax(kGid)) {
    add("gid", std::to_string(e.gid));
    gid_field = 0;
  }
  int64_t mtime_field = e.mtime_sec;
  if (pax && (e.mtime_nsec != 0 ||
              (!b256 && (e.mtime_sec < 0 ||
                         static_cast<uint64_t>(e.mtime_sec) > OctalMax(kMtime))))) {
    add("mtime", PaxTime(e.mtime_sec, e.mtime_nsec));
    if (!b256 && (e.mtime_sec < 0 || static_cast<uint64_t>(e.mtime_sec) > OctalMax(kMtime))) {
      mtime_field = 0;
    }
  }
  if (pax && e.uname.size() > kUname.length) add("uname", e.uname);
  if (pax && e.gname.size() > kGname.length) add("gname", e.gname);
  if (!pax && (e.uname.size() > kUname.length || e.gname.size() > kGname.length)) {
    return Status::InvalidArgument("tar writer: GNU format cannot hold a user/group name over 32 bytes");
  }
  const bool device = e.type == EntryType::kCharDevice || e.type == EntryType::kBlockDevice;
  if (pax && device && e.dev_major > OctalMax(kDevmajor)) {
    add("SCHILY.devmajor", std::to_string(e.dev_major));
  }
  if (pax && device && e.dev_minor > OctalMax(kDevminor)) {
    add("SCHILY.devminor", std::to_string(e.dev_minor));
  }
  if (!e.xattrs.empty()) {
    if (!pax) return Status::InvalidArgument("tar writer: GNU format cannot hold xattrs");
    for (const auto& [k, v] : e.xattrs) {
      if (opt.libarchive_xattrs) {
        add("LIBARCHIVE.xattr." + UrlEncode(k), Base64Unpadded(v));
      } else {
        add("SCHILY.xattr." + k, v);
      }
    }
  }
  for (const auto& [k, v] : opt.extra_pax) add(k, v);
  if (opt.raw_pax_body) records = *opt.raw_pax_body;

  // Extended header blocks first.
  if (!records.empty()) {
    std::string base = e.name.substr(e.name.find_last_of('/', e.name.size() - 2) + 1);
    LC_RETURN_IF_ERROR(WriteExtended('x', ("PaxHeaders/" + base).substr(0, kName.length),
                                     records, e));
  }
  if (long_link) {
    LC_RETURN_IF_ERROR(WriteExtended('K', "././@LongLink", e.link_name + std::string(1, '\0'), e));
  }
  if (long_name) {
    LC_RETURN_IF_ERROR(WriteExtended('L', "././@LongLink", e.name + std::string(1, '\0'), e));
  }

  // The header itself.
  PutString(b, kName, name_field);
  PutOctal(b, kMode, e.mode & 07777);
  LC_RETURN_IF_ERROR(PutNumber(b, kUid, static_cast<int64_t>(uid_field), b256));
  LC_RETURN_IF_ERROR(PutNumber(b, kGid, static_cast<int64_t>(gid_field), b256));
  LC_RETURN_IF_ERROR(PutNumber(b, kSize, static_cast<int64_t>(size_field), b256));
  LC_RETURN_IF_ERROR(PutNumber(b, kMtime, mtime_field, b256));
  b[kTypeflag] = static_cast<uint8_t>(opt.typeflag.value_or(TypeflagFor(e.type)));
  PutString(b, kLinkname, e.link_name);
  PutMagic(b, flavor_);
  PutString(b, kUname, e.uname);
  PutString(b, kGname, e.gname);
  if (device) {
    LC_RETURN_IF_ERROR(PutNumber(b, kDevmajor, pax && e.dev_major > OctalMax(kDevmajor) ? 0
                                                                                  : e.dev_major,
                                 false));
    LC_RETURN_IF_ERROR(PutNumber(b, kDevminor, pax && e.dev_minor > OctalMax(kDevminor) ? 0
                                                                                  : e.dev_minor,
                                 false));
  }
  PutString(b, kPrefix, prefix_field);
  SetHeaderChecksum(b);
  LC_RETURN_IF_ERROR(Write(b));
  return offset_;
}

Status TarWriter::AppendEntry(const Entry& entry, ByteSpan data, const WriteOptions& options) {
  if (data.size() != entry.size) {
    return Status::InvalidArgument("tar writer: entry '" + entry.name + "' has size " +
                                   std::to_string(entry.size) + " but " +
                                   std::to_string(data.size()) + " data bytes were given");
  }
  LC_RETURN_IF_ERROR(AppendHeader(entry, options).status());
  LC_RETURN_IF_ERROR(Write(data));
  return WritePadding(data.size());
}

Status TarWriter::AppendGlobalHeader(
    const std::vector<std::pair<std::string, std::string>>& records) {
  std::string body;
  for (const auto& [k, v] : records) body += PaxRecord(k, v);
  return WriteExtended('g', "pax_global_header", body, Entry{});
}

Status TarWriter::Finish(size_t record_size) {
  static const uint8_t kZeros[2 * kBlockSize] = {};
  LC_RETURN_IF_ERROR(Write(kZeros));
  if (record_size > 0) {
    uint64_t pad = (record_size - offset_ % record_size) % record_size;
    std::vector<uint8_t> zeros(static_cast<size_t>(pad), 0);
    LC_RETURN_IF_ERROR(Write(zeros));
  }
  return Status::Ok();
}

}  // namespace lazycrypt::tar
