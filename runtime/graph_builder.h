// Builds graph models in C++: a thin layer over ModelWriter that keeps track
// of value widths, names weight tensors after their op ("fc1" -> "fc1.weight",
// "fc1.bias") and can compute the golden pair by running the model.
//
// Used by the demo model generator and the tests; the Python toolkit is the
// usual way to make models from trained networks.
#ifndef TERND_RUNTIME_GRAPH_BUILDER_H_
#define TERND_RUNTIME_GRAPH_BUILDER_H_

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "runtime/model.pb.h"

namespace ternd::runtime {

class GraphBuilder {
 public:
  GraphBuilder(std::string name, uint64_t version, uint32_t max_batch);

  // Each op method defines a value called `name` and returns `name`.
  // REQUIRES: inputs exist and weight sizes match (checked; a mismatch is a
  // programming error and aborts).
  std::string Input(const std::string& name, uint32_t features);
  // An input with a per-sample shape, channels last ([H, W, C], [L, C]).
  std::string Input(const std::string& name, std::vector<uint32_t> dims);

  // The convolutional family (format version 3). `window` has one entry
  // per spatial dimension (2 for 2-D ops, 1 for 1-D ones); so do stride,
  // padding and dilation when given (empty: 1, 0, 1).
  struct Window {
    std::vector<uint32_t> kernel;
    std::vector<uint32_t> stride = {};
    std::vector<uint32_t> padding = {};
    std::vector<uint32_t> dilation = {};
  };
  // CONV2D (input [H, W, C]) or CONV1D (input [L, C]): `w` is
  // c_out * patch values in {-1, 0, +1}, row n holding output channel n's
  // window in (kh, kw, c) order; `scales` 1 or c_out values; `bias` empty or
  // c_out values.
  std::string Conv(model::OpType type, const std::string& in,
                   const std::string& name, uint32_t c_out,
                   const Window& window, std::span<const int8_t> w,
                   std::span<const float> scales,
                   std::span<const float> bias = {});
  // `w` is KH * KW * C floats ([KH, KW, C]).
  std::string DepthwiseConv2d(const std::string& in, const std::string& name,
                              const Window& window, std::span<const float> w,
                              std::span<const float> bias = {});
  // MAX_POOL or AVG_POOL (no dilation).
  std::string Pool(model::OpType type, const std::string& in,
                   const std::string& name, const Window& window);
  std::string GlobalAvgPool(const std::string& in, const std::string& name);
  std::string Reshape(const std::string& in, const std::string& name,
                      std::vector<uint32_t> dims);
  std::string Concat(const std::vector<std::string>& ins,
                     const std::string& name);
  // AUDIO_FEATURES of `in` (samples): [frames, mel_bins]; `gain` and `bias`
  // empty or mel_bins values.
  std::string AudioFeatures(const std::string& in, const std::string& name,
                            const model::AudioFeatures& params,
                            std::span<const float> gain = {},
                            std::span<const float> bias = {});
  // `w` is n * features(in) values in {-1, 0, +1}; `scales` 1 or n values;
  // `bias` empty or n values.
  std::string TernaryLinear(const std::string& in, const std::string& name,
                            uint32_t n, std::span<const int8_t> w,
                            std::span<const float> scales,
                            std::span<const float> bias = {});
  std::string Linear(const std::string& in, const std::string& name, uint32_t n,
                     std::span<const float> w,
                     std::span<const float> bias = {});
  std::string RmsNorm(const std::string& in, const std::string& name,
                      std::span<const float> gain, float eps);
  std::string LayerNorm(const std::string& in, const std::string& name,
                        std::span<const float> gain,
                        std::span<const float> bias, float eps);
  // RELU, RELU2, SILU, GELU, SOFTMAX or ARGMAX.
  std::string Unary(model::OpType type, const std::string& in,
                    const std::string& name);
  std::string Add(const std::string& a, const std::string& b,
                  const std::string& name);
  void Output(const std::string& value);

  void SetDescription(const std::string& text);
  void SetMetadata(const std::string& key, const std::string& value);
  uint32_t features(const std::string& value) const;
  const std::vector<uint32_t>& dims(const std::string& value) const;

  // The model without a golden pair.
  Result<std::vector<uint8_t>> Finish() const;
  // Runs the model on `inputs` (`batch` rows per graph input, inputs in
  // order, each row-major) with the reference kernel and stores inputs and
  // outputs as the golden pair with `tolerance`.
  Result<std::vector<uint8_t>> FinishWithGolden(
      const std::vector<std::vector<float>>& inputs, int batch,
      float tolerance) const;

 private:
  struct Tensor {
    std::string name;
    model::DType dtype;
    std::vector<uint64_t> shape;
    std::vector<float> f32;
    std::vector<int32_t> i32;
    std::vector<int8_t> ternary;
    std::vector<float> scales;
  };
  model::Op* AddOp(model::OpType type, const std::string& in,
                   const std::string& name, uint32_t out_features,
                   model::DType out_dtype);
  // Sets the op's window attributes; returns the output's spatial dims
  // (channels = `channels`).
  std::vector<uint32_t> SetWindow(model::Op* op, const std::string& in,
                                  const Window& window, uint32_t channels);
  void AddF32(const std::string& name, std::vector<uint64_t> shape,
              std::span<const float> values);
  Result<std::vector<uint8_t>> Write(const model::ModelHeader& header,
                                     const std::vector<Tensor>& extra) const;

  model::ModelHeader header_;
  std::vector<Tensor> tensors_;
  std::map<std::string, std::pair<model::DType, uint32_t>> values_;
  std::map<std::string, std::vector<uint32_t>> dims_;
};

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_GRAPH_BUILDER_H_
