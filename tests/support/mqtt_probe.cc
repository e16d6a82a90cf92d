#include "tests/support/mqtt_probe.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>

namespace ternd::mqtt_testing {

struct ProbeCallbacks {
  static void OnConnect(mosquitto*, void* obj, int rc, int,
                        const mosquitto_property*) {
    auto* p = static_cast<MqttProbe*>(obj);
    std::lock_guard<std::mutex> lock(p->mu_);
    p->connack_ = rc;
    p->connected_ = rc == 0;
    p->cv_.notify_all();
  }
  static void OnDisconnect(mosquitto*, void* obj, int rc,
                           const mosquitto_property*) {
    auto* p = static_cast<MqttProbe*>(obj);
    std::lock_guard<std::mutex> lock(p->mu_);
    p->connected_ = false;
    p->disconnect_rc_ = rc;
    p->cv_.notify_all();
  }
  static void OnMessage(mosquitto*, void* obj, const mosquitto_message* m,
                        const mosquitto_property*) {
    auto* p = static_cast<MqttProbe*>(obj);
    ReceivedMessage r;
    r.topic = m->topic ? m->topic : "";
    if (m->payload && m->payloadlen > 0) {
      r.payload.assign(static_cast<const char*>(m->payload),
                       static_cast<size_t>(m->payloadlen));
    }
    r.qos = m->qos;
    r.retained = m->retain;
    std::lock_guard<std::mutex> lock(p->mu_);
    p->messages_.push_back(std::move(r));
    p->cv_.notify_all();
  }
  static void OnPublish(mosquitto*, void* obj, int mid, int reason,
                        const mosquitto_property*) {
    auto* p = static_cast<MqttProbe*>(obj);
    std::lock_guard<std::mutex> lock(p->mu_);
    p->acks_[mid] = reason;
    p->cv_.notify_all();
  }
  static void OnSubscribe(mosquitto*, void* obj, int mid, int count,
                          const int* granted, const mosquitto_property*) {
    auto* p = static_cast<MqttProbe*>(obj);
    std::lock_guard<std::mutex> lock(p->mu_);
    p->subacks_[mid] = count > 0 && granted ? granted[0] : 0x80;
    p->cv_.notify_all();
  }
  static void OnLog(mosquitto*, void* obj, int, const char* text) {
    auto* p = static_cast<MqttProbe*>(obj);
    if (!text || std::strncmp(text, "OpenSSL Error", 13) != 0) return;
    std::lock_guard<std::mutex> lock(p->mu_);
    if (p->tls_error_.empty()) p->tls_error_ = text;
  }
};

Result<std::unique_ptr<MqttProbe>> MqttProbe::Connect(MqttProbeOptions options,
                                                      int timeout_ms) {
  static std::once_flag once;
  std::call_once(once, [] { mosquitto_lib_init(); });
  static std::atomic<int> counter{0};
  if (options.client_id.empty()) {
    options.client_id = "probe-" + std::to_string(getpid()) + "-" +
                        std::to_string(counter.fetch_add(1));
  }
  std::unique_ptr<MqttProbe> probe(new MqttProbe());
  probe->peer_ = options.host + ":" + std::to_string(options.port);
  mosquitto* m = mosquitto_new(options.client_id.c_str(), options.clean_start,
                               probe.get());
  if (!m) return Internal("mosquitto_new failed");
  probe->mosq_ = m;
  mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
  mosquitto_connect_v5_callback_set(m, &ProbeCallbacks::OnConnect);
  mosquitto_disconnect_v5_callback_set(m, &ProbeCallbacks::OnDisconnect);
  mosquitto_message_v5_callback_set(m, &ProbeCallbacks::OnMessage);
  mosquitto_publish_v5_callback_set(m, &ProbeCallbacks::OnPublish);
  mosquitto_subscribe_v5_callback_set(m, &ProbeCallbacks::OnSubscribe);
  mosquitto_log_callback_set(m, &ProbeCallbacks::OnLog);
  if (options.tls) {
    auto opt = [](const std::string& s) {
      return s.empty() ? nullptr : s.c_str();
    };
    const int rc = mosquitto_tls_set(m, opt(options.ca_file), nullptr,
                                     opt(options.cert_file),
                                     opt(options.key_file), nullptr);
    if (rc != MOSQ_ERR_SUCCESS) {
      return InvalidArgument("probe TLS setup (ca '%s'): %s",
                             options.ca_file.c_str(), mosquitto_strerror(rc));
    }
  }
  if (!options.username.empty()) {
    mosquitto_username_pw_set(
        m, options.username.c_str(),
        options.password.empty() ? nullptr : options.password.c_str());
  }
  int rc = MOSQ_ERR_SUCCESS;
  if (options.session_expiry_seconds > 0) {
    // CONNECT properties need the v5 call, which connects synchronously (so
    // before the thread starts); the thread's reconnects reuse them.
    mosquitto_property* props = nullptr;
    mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                 options.session_expiry_seconds);
    rc = mosquitto_connect_bind_v5(m, options.host.c_str(), options.port,
                                   options.keepalive_seconds, nullptr, props);
    mosquitto_property_free_all(&props);
    if (rc != MOSQ_ERR_SUCCESS) {
      std::lock_guard<std::mutex> lock(probe->mu_);
      return Errorf(StatusCode::kUnavailable, "probe: connecting to %s: %s%s%s",
                    probe->peer_.c_str(), mosquitto_strerror(rc),
                    probe->tls_error_.empty() ? "" : ", ",
                    probe->tls_error_.c_str());
    }
  }
  rc = mosquitto_loop_start(m);
  if (rc != MOSQ_ERR_SUCCESS) {
    return Internal("probe: mosquitto_loop_start: %s", mosquitto_strerror(rc));
  }
  if (options.session_expiry_seconds == 0) {
    rc = mosquitto_connect_async(m, options.host.c_str(), options.port,
                                 options.keepalive_seconds);
    if (rc != MOSQ_ERR_SUCCESS) {
      return Errorf(StatusCode::kUnavailable, "probe: connecting to %s: %s",
                    probe->peer_.c_str(), mosquitto_strerror(rc));
    }
  }
  std::unique_lock<std::mutex> lock(probe->mu_);
  const bool answered =
      probe->cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
        return probe->connack_ >= 0 || probe->disconnect_rc_ >= 0 ||
               !probe->tls_error_.empty();
      });
  if (!answered) {
    return Errorf(StatusCode::kDeadlineExceeded,
                  "probe: no CONNACK from %s within %d ms",
                  probe->peer_.c_str(), timeout_ms);
  }
  if (!probe->connected_) {
    return Errorf(
        StatusCode::kUnavailable,
        "probe: connection to %s failed: CONNACK %d (%s), %s",
        probe->peer_.c_str(), probe->connack_,
        probe->connack_ >= 0 ? mosquitto_reason_string(probe->connack_)
                             : "none",
        probe->tls_error_.empty() ? "no TLS error" : probe->tls_error_.c_str());
  }
  lock.unlock();
  return probe;
}

MqttProbe::~MqttProbe() {
  if (!mosq_) return;
  mosquitto_disconnect_v5(mosq_, MQTT_RC_NORMAL_DISCONNECTION, nullptr);
  mosquitto_loop_stop(mosq_, false);
  mosquitto_destroy(mosq_);
}

Status MqttProbe::Subscribe(const std::string& filter, int qos,
                            int timeout_ms) {
  int mid = 0;
  const int rc =
      mosquitto_subscribe_v5(mosq_, &mid, filter.c_str(), qos, 0, nullptr);
  if (rc != MOSQ_ERR_SUCCESS) {
    return Errorf(StatusCode::kUnavailable, "probe: subscribe '%s': %s",
                  filter.c_str(), mosquitto_strerror(rc));
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                    [&] { return subacks_.count(mid) > 0; })) {
    return Errorf(StatusCode::kDeadlineExceeded,
                  "probe: no SUBACK for '%s' from %s within %d ms",
                  filter.c_str(), peer_.c_str(), timeout_ms);
  }
  const int granted = subacks_[mid];
  if (granted >= 0x80) {
    return Errorf(StatusCode::kPermissionDenied,
                  "probe: %s refused the subscription to '%s': %s",
                  peer_.c_str(), filter.c_str(),
                  mosquitto_reason_string(granted));
  }
  return Status::Ok();
}

Result<int> MqttProbe::Publish(const std::string& topic,
                               const std::string& payload, int qos, bool retain,
                               int timeout_ms) {
  int mid = 0;
  const int rc = mosquitto_publish_v5(mosq_, &mid, topic.c_str(),
                                      static_cast<int>(payload.size()),
                                      payload.data(), qos, retain, nullptr);
  if (rc != MOSQ_ERR_SUCCESS) {
    return Errorf(StatusCode::kUnavailable, "probe: publish to '%s': %s",
                  topic.c_str(), mosquitto_strerror(rc));
  }
  if (qos == 0) return 0;
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                    [&] { return acks_.count(mid) > 0; })) {
    return Errorf(StatusCode::kDeadlineExceeded,
                  "probe: no PUBACK for '%s' from %s within %d ms",
                  topic.c_str(), peer_.c_str(), timeout_ms);
  }
  return acks_[mid];
}

Status MqttProbe::ClearRetained(const std::string& topic, int timeout_ms) {
  TERND_ASSIGN_OR_RETURN(const int reason,
                         Publish(topic, "", 1, true, timeout_ms));
  if (reason >= 0x80) {
    return Errorf(StatusCode::kPermissionDenied,
                  "probe: clearing the retained message on '%s': %s",
                  topic.c_str(), mosquitto_reason_string(reason));
  }
  return Status::Ok();
}

bool MqttProbe::WaitFor(
    const std::function<bool(const std::vector<ReceivedMessage>&)>& done,
    int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return done(messages_); });
}

std::optional<ReceivedMessage> MqttProbe::WaitForMessage(
    const std::string& topic, int timeout_ms,
    const std::optional<std::string>& payload) {
  std::optional<ReceivedMessage> found;
  WaitFor(
      [&](const std::vector<ReceivedMessage>& messages) {
        for (const ReceivedMessage& m : messages) {
          if (m.topic == topic && (!payload || m.payload == *payload)) {
            found = m;
            return true;
          }
        }
        return false;
      },
      timeout_ms);
  return found;
}

std::vector<ReceivedMessage> MqttProbe::messages() const {
  std::lock_guard<std::mutex> lock(mu_);
  return messages_;
}

std::vector<ReceivedMessage> MqttProbe::MessagesOn(
    const std::string& topic) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ReceivedMessage> out;
  for (const ReceivedMessage& m : messages_) {
    if (m.topic == topic) out.push_back(m);
  }
  return out;
}

void MqttProbe::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  messages_.clear();
}

bool MqttProbe::connected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return connected_;
}

}  // namespace ternd::mqtt_testing
