// Status and Result<T>: expected failures are values, never exceptions or asserts.
//
// Codes mirror the public C API (include/ckpt/ckpt.h) one to one, so a failure found deep in the
// daemon reaches the application and ckptctl unchanged.  Broken invariants use CKPT_ASSERT instead.
#pragma once

#include <ckpt/ckpt.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace ckpt {

// Always-on assertion: a broken invariant must stop the process before it damages stored data.
#define CKPT_ASSERT(cond)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      std::fprintf(stderr, "ckpt: assertion failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);    \
      std::abort();                                                                                \
    }                                                                                              \
  } while (0)

enum class Code : int {
  kOk = CKPT_OK,
  kNoCheckpoint = CKPT_NO_CHECKPOINT,
  kInvalid = CKPT_ERR_INVALID,
  kBadName = CKPT_ERR_NAME,
  kNotFound = CKPT_ERR_NOT_FOUND,
  kExists = CKPT_ERR_EXISTS,
  kPermission = CKPT_ERR_PERMISSION,
  kTooLarge = CKPT_ERR_TOO_LARGE,
  kNoSpace = CKPT_ERR_NO_SPACE,
  kFenced = CKPT_ERR_FENCED,
  kConflict = CKPT_ERR_CONFLICT,
  kTimeout = CKPT_ERR_TIMEOUT,
  kUnavailable = CKPT_ERR_UNAVAILABLE,
  kNotOwner = CKPT_ERR_NOT_OWNER,
  kNotEnoughReplicas = CKPT_ERR_REPLICAS,
  kCorrupt = CKPT_ERR_CORRUPT,
  kIo = CKPT_ERR_IO,
  kProtocol = CKPT_ERR_PROTOCOL,
  kNoMemory = CKPT_ERR_NO_MEMORY,
  kBusy = CKPT_ERR_BUSY,
  kInternal = CKPT_ERR_INTERNAL,
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  int c_code() const { return static_cast<int>(code_); }
  const std::string& message() const { return message_; }
  // "message" or the generic text of the code when no message was given.
  std::string ToString() const {
    return message_.empty() ? std::string(ckpt_strerror(c_code())) : message_;
  }

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status Err(Code code, std::string message) { return Status(code, std::move(message)); }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}           // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {     // NOLINT(google-explicit-constructor)
    CKPT_ASSERT(!std::get<Status>(v_).ok());
  }
  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & {
    CKPT_ASSERT(ok());
    return std::get<T>(v_);
  }
  const T& value() const& {
    CKPT_ASSERT(ok());
    return std::get<T>(v_);
  }
  T&& value() && {
    CKPT_ASSERT(ok());
    return std::get<T>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }

 private:
  std::variant<T, Status> v_;
};

#define CKPT_RETURN_IF_ERROR(expr)       \
  do {                                   \
    ::ckpt::Status _st = (expr);         \
    if (!_st.ok()) return _st;           \
  } while (0)

}  // namespace ckpt
