// Fuzzes the offline bundle parser (ota/bundle.h), which `ternctl install`
// feeds untrusted files, and then does with an accepted bundle what the
// daemon does: rotate from the fixture's pinned root through the bundled
// roots, apply the timestamp, check the release.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ota/bundle.h"
#include "tests/fuzz/fleet_fuzz_fixture.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ternd;
  const fuzzing::FleetFixture& f = fuzzing::Fixture();
  auto bundle = ota::ParseBundle(
      std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!bundle.ok()) return 0;
  if (bundle->roots.size() != bundle->root_envelopes.size() ||
      bundle->artifact.size() != bundle->release.artifact_length()) {
    __builtin_trap();  // the parser let an inconsistent bundle through
  }
  ota::TrustState state = f.Pinned();
  for (size_t i = 0; i < bundle->roots.size(); ++i) {
    if (bundle->roots[i].version() <= state.root.version()) continue;
    if (!ota::RotateRoot(state, bundle->root_envelopes[i], f.policy,
                         fuzzing::kFuzzNow)
             .ok()) {
      return 0;
    }
  }
  if (!bundle->timestamp_envelope.empty()) {
    ota::ApplyTimestamp(state, bundle->timestamp_envelope, f.policy,
                        fuzzing::kFuzzNow)
        .IgnoreError();
  }
  ota::RejectReason reason;
  ota::AcceptRelease(state, bundle->release_envelope, f.device, 0, f.policy,
                     fuzzing::kFuzzNow, &reason)
      .status()
      .IgnoreError();
  return 0;
}
