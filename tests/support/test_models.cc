#include "tests/support/test_models.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "runtime/ternary_pack.h"

namespace ternd::testing {

std::vector<int8_t> Rng::Ternary(size_t count) {
  std::vector<int8_t> w(count);
  for (int8_t& v : w) v = static_cast<int8_t>(Int(-1, 1));
  return w;
}

std::vector<float> Rng::Floats(size_t count, float lo, float hi) {
  std::vector<float> v(count);
  for (float& x : v) x = Uniform(lo, hi);
  return v;
}

Result<Loaded> LoadModel(std::vector<uint8_t> bytes, const std::string& kernel,
                         int workers) {
  Loaded out;
  TERND_ASSIGN_OR_RETURN(runtime::ModelFile file,
                         runtime::ModelFile::Parse(std::move(bytes), "test"));
  out.file = std::make_unique<runtime::ModelFile>(std::move(file));
  runtime::RuntimeOptions options;
  options.slots = 1;
  options.workers = workers;
  options.kernel = kernel;
  options.arena_bytes = out.file->file_size() * 4 + (size_t{8} << 20);
  TERND_ASSIGN_OR_RETURN(out.runtime, runtime::Runtime::Create(options));
  TERND_ASSIGN_OR_RETURN(out.model, out.runtime->Load(0, *out.file));
  return out;
}

std::vector<Eigen::MatrixXf> RunModel(
    const runtime::LoadedModel& model,
    const std::vector<Eigen::MatrixXf>& inputs) {
  runtime::Executor ex = model.executor(0);
  const int batch = static_cast<int>(inputs[0].rows());
  for (int i = 0; i < model.num_inputs(); ++i) {
    for (int b = 0; b < batch; ++b) {
      for (int f = 0; f < static_cast<int>(model.input_info(i).features); ++f) {
        ex.input(i)[b * model.input_info(i).features + f] = inputs[i](b, f);
      }
    }
  }
  Status s = ex.Invoke(batch);
  if (!s.ok()) {
    std::fprintf(stderr, "Invoke failed: %s\n", s.message());
    std::abort();
  }
  std::vector<Eigen::MatrixXf> out;
  for (int o = 0; o < model.num_outputs(); ++o) {
    const runtime::IoInfo& info = model.output_info(o);
    Eigen::MatrixXf m(batch, info.features);
    for (int b = 0; b < batch; ++b) {
      for (int f = 0; f < static_cast<int>(info.features); ++f) {
        const size_t j = static_cast<size_t>(b) * info.features + f;
        m(b, f) = info.dtype == model::I32
                      ? static_cast<float>(ex.output_i32(o)[j])
                      : ex.output_f32(o)[j];
      }
    }
    out.push_back(std::move(m));
  }
  return out;
}

Eigen::VectorXi ReferenceQuantize(const Eigen::VectorXf& x, float* dequant) {
  const float amax = x.cwiseAbs().maxCoeff();
  if (amax == 0.0f) {
    *dequant = 0.0f;
    return Eigen::VectorXi::Zero(x.size());
  }
  const float inv = 127.0f / amax;
  *dequant = amax / 127.0f;
  return (x * inv).unaryExpr([](float v) {
    // Round half to even, then clamp to int8.
    float r = std::nearbyint(v);
    return static_cast<int>(std::clamp(r, -128.0f, 127.0f));
  });
}

Eigen::MatrixXi TernaryMatrix(const runtime::TensorView& t) {
  const size_t n = t.info->shape(0), k = t.info->shape(1);
  Eigen::MatrixXi m(n, k);
  const size_t row_bytes = runtime::TernaryRowBytes(k);
  for (size_t r = 0; r < n; ++r) {
    for (size_t c = 0; c < k; ++c) {
      m(r, c) = runtime::TernaryCode(t.bytes.data() + r * row_bytes, c) - 1;
    }
  }
  return m;
}

namespace {

Eigen::VectorXf F32Vector(const runtime::TensorView& t) {
  Eigen::VectorXf v(t.bytes.size() / 4);
  std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
  return v;
}

Eigen::MatrixXf F32Matrix(const runtime::TensorView& t) {
  const size_t n = t.info->shape(0), k = t.info->shape(1);
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> m(n, k);
  std::memcpy(m.data(), t.bytes.data(), t.bytes.size());
  return m;
}

}  // namespace

std::map<std::string, Eigen::MatrixXf> ReferenceRun(
    const runtime::ModelFile& file, const std::vector<Eigen::MatrixXf>& inputs,
    ReferenceMode mode) {
  std::map<std::string, Eigen::MatrixXf> v;
  const model::Graph& g = file.header().graph();
  for (int i = 0; i < g.inputs_size(); ++i) v[g.inputs(i).name()] = inputs[i];
  for (const model::Op& op : g.ops()) {
    const Eigen::MatrixXf& x = v.at(op.inputs(0));
    const runtime::TensorView* w =
        op.weight().empty() ? nullptr : file.FindTensor(op.weight());
    const runtime::TensorView* b =
        op.bias().empty() ? nullptr : file.FindTensor(op.bias());
    Eigen::MatrixXf y;
    switch (op.type()) {
      case model::TERNARY_LINEAR: {
        const Eigen::MatrixXi wi = TernaryMatrix(*w);
        Eigen::VectorXf scale(wi.rows());
        for (int r = 0; r < wi.rows(); ++r) {
          scale(r) = w->info->scale(w->info->scale_size() == 1 ? 0 : r);
        }
        y.resize(x.rows(), wi.rows());
        for (int row = 0; row < x.rows(); ++row) {
          if (mode == ReferenceMode::kFloat) {
            const Eigen::MatrixXf wf = scale.asDiagonal() * wi.cast<float>();
            y.row(row) = (wf * x.row(row).transpose()).transpose();
          } else {
            float dequant = 0;
            const Eigen::VectorXi q =
                ReferenceQuantize(x.row(row).transpose(), &dequant);
            const Eigen::VectorXi acc = wi * q;  // exact int32 product
            for (int r = 0; r < wi.rows(); ++r) {
              y(row, r) = static_cast<float>(acc(r)) * (scale(r) * dequant);
            }
          }
        }
        if (b) y.rowwise() += F32Vector(*b).transpose();
        break;
      }
      case model::LINEAR:
        y = x * F32Matrix(*w).transpose();
        if (b) y.rowwise() += F32Vector(*b).transpose();
        break;
      case model::RMS_NORM: {
        const Eigen::VectorXf gain = F32Vector(*w);
        y.resize(x.rows(), x.cols());
        for (int r = 0; r < x.rows(); ++r) {
          const float rms =
              std::sqrt(x.row(r).squaredNorm() / x.cols() + op.eps());
          y.row(r) = (x.row(r) / rms).cwiseProduct(gain.transpose());
        }
        break;
      }
      case model::LAYER_NORM: {
        const Eigen::VectorXf gain = F32Vector(*w);
        y.resize(x.rows(), x.cols());
        for (int r = 0; r < x.rows(); ++r) {
          const float mean = x.row(r).mean();
          const Eigen::RowVectorXf c = x.row(r).array() - mean;
          const float sd = std::sqrt(c.squaredNorm() / x.cols() + op.eps());
          y.row(r) = (c / sd).cwiseProduct(gain.transpose());
          if (b) y.row(r) += F32Vector(*b).transpose();
        }
        break;
      }
      case model::RELU:
        y = x.cwiseMax(0.0f);
        break;
      case model::RELU2:
        y = x.cwiseMax(0.0f).array().square();
        break;
      case model::SILU:
        y = x.array() / (1.0f + (-x.array()).exp());
        break;
      case model::GELU:
        y = x.unaryExpr([](float a) {
          return static_cast<float>(0.5 * a *
                                    (1.0 + std::erf(a / std::sqrt(2.0))));
        });
        break;
      case model::ADD:
        y = x + v.at(op.inputs(1));
        break;
      case model::SOFTMAX: {
        y.resize(x.rows(), x.cols());
        for (int r = 0; r < x.rows(); ++r) {
          Eigen::RowVectorXf e = (x.row(r).array() - x.row(r).maxCoeff()).exp();
          y.row(r) = e / e.sum();
        }
        break;
      }
      case model::ARGMAX: {
        y.resize(x.rows(), 1);
        for (int r = 0; r < x.rows(); ++r) {
          Eigen::Index idx;
          x.row(r).maxCoeff(&idx);
          y(r, 0) = static_cast<float>(idx);
        }
        break;
      }
      default:
        std::abort();
    }
    v[op.output()] = std::move(y);
  }
  return v;
}

}  // namespace ternd::testing
