// The per-matrix weight layout at load: 2-bit or 1.6-bit by a size
// threshold, forced either way by option, environment or kernel name, the
// same outputs in every layout, and what a LoadedModel reports.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include "runtime/graph_builder.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/tq1_pack.h"
#include "runtime/machine.h"
#include "runtime/runtime.h"
#include "tests/support/test_models.h"

namespace ternd::runtime {
namespace {

using testing::Rng;

// A smaller product (640 x 20) and a larger one (256 x 640) in a row.
std::vector<uint8_t> TwoMatrices() {
  Rng rng(9);
  GraphBuilder b("layouts", 1, 20);
  b.Input("x", 20);
  b.TernaryLinear("x", "small", 640, rng.Ternary(640 * 20),
                  std::vector<float>{0.5f});
  b.TernaryLinear("small", "big", 256, rng.Ternary(256 * 640),
                  rng.Floats(256, 0.01f, 0.1f), rng.Floats(256, -1, 1));
  b.Output("big");
  auto bytes = b.Finish();
  EXPECT_TRUE(bytes.ok()) << bytes.status().message();
  return *bytes;
}

struct Loaded {
  std::unique_ptr<ModelFile> file;
  std::unique_ptr<Runtime> runtime;
  const LoadedModel* model = nullptr;
};

Result<Loaded> Load(const std::string& kernel, const std::string& layout,
                    size_t threshold) {
  Loaded out;
  TERND_ASSIGN_OR_RETURN(ModelFile file,
                         ModelFile::Parse(TwoMatrices(), "layouts"));
  out.file = std::make_unique<ModelFile>(std::move(file));
  RuntimeOptions options;
  options.slots = 1;
  options.kernel = kernel;
  options.weight_layout = layout;
  options.tq1_threshold_bytes = threshold;
  options.arena_bytes = size_t{8} << 20;
  TERND_ASSIGN_OR_RETURN(out.runtime, Runtime::Create(options));
  TERND_ASSIGN_OR_RETURN(out.model, out.runtime->Load(0, *out.file));
  return out;
}

class WeightLayoutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* v = std::getenv(kWeightLayoutEnvVar)) saved_ = v;
    unsetenv(kWeightLayoutEnvVar);
    Result<const TernaryKernel*> best = SelectTernaryKernel("auto");
    ASSERT_TRUE(best.ok());
    best_ = *best;
    if (Tq1Counterpart(*best_) == nullptr || best_ == &kTernaryKernelRef) {
      GTEST_SKIP() << "no SIMD 1.6-bit variant for '" << best_->name << "'";
    }
  }
  void TearDown() override {
    if (!saved_.empty()) setenv(kWeightLayoutEnvVar, saved_.c_str(), 1);
  }
  const TernaryKernel* best_ = nullptr;
  std::string saved_;
};

TEST_F(WeightLayoutTest, LargeMatricesTakeTheOneSixBitLayout) {
  // Between the two matrices' 2-bit sizes.
  const size_t threshold = best_->packed_size(256, 640) - 1;
  ASSERT_GT(threshold, best_->packed_size(640, 20));
  auto m = Load("auto", "auto", threshold);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->runtime->tq1_threshold_bytes(), threshold);
  EXPECT_EQ(m->model->op_info(0).kernel, best_);
  EXPECT_EQ(m->model->op_info(1).kernel, Tq1Counterpart(*best_));
  EXPECT_EQ(m->model->tq1_matrices(), 1);
  EXPECT_EQ(m->model->ternary_matrices(), 2);
  EXPECT_EQ(m->model->op_info(1).weight_bytes,
            Tq1PackedSize(256, 640) + 256 * 4 + 256 * 4);
}

TEST_F(WeightLayoutTest, EveryLayoutGivesTheSameOutputs) {
  auto two = Load("auto", "2bit", 0);
  auto tq1 = Load("auto", "1.6bit", 0);
  auto mixed = Load("auto", "auto", best_->packed_size(256, 640) - 1);
  ASSERT_TRUE(two.ok() && tq1.ok() && mixed.ok());
  EXPECT_EQ(two->model->tq1_matrices(), 0);
  EXPECT_EQ(tq1->model->tq1_matrices(), 2);
  EXPECT_LT(tq1->model->weight_bytes(), two->model->weight_bytes());
  Rng rng(3);
  for (int batch : {1, 5, 17}) {
    Eigen::MatrixXf x(batch, 20);
    for (int i = 0; i < x.size(); ++i) x.data()[i] = rng.Uniform(-2, 2);
    const auto a = testing::RunModel(*two->model, {x});
    EXPECT_EQ(a[0], testing::RunModel(*tq1->model, {x})[0]) << batch;
    EXPECT_EQ(a[0], testing::RunModel(*mixed->model, {x})[0]) << batch;
  }
}

TEST_F(WeightLayoutTest, DefaultThresholdIsTheLastLevelCache) {
  auto m = Load("auto", "auto", 0);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->runtime->tq1_threshold_bytes(), LastLevelCacheBytes());
  EXPECT_GE(LastLevelCacheBytes(), size_t{64} << 10);
  EXPECT_EQ(m->model->tq1_matrices(), 0);  // both far below any LLC
}

// The last-level cache is the kernel's (sysfs), not glibc's CPUID reading,
// which virtual machines can make ten times too large.
TEST(LastLevelCacheTest, IsTheKernelsView) {
  size_t last = 0;
  for (int i = 0; i < 8; ++i) {
    const std::string dir =
        "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i);
    std::ifstream type(dir + "/type"), size(dir + "/size");
    std::string t, v;
    if (!(type >> t) || t == "Instruction" || !(size >> v) || v.empty()) {
      continue;
    }
    size_t unit = v.back() == 'K' ? 1024 : v.back() == 'M' ? 1 << 20 : 1;
    last = std::stoull(v) * unit;
  }
  if (last == 0) GTEST_SKIP() << "no cache sizes in sysfs on this machine";
  EXPECT_EQ(LastLevelCacheBytes(), last);
}

TEST_F(WeightLayoutTest, EnvironmentAndKernelNameForceALayout) {
  setenv(kWeightLayoutEnvVar, "1.6bit", 1);
  auto env = Load("auto", "auto", 0);
  unsetenv(kWeightLayoutEnvVar);
  ASSERT_TRUE(env.ok()) << env.status().message();
  EXPECT_EQ(env->model->tq1_matrices(), 2);
  auto named = Load(Tq1Counterpart(*best_)->name, "auto", 0);
  ASSERT_TRUE(named.ok()) << named.status().message();
  EXPECT_EQ(named->model->tq1_matrices(), 2);
  auto ref = Load("ref", "1.6bit", 0);
  ASSERT_TRUE(ref.ok()) << ref.status().message();
  EXPECT_EQ(ref->model->op_info(0).kernel, &kTernaryKernelRefTq1);
  // The reference stays 2-bit under auto, whatever the size.
  auto ref_auto = Load("ref", "auto", 1);
  ASSERT_TRUE(ref_auto.ok()) << ref_auto.status().message();
  EXPECT_EQ(ref_auto->model->tq1_matrices(), 0);
}

TEST_F(WeightLayoutTest, RefusesContradictionsAndUnknownNames) {
  auto bad = Load("auto", "1.58bit", 0);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("1.6bit"),
            std::string::npos);
  EXPECT_FALSE(Load(Tq1Counterpart(*best_)->name, "2bit", 0).ok());
}

}  // namespace
}  // namespace ternd::runtime
