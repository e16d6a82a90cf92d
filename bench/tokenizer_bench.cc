// Tokenizer benchmarks (docs/llm.md, "Tokenizer"), on the vocabularies
// python/ternd/tokenizer.py trains (1500 merges; made in a temporary
// directory at start-up, a few seconds):
//
//   BM_Encode/bpe        a ~4 KB prompt of mixed text (languages, numbers,
//                        code, emoji) with the llama-bpe vocabulary
//   BM_Encode/bpe128k    the same with that vocabulary padded to llama-3's
//                        128256 tokens (random unreachable ones: the hash
//                        tables of a real vocabulary's size)
//   BM_Encode/spm        the same with the SentencePiece vocabulary
//   BM_StreamDecode/...  StreamDecoder::Push for every token of it (what
//                        generation pays per token)
//
// Run: build/bench/tokenizer_bench
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "base/file.h"
#include "runtime/gguf/gguf_reader.h"
#include "runtime/tokenizer/gguf_tokenizer.h"
#include "runtime/tokenizer/tokenizer.h"

namespace ternd::tokenizer {
namespace {

struct Fixtures {
  std::string dir;
  std::unique_ptr<Tokenizer> bpe, bpe128k, spm;
  std::string text;

  Fixtures() {
    const char* base = std::getenv("TMPDIR");
    std::string t = std::string(base && *base ? base : "/tmp") +
                    "/ternd-tokenizer-bench-XXXXXX";
    if (!mkdtemp(t.data())) std::abort();
    dir = t;
    const std::string cmd = std::string(PYTHON_PATH) + " " + TOKENIZER_PY_PATH +
                            " fixtures --out " + dir;
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "tokenizer_bench: %s failed\n", cmd.c_str());
      std::abort();
    }
    bpe = Load("bpe.gguf");
    bpe128k = Load("bpe.gguf", 128256);
    spm = Load("spm.gguf");
    // The first ~4 KB of the generated corpus: sentences of eleven
    // languages, numbers, code and emoji.
    Result<std::vector<uint8_t>> corpus = ReadFile(dir + "/corpus.txt");
    if (!corpus.ok()) std::abort();
    text.assign(corpus->begin(), corpus->begin() + 4096);
  }
  ~Fixtures() { std::filesystem::remove_all(dir); }

  std::unique_ptr<Tokenizer> Load(const std::string& name, size_t pad_to = 0) {
    Result<gguf::GgufFile> f = gguf::GgufFile::Open(dir + "/" + name);
    if (!f.ok()) std::abort();
    Result<TokenizerData> d = TokenizerDataFromGguf(*f);
    if (!d.ok()) std::abort();
    uint64_t x = 88172645463325252ull;
    while (d->tokens.size() < pad_to) {
      std::string s = "\xC4\xA0";  // "Ġ": a word after a space
      for (int k = 0; k < 6; ++k) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        s.push_back(static_cast<char>('a' + x % 26));
      }
      d->tokens.push_back(s);
      d->token_types.push_back(1);
    }
    auto tok = Tokenizer::Create(*d);
    if (!tok.ok()) {
      std::fprintf(stderr, "%s\n", tok.status().message());
      std::abort();
    }
    return std::move(*tok);
  }
};

Fixtures& Get() {
  static Fixtures* f = new Fixtures();
  return *f;
}

void BM_Encode(benchmark::State& state, bool spm, bool big) {
  Fixtures& f = Get();
  const Tokenizer& t = spm ? *f.spm : big ? *f.bpe128k : *f.bpe;
  std::vector<int32_t> ids;
  for (auto _ : state) {
    if (!t.Encode(f.text, true, true, &ids).ok()) std::abort();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(state.iterations() * f.text.size());
  state.counters["tokens"] = static_cast<double>(ids.size());
}
BENCHMARK_CAPTURE(BM_Encode, bpe, false, false)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Encode, bpe128k, false, true)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Encode, spm, true, false)->Unit(benchmark::kMicrosecond);

void BM_StreamDecode(benchmark::State& state, bool spm) {
  Fixtures& f = Get();
  const Tokenizer& t = spm ? *f.spm : *f.bpe;
  std::vector<int32_t> ids;
  if (!t.Encode(f.text, false, false, &ids).ok()) std::abort();
  StreamDecoder stream(t);
  size_t bytes = 0;
  for (auto _ : state) {
    for (int32_t id : ids) bytes += stream.Push(id).size();
    bytes += stream.Flush().size();
  }
  benchmark::DoNotOptimize(bytes);
  state.SetItemsProcessed(state.iterations() * ids.size());
}
BENCHMARK_CAPTURE(BM_StreamDecode, bpe, false)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_StreamDecode, spm, true)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace ternd::tokenizer

BENCHMARK_MAIN();
