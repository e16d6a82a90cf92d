// The updater's link to the fleet over MQTT (docs/mqtt.md): the
// subscriptions (rollout halts first, so that their retained messages
// arrive before the releases they stop; then this device's and its groups'
// release topics, the trust topics), the size cap on every metadata message,
// and the ordered queue of update-state reports, retained on
// <prefix>/devices/<id>/update/state.
//
// Reports: every state change is published in order, one unacknowledged at
// a time (QoS 1); a report of the same state as the last one waiting
// (download progress) replaces it; at most 16 wait (the newest), so a
// broker that acknowledges nothing cannot make the queue grow. On every
// (re)connect the queue is dropped and the owner reports the state as it
// is now: what waited while the link was down is history.
//
// Messages are handed to the owner through FleetHandlers from the loop
// (MQTT deliveries), never from inside a call the owner made.
//
// Thread-safety: the event loop's thread.
#ifndef TERND_DAEMON_FLEET_LINK_H_
#define TERND_DAEMON_FLEET_LINK_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>

#include "ota/trust.h"
#include "ota/update_state.pb.h"

namespace ternd::net {
class MqttSession;
}

namespace ternd::daemon {

struct FleetHandlers {
  // Connected (again): report the current state.
  std::function<void()> connected;
  // A signed release envelope on a release topic (not yet checked).
  std::function<void(const std::string& envelope)> release;
  // A message on <prefix>/trust/root or <prefix>/trust/timestamp.
  std::function<void(std::string_view topic, const std::string& bytes)> root;
  std::function<void(std::string_view topic, const std::string& bytes)>
      timestamp;
  // A message on <prefix>/rollouts/<rollout_id>/halt (not yet checked).
  std::function<void(std::string_view topic, const std::string& bytes)> halt;
};

class FleetLink {
 public:
  // Subscribes at once (the session re-sends subscriptions on every
  // connect). `session` must outlive the link. Messages larger than
  // `max_release_bytes` (release topics) or ota::kMaxTrustMetadataBytes
  // (trust topics) are refused unread, with a warning naming the topic.
  FleetLink(net::MqttSession* session, std::string prefix,
            const ota::DeviceIdentity& device, uint64_t max_release_bytes,
            FleetHandlers handlers);
  FleetLink(const FleetLink&) = delete;
  FleetLink& operator=(const FleetLink&) = delete;

  void Report(ota::UpdateReport report);

  const std::string& prefix() const { return prefix_; }
  const std::string& state_topic() const { return state_topic_; }
  // Reports waiting behind the unacknowledged one (for tests).
  size_t queued() const { return reports_.size(); }

 private:
  void OnMessage(std::string_view topic, std::string_view payload);
  void Pump();

  net::MqttSession* session_;
  std::string prefix_, state_topic_;
  uint64_t max_release_bytes_;
  FleetHandlers handlers_;
  std::deque<ota::UpdateReport> reports_;  // waiting for the in-flight one
  int report_mid_ = -1;
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_FLEET_LINK_H_
