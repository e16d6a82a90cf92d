#include "daemon/chat_template.h"

namespace ternd::daemon {
namespace {

bool Contains(std::string_view s, std::string_view what) {
  return s.find(what) != std::string_view::npos;
}

// Leading and trailing ASCII whitespace off, as both families' templates
// (and llama.cpp) trim message content.
std::string_view Trim(std::string_view s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

}  // namespace

Result<ChatTemplate> RecognizeChatTemplate(std::string_view tmpl) {
  if (tmpl.empty()) {
    return FailedPrecondition(
        "the model has no chat template (GGUF tokenizer.chat_template); "
        "format the prompt yourself and use /v1/completions");
  }
  if (Contains(tmpl, "<|start_header_id|>") &&
      Contains(tmpl, "<|end_header_id|>")) {
    return ChatTemplate::kLlama3;
  }
  if (Contains(tmpl, "User: ") && Contains(tmpl, "Assistant: ") &&
      Contains(tmpl, "<|eot_id|>")) {
    return ChatTemplate::kBitnet;
  }
  return FailedPrecondition(
      "the model's chat template (%zu bytes, starting '%.40s') is not one "
      "ternd knows (llama-3, BitNet b1.58 2B4T); format the prompt "
      "yourself and use /v1/completions",
      tmpl.size(), std::string(tmpl.substr(0, 40)).c_str());
}

const char* ChatTemplateName(ChatTemplate t) {
  return t == ChatTemplate::kLlama3 ? "llama-3" : "bitnet-2b4t";
}

Result<std::string> ApplyChatTemplate(
    ChatTemplate t, const std::vector<ChatMessage>& messages) {
  if (messages.empty()) {
    return InvalidArgument("'messages' is empty: at least one message");
  }
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant") {
      return InvalidArgument(
          "messages[%zu].role is '%.40s': system, user or assistant", i,
          m.role.c_str());
    }
    const std::string_view content = Trim(m.content);
    if (t == ChatTemplate::kLlama3) {
      out += "<|start_header_id|>";
      out += m.role;
      out += "<|end_header_id|>\n\n";
      out += content;
      out += "<|eot_id|>";
    } else {
      out += m.role == "system" ? "System: "
             : m.role == "user" ? "User: "
                                : "Assistant: ";
      out += content;
      out += "<|eot_id|>";
    }
  }
  out += t == ChatTemplate::kLlama3
             ? "<|start_header_id|>assistant<|end_header_id|>\n\n"
             : "Assistant: ";
  return out;
}

}  // namespace ternd::daemon
