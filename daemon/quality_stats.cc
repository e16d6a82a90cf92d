#include "daemon/quality_stats.h"

#include "base/log.h"

namespace ternd::daemon {

void RecordQuality(const QualitySink& sink, int slot,
                   const runtime::LoadedModel& m, const runtime::Executor& ex,
                   int batch, const float* inputs) {
  const float* input = nullptr;
  uint32_t input_stride = 0;
  if (sink.input >= 0) {
    input = inputs;
    input_stride = m.input_info(sink.input).features;
  }
  sink.stats->Record(slot, batch, input, input_stride,
                     ex.output_f32(sink.output),
                     m.output_info(sink.output).features);
}

QualityTracker::QualityTracker(telemetry::Registry* registry, int slots,
                               bool input_stats)
    : registry_(registry), slots_(slots), input_stats_(input_stats) {}

const QualitySink* QualityTracker::For(const runtime::LoadedModel& m,
                                       uint64_t load) {
  if (&m == last_model_ && load == last_load_) return last_;
  last_model_ = &m;
  last_load_ = load;
  last_ = nullptr;
  for (const auto& e : entries_) {
    if (e->model == m.name() && e->version == m.version()) {
      last_ = &e->sink;
      return last_;
    }
  }
  if (entries_.size() >= kMaxVersions) {
    if (!said_full_) {
      TERND_LOG_NOTICE(
          "model quality: %zu versions tracked since start; '%s' version "
          "%llu is not",
          kMaxVersions, m.name(), static_cast<unsigned long long>(m.version()));
      said_full_ = true;
    }
    return nullptr;
  }
  // The scores: the first float output of more than one value, when the
  // model also has an argmax (int32) output; else the first float output.
  int scores = -1, first_float = -1;
  bool has_argmax = false;
  for (int o = 0; o < m.num_outputs(); ++o) {
    const runtime::IoInfo& info = m.output_info(o);
    if (info.dtype == model::I32) {
      if (info.features == 1) has_argmax = true;
      continue;
    }
    if (first_float < 0) first_float = o;
    if (scores < 0 && info.features > 1) scores = o;
  }
  if (first_float < 0) return nullptr;  // nothing to look at
  auto e = std::make_unique<Entry>();
  e->model = m.name();
  e->version = m.version();
  telemetry::ModelQualityStats::Shape shape;
  shape.model = m.name();
  shape.version = std::to_string(m.version());
  const bool classifier = has_argmax && scores >= 0;
  e->sink.output = classifier ? scores : first_float;
  shape.classes = classifier ? m.output_info(scores).features : 0;
  e->sink.input = m.num_inputs() > 0 && input_stats_ ? 0 : -1;
  shape.input_features = e->sink.input >= 0 ? m.input_info(0).features : 0;
  shape.input_stats = input_stats_;
  shape.slots = slots_;
  e->stats = std::make_unique<telemetry::ModelQualityStats>(registry_, shape);
  e->sink.stats = e->stats.get();
  entries_.push_back(std::move(e));
  last_ = &entries_.back()->sink;
  return last_;
}

void QualityTracker::SetShadowAgreement(const std::string& model,
                                        uint64_t version, double agreement) {
  registry_
      ->AddGauge("ternd_shadow_agreement",
                 "Share of compared rows on which a staged version agrees "
                 "with the serving one (shadow validation)",
                 "1", {{"model", model}, {"version", std::to_string(version)}})
      ->Set(agreement);
}

}  // namespace ternd::daemon
