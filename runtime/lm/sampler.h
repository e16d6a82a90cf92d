// Drawing the next token from a language model's logits: greedy, or
// temperature with top-k, min-p and top-p, after a repetition penalty;
// seeded so that a seed reproduces a generation on any machine
// (docs/protocol.md, "Generate", Sampling).
//
// The scratch (one entry per vocabulary token) is allocated when the
// sampler is made; Sample never allocates.
//
// Thread-safety: one sampler per generation, used by one thread at a time.
#ifndef TERND_RUNTIME_LM_SAMPLER_H_
#define TERND_RUNTIME_LM_SAMPLER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace ternd::runtime {

// xoshiro256** seeded through SplitMix64: small, fast and the same on
// every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  double Uniform();  // in [0, 1)

 private:
  uint64_t Next();
  uint64_t s_[4];
};

// A seed from the system's entropy (getrandom), or the clock without it.
uint64_t RandomSeed();

struct SamplingParams {
  float temperature = 0;  // 0: greedy
  int top_k = 0;          // 0: 40; < 0: no limit
  float top_p = 0;        // 0 or >= 1: off
  float min_p = 0;        // 0: off
  // > 1 discourages recent tokens (llama.cpp's rule: positive logits
  // divided by it, negative multiplied, once per distinct token of the
  // window); 0 or 1: off.
  float repetition_penalty = 0;
  uint32_t repeat_last_n = 0;  // 0: 64
  bool logprobs = false;
  // With logprobs: also the this many most likely tokens (at most
  // kMaxTopLogprobs), read with top() after Sample.
  uint32_t top_logprobs = 0;
};

inline constexpr uint32_t kMaxTopLogprobs = 20;

// A candidate token and its log-probability (as Sample's *logprob).
struct TokenLogprob {
  int32_t token;
  float logprob;
};

class Sampler {
 public:
  Sampler(uint32_t vocab, const SamplingParams& params, uint64_t seed);

  // The next token after `history` (prompt and tokens so far) from the
  // logits `z` [vocab], which it changes (the penalty, the order of
  // candidates). With params.logprobs, *logprob is the token's natural
  // log-probability after the penalty, before temperature and truncation.
  int32_t Sample(float* z, std::span<const int32_t> history, float* logprob);
  // With params.top_logprobs: the most likely tokens of the last Sample,
  // likeliest first (the lowest id first among equals).
  std::span<const TokenLogprob> top() const { return {top_.data(), top_n_}; }

 private:
  uint32_t vocab_;
  SamplingParams params_;
  Rng rng_;
  std::vector<int32_t> index_;
  std::vector<double> p_;
  std::array<TokenLogprob, kMaxTopLogprobs> top_{};
  size_t top_n_ = 0;
};

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_LM_SAMPLER_H_
