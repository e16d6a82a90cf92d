#include "base/memory.h"

#include <sys/mman.h>

namespace ternd {

void AdviseHugePages(void* p, size_t n) {
#ifdef MADV_HUGEPAGE
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
  const uintptr_t first = (begin + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  const uintptr_t last = (begin + n) & ~(kHugePageBytes - 1);
  if (last > first) {
    ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
#else
  (void)p;
  (void)n;
#endif
}

std::vector<uint8_t> MakeLargeBuffer(size_t n) {
  std::vector<uint8_t> v;
  v.reserve(n);  // allocated (mmap for large sizes), not yet touched
  if (n >= kHugePageBytes) AdviseHugePages(v.data(), n);
  v.resize(n);
  return v;
}

}  // namespace ternd
