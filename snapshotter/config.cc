#include "snapshotter/config.h"

#include <toml++/toml.h>

#include <set>
#include <sstream>

#include "common/file_io.h"

namespace lazycrypt::snapshotter {
namespace {

Status Bad(std::string_view source, const std::string& key, const std::string& what) {
  return Status::InvalidArgument(std::string(source) + ": " + key + ": " + what);
}

std::string Describe(const toml::node& node) {
  std::ostringstream out;
  switch (node.type()) {
    case toml::node_type::string: out << '"' << *node.value<std::string>() << '"'; break;
    case toml::node_type::table: out << "a table"; break;
    case toml::node_type::array: out << "an array"; break;
    default:
      node.visit([&](const auto& n) {
        if constexpr (toml::is_value<decltype(n)>) out << n.get();
      });
  }
  return out.str();
}

Status CheckKeys(std::string_view source, const std::string& prefix, const toml::table& table,
                 const std::set<std::string>& allowed) {
  for (const auto& [k, v] : table) {
    std::string key(k.str());
    if (!allowed.count(key)) {
      return Status::InvalidArgument(std::string(source) + ": unknown key \"" + prefix + key +
                                     "\"");
    }
  }
  return Status::Ok();
}

Result<std::string> GetString(std::string_view source, const std::string& key,
                              const toml::node& node) {
  auto v = node.value<std::string>();
  if (!node.is_string() || !v) return Bad(source, key, "expected a string, got " + Describe(node));
  return *v;
}

Result<uint64_t> GetUnsigned(std::string_view source, const std::string& key,
                             const toml::node& node) {
  if (!node.is_integer()) {
    return Bad(source, key, "expected a non-negative integer, got " + Describe(node));
  }
  int64_t v = *node.value<int64_t>();
  if (v < 0) return Bad(source, key, "expected a non-negative integer, got " + std::to_string(v));
  return static_cast<uint64_t>(v);
}

Result<std::filesystem::path> GetAbsolutePath(std::string_view source, const std::string& key,
                                              const toml::node& node) {
  if (!node.is_string()) return Bad(source, key, "expected a string, got " + Describe(node));
  std::filesystem::path p(node.value_or(std::string()));
  if (!p.is_absolute()) {
    return Bad(source, key, "expected an absolute path, got \"" + p.string() + "\"");
  }
  return p;
}

Result<const toml::table*> GetTable(std::string_view source, const std::string& key,
                                    const toml::node& node) {
  if (!node.is_table()) return Bad(source, key, "expected a table, got " + Describe(node));
  return node.as_table();
}

// "host:port", ":port" or "port" (no host: loopback) with a port in 1..65535, or empty.
Status CheckHostPort(std::string_view source, const std::string& key, const std::string& v) {
  if (v.empty()) return Status::Ok();
  auto colon = v.rfind(':');
  bool ok = colon + 1 < v.size();  // npos + 1 == 0: a bare port
  if (ok) {
    std::string port = colon == std::string::npos ? v : v.substr(colon + 1);
    ok = port.size() <= 5 && port.find_first_not_of("0123456789") == std::string::npos;
    if (ok) {
      int p = std::stoi(port);
      ok = p >= 1 && p <= 65535;
    }
  }
  if (!ok) return Bad(source, key, "expected \"host:port\", got \"" + v + "\"");
  return Status::Ok();
}

Result<Config> FromTable(const toml::table& root, std::string_view src) {
  Config c;
  LC_RETURN_IF_ERROR(CheckKeys(src, "", root,
                               {"address", "root", "log_level", "log_file_names", "socket_mode",
                                "keys", "cache", "fetch", "registry", "metrics", "limits",
                                "ocicrypt", "restart"}));
  if (auto* n = root.get("address")) {
    LC_ASSIGN_OR_RETURN(c.address, GetAbsolutePath(src, "address", *n));
  }
  if (auto* n = root.get("root")) {
    LC_ASSIGN_OR_RETURN(c.root, GetAbsolutePath(src, "root", *n));
  }
  if (auto* n = root.get("log_level")) {
    LC_ASSIGN_OR_RETURN(auto s, GetString(src, "log_level", *n));
    auto level = ParseLogLevel(s);
    if (!level.ok()) return Bad(src, "log_level", level.status().message());
    c.log_level = *level;
  }
  if (auto* n = root.get("log_file_names")) {
    if (!n->is_boolean()) {
      return Bad(src, "log_file_names", "expected true or false, got " + Describe(*n));
    }
    c.log_file_names = *n->value<bool>();
  }
  if (auto* n = root.get("socket_mode")) {
    LC_ASSIGN_OR_RETURN(auto s, GetString(src, "socket_mode", *n));
    if (s.empty() || s.size() > 4 || s.find_first_not_of("01234567") != std::string::npos) {
      return Bad(src, "socket_mode", "expected an octal mode like \"0600\", got \"" + s + "\"");
    }
    c.socket_mode = static_cast<mode_t>(std::stoul(s, nullptr, 8));
    if (c.socket_mode & 0007) {
      return Bad(src, "socket_mode", "\"" + s + "\" gives access to everyone; refusing");
    }
  }
  if (auto* n = root.get("keys")) {
    LC_ASSIGN_OR_RETURN(auto* t, GetTable(src, "keys", *n));
    LC_RETURN_IF_ERROR(CheckKeys(src, "keys.", *t, {"dirs", "provider_config", "passwords"}));
    if (auto* pc = t->get("provider_config")) {
      LC_ASSIGN_OR_RETURN(c.keys.provider_config, GetAbsolutePath(src, "keys.provider_config", *pc));
    }
    if (auto* pw = t->get("passwords")) {
      LC_ASSIGN_OR_RETURN(auto* table, GetTable(src, "keys.passwords", *pw));
      for (const auto& [k, v] : *table) {
        const std::string key_file(k.str());
        const std::string where = "keys.passwords.\"" + key_file + "\"";
        if (!std::filesystem::path(key_file).is_absolute()) {
          return Bad(src, where, "the key file must be an absolute path");
        }
        LC_ASSIGN_OR_RETURN(auto password_file, GetAbsolutePath(src, where, v));
        c.keys.passwords[std::filesystem::path(key_file).lexically_normal()] = std::move(password_file);
      }
    }
    if (auto* d = t->get("dirs")) {
      if (!d->is_array()) return Bad(src, "keys.dirs", "expected an array, got " + Describe(*d));
      c.keys.dirs.clear();
      size_t i = 0;
      for (const auto& e : *d->as_array()) {
        LC_ASSIGN_OR_RETURN(auto p, GetAbsolutePath(src, "keys.dirs[" + std::to_string(i++) + "]", e));
        c.keys.dirs.push_back(std::move(p));
      }
    }
  }
  if (auto* n = root.get("cache")) {
    LC_ASSIGN_OR_RETURN(auto* t, GetTable(src, "cache", *n));
    LC_RETURN_IF_ERROR(CheckKeys(src, "cache.", *t, {"max_bytes", "plaintext_budget"}));
    if (auto* v = t->get("max_bytes")) {
      LC_ASSIGN_OR_RETURN(c.cache.max_bytes, GetUnsigned(src, "cache.max_bytes", *v));
      if (c.cache.max_bytes == 0) return Bad(src, "cache.max_bytes", "must be positive, got 0");
    }
    if (auto* v = t->get("plaintext_budget")) {
      LC_ASSIGN_OR_RETURN(c.cache.plaintext_budget_bytes,
                          GetUnsigned(src, "cache.plaintext_budget", *v));
    }
  }
  if (auto* n = root.get("fetch")) {
    LC_ASSIGN_OR_RETURN(auto* t, GetTable(src, "fetch", *n));
    LC_RETURN_IF_ERROR(CheckKeys(src, "fetch.", *t,
                                       {"prefetch", "background_rate", "verify_delay_ms",
                                        "verify_rate", "verify_deadline_s", "read_retry_s",
                                        "open_ahead", "whole_layer_bytes"}));
    if (auto* v = t->get("prefetch")) {
      if (!v->is_boolean()) {
        return Bad(src, "fetch.prefetch", "expected true or false, got " + Describe(*v));
      }
      c.fetch.prefetch = *v->value<bool>();
    }
    if (auto* v = t->get("whole_layer_bytes")) {
      LC_ASSIGN_OR_RETURN(c.fetch.whole_layer_bytes,
                          GetUnsigned(src, "fetch.whole_layer_bytes", *v));
      if (c.fetch.whole_layer_bytes > (uint64_t{1} << 30)) {
        return Bad(src, "fetch.whole_layer_bytes",
                   "at most 1073741824 (1 GiB), got " +
                       std::to_string(c.fetch.whole_layer_bytes));
      }
    }
    if (auto* v = t->get("background_rate")) {
      LC_ASSIGN_OR_RETURN(c.fetch.background_rate_bytes_per_sec,
                          GetUnsigned(src, "fetch.background_rate", *v));
    }
    if (auto* v = t->get("verify_delay_ms")) {
      LC_ASSIGN_OR_RETURN(uint64_t delay_ms, GetUnsigned(src, "fetch.verify_delay_ms", *v));
      if (delay_ms > 3600 * 1000) {
        return Bad(src, "fetch.verify_delay_ms",
                   "at most 3600000 (one hour), got " + std::to_string(delay_ms));
      }
      c.fetch.verify_delay_ms = static_cast<uint32_t>(delay_ms);
    }
    if (auto* v = t->get("verify_deadline_s")) {
      LC_ASSIGN_OR_RETURN(c.fetch.verify_deadline_s, GetUnsigned(src, "fetch.verify_deadline_s", *v));
    }
    if (auto* v = t->get("verify_rate")) {
      LC_ASSIGN_OR_RETURN(c.fetch.verify_rate_bytes_per_sec,
                          GetUnsigned(src, "fetch.verify_rate", *v));
    }
    if (auto* v = t->get("open_ahead")) {
      LC_ASSIGN_OR_RETURN(c.fetch.open_ahead, GetUnsigned(src, "fetch.open_ahead", *v));
      if (c.fetch.open_ahead > 64) {
        return Bad(src, "fetch.open_ahead", "at most 64, got " + std::to_string(c.fetch.open_ahead));
      }
    }
    if (auto* v = t->get("read_retry_s")) {
      LC_ASSIGN_OR_RETURN(c.fetch.read_retry_s, GetUnsigned(src, "fetch.read_retry_s", *v));
      if (c.fetch.read_retry_s > 3600) {
        return Bad(src, "fetch.read_retry_s",
                   "at most 3600 (one hour), got " + std::to_string(c.fetch.read_retry_s));
      }
    }
  }
  if (auto* n = root.get("registry")) {
    LC_ASSIGN_OR_RETURN(auto* t, GetTable(src, "registry", *n));
    LC_RETURN_IF_ERROR(CheckKeys(src, "registry.", *t, {"hosts_dir"}));
    if (auto* v = t->get("hosts_dir")) {
      LC_ASSIGN_OR_RETURN(c.registry.hosts_dir, GetAbsolutePath(src, "registry.hosts_dir", *v));
    }
  }
  if (auto* n = root.get("limits")) {
    LC_ASSIGN_OR_RETURN(auto* t, GetTable(src, "limits", *n));
    LC_RETURN_IF_ERROR(
        CheckKeys(src, "limits.", *t, {"toc_max_bytes", "toc_max_chunks", "toc_max_entries"}));
    for (auto [key, field] : {std::pair{"toc_max_bytes", &c.limits.toc_max_bytes},
                              std::pair{"toc_max_chunks", &c.limits.toc_max_chunks},
                              std::pair{"toc_max_entries", &c.limits.toc_max_entries}}) {
      if (auto* v = t->get(key)) {
        const std::string where = std::string("limits.") + key;
        LC_ASSIGN_OR_RETURN(*field, GetUnsigned(src, where, *v));
        if (*field == 0) return Bad(src, where, "must be positive, got 0");
      }
    }
  }
  if (auto* n = root.get("ocicrypt")) {
    LC_ASSIGN_OR_RETURN(auto* t, GetTable(src, "ocicrypt", *n));
    LC_RETURN_IF_ERROR(
        CheckKeys(src, "ocicrypt.", *t, {"unpack", "lazy_index", "index_max_bytes"}));
    if (auto* v = t->get("unpack")) {
      if (!v->is_boolean()) {
        return Bad(src, "ocicrypt.unpack", "expected true or false, got " + Describe(*v));
      }
      c.ocicrypt.unpack = *v->value<bool>();
    }
    if (auto* v = t->get("lazy_index")) {
      if (!v->is_boolean()) {
        return Bad(src, "ocicrypt.lazy_index", "expected true or false, got " + Describe(*v));
      }
      c.ocicrypt.lazy_index = *v->value<bool>();
    }
    if (auto* v = t->get("index_max_bytes")) {
      LC_ASSIGN_OR_RETURN(c.ocicrypt.index_max_bytes,
                          GetUnsigned(src, "ocicrypt.index_max_bytes", *v));
      if (c.ocicrypt.index_max_bytes == 0 ||
          c.ocicrypt.index_max_bytes > (uint64_t{256} << 20)) {
        return Bad(src, "ocicrypt.index_max_bytes",
                   "must be 1 .. 268435456 (the format's largest sealed index; this bounds its "
                   "core), got " +
                       std::to_string(c.ocicrypt.index_max_bytes));
      }
    }
  }
  if (auto* n = root.get("restart")) {
    LC_ASSIGN_OR_RETURN(auto* t, GetTable(src, "restart", *n));
    LC_RETURN_IF_ERROR(CheckKeys(src, "restart.", *t,
                                 {"unmount_on_exit", "holder_socket", "restore_retry_s"}));
    if (auto* v = t->get("unmount_on_exit")) {
      if (!v->is_boolean()) {
        return Bad(src, "restart.unmount_on_exit", "expected true or false, got " + Describe(*v));
      }
      c.restart.unmount_on_exit = *v->value<bool>();
    }
    if (auto* v = t->get("holder_socket")) {
      LC_ASSIGN_OR_RETURN(c.restart.holder_socket,
                          GetAbsolutePath(src, "restart.holder_socket", *v));
    }
    if (auto* v = t->get("restore_retry_s")) {
      LC_ASSIGN_OR_RETURN(c.restart.restore_retry_s,
                          GetUnsigned(src, "restart.restore_retry_s", *v));
    }
  }
  if (auto* n = root.get("metrics")) {
    LC_ASSIGN_OR_RETURN(auto* t, GetTable(src, "metrics", *n));
    LC_RETURN_IF_ERROR(CheckKeys(src, "metrics.", *t, {"address"}));
    if (auto* v = t->get("address")) {
      LC_ASSIGN_OR_RETURN(c.metrics.address, GetString(src, "metrics.address", *v));
      LC_RETURN_IF_ERROR(CheckHostPort(src, "metrics.address", c.metrics.address));
    }
  }
  return c;
}

}  // namespace

Result<Config> ParseConfig(std::string_view toml_text, std::string_view source) {
  toml::table table;
  try {
    table = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return Status::InvalidArgument(std::string(source) + ":" + std::to_string(where.line) + ":" +
                                   std::to_string(where.column) + ": " +
                                   std::string(e.description()));
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string(source) + ": " + e.what());
  }
  return FromTable(table, source);
}

Result<Config> LoadConfig(const std::filesystem::path& path) {
  LC_ASSIGN_OR_RETURN(auto bytes, ReadFileBytes(path));
  std::string text(bytes.begin(), bytes.end());
  return ParseConfig(text, path.string());
}

}  // namespace lazycrypt::snapshotter
