#include "ota/keys.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>

#include <cerrno>
#include <memory>
#include <vector>

#include "base/file.h"

namespace ternd::ota {
namespace {

constexpr size_t kMaxKeyFileBytes = 64 * 1024;

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using Bio = std::unique_ptr<BIO, BioFree>;

Result<std::string> BioText(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  if (n <= 0 || data == nullptr) return Internal("OpenSSL wrote an empty PEM");
  return std::string(data, static_cast<size_t>(n));
}

Bio ReadBio(std::string_view pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

const char* KeyTypeName(const EVP_PKEY* key) {
  const char* name = EVP_PKEY_get0_type_name(key);
  return name ? name : "unknown";
}

bool LooksLikePrivateKey(std::string_view pem) {
  return pem.find("PRIVATE KEY-----") != std::string_view::npos;
}

// The bytes of a file, wiped when it goes out of scope.
struct SecretBytes {
  std::vector<uint8_t> bytes;
  ~SecretBytes() {
    if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
  }
};

}  // namespace

Result<std::string> EncodePrivateKeyPem(const Ed25519KeyPair& key) {
  Pkey pkey(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr,
                                         key.seed.data(), key.seed.size()));
  Bio bio(BIO_new(BIO_s_mem()));
  if (!pkey || !bio ||
      PEM_write_bio_PrivateKey(bio.get(), pkey.get(), nullptr, nullptr, 0,
                               nullptr, nullptr) != 1) {
    return Internal("OpenSSL cannot encode an Ed25519 private key as PEM");
  }
  return BioText(bio.get());
}

Result<std::string> EncodePublicKeyPem(const Ed25519PublicKey& key) {
  Pkey pkey(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, key.data(),
                                        key.size()));
  Bio bio(BIO_new(BIO_s_mem()));
  if (!pkey || !bio || PEM_write_bio_PUBKEY(bio.get(), pkey.get()) != 1) {
    return Internal("OpenSSL cannot encode an Ed25519 public key as PEM");
  }
  return BioText(bio.get());
}

Result<Ed25519KeyPair> ParsePrivateKeyPem(std::string_view pem,
                                          const std::string& origin) {
  Bio bio = ReadBio(pem);
  // A null passphrase callback with an empty passphrase: an encrypted key
  // fails here instead of prompting on the terminal.
  Pkey pkey(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr,
                                          const_cast<char*>(""))
                : nullptr);
  if (!pkey) {
    return InvalidArgument(
        "%s: not an unencrypted PEM private key (expected "
        "'-----BEGIN PRIVATE KEY-----', PKCS#8 Ed25519, as ternctl keygen "
        "writes)",
        origin.c_str());
  }
  if (EVP_PKEY_get_id(pkey.get()) != EVP_PKEY_ED25519) {
    return InvalidArgument("%s: private key is %s, expected ED25519",
                           origin.c_str(), KeyTypeName(pkey.get()));
  }
  Ed25519Seed seed;
  size_t len = seed.size();
  if (EVP_PKEY_get_raw_private_key(pkey.get(), seed.data(), &len) != 1 ||
      len != seed.size()) {
    return Internal("%s: OpenSSL cannot extract the Ed25519 private key",
                    origin.c_str());
  }
  Result<Ed25519KeyPair> pair = Ed25519KeyPairFromSeed(seed);
  OPENSSL_cleanse(seed.data(), seed.size());
  return pair;
}

Result<Ed25519PublicKey> ParsePublicKeyPem(std::string_view pem,
                                           const std::string& origin) {
  if (LooksLikePrivateKey(pem)) {
    return InvalidArgument(
        "%s: is a private key; pass the public key (NAME.pub) here, the "
        "private key (NAME.key) only to --sign/--key",
        origin.c_str());
  }
  Bio bio = ReadBio(pem);
  Pkey pkey(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr)
                : nullptr);
  if (!pkey) {
    return InvalidArgument(
        "%s: not a PEM public key (expected '-----BEGIN PUBLIC KEY-----', "
        "Ed25519, as ternctl keygen writes)",
        origin.c_str());
  }
  if (EVP_PKEY_get_id(pkey.get()) != EVP_PKEY_ED25519) {
    return InvalidArgument("%s: public key is %s, expected ED25519",
                           origin.c_str(), KeyTypeName(pkey.get()));
  }
  Ed25519PublicKey key;
  size_t len = key.size();
  if (EVP_PKEY_get_raw_public_key(pkey.get(), key.data(), &len) != 1 ||
      len != key.size()) {
    return Internal("%s: OpenSSL cannot extract the Ed25519 public key",
                    origin.c_str());
  }
  return key;
}

Result<Ed25519KeyPair> ReadPrivateKeyFile(const std::string& path) {
  SecretBytes file;
  TERND_ASSIGN_OR_RETURN(file.bytes, ReadFile(path, kMaxKeyFileBytes));
  const std::string_view pem(reinterpret_cast<const char*>(file.bytes.data()),
                             file.bytes.size());
  if (pem.find("-----BEGIN PUBLIC KEY-----") != std::string_view::npos) {
    return InvalidArgument(
        "%s: is a public key; signing needs the private key (NAME.key)",
        path.c_str());
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return ErrnoError(errno, "cannot read private key %s", path.c_str());
  }
  if ((st.st_mode & 077) != 0) {
    return Errorf(StatusCode::kPermissionDenied,
                  "private key %s has mode %04o: group or others may read "
                  "it; run 'chmod 600 %s'",
                  path.c_str(), static_cast<unsigned>(st.st_mode & 07777),
                  path.c_str());
  }
  return ParsePrivateKeyPem(pem, path);
}

Result<Ed25519PublicKey> ReadPublicKeyFile(const std::string& path) {
  SecretBytes file;  // might be a private key passed by mistake
  TERND_ASSIGN_OR_RETURN(file.bytes, ReadFile(path, kMaxKeyFileBytes));
  return ParsePublicKeyPem(
      std::string_view(reinterpret_cast<const char*>(file.bytes.data()),
                       file.bytes.size()),
      path);
}

}  // namespace ternd::ota
