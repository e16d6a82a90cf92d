#include "telemetry/agent.h"

#include <systemd/sd-event.h>

#include <algorithm>

#include "base/backoff.h"
#include "base/log.h"
#include "telemetry/exposition.h"

namespace ternd::telemetry {
namespace {

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Result<std::unique_ptr<TelemetryAgent>> TelemetryAgent::Create(
    sd_event* loop, net::MqttSession* session, Registry* registry,
    const std::string& state_dir, DeviceIdentity identity,
    TelemetryOptions options) {
  if (identity.device_id.empty()) {
    return InvalidArgument("telemetry: the device id is empty");
  }
  if (options.interval.count() <= 0) {
    return InvalidArgument("telemetry: interval must be positive, got %lld ms",
                           static_cast<long long>(options.interval.count()));
  }
  if (options.max_inflight == 0) {
    return InvalidArgument("telemetry: max_inflight must be at least 1");
  }
  if (options.retry_min.count() < 1 || options.retry_max < options.retry_min) {
    return InvalidArgument(
        "telemetry: retry_min %lld ms and retry_max %lld ms: expected 1 <= "
        "retry_min <= retry_max",
        static_cast<long long>(options.retry_min.count()),
        static_cast<long long>(options.retry_max.count()));
  }
  std::unique_ptr<TelemetryAgent> a(new TelemetryAgent());
  a->loop_ = loop;
  a->session_ = session;
  a->registry_ = registry;
  a->identity_ = std::move(identity);
  a->options_ = std::move(options);
  a->started_ = std::chrono::steady_clock::now();
  // After the n-th refusal in a row, a pause in [b/2, b] with
  // b = min(retry_max, retry_min * 2^(n-1)).
  BackoffPolicy retry;
  retry.initial = a->options_.retry_min;
  retry.max = a->options_.retry_max;
  retry.floor = std::chrono::milliseconds(0);
  retry.multiplier = 2.0;
  retry.jitter = 0.5;
  a->backoff_.emplace(retry);
  const std::string outbox_path = a->options_.outbox_path.empty()
                                      ? state_dir + "/telemetry.db"
                                      : a->options_.outbox_path;
  TERND_ASSIGN_OR_RETURN(a->outbox_,
                         Outbox::Open(outbox_path, a->options_.outbox));
  TERND_ASSIGN_OR_RETURN(a->boot_epoch_, a->outbox_->NextBootEpoch());
  a->codec_ = std::make_unique<BatchCodec>(a->options_.zstd_level);

  const std::string base =
      a->options_.topic_prefix + "/devices/" + a->identity_.device_id;
  a->telemetry_topic_ = base + "/telemetry";
  a->presence_topic_ = base + "/presence";
  a->command_topic_ = base + "/cmd";

  Registry& r = *registry;
  a->batches_made_ = r.AddCounter("ternd_telemetry_batches_total",
                                  "Telemetry batches made", "batches");
  a->batches_published_ = r.AddCounter(
      "ternd_telemetry_batches_published_total",
      "Telemetry batches acknowledged by the broker (PUBACK success)",
      "batches");
  a->publish_failures_ = r.AddCounter(
      "ternd_telemetry_publish_failures_total",
      "Telemetry publishes the broker refused (PUBACK reason >= 0x80)",
      "publishes");
  a->batches_dropped_ = r.AddCounter(
      "ternd_telemetry_batches_dropped_total",
      "Batches dropped from the outbox by its byte or age bound since start",
      "batches");
  a->reconnects_ = r.AddCounter(
      "ternd_mqtt_reconnects_total",
      "MQTT connection attempts after a lost connection", "attempts");
  a->last_failure_code_ = r.AddGauge(
      "ternd_telemetry_last_publish_failure_code",
      "MQTT v5 reason code of the last refused telemetry publish (0: none)",
      "1");
  a->outbox_rows_ = r.AddGauge("ternd_telemetry_outbox_rows",
                               "Batches waiting in the outbox", "batches");
  a->outbox_bytes_ =
      r.AddGauge("ternd_telemetry_outbox_bytes",
                 "Compressed bytes waiting in the outbox", "bytes");
  a->outbox_age_ = r.AddGauge("ternd_telemetry_outbox_oldest_age_seconds",
                              "Age of the oldest batch in the outbox (0 when "
                              "empty)",
                              "seconds");
  a->mqtt_connected_ =
      r.AddGauge("ternd_mqtt_connected",
                 "1 while the MQTT session to the fleet broker is up", "1");
  a->boot_epoch_gauge_ =
      r.AddGauge("ternd_telemetry_boot_epoch",
                 "Daemon starts counted in the telemetry outbox", "1");
  a->boot_epoch_gauge_->Set(double(a->boot_epoch_));

  if (a->options_.system_probes) {
    a->probes_ = std::make_unique<SystemProbes>(
        registry, a->options_.probe_roots, state_dir);
    a->boot_id_ = a->probes_->Sample().boot_id;
  }
  a->last_end_ms_ = NowUnixMs();

  if (session) {
    TelemetryAgent* self = a.get();
    session->SetWill(net::MqttWill{
        self->presence_topic_,
        self->PresencePayload(false, session->connects() + 1), 1, true});
    session->Subscribe(self->command_topic_, 1);
    net::MqttCallbacks cb;
    cb.on_connected = [self] { self->OnConnected(); };
    cb.on_disconnected = [self](const std::string& why) {
      self->OnDisconnected(why);
    };
    cb.on_message = [self](std::string_view topic, std::string_view payload,
                           bool) { self->OnMessage(topic, payload); };
    cb.on_publish_done = [self](int mid, int rc) {
      self->OnPublishDone(mid, rc);
    };
    session->AddObserver(std::move(cb));
  }
  a->ArmTimer();
  a->UpdateOwnMetrics();
  TERND_LOG_INFO(
      "telemetry: boot epoch %llu, outbox %s holds %llu batches (%llu bytes), "
      "interval %lld ms",
      static_cast<unsigned long long>(a->boot_epoch_), outbox_path.c_str(),
      static_cast<unsigned long long>(a->outbox_->rows()),
      static_cast<unsigned long long>(a->outbox_->bytes()),
      static_cast<long long>(a->options_.interval.count()));
  return a;
}

TelemetryAgent::~TelemetryAgent() {
  sd_event_source_disable_unref(timer_);
  sd_event_source_disable_unref(retry_);
}

uint64_t NextBatchDue(uint64_t previous_due, uint64_t interval_usec,
                      uint64_t now) {
  if (previous_due == 0) return now + interval_usec;
  uint64_t next = previous_due + interval_usec;
  if (next <= now) next += ((now - next) / interval_usec + 1) * interval_usec;
  return next;
}

void TelemetryAgent::ArmTimer() {
  const uint64_t usec = static_cast<uint64_t>(options_.interval.count()) * 1000;
  uint64_t now = 0;
  sd_event_now(loop_, CLOCK_MONOTONIC, &now);
  next_due_usec_ = NextBatchDue(next_due_usec_, usec, now);
  // 1 ms accuracy: sd-event's default (250 ms) lets each wake-up slide
  // late, and the batches drifted (2.11 s apart for 2 s).
  if (timer_) {
    sd_event_source_set_time(timer_, next_due_usec_);
    sd_event_source_set_enabled(timer_, SD_EVENT_ONESHOT);
    return;
  }
  const int r = sd_event_add_time(loop_, &timer_, CLOCK_MONOTONIC,
                                  next_due_usec_, 1000, &OnTimer, this);
  if (r < 0) {
    TERND_LOG_ERROR("telemetry: cannot add the interval timer: %s",
                    strerror(-r));
    return;
  }
  sd_event_source_set_description(timer_, "telemetry-interval");
}

int TelemetryAgent::OnTimer(sd_event_source*, uint64_t, void* p) {
  auto* self = static_cast<TelemetryAgent*>(p);
  Status s = self->Flush();
  if (!s.ok()) TERND_LOG_WARNING("telemetry: %s", s.message());
  self->ArmTimer();
  return 0;
}

int TelemetryAgent::OnRetry(sd_event_source*, uint64_t, void* p) {
  auto* self = static_cast<TelemetryAgent*>(p);
  self->paused_ = false;
  self->cursor_ = 0;  // from the oldest row again, skipping those in flight
  self->Pump();
  return 0;
}

void TelemetryAgent::UpdateOwnMetrics() {
  outbox_rows_->Set(double(outbox_->rows()));
  outbox_bytes_->Set(double(outbox_->bytes()));
  const auto oldest = outbox_->oldest_unix_ms();
  outbox_age_->Set(oldest ? std::max<double>(0, (NowUnixMs() - *oldest) / 1e3)
                          : 0.0);
  if (session_) {
    mqtt_connected_->Set(session_->connected() ? 1 : 0);
    const uint64_t rc = session_->reconnects();
    if (rc > last_reconnects_) reconnects_->Add(rc - last_reconnects_);
    last_reconnects_ = rc;
  }
}

Status TelemetryAgent::Flush() {
  const int64_t now = NowUnixMs();
  if (probes_) {
    SystemSample s = probes_->Sample();
    if (!s.boot_id.empty()) boot_id_ = s.boot_id;
  }
  UpdateOwnMetrics();
  BatchHeader h;
  h.device_id = identity_.device_id;
  h.boot_epoch = boot_epoch_;
  h.sequence = sequence_ + 1;
  h.start_unix_ms = last_end_ms_;
  h.end_unix_ms = now;
  h.uptime_ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - started_)
          .count());
  h.dropped_batches_total = outbox_->dropped_total();
  h.boot_id = boot_id_;
  const std::vector<MetricSnapshot> snapshot = registry_->Snapshot();
  FillBatch(h, snapshot, &batch_);
  TERND_ASSIGN_OR_RETURN(std::string payload, codec_->Encode(batch_));
  TERND_ASSIGN_OR_RETURN(
      uint64_t dropped, outbox_->Append(boot_epoch_, h.sequence, now, payload));
  sequence_ = h.sequence;
  last_end_ms_ = now;
  batches_made_->Add();
  if (dropped > 0) {
    batches_dropped_->Add(dropped);
    TERND_LOG_WARNING(
        "telemetry: outbox %s over its bound (%llu bytes, %lld s): dropped "
        "the %llu oldest batches (%llu dropped in total)",
        outbox_->path().c_str(),
        static_cast<unsigned long long>(outbox_->limits().max_bytes),
        static_cast<long long>(outbox_->limits().max_age_ms / 1000),
        static_cast<unsigned long long>(dropped),
        static_cast<unsigned long long>(outbox_->dropped_total()));
  }
  UpdateOwnMetrics();
  if (!options_.textfile_path.empty()) {
    Status s = WritePrometheusTextfile(options_.textfile_path,
                                       FormatPrometheus(registry_->Snapshot()));
    if (!s.ok()) TERND_LOG_WARNING("telemetry: textfile: %s", s.message());
  }
  Pump();
  return Status::Ok();
}

void TelemetryAgent::Pump() {
  if (!session_ || paused_ || !session_->connected()) return;
  while (inflight_.size() < options_.max_inflight) {
    auto rows =
        outbox_->ReadAfter(cursor_, options_.max_inflight - inflight_.size());
    if (!rows.ok()) {
      TERND_LOG_ERROR("telemetry: %s", rows.status().message());
      return;
    }
    if (rows->empty()) return;
    for (const OutboxRow& row : *rows) {
      if (inflight_rows_.count(row.id)) {
        cursor_ = row.id;
        continue;
      }
      auto mid = session_->Publish(telemetry_topic_, row.payload, 1, false);
      if (!mid.ok()) return;  // session full or gone; on_publish_done resumes
      cursor_ = row.id;
      inflight_[*mid] = InFlight{row.id, row.boot_epoch, row.sequence};
      inflight_rows_.insert(row.id);
    }
  }
}

void TelemetryAgent::OnPublishDone(int mid, int reason_code) {
  auto it = inflight_.find(mid);
  if (it == inflight_.end()) {
    Pump();  // someone else's publish finished: the session may have room
    return;
  }
  const InFlight f = it->second;
  inflight_.erase(it);
  inflight_rows_.erase(f.row_id);
  if (reason_code >= 0 && reason_code < 0x80) {
    Status s = outbox_->Delete(f.row_id);
    if (!s.ok()) TERND_LOG_ERROR("telemetry: %s", s.message());
    batches_published_->Add();
    backoff_->Reset();
  } else if (reason_code < 0) {
    // The connection dropped before the PUBACK: sent again after reconnect.
    cursor_ = 0;
  } else {
    publish_failures_->Add();
    last_failure_code_->Set(reason_code);
    TERND_LOG_WARNING(
        "telemetry: broker refused batch epoch %llu sequence %llu on %s: "
        "reason code 0x%02x; kept in the outbox, retry within %lld ms",
        static_cast<unsigned long long>(f.boot_epoch),
        static_cast<unsigned long long>(f.sequence), telemetry_topic_.c_str(),
        reason_code, static_cast<long long>(backoff_->Ceiling().count()));
    if (!paused_) {
      paused_ = true;
      const uint64_t usec =
          static_cast<uint64_t>(backoff_->Next().count()) * 1000;
      if (retry_) {
        sd_event_source_set_time_relative(retry_, usec);
        sd_event_source_set_enabled(retry_, SD_EVENT_ONESHOT);
      } else if (sd_event_add_time_relative(loop_, &retry_, CLOCK_MONOTONIC,
                                            usec, 0, &OnRetry, this) >= 0) {
        sd_event_source_set_description(retry_, "telemetry-retry");
      }
    }
  }
  UpdateOwnMetrics();
  Pump();
}

std::string TelemetryAgent::PresencePayload(bool online,
                                            uint64_t session) const {
  Presence p;
  p.set_state(online ? Presence::ONLINE : Presence::OFFLINE);
  p.set_device_id(identity_.device_id);
  p.set_boot_epoch(boot_epoch_);
  p.set_session(session);
  p.set_daemon_version(identity_.daemon_version);
  p.set_model_name(model_name_);
  p.set_model_version(model_version_);
  p.set_kernel(model_kernel_);
  for (const std::string& c : identity_.capabilities) p.add_capabilities(c);
  for (const std::string& g : identity_.groups) p.add_groups(g);
  p.set_unix_ms(online ? NowUnixMs() : 0);
  p.set_telemetry_interval_ms(static_cast<uint32_t>(options_.interval.count()));
  return p.SerializeAsString();
}

void TelemetryAgent::PublishBirth() {
  if (!session_ || !session_->connected()) return;
  auto mid = session_->Publish(
      presence_topic_, PresencePayload(true, session_->connects()), 1, true);
  if (!mid.ok()) {
    TERND_LOG_WARNING("telemetry: cannot publish presence on %s: %s",
                      presence_topic_.c_str(), mid.status().message());
  }
}

void TelemetryAgent::OnConnected() {
  PublishBirth();
  // The will of the next connection carries the next session counter.
  session_->SetWill(
      net::MqttWill{presence_topic_,
                    PresencePayload(false, session_->connects() + 1), 1, true});
  inflight_.clear();
  inflight_rows_.clear();
  cursor_ = 0;
  UpdateOwnMetrics();
  Pump();
}

void TelemetryAgent::OnDisconnected(const std::string& why) {
  if (!inflight_.empty()) {
    TERND_LOG_INFO(
        "telemetry: connection lost (%s) with %zu batches unacknowledged; "
        "they stay in the outbox",
        why.c_str(), inflight_.size());
  }
  inflight_.clear();
  inflight_rows_.clear();
  cursor_ = 0;
  UpdateOwnMetrics();
}

void TelemetryAgent::OnMessage(std::string_view topic,
                               std::string_view payload) {
  if (topic != command_topic_) return;
  if (payload.size() > kMaxCommandBytes) {
    TERND_LOG_WARNING(
        "telemetry: %s: a %zu-byte command, more than the %zu bytes allowed "
        "for a command; ignored unread",
        command_topic_.c_str(), payload.size(), kMaxCommandBytes);
    return;
  }
  DeviceCommand cmd;
  if (payload == "rebirth") {
    cmd.set_kind(DeviceCommand::REBIRTH);
  } else if (payload == "flush") {
    cmd.set_kind(DeviceCommand::FLUSH);
  } else if (!cmd.ParseFromArray(payload.data(),
                                 static_cast<int>(payload.size()))) {
    TERND_LOG_WARNING(
        "telemetry: %s: ignored a %zu-byte command that is neither "
        "\"rebirth\", \"flush\" nor a DeviceCommand",
        command_topic_.c_str(), payload.size());
    return;
  }
  switch (cmd.kind()) {
    case DeviceCommand::REBIRTH:
      TERND_LOG_INFO("telemetry: rebirth requested on %s",
                     command_topic_.c_str());
      PublishBirth();
      break;
    case DeviceCommand::FLUSH: {
      TERND_LOG_INFO("telemetry: flush requested on %s",
                     command_topic_.c_str());
      Status s = Flush();
      if (!s.ok()) TERND_LOG_WARNING("telemetry: flush: %s", s.message());
      break;
    }
    default:
      TERND_LOG_WARNING("telemetry: %s: ignored unknown command kind %d",
                        command_topic_.c_str(), static_cast<int>(cmd.kind()));
  }
}

void TelemetryAgent::SetModel(const std::string& name,
                              const std::string& version,
                              const std::string& kernel) {
  if (name == model_name_ && version == model_version_ &&
      kernel == model_kernel_) {
    return;
  }
  model_name_ = name;
  model_version_ = version;
  model_kernel_ = kernel;
  if (session_) {
    session_->SetWill(net::MqttWill{
        presence_topic_, PresencePayload(false, session_->connects() + 1), 1,
        true});
    PublishBirth();
  }
}

void TelemetryAgent::Shutdown() {
  // The interval so far is not lost: one last batch.
  if (Status s = Flush(); !s.ok()) {
    TERND_LOG_WARNING("telemetry: no last batch at shutdown: %s", s.message());
  }
  if (!session_ || !session_->connected()) return;
  auto mid = session_->Publish(
      presence_topic_, PresencePayload(false, session_->connects()), 1, true);
  if (!mid.ok()) {
    TERND_LOG_INFO("telemetry: no offline presence at shutdown: %s",
                   mid.status().message());
  }
}

std::string TelemetryAgent::PrometheusText() const {
  return FormatPrometheus(registry_->Snapshot());
}

std::string TelemetryAgent::JsonText() const {
  return FormatJson(registry_->Snapshot());
}

}  // namespace ternd::telemetry
