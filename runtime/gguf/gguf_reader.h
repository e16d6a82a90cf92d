// Reading GGUF files (versions 2 and 3, little-endian): the container that
// BitNet b1.58 language models are distributed in.
//
// Layout of a GGUF file:
//   "GGUF", u32 version, u64 tensor count, u64 metadata count
//   metadata: count x (string key, u32 value type, value)
//   tensor infos: count x (string name, u32 n_dims, u64 dims[n_dims],
//                          u32 ggml type, u64 offset from the data start)
//   zero or more padding bytes up to a multiple of the alignment
//   data: the tensors, each at an aligned offset from the data start
// Strings are a u64 byte length and the bytes (no NUL). An array value is a
// u32 element type, a u64 count and the elements; arrays may nest.
//
// GgufFile::Parse trusts nothing: every count and length is checked against
// the bytes that remain before anything is allocated for it, dims must be
// 1..4 positive values whose product does not overflow, each tensor's type
// must be known and its byte size (per type: block sizes) must fit inside
// the file at an aligned offset without overlapping another tensor, and keys
// and tensor names must be unique. Errors name the file, the key or tensor,
// the offset, what was expected and what was found. A GgufFile that exists
// is structurally valid; what the tensors mean is checked by gguf_arch.h and
// their contents by gguf_decode.h.
//
// Thread-safety: a GgufFile is immutable after Parse/Open and may be read
// from any number of threads.
#ifndef TERND_RUNTIME_GGUF_GGUF_READER_H_
#define TERND_RUNTIME_GGUF_GGUF_READER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace ternd::gguf {

inline constexpr uint32_t kDefaultAlignment = 32;
// Limits a reader enforces on top of "fits in the file": generous for
// language models (a 10B model has ~500 tensors and a few dozen keys).
inline constexpr uint64_t kMaxTensors = 1u << 16;
inline constexpr uint64_t kMaxKeys = 1u << 16;
inline constexpr size_t kMaxKeyLength = 65535;
inline constexpr size_t kMaxTensorNameLength = 63;
inline constexpr int kMaxDims = 4;
inline constexpr int kMaxArrayDepth = 4;
inline constexpr uint32_t kMaxAlignment = 1u << 16;

// Metadata value types as numbered in the file.
enum class ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
// "u32", "string", "array"...; "type N" is not returned: callers check
// ValueTypeKnown first.
const char* ValueTypeName(ValueType type);
bool ValueTypeKnown(uint32_t type);

// Tensor types (ggml numbering; 36 is I2_S of bitnet.cpp).
enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kI2_S = 36,
};

// How a tensor type is stored: `block_bytes` bytes per `block_elems`
// consecutive elements. I2_S is special: 2 bits per element (4 per byte, in
// blocks of 128) followed by one float32 scale padded to 32 bytes.
struct TypeLayout {
  const char* name;      // "F16", "TQ2_0", ...
  uint32_t block_elems;  // elements per block
  uint32_t block_bytes;  // bytes per block
};
// The layout of a known type, or nullptr for a type this reader does not
// know (the error then names the number).
const TypeLayout* FindTypeLayout(uint32_t type);
// "TQ2_0", or "unknown" for a type FindTypeLayout does not know.
const char* TensorTypeName(uint32_t type);

inline constexpr uint32_t kI2SBlock = 128;
inline constexpr uint32_t kI2STrailer = 32;

// Bytes a tensor of `type` with `elems` elements (row length `ne0`)
// occupies, or an error saying why there is no such tensor (unknown type,
// a row not a whole number of blocks, overflow).
Result<uint64_t> TensorByteSize(uint32_t type, uint64_t ne0, uint64_t elems);

// One metadata value. Scalars are decoded; strings and arrays point into
// the file's bytes (valid as long as the GgufFile).
struct Value {
  ValueType type = ValueType::kU8;
  uint64_t u = 0;        // unsigned integers and bool
  int64_t i = 0;         // signed integers
  double f = 0;          // f32 and f64
  std::string_view str;  // kString
  // kArray: the element type, the count, and the bytes of the elements.
  ValueType elem_type = ValueType::kU8;
  uint64_t count = 0;
  std::span<const uint8_t> elems;
  uint64_t offset = 0;  // file offset of the value (after its type)
};

struct KeyValue {
  std::string_view key;
  Value value;
  uint64_t offset = 0;  // file offset of the key
};

struct TensorInfo {
  std::string_view name;
  int n_dims = 0;
  // dims[0] is the row length (innermost); unused dims are 1.
  std::array<uint64_t, kMaxDims> dims = {1, 1, 1, 1};
  uint32_t type = 0;
  uint64_t elems = 0;
  uint64_t offset = 0;       // absolute file offset of the data
  uint64_t size = 0;         // bytes of data
  uint64_t info_offset = 0;  // file offset of the tensor info
  int index = 0;
  std::span<const uint8_t> data;
};

// "[2560, 128256]"
std::string DimsString(const TensorInfo& t);

class Cursor;  // gguf_reader.cc

class GgufFile {
 public:
  // Maps `path` read-only (falls back to reading it) and parses it.
  static Result<GgufFile> Open(const std::string& path);
  // Parses `bytes`; `origin` names the file in errors.
  static Result<GgufFile> Parse(std::vector<uint8_t> bytes,
                                std::string_view origin);

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  size_t file_size() const { return bytes_.size(); }
  const std::string& origin() const { return origin_; }
  const std::vector<KeyValue>& metadata() const { return kvs_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  const KeyValue* FindKey(std::string_view key) const;
  const TensorInfo* FindTensor(std::string_view name) const;

  // Typed accessors. NotFound when the key is absent; InvalidArgument
  // naming the key, its type and the expected type when it has another
  // type. Integer accessors accept any integer type whose value fits.
  Result<uint64_t> GetUint(std::string_view key) const;
  Result<uint32_t> GetU32(std::string_view key) const;
  // f32 or f64 (an f64 that does not fit a float is refused).
  Result<float> GetF32(std::string_view key) const;
  Result<bool> GetBool(std::string_view key) const;
  Result<std::string_view> GetString(std::string_view key) const;
  // An array of strings (e.g. tokenizer.ggml.tokens).
  Result<std::vector<std::string_view>> GetStringArray(
      std::string_view key) const;
  // An array of any numeric type, converted to double / int64.
  Result<std::vector<double>> GetFloatArray(std::string_view key) const;
  Result<std::vector<int64_t>> GetIntArray(std::string_view key) const;
  // The element count of an array value.
  Result<uint64_t> GetArrayLength(std::string_view key) const;

 private:
  GgufFile() = default;
  Status Validate();
  Status ParseValue(Cursor& c, ValueType type, int depth, Value* v);
  Result<const Value*> Typed(std::string_view key) const;

  std::string origin_;
  std::shared_ptr<const void> owner_;  // keeps bytes_ alive (vector or map)
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<KeyValue> kvs_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace ternd::gguf

#endif  // TERND_RUNTIME_GGUF_GGUF_READER_H_
