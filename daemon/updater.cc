#include "daemon/updater.h"

#include <signal.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <utility>
#include <vector>

#include "base/clock.h"
#include "base/fd.h"
#include "base/file.h"
#include "base/log.h"
#include "base/memory.h"
#include "daemon/trust_keeper.h"
#include "net/mqtt_session.h"
#include "ota/artifact.h"
#include "ota/bundle.h"
#include "ota/state_store.h"
#include "ota/update_state.pb.h"

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
         s == UpdateState::kActivating;
}

Result<ota::Release> ReleaseOf(const std::string& envelope_bytes) {
  ota::SignedEnvelope envelope;
  ota::Release release;
  if (!envelope.ParseFromString(envelope_bytes) ||
      !release.ParseFromString(envelope.payload())) {
    return DataLoss("the stored release manifest does not parse");
  }
  return release;
}

// Parses a model staged from a release's artifact (its SHA-256 and length
// already checked) and compares its name and version with the release's.
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

// Reads an installed or staged model out of the artifact store: every
// chunk and the whole artifact checked against the signed hashes,
// decompressed with the output capped at the signed length, the model's
// hash checked, parsed, and its name and version compared with the
// release's. Blocking: loader thread or start-up only.
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

}  // namespace

class Updater::Impl {
 public:
  Impl(sd_event* loop, UpdaterOptions options)
      : loop_(loop), options_(std::move(options)) {}
  ~Impl() {
    fetcher_.reset();
    if (probation_timer_) sd_event_source_unref(probation_timer_);
    if (pending_source_) sd_event_source_unref(pending_source_);
  }

  Status Init();
  Result<bool> Boot(const std::function<Status(runtime::ModelFile)>& place);
  void Attach(ModelHost* host);
  Status InstallBundle(UniqueFd file, uint64_t size, InstallDone done);
  UpdateStatus status();
  void Shutdown();
  void ConnectFleet(net::MqttSession* session, FleetOptions options);

  std::function<void(const UpdateStatus&)> observer_;

 private:
  void Changed();
  // Runs trust over a release (after persisting what it learnt); false
  // when it was refused (already reported).
  bool AcceptAndRecord(const std::string& envelope);
  void OnFleetMessage(std::string_view topic, std::string_view payload);
  void OnFleetRelease(const std::string& envelope);
  // A root on <prefix>/trust/root: rotated to, or refused and reported.
  void OnFleetRoot(std::string_view topic, const std::string& bytes);
  // Records and reports a refused root (`sha256`: of its envelope) as the
  // current state, unless it was reported already.
  void ReportRootRefusal(const std::string& sha256, const std::string& reason);
  void StartFetch();
  // Queues a report of `st` (or of the status read now) and publishes the
  // next queued one when no report is unacknowledged. Every state change is
  // reported in order; reports of the same state (download progress)
  // replace each other while they wait.
  void PublishReport(const UpdateStatus* known = nullptr);
  void PumpReports();
  ota::UpdateReport BuildReport(const UpdateStatus& st) const;
  static int OnPendingRelease(sd_event_source*, void* self);
  void Set(UpdateState state, const std::string& reason = "");
  void MaybeDie(UpdateState state);
  void Finish();  // a final state was reached
  void AbandonInstall(const Status& why);
  // Trust decisions over a bundle whose artifact matched its release, then
  // the artifact stored (StoreArtifact).
  void TrustAndStore(std::shared_ptr<UniqueFd> file, ota::BundleHead head);
  void Evict();  // the artifact cache back under its quota
  // Stores the artifact of a bundle in `file` (at head.artifact_offset) as
  // checked chunks, off the loop.
  void StoreArtifact(std::shared_ptr<UniqueFd> file, ota::BundleHead head);
  // Verifies and places the model on the loader thread: `staged` when the
  // download already decompressed and checked it, else from the store.
  void Stage(std::shared_ptr<std::vector<uint8_t>> staged = nullptr);
  void OnStaged(const Status& result);
  void Fail(UpdateState state, const std::string& reason);
  void StartProbationTimer();
  static int OnProbationEnd(sd_event_source*, uint64_t, void* self);
  uint64_t InstalledVersion();
  Result<std::optional<ota::InstalledModel>> RollBack(
      const ota::InstalledModel& from, const char* reason);
  // Why `release` must not be installed (it was rolled back here); empty
  // when it may.
  std::string RolledBackReason(const ota::Release& release);

  sd_event* loop_;
  UpdaterOptions options_;
  ModelHost* host_ = nullptr;
  std::unique_ptr<ota::StateStore> store_;
  std::unique_ptr<ota::UpdateJournal> journal_;
  std::unique_ptr<ota::ArtifactWorker> worker_;
  std::unique_ptr<TrustKeeper> trust_;
  UpdateRecord record_;
  ota::Release release_;  // of record_, once received
  InstallDone done_;      // an offline install waits for its answer
  sd_event_source* probation_timer_ = nullptr;
  // Fleet connection (absent offline).
  net::MqttSession* session_ = nullptr;
  FleetOptions fleet_;
  std::string prefix_, release_topic_, state_topic_;
  std::unique_ptr<ota::ArtifactFetcher> fetcher_;
  int64_t progress_saved_ns_ = 0;
  std::string pending_release_;  // arrived while another update ran
  // A root refused while an update ran: reported once it has finished.
  std::string pending_root_sha256_, pending_root_refusal_;
  // The last root refusal reported in this run (a retained root comes
  // again on every connect).
  std::string reported_root_sha256_;
  sd_event_source* pending_source_ = nullptr;
  std::deque<ota::UpdateReport> reports_;  // waiting for the in-flight one
  int report_mid_ = -1;
#if TERND_FAULT_INJECTION
  const char* kill_at_ = std::getenv("TERND_FAULT_KILL_AT_UPDATE_STATE");
#endif
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
  TERND_ASSIGN_OR_RETURN(store_, ota::StateStore::Open(options_.state_db));
  TERND_ASSIGN_OR_RETURN(journal_, ota::UpdateJournal::Open(options_.state_db));
  TERND_ASSIGN_OR_RETURN(
      trust_,
      TrustKeeper::Open(store_.get(), options_.root_file, options_.policy));
  TERND_ASSIGN_OR_RETURN(record_, journal_->LoadUpdate());
  if (!record_.release_envelope.empty()) {
    Result<ota::Release> r = ReleaseOf(record_.release_envelope);
    if (r.ok()) release_ = std::move(*r);
  }
  TERND_ASSIGN_OR_RETURN(worker_,
                         ota::ArtifactWorker::Start(loop_, options_.state_db));
  TERND_LOG_INFO("updates: root of trust for fleet '%s' version %llu",
                 trust_->state().root.fleet().c_str(),
                 static_cast<unsigned long long>(trust_->root_version()));
  return Status::Ok();
}

Result<bool> Updater::Impl::Boot(
    const std::function<Status(runtime::ModelFile)>& place) {
  TERND_ASSIGN_OR_RETURN(const bool clean, journal_->BeginRun());
  TERND_ASSIGN_OR_RETURN(std::optional<ota::InstalledModel> active,
                         journal_->Active());
  TERND_ASSIGN_OR_RETURN(ota::Probation probation, journal_->LoadProbation());
  if (probation.active && active &&
      active->model_version == probation.model_version && !clean) {
    ++probation.unclean_starts;
    TERND_RETURN_IF_ERROR(journal_->SaveProbation(probation));
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
      TERND_ASSIGN_OR_RETURN(active, RollBack(*active, reason));
    }
  }
  for (int attempt = 0; attempt < 2 && active; ++attempt) {
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
      return true;
    }
    char reason[Status::kMaxMessage];
    std::snprintf(reason, sizeof(reason),
                  "installed model '%s' version %llu cannot serve: %s",
                  active->model_name.c_str(),
                  static_cast<unsigned long long>(active->model_version),
                  s.message());
    TERND_ASSIGN_OR_RETURN(active, RollBack(*active, reason));
  }
  return false;
}

// Returns from `from` (the active model) to the previous model (start-up
// only) and records why; the previous model becomes the active one, with no
// rollback target itself, and `from` is never installed again. The record
// (and so the report) is about `from`, whatever the last record was about.
Result<std::optional<ota::InstalledModel>> Updater::Impl::RollBack(
    const ota::InstalledModel& from, const char* reason) {
  TERND_LOG_ERROR("rolling back: %s", reason);
  UpdateRecord r;
  r.state = UpdateState::kRolledBack;
  r.reason = reason;
  r.model_name = from.model_name;
  r.model_version = from.model_version;
  r.envelope_sha256 = ota::Sha256(from.release_envelope);
  if (Result<ota::Release> release = ReleaseOf(from.release_envelope);
      release.ok()) {
    r.rollout_id = release->rollout_id();
  }
  TERND_RETURN_IF_ERROR(journal_->RollBack(r));
  record_ = r;
  return journal_->Active();
}

std::string Updater::Impl::RolledBackReason(const ota::Release& release) {
  Result<std::vector<ota::RolledBackModel>> list = journal_->RolledBack();
  if (!list.ok()) {
    // Unknown: refuse rather than risk installing a model that crashed.
    return std::string("rolled_back: cannot read the rolled-back list: ") +
           list.status().message();
  }
  for (const ota::RolledBackModel& m : *list) {
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
  Result<std::optional<ota::InstalledModel>> active = journal_->Active();
  if (active.ok() && active->has_value()) return (*active)->model_version;
  return host_ ? host_->serving().version : 0;
}

void Updater::Impl::Attach(ModelHost* host) {
  host_ = host;
  Result<ota::Probation> p = journal_->LoadProbation();
  if (p.ok() && p->active) StartProbationTimer();
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
  const ota::ArtifactSpec spec = ota::ArtifactSpecFromRelease(release_);
  Result<std::vector<uint64_t>> have =
      store_->ChunkIndices(spec.artifact_sha256);
  if (!have.ok() || have->size() != spec.chunk_sha256.size()) {
    if (session_) {
      StartFetch();  // resumes from the verified chunks
      return;
    }
    Fail(UpdateState::kFailed,
         "interrupted before the artifact was complete, and there is no "
         "fleet connection to finish the download; install the bundle again");
    return;
  }
  Stage();
}

void Updater::Impl::ConnectFleet(net::MqttSession* session,
                                 FleetOptions options) {
  session_ = session;
  fleet_ = std::move(options);
  fleet_.fetch.state_db = options_.state_db;
  fleet_.fetch.stage = true;
  prefix_ = fleet_.topic_prefix;
  const std::string device = prefix_ + "/devices/" + options_.device.id;
  release_topic_ = device + "/update/release";
  state_topic_ = device + "/update/state";
  net::MqttCallbacks cb;
  cb.on_connected = [this]() {
    // The retained topic gets where the update stands now; what waited
    // while the link was down is history.
    reports_.clear();
    report_mid_ = -1;
    PublishReport();
  };
  cb.on_message = [this](std::string_view topic, std::string_view payload,
                         bool) { OnFleetMessage(topic, payload); };
  cb.on_publish_done = [this](int mid, int reason_code) {
    if (mid == report_mid_) {
      report_mid_ = -1;
      if (reason_code < 0 || reason_code >= 0x80) {
        TERND_LOG_WARNING(
            "the broker refused the update state on %s "
            "(reason code 0x%02x); the next state change or connection "
            "reports again",
            state_topic_.c_str(), reason_code & 0xff);
      }
    }
    PumpReports();  // the in-flight cap has room now
  };
  session_->AddObserver(std::move(cb));
  session_->Subscribe(release_topic_, 1);
  for (const std::string& g : options_.device.groups) {
    session_->Subscribe(prefix_ + "/groups/" + g + "/update/release", 1);
  }
  session_->Subscribe(prefix_ + "/trust/root", 1);
  session_->Subscribe(prefix_ + "/trust/timestamp", 1);
}

void Updater::Impl::OnFleetMessage(std::string_view topic,
                                   std::string_view payload) {
  if (payload.empty()) return;  // a retained message was cleared
  // Capped before anything is copied, parsed or stored.
  const bool release = topic.ends_with("/update/release");
  const uint64_t cap = release ? ota::MaxReleaseEnvelopeBytes(options_.policy)
                               : ota::kMaxTrustMetadataBytes;
  if (payload.size() > cap) {
    TERND_LOG_WARNING(
        "%.*s: %zu bytes, more than the %llu bytes allowed for %s; refused "
        "unread",
        static_cast<int>(topic.size()), topic.data(), payload.size(),
        static_cast<unsigned long long>(cap),
        release ? "a release manifest" : "trust metadata");
    return;
  }
  const std::string bytes(payload);
  if (topic == prefix_ + "/trust/root") {
    OnFleetRoot(topic, bytes);
    return;
  }
  if (topic == prefix_ + "/trust/timestamp") {
    Result<ota::TrustState> next = trust_->CheckTimestamp(bytes, SystemNow());
    Status s = next.ok() ? trust_->Commit(std::move(*next)) : next.status();
    if (!s.ok()) {
      TERND_LOG_WARNING("%.*s: timestamp refused: %s",
                        static_cast<int>(topic.size()), topic.data(),
                        s.message());
    }
    return;
  }
  if (topic.ends_with("/update/release")) {
    OnFleetRelease(bytes);
  }
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
      if (Status saved = trust_->Commit(std::move(*next)); !saved.ok()) {
        TERND_LOG_ERROR("%.*s: cannot persist root version %llu: %s",
                        static_cast<int>(topic.size()), topic.data(),
                        static_cast<unsigned long long>(root.version()),
                        saved.message());
        return;
      }
      TERND_LOG_NOTICE("root of trust rotated to version %llu",
                       static_cast<unsigned long long>(trust_->root_version()));
      PublishReport();
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
  if (InProgress(record_.state) || done_) {
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
  record_.envelope_sha256 = sha256;
  Set(UpdateState::kRejected, reason);
}

void Updater::Impl::OnFleetRelease(const std::string& envelope) {
  // Retained manifests come again on every connect: one already dealt
  // with (accepted, refused or rolled back) is not news and must not
  // overwrite the reported state.
  if (ota::Sha256(envelope) == record_.envelope_sha256) return;
  Result<std::optional<ota::InstalledModel>> active = journal_->Active();
  if (active.ok() && *active && (*active)->release_envelope == envelope) {
    return;
  }
  if (InProgress(record_.state) || done_ || !host_) {
    pending_release_ = envelope;  // the newest wins
    return;
  }
  if (!AcceptAndRecord(envelope)) return;
  const ota::ArtifactSpec spec = ota::ArtifactSpecFromRelease(release_);
  Result<std::vector<uint64_t>> have =
      store_->ChunkIndices(spec.artifact_sha256);
  if (have.ok() && have->size() == spec.chunk_sha256.size()) {
    Stage();  // cached: the chunks are re-checked while staging
    return;
  }
  StartFetch();
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
        // Progress, not a new state: not flushed to disk (SaveProgress).
        if (Status saved = journal_->SaveProgress(record_); !saved.ok()) {
          TERND_LOG_ERROR("cannot record the download progress: %s",
                          saved.message());
        }
        Changed();
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

void Updater::Impl::PublishReport(const UpdateStatus* known) {
  if (!session_) return;
  ota::UpdateReport r = BuildReport(known ? *known : status());
  if (!reports_.empty() && reports_.back().state_code() == r.state_code()) {
    reports_.back() = std::move(r);  // newer progress of the same state
  } else {
    reports_.push_back(std::move(r));
    // A broker that acknowledges nothing must not make the queue grow:
    // keep the newest states.
    if (reports_.size() > 16) reports_.pop_front();
  }
  PumpReports();
}

void Updater::Impl::PumpReports() {
  if (!session_ || report_mid_ >= 0 || reports_.empty() ||
      !session_->connected()) {
    return;
  }
  Result<int> mid = session_->Publish(
      state_topic_, reports_.front().SerializeAsString(), 1, true);
  if (!mid.ok()) return;  // retried when the cap has room or on connect
  report_mid_ = *mid;
  reports_.pop_front();
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
  r.set_time(SystemNow());
  return r;
}

void Updater::Impl::Set(UpdateState state, const std::string& reason) {
  record_.state = state;
  record_.reason = reason;
  record_.updated_at = 0;
  Status s = journal_->SaveUpdate(record_);
  if (!s.ok())
    TERND_LOG_ERROR("cannot record the update state: %s", s.message());
  MaybeDie(state);
  Changed();
}

void Updater::Impl::Changed() {
  const UpdateStatus st = status();  // read once for both
  if (observer_) observer_(st);
  PublishReport(&st);
}

#if TERND_FAULT_INJECTION
// Fault seam for the tests (docs/ota.md, "Testing seam"): a real SIGKILL at
// the moment the named state has been recorded, which a test cannot
// otherwise hit reliably from outside. Test builds only (CMake option
// TERND_FAULT_INJECTION, off for Release builds).
void Updater::Impl::MaybeDie(UpdateState state) {
  if (kill_at_ && std::strcmp(kill_at_, ota::UpdateStateName(state)) == 0) {
    TERND_LOG_WARNING("TERND_FAULT_KILL_AT_UPDATE_STATE=%s: killing myself",
                      kill_at_);
    ::raise(SIGKILL);
  }
}
#else
void Updater::Impl::MaybeDie(UpdateState) {}
#endif

void Updater::Impl::Fail(UpdateState state, const std::string& reason) {
  TERND_LOG_ERROR("update to '%s' version %llu %s: %s",
                  record_.model_name.c_str(),
                  static_cast<unsigned long long>(record_.model_version),
                  ota::UpdateStateName(state), reason.c_str());
  Set(state, reason);
  Finish();
}

void Updater::Impl::Evict() {
  Result<std::vector<ota::StateStore::StoredArtifact>> stored =
      store_->Artifacts();
  if (!stored.ok()) return;
  std::vector<std::string> keep;
  for (auto installed : {journal_->Active(), journal_->Previous()}) {
    if (installed.ok() && installed->has_value()) {
      keep.push_back((*installed)->artifact_sha256);
    }
  }
  if (InProgress(record_.state)) keep.push_back(release_.artifact_sha256());
  uint64_t total = 0;
  for (const auto& a : *stored) {
    if (std::find(keep.begin(), keep.end(), a.sha256) != keep.end()) {
      total += a.bytes;
    }
  }
  for (const auto& a : *stored) {
    if (std::find(keep.begin(), keep.end(), a.sha256) != keep.end()) continue;
    if (total + a.bytes <= options_.cache_bytes) {
      total += a.bytes;
      continue;
    }
    Status s = store_->DeleteArtifact(a.sha256);
    if (!s.ok()) {
      TERND_LOG_WARNING("cannot evict artifact %s: %s",
                        ota::Hex(a.sha256).c_str(), s.message());
    }
  }
  // Give the space back to the file system (the log keeps deleted pages
  // until a checkpoint): after a full disk this is what lets the next
  // update fit.
  Status s = store_->Checkpoint();
  if (!s.ok()) TERND_LOG_WARNING("state database checkpoint: %s", s.message());
}

void Updater::Impl::Finish() {
  Evict();
  if ((!pending_release_.empty() || !pending_root_refusal_.empty()) &&
      !pending_source_) {
    // Not from inside this call chain: the next loop iteration.
    if (sd_event_add_defer(loop_, &pending_source_, &Impl::OnPendingRelease,
                           this) >= 0) {
      sd_event_source_set_enabled(pending_source_, SD_EVENT_ONESHOT);
    }
  }
  if (!done_) return;
  auto done = std::move(done_);
  done_ = nullptr;
  done(status());
}

// An offline install refused before trust saw it (its artifact is not its
// release's): answered with the error; no state was recorded.
void Updater::Impl::AbandonInstall(const Status& why) {
  TERND_LOG_ERROR("offline install refused: %s", why.message());
  auto done = std::move(done_);
  done_ = nullptr;
  Finish();  // what waited for the install goes ahead
  if (done) done(why);
}

int Updater::Impl::OnPendingRelease(sd_event_source* s, void* self) {
  Impl* impl = static_cast<Impl*>(self);
  sd_event_source_unref(s);
  impl->pending_source_ = nullptr;
  if (!impl->pending_root_refusal_.empty()) {
    const std::string sha256 = std::move(impl->pending_root_sha256_);
    const std::string reason = std::move(impl->pending_root_refusal_);
    impl->pending_root_sha256_.clear();
    impl->pending_root_refusal_.clear();
    impl->ReportRootRefusal(sha256, reason);
  }
  std::string envelope = std::move(impl->pending_release_);
  impl->pending_release_.clear();
  if (!envelope.empty()) impl->OnFleetRelease(envelope);
  return 0;
}

Status Updater::Impl::InstallBundle(UniqueFd file, uint64_t size,
                                    InstallDone done) {
  if (!host_) return FailedPrecondition("updates are not ready yet");
  if (InProgress(record_.state) || done_) {
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
  // stored one chunk at a time on the worker (StoreArtifact).
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
  worker_->Post(
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
  // and is persisted before anything it allows is used.
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
    if (Status saved = trust_->Commit(std::move(*next)); !saved.ok()) {
      Fail(UpdateState::kFailed, saved.message());
      return;
    }
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
    if (Status saved = trust_->Commit(std::move(*next)); !saved.ok()) {
      Fail(UpdateState::kFailed, saved.message());
      return;
    }
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
  record_.release_envelope = envelope;
  // Persist what trust learnt (highest sequence, time floor) before acting.
  if (Status saved = trust_->Commit(std::move(next)); !saved.ok()) {
    Fail(UpdateState::kFailed, saved.message());
    return false;
  }
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
  worker_->Post(
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
}

void Updater::Impl::OnStaged(const Status& result) {
  if (!result.ok()) {
    Fail(UpdateState::kFailed, result.message());
    return;
  }
  Set(UpdateState::kStaged);
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
  Status s = journal_->Activate(installed, r);
  if (!s.ok()) {
    // Serving the new model but unable to record it: the next start serves
    // the previous one; say so.
    TERND_LOG_ERROR(
        "cannot record the activation (%s); after a restart the "
        "previous model serves again",
        s.message());
  }
  record_ = r;
  MaybeDie(UpdateState::kActive);
  TERND_LOG_NOTICE("update active: '%s' version %llu (swap %lld ns)",
                   release_.model_name().c_str(),
                   static_cast<unsigned long long>(release_.model_version()),
                   static_cast<long long>(*swapped));
  Changed();
  StartProbationTimer();
  Finish();
}

void Updater::Impl::StartProbationTimer() {
  if (probation_timer_) {
    sd_event_source_unref(probation_timer_);
    probation_timer_ = nullptr;
  }
  sd_event_add_time_relative(loop_, &probation_timer_, CLOCK_MONOTONIC,
                             uint64_t{options_.probation_s} * 1000000, 0,
                             &Impl::OnProbationEnd, this);
  if (probation_timer_) {
    sd_event_source_set_description(probation_timer_, "update-probation");
  }
}

int Updater::Impl::OnProbationEnd(sd_event_source*, uint64_t, void* self) {
  Impl* impl = static_cast<Impl*>(self);
  Result<ota::Probation> p = impl->journal_->LoadProbation();
  if (p.ok() && p->active) {
    p->active = false;
    Status s = impl->journal_->SaveProbation(*p);
    if (s.ok()) {
      TERND_LOG_NOTICE("model version %llu passed its probation",
                       static_cast<unsigned long long>(p->model_version));
    }
  }
  return 0;
}

UpdateStatus Updater::Impl::status() {
  UpdateStatus st;
  st.record = record_;
  if (auto a = journal_->Active(); a.ok()) st.active = std::move(*a);
  if (auto p = journal_->Previous(); p.ok()) st.previous = std::move(*p);
  if (auto pr = journal_->LoadProbation(); pr.ok()) st.probation = pr->active;
  return st;
}

void Updater::Impl::Shutdown() {
  Status s = journal_->EndRun();
  if (!s.ok()) TERND_LOG_ERROR("cannot record a clean stop: %s", s.message());
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

void Updater::SetObserver(std::function<void(const UpdateStatus&)> observer) {
  impl_->observer_ = std::move(observer);
}

UpdateStatus Updater::status() { return impl_->status(); }

void Updater::Shutdown() { impl_->Shutdown(); }

}  // namespace ternd::daemon
