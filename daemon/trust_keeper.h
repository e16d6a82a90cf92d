// The device's trust state (ota/trust.h: the current root of trust, the
// time floor, the highest release version and sequence seen) and its
// persistence in the state database: the one place the updater's two paths
// (metadata from MQTT, an offline bundle) check roots, timestamps and
// releases, and the one place that writes the state.
//
// Every check is pure: it returns the state the device would have after
// it, or why not, and changes nothing. Commit() persists such a state and
// only then adopts it, so what a check learnt (a rotated root, a higher
// sequence, a later time floor) survives a power cut before anything acts
// on it; a state equal to the current one is not written again.
//
// Thread-safety: one thread (the event loop); `store` is that thread's
// connection.
#ifndef TERND_DAEMON_TRUST_KEEPER_H_
#define TERND_DAEMON_TRUST_KEEPER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"
#include "ota/state_store.h"
#include "ota/trust.h"

namespace ternd::daemon {

class TrustKeeper {
 public:
  // The stored state, or the pinned root in `root_file` when there is none
  // yet or the file holds a newer root (provisioned by hand), keeping the
  // floors learnt so far. `store` must outlive the keeper.
  static Result<std::unique_ptr<TrustKeeper>> Open(
      ota::StateStore* store, const std::string& root_file,
      const ota::TrustPolicy& policy);

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

  // Persists `next`, then adopts it; on error nothing changes.
  Status Commit(ota::TrustState next);

 private:
  TrustKeeper(ota::StateStore* store, const ota::TrustPolicy& policy)
      : store_(store), policy_(policy) {}
  ota::StateStore* store_;
  ota::TrustPolicy policy_;
  ota::TrustState trust_;
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_TRUST_KEEPER_H_
