// The fleet operator's commands as an operator runs them (the real ternctl
// binary), and what a device does with their output: every signed file
// goes through ota/trust.h exactly as the daemon calls it.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zstd.h>

#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ota/bundle.h"
#include "ota/keys.h"
#include "ota/signing.h"
#include "ota/trust.h"
#include "tests/fleet/fleet_harness.h"

namespace ternd::fleet_testing {
namespace {

using ota::RejectReason;
using Json = nlohmann::json;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

// A `--json` output: one JSON object and a newline, nothing else.
Json ParseJson(const std::string& out) {
  EXPECT_FALSE(out.empty());
  EXPECT_EQ(out.find('\n'), out.size() - 1) << out;
  Json j = Json::parse(out, nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(j.is_object()) << out;
  return j.is_object() ? j : Json::object();
}

class FleetCliTest : public ::testing::Test {
 protected:
  // Runs ternctl in the test's directory and expects success.
  CmdResult Ok(const std::string& args) {
    CmdResult r = Ternctl(args, dir_.path());
    EXPECT_EQ(r.exit_code, 0) << "ternctl " << args << "\n" << r.all();
    return r;
  }
  // Runs ternctl and expects the error exit code.
  CmdResult Fails(const std::string& args) {
    CmdResult r = Ternctl(args, dir_.path());
    EXPECT_EQ(r.exit_code, 1) << "ternctl " << args << "\n" << r.all();
    return r;
  }
  std::string File(const std::string& name) { return dir_.File(name); }
  std::string Read(const std::string& name) { return ReadBytes(File(name)); }

  void Keygen(const std::string& name) { Ok("keygen --out " + name); }

  // root-1.pb: root key r1, release key rel, timestamp key ts.
  void MakeFleet() {
    for (const char* k : {"r1", "rel", "ts"}) Keygen(k);
    Ok("root --fleet acme --root-key r1.pub --release-key rel.pub "
       "--timestamp-key ts.pub --sign r1.key --out root-1.pb");
  }

  // Signs model `name` v`version` for group warehouse with `keys`.
  std::string SignModel(const std::string& name, uint64_t version,
                        const std::string& keys, uint64_t sequence,
                        const std::string& extra = "") {
    WriteModel(File(name + ".tern"), name, version);
    Ok("sign " + name +
       ".tern --url https://updates.example/m/ "
       "--target-group warehouse " +
       keys + " --sequence " + std::to_string(sequence) + " --out-dir out " +
       extra);
    return Read("out/" + name + "-" + std::to_string(version) + ".release.pb");
  }

  ota::TrustState Pin(const std::string& root_file) {
    auto s = ota::TrustFromPinnedRoot(Read(root_file));
    EXPECT_TRUE(s.ok()) << s.status().message();
    return s.ok() ? *s : ota::TrustState{};
  }

  RejectReason Check(ota::TrustState& state, const std::string& envelope,
                     uint64_t installed = 0, int64_t now = 0) {
    RejectReason reason;
    auto r = ota::AcceptRelease(state, envelope, device_, installed, policy_,
                                now ? now : Now(), &reason);
    EXPECT_EQ(r.ok(), reason == RejectReason::kNone) << r.status().message();
    return reason;
  }

  TempDir dir_;
  ota::DeviceIdentity device_{"robot-7", {"warehouse"}};
  ota::TrustPolicy policy_ = [] {
    ota::TrustPolicy p;
    p.runtime_version = "0.1.0";
    return p;
  }();
};

TEST_F(FleetCliTest, KeygenWritesAPrivateKeyOnlyTheOwnerReadsAndAPublicKey) {
  CmdResult r = Ok("keygen --out k1 --json");
  struct stat st;
  ASSERT_EQ(::stat(File("k1.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto key = ota::ReadPrivateKeyFile(File("k1.key"));
  ASSERT_TRUE(key.ok()) << key.status().message();
  auto pub = ota::ReadPublicKeyFile(File("k1.pub"));
  ASSERT_TRUE(pub.ok()) << pub.status().message();
  EXPECT_EQ(*pub, key->public_key);
  EXPECT_TRUE(Contains(r.out, "\"key_id\":\"" + ota::KeyId(*pub) + "\""))
      << r.out;
  const Json j = ParseJson(r.out);
  EXPECT_EQ(j.value("key_id", ""), ota::KeyId(*pub));
  EXPECT_EQ(j.value("private_key", ""), "k1.key");
  EXPECT_EQ(j.value("public_key", ""), "k1.pub");
  EXPECT_TRUE(Contains(Read("k1.key"), "-----BEGIN PRIVATE KEY-----"));
  EXPECT_TRUE(Contains(Read("k1.pub"), "-----BEGIN PUBLIC KEY-----"));

  // No silent overwrite: the key must survive a repeated command.
  const std::string before = Read("k1.key");
  CmdResult again = Fails("keygen --out k1");
  EXPECT_TRUE(Contains(again.err, "k1.key already exists; pass --force"))
      << again.err;
  EXPECT_EQ(Read("k1.key"), before);
  Ok("keygen --out k1 --force");
  EXPECT_NE(Read("k1.key"), before);
  // Two keys are different keys.
  Ok("keygen --out k2");
  EXPECT_NE(Read("k2.pub"), Read("k1.pub"));
}

TEST_F(FleetCliTest, KeysAreTheFormatsOpensslUses) {
  Keygen("k");
  const std::string pub = File("k.pub");
  const std::string derived = File("derived.pub");
  ASSERT_EQ(std::system(("openssl pkey -in '" + File("k.key") +
                         "' -pubout -out '" + derived + "' 2>/dev/null")
                            .c_str()),
            0);
  EXPECT_EQ(ReadBytes(derived), ReadBytes(pub));
  // A key made by openssl is usable by ternctl.
  ASSERT_EQ(
      std::system(("openssl genpkey -algorithm ed25519 -out '" + File("o.key") +
                   "' 2>/dev/null && chmod 600 '" + File("o.key") + "'")
                      .c_str()),
      0);
  EXPECT_TRUE(ota::ReadPrivateKeyFile(File("o.key")).ok());
  // An RSA key is refused by type.
  ASSERT_EQ(std::system(("openssl genpkey -algorithm rsa -pkeyopt "
                         "rsa_keygen_bits:1024 -out '" +
                         File("rsa.key") + "' 2>/dev/null && chmod 600 '" +
                         File("rsa.key") + "'")
                            .c_str()),
            0);
  auto rsa = ota::ReadPrivateKeyFile(File("rsa.key"));
  ASSERT_FALSE(rsa.ok());
  EXPECT_TRUE(Contains(rsa.status().message(), "is RSA, expected ED25519"))
      << rsa.status().message();
}

TEST_F(FleetCliTest, KeygenRootSignAcceptedByADevice) {
  MakeFleet();
  CmdResult shown = Ok("root show root-1.pb --json");
  EXPECT_TRUE(Contains(shown.out, "\"fleet\":\"acme\",\"version\":1"))
      << shown.out;
  EXPECT_TRUE(Contains(shown.out, "\"self_signed\":true")) << shown.out;
  const Json root = ParseJson(shown.out);
  EXPECT_EQ(root.value("file", ""), "root-1.pb");
  EXPECT_EQ(root.value("fleet", ""), "acme");
  EXPECT_EQ(root.value("version", 0), 1);
  EXPECT_GT(root.value("expires", int64_t{0}), Now());
  ASSERT_TRUE(root["keys"].is_array());
  EXPECT_EQ(root["keys"].size(), 3u);
  EXPECT_EQ(root["root"].value("threshold", 0), 1);
  ASSERT_EQ(root["root"]["key_ids"].size(), 1u);
  EXPECT_EQ(root["signatures"], Json::array({root["root"]["key_ids"][0]}));
  EXPECT_EQ(root.value("self_signed", false), true);

  WriteModel(File("m.tern"), "sensor", 3);
  CmdResult r =
      Ok("sign m.tern --url https://updates.example/models "
         "--url https://mirror.example/x/sensor.tern.zst "
         "--target-group warehouse --target-device robot-9 --days 10 "
         "--rollout spring --min-runtime 0.1.0 --chunk-size 4096 "
         "--key rel.key --out-dir out/ --root root-1.pb --json");
  // "out/" names the directory once in what is printed.
  EXPECT_NE(r.out.find("out/sensor-3.tern.zst"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("out//"), std::string::npos) << r.out;
  const std::string model = Read("m.tern");
  const std::string artifact = Read("out/sensor-3.tern.zst");
  const std::string envelope = Read("out/sensor-3.release.pb");
  ASSERT_FALSE(artifact.empty());
  ASSERT_FALSE(envelope.empty());

  ota::TrustState state = Pin("root-1.pb");
  RejectReason reason;
  const int64_t now = Now();
  auto accepted =
      ota::AcceptRelease(state, envelope, device_, 2, policy_, now, &reason);
  ASSERT_TRUE(accepted.ok()) << accepted.status().message();
  const ota::Release& rel = *accepted;
  // What --json says is what was signed.
  const Json signed_json = ParseJson(r.out);
  EXPECT_EQ(signed_json.value("release", ""), "out/sensor-3.release.pb");
  EXPECT_EQ(signed_json.value("artifact", ""), "out/sensor-3.tern.zst");
  EXPECT_EQ(signed_json.value("model", ""), "sensor");
  EXPECT_EQ(signed_json.value("version", 0), 3);
  EXPECT_EQ(signed_json.value("sequence", uint64_t{0}), rel.sequence());
  EXPECT_EQ(signed_json.value("artifact_length", size_t{0}), artifact.size());
  EXPECT_EQ(signed_json.value("artifact_sha256", ""),
            ota::Hex(Sha256(artifact)));
  EXPECT_EQ(signed_json.value("chunks", 0), rel.chunk_sha256_size());
  EXPECT_EQ(signed_json["urls"], Json::array({rel.urls(0), rel.urls(1)}));
  EXPECT_EQ(signed_json["target_devices"], Json::array({"robot-9"}));
  EXPECT_EQ(signed_json["target_groups"], Json::array({"warehouse"}));
  EXPECT_EQ(signed_json.value("rollout_id", ""), "spring");
  EXPECT_EQ(signed_json.value("expires", int64_t{0}), rel.expires());
  EXPECT_EQ(rel.model_name(), "sensor");
  EXPECT_EQ(rel.model_version(), 3u);
  EXPECT_EQ(rel.rollout_id(), "spring");
  EXPECT_EQ(rel.min_runtime_version(), "0.1.0");
  ASSERT_EQ(rel.urls_size(), 2);
  EXPECT_EQ(rel.urls(0), "https://updates.example/models/sensor-3.tern.zst");
  EXPECT_EQ(rel.urls(1), "https://mirror.example/x/sensor.tern.zst");
  EXPECT_NEAR(rel.expires() - rel.issued(), 10 * 86400, 5);
  EXPECT_NEAR(rel.issued(), now, 120);
  // Hashes and lengths describe the files, computed independently here.
  EXPECT_EQ(rel.artifact_length(), artifact.size());
  EXPECT_EQ(rel.artifact_sha256(), Sha256(artifact));
  EXPECT_EQ(rel.model_length(), model.size());
  EXPECT_EQ(rel.model_sha256(), Sha256(model));
  EXPECT_EQ(rel.chunk_size(), 4096u);
  ASSERT_EQ(static_cast<size_t>(rel.chunk_sha256_size()),
            (artifact.size() + 4095) / 4096);
  for (int i = 0; i < rel.chunk_sha256_size(); ++i) {
    EXPECT_EQ(rel.chunk_sha256(i),
              Sha256(artifact.substr(static_cast<size_t>(i) * 4096, 4096)))
        << "chunk " << i;
  }
  // The artifact is the model, zstd-compressed.
  std::string back(model.size(), '\0');
  const size_t n = ZSTD_decompress(back.data(), back.size(), artifact.data(),
                                   artifact.size());
  ASSERT_FALSE(ZSTD_isError(n)) << ZSTD_getErrorName(n);
  EXPECT_EQ(back.substr(0, n), model);
  EXPECT_TRUE(Contains(r.out, "\"zstd_level\":9")) << r.out;

  // Targets are honoured: another device outside the group refuses.
  ota::TrustState other = Pin("root-1.pb");
  ota::DeviceIdentity stranger{"robot-1", {"lab"}};
  auto refused =
      ota::AcceptRelease(other, envelope, stranger, 0, policy_, now, &reason);
  EXPECT_FALSE(refused.ok());
  EXPECT_EQ(reason, RejectReason::kNotForThisDevice);
  // The named device is targeted on its own.
  ota::DeviceIdentity nine{"robot-9", {}};
  EXPECT_TRUE(
      ota::AcceptRelease(other, envelope, nine, 0, policy_, now, &reason).ok());
}

TEST_F(FleetCliTest, SequenceDefaultsToMillisecondsAndNeverGoesBack) {
  MakeFleet();
  WriteModel(File("a.tern"), "a", 1);
  WriteModel(File("b.tern"), "b", 1);
  const uint64_t before_ms = static_cast<uint64_t>(Now()) * 1000;
  Ok("sign a.tern --url https://u.example/ --target-group warehouse "
     "--key rel.key --out-dir out");
  Ok("sign b.tern --url https://u.example/ --target-group warehouse "
     "--key rel.key --out-dir out");
  ota::SignedEnvelope ea, eb;
  ASSERT_TRUE(ea.ParseFromString(Read("out/a-1.release.pb")));
  ASSERT_TRUE(eb.ParseFromString(Read("out/b-1.release.pb")));
  ota::Release ra, rb;
  ASSERT_TRUE(ra.ParseFromString(ea.payload()));
  ASSERT_TRUE(rb.ParseFromString(eb.payload()));
  EXPECT_GE(ra.sequence(), before_ms);
  EXPECT_LE(ra.sequence(), static_cast<uint64_t>(Now() + 1) * 1000);
  EXPECT_GT(rb.sequence(), ra.sequence());
  // A device takes them in order, and not the older one after the newer.
  ota::TrustState state = Pin("root-1.pb");
  EXPECT_EQ(Check(state, Read("out/a-1.release.pb")), RejectReason::kNone);
  EXPECT_EQ(Check(state, Read("out/b-1.release.pb")), RejectReason::kNone);
  EXPECT_EQ(Check(state, Read("out/a-1.release.pb")), RejectReason::kReplay);
}

TEST_F(FleetCliTest, RootRotationOnDayOneReplacesTheReleaseKey) {
  MakeFleet();
  Keygen("r2");
  Keygen("rel2");
  const std::string old_release = SignModel("m", 1, "--key rel.key", 10);

  // Root 2 must be signed by root 1's keys and its own: r2 alone is not
  // enough, and ternctl refuses to write what devices would not rotate to.
  CmdResult refused = Fails(
      "root --previous root-1.pb --root-key r2.pub --release-key rel2.pub "
      "--timestamp-key ts.pub --sign r2.key --out root-2.pb");
  EXPECT_TRUE(Contains(refused.err, "would not rotate")) << refused.err;
  EXPECT_TRUE(Contains(refused.err, "by the current root's keys"))
      << refused.err;
  EXPECT_FALSE(std::filesystem::exists(File("root-2.pb")));
  CmdResult made =
      Ok("root --previous root-1.pb --root-key r2.pub --release-key rel2.pub "
         "--timestamp-key ts.pub --sign r1.key --sign r2.key --out root-2.pb");
  EXPECT_TRUE(Contains(made.out, "version      2")) << made.out;
  EXPECT_TRUE(Contains(made.out, "fleet        acme")) << made.out;

  ota::TrustState state = Pin("root-1.pb");
  EXPECT_EQ(Check(state, old_release), RejectReason::kNone);
  ASSERT_TRUE(ota::RotateRoot(state, Read("root-2.pb"), policy_, Now()).ok());
  EXPECT_EQ(state.root.version(), 2u);
  // The old release key signs nothing a rotated device accepts any more.
  const std::string old_key_again =
      SignModel("m", 2, "--key rel.key", 20, "--force");
  EXPECT_EQ(Check(state, old_key_again), RejectReason::kBadSignature);
  const std::string new_key =
      SignModel("m", 2, "--key rel2.key", 21, "--force");
  EXPECT_EQ(Check(state, new_key, 1), RejectReason::kNone);
  // sign --root catches the mix-up before anything is published.
  WriteModel(File("m.tern"), "m", 3);
  CmdResult check = Fails(
      "sign m.tern --url https://u.example/ --target-group warehouse "
      "--key rel.key --root root-2.pb --out-dir out2");
  EXPECT_TRUE(Contains(check.err, "would refuse it (bad_signature)"))
      << check.err;
  // A root that skips a version is refused before signing.
  CmdResult skip = Fails(
      "root --previous root-1.pb --version 3 --root-key r2.pub "
      "--release-key rel2.pub --timestamp-key ts.pub --sign r1.key "
      "--sign r2.key --out root-3.pb");
  EXPECT_TRUE(Contains(skip.err, "--version 3 does not follow")) << skip.err;
}

TEST_F(FleetCliTest, ThresholdTwoRootsAndReleases) {
  for (const char* k : {"a", "b", "c", "rel1", "rel2", "ts"}) Keygen(k);
  const std::string roles =
      "--fleet acme --root-key a.pub --root-key b.pub --root-key c.pub "
      "--root-threshold 2 --release-key rel1.pub --release-key rel2.pub "
      "--release-threshold 2 --timestamp-key ts.pub ";
  CmdResult one = Fails("root " + roles + "--sign a.key --out root-1.pb");
  EXPECT_TRUE(Contains(one.err, "1 valid signature(s) from its keys, 2 needed"))
      << one.err;
  EXPECT_FALSE(std::filesystem::exists(File("root-1.pb")));
  CmdResult impossible = Fails(
      "root --fleet acme --root-key a.pub --root-threshold 2 "
      "--release-key rel1.pub --timestamp-key ts.pub --sign a.key "
      "--out root-1.pb");
  EXPECT_TRUE(Contains(impossible.err,
                       "--root-key: threshold 2 is impossible with 1 key(s)"))
      << impossible.err;
  Ok("root " + roles + "--sign a.key --sign c.key --out root-1.pb");
  ota::TrustState state = Pin("root-1.pb");
  EXPECT_EQ(state.root.root().threshold(), 2u);
  EXPECT_EQ(state.root.release().threshold(), 2u);

  const std::string one_key = SignModel("m", 1, "--key rel1.key", 5);
  EXPECT_EQ(Check(state, one_key), RejectReason::kBadSignature);
  const std::string two_keys =
      SignModel("m", 1, "--key rel1.key --key rel2.key", 6, "--force");
  EXPECT_EQ(Check(state, two_keys), RejectReason::kNone);
  // The same key twice does not make two signatures.
  WriteModel(File("m.tern"), "m", 1);
  CmdResult twice = Fails(
      "sign m.tern --url https://u.example/ --target-group warehouse "
      "--key rel1.key --key rel1.key --out-dir out --force");
  EXPECT_TRUE(Contains(twice.err, "the same key is given twice")) << twice.err;
}

TEST_F(FleetCliTest, SignWritesAWaveScheduleAndRefusesBadOnes) {
  MakeFleet();
  const std::string release =
      SignModel("m", 1, "--key rel.key", 5,
                "--rollout m1-lab --wave-start @1800000000 --wave 0:1 "
                "--wave 2h:10 --wave 1d:100 --root root-1.pb --json");
  ota::SignedEnvelope env;
  ASSERT_TRUE(env.ParseFromString(release));
  ota::Release r;
  ASSERT_TRUE(r.ParseFromString(env.payload()));
  ASSERT_TRUE(r.has_waves());
  EXPECT_EQ(r.rollout_id(), "m1-lab");
  EXPECT_EQ(r.waves().start(), 1800000000);
  ASSERT_EQ(r.waves().steps_size(), 3);
  EXPECT_EQ(r.waves().steps(1).offset_s(), 7200);
  EXPECT_EQ(r.waves().steps(1).percent(), 10u);
  EXPECT_EQ(r.waves().steps(2).offset_s(), 86400);
  EXPECT_EQ(r.waves().steps(2).percent(), 100u);

  WriteModel(File("m.tern"), "m", 2);
  const std::string sign =
      "sign m.tern --url https://updates.example/m/ --target-group "
      "warehouse --key rel.key --out-dir out2 ";
  CmdResult over = Fails(sign + "--wave 0:10 --wave 1h:101");
  EXPECT_TRUE(Contains(
      over.err, "--wave: waves: step 2: percent 101, expected at most 100"))
      << over.err;
  CmdResult order = Fails(sign + "--wave 1h:10 --wave 30m:50");
  EXPECT_TRUE(Contains(order.err,
                       "--wave: waves: step 2: offset 1800 s, expected more "
                       "than step 1's 3600 s (offsets must increase)"))
      << order.err;
  CmdResult garbled = Fails(sign + "--wave 10%");
  EXPECT_TRUE(Contains(garbled.err, "--wave '10%': expected OFFSET:PERCENT"))
      << garbled.err;
  EXPECT_FALSE(std::filesystem::exists(File("out2")));
}

TEST_F(FleetCliTest, TimestampAdvancesTheDevicesTrustedTime) {
  MakeFleet();
  const std::string release = SignModel("m", 1, "--key rel.key", 7);
  const int64_t before = Now();
  CmdResult r =
      Ok("timestamp --release out/m-1.release.pb --key ts.key "
         "--minutes 30 --out ts.pb --json");
  const int64_t after = Now();
  ota::TrustState state = Pin("root-1.pb");
  ASSERT_EQ(state.time_floor, 0);
  // A device whose clock is at 1970 still moves to the signed time.
  ASSERT_TRUE(ota::ApplyTimestamp(state, Read("ts.pb"), policy_, 0).ok());
  EXPECT_GE(state.time_floor, before);
  EXPECT_LE(state.time_floor, after);
  ota::SignedEnvelope env;
  ASSERT_TRUE(env.ParseFromString(Read("ts.pb")));
  ota::Timestamp ts;
  ASSERT_TRUE(ts.ParseFromString(env.payload()));
  ota::SignedEnvelope rel_env;
  ASSERT_TRUE(rel_env.ParseFromString(release));
  EXPECT_EQ(ts.release_sha256(), Sha256(rel_env.payload()));
  EXPECT_NEAR(ts.expires() - ts.issued(), 30 * 60, 2);
  const Json printed = ParseJson(r.out);
  EXPECT_EQ(printed.value("file", ""), "ts.pb");
  EXPECT_EQ(printed.value("release", ""), "out/m-1.release.pb");
  EXPECT_EQ(printed.value("release_sha256", ""), ota::Hex(ts.release_sha256()));
  EXPECT_EQ(printed.value("issued", int64_t{0}), ts.issued());
  EXPECT_EQ(printed.value("expires", int64_t{0}), ts.expires());
  // Expired half an hour later.
  ota::TrustState late = Pin("root-1.pb");
  EXPECT_FALSE(
      ota::ApplyTimestamp(late, Read("ts.pb"), policy_, after + 31 * 60).ok());
  // The release key cannot stand in for the timestamp key.
  Ok("timestamp --release out/m-1.release.pb --key rel.key --out bad.pb");
  ota::TrustState other = Pin("root-1.pb");
  Status s = ota::ApplyTimestamp(other, Read("bad.pb"), policy_, Now());
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(other.time_floor, 0);
}

TEST_F(FleetCliTest, BundleRoundTripAndShow) {
  MakeFleet();
  Keygen("r2");
  Ok("root --previous root-1.pb --root-key r2.pub --release-key rel.pub "
     "--timestamp-key ts.pub --sign r1.key --sign r2.key --out root-2.pb");
  const std::string release = SignModel("m", 4, "--key rel.key", 99);
  Ok("timestamp --release out/m-4.release.pb --key ts.key --out ts.pb");
  CmdResult made = Ok(
      "bundle --root root-1.pb --root root-2.pb --release out/m-4.release.pb "
      "--timestamp ts.pb --artifact out/m-4.tern.zst --out u.ternbundle");
  EXPECT_TRUE(Contains(made.out, "verified     yes")) << made.out;
  const Json made_json = ParseJson(
      Ok("bundle --root root-1.pb --root root-2.pb "
         "--release out/m-4.release.pb --timestamp ts.pb "
         "--artifact out/m-4.tern.zst --out u.ternbundle --force --json")
          .out);
  EXPECT_EQ(made_json.value("file", ""), "u.ternbundle");
  EXPECT_EQ(made_json.value("roots", 0), 2);
  EXPECT_EQ(made_json.value("model", ""), "m");
  EXPECT_EQ(made_json.value("version", 0), 4);
  EXPECT_EQ(made_json.value("sequence", 0), 99);
  EXPECT_EQ(made_json.value("timestamp", false), true);
  EXPECT_EQ(made_json.value("verified", false), true);

  const std::string bytes = Read("u.ternbundle");
  auto c = ota::ParseBundle(bytes, "u.ternbundle");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->root_envelopes.size(), 2u);
  EXPECT_EQ(c->root_envelopes[0], Read("root-1.pb"));
  EXPECT_EQ(c->root_envelopes[1], Read("root-2.pb"));
  EXPECT_EQ(c->release_envelope, release);
  EXPECT_EQ(c->timestamp_envelope, Read("ts.pb"));
  EXPECT_EQ(c->artifact, Read("out/m-4.tern.zst"));
  EXPECT_EQ(c->release.model_version(), 4u);

  // A device on root 1 installs it as the daemon would.
  ota::TrustState state = Pin("root-1.pb");
  for (size_t i = 1; i < c->root_envelopes.size(); ++i) {
    ASSERT_TRUE(
        ota::RotateRoot(state, c->root_envelopes[i], policy_, Now()).ok());
  }
  ASSERT_TRUE(
      ota::ApplyTimestamp(state, c->timestamp_envelope, policy_, Now()).ok());
  EXPECT_EQ(Check(state, c->release_envelope, 3), RejectReason::kNone);

  CmdResult shown = Ok("bundle show u.ternbundle --json");
  EXPECT_TRUE(Contains(shown.out,
                       "\"model\":\"m\",\"version\":4,"
                       "\"sequence\":99"))
      << shown.out;
  EXPECT_TRUE(Contains(shown.out, "\"verified\":true")) << shown.out;
  const Json show = ParseJson(shown.out);
  EXPECT_EQ(show.value("file", ""), "u.ternbundle");
  EXPECT_EQ(show.value("bytes", size_t{0}), bytes.size());
  ASSERT_EQ(show["roots"].size(), 2u);
  EXPECT_EQ(show["roots"][0].value("fleet", ""), "acme");
  EXPECT_EQ(show["roots"][1].value("version", 0), 2);
  EXPECT_EQ(show["release"].value("model", ""), "m");
  EXPECT_EQ(show["release"].value("sequence", 0), 99);
  EXPECT_EQ(show["release"]["target_groups"], Json::array({"warehouse"}));
  EXPECT_EQ(show["release"].value("artifact_sha256", ""),
            ota::Hex(c->release.artifact_sha256()));
  EXPECT_TRUE(show["timestamp"].is_object()) << shown.out;
  EXPECT_EQ(show["timestamp"].value("expires", int64_t{0}),
            c->timestamp.expires());
  EXPECT_EQ(show.value("artifact_length", size_t{0}), c->artifact.size());
  EXPECT_EQ(show.value("problem", "?"), "");

  // A bundle whose artifact is not the release's is refused as a whole,
  // naming the first chunk that differs.
  std::string tampered = bytes;
  tampered[tampered.size() - 10] ^= 0x40;
  WriteBytes(File("bad.ternbundle"), tampered);
  CmdResult bad = Fails("bundle show bad.ternbundle");
  EXPECT_TRUE(Contains(bad.err, "bad.ternbundle: artifact chunk ")) << bad.err;
  EXPECT_TRUE(Contains(bad.err, "does not match the chunk hash that release"))
      << bad.err;
  // Building one from mismatched parts is refused too.
  WriteModel(File("n.tern"), "n", 1);
  Ok("sign n.tern --url https://u.example/ --target-group warehouse "
     "--key rel.key --out-dir out");
  CmdResult mixed = Fails(
      "bundle --root root-1.pb --release out/m-4.release.pb "
      "--artifact out/n-1.tern.zst --out mixed.ternbundle");
  EXPECT_TRUE(Contains(mixed.err, "release of 'm' v4 states")) << mixed.err;
  EXPECT_FALSE(std::filesystem::exists(File("mixed.ternbundle")));
}

TEST_F(FleetCliTest, SignRefusesAModelWithoutAGoldenPair) {
  MakeFleet();
  WriteModel(File("nogold.tern"), "nogold", 1, /*golden=*/false);
  CmdResult r = Fails(
      "sign nogold.tern --url https://u.example/ --target-group warehouse "
      "--key rel.key --out-dir out");
  EXPECT_TRUE(Contains(r.err,
                       "nogold.tern: model 'nogold' has no golden "
                       "input/output pair"))
      << r.err;
  EXPECT_TRUE(Contains(r.err, "health check")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(File("out/nogold-1.release.pb")));
  EXPECT_FALSE(std::filesystem::exists(File("out/nogold-1.tern.zst")));
}

TEST_F(FleetCliTest, TamperedFilesAreRefusedByTheDevice) {
  MakeFleet();
  const std::string release = SignModel("m", 1, "--key rel.key", 3);
  Ok("timestamp --release out/m-1.release.pb --key ts.key --out ts.pb");
  ota::SignedEnvelope env;
  ASSERT_TRUE(env.ParseFromString(release));
  ota::Release r;
  ASSERT_TRUE(r.ParseFromString(env.payload()));

  // A changed field (a target added) breaks the signature.
  r.add_target_devices("robot-7");
  ota::SignedEnvelope forged = env;
  forged.set_payload(r.SerializeAsString());
  ota::TrustState state = Pin("root-1.pb");
  EXPECT_EQ(Check(state, forged.SerializeAsString()),
            RejectReason::kBadSignature);
  // So does one flipped bit anywhere in the payload.
  std::string payload = env.payload();
  for (size_t at : {size_t{0}, payload.size() / 2, payload.size() - 1}) {
    ota::SignedEnvelope flipped = env;
    std::string p = payload;
    p[at] ^= 0x01;
    flipped.set_payload(p);
    RejectReason reason = Check(state, flipped.SerializeAsString());
    EXPECT_TRUE(reason == RejectReason::kBadSignature ||
                reason == RejectReason::kMalformed)
        << "offset " << at << ": " << ota::RejectReasonName(reason);
  }
  // A root with a swapped release key is no longer self-signed.
  ota::SignedEnvelope root_env;
  ASSERT_TRUE(root_env.ParseFromString(Read("root-1.pb")));
  ota::Root root;
  ASSERT_TRUE(root.ParseFromString(root_env.payload()));
  ASSERT_EQ(root.release().key_ids_size(), 1);
  root.mutable_release()->set_key_ids(0, root.timestamp().key_ids(0));
  root_env.set_payload(root.SerializeAsString());
  EXPECT_FALSE(ota::TrustFromPinnedRoot(root_env.SerializeAsString()).ok());
  // A timestamp with a moved issue time is refused.
  ota::SignedEnvelope ts_env;
  ASSERT_TRUE(ts_env.ParseFromString(Read("ts.pb")));
  ota::Timestamp ts;
  ASSERT_TRUE(ts.ParseFromString(ts_env.payload()));
  ts.set_issued(ts.issued() + 86400 * 365);
  ts_env.set_payload(ts.SerializeAsString());
  ota::TrustState t = Pin("root-1.pb");
  EXPECT_FALSE(
      ota::ApplyTimestamp(t, ts_env.SerializeAsString(), policy_, Now()).ok());
  EXPECT_EQ(t.time_floor, 0);
  // The untampered files are still fine (the checks above failed for the
  // tampering, not for something else).
  EXPECT_EQ(Check(state, release), RejectReason::kNone);
  EXPECT_TRUE(ota::ApplyTimestamp(t, Read("ts.pb"), policy_, Now()).ok());
}

TEST_F(FleetCliTest, ClearErrorsNameTheFlagTheFileAndTheValue) {
  MakeFleet();
  WriteModel(File("m.tern"), "m", 2);
  const std::string base =
      "sign m.tern --target-group warehouse --key rel.key --out-dir out ";
  struct Case {
    std::string args;
    std::string message;
  } cases[] = {
      {base + "--url http://u.example/",
       "--url 'http://u.example/' is not "
       "an https:// URL"},
      {base + "--url https://u.example/ --version 3",
       "--version 3 but m.tern is version 2"},
      {base + "--url https://u.example/ --name other",
       "--name 'other' but m.tern is model 'm'"},
      {base + "--url https://u.example/ --expires 2001-01-01",
       "--expires 2001-01-01 is not in the future"},
      {base + "--url https://u.example/ --expires tomorrow",
       "--expires 'tomorrow' is not a time"},
      {base + "--url https://u.example/ --min-runtime 1.2",
       "--min-runtime '1.2' is not MAJOR.MINOR.PATCH"},
      {base + "--url https://u.example/ --zstd-level 22",
       "--zstd-level 22 is outside 1..19"},
      {"sign m.tern --url https://u.example/ --key rel.key --out-dir out",
       "give at least one --target-device or --target-group"},
      {"sign m.tern --url https://u.example/ --target-group g --key rel.pub "
       "--out-dir out",
       "rel.pub: is a public key; signing needs the private key"},
      {"sign missing.tern --url https://u.example/ --target-group g "
       "--key rel.key --out-dir out",
       "missing.tern"},
      {"root --fleet acme --root-key r1.key --release-key rel.pub "
       "--timestamp-key ts.pub --sign r1.key --out x.pb",
       "r1.key: is a private key; pass the public key"},
      {"timestamp --release root-1.pb --key ts.key --out t.pb",
       "root-1.pb is a 'root' envelope, expected 'release'"},
      {"root show m.tern", "m.tern is not signed ternd metadata"},
  };
  for (const Case& c : cases) {
    CmdResult r = Fails(c.args);
    EXPECT_TRUE(Contains(r.err, c.message))
        << "ternctl " << c.args << "\nexpected: " << c.message
        << "\ngot: " << r.err;
  }
  // A private key that others may read is refused, naming the fix.
  ASSERT_EQ(::chmod(File("rel.key").c_str(), 0644), 0);
  CmdResult r = Fails(base + "--url https://u.example/");
  EXPECT_TRUE(Contains(r.err, "rel.key has mode 0644")) << r.err;
  EXPECT_TRUE(Contains(r.err, "chmod 600")) << r.err;
  // Key material never appears in any output.
  const std::string pem = Read("rel.key");
  const std::string body = pem.substr(pem.find('\n') + 1, 40);
  EXPECT_FALSE(Contains(r.all(), body));
}

TEST_F(FleetCliTest, SignShadowValidationIsSignedAndCheckedLikeTheDevice) {
  MakeFleet();
  const std::string envelope = SignModel(
      "m", 2, "--key rel.key", 10,
      "--shadow-sample-rate 0.25 --shadow-min-requests 500 "
      "--shadow-min-agreement 0.98 --shadow-metric argmax --shadow-output "
      "probs --shadow-time-limit 3600");
  ota::SignedEnvelope env;
  ota::Release r;
  ASSERT_TRUE(env.ParseFromString(envelope) &&
              r.ParseFromString(env.payload()));
  ASSERT_TRUE(r.has_shadow_validation());
  EXPECT_EQ(r.shadow_validation().sample_rate(), 0.25);
  EXPECT_EQ(r.shadow_validation().min_requests(), 500u);
  EXPECT_EQ(r.shadow_validation().min_agreement(), 0.98);
  EXPECT_EQ(r.shadow_validation().metric(), "argmax");
  EXPECT_EQ(r.shadow_validation().output(), "probs");
  EXPECT_EQ(r.shadow_validation().time_limit_s(), 3600u);
  // Signed like the rest: a device accepts it.
  ota::TrustState t = Pin("root-1.pb");
  EXPECT_EQ(Check(t, envelope), RejectReason::kNone);
  // Without the flags, no validation is asked for.
  ota::Release plain;
  ASSERT_TRUE(env.ParseFromString(SignModel("n", 2, "--key rel.key", 11)) &&
              plain.ParseFromString(env.payload()));
  EXPECT_FALSE(plain.has_shadow_validation());
  // What the device would reject is not signed.
  const std::string base =
      "sign m.tern --url https://u.example/ --target-group warehouse --key "
      "rel.key --out-dir bad --shadow-time-limit 60 ";
  CmdResult bad =
      Fails(base + "--shadow-min-requests 10 --shadow-sample-rate 2");
  EXPECT_TRUE(Contains(bad.err,
                       "--shadow-*: shadow_validation.sample_rate is 2; "
                       "expected a share of requests in (0, 1]"))
      << bad.err;
  bad = Fails(base + "--shadow-min-agreement 0.9");
  EXPECT_TRUE(Contains(bad.err, "shadow_validation.min_requests is 0"))
      << bad.err;
}

}  // namespace
}  // namespace ternd::fleet_testing
