// ternd: the inference daemon. Reads its configuration, starts the service
// and serves until SIGTERM; see daemon/service.h for the order of things.
#include <google/protobuf/stubs/logging.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <string>

#include "base/log.h"
#include "daemon/config.h"
#include "daemon/service.h"

namespace ternd::daemon {
namespace {

// protobuf logs an error line for every string field with invalid UTF-8 it
// parses. Requests come from untrusted clients, who already get an error
// frame for such a request: keep those lines out of the journal unless
// debugging.
void ProtobufLog(google::protobuf::LogLevel level, const char* file, int line,
                 const std::string& message) {
  if (level == google::protobuf::LOGLEVEL_FATAL) {
    TERND_LOG_ERROR("protobuf %s:%d: %s", file, line, message.c_str());
  } else {
    TERND_LOG_DEBUG("protobuf %s:%d: %s", file, line, message.c_str());
  }
}

int Fail(const Status& status) {
  TERND_LOG_ERROR("%s", status.message());
  return 1;
}

int Run(int argc, char** argv) {
  CLI::App app{"ternd: ternary neural network inference daemon"};
  std::string config_path;
  bool check_only = false;
  app.add_option("-c,--config", config_path,
                 std::string("Configuration file (default: ") +
                     kDefaultConfigPath +
                     " if it exists, else the embedded default)");
  app.add_flag("--check-config", check_only,
               "Validate the configuration and exit");
  app.set_version_flag("--version", "ternd " TERND_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  Result<Config> config = ResolveConfig(config_path);
  if (!config.ok()) return Fail(config.status());
  if (check_only) {
    std::printf("%s: OK\n", config->origin.c_str());
    return 0;
  }
  google::protobuf::SetLogHandler(&ProtobufLog);
  Status s = BlockServiceSignals();
  if (!s.ok()) return Fail(s);
  Result<std::unique_ptr<Service>> service =
      Service::Start(std::move(*config), config_path);
  if (!service.ok()) return Fail(service.status());
  s = (*service)->Run();
  if (!s.ok()) return Fail(s);
  return 0;
}

}  // namespace
}  // namespace ternd::daemon

int main(int argc, char** argv) { return ternd::daemon::Run(argc, argv); }
