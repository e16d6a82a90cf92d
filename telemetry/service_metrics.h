// The instruments the daemon feeds, registered once with the names
// docs/telemetry.md documents, so the daemon's wiring is a few lines:
//
//   telemetry::ServiceMetrics metrics(&registry, {"infer", "generate", ...});
//   metrics.Request(call_index, status.code())->Add();     // worker thread
//   metrics.queue_seconds(call_index)->Record(queue_ns);   // worker thread
//   metrics.compute_seconds(call_index)->Record(compute_ns);
//   metrics.inflight->Add(1); ... metrics.inflight->Add(-1);
//   metrics.model->Set({{"name", n}, {"version", v}, {"kernel", k}});
//
// Every (call, status code) counter exists from the start (Prometheus
// prefers zeros to missing series); batches leave zero-valued labelled
// counters out to stay small.
//
// Thread-safety: the pointers are set in the constructor and never change;
// recording through them is lock-free (metrics.h).
#ifndef TERND_TELEMETRY_SERVICE_METRICS_H_
#define TERND_TELEMETRY_SERVICE_METRICS_H_

#include <string>
#include <vector>

#include "base/check.h"
#include "base/status.h"
#include "telemetry/metrics.h"

namespace ternd::telemetry {

class ServiceMetrics {
 public:
  static constexpr int kStatusCodes = 16;  // StatusCode 0..15

  ServiceMetrics(Registry* registry, std::vector<std::string> calls);

  // REQUIRES: call < calls.size().
  Counter* Request(size_t call, StatusCode code) const {
    TERND_DCHECK(call < calls_.size());
    return requests_[call * kStatusCodes + static_cast<int>(code)];
  }
  Histogram* queue_seconds(size_t call) const { return queue_[call]; }
  Histogram* compute_seconds(size_t call) const { return compute_[call]; }

  Gauge* inflight;     // requests accepted and not yet answered
  Gauge* queue_depth;  // Infer calls waiting for a worker
  Gauge* connections;  // open client connections
  Counter* connections_total;
  Counter* frames_rejected;  // malformed or oversized frames
  Counter* inline_requests;  // Infer calls run on the loop thread
  Info* model;               // name, version, kernel
  Info* update_state;        // state, reason, model, version
  Gauge* arena_used_bytes;
  Gauge* arena_size_bytes;

 private:
  std::vector<std::string> calls_;
  std::vector<Counter*> requests_;
  std::vector<Histogram*> queue_, compute_;
};

}  // namespace ternd::telemetry

#endif  // TERND_TELEMETRY_SERVICE_METRICS_H_
