// ota/bundle.h: the offline bundle parser is fed untrusted files; each
// structural problem is refused with the part named.
#include "ota/bundle.h"

#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <string>
#include <vector>

#include "ota/signing.h"
#include "ota/trust.h"

namespace ternd::ota {
namespace {

Ed25519KeyPair Key() {
  auto k = GenerateEd25519KeyPair();
  EXPECT_TRUE(k.ok());
  return *k;
}

std::string Sign(const std::string& role, const std::string& payload,
                 const Ed25519KeyPair& key) {
  std::vector<Ed25519KeyPair> keys = {key};
  auto env = SignEnvelope(
      role, {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()},
      keys);
  EXPECT_TRUE(env.ok());
  return env->SerializeAsString();
}

struct Parts {
  Ed25519KeyPair key = Key();
  std::string artifact = std::string(10000, 'z') + "end";
  Root root;
  Release release;
  Timestamp timestamp;

  Parts() {
    root.set_fleet("acme");
    root.set_version(1);
    PublicKey* k = root.add_keys();
    k->set_key_id(KeyId(key.public_key));
    k->set_ed25519(key.public_key.data(), 32);
    for (RoleKeys* r : {root.mutable_root(), root.mutable_release(),
                        root.mutable_timestamp()}) {
      r->add_key_ids(KeyId(key.public_key));
      r->set_threshold(1);
    }
    release.set_model_name("m");
    release.set_model_version(2);
    release.set_artifact_length(artifact.size());
    release.set_artifact_sha256(Sha256(artifact));
    release.set_chunk_size(4096);
    for (size_t at = 0; at < artifact.size(); at += 4096) {
      release.add_chunk_sha256(Sha256(artifact.substr(at, 4096)));
    }
    timestamp.set_release_sha256(Sha256(release.SerializeAsString()));
  }

  BundleContents Contents(int roots = 1) {
    BundleContents c;
    Root r = root;
    for (int i = 0; i < roots; ++i) {
      r.set_version(static_cast<uint64_t>(i) + 1);
      c.root_envelopes.push_back(Sign("root", r.SerializeAsString(), key));
    }
    c.release_envelope = Sign("release", release.SerializeAsString(), key);
    c.timestamp_envelope =
        Sign("timestamp", timestamp.SerializeAsString(), key);
    c.artifact = artifact;
    return c;
  }

  // Serializes without EncodeBundle's check, to build broken bundles.
  static std::string Raw(const BundleContents& c, uint32_t format = 1) {
    Bundle b;
    b.set_format_version(format);
    for (const std::string& r : c.root_envelopes) b.add_roots(r);
    b.set_release(c.release_envelope);
    b.set_timestamp(c.timestamp_envelope);
    b.set_artifact(c.artifact);
    return b.SerializeAsString();
  }
};

std::string Refusal(const std::string& bytes, const BundleLimits& limits = {}) {
  auto c = ParseBundle(bytes, "u.ternbundle", limits);
  EXPECT_FALSE(c.ok());
  return c.ok() ? "" : c.status().message();
}

TEST(BundleTest, EncodeParseRoundTrip) {
  Parts p;
  BundleContents in = p.Contents(3);
  auto bytes = EncodeBundle(in);
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  auto out = ParseBundle(*bytes, "u.ternbundle");
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ(out->root_envelopes, in.root_envelopes);
  ASSERT_EQ(out->roots.size(), 3u);
  EXPECT_EQ(out->roots[2].version(), 3u);
  EXPECT_EQ(out->release_envelope, in.release_envelope);
  EXPECT_EQ(out->release.model_version(), 2u);
  EXPECT_EQ(out->timestamp_envelope, in.timestamp_envelope);
  EXPECT_EQ(out->artifact, in.artifact);
  // The parts are exactly what ota/trust.h verifies.
  auto state = TrustFromPinnedRoot(out->root_envelopes[0]);
  ASSERT_TRUE(state.ok()) << state.status().message();
  // Without roots or a timestamp it is still a bundle.
  in.root_envelopes.clear();
  in.timestamp_envelope.clear();
  ASSERT_TRUE(EncodeBundle(in).ok());
}

TEST(BundleTest, RefusesWhatIsNotABundle) {
  EXPECT_NE(Refusal("").find("u.ternbundle: not a ternd update bundle (no "
                             "format_version"),
            std::string::npos);
  EXPECT_NE(Refusal("\xff\xff\xff garbage").find("not a Bundle protobuf"),
            std::string::npos);
  Parts p;
  EXPECT_NE(Refusal(Parts::Raw(p.Contents(), 2))
                .find("bundle format version 2, this ternd reads version 1"),
            std::string::npos);
  // Truncation anywhere is an error, never a crash.
  const std::string good = Parts::Raw(p.Contents());
  for (size_t n = 0; n < good.size(); n += 97) {
    EXPECT_FALSE(ParseBundle(good.substr(0, n), "cut").ok()) << n;
  }
}

TEST(BundleTest, RefusesBadParts) {
  Parts p;
  BundleContents c = p.Contents(2);
  std::swap(c.root_envelopes[0], c.root_envelopes[1]);
  EXPECT_NE(Refusal(Parts::Raw(c))
                .find("root[1] is root version 1, "
                      "expected 3"),
            std::string::npos);

  c = p.Contents();
  c.release_envelope = c.timestamp_envelope;
  EXPECT_NE(Refusal(Parts::Raw(c))
                .find("release is a 'timestamp' envelope, "
                      "expected 'release'"),
            std::string::npos);

  c = p.Contents();
  c.release_envelope.clear();
  EXPECT_NE(Refusal(Parts::Raw(c)).find("release is missing"),
            std::string::npos);

  c = p.Contents();
  ota::SignedEnvelope unsigned_env;
  unsigned_env.set_role("release");
  unsigned_env.set_payload(p.release.SerializeAsString());
  c.release_envelope = unsigned_env.SerializeAsString();
  EXPECT_NE(Refusal(Parts::Raw(c)).find("release carries no signatures"),
            std::string::npos);

  c = p.Contents();
  Timestamp other = p.timestamp;
  other.set_release_sha256(std::string(32, 'x'));
  c.timestamp_envelope = Sign("timestamp", other.SerializeAsString(), p.key);
  EXPECT_NE(Refusal(Parts::Raw(c)).find("timestamp names release"),
            std::string::npos);

  c = p.Contents();
  c.artifact.pop_back();
  EXPECT_NE(Refusal(Parts::Raw(c))
                .find("artifact is 10002 bytes, release of "
                      "'m' v2 states 10003"),
            std::string::npos);

  // Each chunk is checked as it is read, then the whole artifact.
  c = p.Contents();
  c.artifact[0] = 'y';
  EXPECT_NE(
      Refusal(Parts::Raw(c)).find("artifact chunk 0 (offset 0) does not match"),
      std::string::npos);
  Parts whole;
  whole.release.set_artifact_sha256(std::string(32, 'z'));
  c = whole.Contents();
  c.timestamp_envelope.clear();
  EXPECT_NE(Refusal(Parts::Raw(c)).find("artifact SHA-256 is"),
            std::string::npos);

  c = p.Contents();
  c.artifact.clear();
  EXPECT_NE(Refusal(Parts::Raw(c)).find("artifact is missing"),
            std::string::npos);
}

TEST(BundleTest, ChunkHashesMustMatchTheArtifact) {
  Parts p;
  p.release.set_chunk_sha256(1, std::string(32, 'q'));
  BundleContents c = p.Contents();
  c.timestamp_envelope.clear();
  EXPECT_NE(Refusal(Parts::Raw(c))
                .find("artifact chunk 1 (offset 4096) does "
                      "not match"),
            std::string::npos);
  p.release.mutable_chunk_sha256()->RemoveLast();
  c = p.Contents();
  c.timestamp_envelope.clear();
  EXPECT_NE(Refusal(Parts::Raw(c)).find("lists 2 chunk hashes"),
            std::string::npos);
}

// A content-addressed release (docs/ota.md, "Delta downloads"): chunks of
// the lengths it lists, each checked; lengths that do not tile the artifact
// are refused.
TEST(BundleTest, ContentAddressedChunks) {
  Parts p;
  p.release.set_chunk_size(0);
  p.release.clear_chunk_sha256();
  const std::vector<uint64_t> lengths = {3000, 7000, 3};
  uint64_t at = 0;
  for (uint64_t len : lengths) {
    p.release.add_chunk_length(len);
    p.release.add_chunk_sha256(Sha256(p.artifact.substr(at, len)));
    at += len;
  }
  BundleContents c = p.Contents();
  c.timestamp_envelope.clear();
  auto parsed = ParseBundle(Parts::Raw(c), "u.ternbundle", {});
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();

  p.release.set_chunk_length(1, 6999);
  c = p.Contents();
  c.timestamp_envelope.clear();
  EXPECT_NE(Refusal(Parts::Raw(c)).find("chunk lengths sum to 10002"),
            std::string::npos)
      << Refusal(Parts::Raw(c));
  p.release.set_chunk_length(1, 0);
  c = p.Contents();
  c.timestamp_envelope.clear();
  EXPECT_NE(Refusal(Parts::Raw(c)).find("chunk_length[1] = 0"),
            std::string::npos)
      << Refusal(Parts::Raw(c));
  p.release.set_chunk_length(1, 7000);
  p.release.set_chunk_sha256(2, std::string(32, 'q'));
  c = p.Contents();
  c.timestamp_envelope.clear();
  EXPECT_NE(Refusal(Parts::Raw(c)).find("artifact chunk 2 (offset 10000)"),
            std::string::npos)
      << Refusal(Parts::Raw(c));
}

// A chunk size near 2^64 made `length + size - 1` wrap: zero chunks were
// expected, zero hashes given, and the chunk loop read hash 0 of none.
TEST(BundleTest, HugeChunkSizeIsRefusedNotWrapped) {
  Parts p;
  p.release.set_chunk_size(UINT64_MAX - 5);
  p.release.clear_chunk_sha256();
  BundleContents c = p.Contents();
  c.timestamp_envelope.clear();
  EXPECT_NE(Refusal(Parts::Raw(c)).find("lists 0 chunk hashes"),
            std::string::npos)
      << Refusal(Parts::Raw(c));
}

TEST(BundleTest, EnforcesLimits) {
  Parts p;
  const std::string bytes = Parts::Raw(p.Contents(3));
  BundleLimits small;
  small.max_bundle_bytes = bytes.size() - 1;
  EXPECT_NE(Refusal(bytes, small).find("bundle is"), std::string::npos);
  BundleLimits roots;
  roots.max_roots = 2;
  EXPECT_NE(Refusal(bytes, roots).find("bundle holds more than 2 roots"),
            std::string::npos);
  BundleLimits artifact;
  artifact.max_artifact_bytes = 100;
  EXPECT_NE(Refusal(bytes, artifact)
                .find("artifact is 10003 bytes, the limit "
                      "is 100"),
            std::string::npos);
  BundleLimits envelope;
  envelope.max_envelope_bytes = 50;
  EXPECT_NE(Refusal(bytes, envelope).find("root[0] is"), std::string::npos);
  // EncodeBundle never writes what the parser would refuse.
  auto enc = EncodeBundle(p.Contents(3), roots);
  EXPECT_FALSE(enc.ok());
}

}  // namespace
}  // namespace ternd::ota
