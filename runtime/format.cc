#include "runtime/format.h"

#include <google/protobuf/stubs/logging.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "base/check.h"
#include "base/file.h"
#include "base/log.h"
#include "runtime/ternary_pack.h"

namespace ternd::runtime {
namespace {

uint32_t ReadU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

void WriteU32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v >> 16);
  p[3] = static_cast<uint8_t>(v >> 24);
}

// libprotobuf logs to stderr when a hostile header has, say, invalid UTF-8 in
// a string. The reader already reports such a header as an error of its own,
// so protobuf's lines go to ternd's log at debug level instead.
void RouteProtobufLogs() {
  static std::once_flag once;
  std::call_once(once, [] {
    google::protobuf::SetLogHandler([](google::protobuf::LogLevel level,
                                       const char* file, int line,
                                       const std::string& message) {
      if (level >= google::protobuf::LOGLEVEL_FATAL) {
        TERND_LOG_ERROR("protobuf %s:%d: %s", file, line, message.c_str());
      } else {
        TERND_LOG_DEBUG("protobuf %s:%d: %s", file, line, message.c_str());
      }
    });
  });
}

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Names are printable and short so they can be quoted in errors and logs.
bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-' ||
              c == ':' || c == '/';
    if (!ok) return false;
  }
  return true;
}

// Quotes at most 40 bytes of an untrusted name, escaping what is unprintable.
std::string Quote(const std::string& name) {
  std::string out = "'";
  for (size_t i = 0; i < name.size() && i < 40; ++i) {
    unsigned char c = static_cast<unsigned char>(name[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  if (name.size() > 40) out += "...";
  return out + "'";
}

std::string ShapeString(std::span<const uint64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Features of one sample of a graph input/output (product of its shape), or
// 0 when a dimension is 0 or the product exceeds kMaxFeatures.
uint64_t SampleFeatures(
    const google::protobuf::RepeatedField<uint32_t>& shape) {
  uint64_t features = 1;
  for (uint32_t d : shape) {
    features *= d;  // both factors < 2^32: cannot overflow 64 bits
    if (features == 0 || features > kMaxFeatures) return 0;
  }
  return features;
}

bool Is1D(const model::TensorInfo& t, uint64_t n) {
  return t.shape_size() == 1 && t.shape(0) == n;
}

std::string DimsString(std::span<const uint32_t> dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

// The window geometry of a convolution or pooling op `what` reading `in`,
// or an error naming the op and the attribute that is wrong.
Result<WindowGeometry> Window(const model::Op& op, const ValueShape& in,
                              const char* what) {
  const bool conv2d =
      op.type() == model::CONV2D || op.type() == model::DEPTHWISE_CONV2D;
  const bool conv = conv2d || op.type() == model::CONV1D;
  const std::vector<uint32_t>& d = in.dims;
  // Spatial rank: 2 for 2-D convolutions, 1 for CONV1D, the input's for pools.
  size_t rank = conv2d ? 2 : op.type() == model::CONV1D ? 1 : d.size() - 1;
  if (d.size() != rank + 1 || (rank != 1 && rank != 2)) {
    return InvalidArgument("graph: %s reads '%s' of shape %s, expected %s",
                           what, in.name.c_str(), DimsString(d).c_str(),
                           conv2d ? "[H, W, C] (channels last)"
                           : op.type() == model::CONV1D
                               ? "[L, C] (channels last)"
                               : "[H, W, C] or [L, C]");
  }
  auto attr =
      [&](const char* field, const google::protobuf::RepeatedField<uint32_t>& v,
          uint32_t empty, uint32_t lo, std::vector<uint32_t>* out) -> Status {
    if (v.empty() && empty != 0xffffffffu) {
      out->assign(rank, empty);
      return Status::Ok();
    }
    if (static_cast<size_t>(v.size()) != rank) {
      return InvalidArgument(
          "graph: %s %s has %d entries, expected %zu (one per spatial "
          "dimension of '%s')",
          what, field, v.size(), rank, in.name.c_str());
    }
    for (int j = 0; j < v.size(); ++j) {
      if (v[j] < lo || v[j] > kMaxWindowAttribute) {
        return InvalidArgument("graph: %s %s[%d] is %u, expected %u..%u", what,
                               field, j, v[j], lo, kMaxWindowAttribute);
      }
    }
    out->assign(v.begin(), v.end());
    return Status::Ok();
  };
  std::vector<uint32_t> kernel, stride, padding, dilation;
  TERND_RETURN_IF_ERROR(attr("kernel", op.kernel(), 0xffffffffu, 1, &kernel));
  TERND_RETURN_IF_ERROR(attr("stride", op.stride(), 1, 1, &stride));
  TERND_RETURN_IF_ERROR(attr("padding", op.padding(), 0, 0, &padding));
  if (!conv && op.dilation_size() != 0) {
    return InvalidArgument("graph: %s has a dilation; pooling takes none",
                           what);
  }
  TERND_RETURN_IF_ERROR(attr("dilation", op.dilation(), 1, 1, &dilation));
  WindowGeometry g;
  uint32_t* outs[2] = {&g.out_h, &g.out_w};
  uint32_t* ks[2] = {&g.kh, &g.kw};
  uint32_t* ss[2] = {&g.sh, &g.sw};
  uint32_t* ps[2] = {&g.ph, &g.pw};
  uint32_t* ds[2] = {&g.dh, &g.dw};
  uint32_t* ins[2] = {&g.in_h, &g.in_w};
  const size_t first = 2 - rank;  // 1-D ops fill the W slots only
  static const char* kDimNames[2] = {"height", "width"};
  for (size_t j = 0; j < rank; ++j) {
    const size_t slot = first + j;
    const uint64_t size = d[j];
    const uint64_t span = uint64_t{dilation[j]} * (kernel[j] - 1) + 1;
    if (!conv && uint64_t{padding[j]} * 2 > kernel[j]) {
      return InvalidArgument(
          "graph: %s padding[%zu] is %u, at most half the kernel (%u) so "
          "that no window lies in the padding only",
          what, j, padding[j], kernel[j]);
    }
    if (span > size + 2 * uint64_t{padding[j]}) {
      return InvalidArgument(
          "graph: %s kernel[%zu] = %u (dilation %u) spans %llu, more than the "
          "%s of '%s' (%llu) plus padding %u on both sides",
          what, j, kernel[j], dilation[j],
          static_cast<unsigned long long>(span),
          rank == 1 ? "length" : kDimNames[j], in.name.c_str(),
          static_cast<unsigned long long>(size), padding[j]);
    }
    *ins[slot] = d[j];
    *outs[slot] = static_cast<uint32_t>(
        (size + 2 * uint64_t{padding[j]} - span) / stride[j] + 1);
    *ks[slot] = kernel[j];
    *ss[slot] = stride[j];
    *ps[slot] = padding[j];
    *ds[slot] = dilation[j];
  }
  g.in_c = d.back();
  g.out_c = d.back();
  const uint64_t patch = uint64_t{g.kh} * g.kw * g.in_c;
  if (patch > kMaxFeatures) {
    return InvalidArgument(
        "graph: %s window of %u x %u x %u channels holds %llu values, more "
        "than %llu",
        what, g.kh, g.kw, g.in_c, static_cast<unsigned long long>(patch),
        static_cast<unsigned long long>(kMaxFeatures));
  }
  return g;
}

}  // namespace

const char* DTypeName(model::DType dtype) {
  switch (dtype) {
    case model::F32:
      return "F32";
    case model::I32:
      return "I32";
    case model::TERNARY2:
      return "TERNARY2";
    case model::F16:
      return "F16";
    case model::I8:
      return "I8";
    default:
      return "UNSPECIFIED";
  }
}

const char* OpTypeName(model::OpType type) {
  switch (type) {
    case model::TERNARY_LINEAR:
      return "TERNARY_LINEAR";
    case model::LINEAR:
      return "LINEAR";
    case model::RMS_NORM:
      return "RMS_NORM";
    case model::LAYER_NORM:
      return "LAYER_NORM";
    case model::RELU:
      return "RELU";
    case model::RELU2:
      return "RELU2";
    case model::SILU:
      return "SILU";
    case model::GELU:
      return "GELU";
    case model::ADD:
      return "ADD";
    case model::SOFTMAX:
      return "SOFTMAX";
    case model::ARGMAX:
      return "ARGMAX";
    case model::CONV2D:
      return "CONV2D";
    case model::CONV1D:
      return "CONV1D";
    case model::DEPTHWISE_CONV2D:
      return "DEPTHWISE_CONV2D";
    case model::MAX_POOL:
      return "MAX_POOL";
    case model::AVG_POOL:
      return "AVG_POOL";
    case model::GLOBAL_AVG_POOL:
      return "GLOBAL_AVG_POOL";
    case model::RESHAPE:
      return "RESHAPE";
    case model::CONCAT:
      return "CONCAT";
    case model::AUDIO_FEATURES:
      return "AUDIO_FEATURES";
    default:
      return "UNSPECIFIED";
  }
}

uint32_t OpFormatVersion(model::OpType type) {
  return type >= model::CONV2D ? 3 : 1;
}

Result<uint64_t> TensorByteLength(model::DType dtype,
                                  std::span<const uint64_t> shape) {
  if (shape.empty() || shape.size() > static_cast<size_t>(kMaxDims)) {
    return InvalidArgument("has %zu dimensions, expected 1 to %d", shape.size(),
                           kMaxDims);
  }
  uint64_t count = 1;
  for (uint64_t d : shape) {
    if (d == 0 || d > kMaxDim) {
      return InvalidArgument("shape %s has a dimension outside 1..%llu",
                             ShapeString(shape).c_str(),
                             static_cast<unsigned long long>(kMaxDim));
    }
    if (__builtin_mul_overflow(count, d, &count) ||
        count > (uint64_t{1} << 40)) {
      return InvalidArgument("shape %s has more than 2^40 elements",
                             ShapeString(shape).c_str());
    }
  }
  switch (dtype) {
    case model::F32:
    case model::I32:
      return count * 4;
    case model::TERNARY2:
      if (shape.size() != 2) {
        return InvalidArgument("is TERNARY2 with shape %s, expected 2-D [N, K]",
                               ShapeString(shape).c_str());
      }
      return shape[0] * TernaryRowBytes(shape[1]);
    case model::F16:
      return count * 2;
    case model::I8:
      if (shape.size() != 2) {
        return InvalidArgument("is I8 with shape %s, expected 2-D [N, K]",
                               ShapeString(shape).c_str());
      }
      return count;
    default:
      return InvalidArgument("has unknown dtype %d", static_cast<int>(dtype));
  }
}

Result<ModelFile> ModelFile::Open(const std::string& path) {
  TERND_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFile(path));
  return Parse(std::move(bytes), path);
}

Result<ModelFile> ModelFile::Parse(std::vector<uint8_t> bytes,
                                   std::string_view origin) {
  ModelFile file;
  file.origin_ = std::string(origin);
  file.bytes_ = std::move(bytes);
  Status s = file.Validate();
  if (!s.ok()) return s.Prepend(file.origin_);
  return file;
}

const TensorView* ModelFile::FindTensor(std::string_view name) const {
  for (const TensorView& t : tensors_) {
    if (t.info->name() == name) return &t;
  }
  return nullptr;
}

const ValueShape* ModelFile::FindValue(std::string_view name) const {
  for (const ValueShape& v : values_) {
    if (v.name == name) return &v;
  }
  return nullptr;
}

Status ModelFile::Validate() {
  const size_t size = bytes_.size();
  if (size < kPreambleSize) {
    return DataLoss("file is %zu bytes, shorter than the %zu-byte preamble",
                    size, kPreambleSize);
  }
  const uint8_t* p = bytes_.data();
  if (std::memcmp(p, kMagic, 4) != 0) {
    return InvalidArgument(
        "not a ternd model: bytes 0..3 are %02x %02x %02x %02x, expected "
        "\"TERN\"",
        p[0], p[1], p[2], p[3]);
  }
  const uint32_t version = ReadU32(p + 4);
  if (version < kMinFormatVersion || version > kFormatVersion) {
    return InvalidArgument(
        "format version %u at offset 4 is not supported (this ternd reads "
        "versions %u to %u)%s",
        version, kMinFormatVersion, kFormatVersion,
        version > kFormatVersion ? "; upgrade ternd" : "");
  }
  format_version_ = version;
  const uint32_t header_len = ReadU32(p + 8);
  const uint32_t flags = ReadU32(p + 12);
  if (flags != 0) {
    return InvalidArgument("flags at offset 12 are 0x%08x, expected 0", flags);
  }
  if (header_len == 0 || header_len > kMaxHeaderBytes) {
    return InvalidArgument("header length %u at offset 8 is outside 1..%zu",
                           header_len, kMaxHeaderBytes);
  }
  if (kPreambleSize + header_len > size) {
    return DataLoss(
        "header length %u at offset 8 runs past the end of the %zu-byte "
        "file (truncated?)",
        header_len, size);
  }
  RouteProtobufLogs();
  header_ = std::make_unique<model::ModelHeader>();
  if (!header_->ParseFromArray(p + kPreambleSize,
                               static_cast<int>(header_len))) {
    return InvalidArgument(
        "header at bytes %zu..%zu is not a valid ModelHeader protobuf",
        kPreambleSize, kPreambleSize + header_len);
  }
  const std::string& arch = header_->architecture();
  if (arch != kArchGraph && arch != kArchBitnetLm) {
    return InvalidArgument(
        "architecture is %s, expected 'graph' or 'bitnet-lm' (format "
        "version 2)",
        Quote(arch).c_str());
  }
  if (arch == kArchBitnetLm && version < 2) {
    return InvalidArgument(
        "architecture 'bitnet-lm' needs format version 2, the preamble says "
        "%u",
        version);
  }
  if (!ValidName(header_->name())) {
    return InvalidArgument(
        "model name %s is empty, longer than %zu bytes or has characters "
        "outside [A-Za-z0-9_.:/-]",
        Quote(header_->name()).c_str(), kMaxNameLength);
  }
  const uint64_t data_offset =
      AlignUp(kPreambleSize + header_len, kTensorAlignment);
  for (uint64_t i = kPreambleSize + header_len; i < data_offset && i < size;
       ++i) {
    if (p[i] != 0) {
      return InvalidArgument(
          "padding byte at offset %llu is 0x%02x, expected 0",
          static_cast<unsigned long long>(i), p[i]);
    }
  }
  const uint64_t data_length = header_->data_length();
  if (data_length > size || data_offset > size - data_length) {
    return DataLoss(
        "file is %zu bytes but the header says the data section spans bytes "
        "%llu..%llu (truncated?)",
        size, static_cast<unsigned long long>(data_offset),
        static_cast<unsigned long long>(data_offset + data_length));
  }
  if (data_offset + data_length != size) {
    return InvalidArgument(
        "file has %llu bytes after the end of the data section at offset %llu",
        static_cast<unsigned long long>(size - data_offset - data_length),
        static_cast<unsigned long long>(data_offset + data_length));
  }
  data_offset_ = data_offset;
  TERND_RETURN_IF_ERROR(ValidateTensors(data_offset));
  if (is_language_model()) return ValidateLanguageModel();
  if (header_->has_lm()) {
    return InvalidArgument(
        "architecture is 'graph' but the header has a language model section");
  }
  TERND_RETURN_IF_ERROR(ValidateGraph());
  return ValidateGolden();
}

Status ModelFile::ValidateTensors(size_t data_offset) {
  const int count = header_->tensors_size();
  if (count > kMaxTensors) {
    return InvalidArgument("has %d tensors, more than the limit of %d", count,
                           kMaxTensors);
  }
  const uint64_t data_length = header_->data_length();
  std::unordered_set<std::string> names;
  tensors_.reserve(count);
  for (int i = 0; i < count; ++i) {
    const model::TensorInfo& t = header_->tensors(i);
    if (!ValidName(t.name())) {
      return InvalidArgument(
          "tensor #%d: name %s is empty, longer than %zu bytes or has "
          "characters outside [A-Za-z0-9_.:/-]",
          i, Quote(t.name()).c_str(), kMaxNameLength);
    }
    if (!names.insert(t.name()).second) {
      return InvalidArgument("tensor #%d: name '%s' is used twice", i,
                             t.name().c_str());
    }
    std::vector<uint64_t> shape(t.shape().begin(), t.shape().end());
    Result<uint64_t> length = TensorByteLength(t.dtype(), shape);
    if (!length.ok()) {
      Status s = length.status();
      char ctx[128];
      std::snprintf(ctx, sizeof(ctx), "tensor '%s' (#%d)", t.name().c_str(), i);
      return s.Prepend(ctx);
    }
    if (t.length() != *length) {
      return InvalidArgument(
          "tensor '%s' (#%d): length is %llu bytes, but %s %s needs %llu",
          t.name().c_str(), i, static_cast<unsigned long long>(t.length()),
          DTypeName(t.dtype()), ShapeString(shape).c_str(),
          static_cast<unsigned long long>(*length));
    }
    if (t.offset() % kTensorAlignment != 0) {
      return InvalidArgument(
          "tensor '%s' (#%d): offset %llu is not a multiple of %zu",
          t.name().c_str(), i, static_cast<unsigned long long>(t.offset()),
          kTensorAlignment);
    }
    if (t.offset() > data_length || t.length() > data_length - t.offset()) {
      return DataLoss(
          "tensor '%s' (#%d): bytes %llu..%llu lie outside the %llu-byte data "
          "section",
          t.name().c_str(), i, static_cast<unsigned long long>(t.offset()),
          static_cast<unsigned long long>(t.offset() + t.length()),
          static_cast<unsigned long long>(data_length));
    }
    if ((t.dtype() == model::F16 || t.dtype() == model::I8) &&
        format_version_ < 2) {
      return InvalidArgument(
          "tensor '%s' (#%d): dtype %s needs format version 2, the preamble "
          "says %u",
          t.name().c_str(), i, DTypeName(t.dtype()), format_version_);
    }
    if (t.dtype() == model::I8 &&
        static_cast<uint64_t>(t.scale_size()) != t.shape(0)) {
      return InvalidArgument(
          "tensor '%s' (#%d): I8 has %d scales, expected one per row (%llu)",
          t.name().c_str(), i, t.scale_size(),
          static_cast<unsigned long long>(t.shape(0)));
    }
    if (t.dtype() == model::TERNARY2 || t.dtype() == model::I8) {
      if (t.dtype() == model::TERNARY2 && t.scale_size() != 1 &&
          static_cast<uint64_t>(t.scale_size()) != t.shape(0)) {
        return InvalidArgument(
            "tensor '%s' (#%d): has %d scales, expected 1 (per tensor) or "
            "%llu (per row)",
            t.name().c_str(), i, t.scale_size(),
            static_cast<unsigned long long>(t.shape(0)));
      }
      for (int j = 0; j < t.scale_size(); ++j) {
        float s = t.scale(j);
        if (!std::isfinite(s) || s < 0) {
          return InvalidArgument(
              "tensor '%s' (#%d): scale #%d is %g, expected a finite value "
              ">= 0",
              t.name().c_str(), i, j, static_cast<double>(s));
        }
      }
    } else if (t.scale_size() != 0) {
      return InvalidArgument(
          "tensor '%s' (#%d): only TERNARY2 and I8 tensors have scales, this "
          "%s "
          "tensor has %d",
          t.name().c_str(), i, DTypeName(t.dtype()), t.scale_size());
    }
    tensors_.push_back(TensorView{
        &t, std::span<const uint8_t>(bytes_.data() + data_offset + t.offset(),
                                     t.length())});
  }
  // No two tensors may share bytes.
  std::vector<const TensorView*> by_offset;
  for (const TensorView& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorView* a, const TensorView* b) {
              return a->info->offset() < b->info->offset();
            });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const model::TensorInfo& a = *by_offset[i - 1]->info;
    const model::TensorInfo& b = *by_offset[i]->info;
    if (a.offset() + a.length() > b.offset()) {
      return InvalidArgument(
          "tensors '%s' (bytes %llu..%llu) and '%s' (from %llu) overlap",
          a.name().c_str(), static_cast<unsigned long long>(a.offset()),
          static_cast<unsigned long long>(a.offset() + a.length()),
          b.name().c_str(), static_cast<unsigned long long>(b.offset()));
    }
  }
  return Status::Ok();
}

Status ModelFile::ValidateGraph() {
  const model::Graph& g = header_->graph();
  if (g.max_batch() < 1 || g.max_batch() > kMaxBatch) {
    return InvalidArgument("graph: max_batch is %u, expected 1..%u",
                           g.max_batch(), kMaxBatch);
  }
  if (g.inputs_size() < 1 || g.outputs_size() < 1) {
    return InvalidArgument(
        "graph: has %d inputs and %d outputs, expected at least one of each",
        g.inputs_size(), g.outputs_size());
  }
  if (g.ops_size() < 1 || g.ops_size() > kMaxOps) {
    return InvalidArgument("graph: has %d ops, expected 1..%d", g.ops_size(),
                           kMaxOps);
  }
  std::unordered_map<std::string, size_t> index;  // value name -> values_
  auto define = [&](const std::string& name, model::DType dtype,
                    uint64_t features, const char* what) -> Status {
    if (!ValidName(name)) {
      return InvalidArgument(
          "graph: %s has name %s, empty, longer than %zu bytes or with "
          "characters outside [A-Za-z0-9_.:/-]",
          what, Quote(name).c_str(), kMaxNameLength);
    }
    if (index.count(name)) {
      return InvalidArgument("graph: %s defines value '%s' a second time", what,
                             name.c_str());
    }
    if (features < 1 || features > kMaxFeatures) {
      return InvalidArgument(
          "graph: value '%s' has %llu features, expected "
          "1..%llu",
          name.c_str(), static_cast<unsigned long long>(features),
          static_cast<unsigned long long>(kMaxFeatures));
    }
    index[name] = values_.size();
    values_.push_back(
        ValueShape{name, dtype, static_cast<uint32_t>(features), {}});
    return Status::Ok();
  };

  for (int i = 0; i < g.inputs_size(); ++i) {
    const model::ValueInfo& in = g.inputs(i);
    char what[48];
    std::snprintf(what, sizeof(what), "input #%d", i);
    if (in.dtype() != model::F32) {
      return InvalidArgument("graph: input %s has dtype %s, expected F32",
                             Quote(in.name()).c_str(), DTypeName(in.dtype()));
    }
    if (in.shape_size() < 1 || in.shape_size() > kMaxDims) {
      return InvalidArgument(
          "graph: input %s has %d dimensions, expected 1..%d",
          Quote(in.name()).c_str(), in.shape_size(), kMaxDims);
    }
    TERND_RETURN_IF_ERROR(
        define(in.name(), model::F32, SampleFeatures(in.shape()), what));
    values_.back().dims.assign(in.shape().begin(), in.shape().end());
  }
  geometry_.assign(g.ops_size(), WindowGeometry{});

  for (int i = 0; i < g.ops_size(); ++i) {
    const model::Op& op = g.ops(i);
    const char* type = OpTypeName(op.type());
    char what[64];
    std::snprintf(what, sizeof(what), "op #%d (%s)", i, type);
    if (op.type() == model::OP_UNSPECIFIED ||
        std::strcmp(type, "UNSPECIFIED") == 0) {
      return InvalidArgument("graph: op #%d has unknown type %d", i,
                             static_cast<int>(op.type()));
    }
    if (OpFormatVersion(op.type()) > format_version_) {
      return InvalidArgument(
          "graph: %s needs format version %u, the preamble says %u", what,
          OpFormatVersion(op.type()), format_version_);
    }
    if (op.type() == model::CONCAT) {
      if (op.inputs_size() < 2 || op.inputs_size() > 64) {
        return InvalidArgument("graph: %s has %d inputs, expected 2..64", what,
                               op.inputs_size());
      }
    } else {
      const int want_inputs = op.type() == model::ADD ? 2 : 1;
      if (op.inputs_size() != want_inputs) {
        return InvalidArgument("graph: %s has %d inputs, expected %d", what,
                               op.inputs_size(), want_inputs);
      }
    }
    if (op.type() != model::AUDIO_FEATURES && op.has_audio()) {
      return InvalidArgument(
          "graph: %s has audio attributes; only AUDIO_FEATURES takes them",
          what);
    }
    if (op.type() != model::RESHAPE && op.shape_size() != 0) {
      return InvalidArgument(
          "graph: %s has a shape attribute; only RESHAPE takes one", what);
    }
    const bool windowed =
        op.type() == model::CONV2D || op.type() == model::CONV1D ||
        op.type() == model::DEPTHWISE_CONV2D || op.type() == model::MAX_POOL ||
        op.type() == model::AVG_POOL;
    if (!windowed && (op.kernel_size() || op.stride_size() ||
                      op.padding_size() || op.dilation_size())) {
      return InvalidArgument(
          "graph: %s has kernel, stride, padding or dilation attributes; "
          "only convolutions and MAX_POOL/AVG_POOL take them",
          what);
    }
    std::vector<const ValueShape*> ins;
    for (const std::string& name : op.inputs()) {
      auto it = index.find(name);
      if (it == index.end()) {
        return InvalidArgument(
            "graph: %s reads value %s, which no earlier input or op defines",
            what, Quote(name).c_str());
      }
      const ValueShape* v = &values_[it->second];
      if (v->dtype != model::F32) {
        return InvalidArgument(
            "graph: %s reads value '%s' of dtype %s, ops "
            "only read F32 values",
            what, name.c_str(), DTypeName(v->dtype));
      }
      ins.push_back(v);
    }
    const uint64_t in_features = ins[0]->features;
    const TensorView* weight = nullptr;
    const TensorView* bias = nullptr;
    if (!op.weight().empty()) {
      weight = FindTensor(op.weight());
      if (!weight) {
        return InvalidArgument(
            "graph: %s names weight tensor %s, which is not "
            "in the tensor table",
            what, Quote(op.weight()).c_str());
      }
    }
    if (!op.bias().empty()) {
      bias = FindTensor(op.bias());
      if (!bias) {
        return InvalidArgument(
            "graph: %s names bias tensor %s, which is not in "
            "the tensor table",
            what, Quote(op.bias()).c_str());
      }
    }
    auto no_params = [&]() -> Status {
      if (weight || bias) {
        return InvalidArgument("graph: %s takes no weight or bias tensor",
                               what);
      }
      return Status::Ok();
    };
    auto check_eps = [&]() -> Status {
      if (!std::isfinite(op.eps()) || op.eps() <= 0) {
        return InvalidArgument(
            "graph: %s has eps %g, expected a finite value "
            "> 0",
            what, static_cast<double>(op.eps()));
      }
      return Status::Ok();
    };
    auto check_vector = [&](const TensorView* t, const char* role,
                            uint64_t n) -> Status {
      if (t->info->dtype() != model::F32 || !Is1D(*t->info, n)) {
        std::vector<uint64_t> shape(t->info->shape().begin(),
                                    t->info->shape().end());
        return InvalidArgument(
            "graph: %s %s tensor '%s' is %s %s, expected "
            "F32 [%llu]",
            what, role, t->info->name().c_str(), DTypeName(t->info->dtype()),
            ShapeString(shape).c_str(), static_cast<unsigned long long>(n));
      }
      return Status::Ok();
    };
    uint64_t out_features = in_features;
    model::DType out_dtype = model::F32;
    std::vector<uint32_t> out_dims = ins[0]->dims;
    const bool flat_output = op.type() == model::TERNARY_LINEAR ||
                             op.type() == model::LINEAR ||
                             op.type() == model::ARGMAX;
    if (windowed) {
      Result<WindowGeometry> geo = Window(op, *ins[0], what);
      if (!geo.ok()) return geo.status();
      geometry_[i] = *geo;
    }
    const WindowGeometry& geo = geometry_[i];
    auto spatial_out = [&](uint32_t channels) {
      out_dims = ins[0]->dims.size() == 3
                     ? std::vector<uint32_t>{geo.out_h, geo.out_w, channels}
                     : std::vector<uint32_t>{geo.out_w, channels};
      out_features = static_cast<uint64_t>(geo.out_h) * geo.out_w * channels;
    };
    switch (op.type()) {
      case model::CONV2D:
      case model::CONV1D: {
        if (!weight) {
          return InvalidArgument("graph: %s needs a weight tensor", what);
        }
        const model::TensorInfo& w = *weight->info;
        if (w.dtype() != model::TERNARY2 || w.shape_size() != 2 ||
            w.shape(1) != geo.patch()) {
          std::vector<uint64_t> shape(w.shape().begin(), w.shape().end());
          return InvalidArgument(
              "graph: %s weight '%s' is %s %s, expected TERNARY2 [C_out, %u] "
              "(kernel %s x %u input channels of '%s')",
              what, w.name().c_str(), DTypeName(w.dtype()),
              ShapeString(shape).c_str(), geo.patch(),
              op.type() == model::CONV2D
                  ? (std::to_string(geo.kh) + "x" + std::to_string(geo.kw))
                        .c_str()
                  : std::to_string(geo.kw).c_str(),
              geo.in_c, ins[0]->name.c_str());
        }
        if (w.shape(0) > kMaxFeatures) {
          return InvalidArgument(
              "graph: %s weight '%s' has %llu output "
              "channels, more than %llu",
              what, w.name().c_str(),
              static_cast<unsigned long long>(w.shape(0)),
              static_cast<unsigned long long>(kMaxFeatures));
        }
        geometry_[i].out_c = static_cast<uint32_t>(w.shape(0));
        spatial_out(geometry_[i].out_c);
        if (bias) {
          TERND_RETURN_IF_ERROR(check_vector(bias, "bias", w.shape(0)));
        }
        break;
      }
      case model::DEPTHWISE_CONV2D: {
        if (!weight) {
          return InvalidArgument("graph: %s needs a weight tensor", what);
        }
        const model::TensorInfo& w = *weight->info;
        if (w.dtype() != model::F32 || w.shape_size() != 3 ||
            w.shape(0) != geo.kh || w.shape(1) != geo.kw ||
            w.shape(2) != geo.in_c) {
          std::vector<uint64_t> shape(w.shape().begin(), w.shape().end());
          return InvalidArgument(
              "graph: %s weight '%s' is %s %s, expected F32 [%u, %u, %u] "
              "(kernel x channels of '%s')",
              what, w.name().c_str(), DTypeName(w.dtype()),
              ShapeString(shape).c_str(), geo.kh, geo.kw, geo.in_c,
              ins[0]->name.c_str());
        }
        spatial_out(geo.in_c);
        if (bias) TERND_RETURN_IF_ERROR(check_vector(bias, "bias", geo.in_c));
        break;
      }
      case model::MAX_POOL:
      case model::AVG_POOL:
        TERND_RETURN_IF_ERROR(no_params());
        spatial_out(geo.in_c);
        break;
      case model::GLOBAL_AVG_POOL: {
        TERND_RETURN_IF_ERROR(no_params());
        const std::vector<uint32_t>& d = ins[0]->dims;
        if (d.size() != 2 && d.size() != 3) {
          return InvalidArgument(
              "graph: %s reads '%s' of shape %s, expected [H, W, C] or [L, C]",
              what, ins[0]->name.c_str(), DimsString(d).c_str());
        }
        out_dims = {d.back()};
        out_features = d.back();
        break;
      }
      case model::RESHAPE: {
        TERND_RETURN_IF_ERROR(no_params());
        if (op.shape_size() < 1 || op.shape_size() > kMaxDims) {
          return InvalidArgument(
              "graph: %s has shape with %d dimensions, expected 1..%d", what,
              op.shape_size(), kMaxDims);
        }
        const uint64_t f = SampleFeatures(op.shape());
        if (f != in_features) {
          std::vector<uint32_t> d(op.shape().begin(), op.shape().end());
          return InvalidArgument(
              "graph: %s shape %s holds %llu features, input '%s' has %llu",
              what, DimsString(d).c_str(), static_cast<unsigned long long>(f),
              ins[0]->name.c_str(),
              static_cast<unsigned long long>(in_features));
        }
        out_dims.assign(op.shape().begin(), op.shape().end());
        break;
      }
      case model::AUDIO_FEATURES: {
        const model::AudioFeatures& a = op.audio();
        auto range = [&](const char* field, uint64_t v, uint64_t lo,
                         uint64_t hi) -> Status {
          if (v < lo || v > hi) {
            return InvalidArgument(
                "graph: %s audio.%s is %llu, expected %llu..%llu", what, field,
                static_cast<unsigned long long>(v),
                static_cast<unsigned long long>(lo),
                static_cast<unsigned long long>(hi));
          }
          return Status::Ok();
        };
        TERND_RETURN_IF_ERROR(range("sample_rate", a.sample_rate(), 1, 384000));
        TERND_RETURN_IF_ERROR(
            range("frame_length", a.frame_length(), 1, in_features));
        TERND_RETURN_IF_ERROR(range("frame_step", a.frame_step(), 1, 1u << 20));
        TERND_RETURN_IF_ERROR(
            range("fft_length", a.fft_length(), a.frame_length(), 65536));
        if (a.fft_length() < 4 || (a.fft_length() & (a.fft_length() - 1))) {
          return InvalidArgument(
              "graph: %s audio.fft_length is %u, expected a power of two >= 4",
              what, a.fft_length());
        }
        TERND_RETURN_IF_ERROR(
            range("mel_bins", a.mel_bins(), 1, a.fft_length() / 2 + 1));
        const float nyquist = a.sample_rate() / 2.0f;
        if (!(a.lower_hz() >= 0) || !(a.upper_hz() > a.lower_hz()) ||
            !(a.upper_hz() <= nyquist)) {
          return InvalidArgument(
              "graph: %s audio.lower_hz %g and upper_hz %g must satisfy 0 <= "
              "lower_hz < upper_hz <= sample_rate / 2 (%g)",
              what, static_cast<double>(a.lower_hz()),
              static_cast<double>(a.upper_hz()), static_cast<double>(nyquist));
        }
        if (!std::isfinite(a.log_offset()) || a.log_offset() <= 0) {
          return InvalidArgument(
              "graph: %s audio.log_offset is %g, expected a finite value > 0",
              what, static_cast<double>(a.log_offset()));
        }
        if (weight)
          TERND_RETURN_IF_ERROR(check_vector(weight, "gain", a.mel_bins()));
        if (bias)
          TERND_RETURN_IF_ERROR(check_vector(bias, "bias", a.mel_bins()));
        const uint32_t frames =
            1 + static_cast<uint32_t>((in_features - a.frame_length()) /
                                      a.frame_step());
        out_dims = {frames, a.mel_bins()};
        out_features = uint64_t{frames} * a.mel_bins();
        break;
      }
      case model::CONCAT: {
        TERND_RETURN_IF_ERROR(no_params());
        const std::vector<uint32_t>& d0 = ins[0]->dims;
        uint64_t channels = 0;
        for (const ValueShape* in : ins) {
          const std::vector<uint32_t>& d = in->dims;
          if (d.size() != d0.size() ||
              !std::equal(d.begin(), d.end() - 1, d0.begin())) {
            return InvalidArgument(
                "graph: %s joins '%s' of shape %s and '%s' of shape %s; "
                "inputs must agree in every dimension but the last",
                what, ins[0]->name.c_str(), DimsString(d0).c_str(),
                in->name.c_str(), DimsString(d).c_str());
          }
          channels += d.back();
        }
        out_features = in_features / d0.back() * channels;
        out_dims.back() = static_cast<uint32_t>(
            std::min<uint64_t>(channels, uint64_t{1} << 31));
        break;
      }
      case model::TERNARY_LINEAR:
      case model::LINEAR: {
        const model::DType want =
            op.type() == model::LINEAR ? model::F32 : model::TERNARY2;
        if (!weight) {
          return InvalidArgument("graph: %s needs a weight tensor", what);
        }
        const model::TensorInfo& w = *weight->info;
        if (w.dtype() != want || w.shape_size() != 2 ||
            w.shape(1) != in_features) {
          std::vector<uint64_t> shape(w.shape().begin(), w.shape().end());
          return InvalidArgument(
              "graph: %s weight '%s' is %s %s, expected %s [N, %llu] to match "
              "input '%s'",
              what, w.name().c_str(), DTypeName(w.dtype()),
              ShapeString(shape).c_str(), DTypeName(want),
              static_cast<unsigned long long>(in_features),
              ins[0]->name.c_str());
        }
        out_features = w.shape(0);
        if (bias)
          TERND_RETURN_IF_ERROR(check_vector(bias, "bias", out_features));
        break;
      }
      case model::RMS_NORM:
      case model::LAYER_NORM:
        if (!weight) {
          return InvalidArgument("graph: %s needs a gain (weight) tensor",
                                 what);
        }
        TERND_RETURN_IF_ERROR(check_vector(weight, "gain", in_features));
        if (bias) {
          if (op.type() == model::RMS_NORM) {
            return InvalidArgument("graph: %s takes no bias tensor", what);
          }
          TERND_RETURN_IF_ERROR(check_vector(bias, "bias", in_features));
        }
        TERND_RETURN_IF_ERROR(check_eps());
        break;
      case model::ADD:
        TERND_RETURN_IF_ERROR(no_params());
        if (ins[1]->features != in_features) {
          return InvalidArgument(
              "graph: %s adds '%s' (%u features) and '%s' (%u features)", what,
              ins[0]->name.c_str(), ins[0]->features, ins[1]->name.c_str(),
              ins[1]->features);
        }
        break;
      case model::ARGMAX:
        TERND_RETURN_IF_ERROR(no_params());
        out_features = 1;
        out_dtype = model::I32;
        break;
      default:  // element-wise activations and softmax
        TERND_RETURN_IF_ERROR(no_params());
        break;
    }
    TERND_RETURN_IF_ERROR(define(op.output(), out_dtype, out_features, what));
    if (flat_output) {
      values_.back().dims = {static_cast<uint32_t>(out_features)};
    } else {
      values_.back().dims = std::move(out_dims);
    }
  }

  std::unordered_set<std::string> seen_outputs;
  for (int i = 0; i < g.outputs_size(); ++i) {
    const model::ValueInfo& out = g.outputs(i);
    auto it = index.find(out.name());
    if (it == index.end()) {
      return InvalidArgument(
          "graph: output #%d names value %s, which no input "
          "or op defines",
          i, Quote(out.name()).c_str());
    }
    if (!seen_outputs.insert(out.name()).second) {
      return InvalidArgument("graph: output '%s' is listed twice",
                             out.name().c_str());
    }
    const ValueShape& v = values_[it->second];
    const uint64_t features = SampleFeatures(out.shape());
    if (out.dtype() != v.dtype || out.shape_size() < 1 ||
        out.shape_size() > kMaxDims || features != v.features) {
      return InvalidArgument(
          "graph: output '%s' is declared %s with %llu features, but the "
          "graph computes %s with %u",
          out.name().c_str(), DTypeName(out.dtype()),
          static_cast<unsigned long long>(features), DTypeName(v.dtype),
          v.features);
    }
  }
  return Status::Ok();
}

Status ModelFile::ValidateGolden() {
  if (!header_->has_golden()) return Status::Ok();
  const model::GoldenPair& gp = header_->golden();
  const model::Graph& g = header_->graph();
  if (gp.input_tensors_size() != g.inputs_size() ||
      gp.output_tensors_size() != g.outputs_size()) {
    return InvalidArgument(
        "golden pair has %d input and %d output tensors, the graph has %d "
        "inputs and %d outputs",
        gp.input_tensors_size(), gp.output_tensors_size(), g.inputs_size(),
        g.outputs_size());
  }
  if (!std::isfinite(gp.tolerance()) || gp.tolerance() < 0) {
    return InvalidArgument("golden pair tolerance is %g, expected finite >= 0",
                           static_cast<double>(gp.tolerance()));
  }
  uint64_t batch = 0;
  auto check = [&](const std::string& tensor, const std::string& value,
                   const char* role) -> Status {
    const TensorView* t = FindTensor(tensor);
    if (!t) {
      return InvalidArgument("golden %s tensor %s is not in the tensor table",
                             role, Quote(tensor).c_str());
    }
    const ValueShape* v = FindValue(value);
    const model::TensorInfo& info = *t->info;
    const uint64_t rows = info.shape_size() == 2 ? info.shape(0) : 0;
    if (info.dtype() != v->dtype || info.shape_size() != 2 ||
        info.shape(1) != v->features || rows < 1 ||
        rows > header_->graph().max_batch() || (batch && rows != batch)) {
      std::vector<uint64_t> shape(info.shape().begin(), info.shape().end());
      return InvalidArgument(
          "golden %s tensor '%s' is %s %s, expected %s [batch, %u] for value "
          "'%s' with the same batch (1..max_batch) in every golden tensor",
          role, info.name().c_str(), DTypeName(info.dtype()),
          ShapeString(shape).c_str(), DTypeName(v->dtype), v->features,
          value.c_str());
    }
    batch = rows;
    return Status::Ok();
  };
  for (int i = 0; i < g.inputs_size(); ++i) {
    TERND_RETURN_IF_ERROR(
        check(gp.input_tensors(i), g.inputs(i).name(), "input"));
  }
  for (int i = 0; i < g.outputs_size(); ++i) {
    TERND_RETURN_IF_ERROR(
        check(gp.output_tensors(i), g.outputs(i).name(), "output"));
  }
  return Status::Ok();
}

Status ModelFile::ValidateLanguageModel() {
  const model::ModelHeader& h = *header_;
  if (!h.has_lm()) {
    return InvalidArgument(
        "architecture is 'bitnet-lm' but the header has no language model "
        "section (lm)");
  }
  if (h.graph().ops_size() != 0 || h.graph().inputs_size() != 0 ||
      h.has_golden()) {
    return InvalidArgument(
        "architecture 'bitnet-lm' has no graph and no golden pair (its "
        "health check is lm.golden_prompt/golden_tokens), this file has %d "
        "graph ops%s",
        h.graph().ops_size(), h.has_golden() ? " and a golden pair" : "");
  }
  const model::LanguageModel& lm = h.lm();
  auto range = [](const char* key, uint64_t v, uint64_t lo,
                  uint64_t hi) -> Status {
    if (v < lo || v > hi) {
      return InvalidArgument("lm.%s is %llu, expected %llu..%llu", key,
                             static_cast<unsigned long long>(v),
                             static_cast<unsigned long long>(lo),
                             static_cast<unsigned long long>(hi));
    }
    return Status::Ok();
  };
  TERND_RETURN_IF_ERROR(range("layers", lm.layers(), 1, kMaxLmLayers));
  TERND_RETURN_IF_ERROR(range("embedding", lm.embedding(), 1, kMaxFeatures));
  TERND_RETURN_IF_ERROR(range("ffn", lm.ffn(), 1, kMaxFeatures));
  TERND_RETURN_IF_ERROR(range("heads", lm.heads(), 1, lm.embedding()));
  TERND_RETURN_IF_ERROR(range("kv_heads", lm.kv_heads(), 1, lm.heads()));
  TERND_RETURN_IF_ERROR(range("context", lm.context(), 1, kMaxLmContext));
  TERND_RETURN_IF_ERROR(range("vocab", lm.vocab(), 1, kMaxFeatures));
  if (lm.embedding() % lm.heads() != 0 || (lm.embedding() / lm.heads()) % 2) {
    return InvalidArgument(
        "lm.heads %u does not divide lm.embedding %u into heads of even width",
        lm.heads(), lm.embedding());
  }
  if (lm.heads() % lm.kv_heads() != 0) {
    return InvalidArgument("lm.kv_heads %u does not divide lm.heads %u",
                           lm.kv_heads(), lm.heads());
  }
  if (!std::isfinite(lm.rope_freq_base()) || lm.rope_freq_base() <= 0) {
    return InvalidArgument("lm.rope_freq_base is %g, expected finite > 0",
                           static_cast<double>(lm.rope_freq_base()));
  }
  if (!std::isfinite(lm.rms_eps()) || lm.rms_eps() <= 0) {
    return InvalidArgument("lm.rms_eps is %g, expected finite > 0",
                           static_cast<double>(lm.rms_eps()));
  }
  if (lm.ffn_activation() != model::LanguageModel::RELU2 &&
      lm.ffn_activation() != model::LanguageModel::SILU) {
    return InvalidArgument("lm.ffn_activation is %d, expected RELU2 or SILU",
                           static_cast<int>(lm.ffn_activation()));
  }

  // The tensor set: every expected tensor with its dtype and shape, and
  // nothing else.
  const uint64_t E = lm.embedding(), F = lm.ffn(), V = lm.vocab();
  const uint64_t KV = E / lm.heads() * lm.kv_heads();
  std::unordered_set<std::string> expected;
  enum Kind { kTernary, kNorm, kTable };
  auto expect = [&](const std::string& name, Kind kind, uint64_t rows,
                    uint64_t cols, bool optional) -> Status {
    const TensorView* t = FindTensor(name);
    if (t == nullptr) {
      if (optional) return Status::Ok();
      return InvalidArgument("language model tensor '%s' is missing",
                             name.c_str());
    }
    expected.insert(name);
    const model::TensorInfo& info = *t->info;
    std::vector<uint64_t> shape(info.shape().begin(), info.shape().end());
    bool ok;
    const char* want;
    switch (kind) {
      case kTernary:
        ok = info.dtype() == model::TERNARY2 && info.scale_size() == 1;
        want = "TERNARY2 with one scale";
        break;
      case kNorm:
        ok = info.dtype() == model::F32;
        want = "F32";
        break;
      default:
        ok = info.dtype() == model::F32 || info.dtype() == model::F16 ||
             info.dtype() == model::I8;
        want = "F32, F16 or I8";
        break;
    }
    const bool shape_ok =
        kind == kNorm
            ? (shape.size() == 1 && shape[0] == cols)
            : (shape.size() == 2 && shape[0] == rows && shape[1] == cols);
    if (!ok || !shape_ok) {
      char expect_shape[64];
      if (kind == kNorm) {
        std::snprintf(expect_shape, sizeof(expect_shape), "[%llu]",
                      static_cast<unsigned long long>(cols));
      } else {
        std::snprintf(expect_shape, sizeof(expect_shape), "[%llu, %llu]",
                      static_cast<unsigned long long>(rows),
                      static_cast<unsigned long long>(cols));
      }
      return InvalidArgument(
          "language model tensor '%s' is %s %s, expected %s %s from the "
          "hyper-parameters",
          name.c_str(), DTypeName(info.dtype()), ShapeString(shape).c_str(),
          want, expect_shape);
    }
    return Status::Ok();
  };
  TERND_RETURN_IF_ERROR(expect("token_embd.weight", kTable, V, E, false));
  TERND_RETURN_IF_ERROR(expect("output_norm.weight", kNorm, 0, E, false));
  TERND_RETURN_IF_ERROR(
      expect("output.weight", kTable, V, E, lm.tied_output()));
  if (lm.tied_output() && FindTensor("output.weight") != nullptr) {
    return InvalidArgument(
        "lm.tied_output is set but the file has an output.weight tensor");
  }
  if (!lm.tied_output() && FindTensor("output.weight") == nullptr) {
    return InvalidArgument(
        "language model tensor 'output.weight' is missing (lm.tied_output "
        "is not set)");
  }
  TERND_RETURN_IF_ERROR(
      expect("rope_freqs.weight", kNorm, 0, E / lm.heads() / 2, true));
  for (uint32_t l = 0; l < lm.layers(); ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    TERND_RETURN_IF_ERROR(expect(p + "attn_norm.weight", kNorm, 0, E, false));
    TERND_RETURN_IF_ERROR(expect(p + "attn_q.weight", kTernary, E, E, false));
    TERND_RETURN_IF_ERROR(expect(p + "attn_k.weight", kTernary, KV, E, false));
    TERND_RETURN_IF_ERROR(expect(p + "attn_v.weight", kTernary, KV, E, false));
    TERND_RETURN_IF_ERROR(
        expect(p + "attn_output.weight", kTernary, E, E, false));
    TERND_RETURN_IF_ERROR(expect(p + "ffn_norm.weight", kNorm, 0, E, false));
    TERND_RETURN_IF_ERROR(expect(p + "ffn_gate.weight", kTernary, F, E, false));
    TERND_RETURN_IF_ERROR(expect(p + "ffn_up.weight", kTernary, F, E, false));
    TERND_RETURN_IF_ERROR(expect(p + "ffn_down.weight", kTernary, E, F, false));
    if (lm.sub_norms()) {
      TERND_RETURN_IF_ERROR(
          expect(p + "attn_sub_norm.weight", kNorm, 0, E, false));
      TERND_RETURN_IF_ERROR(
          expect(p + "ffn_sub_norm.weight", kNorm, 0, F, false));
    }
  }
  for (const TensorView& t : tensors_) {
    if (!expected.count(t.info->name())) {
      return InvalidArgument(
          "tensor '%s' is not part of a language model with %u layers%s",
          t.info->name().c_str(), lm.layers(),
          lm.sub_norms() ? "" : " without sub-norms");
    }
  }
  // Float tensors must hold finite values: a NaN gain would poison every
  // token. (Ternary codes are checked at load.)
  for (const TensorView& t : tensors_) {
    const model::DType d = t.info->dtype();
    const size_t n = d == model::F32   ? t.bytes.size() / 4
                     : d == model::F16 ? t.bytes.size() / 2
                                       : 0;
    for (size_t i = 0; i < n; ++i) {
      bool finite;
      if (d == model::F32) {
        float v;
        std::memcpy(&v, t.bytes.data() + 4 * i, 4);
        finite = std::isfinite(v);
      } else {
        const uint16_t bits =
            static_cast<uint16_t>(t.bytes[2 * i] | (t.bytes[2 * i + 1] << 8));
        finite = (bits & 0x7c00) != 0x7c00;
      }
      if (!finite) {
        return InvalidArgument(
            "tensor '%s': element %zu is not finite (NaN or infinity)",
            t.info->name().c_str(), i);
      }
    }
  }

  if (const TensorView* rf = FindTensor("rope_freqs.weight")) {
    for (size_t i = 0; i < rf->bytes.size() / 4; ++i) {
      float v;
      std::memcpy(&v, rf->bytes.data() + 4 * i, 4);
      if (!(v > 0)) {
        return InvalidArgument(
            "tensor 'rope_freqs.weight': element %zu is %g, expected a "
            "frequency divisor > 0",
            i, static_cast<double>(v));
      }
    }
  }

  // Tokenizer: its tables match the vocabulary; special ids are in range.
  const model::Tokenizer& tok = lm.tokenizer();
  if (tok.model() != "gpt2" && tok.model() != "llama") {
    return InvalidArgument(
        "lm.tokenizer.model is %s, expected 'gpt2' or 'llama'",
        Quote(tok.model()).c_str());
  }
  if (static_cast<uint64_t>(tok.tokens_size()) != V) {
    return InvalidArgument(
        "lm.tokenizer has %d tokens, expected lm.vocab = %llu",
        tok.tokens_size(), static_cast<unsigned long long>(V));
  }
  auto table = [&](const char* key, int size) -> Status {
    if (size != 0 && static_cast<uint64_t>(size) != V) {
      return InvalidArgument(
          "lm.tokenizer.%s has %d entries, expected 0 or lm.vocab = %llu", key,
          size, static_cast<unsigned long long>(V));
    }
    return Status::Ok();
  };
  TERND_RETURN_IF_ERROR(table("scores", tok.scores_size()));
  TERND_RETURN_IF_ERROR(table("token_types", tok.token_types_size()));
  auto id = [&](const char* key, bool has, int32_t v) -> Status {
    if (has && (v < 0 || static_cast<uint64_t>(v) >= V)) {
      return InvalidArgument("lm.tokenizer.%s is token %d, outside 0..%llu",
                             key, v, static_cast<unsigned long long>(V - 1));
    }
    return Status::Ok();
  };
  TERND_RETURN_IF_ERROR(id("bos", tok.has_bos(), tok.bos()));
  TERND_RETURN_IF_ERROR(id("eos", tok.has_eos(), tok.eos()));
  TERND_RETURN_IF_ERROR(id("eot", tok.has_eot(), tok.eot()));
  TERND_RETURN_IF_ERROR(id("unk", tok.has_unk(), tok.unk()));
  TERND_RETURN_IF_ERROR(id("pad", tok.has_pad(), tok.pad()));
  if (static_cast<uint64_t>(lm.golden_prompt_size()) + lm.golden_tokens_size() >
      lm.context()) {
    return InvalidArgument(
        "lm golden prompt (%d tokens) and continuation (%d) exceed the "
        "context of %u",
        lm.golden_prompt_size(), lm.golden_tokens_size(), lm.context());
  }
  if ((lm.golden_prompt_size() == 0) != (lm.golden_tokens_size() == 0)) {
    return InvalidArgument(
        "lm golden check has %d prompt and %d expected tokens, expected both "
        "or neither",
        lm.golden_prompt_size(), lm.golden_tokens_size());
  }
  for (int i = 0; i < lm.golden_prompt_size() + lm.golden_tokens_size(); ++i) {
    const int32_t t = i < lm.golden_prompt_size()
                          ? lm.golden_prompt(i)
                          : lm.golden_tokens(i - lm.golden_prompt_size());
    if (t < 0 || static_cast<uint64_t>(t) >= V) {
      return InvalidArgument("lm golden token #%d is %d, outside 0..%llu", i, t,
                             static_cast<unsigned long long>(V - 1));
    }
  }
  return Status::Ok();
}

ModelWriter::ModelWriter(model::ModelHeader header)
    : header_(std::move(header)) {
  header_.clear_tensors();
  if (header_.architecture().empty()) header_.set_architecture("graph");
}

void ModelWriter::AddRaw(const std::string& name, model::DType dtype,
                         std::vector<uint64_t> shape,
                         std::span<const uint8_t> bytes,
                         std::span<const float> scales) {
  data_.resize(AlignUp(data_.size(), kTensorAlignment), 0);
  model::TensorInfo* t = header_.add_tensors();
  t->set_name(name);
  t->set_dtype(dtype);
  for (uint64_t d : shape) t->add_shape(d);
  t->set_offset(data_.size());
  t->set_length(bytes.size());
  for (float s : scales) t->add_scale(s);
  data_.insert(data_.end(), bytes.begin(), bytes.end());
}

void ModelWriter::AddF32(const std::string& name, std::vector<uint64_t> shape,
                         std::span<const float> values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  if (!values.empty()) {
    std::memcpy(bytes.data(), values.data(), bytes.size());  // little-endian
  }
  AddRaw(name, model::F32, std::move(shape), bytes, {});
}

void ModelWriter::AddF16(const std::string& name, std::vector<uint64_t> shape,
                         std::span<const uint16_t> bits) {
  std::vector<uint8_t> bytes(bits.size() * 2);
  if (!bits.empty()) std::memcpy(bytes.data(), bits.data(), bytes.size());
  AddRaw(name, model::F16, std::move(shape), bytes, {});
}

void ModelWriter::AddI8(const std::string& name, uint64_t n, uint64_t k,
                        std::span<const int8_t> values,
                        std::span<const float> scales) {
  TERND_CHECK(values.size() == n * k);
  AddRaw(name, model::I8, {n, k},
         std::span<const uint8_t>(
             reinterpret_cast<const uint8_t*>(values.data()), values.size()),
         scales);
}

void ModelWriter::AddTernaryPacked(const std::string& name, uint64_t n,
                                   uint64_t k, std::span<const uint8_t> packed,
                                   std::span<const float> scales) {
  TERND_CHECK(packed.size() == n * TernaryRowBytes(k));
  AddRaw(name, model::TERNARY2, {n, k}, packed, scales);
}

void ModelWriter::AddI32(const std::string& name, std::vector<uint64_t> shape,
                         std::span<const int32_t> values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  AddRaw(name, model::I32, std::move(shape), bytes, {});
}

void ModelWriter::AddTernary(const std::string& name, uint64_t n, uint64_t k,
                             std::span<const int8_t> weights,
                             std::span<const float> scales) {
  TERND_CHECK(weights.size() == n * k);
  std::vector<uint8_t> bytes(n * TernaryRowBytes(k));
  PackTernary(weights.data(), n, k, bytes.data());
  AddRaw(name, model::TERNARY2, {n, k}, bytes, scales);
}

namespace {

// Preamble, header, padding and `data`: a whole file, re-parsed.
Result<std::vector<uint8_t>> Assemble(const model::ModelHeader& header,
                                      std::span<const uint8_t> data) {
  std::string header_bytes;
  if (!header.SerializeToString(&header_bytes)) {
    return Internal("cannot serialize the model header");
  }
  if (header_bytes.size() > kMaxHeaderBytes) {
    return ResourceExhausted("model header is %zu bytes, over the limit of %zu",
                             header_bytes.size(), kMaxHeaderBytes);
  }
  const uint64_t data_offset =
      AlignUp(kPreambleSize + header_bytes.size(), kTensorAlignment);
  std::vector<uint8_t> out(data_offset + data.size(), 0);
  std::memcpy(out.data(), kMagic, 4);
  bool v2 = header.architecture() != kArchGraph || header.has_lm();
  for (const model::TensorInfo& t : header.tensors()) {
    v2 = v2 || t.dtype() == model::F16 || t.dtype() == model::I8;
  }
  uint32_t version = v2 ? 2 : 1;
  for (const model::Op& op : header.graph().ops()) {
    version = std::max(version, OpFormatVersion(op.type()));
  }
  WriteU32(out.data() + 4, version);
  WriteU32(out.data() + 8, static_cast<uint32_t>(header_bytes.size()));
  WriteU32(out.data() + 12, 0);
  std::memcpy(out.data() + kPreambleSize, header_bytes.data(),
              header_bytes.size());
  if (!data.empty()) {
    std::memcpy(out.data() + data_offset, data.data(), data.size());
  }
  Result<ModelFile> check = ModelFile::Parse(out, "model being written");
  if (!check.ok()) return check.status();
  return out;
}

}  // namespace

Result<std::vector<uint8_t>> ModelWriter::Finish() {
  data_.resize(AlignUp(data_.size(), kTensorAlignment), 0);
  header_.set_data_length(data_.size());
  return Assemble(header_, data_);
}

Result<std::vector<uint8_t>> ModelWriter::ReplaceHeader(
    const ModelFile& file, const model::ModelHeader& header) {
  return Assemble(
      header, std::span<const uint8_t>(file.bytes_.data() + file.data_offset(),
                                       file.header().data_length()));
}

}  // namespace ternd::runtime
