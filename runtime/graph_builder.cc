#include "runtime/graph_builder.h"

#include <memory>

#include "base/check.h"
#include "runtime/format.h"
#include "runtime/runtime.h"

namespace ternd::runtime {

GraphBuilder::GraphBuilder(std::string name, uint64_t version,
                           uint32_t max_batch) {
  header_.set_name(std::move(name));
  header_.set_version(version);
  header_.set_architecture("graph");
  header_.mutable_graph()->set_max_batch(max_batch);
}

uint32_t GraphBuilder::features(const std::string& value) const {
  auto it = values_.find(value);
  TERND_CHECK(it != values_.end());
  return it->second.second;
}

std::string GraphBuilder::Input(const std::string& name, uint32_t features) {
  TERND_CHECK(!values_.count(name));
  model::ValueInfo* in = header_.mutable_graph()->add_inputs();
  in->set_name(name);
  in->set_dtype(model::F32);
  in->add_shape(features);
  values_[name] = {model::F32, features};
  dims_[name] = {features};
  return name;
}

std::string GraphBuilder::Input(const std::string& name,
                                std::vector<uint32_t> dims) {
  TERND_CHECK(!values_.count(name) && !dims.empty());
  model::ValueInfo* in = header_.mutable_graph()->add_inputs();
  in->set_name(name);
  in->set_dtype(model::F32);
  uint32_t features = 1;
  for (uint32_t d : dims) {
    in->add_shape(d);
    features *= d;
  }
  values_[name] = {model::F32, features};
  dims_[name] = std::move(dims);
  return name;
}

const std::vector<uint32_t>& GraphBuilder::dims(
    const std::string& value) const {
  auto it = dims_.find(value);
  TERND_CHECK(it != dims_.end());
  return it->second;
}

std::vector<uint32_t> GraphBuilder::SetWindow(model::Op* op,
                                              const std::string& in,
                                              const Window& window,
                                              uint32_t channels) {
  const std::vector<uint32_t>& d = dims(in);
  const size_t rank = window.kernel.size();
  TERND_CHECK(d.size() == rank + 1);
  std::vector<uint32_t> out;
  for (size_t j = 0; j < rank; ++j) {
    auto at = [&](const std::vector<uint32_t>& v, uint32_t dflt) {
      return v.empty() ? dflt : v[j];
    };
    const uint32_t k = window.kernel[j], s = at(window.stride, 1),
                   p = at(window.padding, 0), dl = at(window.dilation, 1);
    TERND_CHECK(d[j] + 2 * p >= dl * (k - 1) + 1);
    out.push_back((d[j] + 2 * p - dl * (k - 1) - 1) / s + 1);
  }
  out.push_back(channels);
  for (uint32_t v : window.kernel) op->add_kernel(v);
  for (uint32_t v : window.stride) op->add_stride(v);
  for (uint32_t v : window.padding) op->add_padding(v);
  for (uint32_t v : window.dilation) op->add_dilation(v);
  return out;
}

namespace {
uint32_t Product(const std::vector<uint32_t>& d) {
  uint32_t f = 1;
  for (uint32_t v : d) f *= v;
  return f;
}
}  // namespace

std::string GraphBuilder::Conv(model::OpType type, const std::string& in,
                               const std::string& name, uint32_t c_out,
                               const Window& window, std::span<const int8_t> w,
                               std::span<const float> scales,
                               std::span<const float> bias) {
  TERND_CHECK(type == model::CONV2D || type == model::CONV1D);
  const std::vector<uint32_t> in_dims = dims(in);
  uint32_t patch = in_dims.back();
  for (uint32_t k : window.kernel) patch *= k;
  TERND_CHECK(w.size() == static_cast<size_t>(c_out) * patch);
  TERND_CHECK(scales.size() == 1 || scales.size() == c_out);
  TERND_CHECK(bias.empty() || bias.size() == c_out);
  model::Op* op = AddOp(type, in, name, 0, model::F32);
  std::vector<uint32_t> out = SetWindow(op, in, window, c_out);
  values_[name].second = Product(out);
  dims_[name] = out;
  op->set_weight(name + ".weight");
  Tensor t;
  t.name = name + ".weight";
  t.dtype = model::TERNARY2;
  t.shape = {c_out, patch};
  t.ternary.assign(w.begin(), w.end());
  t.scales.assign(scales.begin(), scales.end());
  tensors_.push_back(std::move(t));
  if (!bias.empty()) {
    op->set_bias(name + ".bias");
    AddF32(name + ".bias", {c_out}, bias);
  }
  return name;
}

std::string GraphBuilder::DepthwiseConv2d(const std::string& in,
                                          const std::string& name,
                                          const Window& window,
                                          std::span<const float> w,
                                          std::span<const float> bias) {
  const uint32_t c = dims(in).back();
  TERND_CHECK(window.kernel.size() == 2);
  TERND_CHECK(w.size() ==
              static_cast<size_t>(window.kernel[0]) * window.kernel[1] * c);
  TERND_CHECK(bias.empty() || bias.size() == c);
  model::Op* op = AddOp(model::DEPTHWISE_CONV2D, in, name, 0, model::F32);
  std::vector<uint32_t> out = SetWindow(op, in, window, c);
  values_[name].second = Product(out);
  dims_[name] = out;
  op->set_weight(name + ".weight");
  AddF32(name + ".weight", {window.kernel[0], window.kernel[1], c}, w);
  if (!bias.empty()) {
    op->set_bias(name + ".bias");
    AddF32(name + ".bias", {c}, bias);
  }
  return name;
}

std::string GraphBuilder::Pool(model::OpType type, const std::string& in,
                               const std::string& name, const Window& window) {
  TERND_CHECK(type == model::MAX_POOL || type == model::AVG_POOL);
  model::Op* op = AddOp(type, in, name, 0, model::F32);
  std::vector<uint32_t> out = SetWindow(op, in, window, dims(in).back());
  values_[name].second = Product(out);
  dims_[name] = out;
  return name;
}

std::string GraphBuilder::GlobalAvgPool(const std::string& in,
                                        const std::string& name) {
  const uint32_t c = dims(in).back();
  AddOp(model::GLOBAL_AVG_POOL, in, name, c, model::F32);
  dims_[name] = {c};
  return name;
}

std::string GraphBuilder::Reshape(const std::string& in,
                                  const std::string& name,
                                  std::vector<uint32_t> dims) {
  TERND_CHECK(Product(dims) == features(in));
  model::Op* op = AddOp(model::RESHAPE, in, name, features(in), model::F32);
  for (uint32_t d : dims) op->add_shape(d);
  dims_[name] = std::move(dims);
  return name;
}

std::string GraphBuilder::Concat(const std::vector<std::string>& ins,
                                 const std::string& name) {
  TERND_CHECK(ins.size() >= 2);
  std::vector<uint32_t> out = dims(ins[0]);
  uint32_t channels = 0;
  for (const std::string& in : ins) channels += dims(in).back();
  out.back() = channels;
  model::Op* op = AddOp(model::CONCAT, ins[0], name, Product(out), model::F32);
  for (size_t i = 1; i < ins.size(); ++i) op->add_inputs(ins[i]);
  dims_[name] = out;
  return name;
}

std::string GraphBuilder::AudioFeatures(const std::string& in,
                                        const std::string& name,
                                        const model::AudioFeatures& params,
                                        std::span<const float> gain,
                                        std::span<const float> bias) {
  const uint32_t samples = features(in);
  TERND_CHECK(params.frame_length() <= samples && params.frame_step() > 0);
  const uint32_t frames =
      1 + (samples - params.frame_length()) / params.frame_step();
  model::Op* op = AddOp(model::AUDIO_FEATURES, in, name,
                        frames * params.mel_bins(), model::F32);
  *op->mutable_audio() = params;
  dims_[name] = {frames, params.mel_bins()};
  if (!gain.empty()) {
    op->set_weight(name + ".gain");
    AddF32(name + ".gain", {params.mel_bins()}, gain);
  }
  if (!bias.empty()) {
    op->set_bias(name + ".bias");
    AddF32(name + ".bias", {params.mel_bins()}, bias);
  }
  return name;
}

model::Op* GraphBuilder::AddOp(model::OpType type, const std::string& in,
                               const std::string& name, uint32_t out_features,
                               model::DType out_dtype) {
  TERND_CHECK(values_.count(in) && !values_.count(name));
  model::Op* op = header_.mutable_graph()->add_ops();
  op->set_type(type);
  op->add_inputs(in);
  op->set_output(name);
  values_[name] = {out_dtype, out_features};
  // Element-wise ops keep their input's shape; the others set their own.
  const bool flat = type == model::TERNARY_LINEAR || type == model::LINEAR ||
                    type == model::ARGMAX || !dims_.count(in);
  dims_[name] = flat ? std::vector<uint32_t>{out_features} : dims_.at(in);
  return op;
}

void GraphBuilder::AddF32(const std::string& name, std::vector<uint64_t> shape,
                          std::span<const float> values) {
  Tensor t;
  t.name = name;
  t.dtype = model::F32;
  t.shape = std::move(shape);
  t.f32.assign(values.begin(), values.end());
  tensors_.push_back(std::move(t));
}

std::string GraphBuilder::TernaryLinear(const std::string& in,
                                        const std::string& name, uint32_t n,
                                        std::span<const int8_t> w,
                                        std::span<const float> scales,
                                        std::span<const float> bias) {
  const uint32_t k = features(in);
  TERND_CHECK(w.size() == static_cast<size_t>(n) * k);
  TERND_CHECK(scales.size() == 1 || scales.size() == n);
  TERND_CHECK(bias.empty() || bias.size() == n);
  model::Op* op = AddOp(model::TERNARY_LINEAR, in, name, n, model::F32);
  op->set_weight(name + ".weight");
  Tensor t;
  t.name = name + ".weight";
  t.dtype = model::TERNARY2;
  t.shape = {n, k};
  t.ternary.assign(w.begin(), w.end());
  t.scales.assign(scales.begin(), scales.end());
  tensors_.push_back(std::move(t));
  if (!bias.empty()) {
    op->set_bias(name + ".bias");
    AddF32(name + ".bias", {n}, bias);
  }
  return name;
}

std::string GraphBuilder::Linear(const std::string& in, const std::string& name,
                                 uint32_t n, std::span<const float> w,
                                 std::span<const float> bias) {
  const uint32_t k = features(in);
  TERND_CHECK(w.size() == static_cast<size_t>(n) * k);
  TERND_CHECK(bias.empty() || bias.size() == n);
  model::Op* op = AddOp(model::LINEAR, in, name, n, model::F32);
  op->set_weight(name + ".weight");
  AddF32(name + ".weight", {n, k}, w);
  if (!bias.empty()) {
    op->set_bias(name + ".bias");
    AddF32(name + ".bias", {n}, bias);
  }
  return name;
}

std::string GraphBuilder::RmsNorm(const std::string& in,
                                  const std::string& name,
                                  std::span<const float> gain, float eps) {
  const uint32_t f = features(in);
  TERND_CHECK(gain.size() == f);
  model::Op* op = AddOp(model::RMS_NORM, in, name, f, model::F32);
  op->set_weight(name + ".weight");
  op->set_eps(eps);
  AddF32(name + ".weight", {f}, gain);
  return name;
}

std::string GraphBuilder::LayerNorm(const std::string& in,
                                    const std::string& name,
                                    std::span<const float> gain,
                                    std::span<const float> bias, float eps) {
  const uint32_t f = features(in);
  TERND_CHECK(gain.size() == f && (bias.empty() || bias.size() == f));
  model::Op* op = AddOp(model::LAYER_NORM, in, name, f, model::F32);
  op->set_weight(name + ".weight");
  op->set_eps(eps);
  AddF32(name + ".weight", {f}, gain);
  if (!bias.empty()) {
    op->set_bias(name + ".bias");
    AddF32(name + ".bias", {f}, bias);
  }
  return name;
}

std::string GraphBuilder::Unary(model::OpType type, const std::string& in,
                                const std::string& name) {
  const bool argmax = type == model::ARGMAX;
  AddOp(type, in, name, argmax ? 1 : features(in),
        argmax ? model::I32 : model::F32);
  return name;
}

std::string GraphBuilder::Add(const std::string& a, const std::string& b,
                              const std::string& name) {
  TERND_CHECK(values_.count(b));
  model::Op* op = AddOp(model::ADD, a, name, features(a), model::F32);
  op->add_inputs(b);
  return name;
}

void GraphBuilder::Output(const std::string& value) {
  auto it = values_.find(value);
  TERND_CHECK(it != values_.end());
  model::ValueInfo* out = header_.mutable_graph()->add_outputs();
  out->set_name(value);
  out->set_dtype(it->second.first);
  out->add_shape(it->second.second);
}

void GraphBuilder::SetDescription(const std::string& text) {
  header_.set_description(text);
}

void GraphBuilder::SetMetadata(const std::string& key,
                               const std::string& value) {
  (*header_.mutable_metadata())[key] = value;
}

Result<std::vector<uint8_t>> GraphBuilder::Write(
    const model::ModelHeader& header, const std::vector<Tensor>& extra) const {
  ModelWriter writer(header);
  auto add = [&writer](const Tensor& t) {
    switch (t.dtype) {
      case model::TERNARY2:
        writer.AddTernary(t.name, t.shape[0], t.shape[1], t.ternary, t.scales);
        break;
      case model::I32:
        writer.AddI32(t.name, t.shape, t.i32);
        break;
      default:
        writer.AddF32(t.name, t.shape, t.f32);
        break;
    }
  };
  for (const Tensor& t : tensors_) add(t);
  for (const Tensor& t : extra) add(t);
  return writer.Finish();
}

Result<std::vector<uint8_t>> GraphBuilder::Finish() const {
  model::ModelHeader header = header_;
  header.clear_golden();
  return Write(header, {});
}

Result<std::vector<uint8_t>> GraphBuilder::FinishWithGolden(
    const std::vector<std::vector<float>>& inputs, int batch,
    float tolerance) const {
  const model::Graph& g = header_.graph();
  if (static_cast<int>(inputs.size()) != g.inputs_size()) {
    return InvalidArgument("golden: %zu inputs given, the graph has %d",
                           inputs.size(), g.inputs_size());
  }
  TERND_ASSIGN_OR_RETURN(std::vector<uint8_t> plain, Finish());
  TERND_ASSIGN_OR_RETURN(ModelFile file,
                         ModelFile::Parse(std::move(plain), header_.name()));
  RuntimeOptions options;
  options.slots = 1;
  options.kernel = "ref";
  options.arena_bytes = file.file_size() * 4 + (size_t{16} << 20);
  TERND_ASSIGN_OR_RETURN(std::unique_ptr<Runtime> rt, Runtime::Create(options));
  TERND_ASSIGN_OR_RETURN(const LoadedModel* m, rt->Load(0, file));
  Executor ex = m->executor(0);
  std::vector<Tensor> golden;
  model::ModelHeader header = header_;
  model::GoldenPair* gp = header.mutable_golden();
  gp->set_tolerance(tolerance);
  for (int i = 0; i < g.inputs_size(); ++i) {
    const uint32_t f = m->input_info(i).features;
    if (inputs[i].size() != static_cast<size_t>(f) * batch) {
      return InvalidArgument(
          "golden: input '%s' has %zu values, expected %d x %u",
          m->input_info(i).name, inputs[i].size(), batch, f);
    }
    std::copy(inputs[i].begin(), inputs[i].end(), ex.input(i));
    Tensor t;
    t.name = std::string("golden.in.") + m->input_info(i).name;
    t.dtype = model::F32;
    t.shape = {static_cast<uint64_t>(batch), f};
    t.f32 = inputs[i];
    gp->add_input_tensors(t.name);
    golden.push_back(std::move(t));
  }
  TERND_RETURN_IF_ERROR(ex.Invoke(batch));
  for (int o = 0; o < g.outputs_size(); ++o) {
    const IoInfo& info = m->output_info(o);
    const size_t count = static_cast<size_t>(info.features) * batch;
    Tensor t;
    t.name = std::string("golden.out.") + info.name;
    t.dtype = info.dtype;
    t.shape = {static_cast<uint64_t>(batch), info.features};
    if (info.dtype == model::I32) {
      t.i32.assign(ex.output_i32(o), ex.output_i32(o) + count);
    } else {
      t.f32.assign(ex.output_f32(o), ex.output_f32(o) + count);
    }
    gp->add_output_tensors(t.name);
    golden.push_back(std::move(t));
  }
  return Write(header, golden);
}

}  // namespace ternd::runtime
