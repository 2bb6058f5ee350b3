#include "image/convert.h"

#include <atomic>
#include <chrono>
#include <set>

#include <nlohmann/json.hpp>

#include "compress/compress.h"
#include "crypto/digest.h"
#include "format/decrypt.h"
#include "format/toc.h"
#include "image/envelope.h"
#include "image/estargz_layer.h"
#include "image/layer.h"
#include "image/convert_internal.h"
#include "image/transport.h"
#include "keywrap/envelope.h"

namespace lazycrypt::image {

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Manifests lazycrypt writes are OCI manifests; a Docker schema 2 manifest is converted (the
// config bytes are unchanged: only the descriptors' media types change).
Manifest ToOciManifest(Manifest m) {
  if (m.media_type == kMediaTypeDockerManifest || m.media_type.empty()) {
    m.media_type = std::string(kMediaTypeOciManifest);
  }
  if (m.config.media_type == kMediaTypeDockerConfig) {
    m.config.media_type = std::string(kMediaTypeOciConfig);
  }
  for (Descriptor& d : m.layers) d.media_type = OciLayerMediaType(d.media_type);
  return m;
}


// Reads once more from a verifying stream so that its end-of-stream check runs even if the
// consumer stopped at the end of the compressed data. Bytes left over are an error.
Status FinishVerifying(InputStream& verifying, const std::string& what) {
  uint8_t byte[1];
  LC_ASSIGN_OR_RETURN(size_t n, verifying.Read(byte));
  if (n != 0) {
    return Status::Corruption(what + ": has bytes after the end of its compressed tar stream");
  }
  return Status::Ok();
}

// For a layer stored uncompressed, whose digest is the diff_id the writer computes anyway:
// enforces the descriptor's size like NewVerifyingInputStream but leaves the digest to the
// caller (compared with the writer's diff_id), which saves one SHA-256 pass over the tar.
class SizeCheckingInputStream final : public InputStream {
 public:
  SizeCheckingInputStream(InputStream& in, uint64_t expected_size, std::string what)
      : in_(in), expected_size_(expected_size), what_(std::move(what)) {}
  Result<size_t> Read(MutableByteSpan out) override {
    if (!failure_.ok()) return failure_;
    LC_ASSIGN_OR_RETURN(size_t n, in_.Read(out));
    count_ += n;
    if (count_ > expected_size_) {
      failure_ = Status::Corruption(what_ + ": longer than the " + std::to_string(expected_size_) +
                                    " bytes its descriptor says");
      return failure_;
    }
    if (n == 0 && !out.empty() && count_ != expected_size_) {
      failure_ = Status::Corruption(what_ + ": has " + std::to_string(count_) +
                                    " bytes, its descriptor says " + std::to_string(expected_size_));
      return failure_;
    }
    return n;
  }

 private:
  InputStream& in_;
  uint64_t expected_size_;
  std::string what_;
  uint64_t count_ = 0;
  Status failure_;
};

// The image config with rootfs.diff_ids replaced (one per layer), every other member kept in
// its order. The config was parsed (and validated) when the image was loaded.
Result<std::vector<uint8_t>> RewriteConfigDiffIds(ByteSpan config,
                                                  const std::vector<std::string>& diff_ids) {
  using Json = nlohmann::ordered_json;
  Json j = Json::parse(config.begin(), config.end(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("rootfs") || !j["rootfs"].is_object() ||
      !j["rootfs"].contains("diff_ids") || !j["rootfs"]["diff_ids"].is_array() ||
      j["rootfs"]["diff_ids"].size() != diff_ids.size()) {
    return Status::Corruption("config: rootfs.diff_ids cannot be rewritten");
  }
  j["rootfs"]["diff_ids"] = diff_ids;
  std::string text = j.dump();
  return std::vector<uint8_t>(text.begin(), text.end());
}

std::string RecipientLabel(const JweRecipientInfo& r) {
  std::string out = r.alg.empty() ? "(no alg)" : r.alg;
  if (!r.crv.empty()) out += " (" + r.crv + ")";
  if (!r.kid.empty()) out += " kid=" + r.kid;
  return out;
}

}  // namespace

std::string_view EncryptionFormatName(EncryptionFormat f) {
  switch (f) {
    case EncryptionFormat::kLazycrypt: return "lazycrypt";
    case EncryptionFormat::kOcicrypt: return "ocicrypt";
    case EncryptionFormat::kOcicryptEstargz: return "ocicrypt-estargz";
  }
  return "?";
}

Result<EncryptionFormat> ParseEncryptionFormat(std::string_view name) {
  if (name == "lazycrypt") return EncryptionFormat::kLazycrypt;
  if (name == "ocicrypt") return EncryptionFormat::kOcicrypt;
  if (name == "ocicrypt-estargz") return EncryptionFormat::kOcicryptEstargz;
  return Status::InvalidArgument("unknown format '" + std::string(name) +
                                 "' (use lazycrypt, ocicrypt or ocicrypt-estargz)");
}

Result<LayerCompression> ParseLayerCompression(std::string_view name) {
  if (name == "zstd") return LayerCompression::kZstd;
  if (name == "gzip") return LayerCompression::kGzip;
  if (name == "none") return LayerCompression::kNone;
  return Status::InvalidArgument("unknown layer compression '" + std::string(name) +
                                 "' (use zstd, gzip or none)");
}

std::string LayerName(size_t index, const Descriptor& d) {
  std::string digest = d.digest.substr(0, std::min<size_t>(d.digest.size(), 7 + 12));
  return "layer " + std::to_string(index) + " (" + digest + "..)";
}


namespace internal {

std::string PlatformLabel(const Descriptor& d) {
  if (!d.platform) return "";
  std::string out = d.platform->os + "/" + d.platform->architecture;
  if (!d.platform->variant.empty()) out += "/" + d.platform->variant;
  return out;
}

Result<Descriptor> ConvertOneImage(ImageSource& src, ImageDestination& dst, const LoadedImage& image,
                                   const std::string& platform, const LayerConverter& convert_layer,
                                   const LayerCallback& on_layer, ConvertReport& report) {
  const Manifest& manifest = image.manifest;
  Manifest out = ToOciManifest(manifest);
  std::vector<std::string> diff_ids = image.config.diff_ids;
  bool diff_ids_changed = false;
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const Descriptor& d = manifest.layers[i];
    LayerReport layer;
    layer.index = i;
    layer.platform = platform;
    layer.source = d;
    auto start = Clock::now();
    LC_RETURN_IF_ERROR(convert_layer(i, d, layer));
    out.layers[i] = layer.result;
    if (!layer.diff_id.empty() && layer.diff_id != diff_ids[i]) {
      diff_ids[i] = layer.diff_id;
      diff_ids_changed = true;
    }
    layer.seconds = SecondsSince(start);
    if (on_layer) on_layer(layer);
    report.layers.push_back(std::move(layer));
  }
  if (!diff_ids_changed) {
    LC_RETURN_IF_ERROR(CopyBlob(src, dst, manifest.config).WithContext("config"));
  } else {
    // A new config: the same document with the new rootfs.diff_ids (so a new config digest).
    LC_ASSIGN_OR_RETURN(std::vector<uint8_t> config,
                        RewriteConfigDiffIds(image.config_bytes, diff_ids));
    LC_ASSIGN_OR_RETURN(Descriptor written, dst.PutBlob(out.config.media_type, config));
    out.config.digest = written.digest;
    out.config.size = written.size;
  }
  return dst.PutManifest(std::string(kMediaTypeOciManifest), AsBytes(SerializeManifest(out)));
}

Result<ConvertReport> ConvertRoot(ImageSource& src, ImageDestination& dst,
                                  const std::function<Status(const LoadedRoot&)>& precheck,
                                  const ImageConverter& convert_image) {
  ConvertReport report;
  report.tag = dst.tag();
  auto run = [&]() -> Status {
    LC_ASSIGN_OR_RETURN(LoadedRoot root, LoadRoot(src));
    report.source_manifest = root.root;
    if (precheck) LC_RETURN_IF_ERROR(precheck(root));
    if (!root.index) {
      LC_ASSIGN_OR_RETURN(report.manifest, convert_image(root.images[0], ""));
    } else {
      Index out;
      out.schema_version = root.index->schema_version;
      out.media_type = std::string(kMediaTypeOciIndex);
      out.annotations = root.index->annotations;
      out.extra_json = root.index->extra_json;
      for (size_t k = 0; k < root.images.size(); ++k) {
        const Descriptor& entry = root.index->manifests[root.image_positions[k]];
        std::string platform = PlatformLabel(entry);
        auto converted = convert_image(root.images[k], platform);
        if (!converted.ok()) {
          return converted.status().WithContext(
              "platform " + (platform.empty() ? "entry " + std::to_string(k) : platform));
        }
        Descriptor d = *converted;
        d.platform = entry.platform;
        d.annotations = entry.annotations;
        d.extra_json = entry.extra_json;
        out.manifests.push_back(std::move(d));
      }
      report.platform_count = out.manifests.size();
      LC_ASSIGN_OR_RETURN(report.manifest, dst.PutManifest(std::string(kMediaTypeOciIndex),
                                                           AsBytes(SerializeIndex(out))));
    }
    return dst.Commit(report.manifest);
  };
  Status s = run();
  if (!s.ok()) {
    dst.Abort();
    return s;
  }
  report.manifest.annotations[std::string(kAnnotationRefName)] = report.tag;
  return report;
}

namespace {

class ProgressInputStream final : public InputStream {
 public:
  ProgressInputStream(InputStream& inner, std::string what, uint64_t total,
                      const ProgressCallback& cb)
      : inner_(inner), what_(std::move(what)), total_(total), cb_(cb) {}
  Result<size_t> Read(MutableByteSpan out) override {
    LC_ASSIGN_OR_RETURN(size_t n, inner_.Read(out));
    done_ += n;
    if (cb_ && (done_ - reported_ >= kReportEveryBytes || n == 0)) {
      reported_ = done_;
      cb_(what_, done_, total_);
    }
    return n;
  }

 private:
  static constexpr uint64_t kReportEveryBytes = 256 << 10;
  InputStream& inner_;
  std::string what_;
  uint64_t total_;
  const ProgressCallback& cb_;
  uint64_t done_ = 0, reported_ = 0;
};

class ProgressBlobSource final : public BlobSource {
 public:
  ProgressBlobSource(BlobSource& inner, std::string what, const ProgressCallback& cb)
      : inner_(inner), what_(std::move(what)), cb_(cb) {}
  uint64_t size() const override { return inner_.size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    LC_RETURN_IF_ERROR(inner_.ReadAt(offset, out));
    uint64_t end = offset + out.size();
    uint64_t high = high_.load(std::memory_order_relaxed);
    while (end > high && !high_.compare_exchange_weak(high, end, std::memory_order_relaxed)) {
    }
    if (cb_ && end > high) cb_(what_, end, inner_.size());
    return Status::Ok();
  }

 private:
  BlobSource& inner_;
  std::string what_;
  const ProgressCallback& cb_;
  std::atomic<uint64_t> high_{0};
};

}  // namespace

std::unique_ptr<InputStream> NewProgressInputStream(InputStream& inner, std::string what,
                                                    uint64_t total, const ProgressCallback& cb) {
  return std::make_unique<ProgressInputStream>(inner, std::move(what), total, cb);
}

std::unique_ptr<BlobSource> NewProgressBlobSource(BlobSource& inner, std::string what,
                                                  const ProgressCallback& cb) {
  return std::make_unique<ProgressBlobSource>(inner, std::move(what), cb);
}

}  // namespace internal

namespace {

Result<std::set<size_t>> SelectLayers(const ImageSource& src, const Manifest& manifest,
                                      const EncryptOptions& options) {
  const size_t layer_count = manifest.layers.size();
  std::set<size_t> selected;
  if (options.layers) {
    for (size_t i : *options.layers) {
      if (i >= layer_count) {
        return Status::InvalidArgument(
            "layer " + std::to_string(i) + " does not exist (the image has " +
            std::to_string(layer_count) + " layers, 0.." +
            std::to_string(layer_count == 0 ? 0 : layer_count - 1) + ")");
      }
      LayerKind kind = ClassifyLayer(manifest.layers[i].media_type);
      if (kind != LayerKind::kPlain) {
        return Status::InvalidArgument(
            LayerName(i, manifest.layers[i]) + ": cannot encrypt a " +
            (kind == LayerKind::kUnknown
                 ? "layer of media type '" + manifest.layers[i].media_type + "'"
                 : std::string(LayerKindName(kind)) + "-encrypted layer"));
      }
      selected.insert(i);
    }
  } else {
    for (size_t i = 0; i < layer_count; ++i) {
      if (ClassifyLayer(manifest.layers[i].media_type) == LayerKind::kPlain) selected.insert(i);
    }
  }
  if (selected.empty()) return Status::InvalidArgument(src.Name() + ": no plain layer to encrypt");
  return selected;
}

}  // namespace

Result<ConvertReport> EncryptImage(ImageSource& src, ImageDestination& dst,
                                   const keywrap::Recipients& recipients,
                                   const EncryptOptions& options) {
  if (recipients.empty()) return Status::InvalidArgument("no recipients given (use --recipient)");
  ConvertReport scratch;  // collects layer reports; merged below
  auto precheck = [&](const LoadedRoot& root) -> Status {
    for (const LoadedImage& image : root.images) {
      LC_RETURN_IF_ERROR(SelectLayers(src, image.manifest, options).status());
    }
    return Status::Ok();
  };
  auto convert_image = [&](const LoadedImage& image,
                           const std::string& platform) -> Result<Descriptor> {
    LC_ASSIGN_OR_RETURN(std::set<size_t> selected, SelectLayers(src, image.manifest, options));
    // Where each listed path leads in the merged image decides the layer it is marked in.
    std::optional<PrefetchPlan> prefetch;
    if (options.format != EncryptionFormat::kOcicrypt && !options.writer.prefetch_paths.empty()) {
      LC_ASSIGN_OR_RETURN(prefetch, PlanImagePrefetch(src, image.manifest,
                                                      options.writer.prefetch_paths, selected));
      if (options.on_prefetch_plan) options.on_prefetch_plan(platform, *prefetch);
    }
    auto convert_layer = [&](size_t i, const Descriptor& d, LayerReport& layer) -> Status {
      std::string name = LayerName(i, d);
      if (!selected.contains(i)) {
        LC_RETURN_IF_ERROR(CopyBlob(src, dst, d).WithContext(name));
        layer.action = "copied";
        layer.result = d;
        layer.result.media_type = OciLayerMediaType(d.media_type);
        return Status::Ok();
      }
      auto blob = src.OpenBlobForScan(d);
      if (!blob.ok()) return blob.status().WithContext(name);
      BlobInputStream unwatched(**blob);
      auto watched = internal::NewProgressInputStream(unwatched, name, d.size, options.on_progress);
      InputStream& raw = *watched;
      LC_ASSIGN_OR_RETURN(auto sink, dst.NewBlob(name));
      if (options.format == EncryptionFormat::kLazycrypt) {
        // An uncompressed layer's digest is its diff_id, which the writer hashes anyway.
        const bool uncompressed = OciLayerMediaType(d.media_type) == kMediaTypeOciLayerTar;
        std::unique_ptr<InputStream> verifying =
            uncompressed ? std::make_unique<SizeCheckingInputStream>(raw, d.size, "blob")
                         : NewVerifyingInputStream(raw, d, "blob");
        // The sink hashes the blob as it goes: the writer need not hash it again.
        format::WriterOptions writer = options.writer;
        writer.hash_blob = false;
        if (prefetch) writer.prefetch_paths = prefetch->layer_marks[i];
        auto encrypted = EncryptLazycryptLayer(*verifying, *sink, recipients, writer);
        if (!encrypted.ok()) return encrypted.status().WithContext(name);
        LC_RETURN_IF_ERROR(FinishVerifying(*verifying, "blob").WithContext(name));
        // The source must still be what its descriptor and config say; the encrypted layer's
        // tar stream (salt header first) gets a diff_id of its own, written into a new config.
        std::string source_diff_id = crypto::OciDigest(encrypted->write.source_diff_id);
        if (uncompressed && source_diff_id != d.digest) {
          // Also what a compressed blob under an uncompressed media type comes to.
          return Status::AuthFailed(name + ": blob: digest mismatch: descriptor says " + d.digest +
                                    ", content (as a tar stream) is " + source_diff_id);
        }
        if (source_diff_id != image.config.diff_ids[i]) {
          return Status::Corruption(name + ": its tar stream has diff_id " + source_diff_id +
                                    ", the config says " + image.config.diff_ids[i]);
        }
        layer.diff_id = crypto::OciDigest(encrypted->write.diff_id);
        LC_RETURN_IF_ERROR(sink->Close().WithContext(name));
        if (sink->size() != encrypted->write.blob_size) {
          return Status::Internal(name + ": the writer wrote " +
                                  std::to_string(encrypted->write.blob_size) + " bytes, the sink took " +
                                  std::to_string(sink->size()));
        }
        Descriptor result = encrypted->descriptor;
        result.digest = sink->digest();
        std::map<std::string, std::string> annotations = WithoutEncryptionAnnotations(d.annotations);
        annotations.insert(result.annotations.begin(), result.annotations.end());
        result.annotations = std::move(annotations);
        result.extra_json = d.extra_json;
        layer.result = result;
        layer.action = "encrypted (lazycrypt)";
        layer.chunk_count = encrypted->write.chunk_count;
        layer.entry_count = encrypted->write.entry_count;
        layer.toc_digest = crypto::OciDigest(encrypted->write.toc_digest);
      } else if (options.format == EncryptionFormat::kOcicryptEstargz) {
        LC_RETURN_IF_ERROR(internal::EncryptEstargzLayer(
            name, raw, d, image.config.diff_ids[i], *sink, recipients, options.estargz,
            prefetch ? prefetch->layer_marks[i] : std::vector<std::string>{}, layer));
      } else {
        auto encrypted = EncryptOcicryptLayer(raw, d, *sink, recipients);
        if (!encrypted.ok()) return encrypted.status().WithContext(name);
        LC_RETURN_IF_ERROR(sink->Close().WithContext(name));
        if (sink->digest() != encrypted->digest) {
          return Status::Internal(name + ": the encrypted blob's digest differs from the stored one");
        }
        layer.result = *encrypted;
        layer.action = "encrypted (ocicrypt)";
      }
      return Status::Ok();
    };
    return internal::ConvertOneImage(src, dst, image, platform, convert_layer, options.on_layer, scratch);
  };
  LC_ASSIGN_OR_RETURN(ConvertReport report, internal::ConvertRoot(src, dst, precheck, convert_image));
  report.layers = std::move(scratch.layers);
  return report;
}

Result<ConvertReport> DecryptImage(ImageSource& src, ImageDestination& dst,
                                   const keywrap::KeyRing& keys,
                                   const DecryptOptions& options) {
  ConvertReport scratch;
  auto precheck = [&](const LoadedRoot& root) -> Status {
    for (const LoadedImage& image : root.images) {
      const Manifest& manifest = image.manifest;
      for (size_t i = 0; i < manifest.layers.size(); ++i) {
        const Descriptor& d = manifest.layers[i];
        if (ClassifyLayer(d.media_type) == LayerKind::kUnknown &&
            d.media_type.ends_with(kEncryptedSuffix)) {
          return Status::Unsupported(LayerName(i, d) + ": encrypted media type '" + d.media_type +
                                     "' is not supported");
        }
      }
    }
    return Status::Ok();
  };
  auto convert_image = [&](const LoadedImage& image,
                           const std::string& platform) -> Result<Descriptor> {
    auto convert_layer = [&](size_t i, const Descriptor& d, LayerReport& layer) -> Status {
      std::string name = LayerName(i, d);
      LayerKind kind = ClassifyLayer(d.media_type);
      if (kind == LayerKind::kLazycrypt) {
        auto blob = src.OpenVerifiedBlob(d);
        if (!blob.ok()) return blob.status().WithContext(name);
        LC_ASSIGN_OR_RETURN(auto sink, dst.NewBlob(name));
        std::unique_ptr<OutputStream> gzip;
        if (options.compression == LayerCompression::kGzip) {
          gzip = compress::NewGzipOutputStream(*sink);
        }
        auto watched = internal::NewProgressBlobSource(**blob, name, options.on_progress);
        auto decrypted = DecryptLazycryptLayer(
            *watched, d, keys, gzip ? *gzip : static_cast<OutputStream&>(*sink),
            options.compression == LayerCompression::kZstd ? format::DecryptOutput::kTarZstd
                                                           : format::DecryptOutput::kTar);
        if (!decrypted.ok()) return decrypted.status().WithContext(name);
        if (gzip) LC_RETURN_IF_ERROR(gzip->Close().WithContext(name));
        std::string diff_id = crypto::OciDigest(decrypted->diff_id);
        if (diff_id != image.config.diff_ids[i]) {
          return Status::AuthFailed(name + ": decrypted tar has diff_id " + diff_id +
                                    ", the config says " + image.config.diff_ids[i]);
        }
        LC_RETURN_IF_ERROR(sink->Close().WithContext(name));
        std::string_view media_type = options.compression == LayerCompression::kZstd
                                          ? kMediaTypeOciLayerTarZstd
                                      : options.compression == LayerCompression::kGzip
                                          ? kMediaTypeOciLayerTarGzip
                                          : kMediaTypeOciLayerTar;
        Descriptor result = sink->MakeDescriptor(std::string(media_type));
        result.annotations = WithoutEncryptionAnnotations(d.annotations);
        result.extra_json = d.extra_json;
        layer.result = result;
        layer.action = "decrypted (lazycrypt)";
        layer.key_name = decrypted->key_name;
        layer.toc_digest = crypto::OciDigest(decrypted->toc_digest);
      } else if (kind == LayerKind::kOcicrypt) {
        auto blob = src.OpenBlobForScan(d);
        if (!blob.ok()) return blob.status().WithContext(name);
        BlobInputStream unwatched(**blob);
        auto raw = internal::NewProgressInputStream(unwatched, name, d.size, options.on_progress);
        LC_ASSIGN_OR_RETURN(auto sink, dst.NewBlob(name));
        auto decrypted = DecryptOcicryptLayer(*raw, d, *sink, keys);
        if (!decrypted.ok()) return decrypted.status().WithContext(name);
        LC_RETURN_IF_ERROR(sink->Close().WithContext(name));
        if (sink->digest() != decrypted->original.digest) {
          return Status::Internal(name + ": the decrypted blob's digest differs from the stored one");
        }
        layer.result = decrypted->original;
        layer.result.media_type = OciLayerMediaType(layer.result.media_type);
        layer.action = "decrypted (ocicrypt)";
        layer.key_name = decrypted->key_name;
      } else {
        LC_RETURN_IF_ERROR(CopyBlob(src, dst, d).WithContext(name));
        layer.result = d;
        layer.result.media_type = OciLayerMediaType(d.media_type);
        layer.action = "copied";
      }
      return Status::Ok();
    };
    return internal::ConvertOneImage(src, dst, image, platform, convert_layer, options.on_layer, scratch);
  };
  LC_ASSIGN_OR_RETURN(ConvertReport report, internal::ConvertRoot(src, dst, precheck, convert_image));
  report.layers = std::move(scratch.layers);
  return report;
}

Result<ConvertReport> EncryptImage(const ImageReference& src, const ImageReference& dst,
                                   const keywrap::Recipients& recipients,
                                   const EncryptOptions& options) {
  if (recipients.empty()) return Status::InvalidArgument("no recipients given (use --recipient)");
  LC_ASSIGN_OR_RETURN(auto source, OpenImageSource(src));
  LC_ASSIGN_OR_RETURN(auto destination, OpenImageDestination(dst));
  return EncryptImage(*source, *destination, recipients, options);
}

Result<ConvertReport> DecryptImage(const ImageReference& src, const ImageReference& dst,
                                   const keywrap::KeyRing& keys,
                                   const DecryptOptions& options) {
  LC_ASSIGN_OR_RETURN(auto source, OpenImageSource(src));
  LC_ASSIGN_OR_RETURN(auto destination, OpenImageDestination(dst));
  return DecryptImage(*source, *destination, keys, options);
}

namespace {

ImageInfo InspectLoaded(ImageSource& src, const LoadedImage& image,
                        const keywrap::KeyRing& keys, const InspectOptions& options) {
  ImageInfo info;
  info.reference = src.Name();
  info.manifest = image.manifest_descriptor;
  info.manifest_media_type =
      image.manifest.media_type.empty() ? std::string(kMediaTypeOciManifest) : image.manifest.media_type;
  info.config = image.manifest.config;
  info.os = image.config.os;
  info.architecture = image.config.architecture;
  for (size_t i = 0; i < image.manifest.layers.size(); ++i) {
    const Descriptor& d = image.manifest.layers[i];
    LayerInfo li;
    li.index = i;
    li.descriptor = d;
    li.kind = ClassifyLayer(d.media_type);
    li.diff_id = image.config.diff_ids[i];
    if (li.kind == LayerKind::kOcicrypt || li.kind == LayerKind::kLazycrypt) {
      std::string pubopts = d.Annotation(kAnnotationEncPubopts);
      if (!pubopts.empty()) {
        auto pub = keywrap::DecodePubOptsAnnotation(pubopts);
        li.cipher = pub.ok() ? pub->cipher : "(invalid pubopts: " + pub.status().message() + ")";
      }
      auto recipients = ListJweRecipients(d.Annotation(kAnnotationEncKeysJwe));
      if (!recipients.ok()) {
        li.recipients.push_back("(invalid: " + recipients.status().message() + ")");
      } else {
        for (const JweRecipientInfo& r : *recipients) li.recipients.push_back(RecipientLabel(r));
      }
    }
    if (li.kind == LayerKind::kLazycrypt) {
      li.toc_digest = d.Annotation(kAnnotationLazycryptTocDigest);
      if (!keys.empty()) {
        auto blob = src.OpenBlob(d);
        if (!blob.ok()) {
          li.open_error = blob.status().ToString();
        } else {
          auto opened = OpenedLayer::Open(std::move(blob).value(), d, keys);
          if (!opened.ok()) {
            li.open_error = opened.status().ToString();
          } else {
            const format::LayerIndex& index = (*opened)->index();
            li.opened = true;
            li.key_name = (*opened)->key_name();
            li.chunk_count = index.chunks().size();
            li.target_chunk_size = index.target_chunk_size();
            li.tar_size = index.tar_size();
            li.blob_bytes_read = (*opened)->blob_bytes_read();
            li.file_count = index.entries().size();
            li.prefetch_count = index.prefetch_entries().size();
            for (uint32_t i : index.prefetch_entries()) {
              li.prefetch_files.push_back(std::string(index.entries()[i].name()));
            }
            if (options.list_files) {
              for (format::EntryView e : index.entries()) {
                li.files.push_back({std::string(e.name()), std::string(format::EntryTypeName(e.type())),
                                    e.mode(), e.uid(), e.gid(), e.size(),
                                    std::string(e.link_target())});
              }
              for (uint32_t i : index.prefetch_entries()) li.files[i].prefetch = true;
            }
          }
        }
      }
    }
    info.layers.push_back(std::move(li));
  }
  return info;
}

}  // namespace

Result<ImageInfo> InspectImage(ImageSource& src, const keywrap::KeyRing& keys,
                               const InspectOptions& options) {
  LC_ASSIGN_OR_RETURN(LoadedRoot root, LoadRoot(src));
  if (!root.index) return InspectLoaded(src, root.images[0], keys, options);
  ImageInfo info;
  info.reference = src.Name();
  info.manifest = root.root;
  info.manifest_media_type =
      root.index->media_type.empty() ? std::string(kMediaTypeOciIndex) : root.index->media_type;
  for (size_t k = 0; k < root.images.size(); ++k) {
    ImageInfo sub = InspectLoaded(src, root.images[k], keys, options);
    sub.manifest.platform = root.index->manifests[root.image_positions[k]].platform;
    info.platforms.push_back(std::move(sub));
  }
  return info;
}

Result<ImageInfo> InspectImage(const ImageReference& src,
                               const keywrap::KeyRing& keys,
                               const InspectOptions& options) {
  LC_ASSIGN_OR_RETURN(auto source, OpenImageSource(src));
  return InspectImage(*source, keys, options);
}

}  // namespace lazycrypt::image
