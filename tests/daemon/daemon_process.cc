#include "tests/daemon/daemon_process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace ternd::daemon_testing {
namespace {

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
}

std::string ReadText(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

DaemonProcess::DaemonProcess(const DaemonOptions& options)
    : directory_(options.directory) {
  const std::string notify_path = directory_ + "/notify.sock";
  notify_fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s",
                notify_path.c_str());
  unlink(notify_path.c_str());
  if (bind(notify_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    throw std::runtime_error("cannot bind the notify socket");
  }
  std::vector<std::string> args = {TERND_PATH};
  if (!options.config_path.empty()) {
    args.push_back("--config");
    args.push_back(options.config_path);
  }
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  std::vector<std::string> env = {"NOTIFY_SOCKET=" + notify_path,
                                  "PATH=/usr/bin:/bin"};
  std::vector<int> passed = options.listen_fds;
  if (options.listen_fd >= 0) passed = {options.listen_fd};
  if (!passed.empty()) {
    env.push_back("LISTEN_FDS=" + std::to_string(passed.size()));
  }
  if (!options.listen_fdnames.empty()) {
    std::string names = "LISTEN_FDNAMES=";
    for (size_t i = 0; i < options.listen_fdnames.size(); ++i) {
      names += (i ? ":" : "") + options.listen_fdnames[i];
    }
    env.push_back(names);
  }
  // A sanitizer build of the daemon reports (and stops) as the test asks.
  for (const char* name : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"}) {
    if (const char* value = getenv(name)) {
      env.push_back(std::string(name) + "=" + value);
    }
  }
  env.insert(env.end(), options.extra_env.begin(), options.extra_env.end());
  const std::string log_path = directory_ + "/ternd.log";

  // Everything the child needs is prepared before fork.
  std::vector<char*> argv, envp;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (std::string& e : env) envp.push_back(e.data());
  char listen_pid[32] = "LISTEN_PID=";
  envp.push_back(listen_pid);
  if (passed.empty()) envp.pop_back();
  envp.push_back(nullptr);

  pid_ = fork();
  if (pid_ == 0) {
    if (chdir(directory_.c_str()) < 0) _exit(120);
    const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log >= 0) {
      dup2(log, STDERR_FILENO);
    }
    if (!passed.empty()) {
      // Out of the way first, so that no source is overwritten, then in
      // place from fd 3 (dup2 clears FD_CLOEXEC).
      int high[16];
      const size_t n = std::min<size_t>(passed.size(), 16);
      for (size_t i = 0; i < n; ++i) high[i] = fcntl(passed[i], F_DUPFD, 200);
      for (size_t i = 0; i < n; ++i) {
        dup2(high[i], static_cast<int>(3 + i));
        close(high[i]);
      }
      std::snprintf(listen_pid + 11, sizeof(listen_pid) - 11, "%d",
                    static_cast<int>(getpid()));
    }
    // The daemon handles these through its loop; start from a clean mask.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  reader_ = std::thread(&DaemonProcess::ReadNotifications, this);
}

DaemonProcess::~DaemonProcess() {
  if (running()) {
    kill(pid_, SIGKILL);
    WaitExit(5000);
  }
  // Under AddressSanitizer / UndefinedBehaviorSanitizer every test that
  // starts the daemon is also a check of the daemon: a report in its log
  // fails the test, whatever the test itself looked at.
  const std::string log = Log();
  for (const char* report :
       {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"}) {
    if (log.find(report) != std::string::npos) {
      ADD_FAILURE() << "the daemon's log has a sanitizer report:\n" << log;
      break;
    }
  }
  stop_reader_ = true;
  if (reader_.joinable()) reader_.join();
  if (notify_fd_ >= 0) close(notify_fd_);
}

// Reads notifications as systemd does, all the time: a datagram queue
// left full would block the daemon's next sd_notify().
void DaemonProcess::ReadNotifications() {
  char buf[4096];
  while (!stop_reader_) {
    struct pollfd p = {notify_fd_, POLLIN, 0};
    if (poll(&p, 1, 20) <= 0) continue;
    for (;;) {
      const ssize_t n = recv(notify_fd_, buf, sizeof(buf), MSG_DONTWAIT);
      if (n <= 0) break;
      std::lock_guard<std::mutex> lock(mu_);
      notes_.emplace_back(buf, static_cast<size_t>(n));
    }
  }
}

std::vector<std::string> DaemonProcess::notifications() const {
  std::lock_guard<std::mutex> lock(mu_);
  return notes_;
}

bool DaemonProcess::WaitForNotify(const std::string& needle, int timeout_ms) {
  const int64_t end = NowMs() + timeout_ms;
  size_t checked = 0;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (; checked < notes_.size(); ++checked) {
        if (notes_[checked].find(needle) != std::string::npos) return true;
      }
    }
    if (NowMs() >= end) return false;
    usleep(5000);
  }
}

void DaemonProcess::Signal(int sig) { kill(pid_, sig); }

bool DaemonProcess::running() {
  if (exit_status_ >= 0 || pid_ <= 0) return false;
  return WaitExit(0) < 0;
}

int DaemonProcess::WaitExit(int timeout_ms) {
  if (exit_status_ >= 0) return exit_status_;
  const int64_t end = NowMs() + timeout_ms;
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_status_ =
          WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_status_;
    }
    if (NowMs() >= end) return -1;
    usleep(5000);
  }
}

std::string DaemonProcess::Log() const {
  return ReadText(directory_ + "/ternd.log");
}

}  // namespace ternd::daemon_testing
