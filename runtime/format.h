// Reading and writing ternd model files (.tern).
//
// Layout (docs/model-format.md is the full specification):
//   [0,16)      preamble: "TERN", u32 format version, u32 header length,
//               u32 flags (0)                      -- all little-endian
//   [16,16+H)   ModelHeader (protobuf, runtime/model.proto)
//   zero padding up to the next multiple of 64: the data section starts here
//   data        tensors, each at a 64-byte aligned offset from the data start
//
// ModelFile::Parse trusts nothing in the file: every length, offset, dtype,
// shape product, alignment, name and graph reference is checked before use,
// and anything wrong is an error naming the tensor/op and what was found.
// A ModelFile that exists is structurally valid; the ternary codes inside
// tensor data are checked when the runtime loads them (runtime.h).
//
// Thread-safety: a ModelFile is immutable after Parse and may be read from
// any number of threads.
#ifndef TERND_RUNTIME_FORMAT_H_
#define TERND_RUNTIME_FORMAT_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "runtime/model.pb.h"

namespace ternd::runtime {

inline constexpr char kMagic[4] = {'T', 'E', 'R', 'N'};
// The newest format version this reader reads and the writer writes when a
// file needs it (version 2: language models, architecture "bitnet-lm", F16
// and I8 tensors; version 3: the convolutional ops, CONV2D and up). A file
// is written with the lowest version that holds it, so older daemons keep
// loading what they can run and refuse the rest by its version.
inline constexpr uint32_t kFormatVersion = 3;
inline constexpr uint32_t kMinFormatVersion = 1;
inline constexpr char kArchGraph[] = "graph";
inline constexpr char kArchBitnetLm[] = "bitnet-lm";
inline constexpr size_t kPreambleSize = 16;
inline constexpr size_t kTensorAlignment = 64;
// Limits a reader enforces; generous for edge models, small enough that a
// malicious header cannot make the reader allocate without bound.
inline constexpr size_t kMaxHeaderBytes = 64u << 20;
inline constexpr int kMaxTensors = 4096;
inline constexpr int kMaxOps = 4096;
inline constexpr int kMaxDims = 4;
inline constexpr uint64_t kMaxDim = uint64_t{1} << 31;
inline constexpr size_t kMaxNameLength = 63;
inline constexpr uint32_t kMaxBatch = 256;
// Largest row width of a graph value. Also bounds K of a ternary product:
// |sum| <= 128 * 2^22 = 2^29 leaves int32 accumulators 4x headroom.
inline constexpr uint64_t kMaxFeatures = uint64_t{1} << 22;
// Language models (format version 2).
inline constexpr uint32_t kMaxLmLayers = 1024;
inline constexpr uint32_t kMaxLmContext = 1u << 20;
// Convolution and pooling attributes (kernel, stride, padding, dilation).
inline constexpr uint32_t kMaxWindowAttribute = 65535;

// Bytes of a tensor of `dtype` and `shape`, or an error (overflow, bad dtype,
// TERNARY2 not 2-D). TERNARY2 rows are padded to whole bytes:
// shape[0] * ceil(shape[1] / 4).
Result<uint64_t> TensorByteLength(model::DType dtype,
                                  std::span<const uint64_t> shape);

// Name of a dtype / op type as written in docs ("F32", "TERNARY_LINEAR").
const char* DTypeName(model::DType dtype);
const char* OpTypeName(model::OpType type);

struct TensorView {
  const model::TensorInfo* info;
  std::span<const uint8_t> bytes;  // exactly info->length bytes
};

// Per graph value (inputs, op outputs): its row width and dtype, as derived
// and checked by Parse.
struct ValueShape {
  std::string name;
  model::DType dtype;
  uint32_t features;
  // The per-sample shape, channels last: [H, W, C] or [L, C] for spatial
  // values, [features] after flat ops (linear, argmax, global pooling).
  std::vector<uint32_t> dims;
};

// Where a convolution or pooling op's windows lie, derived and checked by
// ModelFile::Parse. A 1-D op is a 2-D one with in_h = out_h = kh = sh = dh
// = 1 and ph = 0. Output size per dimension:
//   out = floor((in + 2 * pad - dilation * (kernel - 1) - 1) / stride) + 1
struct WindowGeometry {
  uint32_t in_h = 1, in_w = 1, in_c = 1;
  uint32_t out_h = 1, out_w = 1, out_c = 1;
  uint32_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  // Features of one im2col row: kh * kw * in_c (ternary convolutions).
  uint32_t patch() const { return kh * kw * in_c; }
};

// The lowest format version that can hold a graph with ops of `type`.
uint32_t OpFormatVersion(model::OpType type);

class ModelWriter;

class ModelFile {
 public:
  // Parses and validates `bytes`, taking ownership. `origin` (a path, "stdin",
  // a URL) prefixes every error message.
  static Result<ModelFile> Parse(std::vector<uint8_t> bytes,
                                 std::string_view origin);
  static Result<ModelFile> Open(const std::string& path);

  const model::ModelHeader& header() const { return *header_; }
  const std::string& origin() const { return origin_; }
  std::span<const TensorView> tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorView* FindTensor(std::string_view name) const;
  // Every value of the graph in definition order: inputs, then op outputs.
  std::span<const ValueShape> values() const { return values_; }
  const ValueShape* FindValue(std::string_view name) const;
  // Op i's window geometry (convolution and pooling ops; default for others).
  const WindowGeometry& geometry(int op) const { return geometry_[op]; }
  size_t file_size() const { return bytes_.size(); }
  // Offset of the data section in the file; tensor i starts at
  // data_offset() + tensors()[i].info->offset().
  size_t data_offset() const { return data_offset_; }
  // The format version in the preamble.
  uint32_t format_version() const { return format_version_; }
  bool is_language_model() const {
    return header_->architecture() == kArchBitnetLm;
  }

 private:
  friend class ModelWriter;
  ModelFile() = default;
  Status Validate();
  Status ValidateTensors(size_t data_offset);
  Status ValidateGraph();
  Status ValidateGolden();
  Status ValidateLanguageModel();

  std::string origin_;
  std::vector<uint8_t> bytes_;
  std::unique_ptr<model::ModelHeader> header_;
  std::vector<TensorView> tensors_;
  std::vector<ValueShape> values_;
  std::vector<WindowGeometry> geometry_;  // one per graph op
  size_t data_offset_ = 0;
  uint32_t format_version_ = 0;
};

// Builds a .tern file. Tensors are laid out in the order they are added.
class ModelWriter {
 public:
  // `header` gives everything except the tensor table and data_length, which
  // the writer fills in.
  explicit ModelWriter(model::ModelHeader header);

  void AddF32(const std::string& name, std::vector<uint64_t> shape,
              std::span<const float> values);
  void AddI32(const std::string& name, std::vector<uint64_t> shape,
              std::span<const int32_t> values);
  // `weights` is N*K values in {-1, 0, +1}, row-major [N, K]; `scales` has 1
  // or N entries.
  void AddTernary(const std::string& name, uint64_t n, uint64_t k,
                  std::span<const int8_t> weights,
                  std::span<const float> scales);
  // Already in the canonical 2-bit packing (n * TernaryRowBytes(k) bytes).
  void AddTernaryPacked(const std::string& name, uint64_t n, uint64_t k,
                        std::span<const uint8_t> packed,
                        std::span<const float> scales);
  // IEEE binary16 bit patterns.
  void AddF16(const std::string& name, std::vector<uint64_t> shape,
              std::span<const uint16_t> bits);
  // int8 rows [n, k] with one scale per row.
  void AddI8(const std::string& name, uint64_t n, uint64_t k,
             std::span<const int8_t> values, std::span<const float> scales);

  // Serializes, then re-parses the result so a writer can never emit a file
  // the reader refuses.
  Result<std::vector<uint8_t>> Finish();

  // `file` with its header replaced by `header` (same tensor table and data
  // section), re-parsed like Finish.
  static Result<std::vector<uint8_t>> ReplaceHeader(
      const ModelFile& file, const model::ModelHeader& header);

 private:
  void AddRaw(const std::string& name, model::DType dtype,
              std::vector<uint64_t> shape, std::span<const uint8_t> bytes,
              std::span<const float> scales);

  model::ModelHeader header_;
  std::vector<uint8_t> data_;
};

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_FORMAT_H_
