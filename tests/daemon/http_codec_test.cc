// The HTTP face's JSON and chat templates alone (daemon/http_codec.h,
// daemon/chat_template.h): shapes, field checks and their messages, the
// OpenAI answer and chunk shapes.
#include "daemon/http_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "daemon/chat_template.h"

namespace ternd::daemon {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

TEST(HttpCodecTest, InferShapesFromNesting) {
  Result<wire::InferRequest> r = ParseInferJson(
      R"({"inputs": {"a": [[1, 2, 3], [4, 5, 6]], "b": [7, 8]},
          "outputs": ["p"], "deadline_ms": 5})");
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->inputs_size(), 2);
  const wire::Tensor& a = r->inputs(0);
  EXPECT_EQ(a.name(), "a");
  EXPECT_THAT(a.shape(), ::testing::ElementsAre(2, 3));
  ASSERT_EQ(a.data().size(), 24u);
  float v[6];
  std::memcpy(v, a.data().data(), 24);
  EXPECT_EQ(v[5], 6.0f);
  EXPECT_THAT(r->inputs(1).shape(), ::testing::ElementsAre(1, 2));
  EXPECT_EQ(r->outputs(0), "p");
  EXPECT_EQ(r->deadline_us(), 5000u);
  // One unnamed input.
  r = ParseInferJson(R"({"inputs": [[[1, 2], [3, 4]]]})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->inputs(0).name(), "");
  EXPECT_THAT(r->inputs(0).shape(), ::testing::ElementsAre(1, 2, 2));
}

TEST(HttpCodecTest, InferErrorsNameWhatIsWrong) {
  auto msg = [](std::string_view body) {
    Result<wire::InferRequest> r = ParseInferJson(body);
    EXPECT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    return std::string(r.status().message());
  };
  EXPECT_THAT(msg(""), HasSubstr("no JSON body"));
  EXPECT_THAT(msg("{"), HasSubstr("not valid JSON"));
  EXPECT_THAT(msg("[1]"), HasSubstr("must be a JSON object"));
  EXPECT_THAT(msg("{}"), HasSubstr("no 'inputs'"));
  EXPECT_THAT(msg(R"({"inputs": {}})"), HasSubstr("'inputs' is empty"));
  EXPECT_THAT(msg(R"({"inputs": {"x": [[1], [2, 3]]}})"), HasSubstr("ragged"));
  EXPECT_THAT(msg(R"({"inputs": {"x": [[1], 2]}})"), HasSubstr("x"));
  EXPECT_THAT(msg(R"({"inputs": {"x": [true]}})"),
              HasSubstr("true where a number belongs"));
  EXPECT_THAT(msg(R"({"inputs": {"x": [1e300]}})"),
              HasSubstr("not a finite float"));
  EXPECT_THAT(msg(R"({"inputs": {"x": []}})"), HasSubstr("empty array"));
  EXPECT_THAT(msg(R"({"inputs": {"x": [1]}, "deadline_ms": -1})"),
              HasSubstr("'deadline_ms' is -1"));
  EXPECT_THAT(msg(R"({"inputs": {"x": [1]}, "extra": 1})"),
              HasSubstr("unknown field 'extra'"));
  EXPECT_THAT(msg(std::string(100, '[') + std::string(100, ']')),
              HasSubstr("deeper than 32"));
}

TEST(HttpCodecTest, InferAnswer) {
  wire::InferResponse r;
  r.set_model("m");
  r.set_model_version(3);
  wire::Tensor* t = r.add_outputs();
  t->set_name("probs");
  t->set_dtype(wire::F32);
  t->add_shape(2);
  t->add_shape(2);
  const float f[4] = {0.25f, 0.75f, 1.0f, 0.0f};
  t->set_data(f, sizeof(f));
  wire::Tensor* c = r.add_outputs();
  c->set_name("class");
  c->set_dtype(wire::I32);
  c->add_shape(2);
  c->add_shape(1);
  const int32_t k[2] = {1, 0};
  c->set_data(k, sizeof(k));
  json j = json::parse(InferResponseJson(r));
  EXPECT_EQ(j["outputs"]["probs"], json::parse("[[0.25, 0.75], [1.0, 0.0]]"));
  EXPECT_EQ(j["outputs"]["class"], json::parse("[[1], [0]]"));
  EXPECT_EQ(j["model_version"], 3);
}

TEST(HttpCodecTest, CompletionFields) {
  Result<CompletionRequest> c = ParseCompletionJson(
      R"({"model": "m", "prompt": ["hi"], "max_tokens": 7, "temperature": 0,
          "top_p": 0.5, "seed": 9, "stop": ["\n", "."], "stream": true,
          "user": "x", "stream_options": {"include_usage": true},
          "top_k": 5, "session": "s1"})",
      false);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_TRUE(c->stream);
  EXPECT_EQ(c->generate.prompt(), "hi");
  EXPECT_EQ(c->generate.max_tokens(), 7u);
  EXPECT_EQ(c->generate.temperature(), 0.0f);
  EXPECT_EQ(c->generate.top_p(), 0.5f);
  EXPECT_EQ(c->generate.seed(), 9u);
  EXPECT_EQ(c->generate.stop_size(), 2);
  EXPECT_EQ(c->generate.top_k(), 5);
  EXPECT_EQ(c->generate.session(), "s1");
  // OpenAI's default temperature.
  c = ParseCompletionJson(R"({"prompt": [1, 2, 3]})", false);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->generate.temperature(), 1.0f);
  EXPECT_EQ(c->generate.prompt_tokens_size(), 3);

  auto msg = [](std::string_view body, bool chat) {
    Result<CompletionRequest> r = ParseCompletionJson(body, chat);
    EXPECT_FALSE(r.ok()) << body;
    return std::string(r.status().message());
  };
  EXPECT_THAT(msg(R"({"prompt": 1})", false), HasSubstr("'prompt' must be"));
  EXPECT_THAT(msg(R"({"prompt": "a", "temperature": 3})", false),
              HasSubstr("'temperature' is 3"));
  EXPECT_THAT(msg(R"({"prompt": "a", "max_tokens": 1.5})", false),
              HasSubstr("'max_tokens' must be an integer"));
  EXPECT_THAT(msg(R"({"prompt": "a", "stream": "yes"})", false),
              HasSubstr("'stream' must be true or false"));
  EXPECT_THAT(msg(R"({"prompt": "a", "logprobs": 6})", false),
              HasSubstr("'logprobs' is 6: it must be between 0 and 5"));
  EXPECT_THAT(msg(R"({"prompt": "a", "logprobs": true})", false),
              HasSubstr("'logprobs' must be an integer"));
  EXPECT_THAT(msg(R"({"prompt": "a", "top_logprobs": 2})", false),
              HasSubstr("completions take 'logprobs': N"));
  EXPECT_THAT(msg(R"({"messages": [], "logprobs": 2})", true),
              HasSubstr("'logprobs' must be true or false"));
  EXPECT_THAT(
      msg(R"({"messages": [], "logprobs": true, "top_logprobs": 21})", true),
      HasSubstr("'top_logprobs' is 21: it must be between 0 and 20"));
  EXPECT_THAT(msg(R"({"messages": [], "top_logprobs": 1})", true),
              HasSubstr("'top_logprobs' is 1: it needs 'logprobs': true"));
  EXPECT_THAT(msg(R"({"prompt": "a", "frequency_penalty": 0.5})", false),
              HasSubstr("repetition_penalty"));
  EXPECT_THAT(msg(R"({"model": "m"})", false), HasSubstr("no 'prompt'"));
  EXPECT_THAT(msg(R"({"messages": [{"content": "x"}]})", true),
              HasSubstr("messages[0] must be an object with a string 'role'"));
  EXPECT_THAT(
      msg(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
          true),
      HasSubstr("only {\"type\": \"text\""));
}

TEST(HttpCodecTest, LogprobsFields) {
  Result<CompletionRequest> c =
      ParseCompletionJson(R"({"prompt": "a", "logprobs": 3})", false);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_TRUE(c->generate.logprobs());
  EXPECT_EQ(c->generate.top_logprobs(), 3u);
  c = ParseCompletionJson(R"({"prompt": "a", "logprobs": 0})", false);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->generate.logprobs());
  EXPECT_EQ(c->generate.top_logprobs(), 0u);
  c = ParseCompletionJson(R"({"prompt": "a", "logprobs": null})", false);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->generate.logprobs());
  c = ParseCompletionJson(
      R"({"messages": [{"role": "user", "content": "x"}],
          "top_logprobs": 20, "logprobs": true})",
      true);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_TRUE(c->generate.logprobs());
  EXPECT_EQ(c->generate.top_logprobs(), 20u);
  c = ParseCompletionJson(
      R"({"messages": [{"role": "user", "content": "x"}], "logprobs": false})",
      true);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->generate.logprobs());
}

TEST(HttpCodecTest, LogprobsAnswers) {
  wire::GenerateSummary s;
  s.set_stop_reason("length");
  CompletionLogprobs lp;
  for (int i = 0; i < 2; ++i) {
    wire::GenerateResponse f;
    f.add_tokens(10 + i);
    f.set_text(i == 0 ? "ab" : "c");
    f.add_logprobs(-0.5f - i);
    f.set_token_bytes(i == 0 ? "ab" : "c");
    wire::TokenLogprob* t = f.add_top_logprobs();
    t->set_token(10 + i);
    t->set_logprob(-0.5f - i);
    t->set_bytes(f.token_bytes());
    t = f.add_top_logprobs();
    t->set_token(3);
    t->set_logprob(-2.25f);
    t->set_bytes("\xe2\x80");  // part of a character
    lp.frames.push_back(f);
    lp.text_offsets.push_back(i == 0 ? 0 : 2);
  }
  CompletionIdentity who{"cmpl-1", 100, "m"};
  json j = json::parse(CompletionJson(who, false, "abc", s, &lp));
  const json& l = j["choices"][0]["logprobs"];
  EXPECT_EQ(l["tokens"], json({"ab", "c"}));
  EXPECT_EQ(l["token_logprobs"], json({-0.5, -1.5}));
  EXPECT_EQ(l["text_offset"], json({0, 2}));
  EXPECT_EQ(l["top_logprobs"][0]["ab"], -0.5);
  EXPECT_EQ(l["top_logprobs"][0].size(), 2u);
  j = json::parse(CompletionJson(who, true, "abc", s, &lp));
  const json& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], "ab");
  EXPECT_EQ(content[0]["logprob"], -0.5);
  EXPECT_EQ(content[0]["bytes"], json({97, 98}));
  EXPECT_EQ(content[1]["top_logprobs"][1]["bytes"], json({0xe2, 0x80}));
  EXPECT_EQ(content[1]["top_logprobs"][1]["logprob"], -2.25);
  // Without logprobs: null, as before.
  j = json::parse(CompletionJson(who, true, "abc", s));
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  // A stream chunk carries its token's.
  CompletionLogprobs one{{lp.frames[1]}, {2}};
  json chunk =
      json::parse(StreamChunk(who, false, "c", false, nullptr, &one).substr(6));
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["tokens"], json({"c"}));
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["text_offset"], json({2}));
}

TEST(HttpCodecTest, ChatMessagesAndTemplates) {
  Result<CompletionRequest> c = ParseCompletionJson(
      R"({"messages": [{"role": "developer", "content": "Be brief."},
                       {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]})",
      true);
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->messages.size(), 2u);
  EXPECT_EQ(c->messages[0].role, "system");
  Result<std::string> p = ApplyChatTemplate(ChatTemplate::kLlama3, c->messages);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p,
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  p = ApplyChatTemplate(ChatTemplate::kBitnet, c->messages);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, "System: Be brief.<|eot_id|>User: Hi<|eot_id|>Assistant: ");

  EXPECT_EQ(*RecognizeChatTemplate("...'<|start_header_id|>' + role + "
                                   "'<|end_header_id|>'..."),
            ChatTemplate::kLlama3);
  EXPECT_EQ(*RecognizeChatTemplate("{{ 'User: ' + c + '<|eot_id|>' }}"
                                   "{{ 'Assistant: ' }}"),
            ChatTemplate::kBitnet);
  Result<ChatTemplate> none = RecognizeChatTemplate("");
  EXPECT_THAT(none.status().message(), HasSubstr("has no chat template"));
  Result<ChatTemplate> odd = RecognizeChatTemplate("<|im_start|>{{ x }}");
  EXPECT_EQ(odd.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(odd.status().message(), HasSubstr("not one ternd knows"));
  EXPECT_FALSE(ApplyChatTemplate(ChatTemplate::kLlama3, {}).ok());
}

TEST(HttpCodecTest, AnswersAndChunks) {
  wire::GenerateSummary s;
  s.set_stop_reason("eos");
  s.set_prompt_tokens(4);
  s.set_generated_tokens(2);
  CompletionIdentity who{"chatcmpl-1", 100, "m"};
  json j = json::parse(CompletionJson(who, true, "hey", s));
  EXPECT_EQ(j["choices"][0]["message"]["content"], "hey");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["total_tokens"], 6);
  const std::string chunk = StreamChunk(who, true, "he", true, nullptr);
  ASSERT_EQ(chunk.rfind("data: ", 0), 0u);
  ASSERT_EQ(chunk.substr(chunk.size() - 2), "\n\n");
  json cj = json::parse(chunk.substr(6));
  EXPECT_EQ(cj["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(cj["choices"][0]["delta"]["content"], "he");
  EXPECT_TRUE(cj["choices"][0]["finish_reason"].is_null());
  s.set_stop_reason("length");
  json last = json::parse(StreamChunk(who, false, "", false, &s).substr(6));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(last["usage"]["completion_tokens"], 2);

  json e = json::parse(ErrorJson(StatusCode::kResourceExhausted, "full"));
  EXPECT_EQ(e["error"]["message"], "full");
  EXPECT_EQ(e["error"]["type"], "rate_limit_error");
  EXPECT_EQ(e["error"]["code"], "resource_exhausted");
  EXPECT_EQ(HttpStatusOf(StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusOf(StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusOf(StatusCode::kInvalidArgument), 400);
}

}  // namespace
}  // namespace ternd::daemon
