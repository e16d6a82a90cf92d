// What a report says about the machine a model runs on: the CPU model, the
// instruction sets the kernels can use, and the single-core memory read
// bandwidth, measured. Shared by `ternctl bench` and the kernel benchmarks
// (bench/ternary_kernels_bench.cc), so both state the same ceiling.
//
// Thread-safety: all functions are safe to call from any thread.
#ifndef TERND_RUNTIME_MACHINE_H_
#define TERND_RUNTIME_MACHINE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace ternd::runtime {

// The CPU model as /proc/cpuinfo names it ("model name", or on ARM
// "Hardware"/"CPU part"), or "unknown".
std::string CpuModelName();

// The instruction-set extensions of CpuFeatures that this CPU has, by the
// names docs/kernels.md uses: "ssse3", "avx2", "avx512_vnni", "avx_vnni",
// "neon", "dotprod".
std::vector<std::string> CpuIsaFlags();

// Bytes of the last-level data cache: sysconf(_SC_LEVEL3_CACHE_SIZE), else
// the highest-level data or unified cache in
// /sys/devices/system/cpu/cpu0/cache/index*/size (L2 on CPUs without L3,
// as on many ARM boards), else 1 MiB. Read once.
size_t LastLevelCacheBytes();

// Sum of `words` 64-bit words with four independent 64-byte vector
// accumulators, so the loop is bound by the memory system and not by an add
// chain. Compiled for the widest vector unit the CPU has, picked at run
// time. REQUIRES: p 64-byte aligned; words a multiple of 32.
uint64_t SumWords(const uint64_t* p, size_t words);

// CPU time of the calling thread, in seconds. Rates are stated against CPU
// time so that time the thread spends descheduled on a shared machine does
// not count against the memory system.
double ThreadCpuSeconds();

// The best of `passes` reads of [words, words + bytes) with SumWords, in
// bytes per second of thread CPU time.
double BestReadBandwidth(const uint64_t* words, size_t bytes, int passes);

// Allocates `bytes` (rounded up to 2 MiB, on huge pages where offered),
// touches it, and returns BestReadBandwidth over it; frees it again. Use a
// buffer well above the last-level cache to measure DRAM.
Result<double> MeasureReadBandwidth(size_t bytes, int passes);

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_MACHINE_H_
