// ArtifactFetcher against the real nginx over loopback HTTPS (test CA),
// with a connection-cutting proxy for links that drop, a host process
// killed with SIGKILL mid-download, and a state database on a full tmpfs.
#include "ota/fetcher.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>

#include "base/file.h"
#include "ota/chunker.h"
#include "tests/support/cutting_proxy.h"
#include "tests/support/nginx_server.h"

namespace ternd::ota {
namespace {

using https_testing::AccessLogEntry;
using https_testing::CuttingProxy;
using https_testing::HttpsTestDir;
using https_testing::NginxOptions;
using https_testing::NginxServer;

constexpr uint64_t kChunk = 64 * 1024;

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(&s[i], &v, std::min<size_t>(8, n - i));
  }
  return s;
}

// An artifact as a release signs it. The model fields are only checked by
// staging; tests that stage fill them for real.
struct TestArtifact {
  std::string bytes;
  ArtifactSpec spec;
};

TestArtifact MakeArtifact(std::string bytes, uint64_t chunk = kChunk,
                          std::string model = "") {
  TestArtifact a;
  a.bytes = std::move(bytes);
  a.spec.artifact_sha256 = Sha256(a.bytes);
  a.spec.artifact_length = a.bytes.size();
  a.spec.model_sha256 = Sha256(model);
  a.spec.model_length = model.size();
  a.spec.chunk_size = chunk;
  for (uint64_t off = 0; off < a.bytes.size(); off += chunk) {
    a.spec.chunk_sha256.push_back(Sha256(a.bytes.substr(off, chunk)));
  }
  return a;
}

FetchJob JobFor(const TestArtifact& a, std::vector<std::string> urls) {
  FetchJob job;
  job.urls = std::move(urls);
  job.artifact = a.spec;
  return job;
}

// Chunks stored for the artifact, by index.
std::map<uint64_t, std::string> StoredChunks(const std::string& db,
                                             const ArtifactSpec& spec) {
  std::map<uint64_t, std::string> out;
  auto store = StateStore::Open(db);
  EXPECT_TRUE(store.ok()) << store.status().message();
  if (!store.ok()) return out;
  auto indices = (*store)->ChunkIndices(spec.artifact_sha256);
  EXPECT_TRUE(indices.ok());
  if (!indices.ok()) return out;
  for (uint64_t i : *indices) {
    auto c = (*store)->GetChunk(spec.artifact_sha256, i);
    EXPECT_TRUE(c.ok() && c->has_value());
    if (c.ok() && c->has_value()) out[i] = **c;
  }
  return out;
}

std::string StoredArtifact(const std::string& db, const ArtifactSpec& spec) {
  std::string all;
  for (auto& [i, c] : StoredChunks(db, spec)) all += c;
  return all;
}

struct FetchRun {
  Status status = Internal("the download did not finish in time");
  bool done_called = false;
  FetchReport report;
  std::vector<uint64_t> progress;
  std::vector<uint8_t> staged;  // FetchOptions::stage
};

// Runs one download on a fresh sd-event loop until it ends (or 120 s).
// `on_progress` may cancel or destroy the fetcher through the pointer.
FetchRun RunFetch(
    FetchJob job, FetchOptions options,
    std::function<void(std::unique_ptr<ArtifactFetcher>&, sd_event*)>
        on_first_progress = nullptr) {
  FetchRun run;
  sd_event* loop = nullptr;
  EXPECT_GE(sd_event_new(&loop), 0);
  std::unique_ptr<ArtifactFetcher> fetcher;
  bool first = true;
  auto started = ArtifactFetcher::Start(
      loop, std::move(job), std::move(options),
      [&](const FetchProgress& p) {
        run.progress.push_back(p.verified_bytes);
        if (first && on_first_progress && p.verified_bytes > 0) {
          first = false;
          on_first_progress(fetcher, loop);
        }
      },
      [&](const Status& s) {
        run.done_called = true;
        run.status = s;
        sd_event_exit(loop, 0);
      });
  if (!started.ok()) {
    run.status = started.status();
    sd_event_unref(loop);
    return run;
  }
  fetcher = std::move(started).value();
  sd_event_source* timeout = nullptr;
  sd_event_add_time_relative(
      loop, &timeout, CLOCK_MONOTONIC, 120 * 1000000ULL, 0,
      [](sd_event_source*, uint64_t, void* l) {
        return sd_event_exit(static_cast<sd_event*>(l), 0);
      },
      loop);
  sd_event_loop(loop);
  if (fetcher) {
    run.report = fetcher->report();
    run.staged = fetcher->TakeStagedModel();
  }
  fetcher.reset();
  sd_event_source_disable_unref(timeout);
  sd_event_unref(loop);
  return run;
}

std::string Msg(const Status& s) { return s.message(); }

class FetcherTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = new HttpsTestDir();
    setup_ = https_testing::MakeTestCertificates(certs_->path(), "dev1");
    if (!setup_.ok()) return;
    NginxOptions options;
    options.cert_dir = certs_->path();
    nginx_ = new NginxServer(options);
    setup_ = nginx_->Start();
  }
  static void TearDownTestSuite() {
    delete nginx_;
    nginx_ = nullptr;
    delete certs_;
    certs_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(setup_.ok())
        << setup_.message() << (nginx_ ? nginx_->ErrorLog() : "");
    name_ =
        std::string(
            ::testing::UnitTest::GetInstance()->current_test_info()->name()) +
        ".zst";
    db_ = work_.File("state.db");
  }

  FetchOptions Options() const {
    FetchOptions o;
    o.state_db = db_;
    o.ca_file = certs_->path() + "/ca.pem";
    o.retry_min_ms = 10;
    o.retry_max_ms = 100;
    o.connect_timeout_ms = 10000;
    o.low_speed_bytes_per_second = 1;
    o.low_speed_seconds = 30;
    return o;
  }

  static HttpsTestDir* certs_;
  static NginxServer* nginx_;
  static Status setup_;
  HttpsTestDir work_;
  std::string name_;
  std::string db_;
};

HttpsTestDir* FetcherTest::certs_ = nullptr;
NginxServer* FetcherTest::nginx_ = nullptr;
Status FetcherTest::setup_;

// Content-addressed artifacts (docs/ota.md, "Delta downloads"): one zstd
// frame per content-defined chunk of the model, as `ternctl sign
// --content-chunks` writes them.
TestArtifact ContentArtifact(const std::string& model) {
  TestArtifact a;
  uint64_t at = 0;
  const auto* p = reinterpret_cast<const uint8_t*>(model.data());
  for (const uint64_t len : ChunkLengths({p, model.size()}, ChunkLimits())) {
    std::string frame(ZSTD_compressBound(len), '\0');
    frame.resize(
        ZSTD_compress(frame.data(), frame.size(), model.data() + at, len, 3));
    a.spec.chunk_length.push_back(frame.size());
    a.spec.chunk_sha256.push_back(Sha256(frame));
    a.bytes += frame;
    at += len;
  }
  a.spec.artifact_sha256 = Sha256(a.bytes);
  a.spec.artifact_length = a.bytes.size();
  a.spec.model_sha256 = Sha256(model);
  a.spec.model_length = model.size();
  a.spec.chunk_size = 0;
  FinishArtifactSpec(&a.spec);
  return a;
}

// A model-like payload, and a second version of it with `n` bytes
// rewritten at each of `offsets` (a retrained layer).
std::string DeltaModel(size_t n, uint64_t seed) {
  std::string m = RandomBytes(n, seed);
  for (size_t i = 0; i < m.size(); i += 2) m[i] = 0;
  return m;
}
std::string Retrained(std::string m, std::vector<size_t> offsets, size_t n,
                      uint64_t seed) {
  const std::string fresh = RandomBytes(n, seed);
  for (const size_t off : offsets) m.replace(off, n, fresh);
  return m;
}

// The runs of `b`'s chunks whose hash `a` lacks, as Range values.
std::vector<std::string> MissingRuns(const ArtifactSpec& a,
                                     const ArtifactSpec& b,
                                     uint64_t* missing_bytes) {
  std::set<std::string> have(a.chunk_sha256.begin(), a.chunk_sha256.end());
  std::vector<std::string> runs;
  *missing_bytes = 0;
  for (size_t i = 0; i < b.chunk_sha256.size();) {
    if (have.count(b.chunk_sha256[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < b.chunk_sha256.size() && !have.count(b.chunk_sha256[j])) ++j;
    const uint64_t first = ChunkOffset(b, i), end = ChunkOffset(b, j);
    // A run to the end of the artifact is asked for as an open range.
    runs.push_back("bytes=" + std::to_string(first) + "-" +
                   (end == b.artifact_length ? "" : std::to_string(end - 1)));
    *missing_bytes += end - first;
    i = j;
  }
  return runs;
}

TEST_F(FetcherTest, DeltaDownloadsOnlyTheMissingRuns) {
  const std::string m1 = DeltaModel(2 << 20, 31);
  const std::string m2 = Retrained(m1, {400 << 10, 1400 << 10}, 96 << 10, 32);
  const TestArtifact v1 = ContentArtifact(m1);
  const TestArtifact v2 = ContentArtifact(m2);
  uint64_t missing = 0;
  const std::vector<std::string> runs = MissingRuns(v1.spec, v2.spec, &missing);
  ASSERT_EQ(runs.size(), 2u);
  ASSERT_LT(missing, v2.bytes.size() / 2);
  // Still one zstd stream: it decompresses to the model in one call.
  std::string whole(m2.size(), '\0');
  ASSERT_EQ(ZSTD_decompress(whole.data(), whole.size(), v2.bytes.data(),
                            v2.bytes.size()),
            m2.size());
  ASSERT_TRUE(whole == m2);
  const std::string name1 = "1-" + name_, name2 = "2-" + name_;
  ASSERT_TRUE(nginx_->PutFile("files", name1, v1.bytes).ok());
  ASSERT_TRUE(nginx_->PutFile("files", name2, v2.bytes).ok());

  // v1 on an empty store: one request without Range.
  FetchRun first =
      RunFetch(JobFor(v1, {nginx_->Url("files/" + name1)}), Options());
  ASSERT_TRUE(first.status.ok()) << Msg(first.status);
  EXPECT_EQ(first.report.chunks_deduplicated, 0u);
  ASSERT_TRUE(nginx_->WaitForRequests(1, name1));
  EXPECT_EQ(nginx_->AccessLog(name1)[0].range, "");

  // v2: the chunks v1 has are copied, each missing run asked for alone.
  FetchOptions o = Options();
  o.stage = true;
  FetchRun second = RunFetch(JobFor(v2, {nginx_->Url("files/" + name2)}), o);
  ASSERT_TRUE(second.status.ok()) << Msg(second.status);
  ASSERT_EQ(second.staged.size(), m2.size());
  EXPECT_EQ(0, std::memcmp(second.staged.data(), m2.data(), m2.size()));
  EXPECT_TRUE(StoredArtifact(db_, v2.spec) == v2.bytes);
  EXPECT_EQ(second.report.bytes_deduplicated, v2.bytes.size() - missing);
  EXPECT_EQ(second.report.bytes_received, missing);
  ASSERT_FALSE(second.progress.empty());
  EXPECT_EQ(second.progress.front(), 0u);  // reused bytes are not progress
  EXPECT_EQ(second.progress.back(), missing);
  ASSERT_TRUE(nginx_->WaitForRequests(runs.size(), name2));
  const std::vector<AccessLogEntry> log = nginx_->AccessLog(name2);
  ASSERT_EQ(log.size(), runs.size());
  uint64_t sent = 0;
  for (size_t k = 0; k < log.size(); ++k) {
    EXPECT_EQ(log[k].range, runs[k]);
    EXPECT_EQ(log[k].status, 206);
    EXPECT_TRUE(log[k].completed);
    sent += log[k].body_bytes_sent;
  }
  EXPECT_EQ(sent, missing);
  // v1's chunks are untouched: evicting v2 later would not break v1, and
  // the other way round (copies, not references).
  EXPECT_TRUE(StoredArtifact(db_, v1.spec) == v1.bytes);
}

TEST_F(FetcherTest, DeltaTakesTheWholeBodyWhenRangesAreIgnored) {
  const std::string m1 = DeltaModel(1 << 20, 33);
  const std::string m2 = Retrained(m1, {300 << 10, 700 << 10}, 64 << 10, 34);
  const TestArtifact v1 = ContentArtifact(m1);
  const TestArtifact v2 = ContentArtifact(m2);
  uint64_t missing = 0;
  ASSERT_EQ(MissingRuns(v1.spec, v2.spec, &missing).size(), 2u);
  const std::string name1 = "1-" + name_, name2 = "2-" + name_;
  ASSERT_TRUE(nginx_->PutFile("files", name1, v1.bytes).ok());
  ASSERT_TRUE(nginx_->PutFile("files", name2, v2.bytes).ok());
  ASSERT_TRUE(RunFetch(JobFor(v1, {nginx_->Url("files/" + name1)}), Options())
                  .status.ok());

  FetchRun run =
      RunFetch(JobFor(v2, {nginx_->Url("norange/" + name2)}), Options());
  ASSERT_TRUE(run.status.ok()) << Msg(run.status);
  EXPECT_TRUE(StoredArtifact(db_, v2.spec) == v2.bytes);
  EXPECT_EQ(run.report.range_ignored, 1u);
  EXPECT_EQ(run.report.bytes_deduplicated, v2.bytes.size() - missing);
  // One 200 carried every missing run: no second request.
  ASSERT_TRUE(nginx_->WaitForRequests(1, name2));
  const std::vector<AccessLogEntry> log = nginx_->AccessLog(name2);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].range.rfind("bytes=", 0), 0u);
  EXPECT_EQ(log[0].status, 200);
  EXPECT_EQ(log[0].body_bytes_sent, v2.bytes.size());
}

TEST_F(FetcherTest, DeltaRunCutMidwayResumesWithinTheRun) {
  const std::string m1 = DeltaModel(2 << 20, 35);
  // One long run (about 600 KiB of model), then a short one.
  const std::string m2a = Retrained(m1, {200 << 10}, 600 << 10, 36);
  const std::string m2 = Retrained(m2a, {1600 << 10}, 32 << 10, 37);
  const TestArtifact v1 = ContentArtifact(m1);
  const TestArtifact v2 = ContentArtifact(m2);
  uint64_t missing = 0;
  const std::vector<std::string> runs = MissingRuns(v1.spec, v2.spec, &missing);
  ASSERT_EQ(runs.size(), 2u);
  const std::string name1 = "1-" + name_, name2 = "2-" + name_;
  ASSERT_TRUE(nginx_->PutFile("files", name1, v1.bytes).ok());
  ASSERT_TRUE(nginx_->PutFile("files", name2, v2.bytes).ok());
  ASSERT_TRUE(RunFetch(JobFor(v1, {nginx_->Url("files/" + name1)}), Options())
                  .status.ok());

  // The first connection is cut 200 KiB into the first run's response.
  CuttingProxy proxy(nginx_->port(), {200 << 10});
  ASSERT_TRUE(proxy.Start().ok());
  const std::string url =
      "https://127.0.0.1:" + std::to_string(proxy.port()) + "/files/" + name2;
  FetchRun run = RunFetch(JobFor(v2, {url}), Options());
  ASSERT_TRUE(run.status.ok()) << Msg(run.status);
  EXPECT_TRUE(StoredArtifact(db_, v2.spec) == v2.bytes);
  EXPECT_EQ(proxy.cuts_done(), 1);
  ASSERT_TRUE(nginx_->WaitForRequests(3, name2));
  const std::vector<AccessLogEntry> log = nginx_->AccessLog(name2);
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[0].range, runs[0]);
  // The retry starts at a chunk of the first run past its start and ends
  // where the run ends; then the second run.
  const std::string run_end = runs[0].substr(runs[0].find('-'));
  const uint64_t run_start = std::stoull(runs[0].substr(6));
  ASSERT_EQ(log[1].range.rfind("bytes=", 0), 0u);
  const uint64_t resumed = std::stoull(log[1].range.substr(6));
  EXPECT_GT(resumed, run_start);
  EXPECT_EQ(log[1].range, "bytes=" + std::to_string(resumed) + run_end);
  EXPECT_EQ(log[1].status, 206);
  EXPECT_EQ(log[2].range, runs[1]);
  // Nothing received twice but what the cut left of a chunk.
  EXPECT_LT(run.report.bytes_received, missing + (256 << 10));
}

TEST_F(FetcherTest, DownloadsVerifiesAndStagesAnArtifact) {
  // A real zstd artifact of a model-like payload, odd-sized last chunk.
  std::string model = RandomBytes(1500 * 1000, 11);
  for (size_t i = 0; i < model.size(); i += 2) model[i] = 0;
  std::string compressed(ZSTD_compressBound(model.size()), '\0');
  compressed.resize(ZSTD_compress(compressed.data(), compressed.size(),
                                  model.data(), model.size(), 3));
  const TestArtifact a = MakeArtifact(compressed, kChunk, model);
  ASSERT_NE(a.bytes.size() % kChunk, 0u);
  ASSERT_TRUE(nginx_->PutFile("files", name_, a.bytes).ok());

  FetchRun run =
      RunFetch(JobFor(a, {nginx_->Url("files/" + name_)}), Options());
  ASSERT_TRUE(run.status.ok()) << Msg(run.status);
  ASSERT_FALSE(run.progress.empty());
  EXPECT_TRUE(std::is_sorted(run.progress.begin(), run.progress.end()));
  EXPECT_EQ(run.progress.back(), a.bytes.size());
  EXPECT_TRUE(StoredArtifact(db_, a.spec) == a.bytes);
  EXPECT_EQ(run.report.bytes_received, a.bytes.size());
  ASSERT_TRUE(nginx_->WaitForRequests(1, name_));
  std::vector<AccessLogEntry> log = nginx_->AccessLog(name_);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].status, 200);
  EXPECT_EQ(log[0].range, "");

  // Staging the stored artifact gives back the model.
  auto store = StateStore::Open(db_);
  ASSERT_TRUE(store.ok());
  std::vector<uint8_t> out(model.size());
  auto staged = StageArtifact(**store, a.spec, out);
  ASSERT_TRUE(staged.ok()) << Msg(staged.status());
  EXPECT_EQ(0, std::memcmp(out.data(), model.data(), model.size()));
  store->reset();

  // A second fetcher finds everything verified: no request at all.
  FetchRun again =
      RunFetch(JobFor(a, {nginx_->Url("files/" + name_)}), Options());
  ASSERT_TRUE(again.status.ok()) << Msg(again.status);
  EXPECT_EQ(again.report.chunks_reused, a.spec.chunk_sha256.size());
  EXPECT_TRUE(again.report.attempts.empty());
  EXPECT_EQ(nginx_->AccessLog(name_).size(), 1u);
}

// A zstd artifact of a model-like payload of `n` bytes.
TestArtifact ZstdArtifact(size_t n, uint64_t seed, std::string* model) {
  *model = RandomBytes(n, seed);
  for (size_t i = 0; i < model->size(); i += 2) (*model)[i] = 0;
  std::string compressed(ZSTD_compressBound(model->size()), '\0');
  compressed.resize(ZSTD_compress(compressed.data(), compressed.size(),
                                  model->data(), model->size(), 3));
  return MakeArtifact(compressed, kChunk, *model);
}

TEST_F(FetcherTest, StagesTheModelWhileDownloading) {
  std::string model;
  const TestArtifact a = ZstdArtifact(1500 * 1000, 12, &model);
  ASSERT_TRUE(nginx_->PutFile("files", name_, a.bytes).ok());
  FetchOptions o = Options();
  o.stage = true;
  FetchRun run = RunFetch(JobFor(a, {nginx_->Url("files/" + name_)}), o);
  ASSERT_TRUE(run.status.ok()) << Msg(run.status);
  ASSERT_EQ(run.staged.size(), model.size());
  EXPECT_EQ(0, std::memcmp(run.staged.data(), model.data(), model.size()));
  EXPECT_TRUE(StoredArtifact(db_, a.spec) == a.bytes);

  // Everything stored already (a restart after the download): the model
  // is staged from the stored chunks, which are checked again.
  FetchRun again = RunFetch(JobFor(a, {nginx_->Url("files/" + name_)}), o);
  ASSERT_TRUE(again.status.ok()) << Msg(again.status);
  EXPECT_EQ(again.report.chunks_reused, a.spec.chunk_sha256.size());
  ASSERT_EQ(again.staged.size(), model.size());
  EXPECT_EQ(0, std::memcmp(again.staged.data(), model.data(), model.size()));

  // Without `stage` nothing is staged.
  FetchRun plain =
      RunFetch(JobFor(a, {nginx_->Url("files/" + name_)}), Options());
  ASSERT_TRUE(plain.status.ok()) << Msg(plain.status);
  EXPECT_TRUE(plain.staged.empty());
}

TEST_F(FetcherTest, StagingWhileDownloadingRefusesABombAndAWrongModelHash) {
  std::string model;
  TestArtifact a = ZstdArtifact(1500 * 1000, 13, &model);
  ASSERT_TRUE(nginx_->PutFile("files", name_, a.bytes).ok());
  FetchOptions o = Options();
  o.stage = true;
  // Signed as 1000 bytes shorter than what the artifact decompresses to.
  TestArtifact bomb = a;
  bomb.spec.model_length = model.size() - 1000;
  FetchRun run = RunFetch(JobFor(bomb, {nginx_->Url("files/" + name_)}), o);
  EXPECT_EQ(run.status.code(), StatusCode::kDataLoss);
  EXPECT_NE(
      Msg(run.status).find("decompresses to more than the signed model length"),
      std::string::npos)
      << Msg(run.status);
  EXPECT_TRUE(run.staged.empty());
  // The chunks of an artifact that cannot be staged are worthless.
  EXPECT_TRUE(StoredChunks(db_, a.spec).empty());

  TestArtifact wrong = a;
  wrong.spec.model_sha256 = Sha256("another model");
  run = RunFetch(JobFor(wrong, {nginx_->Url("files/" + name_)}), o);
  EXPECT_EQ(run.status.code(), StatusCode::kDataLoss);
  EXPECT_NE(Msg(run.status).find("model has SHA-256"), std::string::npos)
      << Msg(run.status);
  EXPECT_TRUE(run.staged.empty());
}

TEST_F(FetcherTest, ResumesFromTheLastVerifiedChunkAfterCuts) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const TestArtifact a = MakeArtifact(RandomBytes(2 << 20, seed));
  ASSERT_TRUE(nginx_->PutFile("files", name_, a.bytes).ok());
  // Three cuts at random offsets; each leaves at least one whole chunk
  // behind it (TLS handshake, headers and a partial record fit in the
  // slack), and together they stay below the artifact's length.
  constexpr uint64_t kSlack = 32 * 1024;
  std::vector<uint64_t> cuts;
  for (int i = 0; i < 3; ++i) {
    cuts.push_back(std::uniform_int_distribution<uint64_t>(kChunk + kSlack + 1,
                                                           640 * 1024)(rng));
  }
  CuttingProxy proxy(nginx_->port(), cuts);
  ASSERT_TRUE(proxy.Start().ok());
  const std::string url =
      "https://127.0.0.1:" + std::to_string(proxy.port()) + "/files/" + name_;

  FetchRun run = RunFetch(JobFor(a, {url}), Options());
  ASSERT_TRUE(run.status.ok()) << Msg(run.status);
  EXPECT_TRUE(StoredArtifact(db_, a.spec) == a.bytes);
  EXPECT_EQ(proxy.cuts_done(), 3);

  ASSERT_TRUE(nginx_->WaitForRequests(4, name_));
  const std::vector<AccessLogEntry> log = nginx_->AccessLog(name_);
  ASSERT_EQ(log.size(), 4u);
  ASSERT_EQ(run.report.attempts.size(), 4u);
  EXPECT_EQ(log[0].range, "");
  uint64_t previous = 0;
  for (size_t k = 1; k < log.size(); ++k) {
    SCOPED_TRACE("request " + std::to_string(k) + " after a cut at " +
                 std::to_string(cuts[k - 1]));
    ASSERT_EQ(log[k].range.rfind("bytes=", 0), 0u) << log[k].range;
    const uint64_t start = std::stoull(log[k].range.substr(6));
    EXPECT_EQ(log[k].range, "bytes=" + std::to_string(start) + "-");
    EXPECT_EQ(log[k].status, 206);
    EXPECT_FALSE(log[k].if_range.empty());
    EXPECT_EQ(start % kChunk, 0u);
    // Where the verified bytes ended: everything whole that arrived
    // before the cut, never byte 0 again.
    EXPECT_GE(start, previous + (cuts[k - 1] - kSlack) / kChunk * kChunk);
    EXPECT_LE(start, previous + cuts[k - 1]);
    EXPECT_EQ(run.report.attempts[k].range_start, start);
    EXPECT_NE(std::find(run.progress.begin(), run.progress.end(), start),
              run.progress.end());
    previous = start;
  }
}

// docs/artifact-server.md's nginx location, as written there, in a real
// nginx: a download cut three times resumes with Range and If-Range (206
// answers), and caches are told they may keep the artifact.
TEST_F(FetcherTest, ArtifactServerRecipeFromTheDocs) {
  Result<std::vector<uint8_t>> doc =
      ReadFile(std::string(DOCS_DIR) + "/artifact-server.md", 1 << 20);
  ASSERT_TRUE(doc.ok()) << Msg(doc.status());
  const std::string text(doc->begin(), doc->end());
  const size_t open = text.find("```nginx\n");
  ASSERT_NE(open, std::string::npos);
  const size_t close = text.find("```", open + 9);
  std::string location = text.substr(open + 9, close - open - 9);
  const size_t at = location.find("/srv/ternd");
  ASSERT_NE(at, std::string::npos) << location;
  location.replace(at, 10, "@DOCROOT@");
  NginxOptions options;
  options.cert_dir = certs_->path();
  options.extra_server_config = location;
  NginxServer server(options);
  ASSERT_TRUE(server.Start().ok()) << server.ErrorLog();

  const TestArtifact a = MakeArtifact(RandomBytes(2 << 20, 31));
  std::filesystem::create_directories(server.directory() + "/root/models");
  ASSERT_TRUE(server.PutFile("models", name_, a.bytes).ok());
  CuttingProxy proxy(server.port(), {300 * 1024, 400 * 1024, 500 * 1024});
  ASSERT_TRUE(proxy.Start().ok());
  const std::string url =
      "https://127.0.0.1:" + std::to_string(proxy.port()) + "/models/" + name_;
  FetchRun run = RunFetch(JobFor(a, {url}), Options());
  ASSERT_TRUE(run.status.ok()) << Msg(run.status) << server.ErrorLog();
  EXPECT_TRUE(StoredArtifact(db_, a.spec) == a.bytes);
  ASSERT_TRUE(server.WaitForRequests(4, name_));
  const std::vector<AccessLogEntry> log = server.AccessLog(name_);
  ASSERT_EQ(log.size(), 4u);
  for (size_t k = 1; k < log.size(); ++k) {
    EXPECT_EQ(log[k].status, 206) << k;
    EXPECT_EQ(log[k].range.rfind("bytes=", 0), 0u) << log[k].range;
    EXPECT_FALSE(log[k].if_range.empty()) << k;  // the ETag went back
  }
  // The headers a cache sees.
  const std::string headers = work_.File("headers");
  const std::string cmd = "curl -sS -o /dev/null -D " + headers + " --cacert " +
                          certs_->path() + "/ca.pem " +
                          server.Url("models/" + name_);
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  Result<std::vector<uint8_t>> got = ReadFile(headers, 1 << 16);
  ASSERT_TRUE(got.ok());
  const std::string h(got->begin(), got->end());
  EXPECT_NE(h.find("Cache-Control: public, max-age=31536000, immutable"),
            std::string::npos)
      << h;
  EXPECT_NE(h.find("ETag: \""), std::string::npos) << h;
  EXPECT_NE(h.find("Accept-Ranges: bytes"), std::string::npos) << h;
}

TEST_F(FetcherTest, RestartsFromZeroWhenTheServerIgnoresRange) {
  const TestArtifact a = MakeArtifact(RandomBytes(1 << 20, 21));
  ASSERT_TRUE(nginx_->PutFile("files", name_, a.bytes).ok());
  CuttingProxy proxy(nginx_->port(), {400 * 1024});
  ASSERT_TRUE(proxy.Start().ok());
  const std::string url =
      "https://127.0.0.1:" + std::to_string(proxy.port()) + "/norange/" + name_;

  FetchRun run = RunFetch(JobFor(a, {url}), Options());
  ASSERT_TRUE(run.status.ok()) << Msg(run.status);
  EXPECT_TRUE(StoredArtifact(db_, a.spec) == a.bytes);
  EXPECT_EQ(run.report.range_ignored, 1u);
  ASSERT_TRUE(nginx_->WaitForRequests(2, name_));
  const std::vector<AccessLogEntry> log = nginx_->AccessLog(name_);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].range, "");
  EXPECT_NE(log[1].range, "");    // asked for a range...
  EXPECT_EQ(log[1].status, 200);  // ...and got the whole file
  EXPECT_EQ(log[1].body_bytes_sent, a.bytes.size());
}

TEST_F(FetcherTest, RejectsGarbageAndKeepsOnlyVerifiedChunks) {
  const TestArtifact a = MakeArtifact(RandomBytes(1 << 20, 31));
  std::string garbage = a.bytes;
  for (size_t i = 5 * kChunk; i < garbage.size(); i += 997) garbage[i] ^= 0x5a;
  ASSERT_TRUE(nginx_->PutFile("garbage", name_, garbage).ok());
  const std::string url = nginx_->Url("garbage/" + name_);
  FetchOptions options = Options();
  options.max_bad_responses_per_url = 2;

  FetchRun run = RunFetch(JobFor(a, {url}), options);
  ASSERT_FALSE(run.status.ok());
  EXPECT_EQ(run.status.code(), StatusCode::kDataLoss);
  const std::string msg = Msg(run.status);
  EXPECT_NE(msg.find(url + ": chunk 5 (bytes 327680-393215) has SHA-256 " +
                     Hex(Sha256(garbage.substr(5 * kChunk, kChunk)))),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("signed " + Hex(a.spec.chunk_sha256[5])),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("no longer used"), std::string::npos) << msg;

  // Only the good prefix is stored, each chunk exactly as signed.
  const auto stored = StoredChunks(db_, a.spec);
  ASSERT_EQ(stored.size(), 5u);
  for (const auto& [i, c] : stored) {
    EXPECT_TRUE(c == a.bytes.substr(i * kChunk, kChunk)) << "chunk " << i;
  }
  EXPECT_GE(run.report.chunks_rejected, 2u);
  ASSERT_TRUE(nginx_->WaitForRequests(2, name_));
  const std::vector<AccessLogEntry> log = nginx_->AccessLog(name_);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[1].range, "bytes=327680-");  // re-fetched from the bad chunk
}

TEST_F(FetcherTest, RefusesAResponseOfTheWrongLength) {
  const TestArtifact a = MakeArtifact(RandomBytes(300 * 1000, 41));
  ASSERT_TRUE(
      nginx_->PutFile("wronglen", name_, a.bytes + std::string(1000, 'x'))
          .ok());
  const std::string url = nginx_->Url("wronglen/" + name_);
  FetchRun run = RunFetch(JobFor(a, {url}), Options());
  ASSERT_FALSE(run.status.ok());
  EXPECT_NE(Msg(run.status)
                .find(url + ": Content-Length 301000, but the "
                            "signed artifact length is 300000"),
            std::string::npos)
      << Msg(run.status);
  EXPECT_EQ(run.report.bytes_received, 0u);
  EXPECT_TRUE(StoredChunks(db_, a.spec).empty());
  ASSERT_TRUE(nginx_->WaitForRequests(1, name_));
  EXPECT_EQ(nginx_->AccessLog(name_).size(), 1u);  // not retried
}

TEST_F(FetcherTest, RefusesAContentRangeOtherThanTheOneAsked) {
  // The first two chunks are stored already, so the request asks for
  // bytes=131072-; the file on this URL is 1000 bytes longer than signed,
  // so nginx answers 206 with Content-Range bytes 131072-300999/301000.
  const TestArtifact a = MakeArtifact(RandomBytes(300 * 1000, 43));
  {
    auto store = StateStore::Open(db_);
    ASSERT_TRUE(store.ok()) << Msg(store.status());
    for (uint64_t i = 0; i < 2; ++i) {
      ASSERT_TRUE((*store)
                      ->PutChunk(a.spec.artifact_sha256, i,
                                 a.bytes.substr(i * kChunk, kChunk))
                      .ok());
    }
  }
  ASSERT_TRUE(
      nginx_->PutFile("wronglen", name_, a.bytes + std::string(1000, 'x'))
          .ok());
  const std::string url = nginx_->Url("wronglen/" + name_);
  FetchRun run = RunFetch(JobFor(a, {url}), Options());
  ASSERT_FALSE(run.status.ok());
  EXPECT_EQ(run.status.code(), StatusCode::kDataLoss);
  EXPECT_NE(Msg(run.status)
                .find(url + ": HTTP 206 with a Content-Range 'bytes "
                            "131072-300999/301000' and Content-Length 169928; "
                            "expected bytes 131072-299999/300000 for Range: "
                            "bytes=131072-"),
            std::string::npos)
      << Msg(run.status);
  EXPECT_EQ(run.report.chunks_reused, 2u);
  EXPECT_EQ(run.report.bytes_received, 0u);
  EXPECT_EQ(StoredChunks(db_, a.spec).size(), 2u);
  ASSERT_TRUE(nginx_->WaitForRequests(1, name_));
  const std::vector<AccessLogEntry> log = nginx_->AccessLog(name_);
  ASSERT_EQ(log.size(), 1u);  // the URL is not used again
  EXPECT_EQ(log[0].range, "bytes=131072-");
  EXPECT_EQ(log[0].status, 206);
}

TEST_F(FetcherTest, StopsReadingEndlessDataAtTheSignedLength) {
  const TestArtifact a = MakeArtifact(RandomBytes(1 << 20, 51));
  const std::string endless = a.bytes + RandomBytes(16 << 20, 52);
  ASSERT_TRUE(nginx_->PutFile("endless", name_, endless).ok());
  FetchRun run =
      RunFetch(JobFor(a, {nginx_->Url("endless/" + name_)}), Options());
  // Everything signed arrived and verified; nothing beyond was accepted.
  ASSERT_TRUE(run.status.ok()) << Msg(run.status);
  EXPECT_TRUE(StoredArtifact(db_, a.spec) == a.bytes);
  EXPECT_EQ(run.report.over_length_aborts, 1u);
  EXPECT_EQ(run.report.bytes_received, a.bytes.size());
  ASSERT_EQ(run.report.attempts.size(), 1u);
  EXPECT_NE(run.report.attempts[0].error.find(
                "goes on past the signed artifact length 1048576"),
            std::string::npos)
      << run.report.attempts[0].error;
  ASSERT_TRUE(nginx_->WaitForRequests(1, name_));
  const std::vector<AccessLogEntry> log = nginx_->AccessLog(name_);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_FALSE(log[0].completed);
  EXPECT_LT(log[0].body_bytes_sent, endless.size() / 2);
}

TEST_F(FetcherTest, RefusesAServerCertificateFromAnotherCa) {
  NginxOptions other;
  other.cert_dir = certs_->path();
  other.server_cert = "other-server";
  NginxServer impostor(other);
  ASSERT_TRUE(impostor.Start().ok()) << impostor.ErrorLog();
  const TestArtifact a = MakeArtifact(RandomBytes(100 * 1000, 61));
  ASSERT_TRUE(impostor.PutFile("files", name_, a.bytes).ok());
  FetchOptions options = Options();
  options.max_failures = 2;
  const std::string url = impostor.Url("files/" + name_);

  FetchRun run = RunFetch(JobFor(a, {url}), options);
  ASSERT_FALSE(run.status.ok());
  const std::string msg = Msg(run.status);
  EXPECT_NE(msg.find("gave up after 2 attempts"), std::string::npos) << msg;
  EXPECT_NE(msg.find(url + ": SSL certificate problem"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("curl error 60"), std::string::npos) << msg;
  EXPECT_TRUE(StoredChunks(db_, a.spec).empty());
  EXPECT_TRUE(impostor.AccessLog().empty());  // no request was ever sent
}

TEST_F(FetcherTest, FallsBackToTheNextMirror) {
  const TestArtifact a = MakeArtifact(RandomBytes(200 * 1000, 71));
  ASSERT_TRUE(nginx_->PutFile("files", name_, a.bytes).ok());
  const std::string missing = nginx_->Url("files/missing-" + name_);
  const std::string good = nginx_->Url("files/" + name_);
  FetchRun run = RunFetch(JobFor(a, {missing, good}), Options());
  ASSERT_TRUE(run.status.ok()) << Msg(run.status);
  EXPECT_TRUE(StoredArtifact(db_, a.spec) == a.bytes);
  ASSERT_EQ(run.report.attempts.size(), 2u);
  EXPECT_EQ(run.report.attempts[0].url, missing);
  EXPECT_EQ(run.report.attempts[0].http_status, 404);
  EXPECT_NE(run.report.attempts[0].error.find(missing + ": HTTP status 404"),
            std::string::npos)
      << run.report.attempts[0].error;
  EXPECT_EQ(run.report.attempts[1].url, good);
}

TEST_F(FetcherTest, RefusesPlainHttpAndInconsistentJobs) {
  const TestArtifact a = MakeArtifact(RandomBytes(1000, 81));
  FetchRun run = RunFetch(JobFor(a, {"http://127.0.0.1:1/a.zst"}), Options());
  EXPECT_EQ(run.status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(Msg(run.status).find("'http://127.0.0.1:1/a.zst' is not https://"),
            std::string::npos)
      << Msg(run.status);
  EXPECT_FALSE(run.done_called);

  FetchJob job = JobFor(a, {nginx_->Url("files/x")});
  job.artifact.chunk_sha256.push_back(Sha256("extra"));
  run = RunFetch(job, Options());
  EXPECT_EQ(run.status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(Msg(run.status).find("chunk hashes"), std::string::npos);
}

TEST_F(FetcherTest, KeepsUrlTokensOutOfErrors) {
  const TestArtifact a = MakeArtifact(RandomBytes(1000, 82));
  FetchOptions options = Options();
  options.max_failures = 1;
  const std::string url = nginx_->Url("files/missing-" + name_);
  FetchRun run = RunFetch(JobFor(a, {url + "?token=s3cret"}), options);
  ASSERT_FALSE(run.status.ok());
  EXPECT_NE(Msg(run.status).find(url + "?<redacted>: HTTP status 404"),
            std::string::npos)
      << Msg(run.status);
  EXPECT_EQ(Msg(run.status).find("s3cret"), std::string::npos);
  ASSERT_EQ(run.report.attempts.size(), 1u);
  EXPECT_EQ(run.report.attempts[0].url.find("s3cret"), std::string::npos);
}

TEST_F(FetcherTest, CancelStopsAndAnotherFetcherResumes) {
  const TestArtifact a = MakeArtifact(RandomBytes(2 << 20, 91));
  ASSERT_TRUE(nginx_->PutFile("files", name_, a.bytes).ok());
  FetchOptions slow = Options();
  slow.max_bytes_per_second = 1 << 20;
  slow.max_queued_bytes = kChunk;
  const std::string url = nginx_->Url("files/" + name_);
  // Cancel at the first verified chunk, then let the loop idle a moment:
  // no completion may arrive.
  FetchRun run =
      RunFetch(JobFor(a, {url}), slow,
               [](std::unique_ptr<ArtifactFetcher>& f, sd_event* loop) {
                 f->Cancel();
                 sd_event_source* s = nullptr;
                 sd_event_add_time_relative(
                     loop, &s, CLOCK_MONOTONIC, 300 * 1000, 0,
                     [](sd_event_source* src, uint64_t, void*) {
                       sd_event_exit(sd_event_source_get_event(src), 0);
                       sd_event_source_disable_unref(src);
                       return 0;
                     },
                     nullptr);
               });
  EXPECT_FALSE(run.done_called);
  const auto stored = StoredChunks(db_, a.spec);
  ASSERT_FALSE(stored.empty());
  ASSERT_LT(stored.size(), a.spec.chunk_sha256.size());

  // Destroyed from inside its own progress callback: clean.
  FetchRun destroyed =
      RunFetch(JobFor(a, {url}), slow,
               [](std::unique_ptr<ArtifactFetcher>& f, sd_event* loop) {
                 f.reset();
                 sd_event_exit(loop, 0);
               });
  EXPECT_FALSE(destroyed.done_called);

  FetchRun resumed = RunFetch(JobFor(a, {url}), Options());
  ASSERT_TRUE(resumed.status.ok()) << Msg(resumed.status);
  EXPECT_TRUE(StoredArtifact(db_, a.spec) == a.bytes);
  EXPECT_GE(resumed.report.chunks_reused, stored.size());
  ASSERT_FALSE(resumed.report.attempts.empty());
  EXPECT_GT(resumed.report.attempts[0].range_start, 0u);
}

// The host program, killed with SIGKILL mid-download, then run again.
struct HostRun {
  pid_t pid = -1;
  FILE* out = nullptr;
};

HostRun SpawnHost(const std::vector<std::string>& args) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  HostRun h;
  h.pid = fork();
  if (h.pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv;
    for (const std::string& a : args)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  h.out = fdopen(fds[0], "r");
  return h;
}

TEST_F(FetcherTest, ResumesAfterTheProcessIsKilled) {
  const TestArtifact a = MakeArtifact(RandomBytes(3 << 20, 101));
  ASSERT_TRUE(nginx_->PutFile("files", name_, a.bytes).ok());
  Release release;
  // nginx sends at 1 MiB/s: the client's own limit (below) is curl's
  // average over the last seconds, which lets the first ones burst.
  release.add_urls(nginx_->Url("slow/" + name_));
  release.set_artifact_sha256(a.spec.artifact_sha256);
  release.set_artifact_length(a.spec.artifact_length);
  release.set_model_sha256(a.spec.model_sha256);
  release.set_chunk_size(a.spec.chunk_size);
  for (const std::string& h : a.spec.chunk_sha256) release.add_chunk_sha256(h);
  const std::string release_path = work_.File("release.pb");
  const std::string pb = release.SerializeAsString();
  ASSERT_TRUE(WriteFileAtomically(
                  release_path,
                  {reinterpret_cast<const uint8_t*>(pb.data()), pb.size()})
                  .ok());
  const std::string ca = certs_->path() + "/ca.pem";

  // Killed once a few chunks are verified.
  HostRun first = SpawnHost({OTA_FETCH_HOST, db_, ca, release_path, "1048576"});
  ASSERT_NE(first.out, nullptr);
  char line[256];
  uint64_t verified = 0;
  while (verified < 4 * kChunk && std::fgets(line, sizeof line, first.out)) {
    unsigned long long v = 0, t = 0;
    if (std::sscanf(line, "progress %llu %llu", &v, &t) == 2) verified = v;
  }
  ASSERT_GE(verified, 4 * kChunk) << "the host ended early: " << line;
  kill(first.pid, SIGKILL);
  int status = 0;
  waitpid(first.pid, &status, 0);
  fclose(first.out);
  ASSERT_TRUE(WIFSIGNALED(status));

  // What survived: a prefix of verified chunks.
  const auto stored = StoredChunks(db_, a.spec);
  uint64_t prefix = 0;
  while (stored.count(prefix)) ++prefix;
  ASSERT_GE(prefix * kChunk, verified);
  ASSERT_LT(prefix, a.spec.chunk_sha256.size());

  HostRun second = SpawnHost({OTA_FETCH_HOST, db_, ca, release_path});
  std::string last;
  while (std::fgets(line, sizeof line, second.out)) last = line;
  waitpid(second.pid, &status, 0);
  fclose(second.out);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << last;
  EXPECT_EQ(last, "done\n");
  EXPECT_TRUE(StoredArtifact(db_, a.spec) == a.bytes);

  ASSERT_TRUE(nginx_->WaitForRequests(2, name_));
  const std::vector<AccessLogEntry> log = nginx_->AccessLog(name_);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].range, "");
  EXPECT_EQ(log[1].range, "bytes=" + std::to_string(prefix * kChunk) + "-");
  EXPECT_EQ(log[1].status, 206);
  // The validator from the first run's response survived the kill.
  EXPECT_FALSE(log[1].if_range.empty());
}

TEST_F(FetcherTest, FailsCleanlyWhenTheDiskIsFull) {
  const std::string mnt = work_.File("small");
  std::filesystem::create_directories(mnt);
  if (mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=3m,mode=0700") != 0) {
    GTEST_SKIP() << "cannot mount a small tmpfs at " << mnt << ": "
                 << std::strerror(errno)
                 << " (needs root / CAP_SYS_ADMIN); disk-full path untested";
  }
  struct Unmount {
    std::string path;
    ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
  } unmount{mnt};
  const std::string db = mnt + "/state.db";

  // Old content: a complete earlier artifact.
  const TestArtifact old = MakeArtifact(RandomBytes(256 * 1024, 111));
  {
    auto store = StateStore::Open(db);
    ASSERT_TRUE(store.ok()) << Msg(store.status());
    for (uint64_t i = 0; i < old.spec.chunk_sha256.size(); ++i) {
      ASSERT_TRUE((*store)
                      ->PutChunk(old.spec.artifact_sha256, i,
                                 old.bytes.substr(i * kChunk, kChunk))
                      .ok());
    }
  }
  const TestArtifact a = MakeArtifact(RandomBytes(4 << 20, 112));
  ASSERT_TRUE(nginx_->PutFile("files", name_, a.bytes).ok());
  FetchOptions options = Options();
  options.state_db = db;
  FetchRun run = RunFetch(JobFor(a, {nginx_->Url("files/" + name_)}), options);
  ASSERT_FALSE(run.status.ok());
  EXPECT_EQ(run.status.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(Msg(run.status).find(db + ": cannot store chunk"),
            std::string::npos)
      << Msg(run.status);
  EXPECT_NE(Msg(run.status).find("full"), std::string::npos) << Msg(run.status);

  // The database is intact: old content readable, integrity check passes,
  // and whatever of the new artifact was stored is verified.
  EXPECT_TRUE(StoredArtifact(db, old.spec) == old.bytes);
  for (const auto& [i, c] : StoredChunks(db, a.spec)) {
    EXPECT_TRUE(c == a.bytes.substr(i * kChunk, kChunk)) << "chunk " << i;
  }
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open_v2(db.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr),
            SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(raw, "PRAGMA integrity_check;", -1, &q, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(q), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(q, 0)), "ok");
  sqlite3_finalize(q);
  sqlite3_close(raw);
}

}  // namespace
}  // namespace ternd::ota
