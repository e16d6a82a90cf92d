#include "daemon/shadow_validator.h"

#include <systemd/sd-event.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>

#include "base/clock.h"
#include "base/log.h"
#include "daemon/model_slots.h"
#include "runtime/format.h"
#include "runtime/ops.h"

namespace ternd::daemon {
namespace {

static_assert(ota::kMaxShadowOutputName == runtime::kMaxNameLength,
              "a manifest's output name fits the model format's names");

constexpr uint64_t kTickUsec = 1000000;  // progress at most once a second
// The shadow jobs' compute time may be at most this share of the time the
// validation has run (of one worker): beyond it, samples are dropped.
constexpr double kMaxCpuShare = 0.25;

}  // namespace

uint64_t CompareRows(ShadowMetric metric, double max_relative_l2,
                     const float* serving, const float* staged, int rows,
                     int features, double* worst) {
  uint64_t agreeing = 0;
  const size_t f = static_cast<size_t>(features);
  for (int r = 0; r < rows; ++r) {
    const float* a = serving + static_cast<size_t>(r) * f;
    const float* b = staged + static_cast<size_t>(r) * f;
    if (metric == ShadowMetric::kArgmax) {
      int32_t ia = 0, ib = 0;
      runtime::Argmax(a, 1, f, &ia);
      runtime::Argmax(b, 1, f, &ib);
      if (ia == ib) ++agreeing;
      continue;
    }
    double diff = 0, norm = 0;
    for (size_t i = 0; i < f; ++i) {
      const double d = static_cast<double>(b[i]) - static_cast<double>(a[i]);
      diff += d * d;
      norm += static_cast<double>(a[i]) * static_cast<double>(a[i]);
    }
    diff = std::sqrt(diff);
    norm = std::sqrt(norm);
    // A zero serving row: only a zero staged row agrees (distance 0).
    const double rel = norm > 0 ? diff / norm : (diff > 0 ? INFINITY : 0.0);
    if (!std::isfinite(rel) || rel > max_relative_l2) {
      *worst = std::isfinite(rel) ? std::max(*worst, rel) : INFINITY;
    } else {
      *worst = std::max(*worst, rel);
      ++agreeing;
    }
  }
  return agreeing;
}

uint64_t CompareRowsExact(const int32_t* serving, const int32_t* staged,
                          int rows, int features) {
  uint64_t agreeing = 0;
  const size_t f = static_cast<size_t>(features);
  for (int r = 0; r < rows; ++r) {
    const size_t at = static_cast<size_t>(r) * f;
    if (std::memcmp(serving + at, staged + at, f * sizeof(int32_t)) == 0) {
      ++agreeing;
    }
  }
  return agreeing;
}

void AgreementStats::Add(uint64_t rows, uint64_t agreeing,
                         double worst_relative_l2) {
  ++progress_.requests;
  progress_.rows += rows;
  progress_.agreeing += agreeing;
  progress_.worst_relative_l2 =
      std::max(progress_.worst_relative_l2, worst_relative_l2);
}

AgreementStats::Verdict AgreementStats::Decide() const {
  if (progress_.requests < progress_.required) return Verdict::kPending;
  return progress_.agreement() >= progress_.min_agreement ? Verdict::kAgrees
                                                          : Verdict::kDisagrees;
}

std::string AgreementStats::Summary() const {
  const ShadowProgress& p = progress_;
  char text[400];
  int n = std::snprintf(
      text, sizeof(text),
      "agreement %.3f (%llu of %llu rows agree by %s on output '%s', %llu "
      "requests compared; required %.3f over %llu requests)",
      p.agreement(), static_cast<unsigned long long>(p.agreeing),
      static_cast<unsigned long long>(p.rows), ShadowMetricName(p.metric),
      p.output.c_str(), static_cast<unsigned long long>(p.requests),
      p.min_agreement, static_cast<unsigned long long>(p.required));
  if (p.metric == ShadowMetric::kRelativeL2 && n > 0 &&
      static_cast<size_t>(n) < sizeof(text)) {
    std::snprintf(text + n, sizeof(text) - static_cast<size_t>(n),
                  ", worst relative L2 %.4g", p.worst_relative_l2);
  }
  return text;
}

// ---------------------------------------------------------- ShadowValidator

ShadowValidator::ShadowValidator(sd_event* loop, ModelSlots* slots,
                                 WorkerPool* pool, bool hot_swap,
                                 std::function<bool()> clients_idle)
    : loop_(loop),
      slots_(slots),
      pool_(pool),
      hot_swap_(hot_swap),
      clients_idle_(std::move(clients_idle)),
      deliver_(loop, "shadow-verdict", [this]() { Deliver(); }),
      submit_(loop, "shadow-submit", [this]() { Submit(); }) {
  job_.task = this;
}

ShadowValidator::~ShadowValidator() = default;

Status ShadowValidator::CanValidate() const {
  if (!hot_swap_) {
    return FailedPrecondition(
        "runtime.swap is \"cold\": there is no idle slot to hold the model "
        "while it is compared with the serving one (shadow validation needs "
        "runtime.swap = \"hot\")");
  }
  return Status::Ok();
}

Status ShadowValidator::BeginValidation(
    const ShadowSpec& spec, std::function<void()> changed,
    std::function<void(const ShadowOutcome&)> done) {
  TERND_RETURN_IF_ERROR(CanValidate());
  if (running_) return FailedPrecondition("a validation already runs");
  const runtime::LoadedModel* staged = slots_->staged();
  const runtime::LoadedModel* serving = slots_->usable();
  if (!staged || !serving) {
    return FailedPrecondition(
        "shadow validation compares graph models (Infer); a language model "
        "is staged or serving, and their next-token check is not supported "
        "by this daemon");
  }
  // The same inputs, in the same order: the request's rows feed both.
  if (staged->num_inputs() != serving->num_inputs()) {
    return FailedPrecondition(
        "the staged model has %d inputs, the serving model %d: requests to "
        "one cannot be run on the other",
        staged->num_inputs(), serving->num_inputs());
  }
  size_t row_floats = 0;
  for (int i = 0; i < serving->num_inputs(); ++i) {
    const runtime::IoInfo& a = serving->input_info(i);
    const runtime::IoInfo& b = staged->input_info(i);
    if (std::strcmp(a.name, b.name) != 0 || a.features != b.features) {
      return FailedPrecondition(
          "input %d is '%s' [%u] in the serving model and '%s' [%u] in the "
          "staged one: requests to one cannot be run on the other",
          i, a.name, a.features, b.name, b.features);
    }
    row_floats += a.features;
  }
  int so = 0, to = 0;
  if (!spec.output.empty()) {
    so = serving->FindOutput(spec.output);
    to = staged->FindOutput(spec.output);
    if (so < 0 || to < 0) {
      return FailedPrecondition(
          "shadow_validation.output '%s' is not an output of the %s model",
          spec.output.c_str(), so < 0 ? "serving" : "staged");
    }
  }
  const runtime::IoInfo& a = serving->output_info(so);
  const runtime::IoInfo& b = staged->output_info(to);
  if (a.features != b.features || a.dtype != b.dtype) {
    return FailedPrecondition(
        "output '%s' has %u values per row (%s) in the serving model and "
        "'%s' %u (%s) in the staged one: they cannot be compared",
        a.name, a.features, a.dtype == model::DType::I32 ? "i32" : "f32",
        b.name, b.features, b.dtype == model::DType::I32 ? "i32" : "f32");
  }
  ShadowMetric metric = spec.metric.value_or(
      a.features > 1 ? ShadowMetric::kArgmax : ShadowMetric::kRelativeL2);
  if (metric == ShadowMetric::kRelativeL2 && !spec.metric &&
      spec.max_relative_l2 <= 0) {
    return FailedPrecondition(
        "output '%s' has one value per row, so the default metric is "
        "relative_l2, and shadow_validation.max_relative_l2 is 0; expected "
        "a bound > 0 (or metric \"argmax\")",
        a.name);
  }

  // Everything the shadow job will need, allocated now.
  const size_t max_batch = static_cast<size_t>(serving->max_batch());
  job_.inputs.reserve(max_batch * row_floats);
  serving_rows_.reserve(max_batch * a.features * 4);
  job_.results.clear();

  spec_ = spec;
  metric_ = metric;
  serving_ = serving;
  staged_ = staged;
  serving_output_ = so;
  staged_output_ = to;
  exact_ = a.dtype == model::DType::I32;
  output_features_ = a.features;
  serving_load_ = 0;  // learnt from the first answer
  stats_ = AgreementStats();
  ShadowProgress& p = stats_.progress();
  p.metric = metric;
  p.output = a.name;
  p.required = spec.min_requests;
  p.min_agreement = spec.min_agreement;
  p.deadline = static_cast<int64_t>(::time(nullptr)) + spec.time_limit_s;
  sample_credit_ = 0;
  begun_ns_ = MonotonicNs();
  shadow_busy_ns_ = 0;
  deadline_ns_ = begun_ns_ + int64_t{spec.time_limit_s} * 1000000000;
  changed_ = std::move(changed);
  done_ = std::move(done);
  outcome_.reset();
  changed_since_tick_ = false;
  running_ = true;
  sd_event_source* s = nullptr;
  const int r = sd_event_add_time_relative(loop_, &s, CLOCK_MONOTONIC,
                                           kTickUsec, 0, &OnTick, this);
  if (r < 0) {
    running_ = false;
    return Errorf(StatusCode::kInternal,
                  "cannot arm the shadow validation timer (%s)",
                  std::strerror(-r));
  }
  sd_event_source_set_description(s, "shadow-validation");
  tick_.reset(s);
  TERND_LOG_NOTICE(
      "shadow validation of '%s' version %llu: %s on output '%s', %.3g of "
      "requests sampled, %llu required within %u s at agreement >= %.3f",
      staged->name(), static_cast<unsigned long long>(staged->version()),
      ShadowMetricName(metric), a.name, spec.sample_rate,
      static_cast<unsigned long long>(spec.min_requests), spec.time_limit_s,
      spec.min_agreement);
  return Status::Ok();
}

std::optional<ShadowProgress> ShadowValidator::validation() const {
  if (!running_) return std::nullopt;
  return stats_.progress();
}

void ShadowValidator::Offer(const InferJob& answered, bool idle) {
  if (!running_ || outcome_ || !answered.status.ok() ||
      answered.model != serving_) {
    return;
  }
  if (serving_load_ == 0) serving_load_ = answered.model_load;
  if (answered.model_load != serving_load_) return;  // another placement
  sample_credit_ += spec_.sample_rate;
  if (sample_credit_ < 1.0) return;  // not sampled
  sample_credit_ -= 1.0;
  // Dropped, never queued: a client's request must not wait behind it,
  // and the shadow jobs stay within their share of a worker's time.
  const double budget_ns =
      kMaxCpuShare * static_cast<double>(MonotonicNs() - begun_ns_);
  if (in_flight_ || !idle || answered.batch > staged_->max_batch() ||
      static_cast<double>(shadow_busy_ns_) > budget_ns) {
    stats_.Drop();
    return;
  }
  // The request's rows (capacity reserved at BeginValidation).
  job_.inputs.resize(answered.inputs.size());
  std::memcpy(job_.inputs.data(), answered.inputs.data(),
              answered.inputs.size() * sizeof(float));
  // The serving model's rows of the compared output, if the client asked
  // for it; else the worker runs the serving model too.
  have_serving_rows_ = false;
  size_t at = 0;
  const size_t batch = static_cast<size_t>(answered.batch);
  for (int o : answered.outputs) {
    const size_t bytes = batch * serving_->output_info(o).features * 4;
    if (o == serving_output_ && at + bytes <= answered.results.size()) {
      serving_rows_.resize(bytes);
      std::memcpy(serving_rows_.data(), answered.results.data() + at, bytes);
      have_serving_rows_ = true;
      break;
    }
    at += bytes;
  }
  job_.batch = answered.batch;
  job_.model = staged_;
  job_.status = Status::Ok();
  job_.received_ns = MonotonicNs();
  job_.deadline_ns = 0;
  // Submitted on a later turn of the loop, once the answer was flushed to
  // its client (the reading code flushes after the handler returns).
  in_flight_ = true;
  submit_.Schedule();
}

void ShadowValidator::Submit() {
  if (!in_flight_ || hold_slot_ >= 0) return;
  if (!running_ || outcome_ || !clients_idle_() || !slots_->serving_any()) {
    // A request arrived meanwhile (or the validation ended): dropped.
    in_flight_ = false;
    if (running_ && !outcome_) stats_.Drop();
    if (outcome_) deliver_.Schedule();
    return;
  }
  // The serving slot stays as it is while the job may read it.
  const ModelSlots::Hold hold = slots_->Acquire();
  hold_slot_ = hold.slot;
  pool_->Submit(&job_);
}

void ShadowValidator::Run(int worker, InferJob* job) {
  job->started_ns = MonotonicNs();
  const size_t batch = static_cast<size_t>(job->batch);
  shot_rows_ = batch;
  shot_agreeing_ = 0;
  shot_worst_ = 0;
  shot_serving_failed_ = false;
  // Inputs in model input order, back to back (the same for both models).
  auto fill = [&](const runtime::LoadedModel& m, const runtime::Executor& ex) {
    size_t at = 0;
    for (int i = 0; i < m.num_inputs(); ++i) {
      const size_t n = batch * m.input_info(i).features;
      std::memcpy(ex.input(i), job->inputs.data() + at, n * sizeof(float));
      at += n;
    }
  };
  const void* serving_rows = serving_rows_.data();
  if (!have_serving_rows_) {
    const runtime::Executor ex = serving_->executor(worker);
    fill(*serving_, ex);
    job->status = ex.Invoke(job->batch);
    if (!job->status.ok()) {
      shot_serving_failed_ = true;
      job->finished_ns = MonotonicNs();
      return;
    }
    serving_rows = ex.output_f32(serving_output_);  // or i32: same bytes
  }
  const runtime::Executor ex = staged_->executor(worker);
  fill(*staged_, ex);
  job->status = ex.Invoke(job->batch);
  if (job->status.ok()) {
    const int features = static_cast<int>(output_features_);
    if (exact_) {
      shot_agreeing_ =
          CompareRowsExact(static_cast<const int32_t*>(serving_rows),
                           ex.output_i32(staged_output_), job->batch, features);
    } else {
      shot_agreeing_ = CompareRows(metric_, spec_.max_relative_l2,
                                   static_cast<const float*>(serving_rows),
                                   ex.output_f32(staged_output_), job->batch,
                                   features, &shot_worst_);
    }
  }
  job->finished_ns = MonotonicNs();
}

bool ShadowValidator::TakeCompleted(InferJob* job) {
  if (job != &job_) return false;
  in_flight_ = false;
  slots_->Release(hold_slot_);
  hold_slot_ = -1;
  shadow_busy_ns_ += job_.finished_ns - job_.started_ns;
  if (job_.status.code() == StatusCode::kCancelled) {
    // The pool stops: no verdict from this one.
  } else if (shot_serving_failed_) {
    // The serving model refused rows it had answered: nothing to compare.
    TERND_LOG_WARNING(
        "shadow validation: the serving model failed on a "
        "sampled request: %s",
        job_.status.message());
  } else {
    if (!job_.status.ok()) {
      // The staged model failed where the serving one answered: every row
      // disagrees.
      TERND_LOG_WARNING(
          "shadow validation: the staged model failed on a "
          "request the serving model answered: %s",
          job_.status.message());
      shot_agreeing_ = 0;
    }
    stats_.Add(shot_rows_, shot_agreeing_, shot_worst_);
    changed_since_tick_ = true;
    if (!outcome_) {
      const AgreementStats::Verdict v = stats_.Decide();
      if (v != AgreementStats::Verdict::kPending) {
        ShadowOutcome o;
        o.agrees = v == AgreementStats::Verdict::kAgrees;
        o.reason = (o.agrees ? std::string("shadow validation passed: ")
                             : std::string("shadow validation failed: ")) +
                   stats_.Summary();
        Conclude(std::move(o));
      }
    }
  }
  if (outcome_) deliver_.Schedule();
  return true;
}

void ShadowValidator::Conclude(ShadowOutcome outcome) {
  outcome.progress = stats_.progress();
  outcome_ = std::move(outcome);
  deliver_.Schedule();
}

void ShadowValidator::Deliver() {
  if (!running_ || !outcome_ || in_flight_) return;  // after the job is back
  running_ = false;
  tick_.reset();
  ShadowOutcome o = std::move(*outcome_);
  outcome_.reset();
  auto done = std::move(done_);
  done_ = nullptr;
  changed_ = nullptr;
  serving_ = staged_ = nullptr;
  if (done) done(o);
}

int ShadowValidator::OnTick(sd_event_source* s, uint64_t, void* self) {
  auto* v = static_cast<ShadowValidator*>(self);
  v->Tick();
  if (v->running_ && v->tick_.get() == s) {
    sd_event_source_set_time_relative(s, kTickUsec);
    sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
  }
  return 0;
}

void ShadowValidator::Tick() {
  if (!running_ || outcome_) return;
  if (MonotonicNs() >= deadline_ns_) {
    ShadowOutcome o;
    o.agrees = false;
    char why[120];
    std::snprintf(why, sizeof(why),
                  "shadow validation timed out: %u s passed with %llu of %llu "
                  "requests compared; ",
                  spec_.time_limit_s,
                  static_cast<unsigned long long>(stats_.progress().requests),
                  static_cast<unsigned long long>(spec_.min_requests));
    o.reason = why + stats_.Summary();
    Conclude(std::move(o));
    return;
  }
  if (changed_since_tick_ && changed_) {
    changed_since_tick_ = false;
    changed_();
  }
}

}  // namespace ternd::daemon
