#include "runtime/gguf/gguf_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "base/fd.h"
#include "base/file.h"

namespace ternd::gguf {
namespace {

using ull = unsigned long long;

constexpr TypeLayout kLayouts[] = {
    {"F32", 1, 4},
    {"F16", 1, 2},
    {"Q4_0", 32, 18},
    {"Q4_1", 32, 20},
    {nullptr, 0, 0},
    {nullptr, 0, 0},
    {"Q5_0", 32, 22},
    {"Q5_1", 32, 24},
    {"Q8_0", 32, 34},
    {"Q8_1", 32, 36},
    {"Q2_K", 256, 84},
    {"Q3_K", 256, 110},
    {"Q4_K", 256, 144},
    {"Q5_K", 256, 176},
    {"Q6_K", 256, 210},
    {"Q8_K", 256, 292},
    {nullptr, 0, 0},
    {nullptr, 0, 0},
    {nullptr, 0, 0},
    {nullptr, 0, 0},
    {nullptr, 0, 0},
    {nullptr, 0, 0},
    {nullptr, 0, 0},
    {nullptr, 0, 0},
    {"I8", 1, 1},
    {"I16", 1, 2},
    {"I32", 1, 4},
    {"I64", 1, 8},
    {"F64", 1, 8},
    {nullptr, 0, 0},
    {"BF16", 1, 2},
    {nullptr, 0, 0},
    {nullptr, 0, 0},
    {nullptr, 0, 0},
    {"TQ1_0", 256, 54},
    {"TQ2_0", 256, 66},
    // I2_S: the per-element part; TensorByteSize adds the scale trailer.
    {"I2_S", 4, 1},
};

uint16_t LoadU16(const uint8_t* p) { return p[0] | (p[1] << 8); }
uint32_t LoadU32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) |
         (uint32_t{p[3]} << 24);
}
uint64_t LoadU64(const uint8_t* p) {
  return uint64_t{LoadU32(p)} | (uint64_t{LoadU32(p + 4)} << 32);
}

// Bytes of one scalar element, 0 for string and array.
size_t ScalarSize(ValueType t) {
  switch (t) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kBool:
      return 1;
    case ValueType::kU16:
    case ValueType::kI16:
      return 2;
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kF32:
      return 4;
    case ValueType::kU64:
    case ValueType::kI64:
    case ValueType::kF64:
      return 8;
    default:
      return 0;
  }
}

// Smallest encoding of one element of type `t` (for count checks).
size_t MinElemSize(ValueType t) {
  if (t == ValueType::kString) return 8;
  if (t == ValueType::kArray) return 12;
  return ScalarSize(t);
}

std::string Printable(std::string_view s) {
  std::string out;
  for (char ch : s.substr(0, 80)) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f) {
      out += ch;
    } else {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", c);
      out += hex;
    }
  }
  if (s.size() > 80) out += "...";
  return out;
}

// Decodes a scalar element at `p` into `v` (type already set).
void DecodeScalar(const uint8_t* p, Value* v) {
  switch (v->type) {
    case ValueType::kU8:
      v->u = p[0];
      break;
    case ValueType::kBool:
      v->u = p[0];
      break;
    case ValueType::kI8:
      v->i = static_cast<int8_t>(p[0]);
      break;
    case ValueType::kU16:
      v->u = LoadU16(p);
      break;
    case ValueType::kI16:
      v->i = static_cast<int16_t>(LoadU16(p));
      break;
    case ValueType::kU32:
      v->u = LoadU32(p);
      break;
    case ValueType::kI32:
      v->i = static_cast<int32_t>(LoadU32(p));
      break;
    case ValueType::kU64:
      v->u = LoadU64(p);
      break;
    case ValueType::kI64:
      v->i = static_cast<int64_t>(LoadU64(p));
      break;
    case ValueType::kF32: {
      uint32_t bits = LoadU32(p);
      float f;
      std::memcpy(&f, &bits, 4);
      v->f = f;
      break;
    }
    case ValueType::kF64: {
      uint64_t bits = LoadU64(p);
      std::memcpy(&v->f, &bits, 8);
      break;
    }
    default:
      break;
  }
}

bool IsUnsigned(ValueType t) {
  return t == ValueType::kU8 || t == ValueType::kU16 || t == ValueType::kU32 ||
         t == ValueType::kU64;
}
bool IsSigned(ValueType t) {
  return t == ValueType::kI8 || t == ValueType::kI16 || t == ValueType::kI32 ||
         t == ValueType::kI64;
}
bool IsFloat(ValueType t) {
  return t == ValueType::kF32 || t == ValueType::kF64;
}

}  // namespace

// Reads little-endian fields, checking each against the end of the file.
class Cursor {
 public:
  Cursor(std::span<const uint8_t> bytes, size_t pos)
      : bytes_(bytes), pos_(pos) {}
  size_t pos() const { return pos_; }
  size_t remaining() const { return bytes_.size() - pos_; }

  Status Need(uint64_t n, const char* what) const {
    if (n > remaining()) {
      return DataLoss(
          "%s at offset %zu needs %llu bytes, but the file ends at %zu "
          "(truncated?)",
          what, pos_, static_cast<ull>(n), bytes_.size());
    }
    return Status::Ok();
  }
  Status U32(uint32_t* out, const char* what) {
    TERND_RETURN_IF_ERROR(Need(4, what));
    *out = LoadU32(bytes_.data() + pos_);
    pos_ += 4;
    return Status::Ok();
  }
  Status U64(uint64_t* out, const char* what) {
    TERND_RETURN_IF_ERROR(Need(8, what));
    *out = LoadU64(bytes_.data() + pos_);
    pos_ += 8;
    return Status::Ok();
  }
  Status String(std::string_view* out, size_t max_len, const char* what) {
    const size_t at = pos_;
    uint64_t len = 0;
    TERND_RETURN_IF_ERROR(U64(&len, what));
    if (len > max_len) {
      pos_ = at;
      return InvalidArgument("%s at offset %zu has length %llu, more than %zu",
                             what, at, static_cast<ull>(len), max_len);
    }
    if (len > remaining()) {
      pos_ = at;
      return DataLoss(
          "%s at offset %zu has length %llu, but only %zu bytes follow "
          "(truncated?)",
          what, at, static_cast<ull>(len), remaining() - 8);
    }
    *out = std::string_view(reinterpret_cast<const char*>(bytes_.data() + pos_),
                            len);
    pos_ += len;
    return Status::Ok();
  }
  std::span<const uint8_t> Take(size_t n) {  // REQUIRES: Need(n) passed
    auto s = bytes_.subspan(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_;
};

const char* ValueTypeName(ValueType type) {
  static const char* const kNames[] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                       "i32", "f32", "bool", "string", "array",
                                       "u64", "i64", "f64"};
  uint32_t t = static_cast<uint32_t>(type);
  return t < 13 ? kNames[t] : "unknown";
}

bool ValueTypeKnown(uint32_t type) { return type <= 12; }

const TypeLayout* FindTypeLayout(uint32_t type) {
  if (type >= sizeof(kLayouts) / sizeof(kLayouts[0])) return nullptr;
  return kLayouts[type].name ? &kLayouts[type] : nullptr;
}

const char* TensorTypeName(uint32_t type) {
  const TypeLayout* l = FindTypeLayout(type);
  return l ? l->name : "unknown";
}

Result<uint64_t> TensorByteSize(uint32_t type, uint64_t ne0, uint64_t elems) {
  const TypeLayout* l = FindTypeLayout(type);
  if (l == nullptr) {
    return Unimplemented("has tensor type %u, which this reader does not know",
                         type);
  }
  if (type == static_cast<uint32_t>(TensorType::kI2_S)) {
    if (elems % kI2SBlock != 0) {
      return InvalidArgument(
          "is I2_S with %llu elements, expected a multiple of %u",
          static_cast<ull>(elems), kI2SBlock);
    }
    return elems / 4 + kI2STrailer;
  }
  if (ne0 % l->block_elems != 0) {
    return InvalidArgument(
        "is %s with rows of %llu elements, expected a multiple of its block "
        "size %u",
        l->name, static_cast<ull>(ne0), l->block_elems);
  }
  uint64_t bytes;
  if (__builtin_mul_overflow(elems / l->block_elems, uint64_t{l->block_bytes},
                             &bytes)) {
    return InvalidArgument("is %s with %llu elements: its size overflows",
                           l->name, static_cast<ull>(elems));
  }
  return bytes;
}

std::string DimsString(const TensorInfo& t) {
  std::string s = "[";
  for (int i = 0; i < t.n_dims; ++i) {
    s += (i ? ", " : "") + std::to_string(t.dims[i]);
  }
  return s + "]";
}

Result<GgufFile> GgufFile::Open(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError(errno, "cannot open %s", path.c_str());
  struct stat st;
  if (fstat(fd.get(), &st) != 0) {
    return ErrnoError(errno, "cannot stat %s", path.c_str());
  }
  if (!S_ISREG(st.st_mode) || st.st_size == 0) {
    // Pipes, devices and empty files: read them (Parse reports the size).
    TERND_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFile(path));
    return Parse(std::move(bytes), path);
  }
  const size_t len = static_cast<size_t>(st.st_size);
  void* addr = mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (addr == MAP_FAILED) {
    return ErrnoError(errno, "cannot map %s (%zu bytes)", path.c_str(), len);
  }
  GgufFile file;
  file.origin_ = path;
  file.owner_ = std::shared_ptr<const void>(
      addr, [len](const void* a) { munmap(const_cast<void*>(a), len); });
  file.bytes_ =
      std::span<const uint8_t>(static_cast<const uint8_t*>(addr), len);
  Status s = file.Validate();
  if (!s.ok()) return s.Prepend(file.origin_);
  return file;
}

Result<GgufFile> GgufFile::Parse(std::vector<uint8_t> bytes,
                                 std::string_view origin) {
  GgufFile file;
  file.origin_ = std::string(origin);
  auto owned = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  file.bytes_ = std::span<const uint8_t>(owned->data(), owned->size());
  file.owner_ = std::move(owned);
  Status s = file.Validate();
  if (!s.ok()) return s.Prepend(file.origin_);
  return file;
}

Status GgufFile::ParseValue(Cursor& c, ValueType type, int depth, Value* v) {
  v->type = type;
  v->offset = c.pos();
  if (type == ValueType::kString) {
    return c.String(&v->str, std::numeric_limits<size_t>::max(), "string");
  }
  if (type != ValueType::kArray) {
    const size_t n = ScalarSize(type);
    TERND_RETURN_IF_ERROR(c.Need(n, ValueTypeName(type)));
    DecodeScalar(c.Take(n).data(), v);
    if (type == ValueType::kBool && v->u > 1) {
      return InvalidArgument("bool at offset %llu is %llu, expected 0 or 1",
                             static_cast<ull>(v->offset),
                             static_cast<ull>(v->u));
    }
    return Status::Ok();
  }
  if (depth >= kMaxArrayDepth) {
    return InvalidArgument("array at offset %zu is nested more than %d deep",
                           c.pos(), kMaxArrayDepth);
  }
  uint32_t elem = 0;
  TERND_RETURN_IF_ERROR(c.U32(&elem, "array element type"));
  if (!ValueTypeKnown(elem)) {
    return InvalidArgument(
        "array at offset %llu has element type %u, expected 0..12",
        static_cast<ull>(v->offset), elem);
  }
  v->elem_type = static_cast<ValueType>(elem);
  const size_t count_at = c.pos();
  TERND_RETURN_IF_ERROR(c.U64(&v->count, "array length"));
  const size_t min = MinElemSize(v->elem_type);
  if (v->count > c.remaining() / min) {
    return DataLoss(
        "array at offset %zu has %llu %s elements, but only %zu bytes follow "
        "(at least %zu per element)",
        count_at, static_cast<ull>(v->count), ValueTypeName(v->elem_type),
        c.remaining(), min);
  }
  const size_t start = c.pos();
  if (ScalarSize(v->elem_type) != 0) {
    v->elems = c.Take(v->count * min);
    if (v->elem_type == ValueType::kBool) {
      for (uint64_t k = 0; k < v->count; ++k) {
        if (v->elems[k] > 1) {
          return InvalidArgument(
              "bool element %llu at offset %llu is %u, expected 0 or 1",
              static_cast<ull>(k), static_cast<ull>(start + k), v->elems[k]);
        }
      }
    }
    return Status::Ok();
  }
  for (uint64_t k = 0; k < v->count; ++k) {
    Value element;
    if (v->elem_type == ValueType::kArray) {
      TERND_RETURN_IF_ERROR(
          ParseValue(c, ValueType::kArray, depth + 1, &element));
    } else {
      TERND_RETURN_IF_ERROR(c.String(
          &element.str, std::numeric_limits<size_t>::max(), "string element"));
    }
  }
  v->elems = bytes_.subspan(start, c.pos() - start);
  return Status::Ok();
}

Status GgufFile::Validate() {
  const size_t size = bytes_.size();
  if (size < 24) {
    return DataLoss("file is %zu bytes, shorter than the 24-byte GGUF header",
                    size);
  }
  const uint8_t* p = bytes_.data();
  if (std::memcmp(p, "GGUF", 4) != 0) {
    return InvalidArgument(
        "not a GGUF file: bytes 0..3 are %02x %02x %02x %02x, expected "
        "\"GGUF\"",
        p[0], p[1], p[2], p[3]);
  }
  version_ = LoadU32(p + 4);
  if (version_ != 2 && version_ != 3) {
    const bool swapped = version_ == 0x02000000u || version_ == 0x03000000u;
    return Unimplemented(
        "GGUF version %u at offset 4 is not supported (this reader reads "
        "versions 2 and 3)%s",
        version_,
        swapped         ? "; the file looks big-endian, which is not supported"
        : version_ == 1 ? "; convert the file with a current tool"
                        : "");
  }
  Cursor c(bytes_, 8);
  uint64_t tensor_count = 0, kv_count = 0;
  TERND_RETURN_IF_ERROR(c.U64(&tensor_count, "tensor count"));
  TERND_RETURN_IF_ERROR(c.U64(&kv_count, "metadata count"));
  // Each key takes at least 8 (key length) + 4 (type) + 1 bytes, each
  // tensor info at least 8 + 4 + 8 + 4 + 8.
  if (kv_count > kMaxKeys || kv_count > c.remaining() / 13) {
    return InvalidArgument(
        "metadata count %llu at offset 16 is more than the %zu bytes that "
        "follow can hold (or the limit of %llu)",
        static_cast<ull>(kv_count), c.remaining(), static_cast<ull>(kMaxKeys));
  }
  if (tensor_count > kMaxTensors || tensor_count > c.remaining() / 32) {
    return InvalidArgument(
        "tensor count %llu at offset 8 is more than the %zu bytes that "
        "follow can hold (or the limit of %llu)",
        static_cast<ull>(tensor_count), c.remaining(),
        static_cast<ull>(kMaxTensors));
  }

  kvs_.reserve(kv_count);
  std::unordered_set<std::string_view> keys;
  for (uint64_t k = 0; k < kv_count; ++k) {
    KeyValue kv;
    kv.offset = c.pos();
    Status s = c.String(&kv.key, kMaxKeyLength, "key");
    if (s.ok() && kv.key.empty()) {
      s = InvalidArgument("key at offset %llu is empty",
                          static_cast<ull>(kv.offset));
    }
    if (s.ok() && !keys.insert(kv.key).second) {
      s = InvalidArgument("key '%s' at offset %llu appears twice",
                          Printable(kv.key).c_str(),
                          static_cast<ull>(kv.offset));
    }
    uint32_t type = 0;
    if (s.ok()) s = c.U32(&type, "value type");
    if (s.ok() && !ValueTypeKnown(type)) {
      s = InvalidArgument("value type at offset %zu is %u, expected 0..12",
                          c.pos() - 4, type);
    }
    if (s.ok()) s = ParseValue(c, static_cast<ValueType>(type), 0, &kv.value);
    if (!s.ok()) {
      char ctx[160];
      std::snprintf(ctx, sizeof(ctx), "metadata #%llu%s%s%s",
                    static_cast<ull>(k), kv.key.empty() ? "" : " '",
                    Printable(kv.key).c_str(), kv.key.empty() ? "" : "'");
      return s.Prepend(ctx);
    }
    kvs_.push_back(kv);
  }

  if (const KeyValue* a = FindKey("general.alignment")) {
    const Value& v = a->value;
    if (v.type != ValueType::kU32 || v.u == 0 || v.u > kMaxAlignment ||
        (v.u & (v.u - 1)) != 0) {
      return InvalidArgument(
          "general.alignment at offset %llu is %s %llu, expected a u32 power "
          "of two up to %u",
          static_cast<ull>(a->offset), ValueTypeName(v.type),
          static_cast<ull>(v.u), kMaxAlignment);
    }
    alignment_ = static_cast<uint32_t>(v.u);
  }

  tensors_.reserve(tensor_count);
  std::unordered_set<std::string_view> names;
  for (uint64_t k = 0; k < tensor_count; ++k) {
    TensorInfo t;
    t.index = static_cast<int>(k);
    t.info_offset = c.pos();
    Status s = c.String(&t.name, kMaxTensorNameLength, "tensor name");
    if (s.ok() && t.name.empty()) {
      s = InvalidArgument("tensor name at offset %llu is empty",
                          static_cast<ull>(t.info_offset));
    }
    if (s.ok() && !names.insert(t.name).second) {
      s = InvalidArgument("tensor name at offset %llu appears twice",
                          static_cast<ull>(t.info_offset));
    }
    uint32_t n_dims = 0;
    if (s.ok()) s = c.U32(&n_dims, "dimension count");
    if (s.ok() && (n_dims < 1 || n_dims > kMaxDims)) {
      s = InvalidArgument("dimension count at offset %zu is %u, expected 1..%d",
                          c.pos() - 4, n_dims, kMaxDims);
    }
    t.elems = 1;
    for (uint32_t d = 0; s.ok() && d < n_dims; ++d) {
      s = c.U64(&t.dims[d], "dimension");
      if (s.ok() && t.dims[d] == 0) {
        s = InvalidArgument("dimension %u at offset %zu is 0", d, c.pos() - 8);
      }
      if (s.ok() && (__builtin_mul_overflow(t.elems, t.dims[d], &t.elems) ||
                     t.elems > (uint64_t{1} << 48))) {
        s = InvalidArgument(
            "dimension %u at offset %zu makes more than 2^48 elements", d,
            c.pos() - 8);
      }
    }
    t.n_dims = static_cast<int>(n_dims);
    if (s.ok()) s = c.U32(&t.type, "tensor type");
    if (s.ok()) {
      Result<uint64_t> bytes = TensorByteSize(t.type, t.dims[0], t.elems);
      if (bytes.ok()) {
        t.size = *bytes;
      } else {
        s = bytes.status();
        char ctx[48];
        std::snprintf(ctx, sizeof(ctx), "type at offset %zu", c.pos() - 4);
        s.Prepend(ctx);
      }
    }
    if (s.ok()) s = c.U64(&t.offset, "tensor offset");
    if (!s.ok()) {
      char ctx[160];
      std::snprintf(ctx, sizeof(ctx), "tensor #%llu%s%s%s", static_cast<ull>(k),
                    t.name.empty() ? "" : " '", Printable(t.name).c_str(),
                    t.name.empty() ? "" : "'");
      return s.Prepend(ctx);
    }
    tensors_.push_back(t);
  }

  const uint64_t info_end = c.pos();
  data_offset_ = (info_end + alignment_ - 1) / alignment_ * alignment_;
  if (tensor_count > 0 && data_offset_ > size) {
    return DataLoss(
        "data section would start at offset %llu, past the end of the "
        "%zu-byte file (truncated?)",
        static_cast<ull>(data_offset_), size);
  }
  const uint64_t data_size = size - std::min<uint64_t>(data_offset_, size);
  for (TensorInfo& t : tensors_) {
    const uint64_t rel = t.offset;
    if (rel % alignment_ != 0) {
      return InvalidArgument(
          "tensor '%s' (#%d): data offset %llu is not a multiple of the "
          "alignment %u",
          Printable(t.name).c_str(), t.index, static_cast<ull>(rel),
          alignment_);
    }
    if (rel > data_size || t.size > data_size - rel) {
      return DataLoss(
          "tensor '%s' (#%d): %s %s needs %llu bytes at file offset %llu, "
          "but the file ends at %zu (truncated?)",
          Printable(t.name).c_str(), t.index, TensorTypeName(t.type),
          DimsString(t).c_str(), static_cast<ull>(t.size),
          static_cast<ull>(data_offset_ + rel), size);
    }
    t.offset = data_offset_ + rel;
    t.data = bytes_.subspan(t.offset, t.size);
  }
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) {
              return a->offset < b->offset;
            });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const TensorInfo& a = *by_offset[k - 1];
    const TensorInfo& b = *by_offset[k];
    if (a.offset + a.size > b.offset) {
      return InvalidArgument(
          "tensor '%s' (#%d) at bytes %llu..%llu overlaps tensor '%s' (#%d) "
          "at bytes %llu..%llu",
          Printable(a.name).c_str(), a.index, static_cast<ull>(a.offset),
          static_cast<ull>(a.offset + a.size), Printable(b.name).c_str(),
          b.index, static_cast<ull>(b.offset),
          static_cast<ull>(b.offset + b.size));
    }
  }
  return Status::Ok();
}

const KeyValue* GgufFile::FindKey(std::string_view key) const {
  for (const KeyValue& kv : kvs_) {
    if (kv.key == key) return &kv;
  }
  return nullptr;
}

const TensorInfo* GgufFile::FindTensor(std::string_view name) const {
  for (const TensorInfo& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

Result<const Value*> GgufFile::Typed(std::string_view key) const {
  const KeyValue* kv = FindKey(key);
  if (kv == nullptr) {
    return NotFound("%s: key '%s' is missing", origin_.c_str(),
                    Printable(key).c_str());
  }
  return &kv->value;
}

namespace {
Status WrongType(const std::string& origin, std::string_view key,
                 const Value& v, const char* expected) {
  return InvalidArgument(
      "%s: key '%s' at offset %llu is %s%s%s, expected %s", origin.c_str(),
      Printable(key).c_str(), static_cast<ull>(v.offset), ValueTypeName(v.type),
      v.type == ValueType::kArray ? " of " : "",
      v.type == ValueType::kArray ? ValueTypeName(v.elem_type) : "", expected);
}
}  // namespace

Result<uint64_t> GgufFile::GetUint(std::string_view key) const {
  TERND_ASSIGN_OR_RETURN(const Value* v, Typed(key));
  if (IsUnsigned(v->type)) return v->u;
  if (IsSigned(v->type) && v->i >= 0) return static_cast<uint64_t>(v->i);
  return WrongType(origin_, key, *v, "a non-negative integer");
}

Result<uint32_t> GgufFile::GetU32(std::string_view key) const {
  TERND_ASSIGN_OR_RETURN(uint64_t u, GetUint(key));
  if (u > UINT32_MAX) {
    return InvalidArgument("%s: key '%s' is %llu, more than a u32 holds",
                           origin_.c_str(), Printable(key).c_str(),
                           static_cast<ull>(u));
  }
  return static_cast<uint32_t>(u);
}

Result<float> GgufFile::GetF32(std::string_view key) const {
  TERND_ASSIGN_OR_RETURN(const Value* v, Typed(key));
  if (!IsFloat(v->type)) return WrongType(origin_, key, *v, "f32");
  if (!std::isfinite(v->f) ||
      std::fabs(v->f) > std::numeric_limits<float>::max()) {
    return InvalidArgument("%s: key '%s' is %g, expected a finite f32",
                           origin_.c_str(), Printable(key).c_str(), v->f);
  }
  return static_cast<float>(v->f);
}

Result<bool> GgufFile::GetBool(std::string_view key) const {
  TERND_ASSIGN_OR_RETURN(const Value* v, Typed(key));
  if (v->type != ValueType::kBool) return WrongType(origin_, key, *v, "bool");
  return v->u != 0;
}

Result<std::string_view> GgufFile::GetString(std::string_view key) const {
  TERND_ASSIGN_OR_RETURN(const Value* v, Typed(key));
  if (v->type != ValueType::kString) {
    return WrongType(origin_, key, *v, "string");
  }
  return v->str;
}

Result<uint64_t> GgufFile::GetArrayLength(std::string_view key) const {
  TERND_ASSIGN_OR_RETURN(const Value* v, Typed(key));
  if (v->type != ValueType::kArray) return WrongType(origin_, key, *v, "array");
  return v->count;
}

Result<std::vector<std::string_view>> GgufFile::GetStringArray(
    std::string_view key) const {
  TERND_ASSIGN_OR_RETURN(const Value* v, Typed(key));
  if (v->type != ValueType::kArray || v->elem_type != ValueType::kString) {
    return WrongType(origin_, key, *v, "array of string");
  }
  std::vector<std::string_view> out;
  out.reserve(v->count);
  Cursor c(v->elems, 0);
  for (uint64_t k = 0; k < v->count; ++k) {
    std::string_view s;
    // Validated by Parse; cannot fail.
    if (!c.String(&s, std::numeric_limits<size_t>::max(), "string").ok()) {
      break;
    }
    out.push_back(s);
  }
  return out;
}

namespace {
template <typename T>
Result<std::vector<T>> NumericArray(const std::string& origin,
                                    std::string_view key, const Value& v) {
  if (v.type != ValueType::kArray || ScalarSize(v.elem_type) == 0 ||
      v.elem_type == ValueType::kBool) {
    return WrongType(origin, key, v, "array of numbers");
  }
  const size_t n = ScalarSize(v.elem_type);
  std::vector<T> out;
  out.reserve(v.count);
  for (uint64_t k = 0; k < v.count; ++k) {
    Value e;
    e.type = v.elem_type;
    DecodeScalar(v.elems.data() + k * n, &e);
    if (IsFloat(e.type)) {
      out.push_back(static_cast<T>(e.f));
    } else if (IsSigned(e.type)) {
      out.push_back(static_cast<T>(e.i));
    } else {
      out.push_back(static_cast<T>(e.u));
    }
  }
  return out;
}
}  // namespace

Result<std::vector<double>> GgufFile::GetFloatArray(
    std::string_view key) const {
  TERND_ASSIGN_OR_RETURN(const Value* v, Typed(key));
  return NumericArray<double>(origin_, key, *v);
}

Result<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  TERND_ASSIGN_OR_RETURN(const Value* v, Typed(key));
  if (v->type == ValueType::kArray && IsFloat(v->elem_type)) {
    return WrongType(origin_, key, *v, "array of integers");
  }
  return NumericArray<int64_t>(origin_, key, *v);
}

}  // namespace ternd::gguf
