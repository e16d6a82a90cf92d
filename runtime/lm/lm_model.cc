#include "runtime/lm/lm_model.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <thread>

#include "base/check.h"
#include "runtime/kernels/kernels.h"
#include "runtime/lm/thread_team.h"
#include "runtime/ops.h"
#include "runtime/runtime.h"
#include "runtime/ternary_pack.h"

namespace ternd::runtime {

// A ternary matrix, split by rows into chunks packed separately (a task
// each): rows [row_begin[c], row_begin[c + 1]) in packed[c].
struct LmModel::Matrix {
  const TernaryKernel* kernel;
  uint32_t n, k;
  float scale;
  int chunks;
  const uint32_t* row_begin;
  const uint8_t* const* packed;
};

struct LmModel::Layer {
  Matrix q, k, v, o, gate, up, down;
  const float* attn_norm;
  const float* ffn_norm;
  const float* attn_sub_norm;  // null without sub-norms
  const float* ffn_sub_norm;
};

// One Eval chunk: n tokens of sequence seq at positions pos.., and which
// rows get logits (head_rows 0: none). `round` numbers the team rounds.
struct LmModel::Step {
  const LmModel* m;
  int seq, pos, n;
  int head_first, head_rows;
  uint64_t round;
};

// A member's own buffers: normalized rows (and attention's temporary), the
// quantized input of the next products, the attention scores, and the
// F16 keys and values of the batch's tokens.
struct LmModel::MemberScratch {
  float* x;
  int8_t* quant;
  int32_t* sums;
  float* dequant;
  float* scores;
  uint16_t* kv_new;
  void* work;  // the head's (lm_math::HeadWorkBytes), an embedding row
  // The round and phase whose input `quant` (or, for the head, `x`) holds.
  uint64_t prepared_round;
  int prepared_phase;
};

namespace {

constexpr size_t kAlign = 64;
constexpr uint32_t kRowAlign = 16;  // chunk boundaries, in rows
constexpr int kTasksPerMember = 4;
size_t AlignUp(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

int DefaultThreads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

// Rows [RowSplit(n, c, m), RowSplit(n, c + 1, m)) are chunk c of m.
uint32_t RowSplit(uint32_t n, int c, int m) {
  if (c >= m) return n;
  const uint64_t blocks = (n + kRowAlign - 1) / kRowAlign;
  const uint64_t first = blocks * static_cast<uint64_t>(c) / m;
  return static_cast<uint32_t>(std::min<uint64_t>(n, first * kRowAlign));
}

// [begin, end) of `items` for member `member` of `members`.
void Share(uint32_t items, int member, int members, uint32_t* begin,
           uint32_t* end) {
  *begin =
      static_cast<uint32_t>(static_cast<uint64_t>(items) * member / members);
  *end = static_cast<uint32_t>(static_cast<uint64_t>(items) * (member + 1) /
                               members);
}

}  // namespace

// ------------------------------------------------------------------- Eval

const float* LmModel::logits(int i) const {
  TERND_DCHECK(i >= 0 && i < logit_rows_);
  return logits_ + static_cast<size_t>(i) * shape_.vocab;
}

namespace {
// Phases of a round (RunPhases): five per layer, then the head.
enum LayerPhase { kQkv, kAttention, kOutput, kGateUp, kDown, kLayerPhases };
}  // namespace

void LmModel::Task(void* ctx, int member, int phase, int index) {
  const Step& s = *static_cast<const Step*>(ctx);
  const LmModel& m = *s.m;
  const LmShape& sh = m.shape_;
  if (phase == kLayerPhases * static_cast<int>(sh.layers)) {
    m.Head(s, member, phase, index);
    return;
  }
  const uint32_t E = sh.embedding, F = sh.ffn, D = sh.head_dim;
  const uint32_t KV = sh.kv_heads * D;
  const int n = s.n;
  MemberScratch& ps = m.member_scratch_[member];
  const int layer = phase / kLayerPhases;
  const Layer& L = m.layers_[layer];

  // The input of this phase's products, in this member's own buffers,
  // made by its first task of the phase (every member quantizes the whole
  // rows it multiplies, so none waits for another): rows of `src` (width
  // w), RMSNorm'd with `gain` unless it is null, then quantized.
  auto prepare = [&](const float* src, uint32_t w, const float* gain) {
    if (ps.prepared_round == s.round && ps.prepared_phase == phase) return;
    if (gain != nullptr) {
      for (int b = 0; b < n; ++b) {
        lm_math::RmsNorm(*m.math_, src + static_cast<size_t>(b) * w, w, gain,
                         sh.rms_eps, ps.x + static_cast<size_t>(b) * w);
      }
      src = ps.x;
    }
    m.kernel_->quantize(src, w, n, w, ps.quant, m.quant_stride_, ps.sums,
                        ps.dequant);
    ps.prepared_round = s.round;
    ps.prepared_phase = phase;
  };
  // Chunk c of matrix `mat`: integer products into acc (ld = mat.n), then
  // `finish(acc row, scale, output row)` for the chunk's rows of each token,
  // `out` with `ld` values per token.
  auto matmul = [&](const Matrix& mat, int c, int32_t* acc, float* out,
                    size_t ld, auto finish) {
    const uint32_t r0 = mat.row_begin[c], r1 = mat.row_begin[c + 1];
    if (r0 == r1) return;
    const QuantizedActivations x{ps.quant, m.quant_stride_, ps.sums, n, mat.k};
    mat.kernel->gemm(mat.packed[c], r1 - r0, mat.k, x, acc + r0, mat.n);
    for (int b = 0; b < n; ++b) {
      finish(acc + static_cast<size_t>(b) * mat.n + r0,
             mat.scale * ps.dequant[b], out + static_cast<size_t>(b) * ld + r0,
             r1 - r0);
    }
  };
  const lm_math::Ops& math = *m.math_;

  switch (phase % kLayerPhases) {
    case kQkv: {
      prepare(m.h_, E, L.attn_norm);
      int32_t* acc_q = m.acc_;
      int32_t* acc_k = acc_q + static_cast<size_t>(n) * E;
      int32_t* acc_v = acc_k + static_cast<size_t>(n) * KV;
      if (index < L.q.chunks) {
        matmul(L.q, index, acc_q, m.q_, E, math.dequant_set);
      } else if (index < L.q.chunks + L.k.chunks) {
        matmul(L.k, index - L.q.chunks, acc_k, m.k_, KV, math.dequant_set);
      } else {
        matmul(L.v, index - L.q.chunks - L.k.chunks, acc_v, m.v_, KV,
               math.dequant_set);
      }
      break;
    }
    case kAttention:
      m.Attention(s, layer, member, index);
      break;
    case kOutput:
      prepare(m.o_, E, L.attn_sub_norm);
      matmul(L.o, index, m.acc_, m.h_, E, math.dequant_add);
      break;
    case kGateUp: {
      prepare(m.h_, E, L.ffn_norm);
      int32_t* acc_g = m.acc_;
      int32_t* acc_u = acc_g + static_cast<size_t>(n) * F;
      matmul(L.gate, index, acc_g, m.g_, F, math.dequant_set);
      matmul(L.up, index, acc_u, m.g_, F,
             sh.relu2 ? math.dequant_relu2_gate : math.dequant_silu_gate);
      break;
    }
    case kDown:
      prepare(m.g_, F, L.ffn_sub_norm);
      matmul(L.down, index, m.acc_, m.h_, E, math.dequant_add);
      break;
  }
}

// RoPE on the D values at `vec` with the angles of batch row b.
void LmModel::Rope(float* vec, int b) const {
  const uint32_t D = shape_.head_dim;
  const float* c = rope_cos_ + static_cast<size_t>(b) * (D / 2);
  const float* sn = rope_sin_ + static_cast<size_t>(b) * (D / 2);
  // Pairs (i, i + D/2) or (2i, 2i + 1).
  const uint32_t step = shape_.rope_neox ? 1 : 2;
  const uint32_t other = shape_.rope_neox ? D / 2 : 1;
  for (uint32_t i = 0; i < D / 2; ++i) {
    float* p0 = vec + i * step;
    float* p1 = p0 + other;
    const float x0 = *p0, x1 = *p1;
    *p0 = x0 * c[i] - x1 * sn[i];
    *p1 = x0 * sn[i] + x1 * c[i];
  }
}

// The heads of attention task `task` (a contiguous share). The keys and
// values of this batch's tokens are RoPE'd and rounded to F16 by every task
// that needs them, into its member's buffer (the same values the cache
// gets), and written to the cache by the task that holds the first head of
// their KV head, so no task waits for another here; earlier positions come
// from the cache, which this Eval does not write there.
void LmModel::Attention(const Step& s, int layer, int member, int task) const {
  const LmShape& sh = shape_;
  const uint32_t E = sh.embedding, D = sh.head_dim, KV = sh.kv_heads * D;
  const lm_math::Ops& math = *math_;
  const MemberScratch& ps = member_scratch_[member];
  const int n = s.n;
  const uint32_t group = sh.heads / sh.kv_heads;
  // The task's heads: a share of all heads, or, when the tasks are whole
  // multiples of the KV heads, a share of one KV head's queries (so that
  // the queries attend() takes together share it).
  uint32_t j0, j1;
  if (attention_tasks_ % sh.kv_heads == 0 && group > 1) {
    const int parts = attention_tasks_ / static_cast<int>(sh.kv_heads);
    Share(group, task % parts, parts, &j0, &j1);
    j0 += task / parts * group;
    j1 += task / parts * group;
  } else {
    Share(sh.heads, task, attention_tasks_, &j0, &j1);
  }
  if (j0 == j1) return;
  const uint32_t g0 = j0 / group, g1 = (j1 - 1) / group + 1;
  uint16_t* kv_layer = kv_ + s.seq * kv_seq_stride_ + layer * kv_layer_stride_;
  const size_t head_stride = static_cast<size_t>(max_context_) * D;
  const size_t v_offset = kv_layer_stride_ / 2;
  // New keys [g - g0][b][D], then values.
  uint16_t* new_k = ps.kv_new;
  uint16_t* new_v = new_k + static_cast<size_t>(g1 - g0) * n * D;
  float* tmp = ps.x;
  for (uint32_t g = g0; g < g1; ++g) {
    const bool owner = g * group >= j0;
    for (int b = 0; b < n; ++b) {
      const size_t at = (static_cast<size_t>(g - g0) * n + b) * D;
      std::memcpy(tmp, k_ + static_cast<size_t>(b) * KV + g * D,
                  sizeof(float) * D);
      Rope(tmp, b);
      math.to_f16(tmp, new_k + at, D);
      math.to_f16(v_ + static_cast<size_t>(b) * KV + g * D, new_v + at, D);
      if (owner) {
        const size_t cache_at =
            g * head_stride + static_cast<size_t>(s.pos + b) * D;
        std::memcpy(kv_layer + cache_at, new_k + at, sizeof(uint16_t) * D);
        std::memcpy(kv_layer + v_offset + cache_at, new_v + at,
                    sizeof(uint16_t) * D);
      }
    }
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // Runs of this task's heads that share a KV head, together.
  for (uint32_t ja = j0; ja < j1;) {
    const uint32_t g = ja / group;
    const uint32_t jb = std::min(j1, (g + 1) * group);
    const uint16_t* keys = kv_layer + g * head_stride;
    const uint16_t* nk = new_k + static_cast<size_t>(g - g0) * n * D;
    const uint16_t* nv = new_v + static_cast<size_t>(g - g0) * n * D;
    for (int b = 0; b < n; ++b) {
      float* q = q_ + static_cast<size_t>(b) * E + ja * D;
      for (uint32_t j = ja; j < jb; ++j) Rope(q + (j - ja) * D, b);
      // Positions before this Eval from the cache, then this batch's up to
      // token b.
      math.attend(q, jb - ja, D, scale, keys, keys + v_offset, s.pos, nk, nv,
                  b + 1, ps.scores, o_ + static_cast<size_t>(b) * E + ja * D);
    }
    ja = jb;
  }
}

// Logits of rows head_first.. of this member's share of the vocabulary.
void LmModel::Head(const Step& s, int member, int phase, int task) const {
  const LmShape& sh = shape_;
  const uint32_t E = sh.embedding;
  const lm_math::Ops& math = *math_;
  MemberScratch& ps = member_scratch_[member];
  // This task's rows, whole groups of the head's layout.
  const uint32_t group = static_cast<uint32_t>(head_group_);
  const uint32_t groups = (sh.vocab + group - 1) / group;
  uint32_t g0, g1;
  Share(groups, task, head_tasks_, &g0, &g1);
  const uint32_t v0 = g0 * group, v1 = std::min(sh.vocab, g1 * group);
  if (v0 >= v1) return;
  if (ps.prepared_round != s.round || ps.prepared_phase != phase) {
    for (int r = 0; r < s.head_rows; ++r) {
      lm_math::RmsNorm(math, h_ + static_cast<size_t>(s.head_first + r) * E, E,
                       output_norm_, sh.rms_eps,
                       ps.x + static_cast<size_t>(r) * E);
    }
    ps.prepared_round = s.round;
    ps.prepared_phase = phase;
  }
  for (int r = 0; r < s.head_rows; ++r) {
    const float* z = ps.x + static_cast<size_t>(r) * E;
    float* out = logits_ + static_cast<size_t>(r) * sh.vocab + v0;
    const uint8_t* first =
        static_cast<const uint8_t*>(head_) + g0 * head_group_bytes_;
    switch (sh.head_dtype) {
      case model::I8:
        math.head_i8(reinterpret_cast<const int8_t*>(first), head_scales_ + v0,
                     head_row_sums_ + v0, v1 - v0, E, z, ps.work, out);
        break;
      case model::F16:
        math.head_f16(reinterpret_cast<const uint16_t*>(first), v1 - v0, E, z,
                      ps.work, out);
        break;
      default: {
        const float* w = static_cast<const float*>(head_);
        for (uint32_t v = v0; v < v1; ++v) {
          out[v - v0] = math.dot_f32(w + static_cast<size_t>(v) * E, z, E);
        }
        break;
      }
    }
  }
}

Status LmModel::Eval(int seq, std::span<const int32_t> tokens, int pos,
                     bool all_logits) const {
  const LmShape& sh = shape_;
  const int count = static_cast<int>(tokens.size());
  if (seq < 0 || seq >= sequences_) {
    return InvalidArgument("sequence %d is outside 0..%d (llm.sequences)", seq,
                           sequences_ - 1);
  }
  if (count < 1) return InvalidArgument("no tokens to evaluate");
  if (pos < 0 || static_cast<int64_t>(pos) + count > max_context_) {
    return InvalidArgument(
        "positions %d..%d do not fit the context of %d tokens "
        "(llm.max_context)",
        pos, pos + count - 1, max_context_);
  }
  if (all_logits && count > max_batch_) {
    return InvalidArgument(
        "all logits of %d tokens requested, at most %d (one batch) at a time",
        count, max_batch_);
  }
  for (int i = 0; i < count; ++i) {
    if (tokens[i] < 0 || static_cast<uint32_t>(tokens[i]) >= sh.vocab) {
      return InvalidArgument("token #%d is %d, outside the vocabulary 0..%u", i,
                             tokens[i], sh.vocab - 1);
    }
  }
  const uint32_t E = sh.embedding, D = sh.head_dim;
  for (int start = 0; start < count; start += max_batch_) {
    const int n = std::min(max_batch_, count - start);
    const int p0 = pos + start;
    // Embeddings.
    for (int b = 0; b < n; ++b) {
      size_t row = static_cast<size_t>(tokens[start + b]) * E;
      const void* table = embedding_;
      if (embedding_in_head_layout_) {
        // The tied head's row, out of its layout (into scratch that is
        // free before the team starts).
        lm_math::CopyHeadRow(
            *math_, embedding_dtype_ == model::I8 ? 1 : 2, embedding_, E,
            static_cast<size_t>(tokens[start + b]), member_scratch_[0].work);
        table = member_scratch_[0].work;
        row = 0;
      }
      float* h = h_ + static_cast<size_t>(b) * E;
      switch (embedding_dtype_) {
        case model::I8: {
          const int8_t* q = static_cast<const int8_t*>(table) + row;
          const float s = embedding_scales_[tokens[start + b]];
          for (uint32_t i = 0; i < E; ++i) h[i] = static_cast<float>(q[i]) * s;
          break;
        }
        case model::F16: {
          const uint16_t* e = static_cast<const uint16_t*>(table) + row;
          for (uint32_t i = 0; i < E; ++i) h[i] = lm_math::HalfToFloat(e[i]);
          break;
        }
        default:
          std::memcpy(h, static_cast<const float*>(table) + row,
                      sizeof(float) * E);
          break;
      }
      for (uint32_t i = 0; i < D / 2; ++i) {
        const float theta = static_cast<float>(p0 + b) * rope_inv_freq_[i];
        rope_cos_[static_cast<size_t>(b) * (D / 2) + i] = std::cos(theta);
        rope_sin_[static_cast<size_t>(b) * (D / 2) + i] = std::sin(theta);
      }
    }
    // Logits: of every token (all_logits: one batch), or of the last.
    const bool last_chunk = start + n == count;
    const bool logits = all_logits || last_chunk;
    Step s{};
    s.m = this;
    s.seq = seq;
    s.pos = p0;
    s.n = n;
    s.head_first = all_logits ? 0 : n - 1;
    s.head_rows = logits ? n - s.head_first : 0;
    s.round = ++rounds_;
    const int layer_phases = kLayerPhases * static_cast<int>(sh.layers);
    team_->RunPhases(&LmModel::Task, &s, phase_end_,
                     logits ? layer_phases + 1 : layer_phases);
    if (logits) logit_rows_ = s.head_rows;
  }
  return Status::Ok();
}

Status LmModel::CheckGolden() const {
  if (!has_golden()) return Status::Ok();
  std::span<const int32_t> prompt(golden_, golden_prompt_len_);
  TERND_RETURN_IF_ERROR(Eval(0, prompt, 0));
  int pos = golden_prompt_len_;
  for (int i = 0; i < golden_len_; ++i) {
    int32_t best;
    Argmax(logits(0), 1, shape_.vocab, &best);
    const int32_t want = golden_[golden_prompt_len_ + i];
    if (best != want) {
      return DataLoss(
          "model '%s' version %llu failed its golden check: greedy token #%d "
          "after the %d-token golden prompt is %d, the file expects %d",
          name_, static_cast<unsigned long long>(version_), i,
          golden_prompt_len_, best, want);
    }
    if (i + 1 < golden_len_) {
      TERND_RETURN_IF_ERROR(Eval(0, {&best, 1}, pos++));
    }
  }
  return Status::Ok();
}

// ------------------------------------------------------------------- Load

Result<const LmModel*> Runtime::LoadLm(int slot, const ModelFile& file,
                                       const LmOptions& options) {
  TERND_CHECK(slot >= 0 && slot < options_.slots);
  if (!file.is_language_model()) {
    return InvalidArgument("%s: is not a language model (architecture '%s')",
                           file.origin().c_str(),
                           file.header().architecture().c_str());
  }
  const model::ModelHeader& h = file.header();
  const model::LanguageModel& lm = h.lm();
  LmShape sh{};
  sh.layers = lm.layers();
  sh.embedding = lm.embedding();
  sh.ffn = lm.ffn();
  sh.heads = lm.heads();
  sh.kv_heads = lm.kv_heads();
  sh.head_dim = lm.embedding() / lm.heads();
  sh.vocab = lm.vocab();
  sh.model_context = lm.context();
  sh.rope_freq_base = lm.rope_freq_base();
  sh.rms_eps = lm.rms_eps();
  sh.relu2 = lm.ffn_activation() == model::LanguageModel::RELU2;
  sh.rope_neox = lm.rope_neox();
  sh.sub_norms = lm.sub_norms();
  sh.tied_output = lm.tied_output();
  const TensorView* head_t =
      file.FindTensor(sh.tied_output ? "token_embd.weight" : "output.weight");
  const TensorView* embd_t = file.FindTensor("token_embd.weight");
  sh.head_dtype = head_t->info->dtype();

  int threads = options.threads > 0 ? options.threads : DefaultThreads();
  threads = std::min(threads, kMaxTeam);
  const int max_context = options.max_context > 0
                              ? options.max_context
                              : static_cast<int>(std::min<uint32_t>(
                                    lm.context(), kLmDefaultContextCap));
  if (max_context < 1 || static_cast<uint32_t>(max_context) > kMaxLmContext) {
    return InvalidArgument("llm.max_context %d is outside 1..%u", max_context,
                           kMaxLmContext);
  }
  if (options.sequences < 1 || options.sequences > 256) {
    return InvalidArgument("llm.sequences %d is outside 1..256",
                           options.sequences);
  }
  if (options.max_batch < 1 || options.max_batch > kMaxKernelBatch) {
    return InvalidArgument("language model batch %d is outside 1..%d",
                           options.max_batch, kMaxKernelBatch);
  }
  const int B = options.max_batch;
  const uint32_t E = sh.embedding, F = sh.ffn, D = sh.head_dim,
                 KV = sh.kv_heads * D, V = sh.vocab;

  // Tasks per phase (ThreadTeam::RunPhases): with more than one member,
  // several per member, so that a member that is descheduled while holding
  // one delays the phase by a small part of it.
  const int chunks = threads == 1 ? 1 : kTasksPerMember * threads;
  // Attention: groups of heads, each within one KV head when there are
  // several queries per KV head.
  int attention_tasks = 1;
  if (threads > 1) {
    const int want = kTasksPerMember * threads;
    const int group = static_cast<int>(sh.heads / sh.kv_heads);
    if (group > 1) {
      const int kv = static_cast<int>(sh.kv_heads);
      attention_tasks = kv * std::min(group, (want + kv - 1) / kv);
    } else {
      attention_tasks = std::min(static_cast<int>(sh.heads), want);
    }
  }
  const int phases = kLayerPhases * static_cast<int>(sh.layers) + 1;

  // 1. Sizes: check ternary codes, size every matrix's chunks.
  const char* kMatrices[7] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                              "ffn_gate", "ffn_up", "ffn_down"};
  size_t weight_bytes = 0, per_token = 0;
  for (uint32_t l = 0; l < sh.layers; ++l) {
    for (const char* mname : kMatrices) {
      const std::string name =
          "blk." + std::to_string(l) + "." + mname + ".weight";
      const TensorView* t = file.FindTensor(name);
      const size_t n = t->info->shape(0), k = t->info->shape(1);
      size_t row = 0, col = 0;
      if (!CheckTernaryCodes(t->bytes.data(), n, k, &row, &col)) {
        return InvalidArgument(
            "%s: tensor '%s' has an invalid ternary code at row %zu column "
            "%zu (%s)",
            file.origin().c_str(), name.c_str(), row, col,
            col >= k ? "padding must be code 1" : "code 3 is not a weight");
      }
      const TernaryKernel& kern = KernelFor(n, k);
      for (int c = 0; c < chunks; ++c) {
        const uint32_t r0 = RowSplit(n, c, chunks),
                       r1 = RowSplit(n, c + 1, chunks);
        if (r1 > r0) weight_bytes += AlignUp(kern.packed_size(r1 - r0, k));
      }
      per_token += kern.packed_size(n, k);
    }
  }
  const size_t norms_bytes =
      sizeof(float) *
      (static_cast<size_t>(sh.layers) * (2 * E + (sh.sub_norms ? E + F : 0)) +
       E);
  weight_bytes += AlignUp(norms_bytes) + 2 * kAlign * sh.layers;
  // The head (I8, F16) in the layout of the math set (lm_math.h), with row
  // sums for I8; F32 stays row-major.
  const lm_math::Ops& math = lm_math::BestOps();
  const bool head_packed =
      sh.head_dtype == model::I8 || sh.head_dtype == model::F16;
  const size_t head_elem = sh.head_dtype == model::I8 ? 1 : 2;
  const size_t head_bytes =
      head_packed ? lm_math::HeadPackedBytes(math, head_elem, V, E)
                  : head_t->bytes.size();
  const size_t head_sums_bytes =
      sh.head_dtype == model::I8 ? sizeof(int32_t) * V : 0;
  weight_bytes += AlignUp(head_bytes) + AlignUp(head_sums_bytes) +
                  AlignUp(sizeof(float) * head_t->info->scale_size());
  if (!sh.tied_output) {
    weight_bytes += AlignUp(embd_t->bytes.size()) +
                    AlignUp(sizeof(float) * embd_t->info->scale_size());
  }
  per_token += norms_bytes + head_bytes + head_sums_bytes +
               sizeof(float) * head_t->info->scale_size();
  const size_t meta_bytes =
      AlignUp(sizeof(LmModel)) + AlignUp(sizeof(LmModel::Layer) * sh.layers) +
      7 * sh.layers *
          (AlignUp(sizeof(uint32_t) * (chunks + 1)) +
           AlignUp(sizeof(uint8_t*) * chunks)) +
      AlignUp(sizeof(int) * phases) + AlignUp(sizeof(float) * D / 2) +
      AlignUp(sizeof(int32_t) *
              (lm.golden_prompt_size() + lm.golden_tokens_size()));
  const size_t kv_bytes = sizeof(uint16_t) * 2 *
                          static_cast<size_t>(options.sequences) * sh.layers *
                          sh.kv_heads * max_context * D;
  const size_t quant_stride = ActivationStride(std::max(E, F));
  const size_t acc_elems =
      static_cast<size_t>(B) * std::max<size_t>(E + 2 * KV, 2 * F);
  const size_t group = sh.heads / sh.kv_heads;  // queries per KV head
  const size_t member_bytes =
      AlignUp(sizeof(float) * B * std::max(E, F)) +  // normalized rows
      AlignUp(B * quant_stride) + AlignUp(sizeof(int32_t) * B) +
      AlignUp(sizeof(float) * B) +                    // quantized input
      AlignUp(sizeof(float) * max_context * group) +  // scores
      AlignUp(sizeof(uint16_t) * 2 * B * KV) +        // new keys, values
      AlignUp(std::max(lm_math::HeadWorkBytes(E),     // head, embedding
                       sizeof(float) * E));
  const size_t scratch_bytes =
      AlignUp(sizeof(float) * B * E) * 3 +        // h, q, o
      AlignUp(sizeof(float) * B * KV) * 2 +       // k, v
      AlignUp(sizeof(float) * B * F) +            // g
      AlignUp(sizeof(float) * B * V) +            // logits
      AlignUp(sizeof(float) * B * (D / 2)) * 2 +  // rope cos, sin
      AlignUp(sizeof(int32_t) * acc_elems) +
      AlignUp(sizeof(LmModel::MemberScratch) * threads) +
      member_bytes * threads;
  const size_t need = meta_bytes + weight_bytes + kv_bytes + scratch_bytes;
  if (need > slot_bytes_) {
    return ResourceExhausted(
        "%s: language model '%s' needs %zu bytes (weights %zu, KV cache %zu "
        "for %d sequences x %d tokens, scratch %zu) but an arena slot holds "
        "%zu bytes (arena %zu bytes in %d slots); raise runtime.arena_mb%s "
        "or lower llm.max_context / llm.sequences",
        file.origin().c_str(), h.name().c_str(), need, weight_bytes, kv_bytes,
        options.sequences, max_context, scratch_bytes, slot_bytes_,
        arena_bytes_, options_.slots,
        options_.slots == 2
            ? ", use one slot (cold swap: runtime.swap = \"cold\"),"
            : "");
  }

  // 2. The team (kept across loads of the same size).
  if (team_ == nullptr || team_->members() != threads) {
    const int other = 1 - slot;
    if (options_.slots == 2 && lm_slots_[other] != nullptr &&
        team_ != nullptr) {
      return FailedPrecondition(
          "language model threads %d differ from the %d of the model in the "
          "other slot",
          threads, team_->members());
    }
    team_ = std::make_unique<ThreadTeam>(threads);
  }

  // 3. Fill the slot.
  slots_[slot] = nullptr;
  lm_slots_[slot] = nullptr;
  uint8_t* base = arena_ + static_cast<size_t>(slot) * slot_bytes_;
  size_t used = 0;
  auto take = [&](size_t bytes) {
    TERND_CHECK(used + AlignUp(bytes) <= slot_bytes_);
    uint8_t* p = base + used;
    used += AlignUp(bytes);
    return p;
  };
  LmModel* m = new (take(sizeof(LmModel))) LmModel();
  const size_t name_len = std::min(h.name().size(), kMaxNameLength);
  std::memcpy(m->name_, h.name().data(), name_len);
  m->name_[name_len] = '\0';
  m->version_ = h.version();
  m->shape_ = sh;
  m->max_context_ = max_context;
  m->sequences_ = options.sequences;
  m->max_batch_ = B;
  m->threads_ = threads;
  m->kernel_ = kernel_;
  m->math_ = &math;
  m->team_ = team_.get();
  LmModel::Layer* layers = reinterpret_cast<LmModel::Layer*>(
      take(sizeof(LmModel::Layer) * sh.layers));
  {
    int* phase_end = reinterpret_cast<int*>(take(sizeof(int) * phases));
    int end = 0;
    for (uint32_t l = 0; l < sh.layers; ++l) {
      const int tasks[kLayerPhases] = {3 * chunks, attention_tasks, chunks,
                                       chunks, chunks};
      for (int p = 0; p < kLayerPhases; ++p) {
        end += tasks[p];
        phase_end[kLayerPhases * l + p] = end;
      }
    }
    phase_end[phases - 1] = end + chunks;  // the head
    m->phase_end_ = phase_end;
    m->attention_tasks_ = attention_tasks;
    m->head_tasks_ = chunks;
  }
  auto place_matrix = [&](const std::string& name, LmModel::Matrix* mat) {
    const TensorView* t = file.FindTensor(name);
    const uint32_t n = static_cast<uint32_t>(t->info->shape(0)),
                   k = static_cast<uint32_t>(t->info->shape(1));
    const TernaryKernel& kern = KernelFor(n, k);
    mat->kernel = &kern;
    mat->n = n;
    mat->k = k;
    mat->scale = t->info->scale(0);
    mat->chunks = chunks;
    if (IsTq1Kernel(kern)) ++m->tq1_matrices_;
    auto* row_begin =
        reinterpret_cast<uint32_t*>(take(sizeof(uint32_t) * (chunks + 1)));
    auto* packed =
        reinterpret_cast<const uint8_t**>(take(sizeof(uint8_t*) * chunks));
    for (int c = 0; c <= chunks; ++c) row_begin[c] = RowSplit(n, c, chunks);
    for (int c = 0; c < chunks; ++c) {
      const uint32_t r0 = row_begin[c], r1 = row_begin[c + 1];
      packed[c] = nullptr;
      if (r1 == r0) continue;
      uint8_t* dst = take(kern.packed_size(r1 - r0, k));
      kern.pack(t->bytes.data() + r0 * TernaryRowBytes(k), r1 - r0, k, dst);
      packed[c] = dst;
    }
    mat->row_begin = row_begin;
    mat->packed = packed;
  };
  auto place_f32 = [&](const std::string& name) -> const float* {
    const TensorView* t = file.FindTensor(name);
    uint8_t* dst = take(t->bytes.size());
    std::memcpy(dst, t->bytes.data(), t->bytes.size());
    return reinterpret_cast<const float*>(dst);
  };
  for (uint32_t l = 0; l < sh.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LmModel::Layer& L = layers[l];
    L = {};
    LmModel::Matrix* mats[7] = {&L.q,    &L.k,  &L.v,   &L.o,
                                &L.gate, &L.up, &L.down};
    for (int i = 0; i < 7; ++i) {
      place_matrix(p + kMatrices[i] + ".weight", mats[i]);
    }
    L.attn_norm = place_f32(p + "attn_norm.weight");
    L.ffn_norm = place_f32(p + "ffn_norm.weight");
    if (sh.sub_norms) {
      L.attn_sub_norm = place_f32(p + "attn_sub_norm.weight");
      L.ffn_sub_norm = place_f32(p + "ffn_sub_norm.weight");
    }
  }
  m->layers_ = layers;
  m->output_norm_ = place_f32("output_norm.weight");
  auto place_table = [&](const TensorView* t, const float** scales) {
    uint8_t* dst = take(t->bytes.size());
    std::memcpy(dst, t->bytes.data(), t->bytes.size());
    *scales = nullptr;
    if (t->info->scale_size() > 0) {
      float* s =
          reinterpret_cast<float*>(take(sizeof(float) * t->info->scale_size()));
      std::copy(t->info->scale().begin(), t->info->scale().end(), s);
      *scales = s;
    }
    return static_cast<const void*>(dst);
  };
  // The head: I8 and F16 in the math set's layout.
  m->head_group_ = head_packed ? math.head_group : 1;
  m->head_group_bytes_ =
      head_packed ? lm_math::HeadPackedBytes(
                        math, head_elem, static_cast<size_t>(m->head_group_), E)
                  : 0;
  {
    uint8_t* dst = take(head_bytes);
    int32_t* sums = nullptr;
    if (head_sums_bytes > 0) {
      sums = reinterpret_cast<int32_t*>(take(head_sums_bytes));
    }
    if (head_packed) {
      lm_math::PackHead(math, head_elem, head_t->bytes.data(), V, E, dst, sums);
    } else {
      std::memcpy(dst, head_t->bytes.data(), head_bytes);
    }
    m->head_ = dst;
    m->head_row_sums_ = sums;
    m->head_scales_ = nullptr;
    if (head_t->info->scale_size() > 0) {
      float* sc = reinterpret_cast<float*>(
          take(sizeof(float) * head_t->info->scale_size()));
      std::copy(head_t->info->scale().begin(), head_t->info->scale().end(), sc);
      m->head_scales_ = sc;
    }
  }
  m->embedding_dtype_ = embd_t->info->dtype();
  if (sh.tied_output) {
    m->embedding_ = m->head_;
    m->embedding_scales_ = m->head_scales_;
    m->embedding_in_head_layout_ = head_packed && m->head_group_ > 1;
  } else {
    m->embedding_ = place_table(embd_t, &m->embedding_scales_);
    m->embedding_in_head_layout_ = false;
  }
  float* inv_freq = reinterpret_cast<float*>(take(sizeof(float) * D / 2));
  const TensorView* factors = file.FindTensor("rope_freqs.weight");
  for (uint32_t i = 0; i < D / 2; ++i) {
    inv_freq[i] = std::pow(sh.rope_freq_base,
                           -static_cast<float>(2 * i) / static_cast<float>(D));
    if (factors != nullptr) {
      float f;
      std::memcpy(&f, factors->bytes.data() + 4 * i, 4);
      inv_freq[i] /= f;
    }
  }
  m->rope_inv_freq_ = inv_freq;
  const int golden_total = lm.golden_prompt_size() + lm.golden_tokens_size();
  int32_t* golden = reinterpret_cast<int32_t*>(
      take(sizeof(int32_t) * std::max(golden_total, 1)));
  std::copy(lm.golden_prompt().begin(), lm.golden_prompt().end(), golden);
  std::copy(lm.golden_tokens().begin(), lm.golden_tokens().end(),
            golden + lm.golden_prompt_size());
  m->golden_ = golden;
  m->golden_prompt_len_ = lm.golden_prompt_size();
  m->golden_len_ = lm.golden_tokens_size();
  const size_t weights_end = used;

  m->kv_ = reinterpret_cast<uint16_t*>(take(kv_bytes));
  m->kv_layer_stride_ = 2 * static_cast<size_t>(sh.kv_heads) * max_context * D;
  m->kv_seq_stride_ = m->kv_layer_stride_ * sh.layers;
  std::memset(m->kv_, 0, kv_bytes);

  const size_t scratch_start = used;
  m->h_ = reinterpret_cast<float*>(take(sizeof(float) * B * E));
  m->q_ = reinterpret_cast<float*>(take(sizeof(float) * B * E));
  m->o_ = reinterpret_cast<float*>(take(sizeof(float) * B * E));
  m->k_ = reinterpret_cast<float*>(take(sizeof(float) * B * KV));
  m->v_ = reinterpret_cast<float*>(take(sizeof(float) * B * KV));
  m->g_ = reinterpret_cast<float*>(take(sizeof(float) * B * F));
  m->logits_ = reinterpret_cast<float*>(take(sizeof(float) * B * V));
  m->rope_cos_ = reinterpret_cast<float*>(take(sizeof(float) * B * (D / 2)));
  m->rope_sin_ = reinterpret_cast<float*>(take(sizeof(float) * B * (D / 2)));
  m->quant_stride_ = quant_stride;
  m->acc_ = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * acc_elems));
  auto* members = reinterpret_cast<LmModel::MemberScratch*>(
      take(sizeof(LmModel::MemberScratch) * threads));
  for (int t = 0; t < threads; ++t) {
    LmModel::MemberScratch& ms = members[t];
    ms.x = reinterpret_cast<float*>(take(sizeof(float) * B * std::max(E, F)));
    ms.quant = reinterpret_cast<int8_t*>(take(B * quant_stride));
    ms.sums = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * B));
    ms.dequant = reinterpret_cast<float*>(take(sizeof(float) * B));
    ms.scores =
        reinterpret_cast<float*>(take(sizeof(float) * max_context * group));
    ms.kv_new =
        reinterpret_cast<uint16_t*>(take(sizeof(uint16_t) * 2 * B * KV));
    ms.work = take(std::max(lm_math::HeadWorkBytes(E), sizeof(float) * E));
    ms.prepared_round = 0;
    ms.prepared_phase = -1;
  }
  m->member_scratch_ = members;
  m->scratch_bytes_ = used - scratch_start;
  m->weight_bytes_ = weights_end;
  m->kv_bytes_ = kv_bytes;
  m->used_bytes_ = used;
  m->bytes_per_token_ = per_token;
  TERND_CHECK(used <= need + kAlign);
  lm_slots_[slot] = m;
  return static_cast<const LmModel*>(m);
}

}  // namespace ternd::runtime
