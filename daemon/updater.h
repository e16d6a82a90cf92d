// The device side of signed model updates: trust decisions, the update
// state machine, staging into the idle arena slot and activation
// (docs/ota.md).
//
//   release (bundle or MQTT) --trust--> received --> downloading -->
//   verifying (chunks, artifact and model hashes, zstd, parse, golden) -->
//   staged [--> validating (shadow validation, shadow_validator.h)] -->
//   activating --> active --(crashes in probation)--> rolled_back
//   (rejected / failed at any step, with the reason)
//
// The Updater is the state machine; it wires and owns its parts:
// - TrustKeeper (trust_keeper.h): roots, timestamps and releases from MQTT
//   and from bundles, one path;
// - UpdateLedger (update_ledger.h): everything durable, mirrored on the
//   loop and written in order on a thread of its own (with the artifact
//   work), so no fsync ever runs on the serving loop;
// - BootGuard (boot_guard.h): probation, crash counting, rollback;
// - FleetLink (fleet_link.h): MQTT subscriptions, metadata caps and the
//   ordered state reports;
// - the artifact cache's eviction policy (artifact_cache.h).
// It depends on the ModelHost interface only (ModelSlots in the daemon).
//
// - What trust accepted (a rotated root, a higher sequence) is queued for
//   the disk before the record that acts on it; the ledger writes in order,
//   and nothing is staged before both are on disk.
// - Every state change is written in order, so a kill -9 at any moment
//   leaves a device that starts on a verified model and resumes or finishes
//   the update (Attach()). Observers and the fleet hear of a state once it
//   is on disk; an offline install is answered once everything it did is.
//
// Thread-safety: everything runs on the event loop's thread; hashing,
// storing, decompression and the durable writes run on other threads.
#ifndef TERND_DAEMON_UPDATER_H_
#define TERND_DAEMON_UPDATER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "base/fd.h"
#include "base/status.h"
#include "daemon/model_host.h"
#include "daemon/shadow_validator.h"
#include "ota/fetcher.h"
#include "ota/trust.h"
#include "ota/update_journal.h"
#include "runtime/format.h"

typedef struct sd_event sd_event;

namespace ternd::net {
class MqttSession;
}

namespace ternd::daemon {

struct UpdaterOptions {
  std::string state_db;   // <state_directory>/state.db
  std::string root_file;  // the pinned root of trust
  ota::DeviceIdentity device;
  ota::TrustPolicy policy;
  uint32_t probation_s = 600;
  uint32_t probation_crashes = 2;
  // Artifact cache quota: beyond the active and the previous model (always
  // kept) and an update in progress, the newest artifacts that fit.
  uint64_t cache_bytes = uint64_t{512} << 20;
};

// Updates from the fleet: manifests and roots over MQTT, artifacts over
// HTTPS (docs/mqtt.md).
struct FleetOptions {
  std::string topic_prefix;  // "ternd/v1/<fleet>"
  ota::FetchOptions fetch;   // state_db is filled in by the updater
};

// What `ternctl status` shows and the fleet receives.
struct UpdateStatus {
  ota::UpdateRecord record;
  std::optional<ota::InstalledModel> active;    // installed by an update
  std::optional<ota::InstalledModel> previous;  // the rollback target
  bool probation = false;
  // The release's shadow validation: live while validating, then as it
  // ended (until the next release).
  std::optional<ShadowProgress> shadow;
};

// The answer to an offline install: the update's final status, or an error
// when the bundle was refused before any state was recorded (its artifact
// is not the one its release signs).
using InstallDone = std::function<void(const Result<UpdateStatus>&)>;

class Updater {
 public:
  static Result<std::unique_ptr<Updater>> Create(sd_event* loop,
                                                 UpdaterOptions options);
  ~Updater();
  Updater(const Updater&) = delete;
  Updater& operator=(const Updater&) = delete;

  // At start, before anything serves: applies probation (counting this
  // start if the last run crashed, rolling back at the limit) and places
  // the installed model with `place` (which runs the golden check). Falls
  // back to the previous model, then returns false: serve the configured
  // model. Blocking; start-up only.
  Result<bool> Boot(const std::function<Status(runtime::ModelFile)>& place);

  // Once serving: attaches to the model host and resumes an update that a
  // stop or crash interrupted.
  void Attach(ModelHost* host);

  // An offline bundle (ternctl install) of `size` bytes in `file` (the
  // service spools it there as it arrives): the same checks as an update
  // from the fleet. Only the envelopes before the artifact are read on the
  // loop; the artifact is read, checked and stored chunk by chunk on the
  // artifact worker, so memory stays at one chunk whatever the bundle's
  // size. An unreadable bundle, or one arriving while another update runs,
  // is an error here; otherwise `done` runs when the update is active, or
  // rejected or failed (the record says which and why).
  Status InstallBundle(UniqueFd file, uint64_t size, InstallDone done);

  // Subscribes to this device's and its groups' release topics and the
  // trust topics, downloads accepted releases, and publishes every state
  // change retained on <prefix>/devices/<id>/update/state. `session`
  // must outlive the updater.
  void ConnectFleet(net::MqttSession* session, FleetOptions options);

  // Where releases asking for shadow validation are validated (the
  // service's ShadowValidator); without one they are rejected. Before
  // Attach; `host` outlives the updater.
  void SetShadowHost(ShadowHost* host);

  // Called for every state change, once it is on disk.
  void SetObserver(std::function<void(const UpdateStatus&)> observer);

  UpdateStatus status();
  // A clean stop: writes what is queued and that the run ended cleanly (the
  // next start does not count as a crash). Blocking: at stop only.
  void Shutdown();

 private:
  class Impl;
  explicit Updater(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_UPDATER_H_
