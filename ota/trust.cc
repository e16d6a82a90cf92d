#include "ota/trust.h"

#include <openssl/sha.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "ota/signing.h"
#include "ota/waves.h"

namespace ternd::ota {
namespace {

Result<SignedEnvelope> ParseEnvelope(const std::string& bytes,
                                     const char* what) {
  SignedEnvelope env;
  if (!env.ParseFromString(bytes)) {
    return InvalidArgument("%s is not a valid SignedEnvelope protobuf", what);
  }
  return env;
}

bool Expired(int64_t expires, int64_t trusted_now, const TrustPolicy& policy) {
  return trusted_now > expires + policy.expiry_grace_seconds;
}

Status Reject(RejectReason* out, RejectReason reason, Status status) {
  *out = reason;
  return status;
}

}  // namespace

Result<std::map<std::string, Ed25519PublicKey>> KnownKeys(const Root& root) {
  std::map<std::string, Ed25519PublicKey> known;
  for (const PublicKey& k : root.keys()) {
    if (k.ed25519().size() != 32) {
      return InvalidArgument(
          "root v%llu: key '%.64s' is %zu bytes, expected 32",
          static_cast<unsigned long long>(root.version()), k.key_id().c_str(),
          k.ed25519().size());
    }
    Ed25519PublicKey key;
    std::copy(k.ed25519().begin(), k.ed25519().end(), key.begin());
    if (KeyId(key) != k.key_id()) {
      return InvalidArgument(
          "root v%llu: key id '%.64s' is not the SHA-256 of its public key",
          static_cast<unsigned long long>(root.version()), k.key_id().c_str());
    }
    known[k.key_id()] = key;
  }
  return known;
}

uint64_t MaxReleaseEnvelopeBytes(const TrustPolicy& policy) {
  return kMaxTrustMetadataBytes + 34 * policy.max_chunks;
}

const char* RejectReasonName(RejectReason reason) {
  switch (reason) {
    case RejectReason::kNone:
      return "none";
    case RejectReason::kMalformed:
      return "malformed";
    case RejectReason::kBadSignature:
      return "bad_signature";
    case RejectReason::kExpired:
      return "expired";
    case RejectReason::kNotForThisDevice:
      return "not_for_this_device";
    case RejectReason::kNotNewer:
      return "not_newer";
    case RejectReason::kReplay:
      return "replay";
    case RejectReason::kOversized:
      return "oversized";
    case RejectReason::kRuntimeTooOld:
      return "runtime_too_old";
  }
  return "unknown";
}

bool ParseVersion(const std::string& text, uint64_t out[3]) {
  const char* p = text.c_str();
  for (int i = 0; i < 3; ++i) {
    if (*p < '0' || *p > '9') return false;
    char* end = nullptr;
    out[i] = std::strtoull(p, &end, 10);
    p = end;
    if (i < 2) {
      if (*p != '.') return false;
      ++p;
    }
  }
  return *p == '\0';
}

int64_t TrustedTime(const TrustState& state, const TrustPolicy& policy,
                    int64_t system_now) {
  return std::max({policy.build_time, state.time_floor, system_now});
}

Result<TrustState> TrustFromPinnedRoot(const std::string& envelope_bytes) {
  TERND_ASSIGN_OR_RETURN(SignedEnvelope env,
                         ParseEnvelope(envelope_bytes, "pinned root"));
  TrustState state;
  if (!state.root.ParseFromString(env.payload())) {
    return InvalidArgument("pinned root payload is not a valid Root protobuf");
  }
  TERND_ASSIGN_OR_RETURN(auto known, KnownKeys(state.root));
  Status s = VerifyEnvelope(env, "root", state.root.root(), known);
  if (!s.ok()) return s.Prepend("pinned root");
  state.root_envelope = envelope_bytes;
  return state;
}

Status RotateRoot(TrustState& state, const std::string& envelope_bytes,
                  const TrustPolicy& policy, int64_t system_now) {
  TERND_ASSIGN_OR_RETURN(SignedEnvelope env,
                         ParseEnvelope(envelope_bytes, "new root"));
  Root next;
  if (!next.ParseFromString(env.payload())) {
    return InvalidArgument("new root payload is not a valid Root protobuf");
  }
  const unsigned long long have = state.root.version();
  if (next.version() != state.root.version() + 1) {
    return InvalidArgument(
        "new root is version %llu, expected %llu (current "
        "%llu + 1)",
        static_cast<unsigned long long>(next.version()), have + 1, have);
  }
  if (next.fleet() != state.root.fleet()) {
    return InvalidArgument(
        "new root is for fleet '%.64s', this device trusts "
        "fleet '%.64s'",
        next.fleet().c_str(), state.root.fleet().c_str());
  }
  TERND_ASSIGN_OR_RETURN(auto old_keys, KnownKeys(state.root));
  TERND_ASSIGN_OR_RETURN(auto new_keys, KnownKeys(next));
  Status s = VerifyEnvelope(env, "root", state.root.root(), old_keys);
  if (!s.ok()) return s.Prepend("new root, by the current root's keys");
  s = VerifyEnvelope(env, "root", next.root(), new_keys);
  if (!s.ok()) return s.Prepend("new root, by its own keys");
  const int64_t now = TrustedTime(state, policy, system_now);
  if (Expired(next.expires(), now, policy)) {
    return Errorf(StatusCode::kFailedPrecondition,
                  "new root v%llu expired at %lld, trusted time is %lld",
                  static_cast<unsigned long long>(next.version()),
                  static_cast<long long>(next.expires()),
                  static_cast<long long>(now));
  }
  // Fast-forward recovery (as TUF does): a stolen release key can push the
  // highest sequence seen so far ahead that no honest release is accepted
  // again. A root that changes the release keys revokes what they signed,
  // so the sequence floor they set goes with them. Anti-rollback of the
  // installed model is unaffected (it compares with the installed version).
  auto sorted_ids = [](const RoleKeys& role) {
    std::vector<std::string> ids(role.key_ids().begin(), role.key_ids().end());
    std::sort(ids.begin(), ids.end());
    return ids;
  };
  if (sorted_ids(next.release()) != sorted_ids(state.root.release())) {
    state.highest_sequence = 0;
    state.highest_sequence_sha256.clear();
    state.highest_version_seen = 0;
  }
  state.root = std::move(next);
  state.root_envelope = envelope_bytes;
  return Status::Ok();
}

Status ApplyTimestamp(TrustState& state, const std::string& envelope_bytes,
                      const TrustPolicy& policy, int64_t system_now) {
  TERND_ASSIGN_OR_RETURN(SignedEnvelope env,
                         ParseEnvelope(envelope_bytes, "timestamp"));
  TERND_ASSIGN_OR_RETURN(auto known, KnownKeys(state.root));
  TERND_RETURN_IF_ERROR(
      VerifyEnvelope(env, "timestamp", state.root.timestamp(), known));
  Timestamp ts;
  if (!ts.ParseFromString(env.payload())) {
    return InvalidArgument("timestamp payload is not a valid Timestamp");
  }
  const int64_t now = TrustedTime(state, policy, system_now);
  if (Expired(ts.expires(), now, policy)) {
    return Errorf(StatusCode::kFailedPrecondition,
                  "timestamp expired at %lld, trusted time is %lld",
                  static_cast<long long>(ts.expires()),
                  static_cast<long long>(now));
  }
  state.time_floor = std::max(state.time_floor, ts.issued());
  return Status::Ok();
}

Result<Release> AcceptRelease(TrustState& state,
                              const std::string& envelope_bytes,
                              const DeviceIdentity& device,
                              uint64_t installed_version,
                              const TrustPolicy& policy, int64_t system_now,
                              RejectReason* reason) {
  *reason = RejectReason::kNone;
  Result<SignedEnvelope> env = ParseEnvelope(envelope_bytes, "release");
  if (!env.ok()) return Reject(reason, RejectReason::kMalformed, env.status());
  TERND_ASSIGN_OR_RETURN(auto known, KnownKeys(state.root));
  Status s = VerifyEnvelope(*env, "release", state.root.release(), known);
  if (!s.ok()) return Reject(reason, RejectReason::kBadSignature, s);
  Release r;
  if (!r.ParseFromString(env->payload())) {
    return Reject(reason, RejectReason::kMalformed,
                  InvalidArgument("release payload is not a valid Release"));
  }
  const unsigned long long version = r.model_version();
  const int64_t now = TrustedTime(state, policy, system_now);
  if (Expired(r.expires(), now, policy)) {
    return Reject(reason, RejectReason::kExpired,
                  Errorf(StatusCode::kFailedPrecondition,
                         "release of '%.64s' v%llu expired at %lld, trusted "
                         "time is %lld",
                         r.model_name().c_str(), version,
                         static_cast<long long>(r.expires()),
                         static_cast<long long>(now)));
  }
  bool targeted =
      std::find(r.target_devices().begin(), r.target_devices().end(),
                device.id) != r.target_devices().end();
  for (const std::string& g : device.groups) {
    targeted = targeted ||
               std::find(r.target_groups().begin(), r.target_groups().end(),
                         g) != r.target_groups().end();
  }
  if (!targeted) {
    return Reject(reason, RejectReason::kNotForThisDevice,
                  InvalidArgument("release of '%.64s' v%llu targets %d devices "
                                  "and %d groups, not device '%.64s' or its "
                                  "groups",
                                  r.model_name().c_str(), version,
                                  r.target_devices_size(),
                                  r.target_groups_size(), device.id.c_str()));
  }
  if (r.model_version() <= installed_version) {
    return Reject(
        reason, RejectReason::kNotNewer,
        InvalidArgument("release v%llu is not newer than the "
                        "installed v%llu (anti-rollback)",
                        version,
                        static_cast<unsigned long long>(installed_version)));
  }
  const std::string digest = Sha256(env->payload());
  if (r.sequence() < state.highest_sequence ||
      (r.sequence() == state.highest_sequence &&
       digest != state.highest_sequence_sha256)) {
    return Reject(reason, RejectReason::kReplay,
                  InvalidArgument(
                      "release sequence %llu is %s the highest "
                      "seen (%llu): replayed or mixed metadata",
                      static_cast<unsigned long long>(r.sequence()),
                      r.sequence() < state.highest_sequence
                          ? "below"
                          : "reused with other content than",
                      static_cast<unsigned long long>(state.highest_sequence)));
  }
  // Fixed chunks of chunk_size bytes, or (content-addressed, docs/ota.md
  // "Delta downloads") chunk_size 0 and one non-zero chunk length per chunk
  // hash, summing to the artifact length.
  const bool content = r.chunk_length_size() > 0;
  using ull = unsigned long long;
  char content_problem[192] = "";
  if (content) {
    uint64_t sum = 0;
    for (int i = 0; i < r.chunk_length_size() && !content_problem[0]; ++i) {
      const uint64_t len = r.chunk_length(i);
      if (len == 0) {
        std::snprintf(content_problem, sizeof content_problem,
                      "chunk_length[%d] is 0; every chunk holds at least one "
                      "byte",
                      i);
      } else if (len > r.artifact_length() - sum) {
        std::snprintf(content_problem, sizeof content_problem,
                      "chunk lengths reach past artifact_length %llu at "
                      "chunk_length[%d] = %llu",
                      static_cast<ull>(r.artifact_length()), i,
                      static_cast<ull>(len));
      } else {
        sum += len;
      }
    }
    if (content_problem[0]) {
    } else if (sum != r.artifact_length()) {
      std::snprintf(content_problem, sizeof content_problem,
                    "the %d chunk lengths sum to %llu, expected "
                    "artifact_length %llu",
                    r.chunk_length_size(), static_cast<ull>(sum),
                    static_cast<ull>(r.artifact_length()));
    } else if (r.chunk_size() != 0) {
      std::snprintf(content_problem, sizeof content_problem,
                    "chunk_size is %llu with chunk lengths; expected 0",
                    static_cast<ull>(r.chunk_size()));
    } else if (r.chunk_sha256_size() != r.chunk_length_size()) {
      std::snprintf(content_problem, sizeof content_problem,
                    "%d chunk lengths but %d chunk hashes; expected one hash "
                    "per chunk",
                    r.chunk_length_size(), r.chunk_sha256_size());
    }
  }
  if (content_problem[0]) {
    return Reject(reason, RejectReason::kMalformed,
                  InvalidArgument("release v%llu: content-addressed artifact: "
                                  "%s",
                                  version, content_problem));
  }
  const uint64_t chunks = content
                              ? static_cast<uint64_t>(r.chunk_length_size())
                              : ChunkCount(r.artifact_length(), r.chunk_size());
  if (r.artifact_length() == 0 || r.model_length() == 0 ||
      (!content && r.chunk_size() == 0) || r.urls_size() == 0 ||
      r.artifact_sha256().size() != 32 || r.model_sha256().size() != 32 ||
      static_cast<uint64_t>(r.chunk_sha256_size()) != chunks ||
      std::any_of(r.chunk_sha256().begin(), r.chunk_sha256().end(),
                  [](const std::string& h) { return h.size() != 32; })) {
    return Reject(reason, RejectReason::kMalformed,
                  InvalidArgument("release v%llu: lengths, URLs, hashes or "
                                  "the %d chunk hashes (expected %llu) are "
                                  "missing or malformed",
                                  version, r.chunk_sha256_size(),
                                  static_cast<unsigned long long>(chunks)));
  }
  if (r.artifact_length() > policy.max_artifact_bytes ||
      r.model_length() > policy.max_model_bytes || chunks > policy.max_chunks) {
    return Reject(
        reason, RejectReason::kOversized,
        ResourceExhausted(
            "release v%llu: artifact %llu bytes, model %llu "
            "bytes, %llu chunks exceed the limits (%llu, %llu, "
            "%llu)",
            version, static_cast<unsigned long long>(r.artifact_length()),
            static_cast<unsigned long long>(r.model_length()),
            static_cast<unsigned long long>(chunks),
            static_cast<unsigned long long>(policy.max_artifact_bytes),
            static_cast<unsigned long long>(policy.max_model_bytes),
            static_cast<unsigned long long>(policy.max_chunks)));
  }
  if (!r.min_runtime_version().empty()) {
    uint64_t need[3], have[3];
    if (!ParseVersion(r.min_runtime_version(), need)) {
      return Reject(reason, RejectReason::kMalformed,
                    InvalidArgument("release v%llu: min_runtime_version "
                                    "'%.32s' is not MAJOR.MINOR.PATCH",
                                    version, r.min_runtime_version().c_str()));
    }
    if (!ParseVersion(policy.runtime_version, have) ||
        std::lexicographical_compare(have, have + 3, need, need + 3)) {
      return Reject(reason, RejectReason::kRuntimeTooOld,
                    FailedPrecondition("release v%llu needs ternd %.32s or "
                                       "newer, this is %.32s",
                                       version, r.min_runtime_version().c_str(),
                                       policy.runtime_version.c_str()));
    }
  }
  if (Status w = ValidateWaveSchedule(r); !w.ok()) {
    return Reject(reason, RejectReason::kMalformed,
                  w.Prepend("release v" + std::to_string(version)));
  }
  state.highest_version_seen =
      std::max(state.highest_version_seen, r.model_version());
  state.highest_sequence = r.sequence();
  state.highest_sequence_sha256 = digest;
  state.time_floor = std::max(state.time_floor, r.issued());
  return r;
}

}  // namespace ternd::ota
