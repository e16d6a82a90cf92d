#include "runtime/gguf/gguf_arch.h"

#include <cmath>
#include <cstdio>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "runtime/gguf/gguf_decode.h"

namespace ternd::gguf {
namespace {

using ull = unsigned long long;

constexpr const char* kLinear[] = {"attn_q",      "attn_k",   "attn_v",
                                   "attn_output", "ffn_gate", "ffn_up",
                                   "ffn_down"};

// Reads "<arch>.<name>" as a u32 in [lo, hi].
Status ReadCount(const GgufFile& f, const std::string& arch, const char* name,
                 uint32_t lo, uint32_t hi, uint32_t* out) {
  const std::string key = arch + "." + name;
  Result<uint32_t> v = f.GetU32(key);
  if (!v.ok()) return v.status();
  if (*v < lo || *v > hi) {
    return InvalidArgument("%s: key '%s' is %u, expected %u..%u",
                           f.origin().c_str(), key.c_str(), *v, lo, hi);
  }
  *out = *v;
  return Status::Ok();
}

Status ReadPositive(const GgufFile& f, const std::string& key, float* out) {
  Result<float> v = f.GetF32(key);
  if (!v.ok()) return v.status();
  if (!(*v > 0)) {
    return InvalidArgument("%s: key '%s' is %g, expected a positive value",
                           f.origin().c_str(), key.c_str(),
                           static_cast<double>(*v));
  }
  *out = *v;
  return Status::Ok();
}

std::string Dims(const std::vector<uint64_t>& dims) {
  std::string s = "[";
  bool first = true;
  for (uint64_t d : dims) {
    s += (first ? "" : ", ") + std::to_string(d);
    first = false;
  }
  return s + "]";
}

enum class Kind { kTernary, kFloat, kScale };

// Checks that `name` is present with `dims` and a type of `kind`.
Status Expect(const GgufFile& f, const std::string& name,
              const std::vector<uint64_t>& dims, Kind kind) {
  const TensorInfo* t = f.FindTensor(name);
  if (t == nullptr) {
    return NotFound("%s: tensor '%s' %s is missing", f.origin().c_str(),
                    name.c_str(), Dims(dims).c_str());
  }
  bool same = t->n_dims == static_cast<int>(dims.size());
  int i = 0;
  for (uint64_t d : dims) same = same && t->dims[i++] == d;
  if (!same) {
    return InvalidArgument(
        "%s: tensor '%s' (#%d) has dims %s, expected %s from the "
        "hyper-parameters",
        f.origin().c_str(), name.c_str(), t->index, DimsString(*t).c_str(),
        Dims(dims).c_str());
  }
  const char* expected = nullptr;
  if (kind == Kind::kTernary && !IsTernaryType(t->type)) {
    expected =
        "a ternary type (I2_S, TQ2_0 or TQ1_0): a linear layer of a "
        "BitNet b1.58 model";
  } else if (kind == Kind::kFloat && !IsFloatDecodableType(t->type)) {
    expected = "F32, F16, BF16, Q8_0, Q6_K or Q4_K";
  } else if (kind == Kind::kScale &&
             t->type != static_cast<uint32_t>(TensorType::kF32)) {
    expected = "F32";
  }
  if (expected != nullptr) {
    return Unimplemented("%s: tensor '%s' (#%d) has type %s (%u), expected %s",
                         f.origin().c_str(), name.c_str(), t->index,
                         TensorTypeName(t->type), t->type, expected);
  }
  return Status::Ok();
}

}  // namespace

bool IsSupportedArch(const std::string& arch) {
  return arch == "bitnet-b1.58" || arch == "bitnet-25" || arch == "bitnet" ||
         arch == "llama";
}

Result<HyperParams> ReadHyperParams(const GgufFile& f) {
  HyperParams hp;
  TERND_ASSIGN_OR_RETURN(std::string_view arch,
                         f.GetString("general.architecture"));
  hp.arch = std::string(arch);
  if (!IsSupportedArch(hp.arch)) {
    std::string shown;
    for (char c : hp.arch.substr(0, 64)) {
      shown += (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    return Unimplemented(
        "%s: architecture '%s' is not supported (supported: bitnet-b1.58, "
        "bitnet-25, bitnet, and llama with ternary linear layers)",
        f.origin().c_str(), shown.c_str());
  }
  hp.sub_norms = hp.arch != "llama";
  const std::string& a = hp.arch;
  TERND_RETURN_IF_ERROR(
      ReadCount(f, a, "block_count", 1, kMaxLayers, &hp.layers));
  TERND_RETURN_IF_ERROR(
      ReadCount(f, a, "embedding_length", 1, kMaxWidth, &hp.embd));
  TERND_RETURN_IF_ERROR(
      ReadCount(f, a, "feed_forward_length", 1, kMaxWidth, &hp.ffn));
  TERND_RETURN_IF_ERROR(
      ReadCount(f, a, "attention.head_count", 1, hp.embd, &hp.heads));
  if (f.FindKey(a + ".attention.head_count_kv") != nullptr) {
    TERND_RETURN_IF_ERROR(
        ReadCount(f, a, "attention.head_count_kv", 1, hp.heads, &hp.kv_heads));
  } else {
    hp.kv_heads = hp.heads;
  }
  if (hp.embd % hp.heads != 0 || hp.heads % hp.kv_heads != 0) {
    return InvalidArgument(
        "%s: %s.embedding_length %u, attention.head_count %u and "
        "attention.head_count_kv %u do not divide evenly",
        f.origin().c_str(), a.c_str(), hp.embd, hp.heads, hp.kv_heads);
  }
  hp.head_dim = hp.embd / hp.heads;
  TERND_RETURN_IF_ERROR(
      ReadCount(f, a, "context_length", 1, 1u << 24, &hp.context));
  if (f.FindKey(a + ".rope.freq_base") != nullptr) {
    TERND_RETURN_IF_ERROR(
        ReadPositive(f, a + ".rope.freq_base", &hp.rope_freq_base));
  }
  TERND_RETURN_IF_ERROR(
      ReadPositive(f, a + ".attention.layer_norm_rms_epsilon", &hp.rms_eps));

  const TensorInfo* embd = f.FindTensor("token_embd.weight");
  if (embd == nullptr) {
    return NotFound("%s: tensor 'token_embd.weight' is missing",
                    f.origin().c_str());
  }
  if (embd->n_dims != 2 || embd->dims[0] != hp.embd ||
      embd->dims[1] > kMaxVocab) {
    return InvalidArgument(
        "%s: tensor 'token_embd.weight' has dims %s, expected [%u, vocab] "
        "with vocab <= %u",
        f.origin().c_str(), DimsString(*embd).c_str(), hp.embd, kMaxVocab);
  }
  hp.vocab = static_cast<uint32_t>(embd->dims[1]);
  if (f.FindKey(a + ".vocab_size") != nullptr) {
    uint32_t v = 0;
    TERND_RETURN_IF_ERROR(ReadCount(f, a, "vocab_size", 1, kMaxVocab, &v));
    if (v != hp.vocab) {
      return InvalidArgument(
          "%s: %s.vocab_size is %u but token_embd.weight has %u rows",
          f.origin().c_str(), a.c_str(), v, hp.vocab);
    }
  }
  if (f.FindKey("tokenizer.ggml.tokens") != nullptr) {
    TERND_ASSIGN_OR_RETURN(uint64_t n,
                           f.GetArrayLength("tokenizer.ggml.tokens"));
    if (n != hp.vocab) {
      return InvalidArgument(
          "%s: tokenizer.ggml.tokens has %llu tokens but token_embd.weight "
          "has %u rows",
          f.origin().c_str(), static_cast<ull>(n), hp.vocab);
    }
  }
  hp.tied_output = f.FindTensor("output.weight") == nullptr;
  return hp;
}

Status CheckTensors(const GgufFile& f, const HyperParams& hp) {
  const uint64_t e = hp.embd, ff = hp.ffn;
  const uint64_t kv = uint64_t{hp.kv_heads} * hp.head_dim;
  std::unordered_set<std::string> expected;
  auto expect = [&](const std::string& name, const std::vector<uint64_t>& dims,
                    Kind kind) {
    expected.insert(name);
    return Expect(f, name, dims, kind);
  };
  TERND_RETURN_IF_ERROR(
      expect("token_embd.weight", {e, hp.vocab}, Kind::kFloat));
  TERND_RETURN_IF_ERROR(expect("output_norm.weight", {e}, Kind::kFloat));
  if (!hp.tied_output) {
    TERND_RETURN_IF_ERROR(expect("output.weight", {e, hp.vocab}, Kind::kFloat));
  }
  for (uint32_t n = 0; n < hp.layers; ++n) {
    const std::string b = "blk." + std::to_string(n) + ".";
    const std::vector<uint64_t> shapes[] = {{e, e},  {e, kv}, {e, kv}, {e, e},
                                            {e, ff}, {e, ff}, {ff, e}};
    for (size_t i = 0; i < std::size(kLinear); ++i) {
      const std::string w = b + kLinear[i];
      TERND_RETURN_IF_ERROR(expect(w + ".weight", shapes[i], Kind::kTernary));
      if (f.FindTensor(w + ".scale") != nullptr) {
        TERND_RETURN_IF_ERROR(expect(w + ".scale", {1}, Kind::kScale));
      }
    }
    TERND_RETURN_IF_ERROR(expect(b + "attn_norm.weight", {e}, Kind::kFloat));
    TERND_RETURN_IF_ERROR(expect(b + "ffn_norm.weight", {e}, Kind::kFloat));
    if (hp.sub_norms) {
      TERND_RETURN_IF_ERROR(
          expect(b + "attn_sub_norm.weight", {e}, Kind::kFloat));
      TERND_RETURN_IF_ERROR(
          expect(b + "ffn_sub_norm.weight", {ff}, Kind::kFloat));
    }
  }
  // Llama 3 files may carry the RoPE frequency factors.
  if (f.FindTensor("rope_freqs.weight") != nullptr) {
    TERND_RETURN_IF_ERROR(
        expect("rope_freqs.weight", {hp.head_dim / 2}, Kind::kScale));
  }
  for (const TensorInfo& t : f.tensors()) {
    if (expected.count(std::string(t.name)) == 0) {
      return InvalidArgument(
          "%s: tensor '%.*s' (#%d) is not part of a %s model with %u layers",
          f.origin().c_str(), static_cast<int>(t.name.size()), t.name.data(),
          t.index, hp.arch.c_str(), hp.layers);
    }
  }
  return Status::Ok();
}

Result<HyperParams> ValidateModel(const GgufFile& f) {
  TERND_ASSIGN_OR_RETURN(HyperParams hp, ReadHyperParams(f));
  TERND_RETURN_IF_ERROR(CheckTensors(f, hp));
  return hp;
}

}  // namespace ternd::gguf
