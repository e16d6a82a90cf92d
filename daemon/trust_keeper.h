// The device's trust state (ota/trust.h: the current root of trust, the
// time floor, the highest release version and sequence seen) and its
// persistence in the state database: the one place the updater's two paths
// (metadata from MQTT, an offline bundle) check roots, timestamps and
// releases, and the one place that writes the state.
//
// Every check is pure: it returns the state the device would have after
// it, or why not, and changes nothing. Commit() adopts such a state and
// hands it to `persist` (the daemon's: UpdateLedger::SaveTrust, queued in
// order before anything that acts on it is written, so after a power cut
// the disk never holds an update that a lost trust state allowed); a state
// equal to the current one is not written again.
//
// Thread-safety: one thread (the event loop).
#ifndef TERND_DAEMON_TRUST_KEEPER_H_
#define TERND_DAEMON_TRUST_KEEPER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "base/status.h"
#include "ota/trust.h"

namespace ternd::daemon {

class TrustKeeper {
 public:
  // Writes a state (adopted already); errors are the writer's to report.
  using Persist = std::function<void(const ota::TrustState&)>;

  // The `stored` state, or the pinned root in `root_file` when there is
  // none yet or the file holds a newer root (provisioned by hand), keeping
  // the floors learnt so far (and persisted).
  static Result<std::unique_ptr<TrustKeeper>> Open(
      const std::optional<ota::TrustState>& stored,
      const std::string& root_file, const ota::TrustPolicy& policy,
      Persist persist);

  const ota::TrustState& state() const { return trust_; }
  uint64_t root_version() const { return trust_.root.version(); }

  // A root of version current+1, signed by a threshold of the current and
  // of its own root keys.
  Result<ota::TrustState> CheckRoot(const std::string& envelope,
                                    int64_t now) const;
  // A timestamp statement: the time floor moves up to its issue time.
  Result<ota::TrustState> CheckTimestamp(const std::string& envelope,
                                         int64_t now) const;
  // A release for `device` (ota::AcceptRelease); `*next` is the state that
  // acting on it leaves; `*reason` says why it was refused.
  Result<ota::Release> CheckRelease(const std::string& envelope,
                                    const ota::DeviceIdentity& device,
                                    uint64_t installed_version, int64_t now,
                                    ota::TrustState* next,
                                    ota::RejectReason* reason) const;

  // Adopts `next` and persists it; false when it was the current state
  // (nothing to write).
  bool Commit(ota::TrustState next);

 private:
  TrustKeeper(const ota::TrustPolicy& policy, Persist persist)
      : policy_(policy), persist_(std::move(persist)) {}
  ota::TrustPolicy policy_;
  Persist persist_;
  ota::TrustState trust_;
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_TRUST_KEEPER_H_
