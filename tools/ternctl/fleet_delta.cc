// ternctl delta OLD.tern NEW.tern: how much of NEW a device that holds OLD
// downloads when both are signed with `ternctl sign --content-chunks`
// (content-defined chunks, ota/chunker.h, each a zstd frame of its own): the
// chunks, the bytes shared, the compressed bytes to fetch, against the
// whole artifact `ternctl sign` makes without --content-chunks.
// docs/ota.md ("Delta downloads").
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>

#include "base/file.h"
#include "ota/chunker.h"
#include "tools/ternctl/fleet_common.h"
#include "tools/ternctl/json_output.h"

namespace ternd::ternctl {
namespace {

struct DeltaOptions {
  std::string old_model;
  std::string new_model;
  int zstd_level = 9;  // as `ternctl sign`
  bool json = false;
};

struct Report {
  uint64_t new_bytes = 0, new_chunks = 0;
  uint64_t shared_bytes = 0, shared_chunks = 0;
  uint64_t fetch_bytes = 0, fetch_chunks = 0;
  uint64_t fetch_compressed = 0;    // the chunks to download, compressed
  uint64_t chunked_compressed = 0;  // all of NEW's chunks, compressed
  uint64_t whole_compressed = 0;    // NEW as one zstd stream
};

int RunDelta(const DeltaOptions& o) {
  const ota::ChunkLimits limits;
  if (o.zstd_level < 1 || o.zstd_level > 19) {
    return FleetFail(
        InvalidArgument("--zstd-level %d is outside 1..19", o.zstd_level));
  }
  // As a string, the file's buffer freed (a model may be gigabytes).
  auto read = [](const std::string& path) -> Result<std::string> {
    Result<std::vector<uint8_t>> bytes = ReadFile(path);
    if (!bytes.ok()) return bytes.status();
    return std::string(bytes->begin(), bytes->end());
  };
  Result<std::string> old_model = read(o.old_model);
  if (!old_model.ok()) return FleetFail(old_model.status());
  Result<std::string> new_model = read(o.new_model);
  if (!new_model.ok()) return FleetFail(new_model.status());

  // Both artifacts exactly as `sign --content-chunks` writes them: a device
  // finds a chunk it holds by the SHA-256 of its compressed frame.
  std::vector<uint64_t> old_lengths;
  Result<std::string> old_artifact =
      CompressContentChunks(*old_model, o.zstd_level, &old_lengths);
  if (!old_artifact.ok()) return FleetFail(old_artifact.status());
  std::unordered_set<std::string> have;
  uint64_t at = 0;
  for (uint64_t len : old_lengths) {
    have.insert(Sha256(std::string_view(*old_artifact).substr(at, len)));
    at += len;
  }

  std::vector<uint64_t> frame_lengths, chunk_lengths;
  Result<std::string> new_artifact = CompressContentChunks(
      *new_model, o.zstd_level, &frame_lengths, &chunk_lengths);
  if (!new_artifact.ok()) return FleetFail(new_artifact.status());
  Report r;
  r.new_bytes = new_model->size();
  r.new_chunks = chunk_lengths.size();
  r.chunked_compressed = new_artifact->size();
  std::unordered_set<std::string> fetched;  // a chunk repeated in NEW: once
  at = 0;
  for (size_t i = 0; i < frame_lengths.size(); ++i) {
    const std::string hash =
        Sha256(std::string_view(*new_artifact).substr(at, frame_lengths[i]));
    at += frame_lengths[i];
    if (have.count(hash)) {
      ++r.shared_chunks;
      r.shared_bytes += chunk_lengths[i];
    } else if (fetched.insert(hash).second) {
      ++r.fetch_chunks;
      r.fetch_bytes += chunk_lengths[i];
      r.fetch_compressed += frame_lengths[i];
    }
  }
  // The artifact `sign` makes without --content-chunks.
  Result<std::string> whole = CompressArtifact(*new_model, o.zstd_level);
  if (!whole.ok()) return FleetFail(whole.status());
  r.whole_compressed = whole->size();

  auto ratio = [](uint64_t a, uint64_t b) {
    return b == 0 ? 0.0 : static_cast<double>(a) / static_cast<double>(b);
  };
  if (o.json) {
    Json j;
    j["old"] = o.old_model;
    j["new"] = o.new_model;
    j["chunk_limits"] = {
        {"min", limits.min}, {"avg", limits.avg}, {"max", limits.max}};
    j["zstd_level"] = o.zstd_level;
    j["new_bytes"] = r.new_bytes;
    j["new_chunks"] = r.new_chunks;
    j["shared_bytes"] = r.shared_bytes;
    j["shared_chunks"] = r.shared_chunks;
    j["fetch_bytes"] = r.fetch_bytes;
    j["fetch_chunks"] = r.fetch_chunks;
    j["fetch_compressed_bytes"] = r.fetch_compressed;
    j["chunked_compressed_bytes"] = r.chunked_compressed;
    j["whole_compressed_bytes"] = r.whole_compressed;
    j["fetch_vs_whole"] =
        JsonNumber(ratio(r.fetch_compressed, r.whole_compressed), 4);
    PrintJson(j);
    return 0;
  }
  std::printf("new   %s: %" PRIu64 " bytes in %" PRIu64
              " chunks (content-defined, %" PRIu64 "-%" PRIu64
              " bytes, about %" PRIu64 ")\n",
              o.new_model.c_str(), r.new_bytes, r.new_chunks, limits.min,
              limits.max, limits.avg);
  std::printf("held  %s: %" PRIu64 " chunks, %" PRIu64
              " bytes (%.1f%%) of new\n",
              o.old_model.c_str(), r.shared_chunks, r.shared_bytes,
              100.0 * ratio(r.shared_bytes, r.new_bytes));
  std::printf("fetch %" PRIu64 " chunks, %" PRIu64 " bytes, %" PRIu64
              " compressed (zstd -%d per chunk)\n",
              r.fetch_chunks, r.fetch_bytes, r.fetch_compressed, o.zstd_level);
  std::printf("whole artifact %" PRIu64
              " compressed bytes (one zstd stream); all chunks compressed "
              "one by one: %" PRIu64 " (%+.1f%%)\n",
              r.whole_compressed, r.chunked_compressed,
              100.0 * (ratio(r.chunked_compressed, r.whole_compressed) - 1.0));
  std::printf("delta: %.1f%% of the whole artifact\n",
              100.0 * ratio(r.fetch_compressed, r.whole_compressed));
  return 0;
}

}  // namespace

void AddDeltaCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<DeltaOptions>();
  CLI::App* cmd = app.add_subcommand(
      "delta",
      "How much of NEW a device holding OLD downloads with content-defined "
      "chunks");
  cmd->add_option("old", o->old_model, "the model file devices hold")
      ->required();
  cmd->add_option("new", o->new_model, "the model file to publish")->required();
  cmd->add_option("--zstd-level", o->zstd_level,
                  "zstd level per chunk (1-19, as `sign`)")
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "one JSON object");
  cmd->callback([o, exit_code] { *exit_code = RunDelta(*o); });
}

}  // namespace ternd::ternctl
