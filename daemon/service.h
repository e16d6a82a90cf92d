// The ternd service: one sd-event loop that owns the unix listener, every
// client connection, signals, timers and the systemd watchdog, in front of
// the worker pool that runs inference on the arena runtime.
//
// Start() acquires, in order: signal handling, the runtime arena, the model
// (with its golden health check), the worker pool and its eventfd, the
// listening socket (passed by systemd or created), the watchdog; then tells
// systemd READY=1. Run() turns the loop until SIGTERM/SIGINT, which stop
// accepting and drain in-flight requests (bounded by
// server.drain_timeout_ms). The destructor releases everything in reverse.
// SIGHUP re-reads the configuration and the model (RELOADING=1 ... READY=1).
//
// docs/protocol.md specifies what goes over the socket.
//
// Thread-safety: every method runs on the thread that calls Run(); the
// worker threads only touch the jobs handed to them.
#ifndef TERND_DAEMON_SERVICE_H_
#define TERND_DAEMON_SERVICE_H_

#include <memory>
#include <string>

#include "base/status.h"
#include "daemon/config.h"

namespace ternd::daemon {

class Service {
 public:
  // `config_path` is what --config named (empty: the default lookup); it is
  // read again on SIGHUP.
  static Result<std::unique_ptr<Service>> Start(Config config,
                                                std::string config_path);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Serves until told to stop; OK after a clean drain.
  Status Run();

 private:
  class Impl;
  explicit Service(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Signals the service handles through its loop. They must be blocked in
// every thread before Start() (workers inherit the mask): call this first.
Status BlockServiceSignals();

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_SERVICE_H_
