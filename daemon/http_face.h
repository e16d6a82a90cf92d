// The HTTP face (docs/http.md): an optional HTTP/1.1 listener on a unix
// socket and/or a TCP address (loopback by default), with OpenAI-compatible
// /v1/completions and /v1/chat/completions (streamed as server-sent
// events), /v1/models, JSON inference at /v1/infer, /health, /ready and
// Prometheus /metrics.
//
//   HTTP client ──▶ libmicrohttpd (external epoll, on the daemon's loop)
//        ──▶ JSON into wire requests (http_codec.h) ──▶ link ──▶ service
//        ◀── wire answers into JSON / SSE chunks ◀──────────┘
//
// The face talks to the service as a socket client does, over one socket
// pair whose other end the service adopts as a connection: every call
// keeps the socket protocol's validation, limits, messages and counts, and
// the service needs no second request path. A connection waiting for its
// answer is suspended (holds no worker and no loop time); a stream resumes
// it for each token.
//
// Limits: http.max_connections (beyond it 503), header bytes (431), body
// bytes (413), http.request_timeout_ms from a connection's start or its
// previous answer to a whole request (408; a client trickling bytes cannot
// hold a connection), http.idle_timeout_s, an optional bearer token.
//
// A client that disconnects while its answer is pending (its socket reports
// EPOLLRDHUP) has its call cancelled: a generation stops and frees its
// sequence, streamed or not.
//
// Thread-safety: everything on the loop's thread.
#ifndef TERND_DAEMON_HTTP_FACE_H_
#define TERND_DAEMON_HTTP_FACE_H_

#include <systemd/sd-event.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/status.h"

namespace ternd::daemon {

struct HttpOptions {
  std::string socket_path;  // empty: no unix socket
  uint32_t socket_mode = 0660;
  std::string address = "127.0.0.1";
  uint32_t port = 0;  // 0: no TCP
  uint32_t max_connections = 64;
  uint32_t max_header_bytes = 16384;
  uint32_t max_body_bytes = 4u << 20;
  uint32_t request_timeout_ms = 30000;
  uint32_t idle_timeout_s = 15;
  std::string token;  // empty: no Authorization needed
  // Listening sockets systemd passed (FileDescriptorName=http,
  // passed_sockets.h), taken over by the face; when there are any, the face
  // listens on them only and binds neither socket_path nor port.
  std::vector<int> passed_fds;
};

class HttpFace {
 public:
  // `adopt` hands the service its end of the link (a connected unix stream
  // socket) to serve as a client connection.
  using Adopt = std::function<Status(UniqueFd)>;
  static Result<std::unique_ptr<HttpFace>> Create(sd_event* loop,
                                                  const HttpOptions& options,
                                                  const Adopt& adopt);
  ~HttpFace();
  HttpFace(const HttpFace&) = delete;
  HttpFace& operator=(const HttpFace&) = delete;

  // Drain: no new HTTP connections; requests in flight are answered.
  void StopListening();

  class Impl;

 private:
  explicit HttpFace(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_HTTP_FACE_H_
