// `ternctl infer|info|health|stats` against the real daemon.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/daemon/daemon_process.h"
#include "tests/daemon/daemon_test_models.h"

namespace ternd::daemon_testing {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

struct Output {
  int status;
  std::string text;
};

// `with_stderr` false: stdout only (what a program reading --json gets).
Output Ternctl(const std::string& args, bool with_stderr = true) {
  const std::string cmd =
      std::string(TERNCTL_PATH) + " " + args + (with_stderr ? " 2>&1" : "");
  FILE* p = popen(cmd.c_str(), "r");
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) text.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text};
}

// Runs a --json command: exit 0 and one JSON object on stdout.
Json TernctlJson(const std::string& args) {
  Output out = Ternctl(args, /*with_stderr=*/false);
  EXPECT_EQ(out.status, 0) << args << "\n" << out.text;
  Json j = Json::parse(out.text, nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(j.is_object()) << args << "\n" << out.text;
  return j.is_object() ? j : Json::object();
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
  const Json j =
      TernctlJson("infer" + socket_ + " --json --values " + Values(2));
  EXPECT_EQ(j.value("model", ""), "testnet");
  EXPECT_EQ(j.value("version", 0), 1);
  ASSERT_EQ(j["outputs"]["probs"].size(), 2u);
  double sum = 0;
  for (const Json& p : j["outputs"]["probs"][0]) sum += p.get<double>();
  EXPECT_NEAR(sum, 1.0, 1e-4);
  ASSERT_EQ(j["outputs"]["class"].size(), 2u);
  EXPECT_TRUE(j["outputs"]["class"][1][0].is_number_integer());
  EXPECT_TRUE(j["queue_us"].is_number_unsigned());
  EXPECT_TRUE(j["compute_us"].is_number_unsigned());
}

TEST_F(TernctlDaemonTest, InferJsonOfNonFiniteOutputsParses) {
  // Finite inputs near the float maximum overflow the model's sums to inf;
  // softmax of them is nan. The text output shows them as they are.
  std::string huge;
  for (int i = 0; i < 16; ++i) huge += (i % 2 ? "-3e38 " : "3e38 ");
  Output text = Ternctl("infer" + socket_ + " --values " + huge);
  ASSERT_EQ(text.status, 0) << text.text;
  EXPECT_THAT(text.text, HasSubstr("nan"));
  const Json j = TernctlJson("infer" + socket_ + " --json --values " + huge);
  ASSERT_EQ(j["outputs"]["probs"].size(), 1u);
  ASSERT_EQ(j["outputs"]["probs"][0].size(), 4u);
  for (const Json& p : j["outputs"]["probs"][0]) {
    EXPECT_TRUE(p.is_null()) << j.dump();
  }
  EXPECT_TRUE(j["outputs"]["class"][0][0].is_number_integer()) << j.dump();
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
  const Json ran = Json::parse(run.text, nullptr, false);
  const Json inferred = Json::parse(from_file.text, nullptr, false);
  ASSERT_TRUE(ran.is_object()) << run.text;
  ASSERT_TRUE(inferred.is_object()) << from_file.text;
  EXPECT_EQ(inferred["outputs"], ran["outputs"]);
  EXPECT_EQ(ran["outputs"]["probs"].size(), 2u);
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
  const Json i = TernctlJson("info --json" + socket_);
  EXPECT_EQ(i.value("name", ""), "testnet");
  EXPECT_EQ(i.value("version", 0), 1);
  EXPECT_EQ(i["inputs"],
            Json::parse(R"([{"name":"x","dtype":"F32","features":16}])"));
  EXPECT_EQ(i["outputs"], Json::parse(R"([
      {"name":"probs","dtype":"F32","features":4},
      {"name":"class","dtype":"I32","features":1}])"));
  EXPECT_EQ(i.value("max_batch", 0), 16);
  EXPECT_EQ(i.value("workers", 0), 1);
  EXPECT_FALSE(i.value("kernel", "").empty());
  EXPECT_GT(i.value("arena_bytes", uint64_t{0}), 0u);
  // Each ternary matrix with its variant and weight layout, in JSON and as
  // one "ternary" line of the text output.
  const Json& matrices = i["ternary_matrices"];
  ASSERT_TRUE(matrices.is_array());
  ASSERT_FALSE(matrices.empty());
  size_t lines = 0;
  for (size_t at = 0;
       (at = info.text.find("\nternary      op ", at)) != std::string::npos;
       ++at) {
    ++lines;
  }
  EXPECT_EQ(lines, matrices.size()) << info.text;
  for (const Json& m : matrices) {
    const std::string kernel = m.value("kernel", "");
    const bool tq1 =
        kernel.size() > 4 && kernel.compare(kernel.size() - 4, 4, "-1.6") == 0;
    EXPECT_EQ(m.value("layout", ""), tq1 ? "1.6bit" : "2bit") << m.dump();
    EXPECT_GT(m.value("rows", 0), 0) << m.dump();
    EXPECT_GT(m.value("cols", 0), 0) << m.dump();
    EXPECT_GT(m.value("packed_bytes", uint64_t{0}), 0u) << m.dump();
    EXPECT_THAT(info.text, HasSubstr(" " + kernel + " ")) << m.dump();
  }

  Output health = Ternctl("health" + socket_);
  EXPECT_EQ(health.status, 0);
  EXPECT_THAT(health.text, HasSubstr("live yes, ready yes (serving)"));
  EXPECT_EQ(TernctlJson("health --json" + socket_),
            Json::parse(R"({"live":true,"ready":true,"state":"serving",)"
                        R"("reloads":0,"last_reload_error":""})"));

  ASSERT_EQ(Ternctl("infer" + socket_ + " --values " + Values(3)).status, 0);
  Output stats = Ternctl("stats --json" + socket_);
  ASSERT_EQ(stats.status, 0);
  EXPECT_THAT(stats.text, HasSubstr("\"inferences_total\":3"));
  Output prom = Ternctl("stats --prometheus" + socket_);
  EXPECT_THAT(prom.text, HasSubstr("ternd_inferences_total 3"));
  EXPECT_THAT(prom.text, HasSubstr("ternd_requests_total{call=\"infer\","
                                   "status=\"OK\"} 1"));
  EXPECT_THAT(prom.text, HasSubstr("ternd_model_info{name=\"testnet\""));
  // Model quality: one request of 3 rows on version 1 (a classifier).
  EXPECT_THAT(prom.text, HasSubstr("ternd_model_requests_total{model=\"testnet"
                                   "\",version=\"1\"} 1"));
  EXPECT_THAT(prom.text, HasSubstr("ternd_model_confidence_count{model=\""
                                   "testnet\",version=\"1\"} 3"));
  EXPECT_THAT(prom.text, HasSubstr("ternd_model_input_variance{model=\""
                                   "testnet\",version=\"1\",feature=\"0\"}"));
  EXPECT_THAT(stats.text, HasSubstr("\"metrics\":{"));
  const Json st = TernctlJson("stats --json" + socket_);
  EXPECT_EQ(st.value("inferences_total", 0), 3);
  EXPECT_GE(st["responses"].value("OK", 0), 1) << st.dump();
  for (const char* q : {"p50", "p90", "p99", "p999"}) {
    EXPECT_TRUE(st["latency_us"][q].is_number()) << st.dump();
  }
  EXPECT_TRUE(st["metrics"].is_object()) << st.dump();
  EXPECT_THAT(
      prom.text,
      HasSubstr("ternd_request_latency_microseconds{quantile=\"0.99\"}"));
}

TEST_F(TernctlDaemonTest, StatusJsonWithUpdatesOff) {
  // No root of trust in the configuration: updates are off, and say why.
  const Json u = TernctlJson("status --json" + socket_);
  EXPECT_EQ(u.value("enabled", true), false) << u.dump();
  EXPECT_FALSE(u.value("disabled_reason", "").empty()) << u.dump();
  EXPECT_TRUE(u["state"].is_string()) << u.dump();
  EXPECT_TRUE(u["state_code"].is_number_integer()) << u.dump();
  EXPECT_TRUE(u["active"].is_null()) << u.dump();
  EXPECT_TRUE(u["previous"].is_null()) << u.dump();
  EXPECT_EQ(u.value("probation", true), false) << u.dump();
}

// `ternctl reload` (the unit's ExecReload=): SIGHUP, then the reload's
// outcome as the exit status.
TEST_F(TernctlDaemonTest, ReloadWaitsAndReportsTheOutcome) {
  Output ok = Ternctl("reload" + socket_);  // pid from the socket's peer
  EXPECT_EQ(ok.status, 0) << ok.text << daemon_->Log();
  EXPECT_THAT(ok.text,
              HasSubstr("reloaded (pid " + std::to_string(daemon_->pid())));
  const std::string good = ReadText(dir_.File("ternd.toml"));
  WriteText(dir_.File("ternd.toml"),
            "[daemon]\nlog_level = \"not-a-level\"\n" + good);
  Output bad =
      Ternctl("reload --pid " + std::to_string(daemon_->pid()) + socket_);
  EXPECT_EQ(bad.status, 1) << bad.text;
  EXPECT_THAT(bad.text, HasSubstr("ternctl: reload failed: "));
  EXPECT_THAT(bad.text, HasSubstr("not-a-level"));
  EXPECT_TRUE(daemon_->running());
  WriteText(dir_.File("ternd.toml"), good);
  Output again = Ternctl("reload" + socket_);
  EXPECT_EQ(again.status, 0) << again.text;
  // A pid that is not there: a clear error.
  Output gone = Ternctl("reload --pid 999999" + socket_);
  EXPECT_EQ(gone.status, 1);
  EXPECT_THAT(gone.text, HasSubstr("cannot send SIGHUP to pid 999999"));
}

TEST_F(TernctlDaemonTest, NoDaemonIsAClearError) {
  daemon_->Signal(SIGTERM);
  ASSERT_EQ(daemon_->WaitExit(), 0);
  Output health = Ternctl("health" + socket_);
  EXPECT_EQ(health.status, 1);
  EXPECT_THAT(health.text, HasSubstr("UNAVAILABLE: cannot connect to ternd"));
  EXPECT_THAT(health.text, HasSubstr("socket given with -s/--socket"));
  // Where the socket came from is said, and how to name another.
  setenv("TERND_SOCKET", dir_.File("none.sock").c_str(), 1);
  Output from_env = Ternctl("health");
  unsetenv("TERND_SOCKET");
  EXPECT_EQ(from_env.status, 1);
  EXPECT_THAT(from_env.text, HasSubstr("socket from $TERND_SOCKET"));
}

// A WAV file's bytes: a RIFF/WAVE header, a "fmt " chunk with these
// fields and a "data" chunk of `data` (whose declared size may lie).
std::string Wav(const std::string& data, uint32_t rate = 16000,
                uint16_t channels = 1, uint16_t bits = 16,
                uint32_t declared_data = UINT32_MAX) {
  std::string w;
  auto u16 = [&](uint16_t v) { w.append({char(v & 255), char(v >> 8)}); };
  auto u32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) w.push_back(char((v >> (8 * i)) & 255));
  };
  w += "RIFF";
  u32(static_cast<uint32_t>(36 + data.size()));
  w += "WAVEfmt ";
  u32(16);
  u16(1);
  u16(channels);
  u32(rate);
  u32(rate * channels * bits / 8);
  u16(static_cast<uint16_t>(channels * bits / 8));
  u16(bits);
  w += "data";
  u32(declared_data == UINT32_MAX ? static_cast<uint32_t>(data.size())
                                  : declared_data);
  return w + data;
}

// `n` 16-bit samples: a 440 Hz tone with a slow sweep, and their values as
// text (what `ternctl run -i` reads).
std::string Samples(int n, std::string* text) {
  std::string pcm;
  for (int i = 0; i < n; ++i) {
    const double t = i / 16000.0;
    const auto v = static_cast<int16_t>(
        9000 * std::sin(2 * M_PI * (440 + 200 * t) * t) + (i % 13) * 40 - 240);
    pcm.push_back(static_cast<char>(v & 255));
    pcm.push_back(static_cast<char>((v >> 8) & 255));
    *text += std::to_string(v) + ((i + 1) % 16000 ? " " : "\n");
  }
  return pcm;
}

TEST_F(TernctlDaemonTest, InferWavNeedsAnAudioModel) {
  std::string text;
  WriteText(dir_.File("a.wav"), Wav(Samples(16000, &text)));
  Output out = Ternctl("infer" + socket_ + " --wav " + dir_.File("a.wav"));
  EXPECT_EQ(out.status, 1);
  EXPECT_THAT(out.text, HasSubstr("has no audio input"));
}

// `ternctl infer --wav` on the shipped keyword spotter (models/keywords.tern).
class TernctlWavTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteText(dir_.File("ternd.toml"),
              "[server]\nsocket = \"" + dir_.File("t.sock") +
                  "\"\n[runtime]\nmodel = \"" + std::string(KEYWORDS_MODEL) +
                  "\"\nworkers = 1\n");
    DaemonOptions o;
    o.directory = dir_.path();
    o.config_path = dir_.File("ternd.toml");
    daemon_ = std::make_unique<DaemonProcess>(o);
    ASSERT_TRUE(daemon_->WaitForNotify("READY=1")) << daemon_->Log();
    socket_ = " --socket " + dir_.File("t.sock");
  }

  // Writes `bytes` as a file and runs `infer --wav` on it.
  Output InferWav(const std::string& name, const std::string& bytes,
                  const std::string& flags = "") {
    WriteText(dir_.File(name), bytes);
    return Ternctl("infer" + socket_ + flags + " --wav " + dir_.File(name));
  }

  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::string socket_;
};

TEST_F(TernctlWavTest, OneRowPerSecondSameAsRunOnTheValues) {
  std::string text;
  const std::string pcm = Samples(32000, &text);
  Output one = InferWav("one.wav", Wav(pcm.substr(0, 32000)), " --json");
  ASSERT_EQ(one.status, 0) << one.text;
  Output two = InferWav("two.wav", Wav(pcm), " --json");
  ASSERT_EQ(two.status, 0) << two.text;
  WriteText(dir_.File("values.txt"), text);
  Output run = Ternctl(std::string("run ") + KEYWORDS_MODEL + " --json -i " +
                       dir_.File("values.txt"));
  ASSERT_EQ(run.status, 0) << run.text;
  const Json ran = Json::parse(run.text, nullptr, false);
  const Json j1 = Json::parse(one.text, nullptr, false);
  const Json j2 = Json::parse(two.text, nullptr, false);
  ASSERT_TRUE(ran.is_object() && j1.is_object() && j2.is_object());
  EXPECT_EQ(j2["model"], "keywords");
  EXPECT_EQ(j2["outputs"], ran["outputs"]);
  ASSERT_EQ(j2["outputs"]["class"].size(), 2u);
  EXPECT_EQ(j1["outputs"]["class"][0], ran["outputs"]["class"][0]);
  EXPECT_EQ(j1["outputs"]["probs"][0], ran["outputs"]["probs"][0]);
}

TEST_F(TernctlWavTest, RefusesWhatItCannotTakeAndSaysWhy) {
  std::string text;
  const std::string pcm = Samples(16000, &text);
  struct Case {
    const char* name;
    std::string bytes;
    const char* says;
  } cases[] = {
      {"stereo.wav", Wav(pcm, 16000, 2), "2 channels, expected 1 (mono)"},
      {"8bit.wav", Wav(pcm, 16000, 1, 8), "8 bits per sample, expected 16"},
      {"44k.wav", Wav(pcm, 44100),
       "44100 Hz audio; model 'keywords' takes 16000 Hz"},
      {"short.wav", Wav(pcm.substr(0, 16000)),
       "8000 samples (0.500 s); model 'keywords' takes 16000 samples"},
      {"truncated.wav", Wav(pcm).substr(0, 20000),
       "offset 36: chunk 'data' declares 32000 bytes, but only 19956 follow"},
      {"header.wav", Wav(pcm).substr(0, 30),
       "offset 12: chunk 'fmt ' declares 16"},
      {"notwav.wav", "ID3\x04 an mp3 file, not a wav",
       "expected a RIFF/WAVE header"},
      {"odd.wav", Wav(pcm.substr(0, 3)),
       "not a whole number of 16-bit samples"},
  };
  for (const Case& c : cases) {
    Output out = InferWav(c.name, c.bytes);
    EXPECT_EQ(out.status, 1) << c.name;
    EXPECT_THAT(out.text, HasSubstr(c.says)) << c.name;
    EXPECT_THAT(out.text, HasSubstr(dir_.File(c.name))) << c.name;
  }
  Output missing =
      Ternctl("infer" + socket_ + " --wav " + dir_.File("none.wav"));
  EXPECT_EQ(missing.status, 1);
  EXPECT_THAT(missing.text, HasSubstr(dir_.File("none.wav")));
  Output both = Ternctl("infer" + socket_ + " --wav x.wav --values 1");
  EXPECT_NE(both.status, 0);
  EXPECT_THAT(both.text, HasSubstr("excludes"));
}

}  // namespace
}  // namespace ternd::daemon_testing
