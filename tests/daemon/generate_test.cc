// Generate against the real daemon serving a language model: a random-
// weight BitNet b1.58 model written as GGUF by python/ternd/gguf_writer.py
// and converted in-process (runtime/lm/convert.h). The tokens the daemon
// streams are checked against the runtime run in this process, so the
// sampling, streaming and stopping are tested, not just that something
// comes back.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "base/file.h"
#include "daemon/client/client.h"
#include "runtime/format.h"
#include "runtime/gguf/gguf_reader.h"
#include "runtime/lm/convert.h"
#include "runtime/lm/lm_model.h"
#include "runtime/lm/lm_tokenizer.h"
#include "runtime/runtime.h"
#include "tests/daemon/daemon_process.h"
#include "tests/daemon/daemon_test_models.h"

namespace ternd::daemon_testing {
namespace {

using ::testing::HasSubstr;

constexpr int kContext = 96;

struct Streamed {
  std::vector<int32_t> tokens;
  std::string text;
  wire::GenerateSummary summary;
  Status status;
};

class GenerateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const std::string gguf = dir_->File("m.gguf");
    const std::string cmd = std::string(PYTHON_PATH) + " " + GGUF_WRITER_PATH +
                            " --arch bitnet-b1.58 --hidden 128 --ffn 256 "
                            "--layers 2 --heads 4 --kv-heads 2 --vocab 600 "
                            "--seed 7 -o " +
                            gguf;
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    Result<gguf::GgufFile> g = gguf::GgufFile::Open(gguf);
    ASSERT_TRUE(g.ok()) << g.status().message();
    Result<std::vector<uint8_t>> bytes = lm::ConvertGguf(*g, {});
    ASSERT_TRUE(bytes.ok()) << bytes.status().message();
    ASSERT_TRUE(WriteFileAtomically(dir_->File("m.tern"), *bytes).ok());
    Result<runtime::ModelFile> f =
        runtime::ModelFile::Parse(std::move(*bytes), "m.tern");
    ASSERT_TRUE(f.ok()) << f.status().message();
    file_ = new runtime::ModelFile(std::move(*f));
  }
  static void TearDownTestSuite() {
    delete file_;
    delete dir_;
  }

  void StartDaemon(const std::string& extra = "", int context = kContext) {
    WriteText(dir_->File("ternd.toml"),
              "[server]\nsocket = \"" + dir_->File("t.sock") +
                  "\"\n[runtime]\nmodel = \"" + dir_->File("m.tern") +
                  "\"\narena_mb = 32\n[llm]\nthreads = 2\nsequences = 2\n"
                  "max_context = " +
                  std::to_string(context) + "\n" + extra);
    DaemonOptions o;
    o.directory = dir_->path();
    o.config_path = dir_->File("ternd.toml");
    daemon_ = std::make_unique<DaemonProcess>(o);
    ASSERT_TRUE(daemon_->WaitForNotify("READY=1")) << daemon_->Log();
  }

  std::unique_ptr<client::Client> Connect() {
    auto c = client::Client::Connect(dir_->File("t.sock"));
    EXPECT_TRUE(c.ok()) << c.status().message();
    return c.ok() ? std::move(*c) : nullptr;
  }

  Streamed Generate(const wire::GenerateRequest& r, int cancel_after = -1) {
    Streamed s;
    auto c = Connect();
    if (!c) return s;
    int frames = 0;
    Result<wire::GenerateSummary> sum =
        c->Generate(r, [&](const wire::GenerateResponse& g) {
          EXPECT_LE(g.tokens_size(), 1);
          for (int32_t t : g.tokens()) s.tokens.push_back(t);
          s.text += g.text();
          return ++frames != cancel_after;
        });
    s.status = sum.status();
    if (sum.ok()) {
      s.summary = *sum;
      // The final frame's text (what was held back) is not passed to the
      // callback: the summary's frame carries it, collected by Generate.
    }
    return s;
  }

  // Greedy continuation of `prompt` computed here with the runtime.
  std::vector<int32_t> Greedy(const std::vector<int32_t>& prompt, int n) {
    runtime::RuntimeOptions ro;
    ro.slots = 1;
    ro.arena_bytes = size_t{32} << 20;
    auto rt = runtime::Runtime::Create(ro);
    EXPECT_TRUE(rt.ok());
    runtime::LmOptions lo;
    lo.threads = 1;
    lo.max_context = kContext;
    auto m = (*rt)->LoadLm(0, *file_, lo);
    EXPECT_TRUE(m.ok()) << m.status().message();
    std::vector<int32_t> out;
    EXPECT_TRUE((*m)->Eval(0, prompt, 0).ok());
    for (int i = 0; i < n; ++i) {
      const float* z = (*m)->logits(0);
      int32_t best = 0;
      for (uint32_t v = 1; v < (*m)->shape().vocab; ++v) {
        if (z[v] > z[best]) best = static_cast<int32_t>(v);
      }
      out.push_back(best);
      EXPECT_TRUE(
          (*m)->Eval(0, {&best, 1}, static_cast<int>(prompt.size()) + i).ok());
    }
    return out;
  }

  std::unique_ptr<tokenizer::Tokenizer> Tokenizer() {
    auto t = lm::TokenizerOf(file_->header().lm());
    EXPECT_TRUE(t.ok()) << t.status().message();
    return t.ok() ? std::move(*t) : nullptr;
  }

  static TempDir* dir_;
  static runtime::ModelFile* file_;
  std::unique_ptr<DaemonProcess> daemon_;
};
TempDir* GenerateTest::dir_ = nullptr;
runtime::ModelFile* GenerateTest::file_ = nullptr;

wire::GenerateRequest Tokens(std::vector<int32_t> t, uint32_t max_tokens) {
  wire::GenerateRequest r;
  for (int32_t x : t) r.add_prompt_tokens(x);
  r.set_max_tokens(max_tokens);
  return r;
}

TEST_F(GenerateTest, StreamsTheGreedyTokensTheRuntimeComputes) {
  StartDaemon();
  const std::vector<int32_t> prompt = {597, 10, 20, 30, 40};
  const std::vector<int32_t> want = Greedy(prompt, 12);
  Streamed s = Generate(Tokens(prompt, 12));
  ASSERT_TRUE(s.status.ok()) << s.status.message();
  EXPECT_EQ(s.tokens, want);
  EXPECT_EQ(s.summary.stop_reason(), "length");
  EXPECT_EQ(s.summary.prompt_tokens(), 5u);
  EXPECT_EQ(s.summary.generated_tokens(), 12u);
  EXPECT_EQ(s.summary.model(), file_->header().name());
  EXPECT_GT(s.summary.first_token_us(), 0u);
  EXPECT_GT(s.summary.tokens_per_s(), 0.0);
  // The text streamed is the tokens' text (random tokens may split UTF-8
  // characters; valid text compares exactly).
  auto tok = Tokenizer();
  const std::string decoded = tok->Decode(want);
  if (tokenizer::Utf8SequenceLength(
          reinterpret_cast<const uint8_t*>(decoded.data()), decoded.size()) !=
      0) {
    EXPECT_EQ(s.text, decoded.substr(0, s.text.size()));
  }

  // A text prompt is tokenized by the model's tokenizer (with BOS).
  wire::GenerateRequest text;
  text.set_prompt("abc def 123");
  text.set_max_tokens(6);
  std::vector<int32_t> ids;
  ASSERT_TRUE(tok->Encode("abc def 123", true, true, &ids).ok());
  Streamed t = Generate(text);
  ASSERT_TRUE(t.status.ok()) << t.status.message();
  EXPECT_EQ(t.summary.prompt_tokens(), ids.size());
  EXPECT_EQ(t.tokens, Greedy(ids, 6));
}

TEST_F(GenerateTest, SamplingIsReproducibleWithASeed) {
  StartDaemon();
  wire::GenerateRequest r = Tokens({1, 2, 3}, 16);
  r.set_temperature(1.5f);
  r.set_top_k(-1);
  r.set_seed(42);
  Streamed a = Generate(r), b = Generate(r);
  ASSERT_TRUE(a.status.ok()) << a.status.message();
  EXPECT_EQ(a.tokens, b.tokens);
  r.set_seed(43);
  Streamed c = Generate(r);
  EXPECT_NE(a.tokens, c.tokens);
  // Not greedy: at this temperature over the whole vocabulary the draws
  // leave the argmax path.
  EXPECT_NE(a.tokens, Greedy({1, 2, 3}, 16));
  // top_k 1 is greedy whatever the temperature.
  r.set_top_k(1);
  EXPECT_EQ(Generate(r).tokens, Greedy({1, 2, 3}, 16));
  // Logprobs come with every token and are log-probabilities.
  r.set_top_k(0);
  r.set_logprobs(true);
  auto cl = Connect();
  int n = 0;
  auto sum = cl->Generate(r, [&](const wire::GenerateResponse& g) {
    EXPECT_EQ(g.logprobs_size(), 1);
    if (g.logprobs_size() == 1) {
      EXPECT_LE(g.logprobs(0), 0.0f);
      EXPECT_GT(g.logprobs(0), -50.0f);
    }
    ++n;
    return true;
  });
  ASSERT_TRUE(sum.ok());
  // Every token came with its log-probability (a drawn end-of-generation
  // token ends the stream without a frame of its own).
  EXPECT_EQ(static_cast<uint32_t>(n) + (sum->stop_reason() == "eos" ? 1 : 0),
            sum->generated_tokens());
  EXPECT_GE(n, 1);
}

TEST_F(GenerateTest, StopTokensAndStopStringsEndIt) {
  StartDaemon();
  const std::vector<int32_t> prompt = {5, 6, 7};
  const std::vector<int32_t> greedy = Greedy(prompt, 12);
  // A stop token: the first occurrence of greedy[6] ends the stream before
  // it.
  const auto first = std::find(greedy.begin(), greedy.end(), greedy[6]);
  const size_t cut = static_cast<size_t>(first - greedy.begin());
  wire::GenerateRequest r = Tokens(prompt, 12);
  r.add_stop_tokens(greedy[6]);
  Streamed s = Generate(r);
  ASSERT_TRUE(s.status.ok()) << s.status.message();
  EXPECT_EQ(s.summary.stop_reason(), "stop");
  EXPECT_EQ(s.tokens,
            std::vector<int32_t>(greedy.begin(), greedy.begin() + cut));

  // A stop string: text of the greedy continuation, ended where it starts.
  auto tok = Tokenizer();
  std::string full;
  {
    Streamed all = Generate(Tokens(prompt, 12));
    full = all.text;
  }
  ASSERT_GE(full.size(), 8u) << full;
  // Pick 3 bytes in the middle that are whole ASCII characters if possible.
  size_t at = full.size() / 2;
  while (at + 3 < full.size() &&
         (static_cast<unsigned char>(full[at]) >= 0x80 ||
          static_cast<unsigned char>(full[at + 1]) >= 0x80 ||
          static_cast<unsigned char>(full[at + 2]) >= 0x80)) {
    ++at;
  }
  const std::string stop = full.substr(at, 3);
  const size_t stop_at = full.find(stop);
  wire::GenerateRequest rs = Tokens(prompt, 12);
  rs.add_stop(stop);
  auto c = Connect();
  std::string text;
  auto sum = c->Generate(rs, [&](const wire::GenerateResponse& g) {
    text += g.text();
    return true;
  });
  ASSERT_TRUE(sum.ok()) << sum.status().message();
  EXPECT_EQ(sum->stop_reason(), "stop");
  EXPECT_EQ(text, full.substr(0, stop_at)) << "stop '" << stop << "'";
}

TEST_F(GenerateTest, CancelAndClosingStopItAndTheDaemonKeepsServing) {
  // A long context, so that the generation is still running (a few
  // seconds of tokens) when the cancel arrives.
  constexpr int kLong = 4000;
  StartDaemon("", kLong);
  // Cancelled by the client after 3 tokens.
  Streamed s = Generate(Tokens({1, 2}, kLong), /*cancel_after=*/3);
  ASSERT_TRUE(s.status.ok()) << s.status.message();
  EXPECT_EQ(s.summary.stop_reason(), "cancelled");
  EXPECT_GE(s.tokens.size(), 3u);
  EXPECT_LT(s.tokens.size(), static_cast<size_t>(kLong / 2));
  // A client that goes away mid-stream.
  {
    auto c = Connect();
    wire::Request req;
    req.set_id(1);
    *req.mutable_generate() = Tokens({1, 2}, kLong);
    ASSERT_TRUE(c->Send(req).ok());
    wire::Response first;
    ASSERT_TRUE(c->Receive(&first).ok());
  }  // closed
  // Both sequences are free again: two more run at once at the start.
  Streamed a, b;
  std::thread t1([&] { a = Generate(Tokens({1, 2}, 5)); });
  std::thread t2([&] { b = Generate(Tokens({3, 4}, 5)); });
  t1.join();
  t2.join();
  EXPECT_EQ(a.summary.stop_reason(), "length");
  EXPECT_EQ(b.summary.stop_reason(), "length");
  EXPECT_LT(a.summary.queue_us() + b.summary.queue_us(), 2000000u);
}

TEST_F(GenerateTest, TheContextBoundsAGeneration) {
  StartDaemon();
  Streamed full = Generate(Tokens({1, 2}, 1000));
  ASSERT_TRUE(full.status.ok()) << full.status.message();
  EXPECT_EQ(full.summary.stop_reason(), "context");
  EXPECT_EQ(full.summary.prompt_tokens() + full.summary.generated_tokens(),
            static_cast<uint32_t>(kContext));
  EXPECT_EQ(full.tokens, Greedy({1, 2}, kContext - 2));
}

TEST_F(GenerateTest, TwoAtOnceGiveWhatEachGivesAlone) {
  StartDaemon();
  const std::vector<int32_t> p1 = {11, 12, 13}, p2 = {400, 401};
  Streamed a, b;
  std::thread t1([&] { a = Generate(Tokens(p1, 20)); });
  std::thread t2([&] { b = Generate(Tokens(p2, 20)); });
  t1.join();
  t2.join();
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.tokens, Greedy(p1, 20));
  EXPECT_EQ(b.tokens, Greedy(p2, 20));
}

wire::GenerateRequest InSession(std::vector<int32_t> t, uint32_t max_tokens,
                                const std::string& session) {
  wire::GenerateRequest r = Tokens(std::move(t), max_tokens);
  r.set_session(session);
  return r;
}

std::vector<int32_t> Concat(std::vector<int32_t> a,
                            const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A follow-up turn of a session evaluates only what its KV cache lacks, and
// answers exactly what a fresh run of the whole conversation answers.
TEST_F(GenerateTest, ASessionReusesItsCacheAndAnswersAsAFreshRun) {
  StartDaemon();
  const std::vector<int32_t> p1 = {597, 3, 14, 15, 92, 65, 35, 89, 79, 32};
  Streamed t1 = Generate(InSession(p1, 8, "chat-1"));
  ASSERT_TRUE(t1.status.ok()) << t1.status.message();
  EXPECT_EQ(t1.tokens, Greedy(p1, 8));
  EXPECT_EQ(t1.summary.reused_tokens(), 0u);

  // Turn 2: the conversation so far plus new tokens. The cache holds the
  // prompt and the answer but its last token (drawn, never evaluated).
  const std::vector<int32_t> p2 = Concat(Concat(p1, t1.tokens), {7, 8, 9});
  Streamed t2 = Generate(InSession(p2, 8, "chat-1"));
  ASSERT_TRUE(t2.status.ok()) << t2.status.message();
  EXPECT_EQ(t2.summary.reused_tokens(), p1.size() + t1.tokens.size() - 1);
  EXPECT_EQ(t2.summary.prompt_tokens(), p2.size());
  EXPECT_EQ(t2.tokens, Greedy(p2, 8));

  // A turn that differs after 4 tokens reuses those 4 only.
  const std::vector<int32_t> p3 = {597, 3, 14, 15, 500, 501, 502};
  Streamed t3 = Generate(InSession(p3, 6, "chat-1"));
  ASSERT_TRUE(t3.status.ok()) << t3.status.message();
  EXPECT_EQ(t3.summary.reused_tokens(), 4u);
  EXPECT_EQ(t3.tokens, Greedy(p3, 6));

  // The same prompt again: all but its last token are reused (its logits
  // are the first draw's).
  Streamed t4 = Generate(InSession(p3, 6, "chat-1"));
  ASSERT_TRUE(t4.status.ok()) << t4.status.message();
  EXPECT_EQ(t4.summary.reused_tokens(), p3.size() - 1);
  EXPECT_EQ(t4.tokens, t3.tokens);

  // Another session does not see this one's cache.
  Streamed other = Generate(InSession(p3, 6, "chat-2"));
  ASSERT_TRUE(other.status.ok());
  EXPECT_EQ(other.summary.reused_tokens(), 0u);
  EXPECT_EQ(other.tokens, t3.tokens);

  auto c = Connect();
  Result<wire::StatsResponse> st = c->Stats(true);
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_EQ(st->sessions(), 2u);
  EXPECT_EQ(st->session_evictions(), 0u);
  EXPECT_EQ(st->session_reused_tokens(),
            t2.summary.reused_tokens() + 4 + p3.size() - 1);
  EXPECT_EQ(st->generated_tokens(), 8u + 8 + 6 + 6 + 6);
  // Telemetry per model version.
  const std::string labels = "{model=\"" + file_->header().name() +
                             "\",version=\"" +
                             std::to_string(file_->header().version()) + "\"}";
  EXPECT_THAT(st->prometheus_text(),
              HasSubstr("ternd_generate_tokens_total" + labels + " 34"));
  EXPECT_THAT(st->prometheus_text(),
              HasSubstr("ternd_generate_calls_total" + labels + " 5"));
  EXPECT_THAT(
      st->prometheus_text(),
      HasSubstr("ternd_generate_first_token_seconds_count" + labels + " 5"));
  EXPECT_THAT(
      st->prometheus_text(),
      HasSubstr("ternd_generate_tokens_per_second_count" + labels + " 5"));
  EXPECT_THAT(st->prometheus_text(), HasSubstr("ternd_llm_sessions 2"));
  EXPECT_THAT(st->prometheus_text(),
              HasSubstr("ternd_llm_kv_cache_capacity_tokens " +
                        std::to_string(2 * kContext)));
  // Both sessions' caches: chat-1 holds p3 and 5 of its 6 answer tokens.
  EXPECT_THAT(st->prometheus_text(),
              HasSubstr("ternd_llm_kv_cache_tokens " +
                        std::to_string(2 * (p3.size() + 5))));
}

// With every sequence holding a session, a new call evicts the least
// recently used one; an evicted session starts over (and answers the same).
TEST_F(GenerateTest, SessionsAreEvictedLeastRecentlyUsedFirst) {
  StartDaemon();  // llm.sequences = 2
  const std::vector<int32_t> pa = {10, 11, 12, 13}, pb = {20, 21, 22, 23},
                             pc = {30, 31, 32, 33};
  auto turn = [&](const std::vector<int32_t>& p, const std::string& session) {
    Streamed s = Generate(InSession(p, 4, session));
    EXPECT_TRUE(s.status.ok()) << s.status.message();
    EXPECT_EQ(s.tokens, Greedy(p, 4)) << session;
    return s.summary.reused_tokens();
  };
  auto evictions = [&] {
    auto c = Connect();
    Result<wire::StatsResponse> st = c->Stats();
    EXPECT_TRUE(st.ok());
    return st.ok() ? st->session_evictions() : ~0ull;
  };
  EXPECT_EQ(turn(pa, "a"), 0u);
  EXPECT_EQ(turn(pb, "b"), 0u);
  EXPECT_EQ(turn(pa, "a"), 3u);  // a used last: b is the older one
  EXPECT_EQ(evictions(), 0u);
  EXPECT_EQ(turn(pc, "c"), 0u);  // evicts b
  EXPECT_EQ(evictions(), 1u);
  EXPECT_EQ(turn(pa, "a"), 3u);  // a survived
  EXPECT_EQ(turn(pb, "b"), 0u);  // b starts over, evicting c
  EXPECT_EQ(evictions(), 2u);
  // A call without a session takes a sequence too: the older of a and b.
  Streamed plain = Generate(Tokens(pc, 4));
  ASSERT_TRUE(plain.status.ok());
  EXPECT_EQ(evictions(), 3u);
  EXPECT_EQ(turn(pb, "b"), 3u);
  EXPECT_EQ(turn(pa, "a"), 0u);

  // A session id longer than 128 bytes is refused.
  Streamed bad = Generate(InSession(pa, 4, std::string(129, 's')));
  EXPECT_EQ(bad.status.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status.message()), HasSubstr("session"));
}

TEST_F(GenerateTest, BadRequestsAreErrorsThatSayWhy) {
  StartDaemon("max_prompt_tokens = 8\n");
  auto expect_error = [&](const wire::GenerateRequest& r, StatusCode code,
                          const char* words) {
    Streamed s = Generate(r);
    EXPECT_EQ(s.status.code(), code) << s.status.message();
    EXPECT_THAT(std::string(s.status.message()), HasSubstr(words));
  };
  wire::GenerateRequest both = Tokens({1}, 4);
  both.set_prompt("x");
  expect_error(both, StatusCode::kInvalidArgument, "exactly one of prompt");
  expect_error(Tokens({1, 600}, 4), StatusCode::kInvalidArgument,
               "prompt_tokens[1] is 600, outside the vocabulary 0..599");
  expect_error(Tokens({1, 2, 3, 4, 5, 6, 7, 8, 9}, 4),
               StatusCode::kInvalidArgument,
               "9 tokens, more than the 8 allowed");
  wire::GenerateRequest hot = Tokens({1}, 4);
  hot.set_temperature(-1);
  expect_error(hot, StatusCode::kInvalidArgument, "temperature");
  // Infer is for graph models.
  auto c = Connect();
  wire::InferRequest ir;
  auto infer = c->Infer(ir);
  EXPECT_EQ(infer.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(infer.status().message()),
              HasSubstr("is a language model"));
  // ModelInfo describes the language model.
  auto info = c->ModelInfo();
  ASSERT_TRUE(info.ok());
  ASSERT_TRUE(info->has_language_model());
  EXPECT_EQ(info->language_model().vocab(), 600u);
  EXPECT_EQ(info->language_model().context(), static_cast<uint32_t>(kContext));
  EXPECT_EQ(info->language_model().sequences(), 2u);
  EXPECT_EQ(info->language_model().tokenizer(), "gpt2 llama-bpe");
  // Still serving after all that.
  EXPECT_EQ(Generate(Tokens({1, 2}, 3)).tokens.size(), 3u);
}

TEST_F(GenerateTest, DrainEndsGenerationsWithAFinalFrame) {
  StartDaemon();
  auto c = Connect();
  wire::Request req;
  req.set_id(9);
  *req.mutable_generate() = Tokens({1, 2}, 1000);
  ASSERT_TRUE(c->Send(req).ok());
  wire::Response r;
  ASSERT_TRUE(c->Receive(&r).ok());
  daemon_->Signal(SIGTERM);
  std::string reason;
  for (int i = 0; i < 2000; ++i) {
    ASSERT_TRUE(c->Receive(&r).ok());
    if (r.final()) {
      reason = r.generate().summary().stop_reason();
      break;
    }
  }
  // It may have reached the context before the signal landed.
  EXPECT_THAT(reason, ::testing::AnyOf("cancelled", "context"));
  EXPECT_EQ(daemon_->WaitExit(), 0) << daemon_->Log();
}

TEST_F(GenerateTest, TernctlGenerateStreamsTextAndJson) {
  StartDaemon();
  const std::string base = std::string(TERNCTL_PATH) + " generate -s " +
                           dir_->File("t.sock") + " --tokens 1,2,3 -n 8";
  FILE* p = popen((base + " --json 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  ASSERT_EQ(pclose(p), 0) << out;
  // Eight token lines and a summary line.
  int lines = 0;
  for (char ch : out) lines += ch == '\n';
  EXPECT_EQ(lines, 9) << out;
  EXPECT_THAT(out, HasSubstr("\"stop_reason\":\"length\""));
  const std::vector<int32_t> want = Greedy({1, 2, 3}, 8);
  EXPECT_THAT(out, HasSubstr("{\"tokens\":[" + std::to_string(want[0]) + "]"));
  p = popen((base + " 2>&1 >/dev/null").c_str(), "r");
  out.clear();
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  ASSERT_EQ(pclose(p), 0) << out;
  EXPECT_THAT(out, HasSubstr("[length: 3 prompt tokens"));
  // --session: the second call reuses the first's prompt (and its answer
  // but the last token: --tokens gives the prompt and 7 answer tokens).
  std::string prompt2 = "1,2,3";
  for (int i = 0; i < 7; ++i) prompt2 += "," + std::to_string(want[i]);
  for (const std::string& tokens : {std::string("1,2,3"), prompt2}) {
    p = popen(
        (std::string(TERNCTL_PATH) + " generate -s " + dir_->File("t.sock") +
         " --tokens " + tokens + " -n 8 --session cli 2>&1 >/dev/null")
            .c_str(),
        "r");
    out.clear();
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    ASSERT_EQ(pclose(p), 0) << out;
  }
  EXPECT_THAT(out, HasSubstr("[length: 10 prompt tokens (9 reused) at"));
  // infer on a language model says to use generate.
  p = popen((std::string(TERNCTL_PATH) + " infer -s " + dir_->File("t.sock") +
             " --values 1 2>&1")
                .c_str(),
            "r");
  out.clear();
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  EXPECT_NE(pclose(p), 0);
  EXPECT_THAT(out, HasSubstr("use ternctl generate"));
}

TEST(GenerateOnGraphModelTest, SaysItNeedsALanguageModel) {
  TempDir dir;
  ASSERT_TRUE(WriteTestModel(FastModel(), dir.File("model.tern")).ok());
  WriteText(dir.File("ternd.toml"),
            "[server]\nsocket = \"" + dir.File("t.sock") +
                "\"\n[runtime]\nmodel = \"" + dir.File("model.tern") + "\"\n");
  DaemonOptions o;
  o.directory = dir.path();
  o.config_path = dir.File("ternd.toml");
  DaemonProcess d(o);
  ASSERT_TRUE(d.WaitForNotify("READY=1")) << d.Log();
  auto c = client::Client::Connect(dir.File("t.sock"));
  ASSERT_TRUE(c.ok());
  auto s = (*c)->Generate(Tokens({1}, 2),
                          [](const wire::GenerateResponse&) { return true; });
  EXPECT_EQ(s.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr("Generate needs a language model"));
}

}  // namespace
}  // namespace ternd::daemon_testing
