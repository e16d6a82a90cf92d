#include "daemon/generator.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <string>

#include "base/check.h"
#include "base/clock.h"
#include "base/log.h"
#include "runtime/lm/sampler.h"

namespace ternd::daemon {

struct Generator::Active {
  GenerateCall call;
  int seq = -1;
  int64_t deadline_ns = 0;  // 0: none
  uint32_t max_tokens = 0;
  std::vector<int32_t> prompt;
  std::vector<int32_t> history;  // prompt and generated tokens
  int32_t pending_token = -1;    // drawn, not yet evaluated
  int pos = 0;                   // tokens in the KV cache
  uint32_t reused = 0;           // of them, taken from the session's cache
  bool prompt_done = false;
  uint32_t generated = 0;
  bool cancelled = false;
  std::unique_ptr<tokenizer::StreamDecoder> decoder;
  std::string held;  // text held back: may begin a stop string
  size_t longest_stop = 0;
  std::unique_ptr<runtime::Sampler> sampler;
  std::vector<float> logits;  // a copy of the step's [vocab]
  int64_t started_ns = 0, prompt_done_ns = 0, first_token_ns = 0;
};

// The instruments of one model version.
struct Generator::ModelMetrics {
  telemetry::Counter* calls;
  telemetry::Counter* tokens;
  telemetry::Counter* prompt_tokens;
  telemetry::Histogram* prompt_rate;  // milli-tokens per second
  telemetry::Histogram* rate;
  telemetry::Histogram* first_token;  // nanoseconds
};

Result<std::unique_ptr<Generator>> Generator::Create(
    sd_event* loop, Deliver deliver, std::mutex* lm_mutex,
    telemetry::Registry* registry) {
  std::unique_ptr<Generator> g(
      new Generator(loop, std::move(deliver), lm_mutex, registry));
  g->event_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!g->event_.valid()) {
    return ErrnoError(errno, "cannot create the generator's eventfd");
  }
  sd_event_source* s = nullptr;
  const int r = sd_event_add_io(loop, &s, g->event_.get(), EPOLLIN,
                                &Generator::OnEvent, g.get());
  if (r < 0) return ErrnoError(-r, "cannot watch the generator");
  sd_event_source_set_description(s, "generator");
  g->source_.reset(s);
  g->thread_ = std::thread([gp = g.get()] { gp->Thread(); });
  return g;
}

Generator::Generator(sd_event* loop, Deliver deliver, std::mutex* lm_mutex,
                     telemetry::Registry* registry)
    : loop_(loop),
      deliver_(std::move(deliver)),
      lm_mutex_(lm_mutex),
      registry_(registry) {
  if (registry_ == nullptr) return;
  kv_tokens_gauge_ = registry_->AddGauge(
      "ternd_llm_kv_cache_tokens",
      "Positions of the language model's KV cache in use (running calls "
      "and kept sessions)",
      "tokens");
  kv_capacity_gauge_ = registry_->AddGauge(
      "ternd_llm_kv_cache_capacity_tokens",
      "Positions the KV cache holds (llm.max_context x llm.sequences)",
      "tokens");
  sessions_gauge_ = registry_->AddGauge(
      "ternd_llm_sessions", "Generate sessions whose KV cache is kept", "1");
  evictions_counter_ = registry_->AddCounter(
      "ternd_llm_session_evictions_total",
      "Sessions evicted (least recently used) for another call's sequence",
      "1");
  reused_counter_ = registry_->AddCounter(
      "ternd_llm_session_reused_tokens_total",
      "Prompt tokens taken from a session's KV cache instead of evaluated",
      "tokens");
}

Generator::~Generator() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Status Generator::Submit(GenerateCall call, const GenerateLimits& limits) {
  const wire::GenerateRequest& r = call.request;
  const runtime::LmModel& m = *call.model;
  const bool has_text = !r.prompt().empty();
  if (has_text == (r.prompt_tokens_size() > 0)) {
    return InvalidArgument(
        "Generate needs exactly one of prompt (text) and prompt_tokens; "
        "this request has %s",
        has_text ? "both" : "neither");
  }
  if (!(r.temperature() >= 0) || r.temperature() > 100) {
    return InvalidArgument("temperature %g is outside 0..100",
                           static_cast<double>(r.temperature()));
  }
  if (!(r.top_p() >= 0) || !(r.min_p() >= 0) || r.min_p() > 1) {
    return InvalidArgument(
        "top_p %g / min_p %g: expected top_p >= 0 and "
        "min_p in 0..1",
        static_cast<double>(r.top_p()), static_cast<double>(r.min_p()));
  }
  if (!(r.repetition_penalty() >= 0) || r.repetition_penalty() > 100) {
    return InvalidArgument("repetition_penalty %g is outside 0..100",
                           static_cast<double>(r.repetition_penalty()));
  }
  const uint32_t vocab = m.shape().vocab;
  for (int i = 0; i < r.prompt_tokens_size(); ++i) {
    if (r.prompt_tokens(i) < 0 ||
        static_cast<uint32_t>(r.prompt_tokens(i)) >= vocab) {
      return InvalidArgument(
          "prompt_tokens[%d] is %d, outside the vocabulary 0..%u", i,
          r.prompt_tokens(i), vocab - 1);
    }
  }
  for (int i = 0; i < r.stop_tokens_size(); ++i) {
    if (r.stop_tokens(i) < 0 ||
        static_cast<uint32_t>(r.stop_tokens(i)) >= vocab) {
      return InvalidArgument(
          "stop_tokens[%d] is %d, outside the vocabulary 0..%u", i,
          r.stop_tokens(i), vocab - 1);
    }
  }
  for (int i = 0; i < r.stop_size(); ++i) {
    if (r.stop(i).empty() || r.stop(i).size() > 256) {
      return InvalidArgument("stop[%d] is %zu bytes, expected 1..256", i,
                             r.stop(i).size());
    }
  }
  if (r.session().size() > 128) {
    return InvalidArgument("session is %zu bytes, at most 128",
                           r.session().size());
  }
  if (r.stop_size() > 16) {
    return InvalidArgument("%d stop strings, at most 16", r.stop_size());
  }
  if (r.top_logprobs() > runtime::kMaxTopLogprobs) {
    return InvalidArgument("top_logprobs is %u, at most %u", r.top_logprobs(),
                           runtime::kMaxTopLogprobs);
  }
  if (r.top_logprobs() > 0 && !r.logprobs()) {
    return InvalidArgument("top_logprobs is %u without logprobs",
                           r.top_logprobs());
  }
  auto a = std::make_unique<Active>();
  // Tokenize here, on the loop: it is quick (microseconds for a prompt of
  // a few kilobytes) and its errors are the request's.
  if (has_text) {
    Status s = call.tokenizer->Encode(r.prompt(), call.tokenizer->add_bos(),
                                      !r.literal_special(), &a->prompt);
    if (!s.ok()) return Status(s).Prepend("prompt");
  } else {
    a->prompt.assign(r.prompt_tokens().begin(), r.prompt_tokens().end());
  }
  if (a->prompt.empty()) {
    return InvalidArgument("the prompt has no tokens");
  }
  const uint32_t context = static_cast<uint32_t>(m.max_context());
  const uint32_t prompt_cap =
      limits.max_prompt_tokens > 0
          ? std::min(limits.max_prompt_tokens, context - 1)
          : context - 1;
  if (a->prompt.size() > prompt_cap) {
    return InvalidArgument(
        "the prompt has %zu tokens, more than the %u allowed (llm.max_context "
        "%u%s)",
        a->prompt.size(), prompt_cap, context,
        limits.max_prompt_tokens > 0 ? ", llm.max_prompt_tokens" : "");
  }
  if (pending_ >= static_cast<int>(limits.max_queue) + m.sequences()) {
    return ResourceExhausted(
        "%d Generate calls are running or waiting (llm.sequences %d + "
        "llm.max_queue %u); try again later",
        pending_, m.sequences(), limits.max_queue);
  }
  a->max_tokens =
      r.max_tokens() > 0 ? r.max_tokens() : limits.default_max_tokens;
  if (r.deadline_us() > 0) {
    a->deadline_ns =
        call.received_ns + static_cast<int64_t>(r.deadline_us()) * 1000;
  }
  runtime::SamplingParams sp;
  sp.temperature = r.temperature();
  sp.top_k = r.top_k();
  sp.top_p = r.top_p();
  sp.min_p = r.min_p();
  sp.repetition_penalty = r.repetition_penalty();
  sp.repeat_last_n = r.repeat_last_n();
  sp.logprobs = r.logprobs();
  sp.top_logprobs = r.top_logprobs();
  a->sampler = std::make_unique<runtime::Sampler>(
      vocab, sp, r.has_seed() ? r.seed() : runtime::RandomSeed());
  for (const std::string& s : r.stop()) {
    a->longest_stop = std::max(a->longest_stop, s.size());
  }
  a->decoder = std::make_unique<tokenizer::StreamDecoder>(*call.tokenizer,
                                                          r.special_text());
  a->logits.resize(vocab);
  a->history.reserve(a->prompt.size() + a->max_tokens);
  a->history = a->prompt;
  a->call = std::move(call);
  ++pending_;
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(std::move(a));
  }
  wake_.notify_one();
  return Status::Ok();
}

bool Generator::Cancel(uint64_t connection, uint64_t id) {
  std::lock_guard<std::mutex> l(mu_);
  cancels_.push_back({connection, id});
  wake_.notify_one();
  return true;
}

void Generator::CancelConnection(uint64_t connection) {
  std::lock_guard<std::mutex> l(mu_);
  cancel_connections_.push_back(connection);
  wake_.notify_one();
}

void Generator::CancelAll() {
  std::lock_guard<std::mutex> l(mu_);
  cancel_all_ = true;
  wake_.notify_one();
}

void Generator::Emit(Frame frame) {
  {
    std::lock_guard<std::mutex> l(mu_);
    frames_.push_back(std::move(frame));
  }
  const uint64_t one = 1;
  TERND_CHECK(write(event_.get(), &one, sizeof(one)) == sizeof(one));
}

int Generator::OnEvent(sd_event_source*, int, uint32_t, void* self) {
  static_cast<Generator*>(self)->OnFrames();
  return 0;
}

void Generator::OnFrames() {
  uint64_t count;
  if (read(event_.get(), &count, sizeof(count)) < 0) return;
  std::vector<Frame> frames;
  {
    std::lock_guard<std::mutex> l(mu_);
    frames.swap(frames_);
  }
  for (Frame& f : frames) {
    if (f.final) --pending_;
    if (f.response.has_generate()) {
      tokens_generated_ += f.response.generate().tokens_size();
      if (f.final && f.response.generate().has_summary()) {
        Record(f.response.generate().summary());
      }
    }
    deliver_(f.connection, std::move(f.response), f.final, f.slot);
  }
  PublishCacheUse();
}

void Generator::Record(const wire::GenerateSummary& s) {
  if (registry_ == nullptr) return;
  std::unique_ptr<ModelMetrics>& m =
      model_metrics_[{s.model(), s.model_version()}];
  if (!m) {
    const telemetry::Labels labels{
        {"model", s.model()}, {"version", std::to_string(s.model_version())}};
    m = std::make_unique<ModelMetrics>();
    m->calls = registry_->AddCounter(
        "ternd_generate_calls_total",
        "Generate calls that ended with a summary, by model version", "calls",
        labels);
    m->tokens = registry_->AddCounter("ternd_generate_tokens_total",
                                      "Tokens generated, by model version",
                                      "tokens", labels);
    m->prompt_tokens = registry_->AddCounter(
        "ternd_generate_prompt_tokens_total",
        "Prompt tokens of Generate calls (evaluated or reused)", "tokens",
        labels);
    m->prompt_rate =
        registry_->AddHistogram("ternd_generate_prompt_tokens_per_second",
                                "Prompt evaluation speed of each Generate call",
                                "tokens/s", 1e-3, labels);
    m->rate = registry_->AddHistogram(
        "ternd_generate_tokens_per_second",
        "Generation speed of each Generate call (after the first token)",
        "tokens/s", 1e-3, labels);
    m->first_token = registry_->AddLatencyHistogram(
        "ternd_generate_first_token_seconds",
        "Time from reading a Generate request to its first token", labels);
  }
  m->calls->Add(1);
  m->tokens->Add(s.generated_tokens());
  m->prompt_tokens->Add(s.prompt_tokens());
  if (s.prompt_tokens_per_s() > 0) {
    m->prompt_rate->Record(std::llround(s.prompt_tokens_per_s() * 1e3));
  }
  if (s.tokens_per_s() > 0) {
    m->rate->Record(std::llround(s.tokens_per_s() * 1e3));
  }
  if (s.first_token_us() > 0) {
    m->first_token->Record(static_cast<int64_t>(s.first_token_us()) * 1000);
  }
}

void Generator::PublishCacheUse() {
  if (registry_ == nullptr) return;
  kv_tokens_gauge_->Set(static_cast<double>(kv_tokens_.load()));
  kv_capacity_gauge_->Set(static_cast<double>(kv_capacity_.load()));
  sessions_gauge_->Set(static_cast<double>(sessions_.load()));
  const uint64_t ev = session_evictions_.load();
  evictions_counter_->Add(ev - evictions_published_);
  evictions_published_ = ev;
  const uint64_t re = reused_tokens_.load();
  reused_counter_->Add(re - reused_published_);
  reused_published_ = re;
}

void Generator::Finish(Active& a, const char* reason, const Status& error) {
  // The sequence first, so that Stats read after the final frame count it.
  ReleaseSequence(a);
  CountCacheUse();
  Frame f{a.call.connection, wire::Response(), true, a.call.slot};
  f.response.set_id(a.call.id);
  f.response.set_final(true);
  if (!error.ok()) {
    f.response.mutable_status()->set_code(static_cast<int>(error.code()));
    f.response.mutable_status()->set_message(error.message());
  } else {
    wire::GenerateResponse* g = f.response.mutable_generate();
    // What the decoder still holds (an unfinished character) and what was
    // held back for the stop strings, unless a stop string ended it.
    std::string tail = a.held;
    if (std::string_view(reason) != "stop") {
      tail += std::string(a.decoder->Flush());
    }
    g->set_text(tail);
    wire::GenerateSummary* s = g->mutable_summary();
    const int64_t now = MonotonicNs();
    s->set_stop_reason(reason);
    s->set_prompt_tokens(static_cast<uint32_t>(a.prompt.size()));
    s->set_generated_tokens(a.generated);
    s->set_queue_us(
        a.started_ns > 0
            ? static_cast<uint64_t>((a.started_ns - a.call.received_ns) / 1000)
            : 0);
    const int64_t prompt_ns =
        a.prompt_done_ns > 0 ? a.prompt_done_ns - a.started_ns : 0;
    s->set_prompt_us(static_cast<uint64_t>(prompt_ns / 1000));
    const int64_t gen_ns = a.first_token_ns > 0 ? now - a.first_token_ns : 0;
    s->set_generate_us(static_cast<uint64_t>(gen_ns / 1000));
    s->set_first_token_us(
        a.first_token_ns > 0
            ? static_cast<uint64_t>((a.first_token_ns - a.call.received_ns) /
                                    1000)
            : 0);
    if (prompt_ns > 0) {
      s->set_prompt_tokens_per_s(
          static_cast<double>(a.prompt.size() - a.reused) * 1e9 /
          static_cast<double>(prompt_ns));
    }
    s->set_reused_tokens(a.reused);
    if (gen_ns > 0 && a.generated > 1) {
      s->set_tokens_per_s(static_cast<double>(a.generated - 1) * 1e9 /
                          static_cast<double>(gen_ns));
    }
    s->set_model(a.call.model->name());
    s->set_model_version(a.call.model->version());
  }
  Emit(std::move(f));
}

bool Generator::Step(Active& a) {
  const runtime::LmModel& m = *a.call.model;
  const wire::GenerateRequest& r = a.call.request;
  const uint32_t V = m.shape().vocab;
  if (a.cancelled) {
    Finish(a, "cancelled", Status::Ok());
    return false;
  }
  if (a.deadline_ns > 0 && MonotonicNs() >= a.deadline_ns) {
    Finish(a, "deadline", Status::Ok());
    return false;
  }
  // Evaluate what is pending: the prompt, or the token drawn last step.
  {
    std::lock_guard<std::mutex> l(*lm_mutex_);
    Status s;
    if (!a.prompt_done) {
      // The prompt after what the session's cache already holds.
      a.started_ns = MonotonicNs();
      s = m.Eval(a.seq,
                 std::span<const int32_t>(a.prompt).subspan(
                     static_cast<size_t>(a.pos)),
                 a.pos);
      a.pos = static_cast<int>(a.prompt.size());
      a.prompt_done = true;
      a.prompt_done_ns = MonotonicNs();
    } else {
      s = m.Eval(a.seq, {&a.pending_token, 1}, a.pos);
      ++a.pos;
    }
    if (!s.ok()) {
      a.pos = 0;  // what the cache holds is unknown: keep no session
      Finish(a, "error", s);
      return false;
    }
    // The logits, while they are this sequence's.
    std::copy(m.logits(0), m.logits(0) + V, a.logits.data());
  }
  float logprob = 0;
  const int32_t token = a.sampler->Sample(a.logits.data(), a.history, &logprob);
  if (a.first_token_ns == 0) a.first_token_ns = MonotonicNs();
  ++a.generated;
  a.history.push_back(token);
  a.pending_token = token;

  // Why it ends, if it does, with this token.
  const char* reason = nullptr;
  bool emit_token = true;
  if (a.call.tokenizer->IsEog(token)) {
    reason = "eos";
    emit_token = false;
  } else if (std::find(r.stop_tokens().begin(), r.stop_tokens().end(), token) !=
             r.stop_tokens().end()) {
    reason = "stop";
    emit_token = false;
  }
  if (emit_token) {
    Frame f{a.call.connection, wire::Response(), false, a.call.slot};
    f.response.set_id(a.call.id);
    wire::GenerateResponse* g = f.response.mutable_generate();
    g->add_tokens(token);
    if (r.logprobs()) {
      const tokenizer::Tokenizer& t = *a.call.tokenizer;
      g->add_logprobs(logprob);
      g->set_token_bytes(std::string(t.TokenBytes(token, r.special_text())));
      for (const runtime::TokenLogprob& c : a.sampler->top()) {
        wire::TokenLogprob* o = g->add_top_logprobs();
        o->set_token(c.token);
        o->set_logprob(c.logprob);
        o->set_bytes(std::string(t.TokenBytes(c.token, r.special_text())));
      }
    }
    a.held += std::string(a.decoder->Push(token));
    // A stop string in the text ends it there.
    size_t cut = std::string::npos;
    for (const std::string& s : r.stop()) {
      const size_t at = a.held.find(s);
      if (at != std::string::npos) cut = std::min(cut, at);
    }
    if (cut != std::string::npos) {
      g->set_text(a.held.substr(0, cut));
      a.held.clear();
      reason = "stop";
    } else {
      // Hold back the longest tail that could begin a stop string.
      size_t hold = 0;
      for (const std::string& s : r.stop()) {
        for (size_t len = std::min(s.size() - 1, a.held.size()); len > hold;
             --len) {
          if (a.held.compare(a.held.size() - len, len, s, 0, len) == 0) {
            hold = len;
            break;
          }
        }
      }
      // Never split a UTF-8 character: extend the hold to its start.
      while (hold < a.held.size() &&
             (static_cast<uint8_t>(a.held[a.held.size() - hold]) & 0xc0) ==
                 0x80) {
        ++hold;
      }
      g->set_text(a.held.substr(0, a.held.size() - hold));
      a.held.erase(0, a.held.size() - hold);
    }
    Emit(std::move(f));
  }
  if (reason == nullptr && a.generated >= a.max_tokens) reason = "length";
  if (reason == nullptr && a.pos + 1 >= m.max_context()) reason = "context";
  if (reason != nullptr) {
    Finish(a, reason, Status::Ok());
    return false;
  }
  return true;
}

bool Generator::TakeSequence(Active& a) {
  const std::string& session = a.call.request.session();
  int pick = -1;
  if (!session.empty()) {
    for (size_t i = 0; i < seqs_.size(); ++i) {
      if (!seqs_[i].busy && seqs_[i].session == session) {
        pick = static_cast<int>(i);
      }
    }
  }
  if (pick < 0) {  // one without a session, else the least recently used
    for (size_t i = 0; i < seqs_.size(); ++i) {
      const Sequence& q = seqs_[i];
      if (q.busy) continue;
      if (pick < 0 || (q.session.empty() && !seqs_[pick].session.empty()) ||
          (q.session.empty() == seqs_[pick].session.empty() &&
           q.used < seqs_[pick].used)) {
        pick = static_cast<int>(i);
      }
    }
  }
  if (pick < 0) return false;
  Sequence& q = seqs_[pick];
  if (!session.empty() && q.session == session) {
    // The longest common start, leaving at least one token to evaluate
    // (its logits are the first draw's).
    size_t n = 0;
    const size_t limit = std::min(q.tokens.size(), a.prompt.size() - 1);
    while (n < limit && q.tokens[n] == a.prompt[n]) ++n;
    a.pos = static_cast<int>(n);
    a.reused = static_cast<uint32_t>(n);
    reused_tokens_ += n;
  } else if (!q.session.empty()) {
    TERND_LOG_DEBUG(
        "generate: session '%s' evicted (sequence %d, %zu tokens) for "
        "another call",
        q.session.c_str(), pick, q.tokens.size());
    ++session_evictions_;
    --sessions_;
  }
  if (q.session != session || session.empty()) {
    if (!q.session.empty()) q.session.clear();
    q.tokens.clear();
  }
  q.busy = true;
  a.seq = pick;
  return true;
}

void Generator::ReleaseSequence(Active& a) {
  if (a.seq < 0) return;
  Sequence& q = seqs_[a.seq];
  q.busy = false;
  q.used = ++lru_clock_;
  const std::string& session = a.call.request.session();
  const bool had = !q.session.empty();
  if (session.empty() || a.pos == 0) {
    q.session.clear();
    q.tokens.clear();
  } else {
    // An older copy of the session (a call of the same session that ran
    // at the same time) gives way to this one.
    for (Sequence& other : seqs_) {
      if (&other != &q && !other.busy && other.session == session) {
        other.session.clear();
        other.tokens.clear();
        --sessions_;
      }
    }
    q.session = session;
    q.tokens.assign(a.history.begin(), a.history.begin() + a.pos);
  }
  sessions_ += static_cast<int>(!q.session.empty()) - static_cast<int>(had);
  a.seq = -1;
}

void Generator::Thread() {
  pthread_setname_np(pthread_self(), "ternd-generate");
  for (;;) {
    bool stopping;
    {
      std::unique_lock<std::mutex> l(mu_);
      wake_.wait(l, [this] {
        return stop_ || !queue_.empty() || !active_.empty() ||
               !cancels_.empty() || !cancel_connections_.empty() || cancel_all_;
      });
      stopping = stop_;
      if (stop_) {
        for (auto& a : active_) a->cancelled = true;
        for (auto& a : queue_) a->cancelled = true;
      }
      // Cancellations reach queued and running calls alike.
      auto hit = [&](Active& a) {
        if (cancel_all_) return true;
        for (uint64_t c : cancel_connections_) {
          if (a.call.connection == c) return true;
        }
        for (auto [c, id] : cancels_) {
          if (a.call.connection == c && a.call.id == id) return true;
        }
        return false;
      };
      for (auto& a : active_) a->cancelled |= hit(*a);
      for (auto& a : queue_) a->cancelled |= hit(*a);
      cancels_.clear();
      cancel_connections_.clear();
      cancel_all_ = false;
      // Start queued calls on free sequences.
      while (!queue_.empty()) {
        Active& next = *queue_.front();
        if (!next.cancelled &&
            (seq_model_ != next.call.model || seq_load_ != next.call.load)) {
          if (!active_.empty()) break;  // the model changed: drain first
          // A new model (or a new placement of one): no cache survives.
          seq_model_ = next.call.model;
          seq_load_ = next.call.load;
          seqs_.assign(static_cast<size_t>(seq_model_->sequences()),
                       Sequence());
          sessions_ = 0;
          kv_capacity_ = static_cast<uint64_t>(seq_model_->sequences()) *
                         static_cast<uint64_t>(seq_model_->max_context());
        }
        if (!next.cancelled && !TakeSequence(next)) break;
        active_.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    if (active_.empty()) {
      if (stopping) return;
      continue;
    }
    // One step of every active call.
    for (size_t i = 0; i < active_.size();) {
      if (!Step(*active_[i])) {
        active_.erase(active_.begin() + static_cast<long>(i));
      } else {
        ++i;
      }
    }
    CountCacheUse();
  }
}

void Generator::CountCacheUse() {
  uint64_t in_use = 0;
  for (const Sequence& q : seqs_) in_use += q.tokens.size();
  for (const auto& a : active_) {
    if (a->seq >= 0) in_use += static_cast<uint64_t>(a->pos);
  }
  kv_tokens_ = in_use;
}

}  // namespace ternd::daemon
