// Generate calls of a language model (docs/protocol.md, "Generate").
//
// One thread ("ternd-generate") runs every generation: up to llm.sequences
// at once, each on its own KV cache sequence, interleaved token by token
// (every round evaluates one step of each active call, so a long answer
// does not hold back a short one). Calls beyond that wait in a queue of
// llm.max_queue. A step evaluates the call's pending tokens (the whole
// prompt first, then the last token drawn), draws the next token from the
// logits (greedy, or temperature with top-k / top-p / min-p, repetition
// penalty, seeded), turns it into text (whole UTF-8 characters, text that
// may begin a stop string held back) and hands a frame to the loop.
//
// Sessions: a call with a `session` id leaves its sequence's KV cache
// tagged with it when it ends; a later call of that session takes the same
// sequence and evaluates only the prompt tokens after the longest common
// start with what the cache holds. A sequence is taken, in this order: the
// call's session's (when not in use), one holding no session, the least
// recently used one holding a session (evicted, counted). A model change
// drops every session.
//
// Telemetry (with a registry): tokens and prompt tokens per model and
// version, prompt and generation tokens/s and time to first token
// histograms, KV cache tokens in use, sessions and evictions
// (docs/telemetry.md).
//
// Frames reach the loop through an eventfd; `deliver` runs there, in the
// order the frames were made, the last frame of a call with final = true.
// Cancel (a Cancel call, the connection closing, a drain) and deadlines
// are checked before every step.
//
// The model's evaluation shares the runtime's thread team with the health
// check of a model being loaded: both take `lm_mutex`.
//
// Thread-safety: Submit, Cancel*, pending() on the loop's thread.
#ifndef TERND_DAEMON_GENERATOR_H_
#define TERND_DAEMON_GENERATOR_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/event_loop.h"
#include "base/fd.h"
#include "base/status.h"
#include "daemon/protocol.pb.h"
#include "runtime/lm/lm_model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "telemetry/metrics.h"

namespace ternd::daemon {

struct GenerateLimits {
  uint32_t default_max_tokens = 256;
  uint32_t max_prompt_tokens = 0;  // 0: the context
  uint32_t max_queue = 16;
};

struct GenerateCall {
  uint64_t connection = 0;
  uint64_t id = 0;
  wire::GenerateRequest request;
  int64_t received_ns = 0;
  int slot = 0;       // the arena slot held for the call (released on final)
  uint64_t load = 0;  // which placement of the model (ModelSlots::Hold)
  const runtime::LmModel* model = nullptr;
  const tokenizer::Tokenizer* tokenizer = nullptr;
};

class Generator {
 public:
  using Deliver = std::function<void(uint64_t connection, wire::Response&&,
                                     bool final, int slot)>;
  // `registry` (may be null) gets the generation metrics.
  static Result<std::unique_ptr<Generator>> Create(
      sd_event* loop, Deliver deliver, std::mutex* lm_mutex,
      telemetry::Registry* registry = nullptr);
  ~Generator();  // ends every call (cancelled) and joins the thread
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  // Validates and queues a call. Errors (the call is not taken): the
  // queue is full (RESOURCE_EXHAUSTED), both or neither of prompt and
  // prompt_tokens, sampling values out of range (INVALID_ARGUMENT).
  Status Submit(GenerateCall call, const GenerateLimits& limits);
  // Cancels a call of `connection` by id; false when there is none.
  bool Cancel(uint64_t connection, uint64_t id);
  void CancelConnection(uint64_t connection);
  void CancelAll();
  // Calls queued or running (final frame not yet delivered).
  int pending() const { return pending_; }
  // Totals for Stats (any thread).
  uint64_t tokens_generated() const { return tokens_generated_; }
  int sessions() const { return sessions_.load(std::memory_order_relaxed); }
  uint64_t session_evictions() const {
    return session_evictions_.load(std::memory_order_relaxed);
  }
  uint64_t session_reused_tokens() const {
    return reused_tokens_.load(std::memory_order_relaxed);
  }

 private:
  struct Active;
  struct ModelMetrics;
  // A KV cache sequence of the model in use (generator thread).
  struct Sequence {
    std::string session;          // "": none
    std::vector<int32_t> tokens;  // what its cache holds, from position 0
    uint64_t used = 0;            // least-recently-used stamp
    bool busy = false;
  };
  struct Frame {
    uint64_t connection;
    wire::Response response;
    bool final;
    int slot;
  };
  Generator(sd_event* loop, Deliver deliver, std::mutex* lm_mutex,
            telemetry::Registry* registry);
  void Thread();
  // A sequence for `a` (sets a.seq and, for its session, a.pos to the
  // tokens reused); false when every sequence is in use.
  bool TakeSequence(Active& a);
  // `a` has ended: its sequence keeps its session, or nothing.
  void ReleaseSequence(Active& a);
  void CountCacheUse();    // generator thread
  void PublishCacheUse();  // loop
  void Record(const wire::GenerateSummary& s);
  // One step of `a`; false when it has finished (its final frame queued).
  bool Step(Active& a);
  void Emit(Frame frame);
  void Finish(Active& a, const char* reason, const Status& error);
  void OnFrames();
  static int OnEvent(sd_event_source*, int, uint32_t, void* self);

  sd_event* loop_;
  Deliver deliver_;
  std::mutex* lm_mutex_;
  UniqueFd event_;
  EventSource source_;
  int pending_ = 0;  // loop only
  std::atomic<uint64_t> tokens_generated_{0};
  std::atomic<int> sessions_{0};
  std::atomic<uint64_t> session_evictions_{0}, reused_tokens_{0};
  // Metrics (null without a registry); per model and version, loop only.
  telemetry::Registry* registry_;
  std::map<std::pair<std::string, uint64_t>, std::unique_ptr<ModelMetrics>>
      model_metrics_;
  telemetry::Gauge* kv_tokens_gauge_ = nullptr;
  telemetry::Gauge* kv_capacity_gauge_ = nullptr;
  telemetry::Gauge* sessions_gauge_ = nullptr;
  telemetry::Counter* evictions_counter_ = nullptr;
  telemetry::Counter* reused_counter_ = nullptr;
  std::atomic<uint64_t> kv_tokens_{0}, kv_capacity_{0};
  uint64_t evictions_published_ = 0, reused_published_ = 0;  // loop only

  // Generator thread only.
  std::vector<Sequence> seqs_;
  uint64_t seq_load_ = 0;
  const runtime::LmModel* seq_model_ = nullptr;
  uint64_t lru_clock_ = 0;

  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::deque<std::unique_ptr<Active>> queue_;           // mu_
  std::vector<std::unique_ptr<Active>> active_;         // generator thread
  std::vector<Frame> frames_;                           // mu_
  std::vector<std::pair<uint64_t, uint64_t>> cancels_;  // mu_; id 0: all
  bool cancel_all_ = false;                             // mu_
  std::vector<uint64_t> cancel_connections_;            // mu_
  std::thread thread_;
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_GENERATOR_H_
