// Reading a tokenizer from the tokenizer.ggml.* keys of a GGUF file.
//
//   tokenizer.ggml.model        string  "gpt2" or "llama" (required)
//   tokenizer.ggml.pre          string  gpt2's pre-tokenizer ("llama-bpe", ...)
//   tokenizer.ggml.tokens       [string] (required)
//   tokenizer.ggml.token_type   [int]   one per token (default: all normal)
//   tokenizer.ggml.scores       [float] one per token (llama)
//   tokenizer.ggml.merges       [string] "a b" (gpt2)
//   tokenizer.ggml.{bos,eos,eot,eom,unknown,padding}_token_id   uint
//   tokenizer.ggml.add_bos_token, add_eos_token, add_space_prefix   bool
//
// As in llama.cpp, a llama vocabulary without the id keys has BOS 1, EOS 2
// and UNK 0, and add_bos_token defaults to DefaultAddBos(model, pre).
// Whether the result makes a tokenizer is Tokenizer::Create's to check.
#ifndef TERND_RUNTIME_TOKENIZER_GGUF_TOKENIZER_H_
#define TERND_RUNTIME_TOKENIZER_GGUF_TOKENIZER_H_

#include "base/status.h"
#include "runtime/gguf/gguf_reader.h"
#include "runtime/tokenizer/tokenizer.h"

namespace ternd::tokenizer {

// Errors name the file and the key (missing, wrong type, a value out of
// range).
Result<TokenizerData> TokenizerDataFromGguf(const gguf::GgufFile& file);

}  // namespace ternd::tokenizer

#endif  // TERND_RUNTIME_TOKENIZER_GGUF_TOKENIZER_H_
