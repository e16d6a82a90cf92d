// ArtifactFetcher: downloads a signed artifact over HTTPS into the state
// database's chunk table, resuming whatever an earlier run (or an earlier
// attempt) left, and checking every chunk against its signed SHA-256.
//
// libcurl's multi interface is driven by the caller's sd-event loop (socket
// and timer callbacks become sd-event io and time sources): no curl threads,
// nothing on the loop blocks. Hashing and SQLite writes run on an
// ArtifactWorker thread with its own StateStore connection.
//
// One download, step by step (docs/ota.md, "Downloads"):
// 1. The worker re-checks the chunks already stored for the artifact
//    against their signed hashes (a stored chunk that no longer matches is
//    deleted) and loads the validators (ETag / Last-Modified) sources sent.
// 2. A request starts at the first chunk not yet verified: one open range
//    `Range: bytes=N-` with `If-Range: <validator>` when that URL sent one.
//    For a content-addressed artifact (docs/ota.md, "Delta downloads") the
//    worker first copies in every chunk whose hash the store already holds
//    under another artifact, and a request asks for one run of missing
//    chunks, `Range: bytes=N-M`; runs are fetched one after another.
//    The status and headers are read from libcurl once a response's headers
//    end (CURLINFO_RESPONSE_CODE, curl_easy_header), never parsed by hand.
//    206 must carry exactly one `Content-Range: bytes N-E/<signed length>`
//    (a multipart/byteranges answer has none and is refused); a 200 to a
//    ranged request (range ignored, or the file changed) restarts at byte
//    0: chunks already verified are skipped, not fetched into the store
//    again, since every chunk is checked against its signed hash anyway.
//    A Content-Length that disagrees with the signed length is refused
//    before any body byte; body bytes beyond the signed length abort the
//    transfer on the spot (endless-data defence).
// 3. Complete chunks go to the worker, which hashes them and stores those
//    that match. A chunk that does not is dropped and fetched again from
//    that chunk on; a URL that gave `max_bad_responses_per_url` responses
//    with bad chunks is not used again.
//    While `max_queued_bytes` of chunks wait for the worker, the transfer
//    is paused (memory stays bounded whatever the link speed).
// 4. Failures (connection, TLS, HTTP status, cut transfers) are retried
//    from the first missing chunk, rotating across the URLs (mirrors), with
//    exponential backoff and full jitter. An attempt that verified at least
//    one new chunk resets the backoff. After `max_failures` attempts in a
//    row without progress, or when no URL is usable, the download fails.
// 5. When every chunk is verified, the worker checks the signed artifact
//    SHA-256 (fed as chunks were stored; chunks from an earlier run are read
//    back).
// 6. With `stage`, the worker also decompresses each chunk it stores into
//    the model (ModelStager: capped at the signed model length, the model's
//    SHA-256 checked at the end), so the update needs no second pass over
//    the stored artifact; chunks from an earlier run are staged at step 5.
//
// HTTPS only (TLS 1.2 or later, the fleet CA in `ca_file`, optional client
// certificate); http:// URLs are refused unless `allow_plain_http` (a test
// mode) is set. Redirects are followed to HTTPS URLs only.
//
// Thread-safety: create, use and destroy on the loop's thread. Callbacks
// run on the loop's thread; a callback may destroy the fetcher.
#ifndef TERND_OTA_FETCHER_H_
#define TERND_OTA_FETCHER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "ota/artifact.h"
#include "ota/metadata.pb.h"

typedef struct sd_event sd_event;

namespace ternd::ota {

struct FetchJob {
  std::vector<std::string> urls;  // tried in order, then round robin
  ArtifactSpec artifact;          // lengths, chunk size, signed hashes
};
FetchJob FetchJobFromRelease(const Release& release);

struct FetchOptions {
  std::string state_db;   // the StateStore database the chunks go into
  std::string ca_file;    // fleet CA (PEM); required
  std::string cert_file;  // optional client certificate (PEM)
  std::string key_file;   // and its key; never logged
  // Test mode: also accept http:// URLs. Never set in production.
  bool allow_plain_http = false;
  int64_t max_bytes_per_second = 0;  // receive rate limit; 0: none
  int connect_timeout_ms = 15000;
  // A transfer slower than this many bytes/s for low_speed_seconds fails.
  int low_speed_bytes_per_second = 1024;
  int low_speed_seconds = 30;
  int max_failures = 8;  // attempts in a row without progress
  int retry_min_ms = 1000;
  int retry_max_ms = 300000;
  // Responses with at least one chunk failing its hash, per URL, before
  // that URL is dropped.
  int max_bad_responses_per_url = 3;
  uint64_t max_queued_bytes = 4 << 20;  // chunks waiting for the worker
  // Decompress and check the model while downloading (step 6); the model
  // (model-length bytes, allocated by the worker) is then TakeStagedModel's.
  bool stage = false;
  uint64_t jitter_seed = 0;  // 0: random
};

// A content-addressed artifact's chunks found already stored (under an
// earlier version) count in neither verified_bytes nor total_bytes: those
// are what is downloaded; reused_bytes is the rest.
struct FetchProgress {
  uint64_t verified_bytes = 0;  // stored and matching their signed hashes
  uint64_t total_bytes = 0;     // the signed artifact length, less reused
  uint64_t reused_bytes = 0;    // copied from chunks already stored
};

// What happened, for logs, status reports and tests.
struct FetchAttempt {
  std::string url;
  uint64_t range_start = 0;  // 0: no Range header, or bytes=0-M
  uint64_t range_end = 0;    // exclusive; < the length: bytes=N-(end-1)
  bool if_range = false;     // an If-Range validator was sent
  long http_status = 0;      // 0: no response
  std::string error;         // empty: the transfer ended normally
};
struct FetchReport {
  std::vector<FetchAttempt> attempts;
  uint64_t chunks_reused = 0;  // verified from an earlier run
  // Content-addressed artifacts: chunks (and their bytes) copied from
  // chunks of other artifacts with the same hash, not downloaded.
  uint64_t chunks_deduplicated = 0;
  uint64_t bytes_deduplicated = 0;
  uint64_t chunks_discarded = 0;    // stored earlier, failed re-check
  uint64_t chunks_rejected = 0;     // downloaded, failed their hash
  uint64_t bytes_received = 0;      // body bytes accepted from sources
  uint64_t range_ignored = 0;       // 200 answers to ranged requests
  uint64_t over_length_aborts = 0;  // sources that sent too much
};

class ArtifactFetcher {
 public:
  using ProgressCallback = std::function<void(const FetchProgress&)>;
  // Exactly once, unless the fetcher is cancelled or destroyed first. OK
  // means every chunk is stored and the artifact hash matched. Errors name
  // the URL, HTTP status, offset, expected vs found.
  using DoneCallback = std::function<void(const Status&)>;

  // Checks the job and options, then starts (asynchronously: callbacks
  // never run inside Start). `loop` must outlive the fetcher.
  static Result<std::unique_ptr<ArtifactFetcher>> Start(
      sd_event* loop, FetchJob job, FetchOptions options,
      ProgressCallback on_progress, DoneCallback on_done);

  // Stops the transfer; no callback runs afterwards. Verified chunks stay
  // stored, so a later fetcher resumes.
  void Cancel();

  // Clean at any moment: the transfer is dropped, the worker finishes the
  // chunk it is writing (a whole SQLite transaction) and stops.
  ~ArtifactFetcher();

  const FetchReport& report() const;
  // After an OK completion with FetchOptions::stage: the model, decompressed
  // and matching its signed SHA-256 and length (moved out: call once).
  // Empty otherwise.
  std::vector<uint8_t> TakeStagedModel();
  FetchProgress progress() const;

 private:
  class Impl;
  explicit ArtifactFetcher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ternd::ota

#endif  // TERND_OTA_FETCHER_H_
