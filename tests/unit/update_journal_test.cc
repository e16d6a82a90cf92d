// The update journal on real SQLite files: state round trips, activation
// and rollback as single transactions, crash detection, and sharing the
// database file with the state store.
#include "ota/update_journal.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "ota/signing.h"
#include "ota/state_store.h"

// Every fsync/fdatasync SQLite makes in this binary is counted (the
// executable's definitions interpose on libc's for the shared SQLite).
std::atomic<int> g_flushes{0};

extern "C" int fsync(int fd) {
  static auto real = reinterpret_cast<int (*)(int)>(dlsym(RTLD_NEXT, "fsync"));
  ++g_flushes;
  return real(fd);
}

extern "C" int fdatasync(int fd) {
  static auto real =
      reinterpret_cast<int (*)(int)>(dlsym(RTLD_NEXT, "fdatasync"));
  ++g_flushes;
  return real(fd);
}

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

InstalledModel Model(uint64_t version) {
  InstalledModel m;
  m.release_envelope = "release-" + std::to_string(version);
  m.model_name = "digits";
  m.model_version = version;
  m.artifact_sha256 = std::string(32, static_cast<char>(version));
  return m;
}

UpdateRecord Record(UpdateState state, uint64_t version) {
  UpdateRecord r;
  r.state = state;
  r.model_name = "digits";
  r.model_version = version;
  r.rollout_id = "r" + std::to_string(version);
  return r;
}

TEST(UpdateJournalTest, EmptyJournalIsIdleWithNothingInstalled) {
  auto j = UpdateJournal::Open(TempPath("empty"));
  ASSERT_TRUE(j.ok()) << j.status().message();
  Result<UpdateRecord> r = (*j)->LoadUpdate();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, UpdateState::kIdle);
  EXPECT_FALSE((*j)->Active()->has_value());
  EXPECT_FALSE((*j)->Previous()->has_value());
  EXPECT_FALSE((*j)->LoadProbation()->active);
}

TEST(UpdateJournalTest, RecordSurvivesReopen) {
  const std::string path = TempPath("reopen");
  UpdateRecord r = Record(UpdateState::kDownloading, 3);
  r.bytes_done = 1000;
  r.bytes_total = 5000;
  r.release_envelope = std::string("\0\1\2binary", 9);
  {
    auto j = UpdateJournal::Open(path);
    ASSERT_TRUE(j.ok());
    ASSERT_TRUE((*j)->SaveUpdate(r).ok());
  }
  auto j = UpdateJournal::Open(path);
  ASSERT_TRUE(j.ok());
  Result<UpdateRecord> back = (*j)->LoadUpdate();
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->state, UpdateState::kDownloading);
  EXPECT_EQ(back->bytes_done, 1000u);
  EXPECT_EQ(back->bytes_total, 5000u);
  EXPECT_EQ(back->release_envelope, r.release_envelope);
  EXPECT_EQ(back->rollout_id, "r3");
  EXPECT_GT(back->updated_at, 0);
}

// Shadow validation's state (code 11) is written and read back like the
// others: a restart while validating resumes the update.
TEST(UpdateJournalTest, ValidatingStateSurvivesReopen) {
  const std::string path = TempPath("validating");
  {
    auto j = UpdateJournal::Open(path);
    ASSERT_TRUE(j.ok());
    ASSERT_TRUE((*j)->SaveUpdate(Record(UpdateState::kValidating, 4)).ok());
  }
  auto j = UpdateJournal::Open(path);
  ASSERT_TRUE(j.ok());
  Result<UpdateRecord> back = (*j)->LoadUpdate();
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->state, UpdateState::kValidating);
  EXPECT_EQ(static_cast<int>(back->state), 11);
  EXPECT_STREQ(UpdateStateName(back->state), "validating");
}

TEST(UpdateJournalTest, ProgressIsSavedWithoutWaitingForTheDisk) {
  const std::string path = TempPath("progress");
  UpdateRecord r = Record(UpdateState::kDownloading, 4);
  {
    auto j = UpdateJournal::Open(path);
    ASSERT_TRUE(j.ok());
    g_flushes = 0;
    ASSERT_TRUE((*j)->SaveUpdate(r).ok());
    EXPECT_GE(g_flushes.load(), 1) << "a state change is flushed";
    r.bytes_done = 2048;
    g_flushes = 0;
    ASSERT_TRUE((*j)->SaveProgress(r).ok());
    EXPECT_EQ(g_flushes.load(), 0) << "progress must not wait for the disk";
    r.state = UpdateState::kVerifying;
    g_flushes = 0;
    ASSERT_TRUE((*j)->SaveUpdate(r).ok());
    EXPECT_GE(g_flushes.load(), 1) << "FULL again after SaveProgress";
  }
  auto j = UpdateJournal::Open(path);
  ASSERT_TRUE(j.ok());
  Result<UpdateRecord> back = (*j)->LoadUpdate();
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->state, UpdateState::kVerifying);
  EXPECT_EQ(back->bytes_done, 2048u);
}

TEST(UpdateJournalTest, ActivateKeepsThePreviousAndStartsProbation) {
  auto j = UpdateJournal::Open(TempPath("activate"));
  ASSERT_TRUE(j.ok());
  ASSERT_TRUE((*j)->Activate(Model(2), Record(UpdateState::kActive, 2)).ok());
  EXPECT_EQ((*j)->Active()->value().model_version, 2u);
  EXPECT_FALSE((*j)->Previous()->has_value());
  ASSERT_TRUE((*j)->Activate(Model(3), Record(UpdateState::kActive, 3)).ok());
  EXPECT_EQ((*j)->Active()->value().model_version, 3u);
  EXPECT_EQ((*j)->Previous()->value().model_version, 2u);
  EXPECT_EQ((*j)->Previous()->value().artifact_sha256, std::string(32, 2));
  Result<Probation> p = (*j)->LoadProbation();
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->active);
  EXPECT_EQ(p->model_version, 3u);
  EXPECT_EQ(p->unclean_starts, 0u);
  EXPECT_EQ((*j)->LoadUpdate()->state, UpdateState::kActive);
}

TEST(UpdateJournalTest, RollBackRestoresThePreviousOnce) {
  auto j = UpdateJournal::Open(TempPath("rollback"));
  ASSERT_TRUE(j.ok());
  ASSERT_TRUE((*j)->Activate(Model(2), Record(UpdateState::kActive, 2)).ok());
  ASSERT_TRUE((*j)->Activate(Model(3), Record(UpdateState::kActive, 3)).ok());
  UpdateRecord rb = Record(UpdateState::kRolledBack, 3);
  rb.reason = "crashed 2 times in probation";
  ASSERT_TRUE((*j)->RollBack(rb).ok());
  EXPECT_EQ((*j)->Active()->value().model_version, 2u);
  // There is no second rollback target: two bad models cannot loop.
  EXPECT_FALSE((*j)->Previous()->has_value());
  EXPECT_FALSE((*j)->LoadProbation()->active);
  Result<UpdateRecord> r = (*j)->LoadUpdate();
  EXPECT_EQ(r->state, UpdateState::kRolledBack);
  EXPECT_EQ(r->reason, "crashed 2 times in probation");
  // Rolling back again leaves nothing installed: the configured model.
  ASSERT_TRUE((*j)->RollBack(rb).ok());
  EXPECT_FALSE((*j)->Active()->has_value());
}

TEST(UpdateJournalTest, RollBackRemembersTheModelItLeft) {
  const std::string path = TempPath("rolledback");
  {
    auto j = UpdateJournal::Open(path);
    ASSERT_TRUE(j.ok());
    ASSERT_TRUE((*j)->Activate(Model(2), Record(UpdateState::kActive, 2)).ok());
    ASSERT_TRUE((*j)->Activate(Model(3), Record(UpdateState::kActive, 3)).ok());
    UpdateRecord r = Record(UpdateState::kRolledBack, 3);
    r.reason = "crashed twice";
    ASSERT_TRUE((*j)->RollBack(r).ok());
  }
  auto j = UpdateJournal::Open(path);
  ASSERT_TRUE(j.ok());
  Result<std::vector<RolledBackModel>> list = (*j)->RolledBack();
  ASSERT_TRUE(list.ok()) << list.status().message();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].model_name, "digits");
  EXPECT_EQ((*list)[0].model_version, 3u);
  EXPECT_EQ((*list)[0].artifact_sha256, Model(3).artifact_sha256);
  EXPECT_EQ((*list)[0].reason, "crashed twice");
  EXPECT_GT((*list)[0].rolled_back_at, 0);
  EXPECT_EQ((*j)->Active()->value().model_version, 2u);
}

// A state database written before the rolled-back list and the envelope
// hash existed opens, keeps its record and gains both.
TEST(UpdateJournalTest, OlderDatabaseIsUpgradedInPlace) {
  const std::string path = TempPath("upgrade");
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    const char* old_schema =
        "CREATE TABLE update_record (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "state INTEGER NOT NULL, reason TEXT NOT NULL, release BLOB NOT NULL, "
        "model_name TEXT NOT NULL, model_version INTEGER NOT NULL, rollout_id "
        "TEXT NOT NULL, bytes_done INTEGER NOT NULL, bytes_total INTEGER NOT "
        "NULL, updated_at INTEGER NOT NULL);"
        "INSERT INTO update_record VALUES (1, 7, '', x'0102', 'digits', 4, "
        "'r4', 10, 10, 1700000000);";
    char* error = nullptr;
    ASSERT_EQ(sqlite3_exec(db, old_schema, nullptr, nullptr, &error), SQLITE_OK)
        << error;
    sqlite3_close(db);
  }
  auto j = UpdateJournal::Open(path);
  ASSERT_TRUE(j.ok()) << j.status().message();
  Result<UpdateRecord> r = (*j)->LoadUpdate();
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->state, UpdateState::kActive);
  EXPECT_EQ(r->model_version, 4u);
  EXPECT_EQ(r->release_envelope, std::string("\1\2"));
  EXPECT_EQ(r->envelope_sha256, Sha256(std::string("\1\2")));
  Result<std::vector<RolledBackModel>> list = (*j)->RolledBack();
  ASSERT_TRUE(list.ok()) << list.status().message();
  EXPECT_TRUE(list->empty());
  // Saving and reopening works on the upgraded table.
  UpdateRecord next = Record(UpdateState::kReceived, 5);
  next.envelope_sha256 = std::string(32, 'h');
  ASSERT_TRUE((*j)->SaveUpdate(next).ok());
  j->reset();
  j = UpdateJournal::Open(path);
  ASSERT_TRUE(j.ok()) << j.status().message();
  EXPECT_EQ((*j)->LoadUpdate()->envelope_sha256, std::string(32, 'h'));
}

// A refused release was stored whole before: the upgrade keeps its hash
// and drops its bytes.
TEST(UpdateJournalTest, UpgradeDropsTheBytesOfARefusedRelease) {
  const std::string path = TempPath("upgrade-refused");
  const std::string junk(100000, 'j');
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    const char* old_schema =
        "CREATE TABLE update_record (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "state INTEGER NOT NULL, reason TEXT NOT NULL, release BLOB NOT NULL, "
        "model_name TEXT NOT NULL, model_version INTEGER NOT NULL, rollout_id "
        "TEXT NOT NULL, bytes_done INTEGER NOT NULL, bytes_total INTEGER NOT "
        "NULL, updated_at INTEGER NOT NULL);";
    char* error = nullptr;
    ASSERT_EQ(sqlite3_exec(db, old_schema, nullptr, nullptr, &error), SQLITE_OK)
        << error;
    sqlite3_stmt* q = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db,
                                 "INSERT INTO update_record VALUES (1, 2, "
                                 "'malformed: ...', ?, '', 0, '', 0, 0, 1);",
                                 -1, &q, nullptr),
              SQLITE_OK);
    sqlite3_bind_blob(q, 1, junk.data(), static_cast<int>(junk.size()),
                      SQLITE_TRANSIENT);
    ASSERT_EQ(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
    sqlite3_close(db);
  }
  auto j = UpdateJournal::Open(path);
  ASSERT_TRUE(j.ok()) << j.status().message();
  Result<UpdateRecord> r = (*j)->LoadUpdate();
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->state, UpdateState::kRejected);
  EXPECT_TRUE(r->release_envelope.empty());
  EXPECT_EQ(r->envelope_sha256, Sha256(junk));
}

TEST(UpdateJournalTest, BeginRunDetectsAnUncleanEnd) {
  const std::string path = TempPath("runs");
  {
    auto j = UpdateJournal::Open(path);
    EXPECT_TRUE((*j)->BeginRun().value());  // first run ever
    ASSERT_TRUE((*j)->EndRun().ok());
    EXPECT_TRUE((*j)->BeginRun().value());
  }
  // A run killed with SIGKILL never reaches EndRun.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto j = UpdateJournal::Open(path);
    if (!j.ok() || !(*j)->EndRun().ok()) _exit(1);
    if (!(*j)->BeginRun().ok()) _exit(1);
    ::kill(::getpid(), SIGKILL);
    _exit(2);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  auto j = UpdateJournal::Open(path);
  ASSERT_TRUE(j.ok());
  EXPECT_FALSE((*j)->BeginRun().value());
}

TEST(UpdateJournalTest, SharesTheDatabaseWithTheStateStore) {
  const std::string path = TempPath("shared");
  auto store = StateStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().message();
  auto j = UpdateJournal::Open(path);
  ASSERT_TRUE(j.ok()) << j.status().message();
  ASSERT_TRUE((*store)->PutChunk(std::string(32, 'a'), 0, "bytes").ok());
  ASSERT_TRUE((*j)->SaveUpdate(Record(UpdateState::kStaged, 4)).ok());
  EXPECT_EQ((*store)->GetChunk(std::string(32, 'a'), 0)->value(), "bytes");
  EXPECT_EQ((*j)->LoadUpdate()->state, UpdateState::kStaged);
  // A store opened after the journal still accepts the database.
  auto again = StateStore::Open(path);
  EXPECT_TRUE(again.ok()) << again.status().message();
}

TEST(UpdateJournalTest, UnknownStateCodeIsReportedNotGuessed) {
  const std::string path = TempPath("badcode");
  {
    auto j = UpdateJournal::Open(path);
    ASSERT_TRUE((*j)->SaveUpdate(Record(UpdateState::kActive, 1)).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE update_record SET state = 42;", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto j = UpdateJournal::Open(path);
  Result<UpdateRecord> r = (*j)->LoadUpdate();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("state code 42"),
            std::string::npos);
}

TEST(UpdateJournalTest, StateNamesAreStable) {
  EXPECT_STREQ(UpdateStateName(UpdateState::kRolledBack), "rolled_back");
  EXPECT_STREQ(UpdateStateName(UpdateState::kDownloading), "downloading");
  EXPECT_EQ(static_cast<int>(UpdateState::kRolledBack), 9);
}

}  // namespace
}  // namespace ternd::ota
