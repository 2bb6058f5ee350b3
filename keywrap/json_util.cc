#include "keywrap/json_util.h"

#include <openssl/crypto.h>

#include <cstdio>
#include <set>
#include <vector>

#include "common/json_depth.h"

namespace lazycrypt::keywrap::internal {
Result<nlohmann::json> ParseJson(std::string_view text, std::string_view what) {
  LC_RETURN_IF_ERROR(CheckJsonDepth(text, what));
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    switch (event) {
      case Event::object_start:
        open_objects.emplace_back();
        break;
      case Event::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case Event::key:
        if (!open_objects.empty() && parsed.is_string()) {
          const auto& name = parsed.get_ref<const std::string&>();
          if (!open_objects.back().insert(name).second && duplicate.empty()) duplicate = name;
        }
        break;
      default:
        break;
    }
    return true;
  };
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/false);
  } catch (const std::exception& e) {
    // allow_exceptions=false covers syntax errors; anything else (allocation) lands here.
    return Status::Corruption(std::string(what) + " could not be parsed as JSON");
  }
  if (value.is_discarded()) {
    return Status::Corruption(std::string(what) + " is not valid JSON");
  }
  if (!duplicate.empty()) {
    return Status::Corruption(std::string(what) + " has duplicate member " + Quote(duplicate));
  }
  return value;
}

WipedString::~WipedString() { OPENSSL_cleanse(text.data(), text.size()); }

std::string Quote(std::string_view text) {
  constexpr size_t kMax = 64;
  std::string out = "'";
  for (size_t i = 0; i < text.size() && i < kMax; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (text.size() > kMax) out += "...";
  out += "'";
  return out;
}

}  // namespace lazycrypt::keywrap::internal
