// Test helpers for MqttSession: turning an sd-event loop until a condition
// holds, and an observer that records every event with its time.
#ifndef TERND_TESTS_NET_SESSION_RECORDER_H_
#define TERND_TESTS_NET_SESSION_RECORDER_H_

#include <systemd/sd-event.h>
#include <time.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "net/mqtt_session.h"

namespace ternd::net::testing {

inline int64_t MonotonicMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Runs the loop until `done()` or `timeout_ms`; returns done().
inline bool RunUntil(sd_event* loop, const std::function<bool()>& done,
                     int timeout_ms = 20000) {
  const int64_t end = MonotonicMs() + timeout_ms;
  while (!done()) {
    if (MonotonicMs() >= end) return false;
    sd_event_run(loop, 20 * 1000);
  }
  return true;
}

// Runs the loop for `ms` (for checking that something does not happen).
inline void RunFor(sd_event* loop, int ms) {
  RunUntil(
      loop, [] { return false; }, ms);
}

struct Message {
  std::string topic;
  std::string payload;
  bool retained;
};

struct SessionRecorder {
  int connected = 0;
  std::vector<std::string> disconnects;
  std::vector<int64_t> disconnect_times_ms;
  std::vector<Message> messages;
  std::map<int, int> done;  // mid -> reason code (-1: connection dropped)

  MqttCallbacks Callbacks() {
    MqttCallbacks c;
    c.on_connected = [this] { ++connected; };
    c.on_disconnected = [this](const std::string& why) {
      disconnects.push_back(why);
      disconnect_times_ms.push_back(MonotonicMs());
    };
    c.on_message = [this](std::string_view topic, std::string_view payload,
                          bool retained) {
      messages.push_back({std::string(topic), std::string(payload), retained});
    };
    c.on_publish_done = [this](int mid, int reason) { done[mid] = reason; };
    return c;
  }

  const Message* Find(const std::string& topic,
                      const std::string& payload) const {
    for (const Message& m : messages) {
      if (m.topic == topic && m.payload == payload) return &m;
    }
    return nullptr;
  }
};

}  // namespace ternd::net::testing

#endif  // TERND_TESTS_NET_SESSION_RECORDER_H_
