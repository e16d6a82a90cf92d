#include "tests/fleet/fleet_harness.h"

#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "runtime/graph_builder.h"
#include "tests/support/test_env.h"

namespace ternd::fleet_testing {

CmdResult Ternctl(const std::string& args, const std::string& cwd) {
  std::string cmd;
  if (!cwd.empty()) cmd = "cd '" + cwd + "' && ";
  const testing::CommandResult r =
      testing::RunCommand(cmd + TERNCTL_PATH + " " + args);
  return {r.exit_code, r.out, r.err};
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

void WriteModel(const std::string& path, const std::string& name,
                uint64_t version, bool golden) {
  runtime::GraphBuilder b(name, version, 8);
  std::string x = b.Input("x", 16);
  std::vector<int8_t> w(16 * 4);
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = static_cast<int8_t>(static_cast<int>((i * 7 + version) % 3) - 1);
  }
  const std::vector<float> scale = {0.5f};
  const std::vector<float> bias = {0.1f, -0.2f, 0.3f, 0.0f};
  std::string y = b.TernaryLinear(x, "fc", 4, w, scale, bias);
  b.Output(b.Unary(model::SOFTMAX, y, "probs"));
  std::vector<float> in(2 * 16);
  for (size_t i = 0; i < in.size(); ++i) {
    in[i] = static_cast<float>(static_cast<int>(i % 9) - 4) * 0.25f;
  }
  auto bytes = golden ? b.FinishWithGolden({in}, 2, 1e-4f) : b.Finish();
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  WriteBytes(path, std::string(bytes->begin(), bytes->end()));
}

}  // namespace ternd::fleet_testing
