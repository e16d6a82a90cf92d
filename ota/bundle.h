// Offline update bundles (`.ternbundle`): one file holding the root chain,
// a signed release, an optional timestamp and the artifact, for devices with
// no network (`ternctl bundle` writes them, `ternctl install` hands them to
// the daemon). The file is a `Bundle` protobuf (ota/metadata.proto).
//
// The artifact must be the bundle's last field (EncodeBundle writes fields
// in number order, as protobuf serializers do), so a bundle can be read
// without holding it: ReadBundleHead parses everything before the artifact
// and says where the artifact is, and ForEachArtifactChunk reads and checks
// the artifact one chunk at a time. ParseBundle is the same two steps over
// bytes in memory.
//
// ParseBundle is fed untrusted files. It checks structure and sizes only:
// every part is present where required, within limits, a SignedEnvelope of
// the right role whose payload parses; roots are consecutive versions of one
// fleet; a timestamp names the bundled release; the artifact's length,
// SHA-256 and chunk hashes are those the (still unverified) release states.
// It verifies no signature and makes no trust decision: the caller runs the
// parts through ota/trust.h (RotateRoot for each root newer than its own,
// ApplyTimestamp, AcceptRelease) exactly as if they had come over MQTT, and
// uses the artifact only once the release is accepted.
//
// Thread-safety: functions are pure.
#ifndef TERND_OTA_BUNDLE_H_
#define TERND_OTA_BUNDLE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "ota/metadata.pb.h"

namespace ternd::ota {

inline constexpr uint32_t kBundleFormatVersion = 1;

struct BundleLimits {
  uint64_t max_bundle_bytes = (uint64_t{1} << 30) + (uint64_t{16} << 20);
  uint64_t max_artifact_bytes = uint64_t{1} << 30;
  uint64_t max_envelope_bytes = uint64_t{1} << 20;  // each root/release/ts
  int max_roots = 64;
};

// A bundle's parts: the serialized envelopes exactly as they were signed
// (what ota/trust.h takes) with their decoded, unverified payloads.
struct BundleContents {
  std::vector<std::string> root_envelopes;  // oldest first
  std::vector<Root> roots;                  // their payloads, same order
  std::string release_envelope;
  Release release;
  std::string timestamp_envelope;  // empty: no timestamp
  Timestamp timestamp;             // meaningful when timestamp_envelope set
  std::string artifact;
};

// Reads bytes [offset, offset + n) of a bundle into `dst`.
using BundleReadFn =
    std::function<Status(uint64_t offset, size_t n, char* dst)>;

struct BundleHead {
  BundleContents contents;  // every part but the artifact (left empty)
  uint64_t artifact_offset = 0;
  uint64_t artifact_length = 0;
};

// Parses and checks everything before the artifact of a `size`-byte bundle
// (memory: the envelopes, each at most limits.max_envelope_bytes); the
// artifact must be the last field and run to the end. `origin` prefixes
// errors, as in ParseBundle.
Result<BundleHead> ReadBundleHead(const BundleReadFn& read, uint64_t size,
                                  std::string_view origin,
                                  const BundleLimits& limits = {});

// Reads the artifact of `head` one chunk (the release's chunk_size) at a
// time, checks each against the release's chunk hash, hands it to `sink`,
// and at the end checks the artifact's length and SHA-256; the first error
// (of the check or of `sink`) stops it. Memory: one chunk.
Status ForEachArtifactChunk(
    const BundleReadFn& read, const BundleHead& head,
    const std::function<Status(uint64_t index, std::string_view chunk)>& sink);

// Encodes `contents` (only the envelope strings and the artifact are used;
// the decoded payloads are ignored) and checks the result with ParseBundle,
// so that no bundle the parser refuses is ever written.
Result<std::string> EncodeBundle(const BundleContents& contents,
                                 const BundleLimits& limits = {});

// Parses and checks `bytes`; `origin` (a path) prefixes every error, which
// names the part (root[1], release, timestamp, artifact), what was expected
// and what was found.
Result<BundleContents> ParseBundle(std::string_view bytes,
                                   std::string_view origin,
                                   const BundleLimits& limits = {});

}  // namespace ternd::ota

#endif  // TERND_OTA_BUNDLE_H_
