// Region markers for llvm-mca (bench/mca.sh): with TERND_MCA defined, the
// inner loop bodies of the kernels at batch 1 are delimited in the
// assembly by "# LLVM-MCA-BEGIN name" / "# LLVM-MCA-END name" comments, so
// llvm-mca can estimate their cycles per iteration for a given core.
// Without it (every real build) the markers are nothing.
#ifndef TERND_RUNTIME_KERNELS_MCA_MARKERS_H_
#define TERND_RUNTIME_KERNELS_MCA_MARKERS_H_

#if defined(TERND_MCA)
#define TERND_MCA_BEGIN(name) asm volatile("# LLVM-MCA-BEGIN " name)
#define TERND_MCA_END(name) asm volatile("# LLVM-MCA-END " name)
#else
#define TERND_MCA_BEGIN(name) \
  do {                        \
  } while (false)
#define TERND_MCA_END(name) \
  do {                      \
  } while (false)
#endif

#endif  // TERND_RUNTIME_KERNELS_MCA_MARKERS_H_
