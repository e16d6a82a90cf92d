// Every op of the format against an independent Eigen float reference.
//
// Tolerances:
// - Float ops (LINEAR, norms, activations, softmax): the runtime and Eigen sum
//   in different orders; float32 summation of k terms differs by at most about
//   k * 2^-24 * sum|terms|, far below 1e-4 for the k <= 300 and O(1) values
//   used here, so 1e-4 absolute + 1e-5 relative is a tight yet safe bound.
// - TERNARY_LINEAR against real arithmetic: each activation is rounded to a
//   multiple of d = amax/127 with error <= d/2, so output n differs by at most
//   scale_n * sum_k |W_nk| * d/2 (plus float rounding). The test computes that
//   bound per output and checks it, and checks that it is not vacuous.
// - TERNARY_LINEAR against the quantization-emulating reference: identical
//   integer products and the same float expression, so results must be
//   bit-identical.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "runtime/graph_builder.h"
#include "tests/support/test_models.h"

namespace ternd::runtime {
namespace {

using testing::ReferenceMode;
using testing::Rng;

struct SingleOp {
  testing::Loaded loaded;
  Eigen::MatrixXf input;
};

Eigen::MatrixXf RandomInput(Rng& rng, int batch, int f, float lo, float hi) {
  Eigen::MatrixXf x(batch, f);
  for (int i = 0; i < x.size(); ++i) x.data()[i] = rng.Uniform(lo, hi);
  return x;
}

void ExpectClose(const Eigen::MatrixXf& got, const Eigen::MatrixXf& want,
                 float abs_tol, float rel_tol, const std::string& what) {
  ASSERT_EQ(got.rows(), want.rows());
  ASSERT_EQ(got.cols(), want.cols());
  for (int r = 0; r < got.rows(); ++r) {
    for (int c = 0; c < got.cols(); ++c) {
      EXPECT_NEAR(got(r, c), want(r, c),
                  abs_tol + rel_tol * std::fabs(want(r, c)))
          << what << " at (" << r << ", " << c << ")";
    }
  }
}

// Builds a one-op model with `build` (which defines value "y" from "x").
testing::Loaded Build(int features,
                      const std::function<void(GraphBuilder&)>& build) {
  GraphBuilder b("op", 1, 16);
  b.Input("x", features);
  build(b);
  b.Output("y");
  auto bytes = b.Finish();
  EXPECT_TRUE(bytes.ok()) << bytes.status().message();
  auto loaded = testing::LoadModel(*bytes, "ref");
  EXPECT_TRUE(loaded.ok()) << loaded.status().message();
  return std::move(*loaded);
}

class FloatOpTest : public ::testing::TestWithParam<model::OpType> {};

TEST_P(FloatOpTest, MatchesEigen) {
  const model::OpType type = GetParam();
  Rng rng(static_cast<uint32_t>(type));
  for (int features : {1, 3, 17, 64, 300}) {
    for (int batch : {1, 5, 16}) {
      testing::Loaded m = Build(features, [&](GraphBuilder& b) {
        switch (type) {
          case model::LINEAR:
            b.Linear("x", "y", 7, rng.Floats(7 * features, -1, 1),
                     rng.Floats(7, -1, 1));
            break;
          case model::RMS_NORM:
            b.RmsNorm("x", "y", rng.Floats(features, 0.5f, 1.5f), 1e-5f);
            break;
          case model::LAYER_NORM:
            b.LayerNorm("x", "y", rng.Floats(features, 0.5f, 1.5f),
                        rng.Floats(features, -1, 1), 1e-5f);
            break;
          case model::ADD:
            b.Unary(model::RELU, "x", "r");
            b.Add("x", "r", "y");
            break;
          default:
            b.Unary(type, "x", "y");
        }
      });
      Eigen::MatrixXf x = RandomInput(rng, batch, features, -4, 4);
      Eigen::MatrixXf got = testing::RunModel(*m.loaded_model(), {x})[0];
      Eigen::MatrixXf want =
          testing::ReferenceRun(*m.file, {x}, ReferenceMode::kFloat).at("y");
      if (type == model::ARGMAX) {
        EXPECT_EQ(got, want);
      } else {
        ExpectClose(
            got, want, 1e-4f, 1e-5f,
            std::string(OpTypeName(type)) + " f=" + std::to_string(features));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllFloatOps, FloatOpTest,
    ::testing::Values(model::LINEAR, model::RMS_NORM, model::LAYER_NORM,
                      model::RELU, model::RELU2, model::SILU, model::GELU,
                      model::ADD, model::SOFTMAX, model::ARGMAX),
    [](const auto& info) { return std::string(OpTypeName(info.param)); });

TEST(TernaryLinearTest, WithinQuantizationBoundAndExactAgainstEmulation) {
  Rng rng(11);
  int checked = 0;
  for (int k : {1, 2, 5, 16, 33, 255, 257}) {
    for (int n : {1, 3, 8, 65}) {
      for (bool per_row : {false, true}) {
        std::vector<int8_t> w = rng.Ternary(static_cast<size_t>(n) * k);
        std::vector<float> scales = rng.Floats(per_row ? n : 1, 0.01f, 2.0f);
        std::vector<float> bias = rng.Floats(n, -1, 1);
        testing::Loaded m = Build(k, [&](GraphBuilder& b) {
          b.TernaryLinear("x", "y", n, w, scales, bias);
        });
        const int batch = rng.Int(1, 16);
        Eigen::MatrixXf x = RandomInput(rng, batch, k, -3, 3);
        Eigen::MatrixXf got = testing::RunModel(*m.loaded_model(), {x})[0];
        Eigen::MatrixXf exact =
            testing::ReferenceRun(*m.file, {x}, ReferenceMode::kQuantized)
                .at("y");
        Eigen::MatrixXf real =
            testing::ReferenceRun(*m.file, {x}, ReferenceMode::kFloat).at("y");
        for (int b = 0; b < batch; ++b) {
          const float d = x.row(b).cwiseAbs().maxCoeff() / 127.0f;
          for (int r = 0; r < n; ++r) {
            ASSERT_EQ(got(b, r), exact(b, r)) << "k=" << k << " n=" << n;
            float abs_w = 0;
            for (int c = 0; c < k; ++c) abs_w += std::abs(w[r * k + c]);
            const float scale = scales[per_row ? r : 0];
            const float bound =
                scale * abs_w * d / 2 + 1e-5f * (1 + std::fabs(real(b, r)));
            EXPECT_LE(std::fabs(got(b, r) - real(b, r)), bound)
                << "k=" << k << " n=" << n;
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 500);
}

TEST(TernaryLinearTest, QuantizationMatchesTheSpecOnEdgeRows) {
  // All zeros, a single spike, exact halves (round half to even) and values
  // at the clamp edge.
  const std::vector<std::vector<float>> rows = {
      {0, 0, 0, 0},
      {0, 0, 5, 0},
      {127, 0.5f, 1.5f, -2.5f},
      {-127, 126.5f, -0.5f, 3.5f},
      {1e-30f, -1e-30f, 0, 0},
  };
  for (const auto& row : rows) {
    Eigen::VectorXf x = Eigen::Map<const Eigen::VectorXf>(row.data(), 4);
    float dq = 0;
    Eigen::VectorXi q = testing::ReferenceQuantize(x, &dq);
    std::vector<int8_t> w = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    testing::Loaded m = Build(4, [&](GraphBuilder& b) {
      b.TernaryLinear("x", "y", 4, w, std::vector<float>{1.0f});
    });
    Eigen::MatrixXf got =
        testing::RunModel(*m.loaded_model(), {x.transpose()})[0];
    for (int i = 0; i < 4; ++i) {
      // Identity weights: the output is exactly q * dequant.
      EXPECT_EQ(got(0, i), static_cast<float>(q(i)) * (1.0f * dq));
    }
  }
  // Half-to-even: 127/127 * {0.5, 1.5, -2.5} -> {0, 2, -2}.
  float dq = 0;
  Eigen::VectorXf x(4);
  x << 127, 0.5f, 1.5f, -2.5f;
  Eigen::VectorXi q = testing::ReferenceQuantize(x, &dq);
  EXPECT_EQ(q(0), 127);
  EXPECT_EQ(q(1), 0);
  EXPECT_EQ(q(2), 2);
  EXPECT_EQ(q(3), -2);
}

}  // namespace
}  // namespace ternd::runtime
