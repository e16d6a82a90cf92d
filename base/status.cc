#include "base/status.h"

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace ternd {
namespace {

void CopyTruncated(char* dst, size_t cap, std::string_view src) {
  size_t n = src.size() < cap - 1 ? src.size() : cap - 1;
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

Status VFormat(StatusCode code, const char* format, va_list args) {
  char buf[Status::kMaxMessage];
  std::vsnprintf(buf, sizeof(buf), format, args);
  return Status(code, buf);
}

}  // namespace

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kCancelled:
      return "CANCELLED";
    case StatusCode::kUnknown:
      return "UNKNOWN";
    case StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case StatusCode::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case StatusCode::kNotFound:
      return "NOT_FOUND";
    case StatusCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case StatusCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case StatusCode::kAborted:
      return "ABORTED";
    case StatusCode::kOutOfRange:
      return "OUT_OF_RANGE";
    case StatusCode::kUnimplemented:
      return "UNIMPLEMENTED";
    case StatusCode::kInternal:
      return "INTERNAL";
    case StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case StatusCode::kDataLoss:
      return "DATA_LOSS";
  }
  return "UNKNOWN";
}

Status::Status(StatusCode code, std::string_view message) : code_(code) {
  CopyTruncated(message_, sizeof(message_), message);
}

Status& Status::operator=(const Status& other) {
  if (this != &other) {
    code_ = other.code_;
    std::memcpy(message_, other.message_, std::strlen(other.message_) + 1);
  }
  return *this;
}

Status& Status::Prepend(std::string_view context) {
  if (ok()) return *this;
  // Builds "context: message" in a copy, then truncates to the buffer.
  char buf[2 * kMaxMessage + 2];
  const size_t c = context.size() < kMaxMessage ? context.size() : kMaxMessage;
  const size_t m = std::strlen(message_);
  std::memcpy(buf, context.data(), c);
  buf[c] = ':';
  buf[c + 1] = ' ';
  std::memcpy(buf + c + 2, message_, m);
  CopyTruncated(message_, sizeof(message_), std::string_view(buf, c + 2 + m));
  return *this;
}

Status Errorf(StatusCode code, const char* format, ...) {
  va_list args;
  va_start(args, format);
  Status s = VFormat(code, format, args);
  va_end(args);
  return s;
}

#define TERND_DEFINE_ERROR_CTOR_(Name, Code)            \
  Status Name(const char* format, ...) {                \
    va_list args;                                       \
    va_start(args, format);                             \
    Status s = VFormat(StatusCode::Code, format, args); \
    va_end(args);                                       \
    return s;                                           \
  }
TERND_DEFINE_ERROR_CTOR_(InvalidArgument, kInvalidArgument)
TERND_DEFINE_ERROR_CTOR_(DataLoss, kDataLoss)
TERND_DEFINE_ERROR_CTOR_(NotFound, kNotFound)
TERND_DEFINE_ERROR_CTOR_(ResourceExhausted, kResourceExhausted)
TERND_DEFINE_ERROR_CTOR_(FailedPrecondition, kFailedPrecondition)
TERND_DEFINE_ERROR_CTOR_(Internal, kInternal)
TERND_DEFINE_ERROR_CTOR_(Unimplemented, kUnimplemented)
#undef TERND_DEFINE_ERROR_CTOR_

Status ErrnoError(int errnum, const char* format, ...) {
  char buf[Status::kMaxMessage];
  va_list args;
  va_start(args, format);
  int n = std::vsnprintf(buf, sizeof(buf), format, args);
  va_end(args);
  if (n < 0) n = 0;
  if (static_cast<size_t>(n) < sizeof(buf)) {
    std::snprintf(buf + n, sizeof(buf) - n, ": %s", std::strerror(errnum));
  }
  StatusCode code = StatusCode::kInternal;
  switch (errnum) {
    case ENOENT:
      code = StatusCode::kNotFound;
      break;
    case EACCES:
    case EPERM:
      code = StatusCode::kPermissionDenied;
      break;
    case ENOSPC:
    case ENOMEM:
    case EMFILE:
      code = StatusCode::kResourceExhausted;
      break;
    case EEXIST:
      code = StatusCode::kAlreadyExists;
      break;
    default:
      break;
  }
  return Status(code, buf);
}

}  // namespace ternd
