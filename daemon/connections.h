// The socket side of the daemon: the listening unix socket (passed by
// systemd socket activation, or created with the configured mode and
// group), and every client connection with its framing, output buffer,
// backpressure and close. docs/protocol.md, "Connection" and "Flow
// control", is what this implements.
//
//   peer ──accept──▶ allow-list, connection cap ──▶ Connection
//   bytes ──read (64 KiB a turn)──▶ FrameDecoder ──▶ handler->OnFrame()
//   Send(response) ──▶ output buffer ──▶ FlushDirty() (after the reading
//                      code returns) ──▶ send, or wait for EPOLLOUT
//
// What the frames mean is the handler's business (the service). Send()
// only queues: nothing is written, and no connection is closed, while the
// handler runs; the reading code flushes when it has finished with the
// connection. A connection that must end (a frame it cannot resynchronize
// after) is marked with CloseAfterFlush().
//
// Thread-safety: everything on the loop's thread.
#ifndef TERND_DAEMON_CONNECTIONS_H_
#define TERND_DAEMON_CONNECTIONS_H_

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/event_loop.h"
#include "base/fd.h"
#include "base/status.h"
#include "daemon/frame.h"
#include "daemon/protocol.pb.h"
#include "telemetry/service_metrics.h"

namespace ternd::daemon {

struct ListenOptions {
  std::string socket_path;  // ignored when systemd passes the socket
  uint32_t socket_mode = 0660;
  std::string socket_group;  // empty: the daemon's own
  uint32_t max_connections = 256;
  std::vector<uint32_t> allow_uids, allow_gids;  // both empty: anyone
  uint32_t max_frame_bytes = 4u << 20;
  uint32_t max_output_buffer_bytes = 4u << 20;
};

class Connection {
 public:
  uint64_t id() const { return id_; }
  const struct ucred& peer() const { return peer_; }
  // Ends the connection once its queued answers are sent; nothing more is
  // read from it.
  void CloseAfterFlush() { closing_ = true; }
  bool closing() const { return closing_; }

  // The service's per-connection state.
  int inflight = 0;  // requests read and not yet answered
  // A bundle arriving in parts (InstallRequest.more), spooled to a file.
  UniqueFd install_file;
  uint64_t install_bytes = 0;
  uint64_t install_id = 0;

 private:
  friend class Connections;
  class Connections* owner_ = nullptr;
  uint64_t id_ = 0;
  UniqueFd fd_;
  EventSource source_;
  struct ucred peer_ = {};
  wire::FrameDecoder decoder_{0};
  std::vector<uint8_t> out_;
  size_t out_sent_ = 0;
  bool eof_ = false;          // the peer will send nothing more
  bool closing_ = false;      // close once out_ is flushed
  bool read_paused_ = false;  // output over its bound: stop reading
  bool dirty_ = false;        // in Connections::dirty_
  uint32_t events_ = 0;       // what the source waits for now
};

// What the connections tell their owner. Called from the reading code;
// the handler answers with Connections::Send (which only queues).
class ConnectionHandler {
 public:
  virtual ~ConnectionHandler() = default;
  // One complete frame's payload (valid during the call).
  virtual void OnFrame(Connection* c, std::span<const uint8_t> payload) = 0;
  // The next frame announces more than max_frame_bytes: the stream cannot
  // be resynchronized. Answer if you like; the connection then closes.
  virtual void OnOversizedFrame(Connection* c, uint32_t announced) = 0;
  // A connection was refused at accept (cap or allow-list) with `why`
  // (already answered with one error frame).
  virtual void OnRefused(const Status& why) = 0;
  // A connection is gone; `in_flight` requests of it were unanswered.
  virtual void OnClosed(uint64_t id, int in_flight) = 0;
};

class Connections {
 public:
  // Takes the socket systemd passed (LISTEN_FDS) or creates
  // options.socket_path (refusing to replace anything but a stale socket,
  // or a socket another process serves).
  // `metrics` (connections, connections_total, frames_rejected) must
  // outlive this object.
  static Result<std::unique_ptr<Connections>> Listen(
      sd_event* loop, const ListenOptions& options, ConnectionHandler* handler,
      const telemetry::ServiceMetrics* metrics);
  ~Connections();  // closes everything; removes the socket it created
  Connections(const Connections&) = delete;
  Connections& operator=(const Connections&) = delete;

  // Queues `response` (final) on `c`. A response over max_frame_bytes is
  // replaced by RESOURCE_EXHAUSTED with the same id.
  void Send(Connection* c, wire::Response* response) {
    SendFrame(c, response, /*final=*/true);
  }
  // One frame of a streamed answer (Generate): `final` on the last.
  void SendFrame(Connection* c, wire::Response* response, bool final);
  // Sends what Send() queued; may close connections.
  void FlushDirty();
  Connection* Find(uint64_t id) const;
  // Serves `fd` (a connected stream socket of this process: the HTTP
  // face's link) as a client connection, outside the connection cap and
  // the allow-lists.
  Status Adopt(UniqueFd fd);
  // `c` sent something that is not a request: counted as a rejected frame,
  // and the connection ends after its answers.
  void Reject(Connection* c);

  // Drain: no new connections; the socket file this process created is
  // removed.
  void StopListening();
  // True when no connection has unsent output.
  bool AllFlushed() const;
  // server.max_frame_bytes and server.max_output_buffer_bytes on reload.
  void SetLimits(uint32_t max_frame_bytes, uint32_t max_output_buffer_bytes);

  size_t size() const { return connections_.size(); }
  uint64_t accepted_total() const { return accepted_total_; }
  uint64_t frames_rejected() const { return frames_rejected_; }
  bool socket_activated() const { return socket_activated_; }

 private:
  Connections(sd_event* loop, const ListenOptions& options,
              ConnectionHandler* handler,
              const telemetry::ServiceMetrics* metrics)
      : loop_(loop), options_(options), handler_(handler), metrics_(metrics) {}
  Status Bind();
  void Accept();
  void OnEvent(Connection* c, uint32_t revents);
  void Read(Connection* c);
  void Flush(Connection* c);
  void UpdateEvents(Connection* c);
  void MaybeClose(Connection* c);
  void Close(Connection* c);
  static int OnListener(sd_event_source*, int, uint32_t, void* self);
  static int OnConnection(sd_event_source*, int, uint32_t revents, void* c);

  sd_event* loop_;
  ListenOptions options_;
  ConnectionHandler* handler_;
  const telemetry::ServiceMetrics* metrics_;
  UniqueFd listener_;
  EventSource listener_source_;
  bool socket_activated_ = false;
  bool unlink_socket_ = false;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> connections_;
  std::vector<Connection*> dirty_;  // connections with output to flush
  // Reads go here; a connection keeps only its unfinished frames.
  std::vector<uint8_t> read_buffer_;
  uint64_t accepted_total_ = 0;
  uint64_t frames_rejected_ = 0;
};

}  // namespace ternd::daemon

#endif  // TERND_DAEMON_CONNECTIONS_H_
