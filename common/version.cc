#include "common/version.h"

#include "common/version_info.h"  // generated in the build tree (cmake/VersionInfo.cmake)

namespace lazycrypt {

std::string_view Version() { return LAZYCRYPT_VERSION; }

std::string_view Commit() { return LAZYCRYPT_COMMIT; }

std::string VersionLine(std::string_view program) {
  std::string line(program);
  line += ' ';
  line += Version();
  line += " (commit ";
  line += Commit();
  line += ')';
  return line;
}

}  // namespace lazycrypt
