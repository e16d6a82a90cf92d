// Notify() against a NOTIFY_SOCKET that nobody reads: it must return at
// once with the queue full (libsystemd's sd_notify blocks there, which
// would stall the serving loop), dropping and counting what does not fit.
#include "daemon/notify.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "tests/support/test_env.h"

namespace ternd::daemon {
namespace {

TEST(NotifyTest, NeverBlocksOnAFullQueueAndCountsWhatIsDropped) {
  ::ternd::testing::TempDir dir;
  const std::string path = dir.File("notify.sock");
  const int receiver = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(receiver, 0);
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  ASSERT_EQ(bind(receiver, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)),
            0);
  // In a child, so that a Notify() that blocks fails the test on the
  // deadline instead of hanging it.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    setenv("NOTIFY_SOCKET", path.c_str(), 1);
    for (int i = 0; i < 5000; ++i) Notify("STATUS=message %d", i);
    _exit(NotificationsDropped() > 0 ? 0 : 3);
  }
  int status = 0;
  pid_t waited = 0;
  for (int i = 0; i < 1000 && waited == 0; ++i) {  // 10 s
    waited = waitpid(child, &status, WNOHANG);
    if (waited == 0) usleep(10000);
  }
  if (waited == 0) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    FAIL() << "Notify() blocked on a full notification queue";
  }
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "no notification was counted dropped";
  // What fit was delivered, in order, whole.
  char buf[512];
  const ssize_t n = recv(receiver, buf, sizeof(buf), MSG_DONTWAIT);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "STATUS=message 0");
  close(receiver);
}

TEST(NotifyTest, WithoutNotifySocketDoesNothing) {
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    unsetenv("NOTIFY_SOCKET");
    Notify("READY=1");
    _exit(NotificationsDropped() == 0 ? 0 : 3);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace ternd::daemon
