// Update state reports as a test sees them on the broker: a device's
// retained `<prefix>/devices/<id>/update/state` topic (docs/mqtt.md),
// decoded from what an MqttProbe received.
#ifndef TERND_TESTS_SUPPORT_UPDATE_STATES_H_
#define TERND_TESTS_SUPPORT_UPDATE_STATES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ota/update_state.pb.h"
#include "tests/support/mqtt_probe.h"

namespace ternd::mqtt_testing {

// `m` decoded, when it is a report on `topic` about `version`.
inline std::optional<ota::UpdateReport> UpdateReportOf(const ReceivedMessage& m,
                                                       const std::string& topic,
                                                       uint64_t version) {
  ota::UpdateReport r;
  if (m.topic != topic || !r.ParseFromString(m.payload) ||
      r.model_version() != version) {
    return std::nullopt;
  }
  return r;
}

// Waits for a report of `state` about `version` on `topic` (received
// before or during the wait); std::nullopt on timeout.
inline std::optional<ota::UpdateReport> WaitForUpdateState(
    MqttProbe& probe, const std::string& topic, const std::string& state,
    uint64_t version, int timeout_ms = 30000) {
  std::optional<ota::UpdateReport> found;
  probe.WaitFor(
      [&](const std::vector<ReceivedMessage>& all) {
        for (const ReceivedMessage& m : all) {
          std::optional<ota::UpdateReport> r =
              UpdateReportOf(m, topic, version);
          if (r && r->state() == state) {
            found = std::move(r);
            return true;
          }
        }
        return false;
      },
      timeout_ms);
  return found;
}

// The states reported on `topic` about `version` so far, in the order they
// arrived, repeats (progress reports of one state) folded.
inline std::vector<std::string> UpdateStatesSeen(const MqttProbe& probe,
                                                 const std::string& topic,
                                                 uint64_t version) {
  std::vector<std::string> seen;
  for (const ReceivedMessage& m : probe.MessagesOn(topic)) {
    std::optional<ota::UpdateReport> r = UpdateReportOf(m, topic, version);
    if (r && (seen.empty() || seen.back() != r->state())) {
      seen.push_back(r->state());
    }
  }
  return seen;
}

}  // namespace ternd::mqtt_testing

#endif  // TERND_TESTS_SUPPORT_UPDATE_STATES_H_
