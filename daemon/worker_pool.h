// The inference worker pool: a fixed set of threads, each running the
// executor of its own worker index on the loaded model, fed from one bounded
// queue; finished jobs come back to the event loop through an eventfd.
//
//   loop thread                     worker threads
//   Submit(job) --> [queue] -->     job->Run(worker) on executor(worker)
//   eventfd readable <-- [done] <-- Complete
//   TakeCompleted()
//
// The pool never allocates after Create: the queue and the completion list
// are sized for `capacity` jobs, and jobs are owned by the caller (the
// server keeps a free list), so no job is ever lost or copied.
//
// Thread-safety: Submit, TakeCompleted and Stop are called from the loop
// thread only; the pool's own threads do the rest.
#ifndef TERND_DAEMON_WORKER_POOL_H_
#define TERND_DAEMON_WORKER_POOL_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "base/clock.h"  // MonotonicNs: the times in InferJob
#include "base/status.h"
#include "runtime/runtime.h"

namespace ternd::daemon {

struct InferJob;
struct QualitySink;  // quality_stats.h

// Work that is not a client's request (shadow validation): a worker calls
// Run with the job instead of running the job's model.
class PoolTask {
 public:
  virtual void Run(int worker, InferJob* job) = 0;

 protected:
  ~PoolTask() = default;
};

// One Infer call on its way through the pool. Filled by the loop, run by a
// worker, answered by the loop. Buffers keep their capacity between uses.
struct InferJob {
  // Set by the loop before Submit.
  uint64_t connection_id = 0;
  uint64_t request_id = 0;
  int slot = 0;
  const runtime::LoadedModel* model = nullptr;
  // Which placement of a model this is (every load counts one up): models
  // sit at their slot's base address, so `model` alone does not tell a
  // reloaded model from the one before it.
  uint64_t model_load = 0;
  int batch = 0;
  // Inputs in model input order, each batch * features floats, back to back.
  std::vector<float> inputs;
  // Model output indices to return, in the order asked for.
  std::vector<int> outputs;
  int64_t received_ns = 0;  // CLOCK_MONOTONIC
  int64_t deadline_ns = 0;  // CLOCK_MONOTONIC; 0: none
  // Null for a client's request; else what the worker runs instead.
  PoolTask* task = nullptr;
  // Where the worker records the answer's quality statistics; null: not.
  const QualitySink* quality = nullptr;

  // Set by the worker.
  Status status;
  // The selected outputs' rows, back to back (f32 or i32, 4 bytes each).
  std::vector<uint8_t> results;
  int64_t started_ns = 0;
  int64_t finished_ns = 0;
};

class WorkerPool {
 public:
  // Starts `workers` threads; at most `capacity` jobs may be submitted and not
  // yet taken back with TakeCompleted.
  static Result<std::unique_ptr<WorkerPool>> Create(int workers,
                                                    size_t capacity);
  ~WorkerPool();  // Stop()s
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Readable (EPOLLIN) when completed jobs are waiting.
  int event_fd() const { return event_fd_; }
  int workers() const { return static_cast<int>(threads_.size()); }

  // REQUIRES: fewer than `capacity` jobs outstanding.
  void Submit(InferJob* job);
  // Appends every completed job to *done and clears the eventfd.
  void TakeCompleted(std::vector<InferJob*>* done);
  // Lets running jobs finish, drops queued ones into the completed list with
  // status CANCELLED, and joins the threads. Idempotent.
  void Stop();

  // Runs `job` on executor `worker` of its model, in the calling thread
  // (what each worker thread does with a job; the loop uses it for inline
  // requests with its own executor index).
  static void Run(int worker, InferJob* job);

 private:
  WorkerPool() = default;
  void WorkerMain(int worker);

  int event_fd_ = -1;
  size_t capacity_ = 0;
  std::vector<std::thread> threads_;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::vector<InferJob*> queue_;  // ring of capacity_ entries
  size_t queue_head_ = 0, queue_size_ = 0;
  bool stopping_ = false;

  std::mutex done_mu_;
  std::vector<InferJob*> done_;
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_WORKER_POOL_H_
