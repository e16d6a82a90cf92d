#include "tools/ternctl/json_output.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace ternd::ternctl {

Json JsonNumber(double v, int significant_digits) {
  if (!std::isfinite(v)) return nullptr;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", significant_digits, v);
  const double rounded = std::strtod(buf, nullptr);
  if (!std::isfinite(rounded)) return v;
  // Below 2^53 every integral double is exact as an int64_t; -0 keeps its
  // sign as a double.
  constexpr double kExactIntegers = 9007199254740992.0;
  if (rounded == std::trunc(rounded) && std::fabs(rounded) < kExactIntegers &&
      !(rounded == 0 && std::signbit(rounded))) {
    return static_cast<int64_t>(rounded);
  }
  return rounded;
}

std::string JsonText(const Json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false,
                Json::error_handler_t::replace);
}

void PrintJson(const Json& j) {
  const std::string text = JsonText(j) + "\n";
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

}  // namespace ternd::ternctl
