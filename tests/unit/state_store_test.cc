// The SQLite state store on real files, including a writer killed with
// SIGKILL in the middle of its writes.
#include "ota/state_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "ota/signing.h"

namespace ternd::ota {
namespace {

std::string TempPath(const std::string& name) {
  std::string p = ::testing::TempDir() + "/" + name + "." +
                  std::to_string(::getpid()) + ".db";
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::remove((p + suffix).c_str());
  }
  return p;
}

TrustState SomeTrust() {
  auto key = GenerateEd25519KeyPair();
  EXPECT_TRUE(key.ok());
  Root root;
  root.set_fleet("acme");
  root.set_version(1);
  root.set_expires(2000000000);
  PublicKey* pk = root.add_keys();
  pk->set_key_id(KeyId(key->public_key));
  pk->set_ed25519(key->public_key.data(), 32);
  for (RoleKeys* role : {root.mutable_root(), root.mutable_release(),
                         root.mutable_timestamp()}) {
    role->add_key_ids(KeyId(key->public_key));
    role->set_threshold(1);
  }
  const std::string payload = root.SerializeAsString();
  auto env = SignEnvelope(
      "root",
      {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()},
      {&*key, 1});
  EXPECT_TRUE(env.ok());
  auto state = TrustFromPinnedRoot(env->SerializeAsString());
  EXPECT_TRUE(state.ok());
  return *state;
}

TEST(StateStoreTest, CreatesAPrivateWalDatabase) {
  const std::string path = TempPath("private");
  auto store = StateStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().message();
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_TRUE((*store)->SaveTrust(SomeTrust()).ok());
  EXPECT_EQ(::access((path + "-wal").c_str(), F_OK), 0) << "not in WAL mode";
}

TEST(StateStoreTest, TrustStateRoundTripsAcrossReopen) {
  const std::string path = TempPath("trust");
  TrustState t = SomeTrust();
  t.time_floor = 1795000000;
  t.highest_version_seen = 7;
  t.highest_sequence = 42;
  t.highest_sequence_sha256 = std::string(32, 'x');
  {
    auto store = StateStore::Open(path);
    ASSERT_TRUE(store.ok());
    auto empty = (*store)->LoadTrust();
    ASSERT_TRUE(empty.ok());
    EXPECT_FALSE(empty->has_value());
    ASSERT_TRUE((*store)->SaveTrust(t).ok());
  }
  auto store = StateStore::Open(path);
  ASSERT_TRUE(store.ok());
  auto loaded = (*store)->LoadTrust();
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status().message();
  const TrustState& l = **loaded;
  EXPECT_EQ(l.root.fleet(), "acme");
  EXPECT_EQ(l.time_floor, t.time_floor);
  EXPECT_EQ(l.highest_version_seen, 7u);
  EXPECT_EQ(l.highest_sequence, 42u);
  EXPECT_EQ(l.highest_sequence_sha256, t.highest_sequence_sha256);
}

TEST(StateStoreTest, ChunksSurviveReopenAndDelete) {
  const std::string path = TempPath("chunks");
  const std::string a(32, 'a'), b(32, 'b');
  {
    auto store = StateStore::Open(path);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->PutChunk(a, 2, "two").ok());
    ASSERT_TRUE((*store)->PutChunk(a, 0, "zero").ok());
    ASSERT_TRUE((*store)->PutChunk(b, 0, "other").ok());
  }
  auto store = StateStore::Open(path);
  ASSERT_TRUE(store.ok());
  auto idx = (*store)->ChunkIndices(a);
  ASSERT_TRUE(idx.ok());
  EXPECT_EQ(*idx, (std::vector<uint64_t>{0, 2}));
  auto c = (*store)->GetChunk(a, 2);
  ASSERT_TRUE(c.ok() && c->has_value());
  EXPECT_EQ(**c, "two");
  EXPECT_FALSE((*(*store)->GetChunk(a, 1)).has_value());
  ASSERT_TRUE((*store)->DeleteArtifact(a).ok());
  EXPECT_TRUE((*(*store)->ChunkIndices(a)).empty());
  EXPECT_EQ((*(*store)->ChunkIndices(b)).size(), 1u);
}

TEST(StateStoreTest, FindsChunksByHashAcrossArtifacts) {
  const std::string path = TempPath("byhash");
  auto store = StateStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().message();
  const std::string a = Sha256("artifact a"), b = Sha256("artifact b");
  ASSERT_TRUE((*store)->PutChunk(a, 0, "first").ok());
  ASSERT_TRUE((*store)->PutChunk(a, 1, "second", Sha256("second")).ok());
  auto found = (*store)->FindChunkBySha256(Sha256("second"));
  ASSERT_TRUE(found.ok()) << found.status().message();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ(**found, "second");
  found = (*store)->FindChunkBySha256(Sha256("first"));
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ(**found, "first");
  EXPECT_FALSE((*store)->FindChunkBySha256(Sha256("third"))->has_value());
  // Still found under b once a is gone.
  ASSERT_TRUE((*store)->PutChunk(b, 7, "second").ok());
  ASSERT_TRUE((*store)->DeleteArtifact(a).ok());
  found = (*store)->FindChunkBySha256(Sha256("second"));
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ(**found, "second");
  EXPECT_FALSE((*store)->FindChunkBySha256(Sha256("first"))->has_value());
}

TEST(StateStoreTest, AddsChunkHashesToAnOlderDatabaseKeepingItsVersion) {
  const std::string path = TempPath("v1");
  // A database exactly as schema version 1 left it, with a chunk and
  // trust state.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const char* v1 = R"sql(
CREATE TABLE trust (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  root_envelope BLOB NOT NULL,
  time_floor INTEGER NOT NULL,
  highest_version_seen INTEGER NOT NULL,
  highest_sequence INTEGER NOT NULL,
  highest_sequence_sha256 BLOB NOT NULL
);
CREATE TABLE chunks (
  artifact BLOB NOT NULL,
  idx INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (artifact, idx)
);
CREATE TABLE download_validators (
  artifact BLOB NOT NULL,
  url TEXT NOT NULL,
  validator TEXT NOT NULL,
  PRIMARY KEY (artifact, url)
) WITHOUT ROWID;
INSERT INTO chunks VALUES (X'01', 0, 'old chunk');
PRAGMA user_version=1;
)sql";
  ASSERT_EQ(sqlite3_exec(db, v1, nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);

  auto store = StateStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().message();
  const std::string old_artifact("\x01", 1);
  auto chunk = (*store)->GetChunk(old_artifact, 0);
  ASSERT_TRUE(chunk.ok() && chunk->has_value());
  EXPECT_EQ(**chunk, "old chunk");
  // Rows from version 1 have no hash: not found by hash, but kept.
  EXPECT_FALSE((*store)->FindChunkBySha256(Sha256("old chunk"))->has_value());
  ASSERT_TRUE((*store)->PutChunk(old_artifact, 1, "new chunk").ok());
  EXPECT_TRUE((*store)->FindChunkBySha256(Sha256("new chunk"))->has_value());
  ASSERT_TRUE((*store)->SaveTrust(SomeTrust()).ok());
  store->reset();

  // Still version 1, so the ternd before chunk hashes opens it after a
  // package downgrade; a row it writes (no hash) is kept, never found by
  // hash. And it opens again without adding the column twice.
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version;", -1, &q, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(q), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(q, 0), 1);
  sqlite3_finalize(q);
  ASSERT_EQ(sqlite3_exec(db,
                         "INSERT OR REPLACE INTO chunks (artifact, idx, data) "
                         "VALUES (X'01', 2, 'older ternd');",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  store = StateStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().message();
  EXPECT_EQ((*(*store)->ChunkIndices(old_artifact)).size(), 3u);
  EXPECT_FALSE((*store)->FindChunkBySha256(Sha256("older ternd"))->has_value());
  EXPECT_TRUE((*store)->FindChunkBySha256(Sha256("new chunk"))->has_value());
}

TEST(StateStoreTest, RefusesGarbageAndNewerSchemasNamingThePath) {
  const std::string path = TempPath("garbage");
  std::ofstream(path) << std::string(4096, 'z');
  auto store = StateStore::Open(path);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(std::string(store.status().message()).find(path), std::string::npos)
      << store.status().message();

  const std::string newer = TempPath("newer");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(newer.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(db, "PRAGMA user_version=9;", nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);
  store = StateStore::Open(newer);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(std::string(store.status().message()).find("schema version 9"),
            std::string::npos);
}

TEST(StateStoreTest, KillDashNineLeavesAConsistentDatabase) {
  const std::string path = TempPath("kill");
  const TrustState base = SomeTrust();
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Writer: each round stores chunk i, then records sequence i.
    auto store = StateStore::Open(path);
    if (!store.ok()) ::_exit(1);
    TrustState t = base;
    for (uint64_t i = 1;; ++i) {
      if (!(*store)
               ->PutChunk(std::string(32, 'k'), i, std::string(512, 'd'))
               .ok()) {
        ::_exit(2);
      }
      t.highest_sequence = i;
      if (!(*store)->SaveTrust(t).ok()) ::_exit(3);
      if (i == 30) {
        char c = 1;
        if (::write(ready[1], &c, 1) != 1) ::_exit(4);
      }
    }
  }
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::usleep(20000);
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "writer exited early: " << status;

  auto store = StateStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().message();
  auto trust = (*store)->LoadTrust();
  ASSERT_TRUE(trust.ok() && trust->has_value()) << trust.status().message();
  auto chunks = (*store)->ChunkIndices(std::string(32, 'k'));
  ASSERT_TRUE(chunks.ok());
  const uint64_t seq = (**trust).highest_sequence;
  EXPECT_GE(seq, 30u);
  // Chunks 1..n with n == seq, or seq + 1 if killed between the two writes.
  ASSERT_FALSE(chunks->empty());
  EXPECT_EQ(chunks->front(), 1u);
  EXPECT_EQ(chunks->back(), chunks->size());
  EXPECT_TRUE(chunks->size() == seq || chunks->size() == seq + 1)
      << chunks->size() << " chunks, sequence " << seq;
  for (uint64_t i : {uint64_t{1}, seq}) {
    auto data = (*store)->GetChunk(std::string(32, 'k'), i);
    ASSERT_TRUE(data.ok() && data->has_value());
    EXPECT_EQ(**data, std::string(512, 'd'));
  }
}

long FileBytes(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<long>(st.st_size) : 0;
}

// The download connection's WAL is checkpointed on a background thread: a
// long run of chunk writes never grows the WAL past the writer's own
// checkpoint threshold (64 MiB) plus the transaction in flight, the
// background thread did the checkpoints, and another connection reads every
// chunk. Without checkpoints the WAL would reach the 100 MiB written.
TEST(StateStoreTest, ChunkWriterCheckpointsInTheBackgroundAndBoundsTheWal) {
  const std::string path = TempPath("checkpoint");
  auto writer = StateStore::Open(path);
  ASSERT_TRUE(writer.ok()) << writer.status().message();
  EXPECT_EQ((*writer)->background_checkpoints(), 0u);
  ASSERT_TRUE((*writer)->RelaxDurabilityForChunks().ok());
  const std::string artifact(32, 'a');
  const std::string chunk(1 << 20, 'c');
  long largest_wal = 0;
  for (uint64_t i = 0; i < 100; ++i) {
    std::string data = chunk;
    data[0] = static_cast<char>(i);
    ASSERT_TRUE((*writer)->PutChunk(artifact, i, data).ok()) << i;
    largest_wal = std::max(largest_wal, FileBytes(path + "-wal"));
  }
  EXPECT_LE(largest_wal, (64l << 20) + (4l << 20)) << "WAL bytes";
  EXPECT_GT((*writer)->background_checkpoints(), 0u);

  auto reader = StateStore::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status().message();
  auto indices = (*reader)->ChunkIndices(artifact);
  ASSERT_TRUE(indices.ok());
  EXPECT_EQ(indices->size(), 100u);
  for (uint64_t i : {uint64_t{0}, uint64_t{57}, uint64_t{99}}) {
    auto data = (*reader)->GetChunk(artifact, i);
    ASSERT_TRUE(data.ok() && data->has_value()) << i;
    ASSERT_EQ((*data)->size(), chunk.size());
    EXPECT_EQ((**data)[0], static_cast<char>(i));
  }
  reader->reset();
  writer->reset();
  // Closed: the last connection checkpointed and removed the WAL.
  EXPECT_EQ(FileBytes(path + "-wal"), 0);
  EXPECT_GE(FileBytes(path), 100l << 20);
}

}  // namespace
}  // namespace ternd::ota
