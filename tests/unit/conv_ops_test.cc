// The convolutional ops (format version 3) against references written here
// with direct loops, independently of runtime/ops.cc's im2col and window
// walks.
//
// - CONV2D / CONV1D with the quantization of docs/model-format.md (one
//   absmax per sample) and exact int64 sums must equal the runtime bit for
//   bit, for every kernel variant the CPU runs. Against real arithmetic
//   (no activation quantization) output (p, n) differs by at most
//   scale_n * sum |W_n| * d / 2 (each code rounds by half a step d); the
//   test computes that bound and checks that it is not vacuous.
// - The float ops (depthwise, pools, global average, reshape, concat):
//   within 1e-5 absolute + 1e-5 relative (window sums of <= 25 terms of
//   O(1) values in another order); max, reshape and concat exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "runtime/graph_builder.h"
#include "runtime/kernels/kernels.h"
#include "tests/support/test_models.h"

namespace ternd::runtime {
namespace {

using testing::Rng;
using Window = GraphBuilder::Window;

// A spatial shape and its window, for the direct references.
struct Geo {
  int h, w, c;
  int kh, kw, sh, sw, ph, pw, dh, dw;
  int oh() const { return (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1; }
  int ow() const { return (w + 2 * pw - dw * (kw - 1) - 1) / sw + 1; }
  // Input index of window tap (kh, kw) of output (oy, ox), or -1 in padding.
  long At(int oy, int ox, int ky, int kx, int ch) const {
    const int iy = oy * sh - ph + ky * dh, ix = ox * sw - pw + kx * dw;
    if (iy < 0 || iy >= h || ix < 0 || ix >= w) return -1;
    return (static_cast<long>(iy) * w + ix) * c + ch;
  }
};

Window ToWindow(const Geo& g, bool one_d) {
  Window win;
  if (one_d) {
    win.kernel = {static_cast<uint32_t>(g.kw)};
    win.stride = {static_cast<uint32_t>(g.sw)};
    win.padding = {static_cast<uint32_t>(g.pw)};
    win.dilation = {static_cast<uint32_t>(g.dw)};
  } else {
    win.kernel = {static_cast<uint32_t>(g.kh), static_cast<uint32_t>(g.kw)};
    win.stride = {static_cast<uint32_t>(g.sh), static_cast<uint32_t>(g.sw)};
    win.padding = {static_cast<uint32_t>(g.ph), static_cast<uint32_t>(g.pw)};
    win.dilation = {static_cast<uint32_t>(g.dh), static_cast<uint32_t>(g.dw)};
  }
  return win;
}

std::vector<uint32_t> InputDims(const Geo& g, bool one_d) {
  if (one_d) return {static_cast<uint32_t>(g.w), static_cast<uint32_t>(g.c)};
  return {static_cast<uint32_t>(g.h), static_cast<uint32_t>(g.w),
          static_cast<uint32_t>(g.c)};
}

// Runs a one-op model on `batch` samples and returns its output rows.
std::vector<float> RunOne(const std::vector<uint8_t>& bytes,
                          const std::vector<float>& input, int batch,
                          const std::string& kernel = "ref") {
  auto m = testing::LoadModel(bytes, kernel);
  EXPECT_TRUE(m.ok()) << m.status().message();
  if (!m.ok()) return {};
  Executor ex = m->model->executor(0);
  std::copy(input.begin(), input.end(), ex.input(0));
  Status s = ex.Invoke(batch);
  EXPECT_TRUE(s.ok()) << s.message();
  const size_t n = m->model->output_info(0).features * size_t(batch);
  return std::vector<float>(ex.output_f32(0), ex.output_f32(0) + n);
}

struct ConvCase {
  Geo g;
  int c_out;
  bool one_d;
  bool per_row;
};

class TernaryConvTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(TernaryConvTest, MatchesDirectReferenceBitForBit) {
  const ConvCase& tc = GetParam();
  const Geo& g = tc.g;
  Rng rng(static_cast<uint32_t>(g.h * 131 + g.w * 17 + g.c + tc.c_out));
  const int patch = g.kh * g.kw * g.c;
  const std::vector<int8_t> w = rng.Ternary(size_t(tc.c_out) * patch);
  const std::vector<float> scales =
      rng.Floats(tc.per_row ? tc.c_out : 1, 0.05f, 1.0f);
  const std::vector<float> bias = rng.Floats(tc.c_out, -1, 1);
  GraphBuilder b("conv", 1, 8);
  b.Input("x", InputDims(g, tc.one_d));
  b.Conv(tc.one_d ? model::CONV1D : model::CONV2D, "x", "y", tc.c_out,
         ToWindow(g, tc.one_d), w, scales, bias);
  b.Output("y");
  auto bytes = b.Finish();
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();

  const int batch = 3;
  const size_t in_f = size_t(g.h) * g.w * g.c;
  std::vector<float> input = rng.Floats(in_f * batch, -2, 2);
  // Sample 1 is all zeros (dequant 0), sample 2 has one large value.
  std::fill(input.begin() + in_f, input.begin() + 2 * in_f, 0.0f);
  input[2 * in_f + in_f / 2] = 50.0f;

  const int oh = g.oh(), ow = g.ow();
  std::vector<float> want(size_t(batch) * oh * ow * tc.c_out);
  std::vector<double> real(want.size());
  std::vector<double> bound(want.size());
  for (int s = 0; s < batch; ++s) {
    Eigen::VectorXf x = Eigen::Map<const Eigen::VectorXf>(
        input.data() + s * in_f, static_cast<Eigen::Index>(in_f));
    float d = 0;
    const Eigen::VectorXi q = testing::ReferenceQuantize(x, &d);
    for (int n = 0; n < tc.c_out; ++n) {
      const float sc = scales[tc.per_row ? n : 0];
      for (int oy = 0; oy < oh; ++oy) {
        for (int ox = 0; ox < ow; ++ox) {
          int64_t acc = 0;
          double exact = 0, wsum = 0;
          for (int ky = 0; ky < g.kh; ++ky) {
            for (int kx = 0; kx < g.kw; ++kx) {
              for (int ch = 0; ch < g.c; ++ch) {
                const int wv =
                    w[size_t(n) * patch + (ky * g.kw + kx) * g.c + ch];
                wsum += std::abs(wv);
                const long i = g.At(oy, ox, ky, kx, ch);
                if (i < 0) continue;
                acc += int64_t{wv} * q(i);
                exact += double(wv) * sc * x(i);
              }
            }
          }
          const size_t o = ((size_t(s) * oh + oy) * ow + ox) * tc.c_out + n;
          want[o] = static_cast<float>(acc) * (sc * d) + bias[n];
          real[o] = exact + bias[n];
          bound[o] = sc * wsum * d / 2 + 1e-5 * (1 + std::fabs(real[o]));
        }
      }
    }
  }
  bool bound_bites = false;
  for (const TernaryKernel* k : AllTernaryKernels()) {
    if (!k->supported()) continue;
    const std::vector<float> got = RunOne(*bytes, input, batch, k->name);
    ASSERT_EQ(got.size(), want.size()) << k->name;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], want[i]) << k->name << " output " << i;
      ASSERT_LE(std::fabs(got[i] - real[i]), bound[i]) << "output " << i;
      bound_bites |= std::fabs(got[i] - real[i]) > 1e-4;
    }
  }
  // The comparison with real arithmetic saw quantization error at all.
  EXPECT_TRUE(bound_bites);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, TernaryConvTest,
    ::testing::Values(
        // 3x3 same-padding, the usual vision layer.
        ConvCase{{8, 8, 1, 3, 3, 1, 1, 1, 1, 1, 1}, 16, false, true},
        ConvCase{{6, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1}, 7, false, false},
        // Stride 2, no padding, rectangular kernel and dilation.
        ConvCase{{9, 11, 3, 2, 3, 2, 1, 0, 2, 2, 1}, 5, false, true},
        ConvCase{{10, 10, 4, 3, 3, 2, 2, 1, 1, 2, 2}, 9, false, false},
        // More output positions than one kernel call (16) and a patch
        // wider than one 256-byte activation row.
        ConvCase{{12, 12, 40, 3, 3, 1, 1, 1, 1, 1, 1}, 33, false, true},
        // 1x1 (pointwise).
        ConvCase{{5, 5, 17, 1, 1, 1, 1, 0, 0, 1, 1}, 3, false, false},
        // CONV1D: audio-like, stride and dilation.
        ConvCase{{1, 50, 1, 1, 5, 1, 2, 0, 2, 1, 1}, 8, true, true},
        ConvCase{{1, 31, 6, 1, 3, 1, 1, 0, 3, 1, 3}, 4, true, false}));

// Direct float references of the other ops.
std::vector<float> DirectDepthwise(const std::vector<float>& x, const Geo& g,
                                   const std::vector<float>& w,
                                   const std::vector<float>& bias) {
  std::vector<float> y;
  for (int oy = 0; oy < g.oh(); ++oy)
    for (int ox = 0; ox < g.ow(); ++ox)
      for (int ch = 0; ch < g.c; ++ch) {
        double s = bias[ch];
        for (int ky = 0; ky < g.kh; ++ky)
          for (int kx = 0; kx < g.kw; ++kx) {
            const long i = g.At(oy, ox, ky, kx, ch);
            if (i >= 0) s += double(w[(ky * g.kw + kx) * g.c + ch]) * x[i];
          }
        y.push_back(static_cast<float>(s));
      }
  return y;
}

std::vector<float> DirectPool(const std::vector<float>& x, const Geo& g,
                              bool max) {
  std::vector<float> y;
  for (int oy = 0; oy < g.oh(); ++oy)
    for (int ox = 0; ox < g.ow(); ++ox)
      for (int ch = 0; ch < g.c; ++ch) {
        double s = 0;
        float m = -std::numeric_limits<float>::infinity();
        for (int ky = 0; ky < g.kh; ++ky)
          for (int kx = 0; kx < g.kw; ++kx) {
            const long i = g.At(oy, ox, ky, kx, ch);
            if (i < 0) continue;
            s += x[i];
            m = std::max(m, x[i]);
          }
        y.push_back(max ? m : static_cast<float>(s / (g.kh * g.kw)));
      }
  return y;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want,
                float tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * (1 + std::fabs(want[i])))
        << what << " output " << i;
  }
}

TEST(FloatConvOpsTest, DepthwiseAndPoolsMatchDirectLoops) {
  Rng rng(5);
  const std::vector<Geo> geos = {
      {8, 8, 3, 3, 3, 1, 1, 1, 1, 1, 1},
      {9, 7, 4, 3, 2, 2, 2, 1, 1, 1, 1},
      {5, 12, 2, 2, 4, 1, 3, 1, 2, 1, 1},
      {1, 20, 5, 1, 3, 1, 2, 0, 1, 1, 1},  // 1-D pools
  };
  for (size_t gi = 0; gi < geos.size(); ++gi) {
    const Geo& g = geos[gi];
    const bool one_d = g.h == 1;
    const std::string what = "geometry #" + std::to_string(gi);
    const std::vector<float> x = rng.Floats(size_t(g.h) * g.w * g.c, -3, 3);
    for (bool max : {true, false}) {
      GraphBuilder b("pool", 1, 1);
      b.Input("x", InputDims(g, one_d));
      Window win = ToWindow(g, one_d);
      win.dilation.clear();
      b.Pool(max ? model::MAX_POOL : model::AVG_POOL, "x", "y", win);
      b.Output("y");
      auto bytes = b.Finish();
      ASSERT_TRUE(bytes.ok()) << bytes.status().message();
      const std::vector<float> got = RunOne(*bytes, x, 1);
      ExpectNear(got, DirectPool(x, g, max), max ? 0.0f : 1e-5f,
                 what + (max ? " max" : " avg"));
    }
    if (one_d) continue;
    const std::vector<float> w = rng.Floats(size_t(g.kh) * g.kw * g.c, -1, 1);
    const std::vector<float> bias = rng.Floats(g.c, -1, 1);
    GraphBuilder b("dw", 1, 1);
    b.Input("x", InputDims(g, false));
    b.DepthwiseConv2d("x", "y", ToWindow(g, false), w, bias);
    b.Output("y");
    auto bytes = b.Finish();
    ASSERT_TRUE(bytes.ok()) << bytes.status().message();
    ExpectNear(RunOne(*bytes, x, 1), DirectDepthwise(x, g, w, bias), 1e-5f,
               what + " depthwise");
  }
}

TEST(FloatConvOpsTest, GlobalPoolReshapeConcat) {
  Rng rng(6);
  GraphBuilder b("misc", 1, 4);
  b.Input("x", std::vector<uint32_t>{3, 4, 5});
  b.GlobalAvgPool("x", "gap");                      // [5]
  b.Reshape("x", "flat", {60});                     // [60]
  b.Reshape("flat", "back", {3, 4, 5});             // [3, 4, 5]
  b.Pool(model::MAX_POOL, "back", "mp", {{1, 1}});  // identity window
  b.Concat({"x", "mp", "back"}, "cat");             // [3, 4, 15]
  b.Output("gap");
  b.Output("cat");
  auto bytes = b.Finish();
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  auto m = testing::LoadModel(*bytes, "ref");
  ASSERT_TRUE(m.ok()) << m.status().message();
  const int batch = 2;
  const std::vector<float> x = rng.Floats(60 * batch, -2, 2);
  Executor ex = m->model->executor(0);
  std::copy(x.begin(), x.end(), ex.input(0));
  ASSERT_TRUE(ex.Invoke(batch).ok());
  for (int s = 0; s < batch; ++s) {
    for (int ch = 0; ch < 5; ++ch) {
      double sum = 0;
      for (int p = 0; p < 12; ++p) sum += x[s * 60 + p * 5 + ch];
      EXPECT_NEAR(ex.output_f32(0)[s * 5 + ch], sum / 12, 1e-6);
    }
    for (int p = 0; p < 12; ++p) {
      for (int ch = 0; ch < 15; ++ch) {
        EXPECT_EQ(ex.output_f32(1)[s * 180 + p * 15 + ch],
                  x[s * 60 + p * 5 + ch % 5])
            << "sample " << s << " position " << p << " channel " << ch;
      }
    }
  }
}

// A small CNN end to end: the arena plan holds the im2col staging and one
// sample's codes beside the activations, and the golden check passes.
TEST(ConvModelTest, PlansIm2colScratchAndRunsGolden) {
  Rng rng(7);
  GraphBuilder b("cnn", 1, 4);
  b.Input("img", std::vector<uint32_t>{8, 8, 1});
  b.Conv(model::CONV2D, "img", "c1", 8, {{3, 3}, {}, {1, 1}},
         rng.Ternary(8 * 9), rng.Floats(8, 0.1f, 1));
  b.Unary(model::RELU, "c1", "r1");
  b.Pool(model::MAX_POOL, "r1", "p1", {{2, 2}, {2, 2}});
  b.Conv(model::CONV2D, "p1", "c2", 16, {{3, 3}, {}, {1, 1}},
         rng.Ternary(16 * 72), rng.Floats(1, 0.1f, 1), rng.Floats(16, -1, 1));
  b.Unary(model::RELU, "c2", "r2");
  b.GlobalAvgPool("r2", "gap");
  b.TernaryLinear("gap", "fc", 10, rng.Ternary(160), rng.Floats(10, 0.1f, 1));
  b.Unary(model::ARGMAX, "fc", "cls");
  b.Output("fc");
  b.Output("cls");
  auto bytes = b.FinishWithGolden({rng.Floats(2 * 64, 0, 16)}, 2, 1e-5f);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  auto file = ModelFile::Parse(*bytes, "cnn");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->format_version(), 3u);
  auto m = testing::LoadModel(*bytes, "auto");
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_TRUE(m->model->CheckGolden(0).ok());
  // Activations: the largest live pair is img + c1 or c1 + r1 (8x8x8 floats
  // x 4 rows each); staging past them.
  const size_t c1_bytes = 8 * 8 * 8 * 4 * 4;
  EXPECT_GE(m->model->activation_bytes_per_worker(), 2 * c1_bytes);
  EXPECT_LE(m->model->activation_bytes_per_worker(), 3 * c1_bytes);
  EXPECT_GT(m->model->scratch_bytes_per_worker(),
            m->model->activation_bytes_per_worker() + 256 * 16);
  const OpInfo c2 = m->model->op_info(3);
  EXPECT_EQ(c2.type, model::CONV2D);
  EXPECT_EQ(c2.macs, uint64_t{4 * 4 * 16 * 72});
  EXPECT_NE(c2.kernel, nullptr);
}

}  // namespace
}  // namespace ternd::runtime
