// The metrics registry: counters, gauges, latency histograms and info
// metrics (a set of labels with the value 1, e.g. the loaded model).
//
// Instruments are created once, at start, on any thread (that allocates and
// takes the registry's lock); the returned pointers stay valid for the
// registry's lifetime. Recording is lock-free and never allocates: each
// counter and histogram keeps kShards cache-line-aligned shards of relaxed
// atomics, a thread writes to the shard picked for it on its first record,
// and readers merge the shards. A reader may see one record's bucket before
// its sum (the values are not a consistent cut), which is acceptable for
// monitoring.
//
// Histograms are log-bucketed: each power of two of the recorded integer
// value (nanoseconds for latencies) is split into kSubBuckets equal buckets,
// so memory is fixed (kBuckets per shard) and any percentile is known
// within one bucket (at most 1/8 = 12.5% of the value), without storing
// samples. Snapshots of histograms with the same layout merge by adding
// bucket counts, also across devices.
//
// Thread-safety: every method may be called from any thread.
#ifndef TERND_TELEMETRY_METRICS_H_
#define TERND_TELEMETRY_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace ternd::telemetry {

// Name/value pairs, in the order given. Values are free text (escaped on
// output); names follow Prometheus rules ([a-zA-Z_][a-zA-Z0-9_]*).
using Labels = std::vector<std::pair<std::string, std::string>>;

// Number of shards per instrument; threads beyond that share shards (still
// correct, a little more cache-line traffic).
inline constexpr int kShards = 8;

namespace internal {
// The shard of the calling thread (assigned round robin on first use).
int ThisThreadShard();
}  // namespace internal

// A monotonically increasing count.
class Counter {
 public:
  void Add(uint64_t n = 1) {
    shards_[internal::ThisThreadShard()].value.fetch_add(
        n, std::memory_order_relaxed);
  }
  uint64_t Value() const;

 private:
  struct alignas(64) Shard {
    std::atomic<uint64_t> value{0};
  };
  std::array<Shard, kShards> shards_;
};

// A value that goes up and down (in-flight requests, temperature...).
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double d) { value_.fetch_add(d, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Merged histogram contents; values are in the recorded integer unit.
struct HistogramSnapshot {
  static constexpr int kSubBuckets = 8;
  static constexpr int kExponents = 41;  // values 0 .. 2^41 (36 minutes in ns)
  static constexpr int kBuckets = kExponents * kSubBuckets;

  std::array<uint64_t, kBuckets> buckets{};
  uint64_t count = 0;
  uint64_t sum = 0;  // of the recorded values (wraps after 584 years of ns)

  // The bucket holding `value`; values above the range go to the last one.
  static int BucketOf(uint64_t value);
  // [low, high) of bucket `b`; the last bucket's high is "infinite"
  // (returned as 2^kExponents).
  static double BucketLow(int b);
  static double BucketHigh(int b);

  // The value at rank ceil(q * count) (1-based) of the sorted samples,
  // estimated as the geometric middle of its bucket; 0 when empty. The true
  // sample lies in [BucketLow, BucketHigh) of the same bucket.
  double Percentile(double q) const;
  // The number of samples in buckets that end at or below `value`: exactly
  // the samples < `value` when `value` is a bucket boundary (every power of
  // two is one). Used for Prometheus `le` buckets.
  uint64_t CountBelow(double value) const;

  void Merge(const HistogramSnapshot& other);
};

// A latency (or any non-negative integer) distribution.
class Histogram {
 public:
  // `scale` converts recorded values to the exposed unit (1e-9 turns
  // nanoseconds into seconds, which is what Prometheus expects).
  explicit Histogram(double scale) : scale_(scale) {}

  // Never allocates, never locks; negative values count as 0.
  void Record(int64_t value) {
    const uint64_t v = value < 0 ? 0 : static_cast<uint64_t>(value);
    Shard& s = shards_[internal::ThisThreadShard()];
    s.buckets[HistogramSnapshot::BucketOf(v)].fetch_add(
        1, std::memory_order_relaxed);
    s.sum.fetch_add(v, std::memory_order_relaxed);
  }
  HistogramSnapshot Snapshot() const;
  double scale() const { return scale_; }

 private:
  struct alignas(64) Shard {
    std::atomic<uint64_t> sum{0};
    std::array<std::atomic<uint64_t>, HistogramSnapshot::kBuckets> buckets{};
  };
  const double scale_;
  std::array<Shard, kShards> shards_;
};

// Labels that describe the current state (model name and version, update
// state); exposed as a gauge with the value 1. Changing it takes a lock:
// not for hot paths.
class Info {
 public:
  void Set(Labels labels);
  Labels Get() const;

 private:
  mutable std::mutex mu_;
  Labels labels_;
};

enum class MetricKind { kCounter, kGauge, kHistogram, kInfo };
const char* MetricKindName(MetricKind kind);  // "counter", ...

// One series as read by Registry::Snapshot().
struct MetricSnapshot {
  std::string name;
  std::string help;
  std::string unit;  // "seconds", "bytes", "1"... for docs and JSON
  MetricKind kind = MetricKind::kCounter;
  Labels labels;
  double value = 0;             // counter or gauge (1 for info)
  HistogramSnapshot histogram;  // kHistogram only
  double scale = 1;             // kHistogram: recorded unit -> `unit`
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Creates a series, or returns the existing one with the same name and
  // labels (so two parts of the program may ask for the same series).
  // REQUIRES: a name is always used with the same kind (checked).
  Counter* AddCounter(const std::string& name, const std::string& help,
                      const std::string& unit, Labels labels = {});
  Gauge* AddGauge(const std::string& name, const std::string& help,
                  const std::string& unit, Labels labels = {});
  // Recorded in nanoseconds, exposed in seconds.
  Histogram* AddLatencyHistogram(const std::string& name,
                                 const std::string& help, Labels labels = {});
  // Any non-negative quantity: values are recorded as integers, exposed
  // times `scale` in `unit` (1e-3: record thousandths).
  Histogram* AddHistogram(const std::string& name, const std::string& help,
                          const std::string& unit, double scale,
                          Labels labels = {});
  Info* AddInfo(const std::string& name, const std::string& help);

  // `collect` runs at the start of every Snapshot() (e.g. to turn running
  // sums into gauges); returns an id for RemoveCollector, which waits for a
  // running collection to end.
  int AddCollector(std::function<void()> collect);
  void RemoveCollector(int id);

  // Every series, in creation order (series of one name are adjacent in
  // output because formatters group them by name). Info metrics whose
  // labels were never set are left out.
  std::vector<MetricSnapshot> Snapshot() const;

 private:
  struct Entry {
    std::string name, help, unit;
    MetricKind kind;
    Labels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
    std::unique_ptr<Info> info;
  };
  Entry* FindOrAdd(const std::string& name, const std::string& help,
                   const std::string& unit, MetricKind kind,
                   const Labels& labels, bool* added);

  mutable std::mutex mu_;
  std::deque<Entry> entries_;
  mutable std::mutex collectors_mu_;  // taken before mu_, never inside it
  std::map<int, std::function<void()>> collectors_;
  int next_collector_ = 0;
};

}  // namespace ternd::telemetry

#endif  // TERND_TELEMETRY_METRICS_H_
