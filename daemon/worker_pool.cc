#include "daemon/worker_pool.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base/check.h"
#include "daemon/quality_stats.h"

namespace ternd::daemon {

Result<std::unique_ptr<WorkerPool>> WorkerPool::Create(int workers,
                                                       size_t capacity) {
  if (workers < 1 || capacity < 1) {
    return InvalidArgument(
        "worker pool needs >= 1 worker and capacity, got "
        "%d and %zu",
        workers, capacity);
  }
  std::unique_ptr<WorkerPool> pool(new WorkerPool());
  pool->event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (pool->event_fd_ < 0) return ErrnoError(errno, "eventfd");
  pool->capacity_ = capacity;
  pool->queue_.assign(capacity, nullptr);
  pool->done_.reserve(capacity);
  for (int w = 0; w < workers; ++w) {
    pool->threads_.emplace_back(&WorkerPool::WorkerMain, pool.get(), w);
  }
  return pool;
}

WorkerPool::~WorkerPool() {
  Stop();
  if (event_fd_ >= 0) close(event_fd_);
}

void WorkerPool::Submit(InferJob* job) {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    TERND_CHECK(queue_size_ < capacity_);
    queue_[(queue_head_ + queue_size_) % capacity_] = job;
    ++queue_size_;
  }
  queue_cv_.notify_one();
}

void WorkerPool::TakeCompleted(std::vector<InferJob*>* done) {
  uint64_t count;
  // Clear first: a completion that lands after the read re-arms the fd.
  while (read(event_fd_, &count, sizeof(count)) < 0 && errno == EINTR) {
  }
  std::lock_guard<std::mutex> lock(done_mu_);
  done->insert(done->end(), done_.begin(), done_.end());
  done_.clear();
}

void WorkerPool::Stop() {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  queue_cv_.notify_all();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  std::lock_guard<std::mutex> lock(queue_mu_);
  std::lock_guard<std::mutex> done_lock(done_mu_);
  while (queue_size_ > 0) {
    InferJob* job = queue_[queue_head_];
    queue_head_ = (queue_head_ + 1) % capacity_;
    --queue_size_;
    job->status = Errorf(StatusCode::kCancelled, "the daemon is stopping");
    done_.push_back(job);
  }
}

void WorkerPool::WorkerMain(int worker) {
  char name[16];
  std::snprintf(name, sizeof name, "ternd-infer%d", worker);
  pthread_setname_np(pthread_self(), name);
  for (;;) {
    InferJob* job;
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      queue_cv_.wait(lock, [this] { return stopping_ || queue_size_ > 0; });
      if (stopping_) return;
      job = queue_[queue_head_];
      queue_head_ = (queue_head_ + 1) % capacity_;
      --queue_size_;
    }
    if (job->task) {
      job->task->Run(worker, job);
    } else {
      Run(worker, job);
    }
    bool was_empty;
    {
      std::lock_guard<std::mutex> lock(done_mu_);
      was_empty = done_.empty();
      done_.push_back(job);
    }
    // One wake-up per batch of completions: the loop takes all of them.
    if (was_empty) {
      const uint64_t one = 1;
      while (write(event_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
      }
    }
  }
}

void WorkerPool::Run(int worker, InferJob* job) {
  job->started_ns = MonotonicNs();
  job->results.clear();
  if (job->deadline_ns != 0 && job->started_ns > job->deadline_ns) {
    job->status = Errorf(
        StatusCode::kDeadlineExceeded,
        "deadline passed after %lld us in the queue",
        static_cast<long long>((job->started_ns - job->received_ns) / 1000));
    job->finished_ns = job->started_ns;
    return;
  }
  const runtime::LoadedModel& m = *job->model;
  const runtime::Executor ex = m.executor(worker);
  const size_t batch = static_cast<size_t>(job->batch);
  size_t at = 0;
  for (int i = 0; i < m.num_inputs(); ++i) {
    const size_t n = batch * m.input_info(i).features;
    std::memcpy(ex.input(i), job->inputs.data() + at, n * sizeof(float));
    at += n;
  }
  job->status = ex.Invoke(job->batch);
  if (job->status.ok()) {
    for (int o : job->outputs) {
      const size_t bytes = batch * m.output_info(o).features * 4;
      const uint8_t* src = reinterpret_cast<const uint8_t*>(ex.output_f32(o));
      job->results.insert(job->results.end(), src, src + bytes);
    }
    if (job->quality) {
      RecordQuality(*job->quality, worker, m, ex, job->batch,
                    job->inputs.data());
    }
  }
  job->finished_ns = MonotonicNs();
}

}  // namespace ternd::daemon
