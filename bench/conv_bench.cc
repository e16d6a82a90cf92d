// Convolutions: a CONV2D / CONV1D op as the runtime runs it (one model of
// one op, Executor::Invoke, batch 1, one thread, kernel "auto") against the
// ternary GEMM of the same shape on its own (the chosen variant's gemm on
// [positions, KH*KW*C_in] int8 rows already quantized and unfolded, 16 rows
// per call as the op makes them). The difference is what quantizing the
// sample, im2col and dequantization cost. Both report GFLOPS as
// 2 * positions * C_out * patch per second.
//
// Run: build/bench/conv_bench (docs/performance.md, "Convolutional models").
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "runtime/format.h"
#include "runtime/graph_builder.h"
#include "runtime/kernels/kernels.h"
#include "runtime/runtime.h"

namespace ternd::runtime {
namespace {

struct Shape {
  const char* name;
  bool one_d;
  uint32_t h, w, c, c_out, k, stride, pad;
  uint32_t out_h() const { return one_d ? 1 : (h + 2 * pad - k) / stride + 1; }
  uint32_t out_w() const { return (w + 2 * pad - k) / stride + 1; }
  uint32_t patch() const { return (one_d ? k : k * k) * c; }
  double Flops() const {
    return 2.0 * out_h() * out_w() * c_out * static_cast<double>(patch());
  }
};

// digits_cnn's three layers, a small-vision layer, two 1-D audio layers and
// keywords.tern's four (1-D over 98 log-mel frames, kernels 5, 5, 3, 3).
const Shape kShapes[] = {
    {"digits_conv1/8x8x1->16", false, 8, 8, 1, 16, 3, 1, 1},
    {"digits_conv2/8x8x16->32", false, 8, 8, 16, 32, 3, 1, 1},
    {"digits_conv3/4x4x32->64", false, 4, 4, 32, 64, 3, 1, 1},
    {"vision/32x32x32->64", false, 32, 32, 32, 64, 3, 1, 1},
    {"audio1d/98x40->64", true, 1, 98, 40, 64, 3, 1, 1},
    {"audio1d/49x64->64", true, 1, 49, 64, 64, 3, 1, 1},
    {"keywords_conv1/98x40->64/k5", true, 1, 98, 40, 64, 5, 1, 2},
    {"keywords_conv2/49x64->64/k5", true, 1, 49, 64, 64, 5, 1, 2},
    {"keywords_conv3/24x64->96/k3", true, 1, 24, 64, 96, 3, 1, 1},
    {"keywords_conv4/12x96->128/k3", true, 1, 12, 96, 128, 3, 1, 1},
};

[[noreturn]] void Die(const char* what, const Status& s) {
  std::fprintf(stderr, "%s: %s\n", what, s.message());
  std::exit(1);
}

void BM_ConvOp(benchmark::State& state, Shape s) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> tern(-1, 1);
  std::vector<int8_t> w(static_cast<size_t>(s.c_out) * s.patch());
  for (int8_t& v : w) v = static_cast<int8_t>(tern(rng));
  GraphBuilder b("conv", 1, 1);
  if (s.one_d) {
    b.Input("x", std::vector<uint32_t>{s.w, s.c});
    b.Conv(model::CONV1D, "x", "y", s.c_out, {{s.k}, {s.stride}, {s.pad}}, w,
           std::vector<float>{0.5f});
  } else {
    b.Input("x", std::vector<uint32_t>{s.h, s.w, s.c});
    b.Conv(model::CONV2D, "x", "y", s.c_out,
           {{s.k, s.k}, {s.stride, s.stride}, {s.pad, s.pad}}, w,
           std::vector<float>{0.5f});
  }
  b.Output("y");
  Result<std::vector<uint8_t>> bytes = b.Finish();
  if (!bytes.ok()) Die("model", bytes.status());
  Result<ModelFile> file = ModelFile::Parse(std::move(*bytes), "conv");
  if (!file.ok()) Die("parse", file.status());
  Result<std::unique_ptr<Runtime>> rt = Runtime::Create(RuntimeOptions{});
  if (!rt.ok()) Die("runtime", rt.status());
  Result<const LoadedModel*> m = (*rt)->Load(0, *file);
  if (!m.ok()) Die("load", m.status());
  const Executor ex = (*m)->executor(0);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (uint32_t i = 0; i < s.h * s.w * s.c; ++i) ex.input(0)[i] = uniform(rng);
  for (auto _ : state) {
    Status st = ex.Invoke(1);
    if (!st.ok()) {
      state.SkipWithError(st.message());
      break;
    }
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] = benchmark::Counter(
      s.Flops() * 1e-9 * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
  state.SetLabel((*m)->op_info(0).kernel->name);
}

void BM_GemmSameShape(benchmark::State& state, Shape s) {
  Result<const TernaryKernel*> k = SelectTernaryKernel("auto");
  if (!k.ok()) Die("kernel", k.status());
  const TernaryKernel& kernel = **k;
  const size_t n = s.c_out, kk = s.patch();
  const size_t rows = static_cast<size_t>(s.out_h()) * s.out_w();
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> code(0, 2), act(-128, 127);
  std::vector<uint8_t> canonical(n * ((kk + 3) / 4));
  for (size_t r = 0; r < n; ++r) {
    for (size_t c = 0; c < (kk + 3) / 4 * 4; ++c) {
      const int v = c < kk ? code(rng) : 1;
      canonical[r * ((kk + 3) / 4) + c / 4] |=
          static_cast<uint8_t>(v << (2 * (c % 4)));
    }
  }
  auto aligned = [](size_t bytes) {
    return static_cast<uint8_t*>(
        std::aligned_alloc(64, (bytes + 63) / 64 * 64));
  };
  uint8_t* packed = aligned(kernel.packed_size(n, kk));
  kernel.pack(canonical.data(), n, kk, packed);
  const size_t stride = ActivationStride(kk);
  int8_t* q = reinterpret_cast<int8_t*>(aligned(rows * stride));
  std::vector<int32_t> sums(rows, 0);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < stride; ++c) {
      q[r * stride + c] = c < kk ? static_cast<int8_t>(act(rng)) : 0;
      sums[r] += q[r * stride + c];
    }
  }
  int32_t* acc = reinterpret_cast<int32_t*>(
      aligned(sizeof(int32_t) * kMaxKernelBatch * n));
  for (auto _ : state) {
    for (size_t r0 = 0; r0 < rows; r0 += kMaxKernelBatch) {
      const int nb =
          static_cast<int>(std::min<size_t>(kMaxKernelBatch, rows - r0));
      const QuantizedActivations qa{q + r0 * stride, stride, sums.data() + r0,
                                    nb, kk};
      kernel.gemm(packed, n, kk, qa, acc, n);
    }
    benchmark::DoNotOptimize(acc);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] = benchmark::Counter(
      s.Flops() * 1e-9 * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
  state.SetLabel(kernel.name);
  std::free(packed);
  std::free(q);
  std::free(acc);
}

const bool kRegistered = [] {
  for (const Shape& s : kShapes) {
    benchmark::RegisterBenchmark((std::string("BM_ConvOp/") + s.name).c_str(),
                                 BM_ConvOp, s)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(
        (std::string("BM_GemmSameShape/") + s.name).c_str(), BM_GemmSameShape,
        s)
        ->Unit(benchmark::kMicrosecond);
  }
  return true;
}();

}  // namespace
}  // namespace ternd::runtime

BENCHMARK_MAIN();
