#include "cache/registry_source.h"

#include <cstring>
#include <vector>

namespace lazycrypt::cache {
namespace {

class RegistryBlobSource final : public MultiRangeBlobSource {
 public:
  RegistryBlobSource(registry::Client& client, registry::Reference repo, std::string digest,
                     std::unique_ptr<BlobSource> single)
      : client_(client), repo_(std::move(repo)), digest_(std::move(digest)),
        single_(std::move(single)) {}

  uint64_t size() const override { return single_->size(); }
  Status ReadAt(uint64_t offset, MutableByteSpan out) override {
    return single_->ReadAt(offset, out);
  }

  Status ReadRanges(std::span<const RangeRead> ranges) override {
    if (ranges.empty()) return Status::Ok();
    if (ranges.size() == 1) return ReadAt(ranges[0].offset, ranges[0].out);
    std::vector<registry::ByteRange> wanted;
    wanted.reserve(ranges.size());
    for (const RangeRead& r : ranges) {
      if (r.offset > size() || r.out.size() > size() - r.offset) {
        return Status::Corruption("blob " + digest_ + ": range at " + std::to_string(r.offset) +
                                  " of " + std::to_string(r.out.size()) +
                                  " bytes is past its end (" + std::to_string(size()) + ")");
      }
      wanted.push_back({r.offset, r.out.size()});
    }
    LC_ASSIGN_OR_RETURN(auto parts, client_.GetBlobRanges(repo_, digest_, wanted));
    if (parts.size() != ranges.size()) {
      return Status::Corruption("blob " + digest_ + ": asked for " +
                                std::to_string(ranges.size()) + " ranges, got " +
                                std::to_string(parts.size()));
    }
    for (size_t i = 0; i < ranges.size(); ++i) {
      if (parts[i].size() != ranges[i].out.size()) {
        return Status::Corruption("blob " + digest_ + ": range at " +
                                  std::to_string(ranges[i].offset) + " came back with " +
                                  std::to_string(parts[i].size()) + " bytes, wanted " +
                                  std::to_string(ranges[i].out.size()));
      }
      std::memcpy(ranges[i].out.data(), parts[i].data(), parts[i].size());
    }
    return Status::Ok();
  }

 private:
  registry::Client& client_;
  const registry::Reference repo_;
  const std::string digest_;
  std::unique_ptr<BlobSource> single_;
};

}  // namespace

Result<std::unique_ptr<MultiRangeBlobSource>> OpenRegistryBlobSource(registry::Client& client,
                                                                     const registry::Reference& repo,
                                                                     std::string digest,
                                                                     uint64_t size) {
  LC_ASSIGN_OR_RETURN(std::unique_ptr<BlobSource> single, client.OpenBlob(repo, digest, size));
  return std::unique_ptr<MultiRangeBlobSource>(
      new RegistryBlobSource(client, repo, std::move(digest), std::move(single)));
}

}  // namespace lazycrypt::cache
