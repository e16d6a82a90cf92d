#include "tests/telemetry/fleet_subscriber.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include <chrono>

namespace ternd::telemetry::testing {

struct FleetSubscriberCallbacks {
  static void OnConnect(mosquitto* m, void* obj, int rc, int,
                        const mosquitto_property*) {
    auto* self = static_cast<FleetSubscriber*>(obj);
    if (rc == 0) {
      // Re-subscribing is harmless with a persistent session.
      mosquitto_subscribe_v5(m, nullptr, self->filter_.c_str(), 1, 0, nullptr);
    }
    std::lock_guard<std::mutex> lock(self->mu_);
    self->connected_ = rc == 0;
    self->cv_.notify_all();
  }
  static void OnDisconnect(mosquitto*, void* obj, int,
                           const mosquitto_property*) {
    auto* self = static_cast<FleetSubscriber*>(obj);
    std::lock_guard<std::mutex> lock(self->mu_);
    self->connected_ = false;
    self->cv_.notify_all();
  }
  static void OnSubscribe(mosquitto*, void* obj, int, int, const int*,
                          const mosquitto_property*) {
    auto* self = static_cast<FleetSubscriber*>(obj);
    std::lock_guard<std::mutex> lock(self->mu_);
    self->subscribed_ = true;
    self->cv_.notify_all();
  }
  static void OnMessage(mosquitto*, void* obj, const mosquitto_message* msg,
                        const mosquitto_property*) {
    auto* self = static_cast<FleetSubscriber*>(obj);
    mqtt_testing::ReceivedMessage r;
    r.topic = msg->topic;
    r.payload.assign(static_cast<const char*>(msg->payload),
                     msg->payload ? msg->payloadlen : 0);
    r.qos = msg->qos;
    r.retained = msg->retain;
    std::lock_guard<std::mutex> lock(self->mu_);
    self->messages_.push_back(std::move(r));
    self->cv_.notify_all();
  }
};

Result<std::unique_ptr<FleetSubscriber>> FleetSubscriber::Start(
    int port, const std::string& ca_file, const std::string& client_id,
    const std::string& filter, int timeout_ms) {
  mosquitto_lib_init();
  std::unique_ptr<FleetSubscriber> s(new FleetSubscriber());
  s->filter_ = filter;
  s->mosq_ = mosquitto_new(client_id.c_str(), false, s.get());
  if (!s->mosq_) return Internal("mosquitto_new failed");
  mosquitto_int_option(s->mosq_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
  if (mosquitto_tls_set(s->mosq_, ca_file.c_str(), nullptr, nullptr, nullptr,
                        nullptr) != MOSQ_ERR_SUCCESS) {
    return Internal("tls_set with %s failed", ca_file.c_str());
  }
  mosquitto_connect_v5_callback_set(s->mosq_,
                                    &FleetSubscriberCallbacks::OnConnect);
  mosquitto_disconnect_v5_callback_set(s->mosq_,
                                       &FleetSubscriberCallbacks::OnDisconnect);
  mosquitto_subscribe_v5_callback_set(s->mosq_,
                                      &FleetSubscriberCallbacks::OnSubscribe);
  mosquitto_message_v5_callback_set(s->mosq_,
                                    &FleetSubscriberCallbacks::OnMessage);
  mosquitto_reconnect_delay_set(s->mosq_, 1, 1, false);
  mosquitto_property* props = nullptr;
  mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 3600);
  const int rc = mosquitto_connect_bind_v5(s->mosq_, "127.0.0.1", port, 30,
                                           nullptr, props);
  mosquitto_property_free_all(&props);
  if (rc != MOSQ_ERR_SUCCESS) {
    return Internal("connect to 127.0.0.1:%d: %s", port,
                    mosquitto_strerror(rc));
  }
  mosquitto_loop_start(s->mosq_);
  std::unique_lock<std::mutex> lock(s->mu_);
  if (!s->cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                       [&] { return s->subscribed_; })) {
    return Errorf(StatusCode::kDeadlineExceeded,
                  "no SUBACK for %s from 127.0.0.1:%d within %d ms",
                  filter.c_str(), port, timeout_ms);
  }
  lock.unlock();
  return s;
}

FleetSubscriber::~FleetSubscriber() {
  if (mosq_) {
    mosquitto_disconnect(mosq_);
    mosquitto_loop_stop(mosq_, true);
    mosquitto_destroy(mosq_);
  }
}

bool FleetSubscriber::WaitFor(
    const std::function<
        bool(const std::vector<mqtt_testing::ReceivedMessage>&)>& done,
    int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return done(messages_); });
}

std::vector<mqtt_testing::ReceivedMessage> FleetSubscriber::messages() const {
  std::lock_guard<std::mutex> lock(mu_);
  return messages_;
}

bool FleetSubscriber::WaitConnected(int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return connected_; });
}

}  // namespace ternd::telemetry::testing
