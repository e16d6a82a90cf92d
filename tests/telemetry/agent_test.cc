// The agent without a broker (no MQTT session: an offline device): batches
// are made on the interval timer into the outbox, the boot epoch moves on
// every start, the textfile is kept current, and bad options are refused.
#include "telemetry/agent.h"

#include <gtest/gtest.h>
#include <systemd/sd-event.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "tests/telemetry/temp_dir.h"

namespace ternd::telemetry {
namespace {

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_GE(sd_event_new(&loop_), 0); }
  void TearDown() override { sd_event_unref(loop_); }

  TelemetryOptions Options() {
    TelemetryOptions o;
    o.interval = std::chrono::milliseconds(20);
    o.textfile_path = dir_ / "ternd.prom";
    return o;
  }
  DeviceIdentity Identity() {
    DeviceIdentity id;
    id.device_id = "offline-1";
    return id;
  }
  // Runs the loop until `done` or 30 s.
  bool RunUntil(const std::function<bool()>& done) {
    const auto end =
        std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!done()) {
      if (std::chrono::steady_clock::now() > end) return false;
      if (sd_event_run(loop_, 100 * 1000) < 0) return false;
    }
    return true;
  }

  sd_event* loop_ = nullptr;
  testing::TempDir dir_;
};

TEST_F(AgentTest, OfflineBatchesAccumulateInTheOutbox) {
  Registry registry;
  Counter* c = registry.AddCounter("ternd_requests_total", "r", "requests",
                                   {{"call", "infer"}, {"status", "OK"}});
  c->Add(5);
  auto agent = TelemetryAgent::Create(loop_, nullptr, &registry, dir_.path(),
                                      Identity(), Options());
  ASSERT_TRUE(agent.ok()) << agent.status().message();
  EXPECT_EQ((*agent)->boot_epoch(), 1u);
  EXPECT_EQ((*agent)->telemetry_topic(),
            "ternd/v1/default/devices/offline-1/telemetry");
  ASSERT_TRUE(RunUntil([&] { return (*agent)->outbox().rows() >= 3; }));
  EXPECT_EQ((*agent)->last_sequence(), (*agent)->outbox().rows());
  // Flush makes one more at once.
  const uint64_t before = (*agent)->last_sequence();
  ASSERT_TRUE((*agent)->Flush().ok());
  EXPECT_EQ((*agent)->last_sequence(), before + 1);

  auto box = Outbox::Open(dir_ / "telemetry.db", OutboxLimits{});
  ASSERT_TRUE(box.ok());
  auto rows = (*box)->ReadAfter(0, 100);
  ASSERT_TRUE(rows.ok());
  BatchCodec codec;
  uint64_t seq = 0;
  for (const OutboxRow& row : *rows) {
    auto b = codec.Decode(row.payload);
    ASSERT_TRUE(b.ok()) << b.status().message();
    EXPECT_EQ(b->sequence(), ++seq);
    EXPECT_EQ(b->boot_epoch(), 1u);
    EXPECT_EQ(b->device_id(), "offline-1");
  }
  std::ifstream f(dir_ / "ternd.prom");
  std::stringstream text;
  text << f.rdbuf();
  EXPECT_NE(
      text.str().find("ternd_requests_total{call=\"infer\",status=\"OK\"} 5"),
      std::string::npos)
      << text.str();
  EXPECT_NE(text.str().find("ternd_telemetry_outbox_rows"), std::string::npos);
  EXPECT_NE((*agent)->PrometheusText().find(
                "# TYPE ternd_telemetry_batches_total counter"),
            std::string::npos);
  EXPECT_NE((*agent)->JsonText().find("\"ternd_telemetry_boot_epoch\":1"),
            std::string::npos);
  agent->reset();

  // The next start is the next epoch; the queue is still there.
  Registry again;
  auto second = TelemetryAgent::Create(loop_, nullptr, &again, dir_.path(),
                                       Identity(), Options());
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->boot_epoch(), 2u);
  EXPECT_EQ((*second)->outbox().rows(), seq);
}

TEST(NextBatchDueTest, AFixedGridThatSkipsWhatWasMissed) {
  EXPECT_EQ(NextBatchDue(0, 100, 1000), 1100u);     // the first: now + 1
  EXPECT_EQ(NextBatchDue(1100, 100, 1130), 1200u);  // late batch: no drift
  EXPECT_EQ(NextBatchDue(1200, 100, 1200), 1300u);
  // Blocked past two due times: the next point of the grid after now.
  EXPECT_EQ(NextBatchDue(1300, 100, 1555), 1600u);
  EXPECT_EQ(NextBatchDue(1300, 100, 1500), 1600u);
}

// N intervals take N x interval: a batch's own time and the timer's
// wake-up slack are not added to every interval.
TEST_F(AgentTest, BatchesKeepToTheIntervalWithoutDrift) {
  Registry registry;
  TelemetryOptions o = Options();
  o.interval = std::chrono::milliseconds(50);
  auto agent = TelemetryAgent::Create(loop_, nullptr, &registry, dir_.path(),
                                      Identity(), o);
  ASSERT_TRUE(agent.ok()) << agent.status().message();
  ASSERT_TRUE(RunUntil([&] { return (*agent)->last_sequence() >= 1; }));
  const auto first = std::chrono::steady_clock::now();
  ASSERT_TRUE(RunUntil([&] { return (*agent)->last_sequence() >= 21; }));
  const double elapsed_ms = std::chrono::duration<double, std::milli>(
                                std::chrono::steady_clock::now() - first)
                                .count();
  // 20 intervals: 1000 ms, plus late wake-ups that do not add up. Drifting
  // batches took 2090 ms here (each interval 50 ms plus the timer's slack
  // and the batch's own time); the bound leaves room for a loaded machine
  // (a late last wake-up, slow fsyncs) and still catches that.
  EXPECT_GE(elapsed_ms, 995);
  EXPECT_LT(elapsed_ms, 1000 + 400) << "the batches drift";
}

TEST_F(AgentTest, ACleanStopMakesALastBatch) {
  Registry registry;
  TelemetryOptions o = Options();
  o.interval = std::chrono::hours(1);  // no batch on the timer in this test
  auto agent = TelemetryAgent::Create(loop_, nullptr, &registry, dir_.path(),
                                      Identity(), o);
  ASSERT_TRUE(agent.ok()) << agent.status().message();
  EXPECT_EQ((*agent)->last_sequence(), 0u);
  (*agent)->Shutdown();
  EXPECT_EQ((*agent)->last_sequence(), 1u);
  EXPECT_EQ((*agent)->outbox().rows(), 1u);  // kept for the next run
}

TEST_F(AgentTest, BadOptionsAreRefusedWithTheirName) {
  Registry registry;
  DeviceIdentity nobody;
  auto a = TelemetryAgent::Create(loop_, nullptr, &registry, dir_.path(),
                                  nobody, Options());
  ASSERT_FALSE(a.ok());
  EXPECT_NE(std::string(a.status().message()).find("device id"),
            std::string::npos);
  TelemetryOptions zero = Options();
  zero.interval = std::chrono::milliseconds(0);
  auto b = TelemetryAgent::Create(loop_, nullptr, &registry, dir_.path(),
                                  Identity(), zero);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(std::string(b.status().message()).find("interval"),
            std::string::npos);
  auto c = TelemetryAgent::Create(loop_, nullptr, &registry,
                                  dir_ / "no/such/dir", Identity(), Options());
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find("no/such/dir"),
            std::string::npos);
}

}  // namespace
}  // namespace ternd::telemetry
