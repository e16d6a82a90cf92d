// Ed25519 key files for the fleet operator's tools (ternctl keygen, root,
// sign, timestamp) and for tests.
//
// Formats are the standard ones OpenSSL reads and writes, so keys can be
// inspected, converted or made with `openssl pkey` / `openssl genpkey`:
//   - private key: PEM PKCS#8 ("-----BEGIN PRIVATE KEY-----"), unencrypted;
//     the file must not be readable by group or others (mode 0600);
//   - public key: PEM SubjectPublicKeyInfo ("-----BEGIN PUBLIC KEY-----"),
//     as `openssl pkey -in NAME.key -pubout` prints it.
// Key ids are ota/signing.h's KeyId (hex SHA-256 of the raw public key).
//
// Private key bytes are wiped from temporary buffers; nothing here logs.
// Thread-safety: all functions are safe to call from any thread.
#ifndef TERND_OTA_KEYS_H_
#define TERND_OTA_KEYS_H_

#include <string>
#include <string_view>

#include "base/status.h"
#include "ota/signing.h"

namespace ternd::ota {

Result<std::string> EncodePrivateKeyPem(const Ed25519KeyPair& key);
Result<std::string> EncodePublicKeyPem(const Ed25519PublicKey& key);

// `origin` (a path) prefixes every error. A PEM of another key type (RSA,
// EC) is refused with its type named.
Result<Ed25519KeyPair> ParsePrivateKeyPem(std::string_view pem,
                                          const std::string& origin);
Result<Ed25519PublicKey> ParsePublicKeyPem(std::string_view pem,
                                           const std::string& origin);

// Reads a private key file; refuses one that group or others may read
// (the error names the path and its mode), like ssh does.
Result<Ed25519KeyPair> ReadPrivateKeyFile(const std::string& path);
// Reads a public key file. A private key file is refused (the error says to
// pass the .pub), so that private keys are never copied into metadata by
// mistake.
Result<Ed25519PublicKey> ReadPublicKeyFile(const std::string& path);

}  // namespace ternd::ota

#endif  // TERND_OTA_KEYS_H_
