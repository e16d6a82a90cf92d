#include "tests/support/nginx_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

extern char** environ;

namespace ternd::https_testing {
namespace {

constexpr const char* kNginx = "/usr/sbin/nginx";
constexpr const char* kLocations[] = {"files", "garbage", "wronglen",
                                      "endless"};

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
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool CanConnect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  struct sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok =
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

std::string Tail(const std::string& text, size_t n = 2000) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

std::vector<std::string> Split(const std::string& line, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t p = line.find(sep, start);
    out.push_back(line.substr(start, p - start));
    if (p == std::string::npos) return out;
    start = p + 1;
  }
}

std::string Dash(const std::string& v) { return v == "-" ? "" : v; }

}  // namespace

Status WriteTestFile(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(content.data(), static_cast<std::streamsize>(content.size()));
  f.close();
  if (!f) return Internal("cannot write '%s'", path.c_str());
  ::chmod(path.c_str(), 0644);
  return Status::Ok();
}

NginxServer::NginxServer(NginxOptions options) : options_(std::move(options)) {
  for (const char* loc : kLocations) {
    std::filesystem::create_directories(dir_.path() + "/root/" + loc);
  }
  std::filesystem::create_directories(dir_.path() + "/temp");
}

NginxServer::~NginxServer() {
  if (pid_ > 0) Stop().IgnoreError();
}

std::string NginxServer::Url(const std::string& path) const {
  return "https://127.0.0.1:" + std::to_string(port_) + "/" + path;
}

Status NginxServer::PutFile(const std::string& location,
                            const std::string& name,
                            const std::string& content) const {
  return WriteTestFile(dir_.path() + "/root/" + location + "/" + name, content);
}

Status NginxServer::WriteConfig() {
  const std::string& d = dir_.path();
  const std::string& c = options_.cert_dir;
  const std::string& s = options_.server_cert;
  std::ostringstream conf;
  conf << "daemon off;\n"
       << "master_process off;\n"
       << "worker_processes 1;\n"
       << "pid " << d << "/nginx.pid;\n"
       << "error_log " << d << "/error.log info;\n"
       << "events { worker_connections 256; }\n"
       << "http {\n"
       << "  default_type application/octet-stream;\n"
       << "  log_format ternd '$uri|$status|$http_range|$http_if_range|"
          "$body_bytes_sent|$request_completion';\n"
       << "  access_log " << d << "/access.log ternd;\n"
       << "  client_body_temp_path " << d << "/temp/body;\n"
       << "  proxy_temp_path " << d << "/temp/proxy;\n"
       << "  fastcgi_temp_path " << d << "/temp/fastcgi;\n"
       << "  uwsgi_temp_path " << d << "/temp/uwsgi;\n"
       << "  scgi_temp_path " << d << "/temp/scgi;\n"
       << "  sendfile on;\n"
       << "  keepalive_timeout 30s;\n"
       << "  server {\n"
       << "    listen 127.0.0.1:" << port_ << " ssl;\n"
       << "    server_name localhost;\n"
       << "    ssl_certificate " << c << "/" << s << ".pem;\n"
       << "    ssl_certificate_key " << c << "/" << s << ".key;\n"
       << "    ssl_protocols TLSv1.2 TLSv1.3;\n";
  if (options_.require_client_certificate) {
    conf << "    ssl_client_certificate " << c << "/ca.pem;\n"
         << "    ssl_verify_client on;\n";
  }
  std::string extra = options_.extra_server_config;
  for (size_t at; (at = extra.find("@DOCROOT@")) != std::string::npos;) {
    extra.replace(at, 9, d + "/root");
  }
  conf << extra << "\n";
  conf << "    root " << d << "/root;\n"
       << "    location /files/ { }\n"
       << "    location /norange/ { alias " << d
       << "/root/files/; max_ranges 0; }\n"
       << "    location /slow/ { alias " << d
       << "/root/files/; limit_rate 1m; }\n"
       << "    location /garbage/ { }\n"
       << "    location /wronglen/ { }\n"
       // Any active body filter drops Content-Length: chunked encoding.
       << "    location /endless/ { sub_filter_types *; "
          "sub_filter 'ternd-test-never-matches' 'x'; }\n"
       << "  }\n"
       << "}\n";
  return WriteTestFile(d + "/nginx.conf", conf.str());
}

Status NginxServer::Start(int timeout_ms) {
  Status last;
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (port_ == 0 || attempt > 0) {
      TERND_ASSIGN_OR_RETURN(port_, FindFreePort());
    }
    TERND_RETURN_IF_ERROR(WriteConfig());
    last = StartOnce(timeout_ms);
    if (last.ok()) return last;
    if (ErrorLog().find("Address already in use") == std::string::npos) {
      return last;
    }
  }
  return last;
}

Status NginxServer::StartOnce(int timeout_ms) {
  const std::string& d = dir_.path();
  std::vector<std::string> args = {
      kNginx, "-p", d + "/", "-c", d + "/nginx.conf", "-e", d + "/error.log"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string out = d + "/nginx.out";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  const int err =
      posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) {
    pid_ = -1;
    return ErrnoError(err, "cannot run %s", kNginx);
  }
  const int64_t deadline = NowMs() + timeout_ms;
  while (NowMs() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return Internal("nginx exited during start (status %d): %s %s", status,
                      Tail(ReadWholeFile(out)).c_str(),
                      Tail(ErrorLog()).c_str());
    }
    if (CanConnect(port_)) return Status::Ok();
    SleepMs(20);
  }
  return Internal(
      "nginx did not accept connections on 127.0.0.1:%d within %d "
      "ms: %s",
      port_, timeout_ms, Tail(ErrorLog()).c_str());
}

Status NginxServer::Stop(int timeout_ms) {
  if (pid_ <= 0) return Status::Ok();
  kill(pid_, SIGTERM);
  const int64_t deadline = NowMs() + timeout_ms;
  int status = 0;
  while (NowMs() < deadline) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return Status::Ok();
    }
    SleepMs(10);
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return Internal("nginx did not stop within %d ms of SIGTERM; killed",
                  timeout_ms);
}

std::vector<AccessLogEntry> NginxServer::AccessLog(
    const std::string& suffix) const {
  std::vector<AccessLogEntry> out;
  std::istringstream in(ReadWholeFile(dir_.path() + "/access.log"));
  std::string line;
  while (std::getline(in, line)) {
    const std::vector<std::string> f = Split(line, '|');
    if (f.size() != 6) continue;
    AccessLogEntry e;
    e.uri = f[0];
    if (!suffix.empty() && (e.uri.size() < suffix.size() ||
                            e.uri.compare(e.uri.size() - suffix.size(),
                                          suffix.size(), suffix) != 0)) {
      continue;
    }
    e.status = std::atoi(f[1].c_str());
    e.range = Dash(f[2]);
    e.if_range = Dash(f[3]);
    e.body_bytes_sent = std::strtoull(f[4].c_str(), nullptr, 10);
    e.completed = f[5] == "OK";
    out.push_back(std::move(e));
  }
  return out;
}

bool NginxServer::WaitForRequests(size_t n, const std::string& suffix,
                                  int timeout_ms) const {
  const int64_t deadline = NowMs() + timeout_ms;
  for (;;) {
    if (AccessLog(suffix).size() >= n) return true;
    if (NowMs() >= deadline) return false;
    SleepMs(10);
  }
}

std::string NginxServer::ErrorLog() const {
  return ReadWholeFile(dir_.path() + "/error.log");
}

}  // namespace ternd::https_testing
