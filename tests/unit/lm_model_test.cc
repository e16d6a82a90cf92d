// Language models in the runtime (runtime/lm/): GGUF files written at test
// time by python/ternd/gguf_writer.py (random weights), converted in-process
// (runtime/lm/convert.h) and by `ternctl convert`, loaded with
// Runtime::LoadLm and evaluated. The comparison with the PyTorch reference
// is in lm_reference_test.cc; here: the runtime agrees with itself across
// batching, threads and sequences, the golden check, limits and errors,
// and no allocation while tokens are evaluated.
#include "runtime/lm/lm_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "base/file.h"
#include "runtime/format.h"
#include "runtime/gguf/gguf_reader.h"
#include "runtime/lm/convert.h"
#include "runtime/lm/lm_tokenizer.h"
#include "runtime/lm/sampler.h"
#include "runtime/lm/thread_team.h"
#include "runtime/runtime.h"
#include "tests/support/alloc_hooks.h"
#include "tests/support/test_env.h"

namespace ternd::runtime {
namespace {

using ternd::testing::TempDir;

std::string WriteGguf(const TempDir& dir, const std::string& name,
                      const std::string& args) {
  const std::string out = dir / name;
  const std::string cmd = std::string(PYTHON_PATH) + " " + GGUF_WRITER_PATH +
                          " " + args + " -o " + out;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return out;
}

ModelFile Convert(const std::string& gguf_path, const std::string& head) {
  Result<gguf::GgufFile> g = gguf::GgufFile::Open(gguf_path);
  EXPECT_TRUE(g.ok()) << g.status().message();
  lm::ConvertOptions opt;
  opt.head = head;
  Result<std::vector<uint8_t>> bytes = lm::ConvertGguf(*g, opt);
  EXPECT_TRUE(bytes.ok()) << bytes.status().message();
  Result<ModelFile> f = ModelFile::Parse(std::move(*bytes), gguf_path);
  EXPECT_TRUE(f.ok()) << f.status().message();
  return std::move(*f);
}

struct Loaded {
  std::unique_ptr<Runtime> rt;
  const LmModel* m = nullptr;
};

Loaded Load(const ModelFile& f, int threads, int sequences = 1,
            int max_context = 64, const char* kernel = "auto") {
  RuntimeOptions ro;
  ro.slots = 1;
  ro.kernel = kernel;
  ro.arena_bytes = size_t{64} << 20;
  Result<std::unique_ptr<Runtime>> rt = Runtime::Create(ro);
  EXPECT_TRUE(rt.ok()) << rt.status().message();
  LmOptions lo;
  lo.threads = threads;
  lo.sequences = sequences;
  lo.max_context = max_context;
  Result<const LmModel*> m = (*rt)->LoadLm(0, f, lo);
  EXPECT_TRUE(m.ok()) << m.status().message();
  Loaded out;
  out.rt = std::move(*rt);
  out.m = m.ok() ? *m : nullptr;
  return out;
}

std::vector<int32_t> Tokens(int n, uint32_t vocab, uint32_t seed) {
  std::vector<int32_t> t(n);
  uint32_t x = seed;
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    t[i] = static_cast<int32_t>((x >> 8) % vocab);
  }
  return t;
}

// Logits after each token, fed one at a time.
std::vector<float> Incremental(const LmModel& m, int seq,
                               const std::vector<int32_t>& tokens) {
  std::vector<float> out;
  const uint32_t V = m.shape().vocab;
  for (size_t i = 0; i < tokens.size(); ++i) {
    Status s = m.Eval(seq, {&tokens[i], 1}, static_cast<int>(i));
    EXPECT_TRUE(s.ok()) << s.message();
    out.insert(out.end(), m.logits(0), m.logits(0) + V);
  }
  return out;
}

class LmModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    small_ = new std::string(WriteGguf(
        *dir_, "small.gguf",
        "--arch bitnet-b1.58 --hidden 64 --ffn 96 --layers 2 --heads 4 "
        "--kv-heads 2 --vocab 300 --seed 3"));
  }
  static void TearDownTestSuite() {
    delete small_;
    delete dir_;
  }
  static TempDir* dir_;
  static std::string* small_;
};
TempDir* LmModelTest::dir_ = nullptr;
std::string* LmModelTest::small_ = nullptr;

TEST_F(LmModelTest, ConvertedFileDescribesTheModel) {
  ModelFile f = Convert(*small_, "int8");
  EXPECT_EQ(f.format_version(), 2u);
  ASSERT_TRUE(f.is_language_model());
  const model::LanguageModel& lm = f.header().lm();
  EXPECT_EQ(lm.layers(), 2u);
  EXPECT_EQ(lm.embedding(), 64u);
  EXPECT_EQ(lm.ffn(), 96u);
  EXPECT_EQ(lm.heads(), 4u);
  EXPECT_EQ(lm.kv_heads(), 2u);
  EXPECT_EQ(lm.vocab(), 300u);
  EXPECT_EQ(lm.ffn_activation(), model::LanguageModel::RELU2);
  EXPECT_TRUE(lm.sub_norms());
  EXPECT_TRUE(lm.tied_output());
  EXPECT_EQ(lm.tokenizer().model(), "gpt2");
  EXPECT_EQ(lm.tokenizer().tokens_size(), 300);
  EXPECT_EQ(f.FindTensor("token_embd.weight")->info->dtype(), model::I8);
  ModelFile h = Convert(*small_, "f16");
  EXPECT_EQ(h.FindTensor("token_embd.weight")->info->dtype(), model::F16);
  // The int8 head halves the table's bytes.
  EXPECT_EQ(f.FindTensor("token_embd.weight")->bytes.size() * 2,
            h.FindTensor("token_embd.weight")->bytes.size());
}

TEST_F(LmModelTest, BatchedPromptEqualsOneTokenAtATime) {
  ModelFile f = Convert(*small_, "f16");
  Loaded a = Load(f, 1);
  ASSERT_NE(a.m, nullptr);
  const uint32_t V = a.m->shape().vocab;
  const std::vector<int32_t> tokens = Tokens(40, V, 7);
  const std::vector<float> one = Incremental(*a.m, 0, tokens);
  // The same tokens in batches of up to 16 (all logits per batch), and a
  // long prompt in one call (logits of its last token).
  for (int start = 0; start < 40; start += 16) {
    const int n = std::min(16, 40 - start);
    ASSERT_TRUE(a.m->Eval(0, {tokens.data() + start, static_cast<size_t>(n)},
                          start, true)
                    .ok());
    for (int i = 0; i < n; ++i) {
      ASSERT_EQ(std::memcmp(a.m->logits(i), one.data() + (start + i) * V,
                            sizeof(float) * V),
                0)
          << "position " << start + i;
    }
  }
  ASSERT_TRUE(a.m->Eval(0, tokens, 0).ok());
  EXPECT_EQ(std::memcmp(a.m->logits(0), one.data() + 39 * V, sizeof(float) * V),
            0);
  // And the logits are a real function of the input: they vary over the
  // vocabulary and between positions.
  float lo = one[0], hi = one[0];
  for (uint32_t v = 0; v < V; ++v) {
    ASSERT_TRUE(std::isfinite(one[v]));
    lo = std::min(lo, one[v]);
    hi = std::max(hi, one[v]);
  }
  EXPECT_LT(lo, hi);
  EXPECT_NE(std::memcmp(one.data(), one.data() + V, sizeof(float) * V), 0);
}

TEST_F(LmModelTest, ThreadsDoNotChangeTheResult) {
  ModelFile f = Convert(*small_, "int8");
  const std::vector<int32_t> tokens = Tokens(20, 300, 11);
  Loaded one = Load(f, 1);
  const std::vector<float> ref = Incremental(*one.m, 0, tokens);
  for (int threads : {2, 3, 5}) {
    Loaded t = Load(f, threads);
    ASSERT_NE(t.m, nullptr);
    EXPECT_EQ(t.m->threads(), threads);
    EXPECT_EQ(Incremental(*t.m, 0, tokens), ref) << threads << " threads";
  }
}

TEST_F(LmModelTest, SequencesAreIndependent) {
  ModelFile f = Convert(*small_, "int8");
  Loaded a = Load(f, 2, 3);
  const std::vector<int32_t> t0 = Tokens(10, 300, 1), t1 = Tokens(10, 300, 2);
  const std::vector<float> alone = Incremental(*a.m, 0, t0);
  // Interleave sequence 2 between the tokens of sequence 0.
  std::vector<float> interleaved;
  const uint32_t V = 300;
  for (size_t i = 0; i < t0.size(); ++i) {
    ASSERT_TRUE(a.m->Eval(2, {&t1[i], 1}, static_cast<int>(i)).ok());
    ASSERT_TRUE(a.m->Eval(0, {&t0[i], 1}, static_cast<int>(i)).ok());
    interleaved.insert(interleaved.end(), a.m->logits(0), a.m->logits(0) + V);
  }
  EXPECT_EQ(interleaved, alone);
}

TEST_F(LmModelTest, EveryArchitectureAndTernaryTypeRuns) {
  struct Case {
    const char* args;
    model::LanguageModel::Activation act;
    bool sub_norms;
  };
  const Case cases[] = {
      {"--arch bitnet-b1.58 --ternary i2_s", model::LanguageModel::RELU2, true},
      {"--arch bitnet-25 --ternary tq2_0 --head-type q8_0",
       model::LanguageModel::RELU2, true},
      {"--arch bitnet --ternary tq1_0 --head-type f16",
       model::LanguageModel::SILU, true},
      {"--arch llama --ternary i2_s --rope-freqs --embd-type q6_k",
       model::LanguageModel::SILU, false},
  };
  int i = 0;
  for (const Case& c : cases) {
    const std::string path = WriteGguf(
        *dir_, "arch" + std::to_string(i++) + ".gguf",
        std::string(c.args) +
            " --hidden 256 --ffn 256 --layers 2 --heads 4 --kv-heads 1 "
            "--vocab 260");
    ModelFile f = Convert(path, "f16");
    EXPECT_EQ(f.header().lm().ffn_activation(), c.act) << c.args;
    EXPECT_EQ(f.header().lm().sub_norms(), c.sub_norms) << c.args;
    Loaded a = Load(f, 2);
    ASSERT_NE(a.m, nullptr) << c.args;
    const std::vector<float> z = Incremental(*a.m, 0, Tokens(6, 260, 5));
    float lo = z[0], hi = z[0];
    for (float v : z) {
      ASSERT_TRUE(std::isfinite(v)) << c.args;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    EXPECT_LT(lo, hi) << c.args;
  }
}

TEST_F(LmModelTest, TernctlConvertRecordsAGoldenCheckTheRuntimeRepeats) {
  const std::string out = *dir_ / "golden.tern";
  testing::CommandResult r = testing::RunCommand(
      std::string(TERNCTL_PATH) + " convert " + *small_ + " -o " + out +
      " --golden-tokens 5 --threads 2 --name tiny --model-version 7");
  ASSERT_EQ(r.exit_code, 0) << (r.out + r.err);
  EXPECT_NE((r.out + r.err).find("golden check recorded"), std::string::npos)
      << (r.out + r.err);
  Result<ModelFile> f = ModelFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->header().name(), "tiny");
  EXPECT_EQ(f->header().version(), 7u);
  ASSERT_EQ(f->header().lm().golden_tokens_size(), 5);
  {
    Loaded a = Load(*f, 1, 1, 16);
    Status s = a.m->CheckGolden();
    EXPECT_TRUE(s.ok()) << s.message();
  }
  // A file whose golden tokens do not match what the model computes fails
  // the check, naming the token and both ids.
  model::ModelHeader h = f->header();
  h.mutable_lm()->set_golden_tokens(
      2, (h.lm().golden_tokens(2) + 1) % static_cast<int>(h.lm().vocab()));
  Result<std::vector<uint8_t>> bad = ModelWriter::ReplaceHeader(*f, h);
  ASSERT_TRUE(bad.ok()) << bad.status().message();
  Result<ModelFile> bf = ModelFile::Parse(std::move(*bad), "bad.tern");
  ASSERT_TRUE(bf.ok()) << bf.status().message();
  Loaded b = Load(*bf, 1, 1, 16);
  Status s = b.m->CheckGolden();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("greedy token #2"), std::string::npos)
      << s.message();
}

TEST_F(LmModelTest, LimitsAreErrorsThatSayWhich) {
  ModelFile f = Convert(*small_, "int8");
  Loaded a = Load(f, 1, 2, 8);
  const int32_t ok_token = 5, bad_token = 300;
  Status s = a.m->Eval(2, {&ok_token, 1}, 0);
  EXPECT_NE(std::string(s.message()).find("sequence 2 is outside 0..1"),
            std::string::npos)
      << s.message();
  s = a.m->Eval(0, {&bad_token, 1}, 0);
  EXPECT_NE(std::string(s.message()).find("token #0 is 300"), std::string::npos)
      << s.message();
  s = a.m->Eval(0, {&ok_token, 1}, 8);
  EXPECT_NE(std::string(s.message()).find("context of 8 tokens"),
            std::string::npos)
      << s.message();
  // A model that does not fit names its parts.
  RuntimeOptions ro;
  ro.slots = 2;
  ro.arena_bytes = 256 << 10;
  auto rt = Runtime::Create(ro);
  ASSERT_TRUE(rt.ok());
  LmOptions lo;
  lo.threads = 1;
  lo.max_context = 4096;
  Result<const LmModel*> m = (*rt)->LoadLm(0, f, lo);
  ASSERT_FALSE(m.ok());
  for (const char* w :
       {"KV cache", "4096 tokens", "llm.max_context", "cold swap"}) {
    EXPECT_NE(std::string(m.status().message()).find(w), std::string::npos)
        << m.status().message();
  }
  // A graph model is not a language model, and the reverse.
  Result<const LoadedModel*> g = (*rt)->Load(0, f);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(std::string(g.status().message()).find("is a language model"),
            std::string::npos);
}

TEST_F(LmModelTest, ReportsItsMemory) {
  ModelFile f = Convert(*small_, "int8");
  Loaded a = Load(f, 2, 2, 32);
  const LmShape& sh = a.m->shape();
  // KV cache: sequences x layers x 2 (K, V) x kv heads x context x head
  // width, 2 bytes each.
  EXPECT_EQ(a.m->kv_cache_bytes(),
            size_t{2} * 2 * sh.layers * 2 * sh.kv_heads * 32 * sh.head_dim);
  EXPECT_GT(a.m->bytes_per_token(), 0u);
  EXPECT_LE(a.m->slot_bytes_used(), a.rt->slot_bytes());
  EXPECT_EQ(a.m->ternary_matrices(), 14);
}

TEST_F(LmModelTest, EvaluatingTokensDoesNotAllocate) {
  ModelFile f = Convert(*small_, "int8");
  Loaded a = Load(f, 2, 1, 64);
  const std::vector<int32_t> tokens = Tokens(40, 300, 9);
  auto run = [&] {
    float sum = 0;
    if (!a.m->Eval(0, {tokens.data(), 24}, 0).ok()) return -1.0f;
    sum += a.m->logits(0)[0];
    for (int i = 24; i < 40; ++i) {
      if (!a.m->Eval(0, {&tokens[i], 1}, i).ok()) return -1.0f;
      sum += a.m->logits(0)[i];
    }
    return sum;
  };
  const float expected = run();
  float got;
  {
    ternd::testing::AllocCounting c;
    got = run();
    EXPECT_TRUE(a.m->CheckGolden().ok());
    EXPECT_EQ(c.count(), 0) << "heap allocations while evaluating tokens";
  }
  EXPECT_EQ(got, expected);
}

// A whole generation as the daemon runs it: the prompt, then per token the
// logits copied out, a token drawn (greedy with a repetition penalty, and
// temperature with top-k, min-p, top-p and logprobs), its text decoded and
// the token evaluated. Only the heap is counted, while the second of two
// identical runs goes (the first warms up lazily made state).
TEST_F(LmModelTest, AWholeGenerationDoesNotAllocate) {
  ModelFile f = Convert(*small_, "int8");
  Loaded a = Load(f, 2, 1, 64);
  auto tok = lm::TokenizerOf(f.header().lm());
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  const uint32_t V = a.m->shape().vocab;
  const std::vector<int32_t> prompt = Tokens(12, 300, 5);
  SamplingParams greedy;
  greedy.repetition_penalty = 1.3f;
  SamplingParams sampled;
  sampled.temperature = 0.9f;
  sampled.top_k = 50;
  sampled.top_p = 0.95f;
  sampled.min_p = 0.01f;
  sampled.logprobs = true;
  std::vector<float> logits(V);
  std::vector<int32_t> history;
  history.reserve(64);
  tokenizer::StreamDecoder decoder(**tok);
  auto run = [&](Sampler& sampler, const SamplingParams& params,
                 std::vector<int32_t>* out) {
    history.assign(prompt.begin(), prompt.end());
    decoder.Reset();
    size_t text_bytes = 0;
    if (!a.m->Eval(0, prompt, 0).ok()) return false;
    for (int i = 0; i < 40; ++i) {
      std::copy(a.m->logits(0), a.m->logits(0) + V, logits.data());
      float logprob = 1;
      const int32_t t = sampler.Sample(logits.data(), history, &logprob);
      if (params.logprobs && !(logprob <= 0)) return false;
      text_bytes += decoder.Push(t).size();
      history.push_back(t);
      if (!a.m->Eval(0, {&t, 1}, static_cast<int>(history.size()) - 1).ok()) {
        return false;
      }
    }
    text_bytes += decoder.Flush().size();
    out->assign(history.begin() + static_cast<long>(prompt.size()),
                history.end());
    return text_bytes > 0;
  };
  for (const SamplingParams& params : {greedy, sampled}) {
    std::vector<int32_t> first, second;
    second.reserve(64);
    Sampler warm(V, params, 42);
    ASSERT_TRUE(run(warm, params, &first));
    // The sampler's scratch is made before counting, as the daemon makes
    // it when the call is accepted.
    Sampler sampler(V, params, 42);
    {
      ternd::testing::AllocCounting c;
      ASSERT_TRUE(run(sampler, params, &second));
      EXPECT_EQ(c.count(), 0) << "heap allocations during a generation";
    }
    EXPECT_EQ(second, first) << "the same seed gives the same tokens";
  }
}

// A sampler draws only from what the truncations leave, and a seed gives
// the same draws.
TEST(SamplerTest, TopLogprobsAreTheLikeliestInOrder) {
  // Logits with ties and the likeliest not first.
  std::vector<float> z = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, 0.5f, -3.0f};
  SamplingParams p;
  p.logprobs = true;
  p.top_logprobs = 4;
  Sampler s(7, p, 1);
  double lse = 0;
  for (float v : z) lse += std::exp(double(v));
  lse = std::log(lse);
  std::vector<float> copy = z;
  float logprob = 0;
  EXPECT_EQ(s.Sample(copy.data(), {}, &logprob), 1);  // the lowest of equals
  ASSERT_EQ(s.top().size(), 4u);
  const int32_t want[] = {1, 3, 4, 0};  // ties: the lower id first
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(s.top()[i].token, want[i]) << i;
    EXPECT_NEAR(s.top()[i].logprob, z[want[i]] - lse, 1e-5) << i;
  }
  EXPECT_EQ(s.top()[0].logprob, logprob);
  // More than the vocabulary: all of it; none without top_logprobs.
  p.top_logprobs = kMaxTopLogprobs;
  Sampler all(7, p, 1);
  copy = z;
  all.Sample(copy.data(), {}, &logprob);
  EXPECT_EQ(all.top().size(), 7u);
  EXPECT_EQ(all.top()[6].token, 6);
  p.top_logprobs = 0;
  Sampler none(7, p, 1);
  copy = z;
  none.Sample(copy.data(), {}, &logprob);
  EXPECT_TRUE(none.top().empty());
}

TEST(SamplerTest, TruncationsAndSeeds) {
  std::vector<float> z(100, 0.0f);
  for (int v = 0; v < 100; ++v) z[v] = -0.05f * static_cast<float>(v);
  auto draws = [&](const SamplingParams& p, uint64_t seed) {
    Sampler s(100, p, seed);
    std::vector<int32_t> out;
    for (int i = 0; i < 300; ++i) {
      std::vector<float> copy = z;
      out.push_back(s.Sample(copy.data(), {}, nullptr));
    }
    return out;
  };
  SamplingParams greedy;
  for (int32_t t : draws(greedy, 1)) EXPECT_EQ(t, 0);
  SamplingParams k3;
  k3.temperature = 1;
  k3.top_k = 3;
  std::vector<int32_t> d = draws(k3, 7);
  for (int32_t t : d) EXPECT_LT(t, 3);
  EXPECT_EQ(std::count(d.begin(), d.end(), 2) > 0, true);
  EXPECT_EQ(draws(k3, 7), d);
  EXPECT_NE(draws(k3, 8), d);
  // min-p 0.9 of the best: exp(-0.05) = 0.95 keeps token 1, exp(-0.1) =
  // 0.905 keeps token 2, exp(-0.15) = 0.86 does not keep token 3.
  SamplingParams minp;
  minp.temperature = 1;
  minp.top_k = -1;
  minp.min_p = 0.9f;
  for (int32_t t : draws(minp, 3)) EXPECT_LT(t, 3);
  // top-p: a tiny mass keeps the most likely token only.
  SamplingParams topp;
  topp.temperature = 1;
  topp.top_p = 0.001f;
  for (int32_t t : draws(topp, 3)) EXPECT_EQ(t, 0);
  // The repetition penalty pushes a repeated best token down.
  SamplingParams pen;
  pen.repetition_penalty = 50;
  std::vector<float> copy = z;
  copy[0] = 1.0f;
  copy[1] = 0.5f;  // 1 / 50 < 0.5
  const int32_t hist[] = {0, 0, 0};
  Sampler s(100, pen, 1);
  EXPECT_EQ(s.Sample(copy.data(), hist, nullptr), 1);
}

TEST(ThreadTeamTest, EveryMemberRunsEveryRound) {
  for (int members : {1, 2, 4}) {
    ThreadTeam team(members);
    struct Ctx {
      std::atomic<int> calls{0};
      std::atomic<int> member_sum{0};
    } ctx;
    for (int round = 0; round < 2000; ++round) {
      team.Run(
          [](void* p, int member, int n) {
            auto* c = static_cast<Ctx*>(p);
            c->calls.fetch_add(1);
            c->member_sum.fetch_add(member);
            (void)n;
          },
          &ctx);
      // Run returns only after every member has finished the round.
      ASSERT_EQ(ctx.calls.load(), (round + 1) * members);
    }
    EXPECT_EQ(ctx.member_sum.load(), 2000 * members * (members - 1) / 2);
  }
}

TEST(ThreadTeamTest, SleepingHelpersWakeUp) {
  ThreadTeam team(3);
  std::atomic<int> calls{0};
  for (int round = 0; round < 3; ++round) {
    // Long enough for the helpers to stop spinning and sleep.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    team.Run([](void* p, int,
                int) { static_cast<std::atomic<int>*>(p)->fetch_add(1); },
             &calls);
    EXPECT_EQ(calls.load(), 3 * (round + 1));
  }
}

TEST(ThreadTeamTest, PhasesRunEveryTaskOnceAndInOrder) {
  for (int members : {1, 2, 3}) {
    ThreadTeam team(members);
    // Phases of 1, 7, 2, 5 and 1 tasks.
    const int phase_end[] = {1, 8, 10, 15, 16};
    struct Ctx {
      std::atomic<int> runs[16];
      std::atomic<int> finished[5];
      std::atomic<int> out_of_order{0};
      std::atomic<int> members_seen{0};
    } ctx;
    for (int round = 0; round < 500; ++round) {
      for (auto& r : ctx.runs) r = 0;
      for (auto& f : ctx.finished) f = 0;
      team.RunPhases(
          [](void* p, int member, int phase, int index) {
            auto* c = static_cast<Ctx*>(p);
            static constexpr int kFirst[] = {0, 1, 8, 10, 15};
            static constexpr int kCount[] = {1, 7, 2, 5, 1};
            // Every task of the phases before has finished.
            for (int q = 0; q < phase; ++q) {
              if (c->finished[q].load() != kCount[q]) ++c->out_of_order;
            }
            c->runs[kFirst[phase] + index].fetch_add(1);
            c->members_seen.fetch_or(1 << member);
            if (index % 3 == 0) std::this_thread::yield();
            c->finished[phase].fetch_add(1);
          },
          &ctx, phase_end, 5);
      for (int t = 0; t < 16; ++t) {
        ASSERT_EQ(ctx.runs[t].load(), 1) << "task " << t << ", round " << round;
      }
      ASSERT_EQ(ctx.out_of_order.load(), 0) << "round " << round;
    }
    // The caller takes part; helpers may or may not (a helper that is not
    // running is not waited for).
    EXPECT_TRUE(ctx.members_seen.load() & 1);
    EXPECT_LT(ctx.members_seen.load(), 1 << members);
  }
}

TEST(ThreadTeamTest, PhasedAndPlainRoundsMix) {
  ThreadTeam team(3);
  std::atomic<int> calls{0}, tasks{0};
  const int phase_end[] = {4, 6};
  for (int round = 0; round < 300; ++round) {
    team.RunPhases([](void* p, int, int,
                      int) { static_cast<std::atomic<int>*>(p)->fetch_add(1); },
                   &tasks, phase_end, 2);
    ASSERT_EQ(tasks.load(), 6 * (round + 1));
    if (round % 50 == 0) {
      // Long enough for the helpers to sleep.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    team.Run([](void* p, int,
                int) { static_cast<std::atomic<int>*>(p)->fetch_add(1); },
             &calls);
    ASSERT_EQ(calls.load(), 3 * (round + 1));
  }
}

}  // namespace
}  // namespace ternd::runtime
