#include "tools/commands.h"

#include <sys/stat.h>

#include <charconv>
#include <chrono>
#include <cstdarg>
#include <cstdlib>
#include <mutex>
#include <ctime>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "crypto/digest.h"
#include "format/layout.h"
#include "format/toc.h"
#include "image/convert.h"
#include "image/layer.h"
#include "image/layout.h"
#include "image/recipients.h"
#include "image/verify.h"
#include "keywrap/keyprovider.h"
#include "tools/mount.h"

namespace lazycrypt::tools {

namespace {

using image::Descriptor;

std::string ShortDigest(const std::string& digest) {
  return digest.substr(0, std::min<size_t>(digest.size(), 7 + 12)) + "..";
}

// jwe:PUB.pem and provider:NAME[:params], in the order given.
Result<keywrap::Recipients> LoadRecipients(const std::vector<std::string>& specs) {
  if (specs.empty()) {
    return Status::InvalidArgument(
        "no recipients given (use --recipient jwe:PUB.pem or --recipient provider:NAME)");
  }
  keywrap::Recipients out;
  for (const std::string& spec : specs) {
    if (keywrap::IsKeyProviderSpec(spec)) {
      LC_ASSIGN_OR_RETURN(auto provider, LoadKeyProvider(spec));
      out.AddProvider(std::move(provider));
    } else {
      LC_ASSIGN_OR_RETURN(auto key, LoadRecipient(spec));
      out.AddKey(std::move(key));
    }
  }
  return out;
}

size_t RecipientCount(const keywrap::Recipients& r) {
  return r.public_keys().size() + r.providers().size();
}

Result<keywrap::KeyRing> LoadKeys(const std::vector<std::string>& specs, bool required) {
  return LoadKeyRing(specs, required);
}

Result<format::WriterOptions> WriterOptionsFrom(const std::string& chunk_size, int threads,
                                                int zstd_level) {
  format::WriterOptions options;
  if (!chunk_size.empty()) {
    LC_ASSIGN_OR_RETURN(uint64_t bytes, ParseByteSize(chunk_size));
    if (bytes < format::kMinChunkSizeBytes || bytes > format::kMaxChunkSizeBytes) {
      return Status::InvalidArgument("--chunk-size " + chunk_size + ": must be between " +
                                     FormatBytes(format::kMinChunkSizeBytes) + " and " +
                                     FormatBytes(format::kMaxChunkSizeBytes));
    }
    options.chunk_size_bytes = static_cast<size_t>(bytes);
  }
  if (threads < 0) return Status::InvalidArgument("--threads must be >= 0 (0 = one per core)");
  if (zstd_level < 1 || zstd_level > 19) {
    return Status::InvalidArgument("--zstd-level must be between 1 and 19");
  }
  options.threads = threads;
  options.zstd_level = zstd_level;
  return options;
}

std::string ModeString(const format::Entry& e) {
  char type = '-';
  switch (e.type) {
    case format::EntryType::kDirectory: type = 'd'; break;
    case format::EntryType::kSymlink: type = 'l'; break;
    case format::EntryType::kHardlink: type = 'h'; break;
    case format::EntryType::kCharDevice: type = 'c'; break;
    case format::EntryType::kBlockDevice: type = 'b'; break;
    case format::EntryType::kFifo: type = 'p'; break;
    case format::EntryType::kRegular: type = '-'; break;
  }
  std::string s(10, '-');
  s[0] = type;
  const char* rwx = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) {
    if (e.mode & (0400u >> i)) s[1 + i] = rwx[i];
  }
  if (e.mode & 04000) s[3] = (e.mode & 0100) ? 's' : 'S';
  if (e.mode & 02000) s[6] = (e.mode & 0010) ? 's' : 'S';
  if (e.mode & 01000) s[9] = (e.mode & 0001) ? 't' : 'T';
  return s;
}

std::string TimeString(int64_t sec) {
  std::time_t t = static_cast<std::time_t>(sec);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

Result<std::unique_ptr<image::ImageSource>> OpenSource(const image::ImageReference& ref,
                                                       const TransportFlags& flags);

struct ResolvedLayer {
  std::unique_ptr<image::ImageSource> source;  // what `blob` reads through (image sources only)
  std::unique_ptr<BlobSource> blob;
  Descriptor descriptor;
  std::string name;
};

Result<ResolvedLayer> ResolveLayer(const LayerSourceFlags& flags) {
  ResolvedLayer r;
  if (flags.source.starts_with("oci:") || flags.source.starts_with("docker:")) {
    // Any image transport (oci: layouts, docker:// registries), as the other commands read them.
    LC_ASSIGN_OR_RETURN(auto ref, image::ImageReference::Parse(flags.source));
    LC_ASSIGN_OR_RETURN(r.source, OpenSource(ref, flags.transport));
    LC_ASSIGN_OR_RETURN(image::LoadedRoot root, image::LoadRoot(*r.source));  // names the image
    auto loaded = PickImage(root, flags.platform);
    if (!loaded.ok()) return loaded.status().WithContext(ref.ToString());
    const auto& layers = (*loaded)->manifest.layers;
    size_t index = 0;
    if (flags.layer >= 0) {
      if (static_cast<size_t>(flags.layer) >= layers.size()) {
        return Status::InvalidArgument("--layer " + std::to_string(flags.layer) +
                                       ": the image has " + std::to_string(layers.size()) +
                                       " layers");
      }
      index = static_cast<size_t>(flags.layer);
    } else {
      std::vector<size_t> lazy;
      for (size_t i = 0; i < layers.size(); ++i) {
        if (image::ClassifyLayer(layers[i].media_type) == image::LayerKind::kLazycrypt) {
          lazy.push_back(i);
        }
      }
      if (lazy.size() != 1) {
        return Status::InvalidArgument(flags.source + " has " + std::to_string(lazy.size()) +
                                       " lazycrypt layers: choose one with --layer N");
      }
      index = lazy[0];
    }
    r.descriptor = layers[index];
    r.name = image::LayerName(index, r.descriptor);
    auto blob = r.source->OpenBlob(r.descriptor);
    if (!blob.ok()) return blob.status().WithContext(r.name);
    r.blob = std::move(blob).value();
    return r;
  }
  if (flags.descriptor.empty()) {
    return Status::InvalidArgument(
        "a blob file needs --descriptor FILE (the JSON `layer encrypt` wrote); or name the layer "
        "as oci:DIR[:TAG] with --layer N");
  }
  LC_ASSIGN_OR_RETURN(auto json, ReadFileBytes(flags.descriptor));
  auto descriptor = image::ParseDescriptor(json);
  if (!descriptor.ok()) return descriptor.status().WithContext(flags.descriptor);
  r.descriptor = std::move(descriptor).value();
  r.name = flags.source;
  LC_ASSIGN_OR_RETURN(r.blob, FileBlobSource::Open(flags.source));
  return r;
}

nlohmann::ordered_json DescriptorJson(const Descriptor& d) {
  return nlohmann::ordered_json::parse(image::SerializeDescriptor(d));
}

}  // namespace

// --- Helpers -------------------------------------------------------------------------------------

Result<uint64_t> ParseByteSize(std::string_view text) {
  auto bad = [&] {
    return Status::InvalidArgument("size '" + std::string(text) +
                                   "': expected a number with an optional unit (KiB, MiB, GiB)");
  };
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data()) return bad();
  std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
  uint64_t multiplier = 1;
  if (unit.empty() || unit == "B") {
    multiplier = 1;
  } else if (unit == "K" || unit == "KiB" || unit == "k") {
    multiplier = 1ull << 10;
  } else if (unit == "M" || unit == "MiB") {
    multiplier = 1ull << 20;
  } else if (unit == "G" || unit == "GiB") {
    multiplier = 1ull << 30;
  } else {
    return bad();
  }
  if (value > UINT64_MAX / multiplier) return bad();
  return value * multiplier;
}

Result<std::vector<size_t>> ParseLayerList(std::string_view text) {
  std::vector<size_t> out;
  std::set<size_t> seen;
  size_t start = 0;
  for (;;) {
    size_t comma = text.find(',', start);
    std::string_view item = text.substr(start, comma == std::string_view::npos ? comma : comma - start);
    size_t value = 0;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size()) {
      return Status::InvalidArgument("--layers '" + std::string(text) + "': '" + std::string(item) +
                                     "' is not a layer index (use e.g. 0,2)");
    }
    if (seen.insert(value).second) out.push_back(value);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

Result<keywrap::PublicKey> LoadRecipient(std::string_view spec) {
  constexpr std::string_view kJwe = "jwe:";
  if (spec.starts_with(kJwe)) {
    std::string path(spec.substr(kJwe.size()));
    if (path.empty()) return Status::InvalidArgument("recipient 'jwe:' names no key file");
    return keywrap::PublicKey::Load(path);
  }
  for (std::string_view scheme : {"pgp:", "pkcs7:", "pkcs11:"}) {
    if (spec.starts_with(scheme)) {
      return Status::Unsupported("recipient '" + std::string(spec) + "': scheme '" +
                                 std::string(scheme) + "' is not supported (only jwe:); use jwe:PUB.pem or provider:NAME");
    }
  }
  return Status::InvalidArgument("recipient '" + std::string(spec) +
                                 "' must be jwe:PUBLIC_KEY.pem or provider:NAME[:PARAMS]");
}

Result<keywrap::PrivateKey> LoadKey(std::string_view spec) {
  if (keywrap::IsKeyProviderSpec(spec)) {
    return Status::Unsupported("'" + std::string(spec) + "': a key provider is not a key file here");
  }
  // keywrap names the file (never the password) in its messages.
  return keywrap::PrivateKey::Load(spec);
}

Result<keywrap::KeyProviderConfig> LoadKeyProviderConfigFromEnv(std::string_view spec) {
  auto path = keywrap::KeyProviderConfigPathFromEnv();
  if (!path) {
    return Status::InvalidArgument("'" + std::string(spec) + "': set " +
                                   std::string(keywrap::kKeyProviderConfigEnv) +
                                   " to the key provider config file (as for skopeo)");
  }
  return keywrap::LoadKeyProviderConfig(*path);
}

Result<std::shared_ptr<const keywrap::KeyProvider>> LoadKeyProvider(std::string_view spec) {
  LC_ASSIGN_OR_RETURN(keywrap::KeyProviderSpec parsed, keywrap::ParseKeyProviderSpec(spec));
  LC_ASSIGN_OR_RETURN(keywrap::KeyProviderConfig config, LoadKeyProviderConfigFromEnv(spec));
  return keywrap::MakeKeyProvider(config, parsed);
}

Result<keywrap::KeyRing> LoadKeyRing(const std::vector<std::string>& specs, bool required) {
  if (specs.empty() && required) {
    return Status::InvalidArgument("no keys given (use --key PRIV.pem or --key provider:NAME)");
  }
  keywrap::KeyRing ring;
  for (const std::string& spec : specs) {
    if (keywrap::IsKeyProviderSpec(spec)) {
      LC_ASSIGN_OR_RETURN(auto provider, LoadKeyProvider(spec));
      ring.AddProvider(std::move(provider));
    } else {
      LC_ASSIGN_OR_RETURN(auto key, LoadKey(spec));
      ring.AddKey(std::move(key));
    }
  }
  return ring;
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes) / 1024;
  int unit = 0;
  while (value >= 1024 && unit < 3) {
    value /= 1024;
    ++unit;
  }
  char buf[32];
  if (value == static_cast<double>(static_cast<uint64_t>(value))) {
    std::snprintf(buf, sizeof buf, "%.0f %s", value, units[unit]);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", value, units[unit]);
  }
  return buf;
}

Result<std::vector<std::string>> ParsePrefetchList(std::string_view text) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
    while (!line.empty() && blank(line.front())) line.remove_prefix(1);
    while (!line.empty() && blank(line.back())) line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    auto name = format::NormalizeEntryName(line);
    if (!name.ok()) {
      return Status::InvalidArgument("line " + std::to_string(line_no) + ": " +
                                     name.status().message());
    }
    if (*name == ".") {
      return Status::InvalidArgument("line " + std::to_string(line_no) +
                                     ": names the root directory (list files)");
    }
    if (seen.insert(*name).second) out.push_back(std::move(name).value());
  }
  return out;
}

Result<std::string> ResolveHostsDir(const TransportFlags& flags, const std::string& system_default) {
  if (!flags.hosts_dir_given) {
    std::error_code ec;
    return std::filesystem::is_directory(system_default, ec) ? system_default : std::string();
  }
  if (flags.hosts_dir.empty()) return std::string();
  std::error_code ec;
  if (!std::filesystem::is_directory(flags.hosts_dir, ec)) {
    return Status::InvalidArgument("--hosts-dir " + flags.hosts_dir +
                                   ": not a directory (containerd's hosts.toml layout: "
                                   "DIR/HOST[:PORT]/hosts.toml)");
  }
  return flags.hosts_dir;
}

// --- Progress ----------------------------------------------------------------------------------

Result<image::TransportOptions> TransportOptionsFrom(const TransportFlags& flags) {
  image::TransportOptions options;
  options.plain_http = flags.plain_http;
  options.tls_verify = flags.tls_verify;
  options.authfile = flags.authfile;
  LC_ASSIGN_OR_RETURN(std::string hosts_dir, ResolveHostsDir(flags));
  options.hosts_dir = hosts_dir;
  return options;
}

namespace {

// The live progress line (terminal only) and the per-layer summary lines. Progress callbacks may
// come from worker threads; everything printed goes through one mutex.
class ProgressDisplay {
 public:
  explicit ProgressDisplay(const Output& io) : io_(io) {}
  ~ProgressDisplay() { ClearLine(); }

  image::ProgressCallback Callback() {
    if (!io_.progress || io_.quiet) return nullptr;
    return [this](const std::string& what, uint64_t done, uint64_t total) {
      std::lock_guard lock(mu_);
      auto now = std::chrono::steady_clock::now();
      if (done < total && now - last_ < std::chrono::milliseconds(100)) return;
      last_ = now;
      int percent = total == 0 ? 100 : static_cast<int>(done * 100 / total);
      std::fprintf(io_.err, "\r\033[K  %s  %s / %s  %3d%%", what.c_str(), FormatBytes(done).c_str(),
                   FormatBytes(total).c_str(), percent > 100 ? 100 : percent);
      std::fflush(io_.err);
      line_shown_ = true;
    };
  }

  // A summary line (not in quiet mode).
  void Line(const std::string& text) {
    if (io_.quiet) return;
    std::lock_guard lock(mu_);
    ClearLineLocked();
    std::fprintf(io_.err, "%s\n", text.c_str());
  }

 private:
  void ClearLine() {
    std::lock_guard lock(mu_);
    ClearLineLocked();
  }
  void ClearLineLocked() {
    if (line_shown_) std::fprintf(io_.err, "\r\033[K");
    line_shown_ = false;
  }
  const Output& io_;
  std::mutex mu_;
  bool line_shown_ = false;
  std::chrono::steady_clock::time_point last_{};
};

std::string Printf(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string Printf(const char* format, ...) {
  char buf[1024];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buf, sizeof buf, format, args);
  va_end(args);
  return buf;
}


Result<std::unique_ptr<image::ImageSource>> OpenSource(const image::ImageReference& ref,
                                                       const TransportFlags& flags) {
  LC_ASSIGN_OR_RETURN(auto options, TransportOptionsFrom(flags));
  return image::OpenImageSource(ref, options);
}

Result<std::unique_ptr<image::ImageDestination>> OpenDestination(const image::ImageReference& ref,
                                                                 const TransportFlags& flags) {
  LC_ASSIGN_OR_RETURN(auto options, TransportOptionsFrom(flags));
  return image::OpenImageDestination(ref, options);
}

std::string LayerLabel(const image::LayerReport& l) {
  std::string out = l.platform.empty() ? "" : l.platform + " ";
  return out + "layer " + std::to_string(l.index);
}

}  // namespace

// --- encrypt / decrypt / inspect -----------------------------------------------------------------


// "wrote manifest sha256:... as oci:DIR:TAG": the destination with the tag it resolved to.
template <typename Report>
void ShowWritten(ProgressDisplay& display, const Report& report, image::ImageReference dst) {
  if (!dst.is_registry()) dst.tag = report.tag;
  display.Line(Printf("wrote %s %s as %s", report.platform_count > 0 ? "index" : "manifest",
                      report.manifest.digest.c_str(), dst.ToString().c_str()));
}

std::vector<std::string> PrefetchPlanLines(const image::PrefetchPlan& plan) {
  std::vector<std::string> lines;
  size_t marked = 0;
  for (const image::PrefetchResolution& r : plan.paths) {
    std::string line = "prefetch /" + r.path + ": ";
    if (r.marked) {
      ++marked;
      line += "marked";
      if (r.file != r.path) line += " /" + r.file;
      line += " in layer " + std::to_string(*r.layer);
      if (r.via_symlink || r.via_hardlink) {
        line += std::string(" (via ") + (r.via_symlink ? "symlink" : "") +
                (r.via_symlink && r.via_hardlink ? " and " : "") +
                (r.via_hardlink ? "hard link" : "") + ")";
      }
    } else {
      line += "not marked: ";
      if (r.layer && r.file != r.path) line += "/" + r.file + " is ";
      line += r.reason;
    }
    lines.push_back(std::move(line));
  }
  std::string summary = "prefetch: " + std::to_string(marked) + " of " +
                        std::to_string(plan.paths.size()) + " path" +
                        (plan.paths.size() == 1 ? "" : "s") + " marked";
  if (!plan.unread_layers.empty()) {
    std::string list;
    for (size_t i : plan.unread_layers) list += (list.empty() ? "" : ", ") + std::to_string(i);
    summary += " (encrypted layer" + std::string(plan.unread_layers.size() == 1 ? " " : "s ") +
               list + " not read: what only they hold counts as not found)";
  }
  lines.push_back(std::move(summary));
  return lines;
}

Status RunEncrypt(const EncryptFlags& flags, const Output& io) {
  LC_ASSIGN_OR_RETURN(auto src, image::ImageReference::Parse(flags.src));
  LC_ASSIGN_OR_RETURN(auto dst, image::ImageReference::Parse(flags.dst));
  image::EncryptOptions options;
  LC_ASSIGN_OR_RETURN(options.format, image::ParseEncryptionFormat(flags.format));
  if (!flags.layers.empty()) {
    LC_ASSIGN_OR_RETURN(options.layers, ParseLayerList(flags.layers));
  }
  LC_ASSIGN_OR_RETURN(options.writer, WriterOptionsFrom(flags.chunk_size, flags.threads, flags.zstd_level));
  if (!flags.prefetch_list.empty()) {
    if (options.format == image::EncryptionFormat::kOcicrypt) {
      return Status::InvalidArgument("--prefetch-list needs --format lazycrypt or ocicrypt-estargz "
                                     "(ocicrypt layers have no table of contents to mark files in)");
    }
    LC_ASSIGN_OR_RETURN(auto text, ReadFileBytes(flags.prefetch_list));
    auto paths = ParsePrefetchList(
        std::string_view(reinterpret_cast<const char*>(text.data()), text.size()));
    if (!paths.ok()) return paths.status().WithContext("--prefetch-list " + flags.prefetch_list);
    options.writer.prefetch_paths = std::move(paths).value();
  }
  if (const char* tmp = std::getenv("TMPDIR"); tmp != nullptr && *tmp != '\0') {
    options.estargz.spool_dir = tmp;  // ocicrypt-estargz spools each layer once
  }
  options.estargz.threads = options.writer.threads;
  LC_ASSIGN_OR_RETURN(auto recipients, LoadRecipients(flags.recipients));
  ProgressDisplay display(io);
  display.Line(Printf("encrypting %s -> %s (%s format, %zu recipient%s)", src.ToString().c_str(),
                      dst.ToString().c_str(),
                      std::string(image::EncryptionFormatName(options.format)).c_str(),
                      RecipientCount(recipients), RecipientCount(recipients) == 1 ? "" : "s"));
  if (!options.writer.prefetch_paths.empty()) {
    display.Line(Printf("  resolving %zu path%s from %s in the image (symlinks and hard links "
                        "followed; reads the plain layers once more)",
                        options.writer.prefetch_paths.size(),
                        options.writer.prefetch_paths.size() == 1 ? "" : "s",
                        flags.prefetch_list.c_str()));
  }
  options.on_prefetch_plan = [&](const std::string& platform, const image::PrefetchPlan& plan) {
    for (const std::string& line : PrefetchPlanLines(plan)) {
      display.Line("  " + (platform.empty() ? "" : platform + " ") + line);
    }
  };
  options.on_progress = display.Callback();
  options.on_layer = [&](const image::LayerReport& l) {
    std::string detail;
    if (l.chunk_count > 0) {
      detail = ", " + std::to_string(l.chunk_count) + " chunks, " + std::to_string(l.entry_count) +
               " entries";
    }
    display.Line(Printf("  %s  %-21s  %s %s -> %s %s%s (%.2f s)", LayerLabel(l).c_str(),
                        l.action.c_str(), ShortDigest(l.source.digest).c_str(),
                        FormatBytes(l.source.size).c_str(), ShortDigest(l.result.digest).c_str(),
                        FormatBytes(l.result.size).c_str(), detail.c_str(), l.seconds));
  };
  LC_ASSIGN_OR_RETURN(auto source, OpenSource(src, flags.transport));
  LC_ASSIGN_OR_RETURN(auto destination,
                      OpenDestination(dst, flags.transport));
  LC_ASSIGN_OR_RETURN(auto report, image::EncryptImage(*source, *destination, recipients, options));
  std::fprintf(io.out, "%s\n", report.manifest.digest.c_str());
  ShowWritten(display, report, dst);
  return Status::Ok();
}

Status RunDecrypt(const DecryptFlags& flags, const Output& io) {
  LC_ASSIGN_OR_RETURN(auto src, image::ImageReference::Parse(flags.src));
  LC_ASSIGN_OR_RETURN(auto dst, image::ImageReference::Parse(flags.dst));
  LC_ASSIGN_OR_RETURN(auto keys, LoadKeys(flags.keys, /*required=*/true));
  image::DecryptOptions options;
  LC_ASSIGN_OR_RETURN(options.compression, image::ParseLayerCompression(flags.layer_compression));
  ProgressDisplay display(io);
  display.Line(Printf("decrypting %s -> %s", src.ToString().c_str(), dst.ToString().c_str()));
  options.on_progress = display.Callback();
  options.on_layer = [&](const image::LayerReport& l) {
    std::string with = l.key_name.empty() ? "" : " with " + l.key_name;
    display.Line(Printf("  %s  %s%s  %s %s -> %s %s (%.2f s)", LayerLabel(l).c_str(),
                        l.action.c_str(), with.c_str(), ShortDigest(l.source.digest).c_str(),
                        FormatBytes(l.source.size).c_str(), ShortDigest(l.result.digest).c_str(),
                        FormatBytes(l.result.size).c_str(), l.seconds));
  };
  LC_ASSIGN_OR_RETURN(auto source, OpenSource(src, flags.transport));
  LC_ASSIGN_OR_RETURN(auto destination,
                      OpenDestination(dst, flags.transport));
  LC_ASSIGN_OR_RETURN(auto report, image::DecryptImage(*source, *destination, keys, options));
  std::fprintf(io.out, "%s\n", report.manifest.digest.c_str());
  ShowWritten(display, report, dst);
  return Status::Ok();
}

namespace {

nlohmann::ordered_json ImageInfoJson(const image::ImageInfo& info, const InspectFlags& flags) {
  nlohmann::ordered_json j;
  j["reference"] = info.reference;
  j["manifest"] = DescriptorJson(info.manifest);
  j["manifestMediaType"] = info.manifest_media_type;
  j["config"] = DescriptorJson(info.config);
  j["platform"] = info.os + "/" + info.architecture;
  j["layers"] = nlohmann::ordered_json::array();
  for (const auto& l : info.layers) {
    nlohmann::ordered_json lj;
    lj["index"] = l.index;
    lj["kind"] = std::string(image::LayerKindName(l.kind));
    lj["mediaType"] = l.descriptor.media_type;
    lj["digest"] = l.descriptor.digest;
    lj["size"] = l.descriptor.size;
    lj["diffID"] = l.diff_id;
    if (!l.cipher.empty()) lj["cipher"] = l.cipher;
    if (!l.recipients.empty()) lj["recipients"] = l.recipients;
    if (!l.toc_digest.empty()) lj["tocDigest"] = l.toc_digest;
    if (l.opened) {
      lj["openedWith"] = l.key_name;
      lj["chunkCount"] = l.chunk_count;
      lj["targetChunkSize"] = l.target_chunk_size;
      lj["tarSize"] = l.tar_size;
      lj["fileCount"] = l.file_count;
      lj["prefetchCount"] = l.prefetch_count;
      lj["prefetchFiles"] = l.prefetch_files;  // the marked files (entry names, TOC order)
      lj["blobBytesRead"] = l.blob_bytes_read;
      if (flags.files) {
        nlohmann::ordered_json files = nlohmann::ordered_json::array();
        for (const auto& f : l.files) {
          nlohmann::ordered_json fj;
          fj["name"] = f.name;
          fj["type"] = f.type;
          fj["mode"] = f.mode;
          fj["uid"] = f.uid;
          fj["gid"] = f.gid;
          fj["size"] = f.size;
          if (!f.link_target.empty()) fj["linkTarget"] = f.link_target;
          if (f.prefetch) fj["prefetch"] = true;
          files.push_back(std::move(fj));
        }
        lj["files"] = std::move(files);
      }
    } else if (!l.open_error.empty()) {
      lj["openError"] = l.open_error;
    }
    j["layers"].push_back(std::move(lj));
  }
  return j;
}

void PrintImageInfo(const image::ImageInfo& info, const Output& io) {

  std::fprintf(io.out, "image       %s\n", info.reference.c_str());
  std::fprintf(io.out, "manifest    %s  %s  %s\n", info.manifest.digest.c_str(),
               info.manifest_media_type.c_str(), FormatBytes(info.manifest.size).c_str());
  std::fprintf(io.out, "config      %s  %s/%s\n", info.config.digest.c_str(), info.os.c_str(),
               info.architecture.c_str());
  std::fprintf(io.out, "layers      %zu\n", info.layers.size());
  for (const auto& l : info.layers) {
    std::fprintf(io.out, "  [%zu] %-9s %s  %s\n", l.index,
                 std::string(image::LayerKindName(l.kind)).c_str(), l.descriptor.digest.c_str(),
                 FormatBytes(l.descriptor.size).c_str());
    std::fprintf(io.out, "      media type  %s\n", l.descriptor.media_type.c_str());
    std::fprintf(io.out, "      diff_id     %s\n", l.diff_id.c_str());
    if (!l.cipher.empty()) std::fprintf(io.out, "      cipher      %s\n", l.cipher.c_str());
    if (!l.recipients.empty()) {
      std::string joined;
      for (const auto& r : l.recipients) joined += (joined.empty() ? "" : ", ") + r;
      std::fprintf(io.out, "      recipients  %s\n", joined.c_str());
    }
    if (!l.toc_digest.empty()) std::fprintf(io.out, "      toc digest  %s\n", l.toc_digest.c_str());
    if (l.opened) {
      std::fprintf(io.out,
                   "      opened with %s: %llu chunks (target %s), %llu files (%llu marked for "
                   "prefetch), tar %s\n",
                   l.key_name.c_str(), static_cast<unsigned long long>(l.chunk_count),
                   FormatBytes(l.target_chunk_size).c_str(),
                   static_cast<unsigned long long>(l.file_count),
                   static_cast<unsigned long long>(l.prefetch_count), FormatBytes(l.tar_size).c_str());
      std::fprintf(io.out, "      index read  %s of the %s blob (footer + sealed TOC only)\n",
                   FormatBytes(l.blob_bytes_read).c_str(), FormatBytes(l.descriptor.size).c_str());
      for (const auto& f : l.files) {
        std::fprintf(io.out, "        %-9s %06o %5llu/%-5llu %10llu  %s%s%s%s\n", f.type.c_str(), f.mode,
                     static_cast<unsigned long long>(f.uid), static_cast<unsigned long long>(f.gid),
                     static_cast<unsigned long long>(f.size), f.name.c_str(),
                     f.link_target.empty() ? "" : " -> ", f.link_target.c_str(),
                     f.prefetch ? "  [prefetch]" : "");
      }
    } else if (!l.open_error.empty()) {
      std::fprintf(io.out, "      not opened: %s\n", l.open_error.c_str());
    }
  }
}

}  // namespace

Status RunInspect(const InspectFlags& flags, const Output& io) {
  LC_ASSIGN_OR_RETURN(auto src, image::ImageReference::Parse(flags.src));
  LC_ASSIGN_OR_RETURN(auto keys, LoadKeys(flags.keys, /*required=*/false));
  image::InspectOptions options;
  options.list_files = flags.files;
  LC_ASSIGN_OR_RETURN(auto source, OpenSource(src, flags.transport));
  LC_ASSIGN_OR_RETURN(auto info, image::InspectImage(*source, keys, options));
  if (info.platforms.empty()) {
    if (flags.json) {
      std::fprintf(io.out, "%s\n", ImageInfoJson(info, flags).dump(2).c_str());
    } else {
      PrintImageInfo(info, io);
    }
    return Status::Ok();
  }
  if (flags.json) {
    nlohmann::ordered_json j;
    j["reference"] = info.reference;
    j["index"] = DescriptorJson(info.manifest);
    j["indexMediaType"] = info.manifest_media_type;
    j["platforms"] = nlohmann::ordered_json::array();
    for (const auto& p : info.platforms) j["platforms"].push_back(ImageInfoJson(p, flags));
    std::fprintf(io.out, "%s\n", j.dump(2).c_str());
    return Status::Ok();
  }
  std::fprintf(io.out, "image       %s\n", info.reference.c_str());
  std::fprintf(io.out, "index       %s  %s  %zu platform%s\n", info.manifest.digest.c_str(),
               info.manifest_media_type.c_str(), info.platforms.size(),
               info.platforms.size() == 1 ? "" : "s");
  for (const auto& p : info.platforms) {
    std::fprintf(io.out, "\nplatform    %s/%s\n", p.os.c_str(), p.architecture.c_str());
    PrintImageInfo(p, io);
  }
  return Status::Ok();
}

// --- verify / recipients ---------------------------------------------------------------------------

Status RunVerify(const VerifyFlags& flags, const Output& io) {
  LC_ASSIGN_OR_RETURN(auto src, image::ImageReference::Parse(flags.src));
  LC_ASSIGN_OR_RETURN(auto keys, LoadKeys(flags.keys, /*required=*/true));
  ProgressDisplay display(io);
  display.Line(Printf("verifying %s", src.ToString().c_str()));
  image::VerifyOptions options;
  options.on_progress = display.Callback();
  options.on_layer = [&](const image::VerifyLayerReport& l) {
    std::string what = l.platform.empty() ? "" : l.platform + " ";
    std::string detail;
    if (l.kind == image::LayerKind::kLazycrypt) {
      detail = ": " + std::to_string(l.chunk_count) + " chunks authenticated with " + l.key_name;
    } else if (l.kind == image::LayerKind::kOcicrypt) {
      detail = ": HMAC and digest verified with " + l.key_name;
    } else {
      detail = ": digest verified";
    }
    display.Line(Printf("  %slayer %zu  %-9s %s %s%s", what.c_str(), l.index,
                        std::string(image::LayerKindName(l.kind)).c_str(),
                        ShortDigest(l.descriptor.digest).c_str(),
                        FormatBytes(l.descriptor.size).c_str(), detail.c_str()));
  };
  LC_ASSIGN_OR_RETURN(auto source, OpenSource(src, flags.transport));
  LC_ASSIGN_OR_RETURN(auto report, image::VerifyImage(*source, keys, options));
  size_t encrypted = 0;
  for (const auto& l : report.layers) {
    if (l.kind == image::LayerKind::kLazycrypt || l.kind == image::LayerKind::kOcicrypt) ++encrypted;
  }
  std::fprintf(io.out, "verified %s: %zu layer%s (%zu encrypted)\n", src.ToString().c_str(),
               report.layers.size(), report.layers.size() == 1 ? "" : "s", encrypted);
  return Status::Ok();
}

Status RunRecipients(const RecipientsFlags& flags, const Output& io) {
  LC_ASSIGN_OR_RETURN(auto src, image::ImageReference::Parse(flags.src));
  LC_ASSIGN_OR_RETURN(auto dst, image::ImageReference::Parse(flags.dst));
  LC_ASSIGN_OR_RETURN(auto keys, LoadKeys(flags.keys, /*required=*/true));
  LC_ASSIGN_OR_RETURN(auto loaded, LoadRecipients(flags.recipients));
  if (!loaded.providers().empty()) {
    return Status::Unsupported("recipients " + std::string(flags.remove ? "remove" : "add") +
                               ": provider:NAME recipients are not supported here yet (only "
                               "jwe:PUB.pem); encrypt with --recipient provider:NAME instead");
  }
  const std::vector<keywrap::PublicKey>& recipients = loaded.public_keys();
  ProgressDisplay display(io);
  display.Line(Printf("%s %zu recipient%s: %s -> %s", flags.remove ? "removing" : "adding",
                      recipients.size(), recipients.size() == 1 ? "" : "s",
                      src.ToString().c_str(), dst.ToString().c_str()));
  LC_ASSIGN_OR_RETURN(auto source, OpenSource(src, flags.transport));
  LC_ASSIGN_OR_RETURN(auto destination,
                      OpenDestination(dst, flags.transport));
  image::RecipientsOptions options;
  options.on_layer = [&](const image::LayerReport& l) {
    display.Line(Printf("  %s  %-18s  %s %s", LayerLabel(l).c_str(), l.action.c_str(),
                        ShortDigest(l.source.digest).c_str(), FormatBytes(l.source.size).c_str()));
  };
  LC_ASSIGN_OR_RETURN(
      auto report,
      image::ChangeRecipients(*source, *destination, keys, recipients,
                              flags.remove ? image::RecipientChange::kRemove
                                           : image::RecipientChange::kAdd,
                              options));
  std::fprintf(io.out, "%s\n", report.manifest.digest.c_str());
  ShowWritten(display, report, dst);
  return Status::Ok();
}

// --- layer ... -----------------------------------------------------------------------------------

Status RunLayerEncrypt(const LayerEncryptFlags& flags, const Output& io) {
  LC_ASSIGN_OR_RETURN(auto options, WriterOptionsFrom(flags.chunk_size, flags.threads, flags.zstd_level));
  LC_ASSIGN_OR_RETURN(auto recipients, LoadRecipients(flags.recipients));
  std::unique_ptr<InputStream> in;
  if (flags.input == "-") {
    in = std::make_unique<FdInputStream>(0);
  } else {
    LC_ASSIGN_OR_RETURN(in, FdInputStream::Open(flags.input));
  }
  LC_ASSIGN_OR_RETURN(auto out, AtomicFileOutputStream::Create(flags.output));
  LC_ASSIGN_OR_RETURN(auto result, image::EncryptLazycryptLayer(*in, *out, recipients, options));
  LC_RETURN_IF_ERROR(out->Close());
  std::string descriptor = nlohmann::ordered_json::parse(image::SerializeDescriptor(result.descriptor)).dump(2);
  if (flags.descriptor_out.empty()) {
    std::fprintf(io.out, "%s\n", descriptor.c_str());
  } else {
    LC_RETURN_IF_ERROR(WriteFileAtomically(flags.descriptor_out, AsBytes(descriptor + "\n")));
  }
  std::fprintf(io.err, "wrote %s: %s, %llu chunks, %llu entries, diff_id %s\n", flags.output.c_str(),
               FormatBytes(result.write.blob_size).c_str(),
               static_cast<unsigned long long>(result.write.chunk_count),
               static_cast<unsigned long long>(result.write.entry_count),
               crypto::OciDigest(result.write.diff_id).c_str());
  return Status::Ok();
}

Status RunLayerDecrypt(const LayerDecryptFlags& flags, const Output& io) {
  LC_ASSIGN_OR_RETURN(auto keys, LoadKeys(flags.keys, /*required=*/true));
  LC_ASSIGN_OR_RETURN(ResolvedLayer layer, ResolveLayer(flags.layer));
  LC_ASSIGN_OR_RETURN(auto out, AtomicFileOutputStream::Create(flags.output));
  auto result = image::DecryptLazycryptLayer(
      *layer.blob, layer.descriptor, keys, *out,
      flags.zstd ? format::DecryptOutput::kTarZstd : format::DecryptOutput::kTar);
  if (!result.ok()) return result.status().WithContext(layer.name);
  LC_RETURN_IF_ERROR(out->Close());
  std::fprintf(io.err, "wrote %s (%s), diff_id %s, opened with %s\n", flags.output.c_str(),
               flags.zstd ? "tar+zstd" : "tar", crypto::OciDigest(result->diff_id).c_str(),
               result->key_name.c_str());
  return Status::Ok();
}

Status RunLayerLs(const LayerLsFlags& flags, const Output& io) {
  LC_ASSIGN_OR_RETURN(auto keys, LoadKeys(flags.keys, /*required=*/true));
  LC_ASSIGN_OR_RETURN(ResolvedLayer layer, ResolveLayer(flags.layer));
  auto opened = image::OpenedLayer::Open(std::move(layer.blob), layer.descriptor, keys);
  if (!opened.ok()) return opened.status().WithContext(layer.name);
  const format::LayerIndex& index = (*opened)->index();
  std::vector<bool> prefetch(index.entries().size(), false);
  for (uint32_t i : index.prefetch_entries()) prefetch[i] = true;
  for (size_t i = 0; i < index.entries().size(); ++i) {
    const format::Entry e = index.entries()[i].Materialize();
    const char* mark = prefetch[i] ? "  [prefetch]" : "";
    if (!flags.long_format) {
      std::fprintf(io.out, "%s%s\n", e.name.c_str(), mark);
      continue;
    }
    std::string size = (e.type == format::EntryType::kCharDevice ||
                        e.type == format::EntryType::kBlockDevice)
                           ? std::to_string(e.dev_major) + "," + std::to_string(e.dev_minor)
                           : std::to_string(e.size);
    const char* arrow = e.type == format::EntryType::kSymlink    ? " -> "
                        : e.type == format::EntryType::kHardlink ? " link to "
                                                                 : "";
    std::fprintf(io.out, "%s %llu/%llu %10s %s %s%s%s%s\n", ModeString(e).c_str(),
                 static_cast<unsigned long long>(e.uid), static_cast<unsigned long long>(e.gid),
                 size.c_str(), TimeString(e.mtime_sec).c_str(), e.name.c_str(), arrow,
                 e.link_target.c_str(), mark);
  }
  return Status::Ok();
}

Status RunLayerCat(const LayerCatFlags& flags, const Output& io) {
  LC_ASSIGN_OR_RETURN(auto keys, LoadKeys(flags.keys, /*required=*/true));
  LC_ASSIGN_OR_RETURN(ResolvedLayer layer, ResolveLayer(flags.layer));
  uint64_t blob_size = layer.descriptor.size;
  auto opened = image::OpenedLayer::Open(std::move(layer.blob), layer.descriptor, keys);
  if (!opened.ok()) return opened.status().WithContext(layer.name);
  const image::OpenedLayer& l = **opened;
  uint64_t index_bytes = l.blob_bytes_read();
  auto name = format::NormalizeEntryName(flags.path);
  if (!name.ok()) return Status::InvalidArgument("path '" + flags.path + "': " + name.status().message());
  std::optional<format::EntryView> entry = l.index().Find(*name);
  if (entry && entry->type() == format::EntryType::kHardlink) {
    entry = l.index().Find(entry->link_target());
  }
  if (!entry) return Status::NotFound("'" + *name + "' is not in " + layer.name);
  if (entry->type() == format::EntryType::kSymlink) {
    return Status::InvalidArgument("'" + *name + "' is a symlink to '" +
                                   std::string(entry->link_target()) + "'");
  }
  if (entry->type() != format::EntryType::kRegular) {
    return Status::InvalidArgument("'" + *name + "' is a " +
                                   std::string(format::EntryTypeName(entry->type())) +
                                   ", not a regular file");
  }
  // Read in pieces that end on chunk boundaries, so that no chunk is fetched twice.
  constexpr uint64_t kMaxPieceBytes = 8 << 20;
  const format::LayerIndex& index = l.index();
  std::vector<uint8_t> buf;
  uint64_t offset = 0;
  while (offset < entry->size()) {
    uint64_t chunk = index.ChunkForTarOffset(entry->data_offset() + offset);
    uint64_t piece = 0;
    while (chunk < index.chunks().size()) {
      uint64_t end = std::min(index.chunks()[chunk].tar_end(), entry->data_offset() + entry->size());
      uint64_t candidate = end - (entry->data_offset() + offset);
      if (piece > 0 && candidate > kMaxPieceBytes) break;
      piece = candidate;
      if (end == entry->data_offset() + entry->size()) break;
      ++chunk;
    }
    buf.resize(static_cast<size_t>(piece));
    LC_ASSIGN_OR_RETURN(size_t n, l.reader().ReadFile(*entry, offset, buf));
    if (n == 0) return Status::Corruption("'" + *name + "' ended early");
    if (std::fwrite(buf.data(), 1, n, io.out) != n) return ErrnoStatus("write to stdout");
    offset += n;
  }
  std::fflush(io.out);
  if (flags.stats) {
    std::fprintf(io.err,
                 "read %s of the %s blob in %llu requests: %s for footer + TOC, %s of chunks for a "
                 "%s file\n",
                 FormatBytes(l.blob_bytes_read()).c_str(), FormatBytes(blob_size).c_str(),
                 static_cast<unsigned long long>(l.blob_read_calls()), FormatBytes(index_bytes).c_str(),
                 FormatBytes(l.blob_bytes_read() - index_bytes).c_str(),
                 FormatBytes(entry->size()).c_str());
  }
  return Status::Ok();
}

}  // namespace lazycrypt::tools
