// Image references: host[:port]/repo[:tag][@digest], with Docker Hub's defaults.
#include <cctype>

#include "registry/registry.h"

namespace lazycrypt::registry {
namespace {

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// One path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
bool ValidComponent(std::string_view c) {
  if (c.empty() || !IsLowerAlnum(c.front()) || !IsLowerAlnum(c.back())) return false;
  size_t i = 0;
  while (i < c.size()) {
    if (IsLowerAlnum(c[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < c.size() && !IsLowerAlnum(c[j])) ++j;
    std::string_view sep = c.substr(i, j - i);
    bool ok = sep == "." || sep == "_" || sep == "__" ||
              sep.find_first_not_of('-') == std::string_view::npos;
    if (!ok) return false;
    i = j;
  }
  return true;
}

bool ValidTag(std::string_view t) {
  if (t.empty() || t.size() > 128) return false;
  auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  if (!word(t[0])) return false;
  for (char c : t) {
    if (!word(c) && c != '.' && c != '-') return false;
  }
  return true;
}

bool ValidDigest(std::string_view d) {
  auto colon = d.find(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  std::string_view algo = d.substr(0, colon), hex = d.substr(colon + 1);
  for (char c : algo) {
    if (!IsLowerAlnum(c) && c != '+' && c != '.' && c != '_' && c != '-') return false;
  }
  if (hex.empty()) return false;
  for (char c : hex) {
    if (!std::isxdigit(static_cast<unsigned char>(c)) || std::isupper(static_cast<unsigned char>(c)))
      return false;
  }
  if (algo == "sha256" && hex.size() != 64) return false;
  if (algo == "sha512" && hex.size() != 128) return false;
  return true;
}

bool ValidHost(std::string_view h) {
  if (h.empty()) return false;
  for (char c : h) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != ':' &&
        c != '[' && c != ']')
      return false;
  }
  return true;
}

}  // namespace

Result<Reference> Reference::Parse(std::string_view text) {
  const std::string quoted = "image reference '" + std::string(text) + "'";
  if (text.empty()) return Status::InvalidArgument("empty image reference");
  if (text.size() > 4096) return Status::InvalidArgument("image reference is too long");
  Reference ref;
  std::string_view rest = text;
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    ref.digest = std::string(rest.substr(at + 1));
    if (!ValidDigest(ref.digest)) {
      return Status::InvalidArgument(quoted + ": malformed digest '" + ref.digest + "'");
    }
    rest = rest.substr(0, at);
  }
  auto last_slash = rest.rfind('/');
  auto last_colon = rest.rfind(':');
  if (last_colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || last_colon > last_slash)) {
    ref.tag = std::string(rest.substr(last_colon + 1));
    if (!ValidTag(ref.tag)) return Status::InvalidArgument(quoted + ": malformed tag '" + ref.tag + "'");
    rest = rest.substr(0, last_colon);
  }
  std::string_view name = rest;
  auto first_slash = name.find('/');
  std::string_view first = name.substr(0, first_slash);
  if (first_slash != std::string_view::npos &&
      (first.find('.') != std::string_view::npos || first.find(':') != std::string_view::npos ||
       first == "localhost" || first.find_first_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ") != std::string_view::npos)) {
    ref.registry = std::string(first);
    name = name.substr(first_slash + 1);
    if (!ValidHost(ref.registry)) {
      return Status::InvalidArgument(quoted + ": malformed registry host '" + ref.registry + "'");
    }
  } else {
    ref.registry = "docker.io";
  }
  if (ref.registry == "index.docker.io" || ref.registry == "registry-1.docker.io") {
    ref.registry = "docker.io";
  }
  if (name.empty()) return Status::InvalidArgument(quoted + ": no repository name");
  size_t start = 0;
  while (true) {
    auto slash = name.find('/', start);
    std::string_view comp = name.substr(start, slash == std::string_view::npos ? slash : slash - start);
    if (!ValidComponent(comp)) {
      return Status::InvalidArgument(quoted + ": invalid repository component '" + std::string(comp) +
                                     "' (lowercase letters, digits and . _ __ - separators)");
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  ref.repository = std::string(name);
  if (ref.registry == "docker.io" && ref.repository.find('/') == std::string::npos) {
    ref.repository = "library/" + ref.repository;
  }
  // After the "library/" prefix: what ToString() writes must parse again (found by registry_fuzz).
  if (ref.repository.size() > 255) return Status::InvalidArgument(quoted + ": repository name too long");
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

std::string Reference::ToString() const {
  std::string s = registry + "/" + repository;
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

}  // namespace lazycrypt::registry
