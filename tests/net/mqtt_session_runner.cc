// Runs one MqttSession until killed, for the will test: the test SIGKILLs
// this process, which closes the connection without DISCONNECT, so the
// broker must publish the will.
//
// Usage: mqtt_session_runner HOST PORT CA_FILE CLIENT_ID WILL_TOPIC
//                            WILL_PAYLOAD [NEXT_WILL_PAYLOAD]
// Prints "connected N" on stdout after the N-th connect. With
// NEXT_WILL_PAYLOAD, after the first connect it replaces the will, stops
// and starts the session again (a clean disconnect: no will), so the second
// connection carries the new will.
#include <systemd/sd-event.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#include "net/mqtt_session.h"

namespace {

struct Runner {
  std::unique_ptr<ternd::net::MqttSession> session;
  std::string next_will;
  std::string will_topic;
};

int Restart(sd_event_source*, void* obj) {
  auto* r = static_cast<Runner*>(obj);
  r->session->SetWill(
      ternd::net::MqttWill{r->will_topic, r->next_will, 1, true});
  r->session->Stop();
  r->session->Start();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr,
                 "usage: %s HOST PORT CA_FILE CLIENT_ID WILL_TOPIC "
                 "WILL_PAYLOAD [NEXT_WILL_PAYLOAD]\n",
                 argv[0]);
    return 2;
  }
  sd_event* loop = nullptr;
  if (sd_event_default(&loop) < 0) return 1;
  ternd::net::MqttOptions options;
  options.host = argv[1];
  options.port = std::atoi(argv[2]);
  options.ca_file = argv[3];
  options.client_id = argv[4];
  options.reconnect_min_ms = 50;
  options.reconnect_max_ms = 500;
  options.will = ternd::net::MqttWill{argv[5], argv[6], 1, true};
  auto session = ternd::net::MqttSession::Create(loop, options);
  if (!session.ok()) {
    std::fprintf(stderr, "%s\n", session.status().message());
    return 1;
  }
  Runner runner{std::move(*session), argc > 7 ? argv[7] : "", argv[5]};
  ternd::net::MqttCallbacks callbacks;
  callbacks.on_connected = [&] {
    std::printf("connected %llu\n",
                static_cast<unsigned long long>(runner.session->connects()));
    std::fflush(stdout);
    if (runner.session->connects() == 1 && !runner.next_will.empty()) {
      // Outside the session's callbacks, once.
      sd_event_source* s = nullptr;
      if (sd_event_add_defer(loop, &s, &Restart, &runner) >= 0) {
        sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        sd_event_source_set_floating(s, 1);
        sd_event_source_unref(s);
      }
    }
  };
  runner.session->AddObserver(std::move(callbacks));
  runner.session->Start();
  sd_event_loop(loop);
  return 0;
}
