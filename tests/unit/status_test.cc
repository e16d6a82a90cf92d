#include "base/status.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <string>

namespace ternd {
namespace {

Result<int> Half(int v) {
  if (v % 2) return InvalidArgument("%d is odd", v);
  return v / 2;
}

Status Quarter(int v, int* out) {
  TERND_ASSIGN_OR_RETURN(int h, Half(v));
  TERND_ASSIGN_OR_RETURN(*out, Half(h));
  return Status::Ok();
}

TEST(StatusTest, CarriesCodeAndMessage) {
  Status s = InvalidArgument("key '%s' is %d", "workers", -1);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_STREQ(s.message(), "key 'workers' is -1");
  s.Prepend("/etc/ternd/ternd.toml");
  EXPECT_STREQ(s.message(), "/etc/ternd/ternd.toml: key 'workers' is -1");
  EXPECT_STREQ(StatusCodeName(s.code()), "INVALID_ARGUMENT");
}

TEST(StatusTest, MacrosPropagate) {
  int out = 0;
  EXPECT_TRUE(Quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  Status s = Quarter(6, &out);
  EXPECT_STREQ(s.message(), "3 is odd");
}

TEST(StatusTest, LongMessagesAreTruncatedNotOverflowed) {
  std::string big(5000, 'x');
  Status s = Internal("%s", big.c_str());
  EXPECT_EQ(std::string(s.message()).size(), Status::kMaxMessage - 1);
  s.Prepend(big);
  EXPECT_EQ(std::string(s.message()).size(), Status::kMaxMessage - 1);
}

TEST(StatusTest, ErrnoMapsCodes) {
  EXPECT_EQ(ErrnoError(ENOENT, "open %s", "f").code(), StatusCode::kNotFound);
  EXPECT_EQ(ErrnoError(EACCES, "x").code(), StatusCode::kPermissionDenied);
  EXPECT_NE(
      std::string(ErrnoError(ENOENT, "open f").message()).find("No such file"),
      std::string::npos);
}

TEST(StatusTest, ResultFromOkStatusIsAnError) {
  Result<int> r = Status::Ok();
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace ternd
