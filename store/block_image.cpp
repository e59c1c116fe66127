#include "store/block_image.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "store/block_arena.hpp"

namespace ckpt {

// One block's bytes.  Its length is implied by its position in the image (kBlockSize, or the
// remainder for the last block); the shared zero block is always kBlockSize long.
// Full-size blocks come from the huge-page block arena (store/block_arena.hpp), the shorter tail
// block of an image from the heap.
struct BlockImage::Block {
  explicit Block(size_t len)
      : data(len == kBlockSize ? block_arena::Allocate() : new uint8_t[len]),
        pooled(len == kBlockSize) {}
  ~Block() {
    if (pooled)
      block_arena::Free(data);
    else
      delete[] data;
  }
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;
  uint8_t* const data;
  const bool pooled;
};

// The zero block lives in a function-local static, so any image holding it sees use_count() > 1
// and therefore never writes into it.
const std::shared_ptr<BlockImage::Block>& BlockImage::ZeroBlock() {
  static const std::shared_ptr<Block> zero = [] {
    auto b = std::make_shared<Block>(kBlockSize);
    std::memset(b->data, 0, kBlockSize);
    return b;
  }();
  return zero;
}

BlockImage BlockImage::Zero(uint64_t size) {
  static const uint64_t full_zero_sum = Checksum64(ZeroBlock()->data, kBlockSize);
  BlockImage img;
  img.size_ = size;
  size_t n = static_cast<size_t>((size + kBlockSize - 1) / kBlockSize);
  img.blocks_.assign(n, ZeroBlock());
  img.sums_.assign(n, full_zero_sum);
  if (n > 0 && size % kBlockSize != 0) {
    img.sums_[n - 1] = Checksum64(ZeroBlock()->data, size % kBlockSize);
  }
  return img;
}

BlockImage BlockImage::FromBytes(std::span<const uint8_t> data) {
  BlockImage img = Zero(data.size());
  img.Write(0, data);
  return img;
}

size_t BlockImage::block_len(size_t i) const {
  CKPT_ASSERT(i < blocks_.size());
  uint64_t start = static_cast<uint64_t>(i) * kBlockSize;
  return static_cast<size_t>(std::min<uint64_t>(kBlockSize, size_ - start));
}

std::span<const uint8_t> BlockImage::block(size_t i) const {
  size_t len = block_len(i);  // asserts i is in range
  return {blocks_[i]->data, len};
}

bool BlockImage::is_zero_block(size_t i) const {
  CKPT_ASSERT(i < blocks_.size());
  return blocks_[i] == ZeroBlock();
}

void BlockImage::Write(uint64_t offset, std::span<const uint8_t> data) {
  CKPT_ASSERT(offset <= size_ && data.size() <= size_ - offset);
  const uint8_t* src = data.data();
  uint64_t pos = offset;
  uint64_t end = offset + data.size();
  while (pos < end) {
    size_t i = static_cast<size_t>(pos / kBlockSize);
    size_t in_block = static_cast<size_t>(pos % kBlockSize);
    size_t len = block_len(i);
    size_t n = static_cast<size_t>(std::min<uint64_t>(len - in_block, end - pos));
    std::shared_ptr<Block>& b = blocks_[i];
    if (b.use_count() > 1) {  // shared (with a snapshot or the zero block): clone first
      auto fresh = std::make_shared<Block>(len);
      std::memcpy(fresh->data, b->data, in_block);
      std::memcpy(fresh->data + in_block + n, b->data + in_block + n, len - in_block - n);
      b = std::move(fresh);
    } else {
      // Sole owner now.  Pairs with the release of the last other owner's reference (maybe a
      // snapshot dropped by the store worker thread): its reads happen before our writes.
      std::atomic_thread_fence(std::memory_order_acquire);
    }
    std::memcpy(b->data + in_block, src, n);
    sums_[i] = Checksum64(b->data, len);
    src += n;
    pos += n;
  }
}

template <class F>
void BlockImage::VisitRange(uint64_t offset, uint64_t length, F f) const {
  CKPT_ASSERT(offset <= size_ && length <= size_ - offset);
  uint64_t pos = offset;
  const uint64_t end = offset + length;
  while (pos < end) {
    size_t i = static_cast<size_t>(pos / kBlockSize);
    size_t in_block = static_cast<size_t>(pos % kBlockSize);
    size_t n = static_cast<size_t>(std::min<uint64_t>(block_len(i) - in_block, end - pos));
    f(blocks_[i]->data + in_block, n);
    pos += n;
  }
}

void BlockImage::Read(uint64_t offset, std::span<uint8_t> out) const {
  uint8_t* dst = out.data();
  VisitRange(offset, out.size(), [&](const uint8_t* src, size_t n) {
    std::memcpy(dst, src, n);
    dst += n;
  });
}

void BlockImage::AppendTo(uint64_t offset, uint64_t length, std::vector<uint8_t>* out) const {
  VisitRange(offset, length,
             [&](const uint8_t* src, size_t n) { out->insert(out->end(), src, src + n); });
}

uint64_t BlockImage::checksum() const { return ComposeSegmentChecksum(size_, sums_); }

uint64_t BlockImage::allocated_bytes() const {
  uint64_t total = 0;
  for (size_t i = 0; i < blocks_.size(); i++) {
    if (!is_zero_block(i)) total += block_len(i);
  }
  return total;
}

}  // namespace ckpt
