#include "runtime/lm/sampler.h"

#include <sys/random.h>

#include <algorithm>
#include <cmath>
#include <ctime>

#include "runtime/ops.h"

namespace ternd::runtime {
namespace {

constexpr int kDefaultTopK = 40;
constexpr uint32_t kDefaultRepeatLastN = 64;

uint64_t SplitMix64(uint64_t* s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Rng::Rng(uint64_t seed) {
  for (uint64_t& w : s_) w = SplitMix64(&seed);
}

double Rng::Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

uint64_t Rng::Next() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

uint64_t RandomSeed() {
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed)) {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    seed = static_cast<uint64_t>(ts.tv_sec) * 1000000000u +
           static_cast<uint64_t>(ts.tv_nsec);
  }
  return seed;
}

Sampler::Sampler(uint32_t vocab, const SamplingParams& params, uint64_t seed)
    : vocab_(vocab),
      params_(params),
      rng_(seed),
      index_(params.temperature > 0 ? vocab : 0),
      p_(params.temperature > 0 ? vocab : 0) {}

int32_t Sampler::Sample(float* z, std::span<const int32_t> history,
                        float* logprob) {
  const uint32_t V = vocab_;
  const SamplingParams& r = params_;
  // Repetition penalty over the last tokens.
  const float penalty = r.repetition_penalty;
  if (penalty > 0 && penalty != 1.0f) {
    const uint32_t last_n =
        r.repeat_last_n > 0 ? r.repeat_last_n : kDefaultRepeatLastN;
    const size_t from = history.size() > last_n ? history.size() - last_n : 0;
    for (size_t i = from; i < history.size(); ++i) {
      float& v = z[history[i]];
      // Once per distinct token of the window, as llama.cpp applies it.
      bool seen = false;
      for (size_t j = from; j < i; ++j) seen |= history[j] == history[i];
      if (!seen) v = v > 0 ? v / penalty : v * penalty;
    }
  }
  // Log-softmax of the (penalized) logits for logprobs.
  double lse = 0;
  if (r.logprobs) {
    int32_t top;
    Argmax(z, 1, V, &top);
    const float zmax = z[top];
    for (uint32_t v = 0; v < V; ++v) lse += std::exp(double(z[v]) - zmax);
    lse = std::log(lse) + zmax;
    // The most likely tokens: insertion into a short sorted list, one pass.
    const size_t want = std::min<size_t>(r.top_logprobs, kMaxTopLogprobs);
    top_n_ = 0;
    for (uint32_t v = 0; v < V && want > 0; ++v) {
      const float zv = z[v];
      if (top_n_ == want && !(zv > top_[top_n_ - 1].logprob)) continue;
      size_t at = top_n_ < want ? top_n_++ : want - 1;
      while (at > 0 && zv > top_[at - 1].logprob) {
        top_[at] = top_[at - 1];
        --at;
      }
      top_[at] = {static_cast<int32_t>(v), zv};
    }
    for (size_t i = 0; i < top_n_; ++i) {
      top_[i].logprob = static_cast<float>(top_[i].logprob - lse);
    }
  }
  int32_t token;
  if (r.temperature <= 0) {
    Argmax(z, 1, V, &token);  // the lowest index among equals
  } else {
    const float inv_t = 1.0f / r.temperature;
    int32_t* idx = index_.data();
    for (uint32_t v = 0; v < V; ++v) idx[v] = static_cast<int32_t>(v);
    uint32_t n = V;
    const int k = r.top_k == 0 ? kDefaultTopK : r.top_k;
    auto by_logit = [z](int32_t x, int32_t y) {
      return z[x] > z[y] || (z[x] == z[y] && x < y);
    };
    if (k > 0 && static_cast<uint32_t>(k) < n) {
      std::nth_element(idx, idx + k, idx + n, by_logit);
      n = static_cast<uint32_t>(k);
    }
    std::sort(idx, idx + n, by_logit);
    // Softmax over the candidates at the temperature, in double.
    double* p = p_.data();
    const double top = double(z[idx[0]]) * inv_t;
    double sum = 0;
    for (uint32_t i = 0; i < n; ++i) {
      p[i] = std::exp(double(z[idx[i]]) * inv_t - top);
      sum += p[i];
    }
    // min-p: drop candidates below min_p times the most likely one.
    if (r.min_p > 0) {
      uint32_t keep = 1;
      while (keep < n && p[keep] / p[0] >= r.min_p) ++keep;
      for (uint32_t i = keep; i < n; ++i) sum -= p[i];
      n = keep;
    }
    // top-p: the smallest prefix whose mass reaches top_p.
    if (r.top_p > 0 && r.top_p < 1) {
      double acc = 0;
      uint32_t keep = 0;
      while (keep < n) {
        acc += p[keep++] / sum;
        if (acc >= r.top_p) break;
      }
      double kept = 0;
      for (uint32_t i = 0; i < keep; ++i) kept += p[i];
      sum = kept;
      n = keep;
    }
    double u = rng_.Uniform() * sum;
    token = idx[n - 1];
    for (uint32_t i = 0; i < n; ++i) {
      u -= p[i];
      if (u < 0) {
        token = idx[i];
        break;
      }
    }
  }
  if (r.logprobs && logprob != nullptr) {
    *logprob = static_cast<float>(z[token] - lse);
  }
  return token;
}

}  // namespace ternd::runtime
