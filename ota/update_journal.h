// The update state machine's durable record, in the state database beside
// the trust state and the artifact chunks (one SQLite file, WAL).
//
// - The current update: its state (with a numeric code reported to the
//   fleet), the reason of a refusal or failure, the release it concerns and
//   the download progress. A refused release is kept by its SHA-256 and
//   identity only, never its bytes.
// - The installed models: `active` (what serves) and `previous` (the
//   rollback target), each with the signed release that brought it.
// - Probation after an activation: how many times the daemon started
//   without a clean shutdown since; the caller rolls back at its limit.
// - The releases rolled back on this device, which are never installed
//   again.
// - Whether the last run ended cleanly (crash detection).
//
// Every write is one transaction with synchronous=FULL, so a power cut
// leaves the record before or after a call, never between.
//
// Thread-safety: one UpdateJournal per thread (SQLite connection rules).
#ifndef TERND_OTA_UPDATE_JOURNAL_H_
#define TERND_OTA_UPDATE_JOURNAL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"

struct sqlite3;

namespace ternd::ota {

// Numeric codes are part of the fleet protocol (docs/ota.md): never reuse.
enum class UpdateState : int {
  kIdle = 0,
  kReceived = 1,
  kRejected = 2,
  kDownloading = 3,
  kVerifying = 4,
  kStaged = 5,
  kActivating = 6,
  kActive = 7,
  kFailed = 8,
  kRolledBack = 9,
  // A release whose staged wave has not reached this device yet
  // (ota/waves.h); kept durably, taken when the wave opens.
  kWaiting = 10,
  // Staged, and compared with the serving model on live requests before it
  // is activated (shadow validation, daemon/shadow_validator.h).
  kValidating = 11,
};
const char* UpdateStateName(UpdateState state);  // "downloading", ...

struct UpdateRecord {
  UpdateState state = UpdateState::kIdle;
  std::string reason;  // rejected / failed / rolled_back
  // The signed release this is about, once accepted (received and later);
  // empty for a refusal, which keeps `envelope_sha256` only.
  std::string release_envelope;
  // SHA-256 (raw 32 bytes) of the signed envelope this is about: the
  // release, or the root a refusal concerns. A retained message delivered
  // again on every connect is recognised by it.
  std::string envelope_sha256;
  std::string model_name;
  uint64_t model_version = 0;
  std::string rollout_id;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  int64_t updated_at = 0;  // unix seconds (system clock, informational)
};

struct InstalledModel {
  std::string release_envelope;
  std::string model_name;
  uint64_t model_version = 0;
  std::string artifact_sha256;  // raw 32 bytes: its chunks in the store
  int64_t activated_at = 0;
};

// A release that was rolled back on this device (docs/ota.md, "Probation
// and rollback").
struct RolledBackModel {
  std::string model_name;
  uint64_t model_version = 0;
  std::string artifact_sha256;  // raw 32 bytes
  std::string reason;
  int64_t rolled_back_at = 0;  // unix seconds
};

struct Probation {
  uint64_t model_version = 0;
  uint32_t unclean_starts = 0;  // starts after a crash since activation
  bool active = false;          // false once committed or rolled back
};

class UpdateJournal {
 public:
  static Result<std::unique_ptr<UpdateJournal>> Open(const std::string& path);
  ~UpdateJournal();
  UpdateJournal(const UpdateJournal&) = delete;
  UpdateJournal& operator=(const UpdateJournal&) = delete;

  Result<UpdateRecord> LoadUpdate();
  Status SaveUpdate(const UpdateRecord& record);
  // The same for download progress, without waiting for the disk (this one
  // commit at synchronous=NORMAL): a power cut may lose it, which only means
  // the progress after a restart is an older count (the chunks themselves
  // are in the store, and the download resumes from them). The next
  // SaveUpdate makes it durable with everything before it. Keeps the flush
  // that a slow disk takes out of the once-a-second progress on the loop.
  Status SaveProgress(const UpdateRecord& record);

  // nullopt when nothing was ever installed by an update.
  Result<std::optional<InstalledModel>> Active();
  Result<std::optional<InstalledModel>> Previous();

  // One transaction: previous := active, active := `model`, probation
  // starts for it, and the update record becomes `record` (state active).
  Status Activate(const InstalledModel& model, const UpdateRecord& record);
  // One transaction: the active model joins the rolled-back list (with
  // `record.reason`), active := previous (or none: the configured model),
  // previous := none, probation ends, the record becomes `record`.
  Status RollBack(const UpdateRecord& record);
  // The releases rolled back so far, oldest first.
  Result<std::vector<RolledBackModel>> RolledBack();

  Result<Probation> LoadProbation();
  Status SaveProbation(const Probation& probation);

  // Marks a run as started; returns whether the previous run (if any)
  // ended with EndRun(). The first run ever counts as clean.
  Result<bool> BeginRun();
  // What BeginRun would return, without marking anything.
  Result<bool> LastRunClean();
  Status EndRun();

  const std::string& path() const { return path_; }

 private:
  UpdateJournal() = default;
  Status Exec(const char* sql);
  // Adds update_record.envelope_sha256 to a database made before it.
  Status Migrate();
  Status Error(const char* what);
  Result<std::optional<InstalledModel>> Installed(const char* role);
  Status PutInstalled(const char* role, const InstalledModel& model);
  Status PutRecord(const UpdateRecord& record);

  sqlite3* db_ = nullptr;
  std::string path_;
};

}  // namespace ternd::ota

#endif  // TERND_OTA_UPDATE_JOURNAL_H_
