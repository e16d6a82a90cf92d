// Whole models through the runtime: agreement with the Eigen reference, the
// arena and its slots, workers, the golden check, and refusals.
#include "runtime/runtime.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <thread>

#include "runtime/graph_builder.h"
#include "runtime/ternary_pack.h"
#include "tests/support/test_models.h"

namespace ternd::runtime {
namespace {

using testing::ReferenceMode;
using testing::Rng;

// An MLP with every op kind, max_batch 40 so batches span several kernel
// chunks of 16.
GraphBuilder MixedModel(Rng& rng, const std::string& name = "mixed",
                        uint32_t width = 48) {
  GraphBuilder b(name, 2, 40);
  b.Input("x", 20);
  b.Input("aux", 5);
  b.TernaryLinear("x", "fc1", width, rng.Ternary(width * 20),
                  std::vector<float>{0.3f}, rng.Floats(width, -0.2f, 0.2f));
  b.Unary(model::SILU, "fc1", "a1");
  b.LayerNorm("a1", "ln1", rng.Floats(width, 0.8f, 1.2f),
              rng.Floats(width, -0.1f, 0.1f), 1e-5f);
  b.TernaryLinear("ln1", "fc2", width, rng.Ternary(width * width),
                  rng.Floats(width, 0.05f, 0.4f));
  b.Unary(model::RELU2, "fc2", "a2");
  b.RmsNorm("a2", "n2", rng.Floats(width, 0.8f, 1.2f), 1e-6f);
  b.Add("n2", "ln1", "res");
  b.Unary(model::GELU, "res", "g");
  b.Unary(model::RELU, "g", "r");
  b.TernaryLinear("aux", "aux_fc", 6, rng.Ternary(30),
                  std::vector<float>{1.0f});
  b.Linear("r", "head", 6, rng.Floats(6 * width, -0.5f, 0.5f),
           rng.Floats(6, -0.1f, 0.1f));
  b.Add("head", "aux_fc", "logits");
  b.Unary(model::SOFTMAX, "logits", "probs");
  b.Unary(model::ARGMAX, "logits", "cls");
  b.Output("probs");
  b.Output("cls");
  b.Output("logits");
  return b;
}

std::vector<Eigen::MatrixXf> Inputs(Rng& rng, int batch) {
  Eigen::MatrixXf x(batch, 20), aux(batch, 5);
  for (int i = 0; i < x.size(); ++i) x.data()[i] = rng.Uniform(-2, 2);
  for (int i = 0; i < aux.size(); ++i) aux.data()[i] = rng.Uniform(-1, 1);
  return {x, aux};
}

TEST(RuntimeTest, WholeModelMatchesEigenReference) {
  Rng rng(21);
  auto bytes = MixedModel(rng).Finish();
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  auto m = testing::LoadModel(*bytes);
  ASSERT_TRUE(m.ok()) << m.status().message();
  for (int batch : {1, 2, 15, 16, 17, 33, 40}) {
    auto in = Inputs(rng, batch);
    auto got = testing::RunModel(*m->model, in);
    auto ref = testing::ReferenceRun(*m->file, in, ReferenceMode::kQuantized);
    const Eigen::MatrixXf& logits = ref.at("logits");
    for (int b = 0; b < batch; ++b) {
      for (int c = 0; c < 6; ++c) {
        // Same integer products; float ops differ only in summation order.
        EXPECT_NEAR(got[2](b, c), logits(b, c),
                    1e-4f * (1 + std::fabs(logits(b, c))));
        EXPECT_NEAR(got[0](b, c), ref.at("probs")(b, c), 1e-5f);
      }
      // The class must be the argmax of the runtime's own logits, and agree
      // with the reference unless the top two are within float noise.
      Eigen::Index best;
      got[2].row(b).maxCoeff(&best);
      EXPECT_EQ(got[1](b, 0), static_cast<float>(best));
      Eigen::RowVectorXf sorted = logits.row(b);
      std::sort(sorted.data(), sorted.data() + sorted.size());
      if (sorted(5) - sorted(4) > 1e-3f) {
        EXPECT_EQ(got[1](b, 0), ref.at("cls")(b, 0));
      }
    }
  }
}

TEST(RuntimeTest, EveryKernelChoiceAgrees) {
  Rng rng(4);
  auto bytes = MixedModel(rng).Finish();
  ASSERT_TRUE(bytes.ok());
  auto ref = testing::LoadModel(*bytes, "ref");
  auto best = testing::LoadModel(*bytes, "auto");
  ASSERT_TRUE(ref.ok() && best.ok());
  auto in = Inputs(rng, 40);
  auto a = testing::RunModel(*ref->model, in);
  auto b = testing::RunModel(*best->model, in);
  for (size_t o = 0; o < a.size(); ++o) EXPECT_EQ(a[o], b[o]) << o;
}

// The op descriptions a profile reports: types in graph order, the features
// each reads and writes, the constant bytes and the FLOPs of the products.
TEST(RuntimeTest, OpInfoDescribesEveryOp) {
  Rng rng(5);
  auto bytes = MixedModel(rng).Finish();
  ASSERT_TRUE(bytes.ok());
  auto m = testing::LoadModel(*bytes);
  ASSERT_TRUE(m.ok()) << m.status().message();
  const LoadedModel& lm = *m->model;
  ASSERT_EQ(lm.num_ops(), 14);
  const OpInfo fc1 = lm.op_info(0);
  EXPECT_EQ(fc1.type, model::TERNARY_LINEAR);
  EXPECT_EQ(fc1.in_features, 20u);
  EXPECT_EQ(fc1.out_features, 48u);
  // Packed weights, one scale and 48 float biases.
  EXPECT_EQ(fc1.weight_bytes, lm.kernel().packed_size(48, 20) + 4 + 48 * 4);
  EXPECT_EQ(fc1.Flops(3), 2.0 * 48 * 20 * 3);
  EXPECT_EQ(fc1.BytesMoved(3), fc1.weight_bytes + 4.0 * 3 * (20 + 48));
  const OpInfo silu = lm.op_info(1);
  EXPECT_EQ(silu.type, model::SILU);
  EXPECT_EQ(silu.weight_bytes, 0u);
  EXPECT_EQ(silu.Flops(3), 0);
  const OpInfo add = lm.op_info(6);
  EXPECT_EQ(add.type, model::ADD);
  EXPECT_EQ(add.BytesMoved(2), 4.0 * 2 * (48 + 48 + 48));
  const OpInfo head = lm.op_info(10);
  EXPECT_EQ(head.type, model::LINEAR);
  EXPECT_EQ(head.weight_bytes, (6 * 48 + 6) * 4u);
  EXPECT_EQ(head.Flops(1), 2.0 * 6 * 48);
  EXPECT_EQ(lm.op_info(13).type, model::ARGMAX);
  EXPECT_GT(lm.activation_bytes_per_worker(), 0u);
  EXPECT_LT(lm.activation_bytes_per_worker(), lm.scratch_bytes_per_worker());
}

TEST(RuntimeTest, TooLargeModelNamesTheSizes) {
  Rng rng(1);
  auto bytes = MixedModel(rng, "big", 1024).Finish();
  ASSERT_TRUE(bytes.ok());
  auto file = ModelFile::Parse(*bytes, "big.tern");
  ASSERT_TRUE(file.ok());
  auto rt = Runtime::Create({size_t{1} << 20, 2, 1, "ref"});
  ASSERT_TRUE(rt.ok());
  auto m = (*rt)->Load(0, *file);
  ASSERT_FALSE(m.ok());
  const std::string msg = m.status().message();
  EXPECT_EQ(m.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(msg.find("big.tern: model 'big' needs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("arena slot holds 524288 bytes"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("cold swap"), std::string::npos) << msg;
  EXPECT_EQ((*rt)->model(0), nullptr);
}

TEST(RuntimeTest, TwoSlotsServeIndependently) {
  Rng rng(8);
  auto bytes_a = MixedModel(rng, "model-a").Finish();
  auto bytes_b = MixedModel(rng, "model-b").Finish();
  ASSERT_TRUE(bytes_a.ok() && bytes_b.ok());
  auto fa = ModelFile::Parse(*bytes_a, "a");
  auto fb = ModelFile::Parse(*bytes_b, "b");
  ASSERT_TRUE(fa.ok() && fb.ok());
  auto rt = Runtime::Create({size_t{8} << 20, 2, 2, "auto"});
  ASSERT_TRUE(rt.ok());
  auto a = (*rt)->Load(0, *fa);
  ASSERT_TRUE(a.ok()) << a.status().message();
  auto in = Inputs(rng, 7);
  auto before = testing::RunModel(**a, in);
  auto b = (*rt)->Load(1, *fb);
  ASSERT_TRUE(b.ok());
  EXPECT_STREQ((*rt)->model(0)->name(), "model-a");
  EXPECT_STREQ((*rt)->model(1)->name(), "model-b");
  // Loading B must not disturb A.
  EXPECT_EQ(testing::RunModel(**a, in)[2], before[2]);
  EXPECT_NE(testing::RunModel(**b, in)[2], before[2]);
  EXPECT_LE((*a)->slot_bytes_used(), (*rt)->slot_bytes());
  (*rt)->Unload(1);
  EXPECT_EQ((*rt)->model(1), nullptr);
}

TEST(RuntimeTest, WorkersRunConcurrentlyWithSameResults) {
  Rng rng(12);
  auto bytes = MixedModel(rng).Finish();
  ASSERT_TRUE(bytes.ok());
  auto m = testing::LoadModel(*bytes, "auto", 4);
  ASSERT_TRUE(m.ok());
  auto in = Inputs(rng, 9);
  auto want = testing::RunModel(*m->model, in);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      Executor ex = m->model->executor(w);
      for (int iter = 0; iter < 200; ++iter) {
        for (int b = 0; b < 9; ++b) {
          for (int f = 0; f < 20; ++f) ex.input(0)[b * 20 + f] = in[0](b, f);
          for (int f = 0; f < 5; ++f) ex.input(1)[b * 5 + f] = in[1](b, f);
        }
        if (!ex.Invoke(9).ok()) ++mismatches;
        for (int j = 0; j < 9 * 6; ++j) {
          if (ex.output_f32(2)[j] != want[2](j / 6, j % 6)) ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(RuntimeTest, RefusesBadBatchAndNonFiniteInput) {
  Rng rng(2);
  auto bytes = MixedModel(rng).Finish();
  auto m = testing::LoadModel(*bytes);
  ASSERT_TRUE(m.ok());
  Executor ex = m->model->executor(0);
  EXPECT_NE(std::string(ex.Invoke(0).message()).find("outside 1..40"),
            std::string::npos);
  EXPECT_FALSE(ex.Invoke(41).ok());
  for (int i = 0; i < 40 * 20; ++i) ex.input(0)[i] = 1.0f;
  for (int i = 0; i < 40 * 5; ++i) ex.input(1)[i] = 1.0f;
  ex.input(1)[5 + 3] = NAN;
  Status s = ex.Invoke(2);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_STREQ(s.message(),
               "input 'aux' row 1 feature 3 is nan; inputs must be finite");
  EXPECT_TRUE(ex.Invoke(1).ok());  // row 1 is not part of a batch of 1
}

TEST(RuntimeTest, RefusesInvalidTernaryCodesAtLoad) {
  Rng rng(3);
  auto bytes = MixedModel(rng).Finish();
  ASSERT_TRUE(bytes.ok());
  auto file = ModelFile::Parse(*bytes, "x");
  ASSERT_TRUE(file.ok());
  // Find fc2.weight inside the file and set row 2, column 5 to code 3.
  const TensorView* t = file->FindTensor("fc2.weight");
  const size_t at =
      file->data_offset() + t->info->offset() + 2 * TernaryRowBytes(48) + 1;
  (*bytes)[at] |= 3 << 2;
  auto bad = ModelFile::Parse(*bytes, "codes.tern");
  ASSERT_TRUE(bad.ok());  // structurally fine; codes are checked at load
  auto rt = Runtime::Create({size_t{8} << 20, 1, 1, "ref"});
  auto m = (*rt)->Load(0, *bad);
  ASSERT_FALSE(m.ok());
  EXPECT_STREQ(m.status().message(),
               "codes.tern: tensor 'fc2.weight' has an invalid ternary code at "
               "row 2 column 5 (code 3 is not a weight)");
}

TEST(RuntimeTest, GoldenCheckPassesAndCatchesCorruption) {
  Rng rng(6);
  auto bytes = MixedModel(rng).FinishWithGolden(
      {rng.Floats(3 * 20, -1, 1), rng.Floats(3 * 5, -1, 1)}, 3, 1e-5f);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  auto good = testing::LoadModel(*bytes);
  ASSERT_TRUE(good.ok());
  EXPECT_TRUE(good->model->CheckGolden(0).ok());

  // Flip one weight (0 <-> +1 keeps the code valid) and the check must fail.
  auto file = ModelFile::Parse(*bytes, "g");
  const TensorView* t = file->FindTensor("fc1.weight");
  std::vector<uint8_t> broken = *bytes;
  const size_t at = file->data_offset() + t->info->offset();
  int code = broken[at] & 3;
  broken[at] = static_cast<uint8_t>((broken[at] & ~3) | (code == 2 ? 1 : 2));
  auto bad = testing::LoadModel(broken);
  ASSERT_TRUE(bad.ok());
  Status s = bad->model->CheckGolden(0);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(
      std::string(s.message()).find("golden check of model 'mixed' failed"),
      std::string::npos)
      << s.message();
}

TEST(RuntimeTest, KernelSelection) {
  EXPECT_TRUE(Runtime::Create({size_t{1} << 20, 1, 1, "ref"}).ok());
  auto bad = Runtime::Create({size_t{1} << 20, 1, 1, "sse9"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(
      std::string(bad.status().message()).find("unknown ternary kernel 'sse9'"),
      std::string::npos);
  EXPECT_NE(std::string(bad.status().message()).find("ref"), std::string::npos);
  EXPECT_FALSE(Runtime::Create({size_t{1} << 20, 3, 1, "ref"}).ok());
  EXPECT_FALSE(Runtime::Create({size_t{1} << 20, 1, 0, "ref"}).ok());
}

}  // namespace
}  // namespace ternd::runtime
