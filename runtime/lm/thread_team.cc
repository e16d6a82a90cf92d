#include "runtime/lm/thread_team.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>

namespace ternd::runtime {
namespace {

void Pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield");
#endif
}

void FutexWait(std::atomic<uint32_t>* addr, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), FUTEX_WAIT_PRIVATE,
          expected, nullptr, nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>* addr) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), FUTEX_WAKE_PRIVATE,
          INT32_MAX, nullptr, nullptr, 0);
}

}  // namespace

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));

ThreadTeam::ThreadTeam(int members) : members_(members < 1 ? 1 : members) {
  threads_.reserve(members_ - 1);
  for (int m = 1; m < members_; ++m) {
    threads_.emplace_back([this, m] { Helper(m); });
    char name[16];
    std::snprintf(name, sizeof(name), "ternd-lm-%d", m % 100000);
    pthread_setname_np(threads_.back().native_handle(), name);
  }
}

ThreadTeam::~ThreadTeam() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  FutexWakeAll(&generation_);
  for (std::thread& t : threads_) t.join();
}

void ThreadTeam::Run(Work work, void* ctx) {
  if (members_ == 1) {
    work(ctx, 0, 1);
    return;
  }
  work_ = work;
  ctx_ = ctx;
  pending_.store(members_ - 1, std::memory_order_relaxed);
  const uint32_t gen = generation_.fetch_add(1, std::memory_order_seq_cst) + 1;
  // A helper announces itself in sleepers_ before it waits on the futex,
  // and the wait returns at once if the generation moved in between, so
  // the system call is only needed when someone is (about to be) asleep.
  if (sleepers_.load(std::memory_order_seq_cst) > 0) FutexWakeAll(&generation_);
  work(ctx, 0, members_);
  int spins = 0;
  uint32_t done;
  while ((done = done_.load(std::memory_order_acquire)) != gen) {
    if (++spins < kSpinIterations) {
      Pause();
    } else {
      caller_sleeping_.store(1, std::memory_order_seq_cst);
      FutexWait(&done_, done);
      caller_sleeping_.store(0, std::memory_order_seq_cst);
    }
  }
}

void ThreadTeam::Barrier() {
  if (members_ == 1) return;
  // The generation cannot move before this member arrives.
  const uint32_t gen = barrier_generation_.load(std::memory_order_acquire);
  if (barrier_arrived_.fetch_add(1, std::memory_order_acq_rel) ==
      members_ - 1) {
    // Last to arrive: the others wait for the generation to change, so the
    // count can be reset before it does.
    barrier_arrived_.store(0, std::memory_order_relaxed);
    barrier_generation_.store(gen + 1, std::memory_order_seq_cst);
    if (barrier_sleepers_.load(std::memory_order_seq_cst) > 0) {
      FutexWakeAll(&barrier_generation_);
    }
    return;
  }
  int spins = 0;
  while (barrier_generation_.load(std::memory_order_acquire) == gen) {
    if (++spins < kSpinIterations) {
      Pause();
    } else {
      barrier_sleepers_.fetch_add(1, std::memory_order_seq_cst);
      FutexWait(&barrier_generation_, gen);
      barrier_sleepers_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }
}

void ThreadTeam::Helper(int member) {
  // Not the current value: a helper that starts after the first Run must
  // still take part in it. Nothing runs before the constructor returns.
  uint32_t seen = 0;
  for (;;) {
    int spins = 0;
    uint32_t now;
    while ((now = generation_.load(std::memory_order_acquire)) == seen) {
      if (++spins < kSpinIterations) {
        Pause();
      } else {
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        FutexWait(&generation_, seen);
        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      }
    }
    seen = now;
    if (stop_.load(std::memory_order_acquire)) return;
    work_(ctx_, member, members_);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // The last helper of the round releases the caller.
      done_.store(now, std::memory_order_seq_cst);
      if (caller_sleeping_.load(std::memory_order_seq_cst))
        FutexWakeAll(&done_);
    }
  }
}

}  // namespace ternd::runtime
