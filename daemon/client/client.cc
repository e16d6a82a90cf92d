#include "daemon/client/client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "base/clock.h"

namespace ternd::client {

Result<std::unique_ptr<Client>> Client::Connect(const std::string& socket_path,
                                                const ClientOptions& options) {
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    return InvalidArgument("socket path '%s' is too long", socket_path.c_str());
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError(errno, "socket(AF_UNIX)");
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    const int err = errno;
    close(fd);
    Status s =
        ErrnoError(err, "cannot connect to ternd at %s", socket_path.c_str());
    return Status(StatusCode::kUnavailable, s.message());
  }
  return std::unique_ptr<Client>(new Client(fd, options));
}

Client::~Client() {
  if (fd_ >= 0) close(fd_);
}

Status Client::Send(const wire::Request& request) {
  std::vector<uint8_t> frame;
  if (!wire::AppendFrame(request, UINT32_MAX, &frame)) {
    return InvalidArgument("request of %zu bytes is too large for one frame",
                           request.ByteSizeLong());
  }
  size_t sent = 0;
  while (sent < frame.size()) {
    const ssize_t n =
        send(fd_, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      Status s = ErrnoError(errno, "cannot send to ternd");
      return Status(StatusCode::kUnavailable, s.message());
    }
    sent += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status Client::Receive(wire::Response* response) {
  for (;;) {
    std::span<const uint8_t> payload;
    uint32_t announced = 0;
    switch (decoder_.TakeFrame(&payload, &announced)) {
      case wire::FrameDecoder::Next::kFrame:
        if (!response->ParseFromArray(payload.data(),
                                      static_cast<int>(payload.size()))) {
          return Errorf(StatusCode::kDataLoss,
                        "ternd sent a frame of %zu bytes that is not a "
                        "Response",
                        payload.size());
        }
        return Status::Ok();
      case wire::FrameDecoder::Next::kTooLarge:
        return ResourceExhausted(
            "ternd sent a frame of %u bytes, over the "
            "client's limit of %zu",
            announced, options_.max_frame_bytes);
      case wire::FrameDecoder::Next::kNeedMore:
        break;
    }
    if (options_.busy_poll_us > 0) {
      // Spin until the answer is readable (or the time is up), then read.
      const int64_t until =
          MonotonicNs() + int64_t{options_.busy_poll_us} * 1000;
      struct pollfd p = {fd_, POLLIN, 0};
      while (poll(&p, 1, 0) == 0 && MonotonicNs() < until) {
      }
    }
    if (options_.timeout_ms > 0) {
      struct pollfd p = {fd_, POLLIN, 0};
      const int r = poll(&p, 1, options_.timeout_ms);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return ErrnoError(errno, "poll");
      if (r == 0) {
        return Errorf(StatusCode::kDeadlineExceeded,
                      "no answer from ternd within %d ms", options_.timeout_ms);
      }
    }
    std::span<uint8_t> space = decoder_.WritableSpace(64 * 1024);
    const ssize_t n = read(fd_, space.data(), space.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      Status s = ErrnoError(errno, "cannot read from ternd");
      return Status(StatusCode::kUnavailable, s.message());
    }
    if (n == 0) {
      return Errorf(StatusCode::kUnavailable, "ternd closed the connection%s",
                    decoder_.buffered() ? " inside a frame" : "");
    }
    decoder_.Commit(static_cast<size_t>(n));
  }
}

Status Client::Call(wire::Request* request, wire::Response* response) {
  const uint64_t id = next_id_++;
  request->set_id(id);
  TERND_RETURN_IF_ERROR(Send(*request));
  for (;;) {
    TERND_RETURN_IF_ERROR(Receive(response));
    if (response->id() == id || response->id() == 0) break;
    // An answer to someone else's pipelined request: not ours to keep.
  }
  return FromWire(response->status());
}

Result<wire::InferResponse> Client::Infer(const wire::InferRequest& request) {
  wire::Request r;
  *r.mutable_infer() = request;
  wire::Response response;
  TERND_RETURN_IF_ERROR(Call(&r, &response));
  if (!response.has_infer()) return Internal("Infer answered without a result");
  return std::move(*response.mutable_infer());
}

Result<wire::GenerateSummary> Client::Generate(
    const wire::GenerateRequest& request,
    const std::function<bool(const wire::GenerateResponse&)>& on_token) {
  wire::Request r;
  *r.mutable_generate() = request;
  const uint64_t id = next_id_++;
  r.set_id(id);
  TERND_RETURN_IF_ERROR(Send(r));
  bool cancelled = false;
  uint64_t cancel_id = 0;
  wire::Response response;
  for (;;) {
    TERND_RETURN_IF_ERROR(Receive(&response));
    if (response.id() == 0) return FromWire(response.status());
    if (cancelled && response.id() == cancel_id) continue;  // its answer
    if (response.id() != id) continue;  // someone else's pipelined answer
    TERND_RETURN_IF_ERROR(FromWire(response.status()));
    if (response.has_generate() &&
        (response.generate().tokens_size() > 0 ||
         !response.generate().text().empty()) &&
        !cancelled && !on_token(response.generate())) {
      wire::Request cancel;
      cancel_id = next_id_++;
      cancel.set_id(cancel_id);
      cancel.mutable_cancel()->set_target(id);
      TERND_RETURN_IF_ERROR(Send(cancel));
      cancelled = true;
    }
    if (response.final()) {
      return std::move(*response.mutable_generate()->mutable_summary());
    }
  }
}

Result<wire::ModelInfoResponse> Client::ModelInfo() {
  wire::Request r;
  r.mutable_model_info();
  wire::Response response;
  TERND_RETURN_IF_ERROR(Call(&r, &response));
  return std::move(*response.mutable_model_info());
}

Result<wire::HealthResponse> Client::Health() {
  wire::Request r;
  r.mutable_health();
  wire::Response response;
  TERND_RETURN_IF_ERROR(Call(&r, &response));
  return std::move(*response.mutable_health());
}

Result<wire::StatsResponse> Client::Stats(bool metrics) {
  wire::Request r;
  r.mutable_stats()->set_metrics(metrics);
  wire::Response response;
  TERND_RETURN_IF_ERROR(Call(&r, &response));
  return std::move(*response.mutable_stats());
}

Result<wire::UpdateStatusResponse> Client::UpdateStatus() {
  wire::Request r;
  r.mutable_update_status();
  wire::Response response;
  TERND_RETURN_IF_ERROR(Call(&r, &response));
  return std::move(*response.mutable_update_status());
}

Result<wire::UpdateStatusResponse> Client::Install(std::string_view bundle,
                                                   size_t part_bytes) {
  if (part_bytes == 0) part_bytes = 1;
  size_t offset = 0;
  return InstallParts([&](std::string* part) -> Result<bool> {
    const size_t n = std::min(part_bytes, bundle.size() - offset);
    part->assign(bundle.data() + offset, n);
    offset += n;
    return offset < bundle.size();
  });
}

Result<wire::UpdateStatusResponse> Client::InstallFile(const std::string& path,
                                                       size_t part_bytes) {
  if (part_bytes == 0) part_bytes = 1;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "cannot open %s", path.c_str());
  struct stat st;
  if (fstat(fd, &st) < 0) {
    const int e = errno;
    close(fd);
    return ErrnoError(e, "cannot stat %s", path.c_str());
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  uint64_t offset = 0;
  Result<wire::UpdateStatusResponse> answer =
      InstallParts([&](std::string* part) -> Result<bool> {
        const size_t want =
            static_cast<size_t>(std::min<uint64_t>(part_bytes, size - offset));
        part->resize(want);
        size_t got = 0;
        while (got < want) {
          const ssize_t n = read(fd, part->data() + got, want - got);
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) return ErrnoError(errno, "cannot read %s", path.c_str());
          if (n == 0) {
            return DataLoss("%s ended at byte %llu while being sent",
                            path.c_str(),
                            static_cast<unsigned long long>(offset + got));
          }
          got += static_cast<size_t>(n);
        }
        offset += want;
        return offset < size;
      });
  close(fd);
  return answer;
}

Result<wire::UpdateStatusResponse> Client::InstallParts(
    const std::function<Result<bool>(std::string* part)>& next) {
  const uint64_t id = next_id_++;
  wire::Request r;
  r.set_id(id);
  Status sent;
  for (bool more = true; more;) {
    wire::InstallRequest* install = r.mutable_install();
    Result<bool> m = next(install->mutable_part());
    if (!m.ok()) return m.status();
    more = *m;
    install->set_more(more);
    sent = Send(r);
    // The daemon may refuse before the last part (a bundle over its cap)
    // and close: its answer says why, so read it rather than the EPIPE.
    if (!sent.ok()) break;
  }
  wire::Response response;
  for (;;) {
    Status got = Receive(&response);
    if (!got.ok()) return sent.ok() ? got : sent;
    if (response.id() == id || response.id() == 0) break;
  }
  TERND_RETURN_IF_ERROR(FromWire(response.status()));
  return std::move(*response.mutable_update_status());
}

Status FromWire(const wire::Status& status) {
  if (status.code() == 0) return Status::Ok();
  const int code =
      status.code() > 0 && status.code() <= 16 ? status.code() : 2;  // UNKNOWN
  return Status(static_cast<StatusCode>(code), status.message());
}

void AddF32Input(wire::InferRequest* request, const std::string& name,
                 uint32_t rows, uint32_t features,
                 std::span<const float> values) {
  wire::Tensor* t = request->add_inputs();
  t->set_name(name);
  t->set_dtype(wire::F32);
  t->add_shape(rows);
  t->add_shape(features);
  t->set_data(values.data(), values.size_bytes());
}

std::span<const float> F32Data(const wire::Tensor& tensor) {
  return std::span<const float>(
      reinterpret_cast<const float*>(tensor.data().data()),
      tensor.data().size() / sizeof(float));
}

std::span<const int32_t> I32Data(const wire::Tensor& tensor) {
  return std::span<const int32_t>(
      reinterpret_cast<const int32_t*>(tensor.data().data()),
      tensor.data().size() / sizeof(int32_t));
}

}  // namespace ternd::client
