#include "image/convert.h"

#include <chrono>
#include <set>

#include "compress/compress.h"
#include "crypto/digest.h"
#include "format/decrypt.h"
#include "format/toc.h"
#include "image/envelope.h"
#include "image/layer.h"
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

struct SourceImage {
  std::unique_ptr<OciLayout> layout;
  LoadedImage image;
};

Result<SourceImage> OpenSource(const ImageReference& src) {
  SourceImage s;
  LC_ASSIGN_OR_RETURN(s.layout, OciLayout::Open(src.dir));
  auto image = LoadImage(*s.layout, src.tag);
  if (!image.ok()) return image.status().WithContext(src.ToString());
  s.image = std::move(image).value();
  return s;
}

std::string RecipientLabel(const JweRecipientInfo& r) {
  std::string out = r.alg.empty() ? "(no alg)" : r.alg;
  if (!r.crv.empty()) out += " (" + r.crv + ")";
  if (!r.kid.empty()) out += " kid=" + r.kid;
  return out;
}

}  // namespace

std::string_view EncryptionFormatName(EncryptionFormat f) {
  return f == EncryptionFormat::kLazycrypt ? "lazycrypt" : "ocicrypt";
}

Result<EncryptionFormat> ParseEncryptionFormat(std::string_view name) {
  if (name == "lazycrypt") return EncryptionFormat::kLazycrypt;
  if (name == "ocicrypt") return EncryptionFormat::kOcicrypt;
  return Status::InvalidArgument("unknown format '" + std::string(name) +
                                 "' (use lazycrypt or ocicrypt)");
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

Result<ConvertReport> EncryptImage(const ImageReference& src, const ImageReference& dst,
                                   const std::vector<keywrap::PublicKey>& recipients,
                                   const EncryptOptions& options) {
  if (recipients.empty()) return Status::InvalidArgument("no recipients given (use --recipient)");
  LC_ASSIGN_OR_RETURN(SourceImage source, OpenSource(src));
  const Manifest& manifest = source.image.manifest;
  const size_t layer_count = manifest.layers.size();

  std::set<size_t> selected;
  if (options.layers) {
    for (size_t i : *options.layers) {
      if (i >= layer_count) {
        return Status::InvalidArgument("layer " + std::to_string(i) + " does not exist (the image has " +
                                       std::to_string(layer_count) + " layers, 0.." +
                                       std::to_string(layer_count == 0 ? 0 : layer_count - 1) + ")");
      }
      LayerKind kind = ClassifyLayer(manifest.layers[i].media_type);
      if (kind != LayerKind::kPlain) {
        return Status::InvalidArgument(
            LayerName(i, manifest.layers[i]) + ": cannot encrypt a " +
            (kind == LayerKind::kUnknown ? "layer of media type '" + manifest.layers[i].media_type + "'"
                                         : std::string(LayerKindName(kind)) + "-encrypted layer"));
      }
      selected.insert(i);
    }
  } else {
    for (size_t i = 0; i < layer_count; ++i) {
      if (ClassifyLayer(manifest.layers[i].media_type) == LayerKind::kPlain) selected.insert(i);
    }
  }
  if (selected.empty()) {
    return Status::InvalidArgument(src.ToString() + ": no plain layer to encrypt");
  }

  ConvertReport report;
  report.source_manifest = source.image.manifest_descriptor;
  report.tag = dst.tag.empty() ? std::string(kDefaultTag) : dst.tag;
  LC_RETURN_IF_ERROR(ValidateTag(report.tag));
  LC_ASSIGN_OR_RETURN(auto writer, ImageWriter::Begin(dst.dir));

  Manifest out = ToOciManifest(manifest);
  LC_RETURN_IF_ERROR(writer->CopyBlob(*source.layout, manifest.config).WithContext("config"));
  for (size_t i = 0; i < layer_count; ++i) {
    const Descriptor& d = manifest.layers[i];
    std::string name = LayerName(i, d);
    LayerReport layer;
    layer.index = i;
    layer.source = d;
    auto start = Clock::now();
    if (!selected.contains(i)) {
      LC_RETURN_IF_ERROR(writer->CopyBlob(*source.layout, d).WithContext(name));
      layer.action = "copied";
      layer.result = out.layers[i];
    } else {
      auto blob = source.layout->OpenBlob(d);
      if (!blob.ok()) return blob.status().WithContext(name);
      BlobInputStream raw(**blob);
      LC_ASSIGN_OR_RETURN(auto blob_writer, writer->NewBlob());
      if (options.format == EncryptionFormat::kLazycrypt) {
        auto verifying = NewVerifyingInputStream(raw, d, "blob");
        auto encrypted = EncryptLazycryptLayer(*verifying, *blob_writer, recipients, options.writer);
        if (!encrypted.ok()) return encrypted.status().WithContext(name);
        LC_RETURN_IF_ERROR(FinishVerifying(*verifying, "blob").WithContext(name));
        std::string diff_id = crypto::OciDigest(encrypted->write.diff_id);
        if (diff_id != source.image.config.diff_ids[i]) {
          return Status::Corruption(name + ": its tar stream has diff_id " + diff_id +
                                    ", the config says " + source.image.config.diff_ids[i]);
        }
        LC_RETURN_IF_ERROR(blob_writer->Close().WithContext(name));
        if (blob_writer->digest() != encrypted->descriptor.digest) {
          return Status::Internal(name + ": the writer's blob digest differs from the file's");
        }
        Descriptor result = encrypted->descriptor;
        std::map<std::string, std::string> annotations = WithoutEncryptionAnnotations(d.annotations);
        annotations.insert(result.annotations.begin(), result.annotations.end());
        result.annotations = std::move(annotations);
        result.extra_json = d.extra_json;
        layer.result = result;
        layer.action = "encrypted (lazycrypt)";
        layer.chunk_count = encrypted->write.chunk_count;
        layer.entry_count = encrypted->write.entry_count;
        layer.toc_digest = crypto::OciDigest(encrypted->write.toc_digest);
      } else {
        auto encrypted = EncryptOcicryptLayer(raw, d, *blob_writer, recipients);
        if (!encrypted.ok()) return encrypted.status().WithContext(name);
        LC_RETURN_IF_ERROR(blob_writer->Close().WithContext(name));
        if (blob_writer->digest() != encrypted->digest) {
          return Status::Internal(name + ": the encrypted blob's digest differs from the file's");
        }
        layer.result = *encrypted;
        layer.action = "encrypted (ocicrypt)";
      }
      out.layers[i] = layer.result;
    }
    layer.seconds = SecondsSince(start);
    if (options.on_layer) options.on_layer(layer);
    report.layers.push_back(std::move(layer));
  }
  LC_ASSIGN_OR_RETURN(report.manifest,
                      writer->PutBlob(std::string(kMediaTypeOciManifest), AsBytes(SerializeManifest(out))));
  LC_RETURN_IF_ERROR(writer->Commit(report.tag, report.manifest));
  report.manifest.annotations[std::string(kAnnotationRefName)] = report.tag;
  return report;
}

Result<ConvertReport> DecryptImage(const ImageReference& src, const ImageReference& dst,
                                   const std::vector<keywrap::PrivateKey>& keys,
                                   const DecryptOptions& options) {
  LC_ASSIGN_OR_RETURN(SourceImage source, OpenSource(src));
  const Manifest& manifest = source.image.manifest;
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const Descriptor& d = manifest.layers[i];
    if (ClassifyLayer(d.media_type) == LayerKind::kUnknown && d.media_type.ends_with(kEncryptedSuffix)) {
      return Status::Unsupported(LayerName(i, d) + ": encrypted media type '" + d.media_type +
                                 "' is not supported");
    }
  }

  ConvertReport report;
  report.source_manifest = source.image.manifest_descriptor;
  report.tag = dst.tag.empty() ? std::string(kDefaultTag) : dst.tag;
  LC_RETURN_IF_ERROR(ValidateTag(report.tag));
  LC_ASSIGN_OR_RETURN(auto writer, ImageWriter::Begin(dst.dir));

  Manifest out = ToOciManifest(manifest);
  LC_RETURN_IF_ERROR(writer->CopyBlob(*source.layout, manifest.config).WithContext("config"));
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const Descriptor& d = manifest.layers[i];
    std::string name = LayerName(i, d);
    LayerReport layer;
    layer.index = i;
    layer.source = d;
    auto start = Clock::now();
    LayerKind kind = ClassifyLayer(d.media_type);
    if (kind == LayerKind::kLazycrypt) {
      auto blob = source.layout->OpenBlob(d);
      if (!blob.ok()) return blob.status().WithContext(name);
      LC_RETURN_IF_ERROR(source.layout->VerifyBlob(d).WithContext(name));
      LC_ASSIGN_OR_RETURN(auto blob_writer, writer->NewBlob());
      std::unique_ptr<OutputStream> gzip;
      if (options.compression == LayerCompression::kGzip) {
        gzip = compress::NewGzipOutputStream(*blob_writer);
      }
      auto decrypted = DecryptLazycryptLayer(
          **blob, d, keys, gzip ? *gzip : static_cast<OutputStream&>(*blob_writer),
          options.compression == LayerCompression::kZstd ? format::DecryptOutput::kTarZstd
                                                         : format::DecryptOutput::kTar);
      if (!decrypted.ok()) return decrypted.status().WithContext(name);
      if (gzip) LC_RETURN_IF_ERROR(gzip->Close().WithContext(name));
      std::string diff_id = crypto::OciDigest(decrypted->diff_id);
      if (diff_id != source.image.config.diff_ids[i]) {
        return Status::AuthFailed(name + ": decrypted tar has diff_id " + diff_id +
                                  ", the config says " + source.image.config.diff_ids[i]);
      }
      LC_RETURN_IF_ERROR(blob_writer->Close().WithContext(name));
      std::string_view media_type = options.compression == LayerCompression::kZstd
                                        ? kMediaTypeOciLayerTarZstd
                                    : options.compression == LayerCompression::kGzip
                                        ? kMediaTypeOciLayerTarGzip
                                        : kMediaTypeOciLayerTar;
      Descriptor result = blob_writer->MakeDescriptor(std::string(media_type));
      result.annotations = WithoutEncryptionAnnotations(d.annotations);
      result.extra_json = d.extra_json;
      layer.result = result;
      layer.action = "decrypted (lazycrypt)";
      layer.key_name = decrypted->key_name;
      layer.toc_digest = crypto::OciDigest(decrypted->toc_digest);
    } else if (kind == LayerKind::kOcicrypt) {
      auto blob = source.layout->OpenBlob(d);
      if (!blob.ok()) return blob.status().WithContext(name);
      BlobInputStream raw(**blob);
      LC_ASSIGN_OR_RETURN(auto blob_writer, writer->NewBlob());
      auto decrypted = DecryptOcicryptLayer(raw, d, *blob_writer, keys);
      if (!decrypted.ok()) return decrypted.status().WithContext(name);
      LC_RETURN_IF_ERROR(blob_writer->Close().WithContext(name));
      if (blob_writer->digest() != decrypted->original.digest) {
        return Status::Internal(name + ": the decrypted blob's digest differs from the file's");
      }
      layer.result = decrypted->original;
      layer.result.media_type = OciLayerMediaType(layer.result.media_type);
      layer.action = "decrypted (ocicrypt)";
      layer.key_name = decrypted->key_name;
    } else {
      LC_RETURN_IF_ERROR(writer->CopyBlob(*source.layout, d).WithContext(name));
      layer.result = out.layers[i];
      layer.action = "copied";
    }
    out.layers[i] = layer.result;
    layer.seconds = SecondsSince(start);
    if (options.on_layer) options.on_layer(layer);
    report.layers.push_back(std::move(layer));
  }
  LC_ASSIGN_OR_RETURN(report.manifest,
                      writer->PutBlob(std::string(kMediaTypeOciManifest), AsBytes(SerializeManifest(out))));
  LC_RETURN_IF_ERROR(writer->Commit(report.tag, report.manifest));
  report.manifest.annotations[std::string(kAnnotationRefName)] = report.tag;
  return report;
}

Result<ImageInfo> InspectImage(const ImageReference& src,
                               const std::vector<keywrap::PrivateKey>& keys,
                               const InspectOptions& options) {
  LC_ASSIGN_OR_RETURN(SourceImage source, OpenSource(src));
  const LoadedImage& image = source.image;
  ImageInfo info;
  info.reference = src.ToString();
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
        auto blob = source.layout->OpenBlob(d);
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
            if (options.list_files) {
              for (const format::Entry& e : index.entries()) {
                li.files.push_back({e.name, std::string(format::EntryTypeName(e.type)), e.mode,
                                    e.uid, e.gid, e.size, e.link_target});
              }
            }
          }
        }
      }
    }
    info.layers.push_back(std::move(li));
  }
  return info;
}

}  // namespace lazycrypt::image
