// BlockImage: the bytes of one segment version in memory, as copy-on-write blocks of kBlockSize.
//
// Copying a BlockImage is cheap (it shares blocks); Write() clones a block only when another image
// still shares it.  So "snapshot the committed version, keep accepting commits" costs O(blocks)
// pointer copies, and N kept versions cost only the blocks that differ.
// Invariants: blocks_.size() == ceil(size/kBlockSize); sums_[i] == Checksum64(block i) at all times
// (Write() recomputes touched blocks); a block whose use_count() > 1 is never modified.
// Not thread-safe for writes; a snapshot may be read from another thread while the original is
// written (the writer clones shared blocks).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/checksum.hpp"
#include "common/status.hpp"

namespace ckpt {

class BlockImage {
 public:
  BlockImage() = default;
  // An all-zero image of `size` bytes (shares one zero block: no memory until written).
  static BlockImage Zero(uint64_t size);
  // An image holding a copy of `data`.
  static BlockImage FromBytes(std::span<const uint8_t> data);

  uint64_t size() const { return size_; }
  size_t block_count() const { return blocks_.size(); }
  // Bytes of block i (the last block may be shorter than kBlockSize).
  std::span<const uint8_t> block(size_t i) const;
  uint64_t block_sum(size_t i) const { return sums_[i]; }
  // True when block i is the shared all-zero block (holds no private memory).
  bool is_zero_block(size_t i) const;

  // Copies `data` to [offset, offset+data.size()); the range must lie inside the image.
  void Write(uint64_t offset, std::span<const uint8_t> data);
  // Copies [offset, offset+out.size()) into out; the range must lie inside the image.
  void Read(uint64_t offset, std::span<uint8_t> out) const;
  // Appends bytes [offset, offset+length) to *out (no zero-filled resize first).
  void AppendTo(uint64_t offset, uint64_t length, std::vector<uint8_t>* out) const;
  // The segment checksum (common/checksum.hpp): O(block_count) over cached block sums.
  uint64_t checksum() const;
  // Bytes of private (non-zero-block) memory this image references, shared blocks included.
  uint64_t allocated_bytes() const;

 private:
  struct Block;
  static const std::shared_ptr<Block>& ZeroBlock();  // kBlockSize zero bytes, never written
  size_t block_len(size_t i) const;
  // Calls f(bytes, n) for the pieces of [offset, offset+length) block by block, in order; the
  // range must lie inside the image.
  template <class F>
  void VisitRange(uint64_t offset, uint64_t length, F f) const;
  uint64_t size_ = 0;
  std::vector<std::shared_ptr<Block>> blocks_;
  std::vector<uint64_t> sums_;
};

}  // namespace ckpt
