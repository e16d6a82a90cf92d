// Ternary kernel benchmarks: every variant in AllTernaryKernels() on the
// linear-layer shapes of BitNet b1.58 2B4T, batch 1 and 8, one thread.
//
// Timed region: per-token int8 quantization of float activations (the
// variant's `quantize`, bit-identical to QuantizeActivations) plus the
// kernel, as the runtime runs them.
//
// Modes:
//   warm  one packed weight matrix reused every iteration (cache-resident
//         when it fits in the caches).
//   cold  cycles through copies of the packed matrix totalling at least
//         kColdBytes, so the weights stream from memory.
// BM_ReadBandwidth measures the single-core memory read bandwidth in the same
// run; cold benchmarks report their weight stream as a fraction of it
// (`of_read_bw`), in the same unit (2-bit weights per second = 4 x bytes/s).
//
// Counters: GFLOPS = 2 * N * K * batch / time; weight_B/s = packed weight
// bytes read per second; weights/s = N * K / time. Cold benchmarks also
// report `of_2bit_roofline` = weights/s over 4 x read bytes/s: the speed of
// light of any 2-bit layout; the 1.6-bit variants (names ending in -1.6)
// can pass 1 because they read 1.6 bits per weight.
//
// Instruction ceilings, same run: BM_VpdpbusdPeak (vpdpbusd zmm, the AVX-512
// VNNI kernels) and BM_VpmaddubswPeak (vpmaddubsw ymm, the AVX2 kernels).
// The variants also include "avxvnni-evex" where the CPU has AVX-512 VNNI:
// the avxvnni source built for the EVEX encoding (bench/CMakeLists.txt).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/memory.h"
#include "runtime/kernels/cpu_features.h"
#include "runtime/kernels/kernels.h"
#include "runtime/machine.h"
#include "runtime/ops.h"
#include "runtime/ternary_pack.h"

namespace ternd::runtime {

#if defined(TERND_HAS_AVXVNNI_EVEX)
// The avxvnni source built for the EVEX encoding (bench/CMakeLists.txt).
extern const TernaryKernel kTernaryKernelAvxVnniEvex;
#endif

namespace {

// Every variant of AllTernaryKernels(), then the benchmark-only ones.
std::vector<const TernaryKernel*> BenchedKernels() {
  std::vector<const TernaryKernel*> all(AllTernaryKernels().begin(),
                                        AllTernaryKernels().end());
#if defined(TERND_HAS_AVXVNNI_EVEX)
  all.push_back(&kTernaryKernelAvxVnniEvex);
#endif
  return all;
}

constexpr size_t kColdBytes = size_t{512} << 20;  // >= 512 MiB of weights
constexpr size_t kBandwidthBytes = size_t{1} << 30;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t[], FreeDeleter>;

// On 2 MiB pages where the kernel offers them, as the runtime's arena is
// (base/memory.h): weights and the bandwidth reference alike.
Buffer Aligned(size_t bytes) {
  const size_t rounded =
      (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(kHugePageBytes, rounded));
  AdviseHugePages(p, rounded);
  std::memset(p, 0, rounded);  // touch every page before timing
  return Buffer(p);
}

const Buffer& BandwidthBuffer() {
  static Buffer buffer = [] {
    Buffer b = Aligned(kBandwidthBytes);
    std::memset(b.get(), 1, kBandwidthBytes);
    return b;
  }();
  return buffer;
}

// Best of a few passes over 1 GiB, in bytes per second; measured once.
double ReadBandwidth() {
  static const double bandwidth = BestReadBandwidth(
      reinterpret_cast<const uint64_t*>(BandwidthBuffer().get()),
      kBandwidthBytes, 5);
  return bandwidth;
}

void BM_ReadBandwidth(benchmark::State& state) {
  const auto* words =
      reinterpret_cast<const uint64_t*>(BandwidthBuffer().get());
  for (auto _ : state) {
    benchmark::DoNotOptimize(SumWords(words, kBandwidthBytes / 8));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(kBandwidthBytes));
  state.counters["weights/s"] = benchmark::Counter(
      4.0 * kBandwidthBytes, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_TernaryGemm(benchmark::State& state, const TernaryKernel* kernel,
                    size_t n, size_t k, int batch, bool cold) {
  if (!kernel->supported()) {
    state.SkipWithError((std::string("CPU lacks ") + kernel->isa).c_str());
    return;
  }
  std::mt19937 rng(42);
  std::vector<int8_t> w(n * k);
  for (int8_t& v : w) v = static_cast<int8_t>(static_cast<int>(rng() % 3) - 1);
  std::vector<uint8_t> canonical(n * TernaryRowBytes(k));
  PackTernary(w.data(), n, k, canonical.data());
  w = {};

  const size_t packed_bytes = kernel->packed_size(n, k);
  const size_t slot = (packed_bytes + 4095) / 4096 * 4096;
  const size_t copies = cold ? (kColdBytes + slot - 1) / slot : 1;
  Buffer weights = Aligned(slot * copies);
  kernel->pack(canonical.data(), n, k, weights.get());
  for (size_t c = 1; c < copies; ++c) {
    std::memcpy(weights.get() + c * slot, weights.get(), packed_bytes);
  }

  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(batch) * k);
  for (float& v : x) v = normal(rng);
  const size_t stride = ActivationStride(k);
  Buffer q = Aligned(stride * batch);
  std::vector<int32_t> sums(batch);
  std::vector<float> dequant(batch);
  std::vector<int32_t> y(static_cast<size_t>(batch) * n);
  const QuantizedActivations qa{reinterpret_cast<const int8_t*>(q.get()),
                                stride, sums.data(), batch, k};

  const double read_bw = cold ? ReadBandwidth() : 0;
  size_t c = 0;
  const double t0 = ThreadCpuSeconds();
  for (auto _ : state) {
    kernel->quantize(x.data(), k, batch, k, reinterpret_cast<int8_t*>(q.get()),
                     stride, sums.data(), dequant.data());
    kernel->gemm(weights.get() + c * slot, n, k, qa, y.data(), n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    if (++c == copies) c = 0;
  }
  const double t1 = ThreadCpuSeconds();

  using benchmark::Counter;
  const double flops = 2.0 * static_cast<double>(n) * k * batch;
  state.counters["GFLOPS"] =
      Counter(flops * 1e-9, Counter::kIsIterationInvariantRate);
  state.counters["weight_B/s"] =
      Counter(static_cast<double>(packed_bytes),
              Counter::kIsIterationInvariantRate, Counter::kIs1024);
  state.counters["weights/s"] =
      Counter(static_cast<double>(n) * k, Counter::kIsIterationInvariantRate);
  if (cold) {
    // Weights streamed per second over what one core can read, both as
    // bytes (so also as 2-bit weights).
    const double streamed =
        static_cast<double>(packed_bytes) * state.iterations() / (t1 - t0);
    state.counters["of_read_bw"] = streamed / read_bw;
    state.counters["of_2bit_roofline"] = static_cast<double>(n) * k *
                                         state.iterations() / (t1 - t0) /
                                         (4.0 * read_bw);
    state.counters["read_B/s"] =
        benchmark::Counter(read_bw, Counter::kDefaults, Counter::kIs1024);
  }
}

// The quantization alone (part of every kernel benchmark's timed region).
void BM_Quantize(benchmark::State& state, const TernaryKernel* kernel) {
  if (!kernel->supported()) {
    state.SkipWithError((std::string("CPU lacks ") + kernel->isa).c_str());
    return;
  }
  const size_t k = static_cast<size_t>(state.range(0));
  const int batch = static_cast<int>(state.range(1));
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(batch) * k);
  for (float& v : x) v = normal(rng);
  const size_t stride = ActivationStride(k);
  Buffer q = Aligned(stride * batch);
  std::vector<int32_t> sums(batch);
  std::vector<float> dequant(batch);
  for (auto _ : state) {
    kernel->quantize(x.data(), k, batch, k, reinterpret_cast<int8_t*>(q.get()),
                     stride, sums.data(), dequant.data());
    benchmark::DoNotOptimize(q.get());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * batch *
                          static_cast<int64_t>(k));
}

#if defined(__x86_64__) && defined(__GNUC__)
// The ceiling of the AVX-512 VNNI kernels: 16 independent vpdpbusd zmm per
// loop iteration, operands in registers, nothing else. Each does 64 int8
// multiply-adds, so GOPS = 128 x instructions per second.
__attribute__((target("avx512f,avx512vnni"))) void BM_VpdpbusdPeak(
    benchmark::State& state) {
  if (!GetCpuFeatures().avx512_vnni) {
    state.SkipWithError("CPU lacks AVX-512 VNNI");
    return;
  }
  constexpr int64_t kPerCall = 16 * 1000;
  for (auto _ : state) {
    for (int i = 0; i < 1000; ++i) {
      __asm__ volatile(
          "vpdpbusd %%zmm30, %%zmm31, %%zmm0\n vpdpbusd %%zmm30, %%zmm31, "
          "%%zmm1\n"
          "vpdpbusd %%zmm30, %%zmm31, %%zmm2\n vpdpbusd %%zmm30, %%zmm31, "
          "%%zmm3\n"
          "vpdpbusd %%zmm30, %%zmm31, %%zmm4\n vpdpbusd %%zmm30, %%zmm31, "
          "%%zmm5\n"
          "vpdpbusd %%zmm30, %%zmm31, %%zmm6\n vpdpbusd %%zmm30, %%zmm31, "
          "%%zmm7\n"
          "vpdpbusd %%zmm30, %%zmm31, %%zmm8\n vpdpbusd %%zmm30, %%zmm31, "
          "%%zmm9\n"
          "vpdpbusd %%zmm30, %%zmm31, %%zmm10\n vpdpbusd %%zmm30, %%zmm31, "
          "%%zmm11\n"
          "vpdpbusd %%zmm30, %%zmm31, %%zmm12\n vpdpbusd %%zmm30, %%zmm31, "
          "%%zmm13\n"
          "vpdpbusd %%zmm30, %%zmm31, %%zmm14\n vpdpbusd %%zmm30, %%zmm31, "
          "%%zmm15\n" ::
              : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
                "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
                "xmm15");
    }
  }
  using benchmark::Counter;
  state.counters["vpdpbusd/s"] =
      Counter(kPerCall, Counter::kIsIterationInvariantRate);
  state.counters["GOPS"] =
      Counter(kPerCall * 128 * 1e-9, Counter::kIsIterationInvariantRate);
}

// The instruction ceiling of the AVX2 (and SSSE3) kernels: 12 independent
// vpmaddubsw ymm per loop iteration, register operands. Each multiplies 32
// byte pairs and adds them in pairs, i.e. 32 weights x token, so GOPS (in
// the GFLOPS unit of the kernels: 2 per weight x token) = 64 x instructions
// per second. The kernels also add every result (vpaddw), so they reach at
// most about half of it.
__attribute__((target("avx2"))) void BM_VpmaddubswPeak(
    benchmark::State& state) {
  if (!GetCpuFeatures().avx2) {
    state.SkipWithError("CPU lacks AVX2");
    return;
  }
  constexpr int64_t kPerCall = 12 * 1000;
  for (auto _ : state) {
    for (int i = 0; i < 1000; ++i) {
      __asm__ volatile(
          "vpmaddubsw %%ymm14, %%ymm15, %%ymm0\n"
          "vpmaddubsw %%ymm14, %%ymm15, %%ymm1\n"
          "vpmaddubsw %%ymm14, %%ymm15, %%ymm2\n"
          "vpmaddubsw %%ymm14, %%ymm15, %%ymm3\n"
          "vpmaddubsw %%ymm14, %%ymm15, %%ymm4\n"
          "vpmaddubsw %%ymm14, %%ymm15, %%ymm5\n"
          "vpmaddubsw %%ymm14, %%ymm15, %%ymm6\n"
          "vpmaddubsw %%ymm14, %%ymm15, %%ymm7\n"
          "vpmaddubsw %%ymm14, %%ymm15, %%ymm8\n"
          "vpmaddubsw %%ymm14, %%ymm15, %%ymm9\n"
          "vpmaddubsw %%ymm14, %%ymm15, %%ymm10\n"
          "vpmaddubsw %%ymm14, %%ymm15, %%ymm11\n" ::
              : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
                "xmm8", "xmm9", "xmm10", "xmm11");
    }
  }
  using benchmark::Counter;
  state.counters["vpmaddubsw/s"] =
      Counter(kPerCall, Counter::kIsIterationInvariantRate);
  state.counters["GOPS"] =
      Counter(kPerCall * 64 * 1e-9, Counter::kIsIterationInvariantRate);
}
#endif

void RegisterAll() {
  struct Shape {
    size_t n, k;
  };
  // (N x K) of BitNet b1.58 2B4T: attention q/o, k/v, FFN up/gate, FFN down.
  static constexpr Shape kShapes[] = {
      {2560, 2560}, {640, 2560}, {6912, 2560}, {2560, 6912}};
#if defined(__x86_64__) && defined(__GNUC__)
  benchmark::RegisterBenchmark("BM_VpdpbusdPeak", BM_VpdpbusdPeak)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_VpmaddubswPeak", BM_VpmaddubswPeak)
      ->Unit(benchmark::kMicrosecond);
#endif
  benchmark::RegisterBenchmark("BM_ReadBandwidth", BM_ReadBandwidth)
      ->Unit(benchmark::kMillisecond);
  for (const TernaryKernel* kernel : BenchedKernels()) {
    benchmark::RegisterBenchmark(
        (std::string("BM_Quantize/") + kernel->name).c_str(), BM_Quantize,
        kernel)
        ->ArgNames({"k", "batch"})
        ->Args({2560, 1})
        ->Args({2560, 8})
        ->Args({6912, 1})
        ->Args({6912, 8})
        ->Unit(benchmark::kMicrosecond);
  }
  for (const TernaryKernel* kernel : BenchedKernels()) {
    for (bool cold : {false, true}) {
      for (int batch : {1, 8}) {
        for (const Shape& s : kShapes) {
          const std::string name =
              std::string("BM_TernaryGemm/") + kernel->name + "/" +
              std::to_string(s.n) + "x" + std::to_string(s.k) +
              "/batch:" + std::to_string(batch) + (cold ? "/cold" : "/warm");
          benchmark::RegisterBenchmark(name.c_str(), BM_TernaryGemm, kernel,
                                       s.n, s.k, batch, cold)
              ->Unit(benchmark::kMicrosecond);
        }
      }
    }
  }
}

}  // namespace
}  // namespace ternd::runtime

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  ternd::runtime::RegisterAll();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
