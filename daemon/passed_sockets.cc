#include "daemon/passed_sockets.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>

#include "base/log.h"

namespace ternd::daemon {

Result<PassedSockets> TakePassedSockets() {
  static std::optional<Result<PassedSockets>> taken;
  if (taken) return *taken;
  char** names = nullptr;
  const int n = sd_listen_fds_with_names(/*unset_environment=*/1, &names);
  if (n < 0) {
    taken = Status(StatusCode::kInternal,
                   std::string("cannot read the sockets passed by systemd: ") +
                       strerror(-n));
    return *taken;
  }
  PassedSockets p;
  for (int i = 0; i < n; ++i) {
    const int fd = SD_LISTEN_FDS_START + i;
    const std::string_view name = names && names[i] ? names[i] : "";
    if (name == kHttpFdName || name == "ternd-http.socket") {
      p.http.push_back(fd);
    } else {
      p.main.push_back(fd);
    }
  }
  if (names) {
    for (int i = 0; i < n; ++i) free(names[i]);
    free(names);
  }
  if (n > 0) {
    TERND_LOG_DEBUG("systemd passed %d sockets: %zu main, %zu http", n,
                    p.main.size(), p.http.size());
  }
  taken = p;
  return *taken;
}

std::string DescribeSocket(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof(a);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return "fd " + std::to_string(fd);
  }
  char host[INET6_ADDRSTRLEN] = "";
  switch (a.ss_family) {
    case AF_UNIX: {
      const auto* u = reinterpret_cast<const sockaddr_un*>(&a);
      if (len <= offsetof(sockaddr_un, sun_path)) return "unix (unnamed)";
      if (u->sun_path[0] == '\0') return "unix (abstract)";
      return std::string("unix ") + u->sun_path;
    }
    case AF_INET: {
      const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
      inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
      return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
    }
    case AF_INET6: {
      const auto* in = reinterpret_cast<const sockaddr_in6*>(&a);
      inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof(host));
      // Appended, not "[" + ...: g++ 12 at -O3 warns (-Wrestrict, a false
      // positive) on a literal plus a temporary string.
      std::string out = "[";
      out.append(host).append("]:").append(
          std::to_string(ntohs(in->sin6_port)));
      return out;
    }
    default:
      return "fd " + std::to_string(fd) + " (family " +
             std::to_string(a.ss_family) + ")";
  }
}

}  // namespace ternd::daemon
