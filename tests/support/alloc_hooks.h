// Counting replacements of the global operator new/delete and (when not
// built with AddressSanitizer, which owns malloc itself) malloc, calloc,
// realloc and free, for the tests that prove a path never touches the heap.
//
// Include this header in exactly ONE source file of a test binary: it
// defines the replacements. Count with:
//   ternd::testing::AllocCounting c;  ...  EXPECT_EQ(c.count(), 0);
// and keep a positive control in each binary (the hooks must be live).
#ifndef TERND_TESTS_SUPPORT_ALLOC_HOOKS_H_
#define TERND_TESTS_SUPPORT_ALLOC_HOOKS_H_

#include <atomic>
#include <cstdlib>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#define TERND_COUNT_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TERND_COUNT_MALLOC 0
#endif
#endif
#ifndef TERND_COUNT_MALLOC
#define TERND_COUNT_MALLOC 1
#endif

namespace ternd::testing {

inline std::atomic<bool> g_alloc_counting{false};
inline std::atomic<long> g_allocations{0};

inline void NoteAllocation() {
  if (g_alloc_counting.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1);
  }
}

// Counts allocations (from any thread) while it lives.
class AllocCounting {
 public:
  AllocCounting() {
    g_allocations = 0;
    g_alloc_counting = true;
  }
  ~AllocCounting() { g_alloc_counting = false; }
  AllocCounting(const AllocCounting&) = delete;
  AllocCounting& operator=(const AllocCounting&) = delete;
  long count() const { return g_allocations.load(); }
};

}  // namespace ternd::testing

void* operator new(size_t n) {
  ternd::testing::NoteAllocation();
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) {
  ternd::testing::NoteAllocation();
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  ternd::testing::NoteAllocation();
  return std::malloc(n ? n : 1);
}
// The replacement new above allocates with malloc, so free is the match;
// g++ cannot see that once the sanitizers inline these.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#if TERND_COUNT_MALLOC
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void __libc_free(void*);
void* malloc(size_t n) {
  ternd::testing::NoteAllocation();
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t m) {
  ternd::testing::NoteAllocation();
  return __libc_calloc(n, m);
}
void* realloc(void* p, size_t n) {
  ternd::testing::NoteAllocation();
  return __libc_realloc(p, n);
}
void free(void* p) { __libc_free(p); }
}
#endif

#endif  // TERND_TESTS_SUPPORT_ALLOC_HOOKS_H_
