#include "daemon/http_codec.h"

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

namespace ternd::daemon {
namespace {

using nlohmann::json;

constexpr int kMaxJsonDepth = 32;
constexpr size_t kMaxStops = 16;

// nlohmann's parser recurses once per nesting level: refuse deep nesting
// before parsing, so no body can exhaust the stack.
Status CheckDepth(std::string_view body) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        return InvalidArgument(
            "the JSON body nests deeper than %d levels (at byte %zu)",
            kMaxJsonDepth, i);
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return Status::Ok();
}

Result<json> ParseBody(std::string_view body) {
  if (body.empty()) return InvalidArgument("the request has no JSON body");
  TERND_RETURN_IF_ERROR(CheckDepth(body));
  json j = json::parse(body.begin(), body.end(), nullptr,
                       /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Find where: the SAX error position without exceptions.
    struct Where : nlohmann::json_sax<json> {
      size_t at = 0;
      std::string what;
      bool null() override { return true; }
      bool boolean(bool) override { return true; }
      bool number_integer(number_integer_t) override { return true; }
      bool number_unsigned(number_unsigned_t) override { return true; }
      bool number_float(number_float_t, const string_t&) override {
        return true;
      }
      bool string(string_t&) override { return true; }
      bool binary(binary_t&) override { return true; }
      bool start_object(std::size_t) override { return true; }
      bool key(string_t&) override { return true; }
      bool end_object() override { return true; }
      bool start_array(std::size_t) override { return true; }
      bool end_array() override { return true; }
      bool parse_error(std::size_t position, const std::string&,
                       const nlohmann::detail::exception& e) override {
        at = position;
        what = e.what();
        return false;
      }
    } where;
    json::sax_parse(body.begin(), body.end(), &where,
                    nlohmann::detail::input_format_t::json, false);
    // e.what(): "[json.exception.parse_error.101] parse error at line 1,
    // column 9: syntax error while parsing value - ..."; keep the words.
    std::string why = where.what;
    const size_t p = why.find("] ");
    if (p != std::string::npos) why = why.substr(p + 2);
    return InvalidArgument("the body is not valid JSON: %s", why.c_str());
  }
  if (!j.is_object()) {
    return InvalidArgument("the body must be a JSON object, not %s",
                           j.type_name());
  }
  return j;
}

std::string Shown(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

Status WrongType(const char* field, const char* want, const json& v) {
  return InvalidArgument("'%s' must be %s, not %s", field, want,
                         Shown(v).c_str());
}

Status Number(const json& j, const char* field, double lo, double hi,
              double* out) {
  if (!j.is_number()) return WrongType(field, "a number", j);
  const double v = j.get<double>();
  if (!(v >= lo && v <= hi)) {
    return InvalidArgument("'%s' is %g: it must be between %g and %g", field, v,
                           lo, hi);
  }
  *out = v;
  return Status::Ok();
}

Status Integer(const json& j, const char* field, int64_t lo, int64_t hi,
               int64_t* out) {
  if (j.is_number_float()) {
    const double d = j.get<double>();
    if (d != std::floor(d)) return WrongType(field, "an integer", j);
    if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi))) {
      return InvalidArgument("'%s' is %g: it must be between %lld and %lld",
                             field, d, static_cast<long long>(lo),
                             static_cast<long long>(hi));
    }
    *out = static_cast<int64_t>(d);
    return Status::Ok();
  }
  if (j.is_number_unsigned()) {
    const uint64_t u = j.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) {
      return InvalidArgument("'%s' is %llu: it must be between %lld and %lld",
                             field, static_cast<unsigned long long>(u),
                             static_cast<long long>(lo),
                             static_cast<long long>(hi));
    }
    *out = static_cast<int64_t>(u);
    return Status::Ok();
  }
  if (!j.is_number_integer()) return WrongType(field, "an integer", j);
  const int64_t v = j.get<int64_t>();
  if (v < lo || v > hi) {
    return InvalidArgument("'%s' is %lld: it must be between %lld and %lld",
                           field, static_cast<long long>(v),
                           static_cast<long long>(lo),
                           static_cast<long long>(hi));
  }
  *out = v;
  return Status::Ok();
}

// The shape of a nested array of numbers, and its values row-major.
Status Flatten(const json& j, const std::string& name, size_t depth,
               std::vector<uint32_t>* shape, std::vector<float>* values) {
  if (!j.is_array()) {
    return InvalidArgument(
        "input '%s' must be nested arrays of numbers; "
        "found %s at depth %zu",
        name.c_str(), Shown(j).c_str(), depth);
  }
  if (shape->size() == depth) {
    shape->push_back(static_cast<uint32_t>(j.size()));
  } else if ((*shape)[depth] != j.size()) {
    return InvalidArgument(
        "input '%s' is ragged: an array at depth %zu has "
        "%zu elements, an earlier one %u",
        name.c_str(), depth, j.size(), (*shape)[depth]);
  }
  if (j.empty()) {
    return InvalidArgument("input '%s' has an empty array at depth %zu",
                           name.c_str(), depth);
  }
  const bool leaves = !j.front().is_array();
  for (const json& e : j) {
    if (leaves) {
      if (e.is_array()) {
        return InvalidArgument(
            "input '%s' is ragged: arrays and numbers "
            "mixed at depth %zu",
            name.c_str(), depth);
      }
      if (!e.is_number()) {
        return InvalidArgument(
            "input '%s' has %s where a number belongs "
            "(depth %zu, element %zu)",
            name.c_str(), Shown(e).c_str(), depth, values->size());
      }
      const double d = e.get<double>();
      const float f = static_cast<float>(d);
      if (!std::isfinite(f)) {
        return InvalidArgument("input '%s' value %g is not a finite float",
                               name.c_str(), d);
      }
      values->push_back(f);
      if (shape->size() != depth + 1) {
        return InvalidArgument("input '%s' is ragged at depth %zu",
                               name.c_str(), depth);
      }
    } else {
      TERND_RETURN_IF_ERROR(Flatten(e, name, depth + 1, shape, values));
    }
  }
  return Status::Ok();
}

Status AddInput(const json& j, const std::string& name,
                wire::InferRequest* out) {
  std::vector<uint32_t> shape;
  std::vector<float> values;
  TERND_RETURN_IF_ERROR(Flatten(j, name, 0, &shape, &values));
  if (shape.size() == 1) shape.insert(shape.begin(), 1);  // one row
  wire::Tensor* t = out->add_inputs();
  t->set_name(name);
  t->set_dtype(wire::F32);
  for (uint32_t d : shape) t->add_shape(d);
  t->set_data(values.data(), values.size() * sizeof(float));
  return Status::Ok();
}

json TensorJson(const wire::Tensor& t) {
  const size_t width = t.dtype() == wire::I8 ? 1 : 4;
  const size_t n = t.data().size() / width;
  size_t rows = t.shape_size() > 0 ? t.shape(0) : 1;
  if (rows == 0) rows = 1;
  const size_t cols = n / rows;
  json out = json::array();
  for (size_t r = 0; r < rows; ++r) {
    json row = json::array();
    for (size_t c = 0; c < cols; ++c) {
      const char* p = t.data().data() + (r * cols + c) * width;
      if (t.dtype() == wire::I32) {
        int32_t v;
        std::memcpy(&v, p, 4);
        row.push_back(v);
      } else if (t.dtype() == wire::I8) {
        row.push_back(static_cast<int>(static_cast<int8_t>(*p)));
      } else {
        float v;
        std::memcpy(&v, p, 4);
        row.push_back(v);
      }
    }
    out.push_back(std::move(row));
  }
  return out;
}

// "text" or [{"type": "text", "text": ...}, ...] (OpenAI content parts).
Status MessageContent(const json& j, size_t i, std::string* out) {
  if (j.is_string()) {
    *out = j.get<std::string>();
    return Status::Ok();
  }
  if (j.is_null()) return Status::Ok();
  if (!j.is_array()) {
    return InvalidArgument(
        "messages[%zu].content must be a string or an array of text parts, "
        "not %s",
        i, Shown(j).c_str());
  }
  for (const json& part : j) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") || !part["text"].is_string()) {
      return InvalidArgument(
          "messages[%zu].content has the part %s: only {\"type\": \"text\", "
          "\"text\": \"...\"} parts are supported",
          i, Shown(part).c_str());
    }
    *out += part["text"].get<std::string>();
  }
  return Status::Ok();
}

Status TokenIds(const json& j, const char* field, wire::GenerateRequest* g) {
  for (const json& t : j) {
    int64_t v = 0;
    TERND_RETURN_IF_ERROR(Integer(t, field, 0, INT32_MAX, &v));
    g->add_prompt_tokens(static_cast<int32_t>(v));
  }
  return Status::Ok();
}

Status Prompt(const json& j, wire::GenerateRequest* g) {
  if (j.is_string()) {
    g->set_prompt(j.get<std::string>());
    return Status::Ok();
  }
  if (j.is_array() && j.size() == 1 && j[0].is_string()) {
    g->set_prompt(j[0].get<std::string>());
    return Status::Ok();
  }
  if (j.is_array() && !j.empty() && j[0].is_number()) {
    return TokenIds(j, "prompt", g);
  }
  if (j.is_array() && j.size() == 1 && j[0].is_array()) {
    return TokenIds(j[0], "prompt", g);
  }
  return InvalidArgument(
      "'prompt' must be a string, an array of one string, or token ids; "
      "found %s (one prompt per request)",
      Shown(j).c_str());
}

}  // namespace

int HttpStatusOf(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kOutOfRange:
      return 400;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kResourceExhausted:
      return 429;
    case StatusCode::kCancelled:
      return 499;
    case StatusCode::kUnimplemented:
      return 501;
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorJson(StatusCode code, std::string_view message,
                      int http_status) {
  const int http = http_status != 0 ? http_status : HttpStatusOf(code);
  const char* type = http == 429   ? "rate_limit_error"
                     : http >= 500 ? "server_error"
                     : http == 401 ? "authentication_error"
                     : http == 403 ? "permission_error"
                     : http == 404 ? "not_found_error"
                                   : "invalid_request_error";
  std::string lower = StatusCodeName(code);
  for (char& c : lower) c = static_cast<char>(std::tolower(c));
  json j = {{"error",
             {{"message", std::string(message)},
              {"type", type},
              {"param", nullptr},
              {"code", lower}}}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Result<wire::InferRequest> ParseInferJson(std::string_view body) {
  TERND_ASSIGN_OR_RETURN(json j, ParseBody(body));
  wire::InferRequest r;
  if (!j.contains("inputs")) {
    return InvalidArgument(
        "the body has no 'inputs': {\"inputs\": {\"NAME\": [[...], ...]}}");
  }
  const json& inputs = j["inputs"];
  if (inputs.is_object()) {
    if (inputs.empty()) return InvalidArgument("'inputs' is empty");
    for (auto it = inputs.begin(); it != inputs.end(); ++it) {
      TERND_RETURN_IF_ERROR(AddInput(it.value(), it.key(), &r));
    }
  } else if (inputs.is_array()) {
    TERND_RETURN_IF_ERROR(AddInput(inputs, "", &r));
  } else {
    return WrongType("inputs", "an object of named arrays (or one array)",
                     inputs);
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (k == "inputs") continue;
    if (k == "outputs") {
      if (!it->is_array())
        return WrongType("outputs", "an array of names", *it);
      for (const json& o : *it) {
        if (!o.is_string()) return WrongType("outputs", "an array of names", o);
        r.add_outputs(o.get<std::string>());
      }
    } else if (k == "deadline_ms") {
      int64_t ms = 0;
      TERND_RETURN_IF_ERROR(Integer(*it, "deadline_ms", 0, 3600000, &ms));
      r.set_deadline_us(static_cast<uint64_t>(ms) * 1000);
    } else {
      return InvalidArgument(
          "unknown field '%.60s' (known: inputs, outputs, deadline_ms)",
          k.c_str());
    }
  }
  return r;
}

std::string InferResponseJson(const wire::InferResponse& r) {
  json outputs = json::object();
  for (const wire::Tensor& t : r.outputs()) outputs[t.name()] = TensorJson(t);
  json j = {{"model", r.model()},
            {"model_version", r.model_version()},
            {"outputs", std::move(outputs)},
            {"queue_us", r.queue_us()},
            {"compute_us", r.compute_us()}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Result<CompletionRequest> ParseCompletionJson(std::string_view body,
                                              bool chat) {
  TERND_ASSIGN_OR_RETURN(json j, ParseBody(body));
  CompletionRequest c;
  c.chat = chat;
  wire::GenerateRequest& g = c.generate;
  g.set_temperature(1.0f);  // OpenAI's default
  bool have_prompt = false;
  int chat_top = -1;  // chat's top_logprobs, -1: absent
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = *it;
    if (k == "model") {
      if (!v.is_string()) return WrongType("model", "a string", v);
      c.model = v.get<std::string>();
    } else if (k == "prompt" && !chat) {
      TERND_RETURN_IF_ERROR(Prompt(v, &g));
      have_prompt = true;
    } else if (k == "messages" && chat) {
      if (!v.is_array()) return WrongType("messages", "an array", v);
      for (size_t i = 0; i < v.size(); ++i) {
        const json& m = v[i];
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
          return InvalidArgument(
              "messages[%zu] must be an object with a string 'role', not %s", i,
              Shown(m).c_str());
        }
        ChatMessage msg;
        msg.role = m["role"].get<std::string>();
        if (msg.role == "developer") msg.role = "system";
        if (m.contains("content")) {
          TERND_RETURN_IF_ERROR(MessageContent(m["content"], i, &msg.content));
        }
        c.messages.push_back(std::move(msg));
      }
      have_prompt = true;
    } else if (k == "stream") {
      if (!v.is_boolean() && !v.is_null()) {
        return WrongType("stream", "true or false", v);
      }
      c.stream = v.is_boolean() && v.get<bool>();
    } else if (k == "max_tokens" || k == "max_completion_tokens") {
      if (v.is_null()) continue;
      int64_t n = 0;
      TERND_RETURN_IF_ERROR(Integer(v, k.c_str(), 1, 1 << 20, &n));
      g.set_max_tokens(static_cast<uint32_t>(n));
    } else if (k == "temperature") {
      if (v.is_null()) continue;
      double t = 0;
      TERND_RETURN_IF_ERROR(Number(v, "temperature", 0, 2, &t));
      g.set_temperature(static_cast<float>(t));
    } else if (k == "top_p") {
      if (v.is_null()) continue;
      double p = 0;
      TERND_RETURN_IF_ERROR(Number(v, "top_p", 0, 1, &p));
      g.set_top_p(p >= 1 ? 0.0f : static_cast<float>(p));
    } else if (k == "top_k") {
      int64_t n = 0;
      TERND_RETURN_IF_ERROR(Integer(v, "top_k", -1, 1 << 20, &n));
      g.set_top_k(static_cast<int32_t>(n));
    } else if (k == "min_p") {
      double p = 0;
      TERND_RETURN_IF_ERROR(Number(v, "min_p", 0, 1, &p));
      g.set_min_p(static_cast<float>(p));
    } else if (k == "repetition_penalty") {
      double p = 0;
      TERND_RETURN_IF_ERROR(Number(v, "repetition_penalty", 0, 10, &p));
      g.set_repetition_penalty(static_cast<float>(p));
    } else if (k == "seed") {
      if (v.is_null()) continue;
      if (v.is_number_integer() && !v.is_number_unsigned() &&
          v.get<int64_t>() < 0) {
        g.set_seed(static_cast<uint64_t>(v.get<int64_t>()));
      } else {
        int64_t s = 0;
        TERND_RETURN_IF_ERROR(Integer(v, "seed", 0, INT64_MAX, &s));
        g.set_seed(static_cast<uint64_t>(s));
      }
    } else if (k == "stop") {
      if (v.is_null()) continue;
      if (v.is_string()) {
        g.add_stop(v.get<std::string>());
      } else if (v.is_array() && v.size() <= kMaxStops) {
        for (const json& s : v) {
          if (!s.is_string()) return WrongType("stop", "strings", s);
          g.add_stop(s.get<std::string>());
        }
      } else {
        return InvalidArgument(
            "'stop' must be a string or an array of at most %zu strings",
            kMaxStops);
      }
    } else if (k == "n") {
      int64_t n = 0;
      TERND_RETURN_IF_ERROR(Integer(v, "n", 1, 1, &n));
    } else if (k == "presence_penalty" || k == "frequency_penalty") {
      if (v.is_null()) continue;
      if (!v.is_number() || v.get<double>() != 0) {
        return InvalidArgument(
            "'%s' is not supported (only 0); use repetition_penalty",
            k.c_str());
      }
    } else if (k == "logprobs" && !chat) {
      // Completions: the number of most likely tokens to list (0..5).
      if (v.is_null()) continue;
      int64_t n = 0;
      TERND_RETURN_IF_ERROR(
          Integer(v, "logprobs", 0, kMaxCompletionLogprobs, &n));
      g.set_logprobs(true);
      g.set_top_logprobs(static_cast<uint32_t>(n));
    } else if (k == "logprobs" && chat) {
      if (v.is_null()) continue;
      if (!v.is_boolean()) return WrongType("logprobs", "true or false", v);
      g.set_logprobs(v.get<bool>());
    } else if (k == "top_logprobs" && chat) {
      if (v.is_null()) continue;
      int64_t n = 0;
      TERND_RETURN_IF_ERROR(
          Integer(v, "top_logprobs", 0, kMaxChatTopLogprobs, &n));
      chat_top = static_cast<int>(n);
    } else if (k == "echo" || k == "best_of" || k == "logit_bias" ||
               k == "tools" || k == "tool_choice" || k == "response_format" ||
               k == "suffix" || k == "top_logprobs") {
      const bool off = v.is_null() || (v.is_boolean() && !v.get<bool>()) ||
                       (k == "best_of" && v == 1) ||
                       (v.is_object() && v.empty()) ||
                       (v.is_array() && v.empty());
      if (!off && k == "top_logprobs") {
        return InvalidArgument(
            "'top_logprobs' is a chat field; completions take 'logprobs': N "
            "(0 to %d)",
            kMaxCompletionLogprobs);
      }
      if (!off) {
        return InvalidArgument("'%s' is not supported by ternd", k.c_str());
      }
    } else if (k == "session") {
      if (!v.is_string() || v.get<std::string>().size() > 128) {
        return WrongType("session", "a string of at most 128 bytes", v);
      }
      g.set_session(v.get<std::string>());
    }
    // Anything else (user, stream_options, metadata, ...) is accepted and
    // has no effect, as OpenAI-compatible servers do.
  }
  if (!have_prompt) {
    return InvalidArgument(chat ? "the body has no 'messages'"
                                : "the body has no 'prompt'");
  }
  if (chat_top >= 0) {
    if (!g.logprobs() && chat_top > 0) {
      return InvalidArgument("'top_logprobs' is %d: it needs 'logprobs': true",
                             chat_top);
    }
    g.set_top_logprobs(static_cast<uint32_t>(chat_top));
  }
  return c;
}

const char* FinishReason(std::string_view stop_reason) {
  if (stop_reason == "eos" || stop_reason == "stop" ||
      stop_reason == "cancelled") {
    return "stop";
  }
  return "length";  // length, context, deadline
}

namespace {

json Usage(const wire::GenerateSummary& s) {
  return {{"prompt_tokens", s.prompt_tokens()},
          {"completion_tokens", s.generated_tokens()},
          {"total_tokens", s.prompt_tokens() + s.generated_tokens()}};
}

// choices[].logprobs in OpenAI's shape for the completions or chat API.
json LogprobsJson(bool chat, const CompletionLogprobs& lp) {
  auto bytes_of = [](const std::string& b) {
    json a = json::array();
    for (char ch : b) a.push_back(static_cast<uint8_t>(ch));
    return a;
  };
  if (chat) {
    json content = json::array();
    for (const wire::GenerateResponse& f : lp.frames) {
      if (f.tokens_size() == 0 || f.logprobs_size() == 0) continue;
      json top = json::array();
      for (const wire::TokenLogprob& t : f.top_logprobs()) {
        top.push_back({{"token", t.bytes()},
                       {"logprob", t.logprob()},
                       {"bytes", bytes_of(t.bytes())}});
      }
      content.push_back({{"token", f.token_bytes()},
                         {"logprob", f.logprobs(0)},
                         {"bytes", bytes_of(f.token_bytes())},
                         {"top_logprobs", std::move(top)}});
    }
    return {{"content", std::move(content)}, {"refusal", nullptr}};
  }
  json tokens = json::array(), token_logprobs = json::array(),
       top_logprobs = json::array(), text_offset = json::array();
  for (size_t i = 0; i < lp.frames.size(); ++i) {
    const wire::GenerateResponse& f = lp.frames[i];
    if (f.tokens_size() == 0 || f.logprobs_size() == 0) continue;
    tokens.push_back(f.token_bytes());
    token_logprobs.push_back(f.logprobs(0));
    json top = json::object();
    for (const wire::TokenLogprob& t : f.top_logprobs()) {
      if (!top.contains(t.bytes())) top[t.bytes()] = t.logprob();
    }
    top_logprobs.push_back(std::move(top));
    text_offset.push_back(i < lp.text_offsets.size() ? lp.text_offsets[i] : 0);
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top_logprobs)},
          {"text_offset", std::move(text_offset)}};
}

}  // namespace

std::string CompletionJson(const CompletionIdentity& who, bool chat,
                           std::string_view text,
                           const wire::GenerateSummary& summary,
                           const CompletionLogprobs* logprobs) {
  json choice = {
      {"index", 0},
      {"logprobs", logprobs ? LogprobsJson(chat, *logprobs) : json(nullptr)},
      {"finish_reason", FinishReason(summary.stop_reason())}};
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", std::string(text)}};
  } else {
    choice["text"] = std::string(text);
  }
  json j = {{"id", who.id},
            {"object", chat ? "chat.completion" : "text_completion"},
            {"created", who.created},
            {"model", who.model},
            {"choices", json::array({std::move(choice)})},
            {"usage", Usage(summary)}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string StreamChunk(const CompletionIdentity& who, bool chat,
                        std::string_view text, bool first,
                        const wire::GenerateSummary* summary,
                        const CompletionLogprobs* logprobs) {
  json choice = {
      {"index", 0},
      {"logprobs", logprobs ? LogprobsJson(chat, *logprobs) : json(nullptr)}};
  choice["finish_reason"] =
      summary ? json(FinishReason(summary->stop_reason())) : json(nullptr);
  if (chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || !summary) delta["content"] = std::string(text);
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = std::string(text);
  }
  json j = {{"id", who.id},
            {"object", chat ? "chat.completion.chunk" : "text_completion"},
            {"created", who.created},
            {"model", who.model},
            {"choices", json::array({std::move(choice)})}};
  if (summary) j["usage"] = Usage(*summary);
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) +
         "\n\n";
}

std::string ModelsJson(const wire::ModelInfoResponse& info, int64_t created) {
  json model = {{"id", info.name()},
                {"object", "model"},
                {"created", created},
                {"owned_by", "ternd"},
                {"version", info.version()},
                {"kind", info.has_language_model() ? "language" : "graph"}};
  json j = {{"object", "list"}, {"data", json::array({std::move(model)})}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string HealthJson(const wire::HealthResponse& h) {
  json j = {{"live", h.live()},
            {"ready", h.ready()},
            {"state", h.state()},
            {"reloads", h.reloads()},
            {"last_reload_error", h.last_reload_error()}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace ternd::daemon
