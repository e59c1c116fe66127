// PlanCommitParts: splits the ranges of one commit into COMMIT messages that each fit libqb's ring.
//
// A part carries at most `max_part_bytes` of wire cost, counted as range data plus
// `per_range_overhead` for each range descriptor, and at most `max_ranges` ranges (one iovec per
// range, so stay below IOV_MAX).  A range larger than a part is cut into pieces.  Order is kept:
// concatenating the parts' ranges gives back the input (with big ranges cut).  Every part has at
// least one range; an empty input gives no parts.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "client/dirty_ranges.hpp"
#include "common/status.hpp"

namespace ckpt::client {

struct CommitPart {
  std::vector<DirtyRanges::Range> ranges;
  uint64_t data_bytes = 0;
};

inline std::vector<CommitPart> PlanCommitParts(const std::vector<DirtyRanges::Range>& ranges,
                                               uint64_t max_part_bytes, size_t max_ranges,
                                               uint64_t per_range_overhead) {
  CKPT_ASSERT(max_part_bytes > per_range_overhead && max_ranges > 0);
  std::vector<CommitPart> parts;
  CommitPart cur;
  uint64_t cost = 0;
  auto flush = [&] {
    if (!cur.ranges.empty()) parts.push_back(std::move(cur));
    cur = CommitPart{};
    cost = 0;
  };
  for (const auto& r : ranges) {
    uint64_t off = r.offset, left = r.length;
    while (left > 0) {
      if (cur.ranges.size() >= max_ranges || cost + per_range_overhead >= max_part_bytes) flush();
      uint64_t room = max_part_bytes - cost - per_range_overhead;
      uint64_t n = std::min(left, room);
      cur.ranges.push_back({off, n});
      cur.data_bytes += n;
      cost += per_range_overhead + n;
      off += n;
      left -= n;
    }
  }
  flush();
  return parts;
}

}  // namespace ckpt::client
