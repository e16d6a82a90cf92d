#include "tools/ternctl/fleet_common.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <set>

#include "base/file.h"
#include "ota/keys.h"

namespace ternd::ternctl {

constexpr size_t kMaxEnvelopeFileBytes = size_t{16} << 20;

int FleetFail(const Status& s) {
  std::fprintf(stderr, "ternctl: %s\n", s.message());
  return 1;
}

int64_t NowSeconds() { return static_cast<int64_t>(std::time(nullptr)); }

std::string FormatTime(int64_t unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  char buf[32];
  if (gmtime_r(&t, &tm) == nullptr ||
      std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return "@" + std::to_string(unix_seconds);
  }
  return buf;
}

Result<int64_t> ParseTime(const std::string& text, const char* flag) {
  if (!text.empty() && text[0] == '@') {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(text.c_str() + 1, &end, 10);
    if (errno == 0 && end != text.c_str() + 1 && *end == '\0') return v;
  } else {
    for (const char* format : {"%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"}) {
      struct tm tm = {};
      const char* end = strptime(text.c_str(), format, &tm);
      if (end != nullptr && *end == '\0') {
        return static_cast<int64_t>(timegm(&tm));
      }
    }
  }
  return InvalidArgument(
      "%s '%s' is not a time: use YYYY-MM-DD (midnight UTC), "
      "YYYY-MM-DDTHH:MM:SSZ or @UNIX_SECONDS",
      flag, text.c_str());
}

void AddExpiryOptions(CLI::App* cmd, ExpiryOption* e, const char* unit_flag,
                      const char* default_text) {
  CLI::Option* expires = cmd->add_option(
      "--expires", e->expires,
      std::string("Expiry time: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ (UTC) or "
                  "@UNIX_SECONDS (default: ") +
          default_text + ")");
  CLI::Option* amount =
      cmd->add_option(std::string("--") + unit_flag, e->amount,
                      std::string("Expire this many ") + unit_flag +
                          " from now (instead of --expires)")
          ->check(CLI::PositiveNumber);
  expires->excludes(amount);
}

Result<int64_t> ResolveExpiry(const ExpiryOption& e, int64_t now,
                              int64_t unit_seconds, int64_t default_seconds,
                              const char* unit_flag) {
  int64_t expires = now + default_seconds;
  if (!e.expires.empty()) {
    TERND_ASSIGN_OR_RETURN(expires, ParseTime(e.expires, "--expires"));
    if (expires <= now) {
      return InvalidArgument(
          "--expires %s is not in the future (now is %s): devices would "
          "refuse it as expired",
          e.expires.c_str(), FormatTime(now).c_str());
    }
  } else if (e.amount > 0) {
    if (e.amount > (int64_t{1} << 40) / unit_seconds) {
      return InvalidArgument("--%s %lld is too far in the future", unit_flag,
                             static_cast<long long>(e.amount));
    }
    expires = now + e.amount * unit_seconds;
  }
  return expires;
}

Result<ota::SignedEnvelope> ReadEnvelopeFile(const std::string& path,
                                             const char* role,
                                             std::string* bytes) {
  TERND_ASSIGN_OR_RETURN(std::vector<uint8_t> data,
                         ReadFile(path, kMaxEnvelopeFileBytes));
  bytes->assign(data.begin(), data.end());
  ota::SignedEnvelope env;
  if (!env.ParseFromString(*bytes) || env.role().empty()) {
    return InvalidArgument(
        "%s is not signed ternd metadata (a SignedEnvelope); expected a "
        "'%s' envelope as ternctl writes it",
        path.c_str(), role);
  }
  if (env.role() != role) {
    return InvalidArgument("%s is a '%.32s' envelope, expected '%s'",
                           path.c_str(), env.role().c_str(), role);
  }
  return env;
}

Result<std::vector<ota::Ed25519KeyPair>> ReadSigningKeys(
    const std::vector<std::string>& paths, const char* flag) {
  if (paths.empty()) {
    return InvalidArgument("%s: at least one private key is needed", flag);
  }
  std::vector<ota::Ed25519KeyPair> keys;
  std::set<std::string> ids;
  for (const std::string& p : paths) {
    TERND_ASSIGN_OR_RETURN(ota::Ed25519KeyPair k, ota::ReadPrivateKeyFile(p));
    if (!ids.insert(ota::KeyId(k.public_key)).second) {
      return InvalidArgument(
          "%s %s: the same key is given twice (key id %s); a key counts "
          "once towards a threshold",
          flag, p.c_str(), ota::KeyId(k.public_key).c_str());
    }
    keys.push_back(k);
  }
  return keys;
}

Status WriteOutput(const std::string& path, std::string_view data, int mode,
                   bool force) {
  struct stat st;
  if (!force && ::lstat(path.c_str(), &st) == 0) {
    return Errorf(StatusCode::kAlreadyExists,
                  "%s already exists; pass --force to replace it",
                  path.c_str());
  }
  // A stale temporary file would keep its old mode.
  ::unlink((path + ".tmp").c_str());
  TERND_RETURN_IF_ERROR(WriteFileAtomically(
      path,
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()),
                               data.size()),
      mode));
  if (::chmod(path.c_str(), static_cast<mode_t>(mode)) != 0) {
    return ErrnoError(errno, "cannot set mode %04o on %s", mode, path.c_str());
  }
  return Status::Ok();
}

std::string Signers(const ota::SignedEnvelope& env) {
  std::string out;
  for (const ota::Signature& s : env.signatures()) {
    out += (out.empty() ? "" : ", ") + s.key_id();
  }
  return out;
}

CLI::Option* Repeatable(CLI::Option* option) {
  return option->expected(1)->multi_option_policy(
      CLI::MultiOptionPolicy::TakeAll);
}

Result<std::string> TopicPrefix(const std::string& prefix,
                                const std::string& fleet) {
  std::string out = prefix;
  if (out.empty()) {
    if (fleet.empty()) {
      return InvalidArgument(
          "give --fleet F (topics under ternd/v1/F) or --prefix");
    }
    out = "ternd/v1/" + fleet;
  }
  while (!out.empty() && out.back() == '/') out.pop_back();
  return out;
}

}  // namespace ternd::ternctl
