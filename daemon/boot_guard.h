// The boot guard: probation, crash detection and automatic rollback
// (docs/ota.md, "Probation and rollback").
//
// After an activation, each start that follows a crash (a run that did not
// end with a clean stop) counts; at `probation_crashes` the guard returns to
// the previous model by itself, once (the previous model has no rollback
// target of its own, so two bad models cannot loop), and the rolled-back
// release is never installed again. Serving `probation_s` without a crash
// commits the model. The health check is local: losing the broker never
// triggers a rollback.
//
// Thread-safety: the event loop's thread (Boot: the start-up thread before
// the loop runs).
#ifndef TERND_DAEMON_BOOT_GUARD_H_
#define TERND_DAEMON_BOOT_GUARD_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "daemon/update_ledger.h"
#include "ota/metadata.pb.h"
#include "runtime/format.h"

typedef struct sd_event sd_event;
typedef struct sd_event_source sd_event_source;

namespace ternd::daemon {

// Parses a model staged from a release's artifact (its SHA-256 and length
// already checked) and compares its name and version with the release's.
Result<runtime::ModelFile> ParseStagedModel(std::vector<uint8_t> model,
                                            const ota::Release& release);

// Reads an installed or staged model out of the artifact store in
// `state_db` (a connection of the calling thread, closed after): every
// chunk and the whole artifact checked against the signed hashes,
// decompressed with the output capped at the signed length, the model's
// hash checked, parsed, and its name and version compared with the
// release's. Blocking: loader thread or start-up only.
Result<runtime::ModelFile> ProduceModel(const std::string& state_db,
                                        const ota::Release& release);

// The release inside a stored signed envelope.
Result<ota::Release> ReleaseOf(const std::string& envelope_bytes);

struct BootGuardOptions {
  std::string state_db;
  uint32_t probation_s = 600;
  uint32_t probation_crashes = 2;
};

class BootGuard {
 public:
  // `ledger` must outlive the guard.
  BootGuard(sd_event* loop, UpdateLedger* ledger, BootGuardOptions options);
  ~BootGuard();
  BootGuard(const BootGuard&) = delete;
  BootGuard& operator=(const BootGuard&) = delete;

  // At start, before anything serves: marks the run started, counts it if
  // the last run crashed in probation, rolls back at the limit, and places
  // the installed model with `place` (which runs the golden check); a model
  // that cannot serve is rolled back too. Returns false when no installed
  // model serves (serve the configured one). What it recorded is on disk
  // when it returns. Blocking; start-up only.
  Result<bool> Boot(const std::function<Status(runtime::ModelFile)>& place);

  // Probation for the model just activated (or still in probation at
  // start): it is committed after probation_s without a crash.
  void StartProbation();

 private:
  // Returns from the active model to the previous one and records why.
  void RollBack(const ota::InstalledModel& from, const char* reason);
  static int OnProbationEnd(sd_event_source*, uint64_t, void* self);

  sd_event* loop_;
  UpdateLedger* ledger_;
  BootGuardOptions options_;
  sd_event_source* timer_ = nullptr;
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_BOOT_GUARD_H_
