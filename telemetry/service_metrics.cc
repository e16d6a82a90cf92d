#include "telemetry/service_metrics.h"

namespace ternd::telemetry {

ServiceMetrics::ServiceMetrics(Registry* r, std::vector<std::string> calls)
    : calls_(std::move(calls)) {
  for (const std::string& call : calls_) {
    for (int code = 0; code < kStatusCodes; ++code) {
      requests_.push_back(r->AddCounter(
          "ternd_requests_total", "Requests answered, by call and status",
          "requests",
          {{"call", call},
           {"status", StatusCodeName(static_cast<StatusCode>(code))}}));
    }
  }
  for (const std::string& call : calls_) {
    queue_.push_back(r->AddLatencyHistogram(
        "ternd_request_queue_seconds",
        "Time from reading a request to a worker starting it",
        {{"call", call}}));
  }
  for (const std::string& call : calls_) {
    compute_.push_back(r->AddLatencyHistogram(
        "ternd_request_compute_seconds",
        "Time a worker spent computing a request", {{"call", call}}));
  }
  inflight = r->AddGauge("ternd_inflight_requests",
                         "Requests accepted and not yet answered", "requests");
  queue_depth = r->AddGauge("ternd_queue_depth",
                            "Requests waiting for a worker", "requests");
  connections =
      r->AddGauge("ternd_connections", "Open client connections on the socket",
                  "connections");
  connections_total =
      r->AddCounter("ternd_connections_total",
                    "Client connections accepted since start", "connections");
  frames_rejected = r->AddCounter(
      "ternd_frames_rejected_total",
      "Malformed or oversized frames refused since start", "frames");
  inline_requests = r->AddCounter(
      "ternd_inline_requests_total",
      "Infer calls run on the event loop thread instead of a worker "
      "(runtime.inline_max_us)",
      "requests");
  model = r->AddInfo("ternd_model_info",
                     "The model serving now (name, version, kernel)");
  update_state = r->AddInfo("ternd_update_state_info",
                            "The update state machine's current state");
  arena_used_bytes = r->AddGauge("ternd_arena_used_bytes",
                                 "Bytes of the model arena in use", "bytes");
  arena_size_bytes =
      r->AddGauge("ternd_arena_size_bytes", "Size of the model arena", "bytes");
}

}  // namespace ternd::telemetry
