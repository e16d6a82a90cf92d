// The artifact cache's policy: which stored artifacts go when the cache is
// over its quota (ota.cache_bytes, docs/ota.md "Artifact cache").
//
// Kept whatever their size: the active and the previous model's artifacts
// and the one an update in progress is storing. Of the others, the most
// recently written that still fit under the quota beside the kept ones
// stay; the rest are deleted. The ledger thread runs the plan
// (UpdateLedger::Evict).
#ifndef TERND_DAEMON_ARTIFACT_CACHE_H_
#define TERND_DAEMON_ARTIFACT_CACHE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "ota/state_store.h"

namespace ternd::daemon {

// `stored`: the artifacts with chunks, most recently written first
// (StateStore::Artifacts). Returns the SHA-256 of each artifact to delete.
std::vector<std::string> ArtifactsToEvict(
    const std::vector<ota::StateStore::StoredArtifact>& stored,
    const std::vector<std::string>& keep, uint64_t quota);

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_ARTIFACT_CACHE_H_
