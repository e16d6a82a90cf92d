#include "runtime/tokenizer/gguf_tokenizer.h"

#include <cstdint>
#include <limits>
#include <string>

namespace ternd::tokenizer {
namespace {

constexpr const char* kPrefix = "tokenizer.ggml.";

std::string Key(const char* name) { return std::string(kPrefix) + name; }

// A key that may be absent: NotFound leaves *present false.
template <typename T>
Status Optional(Result<T> r, T* out, bool* present = nullptr) {
  if (present != nullptr) *present = r.ok();
  if (r.ok()) {
    *out = std::move(r).value();
    return Status::Ok();
  }
  if (r.status().code() == StatusCode::kNotFound) return Status::Ok();
  return r.status();
}

}  // namespace

Result<TokenizerData> TokenizerDataFromGguf(const gguf::GgufFile& f) {
  TokenizerData d;
  TERND_ASSIGN_OR_RETURN(std::string_view model, f.GetString(Key("model")));
  d.model = std::string(model);
  std::string_view pre;
  TERND_RETURN_IF_ERROR(Optional(f.GetString(Key("pre")), &pre));
  d.pre = std::string(pre);

  TERND_ASSIGN_OR_RETURN(std::vector<std::string_view> tokens,
                         f.GetStringArray(Key("tokens")));
  d.tokens.assign(tokens.begin(), tokens.end());
  std::vector<int64_t> types;
  TERND_RETURN_IF_ERROR(Optional(f.GetIntArray(Key("token_type")), &types));
  d.token_types.reserve(types.size());
  for (size_t i = 0; i < types.size(); ++i) {
    if (types[i] < 0 || types[i] > std::numeric_limits<int32_t>::max()) {
      return InvalidArgument("%s: key '%s': element %zu is %lld",
                             f.origin().c_str(), Key("token_type").c_str(), i,
                             static_cast<long long>(types[i]));
    }
    d.token_types.push_back(static_cast<int32_t>(types[i]));
  }
  std::vector<double> scores;
  TERND_RETURN_IF_ERROR(Optional(f.GetFloatArray(Key("scores")), &scores));
  d.scores.assign(scores.begin(), scores.end());
  std::vector<std::string_view> merges;
  TERND_RETURN_IF_ERROR(Optional(f.GetStringArray(Key("merges")), &merges));
  d.merges.assign(merges.begin(), merges.end());

  if (d.model == "llama") {
    d.bos = 1;
    d.eos = 2;
    d.unk = 0;
  }
  const struct {
    const char* key;
    int32_t* field;
  } ids[] = {{"bos_token_id", &d.bos},     {"eos_token_id", &d.eos},
             {"eot_token_id", &d.eot},     {"eom_token_id", &d.eom},
             {"unknown_token_id", &d.unk}, {"padding_token_id", &d.pad}};
  for (const auto& id : ids) {
    uint64_t v = 0;
    bool present = false;
    TERND_RETURN_IF_ERROR(Optional(f.GetUint(Key(id.key)), &v, &present));
    if (!present) continue;
    if (v >= d.tokens.size()) {
      return InvalidArgument("%s: key '%s' is %llu, but there are %zu tokens",
                             f.origin().c_str(), Key(id.key).c_str(),
                             static_cast<unsigned long long>(v),
                             d.tokens.size());
    }
    *id.field = static_cast<int32_t>(v);
  }
  // Defaults that point past a small vocabulary are dropped.
  for (int32_t* id : {&d.bos, &d.eos, &d.unk}) {
    if (*id >= static_cast<int64_t>(d.tokens.size())) *id = -1;
  }
  d.add_bos = DefaultAddBos(d.model, d.pre);
  TERND_RETURN_IF_ERROR(Optional(f.GetBool(Key("add_bos_token")), &d.add_bos));
  TERND_RETURN_IF_ERROR(Optional(f.GetBool(Key("add_eos_token")), &d.add_eos));
  TERND_RETURN_IF_ERROR(
      Optional(f.GetBool(Key("add_space_prefix")), &d.add_space_prefix));
  if (d.add_bos && d.bos < 0) d.add_bos = false;
  return d;
}

}  // namespace ternd::tokenizer
