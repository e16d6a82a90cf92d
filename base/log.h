// Logging for ternd's processes: one line per message on stderr, prefixed
// with the syslog priority ("<3>" for errors ... "<7>" for debug) so that
// systemd's journal files each line at the right level.
//
// Thread-safety: every function may be called from any thread; a line is
// written with a single write(2) so lines from different threads never mix.
// Logging is not for the per-request path: it formats into a stack buffer and
// performs a system call.
#ifndef TERND_BASE_LOG_H_
#define TERND_BASE_LOG_H_

#include <string_view>

namespace ternd {

// Values are syslog priorities.
enum class LogLevel : int {
  kError = 3,
  kWarning = 4,
  kNotice = 5,
  kInfo = 6,
  kDebug = 7,
};

// Messages above `level` (less important) are dropped. Default: kInfo.
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Parses "error", "warning", "notice", "info", "debug".
bool ParseLogLevel(std::string_view text, LogLevel* level);

void Log(LogLevel level, const char* format, ...)
    __attribute__((format(printf, 2, 3)));

}  // namespace ternd

#define TERND_LOG_ERROR(...) \
  ::ternd::Log(::ternd::LogLevel::kError, __VA_ARGS__)
#define TERND_LOG_WARNING(...) \
  ::ternd::Log(::ternd::LogLevel::kWarning, __VA_ARGS__)
#define TERND_LOG_NOTICE(...) \
  ::ternd::Log(::ternd::LogLevel::kNotice, __VA_ARGS__)
#define TERND_LOG_INFO(...) ::ternd::Log(::ternd::LogLevel::kInfo, __VA_ARGS__)
#define TERND_LOG_DEBUG(...) \
  ::ternd::Log(::ternd::LogLevel::kDebug, __VA_ARGS__)

#endif  // TERND_BASE_LOG_H_
