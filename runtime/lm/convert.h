// GGUF -> .tern for BitNet b1.58 language models (`ternctl convert`).
//
// The GGUF file is validated (runtime/gguf/gguf_arch.h), every tensor
// decoded and checked, and the result is a format-version-2 .tern file with
// architecture "bitnet-lm" (docs/model-format.md): ternary matrices in the
// canonical 2-bit packing with one scale each, norms in F32, the embedding
// and output head as F16 or per-row int8 (`head`), and the tokenizer data
// copied from the tokenizer.ggml.* keys.
#ifndef TERND_RUNTIME_LM_CONVERT_H_
#define TERND_RUNTIME_LM_CONVERT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "runtime/gguf/gguf_reader.h"
#include "runtime/model.pb.h"

namespace ternd::lm {

struct ConvertOptions {
  // Storage of the output head: "int8" (per-row scale; half the bytes of
  // "f16", the default) or "f16". When the head is tied to the embeddings
  // the one matrix serves both.
  std::string head = "int8";
  // Model name and version in the .tern header; empty name: derived from
  // general.name (sanitized) or "lm".
  std::string name;
  uint64_t version = 1;
};

// Everything of the .tern file except the golden tokens (which need the
// runtime to compute: `ternctl convert` adds them).
Result<std::vector<uint8_t>> ConvertGguf(const gguf::GgufFile& file,
                                         const ConvertOptions& options);

// Reads the tokenizer.ggml.* keys (and tokenizer.chat_template) into `lm`,
// refusing a tokenizer the runtime cannot build.
Status ReadTokenizer(const gguf::GgufFile& file, model::LanguageModel* lm);

// Per-row int8 quantization of float rows (docs/llm.md, "Output head
// storage"): q = clamp(rint(w * (127 / amax)), -128, 127), scale amax / 127.
void QuantizeRowsInt8(const float* w, uint64_t rows, uint64_t cols, int8_t* q,
                      float* scales);

// float -> IEEE binary16 bits, round to nearest even (overflow to infinity).
uint16_t FloatToHalf(float f);

}  // namespace ternd::lm

#endif  // TERND_RUNTIME_LM_CONVERT_H_
