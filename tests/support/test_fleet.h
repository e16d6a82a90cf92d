// A fleet operator in a box, for tests: Ed25519 keys, signed roots, release
// manifests made from real model files (zstd-compressed, hashed, chunked)
// and offline bundles, built with the same ota/ code the device verifies
// with.
#ifndef TERND_TESTS_SUPPORT_TEST_FLEET_H_
#define TERND_TESTS_SUPPORT_TEST_FLEET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "ota/metadata.pb.h"
#include "ota/signing.h"

namespace ternd::testing {

struct SignedRelease {
  ota::Release release;
  std::string envelope;  // serialized SignedEnvelope
  std::string artifact;  // the zstd artifact
};

class TestFleet {
 public:
  explicit TestFleet(std::string fleet = "testfleet");

  // Root version `version` with the current keys, signed by
  // `extra_signers` too (the previous root's keys for a rotation).
  std::string RootEnvelope(
      uint64_t version,
      const std::vector<ota::Ed25519KeyPair>& extra_signers = {}) const;

  // A release of `model_bytes` (a .tern file) for `device` (and/or
  // `group`), signed by the current release key.
  SignedRelease Release(const std::string& model_bytes, const std::string& name,
                        uint64_t version, uint64_t sequence,
                        const std::string& device,
                        const std::string& group = "",
                        uint64_t chunk_size = 4096) const;
  // Re-signs `release` (after a test changed it) with the release key.
  std::string Sign(const ota::Release& release) const;

  // A timestamp statement issued at `issued` (unix seconds): published on
  // <prefix>/trust/timestamp it moves a device's trusted time there, which
  // is how tests move time forward (a wave opening) without waiting.
  std::string Timestamp(int64_t issued) const;
  // A rollout halt signed for role "halt" by the release key (or `key`).
  std::string Halt(const std::string& rollout_id,
                   const std::string& reason = "",
                   const ota::Ed25519KeyPair* key = nullptr) const;

  // A bundle: every root from 1 to `root_version`, the release, the
  // artifact.
  std::string Bundle(const SignedRelease& r, uint64_t root_version = 1) const;

  // Rotates the release key (the next root must carry the new one).
  void RotateReleaseKey() { release_key_ = NewKey(); }

  const ota::Ed25519KeyPair& root_key() const { return root_key_; }
  const ota::Ed25519KeyPair& release_key() const { return release_key_; }
  int64_t now() const { return now_; }

 private:
  static ota::Ed25519KeyPair NewKey();
  std::string fleet_;
  ota::Ed25519KeyPair root_key_;
  ota::Ed25519KeyPair release_key_;
  ota::Ed25519KeyPair timestamp_key_;
  int64_t now_;
  // Roots issued so far (for bundles with a chain).
  mutable std::vector<std::string> roots_;
};

}  // namespace ternd::testing

#endif  // TERND_TESTS_SUPPORT_TEST_FLEET_H_
