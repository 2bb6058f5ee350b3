#include "common/json_depth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace lazycrypt {
namespace {

using ::testing::HasSubstr;

std::string Nested(int levels) { return std::string(levels, '[') + std::string(levels, ']'); }

TEST(JsonDepth, AcceptsUpToTheLimit) {
  EXPECT_TRUE(CheckJsonDepth(Nested(kMaxJsonDepth), "doc").ok());
  EXPECT_TRUE(CheckJsonDepth(R"({"a":[{"b":[1,2]}],"c":{}})", "doc", 4).ok());
  EXPECT_TRUE(CheckJsonDepth("", "doc").ok());
}

TEST(JsonDepth, RefusesOneLevelMoreNamingTheLimit) {
  Status st = CheckJsonDepth(Nested(kMaxJsonDepth + 1), "manifest");
  EXPECT_EQ(st.code(), StatusCode::kCorruption);
  EXPECT_THAT(st.message(), HasSubstr("manifest: JSON nested deeper than 64 levels"));
  EXPECT_FALSE(CheckJsonDepth(R"({"a":{"b":[[]]}})", "doc", 3).ok());
}

TEST(JsonDepth, RefusesHundredThousandOpenBrackets) {
  Status st = CheckJsonDepth(std::string(100000, '['), "config");
  EXPECT_THAT(st.message(), HasSubstr("deeper than"));
  EXPECT_FALSE(CheckJsonDepth(std::string(100000, '{'), "config").ok());
}

TEST(JsonDepth, BracketsInStringsDoNotCount) {
  std::string in_string = "[\"" + std::string(1000, '[') + "\\\"" + std::string(1000, '{') + "\"]";
  EXPECT_TRUE(CheckJsonDepth(in_string, "doc").ok());
  // An escaped backslash ends the escape: the quote after it closes the string.
  EXPECT_FALSE(CheckJsonDepth("[\"\\\\\"" + std::string(100, '['), "doc").ok());
}

TEST(JsonDepth, UnbalancedClosersEarnNoDepth) {
  EXPECT_FALSE(CheckJsonDepth(std::string(100, ']') + Nested(kMaxJsonDepth + 1), "doc").ok());
}

}  // namespace
}  // namespace lazycrypt
