// Fuzzes timestamp statements through ota/trust.h ApplyTimestamp with the
// fixture's pinned root (mode byte: fleet_fuzz_fixture.h): re-signed inputs
// carry the fixture's timestamp key, so hostile Timestamp payloads reach
// the expiry check and the time floor. The floor must never go backwards.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/fuzz/fleet_fuzz_fixture.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ternd;
  const fuzzing::FleetFixture& f = fuzzing::Fixture();
  std::string envelope;
  if (!fuzzing::EnvelopeForMode(data, size, "timestamp", f.timestamp_keys,
                                &envelope)) {
    return 0;
  }
  for (int64_t system_now : {int64_t{0}, fuzzing::kFuzzNow}) {
    ota::TrustState state = f.Pinned();
    state.time_floor = fuzzing::kFuzzNow - 3600;
    const int64_t floor = state.time_floor;
    ota::ApplyTimestamp(state, envelope, f.policy, system_now).IgnoreError();
    if (state.time_floor < floor) __builtin_trap();
  }
  return 0;
}
