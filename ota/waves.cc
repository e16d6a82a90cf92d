#include "ota/waves.h"

#include "ota/signing.h"

namespace ternd::ota {
namespace {

void AppendLengthPrefixed(std::string& out, std::string_view s) {
  const uint32_t n = static_cast<uint32_t>(s.size());
  out.push_back(static_cast<char>(n >> 24));
  out.push_back(static_cast<char>(n >> 16));
  out.push_back(static_cast<char>(n >> 8));
  out.push_back(static_cast<char>(n));
  out.append(s);
}

}  // namespace

uint64_t WavePlace(std::string_view rollout_id, std::string_view device_id) {
  std::string input("ternd-wave-v1", 14);  // with its terminating NUL
  AppendLengthPrefixed(input, rollout_id);
  AppendLengthPrefixed(input, device_id);
  const std::string digest = Sha256(input);
  uint64_t h = 0;
  for (int i = 0; i < 8; ++i) {
    h = (h << 8) | static_cast<uint8_t>(digest[static_cast<size_t>(i)]);
  }
  return h;
}

uint32_t WavePercentile(uint64_t place) {
  // floor(place * 100 / 2^64) without 128-bit arithmetic (armhf has none):
  // place * 100 = (hi * 100 + (lo * 100 >> 32)) * 2^32 + (lo * 100 mod 2^32).
  const uint64_t hi = place >> 32, lo = place & 0xffffffffu;
  return static_cast<uint32_t>((hi * 100 + ((lo * 100) >> 32)) >> 32);
}

bool InWave(uint64_t place, uint32_t percent) {
  // place / 2^64 < percent / 100  <=>  floor(place * 100 / 2^64) < percent.
  return WavePercentile(place) < percent;
}

uint32_t WavePercentAt(const WaveSchedule& schedule, int64_t now) {
  uint32_t percent = 0;
  for (const WaveStep& step : schedule.steps()) {
    if (now < schedule.start() + step.offset_s()) break;
    percent = step.percent();
  }
  return percent;
}

std::optional<int64_t> WaveOpensAt(const WaveSchedule& schedule,
                                   uint64_t place) {
  for (const WaveStep& step : schedule.steps()) {
    if (InWave(place, step.percent())) {
      return schedule.start() + step.offset_s();
    }
  }
  return std::nullopt;
}

Status ValidateWaveSchedule(const Release& release) {
  if (!release.has_waves()) return Status::Ok();
  const WaveSchedule& w = release.waves();
  if (release.rollout_id().empty()) {
    return InvalidArgument(
        "waves: a wave schedule needs a rollout_id (devices hash it with "
        "their id), found none");
  }
  if (w.steps_size() == 0) {
    return InvalidArgument("waves: expected at least one step, found none");
  }
  if (w.start() < 0) {
    return InvalidArgument("waves: start %lld is before 1970",
                           static_cast<long long>(w.start()));
  }
  // Far enough from overflow for start + offset and for any clock.
  constexpr int64_t kMaxTime = int64_t{1} << 40;
  if (w.start() > kMaxTime) {
    return InvalidArgument("waves: start %lld is beyond year 36000",
                           static_cast<long long>(w.start()));
  }
  int64_t last_offset = -1;
  uint32_t last_percent = 0;
  for (int i = 0; i < w.steps_size(); ++i) {
    const WaveStep& s = w.steps(i);
    if (s.percent() > 100) {
      return InvalidArgument("waves: step %d: percent %u, expected at most 100",
                             i + 1, s.percent());
    }
    if (s.offset_s() < 0 || s.offset_s() > kMaxTime) {
      return InvalidArgument("waves: step %d: offset %lld s, expected 0..%lld",
                             i + 1, static_cast<long long>(s.offset_s()),
                             static_cast<long long>(kMaxTime));
    }
    if (s.offset_s() <= last_offset) {
      return InvalidArgument(
          "waves: step %d: offset %lld s, expected more than step %d's "
          "%lld s (offsets must increase)",
          i + 1, static_cast<long long>(s.offset_s()), i,
          static_cast<long long>(last_offset));
    }
    if (s.percent() < last_percent) {
      return InvalidArgument(
          "waves: step %d: percent %u, expected at least step %d's %u "
          "(a wave never shrinks)",
          i + 1, s.percent(), i, last_percent);
    }
    last_offset = s.offset_s();
    last_percent = s.percent();
  }
  return Status::Ok();
}

Result<RolloutHalt> VerifyRolloutHalt(const TrustState& state,
                                      const std::string& envelope_bytes,
                                      const TrustPolicy& policy,
                                      int64_t system_now) {
  SignedEnvelope env;
  if (!env.ParseFromString(envelope_bytes)) {
    return InvalidArgument("halt is not a valid SignedEnvelope protobuf");
  }
  TERND_ASSIGN_OR_RETURN(auto known, KnownKeys(state.root));
  Status s = VerifyEnvelope(env, kHaltRole, state.root.release(), known);
  if (!s.ok()) return s.Prepend("halt");
  RolloutHalt halt;
  if (!halt.ParseFromString(env.payload())) {
    return InvalidArgument("halt payload is not a valid RolloutHalt");
  }
  if (halt.rollout_id().empty()) {
    return InvalidArgument("halt names no rollout_id");
  }
  const int64_t now = TrustedTime(state, policy, system_now);
  if (now > halt.expires() + policy.expiry_grace_seconds) {
    return Errorf(StatusCode::kFailedPrecondition,
                  "halt of rollout '%.64s' expired at %lld, trusted time is "
                  "%lld",
                  halt.rollout_id().c_str(),
                  static_cast<long long>(halt.expires()),
                  static_cast<long long>(now));
  }
  return halt;
}

}  // namespace ternd::ota
