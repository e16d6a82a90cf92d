// `ternctl bench` as a user runs it, on every model in models/: the JSON
// output has every field, its numbers are positive and agree with each
// other, --profile's op times add up to the call, --compare gives the ratio,
// and bad arguments exit 1 with a message naming what is wrong.
//
// Runs are short (--seconds 0.2 --warmup 0.05) so the suite stays fast; the
// checks are on relations that hold for any timing, not on speeds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_env.h"

namespace ternd {
namespace {

using Json = nlohmann::json;
using testing::CommandResult;

const std::string kModels = MODELS_DIR;
const std::vector<std::string> kAllModels = {"demo", "digits", "vibration"};
const std::string kShort = " --seconds 0.2 --warmup 0.05 --bandwidth-mb 32";

// Inferences/s against batch x threads / mean latency: with back-to-back
// calls the measured wall time is the sum of the latencies, so with one
// thread the two agree up to float rounding. With several, a thread that
// starts late (a busy machine) runs fewer calls in the same wall time.
constexpr double kRateTolerance = 0.02;
constexpr double kThreadsRateTolerance = 0.15;
// --profile: the op times add up to at most the whole call and at least this
// share of it (the rest is the input check, the call and the clock reads).
constexpr double kProfileMinShare = 0.8;

std::string Model(const std::string& name) {
  return kModels + "/" + name + ".tern";
}

CommandResult Bench(const std::string& args) {
  return testing::RunCommand(std::string(TERNCTL_PATH) + " bench " + args);
}

// A successful --json run: exit 0, nothing on stderr, one JSON object.
Json BenchJson(const std::string& args) {
  CommandResult r = Bench(args + " --json");
  EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.err;
  EXPECT_EQ(r.err, "") << args;
  Json j = Json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(j.is_object()) << args << "\n" << r.out;
  return j.is_object() ? j : Json::object();
}

double Num(const Json& j, const char* key) {
  EXPECT_TRUE(j.contains(key) && j[key].is_number()) << key << " in " << j;
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : -1;
}

void ExpectNear(double got, double want, double rel, const std::string& what) {
  EXPECT_LE(std::abs(got - want), rel * std::abs(want))
      << what << ": " << got << " against " << want;
}

void CheckMachineAndSettings(const Json& j, const std::string& kernel) {
  const Json& mc = j["machine"];
  ASSERT_TRUE(mc.is_object()) << j;
  EXPECT_FALSE(mc["cpu"].get<std::string>().empty());
  EXPECT_GE(Num(mc, "cores"), 1);
  EXPECT_TRUE(mc["isa"].is_array());
  EXPECT_GT(Num(mc, "read_bandwidth_bytes_per_s"), 1e8);
  const Json& st = j["settings"];
  ASSERT_TRUE(st.is_object()) << j;
  if (kernel != "auto") {
    EXPECT_EQ(st["kernel"], kernel);
  }
  EXPECT_FALSE(st["kernel_isa"].get<std::string>().empty());
  EXPECT_FALSE(st["weight_layout"].get<std::string>().empty());
  EXPECT_GE(Num(st, "threads"), 1);
  EXPECT_EQ(Num(st, "seconds"), 0.2);
  EXPECT_EQ(Num(st, "warmup_seconds"), 0.05);
  EXPECT_TRUE(st["inputs"].is_string());
  EXPECT_TRUE(st["profile"].is_boolean());
}

// Every field of one model's object and the relations between them.
void CheckModel(const Json& m, const std::vector<int>& batches, int threads) {
  ASSERT_TRUE(m.is_object());
  EXPECT_FALSE(m["path"].get<std::string>().empty());
  EXPECT_FALSE(m["name"].get<std::string>().empty());
  EXPECT_GE(Num(m, "version"), 1);
  EXPECT_GE(Num(m, "ops"), 1);
  EXPECT_GE(Num(m, "max_batch"), 1);
  EXPECT_GT(Num(m, "load_ms"), 0);
  EXPECT_EQ(m["golden_check"], "passed");
  const Json& a = m["arena"];
  const double weights = Num(a, "weights_bytes");
  const double act = Num(a, "activations_bytes");
  const double scratch = Num(a, "scratch_bytes");
  const double other = Num(a, "other_bytes");
  EXPECT_GT(weights, 0);
  EXPECT_GT(act, 0);
  EXPECT_GT(scratch, 0);
  EXPECT_GT(other, 0);
  EXPECT_EQ(weights + act + scratch + other, Num(a, "slot_used_bytes"));
  const Json& results = m["results"];
  ASSERT_EQ(results.size(), batches.size()) << m;
  for (size_t i = 0; i < batches.size(); ++i) {
    const Json& r = results[i];
    const int batch = batches[i];
    SCOPED_TRACE(m["name"].get<std::string>() + " batch " +
                 std::to_string(batch));
    EXPECT_EQ(Num(r, "batch"), batch);
    EXPECT_GE(Num(r, "invocations"), 1);
    const Json& l = r["latency_us"];
    const double p50 = Num(l, "p50"), p90 = Num(l, "p90"), p99 = Num(l, "p99");
    const double max = Num(l, "max"), mean = Num(l, "mean");
    EXPECT_GT(p50, 0);
    EXPECT_LE(p50, p90);
    EXPECT_LE(p90, p99);
    EXPECT_LE(p99, max);
    EXPECT_GT(mean, 0);
    EXPECT_LE(mean, max);
    const double rate = Num(r, "inferences_per_s");
    EXPECT_GT(rate, 0);
    ExpectNear(rate, threads * batch * 1e6 / mean,
               threads == 1 ? kRateTolerance : kThreadsRateTolerance,
               "inferences/s against threads x batch / mean latency");
    // The calls ran for --seconds (0.2) per thread.
    EXPECT_GE(Num(r, "invocations") * mean,
              (threads == 1 ? 0.99 : 0.5) * 0.2e6 * threads);
  }
}

TEST(TernctlBenchTest, JsonHasEveryFieldOnEveryModel) {
  for (const std::string& name : kAllModels) {
    SCOPED_TRACE(name);
    Json j = BenchJson(Model(name) + " --batch 1,8" + kShort);
    CheckMachineAndSettings(j, "auto");
    EXPECT_EQ(j["settings"]["profile"], false);
    EXPECT_EQ(j["settings"]["threads"], 1);
    CheckModel(j["model"], {1, 8}, 1);
    EXPECT_EQ(j["model"]["path"], Model(name));
    EXPECT_FALSE(j["model"]["results"][0].contains("profile"));
  }
}

// The arena's activation buffers are planned independently of the kernel;
// the weights are in each kernel's own layout.
TEST(TernctlBenchTest, KernelChoiceIsReportedAndChangesOnlyTheWeightLayout) {
  Json ref = BenchJson(Model("digits") + " --kernel ref" + kShort);
  CheckMachineAndSettings(ref, "ref");
  CheckModel(ref["model"], {1}, 1);
  EXPECT_EQ(
      ref["settings"]["weight_layout"].get<std::string>().rfind("canonical", 0),
      0u)
      << ref["settings"];
  Json best = BenchJson(Model("digits") + kShort);
  EXPECT_EQ(ref["model"]["arena"]["activations_bytes"],
            best["model"]["arena"]["activations_bytes"]);
  EXPECT_GT(best["model"]["arena"]["weights_bytes"].get<double>(), 0);
}

TEST(TernctlBenchTest, ThreadsRunConcurrentlyAndTheirRatesAdd) {
  Json j = BenchJson(Model("vibration") + " --threads 2 --batch 4" + kShort);
  EXPECT_EQ(j["settings"]["threads"], 2);
  CheckModel(j["model"], {4}, 2);
}

TEST(TernctlBenchTest, ProfileOpTimesSumToTheWhole) {
  for (const std::string& name : kAllModels) {
    SCOPED_TRACE(name);
    Json j = BenchJson(Model(name) + " --profile --batch 1,8" + kShort);
    EXPECT_EQ(j["settings"]["profile"], true);
    CheckModel(j["model"], {1, 8}, 1);
    const int num_ops = j["model"]["ops"];
    for (const Json& r : j["model"]["results"]) {
      const int batch = r["batch"];
      SCOPED_TRACE("batch " + std::to_string(batch));
      const Json& p = r["profile"];
      ASSERT_TRUE(p.is_object()) << r;
      const double invoke = Num(p, "invoke_us"), ops_us = Num(p, "ops_us");
      ASSERT_EQ(p["ops"].size(), static_cast<size_t>(num_ops));
      double sum = 0, share = 0, flops = 0;
      for (const Json& op : p["ops"]) {
        EXPECT_FALSE(op["name"].get<std::string>().empty());
        const std::string type = op["type"];
        const double us = Num(op, "us");
        EXPECT_GT(us, 0) << op;
        sum += us;
        share += Num(op, "share");
        ExpectNear(Num(op, "share"), us / invoke, 1e-4, "share");
        EXPECT_GT(Num(op, "bytes"), 0);
        ExpectNear(Num(op, "gbytes_per_s"), Num(op, "bytes") / us * 1e-3, 1e-4,
                   "GB/s");
        const bool product = type == "TERNARY_LINEAR" || type == "LINEAR";
        EXPECT_EQ(Num(op, "flops") > 0, product) << op;
        ExpectNear(Num(op, "gflops"), Num(op, "flops") / us * 1e-3, 1e-4,
                   "GFLOPS");
        if (type == "TERNARY_LINEAR") flops += Num(op, "flops");
      }
      ExpectNear(sum, ops_us, 1e-4, "sum of the op times");
      EXPECT_LE(ops_us, invoke * (1 + 1e-5));
      EXPECT_GE(ops_us, kProfileMinShare * invoke);
      ExpectNear(Num(p, "unattributed_us"), invoke - ops_us,
                 1e-4 * invoke / std::max(invoke - ops_us, 1e-9),
                 "unattributed");
      ExpectNear(share, ops_us / invoke, 1e-3, "sum of the shares");
      EXPECT_GT(Num(p, "ternary_gflops"), 0);
      if (name == "digits") {
        // 64 -> 256 -> 128 -> 10, all ternary (docs/training.md).
        EXPECT_EQ(flops, 2.0 * batch * (64 * 256 + 256 * 128 + 128 * 10));
      }
      // The per-type table adds up to the per-op one.
      int count = 0;
      double type_us = 0;
      for (const Json& t : p["op_types"]) {
        count += t["count"].get<int>();
        type_us += Num(t, "us");
      }
      EXPECT_EQ(count, num_ops);
      ExpectNear(type_us, ops_us, 1e-4, "sum over op types");
    }
  }
}

TEST(TernctlBenchTest, CompareRunsBothModelsAndGivesTheRatio) {
  Json j = BenchJson("--compare " + Model("demo") + " " + Model("vibration") +
                     " --batch 1,4" + kShort);
  CheckMachineAndSettings(j, "auto");
  ASSERT_EQ(j["models"].size(), 2u) << j;
  EXPECT_EQ(j["models"][0]["name"], "demo-sensor");
  EXPECT_EQ(j["models"][1]["name"], "vibration");
  for (const Json& m : j["models"]) CheckModel(m, {1, 4}, 1);
  ASSERT_EQ(j["ratio"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const Json& a = j["models"][0]["results"][i];
    const Json& b = j["models"][1]["results"][i];
    const Json& ratio = j["ratio"][i];
    EXPECT_EQ(ratio["batch"], a["batch"]);
    ExpectNear(Num(ratio, "latency_p50"),
               Num(b["latency_us"], "p50") / Num(a["latency_us"], "p50"), 1e-4,
               "p50 ratio");
    ExpectNear(Num(ratio, "inferences_per_s"),
               Num(b, "inferences_per_s") / Num(a, "inferences_per_s"), 1e-4,
               "rate ratio");
  }
  CommandResult text = Bench("--compare " + Model("demo") + " " +
                             Model("demo") + " --batch 2" + kShort);
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("B/A"), std::string::npos) << text.out;
}

TEST(TernctlBenchTest, TextOutputShowsTheMachineTheArenaAndTheCostliestOp) {
  CommandResult r = Bench(Model("vibration") + " --profile" + kShort);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* want :
       {"machine ", "read bandwidth", "kernel ", "weight layout", "model ",
        "load ", "arena ", "weights", "activations", "scratch", "p50 us",
        "p99 us", "inferences/s", "profile, batch 1", "<- costliest",
        "by type: "}) {
    EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;
  }
}

TEST(TernctlBenchTest, InputRowsFromAFile) {
  testing::TempDir dir;
  const std::string file = dir / "rows.txt";
  std::ofstream(file)
      << "0.5 -1 0.25 2 0 0 1 1 -0.5 0.3 0.7 -2 1.5 0 0.1 0.9\n";
  Json j = BenchJson(Model("demo") + " --batch 1,3 -i " + file + kShort);
  EXPECT_EQ(j["settings"]["inputs"], "from " + file);
  CheckModel(j["model"], {1, 3}, 1);

  std::ofstream(file) << "1 2 3\n";
  CommandResult r = Bench(Model("demo") + " -i " + file + kShort);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(file + " has 3 values; model 'demo-sensor'"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("rows of 16 values"), std::string::npos) << r.err;
}

TEST(TernctlBenchTest, BadArgumentsExitNonZeroNamingWhatIsWrong) {
  struct Case {
    std::string args;
    std::string message;
  };
  const std::string digits = Model("digits");
  const std::vector<Case> cases = {
      {"/nonexistent/m.tern", "cannot open /nonexistent/m.tern"},
      {digits + " --batch 0", "--batch '0': '0' is not a batch size"},
      {digits + " --batch abc", "--batch 'abc': 'abc' is not a batch size"},
      {digits + " --batch 1,,8", "'' is not a batch size"},
      {digits + " --batch 8,65",
       "--batch 65 is above the max batch of model 'digits' (" + digits +
           "): 64"},
      {digits + " --kernel nope", "unknown ternary kernel 'nope'"},
      {digits + " --prompt 16",
       "--prompt/--generate: model 'digits' (" + digits + ") is a graph model"},
      {digits + " --generate 16", "they measure language models"},
      {digits + " --threads 0", "--threads 0: expected 1..256"},
      {"", "give a MODEL file, or --compare A.tern B.tern"},
      {digits + " --compare " + digits + " " + digits, "not both"},
      {"--compare " + digits + " /nonexistent/b.tern",
       "cannot open /nonexistent/b.tern"},
  };
  for (const Case& c : cases) {
    CommandResult r = Bench(c.args + " --seconds 0.01 --warmup 0");
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("ternctl bench: ", 0), 0u) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\n"
                                                        << r.err;
    EXPECT_EQ(r.out, "") << c.args;
  }
  // Values CLI11 refuses itself: a usage error (exit 100 or more) naming
  // the option.
  for (const std::string& args :
       {digits + " --seconds abc", "--compare " + digits}) {
    CommandResult r = Bench(args);
    EXPECT_GE(r.exit_code, 100) << args << "\n" << r.err;
    EXPECT_NE(
        r.err.find(args.find("--seconds") != std::string::npos ? "--seconds"
                                                               : "--compare"),
        std::string::npos)
        << r.err;
  }
  CommandResult zero = Bench(digits + " --seconds 0");
  EXPECT_EQ(zero.exit_code, 1);
  EXPECT_NE(zero.err.find("--seconds 0"), std::string::npos) << zero.err;
}

// A language model (a small random-weight BitNet written by the Python
// GGUF writer and converted): pp and tg as llama-bench measures them.
class TernctlBenchLmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const std::string gguf = dir_->File("lm.gguf");
    lm_ = new std::string(dir_->File("lm.tern"));
    const std::string cmd =
        std::string(PYTHON_PATH) + " " + GGUF_WRITER_PATH +
        " --arch bitnet-b1.58 --hidden 128 --ffn 256 --layers 2 --heads 4 "
        "--kv-heads 2 --vocab 600 --context 64 --seed 5 -o " +
        gguf + " >/dev/null && " + TERNCTL_PATH + " convert " + gguf + " -o " +
        *lm_ + " >/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  static void TearDownTestSuite() {
    delete lm_;
    delete dir_;
  }
  static testing::TempDir* dir_;
  static std::string* lm_;
};
testing::TempDir* TernctlBenchLmTest::dir_ = nullptr;
std::string* TernctlBenchLmTest::lm_ = nullptr;

TEST_F(TernctlBenchLmTest, MeasuresPromptAndGeneration) {
  Json j = BenchJson(*lm_ +
                     " --prompt 16 --generate 8 --repetitions 3 --threads 1 "
                     "--bandwidth-mb 32");
  const Json& m = j["model"];
  EXPECT_EQ(m["layers"], 2);
  EXPECT_EQ(m["vocab"], 600);
  EXPECT_EQ(m["ternary_matrices"], 14);
  EXPECT_EQ(m["golden_check"], true);
  EXPECT_GT(Num(m, "bytes_per_token"), 0);
  EXPECT_LE(Num(m, "slot_bytes_used"), 64 << 20);
  // The KV cache holds max(prompt, generate) + 1 positions: 2 layers x K, V
  // x 2 KV heads x 32 wide x 2 bytes.
  EXPECT_EQ(Num(m, "kv_cache_bytes"), 17 * 2 * 2 * 2 * 32 * 2);
  EXPECT_EQ(j["settings"]["threads"], 1);
  EXPECT_EQ(j["settings"]["prompt_tokens"], 16);
  const Json& pp = j["pp_tokens_per_s"];
  const Json& tg = j["tg_tokens_per_s"];
  ASSERT_EQ(pp["runs"].size(), 3u);
  ASSERT_EQ(tg["runs"].size(), 3u);
  EXPECT_GT(Num(pp, "median"), 0);
  EXPECT_LE(Num(pp, "min"), Num(pp, "median"));
  EXPECT_GE(Num(pp, "max"), Num(pp, "median"));
  // The time to the first token is the prompt's evaluation: per run,
  // 16 tokens / pp.
  for (int r = 0; r < 3; ++r) {
    EXPECT_NEAR(16e3 / pp["runs"][r].get<double>(),
                j["time_to_first_token_ms"]["runs"][r].get<double>(),
                1e-3 * j["time_to_first_token_ms"]["runs"][r].get<double>());
  }
  EXPECT_NEAR(Num(j, "roofline_tokens_per_s"),
              Num(j["machine"], "read_bandwidth_bytes_per_s") /
                  Num(m, "bytes_per_token"),
              1e-3 * Num(j, "roofline_tokens_per_s"));
  EXPECT_NEAR(Num(j, "tg_of_roofline"),
              Num(tg, "median") / Num(j, "roofline_tokens_per_s"), 1e-3);

  // Without --threads the team is every CPU, as llm.threads = 0.
  Json all = BenchJson(*lm_ +
                       " --prompt 4 --generate 0 --repetitions 1 "
                       "--bandwidth-mb 0");
  EXPECT_EQ(all["settings"]["threads"],
            static_cast<int>(std::thread::hardware_concurrency()));
  EXPECT_TRUE(all["tg_tokens_per_s"].is_null());
  EXPECT_TRUE(all["roofline_tokens_per_s"].is_null());

  CommandResult text = Bench(*lm_ +
                             " --prompt 8 --generate 4 --repetitions 1 "
                             "--bandwidth-mb 32");
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("\npp8 "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("\ntg4 "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("golden check passed"), std::string::npos);
  EXPECT_NE(text.out.find("tg at "), std::string::npos) << text.out;
}

TEST_F(TernctlBenchLmTest, BadArgumentsNameWhatIsWrong) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {" --prompt 0 --generate 0", "not both 0"},
      {" --prompt 100 --generate 8",
       "need 101 positions; model 'random-bitnet-b1.58' (" + *lm_ +
           ") was made for a context of 64"},
      {" --repetitions 0", "--repetitions 0: expected 1..1000"},
  };
  for (const auto& [args, message] : cases) {
    CommandResult r = Bench(*lm_ + args + " --bandwidth-mb 0");
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << args << "\n" << r.err;
  }
  CommandResult r = Bench("--compare " + *lm_ + " " + *lm_);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--compare measures graph models"), std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace ternd
