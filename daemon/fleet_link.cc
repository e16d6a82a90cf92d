#include "daemon/fleet_link.h"

#include <utility>

#include "base/log.h"
#include "net/mqtt_session.h"

namespace ternd::daemon {

FleetLink::FleetLink(net::MqttSession* session, std::string prefix,
                     const ota::DeviceIdentity& device,
                     uint64_t max_release_bytes, FleetHandlers handlers)
    : session_(session),
      prefix_(std::move(prefix)),
      max_release_bytes_(max_release_bytes),
      handlers_(std::move(handlers)) {
  const std::string me = prefix_ + "/devices/" + device.id;
  state_topic_ = me + "/update/state";
  net::MqttCallbacks cb;
  cb.on_connected = [this]() {
    reports_.clear();
    report_mid_ = -1;
    if (handlers_.connected) handlers_.connected();
  };
  cb.on_message = [this](std::string_view topic, std::string_view payload,
                         bool) { OnMessage(topic, payload); };
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
    Pump();  // the in-flight cap has room now
  };
  session_->AddObserver(std::move(cb));
  // Halts before releases: the broker sends each subscription's retained
  // messages in order, so a halted rollout is known before its release.
  session_->Subscribe(prefix_ + "/rollouts/+/halt", 1);
  session_->Subscribe(me + "/update/release", 1);
  for (const std::string& g : device.groups) {
    session_->Subscribe(prefix_ + "/groups/" + g + "/update/release", 1);
  }
  session_->Subscribe(prefix_ + "/trust/root", 1);
  session_->Subscribe(prefix_ + "/trust/timestamp", 1);
}

void FleetLink::OnMessage(std::string_view topic, std::string_view payload) {
  if (payload.empty()) return;  // a retained message was cleared
  // Capped before anything is copied, parsed or stored.
  const bool release = topic.ends_with("/update/release");
  const uint64_t cap =
      release ? max_release_bytes_ : ota::kMaxTrustMetadataBytes;
  if (payload.size() > cap) {
    TERND_LOG_WARNING(
        "%.*s: %zu bytes, more than the %llu bytes allowed for %s; refused "
        "unread",
        static_cast<int>(topic.size()), topic.data(), payload.size(),
        static_cast<unsigned long long>(cap),
        release ? "a release manifest" : "trust metadata or a halt");
    return;
  }
  const std::string bytes(payload);
  if (topic == prefix_ + "/trust/root") {
    if (handlers_.root) handlers_.root(topic, bytes);
  } else if (topic == prefix_ + "/trust/timestamp") {
    if (handlers_.timestamp) handlers_.timestamp(topic, bytes);
  } else if (release) {
    if (handlers_.release) handlers_.release(bytes);
  } else if (topic.starts_with(prefix_ + "/rollouts/") &&
             topic.ends_with("/halt")) {
    if (handlers_.halt) handlers_.halt(topic, bytes);
  }
}

void FleetLink::Report(ota::UpdateReport report) {
  if (!reports_.empty() &&
      reports_.back().state_code() == report.state_code()) {
    reports_.back() = std::move(report);  // newer progress of the same state
  } else {
    reports_.push_back(std::move(report));
    if (reports_.size() > 16) reports_.pop_front();
  }
  Pump();
}

void FleetLink::Pump() {
  if (report_mid_ >= 0 || reports_.empty() || !session_->connected()) return;
  Result<int> mid = session_->Publish(
      state_topic_, reports_.front().SerializeAsString(), 1, true);
  if (!mid.ok()) return;  // retried when the cap has room or on connect
  report_mid_ = *mid;
  reports_.pop_front();
}

}  // namespace ternd::daemon
