// The HTTP face (docs/http.md) against the real daemon, with curl over both
// transports (the unix socket and TCP on loopback): every endpoint, the
// errors (malformed JSON, wrong types, oversized bodies, slow clients, too
// many connections, the token), /metrics through `promtool check metrics`,
// and completions and chat against a random-weight language model, checked
// against the native socket's Generate. While HTTP clients misbehave, a
// socket client keeps being served.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "daemon/client/client.h"
#include "tests/daemon/daemon_process.h"
#include "tests/daemon/daemon_test_models.h"

namespace ternd::daemon_testing {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

struct Answer {
  int status = 0;
  std::string body;
};

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// A port nobody listens on now.
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

int ConnectTcp(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Everything the peer sends until it closes (or `timeout_ms`).
std::string ReadAll(int fd, int timeout_ms) {
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

class HttpFixture : public ::testing::Test {
 protected:
  // The two ways to reach the face: curl arguments before the path.
  std::vector<std::string> Transports() const {
    return {"--unix-socket " + Quote(dir_.File("h.sock")) + " http://localhost",
            "http://127.0.0.1:" + std::to_string(port_)};
  }

  void Start(const std::string& model_section, const std::string& http_extra) {
    port_ = FreePort();
    WriteText(dir_.File("ternd.toml"),
              "[server]\nsocket = \"" + dir_.File("t.sock") + "\"\n" +
                  model_section + "[http]\nsocket = \"" + dir_.File("h.sock") +
                  "\"\nport = " + std::to_string(port_) + "\n" + http_extra);
    DaemonOptions o;
    o.directory = dir_.path();
    o.config_path = dir_.File("ternd.toml");
    daemon_ = std::make_unique<DaemonProcess>(o);
    ASSERT_TRUE(daemon_->WaitForNotify("READY=1")) << daemon_->Log();
  }

  // curl with `args` (a transport's base followed by the path, and options).
  Answer Curl(const std::string& base, const std::string& path,
              const std::string& options = "") {
    const std::string out = dir_.File("curl.out");
    const std::string cmd = std::string(CURL_PATH) + " -sS --max-time 30 -o " +
                            Quote(out) + " -w '%{http_code}' " + options + " " +
                            base + path;
    Answer a;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return a;
    char code[16] = {};
    if (fgets(code, sizeof(code), p)) a.status = atoi(code);
    pclose(p);
    a.body = ReadText(out);
    return a;
  }
  Answer Post(const std::string& base, const std::string& path,
              const std::string& body, const std::string& options = "") {
    WriteText(dir_.File("body.json"), body);
    return Curl(base, path,
                "-H 'Content-Type: application/json' --data-binary @" +
                    Quote(dir_.File("body.json")) + " " + options);
  }

  static std::string ErrorMessage(const Answer& a) {
    json j = json::parse(a.body, nullptr, false);
    if (j.is_discarded() || !j.contains("error")) return "<no error JSON>";
    return j["error"]["message"].get<std::string>();
  }

  std::unique_ptr<client::Client> Socket() {
    auto c = client::Client::Connect(dir_.File("t.sock"));
    EXPECT_TRUE(c.ok()) << c.status().message();
    return c.ok() ? std::move(*c) : nullptr;
  }

  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<DaemonProcess> daemon_;
};

// ------------------------------------------------------------ graph model

class HttpGraphTest : public HttpFixture {
 protected:
  void SetUp() override {
    ASSERT_TRUE(WriteTestModel(FastModel(), dir_.File("m.tern")).ok());
    Start("[runtime]\nmodel = \"" + dir_.File("m.tern") + "\"\n",
          "max_connections = 4\nmax_body_bytes = 65536\n"
          "request_timeout_ms = 1500\nidle_timeout_s = 20\n");
  }

  wire::InferRequest Rows(uint32_t rows) {
    wire::InferRequest r;
    const std::vector<float> v = TestInput(FastModel(), rows, 5);
    client::AddF32Input(&r, "x", rows, 16, v);
    return r;
  }
  static std::string RowsJson(uint32_t rows) {
    const std::vector<float> v = TestInput(FastModel(), rows, 5);
    json x = json::array();
    for (uint32_t r = 0; r < rows; ++r) {
      x.push_back(
          std::vector<float>(v.begin() + r * 16, v.begin() + (r + 1) * 16));
    }
    return json{{"inputs", {{"x", x}}}}.dump();
  }
};

TEST_F(HttpGraphTest, HealthReadyModelsMetricsOnBothTransports) {
  // An answered request, so the model-quality series are in /metrics too.
  auto sock = Socket();
  ASSERT_TRUE(sock);
  ASSERT_TRUE(sock->Infer(Rows(2)).ok());
  for (const std::string& base : Transports()) {
    SCOPED_TRACE(base);
    Answer h = Curl(base, "/health");
    EXPECT_EQ(h.status, 200) << h.body;
    json hj = json::parse(h.body);
    EXPECT_TRUE(hj["live"].get<bool>());
    EXPECT_EQ(hj["state"], "serving");
    Answer r = Curl(base, "/ready");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_TRUE(json::parse(r.body)["ready"].get<bool>());
    Answer m = Curl(base, "/v1/models");
    ASSERT_EQ(m.status, 200) << m.body;
    json mj = json::parse(m.body);
    EXPECT_EQ(mj["object"], "list");
    EXPECT_EQ(mj["data"][0]["id"], "testnet");
    EXPECT_EQ(mj["data"][0]["kind"], "graph");
    Answer metrics = Curl(base, "/metrics");
    ASSERT_EQ(metrics.status, 200);
    EXPECT_THAT(metrics.body, HasSubstr("ternd_requests_total{"));
    EXPECT_THAT(metrics.body, HasSubstr("call=\"model_info\""));
    EXPECT_THAT(metrics.body, HasSubstr("ternd_model_class_total{"));
    EXPECT_THAT(metrics.body, HasSubstr("ternd_model_confidence_bucket{"));
    EXPECT_THAT(metrics.body, HasSubstr("ternd_model_input_mean{"));
    // Prometheus' own checker accepts the exposition.
    WriteText(dir_.File("metrics.txt"), metrics.body);
    const std::string check = std::string(PROMTOOL_PATH) + " check metrics < " +
                              Quote(dir_.File("metrics.txt")) + " 2>&1";
    FILE* p = popen(check.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string said;
    char buf[512];
    while (fgets(buf, sizeof(buf), p)) said += buf;
    const int rc = pclose(p);
    // promtool exits 0 when the text parses; lint remarks are printed (and
    // make it exit 3 on some versions) but a parse error is exit 1.
    EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) != 1) << said;
    EXPECT_THAT(said, ::testing::Not(HasSubstr("error while linting")));
  }
}

TEST_F(HttpGraphTest, InferGivesTheSocketsAnswer) {
  auto sock = Socket();
  ASSERT_TRUE(sock);
  Result<wire::InferResponse> native = sock->Infer(Rows(3));
  ASSERT_TRUE(native.ok()) << native.status().message();
  for (const std::string& base : Transports()) {
    SCOPED_TRACE(base);
    Answer a = Post(base, "/v1/infer", RowsJson(3));
    ASSERT_EQ(a.status, 200) << a.body;
    json j = json::parse(a.body);
    EXPECT_EQ(j["model"], "testnet");
    EXPECT_EQ(j["model_version"], 1);
    const json& probs = j["outputs"]["probs"];
    const json& cls = j["outputs"]["class"];
    ASSERT_EQ(probs.size(), 3u);
    ASSERT_EQ(cls.size(), 3u);
    for (const wire::Tensor& t : native->outputs()) {
      for (size_t r = 0; r < 3; ++r) {
        if (t.name() == "probs") {
          ASSERT_EQ(probs[r].size(), 4u);
          for (size_t c = 0; c < 4; ++c) {
            float want;
            std::memcpy(&want, t.data().data() + (r * 4 + c) * 4, 4);
            EXPECT_EQ(probs[r][c].get<float>(), want);
          }
        } else {
          int32_t want;
          std::memcpy(&want, t.data().data() + r * 4, 4);
          EXPECT_EQ(cls[r][0].get<int32_t>(), want);
        }
      }
    }
    // Only the outputs asked for.
    Answer one = Post(base, "/v1/infer",
                      R"({"inputs": {"x": [)" +
                          json::parse(RowsJson(1))["inputs"]["x"][0].dump() +
                          R"(]}, "outputs": ["class"]})");
    ASSERT_EQ(one.status, 200) << one.body;
    EXPECT_FALSE(json::parse(one.body)["outputs"].contains("probs"));
  }
}

TEST_F(HttpGraphTest, BadRequestsGetStatusAndMessage) {
  const std::string base = Transports()[1];
  Answer a = Post(base, "/v1/infer", R"({"inputs": {"x": [[1, 2,]]})");
  EXPECT_EQ(a.status, 400);
  EXPECT_THAT(ErrorMessage(a), HasSubstr("not valid JSON"));
  EXPECT_EQ(json::parse(a.body)["error"]["type"], "invalid_request_error");

  a = Post(base, "/v1/infer", R"({"inputs": {"x": [["one", 2]]}})");
  EXPECT_EQ(a.status, 400);
  EXPECT_THAT(ErrorMessage(a), HasSubstr("\"one\" where a number belongs"));

  a = Post(base, "/v1/infer", R"({"inputs": {"x": [[1, 2], [3]]}})");
  EXPECT_EQ(a.status, 400);
  EXPECT_THAT(ErrorMessage(a), HasSubstr("ragged"));

  a = Post(base, "/v1/infer", R"({"inputs": 7})");
  EXPECT_EQ(a.status, 400);
  EXPECT_THAT(ErrorMessage(a), HasSubstr("'inputs' must be"));

  // The socket protocol's validation, word for word.
  wire::InferRequest wrong;
  std::vector<float> five(5, 0.5f);
  client::AddF32Input(&wrong, "x", 1, 5, five);
  auto sock = Socket();
  ASSERT_TRUE(sock);
  Result<wire::InferResponse> native = sock->Infer(wrong);
  ASSERT_FALSE(native.ok());
  a = Post(base, "/v1/infer", R"({"inputs": {"x": [[0.5,0.5,0.5,0.5,0.5]]}})");
  EXPECT_EQ(a.status, 400);
  EXPECT_EQ(ErrorMessage(a), native.status().message());
  a = Post(base, "/v1/infer", R"({"inputs": {"y": [[1]]}})");
  EXPECT_EQ(a.status, 400);
  EXPECT_THAT(ErrorMessage(a), HasSubstr("'y'"));

  // Over http.max_body_bytes (65536).
  std::string big = R"({"inputs": {"x": [[)";
  while (big.size() < 70000) big += "0.5,";
  big += "0.5]]}}";
  a = Post(base, "/v1/infer", big);
  EXPECT_EQ(a.status, 413);
  EXPECT_THAT(ErrorMessage(a), HasSubstr("http.max_body_bytes"));
  EXPECT_EQ(json::parse(a.body)["error"]["type"], "invalid_request_error");
  // The same without a length: chunked.
  a = Post(base, "/v1/infer", big, "-H 'Transfer-Encoding: chunked'");
  EXPECT_EQ(a.status, 413);
  EXPECT_THAT(ErrorMessage(a), HasSubstr("http.max_body_bytes"));

  // Headers over http.max_header_bytes (16384): libmicrohttpd's own 431.
  a = Curl(base, "/health", "-H 'X-Big: " + std::string(30000, 'a') + "'");
  EXPECT_EQ(a.status, 431);

  a = Curl(base, "/v2/nothing");
  EXPECT_EQ(a.status, 404);
  EXPECT_THAT(ErrorMessage(a), HasSubstr("no endpoint GET /v2/nothing"));
  a = Curl(base, "/v1/infer");
  EXPECT_EQ(a.status, 405);
  EXPECT_THAT(ErrorMessage(a), HasSubstr("takes POST"));
  a = Post(base, "/v1/completions", R"({"prompt": "hi"})");
  EXPECT_EQ(a.status, 400);
  EXPECT_THAT(ErrorMessage(a), HasSubstr("graph model"));

  // And the socket is served as before.
  EXPECT_TRUE(sock->Infer(Rows(1)).ok());
}

TEST_F(HttpGraphTest, SlowClientGets408AndTheSocketKeepsServing) {
  for (bool in_body : {false, true}) {
    SCOPED_TRACE(in_body ? "trickling the body" : "trickling the headers");
    const int fd = ConnectTcp(port_);
    ASSERT_GE(fd, 0);
    std::string head = "POST /v1/infer HTTP/1.1\r\nHost: x\r\n";
    if (in_body) head += "Content-Length: 100\r\n\r\n{\"inputs\"";
    ASSERT_GT(send(fd, head.data(), head.size(), MSG_NOSIGNAL), 0);
    auto sock = Socket();
    ASSERT_TRUE(sock);
    const auto start = std::chrono::steady_clock::now();
    bool closed = false;
    // One byte every 200 ms: far below the idle timeout (20 s), but the
    // whole request never arrives within request_timeout_ms (1.5 s).
    for (int i = 0; i < 40 && !closed; ++i) {
      if (send(fd, in_body ? " " : "X", 1, MSG_NOSIGNAL) != 1) closed = true;
      // Meanwhile the socket answers at once.
      const auto t0 = std::chrono::steady_clock::now();
      ASSERT_TRUE(sock->Infer(Rows(1)).ok());
      EXPECT_LT(std::chrono::steady_clock::now() - t0,
                std::chrono::milliseconds(500));
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 200) > 0) break;
    }
    const std::string got = ReadAll(fd, 3000);
    close(fd);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_THAT(got, HasSubstr("HTTP/1.1 408"));
    EXPECT_THAT(got, HasSubstr("http.request_timeout_ms"));
    EXPECT_LT(took, std::chrono::seconds(5));
  }
}

TEST_F(HttpGraphTest, TooManyConnectionsGet503) {
  const std::string base = Transports()[1];
  std::vector<int> held;
  for (int i = 0; i < 4; ++i) {
    const int fd = ConnectTcp(port_);
    ASSERT_GE(fd, 0);
    held.push_back(fd);
  }
  // The cap is counted as connections are accepted: give the daemon a
  // moment to have seen all four (a health answer on the socket orders it).
  auto sock = Socket();
  ASSERT_TRUE(sock);
  Answer a;
  for (int i = 0; i < 50; ++i) {
    a = Curl(base, "/health");
    if (a.status == 503) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(a.status, 503) << a.body;
  EXPECT_THAT(ErrorMessage(a), HasSubstr("http.max_connections = 4"));
  EXPECT_TRUE(sock->Infer(Rows(1)).ok());
  for (int fd : held) close(fd);
  for (int i = 0; i < 100; ++i) {
    a = Curl(base, "/health");
    if (a.status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(a.status, 200) << a.body;
}

TEST(HttpTokenTest, BearerTokenGuardsAllButHealth) {
  TempDir dir;
  ASSERT_TRUE(WriteTestModel(FastModel(), dir.File("m.tern")).ok());
  WriteText(dir.File("token"), "s3cret-token\n");
  WriteText(dir.File("ternd.toml"),
            "[server]\nsocket = \"" + dir.File("t.sock") +
                "\"\n[runtime]\nmodel = \"" + dir.File("m.tern") +
                "\"\n[http]\nsocket = \"" + dir.File("h.sock") +
                "\"\ntoken_file = \"" + dir.File("token") + "\"\n");
  DaemonOptions o;
  o.directory = dir.path();
  o.config_path = dir.File("ternd.toml");
  DaemonProcess daemon(o);
  ASSERT_TRUE(daemon.WaitForNotify("READY=1")) << daemon.Log();
  auto code = [&](const std::string& path, const std::string& header) {
    const std::string cmd = std::string(CURL_PATH) +
                            " -s -o /dev/null -w '%{http_code}' " + header +
                            " --unix-socket " + Quote(dir.File("h.sock")) +
                            " http://localhost" + path;
    FILE* p = popen(cmd.c_str(), "r");
    char buf[16] = {};
    if (p && fgets(buf, sizeof(buf), p)) {
    }
    if (p) pclose(p);
    return atoi(buf);
  };
  EXPECT_EQ(code("/v1/models", ""), 401);
  EXPECT_EQ(code("/metrics", "-H 'Authorization: Bearer wrong-token!'"), 401);
  EXPECT_EQ(code("/v1/models", "-H 'Authorization: Bearer s3cret-token'"), 200);
  EXPECT_EQ(code("/health", ""), 200);
  EXPECT_EQ(code("/ready", ""), 200);
}

// --------------------------------------------------------- language model

class HttpLmTest : public HttpFixture {
 protected:
  static constexpr const char* kSmall =
      "--hidden 128 --ffn 256 --layers 2 --heads 4 --kv-heads 2 --vocab 600 "
      "--seed 7";
  static void MakeModel(const std::string& dir, const std::string& name,
                        const std::string& chat_template,
                        const std::string& shape = kSmall) {
    const std::string gguf = dir + "/" + name + ".gguf";
    std::string cmd = std::string(PYTHON_PATH) + " " + GGUF_WRITER_PATH +
                      " --arch bitnet-b1.58 " + shape + " -o " + gguf;
    if (!chat_template.empty()) cmd += " --chat-template " + chat_template;
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const std::string convert = std::string(TERNCTL_PATH) + " convert " + gguf +
                                " -o " + dir + "/" + name + ".tern > /dev/null";
    ASSERT_EQ(std::system(convert.c_str()), 0) << convert;
  }
  void StartLm(const std::string& name, int sequences = 2, int context = 512) {
    Start("[runtime]\nmodel = \"" + dir_.File(name + ".tern") +
              "\"\narena_mb = 32\n[llm]\nthreads = 1\nsequences = " +
              std::to_string(sequences) +
              "\nmax_context = " + std::to_string(context) + "\n",
          "");
  }
  // The text of a streamed answer (server-sent events), with the last
  // chunk's JSON in *last.
  static std::string Joined(const std::string& sse, bool chat, json* last,
                            int* events, bool* done) {
    std::string text;
    *events = 0;
    *done = false;
    size_t at = 0;
    while ((at = sse.find("data: ", at)) != std::string::npos) {
      const size_t end = sse.find("\n\n", at);
      const std::string data = sse.substr(at + 6, end - at - 6);
      at = end;
      if (data == "[DONE]") {
        *done = true;
        continue;
      }
      json j = json::parse(data);
      ++*events;
      const json& c = j["choices"][0];
      if (chat) {
        if (c["delta"].contains("content")) {
          text += c["delta"]["content"].get<std::string>();
        }
      } else {
        text += c["text"].get<std::string>();
      }
      *last = j;
    }
    return text;
  }
};

TEST_F(HttpLmTest, CompletionsStreamedAndPlainAgreeWithTheSocket) {
  MakeModel(dir_.path(), "lm", "llama3");
  StartLm("lm");
  // The native stream, greedy.
  auto sock = Socket();
  ASSERT_TRUE(sock);
  wire::GenerateRequest g;
  g.set_prompt("the robot arm");
  g.set_max_tokens(12);
  g.set_seed(3);
  std::string native;
  Result<wire::GenerateSummary> sum =
      sock->Generate(g, [&](const wire::GenerateResponse& r) {
        native += r.text();
        return true;
      });
  ASSERT_TRUE(sum.ok()) << sum.status().message();
  for (const std::string& base : Transports()) {
    SCOPED_TRACE(base);
    const std::string body =
        R"({"model": "x", "prompt": "the robot arm", "max_tokens": 12,
            "temperature": 0, "seed": 3)";
    Answer plain = Post(base, "/v1/completions", body + "}");
    ASSERT_EQ(plain.status, 200) << plain.body;
    json pj = json::parse(plain.body);
    EXPECT_EQ(pj["object"], "text_completion");
    EXPECT_EQ(pj["model"], "random-bitnet-b1.58");
    const std::string text = pj["choices"][0]["text"];
    EXPECT_EQ(text, native);
    EXPECT_EQ(pj["usage"]["completion_tokens"], sum->generated_tokens());
    EXPECT_EQ(pj["usage"]["prompt_tokens"], sum->prompt_tokens());
    EXPECT_EQ(pj["choices"][0]["finish_reason"],
              sum->stop_reason() == "length" ? "length" : "stop");

    Answer streamed =
        Post(base, "/v1/completions", body + R"(, "stream": true})", "-N");
    ASSERT_EQ(streamed.status, 200) << streamed.body;
    json last;
    int events = 0;
    bool done = false;
    EXPECT_EQ(Joined(streamed.body, false, &last, &events, &done), text);
    EXPECT_TRUE(done);
    // One chunk per token, then the finish with the usage.
    EXPECT_EQ(events, static_cast<int>(sum->generated_tokens()) + 1);
    EXPECT_EQ(last["usage"]["completion_tokens"], sum->generated_tokens());
    EXPECT_FALSE(last["choices"][0]["finish_reason"].is_null());
  }
}

TEST_F(HttpLmTest, ChatAppliesTheModelsTemplate) {
  MakeModel(dir_.path(), "lm", "llama3");
  StartLm("lm");
  const std::string base = Transports()[0];
  const std::string chat =
      R"({"messages": [{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": " Where is the arm? "}],
          "max_tokens": 10, "temperature": 0})";
  Answer a = Post(base, "/v1/chat/completions", chat);
  ASSERT_EQ(a.status, 200) << a.body;
  json j = json::parse(a.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  const std::string text = j["choices"][0]["message"]["content"];
  // The llama-3 format, written out by hand, as a plain completion.
  const json prompt =
      "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\nWhere is the arm?"
      "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
  Answer b = Post(base, "/v1/completions",
                  R"({"max_tokens": 10, "temperature": 0, "prompt": )" +
                      prompt.dump() + "}");
  ASSERT_EQ(b.status, 200) << b.body;
  EXPECT_EQ(json::parse(b.body)["choices"][0]["text"], text);
  EXPECT_EQ(json::parse(b.body)["usage"], j["usage"]);
  // Streamed chat joins to the same text.
  Answer s = Post(base, "/v1/chat/completions",
                  chat.substr(0, chat.size() - 1) + R"(, "stream": true})");
  ASSERT_EQ(s.status, 200) << s.body;
  json last;
  int events = 0;
  bool done = false;
  EXPECT_EQ(Joined(s.body, true, &last, &events, &done), text);
  EXPECT_TRUE(done);
  EXPECT_EQ(last["object"], "chat.completion.chunk");
  // Bad fields are named.
  Answer bad = Post(base, "/v1/chat/completions",
                    R"({"messages": [{"role": "user", "content": "hi"}],
                        "temperature": "hot"})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(ErrorMessage(bad), HasSubstr("'temperature' must be a number"));
  bad = Post(base, "/v1/chat/completions",
             R"({"messages": [{"role": "robot", "content": "hi"}]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(ErrorMessage(bad), HasSubstr("messages[0].role is 'robot'"));
  bad = Post(base, "/v1/completions", R"({"prompt": "hi", "n": 2})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(ErrorMessage(bad), HasSubstr("'n' is 2"));
}

TEST_F(HttpLmTest, UnknownChatTemplateIsRefusedByName) {
  MakeModel(dir_.path(), "odd", "'{{ messages | tojson }}'");
  StartLm("odd");
  const std::string base = Transports()[1];
  Answer a = Post(base, "/v1/chat/completions",
                  R"({"messages": [{"role": "user", "content": "hi"}]})");
  EXPECT_EQ(a.status, 400);
  EXPECT_THAT(ErrorMessage(a), HasSubstr("is not one ternd knows"));
  // Completions still work.
  a = Post(base, "/v1/completions",
           R"({"prompt": "hi", "max_tokens": 2, "temperature": 0})");
  EXPECT_EQ(a.status, 200) << a.body;
}

// The native Generate's logprobs (greedy, the same request) are what the
// HTTP face answers: completions' logprobs: N and chat's logprobs +
// top_logprobs, plain and streamed.
TEST_F(HttpLmTest, LogprobsAreTheNativeOnes) {
  MakeModel(dir_.path(), "lm", "llama3");
  StartLm("lm");
  auto sock = Socket();
  ASSERT_TRUE(sock);
  wire::GenerateRequest g;
  g.set_prompt("the robot arm");
  g.set_max_tokens(6);
  g.set_logprobs(true);
  g.set_top_logprobs(5);
  std::vector<wire::GenerateResponse> frames;
  Result<wire::GenerateSummary> sum =
      sock->Generate(g, [&](const wire::GenerateResponse& r) {
        if (r.tokens_size() > 0) frames.push_back(r);
        return true;
      });
  ASSERT_TRUE(sum.ok()) << sum.status().message();
  ASSERT_FALSE(frames.empty());
  for (const wire::GenerateResponse& f : frames) {
    ASSERT_EQ(f.logprobs_size(), 1);
    ASSERT_EQ(f.top_logprobs_size(), 5);
    // Greedy: the chosen token is the likeliest.
    EXPECT_EQ(f.top_logprobs(0).token(), f.tokens(0));
    EXPECT_FLOAT_EQ(f.top_logprobs(0).logprob(), f.logprobs(0));
    for (int i = 1; i < 5; ++i) {
      EXPECT_LE(f.top_logprobs(i).logprob(), f.top_logprobs(i - 1).logprob());
    }
    EXPECT_LE(f.logprobs(0), 0.0f);
  }
  const std::string base = Transports()[1];
  const std::string body =
      R"({"prompt": "the robot arm", "max_tokens": 6, "temperature": 0,
          "logprobs": 5)";
  // Completions, not streamed.
  Answer a = Post(base, "/v1/completions", body + "}");
  ASSERT_EQ(a.status, 200) << a.body;
  json lp = json::parse(a.body)["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), frames.size()) << a.body;
  ASSERT_EQ(lp["token_logprobs"].size(), frames.size());
  ASSERT_EQ(lp["top_logprobs"].size(), frames.size());
  ASSERT_EQ(lp["text_offset"].size(), frames.size());
  size_t offset = 0;
  for (size_t i = 0; i < frames.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), frames[i].logprobs(0),
                1e-5);
    EXPECT_EQ(lp["text_offset"][i].get<size_t>(), offset);
    offset += frames[i].text().size();
    const json& top = lp["top_logprobs"][i];
    EXPECT_GE(top.size(), 1u);
    EXPECT_LE(top.size(), 5u);
    for (const wire::TokenLogprob& t : frames[i].top_logprobs()) {
      const json key = t.bytes();  // as the face writes it (valid UTF-8)
      const std::string k =
          json::parse(key.dump(-1, ' ', false, json::error_handler_t::replace))
              .get<std::string>();
      if (top.contains(k)) {
        EXPECT_NEAR(top[k].get<double>(), t.logprob(), 1e-5) << k;
      }
    }
  }
  // Completions, streamed: one token's logprobs per chunk.
  Answer s = Post(base, "/v1/completions", body + R"(, "stream": true})", "-N");
  ASSERT_EQ(s.status, 200) << s.body;
  std::vector<double> streamed;
  for (size_t at = 0; (at = s.body.find("data: {", at)) != std::string::npos;) {
    const size_t end = s.body.find("\n\n", at);
    json j = json::parse(s.body.substr(at + 6, end - at - 6));
    at = end;
    const json& l = j["choices"][0]["logprobs"];
    if (l.is_null()) continue;
    ASSERT_EQ(l["token_logprobs"].size(), 1u);
    EXPECT_EQ(l["top_logprobs"][0].size(),
              lp["top_logprobs"][streamed.size()].size());
    streamed.push_back(l["token_logprobs"][0].get<double>());
  }
  ASSERT_EQ(streamed.size(), frames.size());
  for (size_t i = 0; i < frames.size(); ++i) {
    EXPECT_NEAR(streamed[i], frames[i].logprobs(0), 1e-5);
  }
  // Chat: content[] with token, logprob, bytes and top_logprobs.
  const std::string chat =
      R"({"messages": [{"role": "user", "content": "where is the arm"}],
          "max_tokens": 4, "temperature": 0, "logprobs": true,
          "top_logprobs": 3)";
  Answer c = Post(base, "/v1/chat/completions", chat + "}");
  ASSERT_EQ(c.status, 200) << c.body;
  json cl = json::parse(c.body)["choices"][0]["logprobs"];
  ASSERT_TRUE(cl["content"].is_array()) << c.body;
  ASSERT_GE(cl["content"].size(), 1u);
  // The same prompt natively, through the template the face applies.
  wire::GenerateRequest cg;
  cg.set_prompt(
      "<|start_header_id|>user<|end_header_id|>\n\nwhere is the arm"
      "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  cg.set_max_tokens(4);
  cg.set_logprobs(true);
  cg.set_top_logprobs(3);
  std::vector<wire::GenerateResponse> cframes;
  ASSERT_TRUE(sock->Generate(cg,
                             [&](const wire::GenerateResponse& r) {
                               if (r.tokens_size() > 0) cframes.push_back(r);
                               return true;
                             })
                  .ok());
  ASSERT_EQ(cl["content"].size(), cframes.size());
  for (size_t i = 0; i < cframes.size(); ++i) {
    const json& e = cl["content"][i];
    EXPECT_NEAR(e["logprob"].get<double>(), cframes[i].logprobs(0), 1e-5);
    std::string bytes;
    for (const json& b : e["bytes"]) bytes += static_cast<char>(b.get<int>());
    EXPECT_EQ(bytes, cframes[i].token_bytes());
    ASSERT_EQ(e["top_logprobs"].size(), 3u);
    for (int k = 0; k < 3; ++k) {
      EXPECT_NEAR(e["top_logprobs"][k]["logprob"].get<double>(),
                  cframes[i].top_logprobs(k).logprob(), 1e-5);
    }
  }
  Answer cs =
      Post(base, "/v1/chat/completions", chat + R"(, "stream": true})", "-N");
  ASSERT_EQ(cs.status, 200) << cs.body;
  EXPECT_THAT(cs.body, HasSubstr(R"("top_logprobs":[{"bytes":)"));
  // OpenAI's limits, named.
  Answer bad =
      Post(base, "/v1/completions", R"({"prompt": "hi", "logprobs": 6})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(ErrorMessage(bad),
              HasSubstr("'logprobs' is 6: it must be between 0 and 5"));
  bad = Post(base, "/v1/chat/completions",
             R"({"messages": [{"role": "user", "content": "hi"}],
                 "logprobs": true, "top_logprobs": 21})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(ErrorMessage(bad),
              HasSubstr("'top_logprobs' is 21: it must be between 0 and 20"));
  bad = Post(base, "/v1/chat/completions",
             R"({"messages": [{"role": "user", "content": "hi"}],
                 "top_logprobs": 2})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(ErrorMessage(bad), HasSubstr("needs 'logprobs': true"));
}

// A non-streamed generation whose client disconnects is cancelled: its
// sequence (the only one) is free at once, and it stopped far short of
// max_tokens.
TEST_F(HttpLmTest, DisconnectCancelsAPlainGeneration) {
  // Greedy, this model and prompt go to max_tokens without an
  // end-of-generation token (checked below), at a few thousand tokens/s.
  MakeModel(dir_.path(), "lm", "llama3",
            "--hidden 256 --ffn 512 --layers 4 --heads 4 --kv-heads 2 "
            "--vocab 600 --seed 2");
  StartLm("lm", /*sequences=*/1, /*context=*/4096);
  auto sock = Socket();
  ASSERT_TRUE(sock);
  constexpr int kMax = 4000;
  // The request runs to its length when left alone.
  wire::GenerateRequest g;
  g.set_prompt("the robot arm");
  g.set_max_tokens(kMax);
  const auto t0 = std::chrono::steady_clock::now();
  Result<wire::GenerateSummary> full =
      sock->Generate(g, [](const wire::GenerateResponse&) { return true; });
  const double full_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  ASSERT_TRUE(full.ok()) << full.status().message();
  ASSERT_EQ(full->stop_reason(), "length");
  ASSERT_EQ(full->generated_tokens(), static_cast<uint32_t>(kMax));

  auto generated = [&] {
    Result<wire::StatsResponse> st = sock->Stats();
    EXPECT_TRUE(st.ok());
    return st.ok() ? st->generated_tokens() : 0;
  };
  const uint64_t before = generated();
  WriteText(dir_.File("long.json"),
            R"({"prompt": "the robot arm", "temperature": 0, "max_tokens": )" +
                std::to_string(kMax) + "}");
  const pid_t curl = fork();
  if (curl == 0) {
    const std::string url =
        "http://127.0.0.1:" + std::to_string(port_) + "/v1/completions";
    const std::string data = "@" + dir_.File("long.json");
    execl(CURL_PATH, "curl", "-sS", "-o", "/dev/null", "-H",
          "Content-Type: application/json", "--data-binary", data.c_str(),
          url.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_GT(curl, 0);
  // Kill the client once its generation runs.
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (generated() == before && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(curl, SIGKILL);
  waitpid(curl, nullptr, 0);
  ASSERT_GT(generated(), before) << "the HTTP generation did not start";
  // The one sequence is free again: a native call is served at once.
  const auto t1 = std::chrono::steady_clock::now();
  wire::GenerateRequest next;
  next.set_prompt("next");
  next.set_max_tokens(2);
  Result<wire::GenerateSummary> n =
      sock->Generate(next, [](const wire::GenerateResponse&) { return true; });
  const double next_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t1)
          .count();
  ASSERT_TRUE(n.ok()) << n.status().message();
  const uint64_t cancelled = generated() - before - n->generated_tokens();
  std::printf(
      "full generation %.2f s (%d tokens); cancelled after %llu "
      "tokens; next call served in %.3f s\n",
      full_s, kMax, static_cast<unsigned long long>(cancelled), next_s);
  EXPECT_LT(cancelled, static_cast<uint64_t>(kMax / 2));
  EXPECT_LT(next_s, full_s / 2);
}

// --------------------------------------------------- socket activation

// Sockets passed as systemd passes them (LISTEN_FDS, LISTEN_FDNAMES):
// "http" ones, a unix socket and a TCP one, are the face's listeners and
// replace the configured ones; the one named "ternd" is the main socket.
TEST_F(HttpFixture, SocketActivatedListenersReplaceTheConfiguredOnes) {
  ASSERT_TRUE(WriteTestModel(FastModel(), dir_.File("m.tern")).ok());
  auto unix_listener = [](const std::string& path) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path.c_str());
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(fd, 16), 0);
    return fd;
  };
  const int main_fd = unix_listener(dir_.File("main.sock"));
  const int http_unix = unix_listener(dir_.File("passed.sock"));
  const int http_tcp = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(http_tcp, reinterpret_cast<sockaddr*>(&in), sizeof(in)), 0);
  ASSERT_EQ(listen(http_tcp, 16), 0);
  socklen_t len = sizeof(in);
  getsockname(http_tcp, reinterpret_cast<sockaddr*>(&in), &len);
  const int passed_port = ntohs(in.sin_port);
  // The configuration names other addresses: the passed ones win.
  port_ = FreePort();
  WriteText(dir_.File("ternd.toml"),
            "[server]\nsocket = \"" + dir_.File("t.sock") +
                "\"\n[runtime]\nmodel = \"" + dir_.File("m.tern") +
                "\"\n[http]\nsocket = \"" + dir_.File("h.sock") +
                "\"\nport = " + std::to_string(port_) + "\n");
  DaemonOptions o;
  o.directory = dir_.path();
  o.config_path = dir_.File("ternd.toml");
  o.listen_fds = {main_fd, http_unix, http_tcp};
  o.listen_fdnames = {"ternd", "http", "http"};
  daemon_ = std::make_unique<DaemonProcess>(o);
  close(main_fd);
  close(http_unix);
  close(http_tcp);
  ASSERT_TRUE(daemon_->WaitForNotify("READY=1")) << daemon_->Log();

  Answer a = Curl(
      "--unix-socket " + Quote(dir_.File("passed.sock")) + " http://localhost",
      "/health");
  EXPECT_EQ(a.status, 200) << a.body;
  a = Curl("http://127.0.0.1:" + std::to_string(passed_port), "/v1/models");
  EXPECT_EQ(a.status, 200) << a.body;
  EXPECT_THAT(a.body, HasSubstr(R"("kind":"graph")"));
  // Neither configured address is bound; the log says why.
  EXPECT_NE(access(dir_.File("h.sock").c_str(), F_OK), 0);
  const int probe = ConnectTcp(port_);
  EXPECT_LT(probe, 0);
  if (probe >= 0) close(probe);
  EXPECT_THAT(daemon_->Log(),
              HasSubstr("of the configuration, which are not bound"));
  // The main socket is the passed one, not server.socket.
  EXPECT_NE(access(dir_.File("t.sock").c_str(), F_OK), 0);
  auto c = client::Client::Connect(dir_.File("main.sock"));
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_TRUE((*c)->Health().ok());
}

}  // namespace
}  // namespace ternd::daemon_testing
