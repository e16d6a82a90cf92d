// The device's side of staged waves and rollout halts (docs/ota.md,
// "Staged waves", "Halting a rollout"): whether an accepted release may
// start now, must wait for its wave, or belongs to a halted rollout; and
// the timer that wakes the updater when a waiting release's wave opens.
//
// Decisions are taken at trusted time (ota/trust.h), which the caller
// passes in: a signed timestamp that moves the time floor forward opens a
// wave as the clock would, and a device whose clock is at 1970 waits for
// the floor rather than taking every wave at once or none.
//
// Halts are kept in memory: they are retained on the broker and delivered
// again on every connect, before the release topics (FleetLink subscribes
// to them first); a halted release already recorded as rejected is
// remembered by the update record.
//
// Thread-safety: the event loop's thread.
#ifndef TERND_DAEMON_ROLLOUT_GATE_H_
#define TERND_DAEMON_ROLLOUT_GATE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "ota/metadata.pb.h"

typedef struct sd_event sd_event;
typedef struct sd_event_source sd_event_source;

namespace ternd::daemon {

struct GateDecision {
  enum Kind { kGo, kWait, kHalted };
  Kind kind = kGo;
  // kWait: when the wave opens for this device (unix seconds, trusted
  // time), 0 when no step of the schedule ever reaches it.
  int64_t opens = 0;
  std::string why;  // kWait / kHalted: for the log and the report
};

class RolloutGate {
 public:
  // `wake` runs on the loop when an armed wave time is reached (checked
  // again then: the clock may have moved).
  RolloutGate(sd_event* loop, std::string device_id,
              std::function<void()> wake);
  ~RolloutGate();
  RolloutGate(const RolloutGate&) = delete;
  RolloutGate& operator=(const RolloutGate&) = delete;

  GateDecision Decide(const ota::Release& release, int64_t trusted_now) const;

  // Wakes the owner at `opens` (trusted time, now `trusted_now`), at the
  // latest in an hour (then it decides again); replaces any earlier timer.
  void Arm(int64_t opens, int64_t trusted_now);
  void Disarm();

  // Remembers a verified halt; true when it is news.
  bool AddHalt(const ota::RolloutHalt& halt);
  const ota::RolloutHalt* HaltOf(const std::string& rollout_id) const;

 private:
  static int OnTimer(sd_event_source* s, uint64_t usec, void* self);

  sd_event* loop_;
  std::string device_id_;
  std::function<void()> wake_;
  sd_event_source* timer_ = nullptr;
  std::map<std::string, ota::RolloutHalt> halts_;  // by rollout id
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_ROLLOUT_GATE_H_
