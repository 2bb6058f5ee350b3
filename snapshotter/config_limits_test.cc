// The [limits] table of the daemon's config (TOC limits of the layers it mounts).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "snapshotter/config.h"

namespace lazycrypt::snapshotter {
namespace {

using ::testing::HasSubstr;

TEST(ConfigLimits, DefaultsToTheFormatsMaxima) {
  auto c = ParseConfig("");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->limits.toc_max_bytes, 0u);
  EXPECT_EQ(c->limits.toc_max_chunks, 0u);
  EXPECT_EQ(c->limits.toc_max_entries, 0u);
}

TEST(ConfigLimits, ReadsEachKey) {
  auto c = ParseConfig("[limits]\ntoc_max_bytes = 67108864\ntoc_max_chunks = 100000\ntoc_max_entries = 50000\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->limits.toc_max_bytes, 67108864u);
  EXPECT_EQ(c->limits.toc_max_chunks, 100000u);
  EXPECT_EQ(c->limits.toc_max_entries, 50000u);
}

TEST(ConfigLimits, BadValuesAndUnknownKeysAreNamed) {
  EXPECT_THAT(ParseConfig("[limits]\ntoc_max_entries = 0\n", "c.toml").status().message(),
              HasSubstr("limits.toc_max_entries"));
  EXPECT_THAT(ParseConfig("[limits]\ntoc_max_chunks = -1\n").status().message(),
              HasSubstr("limits.toc_max_chunks"));
  EXPECT_THAT(ParseConfig("[limits]\ntoc_max_files = 1\n").status().message(),
              HasSubstr("toc_max_files"));
}

}  // namespace
}  // namespace lazycrypt::snapshotter
