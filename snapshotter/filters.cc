#include "snapshotter/filters.h"

#include <cctype>
#include <optional>
#include <regex>

namespace lazycrypt::snapshotter {

struct SnapshotFilter::Selector {
  enum class Op { kPresent, kEqual, kNotEqual, kMatches };
  std::vector<std::string> fieldpath;
  Op op = Op::kPresent;
  std::string value;
  std::shared_ptr<const std::regex> re;
};

namespace {

using Selector = SnapshotFilter::Selector;

class Parser {
 public:
  explicit Parser(const std::string& text) : s_(text) {}

  Result<std::vector<Selector>> ParseFilter() {
    std::vector<Selector> out;
    for (;;) {
      SkipSpace();
      LC_ASSIGN_OR_RETURN(auto sel, ParseSelector());
      out.push_back(std::move(sel));
      SkipSpace();
      if (pos_ == s_.size()) break;
      if (s_[pos_] != ',') return Error("expected ',' or end of filter");
      ++pos_;
    }
    return out;
  }

 private:
  Status Error(const std::string& what) const {
    return Status::InvalidArgument("filter \"" + s_ + "\" at " + std::to_string(pos_) + ": " +
                                   what);
  }
  void SkipSpace() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  static bool IsFieldChar(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  }

  Result<std::string> ParseQuoted(char quote) {
    ++pos_;  // opening quote
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != quote) {
      char c = s_[pos_++];
      if (c == '\\') {
        if (pos_ >= s_.size()) break;
        char e = s_[pos_++];
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case '\\': out += '\\'; break;
          case '"': out += '"'; break;
          case '/': out += '/'; break;
          default:
            // Inside /regex/ keep regex escapes as written.
            if (quote == '/') {
              out += '\\';
              out += e;
            } else {
              return Error(std::string("unknown escape \\") + e);
            }
        }
        continue;
      }
      out += c;
    }
    if (pos_ >= s_.size()) return Error("unterminated quoted string");
    ++pos_;  // closing quote
    return out;
  }

  Result<std::string> ParseField() {
    if (pos_ < s_.size() && (s_[pos_] == '"' || s_[pos_] == '/')) return ParseQuoted(s_[pos_]);
    size_t start = pos_;
    while (pos_ < s_.size() && IsFieldChar(s_[pos_])) ++pos_;
    if (start == pos_) return Error("expected a field name");
    return s_.substr(start, pos_ - start);
  }

  Result<Selector> ParseSelector() {
    Selector sel;
    for (;;) {
      LC_ASSIGN_OR_RETURN(auto field, ParseField());
      sel.fieldpath.push_back(std::move(field));
      if (pos_ < s_.size() && s_[pos_] == '.') {
        ++pos_;
        continue;
      }
      break;
    }
    SkipSpace();
    if (pos_ == s_.size() || s_[pos_] == ',') return sel;
    std::string_view rest(s_.data() + pos_, s_.size() - pos_);
    if (rest.starts_with("==")) {
      sel.op = Selector::Op::kEqual;
    } else if (rest.starts_with("!=")) {
      sel.op = Selector::Op::kNotEqual;
    } else if (rest.starts_with("~=")) {
      sel.op = Selector::Op::kMatches;
    } else {
      return Error("expected an operator (==, !=, ~=)");
    }
    pos_ += 2;
    SkipSpace();
    if (pos_ < s_.size() && (s_[pos_] == '"' || s_[pos_] == '/')) {
      LC_ASSIGN_OR_RETURN(sel.value, ParseQuoted(s_[pos_]));
    } else {
      size_t start = pos_;
      while (pos_ < s_.size() && s_[pos_] != ',' &&
             !std::isspace(static_cast<unsigned char>(s_[pos_])) && s_[pos_] != '"') {
        ++pos_;
      }
      if (start == pos_) return Error("expected a value");
      sel.value = s_.substr(start, pos_ - start);
    }
    if (sel.op == Selector::Op::kMatches) {
      try {
        sel.re = std::make_shared<const std::regex>(sel.value, std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        return Error("bad regular expression \"" + sel.value + "\": " + e.what());
      }
    }
    return sel;
  }

  const std::string& s_;
  size_t pos_ = 0;
};

// containerd's adaptSnapshot: the value of a field path and whether it is present.
std::optional<std::string> FieldOf(const SnapshotInfo& info, const std::vector<std::string>& path) {
  if (path.empty()) return std::nullopt;
  const std::string& f = path[0];
  if (f == "kind") {
    switch (info.kind) {
      case SnapshotKind::kActive:
      case SnapshotKind::kView:
      case SnapshotKind::kCommitted: return std::string(SnapshotKindName(info.kind));
      default: return std::nullopt;
    }
  }
  if (f == "name") return info.name;
  if (f == "parent") return info.parent;
  if (f == "labels") {
    if (path.size() < 2) return std::nullopt;
    std::string key = path[1];
    for (size_t i = 2; i < path.size(); ++i) key += "." + path[i];
    auto it = info.labels.find(key);
    if (it == info.labels.end()) return std::nullopt;
    return it->second;
  }
  return std::nullopt;
}

bool MatchSelector(const Selector& sel, const SnapshotInfo& info) {
  auto v = FieldOf(info, sel.fieldpath);
  switch (sel.op) {
    case Selector::Op::kPresent: return v.has_value();
    case Selector::Op::kEqual: return v.has_value() && *v == sel.value;
    case Selector::Op::kNotEqual: return v.value_or("") != sel.value;
    case Selector::Op::kMatches: return std::regex_search(v.value_or(""), *sel.re);
  }
  return false;
}

}  // namespace

SnapshotFilter::SnapshotFilter() = default;
SnapshotFilter::SnapshotFilter(SnapshotFilter&&) noexcept = default;
SnapshotFilter& SnapshotFilter::operator=(SnapshotFilter&&) noexcept = default;
SnapshotFilter::~SnapshotFilter() = default;

Result<SnapshotFilter> SnapshotFilter::Parse(const std::vector<std::string>& filters) {
  SnapshotFilter out;
  for (const auto& f : filters) {
    bool blank = true;
    for (char c : f) blank = blank && std::isspace(static_cast<unsigned char>(c));
    if (blank) {
      // containerd: an empty filter matches everything, so the whole OR does.
      out.any_of_.clear();
      return out;
    }
    Parser p(f);
    LC_ASSIGN_OR_RETURN(auto sels, p.ParseFilter());
    out.any_of_.push_back(std::move(sels));
  }
  return out;
}

bool SnapshotFilter::Match(const SnapshotInfo& info) const {
  if (any_of_.empty()) return true;
  for (const auto& all : any_of_) {
    bool ok = true;
    for (const auto& sel : all) {
      if (!MatchSelector(sel, info)) {
        ok = false;
        break;
      }
    }
    if (ok) return true;
  }
  return false;
}

}  // namespace lazycrypt::snapshotter
