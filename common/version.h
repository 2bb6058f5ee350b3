// What `--version` prints in every lazycrypt binary: the release version and the commit it was
// built from. Link lc_version (common/CMakeLists.txt), which regenerates the commit at every build.
#pragma once

#include <string>
#include <string_view>

namespace lazycrypt {

// The release, "0.1.0": CMake's project(VERSION), the one source of truth (the Debian package's
// version is made from it too, scripts/build-deb.sh).
std::string_view Version();

// The abbreviated git commit of the source, with "-dirty" when tracked files differed from it,
// or what LAZYCRYPT_COMMIT was set to; "unknown" when neither was known.
std::string_view Commit();

// "<program> 0.1.0 (commit e15050a)".
std::string VersionLine(std::string_view program);

}  // namespace lazycrypt
