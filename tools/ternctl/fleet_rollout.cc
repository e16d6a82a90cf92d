// `ternctl rollout halt` and `ternctl rollout status` (docs/ternctl.md).
//
// halt: signs a RolloutHalt (ota/metadata.proto) with the release key(s),
// as role "halt" (its own signing domain), and publishes it retained on
// <prefix>/rollouts/<ROLLOUT_ID>/halt, so devices that connect later see
// it too.
//
// status: a fleet-side summary of one rollout from what the broker
// retains: every device's update state (<prefix>/devices/+/update/state),
// presence (devices/+/presence: who exists and in which groups), the
// release topics (which devices and groups the rollout targets, its wave
// schedule) and the rollout's halt. Retained messages arrive in a burst on
// subscribing; the summary is printed once the burst has been quiet for
// --settle-ms (with --watch: again after every later burst, until
// SIGINT/SIGTERM). Nothing read here is trusted: it is reported as the
// devices and the operator published it.
#include <signal.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "net/broker_address.h"
#include "net/mqtt_session.h"
#include "ota/update_state.pb.h"
#include "ota/waves.h"
#include "telemetry/telemetry.pb.h"
#include "tools/ternctl/fleet_common.h"
#include "tools/ternctl/json_output.h"

namespace ternd::ternctl {
namespace {

constexpr int64_t kDay = 86400;

// The states a summary always shows, in this order ("validating": shadow
// validation, counted by name).
constexpr const char* kMainStates[] = {"waiting", "downloading", "validating",
                                       "active",  "rejected",    "failed"};

struct BrokerFlags {
  BrokerTarget target;
  std::string fleet, prefix;
};

void AddBrokerFlags(CLI::App* cmd, BrokerFlags* b) {
  cmd->add_option("--broker", b->target.broker,
                  "Broker HOST[:PORT] (port 8883)")
      ->required();
  cmd->add_option("--cafile", b->target.cafile,
                  "CA certificate of the broker (PEM)")
      ->required();
  cmd->add_option("--cert", b->target.cert, "Client certificate (PEM)");
  cmd->add_option("--key", b->target.key,
                  "Client certificate's private key (PEM)");
  cmd->add_option("--username", b->target.username, "MQTT user name");
  cmd->add_option("--password-file", b->target.password_file,
                  "File holding the MQTT password (one line)");
  cmd->add_option("--client-id", b->target.client_id, "MQTT client id");
  cmd->add_option("--fleet", b->fleet,
                  "Fleet name: topics under ternd/v1/FLEET");
  cmd->add_option("--prefix", b->prefix,
                  "Topic prefix (default: ternd/v1/FLEET)");
  cmd->add_option("--timeout", b->target.timeout_s,
                  "Seconds to wait for the broker")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
}

Result<std::string> Prefix(const BrokerFlags& b) {
  if (!b.prefix.empty() && !b.fleet.empty()) {
    return InvalidArgument("give --fleet or --prefix, not both");
  }
  return TopicPrefix(b.prefix, b.fleet);
}

Status CheckRolloutId(const std::string& id) {
  if (id.empty() || id.find_first_of("/+#") != std::string::npos) {
    return InvalidArgument(
        "rollout id '%s' cannot be a topic level (empty, or with '/', '+', "
        "'#')",
        id.c_str());
  }
  return Status::Ok();
}

// ------------------------------------------------------------------ halt

struct HaltOptions {
  BrokerFlags broker;
  std::string rollout_id;
  std::string reason;
  std::vector<std::string> sign;
  ExpiryOption expiry;
  std::string out;
  bool force = false;
  bool json = false;
};

int RunHalt(const HaltOptions& o) {
  if (Status s = CheckRolloutId(o.rollout_id); !s.ok()) return FleetFail(s);
  Result<std::string> prefix = Prefix(o.broker);
  if (!prefix.ok()) return FleetFail(prefix.status());
  const int64_t now = NowSeconds();
  Result<int64_t> expires =
      ResolveExpiry(o.expiry, now, kDay, 365 * kDay, "days");
  if (!expires.ok()) return FleetFail(expires.status());
  Result<std::vector<ota::Ed25519KeyPair>> keys =
      ReadSigningKeys(o.sign, "--sign");
  if (!keys.ok()) return FleetFail(keys.status());
  if (keys->empty()) {
    return FleetFail(InvalidArgument(
        "give the release key(s) to sign the halt with: --sign release.key"));
  }
  ota::RolloutHalt halt;
  halt.set_rollout_id(o.rollout_id);
  halt.set_issued(now);
  halt.set_expires(*expires);
  halt.set_reason(o.reason);
  const std::string payload = halt.SerializeAsString();
  Result<ota::SignedEnvelope> env = ota::SignEnvelope(
      ota::kHaltRole,
      {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()},
      *keys);
  if (!env.ok()) return FleetFail(env.status());
  const std::string bytes = env->SerializeAsString();
  if (!o.out.empty()) {
    if (Status s = WriteOutput(o.out, bytes, 0644, o.force); !s.ok()) {
      return FleetFail(s);
    }
  }
  const std::string topic = *prefix + "/rollouts/" + o.rollout_id + "/halt";
  if (Status s = PublishRetained(o.broker.target, topic, bytes); !s.ok()) {
    return FleetFail(s);
  }
  if (o.json) {
    PrintJson(Json{{"rollout_id", o.rollout_id},
                   {"topic", topic},
                   {"issued", now},
                   {"expires", *expires},
                   {"reason", o.reason},
                   {"signed_by", Signers(*env)},
                   {"file", o.out.empty() ? Json(nullptr) : Json(o.out)}});
  } else {
    std::printf("halted       rollout %s\n", o.rollout_id.c_str());
    std::printf("topic        %s (retained, QoS 1, acknowledged)\n",
                topic.c_str());
    std::printf("expires      %s\n", FormatTime(*expires).c_str());
    std::printf("signed by    %s\n", Signers(*env).c_str());
  }
  return 0;
}

// ---------------------------------------------------------------- status

struct StatusOptions {
  BrokerFlags broker;
  std::string rollout_id;
  bool json = false;
  bool watch = false;
  bool no_tls = false;
  int settle_ms = 500;
};

// What the broker retains about the fleet, as last heard.
class RolloutView {
 public:
  RolloutView(std::string prefix, std::string rollout_id)
      : prefix_(std::move(prefix)), id_(std::move(rollout_id)) {}

  void OnMessage(std::string_view topic, std::string_view payload) {
    const std::string devices = prefix_ + "/devices/";
    const std::string groups = prefix_ + "/groups/";
    if (topic == prefix_ + "/rollouts/" + id_ + "/halt") {
      halt_.reset();
      ota::SignedEnvelope env;
      ota::RolloutHalt h;
      if (!payload.empty() &&
          env.ParseFromArray(payload.data(),
                             static_cast<int>(payload.size())) &&
          h.ParseFromString(env.payload()) && h.rollout_id() == id_) {
        halt_ = h;
      }
      return;
    }
    std::string_view rest;
    bool group = false;
    if (topic.starts_with(devices)) {
      rest = topic.substr(devices.size());
    } else if (topic.starts_with(groups)) {
      rest = topic.substr(groups.size());
      group = true;
    } else {
      return;
    }
    const size_t slash = rest.find('/');
    if (slash == std::string_view::npos) return;
    const std::string name(rest.substr(0, slash));
    const std::string_view leaf = rest.substr(slash + 1);
    if (leaf == "update/release") {
      OnRelease((group ? "g:" : "d:") + name, payload);
    } else if (group) {
      return;
    } else if (leaf == "update/state") {
      ota::UpdateReport r;
      if (payload.empty() ||
          !r.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        states_.erase(name);
      } else {
        states_[name] = std::move(r);
      }
    } else if (leaf == "presence") {
      telemetry::Presence p;
      if (payload.empty() ||
          !p.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        presence_.erase(name);
      } else {
        presence_[name] = std::move(p);
      }
    }
  }

  Json Summary(int64_t now) const {
    // The releases of this rollout on the broker: targets, schedule, start.
    std::set<std::string> target_devices, target_groups;
    const ota::Release* release = nullptr;
    for (const auto& [topic, r] : releases_) {
      if (r.rollout_id() != id_) continue;
      if (!release || r.sequence() > release->sequence()) release = &r;
      target_devices.insert(r.target_devices().begin(),
                            r.target_devices().end());
      target_groups.insert(r.target_groups().begin(), r.target_groups().end());
    }
    Json targeted = nullptr;
    std::set<std::string> targets = target_devices;
    if (release) {
      for (const auto& [id, p] : presence_) {
        for (const std::string& g : p.groups()) {
          if (target_groups.count(g)) targets.insert(id);
        }
      }
      // Known from presence (and the release's device list); devices of a
      // targeted group that never connected are not known here.
      targeted = targets.size();
    }
    std::map<std::string, int> counts;
    for (const char* s : kMainStates) counts[s] = 0;
    struct ReasonGroup {
      int count = 0;
      std::string example;
      std::vector<std::string> devices;
    };
    std::map<std::string, ReasonGroup> reasons;
    Json devices = Json::object();
    int reporting = 0;
    int64_t first_report = 0;
    for (const auto& [id, r] : states_) {
      if (r.rollout_id() != id_) continue;
      ++reporting;
      ++counts[r.state()];
      devices[id] = r.state();
      if (r.time() > 0 && (first_report == 0 || r.time() < first_report)) {
        first_report = r.time();
      }
      if (!r.reason().empty() &&
          (r.state() == "rejected" || r.state() == "failed" ||
           r.state() == "rolled_back")) {
        const std::string key = r.reason().substr(0, r.reason().find(':'));
        ReasonGroup& g = reasons[r.state() + ": " + key];
        if (g.count++ == 0) g.example = r.reason();
        g.devices.push_back(id);
      }
    }
    int not_reported = 0;
    for (const std::string& t : targets) {
      auto it = states_.find(t);
      if (it == states_.end() || it->second.rollout_id() != id_) {
        ++not_reported;
      }
    }
    // Since when: the wave schedule's start, else the release's issue time.
    int64_t start = 0;
    if (release)
      start =
          release->has_waves() ? release->waves().start() : release->issued();
    Json states = Json::object();
    for (const char* s : kMainStates) states[s] = counts[s];
    for (const auto& [s, n] : counts) {
      if (!states.contains(s)) states[s] = n;
    }
    Json grouped = Json::array();
    std::vector<std::pair<std::string, const ReasonGroup*>> order;
    for (const auto& [k, g] : reasons) order.emplace_back(k, &g);
    std::stable_sort(order.begin(), order.end(),
                     [](const auto& a, const auto& b) {
                       return a.second->count > b.second->count;
                     });
    for (const auto& [k, g] : order) {
      grouped.push_back(Json{{"reason", k},
                             {"count", g->count},
                             {"example", g->example},
                             {"devices", g->devices}});
    }
    Json out{{"rollout_id", id_}};
    out["model"] = release ? Json(release->model_name()) : Json(nullptr);
    out["version"] = release ? Json(release->model_version()) : Json(nullptr);
    out["started"] = start ? Json(start) : Json(nullptr);
    out["since_start_s"] = start ? Json(now - start) : Json(nullptr);
    if (release && release->has_waves()) {
      out["wave_percent"] = ota::WavePercentAt(release->waves(), now);
    } else {
      out["wave_percent"] = nullptr;
    }
    out["targeted"] = targeted;
    out["reporting"] = reporting;
    out["not_reported"] = release ? Json(not_reported) : Json(nullptr);
    out["states"] = states;
    out["reasons"] = grouped;
    out["halted"] = halt_.has_value();
    out["halt_reason"] = halt_ ? Json(halt_->reason()) : Json(nullptr);
    out["devices"] = devices;
    return out;
  }

 private:
  void OnRelease(const std::string& key, std::string_view payload) {
    ota::SignedEnvelope env;
    ota::Release r;
    if (payload.empty() ||
        !env.ParseFromArray(payload.data(), static_cast<int>(payload.size())) ||
        !r.ParseFromString(env.payload())) {
      releases_.erase(key);
      return;
    }
    releases_[key] = std::move(r);
  }

  std::string prefix_, id_;
  std::map<std::string, ota::UpdateReport> states_;      // by device
  std::map<std::string, telemetry::Presence> presence_;  // by device
  std::map<std::string, ota::Release> releases_;  // by "d:id" / "g:group"
  std::optional<ota::RolloutHalt> halt_;
};

std::string Duration(int64_t s) {
  if (s < 0) return "in " + Duration(-s);
  char buf[64];
  if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm %02llds",
                  static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  } else if (s < kDay) {
    std::snprintf(buf, sizeof buf, "%lldh %02lldm",
                  static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lldd %02lldh",
                  static_cast<long long>(s / kDay),
                  static_cast<long long>(s % kDay / 3600));
  }
  return buf;
}

void PrintSummary(const Json& j) {
  std::printf("rollout      %s\n", j["rollout_id"].get<std::string>().c_str());
  if (!j["model"].is_null()) {
    std::printf("model        %s v%llu\n",
                j["model"].get<std::string>().c_str(),
                static_cast<unsigned long long>(j["version"].get<uint64_t>()));
  }
  if (!j["started"].is_null()) {
    const int64_t since = j["since_start_s"].get<int64_t>();
    std::printf("started      %s (%s%s)\n",
                FormatTime(j["started"].get<int64_t>()).c_str(),
                Duration(since).c_str(), since >= 0 ? " ago" : "");
  }
  if (!j["wave_percent"].is_null()) {
    std::printf("wave         %u%% open\n", j["wave_percent"].get<unsigned>());
  }
  if (j["targeted"].is_null()) {
    std::printf(
        "targeted     unknown (no release of this rollout on the "
        "broker)\n");
  } else {
    std::printf(
        "targeted     %d (from the release and presence; %d not "
        "reporting this rollout)\n",
        j["targeted"].get<int>(), j["not_reported"].get<int>());
  }
  std::printf("reporting    %d\n", j["reporting"].get<int>());
  for (const auto& [state, n] : j["states"].items()) {
    std::printf("  %-12s %d\n", state.c_str(), n.get<int>());
  }
  if (!j["reasons"].empty()) std::printf("reasons\n");
  for (const Json& r : j["reasons"]) {
    std::printf("  %4d  %s (e.g. %s)\n", r["count"].get<int>(),
                r["reason"].get<std::string>().c_str(),
                r["example"].get<std::string>().c_str());
  }
  if (j["halted"].get<bool>()) {
    std::printf("halted       yes%s%s\n",
                j["halt_reason"].get<std::string>().empty() ? "" : ": ",
                j["halt_reason"].get<std::string>().c_str());
  }
  std::fflush(stdout);
}

struct StatusRun {
  sd_event* loop = nullptr;
  sd_event_source* settle = nullptr;
  RolloutView* view = nullptr;
  const StatusOptions* o = nullptr;
  bool connected = false;
  bool printed = false;
  std::string last_error;

  void Print() {
    const Json j = view->Summary(NowSeconds());
    if (o->json) {
      PrintJson(j);
    } else {
      if (printed) std::printf("\n");
      PrintSummary(j);
    }
    printed = true;
    if (!o->watch) sd_event_exit(loop, 0);
  }
  // (Re)starts the quiet period after which the summary is printed.
  void Settle() {
    if (settle) {
      sd_event_source_set_time_relative(settle, uint64_t(o->settle_ms) * 1000);
      sd_event_source_set_enabled(settle, SD_EVENT_ONESHOT);
      return;
    }
    sd_event_add_time_relative(
        loop, &settle, CLOCK_MONOTONIC, uint64_t(o->settle_ms) * 1000, 0,
        [](sd_event_source*, uint64_t, void* self) {
          static_cast<StatusRun*>(self)->Print();
          return 0;
        },
        this);
  }
};

int OnStopSignal(sd_event_source* s, const signalfd_siginfo*, void*) {
  sd_event_exit(sd_event_source_get_event(s), 0);
  return 0;
}

int RunStatus(const StatusOptions& o) {
  if (Status s = CheckRolloutId(o.rollout_id); !s.ok()) return FleetFail(s);
  Result<std::string> prefix = Prefix(o.broker);
  if (!prefix.ok()) return FleetFail(prefix.status());
  const BrokerTarget& t = o.broker.target;
  net::MqttOptions mo;
  if (Status st = net::ParseBrokerAddress(t.broker, o.no_tls ? 1883 : 8883,
                                          &mo.host, &mo.port);
      !st.ok()) {
    return FleetFail(st.Prepend("--broker"));
  }
  mo.tls = !o.no_tls;
  mo.ca_file = t.cafile;
  mo.cert_file = t.cert;
  mo.key_file = t.key;
  mo.username = t.username;
  if (!t.password_file.empty()) {
    Result<std::string> password = net::ReadPasswordFile(t.password_file);
    if (!password.ok()) return FleetFail(password.status());
    mo.password = std::move(*password);
  }
  mo.client_id = t.client_id.empty()
                     ? "ternctl-rollout-" + std::to_string(::getpid())
                     : t.client_id;
  mo.reconnect_min_ms = 200;
  mo.reconnect_max_ms = 5000;
  mo.connect_timeout_ms = t.timeout_s * 1000;

  sd_event* loop = nullptr;
  if (sd_event_new(&loop) < 0) return 1;
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  sd_event_add_signal(loop, nullptr, SIGINT, &OnStopSignal, nullptr);
  sd_event_add_signal(loop, nullptr, SIGTERM, &OnStopSignal, nullptr);

  RolloutView view(*prefix, o.rollout_id);
  StatusRun run;
  run.loop = loop;
  run.view = &view;
  run.o = &o;
  // No connection within --timeout: an error naming the broker.
  sd_event_source* deadline = nullptr;
  sd_event_add_time_relative(
      loop, &deadline, CLOCK_MONOTONIC, uint64_t(t.timeout_s) * 1000000, 0,
      [](sd_event_source*, uint64_t, void* self) {
        auto* r = static_cast<StatusRun*>(self);
        if (!r->connected) sd_event_exit(r->loop, 2);
        return 0;
      },
      &run);
  auto session = net::MqttSession::Create(loop, mo);
  if (!session.ok()) {
    sd_event_unref(loop);
    return FleetFail(session.status());
  }
  net::MqttCallbacks cb;
  cb.on_connected = [&run] {
    run.connected = true;
    run.Settle();
  };
  cb.on_disconnected = [&run](const std::string& why) { run.last_error = why; };
  cb.on_message = [&run, &view](std::string_view topic,
                                std::string_view payload, bool) {
    view.OnMessage(topic, payload);
    run.Settle();
  };
  (*session)->AddObserver(std::move(cb));
  // Halt first (as devices do), then releases, presence and states.
  (*session)->Subscribe(*prefix + "/rollouts/" + o.rollout_id + "/halt", 1);
  (*session)->Subscribe(*prefix + "/groups/+/update/release", 1);
  (*session)->Subscribe(*prefix + "/devices/+/update/release", 1);
  (*session)->Subscribe(*prefix + "/devices/+/presence", 1);
  (*session)->Subscribe(*prefix + "/devices/+/update/state", 1);
  (*session)->Start();
  const int r = sd_event_loop(loop);
  session->reset();
  if (run.settle) sd_event_source_unref(run.settle);
  if (deadline) sd_event_source_unref(deadline);
  sd_event_unref(loop);
  if (r == 2) {
    return FleetFail(Errorf(
        StatusCode::kDeadlineExceeded, "no connection to %s within %d s%s%s",
        t.broker.c_str(), t.timeout_s, run.last_error.empty() ? "" : ": ",
        run.last_error.c_str()));
  }
  return r < 0 ? 1 : 0;
}

}  // namespace

void AddRolloutCommand(CLI::App& app, int* exit_code) {
  CLI::App* rollout = app.add_subcommand(
      "rollout", "Halt a rollout, or summarise one from the fleet broker");
  rollout->require_subcommand(1);

  auto h = std::make_shared<HaltOptions>();
  CLI::App* halt = rollout->add_subcommand(
      "halt",
      "Sign a halt of ROLLOUT_ID with the release key(s) and publish it "
      "retained: devices that have not started the rollout stop");
  halt->add_option("ROLLOUT_ID", h->rollout_id, "The rollout to halt")
      ->required();
  AddBrokerFlags(halt, &h->broker);
  Repeatable(halt->add_option("--sign", h->sign,
                              "Release private key (.key; repeat for a "
                              "threshold)"));
  halt->add_option("--reason", h->reason,
                   "Why (shown in device reports and rollout status)");
  AddExpiryOptions(halt, &h->expiry, "days", "365 days from now");
  halt->add_option("--out", h->out, "Also write the signed halt to FILE");
  halt->add_flag("--force", h->force, "Replace --out if it exists");
  halt->add_flag("--json", h->json, "Print one JSON object");
  halt->callback([h, exit_code] { *exit_code = RunHalt(*h); });

  auto s = std::make_shared<StatusOptions>();
  CLI::App* status = rollout->add_subcommand(
      "status",
      "Summarise ROLLOUT_ID from the retained update states, presence and "
      "release topics: devices targeted, per-state counts, rejection "
      "reasons, time since start");
  status->add_option("ROLLOUT_ID", s->rollout_id, "The rollout")->required();
  AddBrokerFlags(status, &s->broker);
  status->add_flag("--no-tls", s->no_tls,
                   "Plain TCP (closed test networks only)");
  status->add_flag("--json", s->json, "One JSON object per summary");
  status->add_flag("--watch", s->watch,
                   "Print again after every change, until SIGINT/SIGTERM");
  status
      ->add_option("--settle-ms", s->settle_ms,
                   "Quiet time after the retained burst before printing")
      ->capture_default_str()
      ->check(CLI::Range(10, 60000));
  status->callback([s, exit_code] { *exit_code = RunStatus(*s); });
}

}  // namespace ternd::ternctl
