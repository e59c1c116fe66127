// libckpt: the client side of the C API in include/ckpt/ckpt.h, over libqb IPC to ckptd.
//
// Framing: every request is qb_ipc_request_header {id = ipc::Op, size} + ipc::EncodeRequest body;
// every response is qb_ipc_response_header {id = the same Op, size, error} + ipc::EncodeResponse
// body; ckptd's asynchronous errors arrive on libqb's event channel as
// qb_ipc_response_header {id = ipc::kAsyncError} + EncodeResponse(status, AsyncErrorEvent).
//
// Decisions beyond ckpt.h (see also the comments of each function):
//  - Waiting: every request waits for its own timeout plus kMarginMs (ckptd answers within the
//    timeout it was given).  When even that expires, or a multi-part commit is cut off halfway,
//    the connection can no longer be trusted (a late response would be taken for the answer to
//    the next request, or ckptd holds half a commit): libckpt drops it and every later call on
//    the client returns CKPT_ERR_UNAVAILABLE.  ckptd then closes the client's handles.
//  - ckpt_last_error(NULL) returns the message of the last failed ckpt_connect() of the thread
//    (there is no client to keep it in).
//  - ckpt_commit with nothing dirty: asynchronous = no-op returning the current version;
//    CKPT_COMMIT_SYNC = waits for the replicas like ckpt_flush (so "sync" always means "the
//    returned version is replicated").
//  - After an asynchronous failure reported for a segment (or a failed sync commit other than
//    CKPT_ERR_TIMEOUT / CKPT_ERR_REPLICAS, which are committed locally), the handle no longer knows
//    which seq ckptd expects nor which bytes reached it: the next commit asks ckptd (STAT) for the
//    latest seq and sends the whole segment.
//  - The environment variable CKPT_IPC_SERVICE (ignored in setuid programs) overrides the libqb
//    service name "ckptd": for tests and for several ckptd instances on one development host.
//  - ckpt_disconnect sends CLOSE for every open segment first, so queued asynchronous commits are
//    processed before the connection goes; segment handles are freed and must not be used after.
//  - Batching of asynchronous commits.  Every request wakes ckptd (libqb signals each message on
//    a socket), and on a busy node the woken daemon preempts the application, so one IPC message
//    per small commit costs the application far more than the copy.  Instead, an asynchronous
//    commit of at most kBatchCommitBytes (or any single-part one that finds the request ring full)
//    copies its dirty bytes into the segment's DeferredCommit (client/deferred_commit.hpp), on top
//    of earlier deferred commits, and returns.  A flusher thread (one per client, started at the
//    first deferral) sends each segment's buffer as ONE commit (kCommitCoalesced, labelled with the
//    seq of the last commit in it) every kFlushTickUs while there is work, and as soon as the ring
//    has room.  Replicas and restores see the state after a commit, never a torn mix; the seqs
//    inside a batch are never versions of their own, so this is done only for segments with
//    versions_kept == 1 (where each version replaces the previous one anyway).  Bounded: a buffer
//    holds at most one part (c->max_commit_part bytes, kMaxRangesPerPart ranges); a commit that
//    does not fit waits.
//  - Locks: `mu` guards client and segment state, `conn_mu` the libqb connection.  The caller's
//    thread holds both for every call (ClientLock) except a deferred commit (mu only); ClientLock
//    first waits until no batch is in flight, and sends what is deferred before any other request,
//    so nothing overtakes a deferred commit.  Callers still use a client from one thread at a time.
#include <ckpt/ckpt.h>
#include <errno.h>
#include <fcntl.h>
#include <qb/qbipcc.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "client/commit_plan.hpp"
#include "client/deferred_commit.hpp"
#include "client/dirty_ranges.hpp"
#include "common/ipc_messages.hpp"
#include "common/names.hpp"
#include "common/status.hpp"
#include "common/version.hpp"

#define CKPT_API extern "C" __attribute__((visibility("default")))

namespace {

using namespace ckpt;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kMarginMs = 5000;         // added to every op's own timeout
constexpr uint32_t kQuickOpMs = 30000;       // ops without a timeout of their own
constexpr uint32_t kDefaultSyncMs = 30000;   // ckpt.h: 0 = 30000 for commit/flush/release
constexpr uint32_t kDefaultPullMs = 60000;   // ckpt.h: 0 = 60000 for pull
constexpr uint32_t kRingFullWaitMs = 30000;  // bound on retrying a full request ring
constexpr uint32_t kReplyMarginBytes = 64 * 1024;
constexpr size_t kMaxRangesPerPart = 1000;  // one iovec each; IOV_MAX is 1024
constexpr uint64_t kRangeWireBytes = 16;    // offset + length
constexpr uint32_t kListPage = 256;
constexpr uint64_t kBatchCommitBytes = 16 * 1024;  // async commits up to this size are batched
constexpr long kFlushTickUs = 100;                 // flusher period while batches keep coming
constexpr int kFlusherIdleTicks = 50;              // ticks without work before it sleeps

thread_local std::string t_connect_error;

}  // namespace

struct ckpt_segment;

struct ckpt_client {
  qb_ipcc_connection_t* conn = nullptr;
  bool dead = false;  // connection dropped: every call returns kUnavailable
  std::string dead_reason;
  std::string last_error;
  std::unique_ptr<uint8_t[]> buf;  // responses and events
  size_t buf_size = 0;
  uint32_t self_nodeid = 0;
  uint64_t max_commit_part = ipc::kMaxCommitPartBytes;
  uint64_t max_read_piece = ipc::kMaxMessageBytes - kReplyMarginBytes;
  std::vector<ckpt_segment*> segments;
  // See the top of the file.  Recursive: public functions call each other (commit -> flush).
  std::recursive_mutex mu;                   // client and segment state
  std::recursive_mutex conn_mu;              // `conn` (taken after mu, never the other way round)
  std::condition_variable_any flusher_wake;  // (mu) work for an idle flusher, or stop
  std::condition_variable_any batch_done;    // (mu) batch_in_flight went false
  std::thread flusher;                       // started at the first deferred commit
  bool stop_flusher = false;                 // (mu)
  bool flusher_idle = false;                 // (mu) waiting on flusher_wake: notify it
  bool batch_in_flight = false;  // (mu) the flusher is sending a batch without holding mu
};

struct ckpt_segment {
  ckpt_client* client = nullptr;
  std::string name;
  uint64_t handle = 0;
  uint8_t* data = nullptr;
  uint64_t size = 0;
  Version version;  // (epoch of the handle, last seq committed through it)
  client::DirtyRanges dirty;
  Status pending;                   // asynchronous failure not yet returned
  bool resync = false;              // seq/contents at ckptd unknown: STAT and send everything
  client::DeferredCommit deferred;  // async commits not yet in ckptd's ring (see the top)
  bool may_coalesce = false;        // versions_kept == 1: commits may be batched
};

// The caller's thread owns the client for one call: state, connection, no batch in flight.
class ClientLock {
 public:
  explicit ClientLock(ckpt_client* c) : state_(c->mu) {
    c->batch_done.wait(state_, [c] { return !c->batch_in_flight; });
    conn_ = std::unique_lock<std::recursive_mutex>(c->conn_mu);
  }

 private:
  std::unique_lock<std::recursive_mutex> state_;
  std::unique_lock<std::recursive_mutex> conn_;
};

namespace {

int Fail(ckpt_client* c, const Status& st) {
  if (c) c->last_error = st.ToString();
  return st.c_code();
}
int FailConnect(const Status& st) {
  t_connect_error = st.ToString();
  return st.c_code();
}

uint32_t OrDefault(uint32_t ms, uint32_t def) { return ms ? ms : def; }
uint32_t WithMargin(uint32_t ms) {
  return ms > UINT32_MAX - kMarginMs ? UINT32_MAX : ms + kMarginMs;
}

void SleepMicros(long us) {
  timespec ts{0, us * 1000};
  nanosleep(&ts, nullptr);
}

// Copies src into dst[cap] NUL-terminated, truncating on a UTF-8 character boundary.
void CopyName(char* dst, size_t cap, const std::string& src) {
  size_t n = std::min(src.size(), cap - 1);
  if (n < src.size()) {
    while (n > 0 && (static_cast<unsigned char>(src[n]) & 0xC0) == 0x80) n--;
  }
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

ckpt_version_t ToC(const Version& v) { return {v.epoch, v.seq}; }

// ---- connection -----------------------------------------------------------------------------

void Drop(ckpt_client* c, std::string reason) {
  if (c->conn) qb_ipcc_disconnect(c->conn);
  c->conn = nullptr;
  c->dead = true;
  c->dead_reason = std::move(reason);
}

Status DeadStatus(ckpt_client* c) {
  return Err(Code::kUnavailable,
             c->dead_reason.empty() ? "not connected to ckptd" : c->dead_reason);
}

// Maps a negative libqb return; drops the connection when libqb says it is gone.
Status IpcError(ckpt_client* c, ssize_t rc, const char* what) {
  int err = static_cast<int>(-rc);
  if (err == ENOMEM) return Err(Code::kNoMemory, std::string(what) + ": out of memory");
  if (err == EMSGSIZE)
    return Err(Code::kTooLarge, std::string(what) + ": message larger than the IPC ring");
  std::string msg = std::string("lost connection to ckptd (") + what + ": " + strerror(err) + ")";
  if (!qb_ipcc_is_connected(c->conn) || err == ENOTCONN || err == EPIPE || err == ECONNRESET ||
      err == ESHUTDOWN) {
    Drop(c, msg);
    return DeadStatus(c);
  }
  return Err(Code::kUnavailable,
             std::string("IPC error with ckptd (") + what + ": " + strerror(err) + ")");
}

void DeliverAsyncError(ckpt_client* c, uint64_t handle, Status st) {
  c->last_error = st.ToString();
  for (ckpt_segment* s : c->segments) {
    if ((handle == 0 || s->handle == handle) && s->pending.ok()) s->pending = st;
  }
}

// Drains ckptd's events without blocking.
void PollEvents(ckpt_client* c) {
  while (!c->dead) {
    ssize_t n = qb_ipcc_event_recv(c->conn, c->buf.get(), c->buf_size, 0);
    if (n < 0) {
      if (n != -EAGAIN && n != -ETIMEDOUT && !qb_ipcc_is_connected(c->conn))
        Drop(c, "lost connection to ckptd");
      return;
    }
    if (static_cast<size_t>(n) < sizeof(qb_ipc_response_header)) continue;
    qb_ipc_response_header hdr;
    std::memcpy(&hdr, c->buf.get(), sizeof hdr);
    if (hdr.id != ipc::kAsyncError) continue;  // unknown events are ignored (forward compat)
    std::span<const uint8_t> body(c->buf.get() + sizeof hdr, n - sizeof hdr);
    ipc::AsyncErrorEvent ev;
    Status st = ipc::DecodeResponse(body, &ev);
    if (st.c_code() < 0) {
      // Outer status carries the error: the handle is unknown, so every segment gets it.
      DeliverAsyncError(c, 0, st);
    } else if (ev.status < 0) {
      DeliverAsyncError(c, ev.handle, Status(static_cast<Code>(ev.status), ev.message));
    }
  }
}

// Sends one request, retrying a full ring until `deadline`.  Events are drained meanwhile so
// ckptd is never blocked on our event ring.
Status SendRetrying(ckpt_client* c, const iovec* iov, size_t n, Clock::time_point deadline) {
  long backoff_us = 10;  // ckptd frees ring room within tens of microseconds when it keeps up
  for (;;) {
    ssize_t rc = qb_ipcc_sendv(c->conn, iov, n);
    if (rc >= 0) return Status::Ok();
    if (rc != -EAGAIN) return IpcError(c, rc, "send");
    if (Clock::now() >= deadline)
      return Err(Code::kTimeout, "ckptd's request queue stayed full (ckptd overloaded or stuck)");
    PollEvents(c);
    if (c->dead) return DeadStatus(c);
    SleepMicros(backoff_us);
    backoff_us = std::min(backoff_us * 2, 250L);
  }
}

// Waits for the response to `op`.  On success *body views c->buf (valid until the next call).
Status RecvResponse(ckpt_client* c, int32_t op, Clock::time_point deadline,
                    std::span<const uint8_t>* body) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      Drop(c, "connection to ckptd dropped after a request got no answer in time");
      return Err(Code::kTimeout, "ckptd did not answer in time");
    }
    int32_t wait = static_cast<int32_t>(std::min<int64_t>(left.count(), 1000));
    ssize_t n = qb_ipcc_recv(c->conn, c->buf.get(), c->buf_size, wait);
    if (n == -ETIMEDOUT || n == -EAGAIN) {
      if (!qb_ipcc_is_connected(c->conn)) {
        Drop(c, "lost connection to ckptd");
        return DeadStatus(c);
      }
      continue;
    }
    if (n < 0) return IpcError(c, n, "receive");
    qb_ipc_response_header hdr;
    if (static_cast<size_t>(n) < sizeof hdr) {
      Drop(c, "connection to ckptd dropped after a truncated response");
      return Err(Code::kProtocol, "truncated response from ckptd");
    }
    std::memcpy(&hdr, c->buf.get(), sizeof hdr);
    if (hdr.id != op || hdr.size != n) {
      Drop(c, "connection to ckptd dropped after an unexpected response");
      return Err(Code::kProtocol, "unexpected response from ckptd (op " + std::to_string(hdr.id) +
                                      ", expected " + std::to_string(op) + ")");
    }
    if (static_cast<size_t>(n) == sizeof hdr && hdr.error < 0)
      return Err(Code::kUnavailable,
                 std::string("ckptd refused the request: ") + strerror(-hdr.error));
    *body = std::span<const uint8_t>(c->buf.get() + sizeof hdr, n - sizeof hdr);
    return Status::Ok();
  }
}

// Frame = libqb request header + encoded fields.  `extra` bytes follow in further iovecs.
template <class Req>
std::vector<uint8_t> Frame(int32_t op, const Req& req, uint64_t extra) {
  std::vector<uint8_t> body = ipc::EncodeRequest(req);
  std::vector<uint8_t> frame(sizeof(qb_ipc_request_header));
  frame.insert(frame.end(), body.begin(), body.end());
  qb_ipc_request_header hdr{};
  hdr.id = op;
  hdr.size = static_cast<int32_t>(frame.size() + extra);
  std::memcpy(frame.data(), &hdr, sizeof hdr);
  return frame;
}

Status CheckAlive(ckpt_client* c) {
  if (c->dead) return DeadStatus(c);
  PollEvents(c);
  if (c->dead) return DeadStatus(c);
  return Status::Ok();
}

// The coalesced COMMIT request for a deferred buffer: *frame + one iovec per extent (views into
// `d`, valid while it lives).
std::vector<iovec> DeferredRequest(uint64_t handle, const client::DeferredCommit& d,
                                   std::vector<uint8_t>* frame) {
  ipc::CommitReq req;
  req.handle = handle;
  req.flags = ipc::kCommitCoalesced;
  req.timeout_ms = kDefaultSyncMs;
  req.expected_seq = d.seq;
  for (auto& [off, bytes] : d.extents()) req.ranges.push_back({off, bytes.size()});
  *frame = Frame(ipc::kCommit, req, d.bytes());
  std::vector<iovec> iov;
  iov.push_back({frame->data(), frame->size()});
  for (auto& [off, bytes] : d.extents())
    iov.push_back({const_cast<uint8_t*>(bytes.data()), bytes.size()});
  return iov;
}

// A deferred commit that could not be sent: the segment's pending error (the next commit
// resyncs and sends the whole segment).
void DeferredFailed(ckpt_segment* s, const Status& st) {
  if (s->pending.ok()) s->pending = st;
  s->resync = true;
  s->deferred.Clear();
}

// Sends s's deferred buffer, retrying a full ring until `deadline`.  Caller holds ClientLock.
Status SendDeferred(ckpt_segment* s, Clock::time_point deadline) {
  ckpt_client* c = s->client;
  if (s->deferred.empty()) return Status::Ok();
  if (c->dead) return DeadStatus(c);
  std::vector<uint8_t> frame;
  std::vector<iovec> iov = DeferredRequest(s->handle, s->deferred, &frame);
  Status st = SendRetrying(c, iov.data(), iov.size(), deadline);
  if (!st.ok()) return DeferredFailed(s, st), st;
  s->deferred.Clear();
  return st;
}

// Sends every deferred buffer of the client (before any other request).  Caller holds ClientLock.
Status DrainDeferred(ckpt_client* c) {
  Status first;
  for (ckpt_segment* s : c->segments) {
    if (s->deferred.empty()) continue;
    Status st = SendDeferred(s, Clock::now() + std::chrono::milliseconds(kRingFullWaitMs));
    if (!st.ok() && first.ok()) first = st;
  }
  return first;
}

// The flusher thread.  Holds mu except while it waits or sends; a batch is taken out of its
// segment under mu (batch_in_flight keeps ClientLock callers out until it is in the ring or put
// back), sent under conn_mu alone, so the application can keep deferring commits meanwhile.
void FlusherMain(ckpt_client* c) {
  std::unique_lock<std::recursive_mutex> state(c->mu);
  long backoff_us = kFlushTickUs;
  int idle_ticks = 0;
  while (!c->stop_flusher) {
    // One round: every segment with a deferred buffer at its start, each sent once.
    std::vector<ckpt_segment*> round;
    if (!c->dead) {
      for (ckpt_segment* x : c->segments)
        if (!x->deferred.empty()) round.push_back(x);
    }
    if (round.empty()) {
      if (++idle_ticks >= kFlusherIdleTicks) {
        c->flusher_idle = true;
        c->flusher_wake.wait(state);
        c->flusher_idle = false;
        idle_ticks = 0;
      } else {
        c->flusher_wake.wait_for(state, std::chrono::microseconds(kFlushTickUs));
      }
      continue;
    }
    idle_ticks = 0;
    bool ring_full = false;
    for (ckpt_segment* s : round) {
      // Segments are closed only under ClientLock, which waits for batch_in_flight == false, so
      // every segment of the round is still open here.
      if (c->stop_flusher || c->dead || s->deferred.empty()) continue;
      client::DeferredCommit batch = std::move(s->deferred);
      s->deferred.Clear();
      const uint64_t handle = s->handle;
      c->batch_in_flight = true;
      state.unlock();
      ssize_t rc;
      {
        std::lock_guard<std::recursive_mutex> conn(c->conn_mu);
        std::vector<uint8_t> frame;
        std::vector<iovec> iov = DeferredRequest(handle, batch, &frame);
        rc = qb_ipcc_sendv(c->conn, iov.data(), iov.size());
      }
      state.lock();
      c->batch_in_flight = false;
      {
        std::lock_guard<std::recursive_mutex> conn(c->conn_mu);  // mu, then conn_mu
        if (rc == -EAGAIN) {  // ring full: put it back under what was deferred meanwhile
          batch.AddNewer(std::move(s->deferred));
          s->deferred = std::move(batch);
          ring_full = true;
        } else if (rc < 0) {
          DeferredFailed(s, IpcError(c, rc, "send"));
        }
        if (!c->dead) PollEvents(c);  // errors of earlier commits become segments' pending
      }
      c->batch_done.notify_all();
      if (ring_full) break;
    }
    if (c->stop_flusher) break;
    if (ring_full) {
      c->flusher_wake.wait_for(state, std::chrono::microseconds(backoff_us));
      backoff_us = std::min(backoff_us * 2, 1000L);
    } else {
      backoff_us = kFlushTickUs;
      c->flusher_wake.wait_for(state, std::chrono::microseconds(kFlushTickUs));
    }
  }
}

// Copies the dirty `ranges` into s's deferred buffer as the next commit (caller holds mu and has
// checked that they fit) and makes sure the flusher will send it.
void Defer(ckpt_segment* s, const std::vector<client::DirtyRanges::Range>& ranges) {
  ckpt_client* c = s->client;
  for (auto& r : ranges) s->deferred.Add(r.offset, {s->data + r.offset, r.length});
  s->version.seq++;
  s->deferred.seq = s->version.seq;
  s->dirty.Clear();
  if (!c->flusher.joinable()) c->flusher = std::thread(FlusherMain, c);
  if (c->flusher_idle) c->flusher_wake.notify_one();
}

// An asynchronous commit of at most kBatchCommitBytes, deferred without touching the connection
// (caller holds mu only).  False: take the ordinary path (which also reports errors).
bool TryBatch(ckpt_segment* s) {
  ckpt_client* c = s->client;
  if (!s->may_coalesce || c->dead || s->resync || !s->pending.ok() || s->dirty.empty())
    return false;
  if (s->dirty.bytes() > kBatchCommitBytes) return false;
  size_t ranges = s->deferred.count() + s->dirty.count();
  if (ranges > kMaxRangesPerPart ||
      s->deferred.bytes_if_added(s->dirty.bytes()) + ranges * kRangeWireBytes > c->max_commit_part)
    return false;
  Defer(s, s->dirty.Ranges());
  return true;
}

void StopFlusher(ckpt_client* c) {
  {
    std::lock_guard<std::recursive_mutex> state(c->mu);
    c->stop_flusher = true;
  }
  c->flusher_wake.notify_all();
  if (c->flusher.joinable()) c->flusher.join();
}

// Request/response round trip.  Returns ckptd's status (>= 0 on success, e.g. kNoCheckpoint).
template <class Req, class Resp>
Status Call(ckpt_client* c, int32_t op, const Req& req, Resp* resp, uint32_t wait_ms) {
  CKPT_RETURN_IF_ERROR(CheckAlive(c));
  if (Status st = DrainDeferred(c); !st.ok() && c->dead) return st;  // else: a segment's error
  auto deadline = Clock::now() + std::chrono::milliseconds(wait_ms);
  std::vector<uint8_t> frame = Frame(op, req, 0);
  if (frame.size() > c->buf_size) return Err(Code::kTooLarge, "request larger than the IPC ring");
  iovec iov{frame.data(), frame.size()};
  CKPT_RETURN_IF_ERROR(SendRetrying(c, &iov, 1, deadline));
  std::span<const uint8_t> body;
  CKPT_RETURN_IF_ERROR(RecvResponse(c, op, deadline, &body));
  return ipc::DecodeResponse(body, resp);
}

// Runs a call and turns a failure into a return code (keeping ckptd's message).
#define CKPT_CALL_OR_FAIL(c, st_expr) \
  Status st = (st_expr);              \
  if (st.c_code() < 0) return Fail((c), st)
#define CKPT_RETURN_IF_ERROR_C(c, st_expr) \
  do {                                     \
    Status _st = (st_expr);                \
    if (!_st.ok()) return Fail((c), _st);  \
  } while (0)

Status CheckName(const char* name) {
  if (!name) return Err(Code::kInvalid, "segment name is NULL");
  return ValidateSegmentName(name);
}

// ---- segment helpers ------------------------------------------------------------------------

// Returns a pending asynchronous failure of the segment (once), else the connection state.
Status EnterSegment(ckpt_segment* s) {
  ckpt_client* c = s->client;
  Status alive = CheckAlive(c);
  if (!s->pending.ok()) {
    Status st = std::move(s->pending);
    s->pending = Status::Ok();
    s->resync = true;
    s->deferred.Clear();  // the resync commit sends the whole segment
    return st;
  }
  return alive;
}

// Learns from ckptd which seq the handle's next commit must carry (after a lost commit).
Status Resync(ckpt_segment* s) {
  ipc::NameReq req{s->name, 0};
  ipc::StatResp resp;
  Status st = Call(s->client, ipc::kStat, req, &resp, kQuickOpMs);
  if (st.c_code() < 0) return st;
  if (resp.info.owner_nodeid != s->client->self_nodeid)
    return Err(Code::kFenced, "segment " + s->name + " is owned by node " +
                                  std::to_string(resp.info.owner_nodeid) + " now");
  if (s->version.epoch == 0) s->version.epoch = resp.info.latest.epoch;
  s->version.seq = resp.info.latest.seq;
  s->resync = false;
  return Status::Ok();
}

Status CheckRange(const ckpt_segment* s, uint64_t offset, uint64_t len) {
  if (offset > s->size || len > s->size - offset)
    return Err(Code::kInvalid, "range [" + std::to_string(offset) + ", +" + std::to_string(len) +
                                   ") is outside the segment (size " + std::to_string(s->size) +
                                   ")");
  return Status::Ok();
}

void Unmap(ckpt_segment* s) {
  if (s->data) munmap(s->data, s->size);
  s->data = nullptr;
}

void CloseSegment(ckpt_segment* s, bool tell_daemon) {
  ckpt_client* c = s->client;
  if (tell_daemon && !c->dead) {
    ipc::HandleReq req{s->handle, 0};
    ipc::EmptyMsg resp;
    Status st = Call(c, ipc::kClose, req, &resp, kQuickOpMs);
    if (st.c_code() < 0) c->last_error = st.ToString();
  }
  Unmap(s);
  auto& v = c->segments;
  v.erase(std::remove(v.begin(), v.end(), s), v.end());
  delete s;
}

// ---- filling the C structs ------------------------------------------------------------------

void FillSegmentInfo(const ipc::SegmentInfo& in, ckpt_segment_info_t* out) {
  std::memset(out, 0, sizeof *out);
  CopyName(out->name, sizeof out->name, in.name);
  out->size = in.size;
  out->owner_nodeid = in.owner_nodeid;
  CopyName(out->owner_name, sizeof out->owner_name, in.owner_name);
  out->latest = ToC(in.latest);
  out->epoch = in.epoch;
  out->replicas = in.replicas;
  out->versions_kept = in.versions_kept;
  out->durability = in.durability;
  out->compression = in.compression;
  out->uid = in.uid;
  out->gid = in.gid;
  out->mode = in.mode;
  out->acked_replicas = in.acked_replicas;
  size_t n = std::min(in.holders.size(), std::size(out->holders));
  out->n_holders = static_cast<uint32_t>(n);
  for (size_t i = 0; i < n; i++) {
    const auto& h = in.holders[i];
    auto& o = out->holders[i];
    o.nodeid = h.nodeid;
    CopyName(o.node_name, sizeof o.node_name, h.node_name);
    o.version = ToC(h.version);
    o.live = h.live;
    o.is_owner = h.is_owner;
    o.is_target = h.is_target;
  }
}

}  // namespace

// ---- connection -------------------------------------------------------------------------------

CKPT_API int ckpt_connect(ckpt_client_t** out) {
  if (!out) return FailConnect(Err(Code::kInvalid, "ckpt_connect: out is NULL"));
  *out = nullptr;
  std::unique_ptr<ckpt_client> c(new (std::nothrow) ckpt_client);
  if (!c) return FailConnect(Err(Code::kNoMemory, "out of memory"));
  const char* service = secure_getenv("CKPT_IPC_SERVICE");
  if (!service || !*service) service = ipc::kServiceName;
  c->conn = qb_ipcc_connect(service, ipc::kMaxMessageBytes);
  if (!c->conn) {
    int err = errno;
    if (err == EACCES || err == EPERM)
      return FailConnect(Err(Code::kPermission, "ckptd refused the connection for uid " +
                                                    std::to_string(getuid()) +
                                                    ": permission denied"));
    if (err == ENOMEM)
      return FailConnect(Err(Code::kNoMemory, "cannot connect to ckptd: out of memory"));
    return FailConnect(
        Err(Code::kUnavailable,
            std::string("cannot connect to ckptd: is it running? (") + strerror(err) + ")"));
  }
  int32_t bs = qb_ipcc_get_buffer_size(c->conn);
  c->buf_size = bs > 0 ? static_cast<size_t>(bs) : ipc::kMaxMessageBytes;
  c->buf.reset(new (std::nothrow) uint8_t[c->buf_size]);
  if (!c->buf) {
    qb_ipcc_disconnect(c->conn);
    return FailConnect(Err(Code::kNoMemory, "out of memory"));
  }
  ipc::HelloReq req{static_cast<uint32_t>(getpid())};
  ipc::HelloResp resp;
  Status st = Call(c.get(), ipc::kHello, req, &resp, kQuickOpMs);
  if (st.c_code() < 0) {
    if (c->conn) qb_ipcc_disconnect(c->conn);
    if (st.code() == Code::kProtocol)
      st = Err(Code::kProtocol,
               "ckptd speaks another IPC version or sent garbage (" + st.ToString() + ")");
    return FailConnect(st);
  }
  c->self_nodeid = resp.self_nodeid;
  uint64_t max_msg = c->buf_size;
  if (resp.max_message_bytes) max_msg = std::min<uint64_t>(max_msg, resp.max_message_bytes);
  max_msg = std::min<uint64_t>(max_msg, ipc::kMaxMessageBytes);
  if (max_msg <= 2 * kReplyMarginBytes) {
    qb_ipcc_disconnect(c->conn);
    return FailConnect(Err(Code::kProtocol, "ckptd's IPC messages are too small (" +
                                                std::to_string(max_msg) + " bytes)"));
  }
  c->max_commit_part = max_msg - kReplyMarginBytes;
  c->max_read_piece = max_msg - kReplyMarginBytes;
  *out = c.release();
  return CKPT_OK;
}

CKPT_API void ckpt_disconnect(ckpt_client_t* client) {
  if (!client) return;
  {
    ClientLock lk(client);
    while (!client->segments.empty()) CloseSegment(client->segments.back(), true);
  }
  StopFlusher(client);
  if (client->conn) qb_ipcc_disconnect(client->conn);
  delete client;
}

CKPT_API const char* ckpt_last_error(const ckpt_client_t* client) {
  return client ? client->last_error.c_str() : t_connect_error.c_str();
}

// ---- the owner's segment ----------------------------------------------------------------------

CKPT_API int ckpt_open(ckpt_client_t* client, const char* name, const ckpt_open_options_t* options,
                       ckpt_segment_t** out) {
  if (!client) return CKPT_ERR_INVALID;
  ClientLock lock(client);
  if (!out) return Fail(client, Err(Code::kInvalid, "ckpt_open: out is NULL"));
  *out = nullptr;
  if (Status st = CheckName(name); !st.ok()) return Fail(client, st);
  ckpt_open_options_t opt{};
  if (options) opt = *options;
  if (opt.flags & ~static_cast<uint32_t>(CKPT_OPEN_CREATE | CKPT_OPEN_PULL | CKPT_OPEN_COMPRESS))
    return Fail(client, Err(Code::kInvalid, "unknown open flags"));
  if (opt.durability > CKPT_DURABILITY_FSYNC)
    return Fail(client, Err(Code::kInvalid, "unknown durability"));
  if (opt.mode & ~0777u) return Fail(client, Err(Code::kInvalid, "mode must be within 0777"));
  if ((opt.flags & CKPT_OPEN_CREATE) && opt.size == 0)
    return Fail(client, Err(Code::kInvalid, "a size is required with CKPT_OPEN_CREATE"));
  if (opt.size > static_cast<uint64_t>(SIZE_MAX) / 2)
    return Fail(client, Err(Code::kTooLarge, "segment size does not fit in memory"));

  ipc::OpenReq req;
  req.name = name;
  req.size = opt.size;
  req.replicas = opt.replicas;
  req.versions_kept = opt.versions_kept;
  req.durability = opt.durability;
  req.mode = opt.mode;
  req.flags = opt.flags;
  req.pull_timeout_ms = (opt.flags & CKPT_OPEN_PULL)
                            ? OrDefault(opt.pull_timeout_ms, kDefaultPullMs)
                            : opt.pull_timeout_ms;
  uint32_t wait = (opt.flags & CKPT_OPEN_PULL) ? WithMargin(req.pull_timeout_ms) : kQuickOpMs;
  ipc::OpenResp resp;
  CKPT_CALL_OR_FAIL(client, Call(client, ipc::kOpen, req, &resp, wait));

  std::unique_ptr<ckpt_segment> s(new (std::nothrow) ckpt_segment);
  if (!s) return Fail(client, Err(Code::kNoMemory, "out of memory"));
  s->client = client;
  s->name = name;
  s->handle = resp.handle;
  s->size = resp.size;
  s->version = resp.version;
  s->may_coalesce = resp.versions_kept == 1;
  client->segments.push_back(s.get());  // CloseSegment() below removes it again

  std::string error;
  int fd = open(resp.shm_path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  struct stat sb {};
  if (fd < 0) {
    error = "cannot open " + resp.shm_path + ": " + strerror(errno);
  } else if (fstat(fd, &sb) != 0) {
    error = "cannot stat " + resp.shm_path + ": " + strerror(errno);
  } else if (static_cast<uint64_t>(sb.st_size) != resp.size) {
    error = resp.shm_path + " has " + std::to_string(sb.st_size) + " bytes, ckptd said " +
            std::to_string(resp.size);
  } else if (resp.size > 0) {
    void* p = mmap(nullptr, resp.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
      error = "cannot map " + resp.shm_path + ": " + strerror(errno);
    else
      s->data = static_cast<uint8_t*>(p);
  }
  if (fd >= 0) close(fd);
  if (!error.empty()) {
    CloseSegment(s.release(), true);
    return Fail(client, Err(Code::kIo, error));
  }
  *out = s.release();
  return CKPT_OK;
}

CKPT_API void* ckpt_segment_data(ckpt_segment_t* segment) {
  return segment ? segment->data : nullptr;
}

CKPT_API uint64_t ckpt_segment_size(const ckpt_segment_t* segment) {
  return segment ? segment->size : 0;
}

CKPT_API ckpt_version_t ckpt_segment_version(const ckpt_segment_t* segment) {
  return segment ? ToC(segment->version) : ckpt_version_t{0, 0};
}

CKPT_API int ckpt_write(ckpt_segment_t* segment, uint64_t offset, const void* buf, uint64_t len) {
  if (!segment) return CKPT_ERR_INVALID;
  ckpt_client* c = segment->client;
  if (!buf && len > 0) return Fail(c, Err(Code::kInvalid, "ckpt_write: buf is NULL"));
  if (Status st = CheckRange(segment, offset, len); !st.ok()) return Fail(c, st);
  if (len == 0) return CKPT_OK;
  std::memmove(segment->data + offset, buf, len);  // buf may point into the mapping
  segment->dirty.Add(offset, len);
  return CKPT_OK;
}

CKPT_API int ckpt_mark_dirty(ckpt_segment_t* segment, uint64_t offset, uint64_t len) {
  if (!segment) return CKPT_ERR_INVALID;
  if (Status st = CheckRange(segment, offset, len); !st.ok()) return Fail(segment->client, st);
  segment->dirty.Add(offset, len);
  return CKPT_OK;
}

CKPT_API int ckpt_flush(ckpt_segment_t* segment, uint32_t timeout_ms) {
  if (!segment) return CKPT_ERR_INVALID;
  ClientLock lock(segment->client);
  ckpt_client* c = segment->client;
  if (Status st = EnterSegment(segment); !st.ok()) return Fail(c, st);
  uint32_t t = OrDefault(timeout_ms, kDefaultSyncMs);
  ipc::HandleReq req{segment->handle, t};
  ipc::EmptyMsg resp;
  CKPT_CALL_OR_FAIL(c, Call(c, ipc::kFlush, req, &resp, WithMargin(t)));
  return CKPT_OK;
}

CKPT_API int ckpt_flush_all(ckpt_client_t* client, uint32_t timeout_ms) {
  if (!client) return CKPT_ERR_INVALID;
  ClientLock lock(client);
  // A pending error of an earlier asynchronous commit is this call's answer, as for ckpt_flush
  // (the first one found; the others stay pending for their segments' next calls).
  for (ckpt_segment* s : client->segments)
    if (Status st = EnterSegment(s); !st.ok()) return Fail(client, st);
  uint32_t t = OrDefault(timeout_ms, kDefaultSyncMs);
  ipc::FlushAllReq req{t};
  ipc::EmptyMsg resp;
  CKPT_CALL_OR_FAIL(client, Call(client, ipc::kFlushAll, req, &resp, WithMargin(t)));
  return CKPT_OK;
}

// Sends the commit in parts (see commit_plan.hpp).  All parts carry the same expected_seq; all but
// the last are one-way with kCommitMorePartsFollow.  The last is one-way unless sync.
CKPT_API int ckpt_commit(ckpt_segment_t* segment, uint32_t flags, uint32_t timeout_ms,
                         ckpt_version_t* version) {
  if (!segment) return CKPT_ERR_INVALID;
  ckpt_segment* s = segment;
  ckpt_client* c = s->client;
  if (flags & ~static_cast<uint32_t>(CKPT_COMMIT_SYNC | CKPT_COMMIT_ALL))
    return Fail(c, Err(Code::kInvalid, "unknown commit flags"));
  {
    std::lock_guard<std::recursive_mutex> state(c->mu);
    if (flags == 0 && TryBatch(s)) {
      if (version) *version = ToC(s->version);
      return CKPT_OK;
    }
  }
  ClientLock lock(c);
  if (Status st = EnterSegment(s); !st.ok()) return Fail(c, st);
  if (s->resync) {
    if (Status st = Resync(s); st.c_code() < 0) return Fail(c, st);
    flags |= CKPT_COMMIT_ALL;
  }
  const bool sync = flags & CKPT_COMMIT_SYNC;
  std::vector<client::DirtyRanges::Range> ranges;
  if (flags & CKPT_COMMIT_ALL) {
    if (s->size > 0) ranges.push_back({0, s->size});
  } else {
    ranges = s->dirty.Ranges();
  }
  if (ranges.empty()) {
    if (sync) {
      if (int rc = ckpt_flush(s, timeout_ms); rc < 0) return rc;
    }
    if (version) *version = ToC(s->version);
    return CKPT_OK;
  }

  const uint32_t t = OrDefault(timeout_ms, kDefaultSyncMs);
  const uint64_t seq = s->version.seq + 1;
  auto parts =
      client::PlanCommitParts(ranges, c->max_commit_part, kMaxRangesPerPart, kRangeWireBytes);
  // An asynchronous single-part commit may be deferred (see the top of this file) when it fits
  // in one coalesced commit together with what is deferred already.
  const bool deferrable = !sync && s->may_coalesce && parts.size() == 1 &&
                          s->deferred.count() + ranges.size() <= kMaxRangesPerPart &&
                          s->deferred.bytes_if_added(parts[0].data_bytes) +
                                  (s->deferred.count() + ranges.size()) * kRangeWireBytes <=
                              c->max_commit_part;
  auto defer = [&] {
    Defer(s, ranges);
    if (version) *version = ToC(s->version);
    return CKPT_OK;
  };
  if (!s->deferred.empty()) {
    if (deferrable) return defer();  // never overtake what is deferred
    auto deadline = Clock::now() + std::chrono::milliseconds(kRingFullWaitMs);
    if (Status st = SendDeferred(s, deadline); !st.ok()) {
      s->pending = Status::Ok();  // returned now, not by the next call
      return Fail(c, st);
    }
  }
  std::vector<iovec> iov;
  for (size_t i = 0; i < parts.size(); i++) {
    const bool last = i + 1 == parts.size();
    ipc::CommitReq req;
    req.handle = s->handle;
    req.flags = last ? (sync ? ipc::kCommitSync : 0) : ipc::kCommitMorePartsFollow;
    req.timeout_ms = t;
    req.expected_seq = seq;
    for (auto& r : parts[i].ranges) req.ranges.push_back({r.offset, r.length});
    std::vector<uint8_t> frame = Frame(ipc::kCommit, req, parts[i].data_bytes);
    iov.clear();
    iov.push_back({frame.data(), frame.size()});
    for (auto& r : parts[i].ranges) iov.push_back({s->data + r.offset, r.length});

    if (!c->dead) PollEvents(c);
    if (c->dead) return Fail(c, DeadStatus(c));
    if (deferrable) {  // one attempt: a full ring defers the commit instead of waiting
      ssize_t rc = qb_ipcc_sendv(c->conn, iov.data(), iov.size());
      if (rc == -EAGAIN) return defer();
      if (rc < 0) return Fail(c, IpcError(c, rc, "send"));
      continue;
    }
    const uint32_t wait = (last && sync) ? WithMargin(t) : kRingFullWaitMs;
    auto deadline = Clock::now() + std::chrono::milliseconds(wait);
    Status st = SendRetrying(c, iov.data(), iov.size(), deadline);
    if (!st.ok()) {
      // ckptd holds the first parts of a commit that will never complete: start over.
      if (i > 0 && !c->dead) Drop(c, "connection to ckptd dropped after a commit was cut off");
      return Fail(c, st);
    }
    if (!last || !sync) continue;
    std::span<const uint8_t> body;
    CKPT_RETURN_IF_ERROR_C(c, RecvResponse(c, ipc::kCommit, deadline, &body));
    ipc::CommitResp resp;
    st = ipc::DecodeResponse(body, &resp);
    if (st.c_code() < 0) {
      // TIMEOUT and REPLICAS: ckptd applied the commit; only the acknowledgements are missing.
      if (st.code() == Code::kTimeout || st.code() == Code::kNotEnoughReplicas) {
        s->version.seq = seq;
        s->dirty.Clear();
        if (version) *version = ToC(s->version);
      } else {
        s->resync = true;  // unknown whether ckptd took it: ask before the next commit
      }
      return Fail(c, st);
    }
    if (!resp.version.empty()) {
      s->version = resp.version;
      s->dirty.Clear();
      if (version) *version = ToC(s->version);
      return CKPT_OK;
    }
  }
  s->version.seq = seq;
  s->dirty.Clear();
  if (version) *version = ToC(s->version);
  return CKPT_OK;
}

CKPT_API void ckpt_close(ckpt_segment_t* segment) {
  if (!segment) return;
  ClientLock lock(segment->client);
  CloseSegment(segment, true);
}

// ---- any node ---------------------------------------------------------------------------------

CKPT_API int ckpt_pull(ckpt_client_t* client, const char* name, uint32_t timeout_ms,
                       ckpt_version_t* version) {
  if (!client) return CKPT_ERR_INVALID;
  ClientLock lock(client);
  if (Status st = CheckName(name); !st.ok()) return Fail(client, st);
  uint32_t t = OrDefault(timeout_ms, kDefaultPullMs);
  ipc::NameReq req{name, t};
  ipc::VersionResp resp;
  CKPT_CALL_OR_FAIL(client, Call(client, ipc::kPull, req, &resp, WithMargin(t)));
  if (version) *version = ToC(st.code() == Code::kNoCheckpoint ? Version{} : resp.version);
  return st.code() == Code::kNoCheckpoint ? CKPT_NO_CHECKPOINT : CKPT_OK;
}

CKPT_API int ckpt_release(ckpt_client_t* client, const char* name, uint32_t timeout_ms) {
  if (!client) return CKPT_ERR_INVALID;
  ClientLock lock(client);
  if (Status st = CheckName(name); !st.ok()) return Fail(client, st);
  uint32_t t = OrDefault(timeout_ms, kDefaultSyncMs);
  ipc::NameReq req{name, t};
  ipc::EmptyMsg resp;
  CKPT_CALL_OR_FAIL(client, Call(client, ipc::kRelease, req, &resp, WithMargin(t)));
  return CKPT_OK;
}

// Large reads go in pieces; the first piece fixes the version the later ones ask for, so the
// caller always gets the bytes of one version.
CKPT_API int ckpt_read(ckpt_client_t* client, const char* name, const ckpt_version_t* version,
                       uint64_t offset, void* buf, uint64_t len, ckpt_version_t* version_out) {
  if (!client) return CKPT_ERR_INVALID;
  ClientLock lock(client);
  if (Status st = CheckName(name); !st.ok()) return Fail(client, st);
  if (!buf && len > 0) return Fail(client, Err(Code::kInvalid, "ckpt_read: buf is NULL"));
  if (len > UINT64_MAX - offset) return Fail(client, Err(Code::kInvalid, "range overflows"));
  ipc::ReadReq req;
  req.name = name;
  if (version) {
    req.has_version = 1;
    req.version = Version{version->epoch, version->seq};
  }
  req.timeout_ms = kQuickOpMs;
  uint64_t done = 0;
  do {
    uint64_t n = std::min<uint64_t>(len - done, client->max_read_piece);
    req.offset = offset + done;
    req.length = n;
    ipc::ReadResp resp;
    CKPT_CALL_OR_FAIL(client, Call(client, ipc::kRead, req, &resp, WithMargin(kQuickOpMs)));
    if (st.code() == Code::kNoCheckpoint) {
      if (version_out) *version_out = ckpt_version_t{0, 0};
      return CKPT_NO_CHECKPOINT;
    }
    if (resp.data.size() != n)
      return Fail(client,
                  Err(Code::kProtocol, "ckptd returned " + std::to_string(resp.data.size()) +
                                           " bytes for a read of " + std::to_string(n)));
    if (req.has_version && resp.version != req.version)
      return Fail(client, Err(Code::kProtocol, "ckptd returned version " + resp.version.ToString() +
                                                   ", asked for " + req.version.ToString()));
    if (n) std::memcpy(static_cast<uint8_t*>(buf) + done, resp.data.data(), n);
    req.has_version = 1;
    req.version = resp.version;
    done += n;
  } while (done < len);
  if (version_out) *version_out = ToC(req.version);
  return CKPT_OK;
}

CKPT_API int ckpt_delete(ckpt_client_t* client, const char* name) {
  if (!client) return CKPT_ERR_INVALID;
  ClientLock lock(client);
  if (Status st = CheckName(name); !st.ok()) return Fail(client, st);
  ipc::NameReq req{name, kQuickOpMs};
  ipc::EmptyMsg resp;
  CKPT_CALL_OR_FAIL(client, Call(client, ipc::kDelete, req, &resp, WithMargin(kQuickOpMs)));
  return CKPT_OK;
}

// ---- inspection -------------------------------------------------------------------------------

CKPT_API int ckpt_stat(ckpt_client_t* client, const char* name, ckpt_segment_info_t* info) {
  if (!client) return CKPT_ERR_INVALID;
  ClientLock lock(client);
  if (!info) return Fail(client, Err(Code::kInvalid, "ckpt_stat: info is NULL"));
  if (Status st = CheckName(name); !st.ok()) return Fail(client, st);
  ipc::NameReq req{name, 0};
  ipc::StatResp resp;
  CKPT_CALL_OR_FAIL(client, Call(client, ipc::kStat, req, &resp, kQuickOpMs));
  FillSegmentInfo(resp.info, info);
  return CKPT_OK;
}

// Pages through ckptd's catalog; an empty catalog gives *infos = NULL, *count = 0.
CKPT_API int ckpt_list(ckpt_client_t* client, ckpt_segment_info_t** infos, size_t* count) {
  if (!client) return CKPT_ERR_INVALID;
  ClientLock lock(client);
  if (!infos || !count) return Fail(client, Err(Code::kInvalid, "ckpt_list: NULL output"));
  *infos = nullptr;
  *count = 0;
  std::vector<ipc::SegmentInfo> all;
  ipc::ListReq req{"", kListPage};
  for (;;) {
    ipc::ListResp resp;
    CKPT_CALL_OR_FAIL(client, Call(client, ipc::kList, req, &resp, kQuickOpMs));
    for (auto& s : resp.segments) {
      if (!all.empty() || !req.start_after.empty()) {
        const std::string& prev = all.empty() ? req.start_after : all.back().name;
        if (s.name <= prev)
          return Fail(client, Err(Code::kProtocol, "ckptd's segment list is not sorted"));
      }
      all.push_back(std::move(s));
    }
    if (!resp.more) break;
    if (resp.segments.empty())
      return Fail(client, Err(Code::kProtocol, "ckptd's segment list does not advance"));
    req.start_after = all.back().name;
  }
  if (all.empty()) return CKPT_OK;
  auto* out = static_cast<ckpt_segment_info_t*>(calloc(all.size(), sizeof(ckpt_segment_info_t)));
  if (!out) return Fail(client, Err(Code::kNoMemory, "out of memory"));
  for (size_t i = 0; i < all.size(); i++) FillSegmentInfo(all[i], &out[i]);
  *infos = out;
  *count = all.size();
  return CKPT_OK;
}

// No versions gives *versions = NULL, *count = 0.
CKPT_API int ckpt_versions(ckpt_client_t* client, const char* name, ckpt_version_info_t** versions,
                           size_t* count) {
  if (!client) return CKPT_ERR_INVALID;
  ClientLock lock(client);
  if (!versions || !count) return Fail(client, Err(Code::kInvalid, "ckpt_versions: NULL output"));
  *versions = nullptr;
  *count = 0;
  if (Status st = CheckName(name); !st.ok()) return Fail(client, st);
  ipc::NameReq req{name, 0};
  ipc::VersionsResp resp;
  CKPT_CALL_OR_FAIL(client, Call(client, ipc::kVersions, req, &resp, kQuickOpMs));
  if (resp.versions.empty()) return CKPT_OK;
  auto* out =
      static_cast<ckpt_version_info_t*>(calloc(resp.versions.size(), sizeof(ckpt_version_info_t)));
  if (!out) return Fail(client, Err(Code::kNoMemory, "out of memory"));
  for (size_t i = 0; i < resp.versions.size(); i++) {
    const auto& v = resp.versions[i];
    out[i] = ckpt_version_info_t{ToC(v.version), v.size, v.checksum, v.stored_unix_ms};
  }
  *versions = out;
  *count = resp.versions.size();
  return CKPT_OK;
}

CKPT_API int ckpt_cluster_status(ckpt_client_t* client, ckpt_cluster_info_t* info) {
  if (!client) return CKPT_ERR_INVALID;
  ClientLock lock(client);
  if (!info) return Fail(client, Err(Code::kInvalid, "ckpt_cluster_status: info is NULL"));
  ipc::EmptyMsg req;
  ipc::ClusterStatusResp resp;
  CKPT_CALL_OR_FAIL(client, Call(client, ipc::kClusterStatus, req, &resp, kQuickOpMs));
  std::memset(info, 0, sizeof *info);
  info->self_nodeid = resp.self_nodeid;
  info->joined = resp.joined;
  size_t n = std::min(resp.members.size(), std::size(info->members));
  info->n_members = static_cast<uint32_t>(n);
  for (size_t i = 0; i < n; i++) {
    const auto& m = resp.members[i];
    auto& o = info->members[i];
    o.nodeid = m.nodeid;
    CopyName(o.node_name, sizeof o.node_name, m.node_name);
    o.eligible = m.eligible;
    o.is_self = m.is_self;
  }
  info->segments = resp.segments;
  info->segments_owned = resp.segments_owned;
  info->segments_held = resp.segments_held;
  info->bytes_held = resp.bytes_held;
  info->bytes_sent = resp.bytes_sent;
  info->bytes_received = resp.bytes_received;
  info->messages_dropped = resp.messages_dropped;
  info->under_replicated = resp.under_replicated;
  info->data_wire_bytes_sent = resp.data_wire_bytes_sent;
  return CKPT_OK;
}
