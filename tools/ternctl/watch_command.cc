// `ternctl watch`: follows a fleet on its MQTT broker. Subscribes to every
// device's presence, telemetry and update state under the prefix, decodes
// them (zstd + protobuf, telemetry/telemetry.proto), drops duplicate batches
// (delivery is at least once; the key is device, boot epoch, sequence),
// reports gaps in each device's sequence per boot epoch, and prints a live
// table of devices or, with --json, one JSON object per line. With --db it
// also appends everything to a SQLite file (and then deduplicates and finds
// gaps across runs too) and keeps a persistent session on the broker, so
// what devices send while the watcher is away waits for it. Runs until
// SIGINT/SIGTERM.
//
// With --quality it reports model quality instead of devices: per model
// version across the fleet, devices, requests, class distribution and mean
// confidence, flagging a version whose class distribution moved from the
// previous version's by more than --threshold (telemetry/fleet_quality.h).
// With --db and no --broker it reports from the database and exits.
#include <signal.h>
#include <sqlite3.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>

#include "net/broker_address.h"
#include "net/mqtt_session.h"
#include "ota/update_state.pb.h"
#include "telemetry/batch.h"
#include "telemetry/fleet_quality.h"
#include "telemetry/telemetry.pb.h"
#include "tools/ternctl/commands.h"
#include "tools/ternctl/json_output.h"

namespace ternd::ternctl {
namespace {

using telemetry::Metric;
using telemetry::Presence;
using telemetry::TelemetryBatch;

struct WatchOptions {
  std::string broker;
  std::string ca_file, cert_file, key_file;
  std::string username, password_file;
  std::string fleet;
  std::string prefix;
  std::string client_id;
  bool json = false;
  bool no_tls = false;
  std::string db;
  std::vector<std::string> dictionaries;
  // With --db: how long the broker keeps the session while the watcher is
  // away; 0: a clean session even with --db.
  uint32_t session_expiry_s = 7 * 24 * 3600;
  bool quality = false;
  double threshold = 0.1;
};

// A stable client id for a database file: the same --db resumes the same
// broker session. FNV-1a of the absolute path.
std::string ClientIdForDb(const std::string& db) {
  char* real = ::realpath(db.c_str(), nullptr);
  const std::string path = real ? real : db;
  std::free(real);
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : path) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char id[48];
  std::snprintf(id, sizeof id, "ternctl-watch-%016" PRIx64, h);
  return id;
}

// Telemetry values with 10 significant digits; null when not finite.
Json Num(double v) { return JsonNumber(v, 10); }

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// `name{a="x",b="y"}` (Prometheus style) for a metric's series.
std::string SeriesName(const Metric& m) {
  std::string s = m.name();
  if (m.labels_size() == 0) return s;
  s += '{';
  for (int i = 0; i < m.labels_size(); ++i) {
    if (i) s += ',';
    s += m.labels(i).name() + "=\"" + m.labels(i).value() + "\"";
  }
  return s + "}";
}

const char* StateName(Presence::State s) {
  switch (s) {
    case Presence::ONLINE:
      return "online";
    case Presence::OFFLINE:
      return "offline";
    default:
      return "unknown";
  }
}

struct DeviceRow {
  std::string state = "unknown";
  uint64_t epoch = 0, session = 0;
  std::string model, version, kernel, daemon_version;
  uint64_t last_sequence = 0;
  int64_t last_batch_ms = 0;  // when received
  uint64_t batches = 0, duplicates = 0, dropped_total = 0;
  double p99_ms = NAN;
  std::string update_state;
};

class Watcher {
 public:
  explicit Watcher(WatchOptions o) : o_(std::move(o)) {}
  ~Watcher() {
    if (db_) sqlite3_close(db_);
  }

  Status OpenDb() {
    if (o_.db.empty()) return Status::Ok();
    if (sqlite3_open(o_.db.c_str(), &db_) != SQLITE_OK) {
      return Errorf(StatusCode::kUnavailable, "%s: cannot open: %s",
                    o_.db.c_str(), sqlite3_errmsg(db_));
    }
    sqlite3_busy_timeout(db_, 5000);
    const char* schema = R"sql(
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS batches (
  device TEXT NOT NULL, boot_epoch INTEGER NOT NULL, sequence INTEGER NOT NULL,
  start_unix_ms INTEGER, end_unix_ms INTEGER, received_unix_ms INTEGER,
  dropped_batches_total INTEGER, batch BLOB,
  PRIMARY KEY (device, boot_epoch, sequence));
CREATE TABLE IF NOT EXISTS samples (
  device TEXT NOT NULL, boot_epoch INTEGER NOT NULL, sequence INTEGER NOT NULL,
  end_unix_ms INTEGER, series TEXT NOT NULL, value REAL);
CREATE TABLE IF NOT EXISTS presence (
  device TEXT NOT NULL, received_unix_ms INTEGER, state TEXT,
  boot_epoch INTEGER, session INTEGER, payload BLOB);
CREATE TABLE IF NOT EXISTS update_state (
  device TEXT NOT NULL, received_unix_ms INTEGER, payload BLOB);
CREATE TABLE IF NOT EXISTS gaps (
  device TEXT NOT NULL, boot_epoch INTEGER NOT NULL,
  first_sequence INTEGER NOT NULL, last_sequence INTEGER NOT NULL,
  detected_unix_ms INTEGER,
  PRIMARY KEY (device, boot_epoch, first_sequence));
)sql";
    char* err = nullptr;
    if (sqlite3_exec(db_, schema, nullptr, nullptr, &err) != SQLITE_OK) {
      Status s = Errorf(StatusCode::kInternal, "%s: %s", o_.db.c_str(),
                        err ? err : "schema");
      sqlite3_free(err);
      return s;
    }
    // What earlier runs knew: the highest sequence per device and epoch,
    // and the gaps still open.
    sqlite3_stmt* q = nullptr;
    sqlite3_prepare_v2(db_,
                       "SELECT device, boot_epoch, MAX(sequence) FROM batches "
                       "GROUP BY device, boot_epoch;",
                       -1, &q, nullptr);
    while (q && sqlite3_step(q) == SQLITE_ROW) {
      highest_[{Text(q, 0), uint64_t(sqlite3_column_int64(q, 1))}] =
          uint64_t(sqlite3_column_int64(q, 2));
    }
    sqlite3_finalize(q);
    q = nullptr;
    sqlite3_prepare_v2(db_,
                       "SELECT device, boot_epoch, first_sequence, "
                       "last_sequence FROM gaps;",
                       -1, &q, nullptr);
    while (q && sqlite3_step(q) == SQLITE_ROW) {
      gaps_[{Text(q, 0), uint64_t(sqlite3_column_int64(q, 1))}]
           [uint64_t(sqlite3_column_int64(q, 2))] =
               uint64_t(sqlite3_column_int64(q, 3));
    }
    sqlite3_finalize(q);
    return Status::Ok();
  }

  Status LoadDictionaries() {
    for (const std::string& path : o_.dictionaries) {
      FILE* f = std::fopen(path.c_str(), "rb");
      if (!f)
        return Errorf(StatusCode::kNotFound, "%s: cannot open", path.c_str());
      std::string d;
      char buf[4096];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) d.append(buf, n);
      std::fclose(f);
      Status s = codec_.AddDecodingDictionary(std::move(d));
      if (!s.ok()) return s.Prepend(path);
    }
    return Status::Ok();
  }

  void OnMessage(std::string_view topic, std::string_view payload,
                 bool retained) {
    const std::string head = o_.prefix + "/devices/";
    if (topic.substr(0, head.size()) != head) return;
    std::string_view rest = topic.substr(head.size());
    const size_t slash = rest.find('/');
    if (slash == std::string_view::npos) return;
    const std::string device(rest.substr(0, slash));
    const std::string_view leaf = rest.substr(slash + 1);
    if (leaf == "presence") {
      HandlePresence(device, payload, retained);
    } else if (leaf == "telemetry") {
      HandleBatch(device, payload);
    } else if (leaf == "update/state") {
      HandleUpdateState(device, payload, retained);
    }
    if (!o_.json) {
      if (o_.quality) {
        PrintQualityTable();
      } else {
        PrintTable();
      }
    }
  }

  // --quality --db: the batches the database holds (before following the
  // broker, or instead of it). Returns how many were read.
  size_t LoadQualityFromDb() {
    if (!db_) return 0;
    sqlite3_stmt* q = nullptr;
    sqlite3_prepare_v2(db_,
                       "SELECT device, boot_epoch, sequence, batch FROM "
                       "batches ORDER BY device, boot_epoch, sequence;",
                       -1, &q, nullptr);
    size_t n = 0;
    while (q && sqlite3_step(q) == SQLITE_ROW) {
      TelemetryBatch b;
      const void* blob = sqlite3_column_blob(q, 3);
      const int bytes = sqlite3_column_bytes(q, 3);
      if (!b.ParseFromArray(blob, bytes)) {
        std::fprintf(stderr,
                     "ternctl watch: %s: batch %s epoch %lld sequence %lld "
                     "(%d bytes) is not a TelemetryBatch; skipped\n",
                     o_.db.c_str(), Text(q, 0).c_str(),
                     static_cast<long long>(sqlite3_column_int64(q, 1)),
                     static_cast<long long>(sqlite3_column_int64(q, 2)), bytes);
        continue;
      }
      quality_.Add(Text(q, 0), b);
      ++n;
    }
    sqlite3_finalize(q);
    return n;
  }

  void PrintQuality() {
    if (o_.json) {
      PrintQualityJson();
    } else {
      PrintQualityTable();
    }
  }

  void PrintQualityJson() {
    Json versions = Json::array();
    for (const auto& r : quality_.Rows(o_.threshold)) {
      Json shares = Json::array();
      for (uint64_t c : r.classes) {
        shares.push_back(Num(r.rows ? double(c) / double(r.rows) : 0.0));
      }
      Json v = {{"model", r.model},
                {"version", r.version},
                {"devices", r.devices},
                {"requests", r.requests},
                {"rows", r.rows},
                {"classifier", r.classifier},
                {"class_counts", r.classes},
                {"other_class", r.other},
                {"class_shares", std::move(shares)}};
      if (r.classifier) {
        v["mean_confidence"] = Num(r.mean_confidence);
      } else {
        v["mean_output_norm"] = Num(r.mean_output_norm);
      }
      v["shadow_agreement"] =
          r.has_shadow_agreement ? Num(r.shadow_agreement) : Json(nullptr);
      if (r.previous_version.empty()) {
        v["previous_version"] = nullptr;
        v["distance"] = nullptr;
      } else {
        v["previous_version"] = r.previous_version;
        v["distance"] = Num(r.distance);
      }
      v["flagged"] = r.flagged;
      versions.push_back(std::move(v));
    }
    PrintJson(Json{{"type", "quality"},
                   {"threshold", Num(o_.threshold)},
                   {"versions", std::move(versions)}});
  }

  void PrintQualityTable() {
    if (isatty(STDOUT_FILENO)) std::printf("\033[H\033[2J");
    std::printf("%-18s %-10s %7s %9s %9s %9s %-9s %6s  %s\n", "MODEL",
                "VERSION", "DEVICES", "REQUESTS", "ROWS", "MEAN_CONF", "VS",
                "TVD", "TOP CLASSES");
    for (const auto& r : quality_.Rows(o_.threshold)) {
      std::string top;
      std::vector<std::pair<uint64_t, size_t>> order;
      for (size_t i = 0; i < r.classes.size(); ++i) {
        if (r.classes[i]) order.emplace_back(r.classes[i], i);
      }
      std::sort(order.rbegin(), order.rend());
      for (size_t i = 0; i < order.size() && i < 4; ++i) {
        char part[48];
        std::snprintf(part, sizeof part, "%s%zu:%.1f%%", i ? " " : "",
                      order[i].second,
                      100.0 * double(order[i].first) / double(r.rows));
        top += part;
      }
      char conf[24] = "-", tvd[24] = "-";
      if (r.classifier) {
        std::snprintf(conf, sizeof conf, "%.3f", r.mean_confidence);
      } else if (r.rows) {
        std::snprintf(conf, sizeof conf, "n%.3g", r.mean_output_norm);
      }
      if (!r.previous_version.empty()) {
        std::snprintf(tvd, sizeof tvd, "%.3f", r.distance);
      }
      std::printf("%-18s %-10s %7" PRIu64 " %9" PRIu64 " %9" PRIu64
                  " %9s %-9s %6s  %s%s\n",
                  r.model.c_str(), r.version.c_str(), r.devices, r.requests,
                  r.rows, conf,
                  r.previous_version.empty() ? "-" : r.previous_version.c_str(),
                  tvd, r.flagged ? "MOVED " : "", top.c_str());
    }
    std::fflush(stdout);
  }

  void OnConnection(bool up, const std::string& why) {
    if (o_.json) {
      Json line = {{"type", "connection"},
                   {"state", up ? "connected" : "disconnected"}};
      if (!up) line["reason"] = why;
      PrintJson(line);
    } else {
      std::fprintf(stderr, "ternctl watch: %s%s%s\n",
                   up ? "connected to " : "disconnected: ",
                   up ? o_.broker.c_str() : why.c_str(), "");
    }
  }

  void Summary() {
    uint64_t batches = 0, dups = 0;
    for (const auto& [id, d] : devices_) {
      batches += d.batches;
      dups += d.duplicates;
    }
    uint64_t gaps = 0, missing = 0;
    std::string ranges;
    for (const auto& [key, open] : gaps_) {
      for (const auto& [first, last] : open) {
        ++gaps;
        missing += last - first + 1;
        if (ranges.size() < 400) {
          ranges += " " + key.first + "@" + std::to_string(key.second) + ":" +
                    std::to_string(first) +
                    (last > first ? "-" + std::to_string(last) : "");
        }
      }
    }
    std::fprintf(stderr,
                 "ternctl watch: %zu devices, %" PRIu64 " batches, %" PRIu64
                 " duplicates dropped, %" PRIu64 " undecodable, %" PRIu64
                 " gaps (%" PRIu64 " batches missing)%s%s\n",
                 devices_.size(), batches, dups, undecodable_, gaps, missing,
                 gaps ? ":" : "", ranges.c_str());
  }

 private:
  void HandlePresence(const std::string& device, std::string_view payload,
                      bool retained) {
    if (payload.empty()) return;  // a cleared retained message
    Presence p;
    if (!p.ParseFromArray(payload.data(), int(payload.size()))) {
      ++undecodable_;
      std::fprintf(stderr,
                   "ternctl watch: %s: presence of %zu bytes is not a "
                   "Presence message\n",
                   device.c_str(), payload.size());
      return;
    }
    DeviceRow& d = devices_[device];
    d.state = StateName(p.state());
    d.epoch = p.boot_epoch();
    d.session = p.session();
    if (p.state() == Presence::ONLINE) {
      d.model = p.model_name();
      d.version = p.model_version();
      d.kernel = p.kernel();
      d.daemon_version = p.daemon_version();
    }
    if (db_) {
      sqlite3_stmt* q = nullptr;
      sqlite3_prepare_v2(db_, "INSERT INTO presence VALUES (?, ?, ?, ?, ?, ?);",
                         -1, &q, nullptr);
      sqlite3_bind_text(q, 1, device.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(q, 2, NowMs());
      sqlite3_bind_text(q, 3, d.state.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(q, 4, int64_t(p.boot_epoch()));
      sqlite3_bind_int64(q, 5, int64_t(p.session()));
      sqlite3_bind_blob(q, 6, payload.data(), int(payload.size()),
                        SQLITE_TRANSIENT);
      DbStep(q);
    }
    if (o_.json) {
      PrintJson(Json{{"type", "presence"},
                     {"device", device},
                     {"state", d.state},
                     {"boot_epoch", p.boot_epoch()},
                     {"session", p.session()},
                     {"retained", retained},
                     {"daemon_version", p.daemon_version()},
                     {"model", p.model_name()},
                     {"model_version", p.model_version()},
                     {"kernel", p.kernel()},
                     {"capabilities",
                      Json(std::vector<std::string>(p.capabilities().begin(),
                                                    p.capabilities().end()))}});
    }
  }

  void HandleBatch(const std::string& device, std::string_view payload) {
    auto decoded = codec_.Decode(payload);
    if (!decoded.ok()) {
      ++undecodable_;
      std::fprintf(stderr, "ternctl watch: %s: %s\n", device.c_str(),
                   decoded.status().message());
      return;
    }
    const TelemetryBatch& b = *decoded;
    DeviceRow& d = devices_[device];
    // Deduplicate: in memory, and in the database when there is one.
    const auto key = std::make_tuple(device, b.boot_epoch(), b.sequence());
    bool fresh = seen_.insert(key).second;
    if (fresh && db_) fresh = InsertBatch(device, b);
    if (!fresh) {
      ++d.duplicates;
      return;
    }
    ++d.batches;
    TrackSequence(device, b.boot_epoch(), b.sequence());
    d.last_sequence = b.sequence();
    d.last_batch_ms = NowMs();
    d.dropped_total = b.dropped_batches_total();
    if (d.epoch < b.boot_epoch()) d.epoch = b.boot_epoch();
    if (o_.quality) {
      if (quality_.Add(device, b) && o_.json) PrintQualityJson();
      return;
    }
    for (const Metric& m : b.metrics()) {
      if (m.kind() == Metric::HISTOGRAM &&
          m.name() == "ternd_request_compute_seconds") {
        d.p99_ms = m.histogram().p99() * 1e3;
      }
    }
    if (!o_.json) return;
    Json metrics = Json::object();
    for (const Metric& m : b.metrics()) {
      if (m.kind() == Metric::HISTOGRAM) {
        const auto& h = m.histogram();
        metrics[SeriesName(m)] =
            Json{{"count", h.count()},  {"sum", Num(h.sum())},
                 {"p50", Num(h.p50())}, {"p90", Num(h.p90())},
                 {"p99", Num(h.p99())}, {"p999", Num(h.p999())}};
      } else {
        metrics[SeriesName(m)] = Num(m.value());
      }
    }
    PrintJson(Json{{"type", "telemetry"},
                   {"device", device},
                   {"boot_epoch", b.boot_epoch()},
                   {"sequence", b.sequence()},
                   {"start_unix_ms", b.start_unix_ms()},
                   {"end_unix_ms", b.end_unix_ms()},
                   {"uptime_ms", b.uptime_ms()},
                   {"dropped_batches_total", b.dropped_batches_total()},
                   {"compressed_bytes", payload.size()},
                   {"metrics", std::move(metrics)}});
  }

  // Gap detection per device and boot epoch (sequences start at 1 and
  // go up by one): a batch past the highest seen opens a gap for those in
  // between; a late batch (a retry after a reconnect) closes its part.
  void TrackSequence(const std::string& device, uint64_t epoch, uint64_t seq) {
    const std::pair<std::string, uint64_t> key{device, epoch};
    auto h = highest_.find(key);
    if (h == highest_.end()) {
      // The first batch of this epoch seen: earlier ones came before the
      // watcher did, unless this is the epoch's first batch anyway.
      highest_[key] = seq;
      return;
    }
    if (seq > h->second + 1) {
      const uint64_t first = h->second + 1, last = seq - 1;
      gaps_[key][first] = last;
      ReportGap(device, epoch, first, last, /*opened=*/true);
    } else if (seq <= h->second) {
      auto& open = gaps_[key];
      auto it = open.upper_bound(seq);
      if (it != open.begin()) {
        --it;
        const uint64_t first = it->first, last = it->second;
        if (seq >= first && seq <= last) {
          open.erase(it);
          DbDeleteGap(device, epoch, first);
          ReportGap(device, epoch, seq, seq, /*opened=*/false);
          if (first < seq) {
            open[first] = seq - 1;
            DbInsertGap(device, epoch, first, seq - 1);
          }
          if (seq < last) {
            open[seq + 1] = last;
            DbInsertGap(device, epoch, seq + 1, last);
          }
        }
      }
      if (open.empty()) gaps_.erase(key);
    }
    if (seq > h->second) h->second = seq;
  }

  void ReportGap(const std::string& device, uint64_t epoch, uint64_t first,
                 uint64_t last, bool opened) {
    if (opened) DbInsertGap(device, epoch, first, last);
    if (o_.json) {
      PrintJson(Json{{"type", opened ? "gap" : "gap_filled"},
                     {"device", device},
                     {"boot_epoch", epoch},
                     {"first_sequence", first},
                     {"last_sequence", last}});
    } else if (opened) {
      std::fprintf(stderr,
                   "ternctl watch: %s epoch %" PRIu64 ": batches %" PRIu64
                   "..%" PRIu64 " missing\n",
                   device.c_str(), epoch, first, last);
    }
  }

  void DbInsertGap(const std::string& device, uint64_t epoch, uint64_t first,
                   uint64_t last) {
    if (!db_) return;
    sqlite3_stmt* q = nullptr;
    sqlite3_prepare_v2(db_,
                       "INSERT OR REPLACE INTO gaps VALUES (?, ?, ?, ?, ?);",
                       -1, &q, nullptr);
    sqlite3_bind_text(q, 1, device.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, 2, int64_t(epoch));
    sqlite3_bind_int64(q, 3, int64_t(first));
    sqlite3_bind_int64(q, 4, int64_t(last));
    sqlite3_bind_int64(q, 5, NowMs());
    DbStep(q);
  }

  void DbDeleteGap(const std::string& device, uint64_t epoch, uint64_t first) {
    if (!db_) return;
    sqlite3_stmt* q = nullptr;
    sqlite3_prepare_v2(db_,
                       "DELETE FROM gaps WHERE device = ? AND boot_epoch = ? "
                       "AND first_sequence = ?;",
                       -1, &q, nullptr);
    sqlite3_bind_text(q, 1, device.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, 2, int64_t(epoch));
    sqlite3_bind_int64(q, 3, int64_t(first));
    DbStep(q);
  }

  static std::string Text(sqlite3_stmt* q, int i) {
    const unsigned char* t = sqlite3_column_text(q, i);
    return t ? reinterpret_cast<const char*>(t) : "";
  }

  // INSERT OR IGNORE: false when the batch was already stored.
  bool InsertBatch(const std::string& device, const TelemetryBatch& b) {
    sqlite3_exec(db_, "BEGIN;", nullptr, nullptr, nullptr);
    sqlite3_stmt* q = nullptr;
    sqlite3_prepare_v2(db_,
                       "INSERT OR IGNORE INTO batches VALUES (?, ?, ?, ?, ?, "
                       "?, ?, ?);",
                       -1, &q, nullptr);
    sqlite3_bind_text(q, 1, device.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, 2, int64_t(b.boot_epoch()));
    sqlite3_bind_int64(q, 3, int64_t(b.sequence()));
    sqlite3_bind_int64(q, 4, b.start_unix_ms());
    sqlite3_bind_int64(q, 5, b.end_unix_ms());
    sqlite3_bind_int64(q, 6, NowMs());
    sqlite3_bind_int64(q, 7, int64_t(b.dropped_batches_total()));
    const std::string raw = b.SerializeAsString();
    sqlite3_bind_blob(q, 8, raw.data(), int(raw.size()), SQLITE_TRANSIENT);
    DbStep(q);
    const bool inserted = sqlite3_changes(db_) > 0;
    if (inserted) {
      for (const Metric& m : b.metrics()) {
        auto add = [&](const std::string& series, double v) {
          sqlite3_stmt* s = nullptr;
          sqlite3_prepare_v2(db_,
                             "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?);",
                             -1, &s, nullptr);
          sqlite3_bind_text(s, 1, device.c_str(), -1, SQLITE_TRANSIENT);
          sqlite3_bind_int64(s, 2, int64_t(b.boot_epoch()));
          sqlite3_bind_int64(s, 3, int64_t(b.sequence()));
          sqlite3_bind_int64(s, 4, b.end_unix_ms());
          sqlite3_bind_text(s, 5, series.c_str(), -1, SQLITE_TRANSIENT);
          sqlite3_bind_double(s, 6, v);
          DbStep(s);
        };
        if (m.kind() == Metric::HISTOGRAM) {
          add(SeriesName(m) + "_count", double(m.histogram().count()));
          add(SeriesName(m) + "_sum", m.histogram().sum());
          add(SeriesName(m) + "_p99", m.histogram().p99());
        } else {
          add(SeriesName(m), m.value());
        }
      }
    }
    sqlite3_exec(db_, "COMMIT;", nullptr, nullptr, nullptr);
    return inserted;
  }

  void HandleUpdateState(const std::string& device, std::string_view payload,
                         bool retained) {
    if (payload.empty()) return;
    // An UpdateReport (ota/update_state.proto).
    ota::UpdateReport r;
    const bool ok =
        r.ParseFromArray(payload.data(), static_cast<int>(payload.size()));
    std::string summary;
    if (ok) {
      summary = r.state() + " v" + std::to_string(r.model_version());
      if (r.state() == "downloading" && r.bytes_total() > 0) {
        summary +=
            " " + std::to_string(100 * r.bytes_done() / r.bytes_total()) + "%";
      }
      if (r.state() == "validating" && r.shadow_required() > 0) {
        char shadow[96];
        std::snprintf(shadow, sizeof shadow, " %llu/%llu agree %.3f",
                      static_cast<unsigned long long>(r.shadow_requests()),
                      static_cast<unsigned long long>(r.shadow_required()),
                      r.shadow_agreement());
        summary += shadow;
      }
    } else {
      summary = "(undecodable, " + std::to_string(payload.size()) + " bytes)";
    }
    devices_[device].update_state = summary;
    if (db_) {
      sqlite3_stmt* q = nullptr;
      sqlite3_prepare_v2(db_, "INSERT INTO update_state VALUES (?, ?, ?);", -1,
                         &q, nullptr);
      sqlite3_bind_text(q, 1, device.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(q, 2, NowMs());
      sqlite3_bind_blob(q, 3, payload.data(), int(payload.size()),
                        SQLITE_TRANSIENT);
      DbStep(q);
    }
    if (o_.json) {
      if (!ok) {
        PrintJson(Json{{"type", "update_state"},
                       {"device", device},
                       {"retained", retained},
                       {"error", "undecodable"},
                       {"bytes", payload.size()}});
      } else {
        PrintJson(Json{{"type", "update_state"},
                       {"device", device},
                       {"retained", retained},
                       {"state_code", r.state_code()},
                       {"state", r.state()},
                       {"reason", r.reason()},
                       {"model", r.model_name()},
                       {"version", r.model_version()},
                       {"rollout", r.rollout_id()},
                       {"bytes_done", r.bytes_done()},
                       {"bytes_total", r.bytes_total()},
                       {"active_model", r.active_model()},
                       {"active_version", r.active_version()},
                       {"previous_version", r.previous_version()},
                       {"probation", r.probation()},
                       {"root_version", r.root_version()},
                       {"shadow_requests", r.shadow_requests()},
                       {"shadow_required", r.shadow_required()},
                       {"shadow_rows", r.shadow_rows()},
                       {"shadow_agreeing", r.shadow_agreeing()},
                       {"shadow_agreement", r.shadow_agreement()},
                       {"shadow_deadline", r.shadow_deadline()},
                       {"shadow_dropped", r.shadow_dropped()},
                       {"time", r.time()}});
      }
    }
  }

  void DbStep(sqlite3_stmt* q) {
    if (!q || sqlite3_step(q) != SQLITE_DONE) {
      std::fprintf(stderr, "ternctl watch: %s: %s\n", o_.db.c_str(),
                   sqlite3_errmsg(db_));
    }
    sqlite3_finalize(q);
  }

  void PrintTable() {
    if (isatty(STDOUT_FILENO)) std::printf("\033[H\033[2J");
    std::printf("%-20s %-8s %6s %7s %-18s %-12s %8s %8s %5s %7s %9s  %s\n",
                "DEVICE", "STATE", "EPOCH", "SESSION", "MODEL", "KERNEL",
                "LAST_SEQ", "BATCHES", "DUPS", "DROPPED", "P99_MS", "UPDATE");
    for (const auto& [id, d] : devices_) {
      const std::string model =
          d.model.empty() ? "-" : d.model + "@" + d.version;
      char p99[32];
      if (std::isnan(d.p99_ms)) {
        std::snprintf(p99, sizeof p99, "-");
      } else {
        std::snprintf(p99, sizeof p99, "%.3f", d.p99_ms);
      }
      std::printf("%-20s %-8s %6" PRIu64 " %7" PRIu64 " %-18s %-12s %8" PRIu64
                  " %8" PRIu64 " %5" PRIu64 " %7" PRIu64 " %9s  %s\n",
                  id.c_str(), d.state.c_str(), d.epoch, d.session,
                  model.c_str(), d.kernel.empty() ? "-" : d.kernel.c_str(),
                  d.last_sequence, d.batches, d.duplicates, d.dropped_total,
                  p99, d.update_state.empty() ? "-" : d.update_state.c_str());
    }
    std::fflush(stdout);
  }

  WatchOptions o_;
  sqlite3* db_ = nullptr;
  telemetry::BatchCodec codec_;
  std::map<std::string, DeviceRow> devices_;
  std::set<std::tuple<std::string, uint64_t, uint64_t>> seen_;
  // By (device, boot epoch): the highest sequence seen, and the open gaps
  // (first -> last missing sequence).
  std::map<std::pair<std::string, uint64_t>, uint64_t> highest_;
  std::map<std::pair<std::string, uint64_t>, std::map<uint64_t, uint64_t>>
      gaps_;
  uint64_t undecodable_ = 0;
  telemetry::FleetQuality quality_;
};

int OnSignal(sd_event_source* s, const signalfd_siginfo*, void*) {
  sd_event_exit(sd_event_source_get_event(s), 0);
  return 0;
}

int RunWatch(WatchOptions o) {
  if (!o.prefix.empty() && !o.fleet.empty()) {
    std::fprintf(stderr, "ternctl watch: give --fleet or --prefix, not both\n");
    return 2;
  }
  if (o.prefix.empty()) {
    o.prefix = "ternd/v1/" + (o.fleet.empty() ? "default" : o.fleet);
  }
  if (!(o.threshold >= 0 && o.threshold <= 1)) {
    std::fprintf(stderr,
                 "ternctl watch: --threshold is %g; expected a total "
                 "variation distance in [0, 1]\n",
                 o.threshold);
    return 2;
  }
  if (o.broker.empty()) {
    if (!o.quality || o.db.empty()) {
      std::fprintf(stderr,
                   "ternctl watch: --broker is required (only --quality "
                   "--db reads a database without one)\n");
      return 2;
    }
    if (::access(o.db.c_str(), R_OK) != 0) {
      std::fprintf(stderr, "ternctl watch: --db %s: cannot read: %s\n",
                   o.db.c_str(), std::strerror(errno));
      return 1;
    }
    Watcher offline(o);
    if (Status s = offline.OpenDb(); !s.ok()) {
      std::fprintf(stderr, "ternctl watch: %s\n", s.message());
      return 1;
    }
    offline.LoadQualityFromDb();
    offline.PrintQuality();
    return 0;
  }
  net::MqttOptions mo;
  if (Status st = net::ParseBrokerAddress(o.broker, o.no_tls ? 1883 : 8883,
                                          &mo.host, &mo.port);
      !st.ok()) {
    std::fprintf(stderr, "ternctl watch: --broker %s\n", st.message());
    return 2;
  }
  mo.tls = !o.no_tls;
  mo.ca_file = o.ca_file;
  mo.cert_file = o.cert_file;
  mo.key_file = o.key_file;
  mo.username = o.username;
  if (!o.password_file.empty()) {
    Result<std::string> password = net::ReadPasswordFile(o.password_file);
    if (!password.ok()) {
      std::fprintf(stderr, "ternctl watch: --password-file: %s\n",
                   password.status().message());
      return 1;
    }
    mo.password = std::move(*password);
  }
  // With --db: a persistent session under a client id of its own (derived
  // from the database, or --client-id), so batches published while the
  // watcher is away (a broker restart that devices reconnect to first)
  // wait on the broker instead of going to nobody.
  const bool persistent = !o.db.empty() && o.session_expiry_s > 0;
  if (!o.client_id.empty()) {
    mo.client_id = o.client_id;
  } else if (persistent) {
    mo.client_id = ClientIdForDb(o.db);
  } else {
    mo.client_id = "ternctl-watch-" + std::to_string(getpid());
  }
  mo.clean_start = !persistent;
  mo.session_expiry_s = persistent ? o.session_expiry_s : 0;
  mo.reconnect_min_ms = 200;
  mo.reconnect_max_ms = 10000;

  Watcher w(o);
  if (Status s = w.OpenDb(); !s.ok()) {
    std::fprintf(stderr, "ternctl watch: %s\n", s.message());
    return 1;
  }
  if (Status s = w.LoadDictionaries(); !s.ok()) {
    std::fprintf(stderr, "ternctl watch: %s\n", s.message());
    return 1;
  }
  if (o.quality && w.LoadQualityFromDb() > 0) w.PrintQuality();
  sd_event* loop = nullptr;
  if (sd_event_new(&loop) < 0) return 1;
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  sd_event_add_signal(loop, nullptr, SIGINT, &OnSignal, nullptr);
  sd_event_add_signal(loop, nullptr, SIGTERM, &OnSignal, nullptr);

  auto session = net::MqttSession::Create(loop, mo);
  if (!session.ok()) {
    std::fprintf(stderr, "ternctl watch: %s\n", session.status().message());
    sd_event_unref(loop);
    return 1;
  }
  net::MqttCallbacks cb;
  cb.on_connected = [&w] { w.OnConnection(true, ""); };
  cb.on_disconnected = [&w](const std::string& why) {
    w.OnConnection(false, why);
  };
  cb.on_message = [&w](std::string_view t, std::string_view p, bool r) {
    w.OnMessage(t, p, r);
  };
  (*session)->AddObserver(std::move(cb));
  for (const char* leaf : {"presence", "telemetry", "update/state"}) {
    (*session)->Subscribe(o.prefix + "/devices/+/" + leaf, 1);
  }
  (*session)->Start();
  const int r = sd_event_loop(loop);
  session->reset();
  w.Summary();
  sd_event_unref(loop);
  return r < 0 ? 1 : 0;
}

}  // namespace

void AddWatchCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<WatchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "watch",
      "Follow a fleet's presence, telemetry and update states on its MQTT "
      "broker");
  cmd->add_option("--broker", o->broker,
                  "Broker as HOST[:PORT] (8883 with TLS, 1883 without); "
                  "required unless --quality --db reads a database");
  cmd->add_option("--cafile", o->ca_file,
                  "CA certificate(s) of the broker (PEM)");
  cmd->add_option("--cert", o->cert_file, "Client certificate (PEM)");
  cmd->add_option("--key", o->key_file, "Client key (PEM)");
  cmd->add_option("--username", o->username, "MQTT user name");
  cmd->add_option("--password-file", o->password_file,
                  "File whose first line is the MQTT password");
  cmd->add_option("--fleet", o->fleet,
                  "Fleet name: the prefix is ternd/v1/FLEET");
  cmd->add_option("--prefix", o->prefix,
                  "Topic prefix (default ternd/v1/default, or from --fleet)");
  cmd->add_option("--client-id", o->client_id,
                  "MQTT client id (default: with --db, one derived from the "
                  "database's path, so the same --db resumes its session; "
                  "else ternctl-watch-PID)");
  cmd->add_flag("--json", o->json, "One JSON object per line");
  cmd->add_option("--db", o->db,
                  "Append presence, batches and samples to this SQLite file");
  cmd->add_option("--dictionary", o->dictionaries,
                  "zstd dictionary for telemetry compressed with one "
                  "(repeatable; matched by dictionary id)");
  cmd->add_flag("--no-tls", o->no_tls, "Plain TCP (closed test networks only)");
  cmd->add_option("--session-expiry", o->session_expiry_s,
                  "With --db: seconds the broker keeps the watcher's session "
                  "(and queues its messages) while it is away; 0: a clean "
                  "session (default 604800, a week)");
  cmd->add_flag("--quality", o->quality,
                "Model quality per version across the fleet instead of "
                "devices: devices, requests, class distribution, mean "
                "confidence; flags a version whose class distribution moved");
  cmd->add_option("--threshold", o->threshold,
                  "With --quality: flag a version whose class distribution "
                  "is farther than this total variation distance from the "
                  "previous version's (0..1, default 0.1)");
  cmd->callback([o, exit_code] { *exit_code = RunWatch(*o); });
}

}  // namespace ternd::ternctl
