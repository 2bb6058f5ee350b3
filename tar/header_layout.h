// The 512-byte tar header block (POSIX ustar layout; GNU shares the first 345 bytes), shared by
// the reader and the writer. Internal to lc_tar.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace lazycrypt::tar::internal {

inline constexpr size_t kBlockSize = 512;
using Block = std::array<uint8_t, kBlockSize>;

struct Field {
  size_t offset;
  size_t length;
};
inline constexpr Field kName{0, 100};
inline constexpr Field kMode{100, 8};
inline constexpr Field kUid{108, 8};
inline constexpr Field kGid{116, 8};
inline constexpr Field kSize{124, 12};
inline constexpr Field kMtime{136, 12};
inline constexpr Field kChecksum{148, 8};
inline constexpr size_t kTypeflag = 156;
inline constexpr Field kLinkname{157, 100};
inline constexpr Field kMagic{257, 6};
inline constexpr Field kVersion{263, 2};
inline constexpr Field kMagicVersion{257, 8};  // magic and version together
inline constexpr Field kUname{265, 32};
inline constexpr Field kGname{297, 32};
inline constexpr Field kDevmajor{329, 8};
inline constexpr Field kDevminor{337, 8};
inline constexpr Field kPrefix{345, 155};

}  // namespace lazycrypt::tar::internal
