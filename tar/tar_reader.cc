#include "tar/tar_reader.h"

#include "tar/header_layout.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <utility>

namespace lazycrypt::tar {

std::string_view EntryTypeName(EntryType type) {
  switch (type) {
    case EntryType::kRegular:
      return "regular file";
    case EntryType::kHardlink:
      return "hard link";
    case EntryType::kSymlink:
      return "symlink";
    case EntryType::kCharDevice:
      return "character device";
    case EntryType::kBlockDevice:
      return "block device";
    case EntryType::kDirectory:
      return "directory";
    case EntryType::kFifo:
      return "fifo";
  }
  return "unknown";
}

namespace {

using namespace internal;  // the header layout (tar/header_layout.h)
constexpr size_t kBufferSize = 128 * 1024;
// ReadData requests at least this large bypass the buffer and read straight into the caller's
// memory (no copy at all).
constexpr size_t kDirectReadThreshold = 32 * 1024;

enum class HeaderFormat { kV7, kUstar, kGnu };

std::string_view FieldBytes(const Block& b, Field f) {
  return {reinterpret_cast<const char*>(b.data()) + f.offset, f.length};
}

// A NUL-terminated (or field-filling) string field.
std::string_view FieldString(const Block& b, Field f) {
  std::string_view s = FieldBytes(b, f);
  size_t nul = s.find('\0');
  return nul == std::string_view::npos ? s : s.substr(0, nul);
}

bool IsZeroBlock(const Block& b) {
  return std::all_of(b.begin(), b.end(), [](uint8_t c) { return c == 0; });
}

// Names and type bytes in messages: printable ASCII as is, everything else escaped; long names
// shortened so a hostile 1 MiB name cannot flood a log.
std::string Printable(std::string_view s, size_t max_len = 256) {
  std::string out;
  static constexpr char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < s.size(); ++i) {
    if (out.size() >= max_len) {
      out += "...";
      break;
    }
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string TypeChar(char t) {
  if (t == '\0') return "\\0";
  return Printable(std::string_view(&t, 1));
}

// What an unsupported typeflag is, for the message.
std::string_view UnsupportedTypeDescription(char t) {
  switch (t) {
    case 'S':
      return "GNU sparse file";
    case 'M':
      return "GNU multi-volume continuation";
    case 'V':
      return "GNU volume label";
    case 'D':
      return "GNU dumpdir";
    case 'N':
      return "GNU old long name";
    case 'X':
      return "Solaris extended header";
    default:
      return "unknown type";
  }
}

// Octal (NUL/space padded on either side) or GNU base-256 (first byte 0x80 positive,
// 0xff negative; two's complement). nullopt if malformed or out of int64 range.
std::optional<int64_t> ParseNumber(std::string_view f) {
  if (!f.empty() && (static_cast<uint8_t>(f[0]) & 0x80) != 0) {
    const uint8_t inv = (static_cast<uint8_t>(f[0]) & 0x40) != 0 ? 0xff : 0x00;
    uint64_t x = 0;
    for (size_t i = 0; i < f.size(); ++i) {
      uint8_t c = static_cast<uint8_t>(f[i]) ^ inv;
      if (i == 0) c &= 0x7f;
      if ((x >> 56) != 0) return std::nullopt;
      x = x << 8 | c;
    }
    if ((x >> 63) != 0) return std::nullopt;
    return inv != 0 ? ~static_cast<int64_t>(x) : static_cast<int64_t>(x);
  }
  size_t b = f.find_first_not_of(std::string_view(" \0", 2));
  if (b == std::string_view::npos) return 0;
  size_t e = f.find_last_not_of(std::string_view(" \0", 2));
  std::string_view digits = f.substr(b, e - b + 1);
  uint64_t x = 0;  // at most 12 octal digits: no overflow
  for (char c : digits) {
    if (c < '0' || c > '7') return std::nullopt;
    x = x * 8 + static_cast<uint64_t>(c - '0');
  }
  return static_cast<int64_t>(x);
}

// A PAX decimal: digits only, no sign, no overflow.
std::optional<uint64_t> ParseDecimal(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  uint64_t x = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (x > (std::numeric_limits<uint64_t>::max() - d) / 10) return std::nullopt;
    x = x * 10 + d;
  }
  return x;
}

// PAX time: [-]seconds[.fraction]; fraction digits beyond nanoseconds are truncated.
bool ParsePaxTime(std::string_view s, int64_t* sec, uint32_t* nsec) {
  bool negative = false;
  if (!s.empty() && s[0] == '-') {
    negative = true;
    s.remove_prefix(1);
  }
  std::string_view whole = s;
  std::string_view frac;
  if (size_t dot = s.find('.'); dot != std::string_view::npos) {
    whole = s.substr(0, dot);
    frac = s.substr(dot + 1);
  }
  auto w = ParseDecimal(whole);
  if (!w || *w > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  uint32_t ns = 0;
  for (size_t i = 0; i < frac.size(); ++i) {
    if (frac[i] < '0' || frac[i] > '9') return false;
  }
  for (size_t i = 0; i < 9; ++i) {
    ns = ns * 10 + (i < frac.size() ? static_cast<uint32_t>(frac[i] - '0') : 0);
  }
  int64_t v = static_cast<int64_t>(*w);
  if (negative) {
    v = -v;
    if (ns > 0) {  // -1.25 is -2 s + 0.75 s
      v -= 1;
      ns = 1000000000u - ns;
    }
  }
  *sec = v;
  *nsec = ns;
  return true;
}

bool IsHexDigit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;
}

// libarchive escapes xattr names as %XX (RFC 3986 style).
std::optional<std::string> UrlDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size() || !IsHexDigit(s[i + 1]) || !IsHexDigit(s[i + 2])) return std::nullopt;
    out += static_cast<char>(HexValue(s[i + 1]) << 4 | HexValue(s[i + 2]));
    i += 2;
  }
  return out;
}

// Standard base64, padded or not (libarchive writes it without '=' padding). Decoding is
// OpenSSL's; this only checks the shape OpenSSL would otherwise be lenient about.
std::optional<std::string> Base64Decode(std::string_view s) {
  size_t pad = 0;
  while (pad < s.size() && s[s.size() - 1 - pad] == '=') ++pad;
  if (pad > 2) return std::nullopt;
  std::string_view body = s.substr(0, s.size() - pad);
  for (char c : body) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/';
    if (!ok) return std::nullopt;
  }
  if (body.size() % 4 == 1) return std::nullopt;
  std::string padded(body);
  size_t missing = (4 - body.size() % 4) % 4;
  if (pad != 0 && pad != missing) return std::nullopt;
  padded.append(missing, '=');
  if (padded.empty()) return std::string();
  std::string out(padded.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(padded.data()),
                          static_cast<int>(padded.size()));
  if (n < 0 || static_cast<size_t>(n) != out.size()) return std::nullopt;
  out.resize(out.size() - missing);
  return out;
}

using PaxRecords = std::map<std::string, std::string, std::less<>>;

// Parses "<len> <key>=<value>\n" records; later records override earlier ones.
// Returns an empty string on success, else what is wrong.
std::string ParsePaxRecords(std::string_view data, PaxRecords* out) {
  size_t record_offset = 0;
  while (!data.empty()) {
    std::string where = "PAX record at byte " + std::to_string(record_offset);
    size_t sp = data.find(' ');
    if (sp == std::string_view::npos || sp == 0 || sp > 20) {
      return where + ": bad length field";
    }
    auto len = ParseDecimal(data.substr(0, sp));
    if (!len) return where + ": bad length field";
    if (*len < sp + 3 || *len > data.size()) {
      return where + ": length " + std::to_string(*len) + " is out of range";
    }
    std::string_view record = data.substr(0, *len);
    if (record.back() != '\n') return where + ": does not end in a newline";
    std::string_view kv = record.substr(sp + 1, record.size() - sp - 2);
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos) return where + ": no '='";
    if (eq == 0) return where + ": empty keyword";
    std::string_view key = kv.substr(0, eq);
    if (key.find('\0') != std::string_view::npos) return where + ": NUL in keyword";
    (*out)[std::string(key)] = std::string(kv.substr(eq + 1));
    data.remove_prefix(*len);
    record_offset += *len;
  }
  return {};
}

constexpr std::string_view kSchilyXattr = "SCHILY.xattr.";
constexpr std::string_view kLibarchiveXattr = "LIBARCHIVE.xattr.";
constexpr std::string_view kGnuSparse = "GNU.sparse.";

}  // namespace

// ---------------------------------------------------------------------------------------------

class TarReader::Impl {
 public:
  Impl(InputStream& in, Tee tee) : in_(in), tee_(std::move(tee)), buf_(kBufferSize) {}

  Result<std::optional<Entry>> Next() {
    if (!error_.ok()) return error_;
    if (state_ == State::kEnd) return std::optional<Entry>();
    Result<std::optional<Entry>> r = NextImpl();
    if (!r.ok()) error_ = r.status();
    return r;
  }

  Result<size_t> ReadData(MutableByteSpan out) {
    if (!error_.ok()) return error_;
    Result<size_t> r = ReadDataImpl(out);
    if (!r.ok()) error_ = r.status();
    return r;
  }

  Result<uint64_t> DrainToEnd(bool zeros_only) {
    if (!error_.ok()) return error_;
    if (state_ != State::kEnd) {
      return Status::FailedPrecondition(
          "tar: DrainToEnd before the end-of-archive marker was reached");
    }
    uint64_t total = 0;
    for (;;) {
      size_t avail = end_ - pos_;
      if (avail > 0 && zeros_only) {
        const uint8_t* begin = buf_.data() + pos_;
        const uint8_t* nonzero = std::find_if(begin, begin + avail, [](uint8_t c) { return c != 0; });
        if (nonzero != begin + avail) {
          return error_ = Status::Corruption(
                     "tar: data after the end-of-archive marker (a non-zero byte at offset " +
                     std::to_string(offset_ + static_cast<uint64_t>(nonzero - begin)) + ")");
        }
      }
      if (avail > 0) {
        Status s = Consume(avail);
        if (!s.ok()) return error_ = s;
        total += avail;
      }
      auto n = ReadMore();
      if (!n.ok()) return error_ = n.status();
      if (*n == 0) return total;
    }
  }

  uint64_t offset() const { return offset_; }

 private:
  enum class State { kHeader, kData, kEnd };

  // Extended headers collected for the entry being parsed.
  struct Pending {
    PaxRecords pax;
    std::optional<std::string> long_name;  // GNU 'L'
    std::optional<std::string> long_link;  // GNU 'K'
    uint64_t bytes = 0;
    bool any() const { return !pax.empty() || long_name || long_link; }
  };

  // --- buffer ---------------------------------------------------------------------------------

  // Reads once from the stream into the free end of the buffer (compacting first if the free
  // space is gone). Returns the byte count; 0 at EOF.
  Result<size_t> ReadMore() {
    if (pos_ == end_) pos_ = end_ = 0;
    if (end_ == buf_.size()) {
      std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
      end_ -= pos_;
      pos_ = 0;
    }
    if (eof_) return size_t{0};
    if (end_ == buf_.size()) return Status::Internal("tar: read buffer full");
    LC_ASSIGN_OR_RETURN(size_t n, in_.Read(MutableByteSpan(buf_).subspan(end_)));
    if (n == 0) eof_ = true;
    end_ += n;
    return n;
  }

  // Ensures n bytes are buffered (n <= buffer size); false if the stream ends first.
  Result<bool> Ensure(size_t n) {
    if (pos_ + n > buf_.size()) {
      std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
      end_ -= pos_;
      pos_ = 0;
    }
    while (end_ - pos_ < n) {
      LC_ASSIGN_OR_RETURN(size_t got, ReadMore());
      if (got == 0) return false;
    }
    return true;
  }

  Status TeeBytes(ByteSpan raw) {
    offset_ += raw.size();
    if (tee_) return tee_(raw);
    return Status::Ok();
  }

  // Tees and drops n buffered bytes.
  Status Consume(size_t n) {
    Status s = TeeBytes(ByteSpan(buf_.data() + pos_, n));
    pos_ += n;
    if (pos_ == end_) pos_ = end_ = 0;
    return s;
  }

  // Consumes n bytes (buffered or not yet read), appending them to dst if not null.
  // `what` names them for the truncation message.
  Status ConsumeStream(uint64_t n, std::string* dst, const std::string& context,
                       std::string_view what) {
    uint64_t left = n;
    while (left > 0) {
      if (pos_ == end_) {
        LC_ASSIGN_OR_RETURN(size_t got, ReadMore());
        if (got == 0) {
          return Status::Corruption(context + ": truncated " + std::string(what) +
                                    " (stream ends at offset " + std::to_string(offset_) + ", " +
                                    std::to_string(left) + " of " + std::to_string(n) +
                                    " bytes missing)");
        }
      }
      size_t take = static_cast<size_t>(std::min<uint64_t>(left, end_ - pos_));
      if (dst != nullptr) dst->append(reinterpret_cast<const char*>(buf_.data() + pos_), take);
      LC_RETURN_IF_ERROR(Consume(take));
      left -= take;
    }
    return Status::Ok();
  }

  // Reads one header block into *block and consumes it. Returns false at a clean EOF (no byte
  // left); Corruption for a partial block.
  Result<bool> ReadBlock(Block* block, const std::string& context) {
    LC_ASSIGN_OR_RETURN(bool full, Ensure(kBlockSize));
    if (!full) {
      if (end_ == pos_) return false;
      return Status::Corruption(context + ": truncated header block (" +
                                std::to_string(end_ - pos_) + " of 512 bytes before the end)");
    }
    std::memcpy(block->data(), buf_.data() + pos_, kBlockSize);
    LC_RETURN_IF_ERROR(Consume(kBlockSize));
    return true;
  }

  // --- data -----------------------------------------------------------------------------------

  Result<size_t> ReadDataImpl(MutableByteSpan out) {
    if (state_ != State::kData || data_remaining_ == 0 || out.empty()) return size_t{0};
    size_t want = static_cast<size_t>(std::min<uint64_t>(out.size(), data_remaining_));
    size_t n;
    if (pos_ == end_ && want >= kDirectReadThreshold) {
      LC_ASSIGN_OR_RETURN(n, in_.Read(out.first(want)));
      if (n == 0) {
        eof_ = true;
        return TruncatedData();
      }
      if (n > want) return Status::Internal("tar: input stream returned more than asked");
      LC_RETURN_IF_ERROR(TeeBytes(out.first(n)));
    } else {
      if (pos_ == end_) {
        LC_ASSIGN_OR_RETURN(size_t got, ReadMore());
        if (got == 0) return TruncatedData();
      }
      n = std::min(want, end_ - pos_);
      std::memcpy(out.data(), buf_.data() + pos_, n);
      LC_RETURN_IF_ERROR(Consume(n));
    }
    data_remaining_ -= n;
    return n;
  }

  Status TruncatedData() {
    return Status::Corruption(current_context_ + ": truncated data (stream ends at offset " +
                              std::to_string(offset_) + ", " + std::to_string(data_remaining_) +
                              " bytes missing)");
  }

  // --- headers --------------------------------------------------------------------------------

  Result<std::optional<Entry>> NextImpl() {
    if (state_ == State::kData) {
      LC_RETURN_IF_ERROR(ConsumeStream(data_remaining_, nullptr, current_context_, "data"));
      data_remaining_ = 0;
      LC_RETURN_IF_ERROR(ConsumeStream(padding_remaining_, nullptr, current_context_, "padding"));
      padding_remaining_ = 0;
      state_ = State::kHeader;
    }
    const uint64_t header_offset = offset_;
    Pending pending;
    Block block;
    for (;;) {
      const uint64_t block_offset = offset_;
      const std::string context = "tar header at offset " + std::to_string(block_offset);
      LC_ASSIGN_OR_RETURN(bool got, ReadBlock(&block, context));
      if (!got) {
        if (pending.any()) {
          return Status::Corruption("tar: unexpected end of archive at offset " +
                                    std::to_string(block_offset) + " after an extended header");
        }
        // EOF exactly at a header boundary ends the archive, as Go's archive/tar (containerd) and
        // GNU tar accept: umoci writes layers without an end-of-archive marker.
        state_ = State::kEnd;
        return std::optional<Entry>();
      }
      if (IsZeroBlock(block)) {
        if (pending.any()) {
          return Status::Corruption(context + ": end-of-archive marker after an extended header");
        }
        return EndOfArchive(block_offset);
      }
      LC_RETURN_IF_ERROR(VerifyChecksum(block, context));
      const char type = static_cast<char>(block[kTypeflag]);
      switch (type) {
        case 'x':
        case 'g':
        case 'L':
        case 'K': {
          LC_ASSIGN_OR_RETURN(std::string body, ReadExtendedBody(block, type, context, &pending));
          if (type == 'x') {
            std::string err = ParsePaxRecords(body, &pending.pax);
            if (!err.empty()) return Status::Corruption(context + ": PAX header: " + err);
          } else if (type == 'g') {
            LC_RETURN_IF_ERROR(ApplyGlobal(body, context));
          } else {
            LC_ASSIGN_OR_RETURN(std::string name, LongName(body, type, context));
            (type == 'L' ? pending.long_name : pending.long_link) = std::move(name);
          }
          continue;
        }
        default:
          break;
      }
      LC_ASSIGN_OR_RETURN(Entry e, BuildEntry(block, pending, header_offset, block_offset));
      return std::optional<Entry>(std::move(e));
    }
  }

  // After a zero block at `offset`: a second zero block or EOF ends the archive.
  Result<std::optional<Entry>> EndOfArchive(uint64_t offset) {
    Block second;
    const std::string context = "tar: end-of-archive marker at offset " + std::to_string(offset);
    LC_ASSIGN_OR_RETURN(bool got, ReadBlock(&second, context));
    if (got && !IsZeroBlock(second)) {
      return Status::Corruption(context + ": a lone zero block is followed by a non-zero block");
    }
    state_ = State::kEnd;
    return std::optional<Entry>();
  }

  static Status VerifyChecksum(const Block& b, const std::string& context) {
    auto want = ParseNumber(FieldBytes(b, kChecksum));
    if (!want || (static_cast<uint8_t>(b[kChecksum.offset]) & 0x80) != 0) {
      return Status::Corruption(context + ": malformed checksum field");
    }
    int64_t unsigned_sum = 0;
    int64_t signed_sum = 0;
    for (size_t i = 0; i < kBlockSize; ++i) {
      uint8_t c = (i >= kChecksum.offset && i < kChecksum.offset + kChecksum.length) ? ' ' : b[i];
      unsigned_sum += c;
      signed_sum += static_cast<int8_t>(c);
    }
    if (*want != unsigned_sum && *want != signed_sum) {
      return Status::Corruption(context + ": header checksum mismatch (stored " +
                                std::to_string(*want) + ", computed " +
                                std::to_string(unsigned_sum) + ")");
    }
    return Status::Ok();
  }

  // Reads the body of an 'x'/'g'/'L'/'K' block (and its padding).
  Result<std::string> ReadExtendedBody(const Block& block, char type, const std::string& context,
                                       Pending* pending) {
    auto size = ParseNumber(FieldBytes(block, kSize));
    const std::string kind = std::string("'") + type + "' extended header";
    if (!size) return Status::Corruption(context + ": " + kind + ": malformed size field");
    if (*size < 0) return Status::Corruption(context + ": " + kind + ": negative size");
    uint64_t n = static_cast<uint64_t>(*size);
    if (n > kMaxExtendedHeaderSize) {
      return Status::Corruption(context + ": " + kind + " of " + std::to_string(n) +
                                " bytes is larger than the limit of " +
                                std::to_string(kMaxExtendedHeaderSize));
    }
    if (type == 'g') {
      global_bytes_ += n;
      if (global_bytes_ > kMaxExtendedHeadersPerEntry) {
        return Status::Corruption(context + ": PAX global headers exceed " +
                                  std::to_string(kMaxExtendedHeadersPerEntry) + " bytes in all");
      }
    } else {
      pending->bytes += n;
      if (pending->bytes > kMaxExtendedHeadersPerEntry) {
        return Status::Corruption(context + ": extended headers of one entry exceed " +
                                  std::to_string(kMaxExtendedHeadersPerEntry) + " bytes");
      }
    }
    std::string body;
    body.reserve(n);
    LC_RETURN_IF_ERROR(ConsumeStream(n, &body, context, kind + " data"));
    LC_RETURN_IF_ERROR(ConsumeStream(Padding(n), nullptr, context, kind + " padding"));
    return body;
  }

  static uint64_t Padding(uint64_t n) { return (kBlockSize - n % kBlockSize) % kBlockSize; }

  // GNU 'L'/'K': the name followed by NUL padding.
  static Result<std::string> LongName(std::string_view body, char type,
                                      const std::string& context) {
    size_t nul = body.find('\0');
    std::string_view name = body.substr(0, nul);
    if (nul != std::string_view::npos &&
        body.find_first_not_of('\0', nul) != std::string_view::npos) {
      return Status::Corruption(context + ": GNU long " + (type == 'L' ? "name" : "link name") +
                                " '" + Printable(name) + "' contains a NUL byte");
    }
    if (name.empty()) {
      return Status::Corruption(context + ": GNU long " +
                                std::string(type == 'L' ? "name" : "link name") + " is empty");
    }
    return std::string(name);
  }

  // 'g': parsed (malformed records are Corruption) and then ignored, as Go's archive/tar users
  // (containerd, Docker, Moby) ignore them when unpacking: the lazy view must equal what they
  // unpack. Applying them as POSIX says would let a global uid or mtime make the two differ.
  Status ApplyGlobal(std::string_view body, const std::string& context) {
    PaxRecords records;
    std::string err = ParsePaxRecords(body, &records);
    if (!err.empty()) return Status::Corruption(context + ": PAX global header: " + err);
    return Status::Ok();
  }

  Result<Entry> BuildEntry(const Block& b, const Pending& pending, uint64_t header_offset,
                           uint64_t block_offset) {
    Entry e;
    e.header_offset = header_offset;

    HeaderFormat format = HeaderFormat::kV7;
    std::string_view magic = FieldBytes(b, kMagic);
    std::string_view version = FieldBytes(b, kVersion);
    if (magic == std::string_view("ustar\0", 6) && version == "00") {
      format = HeaderFormat::kUstar;
    } else if (magic == "ustar " && version == std::string_view(" \0", 2)) {
      format = HeaderFormat::kGnu;
    }

    e.name = std::string(FieldString(b, kName));
    if (format == HeaderFormat::kUstar) {
      std::string_view prefix = FieldString(b, kPrefix);
      if (!prefix.empty()) e.name = std::string(prefix) + "/" + e.name;
    }
    e.link_name = std::string(FieldString(b, kLinkname));
    const char type = static_cast<char>(b[kTypeflag]);

    // Context for messages: the best name known so far.
    auto context = [&]() {
      std::string name = e.name;
      if (auto it = pending.pax.find("path"); it != pending.pax.end()) name = it->second;
      if (pending.long_name) name = *pending.long_name;
      return "tar entry '" + Printable(name) + "' at offset " + std::to_string(block_offset);
    };

    auto number = [&](Field f, std::string_view what) -> Result<int64_t> {
      auto v = ParseNumber(FieldBytes(b, f));
      if (!v) return Status::Corruption(context() + ": malformed " + std::string(what) + " field");
      return *v;
    };
    LC_ASSIGN_OR_RETURN(int64_t mode, number(kMode, "mode"));
    LC_ASSIGN_OR_RETURN(int64_t uid, number(kUid, "uid"));
    LC_ASSIGN_OR_RETURN(int64_t gid, number(kGid, "gid"));
    LC_ASSIGN_OR_RETURN(int64_t size, number(kSize, "size"));
    LC_ASSIGN_OR_RETURN(int64_t mtime, number(kMtime, "mtime"));
    if (mode < 0) return Status::Corruption(context() + ": negative mode");
    if (uid < 0) return Status::Corruption(context() + ": negative uid");
    if (gid < 0) return Status::Corruption(context() + ": negative gid");
    if (size < 0) return Status::Corruption(context() + ": negative size " + std::to_string(size));
    e.mode = static_cast<uint32_t>(mode & 07777);
    e.uid = static_cast<uint64_t>(uid);
    e.gid = static_cast<uint64_t>(gid);
    e.size = static_cast<uint64_t>(size);
    e.mtime_sec = mtime;
    if (format != HeaderFormat::kV7) {
      e.uname = std::string(FieldString(b, kUname));
      e.gname = std::string(FieldString(b, kGname));
    }
    const bool is_device = type == '3' || type == '4';
    if (is_device && format != HeaderFormat::kV7) {
      LC_ASSIGN_OR_RETURN(int64_t major, number(kDevmajor, "devmajor"));
      LC_ASSIGN_OR_RETURN(int64_t minor, number(kDevminor, "devminor"));
      if (major < 0 || major > UINT32_MAX || minor < 0 || minor > UINT32_MAX) {
        return Status::Corruption(context() + ": device number out of range");
      }
      e.dev_major = static_cast<uint32_t>(major);
      e.dev_minor = static_cast<uint32_t>(minor);
    }

    // PAX: global records, overridden by this entry's 'x' records.
    PaxRecords merged;
    for (const auto& [k, v] : pending.pax) merged[k] = v;
    LC_RETURN_IF_ERROR(ApplyPax(merged, is_device, &e, context));

    // GNU long names override (as GNU tar and Go's archive/tar do).
    if (pending.long_name) e.name = *pending.long_name;
    if (pending.long_link) e.link_name = *pending.long_link;

    switch (type) {
      case '0':
      case '7':
        e.type = EntryType::kRegular;
        break;
      case '\0':  // pre-POSIX regular file; a trailing '/' marks a directory
        e.type = !e.name.empty() && e.name.back() == '/' ? EntryType::kDirectory
                                                          : EntryType::kRegular;
        break;
      case '1':
        e.type = EntryType::kHardlink;
        break;
      case '2':
        e.type = EntryType::kSymlink;
        break;
      case '3':
        e.type = EntryType::kCharDevice;
        break;
      case '4':
        e.type = EntryType::kBlockDevice;
        break;
      case '5':
        e.type = EntryType::kDirectory;
        break;
      case '6':
        e.type = EntryType::kFifo;
        break;
      default:
        return Status::Unsupported(context() + ": unsupported type '" + TypeChar(type) + "' (" +
                                   std::string(UnsupportedTypeDescription(type)) + ")");
    }

    if (e.name.empty()) return Status::Corruption(context() + ": empty name");
    if (e.type == EntryType::kHardlink || e.type == EntryType::kSymlink) {
      if (e.link_name.empty()) {
        return Status::Corruption(context() + ": " + std::string(EntryTypeName(e.type)) +
                                  " with an empty target");
      }
    }
    if (e.type != EntryType::kRegular && e.size != 0) {
      // Readers disagree on whether such data exists (Go's archive/tar skips none, GNU tar skips
      // it): refuse rather than pick one.
      return Status::Corruption(context() + ": " + std::string(EntryTypeName(e.type)) +
                                " has a non-zero size " + std::to_string(e.size));
    }
    if (e.size > kMaxEntrySize) {
      return Status::Corruption(context() + ": size " + std::to_string(e.size) +
                                " is larger than the limit of " + std::to_string(kMaxEntrySize));
    }

    e.data_offset = offset_;
    current_context_ = "tar entry '" + Printable(e.name) + "' at offset " +
                       std::to_string(e.header_offset);
    data_remaining_ = e.size;
    padding_remaining_ = Padding(e.size);
    state_ = State::kData;
    return e;
  }

  template <typename Context>
  static Status ApplyPax(const PaxRecords& records, bool is_device, Entry* e,
                         const Context& context) {
    auto bad = [&](std::string_view key, std::string_view why) {
      return Status::Corruption(context() + ": PAX record '" + Printable(key) + "': " +
                                std::string(why));
    };
    auto decimal = [&](std::string_view key, std::string_view value,
                       uint64_t max) -> Result<uint64_t> {
      auto v = ParseDecimal(value);
      if (!v) return bad(key, "'" + Printable(value, 40) + "' is not a decimal number");
      if (*v > max) return bad(key, std::to_string(*v) + " is out of range");
      return *v;
    };
    auto no_nul = [&](std::string_view key, std::string_view value) -> Status {
      if (value.find('\0') != std::string_view::npos) return bad(key, "value contains a NUL byte");
      return Status::Ok();
    };
    std::map<std::string, std::string> xattrs;
    auto add_xattr = [&](std::string_view key, std::string name, std::string value) -> Status {
      if (name.empty()) return bad(key, "empty xattr name");
      if (name.find('\0') != std::string::npos) return bad(key, "xattr name contains a NUL byte");
      auto [it, inserted] = xattrs.emplace(std::move(name), value);
      if (!inserted && it->second != value) {
        return bad(key, "conflicts with another record for xattr '" + Printable(it->first) + "'");
      }
      return Status::Ok();
    };

    for (const auto& [key, value] : records) {
      if (key == "path") {
        LC_RETURN_IF_ERROR(no_nul(key, value));
        e->name = value;
      } else if (key == "linkpath") {
        LC_RETURN_IF_ERROR(no_nul(key, value));
        e->link_name = value;
      } else if (key == "size") {
        LC_ASSIGN_OR_RETURN(e->size, decimal(key, value, kMaxEntrySize));
      } else if (key == "uid") {
        LC_ASSIGN_OR_RETURN(e->uid, decimal(key, value, UINT64_MAX));
      } else if (key == "gid") {
        LC_ASSIGN_OR_RETURN(e->gid, decimal(key, value, UINT64_MAX));
      } else if (key == "uname") {
        LC_RETURN_IF_ERROR(no_nul(key, value));
        e->uname = value;
      } else if (key == "gname") {
        LC_RETURN_IF_ERROR(no_nul(key, value));
        e->gname = value;
      } else if (key == "mtime") {
        if (!ParsePaxTime(value, &e->mtime_sec, &e->mtime_nsec)) {
          return bad(key, "'" + Printable(value, 40) + "' is not a time");
        }
      } else if (key == "SCHILY.devmajor" || key == "SCHILY.devminor") {
        LC_ASSIGN_OR_RETURN(uint64_t v, decimal(key, value, UINT32_MAX));
        if (is_device) (key == "SCHILY.devmajor" ? e->dev_major : e->dev_minor) =
            static_cast<uint32_t>(v);
      } else if (key.starts_with(kSchilyXattr)) {
        LC_RETURN_IF_ERROR(add_xattr(key, key.substr(kSchilyXattr.size()), value));
      } else if (key.starts_with(kLibarchiveXattr)) {
        auto name = UrlDecode(std::string_view(key).substr(kLibarchiveXattr.size()));
        if (!name) return bad(key, "bad %-escape in the xattr name");
        auto decoded = Base64Decode(value);
        if (!decoded) return bad(key, "value is not base64");
        LC_RETURN_IF_ERROR(add_xattr(key, std::move(*name), std::move(*decoded)));
      } else if (key.starts_with(kGnuSparse)) {
        return Status::Unsupported(context() + ": unsupported PAX record '" + Printable(key) +
                                   "' (GNU sparse file)");
      }
      // Everything else is ignored, as POSIX asks of unknown keywords: atime, ctime, comment,
      // charset, hdrcharset, SCHILY.dev/ino/nlink, LIBARCHIVE.creationtime, ...
    }
    e->xattrs = std::move(xattrs);
    return Status::Ok();
  }

  InputStream& in_;
  Tee tee_;
  std::vector<uint8_t> buf_;
  size_t pos_ = 0;  // buffered, unconsumed bytes are buf_[pos_, end_)
  size_t end_ = 0;
  bool eof_ = false;
  uint64_t offset_ = 0;
  State state_ = State::kHeader;
  uint64_t data_remaining_ = 0;
  uint64_t padding_remaining_ = 0;
  std::string current_context_ = "tar";
  uint64_t global_bytes_ = 0;
  Status error_;
};

TarReader::TarReader(InputStream& in, Tee tee)
    : impl_(std::make_unique<Impl>(in, std::move(tee))) {}
TarReader::~TarReader() = default;
Result<std::optional<Entry>> TarReader::Next() { return impl_->Next(); }
Result<size_t> TarReader::ReadData(MutableByteSpan out) { return impl_->ReadData(out); }
Result<uint64_t> TarReader::DrainToEnd() { return impl_->DrainToEnd(/*zeros_only=*/false); }
Result<uint64_t> TarReader::DrainZerosToEnd() { return impl_->DrainToEnd(/*zeros_only=*/true); }
uint64_t TarReader::offset() const { return impl_->offset(); }

}  // namespace lazycrypt::tar
