// The listening sockets systemd passes at socket activation (LISTEN_FDS,
// LISTEN_FDNAMES; docs/systemd.md): those named "http" (a socket unit's
// FileDescriptorName=http, or an unnamed ternd-http.socket) are the HTTP
// face's listeners (docs/http.md), every other one is the main socket's
// (ternd.socket, which names none or "ternd"), as before names existed.
//
// Thread-safety: call from the main thread.
#ifndef TERND_DAEMON_PASSED_SOCKETS_H_
#define TERND_DAEMON_PASSED_SOCKETS_H_

#include <string>
#include <vector>

#include "base/status.h"

namespace ternd::daemon {

inline constexpr const char* kHttpFdName = "http";

struct PassedSockets {
  std::vector<int> main;  // file descriptors, in the order passed
  std::vector<int> http;
};

// Reads the environment once (sd_listen_fds_with_names, which unsets it so
// children do not inherit it); every later call returns the same answer.
// The descriptors belong to whoever takes them: the connections take
// `main`, the HTTP face `http`.
Result<PassedSockets> TakePassedSockets();

// "unix /run/ternd/http.sock", "127.0.0.1:8080", "[::1]:8080": what a
// listening socket is bound to, for the log.
std::string DescribeSocket(int fd);

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_PASSED_SOCKETS_H_
