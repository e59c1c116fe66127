#include "client/dirty_ranges.hpp"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "client/commit_plan.hpp"

namespace ckpt::client {
namespace {

using R = DirtyRanges::Range;

TEST(DirtyRanges, EmptyAndZeroLength) {
  DirtyRanges d;
  EXPECT_TRUE(d.empty());
  d.Add(10, 0);
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(d.bytes(), 0u);
}

TEST(DirtyRanges, DisjointStaySorted) {
  DirtyRanges d;
  d.Add(100, 10);
  d.Add(0, 10);
  d.Add(50, 5);
  EXPECT_EQ(d.Ranges(), (std::vector<R>{{0, 10}, {50, 5}, {100, 10}}));
  EXPECT_EQ(d.bytes(), 25u);
}

TEST(DirtyRanges, AdjacentCoalesce) {
  DirtyRanges d;
  d.Add(0, 10);
  d.Add(10, 10);  // touches on the right
  d.Add(30, 5);
  d.Add(25, 5);  // touches on the left of [30,35)
  EXPECT_EQ(d.Ranges(), (std::vector<R>{{0, 20}, {25, 10}}));
  d.Add(20, 5);  // bridges both
  EXPECT_EQ(d.Ranges(), (std::vector<R>{{0, 35}}));
  EXPECT_EQ(d.bytes(), 35u);
}

TEST(DirtyRanges, OverlapsAndContainment) {
  DirtyRanges d;
  d.Add(10, 10);
  d.Add(12, 3);  // inside
  EXPECT_EQ(d.Ranges(), (std::vector<R>{{10, 10}}));
  d.Add(5, 8);  // overlaps the left end
  EXPECT_EQ(d.Ranges(), (std::vector<R>{{5, 15}}));
  d.Add(40, 10);
  d.Add(60, 10);
  d.Add(0, 100);  // swallows everything
  EXPECT_EQ(d.Ranges(), (std::vector<R>{{0, 100}}));
  EXPECT_EQ(d.count(), 1u);
  d.Clear();
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(d.bytes(), 0u);
}

TEST(DirtyRanges, MatchesBitmapModel) {
  std::mt19937 rng(42);
  for (int round = 0; round < 200; round++) {
    DirtyRanges d;
    std::vector<bool> model(512, false);
    for (int i = 0; i < 20; i++) {
      uint64_t off = rng() % 500, len = rng() % 12;
      d.Add(off, len);
      for (uint64_t b = off; b < off + len; b++) model[b] = true;
    }
    std::vector<R> want;
    for (uint64_t b = 0; b < model.size(); b++) {
      if (!model[b]) continue;
      if (!want.empty() && want.back().offset + want.back().length == b)
        want.back().length++;
      else
        want.push_back({b, 1});
    }
    ASSERT_EQ(d.Ranges(), want) << "round " << round;
    uint64_t total = 0;
    for (auto& r : want) total += r.length;
    ASSERT_EQ(d.bytes(), total);
  }
}

TEST(CommitPlan, SmallCommitIsOnePart) {
  auto parts = PlanCommitParts({{0, 10}, {20, 5}}, 1000, 100, 16);
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0].data_bytes, 15u);
  EXPECT_EQ(parts[0].ranges.size(), 2u);
  EXPECT_TRUE(PlanCommitParts({}, 1000, 100, 16).empty());
}

TEST(CommitPlan, BigRangeIsCutAndCostBounded) {
  const uint64_t max = 1000, overhead = 16;
  auto parts = PlanCommitParts({{5, 2500}, {3000, 10}}, max, 100, overhead);
  ASSERT_GE(parts.size(), 3u);
  uint64_t next = 5, total = 0;
  for (auto& p : parts) {
    uint64_t cost = 0;
    ASSERT_FALSE(p.ranges.empty());
    for (auto& r : p.ranges) cost += overhead + r.length;
    EXPECT_LE(cost, max);
    for (auto& r : p.ranges) {
      if (r.offset != 3000) {
        EXPECT_EQ(r.offset, next);  // pieces are contiguous and in order
        next += r.length;
      }
      total += r.length;
    }
  }
  EXPECT_EQ(next, 2505u);
  EXPECT_EQ(total, 2510u);
}

TEST(CommitPlan, RangeCountBounded) {
  std::vector<R> many;
  for (uint64_t i = 0; i < 2500; i++) many.push_back({i * 2, 1});
  auto parts = PlanCommitParts(many, 1u << 20, 1000, 16);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].ranges.size(), 1000u);
  EXPECT_EQ(parts[2].ranges.size(), 500u);
}

}  // namespace
}  // namespace ckpt::client
