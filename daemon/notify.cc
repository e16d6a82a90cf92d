#include "daemon/notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-journal.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/fd.h"
#include "runtime/runtime.h"

namespace ternd::daemon {
namespace {

std::atomic<uint64_t> dropped{0};

// $NOTIFY_SOCKET as an address, and a non-blocking datagram socket to send
// from; read once (the variable does not change while the daemon runs).
struct NotifyTarget {
  UniqueFd fd;
  struct sockaddr_un addr = {};
  socklen_t addr_len = 0;

  NotifyTarget() {
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@')) return;
    const size_t n = std::strlen(path);
    if (n >= sizeof(addr.sun_path)) return;
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path, n);
    if (path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
    addr_len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) +
                                      n + (path[0] == '@' ? 0 : 1));
    fd.reset(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  }
};

}  // namespace

void Notify(const char* format, ...) {
  static const NotifyTarget target;
  if (!target.fd.valid()) return;
  char text[512];
  va_list args;
  va_start(args, format);
  const int n = std::vsnprintf(text, sizeof(text), format, args);
  va_end(args);
  if (n < 0) return;
  const size_t len = std::min(static_cast<size_t>(n), sizeof(text) - 1);
  if (sendto(target.fd.get(), text, len, MSG_DONTWAIT | MSG_NOSIGNAL,
             reinterpret_cast<const sockaddr*>(&target.addr),
             target.addr_len) < 0) {
    dropped.fetch_add(1, std::memory_order_relaxed);
  }
}

uint64_t NotificationsDropped() {
  return dropped.load(std::memory_order_relaxed);
}

void ModelEvent(LogLevel level, const runtime::LoadedModel* model,
                uint64_t request_id, const char* format, ...) {
  if (level > GetLogLevel()) return;
  char text[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(text, sizeof(text), format, args);
  va_end(args);
  static const bool journal = std::getenv("JOURNAL_STREAM") != nullptr;
  if (!journal) {
    Log(level, "%s", text);
    return;
  }
  const char* name = model ? model->name() : "";
  const unsigned long long version = model ? model->version() : 0;
  if (request_id != 0) {
    sd_journal_send("MESSAGE=%s", text, "PRIORITY=%d", static_cast<int>(level),
                    "TERND_MODEL=%s", name, "TERND_MODEL_VERSION=%llu", version,
                    "TERND_REQUEST_ID=%llu",
                    static_cast<unsigned long long>(request_id), nullptr);
  } else {
    sd_journal_send("MESSAGE=%s", text, "PRIORITY=%d", static_cast<int>(level),
                    "TERND_MODEL=%s", name, "TERND_MODEL_VERSION=%llu", version,
                    nullptr);
  }
}

}  // namespace ternd::daemon
