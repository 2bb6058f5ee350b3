#include "tools/status.h"

#include <curl/curl.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "snapshotter/config.h"

namespace lazycrypt::tools {
namespace {

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};

size_t AppendBody(char* data, size_t size, size_t nmemb, void* userdata) {
  auto* body = static_cast<std::string*>(userdata);
  constexpr size_t kMaxBody = 64u << 20;  // a status document is far smaller
  if (body->size() + size * nmemb > kMaxBody) return 0;
  body->append(data, size * nmemb);
  return size * nmemb;
}

// "sha256:0123456789abcdef..." → "sha256:0123456789ab".
std::string ShortDigest(const std::string& digest) {
  const size_t colon = digest.find(':');
  if (colon == std::string::npos) return digest.substr(0, 19);
  return digest.substr(0, std::min(digest.size(), colon + 1 + 12));
}

// Pads every column of `rows` to its widest cell (the last column is not padded).
std::string AlignColumns(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      out += row[i];
      if (i + 1 < row.size()) out += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out += '\n';
  }
  return out;
}

Result<std::string> ResolveAddress(const StatusFlags& flags) {
  if (!flags.address.empty()) return flags.address;
  const std::string path = flags.config.empty() ? kDefaultSnapshotterConfig : flags.config;
  if (flags.config.empty() && !std::filesystem::exists(path)) {
    return Status::InvalidArgument(std::string("no --address given and ") + path +
                                   " does not exist: pass --address HOST:PORT or --config FILE");
  }
  LC_ASSIGN_OR_RETURN(snapshotter::Config config, snapshotter::LoadConfig(path));
  if (config.metrics.address.empty()) {
    return Status::FailedPrecondition(
        "metrics are off in " + path +
        " ([metrics] address is empty): set it, restart lazycrypt-snapshotter, or pass --address");
  }
  return config.metrics.address;
}

}  // namespace

Result<std::string> HttpGetFromDaemon(std::string_view address, std::string_view path) {
  const std::string url = "http://" + std::string(address) + std::string(path);
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) return Status::Internal("curl_easy_init failed");
  std::string body;
  char error[CURL_ERROR_SIZE] = {0};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");  // the daemon is local: never through a proxy
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &AppendBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    return Status::Unavailable("cannot reach lazycrypt-snapshotter's metrics endpoint at " +
                               std::string(address) + ": " +
                               (error[0] != 0 ? error : curl_easy_strerror(rc)) +
                               " (is the daemon running with [metrics] address set?)");
  }
  long http_status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http_status);
  if (http_status == 404) {
    return Status::NotFound(url + ": 404 (is " + std::string(address) +
                            " lazycrypt-snapshotter's metrics endpoint?)");
  }
  if (http_status != 200) {
    return Status::IoError(url + ": HTTP " + std::to_string(http_status));
  }
  return body;
}

Result<std::string> FormatStatusTable(std::string_view status_json) {
  try {
    const nlohmann::json doc = nlohmann::json::parse(status_json);
    const nlohmann::json& layers = doc.at("layers");
    if (!layers.is_array()) return Status::Corruption("status JSON: \"layers\" is not an array");
    if (layers.empty()) return std::string("no remote layers mounted\n");
    std::vector<std::vector<std::string>> rows = {
        {"LAYER", "IMAGE", "MOUNTPOINT", "PRESENT", "FETCHED", "HITS/MISSES", "AUTH FAILURES"}};
    uint64_t fetched_bytes = 0;
    for (const nlohmann::json& l : layers) {
      fetched_bytes += l.at("bytes_fetched").get<uint64_t>();
      char percent[32];
      std::snprintf(percent, sizeof(percent), "%.1f%%", l.at("present_percent").get<double>());
      rows.push_back({
          ShortDigest(l.at("layer").get<std::string>()),
          l.at("image").get<std::string>(),
          l.at("mountpoint").get<std::string>(),
          percent,
          FormatBytes(l.at("bytes_fetched").get<uint64_t>()),
          std::to_string(l.at("cache_hits").get<uint64_t>()) + "/" +
              std::to_string(l.at("cache_misses").get<uint64_t>()),
          std::to_string(l.at("auth_failures").get<uint64_t>()),
      });
    }
    // What `lazycrypt pull` cannot say: the reads of running containers, fetched after the pull.
    return AlignColumns(rows) + std::to_string(layers.size()) + " layer" +
           (layers.size() == 1 ? "" : "s") + " mounted lazily: " + FormatBytes(fetched_bytes) +
           " fetched from the registry since they were mounted\n";
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(std::string("status JSON from the daemon: ") + e.what());
  }
}

Status RunStatus(const StatusFlags& flags, const Output& io) {
  LC_ASSIGN_OR_RETURN(std::string address, ResolveAddress(flags));
  LC_ASSIGN_OR_RETURN(std::string body, HttpGetFromDaemon(address, "/status"));
  if (flags.json) {
    std::fwrite(body.data(), 1, body.size(), io.out);
    return Status::Ok();
  }
  LC_ASSIGN_OR_RETURN(std::string table, FormatStatusTable(body));
  std::fwrite(table.data(), 1, table.size(), io.out);
  return Status::Ok();
}

}  // namespace lazycrypt::tools
