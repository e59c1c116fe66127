// StoreWorker: performs the engine's store operations on one background thread, so that writing
// segment versions (up to GiBs, with fsync when asked) never stalls ckptd's loop: CPG deliveries
// and client requests keep flowing while the disk works.
//
// Contract:
//  - Submit() is called from the loop thread only.  Operations run strictly in submission order
//    (the store's on-disk sequence is the engine's: a delta follows its base, a prune follows the
//    version it keeps).  Each Submit() returns a sequence number; sequence numbers increase by one.
//  - Every operation yields a Completion, delivered on the loop thread (from a qb_loop poll
//    handler on an eventfd) in submission order.  completed_seq() is the sequence number of the
//    last delivered completion: every operation up to it has finished.
//  - A small operation (at most kInlineMaxBytes written, no fsync; for a delta, what the store
//    says it would write, SegmentStore::DeltaWriteBytes) submitted while nothing is queued or
//    running runs at once on the loop thread: a thread hand-off and a wake-up each way cost more
//    than writing 64 KiB to the page cache, and on a busy node every wake-up is a context
//    switch.  Its completion is delivered by the next DeliverInline() (the caller's, once
//    it has submitted a batch), never from inside Submit().  An inline op that took longer than
//    kInlineSlow and slept in the kernel meanwhile (dirty-page throttling, a journal commit, a
//    stalled disk; not mere preemption) sends every op to the thread for kInlinePause, so a slow
//    disk does not stall the loop twice in a row.
//  - Only one thread at a time touches the SegmentStore: the worker, or the loop thread while the
//    worker has nothing queued or running.  Images in operations are copy-on-write snapshots
//    (store/block_image.hpp): the loop may keep writing the originals.
//  - Drain() blocks until every submitted operation has run and delivers their completions
//    before returning (engine rebuild, shutdown).  The destructor drains, then joins.
//  - Limits: backlog_bytes()/backlog_ops() describe the queued work, so the daemon can stop
//    reading client requests while the disk is behind (bounded memory).
#pragma once

#include <qb/qbloop.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "replication/engine.hpp"
#include "store/segment_store.hpp"

namespace ckpt::agent {

class StoreWorker {
 public:
  struct Completion {
    uint64_t seq = 0;
    repl::StoreOp::Kind kind = repl::StoreOp::kPutMeta;
    std::string name;
    Version version;
    uint64_t token = 0;
    uint64_t bytes = 0;  // the op's share of backlog_bytes()
    Status status;
    // kLoadGlobal only: what the store found.
    std::optional<Result<std::optional<LoadedSegment>>> loaded;
  };
  using DoneFn = std::function<void(std::vector<Completion>& done)>;

  // Starts the thread.  `store` must outlive the worker.  Errors: kIo (eventfd or poll setup).
  static Result<std::unique_ptr<StoreWorker>> Start(SegmentStore* store, qb_loop_t* loop,
                                                    DoneFn on_done);
  ~StoreWorker();
  StoreWorker(const StoreWorker&) = delete;
  StoreWorker& operator=(const StoreWorker&) = delete;

  static constexpr uint64_t kInlineMaxBytes = 128 * 1024;
  static constexpr std::chrono::milliseconds kInlineSlow{20};
  static constexpr std::chrono::milliseconds kInlinePause{1000};

  uint64_t Submit(repl::StoreOp op);
  // Delivers the completions of operations Submit() ran on the loop thread (if any).
  void DeliverInline();
  void Drain();

  uint64_t submitted_seq() const { return submitted_seq_; }
  uint64_t completed_seq() const { return completed_seq_; }
  bool idle() const { return completed_seq_ == submitted_seq_; }
  uint64_t backlog_bytes() const { return backlog_bytes_; }
  uint64_t backlog_ops() const { return submitted_seq_ - completed_seq_; }

 private:
  StoreWorker(SegmentStore* store, qb_loop_t* loop, DoneFn on_done, int event_fd);
  struct Job {
    uint64_t seq = 0;
    uint64_t bytes = 0;
    repl::StoreOp op;
  };
  void ThreadMain();
  Completion Run(Job& job);
  Completion RunInline(Job& job);  // loop thread: Run() plus the slow-disk check (kInlineSlow)
  void Deliver();                  // loop thread: hands finished completions to on_done
  static int32_t OnEvent(int32_t fd, int32_t revents, void* data);

  SegmentStore* const store_;
  qb_loop_t* const loop_;
  const DoneFn on_done_;
  const int event_fd_;
  std::thread thread_;

  // Shared with the thread (guarded by mu_).
  std::mutex mu_;
  std::condition_variable work_cv_;  // jobs_ gained work or stop_
  std::condition_variable done_cv_;  // finished_ gained entries (for Drain)
  std::deque<Job> jobs_;
  std::vector<Completion> finished_;
  bool running_ = false;  // the thread is executing a job it took from jobs_
  bool stop_ = false;

  // Loop thread only.
  uint64_t submitted_seq_ = 0;
  uint64_t completed_seq_ = 0;
  uint64_t backlog_bytes_ = 0;
  bool delivering_ = false;
  bool inline_done_ = false;  // finished_ holds completions of inline runs
  std::chrono::steady_clock::time_point inline_paused_until_{};  // see kInlineSlow
};

}  // namespace ckpt::agent
