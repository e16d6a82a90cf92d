#include "ota/update_journal.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>

#include "base/sqlite_util.h"
#include "ota/signing.h"

namespace ternd::ota {
namespace {

// Tables of their own in the shared state database (the schema version
// pragma belongs to StateStore).
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS update_record (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  state INTEGER NOT NULL,
  reason TEXT NOT NULL,
  release BLOB NOT NULL,
  model_name TEXT NOT NULL,
  model_version INTEGER NOT NULL,
  rollout_id TEXT NOT NULL,
  bytes_done INTEGER NOT NULL,
  bytes_total INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  envelope_sha256 BLOB NOT NULL DEFAULT x''
);
CREATE TABLE IF NOT EXISTS update_installed (
  role TEXT PRIMARY KEY CHECK (role IN ('active', 'previous')),
  release BLOB NOT NULL,
  model_name TEXT NOT NULL,
  model_version INTEGER NOT NULL,
  artifact BLOB NOT NULL,
  activated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS update_probation (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  model_version INTEGER NOT NULL,
  unclean_starts INTEGER NOT NULL,
  active INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS update_run (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  clean INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS update_rolled_back (
  model_name TEXT NOT NULL,
  model_version INTEGER NOT NULL,
  artifact BLOB NOT NULL,
  reason TEXT NOT NULL,
  rolled_back_at INTEGER NOT NULL,
  PRIMARY KEY (model_name, model_version, artifact)
);
)sql";

int64_t Now() { return static_cast<int64_t>(::time(nullptr)); }

}  // namespace

const char* UpdateStateName(UpdateState state) {
  switch (state) {
    case UpdateState::kIdle:
      return "idle";
    case UpdateState::kReceived:
      return "received";
    case UpdateState::kRejected:
      return "rejected";
    case UpdateState::kDownloading:
      return "downloading";
    case UpdateState::kVerifying:
      return "verifying";
    case UpdateState::kStaged:
      return "staged";
    case UpdateState::kActivating:
      return "activating";
    case UpdateState::kActive:
      return "active";
    case UpdateState::kFailed:
      return "failed";
    case UpdateState::kValidating:
      return "validating";
    case UpdateState::kRolledBack:
      return "rolled_back";
    case UpdateState::kWaiting:
      return "waiting";
  }
  return "unknown";
}

Status UpdateJournal::Error(const char* what) {
  return SqliteError(db_, path_, what);
}

Status UpdateJournal::Exec(const char* sql) {
  return SqliteExec(db_, path_, sql);
}

Result<std::unique_ptr<UpdateJournal>> UpdateJournal::Open(
    const std::string& path) {
  std::unique_ptr<UpdateJournal> j(new UpdateJournal());
  j->path_ = path;
  const mode_t old = ::umask(077);
  const int rc = sqlite3_open_v2(
      path.c_str(), &j->db_,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
      nullptr);
  ::umask(old);
  if (rc != SQLITE_OK) return j->Error("cannot open the state database");
  sqlite3_busy_timeout(j->db_, 5000);
  TERND_RETURN_IF_ERROR(j->Exec("PRAGMA journal_mode=WAL;"));
  TERND_RETURN_IF_ERROR(j->Exec("PRAGMA synchronous=FULL;"));
  TERND_RETURN_IF_ERROR(j->Exec("BEGIN IMMEDIATE;"));
  Status s = j->Exec(kSchema);
  if (s.ok()) s = j->Migrate();
  if (!s.ok()) {
    j->Exec("ROLLBACK;").IgnoreError();
    return s;
  }
  TERND_RETURN_IF_ERROR(j->Exec("COMMIT;"));
  return j;
}

// A state database from before envelope_sha256: add the column, fill it in
// from the stored release, and drop the bytes of a refused release (they
// were stored whole then, whatever their size).
Status UpdateJournal::Migrate() {
  SqliteStmt has(db_,
                 "SELECT COUNT(*) FROM pragma_table_info('update_record') "
                 "WHERE name = 'envelope_sha256';");
  if (!has.ok() || has.Step() != SQLITE_ROW) {
    return Error("cannot read the update_record schema");
  }
  if (has.ColumnInt(0) != 0) return Status::Ok();
  TERND_RETURN_IF_ERROR(
      Exec("ALTER TABLE update_record ADD COLUMN envelope_sha256 BLOB NOT "
           "NULL DEFAULT x'';"));
  std::string release;
  {
    SqliteStmt q(db_, "SELECT release FROM update_record WHERE id = 1;");
    if (!q.ok()) return Error("cannot read the update state");
    const int rc = q.Step();
    if (rc == SQLITE_DONE) return Status::Ok();
    if (rc != SQLITE_ROW) return Error("cannot read the update state");
    release = q.ColumnBlob(0);
  }
  SqliteStmt u(db_,
               "UPDATE update_record SET envelope_sha256 = ?, release = CASE "
               "WHEN state = ? THEN x'' ELSE release END WHERE id = 1;");
  if (!u.ok()) return Error("cannot update the update state");
  u.Blob(1, Sha256(release));
  u.Int(2, static_cast<int>(UpdateState::kRejected));
  if (u.Step() != SQLITE_DONE) return Error("cannot update the update state");
  return Status::Ok();
}

UpdateJournal::~UpdateJournal() { sqlite3_close(db_); }

Result<UpdateRecord> UpdateJournal::LoadUpdate() {
  SqliteStmt q(db_,
               "SELECT state, reason, release, model_name, model_version, "
               "rollout_id, bytes_done, bytes_total, updated_at, "
               "envelope_sha256 FROM update_record WHERE id = 1;");
  if (!q.ok()) return Error("cannot read the update state");
  const int rc = q.Step();
  UpdateRecord r;
  if (rc == SQLITE_DONE) return r;
  if (rc != SQLITE_ROW) return Error("cannot read the update state");
  const int64_t code = q.ColumnInt(0);
  if (code < 0 || code > static_cast<int>(UpdateState::kValidating)) {
    return DataLoss("%s: update state code %lld is unknown", path_.c_str(),
                    static_cast<long long>(code));
  }
  r.state = static_cast<UpdateState>(code);
  r.reason = q.ColumnText(1);
  r.release_envelope = q.ColumnBlob(2);
  r.model_name = q.ColumnText(3);
  r.model_version = static_cast<uint64_t>(q.ColumnInt(4));
  r.rollout_id = q.ColumnText(5);
  r.bytes_done = static_cast<uint64_t>(q.ColumnInt(6));
  r.bytes_total = static_cast<uint64_t>(q.ColumnInt(7));
  r.updated_at = q.ColumnInt(8);
  r.envelope_sha256 = q.ColumnBlob(9);
  return r;
}

Status UpdateJournal::PutRecord(const UpdateRecord& r) {
  SqliteStmt q(db_,
               "INSERT OR REPLACE INTO update_record (id, state, reason, "
               "release, model_name, model_version, rollout_id, bytes_done, "
               "bytes_total, updated_at, envelope_sha256) VALUES (1, ?, ?, ?, "
               "?, ?, ?, ?, ?, ?, ?);");
  if (!q.ok()) return Error("cannot save the update state");
  q.Int(1, static_cast<int>(r.state));
  q.Text(2, r.reason);
  q.Blob(3, r.release_envelope);
  q.Text(4, r.model_name);
  q.Int(5, static_cast<int64_t>(r.model_version));
  q.Text(6, r.rollout_id);
  q.Int(7, static_cast<int64_t>(r.bytes_done));
  q.Int(8, static_cast<int64_t>(r.bytes_total));
  q.Int(9, r.updated_at ? r.updated_at : Now());
  q.Blob(10, r.envelope_sha256);
  if (q.Step() != SQLITE_DONE) return Error("cannot save the update state");
  return Status::Ok();
}

Status UpdateJournal::SaveUpdate(const UpdateRecord& record) {
  return PutRecord(record);
}

Status UpdateJournal::SaveProgress(const UpdateRecord& record) {
  TERND_RETURN_IF_ERROR(Exec("PRAGMA synchronous=NORMAL;"));
  const Status s = PutRecord(record);
  const Status restored = Exec("PRAGMA synchronous=FULL;");
  return s.ok() ? restored : s;
}

Result<std::optional<InstalledModel>> UpdateJournal::Installed(
    const char* role) {
  SqliteStmt q(db_,
               "SELECT release, model_name, model_version, artifact, "
               "activated_at FROM update_installed WHERE role = ?;");
  if (!q.ok()) return Error("cannot read the installed models");
  q.Text(1, role);
  const int rc = q.Step();
  if (rc == SQLITE_DONE) return std::optional<InstalledModel>();
  if (rc != SQLITE_ROW) return Error("cannot read the installed models");
  InstalledModel m;
  m.release_envelope = q.ColumnBlob(0);
  m.model_name = q.ColumnText(1);
  m.model_version = static_cast<uint64_t>(q.ColumnInt(2));
  m.artifact_sha256 = q.ColumnBlob(3);
  m.activated_at = q.ColumnInt(4);
  return std::optional<InstalledModel>(std::move(m));
}

Result<std::optional<InstalledModel>> UpdateJournal::Active() {
  return Installed("active");
}

Result<std::optional<InstalledModel>> UpdateJournal::Previous() {
  return Installed("previous");
}

Status UpdateJournal::PutInstalled(const char* role, const InstalledModel& m) {
  SqliteStmt q(db_,
               "INSERT OR REPLACE INTO update_installed (role, release, "
               "model_name, model_version, artifact, activated_at) VALUES "
               "(?, ?, ?, ?, ?, ?);");
  if (!q.ok()) return Error("cannot save an installed model");
  q.Text(1, role);
  q.Blob(2, m.release_envelope);
  q.Text(3, m.model_name);
  q.Int(4, static_cast<int64_t>(m.model_version));
  q.Blob(5, m.artifact_sha256);
  q.Int(6, m.activated_at ? m.activated_at : Now());
  if (q.Step() != SQLITE_DONE) return Error("cannot save an installed model");
  return Status::Ok();
}

Status UpdateJournal::Activate(const InstalledModel& model,
                               const UpdateRecord& record) {
  TERND_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE;"));
  Status s = [&]() -> Status {
    TERND_ASSIGN_OR_RETURN(std::optional<InstalledModel> active, Active());
    TERND_RETURN_IF_ERROR(Exec("DELETE FROM update_installed;"));
    if (active) TERND_RETURN_IF_ERROR(PutInstalled("previous", *active));
    TERND_RETURN_IF_ERROR(PutInstalled("active", model));
    Probation p;
    p.model_version = model.model_version;
    p.active = true;
    TERND_RETURN_IF_ERROR(SaveProbation(p));
    return PutRecord(record);
  }();
  if (!s.ok()) {
    Exec("ROLLBACK;").IgnoreError();
    return s;
  }
  return Exec("COMMIT;");
}

Status UpdateJournal::RollBack(const UpdateRecord& record) {
  TERND_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE;"));
  Status s = [&]() -> Status {
    TERND_ASSIGN_OR_RETURN(std::optional<InstalledModel> active, Active());
    TERND_ASSIGN_OR_RETURN(std::optional<InstalledModel> previous, Previous());
    if (active) {
      SqliteStmt q(db_,
                   "INSERT OR REPLACE INTO update_rolled_back (model_name, "
                   "model_version, artifact, reason, rolled_back_at) VALUES "
                   "(?, ?, ?, ?, ?);");
      if (!q.ok()) return Error("cannot record the rolled-back model");
      q.Text(1, active->model_name);
      q.Int(2, static_cast<int64_t>(active->model_version));
      q.Blob(3, active->artifact_sha256);
      q.Text(4, record.reason);
      q.Int(5, Now());
      if (q.Step() != SQLITE_DONE) {
        return Error("cannot record the rolled-back model");
      }
    }
    TERND_RETURN_IF_ERROR(Exec("DELETE FROM update_installed;"));
    if (previous) TERND_RETURN_IF_ERROR(PutInstalled("active", *previous));
    TERND_RETURN_IF_ERROR(SaveProbation(Probation{}));
    return PutRecord(record);
  }();
  if (!s.ok()) {
    Exec("ROLLBACK;").IgnoreError();
    return s;
  }
  return Exec("COMMIT;");
}

Result<std::vector<RolledBackModel>> UpdateJournal::RolledBack() {
  SqliteStmt q(db_,
               "SELECT model_name, model_version, artifact, reason, "
               "rolled_back_at FROM update_rolled_back ORDER BY "
               "rolled_back_at, rowid;");
  if (!q.ok()) return Error("cannot read the rolled-back models");
  std::vector<RolledBackModel> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    RolledBackModel m;
    m.model_name = q.ColumnText(0);
    m.model_version = static_cast<uint64_t>(q.ColumnInt(1));
    m.artifact_sha256 = q.ColumnBlob(2);
    m.reason = q.ColumnText(3);
    m.rolled_back_at = q.ColumnInt(4);
    out.push_back(std::move(m));
  }
  if (rc != SQLITE_DONE) return Error("cannot read the rolled-back models");
  return out;
}

Result<Probation> UpdateJournal::LoadProbation() {
  SqliteStmt q(db_,
               "SELECT model_version, unclean_starts, active FROM "
               "update_probation WHERE id = 1;");
  if (!q.ok()) return Error("cannot read the probation state");
  const int rc = q.Step();
  Probation p;
  if (rc == SQLITE_DONE) return p;
  if (rc != SQLITE_ROW) return Error("cannot read the probation state");
  p.model_version = static_cast<uint64_t>(q.ColumnInt(0));
  p.unclean_starts = static_cast<uint32_t>(q.ColumnInt(1));
  p.active = q.ColumnInt(2) != 0;
  return p;
}

Status UpdateJournal::SaveProbation(const Probation& p) {
  SqliteStmt q(db_,
               "INSERT OR REPLACE INTO update_probation (id, model_version, "
               "unclean_starts, active) VALUES (1, ?, ?, ?);");
  if (!q.ok()) return Error("cannot save the probation state");
  q.Int(1, static_cast<int64_t>(p.model_version));
  q.Int(2, p.unclean_starts);
  q.Int(3, p.active ? 1 : 0);
  if (q.Step() != SQLITE_DONE) return Error("cannot save the probation state");
  return Status::Ok();
}

Result<bool> UpdateJournal::LastRunClean() {
  SqliteStmt q(db_, "SELECT clean FROM update_run WHERE id = 1;");
  if (!q.ok()) return Error("cannot read the run record");
  const int rc = q.Step();
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
    return Error("cannot read the run record");
  }
  return rc == SQLITE_DONE || q.ColumnInt(0) != 0;
}

Result<bool> UpdateJournal::BeginRun() {
  TERND_ASSIGN_OR_RETURN(const bool clean, LastRunClean());
  TERND_RETURN_IF_ERROR(
      Exec("INSERT OR REPLACE INTO update_run (id, clean) VALUES (1, 0);"));
  return clean;
}

Status UpdateJournal::EndRun() {
  return Exec("INSERT OR REPLACE INTO update_run (id, clean) VALUES (1, 1);");
}

}  // namespace ternd::ota
