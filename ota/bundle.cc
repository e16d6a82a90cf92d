#include "ota/bundle.h"

#include <openssl/sha.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "ota/artifact.h"
#include "ota/signing.h"
#include "ota/trust.h"

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

// A bounded look at the bundle: reads varints and fields at a position.
class WireCursor {
 public:
  WireCursor(const BundleReadFn& read, uint64_t size)
      : read_(read), size_(size) {}
  uint64_t pos() const { return pos_; }
  bool at_end() const { return pos_ >= size_; }

  Status Varint(uint64_t* value, const char* what) {
    char buf[10];
    const size_t n = static_cast<size_t>(std::min<uint64_t>(10, size_ - pos_));
    TERND_RETURN_IF_ERROR(read_(pos_, n, buf));
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) {
      const auto byte = static_cast<uint8_t>(buf[i]);
      v |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
      if ((byte & 0x80) == 0) {
        pos_ += i + 1;
        *value = v;
        return Status::Ok();
      }
    }
    return InvalidArgument(
        "not a ternd update bundle (a malformed %s at byte %llu)", what,
        static_cast<unsigned long long>(pos_));
  }

  Status Bytes(uint64_t length, std::string* out) {
    out->resize(static_cast<size_t>(length));
    TERND_RETURN_IF_ERROR(read_(pos_, out->size(), out->data()));
    pos_ += length;
    return Status::Ok();
  }

 private:
  const BundleReadFn& read_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

const char* FieldName(uint64_t field) {
  switch (field) {
    case 1:
      return "format_version";
    case 2:
      return "root";
    case 3:
      return "release";
    case 4:
      return "timestamp";
    case 5:
      return "artifact";
  }
  return "unknown field";
}

// Checks the parts before the artifact and fills `c` with them.
Status CheckHead(uint64_t format_version, std::vector<std::string> roots,
                 std::string release, std::string timestamp,
                 const BundleLimits& limits, BundleContents* c) {
  if (format_version == 0) {
    return InvalidArgument("not a ternd update bundle (no format_version)");
  }
  if (format_version != kBundleFormatVersion) {
    return InvalidArgument(
        "bundle format version %llu, this ternd reads version %u",
        static_cast<unsigned long long>(format_version), kBundleFormatVersion);
  }
  for (size_t i = 0; i < roots.size(); ++i) {
    Root root;
    const std::string part = "root[" + std::to_string(i) + "]";
    TERND_RETURN_IF_ERROR(ParsePart(roots[i], "root", part, limits, &root));
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
    c->root_envelopes.push_back(std::move(roots[i]));
    c->roots.push_back(std::move(root));
  }
  if (release.empty()) return InvalidArgument("release is missing");
  TERND_RETURN_IF_ERROR(
      ParsePart(release, "release", "release", limits, &c->release));
  c->release_envelope = std::move(release);
  if (!timestamp.empty()) {
    TERND_RETURN_IF_ERROR(
        ParsePart(timestamp, "timestamp", "timestamp", limits, &c->timestamp));
    SignedEnvelope release_env;
    release_env.ParseFromString(c->release_envelope);  // parsed above
    const std::string digest = Sha256(release_env.payload());
    if (c->timestamp.release_sha256() != digest) {
      return InvalidArgument(
          "timestamp names release %.64s, the bundled release is %s",
          Hex(c->timestamp.release_sha256()).c_str(), Hex(digest).c_str());
    }
    c->timestamp_envelope = std::move(timestamp);
  }
  return Status::Ok();
}

Status ReadHeadInto(const BundleReadFn& read, uint64_t size,
                    const BundleLimits& limits, BundleHead* head) {
  if (size > limits.max_bundle_bytes) {
    return ResourceExhausted(
        "bundle is %llu bytes, the limit is %llu",
        static_cast<unsigned long long>(size),
        static_cast<unsigned long long>(limits.max_bundle_bytes));
  }
  WireCursor cursor(read, size);
  uint64_t format_version = 0;
  std::vector<std::string> roots;
  std::string release, timestamp;
  bool seen[6] = {};
  for (;;) {
    if (cursor.at_end()) {
      if (!seen[1]) {
        return InvalidArgument(
            "not a ternd update bundle (no format_version; %llu bytes)",
            static_cast<unsigned long long>(size));
      }
      return InvalidArgument("artifact is missing");
    }
    uint64_t tag = 0;
    TERND_RETURN_IF_ERROR(cursor.Varint(&tag, "field tag"));
    const uint64_t field = tag >> 3;
    const uint64_t wire_type = tag & 7;
    const uint64_t expected_type = field == 1 ? 0 : 2;
    if (field < 1 || field > 5 || wire_type != expected_type) {
      return InvalidArgument(
          "not a ternd update bundle (%llu bytes that are not a Bundle "
          "protobuf: field %llu of wire type %llu before byte %llu)",
          static_cast<unsigned long long>(size),
          static_cast<unsigned long long>(field),
          static_cast<unsigned long long>(wire_type),
          static_cast<unsigned long long>(cursor.pos()));
    }
    if (field != 2 && seen[field]) {
      return InvalidArgument("bundle has its %s twice", FieldName(field));
    }
    seen[field] = true;
    if (field == 1) {
      TERND_RETURN_IF_ERROR(cursor.Varint(&format_version, "format_version"));
      continue;
    }
    uint64_t length = 0;
    TERND_RETURN_IF_ERROR(cursor.Varint(&length, "field length"));
    if (length > size - cursor.pos()) {
      return InvalidArgument(
          "%s of %llu bytes at byte %llu runs past the end of the %llu-byte "
          "bundle",
          FieldName(field), static_cast<unsigned long long>(length),
          static_cast<unsigned long long>(cursor.pos()),
          static_cast<unsigned long long>(size));
    }
    if (field == 5) {
      if (cursor.pos() + length != size) {
        return InvalidArgument(
            "the artifact must be the bundle's last part (it ends at byte "
            "%llu of %llu)",
            static_cast<unsigned long long>(cursor.pos() + length),
            static_cast<unsigned long long>(size));
      }
      head->artifact_offset = cursor.pos();
      head->artifact_length = length;
      break;
    }
    const std::string part = field == 2
                                 ? "root[" + std::to_string(roots.size()) + "]"
                                 : FieldName(field);
    if (length > limits.max_envelope_bytes) {
      return ResourceExhausted(
          "%s is %llu bytes, the limit is %llu", part.c_str(),
          static_cast<unsigned long long>(length),
          static_cast<unsigned long long>(limits.max_envelope_bytes));
    }
    if (field == 2 && static_cast<int>(roots.size()) >= limits.max_roots) {
      return ResourceExhausted("bundle holds more than %d roots, the limit",
                               limits.max_roots);
    }
    std::string bytes;
    TERND_RETURN_IF_ERROR(cursor.Bytes(length, &bytes));
    if (field == 2) {
      roots.push_back(std::move(bytes));
    } else if (field == 3) {
      release = std::move(bytes);
    } else {
      timestamp = std::move(bytes);
    }
  }
  TERND_RETURN_IF_ERROR(CheckHead(format_version, std::move(roots),
                                  std::move(release), std::move(timestamp),
                                  limits, &head->contents));
  // What the (still unverified) release says of the artifact must hold
  // before any of it is read.
  const Release& r = head->contents.release;
  const unsigned long long version = r.model_version();
  if (head->artifact_length == 0) return InvalidArgument("artifact is missing");
  if (head->artifact_length > limits.max_artifact_bytes) {
    return ResourceExhausted(
        "artifact is %llu bytes, the limit is %llu",
        static_cast<unsigned long long>(head->artifact_length),
        static_cast<unsigned long long>(limits.max_artifact_bytes));
  }
  if (head->artifact_length != r.artifact_length()) {
    return InvalidArgument(
        "artifact is %llu bytes, release of '%.64s' v%llu states %llu",
        static_cast<unsigned long long>(head->artifact_length),
        r.model_name().c_str(), version,
        static_cast<unsigned long long>(r.artifact_length()));
  }
  if (r.chunk_length_size() > 0) {
    // Content-addressed (docs/ota.md, "Delta downloads"): one hash per
    // chunk length, none 0, the lengths summing to the artifact's.
    if (r.chunk_sha256_size() != r.chunk_length_size()) {
      return InvalidArgument(
          "release of '%.64s' v%llu lists %d chunk hashes for %d chunk "
          "lengths",
          r.model_name().c_str(), version, r.chunk_sha256_size(),
          r.chunk_length_size());
    }
    uint64_t sum = 0;
    for (int i = 0; i < r.chunk_length_size(); ++i) {
      const uint64_t len = r.chunk_length(i);
      if (len == 0 || len > head->artifact_length - sum) {
        return InvalidArgument(
            "release of '%.64s' v%llu: chunk_length[%d] = %llu at offset "
            "%llu does not fit the %llu-byte artifact (or is 0)",
            r.model_name().c_str(), version, i,
            static_cast<unsigned long long>(len),
            static_cast<unsigned long long>(sum),
            static_cast<unsigned long long>(head->artifact_length));
      }
      sum += len;
    }
    if (sum != head->artifact_length) {
      return InvalidArgument(
          "release of '%.64s' v%llu: chunk lengths sum to %llu, the "
          "artifact is %llu bytes",
          r.model_name().c_str(), version, static_cast<unsigned long long>(sum),
          static_cast<unsigned long long>(head->artifact_length));
    }
    return Status::Ok();
  }
  if (r.chunk_size() == 0) {
    return InvalidArgument("release of '%.64s' v%llu has chunk_size 0",
                           r.model_name().c_str(), version);
  }
  const uint64_t chunks = ChunkCount(head->artifact_length, r.chunk_size());
  if (static_cast<uint64_t>(r.chunk_sha256_size()) != chunks) {
    return InvalidArgument(
        "release of '%.64s' v%llu lists %d chunk hashes, its %llu-byte "
        "artifact in chunks of %llu bytes has %llu",
        r.model_name().c_str(), version, r.chunk_sha256_size(),
        static_cast<unsigned long long>(head->artifact_length),
        static_cast<unsigned long long>(r.chunk_size()),
        static_cast<unsigned long long>(chunks));
  }
  return Status::Ok();
}

BundleReadFn MemoryReader(std::string_view bytes) {
  return [bytes](uint64_t offset, size_t n, char* dst) -> Status {
    if (offset > bytes.size() || n > bytes.size() - offset) {
      return InvalidArgument("bundle ends at byte %zu", bytes.size());
    }
    std::memcpy(dst, bytes.data() + offset, n);
    return Status::Ok();
  };
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

Result<BundleHead> ReadBundleHead(const BundleReadFn& read, uint64_t size,
                                  std::string_view origin,
                                  const BundleLimits& limits) {
  BundleHead head;
  Status s = ReadHeadInto(read, size, limits, &head);
  if (!s.ok()) return s.Prepend(origin);
  return head;
}

Status ForEachArtifactChunk(
    const BundleReadFn& read, const BundleHead& head,
    const std::function<Status(uint64_t index, std::string_view chunk)>& sink) {
  const Release& r = head.contents.release;
  Sha256Hasher whole;
  std::string chunk;
  for (uint64_t i = 0, at = 0; at < head.artifact_length; ++i) {
    const uint64_t n =
        r.chunk_length_size() > 0
            ? (i < static_cast<uint64_t>(r.chunk_length_size())
                   ? std::min<uint64_t>(r.chunk_length(static_cast<int>(i)),
                                        head.artifact_length - at)
                   : 0)
            : std::min<uint64_t>(r.chunk_size(), head.artifact_length - at);
    if (n == 0 || i >= static_cast<uint64_t>(r.chunk_sha256_size())) {
      return InvalidArgument(
          "artifact chunk %llu (offset %llu): the release's chunk lengths "
          "do not cover the %llu-byte artifact",
          static_cast<unsigned long long>(i),
          static_cast<unsigned long long>(at),
          static_cast<unsigned long long>(head.artifact_length));
    }
    chunk.resize(static_cast<size_t>(n));
    TERND_RETURN_IF_ERROR(
        read(head.artifact_offset + at, chunk.size(), chunk.data()));
    if (Sha256(chunk) != r.chunk_sha256(static_cast<int>(i))) {
      return InvalidArgument(
          "artifact chunk %llu (offset %llu) does not match the chunk hash "
          "that release of '%.64s' v%llu states",
          static_cast<unsigned long long>(i),
          static_cast<unsigned long long>(at), r.model_name().c_str(),
          static_cast<unsigned long long>(r.model_version()));
    }
    whole.Update(chunk);
    TERND_RETURN_IF_ERROR(sink(i, chunk));
    at += n;
  }
  const std::string digest = whole.Final();
  if (digest != r.artifact_sha256()) {
    return InvalidArgument(
        "artifact SHA-256 is %s, release of '%.64s' v%llu states %.64s",
        Hex(digest).c_str(), r.model_name().c_str(),
        static_cast<unsigned long long>(r.model_version()),
        Hex(r.artifact_sha256()).c_str());
  }
  return Status::Ok();
}

Result<BundleContents> ParseBundle(std::string_view bytes,
                                   std::string_view origin,
                                   const BundleLimits& limits) {
  const BundleReadFn read = MemoryReader(bytes);
  TERND_ASSIGN_OR_RETURN(BundleHead head,
                         ReadBundleHead(read, bytes.size(), origin, limits));
  Status s = ForEachArtifactChunk(
      read, head, [](uint64_t, std::string_view) { return Status::Ok(); });
  if (!s.ok()) return s.Prepend(origin);
  head.contents.artifact =
      std::string(bytes.substr(head.artifact_offset, head.artifact_length));
  return std::move(head.contents);
}

}  // namespace ternd::ota
