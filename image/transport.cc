#include "image/transport.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "crypto/digest.h"

namespace lazycrypt::image {

namespace {

class OciSource final : public ImageSource {
 public:
  OciSource(ImageReference ref, std::unique_ptr<OciLayout> layout)
      : ref_(std::move(ref)), layout_(std::move(layout)) {}

  std::string Name() const override { return ref_.ToString(); }
  Result<Descriptor> ResolveRoot() override { return layout_->ResolveRoot(ref_.tag); }
  Result<std::vector<uint8_t>> ReadBlob(const Descriptor& d, uint64_t max_bytes) override {
    return layout_->ReadBlob(d, max_bytes);
  }
  Result<std::unique_ptr<BlobSource>> OpenBlob(const Descriptor& d) override {
    LC_ASSIGN_OR_RETURN(auto blob, layout_->OpenBlob(d));
    return std::unique_ptr<BlobSource>(std::move(blob));
  }

 private:
  ImageReference ref_;
  std::unique_ptr<OciLayout> layout_;
};

class OciBlobSink final : public BlobSink {
 public:
  explicit OciBlobSink(std::unique_ptr<BlobWriter> writer) : writer_(std::move(writer)) {}
  Status Write(ByteSpan data) override { return writer_->Write(data); }
  Status Close() override { return writer_->Close(); }
  const std::string& digest() const override { return writer_->digest(); }
  uint64_t size() const override { return writer_->size(); }

 private:
  std::unique_ptr<BlobWriter> writer_;
};

class OciDestination final : public ImageDestination {
 public:
  OciDestination(ImageReference ref, std::unique_ptr<ImageWriter> writer)
      : ref_(std::move(ref)), writer_(std::move(writer)) {
    tag_ = ref_.tag.empty() ? std::string(kDefaultTag) : ref_.tag;
  }

  std::string Name() const override { return ref_.ToString(); }
  const std::string& tag() const override { return tag_; }
  Result<bool> HasBlob(const Descriptor& d) override {
    LC_RETURN_IF_ERROR(ValidateDigest(d.digest, "descriptor"));
    return writer_->layout().HasBlob(d.digest);
  }
  Result<std::unique_ptr<BlobSink>> NewBlob(std::string) override {
    LC_ASSIGN_OR_RETURN(auto writer, writer_->NewBlob());
    return std::unique_ptr<BlobSink>(std::make_unique<OciBlobSink>(std::move(writer)));
  }
  Result<Descriptor> PutBlob(std::string media_type, ByteSpan data) override {
    return writer_->PutBlob(std::move(media_type), data);
  }
  Result<Descriptor> PutManifest(std::string media_type, ByteSpan data) override {
    return writer_->PutBlob(std::move(media_type), data);
  }
  Status Commit(const Descriptor& root) override { return writer_->Commit(tag_, root); }
  void Abort() override { writer_->Abort(); }

 private:
  ImageReference ref_;
  std::string tag_;
  std::unique_ptr<ImageWriter> writer_;
};

class ReadAheadBlobSource final : public BlobSource {
 public:
  ReadAheadBlobSource(std::unique_ptr<BlobSource> inner, size_t window_bytes)
      : inner_(std::move(inner)), window_bytes_(window_bytes) {}
  uint64_t size() const override { return inner_->size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    if (out.empty()) return Status::Ok();
    // Larger than a window: no point in buffering.
    if (out.size() >= window_bytes_) return inner_->ReadAt(offset, out);
    std::lock_guard lock(mu_);
    if (offset < window_offset_ || offset + out.size() > window_offset_ + window_.size()) {
      uint64_t size = inner_->size();
      if (offset > size || out.size() > size - offset) {
        return Status::Corruption("read of " + std::to_string(out.size()) + " bytes at " +
                                  std::to_string(offset) + " is past the blob's end (" +
                                  std::to_string(size) + ")");
      }
      uint64_t length = std::min<uint64_t>(window_bytes_, size - offset);
      window_.resize(length);
      window_offset_ = offset;
      Status s = inner_->ReadAt(offset, window_);
      if (!s.ok()) {
        window_.clear();
        return s;
      }
    }
    std::memcpy(out.data(), window_.data() + (offset - window_offset_), out.size());
    return Status::Ok();
  }

 private:
  std::unique_ptr<BlobSource> inner_;
  size_t window_bytes_;
  std::mutex mu_;
  uint64_t window_offset_ = 0;
  std::vector<uint8_t> window_;
};

}  // namespace

std::unique_ptr<BlobSource> NewReadAheadBlobSource(std::unique_ptr<BlobSource> inner,
                                                   size_t window_bytes) {
  return std::make_unique<ReadAheadBlobSource>(std::move(inner), window_bytes);
}

Result<std::unique_ptr<BlobSource>> ImageSource::OpenVerifiedBlob(const Descriptor& d) {
  LC_ASSIGN_OR_RETURN(std::unique_ptr<BlobSource> blob, OpenBlobForScan(d));
  LC_RETURN_IF_ERROR(VerifyBlobDigest(*blob, d));
  return blob;
}

Status VerifyBlobDigest(BlobSource& blob, const Descriptor& d) {
  if (blob.size() != d.size) {
    return Status::Corruption("blob " + d.digest + " has " + std::to_string(blob.size()) +
                              " bytes, its descriptor says " + std::to_string(d.size));
  }
  BlobInputStream raw(blob);
  auto verifying = NewVerifyingInputStream(raw, d, "blob " + d.digest);
  std::vector<uint8_t> buffer(1 << 20);
  while (true) {
    LC_ASSIGN_OR_RETURN(size_t n, verifying->Read(buffer));
    if (n == 0) return Status::Ok();
  }
}

Status CopyBlob(ImageSource& src, ImageDestination& dst, const Descriptor& d) {
  LC_RETURN_IF_ERROR(ValidateDigest(d.digest, "descriptor"));
  LC_ASSIGN_OR_RETURN(bool present, dst.HasBlob(d));
  if (present) return Status::Ok();
  LC_ASSIGN_OR_RETURN(auto blob, src.OpenBlobForScan(d));
  BlobInputStream raw(*blob);
  auto verifying = NewVerifyingInputStream(raw, d, "blob " + d.digest);
  LC_ASSIGN_OR_RETURN(auto sink, dst.NewBlob("blob " + d.digest));
  LC_RETURN_IF_ERROR(CopyStream(*verifying, *sink).status());
  LC_RETURN_IF_ERROR(sink->Close());
  if (sink->digest() != d.digest) {
    return Status::Internal("copied blob " + d.digest + " came out as " + sink->digest());
  }
  return Status::Ok();
}

Result<std::unique_ptr<ImageSource>> OpenOciSource(const ImageReference& ref) {
  auto layout = OciLayout::Open(ref.dir);
  if (!layout.ok()) return layout.status().WithContext(ref.ToString());
  return std::unique_ptr<ImageSource>(std::make_unique<OciSource>(ref, std::move(layout).value()));
}

Result<std::unique_ptr<ImageDestination>> OpenOciDestination(const ImageReference& ref) {
  if (!ref.tag.empty()) LC_RETURN_IF_ERROR(ValidateTag(ref.tag));
  auto writer = ImageWriter::Begin(ref.dir);
  if (!writer.ok()) return writer.status().WithContext(ref.ToString());
  return std::unique_ptr<ImageDestination>(
      std::make_unique<OciDestination>(ref, std::move(writer).value()));
}

Result<std::unique_ptr<ImageSource>> OpenImageSource(const ImageReference& ref,
                                                     const TransportOptions& options) {
  if (ref.is_registry()) return OpenRegistrySource(ref, options);
  return OpenOciSource(ref);
}

Result<std::unique_ptr<ImageDestination>> OpenImageDestination(const ImageReference& ref,
                                                               const TransportOptions& options) {
  if (ref.is_registry()) return OpenRegistryDestination(ref, options);
  return OpenOciDestination(ref);
}

Result<LoadedImage> LoadManifest(ImageSource& src, const Descriptor& manifest_descriptor) {
  return LoadImageWith(manifest_descriptor,
                       [&src](const Descriptor& d) { return src.ReadBlob(d); });
}

namespace {
// Attestation manifests and the like sit in indexes under platform unknown/unknown.
bool IsPlatformImage(const Descriptor& d) {
  if (!IsManifestMediaType(d.media_type)) return false;
  return !(d.platform && d.platform->os == "unknown");
}
}  // namespace

Result<LoadedRoot> LoadRoot(ImageSource& src) {
  LoadedRoot out;
  auto root = src.ResolveRoot();
  if (!root.ok()) return root.status().WithContext(src.Name());
  out.root = std::move(root).value();
  if (IsManifestMediaType(out.root.media_type)) {
    auto image = LoadManifest(src, out.root);
    if (!image.ok()) return image.status().WithContext(src.Name());
    out.root_bytes = image->manifest_bytes;
    out.images.push_back(std::move(image).value());
    out.image_positions.push_back(0);
    return out;
  }
  if (!IsIndexMediaType(out.root.media_type)) {
    return Status::Unsupported(src.Name() + ": media type '" + out.root.media_type +
                               "' is not an image manifest or index");
  }
  auto bytes = src.ReadBlob(out.root);
  if (!bytes.ok()) return bytes.status().WithContext(src.Name());
  out.root_bytes = std::move(bytes).value();
  auto index = ParseIndex(out.root_bytes);
  if (!index.ok()) return index.status().WithContext(src.Name() + ": index " + out.root.digest);
  out.index = std::move(index).value();
  for (size_t i = 0; i < out.index->manifests.size(); ++i) {
    const Descriptor& d = out.index->manifests[i];
    if (!IsPlatformImage(d)) continue;
    auto image = LoadManifest(src, d);
    if (!image.ok()) {
      return image.status().WithContext(src.Name() + ": index entry " + std::to_string(i));
    }
    out.images.push_back(std::move(image).value());
    out.image_positions.push_back(i);
  }
  if (out.images.empty()) {
    return Status::NotFound(src.Name() + ": index " + out.root.digest + " lists no image manifest");
  }
  return out;
}

}  // namespace lazycrypt::image
