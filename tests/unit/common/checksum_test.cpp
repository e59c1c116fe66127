// common/checksum uses libxxhash's runtime-dispatched XXH3 where it exists.  Every stored record
// and wire message depends on its values, so they must equal the library's plain XXH3-64 for
// every length (XXH3 has separate code paths up to 16, 128, 240 bytes and per 1 KiB stripe
// block) and for any split of a stream.
#include "common/checksum.hpp"

#include <gtest/gtest.h>
#include <xxhash.h>  // the plain (non-dispatched) entry points: the reference

#include <random>
#include <vector>

#include "tests/random_bytes.hpp"

namespace ckpt {
namespace {

using testing::RandomBytes;

TEST(ChecksumTest, KnownValue) {
  EXPECT_EQ(Checksum64(nullptr, 0), 0x2D06800538D394C2ull);  // XXH3-64 of no bytes, seed 0
}

TEST(ChecksumTest, EqualsPlainXxh3AtEveryCodePathLength) {
  std::vector<uint8_t> data = RandomBytes(3 << 20, 7);
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 2100; n++) lengths.push_back(n);
  for (size_t n : {4095ul, 4096ul, 65535ul, 65536ul, 65537ul, 1044480ul, 1048576ul, 3ul << 20})
    lengths.push_back(n);
  for (size_t n : lengths) {
    for (size_t offset : {0ul, 1ul, 13ul}) {  // unaligned starts too
      if (offset + n > data.size()) continue;
      ASSERT_EQ(Checksum64(data.data() + offset, n), XXH3_64bits(data.data() + offset, n))
          << "length " << n << " offset " << offset;
    }
  }
}

TEST(ChecksumTest, StreamEqualsOneShotForAnySplit) {
  std::vector<uint8_t> data = RandomBytes(1 << 20, 11);
  std::mt19937 rng(3);
  for (int round = 0; round < 50; round++) {
    size_t total = round == 0 ? 0 : rng() % data.size();
    Checksum64Stream stream;
    size_t pos = 0;
    while (pos < total) {
      size_t n = std::min<size_t>(total - pos, rng() % 5 == 0 ? rng() % 300000 : rng() % 2000);
      stream.Update(data.data() + pos, n);
      pos += n;
    }
    ASSERT_EQ(stream.Digest(), XXH3_64bits(data.data(), total)) << "total " << total;
    ASSERT_EQ(stream.Digest(), Checksum64(data.data(), total));  // Digest() does not consume
  }
  std::span<const uint8_t> a(data.data(), 777), b(data.data() + 777, 100000);
  EXPECT_EQ(Checksum64Concat(a, b), XXH3_64bits(data.data(), 100777));
}

// The segment checksum's definition (checksum.hpp), built by hand: XXH3-64 of le64(size) followed
// by le64 of every block sum.
TEST(ChecksumTest, SegmentChecksumIsXxh3OfSizeAndBlockSums) {
  for (size_t blocks : {0ul, 1ul, 63ul, 64ul, 65ul, 16384ul}) {
    std::vector<uint64_t> sums(blocks);
    std::mt19937_64 rng(blocks);
    for (auto& x : sums) x = rng();
    uint64_t size = blocks * kBlockSize - (blocks ? 100 : 0);
    std::vector<uint8_t> flat;
    auto put = [&](uint64_t v) {
      for (int i = 0; i < 8; i++) flat.push_back(static_cast<uint8_t>(v >> (8 * i)));
    };
    put(size);
    for (uint64_t x : sums) put(x);
    EXPECT_EQ(ComposeSegmentChecksum(size, sums), XXH3_64bits(flat.data(), flat.size()))
        << blocks << " blocks";
  }
}

}  // namespace
}  // namespace ckpt
