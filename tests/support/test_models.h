// Shared helpers for the tests: deterministic random data, loading a model
// into a runtime, and an independent float reference of the graph ops built
// on Eigen3.
#ifndef TERND_TESTS_SUPPORT_TEST_MODELS_H_
#define TERND_TESTS_SUPPORT_TEST_MODELS_H_

#include <Eigen/Dense>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "runtime/format.h"
#include "runtime/runtime.h"

namespace ternd::testing {

class Rng {
 public:
  explicit Rng(uint32_t seed) : gen_(seed) {}
  float Uniform(float lo, float hi) {
    return std::uniform_real_distribution<float>(lo, hi)(gen_);
  }
  int Int(int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(gen_);
  }
  std::vector<int8_t> Ternary(size_t count);
  std::vector<float> Floats(size_t count, float lo, float hi);

 private:
  std::mt19937 gen_;
};

// A model parsed and loaded into its own runtime (one slot, one worker
// unless told otherwise).
struct Loaded {
  std::unique_ptr<runtime::ModelFile> file;
  std::unique_ptr<runtime::Runtime> runtime;
  const runtime::LoadedModel* model = nullptr;
  const runtime::LoadedModel* loaded_model() const { return model; }
};
Result<Loaded> LoadModel(std::vector<uint8_t> bytes,
                         const std::string& kernel = "auto", int workers = 1);

// Runs `model` on `inputs` (one matrix [batch, features] per graph input) and
// returns every output as a float matrix (int32 outputs converted).
std::vector<Eigen::MatrixXf> RunModel(
    const runtime::LoadedModel& model,
    const std::vector<Eigen::MatrixXf>& inputs);

enum class ReferenceMode {
  // Ternary linear in real arithmetic: x · (W * scale)^T, no activation
  // quantization. Differs from the runtime by the int8 rounding error.
  kFloat,
  // Ternary linear with the activation quantization of docs/model-format.md
  // and an int32 Eigen product: agrees with the runtime up to float rounding
  // in the other ops.
  kQuantized,
};

// Evaluates the graph of `file` with Eigen, independently of runtime/ops.cc.
// Returns every value by name (argmax values as floats).
std::map<std::string, Eigen::MatrixXf> ReferenceRun(
    const runtime::ModelFile& file, const std::vector<Eigen::MatrixXf>& inputs,
    ReferenceMode mode);

// The int8 quantization of one activation row as the format specifies it,
// written separately from runtime/ops.cc: returns q and sets *dequant.
Eigen::VectorXi ReferenceQuantize(const Eigen::VectorXf& x, float* dequant);

// Dense int matrix [n, k] of a TERNARY2 tensor.
Eigen::MatrixXi TernaryMatrix(const runtime::TensorView& t);

}  // namespace ternd::testing

#endif  // TERND_TESTS_SUPPORT_TEST_MODELS_H_
