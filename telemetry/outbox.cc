#include "telemetry/outbox.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include "base/sqlite_util.h"

namespace ternd::telemetry {
namespace {

constexpr int kSchemaVersion = 1;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  boot_epoch INTEGER NOT NULL,
  sequence INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;
)sql";

// Resets a cached statement when the caller is done with it.
class Reset {
 public:
  explicit Reset(sqlite3_stmt* s) : s_(s) {}
  ~Reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  Reset(const Reset&) = delete;
  Reset& operator=(const Reset&) = delete;

 private:
  sqlite3_stmt* s_;
};

}  // namespace

Status Outbox::Error(const char* what) {
  return SqliteError(db_, path_, what);
}

Status Outbox::Exec(const char* sql) { return SqliteExec(db_, path_, sql); }

Result<sqlite3_stmt*> Outbox::Prepare(sqlite3_stmt** slot, const char* sql) {
  if (*slot == nullptr &&
      sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, slot,
                         nullptr) != SQLITE_OK) {
    *slot = nullptr;
    return Error("cannot prepare a statement");
  }
  return *slot;
}

Result<std::unique_ptr<Outbox>> Outbox::Open(const std::string& path,
                                             OutboxLimits limits) {
  std::unique_ptr<Outbox> box(new Outbox());
  box->path_ = path;
  box->limits_ = limits;
  const mode_t old = ::umask(077);
  const int rc = sqlite3_open_v2(
      path.c_str(), &box->db_,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
      nullptr);
  ::umask(old);
  if (rc != SQLITE_OK) return box->Error("cannot open the telemetry outbox");
  sqlite3_busy_timeout(box->db_, 5000);
  TERND_RETURN_IF_ERROR(box->Exec("PRAGMA journal_mode=WAL;"));
  // NORMAL in WAL mode: a crash of the process loses nothing committed; a
  // power cut may lose the last few batches but never corrupts the file.
  TERND_RETURN_IF_ERROR(box->Exec("PRAGMA synchronous=NORMAL;"));
  sqlite3_stmt* v = nullptr;
  if (sqlite3_prepare_v2(box->db_, "PRAGMA user_version;", -1, &v, nullptr) !=
          SQLITE_OK ||
      sqlite3_step(v) != SQLITE_ROW) {
    sqlite3_finalize(v);
    return box->Error("cannot read the schema version (not a database?)");
  }
  const int have = sqlite3_column_int(v, 0);
  sqlite3_finalize(v);
  if (have > kSchemaVersion) {
    return FailedPrecondition(
        "%s: outbox schema version %d is newer than this ternd understands "
        "(%d)",
        path.c_str(), have, kSchemaVersion);
  }
  TERND_RETURN_IF_ERROR(box->Exec("BEGIN IMMEDIATE;"));
  Status s = box->Exec(kSchema);
  if (s.ok()) s = box->Exec("PRAGMA user_version=1;");
  if (!s.ok()) {
    box->Exec("ROLLBACK;").IgnoreError();
    return s;
  }
  TERND_RETURN_IF_ERROR(box->Exec("COMMIT;"));
  TERND_RETURN_IF_ERROR(box->Refresh());
  return box;
}

Outbox::~Outbox() {
  for (sqlite3_stmt* s : {insert_, read_, delete_, oldest_, set_meta_}) {
    sqlite3_finalize(s);
  }
  sqlite3_close(db_);
}

Status Outbox::Refresh() {
  sqlite3_stmt* q = nullptr;
  if (sqlite3_prepare_v2(
          db_,
          "SELECT COUNT(*), COALESCE(SUM(length(payload)), 0), "
          "(SELECT created_ms FROM outbox ORDER BY id LIMIT 1), "
          "(SELECT value FROM meta WHERE key = 'dropped_total') FROM outbox;",
          -1, &q, nullptr) != SQLITE_OK ||
      sqlite3_step(q) != SQLITE_ROW) {
    sqlite3_finalize(q);
    return Error("cannot count the outbox");
  }
  rows_ = static_cast<uint64_t>(sqlite3_column_int64(q, 0));
  bytes_ = static_cast<uint64_t>(sqlite3_column_int64(q, 1));
  oldest_ms_.reset();
  if (sqlite3_column_type(q, 2) != SQLITE_NULL) {
    oldest_ms_ = sqlite3_column_int64(q, 2);
  }
  dropped_total_ = static_cast<uint64_t>(sqlite3_column_int64(q, 3));
  sqlite3_finalize(q);
  return Status::Ok();
}

Status Outbox::SetMeta(const char* key, uint64_t value) {
  TERND_ASSIGN_OR_RETURN(
      sqlite3_stmt * q,
      Prepare(&set_meta_,
              "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
              "DO UPDATE SET value = excluded.value;"));
  Reset r(q);
  sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 2, static_cast<int64_t>(value));
  if (sqlite3_step(q) != SQLITE_DONE) return Error("cannot write meta");
  return Status::Ok();
}

Result<uint64_t> Outbox::NextBootEpoch() {
  TERND_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE;"));
  sqlite3_stmt* q = nullptr;
  uint64_t epoch = 0;
  if (sqlite3_prepare_v2(db_,
                         "SELECT value FROM meta WHERE key = 'boot_epoch';", -1,
                         &q, nullptr) != SQLITE_OK) {
    Exec("ROLLBACK;").IgnoreError();
    return Error("cannot read the boot epoch");
  }
  if (sqlite3_step(q) == SQLITE_ROW) {
    epoch = static_cast<uint64_t>(sqlite3_column_int64(q, 0));
  }
  sqlite3_finalize(q);
  ++epoch;
  Status s = SetMeta("boot_epoch", epoch);
  if (!s.ok()) {
    Exec("ROLLBACK;").IgnoreError();
    return s;
  }
  TERND_RETURN_IF_ERROR(Exec("COMMIT;"));
  return epoch;
}

Result<uint64_t> Outbox::DropOldestLocked(int64_t now_ms) {
  uint64_t dropped = 0;
  // Age first (only plausible timestamps, see the header). Rows are in
  // creation order, so when the oldest is young enough (the usual case) the
  // scan is skipped.
  const int64_t cutoff = now_ms - limits_.max_age_ms;
  const bool oldest_is_young =
      oldest_ms_ && *oldest_ms_ >= kPlausibleUnixMs && *oldest_ms_ >= cutoff;
  if (now_ms >= kPlausibleUnixMs && limits_.max_age_ms > 0 &&
      !oldest_is_young) {
    sqlite3_stmt* q = nullptr;
    if (sqlite3_prepare_v2(
            db_,
            "DELETE FROM outbox WHERE created_ms >= ? AND created_ms < ? AND "
            "id < (SELECT MAX(id) FROM outbox) RETURNING length(payload);",
            -1, &q, nullptr) != SQLITE_OK) {
      return Error("cannot drop expired rows");
    }
    sqlite3_bind_int64(q, 1, kPlausibleUnixMs);
    sqlite3_bind_int64(q, 2, cutoff);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
      bytes_ -= static_cast<uint64_t>(sqlite3_column_int64(q, 0));
      --rows_;
      ++dropped;
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) return Error("cannot drop expired rows");
  }
  // Then bytes, oldest first, always keeping the newest row.
  if (bytes_ > limits_.max_bytes && rows_ > 1) {
    sqlite3_stmt* q = nullptr;
    if (sqlite3_prepare_v2(db_,
                           "SELECT id, length(payload) FROM outbox ORDER BY "
                           "id;",
                           -1, &q, nullptr) != SQLITE_OK) {
      return Error("cannot list rows to drop");
    }
    int64_t last_id = -1;
    uint64_t bytes = bytes_, rows = rows_, n = 0;
    while (bytes > limits_.max_bytes && rows > 1 &&
           sqlite3_step(q) == SQLITE_ROW) {
      last_id = sqlite3_column_int64(q, 0);
      bytes -= static_cast<uint64_t>(sqlite3_column_int64(q, 1));
      --rows;
      ++n;
    }
    sqlite3_finalize(q);
    if (last_id >= 0) {
      sqlite3_stmt* d = nullptr;
      if (sqlite3_prepare_v2(db_, "DELETE FROM outbox WHERE id <= ?;", -1, &d,
                             nullptr) != SQLITE_OK) {
        return Error("cannot drop the oldest rows");
      }
      sqlite3_bind_int64(d, 1, last_id);
      const int rc = sqlite3_step(d);
      sqlite3_finalize(d);
      if (rc != SQLITE_DONE) return Error("cannot drop the oldest rows");
      bytes_ = bytes;
      rows_ = rows;
      dropped += n;
    }
  }
  if (dropped > 0) {
    TERND_RETURN_IF_ERROR(SetMeta("dropped_total", dropped_total_ + dropped));
  }
  return dropped;
}

Result<uint64_t> Outbox::Append(uint64_t boot_epoch, uint64_t sequence,
                                int64_t now_ms, const std::string& payload) {
  TERND_ASSIGN_OR_RETURN(
      sqlite3_stmt * q,
      Prepare(&insert_,
              "INSERT INTO outbox (boot_epoch, sequence, created_ms, payload) "
              "VALUES (?, ?, ?, ?);"));
  const uint64_t rows_before = rows_, bytes_before = bytes_;
  TERND_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE;"));
  Result<uint64_t> dropped = uint64_t{0};
  {
    Reset r(q);
    sqlite3_bind_int64(q, 1, static_cast<int64_t>(boot_epoch));
    sqlite3_bind_int64(q, 2, static_cast<int64_t>(sequence));
    sqlite3_bind_int64(q, 3, now_ms);
    sqlite3_bind_blob(q, 4, payload.data(), static_cast<int>(payload.size()),
                      SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE) {
      dropped = Error("cannot append a batch");
    }
  }
  if (dropped.ok()) {
    ++rows_;
    bytes_ += payload.size();
    dropped = DropOldestLocked(now_ms);
  }
  if (dropped.ok()) {
    Status s = Exec("COMMIT;");
    if (!s.ok()) dropped = s;
  }
  if (!dropped.ok()) {
    Exec("ROLLBACK;").IgnoreError();
    rows_ = rows_before;
    bytes_ = bytes_before;
    TERND_RETURN_IF_ERROR(Refresh());
    return dropped.status();
  }
  dropped_total_ += *dropped;
  if (rows_before == 0 || *dropped > 0) TERND_RETURN_IF_ERROR(Refresh());
  return *dropped;
}

Result<uint64_t> Outbox::DropExpired(int64_t now_ms) {
  if (now_ms < kPlausibleUnixMs || !oldest_ms_ ||
      *oldest_ms_ >= now_ms - limits_.max_age_ms) {
    return uint64_t{0};
  }
  TERND_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE;"));
  Result<uint64_t> dropped = DropOldestLocked(now_ms);
  if (dropped.ok()) {
    Status s = Exec("COMMIT;");
    if (!s.ok()) dropped = s;
  }
  if (!dropped.ok()) {
    Exec("ROLLBACK;").IgnoreError();
    TERND_RETURN_IF_ERROR(Refresh());
    return dropped.status();
  }
  dropped_total_ += *dropped;
  TERND_RETURN_IF_ERROR(Refresh());
  return *dropped;
}

Result<std::vector<OutboxRow>> Outbox::ReadAfter(int64_t after_id,
                                                 size_t limit) {
  TERND_ASSIGN_OR_RETURN(
      sqlite3_stmt * q,
      Prepare(&read_,
              "SELECT id, boot_epoch, sequence, created_ms, payload FROM "
              "outbox WHERE id > ? ORDER BY id LIMIT ?;"));
  Reset r(q);
  sqlite3_bind_int64(q, 1, after_id);
  sqlite3_bind_int64(q, 2, static_cast<int64_t>(limit));
  std::vector<OutboxRow> out;
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    OutboxRow row;
    row.id = sqlite3_column_int64(q, 0);
    row.boot_epoch = static_cast<uint64_t>(sqlite3_column_int64(q, 1));
    row.sequence = static_cast<uint64_t>(sqlite3_column_int64(q, 2));
    row.created_unix_ms = sqlite3_column_int64(q, 3);
    const void* p = sqlite3_column_blob(q, 4);
    const int n = sqlite3_column_bytes(q, 4);
    if (p) row.payload.assign(static_cast<const char*>(p), n);
    out.push_back(std::move(row));
  }
  if (rc != SQLITE_DONE) return Error("cannot read the outbox");
  return out;
}

Status Outbox::Delete(int64_t id) {
  TERND_ASSIGN_OR_RETURN(
      sqlite3_stmt * q,
      Prepare(&delete_,
              "DELETE FROM outbox WHERE id = ? RETURNING length(payload);"));
  bool was_oldest = false;
  {
    Reset r(q);
    sqlite3_bind_int64(q, 1, id);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
      bytes_ -= static_cast<uint64_t>(sqlite3_column_int64(q, 0));
      --rows_;
      was_oldest = true;
    }
    if (rc != SQLITE_DONE) return Error("cannot delete a delivered batch");
  }
  if (was_oldest) {
    TERND_ASSIGN_OR_RETURN(
        sqlite3_stmt * o,
        Prepare(&oldest_,
                "SELECT created_ms FROM outbox ORDER BY id LIMIT 1;"));
    Reset r(o);
    oldest_ms_.reset();
    if (sqlite3_step(o) == SQLITE_ROW) oldest_ms_ = sqlite3_column_int64(o, 0);
  }
  return Status::Ok();
}

}  // namespace ternd::telemetry
