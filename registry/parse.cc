// Parsers for untrusted registry-side text: docker config.json credentials, WWW-Authenticate
// challenges, multipart/byteranges bodies, containerd hosts.toml.
#include <cctype>
#include <algorithm>
#include <cstdlib>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "common/json_depth.h"
#include "keywrap/base64.h"
#include "registry/registry.h"

namespace lazycrypt::registry {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// "https://host:5000/v1/" → "host:5000"
std::string HostOfConfigKey(std::string_view key) {
  if (auto p = key.find("://"); p != std::string_view::npos) key = key.substr(p + 3);
  if (auto p = key.find('/'); p != std::string_view::npos) key = key.substr(0, p);
  return std::string(key);
}

bool HostMatches(std::string_view key_host, std::string_view host) {
  if (key_host == host) return true;
  auto hub = [](std::string_view h) {
    return h == "docker.io" || h == "index.docker.io" || h == "registry-1.docker.io";
  };
  return hub(key_host) && hub(host);
}

// The (first, last) byte of a multipart/byteranges part from its header block (lines ending in
// CRLF): its Content-Range. `part` numbers it in errors.
Result<std::pair<uint64_t, uint64_t>> PartRange(std::string_view headers, size_t part) {
  std::optional<std::pair<uint64_t, uint64_t>> range;
  size_t lp = 0;
  while (lp < headers.size()) {
    auto eol = headers.find("\r\n", lp);
    if (eol == std::string_view::npos) eol = headers.size();
    std::string_view line = headers.substr(lp, eol - lp);
    lp = eol + 2;
    auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    if (Lower(line.substr(0, colon)) != "content-range") continue;
    std::string v(line.substr(colon + 1));
    unsigned long long a = 0, b = 0;
    char total[32] = {0};
    if (std::sscanf(v.c_str(), " bytes %llu-%llu/%31s", &a, &b, total) < 2 || b < a) {
      return Status::Corruption("multipart/byteranges: part " + std::to_string(part) +
                                ": malformed Content-Range '" + v + "'");
    }
    range = {a, b};
  }
  if (!range) {
    return Status::Corruption("multipart/byteranges: part " + std::to_string(part) +
                              " has no Content-Range");
  }
  return *range;
}

}  // namespace

Result<Credentials> CredentialsFromDockerConfig(std::string_view config_json, std::string_view host) {
  LC_RETURN_IF_ERROR(CheckJsonDepth(config_json, "registry auth file"));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(config_json);
  } catch (const std::exception&) {
    return Status::Corruption("registry auth file is not valid JSON");
  }
  if (!j.is_object()) return Status::Corruption("registry auth file: top level is not an object");
  try {
    if (auto it = j.find("auths"); it != j.end() && it->is_object()) {
      for (const auto& [key, entry] : it->items()) {
        if (!HostMatches(HostOfConfigKey(key), host) || !entry.is_object()) continue;
        Credentials c;
        if (auto a = entry.find("auth"); a != entry.end() && a->is_string() && !a->get<std::string>().empty()) {
          auto decoded = keywrap::Base64Decode(a->get<std::string>());
          if (!decoded.ok()) {
            return Status::Corruption("registry auth file: auths." + key + ".auth is not base64");
          }
          std::string userpass(decoded->begin(), decoded->end());
          auto colon = userpass.find(':');
          if (colon == std::string::npos) {
            return Status::Corruption("registry auth file: auths." + key +
                                      ".auth does not decode to user:password");
          }
          c.username = userpass.substr(0, colon);
          c.password = userpass.substr(colon + 1);
          std::fill(userpass.begin(), userpass.end(), '\0');
          return c;
        }
        if (entry.contains("username") && entry.contains("password")) {
          c.username = entry.at("username").get<std::string>();
          c.password = entry.at("password").get<std::string>();
          return c;
        }
        if (entry.contains("identitytoken")) {
          return Status::Unsupported("registry auth file: auths." + key +
                                     " holds an identity token (OAuth refresh), which is not supported");
        }
      }
    }
    if (auto it = j.find("credHelpers"); it != j.end() && it->is_object()) {
      for (const auto& [key, helper] : it->items()) {
        if (HostMatches(HostOfConfigKey(key), host)) {
          return Status::Unsupported("registry auth file: credentials for " + std::string(host) +
                                     " are in credential helper 'docker-credential-" +
                                     (helper.is_string() ? helper.get<std::string>() : "?") +
                                     "', which lazycrypt does not run; put them in auths instead");
        }
      }
    }
    if (auto it = j.find("credsStore"); it != j.end() && it->is_string()) {
      // Docker writes an empty auths entry per host when a store holds the secret.
      if (auto a = j.find("auths"); a != j.end() && a->is_object()) {
        for (const auto& [key, entry] : a->items()) {
          if (HostMatches(HostOfConfigKey(key), host)) {
            return Status::Unsupported("registry auth file: credentials for " + std::string(host) +
                                       " are in credsStore 'docker-credential-" +
                                       it->get<std::string>() + "', which lazycrypt does not run");
          }
        }
      }
    }
  } catch (const std::exception&) {
    return Status::Corruption("registry auth file: unexpected value types in the entry for " +
                              std::string(host));
  }
  return Status::NotFound("registry auth file has no credentials for " + std::string(host));
}

std::vector<std::filesystem::path> DefaultAuthFiles() {
  std::vector<std::filesystem::path> files;
  if (const char* f = std::getenv("REGISTRY_AUTH_FILE"); f && *f) files.emplace_back(f);
  if (const char* d = std::getenv("DOCKER_CONFIG"); d && *d) {
    files.push_back(std::filesystem::path(d) / "config.json");
  }
  if (const char* h = std::getenv("HOME"); h && *h) {
    files.push_back(std::filesystem::path(h) / ".docker" / "config.json");
  }
  return files;
}

Result<std::string> ParseTokenResponse(std::string_view body) {
  LC_RETURN_IF_ERROR(CheckJsonDepth(body, "token server answer"));
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::Corruption("token server answer is not JSON");
  std::string token;
  if (j.is_object()) {
    if (auto it = j.find("token"); it != j.end() && it->is_string()) token = it->get<std::string>();
    if (auto it = j.find("access_token"); token.empty() && it != j.end() && it->is_string()) {
      token = it->get<std::string>();
    }
  }
  if (token.empty()) return Status::Corruption("token server answer has no token");
  return token;
}

Result<AuthChallenge> ParseAuthChallenge(std::string_view h) {
  AuthChallenge c;
  size_t i = 0;
  auto skip_ws = [&] {
    while (i < h.size() && (h[i] == ' ' || h[i] == '\t')) ++i;
  };
  skip_ws();
  size_t start = i;
  while (i < h.size() && h[i] != ' ' && h[i] != '\t') ++i;
  c.scheme = Lower(h.substr(start, i - start));
  if (c.scheme.empty()) return Status::Corruption("WWW-Authenticate header has no scheme");
  while (true) {
    skip_ws();
    while (i < h.size() && (h[i] == ',' || h[i] == ' ')) ++i;
    if (i >= h.size()) break;
    size_t ks = i;
    while (i < h.size() && h[i] != '=' && h[i] != ',' && h[i] != ' ') ++i;
    std::string key = Lower(h.substr(ks, i - ks));
    skip_ws();
    if (i >= h.size() || h[i] != '=') {
      return Status::Corruption("WWW-Authenticate: parameter '" + key + "' has no value");
    }
    ++i;
    skip_ws();
    std::string value;
    if (i < h.size() && h[i] == '"') {
      ++i;
      bool closed = false;
      while (i < h.size()) {
        char ch = h[i++];
        if (ch == '\\' && i < h.size()) {
          value += h[i++];
        } else if (ch == '"') {
          closed = true;
          break;
        } else {
          value += ch;
        }
      }
      if (!closed) return Status::Corruption("WWW-Authenticate: unterminated quote in '" + key + "'");
    } else {
      size_t vs = i;
      while (i < h.size() && h[i] != ',') ++i;
      value = std::string(h.substr(vs, i - vs));
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.pop_back();
    }
    c.params[key] = value;
  }
  return c;
}

Result<std::vector<RangePart>> ParseMultipartByteranges(ByteSpan body_bytes, std::string_view boundary) {
  std::string_view body = AsStringView(body_bytes);
  if (boundary.empty()) return Status::Corruption("multipart/byteranges: empty boundary");
  const std::string delim = "--" + std::string(boundary);
  std::vector<RangePart> parts;
  size_t pos = body.find(delim);
  if (pos == std::string_view::npos) {
    return Status::Corruption("multipart/byteranges: boundary not found in the body");
  }
  while (true) {
    pos += delim.size();
    if (body.substr(pos, 2) == "--") return parts;  // closing delimiter
    // Transport padding, then CRLF.
    while (pos < body.size() && (body[pos] == ' ' || body[pos] == '\t')) ++pos;
    if (body.substr(pos, 2) != "\r\n") {
      return Status::Corruption("multipart/byteranges: part " + std::to_string(parts.size()) +
                                ": no CRLF after the boundary");
    }
    pos += 2;
    auto hdr_end = body.find("\r\n\r\n", pos);
    if (hdr_end == std::string_view::npos) {
      return Status::Corruption("multipart/byteranges: part " + std::to_string(parts.size()) +
                                ": headers not terminated");
    }
    std::string_view headers = body.substr(pos, hdr_end - pos + 2);
    LC_ASSIGN_OR_RETURN(auto range, PartRange(headers, parts.size()));
    uint64_t len = range.second - range.first + 1;
    pos = hdr_end + 4;
    if (len > body.size() - pos) {
      return Status::Corruption("multipart/byteranges: part " + std::to_string(parts.size()) +
                                " is truncated (" + std::to_string(body.size() - pos) + " of " +
                                std::to_string(len) + " bytes)");
    }
    parts.push_back({range.first, body_bytes.subspan(pos, len)});
    pos += len;
    if (body.substr(pos, 2) != "\r\n" || body.substr(pos + 2, delim.size()) != delim) {
      return Status::Corruption("multipart/byteranges: part " + std::to_string(parts.size() - 1) +
                                " is not followed by the boundary");
    }
    pos += 2;
  }
}

MultipartRangeWriter::MultipartRangeWriter(std::string boundary,
                                           std::span<const RangeInto> targets)
    : delimiter_(boundary.empty() ? "" : "--" + boundary), targets_(targets) {
  next_.reserve(targets.size());
  for (const RangeInto& t : targets) next_.push_back(t.offset);
}

bool MultipartRangeWriter::complete(size_t target) const {
  return next_[target] == targets_[target].offset + targets_[target].out.size();
}

void MultipartRangeWriter::WriteAt(uint64_t offset, ByteSpan bytes) {
  const uint64_t end = offset + bytes.size();
  // The first target that ends after `offset`.
  auto first = std::partition_point(targets_.begin(), targets_.end(), [&](const RangeInto& t) {
    return t.offset + t.out.size() <= offset;
  });
  for (auto t = first; t != targets_.end() && t->offset < end; ++t) {
    uint64_t& next = next_[static_cast<size_t>(t - targets_.begin())];
    const uint64_t from = std::max(offset, next);  // bytes before `next` are there already
    const uint64_t to = std::min(end, t->offset + t->out.size());
    if (from >= to || std::max(offset, t->offset) > next) continue;  // none new, or a gap
    std::copy_n(bytes.data() + (from - offset), to - from, t->out.data() + (from - t->offset));
    next = to;
  }
}

Status MultipartRangeWriter::Feed(ByteSpan data) {
  while (!data.empty()) {
    if (state_ == State::kDone) return Status::Ok();  // the epilogue: ignored
    if (state_ == State::kBody && pending_.empty()) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(part_left_, data.size()));
      WriteAt(part_offset_, data.first(n));
      part_offset_ += n;
      part_left_ -= n;
      data = data.subspan(n);
      if (part_left_ == 0) state_ = State::kAfterBody;
      continue;
    }
    // Framing: kept until it can be parsed (at most one network read's worth).
    pending_.append(reinterpret_cast<const char*>(data.data()), data.size());
    data = {};
    LC_RETURN_IF_ERROR(ParseFraming());
  }
  return Status::Ok();
}

Status MultipartRangeWriter::ParseFraming() {
  constexpr size_t kMaxHeaderBytes = 16 * 1024;
  auto corrupt = [&](const std::string& what) {
    return Status::Corruption("multipart/byteranges: part " + std::to_string(part_) + ": " + what);
  };
  for (;;) {
    switch (state_) {
      case State::kPreamble: {
        if (delimiter_.empty()) return Status::Corruption("multipart/byteranges: empty boundary");
        const size_t at = pending_.find(delimiter_);
        if (at == std::string::npos) {
          // Keep what could be the start of the delimiter; the rest is preamble.
          if (pending_.size() >= delimiter_.size()) {
            pending_.erase(0, pending_.size() - (delimiter_.size() - 1));
          }
          return Status::Ok();
        }
        pending_.erase(0, at + delimiter_.size());
        state_ = State::kAfterBoundary;
        break;
      }
      case State::kAfterBoundary: {
        size_t p = 0;
        while (p < pending_.size() && (pending_[p] == ' ' || pending_[p] == '\t')) ++p;
        if (pending_.size() - p < 2) return Status::Ok();
        if (p == 0 && pending_.compare(0, 2, "--") == 0) {
          state_ = State::kDone;
          pending_.clear();
          return Status::Ok();
        }
        if (pending_.compare(p, 2, "\r\n") != 0) return corrupt("no CRLF after the boundary");
        pending_.erase(0, p + 2);
        state_ = State::kHeaders;
        break;
      }
      case State::kHeaders: {
        const size_t end = pending_.find("\r\n\r\n");
        if (end == std::string::npos) {
          if (pending_.size() > kMaxHeaderBytes) return corrupt("headers longer than 16 KiB");
          return Status::Ok();
        }
        LC_ASSIGN_OR_RETURN(auto range,
                            PartRange(std::string_view(pending_).substr(0, end + 2), part_));
        ++part_;
        part_offset_ = range.first;
        part_left_ = range.second - range.first + 1;
        pending_.erase(0, end + 4);
        state_ = State::kBody;
        break;
      }
      case State::kBody: {
        // Body bytes that came in the same read as the headers.
        const size_t n = static_cast<size_t>(std::min<uint64_t>(part_left_, pending_.size()));
        WriteAt(part_offset_, AsBytes(std::string_view(pending_).substr(0, n)));
        part_offset_ += n;
        part_left_ -= n;
        pending_.erase(0, n);
        if (part_left_ > 0) return Status::Ok();  // the rest streams straight from Feed
        state_ = State::kAfterBody;
        break;
      }
      case State::kAfterBody: {
        const size_t need = 2 + delimiter_.size();
        if (pending_.size() < need) return Status::Ok();
        if (pending_.compare(0, 2, "\r\n") != 0 ||
            pending_.compare(2, delimiter_.size(), delimiter_) != 0) {
          return Status::Corruption("multipart/byteranges: part " + std::to_string(part_ - 1) +
                                    " is not followed by the boundary");
        }
        pending_.erase(0, need);
        state_ = State::kAfterBoundary;
        break;
      }
      case State::kDone:
        pending_.clear();
        return Status::Ok();
    }
  }
}

Status MultipartRangeWriter::Finish() const {
  if (state_ == State::kDone) return Status::Ok();
  if (state_ == State::kPreamble && part_ == 0) {
    return Status::Corruption("multipart/byteranges: boundary not found in the body");
  }
  return Status::Corruption("multipart/byteranges: the body ends inside part " +
                            std::to_string(part_ == 0 ? 0 : part_ - 1) +
                            " (no closing boundary)");
}

Result<std::vector<Endpoint>> ParseHostsToml(std::string_view toml_text, std::string_view host,
                                             const std::string& default_server) {
  toml::table tbl;
  try {
    tbl = toml::parse(toml_text);
  } catch (const toml::parse_error& e) {
    return Status::Corruption("hosts.toml for " + std::string(host) + ": " +
                              std::string(e.description()) + " at line " +
                              std::to_string(e.source().begin.line));
  }
  auto normalize = [&](std::string url) -> Result<std::string> {
    auto scheme = url.find("://");
    if (scheme == std::string::npos) {
      return Status::InvalidArgument("hosts.toml for " + std::string(host) + ": URL '" + url +
                                     "' has no scheme");
    }
    while (!url.empty() && url.back() == '/') url.pop_back();
    if (url.find('/', scheme + 3) == std::string::npos) url += "/v2";
    return url;
  };
  // toml++ keeps keys sorted; containerd tries mirrors in file order, so sort by source line.
  std::vector<std::pair<uint32_t, Endpoint>> mirrors;
  if (auto* hosts = tbl["host"].as_table()) {
    for (auto& [key, node] : *hosts) {
      auto* t = node.as_table();
      if (!t) continue;
      Endpoint ep;
      LC_ASSIGN_OR_RETURN(ep.base_url, normalize(std::string(key.str())));
      if (auto* caps = (*t)["capabilities"].as_array()) {
        ep.pull = ep.resolve = ep.push = false;
        for (auto& c : *caps) {
          auto s = c.value<std::string>();
          if (!s) continue;
          if (*s == "pull") ep.pull = true;
          else if (*s == "resolve") ep.resolve = true;
          else if (*s == "push") ep.push = true;
          else return Status::InvalidArgument("hosts.toml for " + std::string(host) + ": unknown capability '" + *s + "'");
        }
      }
      ep.skip_verify = (*t)["skip_verify"].value_or(false);
      if (auto ca = (*t)["ca"].value<std::string>()) ep.ca_file = *ca;
      if (auto* hdr = (*t)["header"].as_table()) {
        for (auto& [hk, hv] : *hdr) {
          if (auto s = hv.value<std::string>()) ep.headers[std::string(hk.str())] = *s;
        }
      }
      mirrors.emplace_back(key.source().begin.line, std::move(ep));
    }
  }
  std::stable_sort(mirrors.begin(), mirrors.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<Endpoint> out;
  for (auto& m : mirrors) out.push_back(std::move(m.second));
  Endpoint server;
  std::string server_url = tbl["server"].value_or(default_server);
  LC_ASSIGN_OR_RETURN(server.base_url, normalize(server_url));
  server.skip_verify = tbl["skip_verify"].value_or(false);
  if (auto ca = tbl["ca"].value<std::string>()) server.ca_file = *ca;
  if (auto* caps = tbl["capabilities"].as_array()) {
    server.pull = server.resolve = server.push = false;
    for (auto& c : *caps) {
      auto s = c.value<std::string>();
      if (s == "pull") server.pull = true;
      if (s == "resolve") server.resolve = true;
      if (s == "push") server.push = true;
    }
  }
  out.push_back(std::move(server));
  return out;
}

}  // namespace lazycrypt::registry
