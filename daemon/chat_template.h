// Chat messages into a prompt with a model's chat template, for the HTTP
// face's /v1/chat/completions (docs/http.md, "Chat templates").
//
// There is no general template engine: the template text a model carries
// (GGUF tokenizer.chat_template, kept in the .tern file) is recognised as
// one of the families ternd serves, and that family's format is written
// here, as llama.cpp does. An unknown or missing template is an error that
// says so; /v1/completions with a prompt the client formats still works.
//
// Thread-safety: pure functions.
#ifndef TERND_DAEMON_CHAT_TEMPLATE_H_
#define TERND_DAEMON_CHAT_TEMPLATE_H_

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace ternd::daemon {

enum class ChatTemplate {
  kLlama3,  // <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
  kBitnet,  // BitNet b1.58 2B4T: "User: content<|eot_id|>Assistant: "
};

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// The family of `tmpl`; FAILED_PRECONDITION naming what is missing or not
// recognised.
Result<ChatTemplate> RecognizeChatTemplate(std::string_view tmpl);
const char* ChatTemplateName(ChatTemplate t);

// The prompt for `messages`, ending with the assistant's turn opened (the
// generation prompt). BOS is not written: Generate puts it in front when
// the model wants one. INVALID_ARGUMENT for an empty list or a role other
// than system, user, assistant.
Result<std::string> ApplyChatTemplate(ChatTemplate t,
                                      const std::vector<ChatMessage>& messages);

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_CHAT_TEMPLATE_H_
