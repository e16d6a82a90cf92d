#include "runtime/runtime.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <unordered_map>
#include <vector>

#include "base/check.h"
#include "base/memory.h"
#include "runtime/audio_features.h"
#include "runtime/kernels/kernels.h"
#include "runtime/lm/thread_team.h"
#include "runtime/machine.h"
#include "runtime/ops.h"
#include "runtime/planner.h"
#include "runtime/ternary_pack.h"

namespace ternd::runtime {

struct LoadedModel::Op {
  model::OpType type;
  int in0, in1, out;  // value indices; in1 only for ADD
  // CONCAT: all its inputs' value indices (num_inputs of them).
  const int* inputs;
  int num_inputs;
  WindowGeometry geo;      // convolution and pooling ops
  const AudioPlan* audio;  // AUDIO_FEATURES
  const void* weight;      // kernel-packed ternary or F32 [n, k] / gain [k]
  const float* scales;     // ternary absmean scales
  bool per_row;
  const float* bias;  // may be null
  uint32_t n, k;
  float eps;
  size_t weight_bytes;          // constant bytes read per call (OpInfo)
  uint64_t macs;                // multiply-adds per sample (OpInfo)
  const TernaryKernel* kernel;  // TERNARY_LINEAR, CONV*: variant and layout
};

struct LoadedModel::Value {
  size_t offset;  // in a worker's scratch
  uint32_t features;
  model::DType dtype;
};

namespace {

constexpr size_t kAlign = 64;
size_t AlignUp(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

// Hands out 64-byte aligned pieces of one slot, front to back.
class SlotCursor {
 public:
  SlotCursor(uint8_t* base, size_t capacity) : base_(base), cap_(capacity) {}
  uint8_t* Take(size_t bytes) {
    TERND_CHECK(used_ + AlignUp(bytes) <= cap_);  // sizes were checked first
    uint8_t* p = base_ + used_;
    used_ += AlignUp(bytes);
    return p;
  }
  template <typename T>
  T* TakeArray(size_t count) {
    return reinterpret_cast<T*>(Take(sizeof(T) * count));
  }
  size_t used() const { return used_; }

 private:
  uint8_t* base_;
  size_t cap_;
  size_t used_ = 0;
};

void CopyName(char* dst, const std::string& src) {
  size_t n = std::min(src.size(), kMaxNameLength);
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

}  // namespace

// ---------------------------------------------------------------- Executor

float* Executor::input(int i) const {
  TERND_DCHECK(i >= 0 && i < model_->num_inputs_);
  return reinterpret_cast<float*>(
      scratch_ + model_->values_[model_->input_values_[i]].offset);
}

const float* Executor::output_f32(int i) const {
  TERND_DCHECK(i >= 0 && i < model_->num_outputs_);
  return reinterpret_cast<const float*>(
      scratch_ + model_->values_[model_->output_values_[i]].offset);
}

const int32_t* Executor::output_i32(int i) const {
  return reinterpret_cast<const int32_t*>(output_f32(i));
}

namespace {

uint64_t NowNanos() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

}  // namespace

// The op loop, compiled twice: kTimed = false is the plain loop Invoke runs
// without a profile (no clock reads, no per-op test), kTimed = true adds each
// op's time to profile->op_nanos. One clock read per op: op i's time runs
// from the end of op i - 1 (or the start of the loop) to its own end, so the
// op times add up to the whole loop.
template <bool kTimed>
void Executor::RunOps(int batch, OpProfile* profile) const {
  const LoadedModel& m = *model_;
  auto f32 = [this, &m](int value) {
    return reinterpret_cast<float*>(scratch_ + m.values_[value].offset);
  };
  int8_t* q = reinterpret_cast<int8_t*>(scratch_ + m.quant_offset_);
  int32_t* sums = reinterpret_cast<int32_t*>(scratch_ + m.sums_offset_);
  float* dequant = reinterpret_cast<float*>(scratch_ + m.dequant_offset_);
  int32_t* acc = reinterpret_cast<int32_t*>(scratch_ + m.acc_offset_);

  [[maybe_unused]] uint64_t last = 0;
  if constexpr (kTimed) last = NowNanos();
  for (int i = 0; i < m.num_ops_; ++i) {
    const LoadedModel::Op& op = m.ops_[i];
    const float* x = f32(op.in0);
    float* y = f32(op.out);
    const size_t count = static_cast<size_t>(batch) * op.k;
    switch (op.type) {
      case model::TERNARY_LINEAR:
        for (int b0 = 0; b0 < batch; b0 += kMaxKernelBatch) {
          const int nb = std::min(kMaxKernelBatch, batch - b0);
          op.kernel->quantize(x + static_cast<size_t>(b0) * op.k, op.k, nb,
                              op.k, q, m.quant_stride_, sums, dequant);
          const QuantizedActivations qa{q, m.quant_stride_, sums, nb, op.k};
          op.kernel->gemm(static_cast<const uint8_t*>(op.weight), op.n, op.k,
                          qa, acc, m.acc_stride_);
          DequantizeRows(acc, m.acc_stride_, nb, op.n, op.scales, op.per_row,
                         dequant, op.bias, y + static_cast<size_t>(b0) * op.n,
                         op.n);
        }
        break;
      case model::LINEAR:
        LinearF32(x, batch, op.k, static_cast<const float*>(op.weight), op.n,
                  op.bias, y);
        break;
      case model::RMS_NORM:
        RmsNorm(x, batch, op.k, static_cast<const float*>(op.weight), op.eps,
                y);
        break;
      case model::LAYER_NORM:
        LayerNorm(x, batch, op.k, static_cast<const float*>(op.weight), op.bias,
                  op.eps, y);
        break;
      case model::RELU:
        Relu(x, count, y);
        break;
      case model::RELU2:
        Relu2(x, count, y);
        break;
      case model::SILU:
        Silu(x, count, y);
        break;
      case model::GELU:
        Gelu(x, count, y);
        break;
      case model::ADD:
        Add(x, f32(op.in1), count, y);
        break;
      case model::SOFTMAX:
        Softmax(x, batch, op.k, y);
        break;
      case model::ARGMAX:
        Argmax(x, batch, op.k, reinterpret_cast<int32_t*>(y));
        break;
      case model::CONV2D:
      case model::CONV1D:
        RunTernaryConv(i, x, batch, y);
        break;
      case model::DEPTHWISE_CONV2D:
        for (int b = 0; b < batch; ++b) {
          DepthwiseConv2d(x + static_cast<size_t>(b) * op.k, op.geo,
                          static_cast<const float*>(op.weight), op.bias,
                          y + static_cast<size_t>(b) * op.n);
        }
        break;
      case model::MAX_POOL:
      case model::AVG_POOL:
        for (int b = 0; b < batch; ++b) {
          (op.type == model::MAX_POOL ? MaxPool : AvgPool)(
              x + static_cast<size_t>(b) * op.k, op.geo,
              y + static_cast<size_t>(b) * op.n);
        }
        break;
      case model::GLOBAL_AVG_POOL:
        for (int b = 0; b < batch; ++b) {
          GlobalAvgPool(x + static_cast<size_t>(b) * op.k, op.k / op.n, op.n,
                        y + static_cast<size_t>(b) * op.n);
        }
        break;
      case model::RESHAPE:
        std::memcpy(y, x, count * sizeof(float));
        break;
      case model::AUDIO_FEATURES: {
        const size_t worker =
            static_cast<size_t>(scratch_ - m.scratch_) / m.scratch_stride_;
        for (int b = 0; b < batch; ++b) {
          ComputeAudioFeatures(*op.audio, x + static_cast<size_t>(b) * op.k,
                               *m.ffts_[worker], scratch_ + m.codes_offset_,
                               y + static_cast<size_t>(b) * op.n);
        }
        break;
      }
      case model::CONCAT: {
        // Positions are the output's features over its channels.
        const size_t channels = op.geo.out_c;
        const size_t positions = op.n / channels;
        for (int b = 0; b < batch; ++b) {
          size_t offset = 0;
          for (int j = 0; j < op.num_inputs; ++j) {
            const size_t f = m.values_[op.inputs[j]].features;
            CopyChannels(f32(op.inputs[j]) + static_cast<size_t>(b) * f,
                         positions, f / positions, offset, channels,
                         y + static_cast<size_t>(b) * op.n);
            offset += f / positions;
          }
        }
        break;
      }
      default:
        TERND_CHECK(false && "op type validated at load");
    }
    if constexpr (kTimed) {
      const uint64_t now = NowNanos();
      profile->op_nanos[i] += now - last;
      last = now;
    }
  }
}

// CONV2D / CONV1D, sample by sample: the whole sample is quantized to int8
// once (one absmax, one dequant factor: docs/model-format.md), then im2col
// gathers up to kMaxKernelBatch output positions' windows of codes into the
// int8 staging rows, the ternary kernel multiplies them with the weights
// [C_out, patch], and DequantizeRows writes those positions' channels.
void Executor::RunTernaryConv(int op_index, const float* x, int batch,
                              float* y) const {
  const LoadedModel& m = *model_;
  const LoadedModel::Op& op = m.ops_[op_index];
  const WindowGeometry& g = op.geo;
  int8_t* codes = reinterpret_cast<int8_t*>(scratch_ + m.codes_offset_);
  int8_t* q = reinterpret_cast<int8_t*>(scratch_ + m.quant_offset_);
  int32_t* sums = reinterpret_cast<int32_t*>(scratch_ + m.sums_offset_);
  float* dequant = reinterpret_cast<float*>(scratch_ + m.dequant_offset_);
  int32_t* acc = reinterpret_cast<int32_t*>(scratch_ + m.acc_offset_);
  const size_t patch = g.patch();
  const size_t stride = ActivationStride(patch);
  const size_t positions = static_cast<size_t>(g.out_h) * g.out_w;
  for (int b = 0; b < batch; ++b) {
    int32_t sample_sum;
    float d;
    op.kernel->quantize(x + static_cast<size_t>(b) * op.k, op.k, 1, op.k, codes,
                        ActivationStride(op.k), &sample_sum, &d);
    float* yb = y + static_cast<size_t>(b) * op.n;
    for (size_t p0 = 0; p0 < positions; p0 += kMaxKernelBatch) {
      const int nb =
          static_cast<int>(std::min<size_t>(kMaxKernelBatch, positions - p0));
      Im2colRows(codes, g, p0, nb, q, stride, sums);
      for (int r = 0; r < nb; ++r) dequant[r] = d;
      const QuantizedActivations qa{q, stride, sums, nb, patch};
      op.kernel->gemm(static_cast<const uint8_t*>(op.weight), g.out_c, patch,
                      qa, acc, m.acc_stride_);
      DequantizeRows(acc, m.acc_stride_, nb, g.out_c, op.scales, op.per_row,
                     dequant, op.bias, yb + p0 * g.out_c, g.out_c);
    }
  }
}

Status Executor::Invoke(int batch, OpProfile* profile) const {
  const LoadedModel& m = *model_;
  if (batch < 1 || batch > m.max_batch_) {
    return InvalidArgument("batch of %d rows is outside 1..%d for model '%s'",
                           batch, m.max_batch_, m.name_);
  }
  for (int i = 0; i < m.num_inputs_; ++i) {
    const float* x = input(i);
    const size_t f = m.inputs_[i].features;
    for (size_t j = 0; j < f * static_cast<size_t>(batch); ++j) {
      if (!std::isfinite(x[j])) {
        return InvalidArgument(
            "input '%s' row %zu feature %zu is %g; inputs must be finite",
            m.inputs_[i].name, j / f, j % f, static_cast<double>(x[j]));
      }
    }
  }
  if (profile == nullptr) {
    RunOps<false>(batch, nullptr);
  } else {
    RunOps<true>(batch, profile);
  }
  return Status::Ok();
}

// ------------------------------------------------------------- LoadedModel

const IoInfo& LoadedModel::input_info(int i) const {
  TERND_CHECK(i >= 0 && i < num_inputs_);
  return inputs_[i];
}

const IoInfo& LoadedModel::output_info(int i) const {
  TERND_CHECK(i >= 0 && i < num_outputs_);
  return outputs_[i];
}

int LoadedModel::FindInput(std::string_view name) const {
  for (int i = 0; i < num_inputs_; ++i) {
    if (name == inputs_[i].name) return i;
  }
  return -1;
}

int LoadedModel::FindOutput(std::string_view name) const {
  for (int i = 0; i < num_outputs_; ++i) {
    if (name == outputs_[i].name) return i;
  }
  return -1;
}

OpInfo LoadedModel::op_info(int i) const {
  TERND_CHECK(i >= 0 && i < num_ops_);
  const Op& op = ops_[i];
  return {op.type, op.k, op.n, op.weight_bytes, op.kernel, op.macs};
}

Executor LoadedModel::executor(int worker) const {
  TERND_CHECK(worker >= 0 && worker < workers_);
  return Executor(this,
                  scratch_ + static_cast<size_t>(worker) * scratch_stride_);
}

Status LoadedModel::CheckGolden(int worker) const {
  if (!has_golden()) {
    return FailedPrecondition("model '%s' has no golden input/output pair",
                              name_);
  }
  Executor ex = executor(worker);
  for (int i = 0; i < num_inputs_; ++i) {
    std::memcpy(ex.input(i), golden_[i],
                sizeof(float) * inputs_[i].features * golden_batch_);
  }
  Status s = ex.Invoke(golden_batch_);
  if (!s.ok()) return s.Prepend("golden check");
  for (int o = 0; o < num_outputs_; ++o) {
    const size_t count =
        static_cast<size_t>(outputs_[o].features) * golden_batch_;
    const void* want = golden_[num_inputs_ + o];
    for (size_t j = 0; j < count; ++j) {
      const size_t row = j / outputs_[o].features;
      const size_t col = j % outputs_[o].features;
      if (outputs_[o].dtype == model::I32) {
        const int32_t got = ex.output_i32(o)[j];
        const int32_t exp = static_cast<const int32_t*>(want)[j];
        if (got != exp) {
          return Internal(
              "golden check of model '%s' failed: output '%s' row %zu "
              "feature %zu is %d, expected %d",
              name_, outputs_[o].name, row, col, got, exp);
        }
      } else {
        const float got = ex.output_f32(o)[j];
        const float exp = static_cast<const float*>(want)[j];
        if (!(std::fabs(got - exp) <= golden_tolerance_)) {
          return Internal(
              "golden check of model '%s' failed: output '%s' row %zu "
              "feature %zu is %.9g, expected %.9g (tolerance %g)",
              name_, outputs_[o].name, row, col, static_cast<double>(got),
              static_cast<double>(exp), static_cast<double>(golden_tolerance_));
        }
      }
    }
  }
  return Status::Ok();
}

// ------------------------------------------------------------------ OpInfo

double OpInfo::Flops(int batch) const {
  return 2.0 * static_cast<double>(macs) * batch;
}

double OpInfo::BytesMoved(int batch) const {
  const double inputs = type == model::ADD ? 2.0 : 1.0;
  return static_cast<double>(weight_bytes) +
         sizeof(float) * static_cast<double>(batch) *
             (inputs * in_features + out_features);
}

// ----------------------------------------------------------------- Runtime

Result<std::unique_ptr<Runtime>> Runtime::Create(
    const RuntimeOptions& options) {
  if (options.slots != 1 && options.slots != 2) {
    return InvalidArgument(
        "runtime slots is %d, expected 1 (cold swap) or 2 "
        "(hot swap)",
        options.slots);
  }
  if (options.workers < 1 || options.workers > 256) {
    return InvalidArgument("runtime workers is %d, expected 1..256",
                           options.workers);
  }
  if (options.arena_bytes < (size_t{1} << 16)) {
    return InvalidArgument(
        "runtime arena of %zu bytes is below the minimum of "
        "65536",
        options.arena_bytes);
  }
  TERND_ASSIGN_OR_RETURN(const TernaryKernel* kernel,
                         SelectTernaryKernel(options.kernel));
  std::unique_ptr<Runtime> rt(new Runtime());
  rt->options_ = options;
  rt->kernel_ = kernel;
  TERND_RETURN_IF_ERROR(rt->ChooseWeightLayouts());
  rt->arena_bytes_ = AlignUp(options.arena_bytes);
  // Reserved with room to start on a 2 MiB boundary, so the whole arena can
  // be backed by huge pages (base/memory.h): cheaper first placement of a
  // model and fewer TLB misses while kernels stream its weights.
  rt->mapping_bytes_ = rt->arena_bytes_ + kHugePageBytes;
  void* p = ::mmap(nullptr, rt->mapping_bytes_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return ErrnoError(errno, "cannot reserve a runtime arena of %zu bytes",
                      rt->arena_bytes_);
  }
  rt->mapping_ = p;
  const uintptr_t start =
      (reinterpret_cast<uintptr_t>(p) + kHugePageBytes - 1) &
      ~uintptr_t{kHugePageBytes - 1};
  rt->arena_ = reinterpret_cast<uint8_t*>(start);
  AdviseHugePages(rt->arena_, rt->arena_bytes_);
  rt->slot_bytes_ = rt->arena_bytes_ / options.slots / kAlign * kAlign;
  return rt;
}

Status Runtime::ChooseWeightLayouts() {
  std::string_view layout = options_.weight_layout;
  if (layout == "auto") {
    const char* forced = std::getenv(kWeightLayoutEnvVar);
    if (forced != nullptr && forced[0] != '\0') layout = forced;
  }
  if (layout != "auto" && layout != "2bit" && layout != "1.6bit") {
    return InvalidArgument(
        "weight layout '%.*s' is not one of auto, 2bit, 1.6bit",
        static_cast<int>(layout.size()), layout.data());
  }
  tq1_threshold_ = options_.tq1_threshold_bytes > 0
                       ? options_.tq1_threshold_bytes
                       : LastLevelCacheBytes();
  if (IsTq1Kernel(*kernel_)) {
    if (layout == "2bit") {
      return InvalidArgument(
          "ternary kernel '%s' is a 1.6-bit variant but the weight layout is "
          "2bit",
          kernel_->name);
    }
    tq1_kernel_ = kernel_;
    all_tq1_ = true;
    return Status::Ok();
  }
  if (layout == "2bit") return Status::Ok();
  const TernaryKernel* tq1 = Tq1Counterpart(*kernel_);
  // Under "auto" only where it pays: the SIMD variants, not the reference.
  if (layout == "auto" && kernel_ == &kTernaryKernelRef) tq1 = nullptr;
  if (tq1 == nullptr) {
    if (layout == "auto") return Status::Ok();
    return FailedPrecondition(
        "weight layout 1.6bit: ternary kernel '%s' has no 1.6-bit variant",
        kernel_->name);
  }
  TERND_ASSIGN_OR_RETURN(tq1_kernel_, SelectTernaryKernel(tq1->name));
  all_tq1_ = layout == "1.6bit";
  return Status::Ok();
}

const TernaryKernel& Runtime::KernelFor(size_t n, size_t k) const {
  if (tq1_kernel_ != nullptr &&
      (all_tq1_ || kernel_->packed_size(n, k) > tq1_threshold_)) {
    return *tq1_kernel_;
  }
  return *kernel_;
}

Runtime::~Runtime() {
  team_.reset();
  if (mapping_) ::munmap(mapping_, mapping_bytes_);
}

const LoadedModel* Runtime::model(int slot) const {
  TERND_CHECK(slot >= 0 && slot < options_.slots);
  return slots_[slot];
}

const LmModel* Runtime::lm(int slot) const {
  TERND_CHECK(slot >= 0 && slot < options_.slots);
  return lm_slots_[slot];
}

void Runtime::Unload(int slot) {
  TERND_CHECK(slot >= 0 && slot < options_.slots);
  slots_[slot] = nullptr;
  lm_slots_[slot] = nullptr;
  ffts_[slot].clear();
}

Result<const LoadedModel*> Runtime::Load(int slot, const ModelFile& file) {
  TERND_CHECK(slot >= 0 && slot < options_.slots);
  if (file.is_language_model()) {
    return InvalidArgument(
        "%s: is a language model (architecture 'bitnet-lm'), not a graph "
        "model",
        file.origin().c_str());
  }
  const model::ModelHeader& h = file.header();
  const model::Graph& g = h.graph();
  const std::span<const ValueShape> shapes = file.values();
  const int num_values = static_cast<int>(shapes.size());
  const int num_ops = g.ops_size();
  const int max_batch = static_cast<int>(g.max_batch());
  auto value_index = [&](const std::string& name) {
    for (int v = 0; v < num_values; ++v) {
      if (shapes[v].name == name) return v;
    }
    TERND_CHECK(false && "graph references were validated by ModelFile");
    return -1;
  };

  // 1. Check every ternary code and size the weights in the kernel layout.
  struct Placement {
    const TensorView* tensor;
    size_t bytes;
  };
  std::vector<Placement> weights;
  std::unordered_map<std::string, size_t> weight_index;
  size_t weight_bytes = 0;
  auto place = [&](const std::string& name) -> Status {
    if (name.empty() || weight_index.count(name)) return Status::Ok();
    const TensorView* t = file.FindTensor(name);
    size_t bytes = t->bytes.size();
    if (t->info->dtype() == model::TERNARY2) {
      const size_t n = t->info->shape(0), k = t->info->shape(1);
      size_t row = 0, col = 0;
      if (!CheckTernaryCodes(t->bytes.data(), n, k, &row, &col)) {
        return InvalidArgument(
            "%s: tensor '%s' has an invalid ternary code at row %zu column %zu"
            " (%s)",
            file.origin().c_str(), name.c_str(), row, col,
            col >= k ? "padding must be code 1" : "code 3 is not a weight");
      }
      bytes = KernelFor(n, k).packed_size(n, k) +
              AlignUp(sizeof(float) * t->info->scale_size());
    }
    weight_index[name] = weights.size();
    weights.push_back({t, bytes});
    weight_bytes += AlignUp(bytes);
    return Status::Ok();
  };
  for (const model::Op& op : g.ops()) {
    TERND_RETURN_IF_ERROR(place(op.weight()));
    TERND_RETURN_IF_ERROR(place(op.bias()));
  }

  // 2. Plan activation buffers by liveness.
  std::vector<BufferRequest> requests(num_values);
  for (int v = 0; v < num_values; ++v) {
    requests[v].bytes =
        sizeof(float) * static_cast<size_t>(shapes[v].features) * max_batch;
    requests[v].first_op = v < g.inputs_size() ? 0 : v - g.inputs_size();
    requests[v].last_op = requests[v].first_op;
  }
  for (int i = 0; i < num_ops; ++i) {
    for (const std::string& in : g.ops(i).inputs()) {
      BufferRequest& r = requests[value_index(in)];
      r.last_op = std::max(r.last_op, i);
    }
  }
  for (const model::ValueInfo& out : g.outputs()) {
    requests[value_index(out.name())].last_op = num_ops;
  }
  const MemoryPlan plan = PlanMemory(requests, kAlign);
  // Staging of ternary products: int8 rows (a linear op's tokens, or a
  // convolution's im2col rows) and their int32 results, kMaxKernelBatch
  // rows at a time; for convolutions also one sample's int8 codes.
  size_t max_stride = 0, max_n = 0, max_codes = 0;
  for (int i = 0; i < num_ops; ++i) {
    const model::Op& op = g.ops(i);
    const bool conv = op.type() == model::CONV2D || op.type() == model::CONV1D;
    if (op.type() != model::TERNARY_LINEAR && !conv) continue;
    const model::TensorInfo& w = *file.FindTensor(op.weight())->info;
    max_stride = std::max<size_t>(max_stride, ActivationStride(w.shape(1)));
    max_n = std::max<size_t>(max_n, w.shape(0));
    if (conv) {
      max_codes = std::max<size_t>(
          max_codes,
          ActivationStride(shapes[value_index(op.inputs(0))].features));
    }
  }
  // The audio front end's frame, spectrum and power share that region, and
  // its window and filterbank tables live with the metadata.
  size_t audio_tables = 0;
  int audio_ops = 0;
  std::vector<uint32_t> fft_lengths;
  for (const model::Op& op : g.ops()) {
    if (op.type() != model::AUDIO_FEATURES) continue;
    AudioPlan sizes{};
    sizes.fft_length = op.audio().fft_length();
    sizes.bins = sizes.fft_length / 2 + 1;
    max_codes = std::max(max_codes, sizes.scratch_bytes());
    audio_tables += AlignUp(AudioTableBytes(op.audio()));
    ++audio_ops;
    fft_lengths.push_back(op.audio().fft_length());
  }
  const size_t codes_offset = plan.total_bytes;
  const size_t quant_offset = codes_offset + AlignUp(max_codes);
  const size_t sums_offset =
      quant_offset + AlignUp(kMaxKernelBatch * max_stride);
  const size_t dequant_offset = sums_offset + AlignUp(kMaxKernelBatch * 4);
  const size_t acc_offset = dequant_offset + AlignUp(kMaxKernelBatch * 4);
  const size_t scratch_stride =
      acc_offset + AlignUp(kMaxKernelBatch * max_n * sizeof(int32_t));

  // 3. Golden pair and metadata sizes; then check it all fits.
  const int num_io = g.inputs_size() + g.outputs_size();
  size_t golden_bytes = 0;
  if (h.has_golden()) {
    for (const std::string& t : h.golden().input_tensors()) {
      golden_bytes += AlignUp(file.FindTensor(t)->bytes.size());
    }
    for (const std::string& t : h.golden().output_tensors()) {
      golden_bytes += AlignUp(file.FindTensor(t)->bytes.size());
    }
  }
  size_t op_inputs = 0;
  for (const model::Op& op : g.ops()) op_inputs += op.inputs_size();
  const size_t meta_bytes =
      AlignUp(sizeof(LoadedModel)) +
      AlignUp(sizeof(LoadedModel::Op) * num_ops) +
      AlignUp(sizeof(int) * op_inputs) +
      AlignUp(sizeof(AudioPlan) * audio_ops) + audio_tables +
      AlignUp(sizeof(AudioFft*) * options_.workers) +
      AlignUp(sizeof(LoadedModel::Value) * num_values) +
      AlignUp(sizeof(IoInfo) * num_io) + AlignUp(sizeof(int) * num_io) +
      AlignUp(sizeof(void*) * num_io);
  const size_t scratch_total = scratch_stride * options_.workers;
  const size_t need = meta_bytes + weight_bytes + golden_bytes + scratch_total;
  if (need > slot_bytes_) {
    return ResourceExhausted(
        "%s: model '%s' needs %zu bytes (weights %zu, scratch %zu per worker "
        "x %d workers, metadata and golden pair %zu) but an arena slot holds "
        "%zu bytes (arena %zu bytes in %d slots); raise the arena size%s",
        file.origin().c_str(), h.name().c_str(), need, weight_bytes,
        scratch_stride, options_.workers, meta_bytes + golden_bytes,
        slot_bytes_, arena_bytes_, options_.slots,
        options_.slots == 2 ? " or use one slot (cold swap)" : "");
  }

  // 4. Fill the slot.
  slots_[slot] = nullptr;
  lm_slots_[slot] = nullptr;
  SlotCursor cur(arena_ + static_cast<size_t>(slot) * slot_bytes_, slot_bytes_);
  LoadedModel* m = new (cur.Take(sizeof(LoadedModel))) LoadedModel();
  CopyName(m->name_, h.name());
  m->version_ = h.version();
  m->max_batch_ = max_batch;
  m->num_inputs_ = g.inputs_size();
  m->num_outputs_ = g.outputs_size();
  m->num_ops_ = num_ops;
  m->num_values_ = num_values;
  m->kernel_ = kernel_;
  m->workers_ = options_.workers;

  LoadedModel::Op* ops = cur.TakeArray<LoadedModel::Op>(num_ops);
  int* op_input_values = cur.TakeArray<int>(op_inputs);
  AudioPlan* audio_plans = cur.TakeArray<AudioPlan>(audio_ops);
  AudioFft** ffts = cur.TakeArray<AudioFft*>(options_.workers);
  // One FFT (plans and work buffers) per worker, made here so that Invoke
  // allocates nothing; owned by the runtime until the slot is reloaded.
  ffts_[slot].clear();
  for (int w = 0; w < options_.workers; ++w) {
    ffts[w] = nullptr;
    if (audio_ops == 0) continue;
    ffts_[slot].push_back(std::make_unique<AudioFft>());
    for (uint32_t n : fft_lengths) ffts_[slot].back()->Prepare(n);
    ffts[w] = ffts_[slot].back().get();
  }
  LoadedModel::Value* values = cur.TakeArray<LoadedModel::Value>(num_values);
  IoInfo* io = cur.TakeArray<IoInfo>(num_io);
  int* io_values = cur.TakeArray<int>(num_io);
  const void** golden = cur.TakeArray<const void*>(num_io);
  for (int v = 0; v < num_values; ++v) {
    values[v] = {plan.offsets[v], shapes[v].features, shapes[v].dtype};
  }
  for (int i = 0; i < num_io; ++i) {
    const bool is_in = i < g.inputs_size();
    const model::ValueInfo& vi =
        is_in ? g.inputs(i) : g.outputs(i - g.inputs_size());
    const int v = value_index(vi.name());
    CopyName(io[i].name, vi.name());
    io[i].dtype = shapes[v].dtype;
    io[i].features = shapes[v].features;
    io[i].sample_rate = 0;
    if (is_in) {
      for (const model::Op& op : g.ops()) {
        if (op.type() == model::AUDIO_FEATURES && op.inputs(0) == vi.name()) {
          io[i].sample_rate = op.audio().sample_rate();
        }
      }
    }
    io_values[i] = v;
  }

  std::vector<const uint8_t*> placed(weights.size());
  std::vector<const float*> placed_scales(weights.size(), nullptr);
  for (size_t w = 0; w < weights.size(); ++w) {
    const model::TensorInfo& info = *weights[w].tensor->info;
    const std::span<const uint8_t> src = weights[w].tensor->bytes;
    if (info.dtype() == model::TERNARY2) {
      const size_t n = info.shape(0), k = info.shape(1);
      uint8_t* dst = cur.Take(weights[w].bytes);
      const TernaryKernel& kernel = KernelFor(n, k);
      kernel.pack(src.data(), n, k, dst);
      float* scales =
          reinterpret_cast<float*>(dst + AlignUp(kernel.packed_size(n, k)));
      std::copy(info.scale().begin(), info.scale().end(), scales);
      placed[w] = dst;
      placed_scales[w] = scales;
    } else {
      uint8_t* dst = cur.Take(src.size());
      std::memcpy(dst, src.data(), src.size());
      placed[w] = dst;
    }
  }
  auto weight_ptr = [&](const std::string& name) -> const uint8_t* {
    return name.empty() ? nullptr : placed[weight_index.at(name)];
  };
  for (int i = 0; i < num_ops; ++i) {
    const model::Op& src = g.ops(i);
    LoadedModel::Op& op = ops[i];
    op = {};
    op.type = src.type();
    op.in0 = value_index(src.inputs(0));
    op.in1 = src.inputs_size() > 1 ? value_index(src.inputs(1)) : -1;
    op.inputs = op_input_values;
    op.num_inputs = src.inputs_size();
    for (const std::string& in : src.inputs()) {
      *op_input_values++ = value_index(in);
    }
    op.geo = file.geometry(i);
    if (op.type == model::CONCAT) {
      op.geo.out_c = file.values()[value_index(src.output())].dims.back();
    }
    if (op.type == model::AUDIO_FEATURES) {
      uint8_t* tables = cur.Take(AudioTableBytes(src.audio()));
      *audio_plans = MakeAudioPlan(
          src.audio(), shapes[op.in0].features, tables,
          reinterpret_cast<const float*>(weight_ptr(src.weight())),
          reinterpret_cast<const float*>(weight_ptr(src.bias())));
      op.audio = audio_plans++;
    }
    op.out = value_index(src.output());
    op.weight = weight_ptr(src.weight());
    op.bias = reinterpret_cast<const float*>(weight_ptr(src.bias()));
    op.k = shapes[op.in0].features;
    op.n = shapes[op.out].features;
    op.eps = src.eps();
    const bool ternary = op.type == model::TERNARY_LINEAR ||
                         op.type == model::CONV2D || op.type == model::CONV1D;
    if (!src.weight().empty()) {
      const size_t w = weight_index.at(src.weight());
      const model::TensorInfo& info = *weights[w].tensor->info;
      op.weight_bytes =
          ternary ? KernelFor(info.shape(0), info.shape(1))
                            .packed_size(info.shape(0), info.shape(1)) +
                        sizeof(float) * info.scale_size()
                  : weights[w].tensor->bytes.size();
    }
    const uint64_t positions = uint64_t{op.geo.out_h} * op.geo.out_w;
    switch (op.type) {
      case model::TERNARY_LINEAR:
      case model::LINEAR:
        op.macs = uint64_t{op.n} * op.k;
        break;
      case model::CONV2D:
      case model::CONV1D:
        op.macs = positions * op.geo.out_c * op.geo.patch();
        break;
      case model::DEPTHWISE_CONV2D:
        op.macs = positions * op.geo.in_c * op.geo.kh * op.geo.kw;
        break;
      default:
        op.macs = 0;
    }
    if (!src.bias().empty()) {
      op.weight_bytes +=
          weights[weight_index.at(src.bias())].tensor->bytes.size();
    }
    if (ternary) {
      const size_t w = weight_index.at(src.weight());
      const model::TensorInfo& info = *weights[w].tensor->info;
      op.kernel = &KernelFor(info.shape(0), info.shape(1));
      ++m->ternary_matrices_;
      if (IsTq1Kernel(*op.kernel)) ++m->tq1_matrices_;
      op.scales = placed_scales[w];
      op.per_row = weights[w].tensor->info->scale_size() > 1;
    }
  }

  m->golden_batch_ = 0;
  if (h.has_golden()) {
    for (int i = 0; i < num_io; ++i) {
      const std::string& name =
          i < g.inputs_size() ? h.golden().input_tensors(i)
                              : h.golden().output_tensors(i - g.inputs_size());
      const TensorView* t = file.FindTensor(name);
      uint8_t* dst = cur.Take(t->bytes.size());
      std::memcpy(dst, t->bytes.data(), t->bytes.size());
      golden[i] = dst;
      m->golden_batch_ = static_cast<int>(t->info->shape(0));
    }
    m->golden_tolerance_ = h.golden().tolerance();
  }

  m->ops_ = ops;
  m->values_ = values;
  m->inputs_ = io;
  m->outputs_ = io + g.inputs_size();
  m->input_values_ = io_values;
  m->output_values_ = io_values + g.inputs_size();
  m->golden_ = golden;
  m->weight_bytes_ = weight_bytes;
  m->scratch_stride_ = scratch_stride;
  m->quant_offset_ = quant_offset;
  m->sums_offset_ = sums_offset;
  m->dequant_offset_ = dequant_offset;
  m->acc_offset_ = acc_offset;
  m->codes_offset_ = codes_offset;
  m->ffts_ = ffts;
  m->quant_stride_ = max_stride;
  m->acc_stride_ = max_n;
  m->scratch_ = cur.Take(scratch_total);
  m->used_bytes_ = cur.used();
  TERND_CHECK(m->used_bytes_ <= need + kAlign);
  slots_[slot] = m;
  return static_cast<const LoadedModel*>(m);
}

}  // namespace ternd::runtime
