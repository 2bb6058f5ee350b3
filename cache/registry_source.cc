#include "cache/registry_source.h"

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
    std::vector<registry::RangeInto> into;
    into.reserve(ranges.size());
    for (const RangeRead& r : ranges) {
      if (r.offset > size() || r.out.size() > size() - r.offset) {
        return Status::Corruption("blob " + digest_ + ": range at " + std::to_string(r.offset) +
                                  " of " + std::to_string(r.out.size()) +
                                  " bytes is past its end (" + std::to_string(size()) + ")");
      }
      into.push_back({r.offset, r.out});
    }
    // Straight into the caller's buffers (the records CachedLayer opens): the response is held
    // once, there, and nowhere else.
    LC_RETURN_IF_ERROR(client_.ReadBlobRangesInto(repo_, digest_, into));
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
