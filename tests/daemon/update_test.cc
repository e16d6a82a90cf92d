// Signed updates end to end on the real daemon: offline bundles through
// `Install` (what `ternctl install` sends), refusals with their reasons,
// hot swap under load with no failed request, restarts that serve the
// installed model, SIGKILL in every update state, and probation rollback.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <thread>

#include "daemon/client/client.h"
#include "ota/state_store.h"
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

TestModelSpec Version(uint64_t v, uint32_t seed = 0) {
  TestModelSpec s = FastModel();
  s.name = "upnet";
  s.version = v;
  s.seed = seed ? seed : static_cast<uint32_t>(10 + v);
  return s;
}

// Polls `done` until it holds or `timeout_ms` passes, for conditions no
// event announces (a counter of another thread, a state behind the socket).
bool WaitUntil(const std::function<bool()>& done, int timeout_ms) {
  const auto end =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

class UpdateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(WriteTestModel(Version(1), dir_.File("model.tern")).ok());
    WriteText(dir_.File("root.pb"), fleet_.RootEnvelope(1));
    WriteConfig();
  }

  void WriteConfig(const std::string& ota_extra = "") {
    WriteText(dir_.File("ternd.toml"),
              "[daemon]\nstate_directory = \"" + dir_.path() +
                  "\"\n[server]\nsocket = \"" + socket_path() +
                  "\"\n[runtime]\nmodel = \"" + dir_.File("model.tern") +
                  "\"\narena_mb = 32\nworkers = 2\n[device]\nid = \"" +
                  kDevice + "\"\ngroups = [\"lab\"]\n[ota]\nroot_file = \"" +
                  dir_.File("root.pb") + "\"\n" + ota_extra);
  }

  std::string socket_path() const { return dir_.File("t.sock"); }

  std::unique_ptr<DaemonProcess> Start(std::vector<std::string> env = {}) {
    DaemonOptions o;
    o.directory = dir_.path();
    o.config_path = dir_.File("ternd.toml");
    o.extra_env = std::move(env);
    auto d = std::make_unique<DaemonProcess>(o);
    EXPECT_TRUE(d->WaitForNotify("READY=1")) << d->Log();
    return d;
  }

  std::unique_ptr<Client> Connect() {
    client::ClientOptions o;
    o.timeout_ms = 20000;
    Result<std::unique_ptr<Client>> c = Client::Connect(socket_path(), o);
    EXPECT_TRUE(c.ok()) << c.status().message();
    return c.ok() ? std::move(*c) : nullptr;
  }

  Result<wire::UpdateStatusResponse> Install(const std::string& bundle) {
    return Connect()->Install(bundle, 1000);  // many parts
  }

  std::string Served() {
    Result<wire::ModelInfoResponse> i = Connect()->ModelInfo();
    EXPECT_TRUE(i.ok());
    return i.ok() ? i->name() + " v" + std::to_string(i->version()) : "";
  }

  // Installs `version` and expects it active.
  void InstallVersion(uint64_t version, uint64_t sequence) {
    SignedRelease r = fleet_.Release(ModelBytes(Version(version)), "upnet",
                                     version, sequence, kDevice);
    Result<wire::UpdateStatusResponse> u = Install(fleet_.Bundle(r));
    ASSERT_TRUE(u.ok()) << u.status().message();
    ASSERT_EQ(u->state(), "active") << u->reason();
  }

  TempDir dir_;
  TestFleet fleet_;
};

TEST_F(UpdateTest, BundleInstallsAndTheDeviceKeepsServingIt) {
  auto d = Start();
  EXPECT_EQ(Served(), "upnet v1");
  Result<wire::UpdateStatusResponse> st = Connect()->UpdateStatus();
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(st->enabled());
  EXPECT_EQ(st->state(), "idle");

  SignedRelease r =
      fleet_.Release(ModelBytes(Version(2)), "upnet", 2, 1, kDevice);
  Result<wire::UpdateStatusResponse> u = Install(fleet_.Bundle(r));
  ASSERT_TRUE(u.ok()) << u.status().message();
  EXPECT_EQ(u->state(), "active") << u->reason();
  EXPECT_EQ(u->state_code(), 7);
  EXPECT_EQ(u->model_version(), 2u);
  EXPECT_EQ(u->rollout_id(), "rollout-1");
  EXPECT_EQ(u->active().version(), 2u);
  EXPECT_TRUE(u->probation());
  EXPECT_EQ(Served(), "upnet v2");
  EXPECT_TRUE(d->WaitForNotify("Update to 'upnet' version 2: active"));

  // A clean restart serves the installed model, verified from the store.
  d->Signal(SIGTERM);
  ASSERT_EQ(d->WaitExit(), 0) << d->Log();
  d = Start();
  EXPECT_EQ(Served(), "upnet v2");
  EXPECT_THAT(d->Log(),
              HasSubstr("serving installed update 'upnet' version 2"));
  st = Connect()->UpdateStatus();
  EXPECT_EQ(st->active().version(), 2u);
}

TEST_F(UpdateTest, TernctlInstallAndStatus) {
  auto d = Start();
  SignedRelease r =
      fleet_.Release(ModelBytes(Version(2)), "upnet", 2, 1, kDevice);
  WriteText(dir_.File("u.ternbundle"), fleet_.Bundle(r));
  auto run = [&](const std::string& args, std::string* out) {
    const std::string cmd = std::string(TERNCTL_PATH) + " " + args + " -s " +
                            socket_path() + " > " + dir_.File("out") + " 2>&1";
    const int rc = std::system(cmd.c_str());
    *out = ReadText(dir_.File("out"));
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  std::string out;
  EXPECT_EQ(run("install " + dir_.File("u.ternbundle"), &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("update      active (7) 'upnet' version 2"));
  // The first update has no previous update: a rollback returns to the
  // configured model, and status says so.
  EXPECT_THAT(out,
              HasSubstr("rollback to the configured model (runtime.model " +
                        dir_.File("model.tern") + ")"));
  EXPECT_EQ(run("status --json", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("\"previous_configured\":\"" +
                             dir_.File("model.tern") + "\""));
  EXPECT_THAT(out, HasSubstr("\"state\":\"active\""));
  EXPECT_THAT(out, HasSubstr("\"active\":{\"name\":\"upnet\",\"version\":2"));
  // The same bundle again: refused (not newer), exit 1 with the reason.
  EXPECT_EQ(run("install " + dir_.File("u.ternbundle"), &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("rejected (2)"));
  EXPECT_THAT(out, HasSubstr("not_newer"));
  EXPECT_EQ(run("status", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("installed   'upnet' version 2 (on probation)"));
}

TEST_F(UpdateTest, RefusalsSayWhyAndChangeNothing) {
  auto d = Start();
  InstallVersion(2, 5);
  auto expect_rejected = [&](const std::string& bundle,
                             const std::string& why) {
    Result<wire::UpdateStatusResponse> u = Install(bundle);
    ASSERT_TRUE(u.ok()) << u.status().message();
    EXPECT_EQ(u->state(), "rejected");
    EXPECT_THAT(u->reason(), HasSubstr(why));
    EXPECT_EQ(Served(), "upnet v2");
  };
  // Not newer than installed (anti-rollback).
  expect_rejected(fleet_.Bundle(fleet_.Release(ModelBytes(Version(2)), "upnet",
                                               2, 6, kDevice)),
                  "not_newer");
  // An older sequence (replay of an old manifest).
  expect_rejected(fleet_.Bundle(fleet_.Release(ModelBytes(Version(3)), "upnet",
                                               3, 4, kDevice)),
                  "replay");
  // Another device.
  expect_rejected(fleet_.Bundle(fleet_.Release(ModelBytes(Version(3)), "upnet",
                                               3, 7, "robot-2")),
                  "not_for_this_device");
  // Signed by a key the root does not list.
  TestFleet other;
  other.RootEnvelope(1);
  expect_rejected(other.Bundle(other.Release(ModelBytes(Version(3)), "upnet", 3,
                                             8, kDevice)),
                  "bad_signature");
  // Expired.
  SignedRelease old =
      fleet_.Release(ModelBytes(Version(3)), "upnet", 3, 9, kDevice);
  old.release.set_expires(fleet_.now() - 30 * 86400);
  old.release.set_issued(fleet_.now() - 40 * 86400);
  old.envelope = fleet_.Sign(old.release);
  expect_rejected(fleet_.Bundle(old), "expired");
  // A tampered artifact (one bit) is refused before anything is stored.
  SignedRelease t =
      fleet_.Release(ModelBytes(Version(3)), "upnet", 3, 10, kDevice);
  ota::Bundle tampered;
  ASSERT_TRUE(tampered.ParseFromString(fleet_.Bundle(t)));
  (*tampered.mutable_artifact())[t.artifact.size() / 2] ^= 1;
  Result<wire::UpdateStatusResponse> u = Install(tampered.SerializeAsString());
  ASSERT_FALSE(u.ok());
  EXPECT_THAT(u.status().message(), HasSubstr("artifact"));
  EXPECT_EQ(Served(), "upnet v2");
  if (HasFailure()) ADD_FAILURE() << d->Log();
  // After all that, a good update still installs.
  InstallVersion(3, 11);
  EXPECT_EQ(Served(), "upnet v3");
}

TEST_F(UpdateTest, ModelFailingItsHealthCheckIsNotActivated) {
  auto d = Start();
  TestModelSpec bad = Version(2);
  bad.wrong_golden = true;
  SignedRelease r = fleet_.Release(ModelBytes(bad), "upnet", 2, 1, kDevice);
  Result<wire::UpdateStatusResponse> u = Install(fleet_.Bundle(r));
  ASSERT_TRUE(u.ok()) << u.status().message();
  EXPECT_EQ(u->state(), "failed");
  EXPECT_THAT(u->reason(), HasSubstr("golden health check failed"));
  EXPECT_EQ(Served(), "upnet v1");
  // A model without a golden pair cannot be health-checked: refused too.
  TestModelSpec bare = Version(3);
  bare.golden = false;
  u = Install(
      fleet_.Bundle(fleet_.Release(ModelBytes(bare), "upnet", 3, 2, kDevice)));
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->state(), "failed");
  EXPECT_THAT(u->reason(), HasSubstr("no golden input/output pair"));
  EXPECT_EQ(Served(), "upnet v1");
}

TEST_F(UpdateTest, HotSwapUnderLoadFailsNoRequest) {
  auto d = Start();
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::thread load([&] {
    auto c = Connect();
    wire::InferRequest req;
    const TestModelSpec spec = Version(1);
    client::AddF32Input(&req, "x", 1, spec.inputs, TestInput(spec, 1, 1));
    while (!stop) {
      Result<wire::InferResponse> r = c->Infer(req);
      (r.ok() ? ok : failed)++;
    }
  });
  auto served = [&](int n) {
    return WaitUntil([&] { return ok >= n || failed > 0; }, 30000) && ok >= n;
  };
  if (!served(50)) {
    stop = true;
    load.join();
    FAIL() << "50 inferences before the update did not succeed within 30 s ("
           << ok << " ok, " << failed << " failed)\n"
           << d->Log();
  }
  InstallVersion(2, 1);
  const int before = ok;
  const bool served_after = served(before + 50);
  stop = true;
  load.join();
  ASSERT_TRUE(served_after)
      << "50 inferences after the swap did not succeed within 30 s (" << ok
      << " ok, " << failed << " failed)\n"
      << d->Log();
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(Served(), "upnet v2");
  EXPECT_THAT(d->Log(), HasSubstr("swap took"));
}

TEST_F(UpdateTest, RootRotationOnDayOneReplacesTheReleaseKey) {
  auto d = Start();
  const ota::Ed25519KeyPair old_release = fleet_.release_key();
  fleet_.RotateReleaseKey();
  // Root 2 lists the new release key; the bundle carries roots 1 and 2.
  SignedRelease r =
      fleet_.Release(ModelBytes(Version(2)), "upnet", 2, 1, kDevice);
  Result<wire::UpdateStatusResponse> u = Install(fleet_.Bundle(r, 2));
  ASSERT_TRUE(u.ok()) << u.status().message();
  EXPECT_EQ(u->state(), "active") << u->reason();
  EXPECT_THAT(d->Log(), HasSubstr("root of trust rotated to version 2"));
  // The rotation was persisted: after a restart a release signed by the
  // old (revoked) key is refused even without the chain in the bundle.
  d->Signal(SIGTERM);
  ASSERT_EQ(d->WaitExit(), 0);
  d = Start();
  EXPECT_THAT(d->Log(), HasSubstr("version 2"));
  TestFleet& f = fleet_;
  SignedRelease stale =
      f.Release(ModelBytes(Version(3)), "upnet", 3, 2, kDevice);
  // Re-signed with the revoked key.
  const std::string payload = stale.release.SerializeAsString();
  Result<ota::SignedEnvelope> env = ota::SignEnvelope(
      "release",
      {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()},
      std::vector<ota::Ed25519KeyPair>{old_release});
  ASSERT_TRUE(env.ok());
  stale.envelope = env->SerializeAsString();
  u = Install(fleet_.Bundle(stale, 1));
  ASSERT_TRUE(u.ok()) << u.status().message();
  EXPECT_EQ(u->state(), "rejected");
  EXPECT_THAT(u->reason(), HasSubstr("bad_signature"));
  EXPECT_EQ(Served(), "upnet v2");
}

TEST_F(UpdateTest, FastForwardedSequenceIsRecoveredByRootRotation) {
  auto d = Start();
  // The release key leaks; the attacker ships v2 with an absurd sequence.
  InstallVersion(2, uint64_t{1} << 62);
  // Honest releases are now replays...
  SignedRelease honest =
      fleet_.Release(ModelBytes(Version(3)), "upnet", 3, 1000, kDevice);
  Result<wire::UpdateStatusResponse> u = Install(fleet_.Bundle(honest));
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->state(), "rejected");
  EXPECT_THAT(u->reason(), HasSubstr("replay"));
  // ...until the fleet rotates the release key (root 2 in the bundle).
  fleet_.RotateReleaseKey();
  honest = fleet_.Release(ModelBytes(Version(3)), "upnet", 3, 1000, kDevice);
  u = Install(fleet_.Bundle(honest, 2));
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->state(), "active") << u->reason();
  EXPECT_EQ(Served(), "upnet v3");
}

#if TERND_FAULT_INJECTION
// SIGKILL at each recorded state: the daemon comes back serving a verified
// model, and the update is finished or reported failed, never half-done.
class KillDuringUpdateTest : public UpdateTest,
                             public ::testing::WithParamInterface<const char*> {
};

TEST_P(KillDuringUpdateTest, ComesBackServingAVerifiedModel) {
  const std::string state = GetParam();
  {
    auto d = Start({"TERND_FAULT_KILL_AT_UPDATE_STATE=" + state});
    SignedRelease r =
        fleet_.Release(ModelBytes(Version(2)), "upnet", 2, 1, kDevice);
    Result<wire::UpdateStatusResponse> u = Install(fleet_.Bundle(r));
    EXPECT_FALSE(u.ok());  // the daemon died before answering
    EXPECT_EQ(d->WaitExit(), 128 + SIGKILL) << d->Log();
  }
  auto d = Start();
  // The resumed update ends active, or failed with a reason.
  std::optional<wire::UpdateStatusResponse> st;
  std::string error;
  const bool finished = WaitUntil(
      [&] {
        Result<wire::UpdateStatusResponse> now = Connect()->UpdateStatus();
        if (!now.ok()) {
          error = now.status().message();
          return true;
        }
        st = std::move(*now);
        return st->state() == "active" || st->state() == "failed";
      },
      30000);
  ASSERT_TRUE(error.empty()) << "UpdateStatus: " << error << "\n" << d->Log();
  ASSERT_TRUE(finished) << "the resumed update is still '" << st->state()
                        << "' after 30 s, expected active or failed\n"
                        << d->Log();
  const std::string served = Served();
  if (st->state() == "active") {
    EXPECT_EQ(served, "upnet v2") << d->Log();
  } else {
    EXPECT_EQ(st->state(), "failed") << d->Log();
    EXPECT_FALSE(st->reason().empty());
    EXPECT_EQ(served, "upnet v1");
  }
  // Killed before the artifact was complete: reported; from verifying on:
  // finished.
  if (state != "received" && state != "downloading") {
    EXPECT_EQ(st->state(), "active") << st->reason() << "\n" << d->Log();
  }
  // Either way the device takes the next update.
  if (st->state() != "active") InstallVersion(2, 2);
  EXPECT_EQ(Served(), "upnet v2");
}

INSTANTIATE_TEST_SUITE_P(EveryState, KillDuringUpdateTest,
                         ::testing::Values("received", "downloading",
                                           "verifying", "staged", "activating",
                                           "active"));
#else
// A build without the fault seams (Release: the packages) ignores the
// variable the kill tests above use.
TEST_F(UpdateTest, KillAtStateSeamIsNotInThisBuild) {
  auto d = Start({"TERND_FAULT_KILL_AT_UPDATE_STATE=received"});
  InstallVersion(2, 1);
  EXPECT_TRUE(d->running()) << d->Log();
  EXPECT_EQ(Served(), "upnet v2");
  EXPECT_THAT(d->Log(), ::testing::Not(HasSubstr("killing myself")));
}
#endif  // TERND_FAULT_INJECTION

TEST_F(UpdateTest, CrashesDuringProbationRollBackOnce) {
  WriteConfig("probation_s = 3600\nprobation_crashes = 2\n");
  {
    auto d = Start();
    InstallVersion(2, 1);
    InstallVersion(3, 2);
    EXPECT_EQ(Served(), "upnet v3");
    d->Signal(SIGKILL);  // crash 1
    d->WaitExit();
  }
  {
    auto d = Start();
    EXPECT_EQ(Served(), "upnet v3");  // one crash is not enough
    d->Signal(SIGKILL);               // crash 2
    d->WaitExit();
  }
  auto d = Start();
  EXPECT_EQ(Served(), "upnet v2");
  Result<wire::UpdateStatusResponse> st = Connect()->UpdateStatus();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->state(), "rolled_back");
  EXPECT_THAT(st->reason(), HasSubstr("stopped unexpectedly 2 times"));
  EXPECT_EQ(st->active().version(), 2u);
  EXPECT_FALSE(st->has_previous());  // no second rollback target: no loop
  // v2 is not on probation: more crashes do not move it.
  d->Signal(SIGKILL);
  d->WaitExit();
  d = Start();
  d->Signal(SIGKILL);
  d->WaitExit();
  d = Start();
  EXPECT_EQ(Served(), "upnet v2");
  // A clean stop during probation is not a crash.
  InstallVersion(4, 3);
  d->Signal(SIGTERM);
  EXPECT_EQ(d->WaitExit(), 0);
  d = Start();
  d->Signal(SIGTERM);
  EXPECT_EQ(d->WaitExit(), 0);
  d = Start();
  EXPECT_EQ(Served(), "upnet v4");
}

TEST_F(UpdateTest, CacheKeepsTheActiveAndThePreviousModel) {
  WriteConfig("cache_mb = 0\n");
  auto d = Start();
  std::vector<std::string> artifacts;
  for (uint64_t v = 2; v <= 4; ++v) {
    SignedRelease r =
        fleet_.Release(ModelBytes(Version(v)), "upnet", v, v, kDevice);
    artifacts.push_back(r.release.artifact_sha256());
    Result<wire::UpdateStatusResponse> u = Install(fleet_.Bundle(r));
    ASSERT_TRUE(u.ok());
    ASSERT_EQ(u->state(), "active") << u->reason();
  }
  TestModelSpec bad = Version(5);
  bad.wrong_golden = true;
  SignedRelease failed =
      fleet_.Release(ModelBytes(bad), "upnet", 5, 5, kDevice);
  ASSERT_EQ(Install(fleet_.Bundle(failed))->state(), "failed");
  d->Signal(SIGTERM);
  ASSERT_EQ(d->WaitExit(), 0);
  auto store = ota::StateStore::Open(dir_.File("state.db"));
  ASSERT_TRUE(store.ok());
  Result<std::vector<ota::StateStore::StoredArtifact>> kept =
      (*store)->Artifacts();
  ASSERT_TRUE(kept.ok());
  std::vector<std::string> ids;
  for (const auto& a : *kept) ids.push_back(a.sha256);
  // v4 (active) and v3 (previous); v2 and the failed v5 are gone.
  EXPECT_THAT(ids, ::testing::UnorderedElementsAre(artifacts[2], artifacts[1]));
}

// A full disk (a small tmpfs holding the state directory) fails the update
// with a clear reason and leaves the old model serving; the database is not
// damaged: once there is room again, the next update installs. The tmpfs
// holds the spooled bundle but not its chunks as well: the database fills.
TEST_F(UpdateTest, FullDiskFailsTheUpdateAndKeepsServing) {
  TestModelSpec big = SlowModel();
  big.name = "upnet";
  big.version = 2;
  SignedRelease r = fleet_.Release(ModelBytes(big), "upnet", 2, 1, kDevice);
  const std::string bundle = fleet_.Bundle(r);
  const std::string state = dir_.File("state");
  ASSERT_EQ(mkdir(state.c_str(), 0700), 0);
  const std::string size =
      "size=" + std::to_string(bundle.size() * 3 / 2 / 4096 * 4096);
  if (mount("tmpfs", state.c_str(), "tmpfs", 0, size.c_str()) != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (" << strerror(errno)
                 << "); this test needs root";
  }
  struct Unmount {
    std::string path;
    ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
  } unmount{state};
  std::string toml = ReadText(dir_.File("ternd.toml"));
  const std::string from = "state_directory = \"" + dir_.path() + "\"";
  toml.replace(toml.find(from), from.size(),
               "state_directory = \"" + state + "\"");
  WriteText(dir_.File("ternd.toml"), toml);
  auto d = Start();
  Result<wire::UpdateStatusResponse> u = Install(bundle);
  ASSERT_TRUE(u.ok()) << u.status().message();
  EXPECT_EQ(u->state(), "failed");
  EXPECT_THAT(u->reason(), HasSubstr("full"));
  EXPECT_THAT(u->reason(), HasSubstr(state));
  EXPECT_EQ(Served(), "upnet v1");
  // The daemon keeps serving and answering.
  Result<wire::HealthResponse> h = Connect()->Health();
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->ready());
  // Once there is room again (here: a bigger tmpfs), the next update
  // installs: the state database was not damaged.
  ASSERT_EQ(mount("tmpfs", state.c_str(), "tmpfs", MS_REMOUNT, "size=64m"), 0)
      << strerror(errno);
  InstallVersion(3, 2);
  EXPECT_EQ(Served(), "upnet v3");
  d->Signal(SIGTERM);
  EXPECT_EQ(d->WaitExit(), 0);
}

TEST_F(UpdateTest, WithoutARootUpdatesAreOffAndSaySo) {
  WriteText(dir_.File("ternd.toml"),
            "[server]\nsocket = \"" + socket_path() +
                "\"\n[runtime]\nmodel = \"" + dir_.File("model.tern") +
                "\"\n[ota]\nroot_file = \"" + dir_.File("missing.pb") +
                "\"\n[daemon]\nstate_directory = \"" + dir_.path() + "\"\n");
  auto d = Start();
  Result<wire::UpdateStatusResponse> st = Connect()->UpdateStatus();
  ASSERT_TRUE(st.ok());
  EXPECT_FALSE(st->enabled());
  EXPECT_THAT(st->disabled_reason(), HasSubstr("missing.pb"));
  Result<wire::UpdateStatusResponse> u = Install("whatever");
  ASSERT_FALSE(u.ok());
  EXPECT_THAT(u.status().message(), HasSubstr("updates are off"));
  EXPECT_EQ(Served(), "upnet v1");
}

}  // namespace
}  // namespace ternd::daemon_testing
