// The telemetry outbox: compressed batches waiting for the broker's
// acknowledgement, in a SQLite database of their own (WAL,
// synchronous=NORMAL, mode 0600; by default `telemetry.db` beside the
// daemon's `state.db`), so nothing queued is lost across restarts or
// kill -9. A row is deleted only when its delivery is acknowledged.
//
// Bounds: the sum of payload sizes and the age of rows. Append() enforces
// them in the same transaction as the insert, dropping the oldest rows (the
// newest row is always kept) and adding them to a persisted dropped-batch
// total that the next batch reports. Age is measured on the wall clock; rows
// stamped before 2024 (a device that booted with its clock at 1970) and any
// check made while the clock is before 2024 are not aged, so setting the
// clock never wipes the queue.
//
// The same database keeps the boot epoch: NextBootEpoch() increments a
// persisted counter, once per daemon start.
//
// Errors name the database path and what SQLite said.
//
// Thread-safety: not thread-safe; one thread (the agent's loop) uses it.
#ifndef TERND_TELEMETRY_OUTBOX_H_
#define TERND_TELEMETRY_OUTBOX_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace ternd::telemetry {

struct OutboxLimits {
  uint64_t max_bytes = uint64_t{16} << 20;             // 16 MiB of payloads
  int64_t max_age_ms = int64_t{7} * 24 * 3600 * 1000;  // 7 days
};

struct OutboxRow {
  int64_t id = 0;  // insertion order
  uint64_t boot_epoch = 0;
  uint64_t sequence = 0;
  int64_t created_unix_ms = 0;
  std::string payload;
};

// Wall-clock times before this (2024-01-01) are taken as "clock not set".
inline constexpr int64_t kPlausibleUnixMs = 1704067200000;

class Outbox {
 public:
  static Result<std::unique_ptr<Outbox>> Open(const std::string& path,
                                              OutboxLimits limits);
  ~Outbox();
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  // Increments the persisted boot epoch and returns the new value (1 on a
  // fresh database).
  Result<uint64_t> NextBootEpoch();

  // Inserts a row, then drops the oldest rows beyond the bounds; returns the
  // number dropped by this call.
  Result<uint64_t> Append(uint64_t boot_epoch, uint64_t sequence,
                          int64_t now_unix_ms, const std::string& payload);
  // Drops rows older than the age bound; returns how many.
  Result<uint64_t> DropExpired(int64_t now_unix_ms);

  // Up to `limit` rows with id > `after_id`, oldest first.
  Result<std::vector<OutboxRow>> ReadAfter(int64_t after_id, size_t limit);
  // Deletes an acknowledged row (no error if it is already gone).
  Status Delete(int64_t id);

  uint64_t rows() const { return rows_; }
  uint64_t bytes() const { return bytes_; }
  uint64_t dropped_total() const { return dropped_total_; }
  // Creation time of the oldest row, if any.
  std::optional<int64_t> oldest_unix_ms() const { return oldest_ms_; }
  const std::string& path() const { return path_; }
  const OutboxLimits& limits() const { return limits_; }

 private:
  Outbox() = default;
  Status Exec(const char* sql);
  Status Error(const char* what);
  Result<sqlite3_stmt*> Prepare(sqlite3_stmt** slot, const char* sql);
  Status Refresh();  // rows_, bytes_, oldest_ms_ from the database
  Result<uint64_t> DropOldestLocked(int64_t now_unix_ms);  // in a txn
  Status SetMeta(const char* key, uint64_t value);

  sqlite3* db_ = nullptr;
  std::string path_;
  OutboxLimits limits_;
  uint64_t rows_ = 0, bytes_ = 0, dropped_total_ = 0;
  std::optional<int64_t> oldest_ms_;
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* read_ = nullptr;
  sqlite3_stmt* delete_ = nullptr;
  sqlite3_stmt* oldest_ = nullptr;
  sqlite3_stmt* set_meta_ = nullptr;
};

}  // namespace ternd::telemetry

#endif  // TERND_TELEMETRY_OUTBOX_H_
