#include "image/estargz_layer.h"

#include "compress/compress.h"
#include "crypto/digest.h"
#include "estargz/toc.h"
#include "image/layer.h"
#include "image/layout.h"

namespace lazycrypt::image {

Result<EstargzOcicryptResult> EncryptEstargzOcicryptLayer(InputStream& tar,
                                                          const Descriptor& source,
                                                          OutputStream& out,
                                                          const keywrap::Recipients& recipients,
                                                          const estargz::WriterOptions& options) {
  LC_ASSIGN_OR_RETURN(auto spool, SpoolFile::Create(options.spool_dir));
  LC_ASSIGN_OR_RETURN(estargz::WriteResult write, estargz::WriteEstargz(tar, *spool, options));

  // The eStargz blob is the "original" layer ocicrypt encrypts (what a decrypting node gets back).
  Descriptor original;
  original.media_type = std::string(kMediaTypeOciLayerTarGzip);
  original.digest = crypto::OciDigest(write.blob_digest);
  original.size = write.blob_size;
  original.annotations = source.annotations;
  // A source that was eStargz already: its TOC annotations describe another blob. The standard
  // stargz TOC digest is never set on an encrypted layer (docs/FORMAT.md §10.3).
  for (std::string_view stale : {estargz::kAnnotationStargzTocDigest,
                                 estargz::kAnnotationUncompressedSize,
                                 estargz::kAnnotationTocDigest, estargz::kAnnotationTocSize}) {
    original.annotations.erase(std::string(stale));
  }
  original.extra_json = source.extra_json;
  BlobInputStream blob(*spool);
  LC_ASSIGN_OR_RETURN(Descriptor encrypted, EncryptOcicryptLayer(blob, original, out, recipients));
  encrypted.annotations[std::string(estargz::kAnnotationTocDigest)] =
      crypto::OciDigest(write.toc_digest);
  encrypted.annotations[std::string(estargz::kAnnotationTocSize)] = std::to_string(write.toc_size);
  encrypted.annotations[std::string(estargz::kAnnotationUncompressedSize)] =
      std::to_string(write.uncompressed_size);
  return EstargzOcicryptResult{std::move(encrypted), std::move(write)};
}

namespace internal {

Status EncryptEstargzLayer(const std::string& name, InputStream& raw, const Descriptor& source,
                           const std::string& config_diff_id, BlobSink& sink,
                           const keywrap::Recipients& recipients,
                           estargz::WriterOptions options, std::vector<std::string> prefetch_marks,
                           LayerReport& layer) {
  auto verifying = NewVerifyingInputStream(raw, source, "blob");
  auto tar = compress::NewDecompressingStream(*verifying);
  if (!tar.ok()) return tar.status().WithContext(name);
  options.prefetch_paths = std::move(prefetch_marks);
  auto encrypted = EncryptEstargzOcicryptLayer(**tar, source, sink, recipients, options);
  if (!encrypted.ok()) return encrypted.status().WithContext(name);
  // The verifying stream checks digest and size at its end: read it there even if the
  // decompressor stopped at the end of the compressed data.
  uint8_t byte[1];
  auto extra = verifying->Read(byte);
  if (!extra.ok()) return extra.status().WithContext(name + ": blob");
  if (*extra != 0) {
    return Status::Corruption(name + ": blob: has bytes after the end of its compressed tar stream");
  }
  std::string source_diff_id = crypto::OciDigest(encrypted->write.source_diff_id);
  if (source_diff_id != config_diff_id) {
    return Status::Corruption(name + ": its tar stream has diff_id " + source_diff_id +
                              ", the config says " + config_diff_id);
  }
  LC_RETURN_IF_ERROR(sink.Close().WithContext(name));
  if (sink.digest() != encrypted->descriptor.digest) {
    return Status::Internal(name + ": the encrypted blob's digest differs from the stored one");
  }
  layer.result = encrypted->descriptor;
  layer.action = "encrypted (ocicrypt-estargz)";
  layer.diff_id = crypto::OciDigest(encrypted->write.diff_id);
  layer.toc_digest = crypto::OciDigest(encrypted->write.toc_digest);
  layer.chunk_count = encrypted->write.chunk_count;
  layer.entry_count = encrypted->write.entry_count;
  return Status::Ok();
}

}  // namespace internal

}  // namespace lazycrypt::image
