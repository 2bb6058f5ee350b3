#include "image/oci.h"

#include <nlohmann/json.hpp>

#include "common/json_depth.h"

namespace lazycrypt::image {

using Json = nlohmann::ordered_json;

namespace {

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Parses untrusted JSON bytes into an object; Corruption naming `what` otherwise.
Result<Json> ParseObject(ByteSpan bytes, std::string_view what) {
  LC_RETURN_IF_ERROR(CheckJsonDepth(AsStringView(bytes), what));
  try {
    Json j = Json::parse(AsStringView(bytes));
    if (!j.is_object()) return Status::Corruption(std::string(what) + ": not a JSON object");
    return j;
  } catch (const Json::exception& e) {
    return Status::Corruption(std::string(what) + ": invalid JSON: " + e.what());
  }
}

std::string Quote(std::string_view s) {
  constexpr size_t kMax = 80;
  std::string out = "'";
  out += s.size() > kMax ? std::string(s.substr(0, kMax)) + "..." : std::string(s);
  out += "'";
  return out;
}

// Helpers reading one member with type checks. `where` is the path used in messages.
Result<std::string> GetString(const Json& obj, std::string_view key, std::string_view where,
                              bool required) {
  auto it = obj.find(std::string(key));
  if (it == obj.end() || it->is_null()) {
    if (required) return Status::Corruption(std::string(where) + ": missing \"" + std::string(key) + "\"");
    return std::string();
  }
  if (!it->is_string()) {
    return Status::Corruption(std::string(where) + "." + std::string(key) + ": not a string");
  }
  return it->get<std::string>();
}

Result<std::map<std::string, std::string>> GetStringMap(const Json& obj, std::string_view key,
                                                        std::string_view where) {
  std::map<std::string, std::string> out;
  auto it = obj.find(std::string(key));
  if (it == obj.end() || it->is_null()) return out;
  std::string path = std::string(where) + "." + std::string(key);
  if (!it->is_object()) return Status::Corruption(path + ": not an object");
  for (const auto& [k, v] : it->items()) {
    if (!v.is_string()) return Status::Corruption(path + "[" + Quote(k) + "]: not a string");
    out.emplace(k, v.get<std::string>());
  }
  return out;
}

Result<std::vector<std::string>> GetStringArray(const Json& obj, std::string_view key,
                                                std::string_view where) {
  std::vector<std::string> out;
  auto it = obj.find(std::string(key));
  if (it == obj.end() || it->is_null()) return out;
  std::string path = std::string(where) + "." + std::string(key);
  if (!it->is_array()) return Status::Corruption(path + ": not an array");
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& v = (*it)[i];
    if (!v.is_string()) {
      return Status::Corruption(path + "[" + std::to_string(i) + "]: not a string");
    }
    out.push_back(v.get<std::string>());
  }
  return out;
}

Result<int> GetSchemaVersion(const Json& obj, std::string_view where) {
  auto it = obj.find("schemaVersion");
  if (it == obj.end()) return Status::Corruption(std::string(where) + ": missing \"schemaVersion\"");
  if (!it->is_number_integer() || it->get<int64_t>() != 2) {
    return Status::Unsupported(std::string(where) + ": schemaVersion " + it->dump() +
                               " is not supported (only 2)");
  }
  return 2;
}

// Members of `obj` whose names are not in `known`, as a compact JSON object.
std::string ExtraMembers(const Json& obj, std::initializer_list<std::string_view> known) {
  Json extra = Json::object();
  for (const auto& [k, v] : obj.items()) {
    bool is_known = false;
    for (std::string_view n : known) is_known = is_known || k == n;
    if (!is_known) extra[k] = v;
  }
  return extra.dump();
}

// Appends the members of the serialized object `extra_json` to `out` (skipping names `out` has).
void AppendExtra(Json& out, const std::string& extra_json) {
  if (extra_json.empty() || extra_json == "{}") return;
  Json extra = Json::parse(extra_json, nullptr, /*allow_exceptions=*/false);
  if (!extra.is_object()) return;  // only ever produced by ExtraMembers; defensive
  for (const auto& [k, v] : extra.items()) {
    if (!out.contains(k)) out[k] = v;
  }
}

Result<Platform> ParsePlatform(const Json& j, std::string_view where) {
  if (!j.is_object()) return Status::Corruption(std::string(where) + ": not an object");
  Platform p;
  LC_ASSIGN_OR_RETURN(p.architecture, GetString(j, "architecture", where, true));
  LC_ASSIGN_OR_RETURN(p.os, GetString(j, "os", where, true));
  LC_ASSIGN_OR_RETURN(p.os_version, GetString(j, "os.version", where, false));
  LC_ASSIGN_OR_RETURN(p.os_features, GetStringArray(j, "os.features", where));
  LC_ASSIGN_OR_RETURN(p.variant, GetString(j, "variant", where, false));
  return p;
}

Json PlatformToJson(const Platform& p) {
  Json j = Json::object();
  j["architecture"] = p.architecture;
  j["os"] = p.os;
  if (!p.os_version.empty()) j["os.version"] = p.os_version;
  if (!p.os_features.empty()) j["os.features"] = p.os_features;
  if (!p.variant.empty()) j["variant"] = p.variant;
  return j;
}

Result<Descriptor> DescriptorFromJson(const Json& j, std::string_view where) {
  if (!j.is_object()) return Status::Corruption(std::string(where) + ": not an object");
  Descriptor d;
  LC_ASSIGN_OR_RETURN(d.media_type, GetString(j, "mediaType", where, true));
  if (d.media_type.empty()) return Status::Corruption(std::string(where) + ".mediaType: empty");
  LC_ASSIGN_OR_RETURN(d.digest, GetString(j, "digest", where, true));
  LC_RETURN_IF_ERROR(ValidateDigest(d.digest, std::string(where) + ".digest"));
  auto size = j.find("size");
  if (size == j.end()) return Status::Corruption(std::string(where) + ": missing \"size\"");
  if (!size->is_number_integer() || size->get<int64_t>() < 0) {
    // is_number_unsigned values above INT64_MAX are absurd for a blob; reject them too.
    return Status::Corruption(std::string(where) + ".size: " + size->dump() +
                              " is not a non-negative integer");
  }
  d.size = size->get<uint64_t>();
  LC_ASSIGN_OR_RETURN(d.annotations, GetStringMap(j, "annotations", where));
  LC_ASSIGN_OR_RETURN(d.urls, GetStringArray(j, "urls", where));
  auto platform = j.find("platform");
  if (platform != j.end() && !platform->is_null()) {
    LC_ASSIGN_OR_RETURN(d.platform, ParsePlatform(*platform, std::string(where) + ".platform"));
  }
  d.extra_json =
      ExtraMembers(j, {"mediaType", "digest", "size", "annotations", "urls", "platform"});
  return d;
}

Json DescriptorToJson(const Descriptor& d) {
  Json j = Json::object();
  j["mediaType"] = d.media_type;
  j["digest"] = d.digest;
  j["size"] = d.size;
  if (!d.urls.empty()) j["urls"] = d.urls;
  if (!d.annotations.empty()) j["annotations"] = d.annotations;
  if (d.platform) j["platform"] = PlatformToJson(*d.platform);
  AppendExtra(j, d.extra_json);
  return j;
}

Result<std::vector<Descriptor>> GetDescriptorArray(const Json& obj, std::string_view key,
                                                   std::string_view where) {
  auto it = obj.find(std::string(key));
  std::string path = std::string(where) + "." + std::string(key);
  if (it == obj.end() || it->is_null()) {
    return Status::Corruption(std::string(where) + ": missing \"" + std::string(key) + "\"");
  }
  if (!it->is_array()) return Status::Corruption(path + ": not an array");
  std::vector<Descriptor> out;
  out.reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    LC_ASSIGN_OR_RETURN(auto d,
                        DescriptorFromJson((*it)[i], path + "[" + std::to_string(i) + "]"));
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace

std::string_view LayerKindName(LayerKind kind) {
  switch (kind) {
    case LayerKind::kPlain: return "plain";
    case LayerKind::kOcicrypt: return "ocicrypt";
    case LayerKind::kLazycrypt: return "lazycrypt";
    case LayerKind::kUnknown: return "unknown";
  }
  return "unknown";
}

LayerKind ClassifyLayer(std::string_view media_type) {
  if (media_type == kMediaTypeLazycryptLayer) return LayerKind::kLazycrypt;
  for (std::string_view plain :
       {kMediaTypeOciLayerTar, kMediaTypeOciLayerTarGzip, kMediaTypeOciLayerTarZstd,
        kMediaTypeOciNondistributableTar, kMediaTypeOciNondistributableTarGzip,
        kMediaTypeOciNondistributableTarZstd, kMediaTypeDockerLayerTarGzip,
        kMediaTypeDockerForeignLayerTarGzip}) {
    if (media_type == plain) return LayerKind::kPlain;
    if (EndsWith(media_type, kEncryptedSuffix) &&
        media_type.substr(0, media_type.size() - kEncryptedSuffix.size()) == plain) {
      return LayerKind::kOcicrypt;
    }
  }
  return LayerKind::kUnknown;
}

std::string StripEncryptedSuffix(std::string_view media_type) {
  if (ClassifyLayer(media_type) == LayerKind::kOcicrypt) {
    return std::string(media_type.substr(0, media_type.size() - kEncryptedSuffix.size()));
  }
  return std::string(media_type);
}

std::string OciLayerMediaType(std::string_view media_type) {
  if (media_type == kMediaTypeDockerLayerTarGzip) return std::string(kMediaTypeOciLayerTarGzip);
  if (media_type == kMediaTypeDockerForeignLayerTarGzip) {
    return std::string(kMediaTypeOciNondistributableTarGzip);
  }
  return std::string(media_type);
}

std::map<std::string, std::string> WithoutEncryptionAnnotations(
    const std::map<std::string, std::string>& annotations) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : annotations) {
    if (k.starts_with(kAnnotationEncPrefix) || k == kAnnotationLazycryptTocDigest ||
        k == kAnnotationLazycryptTocSize) {
      continue;
    }
    out.emplace(k, v);
  }
  return out;
}

std::string Descriptor::Annotation(std::string_view name) const {
  auto it = annotations.find(std::string(name));
  return it == annotations.end() ? std::string() : it->second;
}

Status ValidateDigest(std::string_view digest, std::string_view what) {
  size_t colon = digest.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return Status::Corruption(std::string(what) + ": " + Quote(digest) + " is not a digest");
  }
  std::string_view algorithm = digest.substr(0, colon);
  if (algorithm != "sha256") {
    return Status::Unsupported(std::string(what) + ": digest algorithm " + Quote(algorithm) +
                               " is not supported (only sha256)");
  }
  std::string_view hex = digest.substr(colon + 1);
  bool ok = hex.size() == 64;
  for (char c : hex) ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  if (!ok) {
    return Status::Corruption(std::string(what) + ": " + Quote(digest) +
                              " is not a sha256 digest (64 lowercase hex digits)");
  }
  return Status::Ok();
}

Result<Descriptor> ParseDescriptor(ByteSpan json) {
  LC_ASSIGN_OR_RETURN(Json j, ParseObject(json, "descriptor"));
  try {
    return DescriptorFromJson(j, "descriptor");
  } catch (const Json::exception& e) {
    return Status::Corruption(std::string("descriptor: ") + e.what());
  }
}

std::string SerializeDescriptor(const Descriptor& d) { return DescriptorToJson(d).dump(); }

bool IsManifestMediaType(std::string_view media_type) {
  return media_type == kMediaTypeOciManifest || media_type == kMediaTypeDockerManifest;
}

bool IsIndexMediaType(std::string_view media_type) {
  return media_type == kMediaTypeOciIndex || media_type == kMediaTypeDockerManifestList;
}

Result<Manifest> ParseManifest(ByteSpan json) {
  LC_ASSIGN_OR_RETURN(Json j, ParseObject(json, "manifest"));
  try {
    Manifest m;
    LC_ASSIGN_OR_RETURN(m.schema_version, GetSchemaVersion(j, "manifest"));
    LC_ASSIGN_OR_RETURN(m.media_type, GetString(j, "mediaType", "manifest", false));
    if (!m.media_type.empty() && !IsManifestMediaType(m.media_type)) {
      return Status::Unsupported("manifest: mediaType " + Quote(m.media_type) +
                                 " is not an image manifest");
    }
    if (j.contains("manifests")) {
      return Status::Corruption("manifest: has \"manifests\": this is an index, not a manifest");
    }
    auto config = j.find("config");
    if (config == j.end()) return Status::Corruption("manifest: missing \"config\"");
    LC_ASSIGN_OR_RETURN(m.config, DescriptorFromJson(*config, "manifest.config"));
    LC_ASSIGN_OR_RETURN(m.layers, GetDescriptorArray(j, "layers", "manifest"));
    LC_ASSIGN_OR_RETURN(m.annotations, GetStringMap(j, "annotations", "manifest"));
    m.extra_json =
        ExtraMembers(j, {"schemaVersion", "mediaType", "config", "layers", "annotations"});
    return m;
  } catch (const Json::exception& e) {
    return Status::Corruption(std::string("manifest: ") + e.what());
  }
}

std::string SerializeManifest(const Manifest& m) {
  Json j = Json::object();
  j["schemaVersion"] = m.schema_version;
  if (!m.media_type.empty()) j["mediaType"] = m.media_type;
  j["config"] = DescriptorToJson(m.config);
  Json layers = Json::array();
  for (const Descriptor& d : m.layers) layers.push_back(DescriptorToJson(d));
  j["layers"] = std::move(layers);
  if (!m.annotations.empty()) j["annotations"] = m.annotations;
  AppendExtra(j, m.extra_json);
  return j.dump();
}

Result<Index> ParseIndex(ByteSpan json) {
  LC_ASSIGN_OR_RETURN(Json j, ParseObject(json, "index"));
  try {
    Index index;
    LC_ASSIGN_OR_RETURN(index.schema_version, GetSchemaVersion(j, "index"));
    LC_ASSIGN_OR_RETURN(index.media_type, GetString(j, "mediaType", "index", false));
    if (!index.media_type.empty() && !IsIndexMediaType(index.media_type)) {
      return Status::Unsupported("index: mediaType " + Quote(index.media_type) +
                                 " is not an image index");
    }
    LC_ASSIGN_OR_RETURN(index.manifests, GetDescriptorArray(j, "manifests", "index"));
    LC_ASSIGN_OR_RETURN(index.annotations, GetStringMap(j, "annotations", "index"));
    index.extra_json = ExtraMembers(j, {"schemaVersion", "mediaType", "manifests", "annotations"});
    return index;
  } catch (const Json::exception& e) {
    return Status::Corruption(std::string("index: ") + e.what());
  }
}

std::string SerializeIndex(const Index& index) {
  Json j = Json::object();
  j["schemaVersion"] = index.schema_version;
  if (!index.media_type.empty()) j["mediaType"] = index.media_type;
  Json manifests = Json::array();
  for (const Descriptor& d : index.manifests) manifests.push_back(DescriptorToJson(d));
  j["manifests"] = std::move(manifests);
  if (!index.annotations.empty()) j["annotations"] = index.annotations;
  AppendExtra(j, index.extra_json);
  return j.dump();
}

Result<ImageConfig> ParseImageConfig(ByteSpan json) {
  LC_ASSIGN_OR_RETURN(Json j, ParseObject(json, "image config"));
  try {
    ImageConfig c;
    LC_ASSIGN_OR_RETURN(c.architecture, GetString(j, "architecture", "image config", false));
    LC_ASSIGN_OR_RETURN(c.os, GetString(j, "os", "image config", false));
    auto rootfs = j.find("rootfs");
    if (rootfs == j.end() || !rootfs->is_object()) {
      return Status::Corruption("image config: missing \"rootfs\" object");
    }
    LC_ASSIGN_OR_RETURN(std::string type, GetString(*rootfs, "type", "image config.rootfs", true));
    if (type != "layers") {
      return Status::Unsupported("image config: rootfs.type " + Quote(type) +
                                 " is not supported (only \"layers\")");
    }
    LC_ASSIGN_OR_RETURN(c.diff_ids, GetStringArray(*rootfs, "diff_ids", "image config.rootfs"));
    for (size_t i = 0; i < c.diff_ids.size(); ++i) {
      LC_RETURN_IF_ERROR(
          ValidateDigest(c.diff_ids[i], "image config: rootfs.diff_ids[" + std::to_string(i) + "]"));
    }
    return c;
  } catch (const Json::exception& e) {
    return Status::Corruption(std::string("image config: ") + e.what());
  }
}

}  // namespace lazycrypt::image
