#include "telemetry/quality.h"

#include <algorithm>
#include <cmath>

namespace ternd::telemetry {
namespace {

constexpr std::memory_order kRelaxed = std::memory_order_relaxed;

// Adds `d` to an atomic only its slot's thread writes (no read-modify-write
// instruction needed).
inline void Accumulate(std::atomic<double>* a, double d) {
  a->store(a->load(kRelaxed) + d, kRelaxed);
}

}  // namespace

ModelQualityStats::ModelQualityStats(Registry* r, const Shape& shape)
    : registry_(r), shape_(shape) {
  const Labels mv = {{"model", shape.model}, {"version", shape.version}};
  requests_ =
      r->AddCounter("ternd_model_requests_total",
                    "Requests answered by a model version", "requests", mv);
  rows_ = r->AddCounter("ternd_model_rows_total",
                        "Rows (batch items) answered by a model version",
                        "rows", mv);
  if (shape.classes > 0) {
    const uint32_t counted = std::min(shape.classes, kMaxClasses);
    for (uint32_t c = 0; c <= counted; ++c) {
      if (c == counted && shape.classes <= kMaxClasses) break;
      Labels l = mv;
      l.emplace_back("class", c == counted ? "other" : std::to_string(c));
      classes_.push_back(r->AddCounter(
          "ternd_model_class_total",
          "Rows per predicted class (argmax) of a classifier version", "rows",
          std::move(l)));
    }
    confidence_ = r->AddHistogram(
        "ternd_model_confidence",
        "Top-class probability per row of a classifier version (softmax of "
        "logits)",
        "1", kScale, mv);
  } else {
    norm_ = r->AddHistogram("ternd_model_output_norm",
                            "L2 norm of each output row of a non-classifier "
                            "model version",
                            "1", kScale, mv);
  }
  if (shape.input_stats) {
    features_ = std::min(shape.input_features, kMaxFeatures);
  }
  if (features_ > 0) {
    for (uint32_t f = 0; f < features_; ++f) {
      Labels l = mv;
      l.emplace_back("feature", std::to_string(f));
      mean_.push_back(r->AddGauge("ternd_model_input_mean",
                                  "Mean of an input feature since start", "1",
                                  l));
    }
    for (uint32_t f = 0; f < features_; ++f) {
      Labels l = mv;
      l.emplace_back("feature", std::to_string(f));
      variance_.push_back(r->AddGauge(
          "ternd_model_input_variance",
          "Variance (population) of an input feature since start", "1", l));
    }
    slots_ = std::make_unique<Slot[]>(static_cast<size_t>(shape.slots));
    for (int s = 0; s < shape.slots; ++s) {
      for (uint32_t f = 0; f < kMaxFeatures; ++f) {
        slots_[s].shift[f].store(0, kRelaxed);
        slots_[s].sum[f].store(0, kRelaxed);
        slots_[s].sumsq[f].store(0, kRelaxed);
      }
    }
    collector_ = r->AddCollector([this] { Collect(); });
  }
}

ModelQualityStats::~ModelQualityStats() {
  if (collector_ >= 0) registry_->RemoveCollector(collector_);
}

uint32_t ModelQualityStats::Classify(const float* x, uint32_t n,
                                     double* confidence) {
  uint32_t best = 0;
  bool probabilities = true;
  double sum = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (x[i] > x[best]) best = i;
    if (!(x[i] >= 0.0f && x[i] <= 1.0f)) probabilities = false;
    sum += x[i];
  }
  if (n == 0) {
    *confidence = 0;
    return 0;
  }
  if (probabilities && std::fabs(sum - 1.0) <= 1e-3) {
    *confidence = x[best];
    return best;
  }
  // Logits: softmax(x)[best] = 1 / sum_i exp(x_i - x_best).
  double z = 0;
  for (uint32_t i = 0; i < n; ++i) z += std::exp(double(x[i]) - x[best]);
  *confidence = std::isfinite(z) && z >= 1 ? 1.0 / z : 0.0;
  return best;
}

double ModelQualityStats::Norm(const float* row, uint32_t n) {
  double s = 0;
  for (uint32_t i = 0; i < n; ++i) s += double(row[i]) * row[i];
  return std::sqrt(s);
}

void ModelQualityStats::Record(int slot, int batch, const float* input,
                               uint32_t input_stride, const float* output,
                               uint32_t output_stride) {
  requests_->Add(1);
  rows_->Add(static_cast<uint64_t>(batch));
  for (int r = 0; r < batch; ++r) {
    const float* row = output + size_t(r) * output_stride;
    if (confidence_) {
      double conf;
      const uint32_t c = Classify(row, shape_.classes, &conf);
      classes_[std::min<size_t>(c, classes_.size() - 1)]->Add(1);
      confidence_->Record(std::llround(conf / kScale));
    } else {
      const double norm = Norm(row, output_stride);
      norm_->Record(std::isfinite(norm) && norm < 1e12
                        ? std::llround(norm / kScale)
                        : int64_t{1} << 60);
    }
  }
  if (features_ == 0 || input == nullptr) return;
  Slot& s = slots_[slot];
  const uint64_t seen = s.rows.load(kRelaxed);
  for (int r = 0; r < batch; ++r) {
    const float* row = input + size_t(r) * input_stride;
    if (seen == 0 && r == 0) {
      for (uint32_t f = 0; f < features_; ++f)
        s.shift[f].store(row[f], kRelaxed);
    }
    for (uint32_t f = 0; f < features_; ++f) {
      const double d = double(row[f]) - s.shift[f].load(kRelaxed);
      Accumulate(&s.sum[f], d);
      Accumulate(&s.sumsq[f], d * d);
    }
  }
  s.rows.store(seen + static_cast<uint64_t>(batch), std::memory_order_release);
}

void ModelQualityStats::Collect() {
  if (features_ == 0) return;
  for (uint32_t f = 0; f < features_; ++f) {
    double n = 0, mean = 0, m2 = 0;
    for (int i = 0; i < shape_.slots; ++i) {
      const Slot& s = slots_[i];
      const double nb = double(s.rows.load(std::memory_order_acquire));
      if (nb == 0) continue;
      const double sum = s.sum[f].load(kRelaxed);
      const double sumsq = s.sumsq[f].load(kRelaxed);
      const double mean_b = s.shift[f].load(kRelaxed) + sum / nb;
      const double m2_b = std::max(0.0, sumsq - sum * sum / nb);
      const double delta = mean_b - mean;
      const double total = n + nb;
      mean += delta * nb / total;
      m2 += m2_b + delta * delta * n * nb / total;
      n = total;
    }
    mean_[f]->Set(mean);
    variance_[f]->Set(n > 0 ? m2 / n : 0);
  }
}

bool IsQualitySeries(const std::string& name) {
  static const char* const kNames[] = {
      "ternd_model_requests_total", "ternd_model_rows_total",
      "ternd_model_class_total",    "ternd_model_confidence",
      "ternd_model_output_norm",    "ternd_model_input_mean",
      "ternd_model_input_variance", "ternd_shadow_agreement"};
  for (const char* n : kNames) {
    if (name == n) return true;
  }
  return false;
}

double TotalVariation(const std::vector<double>& a,
                      const std::vector<double>& b) {
  double sa = 0, sb = 0;
  for (double v : a) sa += v;
  for (double v : b) sb += v;
  if (sa <= 0 || sb <= 0) return 0;
  double d = 0;
  for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
    const double pa = i < a.size() ? a[i] / sa : 0;
    const double pb = i < b.size() ? b[i] / sb : 0;
    d += std::fabs(pa - pb);
  }
  return d / 2;
}

}  // namespace ternd::telemetry
