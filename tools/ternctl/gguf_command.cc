// `ternctl gguf-info MODEL.gguf [--json] [--check-data]`: what the GGUF
// importer sees in a language model file (docs/llm.md).
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "runtime/gguf/gguf_arch.h"
#include "runtime/gguf/gguf_decode.h"
#include "runtime/gguf/gguf_reader.h"
#include "tools/ternctl/commands.h"
#include "tools/ternctl/json_output.h"

namespace ternd::ternctl {
namespace {

using gguf::GgufFile;
using gguf::HyperParams;
using gguf::TensorInfo;

struct GgufInfoOptions {
  std::string path;
  bool json = false;
  bool check_data = false;
};

// Decodes every tensor of a supported type, one at a time.
Status CheckData(const GgufFile& f) {
  for (const TensorInfo& t : f.tensors()) {
    Status s;
    if (gguf::IsTernaryType(t.type)) {
      s = gguf::DecodeTernary(t).status();
    } else if (gguf::IsFloatDecodableType(t.type)) {
      s = gguf::DecodeFloat(t).status();
    }
    if (!s.ok()) return s.Prepend(f.origin());
  }
  return Status::Ok();
}

std::string Quoted(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 120)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return out;
}

int GgufInfo(const GgufInfoOptions& opt) {
  Result<GgufFile> file = GgufFile::Open(opt.path);
  if (!file.ok()) {
    if (opt.json) {
      PrintJson(Json{{"file", opt.path},
                     {"valid", false},
                     {"error", file.status().message()}});
    } else {
      std::fprintf(stderr, "ternctl: %s\n", file.status().message());
    }
    return 1;
  }
  const GgufFile& f = *file;
  std::map<std::string, int> types;
  for (const TensorInfo& t : f.tensors()) ++types[gguf::TensorTypeName(t.type)];
  Result<std::string_view> arch = f.GetString("general.architecture");
  Result<HyperParams> hp = gguf::ValidateModel(f);
  Status error = hp.status();
  if (hp.ok() && opt.check_data) error = CheckData(f);
  const bool valid = hp.ok() && error.ok();

  if (opt.json) {
    Json j{{"file", opt.path},
           {"size", f.file_size()},
           {"version", f.version()},
           {"alignment", f.alignment()},
           {"data_offset", f.data_offset()},
           {"keys", f.metadata().size()},
           {"tensors", f.tensors().size()},
           {"architecture", arch.ok() ? Json(Quoted(*arch)) : Json(nullptr)}};
    if (hp.ok()) {
      j["hyper_parameters"] =
          Json{{"layers", hp->layers},
               {"embedding_length", hp->embd},
               {"feed_forward_length", hp->ffn},
               {"head_count", hp->heads},
               {"head_count_kv", hp->kv_heads},
               {"head_dim", hp->head_dim},
               {"context_length", hp->context},
               {"vocab_size", hp->vocab},
               {"rope_freq_base", JsonNumber(hp->rope_freq_base, 7)},
               {"rms_epsilon", JsonNumber(hp->rms_eps, 7)},
               {"sub_norms", hp->sub_norms},
               {"tied_output", hp->tied_output}};
    } else {
      j["hyper_parameters"] = nullptr;
    }
    Json by_type = Json::object();
    for (const auto& [name, n] : types) by_type[name] = n;
    j["tensor_types"] = by_type;
    j["data_checked"] = opt.check_data && hp.ok();
    j["valid"] = valid;
    j["error"] = valid ? Json(nullptr) : Json(error.message());
    PrintJson(j);
    return valid ? 0 : 1;
  }

  std::printf("file          %s (%zu bytes)\n", opt.path.c_str(),
              f.file_size());
  std::printf("gguf version  %u\n", f.version());
  std::printf("alignment     %u (data at offset %llu)\n", f.alignment(),
              static_cast<unsigned long long>(f.data_offset()));
  std::printf("metadata      %zu keys\n", f.metadata().size());
  std::printf("architecture  %s\n",
              arch.ok() ? Quoted(*arch).c_str() : "(none)");
  if (hp.ok()) {
    std::printf("layers        %u\n", hp->layers);
    std::printf("embedding     %u\n", hp->embd);
    std::printf("ffn           %u\n", hp->ffn);
    std::printf("heads         %u (kv %u, head dim %u)\n", hp->heads,
                hp->kv_heads, hp->head_dim);
    std::printf("context       %u\n", hp->context);
    std::printf("vocab         %u\n", hp->vocab);
    std::printf("rope base     %g\n", static_cast<double>(hp->rope_freq_base));
    std::printf("rms epsilon   %g\n", static_cast<double>(hp->rms_eps));
    std::printf("sub-norms     %s\n", hp->sub_norms ? "yes" : "no");
    if (hp->tied_output) {
      std::printf("output head   tied to token_embd.weight\n");
    } else {
      std::printf("output head   output.weight %s\n",
                  gguf::TensorTypeName(f.FindTensor("output.weight")->type));
    }
  }
  std::printf("tensors       %zu:", f.tensors().size());
  for (const auto& [name, n] : types) std::printf(" %s %d", name.c_str(), n);
  std::printf("\n");
  if (valid) {
    std::printf("valid         yes%s\n",
                opt.check_data ? " (tensor data decoded)" : "");
    return 0;
  }
  std::printf("valid         no\n");
  std::fprintf(stderr, "ternctl: %s\n", error.message());
  return 1;
}

}  // namespace

void AddGgufCommand(CLI::App& app, int* exit_code) {
  auto opt = std::make_shared<GgufInfoOptions>();
  CLI::App* cmd = app.add_subcommand(
      "gguf-info",
      "Check a GGUF language model file and print its architecture, "
      "hyper-parameters and tensor types");
  cmd->add_option("FILE", opt->path, "GGUF file")->required();
  cmd->add_flag("--json", opt->json, "Print one JSON object");
  cmd->add_flag("--check-data", opt->check_data,
                "Also decode every tensor (ternary codes, block scales, "
                "finite values); holds one decoded tensor in memory at a "
                "time");
  cmd->callback([opt, exit_code] { *exit_code = GgufInfo(*opt); });
}

}  // namespace ternd::ternctl
