#include "ota/state_store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "base/log.h"
#include "base/sqlite_util.h"
#include "ota/signing.h"

namespace ternd::ota {
namespace {

// 1: trust, chunks, download_validators. What was added since, an older
// ternd can live with, so the version stays 1 and a package downgrade still
// opens the database (an older ternd refuses a newer version): the column
// chunks.sha256 (the SHA-256 of the chunk's bytes; NULL for rows written
// before it, or by an older ternd) and its index, so a content-addressed
// download finds chunks it already holds under any artifact (docs/ota.md,
// "Delta downloads").
constexpr int kSchemaVersion = 1;

constexpr const char* kAddChunkHashes = R"sql(
ALTER TABLE chunks ADD COLUMN sha256 BLOB;
CREATE INDEX IF NOT EXISTS chunks_by_sha256 ON chunks (sha256);
)sql";

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS trust (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  root_envelope BLOB NOT NULL,
  time_floor INTEGER NOT NULL,
  highest_version_seen INTEGER NOT NULL,
  highest_sequence INTEGER NOT NULL,
  highest_sequence_sha256 BLOB NOT NULL
);
-- A rowid table: chunks are large BLOBs, which SQLite stores far better in
-- a table b-tree than in the index b-tree of a WITHOUT ROWID table (about
-- 8x fewer page reads per chunk; docs/performance.md, "OTA download").
CREATE TABLE IF NOT EXISTS chunks (
  artifact BLOB NOT NULL,
  idx INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (artifact, idx)
);
CREATE TABLE IF NOT EXISTS download_validators (
  artifact BLOB NOT NULL,
  url TEXT NOT NULL,
  validator TEXT NOT NULL,
  PRIMARY KEY (artifact, url)
) WITHOUT ROWID;
)sql";

using Stmt = SqliteStmt;

// WAL size at which the background checkpointer is woken, and at which the
// writer checkpoints itself because the checkpointer fell behind.
constexpr int64_t kCheckpointWalBytes = int64_t{16} << 20;
constexpr int64_t kWriterCheckpointWalBytes = int64_t{64} << 20;

}  // namespace

// Checkpoints a writer connection's WAL on a thread (and connection) of its
// own, so the writer never waits for a checkpoint's copying and fsyncs.
// PASSIVE checkpoints run alongside the writer's commits and copy the frames
// committed before they started. The WAL restarts from its beginning only
// once every frame is copied, which a writer that never pauses does not
// allow; so from kWriterCheckpointWalBytes on the writer waits for the
// background pass in progress and checkpoints itself, copying only the
// frames committed since, and its next transaction restarts the WAL. The WAL
// thus stays under kWriterCheckpointWalBytes plus one transaction (unless a
// reader still uses old frames).
class StateStore::Checkpointer {
 public:
  static Result<std::unique_ptr<Checkpointer>> Start(const std::string& path,
                                                     sqlite3* writer,
                                                     int64_t page_size) {
    std::unique_ptr<Checkpointer> c(new Checkpointer());
    c->path_ = path;
    c->wake_pages_ = std::max<int64_t>(kCheckpointWalBytes / page_size, 1);
    c->writer_pages_ =
        std::max<int64_t>(kWriterCheckpointWalBytes / page_size, 1);
    const int rc =
        sqlite3_open_v2(path.c_str(), &c->db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      return SqliteError(c->db_, path, "cannot open a checkpoint connection");
    }
    // Other threads write the same database (the update ledger): wait for
    // their locks like every other connection rather than fail at once.
    sqlite3_busy_timeout(c->db_, 5000);
    TERND_RETURN_IF_ERROR(
        SqliteExec(c->db_, path, "PRAGMA synchronous=NORMAL;"));
    c->thread_ = std::thread([p = c.get()] { p->Run(); });
    // Replaces the writer's automatic checkpoints (they share this hook).
    sqlite3_wal_hook(writer, &Checkpointer::OnCommit, c.get());
    c->writer_ = writer;
    return c;
  }

  ~Checkpointer() {
    if (writer_ != nullptr) sqlite3_wal_hook(writer_, nullptr, nullptr);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    sqlite3_close(db_);
  }

  uint64_t checkpoints() const {
    std::lock_guard<std::mutex> lock(mu_);
    return checkpoints_;
  }

 private:
  Checkpointer() = default;

  // After each commit of the writer (its thread), with the WAL's size in
  // pages.
  static int OnCommit(void* p, sqlite3* db, const char* schema, int pages) {
    auto* self = static_cast<Checkpointer*>(p);
    if (pages >= self->writer_pages_) {
      // Waits for a background pass in progress, then copies what it left.
      std::lock_guard<std::mutex> pass(self->pass_mu_);
      sqlite3_wal_checkpoint_v2(db, schema, SQLITE_CHECKPOINT_PASSIVE, nullptr,
                                nullptr);
    } else if (pages >= self->wake_pages_) {
      {
        std::lock_guard<std::mutex> lock(self->mu_);
        self->wanted_ = true;
      }
      self->cv_.notify_one();
    }
    return SQLITE_OK;
  }

  void Run() {
    pthread_setname_np(pthread_self(), "ternd-checkpt");
    bool warned = false;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || wanted_; });
        if (stopping_) return;
        wanted_ = false;
      }
      int rc;
      {
        std::lock_guard<std::mutex> pass(pass_mu_);
        rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                       nullptr, nullptr);
      }
      if (rc == SQLITE_OK) {
        std::lock_guard<std::mutex> lock(mu_);
        ++checkpoints_;
      } else if (rc != SQLITE_BUSY && !warned) {
        // Not fatal: the writer checkpoints itself past
        // kWriterCheckpointWalBytes.
        warned = true;
        TERND_LOG_WARNING("%s: background checkpoint failed: %s", path_.c_str(),
                          sqlite3_errmsg(db_));
      }
    }
  }

  std::string path_;
  sqlite3* db_ = nullptr;
  sqlite3* writer_ = nullptr;
  int64_t wake_pages_ = 0;
  int64_t writer_pages_ = 0;
  std::mutex pass_mu_;  // held while a checkpoint runs
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool wanted_ = false;       // guarded by mu_
  bool stopping_ = false;     // guarded by mu_
  uint64_t checkpoints_ = 0;  // guarded by mu_
  std::thread thread_;
};

Status StateStore::Error(const char* what) {
  return SqliteError(db_, path_, what);
}

Status StateStore::Exec(const char* sql) { return SqliteExec(db_, path_, sql); }

Result<std::unique_ptr<StateStore>> StateStore::Open(const std::string& path) {
  std::unique_ptr<StateStore> store(new StateStore());
  store->path_ = path;
  // Create it 0600 before SQLite does, so it is never world-readable.
  const mode_t old = ::umask(077);
  const int rc = sqlite3_open_v2(
      path.c_str(), &store->db_,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
      nullptr);
  ::umask(old);
  if (rc != SQLITE_OK) return store->Error("cannot open the state database");
  sqlite3_busy_timeout(store->db_, 5000);
  // 64 KiB pages: the database is mostly artifact chunks (MiB-sized BLOBs),
  // read and written several times faster than with 4 KiB pages. Only takes
  // effect when the database is created.
  TERND_RETURN_IF_ERROR(store->Exec("PRAGMA page_size=65536;"));
  TERND_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL;"));
  TERND_RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=FULL;"));
  int have = 0;
  {
    // Finalized before the write below: a statement left open keeps its
    // read transaction, and BEGIN IMMEDIATE on a snapshot that another
    // connection has written past fails at once with "database is locked"
    // (the busy timeout cannot help: waiting would deadlock).
    Stmt version(store->db_, "PRAGMA user_version;");
    if (!version.ok() || sqlite3_step(version.get()) != SQLITE_ROW) {
      return store->Error("cannot read the schema version (not a database?)");
    }
    have = sqlite3_column_int(version.get(), 0);
  }
  if (have > kSchemaVersion) {
    return FailedPrecondition(
        "%s: schema version %d is newer than this ternd understands (%d); "
        "it was written by a newer ternd",
        path.c_str(), have, kSchemaVersion);
  }
  TERND_RETURN_IF_ERROR(store->Exec("BEGIN IMMEDIATE;"));
  Status s = store->Exec(kSchema);
  if (s.ok()) {
    // A database from before chunk hashes (or new) gets them. Only when
    // missing: a database on a full disk must still open (and be read) when
    // its schema is current.
    bool has_hashes = false;
    {
      Stmt q(store->db_,
             "SELECT COUNT(*) FROM pragma_table_info('chunks') WHERE name = "
             "'sha256';");
      if (!q.ok() || sqlite3_step(q.get()) != SQLITE_ROW) {
        s = store->Error("cannot read the chunks table's columns");
      } else {
        has_hashes = sqlite3_column_int(q.get(), 0) > 0;
      }
    }
    if (s.ok() && !has_hashes) s = store->Exec(kAddChunkHashes);
  }
  if (s.ok() && have != kSchemaVersion) {
    s = store->Exec("PRAGMA user_version=1;");
  }
  if (!s.ok()) {
    store->Exec("ROLLBACK;").IgnoreError();
    return s;
  }
  TERND_RETURN_IF_ERROR(store->Exec("COMMIT;"));
  return store;
}

StateStore::~StateStore() {
  checkpointer_.reset();  // before the connection it hooks
  sqlite3_close(db_);
}

Result<std::optional<TrustState>> StateStore::LoadTrust() {
  Stmt q(db_,
         "SELECT root_envelope, time_floor, highest_version_seen, "
         "highest_sequence, highest_sequence_sha256 FROM trust WHERE id = 1;");
  if (!q.ok()) return Error("cannot read the trust state");
  const int rc = sqlite3_step(q.get());
  if (rc == SQLITE_DONE) return std::optional<TrustState>();
  if (rc != SQLITE_ROW) return Error("cannot read the trust state");
  TERND_ASSIGN_OR_RETURN(TrustState state,
                         TrustFromPinnedRoot(q.ColumnBlob(0)));
  state.time_floor = sqlite3_column_int64(q.get(), 1);
  state.highest_version_seen =
      static_cast<uint64_t>(sqlite3_column_int64(q.get(), 2));
  state.highest_sequence =
      static_cast<uint64_t>(sqlite3_column_int64(q.get(), 3));
  state.highest_sequence_sha256 = q.ColumnBlob(4);
  return std::optional<TrustState>(std::move(state));
}

Status StateStore::SaveTrust(const TrustState& state) {
  Stmt q(db_,
         "INSERT OR REPLACE INTO trust (id, root_envelope, time_floor, "
         "highest_version_seen, highest_sequence, highest_sequence_sha256) "
         "VALUES (1, ?, ?, ?, ?, ?);");
  if (!q.ok()) return Error("cannot save the trust state");
  q.Blob(1, state.root_envelope);
  q.Int(2, state.time_floor);
  q.Int(3, static_cast<int64_t>(state.highest_version_seen));
  q.Int(4, static_cast<int64_t>(state.highest_sequence));
  q.Blob(5, state.highest_sequence_sha256);
  if (sqlite3_step(q.get()) != SQLITE_DONE) {
    return Error("cannot save the trust state");
  }
  return Status::Ok();
}

Status StateStore::PutChunk(const std::string& artifact, uint64_t index,
                            std::string_view bytes, std::string_view sha256) {
  std::string computed;
  if (sha256.empty()) {
    computed = Sha256(bytes);
    sha256 = computed;
  }
  Stmt q(db_,
         "INSERT OR REPLACE INTO chunks (artifact, idx, data, sha256) VALUES "
         "(?, ?, ?, ?);");
  if (!q.ok()) return Error("cannot store a chunk");
  q.Blob(1, artifact);
  q.Int(2, static_cast<int64_t>(index));
  // No copy of the (MiB-sized) chunk: `bytes` outlives the statement.
  sqlite3_bind_blob64(q.get(), 3, bytes.data(), bytes.size(), SQLITE_STATIC);
  sqlite3_bind_blob64(q.get(), 4, sha256.data(), sha256.size(), SQLITE_STATIC);
  if (sqlite3_step(q.get()) != SQLITE_DONE) {
    const int code = sqlite3_errcode(db_);
    if (code == SQLITE_FULL) {
      return ResourceExhausted("%s: cannot store chunk %llu (%zu bytes): %s",
                               path_.c_str(),
                               static_cast<unsigned long long>(index),
                               bytes.size(), sqlite3_errmsg(db_));
    }
    return Error("cannot store a chunk");
  }
  return Status::Ok();
}

Result<std::optional<std::string>> StateStore::GetChunk(
    const std::string& artifact, uint64_t index) {
  Stmt q(db_, "SELECT data FROM chunks WHERE artifact = ? AND idx = ?;");
  if (!q.ok()) return Error("cannot read a chunk");
  q.Blob(1, artifact);
  q.Int(2, static_cast<int64_t>(index));
  const int rc = sqlite3_step(q.get());
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  if (rc != SQLITE_ROW) return Error("cannot read a chunk");
  return std::optional<std::string>(q.ColumnBlob(0));
}

Result<std::optional<std::string>> StateStore::FindChunkBySha256(
    std::string_view sha256) {
  Stmt q(db_, "SELECT data FROM chunks WHERE sha256 = ? LIMIT 1;");
  if (!q.ok()) return Error("cannot look a chunk up by hash");
  sqlite3_bind_blob64(q.get(), 1, sha256.data(), sha256.size(), SQLITE_STATIC);
  const int rc = sqlite3_step(q.get());
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  if (rc != SQLITE_ROW) return Error("cannot look a chunk up by hash");
  return std::optional<std::string>(q.ColumnBlob(0));
}

Result<std::vector<uint64_t>> StateStore::ChunkIndices(
    const std::string& artifact) {
  Stmt q(db_, "SELECT idx FROM chunks WHERE artifact = ? ORDER BY idx;");
  if (!q.ok()) return Error("cannot list chunks");
  q.Blob(1, artifact);
  std::vector<uint64_t> out;
  int rc;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
    out.push_back(static_cast<uint64_t>(sqlite3_column_int64(q.get(), 0)));
  }
  if (rc != SQLITE_DONE) return Error("cannot list chunks");
  return out;
}

Status StateStore::RelaxDurabilityForChunks() {
  if (checkpointer_) return Status::Ok();
  Stmt q(db_, "PRAGMA page_size;");
  if (!q.ok() || sqlite3_step(q.get()) != SQLITE_ROW) {
    return Error("cannot read the page size");
  }
  const int64_t page = std::max<int64_t>(sqlite3_column_int64(q.get(), 0), 512);
  // When the WAL restarts, it is truncated back to 16 MiB: a large download
  // does not leave a WAL of its own size behind.
  TERND_RETURN_IF_ERROR(
      Exec("PRAGMA synchronous=NORMAL; PRAGMA journal_size_limit=16777216;"));
  TERND_ASSIGN_OR_RETURN(checkpointer_, Checkpointer::Start(path_, db_, page));
  return Status::Ok();
}

uint64_t StateStore::background_checkpoints() const {
  return checkpointer_ ? checkpointer_->checkpoints() : 0;
}

Status StateStore::DeleteChunk(const std::string& artifact, uint64_t index) {
  Stmt q(db_, "DELETE FROM chunks WHERE artifact = ? AND idx = ?;");
  if (!q.ok()) return Error("cannot delete a chunk");
  q.Blob(1, artifact);
  q.Int(2, static_cast<int64_t>(index));
  if (sqlite3_step(q.get()) != SQLITE_DONE) {
    return Error("cannot delete a chunk");
  }
  return Status::Ok();
}

Status StateStore::Checkpoint() {
  return Exec("PRAGMA wal_checkpoint(TRUNCATE);");
}

Result<std::vector<StateStore::StoredArtifact>> StateStore::Artifacts() {
  Stmt q(db_,
         "SELECT artifact, SUM(LENGTH(data)), MAX(rowid) AS newest FROM chunks "
         "GROUP BY artifact ORDER BY newest DESC;");
  if (!q.ok()) return Error("cannot list artifacts");
  std::vector<StoredArtifact> out;
  int rc;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
    StoredArtifact a;
    a.sha256 = q.ColumnBlob(0);
    a.bytes = static_cast<uint64_t>(sqlite3_column_int64(q.get(), 1));
    out.push_back(std::move(a));
  }
  if (rc != SQLITE_DONE) return Error("cannot list artifacts");
  return out;
}

Status StateStore::DeleteArtifact(const std::string& artifact) {
  TERND_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE;"));
  Status s;
  for (const char* sql : {"DELETE FROM chunks WHERE artifact = ?;",
                          "DELETE FROM download_validators WHERE artifact = "
                          "?;"}) {
    Stmt q(db_, sql);
    if (!q.ok()) {
      s = Error("cannot delete chunks");
      break;
    }
    q.Blob(1, artifact);
    if (sqlite3_step(q.get()) != SQLITE_DONE) {
      s = Error("cannot delete chunks");
      break;
    }
  }
  if (!s.ok()) {
    Exec("ROLLBACK;").IgnoreError();
    return s;
  }
  return Exec("COMMIT;");
}

Status StateStore::PutDownloadValidator(const std::string& artifact,
                                        const std::string& url,
                                        const std::string& validator) {
  Stmt q(db_,
         "INSERT OR REPLACE INTO download_validators (artifact, url, "
         "validator) VALUES (?, ?, ?);");
  if (!q.ok()) return Error("cannot store a download validator");
  q.Blob(1, artifact);
  sqlite3_bind_text(q.get(), 2, url.data(), static_cast<int>(url.size()),
                    SQLITE_TRANSIENT);
  sqlite3_bind_text(q.get(), 3, validator.data(),
                    static_cast<int>(validator.size()), SQLITE_TRANSIENT);
  if (sqlite3_step(q.get()) != SQLITE_DONE) {
    return Error("cannot store a download validator");
  }
  return Status::Ok();
}

Result<std::optional<std::string>> StateStore::GetDownloadValidator(
    const std::string& artifact, const std::string& url) {
  Stmt q(db_,
         "SELECT validator FROM download_validators WHERE artifact = ? AND "
         "url = ?;");
  if (!q.ok()) return Error("cannot read a download validator");
  q.Blob(1, artifact);
  sqlite3_bind_text(q.get(), 2, url.data(), static_cast<int>(url.size()),
                    SQLITE_TRANSIENT);
  const int rc = sqlite3_step(q.get());
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  if (rc != SQLITE_ROW) return Error("cannot read a download validator");
  return std::optional<std::string>(q.ColumnBlob(0));
}

}  // namespace ternd::ota
