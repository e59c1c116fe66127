// DirtyRanges: the byte ranges of a segment changed since its last commit.
//
// A set of disjoint, non-adjacent half-open intervals [begin, end): Add() coalesces every interval
// it overlaps or touches, so the set stays minimal and sorted by offset.  Callers bound-check
// against the segment size first; Add() only requires begin + length not to overflow.
#pragma once

#include <cstdint>
#include <iterator>
#include <map>
#include <vector>

namespace ckpt::client {

class DirtyRanges {
 public:
  struct Range {
    uint64_t offset = 0;
    uint64_t length = 0;
    bool operator==(const Range&) const = default;
  };

  // Marks [offset, offset + length) dirty.  length 0 is a no-op.
  void Add(uint64_t offset, uint64_t length) {
    if (length == 0) return;
    uint64_t begin = offset, end = offset + length;
    // First interval that may touch [begin, end): the last one starting at or before `begin`.
    auto it = by_begin_.upper_bound(begin);
    if (it != by_begin_.begin()) {
      auto prev = std::prev(it);
      if (prev->second >= begin) it = prev;  // overlaps or is adjacent on the left
    }
    while (it != by_begin_.end() && it->first <= end) {  // overlaps or adjacent on the right
      if (it->first < begin) begin = it->first;
      if (it->second > end) end = it->second;
      bytes_ -= it->second - it->first;
      it = by_begin_.erase(it);
    }
    by_begin_.emplace(begin, end);
    bytes_ += end - begin;
  }

  void Clear() {
    by_begin_.clear();
    bytes_ = 0;
  }
  bool empty() const { return by_begin_.empty(); }
  size_t count() const { return by_begin_.size(); }
  // Total dirty bytes (sum of the disjoint intervals).
  uint64_t bytes() const { return bytes_; }

  // The intervals in increasing offset order.
  std::vector<Range> Ranges() const {
    std::vector<Range> out;
    out.reserve(by_begin_.size());
    for (auto& [b, e] : by_begin_) out.push_back({b, e - b});
    return out;
  }

 private:
  std::map<uint64_t, uint64_t> by_begin_;  // begin -> end
  uint64_t bytes_ = 0;
};

}  // namespace ckpt::client
