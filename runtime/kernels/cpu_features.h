// What the running CPU (and the OS, for register state) can execute, read
// once from CPUID/XGETBV on x86-64 and from the auxiliary vector (HWCAP) on
// Linux/AArch64. Kernel variants ask here in their `supported()`.
//
// Thread-safety: safe from any thread; the answer is computed once.
#ifndef TERND_RUNTIME_KERNELS_CPU_FEATURES_H_
#define TERND_RUNTIME_KERNELS_CPU_FEATURES_H_

namespace ternd::runtime {

struct CpuFeatures {
  // x86-64. Each flag also requires the OS to save the register state.
  bool ssse3 = false;  // SSSE3 (pmaddubsw, pshufb on xmm)
  bool avx2 = false;
  bool avx512_vnni = false;  // AVX-512 F + BW + VL + VNNI (vpdpbusd on zmm)
  bool avx_vnni = false;     // 256-bit VEX vpdpbusd
  // AArch64.
  bool neon = false;     // ASIMD (always on armv8-a)
  bool dotprod = false;  // sdot/udot (armv8.2-a+dotprod)
};

const CpuFeatures& GetCpuFeatures();

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_KERNELS_CPU_FEATURES_H_
