// The device's trust decisions about update metadata: which root of trust is
// current, whether a release manifest may be acted on, and what time it is.
//
// TrustState is plain data the caller persists (SQLite, later) *before*
// acting on what a call accepted: a root rotation or a higher sequence
// number must survive a power cut, or an attacker could replay old metadata
// after a reboot.
//
// Clock policy: trusted time = max(build time, time floor, system clock).
// The floor only moves forward, from verified issue times. A device that
// boots with its clock at 1970 therefore judges expiry by the last verified
// time it saw (never "everything is valid", never "everything has expired
// forever"), and signatures are checked regardless of any clock.
//
// Thread-safety: functions are pure; callers serialize access to a state.
#ifndef TERND_OTA_TRUST_H_
#define TERND_OTA_TRUST_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "ota/metadata.pb.h"
#include "ota/signing.h"

namespace ternd::ota {

struct TrustState {
  Root root;                  // verified, current
  std::string root_envelope;  // its serialized SignedEnvelope
  int64_t time_floor = 0;     // unix seconds, only increases
  uint64_t highest_version_seen = 0;
  uint64_t highest_sequence = 0;
  std::string highest_sequence_sha256;  // payload hash at that sequence
};

struct DeviceIdentity {
  std::string id;
  std::vector<std::string> groups;
};

struct TrustPolicy {
  int64_t build_time = 0;  // unix seconds, baked in at build
  int64_t expiry_grace_seconds = 0;
  uint64_t max_artifact_bytes = uint64_t{1} << 30;
  uint64_t max_model_bytes = uint64_t{1} << 30;
  uint64_t max_chunks = 65536;
  std::string runtime_version;  // this ternd, "MAJOR.MINOR.PATCH"
};

// Size caps on metadata messages from the fleet, checked before anything
// is parsed (docs/ota.md, "Size caps"). Roots and timestamps are a few
// hundred bytes to a few KiB. A release carries one SHA-256 per artifact
// chunk (34 bytes each on the wire), so its cap follows the chunk limit:
// 64 KiB for everything else plus 34 bytes per chunk (2,293,760 bytes with
// the default 65,536 chunks).
inline constexpr uint64_t kMaxTrustMetadataBytes = uint64_t{64} << 10;
uint64_t MaxReleaseEnvelopeBytes(const TrustPolicy& policy);

// Chunks of `chunk_size` bytes that `artifact_length` bytes make (the last
// may be short); 0 for a chunk size of 0. Never overflows, whatever an
// untrusted manifest says (length + size - 1 wraps near 2^64).
inline uint64_t ChunkCount(uint64_t artifact_length, uint64_t chunk_size) {
  if (chunk_size == 0) return 0;
  return artifact_length / chunk_size + (artifact_length % chunk_size != 0);
}

// Why a manifest was refused; reported to the fleet as rejected(reason).
enum class RejectReason {
  kNone,
  kMalformed,
  kBadSignature,
  kExpired,
  kNotForThisDevice,
  kNotNewer,
  kReplay,
  kOversized,
  kRuntimeTooOld,
};
const char* RejectReasonName(RejectReason reason);  // "bad_signature", ...

int64_t TrustedTime(const TrustState& state, const TrustPolicy& policy,
                    int64_t system_now);

// Starts from a pinned root envelope, which must be signed by a threshold of
// its own root keys. (The file is trusted by being provisioned; the
// self-signature catches corruption and key mix-ups.)
Result<TrustState> TrustFromPinnedRoot(const std::string& envelope_bytes);

// Rotates to `envelope_bytes` if it is root version current+1 for the same
// fleet, signed by a threshold of the current root's root keys AND of its
// own, and not expired. On success `state` holds the new root.
Status RotateRoot(TrustState& state, const std::string& envelope_bytes,
                  const TrustPolicy& policy, int64_t system_now);

// Verifies a timestamp statement (timestamp role) and advances the time
// floor to its issue time.
Status ApplyTimestamp(TrustState& state, const std::string& envelope_bytes,
                      const TrustPolicy& policy, int64_t system_now);

// Checks a release manifest for this device: signature (release role),
// expiry against trusted time, targets, version > installed, sequence not
// below the highest seen (and not reused for different content), sizes and
// chunk list, minimum runtime. On success records the highest version and
// sequence seen and advances the time floor to the issue time; on failure
// sets `*reason` and leaves `state` unchanged.
Result<Release> AcceptRelease(TrustState& state,
                              const std::string& envelope_bytes,
                              const DeviceIdentity& device,
                              uint64_t installed_version,
                              const TrustPolicy& policy, int64_t system_now,
                              RejectReason* reason);

// The public keys `root` lists, by key id (each checked: 32 bytes, id
// matching the key).
Result<std::map<std::string, Ed25519PublicKey>> KnownKeys(const Root& root);

// Compares "MAJOR.MINOR.PATCH" versions; false if either is malformed.
bool ParseVersion(const std::string& text, uint64_t out[3]);

}  // namespace ternd::ota

#endif  // TERND_OTA_TRUST_H_
