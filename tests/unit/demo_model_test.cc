// models/demo.tern is what tools/make_demo_model writes, byte for byte, and
// it passes its own golden check.
#include <gtest/gtest.h>

#include <cstdlib>

#include "base/file.h"
#include "tests/support/test_models.h"

namespace ternd {
namespace {

TEST(DemoModelTest, ShippedFileIsReproducible) {
  const std::string out = ::testing::TempDir() + "/demo-regenerated.tern";
  const std::string cmd =
      std::string(MAKE_DEMO_MODEL_PATH) + " " + out + " > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  auto fresh = ReadFile(out);
  auto shipped = ReadFile(DEMO_MODEL_PATH);
  ASSERT_TRUE(fresh.ok() && shipped.ok());
  EXPECT_EQ(*fresh, *shipped)
      << "models/demo.tern differs from the generator's output: regenerate it "
         "with make-demo-model";
}

TEST(DemoModelTest, PassesGoldenCheckWithEveryKernel) {
  auto shipped = ReadFile(DEMO_MODEL_PATH);
  ASSERT_TRUE(shipped.ok());
  for (const char* kernel : {"ref", "auto"}) {
    auto m = testing::LoadModel(*shipped, kernel);
    ASSERT_TRUE(m.ok()) << m.status().message();
    Status s = m->model->CheckGolden(0);
    EXPECT_TRUE(s.ok()) << kernel << ": " << s.message();
  }
}

}  // namespace
}  // namespace ternd
