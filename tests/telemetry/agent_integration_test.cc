// The telemetry agent end to end, with a real mosquitto (TLS, test CA) and
// the agent running in a separate process (telemetry_host) that the tests
// stop, restart and SIGKILL. The fleet side is a persistent-session
// subscriber, so nothing is missed across broker restarts.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "telemetry/agent.h"
#include "telemetry/batch.h"
#include "telemetry/telemetry.pb.h"
#include "tests/support/mosquitto_broker.h"
#include "tests/support/mqtt_probe.h"
#include "tests/telemetry/fleet_subscriber.h"

namespace ternd::telemetry {
namespace {

using mqtt_testing::MosquittoBroker;
using mqtt_testing::MosquittoBrokerOptions;
using mqtt_testing::MqttTestDir;
using mqtt_testing::ReceivedMessage;

constexpr const char* kDevice = "dev1";

// Polls `cond` every 20 ms until it holds or `timeout_ms` passes.
bool Eventually(const std::function<bool()>& cond, int timeout_ms = 30000) {
  const auto end =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

std::string ReadText(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The agent in a child process.
class HostProcess {
 public:
  HostProcess(const std::vector<std::string>& args, const std::string& log)
      : log_(log) {
    pid_ = fork();
    if (pid_ == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 2);
      const int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      std::vector<char*> argv;
      std::string bin = TELEMETRY_HOST_PATH;
      argv.push_back(bin.data());
      std::vector<std::string> copy = args;
      for (std::string& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
  }
  ~HostProcess() { Kill(); }
  void Kill() { Signal(SIGKILL); }
  void Term() { Signal(SIGTERM); }
  std::string Log() const { return ReadText(log_); }

 private:
  void Signal(int sig) {
    if (pid_ <= 0) return;
    kill(pid_, sig);
    int status;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  std::string log_;
  pid_t pid_ = -1;
};

struct OutboxView {
  std::vector<std::pair<uint64_t, uint64_t>> rows;  // (epoch, sequence)
  uint64_t dropped_total = 0;
  bool ok = false;
};

// Reads the host's outbox from this process (a second SQLite connection).
OutboxView ReadOutbox(const std::string& path) {
  OutboxView v;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) !=
      SQLITE_OK) {
    sqlite3_close(db);
    return v;
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt* q = nullptr;
  if (sqlite3_prepare_v2(db,
                         "SELECT boot_epoch, sequence FROM outbox ORDER BY id",
                         -1, &q, nullptr) == SQLITE_OK) {
    while (sqlite3_step(q) == SQLITE_ROW) {
      v.rows.emplace_back(sqlite3_column_int64(q, 0),
                          sqlite3_column_int64(q, 1));
    }
    v.ok = true;
  }
  sqlite3_finalize(q);
  if (sqlite3_prepare_v2(db,
                         "SELECT value FROM meta WHERE key = 'dropped_total'",
                         -1, &q, nullptr) == SQLITE_OK &&
      sqlite3_step(q) == SQLITE_ROW) {
    v.dropped_total = sqlite3_column_int64(q, 0);
  }
  sqlite3_finalize(q);
  sqlite3_close(db);
  return v;
}

class TelemetryIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Status s = mqtt_testing::MakeTestCertificates(certs_.path(), kDevice);
    ASSERT_TRUE(s.ok()) << s.message();
    state_dir_ = certs_.File("state");
    ASSERT_EQ(mkdir(state_dir_.c_str(), 0700), 0);
  }

  MosquittoBrokerOptions BrokerOptions() {
    MosquittoBrokerOptions o;
    o.cert_dir = certs_.path();
    o.persistence = true;
    return o;
  }

  std::unique_ptr<HostProcess> StartHost(const MosquittoBroker& broker,
                                         std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {
        "--port",      std::to_string(broker.port()),
        "--ca",        certs_.File("ca.pem"),
        "--state-dir", state_dir_,
        "--device",    kDevice,
        "--prefix",    prefix_,
        "--textfile",  textfile()};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<HostProcess>(args, certs_.File("host.log"));
  }

  std::unique_ptr<testing::FleetSubscriber> Subscribe(
      const MosquittoBroker& broker, const std::string& filter) {
    auto s = testing::FleetSubscriber::Start(
        broker.port(), certs_.File("ca.pem"), "fleet-test", filter);
    EXPECT_TRUE(s.ok()) << s.status().message() << "\n" << broker.Log();
    return s.ok() ? std::move(*s) : nullptr;
  }

  mqtt_testing::MqttProbeOptions ProbeOptions(const MosquittoBroker& broker) {
    mqtt_testing::MqttProbeOptions o;
    o.port = broker.port();
    o.ca_file = certs_.File("ca.pem");
    return o;
  }

  std::string topic(const std::string& leaf) const {
    return prefix_ + "/devices/" + kDevice + "/" + leaf;
  }
  std::string outbox() const { return state_dir_ + "/telemetry.db"; }
  std::string textfile() const { return certs_.File("ternd.prom"); }

  // Decoded telemetry batches received so far, in arrival order.
  std::vector<TelemetryBatch> Batches(
      const std::vector<ReceivedMessage>& messages) {
    std::vector<TelemetryBatch> out;
    BatchCodec codec;
    for (const ReceivedMessage& m : messages) {
      if (m.topic != topic("telemetry")) continue;
      auto b = codec.Decode(m.payload);
      EXPECT_TRUE(b.ok()) << b.status().message();
      if (b.ok()) out.push_back(std::move(*b));
    }
    return out;
  }
  std::vector<Presence> Presences(
      const std::vector<ReceivedMessage>& messages) {
    std::vector<Presence> out;
    for (const ReceivedMessage& m : messages) {
      if (m.topic != topic("presence") || m.payload.empty()) continue;
      Presence p;
      EXPECT_TRUE(p.ParseFromString(m.payload));
      out.push_back(p);
    }
    return out;
  }
  // Distinct (epoch, sequence) pairs received.
  std::set<std::pair<uint64_t, uint64_t>> Received(
      const testing::FleetSubscriber& sub) {
    std::set<std::pair<uint64_t, uint64_t>> out;
    for (const TelemetryBatch& b : Batches(sub.messages())) {
      out.emplace(b.boot_epoch(), b.sequence());
    }
    return out;
  }

  MqttTestDir certs_;
  std::string state_dir_;
  std::string prefix_ = "ternd/v1/it";
};

const Metric* Find(const TelemetryBatch& b, const std::string& name) {
  for (const Metric& m : b.metrics()) {
    if (m.name() == name) return &m;
  }
  return nullptr;
}

TEST_F(TelemetryIntegrationTest, BatchesArriveDecodedInOrderWithPresence) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto sub = Subscribe(broker, prefix_ + "/#");
  ASSERT_NE(sub, nullptr);
  auto host = StartHost(broker);
  ASSERT_TRUE(sub->WaitFor([&](const std::vector<ReceivedMessage>& m) {
    return Batches(m).size() >= 5;
  })) << host->Log();
  const std::vector<TelemetryBatch> batches = Batches(sub->messages());
  double last_requests = -1;
  for (size_t i = 0; i < batches.size(); ++i) {
    const TelemetryBatch& b = batches[i];
    EXPECT_EQ(b.device_id(), kDevice);
    EXPECT_EQ(b.boot_epoch(), 1u);
    EXPECT_EQ(b.sequence(), i + 1) << "in order, none missing";
    EXPECT_LE(b.start_unix_ms(), b.end_unix_ms());
    const Metric* req = Find(b, "ternd_requests_total");
    ASSERT_NE(req, nullptr);
    EXPECT_EQ(req->kind(), Metric::COUNTER);
    EXPECT_GE(req->value(), last_requests);
    last_requests = req->value();
    const Metric* lat = Find(b, "ternd_request_compute_seconds");
    ASSERT_NE(lat, nullptr);
    EXPECT_EQ(lat->histogram().count(), uint64_t(req->value()));
    EXPECT_NE(Find(b, "ternd_system_memory_total_bytes"), nullptr);
    EXPECT_NE(Find(b, "ternd_mqtt_connected"), nullptr);
  }
  EXPECT_GT(last_requests, 0);
  const std::vector<Presence> presence = Presences(sub->messages());
  ASSERT_FALSE(presence.empty());
  EXPECT_EQ(presence[0].state(), Presence::ONLINE);
  EXPECT_EQ(presence[0].device_id(), kDevice);
  EXPECT_EQ(presence[0].boot_epoch(), 1u);
  EXPECT_EQ(presence[0].session(), 1u);
  EXPECT_EQ(presence[0].model_name(), "digits");
  EXPECT_EQ(presence[0].groups(0), "test-group");
  // The textfile is there too, with the same counters.
  EXPECT_NE(ReadText(textfile()).find("# TYPE ternd_requests_total counter"),
            std::string::npos);
}

TEST_F(TelemetryIntegrationTest, BrokerOutageLosesNothing) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto sub = Subscribe(broker, prefix_ + "/#");
  ASSERT_NE(sub, nullptr);
  auto host = StartHost(broker);
  ASSERT_TRUE(sub->WaitFor([&](const std::vector<ReceivedMessage>& m) {
    return Batches(m).size() >= 2;
  })) << host->Log();
  ASSERT_TRUE(broker.Stop().ok());
  // Several batches pile up in the outbox while the broker is away.
  ASSERT_TRUE(Eventually([&] { return ReadOutbox(outbox()).rows.size() >= 4; }))
      << host->Log();
  const OutboxView queued = ReadOutbox(outbox());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  const uint64_t want = queued.rows.back().second + 2;
  ASSERT_TRUE(sub->WaitFor(
      [&](const std::vector<ReceivedMessage>& m) {
        for (const TelemetryBatch& b : Batches(m)) {
          if (b.sequence() >= want) return true;
        }
        return false;
      },
      60000))
      << host->Log();
  const auto got = Received(*sub);
  uint64_t max_seq = 0;
  for (const auto& [epoch, seq] : got) {
    EXPECT_EQ(epoch, 1u);
    max_seq = std::max(max_seq, seq);
  }
  EXPECT_EQ(got.size(), max_seq)
      << "every sequence 1.." << max_seq << " exactly once after dedup";
  for (const auto& row : queued.rows) {
    EXPECT_TRUE(got.count(row)) << "queued batch " << row.second << " lost";
  }
  // A new birth for the second connection, with session 2.
  ASSERT_TRUE(sub->WaitFor([&](const std::vector<ReceivedMessage>& m) {
    for (const Presence& p : Presences(m)) {
      if (p.state() == Presence::ONLINE && p.session() == 2) return true;
    }
    return false;
  })) << host->Log();
}

TEST_F(TelemetryIntegrationTest, FullOutboxDropsTheOldestAndReportsHowMany) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto sub = Subscribe(broker, prefix_ + "/#");
  ASSERT_NE(sub, nullptr);
  ASSERT_TRUE(broker.Stop().ok());
  // 12 batches, room for about 3.
  auto host =
      StartHost(broker, {"--interval-ms", "3600000", "--flush-every-ms", "100",
                         "--flush-count", "12", "--max-bytes", "3000"});
  ASSERT_TRUE(Eventually([&] {
    const OutboxView v = ReadOutbox(outbox());
    return !v.rows.empty() && v.rows.back().second == 12;
  })) << host->Log();
  const OutboxView full = ReadOutbox(outbox());
  ASSERT_GT(full.dropped_total, 0u);
  EXPECT_EQ(full.rows.size() + full.dropped_total, 12u);
  // The newest were kept.
  EXPECT_EQ(full.rows.front().second, full.dropped_total + 1);
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  ASSERT_TRUE(Eventually([&] { return ReadOutbox(outbox()).rows.empty(); }))
      << host->Log();
  // One more batch, made now, reports the drops.
  auto probe = mqtt_testing::MqttProbe::Connect(ProbeOptions(broker));
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  ASSERT_TRUE((*probe)->Publish(topic("cmd"), "flush", 1, false).ok());
  ASSERT_TRUE(sub->WaitFor([&](const std::vector<ReceivedMessage>& m) {
    for (const TelemetryBatch& b : Batches(m)) {
      if (b.sequence() == 13) return true;
    }
    return false;
  })) << host->Log();
  const auto got = Received(*sub);
  std::set<uint64_t> missing;
  for (uint64_t s = 1; s <= 13; ++s) {
    if (!got.count({1, s})) missing.insert(s);
  }
  EXPECT_EQ(missing.size(), full.dropped_total);
  EXPECT_EQ(*missing.rbegin(), full.dropped_total) << "the oldest went";
  for (const TelemetryBatch& b : Batches(sub->messages())) {
    if (b.sequence() == 13) {
      EXPECT_EQ(b.dropped_batches_total(), missing.size());
    }
  }
}

TEST_F(TelemetryIntegrationTest, KilledHostDeliversItsOutboxAfterRestart) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto sub = Subscribe(broker, prefix_ + "/#");
  ASSERT_NE(sub, nullptr);
  ASSERT_TRUE(broker.Stop().ok());
  auto host = StartHost(broker);
  ASSERT_TRUE(Eventually([&] { return ReadOutbox(outbox()).rows.size() >= 3; }))
      << host->Log();
  host->Kill();
  const OutboxView left = ReadOutbox(outbox());
  ASSERT_GE(left.rows.size(), 3u);
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  host = StartHost(broker);
  ASSERT_TRUE(sub->WaitFor([&](const std::vector<ReceivedMessage>& m) {
    std::set<std::pair<uint64_t, uint64_t>> got;
    bool epoch2 = false;
    for (const TelemetryBatch& b : Batches(m)) {
      got.emplace(b.boot_epoch(), b.sequence());
      epoch2 |= b.boot_epoch() == 2;
    }
    for (const auto& row : left.rows) {
      if (!got.count(row)) return false;
    }
    return epoch2;
  })) << host->Log();
  for (const auto& row : left.rows) EXPECT_EQ(row.first, 1u);
}

TEST_F(TelemetryIntegrationTest, RefusedPublishesStayQueuedAndAreReported) {
  MosquittoBrokerOptions o = BrokerOptions();
  // The device may keep its presence but not publish telemetry.
  o.acl = "topic readwrite " + topic("presence") + "\ntopic read " + prefix_ +
          "/#\n";
  MosquittoBroker broker(o);
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto host = StartHost(broker);
  ASSERT_TRUE(Eventually([&] {
    return host->Log().find("reason code 0x87") != std::string::npos;
  })) << host->Log();
  ASSERT_TRUE(Eventually([&] {
    const std::string prom = ReadText(textfile());
    return prom.find("\nternd_telemetry_publish_failures_total 0\n") ==
               std::string::npos &&
           prom.find("\nternd_telemetry_publish_failures_total ") !=
               std::string::npos &&
           prom.find("\nternd_telemetry_last_publish_failure_code 135\n") !=
               std::string::npos;
  })) << ReadText(textfile());
  ASSERT_TRUE(
      Eventually([&] { return ReadOutbox(outbox()).rows.size() >= 3; }));
  const OutboxView v = ReadOutbox(outbox());
  EXPECT_EQ(v.rows.front(), std::make_pair(uint64_t{1}, uint64_t{1}))
      << "nothing refused was deleted";
  EXPECT_EQ(v.dropped_total, 0u);
  EXPECT_NE(host->Log().find(topic("telemetry")), std::string::npos)
      << "the log names the topic";
}

TEST_F(TelemetryIntegrationTest, WillSaysOfflineWithTheSessionCounter) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto sub = Subscribe(broker, topic("presence"));
  ASSERT_NE(sub, nullptr);
  auto host = StartHost(broker);
  ASSERT_TRUE(sub->WaitFor([&](const std::vector<ReceivedMessage>& m) {
    return !Presences(m).empty();
  })) << host->Log();
  const Presence birth = Presences(sub->messages()).front();
  ASSERT_EQ(birth.state(), Presence::ONLINE);
  host->Kill();
  ASSERT_TRUE(sub->WaitFor([&](const std::vector<ReceivedMessage>& m) {
    return Presences(m).size() >= 2;
  })) << broker.Log();
  const Presence will = Presences(sub->messages()).back();
  EXPECT_EQ(will.state(), Presence::OFFLINE);
  EXPECT_EQ(will.session(), birth.session());
  EXPECT_EQ(will.boot_epoch(), birth.boot_epoch());
  EXPECT_EQ(will.device_id(), kDevice);
  // It is retained: a newcomer sees it.
  auto probe = mqtt_testing::MqttProbe::Connect(ProbeOptions(broker));
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  ASSERT_TRUE((*probe)->Subscribe(topic("presence")).ok());
  auto retained = (*probe)->WaitForMessage(topic("presence"));
  ASSERT_TRUE(retained.has_value());
  EXPECT_TRUE(retained->retained);
  Presence p;
  ASSERT_TRUE(p.ParseFromString(retained->payload));
  EXPECT_EQ(p.state(), Presence::OFFLINE);
}

TEST_F(TelemetryIntegrationTest, CleanShutdownPublishesOffline) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto sub = Subscribe(broker, topic("presence"));
  ASSERT_NE(sub, nullptr);
  auto host = StartHost(broker);
  ASSERT_TRUE(sub->WaitFor([&](const std::vector<ReceivedMessage>& m) {
    return !Presences(m).empty();
  })) << host->Log();
  host->Term();  // a clean DISCONNECT: the broker drops the will
  ASSERT_TRUE(sub->WaitFor([&](const std::vector<ReceivedMessage>& m) {
    return Presences(m).size() >= 2;
  })) << host->Log()
      << broker.Log();
  const std::vector<Presence> p = Presences(sub->messages());
  EXPECT_EQ(p.back().state(), Presence::OFFLINE);
  EXPECT_EQ(p.back().session(), p.front().session());
}

TEST_F(TelemetryIntegrationTest, RebirthAndFlushCommands) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto sub = Subscribe(broker, prefix_ + "/#");
  ASSERT_NE(sub, nullptr);
  auto host = StartHost(broker, {"--interval-ms", "3600000"});
  ASSERT_TRUE(sub->WaitFor([&](const std::vector<ReceivedMessage>& m) {
    return Presences(m).size() == 1;
  })) << host->Log();
  auto probe = mqtt_testing::MqttProbe::Connect(ProbeOptions(broker));
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  ASSERT_TRUE((*probe)->Publish(topic("cmd"), "rebirth", 1, false).ok());
  ASSERT_TRUE(sub->WaitFor([&](const std::vector<ReceivedMessage>& m) {
    return Presences(m).size() == 2;
  })) << host->Log();
  EXPECT_EQ(Presences(sub->messages())[1].state(), Presence::ONLINE);
  EXPECT_TRUE(Batches(sub->messages()).empty()) << "no batch before flush";
  DeviceCommand flush;
  flush.set_kind(DeviceCommand::FLUSH);
  ASSERT_TRUE((*probe)
                  ->Publish(topic("cmd"), flush.SerializeAsString(), 1, false)
                  .ok());
  ASSERT_TRUE(sub->WaitFor([&](const std::vector<ReceivedMessage>& m) {
    return Batches(m).size() == 1;
  })) << host->Log();
  EXPECT_EQ(Batches(sub->messages())[0].sequence(), 1u);
  // Garbage is ignored (and logged), the host keeps working.
  ASSERT_TRUE((*probe)->Publish(topic("cmd"), "reboot now", 1, false).ok());
  ASSERT_TRUE((*probe)->Publish(topic("cmd"), "flush", 1, false).ok());
  ASSERT_TRUE(sub->WaitFor([&](const std::vector<ReceivedMessage>& m) {
    return Batches(m).size() == 2;
  })) << host->Log();
  EXPECT_NE(host->Log().find("ignored"), std::string::npos);

  // A command over the cap is not even parsed: this one would be a valid
  // FLUSH (an unknown field pads it to one byte over 64 KiB).
  std::string big = flush.SerializeAsString();
  const size_t pad = TelemetryAgent::kMaxCommandBytes + 1 - big.size() - 4;
  big += '\x7a';  // field 15, length-delimited
  big += static_cast<char>(0x80 | (pad & 0x7f));
  big += static_cast<char>(0x80 | ((pad >> 7) & 0x7f));
  big += static_cast<char>(pad >> 14);
  big.append(pad, 'x');
  ASSERT_EQ(big.size(), TelemetryAgent::kMaxCommandBytes + 1);
  DeviceCommand parsed;
  ASSERT_TRUE(parsed.ParseFromString(big));
  ASSERT_EQ(parsed.kind(), DeviceCommand::FLUSH);
  ASSERT_TRUE((*probe)->Publish(topic("cmd"), big, 1, false).ok());
  // Commands are handled in order: once this rebirth is seen, the big one
  // was dealt with.
  ASSERT_TRUE((*probe)->Publish(topic("cmd"), "rebirth", 1, false).ok());
  ASSERT_TRUE(sub->WaitFor([&](const std::vector<ReceivedMessage>& m) {
    return Presences(m).size() == 3;
  })) << host->Log();
  EXPECT_EQ(Batches(sub->messages()).size(), 2u);
  EXPECT_NE(host->Log().find(topic("cmd") +
                             ": a 65537-byte command, more than the 65536 "
                             "bytes allowed for a command; ignored unread"),
            std::string::npos)
      << host->Log();
}

// `ternctl watch --json` as a child process; stdout lines collected by a
// thread.
class WatchProcess {
 public:
  explicit WatchProcess(const std::vector<std::string>& args) {
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 1);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> argv;
      std::string bin = TERNCTL_PATH;
      argv.push_back(bin.data());
      std::vector<std::string> copy = args;
      for (std::string& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
    close(fds[1]);
    reader_ = std::thread([this, fd = fds[0]] {
      std::string buf;
      char chunk[4096];
      ssize_t n;
      while ((n = read(fd, chunk, sizeof chunk)) > 0) {
        buf.append(chunk, size_t(n));
        size_t nl;
        while ((nl = buf.find('\n')) != std::string::npos) {
          std::lock_guard<std::mutex> lock(mu_);
          lines_.push_back(buf.substr(0, nl));
          buf.erase(0, nl + 1);
        }
      }
      close(fd);
    });
  }
  ~WatchProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status;
      waitpid(pid_, &status, 0);
    }
    if (reader_.joinable()) reader_.join();
  }
  std::vector<std::string> lines() const {
    std::lock_guard<std::mutex> lock(mu_);
    return lines_;
  }

 private:
  pid_t pid_ = -1;
  std::thread reader_;
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

// The sequences of the telemetry lines, in order.
std::vector<uint64_t> WatchedSequences(const std::vector<std::string>& lines) {
  std::vector<uint64_t> out;
  for (const std::string& l : lines) {
    if (l.find("\"type\":\"telemetry\"") == std::string::npos) continue;
    const size_t at = l.find("\"sequence\":");
    out.push_back(std::strtoull(l.c_str() + at + 11, nullptr, 10));
  }
  return out;
}

TEST_F(TelemetryIntegrationTest, WatchJsonShowsWhatWasSentDeduplicated) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto sub = Subscribe(broker, prefix_ + "/#");
  ASSERT_NE(sub, nullptr);
  auto host = StartHost(broker, {"--interval-ms", "300"});
  const std::string db = certs_.File("watch.db");
  WatchProcess watch({"watch", "--broker",
                      "127.0.0.1:" + std::to_string(broker.port()), "--cafile",
                      certs_.File("ca.pem"), "--prefix", prefix_, "--json",
                      "--db", db});
  // The retained birth, then live batches.
  ASSERT_TRUE(Eventually([&] {
    for (const std::string& l : watch.lines()) {
      if (l.find("\"type\":\"presence\"") != std::string::npos &&
          l.find("\"device\":\"dev1\"") != std::string::npos &&
          l.find("\"state\":\"online\"") != std::string::npos) {
        return true;
      }
    }
    return false;
  })) << host->Log();
  ASSERT_TRUE(Eventually([&] {
    return WatchedSequences(watch.lines()).size() >= 2;
  })) << host->Log();
  // Send every batch the fleet saw again, as a broker or device retry would.
  auto probe = mqtt_testing::MqttProbe::Connect(ProbeOptions(broker));
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  const std::vector<uint64_t> before = WatchedSequences(watch.lines());
  for (const ReceivedMessage& m : sub->messages()) {
    if (m.topic != topic("telemetry")) continue;
    ASSERT_TRUE((*probe)->Publish(m.topic, m.payload, 1, false).ok());
  }
  // A batch made after the duplicates went out shows they were processed.
  const uint64_t later = *std::max_element(before.begin(), before.end()) + 2;
  ASSERT_TRUE(Eventually([&] {
    for (uint64_t s : WatchedSequences(watch.lines())) {
      if (s >= later) return true;
    }
    return false;
  })) << host->Log();
  const std::vector<std::string> lines = watch.lines();
  const std::vector<uint64_t> seqs = WatchedSequences(lines);
  std::set<uint64_t> distinct(seqs.begin(), seqs.end());
  EXPECT_EQ(distinct.size(), seqs.size()) << "a batch was printed twice";
  // What it printed is what was sent.
  std::map<uint64_t, double> sent;
  for (const TelemetryBatch& b : Batches(sub->messages())) {
    sent[b.sequence()] = Find(b, "ternd_requests_total")->value();
  }
  int compared = 0;
  for (const std::string& l : lines) {
    if (l.find("\"type\":\"telemetry\"") == std::string::npos) continue;
    const uint64_t seq =
        std::strtoull(l.c_str() + l.find("\"sequence\":") + 11, nullptr, 10);
    if (!sent.count(seq)) continue;
    char want[128];
    std::snprintf(
        want, sizeof want,
        "\"ternd_requests_total{call=\\\"infer\\\",status=\\\"OK\\\"}\":%.10g",
        sent[seq]);
    EXPECT_NE(l.find(want), std::string::npos) << want << "\n" << l;
    EXPECT_NE(l.find("\"boot_epoch\":1,"), std::string::npos) << l;
    ++compared;
  }
  EXPECT_GE(compared, 2);
  // The database holds each batch once.
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr),
            SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(h,
                               "SELECT COUNT(*), COUNT(DISTINCT sequence) "
                               "FROM batches WHERE device = 'dev1'",
                               -1, &q, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(q), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int64(q, 0), sqlite3_column_int64(q, 1));
  EXPECT_GE(sqlite3_column_int64(q, 0), int64_t(distinct.size()));
  sqlite3_finalize(q);
  sqlite3_close(h);
}

// Runs `sql` on the watcher's database: the first row's integer columns.
std::vector<int64_t> QueryDb(const std::string& db, const char* sql) {
  std::vector<int64_t> row;
  sqlite3* h = nullptr;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) ==
      SQLITE_OK) {
    sqlite3_stmt* q = nullptr;
    if (sqlite3_prepare_v2(h, sql, -1, &q, nullptr) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW) {
      for (int i = 0; i < sqlite3_column_count(q); ++i) {
        row.push_back(sqlite3_column_int64(q, i));
      }
    }
    sqlite3_finalize(q);
  }
  sqlite3_close(h);
  return row;
}

// With --db the watcher keeps a persistent session: the batches a device
// sends while the watcher is away (the broker restarted and the device was
// back first) wait on the broker and reach the database; none is missing.
TEST_F(TelemetryIntegrationTest, WatchWithDbMissesNothingWhileItIsAway) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  auto host = StartHost(broker, {"--interval-ms", "200"});
  const std::string db = certs_.File("watch.db");
  const std::vector<std::string> args = {
      "watch",
      "--broker",
      "127.0.0.1:" + std::to_string(broker.port()),
      "--cafile",
      certs_.File("ca.pem"),
      "--prefix",
      prefix_,
      "--json",
      "--db",
      db};
  uint64_t seen = 0;
  {
    WatchProcess watch(args);
    ASSERT_TRUE(Eventually([&] {
      return WatchedSequences(watch.lines()).size() >= 2;
    })) << host->Log();
    ASSERT_TRUE(broker.Stop().ok()) << broker.Log();
    for (uint64_t s : WatchedSequences(watch.lines())) seen = std::max(seen, s);
  }  // the watcher stops while the broker is down
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  // The device is back first and sends what it made meanwhile, then more.
  auto probe = mqtt_testing::MqttProbe::Connect(ProbeOptions(broker));
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  ASSERT_TRUE((*probe)->Subscribe(topic("telemetry")).ok());
  ASSERT_TRUE(Eventually([&] {
    for (const TelemetryBatch& b : Batches((*probe)->messages())) {
      if (b.sequence() >= seen + 5) return true;
    }
    return false;
  })) << host->Log();
  WatchProcess again(args);
  const std::string count_sql =
      "SELECT MIN(sequence), MAX(sequence), COUNT(*) FROM batches WHERE "
      "device = 'dev1' AND boot_epoch = 1";
  ASSERT_TRUE(Eventually([&] {
    std::vector<int64_t> r = QueryDb(db, count_sql.c_str());
    return r.size() == 3 && r[1] >= int64_t(seen + 5);
  })) << broker.Log();
  const std::vector<int64_t> r = QueryDb(db, count_sql.c_str());
  // Contiguous: every batch from the first stored to the last.
  EXPECT_EQ(r[2], r[1] - r[0] + 1)
      << "batches " << r[0] << ".." << r[1] << " but " << r[2] << " stored";
  EXPECT_EQ(QueryDb(db, "SELECT COUNT(*) FROM gaps"),
            (std::vector<int64_t>{0}));
  for (const std::string& l : again.lines()) {
    EXPECT_EQ(l.find("\"type\":\"gap\""), std::string::npos) << l;
  }
}

// A sequence that jumps is reported as a gap (JSON line and the gaps
// table), and a late batch closes its part of it.
TEST_F(TelemetryIntegrationTest, WatchReportsGapsAndTheirFilling) {
  MosquittoBroker broker(BrokerOptions());
  ASSERT_TRUE(broker.Start().ok()) << broker.Log();
  const std::string db = certs_.File("watch.db");
  WatchProcess watch({"watch", "--broker",
                      "127.0.0.1:" + std::to_string(broker.port()), "--cafile",
                      certs_.File("ca.pem"), "--prefix", prefix_, "--json",
                      "--db", db});
  auto probe = mqtt_testing::MqttProbe::Connect(ProbeOptions(broker));
  ASSERT_TRUE(probe.ok()) << probe.status().message();
  BatchCodec codec;
  const std::string ghost = prefix_ + "/devices/ghost/telemetry";
  auto send = [&](uint64_t seq) {
    TelemetryBatch b;
    b.set_schema_version(1);
    b.set_device_id("ghost");
    b.set_boot_epoch(1);
    b.set_sequence(seq);
    Result<std::string> payload = codec.Encode(b);
    ASSERT_TRUE(payload.ok()) << payload.status().message();
    ASSERT_TRUE((*probe)->Publish(ghost, *payload, 1, false).ok());
  };
  auto has = [&](const std::string& needle) {
    for (const std::string& l : watch.lines()) {
      if (l.find(needle) != std::string::npos) return true;
    }
    return false;
  };
  // The watcher subscribes after it connects: send until the first lands.
  ASSERT_TRUE(Eventually([&] {
    send(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return WatchedSequences(watch.lines()).size() >= 1;
  }));
  send(2);
  send(6);
  ASSERT_TRUE(Eventually([&] {
    return has(
        "\"type\":\"gap\",\"device\":\"ghost\",\"boot_epoch\":1,"
        "\"first_sequence\":3,\"last_sequence\":5");
  })) << (watch.lines().empty() ? "" : watch.lines().back());
  EXPECT_EQ(QueryDb(db,
                    "SELECT first_sequence, last_sequence FROM gaps "
                    "WHERE device = 'ghost'"),
            (std::vector<int64_t>{3, 5}));
  send(4);  // late: splits the gap
  ASSERT_TRUE(Eventually([&] {
    return has(
        "\"type\":\"gap_filled\",\"device\":\"ghost\",\"boot_epoch\":1,"
        "\"first_sequence\":4,\"last_sequence\":4");
  }));
  EXPECT_EQ(QueryDb(db,
                    "SELECT COUNT(*), MIN(first_sequence), "
                    "MAX(last_sequence) FROM gaps WHERE device = 'ghost'"),
            (std::vector<int64_t>{2, 3, 5}));
}

}  // namespace
}  // namespace ternd::telemetry
