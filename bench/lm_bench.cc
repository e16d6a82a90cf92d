// Language-model benchmarks (issue 27, "Performance"): random-weight
// models with the exact shapes of BitNet b1.58 2B4T and of the 0.7B
// (bitnet_b1_58-large), plus a small model that runs in seconds, converted
// in-process (runtime/lm/convert.h) with an int8 and an f16 output head,
// loaded with Runtime::LoadLm and timed as generation uses them:
//
//   pp128   one Eval of a 128-token prompt at position 0 (tokens/s);
//   tg128   128 single-token Evals after a 4-token prompt, each feeding the
//           greedy token of the one before (tokens/s of the Evals: neither
//           the prompt nor the arg max between Evals is timed, as
//           llama-bench's tg times no sampling);
//   ttft32  one Eval of a 32-token prompt: the time to the first token's
//           logits;
//   tg16@N  16 single-token Evals at positions N.. (attention over N
//           cached positions; the cache contents do not change the work,
//           so it is not filled first).
//
// at 1 thread and at all the CPUs this process may use (LmOptions::threads
// = 0), in the runtime's default weight layout and (".../layout:1.6bit/...")
// with every matrix 1.6-bit. Times are wall-clock (the team's helpers work
// while the caller does).
//
// The GGUF files are written on first use by the Python generators
// (python3 -m ternd.make_2b4t 2b4t|0.7b; ternd.gguf_writer for the small
// one: ~16 s and 1.2 GB for 2B4T) into the cache directory
// (TERND_LM_BENCH_CACHE, default build/bench/lm_bench_cache), converted
// .tern files are kept beside them. Nothing there is committed.
//
// Counters: tok/s; bytes_per_token (LmModel::bytes_per_token: every
// ternary matrix in its layout, the norms and the output head); read_B/s,
// the single-core read bandwidth measured right before the benchmark
// (BestReadBandwidth over 512 MiB, as ternary_kernels_bench); roofline =
// read_B/s / bytes_per_token in tokens/s and of_roofline = tg tokens/s
// over it (tg only); read_B/s_all, the read bandwidth of all CPUs reading
// at once, and of_roofline_all = tg tokens/s over read_B/s_all /
// bytes_per_token (the limit of a team using every CPU);
// cpus_used = CPU time of the process over the wall time of the timed loops
// (near the thread count when nothing else ran; a run with fewer was
// shared with other processes); arena_used (LmModel::slot_bytes_used),
// kv_cache, weights, scratch (LmModel's byte accessors), RSS after the
// load and peak_RSS (VmHWM during the load: the .tern file read into memory
// while the arena is filled); tq1 = matrices in the 1.6-bit layout.
//
// Run (docs/performance.md, "Language models"):
//   build/bench/lm_bench --benchmark_filter='small'
//   build/bench/lm_bench --benchmark_filter='2b4t/int8/threads:1/(pp128|tg128)'
#include <benchmark/benchmark.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/file.h"
#include "base/memory.h"
#include "runtime/format.h"
#include "runtime/gguf/gguf_reader.h"
#include "runtime/lm/convert.h"
#include "runtime/lm/lm_math.h"
#include "runtime/lm/lm_model.h"
#include "runtime/machine.h"
#include "runtime/runtime.h"

namespace ternd::runtime {
namespace {

struct ModelSpec {
  const char* name;
  // Arguments of `python3 -m ...` that write the GGUF file to the path that
  // follows them.
  const char* generator;
};

constexpr ModelSpec kModels[] = {
    {"small",
     "ternd.gguf_writer --arch bitnet-b1.58 --ternary i2_s --hidden 512 "
     "--ffn 1536 --layers 4 --heads 8 --kv-heads 2 --vocab 8192 --context "
     "2048 --well-scaled -o"},
    {"0.7b", "ternd.make_2b4t 0.7b -o"},
    {"2b4t", "ternd.make_2b4t 2b4t -o"},
};

std::string CacheDir() {
  const char* env = std::getenv("TERND_LM_BENCH_CACHE");
  std::string dir = env != nullptr && env[0] != '\0' ? env : LM_BENCH_CACHE;
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && st.st_size > 0;
}

// "Vm...:   123 kB" of /proc/self/status, in bytes.
size_t ProcStatusBytes(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const size_t len = std::strlen(key);
  while (std::getline(in, line)) {
    if (line.compare(0, len, key) == 0 && line[len] == ':') {
      return std::strtoull(line.c_str() + len + 1, nullptr, 10) * 1024;
    }
  }
  return 0;
}

void ResetPeakRss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
}

// The .tern file of `spec` with `head`, made (GGUF, then conversion) if
// missing.
Result<std::string> TernFile(const ModelSpec& spec, const std::string& head) {
  const std::string dir = CacheDir();
  const std::string gguf = dir + "/" + spec.name + ".gguf";
  const std::string tern = dir + "/" + spec.name + "-" + head + ".tern";
  if (Exists(tern)) return tern;
  if (!Exists(gguf)) {
    const std::string cmd = std::string("PYTHONPATH=") + PYTHON_DIR + " " +
                            PYTHON_PATH + " -m " + spec.generator + " " + gguf +
                            ".tmp >&2 && mv " + gguf + ".tmp " + gguf;
    std::fprintf(stderr, "lm_bench: writing %s\n", gguf.c_str());
    if (std::system(cmd.c_str()) != 0) {
      return Internal("lm_bench: '%s' failed", cmd.c_str());
    }
  }
  std::fprintf(stderr, "lm_bench: converting %s (head %s)\n", gguf.c_str(),
               head.c_str());
  TERND_ASSIGN_OR_RETURN(gguf::GgufFile g, gguf::GgufFile::Open(gguf));
  lm::ConvertOptions options;
  options.head = head;
  options.name = spec.name;
  TERND_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                         lm::ConvertGguf(g, options));
  TERND_RETURN_IF_ERROR(WriteFileAtomically(tern, bytes));
  return tern;
}

// Bandwidths, measured once per run (before any model is loaded).
struct Bandwidth {
  double one = 0;  // one core, bytes/s of thread CPU time
  double all = 0;  // every CPU reading its own part at once, wall time
};

// Keeps the sums of the all-CPU bandwidth passes, so that the reads happen.
volatile uint64_t read_sink;

int AllThreads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) {
    return CPU_COUNT(&set);
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

// Measures both now (best of 3 passes over 512 MiB, far above the LLC).
// The memory bandwidth of a VM moves with its neighbours' load (by 20% from
// one minute to the next on the development machine), so each benchmark
// measures it right before its timed loop.
Bandwidth MeasureBandwidth() {
  Bandwidth b;
  constexpr size_t kBytes = size_t{512} << 20;
  std::vector<uint8_t> buf = MakeLargeBuffer(kBytes + kHugePageBytes);
  uint8_t* p =
      buf.data() + (kHugePageBytes -
                    reinterpret_cast<uintptr_t>(buf.data()) % kHugePageBytes) %
                       kHugePageBytes;
  std::memset(p, 1, kBytes);
  const auto* words = reinterpret_cast<const uint64_t*>(p);
  b.one = BestReadBandwidth(words, kBytes, 3);
  const int n = AllThreads();
  const size_t part = kBytes / n / 4096 * 4096;
  for (int pass = 0; pass < 3; ++pass) {
    std::vector<std::thread> threads;
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < n; ++t) {
      threads.emplace_back(
          [&, t] { read_sink = SumWords(words + t * part / 8, part / 8); });
    }
    for (std::thread& t : threads) t.join();
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    b.all = std::max(b.all, static_cast<double>(part) * n / s);
  }
  return b;
}

// The models loaded: by default one, released before the next one loads so
// that only one big model is in memory (and in the RSS figures) at a time;
// TERND_LM_BENCH_MODELS=2 keeps the last two, for comparing two settings in
// one run with --benchmark_enable_random_interleaving (their RSS figures then
// include each other).
struct Loaded {
  std::string key;
  std::unique_ptr<Runtime> rt;
  const LmModel* m = nullptr;
  size_t rss_after_load = 0;
  size_t peak_rss = 0;  // while loading
};

std::vector<Loaded>& Models() {
  static std::vector<Loaded> models;
  return models;
}

size_t MaxModels() {
  const char* env = std::getenv("TERND_LM_BENCH_MODELS");
  const long n = env != nullptr ? std::strtol(env, nullptr, 10) : 1;
  return n >= 1 ? static_cast<size_t>(n) : 1;
}

const Loaded* Load(benchmark::State& state, const ModelSpec& spec,
                   const std::string& head, const std::string& layout,
                   int threads) {
  std::vector<Loaded>& models = Models();
  const std::string key = std::string(spec.name) + "/" + head + "/" + layout +
                          "/" + std::to_string(threads);
  for (size_t i = 0; i < models.size(); ++i) {
    if (models[i].key == key) {
      // Most recently used last.
      std::rotate(models.begin() + i, models.begin() + i + 1, models.end());
      return &models.back();
    }
  }
  while (!models.empty() && models.size() >= MaxModels()) {
    models.erase(models.begin());
  }
  Loaded cur;
  Result<std::string> path = TernFile(spec, head);
  if (!path.ok()) {
    state.SkipWithError(path.status().message());
    return nullptr;
  }
  ResetPeakRss();
  Result<ModelFile> file = ModelFile::Open(*path);
  if (!file.ok()) {
    state.SkipWithError(file.status().message());
    return nullptr;
  }
  RuntimeOptions ro;
  ro.slots = 1;
  if (!layout.empty()) ro.weight_layout = layout;
  // Reserved, not touched: only what the model places becomes resident.
  ro.arena_bytes = file->file_size() + (size_t{1} << 30);
  Result<std::unique_ptr<Runtime>> rt = Runtime::Create(ro);
  if (!rt.ok()) {
    state.SkipWithError(rt.status().message());
    return nullptr;
  }
  LmOptions lo;
  lo.threads = threads;
  Result<const LmModel*> m = (*rt)->LoadLm(0, *file, lo);
  if (!m.ok()) {
    state.SkipWithError(m.status().message());
    return nullptr;
  }
  cur.rt = std::move(*rt);
  cur.m = *m;
  cur.key = key;
  { ModelFile discard = std::move(*file); }
  cur.rss_after_load = ProcStatusBytes("VmRSS");
  cur.peak_rss = ProcStatusBytes("VmHWM");
  models.push_back(std::move(cur));
  return &models.back();
}

int32_t ArgMax(const float* z, uint32_t n) {
  uint32_t best = 0;
  for (uint32_t v = 1; v < n; ++v) {
    if (z[v] > z[best]) best = v;
  }
  return static_cast<int32_t>(best);
}

std::vector<int32_t> Prompt(int n, uint32_t vocab) {
  std::vector<int32_t> t(n);
  uint32_t x = 12345;
  for (int32_t& v : t) {
    x = x * 1664525u + 1013904223u;
    v = static_cast<int32_t>((x >> 8) % vocab);
  }
  return t;
}

enum class Test { kPp128, kTg128, kTtft32, kTgDepth };

using Clock = std::chrono::steady_clock;
double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// CPU seconds of every thread of this process.
double ProcessCpuSeconds() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

void Fail(benchmark::State& state, const Status& s) {
  state.SkipWithError(std::string(s.message()).c_str());
}

void BM_Lm(benchmark::State& state, const ModelSpec* spec, std::string head,
           std::string layout, int threads, Test test, int depth) {
  const Loaded* loaded = Load(state, *spec, head, layout, threads);
  if (loaded == nullptr) return;
  const LmModel* m = loaded->m;
  const uint32_t V = m->shape().vocab;
  const Bandwidth bw = MeasureBandwidth();
  int tokens_per_iteration = 0;
  double seconds = 0;      // in the timed loops, as the benchmark's real time
  double cpu_seconds = 0;  // of all the process's threads, in the same loops
  switch (test) {
    case Test::kPp128:
    case Test::kTtft32: {
      const int n = test == Test::kPp128 ? 128 : 32;
      tokens_per_iteration = n;
      const std::vector<int32_t> prompt = Prompt(n, V);
      for (auto _ : state) {
        const auto t0 = Clock::now();
        const double c0 = ProcessCpuSeconds();
        Status s = m->Eval(0, prompt, 0);
        if (!s.ok()) return Fail(state, s);
        benchmark::DoNotOptimize(m->logits(0)[0]);
        seconds += Seconds(Clock::now() - t0);
        cpu_seconds += ProcessCpuSeconds() - c0;
      }
      break;
    }
    case Test::kTg128:
    case Test::kTgDepth: {
      const int n = test == Test::kTg128 ? 128 : 16;
      const int start = test == Test::kTg128 ? 4 : depth;
      if (start + n > m->max_context()) {
        state.SkipWithError("the context is too short for this test");
        return;
      }
      tokens_per_iteration = n;
      const std::vector<int32_t> prompt = Prompt(4, V);
      for (auto _ : state) {
        state.PauseTiming();
        int32_t next = prompt[0];
        if (test == Test::kTg128) {
          Status s = m->Eval(0, prompt, 0);
          if (!s.ok()) return Fail(state, s);
          next = ArgMax(m->logits(0), V);
        }
        state.ResumeTiming();
        for (int i = 0; i < n; ++i) {
          const auto t0 = Clock::now();
          const double c0 = ProcessCpuSeconds();
          Status s = m->Eval(0, {&next, 1}, start + i);
          if (!s.ok()) return Fail(state, s);
          seconds += Seconds(Clock::now() - t0);
          cpu_seconds += ProcessCpuSeconds() - c0;
          next = ArgMax(m->logits(0), V);
        }
        benchmark::DoNotOptimize(next);
      }
      break;
    }
  }
  using benchmark::Counter;
  const double bytes = static_cast<double>(m->bytes_per_token());
  const double tokens_per_second =
      static_cast<double>(tokens_per_iteration) * state.iterations() / seconds;
  state.counters["tok/s"] = tokens_per_second;
  // CPUs busy on average: about the team size when the machine left the
  // team alone, less when other processes took its CPUs.
  state.counters["cpus_used"] = cpu_seconds / seconds;
  state.counters["threads"] = m->threads();
  state.counters["bytes_per_token"] =
      Counter(bytes, Counter::kDefaults, Counter::kIs1024);
  state.counters["read_B/s"] =
      Counter(bw.one, Counter::kDefaults, Counter::kIs1024);
  state.counters["read_B/s_all"] =
      Counter(bw.all, Counter::kDefaults, Counter::kIs1024);
  state.counters["arena_used"] =
      Counter(static_cast<double>(m->slot_bytes_used()), Counter::kDefaults,
              Counter::kIs1024);
  state.counters["kv_cache"] = Counter(static_cast<double>(m->kv_cache_bytes()),
                                       Counter::kDefaults, Counter::kIs1024);
  state.counters["RSS"] = Counter(static_cast<double>(loaded->rss_after_load),
                                  Counter::kDefaults, Counter::kIs1024);
  state.counters["peak_RSS"] = Counter(static_cast<double>(loaded->peak_rss),
                                       Counter::kDefaults, Counter::kIs1024);
  state.counters["weights"] = Counter(static_cast<double>(m->weight_bytes()),
                                      Counter::kDefaults, Counter::kIs1024);
  state.counters["scratch"] = Counter(static_cast<double>(m->scratch_bytes()),
                                      Counter::kDefaults, Counter::kIs1024);
  state.counters["tq1"] = m->tq1_matrices();
  if (test == Test::kTg128 || test == Test::kTgDepth) {
    const double roofline = bw.one / bytes;
    state.counters["roofline"] = roofline;
    // tokens/s over the roofline: (n / time) / roofline.
    state.counters["of_roofline"] = tokens_per_second / roofline;
    state.counters["of_roofline_all"] = tokens_per_second / (bw.all / bytes);
  }
}

// The output head alone: lm_math's head product over the 2B4T head
// [128256, 2560] in the set's layout (328 MB in int8, 656 MB in f16: far
// above the last-level cache, so it streams from memory as in decode), rows
// split between `threads` threads at group boundaries as LmModel splits
// them. B/s = head bytes per second; compare with read_B/s.
void BM_LmHead(benchmark::State& state, const lm_math::Ops* ops, bool f16,
               int threads) {
  constexpr size_t kRows = 128256, kCols = 2560;
  const size_t elem = f16 ? 2 : 1;
  std::vector<uint8_t> w(kRows * kCols * elem);
  uint32_t seed = 1;
  for (size_t i = 0; i < w.size(); i += 2) {
    seed = seed * 1664525u + 1013904223u;
    // int8: any byte; f16: small normal halves.
    w[i] = static_cast<uint8_t>(seed >> 24);
    w[i + 1] = f16 ? static_cast<uint8_t>(0x30 + ((seed >> 16) & 0x0b))
                   : static_cast<uint8_t>(seed >> 16);
  }
  const size_t bytes = lm_math::HeadPackedBytes(*ops, elem, kRows, kCols);
  std::vector<uint8_t> packed = MakeLargeBuffer(bytes + 64);
  uint8_t* head = packed.data() +
                  (64 - reinterpret_cast<uintptr_t>(packed.data()) % 64) % 64;
  std::vector<int32_t> sums(kRows);
  lm_math::PackHead(*ops, elem, w.data(), kRows, kCols, head, sums.data());
  w = {};
  std::vector<float> scale(kRows, 0.01f), x(kCols), out(kRows);
  for (size_t i = 0; i < kCols; ++i) x[i] = std::sin(static_cast<float>(i));
  const size_t group = static_cast<size_t>(ops->head_group);
  const size_t groups = (kRows + group - 1) / group;
  const size_t group_bytes = lm_math::HeadPackedBytes(*ops, elem, group, kCols);
  std::vector<std::vector<uint8_t>> work(threads);
  for (auto& v : work) v.resize(lm_math::HeadWorkBytes(kCols) + 64);
  auto run = [&](int t) {
    const size_t g0 = groups * t / threads, g1 = groups * (t + 1) / threads;
    const size_t r0 = g0 * group, r1 = std::min(kRows, g1 * group);
    uint8_t* wk = work[t].data() +
                  (64 - reinterpret_cast<uintptr_t>(work[t].data()) % 64) % 64;
    if (f16) {
      ops->head_f16(reinterpret_cast<const uint16_t*>(head + g0 * group_bytes),
                    r1 - r0, kCols, x.data(), wk, out.data() + r0);
    } else {
      ops->head_i8(reinterpret_cast<const int8_t*>(head + g0 * group_bytes),
                   scale.data() + r0, sums.data() + r0, r1 - r0, kCols,
                   x.data(), wk, out.data() + r0);
    }
  };
  const double bandwidth = MeasureBandwidth().one;
  for (auto _ : state) {
    std::vector<std::thread> helpers;
    for (int t = 1; t < threads; ++t) helpers.emplace_back(run, t);
    run(0);
    for (std::thread& h : helpers) h.join();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  using benchmark::Counter;
  state.counters["B/s"] =
      Counter(static_cast<double>(bytes), Counter::kIsIterationInvariantRate,
              Counter::kIs1024);
  state.counters["read_B/s"] =
      Counter(bandwidth, Counter::kDefaults, Counter::kIs1024);
}

// Attention (lm_math attend) of `heads` queries sharing one KV head over
// `count` cached positions, head width 128 (2B4T: 4 queries per KV head):
// what a decoded token pays per KV head and layer.
void BM_LmAttention(benchmark::State& state, const lm_math::Ops* ops) {
  const size_t count = static_cast<size_t>(state.range(0)), d = 128;
  const size_t heads = static_cast<size_t>(state.range(1));
  std::vector<uint16_t> k(count * d), v(count * d);
  uint32_t seed = 9;
  for (size_t i = 0; i < k.size(); ++i) {
    seed = seed * 1664525u + 1013904223u;
    k[i] = lm_math::FloatToHalf(static_cast<float>(seed >> 8) * 0x1p-23f - 1);
    v[i] = lm_math::FloatToHalf(static_cast<float>(seed & 0xffff) * 0x1p-15f);
  }
  std::vector<float> q(heads * d), scores(heads * count), out(heads * d);
  for (size_t i = 0; i < q.size(); ++i) q[i] = std::sin(static_cast<float>(i));
  for (auto _ : state) {
    ops->attend(q.data(), heads, d, 0.088f, k.data(), v.data(), count - 1,
                k.data() + (count - 1) * d, v.data() + (count - 1) * d, 1,
                scores.data(), out.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["head_positions/s"] =
      benchmark::Counter(static_cast<double>(count * heads),
                         benchmark::Counter::kIsIterationInvariantRate);
}

void RegisterAll() {
  for (const lm_math::Ops* ops : lm_math::SupportedOps()) {
    benchmark::RegisterBenchmark(
        (std::string("BM_LmAttention/") + ops->name).c_str(), BM_LmAttention,
        ops)
        ->ArgNames({"positions", "heads"})
        ->Args({128, 1})
        ->Args({2048, 1})
        ->Args({2048, 4})
        ->Unit(benchmark::kMicrosecond);
  }
  for (const lm_math::Ops* ops : lm_math::SupportedOps()) {
    for (bool f16 : {false, true}) {
      for (int threads : {1, 2}) {
        benchmark::RegisterBenchmark(
            (std::string("BM_LmHead/") + ops->name + (f16 ? "/f16" : "/int8") +
             "/threads:" + std::to_string(threads))
                .c_str(),
            BM_LmHead, ops, f16, threads)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
    }
  }

  const int all = AllThreads();
  std::vector<int> thread_counts = {1};
  if (all > 1) thread_counts.push_back(all);
  for (const ModelSpec& spec : kModels) {
    // The runtime's default weight layout, and all matrices 1.6-bit.
    for (const char* layout : {"", "1.6bit"}) {
      for (const char* head : {"int8", "f16"}) {
        for (int threads : thread_counts) {
          const std::string prefix =
              std::string("BM_Lm/") + spec.name + "/" + head +
              (layout[0] != '\0' ? std::string("/layout:") + layout : "") +
              "/threads:" + std::to_string(threads);
          // LmOptions::threads: 0 means all, which is what a daemon uses.
          const int t = threads == all ? 0 : threads;
          struct {
            const char* name;
            Test test;
            int depth;
          } const tests[] = {
              {"pp128", Test::kPp128, 0},
              {"tg128", Test::kTg128, 0},
              {"ttft32", Test::kTtft32, 0},
              {"tg16@1024", Test::kTgDepth, 1024},
              {"tg16@2000", Test::kTgDepth, 2000},
          };
          for (const auto& tc : tests) {
            benchmark::RegisterBenchmark(
                (prefix + "/" + tc.name).c_str(), BM_Lm, &spec,
                std::string(head), std::string(layout), t, tc.test, tc.depth)
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace ternd::runtime

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  ternd::runtime::RegisterAll();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
