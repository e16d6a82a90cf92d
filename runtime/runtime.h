// The statically allocated inference runtime.
//
// Runtime::Create reserves one arena for the life of the process. The arena
// is divided into `slots` equal slots (2 for hot swap: A serves while B is
// loaded; 1 for cold swap of models too large to hold twice). Load() places
// a whole model into a slot:
//
//   slot:  | LoadedModel | ops | values | io tables | weights (repacked for
//          |  the kernel) | golden pair | scratch worker 0 | ... worker W-1 |
//
// and each worker's scratch holds the activation buffers, planned by liveness
// (planner.h), plus the int8/int32 staging for ternary products. After Load,
// Executor::Invoke never touches the heap (tests/unit/no_alloc_test.cc counts).
//
// Thread-safety: Create/Load/Unload are called from one thread while no
// worker uses the slot being changed. Executors of different workers may
// Invoke concurrently; one worker's executor is used by one thread at a time.
#ifndef TERND_RUNTIME_RUNTIME_H_
#define TERND_RUNTIME_RUNTIME_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "runtime/format.h"
#include "runtime/kernels/ternary_kernel.h"

namespace ternd::runtime {

struct RuntimeOptions {
  size_t arena_bytes = size_t{64} << 20;
  int slots = 2;    // 1 (cold swap) or 2 (hot swap)
  int workers = 1;  // executors per loaded model, 1..256
  std::string kernel = "auto";
  // Weight layout of each ternary matrix (docs/runtime.md): "auto" packs a
  // matrix in the 1.6-bit layout (5 weights per byte) when its 2-bit bytes
  // exceed tq1_threshold_bytes and the kernel has a SIMD 1.6-bit
  // counterpart, else in the kernel's 2-bit layout; "2bit" and "1.6bit"
  // force one for every matrix ("1.6bit" fails for a kernel without a
  // 1.6-bit counterpart). Under "auto", the environment variable
  // TERND_WEIGHT_LAYOUT (kWeightLayoutEnvVar) can force either. Naming a
  // 1.6-bit kernel ("avx512vnni-1.6") also forces "1.6bit".
  std::string weight_layout = "auto";
  // 0: the last-level cache size (LastLevelCacheBytes(), runtime/machine.h).
  size_t tq1_threshold_bytes = 0;
};

inline constexpr char kWeightLayoutEnvVar[] = "TERND_WEIGHT_LAYOUT";

struct IoInfo {
  char name[kMaxNameLength + 1];
  model::DType dtype;  // F32, or I32 for argmax outputs
  uint32_t features;
  // An input that an AUDIO_FEATURES op reads directly: the sample rate (Hz)
  // of the PCM it takes; 0 for other inputs and for outputs.
  uint32_t sample_rate = 0;
};

class LoadedModel;
class LmModel;
class AudioFft;
struct LmOptions;
class ThreadTeam;

// Per-op timing for one executor (`ternctl bench --profile`). Pass one to
// Invoke and it adds the steady-clock time of op i, in nanoseconds, to
// op_nanos[i]: one clock read per op, so op i's time runs from the end of
// op i - 1 to its own end and the op times add up to the whole op loop. The
// caller owns the array (LoadedModel::num_ops() entries, zeroed to start)
// and divides by the invocations it made. Without a profile (nullptr, the
// default) Invoke runs the plain op loop: the only cost of the hook is one
// null check per call (bench/runtime_invoke_bench.cc).
struct OpProfile {
  uint64_t* op_nanos = nullptr;
};

// What an op of a loaded model does, for reports and profiles: its type,
// the features it reads (k) and writes (n), and the bytes of constant data
// it reads per call (ternary: the kernel-packed weights and their scales;
// LINEAR: the float weights; norms: gain; plus the bias).
struct OpInfo {
  model::OpType type;
  uint32_t in_features;   // k
  uint32_t out_features;  // n
  size_t weight_bytes;
  // TERNARY_LINEAR: the variant that runs the product and whose layout
  // holds its weights (`kernel->layout`; a "-1.6" name for the 1.6-bit
  // layout); nullptr for other ops.
  const TernaryKernel* kernel = nullptr;
  // Multiply-adds per sample: n * k for TERNARY_LINEAR and LINEAR;
  // positions * C_out * patch for CONV2D/CONV1D (their `kernel` is the
  // variant too); positions * C * KH * KW for DEPTHWISE_CONV2D; 0 otherwise.
  uint64_t macs = 0;

  // Multiply-adds count 2: 2 * macs * batch; 0 for the element-wise, row
  // and pooling ops (their cost is the bytes).
  double Flops(int batch) const;
  // Bytes read and written per call: weights, the input rows (two for ADD)
  // and the output rows, float32 each.
  double BytesMoved(int batch) const;
};

// One worker's handle on a loaded model. Cheap to copy.
class Executor {
 public:
  // Buffer of input i: max_batch rows of input_info(i).features floats.
  // Write the first `batch` rows, then Invoke(batch).
  float* input(int i) const;
  // Output i after Invoke: `batch` rows of output_info(i).features values.
  const float* output_f32(int i) const;
  const int32_t* output_i32(int i) const;
  // Runs the graph. Never allocates. Fails (naming what) when batch is out
  // of 1..max_batch or an input value is not finite. With `profile`, also
  // adds each op's time to it (see OpProfile).
  Status Invoke(int batch, OpProfile* profile = nullptr) const;

 private:
  friend class LoadedModel;
  template <bool kTimed>
  void RunOps(int batch, OpProfile* profile) const;
  void RunTernaryConv(int op_index, const float* x, int batch, float* y) const;
  Executor(const LoadedModel* model, uint8_t* scratch)
      : model_(model), scratch_(scratch) {}
  const LoadedModel* model_;
  uint8_t* scratch_;
};

// A model placed in an arena slot. Owned by the Runtime; valid until that
// slot is loaded again or unloaded.
class LoadedModel {
 public:
  const char* name() const { return name_; }
  uint64_t version() const { return version_; }
  int max_batch() const { return max_batch_; }
  int num_inputs() const { return num_inputs_; }
  int num_outputs() const { return num_outputs_; }
  const IoInfo& input_info(int i) const;
  const IoInfo& output_info(int i) const;
  // Index of the input/output with this name, or -1.
  int FindInput(std::string_view name) const;
  int FindOutput(std::string_view name) const;
  // The 2-bit variant; matrices in the 1.6-bit layout run its 1.6-bit
  // counterpart (op_info(i).kernel names each op's).
  const char* kernel_name() const { return kernel_->name; }
  const TernaryKernel& kernel() const { return *kernel_; }
  // Ternary matrices in the 1.6-bit layout, of all ternary matrices.
  int tq1_matrices() const { return tq1_matrices_; }
  int ternary_matrices() const { return ternary_matrices_; }
  int num_ops() const { return num_ops_; }
  // Op i in execution order (the order of the file's graph).
  OpInfo op_info(int i) const;

  size_t weight_bytes() const { return weight_bytes_; }
  size_t scratch_bytes_per_worker() const { return scratch_stride_; }
  // The part of a worker's scratch that holds activation buffers (planned
  // by liveness); the rest is the int8/int32 staging of ternary products
  // (with convolutions: the im2col rows and one sample's int8 codes).
  size_t activation_bytes_per_worker() const { return codes_offset_; }
  // Everything this model uses of its slot.
  size_t slot_bytes_used() const { return used_bytes_; }

  Executor executor(int worker) const;

  bool has_golden() const { return golden_batch_ > 0; }
  // Runs the golden input on `worker` and compares every output with the
  // golden output (within the file's tolerance; int32 exactly).
  Status CheckGolden(int worker) const;

 private:
  friend class Runtime;
  friend class Executor;
  struct Op;
  struct Value;

  char name_[kMaxNameLength + 1];
  uint64_t version_;
  int max_batch_;
  int num_inputs_, num_outputs_, num_ops_, num_values_;
  const Op* ops_;
  const Value* values_;
  const IoInfo* inputs_;
  const IoInfo* outputs_;
  const int* input_values_;
  const int* output_values_;
  const TernaryKernel* kernel_;
  int tq1_matrices_ = 0, ternary_matrices_ = 0;
  size_t weight_bytes_, used_bytes_;
  // Scratch: worker w's region starts at scratch_ + w * scratch_stride_.
  uint8_t* scratch_;
  int workers_;
  size_t scratch_stride_;
  size_t quant_offset_, sums_offset_, dequant_offset_, acc_offset_;
  // Convolutions: one sample's int8 codes, im2col's source; the audio
  // front end's frame, spectrum and power.
  size_t codes_offset_;
  AudioFft* const* ffts_;  // one per worker (audio models)
  size_t quant_stride_, acc_stride_;
  // Golden pair: golden_batch_ rows per input/output, inputs then outputs.
  int golden_batch_;
  float golden_tolerance_;
  const void* const* golden_;
};

class Runtime {
 public:
  static Result<std::unique_ptr<Runtime>> Create(const RuntimeOptions& options);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const RuntimeOptions& options() const { return options_; }
  const TernaryKernel& kernel() const { return *kernel_; }
  // The 1.6-bit variant for matrices over the threshold, or nullptr when
  // every matrix stays 2-bit.
  const TernaryKernel* tq1_kernel() const { return tq1_kernel_; }
  size_t tq1_threshold_bytes() const { return tq1_threshold_; }
  int slot_count() const { return options_.slots; }
  size_t slot_bytes() const { return slot_bytes_; }

  // Places `file` into `slot`, replacing what was there. Checks every
  // ternary code and that the model fits (the error names the sizes).
  // The ModelFile may be discarded afterwards.
  Result<const LoadedModel*> Load(int slot, const ModelFile& file);
  // Places a language model (architecture "bitnet-lm") into `slot`
  // (runtime/lm/lm_model.h): weights, KV cache and scratch, all sized here.
  Result<const LmModel*> LoadLm(int slot, const ModelFile& file,
                                const LmOptions& options);
  void Unload(int slot);
  // nullptr when the slot is empty or holds the other kind of model.
  const LoadedModel* model(int slot) const;
  const LmModel* lm(int slot) const;

 private:
  Runtime() = default;
  RuntimeOptions options_;
  const TernaryKernel* kernel_ = nullptr;
  const TernaryKernel* tq1_kernel_ = nullptr;
  size_t tq1_threshold_ = 0;
  bool all_tq1_ = false;  // "1.6bit" forced
  Status ChooseWeightLayouts();
  // The variant (and layout) for an [n, k] ternary matrix.
  const TernaryKernel& KernelFor(size_t n, size_t k) const;
  uint8_t* arena_ = nullptr;
  size_t arena_bytes_ = 0;
  void* mapping_ = nullptr;  // the mmap holding the arena (2 MiB aligned)
  size_t mapping_bytes_ = 0;
  size_t slot_bytes_ = 0;
  const LoadedModel* slots_[2] = {nullptr, nullptr};
  const LmModel* lm_slots_[2] = {nullptr, nullptr};
  // The threads language models run on, created by the first LoadLm.
  std::unique_ptr<ThreadTeam> team_;
  // Per slot: the audio front end's FFTs, one per worker (made at Load).
  std::vector<std::unique_ptr<AudioFft>> ffts_[2];
};

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_RUNTIME_H_
