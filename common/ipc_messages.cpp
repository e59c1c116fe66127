#include "common/ipc_messages.hpp"

namespace ckpt::ipc {

std::optional<uint64_t> TotalRangeBytes(const std::vector<Range>& ranges) {
  uint64_t total = 0;
  for (const Range& r : ranges) {
    if (r.length > UINT64_MAX - total) return std::nullopt;
    total += r.length;
  }
  return total;
}

}  // namespace ckpt::ipc
