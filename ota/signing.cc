#include "ota/signing.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cstdio>
#include <memory>
#include <set>

namespace ternd::ota {
namespace {

constexpr std::string_view kDomain = "ternd-signed-v1";

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;

}  // namespace

Result<Ed25519KeyPair> Ed25519KeyPairFromSeed(const Ed25519Seed& seed) {
  Pkey key(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(),
                                        seed.size()));
  if (!key) return Internal("OpenSSL cannot make an Ed25519 key from a seed");
  Ed25519KeyPair pair;
  pair.seed = seed;
  size_t len = pair.public_key.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), pair.public_key.data(), &len) !=
          1 ||
      len != pair.public_key.size()) {
    return Internal("OpenSSL cannot derive the Ed25519 public key");
  }
  return pair;
}

Result<Ed25519KeyPair> GenerateEd25519KeyPair() {
  Ed25519Seed seed;
  if (RAND_bytes(seed.data(), static_cast<int>(seed.size())) != 1) {
    return Internal("OpenSSL's random generator failed");
  }
  return Ed25519KeyPairFromSeed(seed);
}

Sha256Hasher::Sha256Hasher() : ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);
}

Sha256Hasher::~Sha256Hasher() { EVP_MD_CTX_free(ctx_); }

void Sha256Hasher::Update(std::string_view bytes) {
  EVP_DigestUpdate(ctx_, bytes.data(), bytes.size());
}

std::string Sha256Hasher::Final() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx_, md, &n);
  return std::string(reinterpret_cast<const char*>(md), n);
}

std::string Sha256(std::string_view bytes) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

std::string KeyId(const Ed25519PublicKey& key) {
  return Hex(Sha256(
      std::string_view(reinterpret_cast<const char*>(key.data()), key.size())));
}

std::vector<uint8_t> SignedBytes(std::string_view role,
                                 std::span<const uint8_t> payload) {
  std::vector<uint8_t> out(kDomain.begin(), kDomain.end());
  out.push_back(0);
  out.insert(out.end(), role.begin(), role.end());
  out.push_back(0);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

Result<Ed25519Signature> SignEd25519(const Ed25519Seed& seed,
                                     std::span<const uint8_t> message) {
  Pkey key(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(),
                                        seed.size()));
  MdCtx ctx(EVP_MD_CTX_new());
  Ed25519Signature sig;
  size_t len = sig.size();
  if (!key || !ctx ||
      EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) !=
          1 ||
      EVP_DigestSign(ctx.get(), sig.data(), &len, message.data(),
                     message.size()) != 1 ||
      len != sig.size()) {
    return Internal("OpenSSL failed to make an Ed25519 signature");
  }
  return sig;
}

bool VerifyEd25519(const Ed25519PublicKey& key,
                   std::span<const uint8_t> message,
                   std::span<const uint8_t> signature) {
  if (signature.size() != 64) return false;
  Pkey pkey(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, key.data(),
                                        key.size()));
  MdCtx ctx(EVP_MD_CTX_new());
  if (!pkey || !ctx ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) !=
          1) {
    return false;
  }
  return EVP_DigestVerify(ctx.get(), signature.data(), signature.size(),
                          message.data(), message.size()) == 1;
}

Result<SignedEnvelope> SignEnvelope(std::string_view role,
                                    std::span<const uint8_t> payload,
                                    std::span<const Ed25519KeyPair> signers) {
  SignedEnvelope env;
  env.set_role(std::string(role));
  env.set_payload(payload.data(), payload.size());
  const std::vector<uint8_t> message = SignedBytes(role, payload);
  for (const Ed25519KeyPair& k : signers) {
    TERND_ASSIGN_OR_RETURN(Ed25519Signature sig, SignEd25519(k.seed, message));
    Signature* s = env.add_signatures();
    s->set_key_id(KeyId(k.public_key));
    s->set_signature(sig.data(), sig.size());
  }
  return env;
}

Status VerifyEnvelope(const SignedEnvelope& envelope, std::string_view role,
                      const RoleKeys& keys,
                      const std::map<std::string, Ed25519PublicKey>& known) {
  if (envelope.role() != role) {
    return InvalidArgument("envelope is for role '%.32s', expected '%.*s'",
                           envelope.role().c_str(),
                           static_cast<int>(role.size()), role.data());
  }
  if (keys.threshold() == 0) {
    return FailedPrecondition(
        "role '%.*s' has threshold 0; refusing to trust "
        "unsigned metadata",
        static_cast<int>(role.size()), role.data());
  }
  const std::set<std::string> allowed(keys.key_ids().begin(),
                                      keys.key_ids().end());
  const std::vector<uint8_t> message = SignedBytes(
      role, std::span<const uint8_t>(
                reinterpret_cast<const uint8_t*>(envelope.payload().data()),
                envelope.payload().size()));
  std::set<std::string> valid;
  int not_in_role = 0, unknown = 0, bad = 0;
  for (const Signature& s : envelope.signatures()) {
    // A key the root does not know at all is unknown, whatever role it
    // claims; a known key not listed for this role is outside the role.
    auto it = known.find(s.key_id());
    if (it == known.end()) {
      ++unknown;
      continue;
    }
    if (!allowed.count(s.key_id())) {
      ++not_in_role;
      continue;
    }
    const std::span<const uint8_t> sig(
        reinterpret_cast<const uint8_t*>(s.signature().data()),
        s.signature().size());
    if (VerifyEd25519(it->second, message, sig)) {
      valid.insert(s.key_id());
    } else {
      ++bad;
    }
  }
  if (valid.size() < keys.threshold()) {
    return Errorf(StatusCode::kPermissionDenied,
                  "'%.*s' metadata has %zu valid signature(s) from its keys, "
                  "%u needed (%d signature(s) by keys outside the role, %d by "
                  "unknown keys, %d invalid)",
                  static_cast<int>(role.size()), role.data(), valid.size(),
                  keys.threshold(), not_in_role, unknown, bad);
  }
  return Status::Ok();
}

}  // namespace ternd::ota
