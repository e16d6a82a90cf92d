#include "ota/artifact.h"

#include <openssl/evp.h>
#include <sys/eventfd.h>
#include <systemd/sd-event.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <cstring>

#include "base/log.h"

namespace ternd::ota {
namespace {

// Largest zstd window accepted (128 MiB, what `zstd --long=27` makes).
// zstd allocates the window while decompressing, so this bounds memory.
constexpr int kMaxWindowLog = 27;

struct DctxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

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
  const uint64_t offset = i * spec.chunk_size;
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
  spec.chunk_sha256.assign(release.chunk_sha256().begin(),
                           release.chunk_sha256().end());
  return spec;
}

Status CheckArtifactSpec(const ArtifactSpec& spec) {
  if (spec.artifact_sha256.size() != 32 || spec.model_sha256.size() != 32) {
    return InvalidArgument(
        "artifact spec: artifact and model SHA-256 must be 32 bytes, got %zu "
        "and %zu",
        spec.artifact_sha256.size(), spec.model_sha256.size());
  }
  if (spec.chunk_size == 0 || spec.artifact_length == 0) {
    return InvalidArgument(
        "artifact spec: chunk size %llu and artifact length %llu must be "
        "non-zero",
        static_cast<unsigned long long>(spec.chunk_size),
        static_cast<unsigned long long>(spec.artifact_length));
  }
  const uint64_t chunks =
      (spec.artifact_length + spec.chunk_size - 1) / spec.chunk_size;
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

uint64_t ChunkLength(const ArtifactSpec& spec, uint64_t index) {
  const uint64_t start = index * spec.chunk_size;
  if (start >= spec.artifact_length) return 0;
  return std::min(spec.chunk_size, spec.artifact_length - start);
}

Sha256Hasher::Sha256Hasher() : ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);
}

Sha256Hasher::~Sha256Hasher() { EVP_MD_CTX_free(ctx_); }

void Sha256Hasher::Update(std::string_view bytes) {
  EVP_DigestUpdate(ctx_, bytes.data(), bytes.size());
}

std::string Sha256Hasher::Final() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx_, md, &n);
  return std::string(reinterpret_cast<const char*>(md), n);
}

Status VerifyStoredArtifact(StateStore& store, const ArtifactSpec& spec,
                            const std::atomic<bool>* cancel) {
  Sha256Hasher hash;
  return VerifyStoredArtifactFrom(store, spec, hash, 0, cancel);
}

Status VerifyStoredArtifactFrom(StateStore& store, const ArtifactSpec& spec,
                                Sha256Hasher& hash, uint64_t first_chunk,
                                const std::atomic<bool>* cancel) {
  TERND_RETURN_IF_ERROR(CheckArtifactSpec(spec));
  for (uint64_t i = first_chunk; i < spec.chunk_sha256.size(); ++i) {
    if (Cancelled(cancel)) {
      return Errorf(StatusCode::kCancelled, "artifact %s: check cancelled",
                    Hex(spec.artifact_sha256).c_str());
    }
    TERND_ASSIGN_OR_RETURN(std::string chunk,
                           ReadCheckedChunk(store, spec, i, hash));
  }
  return CheckArtifactHash(spec, hash);
}

Result<uint64_t> StageArtifact(StateStore& store, const ArtifactSpec& spec,
                               std::span<uint8_t> out,
                               const std::atomic<bool>* cancel) {
  TERND_RETURN_IF_ERROR(CheckArtifactSpec(spec));
  if (out.size() < spec.model_length) {
    return InvalidArgument(
        "staging artifact %s: the output buffer holds %zu bytes, the signed "
        "model length is %llu",
        Hex(spec.artifact_sha256).c_str(), out.size(),
        static_cast<unsigned long long>(spec.model_length));
  }
  std::unique_ptr<ZSTD_DCtx, DctxDeleter> dctx(ZSTD_createDCtx());
  if (!dctx) return Internal("cannot allocate a zstd decompression context");
  ZSTD_DCtx_setParameter(dctx.get(), ZSTD_d_windowLogMax, kMaxWindowLog);

  Sha256Hasher artifact_hash;
  ZSTD_outBuffer output{out.data(), static_cast<size_t>(spec.model_length), 0};
  size_t last_ret = 0;  // 0: at a frame boundary
  for (uint64_t i = 0; i < spec.chunk_sha256.size(); ++i) {
    if (Cancelled(cancel)) {
      return Errorf(StatusCode::kCancelled, "staging artifact %s: cancelled",
                    Hex(spec.artifact_sha256).c_str());
    }
    TERND_ASSIGN_OR_RETURN(std::string chunk,
                           ReadCheckedChunk(store, spec, i, artifact_hash));
    ZSTD_inBuffer input{chunk.data(), chunk.size(), 0};
    while (input.pos < input.size) {
      const uint64_t artifact_offset = i * spec.chunk_size + input.pos;
      if (output.pos == output.size) {
        // The model is complete but input remains: it may only be
        // epilogue (a checksum, the end of the frame). One more byte of
        // output is a bomb.
        uint8_t probe;
        ZSTD_outBuffer extra{&probe, 1, 0};
        last_ret = ZSTD_decompressStream(dctx.get(), &extra, &input);
        if (!ZSTD_isError(last_ret) && extra.pos > 0) {
          return DataLoss(
              "staging artifact %s: decompresses to more than the signed "
              "model length %llu (stopped at artifact offset %llu)",
              Hex(spec.artifact_sha256).c_str(),
              static_cast<unsigned long long>(spec.model_length),
              static_cast<unsigned long long>(artifact_offset));
        }
      } else {
        last_ret = ZSTD_decompressStream(dctx.get(), &output, &input);
      }
      if (ZSTD_isError(last_ret)) {
        return DataLoss(
            "staging artifact %s: zstd error at artifact offset %llu "
            "(model offset %zu): %s",
            Hex(spec.artifact_sha256).c_str(),
            static_cast<unsigned long long>(artifact_offset), output.pos,
            ZSTD_getErrorName(last_ret));
      }
    }
  }
  // Flush whatever zstd still holds: it may also overflow the model.
  while (last_ret != 0) {
    ZSTD_inBuffer none{nullptr, 0, 0};
    const size_t before = output.pos;
    if (output.pos == output.size) {
      uint8_t probe;
      ZSTD_outBuffer extra{&probe, 1, 0};
      last_ret = ZSTD_decompressStream(dctx.get(), &extra, &none);
      if (!ZSTD_isError(last_ret) && extra.pos > 0) {
        return DataLoss(
            "staging artifact %s: decompresses to more than the signed model "
            "length %llu",
            Hex(spec.artifact_sha256).c_str(),
            static_cast<unsigned long long>(spec.model_length));
      }
    } else {
      last_ret = ZSTD_decompressStream(dctx.get(), &output, &none);
    }
    if (ZSTD_isError(last_ret)) {
      return DataLoss("staging artifact %s: zstd error at the end: %s",
                      Hex(spec.artifact_sha256).c_str(),
                      ZSTD_getErrorName(last_ret));
    }
    if (last_ret != 0 && output.pos == before) {
      return DataLoss(
          "staging artifact %s: the artifact ends inside a zstd frame (model "
          "offset %zu)",
          Hex(spec.artifact_sha256).c_str(), output.pos);
    }
  }
  TERND_RETURN_IF_ERROR(CheckArtifactHash(spec, artifact_hash));
  if (output.pos != spec.model_length) {
    return DataLoss("staging artifact %s: the model is %zu bytes, signed %llu",
                    Hex(spec.artifact_sha256).c_str(), output.pos,
                    static_cast<unsigned long long>(spec.model_length));
  }
  const std::string model_hash = Sha256(
      std::string_view(reinterpret_cast<const char*>(out.data()), output.pos));
  if (model_hash != spec.model_sha256) {
    return DataLoss(
        "staging artifact %s: the %zu-byte model has SHA-256 %s, signed %s",
        Hex(spec.artifact_sha256).c_str(), output.pos, Hex(model_hash).c_str(),
        Hex(spec.model_sha256).c_str());
  }
  return static_cast<uint64_t>(output.pos);
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
