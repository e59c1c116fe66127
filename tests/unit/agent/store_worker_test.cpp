// StoreWorker: operations run in submission order; small fsync-free ones run on the loop thread
// when nothing is queued or running, everything else on the worker thread; completions arrive
// in order whichever thread ran the operation.
#include "agent/store_worker.hpp"

#include <gtest/gtest.h>
#include <qb/qbloop.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace ckpt::agent {
namespace {

// Records which operation ran on which thread; PutFull of `block_bytes` or more waits for
// Release() (a long write the test can hold on the worker thread).
class RecordingStore final : public SegmentStore {
 public:
  struct Call {
    std::string what;
    std::thread::id thread;
  };
  std::vector<Call> Calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }
  void BlockWritesFrom(uint64_t bytes) { block_bytes_ = bytes; }
  // PutFull of `name` sleeps this long (a slow disk).
  void SlowWrites(const std::string& name, std::chrono::milliseconds d) {
    slow_name_ = name;
    slow_ = d;
  }
  void WaitUntilBlocked() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return blocked_; });
  }
  void Release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

  Result<std::vector<LoadedSegment>> LoadAll() override { return std::vector<LoadedSegment>{}; }
  Status PutMeta(const SegmentMeta& meta, bool) override { return Record("meta " + meta.name); }
  Status PutFull(const std::string& name, Version v, const BlockImage& image, bool) override {
    if (name == slow_name_) std::this_thread::sleep_for(slow_);
    if (image.size() >= block_bytes_) {
      std::unique_lock lock(mu_);
      blocked_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_; });
    }
    return Record("full " + name + " " + v.ToString());
  }
  Status PutDelta(const std::string& name, Version v, Version, const std::vector<ByteRange>&,
                  const BlockImage&, bool) override {
    return Record("delta " + name + " " + v.ToString());
  }
  // What DeltaWriteBytes answers: the delta's bytes, or the whole segment (a compaction).
  void DeltasCompact(bool compact) { deltas_compact_ = compact; }
  uint64_t DeltaWriteBytes(const std::string&, Version, const std::vector<ByteRange>& ranges,
                           uint64_t segment_size) override {
    uint64_t n = 0;
    for (const ByteRange& r : ranges) n += r.length;
    return deltas_compact_ ? segment_size : n;
  }
  Status BeginFull(const std::string&, Version, uint64_t, uint64_t) override { return {}; }
  Status AppendFull(const std::string&, Version, const BlockImage&, uint64_t, uint64_t) override {
    return {};
  }
  Status FinishFull(const std::string&, Version, bool) override { return {}; }
  void AbortFull(const std::string&, Version) override {}
  Status Prune(const std::string& name, Version v) override {
    return Record("prune " + name + " " + v.ToString());
  }
  Status DropSegment(const std::string& name, bool) override { return Record("drop " + name); }
  bool has_global() const override { return false; }
  Status PutGlobal(const SegmentMeta&, Version, const BlockImage&) override { return {}; }
  Result<std::optional<LoadedSegment>> LoadGlobal(const std::string& name) override {
    (void)Record("load-global " + name);
    return std::optional<LoadedSegment>{};
  }
  std::string LocalPath(const std::string& name) const override { return "/nonexistent/" + name; }
  Status InstallLocal(const std::string&, const BlockImage&, uint32_t, uint32_t,
                      uint32_t) override {
    return {};
  }
  Status EnsureLocal(const std::string&, uint64_t, uint32_t, uint32_t, uint32_t) override {
    return {};
  }
  Status RemoveLocal(const std::string&) override { return {}; }
  Status BeginLocal(const std::string&, uint64_t) override { return {}; }
  Status AppendLocal(const std::string&, const BlockImage&, uint64_t, uint64_t) override {
    return {};
  }
  Status FinishLocal(const std::string&, uint32_t, uint32_t, uint32_t) override { return {}; }
  void AbortLocal(const std::string&) override {}
  StoreCounters counters() const override { return {}; }

 private:
  Status Record(std::string what) {
    std::lock_guard lock(mu_);
    calls_.push_back({std::move(what), std::this_thread::get_id()});
    return {};
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Call> calls_;
  uint64_t block_bytes_ = UINT64_MAX;
  std::string slow_name_;
  std::chrono::milliseconds slow_{0};
  bool blocked_ = false, released_ = false;
  bool deltas_compact_ = false;
};

repl::StoreOp Full(const std::string& name, uint64_t seq, uint64_t bytes, bool fsync = false) {
  repl::StoreOp op;
  op.kind = repl::StoreOp::kPutFull;
  op.meta.name = name;
  op.version = Version{1, seq};
  op.image = BlockImage::Zero(bytes);
  op.fsync = fsync;
  op.token = seq;
  return op;
}

// A delta of `dirty` bytes at offset 0 of a `segment_bytes` segment, on version (1, seq - 1).
repl::StoreOp Delta(const std::string& name, uint64_t seq, uint64_t segment_bytes, uint64_t dirty) {
  repl::StoreOp op;
  op.kind = repl::StoreOp::kPutDelta;
  op.meta.name = name;
  op.version = Version{1, seq};
  op.base = Version{1, seq - 1};
  op.ranges = {ByteRange{0, dirty}};
  op.image = BlockImage::Zero(segment_bytes);
  op.token = seq;
  return op;
}

repl::StoreOp Prune(const std::string& name, uint64_t seq) {
  repl::StoreOp op;
  op.kind = repl::StoreOp::kPrune;
  op.meta.name = name;
  op.version = Version{1, seq};
  return op;
}

class StoreWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_ = qb_loop_create();
    ASSERT_NE(loop_, nullptr);
    auto w = StoreWorker::Start(&store_, loop_, [this](auto& done) {
      for (auto& c : done) delivered_.push_back(c.seq);
    });
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    worker_ = std::move(w.value());
  }
  void TearDown() override {
    worker_.reset();
    qb_loop_destroy(loop_);
  }

  RecordingStore store_;
  qb_loop_t* loop_ = nullptr;
  std::unique_ptr<StoreWorker> worker_;
  std::vector<uint64_t> delivered_;
  const std::thread::id loop_thread_ = std::this_thread::get_id();
};

TEST_F(StoreWorkerTest, SmallOpsRunOnTheLoopThreadAndCompleteInOrderAtDeliverInline) {
  EXPECT_EQ(worker_->Submit(Full("a", 1, 64 * 1024)), 1u);
  EXPECT_EQ(worker_->Submit(Prune("a", 1)), 2u);
  // Ran already, but completions wait for DeliverInline (never delivered from inside Submit).
  ASSERT_EQ(store_.Calls().size(), 2u);
  EXPECT_TRUE(delivered_.empty());
  EXPECT_EQ(worker_->completed_seq(), 0u);
  worker_->DeliverInline();
  EXPECT_EQ(delivered_, (std::vector<uint64_t>{1, 2}));
  EXPECT_TRUE(worker_->idle());
  EXPECT_EQ(worker_->backlog_bytes(), 0u);
  for (const auto& c : store_.Calls()) EXPECT_EQ(c.thread, loop_thread_) << c.what;
}

TEST_F(StoreWorkerTest, LargeFsyncAndGlobalReadOpsRunOnTheWorkerThread) {
  worker_->Submit(Full("big", 1, StoreWorker::kInlineMaxBytes + 4096));
  worker_->Drain();
  worker_->Submit(Full("durable", 1, 4096, /*fsync=*/true));
  worker_->Drain();
  repl::StoreOp load;
  load.kind = repl::StoreOp::kLoadGlobal;
  load.meta.name = "g";
  worker_->Submit(std::move(load));
  worker_->Drain();
  auto calls = store_.Calls();
  ASSERT_EQ(calls.size(), 3u);
  for (const auto& c : calls) EXPECT_NE(c.thread, loop_thread_) << c.what;
  EXPECT_EQ(delivered_, (std::vector<uint64_t>{1, 2, 3}));
}

// A 4 KiB delta into a 1 MiB segment writes 4 KiB, unless the store would compact the chain
// (then it writes the whole 1 MiB): the store's answer decides, not the segment's size.
TEST_F(StoreWorkerTest, ASmallDeltaIntoALargeSegmentRunsInlineUnlessTheStoreWouldCompact) {
  worker_->Submit(Delta("big", 2, 1 << 20, 4096));
  worker_->DeliverInline();
  store_.DeltasCompact(true);
  worker_->Submit(Delta("big", 3, 1 << 20, 4096));
  worker_->Drain();
  auto calls = store_.Calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].thread, loop_thread_) << calls[0].what;
  EXPECT_NE(calls[1].thread, loop_thread_) << calls[1].what;
  EXPECT_EQ(delivered_, (std::vector<uint64_t>{1, 2}));
}

TEST_F(StoreWorkerTest, SmallOpsQueueBehindWorkInProgressAndKeepTheOrder) {
  store_.BlockWritesFrom(1 << 20);
  worker_->Submit(Full("big", 1, 1 << 20));  // held on the worker thread
  store_.WaitUntilBlocked();
  worker_->Submit(Full("small", 1, 4096));  // must not overtake the big write
  worker_->Submit(Prune("small", 1));
  worker_->DeliverInline();  // nothing ran inline
  EXPECT_TRUE(delivered_.empty());
  EXPECT_EQ(store_.Calls().size(), 0u);
  store_.Release();
  worker_->Drain();
  auto calls = store_.Calls();
  ASSERT_EQ(calls.size(), 3u);
  const std::string v11 = Version{1, 1}.ToString();
  EXPECT_EQ(calls[0].what, "full big " + v11);
  EXPECT_EQ(calls[1].what, "full small " + v11);
  EXPECT_EQ(calls[2].what, "prune small " + v11);
  for (const auto& c : calls) EXPECT_NE(c.thread, loop_thread_) << c.what;
  EXPECT_EQ(delivered_, (std::vector<uint64_t>{1, 2, 3}));
  // Idle again: the next small op runs inline.
  worker_->Submit(Prune("small", 2));
  worker_->DeliverInline();
  EXPECT_EQ(store_.Calls().back().thread, loop_thread_);
  EXPECT_EQ(delivered_.back(), 4u);
}

TEST_F(StoreWorkerTest, ASlowInlineWriteSendsTheNextOpsToTheThread) {
  store_.SlowWrites("slow", StoreWorker::kInlineSlow * 4);
  worker_->Submit(Full("slow", 1, 4096));  // inline (the worker is idle), but slow
  worker_->DeliverInline();
  worker_->Submit(Full("next", 1, 4096));  // small and idle again: still goes to the thread
  worker_->Drain();
  auto calls = store_.Calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].thread, loop_thread_);
  EXPECT_NE(calls[1].thread, loop_thread_);
  EXPECT_EQ(delivered_, (std::vector<uint64_t>{1, 2}));
}

TEST_F(StoreWorkerTest, DrainDeliversInlineCompletionsToo) {
  worker_->Submit(Prune("a", 1));
  worker_->Drain();
  EXPECT_EQ(delivered_, (std::vector<uint64_t>{1}));
  EXPECT_TRUE(worker_->idle());
}

}  // namespace
}  // namespace ckpt::agent
