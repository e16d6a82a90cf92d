// Staged waves (ota/waves.h): the device's place in a rollout (known
// answers, determinism, uniformity over 100,000 ids, independence between
// rollouts), the schedule, its validation, and rollout halts.
#include "ota/waves.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "ota/signing.h"
#include "ota/trust.h"

namespace ternd::ota {
namespace {

constexpr int kDevices = 100000;

std::string DeviceId(int i) { return "device-" + std::to_string(i); }

// Within `sigmas` standard deviations of a binomial(n, p) count.
void ExpectBinomial(int64_t count, int64_t n, double p, double sigmas,
                    const std::string& what) {
  const double mean = n * p;
  const double sd = std::sqrt(n * p * (1 - p));
  EXPECT_NEAR(static_cast<double>(count), mean, sigmas * sd + 1e-9)
      << what << ": " << count << " of " << n << ", expected " << mean << " +- "
      << sigmas << " sd (" << sd << ")";
}

TEST(WavePlaceTest, KnownAnswersPinTheFormat) {
  // SHA-256("ternd-wave-v1\0" || be32 len || rollout || be32 len || device),
  // first 8 bytes big-endian (computed independently with Python hashlib).
  EXPECT_EQ(WavePlace("model-v2-canary", "robot-7"), 1192256607717169481ull);
  EXPECT_EQ(WavePercentile(1192256607717169481ull), 6u);
  EXPECT_EQ(WavePlace("", ""), 14192218726339958720ull);
  EXPECT_EQ(WavePercentile(14192218726339958720ull), 76u);
}

TEST(WavePlaceTest, DeterministicAndLengthPrefixed) {
  EXPECT_EQ(WavePlace("r1", "robot-1"), WavePlace("r1", "robot-1"));
  // Moving a byte across the boundary changes the input.
  EXPECT_NE(WavePlace("r1", "robot-1"), WavePlace("r1r", "obot-1"));
  EXPECT_NE(WavePlace("r1", "robot-1"), WavePlace("r2", "robot-1"));
}

TEST(WavePlaceTest, PercentileAndInWaveAgreeAtTheEdges) {
  EXPECT_EQ(WavePercentile(0), 0u);
  EXPECT_EQ(WavePercentile(~uint64_t{0}), 99u);
  // 2^64 / 100 = 184467440737095516.16: the first place at percentile 1.
  EXPECT_EQ(WavePercentile(184467440737095516ull), 0u);
  EXPECT_EQ(WavePercentile(184467440737095517ull), 1u);
  EXPECT_FALSE(InWave(0, 0));
  EXPECT_TRUE(InWave(0, 1));
  EXPECT_TRUE(InWave(184467440737095516ull, 1));
  EXPECT_FALSE(InWave(184467440737095517ull, 1));
  EXPECT_TRUE(InWave(~uint64_t{0}, 100));
  EXPECT_FALSE(InWave(~uint64_t{0}, 99));
  EXPECT_TRUE(InWave(~uint64_t{0}, 250));  // above 100 counts as 100
}

TEST(WavePlaceTest, UniformOverAHundredThousandIds) {
  std::vector<int64_t> per_percentile(100, 0);
  for (int i = 0; i < kDevices; ++i) {
    ++per_percentile[WavePercentile(WavePlace("rollout-a", DeviceId(i)))];
  }
  // Each percentage step takes its share, within binomial bounds (5 sd:
  // a uniform hash fails one of these eight with probability < 1e-5).
  for (uint32_t p : {1u, 5u, 10u, 25u, 50u, 75u, 90u, 99u}) {
    int64_t in = 0;
    for (uint32_t k = 0; k < p; ++k) in += per_percentile[k];
    ExpectBinomial(in, kDevices, p / 100.0, 5,
                   "wave of " + std::to_string(p) + "%");
  }
  // And every single percentile (chi-square, 99 degrees of freedom: 160
  // is exceeded with probability < 1e-4).
  double chi2 = 0;
  const double expected = kDevices / 100.0;
  for (int64_t c : per_percentile) {
    chi2 += (c - expected) * (c - expected) / expected;
  }
  EXPECT_LT(chi2, 160.0);
}

TEST(WavePlaceTest, IndependentBetweenRollouts) {
  // Being in the first 10% of one rollout says nothing about another.
  int64_t in_a = 0, in_both = 0;
  double sum_ab = 0, sum_a = 0, sum_b = 0, sum_aa = 0, sum_bb = 0;
  for (int i = 0; i < kDevices; ++i) {
    const uint64_t a = WavePlace("rollout-a", DeviceId(i));
    const uint64_t b = WavePlace("rollout-b", DeviceId(i));
    if (InWave(a, 10)) {
      ++in_a;
      if (InWave(b, 10)) ++in_both;
    }
    const double x = WavePercentile(a), y = WavePercentile(b);
    sum_a += x;
    sum_b += y;
    sum_ab += x * y;
    sum_aa += x * x;
    sum_bb += y * y;
  }
  ExpectBinomial(in_both, in_a, 0.10, 5, "in both 10% waves");
  const double n = kDevices;
  const double r =
      (sum_ab - sum_a * sum_b / n) /
      std::sqrt((sum_aa - sum_a * sum_a / n) * (sum_bb - sum_b * sum_b / n));
  EXPECT_LT(std::fabs(r), 5 / std::sqrt(n)) << "correlation " << r;
}

TEST(WavePlaceTest, AWaveGrowsByAddingDevices) {
  for (int i = 0; i < 2000; ++i) {
    const uint64_t place = WavePlace("grow", DeviceId(i));
    for (uint32_t p = 0; p < 100; ++p) {
      if (InWave(place, p)) {
        ASSERT_TRUE(InWave(place, p + 1)) << i << " " << p;
      }
    }
  }
}

WaveSchedule Schedule(int64_t start,
                      std::vector<std::pair<int64_t, uint32_t>> steps) {
  WaveSchedule w;
  w.set_start(start);
  for (const auto& [offset, percent] : steps) {
    WaveStep* s = w.add_steps();
    s->set_offset_s(offset);
    s->set_percent(percent);
  }
  return w;
}

TEST(WaveScheduleTest, PercentAtATime) {
  const WaveSchedule w = Schedule(1000, {{0, 1}, {3600, 10}, {86400, 100}});
  EXPECT_EQ(WavePercentAt(w, 0), 0u);
  EXPECT_EQ(WavePercentAt(w, 999), 0u);
  EXPECT_EQ(WavePercentAt(w, 1000), 1u);
  EXPECT_EQ(WavePercentAt(w, 4599), 1u);
  EXPECT_EQ(WavePercentAt(w, 4600), 10u);
  EXPECT_EQ(WavePercentAt(w, 87399), 10u);
  EXPECT_EQ(WavePercentAt(w, 87400), 100u);
  EXPECT_EQ(WavePercentAt(w, int64_t{1} << 40), 100u);
  // A first step later than the start: nobody before it.
  const WaveSchedule later = Schedule(1000, {{600, 50}});
  EXPECT_EQ(WavePercentAt(later, 1599), 0u);
  EXPECT_EQ(WavePercentAt(later, 1600), 50u);
}

TEST(WaveScheduleTest, OpensAtTheFirstStepThatCoversThePlace) {
  const WaveSchedule w = Schedule(1000, {{0, 1}, {3600, 10}, {86400, 50}});
  EXPECT_EQ(WaveOpensAt(w, 0), 1000);                          // percentile 0
  EXPECT_EQ(WaveOpensAt(w, 184467440737095517ull), 4600);      // percentile 1
  EXPECT_EQ(WaveOpensAt(w, uint64_t{1} << 63), std::nullopt);  // 50: never
  EXPECT_EQ(WaveOpensAt(w, (uint64_t{1} << 63) - 1), 87400);   // 49
}

Release WithWaves(WaveSchedule w, const std::string& rollout = "r1") {
  Release r;
  r.set_rollout_id(rollout);
  *r.mutable_waves() = std::move(w);
  return r;
}

void ExpectInvalid(const Release& r, const std::string& message) {
  Status s = ValidateWaveSchedule(r);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(std::string(s.message()), message);
}

TEST(WaveScheduleTest, ValidSchedulesPass) {
  EXPECT_TRUE(ValidateWaveSchedule(Release()).ok());  // no schedule
  EXPECT_TRUE(ValidateWaveSchedule(
                  WithWaves(Schedule(1000, {{0, 0}, {60, 0}, {120, 100}})))
                  .ok());
  EXPECT_TRUE(ValidateWaveSchedule(WithWaves(Schedule(0, {{5, 30}}))).ok());
}

TEST(WaveScheduleTest, BadSchedulesSayWhatIsWrong) {
  ExpectInvalid(WithWaves(Schedule(1000, {{0, 10}, {60, 101}})),
                "waves: step 2: percent 101, expected at most 100");
  ExpectInvalid(WithWaves(Schedule(1000, {{0, 10}, {60, 20}, {60, 30}})),
                "waves: step 3: offset 60 s, expected more than step 2's 60 s "
                "(offsets must increase)");
  ExpectInvalid(WithWaves(Schedule(1000, {{100, 10}, {50, 20}})),
                "waves: step 2: offset 50 s, expected more than step 1's "
                "100 s (offsets must increase)");
  ExpectInvalid(WithWaves(Schedule(1000, {{0, 50}, {60, 20}})),
                "waves: step 2: percent 20, expected at least step 1's 50 (a "
                "wave never shrinks)");
  ExpectInvalid(WithWaves(Schedule(1000, {{-1, 50}})),
                "waves: step 1: offset -1 s, expected 0..1099511627776");
  ExpectInvalid(WithWaves(Schedule(1000, {})),
                "waves: expected at least one step, found none");
  ExpectInvalid(WithWaves(Schedule(-5, {{0, 1}})),
                "waves: start -5 is before 1970");
  ExpectInvalid(WithWaves(Schedule(1000, {{0, 1}}), ""),
                "waves: a wave schedule needs a rollout_id (devices hash it "
                "with their id), found none");
}

// ---- halts

constexpr int64_t kNow = 1790000000;

struct HaltFleet {
  Ed25519KeyPair root_key = *GenerateEd25519KeyPair();
  Ed25519KeyPair release_key = *GenerateEd25519KeyPair();
  Ed25519KeyPair other_key = *GenerateEd25519KeyPair();
  TrustState state;
  TrustPolicy policy;

  HaltFleet() {
    Root& r = state.root;
    r.set_fleet("acme");
    r.set_version(1);
    r.set_expires(kNow + 86400);
    for (const Ed25519KeyPair* k : {&root_key, &release_key, &other_key}) {
      PublicKey* pk = r.add_keys();
      pk->set_key_id(KeyId(k->public_key));
      pk->set_ed25519(k->public_key.data(), 32);
    }
    r.mutable_root()->add_key_ids(KeyId(root_key.public_key));
    r.mutable_root()->set_threshold(1);
    r.mutable_release()->add_key_ids(KeyId(release_key.public_key));
    r.mutable_release()->set_threshold(1);
    r.mutable_timestamp()->add_key_ids(KeyId(other_key.public_key));
    r.mutable_timestamp()->set_threshold(1);
  }

  std::string Halt(const std::string& rollout, int64_t expires,
                   const Ed25519KeyPair& key,
                   const std::string& role = kHaltRole) const {
    RolloutHalt h;
    h.set_rollout_id(rollout);
    h.set_issued(kNow);
    h.set_expires(expires);
    h.set_reason("bad batch");
    const std::string payload = h.SerializeAsString();
    std::vector<Ed25519KeyPair> signers = {key};
    auto env = SignEnvelope(
        role,
        {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()},
        signers);
    EXPECT_TRUE(env.ok());
    return env->SerializeAsString();
  }
};

TEST(RolloutHaltTest, SignedByTheReleaseKeysIsAccepted) {
  HaltFleet f;
  Result<RolloutHalt> h = VerifyRolloutHalt(
      f.state, f.Halt("r1", kNow + 60, f.release_key), f.policy, kNow);
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->rollout_id(), "r1");
  EXPECT_EQ(h->reason(), "bad batch");
  // A device at 1970 judges expiry by its trusted time, not its clock.
  f.state.time_floor = kNow;
  EXPECT_TRUE(VerifyRolloutHalt(f.state, f.Halt("r1", kNow + 60, f.release_key),
                                f.policy, 0)
                  .ok());
}

TEST(RolloutHaltTest, RefusalsSayWhy) {
  HaltFleet f;
  auto refused = [&](const std::string& envelope, int64_t now) {
    Result<RolloutHalt> h = VerifyRolloutHalt(f.state, envelope, f.policy, now);
    EXPECT_FALSE(h.ok());
    return h.ok() ? std::string() : std::string(h.status().message());
  };
  // A key outside the release role.
  EXPECT_NE(refused(f.Halt("r1", kNow + 60, f.other_key), kNow).find("halt: "),
            std::string::npos);
  // A release signature is no halt signature (its own domain).
  EXPECT_NE(refused(f.Halt("r1", kNow + 60, f.release_key, "release"), kNow)
                .find("halt"),
            std::string::npos);
  EXPECT_EQ(refused(f.Halt("r1", kNow - 1, f.release_key), kNow),
            "halt of rollout 'r1' expired at 1789999999, trusted time is "
            "1790000000");
  EXPECT_EQ(refused(f.Halt("", kNow + 60, f.release_key), kNow),
            "halt names no rollout_id");
  EXPECT_EQ(refused("not an envelope", kNow),
            "halt is not a valid SignedEnvelope protobuf");
}

}  // namespace
}  // namespace ternd::ota
