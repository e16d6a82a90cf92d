// A fixed team of threads for one language-model generation at a time.
//
// The team is created once (at model load) and never per token: Run() hands
// the same function to every member and returns when all have finished it,
// with the caller taking part as member 0. Inside the work, Barrier() waits
// until every member has reached it, so one Run can hold a whole token's
// steps (a language model runs one Run per Eval chunk and a few barriers
// per layer). Waiting members (between Runs, and at a barrier) spin briefly
// and then sleep on a futex, so an idle team costs no CPU.
//
// Run never allocates: the work is a plain function pointer and a context.
//
// Thread-safety: one thread calls Run at a time (the generation's thread);
// Barrier is called only by the members of a running round, each the same
// number of times.
#ifndef TERND_RUNTIME_LM_THREAD_TEAM_H_
#define TERND_RUNTIME_LM_THREAD_TEAM_H_

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace ternd::runtime {

class ThreadTeam {
 public:
  using Work = void (*)(void* ctx, int member, int members);

  // `members` >= 1 (1: Run calls the work inline). Helpers are named
  // "ternd-lm-N".
  explicit ThreadTeam(int members);
  ~ThreadTeam();
  ThreadTeam(const ThreadTeam&) = delete;
  ThreadTeam& operator=(const ThreadTeam&) = delete;

  int members() const { return members_; }
  void Run(Work work, void* ctx);
  // Inside a round: returns when every member has called it (as often as
  // this member has). Writes made before it by any member are visible to
  // every member after it. A no-op for a team of one.
  void Barrier();

  // How long a waiting member spins before it sleeps, in pause
  // iterations (a few microseconds: on a machine with fewer free cores
  // than members, spinning longer only steals the time of the member
  // being waited for).
  static constexpr int kSpinIterations = 4096;

 private:
  void Helper(int member);

  const int members_;
  std::vector<std::thread> threads_;
  Work work_ = nullptr;
  void* ctx_ = nullptr;
  // Incremented by Run to start a round; helpers wait for a change.
  alignas(64) std::atomic<uint32_t> generation_{0};
  // Helpers still working on the current round.
  alignas(64) std::atomic<int> pending_{0};
  // The last generation every helper has finished; Run waits for it.
  alignas(64) std::atomic<uint32_t> done_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<int> caller_sleeping_{0};
  std::atomic<bool> stop_{false};
  // Barrier: members arrived at the current one, and its generation
  // (incremented by the last to arrive, which releases the others).
  alignas(64) std::atomic<int> barrier_arrived_{0};
  alignas(64) std::atomic<uint32_t> barrier_generation_{0};
  std::atomic<int> barrier_sleepers_{0};
};

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_LM_THREAD_TEAM_H_
