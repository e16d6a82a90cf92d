// Fuzzes release manifests through ota/trust.h AcceptRelease with the
// fixture's pinned root (mode byte: fleet_fuzz_fixture.h): re-signed inputs
// carry the fixture's release key, so hostile Release payloads reach the
// expiry, target, version, replay, size, chunk-list and runtime-version
// checks. A refusal must leave the trust state unchanged.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/fuzz/fleet_fuzz_fixture.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ternd;
  const fuzzing::FleetFixture& f = fuzzing::Fixture();
  std::string envelope;
  if (!fuzzing::EnvelopeForMode(data, size, "release", f.release_keys,
                                &envelope)) {
    return 0;
  }
  ota::TrustState state = f.Pinned();
  state.highest_sequence = 5;
  const ota::TrustState before = state;
  ota::RejectReason reason;
  auto r = ota::AcceptRelease(state, envelope, f.device, 0, f.policy,
                              fuzzing::kFuzzNow, &reason);
  if (r.ok() != (reason == ota::RejectReason::kNone)) __builtin_trap();
  if (!r.ok()) {
    if (state.highest_sequence != before.highest_sequence ||
        state.time_floor != before.time_floor ||
        state.highest_version_seen != before.highest_version_seen) {
      __builtin_trap();  // a refusal changed the state
    }
    return 0;
  }
  // The same manifest again is fine; nothing older is.
  ota::AcceptRelease(state, envelope, f.device, 0, f.policy, fuzzing::kFuzzNow,
                     &reason)
      .status()
      .IgnoreError();
  return 0;
}
