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
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "runtime/format.h"
#include "runtime/kernels/cpu_features.h"
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

#if defined(TERND_HAS_AVXVNNI_EVEX)
}  // namespace
// The avxvnni source built for the EVEX encoding
// (tests/kernels/CMakeLists.txt).
extern const TernaryKernel kTernaryKernelAvxVnniEvex;
namespace {
#endif

// Variants of this test binary only, not of dispatch.
std::vector<const TernaryKernel*> TestOnlyKernels() {
  return {
#if defined(TERND_HAS_AVXVNNI_EVEX)
    &kTernaryKernelAvxVnniEvex,
#endif
  };
}

// Every variant of AllTernaryKernels(), then the test-only ones.
std::vector<const TernaryKernel*> TestedKernels() {
  std::vector<const TernaryKernel*> all(AllTernaryKernels().begin(),
                                        AllTernaryKernels().end());
  for (const TernaryKernel* k : TestOnlyKernels()) all.push_back(k);
  return all;
}

bool IsTestOnly(const TernaryKernel& kernel) {
  for (const TernaryKernel* k : TestOnlyKernels()) {
    if (k == &kernel) return true;
  }
  return false;
}

const TernaryKernel* FindKernel(const std::string& name) {
  for (const TernaryKernel* k : TestedKernels()) {
    if (name == k->name) return k;
  }
  return nullptr;
}

std::vector<std::string> KernelNames() {
  std::vector<std::string> names;
  for (const TernaryKernel* k : TestedKernels()) names.push_back(k->name);
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
// a row whose absmax is negative, tiny and huge magnitudes, denormals and a
// row whose 127 / absmax overflows float32 (both below kQuantizeMinAmax: all
// zeros, where they once gave NaN products, converted differently by each
// instruction set), and a row exactly at kQuantizeMinAmax.
TEST_P(KernelTest, QuantizerMatchesQuantizeActivations) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr int kBatch = 8;
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
      x[5 * k + c] = c % 3 == 0 ? 0.0f : normal(rng) * 1e-39f;  // denormals
      x[6 * k + c] = c % 3 == 0 ? 0.0f : normal(rng) * 1e-37f;
      x[7 * k + c] =
          c == 0 ? -kQuantizeMinAmax : (c % 3 == 0 ? 0.0f : 0x1p-101f);
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
    for (int b : {5, 6}) {
      EXPECT_EQ(want_scale[b], 0.0f) << "row " << b << " K=" << k;
      EXPECT_EQ(want_sums[b], 0) << "row " << b << " K=" << k;
    }
    EXPECT_GT(want_scale[7], 0.0f) << "K=" << k;
    EXPECT_EQ(static_cast<int8_t>(want_q[7 * stride]), -127) << "K=" << k;
  }
}

TEST_P(KernelTest, PassesSelfTestAndCanBeForced) {
  Status self_test = SelfTestTernaryKernel(*kernel_);
  EXPECT_TRUE(self_test.ok()) << self_test.message();
  if (IsTestOnly(*kernel_)) return;  // not a name dispatch knows
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

// Forcing a variant the CPU cannot run names the instruction set it needs.
TEST(KernelDispatch, ForcingAnUnsupportedVariantNamesItsInstructionSet) {
  ScopedKernelEnv env(nullptr);
  int checked = 0;
  for (const TernaryKernel* k : AllTernaryKernels()) {
    if (k->supported()) continue;
    Result<const TernaryKernel*> chosen = SelectTernaryKernel(k->name);
    ASSERT_FALSE(chosen.ok()) << k->name;
    EXPECT_EQ(chosen.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(std::string(chosen.status().message())
                  .find(std::string("needs ") + k->isa +
                        ", which this CPU "
                        "lacks"),
              std::string::npos)
        << chosen.status().message();
    ++checked;
  }
  if (checked == 0) {
    GTEST_SKIP() << "this CPU runs every variant compiled in; the fake CPUs "
                    "below check the refusals";
  }
}

// CPUID words of the CPU classes dispatch has to serve (the bits the
// detection reads; see X86CpuidWords).
namespace cpuid {
constexpr uint32_t kSsse3 = 1u << 9, kSse41 = 1u << 19, kSse42 = 1u << 20;
constexpr uint32_t kOsxsave = 1u << 27, kAvx = 1u << 28;
constexpr uint32_t kFmaF16c = (1u << 12) | (1u << 29);
constexpr uint32_t kAvx2 = 1u << 5, kAvx512F = 1u << 16, kAvx512Bw = 1u << 30,
                   kAvx512Vl = 1u << 31;
constexpr uint32_t kVnni512 = 1u << 11;  // leaf 7 ECX
constexpr uint32_t kAvxVnni = 1u << 4;   // leaf 7 subleaf 1 EAX
constexpr uint64_t kXcr0Ymm = 0x7, kXcr0Zmm = 0xe7;
constexpr uint32_t kSse4 = kSsse3 | kSse41 | kSse42;
constexpr uint32_t kAvx512 = kAvx2 | kAvx512F | kAvx512Bw | kAvx512Vl;

// Goldmont Plus / Tremont (Gemini Lake, Elkhart Lake, Jasper Lake): SSE4.2
// and SSSE3, no AVX.
constexpr X86CpuidWords kAtom{kSse4, 0, 0, 0, 0};
// Haswell .. Comet Lake, Zen 1-3: AVX2, no AVX-512.
constexpr X86CpuidWords kAvx2Cpu{kSse4 | kOsxsave | kAvx | kFmaF16c, kAvx2, 0,
                                 0, kXcr0Ymm};
// Skylake-SP: AVX-512 F, BW, VL without VNNI.
constexpr X86CpuidWords kAvx512NoVnni{kSse4 | kOsxsave | kAvx | kFmaF16c,
                                      kAvx512, 0, 0, kXcr0Zmm};
// Ice Lake, Zen 4: AVX-512 with VNNI, no AVX-VNNI.
constexpr X86CpuidWords kAvx512VnniCpu{kSse4 | kOsxsave | kAvx | kFmaF16c,
                                       kAvx512, kVnni512, 0, kXcr0Zmm};
// The same CPU under an OS that does not save the ZMM state.
constexpr X86CpuidWords kAvx512VnniNoOsZmm{kSse4 | kOsxsave | kAvx | kFmaF16c,
                                           kAvx512, kVnni512, 0, kXcr0Ymm};
// Alder Lake and later client cores: AVX2 and AVX-VNNI, no AVX-512.
constexpr X86CpuidWords kAlderLake{kSse4 | kOsxsave | kAvx | kFmaF16c, kAvx2, 0,
                                   cpuid::kAvxVnni, kXcr0Ymm};
// AVX set but not OSXSAVE: the OS does not manage YMM state.
constexpr X86CpuidWords kAvxWithoutOsxsave{kSse4 | kAvx, kAvx2, 0, 0, 0};
}  // namespace cpuid

std::string Flags(const CpuFeatures& f) {
  std::string s;
  for (auto [on, name] : {std::pair{f.ssse3, "ssse3"},
                          {f.avx2, "avx2"},
                          {f.avx512_vnni, "avx512_vnni"},
                          {f.avx_vnni, "avx_vnni"},
                          {f.fma_f16c, "fma_f16c"},
                          {f.neon, "neon"},
                          {f.dotprod, "dotprod"}}) {
    if (on) s += s.empty() ? name : std::string(" ") + name;
  }
  return s;
}

TEST(CpuFeatures, DecodesTheCpuidOfEachCpuClass) {
  EXPECT_EQ(Flags(DecodeX86Cpuid(cpuid::kAtom)), "ssse3");
  EXPECT_EQ(Flags(DecodeX86Cpuid(cpuid::kAvx2Cpu)), "ssse3 avx2 fma_f16c");
  EXPECT_EQ(Flags(DecodeX86Cpuid(cpuid::kAvx512NoVnni)), "ssse3 avx2 fma_f16c");
  EXPECT_EQ(Flags(DecodeX86Cpuid(cpuid::kAvx512VnniCpu)),
            "ssse3 avx2 avx512_vnni fma_f16c");
  EXPECT_EQ(Flags(DecodeX86Cpuid(cpuid::kAvx512VnniNoOsZmm)),
            "ssse3 avx2 fma_f16c");
  EXPECT_EQ(Flags(DecodeX86Cpuid(cpuid::kAlderLake)),
            "ssse3 avx2 avx_vnni fma_f16c");
  EXPECT_EQ(Flags(DecodeX86Cpuid(cpuid::kAvxWithoutOsxsave)), "ssse3");
  // FMA and F16C are two bits, both needed.
  for (uint32_t bit : {1u << 12, 1u << 29}) {
    X86CpuidWords w = cpuid::kAvx2Cpu;
    w.leaf1_ecx &= ~bit;
    EXPECT_FALSE(DecodeX86Cpuid(w).fma_f16c) << std::hex << bit;
  }
  EXPECT_EQ(Flags(DecodeX86Cpuid(X86CpuidWords{})), "");
  // Each of F, BW, VL is needed besides VNNI.
  for (uint32_t bit : {cpuid::kAvx512F, cpuid::kAvx512Bw, cpuid::kAvx512Vl}) {
    X86CpuidWords w = cpuid::kAvx512VnniCpu;
    w.leaf7_ebx &= ~bit;
    EXPECT_FALSE(DecodeX86Cpuid(w).avx512_vnni) << std::hex << bit;
  }
}

#if defined(__x86_64__) && defined(__linux__)
// The real detection against the kernel's own reading of CPUID.
TEST(CpuFeatures, DetectionAgreesWithProcCpuinfo) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  std::set<std::string> flags;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string w; words >> w;) flags.insert(w);
    break;
  }
  if (flags.empty()) GTEST_SKIP() << "no flags line in /proc/cpuinfo";
  const CpuFeatures& f = DetectedCpuFeatures();
  EXPECT_EQ(f.ssse3, flags.count("ssse3") == 1);
  EXPECT_EQ(f.avx2, flags.count("avx2") == 1);
  EXPECT_EQ(f.avx512_vnni, flags.count("avx512f") && flags.count("avx512bw") &&
                               flags.count("avx512vl") &&
                               flags.count("avx512_vnni"));
  EXPECT_EQ(f.avx_vnni, flags.count("avx_vnni") && flags.count("avx2"));
  EXPECT_EQ(f.fma_f16c,
            flags.count("fma") && flags.count("f16c") && flags.count("avx"));
  EXPECT_EQ(&GetCpuFeatures(), &DetectedCpuFeatures());
  std::printf("this CPU: %s\n", Flags(f).c_str());
}
#endif

// A CPU dispatch is checked on: its features, the 2-bit variant auto must
// pick there, and variants that must be refused (naming their ISA).
struct FakeCpu {
  const char* name;
  CpuFeatures features;
  const char* picks;
  std::vector<std::string> refused;
};

std::vector<FakeCpu> FakeCpus() {
  return {
#if defined(__x86_64__)
    {"Atom",
     DecodeX86Cpuid(cpuid::kAtom),
     "ssse3",
     {"avx2", "avx2-1.6", "avx512vnni", "avx512vnni-1.6"}},
        {"Avx2",
         DecodeX86Cpuid(cpuid::kAvx2Cpu),
         "avx2",
         {"avx512vnni", "avx512vnni-1.6"}},
        {"Avx512WithoutVnni",
         DecodeX86Cpuid(cpuid::kAvx512NoVnni),
         "avx2",
         {"avx512vnni", "avx512vnni-1.6"}},
        {"Avx512VnniWithoutOsZmmState",
         DecodeX86Cpuid(cpuid::kAvx512VnniNoOsZmm),
         "avx2",
         {"avx512vnni"}},
        {"AlderLake",
         DecodeX86Cpuid(cpuid::kAlderLake),
         "avx2",
         {"avx512vnni", "avx512vnni-1.6"}},
        {"Avx512Vnni",
         DecodeX86Cpuid(cpuid::kAvx512VnniCpu),
         "avx512vnni",
         {"avxvnni"}},
        {"NoSimd", CpuFeatures{}, "ref", {"ssse3", "avx2", "avx512vnni"}},
#elif defined(__aarch64__)
    {"CortexA53", CpuFeatures{.neon = true}, "neon", {"neondot"}},
        {"CortexA76",
         CpuFeatures{.neon = true, .dotprod = true},
         "neondot",
         {}},
        {"NoSimd", CpuFeatures{}, "ref", {"neon", "neondot"}},
#else
    // armhf and any other architecture: the reference only.
    {"NoSimd", CpuFeatures{}, "ref", {}},
#endif
  };
}

void PrintTo(const FakeCpu& cpu, std::ostream* os) { *os << cpu.name; }

class KernelDispatchOnFakeCpu : public ::testing::TestWithParam<FakeCpu> {};

TEST_P(KernelDispatchOnFakeCpu, PicksAndRefuses) {
  const FakeCpu& cpu = GetParam();
  const std::string missing =
      MissingCpuFeatures(DetectedCpuFeatures(), cpu.features);
  if (!missing.empty()) {
    GTEST_SKIP() << "cannot present the " << cpu.name << " feature set ("
                 << Flags(cpu.features) << "): this CPU lacks " << missing
                 << ", and dispatch self-tests the variant it picks";
  }
  ScopedKernelEnv env(nullptr);
  ScopedFakeCpuFeatures fake(cpu.features);
  Result<const TernaryKernel*> chosen = SelectTernaryKernel("auto");
  ASSERT_TRUE(chosen.ok()) << chosen.status().message();
  EXPECT_STREQ((*chosen)->name, cpu.picks);
  for (const std::string& name : cpu.refused) {
    const TernaryKernel* k = FindKernel(name);
    ASSERT_NE(k, nullptr) << name;
    Result<const TernaryKernel*> forced = SelectTernaryKernel(name);
    ASSERT_FALSE(forced.ok()) << name << " on " << cpu.name;
    EXPECT_NE(std::string(forced.status().message())
                  .find(std::string("needs ") + k->isa +
                        ", which this CPU "
                        "lacks"),
              std::string::npos)
        << forced.status().message();
  }
  // Every variant the fake CPU supports can still be forced.
  for (const TernaryKernel* k : AllTernaryKernels()) {
    if (!k->supported()) continue;
    Result<const TernaryKernel*> forced = SelectTernaryKernel(k->name);
    EXPECT_TRUE(forced.ok()) << k->name << ": " << forced.status().message();
  }
}

INSTANTIATE_TEST_SUITE_P(Cpus, KernelDispatchOnFakeCpu,
                         ::testing::ValuesIn(FakeCpus()),
                         [](const ::testing::TestParamInfo<FakeCpu>& info) {
                           return std::string(info.param.name);
                         });

TEST(KernelDispatch, FakeCpuEndsWithItsScope) {
  {
    ScopedFakeCpuFeatures fake(CpuFeatures{});
    EXPECT_EQ(Flags(GetCpuFeatures()), "");
    EXPECT_TRUE(kTernaryKernelRef.supported());
  }
  EXPECT_EQ(&GetCpuFeatures(), &DetectedCpuFeatures());
}

TEST(KernelDispatchDeathTest, FakeCpuCannotHaveAFeatureThisCpuLacks) {
  CpuFeatures more = DetectedCpuFeatures();
#if defined(__x86_64__)
  more.neon = true;
#else
  more.avx2 = true;
#endif
  EXPECT_DEATH(ScopedFakeCpuFeatures fake(more), "MissingCpuFeatures");
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
