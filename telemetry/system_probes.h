// System probes: CPU use, load average, memory, this process's resident
// memory, thermal zones, free space of the state directory, uptime and the
// kernel's boot id, read from /proc and /sys and published as gauges.
//
// The /proc and /sys roots are parameters so tests can point them at fixture
// trees. A source that is missing or unparsable (no thermal zones in a
// container, say) is skipped: its gauge keeps its last value and the reason
// is kept in `last_errors()` (and logged once per source).
//
// Thread-safety: one thread calls Sample() (the agent's loop); the gauges it
// sets may be read from anywhere.
#ifndef TERND_TELEMETRY_SYSTEM_PROBES_H_
#define TERND_TELEMETRY_SYSTEM_PROBES_H_

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "telemetry/metrics.h"

namespace ternd::telemetry {

struct ProbeRoots {
  std::string proc = "/proc";
  std::string sys = "/sys";
};

struct SystemSample {
  // Busy share of all CPUs since the previous sample (since boot on the
  // first), 0..1.
  std::optional<double> cpu_usage;
  std::optional<double> load1, load5, load15;
  std::optional<uint64_t> memory_total_bytes, memory_available_bytes;
  std::optional<uint64_t> process_rss_bytes;
  // (zone type, degrees Celsius) for every readable thermal zone.
  std::vector<std::pair<std::string, double>> temperatures;
  std::optional<uint64_t> disk_free_bytes, disk_total_bytes;
  std::optional<double> uptime_seconds;
  std::string boot_id;  // empty when unreadable
};

class SystemProbes {
 public:
  // Registers the gauges in `registry` (which must outlive this). `disk_path`
  // is the directory whose file system's free space is reported (the state
  // directory).
  SystemProbes(Registry* registry, ProbeRoots roots, std::string disk_path);

  // Reads every source and updates the gauges.
  SystemSample Sample();

  // "file: reason" for each source that failed in the last Sample().
  const std::vector<std::string>& last_errors() const { return errors_; }

 private:
  void Fail(const std::string& what);
  Gauge* TemperatureGauge(const std::string& zone_dir, const std::string& type);

  Registry* registry_;
  ProbeRoots roots_;
  std::string disk_path_;
  std::vector<std::string> errors_;
  std::set<std::string> logged_;
  uint64_t prev_busy_ = 0, prev_total_ = 0;

  Gauge* cpu_;
  Gauge* load1_;
  Gauge* load5_;
  Gauge* load15_;
  Gauge* mem_total_;
  Gauge* mem_available_;
  Gauge* rss_;
  Gauge* disk_free_;
  Gauge* disk_total_;
  Gauge* uptime_;
  Info* boot_;
  std::vector<std::pair<std::string, Gauge*>> temps_;  // zone dir -> gauge
};

}  // namespace ternd::telemetry

#endif  // TERND_TELEMETRY_SYSTEM_PROBES_H_
