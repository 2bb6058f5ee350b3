// The nesting limit for JSON from untrusted sources (manifests, indexes, configs, registry tokens,
// JWEs, key-provider answers, layer key options). One check shared by every parser, run on the raw
// text before any parser sees it.
//
// Why before parsing: nlohmann::json parses iteratively, but copying, comparing and dumping a
// parsed value recurse once per level, so a document of 100,000 '[' parses and then exhausts the
// stack in the first copy or dump. No real manifest, config or JWE nests deeper than ~8 levels.
#pragma once

#include <string_view>

#include "common/status.h"

namespace lazycrypt {

inline constexpr int kMaxJsonDepth = 64;

// OK when no array or object in `text` is nested more than `max_depth` levels deep (brackets
// inside strings do not count). A linear scan without allocation; it does not check the syntax
// (the parser does). Otherwise Corruption("<what>: JSON nested deeper than <max_depth> levels").
Status CheckJsonDepth(std::string_view text, std::string_view what, int max_depth = kMaxJsonDepth);

}  // namespace lazycrypt
