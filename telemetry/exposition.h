// Turns registry snapshots into text: the Prometheus text exposition format
// (version 0.0.4, what node_exporter's textfile collector and a Prometheus
// scrape read) and one JSON object for `ternctl stats --json` and logs.
//
// Histograms are exposed in seconds as cumulative `_bucket{le="..."}`
// series at every power of two of nanoseconds from 2^10 ns (1.02 us) to
// 2^35 ns (34.4 s) plus `+Inf`, then `_sum` and `_count`. A bucket counts
// the samples strictly below its bound (the registry's buckets are
// half-open); for nanosecond latencies the difference from "<=" is nil in
// practice. Info metrics are gauges with the value 1.
//
// Thread-safety: free functions on values.
#ifndef TERND_TELEMETRY_EXPOSITION_H_
#define TERND_TELEMETRY_EXPOSITION_H_

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "telemetry/metrics.h"

namespace ternd::telemetry {

// The `le` bounds, in recorded units (ns): 2^kFirstLeExponent ..
// 2^kLastLeExponent.
inline constexpr int kFirstLeExponent = 10;
inline constexpr int kLastLeExponent = 35;

std::string FormatPrometheus(const std::vector<MetricSnapshot>& metrics);

// `"name":value` pairs grouped by metric name; series with labels become
// arrays of {"labels":{...},"value":...}; histograms give count, sum and
// p50/p90/p99/p999 in their unit.
std::string FormatJson(const std::vector<MetricSnapshot>& metrics);

// Escapes a label value: backslash, double quote and newline.
std::string EscapeLabelValue(std::string_view value);

// Writes `text` to `path` atomically (temporary file + rename, mode 0644),
// as node_exporter's textfile collector requires (it must never read a
// half-written file). `path` should end in ".prom".
Status WritePrometheusTextfile(const std::string& path,
                               const std::string& text);

}  // namespace ternd::telemetry

#endif  // TERND_TELEMETRY_EXPOSITION_H_
