// ternd's configuration: /etc/ternd/ternd.toml (TOML), or the embedded
// default when there is no file at all.
//
// Every key is documented with its default in docs/configuration.md. Parsing
// checks every value and refuses unknown keys; errors name the file, line,
// key and the offending value. The embedded default serves the bundled demo
// model with the socket under the working directory and needs no network.
//
// Thread-safety: a Config is a plain value.
#ifndef TERND_DAEMON_CONFIG_H_
#define TERND_DAEMON_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/log.h"
#include "base/status.h"

namespace ternd::daemon {

// Where the daemon looks for its configuration when --config is not given.
inline constexpr char kDefaultConfigPath[] = "/etc/ternd/ternd.toml";
// The model served by the embedded default (relative to the working
// directory). The one place that names the bundled model.
inline constexpr char kDefaultModelPath[] = "models/digits.tern";
// Socket of the embedded default (relative to the working directory).
inline constexpr char kDefaultSocketPath[] = "ternd.sock";

struct Config {
  // Where this configuration came from: a path, or "embedded default".
  std::string origin = "embedded default";

  // [daemon]
  LogLevel log_level = LogLevel::kInfo;
  std::string state_directory = ".";

  // [server]
  std::string socket_path = kDefaultSocketPath;
  uint32_t socket_mode = 0660;
  std::string socket_group;  // empty: the daemon's own group
  uint32_t max_frame_bytes = 4u << 20;
  uint32_t max_connections = 1024;
  uint32_t max_inflight_per_connection = 128;
  uint32_t max_queue_depth = 4096;
  uint32_t max_output_buffer_bytes = 16u << 20;
  uint32_t default_deadline_ms = 0;  // 0: no deadline
  uint32_t drain_timeout_ms = 10000;
  std::vector<uint32_t> allow_uids;  // both empty: any peer that can connect
  std::vector<uint32_t> allow_gids;
  bool log_requests = false;
  // After each request the event loop polls instead of sleeping for this
  // long (lower latency for back-to-back requests, at the cost of a busy
  // core); 0: never.
  uint32_t busy_poll_us = 0;

  // [runtime]
  std::string model = kDefaultModelPath;
  uint32_t arena_mb = 64;
  uint32_t workers = 0;  // 0: one per online CPU
  std::string kernel = "auto";
  std::string swap = "hot";  // "hot" (two slots) or "cold" (one)
  // Requests whose model recently computed in at most this many
  // microseconds per row run on the event loop thread when no worker is
  // busy (two thread hand-offs fewer); 0: always through the workers.
  uint32_t inline_max_us = 25;

  // [llm] (language models; docs/llm.md)
  uint32_t llm_max_context = 0;   // tokens per sequence; 0: model's, <= 4096
  uint32_t llm_sequences = 1;     // generations in progress at once
  uint32_t llm_threads = 0;       // team members; 0: every CPU
  uint32_t llm_max_tokens = 256;  // default GenerateRequest.max_tokens
  uint32_t llm_max_prompt_tokens = 0;  // 0: the context
  uint32_t llm_max_queue = 16;         // Generate calls waiting

  // [device]
  std::string device_id;  // empty: derived from /etc/machine-id
  std::string fleet = "default";
  std::vector<std::string> device_groups;

  // [mqtt]: the fleet broker; an empty broker means no network at all.
  std::string mqtt_broker;  // "host:port"
  bool mqtt_tls = true;
  std::string mqtt_ca_file;
  std::string mqtt_cert_file;
  std::string mqtt_key_file;
  std::string mqtt_username;
  std::string mqtt_password_file;
  std::string mqtt_topic_prefix;  // empty: "ternd/v1/<fleet>"
  uint32_t mqtt_keepalive_s = 30;
  uint32_t mqtt_reconnect_min_ms = 500;
  uint32_t mqtt_reconnect_max_ms = 60000;
  uint32_t mqtt_max_inflight = 16;

  // [ota]
  bool ota_enabled = true;
  std::string ota_root_file = "/etc/ternd/keys/root.pb";
  std::string ota_ca_file;  // empty: mqtt.ca_file
  std::string ota_cert_file;
  std::string ota_key_file;
  uint32_t ota_cache_mb = 512;
  uint32_t ota_max_artifact_mb = 1024;
  uint32_t ota_expiry_grace_s = 300;
  uint32_t ota_rate_limit_kbps = 0;  // 0: unlimited
  uint32_t ota_retry_min_ms = 1000;
  uint32_t ota_retry_max_ms = 300000;
  uint32_t ota_probation_s = 600;
  uint32_t ota_probation_crashes = 2;

  // [telemetry]
  bool telemetry_enabled = true;  // needs mqtt.broker to leave the device
  uint32_t telemetry_interval_s = 10;
  uint32_t telemetry_outbox_max_mb = 16;
  uint32_t telemetry_outbox_max_age_h = 168;
  std::string telemetry_textfile;  // empty: none
  // Model-quality statistics, and with them input feature statistics.
  bool telemetry_quality = true;
  bool telemetry_quality_inputs = true;

  // [http] (docs/http.md): off unless a socket or a port is set.
  std::string http_socket;  // empty: no unix socket
  uint32_t http_socket_mode = 0660;
  std::string http_address = "127.0.0.1";
  uint32_t http_port = 0;  // 0: no TCP listener
  uint32_t http_max_connections = 64;
  uint32_t http_max_header_bytes = 16384;
  uint32_t http_max_body_bytes = 4u << 20;
  uint32_t http_request_timeout_ms = 30000;
  uint32_t http_idle_timeout_s = 15;
  std::string http_token_file;  // empty: no token

  // Workers after resolving 0 to the number of online CPUs.
  int ResolvedWorkers() const;
};

// The device id: device.id, or one derived from /etc/machine-id (an
// application-specific hash, so the machine id itself never leaves the
// device), or "unknown-device" when neither exists.
std::string ResolvedDeviceId(const Config& config);

// mqtt.topic_prefix, or "ternd/v1/<fleet>".
std::string ResolvedTopicPrefix(const Config& config);

// Splits mqtt.broker "host:port" (port defaults to 8883 with TLS, 1883
// without).
bool SplitBroker(const Config& config, std::string* host, int* port);

// Parses TOML text. `origin` (usually the path) prefixes every error.
Result<Config> ParseConfig(std::string_view text, const std::string& origin);

// Reads and parses `path`.
Result<Config> LoadConfig(const std::string& path);

// The configuration to start with: `explicit_path` when given (it must
// exist); otherwise kDefaultConfigPath if it exists; otherwise the embedded
// default.
Result<Config> ResolveConfig(const std::string& explicit_path);

// Keys whose new value in `next` cannot be applied without a restart, as
// "key (old -> new)" strings, for the SIGHUP reload to report.
std::vector<std::string> RestartOnlyChanges(const Config& current,
                                            const Config& next);

// Copies every restart-only key from `running` into `next`, so a reload
// changes only what can change live.
void KeepRestartOnly(const Config& running, Config* next);

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_CONFIG_H_
