// The daemon's side of model-quality telemetry (telemetry/quality.h): which
// output of a model is looked at, one accumulator per model version created
// when the version first serves, and the worker's call after Invoke.
//
// What counts as a classifier: a model with an argmax output (int32, one
// value per row: export's `argmax_name`) beside a float output of more than
// one value per row; the first such float output holds the scores, whose
// argmax is the predicted class and whose largest probability (softmax of
// the row when it is not already a probability vector) is the confidence.
// Any other model: the L2 norm of its first output's rows.
//
// Thread-safety: For and SetShadowAgreement on the loop thread; Record on
// the executor's thread (worker or loop).
#ifndef TERND_DAEMON_QUALITY_STATS_H_
#define TERND_DAEMON_QUALITY_STATS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/runtime.h"
#include "telemetry/metrics.h"
#include "telemetry/quality.h"

namespace ternd::daemon {

// What a worker needs to record a request: set on the InferJob by the loop.
struct QualitySink {
  telemetry::ModelQualityStats* stats = nullptr;
  int output = 0;  // the output whose rows are looked at
  int input = 0;   // the input whose features are summarized (-1: none)
};

// After a successful Invoke of `batch` rows on `ex` (the executor `slot`);
// `inputs`: the request's inputs as the job holds them (the first input's
// rows first). Never allocates.
void RecordQuality(const QualitySink& sink, int slot,
                   const runtime::LoadedModel& model,
                   const runtime::Executor& ex, int batch, const float* inputs);

class QualityTracker {
 public:
  // Versions tracked per daemon run; later ones are not (said once in the
  // log), so a long-lived daemon's series and batches stay bounded.
  static constexpr size_t kMaxVersions = 8;

  // `slots`: executors (workers plus the loop's).
  QualityTracker(telemetry::Registry* registry, int slots, bool input_stats);

  // The sink of this model placement (`load`: ModelSlots' load count; 0
  // when called at load, which only looks up by name and version);
  // allocates the version's accumulators the first time it is asked (the
  // daemon asks when a model is placed), null beyond kMaxVersions or for a
  // model without float outputs.
  const QualitySink* For(const runtime::LoadedModel& model, uint64_t load);
  void SetShadowAgreement(const std::string& model, uint64_t version,
                          double agreement);

 private:
  struct Entry {
    std::string model;
    uint64_t version = 0;
    QualitySink sink;
    std::unique_ptr<telemetry::ModelQualityStats> stats;
  };
  telemetry::Registry* registry_;
  int slots_;
  bool input_stats_;
  std::vector<std::unique_ptr<Entry>> entries_;
  const runtime::LoadedModel* last_model_ = nullptr;
  uint64_t last_load_ = 0;
  const QualitySink* last_ = nullptr;
  bool said_full_ = false;
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_QUALITY_STATS_H_
