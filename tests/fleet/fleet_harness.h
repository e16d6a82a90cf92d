// What the fleet tests share: a temporary directory, running the real
// ternctl binary, reading files, and small models with or without a golden
// pair.
#ifndef TERND_TESTS_FLEET_FLEET_HARNESS_H_
#define TERND_TESTS_FLEET_FLEET_HARNESS_H_

#include <cstdint>
#include <string>

#include "ota/signing.h"
#include "tests/support/test_env.h"

namespace ternd::fleet_testing {

// A fresh directory under $TMPDIR (tests/support/test_env.h).
using TempDir = ::ternd::testing::TempDir;

struct CmdResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
  std::string all() const { return out + err; }
};

// Runs `ternctl ARGS` (a shell command line) in `cwd`.
CmdResult Ternctl(const std::string& args, const std::string& cwd = "");

std::string ReadBytes(const std::string& path);
void WriteBytes(const std::string& path, const std::string& bytes);
using ::ternd::ota::Sha256;  // ota/signing.h

// A small ternary model "name" v`version` (16 inputs, 4 outputs), written
// to `path`, with its golden pair unless `golden` is false.
void WriteModel(const std::string& path, const std::string& name,
                uint64_t version, bool golden = true);

}  // namespace ternd::fleet_testing

#endif  // TERND_TESTS_FLEET_FLEET_HARNESS_H_
