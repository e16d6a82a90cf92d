// Every ternary kernel variant compiled into this binary, bit-exact (int32)
// against the reference kernel, over the awkward shapes and extreme values of
// the kernel contract. The list of variants is AllTernaryKernels(): a new
// variant is tested by being listed there. A variant the running CPU cannot
// execute is skipped with a message naming the instruction set.
//
// The reference itself is checked against a plain int8 dot product of the
// unpacked weights, so that every test here can fail.
//
// Cost: the full K x N grid of kSizes (22 x 22 shapes) runs at batch 1 and 5
// (the matrix-vector path and a register-blocked batch path), one test per
// (variant, K) so ctest can spread them; every batch 1..16 runs on a smaller
// set of shapes, and the extreme-value cases on the block edges. The full
// cross product of every shape with every batch would cost ~8x more for no
// new code path (the kernels pick their blocking by batch, not by shape).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "runtime/format.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/tq1_pack.h"
#include "runtime/ops.h"
#include "runtime/ternary_pack.h"

namespace ternd::runtime {
namespace {

constexpr size_t kSizes[] = {1,   2,   3,   5,    7,    8,   15,  16,
                             17,  31,  33,  63,   64,   65,  127, 129,
                             255, 256, 257, 1023, 2560, 6912};

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// 64-byte aligned, zero-filled bytes (what the runtime hands kernels).
std::unique_ptr<uint8_t[], FreeDeleter> AlignedZeros(size_t bytes) {
  const size_t rounded = (bytes + 63) / 64 * 64 + 64;
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(64, rounded));
  std::memset(p, 0, rounded);
  return std::unique_ptr<uint8_t[], FreeDeleter>(p);
}

enum class Fill { kRandom, kMinusOne, kZero, kPlusOne, kMin, kMax, kMinMax };

// One problem: ternary weights [n, k] and `batch` int8 tokens of k values.
class Problem {
 public:
  Problem(size_t n, size_t k, int batch, Fill wfill, Fill xfill, uint32_t seed)
      : n_(n),
        k_(k),
        batch_(batch),
        stride_(ActivationStride(k)),
        w_(n * k),
        canonical_(n * TernaryRowBytes(k)),
        q_(AlignedZeros(stride_ * batch)),
        sums_(batch) {
    std::mt19937 rng(seed);
    for (size_t i = 0; i < w_.size(); ++i) {
      switch (wfill) {
        case Fill::kMinusOne:
          w_[i] = -1;
          break;
        case Fill::kZero:
          w_[i] = 0;
          break;
        case Fill::kPlusOne:
          w_[i] = 1;
          break;
        default:
          w_[i] = static_cast<int8_t>(static_cast<int>(rng() % 3) - 1);
      }
    }
    PackTernary(w_.data(), n, k, canonical_.data());
    for (int b = 0; b < batch; ++b) {
      int8_t* row = x() + b * stride_;
      int32_t sum = 0;
      for (size_t c = 0; c < k; ++c) {
        int v;
        switch (xfill) {
          case Fill::kMin:
            v = -128;
            break;
          case Fill::kMax:
            v = 127;
            break;
          case Fill::kMinMax:
            v = (c + b) % 2 ? 127 : -128;
            break;
          default: {
            // A quarter of the values at the extremes.
            const uint32_t r = rng();
            v = r % 8 == 0   ? -128
                : r % 8 == 1 ? 127
                             : static_cast<int>(r >> 8) % 256 - 128;
          }
        }
        row[c] = static_cast<int8_t>(v);
        sum += v;
      }
      sums_[b] = sum;
    }
  }

  QuantizedActivations activations() const {
    return {x(), stride_, sums_.data(), batch_, k_};
  }

  // y [batch, ldy] from `kernel`, packing the weights into its layout.
  std::vector<int32_t> Run(const TernaryKernel& kernel, size_t ldy) const {
    auto packed = AlignedZeros(kernel.packed_size(n_, k_));
    kernel.pack(canonical_.data(), n_, k_, packed.get());
    // Entries past n in a row must be left alone: fill them with a marker.
    std::vector<int32_t> y(ldy * batch_, kUntouched);
    kernel.gemm(packed.get(), n_, k_, activations(), y.data(), ldy);
    return y;
  }

  // The reference kernel's answer (the specification).
  std::vector<int32_t> Reference(size_t ldy) const {
    std::vector<int32_t> y(ldy * batch_, kUntouched);
    ternary_gemm__ref(canonical_.data(), n_, k_, activations(), y.data(), ldy);
    return y;
  }

  // An independent answer: int8 dot products of the unpacked weights.
  std::vector<int32_t> PlainDot(size_t ldy) const {
    std::vector<int32_t> y(ldy * batch_, kUntouched);
    for (int b = 0; b < batch_; ++b) {
      const int8_t* xb = x() + b * stride_;
      for (size_t r = 0; r < n_; ++r) {
        int32_t acc = 0;
        for (size_t c = 0; c < k_; ++c) acc += w_[r * k_ + c] * xb[c];
        y[b * ldy + r] = acc;
      }
    }
    return y;
  }

  static constexpr int32_t kUntouched = 0x5a5a5a5a;

 private:
  int8_t* x() const { return reinterpret_cast<int8_t*>(q_.get()); }

  size_t n_, k_;
  int batch_;
  size_t stride_;
  std::vector<int8_t> w_;
  std::vector<uint8_t> canonical_;
  std::unique_ptr<uint8_t[], FreeDeleter> q_;
  std::vector<int32_t> sums_;
};

// The first differing entry, or "" when equal.
std::string FirstDifference(const std::vector<int32_t>& got,
                            const std::vector<int32_t>& want, size_t ldy) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (got[i] != want[i]) {
      return "y[b=" + std::to_string(i / ldy) +
             ", n=" + std::to_string(i % ldy) +
             "] = " + std::to_string(got[i]) + ", expected " +
             std::to_string(want[i]);
    }
  }
  return "";
}

const TernaryKernel* FindKernel(const std::string& name) {
  for (const TernaryKernel* k : AllTernaryKernels()) {
    if (name == k->name) return k;
  }
  return nullptr;
}

std::vector<std::string> KernelNames() {
  std::vector<std::string> names;
  for (const TernaryKernel* k : AllTernaryKernels()) names.push_back(k->name);
  return names;
}

// Checks `kernel` on one problem: against the reference, or for the
// reference itself against the plain dot product.
void Check(const TernaryKernel& kernel, const Problem& p, size_t n, size_t k,
           int batch, size_t ldy, const char* what) {
  const std::vector<int32_t> got = p.Run(kernel, ldy);
  const std::vector<int32_t> want =
      std::string(kernel.name) == "ref" ? p.PlainDot(ldy) : p.Reference(ldy);
  const std::string diff = FirstDifference(got, want, ldy);
  ASSERT_TRUE(diff.empty())
      << kernel.name << " " << what << " N=" << n << " K=" << k
      << " batch=" << batch << " ldy=" << ldy << ": " << diff;
}

class KernelTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    kernel_ = FindKernel(GetParam());
    ASSERT_NE(kernel_, nullptr);
    if (!kernel_->supported()) {
      GTEST_SKIP() << "variant '" << kernel_->name << "' needs " << kernel_->isa
                   << ", which this CPU lacks";
    }
  }
  const TernaryKernel* kernel_ = nullptr;
};

// Every batch 1..16 (the batch blocking and chunking paths), on shapes
// around the block edges, with ldy > n.
TEST_P(KernelTest, EveryBatch) {
  uint32_t seed = 1;
  for (size_t k : {1, 63, 257, 1023}) {
    for (size_t n : {1, 7, 17, 65}) {
      for (int batch = 1; batch <= kMaxKernelBatch; ++batch) {
        Problem p(n, k, batch, Fill::kRandom, Fill::kRandom, seed++);
        Check(*kernel_, p, n, k, batch, n + 3, "random");
      }
    }
  }
}

// All -1, all 0, all +1 and random weights against activations at the
// -128 / 127 extremes, on the block edges.
TEST_P(KernelTest, ExtremeValues) {
  const Fill wfills[] = {Fill::kMinusOne, Fill::kZero, Fill::kPlusOne,
                         Fill::kRandom};
  const Fill xfills[] = {Fill::kMin, Fill::kMax, Fill::kMinMax};
  uint32_t seed = 100;
  for (size_t k : {1, 255, 256, 257, 2560, 6912}) {
    for (size_t n : {3, 17}) {
      for (int batch : {1, 8, 16}) {
        for (Fill wf : wfills) {
          for (Fill xf : xfills) {
            Problem p(n, k, batch, wf, xf, seed++);
            Check(*kernel_, p, n, k, batch, n, "extreme");
          }
        }
      }
    }
  }
}

// The largest |y| the contract allows: K = kMaxFeatures, every product
// +-128 in the same direction. Checked against the closed form too.
TEST_P(KernelTest, WorstCaseOverflow) {
  const size_t k = kMaxFeatures;
  const size_t n = 9;  // a full row group plus one
  for (Fill wf : {Fill::kMinusOne, Fill::kPlusOne}) {
    Problem p(n, k, 2, wf, Fill::kMin, 7);
    const std::vector<int32_t> got = p.Run(*kernel_, n);
    const int64_t w = wf == Fill::kPlusOne ? 1 : -1;
    const int32_t want = static_cast<int32_t>(w * -128 * int64_t{k});
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], want) << kernel_->name << " K=" << k << " at " << i;
    }
  }
  Problem p(n, k, 3, Fill::kRandom, Fill::kMinMax, 8);
  Check(*kernel_, p, n, k, 3, n, "max K");
}

// The 1.6-bit variants' own block edges (320 columns; the last block's
// activations past the row stride), every batch 1..16.
class Tq1KernelTest : public KernelTest {};

std::vector<std::string> Tq1KernelNames() {
  std::vector<std::string> names;
  for (const TernaryKernel* k : AllTernaryKernels()) {
    if (IsTq1Kernel(*k)) names.push_back(k->name);
  }
  return names;
}

TEST_P(Tq1KernelTest, BlockEdges) {
  uint32_t seed = 500;
  for (size_t k : {319, 320, 321, 639, 640, 641, 960, 1279, 1281}) {
    for (size_t n : {1, 8, 9}) {
      for (int batch = 1; batch <= kMaxKernelBatch; ++batch) {
        Problem p(n, k, batch, Fill::kRandom, Fill::kRandom, seed++);
        Check(*kernel_, p, n, k, batch, n + 1, "tq1 edge");
      }
    }
  }
}

// The full K x N grid at batch 1 and 5, one test per K.
class KernelGridTest
    : public ::testing::TestWithParam<std::tuple<std::string, size_t>> {};

TEST_P(KernelGridTest, AllN) {
  const TernaryKernel* kernel = FindKernel(std::get<0>(GetParam()));
  ASSERT_NE(kernel, nullptr);
  if (!kernel->supported()) {
    GTEST_SKIP() << "variant '" << kernel->name << "' needs " << kernel->isa
                 << ", which this CPU lacks";
  }
  const size_t k = std::get<1>(GetParam());
  uint32_t seed = static_cast<uint32_t>(k) * 977;
  for (size_t n : kSizes) {
    for (int batch : {1, 5}) {
      Problem p(n, k, batch, Fill::kRandom, Fill::kRandom, seed++);
      Check(*kernel, p, n, k, batch, n, "grid");
    }
  }
}

// The variant's quantizer gives QuantizeActivations' bytes, row sums and
// scales exactly: every K of the sweep, ties at .5, zeros, an all-zero row,
// a row whose absmax is negative, tiny and huge magnitudes.
TEST_P(KernelTest, QuantizerMatchesQuantizeActivations) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr int kBatch = 5;
  for (size_t k : kSizes) {
    const size_t stride = ActivationStride(k);
    std::vector<float> x(kBatch * k);
    for (size_t c = 0; c < k; ++c) {
      x[c] = 0.0f;  // zeros
      x[k + c] =
          static_cast<float>(static_cast<int>(rng() % 255) - 127);  // ties
      x[2 * k + c] = normal(rng) * 1e-30f;
      x[3 * k + c] = normal(rng) * 1e30f;
      x[4 * k + c] = c == k / 2 ? -3.0f : normal(rng);
    }
    auto got_q = AlignedZeros(stride * kBatch);
    auto want_q = AlignedZeros(stride * kBatch);
    std::memset(got_q.get(), 0x7f, stride * kBatch);  // padding must be zeroed
    std::vector<int32_t> got_sums(kBatch), want_sums(kBatch);
    std::vector<float> got_scale(kBatch), want_scale(kBatch);
    kernel_->quantize(x.data(), k, kBatch, k,
                      reinterpret_cast<int8_t*>(got_q.get()), stride,
                      got_sums.data(), got_scale.data());
    QuantizeActivations(x.data(), k, kBatch, k,
                        reinterpret_cast<int8_t*>(want_q.get()), stride,
                        want_sums.data(), want_scale.data());
    for (size_t i = 0; i < stride * kBatch; ++i) {
      ASSERT_EQ(got_q[i], want_q[i]) << kernel_->name << " K=" << k << " row "
                                     << i / stride << " col " << i % stride;
    }
    EXPECT_EQ(got_sums, want_sums) << "K=" << k;
    EXPECT_EQ(got_scale, want_scale) << "K=" << k;
  }
}

TEST_P(KernelTest, PassesSelfTestAndCanBeForced) {
  Status self_test = SelfTestTernaryKernel(*kernel_);
  EXPECT_TRUE(self_test.ok()) << self_test.message();
  Result<const TernaryKernel*> forced = SelectTernaryKernel(kernel_->name);
  ASSERT_TRUE(forced.ok()) << forced.status().message();
  EXPECT_EQ(*forced, kernel_);
}

// A variant's name as a test name: "avx512vnni-1.6" -> "avx512vnni_1_6".
std::string TestName(std::string name) {
  for (char& c : name) {
    if (c == '-' || c == '.') c = '_';
  }
  return name;
}

std::string ParamName(const ::testing::TestParamInfo<std::string>& info) {
  return TestName(info.param);
}

INSTANTIATE_TEST_SUITE_P(Variants, KernelTest,
                         ::testing::ValuesIn(KernelNames()), ParamName);
INSTANTIATE_TEST_SUITE_P(Variants, Tq1KernelTest,
                         ::testing::ValuesIn(Tq1KernelNames()), ParamName);

INSTANTIATE_TEST_SUITE_P(
    Variants, KernelGridTest,
    ::testing::Combine(::testing::ValuesIn(KernelNames()),
                       ::testing::ValuesIn(kSizes)),
    [](const ::testing::TestParamInfo<std::tuple<std::string, size_t>>& info) {
      return TestName(std::get<0>(info.param)) + "_K" +
             std::to_string(std::get<1>(info.param));
    });

// Restores TERND_KERNEL when a test changed it.
class ScopedKernelEnv {
 public:
  explicit ScopedKernelEnv(const char* value) {
    if (const char* old = std::getenv(kKernelEnvVar)) saved_ = old;
    had_ = std::getenv(kKernelEnvVar) != nullptr;
    if (value) {
      setenv(kKernelEnvVar, value, 1);
    } else {
      unsetenv(kKernelEnvVar);
    }
  }
  ~ScopedKernelEnv() {
    if (had_) {
      setenv(kKernelEnvVar, saved_.c_str(), 1);
    } else {
      unsetenv(kKernelEnvVar);
    }
  }

 private:
  bool had_ = false;
  std::string saved_;
};

TEST(KernelDispatch, AutoPicksTheFirstSupportedVariant) {
  ScopedKernelEnv env(nullptr);
  const TernaryKernel* best = nullptr;
  for (const TernaryKernel* k : AllTernaryKernels()) {
    if (k->supported() && !IsTq1Kernel(*k)) {
      best = k;
      break;
    }
  }
  ASSERT_NE(best, nullptr);
  Result<const TernaryKernel*> chosen = SelectTernaryKernel("auto");
  ASSERT_TRUE(chosen.ok()) << chosen.status().message();
  EXPECT_STREQ((*chosen)->name, best->name);
  std::printf("auto picks '%s' on this CPU\n", (*chosen)->name);
}

TEST(Tq1Layout, EveryByteDecodesToItsCodes) {
  for (int v = 0; v < 243; ++v) {
    int c[5];
    for (int j = 4, r = v; j >= 0; --j, r /= 3) c[j] = r % 3;
    const uint8_t q = Tq1Encode(c);
    for (int j = 0; j < 5; ++j) {
      ASSERT_EQ(Tq1Code(q, j), c[j]) << "v=" << v << " j=" << j;
    }
  }
}

TEST(Tq1Layout, TakesAFifthFewerBytesThanTwoBits) {
  // BitNet b1.58 2B4T shapes: 1.6 bits per weight against 2 (K = 6912
  // pads its last 320-column block: 1.63).
  for (auto [n, k] : {std::pair<size_t, size_t>{2560, 2560},
                      {6912, 2560},
                      {2560, 6912},
                      {640, 2560}}) {
    EXPECT_LE(Tq1PackedSize(n, k) * 100, n * k / 4 * 82) << n << "x" << k;
  }
}

TEST(Tq1Layout, EveryVariantHasACounterpart) {
  for (const TernaryKernel* k : AllTernaryKernels()) {
    const TernaryKernel* tq1 = Tq1Counterpart(*k);
    if (IsTq1Kernel(*k)) {
      EXPECT_EQ(tq1, k);
    }
    if (tq1 != nullptr) {
      EXPECT_TRUE(IsTq1Kernel(*tq1)) << k->name;
    }
  }
  EXPECT_EQ(Tq1Counterpart(kTernaryKernelRef), &kTernaryKernelRefTq1);
}

TEST(KernelDispatch, ReferenceIsLastAndAlwaysSupported) {
  auto all = AllTernaryKernels();
  ASSERT_FALSE(all.empty());
  EXPECT_STREQ(all.back()->name, "ref");
  EXPECT_TRUE(all.back()->supported());
}

TEST(KernelDispatch, EnvironmentForcesAVariantUnderAuto) {
  ScopedKernelEnv env("ref");
  Result<const TernaryKernel*> chosen = SelectTernaryKernel("auto");
  ASSERT_TRUE(chosen.ok()) << chosen.status().message();
  EXPECT_STREQ((*chosen)->name, "ref");
}

TEST(KernelDispatch, UnknownNameIsAnErrorListingTheVariants) {
  ScopedKernelEnv env(nullptr);
  Result<const TernaryKernel*> chosen = SelectTernaryKernel("sse9");
  ASSERT_FALSE(chosen.ok());
  EXPECT_NE(std::string(chosen.status().message()).find("ref"),
            std::string::npos)
      << chosen.status().message();
}

// The self-test must catch a wrong kernel, or trusting it means nothing.
void OffByOneGemm(const uint8_t* packed, size_t n, size_t k,
                  const QuantizedActivations& x, int32_t* y, size_t ldy) {
  ternary_gemm__ref(packed, n, k, x, y, ldy);
  y[(x.batch - 1) * ldy + n - 1] += 1;
}

TEST(KernelDispatch, SelfTestRejectsAWrongKernel) {
  TernaryKernel broken = kTernaryKernelRef;
  broken.name = "broken";
  broken.gemm = OffByOneGemm;
  EXPECT_FALSE(SelfTestTernaryKernel(broken).ok());
}

}  // namespace
}  // namespace ternd::runtime
