// The tokenizer of a .tern language model: its data as the header stores
// it (model::Tokenizer) and the runtime's Tokenizer built from it.
#ifndef TERND_RUNTIME_LM_LM_TOKENIZER_H_
#define TERND_RUNTIME_LM_LM_TOKENIZER_H_

#include <memory>

#include "base/status.h"
#include "runtime/model.pb.h"
#include "runtime/tokenizer/tokenizer.h"

namespace ternd::lm {

model::Tokenizer TokenizerToProto(const tokenizer::TokenizerData& data);
tokenizer::TokenizerData TokenizerFromProto(const model::Tokenizer& proto);
// Builds the model's tokenizer (errors name what is wrong in its data).
Result<std::unique_ptr<tokenizer::Tokenizer>> TokenizerOf(
    const model::LanguageModel& lm);

}  // namespace ternd::lm

#endif  // TERND_RUNTIME_LM_LM_TOKENIZER_H_
