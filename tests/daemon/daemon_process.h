// Starts the real ternd binary for integration tests: in its own temporary
// directory, with NOTIFY_SOCKET pointing at a datagram socket the test reads
// (so READY=1, RELOADING=1, STATUS=... are observed as systemd would), and
// optionally with listening sockets passed as systemd socket activation
// does (LISTEN_FDS / LISTEN_FDNAMES / LISTEN_PID, from fd 3).
#ifndef TERND_TESTS_DAEMON_DAEMON_PROCESS_H_
#define TERND_TESTS_DAEMON_DAEMON_PROCESS_H_

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_env.h"

namespace ternd::daemon_testing {

// A fresh directory under $TMPDIR (tests/support/test_env.h).
using TempDir = ::ternd::testing::TempDir;

void WriteText(const std::string& path, const std::string& text);
std::string ReadText(const std::string& path);

struct DaemonOptions {
  std::string directory;    // working directory
  std::string config_path;  // --config; empty: none
  int listen_fd = -1;       // passed as fd 3 with LISTEN_FDS=1
  // Or several, as fds 3, 4, ... with LISTEN_FDS and, when names are
  // given (one per fd), LISTEN_FDNAMES (systemd's FileDescriptorName=).
  std::vector<int> listen_fds;
  std::vector<std::string> listen_fdnames;
  std::vector<std::string> extra_args;
  std::vector<std::string> extra_env;  // "NAME=value"
};

class DaemonProcess {
 public:
  explicit DaemonProcess(const DaemonOptions& options);
  ~DaemonProcess();  // SIGKILLs the daemon if it still runs

  pid_t pid() const { return pid_; }
  // Waits until a notification containing `needle` arrives (one already
  // received counts). Returns false on timeout.
  bool WaitForNotify(const std::string& needle, int timeout_ms = 10000);
  // Everything received on NOTIFY_SOCKET so far, one entry per datagram.
  std::vector<std::string> notifications() const;
  void Signal(int sig);
  // Waits for exit; returns the exit status, 128 + signal if killed, or -1
  // on timeout.
  int WaitExit(int timeout_ms = 15000);
  bool running();
  // The daemon's stderr so far.
  std::string Log() const;

 private:
  void ReadNotifications();
  std::string directory_;
  int notify_fd_ = -1;
  pid_t pid_ = -1;
  int exit_status_ = -1;
  mutable std::mutex mu_;
  std::vector<std::string> notes_;  // guarded by mu_
  std::atomic<bool> stop_reader_{false};
  std::thread reader_;
};

}  // namespace ternd::daemon_testing

#endif  // TERND_TESTS_DAEMON_DAEMON_PROCESS_H_
