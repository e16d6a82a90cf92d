// The fleet side of the telemetry integration tests: an MQTT v5 subscriber
// with a persistent session (clean start off, session expiry one hour), so
// that with a broker that persists its state, nothing published while the
// subscriber was cut off by a broker restart is missed: the broker queues
// it. libmosquitto's own thread reconnects by itself.
//
// (tests/support/mqtt_probe.h always starts clean, which loses what
// arrives between a broker restart and its resubscription.)
//
// Thread-safety: any method from any thread.
#ifndef TERND_TESTS_TELEMETRY_FLEET_SUBSCRIBER_H_
#define TERND_TESTS_TELEMETRY_FLEET_SUBSCRIBER_H_

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"
#include "tests/support/mqtt_probe.h"

struct mosquitto;

namespace ternd::telemetry::testing {

class FleetSubscriber {
 public:
  // Connects with TLS (CA file) as `client_id` and subscribes to `filter`
  // at QoS 1; waits for the SUBACK.
  static Result<std::unique_ptr<FleetSubscriber>> Start(
      int port, const std::string& ca_file, const std::string& client_id,
      const std::string& filter, int timeout_ms = 20000);
  ~FleetSubscriber();

  bool WaitFor(const std::function<bool(
                   const std::vector<mqtt_testing::ReceivedMessage>&)>& done,
               int timeout_ms = 30000);
  std::vector<mqtt_testing::ReceivedMessage> messages() const;
  // Waits until the connection is up again (after a broker restart).
  bool WaitConnected(int timeout_ms = 30000);

 private:
  friend struct FleetSubscriberCallbacks;
  FleetSubscriber() = default;
  mosquitto* mosq_ = nullptr;
  std::string filter_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool connected_ = false;
  bool subscribed_ = false;
  std::vector<mqtt_testing::ReceivedMessage> messages_;
};

}  // namespace ternd::telemetry::testing

#endif  // TERND_TESTS_TELEMETRY_FLEET_SUBSCRIBER_H_
