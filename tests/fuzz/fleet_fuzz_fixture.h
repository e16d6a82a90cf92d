// The fixed world the signed-metadata fuzz targets run in: the pinned root
// (fleet_fixture/root-1.pb, made by tests/fuzz/make_fleet_fixture.sh with
// the real ternctl), the fixture's test-only keys, a device and a fixed
// clock, so that a run never depends on the date.
//
// Root, release and timestamp targets take a mode byte first:
//   0: the rest is a serialized SignedEnvelope, checked as is (parsers and
//      signature verification see hostile envelopes);
//   1: the rest is parsed as a SignedEnvelope whose payload is re-signed
//      with the fixture's keys for the role, so that every check after the
//      signature sees hostile payloads too.
#ifndef TERND_TESTS_FUZZ_FLEET_FUZZ_FIXTURE_H_
#define TERND_TESTS_FUZZ_FLEET_FUZZ_FIXTURE_H_

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ota/keys.h"
#include "ota/signing.h"
#include "ota/trust.h"

namespace ternd::fuzzing {

inline constexpr int64_t kFuzzNow = 1795500000;  // 2026-11-24

inline std::string FixtureFile(const std::string& name) {
  std::ifstream in(std::string(TERND_FLEET_FIXTURE_DIR) + "/" + name,
                   std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  if (!in && s.str().empty()) __builtin_trap();
  return s.str();
}

// Reads the key file's PEM directly: git does not keep the 0600 mode that
// ota::ReadPrivateKeyFile insists on.
inline ota::Ed25519KeyPair FixtureKey(const std::string& name) {
  auto k = ota::ParsePrivateKeyPem(FixtureFile(name), name);
  if (!k.ok()) __builtin_trap();
  return *k;
}

struct FleetFixture {
  std::string pinned_root = FixtureFile("root-1.pb");
  std::vector<ota::Ed25519KeyPair> root_keys = {FixtureKey("root1.key"),
                                                FixtureKey("root2.key")};
  std::vector<ota::Ed25519KeyPair> release_keys = {FixtureKey("release.key")};
  std::vector<ota::Ed25519KeyPair> timestamp_keys = {
      FixtureKey("timestamp.key")};
  ota::DeviceIdentity device{"fuzz-device", {"fuzz-group"}};
  ota::TrustPolicy policy = [] {
    ota::TrustPolicy p;
    p.build_time = kFuzzNow - 86400;
    p.runtime_version = "0.1.0";
    return p;
  }();

  ota::TrustState Pinned() const {
    auto s = ota::TrustFromPinnedRoot(pinned_root);
    if (!s.ok()) __builtin_trap();  // the fixture itself is broken
    return *s;
  }
};

inline const FleetFixture& Fixture() {
  static const FleetFixture* f = new FleetFixture();
  return *f;
}

// Applies the mode byte: returns the envelope bytes to check, or false when
// the input cannot be used (too short, mode 1 without an envelope).
inline bool EnvelopeForMode(const uint8_t* data, size_t size, const char* role,
                            const std::vector<ota::Ed25519KeyPair>& keys,
                            std::string* out) {
  if (size < 1) return false;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    *out = rest;
    return true;
  }
  ota::SignedEnvelope env;
  if (!env.ParseFromString(rest)) return false;
  const std::string& payload = env.payload();
  auto signed_env = ota::SignEnvelope(
      role, {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()},
      keys);
  if (!signed_env.ok()) __builtin_trap();
  *out = signed_env->SerializeAsString();
  return true;
}

}  // namespace ternd::fuzzing

#endif  // TERND_TESTS_FUZZ_FLEET_FUZZ_FIXTURE_H_
