// `ternctl infer|info|health|stats` against the real daemon.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "tests/daemon/daemon_process.h"
#include "tests/daemon/daemon_test_models.h"

namespace ternd::daemon_testing {
namespace {

using ::testing::HasSubstr;

struct Output {
  int status;
  std::string text;
};

Output Ternctl(const std::string& args) {
  const std::string cmd = std::string(TERNCTL_PATH) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) text.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text};
}

class TernctlDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(WriteTestModel(FastModel(), dir_.File("model.tern")).ok());
    WriteText(dir_.File("ternd.toml"),
              "[server]\nsocket = \"" + dir_.File("t.sock") +
                  "\"\n[runtime]\nmodel = \"" + dir_.File("model.tern") +
                  "\"\nworkers = 1\n");
    DaemonOptions o;
    o.directory = dir_.path();
    o.config_path = dir_.File("ternd.toml");
    daemon_ = std::make_unique<DaemonProcess>(o);
    ASSERT_TRUE(daemon_->WaitForNotify("READY=1")) << daemon_->Log();
    socket_ = " --socket " + dir_.File("t.sock");
  }

  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::string socket_;
};

std::string Values(int rows) {
  std::string v;
  for (int i = 0; i < rows * 16; ++i)
    v += std::to_string((i % 7) * 0.25 - 0.5) + " ";
  return v;
}

TEST_F(TernctlDaemonTest, InferPrintsOutputsAsTextAndJson) {
  Output text = Ternctl("infer" + socket_ + " --values " + Values(2));
  ASSERT_EQ(text.status, 0) << text.text;
  EXPECT_THAT(text.text, HasSubstr("probs (F32, 2 x 4)"));
  EXPECT_THAT(text.text, HasSubstr("class (I32, 2 x 1)"));
  Output json = Ternctl("infer" + socket_ + " --json --output class --values " +
                        Values(1));
  ASSERT_EQ(json.status, 0) << json.text;
  EXPECT_THAT(
      json.text,
      HasSubstr(
          "{\"model\":\"testnet\",\"version\":1,\"outputs\":{\"class\":[["));
  EXPECT_THAT(json.text, ::testing::Not(HasSubstr("probs")));
}

TEST_F(TernctlDaemonTest, InferReadsAFileOrStdinAndMatchesRun) {
  WriteText(dir_.File("in.txt"),
            "# two rows\n" + Values(1) + "\n" + Values(1) + "\n");
  Output from_file =
      Ternctl("infer" + socket_ + " --json -i " + dir_.File("in.txt"));
  ASSERT_EQ(from_file.status, 0) << from_file.text;
  Output from_stdin =
      Ternctl("infer" + socket_ + " --json < " + dir_.File("in.txt"));
  ASSERT_EQ(from_stdin.status, 0) << from_stdin.text;
  // Same outputs as the in-process `ternctl run`, apart from the timings.
  Output run = Ternctl("run " + dir_.File("model.tern") + " --json -i " +
                       dir_.File("in.txt"));
  ASSERT_EQ(run.status, 0) << run.text;
  const std::string outputs = run.text.substr(0, run.text.rfind("}}"));
  EXPECT_THAT(from_file.text,
              HasSubstr(outputs.substr(outputs.find("\"outputs\""))));
  EXPECT_EQ(from_file.text.substr(0, from_file.text.find("queue_us")),
            from_stdin.text.substr(0, from_stdin.text.find("queue_us")));
}

TEST_F(TernctlDaemonTest, InferRejectsBadInput) {
  Output wrong = Ternctl("infer" + socket_ + " --values 1 2 3");
  EXPECT_EQ(wrong.status, 1);
  EXPECT_THAT(wrong.text, HasSubstr("rows of 16 values"));
  Output nan = Ternctl("infer" + socket_ + " --values abc");
  EXPECT_EQ(nan.status, 1);
  EXPECT_THAT(nan.text, HasSubstr("not a finite number"));
}

TEST_F(TernctlDaemonTest, InfoHealthStats) {
  Output info = Ternctl("info" + socket_);
  ASSERT_EQ(info.status, 0) << info.text;
  EXPECT_THAT(info.text, HasSubstr("model        testnet"));
  EXPECT_THAT(info.text, HasSubstr("input        x F32 [16]"));
  EXPECT_THAT(Ternctl("info --json" + socket_).text,
              HasSubstr("\"name\":\"testnet\""));

  Output health = Ternctl("health" + socket_);
  EXPECT_EQ(health.status, 0);
  EXPECT_THAT(health.text, HasSubstr("live yes, ready yes (serving)"));

  ASSERT_EQ(Ternctl("infer" + socket_ + " --values " + Values(3)).status, 0);
  Output stats = Ternctl("stats --json" + socket_);
  ASSERT_EQ(stats.status, 0);
  EXPECT_THAT(stats.text, HasSubstr("\"inferences_total\":3"));
  Output prom = Ternctl("stats --prometheus" + socket_);
  EXPECT_THAT(prom.text, HasSubstr("ternd_inferences_total 3"));
  EXPECT_THAT(prom.text, HasSubstr("ternd_requests_total{call=\"infer\","
                                   "status=\"OK\"} 1"));
  EXPECT_THAT(prom.text, HasSubstr("ternd_model_info{name=\"testnet\""));
  EXPECT_THAT(stats.text, HasSubstr("\"metrics\":{"));
  EXPECT_THAT(
      prom.text,
      HasSubstr("ternd_request_latency_microseconds{quantile=\"0.99\"}"));
}

TEST_F(TernctlDaemonTest, NoDaemonIsAClearError) {
  daemon_->Signal(SIGTERM);
  ASSERT_EQ(daemon_->WaitExit(), 0);
  Output health = Ternctl("health" + socket_);
  EXPECT_EQ(health.status, 1);
  EXPECT_THAT(health.text, HasSubstr("UNAVAILABLE: cannot connect to ternd"));
}

}  // namespace
}  // namespace ternd::daemon_testing
