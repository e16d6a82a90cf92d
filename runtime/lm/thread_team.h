// A fixed team of threads for one language-model generation at a time.
//
// The team is created once (at model load) and never per token. Two kinds
// of round, both with the caller taking part as member 0:
//
// - Run() hands the same function to every member and returns when all
//   have finished it.
// - RunPhases() runs a list of phases of tasks (a language model: five
//   phases per layer and the output head, one round per Eval chunk). Any
//   member that is running takes the next task of the current phase; a
//   phase starts when every task of the one before has finished. Helpers
//   that are not running when a round starts, as happens on a machine with
//   more runnable threads than cores, are not waited for: the members that
//   are running do their tasks, so a busy machine costs the round the
//   helpers' help, not a wait for the scheduler at every phase.
//
// Waiting members (between rounds, and for a phase's last tasks) spin
// briefly and then sleep on a futex, so an idle team costs no CPU.
// Neither kind of round allocates: the work is a plain function pointer
// and a context.
//
// Thread-safety: one thread calls Run / RunPhases at a time (the
// generation's thread).
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

  // Phase p has the tasks [phase_end[p - 1], phase_end[p]) (phase_end[-1]
  // = 0), numbered from 0 within the phase; `phases` >= 1 and phase_end
  // non-decreasing. Each task runs exactly once, as task(ctx, member,
  // phase, index), on whichever member takes it; the tasks of a phase start
  // only after every task of the phases before it has finished, and what
  // they wrote is visible to them. Returns when every task has finished;
  // nothing uses `ctx` or `phase_end` after that. A team of one runs the
  // tasks in order on the caller.
  using Task = void (*)(void* ctx, int member, int phase, int index);
  void RunPhases(Task task, void* ctx, const int* phase_end, int phases);

  // How long a waiting member spins before it sleeps, in pause
  // iterations (a few microseconds: on a machine with fewer free cores
  // than members, spinning longer only steals the time of the member
  // being waited for).
  static constexpr int kSpinIterations = 4096;

 private:
  void Helper(int member);
  // Until no helper is between noticing a round and leaving it.
  void WaitHelpersOutside();
  // Takes and runs tasks of the current round until none is left.
  void TakeTasks(int member);
  // Returns once at least `count` tasks have finished.
  void WaitTasksDone(uint32_t count);

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
  // RunPhases: the round's tasks, the next one to take, how many have
  // finished, members sleeping until more have.
  bool phased_ = false;
  Task task_ = nullptr;
  const int* phase_end_ = nullptr;
  int total_tasks_ = 0;
  alignas(64) std::atomic<int> next_task_{0};
  alignas(64) std::atomic<uint32_t> tasks_done_{0};
  std::atomic<int> task_sleepers_{0};
  // Helpers between noticing a round and leaving it, and the last round
  // whose tasks have all finished: a helper that notices a round after it
  // closed leaves without touching it, and the next round's state is not
  // written while a helper is inside.
  alignas(64) std::atomic<int> inside_{0};
  std::atomic<uint32_t> closed_{0};
};

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_LM_THREAD_TEAM_H_
