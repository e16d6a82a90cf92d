// Fuzzes root rotation: a device pinned to the fixture's root 1 is offered
// a new root (mode byte: fleet_fuzz_fixture.h). Re-signed inputs carry the
// fixture's root keys, so hostile Root payloads reach the version, fleet,
// key table, threshold and expiry checks; an accepted root is then used to
// verify a release and a timestamp, as the daemon would.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/fuzz/fleet_fuzz_fixture.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ternd;
  const fuzzing::FleetFixture& f = fuzzing::Fixture();
  std::string envelope;
  if (!fuzzing::EnvelopeForMode(data, size, "root", f.root_keys, &envelope)) {
    return 0;
  }
  ota::TrustState state = f.Pinned();
  if (!ota::RotateRoot(state, envelope, f.policy, fuzzing::kFuzzNow).ok()) {
    return 0;
  }
  if (state.root.version() != 2) __builtin_trap();  // rotation is +1 only
  static const std::string release = fuzzing::FixtureFile("release.pb");
  ota::RejectReason reason;
  ota::AcceptRelease(state, release, f.device, 0, f.policy, fuzzing::kFuzzNow,
                     &reason)
      .status()
      .IgnoreError();
  return 0;
}
