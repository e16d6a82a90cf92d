// `ternctl bench MODEL.tern` and `ternctl bench --compare A.tern B.tern`:
// how fast a model runs on this machine and, with --profile, where the time
// goes. The model is loaded into a runtime of this process as the daemon
// loads it (arena, kernel dispatch, packed layouts, golden check); no daemon
// is needed. docs/ternctl.md describes the output and the choices made here
// (threads, inputs, interleaving, percentiles).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime/format.h"
#include "runtime/lm/lm_model.h"
#include "runtime/machine.h"
#include "runtime/ops.h"
#include "runtime/runtime.h"
#include "tools/ternctl/commands.h"
#include "tools/ternctl/json_output.h"
#include "tools/ternctl/values.h"

namespace ternd::ternctl {
namespace {

using runtime::Executor;
using runtime::LoadedModel;
using runtime::ModelFile;
using runtime::OpInfo;
using runtime::OpProfile;
using Clock = std::chrono::steady_clock;

constexpr int kMaxThreads = 256;
constexpr uint32_t kInputSeed = 1;
// --compare alternates the two models in slices of this many seconds (or a
// tenth of --seconds when that is shorter).
constexpr double kCompareSliceSeconds = 0.1;

struct BenchOptions {
  std::string path;
  std::vector<std::string> compare;
  std::string batches = "1";
  int threads = 1;
  std::string kernel = "auto";
  double seconds = 2;
  double warmup = 0.5;
  bool json = false;
  bool profile = false;
  std::string input_path;
  size_t arena_mb = 256;
  size_t bandwidth_mb = 256;
  int prompt = 128;
  int generate = 128;
  bool prompt_given = false;
  bool threads_given = false;
  bool arena_given = false;
  int repetitions = 3;
};

int Fail(const Status& s) {
  std::fprintf(stderr, "ternctl bench: %s\n", s.message());
  return 1;
}

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// "1,8,64" -> {1, 8, 64}. Each must be a whole number of at least 1.
Result<std::vector<int>> ParseBatches(const std::string& text) {
  std::vector<int> out;
  size_t at = 0;
  while (at <= text.size()) {
    size_t comma = text.find(',', at);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = text.substr(at, comma - at);
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 1 || v > (1 << 20)) {
      return InvalidArgument(
          "--batch '%s': '%s' is not a batch size (expected whole numbers of "
          "at least 1 separated by commas, e.g. 1,8,64)",
          text.c_str(), item.c_str());
    }
    if (std::find(out.begin(), out.end(), v) == out.end()) {
      out.push_back(static_cast<int>(v));
    }
    at = comma + 1;
  }
  return out;
}

// One model under test: its file, its place in the runtime, the executors
// of its workers and the profile arrays (one per worker).
struct Subject {
  std::string path;
  std::unique_ptr<ModelFile> file;
  const LoadedModel* model = nullptr;
  double load_ms = 0;
  std::vector<Executor> executors;
};

// Fills every row of every worker's input buffers: from the rows of
// `values` (repeated to fill max_batch rows) or, when `values` is empty, with
// uniform random values in [-1, 1] from a fixed seed (the same for every
// worker and every run).
Status FillInputs(const Subject& s, const std::vector<float>& values,
                  const std::string& origin) {
  const LoadedModel& m = *s.model;
  size_t row = 0;
  for (int i = 0; i < m.num_inputs(); ++i) row += m.input_info(i).features;
  if (!values.empty() && values.size() % row != 0) {
    return InvalidArgument(
        "%s has %zu values; model '%s' (%s) takes rows of %zu values (one row "
        "per sample, inputs in order)",
        origin.c_str(), values.size(), m.name(), s.path.c_str(), row);
  }
  std::mt19937 rng(kInputSeed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const size_t rows = values.size() / std::max<size_t>(row, 1);
  for (const Executor& ex : s.executors) {
    for (int b = 0; b < m.max_batch(); ++b) {
      size_t at = rows ? (b % rows) * row : 0;
      for (int i = 0; i < m.num_inputs(); ++i) {
        const uint32_t f = m.input_info(i).features;
        float* dst = ex.input(i) + static_cast<size_t>(b) * f;
        for (uint32_t j = 0; j < f; ++j) {
          dst[j] = rows ? values[at++] : uniform(rng);
        }
      }
    }
  }
  return Status::Ok();
}

Result<Subject> LoadSubject(runtime::Runtime& rt, int slot,
                            const std::string& path) {
  Subject s;
  s.path = path;
  const Clock::time_point start = Clock::now();
  Result<ModelFile> file = ModelFile::Open(path);
  if (!file.ok()) return file.status();
  s.file = std::make_unique<ModelFile>(std::move(*file));
  Result<const LoadedModel*> loaded = rt.Load(slot, *s.file);
  if (!loaded.ok()) return loaded.status();
  s.model = *loaded;
  if (s.model->has_golden()) {
    Status golden = s.model->CheckGolden(0);
    if (!golden.ok()) return golden.Prepend(path);
  }
  s.load_ms = 1e3 * SecondsSince(start);
  for (int w = 0; w < rt.options().workers; ++w) {
    s.executors.push_back(s.model->executor(w));
  }
  return s;
}

// What the runs of one model at one batch size collected.
struct Measurement {
  std::vector<float> latency_us;  // every timed Invoke, all threads
  double wall_seconds = 0;        // sum over slices of first start..last end
  uint64_t invocations = 0;
  // --profile: a separate pass with the hook on.
  std::vector<uint64_t> op_nanos;  // summed over threads
  uint64_t profiled_invocations = 0;
  double profiled_latency_sum_us = 0;
};

// Runs every worker's executor concurrently (one thread each; the calling
// thread when there is one), each invoking `batch` rows back to back until
// `seconds` have passed. With `record`, adds the latencies and the slice's
// wall time to `m`; with `profiles` (one per worker), passes them to Invoke
// and adds to m's profile totals instead of its latencies.
Status RunSlice(const Subject& s, int batch, double seconds, bool record,
                std::vector<std::vector<uint64_t>>* profiles, Measurement* m) {
  const int workers = static_cast<int>(s.executors.size());
  const Clock::time_point deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(seconds));
  struct PerThread {
    // A deque grows without copying what it holds: a vector's reallocation
    // (megabytes for a long run) would land in the next call's latency.
    std::deque<float> latency_us;
    Clock::time_point start, end;
    Status status;
  };
  std::vector<PerThread> per(workers);
  auto loop = [&](int w) {
    PerThread& p = per[w];
    const Executor& ex = s.executors[w];
    OpProfile profile;
    if (profiles) profile.op_nanos = (*profiles)[w].data();
    p.start = Clock::now();
    Clock::time_point t0 = p.start;
    do {
      Status st = ex.Invoke(batch, profiles ? &profile : nullptr);
      const Clock::time_point t1 = Clock::now();
      if (!st.ok()) {
        p.status = st;
        break;
      }
      p.latency_us.push_back(
          std::chrono::duration<float, std::micro>(t1 - t0).count());
      t0 = t1;
    } while (t0 < deadline);
    p.end = t0;
  };
  if (workers == 1) {
    loop(0);
  } else {
    std::vector<std::thread> threads;
    for (int w = 0; w < workers; ++w) threads.emplace_back(loop, w);
    for (std::thread& t : threads) t.join();
  }
  Clock::time_point first = per[0].start, last = per[0].end;
  for (const PerThread& p : per) {
    if (!p.status.ok()) return p.status;
    first = std::min(first, p.start);
    last = std::max(last, p.end);
  }
  if (!record) return Status::Ok();
  for (const PerThread& p : per) {
    if (profiles) {
      m->profiled_invocations += p.latency_us.size();
      for (float v : p.latency_us) m->profiled_latency_sum_us += v;
    } else {
      m->invocations += p.latency_us.size();
      m->latency_us.insert(m->latency_us.end(), p.latency_us.begin(),
                           p.latency_us.end());
    }
  }
  if (!profiles) {
    m->wall_seconds += std::chrono::duration<double>(last - first).count();
  }
  return Status::Ok();
}

std::vector<std::vector<uint64_t>> ZeroProfiles(const Subject& s) {
  return std::vector<std::vector<uint64_t>>(
      s.executors.size(), std::vector<uint64_t>(s.model->num_ops(), 0));
}

// The profile pass: `seconds` with the hook on, after a short warmup.
Status Profile(const Subject& s, int batch, double seconds, Measurement* m) {
  std::vector<std::vector<uint64_t>> profiles = ZeroProfiles(s);
  TERND_RETURN_IF_ERROR(
      RunSlice(s, batch, std::min(seconds, 0.05), false, &profiles, m));
  profiles = ZeroProfiles(s);
  TERND_RETURN_IF_ERROR(RunSlice(s, batch, seconds, true, &profiles, m));
  m->op_nanos.assign(s.model->num_ops(), 0);
  for (const std::vector<uint64_t>& p : profiles) {
    for (size_t i = 0; i < p.size(); ++i) m->op_nanos[i] += p[i];
  }
  return Status::Ok();
}

// Nearest-rank percentile of sorted samples: the smallest sample with at
// least p% of the samples at or below it.
double Percentile(const std::vector<float>& sorted, double p) {
  const size_t n = sorted.size();
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * n));
  rank = std::clamp<size_t>(rank, 1, n);
  return sorted[rank - 1];
}

// ------------------------------------------------------------- reporting

struct Machine {
  std::string cpu;
  unsigned cores;
  std::vector<std::string> isa;
  double read_bandwidth;  // bytes/s; 0 when not measured
};

Json JsonMachine(const Machine& mc) {
  Json isa = Json::array();
  for (const std::string& f : mc.isa) isa.push_back(f);
  return Json{{"cpu", mc.cpu},
              {"cores", mc.cores},
              {"isa", std::move(isa)},
              {"read_bandwidth_bytes_per_s",
               mc.read_bandwidth > 0 ? JsonNumber(mc.read_bandwidth, 6)
                                     : Json(nullptr)}};
}

struct Arena {
  size_t weights, activations, scratch, other, slot_used;
};

Arena ArenaOf(const LoadedModel& m, int workers) {
  const size_t act = m.activation_bytes_per_worker() * workers;
  const size_t scratch = m.scratch_bytes_per_worker() * workers - act;
  return {m.weight_bytes(), act, scratch,
          m.slot_bytes_used() - m.weight_bytes() - act - scratch,
          m.slot_bytes_used()};
}

struct OpRow {
  std::string name;  // the op's output value
  std::string type;
  double us;  // per invocation
  double flops, bytes;
};

struct TypeRow {
  std::string type;
  int count = 0;
  double us = 0;
};

struct ProfileSummary {
  std::vector<OpRow> ops;
  std::vector<TypeRow> types;  // in order of first appearance
  double invoke_us = 0;        // mean latency of the profiled calls
  double ops_us = 0;           // sum of the op times
  double ternary_gflops = 0;   // all TERNARY_LINEAR ops together
};

// Per microsecond -> per second, in units of 1e9.
double GigaPerSecond(double amount, double us) {
  return us > 0 ? amount / us * 1e-3 : 0;
}

ProfileSummary Summarize(const Subject& s, int batch, const Measurement& m) {
  ProfileSummary p;
  const model::Graph& g = s.file->header().graph();
  const double calls = static_cast<double>(m.profiled_invocations);
  double ternary_flops = 0, ternary_us = 0;
  for (int i = 0; i < s.model->num_ops(); ++i) {
    const OpInfo info = s.model->op_info(i);
    const double us = 1e-3 * static_cast<double>(m.op_nanos[i]) / calls;
    const OpRow op{g.ops(i).output(), runtime::OpTypeName(info.type), us,
                   info.Flops(batch), info.BytesMoved(batch)};
    p.ops.push_back(op);
    p.ops_us += us;
    auto t = std::find_if(p.types.begin(), p.types.end(),
                          [&](const TypeRow& r) { return r.type == op.type; });
    if (t == p.types.end()) t = p.types.insert(t, TypeRow{op.type});
    t->count += 1;
    t->us += us;
    if (info.type == model::TERNARY_LINEAR) {
      ternary_flops += op.flops;
      ternary_us += us;
    }
  }
  p.invoke_us = m.profiled_latency_sum_us / calls;
  p.ternary_gflops = GigaPerSecond(ternary_flops, ternary_us);
  return p;
}

Json JsonProfile(const ProfileSummary& p) {
  Json ops = Json::array();
  for (const OpRow& op : p.ops) {
    ops.push_back(
        Json{{"name", op.name},
             {"type", op.type},
             {"us", JsonNumber(op.us, 6)},
             {"share", JsonNumber(op.us / p.invoke_us, 6)},
             {"flops", JsonNumber(op.flops, 6)},
             {"gflops", JsonNumber(GigaPerSecond(op.flops, op.us), 6)},
             {"bytes", JsonNumber(op.bytes, 6)},
             {"gbytes_per_s", JsonNumber(GigaPerSecond(op.bytes, op.us), 6)}});
  }
  Json types = Json::array();
  for (const TypeRow& t : p.types) {
    types.push_back(Json{{"type", t.type},
                         {"count", t.count},
                         {"us", JsonNumber(t.us, 6)},
                         {"share", JsonNumber(t.us / p.invoke_us, 6)}});
  }
  return Json{{"invoke_us", JsonNumber(p.invoke_us, 6)},
              {"ops_us", JsonNumber(p.ops_us, 6)},
              {"unattributed_us", JsonNumber(p.invoke_us - p.ops_us, 6)},
              {"ternary_gflops", JsonNumber(p.ternary_gflops, 6)},
              {"ops", std::move(ops)},
              {"op_types", std::move(types)}};
}

struct BatchResult {
  int batch;
  uint64_t invocations;
  double p50, p90, p99, max, mean;  // microseconds
  double inferences_per_s;
  bool profiled = false;
  ProfileSummary profile;
};

BatchResult Finish(const Subject& s, int batch, Measurement& m, bool profiled) {
  std::sort(m.latency_us.begin(), m.latency_us.end());
  double sum = 0;
  for (float v : m.latency_us) sum += v;
  BatchResult r;
  r.batch = batch;
  r.invocations = m.invocations;
  r.p50 = Percentile(m.latency_us, 50);
  r.p90 = Percentile(m.latency_us, 90);
  r.p99 = Percentile(m.latency_us, 99);
  r.max = m.latency_us.back();
  r.mean = sum / static_cast<double>(m.latency_us.size());
  r.inferences_per_s =
      static_cast<double>(m.invocations) * batch / m.wall_seconds;
  r.profiled = profiled;
  if (profiled) r.profile = Summarize(s, batch, m);
  return r;
}

Json JsonResult(const BatchResult& r) {
  Json j{{"batch", r.batch},
         {"invocations", r.invocations},
         {"latency_us", Json{{"p50", JsonNumber(r.p50, 6)},
                             {"p90", JsonNumber(r.p90, 6)},
                             {"p99", JsonNumber(r.p99, 6)},
                             {"max", JsonNumber(r.max, 6)},
                             {"mean", JsonNumber(r.mean, 6)}}},
         {"inferences_per_s", JsonNumber(r.inferences_per_s, 6)}};
  if (r.profiled) j["profile"] = JsonProfile(r.profile);
  return j;
}

Json JsonModel(const Subject& s, int workers,
               const std::vector<BatchResult>& results) {
  const LoadedModel& m = *s.model;
  const Arena a = ArenaOf(m, workers);
  Json rs = Json::array();
  for (const BatchResult& r : results) rs.push_back(JsonResult(r));
  return Json{{"path", s.path},
              {"name", m.name()},
              {"version", m.version()},
              {"ops", m.num_ops()},
              {"max_batch", m.max_batch()},
              {"load_ms", JsonNumber(s.load_ms, 6)},
              {"golden_check", m.has_golden() ? "passed" : "none"},
              {"arena", Json{{"weights_bytes", a.weights},
                             {"activations_bytes", a.activations},
                             {"scratch_bytes", a.scratch},
                             {"other_bytes", a.other},
                             {"slot_used_bytes", a.slot_used}}},
              {"results", std::move(rs)}};
}

std::string Bytes(double b) {
  char buf[32];
  if (b >= 1 << 20) {
    std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1 << 20));
  } else if (b >= 1 << 10) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", b / (1 << 10));
  } else {
    std::snprintf(buf, sizeof buf, "%.0f B", b);
  }
  return buf;
}

// The "machine" lines: CPU, cores, ISA, the read bandwidth measured.
void PrintMachineLines(const Machine& mc) {
  std::string isa;
  for (const std::string& f : mc.isa) isa += " " + f;
  std::printf("machine   %s, %u cores, ISA:%s\n", mc.cpu.c_str(), mc.cores,
              isa.empty() ? " (none of the kernels')" : isa.c_str());
  if (mc.read_bandwidth > 0) {
    std::printf(
        "          read bandwidth %.1f GiB/s (one core, measured now)\n",
        mc.read_bandwidth / (1 << 30));
  }
}

void PrintMachine(const Machine& mc, const runtime::TernaryKernel& k,
                  const BenchOptions& o, const std::string& input) {
  PrintMachineLines(mc);
  std::printf("kernel    %s (%s), weight layout %s\n", k.name, k.isa, k.layout);
  std::printf(
      "settings  %d thread%s, %.3g s per batch size after %.3g s "
      "warmup, inputs %s\n",
      o.threads, o.threads == 1 ? "" : "s", o.seconds, o.warmup, input.c_str());
}

void PrintModel(const Subject& s, int workers) {
  const LoadedModel& m = *s.model;
  const Arena a = ArenaOf(m, workers);
  std::printf("\nmodel     %s version %llu (%s), %d ops, max batch %d\n",
              m.name(), static_cast<unsigned long long>(m.version()),
              s.path.c_str(), m.num_ops(), m.max_batch());
  std::printf("load      %.2f ms (read, check, repack%s)\n", s.load_ms,
              m.has_golden() ? ", golden check passed" : "; no golden pair");
  std::printf(
      "arena     weights %s, activations %s, scratch %s, other %s: "
      "%s of the slot\n",
      Bytes(a.weights).c_str(), Bytes(a.activations).c_str(),
      Bytes(a.scratch).c_str(), Bytes(a.other).c_str(),
      Bytes(a.slot_used).c_str());
}

void PrintResultsHeader() {
  std::printf("\n%6s %10s %10s %10s %10s %10s %12s\n", "batch", "calls",
              "p50 us", "p90 us", "p99 us", "max us", "inferences/s");
}

void PrintResult(const BatchResult& r, const char* label = "") {
  std::printf("%6d %10llu %10.2f %10.2f %10.2f %10.2f %12.0f%s\n", r.batch,
              static_cast<unsigned long long>(r.invocations), r.p50, r.p90,
              r.p99, r.max, r.inferences_per_s, label);
}

void PrintProfile(const BatchResult& r) {
  const ProfileSummary& p = r.profile;
  std::printf(
      "\nprofile, batch %d: %.2f us per call, ops %.2f us (%.1f%%), ternary "
      "products %.2f GFLOPS\n",
      r.batch, p.invoke_us, p.ops_us, 100 * p.ops_us / p.invoke_us,
      p.ternary_gflops);
  std::printf("  %-3s %-20s %-15s %10s %7s %9s %9s\n", "#", "op", "type", "us",
              "share", "GFLOPS", "GB/s");
  size_t costliest = 0;
  for (size_t i = 0; i < p.ops.size(); ++i) {
    if (p.ops[i].us > p.ops[costliest].us) costliest = i;
  }
  for (size_t i = 0; i < p.ops.size(); ++i) {
    const OpRow& op = p.ops[i];
    char gflops[16] = "";
    if (op.flops > 0) {
      std::snprintf(gflops, sizeof gflops, "%.2f",
                    GigaPerSecond(op.flops, op.us));
    }
    std::printf("  %-3zu %-20.20s %-15s %10.3f %6.1f%% %9s %9.2f%s\n", i,
                op.name.c_str(), op.type.c_str(), op.us,
                100 * op.us / p.invoke_us, gflops,
                GigaPerSecond(op.bytes, op.us),
                i == costliest ? "  <- costliest" : "");
  }
  std::printf("  %-3s %-20s %-15s %10.3f %6.1f%%\n", "", "(outside ops)", "",
              p.invoke_us - p.ops_us,
              100 * (p.invoke_us - p.ops_us) / p.invoke_us);
  std::printf("  by type:");
  for (const TypeRow& t : p.types) {
    std::printf(" %s x%d %.1f%%", t.type.c_str(), t.count,
                100 * t.us / p.invoke_us);
  }
  std::printf("\n");
}

// ------------------------------------------------ language models (--prompt)

// Peak resident set of this process (VmHWM) in bytes; 0 when unknown.
size_t PeakRssBytes() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  size_t kib = 0;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::sscanf(line, "VmHWM: %zu kB", &kib) == 1) break;
  }
  std::fclose(f);
  return kib << 10;
}

struct LmRates {
  std::vector<double> pp, tg;  // tokens/s per repetition
  std::vector<double> ttft_ms;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// llama-bench's two tests on one sequence: pp (one Eval of --prompt random
// tokens from position 0: time to the first token's logits) and tg
// (--generate single-token Evals from position 0, each feeding the greedy
// token of the one before; the arg max between them is not timed).
int BenchLm(const BenchOptions& o, ModelFile file, const std::string& path) {
  if (!o.compare.empty()) {
    return Fail(InvalidArgument(
        "--compare measures graph models; for language models run ternctl "
        "bench on each file"));
  }
  if (o.prompt < 0 || o.generate < 0 || o.prompt + o.generate == 0 ||
      o.prompt > (1 << 20) || o.generate > (1 << 20)) {
    return Fail(InvalidArgument(
        "--prompt %d --generate %d: expected token counts of 0 or more, not "
        "both 0",
        o.prompt, o.generate));
  }
  if (o.repetitions < 1 || o.repetitions > 1000) {
    return Fail(
        InvalidArgument("--repetitions %d: expected 1..1000", o.repetitions));
  }
  const model::LanguageModel& h = file.header().lm();
  const int wanted = std::max(o.prompt, o.generate) + 1;
  if (h.context() > 0 && static_cast<uint32_t>(wanted) > h.context()) {
    return Fail(InvalidArgument(
        "--prompt %d / --generate %d need %d positions; model '%s' (%s) was "
        "made for a context of %u",
        o.prompt, o.generate, wanted, file.header().name().c_str(),
        path.c_str(), h.context()));
  }
  // The golden check (greedy tokens recorded by convert) runs too.
  const int context =
      std::max(wanted, h.golden_prompt_size() + h.golden_tokens_size() + 1);
  runtime::RuntimeOptions ro;
  ro.slots = 1;
  ro.workers = 1;
  ro.kernel = o.kernel;
  if (o.arena_given) {
    ro.arena_bytes = o.arena_mb << 20;
  } else {
    // The file's bytes hold every weight at least as large as the arena
    // needs them; add the KV cache (F16 K and V) and room for scratch.
    const uint64_t head_dim = h.heads() ? h.embedding() / h.heads() : 0;
    const uint64_t kv = uint64_t{2} * 2 * h.layers() * h.kv_heads() * head_dim *
                        static_cast<uint64_t>(context);
    ro.arena_bytes = ((file.file_size() + kv + (uint64_t{64} << 20)) >> 20)
                     << 20;
  }
  Result<std::unique_ptr<runtime::Runtime>> rt = runtime::Runtime::Create(ro);
  if (!rt.ok()) return Fail(rt.status());
  runtime::LmOptions lo;
  lo.max_context = context;
  lo.sequences = 1;
  lo.threads = o.threads_given ? o.threads : 0;
  const Clock::time_point start = Clock::now();
  Result<const runtime::LmModel*> loaded = (*rt)->LoadLm(0, file, lo);
  if (!loaded.ok()) return Fail(loaded.status());  // names the file
  const runtime::LmModel& m = **loaded;
  if (m.has_golden()) {
    Status golden = m.CheckGolden();
    if (!golden.ok()) return Fail(golden.Prepend(path));
  }
  const double load_ms = 1e3 * SecondsSince(start);
  const size_t file_bytes = file.file_size();
  { ModelFile gone = std::move(file); }  // the arena holds all of it now

  Machine mc{runtime::CpuModelName(), std::thread::hardware_concurrency(),
             runtime::CpuIsaFlags(), 0};
  if (o.bandwidth_mb > 0) {
    Result<double> bw =
        runtime::MeasureReadBandwidth(o.bandwidth_mb << 20, /*passes=*/3);
    if (!bw.ok()) return Fail(bw.status());
    mc.read_bandwidth = *bw;
  }

  const uint32_t V = m.shape().vocab;
  std::vector<int32_t> prompt(static_cast<size_t>(o.prompt));
  uint64_t x = 1;  // fixed random prompt tokens, the same every run
  for (int32_t& t : prompt) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    t = static_cast<int32_t>((x >> 33) % V);
  }
  LmRates rates;
  auto run_pp = [&]() -> Status {
    const Clock::time_point t0 = Clock::now();
    TERND_RETURN_IF_ERROR(m.Eval(0, prompt, 0));
    const double s = SecondsSince(t0);
    rates.pp.push_back(o.prompt / s);
    rates.ttft_ms.push_back(1e3 * s);
    return Status::Ok();
  };
  auto run_tg = [&]() -> Status {
    int32_t t = prompt.empty() ? 1 : prompt[0];
    double s = 0;
    for (int i = 0; i < o.generate; ++i) {
      const Clock::time_point t0 = Clock::now();
      TERND_RETURN_IF_ERROR(m.Eval(0, {&t, 1}, i));
      s += SecondsSince(t0);
      runtime::Argmax(m.logits(0), 1, V, &t);
    }
    rates.tg.push_back(o.generate / s);
    return Status::Ok();
  };
  // One unmeasured round (page faults, the team's first rounds), then the
  // repetitions.
  for (int r = -1; r < o.repetitions; ++r) {
    const LmRates before = rates;
    if (o.prompt > 0) {
      Status st = run_pp();
      if (!st.ok()) return Fail(st);
    }
    if (o.generate > 0) {
      Status st = run_tg();
      if (!st.ok()) return Fail(st);
    }
    if (r < 0) rates = before;
  }
  const double bpt = static_cast<double>(m.bytes_per_token());
  const double roofline = mc.read_bandwidth > 0 ? mc.read_bandwidth / bpt : 0;
  const double tg = Median(rates.tg), pp = Median(rates.pp);
  const size_t peak_rss = PeakRssBytes();
  const runtime::TernaryKernel& k = m.kernel();

  if (o.json) {
    auto stat = [](const std::vector<double>& v) {
      if (v.empty()) return Json(nullptr);
      Json all = Json::array();
      for (double d : v) all.push_back(JsonNumber(d, 6));
      return Json{{"median", JsonNumber(Median(v), 6)},
                  {"min", JsonNumber(*std::min_element(v.begin(), v.end()), 6)},
                  {"max", JsonNumber(*std::max_element(v.begin(), v.end()), 6)},
                  {"runs", std::move(all)}};
    };
    Json out{
        {"machine", JsonMachine(mc)},
        {"settings", Json{{"kernel", k.name},
                          {"kernel_isa", k.isa},
                          {"threads", m.threads()},
                          {"prompt_tokens", o.prompt},
                          {"generate_tokens", o.generate},
                          {"repetitions", o.repetitions}}},
        {"model", Json{{"name", m.name()},
                       {"version", m.version()},
                       {"path", path},
                       {"file_bytes", file_bytes},
                       {"load_ms", JsonNumber(load_ms, 6)},
                       {"golden_check", m.has_golden()},
                       {"layers", m.shape().layers},
                       {"embedding", m.shape().embedding},
                       {"vocab", V},
                       {"head", runtime::DTypeName(m.shape().head_dtype)},
                       {"tq1_matrices", m.tq1_matrices()},
                       {"ternary_matrices", m.ternary_matrices()},
                       {"weight_bytes", m.weight_bytes()},
                       {"kv_cache_bytes", m.kv_cache_bytes()},
                       {"scratch_bytes", m.scratch_bytes()},
                       {"slot_bytes_used", m.slot_bytes_used()},
                       {"bytes_per_token", m.bytes_per_token()},
                       {"peak_rss_bytes", peak_rss}}},
        {"pp_tokens_per_s", stat(rates.pp)},
        {"tg_tokens_per_s", stat(rates.tg)},
        {"time_to_first_token_ms", stat(rates.ttft_ms)},
        {"roofline_tokens_per_s",
         roofline > 0 ? JsonNumber(roofline, 6) : Json(nullptr)},
        {"tg_of_roofline", roofline > 0 && tg > 0 ? JsonNumber(tg / roofline, 6)
                                                  : Json(nullptr)}};
    PrintJson(out);
    return 0;
  }
  PrintMachineLines(mc);
  std::printf("kernel    %s (%s), %d of %d matrices 1.6-bit; head %s\n", k.name,
              k.isa, m.tq1_matrices(), m.ternary_matrices(),
              runtime::DTypeName(m.shape().head_dtype));
  std::printf("settings  %d thread%s, %d repetitions after one unmeasured\n",
              m.threads(), m.threads() == 1 ? "" : "s", o.repetitions);
  std::printf(
      "\nmodel     %s version %llu (%s), %u layers, embedding %u, vocabulary "
      "%u\n",
      m.name(), static_cast<unsigned long long>(m.version()), path.c_str(),
      m.shape().layers, m.shape().embedding, V);
  std::printf("load      %.0f ms (read, check, repack%s)\n", load_ms,
              m.has_golden() ? ", golden check passed" : "; no golden tokens");
  std::printf(
      "arena     weights %s, KV cache %s (%d positions), scratch %s: %s of "
      "the slot; peak RSS %s\n",
      Bytes(m.weight_bytes()).c_str(), Bytes(m.kv_cache_bytes()).c_str(),
      m.max_context(), Bytes(m.scratch_bytes()).c_str(),
      Bytes(m.slot_bytes_used()).c_str(), Bytes(peak_rss).c_str());
  std::printf("\n%-8s %12s %12s %12s\n", "test", "tokens/s", "min", "max");
  if (!rates.pp.empty()) {
    std::printf("%-8s %12.2f %12.2f %12.2f   time to first token %.1f ms\n",
                ("pp" + std::to_string(o.prompt)).c_str(), pp,
                *std::min_element(rates.pp.begin(), rates.pp.end()),
                *std::max_element(rates.pp.begin(), rates.pp.end()),
                Median(rates.ttft_ms));
  }
  if (!rates.tg.empty()) {
    std::printf("%-8s %12.2f %12.2f %12.2f\n",
                ("tg" + std::to_string(o.generate)).c_str(), tg,
                *std::min_element(rates.tg.begin(), rates.tg.end()),
                *std::max_element(rates.tg.begin(), rates.tg.end()));
  }
  std::printf("\nbytes per token %s", Bytes(bpt).c_str());
  if (roofline > 0) {
    std::printf(": roofline %.2f tokens/s at the measured bandwidth", roofline);
    if (tg > 0) std::printf(", tg at %.2f of it", tg / roofline);
  }
  std::printf("\n");
  return 0;
}

// ------------------------------------------------------------- the command

int Bench(const BenchOptions& o) {
  {
    // A language model (or --prompt/--generate) takes the other path.
    const std::string& path =
        o.path.empty() && !o.compare.empty() ? o.compare[0] : o.path;
    if (!path.empty()) {
      Result<ModelFile> file = ModelFile::Open(path);
      if (!file.ok()) return Fail(file.status());
      if (file->is_language_model()) {
        return BenchLm(o, std::move(*file), path);
      }
      if (o.prompt_given) {
        return Fail(FailedPrecondition(
            "--prompt/--generate: model '%s' (%s) is a graph model, which has "
            "no prompt or generated tokens (they measure language models; "
            "leave them out to measure inferences)",
            file->header().name().c_str(), path.c_str()));
      }
    }
  }
  if (o.path.empty() == o.compare.empty()) {
    return Fail(InvalidArgument(
        "%s", o.path.empty() ? "give a MODEL file, or --compare A.tern B.tern"
                             : "give either a MODEL file or --compare A.tern "
                               "B.tern, not both"));
  }
  if (o.threads < 1 || o.threads > kMaxThreads) {
    return Fail(InvalidArgument("--threads %d: expected 1..%d", o.threads,
                                kMaxThreads));
  }
  if (!(o.seconds > 0) || !(o.warmup >= 0)) {
    return Fail(InvalidArgument(
        "--seconds %g, --warmup %g: expected a time above 0 s to measure and "
        "a warmup of 0 s or more",
        o.seconds, o.warmup));
  }
  Result<std::vector<int>> batches = ParseBatches(o.batches);
  if (!batches.ok()) return Fail(batches.status());

  std::vector<float> values;
  std::string input_desc = "uniform random in [-1, 1], seed 1";
  if (!o.input_path.empty()) {
    Result<std::string> text = ReadText(o.input_path);
    if (!text.ok()) return Fail(text.status());
    const std::string origin =
        o.input_path == "-" ? std::string("stdin") : o.input_path;
    Result<std::vector<float>> parsed = ParseValues(*text, origin);
    if (!parsed.ok()) return Fail(parsed.status());
    if (parsed->empty()) {
      return Fail(InvalidArgument("%s has no input values", origin.c_str()));
    }
    values = std::move(*parsed);
    input_desc = "from " + origin;
  }

  const std::vector<std::string> paths =
      o.compare.empty() ? std::vector<std::string>{o.path} : o.compare;
  runtime::RuntimeOptions ro;
  ro.arena_bytes = o.arena_mb << 20;
  ro.slots = static_cast<int>(paths.size());
  ro.workers = o.threads;
  ro.kernel = o.kernel;
  Result<std::unique_ptr<runtime::Runtime>> rt = runtime::Runtime::Create(ro);
  if (!rt.ok()) return Fail(rt.status());
  std::vector<Subject> subjects;
  for (size_t i = 0; i < paths.size(); ++i) {
    Result<Subject> s = LoadSubject(**rt, static_cast<int>(i), paths[i]);
    if (!s.ok()) return Fail(s.status());
    subjects.push_back(std::move(*s));
  }
  for (const Subject& s : subjects) {
    for (int b : *batches) {
      if (b > s.model->max_batch()) {
        return Fail(InvalidArgument(
            "--batch %d is above the max batch of model '%s' (%s): %d", b,
            s.model->name(), s.path.c_str(), s.model->max_batch()));
      }
    }
    const std::string origin =
        o.input_path == "-" ? std::string("stdin") : o.input_path;
    Status filled = FillInputs(s, values, origin);
    if (!filled.ok()) return Fail(filled);
  }

  Machine mc{runtime::CpuModelName(), std::thread::hardware_concurrency(),
             runtime::CpuIsaFlags(), 0};
  if (o.bandwidth_mb > 0) {
    Result<double> bw =
        runtime::MeasureReadBandwidth(o.bandwidth_mb << 20, /*passes=*/3);
    if (!bw.ok()) return Fail(bw.status());
    mc.read_bandwidth = *bw;
  }

  // results[subject][batch index]
  std::vector<std::vector<BatchResult>> results(subjects.size());
  for (int batch : *batches) {
    std::vector<Measurement> ms(subjects.size());
    for (const Subject& s : subjects) {
      Status st = RunSlice(s, batch, o.warmup, false, nullptr, nullptr);
      if (!st.ok()) return Fail(st);
    }
    if (subjects.size() == 1) {
      Status st =
          RunSlice(subjects[0], batch, o.seconds, true, nullptr, &ms[0]);
      if (!st.ok()) return Fail(st);
    } else {
      // Interleaved: A, B, A, B, ... in short slices until each has had
      // --seconds, so both see the same machine state (clock, other load).
      const double slice = std::min(kCompareSliceSeconds, o.seconds / 10);
      double done = 0;
      while (done < o.seconds) {
        const double t = std::min(slice, o.seconds - done);
        for (size_t i = 0; i < subjects.size(); ++i) {
          Status st = RunSlice(subjects[i], batch, t, true, nullptr, &ms[i]);
          if (!st.ok()) return Fail(st);
        }
        done += t;
      }
    }
    for (size_t i = 0; i < subjects.size(); ++i) {
      if (o.profile) {
        Status st = Profile(subjects[i], batch, o.seconds, &ms[i]);
        if (!st.ok()) return Fail(st);
      }
      results[i].push_back(Finish(subjects[i], batch, ms[i], o.profile));
    }
  }

  const runtime::TernaryKernel& k = (*rt)->kernel();
  if (o.json) {
    Json settings{{"kernel", k.name},
                  {"kernel_isa", k.isa},
                  {"weight_layout", k.layout},
                  {"threads", o.threads},
                  {"seconds", JsonNumber(o.seconds, 6)},
                  {"warmup_seconds", JsonNumber(o.warmup, 6)},
                  {"inputs", input_desc},
                  {"profile", o.profile}};
    Json out{{"machine", JsonMachine(mc)}, {"settings", std::move(settings)}};
    if (subjects.size() == 1) {
      out["model"] = JsonModel(subjects[0], o.threads, results[0]);
    } else {
      Json models = Json::array();
      for (size_t i = 0; i < subjects.size(); ++i) {
        models.push_back(JsonModel(subjects[i], o.threads, results[i]));
      }
      Json ratios = Json::array();
      for (size_t b = 0; b < batches->size(); ++b) {
        const BatchResult &a = results[0][b], &c = results[1][b];
        ratios.push_back(
            Json{{"batch", a.batch},
                 {"latency_p50", JsonNumber(c.p50 / a.p50, 6)},
                 {"inferences_per_s",
                  JsonNumber(c.inferences_per_s / a.inferences_per_s, 6)}});
      }
      out["models"] = std::move(models);
      out["ratio"] = std::move(ratios);
    }
    PrintJson(out);
    return 0;
  }

  PrintMachine(mc, k, o, input_desc);
  for (size_t i = 0; i < subjects.size(); ++i) {
    PrintModel(subjects[i], o.threads);
    if (subjects.size() == 1) {
      PrintResultsHeader();
      for (const BatchResult& r : results[i]) PrintResult(r);
    }
  }
  if (subjects.size() == 2) {
    std::printf("\ninterleaved in slices of %.3g s; ratio = B / A\n",
                std::min(kCompareSliceSeconds, o.seconds / 10));
    PrintResultsHeader();
    for (size_t b = 0; b < batches->size(); ++b) {
      const BatchResult &a = results[0][b], &c = results[1][b];
      PrintResult(a, "  A");
      PrintResult(c, "  B");
      std::printf("%6s %10s %10.3f %10s %10s %10s %12.3f  B/A\n", "", "",
                  c.p50 / a.p50, "", "", "",
                  c.inferences_per_s / a.inferences_per_s);
    }
  }
  for (size_t i = 0; i < subjects.size(); ++i) {
    for (const BatchResult& r : results[i]) {
      if (!r.profiled) continue;
      if (subjects.size() == 2) {
        std::printf("\n%s (%s):", i == 0 ? "A" : "B", subjects[i].path.c_str());
      }
      PrintProfile(r);
    }
  }
  return 0;
}

}  // namespace

void AddBenchCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Measure a model on this machine: latency percentiles, inferences/s, "
      "arena bytes, load time; --profile: time per op");
  cmd->add_option("MODEL", o->path, "Model file (.tern)");
  cmd->add_option("--compare", o->compare,
                  "Measure two models interleaved and print B/A")
      ->expected(2)
      ->type_name("A.tern B.tern");
  cmd->add_option("--batch", o->batches,
                  "Batch sizes, comma-separated (e.g. 1,8,64)")
      ->capture_default_str();
  cmd->add_option("--threads", o->threads,
                  "Workers invoking concurrently, one thread each")
      ->capture_default_str();
  cmd->add_option("--kernel", o->kernel,
                  "Ternary kernel variant (auto, ref, ...)")
      ->capture_default_str();
  cmd->add_option("--seconds", o->seconds, "Measured time per batch size")
      ->capture_default_str();
  cmd->add_option("--warmup", o->warmup,
                  "Unmeasured time per batch size before measuring")
      ->capture_default_str();
  cmd->add_option("-i,--input", o->input_path,
                  "Input rows from a file ('-' for stdin) instead of random "
                  "values; repeated to fill a batch");
  cmd->add_flag("--profile", o->profile,
                "Also time every op (a second pass of --seconds)");
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->add_option("--arena-mb", o->arena_mb, "Arena size in MiB")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  cmd->add_option("--bandwidth-mb", o->bandwidth_mb,
                  "Buffer for the read-bandwidth measurement in MiB; 0 skips "
                  "it")
      ->capture_default_str()
      ->check(CLI::Range(0, 65536));
  auto* prompt =
      cmd->add_option(
             "--prompt", o->prompt,
             "Language models: prompt tokens evaluated at once (pp; 0: none)")
          ->capture_default_str();
  auto* generate =
      cmd->add_option("--generate", o->generate,
                      "Language models: tokens generated one at a time (tg; "
                      "0: none)")
          ->capture_default_str();
  cmd->add_option("--repetitions", o->repetitions,
                  "Language models: measured runs of each test (after one "
                  "unmeasured)")
      ->capture_default_str();
  cmd->callback([o, prompt, generate, cmd, exit_code] {
    o->prompt_given = prompt->count() > 0 || generate->count() > 0;
    o->threads_given = cmd->get_option("--threads")->count() > 0;
    o->arena_given = cmd->get_option("--arena-mb")->count() > 0;
    *exit_code = Bench(*o);
  });
}

}  // namespace ternd::ternctl
