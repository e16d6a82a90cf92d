// A real nginx HTTPS server for integration tests (Debian package `nginx`,
// /usr/sbin/nginx), started on 127.0.0.1 on a free port with a config and a
// document root in its own temporary directory.
//
//   HttpsTestDir dir;                              //
//   $TMPDIR/ternd-https-XXXXXX
//   ASSERT_TRUE(MakeTestCertificates(dir.path()).ok());
//   NginxOptions options;
//   options.cert_dir = dir.path();
//   NginxServer nginx(options);
//   ASSERT_TRUE(nginx.Start().ok()) << nginx.ErrorLog();
//   ASSERT_TRUE(nginx.PutFile("files", "a.zst", bytes).ok());
//   ... GET nginx.Url("files/a.zst") with dir.File("ca.pem") ...
//   for (const AccessLogEntry& e : nginx.AccessLog()) ... e.range ...
//
// Locations, each serving a directory of the document root of the same name
// (PutFile's `location`):
//   /files/     static files, byte ranges and If-Range supported
//   /norange/   the same directory as /files/, but Range is ignored
//               (`max_ranges 0`): every answer is a 200 with the whole file
//   /slow/      the same directory as /files/, sent at 1 MiB/s
//               (`limit_rate`): a transfer that takes seconds, so a test
//               can interrupt it midway
//   /garbage/   its own directory: put different bytes under a name also
//               in files/ (a source serving wrong content)
//   /wronglen/  its own directory: a file of another length
//   /endless/   its own directory, served chunked with no Content-Length
//               (a body filter is active), so a client only learns the
//               length by reading: an "endless" source when the file is
//               longer than the client expects
// TLS from tests/support/make_test_ca.sh (server.pem, or other-server.pem
// to test a server the client must refuse); optionally client certificates
// signed by ca.pem are required.
//
// The access log (one line per request: URI, status, Range, If-Range, body
// bytes sent, whether the request completed) is what tests assert on:
// which ranges a client asked for, and how much a refused response sent.
//
// nginx runs with `master_process off` (one process, the test's user, no
// privilege drop, so the 0700 temp directory and 0600 keys stay readable)
// and `daemon off`; its pid file, temp paths and logs live in the directory.
//
// Thread-safety: none; use from the test's thread.
#ifndef TERND_TESTS_SUPPORT_NGINX_SERVER_H_
#define TERND_TESTS_SUPPORT_NGINX_SERVER_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "tests/support/test_env.h"

namespace ternd::https_testing {

// The shared scratch directory, certificates and ports (test_env.h).
using HttpsTestDir = ::ternd::testing::TempDir;
using ::ternd::testing::FindFreePort;
using ::ternd::testing::MakeTestCertificates;

// Writes a file (0644), creating nothing else.
Status WriteTestFile(const std::string& path, const std::string& content);

struct NginxOptions {
  // Directory with make_test_ca.sh's output. Required.
  std::string cert_dir;
  // "server" (signed by ca.pem) or "other-server" (by other-ca.pem).
  std::string server_cert = "server";
  // Clients must present a certificate signed by ca.pem.
  bool require_client_certificate = false;
  // Appended inside the server block (e.g. a documented location), with
  // every "@DOCROOT@" replaced by the server's document root (PutFile's).
  std::string extra_server_config;
};

struct AccessLogEntry {
  std::string uri;
  int status = 0;
  std::string range;     // the Range request header; empty if none
  std::string if_range;  // the If-Range request header; empty if none
  uint64_t body_bytes_sent = 0;
  bool completed = false;  // nginx's $request_completion
};

class NginxServer {
 public:
  explicit NginxServer(NginxOptions options);
  ~NginxServer();  // stops nginx if it still runs
  NginxServer(const NginxServer&) = delete;
  NginxServer& operator=(const NginxServer&) = delete;

  // Writes the config (first call), starts nginx and waits until it accepts
  // TCP connections (at most `timeout_ms`). If the port was taken in the
  // meantime, retries on another. The error includes the error log.
  Status Start(int timeout_ms = 15000);
  // SIGTERM and wait.
  Status Stop(int timeout_ms = 15000);

  int port() const { return port_; }
  // The nginx process, or -1 when it is not running.
  pid_t pid() const { return pid_; }
  // "https://127.0.0.1:<port>/<path>"
  std::string Url(const std::string& path) const;
  // Writes docroot/<location>/<name>; location is "files", "garbage",
  // "wronglen" or "endless".
  Status PutFile(const std::string& location, const std::string& name,
                 const std::string& content) const;
  const std::string& directory() const { return dir_.path(); }

  // Requests logged so far, oldest first; only those whose URI ends with
  // `suffix` when given.
  std::vector<AccessLogEntry> AccessLog(const std::string& suffix = "") const;
  // Waits until AccessLog(suffix) has at least `n` entries.
  bool WaitForRequests(size_t n, const std::string& suffix = "",
                       int timeout_ms = 15000) const;
  std::string ErrorLog() const;

 private:
  Status WriteConfig();
  Status StartOnce(int timeout_ms);

  NginxOptions options_;
  HttpsTestDir dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace ternd::https_testing

#endif  // TERND_TESTS_SUPPORT_NGINX_SERVER_H_
