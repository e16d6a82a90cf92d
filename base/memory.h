// Large buffers (the runtime arena, a model being staged or read) on
// transparent huge pages where the kernel offers them.
//
// First touching fresh anonymous memory costs a page fault per 4 KiB page;
// on virtual machines that is several microseconds each, which made writing
// a fresh 127 MiB buffer cost ~0.5 s against ~20 ms with 2 MiB pages
// (docs/performance.md, "OTA download"). Huge pages also mean fewer TLB
// misses when kernels stream weights. With
// /sys/kernel/mm/transparent_hugepage/enabled at "never" this changes
// nothing; at "madvise" (Debian's default) it is what turns them on.
#ifndef TERND_BASE_MEMORY_H_
#define TERND_BASE_MEMORY_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ternd {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// Asks for huge pages for the 2 MiB-aligned part of [p, p + n), before it
// is first touched. Best effort: errors (no THP support) are ignored.
void AdviseHugePages(void* p, size_t n);

// A zero-filled vector of `n` bytes whose storage was advised
// (AdviseHugePages) before the zero fill touched it.
std::vector<uint8_t> MakeLargeBuffer(size_t n);

}  // namespace ternd

#endif  // TERND_BASE_MEMORY_H_
