// ternctl's JSON outputs: the value printer (tools/ternctl/json_output.h)
// on numbers JSON cannot hold and on strings that are not clean UTF-8, and
// `ternctl run --json` on a model whose outputs overflow to inf and nan.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "base/file.h"
#include "runtime/graph_builder.h"
#include "tests/support/test_env.h"
#include "tools/ternctl/json_output.h"

namespace ternd::ternctl {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

std::string Text(double v, int digits) {
  return JsonText(JsonNumber(v, digits));
}

TEST(JsonNumberTest, NonFiniteIsNull) {
  EXPECT_EQ(Text(kInf, 6), "null");
  EXPECT_EQ(Text(-kInf, 6), "null");
  EXPECT_EQ(Text(kNan, 6), "null");
  EXPECT_EQ(Text(-kNan, 10), "null");
  EXPECT_EQ(
      Text(static_cast<double>(std::numeric_limits<float>::infinity()), 6),
      "null");
}

TEST(JsonNumberTest, FiniteValuesKeepTheTextOutputsDigits) {
  // As "%.6g" prints them, except that integral values have no exponent.
  EXPECT_EQ(Text(2.0, 6), "2");
  EXPECT_EQ(Text(-3.0, 6), "-3");
  EXPECT_EQ(Text(128.5, 6), "128.5");
  EXPECT_EQ(Text(static_cast<double>(0.1f), 6), "0.1");
  EXPECT_EQ(Text(1.0 / 3, 6), "0.333333");
  EXPECT_EQ(Text(1.0 / 3, 10), "0.3333333333");
  EXPECT_EQ(Text(1.5e-7, 6), "1.5e-07");
  EXPECT_EQ(Text(1234567.0, 6), "1234570");
  EXPECT_EQ(Text(0.0, 6), "0");
  const double big = std::numeric_limits<float>::max();
  EXPECT_EQ(Json::parse(Text(big, 6)).get<double>(), 3.40282e38);
  // Rounding DBL_MAX up would overflow: it is printed unrounded.
  const double max = std::numeric_limits<double>::max();
  EXPECT_EQ(Json::parse(Text(max, 10)).get<double>(), max);
  EXPECT_EQ(Json::parse(Text(-0.0, 6)).get<double>(), 0.0);
}

TEST(JsonTextTest, StringsAreEscapedAndAlwaysUtf8) {
  const std::string raw = std::string("quote\" backslash\\ tab\t nl\n nul") +
                          '\0' + " bell\x07" + " caf\xc3\xa9" + " bad\xff\xfe" +
                          " cut\xe2\x82";
  const std::string text = JsonText(Json{{"s", raw}});
  const Json back = Json::parse(text);  // throws on invalid JSON or UTF-8
  const std::string s = back["s"].get<std::string>();
  EXPECT_EQ(s.substr(0, 30), raw.substr(0, 30));
  EXPECT_NE(s.find(" caf\xc3\xa9"), std::string::npos) << text;
  EXPECT_NE(s.find(" bad\xef\xbf\xbd"), std::string::npos) << text;
  EXPECT_EQ(text.find('\n'), std::string::npos);
}

TEST(JsonTextTest, KeysKeepTheirOrder) {
  Json j = {{"model", "m"}, {"version", 1}, {"outputs", Json::object()}};
  j["outputs"]["z"] = Json::array();
  j["outputs"]["a"] = Json::array();
  EXPECT_EQ(JsonText(j),
            "{\"model\":\"m\",\"version\":1,\"outputs\":{\"z\":[],\"a\":[]}}");
}

struct CmdResult {
  int exit_code;
  std::string out;
};

CmdResult Ternctl(const std::string& args) {
  const std::string cmd = std::string(TERNCTL_PATH) + " " + args;
  FILE* p = ::popen(cmd.c_str(), "r");
  CmdResult r{-1, ""};
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return r;
}

// y = W x with weights near the float maximum: x = 10 overflows to +inf and
// -inf; s = y + (-y) is then nan where y is infinite.
std::vector<uint8_t> OverflowModel() {
  runtime::GraphBuilder g("overflow", 1, 2);
  const std::string x = g.Input("x", 1);
  const std::vector<float> w = {3e38f, -3e38f, 1.5f};
  const std::vector<float> neg = {-3e38f, 3e38f, -1.5f};
  const std::string y = g.Linear(x, "y", 3, w);
  const std::string s = g.Add(y, g.Linear(x, "minus_y", 3, neg), "s");
  g.Output(y);
  g.Output(s);
  g.Output(g.Unary(model::ARGMAX, y, "class"));
  Result<std::vector<uint8_t>> bytes = g.Finish();
  EXPECT_TRUE(bytes.ok()) << bytes.status().message();
  return bytes.ok() ? *bytes : std::vector<uint8_t>{};
}

TEST(TernctlRunJsonTest, InfAndNanOutputsAreNullAndTheOutputParses) {
  const ternd::testing::TempDir dir;
  const std::string path = dir.File("overflow.tern");
  ASSERT_TRUE(WriteFileAtomically(path, OverflowModel(), 0644).ok());

  // The text output shows what the model computed.
  CmdResult text = Ternctl("run " + path + " --values 10 1");
  ASSERT_EQ(text.exit_code, 0) << text.out;
  EXPECT_NE(text.out.find("inf -inf 15"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("nan"), std::string::npos) << text.out;

  CmdResult r = Ternctl("run " + path + " --json --values 10 1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json j = Json::parse(r.out);  // throws if it is not JSON
  EXPECT_EQ(j["model"], "overflow");
  EXPECT_EQ(j["version"], 1);
  const Json want_y = Json::parse("[[null,null,15],[3e38,-3e38,1.5]]");
  const Json want_s = Json::parse("[[null,null,0],[0,0,0]]");
  EXPECT_EQ(j["outputs"]["y"], want_y) << r.out;
  EXPECT_EQ(j["outputs"]["s"], want_s) << r.out;
  EXPECT_EQ(j["outputs"]["class"], Json::parse("[[0],[0]]")) << r.out;
  EXPECT_EQ(r.out.back(), '\n');
}

}  // namespace
}  // namespace ternd::ternctl
