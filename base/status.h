// Status and Result<T>: how every fallible operation in ternd reports failure.
//
// A Status is a code plus a human-readable message that names what is wrong
// (file, key, offset, peer, expected vs. found). It never allocates: the
// message lives in a fixed inline buffer and is truncated if it would not fit,
// so a Status may be created and returned on the inference path.
//
// Thread-safety: values; safe to copy and move between threads.
#ifndef TERND_BASE_STATUS_H_
#define TERND_BASE_STATUS_H_

#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>

namespace ternd {

// Codes follow the gRPC/abseil canonical set so the wire protocol can carry
// them unchanged.
enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
};

// "INVALID_ARGUMENT" etc.; never null.
const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  static constexpr size_t kMaxMessage = 400;

  Status() : code_(StatusCode::kOk) { message_[0] = '\0'; }
  Status(StatusCode code, std::string_view message);

  Status(const Status& other) { *this = other; }
  Status& operator=(const Status& other);

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  // NUL-terminated; empty when ok().
  const char* message() const { return message_; }

  // Prepends "context: " to the message (keeps the code). Used to add the
  // outer layer of where something failed, e.g. the file name.
  Status& Prepend(std::string_view context);

  // Does nothing; documents that a status is deliberately dropped.
  void IgnoreError() const {}

 private:
  StatusCode code_;
  char message_[kMaxMessage];
};

// printf-style constructors; the message is truncated at kMaxMessage - 1.
Status Errorf(StatusCode code, const char* format, ...)
    __attribute__((format(printf, 2, 3)));
Status InvalidArgument(const char* format, ...)
    __attribute__((format(printf, 1, 2)));
Status DataLoss(const char* format, ...) __attribute__((format(printf, 1, 2)));
Status NotFound(const char* format, ...) __attribute__((format(printf, 1, 2)));
Status ResourceExhausted(const char* format, ...)
    __attribute__((format(printf, 1, 2)));
Status FailedPrecondition(const char* format, ...)
    __attribute__((format(printf, 1, 2)));
Status Internal(const char* format, ...) __attribute__((format(printf, 1, 2)));
Status Unimplemented(const char* format, ...)
    __attribute__((format(printf, 1, 2)));
// For failed system calls: appends ": <strerror(errnum)>" to the message.
Status ErrnoError(int errnum, const char* format, ...)
    __attribute__((format(printf, 2, 3)));

// Either a value or the Status saying why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) {
      status_ = Status(StatusCode::kInternal, "Result built from an OK status");
    }
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  // REQUIRES: ok().
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace ternd

#define TERND_STATUS_CONCAT_INNER_(a, b) a##b
#define TERND_STATUS_CONCAT_(a, b) TERND_STATUS_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define TERND_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::ternd::Status ternd_status_ = (expr);        \
    if (!ternd_status_.ok()) return ternd_status_; \
  } while (0)

// `lhs = value of expr`, or returns its status from the enclosing function.
#define TERND_ASSIGN_OR_RETURN(lhs, expr)                                     \
  TERND_ASSIGN_OR_RETURN_IMPL_(TERND_STATUS_CONCAT_(ternd_result_, __LINE__), \
                               lhs, expr)
#define TERND_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

#endif  // TERND_BASE_STATUS_H_
