#include "daemon/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace ternd::daemon {
namespace {

using ::testing::HasSubstr;

std::string ErrorOf(const std::string& text) {
  Result<Config> c = ParseConfig(text, "test.toml");
  EXPECT_FALSE(c.ok()) << text;
  return c.ok() ? "" : c.status().message();
}

void ExpectError(const std::string& text, const std::string& needle) {
  EXPECT_THAT(ErrorOf(text), HasSubstr(needle)) << text;
}

TEST(ConfigTest, EmptyFileGivesTheDefaults) {
  Result<Config> c = ParseConfig("", "test.toml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->origin, "test.toml");
  EXPECT_EQ(c->socket_path, kDefaultSocketPath);
  EXPECT_EQ(c->model, kDefaultModelPath);
  EXPECT_EQ(c->socket_mode, 0660u);
  EXPECT_EQ(c->max_frame_bytes, 4u << 20);
  EXPECT_EQ(c->swap, "hot");
  EXPECT_EQ(c->workers, 0u);
  EXPECT_GE(c->ResolvedWorkers(), 1);
}

TEST(ConfigTest, ParsesEveryKey) {
  Result<Config> c = ParseConfig(R"(
[daemon]
log_level = "debug"
state_directory = "/var/lib/ternd"

[server]
socket = "/run/ternd/ternd.sock"
socket_mode = "0600"
socket_group = "ternd"
max_frame_bytes = 65536
max_connections = 10
max_inflight_per_connection = 3
max_queue_depth = 7
max_output_buffer_bytes = 8192
default_deadline_ms = 250
drain_timeout_ms = 1500
allow_uids = [0, 1000]
allow_gids = [998]
log_requests = true

[runtime]
model = "/usr/share/ternd/models/digits.tern"
arena_mb = 128
workers = 3
kernel = "ref"
swap = "cold"
)",
                                 "test.toml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->log_level, LogLevel::kDebug);
  EXPECT_EQ(c->state_directory, "/var/lib/ternd");
  EXPECT_EQ(c->socket_path, "/run/ternd/ternd.sock");
  EXPECT_EQ(c->socket_mode, 0600u);
  EXPECT_EQ(c->socket_group, "ternd");
  EXPECT_EQ(c->max_frame_bytes, 65536u);
  EXPECT_EQ(c->max_connections, 10u);
  EXPECT_EQ(c->max_inflight_per_connection, 3u);
  EXPECT_EQ(c->max_queue_depth, 7u);
  EXPECT_EQ(c->max_output_buffer_bytes, 8192u);
  EXPECT_EQ(c->default_deadline_ms, 250u);
  EXPECT_EQ(c->drain_timeout_ms, 1500u);
  EXPECT_EQ(c->allow_uids, (std::vector<uint32_t>{0, 1000}));
  EXPECT_EQ(c->allow_gids, (std::vector<uint32_t>{998}));
  EXPECT_TRUE(c->log_requests);
  EXPECT_EQ(c->model, "/usr/share/ternd/models/digits.tern");
  EXPECT_EQ(c->arena_mb, 128u);
  EXPECT_EQ(c->workers, 3u);
  EXPECT_EQ(c->ResolvedWorkers(), 3);
  EXPECT_EQ(c->kernel, "ref");
  EXPECT_EQ(c->swap, "cold");
}

TEST(ConfigTest, UnknownKeyIsAnErrorNamingKeyAndLine) {
  const std::string e = ErrorOf("[server]\nmax_frme_bytes = 10\n");
  EXPECT_THAT(e, HasSubstr("test.toml:2"));
  EXPECT_THAT(e, HasSubstr("server.max_frme_bytes"));
}

TEST(ConfigTest, UnknownTableIsAnError) {
  EXPECT_THAT(ErrorOf("[sever]\nsocket = \"x\"\n"), HasSubstr("[sever]"));
  EXPECT_THAT(ErrorOf("socket = \"x\"\n"),
              HasSubstr("'socket' must be a table"));
}

TEST(ConfigTest, OutOfRangeValueNamesKeyValueAndRange) {
  const std::string e = ErrorOf("[server]\nmax_frame_bytes = 12\n");
  EXPECT_THAT(e, HasSubstr("server.max_frame_bytes = 12"));
  EXPECT_THAT(e, HasSubstr("1024.."));
  EXPECT_THAT(ErrorOf("[runtime]\nworkers = 300\n"),
              HasSubstr("runtime.workers = 300"));
  EXPECT_THAT(ErrorOf("[server]\nmax_connections = -1\n"),
              HasSubstr("server.max_connections = -1"));
}

TEST(ConfigTest, WrongTypesAreErrors) {
  EXPECT_THAT(ErrorOf("[server]\nmax_connections = \"10\"\n"),
              HasSubstr("server.max_connections must be an integer"));
  EXPECT_THAT(ErrorOf("[server]\nsocket = 5\n"),
              HasSubstr("server.socket must be a string"));
  EXPECT_THAT(ErrorOf("[server]\nlog_requests = 1\n"),
              HasSubstr("server.log_requests must be true or false"));
  EXPECT_THAT(ErrorOf("[server]\nallow_uids = [\"root\"]\n"),
              HasSubstr("server.allow_uids"));
  EXPECT_THAT(ErrorOf("[server]\nmax_connections = 1.5\n"),
              HasSubstr("server.max_connections must be an integer"));
}

TEST(ConfigTest, EnumeratedValuesAreChecked) {
  EXPECT_THAT(ErrorOf("[runtime]\nswap = \"warm\"\n"),
              HasSubstr("runtime.swap = \"warm\""));
  EXPECT_THAT(ErrorOf("[daemon]\nlog_level = \"loud\"\n"),
              HasSubstr("daemon.log_level = \"loud\""));
  EXPECT_THAT(ErrorOf("[server]\nsocket_mode = \"0999\"\n"),
              HasSubstr("server.socket_mode = \"0999\""));
  EXPECT_THAT(ErrorOf("[server]\nsocket_mode = \"1777\"\n"),
              HasSubstr("server.socket_mode"));
  EXPECT_THAT(ErrorOf("[runtime]\nmodel = \"\"\n"),
              HasSubstr("runtime.model is an empty path"));
  EXPECT_THAT(ErrorOf(std::string("[server]\nsocket = \"") +
                      std::string(120, 'a') + "\"\n"),
              HasSubstr("107"));
}

TEST(ConfigTest, SyntaxErrorNamesLineAndColumn) {
  const std::string e = ErrorOf("[server]\nsocket = \n");
  EXPECT_THAT(e, HasSubstr("test.toml:2:"));
}

TEST(ConfigTest, MissingExplicitFileIsAnError) {
  Result<Config> c = ResolveConfig("/nonexistent/ternd.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("/nonexistent/ternd.toml"));
}

TEST(ConfigTest, ShippedExampleConfigIsValid) {
  Result<Config> c = LoadConfig(EXAMPLE_CONFIG_PATH);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->socket_path, "/run/ternd/ternd.sock");
  EXPECT_EQ(c->socket_group, "ternd");
  EXPECT_EQ(c->state_directory, "/var/lib/ternd");
}

TEST(ConfigTest, RestartOnlyChangesAreListed) {
  Config a;
  Config b = a;
  b.max_frame_bytes = 1 << 16;  // live
  b.model = "other.tern";       // live
  EXPECT_TRUE(RestartOnlyChanges(a, b).empty());
  b.workers = 7;
  b.socket_path = "/tmp/x.sock";
  const std::vector<std::string> changes = RestartOnlyChanges(a, b);
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_THAT(changes[0], HasSubstr("server.socket"));
  EXPECT_THAT(changes[1], HasSubstr("runtime.workers (0 -> 7)"));
}

TEST(ConfigTest, HttpKeys) {
  Result<Config> c = ParseConfig(R"(
[http]
socket = "/run/ternd/http.sock"
port = 8080
address = "::1"
max_connections = 8
request_timeout_ms = 2000
token_file = "/etc/ternd/http.token"
)",
                                 "test.toml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->http_socket, "/run/ternd/http.sock");
  EXPECT_EQ(c->http_port, 8080u);
  EXPECT_EQ(c->http_address, "::1");
  EXPECT_EQ(c->http_max_connections, 8u);
  EXPECT_EQ(c->http_request_timeout_ms, 2000u);
  // Off and loopback by default.
  Config d;
  EXPECT_EQ(d.http_port, 0u);
  EXPECT_TRUE(d.http_socket.empty());
  EXPECT_EQ(d.http_address, "127.0.0.1");
  EXPECT_THAT(ErrorOf("[http]\naddress = \"localhost\"\n"),
              HasSubstr("http.address = \"localhost\" is not an IPv4 or IPv6"));
  EXPECT_THAT(ErrorOf("[http]\nport = 70000\n"),
              HasSubstr("http.port = 70000 is outside 0..65535"));
  EXPECT_THAT(ErrorOf("[http]\nlisten = 1\n"), HasSubstr("'http.listen'"));
}

TEST(ConfigTest, ParsesDeviceMqttOtaAndTelemetry) {
  Result<Config> c = ParseConfig(R"(
[device]
id = "robot-17"
fleet = "warehouse"
groups = ["arm64", "canary"]
[mqtt]
broker = "10.0.0.5:8884"
ca_file = "/etc/ternd/fleet-ca.pem"
cert_file = "/etc/ternd/device.pem"
key_file = "/etc/ternd/device.key"
username = "robot-17"
password_file = "/etc/ternd/mqtt.secret"
keepalive_s = 20
reconnect_min_ms = 100
reconnect_max_ms = 30000
max_inflight = 4
[ota]
root_file = "/etc/ternd/keys/root.pb"
cache_mb = 128
probation_s = 60
probation_crashes = 3
rate_limit_kbps = 500
[telemetry]
interval_s = 30
outbox_max_mb = 4
textfile = "/var/lib/node_exporter/ternd.prom"
)",
                                 "test.toml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(ResolvedDeviceId(*c), "robot-17");
  EXPECT_EQ(ResolvedTopicPrefix(*c), "ternd/v1/warehouse");
  EXPECT_THAT(c->device_groups, ::testing::ElementsAre("arm64", "canary"));
  std::string host;
  int port = 0;
  ASSERT_TRUE(SplitBroker(*c, &host, &port));
  EXPECT_EQ(host, "10.0.0.5");
  EXPECT_EQ(port, 8884);
  EXPECT_EQ(c->mqtt_max_inflight, 4u);
  EXPECT_EQ(c->mqtt_reconnect_min_ms, 100u);
  EXPECT_EQ(c->ota_cache_mb, 128u);
  EXPECT_EQ(c->ota_probation_crashes, 3u);
  EXPECT_EQ(c->ota_rate_limit_kbps, 500u);
  EXPECT_EQ(c->telemetry_interval_s, 30u);
  EXPECT_EQ(c->telemetry_textfile, "/var/lib/node_exporter/ternd.prom");
}

TEST(ConfigTest, BrokerPortDefaultsByTls) {
  Result<Config> c = ParseConfig("[mqtt]\nbroker = \"fleet.example\"\n", "t");
  ASSERT_TRUE(c.ok()) << c.status().message();
  std::string host;
  int port = 0;
  ASSERT_TRUE(SplitBroker(*c, &host, &port));
  EXPECT_EQ(port, 8883);
  c = ParseConfig("[mqtt]\nbroker = \"fleet.example\"\ntls = false\n", "t");
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(SplitBroker(*c, &host, &port));
  EXPECT_EQ(port, 1883);
}

TEST(ConfigTest, NetworkSectionErrorsNameTheKey) {
  ExpectError("[mqtt]\nbroker = \"host:99999\"\n",
              "mqtt.broker = \"host:99999\" is not HOST or HOST:PORT");
  ExpectError("[mqtt]\npassword = \"hunter2\"\n",
              "mqtt.password is not accepted");
  ExpectError("[mqtt]\ncert_file = \"/a.pem\"\n",
              "mqtt.cert_file and mqtt.key_file go together");
  ExpectError("[mqtt]\nreconnect_min_ms = 5000\nreconnect_max_ms = 100\n",
              "mqtt.reconnect_max_ms = 100 is below mqtt.reconnect_min_ms");
  ExpectError("[mqtt]\ntopic_prefix = \"fleet/#\"\n",
              "mqtt.topic_prefix = \"fleet/#\" must not contain");
  ExpectError("[device]\nid = \"robot/17\"\n",
              "device.id = \"robot/17\" may hold only letters");
  ExpectError("[device]\ngroups = [\"ok\", \"\"]\n",
              "device.groups[] must be 1..64 characters");
  ExpectError("[ota]\nprobation_crashes = 0\n",
              "ota.probation_crashes = 0 is outside 1..100");
  ExpectError("[telemetry]\ninterval_s = 0\n",
              "telemetry.interval_s = 0 is outside 1..86400");
  ExpectError("[ota]\nurl = \"x\"\n", "unknown key 'ota.url'");
}

TEST(ConfigTest, DerivedDeviceIdIsStableAndHidesTheMachineId) {
  Config c;
  const std::string id = ResolvedDeviceId(c);
  EXPECT_EQ(id, ResolvedDeviceId(c));
  EXPECT_FALSE(id.empty());
  const std::string machine_id = []() {
    FILE* f = std::fopen("/etc/machine-id", "r");
    if (!f) return std::string();
    char buf[64] = {};
    const size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
    std::fclose(f);
    return std::string(buf, n);
  }();
  if (!machine_id.empty()) {
    EXPECT_THAT(id, ::testing::StartsWith("ternd-"));
    EXPECT_EQ(id.find(machine_id.substr(0, 16)), std::string::npos);
  }
}

TEST(ConfigTest, ReloadKeepsRestartOnlyKeys) {
  Config running;
  running.mqtt_broker = "a:1";
  running.workers = 2;
  Config next;
  next.mqtt_broker = "b:2";
  next.workers = 4;
  next.max_frame_bytes = 4096;
  next.model = "new.tern";
  KeepRestartOnly(running, &next);
  EXPECT_EQ(next.mqtt_broker, "a:1");
  EXPECT_EQ(next.workers, 2u);
  EXPECT_EQ(next.max_frame_bytes, 4096u);
  EXPECT_EQ(next.model, "new.tern");
  Config changed = running;
  changed.ota_probation_s = 1;
  EXPECT_THAT(RestartOnlyChanges(running, changed),
              ::testing::ElementsAre(HasSubstr("ota.probation_s (600 -> 1)")));
}

}  // namespace
}  // namespace ternd::daemon
