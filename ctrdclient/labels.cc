#include "ctrdclient/labels.h"

#include <openssl/evp.h>

#include <array>
#include <chrono>
#include <ctime>

#include "crypto/digest.h"
#include "crypto/random.h"

namespace lazycrypt::ctrdclient {

std::vector<std::string> ChainIds(const std::vector<std::string>& diff_ids) {
  std::vector<std::string> out;
  out.reserve(diff_ids.size());
  for (const std::string& diff_id : diff_ids) {
    if (out.empty()) {
      out.push_back(diff_id);
      continue;
    }
    const std::string joined = out.back() + " " + diff_id;
    out.push_back(crypto::OciDigest(crypto::Sha256::Of(AsBytes(joined))));
  }
  return out;
}

std::string StargzLayersLabel(const std::vector<std::string>& layer_digests, size_t from) {
  std::string layers;
  for (size_t i = from; i < layer_digests.size(); ++i) {
    const std::string next = layer_digests[i] + ",";
    // labels.Validate(key, layers+next) fails → stop (later layers are only a prefetch hint).
    if (kLabelStargzLayers.size() + layers.size() + next.size() > kMaxLabelBytes) break;
    layers += next;
  }
  if (!layers.empty()) layers.pop_back();  // the trailing ","
  return layers;
}

bool IsSourceLabel(std::string_view key) {
  return key.starts_with(kCriLabelPrefix) || key.starts_with(kStargzLabelPrefix);
}

std::map<std::string, std::string> SnapshotLabels(const std::string& image_ref,
                                                  const std::vector<image::Descriptor>& layers,
                                                  size_t index, const std::string& chain_id,
                                                  const std::string& manifest_digest) {
  std::map<std::string, std::string> labels;
  for (const auto& [key, value] : layers[index].annotations) {
    if (key.starts_with(kInheritedLabelPrefix) && !IsSourceLabel(key)) labels[key] = value;
  }
  std::vector<std::string> digests;
  digests.reserve(layers.size());
  for (const auto& layer : layers) digests.push_back(layer.digest);
  const std::string layer_list = StargzLayersLabel(digests, index);
  labels[std::string(kLabelStargzReference)] = image_ref;
  labels[std::string(kLabelStargzDigest)] = layers[index].digest;
  labels[std::string(kLabelStargzLayers)] = layer_list;
  labels[std::string(kLabelCriImageRef)] = image_ref;
  labels[std::string(kLabelCriLayerDigest)] = layers[index].digest;
  // The same cut list: the CRI key is shorter than the stargz one, so the list fits both.
  labels[std::string(kLabelCriImageLayers)] = layer_list;
  if (!manifest_digest.empty()) labels[std::string(kLabelCriManifestDigest)] = manifest_digest;
  labels[std::string(kLabelSnapshotRef)] = chain_id;
  return labels;
}

std::map<std::string, std::string> ManifestGcLabels(const image::Manifest& manifest) {
  std::map<std::string, std::string> labels;
  labels[std::string(kLabelGcRefContentConfig)] = manifest.config.digest;
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    labels[std::string(kLabelGcRefContentLayerPrefix) + std::to_string(i)] =
        manifest.layers[i].digest;
  }
  return labels;
}

std::map<std::string, std::string> IndexGcLabels(const std::vector<std::string>& manifest_digests) {
  std::map<std::string, std::string> labels;
  for (size_t i = 0; i < manifest_digests.size(); ++i) {
    labels[std::string(kLabelGcRefContentManifestPrefix) + std::to_string(i)] =
        manifest_digests[i];
  }
  return labels;
}

std::string UnpackKey(std::string_view unique, std::string_view chain_id) {
  std::string key = "extract-";
  key += unique;
  key += ' ';
  key += chain_id;
  return key;
}

std::string NewUniquePart() {
  std::array<uint8_t, 3> random{};
  (void)crypto::RandomBytes(random);  // a failure only makes the key less unique
  std::array<unsigned char, 8> b64{};  // 3 bytes → 4 characters + NUL
  EVP_EncodeBlock(b64.data(), random.data(), static_cast<int>(random.size()));
  std::string encoded(reinterpret_cast<const char*>(b64.data()), 4);
  for (char& c : encoded) {  // base64 → base64url (no padding for 3 bytes)
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const long long nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(now).count() %
                          1000000000LL;
  return std::to_string(nanos) + "-" + encoded;
}

Result<image::Platform> ParsePlatform(std::string_view text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t slash = text.find('/', start);
    parts.emplace_back(text.substr(start, slash == std::string_view::npos ? std::string_view::npos
                                                                          : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (parts.size() < 2 || parts.size() > 3) {
    return Status::InvalidArgument("platform \"" + std::string(text) +
                                   "\": expected os/arch[/variant], e.g. linux/amd64");
  }
  for (const std::string& p : parts) {
    if (p.empty()) {
      return Status::InvalidArgument("platform \"" + std::string(text) + "\": empty component");
    }
  }
  image::Platform platform;
  platform.os = parts[0];
  platform.architecture = parts[1];
  if (parts.size() == 3) platform.variant = parts[2];
  return platform;
}

bool PlatformMatches(const image::Platform& wanted, const image::Platform& candidate) {
  if (wanted.os != candidate.os || wanted.architecture != candidate.architecture) return false;
  return wanted.variant.empty() || wanted.variant == candidate.variant;
}

std::string ExpiryTimestamp(long long seconds_from_now) {
  const std::time_t t = std::time(nullptr) + seconds_from_now;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace lazycrypt::ctrdclient
