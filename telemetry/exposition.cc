#include "telemetry/exposition.h"

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <map>
#include <span>

#include "base/file.h"

#include "base/json.h"

namespace ternd::telemetry {
namespace {

std::string EscapeHelp(std::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.10g", v);
  }
  return buf;
}

// `{a="x",b="y"}` (with `extra` appended), or "" without labels.
std::string LabelSet(const Labels& labels, const std::string& extra = "") {
  if (labels.empty() && extra.empty()) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ',';
    first = false;
    out += k + "=\"" + EscapeLabelValue(v) + "\"";
  }
  if (!extra.empty()) {
    if (!first) out += ',';
    out += extra;
  }
  out += '}';
  return out;
}

// Names in order of first appearance, each with its series.
std::vector<std::vector<const MetricSnapshot*>> GroupByName(
    const std::vector<MetricSnapshot>& metrics) {
  std::vector<std::vector<const MetricSnapshot*>> groups;
  std::map<std::string, size_t> index;
  for (const MetricSnapshot& m : metrics) {
    auto [it, added] = index.emplace(m.name, groups.size());
    if (added) groups.emplace_back();
    groups[it->second].push_back(&m);
  }
  return groups;
}

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  return Number(v);
}

std::string JsonValue(const MetricSnapshot& m) {
  if (m.kind != MetricKind::kHistogram) return JsonNumber(m.value);
  const HistogramSnapshot& h = m.histogram;
  std::string out = "{\"count\":" + std::to_string(h.count) +
                    ",\"sum\":" + JsonNumber(double(h.sum) * m.scale);
  const std::pair<const char*, double> qs[] = {
      {"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"p999", 0.999}};
  for (const auto& [key, q] : qs) {
    out += ",\"" + std::string(key) +
           "\":" + JsonNumber(h.Percentile(q) * m.scale);
  }
  return out + "}";
}

}  // namespace

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatPrometheus(const std::vector<MetricSnapshot>& metrics) {
  std::string out;
  for (const auto& group : GroupByName(metrics)) {
    const MetricSnapshot& first = *group.front();
    const char* type = first.kind == MetricKind::kCounter     ? "counter"
                       : first.kind == MetricKind::kHistogram ? "histogram"
                                                              : "gauge";
    out += "# HELP " + first.name + " " + EscapeHelp(first.help) + "\n";
    out += "# TYPE " + first.name + " " + type + "\n";
    for (const MetricSnapshot* m : group) {
      if (m->kind != MetricKind::kHistogram) {
        out += m->name + LabelSet(m->labels) + " " + Number(m->value) + "\n";
        continue;
      }
      const HistogramSnapshot& h = m->histogram;
      for (int e = kFirstLeExponent; e <= kLastLeExponent; ++e) {
        const double bound = std::ldexp(1.0, e);
        out += m->name + "_bucket" +
               LabelSet(m->labels, "le=\"" + Number(bound * m->scale) + "\"") +
               " " + std::to_string(h.CountBelow(bound)) + "\n";
      }
      out += m->name + "_bucket" + LabelSet(m->labels, "le=\"+Inf\"") + " " +
             std::to_string(h.count) + "\n";
      out += m->name + "_sum" + LabelSet(m->labels) + " " +
             Number(double(h.sum) * m->scale) + "\n";
      out += m->name + "_count" + LabelSet(m->labels) + " " +
             std::to_string(h.count) + "\n";
    }
  }
  return out;
}

std::string FormatJson(const std::vector<MetricSnapshot>& metrics) {
  std::string out = "{";
  bool first_group = true;
  for (const auto& group : GroupByName(metrics)) {
    if (!first_group) out += ',';
    first_group = false;
    const MetricSnapshot& first = *group.front();
    out += JsonString(first.name) + ":";
    const bool plain = group.size() == 1 && first.labels.empty();
    if (plain) {
      out += JsonValue(first);
      continue;
    }
    out += '[';
    for (size_t i = 0; i < group.size(); ++i) {
      if (i) out += ',';
      out += "{\"labels\":{";
      for (size_t j = 0; j < group[i]->labels.size(); ++j) {
        if (j) out += ',';
        out += JsonString(group[i]->labels[j].first) + ":" +
               JsonString(group[i]->labels[j].second);
      }
      out += "},\"value\":" + JsonValue(*group[i]) + "}";
    }
    out += ']';
  }
  return out + "}";
}

Status WritePrometheusTextfile(const std::string& path,
                               const std::string& text) {
  return WriteFileAtomically(
      path,
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()),
                               text.size()),
      0644);
}

}  // namespace ternd::telemetry
