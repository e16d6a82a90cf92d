// Recording into the registry never touches the heap: operator new and
// malloc are replaced by counting versions (as tests/unit/no_alloc_test.cc
// does), with positive controls proving the hooks are live.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#include "telemetry/metrics.h"

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

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
void Note() {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
}
}  // namespace

void* operator new(size_t n) {
  Note();
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) {
  Note();
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  Note();
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
  Note();
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t m) {
  Note();
  return __libc_calloc(n, m);
}
void* realloc(void* p, size_t n) {
  Note();
  return __libc_realloc(p, n);
}
void free(void* p) { __libc_free(p); }
}
#endif

namespace ternd::telemetry {
namespace {

TEST(TelemetryNoAllocTest, HooksAreLive) {
  g_allocations = 0;
  g_counting = true;
  std::vector<int>* v = new std::vector<int>(100);
  delete v;
#if TERND_COUNT_MALLOC
  void* volatile p = std::malloc(10);
  std::free(p);
#endif
  g_counting = false;
  EXPECT_GE(g_allocations.load(), 2);
}

TEST(TelemetryNoAllocTest, RecordingAllocatesNothing) {
  Registry r;
  Histogram* h = r.AddLatencyHistogram("ternd_compute_seconds", "c");
  Counter* c = r.AddCounter("ternd_requests_total", "r", "requests",
                            {{"call", "infer"}, {"status", "OK"}});
  Gauge* g = r.AddGauge("ternd_inflight_requests", "i", "requests");
  std::atomic<bool> go{false};
  std::atomic<long> in_thread{-1};
  // A fresh thread: its first record also picks its shard.
  std::thread worker([&] {
    while (!go.load()) {
    }
    const long before = g_allocations.load();
    for (int i = 0; i < 100000; ++i) {
      h->Record(1000 + i);
      c->Add();
      g->Add(1);
      g->Add(-1);
    }
    in_thread = g_allocations.load() - before;
  });
  g_allocations = 0;
  g_counting = true;
  go = true;
  for (int i = 0; i < 100000; ++i) {
    h->Record(int64_t{i} * 1000);
    c->Add(2);
    g->Set(i);
  }
  worker.join();
  g_counting = false;
  EXPECT_EQ(in_thread.load(), 0) << "allocations in the worker thread";
  EXPECT_EQ(g_allocations.load(), 0) << "heap allocations while recording";
  EXPECT_EQ(h->Snapshot().count, 200000u);
  EXPECT_EQ(c->Value(), 300000u);
}

}  // namespace
}  // namespace ternd::telemetry
