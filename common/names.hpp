// Segment names: 1..kMaxNameLen bytes of [A-Za-z0-9._-], not starting with '.' or '-'.
// The same rule is enforced by libckpt (early, clear error), ckptd (authoritative) and when decoding
// peer messages and disk files (a name is also a file name under the state directory).
#pragma once

#include <string_view>

#include "common/status.hpp"

namespace ckpt {

inline constexpr size_t kMaxNameLen = 128;

inline Status ValidateSegmentName(std::string_view name) {
  if (name.empty()) return Err(Code::kBadName, "segment name is empty");
  if (name.size() > kMaxNameLen)
    return Err(Code::kBadName, "segment name is longer than 128 bytes");
  if (name[0] == '.' || name[0] == '-')
    return Err(Code::kBadName, "segment name must not start with '.' or '-'");
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok)
      return Err(Code::kBadName,
                 "segment name may contain only letters, digits, '.', '_' and '-'");
  }
  return Status::Ok();
}

}  // namespace ckpt
