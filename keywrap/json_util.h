// Internal to keywrap/: strict JSON parsing for untrusted input, and quoting of untrusted strings
// for error messages. Not part of the library's interface.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/status.h"

namespace lazycrypt::keywrap::internal {

// Parses one JSON value. Never throws. Corruption("<what> is not valid JSON ...") for syntax errors
// and trailing bytes, and also for duplicate member names in one object (RFC 7516 §4 and RFC 8259
// §4: a parser that kept the first and one that kept the last would disagree about the same bytes)
// and for nesting deeper than kMaxJsonDepth levels (common/json_depth.h, checked before parsing).
Result<nlohmann::json> ParseJson(std::string_view text, std::string_view what);

// A std::string whose bytes are wiped when it goes away (it holds privopts while a request is
// built or an answer parsed). Reserve the final size first so that no reallocation leaves copies.
struct WipedString {
  std::string text;
  ~WipedString();
};

// `text` in single quotes for an error message: at most 64 characters, non-printable bytes as
// \xNN. For untrusted names (an unknown "alg"), never for secrets.
std::string Quote(std::string_view text);

}  // namespace lazycrypt::keywrap::internal
