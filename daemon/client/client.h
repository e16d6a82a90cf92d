// The C++ client of ternd's unix-socket protocol (docs/protocol.md).
//
// A Client is one connection. The blocking calls (Infer, ModelInfo, Health,
// Stats) send one request and wait for its answer. For pipelining, Send()
// any number of requests with distinct ids and Receive() the responses,
// which may come back in any order; do not mix the two styles while
// pipelined requests are outstanding.
//
//   TERND_ASSIGN_OR_RETURN(auto client, ternd::client::Client::Connect(path));
//   ternd::wire::InferRequest request;
//   ternd::client::AddF32Input(&request, "x", 1, features, values);
//   TERND_ASSIGN_OR_RETURN(ternd::wire::InferResponse r,
//   client->Infer(request));
//
// Thread-safety: a Client is used by one thread at a time; open one per
// thread for concurrency.
#ifndef TERND_DAEMON_CLIENT_CLIENT_H_
#define TERND_DAEMON_CLIENT_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "base/status.h"
#include "daemon/frame.h"
#include "daemon/protocol.pb.h"

namespace ternd::client {

struct ClientOptions {
  // How long a blocking call or Receive() waits for an answer; 0: forever.
  int timeout_ms = 30000;
  // Largest response frame accepted.
  size_t max_frame_bytes = 64u << 20;
  // Receive() polls the socket without sleeping for up to this long before
  // it blocks: lower latency for small, fast calls at the cost of a busy
  // core (pair it with the daemon's server.busy_poll_us). 0: block at once.
  int busy_poll_us = 0;
};

class Client {
 public:
  static Result<std::unique_ptr<Client>> Connect(
      const std::string& socket_path, const ClientOptions& options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Pipelining: writes one request frame (blocking until written).
  Status Send(const wire::Request& request);
  // Waits for the next response frame, whatever its id. A connection-level
  // error from the daemon arrives as a response with id 0 and a status.
  Status Receive(wire::Response* response);

  // Blocking calls; a non-OK status from the daemon becomes the Status.
  Result<wire::InferResponse> Infer(const wire::InferRequest& request);
  Result<wire::ModelInfoResponse> ModelInfo();
  // Streams a generation: `on_token` gets every frame's GenerateResponse
  // as it arrives (a token and its text); returning false cancels the call
  // (a Cancel request goes out and the rest of the stream is read). The
  // result is the final frame's summary (stop_reason "cancelled" after a
  // cancel). The timeout applies to each frame.
  Result<wire::GenerateSummary> Generate(
      const wire::GenerateRequest& request,
      const std::function<bool(const wire::GenerateResponse&)>& on_token);
  Result<wire::HealthResponse> Health();
  // `metrics`: also the whole registry (StatsRequest.metrics).
  Result<wire::StatsResponse> Stats(bool metrics = false);
  Result<wire::UpdateStatusResponse> UpdateStatus();
  // Sends an update bundle in parts of `part_bytes` and waits until the
  // daemon has finished with it (the answer says active, rejected or
  // failed); set ClientOptions::timeout_ms to allow for large models.
  Result<wire::UpdateStatusResponse> Install(std::string_view bundle,
                                             size_t part_bytes = 1u << 20);
  // The same from a file, read one part at a time (memory: one part,
  // whatever the bundle's size). A refusal the daemon sends before the last
  // part (a bundle over its cap) is returned as that refusal.
  Result<wire::UpdateStatusResponse> InstallFile(const std::string& path,
                                                 size_t part_bytes = 1u << 20);

  // The next id Call() will use; ids count up from 1.
  uint64_t next_id() const { return next_id_; }
  int fd() const { return fd_; }

 private:
  Client(int fd, const ClientOptions& options)
      : fd_(fd), options_(options), decoder_(options.max_frame_bytes) {}
  Status Call(wire::Request* request, wire::Response* response);
  // Sends an Install request part by part (`next` fills a part and says
  // whether more follow) and waits for its answer.
  Result<wire::UpdateStatusResponse> InstallParts(
      const std::function<Result<bool>(std::string* part)>& next);

  int fd_;
  ClientOptions options_;
  wire::FrameDecoder decoder_;
  std::string send_buffer_;
  uint64_t next_id_ = 1;
};

// The Status a wire status stands for (OK when absent or code 0).
Status FromWire(const wire::Status& status);

// Appends an F32 input of `rows` x `features` values to `request`.
void AddF32Input(wire::InferRequest* request, const std::string& name,
                 uint32_t rows, uint32_t features,
                 std::span<const float> values);

// The elements of an output tensor, viewed in place (the data of a parsed
// protobuf string is suitably aligned for 4-byte elements on the heap).
std::span<const float> F32Data(const wire::Tensor& tensor);
std::span<const int32_t> I32Data(const wire::Tensor& tensor);

}  // namespace ternd::client

#endif  // TERND_DAEMON_CLIENT_CLIENT_H_
