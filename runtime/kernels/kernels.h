// The list of ternary kernel variants and the choice among them.
//
// Every variant compiled into this binary appears once in AllTernaryKernels(),
// best first; tests and benchmarks iterate that one list, so a new variant is
// tested bit-exact against the reference and benchmarked by being listed.
//
// Thread-safety: all functions are safe to call from any thread.
#ifndef TERND_RUNTIME_KERNELS_KERNELS_H_
#define TERND_RUNTIME_KERNELS_KERNELS_H_

#include <span>
#include <string_view>

#include "base/status.h"
#include "runtime/kernels/ternary_kernel.h"

namespace ternd::runtime {

// The variants. Each ISA-specific one lives in its own file compiled with its
// own instruction-set flags and is only called when its supported() is true.
extern const TernaryKernel kTernaryKernelRef;  // always available
// The 1.6-bit variants (tq1 layout, tq1_pack.h) have "-1.6" names.
extern const TernaryKernel kTernaryKernelRefTq1;  // always available
#if defined(__x86_64__)
extern const TernaryKernel kTernaryKernelAvx512Vnni;
extern const TernaryKernel kTernaryKernelAvxVnni;
extern const TernaryKernel kTernaryKernelAvx2;
extern const TernaryKernel kTernaryKernelSsse3;
extern const TernaryKernel kTernaryKernelAvx512VnniTq1;
extern const TernaryKernel kTernaryKernelAvx2Tq1;
#elif defined(__aarch64__)
extern const TernaryKernel kTernaryKernelNeonDot;
extern const TernaryKernel kTernaryKernelNeon;
extern const TernaryKernel kTernaryKernelNeonDotTq1;
extern const TernaryKernel kTernaryKernelNeonTq1;
#endif
void ternary_gemm__ref(const uint8_t* packed, size_t n, size_t k,
                       const QuantizedActivations& x, int32_t* y, size_t ldy);

// Every variant compiled in: the 2-bit ones best first, then the 1.6-bit
// ones; the reference is last.
std::span<const TernaryKernel* const> AllTernaryKernels();

// True for a variant of the 1.6-bit layout (tq1_pack.h).
bool IsTq1Kernel(const TernaryKernel& kernel);
// The 1.6-bit variant with the instruction set of `kernel` (itself when it
// is one): avx512vnni -> avx512vnni-1.6, avx2 and avxvnni -> avx2-1.6, ref ->
// ref-1.6; nullptr where there is none (ssse3, the ARM variants).
const TernaryKernel* Tq1Counterpart(const TernaryKernel& kernel);

// Runs `kernel` on fixed awkward shapes and compares with the reference.
// A variant is trusted only after this passes on the running CPU.
Status SelfTestTernaryKernel(const TernaryKernel& kernel);

// "auto": the first supported 2-bit variant that passes its self-test (the
// runtime adds its 1.6-bit counterpart per matrix, runtime.h), unless the
// environment variable TERND_KERNEL names a variant (kKernelEnvVar; how test
// binaries, e.g. under qemu, force one without a config file). Otherwise the
// named variant, which must be compiled in, supported by this CPU and pass
// its self-test; the error names the variants that are available.
inline constexpr char kKernelEnvVar[] = "TERND_KERNEL";
Result<const TernaryKernel*> SelectTernaryKernel(std::string_view name);

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_KERNELS_KERNELS_H_
