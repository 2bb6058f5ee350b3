#include "common/status.h"

#include <gtest/gtest.h>

namespace lazycrypt {
namespace {

Result<int> ParsePositive(int v) {
  if (v <= 0) return Status::InvalidArgument("not positive: " + std::to_string(v));
  return v;
}

Result<int> Doubled(int v) {
  LC_ASSIGN_OR_RETURN(int x, ParsePositive(v));
  return 2 * x;
}

TEST(Status, NamesCodeAndMessage) {
  Status s = Status::Corruption("TOC: entry 3 has no name");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.ToString(), "corruption: TOC: entry 3 has no name");
  EXPECT_EQ(s.WithContext("layer sha256:ab").ToString(),
            "corruption: layer sha256:ab: TOC: entry 3 has no name");
  EXPECT_TRUE(Status::Ok().WithContext("x").ok());
}

TEST(Status, ErrnoMapsToCodes) {
  EXPECT_EQ(ErrnoStatus("open a", ENOENT).code(), StatusCode::kNotFound);
  EXPECT_EQ(ErrnoStatus("open a", EACCES).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(ErrnoStatus("open a", EIO).code(), StatusCode::kIoError);
}

TEST(Result, PropagatesErrorsAndValues) {
  EXPECT_EQ(*Doubled(4), 8);
  Result<int> r = Doubled(-1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lazycrypt
