// `ternctl infer`, `info`, `health` and `stats`: talk to a running ternd over
// its unix socket (docs/protocol.md).
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/file.h"
#include "daemon/client/client.h"
#include "tools/ternctl/commands.h"
#include "tools/ternctl/json_output.h"
#include "tools/ternctl/values.h"
#include "tools/ternctl/wav.h"

namespace ternd::ternctl {
namespace {

constexpr char kSystemSocket[] = "/run/ternd/ternd.sock";
constexpr char kLocalSocket[] = "ternd.sock";

struct DaemonOptions {
  std::string socket;
  int timeout_ms = 10000;
  bool json = false;
};

int Fail(const Status& s) {
  std::fprintf(stderr, "ternctl: %s: %s\n", StatusCodeName(s.code()),
               s.message());
  return 1;
}

// --socket, else $TERND_SOCKET, else the system socket if it exists, else
// the embedded default's socket in the working directory. `*from` says
// which, for error messages.
std::string SocketPath(const DaemonOptions& o, const char** from) {
  if (!o.socket.empty()) {
    *from = "given with -s/--socket";
    return o.socket;
  }
  if (const char* env = std::getenv("TERND_SOCKET"); env && *env) {
    *from = "from $TERND_SOCKET";
    return env;
  }
  struct stat st;
  *from = "the default; -s/--socket or $TERND_SOCKET name another";
  if (stat(kSystemSocket, &st) == 0) return kSystemSocket;
  return kLocalSocket;
}

Result<std::unique_ptr<client::Client>> Connect(const DaemonOptions& o) {
  client::ClientOptions co;
  co.timeout_ms = o.timeout_ms;
  const char* from = "";
  Result<std::unique_ptr<client::Client>> c =
      client::Client::Connect(SocketPath(o, &from), co);
  if (!c.ok()) {
    return Errorf(c.status().code(), "%s (socket %s)", c.status().message(),
                  from);
  }
  return c;
}

const char* DTypeText(wire::DType d) {
  switch (d) {
    case wire::F32:
      return "F32";
    case wire::I8:
      return "I8";
    case wire::I32:
      return "I32";
    default:
      return "?";
  }
}

struct InferOptions {
  DaemonOptions daemon;
  std::string input_path;
  std::vector<std::string> values;
  std::string wav_path;
  std::vector<std::string> outputs;
  uint64_t deadline_ms = 0;
};

// The rows of `ternctl infer --wav FILE`: the model's one input must be
// read by an audio front end (ModelInfo's sample_rate) at the file's rate;
// the file holds one row of samples or a whole number of consecutive rows.
Result<std::vector<float>> WavRows(const std::string& path,
                                   const wire::ModelInfoResponse& info) {
  const char* p = path.c_str();
  if (info.inputs_size() != 1 || info.inputs(0).sample_rate() == 0) {
    return InvalidArgument(
        "--wav %s: model '%s' has no audio input (its only input must be read "
        "by an AUDIO_FEATURES front end); give values with -i or --values",
        p, info.name().c_str());
  }
  const wire::TensorSpec& in = info.inputs(0);
  Result<std::vector<uint8_t>> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  Result<WavAudio> wav = ParseWav(*bytes, path);
  if (!wav.ok()) return wav.status();
  if (wav->sample_rate != in.sample_rate()) {
    return InvalidArgument(
        "%s: %u Hz audio; model '%s' takes %u Hz (resample the file first, "
        "e.g. sox IN.wav -r %u OUT.wav)",
        p, wav->sample_rate, info.name().c_str(), in.sample_rate(),
        in.sample_rate());
  }
  const size_t n = wav->samples.size(), row = in.features();
  if (n == 0 || n % row != 0 || n / row > info.max_batch()) {
    return InvalidArgument(
        "%s: %zu samples (%.3f s); model '%s' takes %zu samples (%.3f s) per "
        "row, 1 to %u rows",
        p, n, static_cast<double>(n) / wav->sample_rate, info.name().c_str(),
        row, static_cast<double>(row) / in.sample_rate(), info.max_batch());
  }
  return std::move(wav->samples);
}

void PrintInferResponse(const wire::InferResponse& r) {
  for (const wire::Tensor& t : r.outputs()) {
    const uint32_t rows = t.shape_size() > 0 ? t.shape(0) : 1;
    const size_t count = t.data().size() / 4;
    const size_t per_row = rows ? count / rows : 0;
    std::printf("%s (%s, %u x %zu)\n", t.name().c_str(), DTypeText(t.dtype()),
                rows, per_row);
    for (uint32_t b = 0; b < rows; ++b) {
      std::printf("  ");
      for (size_t f = 0; f < per_row; ++f) {
        const size_t j = b * per_row + f;
        const char* sep = f ? " " : "";
        if (t.dtype() == wire::I32) {
          std::printf("%s%d", sep, client::I32Data(t)[j]);
        } else {
          std::printf("%s%.6g", sep,
                      static_cast<double>(client::F32Data(t)[j]));
        }
      }
      std::printf("\n");
    }
  }
}

// The shape of `ternctl run --json`, plus the daemon's timings.
void PrintInferResponseJson(const wire::InferResponse& r) {
  Json outputs = Json::object();
  for (const wire::Tensor& t : r.outputs()) {
    const uint32_t rows = t.shape_size() > 0 ? t.shape(0) : 1;
    const size_t count = t.data().size() / 4;
    const size_t per_row = rows ? count / rows : 0;
    Json values = Json::array();
    for (uint32_t b = 0; b < rows; ++b) {
      Json row = Json::array();
      for (size_t f = 0; f < per_row; ++f) {
        const size_t j = b * per_row + f;
        if (t.dtype() == wire::I32) {
          row.push_back(client::I32Data(t)[j]);
        } else {
          row.push_back(JsonNumber(client::F32Data(t)[j], 6));
        }
      }
      values.push_back(std::move(row));
    }
    outputs[t.name()] = std::move(values);
  }
  PrintJson(Json{{"model", r.model()},
                 {"version", r.model_version()},
                 {"outputs", std::move(outputs)},
                 {"queue_us", r.queue_us()},
                 {"compute_us", r.compute_us()}});
}

int Infer(const InferOptions& opt) {
  Result<std::unique_ptr<client::Client>> c = Connect(opt.daemon);
  if (!c.ok()) return Fail(c.status());
  Result<wire::ModelInfoResponse> info = (*c)->ModelInfo();
  if (!info.ok()) return Fail(info.status());
  if (info->has_language_model()) {
    return Fail(FailedPrecondition(
        "model '%s' is a language model: use ternctl generate",
        info->name().c_str()));
  }

  std::string origin;
  std::string text;
  Result<std::vector<float>> values = std::vector<float>{};
  if (!opt.wav_path.empty()) {
    origin = opt.wav_path;
    values = WavRows(opt.wav_path, *info);
  } else if (!opt.values.empty()) {
    origin = "--values";
    for (const std::string& v : opt.values) text += v + " ";
  } else {
    const std::string path = opt.input_path.empty() ? "-" : opt.input_path;
    origin = path == "-" ? "stdin" : path;
    Result<std::string> read = ReadText(path);
    if (!read.ok()) return Fail(read.status());
    text = std::move(*read);
  }
  if (opt.wav_path.empty()) values = ParseValues(text, origin);
  if (!values.ok()) return Fail(values.status());
  size_t row = 0;
  for (const wire::TensorSpec& in : info->inputs()) row += in.features();
  if (values->empty() || row == 0 || values->size() % row != 0 ||
      values->size() / row > info->max_batch()) {
    return Fail(InvalidArgument(
        "%s has %zu values; model '%s' takes rows of %zu values (one row per "
        "sample, inputs in order), 1 to %u rows",
        origin.c_str(), values->size(), info->name().c_str(), row,
        info->max_batch()));
  }
  const uint32_t rows = static_cast<uint32_t>(values->size() / row);
  wire::InferRequest request;
  // Split each row into the model's inputs, in order.
  size_t offset = 0;
  for (const wire::TensorSpec& in : info->inputs()) {
    std::vector<float> data;
    data.reserve(static_cast<size_t>(rows) * in.features());
    for (uint32_t b = 0; b < rows; ++b) {
      const float* src = values->data() + b * row + offset;
      data.insert(data.end(), src, src + in.features());
    }
    client::AddF32Input(&request, in.name(), rows, in.features(), data);
    offset += in.features();
  }
  for (const std::string& o : opt.outputs) request.add_outputs(o);
  request.set_deadline_us(opt.deadline_ms * 1000);
  Result<wire::InferResponse> r = (*c)->Infer(request);
  if (!r.ok()) return Fail(r.status());
  if (opt.daemon.json) {
    PrintInferResponseJson(*r);
  } else {
    PrintInferResponse(*r);
  }
  return 0;
}

int Info(const DaemonOptions& opt) {
  Result<std::unique_ptr<client::Client>> c = Connect(opt);
  if (!c.ok()) return Fail(c.status());
  Result<wire::ModelInfoResponse> i = (*c)->ModelInfo();
  if (!i.ok()) return Fail(i.status());
  if (opt.json) {
    auto specs = [](const auto& list) {
      Json out = Json::array();
      for (const wire::TensorSpec& t : list) {
        out.push_back(Json{{"name", t.name()},
                           {"dtype", DTypeText(t.dtype())},
                           {"features", t.features()}});
      }
      return out;
    };
    Json matrices = Json::array();
    for (const wire::TernaryMatrix& t : i->ternary_matrices()) {
      matrices.push_back(Json{{"op", t.op()},
                              {"rows", t.rows()},
                              {"cols", t.cols()},
                              {"kernel", t.kernel()},
                              {"layout", t.layout()},
                              {"packed_bytes", t.packed_bytes()}});
    }
    Json out{{"name", i->name()},
             {"version", i->version()},
             {"inputs", specs(i->inputs())},
             {"outputs", specs(i->outputs())},
             {"max_batch", i->max_batch()},
             {"kernel", i->kernel()},
             {"workers", i->workers()},
             {"swap", i->swap()},
             {"arena_bytes", i->arena_bytes()},
             {"slot_bytes", i->slot_bytes()},
             {"slot_bytes_used", i->slot_bytes_used()},
             {"ternary_matrices", matrices}};
    if (i->has_language_model()) {
      const wire::LanguageModelInfo& lm = i->language_model();
      out["language_model"] = Json{{"architecture", lm.architecture()},
                                   {"layers", lm.layers()},
                                   {"embedding", lm.embedding()},
                                   {"vocab", lm.vocab()},
                                   {"context", lm.context()},
                                   {"sequences", lm.sequences()},
                                   {"threads", lm.threads()},
                                   {"kv_cache_bytes", lm.kv_cache_bytes()},
                                   {"bytes_per_token", lm.bytes_per_token()},
                                   {"tokenizer", lm.tokenizer()},
                                   {"head", lm.head()},
                                   {"tq1_matrices", lm.tq1_matrices()},
                                   {"ternary_matrices", lm.ternary_matrices()}};
    }
    PrintJson(out);
    return 0;
  }
  if (i->has_language_model()) {
    const wire::LanguageModelInfo& lm = i->language_model();
    std::printf("model        %s (language model, %s)\n", i->name().c_str(),
                lm.architecture().c_str());
    std::printf("version      %" PRIu64 "\n", i->version());
    std::printf("layers       %u, embedding %u, vocabulary %u\n", lm.layers(),
                lm.embedding(), lm.vocab());
    std::printf("context      %u tokens x %u sequences, KV cache %" PRIu64
                " bytes\n",
                lm.context(), lm.sequences(), lm.kv_cache_bytes());
    std::printf("tokenizer    %s\n", lm.tokenizer().c_str());
    std::printf("kernel       %s (%d of %d matrices 1.6-bit), head %s\n",
                i->kernel().c_str(), lm.tq1_matrices(), lm.ternary_matrices(),
                lm.head().c_str());
    std::printf("threads      %u\n", lm.threads());
    std::printf("per token    %" PRIu64 " bytes of weights read\n",
                lm.bytes_per_token());
    std::printf("swap         %s\n", i->swap().c_str());
    std::printf("arena        %" PRIu64 " bytes, slot %" PRIu64
                " bytes, model uses %" PRIu64 "\n",
                i->arena_bytes(), i->slot_bytes(), i->slot_bytes_used());
    return 0;
  }
  std::printf("model        %s\n", i->name().c_str());
  std::printf("version      %" PRIu64 "\n", i->version());
  for (const wire::TensorSpec& s : i->inputs()) {
    std::printf("input        %s %s [%u]\n", s.name().c_str(),
                DTypeText(s.dtype()), s.features());
  }
  for (const wire::TensorSpec& s : i->outputs()) {
    std::printf("output       %s %s [%u]\n", s.name().c_str(),
                DTypeText(s.dtype()), s.features());
  }
  std::printf("max batch    %u\n", i->max_batch());
  std::printf("kernel       %s\n", i->kernel().c_str());
  std::printf("workers      %u\n", i->workers());
  std::printf("swap         %s\n", i->swap().c_str());
  std::printf("arena        %" PRIu64 " bytes, slot %" PRIu64
              " bytes, model "
              "uses %" PRIu64 "\n",
              i->arena_bytes(), i->slot_bytes(), i->slot_bytes_used());
  // One line per ternary matrix: the variant and weight layout it got.
  for (const wire::TernaryMatrix& t : i->ternary_matrices()) {
    std::printf("ternary      op %-3u %5u x %-5u  %-15s %-6s %" PRIu64
                " bytes\n",
                t.op(), t.rows(), t.cols(), t.kernel().c_str(),
                t.layout().c_str(), t.packed_bytes());
  }
  return 0;
}

struct ReloadOptions {
  DaemonOptions daemon;
  int pid = 0;
  int wait_ms = 120000;
};

// The pid of the process that listens on `path` (SO_PEERCRED); 0 when it
// cannot be told: a socket that systemd made (socket activation) names
// systemd, not the daemon.
pid_t ListenerPid(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ucred cred{};
  socklen_t len = sizeof cred;
  pid_t pid = 0;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    pid = cred.pid;
  }
  ::close(fd);
  return pid == 1 ? 0 : pid;
}

// SIGHUP, then waits until the daemon has finished that reload and exits
// with its outcome: what `systemctl reload` runs (ExecReload=), so its
// exit status says whether the reload worked.
int Reload(const ReloadOptions& opt) {
  Result<std::unique_ptr<client::Client>> c = Connect(opt.daemon);
  if (!c.ok()) return Fail(c.status());
  Result<wire::HealthResponse> before = (*c)->Health();
  if (!before.ok()) return Fail(before.status());
  const char* from = "";
  pid_t pid = opt.pid;
  if (pid <= 0) pid = ListenerPid(SocketPath(opt.daemon, &from));
  if (pid <= 0) {
    return Fail(FailedPrecondition(
        "cannot tell the daemon's pid from its socket (socket activation: "
        "systemd made it); give --pid (ExecReload=ternctl reload --pid "
        "$MAINPID)"));
  }
  if (::kill(pid, SIGHUP) != 0) {
    return Fail(ErrnoError(errno, "cannot send SIGHUP to pid %d",
                           static_cast<int>(pid)));
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(opt.wait_ms);
  for (;;) {
    Result<wire::HealthResponse> h = (*c)->Health();
    if (!h.ok()) return Fail(h.status());
    if (h->reloads() > before->reloads()) {
      if (!h->last_reload_error().empty()) {
        std::fprintf(stderr, "ternctl: reload failed: %s\n",
                     h->last_reload_error().c_str());
        return 1;
      }
      std::printf("reloaded (pid %d, %s)\n", static_cast<int>(pid),
                  h->state().c_str());
      return 0;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Fail(Errorf(StatusCode::kDeadlineExceeded,
                         "pid %d did not finish the reload within %d ms "
                         "(state %s)",
                         static_cast<int>(pid), opt.wait_ms,
                         h->state().c_str()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

int Health(const DaemonOptions& opt) {
  Result<std::unique_ptr<client::Client>> c = Connect(opt);
  if (!c.ok()) return Fail(c.status());
  Result<wire::HealthResponse> h = (*c)->Health();
  if (!h.ok()) return Fail(h.status());
  if (opt.json) {
    PrintJson(Json{{"live", h->live()},
                   {"ready", h->ready()},
                   {"state", h->state()},
                   {"reloads", h->reloads()},
                   {"last_reload_error", h->last_reload_error()}});
  } else {
    std::printf("live %s, ready %s (%s)\n", h->live() ? "yes" : "no",
                h->ready() ? "yes" : "no", h->state().c_str());
    if (!h->last_reload_error().empty()) {
      std::printf("last reload failed: %s\n", h->last_reload_error().c_str());
    }
  }
  return h->ready() ? 0 : 1;
}

int Stats(const DaemonOptions& opt, bool prometheus) {
  Result<std::unique_ptr<client::Client>> c = Connect(opt);
  if (!c.ok()) return Fail(c.status());
  Result<wire::StatsResponse> s = (*c)->Stats(prometheus || opt.json);
  if (!s.ok()) return Fail(s.status());
  if (prometheus && !s->prometheus_text().empty()) {
    // The daemon's registry (docs/telemetry.md), plus what only the Stats
    // fields carry: rows run, the round-trip summary and the uptime.
    std::fputs(s->prometheus_text().c_str(), stdout);
    std::printf(
        "# HELP ternd_inferences_total Rows run since start\n"
        "# TYPE ternd_inferences_total counter\nternd_inferences_total %" PRIu64
        "\n",
        s->inferences_total());
    std::printf(
        "# HELP ternd_request_latency_microseconds Infer round trip inside "
        "the daemon\n# TYPE ternd_request_latency_microseconds summary\n");
    const std::pair<const char*, double> q[] = {
        {"0.5", s->latency_p50_us()},
        {"0.9", s->latency_p90_us()},
        {"0.99", s->latency_p99_us()},
        {"0.999", s->latency_p999_us()}};
    for (const auto& [quantile, value] : q) {
      std::printf("ternd_request_latency_microseconds{quantile=\"%s\"} %g\n",
                  quantile, value);
    }
    std::printf(
        "# HELP ternd_uptime_seconds Seconds since the daemon started\n"
        "# TYPE ternd_uptime_seconds gauge\nternd_uptime_seconds %.3f\n",
        static_cast<double>(s->uptime_ms()) / 1000);
    return 0;
  }
  if (prometheus) {  // a daemon older than the metrics registry
    std::printf("# TYPE ternd_responses_total counter\n");
    for (const wire::StatusCount& sc : s->responses()) {
      std::printf("ternd_responses_total{code=\"%s\"} %" PRIu64 "\n",
                  sc.code().c_str(), sc.count());
    }
    std::printf(
        "# TYPE ternd_requests_total counter\nternd_requests_total %" PRIu64
        "\n",
        s->requests_total());
    std::printf(
        "# TYPE ternd_inferences_total counter\nternd_inferences_total %" PRIu64
        "\n",
        s->inferences_total());
    std::printf(
        "# TYPE ternd_frames_rejected_total counter\n"
        "ternd_frames_rejected_total %" PRIu64 "\n",
        s->frames_rejected());
    std::printf("# TYPE ternd_request_latency_microseconds summary\n");
    std::printf("ternd_request_latency_microseconds{quantile=\"0.5\"} %g\n",
                s->latency_p50_us());
    std::printf("ternd_request_latency_microseconds{quantile=\"0.9\"} %g\n",
                s->latency_p90_us());
    std::printf("ternd_request_latency_microseconds{quantile=\"0.99\"} %g\n",
                s->latency_p99_us());
    std::printf("ternd_request_latency_microseconds{quantile=\"0.999\"} %g\n",
                s->latency_p999_us());
    std::printf("# TYPE ternd_queue_depth gauge\nternd_queue_depth %" PRIu64
                "\n",
                s->queue_depth());
    std::printf("# TYPE ternd_connections gauge\nternd_connections %" PRIu64
                "\n",
                s->connections());
    std::printf(
        "# TYPE ternd_connections_total counter\n"
        "ternd_connections_total %" PRIu64 "\n",
        s->connections_total());
    std::printf(
        "# TYPE ternd_uptime_seconds gauge\nternd_uptime_seconds %.3f\n",
        static_cast<double>(s->uptime_ms()) / 1000);
    return 0;
  }
  if (opt.json) {
    Json responses = Json::object();
    for (const wire::StatusCount& sc : s->responses()) {
      responses[sc.code()] = sc.count();
    }
    // The daemon's registry as JSON (docs/telemetry.md), or null from a
    // daemon older than the registry.
    Json metrics = nullptr;
    if (!s->metrics_json().empty()) {
      metrics = Json::parse(s->metrics_json(), nullptr,
                            /*allow_exceptions=*/false);
      if (metrics.is_discarded()) {
        std::fprintf(stderr,
                     "ternctl: the daemon's metrics are not valid JSON; "
                     "printing null\n");
        metrics = nullptr;
      }
    }
    PrintJson(Json{{"uptime_ms", s->uptime_ms()},
                   {"responses", std::move(responses)},
                   {"requests_total", s->requests_total()},
                   {"inferences_total", s->inferences_total()},
                   {"frames_rejected", s->frames_rejected()},
                   {"latency_us",
                    {{"p50", JsonNumber(s->latency_p50_us(), 6)},
                     {"p90", JsonNumber(s->latency_p90_us(), 6)},
                     {"p99", JsonNumber(s->latency_p99_us(), 6)},
                     {"p999", JsonNumber(s->latency_p999_us(), 6)}}},
                   {"queue_depth", s->queue_depth()},
                   {"connections", s->connections()},
                   {"connections_total", s->connections_total()},
                   {"metrics", std::move(metrics)}});
    return 0;
  }
  std::printf("uptime        %.1f s\n",
              static_cast<double>(s->uptime_ms()) / 1000);
  std::printf("requests      %" PRIu64 "\n", s->requests_total());
  for (const wire::StatusCount& sc : s->responses()) {
    std::printf("  %-20s %" PRIu64 "\n", sc.code().c_str(), sc.count());
  }
  std::printf("inferences    %" PRIu64 " rows\n", s->inferences_total());
  std::printf(
      "latency       p50 %.1f us, p90 %.1f us, p99 %.1f us, p99.9 %.1f us\n",
      s->latency_p50_us(), s->latency_p90_us(), s->latency_p99_us(),
      s->latency_p999_us());
  std::printf("queue depth   %" PRIu64 "\n", s->queue_depth());
  std::printf("connections   %" PRIu64 " open, %" PRIu64 " since start\n",
              s->connections(), s->connections_total());
  std::printf("bad frames    %" PRIu64 "\n", s->frames_rejected());
  return 0;
}

int PrintUpdateStatus(const DaemonOptions& opt,
                      const wire::UpdateStatusResponse& u) {
  auto installed = [](const wire::InstalledModel& m) -> Json {
    if (m.name().empty()) return nullptr;
    return {{"name", m.name()},
            {"version", m.version()},
            {"activated_at", m.activated_at()}};
  };
  auto shadow = [&u]() -> Json {
    if (!u.has_shadow()) return nullptr;
    const wire::ShadowValidationStatus& v = u.shadow();
    return {{"metric", v.metric()},
            {"output", v.output()},
            {"requests", v.requests()},
            {"required", v.required()},
            {"rows", v.rows()},
            {"agreeing", v.agreeing()},
            {"agreement", v.agreement()},
            {"min_agreement", v.min_agreement()},
            {"worst_relative_l2", v.worst_relative_l2()},
            {"dropped", v.dropped()},
            {"deadline", v.deadline()}};
  };
  if (opt.json) {
    PrintJson(Json{{"enabled", u.enabled()},
                   {"disabled_reason", u.disabled_reason()},
                   {"state_code", u.state_code()},
                   {"state", u.state()},
                   {"reason", u.reason()},
                   {"model", u.model_name()},
                   {"version", u.model_version()},
                   {"rollout", u.rollout_id()},
                   {"bytes_done", u.bytes_done()},
                   {"bytes_total", u.bytes_total()},
                   {"active", installed(u.active())},
                   {"previous", installed(u.previous())},
                   {"previous_configured", u.previous_configured()},
                   {"probation", u.probation()},
                   {"shadow", shadow()}});
  } else {
    if (!u.enabled()) {
      std::printf("updates     off (%s)\n", u.disabled_reason().c_str());
    }
    std::printf("update      %s (%d)", u.state().c_str(), u.state_code());
    if (!u.model_name().empty()) {
      std::printf(" '%s' version %" PRIu64, u.model_name().c_str(),
                  u.model_version());
    }
    if (!u.rollout_id().empty())
      std::printf(", rollout %s", u.rollout_id().c_str());
    std::printf("\n");
    if (!u.reason().empty())
      std::printf("reason      %s\n", u.reason().c_str());
    if (u.bytes_total() > 0) {
      std::printf("progress    %" PRIu64 " / %" PRIu64 " bytes\n",
                  u.bytes_done(), u.bytes_total());
    }
    if (u.has_shadow()) {
      const wire::ShadowValidationStatus& v = u.shadow();
      std::printf("shadow      %" PRIu64 " / %" PRIu64
                  " requests compared, agreement %.3f (%" PRIu64 " of %" PRIu64
                  " rows, %s on '%s'; required %.3f)",
                  v.requests(), v.required(), v.agreement(), v.agreeing(),
                  v.rows(), v.metric().c_str(), v.output().c_str(),
                  v.min_agreement());
      if (v.metric() == "relative_l2") {
        std::printf(", worst relative L2 %.4g", v.worst_relative_l2());
      }
      if (u.state() == "validating") {
        const long long left = static_cast<long long>(v.deadline()) -
                               static_cast<long long>(std::time(nullptr));
        std::printf(", %lld s left", left > 0 ? left : 0);
      }
      if (v.dropped() > 0) {
        std::printf(", %" PRIu64 " samples dropped (busy)", v.dropped());
      }
      std::printf("\n");
    }
    if (!u.active().name().empty()) {
      std::printf("installed   '%s' version %" PRIu64 "%s\n",
                  u.active().name().c_str(), u.active().version(),
                  u.probation() ? " (on probation)" : "");
    } else {
      std::printf("installed   none (serving the configured model)\n");
    }
    if (!u.previous().name().empty()) {
      std::printf("rollback to '%s' version %" PRIu64 "\n",
                  u.previous().name().c_str(), u.previous().version());
    } else if (!u.previous_configured().empty()) {
      std::printf("rollback to the configured model (runtime.model %s)\n",
                  u.previous_configured().c_str());
    }
  }
  const bool bad = u.state() == "rejected" || u.state() == "failed" ||
                   u.state() == "rolled_back";
  return bad ? 1 : 0;
}

int UpdateStatusCommand(const DaemonOptions& opt) {
  Result<std::unique_ptr<client::Client>> c = Connect(opt);
  if (!c.ok()) return Fail(c.status());
  Result<wire::UpdateStatusResponse> u = (*c)->UpdateStatus();
  if (!u.ok()) return Fail(u.status());
  PrintUpdateStatus(opt, *u);
  return 0;  // reporting a state is not a failure of `status`
}

int Install(const DaemonOptions& opt, const std::string& path) {
  Result<std::unique_ptr<client::Client>> c = Connect(opt);
  if (!c.ok()) return Fail(c.status());
  // Read and sent one part at a time: memory stays at one part.
  Result<wire::UpdateStatusResponse> u = (*c)->InstallFile(path);
  if (!u.ok()) {
    Status s = u.status();
    return Fail(s.Prepend(path));
  }
  return PrintUpdateStatus(opt, *u);
}

void AddCommonOptions(CLI::App* cmd, DaemonOptions* o) {
  cmd->add_option("-s,--socket", o->socket,
                  "Daemon socket (default: $TERND_SOCKET, else "
                  "/run/ternd/ternd.sock if it exists, else ./ternd.sock)");
  cmd->add_option("--timeout-ms", o->timeout_ms,
                  "How long to wait for an answer")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600000));
  cmd->add_flag("--json", o->json, "Print one JSON object");
}

struct GenerateOptions {
  DaemonOptions daemon;
  std::string prompt;
  std::string input_path;
  std::string tokens;
  wire::GenerateRequest request;
  uint64_t seed = 0;
  bool has_seed = false;
  std::vector<std::string> stop;
  bool quiet = false;
};

int Generate(GenerateOptions opt) {
  wire::GenerateRequest& r = opt.request;
  if (!opt.tokens.empty()) {
    size_t at = 0;
    while (at <= opt.tokens.size()) {
      const size_t comma = opt.tokens.find(',', at);
      const std::string piece = opt.tokens.substr(
          at, comma == std::string::npos ? std::string::npos : comma - at);
      char* end = nullptr;
      const long v = std::strtol(piece.c_str(), &end, 10);
      if (piece.empty() || *end != '\0' || v < 0 || v > INT32_MAX) {
        return Fail(
            InvalidArgument("--tokens: '%s' is not a token id", piece.c_str()));
      }
      r.add_prompt_tokens(static_cast<int32_t>(v));
      if (comma == std::string::npos) break;
      at = comma + 1;
    }
  } else if (!opt.prompt.empty()) {
    r.set_prompt(opt.prompt);
  } else {
    const std::string path = opt.input_path.empty() ? "-" : opt.input_path;
    Result<std::string> text = ReadText(path);
    if (!text.ok()) return Fail(text.status());
    if (text->empty()) {
      return Fail(InvalidArgument("the prompt (%s) is empty",
                                  path == "-" ? "stdin" : path.c_str()));
    }
    r.set_prompt(*text);
  }
  if (opt.has_seed) r.set_seed(opt.seed);
  for (const std::string& s : opt.stop) r.add_stop(s);
  Result<std::unique_ptr<client::Client>> c = Connect(opt.daemon);
  if (!c.ok()) return Fail(c.status());
  const bool json = opt.daemon.json;
  Result<wire::GenerateSummary> summary =
      (*c)->Generate(r, [json](const wire::GenerateResponse& g) {
        if (json) {
          Json line{{"tokens", Json::array()}, {"text", g.text()}};
          for (int32_t t : g.tokens()) line["tokens"].push_back(t);
          if (g.logprobs_size() > 0) {
            line["logprobs"] = Json::array();
            for (float p : g.logprobs()) line["logprobs"].push_back(p);
          }
          PrintJson(line);
        } else {
          std::fwrite(g.text().data(), 1, g.text().size(), stdout);
        }
        std::fflush(stdout);
        return true;
      });
  if (!summary.ok()) {
    if (!json) std::fputc('\n', stdout);
    return Fail(summary.status());
  }
  const wire::GenerateSummary& s = *summary;
  if (json) {
    PrintJson(
        Json{{"summary", Json{{"stop_reason", s.stop_reason()},
                              {"prompt_tokens", s.prompt_tokens()},
                              {"generated_tokens", s.generated_tokens()},
                              {"queue_us", s.queue_us()},
                              {"prompt_us", s.prompt_us()},
                              {"generate_us", s.generate_us()},
                              {"first_token_us", s.first_token_us()},
                              {"prompt_tokens_per_s", s.prompt_tokens_per_s()},
                              {"tokens_per_s", s.tokens_per_s()},
                              {"model", s.model()},
                              {"model_version", s.model_version()},
                              {"reused_tokens", s.reused_tokens()}}}});
    return 0;
  }
  std::fputc('\n', stdout);
  if (!opt.quiet) {
    const std::string reused =
        s.reused_tokens() > 0
            ? " (" + std::to_string(s.reused_tokens()) + " reused)"
            : std::string();
    std::fprintf(stderr,
                 "[%s: %u prompt tokens%s at %.1f tokens/s, %u generated at "
                 "%.1f tokens/s, first token after %.1f ms; model '%s' "
                 "version %" PRIu64 "]\n",
                 s.stop_reason().c_str(), s.prompt_tokens(), reused.c_str(),
                 s.prompt_tokens_per_s(), s.generated_tokens(),
                 s.tokens_per_s(), s.first_token_us() / 1000.0,
                 s.model().c_str(), s.model_version());
  }
  return 0;
}

}  // namespace

void AddDaemonCommands(CLI::App& app, int* exit_code) {
  {
    auto g = std::make_shared<GenerateOptions>();
    CLI::App* cmd = app.add_subcommand(
        "generate",
        "Generate text with the daemon's language model, streamed as it "
        "comes");
    AddCommonOptions(cmd, &g->daemon);
    auto* prompt = cmd->add_option("-p,--prompt", g->prompt, "Prompt text");
    auto* input =
        cmd->add_option("-i,--input", g->input_path,
                        "File holding the prompt, '-' for stdin (the default)");
    auto* tokens = cmd->add_option("--tokens", g->tokens,
                                   "Prompt as token ids, comma-separated");
    prompt->excludes(input)->excludes(tokens);
    input->excludes(tokens);
    wire::GenerateRequest* r = &g->request;
    cmd->add_option_function<uint32_t>(
           "-n,--max-tokens", [r](uint32_t v) { r->set_max_tokens(v); },
           "Tokens to generate at most (default: llm.max_tokens)")
        ->check(CLI::Range(1u, 1u << 20));
    cmd->add_option_function<float>(
           "--temperature", [r](float v) { r->set_temperature(v); },
           "0 (default): greedy; > 0: sample")
        ->check(CLI::Range(0.0f, 100.0f));
    cmd->add_option_function<int32_t>(
        "--top-k", [r](int32_t v) { r->set_top_k(v); },
        "Sample from the k most likely tokens (default 40; -1: all)");
    cmd->add_option_function<float>(
        "--top-p", [r](float v) { r->set_top_p(v); },
        "Sample from the smallest set with this probability mass");
    cmd->add_option_function<float>(
        "--min-p", [r](float v) { r->set_min_p(v); },
        "Drop tokens below this fraction of the most likely one");
    cmd->add_option_function<float>(
        "--repeat-penalty", [r](float v) { r->set_repetition_penalty(v); },
        "Penalize the last --repeat-last-n tokens (> 1)");
    cmd->add_option_function<uint32_t>(
        "--repeat-last-n", [r](uint32_t v) { r->set_repeat_last_n(v); },
        "Window of the repetition penalty (default 64)");
    cmd->add_option_function<uint64_t>(
        "--seed",
        [g](uint64_t v) {
          g->seed = v;
          g->has_seed = true;
        },
        "Seed of the sampler (same seed, same tokens)");
    cmd->add_option("--stop", g->stop,
                    "Stop at this text (repeatable; not printed)");
    cmd->add_option_function<std::vector<int32_t>>(
        "--stop-token",
        [r](const std::vector<int32_t>& v) {
          for (int32_t t : v) r->add_stop_tokens(t);
        },
        "Stop at this token id (repeatable)");
    cmd->add_option_function<uint64_t>(
        "--deadline-ms", [r](uint64_t v) { r->set_deadline_us(v * 1000); },
        "Stop generating after this long");
    cmd->add_flag_function(
        "--logprobs", [r](int64_t) { r->set_logprobs(true); },
        "Report each token's log-probability (with --json)");
    cmd->add_flag_function(
        "--literal-special", [r](int64_t) { r->set_literal_special(true); },
        "Take special-token text in the prompt as plain text");
    cmd->add_option_function<std::string>(
        "--session", [r](const std::string& v) { r->set_session(v); },
        "Keep the KV cache under this id: a later call of the session whose "
        "prompt begins with this one's prompt and answer evaluates only the "
        "rest");
    cmd->add_flag("-q,--quiet", g->quiet,
                  "Do not print the summary line to stderr");
    cmd->callback([g, exit_code] { *exit_code = Generate(*g); });
  }

  auto infer = std::make_shared<InferOptions>();
  CLI::App* cmd = app.add_subcommand(
      "infer", "Send input values to the running daemon and print its outputs");
  AddCommonOptions(cmd, &infer->daemon);
  auto* input = cmd->add_option(
      "-i,--input", infer->input_path,
      "File of input values, '-' for stdin (the default); one row per sample, "
      "the model's inputs in order");
  auto* values = cmd->add_option("--values", infer->values,
                                 "Input values on the command line")
                     ->expected(1, -1);
  input->excludes(values);
  auto* wav = cmd->add_option(
      "--wav", infer->wav_path,
      "16-bit PCM mono WAV file for an audio model: one row per model input "
      "length of samples, at the rate the model takes (no resampling)");
  wav->excludes(input);
  wav->excludes(values);
  cmd->add_option("--output", infer->outputs,
                  "Return only these outputs (repeatable)");
  cmd->add_option("--deadline-ms", infer->deadline_ms,
                  "Give up if the request waits longer than this");
  cmd->callback([infer, exit_code] { *exit_code = Infer(*infer); });

  auto info = std::make_shared<DaemonOptions>();
  cmd = app.add_subcommand("info", "Show the model the daemon serves");
  AddCommonOptions(cmd, info.get());
  cmd->callback([info, exit_code] { *exit_code = Info(*info); });

  auto health = std::make_shared<DaemonOptions>();
  cmd = app.add_subcommand(
      "health", "Ask whether the daemon is live and ready (exit 0 when ready)");
  AddCommonOptions(cmd, health.get());
  cmd->callback([health, exit_code] { *exit_code = Health(*health); });

  auto reload = std::make_shared<ReloadOptions>();
  cmd = app.add_subcommand(
      "reload",
      "Make the daemon re-read its configuration and model (SIGHUP) and "
      "wait for the outcome (exit 1 when the reload failed)");
  AddCommonOptions(cmd, &reload->daemon);
  cmd->add_option("--pid", reload->pid,
                  "The daemon's pid (default: from the socket's peer; "
                  "under systemd give $MAINPID)");
  cmd->add_option("--wait-ms", reload->wait_ms,
                  "How long to wait for the reload to finish")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600000));
  cmd->callback([reload, exit_code] { *exit_code = Reload(*reload); });

  auto stats = std::make_shared<DaemonOptions>();
  auto prometheus = std::make_shared<bool>(false);
  cmd = app.add_subcommand("stats", "Show the daemon's request statistics");
  AddCommonOptions(cmd, stats.get());
  cmd->add_flag("--prometheus", *prometheus, "Print Prometheus text format");
  cmd->callback([stats, prometheus, exit_code] {
    *exit_code = Stats(*stats, *prometheus);
  });

  auto status = std::make_shared<DaemonOptions>();
  cmd = app.add_subcommand(
      "status", "Show the update state, the installed and the previous model");
  AddCommonOptions(cmd, status.get());
  cmd->callback(
      [status, exit_code] { *exit_code = UpdateStatusCommand(*status); });

  auto install = std::make_shared<DaemonOptions>();
  auto bundle = std::make_shared<std::string>();
  install->timeout_ms = 600000;
  cmd = app.add_subcommand(
      "install",
      "Install a signed update bundle (ternctl bundle) on the running daemon, "
      "with the same checks as an update from the fleet; waits until it is "
      "active, rejected or failed (exit 0 only when active)");
  AddCommonOptions(cmd, install.get());
  cmd->add_option("bundle", *bundle, "The .ternbundle file")->required();
  cmd->callback([install, bundle, exit_code] {
    *exit_code = Install(*install, *bundle);
  });
}

}  // namespace ternd::ternctl
