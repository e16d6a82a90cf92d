#include "daemon/updater.h"

#include <signal.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "base/clock.h"
#include "base/fd.h"
#include "base/file.h"
#include "base/log.h"
#include "daemon/boot_guard.h"
#include "daemon/fleet_link.h"
#include "daemon/rollout_gate.h"
#include "daemon/trust_keeper.h"
#include "daemon/update_ledger.h"
#include "ota/artifact.h"
#include "ota/bundle.h"
#include "ota/update_state.pb.h"
#include "ota/waves.h"

namespace ternd::daemon {
namespace {

using ota::UpdateRecord;
using ota::UpdateState;

int64_t SystemNow() { return static_cast<int64_t>(::time(nullptr)); }

// Reads a spooled bundle (InstallBundle) with pread: the loop reads its
// head, the artifact worker its artifact.
ota::BundleReadFn FileReader(std::shared_ptr<UniqueFd> file) {
  return [file](uint64_t offset, size_t n, char* dst) -> Status {
    size_t done = 0;
    while (done < n) {
      const ssize_t r = pread(file->get(), dst + done, n - done,
                              static_cast<off_t>(offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return ErrnoError(errno, "cannot read the spooled bundle");
      if (r == 0) {
        return DataLoss("the spooled bundle ends at byte %llu",
                        static_cast<unsigned long long>(offset + done));
      }
      done += static_cast<size_t>(r);
    }
    return Status::Ok();
  };
}

bool InProgress(UpdateState s) {
  return s == UpdateState::kReceived || s == UpdateState::kDownloading ||
         s == UpdateState::kVerifying || s == UpdateState::kStaged ||
         s == UpdateState::kActivating || s == UpdateState::kValidating;
}

}  // namespace

class Updater::Impl {
 public:
  Impl(sd_event* loop, UpdaterOptions options)
      : loop_(loop), options_(std::move(options)) {}
  ~Impl() {
    gate_.reset();
    fetcher_.reset();
    link_.reset();
    guard_.reset();
    ledger_.reset();  // its thread stops: no completion runs after this
  }

  Status Init();
  Result<bool> Boot(const std::function<Status(runtime::ModelFile)>& place);
  void Attach(ModelHost* host);
  Status InstallBundle(UniqueFd file, uint64_t size, InstallDone done);
  UpdateStatus status();
  void Shutdown();
  void ConnectFleet(net::MqttSession* session, FleetOptions options);

  std::function<void(const UpdateStatus&)> observer_;
  ShadowHost* shadow_host_ = nullptr;

 private:
  // An update runs, is finishing (its eviction), or an install waits for
  // its answer: a new one waits.
  bool Busy() const { return InProgress(record_.state) || done_ || finishing_; }
  // The trust state, queued on the ledger (TrustKeeper's writer).
  void PersistTrust(const ota::TrustState& state);
  // Runs trust over a release (after persisting what it learnt); false
  // when it was refused (already reported).
  bool AcceptAndRecord(const std::string& envelope);
  void OnFleetRelease(const std::string& envelope);
  void OnFleetTimestamp(std::string_view topic, const std::string& bytes);
  // A root on <prefix>/trust/root: rotated to, or refused and reported.
  void OnFleetRoot(std::string_view topic, const std::string& bytes);
  // Records and reports a refused root (`sha256`: of its envelope) as the
  // current state, unless it was reported already.
  void ReportRootRefusal(const std::string& sha256, const std::string& reason);
  // Reads on the ledger thread whether the release's artifact is stored
  // whole, then stages it, or else fetches it (or fails when offline).
  void StageOrFetch();
  void StartFetch();
  // Reports `st` to the observer and the fleet.
  void Report(const UpdateStatus& st);
  ota::UpdateReport BuildReport(const UpdateStatus& st) const;
  // Records `state`; observers and the fleet hear of it once it is on disk.
  void Set(UpdateState state, const std::string& reason = "");
  // A final state was reached: evicts, then answers an offline install and
  // takes what waited.
  void Finish();
  void TakePending();
  void AbandonInstall(const Status& why);
  // Trust decisions over a bundle whose artifact matched its release, then
  // the artifact stored (StoreArtifact).
  void TrustAndStore(std::shared_ptr<UniqueFd> file, ota::BundleHead head);
  // Stores the artifact of a bundle in `file` (at head.artifact_offset) as
  // checked chunks, on the ledger thread.
  void StoreArtifact(std::shared_ptr<UniqueFd> file, ota::BundleHead head);
  // Verifies and places the model on the loader thread, once everything
  // recorded so far is on disk: `staged` when the download already
  // decompressed and checked it, else from the store.
  void Stage(std::shared_ptr<std::vector<uint8_t>> staged = nullptr);
  void OnStaged(const Status& result);
  // Shadow validation of the staged model (the release asks for it), then
  // Activate() or a rejection with the measured agreement.
  void Validate();
  void OnValidated(const ShadowOutcome& outcome);
  void Activate();
  // Why this device cannot shadow-validate `release` as asked; empty when
  // it can or the release does not ask.
  std::string ShadowRefusal(const ota::Release& release);
  void Fail(UpdateState state, const std::string& reason);
  uint64_t InstalledVersion();
  // Why `release` must not be installed (it was rolled back here); empty
  // when it may.
  std::string RolledBackReason(const ota::Release& release);

  // ---- Staged waves and rollout halts (docs/ota.md; rollout_gate.h)
  int64_t TrustedNow() const;
  // After a fleet release was accepted (received): true when it may start
  // now; else it was recorded as waiting (its wave is not open: the gate
  // wakes CheckWaiting then) or rejected (its rollout was halted).
  bool PassGate();
  // The waiting release, decided again (its wave time came, trusted time
  // moved, a halt arrived, or the daemon started): starts, waits on, or is
  // rejected as halted.
  void CheckWaiting();
  // A message on <prefix>/rollouts/<id>/halt: verified like a release
  // (release keys of the current root, role "halt", not expired), else
  // refused with a log line and nothing changes.
  void OnFleetHalt(std::string_view topic, const std::string& bytes);
  // A release that arrived while another waited for its wave and was
  // refused: the waiting one is recorded (and reported) again, and the
  // refused one is not looked at again while it waits.
  void RestoreWaiting(UpdateRecord waiting, ota::Release release,
                      std::string refused_sha256);

  sd_event* loop_;
  UpdaterOptions options_;
  ModelHost* host_ = nullptr;
  std::unique_ptr<UpdateLedger> ledger_;
  std::unique_ptr<TrustKeeper> trust_;
  std::unique_ptr<BootGuard> guard_;
  std::unique_ptr<RolloutGate> gate_;
  // A release refused while another waited for its wave (RestoreWaiting).
  std::string refused_while_waiting_sha256_;
  UpdateRecord record_;
  ota::Release release_;  // of record_, once received
  InstallDone done_;      // an offline install waits for its answer
  // The shadow validation of release_, once it started (UpdateStatus).
  std::optional<ShadowProgress> shadow_;
  bool finishing_ = false;
  // A trust state that could not be written: the update that relied on it
  // fails before it is staged.
  std::string trust_write_error_;
  // Fleet connection (absent offline).
  std::unique_ptr<FleetLink> link_;
  FleetOptions fleet_;
  std::unique_ptr<ota::ArtifactFetcher> fetcher_;
  int64_t progress_saved_ns_ = 0;
  std::string pending_release_;  // arrived while another update ran
  // An offline install that arrived while the last update's eviction ran.
  struct PendingInstall {
    UniqueFd file;
    uint64_t size;
    InstallDone done;
  };
  std::unique_ptr<PendingInstall> pending_install_;
  // A root refused while an update ran: reported once it has finished.
  std::string pending_root_sha256_, pending_root_refusal_;
  // The last root refusal reported in this run (a retained root comes
  // again on every connect).
  std::string reported_root_sha256_;
};

Status Updater::Impl::Init() {
  // No root of trust and no state yet (the embedded default): updates stay
  // off, and no database is created for nothing.
  if (::access(options_.root_file.c_str(), F_OK) != 0 &&
      ::access(options_.state_db.c_str(), F_OK) != 0) {
    return NotFound(
        "ota.root_file %s does not exist (provision the fleet's root of "
        "trust there to enable updates)",
        options_.root_file.c_str());
  }
  TERND_ASSIGN_OR_RETURN(ledger_, UpdateLedger::Open(loop_, options_.state_db));
  TERND_ASSIGN_OR_RETURN(
      trust_, TrustKeeper::Open(
                  ledger_->stored_trust(), options_.root_file, options_.policy,
                  [this](const ota::TrustState& t) { PersistTrust(t); }));
  record_ = ledger_->record();
  if (!record_.release_envelope.empty()) {
    Result<ota::Release> r = ReleaseOf(record_.release_envelope);
    if (r.ok()) release_ = std::move(*r);
  }
  BootGuardOptions g;
  g.state_db = options_.state_db;
  g.probation_s = options_.probation_s;
  g.probation_crashes = options_.probation_crashes;
  guard_ = std::make_unique<BootGuard>(loop_, ledger_.get(), std::move(g));
  gate_ = std::make_unique<RolloutGate>(loop_, options_.device.id,
                                        [this]() { CheckWaiting(); });
  TERND_LOG_INFO("updates: root of trust for fleet '%s' version %llu",
                 trust_->state().root.fleet().c_str(),
                 static_cast<unsigned long long>(trust_->root_version()));
  return Status::Ok();
}

void Updater::Impl::PersistTrust(const ota::TrustState& state) {
  ledger_->SaveTrust(state, [this](const Status& s) {
    if (s.ok()) return;
    TERND_LOG_ERROR("cannot persist the trust state: %s", s.message());
    trust_write_error_ =
        std::string("cannot persist the trust state: ") + s.message();
  });
}

Result<bool> Updater::Impl::Boot(
    const std::function<Status(runtime::ModelFile)>& place) {
  TERND_ASSIGN_OR_RETURN(const bool serving, guard_->Boot(place));
  record_ = ledger_->record();  // a rollback is about the model it left
  return serving;
}

std::string Updater::Impl::RolledBackReason(const ota::Release& release) {
  for (const ota::RolledBackModel& m : ledger_->rolled_back()) {
    if (m.model_name != release.model_name() ||
        m.model_version != release.model_version()) {
      continue;
    }
    char why[Status::kMaxMessage];
    std::snprintf(why, sizeof(why),
                  "rolled_back: model '%s' version %llu was rolled back on "
                  "this device (%s); publish a newer version",
                  m.model_name.c_str(),
                  static_cast<unsigned long long>(m.model_version),
                  m.reason.c_str());
    return why;
  }
  return "";
}

uint64_t Updater::Impl::InstalledVersion() {
  if (ledger_->active()) return ledger_->active()->model_version;
  return host_ ? host_->serving().version : 0;
}

void Updater::Impl::Attach(ModelHost* host) {
  host_ = host;
  if (ledger_->probation().active) guard_->StartProbation();
  if (record_.state == UpdateState::kWaiting) {
    CheckWaiting();  // waited across a restart
    return;
  }
  if (!InProgress(record_.state)) return;
  // Interrupted by a stop or a crash: finish what was started.
  TERND_LOG_NOTICE("resuming the update to '%s' version %llu (was %s)",
                   record_.model_name.c_str(),
                   static_cast<unsigned long long>(record_.model_version),
                   ota::UpdateStateName(record_.state));
  if (record_.model_version <= InstalledVersion()) {
    // The swap was persisted before the crash.
    Set(UpdateState::kActive);
    Finish();
    return;
  }
  StageOrFetch();
}

void Updater::Impl::StageOrFetch() {
  auto complete = std::make_shared<bool>(false);
  const ota::ArtifactSpec spec = ota::ArtifactSpecFromRelease(release_);
  ledger_->Post(
      [complete, sha256 = spec.artifact_sha256,
       chunks = spec.chunk_sha256.size()](Result<ota::StateStore*> store) {
        if (!store.ok()) return;
        Result<std::vector<uint64_t>> have = (*store)->ChunkIndices(sha256);
        *complete = have.ok() && have->size() == chunks;
      },
      [this, complete]() {
        if (*complete) {
          Stage();  // stored: the chunks are re-checked while staging
        } else if (link_) {
          StartFetch();  // resumes from the verified chunks
        } else {
          Fail(UpdateState::kFailed,
               "interrupted before the artifact was complete, and there is "
               "no fleet connection to finish the download; install the "
               "bundle again");
        }
      });
}

void Updater::Impl::ConnectFleet(net::MqttSession* session,
                                 FleetOptions options) {
  fleet_ = std::move(options);
  fleet_.fetch.state_db = options_.state_db;
  fleet_.fetch.stage = true;
  FleetHandlers h;
  h.connected = [this]() { Report(status()); };
  h.release = [this](const std::string& e) { OnFleetRelease(e); };
  h.root = [this](std::string_view t, const std::string& b) {
    OnFleetRoot(t, b);
  };
  h.timestamp = [this](std::string_view t, const std::string& b) {
    OnFleetTimestamp(t, b);
  };
  h.halt = [this](std::string_view t, const std::string& b) {
    OnFleetHalt(t, b);
  };
  link_ = std::make_unique<FleetLink>(
      session, fleet_.topic_prefix, options_.device,
      ota::MaxReleaseEnvelopeBytes(options_.policy), std::move(h));
}

void Updater::Impl::OnFleetTimestamp(std::string_view topic,
                                     const std::string& bytes) {
  Result<ota::TrustState> next = trust_->CheckTimestamp(bytes, SystemNow());
  if (!next.ok()) {
    TERND_LOG_WARNING("%.*s: timestamp refused: %s",
                      static_cast<int>(topic.size()), topic.data(),
                      next.status().message());
    return;
  }
  trust_->Commit(std::move(*next));
  // Trusted time may have moved past a waiting release's wave.
  if (record_.state == UpdateState::kWaiting) CheckWaiting();
}

void Updater::Impl::OnFleetRoot(std::string_view topic,
                                const std::string& bytes) {
  const std::string sha256 = ota::Sha256(bytes);
  ota::SignedEnvelope env;
  ota::Root root;
  std::string refusal;
  if (!env.ParseFromString(bytes) || !root.ParseFromString(env.payload())) {
    refusal = "root: refused: the message on " + std::string(topic) +
              " is not a signed root";
  } else if (root.version() <= trust_->root_version()) {
    return;  // already have it
  } else {
    Result<ota::TrustState> next = trust_->CheckRoot(bytes, SystemNow());
    if (next.ok()) {
      trust_->Commit(std::move(*next));
      TERND_LOG_NOTICE("root of trust rotated to version %llu",
                       static_cast<unsigned long long>(trust_->root_version()));
      // Reported once the rotation is on disk.
      ledger_->Flush([this]() { Report(status()); });
      return;
    }
    refusal = "root: version " + std::to_string(root.version()) +
              " refused: " + next.status().message();
  }
  // Refused: checked again on every delivery (a root it needs first may
  // have arrived since), reported once.
  if (sha256 == reported_root_sha256_ || sha256 == record_.envelope_sha256 ||
      sha256 == pending_root_sha256_) {
    return;
  }
  TERND_LOG_ERROR("%.*s: %s", static_cast<int>(topic.size()), topic.data(),
                  refusal.c_str());
  if (Busy()) {
    // The update in progress is not disturbed: reported when it finishes.
    pending_root_sha256_ = sha256;
    pending_root_refusal_ = std::move(refusal);
    return;
  }
  ReportRootRefusal(sha256, refusal);
}

void Updater::Impl::ReportRootRefusal(const std::string& sha256,
                                      const std::string& reason) {
  reported_root_sha256_ = sha256;
  record_ = UpdateRecord();
  shadow_.reset();
  record_.envelope_sha256 = sha256;
  Set(UpdateState::kRejected, reason);
}

void Updater::Impl::OnFleetRelease(const std::string& envelope) {
  // Retained manifests come again on every connect: one already dealt
  // with (accepted, refused or rolled back) is not news and must not
  // overwrite the reported state.
  if (ota::Sha256(envelope) == record_.envelope_sha256) return;
  if (ledger_->active() && ledger_->active()->release_envelope == envelope) {
    return;
  }
  if (Busy() || !host_) {
    pending_release_ = envelope;  // the newest wins
    return;
  }
  if (record_.state == UpdateState::kWaiting) {
    // A newer release replaces the waiting one; a refused one does not.
    const std::string sha256 = ota::Sha256(envelope);
    if (sha256 == refused_while_waiting_sha256_) return;
    UpdateRecord waiting = record_;
    ota::Release waiting_release = release_;
    if (!AcceptAndRecord(envelope)) {
      RestoreWaiting(std::move(waiting), std::move(waiting_release), sha256);
      return;
    }
  } else if (!AcceptAndRecord(envelope)) {
    return;
  }
  if (!PassGate()) return;
  StageOrFetch();
}

void Updater::Impl::StartFetch() {
  Set(UpdateState::kDownloading);
  Result<std::unique_ptr<ota::ArtifactFetcher>> f = ota::ArtifactFetcher::Start(
      loop_, ota::FetchJobFromRelease(release_), fleet_.fetch,
      [this](const ota::FetchProgress& p) {
        record_.bytes_done = p.verified_bytes;
        record_.bytes_total = p.total_bytes;
        // Persist and report progress at most once a second.
        const int64_t now = MonotonicNs();
        if (now - progress_saved_ns_ < 1000000000LL &&
            p.verified_bytes < p.total_bytes) {
          return;
        }
        progress_saved_ns_ = now;
        ledger_->SaveProgress(record_);
        Report(status());
      },
      [this](const Status& s) {
        if (!s.ok()) {
          Fail(UpdateState::kFailed, s.message());
          return;
        }
        record_.bytes_done = record_.bytes_total;
        // Decompressed and checked while downloading: no second pass.
        std::vector<uint8_t> model = fetcher_->TakeStagedModel();
        Stage(model.empty()
                  ? nullptr
                  : std::make_shared<std::vector<uint8_t>>(std::move(model)));
      });
  if (!f.ok()) {
    Fail(UpdateState::kFailed, f.status().message());
    return;
  }
  fetcher_ = std::move(*f);
}

void Updater::Impl::Report(const UpdateStatus& st) {
  if (observer_) observer_(st);
  if (link_) link_->Report(BuildReport(st));
}

ota::UpdateReport Updater::Impl::BuildReport(const UpdateStatus& st) const {
  ota::UpdateReport r;
  r.set_device_id(options_.device.id);
  r.set_state_code(static_cast<int>(st.record.state));
  r.set_state(ota::UpdateStateName(st.record.state));
  r.set_reason(st.record.reason);
  r.set_model_name(st.record.model_name);
  r.set_model_version(st.record.model_version);
  r.set_rollout_id(st.record.rollout_id);
  r.set_bytes_done(st.record.bytes_done);
  r.set_bytes_total(st.record.bytes_total);
  if (st.active) {
    r.set_active_model(st.active->model_name);
    r.set_active_version(st.active->model_version);
  } else if (host_) {
    r.set_active_model(host_->serving().name);
    r.set_active_version(host_->serving().version);
  }
  if (st.previous) r.set_previous_version(st.previous->model_version);
  r.set_probation(st.probation);
  r.set_root_version(trust_->root_version());
  if (st.shadow) {
    const ShadowProgress& p = *st.shadow;
    r.set_shadow_requests(p.requests);
    r.set_shadow_required(p.required);
    r.set_shadow_rows(p.rows);
    r.set_shadow_agreeing(p.agreeing);
    r.set_shadow_agreement(p.agreement());
    r.set_shadow_deadline(p.deadline);
    r.set_shadow_dropped(p.dropped);
  }
  r.set_time(SystemNow());
  if (!st.record.release_envelope.empty() && release_.has_waves() &&
      release_.rollout_id() == st.record.rollout_id) {
    const ota::WaveSchedule& w = release_.waves();
    r.set_wave_start(w.start());
    r.set_wave_percent(ota::WavePercentAt(w, TrustedNow()));
    const std::optional<int64_t> opens = ota::WaveOpensAt(
        w, ota::WavePlace(release_.rollout_id(), options_.device.id));
    r.set_wave_opens(opens.value_or(0));
  }
  return r;
}

void Updater::Impl::Set(UpdateState state, const std::string& reason) {
  record_.state = state;
  record_.reason = reason;
  record_.updated_at = 0;
  ledger_->SaveUpdate(record_, [this, st = status()](const Status& s) {
    if (!s.ok()) {
      TERND_LOG_ERROR("cannot record the update state %s: %s",
                      ota::UpdateStateName(st.record.state), s.message());
    }
    Report(st);
  });
}

void Updater::Impl::Fail(UpdateState state, const std::string& reason) {
  TERND_LOG_ERROR("update to '%s' version %llu %s: %s",
                  record_.model_name.c_str(),
                  static_cast<unsigned long long>(record_.model_version),
                  ota::UpdateStateName(state), reason.c_str());
  Set(state, reason);
  Finish();
}

void Updater::Impl::Finish() {
  std::vector<std::string> keep;
  for (const auto* installed : {&ledger_->active(), &ledger_->previous()}) {
    if (*installed) keep.push_back((*installed)->artifact_sha256);
  }
  if (InProgress(record_.state)) keep.push_back(release_.artifact_sha256());
  // The next update starts once the cache is back under its quota (the
  // eviction runs after every write before it, on the ledger thread).
  finishing_ = true;
  ledger_->Evict(std::move(keep), options_.cache_bytes, [this]() {
    finishing_ = false;
    if (done_) {
      // Everything the answer says is on disk by now.
      auto done = std::move(done_);
      done_ = nullptr;
      done(status());
    }
    TakePending();
  });
}

void Updater::Impl::TakePending() {
  if (Busy()) return;
  if (pending_install_) {
    std::unique_ptr<PendingInstall> p = std::move(pending_install_);
    Status s = InstallBundle(std::move(p->file), p->size, p->done);
    if (!s.ok()) p->done(s);
    return;  // what else waits comes after it
  }
  if (!pending_root_refusal_.empty()) {
    const std::string sha256 = std::move(pending_root_sha256_);
    const std::string reason = std::move(pending_root_refusal_);
    pending_root_sha256_.clear();
    pending_root_refusal_.clear();
    ReportRootRefusal(sha256, reason);
  }
  std::string envelope = std::move(pending_release_);
  pending_release_.clear();
  if (!envelope.empty()) OnFleetRelease(envelope);
  // A wave time that came while the last refusal was finishing.
  if (record_.state == UpdateState::kWaiting) CheckWaiting();
}

// An offline install refused before trust saw it (its artifact is not its
// release's): answered with the error; no state was recorded.
void Updater::Impl::AbandonInstall(const Status& why) {
  TERND_LOG_ERROR("offline install refused: %s", why.message());
  auto done = std::move(done_);
  done_ = nullptr;
  if (done) done(why);
  TakePending();  // what waited for the install goes ahead
}

Status Updater::Impl::InstallBundle(UniqueFd file, uint64_t size,
                                    InstallDone done) {
  if (!host_) return FailedPrecondition("updates are not ready yet");
  if (finishing_ && !InProgress(record_.state) && !done_ && !pending_install_) {
    // The last update has ended (its state is final) and only its eviction
    // runs: this one starts right after it.
    pending_install_ = std::make_unique<PendingInstall>(
        PendingInstall{std::move(file), size, std::move(done)});
    return Status::Ok();
  }
  if (Busy()) {
    return FailedPrecondition(
        "another update ('%s' version %llu) is %s; wait for it to finish",
        record_.model_name.c_str(),
        static_cast<unsigned long long>(record_.model_version),
        ota::UpdateStateName(record_.state));
  }
  ota::BundleLimits limits;
  limits.max_artifact_bytes = options_.policy.max_artifact_bytes;
  limits.max_bundle_bytes = limits.max_artifact_bytes + (uint64_t{16} << 20);
  // Only what comes before the artifact is read here (envelopes of at most
  // limits.max_envelope_bytes each); the artifact is read, checked and
  // stored one chunk at a time on the ledger thread (StoreArtifact).
  auto shared = std::make_shared<UniqueFd>(std::move(file));
  TERND_ASSIGN_OR_RETURN(
      ota::BundleHead head,
      ota::ReadBundleHead(FileReader(shared), size, "bundle", limits));
  done_ = std::move(done);
  // The artifact is checked against the (still unverified) release first,
  // off the loop and one chunk at a time: a bundle whose artifact is not
  // its release's is refused like a malformed one, before trust records
  // anything.
  auto bundle = std::make_shared<ota::BundleHead>(std::move(head));
  auto result = std::make_shared<Status>();
  ledger_->Post(
      [result, shared, bundle](Result<ota::StateStore*>) {
        *result = ota::ForEachArtifactChunk(
            FileReader(shared), *bundle,
            [](uint64_t, std::string_view) { return Status::Ok(); });
        if (!result->ok()) *result = result->Prepend("bundle");
      },
      [this, result, shared, bundle]() {
        if (!result->ok()) {
          AbandonInstall(*result);
          return;
        }
        TrustAndStore(shared, std::move(*bundle));
      });
  return Status::Ok();
}

void Updater::Impl::TrustAndStore(std::shared_ptr<UniqueFd> file,
                                  ota::BundleHead head) {
  const ota::BundleContents& bundle = head.contents;

  // The chain first: each newer root must be accepted by the one before,
  // and is queued for the disk before anything it allows.
  const int64_t now = SystemNow();
  record_ = UpdateRecord();
  record_.model_name = bundle.release.model_name();
  record_.model_version = bundle.release.model_version();
  record_.rollout_id = bundle.release.rollout_id();
  for (size_t i = 0; i < bundle.root_envelopes.size(); ++i) {
    if (bundle.roots[i].version() <= trust_->root_version()) continue;
    Result<ota::TrustState> next =
        trust_->CheckRoot(bundle.root_envelopes[i], now);
    if (!next.ok()) {
      Fail(UpdateState::kRejected,
           "root: version " + std::to_string(bundle.roots[i].version()) +
               " refused: " + next.status().message());
      return;
    }
    trust_->Commit(std::move(*next));
    TERND_LOG_NOTICE("root of trust rotated to version %llu",
                     static_cast<unsigned long long>(trust_->root_version()));
  }
  if (!bundle.timestamp_envelope.empty()) {
    Result<ota::TrustState> next =
        trust_->CheckTimestamp(bundle.timestamp_envelope, now);
    if (!next.ok()) {
      Fail(UpdateState::kRejected,
           std::string("timestamp: ") + next.status().message());
      return;
    }
    trust_->Commit(std::move(*next));
  }
  if (AcceptAndRecord(bundle.release_envelope)) {
    StoreArtifact(std::move(file), std::move(head));
  }
}

bool Updater::Impl::AcceptAndRecord(const std::string& envelope) {
  ota::TrustState next;
  ota::RejectReason reason = ota::RejectReason::kNone;
  Result<ota::Release> release =
      trust_->CheckRelease(envelope, options_.device, InstalledVersion(),
                           SystemNow(), &next, &reason);
  // A refusal keeps the release's identity, never its bytes.
  record_ = UpdateRecord();
  shadow_.reset();
  record_.envelope_sha256 = ota::Sha256(envelope);
  if (!release.ok()) {
    ota::SignedEnvelope env;
    ota::Release unverified;
    if (env.ParseFromString(envelope) &&
        unverified.ParseFromString(env.payload())) {
      record_.model_name = unverified.model_name();
      record_.model_version = unverified.model_version();
      record_.rollout_id = unverified.rollout_id();
    }
    Fail(UpdateState::kRejected, std::string(ota::RejectReasonName(reason)) +
                                     ": " + release.status().message());
    return false;
  }
  record_.model_name = release->model_name();
  record_.model_version = release->model_version();
  record_.rollout_id = release->rollout_id();
  // Signed and newer than what serves, but it crashed here before: only a
  // newer release moves the device (what trust learnt is not kept either).
  if (std::string why = RolledBackReason(*release); !why.empty()) {
    Fail(UpdateState::kRejected, why);
    return false;
  }
  // A validation this device cannot run is refused before any download.
  if (std::string why = ShadowRefusal(*release); !why.empty()) {
    Fail(UpdateState::kRejected, why);
    return false;
  }
  record_.release_envelope = envelope;
  // What trust learnt (highest sequence, time floor) is written before the
  // record that acts on it (the ledger writes in order).
  trust_write_error_.clear();
  trust_->Commit(std::move(next));
  release_ = std::move(*release);
  record_.bytes_total = release_.artifact_length();
  Set(UpdateState::kReceived);
  return true;
}

void Updater::Impl::StoreArtifact(std::shared_ptr<UniqueFd> file,
                                  ota::BundleHead head) {
  Set(UpdateState::kDownloading);
  auto result = std::make_shared<Status>();
  // Checked against the release that trust accepted (the same bytes the
  // head was parsed from).
  head.contents.release = release_;
  auto bundle = std::make_shared<ota::BundleHead>(std::move(head));
  const std::string artifact_sha256 = release_.artifact_sha256();
  ledger_->Post(
      [result, file, bundle, artifact_sha256](Result<ota::StateStore*> store) {
        if (!store.ok()) {
          *result = store.status();
          return;
        }
        *result = ota::ForEachArtifactChunk(
            FileReader(file), *bundle,
            [&](uint64_t index, std::string_view chunk) {
              return (*store)->PutChunk(artifact_sha256, index, chunk);
            });
      },
      [this, result]() {
        if (!result->ok()) {
          Fail(UpdateState::kFailed, result->message());
          return;
        }
        record_.bytes_done = record_.bytes_total;
        Stage();
      });
}

void Updater::Impl::Stage(std::shared_ptr<std::vector<uint8_t>> staged) {
  Set(UpdateState::kVerifying);
  // Nothing is placed before the trust state and the records that allowed
  // it are on disk.
  ledger_->Flush([this, staged]() {
    if (!trust_write_error_.empty()) {
      Fail(UpdateState::kFailed, trust_write_error_);
      return;
    }
    ModelChange change;
    char what[200];
    std::snprintf(what, sizeof(what), "update to '%s' version %llu",
                  release_.model_name().c_str(),
                  static_cast<unsigned long long>(release_.model_version()));
    change.what = what;
    change.produce = [db = options_.state_db, release = release_,
                      staged]() -> Result<runtime::ModelFile> {
      if (staged && !staged->empty()) {
        return ParseStagedModel(std::move(*staged), release);
      }
      return ProduceModel(db, release);
    };
    change.require_golden = true;
    change.swap_when_staged = false;
    change.done = [this](const Status& s) { OnStaged(s); };
    Status s = host_->ChangeModel(std::move(change));
    if (!s.ok()) Fail(UpdateState::kFailed, s.message());
  });
}

void Updater::Impl::OnStaged(const Status& result) {
  if (!result.ok()) {
    Fail(UpdateState::kFailed, result.message());
    return;
  }
  Set(UpdateState::kStaged);
  if (release_.has_shadow_validation()) {
    Validate();
    return;
  }
  Activate();
}

std::string Updater::Impl::ShadowRefusal(const ota::Release& release) {
  if (!release.has_shadow_validation()) return "";
  Result<ShadowSpec> spec = ShadowSpecFromRelease(release.shadow_validation());
  if (!spec.ok())
    return std::string("shadow_validation: ") + spec.status().message();
  if (!shadow_host_) {
    return "shadow_validation: this daemon serves no requests to compare "
           "the model on";
  }
  Status can = shadow_host_->CanValidate();
  if (!can.ok()) return std::string("shadow_validation: ") + can.message();
  return "";
}

void Updater::Impl::Validate() {
  Result<ShadowSpec> spec = ShadowSpecFromRelease(release_.shadow_validation());
  Status s =
      spec.ok() && shadow_host_
          ? shadow_host_->BeginValidation(
                *spec,
                [this]() {
                  shadow_ = shadow_host_->validation();
                  Report(status());  // progress: not written to disk
                },
                [this](const ShadowOutcome& o) { OnValidated(o); })
          : (spec.ok() ? FailedPrecondition("no shadow host") : spec.status());
  if (!s.ok()) {
    host_->DiscardStaged();
    Fail(UpdateState::kRejected,
         std::string("shadow_validation: ") + s.message());
    return;
  }
  shadow_ = shadow_host_->validation();
  // Counters are not persisted: after a restart the model is staged
  // again and the count (and the time limit) start over.
  Set(UpdateState::kValidating);
}

void Updater::Impl::OnValidated(const ShadowOutcome& outcome) {
  shadow_ = outcome.progress;
  if (!outcome.agrees) {
    host_->DiscardStaged();
    Fail(UpdateState::kRejected, outcome.reason);
    return;
  }
  TERND_LOG_NOTICE("update to '%s' version %llu: %s",
                   release_.model_name().c_str(),
                   static_cast<unsigned long long>(release_.model_version()),
                   outcome.reason.c_str());
  Activate();
}

void Updater::Impl::Activate() {
  Set(UpdateState::kActivating);
  Result<int64_t> swapped = host_->ActivateStaged();
  if (!swapped.ok()) {
    host_->DiscardStaged();
    Fail(UpdateState::kFailed, swapped.status().message());
    return;
  }
  ota::InstalledModel installed;
  installed.release_envelope = record_.release_envelope;
  installed.model_name = release_.model_name();
  installed.model_version = release_.model_version();
  installed.artifact_sha256 = release_.artifact_sha256();
  UpdateRecord r = record_;
  r.state = UpdateState::kActive;
  r.reason.clear();
  r.updated_at = 0;
  record_ = r;
  auto st = std::make_shared<UpdateStatus>();  // as the activation leaves it
  ledger_->Activate(installed, r, [this, st](const Status& s) {
    if (!s.ok()) {
      // Serving the new model but unable to record it: the next start
      // serves the previous one; say so.
      TERND_LOG_ERROR(
          "cannot record the activation (%s); after a restart the "
          "previous model serves again",
          s.message());
    }
    Report(*st);
  });
  *st = status();
  TERND_LOG_NOTICE("update active: '%s' version %llu (swap %lld ns)",
                   release_.model_name().c_str(),
                   static_cast<unsigned long long>(release_.model_version()),
                   static_cast<long long>(*swapped));
  guard_->StartProbation();
  Finish();
}

// ------------------------------------------- staged waves and rollout halts

int64_t Updater::Impl::TrustedNow() const {
  return ota::TrustedTime(trust_->state(), options_.policy, SystemNow());
}

bool Updater::Impl::PassGate() {
  const int64_t now = TrustedNow();
  const GateDecision d = gate_->Decide(release_, now);
  switch (d.kind) {
    case GateDecision::kGo:
      gate_->Disarm();
      return true;
    case GateDecision::kHalted:
      gate_->Disarm();
      Fail(UpdateState::kRejected, d.why);
      return false;
    case GateDecision::kWait:
      break;
  }
  if (record_.state != UpdateState::kWaiting) {
    TERND_LOG_NOTICE(
        "update to '%s' version %llu waits: %s", record_.model_name.c_str(),
        static_cast<unsigned long long>(record_.model_version), d.why.c_str());
    Set(UpdateState::kWaiting);
  }
  if (d.opens > 0) {
    gate_->Arm(d.opens, now);
  } else {
    gate_->Disarm();  // no step reaches it: only a newer release moves it
  }
  return false;
}

void Updater::Impl::CheckWaiting() {
  if (record_.state != UpdateState::kWaiting || !host_ || Busy()) return;
  if (!PassGate()) return;
  TERND_LOG_NOTICE(
      "the wave of rollout '%s' is open: updating to '%s' "
      "version %llu",
      record_.rollout_id.c_str(), record_.model_name.c_str(),
      static_cast<unsigned long long>(record_.model_version));
  Set(UpdateState::kReceived);
  StageOrFetch();
}

void Updater::Impl::RestoreWaiting(UpdateRecord waiting, ota::Release release,
                                   std::string refused_sha256) {
  refused_while_waiting_sha256_ = std::move(refused_sha256);
  // The refusal was recorded and reported (Fail); the waiting release is
  // the state again.
  record_ = std::move(waiting);
  release_ = std::move(release);
  Set(UpdateState::kWaiting);
  CheckWaiting();
}

void Updater::Impl::OnFleetHalt(std::string_view topic,
                                const std::string& bytes) {
  Result<ota::RolloutHalt> halt = ota::VerifyRolloutHalt(
      trust_->state(), bytes, options_.policy, SystemNow());
  if (!halt.ok()) {
    TERND_LOG_ERROR("%.*s: halt refused, nothing changes: %s",
                    static_cast<int>(topic.size()), topic.data(),
                    halt.status().message());
    return;
  }
  if (!gate_->AddHalt(*halt)) return;  // known already
  TERND_LOG_NOTICE("rollout '%s' halted by the fleet%s%s",
                   halt->rollout_id().c_str(),
                   halt->reason().empty() ? "" : ": ", halt->reason().c_str());
  // Only a release still waiting for its wave stops; one that started
  // (downloading or later) or finished goes on (docs/ota.md).
  if (record_.state == UpdateState::kWaiting &&
      record_.rollout_id == halt->rollout_id()) {
    CheckWaiting();
  }
}

UpdateStatus Updater::Impl::status() {
  UpdateStatus st;
  st.record = record_;
  st.active = ledger_->active();
  st.previous = ledger_->previous();
  st.probation = ledger_->probation().active;
  st.shadow = shadow_;
  if (record_.state == UpdateState::kValidating && shadow_host_) {
    if (std::optional<ShadowProgress> live = shadow_host_->validation()) {
      st.shadow = std::move(live);
    }
  }
  return st;
}

void Updater::Impl::Shutdown() {
  // What is queued, then the clean stop, reach the disk before the
  // process ends.
  ledger_->EndRun();
  ledger_->Wait();
}

// ------------------------------------------------------------------ Updater

Updater::Updater(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Updater::~Updater() = default;

Result<std::unique_ptr<Updater>> Updater::Create(sd_event* loop,
                                                 UpdaterOptions options) {
  auto impl = std::make_unique<Impl>(loop, std::move(options));
  TERND_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Updater>(new Updater(std::move(impl)));
}

Result<bool> Updater::Boot(
    const std::function<Status(runtime::ModelFile)>& place) {
  return impl_->Boot(place);
}

void Updater::Attach(ModelHost* host) { impl_->Attach(host); }

void Updater::ConnectFleet(net::MqttSession* session, FleetOptions options) {
  impl_->ConnectFleet(session, std::move(options));
}

Status Updater::InstallBundle(UniqueFd file, uint64_t size, InstallDone done) {
  return impl_->InstallBundle(std::move(file), size, std::move(done));
}

void Updater::SetShadowHost(ShadowHost* host) { impl_->shadow_host_ = host; }

void Updater::SetObserver(std::function<void(const UpdateStatus&)> observer) {
  impl_->observer_ = std::move(observer);
}

UpdateStatus Updater::status() { return impl_->status(); }

void Updater::Shutdown() { impl_->Shutdown(); }

}  // namespace ternd::daemon
