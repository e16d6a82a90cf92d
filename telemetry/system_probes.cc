#include "telemetry/system_probes.h"

#include <dirent.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/log.h"

namespace ternd::telemetry {
namespace {

bool ReadSmallFile(const std::string& path, std::string* out) {
  std::ifstream f(path);
  if (!f) return false;
  std::stringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return true;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

SystemProbes::SystemProbes(Registry* registry, ProbeRoots roots,
                           std::string disk_path)
    : registry_(registry),
      roots_(std::move(roots)),
      disk_path_(std::move(disk_path)) {
  Registry& r = *registry_;
  cpu_ = r.AddGauge("ternd_system_cpu_usage_ratio",
                    "Busy share of all CPUs over the last sampling interval "
                    "(0..1)",
                    "ratio");
  load1_ = r.AddGauge("ternd_system_load1", "Load average over 1 minute", "1");
  load5_ = r.AddGauge("ternd_system_load5", "Load average over 5 minutes", "1");
  load15_ =
      r.AddGauge("ternd_system_load15", "Load average over 15 minutes", "1");
  mem_total_ = r.AddGauge("ternd_system_memory_total_bytes",
                          "Physical memory (MemTotal)", "bytes");
  mem_available_ =
      r.AddGauge("ternd_system_memory_available_bytes",
                 "Memory available to new programs (MemAvailable)", "bytes");
  rss_ = r.AddGauge("ternd_process_resident_memory_bytes",
                    "Resident memory of the ternd process (VmRSS)", "bytes");
  disk_free_ = r.AddGauge("ternd_state_disk_free_bytes",
                          "Free space for ternd on the state directory's file "
                          "system",
                          "bytes");
  disk_total_ =
      r.AddGauge("ternd_state_disk_total_bytes",
                 "Size of the state directory's file system", "bytes");
  uptime_ = r.AddGauge("ternd_system_uptime_seconds",
                       "Time since the machine booted", "seconds");
  boot_ = r.AddInfo("ternd_system_boot_info",
                    "The kernel's boot id (changes at every boot)");
}

void SystemProbes::Fail(const std::string& what) {
  errors_.push_back(what);
  if (logged_.insert(what).second) {
    TERND_LOG_INFO("telemetry: probe skipped: %s", what.c_str());
  }
}

Gauge* SystemProbes::TemperatureGauge(const std::string& zone_dir,
                                      const std::string& type) {
  for (auto& [dir, g] : temps_) {
    if (dir == zone_dir) return g;
  }
  const std::string zone = zone_dir.substr(zone_dir.rfind('/') + 1);
  Gauge* g =
      registry_->AddGauge("ternd_system_temperature_celsius",
                          "Temperature of a thermal zone (/sys/class/thermal)",
                          "celsius", {{"zone", zone}, {"type", type}});
  temps_.emplace_back(zone_dir, g);
  return g;
}

SystemSample SystemProbes::Sample() {
  errors_.clear();
  SystemSample s;
  std::string text;

  // CPU: the first line of /proc/stat, in clock ticks.
  const std::string stat = roots_.proc + "/stat";
  if (ReadSmallFile(stat, &text) && text.rfind("cpu ", 0) == 0) {
    std::istringstream in(text.substr(4, text.find('\n') - 4));
    uint64_t v[10] = {};
    int n = 0;
    while (n < 10 && in >> v[n]) ++n;
    if (n >= 4) {
      // user nice system idle iowait irq softirq steal (guest is in user).
      uint64_t total = 0;
      for (int i = 0; i < std::min(n, 8); ++i) total += v[i];
      const uint64_t idle = v[3] + (n > 4 ? v[4] : 0);
      const uint64_t busy = total - idle;
      if (total > prev_total_) {
        const double usage = double(busy - std::min(busy, prev_busy_)) /
                             double(total - prev_total_);
        s.cpu_usage = std::clamp(usage, 0.0, 1.0);
        cpu_->Set(*s.cpu_usage);
      }
      prev_busy_ = busy;
      prev_total_ = total;
    } else {
      Fail(stat + ": expected at least 4 numbers on the cpu line");
    }
  } else {
    Fail(stat + ": unreadable or no \"cpu \" line");
  }

  const std::string loadavg = roots_.proc + "/loadavg";
  double l1, l5, l15;
  if (ReadSmallFile(loadavg, &text) &&
      std::sscanf(text.c_str(), "%lf %lf %lf", &l1, &l5, &l15) == 3) {
    s.load1 = l1;
    s.load5 = l5;
    s.load15 = l15;
    load1_->Set(l1);
    load5_->Set(l5);
    load15_->Set(l15);
  } else {
    Fail(loadavg + ": expected three load averages");
  }

  const std::string meminfo = roots_.proc + "/meminfo";
  if (ReadSmallFile(meminfo, &text)) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      unsigned long long kb;
      if (std::sscanf(line.c_str(), "MemTotal: %llu kB", &kb) == 1) {
        s.memory_total_bytes = kb * 1024;
      } else if (std::sscanf(line.c_str(), "MemAvailable: %llu kB", &kb) == 1) {
        s.memory_available_bytes = kb * 1024;
      }
    }
    if (s.memory_total_bytes) mem_total_->Set(double(*s.memory_total_bytes));
    if (s.memory_available_bytes) {
      mem_available_->Set(double(*s.memory_available_bytes));
    }
    if (!s.memory_total_bytes || !s.memory_available_bytes) {
      Fail(meminfo + ": no MemTotal or MemAvailable line");
    }
  } else {
    Fail(meminfo + ": unreadable");
  }

  const std::string status = roots_.proc + "/self/status";
  if (ReadSmallFile(status, &text)) {
    const size_t at = text.find("\nVmRSS:");
    unsigned long long kb;
    if (at != std::string::npos &&
        std::sscanf(text.c_str() + at + 1, "VmRSS: %llu kB", &kb) == 1) {
      s.process_rss_bytes = kb * 1024;
      rss_->Set(double(*s.process_rss_bytes));
    } else {
      Fail(status + ": no VmRSS line");
    }
  } else {
    Fail(status + ": unreadable");
  }

  // Thermal zones: <sys>/class/thermal/thermal_zone*/{type,temp}.
  const std::string thermal = roots_.sys + "/class/thermal";
  if (DIR* d = ::opendir(thermal.c_str())) {
    std::vector<std::string> zones;
    while (dirent* e = ::readdir(d)) {
      if (std::strncmp(e->d_name, "thermal_zone", 12) == 0) {
        zones.push_back(thermal + "/" + e->d_name);
      }
    }
    ::closedir(d);
    std::sort(zones.begin(), zones.end());
    for (const std::string& zone : zones) {
      std::string type = "unknown";
      if (ReadSmallFile(zone + "/type", &text)) type = Trim(text);
      long long milli;
      if (ReadSmallFile(zone + "/temp", &text) &&
          std::sscanf(text.c_str(), "%lld", &milli) == 1) {
        const double c = double(milli) / 1000.0;
        s.temperatures.emplace_back(type, c);
        TemperatureGauge(zone, type)->Set(c);
      } else {
        Fail(zone + "/temp: unreadable");
      }
    }
  }  // no thermal class at all is normal (containers, some VMs)

  struct statvfs vfs;
  if (::statvfs(disk_path_.c_str(), &vfs) == 0) {
    s.disk_free_bytes = uint64_t(vfs.f_bavail) * vfs.f_frsize;
    s.disk_total_bytes = uint64_t(vfs.f_blocks) * vfs.f_frsize;
    disk_free_->Set(double(*s.disk_free_bytes));
    disk_total_->Set(double(*s.disk_total_bytes));
  } else {
    Fail(disk_path_ + ": statvfs: " + std::strerror(errno));
  }

  const std::string uptime = roots_.proc + "/uptime";
  double up;
  if (ReadSmallFile(uptime, &text) &&
      std::sscanf(text.c_str(), "%lf", &up) == 1) {
    s.uptime_seconds = up;
    uptime_->Set(up);
  } else {
    Fail(uptime + ": expected seconds since boot");
  }

  const std::string boot_id = roots_.proc + "/sys/kernel/random/boot_id";
  if (ReadSmallFile(boot_id, &text) && !Trim(text).empty()) {
    s.boot_id = Trim(text);
    boot_->Set({{"boot_id", s.boot_id}});
  } else {
    Fail(boot_id + ": unreadable");
  }
  return s;
}

}  // namespace ternd::telemetry
