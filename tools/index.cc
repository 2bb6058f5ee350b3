#include "tools/index.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "estargz/toc.h"
#include "image/convert.h"
#include "image/layer.h"
#include "image/prefetch_plan.h"
#include "image/referrers.h"
#include "image/transport.h"
#include "registry/registry.h"
#include "zindex/zindex.h"

namespace lazycrypt::tools {
namespace {

using Json = nlohmann::ordered_json;
using image::Descriptor;

// What happened to one layer.
struct LayerOutcome {
  size_t index = 0;
  Descriptor descriptor;
  bool indexed = false;
  std::string skipped;  // why not indexed (when !indexed)
  uint64_t tar_bytes = 0;
  uint64_t sealed_bytes = 0;
  uint64_t core_bytes = 0;  // the header and sealed core: what a node fetches at mount
  size_t spans = 0;
  int64_t elapsed_ms = 0;
  std::string key_name;
  size_t prefetch_marks = 0;  // files marked for prefetch in its index
};

struct ImageOutcome {
  Descriptor manifest;
  std::string platform;  // "linux/amd64" for an index entry, "" for a single-manifest image
  std::vector<LayerOutcome> layers;
  std::vector<std::string> existing;  // index artifacts already there (not replaced)
  std::string pushed;                 // the artifact manifest's digest when one was pushed
  std::optional<image::PrefetchPlan> prefetch;  // with --prefetch-list, when a layer is indexed
};

// An index made in this run, shared by platforms that reuse a layer: built (unsealed) first, then
// sealed once with the union of the marks every platform's view resolves into the layer.
struct BuiltIndex {
  std::optional<zindex::UnsealedIndex> unsealed;
  image::OcicryptLayerCipher cipher;  // for the self-check of the sealed index
  std::vector<std::string> marks;     // entry names to mark, each once
  std::set<std::string> marked;
  std::vector<uint8_t> sealed;
  LayerOutcome outcome;
};

std::string PlatformOf(const Descriptor& d) {
  if (!d.platform) return "";
  std::string out = d.platform->os + "/" + d.platform->architecture;
  if (!d.platform->variant.empty()) out += "/" + d.platform->variant;
  return out;
}

// Why a layer is not one `lazycrypt index` makes an index for; "" when it is.
std::string SkipReason(const Descriptor& d) {
  switch (image::ClassifyLayer(d.media_type)) {
    case image::LayerKind::kPlain:
      return "not encrypted";
    case image::LayerKind::kLazycrypt:
      return "lazycrypt format (served lazily without an index)";
    case image::LayerKind::kUnknown:
      return "not an image layer (" + d.media_type + ")";
    case image::LayerKind::kOcicrypt:
      break;
  }
  if (d.annotations.count(std::string(estargz::kAnnotationTocDigest)) != 0) {
    return "ocicrypt-estargz (served lazily by its pinned TOC without an index)";
  }
  const std::string plain = image::OciLayerMediaType(image::StripEncryptedSuffix(d.media_type));
  if (plain != image::kMediaTypeOciLayerTarGzip && plain != image::kMediaTypeOciNondistributableTarGzip) {
    return "not gzip (" + plain + "): the index needs a gzip stream";
  }
  return "";
}

// Reads and checks layer i and builds its index, unsealed (the marks are chosen later).
Status BuildLayer(image::ImageSource& source, size_t i, const Descriptor& d,
                  const keywrap::KeyRing& keys, const zindex::BuildOptions& options,
                  BuiltIndex& out) {
  const std::string name = image::LayerName(i, d);
  out.outcome.index = i;
  out.outcome.descriptor = d;
  auto started = std::chrono::steady_clock::now();
  auto cipher = image::UnwrapOcicryptLayer(d, keys);
  if (!cipher.ok()) {
    return cipher.status().WithContext(name + ": cannot unwrap its key with the --key given");
  }
  auto blob = source.OpenBlobForScan(d);
  if (!blob.ok()) return blob.status().WithContext(name);
  BlobInputStream stream(**blob);
  auto unsealed = zindex::BuildIndex(stream, d, *cipher, options);
  if (!unsealed.ok()) {
    // AuthFailed is the end-of-stream check (the tar reader may be the one that saw it and word it
    // as a parse error); say what it means.
    const bool auth = unsealed.status().code() == StatusCode::kAuthFailed;
    return unsealed.status().WithContext(
        name + (auth ? ": refused, nothing pushed: the layer does not authenticate (HMAC, blob or "
                       "plaintext digest mismatch)"
                     : ": refused, nothing pushed"));
  }
  out.unsealed.emplace(std::move(unsealed).value());
  out.cipher = std::move(cipher).value();
  out.outcome.key_name = out.cipher.key_name;
  out.outcome.elapsed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now() - started)
                               .count();
  return Status::Ok();
}

// Seals a built index with its marks, and opens what was made as the snapshotter will: a
// self-check, and the span count and marks to report.
Status SealLayer(BuiltIndex& b) {
  const Descriptor& d = b.outcome.descriptor;
  const std::string name = image::LayerName(b.outcome.index, d);
  auto started = std::chrono::steady_clock::now();
  auto sealed = std::move(*b.unsealed).Seal(b.marks);
  b.unsealed.reset();
  if (!sealed.ok()) return sealed.status().WithContext(name + ": refused, nothing pushed");
  auto opened = zindex::OpenedIndex::Open(*sealed, sealed->size(), d, b.cipher);
  if (!opened.ok()) return opened.status().WithContext(name + ": the index made does not open");
  LayerOutcome& out = b.outcome;
  out.indexed = true;
  out.tar_bytes = (*opened)->tar_size();
  out.sealed_bytes = sealed->size();
  out.core_bytes = (*opened)->sealed_core_bytes();
  out.spans = (*opened)->span_count();
  out.prefetch_marks = (*opened)->layer_index()->prefetch_entries().size();
  out.elapsed_ms += std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - started)
                        .count();
  b.sealed = std::move(sealed).value();
  return Status::Ok();
}

tar::EntryType TarType(format::EntryType type) {
  switch (type) {
    case format::EntryType::kRegular: return tar::EntryType::kRegular;
    case format::EntryType::kDirectory: return tar::EntryType::kDirectory;
    case format::EntryType::kSymlink: return tar::EntryType::kSymlink;
    case format::EntryType::kHardlink: return tar::EntryType::kHardlink;
    case format::EntryType::kCharDevice: return tar::EntryType::kCharDevice;
    case format::EntryType::kBlockDevice: return tar::EntryType::kBlockDevice;
    case format::EntryType::kFifo: return tar::EntryType::kFifo;
  }
  return tar::EntryType::kRegular;
}

// An indexed layer's part of the merged view: its entries as the index lists them.
image::LayerTree TreeOfIndex(const zindex::UnsealedIndex& index) {
  image::LayerTree tree;
  for (const format::Entry& e : index.entries()) {
    image::AddLayerTreeEntry(tree, e.name, TarType(e.type), e.link_target);
  }
  return tree;
}

Json PrefetchJson(const image::PrefetchPlan& plan) {
  Json j;
  j["paths"] = Json::array();
  size_t marked = 0;
  for (const image::PrefetchResolution& r : plan.paths) {
    Json p;
    p["path"] = "/" + r.path;
    p["marked"] = r.marked;
    if (r.layer) {
      p["layer"] = *r.layer;
      p["file"] = "/" + r.file;
    }
    if (r.via_symlink) p["viaSymlink"] = true;
    if (r.via_hardlink) p["viaHardlink"] = true;
    if (!r.marked) p["reason"] = r.reason;
    marked += r.marked ? 1 : 0;
    j["paths"].push_back(std::move(p));
  }
  j["marked"] = marked;
  j["unreadLayers"] = plan.unread_layers;
  return j;
}

Json LayerJson(const LayerOutcome& l) {
  Json j;
  j["index"] = l.index;
  j["digest"] = l.descriptor.digest;
  j["mediaType"] = l.descriptor.media_type;
  j["size"] = l.descriptor.size;
  if (l.indexed) {
    j["action"] = "indexed";
    j["tarSize"] = l.tar_bytes;
    j["sealedIndexSize"] = l.sealed_bytes;
    j["sealedCoreSize"] = l.core_bytes;
    j["spans"] = l.spans;
    j["elapsedMs"] = l.elapsed_ms;
    j["key"] = l.key_name;
    j["prefetchCount"] = l.prefetch_marks;
  } else {
    j["action"] = "skipped";
    j["reason"] = l.skipped;
  }
  return j;
}

std::string ImageLabel(const ImageOutcome& img) {
  return img.platform.empty() ? img.manifest.digest : img.platform + " " + img.manifest.digest;
}

void PrintImage(const ImageOutcome& img, const Output& io) {
  for (const LayerOutcome& l : img.layers) {
    std::string name = image::LayerName(l.index, l.descriptor);
    if (l.indexed) {
      std::fprintf(io.out,
                   "  %s  indexed: %s encrypted, %s tar, %zu spans, sealed index %s (core %s), "
                   "%s%lld ms\n",
                   name.c_str(), FormatBytes(l.descriptor.size).c_str(),
                   FormatBytes(l.tar_bytes).c_str(), l.spans, FormatBytes(l.sealed_bytes).c_str(),
                   FormatBytes(l.core_bytes).c_str(),
                   l.prefetch_marks == 0
                       ? ""
                       : (std::to_string(l.prefetch_marks) + " file" +
                          (l.prefetch_marks == 1 ? "" : "s") + " marked for prefetch, ")
                             .c_str(),
                   static_cast<long long>(l.elapsed_ms));
    } else {
      std::fprintf(io.out, "  %s  skipped: %s\n", name.c_str(), l.skipped.c_str());
    }
  }
}

}  // namespace

Status RunIndex(const IndexFlags& flags, const Output& io) {
  LC_ASSIGN_OR_RETURN(auto ref, image::ImageReference::Parse(flags.image));
  if (!ref.is_registry()) {
    return Status::Unsupported(
        ref.ToString() +
        ": lazycrypt index pushes the index as an OCI referrer of the image in a registry, where "
        "the snapshotter looks for it; copy the image to a registry (docker://HOST/REPO:TAG) first");
  }
  std::vector<std::string> prefetch_paths;
  if (!flags.prefetch_list.empty()) {
    LC_ASSIGN_OR_RETURN(auto text, ReadFileBytes(flags.prefetch_list));
    auto paths = ParsePrefetchList(
        std::string_view(reinterpret_cast<const char*>(text.data()), text.size()));
    if (!paths.ok()) return paths.status().WithContext("--prefetch-list " + flags.prefetch_list);
    prefetch_paths = std::move(paths).value();
  }
  LC_ASSIGN_OR_RETURN(auto keys, LoadKeyRing(flags.keys, /*required=*/true));
  zindex::BuildOptions build;
  if (!flags.span_size.empty()) {
    auto span = ParseByteSize(flags.span_size);
    if (!span.ok()) return span.status().WithContext("--span-size");
    // Checked here, before any key or byte is fetched (BuildSealedIndex would refuse it per layer).
    constexpr uint64_t kMinSpan = uint64_t{64} << 10, kMaxSpan = zindex::kMaxSpanBytes / 2;
    if (*span < kMinSpan || *span > kMaxSpan) {
      return Status::InvalidArgument("--span-size " + flags.span_size + ": must be between " +
                                     FormatBytes(kMinSpan) + " and " + FormatBytes(kMaxSpan));
    }
    build.span_bytes = *span;
  }
  LC_ASSIGN_OR_RETURN(auto transport, TransportOptionsFrom(flags.transport));
  LC_ASSIGN_OR_RETURN(auto source, image::OpenImageSource(ref, transport));
  LC_ASSIGN_OR_RETURN(auto repo, registry::Reference::Parse(ref.docker));
  LC_ASSIGN_OR_RETURN(auto client, registry::Client::Create(image::RegistryClientOptions(transport)));
  LC_ASSIGN_OR_RETURN(image::LoadedRoot root, image::LoadRoot(*source));

  // Every image manifest of the root: one artifact each (a platform's layers are indexed for
  // that platform's manifest, the digest containerd resolves and the snapshotter looks up).
  std::vector<ImageOutcome> images;
  for (size_t k = 0; k < root.images.size(); ++k) {
    ImageOutcome img;
    img.manifest = root.images[k].manifest_descriptor;
    if (root.index) img.platform = PlatformOf(root.index->manifests[root.image_positions[k]]);
    images.push_back(std::move(img));
  }
  if (images.empty()) return Status::NotFound(ref.ToString() + ": no image manifest to index");

  // First what exists, so that a second run changes nothing. Only a listed artifact that is
  // really there with this subject and type counts: a stale or bogus entry in the referrers tag
  // (anyone who can push may write one) must not stop a layer from ever being indexed.
  for (ImageOutcome& img : images) {
    auto existing = image::ListReferrers(*client, repo, img.manifest.digest, zindex::kArtifactType);
    if (!existing.ok()) {
      return existing.status().WithContext("looking up indexes of " + ImageLabel(img));
    }
    for (const Descriptor& d : *existing) {
      auto artifact = image::FetchReferrerManifest(*client, repo, d, img.manifest.digest,
                                                   zindex::kArtifactType);
      if (artifact.ok()) {
        img.existing.push_back(d.digest);
      } else if (!io.quiet) {
        std::fprintf(io.err, "ignoring listed index %s of %s: %s\n", d.digest.c_str(),
                     ImageLabel(img).c_str(), artifact.status().message().c_str());
      }
    }
  }

  // Then every layer to index, read and checked; nothing is pushed before all passed.
  std::map<std::string, BuiltIndex> built;  // by layer digest
  std::vector<std::set<size_t>> to_index(images.size());  // per image: positions of its layers
  for (size_t k = 0; k < images.size(); ++k) {
    ImageOutcome& img = images[k];
    const auto& layers = root.images[k].manifest.layers;
    const bool skip_image = !img.existing.empty() && !flags.force;
    for (size_t i = 0; i < layers.size(); ++i) {
      const Descriptor& d = layers[i];
      LayerOutcome l;
      l.index = i;
      l.descriptor = d;
      l.skipped = SkipReason(d);
      if (l.skipped.empty() && skip_image) l.skipped = "an index already exists for this image";
      img.layers.push_back(l);  // an indexed one's outcome is filled in once it is sealed
      if (!l.skipped.empty()) continue;
      to_index[k].insert(i);
      if (built.count(d.digest) != 0) continue;
      if (!io.quiet) {
        std::fprintf(io.err, "indexing %s%s...\n",
                     img.platform.empty() ? "" : (img.platform + " ").c_str(),
                     image::LayerName(i, d).c_str());
      }
      LC_RETURN_IF_ERROR(BuildLayer(*source, i, d, keys, build, built[d.digest]));
    }
  }

  // With --prefetch-list: each image's paths resolved in its merged view (the indexed layers seen
  // through their index's entries, plain layers read once more, other layers not at all), and
  // what resolves into an indexed layer marked in its index.
  if (!prefetch_paths.empty()) {
    // Warnings, printed even with --quiet: the list the user gave had no effect (as `encrypt
    // --prefetch-list`, the command still succeeds; the indexes are valid without marks).
    const bool nothing_indexed =
        std::all_of(to_index.begin(), to_index.end(), [](const auto& s) { return s.empty(); });
    if (nothing_indexed) {
      const bool any_existing = std::any_of(images.begin(), images.end(), [](const auto& img) {
        return !img.existing.empty();
      });
      std::fprintf(io.err, "%s\n",
                   any_existing && !flags.force
                       ? "--prefetch-list: nothing indexed, nothing marked; use --force to "
                         "replace the existing index"
                       : "--prefetch-list: nothing indexed, nothing marked (no ocicrypt AES-CTR "
                         "gzip layer to index)");
    }
    for (size_t k = 0; k < images.size(); ++k) {
      if (to_index[k].empty()) continue;
      const auto& layers = root.images[k].manifest.layers;
      std::vector<image::LayerTree> trees(layers.size());
      for (size_t i = 0; i < layers.size(); ++i) {
        const Descriptor& d = layers[i];
        if (to_index[k].count(i) != 0) {
          trees[i] = TreeOfIndex(*built.at(d.digest).unsealed);
        } else if (image::ClassifyLayer(d.media_type) == image::LayerKind::kPlain) {
          auto tree = image::ScanLayerTree(*source, d);
          if (!tree.ok()) {
            return tree.status().WithContext(image::LayerName(i, d) +
                                             ": resolving the prefetch list");
          }
          trees[i] = std::move(tree).value();
        } else {
          trees[i].readable = false;
        }
      }
      image::PrefetchPlan plan = image::PlanPrefetch(trees, prefetch_paths, to_index[k]);
      // The planner words a file of a layer outside to_index as "not written as a lazycrypt
      // layer" (encrypt's case); here such a layer is one this command does not index.
      size_t marked = 0;
      for (image::PrefetchResolution& r : plan.paths) {
        marked += r.marked ? 1 : 0;
        if (!r.marked && r.layer && to_index[k].count(*r.layer) == 0) {
          r.reason = "in layer " + std::to_string(*r.layer) +
                     ", which is not an ocicrypt layer this command indexes";
        }
      }
      if (marked == 0) {
        std::fprintf(io.err,
                     "--prefetch-list: none of the %zu path%s is a file of an indexed layer%s; "
                     "the index has no marks\n",
                     prefetch_paths.size(), prefetch_paths.size() == 1 ? "" : "s",
                     images.size() == 1 ? "" : (" of " + ImageLabel(images[k])).c_str());
      }
      for (size_t i : to_index[k]) {
        BuiltIndex& b = built.at(layers[i].digest);
        for (const std::string& name : plan.layer_marks[i]) {
          if (b.marked.insert(name).second) b.marks.push_back(name);
        }
      }
      images[k].prefetch = std::move(plan);
    }
  }

  for (auto& [digest, b] : built) LC_RETURN_IF_ERROR(SealLayer(b));
  std::vector<std::vector<image::ArtifactBlob>> artifacts(images.size());
  for (size_t k = 0; k < images.size(); ++k) {
    for (size_t i : to_index[k]) {
      const Descriptor& d = root.images[k].manifest.layers[i];
      const BuiltIndex& b = built.at(d.digest);
      LayerOutcome done = b.outcome;
      done.index = i;
      images[k].layers[i] = done;
      image::ArtifactBlob blob;
      blob.media_type = std::string(zindex::kSealedIndexMediaType);
      blob.bytes = b.sealed;
      blob.annotations[std::string(zindex::kAnnotationLayerDigest)] = d.digest;
      // So that a node fetches header and core in one ranged request (FORMAT.md §11).
      blob.annotations[std::string(zindex::kAnnotationCoreBytes)] =
          std::to_string(b.outcome.core_bytes);
      artifacts[k].push_back(std::move(blob));
    }
  }

  for (size_t k = 0; k < images.size(); ++k) {
    if (artifacts[k].empty()) continue;
    auto pushed = image::PushReferrer(*client, repo, images[k].manifest, zindex::kArtifactType,
                                      artifacts[k]);
    if (!pushed.ok()) return pushed.status().WithContext("pushing the index of " + ImageLabel(images[k]));
    images[k].pushed = std::move(pushed).value();
  }

  if (flags.json) {
    Json j;
    j["image"] = ref.ToString();
    j["manifests"] = Json::array();
    for (const ImageOutcome& img : images) {
      Json m;
      m["digest"] = img.manifest.digest;
      if (!img.platform.empty()) m["platform"] = img.platform;
      if (!img.pushed.empty()) {
        m["status"] = "pushed";
        m["referrer"] = img.pushed;
      } else if (!img.existing.empty()) {
        m["status"] = "exists";
      } else {
        m["status"] = "nothing to index";
      }
      m["existing"] = img.existing;
      if (img.prefetch) m["prefetch"] = PrefetchJson(*img.prefetch);
      m["layers"] = Json::array();
      for (const LayerOutcome& l : img.layers) m["layers"].push_back(LayerJson(l));
      j["manifests"].push_back(std::move(m));
    }
    std::fprintf(io.out, "%s\n", j.dump(2).c_str());
    return Status::Ok();
  }
  for (size_t k = 0; k < images.size(); ++k) {
    const ImageOutcome& img = images[k];
    std::fprintf(io.out, "%s %s\n", img.platform.empty() ? "manifest" : "platform",
                 ImageLabel(img).c_str());
    PrintImage(img, io);
    if (img.prefetch) {
      for (const std::string& line : PrefetchPlanLines(*img.prefetch)) {
        std::fprintf(io.out, "  %s\n", line.c_str());
      }
    }
    if (!img.pushed.empty()) {
      std::fprintf(io.out, "  pushed index %s (%zu layer%s) as a referrer of %s%s\n",
                   img.pushed.c_str(), artifacts[k].size(), artifacts[k].size() == 1 ? "" : "s",
                   img.manifest.digest.c_str(),
                   img.existing.empty() ? "" : " (--force: the existing ones are still listed)");
    } else if (!img.existing.empty()) {
      std::fprintf(io.out, "  an index already exists for %s (%s); skipped (--force to push another)\n",
                   img.manifest.digest.c_str(), img.existing.front().c_str());
    } else {
      std::fprintf(io.out, "  nothing to index: no ocicrypt AES-CTR gzip layer without an index\n");
    }
  }
  return Status::Ok();
}

}  // namespace lazycrypt::tools
