// Writes the bundled demo model, models/demo.tern, from deterministic
// weights: a small sensor classifier (16 readings in, 4 classes out) that
// exercises both ternary scale modes, the norms, the activations, a residual
// add, a float head, softmax and argmax. Its weights are not trained; the
// trained models come from python/ (docs/training.md).
//
// Usage: make-demo-model OUT.tern
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "base/file.h"
#include "runtime/graph_builder.h"

namespace {

// Small deterministic generator so the file is byte-for-byte reproducible.
class Lcg {
 public:
  explicit Lcg(uint32_t seed) : state_(seed) {}
  uint32_t Next() {
    state_ = state_ * 1664525u + 1013904223u;
    return state_ >> 8;
  }
  float Uniform(float lo, float hi) {
    return lo + (hi - lo) * static_cast<float>(Next() % 65536) / 65535.0f;
  }
  int8_t Ternary() {
    return static_cast<int8_t>(static_cast<int>(Next() % 3) - 1);
  }

 private:
  uint32_t state_;
};

std::vector<int8_t> TernaryWeights(Lcg& rng, size_t count) {
  std::vector<int8_t> w(count);
  for (int8_t& v : w) v = rng.Ternary();
  return w;
}

std::vector<float> Floats(Lcg& rng, size_t count, float lo, float hi) {
  std::vector<float> v(count);
  for (float& x : v) x = rng.Uniform(lo, hi);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make-demo-model OUT.tern\n");
    return 2;
  }
  using ternd::model::ARGMAX;
  using ternd::model::GELU;
  using ternd::model::RELU2;
  using ternd::model::SOFTMAX;
  Lcg rng(20261123);
  ternd::runtime::GraphBuilder b("demo-sensor", 1, 16);
  b.SetDescription(
      "Demo sensor classifier with deterministic (untrained) weights: 16 "
      "readings in, 4 class probabilities and the class index out.");
  b.SetMetadata("generator", "tools/make_demo_model");
  b.Input("x", 16);
  b.TernaryLinear("x", "fc1", 32, TernaryWeights(rng, 32 * 16),
                  std::vector<float>{0.25f}, Floats(rng, 32, -0.1f, 0.1f));
  b.Unary(RELU2, "fc1", "act1");
  b.RmsNorm("act1", "norm1", Floats(rng, 32, 0.8f, 1.2f), 1e-5f);
  b.TernaryLinear("norm1", "fc2", 32, TernaryWeights(rng, 32 * 32),
                  Floats(rng, 32, 0.05f, 0.3f));
  b.Unary(GELU, "fc2", "act2");
  b.Add("act2", "norm1", "residual");
  b.LayerNorm("residual", "norm2", Floats(rng, 32, 0.8f, 1.2f),
              Floats(rng, 32, -0.1f, 0.1f), 1e-5f);
  b.Linear("norm2", "head", 4, Floats(rng, 4 * 32, -0.5f, 0.5f),
           Floats(rng, 4, -0.1f, 0.1f));
  b.Unary(SOFTMAX, "head", "probs");
  b.Unary(ARGMAX, "head", "class");
  b.Output("probs");
  b.Output("class");

  std::vector<float> golden = Floats(rng, 2 * 16, -2.0f, 2.0f);
  ternd::Result<std::vector<uint8_t>> bytes =
      b.FinishWithGolden({golden}, 2, 1e-5f);
  if (!bytes.ok()) {
    std::fprintf(stderr, "make-demo-model: %s\n", bytes.status().message());
    return 1;
  }
  ternd::Status s = ternd::WriteFileAtomically(argv[1], *bytes);
  if (!s.ok()) {
    std::fprintf(stderr, "make-demo-model: %s\n", s.message());
    return 1;
  }
  std::printf("wrote %s (%zu bytes)\n", argv[1], bytes->size());
  return 0;
}
