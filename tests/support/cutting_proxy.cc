#include "tests/support/cutting_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <memory>
#include <string>

namespace ternd::https_testing {

// One proxied connection. Each direction holds at most one read's worth of
// bytes not yet written.
struct CuttingProxy::Pipe {
  int client = -1;
  int server = -1;
  uint64_t budget = std::numeric_limits<uint64_t>::max();  // server->client
  std::string to_server, to_client;
  ~Pipe() {
    if (client >= 0) close(client);
    if (server >= 0) close(server);
  }
};

CuttingProxy::CuttingProxy(int upstream_port, std::vector<uint64_t> cuts)
    : upstream_port_(upstream_port), cuts_(std::move(cuts)) {}

CuttingProxy::~CuttingProxy() {
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    ssize_t n = write(wake_fd_, &one, sizeof one);
    (void)n;
  }
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) close(listen_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

Status CuttingProxy::Start() {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd_ < 0) return ErrnoError(errno, "proxy: socket");
  struct sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 ||
      listen(listen_fd_, 16) < 0 ||
      getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) < 0) {
    return ErrnoError(errno, "proxy: cannot listen on 127.0.0.1");
  }
  port_ = ntohs(addr.sin_port);
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) return ErrnoError(errno, "proxy: eventfd");
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

void CuttingProxy::Run() {
  std::vector<std::unique_ptr<Pipe>> pipes;
  char buf[64 * 1024];
  for (;;) {
    std::vector<pollfd> fds;
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (auto& p : pipes) {
      short c = 0, s = 0;
      if (p->to_server.empty()) c |= POLLIN;
      if (!p->to_client.empty()) c |= POLLOUT;
      if (p->to_client.empty()) s |= POLLIN;
      if (!p->to_server.empty()) s |= POLLOUT;
      fds.push_back({p->client, c, 0});
      fds.push_back({p->server, s, 0});
    }
    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents) return;  // stop
    if (fds[1].revents & POLLIN) {
      const int c =
          accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (c >= 0) {
        auto p = std::make_unique<Pipe>();
        p->client = c;
        const int index = connections_.fetch_add(1);
        if (index < static_cast<int>(cuts_.size())) p->budget = cuts_[index];
        p->server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in addr = {};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<uint16_t>(upstream_port_));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        // Loopback: a blocking connect returns at once.
        if (p->server >= 0 &&
            connect(p->server, reinterpret_cast<sockaddr*>(&addr),
                    sizeof(addr)) == 0) {
          fcntl(p->server, F_SETFL, fcntl(p->server, F_GETFL) | O_NONBLOCK);
          pipes.push_back(std::move(p));
        }
      }
    }
    // fds[2 + 2k], fds[3 + 2k] belong to pipes[k] (as they were when polled;
    // new pipes were appended after the poll set was built).
    std::vector<bool> dead(pipes.size(), false);
    const size_t polled = (fds.size() - 2) / 2;
    for (size_t k = 0; k < polled; ++k) {
      Pipe& p = *pipes[k];
      const short cr = fds[2 + 2 * k].revents;
      const short sr = fds[3 + 2 * k].revents;
      if ((cr & POLLOUT) && !p.to_client.empty()) {
        const ssize_t n = send(p.client, p.to_client.data(), p.to_client.size(),
                               MSG_NOSIGNAL);
        if (n > 0) p.to_client.erase(0, static_cast<size_t>(n));
        if (n < 0 && errno != EAGAIN) dead[k] = true;
        if (p.to_client.empty() && p.budget == 0) {
          cuts_done_.fetch_add(1);
          dead[k] = true;  // the cut
        }
      }
      if ((sr & POLLOUT) && !p.to_server.empty()) {
        const ssize_t n = send(p.server, p.to_server.data(), p.to_server.size(),
                               MSG_NOSIGNAL);
        if (n > 0) p.to_server.erase(0, static_cast<size_t>(n));
        if (n < 0 && errno != EAGAIN) dead[k] = true;
      }
      if ((cr & (POLLIN | POLLHUP | POLLERR)) && p.to_server.empty()) {
        const ssize_t n = recv(p.client, buf, sizeof buf, 0);
        if (n > 0) {
          p.to_server.assign(buf, static_cast<size_t>(n));
        } else if (n == 0 || errno != EAGAIN) {
          dead[k] = true;
        }
      }
      if ((sr & (POLLIN | POLLHUP | POLLERR)) && p.to_client.empty() &&
          p.budget > 0) {
        const size_t want =
            static_cast<size_t>(std::min<uint64_t>(sizeof buf, p.budget));
        const ssize_t n = recv(p.server, buf, want, 0);
        if (n > 0) {
          p.to_client.assign(buf, static_cast<size_t>(n));
          p.budget -= static_cast<uint64_t>(n);
        } else if (n == 0 || errno != EAGAIN) {
          dead[k] = true;
        }
      }
    }
    for (size_t k = polled; k-- > 0;) {
      if (dead[k]) pipes.erase(pipes.begin() + static_cast<long>(k));
    }
  }
}

}  // namespace ternd::https_testing
