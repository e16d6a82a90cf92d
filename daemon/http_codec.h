// JSON of the HTTP face (docs/http.md) to and from the wire protocol's
// messages: /v1/infer bodies into InferRequest and InferResponse into JSON,
// OpenAI completion and chat bodies into GenerateRequest, the answers,
// stream chunks, model lists and the OpenAI error shape.
//
// Pure functions, no I/O: the face (http_face.h) calls them, the unit test
// and the fuzz target (tests/fuzz/http_codec_fuzz.cc) call them alone.
// Parsing allocates; errors are INVALID_ARGUMENT naming the field, what it
// must be and what it was.
//
// Thread-safety: none needed.
#ifndef TERND_DAEMON_HTTP_CODEC_H_
#define TERND_DAEMON_HTTP_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "daemon/chat_template.h"
#include "daemon/protocol.pb.h"

namespace ternd::daemon {

// The HTTP status for a status code (400, 401, 403, 404, 429, 503, 504, ...).
int HttpStatusOf(StatusCode code);
// {"error": {"message", "type", "param": null, "code"}} as OpenAI answers;
// the type follows the HTTP status (`http_status`, or HttpStatusOf(code)).
std::string ErrorJson(StatusCode code, std::string_view message,
                      int http_status = 0);

// POST /v1/infer: {"inputs": {"NAME": [[row], ...], ...}, "outputs":
// ["NAME", ...], "deadline_ms": N}. A one-input model also takes "inputs":
// [[row], ...]. Nested arrays give the shape ([rows, d1, ...]); a flat array
// is one row.
Result<wire::InferRequest> ParseInferJson(std::string_view body);
std::string InferResponseJson(const wire::InferResponse& r);

// POST /v1/completions and /v1/chat/completions.
struct CompletionRequest {
  bool chat = false;
  bool stream = false;
  std::string model;                  // as asked (answers name the served one)
  std::vector<ChatMessage> messages;  // chat: the conversation
  wire::GenerateRequest generate;     // prompt filled for completions
};
Result<CompletionRequest> ParseCompletionJson(std::string_view body, bool chat);

// OpenAI's finish_reason for a Generate stop_reason.
const char* FinishReason(std::string_view stop_reason);

// The logprobs of a completion's tokens (GenerateRequest.logprobs): the
// Generate frames that carry a token, and where each token's text begins
// in the completion's text (bytes, the prompt not counted).
struct CompletionLogprobs {
  std::vector<wire::GenerateResponse> frames;
  std::vector<size_t> text_offsets;
};

// OpenAI's limits: completions' logprobs, chat's top_logprobs.
inline constexpr int kMaxCompletionLogprobs = 5;
inline constexpr int kMaxChatTopLogprobs = 20;

// Identity of one answer: "cmpl-..." / "chatcmpl-...", creation time, model.
struct CompletionIdentity {
  std::string id;
  int64_t created = 0;
  std::string model;
};
// The non-streamed answer; with `logprobs`, choices[0].logprobs as OpenAI
// gives them (completions: tokens, token_logprobs, top_logprobs,
// text_offset; chat: content[] with token, logprob, bytes, top_logprobs).
std::string CompletionJson(const CompletionIdentity& who, bool chat,
                           std::string_view text,
                           const wire::GenerateSummary& summary,
                           const CompletionLogprobs* logprobs = nullptr);
// One server-sent event ("data: {...}\n\n") of a stream: a token's text
// (first: the chat chunk also carries the role), or with `summary` the last
// chunk (finish_reason and usage). `logprobs`: the token's, as in
// CompletionJson.
std::string StreamChunk(const CompletionIdentity& who, bool chat,
                        std::string_view text, bool first,
                        const wire::GenerateSummary* summary,
                        const CompletionLogprobs* logprobs = nullptr);
inline constexpr std::string_view kStreamDone = "data: [DONE]\n\n";

// GET /v1/models.
std::string ModelsJson(const wire::ModelInfoResponse& info, int64_t created);
// GET /health and /ready.
std::string HealthJson(const wire::HealthResponse& h);

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_HTTP_CODEC_H_
