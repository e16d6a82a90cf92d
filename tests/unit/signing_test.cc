// Ed25519 signing and threshold verification of signed metadata.
#include "ota/signing.h"

#include <gtest/gtest.h>

#include <string>

namespace ternd::ota {
namespace {

std::vector<uint8_t> FromHex(const std::string& hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    out.push_back(
        static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(SigningTest, Rfc8032TestVector1) {
  // RFC 8032 section 7.1, TEST 1 (empty message).
  Ed25519Seed seed;
  auto s = FromHex(
      "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
  std::copy(s.begin(), s.end(), seed.begin());
  auto pair = Ed25519KeyPairFromSeed(seed);
  ASSERT_TRUE(pair.ok());
  EXPECT_EQ(
      std::vector<uint8_t>(pair->public_key.begin(), pair->public_key.end()),
      FromHex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f"
              "707511a"));
  auto sig = SignEd25519(seed, {});
  ASSERT_TRUE(sig.ok());
  EXPECT_EQ(std::vector<uint8_t>(sig->begin(), sig->end()),
            FromHex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e0652"
                    "24901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe2465"
                    "5141438e7a100b"));
  EXPECT_TRUE(VerifyEd25519(pair->public_key, {}, *sig));
}

struct Fixture {
  std::vector<Ed25519KeyPair> keys;
  std::map<std::string, Ed25519PublicKey> known;
  RoleKeys role;
  Fixture(int n, uint32_t threshold) {
    for (int i = 0; i < n; ++i) {
      auto k = GenerateEd25519KeyPair();
      EXPECT_TRUE(k.ok());
      keys.push_back(*k);
      known[KeyId(k->public_key)] = k->public_key;
      role.add_key_ids(KeyId(k->public_key));
    }
    role.set_threshold(threshold);
  }
};

TEST(SigningTest, ThresholdOfDistinctValidKeys) {
  Fixture f(3, 2);
  const std::string payload = "release manifest bytes";
  auto one = SignEnvelope("release", Bytes(payload), {f.keys.data(), 1});
  auto two = SignEnvelope("release", Bytes(payload), {f.keys.data(), 2});
  ASSERT_TRUE(one.ok() && two.ok());
  EXPECT_TRUE(VerifyEnvelope(*two, "release", f.role, f.known).ok());
  Status s = VerifyEnvelope(*one, "release", f.role, f.known);
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(std::string(s.message()).find("1 valid signature(s)"),
            std::string::npos)
      << s.message();
  EXPECT_NE(std::string(s.message()).find("2 needed"), std::string::npos);

  // The same key signing twice still counts once.
  SignedEnvelope dup = *one;
  *dup.add_signatures() = one->signatures(0);
  EXPECT_FALSE(VerifyEnvelope(dup, "release", f.role, f.known).ok());
}

TEST(SigningTest, TamperingAndWrongRoleAreRefused) {
  Fixture f(1, 1);
  const std::string payload = "version: 7";
  auto env = SignEnvelope("release", Bytes(payload), f.keys);
  ASSERT_TRUE(env.ok());
  SignedEnvelope tampered = *env;
  tampered.set_payload("version: 8");
  EXPECT_FALSE(VerifyEnvelope(tampered, "release", f.role, f.known).ok());
  // Domain separation: a release signature does not verify as a timestamp,
  // even when the envelope's role field is rewritten.
  SignedEnvelope relabeled = *env;
  relabeled.set_role("timestamp");
  EXPECT_FALSE(VerifyEnvelope(relabeled, "timestamp", f.role, f.known).ok());
  EXPECT_NE(std::string(VerifyEnvelope(*env, "root", f.role, f.known).message())
                .find("expected 'root'"),
            std::string::npos);
  // A truncated signature is just invalid.
  SignedEnvelope cut = *env;
  cut.mutable_signatures(0)->mutable_signature()->resize(10);
  Status s = VerifyEnvelope(cut, "release", f.role, f.known);
  EXPECT_NE(std::string(s.message()).find("1 invalid"), std::string::npos)
      << s.message();
}

TEST(SigningTest, KeysOutsideTheRoleAndUnknownKeysDoNotCount) {
  Fixture f(2, 1);
  Fixture other(1, 1);
  const std::string payload = "p";
  auto env = SignEnvelope("release", Bytes(payload), other.keys);
  ASSERT_TRUE(env.ok());
  // A key nobody knows: unknown, not outside the role.
  Status s = VerifyEnvelope(*env, "release", f.role, f.known);
  EXPECT_NE(std::string(s.message())
                .find("(0 signature(s) by keys outside the role, 1 by unknown "
                      "keys, 0 invalid)"),
            std::string::npos)
      << s.message();
  // Listed in the role but its public key is not known: unknown too.
  RoleKeys role = f.role;
  role.add_key_ids(KeyId(other.keys[0].public_key));
  s = VerifyEnvelope(*env, "release", role, f.known);
  EXPECT_NE(std::string(s.message()).find("1 by unknown keys"),
            std::string::npos)
      << s.message();
  // Known, but not one of the role's keys: outside the role.
  std::map<std::string, Ed25519PublicKey> known = f.known;
  known[KeyId(other.keys[0].public_key)] = other.keys[0].public_key;
  s = VerifyEnvelope(*env, "release", f.role, known);
  EXPECT_NE(std::string(s.message())
                .find("(1 signature(s) by keys outside the role, 0 by unknown "
                      "keys, 0 invalid)"),
            std::string::npos)
      << s.message();
  // Threshold 0 never means "no signature needed".
  role.set_threshold(0);
  EXPECT_EQ(VerifyEnvelope(*env, "release", role, f.known).code(),
            StatusCode::kFailedPrecondition);
}

TEST(SigningTest, KeyIdIsHexSha256OfThePublicKey) {
  Ed25519PublicKey zero{};
  // SHA-256 of 32 zero bytes.
  EXPECT_EQ(KeyId(zero),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925");
}

}  // namespace
}  // namespace ternd::ota
