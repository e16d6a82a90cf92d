// Whole-model inference: Executor::Invoke on the shipped models
// (models/*.tern), loaded as the daemon loads them (one runtime, kernel
// "auto"), batch 1 and 8, one thread, random inputs with a fixed seed.
// BM_Invoke also reports the model's arena use: the bytes of its slot
// (weights, metadata, activations planned for max_batch rows) and the
// scratch each worker adds.
//
// BM_Invoke/MODEL/batch:B is the plain call, Invoke(batch) with no profile.
// The per-op profiler's cost when off is BM_Invoke of this suite over
// BM_Invoke of the same suite built from the commit before the hook existed
// (140f983); BM_InvokeProfiled is the call with an OpProfile, the cost when
// on (docs/performance.md, "Model-level numbers").
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "runtime/format.h"
#include "runtime/runtime.h"

namespace ternd::runtime {
namespace {

struct Loaded {
  std::unique_ptr<Runtime> runtime;
  const LoadedModel* model = nullptr;
};

// Loads `name`.tern from the source tree's models/ and fills every input row
// with uniform values in [-1, 1] (seed 1), or in the int16 range for an
// audio input (one an AUDIO_FEATURES op reads). Exits on failure: a benchmark
// of a model that does not load has nothing to say.
Loaded Load(const std::string& name) {
  const std::string path = std::string(TERND_MODELS_DIR) + "/" + name + ".tern";
  Result<ModelFile> file = ModelFile::Open(path);
  if (!file.ok()) {
    std::fprintf(stderr, "%s\n", file.status().message());
    std::exit(1);
  }
  Loaded l;
  Result<std::unique_ptr<Runtime>> rt = Runtime::Create(RuntimeOptions{});
  if (!rt.ok()) {
    std::fprintf(stderr, "%s\n", rt.status().message());
    std::exit(1);
  }
  l.runtime = std::move(*rt);
  Result<const LoadedModel*> m = l.runtime->Load(0, *file);
  if (!m.ok()) {
    std::fprintf(stderr, "%s\n", m.status().message());
    std::exit(1);
  }
  l.model = *m;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const Executor ex = l.model->executor(0);
  for (int i = 0; i < l.model->num_inputs(); ++i) {
    const size_t count = static_cast<size_t>(l.model->max_batch()) *
                         l.model->input_info(i).features;
    const float scale = l.model->input_info(i).sample_rate ? 8000.0f : 1.0f;
    for (size_t j = 0; j < count; ++j) ex.input(i)[j] = scale * uniform(rng);
  }
  return l;
}

void BM_Invoke(benchmark::State& state, const std::string& name, int batch) {
  const Loaded loaded = Load(name);
  const Executor ex = loaded.model->executor(0);
  for (auto _ : state) {
    Status s = ex.Invoke(batch);
    if (!s.ok()) {
      state.SkipWithError(s.message());
      break;
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * batch);
  state.counters["slot_bytes"] =
      static_cast<double>(loaded.model->slot_bytes_used());
  state.counters["scratch_bytes"] =
      static_cast<double>(loaded.model->scratch_bytes_per_worker());
}

void BM_InvokeProfiled(benchmark::State& state, const std::string& name,
                       int batch) {
  const Loaded loaded = Load(name);
  const Executor ex = loaded.model->executor(0);
  std::vector<uint64_t> op_nanos(loaded.model->num_ops());
  OpProfile profile{op_nanos.data()};
  for (auto _ : state) {
    Status s = ex.Invoke(batch, &profile);
    if (!s.ok()) {
      state.SkipWithError(s.message());
      break;
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * batch);
}

// Registered before main runs (BENCHMARK_MAIN); the models load when a
// benchmark runs.
const bool kRegistered = [] {
  for (const char* name :
       {"demo", "digits", "digits_cnn", "vibration", "keywords"}) {
    for (int batch : {1, 8}) {
      const std::string label =
          std::string("BM_Invoke/") + name + "/batch:" + std::to_string(batch);
      benchmark::RegisterBenchmark(label.c_str(), BM_Invoke, std::string(name),
                                   batch)
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark((std::string("BM_InvokeProfiled/") + name +
                                    "/batch:" + std::to_string(batch))
                                       .c_str(),
                                   BM_InvokeProfiled, std::string(name), batch)
          ->Unit(benchmark::kMicrosecond);
    }
  }
  return true;
}();

}  // namespace
}  // namespace ternd::runtime

BENCHMARK_MAIN();
