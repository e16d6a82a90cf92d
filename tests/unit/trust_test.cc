// The device's trust decisions: pinned root, rotation, release checks, the
// timestamp and the clock policy.
#include "ota/trust.h"

#include <gtest/gtest.h>

#include "ota/signing.h"

namespace ternd::ota {
namespace {

constexpr int64_t kDay = 86400;
constexpr int64_t kBuild = 1790000000;  // 2026-09
constexpr int64_t kNow = kBuild + 30 * kDay;

Ed25519KeyPair Key() {
  auto k = GenerateEd25519KeyPair();
  EXPECT_TRUE(k.ok());
  return *k;
}

void AddRole(Root& root, RoleKeys* role,
             const std::vector<Ed25519KeyPair>& keys, uint32_t threshold) {
  for (const auto& k : keys) {
    PublicKey* pk = root.add_keys();
    pk->set_key_id(KeyId(k.public_key));
    pk->set_ed25519(k.public_key.data(), 32);
    role->add_key_ids(KeyId(k.public_key));
  }
  role->set_threshold(threshold);
}

std::string Envelope(const std::string& role, const std::string& payload,
                     const std::vector<Ed25519KeyPair>& signers) {
  auto env = SignEnvelope(
      role, {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()},
      signers);
  EXPECT_TRUE(env.ok());
  return env->SerializeAsString();
}

struct Fleet {
  std::vector<Ed25519KeyPair> root_keys = {Key(), Key(), Key()};
  std::vector<Ed25519KeyPair> release_keys = {Key()};
  std::vector<Ed25519KeyPair> timestamp_keys = {Key()};
  TrustPolicy policy;
  DeviceIdentity device{"robot-7", {"warehouse", "arm64"}};

  Fleet() {
    policy.build_time = kBuild;
    policy.runtime_version = "0.1.0";
  }

  Root MakeRoot(uint64_t version, const std::vector<Ed25519KeyPair>& roots,
                const std::vector<Ed25519KeyPair>& releases) {
    Root r;
    r.set_fleet("acme");
    r.set_version(version);
    r.set_expires(kNow + 365 * kDay);
    AddRole(r, r.mutable_root(), roots, 2);
    AddRole(r, r.mutable_release(), releases, 1);
    AddRole(r, r.mutable_timestamp(), timestamp_keys, 1);
    return r;
  }

  TrustState Pinned() {
    auto s = TrustFromPinnedRoot(Envelope(
        "root", MakeRoot(1, root_keys, release_keys).SerializeAsString(),
        root_keys));
    EXPECT_TRUE(s.ok()) << s.status().message();
    return *s;
  }

  Release MakeRelease(uint64_t version, uint64_t sequence) {
    Release r;
    r.set_model_name("digits");
    r.set_model_version(version);
    r.set_sequence(sequence);
    r.add_urls("https://fleet.example/a.tern.zst");
    r.set_artifact_sha256(std::string(32, 'a'));
    r.set_artifact_length(2500);
    r.set_model_sha256(std::string(32, 'm'));
    r.set_model_length(20000);
    r.set_chunk_size(1000);
    for (int i = 0; i < 3; ++i) r.add_chunk_sha256(std::string(32, 'c'));
    r.set_issued(kNow - kDay);
    r.set_expires(kNow + 7 * kDay);
    r.add_target_groups("warehouse");
    r.set_rollout_id("rollout-1");
    return r;
  }

  std::string Signed(const Release& r) {
    return Envelope("release", r.SerializeAsString(), release_keys);
  }
};

RejectReason Check(Fleet& f, TrustState& s, const std::string& env,
                   uint64_t installed = 0, int64_t now = kNow) {
  RejectReason reason;
  auto r = AcceptRelease(s, env, f.device, installed, f.policy, now, &reason);
  EXPECT_EQ(r.ok(), reason == RejectReason::kNone) << r.status().message();
  return reason;
}

TEST(TrustTest, PinnedRootMustBeSelfSigned) {
  Fleet f;
  EXPECT_EQ(f.Pinned().root.version(), 1u);
  std::string one_sig = Envelope(
      "root", f.MakeRoot(1, f.root_keys, f.release_keys).SerializeAsString(),
      {f.root_keys[0]});
  auto s = TrustFromPinnedRoot(one_sig);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.status().message()).find("pinned root"),
            std::string::npos);
  EXPECT_FALSE(TrustFromPinnedRoot("garbage").ok());
}

TEST(TrustTest, AcceptsAGoodReleaseAndRecordsIt) {
  Fleet f;
  TrustState s = f.Pinned();
  EXPECT_EQ(Check(f, s, f.Signed(f.MakeRelease(5, 10))), RejectReason::kNone);
  EXPECT_EQ(s.highest_sequence, 10u);
  EXPECT_EQ(s.highest_version_seen, 5u);
  EXPECT_EQ(s.time_floor, kNow - kDay);
  // The same manifest delivered again (retained MQTT message) is fine.
  EXPECT_EQ(Check(f, s, f.Signed(f.MakeRelease(5, 10))), RejectReason::kNone);
}

TEST(TrustTest, LargestAcceptableReleaseFitsTheMessageCap) {
  // As many chunks as the policy allows, several mirrors and targets, and
  // three release signatures: accepted by trust, and within the size cap a
  // release manifest must pass before it is parsed (the cap must never
  // refuse a release trust would take).
  Fleet f;
  f.release_keys = {Key(), Key(), Key()};
  TrustState s = f.Pinned();
  Release r = f.MakeRelease(5, 10);
  r.clear_urls();
  for (int i = 0; i < 8; ++i) {
    r.add_urls("https://mirror-" + std::to_string(i) + ".fleet.example/" +
               std::string(200, 'p') + "/digits-5.tern.zst");
  }
  for (int i = 0; i < 64; ++i) r.add_target_devices(std::string(64, 'd'));
  r.add_target_devices("robot-7");
  r.set_chunk_size(4096);
  r.clear_chunk_sha256();
  for (uint64_t i = 0; i < f.policy.max_chunks; ++i) {
    r.add_chunk_sha256(std::string(32, 'c'));
  }
  r.set_artifact_length(4096 * f.policy.max_chunks);
  const std::string envelope = f.Signed(r);
  EXPECT_EQ(Check(f, s, envelope), RejectReason::kNone);
  EXPECT_LE(envelope.size(), MaxReleaseEnvelopeBytes(f.policy));
  EXPECT_EQ(MaxReleaseEnvelopeBytes(TrustPolicy()), 2293760u);
  EXPECT_GT(uint64_t{4} << 20, MaxReleaseEnvelopeBytes(TrustPolicy()) + 1024)
      << "the MQTT session's default max_packet_bytes must carry it";
}

TEST(TrustTest, RefusesEachKindOfBadRelease) {
  Fleet f;
  TrustState s = f.Pinned();
  // Signed by a root key instead of the release key.
  EXPECT_EQ(Check(f, s,
                  Envelope("release", f.MakeRelease(5, 1).SerializeAsString(),
                           {f.root_keys[0]})),
            RejectReason::kBadSignature);
  Release r = f.MakeRelease(5, 1);
  r.set_expires(kNow - 2 * kDay);
  EXPECT_EQ(Check(f, s, f.Signed(r)), RejectReason::kExpired);
  r = f.MakeRelease(5, 1);
  r.clear_target_groups();
  r.add_target_devices("robot-8");
  EXPECT_EQ(Check(f, s, f.Signed(r)), RejectReason::kNotForThisDevice);
  r.clear_target_devices();  // no targets at all is not "everyone"
  EXPECT_EQ(Check(f, s, f.Signed(r)), RejectReason::kNotForThisDevice);
  EXPECT_EQ(Check(f, s, f.Signed(f.MakeRelease(5, 1)), 5),
            RejectReason::kNotNewer);
  r = f.MakeRelease(5, 1);
  r.set_artifact_length(uint64_t{2} << 30);
  r.set_chunk_size(uint64_t{1} << 30);
  r.clear_chunk_sha256();
  r.add_chunk_sha256(std::string(32, 'c'));
  r.add_chunk_sha256(std::string(32, 'c'));
  EXPECT_EQ(Check(f, s, f.Signed(r)), RejectReason::kOversized);
  r = f.MakeRelease(5, 1);
  r.add_chunk_sha256(std::string(32, 'c'));  // 4 hashes for 3 chunks
  EXPECT_EQ(Check(f, s, f.Signed(r)), RejectReason::kMalformed);
  // Content-addressed: lengths that sum to the artifact length, none 0,
  // one per hash, chunk_size 0.
  auto content = [&](std::vector<uint64_t> lengths, int hashes) {
    Release c = f.MakeRelease(5, 1);
    c.set_chunk_size(0);
    c.clear_chunk_sha256();
    for (uint64_t len : lengths) c.add_chunk_length(len);
    for (int i = 0; i < hashes; ++i) c.add_chunk_sha256(std::string(32, 'c'));
    return c;
  };
  auto malformed = [&](const Release& c, const char* expected) {
    TrustState copy = s;
    RejectReason why;
    auto got =
        AcceptRelease(copy, f.Signed(c), f.device, 0, f.policy, kNow, &why);
    EXPECT_EQ(why, RejectReason::kMalformed) << expected;
    EXPECT_NE(std::string(got.status().message()).find(expected),
              std::string::npos)
        << got.status().message();
  };
  malformed(content({1000, 0, 1500}, 3), "chunk_length[1] is 0");
  malformed(content({1000, 1000}, 2),
            "the 2 chunk lengths sum to 2000, expected artifact_length 2500");
  malformed(content({1000, 1000, 1000}, 3),
            "reach past artifact_length 2500 at chunk_length[2] = 1000");
  malformed(content({1000, 1500}, 3), "2 chunk lengths but 3 chunk hashes");
  Release chunked = content({1000, 1500}, 2);
  chunked.set_chunk_size(1000);
  malformed(chunked, "chunk_size is 1000 with chunk lengths");
  {
    TrustState copy = s;
    EXPECT_EQ(Check(f, copy, f.Signed(content({1000, 1500}, 2))),
              RejectReason::kNone);
  }
  r = f.MakeRelease(5, 1);
  r.set_min_runtime_version("0.2.0");
  EXPECT_EQ(Check(f, s, f.Signed(r)), RejectReason::kRuntimeTooOld);
  // Refusals leave the state untouched.
  EXPECT_EQ(s.highest_sequence, 0u);
  EXPECT_EQ(s.time_floor, 0);
  r.set_min_runtime_version("0.1.0");
  EXPECT_EQ(Check(f, s, f.Signed(r)), RejectReason::kNone);
}

// The refusal names why each signature did not count: a key id the root
// does not know at all is an unknown key; a key the root knows, but not for
// this role, is outside the role.
std::string BadSignatureReason(Fleet& f, TrustState& s,
                               const std::vector<Ed25519KeyPair>& signers) {
  RejectReason reason;
  auto r = AcceptRelease(
      s, Envelope("release", f.MakeRelease(5, 1).SerializeAsString(), signers),
      f.device, 0, f.policy, kNow, &reason);
  EXPECT_EQ(reason, RejectReason::kBadSignature);
  return r.ok() ? "" : r.status().message();
}

TEST(TrustTest, AReleaseSignedByAKeyTheRootDoesNotKnowIsByAnUnknownKey) {
  Fleet f;
  TrustState s = f.Pinned();
  const std::string why = BadSignatureReason(f, s, {Key()});
  EXPECT_NE(why.find("0 valid signature(s) from its keys, 1 needed (0 "
                     "signature(s) by keys outside the role, 1 by unknown "
                     "keys, 0 invalid)"),
            std::string::npos)
      << why;
}

TEST(TrustTest, AReleaseSignedByAKnownKeyOfAnotherRoleIsOutsideTheRole) {
  Fleet f;
  TrustState s = f.Pinned();
  // A root key and the timestamp key: both in the root, neither a release
  // key.
  const std::string why =
      BadSignatureReason(f, s, {f.root_keys[0], f.timestamp_keys[0]});
  EXPECT_NE(why.find("0 valid signature(s) from its keys, 1 needed (2 "
                     "signature(s) by keys outside the role, 0 by unknown "
                     "keys, 0 invalid)"),
            std::string::npos)
      << why;
}

TEST(TrustTest, RefusesReplayAndMixAndMatch) {
  Fleet f;
  TrustState s = f.Pinned();
  ASSERT_EQ(Check(f, s, f.Signed(f.MakeRelease(6, 20))), RejectReason::kNone);
  // An older manifest (say the retained per-group one) after a newer one.
  EXPECT_EQ(Check(f, s, f.Signed(f.MakeRelease(7, 19))), RejectReason::kReplay);
  // Same sequence, other content.
  EXPECT_EQ(Check(f, s, f.Signed(f.MakeRelease(7, 20))), RejectReason::kReplay);
  EXPECT_EQ(Check(f, s, f.Signed(f.MakeRelease(7, 21))), RejectReason::kNone);
}

TEST(TrustTest, RotatesTheReleaseKeyOnDayOne) {
  Fleet f;
  TrustState s = f.Pinned();
  std::vector<Ed25519KeyPair> new_release = {Key()};
  const std::string v2 =
      f.MakeRoot(2, f.root_keys, new_release).SerializeAsString();
  ASSERT_TRUE(
      RotateRoot(s, Envelope("root", v2, f.root_keys), f.policy, kNow).ok());
  EXPECT_EQ(s.root.version(), 2u);
  // The old release key is revoked, the new one works.
  EXPECT_EQ(Check(f, s, f.Signed(f.MakeRelease(5, 1))),
            RejectReason::kBadSignature);
  EXPECT_EQ(Check(f, s,
                  Envelope("release", f.MakeRelease(5, 1).SerializeAsString(),
                           new_release)),
            RejectReason::kNone);
}

TEST(TrustTest, FastForwardedSequenceIsRecoveredByRotatingTheReleaseKey) {
  Fleet f;
  TrustState s = f.Pinned();
  // A stolen release key signs a release with an absurd sequence number;
  // the device accepts it (the signature is valid) and its floor jumps.
  EXPECT_EQ(Check(f, s, f.Signed(f.MakeRelease(6, uint64_t{1} << 62))),
            RejectReason::kNone);
  // Honest releases are now refused as replays...
  EXPECT_EQ(Check(f, s, f.Signed(f.MakeRelease(7, 1000))),
            RejectReason::kReplay);
  // ...until the fleet rotates the release key with a new root.
  std::vector<Ed25519KeyPair> new_release = {Key()};
  ASSERT_TRUE(
      RotateRoot(
          s,
          Envelope("root",
                   f.MakeRoot(2, f.root_keys, new_release).SerializeAsString(),
                   f.root_keys),
          f.policy, kNow)
          .ok());
  EXPECT_EQ(s.highest_sequence, 0u);
  EXPECT_EQ(
      Check(f, s,
            Envelope("release", f.MakeRelease(7, 1000).SerializeAsString(),
                     new_release)),
      RejectReason::kNone);
  // The stolen key's releases are refused by signature from now on.
  EXPECT_EQ(Check(f, s, f.Signed(f.MakeRelease(8, uint64_t{1} << 62))),
            RejectReason::kBadSignature);
  // A rotation that keeps the release keys keeps the floor.
  const uint64_t floor = s.highest_sequence;
  ASSERT_TRUE(
      RotateRoot(
          s,
          Envelope("root",
                   f.MakeRoot(3, f.root_keys, new_release).SerializeAsString(),
                   f.root_keys),
          f.policy, kNow)
          .ok());
  EXPECT_EQ(s.highest_sequence, floor);
}

TEST(TrustTest, RootRotationNeedsOldAndNewThresholds) {
  Fleet f;
  TrustState s = f.Pinned();
  std::vector<Ed25519KeyPair> new_roots = {Key(), Key(), Key()};
  const std::string v2 =
      f.MakeRoot(2, new_roots, f.release_keys).SerializeAsString();
  // Only the new keys: an attacker with fresh keys cannot take over.
  Status st = RotateRoot(s, Envelope("root", v2, new_roots), f.policy, kNow);
  EXPECT_NE(std::string(st.message()).find("by the current root's keys"),
            std::string::npos)
      << st.message();
  // Only the old keys: the new root must be signable by its own keys.
  st = RotateRoot(s, Envelope("root", v2, f.root_keys), f.policy, kNow);
  EXPECT_NE(std::string(st.message()).find("by its own keys"),
            std::string::npos)
      << st.message();
  std::vector<Ed25519KeyPair> both = {f.root_keys[0], f.root_keys[1],
                                      new_roots[0], new_roots[2]};
  // Skipping a version is refused.
  const std::string v3 =
      f.MakeRoot(3, new_roots, f.release_keys).SerializeAsString();
  EXPECT_FALSE(RotateRoot(s, Envelope("root", v3, both), f.policy, kNow).ok());
  EXPECT_EQ(s.root.version(), 1u);
  ASSERT_TRUE(RotateRoot(s, Envelope("root", v2, both), f.policy, kNow).ok());
  EXPECT_EQ(s.root.version(), 2u);
  // The revoked old root keys can no longer rotate anything.
  const std::string v3old =
      f.MakeRoot(3, f.root_keys, f.release_keys).SerializeAsString();
  EXPECT_FALSE(
      RotateRoot(s, Envelope("root", v3old, f.root_keys), f.policy, kNow).ok());
}

TEST(TrustTest, ClockAt1970NeitherSkipsChecksNorBricks) {
  Fleet f;
  TrustState s = f.Pinned();
  // System clock at 1970: trusted time is the build time, so a current
  // release is accepted...
  EXPECT_EQ(Check(f, s, f.Signed(f.MakeRelease(5, 1)), 0, /*now=*/0),
            RejectReason::kNone);
  // ...signatures are still required...
  EXPECT_EQ(Check(f, s,
                  Envelope("release", f.MakeRelease(6, 2).SerializeAsString(),
                           f.timestamp_keys),
                  0, 0),
            RejectReason::kBadSignature);
  // ...and one that expired before the build is refused.
  Release old = f.MakeRelease(6, 2);
  old.set_expires(kBuild - kDay);
  EXPECT_EQ(Check(f, s, f.Signed(old), 0, 0), RejectReason::kExpired);
  // A timestamp advances the floor: expiry is then judged by it.
  Timestamp ts;
  ts.set_issued(kNow + 10 * kDay);
  ts.set_expires(kNow + 11 * kDay);
  ASSERT_TRUE(
      ApplyTimestamp(
          s, Envelope("timestamp", ts.SerializeAsString(), f.timestamp_keys),
          f.policy, 0)
          .ok());
  EXPECT_EQ(TrustedTime(s, f.policy, 0), kNow + 10 * kDay);
  EXPECT_EQ(Check(f, s, f.Signed(f.MakeRelease(6, 2)), 0, 0),
            RejectReason::kExpired);
  // A timestamp signed by the release key is refused.
  EXPECT_FALSE(
      ApplyTimestamp(
          s, Envelope("timestamp", ts.SerializeAsString(), f.release_keys),
          f.policy, 0)
          .ok());
  // Grace extends expiry.
  f.policy.expiry_grace_seconds = 30 * kDay;
  EXPECT_EQ(Check(f, s, f.Signed(f.MakeRelease(6, 2)), 0, 0),
            RejectReason::kNone);
}

TEST(TrustTest, ParsesVersions) {
  uint64_t v[3];
  EXPECT_TRUE(ParseVersion("1.20.3", v));
  EXPECT_EQ(v[1], 20u);
  EXPECT_FALSE(ParseVersion("1.2", v));
  EXPECT_FALSE(ParseVersion("1.2.3-rc1", v));
  EXPECT_FALSE(ParseVersion("", v));
}

}  // namespace
}  // namespace ternd::ota
