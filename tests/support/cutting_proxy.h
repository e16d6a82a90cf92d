// A TCP proxy on 127.0.0.1 that forwards to a server (nginx) and cuts
// connections after a given number of bytes from the server: the fault of a
// link dropping in the middle of a download, which a real server alone does
// not produce on demand. TLS passes through untouched (the client talks TLS
// to nginx), so the client sees what it would see on a real network: the
// stream ends in the middle of a TLS record.
//
//   CuttingProxy proxy(nginx.port(), {300000, 700000});
//   ASSERT_TRUE(proxy.Start().ok());
//   // connection 0 is closed after 300000 bytes server->client,
//   // connection 1 after 700000, later connections are not cut
//   ... fetch https://127.0.0.1:<proxy.port()>/files/a.zst ...
//
// Runs on its own thread; stops (closing everything) when destroyed.
#ifndef TERND_TESTS_SUPPORT_CUTTING_PROXY_H_
#define TERND_TESTS_SUPPORT_CUTTING_PROXY_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "base/status.h"

namespace ternd::https_testing {

class CuttingProxy {
 public:
  // Connection k (0-based, in accept order) is cut after cuts[k] bytes
  // have been forwarded from the server to the client.
  CuttingProxy(int upstream_port, std::vector<uint64_t> cuts);
  ~CuttingProxy();
  CuttingProxy(const CuttingProxy&) = delete;
  CuttingProxy& operator=(const CuttingProxy&) = delete;

  // Listens on a free port of 127.0.0.1 and starts forwarding.
  Status Start();
  int port() const { return port_; }
  // Connections accepted and connections cut so far.
  int connections() const { return connections_.load(); }
  int cuts_done() const { return cuts_done_.load(); }

 private:
  struct Pipe;
  void Run();

  int upstream_port_;
  std::vector<uint64_t> cuts_;
  int port_ = 0;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: stop
  std::atomic<int> connections_{0};
  std::atomic<int> cuts_done_{0};
  std::thread thread_;
};

}  // namespace ternd::https_testing

#endif  // TERND_TESTS_SUPPORT_CUTTING_PROXY_H_
