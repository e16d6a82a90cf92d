// Models for the daemon tests, built with runtime::ModelWriter: a small MLP
// with softmax and argmax outputs, fast or deliberately slow, with a golden
// pair computed by the runtime itself (or a wrong one, to test refusal).
#ifndef TERND_TESTS_DAEMON_DAEMON_TEST_MODELS_H_
#define TERND_TESTS_DAEMON_DAEMON_TEST_MODELS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace ternd::daemon_testing {

struct TestModelSpec {
  std::string name = "testnet";
  uint64_t version = 1;
  uint32_t inputs = 16;  // features of input "x"
  uint32_t hidden = 32;  // width of each ternary layer
  int layers = 1;        // ternary linear + relu blocks
  uint32_t classes = 4;  // outputs "probs" [classes] and "class" [1]
  uint32_t max_batch = 16;
  bool golden = true;
  bool wrong_golden = false;  // golden output that the model does not match
  uint32_t seed = 1;
  // The output layer's weights from this seed instead (0: `seed`'s
  // sequence): a version whose head alone was retrained.
  uint32_t head_seed = 0;
};

// A small fast model: 16 -> 32 -> 4.
TestModelSpec FastModel();
// A model that takes tens of milliseconds for a full batch, to keep workers
// busy: 1024 -> 4 x 2048 -> 4, max batch 64.
TestModelSpec SlowModel();

Result<std::vector<uint8_t>> BuildTestModel(const TestModelSpec& spec);
// The same as a string (what releases and bundles are made from); a
// failure to build fails the calling test.
std::string ModelBytes(const TestModelSpec& spec);
Status WriteTestModel(const TestModelSpec& spec, const std::string& path);

// Deterministic input rows for `spec`: rows x spec.inputs values.
std::vector<float> TestInput(const TestModelSpec& spec, uint32_t rows,
                             uint32_t seed);

}  // namespace ternd::daemon_testing

#endif  // TERND_TESTS_DAEMON_DAEMON_TEST_MODELS_H_
