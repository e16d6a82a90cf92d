// Offline installs over the socket, seen from the connection's side: how a
// refusal is answered to a client that is going away, how an oversized
// bundle ends its connection, and what the answers are counted as. (The
// update itself, its states and its refusals are update_test.cc's.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "daemon/client/client.h"
#include "daemon/frame.h"
#include "ota/bundle.h"
#include "ota/signing.h"
#include "tests/daemon/daemon_process.h"
#include "tests/daemon/daemon_test_models.h"
#include "tests/support/test_fleet.h"

namespace ternd::daemon_testing {
namespace {

using client::Client;
using ::testing::HasSubstr;
using testing::SignedRelease;
using testing::TestFleet;

constexpr char kDevice[] = "robot-1";
constexpr int kResourceExhausted = 8;

TestModelSpec Version(uint64_t v) {
  TestModelSpec s = FastModel();
  s.name = "upnet";
  s.version = v;
  s.seed = static_cast<uint32_t>(10 + v);
  return s;
}

// Frames of an Install request of `bundle` in parts of `part_bytes`.
std::vector<uint8_t> InstallFrames(uint64_t id, const std::string& bundle,
                                   size_t part_bytes) {
  std::vector<uint8_t> out;
  size_t at = 0;
  do {
    const size_t n = std::min(part_bytes, bundle.size() - at);
    wire::Request r;
    r.set_id(id);
    r.mutable_install()->set_part(bundle.substr(at, n));
    at += n;
    r.mutable_install()->set_more(at < bundle.size());
    EXPECT_TRUE(wire::AppendFrame(r, SIZE_MAX, &out));
  } while (at < bundle.size());
  return out;
}

// Reads every response frame until the daemon closes the connection or
// `timeout_ms` passes with nothing new; `closed` says which.
std::vector<wire::Response> ReadUntilClosed(int fd, int timeout_ms,
                                            bool* closed) {
  std::vector<wire::Response> got;
  wire::FrameDecoder decoder(64u << 20);
  *closed = false;
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return got;
    char buf[65536];
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) {
      *closed = true;  // EOF, or a reset: the daemon hung up
      return got;
    }
    decoder.Feed(std::span<const uint8_t>(reinterpret_cast<uint8_t*>(buf),
                                          static_cast<size_t>(n)));
    std::span<const uint8_t> payload;
    uint32_t announced;
    while (decoder.TakeFrame(&payload, &announced) ==
           wire::FrameDecoder::Next::kFrame) {
      wire::Response r;
      EXPECT_TRUE(
          r.ParseFromArray(payload.data(), static_cast<int>(payload.size())));
      got.push_back(std::move(r));
    }
  }
}

double PrometheusValue(const wire::StatsResponse& s, const std::string& name) {
  const std::string& text = s.prometheus_text();
  const size_t at = text.find("\n" + name + " ");
  if (at == std::string::npos) return 0;
  return std::strtod(text.c_str() + at + name.size() + 2, nullptr);
}

class InstallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(WriteTestModel(Version(1), dir_.File("model.tern")).ok());
    WriteText(dir_.File("root.pb"), fleet_.RootEnvelope(1));
  }

  std::unique_ptr<DaemonProcess> Start(const std::string& ota_extra = "") {
    WriteText(dir_.File("ternd.toml"),
              "[daemon]\nstate_directory = \"" + dir_.path() +
                  "\"\n[server]\nsocket = \"" + socket_path() +
                  "\"\n[runtime]\nmodel = \"" + dir_.File("model.tern") +
                  "\"\narena_mb = 32\nworkers = 2\n[device]\nid = \"" +
                  kDevice + "\"\n[ota]\nroot_file = \"" + dir_.File("root.pb") +
                  "\"\n" + ota_extra);
    DaemonOptions o;
    o.directory = dir_.path();
    o.config_path = dir_.File("ternd.toml");
    auto d = std::make_unique<DaemonProcess>(o);
    EXPECT_TRUE(d->WaitForNotify("READY=1")) << d->Log();
    return d;
  }

  std::string socket_path() const { return dir_.File("t.sock"); }

  std::unique_ptr<Client> Connect() {
    client::ClientOptions o;
    o.timeout_ms = 20000;
    Result<std::unique_ptr<Client>> c = Client::Connect(socket_path(), o);
    EXPECT_TRUE(c.ok()) << c.status().message();
    return c.ok() ? std::move(*c) : nullptr;
  }

  int RawConnect() {
    const int fd = ::ternd::testing::ConnectUnixSocket(socket_path());
    EXPECT_GE(fd, 0) << strerror(errno);
    return fd;
  }

  // A bundle whose release is signed by a fleet this device does not
  // trust: it parses, and the updater refuses it at once.
  std::string ForeignBundle() {
    TestFleet other("testfleet");
    SignedRelease r =
        other.Release(ModelBytes(Version(2)), "upnet", 2, 1, kDevice);
    return other.Bundle(r);
  }

  TempDir dir_;
  TestFleet fleet_;
};

// The refusal is decided while the daemon reads the install frame; the
// client stops reading (SHUT_RD) right after sending, so answering it
// fails and the connection closes. The answer must not be written (nor the
// connection closed) from inside the reading code: the daemon used to free
// the connection there and go on reading it (heap-use-after-free under
// AddressSanitizer).
TEST_F(InstallTest, RefusedInstallFromAClientThatStoppedReading) {
  auto d = Start();
  auto probe = Connect();
  const std::string ok = "ternd_requests_total{call=\"install\",status=\"OK\"}";
  for (int round = 1; round <= 5; ++round) {
    const int fd = RawConnect();
    const std::vector<uint8_t> frames =
        InstallFrames(round, ForeignBundle(), 1u << 20);
    ASSERT_EQ(send(fd, frames.data(), frames.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(frames.size()));
    ASSERT_EQ(shutdown(fd, SHUT_RD), 0);
    // The connection stays open (only its reading half is shut) until the
    // daemon has answered the refusal, and so found that it cannot.
    double answered = 0;
    for (int i = 0; i < 5000 && answered < round; ++i) {
      Result<wire::StatsResponse> s = probe->Stats(/*metrics=*/true);
      ASSERT_TRUE(s.ok()) << s.status().message() << "\n" << d->Log();
      answered = PrometheusValue(*s, ok);
      if (answered < round) usleep(2000);
    }
    ASSERT_EQ(answered, round) << "the refusal was not answered";
    close(fd);
  }
  ASSERT_TRUE(d->running()) << d->Log();
  auto c = Connect();
  Result<wire::UpdateStatusResponse> st = c->UpdateStatus();
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_EQ(st->state(), "rejected");
  EXPECT_EQ(c->ModelInfo()->version(), 1u);
}

// A bundle over the cap is refused once, and the connection ends: the rest
// of the bundle, still arriving, is not read as new requests (which were
// answered a second time, under the same id).
TEST_F(InstallTest, OversizedBundleIsRefusedOnceAndTheConnectionCloses) {
  auto d = Start("max_artifact_mb = 1\n");  // bundles up to 17 MiB
  const std::string bundle(18u << 20, 'b');
  const std::vector<uint8_t> frames = InstallFrames(7, bundle, 512u << 10);
  const int fd = RawConnect();
  // The daemon stops reading after the refusal: send from a thread, which
  // ends when the daemon hangs up.
  std::thread sender([&]() {
    size_t at = 0;
    while (at < frames.size()) {
      const ssize_t n =
          send(fd, frames.data() + at, frames.size() - at, MSG_NOSIGNAL);
      if (n <= 0) return;
      at += static_cast<size_t>(n);
    }
  });
  bool closed = false;
  std::vector<wire::Response> got = ReadUntilClosed(fd, 10000, &closed);
  shutdown(fd, SHUT_RDWR);
  sender.join();
  close(fd);
  EXPECT_TRUE(closed);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id(), 7u);
  EXPECT_EQ(got[0].status().code(), kResourceExhausted);
  EXPECT_THAT(got[0].status().message(), HasSubstr("ota.max_artifact_mb"));
  EXPECT_TRUE(Connect()->Health().ok());
}

// An install is answered when the update ends, after other calls were
// answered meanwhile; it is counted as an install all the same.
TEST_F(InstallTest, AnInstallAnsweredLaterIsCountedAsAnInstall) {
  auto d = Start();
  SignedRelease r =
      fleet_.Release(ModelBytes(Version(2)), "upnet", 2, 1, kDevice);
  auto installer = Connect();
  ASSERT_TRUE(installer != nullptr);
  wire::Request request;
  request.set_id(1);
  request.mutable_install()->set_part(fleet_.Bundle(r));
  ASSERT_TRUE(installer->Send(request).ok());
  // Other calls while the update runs; the last one the loop handles
  // before the install's answer is a model-info call.
  auto other = Connect();
  int infos = 0;
  struct pollfd p = {installer->fd(), POLLIN, 0};
  do {
    ASSERT_TRUE(other->ModelInfo().ok());
    ++infos;
  } while (poll(&p, 1, 0) == 0 && infos < 100000);
  wire::Response answer;
  ASSERT_TRUE(installer->Receive(&answer).ok());
  ASSERT_EQ(answer.update_status().state(), "active")
      << answer.update_status().reason();
  Result<wire::StatsResponse> s = other->Stats(/*metrics=*/true);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(PrometheusValue(
                *s, "ternd_requests_total{call=\"install\",status=\"OK\"}"),
            1);
  EXPECT_EQ(PrometheusValue(
                *s, "ternd_requests_total{call=\"model_info\",status=\"OK\"}"),
            infos);
}

// Peak resident set (VmHWM) of a process, in KiB.
long PeakRssKib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

// A large bundle costs the daemon one part of memory, not the bundle: it is
// spooled as it arrives and its artifact read back one chunk at a time.
// (It used to be held whole, and copied: a 2 GiB bundle peaked at 2.2 GB.)
// Here a 96 MiB artifact whose last chunk is not the one its release
// signs: read to its end, then refused before anything is recorded.
TEST_F(InstallTest, LargeBundleIsStreamedInBoundedMemory) {
  auto d = Start("max_artifact_mb = 128\n");
  SignedRelease r =
      fleet_.Release(ModelBytes(Version(2)), "upnet", 2, 1, kDevice);
  constexpr uint64_t kChunk = 1 << 20;
  std::string artifact(96u << 20, '\0');
  std::mt19937_64 rng(7);
  for (size_t i = 0; i < artifact.size(); i += 8) {
    const uint64_t v = rng();
    std::memcpy(&artifact[i], &v, 8);
  }
  ota::Release release = r.release;
  release.set_artifact_length(artifact.size());
  release.set_artifact_sha256(ota::Sha256(artifact));
  release.set_chunk_size(kChunk);
  release.clear_chunk_sha256();
  for (uint64_t at = 0; at < artifact.size(); at += kChunk) {
    release.add_chunk_sha256(
        ota::Sha256(std::string_view(artifact).substr(at, kChunk)));
  }
  artifact.back() ^= 1;  // the last chunk is not the signed one
  ota::Bundle b;
  b.set_format_version(ota::kBundleFormatVersion);
  b.add_roots(fleet_.RootEnvelope(1));
  b.set_release(fleet_.Sign(release));
  b.set_artifact(std::move(artifact));
  const std::string bundle = b.SerializeAsString();
  b.Clear();

  const long before = PeakRssKib(d->pid());
  ASSERT_GT(before, 0);
  client::ClientOptions o;
  o.timeout_ms = 60000;
  Result<std::unique_ptr<Client>> c = Client::Connect(socket_path(), o);
  ASSERT_TRUE(c.ok());
  Result<wire::UpdateStatusResponse> u = (*c)->Install(bundle);
  ASSERT_FALSE(u.ok());
  EXPECT_THAT(u.status().message(),
              HasSubstr("artifact chunk 95 (offset 99614720) does not match"));
  const long growth_mib = (PeakRssKib(d->pid()) - before) / 1024;
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer keeps freed memory aside (its quarantine) instead of
  // reusing it, so the peak says nothing here; the plain build measures it.
  std::printf(
      "note: peak memory not checked under AddressSanitizer (%ld MiB)\n",
      growth_mib);
#else
  EXPECT_LT(growth_mib, 24)
      << "the daemon's peak memory grew by " << growth_mib << " MiB for a "
      << bundle.size() / (1 << 20) << " MiB bundle";
#endif
  // Refused before trust recorded anything; the daemon serves on.
  Result<wire::UpdateStatusResponse> st = Connect()->UpdateStatus();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state(), "idle");
  EXPECT_EQ(Connect()->ModelInfo()->version(), 1u);
}

}  // namespace
}  // namespace ternd::daemon_testing
