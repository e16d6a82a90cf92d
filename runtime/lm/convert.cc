#include "runtime/lm/convert.h"

#include <cmath>
#include <cstring>

#include "runtime/format.h"
#include "runtime/gguf/gguf_arch.h"
#include "runtime/gguf/gguf_decode.h"
#include "runtime/kernels/ternary_kernel.h"
#include "runtime/lm/lm_tokenizer.h"
#include "runtime/tokenizer/gguf_tokenizer.h"

namespace ternd::lm {
namespace {

using gguf::GgufFile;
using gguf::HyperParams;
using gguf::TensorInfo;

std::string SanitizedName(std::string_view in) {
  std::string out;
  for (char c : in) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '_' || c == '.' ||
                    c == '-' || c == ':' || c == '/';
    out += ok ? c : '-';
    if (out.size() == runtime::kMaxNameLength) break;
  }
  return out.empty() ? "lm" : out;
}

}  // namespace

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) {  // infinity or NaN (kept quiet)
    return sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0);
  }
  if (abs >= 0x477ff000) return sign | 0x7c00;  // >= 65520: rounds to inf
  if (abs < 0x38800000) {  // below 2^-14: a half subnormal (or zero)
    float af;
    std::memcpy(&af, &abs, 4);
    // Units of 2^-24; the product is exact, nearbyint rounds half to even.
    return sign | static_cast<uint16_t>(std::nearbyint(af * 16777216.0f));
  }
  const uint32_t mant = abs & 0x7fffff;
  const uint32_t exp = (abs >> 23) - 127 + 15;
  uint32_t h = (exp << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;  // may carry: fine
  return sign | static_cast<uint16_t>(h);
}

void QuantizeRowsInt8(const float* w, uint64_t rows, uint64_t cols, int8_t* q,
                      float* scales) {
  for (uint64_t r = 0; r < rows; ++r) {
    const float* wr = w + r * cols;
    int8_t* qr = q + r * cols;
    float amax = 0.0f;
    for (uint64_t c = 0; c < cols; ++c)
      amax = std::fmax(amax, std::fabs(wr[c]));
    if (!(amax >= runtime::kQuantizeMinAmax)) {  // 0, or 127 / amax overflows
      std::memset(qr, 0, cols);
      scales[r] = 0.0f;
      continue;
    }
    const float inv = 127.0f / amax;
    for (uint64_t c = 0; c < cols; ++c) {
      float v = std::nearbyint(wr[c] * inv);
      v = v < -128.0f ? -128.0f : (v > 127.0f ? 127.0f : v);
      qr[c] = static_cast<int8_t>(v);
    }
    scales[r] = amax / 127.0f;
  }
}

Status ReadTokenizer(const GgufFile& f, model::LanguageModel* lm) {
  if (f.FindKey("tokenizer.ggml.model") == nullptr ||
      f.FindKey("tokenizer.ggml.tokens") == nullptr) {
    return InvalidArgument(
        "%s: has no tokenizer (tokenizer.ggml.model and tokenizer.ggml.tokens "
        "are required to run a language model)",
        f.origin().c_str());
  }
  TERND_ASSIGN_OR_RETURN(tokenizer::TokenizerData d,
                         tokenizer::TokenizerDataFromGguf(f));
  // The file's tokenizer must be one the daemon can build.
  Result<std::unique_ptr<tokenizer::Tokenizer>> check =
      tokenizer::Tokenizer::Create(d);
  if (!check.ok()) {
    return Status(check.status()).Prepend(f.origin() + ": tokenizer");
  }
  *lm->mutable_tokenizer() = TokenizerToProto(d);
  if (f.FindKey("tokenizer.chat_template") != nullptr) {
    Result<std::string_view> tmpl = f.GetString("tokenizer.chat_template");
    if (!tmpl.ok()) return Status(tmpl.status()).Prepend(f.origin());
    lm->set_chat_template(std::string(*tmpl));
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> ConvertGguf(const GgufFile& f,
                                         const ConvertOptions& options) {
  if (options.head != "int8" && options.head != "f16") {
    return InvalidArgument("head storage '%s' is not one of int8, f16",
                           options.head.c_str());
  }
  TERND_ASSIGN_OR_RETURN(HyperParams hp, gguf::ValidateModel(f));
  model::ModelHeader header;
  std::string name = options.name;
  if (name.empty() && f.FindKey("general.name") != nullptr) {
    Result<std::string_view> n = f.GetString("general.name");
    if (n.ok()) name = SanitizedName(*n);
  }
  header.set_name(name.empty() ? "lm" : SanitizedName(name));
  header.set_version(options.version);
  header.set_architecture(runtime::kArchBitnetLm);
  header.set_description("converted from " + f.origin());
  (*header.mutable_metadata())["source"] = f.origin();
  (*header.mutable_metadata())["source_architecture"] = hp.arch;
  (*header.mutable_metadata())["head"] = options.head;
  model::LanguageModel* lm = header.mutable_lm();
  lm->set_source_architecture(hp.arch);
  lm->set_layers(hp.layers);
  lm->set_embedding(hp.embd);
  lm->set_ffn(hp.ffn);
  lm->set_heads(hp.heads);
  lm->set_kv_heads(hp.kv_heads);
  lm->set_context(hp.context);
  lm->set_vocab(hp.vocab);
  lm->set_rope_freq_base(hp.rope_freq_base);
  lm->set_rms_eps(hp.rms_eps);
  lm->set_ffn_activation(hp.arch == "bitnet" || hp.arch == "llama"
                             ? model::LanguageModel::SILU
                             : model::LanguageModel::RELU2);
  lm->set_rope_neox(hp.arch != "llama");
  lm->set_sub_norms(hp.sub_norms);
  lm->set_tied_output(hp.tied_output);
  TERND_RETURN_IF_ERROR(ReadTokenizer(f, lm));
  if (static_cast<uint64_t>(lm->tokenizer().tokens_size()) != hp.vocab) {
    return InvalidArgument(
        "%s: tokenizer.ggml.tokens has %d tokens, token_embd.weight has %u "
        "rows",
        f.origin().c_str(), lm->tokenizer().tokens_size(), hp.vocab);
  }

  runtime::ModelWriter writer(header);
  auto tensor = [&](const std::string& name) -> const TensorInfo& {
    return *f.FindTensor(name);  // ValidateModel checked presence
  };
  auto add_norm = [&](const std::string& name) -> Status {
    TERND_ASSIGN_OR_RETURN(std::vector<float> v,
                           gguf::DecodeFloat(tensor(name)));
    writer.AddF32(name, {v.size()}, v);
    return Status::Ok();
  };
  auto add_table = [&](const std::string& name, bool as_head) -> Status {
    const TensorInfo& t = tensor(name);
    TERND_ASSIGN_OR_RETURN(std::vector<float> v, gguf::DecodeFloat(t));
    const uint64_t cols = t.dims[0], rows = t.elems / cols;
    if (as_head && options.head == "int8") {
      std::vector<int8_t> q(v.size());
      std::vector<float> scales(rows);
      QuantizeRowsInt8(v.data(), rows, cols, q.data(), scales.data());
      writer.AddI8(name, rows, cols, q, scales);
    } else {
      std::vector<uint16_t> h(v.size());
      for (size_t i = 0; i < v.size(); ++i) h[i] = FloatToHalf(v[i]);
      for (size_t i = 0; i < h.size(); ++i) {
        if ((h[i] & 0x7c00) == 0x7c00) {
          return InvalidArgument(
              "%s: tensor '%s' element %zu is %g, beyond the float16 range",
              f.origin().c_str(), name.c_str(), i, static_cast<double>(v[i]));
        }
      }
      writer.AddF16(name, {rows, cols}, h);
    }
    return Status::Ok();
  };
  auto add_ternary = [&](const std::string& base) -> Status {
    const std::string name = base + ".weight";
    TERND_ASSIGN_OR_RETURN(gguf::TernaryTensor t,
                           gguf::DecodeTernary(tensor(name)));
    float scale = t.scale;
    // llama.cpp's BitNet files carry the layer scale as its own tensor.
    if (const TensorInfo* s = f.FindTensor(base + ".scale")) {
      TERND_ASSIGN_OR_RETURN(std::vector<float> sv, gguf::DecodeFloat(*s));
      scale *= sv.at(0);
      if (!std::isfinite(scale) || scale < 0) {
        return InvalidArgument(
            "%s: tensor '%s.scale' makes the scale of '%s' %g, expected "
            "finite >= 0",
            f.origin().c_str(), base.c_str(), name.c_str(),
            static_cast<double>(scale));
      }
    }
    writer.AddTernaryPacked(name, t.rows, t.cols, t.packed, {&scale, 1});
    return Status::Ok();
  };
  TERND_RETURN_IF_ERROR(add_table("token_embd.weight", hp.tied_output));
  for (uint32_t l = 0; l < hp.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    TERND_RETURN_IF_ERROR(add_norm(p + "attn_norm.weight"));
    for (const char* m : {"attn_q", "attn_k", "attn_v", "attn_output"}) {
      TERND_RETURN_IF_ERROR(add_ternary(p + m));
    }
    if (hp.sub_norms)
      TERND_RETURN_IF_ERROR(add_norm(p + "attn_sub_norm.weight"));
    TERND_RETURN_IF_ERROR(add_norm(p + "ffn_norm.weight"));
    for (const char* m : {"ffn_gate", "ffn_up", "ffn_down"}) {
      TERND_RETURN_IF_ERROR(add_ternary(p + m));
    }
    if (hp.sub_norms)
      TERND_RETURN_IF_ERROR(add_norm(p + "ffn_sub_norm.weight"));
  }
  TERND_RETURN_IF_ERROR(add_norm("output_norm.weight"));
  if (!hp.tied_output) TERND_RETURN_IF_ERROR(add_table("output.weight", true));
  if (f.FindTensor("rope_freqs.weight") != nullptr) {
    TERND_RETURN_IF_ERROR(add_norm("rope_freqs.weight"));
  }
  Result<std::vector<uint8_t>> out = writer.Finish();
  if (!out.ok()) return Status(out.status()).Prepend(f.origin() + " converted");
  return out;
}

}  // namespace ternd::lm
