// The updater's durable state (the update record, the installed models,
// probation, the rolled-back releases, the trust state, the artifact
// cache), kept on the event loop as a mirror and written to the state
// database on a thread of its own, in order.
//
//   loop thread                              ledger thread ("ternd-artifact")
//   SaveUpdate(record, done) --mirror now--> [queue] --> one transaction,
//                                                        synchronous=FULL
//   done(status) runs on the loop  <---------------------'
//
// Why: a write at synchronous=FULL waits for the disk's flush, which on an
// SD card or a busy eMMC takes tens of milliseconds; on the serving loop
// every inference behind it waited too (docs/performance.md, "Slow disk").
// Now the loop only updates the mirror and queues the write.
//
// Guarantees:
// - Writes reach the disk in the order they were made, each one whole, so
//   after a power cut or kill -9 the database holds the state as it was
//   after some prefix of the writes: never a later write without an
//   earlier one, never half of one. Reads on the loop see the mirror, which
//   is ahead of the disk by the writes still queued.
// - `done` of a write runs on the loop once it is on disk (or failed);
//   Flush(done) runs `done` once everything queued before it is.
// - The same thread runs the updater's artifact work (Post), in the same
//   queue: storing a bundle's chunks, reading which chunks are stored,
//   eviction and checkpoints.
// - One SQLite connection per thread: the ledger thread owns the journal's
//   and the store's; the loop holds none once Open() returns.
//
// Thread-safety: every method on the loop thread (or the start-up thread
// before the loop runs, which Boot uses).
#ifndef TERND_DAEMON_UPDATE_LEDGER_H_
#define TERND_DAEMON_UPDATE_LEDGER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "ota/artifact.h"
#include "ota/state_store.h"
#include "ota/trust.h"
#include "ota/update_journal.h"

typedef struct sd_event sd_event;

namespace ternd::daemon {

class UpdateLedger {
 public:
  using Done = std::function<void(const Status&)>;

  // Reads everything stored (creating the database when there is none)
  // with connections of the calling thread, closed before returning, and
  // starts the ledger thread. Blocking: start-up only.
  static Result<std::unique_ptr<UpdateLedger>> Open(sd_event* loop,
                                                    std::string state_db);
  // Writes still queued are dropped: call Wait() first to keep them.
  ~UpdateLedger();
  UpdateLedger(const UpdateLedger&) = delete;
  UpdateLedger& operator=(const UpdateLedger&) = delete;

  // ---- the mirror (what the disk will hold once the queue is written)
  const ota::UpdateRecord& record() const { return record_; }
  const std::optional<ota::InstalledModel>& active() const { return active_; }
  const std::optional<ota::InstalledModel>& previous() const {
    return previous_;
  }
  const ota::Probation& probation() const { return probation_; }
  const std::vector<ota::RolledBackModel>& rolled_back() const {
    return rolled_back_;
  }
  // The trust state stored, nullopt before the first save.
  const std::optional<ota::TrustState>& stored_trust() const { return trust_; }
  // Whether the run before this one ended with EndRun() (the first run
  // ever counts as clean). Read at Open.
  bool last_run_clean() const { return last_run_clean_; }

  // ---- writes: the mirror changes now, the disk in order
  void SaveUpdate(const ota::UpdateRecord& record, Done done = nullptr);
  // Download progress: not flushed on its own (UpdateJournal::SaveProgress).
  void SaveProgress(const ota::UpdateRecord& record);
  // previous := active, active := model, probation starts, record := record.
  void Activate(const ota::InstalledModel& model,
                const ota::UpdateRecord& record, Done done = nullptr);
  // The active model joins the rolled-back list, active := previous,
  // previous := none, probation ends, record := record.
  void RollBack(const ota::UpdateRecord& record, Done done = nullptr);
  void SaveProbation(const ota::Probation& probation, Done done = nullptr);
  void SaveTrust(const ota::TrustState& state, Done done = nullptr);
  void BeginRun();  // this run has started: a crash from now on counts
  void EndRun();    // a clean stop

  // Deletes the stored artifacts not in `keep` that do not fit in `quota`
  // bytes besides those in `keep` (the newest fit first), then checkpoints
  // the database so the file system gets the space back. `done` runs when
  // that is finished.
  void Evict(std::vector<std::string> keep, uint64_t quota,
             std::function<void()> done);

  // Artifact work on the ledger thread, after every write queued so far.
  void Post(ota::ArtifactWorker::Work work, ota::ArtifactWorker::Done done);
  const std::atomic<bool>* cancel_flag() const {
    return worker_->cancel_flag();
  }

  // `done` runs on the loop once everything queued before it is done.
  void Flush(std::function<void()> done);
  // Blocks until everything queued so far is done: start-up and stop only.
  void Wait();

 private:
  UpdateLedger() = default;
  using WriteFn = std::function<Status(ota::UpdateJournal&, ota::StateStore&)>;
  // Queues `write` (run with the ledger thread's journal and store);
  // `done` gets its result on the loop. `recorded` (test builds): the
  // update state the write records, for the kill-at-state seam.
  void Write(WriteFn write, Done done,
             std::optional<ota::UpdateState> recorded = std::nullopt);

  std::string state_db_;
  ota::UpdateRecord record_;
  std::optional<ota::InstalledModel> active_, previous_;
  ota::Probation probation_;
  std::vector<ota::RolledBackModel> rolled_back_;
  std::optional<ota::TrustState> trust_;
  bool last_run_clean_ = true;
  // TERND_FAULT_KILL_AT_UPDATE_STATE, read in test builds only.
  const char* kill_at_ = nullptr;
  // Ledger thread only (inside work items): opened by the first write.
  std::unique_ptr<ota::UpdateJournal> journal_;
  // Last: stopped (joined) before journal_ is closed.
  std::unique_ptr<ota::ArtifactWorker> worker_;
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_UPDATE_LEDGER_H_
