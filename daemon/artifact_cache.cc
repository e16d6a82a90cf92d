#include "daemon/artifact_cache.h"

#include <algorithm>

namespace ternd::daemon {

std::vector<std::string> ArtifactsToEvict(
    const std::vector<ota::StateStore::StoredArtifact>& stored,
    const std::vector<std::string>& keep, uint64_t quota) {
  auto kept = [&](const std::string& sha256) {
    return std::find(keep.begin(), keep.end(), sha256) != keep.end();
  };
  uint64_t total = 0;
  for (const auto& a : stored) {
    if (kept(a.sha256)) total += a.bytes;
  }
  std::vector<std::string> evict;
  for (const auto& a : stored) {
    if (kept(a.sha256)) continue;
    if (total + a.bytes <= quota) {
      total += a.bytes;
      continue;
    }
    evict.push_back(a.sha256);
  }
  return evict;
}

}  // namespace ternd::daemon
