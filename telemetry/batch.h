// Telemetry batches: a registry snapshot turned into a TelemetryBatch
// protobuf (telemetry/telemetry.proto), and the payload codec (one zstd
// frame around the serialized message, optionally with a dictionary).
//
// Dictionaries: a zstd frame made with a dictionary carries the
// dictionary's id in its header, so the id is the version: a decoder looks
// the dictionary up by id and refuses frames whose dictionary it does not
// have. ternd ships no dictionary today (docs/telemetry.md gives the
// measurements); the codec supports one so a fleet can add it later
// without a format change.
//
// Thread-safety: BatchCodec is not thread-safe (it reuses zstd contexts);
// the free functions are.
#ifndef TERND_TELEMETRY_BATCH_H_
#define TERND_TELEMETRY_BATCH_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "telemetry/metrics.h"
#include "telemetry/telemetry.pb.h"

namespace ternd::telemetry {

struct BatchHeader {
  std::string device_id;
  uint64_t boot_epoch = 0;
  uint64_t sequence = 0;
  int64_t start_unix_ms = 0;
  int64_t end_unix_ms = 0;
  uint64_t uptime_ms = 0;
  uint64_t dropped_batches_total = 0;
  std::string boot_id;
};

// Fills a batch from a snapshot (histograms sparse, with p50..p999).
void FillBatch(const BatchHeader& header,
               const std::vector<MetricSnapshot>& metrics,
               TelemetryBatch* batch);

// Refuses to decompress more than this (a hostile or corrupt payload).
inline constexpr size_t kMaxBatchBytes = size_t{16} << 20;

class BatchCodec {
 public:
  // `level`: zstd level (3 is zstd's default; batches are small).
  explicit BatchCodec(int level = 3);
  ~BatchCodec();
  BatchCodec(const BatchCodec&) = delete;
  BatchCodec& operator=(const BatchCodec&) = delete;

  // Compresses with this dictionary from now on (id read from it).
  Status UseDictionary(std::string dictionary);
  // Makes a dictionary known to Decode (by its id).
  Status AddDecodingDictionary(std::string dictionary);

  Result<std::string> Encode(const TelemetryBatch& batch);
  // Compresses an already serialized message.
  Result<std::string> Compress(std::string_view serialized);
  // Decompresses and parses; errors say what is wrong with the payload.
  Result<TelemetryBatch> Decode(std::string_view payload);
  Result<std::string> Decompress(std::string_view payload);

 private:
  struct Zstd;
  int level_;
  std::unique_ptr<Zstd> z_;
};

// Trains a zstd dictionary (ZDICT) of at most `max_bytes` from samples.
Result<std::string> TrainDictionary(const std::vector<std::string>& samples,
                                    size_t max_bytes);

}  // namespace ternd::telemetry

#endif  // TERND_TELEMETRY_BATCH_H_
