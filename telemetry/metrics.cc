#include "telemetry/metrics.h"

#include <cmath>

#include "base/check.h"

namespace ternd::telemetry {
namespace internal {

namespace {
std::atomic<int> g_next_shard{0};
thread_local int t_shard = -1;
}  // namespace

int ThisThreadShard() {
  int s = t_shard;
  if (__builtin_expect(s < 0, 0)) {
    s = g_next_shard.fetch_add(1, std::memory_order_relaxed) % kShards;
    t_shard = s;
  }
  return s;
}

}  // namespace internal

uint64_t Counter::Value() const {
  uint64_t total = 0;
  for (const Shard& s : shards_)
    total += s.value.load(std::memory_order_relaxed);
  return total;
}

int HistogramSnapshot::BucketOf(uint64_t v) {
  if (v < 2) return 0;
  const int e = 63 - __builtin_clzll(v);  // 2^e <= v < 2^(e+1)
  if (e >= kExponents) return kBuckets - 1;
  // The 3 bits below the leading one pick the sub-bucket.
  const int sub = e >= 3 ? static_cast<int>((v >> (e - 3)) & 7)
                         : static_cast<int>((v << (3 - e)) & 7);
  return e * kSubBuckets + sub;
}

double HistogramSnapshot::BucketLow(int b) {
  if (b == 0) return 0;
  return std::ldexp(1.0 + (b % kSubBuckets) / double{kSubBuckets},
                    b / kSubBuckets);
}

double HistogramSnapshot::BucketHigh(int b) {
  if (b >= kBuckets - 1) return std::ldexp(1.0, kExponents);
  return std::ldexp(1.0 + (b % kSubBuckets + 1) / double{kSubBuckets},
                    b / kSubBuckets);
}

double HistogramSnapshot::Percentile(double q) const {
  if (count == 0) return 0;
  if (q < 0) q = 0;
  if (q > 1) q = 1;
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * double(count)));
  if (rank < 1) rank = 1;
  uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += buckets[b];
    if (seen >= rank) {
      if (b == kBuckets - 1) return BucketLow(b);
      const double low = BucketLow(b);
      const double high = BucketHigh(b);
      return low <= 0 ? high / 2 : std::sqrt(low * high);
    }
  }
  return BucketLow(kBuckets - 1);
}

uint64_t HistogramSnapshot::CountBelow(double value) const {
  uint64_t n = 0;
  for (int b = 0; b < kBuckets - 1; ++b) {
    if (BucketHigh(b) > value) break;
    n += buckets[b];
  }
  return n;
}

void HistogramSnapshot::Merge(const HistogramSnapshot& other) {
  for (int b = 0; b < kBuckets; ++b) buckets[b] += other.buckets[b];
  count += other.count;
  sum += other.sum;
}

HistogramSnapshot Histogram::Snapshot() const {
  HistogramSnapshot out;
  for (const Shard& s : shards_) {
    for (int b = 0; b < HistogramSnapshot::kBuckets; ++b) {
      out.buckets[b] += s.buckets[b].load(std::memory_order_relaxed);
    }
    out.sum += s.sum.load(std::memory_order_relaxed);
  }
  for (uint64_t c : out.buckets) out.count += c;
  return out;
}

void Info::Set(Labels labels) {
  std::lock_guard<std::mutex> lock(mu_);
  labels_ = std::move(labels);
}

Labels Info::Get() const {
  std::lock_guard<std::mutex> lock(mu_);
  return labels_;
}

const char* MetricKindName(MetricKind kind) {
  switch (kind) {
    case MetricKind::kCounter:
      return "counter";
    case MetricKind::kGauge:
      return "gauge";
    case MetricKind::kHistogram:
      return "histogram";
    case MetricKind::kInfo:
      return "info";
  }
  return "unknown";
}

Registry::Entry* Registry::FindOrAdd(const std::string& name,
                                     const std::string& help,
                                     const std::string& unit, MetricKind kind,
                                     const Labels& labels, bool* added) {
  for (Entry& e : entries_) {
    if (e.name != name) continue;
    TERND_CHECK(e.kind == kind);  // one name, one kind
    if (e.labels == labels) {
      *added = false;
      return &e;
    }
  }
  Entry& e = entries_.emplace_back();
  e.name = name;
  e.help = help;
  e.unit = unit;
  e.kind = kind;
  e.labels = labels;
  *added = true;
  return &e;
}

Counter* Registry::AddCounter(const std::string& name, const std::string& help,
                              const std::string& unit, Labels labels) {
  std::lock_guard<std::mutex> lock(mu_);
  bool added;
  Entry* e = FindOrAdd(name, help, unit, MetricKind::kCounter, labels, &added);
  if (added) e->counter = std::make_unique<Counter>();
  return e->counter.get();
}

Gauge* Registry::AddGauge(const std::string& name, const std::string& help,
                          const std::string& unit, Labels labels) {
  std::lock_guard<std::mutex> lock(mu_);
  bool added;
  Entry* e = FindOrAdd(name, help, unit, MetricKind::kGauge, labels, &added);
  if (added) e->gauge = std::make_unique<Gauge>();
  return e->gauge.get();
}

Histogram* Registry::AddLatencyHistogram(const std::string& name,
                                         const std::string& help,
                                         Labels labels) {
  std::lock_guard<std::mutex> lock(mu_);
  bool added;
  Entry* e =
      FindOrAdd(name, help, "seconds", MetricKind::kHistogram, labels, &added);
  if (added) e->histogram = std::make_unique<Histogram>(1e-9);
  return e->histogram.get();
}

Histogram* Registry::AddHistogram(const std::string& name,
                                  const std::string& help,
                                  const std::string& unit, double scale,
                                  Labels labels) {
  std::lock_guard<std::mutex> lock(mu_);
  bool added;
  Entry* e =
      FindOrAdd(name, help, unit, MetricKind::kHistogram, labels, &added);
  if (added) e->histogram = std::make_unique<Histogram>(scale);
  return e->histogram.get();
}

Info* Registry::AddInfo(const std::string& name, const std::string& help) {
  std::lock_guard<std::mutex> lock(mu_);
  bool added;
  Entry* e = FindOrAdd(name, help, "1", MetricKind::kInfo, {}, &added);
  if (added) e->info = std::make_unique<Info>();
  return e->info.get();
}

int Registry::AddCollector(std::function<void()> collect) {
  std::lock_guard<std::mutex> lock(collectors_mu_);
  collectors_[next_collector_] = std::move(collect);
  return next_collector_++;
}

void Registry::RemoveCollector(int id) {
  std::lock_guard<std::mutex> lock(collectors_mu_);
  collectors_.erase(id);
}

std::vector<MetricSnapshot> Registry::Snapshot() const {
  {
    std::lock_guard<std::mutex> collect_lock(collectors_mu_);
    for (const auto& [id, collect] : collectors_) collect();
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<MetricSnapshot> out;
  out.reserve(entries_.size());
  for (const Entry& e : entries_) {
    MetricSnapshot m;
    m.name = e.name;
    m.help = e.help;
    m.unit = e.unit;
    m.kind = e.kind;
    m.labels = e.labels;
    switch (e.kind) {
      case MetricKind::kCounter:
        m.value = static_cast<double>(e.counter->Value());
        break;
      case MetricKind::kGauge:
        m.value = e.gauge->Value();
        break;
      case MetricKind::kHistogram:
        m.histogram = e.histogram->Snapshot();
        m.scale = e.histogram->scale();
        m.value = static_cast<double>(m.histogram.count);
        break;
      case MetricKind::kInfo:
        m.labels = e.info->Get();
        m.value = 1;
        if (m.labels.empty()) continue;  // not set yet: nothing to say
        break;
    }
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace ternd::telemetry
