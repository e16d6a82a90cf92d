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
  WaitHelpersOutside();
  phased_ = false;
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

void ThreadTeam::WaitHelpersOutside() {
  // Helpers leave at once (they only check that the round they noticed
  // closed), unless descheduled in between.
  int spins = 0;
  while (inside_.load(std::memory_order_seq_cst) != 0) {
    if (++spins < kSpinIterations) {
      Pause();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadTeam::RunPhases(Task task, void* ctx, const int* phase_end,
                           int phases) {
  if (members_ == 1) {
    int first = 0;
    for (int p = 0; p < phases; ++p) {
      for (int i = 0; i < phase_end[p] - first; ++i) task(ctx, 0, p, i);
      first = phase_end[p];
    }
    return;
  }
  WaitHelpersOutside();
  phased_ = true;
  task_ = task;
  ctx_ = ctx;
  phase_end_ = phase_end;
  total_tasks_ = phase_end[phases - 1];
  next_task_.store(0, std::memory_order_relaxed);
  tasks_done_.store(0, std::memory_order_relaxed);
  const uint32_t gen = generation_.fetch_add(1, std::memory_order_seq_cst) + 1;
  if (sleepers_.load(std::memory_order_seq_cst) > 0) FutexWakeAll(&generation_);
  TakeTasks(0);
  WaitTasksDone(static_cast<uint32_t>(total_tasks_));
  closed_.store(gen, std::memory_order_seq_cst);
}

void ThreadTeam::TakeTasks(int member) {
  int phase = 0;
  for (;;) {
    int t = next_task_.load(std::memory_order_acquire);
    if (t >= total_tasks_) return;
    while (phase_end_[phase] <= t) ++phase;
    const int first = phase > 0 ? phase_end_[phase - 1] : 0;
    if (tasks_done_.load(std::memory_order_acquire) <
        static_cast<uint32_t>(first)) {
      WaitTasksDone(static_cast<uint32_t>(first));
      continue;
    }
    if (!next_task_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel,
                                          std::memory_order_relaxed)) {
      continue;
    }
    task_(ctx_, member, phase, t - first);
    const uint32_t done =
        tasks_done_.fetch_add(1, std::memory_order_seq_cst) + 1;
    if (done == static_cast<uint32_t>(phase_end_[phase]) &&
        task_sleepers_.load(std::memory_order_seq_cst) > 0) {
      FutexWakeAll(&tasks_done_);
    }
  }
}

void ThreadTeam::WaitTasksDone(uint32_t count) {
  int spins = 0;
  uint32_t done;
  while ((done = tasks_done_.load(std::memory_order_acquire)) < count) {
    if (++spins < kSpinIterations) {
      Pause();
    } else {
      // The task that completes a phase wakes sleepers (TakeTasks); the
      // wait returns at once if the count moved since it was read.
      task_sleepers_.fetch_add(1, std::memory_order_seq_cst);
      FutexWait(&tasks_done_, done);
      task_sleepers_.fetch_sub(1, std::memory_order_seq_cst);
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
    inside_.fetch_add(1, std::memory_order_seq_cst);
    // A phased round may have ended (and another begun) before this helper
    // got here; a Run round waits for every helper, so it is always current.
    if (generation_.load(std::memory_order_seq_cst) == now &&
        closed_.load(std::memory_order_seq_cst) != now) {
      if (phased_) {
        TakeTasks(member);
      } else {
        work_(ctx_, member, members_);
        if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
          // The last helper of the round releases the caller.
          done_.store(now, std::memory_order_seq_cst);
          if (caller_sleeping_.load(std::memory_order_seq_cst))
            FutexWakeAll(&done_);
        }
      }
    }
    inside_.fetch_sub(1, std::memory_order_seq_cst);
  }
}

}  // namespace ternd::runtime
