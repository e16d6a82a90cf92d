#include "runtime/machine.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <string>

#include "base/memory.h"
#include "runtime/kernels/cpu_features.h"

namespace ternd::runtime {

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, hardware, part;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    key.erase(key.find_last_not_of(" \t") + 1);
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    if (key == "model name" && !value.empty()) return value;
    if (key == "Hardware" && hardware.empty()) hardware = value;
    if (key == "CPU part" && part.empty()) part = "CPU part " + value;
  }
  if (!hardware.empty()) return hardware;
  if (!part.empty()) return part;
  return "unknown";
}

std::vector<std::string> CpuIsaFlags() {
  const CpuFeatures& f = GetCpuFeatures();
  std::vector<std::string> flags;
  if (f.ssse3) flags.push_back("ssse3");
  if (f.avx2) flags.push_back("avx2");
  if (f.avx512_vnni) flags.push_back("avx512_vnni");
  if (f.avx_vnni) flags.push_back("avx_vnni");
  if (f.neon) flags.push_back("neon");
  if (f.dotprod) flags.push_back("dotprod");
  return flags;
}

using Words64 = uint64_t __attribute__((vector_size(64)));
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
uint64_t
SumWords(const uint64_t* p, size_t words) {
  Words64 a0 = {}, a1 = {}, a2 = {}, a3 = {};
  for (size_t i = 0; i + 32 <= words; i += 32) {
    a0 += *reinterpret_cast<const Words64*>(p + i);
    a1 += *reinterpret_cast<const Words64*>(p + i + 8);
    a2 += *reinterpret_cast<const Words64*>(p + i + 16);
    a3 += *reinterpret_cast<const Words64*>(p + i + 24);
  }
  const Words64 a = a0 + a1 + a2 + a3;
  uint64_t s = 0;
  for (int j = 0; j < 8; ++j) s += a[j];
  return s;
}

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) +
         1e-9 * static_cast<double>(ts.tv_nsec);
}

namespace {
// Keeps the sums, so that the reads happen.
volatile uint64_t read_sink;
}  // namespace

double BestReadBandwidth(const uint64_t* words, size_t bytes, int passes) {
  double best = 0;
  for (int pass = 0; pass < passes; ++pass) {
    const double t0 = ThreadCpuSeconds();
    read_sink = SumWords(words, bytes / 8);
    const double t = ThreadCpuSeconds() - t0;
    if (t > 0) best = std::max(best, static_cast<double>(bytes) / t);
  }
  return best;
}

Result<double> MeasureReadBandwidth(size_t bytes, int passes) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + kHugePageBytes - 1) /
                         kHugePageBytes * kHugePageBytes;
  struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, FreeDeleter> buffer(
      static_cast<uint8_t*>(std::aligned_alloc(kHugePageBytes, rounded)));
  if (!buffer) {
    return ResourceExhausted(
        "cannot allocate %zu bytes to measure the read bandwidth", rounded);
  }
  AdviseHugePages(buffer.get(), rounded);
  std::memset(buffer.get(), 1, rounded);  // touch every page before timing
  return BestReadBandwidth(reinterpret_cast<const uint64_t*>(buffer.get()),
                           rounded, passes);
}

namespace {

// "32768K", "1M", "512" -> bytes; 0 when unreadable.
size_t ReadCacheSize(const std::string& dir) {
  std::ifstream type(dir + "/type"), size(dir + "/size");
  std::string t, v;
  if (!(type >> t) || t == "Instruction" || !(size >> v) || v.empty()) {
    return 0;
  }
  size_t unit = 1;
  if (v.back() == 'K') unit = size_t{1} << 10;
  if (v.back() == 'M') unit = size_t{1} << 20;
  return static_cast<size_t>(std::strtoull(v.c_str(), nullptr, 10)) * unit;
}

size_t FindLastLevelCacheBytes() {
  // The kernel's view first: index0.. are ordered by level; the last
  // data/unified one is the LLC. glibc's sysconf decodes CPUID itself and
  // can be far off in a virtual machine (a KVM guest can report 320 MiB
  // for an L3 that sysfs and lscpu give as 32 MiB).
  size_t last = 0;
  for (int i = 0; i < 8; ++i) {
    const size_t bytes = ReadCacheSize(
        "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i));
    if (bytes > 0) last = bytes;
  }
  if (last > 0) return last;
#if defined(_SC_LEVEL3_CACHE_SIZE)
  const long l3 = ::sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l3 > 0) return static_cast<size_t>(l3);
#endif
  return size_t{1} << 20;
}

}  // namespace

size_t LastLevelCacheBytes() {
  static const size_t bytes = FindLastLevelCacheBytes();
  return bytes;
}

}  // namespace ternd::runtime
