#include "net/mqtt_session.h"

#include <fcntl.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "base/backoff.h"
#include "base/clock.h"
#include "base/event_loop.h"
#include "base/log.h"

namespace ternd::net {
namespace {

// libmosquitto's keepalive and retry bookkeeping runs once a second.
constexpr uint64_t kMiscIntervalUsec = 1000 * 1000;
// How long Stop() may wait for the DISCONNECT packet to leave.
constexpr int kDisconnectFlushMs = 1000;

void InitLibraryOnce() {
  // Not thread-safe in libmosquitto itself; call_once makes it so. Never
  // cleaned up: other sessions (or test probes) may live until exit.
  static std::once_flag once;
  std::call_once(once, [] { mosquitto_lib_init(); });
}

// Reconnect delays: uniform in [min, min(max, min * 2^n)] after n failed
// attempts in a row, so the first retry waits exactly reconnect_min_ms and
// a fleet that lost the broker together spreads out as the ceiling grows.
BackoffPolicy ReconnectPolicy(const MqttOptions& o) {
  BackoffPolicy p;
  p.initial = std::chrono::milliseconds(o.reconnect_min_ms);
  p.floor = p.initial;
  p.max = std::chrono::milliseconds(o.reconnect_max_ms);
  p.multiplier = 2.0;
  p.jitter = 1.0;
  return p;
}

uint64_t NowUsec() { return static_cast<uint64_t>(MonotonicNs() / 1000); }

int64_t NowMs() { return static_cast<int64_t>(NowUsec() / 1000); }

std::string Format(const char* format, ...)
    __attribute__((format(printf, 1, 2)));
std::string Format(const char* format, ...) {
  char buf[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buf, sizeof(buf), format, args);
  va_end(args);
  return buf;
}

// "Not authorized" -> "not authorized", so reasons read inside a sentence.
std::string Sentence(const char* text) {
  std::string s = text ? text : "";
  while (!s.empty() && (s.back() == '.' || s.back() == ' ')) s.pop_back();
  if (s.size() > 1 && std::isupper(static_cast<unsigned char>(s[0])) &&
      std::islower(static_cast<unsigned char>(s[1]))) {
    s[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[0])));
  }
  return s;
}

Status CheckReadable(const char* option, const std::string& path) {
  if (path.empty()) return Status::Ok();
  if (access(path.c_str(), R_OK) != 0) {
    return InvalidArgument("MQTT option %s: cannot read '%s': %s", option,
                           path.c_str(), strerror(errno));
  }
  return Status::Ok();
}

}  // namespace

const char* MqttStateName(MqttState state) {
  switch (state) {
    case MqttState::kDisconnected:
      return "disconnected";
    case MqttState::kConnecting:
      return "connecting";
    case MqttState::kConnected:
      return "connected";
    case MqttState::kStopped:
      return "stopped";
  }
  return "unknown";
}

class MqttSession::Impl {
 public:
  Impl(sd_event* loop, MqttOptions options, uint64_t seed)
      : loop_(sd_event_ref(loop)),
        options_(std::move(options)),
        will_(options_.will),
        backoff_(ReconnectPolicy(options_), Backoff::Seeded(seed)),
        peer_(Format("%s:%d", options_.host.c_str(), options_.port)) {}

  ~Impl() {
    StopInternal(/*notify=*/false);
    reconnect_timer_.reset();
    misc_timer_.reset();
    sd_event_unref(loop_);
  }

  void Start();
  void Stop() { StopInternal(/*notify=*/true); }
  void AddObserver(MqttCallbacks callbacks) {
    observers_.push_back(std::move(callbacks));
  }
  void Subscribe(const std::string& filter, int qos);
  void SetWill(std::optional<MqttWill> will);
  Result<int> Publish(const std::string& topic, std::string_view payload,
                      int qos, bool retain);

  MqttState state() const { return state_; }
  uint32_t inflight() const { return static_cast<uint32_t>(inflight_.size()); }
  uint64_t connects() const { return connects_; }
  uint64_t reconnects() const { return reconnects_; }
  const std::string& last_error() const { return last_error_; }
  uint64_t io_wakeups() const { return io_wakeups_; }

 private:
  // Keeps libmosquitto handles alive while the library is on the stack: a
  // handle retired from inside one of its callbacks is destroyed when the
  // outermost guard ends.
  class CallGuard {
   public:
    explicit CallGuard(Impl* impl) : impl_(impl) { ++impl_->depth_; }
    ~CallGuard() {
      if (--impl_->depth_ == 0) impl_->DestroyRetired();
    }
    CallGuard(const CallGuard&) = delete;
    CallGuard& operator=(const CallGuard&) = delete;

   private:
    Impl* impl_;
  };

  struct Retired {
    mosquitto* mosq;
    bool flush;  // send the queued DISCONNECT first
  };

  // libmosquitto callbacks; `obj` is the Impl.
  static void OnConnect(mosquitto* m, void* obj, int rc, int flags,
                        const mosquitto_property* props);
  static void OnDisconnect(mosquitto* m, void* obj, int rc,
                           const mosquitto_property* props);
  static void OnPublish(mosquitto* m, void* obj, int library_mid, int reason,
                        const mosquitto_property* props);
  static void OnMessage(mosquitto* m, void* obj, const mosquitto_message* msg,
                        const mosquitto_property* props);
  static void OnSubscribe(mosquitto* m, void* obj, int mid, int count,
                          const int* granted, const mosquitto_property* props);
  static void OnLog(mosquitto* m, void* obj, int level, const char* text);
  // sd-event callbacks.
  static int OnIo(sd_event_source* s, int fd, uint32_t revents, void* obj);
  static int OnMiscTimer(sd_event_source* s, uint64_t usec, void* obj);
  static int OnReconnectTimer(sd_event_source* s, uint64_t usec, void* obj);

  void StopInternal(bool notify);
  void BeginAttempt();
  Status ConfigureHandle(mosquitto* m);
  void RegisterSocket();
  void HandleIo(int fd, uint32_t revents);
  void ReadAll(mosquitto* m);
  void CheckSocketAlive(mosquitto* m);
  void ConnectionLost(const std::string& why);
  void RetireHandle(bool flush);
  void DestroyRetired();
  void UpdateIoEvents();
  bool NeedWrite();
  SSL* Ssl() const {
    return mosq_ && options_.tls ? static_cast<SSL*>(mosquitto_ssl_get(mosq_))
                                 : nullptr;
  }
  std::string DescribeLoss(int rc) const;
  void ArmMiscTimer();
  void SendSubscription(const std::string& filter, int qos);
  void FailInflight();

  sd_event* loop_;
  MqttOptions options_;
  std::optional<MqttWill> will_;
  Backoff backoff_;
  const std::string peer_;               // "host:port" for messages
  std::deque<MqttCallbacks> observers_;  // references stay valid on growth
  std::vector<std::pair<std::string, int>> subscriptions_;

  MqttState state_ = MqttState::kStopped;
  mosquitto* mosq_ = nullptr;  // the current attempt's handle
  std::vector<Retired> retired_;
  int depth_ = 0;
  EventSource io_;
  EventSource misc_timer_;
  EventSource reconnect_timer_;

  // Per attempt.
  bool tcp_up_ = false;
  bool write_stalled_ = false;
  int64_t connect_deadline_ms_ = 0;
  std::string refusal_;          // from a CONNACK >= 0x80
  std::string tls_error_;        // from libmosquitto's OpenSSL error log
  std::map<int, int> inflight_;  // libmosquitto mid -> session message id
  std::map<int, std::string> pending_subacks_;
  int next_message_id_ = 1;

  uint64_t connects_ = 0;
  uint64_t reconnects_ = 0;
  uint64_t io_wakeups_ = 0;
  std::string last_error_;
};

// Starting and stopping -------------------------------------------------------

void MqttSession::Impl::Start() {
  if (state_ != MqttState::kStopped) return;
  backoff_.Reset();
  ArmMiscTimer();
  BeginAttempt();
}

void MqttSession::Impl::StopInternal(bool notify) {
  if (state_ == MqttState::kStopped) return;
  const bool was_connected = state_ == MqttState::kConnected;
  state_ = MqttState::kStopped;
  reconnect_timer_.reset();
  misc_timer_.reset();
  if (mosq_) {
    CallGuard guard(this);
    bool flush = false;
    if (was_connected) {
      // Reason 0: the broker discards the will.
      flush = mosquitto_disconnect_v5(mosq_, MQTT_RC_NORMAL_DISCONNECTION,
                                      nullptr) == MOSQ_ERR_SUCCESS;
    }
    RetireHandle(flush);
  }
  TERND_LOG_INFO("mqtt: session to %s stopped", peer_.c_str());
  if (!notify) {
    inflight_.clear();
    return;
  }
  FailInflight();
  if (was_connected) {
    for (size_t i = 0; i < observers_.size(); ++i) {
      if (observers_[i].on_disconnected)
        observers_[i].on_disconnected("stopped");
    }
  }
}

void MqttSession::Impl::ArmMiscTimer() {
  if (misc_timer_) {
    sd_event_source_set_enabled(misc_timer_.get(), SD_EVENT_ON);
    return;
  }
  sd_event_source* s = nullptr;
  const int r =
      sd_event_add_time_relative(loop_, &s, CLOCK_MONOTONIC, kMiscIntervalUsec,
                                 0, &Impl::OnMiscTimer, this);
  if (r < 0) {
    // Only fails on memory exhaustion; keepalives then stop and the broker
    // drops the connection, which the socket reports.
    TERND_LOG_ERROR("mqtt: cannot add the keepalive timer: %s", strerror(-r));
    return;
  }
  sd_event_source_set_description(s, "mqtt-misc");
  sd_event_source_set_enabled(s, SD_EVENT_ON);
  misc_timer_.reset(s);
}

void MqttSession::Impl::BeginAttempt() {
  CallGuard guard(this);
  RetireHandle(false);
  tcp_up_ = false;
  write_stalled_ = false;
  refusal_.clear();
  tls_error_.clear();
  pending_subacks_.clear();
  state_ = MqttState::kConnecting;
  connect_deadline_ms_ = NowMs() + options_.connect_timeout_ms;

  mosquitto* m = mosquitto_new(
      options_.client_id.empty() ? nullptr : options_.client_id.c_str(),
      /*clean_session=*/options_.clean_start, this);
  if (!m) {
    ConnectionLost(Format("cannot create an MQTT client for %s: %s",
                          peer_.c_str(), strerror(errno)));
    return;
  }
  mosq_ = m;
  Status status = ConfigureHandle(m);
  if (!status.ok()) {
    ConnectionLost(status.message());
    return;
  }
  TERND_LOG_DEBUG("mqtt: connecting to %s as '%s'", peer_.c_str(),
                  options_.client_id.c_str());
  errno = 0;
  const int rc = mosquitto_connect_async(
      m, options_.host.c_str(), options_.port, options_.keepalive_seconds);
  const int saved_errno = errno;
  if (m != mosq_) return;
  if (rc != MOSQ_ERR_SUCCESS) {
    if (rc == MOSQ_ERR_ERRNO && saved_errno == EPROTO && options_.tls) {
      ConnectionLost(
          Format("TLS handshake with %s failed: %s", peer_.c_str(),
                 tls_error_.empty() ? "protocol error" : tls_error_.c_str()));
    } else if (rc == MOSQ_ERR_ERRNO) {
      ConnectionLost(Format("connecting to %s failed: %s", peer_.c_str(),
                            strerror(saved_errno)));
    } else if (rc == MOSQ_ERR_EAI) {
      ConnectionLost(Format("connecting to %s failed: cannot resolve '%s'",
                            peer_.c_str(), options_.host.c_str()));
    } else if (!tls_error_.empty()) {
      ConnectionLost(Format("TLS handshake with %s failed: %s", peer_.c_str(),
                            tls_error_.c_str()));
    } else {
      ConnectionLost(Format("connecting to %s failed: %s", peer_.c_str(),
                            Sentence(mosquitto_strerror(rc)).c_str()));
    }
    return;
  }
  RegisterSocket();
  UpdateIoEvents();
}

Status MqttSession::Impl::ConfigureHandle(mosquitto* m) {
  mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
  // libmosquitto writes whole packets: Nagle would only hold back the tail
  // of a large publish until the broker's delayed ACK (40 ms on Linux).
  mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
  mosquitto_connect_v5_callback_set(m, &Impl::OnConnect);
  mosquitto_disconnect_v5_callback_set(m, &Impl::OnDisconnect);
  mosquitto_publish_v5_callback_set(m, &Impl::OnPublish);
  mosquitto_message_v5_callback_set(m, &Impl::OnMessage);
  mosquitto_subscribe_v5_callback_set(m, &Impl::OnSubscribe);
  mosquitto_log_callback_set(m, &Impl::OnLog);
  if (options_.tls) {
    auto opt = [](const std::string& s) {
      return s.empty() ? nullptr : s.c_str();
    };
    const int rc = mosquitto_tls_set(m, opt(options_.ca_file), nullptr,
                                     opt(options_.cert_file),
                                     opt(options_.key_file), nullptr);
    if (rc != MOSQ_ERR_SUCCESS) {
      return Errorf(StatusCode::kInvalidArgument,
                    "TLS setup for %s failed (ca_file '%s', cert_file '%s', "
                    "key_file '%s'): %s",
                    peer_.c_str(), options_.ca_file.c_str(),
                    options_.cert_file.c_str(), options_.key_file.c_str(),
                    Sentence(mosquitto_strerror(rc)).c_str());
    }
    if (options_.ca_file.empty()) {
      mosquitto_int_option(m, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
    }
  }
  // CONNECT's Maximum Packet Size. libmosquitto 2.0 has no asynchronous
  // connect taking v5 properties, but mosquitto_connect_bind_v5() copies its
  // properties into the handle, for every later connect of that handle,
  // before it checks the host: called without one, it keeps them and
  // returns MOSQ_ERR_INVAL without touching the network. The integration
  // test BrokerDeliversNothingOverTheMaximumPacket checks that the broker
  // saw it.
  mosquitto_property* props = nullptr;
  int prc = mosquitto_property_add_int32(&props, MQTT_PROP_MAXIMUM_PACKET_SIZE,
                                         options_.max_packet_bytes);
  if (prc == MOSQ_ERR_SUCCESS && options_.session_expiry_s > 0) {
    prc = mosquitto_property_add_int32(
        &props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, options_.session_expiry_s);
  }
  if (prc == MOSQ_ERR_SUCCESS) {
    prc = mosquitto_connect_bind_v5(m, nullptr, options_.port,
                                    options_.keepalive_seconds, nullptr, props);
  }
  mosquitto_property_free_all(&props);
  if (prc != MOSQ_ERR_INVAL) {
    return Errorf(StatusCode::kInternal,
                  "cannot announce the maximum packet size (%u bytes) to %s: "
                  "%s",
                  options_.max_packet_bytes, peer_.c_str(),
                  Sentence(mosquitto_strerror(prc)).c_str());
  }
  if (!options_.username.empty()) {
    // The password goes to libmosquitto only; it is never logged.
    mosquitto_username_pw_set(
        m, options_.username.c_str(),
        options_.password.empty() ? nullptr : options_.password.c_str());
  }
  if (will_) {
    const int rc = mosquitto_will_set_v5(
        m, will_->topic.c_str(), static_cast<int>(will_->payload.size()),
        will_->payload.data(), will_->qos, will_->retain, nullptr);
    if (rc != MOSQ_ERR_SUCCESS) {
      return Errorf(StatusCode::kInvalidArgument,
                    "MQTT will on topic '%s' refused: %s", will_->topic.c_str(),
                    Sentence(mosquitto_strerror(rc)).c_str());
    }
  }
  return Status::Ok();
}

void MqttSession::Impl::RegisterSocket() {
  io_.reset();
  const int fd = mosquitto_socket(mosq_);
  if (fd < 0) return;
  // The loop watches a duplicate: libmosquitto closes its own descriptor
  // before on_disconnect runs, and the number may be reused by then. The
  // duplicate keeps the registration valid until this session drops it.
  const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) {
    ConnectionLost(Format("cannot watch the connection to %s: %s",
                          peer_.c_str(), strerror(errno)));
    return;
  }
  sd_event_source* s = nullptr;
  const int r = sd_event_add_io(loop_, &s, copy, EPOLLIN, &Impl::OnIo, this);
  if (r < 0) {
    close(copy);
    ConnectionLost(Format("cannot watch the connection to %s: %s",
                          peer_.c_str(), strerror(-r)));
    return;
  }
  sd_event_source_set_io_fd_own(s, 1);
  sd_event_source_set_description(s, "mqtt-socket");
  io_.reset(s);
}

void MqttSession::Impl::RetireHandle(bool flush) {
  io_.reset();
  if (!mosq_) return;
  retired_.push_back({mosq_, flush});
  mosq_ = nullptr;
  if (depth_ == 0) DestroyRetired();
}

void MqttSession::Impl::DestroyRetired() {
  std::vector<Retired> retired;
  retired.swap(retired_);
  for (const Retired& r : retired) {
    if (r.flush) {
      // Push the DISCONNECT out (libmosquitto closes the socket once it has
      // been written), waiting at most kDisconnectFlushMs.
      const int64_t end = NowMs() + kDisconnectFlushMs;
      for (;;) {
        const int fd = mosquitto_socket(r.mosq);
        if (fd < 0 || !mosquitto_want_write(r.mosq)) break;
        const int64_t left = end - NowMs();
        if (left <= 0) break;
        struct pollfd p = {fd, POLLOUT, 0};
        if (poll(&p, 1, static_cast<int>(left)) < 0 && errno != EINTR) break;
        ++depth_;
        const int rc = mosquitto_loop_write(r.mosq, 1);
        --depth_;
        if (rc != MOSQ_ERR_SUCCESS) break;
      }
    }
    mosquitto_destroy(r.mosq);
  }
}

// Losing the connection -------------------------------------------------------

void MqttSession::Impl::FailInflight() {
  std::map<int, int> failed;
  failed.swap(inflight_);
  for (const auto& [library_mid, mid] : failed) {
    for (size_t i = 0; i < observers_.size(); ++i) {
      if (observers_[i].on_publish_done) observers_[i].on_publish_done(mid, -1);
    }
  }
}

void MqttSession::Impl::ConnectionLost(const std::string& why) {
  if (state_ == MqttState::kStopped || state_ == MqttState::kDisconnected) {
    return;
  }
  const bool was_connected = state_ == MqttState::kConnected;
  RetireHandle(false);
  state_ = MqttState::kDisconnected;
  last_error_ = why;
  const int delay_ms = static_cast<int>(backoff_.Next().count());
  if (was_connected) {
    TERND_LOG_WARNING("mqtt: %s; reconnecting in %d ms", why.c_str(), delay_ms);
  } else {
    TERND_LOG_NOTICE("mqtt: %s; retrying in %d ms", why.c_str(), delay_ms);
  }
  FailInflight();
  for (size_t i = 0; i < observers_.size(); ++i) {
    if (state_ != MqttState::kDisconnected) break;  // an observer stopped us
    if (observers_[i].on_disconnected) observers_[i].on_disconnected(why);
  }
  if (state_ != MqttState::kDisconnected) return;  // stopped or restarted
  // Armed after the observers ran and from the clock, not from the loop's
  // cached iteration time, so the next attempt starts at least `delay_ms`
  // after this failure was reported even when this iteration ran late.
  const uint64_t when = NowUsec() + static_cast<uint64_t>(delay_ms) * 1000;
  if (reconnect_timer_) {
    sd_event_source_set_time(reconnect_timer_.get(), when);
    sd_event_source_set_enabled(reconnect_timer_.get(), SD_EVENT_ONESHOT);
    return;
  }
  sd_event_source* s = nullptr;
  // 1 ms accuracy: the default (250 ms) would swamp short backoffs.
  const int r = sd_event_add_time(loop_, &s, CLOCK_MONOTONIC, when, 1000,
                                  &Impl::OnReconnectTimer, this);
  if (r < 0) {
    TERND_LOG_ERROR("mqtt: cannot add the reconnect timer: %s", strerror(-r));
    return;
  }
  sd_event_source_set_description(s, "mqtt-reconnect");
  reconnect_timer_.reset(s);
}

std::string MqttSession::Impl::DescribeLoss(int rc) const {
  if (!refusal_.empty()) return refusal_;
  if (!tls_error_.empty()) {
    if (state_ == MqttState::kConnected) {
      return Format("TLS error on the connection to %s: %s", peer_.c_str(),
                    tls_error_.c_str());
    }
    return Format("TLS handshake with %s failed: %s", peer_.c_str(),
                  tls_error_.c_str());
  }
  // A broker's DISCONNECT carries an MQTT v5 reason code (>= 0x80);
  // libmosquitto's own errors are small numbers.
  if (rc >= 0x80) {
    return Format("broker %s closed the connection: %s", peer_.c_str(),
                  Sentence(mosquitto_reason_string(rc)).c_str());
  }
  const int saved_errno = errno;
  if (options_.tls && state_ == MqttState::kConnecting &&
      (rc == MOSQ_ERR_TLS || rc == MOSQ_ERR_PROTOCOL ||
       (rc == MOSQ_ERR_ERRNO && saved_errno == EPROTO))) {
    // libmosquitto reports a TLS failure without OpenSSL's reason this way
    // (e.g. the broker reset the connection right after its alert).
    return Format("TLS handshake with %s failed: protocol error",
                  peer_.c_str());
  }
  switch (rc) {
    case MOSQ_ERR_KEEPALIVE:
      return Format("no answer from %s within the keepalive (%d s)",
                    peer_.c_str(), options_.keepalive_seconds);
    case MOSQ_ERR_CONN_LOST:
    case MOSQ_ERR_SUCCESS:
      return Format("connection to %s lost", peer_.c_str());
    case MOSQ_ERR_ERRNO:
      return Format("connection to %s lost: %s", peer_.c_str(),
                    strerror(saved_errno));
    default:
      return Format("connection to %s lost: %s", peer_.c_str(),
                    Sentence(mosquitto_strerror(rc)).c_str());
  }
}

// libmosquitto callbacks ------------------------------------------------------

void MqttSession::Impl::OnConnect(mosquitto* m, void* obj, int rc, int,
                                  const mosquitto_property*) {
  auto* self = static_cast<Impl*>(obj);
  if (m != self->mosq_ || self->state_ != MqttState::kConnecting) return;
  if (rc != 0) {
    // libmosquitto closes the connection right after this callback.
    self->refusal_ =
        Format("connection refused by broker %s: %s", self->peer_.c_str(),
               Sentence(mosquitto_reason_string(rc)).c_str());
    return;
  }
  self->state_ = MqttState::kConnected;
  ++self->connects_;
  self->backoff_.Reset();
  TERND_LOG_INFO("mqtt: connected to %s as '%s' (connection %llu)",
                 self->peer_.c_str(), self->options_.client_id.c_str(),
                 static_cast<unsigned long long>(self->connects_));
  for (const auto& [filter, qos] : self->subscriptions_) {
    self->SendSubscription(filter, qos);
  }
  for (size_t i = 0; i < self->observers_.size(); ++i) {
    if (self->state_ != MqttState::kConnected) break;
    if (self->observers_[i].on_connected) self->observers_[i].on_connected();
  }
}

void MqttSession::Impl::OnDisconnect(mosquitto* m, void* obj, int rc,
                                     const mosquitto_property*) {
  auto* self = static_cast<Impl*>(obj);
  if (m != self->mosq_) return;
  self->ConnectionLost(self->DescribeLoss(rc));
}

void MqttSession::Impl::OnPublish(mosquitto* m, void* obj, int library_mid,
                                  int reason, const mosquitto_property*) {
  auto* self = static_cast<Impl*>(obj);
  if (m != self->mosq_) return;
  auto it = self->inflight_.find(library_mid);
  if (it == self->inflight_.end()) return;  // QoS 0, or not ours
  const int mid = it->second;
  self->inflight_.erase(it);
  if (reason >= 0x80) {
    TERND_LOG_WARNING("mqtt: broker %s refused publish %d: %s",
                      self->peer_.c_str(), mid,
                      Sentence(mosquitto_reason_string(reason)).c_str());
  }
  for (size_t i = 0; i < self->observers_.size(); ++i) {
    if (self->observers_[i].on_publish_done) {
      self->observers_[i].on_publish_done(mid, reason);
    }
  }
}

void MqttSession::Impl::OnMessage(mosquitto* m, void* obj,
                                  const mosquitto_message* msg,
                                  const mosquitto_property*) {
  auto* self = static_cast<Impl*>(obj);
  if (m != self->mosq_ || !msg || !msg->topic) return;
  const std::string_view topic(msg->topic);
  const std::string_view payload(static_cast<const char*>(msg->payload),
                                 msg->payload ? msg->payloadlen : 0);
  if (payload.size() > self->options_.max_packet_bytes) {
    // The broker ignored the announced maximum.
    TERND_LOG_WARNING(
        "mqtt: %s: %zu bytes from %s, more than the %u bytes this client "
        "takes (max_packet_bytes); dropped",
        msg->topic, payload.size(), self->peer_.c_str(),
        self->options_.max_packet_bytes);
    return;
  }
  for (size_t i = 0; i < self->observers_.size(); ++i) {
    if (self->observers_[i].on_message) {
      self->observers_[i].on_message(topic, payload, msg->retain);
    }
  }
}

void MqttSession::Impl::OnSubscribe(mosquitto* m, void* obj, int mid, int count,
                                    const int* granted,
                                    const mosquitto_property*) {
  auto* self = static_cast<Impl*>(obj);
  if (m != self->mosq_) return;
  auto it = self->pending_subacks_.find(mid);
  if (it == self->pending_subacks_.end()) return;
  if (count >= 1 && granted && granted[0] >= 0x80) {
    TERND_LOG_WARNING("mqtt: broker %s refused the subscription to '%s': %s",
                      self->peer_.c_str(), it->second.c_str(),
                      Sentence(mosquitto_reason_string(granted[0])).c_str());
  }
  self->pending_subacks_.erase(it);
}

void MqttSession::Impl::OnLog(mosquitto* m, void* obj, int level,
                              const char* text) {
  auto* self = static_cast<Impl*>(obj);
  if (m != self->mosq_ || !text) return;
  if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) {
    TERND_LOG_DEBUG("mqtt: libmosquitto: %s", text);
  }
  // "OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify
  // failed": keep the first reason of an attempt for last_error().
  if (std::strncmp(text, "OpenSSL Error", 13) != 0 ||
      !self->tls_error_.empty()) {
    return;
  }
  const char* reason = std::strrchr(text, ':');
  self->tls_error_ = reason && reason[1] ? reason + 1 : text;
  while (!self->tls_error_.empty() && self->tls_error_[0] == ' ') {
    self->tls_error_.erase(0, 1);
  }
  if (SSL* ssl = static_cast<SSL*>(mosquitto_ssl_get(m))) {
    const long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
      self->tls_error_ +=
          Format(" (%s)", X509_verify_cert_error_string(verify));
    }
  }
}

// The socket ------------------------------------------------------------------

int MqttSession::Impl::OnIo(sd_event_source*, int fd, uint32_t revents,
                            void* obj) {
  static_cast<Impl*>(obj)->HandleIo(fd, revents);
  return 0;
}

void MqttSession::Impl::HandleIo(int fd, uint32_t revents) {
  CallGuard guard(this);
  ++io_wakeups_;
  mosquitto* m = mosq_;
  if (!m) return;
  const bool error = revents & (EPOLLERR | EPOLLHUP);
  if (state_ == MqttState::kConnecting && !tcp_up_ &&
      (revents & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof(peer);
    if (err == 0 &&
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) {
      // The TLS layer's first write already consumed the socket error.
      ConnectionLost(
          Format("connecting to %s failed: connection refused or "
                 "reset",
                 peer_.c_str()));
      return;
    }
    if (err != 0) {
      ConnectionLost(
          Format("connecting to %s failed: %s", peer_.c_str(), strerror(err)));
      return;
    }
    tcp_up_ = true;
  }
  // While connecting, both directions drive the TLS handshake (libmosquitto
  // continues it from loop_read).
  if ((revents & EPOLLIN) || error || state_ == MqttState::kConnecting) {
    ReadAll(m);
    if (m != mosq_) return;
  }
  if (revents & EPOLLOUT) {
    SSL* ssl = Ssl();
    BIO* wbio = ssl ? SSL_get_wbio(ssl) : nullptr;
    const uint64_t before = wbio ? BIO_number_written(wbio) : 0;
    const int rc = mosquitto_loop_write(m, 1);
    if (m != mosq_) return;
    if (rc != MOSQ_ERR_SUCCESS) {
      CheckSocketAlive(m);
      if (m != mosq_) return;
    }
    // libmosquitto's want_write flag for TLS is only cleared by a write, so
    // it can claim pending output when there is none; stop watching for
    // writability until something new is queued.
    if (wbio && SSL_is_init_finished(ssl)) {
      write_stalled_ =
          BIO_number_written(wbio) == before && !SSL_want_write(ssl);
    }
  }
  if (error && m == mosq_) {
    // The peer is gone but nothing reported it (e.g. a hang-up in the middle
    // of the TLS handshake, which libmosquitto retries forever).
    char byte;
    const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
      ConnectionLost(
          refusal_.empty() && tls_error_.empty()
              ? Format(
                    "connection to %s closed by the peer%s", peer_.c_str(),
                    state_ == MqttState::kConnecting ? " before CONNACK" : "")
              : DescribeLoss(MOSQ_ERR_CONN_LOST));
      return;
    }
  }
  if (m == mosq_) UpdateIoEvents();
}

void MqttSession::Impl::ReadAll(mosquitto* m) {
  // TLS may hold decrypted records that the socket no longer signals:
  // keep reading while OpenSSL has bytes pending.
  for (int i = 0; i < 4096; ++i) {
    errno = 0;
    const int rc = mosquitto_loop_read(m, 1);
    if (m != mosq_) return;
    if (rc != MOSQ_ERR_SUCCESS) {
      CheckSocketAlive(m);
      return;
    }
    write_stalled_ = false;  // reading may have queued acknowledgements
    SSL* ssl = Ssl();
    if (!ssl || SSL_pending(ssl) <= 0) return;
  }
}

void MqttSession::Impl::CheckSocketAlive(mosquitto* m) {
  // libmosquitto normally reports a closed socket through on_disconnect; a
  // few paths (TLS errors during the handshake) close it silently.
  if (m == mosq_ && mosquitto_socket(m) < 0) {
    ConnectionLost(DescribeLoss(MOSQ_ERR_CONN_LOST));
  }
}

bool MqttSession::Impl::NeedWrite() {
  if (!mosq_) return false;
  if (state_ == MqttState::kConnecting && !tcp_up_) return true;
  SSL* ssl = Ssl();
  if (ssl && !SSL_is_init_finished(ssl)) return SSL_want_write(ssl);
  if (!mosquitto_want_write(mosq_)) return false;
  return !(ssl && write_stalled_);
}

void MqttSession::Impl::UpdateIoEvents() {
  if (!io_) return;
  uint32_t events = EPOLLIN;
  if (NeedWrite()) events |= EPOLLOUT;
  sd_event_source_set_io_events(io_.get(), events);
}

// Timers ----------------------------------------------------------------------

int MqttSession::Impl::OnMiscTimer(sd_event_source* s, uint64_t, void* obj) {
  auto* self = static_cast<Impl*>(obj);
  sd_event_source_set_time_relative(s, kMiscIntervalUsec);
  sd_event_source_set_enabled(s, SD_EVENT_ON);
  if (!self->mosq_) return 0;
  CallGuard guard(self);
  mosquitto* m = self->mosq_;
  if (self->state_ == MqttState::kConnecting &&
      NowMs() >= self->connect_deadline_ms_) {
    self->ConnectionLost(self->tls_error_.empty()
                             ? Format("no CONNACK from %s within %d ms",
                                      self->peer_.c_str(),
                                      self->options_.connect_timeout_ms)
                             : self->DescribeLoss(MOSQ_ERR_CONN_LOST));
    return 0;
  }
  if (self->state_ == MqttState::kConnected) {
    mosquitto_loop_misc(m);  // PINGREQ, or closes after a missed PINGRESP
    if (m != self->mosq_) return 0;
    self->write_stalled_ = false;
    self->CheckSocketAlive(m);
    if (m != self->mosq_) return 0;
    self->UpdateIoEvents();
  }
  return 0;
}

int MqttSession::Impl::OnReconnectTimer(sd_event_source*, uint64_t, void* obj) {
  auto* self = static_cast<Impl*>(obj);
  if (self->state_ != MqttState::kDisconnected) return 0;
  ++self->reconnects_;
  self->BeginAttempt();
  return 0;
}

// Subscriptions, will and publishing -----------------------------------------

void MqttSession::Impl::SendSubscription(const std::string& filter, int qos) {
  int mid = 0;
  const int rc =
      mosquitto_subscribe_v5(mosq_, &mid, filter.c_str(), qos, 0, nullptr);
  if (rc != MOSQ_ERR_SUCCESS) {
    TERND_LOG_WARNING("mqtt: cannot subscribe to '%s' on %s: %s",
                      filter.c_str(), peer_.c_str(),
                      Sentence(mosquitto_strerror(rc)).c_str());
    return;
  }
  pending_subacks_[mid] = filter;
  write_stalled_ = false;
}

void MqttSession::Impl::Subscribe(const std::string& filter, int qos) {
  if (qos < 0 || qos > 2 ||
      mosquitto_sub_topic_check2(filter.data(), filter.size()) !=
          MOSQ_ERR_SUCCESS ||
      filter.find('\0') != std::string::npos) {
    TERND_LOG_ERROR("mqtt: not subscribing to '%s' with QoS %d: invalid",
                    filter.c_str(), qos);
    return;
  }
  bool found = false;
  for (auto& [f, q] : subscriptions_) {
    if (f == filter) {
      q = qos;
      found = true;
    }
  }
  if (!found) subscriptions_.emplace_back(filter, qos);
  if (state_ == MqttState::kConnected) {
    CallGuard guard(this);
    SendSubscription(filter, qos);
    UpdateIoEvents();
  }
}

void MqttSession::Impl::SetWill(std::optional<MqttWill> will) {
  if (will &&
      (will->qos < 0 || will->qos > 2 ||
       mosquitto_pub_topic_check2(will->topic.data(), will->topic.size()) !=
           MOSQ_ERR_SUCCESS)) {
    TERND_LOG_ERROR(
        "mqtt: will on '%s' with QoS %d is invalid; keeping the "
        "previous one",
        will->topic.c_str(), will->qos);
    return;
  }
  will_ = std::move(will);
}

Result<int> MqttSession::Impl::Publish(const std::string& topic,
                                       std::string_view payload, int qos,
                                       bool retain) {
  if (qos != 0 && qos != 1) {
    return InvalidArgument(
        "MQTT publish to '%s': QoS %d is not supported "
        "(expected 0 or 1)",
        topic.c_str(), qos);
  }
  if (state_ != MqttState::kConnected) {
    return Errorf(StatusCode::kUnavailable,
                  "MQTT session to %s is %s: not publishing to '%s'",
                  peer_.c_str(), MqttStateName(state_), topic.c_str());
  }
  if (qos == 1 && inflight_.size() >= options_.max_inflight) {
    return ResourceExhausted(
        "MQTT session to %s has %zu unacknowledged QoS 1 publishes "
        "(max_inflight %u): not publishing to '%s'",
        peer_.c_str(), inflight_.size(), options_.max_inflight, topic.c_str());
  }
  if (payload.size() > static_cast<size_t>(MQTT_MAX_PAYLOAD)) {
    return InvalidArgument(
        "MQTT publish to '%s': payload of %zu bytes is "
        "larger than MQTT allows (%u)",
        topic.c_str(), payload.size(), static_cast<unsigned>(MQTT_MAX_PAYLOAD));
  }
  CallGuard guard(this);
  mosquitto* m = mosq_;
  int library_mid = 0;
  errno = 0;
  const int rc = mosquitto_publish_v5(m, &library_mid, topic.c_str(),
                                      static_cast<int>(payload.size()),
                                      payload.data(), qos, retain, nullptr);
  switch (rc) {
    case MOSQ_ERR_SUCCESS:
      break;
    case MOSQ_ERR_INVAL:
    case MOSQ_ERR_MALFORMED_UTF8:
    case MOSQ_ERR_QOS_NOT_SUPPORTED:
    case MOSQ_ERR_PAYLOAD_SIZE:
    case MOSQ_ERR_OVERSIZE_PACKET:
    case MOSQ_ERR_NOT_SUPPORTED:
      return InvalidArgument(
          "MQTT publish of %zu bytes to '%s' on %s "
          "refused: %s",
          payload.size(), topic.c_str(), peer_.c_str(),
          Sentence(mosquitto_strerror(rc)).c_str());
    default:
      // The write failed; the read side reports the loss. The message may
      // or may not have left: QoS 1 is at-least-once, the caller retries.
      return Errorf(
          StatusCode::kUnavailable, "MQTT publish to '%s' on %s failed: %s",
          topic.c_str(), peer_.c_str(),
          rc == MOSQ_ERR_ERRNO ? strerror(errno)
                               : Sentence(mosquitto_strerror(rc)).c_str());
  }
  // Ids unique for the session's lifetime (libmosquitto's restart at 1 with
  // every connection); positive, wrapping after 2^31 - 1.
  const int mid = next_message_id_;
  next_message_id_ = next_message_id_ == INT_MAX ? 1 : next_message_id_ + 1;
  if (qos == 1) inflight_[library_mid] = mid;
  write_stalled_ = false;
  if (m == mosq_) UpdateIoEvents();
  return mid;
}

// MqttSession -----------------------------------------------------------------

Result<std::unique_ptr<MqttSession>> MqttSession::Create(sd_event* loop,
                                                         MqttOptions options) {
  if (!loop) return InvalidArgument("MQTT session: no event loop");
  if (options.host.empty()) return InvalidArgument("MQTT option host is empty");
  if (options.port < 1 || options.port > 65535) {
    return InvalidArgument("MQTT option port: %d is not in 1..65535",
                           options.port);
  }
  if (options.keepalive_seconds < 5 || options.keepalive_seconds > 65535) {
    return InvalidArgument(
        "MQTT option keepalive_seconds: %d is not in 5..65535",
        options.keepalive_seconds);
  }
  if (options.reconnect_min_ms < 1 ||
      options.reconnect_max_ms < options.reconnect_min_ms) {
    return InvalidArgument(
        "MQTT options reconnect_min_ms %d and reconnect_max_ms %d: expected "
        "1 <= reconnect_min_ms <= reconnect_max_ms",
        options.reconnect_min_ms, options.reconnect_max_ms);
  }
  if (options.connect_timeout_ms < 100) {
    return InvalidArgument("MQTT option connect_timeout_ms: %d is below 100",
                           options.connect_timeout_ms);
  }
  if (options.max_packet_bytes < 1024 || options.max_packet_bytes > 268435455) {
    return InvalidArgument(
        "MQTT option max_packet_bytes: %u is not in 1024..268435455",
        options.max_packet_bytes);
  }
  if (!options.clean_start && options.client_id.empty()) {
    return InvalidArgument(
        "MQTT option clean_start is false but client_id is empty: a session "
        "can only be resumed under a fixed client id");
  }
  if (options.max_inflight < 1 || options.max_inflight > 65535) {
    return InvalidArgument("MQTT option max_inflight: %u is not in 1..65535",
                           options.max_inflight);
  }
  if (options.client_id.size() > 65535) {
    return InvalidArgument("MQTT option client_id: %zu bytes is too long",
                           options.client_id.size());
  }
  if (options.password.size() && options.username.empty()) {
    return InvalidArgument(
        "MQTT options: a password is set but no username (MQTT sends a "
        "password only with a username)");
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    return InvalidArgument(
        "MQTT options cert_file '%s' and key_file '%s': give both or neither",
        options.cert_file.c_str(), options.key_file.c_str());
  }
  if (!options.tls &&
      (!options.ca_file.empty() || !options.cert_file.empty())) {
    return InvalidArgument(
        "MQTT options: ca_file or cert_file is set but tls is off");
  }
  TERND_RETURN_IF_ERROR(CheckReadable("ca_file", options.ca_file));
  TERND_RETURN_IF_ERROR(CheckReadable("cert_file", options.cert_file));
  TERND_RETURN_IF_ERROR(CheckReadable("key_file", options.key_file));
  if (options.will) {
    const MqttWill& w = *options.will;
    if (w.qos < 0 || w.qos > 2 ||
        mosquitto_pub_topic_check2(w.topic.data(), w.topic.size()) !=
            MOSQ_ERR_SUCCESS) {
      return InvalidArgument(
          "MQTT option will: topic '%s' with QoS %d is not "
          "a valid will",
          w.topic.c_str(), w.qos);
    }
  }
  InitLibraryOnce();
  uint64_t seed = options.backoff_seed;
  if (seed == 0) {
    std::random_device device;
    seed = (static_cast<uint64_t>(device()) << 32) ^ device();
  }
  auto impl = std::make_unique<Impl>(loop, std::move(options), seed);
  return std::unique_ptr<MqttSession>(new MqttSession(std::move(impl)));
}

MqttSession::MqttSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MqttSession::~MqttSession() = default;

void MqttSession::Start() { impl_->Start(); }
void MqttSession::Stop() { impl_->Stop(); }
void MqttSession::AddObserver(MqttCallbacks callbacks) {
  impl_->AddObserver(std::move(callbacks));
}
void MqttSession::Subscribe(const std::string& topic_filter, int qos) {
  impl_->Subscribe(topic_filter, qos);
}
void MqttSession::SetWill(std::optional<MqttWill> will) {
  impl_->SetWill(std::move(will));
}
Result<int> MqttSession::Publish(const std::string& topic,
                                 std::string_view payload, int qos,
                                 bool retain) {
  return impl_->Publish(topic, payload, qos, retain);
}
MqttState MqttSession::state() const { return impl_->state(); }
uint32_t MqttSession::inflight() const { return impl_->inflight(); }
uint64_t MqttSession::connects() const { return impl_->connects(); }
uint64_t MqttSession::reconnects() const { return impl_->reconnects(); }
const std::string& MqttSession::last_error() const {
  return impl_->last_error();
}
uint64_t MqttSession::io_wakeups() const { return impl_->io_wakeups(); }

}  // namespace ternd::net
