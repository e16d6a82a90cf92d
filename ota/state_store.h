// The device's durable update state in one SQLite database (WAL mode):
// the trust state (root, time floor, highest version/sequence seen) and
// downloaded artifact chunks, so a partial download survives a restart.
//
// Every write is one transaction with synchronous=FULL: after a power cut
// or kill -9 the database holds the state before or after a call, never a
// mix. Errors name the database path and what SQLite said.
//
// Thread-safety: one StateStore per thread (SQLite connection rules).
#ifndef TERND_OTA_STATE_STORE_H_
#define TERND_OTA_STATE_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "ota/trust.h"

struct sqlite3;

namespace ternd::ota {

class StateStore {
 public:
  // Opens or creates the database at `path` (mode 0600) and its schema.
  static Result<std::unique_ptr<StateStore>> Open(const std::string& path);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // The saved trust state, or nullopt before the first save.
  Result<std::optional<TrustState>> LoadTrust();
  Status SaveTrust(const TrustState& state);

  // Artifact chunks, keyed by the artifact's SHA-256 (raw 32 bytes).
  Status PutChunk(const std::string& artifact_sha256, uint64_t index,
                  const std::string& bytes);
  Result<std::optional<std::string>> GetChunk(
      const std::string& artifact_sha256, uint64_t index);
  // Indices stored for an artifact, ascending.
  Result<std::vector<uint64_t>> ChunkIndices(
      const std::string& artifact_sha256);
  Status DeleteArtifact(const std::string& artifact_sha256);

  const std::string& path() const { return path_; }

 private:
  StateStore() = default;
  Status Exec(const char* sql);
  Status Error(const char* what);

  sqlite3* db_ = nullptr;
  std::string path_;
};

}  // namespace ternd::ota

#endif  // TERND_OTA_STATE_STORE_H_
