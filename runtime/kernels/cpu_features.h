// What the running CPU (and the OS, for register state) can execute, read
// once from CPUID/XGETBV on x86-64 and from the auxiliary vector (HWCAP) on
// Linux/AArch64. Kernel variants ask here in their `supported()`.
//
// Tests can present another feature set (ScopedFakeCpuFeatures) to check
// what dispatch picks on CPUs this machine is not; the x86 decoding of the
// CPUID words is a pure function (DecodeX86Cpuid) so that it can be tested
// with the words of any CPU.
//
// Thread-safety: safe from any thread; the answer is computed once. A
// ScopedFakeCpuFeatures must not be created or destroyed while other
// threads call GetCpuFeatures().
#ifndef TERND_RUNTIME_KERNELS_CPU_FEATURES_H_
#define TERND_RUNTIME_KERNELS_CPU_FEATURES_H_

#include <cstdint>
#include <string>

namespace ternd::runtime {

struct CpuFeatures {
  // x86-64. Each flag also requires the OS to save the register state.
  bool ssse3 = false;        // SSSE3 (pmaddubsw, pshufb on xmm)
  bool avx2 = false;         // AVX2 (+ OS YMM state)
  bool avx512_vnni = false;  // AVX-512 F + BW + VL + VNNI (vpdpbusd on zmm)
  bool avx_vnni = false;     // 256-bit VEX vpdpbusd (AVX-VNNI) and AVX2
  bool fma_f16c = false;     // FMA3 and F16C (CPUID.1:ECX bits 12, 29) with
                             // OS YMM state: the language-model float code
  // AArch64.
  bool neon = false;     // ASIMD (always on armv8-a)
  bool dotprod = false;  // sdot/udot (armv8.2-a+dotprod)
};

// The features of the running CPU, or of the fake while a
// ScopedFakeCpuFeatures lives.
const CpuFeatures& GetCpuFeatures();

// The features of the running CPU, never a fake.
const CpuFeatures& DetectedCpuFeatures();

// The x86 CPUID and XGETBV words the detection reads.
struct X86CpuidWords {
  uint32_t leaf1_ecx = 0;    // CPUID.1:ECX (SSSE3 bit 9, FMA 12, OSXSAVE 27,
                             // AVX 28, F16C 29)
  uint32_t leaf7_ebx = 0;    // CPUID.(7,0):EBX (AVX2 5, AVX-512 F 16, BW 30,
                             // VL 31)
  uint32_t leaf7_ecx = 0;    // CPUID.(7,0):ECX (AVX-512 VNNI bit 11)
  uint32_t leaf7_1_eax = 0;  // CPUID.(7,1):EAX (AVX-VNNI bit 4)
  uint64_t xcr0 = 0;         // XGETBV(0), read only when OSXSAVE is set
};

// What a CPU with these words can run (pure; any architecture).
CpuFeatures DecodeX86Cpuid(const X86CpuidWords& words);

// The names (as kernel `isa` strings use them: "SSSE3", "AVX2", "AVX-512
// VNNI", "AVX-VNNI", "NEON", "dotprod") of the features `want` has and
// `have` lacks, comma-separated; "" when none.
std::string MissingCpuFeatures(const CpuFeatures& have,
                               const CpuFeatures& want);

// Tests only: GetCpuFeatures() returns `fake` while this object lives (not
// nested). A fake CPU may lack features this one has, never have one it
// lacks (checked: aborts otherwise): dispatch runs the self-test of the
// variant it picks, which must be able to execute. A test for a feature
// this CPU lacks checks MissingCpuFeatures(DetectedCpuFeatures(), fake)
// first and skips, naming it.
class ScopedFakeCpuFeatures {
 public:
  explicit ScopedFakeCpuFeatures(const CpuFeatures& fake);
  ~ScopedFakeCpuFeatures();
  ScopedFakeCpuFeatures(const ScopedFakeCpuFeatures&) = delete;
  ScopedFakeCpuFeatures& operator=(const ScopedFakeCpuFeatures&) = delete;

 private:
  CpuFeatures fake_;
};

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_KERNELS_CPU_FEATURES_H_
