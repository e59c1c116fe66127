#include "client/deferred_commit.hpp"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace ckpt::client {
namespace {

std::vector<uint8_t> Bytes(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

TEST(DeferredCommit, EmptyAndClear) {
  DeferredCommit d;
  EXPECT_TRUE(d.empty());
  d.Add(5, {});
  EXPECT_TRUE(d.empty());
  auto b = Bytes(4, 1);
  d.Add(0, b);
  d.seq = 7;
  EXPECT_EQ(d.bytes(), 4u);
  d.Clear();
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(d.bytes(), 0u);
  EXPECT_EQ(d.seq, 0u);
}

TEST(DeferredCommit, OverwriteInPlaceKeepsOneExtent) {
  DeferredCommit d;
  auto a = Bytes(100, 1), b = Bytes(10, 2);
  d.Add(0, a);
  d.Add(20, b);
  ASSERT_EQ(d.count(), 1u);
  EXPECT_EQ(d.bytes(), 100u);
  const auto& e = d.extents().at(0);
  EXPECT_EQ(e[19], 1);
  EXPECT_EQ(e[20], 2);
  EXPECT_EQ(e[29], 2);
  EXPECT_EQ(e[30], 1);
}

TEST(DeferredCommit, AppendGrowsPrependDoesNotCopy) {
  DeferredCommit d;
  auto a = Bytes(10, 1), b = Bytes(10, 2), c = Bytes(5, 3);
  d.Add(10, a);
  d.Add(20, b);  // starts where [10,20) ends: grows it
  EXPECT_EQ(d.count(), 1u);
  d.Add(5, c);  // ends where it starts: a separate extent (no copy of the held bytes)
  EXPECT_EQ(d.count(), 2u);
  EXPECT_EQ(d.bytes(), 25u);
  EXPECT_EQ(d.extents().at(10)[10], 2);
}

TEST(DeferredCommit, OverlapMergesNewerBytesWin) {
  DeferredCommit d;
  auto a = Bytes(10, 1), b = Bytes(10, 2), c = Bytes(30, 3);
  d.Add(0, a);
  d.Add(20, b);
  d.Add(5, std::span<const uint8_t>(c).first(20));  // [5,25): bridges both
  ASSERT_EQ(d.count(), 1u);
  const auto& e = d.extents().at(0);
  ASSERT_EQ(e.size(), 30u);
  EXPECT_EQ(e[4], 1);
  EXPECT_EQ(e[5], 3);
  EXPECT_EQ(e[24], 3);
  EXPECT_EQ(e[25], 2);
  EXPECT_EQ(d.bytes(), 30u);
}

// Random adds against a byte-array model: the extents always hold exactly the newest bytes of
// every offset ever added, are disjoint and sorted, and bytes() is their sum.
TEST(DeferredCommit, MatchesModel) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 200; round++) {
    constexpr size_t kSize = 512;
    std::vector<int> model(kSize, -1);
    DeferredCommit d;
    for (int i = 0; i < 30; i++) {
      uint64_t off = rng() % kSize, len = 1 + rng() % 64;
      if (off + len > kSize) len = kSize - off;
      uint8_t v = static_cast<uint8_t>(rng());
      auto b = Bytes(len, v);
      d.Add(off, b);
      for (uint64_t k = off; k < off + len; k++) model[k] = v;
    }
    std::vector<int> got(kSize, -1);
    uint64_t end = 0, sum = 0;
    for (auto& [o, bytes] : d.extents()) {
      ASSERT_GE(o, end) << "extents overlap";
      end = o + bytes.size();
      sum += bytes.size();
      for (size_t k = 0; k < bytes.size(); k++) got[o + k] = bytes[k];
    }
    EXPECT_EQ(sum, d.bytes());
    EXPECT_EQ(got, model);
  }
}

}  // namespace
}  // namespace ckpt::client
