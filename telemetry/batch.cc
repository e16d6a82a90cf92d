#include "telemetry/batch.h"

#include <zdict.h>
#include <zstd.h>

namespace ternd::telemetry {

void FillBatch(const BatchHeader& h, const std::vector<MetricSnapshot>& metrics,
               TelemetryBatch* batch) {
  batch->Clear();
  batch->set_schema_version(1);
  batch->set_device_id(h.device_id);
  batch->set_boot_epoch(h.boot_epoch);
  batch->set_sequence(h.sequence);
  batch->set_start_unix_ms(h.start_unix_ms);
  batch->set_end_unix_ms(h.end_unix_ms);
  batch->set_uptime_ms(h.uptime_ms);
  batch->set_dropped_batches_total(h.dropped_batches_total);
  batch->set_boot_id(h.boot_id);
  for (const MetricSnapshot& m : metrics) {
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
      case MetricKind::kHistogram: {
        out->set_kind(Metric::HISTOGRAM);
        const HistogramSnapshot& hs = m.histogram;
        HistogramValue* ho = out->mutable_histogram();
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
        break;
      }
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
