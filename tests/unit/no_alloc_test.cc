// After Load, the inference path must never touch the heap.
//
// This binary replaces the global operator new/delete, and (when not built
// with AddressSanitizer, which owns malloc itself) malloc/calloc/realloc/free
// too, with versions that count calls while counting is switched on. The
// positive controls prove the hooks are live in this very build.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <set>

#include "runtime/graph_builder.h"
#include "runtime/runtime.h"
#include "tests/support/alloc_hooks.h"
#include "tests/support/test_models.h"

using ternd::testing::g_alloc_counting;
using ternd::testing::g_allocations;

namespace ternd::runtime {
namespace {

using Counting = ::ternd::testing::AllocCounting;

TEST(NoAllocTest, HooksAreLive) {
  Counting c;
  std::vector<int>* v = new std::vector<int>(100);
  delete v;
  EXPECT_GE(c.count(), 2);
#if TERND_COUNT_MALLOC
  Counting c2;
  void* volatile p = std::malloc(10);
  std::free(p);
  EXPECT_EQ(c2.count(), 1);
#else
  std::printf(
      "note: malloc counting is off in sanitizer builds; operator "
      "new is still counted\n");
#endif
}

TEST(NoAllocTest, ThousandsOfInferencesAllocateNothing) {
  testing::Rng rng(9);
  GraphBuilder b("noalloc", 1, 32);
  b.Input("x", 64);
  b.TernaryLinear("x", "fc1", 128, rng.Ternary(128 * 64),
                  rng.Floats(128, 0.1f, 1));
  b.Unary(model::SILU, "fc1", "a");
  b.LayerNorm("a", "ln", rng.Floats(128, 1, 1), rng.Floats(128, 0, 0), 1e-5f);
  b.TernaryLinear("ln", "fc2", 128, rng.Ternary(128 * 128),
                  std::vector<float>{0.2f});
  b.Unary(model::GELU, "fc2", "g");
  b.RmsNorm("g", "rms", rng.Floats(128, 1, 1), 1e-5f);
  b.Add("rms", "ln", "res");
  b.Unary(model::RELU2, "res", "r2");
  b.Linear("r2", "head", 10, rng.Floats(1280, -1, 1));
  b.Unary(model::SOFTMAX, "head", "p");
  b.Unary(model::ARGMAX, "head", "cls");
  b.Output("p");
  b.Output("cls");
  auto bytes = b.FinishWithGolden({rng.Floats(2 * 64, -1, 1)}, 2, 1e-5f);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  auto m = testing::LoadModel(*bytes, "auto", 2);
  ASSERT_TRUE(m.ok()) << m.status().message();
  std::vector<float> input = rng.Floats(32 * 64, -3, 3);
  Executor ex0 = m->model->executor(0);
  Executor ex1 = m->model->executor(1);

  // The classes of every call's rows, summed with their positions, so the
  // counted run below is checked to compute what an uncounted run does
  // (a loop that did nothing would allocate nothing too).
  long failures = 0;
  auto run = [&](int64_t* checksum, OpProfile* profile) {
    for (int i = 0; i < 5000; ++i) {
      const int batch = 1 + i % 32;
      Executor& ex = (i % 2) ? ex1 : ex0;
      std::copy(input.begin(), input.begin() + batch * 64, ex.input(0));
      if (!ex.Invoke(batch, profile).ok()) ++failures;
      for (int row = 0; row < batch; ++row) {
        *checksum += (row + 1) * (ex.output_i32(1)[row] + 1);
      }
    }
  };
  int64_t expected = 0;
  run(&expected, nullptr);
  int64_t checksum = 0, profiled_checksum = 0;
  std::vector<uint64_t> op_nanos(m->model->num_ops());
  OpProfile profile{op_nanos.data()};
  {
    Counting c;
    run(&checksum, nullptr);
    // With the per-op profiler on too.
    run(&profiled_checksum, &profile);
    // The error path and the health check allocate nothing either.
    ex0.input(0)[0] = NAN;
    if (ex0.Invoke(1).ok()) ++failures;
    if (!m->model->CheckGolden(0).ok()) ++failures;
    EXPECT_EQ(c.count(), 0) << "heap allocations on the inference path";
  }
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(checksum, expected);
  EXPECT_EQ(profiled_checksum, expected);
  for (size_t i = 0; i < op_nanos.size(); ++i) {
    EXPECT_GT(op_nanos[i], 0u) << "op " << i << " was never timed";
  }
  // Not every row in one class: the model distinguishes its inputs.
  int64_t all_class0 = 0;
  for (int i = 0; i < 5000; ++i) {
    const int batch = 1 + i % 32;
    all_class0 += int64_t{batch} * (batch + 1) / 2;
  }
  EXPECT_NE(checksum, all_class0);
}

// The same for a CNN with every op of the convolutional family: the im2col
// rows, one sample's int8 codes and the pooling windows all live in the
// scratch planned at Load.
TEST(NoAllocTest, ConvolutionalModelAllocatesNothing) {
  testing::Rng rng(10);
  using W = GraphBuilder::Window;
  GraphBuilder b("noalloc-cnn", 1, 8);
  b.Input("img", std::vector<uint32_t>{12, 12, 2});
  b.Conv(model::CONV2D, "img", "c1", 24, W{{3, 3}, {}, {1, 1}},
         rng.Ternary(24 * 18), rng.Floats(24, 0.1f, 1), rng.Floats(24, -1, 1));
  b.Unary(model::RELU, "c1", "r1");
  b.DepthwiseConv2d("r1", "dw", W{{3, 3}, {2, 2}, {1, 1}},
                    rng.Floats(9 * 24, -1, 1), rng.Floats(24, -1, 1));
  b.Pool(model::MAX_POOL, "r1", "mp", W{{2, 2}, {2, 2}});
  b.Concat({"dw", "mp"}, "cat");  // [6, 6, 48]
  b.Pool(model::AVG_POOL, "cat", "ap", W{{3, 3}, {1, 1}, {1, 1}});
  b.Reshape("ap", "seq", {36, 48});
  b.Conv(model::CONV1D, "seq", "c1d", 16, W{{5}, {2}, {2}, {2}},
         rng.Ternary(16 * 5 * 48), rng.Floats(1, 0.1f, 1));
  b.GlobalAvgPool("c1d", "gap");
  b.TernaryLinear("gap", "fc", 10, rng.Ternary(160), rng.Floats(10, 0.1f, 1));
  b.Unary(model::ARGMAX, "fc", "cls");
  b.Output("cls");
  b.Output("fc");
  auto bytes = b.FinishWithGolden({rng.Floats(2 * 288, -1, 1)}, 2, 1e-5f);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  auto m = testing::LoadModel(*bytes, "auto", 2);
  ASSERT_TRUE(m.ok()) << m.status().message();
  std::vector<float> input = rng.Floats(8 * 288, -3, 3);
  Executor ex0 = m->model->executor(0);
  Executor ex1 = m->model->executor(1);
  long failures = 0;
  auto run = [&](int64_t* checksum) {
    for (int i = 0; i < 1000; ++i) {
      const int batch = 1 + i % 8;
      Executor& ex = (i % 2) ? ex1 : ex0;
      std::copy(input.begin(), input.begin() + batch * 288, ex.input(0));
      if (!ex.Invoke(batch).ok()) ++failures;
      for (int row = 0; row < batch; ++row) {
        *checksum += (row + 1) * (ex.output_i32(0)[row] + 1);
        *checksum += static_cast<int64_t>(ex.output_f32(1)[row * 10] * 1e4f);
      }
    }
  };
  int64_t expected = 0, checksum = 0;
  run(&expected);
  {
    Counting c;
    run(&checksum);
    if (!m->model->CheckGolden(1).ok()) ++failures;
    EXPECT_EQ(c.count(), 0) << "heap allocations on the CNN inference path";
  }
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(checksum, expected);
  // The model distinguishes its inputs: the logits differ between rows.
  std::set<float> logits;
  std::copy(input.begin(), input.end(), ex0.input(0));
  ASSERT_TRUE(ex0.Invoke(8).ok());
  for (int row = 0; row < 8; ++row) logits.insert(ex0.output_f32(1)[row * 10]);
  EXPECT_EQ(logits.size(), 8u);
}

// The audio front end: 1 s of 16 kHz samples -> 98 frames of 40 log-mels
// -> a 1-D CNN; the FFT's plans and buffers are made at Load.
TEST(NoAllocTest, AudioFrontEndAllocatesNothing) {
  testing::Rng rng(11);
  using W = GraphBuilder::Window;
  model::AudioFeatures a;
  a.set_sample_rate(16000);
  a.set_frame_length(400);
  a.set_frame_step(160);
  a.set_fft_length(512);
  a.set_mel_bins(40);
  a.set_lower_hz(20);
  a.set_upper_hz(8000);
  a.set_log_offset(1e-6f);
  GraphBuilder b("noalloc-audio", 1, 2);
  b.Input("pcm", 16000);
  b.AudioFeatures("pcm", "mel", a, rng.Floats(40, 0.5f, 1.5f),
                  rng.Floats(40, -1, 1));
  b.Conv(model::CONV1D, "mel", "c1", 16, W{{3}, {2}, {1}},
         rng.Ternary(16 * 120), rng.Floats(16, 0.1f, 1));
  b.GlobalAvgPool("c1", "gap");
  b.TernaryLinear("gap", "fc", 12, rng.Ternary(12 * 16),
                  rng.Floats(1, 0.1f, 1));
  b.Output("fc");
  auto bytes = b.FinishWithGolden({rng.Floats(2 * 16000, -1, 1)}, 2, 1e-3f);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  auto m = testing::LoadModel(*bytes, "auto", 2);
  ASSERT_TRUE(m.ok()) << m.status().message();
  std::vector<float> input = rng.Floats(2 * 16000, -1, 1);
  Executor ex0 = m->model->executor(0);
  Executor ex1 = m->model->executor(1);
  auto run = [&](double* checksum) {
    for (int i = 0; i < 100; ++i) {
      Executor& ex = (i % 2) ? ex1 : ex0;
      const int batch = 1 + i % 2;
      std::copy(input.begin(), input.begin() + batch * 16000, ex.input(0));
      ASSERT_TRUE(ex.Invoke(batch).ok());
      for (int j = 0; j < 12 * batch; ++j) *checksum += ex.output_f32(0)[j];
    }
  };
  double expected = 0, checksum = 0;
  run(&expected);
  {
    Counting c;
    run(&checksum);
    EXPECT_TRUE(m->model->CheckGolden(1).ok());
    EXPECT_EQ(c.count(), 0) << "heap allocations on the audio inference path";
  }
  EXPECT_EQ(checksum, expected);
  EXPECT_NE(checksum, 0.0);
}

}  // namespace
}  // namespace ternd::runtime
