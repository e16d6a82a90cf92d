#include "runtime/kernels/cpu_features.h"

#include <atomic>
#include <cstdint>

#include "base/check.h"

#if defined(__x86_64__)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace ternd::runtime {
namespace {

std::atomic<const CpuFeatures*> fake_features{nullptr};

#if defined(__x86_64__)
uint64_t ReadXcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures Detect() {
  X86CpuidWords words;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return CpuFeatures{};
  words.leaf1_ecx = ecx;
  if ((ecx >> 27) & 1) words.xcr0 = ReadXcr0();  // OSXSAVE: XGETBV exists
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    words.leaf7_ebx = ebx;
    words.leaf7_ecx = ecx;
  }
  if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) {
    words.leaf7_1_eax = eax;
  }
  return DecodeX86Cpuid(words);
}
#elif defined(__aarch64__) && defined(__linux__)
CpuFeatures Detect() {
  CpuFeatures f;
  const unsigned long hwcap = getauxval(AT_HWCAP);
  f.neon = (hwcap & HWCAP_ASIMD) != 0;
  f.dotprod = f.neon && (hwcap & HWCAP_ASIMDDP) != 0;
  return f;
}
#else
CpuFeatures Detect() { return CpuFeatures{}; }
#endif

}  // namespace

CpuFeatures DecodeX86Cpuid(const X86CpuidWords& w) {
  auto bit = [](uint64_t word, int i) { return ((word >> i) & 1) != 0; };
  CpuFeatures f;
  f.ssse3 = bit(w.leaf1_ecx, 9);  // SSE state is always enabled on x86-64
  const bool osxsave = bit(w.leaf1_ecx, 27);
  const bool avx = bit(w.leaf1_ecx, 28);
  if (!osxsave || !avx) return f;
  const bool os_ymm = (w.xcr0 & 0x6) == 0x6;    // SSE + AVX state
  const bool os_zmm = (w.xcr0 & 0xe6) == 0xe6;  // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool avx2 = bit(w.leaf7_ebx, 5);
  const bool avx512f = bit(w.leaf7_ebx, 16);
  const bool avx512bw = bit(w.leaf7_ebx, 30);
  const bool avx512vl = bit(w.leaf7_ebx, 31);
  const bool avx512vnni = bit(w.leaf7_ecx, 11);
  f.avx2 = os_ymm && avx2;
  f.avx512_vnni = os_zmm && avx512f && avx512bw && avx512vl && avx512vnni;
  f.avx_vnni = f.avx2 && bit(w.leaf7_1_eax, 4);
  f.fma_f16c = os_ymm && bit(w.leaf1_ecx, 12) && bit(w.leaf1_ecx, 29);
  return f;
}

const CpuFeatures& DetectedCpuFeatures() {
  static const CpuFeatures features = Detect();
  return features;
}

const CpuFeatures& GetCpuFeatures() {
  const CpuFeatures* fake = fake_features.load(std::memory_order_acquire);
  return fake != nullptr ? *fake : DetectedCpuFeatures();
}

std::string MissingCpuFeatures(const CpuFeatures& have,
                               const CpuFeatures& want) {
  const struct {
    bool CpuFeatures::*flag;
    const char* name;
  } kNames[] = {
      {&CpuFeatures::ssse3, "SSSE3"},
      {&CpuFeatures::avx2, "AVX2"},
      {&CpuFeatures::avx512_vnni, "AVX-512 VNNI"},
      {&CpuFeatures::avx_vnni, "AVX-VNNI"},
      {&CpuFeatures::neon, "NEON"},
      {&CpuFeatures::dotprod, "dotprod"},
  };
  std::string missing;
  for (const auto& n : kNames) {
    if (want.*n.flag && !(have.*n.flag)) {
      if (!missing.empty()) missing += ", ";
      missing += n.name;
    }
  }
  return missing;
}

ScopedFakeCpuFeatures::ScopedFakeCpuFeatures(const CpuFeatures& fake)
    : fake_(fake) {
  // Only features this CPU has: the variants dispatch picks must run.
  TERND_CHECK(MissingCpuFeatures(DetectedCpuFeatures(), fake).empty());
  const CpuFeatures* none = nullptr;
  TERND_CHECK(fake_features.compare_exchange_strong(none, &fake_));
}

ScopedFakeCpuFeatures::~ScopedFakeCpuFeatures() {
  fake_features.store(nullptr, std::memory_order_release);
}

}  // namespace ternd::runtime
