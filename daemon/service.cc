#include "daemon/service.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "base/check.h"
#include "base/event_loop.h"
#include "base/fd.h"
#include "base/file.h"
#include "base/log.h"
#include "daemon/connections.h"
#include "daemon/generator.h"
#include "daemon/http_face.h"
#include "daemon/model_slots.h"
#include "daemon/notify.h"
#include "daemon/passed_sockets.h"
#include "daemon/protocol.pb.h"
#include "daemon/quality_stats.h"
#include "daemon/request_codec.h"
#include "daemon/shadow_validator.h"
#include "daemon/updater.h"
#include "daemon/worker_pool.h"
#include "net/broker_address.h"
#include "net/mqtt_session.h"
#include "runtime/format.h"
#include "runtime/runtime.h"
#include "telemetry/agent.h"
#include "telemetry/exposition.h"
#include "telemetry/service_metrics.h"

static_assert(std::endian::native == std::endian::little,
              "the wire protocol's tensor bytes are copied as they are");

namespace ternd::daemon {
namespace {

constexpr int64_t kBuildTime = TERND_BUILD_TIME;

constexpr int kStatusCodes = 17;

Status SdError(int negative_errno, const char* what) {
  return ErrnoError(-negative_errno, "%s", what);
}

uint64_t NowUsec() { return static_cast<uint64_t>(MonotonicNs() / 1000); }

// An unnamed file in `directory` for a bundle arriving in parts: gone with
// its descriptor, whatever happens to the daemon.
Result<UniqueFd> OpenSpool(const std::string& directory) {
  UniqueFd fd(open(directory.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (fd.valid()) return fd;
  // File systems without O_TMPFILE: a named file, unlinked at once.
  std::string path = directory + "/.install-XXXXXX";
  fd.reset(mkostemp(path.data(), O_CLOEXEC));
  if (!fd.valid()) {
    return ErrnoError(errno, "cannot create a file in %s for the bundle",
                      directory.c_str());
  }
  unlink(path.c_str());
  return fd;
}

Status WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "write");
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

// What a call that needs the model gets while a cold swap replaces it.
Status ModelBeingReplaced() {
  return Errorf(StatusCode::kUnavailable,
                "the model is being replaced (cold swap); retry");
}

}  // namespace

Status BlockServiceSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  if (sigprocmask(SIG_BLOCK, &set, nullptr) < 0) {
    return ErrnoError(errno, "sigprocmask");
  }
  signal(SIGPIPE, SIG_IGN);
  return Status::Ok();
}

class Service::Impl : public ConnectionHandler {
 public:
  Impl(Config config, std::string config_path)
      : config_(std::move(config)), config_path_(std::move(config_path)) {}
  ~Impl() override;

  Status Start();
  Status Run();

 private:
  enum class State { kServing, kReloading, kDraining };

  // Start-up steps, in order.
  Status StartSignals();
  Status StartRuntime();
  Status StartPool();
  Status StartListener();
  Status StartHttp();
  Status StartWatchdog();

  // Models.
  static Result<runtime::ModelFile> OpenConfiguredModel(
      const std::string& path);
  void BeginReload();
  void FinishReload(const Status& status);
  uint64_t reloads_ = 0;  // finished (or ignored) reloads, for Health
  std::string last_reload_error_;

  // Requests (ConnectionHandler).
  void OnFrame(Connection* c, std::span<const uint8_t> payload) override;
  void OnOversizedFrame(Connection* c, uint32_t announced) override;
  void OnRefused(const Status& why) override;
  void OnClosed(uint64_t id, int in_flight) override;
  void HandleInfer(Connection* c, uint64_t id, const wire::InferRequest& r);
  bool RunsInline(const InferJob& job) const;
  void FinishJob(InferJob* job, int64_t now);
  HostInfo host_info() const;
  void HandleInstall(Connection* c, uint64_t id, const wire::InstallRequest& r);
  Status StartUpdater();
  Status StartFleet();
  Status StartTelemetry();
  void FillStats(wire::StatsResponse* stats, bool metrics);
  // Queues an answer that was produced outside the reading code (an
  // update finishing): it is sent from the loop's next iteration, to the
  // connection if it is still open.
  void PostAnswer(uint64_t connection, CallIndex call, wire::Response response);
  void SendPostedAnswers();
  void SendError(Connection* c, CallIndex call, uint64_t id,
                 const Status& status);

  // Completions and drain.
  void OnCompletions();
  void BeginDrain(const char* why);
  void CheckDrained();
  // Every answer is counted once, under the call it answers (not under
  // whatever the loop handled last: answers may come much later).
  void Count(CallIndex call, StatusCode code) {
    ++responses_[static_cast<int>(code)];
    if (static_cast<int>(code) < telemetry::ServiceMetrics::kStatusCodes) {
      metrics_.Request(call, code)->Add(1);
    }
  }
  // The model gauges and the telemetry birth follow what serves.
  void PublishModelMetrics();

  static int OnSignal(sd_event_source*, const struct signalfd_siginfo* si,
                      void* self);
  static int OnPool(sd_event_source*, int, uint32_t, void* self);
  static int OnDrainTimeout(sd_event_source*, uint64_t, void* self);
  static int OnWatchdog(sd_event_source*, uint64_t, void* self);

  Config config_;
  const std::string config_path_;
  State state_ = State::kServing;

  EventLoop event_;
  std::vector<EventSource> signal_sources_;
  // The models: arena slots, loader thread, swaps.
  std::unique_ptr<ModelSlots> slots_;

  // Signed updates; null when ota.enabled is off or no root of trust.
  std::unique_ptr<Updater> updater_;
  std::string updates_disabled_;
  // The fleet broker; null offline (no mqtt.broker).
  std::unique_ptr<net::MqttSession> session_;

  // Generate calls of a language model (generator.h).
  std::unique_ptr<Generator> generator_;
  void HandleGenerate(Connection* c, uint64_t id,
                      const wire::GenerateRequest& r);
  void DeliverGenerated(uint64_t connection, wire::Response&& response,
                        bool final, int slot);

  std::unique_ptr<WorkerPool> pool_;
  EventSource pool_source_;
  // Shadow validation of a staged model on answered requests (one job of
  // the pool's capacity is its own).
  std::unique_ptr<ShadowValidator> shadow_;
  std::unique_ptr<QualityTracker> quality_;  // null: telemetry.quality off
  std::vector<std::unique_ptr<InferJob>> jobs_;
  std::vector<InferJob*> free_jobs_;
  std::vector<InferJob*> completed_;
  int loop_executor_ = 0;        // the loop thread's executor index (= workers)
  int64_t last_request_ns_ = 0;  // server.busy_poll_us
  // RunsInline's estimate: compute time per row of the placement
  // estimate_load_ (a ModelSlots::Hold::load).
  uint64_t estimate_load_ = 0;
  int64_t compute_ns_per_row_ = -1;
  size_t outstanding_ = 0;

  // The listening socket and every client connection.
  std::unique_ptr<Connections> connections_;
  // The HTTP face (http_face.h); null unless [http] sets a listener.
  std::unique_ptr<HttpFace> http_;

  struct PostedAnswer {
    uint64_t connection;
    CallIndex call;
    wire::Response response;
  };
  std::vector<PostedAnswer> posted_;
  std::unique_ptr<LoopTask> send_posted_;  // runs SendPostedAnswers
  EventSource drain_timer_;
  EventSource watchdog_timer_;
  uint64_t watchdog_period_usec_ = 0;

  // Reused per frame so steady-state parsing reuses protobuf's buffers.
  wire::Request request_;
  wire::Response response_;

  // Statistics.
  int64_t started_ns_ = MonotonicNs();
  std::array<uint64_t, kStatusCodes> responses_{};
  uint64_t requests_total_ = 0;
  uint64_t inferences_total_ = 0;
  // Metrics for the Stats call, Prometheus and telemetry (docs/telemetry.md).
  telemetry::Registry registry_;
  telemetry::ServiceMetrics metrics_{&registry_, CallNames()};
  // Infer round trip inside the daemon: the Stats call's percentiles.
  telemetry::Histogram* round_trip_ = registry_.AddLatencyHistogram(
      "ternd_request_seconds",
      "Infer round trip inside the daemon, from reading the request to "
      "queueing its answer",
      {{"call", "infer"}});
  // Telemetry to the fleet; null when off (docs/telemetry.md).
  std::unique_ptr<telemetry::TelemetryAgent> agent_;
};

// ------------------------------------------------------------ start and stop

Status Service::Impl::Start() {
  SetLogLevel(config_.log_level);
  Notify("STATUS=Starting (configuration: %s)", config_.origin.c_str());
  sd_event* e = nullptr;
  int r = sd_event_new(&e);
  if (r < 0) return SdError(r, "cannot create the event loop");
  event_.reset(e);
  send_posted_ = std::make_unique<LoopTask>(event_.get(), "posted-answers",
                                            [this]() { SendPostedAnswers(); });
  TERND_RETURN_IF_ERROR(StartSignals());
  TERND_RETURN_IF_ERROR(StartRuntime());
  TERND_RETURN_IF_ERROR(StartPool());
  TERND_RETURN_IF_ERROR(StartListener());
  TERND_RETURN_IF_ERROR(StartHttp());
  TERND_RETURN_IF_ERROR(StartWatchdog());

  const ServingModel serving = slots_->serving();
  if (const runtime::LmModel* lm = slots_->usable_lm()) {
    ModelEvent(LogLevel::kNotice, nullptr, 0,
               "serving language model '%s' version %llu on %s (kernel %s, "
               "%d threads, context %d x %d sequences, %s swap, "
               "configuration: %s)",
               lm->name(), static_cast<unsigned long long>(lm->version()),
               config_.socket_path.c_str(), lm->kernel().name, lm->threads(),
               lm->max_context(), lm->sequences(), config_.swap.c_str(),
               config_.origin.c_str());
  } else {
    const runtime::LoadedModel* m = slots_->usable();
    ModelEvent(LogLevel::kNotice, m, 0,
               "serving model '%s' version %llu on %s (kernel %s, %d "
               "workers, %s swap, configuration: %s)",
               m->name(), static_cast<unsigned long long>(m->version()),
               config_.socket_path.c_str(), m->kernel_name(), pool_->workers(),
               config_.swap.c_str(), config_.origin.c_str());
  }
  Notify("READY=1\nSTATUS=Serving model '%s' version %llu",
         serving.name.c_str(),
         static_cast<unsigned long long>(serving.version));
  PublishModelMetrics();
  TERND_RETURN_IF_ERROR(StartFleet());
  if (updater_) {
    shadow_ = std::make_unique<ShadowValidator>(
        event_.get(), slots_.get(), pool_.get(), config_.swap == "hot",
        [this]() { return outstanding_ == 0; });
    updater_->SetShadowHost(shadow_.get());
    updater_->Attach(slots_.get());
  }
  if (session_) session_->Start();
  return Status::Ok();
}

// Telemetry runs when enabled and it has somewhere to go: the broker, or a
// Prometheus textfile. (The embedded default has neither, and writes no
// outbox.)
Status Service::Impl::StartTelemetry() {
  if (!config_.telemetry_enabled ||
      (!session_ && config_.telemetry_textfile.empty())) {
    return Status::Ok();
  }
  telemetry::TelemetryOptions to;
  to.interval = std::chrono::seconds(config_.telemetry_interval_s);
  to.topic_prefix = ResolvedTopicPrefix(config_);
  to.outbox.max_bytes = uint64_t{config_.telemetry_outbox_max_mb} << 20;
  to.outbox.max_age_ms =
      int64_t{config_.telemetry_outbox_max_age_h} * 3600 * 1000;
  to.textfile_path = config_.telemetry_textfile;
  telemetry::DeviceIdentity id;
  id.device_id = ResolvedDeviceId(config_);
  id.groups = config_.device_groups;
  id.daemon_version = TERND_VERSION_STRING;
  id.capabilities = {"infer"};
  if (updater_) id.capabilities.push_back("ota");
  id.capabilities.push_back("telemetry");
  TERND_ASSIGN_OR_RETURN(agent_,
                         telemetry::TelemetryAgent::Create(
                             event_.get(), session_.get(), &registry_,
                             config_.state_directory, id, std::move(to)));
  PublishModelMetrics();
  return Status::Ok();
}

Status Service::Impl::StartFleet() {
  if (config_.mqtt_broker.empty()) {
    TERND_LOG_INFO("no mqtt.broker configured: offline");
    return StartTelemetry();  // a textfile may still be wanted
  }
  net::MqttOptions o;
  if (!SplitBroker(config_, &o.host, &o.port)) {
    return InvalidArgument("mqtt.broker = \"%s\" is not HOST or HOST:PORT",
                           config_.mqtt_broker.c_str());
  }
  o.client_id = ResolvedDeviceId(config_);
  o.tls = config_.mqtt_tls;
  o.ca_file = config_.mqtt_ca_file;
  o.cert_file = config_.mqtt_cert_file;
  o.key_file = config_.mqtt_key_file;
  o.username = config_.mqtt_username;
  if (!config_.mqtt_password_file.empty()) {
    Result<std::string> password =
        net::ReadPasswordFile(config_.mqtt_password_file);
    if (!password.ok()) {
      Status st = password.status();
      return st.Prepend("mqtt.password_file");
    }
    o.password = std::move(*password);
  }
  o.keepalive_seconds = static_cast<int>(config_.mqtt_keepalive_s);
  o.reconnect_min_ms = static_cast<int>(config_.mqtt_reconnect_min_ms);
  o.reconnect_max_ms = static_cast<int>(config_.mqtt_reconnect_max_ms);
  o.max_inflight = config_.mqtt_max_inflight;
  TERND_ASSIGN_OR_RETURN(session_,
                         net::MqttSession::Create(event_.get(), std::move(o)));
  if (updater_) {
    FleetOptions f;
    f.topic_prefix = ResolvedTopicPrefix(config_);
    const bool own_tls = !config_.ota_ca_file.empty();
    f.fetch.ca_file = own_tls ? config_.ota_ca_file : config_.mqtt_ca_file;
    f.fetch.cert_file =
        own_tls ? config_.ota_cert_file : config_.mqtt_cert_file;
    f.fetch.key_file = own_tls ? config_.ota_key_file : config_.mqtt_key_file;
    f.fetch.max_bytes_per_second = int64_t{config_.ota_rate_limit_kbps} * 1024;
    f.fetch.retry_min_ms = static_cast<int>(config_.ota_retry_min_ms);
    f.fetch.retry_max_ms = static_cast<int>(config_.ota_retry_max_ms);
    updater_->ConnectFleet(session_.get(), std::move(f));
  }
  TERND_RETURN_IF_ERROR(StartTelemetry());
  TERND_LOG_INFO("fleet broker %s as device '%s', topics under %s",
                 config_.mqtt_broker.c_str(), ResolvedDeviceId(config_).c_str(),
                 ResolvedTopicPrefix(config_).c_str());
  return Status::Ok();
}

Status Service::Impl::StartSignals() {
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    sd_event_source* s = nullptr;
    int r = sd_event_add_signal(event_.get(), &s, sig, &Impl::OnSignal, this);
    if (r < 0) return SdError(r, "cannot watch signals (are they blocked?)");
    sd_event_source_set_description(
        s, sig == SIGHUP ? "signal-reload" : "signal-stop");
    signal_sources_.emplace_back(s);
  }
  return Status::Ok();
}

Status Service::Impl::StartRuntime() {
  runtime::RuntimeOptions options;
  options.arena_bytes = size_t{config_.arena_mb} << 20;
  options.slots = config_.swap == "hot" ? 2 : 1;
  // One executor per worker, and one more for the loop thread's inline
  // requests (runtime.inline_max_us).
  options.workers = config_.ResolvedWorkers() + 1;
  loop_executor_ = options.workers - 1;
  options.kernel = config_.kernel;
  runtime::LmOptions lm;
  lm.max_context = static_cast<int>(config_.llm_max_context);
  lm.sequences = static_cast<int>(config_.llm_sequences);
  lm.threads = static_cast<int>(config_.llm_threads);
  TERND_ASSIGN_OR_RETURN(slots_, ModelSlots::Create(event_.get(), options, lm));
  TERND_ASSIGN_OR_RETURN(
      generator_, Generator::Create(
                      event_.get(),
                      [this](uint64_t connection, wire::Response&& r,
                             bool final, int slot) {
                        DeliverGenerated(connection, std::move(r), final, slot);
                      },
                      slots_->lm_mutex(), &registry_));
  slots_->SetObserver([this]() { PublishModelMetrics(); });
  // The first model is placed before serving starts, so on this thread:
  // the model an update installed, if it still verifies, else the
  // configured one.
  TERND_RETURN_IF_ERROR(StartUpdater());
  if (updater_) {
    TERND_ASSIGN_OR_RETURN(
        const bool installed,
        updater_->Boot([this](runtime::ModelFile file) -> Status {
          return slots_->PlaceFirst(std::move(file), /*require_golden=*/true);
        }));
    if (installed) return Status::Ok();
  }
  TERND_ASSIGN_OR_RETURN(runtime::ModelFile file,
                         OpenConfiguredModel(config_.model));
  return slots_->PlaceFirst(std::move(file), /*require_golden=*/false);
}

Status Service::Impl::StartUpdater() {
  if (!config_.ota_enabled) {
    updates_disabled_ = "ota.enabled is false";
    return Status::Ok();
  }
  UpdaterOptions o;
  o.state_db = config_.state_directory + "/state.db";
  o.root_file = config_.ota_root_file;
  o.device.id = ResolvedDeviceId(config_);
  o.device.groups = config_.device_groups;
  o.policy.build_time = kBuildTime;
  o.policy.expiry_grace_seconds = config_.ota_expiry_grace_s;
  o.policy.max_artifact_bytes = uint64_t{config_.ota_max_artifact_mb} << 20;
  o.policy.max_model_bytes = uint64_t{config_.ota_max_artifact_mb} << 20;
  o.policy.runtime_version = TERND_VERSION_STRING;
  o.probation_s = config_.ota_probation_s;
  o.probation_crashes = config_.ota_probation_crashes;
  o.cache_bytes = uint64_t{config_.ota_cache_mb} << 20;
  Result<std::unique_ptr<Updater>> updater =
      Updater::Create(event_.get(), std::move(o));
  if (!updater.ok()) {
    // No root of trust provisioned (the embedded default): serve without
    // updates, and say why once.
    updates_disabled_ = updater.status().message();
    TERND_LOG_NOTICE("updates are off: %s", updates_disabled_.c_str());
    return Status::Ok();
  }
  updater_ = std::move(*updater);
  updater_->SetObserver([this](const UpdateStatus& st) {
    metrics_.update_state->Set(
        {{"state", ota::UpdateStateName(st.record.state)},
         {"model", st.record.model_name},
         {"version", std::to_string(st.record.model_version)}});
    if (quality_ && st.shadow && st.shadow->rows > 0) {
      quality_->SetShadowAgreement(st.record.model_name,
                                   st.record.model_version,
                                   st.shadow->agreement());
    }
    Notify("STATUS=Update to '%s' version %llu: %s%s%s",
           st.record.model_name.c_str(),
           static_cast<unsigned long long>(st.record.model_version),
           ota::UpdateStateName(st.record.state),
           st.record.reason.empty() ? "" : ": ", st.record.reason.c_str());
  });
  return Status::Ok();
}

Status Service::Impl::StartPool() {
  // Every job that may be outstanding at once has a preallocated home.
  const size_t capacity = config_.max_queue_depth;
  // One more for the shadow validation job (shadow_validator.h).
  TERND_ASSIGN_OR_RETURN(pool_,
                         WorkerPool::Create(loop_executor_, capacity + 1));
  if (config_.telemetry_quality) {
    quality_ = std::make_unique<QualityTracker>(
        &registry_, loop_executor_ + 1, config_.telemetry_quality_inputs);
  }
  jobs_.reserve(capacity);
  for (size_t i = 0; i < capacity; ++i) {
    jobs_.push_back(std::make_unique<InferJob>());
    free_jobs_.push_back(jobs_.back().get());
  }
  completed_.reserve(capacity + 1);
  sd_event_source* s = nullptr;
  int r = sd_event_add_io(event_.get(), &s, pool_->event_fd(), EPOLLIN,
                          &Impl::OnPool, this);
  if (r < 0) return SdError(r, "cannot watch the worker pool's eventfd");
  sd_event_source_set_description(s, "worker-completions");
  // Answers first: finishing work frees queue space for new requests.
  sd_event_source_set_priority(s, SD_EVENT_PRIORITY_IMPORTANT);
  pool_source_.reset(s);
  return Status::Ok();
}

Status Service::Impl::StartListener() {
  ListenOptions o;
  o.socket_path = config_.socket_path;
  o.socket_mode = config_.socket_mode;
  o.socket_group = config_.socket_group;
  o.max_connections = config_.max_connections;
  o.allow_uids = config_.allow_uids;
  o.allow_gids = config_.allow_gids;
  o.max_frame_bytes = config_.max_frame_bytes;
  o.max_output_buffer_bytes = config_.max_output_buffer_bytes;
  TERND_ASSIGN_OR_RETURN(connections_,
                         Connections::Listen(event_.get(), o, this, &metrics_));
  return Status::Ok();
}

// The HTTP face is a client of the service over a socket pair whose other
// end the connections adopt (http_face.h).
Status Service::Impl::StartHttp() {
  // Sockets systemd passed as "http" (ternd-http.socket) are its listeners.
  TERND_ASSIGN_OR_RETURN(PassedSockets passed, TakePassedSockets());
  if (config_.http_socket.empty() && config_.http_port == 0 &&
      passed.http.empty()) {
    return Status::Ok();
  }
  HttpOptions o;
  o.passed_fds = passed.http;
  o.socket_path = config_.http_socket;
  o.socket_mode = config_.http_socket_mode;
  o.address = config_.http_address;
  o.port = config_.http_port;
  o.max_connections = config_.http_max_connections;
  o.max_header_bytes = config_.http_max_header_bytes;
  o.max_body_bytes = config_.http_max_body_bytes;
  o.request_timeout_ms = config_.http_request_timeout_ms;
  o.idle_timeout_s = config_.http_idle_timeout_s;
  if (!config_.http_token_file.empty()) {
    Result<std::string> token = net::ReadPasswordFile(config_.http_token_file);
    if (!token.ok()) {
      Status st = token.status();
      return st.Prepend("http.token_file");
    }
    o.token = std::move(*token);
  }
  TERND_ASSIGN_OR_RETURN(http_,
                         HttpFace::Create(event_.get(), o, [this](UniqueFd fd) {
                           return connections_->Adopt(std::move(fd));
                         }));
  return Status::Ok();
}

// The systemd watchdog (WatchdogSec=), pinged by a timer of this loop at
// half the interval, so a stuck loop is what systemd sees. Not
// sd_event_set_watchdog(): its pings go through sd_notify(), which blocks
// when the manager does not read its socket; Notify() never blocks.
Status Service::Impl::StartWatchdog() {
  uint64_t usec = 0;
  const int r = sd_watchdog_enabled(/*unset_environment=*/0, &usec);
  if (r < 0) return SdError(r, "cannot read WATCHDOG_USEC");
  if (r == 0 || usec == 0) return Status::Ok();
  watchdog_period_usec_ = std::max<uint64_t>(usec / 2, 1);
  sd_event_source* s = nullptr;
  const int a = sd_event_add_time_relative(event_.get(), &s, CLOCK_MONOTONIC,
                                           watchdog_period_usec_, 0,
                                           &Impl::OnWatchdog, this);
  if (a < 0) return SdError(a, "cannot arm the systemd watchdog timer");
  sd_event_source_set_description(s, "watchdog");
  sd_event_source_set_priority(s, SD_EVENT_PRIORITY_IMPORTANT);
  watchdog_timer_.reset(s);
  Notify("WATCHDOG=1");
  TERND_LOG_INFO(
      "systemd watchdog enabled (%llu ms); pinged from the loop every %llu "
      "ms",
      static_cast<unsigned long long>(usec / 1000),
      static_cast<unsigned long long>(watchdog_period_usec_ / 1000));
  return Status::Ok();
}

Service::Impl::~Impl() {
  // Reverse of Start: stop taking connections, stop the workers, drop the
  // connections, then the models and the arena.
  http_.reset();
  if (connections_) connections_->StopListening();
  if (pool_) pool_->Stop();
  pool_source_.reset();
  shadow_.reset();  // before the updater, the pool and the slots it uses
  drain_timer_.reset();
  watchdog_timer_.reset();
  send_posted_.reset();
  updater_.reset();
  session_.reset();
  agent_.reset();  // after the session, which holds its callbacks
  connections_.reset();
  generator_.reset();  // ends generations; before the model goes
  pool_.reset();
  // Its registry collectors go before the registry (a member).
  quality_.reset();
  slots_.reset();  // waits for a model still being placed
  signal_sources_.clear();
  event_.reset();
}

Status Service::Impl::Run() {
  // sd_event_loop, except that for server.busy_poll_us after each request
  // the loop polls without sleeping, so the next request of a client that
  // sends one after another does not wait for this thread to be woken up.
  sd_event* e = event_.get();
  while (sd_event_get_state(e) != SD_EVENT_FINISHED) {
    const int64_t poll_ns = int64_t{config_.busy_poll_us} * 1000;
    const bool spin = poll_ns > 0 && MonotonicNs() - last_request_ns_ < poll_ns;
    const int r = sd_event_run(e, spin ? 0 : UINT64_MAX);
    if (r < 0) return SdError(r, "event loop failed");
  }
  if (updater_) updater_->Shutdown();
  Notify("STATUS=Stopped");
  TERND_LOG_NOTICE("stopped after serving %llu requests",
                   static_cast<unsigned long long>(requests_total_));
  return Status::Ok();
}

// -------------------------------------------------------------------- models

Result<runtime::ModelFile> Service::Impl::OpenConfiguredModel(
    const std::string& path) {
  Result<runtime::ModelFile> file = runtime::ModelFile::Open(path);
  if (!file.ok()) {
    Status s = file.status();
    return s.Prepend("runtime.model");
  }
  return file;
}

void Service::Impl::BeginReload() {
  if (state_ == State::kDraining) return;
  if (!slots_->changing().empty()) {
    TERND_LOG_WARNING("SIGHUP while a model change (%s) runs; ignored",
                      slots_->changing().c_str());
    ++reloads_;
    last_reload_error_ = "ignored: a model change (" + slots_->changing() +
                         ") was running; send SIGHUP again when it is done";
    return;
  }
  Notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading configuration",
         static_cast<unsigned long long>(NowUsec()));
  Result<Config> next = ResolveConfig(config_path_);
  if (!next.ok()) {
    TERND_LOG_ERROR("reload refused, keeping the running configuration: %s",
                    next.status().message());
    FinishReload(next.status());
    return;
  }
  Config& c = *next;
  for (const std::string& change : RestartOnlyChanges(config_, c)) {
    TERND_LOG_WARNING(
        "reload: %s takes effect only after a restart; keeping "
        "the running value",
        change.c_str());
  }
  KeepRestartOnly(config_, &c);
  config_ = std::move(c);
  SetLogLevel(config_.log_level);
  connections_->SetLimits(config_.max_frame_bytes,
                          config_.max_output_buffer_bytes);
  TERND_LOG_INFO("configuration reloaded from %s", config_.origin.c_str());
  if (slots_->has_staged()) {
    FinishReload(FailedPrecondition(
        "an update is staged in the idle slot; the model was not reloaded"));
    return;
  }

  ModelChange change;
  const std::string path = config_.model;
  change.what = "reload of " + path;
  change.produce = [path]() { return OpenConfiguredModel(path); };
  change.done = [this](const Status& s) { FinishReload(s); };
  state_ = State::kReloading;
  Status s = slots_->ChangeModel(std::move(change));
  if (!s.ok()) FinishReload(s);
}

void Service::Impl::FinishReload(const Status& status) {
  if (state_ == State::kReloading) state_ = State::kServing;
  ++reloads_;
  last_reload_error_ = status.ok() ? "" : status.message();
  const ServingModel m = slots_->serving();
  const auto version = static_cast<unsigned long long>(m.version);
  if (status.ok()) {
    Notify("READY=1\nSTATUS=Serving model '%s' version %llu", m.name.c_str(),
           version);
  } else {
    TERND_LOG_ERROR("reload failed, still serving model '%s' version %llu: %s",
                    m.name.c_str(), version, status.message());
    Notify(
        "READY=1\nSTATUS=Serving model '%s' version %llu; last reload "
        "failed: %s",
        m.name.c_str(), version, status.message());
  }
}

void Service::Impl::PublishModelMetrics() {
  const runtime::Runtime& runtime = slots_->runtime();
  if (const runtime::LmModel* lm = slots_->usable_lm()) {
    const std::string version = std::to_string(lm->version());
    metrics_.model->Set({{"name", lm->name()},
                         {"version", version},
                         {"kernel", lm->kernel().name}});
    metrics_.arena_size_bytes->Set(
        static_cast<double>(runtime.slot_bytes() * runtime.slot_count()));
    metrics_.arena_used_bytes->Set(static_cast<double>(lm->slot_bytes_used()));
    if (agent_) agent_->SetModel(lm->name(), version, lm->kernel().name);
    return;
  }
  const runtime::LoadedModel* m = slots_->usable();
  if (!m) return;  // a cold swap runs; its end publishes again
  const std::string version = std::to_string(m->version());
  metrics_.model->Set({{"name", m->name()},
                       {"version", version},
                       {"kernel", m->kernel_name()}});
  metrics_.arena_size_bytes->Set(
      static_cast<double>(runtime.slot_bytes() * runtime.slot_count()));
  metrics_.arena_used_bytes->Set(static_cast<double>(m->slot_bytes_used()));
  if (agent_) agent_->SetModel(m->name(), version, m->kernel_name());
  if (quality_) quality_->For(*m, 0);  // its accumulators, at load
}

// --------------------------------------------------------------- connections

void Service::Impl::OnOversizedFrame(Connection* c, uint32_t announced) {
  SendError(c, kCallInvalid, 0,
            ResourceExhausted("frame of %u bytes is over the limit of %u "
                              "(server.max_frame_bytes); closing",
                              announced, config_.max_frame_bytes));
}

void Service::Impl::OnRefused(const Status& why) {
  Count(kCallInvalid, why.code());
}

void Service::Impl::OnClosed(uint64_t connection, int) {
  // Its generations stop; their final frames find no connection.
  if (generator_) generator_->CancelConnection(connection);
  if (state_ == State::kDraining) CheckDrained();
}

void Service::Impl::OnFrame(Connection* c, std::span<const uint8_t> payload) {
  ++requests_total_;
  if (config_.busy_poll_us != 0) last_request_ns_ = MonotonicNs();
  if (!request_.ParseFromArray(payload.data(),
                               static_cast<int>(payload.size()))) {
    SendError(c, kCallInvalid, 0,
              InvalidArgument("a frame of %zu bytes is not a valid Request "
                              "message; closing",
                              payload.size()));
    connections_->Reject(c);
    return;
  }
  const uint64_t id = request_.id();
  const CallIndex call = CallOf(request_);
  switch (request_.call_case()) {
    case wire::Request::kInfer:
      HandleInfer(c, id, request_.infer());
      return;
    case wire::Request::kModelInfo: {
      if (!slots_->serving_any()) {
        SendError(c, call, id, ModelBeingReplaced());
        return;
      }
      response_.Clear();
      response_.set_id(id);
      if (const runtime::LmModel* lm = slots_->usable_lm()) {
        FillModelInfo(*lm, *slots_->tokenizer(), slots_->lm_architecture(),
                      host_info(), response_.mutable_model_info());
        response_.mutable_model_info()
            ->mutable_language_model()
            ->set_chat_template(slots_->lm_chat_template());
      } else {
        FillModelInfo(*slots_->usable(), host_info(),
                      response_.mutable_model_info());
      }
      Count(call, StatusCode::kOk);
      connections_->Send(c, &response_);
      return;
    }
    case wire::Request::kHealth: {
      response_.Clear();
      response_.set_id(id);
      wire::HealthResponse* h = response_.mutable_health();
      h->set_live(true);
      h->set_ready(state_ != State::kDraining && slots_->serving_any());
      h->set_state(state_ == State::kServing     ? "serving"
                   : state_ == State::kReloading ? "reloading"
                                                 : "draining");
      h->set_reloads(reloads_);
      h->set_last_reload_error(last_reload_error_);
      Count(call, StatusCode::kOk);
      connections_->Send(c, &response_);
      return;
    }
    case wire::Request::kStats: {
      response_.Clear();
      response_.set_id(id);
      FillStats(response_.mutable_stats(), request_.stats().metrics());
      Count(call, StatusCode::kOk);
      connections_->Send(c, &response_);
      return;
    }
    case wire::Request::kInstall:
      HandleInstall(c, id, request_.install());
      return;
    case wire::Request::kUpdateStatus: {
      response_.Clear();
      response_.set_id(id);
      FillUpdateStatus(updater_ ? updater_->status() : UpdateStatus(),
                       updates_disabled_, config_.model,
                       response_.mutable_update_status());
      Count(call, StatusCode::kOk);
      connections_->Send(c, &response_);
      return;
    }
    case wire::Request::kGenerate:
      HandleGenerate(c, id, request_.generate());
      return;
    case wire::Request::kCancel: {
      if (generator_) generator_->Cancel(c->id(), request_.cancel().target());
      response_.Clear();
      response_.set_id(id);
      response_.set_final(true);
      Count(call, StatusCode::kOk);
      connections_->Send(c, &response_);
      return;
    }
    case wire::Request::CALL_NOT_SET:
      break;
  }
  SendError(c, call, id,
            InvalidArgument("request %llu names no call (infer, "
                            "model_info, health, stats, install, "
                            "update_status)",
                            static_cast<unsigned long long>(id)));
}

// A bundle arrives in parts (InstallRequest.more). They are spooled to an
// unnamed file in the state directory as they arrive, so the daemon holds
// one part in memory whatever the bundle's size; the cap is checked on
// every part.
void Service::Impl::HandleInstall(Connection* c, uint64_t id,
                                  const wire::InstallRequest& r) {
  auto refuse = [&](const Status& why, bool close) {
    c->install_file.reset();
    c->install_bytes = 0;
    SendError(c, kCallInstall, id, why);
    // The rest of the bundle may still be on its way: parsed as new
    // requests it would be answered again. Stop reading this connection.
    if (close) c->CloseAfterFlush();
  };
  if (!updater_) {
    refuse(FailedPrecondition("updates are off: %s", updates_disabled_.c_str()),
           r.more());
    return;
  }
  if (c->install_file.valid() && c->install_id != id) {
    refuse(InvalidArgument("install parts of request %llu were "
                           "interrupted by request %llu; start again",
                           static_cast<unsigned long long>(c->install_id),
                           static_cast<unsigned long long>(id)),
           r.more());
    return;
  }
  const uint64_t cap =
      (uint64_t{config_.ota_max_artifact_mb} << 20) + (uint64_t{16} << 20);
  if (c->install_bytes + r.part().size() > cap) {
    refuse(ResourceExhausted("the bundle exceeds %llu bytes "
                             "(ota.max_artifact_mb plus 16 MiB); closing",
                             static_cast<unsigned long long>(cap)),
           true);
    return;
  }
  if (!c->install_file.valid()) {
    Result<UniqueFd> spool = OpenSpool(config_.state_directory);
    if (!spool.ok()) {
      refuse(spool.status(), r.more());
      return;
    }
    c->install_file = std::move(*spool);
    c->install_id = id;
    c->install_bytes = 0;
  }
  if (Status w = WriteAll(c->install_file.get(), r.part()); !w.ok()) {
    refuse(w.Prepend("cannot spool the bundle in " + config_.state_directory),
           r.more());
    return;
  }
  c->install_bytes += r.part().size();
  if (r.more()) return;
  UniqueFd bundle = std::move(c->install_file);
  const uint64_t size = c->install_bytes;
  c->install_bytes = 0;
  const uint64_t connection = c->id();
  // The updater may finish at once (a refusal), from inside this call, or
  // much later: either way the answer goes through the loop (PostAnswer),
  // never straight onto a connection that the reading code still uses.
  Status s = updater_->InstallBundle(
      std::move(bundle), size,
      [this, connection, id](const Result<UpdateStatus>& st) {
        wire::Response response;
        response.set_id(id);
        if (st.ok()) {
          FillUpdateStatus(*st, updates_disabled_, config_.model,
                           response.mutable_update_status());
        } else {
          response.mutable_status()->set_code(
              static_cast<int>(st.status().code()));
          response.mutable_status()->set_message(st.status().message());
        }
        PostAnswer(connection, kCallInstall, std::move(response));
      });
  if (!s.ok()) SendError(c, kCallInstall, id, s);
}

void Service::Impl::HandleInfer(Connection* c, uint64_t id,
                                const wire::InferRequest& r) {
  if (state_ == State::kDraining) {
    SendError(c, kCallInfer, id,
              Errorf(StatusCode::kUnavailable, "the daemon is shutting down"));
    return;
  }
  if (slots_->usable_lm()) {
    SendError(c, kCallInfer, id,
              FailedPrecondition(
                  "model '%s' is a language model: it answers Generate "
                  "(ternctl generate), not Infer",
                  slots_->serving().name.c_str()));
    return;
  }
  if (!slots_->usable()) {
    SendError(c, kCallInfer, id, ModelBeingReplaced());
    return;
  }
  if (c->inflight >= static_cast<int>(config_.max_inflight_per_connection)) {
    SendError(
        c, kCallInfer, id,
        ResourceExhausted("%d requests in flight on this connection "
                          "(server.max_inflight_per_connection = %u)",
                          c->inflight, config_.max_inflight_per_connection));
    return;
  }
  if (free_jobs_.empty()) {
    SendError(c, kCallInfer, id,
              ResourceExhausted("%zu requests queued (server.max_queue_depth "
                                "= %u)",
                                outstanding_, config_.max_queue_depth));
    return;
  }
  InferJob* job = free_jobs_.back();
  const runtime::LoadedModel& m = *slots_->usable();  // checked above
  job->received_ns = MonotonicNs();
  Status s = PrepareInfer(r, m, job);
  if (!s.ok()) {
    SendError(c, kCallInfer, id, s);
    return;
  }
  free_jobs_.pop_back();
  job->connection_id = c->id();
  job->request_id = id;
  const ModelSlots::Hold hold = slots_->Acquire();
  job->slot = hold.slot;
  job->model = hold.model;
  job->model_load = hold.load;
  job->quality = quality_ ? quality_->For(*hold.model, hold.load) : nullptr;
  const uint64_t deadline_ns =
      r.deadline_us() != 0 ? r.deadline_us() * 1000
                           : uint64_t{config_.default_deadline_ms} * 1000000;
  job->deadline_ns =
      deadline_ns ? job->received_ns + static_cast<int64_t>(std::min<uint64_t>(
                                           deadline_ns, uint64_t{1} << 62))
                  : 0;
  ++c->inflight;
  ++outstanding_;
  metrics_.queue_depth->Set(static_cast<double>(outstanding_));
  metrics_.inflight->Set(static_cast<double>(outstanding_));
  if (RunsInline(*job)) {
    WorkerPool::Run(loop_executor_, job);
    metrics_.inline_requests->Add(1);
    FinishJob(job, MonotonicNs());
    return;
  }
  pool_->Submit(job);
}

// Small models answer faster on the loop thread than through a worker (no
// wake-up of a worker, no eventfd back): when nothing else is running and
// the model's recent compute time is small, run the request here.
bool Service::Impl::RunsInline(const InferJob& job) const {
  return config_.inline_max_us != 0 && outstanding_ == 1 &&
         job.model_load == estimate_load_ && compute_ns_per_row_ >= 0 &&
         compute_ns_per_row_ * job.batch <=
             int64_t{config_.inline_max_us} * 1000;
}

HostInfo Service::Impl::host_info() const {
  HostInfo h;
  h.arena_bytes = slots_->runtime().options().arena_bytes;
  h.slot_bytes = slots_->runtime().slot_bytes();
  h.workers = static_cast<uint32_t>(pool_->workers());
  h.swap = config_.swap;
  return h;
}

void Service::Impl::FillStats(wire::StatsResponse* stats, bool metrics) {
  stats->set_uptime_ms(
      static_cast<uint64_t>((MonotonicNs() - started_ns_) / 1000000));
  for (int code = 0; code < kStatusCodes; ++code) {
    if (responses_[code] == 0) continue;
    wire::StatusCount* sc = stats->add_responses();
    sc->set_code(StatusCodeName(static_cast<StatusCode>(code)));
    sc->set_count(responses_[code]);
  }
  stats->set_requests_total(requests_total_);
  const telemetry::HistogramSnapshot round_trip = round_trip_->Snapshot();
  stats->set_latency_p50_us(round_trip.Percentile(0.50) / 1000);
  stats->set_latency_p90_us(round_trip.Percentile(0.90) / 1000);
  stats->set_latency_p99_us(round_trip.Percentile(0.99) / 1000);
  stats->set_latency_p999_us(round_trip.Percentile(0.999) / 1000);
  stats->set_queue_depth(outstanding_);
  stats->set_connections(connections_->size());
  stats->set_connections_total(connections_->accepted_total());
  stats->set_inferences_total(inferences_total_);
  stats->set_frames_rejected(connections_->frames_rejected());
  if (generator_) {
    stats->set_generated_tokens(generator_->tokens_generated());
    stats->set_sessions(static_cast<uint32_t>(generator_->sessions()));
    stats->set_session_evictions(generator_->session_evictions());
    stats->set_session_reused_tokens(generator_->session_reused_tokens());
  }
  if (metrics) {
    const std::vector<telemetry::MetricSnapshot> snapshot =
        registry_.Snapshot();
    stats->set_prometheus_text(telemetry::FormatPrometheus(snapshot));
    stats->set_metrics_json(telemetry::FormatJson(snapshot));
  }
}

void Service::Impl::SendError(Connection* c, CallIndex call, uint64_t id,
                              const Status& status) {
  Count(call, status.code());
  response_.Clear();
  response_.set_id(id);
  response_.mutable_status()->set_code(static_cast<int>(status.code()));
  response_.mutable_status()->set_message(status.message());
  connections_->Send(c, &response_);
}

void Service::Impl::PostAnswer(uint64_t connection, CallIndex call,
                               wire::Response response) {
  posted_.push_back({connection, call, std::move(response)});
  send_posted_->Schedule();
}

void Service::Impl::SendPostedAnswers() {
  std::vector<PostedAnswer> posted;
  posted.swap(posted_);
  for (PostedAnswer& a : posted) {
    Connection* c = connections_->Find(a.connection);
    if (!c) {
      Count(a.call, StatusCode::kCancelled);  // the client went away
      continue;
    }
    Count(a.call, static_cast<StatusCode>(a.response.status().code()));
    connections_->Send(c, &a.response);
  }
  connections_->FlushDirty();
  if (state_ == State::kDraining) CheckDrained();
}

// ----------------------------------------------------------------- generate

void Service::Impl::HandleGenerate(Connection* c, uint64_t id,
                                   const wire::GenerateRequest& r) {
  if (state_ == State::kDraining) {
    SendError(c, kCallGenerate, id,
              Errorf(StatusCode::kUnavailable, "the daemon is shutting down"));
    return;
  }
  if (slots_->usable()) {
    SendError(c, kCallGenerate, id,
              FailedPrecondition("Generate needs a language model; model '%s' "
                                 "is a graph model (use Infer)",
                                 slots_->serving().name.c_str()));
    return;
  }
  if (!slots_->usable_lm()) {
    SendError(c, kCallGenerate, id, ModelBeingReplaced());
    return;
  }
  const ModelSlots::Hold hold = slots_->Acquire();
  GenerateCall call;
  call.connection = c->id();
  call.id = id;
  call.request = r;
  call.received_ns = MonotonicNs();
  call.slot = hold.slot;
  call.load = hold.load;
  call.model = slots_->usable_lm();
  call.tokenizer = slots_->tokenizer();
  GenerateLimits limits;
  limits.default_max_tokens = config_.llm_max_tokens;
  limits.max_prompt_tokens = config_.llm_max_prompt_tokens;
  limits.max_queue = config_.llm_max_queue;
  Status s = generator_->Submit(std::move(call), limits);
  if (!s.ok()) {
    slots_->Release(hold.slot);
    SendError(c, kCallGenerate, id, s);
  }
}

void Service::Impl::DeliverGenerated(uint64_t connection,
                                     wire::Response&& response, bool final,
                                     int slot) {
  Connection* c = connections_ ? connections_->Find(connection) : nullptr;
  if (final) {
    slots_->Release(slot);
    Count(kCallGenerate, c ? static_cast<StatusCode>(response.status().code())
                           : StatusCode::kCancelled);
  }
  if (c) {
    connections_->SendFrame(c, &response, final);
    connections_->FlushDirty();
  }
  if (final && state_ == State::kDraining) CheckDrained();
}

// --------------------------------------------------------- completions, drain

void Service::Impl::OnCompletions() {
  completed_.clear();
  pool_->TakeCompleted(&completed_);
  const int64_t now = MonotonicNs();
  for (InferJob* job : completed_) {
    if (shadow_ && shadow_->TakeCompleted(job)) continue;
    FinishJob(job, now);
  }
  connections_->FlushDirty();
  // A finished reply can unblock connections that waited to close.
  if (state_ == State::kDraining) CheckDrained();
}

// Answers a job that ran (on a worker or inline) and returns its slot.
void Service::Impl::FinishJob(InferJob* job, int64_t now) {
  --outstanding_;
  metrics_.queue_depth->Set(static_cast<double>(outstanding_));
  metrics_.inflight->Set(static_cast<double>(outstanding_));
  slots_->Release(job->slot);
  free_jobs_.push_back(job);
  if (job->status.ok()) {
    // The compute time per row of the model, smoothed over the last few
    // requests (RunsInline); a new model starts a new estimate.
    const int64_t per_row =
        (job->finished_ns - job->started_ns) / std::max(job->batch, 1);
    if (job->model_load != estimate_load_) {
      estimate_load_ = job->model_load;
      compute_ns_per_row_ = per_row;
    } else {
      compute_ns_per_row_ += (per_row - compute_ns_per_row_) / 8;
    }
  }
  Connection* c = connections_->Find(job->connection_id);
  if (!c) {
    Count(kCallInfer, StatusCode::kCancelled);  // the client left first
    return;
  }
  --c->inflight;
  if (!job->status.ok()) {
    SendError(c, kCallInfer, job->request_id, job->status);
    return;
  }
  response_.Clear();
  response_.set_id(job->request_id);
  FinishInfer(*job, response_.mutable_infer());
  inferences_total_ += static_cast<uint64_t>(job->batch);
  round_trip_->Record(now - job->received_ns);
  metrics_.queue_seconds(kCallInfer)
      ->Record(job->started_ns - job->received_ns);
  metrics_.compute_seconds(kCallInfer)
      ->Record(job->finished_ns - job->started_ns);
  Count(kCallInfer, StatusCode::kOk);
  if (config_.log_requests) {
    ModelEvent(LogLevel::kInfo, job->model, job->request_id,
               "request %llu on connection %llu: %d rows in %lld us",
               static_cast<unsigned long long>(job->request_id),
               static_cast<unsigned long long>(c->id()), job->batch,
               static_cast<long long>((now - job->received_ns) / 1000));
  }
  connections_->Send(c, &response_);
  // After the answer: the staged model may run the same rows, submitted on
  // the loop's next turn once this answer was flushed (never on the
  // client's path; dropped while a request is outstanding).
  if (shadow_) shadow_->Offer(*job, outstanding_ == 0);
}

void Service::Impl::BeginDrain(const char* why) {
  if (state_ == State::kDraining) return;
  state_ = State::kDraining;
  // Generations end now (stop_reason "cancelled"), each with its final
  // frame, rather than run on for as long as they might.
  if (generator_) generator_->CancelAll();
  if (agent_)
    agent_->Shutdown();  // retained `offline` (no will on a clean stop)
  TERND_LOG_NOTICE("%s: draining %zu requests in flight (at most %u ms)", why,
                   outstanding_, config_.drain_timeout_ms);
  Notify("STOPPING=1\nSTATUS=Draining %zu requests", outstanding_);
  connections_->StopListening();
  if (http_) http_->StopListening();
  sd_event_source* s = nullptr;
  int r = sd_event_add_time_relative(event_.get(), &s, CLOCK_MONOTONIC,
                                     uint64_t{config_.drain_timeout_ms} * 1000,
                                     0, &Impl::OnDrainTimeout, this);
  if (r >= 0) {
    sd_event_source_set_description(s, "drain-timeout");
    drain_timer_.reset(s);
  }
  CheckDrained();
}

void Service::Impl::CheckDrained() {
  if (outstanding_ > 0) return;
  if (generator_ && generator_->pending() > 0) return;
  if (!connections_->AllFlushed()) return;
  sd_event_exit(event_.get(), 0);
}

// ------------------------------------------------------------- callbacks

int Service::Impl::OnSignal(sd_event_source*, const struct signalfd_siginfo* si,
                            void* self) {
  Impl* impl = static_cast<Impl*>(self);
  if (si->ssi_signo == SIGHUP) {
    impl->BeginReload();
  } else {
    impl->BeginDrain(si->ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
  }
  return 0;
}

int Service::Impl::OnPool(sd_event_source*, int, uint32_t, void* self) {
  static_cast<Impl*>(self)->OnCompletions();
  return 0;
}

int Service::Impl::OnWatchdog(sd_event_source* s, uint64_t, void* self) {
  Notify("WATCHDOG=1");
  sd_event_source_set_time_relative(
      s, static_cast<Impl*>(self)->watchdog_period_usec_);
  sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
  return 0;
}

int Service::Impl::OnDrainTimeout(sd_event_source*, uint64_t, void* self) {
  Impl* impl = static_cast<Impl*>(self);
  TERND_LOG_WARNING("drain timeout: %zu requests still in flight; exiting",
                    impl->outstanding_);
  sd_event_exit(impl->event_.get(), 0);
  return 0;
}

// ------------------------------------------------------------------ Service

Service::Service(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Service::~Service() = default;

Result<std::unique_ptr<Service>> Service::Start(Config config,
                                                std::string config_path) {
  auto impl = std::make_unique<Impl>(std::move(config), std::move(config_path));
  TERND_RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<Service>(new Service(std::move(impl)));
}

Status Service::Run() { return impl_->Run(); }

}  // namespace ternd::daemon
