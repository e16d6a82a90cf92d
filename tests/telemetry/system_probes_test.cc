// System probes against fixture /proc and /sys trees (exact values), with
// missing sources, and against the real /proc and /sys of this machine.
#include "telemetry/system_probes.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/telemetry/temp_dir.h"

namespace ternd::telemetry {
namespace {

void Write(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(
      std::filesystem::path(path).parent_path());
  std::ofstream(path) << text;
}

double GaugeValue(const Registry& r, const std::string& name,
                  const Labels& labels = {}) {
  for (const MetricSnapshot& m : r.Snapshot()) {
    if (m.name == name && (labels.empty() || m.labels == labels)) {
      return m.value;
    }
  }
  ADD_FAILURE() << "no metric " << name;
  return -1;
}

class FixtureTree {
 public:
  FixtureTree() {
    proc = dir / "proc";
    sys = dir / "sys";
    Write(proc + "/stat",
          "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\n");
    Write(proc + "/loadavg", "0.50 1.25 2.00 1/123 4567\n");
    Write(proc + "/meminfo",
          "MemTotal:        2048000 kB\nMemFree:          100000 kB\n"
          "MemAvailable:    1024000 kB\n");
    Write(proc + "/self/status",
          "Name:\tternd\nVmPeak:\t 9999 kB\n"
          "VmRSS:\t   12345 kB\nThreads:\t5\n");
    Write(proc + "/uptime", "3600.25 7000.00\n");
    Write(proc + "/sys/kernel/random/boot_id",
          "0d6b1c36-3f47-4f0e-9a0b-2d7b6b1a9c11\n");
    Write(sys + "/class/thermal/thermal_zone0/type", "cpu-thermal\n");
    Write(sys + "/class/thermal/thermal_zone0/temp", "47500\n");
    Write(sys + "/class/thermal/thermal_zone1/type", "gpu-thermal\n");
    Write(sys + "/class/thermal/thermal_zone1/temp", "-1250\n");
  }
  testing::TempDir dir;
  std::string proc, sys;
};

TEST(SystemProbesTest, ReadsFixtureValuesExactly) {
  FixtureTree t;
  Registry r;
  SystemProbes probes(&r, ProbeRoots{t.proc, t.sys}, t.dir.path());
  SystemSample s = probes.Sample();
  EXPECT_TRUE(probes.last_errors().empty()) << probes.last_errors().front();
  // Since boot: busy = 100 + 100 = 200 of 1000 ticks.
  ASSERT_TRUE(s.cpu_usage.has_value());
  EXPECT_DOUBLE_EQ(*s.cpu_usage, 0.2);
  EXPECT_DOUBLE_EQ(*s.load1, 0.5);
  EXPECT_DOUBLE_EQ(*s.load15, 2.0);
  EXPECT_EQ(*s.memory_total_bytes, 2048000ull * 1024);
  EXPECT_EQ(*s.memory_available_bytes, 1024000ull * 1024);
  EXPECT_EQ(*s.process_rss_bytes, 12345ull * 1024);
  EXPECT_DOUBLE_EQ(*s.uptime_seconds, 3600.25);
  EXPECT_EQ(s.boot_id, "0d6b1c36-3f47-4f0e-9a0b-2d7b6b1a9c11");
  ASSERT_EQ(s.temperatures.size(), 2u);
  EXPECT_EQ(s.temperatures[0].first, "cpu-thermal");
  EXPECT_DOUBLE_EQ(s.temperatures[0].second, 47.5);
  EXPECT_DOUBLE_EQ(s.temperatures[1].second, -1.25);
  EXPECT_GT(*s.disk_total_bytes, 0u);

  EXPECT_EQ(GaugeValue(r, "ternd_system_load5"), 1.25);
  EXPECT_EQ(GaugeValue(r, "ternd_process_resident_memory_bytes"),
            12345.0 * 1024);
  EXPECT_EQ(GaugeValue(r, "ternd_system_temperature_celsius",
                       {{"zone", "thermal_zone0"}, {"type", "cpu-thermal"}}),
            47.5);

  // The next sample measures the interval: 300 busy of 400 ticks.
  Write(t.proc + "/stat", "cpu  300 0 200 750 150 0 0 0 0 0\n");
  s = probes.Sample();
  ASSERT_TRUE(s.cpu_usage.has_value());
  EXPECT_DOUBLE_EQ(*s.cpu_usage, 0.75);
  EXPECT_EQ(GaugeValue(r, "ternd_system_cpu_usage_ratio"), 0.75);
}

TEST(SystemProbesTest, MissingSourcesAreNamedAndSkipped) {
  FixtureTree t;
  std::filesystem::remove(t.proc + "/meminfo");
  Write(t.proc + "/loadavg", "garbage\n");
  std::filesystem::remove_all(t.sys + "/class/thermal");
  Registry r;
  SystemProbes probes(&r, ProbeRoots{t.proc, t.sys}, t.dir / "no-such-dir");
  SystemSample s = probes.Sample();
  EXPECT_FALSE(s.memory_total_bytes.has_value());
  EXPECT_FALSE(s.load1.has_value());
  EXPECT_FALSE(s.disk_free_bytes.has_value());
  EXPECT_TRUE(s.temperatures.empty());
  EXPECT_TRUE(s.process_rss_bytes.has_value());  // the rest still works
  std::string all;
  for (const std::string& e : probes.last_errors()) all += e + "\n";
  EXPECT_NE(all.find(t.proc + "/meminfo"), std::string::npos) << all;
  EXPECT_NE(all.find(t.proc + "/loadavg"), std::string::npos) << all;
  EXPECT_NE(all.find("no-such-dir"), std::string::npos) << all;
  EXPECT_EQ(probes.last_errors().size(), 3u) << all;
}

TEST(SystemProbesTest, RealProcAndSys) {
  testing::TempDir dir;
  Registry r;
  SystemProbes probes(&r, ProbeRoots{}, dir.path());
  SystemSample s = probes.Sample();
  for (const std::string& e : probes.last_errors()) ADD_FAILURE() << e;
  ASSERT_TRUE(s.cpu_usage.has_value());
  EXPECT_GE(*s.cpu_usage, 0.0);
  EXPECT_LE(*s.cpu_usage, 1.0);
  EXPECT_GT(*s.memory_total_bytes, 0u);
  EXPECT_LE(*s.memory_available_bytes, *s.memory_total_bytes);
  EXPECT_GT(*s.process_rss_bytes, 0u);
  EXPECT_GT(*s.uptime_seconds, 0.0);
  EXPECT_GT(*s.disk_total_bytes, 0u);
  EXPECT_EQ(s.boot_id.size(), 36u) << s.boot_id;
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::string boot_id;
  f >> boot_id;
  EXPECT_EQ(s.boot_id, boot_id);
  // Thermal zones exist on boards and most laptops, not in every VM: the
  // count must match the directory.
  int zones = 0;
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator("/sys/class/thermal", ec)) {
    const std::string name = e.path().filename();
    if (name.rfind("thermal_zone", 0) == 0 &&
        std::ifstream(e.path() / "temp").good()) {
      ++zones;
    }
  }
  EXPECT_LE(s.temperatures.size(), size_t(zones));
}

}  // namespace
}  // namespace ternd::telemetry
