// Ownership of sd-event objects, and a task that runs on the loop's next
// iteration. Header-only: include it only from targets that link libsystemd
// (daemon/, net/, ota/, telemetry/).
//
// LoopTask is how an object hands work to its owner, or finishes work that
// a caller started, without calling back synchronously: Schedule() only
// marks the task, and the loop runs it once, after the current callback
// has returned (several Schedule() calls before that run it once).
//
// Thread-safety: everything on the loop's thread.
#ifndef TERND_BASE_EVENT_LOOP_H_
#define TERND_BASE_EVENT_LOOP_H_

#include <systemd/sd-event.h>

#include <functional>
#include <memory>
#include <utility>

#include "base/check.h"

namespace ternd {

struct EventSourceDeleter {
  void operator()(sd_event_source* s) const {
    sd_event_source_disable_unref(s);
  }
};
// Disabled and released when reset or destroyed.
using EventSource = std::unique_ptr<sd_event_source, EventSourceDeleter>;

struct EventLoopDeleter {
  void operator()(sd_event* e) const { sd_event_unref(e); }
};
using EventLoop = std::unique_ptr<sd_event, EventLoopDeleter>;

class LoopTask {
 public:
  // `name` describes the event source (sd_event_source_get_description).
  LoopTask(sd_event* loop, const char* name, std::function<void()> run)
      : loop_(loop), name_(name), run_(std::move(run)) {}
  LoopTask(const LoopTask&) = delete;
  LoopTask& operator=(const LoopTask&) = delete;

  // Runs the task on a later iteration of the loop (once, however often
  // this is called before then).
  void Schedule() {
    if (!source_) {
      sd_event_source* s = nullptr;
      // Fails only without memory, when nothing else could proceed either.
      TERND_CHECK(sd_event_add_defer(loop_, &s, &LoopTask::Run, this) >= 0);
      sd_event_source_set_description(s, name_);
      source_.reset(s);
    }
    sd_event_source_set_enabled(source_.get(), SD_EVENT_ONESHOT);
  }

 private:
  static int Run(sd_event_source*, void* self) {
    static_cast<LoopTask*>(self)->run_();
    return 0;
  }

  sd_event* loop_;
  const char* name_;
  std::function<void()> run_;
  EventSource source_;
};

}  // namespace ternd

#endif  // TERND_BASE_EVENT_LOOP_H_
