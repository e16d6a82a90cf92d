// What the update machinery needs from the service that serves models:
// place a model into the idle arena slot off the event loop (with its
// golden health check), swap it in between requests, and say what serves.
//
// Thread-safety: every method is called on the event loop's thread, and
// every callback runs there too.
#ifndef TERND_DAEMON_MODEL_HOST_H_
#define TERND_DAEMON_MODEL_HOST_H_

#include <cstdint>
#include <functional>
#include <string>

#include "base/status.h"
#include "runtime/format.h"

namespace ternd::daemon {

struct ModelChange {
  // For logs and STATUS= lines: "update to 'digits' version 3".
  std::string what;
  // Produces the model file. Runs on a loader thread, never on the loop:
  // decompression, hashing and parsing happen here.
  std::function<Result<runtime::ModelFile>()> produce;
  // Refuse a model without a golden input/output pair (updates must be
  // health-checked; only a locally configured model may lack one).
  bool require_golden = false;
  // Swap as soon as the model is staged; otherwise it waits in the idle
  // slot for ActivateStaged() (hot swap only).
  bool swap_when_staged = true;
  // Called on the loop when the change has finished: staged (and swapped
  // when swap_when_staged), or failed with the old model still serving.
  std::function<void(const Status&)> done;
};

struct ServingModel {
  std::string name;
  uint64_t version = 0;
};

class ModelHost {
 public:
  virtual ~ModelHost() = default;
  // Starts a change; FAILED_PRECONDITION while another one runs or a
  // staged model waits, UNAVAILABLE while draining.
  virtual Status ChangeModel(ModelChange change) = 0;
  // Swaps the staged model in between requests; returns how long the swap
  // held the loop, in nanoseconds.
  virtual Result<int64_t> ActivateStaged() = 0;
  // Forgets a staged model (the idle slot is free again).
  virtual void DiscardStaged() = 0;
  virtual ServingModel serving() const = 0;
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_MODEL_HOST_H_
