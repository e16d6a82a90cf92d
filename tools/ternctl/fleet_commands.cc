// `ternctl keygen`, `root` (and `root show`) and `timestamp`; registers the
// other fleet commands (fleet_sign.cc, fleet_bundle.cc, fleet_publish.cc).
// docs/ota.md ("Keys and roots") and docs/ternctl.md describe them.
#include <openssl/sha.h>
#include <sys/stat.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ota/keys.h"
#include "ota/signing.h"
#include "ota/trust.h"
#include "tools/ternctl/commands.h"
#include "tools/ternctl/fleet_common.h"
#include "tools/ternctl/json_output.h"

namespace ternd::ternctl {
namespace {

constexpr int64_t kDay = 86400;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// ---- keygen -----------------------------------------------------------------

struct KeygenOptions {
  std::string out;
  bool force = false;
  bool json = false;
};

int Keygen(const KeygenOptions& o) {
  const std::string key_path = o.out + ".key";
  const std::string pub_path = o.out + ".pub";
  Result<ota::Ed25519KeyPair> key = ota::GenerateEd25519KeyPair();
  if (!key.ok()) return FleetFail(key.status());
  Result<std::string> priv = ota::EncodePrivateKeyPem(*key);
  if (!priv.ok()) return FleetFail(priv.status());
  Result<std::string> pub = ota::EncodePublicKeyPem(key->public_key);
  if (!pub.ok()) return FleetFail(pub.status());
  // Check both before writing either, so a refusal leaves nothing behind.
  for (const std::string& p : {key_path, pub_path}) {
    struct stat st;
    if (!o.force && ::lstat(p.c_str(), &st) == 0) {
      return FleetFail(Errorf(StatusCode::kAlreadyExists,
                              "%s already exists; pass --force to replace "
                              "it (the old key is then lost)",
                              p.c_str()));
    }
  }
  Status s = WriteOutput(key_path, *priv, 0600, o.force);
  std::fill(priv->begin(), priv->end(), '\0');
  if (!s.ok()) return FleetFail(s);
  s = WriteOutput(pub_path, *pub, 0644, o.force);
  if (!s.ok()) return FleetFail(s);
  const std::string id = ota::KeyId(key->public_key);
  if (o.json) {
    PrintJson(Json{
        {"key_id", id}, {"private_key", key_path}, {"public_key", pub_path}});
  } else {
    std::printf("private key  %s (mode 0600: keep it offline and secret)\n",
                key_path.c_str());
    std::printf("public key   %s\n", pub_path.c_str());
    std::printf("key id       %s\n", id.c_str());
  }
  return 0;
}

// ---- root -------------------------------------------------------------------

struct RootOptions {
  std::string fleet;
  uint64_t version = 0;
  ExpiryOption expiry;
  std::vector<std::string> root_keys, release_keys, timestamp_keys;
  uint32_t root_threshold = 1, release_threshold = 1, timestamp_threshold = 1;
  std::vector<std::string> sign;
  std::string previous;
  std::string out;
  bool force = false;
  bool json = false;
};

std::map<std::string, std::string> RolesByKey(const ota::Root& root) {
  std::map<std::string, std::string> roles;
  auto add = [&](const ota::RoleKeys& r, const char* name) {
    for (const std::string& id : r.key_ids()) {
      std::string& s = roles[id];
      s += (s.empty() ? "" : ",") + std::string(name);
    }
  };
  add(root.root(), "root");
  add(root.release(), "release");
  add(root.timestamp(), "timestamp");
  return roles;
}

void PrintRoot(const ota::Root& root, const ota::SignedEnvelope& env,
               const std::string& path, const Status& self_check, bool json) {
  const auto roles = RolesByKey(root);
  auto role_json = [](const ota::RoleKeys& r) {
    return Json{{"threshold", r.threshold()},
                {"key_ids", Json(std::vector<std::string>(r.key_ids().begin(),
                                                          r.key_ids().end()))}};
  };
  if (json) {
    Json keys = Json::array();
    for (const ota::PublicKey& k : root.keys()) {
      auto it = roles.find(k.key_id());
      keys.push_back(Json{{"key_id", k.key_id()},
                          {"roles", it == roles.end() ? "" : it->second}});
    }
    Json signatures = Json::array();
    for (const ota::Signature& s : env.signatures()) {
      signatures.push_back(s.key_id());
    }
    PrintJson(Json{{"file", path},
                   {"fleet", root.fleet()},
                   {"version", root.version()},
                   {"expires", root.expires()},
                   {"expires_utc", FormatTime(root.expires())},
                   {"keys", std::move(keys)},
                   {"root", role_json(root.root())},
                   {"release", role_json(root.release())},
                   {"timestamp", role_json(root.timestamp())},
                   {"signatures", std::move(signatures)},
                   {"self_signed", self_check.ok()}});
    return;
  }
  std::printf("root         %s\n", path.c_str());
  std::printf("fleet        %s\n", root.fleet().c_str());
  std::printf("version      %" PRIu64 "\n", root.version());
  std::printf("expires      %s\n", FormatTime(root.expires()).c_str());
  std::printf("keys (%d)\n", root.keys_size());
  for (const ota::PublicKey& k : root.keys()) {
    auto it = roles.find(k.key_id());
    std::printf("  %s  %s\n", k.key_id().c_str(),
                it == roles.end() ? "(no role)" : it->second.c_str());
  }
  std::printf(
      "thresholds   root %u of %d, release %u of %d, timestamp %u of "
      "%d\n",
      root.root().threshold(), root.root().key_ids_size(),
      root.release().threshold(), root.release().key_ids_size(),
      root.timestamp().threshold(), root.timestamp().key_ids_size());
  std::printf("signed by    %s\n", Signers(env).c_str());
  std::printf("self-signed  %s\n",
              self_check.ok() ? "yes (a threshold of its own root keys)"
                              : self_check.message());
}

Status AddRole(const std::vector<std::string>& paths, uint32_t threshold,
               const char* flag, ota::Root* root, ota::RoleKeys* role,
               std::set<std::string>* listed) {
  if (paths.empty()) {
    return InvalidArgument("%s: at least one public key is needed", flag);
  }
  std::set<std::string> in_role;
  for (const std::string& p : paths) {
    TERND_ASSIGN_OR_RETURN(ota::Ed25519PublicKey key,
                           ota::ReadPublicKeyFile(p));
    const std::string id = ota::KeyId(key);
    if (!in_role.insert(id).second) {
      return InvalidArgument("%s %s: key %s is listed twice", flag, p.c_str(),
                             id.c_str());
    }
    role->add_key_ids(id);
    if (listed->insert(id).second) {
      ota::PublicKey* pk = root->add_keys();
      pk->set_key_id(id);
      pk->set_ed25519(key.data(), key.size());
    }
  }
  if (threshold < 1 || threshold > in_role.size()) {
    return InvalidArgument(
        "%s: threshold %u is impossible with %zu key(s); it must be 1 to %zu",
        flag, threshold, in_role.size(), in_role.size());
  }
  role->set_threshold(threshold);
  return Status::Ok();
}

int MakeRoot(const RootOptions& o) {
  const int64_t now = NowSeconds();
  std::optional<ota::TrustState> previous;
  if (!o.previous.empty()) {
    std::string bytes;
    Result<ota::SignedEnvelope> env =
        ReadEnvelopeFile(o.previous, "root", &bytes);
    if (!env.ok()) return FleetFail(env.status());
    Result<ota::TrustState> state = ota::TrustFromPinnedRoot(bytes);
    if (!state.ok()) {
      return FleetFail(
          Status(state.status()).Prepend("--previous " + o.previous));
    }
    previous = std::move(*state);
  }
  ota::Root root;
  root.set_fleet(o.fleet.empty() && previous ? previous->root.fleet()
                                             : o.fleet);
  if (root.fleet().empty()) {
    return FleetFail(InvalidArgument(
        "--fleet is required (the fleet name devices check on rotation)"));
  }
  root.set_version(o.version ? o.version
                             : (previous ? previous->root.version() + 1 : 1));
  if (previous && root.version() != previous->root.version() + 1) {
    return FleetFail(InvalidArgument(
        "--version %" PRIu64
        " does not follow --previous %s, which is "
        "version %" PRIu64 "; devices only rotate to version %" PRIu64,
        root.version(), o.previous.c_str(), previous->root.version(),
        previous->root.version() + 1));
  }
  Result<int64_t> expires =
      ResolveExpiry(o.expiry, now, kDay, 365 * kDay, "days");
  if (!expires.ok()) return FleetFail(expires.status());
  root.set_expires(*expires);
  std::set<std::string> listed;
  for (Status s :
       {AddRole(o.root_keys, o.root_threshold, "--root-key", &root,
                root.mutable_root(), &listed),
        AddRole(o.release_keys, o.release_threshold, "--release-key", &root,
                root.mutable_release(), &listed),
        AddRole(o.timestamp_keys, o.timestamp_threshold, "--timestamp-key",
                &root, root.mutable_timestamp(), &listed)}) {
    if (!s.ok()) return FleetFail(s);
  }
  Result<std::vector<ota::Ed25519KeyPair>> signers =
      ReadSigningKeys(o.sign, "--sign");
  if (!signers.ok()) return FleetFail(signers.status());
  const std::string payload = root.SerializeAsString();
  Result<ota::SignedEnvelope> env =
      ota::SignEnvelope("root", Bytes(payload), *signers);
  if (!env.ok()) return FleetFail(env.status());
  const std::string bytes = env->SerializeAsString();

  // What a device would do with it: a new device pins it, so it must be
  // signed by a threshold of its own root keys; a device on the previous
  // root rotates to it.
  Result<ota::TrustState> pinned = ota::TrustFromPinnedRoot(bytes);
  if (!pinned.ok()) {
    return FleetFail(Status(pinned.status())
                         .Prepend("refusing to write " + o.out +
                                  ": devices would not accept it: pass "
                                  "--sign with enough of its root keys"));
  }
  if (previous) {
    ota::TrustPolicy policy;
    Status s = ota::RotateRoot(*previous, bytes, policy, now);
    if (!s.ok()) {
      return FleetFail(s.Prepend("refusing to write " + o.out +
                                 ": devices on " + o.previous +
                                 " would not rotate to it: pass --sign with "
                                 "enough root keys of both versions"));
    }
  }
  Status s = WriteOutput(o.out, bytes, 0644, o.force);
  if (!s.ok()) return FleetFail(s);
  PrintRoot(root, *env, o.out, Status::Ok(), o.json);
  if (!o.json && root.version() > 1 && !previous) {
    std::printf("note         not checked against root version %" PRIu64
                " (pass --previous to check that devices will rotate to it)\n",
                root.version() - 1);
  }
  return 0;
}

int ShowRoot(const std::string& path, bool json) {
  std::string bytes;
  Result<ota::SignedEnvelope> env = ReadEnvelopeFile(path, "root", &bytes);
  if (!env.ok()) return FleetFail(env.status());
  ota::Root root;
  if (!root.ParseFromString(env->payload())) {
    return FleetFail(
        InvalidArgument("%s: payload is not a Root protobuf", path.c_str()));
  }
  Result<ota::TrustState> self = ota::TrustFromPinnedRoot(bytes);
  PrintRoot(root, *env, path, self.ok() ? Status::Ok() : self.status(), json);
  return 0;
}

// ---- timestamp --------------------------------------------------------------

struct TimestampOptions {
  std::string release;
  std::vector<std::string> keys;
  ExpiryOption expiry;
  std::string out;
  bool force = false;
  bool json = false;
};

int MakeTimestamp(const TimestampOptions& o) {
  const int64_t now = NowSeconds();
  std::string bytes;
  Result<ota::SignedEnvelope> release =
      ReadEnvelopeFile(o.release, "release", &bytes);
  if (!release.ok()) return FleetFail(release.status());
  ota::Release r;
  if (!r.ParseFromString(release->payload())) {
    return FleetFail(InvalidArgument("%s: payload is not a Release protobuf",
                                     o.release.c_str()));
  }
  Result<int64_t> expires = ResolveExpiry(o.expiry, now, 60, kDay, "minutes");
  if (!expires.ok()) return FleetFail(expires.status());
  Result<std::vector<ota::Ed25519KeyPair>> keys =
      ReadSigningKeys(o.keys, "--key");
  if (!keys.ok()) return FleetFail(keys.status());
  ota::Timestamp ts;
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(release->payload().data()),
         release->payload().size(), digest);
  ts.set_release_sha256(digest, sizeof(digest));
  ts.set_issued(now);
  ts.set_expires(*expires);
  const std::string payload = ts.SerializeAsString();
  Result<ota::SignedEnvelope> env =
      ota::SignEnvelope("timestamp", Bytes(payload), *keys);
  if (!env.ok()) return FleetFail(env.status());
  Status s = WriteOutput(o.out, env->SerializeAsString(), 0644, o.force);
  if (!s.ok()) return FleetFail(s);
  if (o.json) {
    PrintJson(Json{{"file", o.out},
                   {"release", o.release},
                   {"release_sha256", Hex(ts.release_sha256())},
                   {"issued", ts.issued()},
                   {"expires", ts.expires()},
                   {"signed_by", Signers(*env)}});
  } else {
    std::printf("timestamp    %s\n", o.out.c_str());
    std::printf("release      %s (%s v%" PRIu64 ", sequence %" PRIu64
                ", payload sha256 %s)\n",
                o.release.c_str(), r.model_name().c_str(), r.model_version(),
                r.sequence(), Hex(ts.release_sha256()).c_str());
    std::printf("issued       %s\n", FormatTime(ts.issued()).c_str());
    std::printf("expires      %s\n", FormatTime(ts.expires()).c_str());
    std::printf("signed by    %s\n", Signers(*env).c_str());
  }
  return 0;
}

}  // namespace

void AddKeygenCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<KeygenOptions>();
  CLI::App* cmd = app.add_subcommand(
      "keygen",
      "Make an Ed25519 signing key pair: NAME.key (private, PEM PKCS#8, mode "
      "0600) and NAME.pub (public, PEM SubjectPublicKeyInfo)");
  cmd->add_option("-o,--out", o->out,
                  "Path and name of the pair, without "
                  "extension")
      ->required();
  cmd->add_flag("--force", o->force, "Replace existing files");
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->callback([o, exit_code] { *exit_code = Keygen(*o); });
}

void AddRootCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<RootOptions>();
  CLI::App* cmd = app.add_subcommand(
      "root",
      "Make and sign a root of trust (which keys sign for which role); "
      "'root show FILE' prints one");
  cmd->require_subcommand(0, 1);
  cmd->add_option("--fleet", o->fleet,
                  "Fleet name (default with --previous: its fleet)");
  cmd->add_option("--version", o->version,
                  "Root version: 1 for a new fleet, previous + 1 for a "
                  "rotation (default: 1, or previous + 1 with --previous)")
      ->check(CLI::PositiveNumber);
  AddExpiryOptions(cmd, &o->expiry, "days", "365 days from now");
  Repeatable(cmd->add_option("--root-key", o->root_keys,
                             "Public key (.pub) allowed to sign roots "
                             "(repeat for several)"));
  cmd->add_option("--root-threshold", o->root_threshold,
                  "How many root keys must sign")
      ->capture_default_str();
  Repeatable(cmd->add_option("--release-key", o->release_keys,
                             "Public key allowed to sign releases (repeat)"));
  cmd->add_option("--release-threshold", o->release_threshold,
                  "How many release keys must sign a release")
      ->capture_default_str();
  Repeatable(cmd->add_option("--timestamp-key", o->timestamp_keys,
                             "Public key allowed to sign timestamps (repeat)"));
  cmd->add_option("--timestamp-threshold", o->timestamp_threshold,
                  "How many timestamp keys must sign a timestamp")
      ->capture_default_str();
  Repeatable(cmd->add_option(
      "--sign", o->sign,
      "Private key (.key) to sign with (repeat); a rotation needs a threshold "
      "of the previous root's root keys and of the new root's"));
  cmd->add_option("--previous", o->previous,
                  "The current root (root-N.pb): check that devices trusting "
                  "it will rotate to the new one");
  cmd->add_option("-o,--out", o->out, "Output file, e.g. root-1.pb");
  cmd->add_flag("--force", o->force, "Replace an existing output file");
  cmd->add_flag("--json", o->json, "Print one JSON object");

  auto show_path = std::make_shared<std::string>();
  auto show_json = std::make_shared<bool>(false);
  CLI::App* show = cmd->add_subcommand("show", "Print a root file");
  show->add_option("FILE", *show_path, "Root file (root-N.pb)")->required();
  show->add_flag("--json", *show_json, "Print one JSON object");
  show->callback([show_path, show_json, exit_code] {
    *exit_code = ShowRoot(*show_path, *show_json);
  });
  cmd->callback([cmd, o, exit_code] {
    if (cmd->got_subcommand("show")) return;
    if (o->out.empty()) {
      *exit_code = FleetFail(InvalidArgument(
          "root: --out is required (the file to write, e.g. root-1.pb)"));
      return;
    }
    *exit_code = MakeRoot(*o);
  });
}

void AddTimestampCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<TimestampOptions>();
  CLI::App* cmd = app.add_subcommand(
      "timestamp",
      "Sign a short-lived timestamp naming the current release; it moves "
      "devices' trusted time forward");
  cmd->add_option("--release", o->release, "Signed release (.release.pb)")
      ->required();
  Repeatable(cmd->add_option("--key", o->keys,
                             "Timestamp private key (.key; repeat for a "
                             "threshold above 1)"))
      ->required();
  AddExpiryOptions(cmd, &o->expiry, "minutes", "1440 minutes from now");
  cmd->add_option("-o,--out", o->out, "Output file, e.g. timestamp.pb")
      ->required();
  cmd->add_flag("--force", o->force, "Replace an existing output file");
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->callback([o, exit_code] { *exit_code = MakeTimestamp(*o); });
}

void AddFleetCommands(CLI::App& app, int* exit_code) {
  AddKeygenCommand(app, exit_code);
  AddRootCommand(app, exit_code);
  AddSignCommand(app, exit_code);
  AddTimestampCommand(app, exit_code);
  AddBundleCommand(app, exit_code);
  AddPublishCommand(app, exit_code);
  AddDeltaCommand(app, exit_code);
  AddRolloutCommand(app, exit_code);
}

}  // namespace ternd::ternctl
