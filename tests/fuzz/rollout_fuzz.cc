// Fuzzes staged waves and rollout halts (ota/waves.h) with the fixture's
// pinned root (fleet_fuzz_fixture.h). The first byte chooses:
//   bit 1 clear: a halt envelope, through VerifyRolloutHalt (bit 0 is the
//     mode byte: 1 re-signs the payload with the fixture's release key, as
//     role "halt", so hostile RolloutHalt payloads reach the checks);
//   bit 1 set: the rest is a Release whose wave schedule is validated;
//     a valid one must behave: the percentage never decreases with time,
//     and a device's wave opens exactly when its percentage is reached.
#include <cstddef>
#include <cstdint>
#include <string>

#include "ota/waves.h"
#include "tests/fuzz/fleet_fuzz_fixture.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ternd;
  const fuzzing::FleetFixture& f = fuzzing::Fixture();
  if (size < 1) return 0;
  if ((data[0] & 2) == 0) {
    std::string envelope;
    if (!fuzzing::EnvelopeForMode(data, size, ota::kHaltRole, f.release_keys,
                                  &envelope)) {
      return 0;
    }
    const ota::TrustState state = f.Pinned();
    for (int64_t now : {int64_t{0}, fuzzing::kFuzzNow}) {
      auto h = ota::VerifyRolloutHalt(state, envelope, f.policy, now);
      if (h.ok() && h->rollout_id().empty()) __builtin_trap();
    }
    return 0;
  }
  ota::Release r;
  if (!r.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  if (!ota::ValidateWaveSchedule(r).ok() || !r.has_waves()) return 0;
  const ota::WaveSchedule& w = r.waves();
  const uint64_t place = ota::WavePlace(r.rollout_id(), f.device.id);
  uint32_t last = 0;
  for (const ota::WaveStep& s : w.steps()) {
    const int64_t t = w.start() + s.offset_s();
    const uint32_t before = ota::WavePercentAt(w, t - 1);
    const uint32_t at = ota::WavePercentAt(w, t);
    if (before < last || at < before || at != s.percent()) __builtin_trap();
    last = at;
  }
  const std::optional<int64_t> opens = ota::WaveOpensAt(w, place);
  if (opens) {
    if (!ota::InWave(place, ota::WavePercentAt(w, *opens)) ||
        ota::InWave(place, ota::WavePercentAt(w, *opens - 1))) {
      __builtin_trap();
    }
  } else if (ota::InWave(place, last)) {
    __builtin_trap();
  }
  return 0;
}
