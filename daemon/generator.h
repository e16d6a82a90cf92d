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

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "base/event_loop.h"
#include "base/fd.h"
#include "base/status.h"
#include "daemon/protocol.pb.h"
#include "runtime/lm/lm_model.h"
#include "runtime/tokenizer/tokenizer.h"

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
  int slot = 0;  // the arena slot held for the call (released on final)
  const runtime::LmModel* model = nullptr;
  const tokenizer::Tokenizer* tokenizer = nullptr;
};

class Generator {
 public:
  using Deliver = std::function<void(uint64_t connection, wire::Response&&,
                                     bool final, int slot)>;
  static Result<std::unique_ptr<Generator>> Create(sd_event* loop,
                                                   Deliver deliver,
                                                   std::mutex* lm_mutex);
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
  // Evictions and totals for Stats/metrics.
  uint64_t tokens_generated() const { return tokens_generated_; }

 private:
  struct Active;
  struct Frame {
    uint64_t connection;
    wire::Response response;
    bool final;
    int slot;
  };
  Generator(sd_event* loop, Deliver deliver, std::mutex* lm_mutex);
  void Thread();
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
  uint64_t tokens_generated_ = 0;

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
