// The device's durable update state in one SQLite database (WAL mode):
// the trust state (root, time floor, highest version/sequence seen) and
// downloaded artifact chunks with the validator (ETag or Last-Modified) each
// source sent, so a partial download resumes after a restart.
//
// Every write is one transaction with synchronous=FULL (the download
// worker's connection excepted: RelaxDurabilityForChunks): after a power cut
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

  // Artifact chunks, keyed by the artifact's SHA-256 (raw 32 bytes), each
  // also indexed by its own SHA-256 (`chunk_sha256`, computed here when
  // empty; a caller that just checked the chunk's hash passes it).
  // PutChunk fails with kResourceExhausted when the disk (or the
  // database's file system) is full; the database keeps its old content.
  Status PutChunk(const std::string& artifact_sha256, uint64_t index,
                  std::string_view bytes, std::string_view chunk_sha256 = {});
  // The bytes of a stored chunk (of any artifact) whose SHA-256 is
  // `chunk_sha256`, or nullopt. Chunks written before schema version 2
  // have no hash and are never found. The caller re-checks the hash.
  Result<std::optional<std::string>> FindChunkBySha256(
      std::string_view chunk_sha256);
  Result<std::optional<std::string>> GetChunk(
      const std::string& artifact_sha256, uint64_t index);
  // Indices stored for an artifact, ascending.
  Result<std::vector<uint64_t>> ChunkIndices(
      const std::string& artifact_sha256);
  Status DeleteChunk(const std::string& artifact_sha256, uint64_t index);
  // Deletes the artifact's chunks and download validators in one
  // transaction.
  Status DeleteArtifact(const std::string& artifact_sha256);

  struct StoredArtifact {
    std::string sha256;  // raw 32 bytes
    uint64_t bytes = 0;  // sum of its stored chunks
  };
  // Moves the write-ahead log into the database and truncates it, so the
  // space deleted chunks held is usable again (after eviction, or after a
  // full disk made a write fail). Best effort: other connections may hold
  // the log.
  Status Checkpoint();

  // Artifacts with stored chunks, the most recently written first.
  Result<std::vector<StoredArtifact>> Artifacts();

  // Download resume data: the validator (a strong ETag, or else the
  // Last-Modified date, exactly as the server sent it) that `url` gave for
  // the artifact, sent back as If-Range when resuming from that URL.
  Status PutDownloadValidator(const std::string& artifact_sha256,
                              const std::string& url,
                              const std::string& validator);
  Result<std::optional<std::string>> GetDownloadValidator(
      const std::string& artifact_sha256, const std::string& url);

  // For a connection that writes only downloaded chunks and resume data
  // (the download worker's): commits are not fsynced one by one (WAL with
  // synchronous=NORMAL; the WAL is synced at checkpoints). A power cut may
  // lose the last chunks written, which the next download re-checks and
  // fetches again; it never breaks consistency, and kill -9 loses nothing.
  // Other connections (trust, update state) keep synchronous=FULL.
  // Checkpoints move to a background thread with a connection of its own,
  // woken when a commit leaves 16 MiB of WAL, so the writer does not wait
  // for their copying and fsyncs; should it fall behind, the writer
  // checkpoints itself from 64 MiB of WAL on. The WAL stays bounded either
  // way and is truncated back to 16 MiB when it restarts.
  Status RelaxDurabilityForChunks();
  // Background checkpoints that completed (0 before
  // RelaxDurabilityForChunks). For tests.
  uint64_t background_checkpoints() const;

  const std::string& path() const { return path_; }

 private:
  StateStore() = default;
  Status Exec(const char* sql);
  Status Error(const char* what);

  class Checkpointer;

  sqlite3* db_ = nullptr;
  std::string path_;
  std::unique_ptr<Checkpointer> checkpointer_;
};

}  // namespace ternd::ota

#endif  // TERND_OTA_STATE_STORE_H_
