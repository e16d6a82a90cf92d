// Shared pieces of ternctl's fleet commands (keygen, root, sign, timestamp,
// bundle, publish): errors, times, reading signed metadata and
// writing outputs. Each fleet_*.cc registers its commands with one Add*
// function declared here; AddFleetCommands (fleet_commands.cc) calls them.
#ifndef TERND_TOOLS_TERNCTL_FLEET_COMMON_H_
#define TERND_TOOLS_TERNCTL_FLEET_COMMON_H_

#include <CLI/CLI.hpp>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "ota/metadata.pb.h"
#include "ota/signing.h"

namespace ternd::ternctl {

void AddKeygenCommand(CLI::App& app, int* exit_code);
void AddRootCommand(CLI::App& app, int* exit_code);
void AddSignCommand(CLI::App& app, int* exit_code);
void AddTimestampCommand(CLI::App& app, int* exit_code);
void AddBundleCommand(CLI::App& app, int* exit_code);
void AddPublishCommand(CLI::App& app, int* exit_code);
void AddDeltaCommand(CLI::App& app, int* exit_code);  // fleet_delta.cc
// `rollout halt` and `rollout status` (fleet_rollout.cc).
void AddRolloutCommand(CLI::App& app, int* exit_code);

// How `publish` and `rollout halt` reach the broker (MQTT v5 over TLS).
struct BrokerTarget {
  std::string broker;  // HOST[:PORT]
  std::string cafile, cert, key;
  std::string username, password_file;
  std::string client_id;  // empty: ternctl-publish-PID
  int timeout_s = 30;
};
// Publishes `payload` retained with QoS 1 on `topic` and waits for the
// broker's PUBACK (fleet_publish.cc); errors say what to change.
Status PublishRetained(const BrokerTarget& target, const std::string& topic,
                       const std::string& payload);

// Prints "ternctl: <message>" on stderr and returns 1 (the error exit code).
int FleetFail(const Status& s);

using ::ternd::ota::Hex;     // ota/signing.h
using ::ternd::ota::Sha256;  // ota/signing.h

int64_t NowSeconds();
// "2026-11-23T14:05:00Z" (UTC).
std::string FormatTime(int64_t unix_seconds);
// Accepts "YYYY-MM-DD" (midnight UTC), "YYYY-MM-DDTHH:MM:SSZ" and
// "@UNIX_SECONDS". `flag` names the option in errors.
Result<int64_t> ParseTime(const std::string& text, const char* flag);

// When a signed statement expires: --expires DATE, or now + `amount` units
// (--days / --minutes), or now + `default_seconds` when neither was given.
struct ExpiryOption {
  std::string expires;
  int64_t amount = 0;
};
// Adds --expires and --days/--minutes (`unit_flag`, `unit_seconds`).
void AddExpiryOptions(CLI::App* cmd, ExpiryOption* e, const char* unit_flag,
                      const char* default_text);
Result<int64_t> ResolveExpiry(const ExpiryOption& e, int64_t now,
                              int64_t unit_seconds, int64_t default_seconds,
                              const char* unit_flag);

// The fleet's topic prefix: `prefix` without trailing '/', or else
// ternd/v1/FLEET; an error naming both options when neither is given.
Result<std::string> TopicPrefix(const std::string& prefix,
                                const std::string& fleet);

// The artifact `sign` writes (fleet_sign.cc): the model as one zstd stream
// (content size and checksum in the frame, the machine's cores used).
Result<std::string> CompressArtifact(const std::string& input, int level);
// The content-addressed artifact `sign --content-chunks` writes: one zstd
// frame per content-defined chunk of the model (ota/chunker.h),
// concatenated, so that a chunk unchanged between versions compresses to
// the same bytes (and hash); still one valid zstd stream. `lengths` gets
// each frame's length and `model_lengths`, if given, each chunk's length in
// the model.
Result<std::string> CompressContentChunks(
    const std::string& input, int level, std::vector<uint64_t>* lengths,
    std::vector<uint64_t>* model_lengths = nullptr);

// Reads FILE as a SignedEnvelope of `role`; `*bytes` receives the file's
// exact bytes (what devices verify). Errors name the file and what it holds
// instead.
Result<ota::SignedEnvelope> ReadEnvelopeFile(const std::string& path,
                                             const char* role,
                                             std::string* bytes);

// Reads the private keys (ota/keys.h), refusing the same key twice.
Result<std::vector<ota::Ed25519KeyPair>> ReadSigningKeys(
    const std::vector<std::string>& paths, const char* flag);

// Writes `data` atomically with `mode`; refuses to replace an existing file
// unless `force`, naming the file and the flag that allows it.
Status WriteOutput(const std::string& path, std::string_view data, int mode,
                   bool force);

// Key ids of an envelope's signatures, comma separated.
std::string Signers(const ota::SignedEnvelope& env);

// Makes a repeatable option take one value per occurrence
// (`--key a --key b`), so that positional arguments are never swallowed.
CLI::Option* Repeatable(CLI::Option* option);

}  // namespace ternd::ternctl

#endif  // TERND_TOOLS_TERNCTL_FLEET_COMMON_H_
