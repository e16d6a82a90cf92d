// Fuzzes signed envelopes as a device meets them: as its pinned root file
// (parse, self-signature threshold) and as metadata of each role checked
// against a fixed pinned root's keys (ota/signing.h VerifyEnvelope with
// hostile key ids, signature lengths and roles).
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "tests/fuzz/fleet_fuzz_fixture.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ternd;
  const fuzzing::FleetFixture& f = fuzzing::Fixture();
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  ota::TrustFromPinnedRoot(bytes).status().IgnoreError();
  ota::SignedEnvelope env;
  if (!env.ParseFromString(bytes)) return 0;
  static const ota::TrustState state = f.Pinned();
  static const std::map<std::string, ota::Ed25519PublicKey> known = [] {
    std::map<std::string, ota::Ed25519PublicKey> m;
    for (const ota::PublicKey& k : state.root.keys()) {
      ota::Ed25519PublicKey key;
      std::copy(k.ed25519().begin(), k.ed25519().end(), key.begin());
      m[k.key_id()] = key;
    }
    return m;
  }();
  ota::VerifyEnvelope(env, "root", state.root.root(), known).IgnoreError();
  ota::VerifyEnvelope(env, "release", state.root.release(), known)
      .IgnoreError();
  ota::VerifyEnvelope(env, "timestamp", state.root.timestamp(), known)
      .IgnoreError();
  return 0;
}
