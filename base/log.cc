#include "base/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>

namespace ternd {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }
LogLevel GetLogLevel() { return static_cast<LogLevel>(g_level.load()); }

bool ParseLogLevel(std::string_view text, LogLevel* level) {
  struct Name {
    std::string_view name;
    LogLevel level;
  };
  static constexpr Name kNames[] = {
      {"error", LogLevel::kError},   {"warning", LogLevel::kWarning},
      {"notice", LogLevel::kNotice}, {"info", LogLevel::kInfo},
      {"debug", LogLevel::kDebug},
  };
  for (const Name& n : kNames) {
    if (n.name == text) {
      *level = n.level;
      return true;
    }
  }
  return false;
}

void Log(LogLevel level, const char* format, ...) {
  if (static_cast<int>(level) > g_level.load(std::memory_order_relaxed)) return;
  char line[2048];
  int n = std::snprintf(line, sizeof(line), "<%d>", static_cast<int>(level));
  va_list args;
  va_start(args, format);
  int m = std::vsnprintf(line + n, sizeof(line) - n - 1, format, args);
  va_end(args);
  if (m < 0) m = 0;
  size_t len = static_cast<size_t>(n) + static_cast<size_t>(m);
  if (len > sizeof(line) - 2) len = sizeof(line) - 2;
  line[len++] = '\n';
  // One write so concurrent lines do not interleave; errors are ignored
  // because there is nowhere else to report them.
  ssize_t ignored = ::write(STDERR_FILENO, line, len);
  (void)ignored;
}

}  // namespace ternd
