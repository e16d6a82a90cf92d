// `ternctl sign`: turns a model file into a release: validates the model
// (its golden pair must exist and pass, since the device's health check after
// activation runs it), compresses it with zstd, hashes it whole and per
// chunk, and signs the Release manifest. docs/ota.md ("Publishing a
// release") describes it.
#include <openssl/sha.h>
#include <sys/stat.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/file.h"
#include "ota/chunker.h"
#include "ota/shadow_validation.h"
#include "ota/signing.h"
#include "ota/trust.h"
#include "ota/waves.h"
#include "runtime/format.h"
#include "runtime/runtime.h"
#include "tools/ternctl/fleet_common.h"
#include "tools/ternctl/json_output.h"

namespace ternd::ternctl {
namespace {

// Level 9 by default: ternary weights are packed 2-bit codes with little
// long-range structure, so the slow match search of high levels buys almost
// nothing (the shipped models: level 19 is 0.7% smaller than 9; a 16 MiB
// random ternary tensor: no smaller at all, and 26x slower to compress),
// while level 9's smaller window (4 MiB against level 19's 8 MiB) keeps the
// device's decompression memory small. --zstd-level goes up to 19; levels 20-22
// need windows of up to 128 MiB on the device and are refused.
constexpr int kDefaultZstdLevel = 9;
constexpr int kMaxZstdLevel = 19;
constexpr uint64_t kDefaultChunkSize = uint64_t{1} << 20;
constexpr int64_t kDay = 86400;

struct SignOptions {
  std::string model;
  std::string name;
  uint64_t version = 0;
  uint64_t sequence = 0;
  std::vector<std::string> urls;
  std::vector<std::string> devices;
  std::vector<std::string> groups;
  ExpiryOption expiry;
  std::string rollout;
  std::string min_runtime;
  // Staged waves (docs/ota.md): --wave-start and --wave OFFSET:PERCENT.
  std::string wave_start;
  std::vector<std::string> waves;
  uint64_t chunk_size = kDefaultChunkSize;
  // Content-addressed artifact (docs/ota.md, "Delta downloads").
  bool content_chunks = false;
  int zstd_level = kDefaultZstdLevel;
  std::vector<std::string> keys;
  std::string root;
  std::string out_dir;
  size_t arena_mb = 0;
  bool force = false;
  bool json = false;
  // --shadow-*: the release asks for shadow validation (docs/ota.md);
  // `shadow` is set when any of them was given.
  bool shadow = false;
  ota::ShadowValidation shadow_validation;
};

// "90", "30m", "2h", "1d" as seconds; -1 when malformed.
int64_t ParseOffset(const std::string& text) {
  if (text.empty()) return -1;
  int64_t unit = 1;
  std::string digits = text;
  switch (text.back()) {
    case 's':
      unit = 1;
      digits.pop_back();
      break;
    case 'm':
      unit = 60;
      digits.pop_back();
      break;
    case 'h':
      unit = 3600;
      digits.pop_back();
      break;
    case 'd':
      unit = kDay;
      digits.pop_back();
      break;
    default:
      break;
  }
  if (digits.empty() || digits.size() > 9 ||
      digits.find_first_not_of("0123456789") != std::string::npos) {
    return -1;
  }
  return std::stoll(digits) * unit;
}

// --wave-start / --wave into `r`'s wave schedule, checked as devices check
// it (ota/waves.h).
Status AddWaves(const SignOptions& o, int64_t now, ota::Release* r) {
  if (o.waves.empty()) {
    if (!o.wave_start.empty()) {
      return InvalidArgument("--wave-start needs at least one --wave step");
    }
    return Status::Ok();
  }
  ota::WaveSchedule* w = r->mutable_waves();
  w->set_start(now);
  if (!o.wave_start.empty()) {
    TERND_ASSIGN_OR_RETURN(const int64_t start,
                           ParseTime(o.wave_start, "--wave-start"));
    w->set_start(start);
  }
  for (const std::string& text : o.waves) {
    const size_t colon = text.find(':');
    const int64_t offset =
        colon == std::string::npos ? -1 : ParseOffset(text.substr(0, colon));
    const std::string percent =
        colon == std::string::npos ? "" : text.substr(colon + 1);
    if (offset < 0 || percent.empty() || percent.size() > 3 ||
        percent.find_first_not_of("0123456789") != std::string::npos) {
      return InvalidArgument(
          "--wave '%s': expected OFFSET:PERCENT (OFFSET in seconds or with "
          "s/m/h/d, PERCENT 0..100), e.g. 2h:10",
          text.c_str());
    }
    ota::WaveStep* step = w->add_steps();
    step->set_offset_s(offset);
    step->set_percent(static_cast<uint32_t>(std::stoul(percent)));
  }
  Status s = ota::ValidateWaveSchedule(*r);
  if (!s.ok()) return s.Prepend("--wave");
  return Status::Ok();
}

std::string WavesText(const ota::WaveSchedule& w) {
  std::string text = "from " + FormatTime(w.start()) + ":";
  for (const ota::WaveStep& step : w.steps()) {
    text += " +" + std::to_string(step.offset_s()) + "s " +
            std::to_string(step.percent()) + "%";
    if (&step != &w.steps(w.steps_size() - 1)) text += ",";
  }
  return text;
}

Json WavesJson(const ota::Release& r) {
  if (!r.has_waves()) return nullptr;
  Json steps = Json::array();
  for (const ota::WaveStep& step : r.waves().steps()) {
    steps.push_back(
        Json{{"offset_s", step.offset_s()}, {"percent", step.percent()}});
  }
  return Json{{"start", r.waves().start()}, {"steps", steps}};
}

// A model name may hold '/' and ':'; file names get '_' instead.
std::string FileStem(const std::string& name, uint64_t version) {
  std::string stem = name;
  std::replace(stem.begin(), stem.end(), '/', '_');
  std::replace(stem.begin(), stem.end(), ':', '_');
  return stem + "-" + std::to_string(version);
}

// Decompresses `artifact` and compares it with `model`: what ships is read
// back once before it is signed.
Status CheckRoundTrip(const std::string& artifact, const std::string& model) {
  // The sum over every frame (a content-addressed artifact has many).
  unsigned long long size = 0;
  for (size_t at = 0; at < artifact.size();) {
    const char* frame = artifact.data() + at;
    const size_t n = ZSTD_findFrameCompressedSize(frame, artifact.size() - at);
    const unsigned long long content =
        ZSTD_getFrameContentSize(frame, artifact.size() - at);
    if (ZSTD_isError(n) || content == ZSTD_CONTENTSIZE_UNKNOWN ||
        content == ZSTD_CONTENTSIZE_ERROR) {
      return Internal("zstd frame at artifact offset %zu is malformed", at);
    }
    size += content;
    at += n;
  }
  if (size != model.size()) {
    return Internal("zstd frames state %llu bytes, the model has %zu", size,
                    model.size());
  }
  std::string back(model.size(), '\0');
  const size_t n = ZSTD_decompress(back.data(), back.size(), artifact.data(),
                                   artifact.size());
  if (ZSTD_isError(n) || n != model.size() || back != model) {
    return Internal("the compressed artifact does not decompress to the model");
  }
  return Status::Ok();
}

Result<runtime::ModelFile> CheckModel(const std::string& path,
                                      const std::vector<uint8_t>& bytes,
                                      size_t arena_mb) {
  TERND_ASSIGN_OR_RETURN(runtime::ModelFile file,
                         runtime::ModelFile::Parse(bytes, path));
  if (!file.header().has_golden()) {
    return FailedPrecondition(
        "%s: model '%s' has no golden input/output pair; a device runs the "
        "golden pair as its health check after activating an update and "
        "refuses a model without one, so ternctl sign refuses it too. "
        "Export the model with an example input (docs/training.md)",
        path.c_str(), file.header().name().c_str());
  }
  runtime::RuntimeOptions ro;
  // The arena is reserved, not touched: generous costs nothing.
  ro.arena_bytes =
      arena_mb ? arena_mb << 20
               : std::max<size_t>(size_t{256} << 20,
                                  4 * bytes.size() + (size_t{64} << 20));
  ro.slots = 1;
  ro.workers = 1;
  TERND_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Runtime> rt,
                         runtime::Runtime::Create(ro));
  TERND_ASSIGN_OR_RETURN(const runtime::LoadedModel* m, rt->Load(0, file));
  Status s = m->CheckGolden(0);
  if (!s.ok()) {
    return s.Prepend(path +
                     ": the model fails its own golden check on this "
                     "machine, so devices would roll it back");
  }
  return file;
}

Result<std::string> ArtifactUrl(const std::string& url,
                                const std::string& file_name) {
  if (url.rfind("https://", 0) != 0 || url.size() <= 8) {
    return InvalidArgument(
        "--url '%s' is not an https:// URL (devices download artifacts "
        "over HTTPS only)",
        url.c_str());
  }
  if (url.size() > 4 && url.compare(url.size() - 4, 4, ".zst") == 0) {
    return url;
  }
  return url + (url.back() == '/' ? "" : "/") + file_name;
}

// Checks that a device trusting `root_path` would accept `envelope`.
Status CheckAgainstRoot(const std::string& root_path,
                        const std::string& envelope, const ota::Release& r) {
  std::string root_bytes;
  TERND_ASSIGN_OR_RETURN(ota::SignedEnvelope root_env,
                         ReadEnvelopeFile(root_path, "root", &root_bytes));
  (void)root_env;
  Result<ota::TrustState> state = ota::TrustFromPinnedRoot(root_bytes);
  if (!state.ok()) {
    return Status(state.status()).Prepend("--root " + root_path);
  }
  ota::DeviceIdentity device;
  if (r.target_devices_size() > 0) {
    device.id = r.target_devices(0);
  } else {
    device.groups.push_back(r.target_groups(0));
  }
  ota::TrustPolicy policy;
  policy.runtime_version =
      r.min_runtime_version().empty() ? "0.0.0" : r.min_runtime_version();
  ota::RejectReason reason;
  Result<ota::Release> ok = ota::AcceptRelease(*state, envelope, device, 0,
                                               policy, NowSeconds(), &reason);
  if (!ok.ok()) {
    return Status(ok.status())
        .Prepend(std::string("a device trusting ") + root_path +
                 " would refuse it (" + ota::RejectReasonName(reason) + ")");
  }
  return Status::Ok();
}

Json JsonList(const google::protobuf::RepeatedPtrField<std::string>& v) {
  return Json(std::vector<std::string>(v.begin(), v.end()));
}

std::string TextList(const google::protobuf::RepeatedPtrField<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s.empty() ? "-" : s;
}

Json ShadowJson(const ota::Release& r) {
  if (!r.has_shadow_validation()) return nullptr;
  const ota::ShadowValidation& v = r.shadow_validation();
  return {{"sample_rate", v.sample_rate()},
          {"min_requests", v.min_requests()},
          {"min_agreement", v.min_agreement()},
          {"metric", v.metric()},
          {"max_relative_l2", v.max_relative_l2()},
          {"time_limit_s", v.time_limit_s()},
          {"output", v.output()}};
}

int Sign(const SignOptions& o) {
  const int64_t now = NowSeconds();
  if (o.devices.empty() && o.groups.empty()) {
    return FleetFail(InvalidArgument(
        "give at least one --target-device or --target-group: a release "
        "that targets nothing is refused by every device"));
  }
  if (o.urls.empty()) {
    return FleetFail(InvalidArgument(
        "give at least one --url where devices download the artifact"));
  }
  if (o.zstd_level < 1 || o.zstd_level > kMaxZstdLevel) {
    return FleetFail(InvalidArgument(
        "--zstd-level %d is outside 1..%d (levels above %d need more memory "
        "on the device than ternd allows)",
        o.zstd_level, kMaxZstdLevel, kMaxZstdLevel));
  }
  if (o.chunk_size < 4096) {
    return FleetFail(InvalidArgument("--chunk-size %" PRIu64
                                     " is below the minimum of 4096 bytes",
                                     o.chunk_size));
  }
  uint64_t runtime_version[3];
  if (!o.min_runtime.empty() &&
      !ota::ParseVersion(o.min_runtime, runtime_version)) {
    return FleetFail(InvalidArgument(
        "--min-runtime '%s' is not MAJOR.MINOR.PATCH", o.min_runtime.c_str()));
  }
  // Keys first: a typo in a key path should not cost a compression.
  Result<std::vector<ota::Ed25519KeyPair>> keys =
      ReadSigningKeys(o.keys, "--key");
  if (!keys.ok()) return FleetFail(keys.status());

  Result<std::vector<uint8_t>> bytes = ReadFile(o.model);
  if (!bytes.ok()) return FleetFail(bytes.status());
  Result<runtime::ModelFile> file = CheckModel(o.model, *bytes, o.arena_mb);
  if (!file.ok()) return FleetFail(file.status());
  const model::ModelHeader& h = file->header();
  if (!o.name.empty() && o.name != h.name()) {
    return FleetFail(InvalidArgument(
        "--name '%s' but %s is model '%s': devices report the name inside "
        "the model, so they must agree (re-export with that name)",
        o.name.c_str(), o.model.c_str(), h.name().c_str()));
  }
  if (o.version != 0 && o.version != h.version()) {
    return FleetFail(InvalidArgument(
        "--version %" PRIu64 " but %s is version %" PRIu64
        ": devices report the version inside the model, so they must agree "
        "(re-export with version=%" PRIu64 ")",
        o.version, o.model.c_str(), h.version(), o.version));
  }
  if (h.version() == 0) {
    return FleetFail(InvalidArgument(
        "%s has model version 0; devices only install versions above the "
        "installed one, so releases start at 1",
        o.model.c_str()));
  }
  const std::string stem = FileStem(h.name(), h.version());
  const std::string artifact_name = stem + ".tern.zst";
  // "dist/" and "dist" name the same directory: no "dist//x" in messages.
  std::string dir = o.out_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const std::string artifact_path = dir + "/" + artifact_name;
  const std::string release_path = dir + "/" + stem + ".release.pb";

  ota::Release r;
  r.set_model_name(h.name());
  r.set_model_version(h.version());
  // Default: milliseconds since the epoch, so that releases signed on
  // machines with a correct clock never go backwards fleet-wide.
  r.set_sequence(
      o.sequence ? o.sequence
                 : static_cast<uint64_t>(
                       std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count()));
  for (const std::string& u : o.urls) {
    Result<std::string> url = ArtifactUrl(u, artifact_name);
    if (!url.ok()) return FleetFail(url.status());
    r.add_urls(*url);
  }
  Result<int64_t> expires =
      ResolveExpiry(o.expiry, now, kDay, 30 * kDay, "days");
  if (!expires.ok()) return FleetFail(expires.status());
  r.set_issued(now);
  r.set_expires(*expires);
  for (const std::string& d : o.devices) r.add_target_devices(d);
  for (const std::string& g : o.groups) r.add_target_groups(g);
  r.set_rollout_id(o.rollout.empty() ? stem : o.rollout);
  r.set_min_runtime_version(o.min_runtime);
  if (o.shadow) {
    // Checked as the device will check it: a release it would reject is
    // not signed.
    Result<ota::ShadowSpec> spec =
        ota::ShadowSpecFromRelease(o.shadow_validation);
    if (!spec.ok()) {
      Status st = spec.status();
      return FleetFail(st.Prepend("--shadow-*"));
    }
    *r.mutable_shadow_validation() = o.shadow_validation;
  }
  if (Status w = AddWaves(o, now, &r); !w.ok()) return FleetFail(w);

  const std::string model(bytes->begin(), bytes->end());
  std::vector<uint64_t> content_lengths;
  Result<std::string> artifact =
      o.content_chunks
          ? CompressContentChunks(model, o.zstd_level, &content_lengths)
          : CompressArtifact(model, o.zstd_level);
  if (!artifact.ok()) return FleetFail(artifact.status());
  Status s = CheckRoundTrip(*artifact, model);
  if (!s.ok()) return FleetFail(s);
  r.set_artifact_sha256(Sha256(*artifact));
  r.set_artifact_length(artifact->size());
  r.set_model_sha256(Sha256(model));
  r.set_model_length(model.size());
  if (o.content_chunks) {
    r.set_chunk_size(0);
    uint64_t at = 0;
    for (const uint64_t len : content_lengths) {
      r.add_chunk_length(len);
      r.add_chunk_sha256(Sha256(std::string_view(*artifact).substr(at, len)));
      at += len;
    }
  } else {
    r.set_chunk_size(o.chunk_size);
    for (uint64_t at = 0; at < artifact->size(); at += o.chunk_size) {
      r.add_chunk_sha256(Sha256(std::string_view(*artifact).substr(
          at, std::min<uint64_t>(o.chunk_size, artifact->size() - at))));
    }
  }
  const ota::TrustPolicy defaults;
  if (o.content_chunks &&
      static_cast<uint64_t>(r.chunk_sha256_size()) > defaults.max_chunks) {
    return FleetFail(InvalidArgument(
        "%d content-defined chunks exceed the %" PRIu64
        " chunks a device accepts by default; sign without --content-chunks",
        r.chunk_sha256_size(), defaults.max_chunks));
  }
  if (static_cast<uint64_t>(r.chunk_sha256_size()) > defaults.max_chunks) {
    return FleetFail(InvalidArgument(
        "%d chunks of %" PRIu64 " bytes exceed the %" PRIu64
        " chunks a device accepts by default; raise --chunk-size",
        r.chunk_sha256_size(), o.chunk_size, defaults.max_chunks));
  }

  const std::string payload = r.SerializeAsString();
  Result<ota::SignedEnvelope> env = ota::SignEnvelope(
      "release",
      {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()},
      *keys);
  if (!env.ok()) return FleetFail(env.status());
  const std::string envelope = env->SerializeAsString();
  if (!o.root.empty()) {
    s = CheckAgainstRoot(o.root, envelope, r);
    if (!s.ok()) return FleetFail(s);
  }

  struct stat st;
  if (::stat(o.out_dir.c_str(), &st) != 0 &&
      ::mkdir(o.out_dir.c_str(), 0755) != 0) {
    return FleetFail(
        ErrnoError(errno, "cannot create --out-dir %s", o.out_dir.c_str()));
  }
  for (const std::string& p : {artifact_path, release_path}) {
    if (!o.force && ::lstat(p.c_str(), &st) == 0) {
      return FleetFail(Errorf(StatusCode::kAlreadyExists,
                              "%s already exists; pass --force to replace it",
                              p.c_str()));
    }
  }
  s = WriteOutput(artifact_path, *artifact, 0644, o.force);
  if (!s.ok()) return FleetFail(s);
  s = WriteOutput(release_path, envelope, 0644, o.force);
  if (!s.ok()) return FleetFail(s);

  if (o.json) {
    PrintJson(Json{{"release", release_path},
                   {"artifact", artifact_path},
                   {"model", r.model_name()},
                   {"version", r.model_version()},
                   {"sequence", r.sequence()},
                   {"artifact_length", r.artifact_length()},
                   {"artifact_sha256", Hex(r.artifact_sha256())},
                   {"model_length", r.model_length()},
                   {"model_sha256", Hex(r.model_sha256())},
                   {"zstd_level", o.zstd_level},
                   {"chunk_size", r.chunk_size()},
                   {"content_chunks", r.chunk_length_size() > 0},
                   {"chunks", r.chunk_sha256_size()},
                   {"urls", JsonList(r.urls())},
                   {"target_devices", JsonList(r.target_devices())},
                   {"target_groups", JsonList(r.target_groups())},
                   {"rollout_id", r.rollout_id()},
                   {"min_runtime_version", r.min_runtime_version()},
                   {"shadow_validation", ShadowJson(r)},
                   {"waves", WavesJson(r)},
                   {"issued", r.issued()},
                   {"expires", r.expires()},
                   {"signed_by", Signers(*env)}});
    return 0;
  }
  std::printf("release      %s\n", release_path.c_str());
  std::printf("model        %s v%" PRIu64 ", %" PRIu64
              " bytes, sha256 %s (golden check passed)\n",
              r.model_name().c_str(), r.model_version(), r.model_length(),
              Hex(r.model_sha256()).c_str());
  std::printf("artifact     %s, %" PRIu64
              " bytes (zstd level %d, %.1f%%), "
              "sha256 %s\n",
              artifact_path.c_str(), r.artifact_length(), o.zstd_level,
              100.0 * static_cast<double>(r.artifact_length()) /
                  static_cast<double>(r.model_length()),
              Hex(r.artifact_sha256()).c_str());
  if (r.chunk_length_size() > 0) {
    std::printf("chunks       %d content-defined, one zstd frame each\n",
                r.chunk_sha256_size());
  } else {
    std::printf("chunks       %d of %" PRIu64 " bytes\n", r.chunk_sha256_size(),
                r.chunk_size());
  }
  std::printf("sequence     %" PRIu64 "\n", r.sequence());
  for (const std::string& u : r.urls())
    std::printf("url          %s\n", u.c_str());
  std::printf("devices      %s\n", TextList(r.target_devices()).c_str());
  std::printf("groups       %s\n", TextList(r.target_groups()).c_str());
  std::printf("rollout      %s\n", r.rollout_id().c_str());
  if (r.has_shadow_validation()) {
    const ota::ShadowValidation& v = r.shadow_validation();
    std::printf("shadow       %s on '%s', %g of requests, %" PRIu64
                " required within %u s at agreement >= %g\n",
                v.metric().empty() ? "default metric" : v.metric().c_str(),
                v.output().empty() ? "the first output" : v.output().c_str(),
                v.sample_rate(), v.min_requests(), v.time_limit_s(),
                v.min_agreement());
  }
  if (r.has_waves()) {
    std::printf("waves        %s\n", WavesText(r.waves()).c_str());
  }
  std::printf("min runtime  %s\n", r.min_runtime_version().empty()
                                       ? "any"
                                       : r.min_runtime_version().c_str());
  std::printf("issued       %s\n", FormatTime(r.issued()).c_str());
  std::printf("expires      %s\n", FormatTime(r.expires()).c_str());
  std::printf("signed by    %s\n", Signers(*env).c_str());
  if (!o.root.empty()) {
    std::printf("checked      accepted by a device trusting %s\n",
                o.root.c_str());
  }
  return 0;
}

}  // namespace

Result<std::string> CompressArtifact(const std::string& input, int level) {
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx(ZSTD_createCCtx(),
                                                          ZSTD_freeCCtx);
  if (!cctx) return Internal("zstd: cannot create a compression context");
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_contentSizeFlag, 1);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1);
  // Uses the machine's cores when libzstd was built with threads; the
  // result does not depend on how many.
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_nbWorkers,
                         static_cast<int>(std::min(cores, 8u)));
  std::string out(ZSTD_compressBound(input.size()), '\0');
  const size_t n = ZSTD_compress2(cctx.get(), out.data(), out.size(),
                                  input.data(), input.size());
  if (ZSTD_isError(n)) {
    return Internal("zstd compression failed: %s", ZSTD_getErrorName(n));
  }
  out.resize(n);
  return out;
}

Result<std::string> CompressContentChunks(
    const std::string& input, int level, std::vector<uint64_t>* lengths,
    std::vector<uint64_t>* model_lengths) {
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx(ZSTD_createCCtx(),
                                                          ZSTD_freeCCtx);
  if (!cctx) return Internal("zstd: cannot create a compression context");
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_contentSizeFlag, 1);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1);
  const ota::ChunkLimits limits;
  const auto* data = reinterpret_cast<const uint8_t*>(input.data());
  std::string out;
  std::string frame;
  uint64_t at = 0;
  for (const uint64_t len : ota::ChunkLengths({data, input.size()}, limits)) {
    frame.resize(ZSTD_compressBound(len));
    const size_t n = ZSTD_compress2(cctx.get(), frame.data(), frame.size(),
                                    input.data() + at, len);
    if (ZSTD_isError(n)) {
      return Internal("zstd compression of the chunk at model offset %" PRIu64
                      " failed: %s",
                      at, ZSTD_getErrorName(n));
    }
    out.append(frame.data(), n);
    lengths->push_back(n);
    if (model_lengths != nullptr) model_lengths->push_back(len);
    at += len;
  }
  return out;
}

// Shadow validation (docs/ota.md, "Shadow validation"): any of these makes
// the release ask for it.
void AddShadowOptions(CLI::App* cmd, std::shared_ptr<SignOptions> o) {
  ota::ShadowValidation* v = &o->shadow_validation;
  v->set_sample_rate(1.0);
  auto given = [o, v](auto set) {
    return [o, v, set](const auto& value) {
      o->shadow = true;
      set(v, value);
    };
  };
  cmd->add_option_function<double>(
         "--shadow-sample-rate", given([](ota::ShadowValidation* s, double x) {
           s->set_sample_rate(x);
         }),
         "Shadow validation: share of requests also run on the new model, "
         "(0, 1] (default 1)")
      ->group("Shadow validation");
  cmd->add_option_function<uint64_t>(
         "--shadow-min-requests",
         given([](ota::ShadowValidation* s, uint64_t n) {
           s->set_min_requests(n);
         }),
         "Shadow validation: requests compared before the decision")
      ->group("Shadow validation");
  cmd->add_option_function<double>(
         "--shadow-min-agreement",
         given([](ota::ShadowValidation* s, double x) {
           s->set_min_agreement(x);
         }),
         "Shadow validation: share of compared rows that must agree, [0, 1]")
      ->group("Shadow validation");
  cmd->add_option_function<std::string>(
         "--shadow-metric",
         given([](ota::ShadowValidation* s, const std::string& m) {
           s->set_metric(m);
         }),
         "Shadow validation: argmax or relative_l2 (default: argmax for an "
         "output of more than one value per row)")
      ->group("Shadow validation");
  cmd->add_option_function<double>(
         "--shadow-max-relative-l2",
         given([](ota::ShadowValidation* s, double x) {
           s->set_max_relative_l2(x);
         }),
         "Shadow validation: largest relative L2 distance of an agreeing "
         "row (relative_l2)")
      ->group("Shadow validation");
  cmd->add_option_function<uint32_t>(
         "--shadow-time-limit", given([](ota::ShadowValidation* s, uint32_t t) {
           s->set_time_limit_s(t);
         }),
         "Shadow validation: seconds to see the required requests")
      ->group("Shadow validation");
  cmd->add_option_function<std::string>(
         "--shadow-output",
         given([](ota::ShadowValidation* s, const std::string& name) {
           s->set_output(name);
         }),
         "Shadow validation: the output compared (default: the first)")
      ->group("Shadow validation");
}

void AddSignCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<SignOptions>();
  CLI::App* cmd = app.add_subcommand(
      "sign",
      "Make a signed release of a model: compress it, hash it and sign the "
      "release manifest");
  cmd->add_option("MODEL", o->model, "Model file (.tern) with a golden pair")
      ->required();
  cmd->add_option("--name", o->name,
                  "Model name (default and must equal: the name inside the "
                  "model)");
  cmd->add_option("--version", o->version,
                  "Model version (default and must equal: the version inside "
                  "the model)");
  cmd->add_option("--sequence", o->sequence,
                  "Fleet-wide sequence number, never decreasing (default: "
                  "milliseconds since 1970 now)")
      ->check(CLI::PositiveNumber);
  Repeatable(cmd->add_option(
      "--url", o->urls,
      "HTTPS URL of the artifact, or a base URL the file name is appended to "
      "(repeat for mirrors)"));
  Repeatable(cmd->add_option("--target-device", o->devices,
                             "Device id the release is for (repeat)"));
  Repeatable(cmd->add_option("--target-group", o->groups,
                             "Device group the release is for (repeat)"));
  AddExpiryOptions(cmd, &o->expiry, "days", "30 days from now");
  cmd->add_option(
      "--rollout", o->rollout,
      "Rollout id reported back by devices (default: NAME-VERSION)");
  cmd->add_option(
      "--min-runtime", o->min_runtime,
      "Oldest ternd version that may install it, MAJOR.MINOR.PATCH");
  cmd->add_option("--wave-start", o->wave_start,
                  "Start of the staged waves: YYYY-MM-DD, "
                  "YYYY-MM-DDTHH:MM:SSZ or @UNIX (default: the issue time)");
  Repeatable(cmd->add_option(
      "--wave", o->waves,
      "A wave step OFFSET:PERCENT (OFFSET in s, or with m/h/d: 0:1, 2h:10, "
      "1d:100); from start + OFFSET, PERCENT of the targeted devices take "
      "the release (repeat, in order)"));
  cmd->add_option("--chunk-size", o->chunk_size,
                  "Bytes per artifact chunk (hashed separately, resumable)")
      ->capture_default_str();
  cmd->add_flag("--content-chunks", o->content_chunks,
                "Content-addressed artifact: one zstd frame per "
                "content-defined chunk, so devices holding an earlier "
                "version download only the chunks that changed (needs "
                "devices that support delta downloads; --chunk-size is "
                "then unused)");
  cmd->add_option("--zstd-level", o->zstd_level, "zstd compression level")
      ->capture_default_str();
  Repeatable(cmd->add_option("--key", o->keys,
                             "Release private key (.key; repeat for a "
                             "threshold above 1)"))
      ->required();
  cmd->add_option("--root", o->root,
                  "Root file: check that a targeted device trusting it "
                  "accepts the release");
  cmd->add_option("--arena-mb", o->arena_mb,
                  "Arena for the golden check in MiB (default: from the "
                  "model size)");
  cmd->add_option("-o,--out-dir", o->out_dir,
                  "Directory for NAME-VERSION.tern.zst and "
                  "NAME-VERSION.release.pb")
      ->required();
  AddShadowOptions(cmd, o);
  cmd->add_flag("--force", o->force, "Replace existing output files");
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->callback([o, exit_code] { *exit_code = Sign(*o); });
}

}  // namespace ternd::ternctl
