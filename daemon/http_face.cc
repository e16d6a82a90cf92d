#include "daemon/http_face.h"

#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <ctime>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/clock.h"
#include "base/event_loop.h"
#include "base/log.h"
#include "daemon/chat_template.h"
#include "daemon/frame.h"
#include "daemon/http_codec.h"
#include "daemon/passed_sockets.h"
#include "daemon/protocol.pb.h"

namespace ternd::daemon {
namespace {

constexpr size_t kMaxAnswerFrame = size_t{1} << 30;
constexpr const char* kJson = "application/json";
constexpr const char* kEndpoints =
    "GET /health, /ready, /metrics, /v1/models; POST /v1/infer, "
    "/v1/completions, /v1/chat/completions";

enum class Route {
  kHealth,
  kReady,
  kMetrics,
  kModels,
  kInfer,
  kCompletions,
  kChat
};

// One HTTP connection (MHD's socket context).
struct ConnState {
  int fd = -1;
  // The whole next request must have arrived by then; 0 while a request is
  // being answered.
  int64_t deadline_ns = 0;
  bool over_cap = false;
};

}  // namespace

class HttpFace::Impl {
 public:
  Impl(sd_event* loop, const HttpOptions& o) : loop_(loop), options_(o) {}
  ~Impl();
  Status Start(const Adopt& adopt);
  void StopListening();

 private:
  // One HTTP request (MHD's con_cls), from its headers to its completion.
  struct Request {
    Impl* face = nullptr;
    MHD_Connection* conn = nullptr;
    ConnState* cs = nullptr;
    Route route = Route::kHealth;
    bool received = false;  // the whole request is here and dispatched
    std::string body;
    bool too_large = false;
    bool suspended = false;
    // The answer, queued when the connection is resumed.
    bool have_answer = false;
    int status = 0;
    std::string content_type;
    std::string answer;
    // The call in flight on the link (0: none).
    uint64_t wire_id = 0;
    bool generating = false;
    // The client's socket, watched for its hang-up while the connection is
    // suspended waiting for the answer; set once it has gone.
    EventSource watch;
    bool client_gone = false;
    // Completions.
    CompletionRequest completion;
    CompletionIdentity who;
    std::string text;
    bool logprobs = false;
    CompletionLogprobs lp;  // not streamed: every token's
    size_t streamed = 0;    // streamed: bytes of text sent so far
    // Server-sent events.
    bool streaming = false;
    std::string sse;
    size_t sse_taken = 0;
    bool sse_done = false;
    bool reader_suspended = false;
    bool first_chunk = true;
  };

  Status Listen();
  Status StartDaemon(int listen_fd, const char* what);
  void Run();
  void ArmTimers();

  MHD_Result OnAccess(MHD_Connection* conn, const char* url, const char* method,
                      const char* upload, size_t* upload_size, void** con_cls);
  MHD_Result Queue(Request* q);
  MHD_Result QueueNow(MHD_Connection* conn, int status, const std::string& body,
                      const char* type, bool close);
  void Dispatch(Request* q);
  void Answer(Request* q, int status, std::string body,
              const char* type = kJson);
  void Fail(Request* q, StatusCode code, std::string_view message);
  void Resume(Request* q);
  void Suspend(Request* q);
  void ClientGone(Request* q);
  void Call(Request* q, wire::Request* r);
  void OnLinkAnswer(const wire::Response& r);
  void OnGenerated(Request* q, const wire::Response& r);
  void PushChunk(Request* q, std::string chunk);
  void Sweep();
  void LinkRead();
  void LinkFlush();
  void LinkBroken(const char* why);

  static MHD_Result AccessThunk(void* cls, MHD_Connection* c, const char* url,
                                const char* method, const char*,
                                const char* upload, size_t* size, void** cc) {
    return static_cast<Impl*>(cls)->OnAccess(c, url, method, upload, size, cc);
  }
  static void Completed(void* cls, MHD_Connection*, void** con_cls,
                        MHD_RequestTerminationCode);
  static void Connected(void* cls, MHD_Connection* c, void** socket_context,
                        MHD_ConnectionNotificationCode toe);
  static ssize_t ReadStream(void* cls, uint64_t, char* buf, size_t max);
  static void Logger(void*, const char* fmt, va_list ap);

  sd_event* loop_;
  HttpOptions options_;
  std::vector<MHD_Daemon*> daemons_;
  // Listening sockets handed back by MHD_quiesce_daemon (a running daemon
  // closes its own when stopped).
  std::vector<int> listen_fds_;
  std::vector<EventSource> sources_;
  EventSource timer_;
  EventSource sweep_;
  std::unique_ptr<LoopTask> run_task_;
  bool unlink_socket_ = false;
  bool listening_ = true;

  std::unordered_set<ConnState*> conns_;
  std::unordered_set<Request*> requests_;
  std::unordered_map<uint64_t, Request*> pending_;  // by wire id
  uint64_t next_id_ = 1;
  uint64_t next_completion_ = 1;

  // The link to the service.
  UniqueFd link_;
  EventSource link_source_;
  std::vector<uint8_t> out_;
  size_t out_sent_ = 0;
  wire::FrameDecoder decoder_{kMaxAnswerFrame};
  wire::Response response_;
  bool link_ok_ = true;
};

// ---------------------------------------------------------------- start

Status HttpFace::Impl::Start(const Adopt& adopt) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) <
      0) {
    return ErrnoError(errno, "http: socketpair");
  }
  link_.reset(sv[0]);
  TERND_RETURN_IF_ERROR(adopt(UniqueFd(sv[1])));
  sd_event_source* s = nullptr;
  int r = sd_event_add_io(
      loop_, &s, link_.get(), EPOLLIN,
      [](sd_event_source*, int, uint32_t revents, void* self) -> int {
        Impl* impl = static_cast<Impl*>(self);
        if (revents & EPOLLOUT) impl->LinkFlush();
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) impl->LinkRead();
        return 0;
      },
      this);
  if (r < 0) return ErrnoError(-r, "http: cannot watch the link");
  sd_event_source_set_description(s, "http-link");
  link_source_.reset(s);
  run_task_ = std::make_unique<LoopTask>(loop_, "http-run", [this] { Run(); });
  TERND_RETURN_IF_ERROR(Listen());
  return Status::Ok();
}

Status HttpFace::Impl::Listen() {
  if (!options_.passed_fds.empty()) {
    // Socket activation: the unit's sockets replace the configured ones
    // (the unit is what the deployment installed; systemd holds those
    // addresses, so binding the configuration's too would fail or listen
    // twice).
    std::string where;
    for (const int fd : options_.passed_fds) {
      const std::string what = DescribeSocket(fd);
      if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, /*listening=*/1) <= 0) {
        return InvalidArgument(
            "the socket systemd passed as '%s' (fd %d, %s) is not a "
            "listening stream socket",
            kHttpFdName, fd, what.c_str());
      }
      const int flags = fcntl(fd, F_GETFL);
      if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
          fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        return ErrnoError(errno, "http: cannot make fd %d non-blocking", fd);
      }
      TERND_RETURN_IF_ERROR(StartDaemon(fd, "http (passed by systemd)"));
      TERND_LOG_INFO("http: listening on %s (passed by systemd)", what.c_str());
      where += (where.empty() ? "" : ", ") + what;
    }
    if (!options_.socket_path.empty() || options_.port != 0) {
      TERND_LOG_NOTICE(
          "http: systemd passed sockets named '%s' (%s): they replace "
          "http.socket = \"%s\" and http.port = %u of the configuration, "
          "which are not bound",
          kHttpFdName, where.c_str(), options_.socket_path.c_str(),
          options_.port);
    }
    return Status::Ok();
  }
  if (!options_.socket_path.empty()) {
    const std::string& path = options_.socket_path;
    if (path.size() >= sizeof(sockaddr_un::sun_path)) {
      return InvalidArgument("http.socket = \"%s\" is too long", path.c_str());
    }
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    struct stat st;
    if (lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        return FailedPrecondition(
            "http.socket = \"%s\" exists and is not a socket", path.c_str());
      }
      UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (connect(probe.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) ==
          0) {
        return FailedPrecondition(
            "http.socket = \"%s\" is served by another process", path.c_str());
      }
      unlink(path.c_str());  // stale
    }
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid() ||
        bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) < 0) {
      return ErrnoError(errno, "http.socket: cannot bind %s", path.c_str());
    }
    unlink_socket_ = true;
    if (chmod(path.c_str(), options_.socket_mode) < 0 ||
        listen(fd.get(), 128) < 0) {
      return ErrnoError(errno, "http.socket: %s", path.c_str());
    }
    TERND_RETURN_IF_ERROR(StartDaemon(fd.release(), "http.socket"));
    TERND_LOG_INFO("http: listening on %s", path.c_str());
  }
  if (options_.port != 0) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    addrinfo* ai = nullptr;
    const std::string port = std::to_string(options_.port);
    const int g =
        getaddrinfo(options_.address.c_str(), port.c_str(), &hints, &ai);
    if (g != 0 || !ai) {
      return InvalidArgument("http.address = \"%s\" is not an IP address: %s",
                             options_.address.c_str(), gai_strerror(g));
    }
    UniqueFd fd(
        socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    const int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    const bool bound =
        fd.valid() && bind(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0;
    freeaddrinfo(ai);
    if (!bound || listen(fd.get(), 128) < 0) {
      return ErrnoError(errno, "http: cannot listen on %s port %u",
                        options_.address.c_str(), options_.port);
    }
    TERND_RETURN_IF_ERROR(StartDaemon(fd.release(), "http.port"));
    TERND_LOG_INFO("http: listening on %s port %u", options_.address.c_str(),
                   options_.port);
  }
  return Status::Ok();
}

Status HttpFace::Impl::StartDaemon(int listen_fd, const char* what) {
  MHD_Daemon* d = MHD_start_daemon(
      MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, nullptr,
      nullptr, &Impl::AccessThunk, this, MHD_OPTION_LISTEN_SOCKET, listen_fd,
      MHD_OPTION_CONNECTION_LIMIT,
      static_cast<unsigned int>(options_.max_connections + 16),
      MHD_OPTION_CONNECTION_TIMEOUT,
      static_cast<unsigned int>(options_.idle_timeout_s),
      MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      static_cast<size_t>(options_.max_header_bytes) + 4096,
      MHD_OPTION_NOTIFY_COMPLETED, &Impl::Completed, this,
      MHD_OPTION_NOTIFY_CONNECTION, &Impl::Connected, this,
      MHD_OPTION_EXTERNAL_LOGGER, &Impl::Logger, this, MHD_OPTION_END);
  if (!d) {
    close(listen_fd);
    return Internal("%s: libmicrohttpd did not start", what);
  }
  daemons_.push_back(d);
  const MHD_DaemonInfo* info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD);
  sd_event_source* s = nullptr;
  int r = sd_event_add_io(
      loop_, &s, info->epoll_fd, EPOLLIN,
      [](sd_event_source*, int, uint32_t, void* self) -> int {
        static_cast<Impl*>(self)->Run();
        return 0;
      },
      this);
  if (r < 0) return ErrnoError(-r, "%s: cannot watch the listener", what);
  sd_event_source_set_description(s, "http");
  sources_.emplace_back(s);
  return Status::Ok();
}

HttpFace::Impl::~Impl() {
  // libmicrohttpd stops only without suspended connections: answer them.
  for (Request* q : requests_) {
    q->watch.reset();
    if (q->suspended || q->reader_suspended) {
      if (!q->streaming && !q->have_answer) {
        q->have_answer = true;
        q->status = 503;
        q->content_type = kJson;
        q->answer =
            ErrorJson(StatusCode::kUnavailable, "the daemon is shutting down");
      }
      q->sse_done = true;
      MHD_resume_connection(q->conn);
      q->suspended = q->reader_suspended = false;
    }
  }
  for (MHD_Daemon* d : daemons_) MHD_run(d);
  sources_.clear();
  timer_.reset();
  sweep_.reset();
  for (MHD_Daemon* d : daemons_) MHD_stop_daemon(d);
  for (int fd : listen_fds_) close(fd);
  if (unlink_socket_) unlink(options_.socket_path.c_str());
  link_source_.reset();
}

void HttpFace::Impl::StopListening() {
  if (!listening_) return;
  listening_ = false;
  for (MHD_Daemon* d : daemons_) {
    const MHD_socket fd = MHD_quiesce_daemon(d);
    if (fd != MHD_INVALID_SOCKET) listen_fds_.push_back(fd);
  }
  if (unlink_socket_) {
    unlink(options_.socket_path.c_str());
    unlink_socket_ = false;
  }
}

void HttpFace::Impl::Logger(void*, const char* fmt, va_list ap) {
  char buf[512];
  vsnprintf(buf, sizeof(buf), fmt, ap);
  size_t n = strlen(buf);
  while (n > 0 && buf[n - 1] == '\n') buf[--n] = '\0';
  TERND_LOG_DEBUG("http: %s", buf);
}

// ---------------------------------------------------------- MHD's loop

// libmicrohttpd may finish a step only on its next run (a resumed
// connection is processed, then written): while it says it has work at once
// (timeout 0), run it again now rather than through a timer.
void HttpFace::Impl::Run() {
  for (MHD_Daemon* d : daemons_) {
    for (int i = 0; i < 4; ++i) {
      MHD_run(d);
      MHD_UNSIGNED_LONG_LONG ms = 1;
      if (MHD_get_timeout(d, &ms) != MHD_YES || ms != 0) break;
    }
  }
  ArmTimers();
}

void HttpFace::Impl::ArmTimers() {
  uint64_t wait_ms = UINT64_MAX;
  for (MHD_Daemon* d : daemons_) {
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (MHD_get_timeout(d, &ms) == MHD_YES) {
      wait_ms = std::min<uint64_t>(wait_ms, ms);
    }
  }
  if (wait_ms == 0) {
    run_task_->Schedule();  // next iteration, no timer slack
    if (timer_) sd_event_source_set_enabled(timer_.get(), SD_EVENT_OFF);
  } else if (wait_ms != UINT64_MAX) {
    if (!timer_) {
      sd_event_source* s = nullptr;
      if (sd_event_add_time_relative(
              loop_, &s, CLOCK_MONOTONIC, wait_ms * 1000, 1000,
              [](sd_event_source*, uint64_t, void* self) -> int {
                static_cast<Impl*>(self)->Run();
                return 0;
              },
              this) >= 0) {
        sd_event_source_set_description(s, "http-timeout");
        timer_.reset(s);
      }
    } else {
      sd_event_source_set_time_relative(timer_.get(), wait_ms * 1000);
      sd_event_source_set_enabled(timer_.get(), SD_EVENT_ONESHOT);
    }
  } else if (timer_) {
    sd_event_source_set_enabled(timer_.get(), SD_EVENT_OFF);
  }
  // The request timeout: swept while connections are open.
  if (!conns_.empty()) {
    const uint64_t period_us = std::clamp<uint64_t>(
        uint64_t{options_.request_timeout_ms} * 250, 10000, 1000000);
    if (!sweep_) {
      sd_event_source* s = nullptr;
      if (sd_event_add_time_relative(
              loop_, &s, CLOCK_MONOTONIC, period_us, 1000,
              [](sd_event_source*, uint64_t, void* self) -> int {
                static_cast<Impl*>(self)->Sweep();
                return 0;
              },
              this) >= 0) {
        sd_event_source_set_description(s, "http-request-timeout");
        sweep_.reset(s);
      }
    } else {
      int enabled = SD_EVENT_OFF;
      sd_event_source_get_enabled(sweep_.get(), &enabled);
      if (enabled == SD_EVENT_OFF) {
        sd_event_source_set_time_relative(sweep_.get(), period_us);
        sd_event_source_set_enabled(sweep_.get(), SD_EVENT_ONESHOT);
      }
    }
  }
}

// A connection that has not delivered its whole request in time gets a 408
// written straight to its socket (nothing else has been sent for this
// request) and is shut down; libmicrohttpd then closes it.
void HttpFace::Impl::Sweep() {
  const int64_t now = MonotonicNs();
  for (ConnState* cs : conns_) {
    if (cs->deadline_ns == 0 || now < cs->deadline_ns) continue;
    cs->deadline_ns = 0;
    char msg[200];
    snprintf(msg, sizeof(msg),
             "the request did not arrive whole within %u ms "
             "(http.request_timeout_ms); closing",
             options_.request_timeout_ms);
    const std::string body = ErrorJson(StatusCode::kDeadlineExceeded, msg, 408);
    const std::string raw =
        "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
        "Connection: close\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    (void)!send(cs->fd, raw.data(), raw.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    shutdown(cs->fd, SHUT_RDWR);
  }
  if (!conns_.empty()) {
    sd_event_source_set_time_relative(
        sweep_.get(),
        std::clamp<uint64_t>(uint64_t{options_.request_timeout_ms} * 250, 10000,
                             1000000));
    sd_event_source_set_enabled(sweep_.get(), SD_EVENT_ONESHOT);
  }
  run_task_->Schedule();
}

void HttpFace::Impl::Connected(void* cls, MHD_Connection* c,
                               void** socket_context,
                               MHD_ConnectionNotificationCode toe) {
  Impl* impl = static_cast<Impl*>(cls);
  if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
    auto* cs = new ConnState;
    const MHD_ConnectionInfo* ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    cs->fd = ci ? ci->connect_fd : -1;
    cs->deadline_ns =
        MonotonicNs() + int64_t{impl->options_.request_timeout_ms} * 1000000;
    cs->over_cap = impl->conns_.size() >= impl->options_.max_connections;
    impl->conns_.insert(cs);
    *socket_context = cs;
    impl->ArmTimers();
  } else {
    auto* cs = static_cast<ConnState*>(*socket_context);
    if (cs) {
      impl->conns_.erase(cs);
      delete cs;
      *socket_context = nullptr;
    }
  }
}

void HttpFace::Impl::Completed(void* cls, MHD_Connection*, void** con_cls,
                               MHD_RequestTerminationCode) {
  Impl* impl = static_cast<Impl*>(cls);
  auto* q = static_cast<Request*>(*con_cls);
  if (!q) return;
  *con_cls = nullptr;
  q->watch.reset();
  if (q->wire_id != 0) {
    impl->pending_.erase(q->wire_id);
    if (q->generating && !q->client_gone) {
      // The client left: stop its generation.
      wire::Request cancel;
      cancel.set_id(impl->next_id_++);
      cancel.mutable_cancel()->set_target(q->wire_id);
      impl->Call(nullptr, &cancel);
    }
  }
  if (q->cs && impl->conns_.count(q->cs)) {
    q->cs->deadline_ns =
        MonotonicNs() + int64_t{impl->options_.request_timeout_ms} * 1000000;
  }
  impl->requests_.erase(q);
  delete q;
}

// ------------------------------------------------------------ requests

MHD_Result HttpFace::Impl::QueueNow(MHD_Connection* conn, int status,
                                    const std::string& body, const char* type,
                                    bool close) {
  MHD_Response* r = MHD_create_response_from_buffer(
      body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  if (close) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
  if (status == 401) {
    MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
  }
  const MHD_Result ok =
      MHD_queue_response(conn, static_cast<unsigned int>(status), r);
  MHD_destroy_response(r);
  return ok;
}

MHD_Result HttpFace::Impl::Queue(Request* q) {
  if (q->streaming) {
    MHD_Response* r = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, 16384, &Impl::ReadStream, q, nullptr);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    const MHD_Result ok = MHD_queue_response(q->conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
  }
  return QueueNow(q->conn, q->status, q->answer, q->content_type.c_str(),
                  false);
}

MHD_Result HttpFace::Impl::OnAccess(MHD_Connection* conn, const char* url,
                                    const char* method, const char* upload,
                                    size_t* upload_size, void** con_cls) {
  auto* q = static_cast<Request*>(*con_cls);
  if (!q) {
    // The headers are here.
    const MHD_ConnectionInfo* ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    ConnState* cs = ci ? static_cast<ConnState*>(ci->socket_context) : nullptr;
    auto error = [&](int status, StatusCode code, const std::string& msg,
                     bool close) {
      std::string body = ErrorJson(code, msg, status);
      return QueueNow(conn, status, body, kJson, close);
    };
    if (cs && cs->over_cap) {
      return error(503, StatusCode::kUnavailable,
                   "too many HTTP connections (http.max_connections = " +
                       std::to_string(options_.max_connections) + ")",
                   true);
    }
    const std::string_view path(url), m(method);
    Route route;
    const char* want = "GET";
    if (path == "/health") {
      route = Route::kHealth;
    } else if (path == "/ready") {
      route = Route::kReady;
    } else if (path == "/metrics") {
      route = Route::kMetrics;
    } else if (path == "/v1/models") {
      route = Route::kModels;
    } else if (path == "/v1/infer") {
      route = Route::kInfer, want = "POST";
    } else if (path == "/v1/completions") {
      route = Route::kCompletions, want = "POST";
    } else if (path == "/v1/chat/completions") {
      route = Route::kChat, want = "POST";
    } else {
      return error(404, StatusCode::kNotFound,
                   std::string("no endpoint ") + method + " " +
                       std::string(path.substr(0, 100)) +
                       " (endpoints: " + kEndpoints + ")",
                   false);
    }
    if (m != want) {
      return error(405, StatusCode::kInvalidArgument,
                   std::string(path) + " takes " + want + ", not " +
                       std::string(m.substr(0, 20)),
                   true);
    }
    if (!options_.token.empty() && route != Route::kHealth &&
        route != Route::kReady) {
      const char* auth = MHD_lookup_connection_value(
          conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
      const std::string expected = "Bearer " + options_.token;
      bool same = auth && strlen(auth) == expected.size();
      if (same) {
        unsigned char diff = 0;  // constant time
        for (size_t i = 0; i < expected.size(); ++i) {
          diff |= static_cast<unsigned char>(auth[i] ^ expected[i]);
        }
        same = diff == 0;
      }
      if (!same) {
        return QueueNow(
            conn, 401,
            R"({"error":{"message":")" +
                std::string(auth ? "the bearer token is wrong"
                                 : "this endpoint needs 'Authorization: "
                                   "Bearer TOKEN' (http.token_file)") +
                R"(","type":"authentication_error","param":null,"code":"invalid_api_key"}})",
            kJson, true);
      }
    }
    const char* length = MHD_lookup_connection_value(
        conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length) {
      const unsigned long long n = strtoull(length, nullptr, 10);
      if (n > options_.max_body_bytes) {
        return error(413, StatusCode::kResourceExhausted,
                     "the body of " + std::to_string(n) +
                         " bytes is over the limit of " +
                         std::to_string(options_.max_body_bytes) +
                         " (http.max_body_bytes)",
                     true);
      }
    }
    q = new Request;
    q->face = this;
    q->conn = conn;
    q->cs = cs;
    q->route = route;
    requests_.insert(q);
    *con_cls = q;
    return MHD_YES;
  }
  if (*upload_size != 0) {
    if (q->body.size() + *upload_size > options_.max_body_bytes) {
      q->too_large = true;  // answered when the body has ended
    } else if (!q->too_large) {
      q->body.append(upload, *upload_size);
    }
    *upload_size = 0;
    return MHD_YES;
  }
  if (q->have_answer || q->streaming) return Queue(q);
  if (q->received) {
    // Resumed before the answer is here (a stream waiting for its first
    // frame is resumed only with it): wait again.
    Suspend(q);
    return MHD_YES;
  }
  q->received = true;
  if (q->cs) q->cs->deadline_ns = 0;
  if (q->too_large) {
    return QueueNow(conn, 413,
                    ErrorJson(StatusCode::kResourceExhausted,
                              "the body is over the limit of " +
                                  std::to_string(options_.max_body_bytes) +
                                  " bytes (http.max_body_bytes)",
                              413),
                    kJson, true);
  }
  Dispatch(q);
  if (q->have_answer) return Queue(q);
  Suspend(q);
  return MHD_YES;
}

void HttpFace::Impl::Answer(Request* q, int status, std::string body,
                            const char* type) {
  q->have_answer = true;
  q->status = status;
  q->answer = std::move(body);
  q->content_type = type;
  Resume(q);
}

void HttpFace::Impl::Fail(Request* q, StatusCode code,
                          std::string_view message) {
  if (q->streaming) {
    // Headers (200) are gone: the error is the stream's last event.
    PushChunk(q, "data: " + ErrorJson(code, message) + "\n\n");
    q->sse_done = true;
    PushChunk(q, "");
    return;
  }
  Answer(q, HttpStatusOf(code), ErrorJson(code, message));
}

// A suspended connection is out of libmicrohttpd's epoll set: its socket is
// watched here for the client's hang-up (EPOLLRDHUP: it closed, or shut
// down its sending side), which cancels the call.
void HttpFace::Impl::Suspend(Request* q) {
  MHD_suspend_connection(q->conn);
  q->suspended = true;
  if (q->watch || q->client_gone || !q->cs || q->cs->fd < 0) return;
  sd_event_source* s = nullptr;
  const int r = sd_event_add_io(
      loop_, &s, q->cs->fd, EPOLLRDHUP,
      [](sd_event_source*, int, uint32_t, void* p) -> int {
        auto* req = static_cast<Request*>(p);
        req->face->ClientGone(req);
        return 0;
      },
      q);
  if (r < 0) {
    TERND_LOG_DEBUG("http: cannot watch a client's socket: %s", strerror(-r));
    return;
  }
  sd_event_source_set_description(s, "http-client");
  q->watch.reset(s);
}

// The client hung up while its answer was pending: cancel a generation
// now, as the socket protocol's Cancel (its sequence is freed at once);
// any other call's answer, when it comes, goes nowhere.
void HttpFace::Impl::ClientGone(Request* q) {
  if (q->watch) sd_event_source_set_enabled(q->watch.get(), SD_EVENT_OFF);
  if (q->client_gone) return;
  q->client_gone = true;
  TERND_LOG_DEBUG("http: a client hung up while its answer was pending%s",
                  q->generating ? ": cancelling its generation" : "");
  if (q->generating && q->wire_id != 0) {
    wire::Request cancel;
    cancel.set_id(next_id_++);
    cancel.mutable_cancel()->set_target(q->wire_id);
    Call(nullptr, &cancel);
  }
}

void HttpFace::Impl::Resume(Request* q) {
  q->watch.reset();
  if (q->suspended) {
    q->suspended = false;
    MHD_resume_connection(q->conn);
    run_task_->Schedule();
  }
}

void HttpFace::Impl::Dispatch(Request* q) {
  wire::Request r;
  switch (q->route) {
    case Route::kHealth:
    case Route::kReady:
      r.mutable_health();
      break;
    case Route::kMetrics:
      r.mutable_stats()->set_metrics(true);
      break;
    case Route::kModels:
      r.mutable_model_info();
      break;
    case Route::kInfer: {
      Result<wire::InferRequest> infer = ParseInferJson(q->body);
      if (!infer.ok()) {
        Fail(q, infer.status().code(), infer.status().message());
        return;
      }
      *r.mutable_infer() = std::move(*infer);
      break;
    }
    case Route::kCompletions:
    case Route::kChat: {
      Result<CompletionRequest> c =
          ParseCompletionJson(q->body, q->route == Route::kChat);
      if (!c.ok()) {
        Fail(q, c.status().code(), c.status().message());
        return;
      }
      q->completion = std::move(*c);
      q->who.id = (q->completion.chat ? "chatcmpl-" : "cmpl-") +
                  std::to_string(next_completion_++);
      q->who.created = static_cast<int64_t>(time(nullptr));
      // First the model: its name for the answers, its chat template.
      r.mutable_model_info();
      break;
    }
  }
  q->body.clear();
  q->body.shrink_to_fit();
  Call(q, &r);
}

void HttpFace::Impl::Call(Request* q, wire::Request* r) {
  if (!link_ok_) {
    if (q) Fail(q, StatusCode::kUnavailable, "the daemon is shutting down");
    return;
  }
  if (q) {
    r->set_id(next_id_++);
    q->wire_id = r->id();
    pending_[q->wire_id] = q;
  }
  const bool was_empty = out_.size() == out_sent_;
  if (!wire::AppendFrame(*r, SIZE_MAX, &out_)) return;
  if (was_empty) LinkFlush();
}

void HttpFace::Impl::LinkFlush() {
  while (out_sent_ < out_.size()) {
    const ssize_t n = send(link_.get(), out_.data() + out_sent_,
                           out_.size() - out_sent_, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0) {
      LinkBroken(strerror(errno));
      return;
    }
    out_sent_ += static_cast<size_t>(n);
  }
  if (out_sent_ == out_.size()) {
    out_.clear();
    out_sent_ = 0;
  }
  sd_event_source_set_io_events(link_source_.get(),
                                out_.empty() ? EPOLLIN : (EPOLLIN | EPOLLOUT));
}

void HttpFace::Impl::LinkRead() {
  for (;;) {
    std::span<uint8_t> space = decoder_.WritableSpace(65536);
    const ssize_t n = recv(link_.get(), space.data(), space.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) {
      LinkBroken(n == 0 ? "closed by the service" : strerror(errno));
      return;
    }
    decoder_.Commit(static_cast<size_t>(n));
    std::span<const uint8_t> payload;
    uint32_t announced = 0;
    for (;;) {
      const wire::FrameDecoder::Next next =
          decoder_.TakeFrame(&payload, &announced);
      if (next != wire::FrameDecoder::Next::kFrame) break;
      if (!response_.ParseFromArray(payload.data(),
                                    static_cast<int>(payload.size()))) {
        continue;
      }
      OnLinkAnswer(response_);
    }
    if (static_cast<size_t>(n) < space.size()) break;
  }
  decoder_.ReleaseIfEmpty(1 << 20);
}

void HttpFace::Impl::LinkBroken(const char* why) {
  if (!link_ok_) return;
  link_ok_ = false;
  TERND_LOG_NOTICE("http: the link to the service ended (%s)", why);
  link_source_.reset();
  std::unordered_map<uint64_t, Request*> pending;
  pending.swap(pending_);
  for (auto& [id, q] : pending) {
    q->wire_id = 0;
    Fail(q, StatusCode::kUnavailable, "the daemon is shutting down");
  }
}

void HttpFace::Impl::OnLinkAnswer(const wire::Response& r) {
  auto it = pending_.find(r.id());
  if (it == pending_.end()) return;  // its client has gone
  Request* q = it->second;
  if (q->generating) {
    if (r.final()) {
      pending_.erase(it);
      q->wire_id = 0;
      q->generating = false;
    }
    OnGenerated(q, r);
    return;
  }
  pending_.erase(it);
  q->wire_id = 0;
  const StatusCode code = static_cast<StatusCode>(r.status().code());
  if (code != StatusCode::kOk) {
    Fail(q, code, r.status().message());
    return;
  }
  switch (q->route) {
    case Route::kHealth:
      Answer(q, 200, HealthJson(r.health()));
      return;
    case Route::kReady:
      Answer(q, r.health().ready() ? 200 : 503, HealthJson(r.health()));
      return;
    case Route::kMetrics:
      Answer(q, 200, r.stats().prometheus_text(),
             "text/plain; version=0.0.4; charset=utf-8");
      return;
    case Route::kModels:
      Answer(q, 200,
             ModelsJson(r.model_info(), static_cast<int64_t>(time(nullptr))));
      return;
    case Route::kInfer:
      Answer(q, 200, InferResponseJson(r.infer()));
      return;
    case Route::kCompletions:
    case Route::kChat: {
      const wire::ModelInfoResponse& info = r.model_info();
      if (!info.has_language_model()) {
        Fail(q, StatusCode::kFailedPrecondition,
             "model '" + info.name() +
                 "' is a graph model: it answers /v1/infer, not completions");
        return;
      }
      q->who.model = info.name();
      if (q->client_gone) {
        Fail(q, StatusCode::kCancelled, "the client has gone");
        return;
      }
      q->logprobs = q->completion.generate.logprobs();
      wire::Request g;
      *g.mutable_generate() = std::move(q->completion.generate);
      if (q->completion.chat) {
        Result<ChatTemplate> t =
            RecognizeChatTemplate(info.language_model().chat_template());
        if (!t.ok()) {
          Fail(q, t.status().code(), t.status().message());
          return;
        }
        Result<std::string> prompt =
            ApplyChatTemplate(*t, q->completion.messages);
        if (!prompt.ok()) {
          Fail(q, prompt.status().code(), prompt.status().message());
          return;
        }
        g.mutable_generate()->set_prompt(std::move(*prompt));
      }
      q->generating = true;
      Call(q, &g);
      return;
    }
  }
}

void HttpFace::Impl::OnGenerated(Request* q, const wire::Response& r) {
  const StatusCode code = static_cast<StatusCode>(r.status().code());
  if (code != StatusCode::kOk) {
    Fail(q, code, r.status().message());
    return;
  }
  const wire::GenerateResponse& g = r.generate();
  const bool chat = q->completion.chat;
  if (!q->completion.stream) {
    if (q->logprobs && g.tokens_size() > 0) {
      q->lp.frames.push_back(g);
      q->lp.text_offsets.push_back(q->text.size());
    }
    q->text += g.text();
    if (r.final()) {
      Answer(q, 200,
             CompletionJson(q->who, chat, q->text, g.summary(),
                            q->logprobs ? &q->lp : nullptr));
    }
    return;
  }
  std::string chunk;
  if (!g.text().empty() || g.tokens_size() > 0) {
    CompletionLogprobs one;
    if (q->logprobs && g.tokens_size() > 0) {
      one.frames.push_back(g);
      one.text_offsets.push_back(q->streamed);
    }
    chunk = StreamChunk(q->who, chat, g.text(), q->first_chunk, nullptr,
                        one.frames.empty() ? nullptr : &one);
    q->streamed += g.text().size();
    q->first_chunk = false;
  }
  if (r.final()) {
    chunk += StreamChunk(q->who, chat, "", q->first_chunk, &g.summary());
    chunk += kStreamDone;
    q->sse_done = true;
  }
  if (!q->streaming) {
    // The first frame: now the answer's headers can go, with it.
    q->streaming = true;
    q->sse = std::move(chunk);
    Resume(q);
    return;
  }
  PushChunk(q, std::move(chunk));
}

void HttpFace::Impl::PushChunk(Request* q, std::string chunk) {
  q->sse += chunk;
  if (q->reader_suspended) {
    q->reader_suspended = false;
    MHD_resume_connection(q->conn);
    run_task_->Schedule();
  }
}

ssize_t HttpFace::Impl::ReadStream(void* cls, uint64_t, char* buf, size_t max) {
  auto* q = static_cast<Request*>(cls);
  const size_t left = q->sse.size() - q->sse_taken;
  if (left > 0) {
    const size_t n = std::min(left, max);
    std::memcpy(buf, q->sse.data() + q->sse_taken, n);
    q->sse_taken += n;
    if (q->sse_taken == q->sse.size()) {
      q->sse.clear();
      q->sse_taken = 0;
    }
    return static_cast<ssize_t>(n);
  }
  if (q->sse_done) return MHD_CONTENT_READER_END_OF_STREAM;
  // Nothing yet: wait for the next token without holding the loop.
  MHD_suspend_connection(q->conn);
  q->reader_suspended = true;
  return 0;
}

// ---------------------------------------------------------------- face

HttpFace::HttpFace(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpFace::~HttpFace() = default;

Result<std::unique_ptr<HttpFace>> HttpFace::Create(sd_event* loop,
                                                   const HttpOptions& options,
                                                   const Adopt& adopt) {
  auto impl = std::make_unique<Impl>(loop, options);
  TERND_RETURN_IF_ERROR(impl->Start(adopt));
  return std::unique_ptr<HttpFace>(new HttpFace(std::move(impl)));
}

void HttpFace::StopListening() { impl_->StopListening(); }

}  // namespace ternd::daemon
