// A registry blob as a MultiRangeBlobSource for CachedLayer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "cache/multi_range_source.h"
#include "common/io.h"
#include "common/status.h"
#include "registry/registry.h"

namespace lazycrypt::cache {

// A registry blob: ReadAt through client.OpenBlob's source (a Range GET, retried by the client),
// ReadRanges through client.ReadBlobRangesInto (one multi-range request written straight into
// the caller's buffers, or one request per range when the server does not answer
// multipart/byteranges). size 0 = HEAD the blob to learn it.
// `client` must outlive the result.
Result<std::unique_ptr<MultiRangeBlobSource>> OpenRegistryBlobSource(registry::Client& client,
                                                                     const registry::Reference& repo,
                                                                     std::string digest,
                                                                     uint64_t size = 0);

}  // namespace lazycrypt::cache
