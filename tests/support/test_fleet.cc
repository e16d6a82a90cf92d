#include "tests/support/test_fleet.h"

#include <time.h>
#include <zstd.h>

#include <cstdlib>
#include <stdexcept>

#include "ota/artifact.h"
#include "ota/bundle.h"

namespace ternd::testing {
namespace {

void AddKey(ota::Root& root, ota::RoleKeys* role,
            const ota::Ed25519KeyPair& key) {
  ota::PublicKey* pk = root.add_keys();
  pk->set_key_id(ota::KeyId(key.public_key));
  pk->set_ed25519(key.public_key.data(), key.public_key.size());
  role->add_key_ids(ota::KeyId(key.public_key));
  role->set_threshold(1);
}

std::string SignedEnvelope(const std::string& role, const std::string& payload,
                           const std::vector<ota::Ed25519KeyPair>& signers) {
  Result<ota::SignedEnvelope> env = ota::SignEnvelope(
      role, {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()},
      signers);
  if (!env.ok()) throw std::runtime_error(env.status().message());
  return env->SerializeAsString();
}

}  // namespace

ota::Ed25519KeyPair TestFleet::NewKey() {
  Result<ota::Ed25519KeyPair> k = ota::GenerateEd25519KeyPair();
  if (!k.ok()) throw std::runtime_error(k.status().message());
  return *k;
}

TestFleet::TestFleet(std::string fleet)
    : fleet_(std::move(fleet)),
      root_key_(NewKey()),
      release_key_(NewKey()),
      timestamp_key_(NewKey()),
      now_(static_cast<int64_t>(::time(nullptr))) {}

std::string TestFleet::RootEnvelope(
    uint64_t version,
    const std::vector<ota::Ed25519KeyPair>& extra_signers) const {
  ota::Root root;
  root.set_fleet(fleet_);
  root.set_version(version);
  root.set_expires(now_ + 365 * 86400);
  ota::PublicKey* pk = root.add_keys();
  pk->set_key_id(ota::KeyId(root_key_.public_key));
  pk->set_ed25519(root_key_.public_key.data(), 32);
  root.mutable_root()->add_key_ids(ota::KeyId(root_key_.public_key));
  root.mutable_root()->set_threshold(1);
  AddKey(root, root.mutable_release(), release_key_);
  AddKey(root, root.mutable_timestamp(), timestamp_key_);
  std::vector<ota::Ed25519KeyPair> signers = {root_key_};
  signers.insert(signers.end(), extra_signers.begin(), extra_signers.end());
  std::string env = SignedEnvelope("root", root.SerializeAsString(), signers);
  if (roots_.size() < version) roots_.resize(version);
  roots_[version - 1] = env;
  return env;
}

SignedRelease TestFleet::Release(const std::string& model_bytes,
                                 const std::string& name, uint64_t version,
                                 uint64_t sequence, const std::string& device,
                                 const std::string& group,
                                 uint64_t chunk_size) const {
  SignedRelease out;
  out.artifact.resize(ZSTD_compressBound(model_bytes.size()));
  const size_t n = ZSTD_compress(out.artifact.data(), out.artifact.size(),
                                 model_bytes.data(), model_bytes.size(), 3);
  if (ZSTD_isError(n)) throw std::runtime_error(ZSTD_getErrorName(n));
  out.artifact.resize(n);
  ota::Release& r = out.release;
  r.set_model_name(name);
  r.set_model_version(version);
  r.set_sequence(sequence);
  r.add_urls("https://artifacts.invalid/" + name + ".tern.zst");
  r.set_artifact_sha256(ota::Sha256(out.artifact));
  r.set_artifact_length(out.artifact.size());
  r.set_model_sha256(ota::Sha256(model_bytes));
  r.set_model_length(model_bytes.size());
  r.set_chunk_size(chunk_size);
  for (uint64_t off = 0; off < out.artifact.size(); off += chunk_size) {
    r.add_chunk_sha256(ota::Sha256(out.artifact.substr(off, chunk_size)));
  }
  r.set_issued(now_ - 60);
  r.set_expires(now_ + 7 * 86400);
  if (!device.empty()) r.add_target_devices(device);
  if (!group.empty()) r.add_target_groups(group);
  r.set_rollout_id("rollout-" + std::to_string(sequence));
  out.envelope = Sign(r);
  return out;
}

std::string TestFleet::Sign(const ota::Release& release) const {
  return SignedEnvelope("release", release.SerializeAsString(), {release_key_});
}

std::string TestFleet::Timestamp(int64_t issued) const {
  ota::Timestamp ts;
  ts.set_issued(issued);
  ts.set_expires(issued + 3600);
  return SignedEnvelope("timestamp", ts.SerializeAsString(), {timestamp_key_});
}

std::string TestFleet::Halt(const std::string& rollout_id,
                            const std::string& reason,
                            const ota::Ed25519KeyPair* key) const {
  ota::RolloutHalt h;
  h.set_rollout_id(rollout_id);
  h.set_issued(now_);
  h.set_expires(now_ + 86400);
  h.set_reason(reason);
  return SignedEnvelope("halt", h.SerializeAsString(),
                        {key ? *key : release_key_});
}

std::string TestFleet::Bundle(const SignedRelease& r,
                              uint64_t root_version) const {
  ota::BundleContents b;
  for (uint64_t v = 1; v <= root_version; ++v) {
    if (v > roots_.size() || roots_[v - 1].empty()) RootEnvelope(v);
    b.root_envelopes.push_back(roots_[v - 1]);
  }
  b.release_envelope = r.envelope;
  b.artifact = r.artifact;
  Result<std::string> bytes = ota::EncodeBundle(b);
  if (!bytes.ok()) throw std::runtime_error(bytes.status().message());
  return *bytes;
}

}  // namespace ternd::testing
