// `ternctl publish`: puts signed metadata on the fleet broker, retained, QoS
// 1, MQTT v5 over TLS, on the topics of docs/ota.md, and reports the
// broker's PUBACK reason code (MQTT v5; over 3.1.1 a refused publish is
// acknowledged like an accepted one). libmosquitto runs its own network
// thread here (mosquitto_loop_start): a CLI has no event loop to share.
// Passwords and key material are never printed.
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "base/file.h"
#include "net/broker_address.h"
#include "tools/ternctl/fleet_common.h"
#include "tools/ternctl/json_output.h"

namespace ternd::ternctl {
namespace {

struct PublishOptions {
  std::string broker;
  std::string cafile;
  std::string cert;
  std::string key;
  std::string username;
  std::string password_file;
  std::string prefix;
  std::string fleet;
  std::string device;
  std::string group;
  bool root = false;
  bool timestamp = false;
  bool clear = false;
  std::string file;
  std::string client_id;
  int timeout_s = 30;
  bool json = false;
};

// What the library's thread reports to the waiting main thread.
struct Session {
  std::mutex mu;
  std::condition_variable cv;
  bool connack = false;
  int connack_reason = -1;
  bool acked = false;
  int mid = -1;
  int ack_reason = -1;
  bool disconnected = false;
  int disconnect_rc = 0;
  // libmosquitto reports a failed TLS handshake only through its log (the
  // network thread then retries quietly), so the first OpenSSL error is
  // caught there.
  std::string tls_error;
};

void OnConnect(mosquitto*, void* obj, int rc, int /*flags*/,
               const mosquitto_property*) {
  auto* s = static_cast<Session*>(obj);
  std::lock_guard<std::mutex> lock(s->mu);
  s->connack = true;
  s->connack_reason = rc;
  s->cv.notify_all();
}

void OnPublish(mosquitto*, void* obj, int mid, int reason,
               const mosquitto_property*) {
  auto* s = static_cast<Session*>(obj);
  std::lock_guard<std::mutex> lock(s->mu);
  s->acked = true;
  s->mid = mid;
  s->ack_reason = reason;
  s->cv.notify_all();
}

void OnDisconnect(mosquitto*, void* obj, int rc, const mosquitto_property*) {
  auto* s = static_cast<Session*>(obj);
  std::lock_guard<std::mutex> lock(s->mu);
  s->disconnected = true;
  s->disconnect_rc = rc;
  s->cv.notify_all();
}

void OnLog(mosquitto*, void* obj, int /*level*/, const char* text) {
  if (text == nullptr || std::strncmp(text, "OpenSSL Error", 13) != 0) return;
  auto* s = static_cast<Session*>(obj);
  std::lock_guard<std::mutex> lock(s->mu);
  if (s->tls_error.empty()) s->tls_error = text;
  s->cv.notify_all();
}

struct MosquittoLib {
  MosquittoLib() { mosquitto_lib_init(); }
  ~MosquittoLib() { mosquitto_lib_cleanup(); }
};

// The topic (docs/ota.md) and the role a payload for it must have.
Status Topic(const PublishOptions& o, const std::string& fleet,
             std::string* topic, const char** role) {
  Result<std::string> resolved = TopicPrefix(o.prefix, fleet);
  if (!resolved.ok()) return resolved.status();
  const std::string& prefix = *resolved;
  for (const std::string* part : {&o.device, &o.group}) {
    if (part->find_first_of("/+#") != std::string::npos) {
      return InvalidArgument("'%s' cannot be part of a topic ('/', '+', '#')",
                             part->c_str());
    }
  }
  if (!o.device.empty()) {
    *topic = prefix + "/devices/" + o.device + "/update/release";
    *role = "release";
  } else if (!o.group.empty()) {
    *topic = prefix + "/groups/" + o.group + "/update/release";
    *role = "release";
  } else if (o.root) {
    *topic = prefix + "/trust/root";
    *role = "root";
  } else {
    *topic = prefix + "/trust/timestamp";
    *role = "timestamp";
  }
  return Status::Ok();
}

Status MosqError(int rc, const char* what, const std::string& broker) {
  return Errorf(
      StatusCode::kUnavailable, "%s %s: %s", what, broker.c_str(),
      rc == MOSQ_ERR_ERRNO ? std::strerror(errno) : mosquitto_strerror(rc));
}

Status Publish(const PublishOptions& o, const std::string& topic,
               const std::string& payload) {
  std::string host;
  int port = 0;
  if (Status st = net::ParseBrokerAddress(o.broker, 8883, &host, &port);
      !st.ok()) {
    return st.Prepend("--broker");
  }
  std::string password;
  if (!o.password_file.empty()) {
    TERND_ASSIGN_OR_RETURN(password, net::ReadPasswordFile(o.password_file));
  }
  MosquittoLib lib;
  Session session;
  const std::string client_id =
      o.client_id.empty() ? "ternctl-publish-" + std::to_string(::getpid())
                          : o.client_id;
  std::unique_ptr<mosquitto, void (*)(mosquitto*)> mosq(
      mosquitto_new(client_id.c_str(), true, &session), mosquitto_destroy);
  if (!mosq) return Internal("libmosquitto: cannot create a client");
  mosquitto_int_option(mosq.get(), MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
  mosquitto_connect_v5_callback_set(mosq.get(), OnConnect);
  mosquitto_publish_v5_callback_set(mosq.get(), OnPublish);
  mosquitto_disconnect_v5_callback_set(mosq.get(), OnDisconnect);
  mosquitto_log_callback_set(mosq.get(), OnLog);
  int rc = mosquitto_tls_set(mosq.get(), o.cafile.c_str(), nullptr,
                             o.cert.empty() ? nullptr : o.cert.c_str(),
                             o.key.empty() ? nullptr : o.key.c_str(), nullptr);
  if (rc != MOSQ_ERR_SUCCESS) {
    return InvalidArgument("TLS files (--cafile %s%s%s%s%s): %s",
                           o.cafile.c_str(), o.cert.empty() ? "" : ", --cert ",
                           o.cert.c_str(), o.key.empty() ? "" : ", --key ",
                           o.key.c_str(), mosquitto_strerror(rc));
  }
  if (!o.username.empty()) {
    rc = mosquitto_username_pw_set(
        mosq.get(), o.username.c_str(),
        o.password_file.empty() ? nullptr : password.c_str());
    if (rc != MOSQ_ERR_SUCCESS) {
      return InvalidArgument("--username: %s", mosquitto_strerror(rc));
    }
  }
  // What the operator can change: the credentials this client showed.
  auto credentials = [&o]() {
    std::string given;
    if (o.cert.empty()) {
      given = "no client certificate was given (--cert C --key K)";
    } else {
      given = "the client certificate " + o.cert +
              " was not accepted (signed by the fleet CA? expired?)";
    }
    given += o.username.empty()
                 ? ", no user name (--username U --password-file F)"
                 : ", user name '" + o.username + "'";
    return given;
  };
  auto tls_failure = [&](const std::string& detail) {
    // The broker's alert when it requires a client certificate and got
    // none (or refused the one given): arrives here or in the handshake.
    if (detail.find("certificate required") != std::string::npos ||
        detail.find("alert bad certificate") != std::string::npos ||
        detail.find("alert unknown ca") != std::string::npos) {
      return Errorf(StatusCode::kPermissionDenied,
                    "broker %s refused the TLS connection (%s): it requires "
                    "a client certificate, or refuses this one; %s",
                    o.broker.c_str(), detail.c_str(), credentials().c_str());
    }
    return Errorf(StatusCode::kUnavailable,
                  "TLS with %s failed (is its certificate signed by --cafile "
                  "%s and issued for '%s'?): %s",
                  o.broker.c_str(), o.cafile.c_str(), host.c_str(),
                  detail.c_str());
  };
  // The handshake may finish (or fail) here or later on the network thread.
  rc = mosquitto_connect(mosq.get(), host.c_str(), port, 30);
  if (rc == MOSQ_ERR_TLS) {
    std::lock_guard<std::mutex> lock(session.mu);
    return tls_failure(session.tls_error.empty() ? mosquitto_strerror(rc)
                                                 : session.tls_error);
  }
  if (rc == MOSQ_ERR_PROTOCOL || (rc == MOSQ_ERR_ERRNO && errno == EPROTO)) {
    // The TLS handshake ended with an alert from the broker: mosquitto
    // sends one when it requires a client certificate and got none.
    return Errorf(StatusCode::kPermissionDenied,
                  "broker %s refused the TLS connection (%s): it requires a "
                  "client certificate, or refuses this one; %s",
                  o.broker.c_str(), std::strerror(EPROTO),
                  credentials().c_str());
  }
  if (rc != MOSQ_ERR_SUCCESS) {
    return MosqError(rc, "cannot connect to", o.broker);
  }
  rc = mosquitto_loop_start(mosq.get());
  if (rc != MOSQ_ERR_SUCCESS) {
    return MosqError(rc, "cannot start the network thread for", o.broker);
  }
  // Stops the thread on every return below.
  struct LoopStop {
    mosquitto* m;
    ~LoopStop() {
      mosquitto_disconnect_v5(m, MQTT_RC_NORMAL_DISCONNECTION, nullptr);
      mosquitto_loop_stop(m, false);
    }
  } loop_stop{mosq.get()};
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(o.timeout_s);
  std::unique_lock<std::mutex> lock(session.mu);
  if (!session.cv.wait_until(lock, deadline, [&] {
        return session.connack || session.disconnected ||
               !session.tls_error.empty();
      })) {
    return Errorf(StatusCode::kDeadlineExceeded,
                  "no CONNACK from %s within %d s", o.broker.c_str(),
                  o.timeout_s);
  }
  if (!session.connack && !session.tls_error.empty()) {
    return tls_failure(session.tls_error);
  }
  if (!session.connack || session.connack_reason != 0) {
    const std::string given = credentials();
    if (session.connack) {
      // An MQTT v5 reason: 0x87 not authorized, 0x86 bad user name or
      // password, ...
      return Errorf(StatusCode::kPermissionDenied,
                    "broker %s refused this client: %s (CONNACK reason "
                    "0x%02x); %s",
                    o.broker.c_str(),
                    mosquitto_reason_string(session.connack_reason),
                    session.connack_reason, given.c_str());
    }
    // Closed before any CONNACK: with TLS 1.3 a broker that requires a
    // client certificate says so only after the handshake, by closing.
    return Errorf(StatusCode::kPermissionDenied,
                  "broker %s closed the connection before accepting this "
                  "client (%s): it requires a client certificate, or its "
                  "listener refuses this client; %s; the broker's log says "
                  "which",
                  o.broker.c_str(), mosquitto_strerror(session.disconnect_rc),
                  given.c_str());
  }
  lock.unlock();
  int mid = 0;
  rc = mosquitto_publish_v5(
      mosq.get(), &mid, topic.c_str(), static_cast<int>(payload.size()),
      payload.empty() ? nullptr : payload.data(), 1, true, nullptr);
  if (rc != MOSQ_ERR_SUCCESS) {
    return MosqError(rc, ("cannot publish to " + topic + " on").c_str(),
                     o.broker);
  }
  lock.lock();
  if (!session.cv.wait_until(lock, deadline, [&] {
        return session.acked || session.disconnected;
      })) {
    return Errorf(StatusCode::kDeadlineExceeded,
                  "no PUBACK from %s for %s within %d s", o.broker.c_str(),
                  topic.c_str(), o.timeout_s);
  }
  if (!session.acked) {
    return Errorf(StatusCode::kUnavailable,
                  "%s closed the connection before acknowledging %s: %s",
                  o.broker.c_str(), topic.c_str(),
                  mosquitto_reason_string(session.disconnect_rc));
  }
  if (session.ack_reason >= 0x80) {
    return Errorf(StatusCode::kPermissionDenied,
                  "broker %s refused the publish to %s: %s (reason code %d)",
                  o.broker.c_str(), topic.c_str(),
                  mosquitto_reason_string(session.ack_reason),
                  session.ack_reason);
  }
  return Status::Ok();
}

int RunPublish(const PublishOptions& o) {
  const int targets =
      !o.device.empty() + !o.group.empty() + o.root + o.timestamp;
  if (targets != 1) {
    return FleetFail(InvalidArgument(
        "give exactly one of --device ID, --group G, --root, --timestamp "
        "(got %d)",
        targets));
  }
  if (o.clear != o.file.empty()) {
    return FleetFail(InvalidArgument(
        o.clear ? "--clear publishes an empty retained message: give no FILE"
                : "give the signed FILE to publish (or --clear)"));
  }
  std::string payload;
  std::string fleet = o.fleet;
  std::string topic;
  const char* role = nullptr;
  if (!o.clear) {
    const char* expected =
        o.root ? "root" : (o.timestamp ? "timestamp" : "release");
    Result<ota::SignedEnvelope> env =
        ReadEnvelopeFile(o.file, expected, &payload);
    if (!env.ok()) return FleetFail(env.status());
    if (o.root && fleet.empty()) {
      ota::Root root;
      if (root.ParseFromString(env->payload())) fleet = root.fleet();
    }
    if (!o.device.empty() || !o.group.empty()) {
      ota::Release r;
      if (!r.ParseFromString(env->payload())) {
        return FleetFail(
            InvalidArgument("%s: payload is not a Release", o.file.c_str()));
      }
      const auto& list =
          o.device.empty() ? r.target_groups() : r.target_devices();
      const std::string& want = o.device.empty() ? o.group : o.device;
      if (std::find(list.begin(), list.end(), want) == list.end()) {
        return FleetFail(InvalidArgument(
            "%s does not target %s '%s' (it targets %d device(s) and %d "
            "group(s)); devices there would refuse it as "
            "not_for_this_device",
            o.file.c_str(), o.device.empty() ? "group" : "device", want.c_str(),
            r.target_devices_size(), r.target_groups_size()));
      }
    }
  }
  Status s = Topic(o, fleet, &topic, &role);
  if (!s.ok()) return FleetFail(s);
  s = Publish(o, topic, payload);
  if (!s.ok()) return FleetFail(s);
  if (o.json) {
    PrintJson(Json{{"topic", topic},
                   {"bytes", payload.size()},
                   {"retained", true},
                   {"qos", 1},
                   {"cleared", o.clear}});
  } else if (o.clear) {
    std::printf("cleared      %s (retained message removed)\n", topic.c_str());
  } else {
    std::printf("published    %s\n", o.file.c_str());
    std::printf("topic        %s (%zu bytes, retained, QoS 1, acknowledged)\n",
                topic.c_str(), payload.size());
  }
  return 0;
}

}  // namespace

Status PublishRetained(const BrokerTarget& target, const std::string& topic,
                       const std::string& payload) {
  PublishOptions o;
  o.broker = target.broker;
  o.cafile = target.cafile;
  o.cert = target.cert;
  o.key = target.key;
  o.username = target.username;
  o.password_file = target.password_file;
  o.client_id = target.client_id;
  o.timeout_s = target.timeout_s;
  return Publish(o, topic, payload);
}

void AddPublishCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<PublishOptions>();
  CLI::App* cmd = app.add_subcommand(
      "publish",
      "Publish a signed release, root or timestamp to the fleet broker "
      "(retained, QoS 1, MQTT v5 over TLS)");
  cmd->add_option("--broker", o->broker, "Broker HOST[:PORT] (port 8883)")
      ->required();
  cmd->add_option("--cafile", o->cafile, "CA certificate of the broker (PEM)")
      ->required();
  cmd->add_option("--cert", o->cert, "Client certificate (PEM)");
  cmd->add_option("--key", o->key, "Client certificate's private key (PEM)");
  cmd->add_option("--username", o->username, "MQTT user name");
  cmd->add_option("--password-file", o->password_file,
                  "File holding the MQTT password (one line)");
  cmd->add_option("--prefix", o->prefix,
                  "Topic prefix (default: ternd/v1/FLEET)");
  cmd->add_option("--fleet", o->fleet,
                  "Fleet name for the default prefix (with --root: the "
                  "root's fleet)");
  cmd->add_option("--device", o->device,
                  "Publish a release to this device's release topic");
  cmd->add_option("--group", o->group,
                  "Publish a release to this group's release topic");
  cmd->add_flag("--root", o->root, "Publish a root to the trust/root topic");
  cmd->add_flag("--timestamp", o->timestamp,
                "Publish a timestamp to the trust/timestamp topic");
  cmd->add_flag("--clear", o->clear,
                "Remove the retained message from the topic instead");
  cmd->add_option("--client-id", o->client_id,
                  "MQTT client id (default: ternctl-publish-PID)");
  cmd->add_option("--timeout", o->timeout_s, "Seconds to wait for the broker")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  cmd->add_option("FILE", o->file, "Signed file to publish");
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->callback([o, exit_code] { *exit_code = RunPublish(*o); });
}

}  // namespace ternd::ternctl
