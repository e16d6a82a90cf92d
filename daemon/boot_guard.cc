#include "daemon/boot_guard.h"

#include <systemd/sd-event.h>
#include <time.h>

#include <cstdio>
#include <optional>
#include <utility>

#include "base/log.h"
#include "base/memory.h"
#include "ota/artifact.h"
#include "ota/signing.h"
#include "ota/state_store.h"

namespace ternd::daemon {

Result<ota::Release> ReleaseOf(const std::string& envelope_bytes) {
  ota::SignedEnvelope envelope;
  ota::Release release;
  if (!envelope.ParseFromString(envelope_bytes) ||
      !release.ParseFromString(envelope.payload())) {
    return DataLoss("the stored release manifest does not parse");
  }
  return release;
}

Result<runtime::ModelFile> ParseStagedModel(std::vector<uint8_t> model,
                                            const ota::Release& release) {
  char origin[160];
  std::snprintf(origin, sizeof(origin), "update '%s' version %llu",
                release.model_name().c_str(),
                static_cast<unsigned long long>(release.model_version()));
  TERND_ASSIGN_OR_RETURN(runtime::ModelFile file,
                         runtime::ModelFile::Parse(std::move(model), origin));
  const model::ModelHeader& h = file.header();
  if (h.name() != release.model_name() ||
      h.version() != release.model_version()) {
    return InvalidArgument(
        "%s: the model inside is '%s' version %llu, but the signed release "
        "names '%s' version %llu",
        origin, h.name().c_str(), static_cast<unsigned long long>(h.version()),
        release.model_name().c_str(),
        static_cast<unsigned long long>(release.model_version()));
  }
  return file;
}

Result<runtime::ModelFile> ProduceModel(const std::string& state_db,
                                        const ota::Release& release) {
  TERND_ASSIGN_OR_RETURN(std::unique_ptr<ota::StateStore> store,
                         ota::StateStore::Open(state_db));
  const ota::ArtifactSpec spec = ota::ArtifactSpecFromRelease(release);
  TERND_RETURN_IF_ERROR(ota::CheckArtifactSpec(spec));
  std::vector<uint8_t> model = MakeLargeBuffer(spec.model_length);
  TERND_ASSIGN_OR_RETURN(uint64_t length,
                         ota::StageArtifact(*store, spec, model));
  model.resize(length);
  return ParseStagedModel(std::move(model), release);
}

BootGuard::BootGuard(sd_event* loop, UpdateLedger* ledger,
                     BootGuardOptions options)
    : loop_(loop), ledger_(ledger), options_(std::move(options)) {}

BootGuard::~BootGuard() {
  if (timer_) sd_event_source_unref(timer_);
}

Result<bool> BootGuard::Boot(
    const std::function<Status(runtime::ModelFile)>& place) {
  const bool clean = ledger_->last_run_clean();
  ledger_->BeginRun();
  std::optional<ota::InstalledModel> active = ledger_->active();
  ota::Probation probation = ledger_->probation();
  if (probation.active && active &&
      active->model_version == probation.model_version && !clean) {
    ++probation.unclean_starts;
    ledger_->SaveProbation(probation);
    TERND_LOG_WARNING(
        "the daemon stopped unexpectedly %u time(s) since model '%s' version "
        "%llu was activated (rollback at %u)",
        probation.unclean_starts, active->model_name.c_str(),
        static_cast<unsigned long long>(active->model_version),
        options_.probation_crashes);
    if (probation.unclean_starts >= options_.probation_crashes) {
      char reason[256];
      std::snprintf(reason, sizeof(reason),
                    "model '%s' version %llu: the daemon stopped "
                    "unexpectedly %u times within its probation",
                    active->model_name.c_str(),
                    static_cast<unsigned long long>(active->model_version),
                    probation.unclean_starts);
      RollBack(*active, reason);
      active = ledger_->active();
    }
  }
  bool serving = false;
  for (int attempt = 0; attempt < 2 && active && !serving; ++attempt) {
    Status s;
    Result<ota::Release> release = ReleaseOf(active->release_envelope);
    if (!release.ok()) {
      s = release.status();
    } else {
      Result<runtime::ModelFile> file =
          ProduceModel(options_.state_db, *release);
      s = file.ok() ? place(std::move(*file)) : file.status();
    }
    if (s.ok()) {
      TERND_LOG_NOTICE("serving installed update '%s' version %llu",
                       active->model_name.c_str(),
                       static_cast<unsigned long long>(active->model_version));
      serving = true;
      break;
    }
    char reason[Status::kMaxMessage];
    std::snprintf(reason, sizeof(reason),
                  "installed model '%s' version %llu cannot serve: %s",
                  active->model_name.c_str(),
                  static_cast<unsigned long long>(active->model_version),
                  s.message());
    RollBack(*active, reason);
    active = ledger_->active();
  }
  // A crash from here on counts, and a rollback is never forgotten.
  ledger_->Wait();
  return serving;
}

// The previous model becomes the active one, with no rollback target
// itself, and `from` is never installed again. The record (and so the
// report) is about `from`, whatever the last record was about.
void BootGuard::RollBack(const ota::InstalledModel& from, const char* reason) {
  TERND_LOG_ERROR("rolling back: %s", reason);
  ota::UpdateRecord r;
  r.state = ota::UpdateState::kRolledBack;
  r.reason = reason;
  r.model_name = from.model_name;
  r.model_version = from.model_version;
  r.envelope_sha256 = ota::Sha256(from.release_envelope);
  if (Result<ota::Release> release = ReleaseOf(from.release_envelope);
      release.ok()) {
    r.rollout_id = release->rollout_id();
  }
  ledger_->RollBack(r, [](const Status& s) {
    if (!s.ok()) TERND_LOG_ERROR("cannot record the rollback: %s", s.message());
  });
}

void BootGuard::StartProbation() {
  if (timer_) {
    sd_event_source_unref(timer_);
    timer_ = nullptr;
  }
  sd_event_add_time_relative(loop_, &timer_, CLOCK_MONOTONIC,
                             uint64_t{options_.probation_s} * 1000000, 0,
                             &BootGuard::OnProbationEnd, this);
  if (timer_) sd_event_source_set_description(timer_, "update-probation");
}

int BootGuard::OnProbationEnd(sd_event_source*, uint64_t, void* self) {
  BootGuard* guard = static_cast<BootGuard*>(self);
  ota::Probation p = guard->ledger_->probation();
  if (!p.active) return 0;
  p.active = false;
  const uint64_t version = p.model_version;
  guard->ledger_->SaveProbation(p, [version](const Status& s) {
    if (s.ok()) {
      TERND_LOG_NOTICE("model version %llu passed its probation",
                       static_cast<unsigned long long>(version));
    } else {
      TERND_LOG_ERROR("cannot record the end of probation: %s", s.message());
    }
  });
  return 0;
}

}  // namespace ternd::daemon
