#include "ota/artifact.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <systemd/sd-event.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/log.h"
#include "ota/trust.h"

namespace ternd::ota {
namespace {

// Largest zstd window accepted (128 MiB, what `zstd --long=27` makes).
// zstd allocates the window while decompressing, so this bounds memory.
constexpr int kMaxWindowLog = 27;

bool Cancelled(const std::atomic<bool>* cancel) {
  return cancel != nullptr && cancel->load(std::memory_order_relaxed);
}

// Reads chunk `i`, checks its length and signed hash, and feeds the
// artifact hash.
Result<std::string> ReadCheckedChunk(StateStore& store,
                                     const ArtifactSpec& spec, uint64_t i,
                                     Sha256Hasher& artifact_hash) {
  TERND_ASSIGN_OR_RETURN(std::optional<std::string> chunk,
                         store.GetChunk(spec.artifact_sha256, i));
  const uint64_t offset = ChunkOffset(spec, i);
  if (!chunk) {
    return NotFound("%s: artifact %s: chunk %llu (offset %llu) is not stored",
                    store.path().c_str(), Hex(spec.artifact_sha256).c_str(),
                    static_cast<unsigned long long>(i),
                    static_cast<unsigned long long>(offset));
  }
  const uint64_t want = ChunkLength(spec, i);
  if (chunk->size() != want) {
    return DataLoss(
        "%s: artifact %s: chunk %llu (offset %llu) is %zu bytes, expected "
        "%llu",
        store.path().c_str(), Hex(spec.artifact_sha256).c_str(),
        static_cast<unsigned long long>(i),
        static_cast<unsigned long long>(offset), chunk->size(),
        static_cast<unsigned long long>(want));
  }
  const std::string got = Sha256(*chunk);
  if (got != spec.chunk_sha256[i]) {
    return DataLoss(
        "%s: artifact %s: stored chunk %llu (offset %llu) has SHA-256 %s, "
        "signed %s",
        store.path().c_str(), Hex(spec.artifact_sha256).c_str(),
        static_cast<unsigned long long>(i),
        static_cast<unsigned long long>(offset), Hex(got).c_str(),
        Hex(spec.chunk_sha256[i]).c_str());
  }
  artifact_hash.Update(*chunk);
  return std::move(*chunk);
}

Status CheckArtifactHash(const ArtifactSpec& spec, Sha256Hasher& hash) {
  const std::string got = hash.Final();
  if (got != spec.artifact_sha256) {
    return DataLoss(
        "artifact: the %llu stored bytes have SHA-256 %s, signed %s (the "
        "release's chunk hashes and artifact hash disagree)",
        static_cast<unsigned long long>(spec.artifact_length), Hex(got).c_str(),
        Hex(spec.artifact_sha256).c_str());
  }
  return Status::Ok();
}

}  // namespace

ArtifactSpec ArtifactSpecFromRelease(const Release& release) {
  ArtifactSpec spec;
  spec.artifact_sha256 = release.artifact_sha256();
  spec.artifact_length = release.artifact_length();
  spec.model_sha256 = release.model_sha256();
  spec.model_length = release.model_length();
  spec.chunk_size = release.chunk_size();
  spec.chunk_length.assign(release.chunk_length().begin(),
                           release.chunk_length().end());
  spec.chunk_sha256.assign(release.chunk_sha256().begin(),
                           release.chunk_sha256().end());
  FinishArtifactSpec(&spec);
  return spec;
}

void FinishArtifactSpec(ArtifactSpec* spec) {
  spec->chunk_offset.clear();
  if (spec->chunk_length.empty()) return;
  spec->chunk_offset.reserve(spec->chunk_length.size() + 1);
  uint64_t offset = 0;
  spec->chunk_offset.push_back(0);
  for (const uint64_t len : spec->chunk_length) {
    // Saturates: CheckArtifactSpec refuses a sum that overflows.
    offset = len > UINT64_MAX - offset ? UINT64_MAX : offset + len;
    spec->chunk_offset.push_back(offset);
  }
}

Status CheckArtifactSpec(const ArtifactSpec& spec) {
  if (spec.artifact_sha256.size() != 32 || spec.model_sha256.size() != 32) {
    return InvalidArgument(
        "artifact spec: artifact and model SHA-256 must be 32 bytes, got %zu "
        "and %zu",
        spec.artifact_sha256.size(), spec.model_sha256.size());
  }
  if (spec.content_addressed()) {
    using ull = unsigned long long;
    if (spec.chunk_size != 0) {
      return InvalidArgument(
          "artifact spec: chunk_size is %llu but chunk_length lists %zu "
          "chunks; a content-addressed artifact has chunk_size 0",
          static_cast<ull>(spec.chunk_size), spec.chunk_length.size());
    }
    if (spec.chunk_length.size() != spec.chunk_sha256.size()) {
      return InvalidArgument(
          "artifact spec: %zu chunk lengths but %zu chunk hashes; expected "
          "one hash per chunk",
          spec.chunk_length.size(), spec.chunk_sha256.size());
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < spec.chunk_length.size(); ++i) {
      const uint64_t len = spec.chunk_length[i];
      if (len == 0) {
        return InvalidArgument(
            "artifact spec: chunk_length[%zu] is 0; expected every chunk of a "
            "content-addressed artifact to hold at least one byte",
            i);
      }
      if (len > spec.artifact_length - sum) {  // sum <= artifact_length
        return InvalidArgument(
            "artifact spec: chunk lengths reach past the artifact length "
            "%llu at chunk_length[%zu] = %llu (offset %llu)",
            static_cast<ull>(spec.artifact_length), i, static_cast<ull>(len),
            static_cast<ull>(sum));
      }
      sum += len;
    }
    if (sum != spec.artifact_length) {
      return InvalidArgument(
          "artifact spec: the %zu chunk lengths sum to %llu, expected the "
          "artifact length %llu",
          spec.chunk_length.size(), static_cast<ull>(sum),
          static_cast<ull>(spec.artifact_length));
    }
    if (spec.chunk_offset.size() != spec.chunk_length.size() + 1) {
      return InvalidArgument(
          "artifact spec: chunk offsets not derived (FinishArtifactSpec)");
    }
  } else if (spec.chunk_size == 0 || spec.artifact_length == 0) {
    return InvalidArgument(
        "artifact spec: chunk size %llu and artifact length %llu must be "
        "non-zero",
        static_cast<unsigned long long>(spec.chunk_size),
        static_cast<unsigned long long>(spec.artifact_length));
  }
  const uint64_t chunks =
      spec.content_addressed()
          ? spec.chunk_length.size()
          : ChunkCount(spec.artifact_length, spec.chunk_size);
  if (spec.chunk_sha256.size() != chunks) {
    return InvalidArgument(
        "artifact spec: %llu bytes in chunks of %llu need %llu chunk hashes, "
        "got %zu",
        static_cast<unsigned long long>(spec.artifact_length),
        static_cast<unsigned long long>(spec.chunk_size),
        static_cast<unsigned long long>(chunks), spec.chunk_sha256.size());
  }
  for (size_t i = 0; i < spec.chunk_sha256.size(); ++i) {
    if (spec.chunk_sha256[i].size() != 32) {
      return InvalidArgument(
          "artifact spec: chunk hash %zu is %zu bytes, not 32", i,
          spec.chunk_sha256[i].size());
    }
  }
  return Status::Ok();
}

uint64_t ChunkOffset(const ArtifactSpec& spec, uint64_t index) {
  if (spec.content_addressed()) {
    return index < spec.chunk_offset.size() ? spec.chunk_offset[index]
                                            : spec.artifact_length;
  }
  return index * spec.chunk_size;
}

uint64_t ChunkAt(const ArtifactSpec& spec, uint64_t offset) {
  if (!spec.content_addressed()) return offset / spec.chunk_size;
  // The last chunk whose offset is <= offset.
  const auto it = std::upper_bound(spec.chunk_offset.begin(),
                                   spec.chunk_offset.end(), offset);
  return static_cast<uint64_t>(it - spec.chunk_offset.begin()) - 1;
}

uint64_t ChunkLength(const ArtifactSpec& spec, uint64_t index) {
  if (spec.content_addressed()) {
    return index < spec.chunk_length.size() ? spec.chunk_length[index] : 0;
  }
  const uint64_t start = index * spec.chunk_size;
  if (start >= spec.artifact_length) return 0;
  return std::min(spec.chunk_size, spec.artifact_length - start);
}

Status VerifyStoredArtifact(StateStore& store, const ArtifactSpec& spec,
                            const std::atomic<bool>* cancel) {
  Sha256Hasher hash;
  return VerifyStoredArtifactFrom(store, spec, hash, 0, cancel);
}

Status VerifyStoredArtifactFrom(StateStore& store, const ArtifactSpec& spec,
                                Sha256Hasher& hash, uint64_t first_chunk,
                                const std::atomic<bool>* cancel,
                                ModelStager* stager) {
  TERND_RETURN_IF_ERROR(CheckArtifactSpec(spec));
  for (uint64_t i = first_chunk; i < spec.chunk_sha256.size(); ++i) {
    if (Cancelled(cancel)) {
      return Errorf(StatusCode::kCancelled, "artifact %s: check cancelled",
                    Hex(spec.artifact_sha256).c_str());
    }
    TERND_ASSIGN_OR_RETURN(std::string chunk,
                           ReadCheckedChunk(store, spec, i, hash));
    if (stager != nullptr) TERND_RETURN_IF_ERROR(stager->Feed(chunk));
  }
  return CheckArtifactHash(spec, hash);
}

// ModelStager
// ------------------------------------------------------------------

Result<std::unique_ptr<ModelStager>> ModelStager::Create(
    const ArtifactSpec* spec, std::span<uint8_t> out) {
  TERND_RETURN_IF_ERROR(CheckArtifactSpec(*spec));
  if (out.size() < spec->model_length) {
    return InvalidArgument(
        "staging artifact %s: the output buffer holds %zu bytes, the signed "
        "model length is %llu",
        Hex(spec->artifact_sha256).c_str(), out.size(),
        static_cast<unsigned long long>(spec->model_length));
  }
  std::unique_ptr<ModelStager> s(new ModelStager());
  s->spec_ = spec;
  s->out_ = out.first(static_cast<size_t>(spec->model_length));
  s->dctx_ = ZSTD_createDCtx();
  if (s->dctx_ == nullptr) {
    return Internal("cannot allocate a zstd decompression context");
  }
  ZSTD_DCtx_setParameter(s->dctx_, ZSTD_d_windowLogMax, kMaxWindowLog);
  return s;
}

ModelStager::~ModelStager() { ZSTD_freeDCtx(dctx_); }

// Decompresses `size` bytes of input (nullptr/0: only drains what zstd
// holds), refusing any output beyond the signed model length.
Status ModelStager::Drain(const void* src, size_t size,
                          uint64_t artifact_offset) {
  ZSTD_inBuffer input{src, size, 0};
  ZSTD_outBuffer output{out_.data(), out_.size(), out_pos_};
  const size_t hashed = out_pos_;
  for (;;) {
    const bool draining = size == 0;
    if (!draining && input.pos == input.size) break;
    const size_t before = output.pos;
    if (output.pos == output.size) {
      // The model is complete but input (or buffered output) remains: it
      // may only be epilogue (a checksum, the end of the frame). One more
      // byte of output is a bomb.
      uint8_t probe;
      ZSTD_outBuffer extra{&probe, 1, 0};
      last_ret_ = ZSTD_decompressStream(dctx_, &extra, &input);
      if (!ZSTD_isError(last_ret_) && extra.pos > 0) {
        return DataLoss(
            "staging artifact %s: decompresses to more than the signed "
            "model length %zu (stopped at artifact offset %llu)",
            Hex(spec_->artifact_sha256).c_str(), out_.size(),
            static_cast<unsigned long long>(artifact_offset + input.pos));
      }
    } else {
      last_ret_ = ZSTD_decompressStream(dctx_, &output, &input);
    }
    if (ZSTD_isError(last_ret_)) {
      return DataLoss(
          "staging artifact %s: zstd error at artifact offset %llu (model "
          "offset %zu): %s",
          Hex(spec_->artifact_sha256).c_str(),
          static_cast<unsigned long long>(artifact_offset + input.pos),
          output.pos, ZSTD_getErrorName(last_ret_));
    }
    if (draining) {
      if (last_ret_ == 0) break;
      if (output.pos == before) {
        return DataLoss(
            "staging artifact %s: the artifact ends inside a zstd frame "
            "(model offset %zu)",
            Hex(spec_->artifact_sha256).c_str(), output.pos);
      }
    }
  }
  out_pos_ = output.pos;
  // Hash what was just written while it is still in the cache.
  model_hash_.Update(std::string_view(
      reinterpret_cast<const char*>(out_.data()) + hashed, out_pos_ - hashed));
  return Status::Ok();
}

Status ModelStager::Feed(std::string_view chunk) {
  const uint64_t offset = ChunkOffset(*spec_, next_chunk_);
  ++next_chunk_;
  if (chunk.empty()) return Status::Ok();
  return Drain(chunk.data(), chunk.size(), offset);
}

Result<uint64_t> ModelStager::Finish() {
  // Flush whatever zstd still holds: it may also overflow the model.
  if (last_ret_ != 0) {
    TERND_RETURN_IF_ERROR(Drain(nullptr, 0, spec_->artifact_length));
  }
  if (out_pos_ != spec_->model_length) {
    return DataLoss("staging artifact %s: the model is %zu bytes, signed %llu",
                    Hex(spec_->artifact_sha256).c_str(), out_pos_,
                    static_cast<unsigned long long>(spec_->model_length));
  }
  const std::string got = model_hash_.Final();
  if (got != spec_->model_sha256) {
    return DataLoss(
        "staging artifact %s: the %zu-byte model has SHA-256 %s, signed %s",
        Hex(spec_->artifact_sha256).c_str(), out_pos_, Hex(got).c_str(),
        Hex(spec_->model_sha256).c_str());
  }
  return static_cast<uint64_t>(out_pos_);
}

Result<uint64_t> StageArtifact(StateStore& store, const ArtifactSpec& spec,
                               std::span<uint8_t> out,
                               const std::atomic<bool>* cancel) {
  TERND_ASSIGN_OR_RETURN(std::unique_ptr<ModelStager> stager,
                         ModelStager::Create(&spec, out));
  Sha256Hasher artifact_hash;
  for (uint64_t i = 0; i < spec.chunk_sha256.size(); ++i) {
    if (Cancelled(cancel)) {
      return Errorf(StatusCode::kCancelled, "staging artifact %s: cancelled",
                    Hex(spec.artifact_sha256).c_str());
    }
    TERND_ASSIGN_OR_RETURN(std::string chunk,
                           ReadCheckedChunk(store, spec, i, artifact_hash));
    TERND_RETURN_IF_ERROR(stager->Feed(chunk));
  }
  TERND_RETURN_IF_ERROR(CheckArtifactHash(spec, artifact_hash));
  return stager->Finish();
}

// ArtifactWorker
// ---------------------------------------------------------------

Result<std::unique_ptr<ArtifactWorker>> ArtifactWorker::Start(
    sd_event* loop, std::string state_db, bool chunk_writer) {
  std::unique_ptr<ArtifactWorker> w(new ArtifactWorker());
  w->state_db_ = std::move(state_db);
  w->chunk_writer_ = chunk_writer;
  w->event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w->event_fd_ < 0) {
    return ErrnoError(errno, "artifact worker: eventfd");
  }
  const int r = sd_event_add_io(loop, &w->source_, w->event_fd_, EPOLLIN,
                                &ArtifactWorker::OnEventFd, w.get());
  if (r < 0) {
    return ErrnoError(-r, "artifact worker: cannot watch its eventfd");
  }
  sd_event_source_set_description(w->source_, "artifact-worker");
  w->thread_ = std::thread([p = w.get()] { p->Run(); });
  return w;
}

ArtifactWorker::~ArtifactWorker() {
  *alive_ = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (source_ != nullptr) sd_event_source_disable_unref(source_);
  if (event_fd_ >= 0) ::close(event_fd_);
}

void ArtifactWorker::Post(Work work, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.emplace_back(std::move(work), std::move(done));
  }
  cv_.notify_one();
}

void ArtifactWorker::Run() {
  // Visible in top -H, ps -L and debuggers.
  pthread_setname_np(pthread_self(),
                     chunk_writer_ ? "ternd-chunks" : "ternd-artifact");
  std::unique_ptr<StateStore> store;
  Status open_error;
  bool opened = false;
  for (;;) {
    std::pair<Work, Done> item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    if (!opened) {
      opened = true;
      auto s = StateStore::Open(state_db_);
      if (s.ok() && chunk_writer_) {
        Status relaxed = (*s)->RelaxDurabilityForChunks();
        if (!relaxed.ok()) s = relaxed;
      }
      if (s.ok()) {
        store = std::move(s).value();
      } else {
        open_error = s.status();
      }
    }
    if (store) {
      item.first(store.get());
    } else {
      item.first(open_error);
    }
    item.first = nullptr;  // release captures on this thread
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      completed_.push_back(std::move(item.second));
    }
    const uint64_t one = 1;
    ssize_t n = ::write(event_fd_, &one, sizeof one);
    (void)n;  // eventfd counter overflow is impossible at this rate
  }
}

int ArtifactWorker::OnEventFd(sd_event_source*, int fd, uint32_t, void* p) {
  auto* self = static_cast<ArtifactWorker*>(p);
  uint64_t count;
  while (::read(fd, &count, sizeof count) > 0) {
  }
  std::deque<Done> done;
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    done.swap(self->completed_);
  }
  // A `done` may destroy the worker (through its owner): then the rest are
  // dropped, as documented for destruction.
  std::shared_ptr<bool> alive = self->alive_;
  while (!done.empty() && *alive) {
    Done d = std::move(done.front());
    done.pop_front();
    if (d) d();
  }
  return 0;
}

}  // namespace ternd::ota
