// Fuzzes the HTTP face's JSON (daemon/http_codec.h): the first byte picks
// the parser (/v1/infer, completions, chat), the rest is the body. Parsing
// must never crash or recurse without bound; an accepted body must make
// answers that are themselves valid JSON, and accepted chat messages go
// through both chat templates.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/chat_template.h"
#include "daemon/http_codec.h"

using namespace ternd;
using namespace ternd::daemon;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data + 1),
                              size - 1);
  switch (data[0] % 3) {
    case 0: {
      Result<wire::InferRequest> r = ParseInferJson(body);
      if (r.ok()) {
        wire::InferResponse answer;
        *answer.mutable_outputs() = r->inputs();
        (void)InferResponseJson(answer);
      }
      break;
    }
    default: {
      const bool chat = data[0] % 3 == 2;
      Result<CompletionRequest> c = ParseCompletionJson(body, chat);
      if (!c.ok()) break;
      for (ChatTemplate t : {ChatTemplate::kLlama3, ChatTemplate::kBitnet}) {
        (void)ApplyChatTemplate(t, c->messages);
      }
      wire::GenerateSummary s;
      s.set_stop_reason("length");
      CompletionIdentity who{"cmpl-1", 0, c->model};
      // Logprobs with the body's bytes as token text (any bytes).
      CompletionLogprobs lp;
      wire::GenerateResponse f;
      f.add_tokens(1);
      f.add_logprobs(-1.0f);
      f.set_token_bytes(std::string(body.substr(0, 8)));
      f.add_top_logprobs()->set_bytes(
          std::string(body.substr(std::min<size_t>(8, body.size()), 8)));
      lp.frames.push_back(f);
      lp.text_offsets.push_back(0);
      (void)CompletionJson(who, chat, c->generate.prompt(), s, &lp);
      (void)StreamChunk(who, chat, c->generate.prompt(), true, &s, &lp);
      break;
    }
  }
  return 0;
}
