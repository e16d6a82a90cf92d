// One MQTT v5 session to the fleet broker, driven by the daemon's sd-event
// loop (libmosquitto with an external loop: no library threads).
//
// - TLS with the fleet CA and an optional device client certificate.
// - Own reconnect timer with exponential backoff and full jitter (the
//   library's reconnect delay only works with its own threads).
// - The socket fd is re-registered with the loop after every (re)connect;
//   writability is watched whenever mosquitto_want_write() says so; a timer
//   runs mosquitto_loop_misc() for keepalives.
// - Subscriptions are remembered and re-sent on every connect.
// - Incoming messages are capped at `max_packet_bytes`, which CONNECT
//   announces to the broker (docs/mqtt.md, "Message size").
// - Publishing is refused while disconnected and beyond `max_inflight`
//   unacknowledged QoS 1 messages, so libmosquitto's unbounded in-memory
//   queue never grows: callers keep their data (SQLite outbox) until
//   on_publish_done reports the broker's v5 reason code.
// - The Last Will can be changed between connections (session counter).
// - Passwords and key material are never logged.
//
// Life cycle: Create() validates the options and touches no network; Start()
// begins the first attempt (state kConnecting). Every failed attempt or lost
// connection calls on_disconnected, reports the in-flight publishes with -1,
// and arms the reconnect timer (state kDisconnected); the next attempt starts
// with a fresh libmosquitto handle, so nothing queued inside the library
// survives a connection. Stop() (or the destructor) sends DISCONNECT with
// reason 0, so the broker drops the will; a crash or a lost link makes the
// broker publish it. docs/mqtt.md describes the behaviour for operators.
//
// Thread-safety: everything runs on the loop's thread. Observers are called
// on that thread, possibly from inside libmosquitto's callbacks: they may call
// Publish(), Subscribe(), SetWill(), Stop() and Start(), but must not destroy
// the session.
#ifndef TERND_NET_MQTT_SESSION_H_
#define TERND_NET_MQTT_SESSION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"

typedef struct sd_event sd_event;

namespace ternd::net {

struct MqttWill {
  std::string topic;
  std::string payload;
  int qos = 1;
  bool retain = true;
};

struct MqttOptions {
  std::string host = "localhost";
  int port = 8883;
  std::string client_id;       // the device id
  bool tls = true;             // false only for tests and closed networks
  std::string ca_file;         // fleet CA (PEM); empty: the system store
  std::string cert_file;       // optional device client certificate (PEM)
  std::string key_file;        // and its key
  std::string username;        // optional
  std::string password;        // optional; never logged
  int keepalive_seconds = 30;  // 5 .. 65535
  int reconnect_min_ms = 500;  // first retry delay, >= 1
  int reconnect_max_ms = 60000;
  // An attempt that has no CONNACK after this long is abandoned (TCP or TLS
  // handshake stuck, silent broker).
  int connect_timeout_ms = 30000;
  uint32_t max_inflight = 16;  // unacknowledged QoS 1 publishes, 1 .. 65535
  // The largest MQTT packet this client takes, announced in CONNECT
  // (Maximum Packet Size): the broker drops a message that would not fit
  // instead of delivering it, and one that still arrives larger is dropped
  // here with a log line naming the topic. It must cover the largest message
  // a subscriber legitimately receives (a release manifest: at most about
  // 2.2 MiB, ota/trust.h). 1024 .. 268435455.
  uint32_t max_packet_bytes = uint32_t{4} << 20;
  // false: resume the broker's session for client_id (its subscriptions,
  // and the QoS 1 messages that arrived while this client was away) and
  // ask it to keep the session for session_expiry_s after a disconnect.
  // Needs a client_id. A subscriber that must not miss anything (ternctl
  // watch --db) uses it; the daemon keeps a clean start.
  bool clean_start = true;
  uint32_t session_expiry_s = 0;
  std::optional<MqttWill> will;
  // Seeds the reconnect jitter; 0: from std::random_device. Tests only.
  uint64_t backoff_seed = 0;
};

// kStopped: before Start() and after Stop(). kConnecting: an attempt is in
// progress (TCP, TLS, CONNECT/CONNACK). kConnected: CONNACK received.
// kDisconnected: waiting for the reconnect timer.
enum class MqttState { kDisconnected, kConnecting, kConnected, kStopped };
const char* MqttStateName(MqttState state);  // "connected", ...

struct MqttCallbacks {
  // After a successful CONNACK; subscriptions have been re-sent.
  std::function<void()> on_connected;
  // After losing (or failing to establish) the connection; `why` is for
  // logs and status ("connection refused: not authorized", ...).
  std::function<void(const std::string& why)> on_disconnected;
  std::function<void(std::string_view topic, std::string_view payload,
                     bool retained)>
      on_message;
  // A QoS 1 publish was acknowledged (PUBACK); `reason_code` is the MQTT v5
  // reason code: 0 success, 0x10 accepted but no matching subscribers,
  // >= 0x80 refused (e.g. 0x87 not authorized: the caller keeps its data).
  // Also called with `reason_code` -1 for every in-flight publish when the
  // connection drops before its PUBACK, or on Stop() (the caller retries it
  // later). QoS 0 publishes are not reported. `mid` is the id Publish()
  // returned: unique over the session's lifetime (not the MQTT packet id,
  // which restarts with every connection).
  std::function<void(int mid, int reason_code)> on_publish_done;
};

class MqttSession {
 public:
  static Result<std::unique_ptr<MqttSession>> Create(sd_event* loop,
                                                     MqttOptions options);
  ~MqttSession();  // disconnects cleanly (no will) and unregisters
  MqttSession(const MqttSession&) = delete;
  MqttSession& operator=(const MqttSession&) = delete;

  // Starts connecting in the background (never blocks the loop for long:
  // give a numeric host or one in /etc/hosts; DNS is resolved
  // synchronously by libmosquitto). Does nothing unless stopped.
  void Start();
  // Disconnects cleanly (DISCONNECT with reason 0: the broker discards the
  // will), reports in-flight publishes with -1 and, if it was connected,
  // calls on_disconnected("stopped"). Start() connects again.
  void Stop();

  // Adds an observer; every observer sees every event (each ignores the
  // topics and message ids it does not own). Add observers before Start().
  void AddObserver(MqttCallbacks callbacks);

  // Adds a subscription (sent now if connected, and on every connect). A
  // second call with the same filter replaces its QoS. An invalid filter is
  // logged and ignored; a filter the broker refuses (SUBACK >= 0x80) is
  // logged as a warning with the broker's reason.
  void Subscribe(const std::string& topic_filter, int qos);
  // Replaces the will used from the next connect on (std::nullopt: none).
  // An invalid topic or QoS is logged and the will is left unchanged.
  void SetWill(std::optional<MqttWill> will);

  // Publishes; returns the message id (see on_publish_done). Refused
  // (UNAVAILABLE) when not connected, (RESOURCE_EXHAUSTED) at max_inflight for
  // QoS 1, (INVALID_ARGUMENT) for QoS other than 0 and 1 or an invalid topic.
  Result<int> Publish(const std::string& topic, std::string_view payload,
                      int qos, bool retain);

  MqttState state() const;
  bool connected() const { return state() == MqttState::kConnected; }
  uint32_t inflight() const;
  uint64_t connects() const;    // successful connects so far
  uint64_t reconnects() const;  // connection attempts after a loss
  // Why the last attempt failed or the last connection ended, e.g. "TLS
  // handshake with 127.0.0.1:8883 failed: certificate verify failed (unable
  // to get local issuer certificate)"; empty until then. Kept after a later
  // successful connect.
  const std::string& last_error() const;
  // Socket wake-ups handled so far (diagnostics: an idle connection must
  // not spin the loop).
  uint64_t io_wakeups() const;


 private:
  class Impl;
  explicit MqttSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ternd::net

#endif  // TERND_NET_MQTT_SESSION_H_
