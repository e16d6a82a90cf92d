#include "telemetry/batch.h"

#include <zdict.h>
#include <zstd.h>

#include <cstdlib>

#include "telemetry/quality.h"

namespace ternd::telemetry {
namespace {

void FillHistogram(const MetricSnapshot& m, HistogramValue* ho) {
  const HistogramSnapshot& hs = m.histogram;
  ho->set_sub_buckets(HistogramSnapshot::kSubBuckets);
  for (int b = 0; b < HistogramSnapshot::kBuckets; ++b) {
    if (hs.buckets[b] == 0) continue;
    ho->add_bucket_index(b);
    ho->add_bucket_count(hs.buckets[b]);
  }
  ho->set_count(hs.count);
  ho->set_sum(double(hs.sum) * m.scale);
  ho->set_scale(m.scale);
  ho->set_p50(hs.Percentile(0.5) * m.scale);
  ho->set_p90(hs.Percentile(0.9) * m.scale);
  ho->set_p99(hs.Percentile(0.99) * m.scale);
  ho->set_p999(hs.Percentile(0.999) * m.scale);
}

std::string LabelOf(const MetricSnapshot& m, const char* name) {
  for (const auto& [k, v] : m.labels) {
    if (k == name) return v;
  }
  return "";
}

// Index of a numeric label value below `limit`, else -1.
int IndexLabel(const std::string& v, int limit) {
  if (v.empty() || v.size() > 4) return -1;
  char* end = nullptr;
  const long i = std::strtol(v.c_str(), &end, 10);
  return *end == '\0' && i >= 0 && i < limit ? int(i) : -1;
}

// Moves a quality series into the batch's entry for its model version.
void AddQuality(const MetricSnapshot& m, TelemetryBatch* batch) {
  const std::string model = LabelOf(m, "model");
  const std::string version = LabelOf(m, "version");
  ModelQuality* q = nullptr;
  for (ModelQuality& e : *batch->mutable_quality()) {
    if (e.model() == model && e.version() == version) q = &e;
  }
  if (!q) {
    q = batch->add_quality();
    q->set_model(model);
    q->set_version(version);
  }
  const std::string& n = m.name;
  const uint64_t count = static_cast<uint64_t>(m.value);
  if (n == "ternd_model_requests_total") {
    q->set_requests(count);
  } else if (n == "ternd_model_rows_total") {
    q->set_rows(count);
  } else if (n == "ternd_model_class_total") {
    const std::string c = LabelOf(m, "class");
    const int i = IndexLabel(c, int(ModelQualityStats::kMaxClasses));
    if (i < 0) {
      q->set_other_class(q->other_class() + count);
    } else if (count > 0) {
      while (q->class_count_size() <= i) q->add_class_count(0);
      q->set_class_count(i, count);
    }
  } else if (n == "ternd_model_confidence") {
    FillHistogram(m, q->mutable_confidence());
  } else if (n == "ternd_model_output_norm") {
    FillHistogram(m, q->mutable_output_norm());
  } else if (n == "ternd_model_input_mean" ||
             n == "ternd_model_input_variance") {
    const bool mean = n == "ternd_model_input_mean";
    const int f =
        IndexLabel(LabelOf(m, "feature"), int(ModelQualityStats::kMaxFeatures));
    if (f < 0) return;
    auto* v = mean ? q->mutable_input_mean() : q->mutable_input_variance();
    while (v->size() <= f) v->Add(0);
    v->Set(f, m.value);
  } else if (n == "ternd_shadow_agreement") {
    q->set_has_shadow_agreement(true);
    q->set_shadow_agreement(m.value);
  }
}

}  // namespace

void FillBatch(const BatchHeader& h, const std::vector<MetricSnapshot>& metrics,
               TelemetryBatch* batch) {
  batch->Clear();
  batch->set_schema_version(2);
  batch->set_device_id(h.device_id);
  batch->set_boot_epoch(h.boot_epoch);
  batch->set_sequence(h.sequence);
  batch->set_start_unix_ms(h.start_unix_ms);
  batch->set_end_unix_ms(h.end_unix_ms);
  batch->set_uptime_ms(h.uptime_ms);
  batch->set_dropped_batches_total(h.dropped_batches_total);
  batch->set_boot_id(h.boot_id);
  for (const MetricSnapshot& m : metrics) {
    if (IsQualitySeries(m.name)) {
      AddQuality(m, batch);
      continue;
    }
    // Zero-valued labelled counters (every call x status exists from the
    // start) carry no information a consumer cannot infer: left out.
    if (m.kind == MetricKind::kCounter && m.value == 0 && !m.labels.empty()) {
      continue;
    }
    Metric* out = batch->add_metrics();
    out->set_name(m.name);
    out->set_unit(m.unit);
    for (const auto& [k, v] : m.labels) {
      Label* l = out->add_labels();
      l->set_name(k);
      l->set_value(v);
    }
    switch (m.kind) {
      case MetricKind::kCounter:
        out->set_kind(Metric::COUNTER);
        out->set_value(m.value);
        break;
      case MetricKind::kGauge:
        out->set_kind(Metric::GAUGE);
        out->set_value(m.value);
        break;
      case MetricKind::kInfo:
        out->set_kind(Metric::INFO);
        out->set_value(1);
        break;
      case MetricKind::kHistogram:
        out->set_kind(Metric::HISTOGRAM);
        FillHistogram(m, out->mutable_histogram());
        break;
    }
  }
  // A version that has not answered yet says nothing.
  auto* q = batch->mutable_quality();
  for (int i = q->size() - 1; i >= 0; --i) {
    if (q->Get(i).requests() == 0 && !q->Get(i).has_shadow_agreement()) {
      q->DeleteSubrange(i, 1);
    }
  }
}

struct BatchCodec::Zstd {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  ZSTD_CDict* cdict = nullptr;
  std::map<unsigned, ZSTD_DDict*> ddicts;
  ~Zstd() {
    ZSTD_freeCCtx(cctx);
    ZSTD_freeDCtx(dctx);
    ZSTD_freeCDict(cdict);
    for (auto& [id, d] : ddicts) ZSTD_freeDDict(d);
  }
};

BatchCodec::BatchCodec(int level) : level_(level), z_(new Zstd) {}
BatchCodec::~BatchCodec() = default;

Status BatchCodec::UseDictionary(std::string dictionary) {
  const unsigned id = ZDICT_getDictID(dictionary.data(), dictionary.size());
  if (id == 0) {
    return InvalidArgument(
        "telemetry dictionary: not a zstd dictionary (%zu bytes, no id)",
        dictionary.size());
  }
  ZSTD_freeCDict(z_->cdict);
  z_->cdict = ZSTD_createCDict(dictionary.data(), dictionary.size(), level_);
  if (!z_->cdict) return Internal("telemetry dictionary %u: cannot load", id);
  return AddDecodingDictionary(std::move(dictionary));
}

Status BatchCodec::AddDecodingDictionary(std::string dictionary) {
  const unsigned id = ZDICT_getDictID(dictionary.data(), dictionary.size());
  if (id == 0) {
    return InvalidArgument(
        "telemetry dictionary: not a zstd dictionary (%zu bytes, no id)",
        dictionary.size());
  }
  ZSTD_DDict* d = ZSTD_createDDict(dictionary.data(), dictionary.size());
  if (!d) return Internal("telemetry dictionary %u: cannot load", id);
  auto [it, added] = z_->ddicts.emplace(id, d);
  if (!added) {
    ZSTD_freeDDict(it->second);
    it->second = d;
  }
  return Status::Ok();
}

Result<std::string> BatchCodec::Encode(const TelemetryBatch& batch) {
  std::string serialized;
  if (!batch.SerializeToString(&serialized)) {
    return Internal("telemetry batch %llu: cannot serialize",
                    static_cast<unsigned long long>(batch.sequence()));
  }
  return Compress(serialized);
}

Result<std::string> BatchCodec::Compress(std::string_view in) {
  std::string out(ZSTD_compressBound(in.size()), '\0');
  size_t n;
  if (z_->cdict) {
    n = ZSTD_compress_usingCDict(z_->cctx, out.data(), out.size(), in.data(),
                                 in.size(), z_->cdict);
  } else {
    n = ZSTD_compressCCtx(z_->cctx, out.data(), out.size(), in.data(),
                          in.size(), level_);
  }
  if (ZSTD_isError(n)) {
    return Internal("zstd compression of %zu bytes: %s", in.size(),
                    ZSTD_getErrorName(n));
  }
  out.resize(n);
  return out;
}

Result<std::string> BatchCodec::Decompress(std::string_view payload) {
  const unsigned long long size =
      ZSTD_getFrameContentSize(payload.data(), payload.size());
  if (size == ZSTD_CONTENTSIZE_ERROR) {
    return DataLoss("telemetry payload (%zu bytes): not a zstd frame",
                    payload.size());
  }
  if (size == ZSTD_CONTENTSIZE_UNKNOWN || size > kMaxBatchBytes) {
    return DataLoss(
        "telemetry payload (%zu bytes): content size %s, expected at most %zu",
        payload.size(),
        size == ZSTD_CONTENTSIZE_UNKNOWN ? "unknown"
                                         : std::to_string(size).c_str(),
        kMaxBatchBytes);
  }
  const unsigned dict_id =
      ZSTD_getDictID_fromFrame(payload.data(), payload.size());
  ZSTD_DDict* ddict = nullptr;
  if (dict_id != 0) {
    auto it = z_->ddicts.find(dict_id);
    if (it == z_->ddicts.end()) {
      return FailedPrecondition(
          "telemetry payload: compressed with dictionary %u, which this "
          "reader does not have",
          dict_id);
    }
    ddict = it->second;
  }
  std::string out(size, '\0');
  const size_t n =
      ddict ? ZSTD_decompress_usingDDict(z_->dctx, out.data(), out.size(),
                                         payload.data(), payload.size(), ddict)
            : ZSTD_decompressDCtx(z_->dctx, out.data(), out.size(),
                                  payload.data(), payload.size());
  if (ZSTD_isError(n) || n != size) {
    return DataLoss("telemetry payload (%zu bytes): zstd: %s", payload.size(),
                    ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short frame");
  }
  return out;
}

Result<TelemetryBatch> BatchCodec::Decode(std::string_view payload) {
  TERND_ASSIGN_OR_RETURN(std::string raw, Decompress(payload));
  TelemetryBatch batch;
  if (!batch.ParseFromString(raw)) {
    return DataLoss(
        "telemetry payload: %zu bytes after zstd are not a TelemetryBatch",
        raw.size());
  }
  return batch;
}

Result<std::string> TrainDictionary(const std::vector<std::string>& samples,
                                    size_t max_bytes) {
  std::string all;
  std::vector<size_t> sizes;
  for (const std::string& s : samples) {
    all += s;
    sizes.push_back(s.size());
  }
  std::string dict(max_bytes, '\0');
  const size_t n =
      ZDICT_trainFromBuffer(dict.data(), dict.size(), all.data(), sizes.data(),
                            static_cast<unsigned>(sizes.size()));
  if (ZDICT_isError(n)) {
    return InvalidArgument("dictionary training on %zu samples: %s",
                           samples.size(), ZDICT_getErrorName(n));
  }
  dict.resize(n);
  return dict;
}

}  // namespace ternd::telemetry
