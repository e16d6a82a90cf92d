// Model-quality statistics of one model version (docs/telemetry.md, "Model
// quality"): what the model answers, so a fleet sees a version's predicted
// class distribution, confidence and input drift next to its latency.
//
//   ternd_model_requests_total{model,version}        requests answered
//   ternd_model_rows_total{model,version}            rows (batch items)
//   ternd_model_class_total{model,version,class}     rows per predicted class
//                                                    ("0".."63", "other")
//   ternd_model_confidence{model,version}            histogram, classifiers
//   ternd_model_output_norm{model,version}           histogram, other models
//   ternd_model_input_mean{model,version,feature}    gauges, the first
//   ternd_model_input_variance{model,version,feature}  kMaxFeatures features
//   ternd_shadow_agreement{model,version}            gauge (shadow validation)
//
// Everything is allocated in the constructor (at model load): Record never
// allocates and never locks. Counters and histograms are the registry's
// sharded relaxed atomics. Input statistics are kept per slot (one per
// executor: each worker thread and the loop thread write only their own),
// as sums of (x - shift) and (x - shift)^2 in double with the slot's first
// value of each feature as the shift (no cancellation for features far from
// zero); readers merge the slots (Chan et al.'s pairwise formula) when the
// registry is snapshotted, through a registry collector.
//
// Thread-safety: Record(slot) from one thread per slot at a time; the rest
// from any thread.
#ifndef TERND_TELEMETRY_QUALITY_H_
#define TERND_TELEMETRY_QUALITY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "telemetry/metrics.h"

namespace ternd::telemetry {

class ModelQualityStats {
 public:
  // Classes counted individually; larger indices count as "other".
  static constexpr uint32_t kMaxClasses = 64;
  // Input features with mean and variance: the first kMaxFeatures of the
  // model's first input.
  static constexpr uint32_t kMaxFeatures = 64;
  // Confidence and norm histograms record value * 1e6 as integers.
  static constexpr double kScale = 1e-6;

  struct Shape {
    std::string model, version;
    // > 0: a classifier whose output rows hold `classes` scores
    // (probabilities or logits); 0: any other model (norm of the row).
    uint32_t classes = 0;
    // Features of the first input (statistics for the first kMaxFeatures);
    // 0 or input_stats false: none.
    uint32_t input_features = 0;
    bool input_stats = true;
    int slots = 1;  // executors that may call Record
  };

  ModelQualityStats(Registry* registry, const Shape& shape);
  ~ModelQualityStats();
  ModelQualityStats(const ModelQualityStats&) = delete;
  ModelQualityStats& operator=(const ModelQualityStats&) = delete;

  // One answered request of `batch` rows: `output` holds batch rows of
  // `output_stride` floats (the scores of a classifier: the first `classes`
  // of each row), `input` batch rows of `input_stride` floats (may be null
  // when input statistics are off). Never allocates.
  // REQUIRES: 0 <= slot < shape.slots.
  void Record(int slot, int batch, const float* input, uint32_t input_stride,
              const float* output, uint32_t output_stride);

  // Merges the input statistics into the mean/variance gauges (what the
  // registry collector runs before a snapshot).
  void Collect();

  const Shape& shape() const { return shape_; }
  uint32_t input_features() const { return features_; }

  // The class and confidence of one row of scores: the argmax (first of
  // equal maxima) and, if the row is a probability vector (every value in
  // [0, 1], sum within 1e-3 of 1), its largest value, else the largest
  // softmax probability of the row taken as logits. Returns the class.
  static uint32_t Classify(const float* scores, uint32_t n, double* confidence);
  // The L2 norm of a row.
  static double Norm(const float* row, uint32_t n);

 private:
  struct alignas(64) Slot {
    std::atomic<uint64_t> rows{0};
    std::atomic<double> shift[kMaxFeatures];
    std::atomic<double> sum[kMaxFeatures];
    std::atomic<double> sumsq[kMaxFeatures];
  };

  Registry* registry_;
  Shape shape_;
  uint32_t features_ = 0;  // tracked input features
  Counter* requests_ = nullptr;
  Counter* rows_ = nullptr;
  std::vector<Counter*> classes_;  // min(classes, kMaxClasses) (+ "other")
  Histogram* confidence_ = nullptr;
  Histogram* norm_ = nullptr;
  std::vector<Gauge*> mean_, variance_;
  std::unique_ptr<Slot[]> slots_;
  int collector_ = -1;
};

// Series whose name makes them part of a batch's quality section instead of
// its metrics list (telemetry.proto ModelQualityStats).
bool IsQualitySeries(const std::string& name);

// Total variation distance between two class distributions given as counts
// (index i: class i; missing entries count 0): half the L1 distance of the
// normalized vectors, in [0, 1]; 0 when either is empty.
double TotalVariation(const std::vector<double>& a,
                      const std::vector<double>& b);

}  // namespace ternd::telemetry

#endif  // TERND_TELEMETRY_QUALITY_H_
