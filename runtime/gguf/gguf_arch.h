// What a GGUF file must hold to be a BitNet b1.58 language model ternd can
// import: the architecture, its hyper-parameters and the tensor set.
//
// Architectures (general.architecture):
//   bitnet-b1.58  bitnet.cpp's 2B4T files          sub-norms
//   bitnet-25     an earlier name of the same      sub-norms
//   bitnet        llama.cpp's BitNet models        sub-norms
//   llama         ternary Falcon3 / Llama3 1.58    no sub-norms, SiLU-gated
//                 FFN; accepted only when every linear layer is ternary
// Hyper-parameters are read from "<arch>.<name>" keys. The tensors of layer
// N are blk.N.attn_{q,k,v,output}.weight, blk.N.ffn_{gate,up,down}.weight
// (ternary), blk.N.attn_norm.weight, blk.N.ffn_norm.weight and, with
// sub-norms, blk.N.attn_sub_norm.weight [embd] and blk.N.ffn_sub_norm.weight
// [ffn]; plus token_embd.weight, output_norm.weight and an optional
// output.weight (absent: tied to the embeddings). llama.cpp's files may
// also carry a one-element F32 blk.N.<linear>.scale per linear layer; it is
// accepted and checked, as is an F32 rope_freqs.weight [head_dim / 2]
// (RoPE frequency factors of Llama 3 files). Every one is checked for
// presence, type and shape; a tensor that is not part of the set is refused.
#ifndef TERND_RUNTIME_GGUF_GGUF_ARCH_H_
#define TERND_RUNTIME_GGUF_GGUF_ARCH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "runtime/gguf/gguf_reader.h"

namespace ternd::gguf {

// Limits on hyper-parameters: far above any edge model, low enough that
// shape arithmetic cannot overflow.
inline constexpr uint32_t kMaxLayers = 1024;
inline constexpr uint32_t kMaxWidth = 1u << 20;
inline constexpr uint32_t kMaxVocab = 1u << 22;

struct HyperParams {
  std::string arch;
  bool sub_norms = false;  // BitNet sub-norms before attn_output/ffn_down
  uint32_t layers = 0;     // block_count
  uint32_t embd = 0;       // embedding_length
  uint32_t ffn = 0;        // feed_forward_length
  uint32_t heads = 0;      // attention.head_count
  uint32_t kv_heads = 0;   // attention.head_count_kv (default: heads)
  uint32_t head_dim = 0;   // embd / heads
  uint32_t context = 0;    // context_length
  uint32_t vocab = 0;      // token_embd rows (checked against the tokenizer)
  float rope_freq_base = 10000.0f;  // rope.freq_base (optional)
  float rms_eps = 0;                // attention.layer_norm_rms_epsilon
  bool tied_output = false;         // no output.weight: the head is token_embd
};

// True for the architectures listed above.
bool IsSupportedArch(const std::string& arch);

// Reads general.architecture and the hyper-parameters, checking each for
// presence, type and range (heads divide embd, kv_heads divide heads...).
Result<HyperParams> ReadHyperParams(const GgufFile& file);

// Checks the tensor set of `hp` against the file: every expected tensor is
// present with the expected type class (ternary linear layers; embeddings,
// head and norms in a float-decodable type) and shape, and no other tensor
// is present.
Status CheckTensors(const GgufFile& file, const HyperParams& hp);

// Both of the above.
Result<HyperParams> ValidateModel(const GgufFile& file);

}  // namespace ternd::gguf

#endif  // TERND_RUNTIME_GGUF_GGUF_ARCH_H_
