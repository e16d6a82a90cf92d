#include "tests/daemon/daemon_test_models.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "base/file.h"
#include "runtime/format.h"
#include "runtime/runtime.h"

namespace ternd::daemon_testing {
namespace {

// Small deterministic generator (no dependence on <random>'s distributions,
// so models are identical on every standard library).
class Lcg {
 public:
  explicit Lcg(uint32_t seed) : state_(seed * 2654435761u + 1) {}
  uint32_t Next() {
    state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(state_ >> 33);
  }
  float Uniform(float lo, float hi) {
    return lo + (hi - lo) * static_cast<float>(Next() % 1000000) / 1e6f;
  }
  int8_t Ternary() {
    return static_cast<int8_t>(static_cast<int>(Next() % 3) - 1);
  }

 private:
  uint64_t state_;
};

model::ModelHeader Header(const TestModelSpec& spec) {
  model::ModelHeader h;
  h.set_name(spec.name);
  h.set_version(spec.version);
  h.set_architecture("graph");
  h.set_description("daemon test model");
  model::Graph* g = h.mutable_graph();
  g->set_max_batch(spec.max_batch);
  model::ValueInfo* in = g->add_inputs();
  in->set_name("x");
  in->set_dtype(model::F32);
  in->add_shape(spec.inputs);
  std::string prev = "x";
  for (int l = 0; l < spec.layers; ++l) {
    const std::string n = std::to_string(l);
    model::Op* lin = g->add_ops();
    lin->set_type(model::TERNARY_LINEAR);
    lin->add_inputs(prev);
    lin->set_output("h" + n);
    lin->set_weight("w" + n);
    lin->set_bias("b" + n);
    model::Op* act = g->add_ops();
    act->set_type(model::RELU);
    act->add_inputs("h" + n);
    act->set_output("a" + n);
    prev = "a" + n;
  }
  model::Op* head = g->add_ops();
  head->set_type(model::LINEAR);
  head->add_inputs(prev);
  head->set_output("logits");
  head->set_weight("wout");
  model::Op* soft = g->add_ops();
  soft->set_type(model::SOFTMAX);
  soft->add_inputs("logits");
  soft->set_output("probs");
  model::Op* arg = g->add_ops();
  arg->set_type(model::ARGMAX);
  arg->add_inputs("logits");
  arg->set_output("class");
  model::ValueInfo* probs = g->add_outputs();
  probs->set_name("probs");
  probs->set_dtype(model::F32);
  probs->add_shape(spec.classes);
  model::ValueInfo* cls = g->add_outputs();
  cls->set_name("class");
  cls->set_dtype(model::I32);
  cls->add_shape(1);
  return h;
}

void AddWeights(const TestModelSpec& spec, runtime::ModelWriter* w) {
  Lcg rng(spec.seed);
  uint32_t k = spec.inputs;
  for (int l = 0; l < spec.layers; ++l) {
    const std::string n = std::to_string(l);
    std::vector<int8_t> codes(static_cast<size_t>(spec.hidden) * k);
    for (int8_t& c : codes) c = rng.Ternary();
    const float scale = 1.0f / std::sqrt(static_cast<float>(k));
    w->AddTernary("w" + n, spec.hidden, k, codes, std::vector<float>{scale});
    std::vector<float> bias(spec.hidden);
    for (float& b : bias) b = rng.Uniform(-0.1f, 0.1f);
    w->AddF32("b" + n, {spec.hidden}, bias);
    k = spec.hidden;
  }
  std::vector<float> out(static_cast<size_t>(spec.classes) * k);
  Lcg head(spec.head_seed);
  for (float& v : out) {
    v = spec.head_seed != 0 ? head.Uniform(-0.5f, 0.5f)
                            : rng.Uniform(-0.5f, 0.5f);
  }
  w->AddF32("wout", {spec.classes, k}, out);
}

}  // namespace

TestModelSpec FastModel() { return TestModelSpec(); }

TestModelSpec SlowModel() {
  TestModelSpec s;
  s.name = "slownet";
  s.inputs = 1024;
  s.hidden = 2048;
  s.layers = 4;
  s.max_batch = 64;
  return s;
}

std::vector<float> TestInput(const TestModelSpec& spec, uint32_t rows,
                             uint32_t seed) {
  Lcg rng(seed + 1000);
  std::vector<float> v(static_cast<size_t>(rows) * spec.inputs);
  for (float& x : v) x = rng.Uniform(-1.0f, 1.0f);
  return v;
}

Result<std::vector<uint8_t>> BuildTestModel(const TestModelSpec& spec) {
  model::ModelHeader header = Header(spec);
  if (!spec.golden) {
    runtime::ModelWriter w(header);
    AddWeights(spec, &w);
    return w.Finish();
  }
  // Run the model once to learn its golden output, then write it again
  // with the golden pair.
  runtime::ModelWriter plain(header);
  AddWeights(spec, &plain);
  TERND_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, plain.Finish());
  TERND_ASSIGN_OR_RETURN(runtime::ModelFile file,
                         runtime::ModelFile::Parse(std::move(bytes), "golden"));
  runtime::RuntimeOptions options;
  options.slots = 1;
  options.workers = 1;
  options.arena_bytes = file.file_size() * 4 + (size_t{16} << 20);
  TERND_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Runtime> rt,
                         runtime::Runtime::Create(options));
  TERND_ASSIGN_OR_RETURN(const runtime::LoadedModel* m, rt->Load(0, file));
  const uint32_t rows = 2;
  const std::vector<float> input = TestInput(spec, rows, 7);
  runtime::Executor ex = m->executor(0);
  std::copy(input.begin(), input.end(), ex.input(0));
  TERND_RETURN_IF_ERROR(ex.Invoke(rows));
  std::vector<float> probs(ex.output_f32(0),
                           ex.output_f32(0) + rows * spec.classes);
  std::vector<int32_t> cls(ex.output_i32(1), ex.output_i32(1) + rows);
  if (spec.wrong_golden) probs[0] += 0.5f;

  model::GoldenPair* g = header.mutable_golden();
  g->add_input_tensors("golden_x");
  g->add_output_tensors("golden_probs");
  g->add_output_tensors("golden_class");
  g->set_tolerance(1e-4f);
  runtime::ModelWriter w(header);
  AddWeights(spec, &w);
  w.AddF32("golden_x", {rows, spec.inputs}, input);
  w.AddF32("golden_probs", {rows, spec.classes}, probs);
  w.AddI32("golden_class", {rows, 1}, cls);
  return w.Finish();
}

std::string ModelBytes(const TestModelSpec& spec) {
  Result<std::vector<uint8_t>> b = BuildTestModel(spec);
  EXPECT_TRUE(b.ok()) << b.status().message();
  return b.ok() ? std::string(b->begin(), b->end()) : std::string();
}

Status WriteTestModel(const TestModelSpec& spec, const std::string& path) {
  TERND_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, BuildTestModel(spec));
  return WriteFileAtomically(path, bytes);
}

}  // namespace ternd::daemon_testing
