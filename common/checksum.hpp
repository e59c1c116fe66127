// Checksums (XXH3-64 from libxxhash; on x86-64 its runtime-dispatched AVX2/AVX-512 code, 2.5-4x
// the speed of the library's default SSE2 build on 1 MiB buffers: the same values, see
// checksum.cpp).
//
// A segment's version checksum is *block-composed* so a delta commit re-hashes only what it
// touched:
//   block_sum(i)   = XXH3-64(bytes of block i)           blocks of kBlockSize, the last one short
//   segment_sum    = XXH3-64(le64(size) || le64(block_sum(0)) || ... || le64(block_sum(n-1)))
// Wire messages and disk records use plain XXH3-64 over their bytes (see PROTOCOL.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

struct XXH3_state_s;  // <xxhash.h>

namespace ckpt {

inline constexpr uint64_t kBlockSize = 64 * 1024;

uint64_t Checksum64(const void* data, size_t len);
uint64_t Checksum64(std::span<const uint8_t> data);
// XXH3-64 of the concatenation a || b, without building it.
uint64_t Checksum64Concat(std::span<const uint8_t> a, std::span<const uint8_t> b);

// Incremental XXH3-64: Digest() == Checksum64(the bytes of every Update() so far, in order).
class Checksum64Stream {
 public:
  Checksum64Stream();
  void Update(const void* data, size_t len);
  uint64_t Digest() const;

 private:
  struct Free {
    void operator()(XXH3_state_s* s) const;
  };
  std::unique_ptr<XXH3_state_s, Free> state_;
};

// Combines per-block sums into the segment checksum defined above.
uint64_t ComposeSegmentChecksum(uint64_t size, std::span<const uint64_t> block_sums);

// Segment checksum of a flat buffer (reference implementation; tests and small segments).
uint64_t SegmentChecksum(const void* data, uint64_t size);

}  // namespace ckpt
