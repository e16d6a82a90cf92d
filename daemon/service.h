// The ternd service: wires the daemon's parts on one sd-event loop and
// owns them, in the order they start (and stop in reverse):
//
//   signals (SIGTERM/SIGINT drain, SIGHUP reload)
//   ModelSlots     arena slots, loader thread, swaps (model_slots.h); the
//                  first model placed: an installed update (Updater::Boot)
//                  or the configured one, with its golden check
//   Updater        signed updates, attached to ModelSlots (updater.h)
//   WorkerPool     inference threads; results back through an eventfd
//   Connections    the listening socket and every client (connections.h);
//                  the service is their ConnectionHandler and answers with
//                  the request codec (request_codec.h)
//   HttpFace       optional HTTP listeners ([http]): a client of the
//                  service over a socket pair Connections adopts
//                  (http_face.h)
//   watchdog       pinged by a timer of this loop (notify.h)
//   READY=1, then the fleet link (MQTT) and telemetry
//
// Run() turns the loop until SIGTERM/SIGINT, which stop accepting and drain
// in-flight requests (bounded by server.drain_timeout_ms). SIGHUP re-reads
// the configuration and the model (RELOADING=1 ... READY=1).
//
// docs/protocol.md specifies what goes over the socket.
//
// Thread-safety: every method runs on the thread that calls Run(); the
// worker threads only touch the jobs handed to them, the loader thread only
// the slot it fills.
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
