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

}  // namespace

const char* DTypeName(model::DType dtype) {
  switch (dtype) {
    case model::F32:
      return "F32";
    case model::I32:
      return "I32";
    case model::TERNARY2:
      return "TERNARY2";
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
    default:
      return "UNSPECIFIED";
  }
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
  if (version != kFormatVersion) {
    return InvalidArgument(
        "format version %u at offset 4 is not supported (this ternd reads "
        "version %u)%s",
        version, kFormatVersion,
        version > kFormatVersion ? "; upgrade ternd" : "");
  }
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
  if (header_->architecture() != "graph") {
    return InvalidArgument("architecture is %s, expected 'graph'",
                           Quote(header_->architecture()).c_str());
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
    if (t.dtype() == model::TERNARY2) {
      if (t.scale_size() != 1 &&
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
          "tensor '%s' (#%d): only TERNARY2 tensors have scales, this %s "
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
    values_.push_back(ValueShape{name, dtype, static_cast<uint32_t>(features)});
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
  }

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
    const int want_inputs = op.type() == model::ADD ? 2 : 1;
    if (op.inputs_size() != want_inputs) {
      return InvalidArgument("graph: %s has %d inputs, expected %d", what,
                             op.inputs_size(), want_inputs);
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
    switch (op.type()) {
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

Result<std::vector<uint8_t>> ModelWriter::Finish() {
  data_.resize(AlignUp(data_.size(), kTensorAlignment), 0);
  header_.set_data_length(data_.size());
  std::string header_bytes;
  if (!header_.SerializeToString(&header_bytes)) {
    return Internal("cannot serialize the model header");
  }
  if (header_bytes.size() > kMaxHeaderBytes) {
    return ResourceExhausted("model header is %zu bytes, over the limit of %zu",
                             header_bytes.size(), kMaxHeaderBytes);
  }
  const uint64_t data_offset =
      AlignUp(kPreambleSize + header_bytes.size(), kTensorAlignment);
  std::vector<uint8_t> out(data_offset + data_.size(), 0);
  std::memcpy(out.data(), kMagic, 4);
  WriteU32(out.data() + 4, kFormatVersion);
  WriteU32(out.data() + 8, static_cast<uint32_t>(header_bytes.size()));
  WriteU32(out.data() + 12, 0);
  std::memcpy(out.data() + kPreambleSize, header_bytes.data(),
              header_bytes.size());
  if (!data_.empty()) {
    std::memcpy(out.data() + data_offset, data_.data(), data_.size());
  }
  Result<ModelFile> check = ModelFile::Parse(out, "model being written");
  if (!check.ok()) return check.status();
  return out;
}

}  // namespace ternd::runtime
