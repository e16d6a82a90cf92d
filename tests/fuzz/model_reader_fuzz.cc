// Fuzzes the .tern reader and everything that trusts what it accepts: parse,
// load into an arena (which checks ternary codes and repacks for the best
// kernel) and run the golden check. Any crash, sanitizer report or leak is a
// bug; errors are the expected answer to garbage.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "base/log.h"
#include "runtime/format.h"
#include "runtime/runtime.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<ternd::runtime::Runtime> runtime = [] {
    ternd::SetLogLevel(ternd::LogLevel::kError);
    auto rt = ternd::runtime::Runtime::Create({size_t{16} << 20, 1, 1, "auto"});
    if (!rt.ok()) __builtin_trap();
    return std::move(*rt);
  }();
  auto file = ternd::runtime::ModelFile::Parse(
      std::vector<uint8_t>(data, data + size), "fuzz");
  if (!file.ok()) return 0;
  auto model = runtime->Load(0, *file);
  if (model.ok() && (*model)->has_golden()) {
    (*model)->CheckGolden(0).IgnoreError();
  }
  return 0;
}
