// `ternctl bundle` and `ternctl bundle show`: offline update files
// (ota/bundle.h; docs/ota.md, "Offline bundles").
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "base/file.h"
#include "ota/bundle.h"
#include "ota/trust.h"
#include "tools/ternctl/fleet_common.h"
#include "tools/ternctl/json_output.h"

namespace ternd::ternctl {
namespace {

struct BundleOptions {
  std::vector<std::string> roots;
  std::string release;
  std::string timestamp;
  std::string artifact;
  std::string out;
  bool force = false;
  bool json = false;
};

// What a device would do with the bundle, as far as it can be done without
// the device: pin the first root, rotate through the rest, apply the
// timestamp, accept the release for one of its targets.
Status VerifyBundle(const ota::BundleContents& c, int64_t now) {
  if (c.root_envelopes.empty()) {
    return FailedPrecondition(
        "no root in the bundle: signatures cannot be checked here");
  }
  Result<ota::TrustState> state =
      ota::TrustFromPinnedRoot(c.root_envelopes.front());
  if (!state.ok()) return Status(state.status()).Prepend("root[0]");
  ota::TrustPolicy policy;
  for (size_t i = 1; i < c.root_envelopes.size(); ++i) {
    Status s = ota::RotateRoot(*state, c.root_envelopes[i], policy, now);
    if (!s.ok()) return s.Prepend("root[" + std::to_string(i) + "]");
  }
  if (!c.timestamp_envelope.empty()) {
    Status s = ota::ApplyTimestamp(*state, c.timestamp_envelope, policy, now);
    if (!s.ok()) return s.Prepend("timestamp");
  }
  ota::DeviceIdentity device;
  if (c.release.target_devices_size() > 0) {
    device.id = c.release.target_devices(0);
  } else if (c.release.target_groups_size() > 0) {
    device.groups.push_back(c.release.target_groups(0));
  }
  policy.runtime_version = c.release.min_runtime_version().empty()
                               ? "0.0.0"
                               : c.release.min_runtime_version();
  ota::RejectReason reason;
  Result<ota::Release> r = ota::AcceptRelease(*state, c.release_envelope,
                                              device, 0, policy, now, &reason);
  if (!r.ok()) {
    return Status(r.status())
        .Prepend(std::string("release refused (") +
                 ota::RejectReasonName(reason) + ")");
  }
  return Status::Ok();
}

int MakeBundle(const BundleOptions& o) {
  ota::BundleContents c;
  std::string bytes;
  for (const std::string& p : o.roots) {
    Result<ota::SignedEnvelope> env = ReadEnvelopeFile(p, "root", &bytes);
    if (!env.ok()) return FleetFail(env.status());
    c.root_envelopes.push_back(bytes);
  }
  Result<ota::SignedEnvelope> env =
      ReadEnvelopeFile(o.release, "release", &c.release_envelope);
  if (!env.ok()) return FleetFail(env.status());
  if (!o.timestamp.empty()) {
    env = ReadEnvelopeFile(o.timestamp, "timestamp", &c.timestamp_envelope);
    if (!env.ok()) return FleetFail(env.status());
  }
  const ota::BundleLimits limits;
  Result<std::vector<uint8_t>> artifact =
      ReadFile(o.artifact, limits.max_artifact_bytes);
  if (!artifact.ok()) return FleetFail(artifact.status());
  c.artifact.assign(artifact->begin(), artifact->end());
  artifact->clear();
  artifact->shrink_to_fit();
  Result<std::string> encoded = ota::EncodeBundle(c, limits);
  if (!encoded.ok()) return FleetFail(encoded.status());
  Result<ota::BundleContents> parsed = ota::ParseBundle(*encoded, o.out);
  if (!parsed.ok()) return FleetFail(parsed.status());
  Status s = VerifyBundle(*parsed, NowSeconds());
  if (!s.ok() && !o.roots.empty()) {
    return FleetFail(s.Prepend("refusing to write " + o.out +
                               ": devices would not install it"));
  }
  Status w = WriteOutput(o.out, *encoded, 0644, o.force);
  if (!w.ok()) return FleetFail(w);
  const ota::Release& r = parsed->release;
  if (o.json) {
    PrintJson(Json{{"file", o.out},
                   {"bytes", encoded->size()},
                   {"roots", parsed->root_envelopes.size()},
                   {"model", r.model_name()},
                   {"version", r.model_version()},
                   {"sequence", r.sequence()},
                   {"timestamp", !parsed->timestamp_envelope.empty()},
                   {"artifact_length", parsed->artifact.size()},
                   {"verified", s.ok()}});
    return 0;
  }
  std::printf("bundle       %s (%zu bytes)\n", o.out.c_str(), encoded->size());
  std::printf("roots        %zu", parsed->roots.size());
  if (!parsed->roots.empty()) {
    std::printf(" (versions %" PRIu64 "..%" PRIu64 ")",
                parsed->roots.front().version(),
                parsed->roots.back().version());
  }
  std::printf("\nrelease      %s v%" PRIu64 ", sequence %" PRIu64 "\n",
              r.model_name().c_str(), r.model_version(), r.sequence());
  std::printf("timestamp    %s\n",
              parsed->timestamp_envelope.empty() ? "none" : "included");
  std::printf("artifact     %zu bytes\n", parsed->artifact.size());
  std::printf("verified     %s\n",
              s.ok() ? "yes (root chain, timestamp and release as a device "
                       "checks them)"
                     : s.message());
  return 0;
}

int ShowBundle(const std::string& path, bool json) {
  const ota::BundleLimits limits;
  Result<std::vector<uint8_t>> bytes = ReadFile(path, limits.max_bundle_bytes);
  if (!bytes.ok()) return FleetFail(bytes.status());
  Result<ota::BundleContents> c = ota::ParseBundle(
      std::string_view(reinterpret_cast<const char*>(bytes->data()),
                       bytes->size()),
      path, limits);
  if (!c.ok()) return FleetFail(c.status());
  const Status verified = VerifyBundle(*c, NowSeconds());
  const ota::Release& r = c->release;
  ota::SignedEnvelope release_env;
  release_env.ParseFromString(c->release_envelope);
  if (json) {
    Json roots = Json::array();
    for (const ota::Root& root : c->roots) {
      roots.push_back(Json{{"fleet", root.fleet()},
                           {"version", root.version()},
                           {"expires", root.expires()}});
    }
    Json timestamp = nullptr;
    if (!c->timestamp_envelope.empty()) {
      timestamp = Json{{"issued", c->timestamp.issued()},
                       {"expires", c->timestamp.expires()}};
    }
    auto list = [](const google::protobuf::RepeatedPtrField<std::string>& v) {
      return Json(std::vector<std::string>(v.begin(), v.end()));
    };
    PrintJson(Json{{"file", path},
                   {"bytes", bytes->size()},
                   {"roots", std::move(roots)},
                   {"release",
                    {{"model", r.model_name()},
                     {"version", r.model_version()},
                     {"sequence", r.sequence()},
                     {"issued", r.issued()},
                     {"expires", r.expires()},
                     {"target_devices", list(r.target_devices())},
                     {"target_groups", list(r.target_groups())},
                     {"rollout_id", r.rollout_id()},
                     {"artifact_sha256", Hex(r.artifact_sha256())},
                     {"signed_by", Signers(release_env)}}},
                   {"timestamp", std::move(timestamp)},
                   {"artifact_length", c->artifact.size()},
                   {"verified", verified.ok()},
                   {"problem", verified.ok() ? "" : verified.message()}});
    return 0;
  }
  std::printf("bundle       %s (%zu bytes, format %u)\n", path.c_str(),
              bytes->size(), ota::kBundleFormatVersion);
  for (const ota::Root& root : c->roots) {
    std::printf("root         fleet %s, version %" PRIu64 ", expires %s\n",
                root.fleet().c_str(), root.version(),
                FormatTime(root.expires()).c_str());
  }
  std::printf("release      %s v%" PRIu64 ", sequence %" PRIu64 "\n",
              r.model_name().c_str(), r.model_version(), r.sequence());
  std::string targets;
  for (const std::string& d : r.target_devices()) {
    targets += (targets.empty() ? "device " : ", device ") + d;
  }
  for (const std::string& g : r.target_groups()) {
    targets += (targets.empty() ? "group " : ", group ") + g;
  }
  std::printf("targets      %s\n", targets.c_str());
  std::printf("rollout      %s\n", r.rollout_id().c_str());
  std::printf("issued       %s\n", FormatTime(r.issued()).c_str());
  std::printf("expires      %s\n", FormatTime(r.expires()).c_str());
  std::printf("signed by    %s\n", Signers(release_env).c_str());
  if (c->timestamp_envelope.empty()) {
    std::printf("timestamp    none\n");
  } else {
    std::printf("timestamp    issued %s, expires %s\n",
                FormatTime(c->timestamp.issued()).c_str(),
                FormatTime(c->timestamp.expires()).c_str());
  }
  std::printf("artifact     %zu bytes, sha256 %s (matches the release)\n",
              c->artifact.size(), Hex(r.artifact_sha256()).c_str());
  std::printf("verified     %s\n",
              verified.ok() ? "yes (root chain, timestamp and release as a "
                              "device checks them)"
                            : verified.message());
  return 0;
}

}  // namespace

void AddBundleCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<BundleOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bundle",
      "Pack a signed release, its artifact and the root chain into one file "
      "for offline installs; 'bundle show FILE' prints one");
  cmd->require_subcommand(0, 1);
  Repeatable(cmd->add_option(
      "--root", o->roots,
      "Root file (repeat, oldest first: every root a device may be behind "
      "by)"));
  cmd->add_option("--release", o->release, "Signed release (.release.pb)");
  cmd->add_option("--timestamp", o->timestamp, "Signed timestamp (optional)");
  cmd->add_option("--artifact", o->artifact,
                  "The release's artifact (.tern.zst)");
  cmd->add_option("-o,--out", o->out, "Output file (.ternbundle)");
  cmd->add_flag("--force", o->force, "Replace an existing output file");
  cmd->add_flag("--json", o->json, "Print one JSON object");

  auto show_path = std::make_shared<std::string>();
  auto show_json = std::make_shared<bool>(false);
  CLI::App* show = cmd->add_subcommand("show", "Print and check a bundle");
  show->add_option("FILE", *show_path, "Bundle file (.ternbundle)")->required();
  show->add_flag("--json", *show_json, "Print one JSON object");
  show->callback([show_path, show_json, exit_code] {
    *exit_code = ShowBundle(*show_path, *show_json);
  });
  cmd->callback([cmd, o, exit_code] {
    if (cmd->got_subcommand("show")) return;
    for (const auto& [value, flag] :
         {std::pair{&o->release, "--release"},
          std::pair{&o->artifact, "--artifact"}, std::pair{&o->out, "--out"}}) {
      if (value->empty()) {
        *exit_code = FleetFail(InvalidArgument("bundle: %s is required", flag));
        return;
      }
    }
    *exit_code = MakeBundle(*o);
  });
}

}  // namespace ternd::ternctl
