// `ternctl gguf-info MODEL.gguf [--json] [--check-data]`: what the GGUF
// importer sees in a language model file (docs/llm.md).
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "base/file.h"
#include "runtime/format.h"
#include "runtime/gguf/gguf_arch.h"
#include "runtime/gguf/gguf_decode.h"
#include "runtime/gguf/gguf_reader.h"
#include "runtime/lm/convert.h"
#include "runtime/lm/lm_model.h"
#include "runtime/runtime.h"
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

struct ConvertOptions {
  std::string input, output;
  lm::ConvertOptions convert;
  int golden_tokens = 4;
  std::string golden_prompt = "";
  int threads = 0;
  bool json = false;
};

int Fail(const ConvertOptions& opt, const Status& s) {
  if (opt.json) {
    PrintJson(Json{{"file", opt.input}, {"ok", false}, {"error", s.message()}});
  } else {
    std::fprintf(stderr, "ternctl: %s\n", s.message());
  }
  return 1;
}

// Greedy-decodes a short prompt with the runtime itself and records it as
// the model's golden check (lm.golden_prompt / golden_tokens): the daemon
// repeats it after every activation, so a file damaged in a way the format
// checks cannot see (a wrong scale, a swapped tensor) is not served.
Status AddGolden(const ConvertOptions& opt, const runtime::ModelFile& file,
                 model::ModelHeader* header) {
  const model::LanguageModel& lm = header->lm();
  std::vector<int32_t> prompt;
  if (!opt.golden_prompt.empty()) {
    size_t at = 0;
    while (at <= opt.golden_prompt.size()) {
      const size_t comma = opt.golden_prompt.find(',', at);
      const std::string piece = opt.golden_prompt.substr(
          at, comma == std::string::npos ? std::string::npos : comma - at);
      char* end = nullptr;
      const long v = std::strtol(piece.c_str(), &end, 10);
      if (piece.empty() || *end != '\0' || v < 0 ||
          static_cast<uint64_t>(v) >= lm.vocab()) {
        return InvalidArgument(
            "--golden-prompt: '%s' is not a token id in 0..%u", piece.c_str(),
            lm.vocab() - 1);
      }
      prompt.push_back(static_cast<int32_t>(v));
      if (comma == std::string::npos) break;
      at = comma + 1;
    }
  } else {
    // The BOS token (when there is one) and a few ids spread over the
    // vocabulary: any prompt will do, it only has to be the same each time.
    if (lm.tokenizer().has_bos()) prompt.push_back(lm.tokenizer().bos());
    for (uint32_t i = 1; prompt.size() < 4; ++i) {
      prompt.push_back(static_cast<int32_t>(
          (static_cast<uint64_t>(lm.vocab()) * i / 5) % lm.vocab()));
    }
  }
  runtime::RuntimeOptions ro;
  ro.slots = 1;
  ro.arena_bytes = file.file_size() + file.file_size() / 4 + (size_t{64} << 20);
  TERND_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Runtime> rt,
                         runtime::Runtime::Create(ro));
  runtime::LmOptions lo;
  lo.threads = opt.threads;
  lo.max_context = static_cast<int>(prompt.size()) + opt.golden_tokens;
  TERND_ASSIGN_OR_RETURN(const runtime::LmModel* m, rt->LoadLm(0, file, lo));
  TERND_RETURN_IF_ERROR(m->Eval(0, prompt, 0));
  std::vector<int32_t> tokens;
  for (int i = 0; i < opt.golden_tokens; ++i) {
    const float* z = m->logits(0);
    int32_t best = 0;
    for (uint32_t v = 1; v < lm.vocab(); ++v) {
      if (z[v] > z[best]) best = static_cast<int32_t>(v);
    }
    tokens.push_back(best);
    if (i + 1 < opt.golden_tokens) {
      TERND_RETURN_IF_ERROR(
          m->Eval(0, {&best, 1}, static_cast<int>(prompt.size()) + i));
    }
  }
  model::LanguageModel* out = header->mutable_lm();
  out->clear_golden_prompt();
  out->clear_golden_tokens();
  for (int32_t t : prompt) out->add_golden_prompt(t);
  for (int32_t t : tokens) out->add_golden_tokens(t);
  return Status::Ok();
}

int Convert(const ConvertOptions& opt) {
  Result<GgufFile> gguf_file = GgufFile::Open(opt.input);
  if (!gguf_file.ok()) return Fail(opt, gguf_file.status());
  Result<std::vector<uint8_t>> bytes = lm::ConvertGguf(*gguf_file, opt.convert);
  if (!bytes.ok()) return Fail(opt, bytes.status());
  Result<runtime::ModelFile> file =
      runtime::ModelFile::Parse(std::move(*bytes), opt.output);
  if (!file.ok()) return Fail(opt, file.status());
  model::ModelHeader header = file->header();
  if (opt.golden_tokens > 0) {
    Status s = AddGolden(opt, *file, &header);
    if (!s.ok()) return Fail(opt, Status(s).Prepend("golden check"));
  }
  Result<std::vector<uint8_t>> out =
      runtime::ModelWriter::ReplaceHeader(*file, header);
  if (!out.ok()) return Fail(opt, out.status());
  Status w = WriteFileAtomically(opt.output, *out);
  if (!w.ok()) return Fail(opt, w);
  const model::LanguageModel& lm = header.lm();
  if (opt.json) {
    Json golden = Json::array();
    for (int32_t t : lm.golden_tokens()) golden.push_back(t);
    PrintJson(Json{{"file", opt.input},
                   {"output", opt.output},
                   {"ok", true},
                   {"bytes", out->size()},
                   {"name", header.name()},
                   {"version", header.version()},
                   {"architecture", lm.source_architecture()},
                   {"layers", lm.layers()},
                   {"embedding", lm.embedding()},
                   {"vocab", lm.vocab()},
                   {"head", opt.convert.head},
                   {"golden_tokens", golden}});
  } else {
    std::printf(
        "wrote %s: %zu bytes, '%s' version %llu, %s, %u layers, embedding "
        "%u, vocabulary %u, head %s%s\n",
        opt.output.c_str(), out->size(), header.name().c_str(),
        static_cast<unsigned long long>(header.version()),
        lm.source_architecture().c_str(), lm.layers(), lm.embedding(),
        lm.vocab(), opt.convert.head.c_str(),
        lm.golden_tokens_size() > 0 ? ", golden check recorded" : "");
  }
  return 0;
}

}  // namespace

void AddGgufCommand(CLI::App& app, int* exit_code) {
  {
    auto opt = std::make_shared<ConvertOptions>();
    CLI::App* cmd = app.add_subcommand(
        "convert",
        "Convert a GGUF BitNet b1.58 language model to a .tern file the "
        "daemon loads");
    cmd->add_option("FILE", opt->input, "GGUF file")->required();
    cmd->add_option("-o,--output", opt->output, ".tern file to write")
        ->required();
    cmd->add_option("--head", opt->convert.head,
                    "Output head storage: int8 (per-row scale, default) or "
                    "f16")
        ->check(CLI::IsMember({"int8", "f16"}));
    cmd->add_option("--name", opt->convert.name,
                    "Model name (default: from general.name)");
    cmd->add_option("--model-version", opt->convert.version,
                    "Model version in the header (default 1)");
    cmd->add_option("--golden-tokens", opt->golden_tokens,
                    "Greedy tokens recorded as the golden check (0: none; "
                    "default 4)")
        ->check(CLI::Range(0, 64));
    cmd->add_option("--golden-prompt", opt->golden_prompt,
                    "Token ids of the golden prompt, comma-separated "
                    "(default: BOS and a few ids)");
    cmd->add_option("--threads", opt->threads,
                    "Threads for the golden check (default: all CPUs)");
    cmd->add_flag("--json", opt->json, "Print one JSON object");
    cmd->callback([opt, exit_code] { *exit_code = Convert(*opt); });
  }

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
