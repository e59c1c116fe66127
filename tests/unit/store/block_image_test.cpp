#include "store/block_image.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>
#include <thread>

#include "store/block_arena.hpp"
#include "tests/unit/store/test_util.hpp"

namespace ckpt {
namespace {

using testing::Bytes;
using testing::RandomBytes;

const uint64_t kOddSizes[] = {0, 1, 65535, 65536, 65537, 3 * 65536 + 5};

TEST(BlockImageTest, ZeroImagesShareTheZeroBlock) {
  for (uint64_t size : kOddSizes) {
    SCOPED_TRACE(size);
    BlockImage img = BlockImage::Zero(size);
    std::vector<uint8_t> zeros(size, 0);
    EXPECT_EQ(img.size(), size);
    EXPECT_EQ(img.block_count(), (size + kBlockSize - 1) / kBlockSize);
    EXPECT_EQ(img.allocated_bytes(), 0u);
    EXPECT_EQ(img.checksum(), SegmentChecksum(zeros.data(), size));
    EXPECT_EQ(Bytes(img), zeros);
    for (size_t i = 0; i < img.block_count(); i++) {
      EXPECT_TRUE(img.is_zero_block(i));
      uint64_t len = std::min<uint64_t>(kBlockSize, size - i * kBlockSize);
      EXPECT_EQ(img.block(i).size(), len);
      EXPECT_EQ(img.block_sum(i), Checksum64(zeros.data(), len));  // short last block too
    }
  }
}

TEST(BlockImageTest, DefaultImageIsEmpty) {
  BlockImage img;
  EXPECT_EQ(img.size(), 0u);
  EXPECT_EQ(img.block_count(), 0u);
  EXPECT_EQ(img.checksum(), SegmentChecksum(nullptr, 0));
  EXPECT_EQ(img.checksum(), BlockImage::Zero(0).checksum());
}

TEST(BlockImageTest, ChecksumEqualsFlatSegmentChecksum) {
  for (uint64_t size : kOddSizes) {
    SCOPED_TRACE(size);
    std::vector<uint8_t> data = RandomBytes(size, static_cast<uint32_t>(size) + 1);
    BlockImage img = BlockImage::FromBytes(data);
    EXPECT_EQ(img.checksum(), SegmentChecksum(data.data(), data.size()));
    EXPECT_EQ(Bytes(img), data);
    EXPECT_EQ(img.allocated_bytes(), size);
    for (size_t i = 0; i < img.block_count(); i++) {
      auto b = img.block(i);
      EXPECT_EQ(0, std::memcmp(b.data(), data.data() + i * kBlockSize, b.size()));
      EXPECT_EQ(img.block_sum(i), Checksum64(b));
    }
  }
}

TEST(BlockImageTest, RandomWritesMatchAFlatModel) {
  for (uint64_t size : kOddSizes) {
    SCOPED_TRACE(size);
    std::mt19937_64 rng(size);
    std::vector<uint8_t> model(size, 0);
    BlockImage img = BlockImage::Zero(size);
    for (int round = 0; round < 40; round++) {
      uint64_t off = size ? rng() % (size + 1) : 0;
      uint64_t len = (size - off) ? rng() % (size - off + 1) : 0;
      if (round % 5 == 0) len = std::min<uint64_t>(len, 7);  // small writes, block edges
      std::vector<uint8_t> data = RandomBytes(len, static_cast<uint32_t>(round));
      img.Write(off, data);
      std::copy(data.begin(), data.end(), model.begin() + off);
      ASSERT_EQ(img.checksum(), SegmentChecksum(model.data(), size));
      // Partial read at the same range.
      std::vector<uint8_t> got(len);
      img.Read(off, got);
      ASSERT_EQ(got, data);
      // Appending the range after existing bytes leaves them and adds exactly the range.
      std::vector<uint8_t> appended = {1, 2, 3};
      img.AppendTo(off, len, &appended);
      ASSERT_EQ(appended.size(), 3 + len);
      ASSERT_TRUE(std::equal(data.begin(), data.end(), appended.begin() + 3));
    }
    EXPECT_EQ(Bytes(img), model);
  }
}

TEST(BlockImageTest, ZeroLengthWriteAndReadAtEnd) {
  BlockImage img = BlockImage::Zero(10);
  img.Write(10, {});
  std::vector<uint8_t> none;
  img.Read(10, none);
  img.AppendTo(10, 0, &none);
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(img.allocated_bytes(), 0u);
}

TEST(BlockImageTest, WritesAllocateOnlyTouchedBlocks) {
  BlockImage img = BlockImage::Zero(10 * kBlockSize + 100);
  uint8_t one = 1;
  img.Write(3 * kBlockSize + 17, {&one, 1});
  EXPECT_EQ(img.allocated_bytes(), kBlockSize);
  EXPECT_FALSE(img.is_zero_block(3));
  EXPECT_TRUE(img.is_zero_block(2));
  img.Write(10 * kBlockSize + 99, {&one, 1});  // the short last block
  EXPECT_EQ(img.allocated_bytes(), kBlockSize + 100);
  // A write straddling two blocks.
  std::vector<uint8_t> two(2, 7);
  img.Write(5 * kBlockSize - 1, two);
  EXPECT_EQ(img.allocated_bytes(), 3 * kBlockSize + 100);
  std::vector<uint8_t> flat = Bytes(img);
  EXPECT_EQ(flat[3 * kBlockSize + 17], 1);
  EXPECT_EQ(flat[5 * kBlockSize - 1], 7);
  EXPECT_EQ(flat[5 * kBlockSize], 7);
  EXPECT_EQ(img.checksum(), SegmentChecksum(flat.data(), flat.size()));
  // The shared zero block itself stays zero.
  EXPECT_EQ(Bytes(BlockImage::Zero(kBlockSize)), std::vector<uint8_t>(kBlockSize, 0));
}

TEST(BlockImageTest, SnapshotIsUnaffectedByLaterWrites) {
  std::vector<uint8_t> data = RandomBytes(4 * kBlockSize + 9, 42);
  BlockImage img = BlockImage::FromBytes(data);
  BlockImage snap = img;  // shares every block
  for (size_t i = 0; i < img.block_count(); i++)
    EXPECT_EQ(img.block(i).data(), snap.block(i).data());
  uint64_t snap_sum = snap.checksum();

  std::vector<uint8_t> patch(100, 0xAB);
  img.Write(kBlockSize + 10, patch);
  // The snapshot keeps its bytes and checksum.
  EXPECT_EQ(Bytes(snap), data);
  EXPECT_EQ(snap.checksum(), snap_sum);
  // Only the written block was cloned; the others are still shared.
  EXPECT_NE(img.block(1).data(), snap.block(1).data());
  for (size_t i : {0, 2, 3, 4}) EXPECT_EQ(img.block(i).data(), snap.block(i).data());
  std::copy(patch.begin(), patch.end(), data.begin() + kBlockSize + 10);
  EXPECT_EQ(Bytes(img), data);
  EXPECT_EQ(img.checksum(), SegmentChecksum(data.data(), data.size()));

  // Writing again into the now-private block does not clone it again.
  const uint8_t* before = img.block(1).data();
  img.Write(kBlockSize, patch);
  EXPECT_EQ(img.block(1).data(), before);
}

TEST(BlockImageTest, WritingTheSnapshotLeavesTheOriginal) {
  std::vector<uint8_t> data = RandomBytes(2 * kBlockSize, 7);
  BlockImage img = BlockImage::FromBytes(data);
  BlockImage snap = img;
  std::vector<uint8_t> patch(kBlockSize * 2, 0);
  snap.Write(0, patch);
  EXPECT_EQ(Bytes(img), data);
  EXPECT_EQ(Bytes(snap), patch);
  EXPECT_EQ(snap.checksum(), BlockImage::Zero(2 * kBlockSize).checksum());
}

TEST(BlockImageDeathTest, OutOfRangeAccessAborts) {
  BlockImage img = BlockImage::Zero(100);
  std::vector<uint8_t> two(2);
  EXPECT_DEATH(img.Write(99, two), "assertion failed");
  EXPECT_DEATH(img.Read(99, two), "assertion failed");
  EXPECT_DEATH(img.Write(UINT64_MAX, two), "assertion failed");
  EXPECT_DEATH(img.Read(101, {}), "assertion failed");
  EXPECT_DEATH(img.AppendTo(99, 2, &two), "assertion failed");
  EXPECT_DEATH(img.block(1), "assertion failed");
}

}  // namespace
}  // namespace ckpt

// ---- the block arena behind full-size blocks ----------------------------------------------------

namespace ckpt {
namespace {

TEST(BlockArenaTest, BlocksAreAlignedDistinctAndReused) {
  const block_arena::Stats before = block_arena::GetStats();
  std::vector<uint8_t*> blocks;
  for (int i = 0; i < 100; i++) {  // spans several 2 MiB chunks
    uint8_t* b = block_arena::Allocate();
    ASSERT_EQ(reinterpret_cast<uintptr_t>(b) % kBlockSize, 0u);
    std::memset(b, i, kBlockSize);  // writable, whole
    blocks.push_back(b);
  }
  std::set<uint8_t*> distinct(blocks.begin(), blocks.end());
  EXPECT_EQ(distinct.size(), blocks.size());
  for (int i = 0; i < 100; i++) EXPECT_EQ(blocks[i][kBlockSize - 1], uint8_t(i)) << "no overlap";
  EXPECT_GE(block_arena::GetStats().chunks, before.chunks + 3);
  uint8_t* freed = blocks.back();
  blocks.pop_back();
  block_arena::Free(freed);
  EXPECT_EQ(block_arena::Allocate(), freed) << "a freed slot is reused first";
  blocks.push_back(freed);
  for (uint8_t* b : blocks) block_arena::Free(b);
  EXPECT_GE(block_arena::GetStats().chunks, before.chunks + 3) << "free chunks stay for reuse";
  block_arena::TrimIdle();  // they became free in this interval: kept
  EXPECT_GE(block_arena::GetStats().chunks, before.chunks + 3);
  block_arena::TrimIdle();  // still free a whole interval later: beyond the reserve, unmapped
  const block_arena::Stats after = block_arena::GetStats();
  EXPECT_LE(after.chunks, before.chunks + block_arena::kKeepFreeChunks)
      << "idle free chunks beyond the reserve go back to the kernel";
}

TEST(BlockArenaTest, ConcurrentAllocateAndFree) {
  auto churn = [](int seed) {
    std::vector<uint8_t*> held;
    for (int i = 0; i < 20000; i++) {
      if (held.size() < 64 && (i * 7 + seed) % 3 != 0) {
        held.push_back(block_arena::Allocate());
        held.back()[0] = uint8_t(seed);
      } else if (!held.empty()) {
        EXPECT_EQ(held.back()[0], uint8_t(seed));
        block_arena::Free(held.back());
        held.pop_back();
      }
    }
    for (uint8_t* b : held) block_arena::Free(b);
  };
  std::thread a(churn, 1), b(churn, 2);
  a.join();
  b.join();
}

TEST(BlockArenaTest, ImagesUseTheArenaOnlyForFullBlocks) {
  (void)BlockImage::Zero(kBlockSize);  // the shared zero block takes one slot for good
  const block_arena::Stats s0 = block_arena::GetStats();
  {
    BlockImage small = BlockImage::FromBytes(std::vector<uint8_t>(4096, 7));
    EXPECT_EQ(block_arena::GetStats().free_blocks, s0.free_blocks) << "a 4 KiB image pins no slot";
    BlockImage big = BlockImage::FromBytes(std::vector<uint8_t>(3 * kBlockSize + 10, 9));
    const block_arena::Stats s1 = block_arena::GetStats();
    EXPECT_EQ(s1.chunks * 32 - s1.free_blocks, s0.chunks * 32 - s0.free_blocks + 3);
    BlockImage copy = big;
    copy.Write(5, std::vector<uint8_t>(3, 1));  // clones one full block
    const block_arena::Stats s2 = block_arena::GetStats();
    EXPECT_EQ(s2.chunks * 32 - s2.free_blocks, s1.chunks * 32 - s1.free_blocks + 1);
  }
  const block_arena::Stats s3 = block_arena::GetStats();
  EXPECT_EQ(s3.chunks * 32 - s3.free_blocks, s0.chunks * 32 - s0.free_blocks) << "all returned";
}

}  // namespace
}  // namespace ckpt
