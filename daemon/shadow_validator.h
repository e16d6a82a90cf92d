// Shadow validation: before a staged model serves, it answers a sample of
// the live requests beside the serving model, off the clients' path, and
// is activated only when it agrees with it often enough (docs/ota.md,
// "Shadow validation").
//
//   request --> serving model --> answer queued for the client --> Offer()
//     sampled (every 1/sample_rate-th answer), the shadow job free, no
//     client request outstanding and the shadow jobs' compute time under
//     a quarter of the time the validation has run?  else dropped, never
//     queued
//     --> inputs (and the serving model's rows of the compared output)
//         copied into the one preallocated shadow job
//     --> next turn of the loop, the answer flushed: still no client
//         request outstanding?  submitted to the pool, else dropped
//     --> a worker runs the staged model on them and compares the rows
//     --> back on the loop: the counters; a verdict at min_requests, or
//         when the time limit passes first
//
// Parts:
// - ota::ShadowSpec (ota/shadow_validation.h): the signed manifest's
//   fields, checked when the release arrives (and by ternctl sign).
// - AgreementStats and CompareRows: the counting and the verdict, pure
//   (tests/daemon/shadow_validator_test.cc).
// - ShadowValidator: the sampler and the shadow job, owned by the service
//   beside the worker pool; the Updater drives it through ShadowHost.
//
// What never happens: a shadow output reaching a client (the shadow job
// has no connection and its rows are only compared), a client request
// waiting behind a shadow inference it did not choose (one shadow job at
// most, started only when no client request is outstanding), an
// allocation after BeginValidation (the job's buffers are sized for the
// largest batch there).
//
// Thread-safety: everything on the loop's thread, except Run(), which a
// worker calls with the shadow job and which touches only that job, the
// two models' executors of that worker and the shot_* results (handed
// back through the pool's completion list).
#ifndef TERND_DAEMON_SHADOW_VALIDATOR_H_
#define TERND_DAEMON_SHADOW_VALIDATOR_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/event_loop.h"
#include "base/status.h"
#include "daemon/worker_pool.h"
#include "ota/shadow_validation.h"

namespace ternd::daemon {

class ModelSlots;
using ota::ShadowMetric;
using ota::ShadowMetricName;
using ota::ShadowSpec;
using ota::ShadowSpecFromRelease;

// Where a validation stands (ternctl status, the fleet's state reports).
struct ShadowProgress {
  ShadowMetric metric = ShadowMetric::kArgmax;
  std::string output;     // the compared output's name
  uint64_t requests = 0;  // compared so far
  uint64_t required = 0;  // min_requests
  uint64_t rows = 0;      // rows compared (a request has 1 or more)
  uint64_t agreeing = 0;  // rows that agreed
  double min_agreement = 0;
  double worst_relative_l2 = 0;  // largest seen (relative_l2 only)
  uint64_t dropped = 0;          // sampled while busy, or too large a batch
  int64_t deadline = 0;          // unix seconds: the time limit ends
  // agreeing / rows; 0 before the first row.
  double agreement() const {
    return rows ? static_cast<double>(agreeing) / static_cast<double>(rows)
                : 0.0;
  }
};

// Compares `rows` rows of `features` values of the serving and the staged
// model (f32), returns how many agree, and raises *worst to the largest
// relative L2 distance seen (relative_l2 only). Allocates nothing.
uint64_t CompareRows(ShadowMetric metric, double max_relative_l2,
                     const float* serving, const float* staged, int rows,
                     int features, double* worst);
// The same for int32 outputs (argmax outputs: class indices): a row
// agrees when every value is equal, whatever the metric.
uint64_t CompareRowsExact(const int32_t* serving, const int32_t* staged,
                          int rows, int features);

// The counters of one validation and its verdict.
class AgreementStats {
 public:
  enum class Verdict { kPending, kAgrees, kDisagrees };

  // One compared request of `rows` rows, `agreeing` of which agreed.
  void Add(uint64_t rows, uint64_t agreeing, double worst_relative_l2);
  void Drop() { ++progress_.dropped; }
  // Pending until min_requests requests were compared; then whether the
  // share of agreeing rows reaches min_agreement.
  Verdict Decide() const;
  // "agreement 0.412 (103 of 250 rows agree, 250 requests compared;
  // required 0.950 over 200 requests)".
  std::string Summary() const;
  ShadowProgress& progress() { return progress_; }
  const ShadowProgress& progress() const { return progress_; }

 private:
  ShadowProgress progress_;
};

// How a validation ended: `agrees`, or why not (the measured numbers in
// the reason).
struct ShadowOutcome {
  bool agrees = false;
  std::string reason;
  ShadowProgress progress;
};

// What the Updater asks of the serving side.
class ShadowHost {
 public:
  virtual ~ShadowHost() = default;
  // OK when a release asking for shadow validation can be validated here;
  // otherwise why not (cold swap: no idle slot to hold it in).
  virtual Status CanValidate() const = 0;
  // Starts comparing the staged model with the serving one.
  // REQUIRES: a graph model is staged and none is being validated.
  // Fails, naming what, when the two models cannot be compared (a
  // language model, other inputs, no such output, other output shapes).
  // `changed` runs on the loop at most once a second while the numbers
  // move; `done` runs once, on the loop (never inside a call into this
  // class), with the verdict, when no shadow inference runs any more.
  virtual Status BeginValidation(
      const ShadowSpec& spec, std::function<void()> changed,
      std::function<void(const ShadowOutcome&)> done) = 0;
  // Where the validation in progress stands; nullopt when none runs.
  virtual std::optional<ShadowProgress> validation() const = 0;
};

class ShadowValidator final : public ShadowHost, private PoolTask {
 public:
  // `hot_swap`: runtime.swap is "hot" (an idle slot holds the staged
  // model). `clients_idle`: no client request is outstanding (asked again
  // right before a sample is submitted). `slots` and `pool` outlive the
  // validator.
  ShadowValidator(sd_event* loop, ModelSlots* slots, WorkerPool* pool,
                  bool hot_swap, std::function<bool()> clients_idle);
  ~ShadowValidator() override;
  ShadowValidator(const ShadowValidator&) = delete;
  ShadowValidator& operator=(const ShadowValidator&) = delete;

  // The service, after an Infer answer was queued for its client:
  // `answered` holds the request's inputs and the outputs it asked for.
  // `idle`: no client request is outstanding. Never allocates; returns at
  // once when no validation runs.
  void Offer(const InferJob& answered, bool idle);
  // The service, for every job back from the pool: true when it was the
  // shadow job (consumed here), false for a client's.
  bool TakeCompleted(InferJob* job);

  // ShadowHost.
  Status CanValidate() const override;
  Status BeginValidation(
      const ShadowSpec& spec, std::function<void()> changed,
      std::function<void(const ShadowOutcome&)> done) override;
  std::optional<ShadowProgress> validation() const override;

 private:
  // PoolTask: runs the staged model (and, when the answer did not carry
  // the compared output, the serving model) on the shadow job's rows.
  void Run(int worker, InferJob* job) override;
  // Submits the copied sample on a later turn of the loop than the answer
  // it copies (after that answer was flushed), if still nothing else runs.
  void Submit();
  // A verdict was reached: delivered once no shadow job runs.
  void Conclude(ShadowOutcome outcome);
  void Deliver();
  void Tick();
  static int OnTick(sd_event_source*, uint64_t, void* self);

  sd_event* loop_;
  ModelSlots* slots_;
  WorkerPool* pool_;
  const bool hot_swap_;
  std::function<bool()> clients_idle_;

  // The validation in progress.
  bool running_ = false;
  ShadowSpec spec_;
  ShadowMetric metric_ = ShadowMetric::kArgmax;
  AgreementStats stats_;
  const runtime::LoadedModel* serving_ = nullptr;
  uint64_t serving_load_ = 0;
  const runtime::LoadedModel* staged_ = nullptr;
  int serving_output_ = -1, staged_output_ = -1;
  bool exact_ = false;  // int32 output: compared exactly
  size_t output_features_ = 0;
  double sample_credit_ = 0;    // += sample_rate per answer; a sample at 1
  int64_t deadline_ns_ = 0;     // CLOCK_MONOTONIC
  int64_t begun_ns_ = 0;        // CLOCK_MONOTONIC
  int64_t shadow_busy_ns_ = 0;  // the shadow jobs' compute time so far
  bool changed_since_tick_ = false;
  std::function<void()> changed_;
  std::function<void(const ShadowOutcome&)> done_;
  std::optional<ShadowOutcome> outcome_;  // reached, not yet delivered
  EventSource tick_;
  LoopTask deliver_;
  LoopTask submit_;

  // The shadow job (at most one in flight) and its buffers.
  InferJob job_;
  // From the copy (Offer) until the job is back (TakeCompleted) or the
  // sample is dropped at Submit.
  bool in_flight_ = false;
  int hold_slot_ = -1;  // the serving slot, held while the job runs
  // The serving model's rows of the compared output, when the answer
  // carried them; else the worker computes them.
  std::vector<uint8_t> serving_rows_;
  bool have_serving_rows_ = false;
  // Written by the worker, read on the loop after the job came back.
  uint64_t shot_rows_ = 0, shot_agreeing_ = 0;
  double shot_worst_ = 0;
  bool shot_serving_failed_ = false;  // the status is the serving model's
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_SHADOW_VALIDATOR_H_
