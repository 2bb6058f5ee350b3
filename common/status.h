// Errors as values. A Status names what went wrong; a Result<T> is a T or a Status.
// errno becomes a Status once, at the syscall (see ErrnoStatus), and a Status becomes an errno or a
// grpc::Status once, at each edge. Never put keys or plaintext in a message.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace lazycrypt {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the caller passed something malformed (flag, path, key file, label)
  kNotFound,            // the thing named does not exist
  kAlreadyExists,       // the thing named exists already
  kCorruption,          // untrusted bytes are malformed (footer, TOC, tar, JSON, JWE structure)
  kAuthFailed,          // a cryptographic check failed (GCM tag, HMAC, digest, key commitment)
  kUnsupported,         // well-formed but not supported (a tar type, a JWE algorithm); named
  kIoError,             // the OS or the network failed
  kPermissionDenied,
  kFailedPrecondition,  // the object is in the wrong state for the call
  kUnavailable,         // transient; the caller may retry
  kDeadlineExceeded,
  kInternal,            // a bug in lazycrypt or a library it uses
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  static Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
  static Status AuthFailed(std::string m) { return {StatusCode::kAuthFailed, std::move(m)}; }
  static Status Unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
  static Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
  static Status PermissionDenied(std::string m) { return {StatusCode::kPermissionDenied, std::move(m)}; }
  static Status FailedPrecondition(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status DeadlineExceeded(std::string m) { return {StatusCode::kDeadlineExceeded, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "corruption: TOC: entry 3: name is empty"
  std::string ToString() const;
  // Same code, message prefixed with "context: ". OK stays OK.
  Status WithContext(std::string_view context) const;

  bool operator==(const Status& other) const = default;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Status for a failed syscall: IoError (NotFound for ENOENT, PermissionDenied for EACCES/EPERM,
// AlreadyExists for EEXIST) with "what: strerror(err)".
Status ErrnoStatus(std::string_view what, int err = errno);

template <typename T>
class [[nodiscard]] Result {
  static_assert(!std::is_same_v<std::decay_t<T>, Status>, "Result<Status> is meaningless");

 public:
  Result(T value) : v_(std::move(value)) {}                 // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {}          // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  // OK when ok().
  const Status& status() const& {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<1>(v_);
  }
  Status status() && { return ok() ? Status() : std::get<1>(std::move(v_)); }

  // REQUIRES: ok()
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace lazycrypt

#define LC_STATUS_CONCAT_INNER_(a, b) a##b
#define LC_STATUS_CONCAT_(a, b) LC_STATUS_CONCAT_INNER_(a, b)

// Returns the Status of `expr` from the enclosing function if it is not OK.
#define LC_RETURN_IF_ERROR(expr)                              \
  do {                                                        \
    ::lazycrypt::Status lc_status_ = (expr);                  \
    if (!lc_status_.ok()) return lc_status_;                  \
  } while (0)

// `LC_ASSIGN_OR_RETURN(auto x, MakeX());` declares x from a Result or returns its Status.
#define LC_ASSIGN_OR_RETURN(lhs, expr) \
  LC_ASSIGN_OR_RETURN_IMPL_(LC_STATUS_CONCAT_(lc_result_, __LINE__), lhs, expr)
#define LC_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return std::move(tmp).status();  \
  lhs = std::move(tmp).value()
