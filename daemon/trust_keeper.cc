#include "daemon/trust_keeper.h"

#include <optional>
#include <vector>

#include "base/file.h"

namespace ternd::daemon {
namespace {

bool Same(const ota::TrustState& a, const ota::TrustState& b) {
  return a.root_envelope == b.root_envelope && a.time_floor == b.time_floor &&
         a.highest_version_seen == b.highest_version_seen &&
         a.highest_sequence == b.highest_sequence &&
         a.highest_sequence_sha256 == b.highest_sequence_sha256;
}

}  // namespace

Result<std::unique_ptr<TrustKeeper>> TrustKeeper::Open(
    const std::optional<ota::TrustState>& stored, const std::string& root_file,
    const ota::TrustPolicy& policy, Persist persist) {
  std::unique_ptr<TrustKeeper> keeper(
      new TrustKeeper(policy, std::move(persist)));
  Result<std::vector<uint8_t>> pinned_bytes = ReadFile(root_file, 1 << 20);
  std::optional<ota::TrustState> pinned;
  if (pinned_bytes.ok()) {
    Result<ota::TrustState> t = ota::TrustFromPinnedRoot(
        std::string(pinned_bytes->begin(), pinned_bytes->end()));
    if (!t.ok()) {
      Status s = t.status();
      return s.Prepend(root_file);
    }
    pinned = std::move(*t);
  } else if (!stored) {
    Status s = pinned_bytes.status();
    return s.Prepend("ota.root_file (the pinned root of trust)");
  }
  if (stored && (!pinned || stored->root.version() >= pinned->root.version())) {
    keeper->trust_ = *stored;
    return keeper;
  }
  // First start, or a newer root was provisioned by hand: adopt it,
  // keeping the floors learnt so far.
  ota::TrustState next = std::move(*pinned);
  if (stored) {
    next.time_floor = stored->time_floor;
    next.highest_version_seen = stored->highest_version_seen;
    next.highest_sequence = stored->highest_sequence;
    next.highest_sequence_sha256 = stored->highest_sequence_sha256;
  }
  keeper->trust_ = std::move(next);
  keeper->persist_(keeper->trust_);
  return keeper;
}

Result<ota::TrustState> TrustKeeper::CheckRoot(const std::string& envelope,
                                               int64_t now) const {
  ota::TrustState next = trust_;
  TERND_RETURN_IF_ERROR(ota::RotateRoot(next, envelope, policy_, now));
  return next;
}

Result<ota::TrustState> TrustKeeper::CheckTimestamp(const std::string& envelope,
                                                    int64_t now) const {
  ota::TrustState next = trust_;
  TERND_RETURN_IF_ERROR(ota::ApplyTimestamp(next, envelope, policy_, now));
  return next;
}

Result<ota::Release> TrustKeeper::CheckRelease(
    const std::string& envelope, const ota::DeviceIdentity& device,
    uint64_t installed_version, int64_t now, ota::TrustState* next,
    ota::RejectReason* reason) const {
  *next = trust_;
  return ota::AcceptRelease(*next, envelope, device, installed_version, policy_,
                            now, reason);
}

bool TrustKeeper::Commit(ota::TrustState next) {
  if (Same(next, trust_)) return false;
  trust_ = std::move(next);
  persist_(trust_);
  return true;
}

}  // namespace ternd::daemon
