// The service's request path in process: Service::Start on a temporary
// socket, Run() on a thread of this test, the C++ client over the real
// socket, and SIGTERM (blocked in every thread, read by the loop's
// signalfd) to drain and stop. What the spawned-daemon tests check from
// outside, here with the service's own code in the test's address space
// (so the sanitizers and a debugger see both sides).
#include "daemon/service.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "daemon/client/client.h"
#include "daemon/config.h"
#include "runtime/runtime.h"
#include "tests/daemon/daemon_process.h"
#include "tests/daemon/daemon_test_models.h"

namespace ternd::daemon {
namespace {

using daemon_testing::FastModel;
using daemon_testing::TestInput;
using daemon_testing::WriteTestModel;

TEST(ServiceTest, ServesRequestsAndDrainsOnSigterm) {
  // Before any thread exists, so every thread inherits the mask.
  ASSERT_TRUE(BlockServiceSignals().ok());
  daemon_testing::TempDir dir;
  ASSERT_TRUE(WriteTestModel(FastModel(), dir.File("model.tern")).ok());
  const std::string socket = dir.File("t.sock");
  Result<Config> config = ParseConfig(
      "[server]\nsocket = \"" + socket + "\"\n[runtime]\nmodel = \"" +
          dir.File("model.tern") + "\"\narena_mb = 16\nworkers = 2\n",
      "service_test");
  ASSERT_TRUE(config.ok()) << config.status().message();
  Result<std::unique_ptr<Service>> service =
      Service::Start(std::move(*config), "");
  ASSERT_TRUE(service.ok()) << service.status().message();
  Status ran;
  std::thread loop([&]() { ran = (*service)->Run(); });

  Result<std::unique_ptr<client::Client>> c = client::Client::Connect(socket);
  ASSERT_TRUE(c.ok()) << c.status().message();
  Result<wire::ModelInfoResponse> info = (*c)->ModelInfo();
  ASSERT_TRUE(info.ok()) << info.status().message();
  EXPECT_EQ(info->name(), "testnet");
  EXPECT_EQ(info->workers(), 2u);
  // Inference through the pool (and inline), pipelined.
  for (uint32_t i = 0; i < 8; ++i) {
    wire::Request r;
    r.set_id(i + 1);
    client::AddF32Input(r.mutable_infer(), "x", 2, 16,
                        TestInput(FastModel(), 2, i));
    ASSERT_TRUE((*c)->Send(r).ok());
  }
  for (int i = 0; i < 8; ++i) {
    wire::Response got;
    ASSERT_TRUE((*c)->Receive(&got).ok());
    EXPECT_EQ(got.status().code(), 0) << got.status().message();
    ASSERT_EQ(got.infer().outputs_size(), 2);
    EXPECT_EQ(got.infer().outputs(0).data().size(), 2 * 4 * sizeof(float));
  }
  Result<wire::StatsResponse> stats = (*c)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->inferences_total(), 16u);
  EXPECT_EQ(stats->connections(), 1u);
  // A request that is not one: an error answer, and this connection ends.
  EXPECT_FALSE((*c)->Infer(wire::InferRequest()).ok());

  ASSERT_EQ(kill(getpid(), SIGTERM), 0);
  loop.join();
  EXPECT_TRUE(ran.ok()) << ran.message();
  service->reset();
  // The socket the service created is gone with it.
  EXPECT_NE(access(socket.c_str(), F_OK), 0);
}

}  // namespace
}  // namespace ternd::daemon
