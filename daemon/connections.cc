#include "daemon/connections.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base/log.h"
#include "daemon/passed_sockets.h"

namespace ternd::daemon {
namespace {

constexpr size_t kReadChunk = 64 * 1024;
constexpr int kMaxAcceptsPerWakeup = 64;

Status SdError(int negative_errno, const char* what) {
  return ErrnoError(-negative_errno, "%s", what);
}

}  // namespace

Result<std::unique_ptr<Connections>> Connections::Listen(
    sd_event* loop, const ListenOptions& options, ConnectionHandler* handler,
    const telemetry::ServiceMetrics* metrics) {
  std::unique_ptr<Connections> c(
      new Connections(loop, options, handler, metrics));
  c->read_buffer_.resize(kReadChunk);
  TERND_RETURN_IF_ERROR(c->Bind());
  return c;
}

Connections::~Connections() {
  listener_source_.reset();
  if (unlink_socket_) unlink(options_.socket_path.c_str());
  listener_.reset();
  connections_.clear();
}

void Connections::StopListening() {
  listener_source_.reset();
  if (unlink_socket_) {
    unlink(options_.socket_path.c_str());
    unlink_socket_ = false;
  }
  listener_.reset();
}

bool Connections::AllFlushed() const {
  for (const auto& [id, c] : connections_) {
    if (c->out_sent_ < c->out_.size()) return false;
  }
  return true;
}

void Connections::SetLimits(uint32_t max_frame_bytes,
                            uint32_t max_output_buffer_bytes) {
  options_.max_frame_bytes = max_frame_bytes;
  options_.max_output_buffer_bytes = max_output_buffer_bytes;
  for (auto& [id, c] : connections_) {
    c->decoder_.set_max_frame_bytes(max_frame_bytes);
  }
}

void Connections::Reject(Connection* c) {
  ++frames_rejected_;
  metrics_->frames_rejected->Add(1);
  c->closing_ = true;
}

Status Connections::Bind() {
  // Sockets named "http" are the HTTP face's (passed_sockets.h).
  TERND_ASSIGN_OR_RETURN(PassedSockets passed, TakePassedSockets());
  const size_t n = passed.main.size();
  if (n > 1) {
    return InvalidArgument(
        "systemd passed %zu sockets not named 'http'; ternd takes exactly one "
        "unix stream socket for server.socket",
        n);
  }
  if (n == 1) {
    const int fd = passed.main[0];
    if (sd_is_socket_unix(fd, SOCK_STREAM, /*listening=*/1, nullptr, 0) <= 0) {
      return InvalidArgument(
          "the socket passed by systemd (fd %d) is not a "
          "listening unix stream socket",
          fd);
    }
    const int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
      return ErrnoError(errno, "cannot make the passed socket non-blocking");
    }
    listener_.reset(fd);
    socket_activated_ = true;
    TERND_LOG_INFO("using the listening socket passed by systemd");
  } else {
    const std::string& path = options_.socket_path;
    struct sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path)) {
      return InvalidArgument("server.socket '%s' is too long for a unix socket",
                             path.c_str());
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) return ErrnoError(errno, "socket(AF_UNIX)");

    struct stat st;
    if (lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        return FailedPrecondition(
            "server.socket '%s' exists and is not a "
            "socket; refusing to replace it",
            path.c_str());
      }
      UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (probe.get() >= 0 &&
          connect(probe.get(), reinterpret_cast<sockaddr*>(&addr),
                  sizeof(addr)) == 0) {
        return FailedPrecondition("another process is serving on %s",
                                  path.c_str());
      }
      unlink(path.c_str());  // stale socket of a previous run
    }
    gid_t gid = static_cast<gid_t>(-1);
    if (!options_.socket_group.empty()) {
      std::vector<char> buf(16384);
      struct group gr, *found = nullptr;
      const int err = getgrnam_r(options_.socket_group.c_str(), &gr, buf.data(),
                                 buf.size(), &found);
      if (err != 0 || !found) {
        return InvalidArgument("server.socket_group '%s' is not a known group",
                               options_.socket_group.c_str());
      }
      gid = gr.gr_gid;
    }
    // Create the socket file with no permissions for others from the
    // start, then widen to the configured mode.
    const mode_t old_umask = umask(0177);
    const int r =
        bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    const int bind_errno = errno;
    umask(old_umask);
    if (r < 0) return ErrnoError(bind_errno, "cannot bind %s", path.c_str());
    unlink_socket_ = true;
    if (chmod(path.c_str(), options_.socket_mode) < 0) {
      return ErrnoError(errno, "cannot chmod %s to %04o", path.c_str(),
                        options_.socket_mode);
    }
    // Only change the group when it differs: a daemon running with that
    // group (the systemd unit) creates the file with it already and needs
    // no chown, which the unit's syscall filter refuses.
    struct stat created;
    if (gid != static_cast<gid_t>(-1) && stat(path.c_str(), &created) == 0 &&
        created.st_gid != gid &&
        chown(path.c_str(), static_cast<uid_t>(-1), gid) < 0) {
      return ErrnoError(errno, "cannot give %s to group '%s'", path.c_str(),
                        options_.socket_group.c_str());
    }
    if (listen(fd.get(), SOMAXCONN) < 0) {
      return ErrnoError(errno, "cannot listen on %s", path.c_str());
    }
    listener_ = std::move(fd);
  }
  sd_event_source* s = nullptr;
  int r = sd_event_add_io(loop_, &s, listener_.get(), EPOLLIN,
                          &Connections::OnListener, this);
  if (r < 0) return SdError(r, "cannot watch the listening socket");
  sd_event_source_set_description(s, "listener");
  listener_source_.reset(s);
  return Status::Ok();
}

void Connections::Accept() {
  for (int i = 0; i < kMaxAcceptsPerWakeup; ++i) {
    UniqueFd fd(accept4(listener_.get(), nullptr, nullptr,
                        SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (fd.get() < 0) {
      if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
      TERND_LOG_WARNING("accept on %s failed: %s", options_.socket_path.c_str(),
                        strerror(errno));
      return;
    }
    auto c = std::make_unique<Connection>();
    c->owner_ = this;
    c->id_ = next_id_++;
    socklen_t len = sizeof(c->peer_);
    if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &c->peer_, &len) < 0) {
      TERND_LOG_WARNING("SO_PEERCRED failed: %s", strerror(errno));
      continue;
    }
    ++accepted_total_;
    metrics_->connections_total->Add(1);
    c->fd_ = std::move(fd);
    c->decoder_.set_max_frame_bytes(options_.max_frame_bytes);

    Status refuse;
    if (connections_.size() >= options_.max_connections) {
      refuse = Errorf(StatusCode::kUnavailable,
                      "too many connections (server.max_connections = %u)",
                      options_.max_connections);
    } else if (!options_.allow_uids.empty() || !options_.allow_gids.empty()) {
      const bool allowed =
          std::find(options_.allow_uids.begin(), options_.allow_uids.end(),
                    c->peer_.uid) != options_.allow_uids.end() ||
          std::find(options_.allow_gids.begin(), options_.allow_gids.end(),
                    c->peer_.gid) != options_.allow_gids.end();
      if (!allowed) {
        TERND_LOG_WARNING(
            "refused connection from pid %d uid %u gid %u: not "
            "in server.allow_uids or server.allow_gids",
            c->peer_.pid, c->peer_.uid, c->peer_.gid);
        refuse = Errorf(StatusCode::kPermissionDenied,
                        "uid %u / gid %u may not use this daemon", c->peer_.uid,
                        c->peer_.gid);
      }
    }
    if (!refuse.ok()) {
      // One small frame into an empty socket buffer: it fits, no waiting.
      std::vector<uint8_t> out;
      wire::Response response;
      response.set_final(true);
      response.mutable_status()->set_code(static_cast<int>(refuse.code()));
      response.mutable_status()->set_message(refuse.message());
      wire::AppendFrame(response, SIZE_MAX, &out);
      (void)!send(c->fd_.get(), out.data(), out.size(),
                  MSG_NOSIGNAL | MSG_DONTWAIT);
      handler_->OnRefused(refuse);
      continue;
    }
    TERND_LOG_DEBUG("connection %llu from pid %d uid %u gid %u",
                    static_cast<unsigned long long>(c->id_), c->peer_.pid,
                    c->peer_.uid, c->peer_.gid);
    sd_event_source* s = nullptr;
    int r = sd_event_add_io(loop_, &s, c->fd_.get(), EPOLLIN,
                            &Connections::OnConnection, c.get());
    if (r < 0) {
      TERND_LOG_WARNING("cannot watch a new connection: %s", strerror(-r));
      continue;
    }
    sd_event_source_set_description(s, "connection");
    c->source_.reset(s);
    c->events_ = EPOLLIN;
    connections_.emplace(c->id_, std::move(c));
    metrics_->connections->Set(static_cast<double>(connections_.size()));
  }
}

Status Connections::Adopt(UniqueFd fd) {
  auto c = std::make_unique<Connection>();
  c->owner_ = this;
  c->id_ = next_id_++;
  c->peer_.pid = getpid();
  c->peer_.uid = getuid();
  c->peer_.gid = getgid();
  c->fd_ = std::move(fd);
  c->decoder_.set_max_frame_bytes(options_.max_frame_bytes);
  sd_event_source* s = nullptr;
  const int r = sd_event_add_io(loop_, &s, c->fd_.get(), EPOLLIN,
                                &Connections::OnConnection, c.get());
  if (r < 0) return ErrnoError(-r, "cannot watch an adopted connection");
  sd_event_source_set_description(s, "connection-adopted");
  c->source_.reset(s);
  c->events_ = EPOLLIN;
  connections_.emplace(c->id_, std::move(c));
  return Status::Ok();
}

Connection* Connections::Find(uint64_t id) const {
  auto it = connections_.find(id);
  return it == connections_.end() ? nullptr : it->second.get();
}

void Connections::OnEvent(Connection* c, uint32_t revents) {
  if (revents & (EPOLLHUP | EPOLLERR)) {
    // The peer is gone: whatever it still waits for can no longer arrive.
    Close(c);
    return;
  }
  if (revents & EPOLLOUT) {
    const uint64_t id = c->id_;
    Flush(c);
    if (!Find(id)) return;
  }
  if (revents & EPOLLIN) Read(c);
}

void Connections::Read(Connection* c) {
  // Read into the loop's buffer and keep only unfinished frames per
  // connection, so an idle connection costs bytes, not a read chunk.
  const ssize_t n =
      read(c->fd_.get(), read_buffer_.data(), read_buffer_.size());
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    Close(c);
    return;
  }
  if (n == 0) {
    c->eof_ = true;
    UpdateEvents(c);
    MaybeClose(c);
    return;
  }
  c->decoder_.Feed(
      std::span<const uint8_t>(read_buffer_.data(), static_cast<size_t>(n)));
  for (;;) {
    std::span<const uint8_t> payload;
    uint32_t announced = 0;
    const wire::FrameDecoder::Next next =
        c->decoder_.TakeFrame(&payload, &announced);
    if (next == wire::FrameDecoder::Next::kNeedMore) break;
    if (next == wire::FrameDecoder::Next::kTooLarge) {
      ++frames_rejected_;
      metrics_->frames_rejected->Add(1);
      handler_->OnOversizedFrame(c, announced);
      c->closing_ = true;
      break;
    }
    handler_->OnFrame(c, payload);
    if (c->closing_) break;
  }
  c->decoder_.ReleaseIfEmpty(kReadChunk);
  FlushDirty();
}

void Connections::SendFrame(Connection* c, wire::Response* response,
                            bool final) {
  response->set_final(final);
  if (c->out_.size() == c->out_sent_) {
    c->out_.clear();
    c->out_sent_ = 0;
  }
  const bool was_empty = c->out_.size() == c->out_sent_;
  if (!wire::AppendFrame(*response, options_.max_frame_bytes, &c->out_)) {
    const size_t size = response->ByteSizeLong();
    const uint64_t id = response->id();
    response->Clear();
    response->set_id(id);
    response->set_final(true);
    response->mutable_status()->set_code(
        static_cast<int>(StatusCode::kResourceExhausted));
    char text[160];
    std::snprintf(text, sizeof(text),
                  "response of %zu bytes is over server.max_frame_bytes = %u; "
                  "ask for fewer rows or outputs",
                  size, options_.max_frame_bytes);
    response->mutable_status()->set_message(text);
    wire::AppendFrame(*response, SIZE_MAX, &c->out_);
  }
  if (was_empty && !c->dirty_) {
    c->dirty_ = true;
    dirty_.push_back(c);
  }
}

void Connections::FlushDirty() {
  // Flush(c) may close c, which removes it from dirty_: take one at a time.
  while (!dirty_.empty()) {
    Connection* c = dirty_.back();
    dirty_.pop_back();
    c->dirty_ = false;
    Flush(c);
  }
}

void Connections::Flush(Connection* c) {
  while (c->out_sent_ < c->out_.size()) {
    const ssize_t n =
        send(c->fd_.get(), c->out_.data() + c->out_sent_,
             c->out_.size() - c->out_sent_, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      Close(c);
      return;
    }
    c->out_sent_ += static_cast<size_t>(n);
  }
  if (c->out_sent_ == c->out_.size()) {
    c->out_.clear();
    c->out_sent_ = 0;
  } else if (c->out_sent_ > (1u << 20)) {
    c->out_.erase(c->out_.begin(),
                  c->out_.begin() + static_cast<ptrdiff_t>(c->out_sent_));
    c->out_sent_ = 0;
  }
  const size_t pending = c->out_.size() - c->out_sent_;
  // A slow reader: stop reading its requests until it takes its answers.
  c->read_paused_ = pending > options_.max_output_buffer_bytes ||
                    (c->read_paused_ && pending > 0);
  UpdateEvents(c);
  MaybeClose(c);
}

void Connections::UpdateEvents(Connection* c) {
  uint32_t events = 0;
  if (!c->eof_ && !c->closing_ && !c->read_paused_) events |= EPOLLIN;
  if (c->out_sent_ < c->out_.size()) events |= EPOLLOUT;
  if (events != c->events_) {
    sd_event_source_set_io_events(c->source_.get(), events);
    c->events_ = events;
  }
}

void Connections::MaybeClose(Connection* c) {
  const bool flushed = c->out_sent_ == c->out_.size();
  if (flushed && (c->closing_ || (c->eof_ && c->inflight == 0))) Close(c);
}

void Connections::Close(Connection* c) {
  if (c->decoder_.buffered() > 0 && !c->closing_) {
    ++frames_rejected_;  // the peer left in the middle of a frame
    metrics_->frames_rejected->Add(1);
  }
  if (c->inflight > 0) {
    TERND_LOG_DEBUG("connection %llu closed with %d requests in flight",
                    static_cast<unsigned long long>(c->id_), c->inflight);
  }
  if (c->dirty_) {
    dirty_.erase(std::remove(dirty_.begin(), dirty_.end(), c), dirty_.end());
  }
  const uint64_t id = c->id_;
  const int in_flight = c->inflight;
  connections_.erase(id);  // destroys the source and closes the fd
  metrics_->connections->Set(static_cast<double>(connections_.size()));
  handler_->OnClosed(id, in_flight);
}

int Connections::OnListener(sd_event_source*, int, uint32_t, void* self) {
  static_cast<Connections*>(self)->Accept();
  return 0;
}

int Connections::OnConnection(sd_event_source*, int, uint32_t revents,
                              void* userdata) {
  auto* c = static_cast<Connection*>(userdata);
  c->owner_->OnEvent(c, revents);
  return 0;
}

}  // namespace ternd::daemon
