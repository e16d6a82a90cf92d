// Ed25519 signatures over ternd's signed metadata, with OpenSSL 3.
//
// A signature is made over  "ternd-signed-v1\0" || role || "\0" || payload,
// never over the bare payload, so a signature made for one role (say a
// timestamp) can never be replayed as another (a release). Key ids are the
// lowercase hex SHA-256 of the 32-byte raw public key.
//
// Thread-safety: all functions are safe to call from any thread.
#ifndef TERND_OTA_SIGNING_H_
#define TERND_OTA_SIGNING_H_

#include <array>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "ota/metadata.pb.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace ternd::ota {

using Ed25519PublicKey = std::array<uint8_t, 32>;
using Ed25519Seed = std::array<uint8_t, 32>;  // the private key
using Ed25519Signature = std::array<uint8_t, 64>;

struct Ed25519KeyPair {
  Ed25519PublicKey public_key;
  Ed25519Seed seed;
};

Result<Ed25519KeyPair> GenerateEd25519KeyPair();
// The key pair whose private key is `seed` (RFC 8032).
Result<Ed25519KeyPair> Ed25519KeyPairFromSeed(const Ed25519Seed& seed);

std::string KeyId(const Ed25519PublicKey& key);

// The raw 32-byte SHA-256 of `bytes`.
std::string Sha256(std::string_view bytes);

// Incremental SHA-256 (OpenSSL; SHA-NI where the CPU has it).
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;
  void Update(std::string_view bytes);
  std::string Final();  // raw 32 bytes; call once

 private:
  ::evp_md_ctx_st* ctx_;
};
// Lowercase hex of raw bytes (key ids, hashes in messages).
std::string Hex(std::string_view bytes);

// The bytes a signature for `role` over `payload` covers.
std::vector<uint8_t> SignedBytes(std::string_view role,
                                 std::span<const uint8_t> payload);

Result<Ed25519Signature> SignEd25519(const Ed25519Seed& seed,
                                     std::span<const uint8_t> message);
bool VerifyEd25519(const Ed25519PublicKey& key,
                   std::span<const uint8_t> message,
                   std::span<const uint8_t> signature);

// Wraps `payload` in an envelope signed by each of `signers` for `role`.
Result<SignedEnvelope> SignEnvelope(std::string_view role,
                                    std::span<const uint8_t> payload,
                                    std::span<const Ed25519KeyPair> signers);

// Checks that `envelope` is for `role` and carries valid signatures from at
// least `keys.threshold()` distinct key ids listed in `keys`. Signatures by
// unknown keys (not in `known`, whatever `keys` lists), by known keys
// outside the role (not in `keys`) and bad signatures do not count (a key
// counts once however often it signs). A threshold of 0 is refused. The
// error says how many valid signatures were found, how many are needed and
// why the others did not count.
Status VerifyEnvelope(const SignedEnvelope& envelope, std::string_view role,
                      const RoleKeys& keys,
                      const std::map<std::string, Ed25519PublicKey>& known);

}  // namespace ternd::ota

#endif  // TERND_OTA_SIGNING_H_
