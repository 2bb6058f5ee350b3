#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cri/cri_client.h"

namespace lazycrypt::cri {
namespace {

using ::testing::HasSubstr;

TEST(ParseCriLog, JoinsPartialLinesAndKeepsBothStreams) {
  auto text = ParseCriLog(
      "2026-11-23T14:00:00.000000001Z stdout P hello \n"
      "2026-11-23T14:00:00.000000002Z stdout F world\n"
      "2026-11-23T14:00:00.000000003Z stderr F oops\n"
      "2026-11-23T14:00:00.000000004Z stdout F\n");
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text, "hello world\noops\n\n");
}

TEST(ParseCriLog, EmptyLogIsEmptyText) {
  auto text = ParseCriLog("");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "");
}

TEST(ParseCriLog, RejectsAnUnknownStreamNamingTheLine) {
  auto text = ParseCriLog("2026-11-23T14:00:00Z stdout F a\n2026-11-23T14:00:00Z stdin F b\n");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(text.status().message(), HasSubstr("line 2"));
  EXPECT_THAT(text.status().message(), HasSubstr("stdin"));
}

TEST(ParseCriLog, RejectsABadTagAndATruncatedLine) {
  auto bad_tag = ParseCriLog("2026-11-23T14:00:00Z stdout X a\n");
  ASSERT_FALSE(bad_tag.ok());
  EXPECT_THAT(bad_tag.status().message(), HasSubstr("neither P nor F"));
  auto truncated = ParseCriLog("2026-11-23T14:00:00Z\n");
  ASSERT_FALSE(truncated.ok());
  EXPECT_THAT(truncated.status().message(), HasSubstr("line 1"));
}

}  // namespace
}  // namespace lazycrypt::cri
