#include "daemon/request_codec.h"

#include <array>
#include <cstring>

#include "runtime/kernels/kernels.h"

namespace ternd::daemon {
namespace {

wire::DType WireDType(model::DType d) {
  return d == model::I32 ? wire::I32 : wire::F32;
}

}  // namespace

const std::vector<std::string>& CallNames() {
  static const std::vector<std::string> names = {
      "infer",   "model_info",    "health", "stats",  "generate",
      "install", "update_status", "cancel", "invalid"};
  return names;
}

CallIndex CallOf(const wire::Request& r) {
  switch (r.call_case()) {
    case wire::Request::kInfer:
      return kCallInfer;
    case wire::Request::kModelInfo:
      return kCallModelInfo;
    case wire::Request::kHealth:
      return kCallHealth;
    case wire::Request::kStats:
      return kCallStats;
    case wire::Request::kGenerate:
      return kCallGenerate;
    case wire::Request::kInstall:
      return kCallInstall;
    case wire::Request::kUpdateStatus:
      return kCallUpdateStatus;
    case wire::Request::kCancel:
      return kCallCancel;
    case wire::Request::CALL_NOT_SET:
      break;
  }
  return kCallInvalid;
}
Status PrepareInfer(const wire::InferRequest& r, const runtime::LoadedModel& m,
                    InferJob* job) {
  const int num_inputs = m.num_inputs();
  // Which request tensor feeds each model input.
  std::array<int, 64> source;
  if (num_inputs > static_cast<int>(source.size())) {
    return Internal("model '%s' has %d inputs, more than the daemon's %zu",
                    m.name(), num_inputs, source.size());
  }
  source.fill(-1);
  for (int t = 0; t < r.inputs_size(); ++t) {
    const wire::Tensor& tensor = r.inputs(t);
    int i = m.FindInput(tensor.name());
    if (i < 0 && tensor.name().empty() && num_inputs == 1) i = 0;
    if (i < 0) {
      std::string names;
      for (int k = 0; k < num_inputs; ++k) {
        names += (k ? ", " : "") + std::string(m.input_info(k).name);
      }
      return InvalidArgument(
          "'%.64s' is not an input of model '%s' (inputs: "
          "%.200s)",
          tensor.name().c_str(), m.name(), names.c_str());
    }
    if (source[i] >= 0) {
      return InvalidArgument("input '%s' is given twice", m.input_info(i).name);
    }
    source[i] = t;
  }
  int batch = -1;
  size_t total = 0;
  for (int i = 0; i < num_inputs; ++i) {
    const runtime::IoInfo& info = m.input_info(i);
    if (source[i] < 0) {
      return InvalidArgument("input '%s' (%u values per row) is missing",
                             info.name, info.features);
    }
    const wire::Tensor& t = r.inputs(source[i]);
    size_t elem;
    if (t.dtype() == wire::F32) {
      elem = 4;
    } else if (t.dtype() == wire::I8) {
      elem = 1;
    } else {
      return InvalidArgument(
          "input '%s' has dtype %d; inputs take F32 (1) or "
          "I8 (2)",
          info.name, static_cast<int>(t.dtype()));
    }
    uint64_t rows;
    if (t.shape_size() == 0) {
      // No shape: as many whole rows as the data holds.
      const uint64_t row_bytes = uint64_t{info.features} * elem;
      if (t.data().size() % row_bytes != 0) {
        return InvalidArgument(
            "input '%s' has %zu bytes, not a whole number of "
            "%u-value rows of %zu-byte elements",
            info.name, t.data().size(), info.features, elem);
      }
      rows = t.data().size() / row_bytes;
    } else {
      rows = t.shape(0);
      uint64_t per_row = 1;
      for (int d = 1; d < t.shape_size(); ++d) {
        per_row *= t.shape(d);
        if (per_row > (uint64_t{1} << 32)) break;
      }
      if (per_row != info.features) {
        return InvalidArgument(
            "input '%s' has %llu values per row (shape "
            "after the batch dimension), the model takes %u",
            info.name, static_cast<unsigned long long>(per_row), info.features);
      }
      if (t.data().size() != rows * info.features * elem) {
        return InvalidArgument(
            "input '%s' has %zu bytes of data; shape says "
            "%llu rows x %u values x %zu bytes",
            info.name, t.data().size(), static_cast<unsigned long long>(rows),
            info.features, elem);
      }
    }
    if (rows < 1 || rows > static_cast<uint64_t>(m.max_batch())) {
      return InvalidArgument(
          "input '%s' has %llu rows; model '%s' takes 1..%d "
          "per call",
          info.name, static_cast<unsigned long long>(rows), m.name(),
          m.max_batch());
    }
    if (batch >= 0 && static_cast<int>(rows) != batch) {
      return InvalidArgument("input '%s' has %llu rows, other inputs have %d",
                             info.name, static_cast<unsigned long long>(rows),
                             batch);
    }
    batch = static_cast<int>(rows);
    total += rows * info.features;
  }
  job->batch = batch;
  job->inputs.resize(total);
  float* dst = job->inputs.data();
  for (int i = 0; i < num_inputs; ++i) {
    const wire::Tensor& t = r.inputs(source[i]);
    const size_t n = static_cast<size_t>(batch) * m.input_info(i).features;
    if (t.dtype() == wire::F32) {
      std::memcpy(dst, t.data().data(), n * sizeof(float));
    } else {
      const int8_t* src = reinterpret_cast<const int8_t*>(t.data().data());
      for (size_t k = 0; k < n; ++k) dst[k] = static_cast<float>(src[k]);
    }
    dst += n;
  }
  job->outputs.clear();
  if (r.outputs_size() == 0) {
    for (int o = 0; o < m.num_outputs(); ++o) job->outputs.push_back(o);
  } else {
    for (const std::string& name : r.outputs()) {
      const int o = m.FindOutput(name);
      if (o < 0) {
        return InvalidArgument("'%.64s' is not an output of model '%s'",
                               name.c_str(), m.name());
      }
      job->outputs.push_back(o);
    }
  }
  return Status::Ok();
}

void FinishInfer(const InferJob& job, wire::InferResponse* r) {
  const runtime::LoadedModel& m = *job.model;
  r->set_model(m.name());
  r->set_model_version(m.version());
  r->set_queue_us(static_cast<uint64_t>(job.started_ns - job.received_ns) /
                  1000);
  r->set_compute_us(static_cast<uint64_t>(job.finished_ns - job.started_ns) /
                    1000);
  size_t at = 0;
  for (int o : job.outputs) {
    const runtime::IoInfo& info = m.output_info(o);
    const size_t bytes = static_cast<size_t>(job.batch) * info.features * 4;
    wire::Tensor* t = r->add_outputs();
    t->set_name(info.name);
    t->set_dtype(WireDType(info.dtype));
    t->add_shape(static_cast<uint32_t>(job.batch));
    t->add_shape(info.features);
    t->set_data(job.results.data() + at, bytes);
    at += bytes;
  }
}

void FillModelInfo(const runtime::LoadedModel& m, const HostInfo& host,
                   wire::ModelInfoResponse* info) {
  info->set_name(m.name());
  info->set_version(m.version());
  for (int i = 0; i < m.num_inputs(); ++i) {
    wire::TensorSpec* s = info->add_inputs();
    s->set_name(m.input_info(i).name);
    s->set_dtype(wire::F32);
    s->set_features(m.input_info(i).features);
    s->set_sample_rate(m.input_info(i).sample_rate);
  }
  for (int o = 0; o < m.num_outputs(); ++o) {
    wire::TensorSpec* s = info->add_outputs();
    s->set_name(m.output_info(o).name);
    s->set_dtype(WireDType(m.output_info(o).dtype));
    s->set_features(m.output_info(o).features);
  }
  info->set_max_batch(static_cast<uint32_t>(m.max_batch()));
  info->set_kernel(m.kernel_name());
  info->set_arena_bytes(host.arena_bytes);
  info->set_slot_bytes(host.slot_bytes);
  info->set_slot_bytes_used(m.slot_bytes_used());
  info->set_workers(host.workers);
  info->set_swap(host.swap);
  for (int i = 0; i < m.num_ops(); ++i) {
    const runtime::OpInfo op = m.op_info(i);
    if (op.kernel == nullptr) continue;  // not a ternary product
    wire::TernaryMatrix* t = info->add_ternary_matrices();
    t->set_op(static_cast<uint32_t>(i));
    t->set_rows(op.out_features);
    t->set_cols(op.in_features);
    t->set_kernel(op.kernel->name);
    t->set_layout(runtime::IsTq1Kernel(*op.kernel) ? "1.6bit" : "2bit");
    t->set_packed_bytes(
        op.kernel->packed_size(op.out_features, op.in_features));
  }
}

void FillModelInfo(const runtime::LmModel& m, const tokenizer::Tokenizer& tok,
                   const std::string& architecture, const HostInfo& host,
                   wire::ModelInfoResponse* info) {
  info->set_name(m.name());
  info->set_version(m.version());
  info->set_max_batch(static_cast<uint32_t>(m.max_batch()));
  info->set_kernel(m.kernel().name);
  info->set_arena_bytes(host.arena_bytes);
  info->set_slot_bytes(host.slot_bytes);
  info->set_slot_bytes_used(m.slot_bytes_used());
  info->set_workers(static_cast<uint32_t>(m.threads()));
  info->set_swap(host.swap);
  wire::LanguageModelInfo* lm = info->mutable_language_model();
  const runtime::LmShape& sh = m.shape();
  lm->set_architecture(architecture);
  lm->set_layers(sh.layers);
  lm->set_embedding(sh.embedding);
  lm->set_vocab(sh.vocab);
  lm->set_context(static_cast<uint32_t>(m.max_context()));
  lm->set_sequences(static_cast<uint32_t>(m.sequences()));
  lm->set_threads(static_cast<uint32_t>(m.threads()));
  lm->set_kv_cache_bytes(m.kv_cache_bytes());
  lm->set_bytes_per_token(m.bytes_per_token());
  lm->set_tokenizer(tok.model() == tokenizer::Tokenizer::Model::kGpt2
                        ? "gpt2 " + tok.pre()
                        : std::string("llama"));
  lm->set_head(sh.head_dtype == model::I8    ? "I8"
               : sh.head_dtype == model::F16 ? "F16"
                                             : "F32");
  lm->set_tq1_matrices(m.tq1_matrices());
  lm->set_ternary_matrices(m.ternary_matrices());
}

void FillUpdateStatus(const UpdateStatus& st,
                      const std::string& disabled_reason,
                      const std::string& configured_model,
                      wire::UpdateStatusResponse* out) {
  out->set_enabled(disabled_reason.empty());
  out->set_disabled_reason(disabled_reason);
  out->set_state_code(static_cast<int>(st.record.state));
  out->set_state(ota::UpdateStateName(st.record.state));
  out->set_reason(st.record.reason);
  out->set_model_name(st.record.model_name);
  out->set_model_version(st.record.model_version);
  out->set_rollout_id(st.record.rollout_id);
  out->set_bytes_done(st.record.bytes_done);
  out->set_bytes_total(st.record.bytes_total);
  if (st.active) {
    out->mutable_active()->set_name(st.active->model_name);
    out->mutable_active()->set_version(st.active->model_version);
    out->mutable_active()->set_activated_at(st.active->activated_at);
  }
  if (st.previous) {
    out->mutable_previous()->set_name(st.previous->model_name);
    out->mutable_previous()->set_version(st.previous->model_version);
    out->mutable_previous()->set_activated_at(st.previous->activated_at);
  } else if (st.active) {
    // A rollback returns to the configured model.
    out->set_previous_configured(configured_model);
  }
  out->set_probation(st.probation);
  if (st.shadow) {
    const ShadowProgress& p = *st.shadow;
    wire::ShadowValidationStatus* v = out->mutable_shadow();
    v->set_metric(ShadowMetricName(p.metric));
    v->set_output(p.output);
    v->set_requests(p.requests);
    v->set_required(p.required);
    v->set_rows(p.rows);
    v->set_agreeing(p.agreeing);
    v->set_agreement(p.agreement());
    v->set_min_agreement(p.min_agreement);
    v->set_worst_relative_l2(p.worst_relative_l2);
    v->set_dropped(p.dropped);
    v->set_deadline(p.deadline);
  }
}

}  // namespace ternd::daemon
