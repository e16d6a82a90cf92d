#include "ota/bundle.h"

#include <openssl/sha.h>

#include <algorithm>
#include <climits>

#include "ota/signing.h"

namespace ternd::ota {
namespace {

// Parses one envelope of `role` and its payload into `*payload`.
template <typename Payload>
Status ParsePart(const std::string& bytes, const char* role,
                 const std::string& part, const BundleLimits& limits,
                 Payload* payload) {
  if (bytes.size() > limits.max_envelope_bytes) {
    return ResourceExhausted(
        "%s is %zu bytes, the limit is %llu", part.c_str(), bytes.size(),
        static_cast<unsigned long long>(limits.max_envelope_bytes));
  }
  SignedEnvelope env;
  if (!env.ParseFromString(bytes)) {
    return InvalidArgument("%s (%zu bytes) is not a SignedEnvelope protobuf",
                           part.c_str(), bytes.size());
  }
  if (env.role() != role) {
    return InvalidArgument("%s is a '%.32s' envelope, expected '%s'",
                           part.c_str(), env.role().c_str(), role);
  }
  if (env.signatures_size() == 0) {
    return InvalidArgument("%s carries no signatures", part.c_str());
  }
  if (!payload->ParseFromString(env.payload())) {
    return InvalidArgument("%s payload (%zu bytes) is not a %s protobuf",
                           part.c_str(), env.payload().size(),
                           Payload::descriptor()->name().c_str());
  }
  return Status::Ok();
}

Status CheckArtifact(const BundleContents& c, const BundleLimits& limits) {
  const Release& r = c.release;
  const unsigned long long version = r.model_version();
  if (c.artifact.empty()) return InvalidArgument("artifact is missing");
  if (c.artifact.size() > limits.max_artifact_bytes) {
    return ResourceExhausted(
        "artifact is %zu bytes, the limit is %llu", c.artifact.size(),
        static_cast<unsigned long long>(limits.max_artifact_bytes));
  }
  if (c.artifact.size() != r.artifact_length()) {
    return InvalidArgument(
        "artifact is %zu bytes, release of '%.64s' v%llu states %llu",
        c.artifact.size(), r.model_name().c_str(), version,
        static_cast<unsigned long long>(r.artifact_length()));
  }
  const std::string digest = Sha256(c.artifact);
  if (digest != r.artifact_sha256()) {
    return InvalidArgument(
        "artifact SHA-256 is %s, release of '%.64s' v%llu states %.64s",
        Hex(digest).c_str(), r.model_name().c_str(), version,
        Hex(r.artifact_sha256()).c_str());
  }
  if (r.chunk_size() == 0) {
    return InvalidArgument("release of '%.64s' v%llu has chunk_size 0",
                           r.model_name().c_str(), version);
  }
  const uint64_t chunks =
      (c.artifact.size() + r.chunk_size() - 1) / r.chunk_size();
  if (static_cast<uint64_t>(r.chunk_sha256_size()) != chunks) {
    return InvalidArgument(
        "release of '%.64s' v%llu lists %d chunk hashes, its %zu-byte "
        "artifact in chunks of %llu bytes has %llu",
        r.model_name().c_str(), version, r.chunk_sha256_size(),
        c.artifact.size(), static_cast<unsigned long long>(r.chunk_size()),
        static_cast<unsigned long long>(chunks));
  }
  for (uint64_t i = 0; i < chunks; ++i) {
    const uint64_t at = i * r.chunk_size();
    const std::string_view chunk =
        std::string_view(c.artifact)
            .substr(at,
                    std::min<uint64_t>(r.chunk_size(), c.artifact.size() - at));
    if (Sha256(chunk) != r.chunk_sha256(static_cast<int>(i))) {
      return InvalidArgument(
          "artifact chunk %llu (offset %llu) does not match the release's "
          "chunk hash",
          static_cast<unsigned long long>(i),
          static_cast<unsigned long long>(at));
    }
  }
  return Status::Ok();
}

Status ParseInto(std::string_view bytes, const BundleLimits& limits,
                 BundleContents* c) {
  if (bytes.size() > limits.max_bundle_bytes || bytes.size() > INT_MAX) {
    return ResourceExhausted("bundle is %zu bytes, the limit is %llu",
                             bytes.size(),
                             static_cast<unsigned long long>(std::min<uint64_t>(
                                 limits.max_bundle_bytes, INT_MAX)));
  }
  Bundle b;
  if (!b.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return InvalidArgument(
        "not a ternd update bundle (%zu bytes that are not a Bundle "
        "protobuf)",
        bytes.size());
  }
  if (b.format_version() == 0) {
    return InvalidArgument(
        "not a ternd update bundle (no format_version; %zu bytes)",
        bytes.size());
  }
  if (b.format_version() != kBundleFormatVersion) {
    return InvalidArgument(
        "bundle format version %u, this ternd reads version %u",
        b.format_version(), kBundleFormatVersion);
  }
  if (b.roots_size() > limits.max_roots) {
    return ResourceExhausted("bundle holds %d roots, the limit is %d",
                             b.roots_size(), limits.max_roots);
  }
  for (int i = 0; i < b.roots_size(); ++i) {
    Root root;
    const std::string part = "root[" + std::to_string(i) + "]";
    TERND_RETURN_IF_ERROR(ParsePart(b.roots(i), "root", part, limits, &root));
    if (i > 0) {
      const Root& prev = c->roots.back();
      if (root.version() != prev.version() + 1) {
        return InvalidArgument(
            "%s is root version %llu, expected %llu (roots must be "
            "consecutive versions, oldest first)",
            part.c_str(), static_cast<unsigned long long>(root.version()),
            static_cast<unsigned long long>(prev.version() + 1));
      }
      if (root.fleet() != prev.fleet()) {
        return InvalidArgument("%s is for fleet '%.64s', root[0] for '%.64s'",
                               part.c_str(), root.fleet().c_str(),
                               c->roots.front().fleet().c_str());
      }
    }
    c->root_envelopes.push_back(b.roots(i));
    c->roots.push_back(std::move(root));
  }
  if (b.release().empty()) return InvalidArgument("release is missing");
  TERND_RETURN_IF_ERROR(
      ParsePart(b.release(), "release", "release", limits, &c->release));
  c->release_envelope = b.release();
  if (!b.timestamp().empty()) {
    TERND_RETURN_IF_ERROR(ParsePart(b.timestamp(), "timestamp", "timestamp",
                                    limits, &c->timestamp));
    SignedEnvelope release_env;
    release_env.ParseFromString(c->release_envelope);  // parsed above
    const std::string digest = Sha256(release_env.payload());
    if (c->timestamp.release_sha256() != digest) {
      return InvalidArgument(
          "timestamp names release %.64s, the bundled release is %s",
          Hex(c->timestamp.release_sha256()).c_str(), Hex(digest).c_str());
    }
    c->timestamp_envelope = b.timestamp();
  }
  c->artifact = std::move(*b.mutable_artifact());
  return CheckArtifact(*c, limits);
}

}  // namespace

Result<std::string> EncodeBundle(const BundleContents& contents,
                                 const BundleLimits& limits) {
  Bundle b;
  b.set_format_version(kBundleFormatVersion);
  for (const std::string& r : contents.root_envelopes) b.add_roots(r);
  b.set_release(contents.release_envelope);
  b.set_timestamp(contents.timestamp_envelope);
  b.set_artifact(contents.artifact);
  std::string bytes;
  if (!b.SerializeToString(&bytes)) {
    return Internal("cannot serialize the bundle (%zu bytes of artifact)",
                    contents.artifact.size());
  }
  Result<BundleContents> check = ParseBundle(bytes, "new bundle", limits);
  if (!check.ok()) return check.status();
  return bytes;
}

Result<BundleContents> ParseBundle(std::string_view bytes,
                                   std::string_view origin,
                                   const BundleLimits& limits) {
  BundleContents c;
  Status s = ParseInto(bytes, limits, &c);
  if (!s.ok()) return s.Prepend(origin);
  return c;
}

}  // namespace ternd::ota
