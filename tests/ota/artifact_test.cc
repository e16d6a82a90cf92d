// Staging: stored chunks -> zstd -> the caller's buffer, with the signed
// lengths and hashes checked; on real SQLite files and real zstd frames.
#include "ota/artifact.h"

#include <gtest/gtest.h>
#include <systemd/sd-event.h>
#include <unistd.h>
#include <zstd.h>

#include <cstdio>
#include <random>
#include <thread>

namespace ternd::ota {
namespace {

std::string TempDb(const std::string& name) {
  std::string p = ::testing::TempDir() + "/" + name + "." +
                  std::to_string(::getpid()) + ".db";
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::remove((p + suffix).c_str());
  }
  return p;
}

// A model-like payload: compressible but not trivial.
std::string SomeModel(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string m(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    m[i] = static_cast<char>((rng() % 7 == 0) ? rng() : (i / 64) & 0xff);
  }
  return m;
}

std::string Compress(const std::string& data, int level = 3) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  const size_t n =
      ZSTD_compress(out.data(), out.size(), data.data(), data.size(), level);
  EXPECT_FALSE(ZSTD_isError(n)) << ZSTD_getErrorName(n);
  out.resize(n);
  return out;
}

// The spec a release would sign for `artifact` holding `model`.
ArtifactSpec SpecFor(const std::string& artifact, const std::string& model,
                     uint64_t chunk_size) {
  ArtifactSpec spec;
  spec.artifact_sha256 = Sha256(artifact);
  spec.artifact_length = artifact.size();
  spec.model_sha256 = Sha256(model);
  spec.model_length = model.size();
  spec.chunk_size = chunk_size;
  for (uint64_t off = 0; off < artifact.size(); off += chunk_size) {
    spec.chunk_sha256.push_back(Sha256(artifact.substr(off, chunk_size)));
  }
  return spec;
}

void StoreChunks(StateStore& store, const ArtifactSpec& spec,
                 const std::string& artifact) {
  for (uint64_t i = 0; i < spec.chunk_sha256.size(); ++i) {
    ASSERT_TRUE(
        store
            .PutChunk(spec.artifact_sha256, i,
                      artifact.substr(i * spec.chunk_size, spec.chunk_size))
            .ok());
  }
}

constexpr size_t kGuard = 4096;
constexpr uint8_t kGuardByte = 0xA5;

bool GuardIntact(const std::vector<uint8_t>& buf, size_t from) {
  for (size_t i = from; i < buf.size(); ++i) {
    if (buf[i] != kGuardByte) return false;
  }
  return true;
}

class ArtifactTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ =
        TempDb(::testing::UnitTest::GetInstance()->current_test_info()->name());
    auto s = StateStore::Open(path_);
    ASSERT_TRUE(s.ok()) << s.status().message();
    store_ = std::move(s).value();
  }
  void TearDown() override {
    store_.reset();
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::remove((path_ + suffix).c_str());
    }
  }
  std::string path_;
  std::unique_ptr<StateStore> store_;
};

TEST_F(ArtifactTest, StagesTheModelIntoTheBufferAndNothingBeyond) {
  const std::string model = SomeModel(700 * 1000 + 17, 1);
  const std::string artifact = Compress(model);
  const ArtifactSpec spec = SpecFor(artifact, model, 4096);
  ASSERT_GT(spec.chunk_sha256.size(), 2u);
  StoreChunks(*store_, spec, artifact);

  std::vector<uint8_t> out(model.size() + kGuard, kGuardByte);
  auto n = StageArtifact(*store_, spec, out);
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(*n, model.size());
  EXPECT_EQ(0, std::memcmp(out.data(), model.data(), model.size()));
  EXPECT_TRUE(GuardIntact(out, model.size()));
  EXPECT_TRUE(VerifyStoredArtifact(*store_, spec).ok());
}

TEST_F(ArtifactTest, RefusesADecompressionBombAtTheSignedLength) {
  // 64 MiB of zeros compress to a few KiB; the release claims 1 MiB.
  const std::string huge(64 << 20, '\0');
  const std::string artifact = Compress(huge, 3);
  ASSERT_LT(artifact.size(), 64u * 1024);
  const std::string claimed(1 << 20, '\0');
  const ArtifactSpec spec = SpecFor(artifact, claimed, 1024);
  StoreChunks(*store_, spec, artifact);

  std::vector<uint8_t> out(claimed.size() + kGuard, kGuardByte);
  auto n = StageArtifact(*store_, spec, out);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(std::string(n.status().message())
                .find("more than the signed model length 1048576"),
            std::string::npos)
      << n.status().message();
  EXPECT_TRUE(GuardIntact(out, claimed.size()));
}

TEST_F(ArtifactTest, RefusesAModelWhoseHashIsNotTheSignedOne) {
  const std::string model = SomeModel(100 * 1000, 2);
  const std::string artifact = Compress(model);
  ArtifactSpec spec = SpecFor(artifact, model, 8192);
  std::string other = model;
  other[5000] ^= 1;
  spec.model_sha256 = Sha256(other);  // signed for a different model
  StoreChunks(*store_, spec, artifact);

  std::vector<uint8_t> out(model.size());
  auto n = StageArtifact(*store_, spec, out);
  ASSERT_FALSE(n.ok());
  const std::string msg = n.status().message();
  EXPECT_NE(msg.find("model has SHA-256 " + Hex(Sha256(model))),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("signed " + Hex(spec.model_sha256)), std::string::npos)
      << msg;
}

TEST_F(ArtifactTest, RefusesAModelShorterThanSigned) {
  const std::string model = SomeModel(50 * 1000, 3);
  const std::string artifact = Compress(model);
  ArtifactSpec spec = SpecFor(artifact, model, 8192);
  spec.model_length = model.size() + 10;
  StoreChunks(*store_, spec, artifact);
  std::vector<uint8_t> out(spec.model_length);
  auto n = StageArtifact(*store_, spec, out);
  ASSERT_FALSE(n.ok());
  EXPECT_NE(std::string(n.status().message())
                .find("the model is 50000 bytes, signed 50010"),
            std::string::npos)
      << n.status().message();
}

TEST_F(ArtifactTest, RefusesATruncatedFrame) {
  const std::string model = SomeModel(200 * 1000, 4);
  const std::string full = Compress(model);
  const std::string artifact = full.substr(0, full.size() / 2);
  const ArtifactSpec spec = SpecFor(artifact, model, 4096);
  StoreChunks(*store_, spec, artifact);
  std::vector<uint8_t> out(model.size());
  auto n = StageArtifact(*store_, spec, out);
  ASSERT_FALSE(n.ok());
  EXPECT_NE(std::string(n.status().message()).find("ends inside a zstd frame"),
            std::string::npos)
      << n.status().message();
}

TEST_F(ArtifactTest, RefusesACorruptedStoredChunkBeforeDecompressingIt) {
  const std::string model = SomeModel(100 * 1000, 5);
  const std::string artifact = Compress(model);
  const ArtifactSpec spec = SpecFor(artifact, model, 4096);
  StoreChunks(*store_, spec, artifact);
  std::string bad = artifact.substr(4096, 4096);
  bad[100] ^= 0x40;
  ASSERT_TRUE(store_->PutChunk(spec.artifact_sha256, 1, bad).ok());
  std::vector<uint8_t> out(model.size());
  auto n = StageArtifact(*store_, spec, out);
  ASSERT_FALSE(n.ok());
  const std::string msg = n.status().message();
  EXPECT_NE(
      msg.find("stored chunk 1 (offset 4096) has SHA-256 " + Hex(Sha256(bad))),
      std::string::npos)
      << msg;
  EXPECT_NE(msg.find(path_), std::string::npos) << msg;
  EXPECT_EQ(VerifyStoredArtifact(*store_, spec).code(), StatusCode::kDataLoss);
}

TEST_F(ArtifactTest, RefusesAMissingChunkAndAnArtifactHashMismatch) {
  const std::string model = SomeModel(60 * 1000, 6);
  const std::string artifact = Compress(model);
  ArtifactSpec spec = SpecFor(artifact, model, 4096);
  StoreChunks(*store_, spec, artifact);
  ASSERT_TRUE(store_->DeleteChunk(spec.artifact_sha256, 0).ok());
  std::vector<uint8_t> out(model.size());
  auto n = StageArtifact(*store_, spec, out);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), StatusCode::kNotFound);
  EXPECT_NE(std::string(n.status().message())
                .find("chunk 0 (offset 0) is not "
                      "stored"),
            std::string::npos)
      << n.status().message();

  // Chunk hashes that match but an artifact hash that does not.
  StoreChunks(*store_, spec, artifact);
  spec.artifact_sha256 = Sha256("something else");
  StoreChunks(*store_, spec, artifact);
  const Status s = VerifyStoredArtifact(*store_, spec);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(std::string(s.message()).find("disagree"), std::string::npos)
      << s.message();
}

TEST_F(ArtifactTest, RefusesInconsistentSpecs) {
  const std::string model = SomeModel(10 * 1000, 7);
  const std::string artifact = Compress(model);
  ArtifactSpec spec = SpecFor(artifact, model, 1024);
  spec.chunk_sha256.pop_back();
  const Status s = CheckArtifactSpec(spec);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("chunk hashes"), std::string::npos);
  std::vector<uint8_t> small(model.size() - 1);
  spec = SpecFor(artifact, model, 1024);
  auto n = StageArtifact(*store_, spec, small);
  EXPECT_EQ(n.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ArtifactTest, ChecksContentAddressedSpecs) {
  ArtifactSpec spec;
  spec.artifact_sha256 = Sha256("artifact");
  spec.model_sha256 = Sha256("model");
  spec.artifact_length = 100;
  spec.chunk_length = {40, 35, 25};
  spec.chunk_sha256 = {Sha256("a"), Sha256("b"), Sha256("c")};
  FinishArtifactSpec(&spec);
  ASSERT_TRUE(CheckArtifactSpec(spec).ok())
      << CheckArtifactSpec(spec).message();
  EXPECT_EQ(ChunkOffset(spec, 0), 0u);
  EXPECT_EQ(ChunkOffset(spec, 2), 75u);
  EXPECT_EQ(ChunkOffset(spec, 3), 100u);
  EXPECT_EQ(ChunkLength(spec, 1), 35u);
  EXPECT_EQ(ChunkAt(spec, 0), 0u);
  EXPECT_EQ(ChunkAt(spec, 39), 0u);
  EXPECT_EQ(ChunkAt(spec, 40), 1u);
  EXPECT_EQ(ChunkAt(spec, 99), 2u);

  auto fails = [](ArtifactSpec s, const char* expected) {
    FinishArtifactSpec(&s);
    const Status st = CheckArtifactSpec(s);
    EXPECT_FALSE(st.ok()) << expected;
    EXPECT_NE(std::string(st.message()).find(expected), std::string::npos)
        << st.message();
  };
  ArtifactSpec bad = spec;
  bad.artifact_length = 101;
  fails(bad, "sum to 100, expected the artifact length 101");
  bad = spec;
  bad.artifact_length = 90;
  fails(bad, "reach past the artifact length 90 at chunk_length[2]");
  bad = spec;
  bad.chunk_sha256.pop_back();
  fails(bad, "3 chunk lengths but 2 chunk hashes");
  bad = spec;
  bad.chunk_length = {40, 0, 35, 25};
  bad.chunk_sha256.push_back(Sha256("d"));
  fails(bad, "chunk_length[1] is 0");
  bad = spec;
  bad.chunk_size = 64;
  fails(bad, "chunk_size is 64 but chunk_length lists 3 chunks");
  // A length so large the sum would wrap around.
  bad = spec;
  bad.chunk_length = {40, UINT64_MAX - 10, 25};
  fails(bad, "reach past the artifact length 100 at chunk_length[1]");

  // From a release, as the device reads it.
  Release r;
  r.set_artifact_sha256(spec.artifact_sha256);
  r.set_model_sha256(spec.model_sha256);
  r.set_artifact_length(100);
  for (uint64_t len : spec.chunk_length) r.add_chunk_length(len);
  for (const auto& h : spec.chunk_sha256) r.add_chunk_sha256(h);
  const ArtifactSpec from = ArtifactSpecFromRelease(r);
  EXPECT_TRUE(CheckArtifactSpec(from).ok());
  EXPECT_EQ(ChunkOffset(from, 2), 75u);
}

TEST_F(ArtifactTest, WorkerStagesOffTheLoopThreadAndReportsOnIt) {
  const std::string model = SomeModel(300 * 1000, 8);
  const std::string artifact = Compress(model);
  const ArtifactSpec spec = SpecFor(artifact, model, 16384);
  StoreChunks(*store_, spec, artifact);

  sd_event* loop = nullptr;
  ASSERT_GE(sd_event_new(&loop), 0);
  auto worker = ArtifactWorker::Start(loop, path_);
  ASSERT_TRUE(worker.ok()) << worker.status().message();
  std::vector<uint8_t> out(model.size());
  const std::thread::id loop_thread = std::this_thread::get_id();
  std::thread::id work_thread, done_thread;
  Result<uint64_t> staged = Internal("not run");
  (*worker)->Post(
      [&](Result<StateStore*> store) {
        work_thread = std::this_thread::get_id();
        ASSERT_TRUE(store.ok()) << store.status().message();
        staged = StageArtifact(**store, spec, out);
      },
      [&] {
        done_thread = std::this_thread::get_id();
        sd_event_exit(loop, 0);
      });
  ASSERT_GE(sd_event_loop(loop), 0);
  EXPECT_NE(work_thread, loop_thread);
  EXPECT_EQ(done_thread, loop_thread);
  ASSERT_TRUE(staged.ok()) << staged.status().message();
  EXPECT_EQ(0, std::memcmp(out.data(), model.data(), model.size()));
  worker->reset();
  sd_event_unref(loop);
}

TEST_F(ArtifactTest, DownloadValidatorsPersistAndGoWithTheArtifact) {
  const std::string a = Sha256("a");
  ASSERT_TRUE(store_->PutChunk(a, 0, "x").ok());
  ASSERT_TRUE(store_->PutDownloadValidator(a, "https://m1/a", "\"abc\"").ok());
  store_.reset();
  auto reopened = StateStore::Open(path_);
  ASSERT_TRUE(reopened.ok());
  store_ = std::move(reopened).value();
  auto v = store_->GetDownloadValidator(a, "https://m1/a");
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(v->has_value());
  EXPECT_EQ(**v, "\"abc\"");
  auto none = store_->GetDownloadValidator(a, "https://m2/a");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(store_->DeleteArtifact(a).ok());
  v = store_->GetDownloadValidator(a, "https://m1/a");
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->has_value());
  auto idx = store_->ChunkIndices(a);
  ASSERT_TRUE(idx.ok());
  EXPECT_TRUE(idx->empty());
}

}  // namespace
}  // namespace ternd::ota
