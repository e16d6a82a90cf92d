// Prometheus text output, parsed back by a small parser of the exposition
// format; JSON output; the atomic textfile.
#include "telemetry/exposition.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "tests/telemetry/temp_dir.h"

namespace ternd::telemetry {
namespace {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value;
};

struct Parsed {
  std::map<std::string, std::string> help, type;
  std::vector<Sample> samples;
  std::vector<std::string> errors;
};

// Parses the text format (name{labels} value), unescaping label values.
Parsed Parse(const std::string& text) {
  Parsed p;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const std::string rest = line.substr(7);
      const size_t sp = rest.find(' ');
      auto& m = line[2] == 'H' ? p.help : p.type;
      if (m.count(rest.substr(0, sp))) {
        p.errors.push_back("line " + std::to_string(n) + ": repeated " +
                           line.substr(0, 6));
      }
      m[rest.substr(0, sp)] = rest.substr(sp + 1);
      continue;
    }
    Sample s;
    size_t i = 0;
    while (i < line.size() &&
           (std::isalnum(static_cast<unsigned char>(line[i])) ||
            line[i] == '_' || line[i] == ':')) {
      s.name += line[i++];
    }
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        std::string k, v;
        while (line[i] != '=') k += line[i++];
        i += 2;  // ="
        while (line[i] != '"') {
          if (line[i] == '\\') {
            ++i;
            v += line[i] == 'n' ? '\n' : line[i];
          } else {
            v += line[i];
          }
          ++i;
        }
        ++i;  // closing quote
        if (line[i] == ',') ++i;
        s.labels[k] = v;
      }
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') {
      p.errors.push_back("line " + std::to_string(n) + ": " + line);
      continue;
    }
    const std::string v = line.substr(i + 1);
    s.value = v == "+Inf" ? INFINITY : std::strtod(v.c_str(), nullptr);
    if (!p.type.count(s.name) &&
        !p.type.count(s.name.substr(0, s.name.rfind('_')))) {
      p.errors.push_back("line " + std::to_string(n) + ": no TYPE before " +
                         s.name);
    }
    p.samples.push_back(std::move(s));
  }
  return p;
}

TEST(ExpositionTest, PrometheusTextParsesBack) {
  Registry r;
  const std::string odd = "a \"quoted\" back\\slash\nnewline";
  r.AddCounter("ternd_requests_total", "Requests answered", "requests",
               {{"call", "infer"}, {"status", "OK"}})
      ->Add(41);
  r.AddCounter("ternd_requests_total", "Requests answered", "requests",
               {{"call", odd}, {"status", "INTERNAL"}})
      ->Add(2);
  r.AddGauge("ternd_queue_depth", "Waiting", "requests")->Set(7.5);
  Histogram* h =
      r.AddLatencyHistogram("ternd_compute_seconds",
                            "Compute time\nsecond line", {{"call", "infer"}});
  std::vector<int64_t> ns = {500, 2000, 2000, 40000, 3000000, 90000000000};
  for (int64_t v : ns) h->Record(v);
  r.AddInfo("ternd_model_info", "Model")->Set({{"name", "digits"}});

  const std::string text = FormatPrometheus(r.Snapshot());
  const Parsed p = Parse(text);
  EXPECT_TRUE(p.errors.empty()) << p.errors.front() << "\n" << text;
  EXPECT_EQ(p.type.at("ternd_requests_total"), "counter");
  EXPECT_EQ(p.type.at("ternd_queue_depth"), "gauge");
  EXPECT_EQ(p.type.at("ternd_compute_seconds"), "histogram");
  EXPECT_EQ(p.type.at("ternd_model_info"), "gauge");
  EXPECT_EQ(p.help.at("ternd_compute_seconds"), "Compute time\\nsecond line");

  bool saw_odd = false;
  double prev_bucket = -1, inf_bucket = -1, count = -1, sum = -1;
  int buckets = 0;
  for (const Sample& s : p.samples) {
    if (s.name == "ternd_requests_total" && s.labels.at("call") == odd) {
      saw_odd = true;
      EXPECT_EQ(s.value, 2);
      EXPECT_EQ(s.labels.at("status"), "INTERNAL");
    }
    if (s.name == "ternd_requests_total" && s.labels.at("call") == "infer") {
      EXPECT_EQ(s.value, 41);
    }
    if (s.name == "ternd_queue_depth") {
      EXPECT_EQ(s.value, 7.5);
    }
    if (s.name == "ternd_model_info") {
      EXPECT_EQ(s.value, 1);
      EXPECT_EQ(s.labels.at("name"), "digits");
    }
    if (s.name == "ternd_compute_seconds_bucket") {
      EXPECT_EQ(s.labels.at("call"), "infer");
      EXPECT_GE(s.value, prev_bucket) << "buckets must be cumulative";
      prev_bucket = s.value;
      if (s.labels.at("le") == "+Inf") {
        inf_bucket = s.value;
      } else {
        ++buckets;
        // Exactly the samples below the bound.
        const double le = std::strtod(s.labels.at("le").c_str(), nullptr);
        double expect = 0;
        for (int64_t v : ns) expect += double(v) * 1e-9 < le * (1 - 1e-9);
        EXPECT_EQ(s.value, expect) << "le=" << s.labels.at("le");
      }
    }
    if (s.name == "ternd_compute_seconds_count") count = s.value;
    if (s.name == "ternd_compute_seconds_sum") sum = s.value;
  }
  EXPECT_TRUE(saw_odd) << text;
  EXPECT_EQ(buckets, kLastLeExponent - kFirstLeExponent + 1);
  EXPECT_EQ(inf_bucket, double(ns.size()));
  EXPECT_EQ(count, double(ns.size()));
  double expect_sum = 0;
  for (int64_t v : ns) expect_sum += double(v) * 1e-9;
  EXPECT_NEAR(sum, expect_sum, 1e-9);
}

TEST(ExpositionTest, JsonHasEveryMetric) {
  Registry r;
  r.AddCounter("ternd_a_total", "a", "1")->Add(5);
  r.AddGauge("ternd_b", "b", "1", {{"zone", "x\"y"}})->Set(2);
  r.AddLatencyHistogram("ternd_c_seconds", "c")->Record(1000000);
  const std::string j = FormatJson(r.Snapshot());
  EXPECT_NE(j.find("\"ternd_a_total\":5"), std::string::npos) << j;
  EXPECT_NE(j.find("\"zone\":\"x\\\"y\""), std::string::npos) << j;
  EXPECT_NE(j.find("\"ternd_c_seconds\":{\"count\":1,"), std::string::npos)
      << j;
  EXPECT_EQ(j.front(), '{');
  EXPECT_EQ(j.back(), '}');
}

TEST(ExpositionTest, TextfileIsWrittenAtomically) {
  testing::TempDir tmp;
  const std::string dir = tmp.path();
  const std::string path = dir + "/ternd.prom";
  Registry r;
  r.AddGauge("ternd_x", "x", "1")->Set(1);
  ASSERT_TRUE(
      WritePrometheusTextfile(path, FormatPrometheus(r.Snapshot())).ok());
  r.AddGauge("ternd_x", "x", "1")->Set(2);
  const std::string text = FormatPrometheus(r.Snapshot());
  ASSERT_TRUE(WritePrometheusTextfile(path, text).ok());
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_EQ(ss.str(), text);
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1) << "a temporary file was left behind";
  // An unwritable place is an error that names it.
  Status s = WritePrometheusTextfile(dir + "/missing/ternd.prom", text);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("missing/ternd.prom"),
            std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace ternd::telemetry
