#include "keywrap/base64.h"

#include <array>
#include <span>

namespace lazycrypt::keywrap {
namespace {

constexpr char kStdAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kUrlAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

enum class Variant { kStdPadded, kUrlRaw };

constexpr uint8_t kInvalid = 0xff;

constexpr std::array<uint8_t, 256> MakeTable(const char* alphabet) {
  std::array<uint8_t, 256> table{};
  for (auto& v : table) v = kInvalid;
  for (int i = 0; i < 64; ++i) table[static_cast<uint8_t>(alphabet[i])] = static_cast<uint8_t>(i);
  return table;
}

constexpr std::array<uint8_t, 256> kStdTable = MakeTable(kStdAlphabet);
constexpr std::array<uint8_t, 256> kUrlTable = MakeTable(kUrlAlphabet);

void Append(std::string& out, ByteSpan data, Variant variant) {
  const char* alphabet = variant == Variant::kStdPadded ? kStdAlphabet : kUrlAlphabet;
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t n = (uint32_t{data[i]} << 16) | (uint32_t{data[i + 1]} << 8) | data[i + 2];
    out.push_back(alphabet[(n >> 18) & 63]);
    out.push_back(alphabet[(n >> 12) & 63]);
    out.push_back(alphabet[(n >> 6) & 63]);
    out.push_back(alphabet[n & 63]);
  }
  size_t rest = data.size() - i;
  if (rest == 0) return;
  uint32_t n = uint32_t{data[i]} << 16;
  if (rest == 2) n |= uint32_t{data[i + 1]} << 8;
  out.push_back(alphabet[(n >> 18) & 63]);
  out.push_back(alphabet[(n >> 12) & 63]);
  if (rest == 2) out.push_back(alphabet[(n >> 6) & 63]);
  if (variant == Variant::kStdPadded) out.append(rest == 1 ? "==" : "=");
}

size_t EncodedSize(size_t n, Variant variant) {
  if (variant == Variant::kStdPadded) return (n + 2) / 3 * 4;
  return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

// Validates the shape of `text` and returns the decoded length, or an error.
Result<size_t> DecodedSize(std::string_view text, Variant variant) {
  const char* name = variant == Variant::kStdPadded ? "base64" : "base64url";
  if (variant == Variant::kStdPadded) {
    if (text.size() % 4 != 0) {
      return Status::Corruption(std::string("not ") + name + ": length " +
                                std::to_string(text.size()) + " is not a multiple of 4");
    }
    size_t pad = 0;
    if (!text.empty() && text.back() == '=') ++pad;
    if (text.size() >= 2 && text[text.size() - 2] == '=') ++pad;
    return text.size() / 4 * 3 - pad;
  }
  if (text.size() % 4 == 1) {
    return Status::Corruption(std::string("not ") + name + ": impossible length " +
                              std::to_string(text.size()));
  }
  size_t rem = text.size() % 4;
  return text.size() / 4 * 3 + (rem == 0 ? 0 : rem - 1);
}

// REQUIRES: out.size() == DecodedSize(text).
Status DecodeInto(std::string_view text, Variant variant, std::span<uint8_t> out) {
  const auto& table = variant == Variant::kStdPadded ? kStdTable : kUrlTable;
  const char* name = variant == Variant::kStdPadded ? "base64" : "base64url";
  size_t data_chars = text.size();
  if (variant == Variant::kStdPadded) {
    while (data_chars > 0 && text[data_chars - 1] == '=' && text.size() - data_chars < 2) {
      --data_chars;
    }
  }
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < data_chars; ++i) {
    uint8_t v = table[static_cast<uint8_t>(text[i])];
    if (v == kInvalid) {
      return Status::Corruption(std::string("not ") + name + ": invalid character at offset " +
                                std::to_string(i));
    }
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = static_cast<uint8_t>(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  // A conforming encoder leaves the unused low bits of the last character zero; a decoder that
  // ignored them would accept several spellings of the same bytes.
  if (acc != 0) {
    return Status::Corruption(std::string("not ") + name + ": non-zero trailing bits");
  }
  if (o != out.size()) {
    return Status::Corruption(std::string("not ") + name + ": misplaced padding");
  }
  return Status::Ok();
}

template <typename Buffer>
Result<Buffer> Decode(std::string_view text, Variant variant) {
  LC_ASSIGN_OR_RETURN(size_t size, DecodedSize(text, variant));
  Buffer out(size);
  LC_RETURN_IF_ERROR(DecodeInto(text, variant, std::span<uint8_t>(out.data(), out.size())));
  return out;
}

}  // namespace

void AppendBase64(std::string& out, ByteSpan data) { Append(out, data, Variant::kStdPadded); }
void AppendBase64Url(std::string& out, ByteSpan data) { Append(out, data, Variant::kUrlRaw); }

std::string Base64Encode(ByteSpan data) {
  std::string out;
  out.reserve(EncodedSize(data.size(), Variant::kStdPadded));
  AppendBase64(out, data);
  return out;
}

std::string Base64UrlEncode(ByteSpan data) {
  std::string out;
  out.reserve(EncodedSize(data.size(), Variant::kUrlRaw));
  AppendBase64Url(out, data);
  return out;
}

Result<std::vector<uint8_t>> Base64Decode(std::string_view text) {
  return Decode<std::vector<uint8_t>>(text, Variant::kStdPadded);
}

Result<std::vector<uint8_t>> Base64UrlDecode(std::string_view text) {
  return Decode<std::vector<uint8_t>>(text, Variant::kUrlRaw);
}

Result<crypto::SecureBuffer> Base64DecodeSecret(std::string_view text) {
  return Decode<crypto::SecureBuffer>(text, Variant::kStdPadded);
}

}  // namespace lazycrypt::keywrap
