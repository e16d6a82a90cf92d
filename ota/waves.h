// Staged waves and rollout halts (docs/ota.md, "Staged waves"): which
// devices take a release when, decided on the device from the signed
// release alone, with no server involved.
//
// A device's place in a rollout is a number u in [0, 1):
//   h = the first 8 bytes (big-endian) of
//       SHA-256("ternd-wave-v1\0" || be32(len(rollout_id)) || rollout_id
//                                 || be32(len(device_id))  || device_id)
//   u = h / 2^64
// and the device takes the release once the schedule's percentage p at
// trusted time satisfies u < p / 100 (exactly: floor(h * 100 / 2^64) < p). So
// the devices of a wave stay in every later, larger one; a device's place is
// the same on every run (deterministic), uniform over devices, and
// independent between two rollout ids (a different hash input).
//
// Thread-safety: all functions are pure.
#ifndef TERND_OTA_WAVES_H_
#define TERND_OTA_WAVES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "ota/metadata.pb.h"
#include "ota/trust.h"

namespace ternd::ota {

// h above: the device's place in the rollout, as a fraction of 2^64.
uint64_t WavePlace(std::string_view rollout_id, std::string_view device_id);

// floor(h * 100 / 2^64): 0..99, the percentage step at which place `h`
// joins (it is in every wave of more than this percent).
uint32_t WavePercentile(uint64_t place);

// Whether place `h` is inside `percent` (0..100; above 100 counts as 100).
bool InWave(uint64_t place, uint32_t percent);

// The percentage open at unix time `now`: 0 before the first step, then
// the percentage of the last step whose start + offset_s <= now.
uint32_t WavePercentAt(const WaveSchedule& schedule, int64_t now);

// When the schedule first lets place `h` in (start + offset_s of the first
// step whose percentage covers it), or nullopt when no step ever does.
std::optional<int64_t> WaveOpensAt(const WaveSchedule& schedule,
                                   uint64_t place);

// Checks a release's wave schedule: steps present, offsets >= 0 and
// strictly increasing, percentages within 0..100 and never decreasing, a
// rollout id to hash, no overflow of start + offset. The error names the
// step and what was expected and found. A release without a schedule is
// fine.
Status ValidateWaveSchedule(const Release& release);

// Checks a halt envelope (role "halt", threshold of the current root's
// release keys, not expired at trusted time, a rollout id present). On
// success returns the halt; a refusal says why. Changes nothing.
Result<RolloutHalt> VerifyRolloutHalt(const TrustState& state,
                                      const std::string& envelope_bytes,
                                      const TrustPolicy& policy,
                                      int64_t system_now);

// The envelope role of a rollout halt (ota/signing.h's domain prefix).
inline constexpr char kHaltRole[] = "halt";

}  // namespace ternd::ota

#endif  // TERND_OTA_WAVES_H_
