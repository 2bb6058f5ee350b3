#include "common/json_depth.h"

#include <string>

namespace lazycrypt {

Status CheckJsonDepth(std::string_view text, std::string_view what, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > max_depth) {
          return Status::Corruption(std::string(what) + ": JSON nested deeper than " +
                                    std::to_string(max_depth) + " levels");
        }
        break;
      case ']':
      case '}':
        // Unbalanced closers are the parser's to report; never let them earn extra depth.
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return Status::Ok();
}

}  // namespace lazycrypt
