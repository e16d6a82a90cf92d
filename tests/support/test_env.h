// What the integration tests share: a scratch directory that cleans up
// after itself, the test certificate authority, and free loopback ports.
#ifndef TERND_TESTS_SUPPORT_TEST_ENV_H_
#define TERND_TESTS_SUPPORT_TEST_ENV_H_

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"

namespace ternd::testing {

// A fresh directory under $TMPDIR (or /tmp; short, so unix socket paths
// fit), removed with everything in it when destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  std::string operator/(const std::string& name) const { return File(name); }

 private:
  std::string path_;
};

// Runs tests/support/make_test_ca.sh DIR DEVICE_ID: ca.pem, server.pem/key
// (localhost, 127.0.0.1), client.pem/key (CN = device_id), other-ca.pem,
// other-server.pem/key. The script's output goes to DIR/make_test_ca.log.
Status MakeTestCertificates(const std::string& dir,
                            const std::string& device_id = "test-device");

// A port on 127.0.0.1 that was free a moment ago (bound to port 0, closed).
Result<int> FindFreePort();

// A connected unix stream socket to `path`, or -1 (errno set).
int ConnectUnixSocket(const std::string& path);

// CPU time (user + system) a process has used, in seconds, from
// /proc/PID/stat; 0 when it cannot be read.
double ProcessCpuSeconds(int pid);

// Sets `*stop` and joins `threads` when it goes out of scope, also when an
// ASSERT returns from the test early (a joinable std::thread destroyed
// would abort the whole test binary).
class StopAndJoin {
 public:
  StopAndJoin(std::atomic<bool>* stop, std::vector<std::thread>* threads)
      : stop_(stop), threads_(threads) {}
  ~StopAndJoin() { Join(); }
  void Join() {
    *stop_ = true;
    for (std::thread& t : *threads_) {
      if (t.joinable()) t.join();
    }
  }
  StopAndJoin(const StopAndJoin&) = delete;
  StopAndJoin& operator=(const StopAndJoin&) = delete;

 private:
  std::atomic<bool>* stop_;
  std::vector<std::thread>* threads_;
};

// Runs `command` with /bin/sh and waits for it: its exit code (128 when it
// did not exit normally), stdout and stderr, each captured on its own.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
CommandResult RunCommand(const std::string& command);

}  // namespace ternd::testing

#endif  // TERND_TESTS_SUPPORT_TEST_ENV_H_
