// `ternctl inspect FILE` and `ternctl run FILE`.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "runtime/format.h"
#include "runtime/runtime.h"
#include "tools/ternctl/commands.h"
#include "tools/ternctl/json_output.h"
#include "tools/ternctl/values.h"

namespace ternd::ternctl {
namespace {

using runtime::DTypeName;
using runtime::ModelFile;
using runtime::OpTypeName;

int Fail(const Status& s) {
  std::fprintf(stderr, "ternctl: %s\n", s.message());
  return 1;
}

std::string Shape(const google::protobuf::RepeatedField<uint64_t>& shape) {
  std::string s = "[";
  for (int i = 0; i < shape.size(); ++i) {
    s += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return s + "]";
}

std::string Shape(const google::protobuf::RepeatedField<uint32_t>& shape) {
  std::string s = "[";
  for (int i = 0; i < shape.size(); ++i) {
    s += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return s + "]";
}

int Inspect(const std::string& path) {
  Result<ModelFile> file = ModelFile::Open(path);
  if (!file.ok()) return Fail(file.status());
  const model::ModelHeader& h = file->header();
  const model::Graph& g = h.graph();
  std::printf("model        %s\n", h.name().c_str());
  std::printf("version      %llu\n",
              static_cast<unsigned long long>(h.version()));
  if (!h.description().empty()) {
    std::printf("description  %s\n", h.description().c_str());
  }
  std::printf("file         %s (%zu bytes, format %u, data %llu bytes)\n",
              path.c_str(), file->file_size(), runtime::kFormatVersion,
              static_cast<unsigned long long>(h.data_length()));
  std::printf("max batch    %u\n", g.max_batch());
  for (const model::ValueInfo& v : g.inputs()) {
    std::printf("input        %s %s %s\n", v.name().c_str(),
                DTypeName(v.dtype()), Shape(v.shape()).c_str());
  }
  for (const model::ValueInfo& v : g.outputs()) {
    std::printf("output       %s %s %s\n", v.name().c_str(),
                DTypeName(v.dtype()), Shape(v.shape()).c_str());
  }
  if (h.has_golden()) {
    const runtime::TensorView* t =
        file->FindTensor(h.golden().input_tensors(0));
    std::printf("golden       %llu rows, tolerance %g\n",
                static_cast<unsigned long long>(t->info->shape(0)),
                static_cast<double>(h.golden().tolerance()));
  } else {
    std::printf("golden       none (cannot be health-checked)\n");
  }
  std::printf("\ntensors (%d)\n", h.tensors_size());
  std::printf("  %-3s %-28s %-9s %-14s %10s %10s  %s\n", "#", "name", "dtype",
              "shape", "offset", "bytes", "scales");
  for (int i = 0; i < h.tensors_size(); ++i) {
    const model::TensorInfo& t = h.tensors(i);
    std::string scales;
    if (t.scale_size() == 1) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%g", static_cast<double>(t.scale(0)));
      scales = buf;
    } else if (t.scale_size() > 1) {
      scales = std::to_string(t.scale_size()) + " per row";
    }
    std::printf("  %-3d %-28s %-9s %-14s %10llu %10llu  %s\n", i,
                t.name().c_str(), DTypeName(t.dtype()),
                Shape(t.shape()).c_str(),
                static_cast<unsigned long long>(t.offset()),
                static_cast<unsigned long long>(t.length()), scales.c_str());
  }
  std::printf("\nops (%d)\n", g.ops_size());
  for (int i = 0; i < g.ops_size(); ++i) {
    const model::Op& op = g.ops(i);
    std::string ins;
    for (const std::string& in : op.inputs())
      ins += (ins.empty() ? "" : ", ") + in;
    std::printf("  %-3d %-15s %s -> %s", i, OpTypeName(op.type()), ins.c_str(),
                op.output().c_str());
    if (!op.weight().empty()) std::printf("  weight=%s", op.weight().c_str());
    if (!op.bias().empty()) std::printf("  bias=%s", op.bias().c_str());
    if (op.eps() != 0) std::printf("  eps=%g", static_cast<double>(op.eps()));
    auto list = [](const char* key,
                   const google::protobuf::RepeatedField<uint32_t>& v) {
      if (v.empty()) return;
      std::printf("  %s=", key);
      for (int j = 0; j < v.size(); ++j) std::printf(j ? "x%u" : "%u", v[j]);
    };
    list("kernel", op.kernel());
    list("stride", op.stride());
    list("padding", op.padding());
    list("dilation", op.dilation());
    // The output's per-sample shape (channels last for spatial values).
    const runtime::ValueShape* v = file->FindValue(op.output());
    std::string dims;
    for (uint32_t d : v->dims) {
      dims += (dims.empty() ? "" : ", ") + std::to_string(d);
    }
    std::printf("  [%s]\n", dims.c_str());
  }
  if (!h.metadata().empty()) {
    std::printf("\nmetadata\n");
    std::vector<std::pair<std::string, std::string>> kv(h.metadata().begin(),
                                                        h.metadata().end());
    std::sort(kv.begin(), kv.end());
    for (const auto& [k, v] : kv) {
      std::printf("  %s: %s\n", k.c_str(), v.c_str());
    }
  }
  return 0;
}

struct RunOptions {
  std::string path;
  std::string input_path;
  std::vector<std::string> values;
  bool golden = false;
  bool json = false;
  std::string kernel = "auto";
  size_t arena_mb = 256;
};

void PrintOutputs(const runtime::LoadedModel& m, const runtime::Executor& ex,
                  int batch) {
  for (int o = 0; o < m.num_outputs(); ++o) {
    const runtime::IoInfo& info = m.output_info(o);
    std::printf("%s (%s, %d x %u)\n", info.name, DTypeName(info.dtype), batch,
                info.features);
    for (int b = 0; b < batch; ++b) {
      std::printf("  ");
      for (uint32_t f = 0; f < info.features; ++f) {
        const size_t j = static_cast<size_t>(b) * info.features + f;
        const char* sep = f ? " " : "";
        if (info.dtype == model::I32) {
          std::printf("%s%d", sep, ex.output_i32(o)[j]);
        } else {
          std::printf("%s%.6g", sep, static_cast<double>(ex.output_f32(o)[j]));
        }
      }
      std::printf("\n");
    }
  }
}

// {"model":..,"version":..,"outputs":{"name":[[row],...],...}}; floats with
// the text output's 6 significant digits.
void PrintOutputsJson(const runtime::LoadedModel& m,
                      const runtime::Executor& ex, int batch) {
  Json outputs = Json::object();
  for (int o = 0; o < m.num_outputs(); ++o) {
    const runtime::IoInfo& info = m.output_info(o);
    Json rows = Json::array();
    for (int b = 0; b < batch; ++b) {
      Json row = Json::array();
      for (uint32_t f = 0; f < info.features; ++f) {
        const size_t j = static_cast<size_t>(b) * info.features + f;
        if (info.dtype == model::I32) {
          row.push_back(ex.output_i32(o)[j]);
        } else {
          row.push_back(JsonNumber(ex.output_f32(o)[j], 6));
        }
      }
      rows.push_back(std::move(row));
    }
    outputs[info.name] = std::move(rows);
  }
  PrintJson(Json{{"model", m.name()},
                 {"version", m.version()},
                 {"outputs", std::move(outputs)}});
}

int Run(const RunOptions& opt) {
  Result<ModelFile> file = ModelFile::Open(opt.path);
  if (!file.ok()) return Fail(file.status());
  runtime::RuntimeOptions ro;
  ro.arena_bytes = opt.arena_mb << 20;
  ro.slots = 1;
  ro.workers = 1;
  ro.kernel = opt.kernel;
  Result<std::unique_ptr<runtime::Runtime>> rt = runtime::Runtime::Create(ro);
  if (!rt.ok()) return Fail(rt.status());
  Result<const runtime::LoadedModel*> loaded = (*rt)->Load(0, *file);
  if (!loaded.ok()) return Fail(loaded.status());
  const runtime::LoadedModel& m = **loaded;

  if (opt.golden) {
    Status s = m.CheckGolden(0);
    if (!s.ok()) return Fail(s);
    std::printf("golden check passed: model '%s' version %llu, kernel %s\n",
                m.name(), static_cast<unsigned long long>(m.version()),
                m.kernel_name());
    return 0;
  }

  std::vector<float> values;
  std::string origin;
  if (!opt.values.empty()) {
    std::string text;
    for (const std::string& v : opt.values) text += v + " ";
    origin = "--values";
    Result<std::vector<float>> parsed = ParseValues(text, origin);
    if (!parsed.ok()) return Fail(parsed.status());
    values = std::move(*parsed);
  } else {
    origin = opt.input_path.empty() || opt.input_path == "-" ? "stdin"
                                                             : opt.input_path;
    Result<std::string> text =
        ReadText(opt.input_path.empty() ? "-" : opt.input_path);
    if (!text.ok()) return Fail(text.status());
    Result<std::vector<float>> parsed = ParseValues(*text, origin);
    if (!parsed.ok()) return Fail(parsed.status());
    values = std::move(*parsed);
  }
  size_t row = 0;
  for (int i = 0; i < m.num_inputs(); ++i) row += m.input_info(i).features;
  if (values.empty() || values.size() % row != 0 ||
      values.size() / row > static_cast<size_t>(m.max_batch())) {
    return Fail(InvalidArgument(
        "%s has %zu values; model '%s' takes rows of %zu values (one row per "
        "sample, inputs in order), 1 to %d rows",
        origin.c_str(), values.size(), m.name(), row, m.max_batch()));
  }
  const int batch = static_cast<int>(values.size() / row);
  runtime::Executor ex = m.executor(0);
  size_t at = 0;
  for (int b = 0; b < batch; ++b) {
    for (int i = 0; i < m.num_inputs(); ++i) {
      const uint32_t f = m.input_info(i).features;
      std::copy(values.begin() + at, values.begin() + at + f,
                ex.input(i) + static_cast<size_t>(b) * f);
      at += f;
    }
  }
  Status s = ex.Invoke(batch);
  if (!s.ok()) return Fail(s);
  if (opt.json) {
    PrintOutputsJson(m, ex, batch);
  } else {
    PrintOutputs(m, ex, batch);
  }
  return 0;
}

}  // namespace

void AddModelCommands(CLI::App& app, int* exit_code) {
  auto path = std::make_shared<std::string>();
  CLI::App* inspect = app.add_subcommand(
      "inspect", "Print a model file's header, tensors and ops");
  inspect->add_option("FILE", *path, "Model file (.tern)")->required();
  inspect->callback([path, exit_code] { *exit_code = Inspect(*path); });

  auto run = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand(
      "run", "Run a model file on input values and print its outputs");
  cmd->add_option("FILE", run->path, "Model file (.tern)")->required();
  auto* input =
      cmd->add_option("-i,--input", run->input_path,
                      "File of input values, '-' for stdin (the default)");
  auto* values = cmd->add_option("--values", run->values,
                                 "Input values on the command line")
                     ->expected(1, -1);
  auto* golden = cmd->add_flag(
      "--golden", run->golden,
      "Run the model's own golden input and check its golden output");
  input->excludes(values);
  golden->excludes(input)->excludes(values);
  cmd->add_flag("--json", run->json, "Print outputs as one JSON object");
  cmd->add_option("--kernel", run->kernel,
                  "Ternary kernel variant (auto, ref, ...)")
      ->capture_default_str();
  cmd->add_option("--arena-mb", run->arena_mb, "Arena size in MiB")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  cmd->callback([run, exit_code] { *exit_code = Run(*run); });
}

}  // namespace ternd::ternctl
