#include "daemon/config.h"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <systemd/sd-id128.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <string>

#include "base/file.h"
#include "net/broker_address.h"

namespace ternd::daemon {
namespace {

constexpr size_t kMaxConfigBytes = 1u << 20;

// Parses one TOML document into a Config, naming origin:line, key and value
// in every error.
class ConfigParser {
 public:
  explicit ConfigParser(const std::string& origin) : origin_(origin) {}

  Status Parse(const toml::table& root, Config* c) {
    for (auto&& [key, node] : root) {
      const std::string_view name = key.str();
      if (!node.is_table()) {
        return Error(node, "top-level key '%.*s' must be a table ([%.*s])",
                     static_cast<int>(name.size()), name.data(),
                     static_cast<int>(name.size()), name.data());
      }
      const toml::table& t = *node.as_table();
      if (name == "daemon") {
        TERND_RETURN_IF_ERROR(Daemon(t, c));
      } else if (name == "server") {
        TERND_RETURN_IF_ERROR(Server(t, c));
      } else if (name == "runtime") {
        TERND_RETURN_IF_ERROR(Runtime(t, c));
      } else if (name == "llm") {
        TERND_RETURN_IF_ERROR(Llm(t, c));
      } else if (name == "device") {
        TERND_RETURN_IF_ERROR(Device(t, c));
      } else if (name == "mqtt") {
        TERND_RETURN_IF_ERROR(Mqtt(t, c));
      } else if (name == "ota") {
        TERND_RETURN_IF_ERROR(Ota(t, c));
      } else if (name == "telemetry") {
        TERND_RETURN_IF_ERROR(Telemetry(t, c));
      } else if (name == "http") {
        TERND_RETURN_IF_ERROR(Http(t, c));
      } else {
        return Error(node,
                     "unknown table [%.*s] (known: [daemon], [server], "
                     "[runtime], [llm], [device], [mqtt], [ota], "
                     "[telemetry], [http])",
                     static_cast<int>(name.size()), name.data());
      }
    }
    return Status::Ok();
  }

 private:
  Status Daemon(const toml::table& t, Config* c) {
    for (auto&& [key, node] : t) {
      const std::string_view k = key.str();
      if (k == "log_level") {
        std::string level;
        TERND_RETURN_IF_ERROR(String(node, "daemon.log_level", &level));
        if (!ParseLogLevel(level, &c->log_level)) {
          return Error(node,
                       "daemon.log_level = \"%s\" is not one of error, "
                       "warning, notice, info, debug",
                       level.c_str());
        }
      } else if (k == "state_directory") {
        TERND_RETURN_IF_ERROR(
            Path(node, "daemon.state_directory", &c->state_directory));
      } else {
        return Unknown(node, "daemon", k);
      }
    }
    return Status::Ok();
  }

  Status Server(const toml::table& t, Config* c) {
    for (auto&& [key, node] : t) {
      const std::string_view k = key.str();
      if (k == "socket") {
        TERND_RETURN_IF_ERROR(Path(node, "server.socket", &c->socket_path));
        if (c->socket_path.size() > 107) {
          return Error(node,
                       "server.socket = \"%s\" is %zu bytes, longer than the "
                       "107 a unix socket path may have",
                       c->socket_path.c_str(), c->socket_path.size());
        }
      } else if (k == "socket_mode") {
        std::string mode;
        TERND_RETURN_IF_ERROR(String(node, "server.socket_mode", &mode));
        char* end = nullptr;
        const unsigned long v = std::strtoul(mode.c_str(), &end, 8);
        if (mode.empty() || *end != '\0' || v > 0777) {
          return Error(node,
                       "server.socket_mode = \"%s\" is not an octal mode "
                       "between \"0000\" and \"0777\" (e.g. \"0660\")",
                       mode.c_str());
        }
        c->socket_mode = static_cast<uint32_t>(v);
      } else if (k == "socket_group") {
        TERND_RETURN_IF_ERROR(
            String(node, "server.socket_group", &c->socket_group));
      } else if (k == "max_frame_bytes") {
        TERND_RETURN_IF_ERROR(Uint(node, "server.max_frame_bytes", 1024,
                                   1u << 30, &c->max_frame_bytes));
      } else if (k == "max_connections") {
        TERND_RETURN_IF_ERROR(Uint(node, "server.max_connections", 1, 1000000,
                                   &c->max_connections));
      } else if (k == "max_inflight_per_connection") {
        TERND_RETURN_IF_ERROR(Uint(node, "server.max_inflight_per_connection",
                                   1, 65536, &c->max_inflight_per_connection));
      } else if (k == "max_queue_depth") {
        TERND_RETURN_IF_ERROR(Uint(node, "server.max_queue_depth", 1, 1000000,
                                   &c->max_queue_depth));
      } else if (k == "max_output_buffer_bytes") {
        TERND_RETURN_IF_ERROR(Uint(node, "server.max_output_buffer_bytes", 4096,
                                   1u << 30, &c->max_output_buffer_bytes));
      } else if (k == "default_deadline_ms") {
        TERND_RETURN_IF_ERROR(Uint(node, "server.default_deadline_ms", 0,
                                   3600000, &c->default_deadline_ms));
      } else if (k == "drain_timeout_ms") {
        TERND_RETURN_IF_ERROR(Uint(node, "server.drain_timeout_ms", 0, 3600000,
                                   &c->drain_timeout_ms));
      } else if (k == "allow_uids") {
        TERND_RETURN_IF_ERROR(
            IdList(node, "server.allow_uids", &c->allow_uids));
      } else if (k == "allow_gids") {
        TERND_RETURN_IF_ERROR(
            IdList(node, "server.allow_gids", &c->allow_gids));
      } else if (k == "log_requests") {
        TERND_RETURN_IF_ERROR(
            Bool(node, "server.log_requests", &c->log_requests));
      } else if (k == "busy_poll_us") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "server.busy_poll_us", 0, 1000000, &c->busy_poll_us));
      } else {
        return Unknown(node, "server", k);
      }
    }
    return Status::Ok();
  }

  Status Runtime(const toml::table& t, Config* c) {
    for (auto&& [key, node] : t) {
      const std::string_view k = key.str();
      if (k == "model") {
        TERND_RETURN_IF_ERROR(Path(node, "runtime.model", &c->model));
      } else if (k == "arena_mb") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "runtime.arena_mb", 1, 65536, &c->arena_mb));
      } else if (k == "workers") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "runtime.workers", 0, 255, &c->workers));
      } else if (k == "inline_max_us") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "runtime.inline_max_us", 0, 1000000, &c->inline_max_us));
      } else if (k == "kernel") {
        TERND_RETURN_IF_ERROR(String(node, "runtime.kernel", &c->kernel));
        if (c->kernel.empty()) {
          return Error(node,
                       "runtime.kernel is empty; use \"auto\" or a "
                       "kernel variant name");
        }
      } else if (k == "swap") {
        TERND_RETURN_IF_ERROR(String(node, "runtime.swap", &c->swap));
        if (c->swap != "hot" && c->swap != "cold") {
          return Error(node,
                       "runtime.swap = \"%s\" is not \"hot\" (two arena "
                       "slots) or \"cold\" (one)",
                       c->swap.c_str());
        }
      } else {
        return Unknown(node, "runtime", k);
      }
    }
    return Status::Ok();
  }

  Status Llm(const toml::table& t, Config* c) {
    for (auto&& [key, node] : t) {
      const std::string_view k = key.str();
      if (k == "max_context") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "llm.max_context", 0, 1u << 20, &c->llm_max_context));
      } else if (k == "sequences") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "llm.sequences", 1, 256, &c->llm_sequences));
      } else if (k == "threads") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "llm.threads", 0, 64, &c->llm_threads));
      } else if (k == "max_tokens") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "llm.max_tokens", 1, 1u << 20, &c->llm_max_tokens));
      } else if (k == "max_prompt_tokens") {
        TERND_RETURN_IF_ERROR(Uint(node, "llm.max_prompt_tokens", 0, 1u << 20,
                                   &c->llm_max_prompt_tokens));
      } else if (k == "max_queue") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "llm.max_queue", 1, 4096, &c->llm_max_queue));
      } else {
        return Unknown(node, "llm", k);
      }
    }
    return Status::Ok();
  }

  Status Device(const toml::table& t, Config* c) {
    for (auto&& [key, node] : t) {
      const std::string_view k = key.str();
      if (k == "id") {
        TERND_RETURN_IF_ERROR(String(node, "device.id", &c->device_id));
        TERND_RETURN_IF_ERROR(TopicLevel(node, "device.id", c->device_id));
      } else if (k == "fleet") {
        TERND_RETURN_IF_ERROR(String(node, "device.fleet", &c->fleet));
        TERND_RETURN_IF_ERROR(TopicLevel(node, "device.fleet", c->fleet));
      } else if (k == "groups") {
        const toml::array* a = node.as_array();
        if (!a) return Error(node, "device.groups must be an array of strings");
        c->device_groups.clear();
        for (const toml::node& item : *a) {
          std::string group;
          TERND_RETURN_IF_ERROR(String(item, "device.groups[]", &group));
          TERND_RETURN_IF_ERROR(TopicLevel(item, "device.groups[]", group));
          c->device_groups.push_back(group);
        }
      } else {
        return Unknown(node, "device", k);
      }
    }
    return Status::Ok();
  }

  Status Mqtt(const toml::table& t, Config* c) {
    for (auto&& [key, node] : t) {
      const std::string_view k = key.str();
      if (k == "broker") {
        TERND_RETURN_IF_ERROR(String(node, "mqtt.broker", &c->mqtt_broker));
        std::string host;
        int port = 0;
        if (!c->mqtt_broker.empty() && !SplitBroker(*c, &host, &port)) {
          return Error(node,
                       "mqtt.broker = \"%s\" is not HOST or HOST:PORT with a "
                       "port in 1..65535",
                       c->mqtt_broker.c_str());
        }
      } else if (k == "tls") {
        TERND_RETURN_IF_ERROR(Bool(node, "mqtt.tls", &c->mqtt_tls));
      } else if (k == "ca_file") {
        TERND_RETURN_IF_ERROR(Path(node, "mqtt.ca_file", &c->mqtt_ca_file));
      } else if (k == "cert_file") {
        TERND_RETURN_IF_ERROR(Path(node, "mqtt.cert_file", &c->mqtt_cert_file));
      } else if (k == "key_file") {
        TERND_RETURN_IF_ERROR(Path(node, "mqtt.key_file", &c->mqtt_key_file));
      } else if (k == "username") {
        TERND_RETURN_IF_ERROR(String(node, "mqtt.username", &c->mqtt_username));
      } else if (k == "password_file") {
        TERND_RETURN_IF_ERROR(
            Path(node, "mqtt.password_file", &c->mqtt_password_file));
      } else if (k == "password") {
        return Error(node,
                     "mqtt.password is not accepted (a secret in the main "
                     "configuration file ends up in backups and bug "
                     "reports); put it in a file readable only by ternd and "
                     "name it with mqtt.password_file");
      } else if (k == "topic_prefix") {
        TERND_RETURN_IF_ERROR(
            String(node, "mqtt.topic_prefix", &c->mqtt_topic_prefix));
        if (c->mqtt_topic_prefix.find_first_of("+#") != std::string::npos ||
            c->mqtt_topic_prefix.starts_with('/') ||
            c->mqtt_topic_prefix.ends_with('/')) {
          return Error(node,
                       "mqtt.topic_prefix = \"%s\" must not contain '+' or "
                       "'#' nor start or end with '/'",
                       c->mqtt_topic_prefix.c_str());
        }
      } else if (k == "keepalive_s") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "mqtt.keepalive_s", 5, 3600, &c->mqtt_keepalive_s));
      } else if (k == "reconnect_min_ms") {
        TERND_RETURN_IF_ERROR(Uint(node, "mqtt.reconnect_min_ms", 10, 3600000,
                                   &c->mqtt_reconnect_min_ms));
      } else if (k == "reconnect_max_ms") {
        TERND_RETURN_IF_ERROR(Uint(node, "mqtt.reconnect_max_ms", 10, 3600000,
                                   &c->mqtt_reconnect_max_ms));
      } else if (k == "max_inflight") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "mqtt.max_inflight", 1, 1000, &c->mqtt_max_inflight));
      } else {
        return Unknown(node, "mqtt", k);
      }
    }
    if (c->mqtt_reconnect_max_ms < c->mqtt_reconnect_min_ms) {
      return InvalidArgument(
          "%s: mqtt.reconnect_max_ms = %u is below mqtt.reconnect_min_ms = %u",
          origin_.c_str(), c->mqtt_reconnect_max_ms, c->mqtt_reconnect_min_ms);
    }
    if (c->mqtt_cert_file.empty() != c->mqtt_key_file.empty()) {
      return InvalidArgument(
          "%s: mqtt.cert_file and mqtt.key_file go together (one is set, the "
          "other is not)",
          origin_.c_str());
    }
    return Status::Ok();
  }

  Status Ota(const toml::table& t, Config* c) {
    for (auto&& [key, node] : t) {
      const std::string_view k = key.str();
      if (k == "enabled") {
        TERND_RETURN_IF_ERROR(Bool(node, "ota.enabled", &c->ota_enabled));
      } else if (k == "root_file") {
        TERND_RETURN_IF_ERROR(Path(node, "ota.root_file", &c->ota_root_file));
      } else if (k == "ca_file") {
        TERND_RETURN_IF_ERROR(Path(node, "ota.ca_file", &c->ota_ca_file));
      } else if (k == "cert_file") {
        TERND_RETURN_IF_ERROR(Path(node, "ota.cert_file", &c->ota_cert_file));
      } else if (k == "key_file") {
        TERND_RETURN_IF_ERROR(Path(node, "ota.key_file", &c->ota_key_file));
      } else if (k == "cache_mb") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "ota.cache_mb", 0, 1 << 20, &c->ota_cache_mb));
      } else if (k == "max_artifact_mb") {
        TERND_RETURN_IF_ERROR(Uint(node, "ota.max_artifact_mb", 1, 1 << 16,
                                   &c->ota_max_artifact_mb));
      } else if (k == "expiry_grace_s") {
        TERND_RETURN_IF_ERROR(Uint(node, "ota.expiry_grace_s", 0, 30 * 86400,
                                   &c->ota_expiry_grace_s));
      } else if (k == "rate_limit_kbps") {
        TERND_RETURN_IF_ERROR(Uint(node, "ota.rate_limit_kbps", 0, 10000000,
                                   &c->ota_rate_limit_kbps));
      } else if (k == "retry_min_ms") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "ota.retry_min_ms", 10, 3600000, &c->ota_retry_min_ms));
      } else if (k == "retry_max_ms") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "ota.retry_max_ms", 10, 86400000, &c->ota_retry_max_ms));
      } else if (k == "probation_s") {
        TERND_RETURN_IF_ERROR(
            Uint(node, "ota.probation_s", 0, 7 * 86400, &c->ota_probation_s));
      } else if (k == "probation_crashes") {
        TERND_RETURN_IF_ERROR(Uint(node, "ota.probation_crashes", 1, 100,
                                   &c->ota_probation_crashes));
      } else {
        return Unknown(node, "ota", k);
      }
    }
    if (c->ota_retry_max_ms < c->ota_retry_min_ms) {
      return InvalidArgument(
          "%s: ota.retry_max_ms = %u is below ota.retry_min_ms = %u",
          origin_.c_str(), c->ota_retry_max_ms, c->ota_retry_min_ms);
    }
    if (c->ota_cert_file.empty() != c->ota_key_file.empty()) {
      return InvalidArgument(
          "%s: ota.cert_file and ota.key_file go together (one is set, the "
          "other is not)",
          origin_.c_str());
    }
    return Status::Ok();
  }

  Status Telemetry(const toml::table& t, Config* c) {
    for (auto&& [key, node] : t) {
      const std::string_view k = key.str();
      if (k == "enabled") {
        TERND_RETURN_IF_ERROR(
            Bool(node, "telemetry.enabled", &c->telemetry_enabled));
      } else if (k == "interval_s") {
        TERND_RETURN_IF_ERROR(Uint(node, "telemetry.interval_s", 1, 86400,
                                   &c->telemetry_interval_s));
      } else if (k == "outbox_max_mb") {
        TERND_RETURN_IF_ERROR(Uint(node, "telemetry.outbox_max_mb", 1, 1 << 16,
                                   &c->telemetry_outbox_max_mb));
      } else if (k == "outbox_max_age_h") {
        TERND_RETURN_IF_ERROR(Uint(node, "telemetry.outbox_max_age_h", 1,
                                   24 * 365, &c->telemetry_outbox_max_age_h));
      } else if (k == "textfile") {
        TERND_RETURN_IF_ERROR(
            Path(node, "telemetry.textfile", &c->telemetry_textfile));
      } else if (k == "quality") {
        TERND_RETURN_IF_ERROR(
            Bool(node, "telemetry.quality", &c->telemetry_quality));
      } else if (k == "quality_inputs") {
        TERND_RETURN_IF_ERROR(Bool(node, "telemetry.quality_inputs",
                                   &c->telemetry_quality_inputs));
      } else {
        return Unknown(node, "telemetry", k);
      }
    }
    return Status::Ok();
  }

  Status Http(const toml::table& t, Config* c) {
    for (auto&& [key, node] : t) {
      const std::string_view k = key.str();
      if (k == "socket") {
        TERND_RETURN_IF_ERROR(Path(node, "http.socket", &c->http_socket));
        if (c->http_socket.size() > 107) {
          return Error(node,
                       "http.socket = \"%s\" is %zu bytes, longer than the "
                       "107 a unix socket path may have",
                       c->http_socket.c_str(), c->http_socket.size());
        }
      } else if (k == "socket_mode") {
        std::string mode;
        TERND_RETURN_IF_ERROR(String(node, "http.socket_mode", &mode));
        char* end = nullptr;
        const unsigned long v = std::strtoul(mode.c_str(), &end, 8);
        if (mode.empty() || *end != '\0' || v > 0777) {
          return Error(node,
                       "http.socket_mode = \"%s\" is not an octal mode "
                       "between \"0000\" and \"0777\" (e.g. \"0660\")",
                       mode.c_str());
        }
        c->http_socket_mode = static_cast<uint32_t>(v);
      } else if (k == "port") {
        TERND_RETURN_IF_ERROR(Uint(node, "http.port", 0, 65535, &c->http_port));
      } else if (k == "address") {
        TERND_RETURN_IF_ERROR(String(node, "http.address", &c->http_address));
        unsigned char buf[16];
        if (inet_pton(AF_INET, c->http_address.c_str(), buf) != 1 &&
            inet_pton(AF_INET6, c->http_address.c_str(), buf) != 1) {
          return Error(node,
                       "http.address = \"%s\" is not an IPv4 or IPv6 "
                       "address (e.g. \"127.0.0.1\", \"::1\", \"0.0.0.0\")",
                       c->http_address.c_str());
        }
      } else if (k == "max_connections") {
        TERND_RETURN_IF_ERROR(Uint(node, "http.max_connections", 1, 100000,
                                   &c->http_max_connections));
      } else if (k == "max_header_bytes") {
        TERND_RETURN_IF_ERROR(Uint(node, "http.max_header_bytes", 1024, 1 << 20,
                                   &c->http_max_header_bytes));
      } else if (k == "max_body_bytes") {
        TERND_RETURN_IF_ERROR(Uint(node, "http.max_body_bytes", 1024, 1u << 30,
                                   &c->http_max_body_bytes));
      } else if (k == "request_timeout_ms") {
        TERND_RETURN_IF_ERROR(Uint(node, "http.request_timeout_ms", 100,
                                   3600000, &c->http_request_timeout_ms));
      } else if (k == "idle_timeout_s") {
        TERND_RETURN_IF_ERROR(Uint(node, "http.idle_timeout_s", 1, 86400,
                                   &c->http_idle_timeout_s));
      } else if (k == "token_file") {
        TERND_RETURN_IF_ERROR(
            Path(node, "http.token_file", &c->http_token_file));
      } else {
        return Unknown(node, "http", k);
      }
    }
    return Status::Ok();
  }

  // Ids, fleets and groups become MQTT topic levels.
  Status TopicLevel(const toml::node& node, const char* key,
                    const std::string& value) {
    if (value.empty() || value.size() > 64) {
      return Error(node, "%s must be 1..64 characters (found %zu)", key,
                   value.size());
    }
    for (char ch : value) {
      const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
                      ch == '.';
      if (!ok) {
        return Error(node,
                     "%s = \"%s\" may hold only letters, digits, '-', '_' "
                     "and '.' (it becomes an MQTT topic level)",
                     key, value.c_str());
      }
    }
    return Status::Ok();
  }

  Status Error(const toml::node& node, const char* format, ...)
      __attribute__((format(printf, 3, 4))) {
    char text[Status::kMaxMessage];
    va_list args;
    va_start(args, format);
    std::vsnprintf(text, sizeof(text), format, args);
    va_end(args);
    return InvalidArgument("%s:%u: %s", origin_.c_str(),
                           static_cast<unsigned>(node.source().begin.line),
                           text);
  }

  Status Unknown(const toml::node& node, const char* table,
                 std::string_view key) {
    return Error(node,
                 "unknown key '%s.%.*s' (docs/configuration.md lists "
                 "every key)",
                 table, static_cast<int>(key.size()), key.data());
  }

  Status String(const toml::node& node, const char* key, std::string* out) {
    const std::optional<std::string> v = node.value_exact<std::string>();
    if (!v) return Error(node, "%s must be a string", key);
    *out = *v;
    return Status::Ok();
  }

  Status Path(const toml::node& node, const char* key, std::string* out) {
    TERND_RETURN_IF_ERROR(String(node, key, out));
    if (out->empty()) return Error(node, "%s is an empty path", key);
    if (out->find('\0') != std::string::npos) {
      return Error(node, "%s contains a NUL byte", key);
    }
    return Status::Ok();
  }

  Status Bool(const toml::node& node, const char* key, bool* out) {
    const std::optional<bool> v = node.value_exact<bool>();
    if (!v) return Error(node, "%s must be true or false", key);
    *out = *v;
    return Status::Ok();
  }

  Status Uint(const toml::node& node, const char* key, int64_t min, int64_t max,
              uint32_t* out) {
    const std::optional<int64_t> v = node.value_exact<int64_t>();
    if (!v) return Error(node, "%s must be an integer", key);
    if (*v < min || *v > max) {
      return Error(node, "%s = %" PRId64 " is outside %" PRId64 "..%" PRId64,
                   key, *v, min, max);
    }
    *out = static_cast<uint32_t>(*v);
    return Status::Ok();
  }

  Status IdList(const toml::node& node, const char* key,
                std::vector<uint32_t>* out) {
    const toml::array* a = node.as_array();
    if (!a) return Error(node, "%s must be an array of integer ids", key);
    out->clear();
    for (const toml::node& item : *a) {
      const std::optional<int64_t> v = item.value_exact<int64_t>();
      if (!v || *v < 0 || *v > 0xfffffffe) {
        return Error(item, "%s holds a value that is not an id in 0..%u", key,
                     0xfffffffeu);
      }
      out->push_back(static_cast<uint32_t>(*v));
    }
    return Status::Ok();
  }

  const std::string& origin_;
};

}  // namespace

int Config::ResolvedWorkers() const {
  if (workers > 0) return static_cast<int>(workers);
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return cpus < 1 ? 1 : (cpus > 255 ? 255 : static_cast<int>(cpus));
}

Result<Config> ParseConfig(std::string_view text, const std::string& origin) {
  Config config;
  config.origin = origin;
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    const std::string_view what = e.description();
    return InvalidArgument("%s:%u:%u: %.*s", origin.c_str(),
                           static_cast<unsigned>(e.source().begin.line),
                           static_cast<unsigned>(e.source().begin.column),
                           static_cast<int>(what.size()), what.data());
  }
  ConfigParser parser(origin);
  TERND_RETURN_IF_ERROR(parser.Parse(root, &config));
  return config;
}

Result<Config> LoadConfig(const std::string& path) {
  Result<std::vector<uint8_t>> bytes = ReadFile(path, kMaxConfigBytes);
  if (!bytes.ok()) return bytes.status();
  return ParseConfig(
      std::string_view(reinterpret_cast<const char*>(bytes->data()),
                       bytes->size()),
      path);
}

Result<Config> ResolveConfig(const std::string& explicit_path) {
  if (!explicit_path.empty()) return LoadConfig(explicit_path);
  struct stat st;
  if (stat(kDefaultConfigPath, &st) == 0) return LoadConfig(kDefaultConfigPath);
  if (errno != ENOENT) {
    return ErrnoError(errno, "cannot stat %s", kDefaultConfigPath);
  }
  return Config();
}

std::string ResolvedDeviceId(const Config& config) {
  if (!config.device_id.empty()) return config.device_id;
  // An application-specific id: the machine id itself must not be exposed
  // (machine-id(5)). Same derivation as sd_id128_get_machine_app_specific.
  sd_id128_t id;
  const sd_id128_t app = SD_ID128_MAKE(7e, 51, 2c, 0d, 9a, 43, 4b, 1f, 8e, 63,
                                       d2, 11, 5a, 90, c4, 37);
  if (sd_id128_get_machine_app_specific(app, &id) < 0) return "unknown-device";
  char hex[SD_ID128_STRING_MAX];
  sd_id128_to_string(id, hex);
  return std::string("ternd-") + std::string(hex, 16);
}

std::string ResolvedTopicPrefix(const Config& config) {
  if (!config.mqtt_topic_prefix.empty()) return config.mqtt_topic_prefix;
  return "ternd/v1/" + config.fleet;
}

bool SplitBroker(const Config& config, std::string* host, int* port) {
  return net::ParseBrokerAddress(config.mqtt_broker,
                                 config.mqtt_tls ? 8883 : 1883, host, port)
             .ok() &&
         host->find_first_of(" /") == std::string::npos;
}

void KeepRestartOnly(const Config& running, Config* next) {
  Config c = running;
  // The live keys come from `next`.
  c.origin = next->origin;
  c.log_level = next->log_level;
  c.max_frame_bytes = next->max_frame_bytes;
  c.max_connections = next->max_connections;
  c.max_inflight_per_connection = next->max_inflight_per_connection;
  c.max_output_buffer_bytes = next->max_output_buffer_bytes;
  c.default_deadline_ms = next->default_deadline_ms;
  c.drain_timeout_ms = next->drain_timeout_ms;
  c.allow_uids = next->allow_uids;
  c.allow_gids = next->allow_gids;
  c.log_requests = next->log_requests;
  c.model = next->model;
  c.llm_max_tokens = next->llm_max_tokens;
  c.llm_max_prompt_tokens = next->llm_max_prompt_tokens;
  c.llm_max_queue = next->llm_max_queue;
  *next = std::move(c);
}

std::vector<std::string> RestartOnlyChanges(const Config& a, const Config& b) {
  std::vector<std::string> changes;
  auto note = [&changes](const char* key, const std::string& from,
                         const std::string& to) {
    if (from != to)
      changes.push_back(std::string(key) + " (" + from + " -> " + to + ")");
  };
  auto num = [](uint64_t v) { return std::to_string(v); };
  auto octal = [](uint32_t v) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "%04o", v);
    return std::string(buf);
  };
  note("daemon.state_directory", a.state_directory, b.state_directory);
  note("server.socket", a.socket_path, b.socket_path);
  note("server.socket_mode", octal(a.socket_mode), octal(b.socket_mode));
  note("server.socket_group", a.socket_group, b.socket_group);
  note("server.max_queue_depth", num(a.max_queue_depth),
       num(b.max_queue_depth));
  note("runtime.arena_mb", num(a.arena_mb), num(b.arena_mb));
  note("runtime.workers", num(a.workers), num(b.workers));
  note("runtime.kernel", a.kernel, b.kernel);
  note("runtime.swap", a.swap, b.swap);
  note("llm.max_context", num(a.llm_max_context), num(b.llm_max_context));
  note("llm.sequences", num(a.llm_sequences), num(b.llm_sequences));
  note("llm.threads", num(a.llm_threads), num(b.llm_threads));
  auto yes = [](bool v) { return std::string(v ? "true" : "false"); };
  auto list = [](const std::vector<std::string>& v) {
    std::string out = "[";
    for (const std::string& s : v) out += (out.size() > 1 ? "," : "") + s;
    return out + "]";
  };
  note("device.id", a.device_id, b.device_id);
  note("device.fleet", a.fleet, b.fleet);
  note("device.groups", list(a.device_groups), list(b.device_groups));
  note("mqtt.broker", a.mqtt_broker, b.mqtt_broker);
  note("mqtt.tls", yes(a.mqtt_tls), yes(b.mqtt_tls));
  note("mqtt.ca_file", a.mqtt_ca_file, b.mqtt_ca_file);
  note("mqtt.cert_file", a.mqtt_cert_file, b.mqtt_cert_file);
  note("mqtt.key_file", a.mqtt_key_file, b.mqtt_key_file);
  note("mqtt.username", a.mqtt_username, b.mqtt_username);
  note("mqtt.password_file", a.mqtt_password_file, b.mqtt_password_file);
  note("mqtt.topic_prefix", a.mqtt_topic_prefix, b.mqtt_topic_prefix);
  note("mqtt.keepalive_s", num(a.mqtt_keepalive_s), num(b.mqtt_keepalive_s));
  note("mqtt.reconnect_min_ms", num(a.mqtt_reconnect_min_ms),
       num(b.mqtt_reconnect_min_ms));
  note("mqtt.reconnect_max_ms", num(a.mqtt_reconnect_max_ms),
       num(b.mqtt_reconnect_max_ms));
  note("mqtt.max_inflight", num(a.mqtt_max_inflight), num(b.mqtt_max_inflight));
  note("ota.enabled", yes(a.ota_enabled), yes(b.ota_enabled));
  note("ota.root_file", a.ota_root_file, b.ota_root_file);
  note("ota.ca_file", a.ota_ca_file, b.ota_ca_file);
  note("ota.cert_file", a.ota_cert_file, b.ota_cert_file);
  note("ota.key_file", a.ota_key_file, b.ota_key_file);
  note("ota.cache_mb", num(a.ota_cache_mb), num(b.ota_cache_mb));
  note("ota.max_artifact_mb", num(a.ota_max_artifact_mb),
       num(b.ota_max_artifact_mb));
  note("ota.expiry_grace_s", num(a.ota_expiry_grace_s),
       num(b.ota_expiry_grace_s));
  note("ota.rate_limit_kbps", num(a.ota_rate_limit_kbps),
       num(b.ota_rate_limit_kbps));
  note("ota.retry_min_ms", num(a.ota_retry_min_ms), num(b.ota_retry_min_ms));
  note("ota.retry_max_ms", num(a.ota_retry_max_ms), num(b.ota_retry_max_ms));
  note("ota.probation_s", num(a.ota_probation_s), num(b.ota_probation_s));
  note("ota.probation_crashes", num(a.ota_probation_crashes),
       num(b.ota_probation_crashes));
  note("telemetry.enabled", yes(a.telemetry_enabled), yes(b.telemetry_enabled));
  note("telemetry.interval_s", num(a.telemetry_interval_s),
       num(b.telemetry_interval_s));
  note("telemetry.outbox_max_mb", num(a.telemetry_outbox_max_mb),
       num(b.telemetry_outbox_max_mb));
  note("telemetry.outbox_max_age_h", num(a.telemetry_outbox_max_age_h),
       num(b.telemetry_outbox_max_age_h));
  note("telemetry.textfile", a.telemetry_textfile, b.telemetry_textfile);
  note("telemetry.quality", yes(a.telemetry_quality), yes(b.telemetry_quality));
  note("telemetry.quality_inputs", yes(a.telemetry_quality_inputs),
       yes(b.telemetry_quality_inputs));
  note("http.socket", a.http_socket, b.http_socket);
  note("http.socket_mode", octal(a.http_socket_mode),
       octal(b.http_socket_mode));
  note("http.address", a.http_address, b.http_address);
  note("http.port", num(a.http_port), num(b.http_port));
  note("http.max_connections", num(a.http_max_connections),
       num(b.http_max_connections));
  note("http.max_header_bytes", num(a.http_max_header_bytes),
       num(b.http_max_header_bytes));
  note("http.max_body_bytes", num(a.http_max_body_bytes),
       num(b.http_max_body_bytes));
  note("http.request_timeout_ms", num(a.http_request_timeout_ms),
       num(b.http_request_timeout_ms));
  note("http.idle_timeout_s", num(a.http_idle_timeout_s),
       num(b.http_idle_timeout_s));
  note("http.token_file", a.http_token_file, b.http_token_file);
  return changes;
}

}  // namespace ternd::daemon
