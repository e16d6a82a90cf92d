#include "telemetry/fleet_quality.h"

#include <algorithm>
#include <cstdlib>
#include <set>

#include "telemetry/quality.h"

namespace ternd::telemetry {
namespace {

// Numeric versions in numeric order, others after them as text.
bool VersionLess(const std::string& a, const std::string& b) {
  char* ea = nullptr;
  char* eb = nullptr;
  const unsigned long long na = std::strtoull(a.c_str(), &ea, 10);
  const unsigned long long nb = std::strtoull(b.c_str(), &eb, 10);
  const bool da = !a.empty() && *ea == '\0';
  const bool db = !b.empty() && *eb == '\0';
  if (da != db) return da;
  if (da && na != nb) return na < nb;
  return a < b;
}

}  // namespace

double ClassDistance(const std::vector<uint64_t>& a, uint64_t a_other,
                     const std::vector<uint64_t>& b, uint64_t b_other) {
  std::vector<double> pa(a.begin(), a.end()), pb(b.begin(), b.end());
  const size_t n = std::max(pa.size(), pb.size());
  pa.resize(n, 0);
  pb.resize(n, 0);
  pa.push_back(double(a_other));
  pb.push_back(double(b_other));
  return TotalVariation(pa, pb);
}

bool FleetQuality::Add(const std::string& device, const TelemetryBatch& b) {
  Latest& l = latest_[{device, b.boot_epoch()}];
  if (l.sequence != 0 && b.sequence() <= l.sequence) return false;
  l.sequence = b.sequence();
  l.quality.assign(b.quality().begin(), b.quality().end());
  return true;
}

std::vector<FleetQuality::VersionRow> FleetQuality::Rows(
    double threshold) const {
  struct Acc {
    VersionRow row;
    std::set<std::string> devices;
    double conf_sum = 0, norm_sum = 0;
    uint64_t conf_n = 0, norm_n = 0;
  };
  std::map<std::pair<std::string, std::string>, Acc> acc;
  for (const auto& [key, latest] : latest_) {
    for (const ModelQuality& q : latest.quality) {
      if (q.requests() == 0 && !q.has_shadow_agreement()) continue;
      Acc& a = acc[{q.model(), q.version()}];
      a.row.model = q.model();
      a.row.version = q.version();
      if (q.requests() > 0) a.devices.insert(std::get<0>(key));
      a.row.requests += q.requests();
      a.row.rows += q.rows();
      if (a.row.classes.size() < size_t(q.class_count_size())) {
        a.row.classes.resize(size_t(q.class_count_size()), 0);
      }
      for (int i = 0; i < q.class_count_size(); ++i) {
        a.row.classes[size_t(i)] += q.class_count(i);
      }
      a.row.other += q.other_class();
      if (q.has_confidence() && q.confidence().count() > 0) {
        a.row.classifier = true;
        a.conf_sum += q.confidence().sum();
        a.conf_n += q.confidence().count();
      }
      if (q.has_output_norm() && q.output_norm().count() > 0) {
        a.norm_sum += q.output_norm().sum();
        a.norm_n += q.output_norm().count();
      }
      if (q.has_shadow_agreement()) {
        a.row.has_shadow_agreement = true;
        a.row.shadow_agreement = q.shadow_agreement();
      }
    }
  }
  std::vector<VersionRow> rows;
  for (auto& [key, a] : acc) {
    a.row.devices = a.devices.size();
    if (a.conf_n) a.row.mean_confidence = a.conf_sum / double(a.conf_n);
    if (a.norm_n) a.row.mean_output_norm = a.norm_sum / double(a.norm_n);
    rows.push_back(std::move(a.row));
  }
  std::sort(rows.begin(), rows.end(),
            [](const VersionRow& x, const VersionRow& y) {
              if (x.model != y.model) return x.model < y.model;
              return VersionLess(x.version, y.version);
            });
  const VersionRow* previous = nullptr;
  for (VersionRow& r : rows) {
    if (previous && previous->model != r.model) previous = nullptr;
    const bool has_classes = r.classifier && r.rows > 0;
    if (previous && has_classes) {
      r.previous_version = previous->version;
      r.distance =
          ClassDistance(previous->classes, previous->other, r.classes, r.other);
      r.flagged = r.distance > threshold;
    }
    if (has_classes) previous = &r;
  }
  return rows;
}

}  // namespace ternd::telemetry
