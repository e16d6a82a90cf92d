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

  // [runtime]
  std::string model = kDefaultModelPath;
  uint32_t arena_mb = 64;
  uint32_t workers = 0;  // 0: one per online CPU
  std::string kernel = "auto";
  std::string swap = "hot";  // "hot" (two slots) or "cold" (one)

  // Workers after resolving 0 to the number of online CPUs.
  int ResolvedWorkers() const;
};

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

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_CONFIG_H_
