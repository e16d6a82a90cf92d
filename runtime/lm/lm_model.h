// A BitNet b1.58 language model placed in a runtime arena slot
// (Runtime::LoadLm), computing docs/llm.md's "The computation".
//
//   slot: | LmModel | layers | matrices, chunked per team member and packed
//         | for the kernels | norms | embedding/head | KV cache
//         | (sequences x layers x KV heads x context x head width, F16, K
//         | and V) | scratch (activations for max_batch tokens, int8/int32
//         | staging, scores per member, logits for max_batch tokens) |
//
// Everything is planned at load; Eval never allocates.
//
// Threads: a fixed ThreadTeam (LmOptions::threads members, created with the
// Runtime's first language model) runs each Eval chunk as one round of
// phases (ThreadTeam::RunPhases), five per layer (q/k/v, attention,
// attn_output, gate/up, ffn_down: each reads what the one before wrote) and
// the head. A phase is a list of tasks that whichever member is running
// takes: each ternary matrix is split by rows into chunks (4 per member
// with more than one; packed separately at load), the attention into
// groups of heads, the head into groups of rows. The row ops in front of
// a product (norm, quantization) are done by each member that takes a task
// of the phase, into its own buffers. Every output value is computed by
// exactly one task in a fixed order, so results depend neither on the team
// size nor on which member ran what.
//
// Thread-safety: Eval uses the model's scratch and the Runtime's team: one
// Eval at a time per Runtime (the caller serializes).
#ifndef TERND_RUNTIME_LM_LM_MODEL_H_
#define TERND_RUNTIME_LM_LM_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/status.h"
#include "runtime/format.h"
#include "runtime/kernels/ternary_kernel.h"
#include "runtime/lm/lm_math.h"

namespace ternd::runtime {

class ThreadTeam;

struct LmOptions {
  // Tokens of KV cache per sequence; 0: the model's context, at most 4096.
  int max_context = 0;
  // Sequences (KV cache slots) that can be in progress at once.
  int sequences = 1;
  // Team members; 0: the CPUs this process may run on.
  int threads = 0;
  // Tokens evaluated together (prompt processing), 1..kMaxKernelBatch.
  int max_batch = kMaxKernelBatch;
};

inline constexpr int kMaxTeam = 64;
inline constexpr int kLmDefaultContextCap = 4096;

// Hyper-parameters as loaded.
struct LmShape {
  uint32_t layers, embedding, ffn, heads, kv_heads, head_dim, vocab;
  uint32_t model_context;  // what the model was trained for
  float rope_freq_base, rms_eps;
  bool relu2;      // else SiLU
  bool rope_neox;  // pairs (i, i + D/2), else (2i, 2i + 1)
  bool sub_norms;
  bool tied_output;
  model::DType head_dtype;  // F32, F16 or I8
};

class LmModel {
 public:
  const char* name() const { return name_; }
  uint64_t version() const { return version_; }
  const LmShape& shape() const { return shape_; }
  int max_context() const { return max_context_; }
  int sequences() const { return sequences_; }
  int max_batch() const { return max_batch_; }
  int threads() const { return threads_; }

  // Bytes, for reports and docs/llm.md's memory table.
  size_t weight_bytes() const { return weight_bytes_; }
  size_t kv_cache_bytes() const { return kv_bytes_; }
  size_t scratch_bytes() const { return scratch_bytes_; }
  size_t slot_bytes_used() const { return used_bytes_; }
  // Bytes of constant data one decoded token reads: every ternary matrix in
  // its layout, the norms and the output head (one embedding row aside).
  size_t bytes_per_token() const { return bytes_per_token_; }
  // Ternary matrices in the 1.6-bit layout, of all.
  int tq1_matrices() const { return tq1_matrices_; }
  int ternary_matrices() const { return 7 * static_cast<int>(shape_.layers); }
  // The 2-bit variant (matrices over the threshold use its 1.6-bit one).
  const TernaryKernel& kernel() const { return *kernel_; }
  const char* math_name() const { return math_->name; }

  // Evaluates `tokens` of sequence `seq` at positions pos, pos+1, ...: the
  // sequence's KV cache must hold positions < pos (from earlier calls), and
  // gains these. Afterwards logits(0) holds the logits after the last token,
  // or with `all_logits` logits(i) those after token i (at most max_batch
  // tokens then). Fails, naming what, for a sequence out of range, a token
  // outside the vocabulary or a position past max_context.
  Status Eval(int seq, std::span<const int32_t> tokens, int pos,
              bool all_logits = false) const;
  const float* logits(int i = 0) const;

  bool has_golden() const { return golden_prompt_len_ > 0; }
  // Greedy-decodes the file's golden prompt on sequence 0 and compares
  // with its golden tokens.
  Status CheckGolden() const;

 private:
  friend class Runtime;
  struct Matrix;
  struct Layer;
  struct Step;
  struct MemberScratch;
  static void Task(void* ctx, int member, int phase, int index);
  void Rope(float* vec, int b) const;
  void Attention(const Step& s, int layer, int member, int task) const;
  void Head(const Step& s, int member, int phase, int task) const;

  char name_[kMaxNameLength + 1];
  uint64_t version_;
  LmShape shape_;
  int max_context_, sequences_, max_batch_, threads_;
  const TernaryKernel* kernel_;
  const lm_math::Ops* math_;
  ThreadTeam* team_;
  int tq1_matrices_ = 0;
  const Layer* layers_;
  const void* embedding_;  // [vocab, E]; the head itself when tied
  model::DType embedding_dtype_;
  const float* embedding_scales_;  // I8
  bool embedding_in_head_layout_;  // tied, in the head's layout
  // The head in math_'s layout (lm_math::PackHead), groups of head_group_
  // rows of head_group_bytes_ each; row sums for I8.
  const void* head_;
  const float* head_scales_;
  const int32_t* head_row_sums_;
  int head_group_;
  size_t head_group_bytes_;
  const float* output_norm_;
  const float* rope_inv_freq_;              // [head_dim / 2]
  uint16_t* kv_;                            // the KV cache
  size_t kv_seq_stride_, kv_layer_stride_;  // in halves
  // Scratch.
  float *h_, *q_, *k_, *v_, *o_, *g_, *logits_, *rope_cos_, *rope_sin_;
  int32_t* acc_;
  MemberScratch* member_scratch_;  // [threads_]
  // The team's phases: the end of each phase's tasks (ThreadTeam::
  // RunPhases), five per layer and the head's; the tasks of attention
  // and of the head.
  const int* phase_end_;
  int attention_tasks_, head_tasks_;
  mutable uint64_t rounds_ = 0;
  size_t quant_stride_;
  mutable int logit_rows_ = 0;
  const int32_t* golden_;
  int golden_prompt_len_ = 0, golden_len_ = 0;
  size_t weight_bytes_, kv_bytes_, scratch_bytes_, used_bytes_,
      bytes_per_token_;
};

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_LM_LM_MODEL_H_
