#include "daemon/rollout_gate.h"

#include <systemd/sd-event.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "ota/waves.h"

namespace ternd::daemon {

RolloutGate::RolloutGate(sd_event* loop, std::string device_id,
                         std::function<void()> wake)
    : loop_(loop), device_id_(std::move(device_id)), wake_(std::move(wake)) {}

RolloutGate::~RolloutGate() { Disarm(); }

GateDecision RolloutGate::Decide(const ota::Release& release,
                                 int64_t trusted_now) const {
  GateDecision d;
  if (const ota::RolloutHalt* h = HaltOf(release.rollout_id())) {
    d.kind = GateDecision::kHalted;
    d.why = "halted: rollout '" + release.rollout_id() + "' was halted";
    if (!h->reason().empty()) d.why += " (" + h->reason() + ")";
    d.why += "; publish a newer release to move this device";
    return d;
  }
  if (!release.has_waves()) return d;
  const ota::WaveSchedule& w = release.waves();
  const uint64_t place = ota::WavePlace(release.rollout_id(), device_id_);
  if (ota::InWave(place, ota::WavePercentAt(w, trusted_now))) return d;
  d.kind = GateDecision::kWait;
  char why[256];
  if (std::optional<int64_t> opens = ota::WaveOpensAt(w, place)) {
    d.opens = *opens;
    std::snprintf(why, sizeof(why),
                  "wave of rollout '%.64s' opens for this device at %lld "
                  "(in %lld s of trusted time)",
                  release.rollout_id().c_str(), static_cast<long long>(*opens),
                  static_cast<long long>(*opens - trusted_now));
  } else {
    std::snprintf(why, sizeof(why),
                  "no wave of rollout '%.64s' reaches this device (its "
                  "last step opens %u%%, this device is at percentile %u)",
                  release.rollout_id().c_str(),
                  w.steps(w.steps_size() - 1).percent(),
                  ota::WavePercentile(place));
  }
  d.why = why;
  return d;
}

void RolloutGate::Arm(int64_t opens, int64_t trusted_now) {
  Disarm();
  constexpr int64_t kRecheckS = 3600;
  const int64_t wait_s = std::clamp<int64_t>(opens - trusted_now, 0, kRecheckS);
  sd_event_add_time_relative(loop_, &timer_, CLOCK_MONOTONIC,
                             static_cast<uint64_t>(wait_s) * 1000000 + 1000, 0,
                             &RolloutGate::OnTimer, this);
  if (timer_) sd_event_source_set_description(timer_, "update-wave");
}

void RolloutGate::Disarm() {
  if (timer_) {
    sd_event_source_disable_unref(timer_);
    timer_ = nullptr;
  }
}

int RolloutGate::OnTimer(sd_event_source*, uint64_t, void* self) {
  auto* gate = static_cast<RolloutGate*>(self);
  gate->Disarm();
  gate->wake_();
  return 0;
}

bool RolloutGate::AddHalt(const ota::RolloutHalt& halt) {
  auto [it, added] = halts_.emplace(halt.rollout_id(), halt);
  if (!added && it->second.issued() < halt.issued()) it->second = halt;
  return added;
}

const ota::RolloutHalt* RolloutGate::HaltOf(
    const std::string& rollout_id) const {
  if (rollout_id.empty()) return nullptr;
  auto it = halts_.find(rollout_id);
  return it == halts_.end() ? nullptr : &it->second;
}

}  // namespace ternd::daemon
