// Artifact work that must not run on the event loop: checking the chunks a
// download stored, and staging an update (streaming zstd decompression of
// the stored chunks straight into a caller's buffer, e.g. the idle arena
// slot), with every signed length and hash checked on the way.
//
//   loop thread                        ArtifactWorker thread
//   Post(work, done) --> [queue] -->   work(its own StateStore connection)
//   done() runs on the loop <-- eventfd <--
//
// Defences (docs/ota.md, "Downloads"):
// - decompression bomb: the output is capped at the signed model length;
//   the first byte beyond it is an error, and nothing is written past it;
// - each stored chunk is checked against its signed SHA-256 before zstd
//   sees it, the whole artifact against the signed artifact SHA-256, and the
//   model against the signed model SHA-256 and length.
//
// Thread-safety: StageArtifact and VerifyStoredArtifact are blocking and
// take the caller's StateStore (one per thread). ArtifactWorker's methods
// are called from the loop thread only.
#ifndef TERND_OTA_ARTIFACT_H_
#define TERND_OTA_ARTIFACT_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/status.h"
#include "ota/metadata.pb.h"
#include "ota/signing.h"  // Sha256, Sha256Hasher, Hex
#include "ota/state_store.h"

typedef struct sd_event sd_event;
typedef struct sd_event_source sd_event_source;
struct ZSTD_DCtx_s;  // zstd's ZSTD_DCtx

namespace ternd::ota {

// What a release signs about its artifact.
struct ArtifactSpec {
  std::string artifact_sha256;  // raw 32 bytes, of the compressed artifact
  uint64_t artifact_length = 0;
  std::string model_sha256;  // raw 32 bytes, of the .tern inside
  uint64_t model_length = 0;
  // Fixed-size chunks: chunk_size bytes each (the last may be short), and
  // chunk_length empty. Content-addressed artifacts (docs/ota.md, "Delta
  // downloads"): chunk_size 0 and chunk_length[i] bytes for chunk i.
  uint64_t chunk_size = 0;
  std::vector<uint64_t> chunk_length;
  std::vector<std::string> chunk_sha256;  // raw 32 bytes each, in order
  // Derived by ArtifactSpecFromRelease / FinishArtifactSpec: the offset of
  // each chunk of a content-addressed artifact (chunk_length.size() + 1
  // entries, the last the artifact length).
  std::vector<uint64_t> chunk_offset;
  bool content_addressed() const { return !chunk_length.empty(); }
};
// Fills spec->chunk_offset from chunk_length (a no-op for fixed chunks).
void FinishArtifactSpec(ArtifactSpec* spec);
ArtifactSpec ArtifactSpecFromRelease(const Release& release);

// Checks that the spec is self-consistent: 32-byte hashes, and either a
// non-zero chunk size with one chunk hash per chunk_size bytes of the
// artifact, or (content-addressed) chunk size 0, one hash per chunk length,
// no zero-length chunk, lengths summing to the artifact length.
Status CheckArtifactSpec(const ArtifactSpec& spec);

// Length of chunk `index` (the last fixed-size one may be short).
uint64_t ChunkLength(const ArtifactSpec& spec, uint64_t index);
// Artifact offset of chunk `index`.
uint64_t ChunkOffset(const ArtifactSpec& spec, uint64_t index);
// The chunk that holds artifact byte `offset` (< artifact_length).
uint64_t ChunkAt(const ArtifactSpec& spec, uint64_t offset);

// Streaming decompression of an artifact's chunks, fed in order, into a
// caller's buffer (the staged model), with StageArtifact's defences: the
// output is capped at the signed model length (the first byte beyond it is
// an error), and the model's SHA-256 is checked at Finish. It trusts its
// input to be the artifact's chunks already checked against their signed
// hashes. Used by StageArtifact (chunks read back from the store) and by a
// download that stages as it goes (FetchOptions::stage_into).
class ModelStager {
 public:
  // `spec` must outlive the stager; out.size() >= spec.model_length.
  static Result<std::unique_ptr<ModelStager>> Create(const ArtifactSpec* spec,
                                                     std::span<uint8_t> out);
  ~ModelStager();
  ModelStager(const ModelStager&) = delete;
  ModelStager& operator=(const ModelStager&) = delete;

  // Decompresses chunk next_chunk() (its bytes) and hashes the new output.
  Status Feed(std::string_view chunk);
  uint64_t next_chunk() const { return next_chunk_; }
  // After the last chunk: drains zstd and checks the model's length and
  // SHA-256. Returns the model length (== spec.model_length).
  Result<uint64_t> Finish();

 private:
  ModelStager() = default;
  Status Drain(const void* src, size_t size, uint64_t artifact_offset);

  const ArtifactSpec* spec_ = nullptr;
  std::span<uint8_t> out_;
  ::ZSTD_DCtx_s* dctx_ = nullptr;
  size_t out_pos_ = 0;
  size_t last_ret_ = 0;  // zstd's hint; 0 at a frame boundary
  uint64_t next_chunk_ = 0;
  Sha256Hasher model_hash_;
};

// Reads every chunk of the artifact from `store` in order and checks each
// against its signed hash and the whole against the signed artifact hash.
// Blocking; `cancel` (optional) is polled between chunks.
Status VerifyStoredArtifact(StateStore& store, const ArtifactSpec& spec,
                            const std::atomic<bool>* cancel = nullptr);
// The same, when `hash` (and `stager`, if any) have already been fed chunks
// [0, first_chunk) (as they were stored): reads and feeds only the rest.
Status VerifyStoredArtifactFrom(StateStore& store, const ArtifactSpec& spec,
                                Sha256Hasher& hash, uint64_t first_chunk,
                                const std::atomic<bool>* cancel = nullptr,
                                ModelStager* stager = nullptr);

// Decompresses the stored artifact into `out` and checks it. Returns the
// model length (== spec.model_length) on success.
// REQUIRES: out.size() >= spec.model_length. Bytes of `out` beyond
// spec.model_length are never written. On error `out`'s content is
// unspecified (a partial model) and must not be used.
// Blocking (seconds for large models): call it on a worker thread, e.g. via
// ArtifactWorker. `cancel` (optional) is polled between chunks.
Result<uint64_t> StageArtifact(StateStore& store, const ArtifactSpec& spec,
                               std::span<uint8_t> out,
                               const std::atomic<bool>* cancel = nullptr);

// One thread with its own StateStore connection for artifact work, whose
// completions run back on an sd-event loop.
class ArtifactWorker {
 public:
  // `store` is the opened connection, or why it could not be opened.
  using Work = std::function<void(Result<StateStore*> store)>;
  using Done = std::function<void()>;

  // Starts the thread; it opens the StateStore at `state_db` itself, so
  // this call does not touch the disk. The loop must outlive the worker.
  // `chunk_writer`: the connection only writes downloaded chunks and resume
  // data, which need no fsync per commit (StateStore::
  // RelaxDurabilityForChunks).
  static Result<std::unique_ptr<ArtifactWorker>> Start(
      sd_event* loop, std::string state_db, bool chunk_writer = false);
  // Stops: the running work item finishes (it sees cancelled() == true),
  // queued ones are dropped, and no `done` runs any more.
  ~ArtifactWorker();
  ArtifactWorker(const ArtifactWorker&) = delete;
  ArtifactWorker& operator=(const ArtifactWorker&) = delete;

  // Runs `work` on the worker thread, in order, then `done` on the loop
  // thread. Work items communicate results to `done` through captures.
  void Post(Work work, Done done);

  // True once destruction began; long work polls it.
  const std::atomic<bool>* cancel_flag() const { return &stopping_; }

 private:
  ArtifactWorker() = default;
  void Run();
  static int OnEventFd(sd_event_source* s, int fd, uint32_t revents,
                       void* self);

  std::string state_db_;
  bool chunk_writer_ = false;
  int event_fd_ = -1;
  sd_event_source* source_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<Work, Done>> queue_;  // guarded by mu_
  std::deque<Done> completed_;               // guarded by mu_
  std::atomic<bool> stopping_{false};
  // Loop thread only: false once destruction began (see OnEventFd).
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::thread thread_;
};

}  // namespace ternd::ota

#endif  // TERND_OTA_ARTIFACT_H_
