#include "agent/store_worker.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "agent/log.hpp"
#include "common/status.hpp"

namespace ckpt::agent {
namespace {

// Bytes an operation writes (its weight in the backlog bound).
uint64_t WeightOf(const repl::StoreOp& op) {
  using K = repl::StoreOp;
  switch (op.kind) {
    case K::kPutFull:
    case K::kPutGlobal:
    case K::kInstallLocal:
      return op.image.size();
    case K::kStreamAppend:
    case K::kLocalAppend:
      return op.length;
    case K::kPutDelta: {
      uint64_t n = 0;
      for (const ByteRange& r : op.ranges) n += r.length;
      return n;
    }
    default:
      return 0;
  }
}

// Small, fsync-free operations may run on the loop thread (see the header).  The image size
// bounds what the store may write, except for a delta, which the store is asked about (it turns
// into a whole-version write when it compacts its chain; a small delta into a large segment is
// small); reading a global copy (any size) always goes to the thread.
bool RunsInline(SegmentStore* store, const repl::StoreOp& op, uint64_t bytes) {
  if (op.kind == repl::StoreOp::kLoadGlobal || op.fsync) return false;
  const uint64_t writes =
      op.kind == repl::StoreOp::kPutDelta
          ? store->DeltaWriteBytes(op.meta.name, op.base, op.ranges, op.image.size())
          : std::max<uint64_t>(bytes, op.image.size());
  return writes <= StoreWorker::kInlineMaxBytes;
}

}  // namespace

Result<std::unique_ptr<StoreWorker>> StoreWorker::Start(SegmentStore* store, qb_loop_t* loop,
                                                        DoneFn on_done) {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return Err(Code::kIo, std::string("eventfd: ") + std::strerror(errno));
  std::unique_ptr<StoreWorker> w(new StoreWorker(store, loop, std::move(on_done), fd));
  // HIGH like CPG deliveries: completions release acknowledgements and replies.
  int rc = qb_loop_poll_add(loop, QB_LOOP_HIGH, fd, POLLIN, w.get(), &StoreWorker::OnEvent);
  if (rc != 0) {
    close(fd);  // no thread was started: the destructor has nothing to join
    return Err(Code::kIo, std::string("store worker poll: ") + std::strerror(-rc));
  }
  w->thread_ = std::thread([p = w.get()] { p->ThreadMain(); });
  return w;
}

StoreWorker::StoreWorker(SegmentStore* store, qb_loop_t* loop, DoneFn on_done, int event_fd)
    : store_(store), loop_(loop), on_done_(std::move(on_done)), event_fd_(event_fd) {}

StoreWorker::~StoreWorker() {
  if (thread_.joinable()) {
    Drain();
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    thread_.join();
    qb_loop_poll_del(loop_, event_fd_);
    close(event_fd_);
  }
}

uint64_t StoreWorker::Submit(repl::StoreOp op) {
  Job job;
  job.seq = ++submitted_seq_;
  job.bytes = WeightOf(op);
  job.op = std::move(op);
  backlog_bytes_ += job.bytes;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (jobs_.empty() && !running_ && std::chrono::steady_clock::now() >= inline_paused_until_ &&
        RunsInline(store_, job.op, job.bytes)) {
      // Nothing before it is pending, and only this thread submits: the order is kept.
      lock.unlock();
      Completion done = RunInline(job);
      lock.lock();
      finished_.push_back(std::move(done));
      inline_done_ = true;
      return submitted_seq_;
    }
    jobs_.push_back(std::move(job));
  }
  work_cv_.notify_one();
  return submitted_seq_;
}

StoreWorker::Completion StoreWorker::RunInline(Job& job) {
  const auto start = std::chrono::steady_clock::now();
  struct rusage before;
  const bool have_before = getrusage(RUSAGE_THREAD, &before) == 0;
  Completion done = Run(job);
  // A write that slept in the kernel (dirty-page throttling, a journal commit, a stalled disk)
  // must not stall the loop again: the next ops go to the thread for a while.  A slow op that
  // only lost the CPU (voluntary switches unchanged) says nothing about the disk.
  const auto took = std::chrono::steady_clock::now() - start;
  struct rusage after;
  if (took > kInlineSlow && have_before && getrusage(RUSAGE_THREAD, &after) == 0 &&
      after.ru_nvcsw > before.ru_nvcsw) {
    inline_paused_until_ = start + took + kInlinePause;
    CKPT_LOG_INFO(
        "a store op of %s waited %lld ms on the loop thread: store ops run on the store thread "
        "only for the next %lld ms",
        job.op.meta.name.c_str(),
        static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()),
        static_cast<long long>(kInlinePause.count()));
  }
  return done;
}

void StoreWorker::DeliverInline() {
  if (!inline_done_) return;
  inline_done_ = false;
  Deliver();
}

void StoreWorker::Drain() {
  CKPT_ASSERT(!delivering_);  // never from inside a completion callback
  while (!idle()) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, [&] { return !finished_.empty(); });
    }
    Deliver();
  }
}

void StoreWorker::ThreadMain() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stop_ and nothing left
      job = std::move(jobs_.front());
      jobs_.pop_front();
      running_ = true;
    }
    Completion done = Run(job);
    job.op.image = BlockImage();  // drop the snapshot here, not on the loop thread
    bool was_empty;
    {
      std::lock_guard<std::mutex> lock(mu_);
      was_empty = finished_.empty();
      finished_.push_back(std::move(done));
      running_ = false;
    }
    done_cv_.notify_all();
    if (was_empty) {
      uint64_t one = 1;
      ssize_t n = write(event_fd_, &one, sizeof one);
      (void)n;  // EAGAIN only when the counter is saturated: the loop is woken anyway
    }
  }
}

StoreWorker::Completion StoreWorker::Run(Job& job) {
  using K = repl::StoreOp;
  repl::StoreOp& op = job.op;
  Completion c;
  c.seq = job.seq;
  c.kind = op.kind;
  c.name = op.meta.name;
  c.version = op.version;
  c.token = op.token;
  c.bytes = job.bytes;
  const std::string& name = op.meta.name;
  switch (op.kind) {
    case K::kPutMeta:
      c.status = store_->PutMeta(op.meta, op.fsync);
      break;
    case K::kPutFull:
      c.status = store_->PutFull(name, op.version, op.image, op.fsync);
      break;
    case K::kPutDelta:
      c.status = store_->PutDelta(name, op.version, op.base, op.ranges, op.image, op.fsync);
      break;
    case K::kPrune:
      c.status = store_->Prune(name, op.version);
      break;
    case K::kDropSegment:
      c.status = store_->DropSegment(name, store_->has_global());
      break;
    case K::kPutGlobal:
      c.status = store_->PutGlobal(op.meta, op.version, op.image);
      break;
    case K::kLoadGlobal:
      c.loaded = store_->LoadGlobal(name);
      c.status = c.loaded->ok() ? Status::Ok() : c.loaded->status();
      break;
    case K::kInstallLocal:
      c.status = store_->InstallLocal(name, op.image, op.meta.uid, op.meta.gid, op.meta.mode);
      break;
    case K::kEnsureLocal:
      c.status = store_->EnsureLocal(name, op.meta.size, op.meta.uid, op.meta.gid, op.meta.mode);
      break;
    case K::kRemoveLocal:
      c.status = store_->RemoveLocal(name);
      break;
    case K::kStreamBegin:
      c.status = store_->BeginFull(name, op.version, op.meta.size, op.checksum);
      break;
    case K::kStreamAppend:
      c.status = store_->AppendFull(name, op.version, op.image, op.offset, op.length);
      break;
    case K::kStreamFinish:
      c.status = store_->FinishFull(name, op.version, op.fsync);
      break;
    case K::kStreamAbort:
      store_->AbortFull(name, op.version);
      break;
    case K::kLocalBegin:
      c.status = store_->BeginLocal(name, op.meta.size);
      break;
    case K::kLocalAppend:
      c.status = store_->AppendLocal(name, op.image, op.offset, op.length);
      break;
    case K::kLocalFinish:
      c.status = store_->FinishLocal(name, op.meta.uid, op.meta.gid, op.meta.mode);
      break;
    case K::kLocalAbort:
      store_->AbortLocal(name);
      break;
  }
  return c;
}

void StoreWorker::Deliver() {
  if (delivering_) return;  // on_done re-entered us (e.g. through Drain); the outer call continues
  delivering_ = true;
  for (;;) {
    std::vector<Completion> batch;
    {
      std::lock_guard<std::mutex> lock(mu_);
      batch.swap(finished_);
    }
    if (batch.empty()) break;
    for (const Completion& c : batch) {
      CKPT_ASSERT(c.seq == completed_seq_ + 1);
      completed_seq_ = c.seq;
      CKPT_ASSERT(backlog_bytes_ >= c.bytes);
      backlog_bytes_ -= c.bytes;
    }
    on_done_(batch);
  }
  delivering_ = false;
}

int32_t StoreWorker::OnEvent(int32_t fd, int32_t, void* data) {
  uint64_t n;
  while (read(fd, &n, sizeof n) > 0) {
  }
  static_cast<StoreWorker*>(data)->Deliver();
  return 0;
}

}  // namespace ckpt::agent
