#include "runtime/lm/lm_tokenizer.h"

namespace ternd::lm {

model::Tokenizer TokenizerToProto(const tokenizer::TokenizerData& d) {
  model::Tokenizer t;
  t.set_model(d.model);
  t.set_pre(d.pre);
  for (const std::string& s : d.tokens) t.add_tokens(s);
  for (const std::string& s : d.merges) t.add_merges(s);
  for (float s : d.scores) t.add_scores(s);
  for (int32_t s : d.token_types) t.add_token_types(s);
  if (d.bos >= 0) t.set_bos(d.bos);
  if (d.eos >= 0) t.set_eos(d.eos);
  if (d.eot >= 0) t.set_eot(d.eot);
  if (d.eom >= 0) t.set_eom(d.eom);
  if (d.unk >= 0) t.set_unk(d.unk);
  if (d.pad >= 0) t.set_pad(d.pad);
  t.set_add_bos(d.add_bos);
  t.set_add_eos(d.add_eos);
  t.set_add_space_prefix(d.add_space_prefix);
  return t;
}

tokenizer::TokenizerData TokenizerFromProto(const model::Tokenizer& t) {
  tokenizer::TokenizerData d;
  d.model = t.model();
  d.pre = t.pre();
  d.tokens.assign(t.tokens().begin(), t.tokens().end());
  d.merges.assign(t.merges().begin(), t.merges().end());
  d.scores.assign(t.scores().begin(), t.scores().end());
  d.token_types.assign(t.token_types().begin(), t.token_types().end());
  d.bos = t.has_bos() ? t.bos() : -1;
  d.eos = t.has_eos() ? t.eos() : -1;
  d.eot = t.has_eot() ? t.eot() : -1;
  d.eom = t.has_eom() ? t.eom() : -1;
  d.unk = t.has_unk() ? t.unk() : -1;
  d.pad = t.has_pad() ? t.pad() : -1;
  d.add_bos = t.add_bos();
  d.add_eos = t.add_eos();
  d.add_space_prefix = t.has_add_space_prefix() ? t.add_space_prefix() : true;
  return d;
}

Result<std::unique_ptr<tokenizer::Tokenizer>> TokenizerOf(
    const model::LanguageModel& lm) {
  return tokenizer::Tokenizer::Create(TokenizerFromProto(lm.tokenizer()));
}

}  // namespace ternd::lm
