#include "daemon/config.h"

#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <string>

#include "base/file.h"

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
      } else {
        return Error(node,
                     "unknown table [%.*s] (known: [daemon], [server], "
                     "[runtime])",
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
            Uint(node, "runtime.workers", 0, 256, &c->workers));
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
  return cpus < 1 ? 1 : (cpus > 256 ? 256 : static_cast<int>(cpus));
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
  return changes;
}

}  // namespace ternd::daemon
