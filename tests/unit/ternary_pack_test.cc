#include "runtime/ternary_pack.h"

#include <gtest/gtest.h>

#include "tests/support/test_models.h"

namespace ternd::runtime {
namespace {

TEST(TernaryPackTest, LayoutIsTheDocumentedOne) {
  // Row of 5 weights: -1 0 +1 +1 | -1, padded with code 1.
  const int8_t w[5] = {-1, 0, 1, 1, -1};
  uint8_t out[2];
  PackTernary(w, 1, 5, out);
  // codes 0,1,2,2 -> bits 00 01 10 10 from the LSB: 0b10100100.
  EXPECT_EQ(out[0], 0b10100100);
  // code 0 then padding codes 1,1,1: 0b01010100.
  EXPECT_EQ(out[1], 0b01010100);
}

TEST(TernaryPackTest, RoundTripsAwkwardShapes) {
  testing::Rng rng(1);
  for (size_t k : {1, 2, 3, 4, 5, 7, 8, 9, 31, 33, 64, 65}) {
    for (size_t n : {1, 2, 3, 17}) {
      std::vector<int8_t> w = rng.Ternary(n * k);
      std::vector<uint8_t> packed(n * TernaryRowBytes(k));
      PackTernary(w.data(), n, k, packed.data());
      std::vector<int8_t> back(n * k, 9);
      size_t r = 0, c = 0;
      ASSERT_TRUE(UnpackTernary(packed.data(), n, k, back.data(), &r, &c));
      EXPECT_EQ(back, w) << n << "x" << k;
      EXPECT_TRUE(CheckTernaryCodes(packed.data(), n, k, &r, &c));
    }
  }
}

TEST(TernaryPackTest, FindsInvalidCodesAndPadding) {
  std::vector<int8_t> w(3 * 6, 0);
  std::vector<uint8_t> packed(3 * TernaryRowBytes(6));
  PackTernary(w.data(), 3, 6, packed.data());
  size_t r = 99, c = 99;
  auto bad = packed;
  bad[1 * 2 + 0] |= 3 << 4;  // row 1, column 2 becomes code 3
  EXPECT_FALSE(CheckTernaryCodes(bad.data(), 3, 6, &r, &c));
  EXPECT_EQ(r, 1u);
  EXPECT_EQ(c, 2u);
  std::vector<int8_t> out(18);
  EXPECT_FALSE(UnpackTernary(bad.data(), 3, 6, out.data(), &r, &c));
  EXPECT_EQ(c, 2u);
  bad = packed;
  bad[2 * 2 + 1] &= ~(3 << 6);  // row 2, padding column 7 becomes code 0
  EXPECT_FALSE(CheckTernaryCodes(bad.data(), 3, 6, &r, &c));
  EXPECT_EQ(r, 2u);
  EXPECT_EQ(c, 7u);
}

}  // namespace
}  // namespace ternd::runtime
