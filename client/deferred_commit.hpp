// DeferredCommit: the bytes of asynchronous commits that could not be handed to ckptd yet.
//
// When ckptd's request ring is full, an asynchronous ckpt_commit does not wait: libckpt copies
// the commit's dirty bytes out of the mapping into this buffer and returns.  Later commits of the
// same segment are added on top (newer bytes win where ranges overlap), and the whole buffer goes
// to ckptd as ONE commit once the ring has room (libckpt's flusher thread, or the next call that
// must not overtake it).  A replica or a restore therefore sees the state after the last deferred
// commit, never a torn mix: every byte in the buffer was copied at a commit call.
//
// Invariants: extents are disjoint (they may touch) and keyed by offset; bytes() is the sum of
// their lengths.  A range that starts where an extent ends grows that extent (amortized: sequential
// writes make one extent); otherwise touching extents stay apart, so adding a range never copies
// more than the new bytes plus the extents it overlaps.
#pragma once

#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <span>
#include <vector>

namespace ckpt::client {

class DeferredCommit {
 public:
  // Ranges and bytes the buffer would hold after Add()ing [offset, offset + length): an upper
  // bound (overlaps with held extents make the real figures smaller).  For the caller's limits.
  uint64_t bytes_if_added(uint64_t length) const { return bytes_ + length; }
  size_t count_if_added() const { return extents_.size() + 1; }

  // Copies `bytes` (the segment's contents at `offset`) in; newer bytes replace older ones.
  void Add(uint64_t offset, std::span<const uint8_t> bytes) {
    if (bytes.empty()) return;
    uint64_t begin = offset, end = offset + bytes.size();
    auto it = extents_.upper_bound(begin);
    if (it != extents_.begin()) {
      auto prev = std::prev(it);
      if (prev->first + prev->second.size() > begin) it = prev;  // overlaps on the left
    }
    // Fast path: one held extent covers the new range: overwrite in place.
    if (it != extents_.end() && it->first <= begin && it->first + it->second.size() >= end) {
      std::memcpy(it->second.data() + (begin - it->first), bytes.data(), bytes.size());
      return;
    }
    // Appending right after an extent (sequential writes): grow it (amortized, no copy of it).
    if (it == extents_.end() || it->first >= end) {
      auto next = extents_.lower_bound(begin);
      if (next != extents_.begin()) {
        auto prev = std::prev(next);
        if (prev->first + prev->second.size() == begin) {
          prev->second.insert(prev->second.end(), bytes.begin(), bytes.end());
          bytes_ += bytes.size();
          return;
        }
      }
    }
    // Merge every extent that overlaps [begin, end) into one new extent.
    auto first = it;
    uint64_t mbegin = begin, mend = end;
    for (auto j = first; j != extents_.end() && j->first < end; ++j) {
      mbegin = std::min(mbegin, j->first);
      mend = std::max<uint64_t>(mend, j->first + j->second.size());
    }
    std::vector<uint8_t> merged(mend - mbegin);
    while (it != extents_.end() && it->first < end) {
      std::memcpy(merged.data() + (it->first - mbegin), it->second.data(), it->second.size());
      bytes_ -= it->second.size();
      it = extents_.erase(it);
    }
    std::memcpy(merged.data() + (begin - mbegin), bytes.data(), bytes.size());
    bytes_ += merged.size();
    extents_.emplace(mbegin, std::move(merged));
  }

  // Adds `newer` (deferred after everything held here) on top; it is left empty.
  void AddNewer(DeferredCommit&& newer) {
    if (newer.empty()) return;
    for (auto& [off, bytes] : newer.extents_) Add(off, bytes);
    seq = newer.seq;
    newer.Clear();
  }

  void Clear() {
    extents_.clear();
    bytes_ = 0;
    seq = 0;
  }
  bool empty() const { return extents_.empty(); }
  size_t count() const { return extents_.size(); }
  uint64_t bytes() const { return bytes_; }
  // offset -> bytes, in increasing offset order.
  const std::map<uint64_t, std::vector<uint8_t>>& extents() const { return extents_; }

  // The seq the last deferred commit was given (what libckpt returned for it): the one commit
  // sent for the buffer carries it.
  uint64_t seq = 0;

 private:
  std::map<uint64_t, std::vector<uint8_t>> extents_;
  uint64_t bytes_ = 0;
};

}  // namespace ckpt::client
