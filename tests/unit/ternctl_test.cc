// ternctl as a user runs it: real processes, exit codes and messages.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "base/file.h"

namespace ternd {
namespace {

struct CmdResult {
  int exit_code;
  std::string out;  // stdout and stderr together
};

CmdResult Ternctl(const std::string& args, const std::string& stdin_text = "") {
  std::string cmd = std::string(TERNCTL_PATH) + " " + args + " 2>&1";
  std::string in_file;
  if (!stdin_text.empty()) {
    in_file = ::testing::TempDir() + "/ternctl_stdin.txt";
    std::ofstream(in_file) << stdin_text;
    cmd += " < " + in_file;
  }
  FILE* p = ::popen(cmd.c_str(), "r");
  CmdResult r{-1, ""};
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return r;
}

const std::string kDemo = DEMO_MODEL_PATH;

TEST(TernctlTest, InspectShowsHeaderTensorsAndOps) {
  CmdResult r = Ternctl("inspect " + kDemo);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("model        demo-sensor"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fc2.weight"), std::string::npos);
  EXPECT_NE(r.out.find("TERNARY2"), std::string::npos);
  EXPECT_NE(r.out.find("TERNARY_LINEAR  x -> fc1"), std::string::npos);
  EXPECT_NE(r.out.find("golden       2 rows"), std::string::npos);
}

TEST(TernctlTest, RunPrintsOutputsFromValuesStdinAndFile) {
  const std::string values =
      "0.5 -1 0.25 2 0 0 1 1 -0.5 0.3 0.7 -2 1.5 0 0.1 0.9";
  CmdResult a = Ternctl("run " + kDemo + " --json --values " + values);
  EXPECT_EQ(a.exit_code, 0) << a.out;
  EXPECT_EQ(a.out.rfind("{\"model\":\"demo-sensor\",\"version\":1,\"outputs\":{"
                        "\"probs\":[[",
                        0),
            0u)
      << a.out;
  CmdResult b = Ternctl("run " + kDemo + " --json", values + "\n");
  EXPECT_EQ(b.out, a.out);
  const std::string file = ::testing::TempDir() + "/ternctl_values.txt";
  std::ofstream(file) << "# one sample\n" << values << "\n";
  CmdResult c = Ternctl("run " + kDemo + " --json -i " + file);
  EXPECT_EQ(c.out, a.out);
  // Two rows make a batch of two.
  CmdResult d = Ternctl("run " + kDemo, values + "\n" + values + "\n");
  EXPECT_EQ(d.exit_code, 0) << d.out;
  EXPECT_NE(d.out.find("probs (F32, 2 x 4)"), std::string::npos) << d.out;
}

TEST(TernctlTest, GoldenCheck) {
  CmdResult r = Ternctl("run --golden " + kDemo);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("golden check passed"), std::string::npos);
}

TEST(TernctlTest, BadInputsExitNonZeroWithAMessage) {
  CmdResult r = Ternctl("run " + kDemo + " --values 1 2 3");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("--values has 3 values; model 'demo-sensor' takes rows "
                       "of 16 values"),
            std::string::npos)
      << r.out;
  r = Ternctl("run " + kDemo + " --values 1 2 x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("'x' is not a finite number"), std::string::npos)
      << r.out;
  r = Ternctl("inspect /nonexistent.tern");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("cannot open /nonexistent.tern"), std::string::npos);
}

TEST(TernctlTest, BadFilesNeverCrash) {
  Result<std::vector<uint8_t>> demo = ReadFile(kDemo);
  ASSERT_TRUE(demo.ok());
  const std::string path = ::testing::TempDir() + "/broken.tern";
  for (size_t cut :
       {size_t{0}, size_t{3}, size_t{16}, size_t{100}, demo->size() - 1}) {
    std::vector<uint8_t> b(demo->begin(), demo->begin() + cut);
    ASSERT_TRUE(WriteFileAtomically(path, b).ok());
    for (const char* cmd : {"inspect ", "run --golden "}) {
      CmdResult r = Ternctl(cmd + path);
      EXPECT_EQ(r.exit_code, 1) << cmd << cut << ": " << r.out;
      EXPECT_EQ(r.out.rfind("ternctl: " + path + ": ", 0), 0u) << r.out;
    }
  }
}

// `ternctl delta`: a new version that rewrites 100 KiB in the middle of a
// 2 MiB file shares everything else with the old one; the same file shares
// all; what it counts adds up.
TEST(TernctlTest, DeltaCountsWhatANewVersionChanges) {
  std::mt19937_64 rng(9);
  std::string old_bytes(2 << 20, '\0');
  for (char& c : old_bytes) c = static_cast<char>(rng());
  std::string new_bytes = old_bytes;
  for (size_t i = 0; i < (100 << 10); ++i) {
    new_bytes[(1 << 20) + i] = static_cast<char>(rng());
  }
  const std::string dir = ::testing::TempDir();
  std::ofstream(dir + "/delta_old.bin", std::ios::binary) << old_bytes;
  std::ofstream(dir + "/delta_new.bin", std::ios::binary) << new_bytes;

  CmdResult r = Ternctl("delta --json " + dir + "/delta_old.bin " + dir +
                        "/delta_new.bin");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  const uint64_t max = j["chunk_limits"]["max"];
  EXPECT_EQ(j["new_bytes"], new_bytes.size());
  EXPECT_EQ(
      j["shared_bytes"].get<uint64_t>() + j["fetch_bytes"].get<uint64_t>(),
      new_bytes.size());
  EXPECT_EQ(
      j["shared_chunks"].get<uint64_t>() + j["fetch_chunks"].get<uint64_t>(),
      j["new_chunks"].get<uint64_t>());
  EXPECT_GE(j["fetch_bytes"].get<uint64_t>(), 100u << 10);
  EXPECT_LE(j["fetch_bytes"].get<uint64_t>(), (100u << 10) + 3 * max);
  // Random bytes do not compress: what is fetched is about what changed.
  EXPECT_LT(j["fetch_vs_whole"].get<double>(), 0.5);
  EXPECT_GT(j["fetch_compressed_bytes"].get<uint64_t>(), 90u << 10);

  r = Ternctl("delta --json " + dir + "/delta_old.bin " + dir +
              "/delta_old.bin");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["fetch_bytes"], 0);

  r = Ternctl("delta " + dir + "/delta_old.bin " + dir + "/no_such.tern");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("no_such.tern"), std::string::npos) << r.out;
  r = Ternctl("delta --zstd-level 30 " + dir + "/delta_old.bin " + dir +
              "/delta_old.bin");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("--zstd-level 30"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace ternd
