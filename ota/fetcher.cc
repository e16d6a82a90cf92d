#include "ota/fetcher.h"

#include <curl/curl.h>
#include <curl/header.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <systemd/sd-event.h>

#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>

#include "base/backoff.h"
#include "base/log.h"
#include "base/memory.h"

namespace ternd::ota {
namespace {

using ull = unsigned long long;

// Receive buffer per transfer: fewer, larger write callbacks.
constexpr long kCurlBufferSize = 256 * 1024;
constexpr long kMaxRedirects = 5;

std::once_flag g_curl_init;

bool StartsWithNoCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) !=
        std::tolower(static_cast<unsigned char>(prefix[i]))) {
      return false;
    }
  }
  return true;
}

// A header of the response whose headers curl has just finished reading
// (the last request of the transfer; not 1xx, CONNECT or trailer headers),
// as curl parsed it (value trimmed); `count` gets how many headers of that
// name the response carried (0 when none).
std::optional<std::string> ResponseHeader(CURL* easy, const char* name,
                                          size_t* count = nullptr) {
  curl_header* h = nullptr;
  const CURLHcode rc =
      curl_easy_header(easy, name, 0, CURLH_HEADER, /*request=*/-1, &h);
  if (count != nullptr) *count = rc == CURLHE_OK ? h->amount : 0;
  if (rc != CURLHE_OK) return std::nullopt;
  return std::string(h->value);  // h is valid until the next call only
}

// Digits only (no sign, no space): the value of a decimal header field.
bool ParseDecimal(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

// `bytes FIRST-LAST/TOTAL`, exactly (RFC 9110 14.4; no `*` total, which
// only a 416 carries).
bool ParseContentRange(std::string_view s, uint64_t* first, uint64_t* last,
                       uint64_t* total) {
  constexpr std::string_view kUnit = "bytes ";
  if (!StartsWithNoCase(s, kUnit)) return false;
  s.remove_prefix(kUnit.size());
  const size_t dash = s.find('-');
  const size_t slash = s.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos ||
      slash < dash) {
    return false;
  }
  return ParseDecimal(s.substr(0, dash), first) &&
         ParseDecimal(s.substr(dash + 1, slash - dash - 1), last) &&
         ParseDecimal(s.substr(slash + 1), total);
}

// What follows `Range: bytes=` for the transfer: `N-` (to the end) or
// `N-M` (one run of missing chunks).
template <typename T>
std::string RangeSpec(const T& t, uint64_t length) {
  std::string r = std::to_string(t.range_start) + "-";
  if (t.range_end < length) r += std::to_string(t.range_end - 1);
  return r;
}

// URLs may carry access tokens in their query: never log or report those.
std::string RedactUrl(const std::string& url) {
  const size_t q = url.find('?');
  return q == std::string::npos ? url : url.substr(0, q) + "?<redacted>";
}

}  // namespace

FetchJob FetchJobFromRelease(const Release& release) {
  FetchJob job;
  job.urls.assign(release.urls().begin(), release.urls().end());
  job.artifact = ArtifactSpecFromRelease(release);
  return job;
}

class ArtifactFetcher::Impl {
 public:
  friend class ArtifactFetcher;
  Impl(sd_event* loop, FetchJob job, FetchOptions options,
       ProgressCallback on_progress, DoneCallback on_done)
      : loop_(sd_event_ref(loop)),
        job_(std::move(job)),
        options_(std::move(options)),
        on_progress_(std::move(on_progress)),
        on_done_(std::move(on_done)) {
    running_hash_->stage = options_.stage;
  }
  ~Impl();

  Status Init();
  void Cancel();

  FetchReport report_;
  uint64_t verified_bytes_ = 0;
  uint64_t total_bytes() const { return job_.artifact.artifact_length; }
  // Chunks copied from other artifacts count in neither figure.
  FetchProgress progress() const {
    const uint64_t reused = report_.bytes_deduplicated;
    return FetchProgress{verified_bytes_ - reused, total_bytes() - reused,
                         reused};
  }

 private:
  enum class Phase { kScanning, kRunning, kFinalizing, kDone };

  // One HTTP request and its response.
  struct Transfer {
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    size_t url_index = 0;
    uint64_t seq = 0;
    uint64_t range_start = 0;
    // End (exclusive) of the bytes asked for: the artifact length for an
    // open range, else the end of one run of missing chunks (a
    // content-addressed artifact: `Range: bytes=range_start-(range_end-1)`).
    uint64_t range_end = 0;
    // End (exclusive) of the accepted response's body in the artifact.
    uint64_t body_end = 0;
    uint64_t offset = 0;  // artifact offset of the next body byte
    bool ranged = false;
    bool if_range = false;
    // The last response whose headers ended (redirects and 1xx answers
    // come first), and whether its body is taken.
    long status = 0;
    bool accepted = false;
    // Set by our callbacks when they abort the transfer.
    Status error;
    bool url_unusable = false;
    bool paused = false;
    std::string chunk;  // the chunk being assembled
    uint64_t progress_at_start = 0;
    char errbuf[CURL_ERROR_SIZE] = {};
  };

  struct ChunkResult {
    Status status;
    bool hash_mismatch = false;
    std::string found_sha256;
    std::string buffer;  // handed back for reuse
  };

  const std::string& url(size_t i) const { return redacted_urls_[i]; }
  uint64_t chunk_count() const { return job_.artifact.chunk_sha256.size(); }

  // curl <-> sd-event glue.
  static int SocketCallback(CURL* easy, curl_socket_t s, int what, void* self,
                            void* socketp);
  static int TimerCallback(CURLM* multi, long timeout_ms, void* self);
  static int OnSocket(sd_event_source* s, int fd, uint32_t revents, void* self);
  static int OnCurlTimer(sd_event_source* s, uint64_t usec, void* self);
  static int OnRetryTimer(sd_event_source* s, uint64_t usec, void* self);
  static int OnDone(sd_event_source* s, void* self);
  static size_t HeaderCallback(char* data, size_t size, size_t n, void* self);
  static size_t WriteCallback(char* data, size_t size, size_t n, void* self);
  void CheckMultiInfo();

  void Scan();
  void StartTransfer();
  bool AcceptResponse(Transfer& t);
  void Consume(Transfer& t, const char* data, size_t n);
  void SubmitChunk(Transfer& t, uint64_t index);
  void OnChunkDone(uint64_t index, size_t url_index, uint64_t seq,
                   ChunkResult& result);
  void AbortTransfer(Status error, bool url_unusable);
  void DropTransfer();
  void EndTransfer(Status error, bool url_unusable);
  void Advance();
  void Finalize();
  void Finish(Status status);
  void ReportProgress();
  std::string TakeBuffer();

  sd_event* loop_;
  FetchJob job_;
  FetchOptions options_;
  ProgressCallback on_progress_;
  DoneCallback on_done_;
  std::vector<std::string> redacted_urls_;

  Phase phase_ = Phase::kScanning;
  std::unique_ptr<ArtifactWorker> worker_;
  CURLM* multi_ = nullptr;
  sd_event_source* curl_timer_ = nullptr;
  sd_event_source* retry_timer_ = nullptr;
  sd_event_source* done_source_ = nullptr;
  std::unique_ptr<Transfer> transfer_;
  bool retry_due_ = false;

  std::vector<bool> verified_;
  std::vector<bool> pending_;
  uint64_t verified_count_ = 0;
  uint64_t pending_count_ = 0;
  uint64_t queued_bytes_ = 0;
  std::vector<std::string> free_buffers_;
  uint64_t max_chunk_length_ = 0;

  // The artifact hash over chunks [0, next) in order, fed as the worker
  // stores them, so a download in one go needs no read-back. Only the worker
  // thread touches it, and the staging thread while it runs.
  struct RunningHash {
    Sha256Hasher hash;
    uint64_t next = 0;
    // FetchOptions::stage: the model decompressed from chunks [0, next).
    bool stage = false;
    std::vector<uint8_t> model;
    std::unique_ptr<ModelStager> stager;
    Status stage_error;
    bool staged = false;  // Finish checked it

    // The stager, made on first use (worker thread); nullptr when not
    // staging or after a staging error.
    ModelStager* Stager(const ArtifactSpec* spec) {
      if (!stage || !stage_error.ok()) return nullptr;
      if (!stager) {
        model = MakeLargeBuffer(spec->model_length);
        Result<std::unique_ptr<ModelStager>> s =
            ModelStager::Create(spec, std::span<uint8_t>(model));
        if (!s.ok()) {
          stage_error = s.status();
          return nullptr;
        }
        stager = std::move(*s);
      }
      return stager.get();
    }
    // Chunk `next`, just stored (worker thread): feeds the artifact hash
    // and, when staging, the stager. When staging, the artifact hash,
    // decompression and the model hash run on a thread of their own, fed
    // copies of the chunks through a queue of at most kQueuedChunks, so
    // they overlap the worker's chunk hashing and database writes; `hash`
    // may then be read only after Join().
    void Add(const ArtifactSpec* spec, std::string_view chunk) {
      ++next;
      if (Stager(spec) == nullptr) {
        hash.Update(chunk);
        return;
      }
      if (!thread.joinable()) thread = std::thread([this] { StageLoop(); });
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [this] { return queue.size() < kQueuedChunks; });
      // Reuse a buffer the staging thread is done with (no fresh pages).
      std::string copy;
      if (!spare.empty()) {
        copy = std::move(spare.back());
        spare.pop_back();
      }
      copy.assign(chunk);
      queue.push_back(std::move(copy));
      cv.notify_all();
    }
    // Waits until every queued chunk is hashed and staged and the thread
    // has ended; its first error becomes stage_error (worker thread).
    void Join() {
      if (!thread.joinable()) return;
      {
        std::lock_guard<std::mutex> lock(mu);
        closing = true;
      }
      cv.notify_all();
      thread.join();
      spare.clear();
      if (stage_error.ok()) stage_error = thread_error;
    }
    ~RunningHash() {
      {
        std::lock_guard<std::mutex> lock(mu);
        abandon = true;  // a cancelled download: skip what is queued
      }
      Join();
    }

   private:
    static constexpr size_t kQueuedChunks = 4;
    void StageLoop() {
      pthread_setname_np(pthread_self(), "ternd-stage");
      std::string chunk;
      bool have_chunk = false;
      bool failed = false;
      for (;;) {
        {
          std::unique_lock<std::mutex> lock(mu);
          if (have_chunk) spare.push_back(std::move(chunk));
          have_chunk = false;
          cv.wait(lock, [this] { return closing || !queue.empty(); });
          if (queue.empty() || abandon) return;
          chunk = std::move(queue.front());
          queue.pop_front();
          have_chunk = true;
          cv.notify_all();
        }
        hash.Update(chunk);
        if (failed) continue;
        Status s = stager->Feed(chunk);
        if (!s.ok()) {
          failed = true;
          std::lock_guard<std::mutex> lock(mu);
          thread_error = s;
        }
      }
    }
    std::thread thread;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::string> queue;   // guarded by mu
    std::vector<std::string> spare;  // guarded by mu
    bool closing = false;            // guarded by mu
    bool abandon = false;            // guarded by mu
    Status thread_error;             // guarded by mu
  };
  std::shared_ptr<RunningHash> running_hash_ = std::make_shared<RunningHash>();

  std::vector<std::string> validators_;  // per URL; empty: none
  std::vector<int> bad_responses_;       // per URL
  std::vector<uint64_t> last_bad_seq_;   // per URL: transfer last counted
  uint64_t transfer_seq_ = 0;            // numbers transfers from 1
  std::vector<bool> unusable_;           // per URL
  size_t next_url_ = 0;
  size_t last_url_ = 0;            // of the last transfer dropped
  uint64_t progress_at_drop_ = 0;  // its progress_at_start
  // Counts the attempts in a row without progress (max_failures).
  std::optional<Backoff> backoff_;
  Status last_error_;
  Status final_status_;
};

ArtifactFetcher::Impl::~Impl() {
  Cancel();
  worker_.reset();  // joins; no completion runs after this
  if (multi_ != nullptr) curl_multi_cleanup(multi_);
  for (sd_event_source* s : {curl_timer_, retry_timer_, done_source_}) {
    if (s != nullptr) sd_event_source_disable_unref(s);
  }
  sd_event_unref(loop_);
}

Status ArtifactFetcher::Impl::Init() {
  TERND_RETURN_IF_ERROR(CheckArtifactSpec(job_.artifact));
  if (job_.urls.empty()) {
    return InvalidArgument("artifact %s: the release names no URL",
                           Hex(job_.artifact.artifact_sha256).c_str());
  }
  for (const std::string& u : job_.urls) {
    const bool https = StartsWithNoCase(u, "https://");
    const bool http = StartsWithNoCase(u, "http://");
    if (!https && !(http && options_.allow_plain_http)) {
      return InvalidArgument(
          "artifact URL '%s' is not https://: artifacts are only fetched over "
          "HTTPS",
          RedactUrl(u).c_str());
    }
    redacted_urls_.push_back(RedactUrl(u));
  }
  if (options_.ca_file.empty()) {
    return InvalidArgument(
        "artifact download: no CA file (the fleet CA that signs the artifact "
        "servers' certificates)");
  }
  if (options_.cert_file.empty() != options_.key_file.empty()) {
    return InvalidArgument(
        "artifact download: a client certificate needs both a certificate "
        "file and a key file");
  }
  if (options_.max_failures < 1 || options_.retry_min_ms < 0 ||
      options_.retry_max_ms < options_.retry_min_ms ||
      options_.max_bad_responses_per_url < 1) {
    return InvalidArgument(
        "artifact download: max_failures %d and max_bad_responses_per_url %d "
        "must be >= 1, 0 <= retry_min_ms %d <= retry_max_ms %d",
        options_.max_failures, options_.max_bad_responses_per_url,
        options_.retry_min_ms, options_.retry_max_ms);
  }
  // After the n-th attempt in a row without progress, a wait in
  // [0, min(retry_max, retry_min * 2^(n-1))].
  BackoffPolicy retry;
  retry.initial = std::chrono::milliseconds(options_.retry_min_ms);
  retry.max = std::chrono::milliseconds(options_.retry_max_ms);
  retry.floor = std::chrono::milliseconds(0);
  retry.multiplier = 2.0;
  retry.jitter = 1.0;
  backoff_.emplace(retry, options_.jitter_seed != 0
                              ? Backoff::Seeded(options_.jitter_seed)
                              : nullptr);
  const size_t n = job_.urls.size();
  validators_.assign(n, std::string());
  bad_responses_.assign(n, 0);
  last_bad_seq_.assign(n, 0);
  unusable_.assign(n, false);
  verified_.assign(chunk_count(), false);
  pending_.assign(chunk_count(), false);
  for (const uint64_t len : job_.artifact.chunk_length) {
    max_chunk_length_ = std::max(max_chunk_length_, len);
  }

  CURLcode global = CURLE_OK;
  std::call_once(g_curl_init,
                 [&] { global = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (global != CURLE_OK) {
    return Internal("curl_global_init: %s", curl_easy_strerror(global));
  }
  multi_ = curl_multi_init();
  if (multi_ == nullptr) return Internal("curl_multi_init failed");
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &Impl::SocketCallback);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &Impl::TimerCallback);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);

  int r = sd_event_add_time_relative(loop_, &curl_timer_, CLOCK_MONOTONIC, 0, 0,
                                     &Impl::OnCurlTimer, this);
  if (r < 0) return ErrnoError(-r, "artifact download: cannot add a timer");
  sd_event_source_set_enabled(curl_timer_, SD_EVENT_OFF);
  sd_event_source_set_description(curl_timer_, "artifact-curl-timer");
  r = sd_event_add_time_relative(loop_, &retry_timer_, CLOCK_MONOTONIC, 0, 0,
                                 &Impl::OnRetryTimer, this);
  if (r < 0) return ErrnoError(-r, "artifact download: cannot add a timer");
  sd_event_source_set_enabled(retry_timer_, SD_EVENT_OFF);
  sd_event_source_set_description(retry_timer_, "artifact-retry");

  TERND_ASSIGN_OR_RETURN(worker_,
                         ArtifactWorker::Start(loop_, options_.state_db,
                                               /*chunk_writer=*/true));
  Scan();
  return Status::Ok();
}

void ArtifactFetcher::Impl::Cancel() {
  if (phase_ == Phase::kDone) return;
  phase_ = Phase::kDone;
  DropTransfer();
  if (retry_timer_ != nullptr) {
    sd_event_source_set_enabled(retry_timer_, SD_EVENT_OFF);
  }
  on_progress_ = nullptr;
  on_done_ = nullptr;
}

// Step 1: what does the store already hold?
// ------------------------------------

void ArtifactFetcher::Impl::Scan() {
  struct ScanResult {
    Status status;
    std::vector<bool> verified;
    uint64_t discarded = 0;
    uint64_t deduplicated = 0;
    uint64_t deduplicated_bytes = 0;
    std::vector<std::string> validators;
  };
  auto result = std::make_shared<ScanResult>();
  const ArtifactSpec* spec = &job_.artifact;
  const std::vector<std::string>* urls = &job_.urls;
  worker_->Post(
      [spec, urls, result](Result<StateStore*> opened) {
        if (!opened.ok()) {
          result->status = opened.status();
          return;
        }
        StateStore& store = **opened;
        result->verified.assign(spec->chunk_sha256.size(), false);
        auto indices = store.ChunkIndices(spec->artifact_sha256);
        if (!indices.ok()) {
          result->status = indices.status();
          return;
        }
        for (uint64_t i : *indices) {
          bool good = false;
          if (i < spec->chunk_sha256.size()) {
            auto chunk = store.GetChunk(spec->artifact_sha256, i);
            if (!chunk.ok()) {
              result->status = chunk.status();
              return;
            }
            good = *chunk && (*chunk)->size() == ChunkLength(*spec, i) &&
                   Sha256(**chunk) == spec->chunk_sha256[i];
          }
          if (good) {
            result->verified[i] = true;
          } else {
            TERND_LOG_WARNING(
                "%s: artifact %s: stored chunk %llu no longer matches its "
                "signed hash; deleted, it will be downloaded again",
                store.path().c_str(), Hex(spec->artifact_sha256).c_str(),
                static_cast<ull>(i));
            Status s = store.DeleteChunk(spec->artifact_sha256, i);
            if (!s.ok()) {
              result->status = s;
              return;
            }
            ++result->discarded;
          }
        }
        // Content-addressed: chunks held under any artifact (an earlier
        // version) are copied in, not downloaded (docs/ota.md, "Delta
        // downloads"). Copies, not references: evicting the old artifact
        // never takes a chunk this one needs.
        if (spec->content_addressed()) {
          for (uint64_t i = 0; i < spec->chunk_sha256.size(); ++i) {
            if (result->verified[i]) continue;
            auto found = store.FindChunkBySha256(spec->chunk_sha256[i]);
            if (!found.ok()) {
              result->status = found.status();
              return;
            }
            if (!*found || (*found)->size() != ChunkLength(*spec, i) ||
                Sha256(**found) != spec->chunk_sha256[i]) {
              continue;
            }
            Status s = store.PutChunk(spec->artifact_sha256, i, **found,
                                      spec->chunk_sha256[i]);
            if (!s.ok()) {
              result->status = s;
              return;
            }
            result->verified[i] = true;
            ++result->deduplicated;
            result->deduplicated_bytes += ChunkLength(*spec, i);
          }
        }
        for (const std::string& u : *urls) {
          auto v = store.GetDownloadValidator(spec->artifact_sha256, u);
          if (!v.ok()) {
            result->status = v.status();
            return;
          }
          result->validators.push_back(v->value_or(std::string()));
        }
      },
      [this, result] {
        if (phase_ == Phase::kDone) return;
        if (!result->status.ok()) {
          Finish(result->status);
          return;
        }
        verified_ = result->verified;
        validators_ = result->validators;
        report_.chunks_discarded = result->discarded;
        for (uint64_t i = 0; i < chunk_count(); ++i) {
          if (verified_[i]) {
            ++verified_count_;
            verified_bytes_ += ChunkLength(job_.artifact, i);
          }
        }
        report_.chunks_deduplicated = result->deduplicated;
        report_.bytes_deduplicated = result->deduplicated_bytes;
        report_.chunks_reused = verified_count_ - result->deduplicated;
        if (result->deduplicated > 0) {
          TERND_LOG_INFO(
              "artifact %s: %llu of %llu chunks (%llu of %llu bytes) reused "
              "from chunks already stored; %llu bytes to download",
              Hex(job_.artifact.artifact_sha256).c_str(),
              static_cast<ull>(result->deduplicated),
              static_cast<ull>(chunk_count()),
              static_cast<ull>(result->deduplicated_bytes),
              static_cast<ull>(total_bytes()),
              static_cast<ull>(total_bytes() - verified_bytes_));
        }
        if (verified_count_ > result->deduplicated) {
          TERND_LOG_INFO("artifact %s: %llu of %llu bytes already verified",
                         Hex(job_.artifact.artifact_sha256).c_str(),
                         static_cast<ull>(verified_bytes_),
                         static_cast<ull>(total_bytes()));
        }
        phase_ = Phase::kRunning;
        retry_due_ = true;
        Advance();
        ReportProgress();  // last: the callback may destroy us
      });
}

// Step 2: one request --------------------------------------------------------

void ArtifactFetcher::Impl::StartTransfer() {
  // The next usable URL, starting from next_url_.
  size_t u = next_url_;
  bool found = false;
  for (size_t k = 0; k < job_.urls.size(); ++k) {
    const size_t cand = (next_url_ + k) % job_.urls.size();
    if (!unusable_[cand]) {
      u = cand;
      found = true;
      break;
    }
  }
  if (!found) {
    Status s = last_error_;
    s.Prepend("artifact download: no usable URL left; last error");
    Finish(s);
    return;
  }
  next_url_ = u;
  uint64_t first_missing = 0;
  while (first_missing < chunk_count() && verified_[first_missing]) {
    ++first_missing;
  }
  auto t = std::make_unique<Transfer>();
  t->url_index = u;
  t->seq = ++transfer_seq_;
  t->range_start = ChunkOffset(job_.artifact, first_missing);
  t->range_end = total_bytes();
  if (job_.artifact.content_addressed()) {
    // One run of missing chunks: up to the next chunk held.
    uint64_t end = first_missing;
    while (end < chunk_count() && !verified_[end] && !pending_[end]) ++end;
    t->range_end = ChunkOffset(job_.artifact, end);
  }
  t->body_end = total_bytes();
  t->offset = t->range_start;
  t->ranged = t->range_start > 0 || t->range_end < total_bytes();
  t->progress_at_start = verified_count_;
  t->chunk = TakeBuffer();

  CURL* e = curl_easy_init();
  if (e == nullptr) {
    Finish(Internal("curl_easy_init failed"));
    return;
  }
  t->easy = e;
  const char* protocols = options_.allow_plain_http ? "http,https" : "https";
  curl_easy_setopt(e, CURLOPT_URL, job_.urls[u].c_str());
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, protocols);
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, protocols);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, kMaxRedirects);
  curl_easy_setopt(e, CURLOPT_CAINFO, options_.ca_file.c_str());
  curl_easy_setopt(e, CURLOPT_CAPATH, nullptr);  // the fleet CA only
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(e, CURLOPT_SSLVERSION, long{CURL_SSLVERSION_TLSv1_2});
  if (!options_.cert_file.empty()) {
    curl_easy_setopt(e, CURLOPT_SSLCERT, options_.cert_file.c_str());
    curl_easy_setopt(e, CURLOPT_SSLKEY, options_.key_file.c_str());
  }
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "ternd");
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(options_.connect_timeout_ms));
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT,
                   static_cast<long>(options_.low_speed_bytes_per_second));
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME,
                   static_cast<long>(options_.low_speed_seconds));
  if (options_.max_bytes_per_second > 0) {
    curl_easy_setopt(e, CURLOPT_MAX_RECV_SPEED_LARGE,
                     static_cast<curl_off_t>(options_.max_bytes_per_second));
  }
  curl_easy_setopt(e, CURLOPT_BUFFERSIZE, kCurlBufferSize);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
  // A proxy's answer to CONNECT is not the server's response.
  curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Impl::HeaderCallback);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, this);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Impl::WriteCallback);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, this);
  if (t->ranged) {
    const std::string range = RangeSpec(*t, total_bytes());
    curl_easy_setopt(e, CURLOPT_RANGE, range.c_str());  // curl copies it
    if (!validators_[u].empty()) {
      t->headers =
          curl_slist_append(nullptr, ("If-Range: " + validators_[u]).c_str());
      curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
      t->if_range = true;
    }
  }
  TERND_LOG_INFO("artifact %s: GET %s%s%s",
                 Hex(job_.artifact.artifact_sha256).c_str(), url(u).c_str(),
                 t->ranged ? " bytes=" : "",
                 t->ranged ? RangeSpec(*t, total_bytes()).c_str() : "");
  transfer_ = std::move(t);
  const CURLMcode mc = curl_multi_add_handle(multi_, e);
  if (mc != CURLM_OK) {
    DropTransfer();
    Finish(Internal("curl_multi_add_handle: %s", curl_multi_strerror(mc)));
  }
}

size_t ArtifactFetcher::Impl::HeaderCallback(char* data, size_t size, size_t n,
                                             void* p) {
  auto* self = static_cast<Impl*>(p);
  Transfer& t = *self->transfer_;
  const size_t bytes = size * n;
  // Only the empty line that ends a response's headers matters: by then
  // curl has parsed that response's status line and headers, and they are
  // read back from curl (CURLINFO_RESPONSE_CODE, curl_easy_header).
  const std::string_view line(data, bytes);
  if (line != "\r\n" && line != "\n") return bytes;
  if (t.accepted) return bytes;  // trailers after the body
  long status = 0;
  curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &status);
  t.status = status;
  if (status >= 100 && status < 200) return bytes;  // an interim answer
  if (status >= 300 && status < 400 &&
      ResponseHeader(t.easy, "Location").has_value()) {
    return bytes;  // curl follows it (to HTTPS only); its body is not ours
  }
  return self->AcceptResponse(t) ? bytes : 0;
}

// Checks the final response's status and headers against what was asked
// and what was signed. False (with t.error set) aborts the transfer.
bool ArtifactFetcher::Impl::AcceptResponse(Transfer& t) {
  const std::string& where = url(t.url_index);
  const uint64_t length = total_bytes();
  size_t length_headers = 0;
  const std::optional<std::string> length_value =
      ResponseHeader(t.easy, "Content-Length", &length_headers);
  std::optional<uint64_t> content_length;
  if (length_value) {
    uint64_t v = 0;
    if ((t.status == 200 || t.status == 206) &&
        (length_headers != 1 || !ParseDecimal(*length_value, &v))) {
      t.error = DataLoss(
          "%s: HTTP %ld with %zu Content-Length header(s), "
          "the first '%.64s'; expected one decimal length",
          where.c_str(), t.status, length_headers, length_value->c_str());
      t.url_unusable = true;
      return false;
    }
    content_length = v;  // 0 when not a 200 or 206: unused then
  }
  if (t.status == 206) {
    // One range asked, one range accepted: a multipart/byteranges answer
    // has no Content-Range of its own, and two Content-Range headers are
    // two answers in one.
    size_t range_headers = 0;
    const std::string content_range =
        ResponseHeader(t.easy, "Content-Range", &range_headers)
            .value_or(std::string());
    uint64_t first = 0, last = 0, total = 0;
    const bool parsed = range_headers == 1 &&
                        ParseContentRange(content_range, &first, &last, &total);
    const bool bounded = t.range_end < length;
    if (!t.ranged || !parsed || first != t.range_start || total != length ||
        last < first || last >= length ||
        (bounded && last + 1 != t.range_end) ||
        (content_length && *content_length != last - first + 1)) {
      const std::string content_type =
          ResponseHeader(t.easy, "Content-Type").value_or(std::string());
      t.error = DataLoss(
          "%s: HTTP 206 with %s Content-Range '%.96s'%s and Content-Length "
          "%s; expected bytes %llu-%llu/%llu for %s",
          where.c_str(), range_headers > 1 ? "several" : "a",
          content_range.c_str(),
          StartsWithNoCase(content_type, "multipart/") ? " (multipart)" : "",
          content_length ? std::to_string(*content_length).c_str() : "(none)",
          static_cast<ull>(t.range_start),
          static_cast<ull>(bounded ? t.range_end - 1 : length - 1),
          static_cast<ull>(length),
          t.ranged ? ("Range: bytes=" + RangeSpec(t, length)).c_str()
                   : "a request without Range");
      t.url_unusable = true;
      return false;
    }
    t.body_end = last + 1;
  } else if (t.status == 200) {
    if (t.ranged) {
      // The range was ignored (a proxy or server without range support)
      // or If-Range said the file changed: take it from byte 0. Verified
      // chunks are skipped, every other chunk is checked as usual.
      TERND_LOG_NOTICE(
          "%s: HTTP 200 to a request for bytes %s: the server ignored the "
          "range or the file changed; reading from byte 0 (%llu bytes "
          "already verified are kept)",
          where.c_str(), RangeSpec(t, length).c_str(),
          static_cast<ull>(verified_bytes_));
      ++report_.range_ignored;
      t.offset = 0;
    }
    t.body_end = length;
    if (content_length && *content_length != length) {
      t.error = DataLoss(
          "%s: Content-Length %llu, but the signed artifact length is %llu",
          where.c_str(), static_cast<ull>(*content_length),
          static_cast<ull>(length));
      t.url_unusable = true;
      return false;
    }
  } else {
    const bool gone = t.status == 416;  // the file is shorter than signed
    t.error = Errorf(gone ? StatusCode::kDataLoss : StatusCode::kUnavailable,
                     "%s: HTTP status %ld for %s%s", where.c_str(), t.status,
                     t.ranged ? "bytes=" : "the whole file",
                     t.ranged ? RangeSpec(t, total_bytes()).c_str() : "");
    t.url_unusable = gone;
    return false;
  }
  t.accepted = true;
  // Remember the validator for If-Range: a strong ETag, else the date.
  const std::string etag =
      ResponseHeader(t.easy, "ETag").value_or(std::string());
  std::string validator;
  if (!etag.empty() && !StartsWithNoCase(etag, "W/")) {
    validator = etag;
  } else {
    validator = ResponseHeader(t.easy, "Last-Modified").value_or(std::string());
  }
  if (validator != validators_[t.url_index]) {
    validators_[t.url_index] = validator;
    const ArtifactSpec* spec = &job_.artifact;
    const std::string u = job_.urls[t.url_index];
    const std::string where_copy = where;
    worker_->Post(
        [spec, u, validator, where_copy](Result<StateStore*> store) {
          if (!store.ok()) return;  // reported by the chunk writes
          Status s = (*store)->PutDownloadValidator(spec->artifact_sha256, u,
                                                    validator);
          if (!s.ok()) {
            TERND_LOG_WARNING("%s: cannot save resume data: %s",
                              where_copy.c_str(), s.message());
          }
        },
        nullptr);
  }
  return true;
}

size_t ArtifactFetcher::Impl::WriteCallback(char* data, size_t size, size_t n,
                                            void* p) {
  auto* self = static_cast<Impl*>(p);
  Transfer& t = *self->transfer_;
  const size_t bytes = size * n;
  if (!t.accepted) {
    // A body without an accepted response (e.g. a redirect curl did not
    // follow): AcceptResponse already refused it, or never saw it.
    if (t.error.ok()) {
      t.error = Errorf(StatusCode::kUnavailable,
                       "%s: HTTP status %ld is not a usable answer",
                       self->url(t.url_index).c_str(), t.status);
    }
    return 0;
  }
  if (self->queued_bytes_ >= self->options_.max_queued_bytes) {
    t.paused = true;  // resumed when the worker catches up
    return CURL_WRITEFUNC_PAUSE;
  }
  const uint64_t room = t.body_end - t.offset;
  const size_t take = static_cast<size_t>(std::min<uint64_t>(bytes, room));
  self->Consume(t, data, take);
  if (take < bytes) {
    if (t.body_end == self->total_bytes()) {
      t.error = DataLoss(
          "%s: the response goes on past the signed artifact length %llu; "
          "transfer aborted at that length",
          self->url(t.url_index).c_str(),
          static_cast<ull>(self->total_bytes()));
    } else {
      t.error = DataLoss(
          "%s: the response goes on past byte %llu, the end of the range "
          "asked for; transfer aborted there",
          self->url(t.url_index).c_str(), static_cast<ull>(t.body_end));
    }
    t.url_unusable = true;
    ++self->report_.over_length_aborts;
    return 0;
  }
  return bytes;
}

void ArtifactFetcher::Impl::Consume(Transfer& t, const char* data, size_t n) {
  report_.bytes_received += n;
  while (n > 0) {
    const uint64_t index = ChunkAt(job_.artifact, t.offset);
    const uint64_t in_chunk = t.offset - ChunkOffset(job_.artifact, index);
    const uint64_t len = ChunkLength(job_.artifact, index);
    const size_t take =
        static_cast<size_t>(std::min<uint64_t>(n, len - in_chunk));
    const bool wanted = !verified_[index] && !pending_[index];
    if (wanted) t.chunk.append(data, take);
    t.offset += take;
    data += take;
    n -= take;
    if (in_chunk + take == len) {
      if (wanted) SubmitChunk(t, index);
      t.chunk.clear();
    }
  }
}

// Step 3: hash and store off the loop
// ------------------------------------------

void ArtifactFetcher::Impl::SubmitChunk(Transfer& t, uint64_t index) {
  pending_[index] = true;
  ++pending_count_;
  queued_bytes_ += t.chunk.size();
  auto result = std::make_shared<ChunkResult>();
  result->buffer = std::move(t.chunk);
  t.chunk = TakeBuffer();
  const ArtifactSpec* spec = &job_.artifact;
  const size_t url_index = t.url_index;
  const uint64_t seq = t.seq;
  std::shared_ptr<RunningHash> running = running_hash_;
  worker_->Post(
      [spec, index, result, running](Result<StateStore*> store) {
        if (!store.ok()) {
          result->status = store.status();
          return;
        }
        const std::string got = Sha256(result->buffer);
        if (got != spec->chunk_sha256[index]) {
          result->hash_mismatch = true;
          result->found_sha256 = got;
          return;
        }
        result->status = (*store)->PutChunk(spec->artifact_sha256, index,
                                            result->buffer, got);
        if (result->status.ok() && index == running->next) {
          running->Add(spec, result->buffer);
        }
      },
      [this, index, url_index, seq, result] {
        OnChunkDone(index, url_index, seq, *result);
      });
}

void ArtifactFetcher::Impl::OnChunkDone(uint64_t index, size_t url_index,
                                        uint64_t seq, ChunkResult& result) {
  const uint64_t len = ChunkLength(job_.artifact, index);
  pending_[index] = false;
  --pending_count_;
  queued_bytes_ -= len;
  result.buffer.clear();
  free_buffers_.push_back(std::move(result.buffer));
  if (phase_ == Phase::kDone) return;
  if (!result.status.ok()) {
    // The store failed (disk full, I/O error): downloading more is
    // pointless. What is stored stays valid.
    Finish(result.status);
    return;
  }
  bool progressed = false;
  if (result.hash_mismatch) {
    ++report_.chunks_rejected;
    // The first bad chunk of a response counts against its URL; later
    // chunks of the same response were already on their way.
    if (last_bad_seq_[url_index] != seq) {
      last_bad_seq_[url_index] = seq;
      const int bad = ++bad_responses_[url_index];
      const bool unusable = bad >= options_.max_bad_responses_per_url;
      const uint64_t start = ChunkOffset(job_.artifact, index);
      Status error = DataLoss(
          "%s: chunk %llu (bytes %llu-%llu) has SHA-256 %s, signed %s; bad "
          "response %d of at most %d from this URL%s",
          url(url_index).c_str(), static_cast<ull>(index),
          static_cast<ull>(start), static_cast<ull>(start + len - 1),
          Hex(result.found_sha256).c_str(),
          Hex(job_.artifact.chunk_sha256[index]).c_str(), bad,
          options_.max_bad_responses_per_url,
          unusable ? ", which is no longer used" : "");
      TERND_LOG_WARNING("%s", error.message());
      if (transfer_ && transfer_->seq == seq) {
        AbortTransfer(error, unusable);
      } else {
        last_error_ = error;
        if (unusable) unusable_[url_index] = true;
      }
    }
  } else {
    verified_[index] = true;
    ++verified_count_;
    verified_bytes_ += len;
    progressed = true;
  }
  if (transfer_ && transfer_->paused &&
      queued_bytes_ < options_.max_queued_bytes) {
    transfer_->paused = false;
    curl_easy_pause(transfer_->easy, CURLPAUSE_CONT);
  }
  Advance();
  if (progressed) ReportProgress();  // last: the callback may destroy us
}

// Step 4: the end of a request, retries
// ----------------------------------------

void ArtifactFetcher::Impl::CheckMultiInfo() {
  int left = 0;
  while (CURLMsg* m = curl_multi_info_read(multi_, &left)) {
    if (m->msg != CURLMSG_DONE || !transfer_ ||
        m->easy_handle != transfer_->easy) {
      continue;
    }
    Transfer& t = *transfer_;
    const CURLcode rc = m->data.result;
    Status error = t.error;
    if (error.ok() && rc != CURLE_OK) {
      long http = 0;
      curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &http);
      char response[48] = "no HTTP response";
      if (http != 0) {
        std::snprintf(response, sizeof response, "HTTP status %ld", http);
      }
      error =
          Errorf(StatusCode::kUnavailable,
                 "%s: %s (curl error %d) at artifact offset %llu of %llu, %s",
                 url(t.url_index).c_str(),
                 t.errbuf[0] != '\0' ? t.errbuf : curl_easy_strerror(rc),
                 static_cast<int>(rc), static_cast<ull>(t.offset),
                 static_cast<ull>(total_bytes()), response);
    } else if (error.ok() && t.offset < t.body_end) {
      error = Errorf(StatusCode::kUnavailable,
                     "%s: the response ended at artifact offset %llu of %llu",
                     url(t.url_index).c_str(), static_cast<ull>(t.offset),
                     static_cast<ull>(t.body_end));
    }
    const bool unusable = t.url_unusable;
    DropTransfer();
    EndTransfer(error, unusable);
    return;
  }
}

void ArtifactFetcher::Impl::AbortTransfer(Status error, bool url_unusable) {
  DropTransfer();
  EndTransfer(error, url_unusable);
}

// Removes the transfer from curl and records it. Never runs a callback.
void ArtifactFetcher::Impl::DropTransfer() {
  if (!transfer_) return;
  std::unique_ptr<Transfer> t = std::move(transfer_);
  FetchAttempt a;
  a.url = url(t->url_index);
  a.range_start = t->range_start;
  a.range_end = t->range_end;
  a.if_range = t->if_range;
  a.http_status = t->status;
  a.error = t->error.message();
  report_.attempts.push_back(std::move(a));
  curl_multi_remove_handle(multi_, t->easy);
  curl_easy_cleanup(t->easy);
  curl_slist_free_all(t->headers);
  t->chunk.clear();
  free_buffers_.push_back(std::move(t->chunk));
  progress_at_drop_ = t->progress_at_start;
  last_url_ = t->url_index;
}

void ArtifactFetcher::Impl::EndTransfer(Status error, bool url_unusable) {
  if (phase_ == Phase::kDone) return;
  const size_t u = last_url_;
  if (!report_.attempts.empty() && report_.attempts.back().error.empty()) {
    report_.attempts.back().error = error.message();
  }
  // Progress: chunks verified or still being checked since the start.
  const bool progressed = verified_count_ + pending_count_ > progress_at_drop_;
  if (url_unusable) unusable_[u] = true;
  if (!error.ok()) {
    last_error_ = error;
    TERND_LOG_WARNING("artifact download: %s", error.message());
  }
  std::chrono::milliseconds delay;
  if (error.ok()) {
    // A run of missing chunks done: the next run at once.
    backoff_->Reset();
    delay = std::chrono::milliseconds(0);
  } else if (progressed) {
    // Carry on at once, within retry_min; not counted as a failure.
    backoff_->Reset();
    delay = backoff_->Draw(0);
  } else {
    const int failures = backoff_->failures() + 1;
    if (failures >= options_.max_failures) {
      Status s = error;
      char prefix[96];
      std::snprintf(prefix, sizeof prefix,
                    "artifact download: gave up after %d attempts without "
                    "progress; last",
                    failures);
      s.Prepend(prefix);
      Finish(s);
      return;
    }
    next_url_ = (u + 1) % job_.urls.size();  // try the next mirror
    delay = backoff_->Next();
  }
  sd_event_source_set_time_relative(
      retry_timer_, static_cast<uint64_t>(delay.count()) * 1000);
  sd_event_source_set_enabled(retry_timer_, SD_EVENT_ONESHOT);
}

int ArtifactFetcher::Impl::OnRetryTimer(sd_event_source*, uint64_t, void* p) {
  auto* self = static_cast<Impl*>(p);
  self->retry_due_ = true;
  self->Advance();
  return 0;
}

// Decides what comes next once nothing is in flight.
void ArtifactFetcher::Impl::Advance() {
  if (phase_ != Phase::kRunning || transfer_ || pending_count_ > 0) return;
  if (verified_count_ == chunk_count()) {
    Finalize();
    return;
  }
  if (retry_due_) {
    retry_due_ = false;
    StartTransfer();
  }
}

// Step 5: the whole artifact
// ---------------------------------------------------

void ArtifactFetcher::Impl::Finalize() {
  phase_ = Phase::kFinalizing;
  sd_event_source_set_enabled(retry_timer_, SD_EVENT_OFF);
  auto status = std::make_shared<Status>();
  const ArtifactSpec* spec = &job_.artifact;
  const std::atomic<bool>* cancel = worker_->cancel_flag();
  std::shared_ptr<RunningHash> running = running_hash_;
  worker_->Post(
      [spec, status, cancel, running](Result<StateStore*> store) {
        if (!store.ok()) {
          *status = store.status();
          return;
        }
        // Chunks hashed (and staged) as they were stored need no
        // read-back; the rest (from an earlier run, or after a gap) are
        // read and checked.
        running->Join();
        ModelStager* stager = running->Stager(spec);
        *status = VerifyStoredArtifactFrom(**store, *spec, running->hash,
                                           running->next, cancel, stager);
        if (status->ok() && running->stage) {
          if (!running->stage_error.ok()) {
            *status = running->stage_error;
          } else if (Result<uint64_t> n = running->stager->Finish(); !n.ok()) {
            *status = n.status();
          } else {
            running->staged = true;
          }
        }
        if (!running->staged) running->model = std::vector<uint8_t>();
        if (status->code() == StatusCode::kDataLoss) {
          // Chunks that do not make up the signed artifact are worthless.
          (*store)->DeleteArtifact(spec->artifact_sha256).IgnoreError();
        }
      },
      [this, status] {
        if (phase_ == Phase::kDone) return;
        Finish(*status);
      });
}

void ArtifactFetcher::Impl::Finish(Status status) {
  if (phase_ == Phase::kDone) return;
  phase_ = Phase::kDone;
  DropTransfer();
  sd_event_source_set_enabled(retry_timer_, SD_EVENT_OFF);
  final_status_ = status;
  if (status.ok()) {
    TERND_LOG_INFO(
        "artifact %s: %llu bytes verified (%llu received in this run, %llu "
        "reused from chunks already stored)",
        Hex(job_.artifact.artifact_sha256).c_str(),
        static_cast<ull>(total_bytes()),
        static_cast<ull>(report_.bytes_received),
        static_cast<ull>(report_.bytes_deduplicated));
  } else {
    TERND_LOG_WARNING("artifact %s: download failed: %s",
                      Hex(job_.artifact.artifact_sha256).c_str(),
                      status.message());
  }
  // Run on_done from the loop, outside whatever called Finish.
  const int r = sd_event_add_defer(loop_, &done_source_, &Impl::OnDone, this);
  if (r < 0) {
    TERND_LOG_ERROR("artifact download: cannot schedule its completion: %s",
                    std::strerror(-r));
  }
}

int ArtifactFetcher::Impl::OnDone(sd_event_source* s, void* p) {
  auto* self = static_cast<Impl*>(p);
  sd_event_source_set_enabled(s, SD_EVENT_OFF);
  DoneCallback cb = std::move(self->on_done_);
  self->on_done_ = nullptr;
  self->on_progress_ = nullptr;
  const Status status = self->final_status_;
  if (cb) cb(status);  // may destroy *self
  return 0;
}

void ArtifactFetcher::Impl::ReportProgress() {
  if (!on_progress_) return;
  ProgressCallback cb = on_progress_;  // survives our destruction
  cb(progress());
}

std::string ArtifactFetcher::Impl::TakeBuffer() {
  std::string b;
  if (!free_buffers_.empty()) {
    b = std::move(free_buffers_.back());
    free_buffers_.pop_back();
  }
  b.clear();
  b.reserve(job_.artifact.content_addressed() ? max_chunk_length_
                                              : job_.artifact.chunk_size);
  return b;
}

// curl <-> sd-event
// -------------------------------------------------------------

int ArtifactFetcher::Impl::SocketCallback(CURL*, curl_socket_t s, int what,
                                          void* p, void* socketp) {
  auto* self = static_cast<Impl*>(p);
  auto* source = static_cast<sd_event_source*>(socketp);
  if (what == CURL_POLL_REMOVE) {
    if (source != nullptr) sd_event_source_disable_unref(source);
    curl_multi_assign(self->multi_, s, nullptr);
    return 0;
  }
  uint32_t events = 0;
  if (what & CURL_POLL_IN) events |= EPOLLIN;
  if (what & CURL_POLL_OUT) events |= EPOLLOUT;
  if (source == nullptr) {
    const int r =
        sd_event_add_io(self->loop_, &source, s, events, &Impl::OnSocket, self);
    if (r < 0) {
      TERND_LOG_ERROR("artifact download: cannot watch socket %d: %s", s,
                      std::strerror(-r));
      return -1;
    }
    sd_event_source_set_description(source, "artifact-http");
    curl_multi_assign(self->multi_, s, source);
  } else {
    sd_event_source_set_io_events(source, events);
  }
  return 0;
}

int ArtifactFetcher::Impl::TimerCallback(CURLM*, long timeout_ms, void* p) {
  auto* self = static_cast<Impl*>(p);
  if (timeout_ms < 0) {
    sd_event_source_set_enabled(self->curl_timer_, SD_EVENT_OFF);
    return 0;
  }
  sd_event_source_set_time_relative(self->curl_timer_,
                                    uint64_t(timeout_ms) * 1000);
  sd_event_source_set_enabled(self->curl_timer_, SD_EVENT_ONESHOT);
  return 0;
}

int ArtifactFetcher::Impl::OnSocket(sd_event_source*, int fd, uint32_t revents,
                                    void* p) {
  auto* self = static_cast<Impl*>(p);
  int flags = 0;
  if (revents & EPOLLIN) flags |= CURL_CSELECT_IN;
  if (revents & EPOLLOUT) flags |= CURL_CSELECT_OUT;
  if (revents & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
  int running = 0;
  curl_multi_socket_action(self->multi_, fd, flags, &running);
  self->CheckMultiInfo();
  return 0;
}

int ArtifactFetcher::Impl::OnCurlTimer(sd_event_source*, uint64_t, void* p) {
  auto* self = static_cast<Impl*>(p);
  int running = 0;
  curl_multi_socket_action(self->multi_, CURL_SOCKET_TIMEOUT, 0, &running);
  self->CheckMultiInfo();
  return 0;
}

// ArtifactFetcher
// ----------------------------------------------------------------

ArtifactFetcher::ArtifactFetcher(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

ArtifactFetcher::~ArtifactFetcher() = default;

Result<std::unique_ptr<ArtifactFetcher>> ArtifactFetcher::Start(
    sd_event* loop, FetchJob job, FetchOptions options,
    ProgressCallback on_progress, DoneCallback on_done) {
  auto impl =
      std::make_unique<Impl>(loop, std::move(job), std::move(options),
                             std::move(on_progress), std::move(on_done));
  TERND_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<ArtifactFetcher>(new ArtifactFetcher(std::move(impl)));
}

void ArtifactFetcher::Cancel() { impl_->Cancel(); }

const FetchReport& ArtifactFetcher::report() const { return impl_->report_; }

std::vector<uint8_t> ArtifactFetcher::TakeStagedModel() {
  // The worker is done with it: staged is set before Finalize's completion.
  if (!impl_->running_hash_->staged) return {};
  impl_->running_hash_->staged = false;
  return std::move(impl_->running_hash_->model);
}

FetchProgress ArtifactFetcher::progress() const { return impl_->progress(); }

}  // namespace ternd::ota
