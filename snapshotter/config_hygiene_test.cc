// The debug option that puts decrypted file names back into log lines: off by default, a boolean.
#include <gtest/gtest.h>

#include "snapshotter/config.h"

namespace lazycrypt::snapshotter {
namespace {

TEST(ConfigHygiene, LogFileNamesIsOffByDefaultAndABoolean) {
  EXPECT_FALSE(ParseConfig("").value().log_file_names);
  auto on = ParseConfig("log_file_names = true\n");
  ASSERT_TRUE(on.ok()) << on.status().ToString();
  EXPECT_TRUE(on->log_file_names);
  auto bad = ParseConfig("log_file_names = \"yes\"\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("log_file_names"), std::string::npos);
}

}  // namespace
}  // namespace lazycrypt::snapshotter
