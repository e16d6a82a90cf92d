// The telemetry agent: every interval it samples the system probes, turns
// the registry into a TelemetryBatch, compresses it and appends it to the
// SQLite outbox in one transaction; while the MQTT session is connected it
// publishes the outbox in order (QoS 1, at most `max_inflight` of its own
// publishes unacknowledged) and deletes a row only when the broker's PUBACK
// carries a success reason code (< 0x80). A refusal (>= 0x80, e.g. 0x87
// not authorized) keeps the row, is logged and counted, and the outbox is
// retried after an exponential backoff. It also keeps the device's retained
// presence: a birth on every connect, the Last Will `offline` with the same
// session counter, and answers the harmless commands on
// `<prefix>/devices/<id>/cmd` (rebirth, flush).
//
// Wiring (daemon): own a Registry, create the MqttSession, then
//   auto agent = TelemetryAgent::Create(loop, session, &registry, state_dir,
//                                       identity, options);
// before session->Start() (it sets the will and subscribes); call
// agent->Shutdown() before tearing the session down. The session keeps the
// agent's callbacks (it cannot remove an observer): destroy the agent only
// when the loop dispatches nothing more for the session (after the loop
// has exited, or after destroying the session). With a null session the
// agent runs offline: batches accumulate in the outbox within its bounds.
//
// Thread-safety: everything but the registry's instruments runs on the
// loop's thread.
#ifndef TERND_TELEMETRY_AGENT_H_
#define TERND_TELEMETRY_AGENT_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/backoff.h"
#include "base/status.h"
#include "net/mqtt_session.h"
#include "telemetry/batch.h"
#include "telemetry/metrics.h"
#include "telemetry/outbox.h"
#include "telemetry/system_probes.h"

typedef struct sd_event sd_event;
typedef struct sd_event_source sd_event_source;

namespace ternd::telemetry {

// Defaults are the documented defaults of the `[telemetry]` config section
// (docs/telemetry.md).
struct TelemetryOptions {
  std::chrono::milliseconds interval{10000};  // one batch per interval
  // Topic prefix shared with the update code: <prefix>/devices/<id>/...
  std::string topic_prefix = "ternd/v1/default";
  // Empty: <state_dir>/telemetry.db.
  std::string outbox_path;
  OutboxLimits outbox;
  // Own cap on unacknowledged telemetry publishes (the session has its own,
  // shared cap too).
  uint32_t max_inflight = 8;
  // Backoff after the broker refuses a batch: after the n-th refusal in a
  // row, a pause between half and all of min(retry_max,
  // retry_min * 2^(n-1)); 1 <= retry_min <= retry_max.
  std::chrono::milliseconds retry_min{1000};
  std::chrono::milliseconds retry_max{60000};
  // Non-empty: the Prometheus text is written atomically to this file every
  // interval (node_exporter textfile collector; name it *.prom).
  std::string textfile_path;
  bool system_probes = true;
  ProbeRoots probe_roots;  // tests point these at fixtures
  int zstd_level = 3;
};

struct DeviceIdentity {
  std::string device_id;
  std::vector<std::string> groups;
  std::string daemon_version;
  std::vector<std::string> capabilities;  // e.g. "infer", "ota", "telemetry"
};

// When the batch after one due at `previous_due` (0: none yet) is due, at
// `now` (all CLOCK_MONOTONIC µs): interval after interval on a fixed grid,
// so N intervals take N x interval however long each batch took; intervals
// missed (a blocked loop, a suspend) are skipped, not made up in a burst.
uint64_t NextBatchDue(uint64_t previous_due, uint64_t interval_usec,
                      uint64_t now);

class TelemetryAgent {
 public:
  // The largest payload read on the command topic. Commands are a few bytes
  // (`rebirth`, `flush` or a small DeviceCommand); anything larger is
  // ignored before it is parsed or copied, with a warning naming the topic,
  // the size and this cap (docs/mqtt.md, "Message size").
  static constexpr size_t kMaxCommandBytes = 64 * 1024;

  // Opens the outbox, increments the boot epoch, registers the agent's own
  // metrics, sets the will and the command subscription on `session` (may
  // be null: offline) and arms the interval timer. `loop`, `session` and
  // `registry` must outlive the agent.
  static Result<std::unique_ptr<TelemetryAgent>> Create(
      sd_event* loop, net::MqttSession* session, Registry* registry,
      const std::string& state_dir, DeviceIdentity identity,
      TelemetryOptions options);
  ~TelemetryAgent();
  TelemetryAgent(const TelemetryAgent&) = delete;
  TelemetryAgent& operator=(const TelemetryAgent&) = delete;

  // The model now serving, for the presence birth (re-published if
  // connected and changed).
  void SetModel(const std::string& name, const std::string& version,
                const std::string& kernel);

  // Makes a batch now (as the timer would) and publishes what it can.
  Status Flush();
  // Publishes the presence birth again (if connected).
  void Rebirth();
  // A clean stop: makes a last batch of the interval so far (into the
  // outbox, published now if connected, else on the next run), then
  // publishes a retained `offline` presence (best effort, if connected),
  // since a clean disconnect sends no will.
  void Shutdown();

  // Local views of the registry (the Stats call, `ternctl stats`).
  std::string PrometheusText() const;
  std::string JsonText() const;

  uint64_t boot_epoch() const { return boot_epoch_; }
  uint64_t last_sequence() const { return sequence_; }
  uint64_t publish_failures() const { return publish_failures_->Value(); }
  const Outbox& outbox() const { return *outbox_; }
  const std::string& telemetry_topic() const { return telemetry_topic_; }
  const std::string& presence_topic() const { return presence_topic_; }
  const std::string& command_topic() const { return command_topic_; }

 private:
  TelemetryAgent() = default;
  static int OnTimer(sd_event_source* s, uint64_t usec, void* self);
  static int OnRetry(sd_event_source* s, uint64_t usec, void* self);
  void ArmTimer();
  uint64_t next_due_usec_ = 0;  // CLOCK_MONOTONIC, of the interval timer
  void OnConnected();
  void OnDisconnected(const std::string& why);
  void OnMessage(std::string_view topic, std::string_view payload);
  void OnPublishDone(int mid, int reason_code);
  void Pump();
  void PublishBirth();
  std::string PresencePayload(bool online, uint64_t session) const;
  void UpdateOwnMetrics();

  sd_event* loop_ = nullptr;
  net::MqttSession* session_ = nullptr;
  Registry* registry_ = nullptr;
  DeviceIdentity identity_;
  TelemetryOptions options_;
  std::unique_ptr<Outbox> outbox_;
  std::unique_ptr<SystemProbes> probes_;
  std::string boot_id_;
  std::unique_ptr<BatchCodec> codec_;
  TelemetryBatch batch_;  // reused
  std::string telemetry_topic_, presence_topic_, command_topic_;
  std::string model_name_, model_version_, model_kernel_;

  uint64_t boot_epoch_ = 0;
  uint64_t sequence_ = 0;
  int64_t last_end_ms_ = 0;
  std::chrono::steady_clock::time_point started_;
  sd_event_source* timer_ = nullptr;
  sd_event_source* retry_ = nullptr;
  std::optional<Backoff> backoff_;  // refusals in a row
  bool paused_ = false;  // after a refusal, until the retry timer fires

  struct InFlight {
    int64_t row_id;
    uint64_t boot_epoch, sequence;
  };
  std::map<int, InFlight> inflight_;  // by MQTT message id
  std::set<int64_t> inflight_rows_;
  int64_t cursor_ = 0;  // highest row id handed to the session
  uint64_t last_reconnects_ = 0;

  Counter* batches_made_;
  Counter* batches_published_;
  Counter* publish_failures_;
  Counter* batches_dropped_;
  Counter* reconnects_;
  Gauge* last_failure_code_;
  Gauge* outbox_rows_;
  Gauge* outbox_bytes_;
  Gauge* outbox_age_;
  Gauge* mqtt_connected_;
  Gauge* boot_epoch_gauge_;
};

}  // namespace ternd::telemetry

#endif  // TERND_TELEMETRY_AGENT_H_
