// tern_trace: runs a .tern model in the C++ runtime and prints, as one JSON
// object, every intermediate value and the int32 accumulators of every
// ternary op, so the Python tests can compare PyTorch with the runtime bit
// for bit.
//
//   tern_trace MODEL.tern ROWS.f32 [KERNEL]
//   tern_trace --kernels        the kernel variants this CPU runs, one a line
//
// ROWS.f32 holds the input rows as raw little-endian float32 (batch rows of
// the model's input features; single-input models). KERNEL is "auto" by
// default.
//
// How: the model's header is rewritten so that every op output is also a
// graph output (the tensors are untouched; the golden pair is dropped), and
// the real Runtime runs it.
// For each TERNARY_LINEAR op the tool then quantizes the runtime's own input
// to that op, runs the runtime's kernel and DequantizeRows, and checks that
// the result equals the runtime's output of the op bit for bit before it
// prints the accumulators: so the accumulators printed are the runtime's.
//
// Output: {"kernel": name, "rows": B,
//          "values": {name: [B*features numbers]},   F32 as uint32 bit patterns
//          "ternary": [{"op": i, "output": name, "n": N, "k": K,
//                       "q": [B*K], "dequant": [B bit patterns],
//                       "acc": [B*N]}]}
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/file.h"
#include "runtime/format.h"
#include "runtime/kernels/kernels.h"
#include "runtime/ops.h"
#include "runtime/runtime.h"

namespace {

using ternd::Result;
using ternd::Status;
namespace rt = ternd::runtime;
namespace model = ternd::model;

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "tern_trace: %s\n", msg.c_str());
  std::exit(1);
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// The file with every op output listed as a graph output.
std::vector<uint8_t> ExposeAllValues(const std::vector<uint8_t>& bytes,
                                     const rt::ModelFile& file) {
  model::ModelHeader h = file.header();
  h.clear_golden();  // it names only the original outputs
  model::Graph* g = h.mutable_graph();
  for (const model::Op& op : file.header().graph().ops()) {
    bool listed = false;
    for (const model::ValueInfo& v : g->outputs())
      listed |= v.name() == op.output();
    if (listed) continue;
    const rt::ValueShape* shape = file.FindValue(op.output());
    model::ValueInfo* v = g->add_outputs();
    v->set_name(op.output());
    v->set_dtype(shape->dtype);
    v->add_shape(shape->features);
  }
  uint32_t old_len;
  std::memcpy(&old_len, bytes.data() + 8, 4);  // little-endian host
  const size_t old_data = (rt::kPreambleSize + old_len + 63) / 64 * 64;
  std::string header;
  if (!h.SerializeToString(&header)) Die("cannot serialize the header");
  const size_t new_data = (rt::kPreambleSize + header.size() + 63) / 64 * 64;
  std::vector<uint8_t> out(new_data + (bytes.size() - old_data), 0);
  std::memcpy(out.data(), bytes.data(), rt::kPreambleSize);
  const uint32_t len = static_cast<uint32_t>(header.size());
  std::memcpy(out.data() + 8, &len, 4);
  std::memcpy(out.data() + rt::kPreambleSize, header.data(), header.size());
  std::memcpy(out.data() + new_data, bytes.data() + old_data,
              bytes.size() - old_data);
  return out;
}

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
template <typename T>
std::unique_ptr<T[], AlignedFree> Aligned(size_t count) {
  size_t bytes = (count * sizeof(T) + 63) / 64 * 64;
  return std::unique_ptr<T[], AlignedFree>(
      static_cast<T*>(std::aligned_alloc(64, bytes ? bytes : 64)));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--kernels") == 0) {
    for (const rt::TernaryKernel* k : rt::AllTernaryKernels()) {
      if (k->supported()) std::printf("%s\n", k->name);
    }
    return 0;
  }
  if (argc < 3 || argc > 4) {
    std::fprintf(
        stderr, "usage: tern_trace MODEL.tern ROWS.f32 [KERNEL] | --kernels\n");
    return 2;
  }
  Result<std::vector<uint8_t>> bytes = ternd::ReadFile(argv[1]);
  if (!bytes.ok()) Die(bytes.status().message());
  Result<rt::ModelFile> original = rt::ModelFile::Parse(*bytes, argv[1]);
  if (!original.ok()) Die(original.status().message());
  Result<rt::ModelFile> file =
      rt::ModelFile::Parse(ExposeAllValues(*bytes, *original), "traced model");
  if (!file.ok()) Die(file.status().message());
  const model::Graph& g = file->header().graph();
  if (g.inputs_size() != 1) Die("only single-input models are supported");

  Result<std::vector<uint8_t>> raw = ternd::ReadFile(argv[2]);
  if (!raw.ok()) Die(raw.status().message());
  const size_t features = file->FindValue(g.inputs(0).name())->features;
  if (raw->empty() || raw->size() % (4 * features) != 0) {
    Die("input file size is not a whole number of rows of " +
        std::to_string(features) + " float32");
  }
  const int rows = static_cast<int>(raw->size() / (4 * features));
  std::vector<float> input(raw->size() / 4);
  std::memcpy(input.data(), raw->data(), raw->size());

  rt::RuntimeOptions ro;
  ro.arena_bytes = size_t{64} << 20;
  ro.slots = 1;
  ro.kernel = argc == 4 ? argv[3] : "auto";
  Result<std::unique_ptr<rt::Runtime>> runtime = rt::Runtime::Create(ro);
  if (!runtime.ok()) Die(runtime.status().message());
  Result<const rt::LoadedModel*> loaded = (*runtime)->Load(0, *file);
  if (!loaded.ok()) Die(loaded.status().message());
  const rt::LoadedModel& m = **loaded;
  const rt::TernaryKernel& kernel = (*runtime)->kernel();

  // Every value, all rows: graph input first, then the runtime's outputs.
  std::map<std::string, std::vector<float>> f32;
  std::map<std::string, std::vector<int32_t>> i32;
  f32[g.inputs(0).name()] = input;
  rt::Executor ex = m.executor(0);
  for (int b0 = 0; b0 < rows; b0 += m.max_batch()) {
    const int nb = std::min(m.max_batch(), rows - b0);
    std::memcpy(ex.input(0), input.data() + static_cast<size_t>(b0) * features,
                sizeof(float) * features * nb);
    Status s = ex.Invoke(nb);
    if (!s.ok()) Die(s.message());
    for (int o = 0; o < m.num_outputs(); ++o) {
      const rt::IoInfo& info = m.output_info(o);
      const size_t count = static_cast<size_t>(nb) * info.features;
      if (info.dtype == model::I32) {
        auto& v = i32[info.name];
        v.insert(v.end(), ex.output_i32(o), ex.output_i32(o) + count);
      } else {
        auto& v = f32[info.name];
        v.insert(v.end(), ex.output_f32(o), ex.output_f32(o) + count);
      }
    }
  }

  std::printf("{\"kernel\":\"%s\",\"rows\":%d,\"values\":{", kernel.name, rows);
  bool first = true;
  for (const auto& [name, v] : f32) {
    std::printf("%s\"%s\":[", first ? "" : ",", name.c_str());
    for (size_t i = 0; i < v.size(); ++i)
      std::printf(i ? ",%u" : "%u", Bits(v[i]));
    std::printf("]");
    first = false;
  }
  for (const auto& [name, v] : i32) {
    std::printf("%s\"%s\":[", first ? "" : ",", name.c_str());
    for (size_t i = 0; i < v.size(); ++i) std::printf(i ? ",%d" : "%d", v[i]);
    std::printf("]");
    first = false;
  }
  std::printf("},\"ternary\":[");

  bool first_op = true;
  for (int i = 0; i < g.ops_size(); ++i) {
    const model::Op& op = g.ops(i);
    if (op.type() != model::TERNARY_LINEAR) continue;
    const rt::TensorView* w = file->FindTensor(op.weight());
    const size_t n = w->info->shape(0), k = w->info->shape(1);
    auto packed = Aligned<uint8_t>(kernel.packed_size(n, k));
    kernel.pack(w->bytes.data(), n, k, packed.get());
    std::vector<float> scales(w->info->scale().begin(), w->info->scale().end());
    std::vector<float> bias;
    if (!op.bias().empty()) {
      const rt::TensorView* b = file->FindTensor(op.bias());
      bias.resize(n);
      std::memcpy(bias.data(), b->bytes.data(), 4 * n);
    }
    const std::vector<float>& x = f32.at(op.inputs(0));
    const std::vector<float>& want = f32.at(op.output());
    const size_t stride = rt::ActivationStride(k);
    auto q = Aligned<int8_t>(stride * rt::kMaxKernelBatch);
    auto acc = Aligned<int32_t>(n * rt::kMaxKernelBatch);
    int32_t sums[rt::kMaxKernelBatch];
    float dequant[rt::kMaxKernelBatch];
    std::vector<float> y(n * rt::kMaxKernelBatch);
    std::vector<int> all_q;
    std::vector<int32_t> all_acc;
    std::vector<float> all_dequant;
    for (int b0 = 0; b0 < rows; b0 += rt::kMaxKernelBatch) {
      const int nb = std::min(rt::kMaxKernelBatch, rows - b0);
      rt::QuantizeActivations(x.data() + b0 * k, k, nb, k, q.get(), stride,
                              sums, dequant);
      const rt::QuantizedActivations qa{q.get(), stride, sums, nb, k};
      kernel.gemm(packed.get(), n, k, qa, acc.get(), n);
      rt::DequantizeRows(acc.get(), n, nb, n, scales.data(), scales.size() > 1,
                         dequant, bias.empty() ? nullptr : bias.data(),
                         y.data(), n);
      for (int b = 0; b < nb; ++b) {
        for (size_t j = 0; j < n; ++j) {
          const float got = want[(b0 + b) * n + j];
          if (Bits(got) != Bits(y[b * n + j])) {
            Die("op #" + std::to_string(i) + " row " + std::to_string(b0 + b) +
                ": recomputed output differs from the runtime's");
          }
          all_acc.push_back(acc[b * n + j]);
        }
        for (size_t c = 0; c < k; ++c) all_q.push_back(q[b * stride + c]);
        all_dequant.push_back(dequant[b]);
      }
    }
    std::printf("%s{\"op\":%d,\"output\":\"%s\",\"n\":%zu,\"k\":%zu,\"q\":[",
                first_op ? "" : ",", i, op.output().c_str(), n, k);
    for (size_t j = 0; j < all_q.size(); ++j)
      std::printf(j ? ",%d" : "%d", all_q[j]);
    std::printf("],\"dequant\":[");
    for (size_t j = 0; j < all_dequant.size(); ++j) {
      std::printf(j ? ",%u" : "%u", Bits(all_dequant[j]));
    }
    std::printf("],\"acc\":[");
    for (size_t j = 0; j < all_acc.size(); ++j)
      std::printf(j ? ",%d" : "%d", all_acc[j]);
    std::printf("]}");
    first_op = false;
  }
  std::printf("]}\n");
  return 0;
}
