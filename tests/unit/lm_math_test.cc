// runtime/lm/lm_math.h: every math set this CPU can run. The output head's
// products against a float64 sum, row splits that do not change a row's
// value (what makes LmModel's logits independent of its thread count), the
// layout round trip of PackHead / CopyHeadRow, and the edge cases (columns
// and rows that do not fill a block or group, zeros, tiny and wide-ranging
// inputs, non-finite ones).
#include "runtime/lm/lm_math.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace ternd::runtime::lm_math {
namespace {

struct Rng {
  uint32_t s;
  uint32_t Next() {
    s = s * 1664525u + 1013904223u;
    return s >> 8;
  }
  float Uniform() { return static_cast<float>(Next() % 2000001) * 1e-6f - 1; }
};

// 64-byte aligned storage.
struct Aligned {
  explicit Aligned(size_t bytes) : v(bytes + 64) {
    p = v.data() + (64 - reinterpret_cast<uintptr_t>(v.data()) % 64) % 64;
  }
  std::vector<uint8_t> v;
  uint8_t* p;
};

std::vector<float> Input(size_t n, Rng& rng, int kind) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) {
    switch (kind) {
      case 0:  // plain
        x[i] = rng.Uniform() * 3;
        break;
      case 1:  // magnitudes from 2^-40 to 2^20, some zeros
        x[i] = rng.Next() % 7 == 0
                   ? 0.0f
                   : std::ldexp(rng.Uniform(),
                                static_cast<int>(rng.Next() % 61) - 40);
        break;
      default:  // tiny: all below 2^-120 (the scale exceeds 2^127)
        x[i] = std::ldexp(rng.Uniform(), -125);
        break;
    }
  }
  return x;
}

class LmMathTest : public ::testing::TestWithParam<const Ops*> {};

TEST_P(LmMathTest, HeadI8MatchesAFloat64SumAndRowSplitsDoNotMatter) {
  const Ops& ops = *GetParam();
  struct Shape {
    size_t rows, n;
  };
  const Shape shapes[] = {{1, 1},   {3, 17},   {7, 63},   {9, 64},
                          {13, 65}, {33, 300}, {20, 2560}};
  Rng rng{7};
  for (const Shape& sh : shapes) {
    for (int kind : {0, 1, 2}) {
      SCOPED_TRACE("rows " + std::to_string(sh.rows) + " n " +
                   std::to_string(sh.n) + " kind " + std::to_string(kind));
      std::vector<int8_t> q(sh.rows * sh.n);
      for (int8_t& v : q) {
        const uint32_t r = rng.Next() % 10;
        v = r == 0 ? -128 : r == 1 ? 127 : static_cast<int8_t>(rng.Next());
      }
      std::vector<float> scale(sh.rows);
      for (float& s : scale) s = 0.01f + 0.001f * (rng.Next() % 100);
      const std::vector<float> x = Input(sh.n, rng, kind);
      Aligned packed(HeadPackedBytes(ops, 1, sh.rows, sh.n));
      std::vector<int32_t> sums(sh.rows);
      PackHead(ops, 1, q.data(), sh.rows, sh.n, packed.p, sums.data());
      Aligned work(HeadWorkBytes(sh.n));
      std::vector<float> out(sh.rows);
      ops.head_i8(reinterpret_cast<const int8_t*>(packed.p), scale.data(),
                  sums.data(), sh.rows, sh.n, x.data(), work.p, out.data());
      for (size_t r = 0; r < sh.rows; ++r) {
        double exact = 0, mag = 0;
        for (size_t i = 0; i < sh.n; ++i) {
          exact += static_cast<double>(q[r * sh.n + i]) * x[i];
          mag += std::fabs(static_cast<double>(q[r * sh.n + i]) * x[i]);
        }
        const double want = exact * scale[r];
        // Any summation order of float products: (n + 2) u sum |q x|.
        double tol = 1.2e-7 * static_cast<double>(sh.n + 2) * mag * scale[r];
        if (ops.head_group > 1) {
          // The integer path: the rounding of x to 2^-s (max|x| < 2^(31-s))
          // and the final roundings.
          double amax = 0;
          for (float v : x) amax = std::max(amax, std::fabs(double{v}));
          tol = 128.0 * static_cast<double>(sh.n) * amax * 0x1p-31 * scale[r] +
                std::fabs(want) * 2.4e-7;
        }
        EXPECT_NEAR(out[r], want, tol + 1e-300) << "row " << r;
      }
      // Every split at a group boundary gives the same values.
      const size_t group = static_cast<size_t>(ops.head_group);
      const size_t group_bytes = HeadPackedBytes(ops, 1, group, sh.n);
      for (size_t split = group; split < sh.rows; split += group) {
        std::vector<float> parts(sh.rows);
        ops.head_i8(reinterpret_cast<const int8_t*>(packed.p), scale.data(),
                    sums.data(), split, sh.n, x.data(), work.p, parts.data());
        ops.head_i8(reinterpret_cast<const int8_t*>(packed.p + split / group *
                                                                   group_bytes),
                    scale.data() + split, sums.data() + split, sh.rows - split,
                    sh.n, x.data(), work.p, parts.data() + split);
        EXPECT_EQ(std::memcmp(parts.data(), out.data(), 4 * sh.rows), 0)
            << "split at " << split;
      }
      // The layout round trip.
      std::vector<int8_t> row(sh.n);
      for (size_t r = 0; r < sh.rows; ++r) {
        CopyHeadRow(ops, 1, packed.p, sh.n, r, row.data());
        ASSERT_EQ(std::memcmp(row.data(), q.data() + r * sh.n, sh.n), 0);
      }
    }
  }
}

TEST_P(LmMathTest, HeadF16MatchesAFloat64SumAndRowSplitsDoNotMatter) {
  const Ops& ops = *GetParam();
  struct Shape {
    size_t rows, n;
  };
  const Shape shapes[] = {{1, 1}, {5, 31}, {7, 32}, {9, 33}, {17, 2560}};
  Rng rng{11};
  for (const Shape& sh : shapes) {
    SCOPED_TRACE("rows " + std::to_string(sh.rows) + " n " +
                 std::to_string(sh.n));
    std::vector<uint16_t> h(sh.rows * sh.n);
    for (uint16_t& v : h) v = FloatToHalf(rng.Uniform() * 4);
    const std::vector<float> x = Input(sh.n, rng, 0);
    Aligned packed(HeadPackedBytes(ops, 2, sh.rows, sh.n));
    PackHead(ops, 2, h.data(), sh.rows, sh.n, packed.p, nullptr);
    Aligned work(HeadWorkBytes(sh.n));
    std::vector<float> out(sh.rows);
    ops.head_f16(reinterpret_cast<const uint16_t*>(packed.p), sh.rows, sh.n,
                 x.data(), work.p, out.data());
    for (size_t r = 0; r < sh.rows; ++r) {
      double exact = 0, mag = 0;
      for (size_t i = 0; i < sh.n; ++i) {
        const double p = static_cast<double>(HalfToFloat(h[r * sh.n + i])) *
                         static_cast<double>(x[i]);
        exact += p;
        mag += std::fabs(p);
      }
      EXPECT_NEAR(out[r], exact,
                  1.2e-7 * static_cast<double>(sh.n + 2) * mag + 1e-30)
          << "row " << r;
    }
    const size_t group = static_cast<size_t>(ops.head_group);
    const size_t group_bytes = HeadPackedBytes(ops, 2, group, sh.n);
    for (size_t split = group; split < sh.rows; split += group) {
      std::vector<float> parts(sh.rows);
      ops.head_f16(reinterpret_cast<const uint16_t*>(packed.p), split, sh.n,
                   x.data(), work.p, parts.data());
      ops.head_f16(reinterpret_cast<const uint16_t*>(
                       packed.p + split / group * group_bytes),
                   sh.rows - split, sh.n, x.data(), work.p,
                   parts.data() + split);
      EXPECT_EQ(std::memcmp(parts.data(), out.data(), 4 * sh.rows), 0)
          << "split at " << split;
    }
    std::vector<uint16_t> row(sh.n);
    for (size_t r = 0; r < sh.rows; ++r) {
      CopyHeadRow(ops, 2, packed.p, sh.n, r, row.data());
      ASSERT_EQ(std::memcmp(row.data(), h.data() + r * sh.n, 2 * sh.n), 0);
    }
  }
}

TEST_P(LmMathTest, HeadI8OfZerosIsZeroAndOfNonFiniteIsNotFinite) {
  const Ops& ops = *GetParam();
  const size_t rows = 6, n = 100;
  std::vector<int8_t> q(rows * n);
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<int8_t>(i * 37);
  std::vector<float> scale(rows, 0.5f), x(n, 0.0f), out(rows, 1.0f);
  Aligned packed(HeadPackedBytes(ops, 1, rows, n));
  std::vector<int32_t> sums(rows);
  PackHead(ops, 1, q.data(), rows, n, packed.p, sums.data());
  Aligned work(HeadWorkBytes(n));
  ops.head_i8(reinterpret_cast<const int8_t*>(packed.p), scale.data(),
              sums.data(), rows, n, x.data(), work.p, out.data());
  for (float v : out) EXPECT_EQ(v, 0.0f);
  x[17] = std::numeric_limits<float>::infinity();
  x[3] = -1.0f;
  ops.head_i8(reinterpret_cast<const int8_t*>(packed.p), scale.data(),
              sums.data(), rows, n, x.data(), work.p, out.data());
  for (float v : out) EXPECT_FALSE(std::isfinite(v));
}

TEST_P(LmMathTest, ElementWiseLoopsEqualThePortableOnesBitForBit) {
  const Ops& ops = *GetParam();
  const Ops& ref = PortableOps();
  Rng rng{3};
  for (size_t n : {size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{100}}) {
    std::vector<int32_t> acc(n);
    std::vector<float> y(n), g(n), x(n);
    for (size_t i = 0; i < n; ++i) {
      acc[i] = static_cast<int32_t>(rng.Next() % 200001) - 100000;
      y[i] = i % 5 == 0 ? (i % 2 ? -0.0f : 0.0f) : rng.Uniform() * 50;
      g[i] = rng.Uniform();
      x[i] = rng.Uniform() * 9;
    }
    y[0] = std::numeric_limits<float>::quiet_NaN();
    const float s = 0.0123f;
    using Loop = void (*)(const int32_t*, float, float*, size_t);
    for (auto pick :
         {+[](const Ops& o) -> Loop { return o.dequant_set; },
          +[](const Ops& o) -> Loop { return o.dequant_add; },
          +[](const Ops& o) -> Loop { return o.dequant_relu2_gate; }}) {
      std::vector<float> a = y, b = y;
      pick(ops)(acc.data(), s, a.data(), n);
      pick(ref)(acc.data(), s, b.data(), n);
      EXPECT_EQ(std::memcmp(a.data(), b.data(), 4 * n), 0) << "n " << n;
    }
    {
      // The SiLU gate: the AVX-512 set's exp is a polynomial of its own.
      std::vector<float> a = y, b = y;
      a[0] = b[0] = 1.0f;
      ops.dequant_silu_gate(acc.data(), s, a.data(), n);
      ref.dequant_silu_gate(acc.data(), s, b.data(), n);
      for (size_t i = 0; i < n; ++i) {
        EXPECT_NEAR(a[i], b[i], 1e-6f * std::fabs(b[i])) << i;
      }
    }
    std::vector<float> a(n), b(n);
    ops.scale_mul(x.data(), 0.37f, g.data(), a.data(), n);
    ref.scale_mul(x.data(), 0.37f, g.data(), b.data(), n);
    EXPECT_EQ(std::memcmp(a.data(), b.data(), 4 * n), 0) << "n " << n;
  }
}

TEST_P(LmMathTest, AttendMatchesAFloat64SoftmaxWhateverTheGrouping) {
  const Ops& ops = *GetParam();
  Rng rng{5};
  constexpr size_t kHeads = 5;
  for (size_t d : {size_t{16}, size_t{24}, size_t{128}, size_t{200}}) {
    for (size_t count_a : {size_t{0}, size_t{1}, size_t{5}, size_t{70}}) {
      for (size_t count_b : {size_t{1}, size_t{3}}) {
        SCOPED_TRACE("d " + std::to_string(d) + " counts " +
                     std::to_string(count_a) + "+" + std::to_string(count_b));
        const size_t count = count_a + count_b;
        std::vector<uint16_t> k(count * d), v(count * d);
        for (uint16_t& h : k) h = FloatToHalf(rng.Uniform() * 2);
        for (uint16_t& h : v) h = FloatToHalf(rng.Uniform() * 5);
        std::vector<float> q(kHeads * d);
        for (float& x : q) x = rng.Uniform() * 2;
        const float scale = 1.0f / std::sqrt(static_cast<float>(d));
        std::vector<float> scores(kHeads * count), out(kHeads * d);
        ops.attend(q.data(), kHeads, d, scale, k.data(), v.data(), count_a,
                   k.data() + count_a * d, v.data() + count_a * d, count_b,
                   scores.data(), out.data());
        for (size_t h = 0; h < kHeads; ++h) {
          // Alone, the head gives the same values as in the group.
          std::vector<float> alone(d);
          ops.attend(q.data() + h * d, 1, d, scale, k.data(), v.data(), count_a,
                     k.data() + count_a * d, v.data() + count_a * d, count_b,
                     scores.data(), alone.data());
          EXPECT_EQ(std::memcmp(alone.data(), out.data() + h * d, 4 * d), 0)
              << "head " << h;
          std::vector<double> w(count);
          double mx = -1e300, sum = 0;
          for (size_t t = 0; t < count; ++t) {
            double dot = 0;
            for (size_t i = 0; i < d; ++i) {
              dot +=
                  static_cast<double>(HalfToFloat(k[t * d + i])) * q[h * d + i];
            }
            w[t] = dot * scale;
            mx = std::max(mx, w[t]);
          }
          for (double& x : w) sum += (x = std::exp(x - mx));
          for (size_t i = 0; i < d; ++i) {
            double want = 0, mag = 0;
            for (size_t t = 0; t < count; ++t) {
              const double p = w[t] / sum * HalfToFloat(v[t * d + i]);
              want += p;
              mag += std::fabs(p);
            }
            EXPECT_NEAR(out[h * d + i], want, 1e-5 * mag + 1e-6)
                << "head " << h << " value " << i;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(lm_math, LmMathTest,
                         ::testing::ValuesIn(SupportedOps()),
                         [](const ::testing::TestParamInfo<const Ops*>& i) {
                           return std::string(i.param->name);
                         });

}  // namespace
}  // namespace ternd::runtime::lm_math
