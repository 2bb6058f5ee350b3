// The [limits] table of the daemon's config (TOC limits of the layers it mounts).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "snapshotter/config.h"

namespace lazycrypt::snapshotter {
namespace {

using ::testing::HasSubstr;

// The node's defaults bound what one layer's TOC can make the daemon build (1 Mi entries and
// chunks, not the format's 8 Mi / 16 Mi); the serialized size is the format's.
TEST(ConfigLimits, DefaultsBoundEntriesAndChunksBelowTheFormatsMaxima) {
  auto c = ParseConfig("");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->limits.toc_max_bytes, 0u);
  EXPECT_EQ(c->limits.toc_max_chunks, uint64_t{1} << 20);
  EXPECT_EQ(c->limits.toc_max_entries, uint64_t{1} << 20);
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
