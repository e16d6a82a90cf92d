#include "tests/support/mosquitto_broker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

extern char** environ;

namespace ternd::mqtt_testing {
namespace {

constexpr const char* kMosquitto = "/usr/sbin/mosquitto";
constexpr const char* kMosquittoPasswd = "/usr/bin/mosquitto_passwd";

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void SleepMs(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, nullptr);
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

Status WriteWholeFile(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
  f.close();
  if (!f) return Internal("cannot write '%s'", path.c_str());
  return Status::Ok();
}

// Runs a program to completion; its output goes to `log_path`.
Status RunProgram(const std::vector<std::string>& args,
                  const std::string& log_path) {
  std::vector<char*> argv;
  for (const std::string& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  const int err =
      posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) {
    return ErrnoError(err, "cannot run %s", args[0].c_str());
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Internal("%s failed (status %d): %s", args[0].c_str(), status,
                    ReadWholeFile(log_path).c_str());
  }
  return Status::Ok();
}

bool CanConnect(const std::string& host, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  struct sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  const bool ok =
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

std::string Tail(const std::string& text, size_t n = 2000) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

}  // namespace

MosquittoBroker::MosquittoBroker(MosquittoBrokerOptions options)
    : options_(std::move(options)), port_(options_.port) {}

MosquittoBroker::~MosquittoBroker() {
  if (pid_ > 0) Kill();
}

Status MosquittoBroker::WriteConfig() {
  std::ostringstream conf;
  const struct passwd* pw = getpwuid(geteuid());
  // Keep the test's user: as root, mosquitto would otherwise switch to the
  // `mosquitto` user, which cannot read this 0700 directory.
  conf << "user " << (pw ? pw->pw_name : "root") << "\n";
  conf << "log_dest stderr\n";
  std::istringstream types(options_.log_types);
  for (std::string type; types >> type;) conf << "log_type " << type << "\n";
  conf << "log_timestamp true\n"
       << "connection_messages true\n";
  if (options_.persistence) {
    conf << "persistence true\n"
         << "persistence_location " << dir_.path() << "/\n";
  } else {
    conf << "persistence false\n";
  }
  conf << "allow_anonymous " << (options_.allow_anonymous ? "true" : "false")
       << "\n";
  if (!options_.users.empty()) {
    std::string text;
    for (const auto& [user, password] : options_.users) {
      text += user + ":" + password + "\n";
    }
    const std::string path = dir_.File("passwd");
    TERND_RETURN_IF_ERROR(WriteWholeFile(path, text));
    TERND_RETURN_IF_ERROR(RunProgram({kMosquittoPasswd, "-U", path},
                                     dir_.File("mosquitto_passwd.log")));
    conf << "password_file " << path << "\n";
  }
  if (!options_.acl.empty()) {
    const std::string path = dir_.File("acl");
    TERND_RETURN_IF_ERROR(WriteWholeFile(path, options_.acl));
    conf << "acl_file " << path << "\n";
  }
  conf << "listener " << port_ << " " << host_ << "\n";
  if (!options_.cert_dir.empty()) {
    const std::string& d = options_.cert_dir;
    const std::string& s = options_.server_cert;
    conf << "cafile " << d << "/ca.pem\n"
         << "certfile " << d << "/" << s << ".pem\n"
         << "keyfile " << d << "/" << s << ".key\n";
    if (options_.require_certificate) {
      conf << "require_certificate true\n"
           << "use_identity_as_username true\n";
    }
  }
  conf << options_.extra_config << "\n";
  return WriteWholeFile(dir_.File("mosquitto.conf"), conf.str());
}

Status MosquittoBroker::Start(int timeout_ms) {
  if (pid_ > 0) return FailedPrecondition("mosquitto is already running");
  const bool pick_port = port_ == 0;
  for (int attempt = 0;; ++attempt) {
    if (pick_port && (port_ == 0 || attempt > 0)) {
      TERND_ASSIGN_OR_RETURN(port_, FindFreePort());
      configured_ = false;
    }
    if (!configured_) {
      TERND_RETURN_IF_ERROR(WriteConfig());
      configured_ = true;
    }
    const std::string conf = dir_.File("mosquitto.conf");
    const std::string log = dir_.File("mosquitto.log");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    const char* argv[] = {kMosquitto, "-c", conf.c_str(), nullptr};
    const int err = posix_spawn(&pid_, kMosquitto, &actions, &attr,
                                const_cast<char* const*>(argv), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (err != 0) {
      pid_ = -1;
      return ErrnoError(err, "cannot start %s (Debian package mosquitto)",
                        kMosquitto);
    }
    const int64_t end = NowMs() + timeout_ms;
    for (;;) {
      if (CanConnect(host_, port_)) return Status::Ok();
      if (WaitExit(0) >= 0) break;  // exited: bad config or port taken
      if (NowMs() >= end) {
        Kill();
        return Errorf(StatusCode::kDeadlineExceeded,
                      "mosquitto did not listen on %s:%d within %d ms; "
                      "log: %s",
                      host_.c_str(), port_, timeout_ms, Tail(Log()).c_str());
      }
      SleepMs(10);
    }
    const std::string text = Log();
    if (pick_port && attempt < 3 &&
        text.find("Address already in use") != std::string::npos) {
      continue;  // someone took the free port in between; pick another
    }
    return Internal("mosquitto exited before listening on %s:%d; log: %s",
                    host_.c_str(), port_, Tail(text).c_str());
  }
}

int MosquittoBroker::WaitExit(int timeout_ms) {
  if (pid_ <= 0) return 0;
  const int64_t end = NowMs() + timeout_ms;
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (NowMs() >= end) return -1;
    SleepMs(5);
  }
}

Status MosquittoBroker::Stop(int timeout_ms) {
  if (pid_ <= 0) return Status::Ok();
  kill(pid_, SIGCONT);
  kill(pid_, SIGTERM);
  if (WaitExit(timeout_ms) < 0) {
    Kill();
    return Errorf(StatusCode::kDeadlineExceeded,
                  "mosquitto did not stop within %d ms of SIGTERM; killed",
                  timeout_ms);
  }
  return Status::Ok();
}

void MosquittoBroker::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  WaitExit(15000);
}

void MosquittoBroker::Pause() {
  if (pid_ > 0) kill(pid_, SIGSTOP);
}

void MosquittoBroker::Resume() {
  if (pid_ > 0) kill(pid_, SIGCONT);
}

bool MosquittoBroker::running() { return pid_ > 0 && WaitExit(0) < 0; }

std::string MosquittoBroker::Log() const {
  return ReadWholeFile(dir_.File("mosquitto.log"));
}

bool MosquittoBroker::WaitForLog(const std::string& needle,
                                 int timeout_ms) const {
  const int64_t end = NowMs() + timeout_ms;
  for (;;) {
    if (Log().find(needle) != std::string::npos) return true;
    if (NowMs() >= end) return false;
    SleepMs(10);
  }
}

}  // namespace ternd::mqtt_testing
