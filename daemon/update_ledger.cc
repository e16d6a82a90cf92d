#include "daemon/update_ledger.h"

#include <signal.h>
#include <time.h>

#include <cstdlib>
#include <cstring>
#include <future>
#include <utility>

#include "base/log.h"
#include "daemon/artifact_cache.h"

namespace ternd::daemon {
namespace {

int64_t Now() { return static_cast<int64_t>(::time(nullptr)); }

}  // namespace

Result<std::unique_ptr<UpdateLedger>> UpdateLedger::Open(sd_event* loop,
                                                         std::string state_db) {
  std::unique_ptr<UpdateLedger> l(new UpdateLedger());
  l->state_db_ = std::move(state_db);
  // The start-up thread's connections: read, then closed once the ledger
  // thread holds its own (the database keeps an open connection
  // throughout: when the last one closes, SQLite removes the WAL, and
  // connections opening together afterwards can find it busy).
  TERND_ASSIGN_OR_RETURN(std::unique_ptr<ota::StateStore> store,
                         ota::StateStore::Open(l->state_db_));
  TERND_ASSIGN_OR_RETURN(std::unique_ptr<ota::UpdateJournal> journal,
                         ota::UpdateJournal::Open(l->state_db_));
  TERND_ASSIGN_OR_RETURN(l->trust_, store->LoadTrust());
  TERND_ASSIGN_OR_RETURN(l->record_, journal->LoadUpdate());
  TERND_ASSIGN_OR_RETURN(l->active_, journal->Active());
  TERND_ASSIGN_OR_RETURN(l->previous_, journal->Previous());
  TERND_ASSIGN_OR_RETURN(l->probation_, journal->LoadProbation());
  TERND_ASSIGN_OR_RETURN(l->rolled_back_, journal->RolledBack());
  TERND_ASSIGN_OR_RETURN(l->last_run_clean_, journal->LastRunClean());
#if TERND_FAULT_INJECTION
  l->kill_at_ = std::getenv("TERND_FAULT_KILL_AT_UPDATE_STATE");
#endif
  TERND_ASSIGN_OR_RETURN(l->worker_,
                         ota::ArtifactWorker::Start(loop, l->state_db_));
  auto opened = std::make_shared<Status>();
  l->Write([](ota::UpdateJournal&, ota::StateStore&) { return Status::Ok(); },
           nullptr);
  l->worker_->Post(
      [opened, p = l.get()](Result<ota::StateStore*> s) {
        *opened = !s.ok()       ? s.status()
                  : p->journal_ ? Status::Ok()
                                : Internal("the ledger's journal did not open");
      },
      nullptr);
  l->Wait();
  if (!opened->ok()) return *opened;
  return l;
}

UpdateLedger::~UpdateLedger() { worker_.reset(); }

void UpdateLedger::Write(WriteFn write, Done done,
                         std::optional<ota::UpdateState> recorded) {
  auto result = std::make_shared<Status>();
  const char* kill_at = nullptr;
#if TERND_FAULT_INJECTION
  if (recorded && kill_at_ &&
      std::strcmp(kill_at_, ota::UpdateStateName(*recorded)) == 0) {
    kill_at = kill_at_;
  }
#else
  (void)recorded;
#endif
  worker_->Post(
      [this, result, write = std::move(write),
       kill_at](Result<ota::StateStore*> store) {
        if (!store.ok()) {
          *result = store.status();
          return;
        }
        if (!journal_) {
          Result<std::unique_ptr<ota::UpdateJournal>> j =
              ota::UpdateJournal::Open(state_db_);
          if (!j.ok()) {
            *result = j.status();
            return;
          }
          journal_ = std::move(*j);
        }
        *result = write(*journal_, **store);
        if (kill_at != nullptr && result->ok()) {
          // Fault seam for the tests (docs/ota.md, "Testing seam"): a real
          // SIGKILL the moment the named state is on disk, before any
          // later write. Test builds only.
          TERND_LOG_WARNING(
              "TERND_FAULT_KILL_AT_UPDATE_STATE=%s: killing myself", kill_at);
          ::raise(SIGKILL);
        }
      },
      [result, done = std::move(done)]() {
        if (done) done(*result);
      });
}

void UpdateLedger::SaveUpdate(const ota::UpdateRecord& record, Done done) {
  record_ = record;
  Write([record](ota::UpdateJournal& j,
                 ota::StateStore&) { return j.SaveUpdate(record); },
        std::move(done), record.state);
}

void UpdateLedger::SaveProgress(const ota::UpdateRecord& record) {
  record_ = record;
  Write([record](ota::UpdateJournal& j,
                 ota::StateStore&) { return j.SaveProgress(record); },
        [](const Status& s) {
          if (!s.ok()) {
            TERND_LOG_ERROR("cannot record the download progress: %s",
                            s.message());
          }
        });
}

void UpdateLedger::Activate(const ota::InstalledModel& model,
                            const ota::UpdateRecord& record, Done done) {
  ota::InstalledModel installed = model;
  if (installed.activated_at == 0) installed.activated_at = Now();
  previous_ = std::move(active_);
  active_ = installed;
  probation_ = ota::Probation();
  probation_.model_version = model.model_version;
  probation_.active = true;
  record_ = record;
  Write(
      [installed, record](ota::UpdateJournal& j, ota::StateStore&) {
        return j.Activate(installed, record);
      },
      std::move(done), ota::UpdateState::kActive);
}

void UpdateLedger::RollBack(const ota::UpdateRecord& record, Done done) {
  if (active_) {
    ota::RolledBackModel m;
    m.model_name = active_->model_name;
    m.model_version = active_->model_version;
    m.artifact_sha256 = active_->artifact_sha256;
    m.reason = record.reason;
    m.rolled_back_at = Now();
    rolled_back_.push_back(std::move(m));
  }
  active_ = std::move(previous_);
  previous_.reset();
  probation_ = ota::Probation();
  record_ = record;
  Write([record](ota::UpdateJournal& j,
                 ota::StateStore&) { return j.RollBack(record); },
        std::move(done), record.state);
}

void UpdateLedger::SaveProbation(const ota::Probation& probation, Done done) {
  probation_ = probation;
  Write([probation](ota::UpdateJournal& j,
                    ota::StateStore&) { return j.SaveProbation(probation); },
        std::move(done));
}

void UpdateLedger::SaveTrust(const ota::TrustState& state, Done done) {
  trust_ = state;
  Write([state](ota::UpdateJournal&,
                ota::StateStore& s) { return s.SaveTrust(state); },
        std::move(done));
}

void UpdateLedger::BeginRun() {
  Write([](ota::UpdateJournal& j,
           ota::StateStore&) { return j.BeginRun().status(); },
        [](const Status& s) {
          if (!s.ok()) {
            TERND_LOG_ERROR("cannot record the start of this run: %s",
                            s.message());
          }
        });
}

void UpdateLedger::EndRun() {
  Write([](ota::UpdateJournal& j, ota::StateStore&) { return j.EndRun(); },
        nullptr);
}

void UpdateLedger::Evict(std::vector<std::string> keep, uint64_t quota,
                         std::function<void()> done) {
  worker_->Post(
      [keep = std::move(keep), quota](Result<ota::StateStore*> store) {
        if (!store.ok()) return;
        Result<std::vector<ota::StateStore::StoredArtifact>> stored =
            (*store)->Artifacts();
        if (!stored.ok()) {
          TERND_LOG_WARNING("artifact cache: %s", stored.status().message());
          return;
        }
        for (const std::string& sha256 :
             ArtifactsToEvict(*stored, keep, quota)) {
          Status s = (*store)->DeleteArtifact(sha256);
          if (!s.ok()) {
            TERND_LOG_WARNING("cannot evict artifact %s: %s",
                              ota::Hex(sha256).c_str(), s.message());
          }
        }
        // Give the space back to the file system (the log keeps deleted
        // pages until a checkpoint): after a full disk this is what lets
        // the next update fit.
        Status s = (*store)->Checkpoint();
        if (!s.ok()) {
          TERND_LOG_WARNING("state database checkpoint: %s", s.message());
        }
      },
      std::move(done));
}

void UpdateLedger::Post(ota::ArtifactWorker::Work work,
                        ota::ArtifactWorker::Done done) {
  worker_->Post(std::move(work), std::move(done));
}

void UpdateLedger::Flush(std::function<void()> done) {
  worker_->Post([](Result<ota::StateStore*>) {}, std::move(done));
}

void UpdateLedger::Wait() {
  auto reached = std::make_shared<std::promise<void>>();
  std::future<void> f = reached->get_future();
  // A dropped item (the worker stopping) breaks the promise: no hang.
  worker_->Post([reached = std::move(reached)](
                    Result<ota::StateStore*>) { reached->set_value(); },
                nullptr);
  f.wait();
}

}  // namespace ternd::daemon
