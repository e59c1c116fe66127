// CpgTransport over libcpg (CPG_MODEL_V1) and a qb_loop.  See cpg_transport.hpp for the contract.
//
// Re-entrancy rules kept here:
//  - libcpg calls our deliver/confchg functions only inside cpg_dispatch(), which runs only from
//    the fd handler; user callbacks therefore never run inside Send().
//  - A loss detected inside Send() (cpg_mcast_joined failing hard), or a drained condition met
//    there, is reported from a zero-delay loop timer (kick_timer_).
//  - Shutdown() from a callback is deferred until cpg_dispatch() returns.
//  - libqb re-activates a poll entry after its handler returns >= 0, even if the handler deleted
//    it, so the fd handler returns -1 instead of calling qb_loop_poll_del() on itself.
#include "cpg_transport/cpg_transport.hpp"

#include <corosync/corotypes.h>
#include <corosync/cpg.h>
#include <poll.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <utility>

namespace ckpt {
namespace {

// TRY_AGAIN means corosync's queue is momentarily full; it drains within milliseconds, so a long
// backoff only idles the link (50 ms cost ~5x throughput in the 3-node lab).
constexpr uint32_t kMaxRetryMs = 4;
constexpr uint64_t kNsPerMs = 1000000;

// corosync hands a CPG client its deliveries through a shared-memory ring that holds about one
// 1 MiB message.  When the next one does not fit, corosync parks it (and every later one) in a
// per-client queue that its main loop retries once per wake-up; on an otherwise idle corosync
// those come from its timers, so a client that fell behind once receives ~20 large messages a
// second until the queue is empty (measured: 256 MiB took 12 s instead of 3.5 s).  After
// reading a large delivery we therefore send corosync a cheap request (cpg_local_get): it wakes
// corosync's loop, which moves the next queued messages into the ring.
constexpr size_t kPokeAfterBytes = 256 * 1024;

std::string CsText(cs_error_t rc) {
  return std::string(cs_strerror(rc)) + " (cs_error " + std::to_string(static_cast<int>(rc)) + ")";
}

std::vector<CpgMember> ToMembers(const cpg_address* list, size_t n) {
  std::vector<CpgMember> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back({list[i].nodeid, list[i].pid, list[i].reason});
  std::sort(out.begin(), out.end(), [](const CpgMember& a, const CpgMember& b) {
    return a.nodeid != b.nodeid ? a.nodeid < b.nodeid : a.pid < b.pid;
  });
  return out;
}

// A one-shot qb_loop timer owned by the transport: Arm() replaces nothing if already armed.
class LoopTimer {
 public:
  LoopTimer(qb_loop_t* loop, void* data, qb_loop_timer_dispatch_fn fn)
      : loop_(loop), data_(data), fn_(fn) {}
  bool armed() const { return armed_; }
  bool Arm(uint64_t ms) {
    if (armed_) return true;
    armed_ = qb_loop_timer_add(loop_, QB_LOOP_MED, ms * kNsPerMs, data_, fn_, &handle_) == 0;
    return armed_;
  }
  void Cancel() {
    if (armed_) qb_loop_timer_del(loop_, handle_);
    armed_ = false;
  }
  void Fired() { armed_ = false; }  // first thing in the timer's handler

 private:
  qb_loop_t* loop_;
  void* data_;
  qb_loop_timer_dispatch_fn fn_;
  qb_loop_timer_handle handle_ = 0;
  bool armed_ = false;
};

class CpgTransportImpl final : public CpgTransport {
 public:
  CpgTransportImpl(qb_loop_t* loop, const Options& options, Callbacks callbacks)
      : loop_(loop),
        options_(options),
        callbacks_(std::move(callbacks)),
        retry_timer_(loop, this, &CpgTransportImpl::OnRetryTimer),
        reconnect_timer_(loop, this, &CpgTransportImpl::OnReconnectTimer),
        kick_timer_(loop, this, &CpgTransportImpl::OnKickTimer) {
    std::memset(&group_, 0, sizeof(group_));
    std::memcpy(group_.value, options_.group.data(), options_.group.size());
    group_.length = static_cast<uint32_t>(options_.group.size() + 1);  // counts the NUL
    retry_ms_ = std::max<uint32_t>(options_.retry_ms, 1);
    backoff_ms_ = retry_ms_;
  }

  ~CpgTransportImpl() override {
    CKPT_ASSERT(!in_fd_handler_ && !in_send_);  // never destroyed from one of its callbacks
    Shutdown();
  }

  // Initializes, joins and registers the fd.  On failure nothing is left behind.
  Status Open() {
    cpg_model_v1_data_t model{};
    model.model = CPG_MODEL_V1;
    model.cpg_deliver_fn = &CpgTransportImpl::OnDeliver;
    model.cpg_confchg_fn = &CpgTransportImpl::OnConfchg;
    model.cpg_totem_confchg_fn = nullptr;
    model.flags = 0;
    cpg_handle_t h = 0;
    cs_error_t rc =
        cpg_model_initialize(&h, CPG_MODEL_V1, reinterpret_cast<cpg_model_data_t*>(&model), this);
    if (rc != CS_OK) {
      return Err(Code::kUnavailable, "cannot connect to corosync (CPG): " + CsText(rc));
    }
    auto fail = [&](const std::string& what, cs_error_t err) {
      cpg_finalize(h);
      return Err(Code::kUnavailable, what + ": " + CsText(err));
    };
    unsigned int nodeid = 0;
    if ((rc = cpg_local_get(h, &nodeid)) != CS_OK) return fail("cpg_local_get failed", rc);
    uint32_t atomic = 0;
    if ((rc = cpg_max_atomic_msgsize_get(h, &atomic)) != CS_OK) {
      return fail("cpg_max_atomic_msgsize_get failed", rc);
    }
    int fd = -1;
    if ((rc = cpg_fd_get(h, &fd)) != CS_OK) return fail("cpg_fd_get failed", rc);
    if ((rc = cpg_join(h, &group_)) != CS_OK)
      return fail("cannot join CPG group '" + options_.group + "'", rc);
    // HIGH: deliveries are read before client requests, so corosync never has to queue them for
    // us while clients keep ckptd busy (FACTS: corosync buffers them without bound).
    if (qb_loop_poll_add(loop_, QB_LOOP_HIGH, fd, POLLIN, this, &CpgTransportImpl::OnFd) != 0) {
      return fail("qb_loop_poll_add failed", CS_ERR_LIBRARY);
    }
    handle_ = h;
    fd_ = fd;
    nodeid_ = nodeid;
    max_message_ = std::min<size_t>(options_.max_message_bytes, atomic);
    // With room for two largest messages, "free_bytes() < size" implies the queue is above half,
    // so a caller that waits instead of being refused still gets `drained`.
    max_queue_ = std::max(options_.max_queue_bytes, 2 * max_message_);
    connected_ = true;
    first_view_ = true;
    return Status::Ok();
  }

  uint32_t local_nodeid() const override { return nodeid_; }
  size_t max_message_bytes() const override { return max_message_; }
  bool connected() const override { return connected_ && !closed_; }
  size_t queued_bytes() const override { return queued_bytes_; }
  size_t free_bytes() const override {
    return queued_bytes_ >= max_queue_ ? 0 : max_queue_ - queued_bytes_;
  }
  CpgCounters counters() const override { return counters_; }

  Status Send(std::vector<uint8_t> message) override {
    if (!connected()) return Err(Code::kUnavailable, "not connected to corosync (CPG)");
    if (message.size() > max_message_) {
      return Err(Code::kTooLarge, "CPG message of " + std::to_string(message.size()) +
                                      " bytes exceeds the limit of " +
                                      std::to_string(max_message_));
    }
    const bool was_empty = queue_.empty();
    // An empty queue admits any message within max_message_bytes, so a large message can
    // never be refused forever.
    if (!was_empty && message.size() > free_bytes()) {
      ++counters_.queue_full;
      want_drained_ = true;
      return Err(Code::kNoSpace,
                 "CPG send queue full (" + std::to_string(queued_bytes_) + " bytes queued)");
    }
    queued_bytes_ += message.size();
    queue_.push_back(std::move(message));
    if (was_empty && !retry_timer_.armed()) {
      in_send_ = true;
      Flush();
      in_send_ = false;
    }
    if (queued_bytes_ * 2 > max_queue_) want_drained_ = true;
    return Status::Ok();
  }

  void Shutdown() override {
    if (closed_) return;
    closed_ = true;
    if (in_dispatch_) return;  // finished by OnFd once cpg_dispatch() returns
    Finish();
  }

 private:
  // ---- libcpg callbacks (only inside cpg_dispatch) ----
  static CpgTransportImpl* Self(cpg_handle_t h) {
    void* ctx = nullptr;
    cpg_context_get(h, &ctx);
    return static_cast<CpgTransportImpl*>(ctx);
  }

  static void OnDeliver(cpg_handle_t h, const cpg_name*, uint32_t nodeid, uint32_t pid, void* msg,
                        size_t len) {
    CpgTransportImpl* self = Self(h);
    if (self == nullptr || self->closed_ || !self->connected_) return;
    ++self->counters_.messages_delivered;
    self->counters_.bytes_delivered += len;
    if (len >= kPokeAfterBytes) self->poke_ = true;
    if (self->callbacks_.deliver) {
      self->callbacks_.deliver(nodeid, pid, {static_cast<const uint8_t*>(msg), len});
    }
  }

  static void OnConfchg(cpg_handle_t h, const cpg_name*, const cpg_address* members,
                        size_t n_members, const cpg_address* left, size_t n_left,
                        const cpg_address* joined, size_t n_joined) {
    CpgTransportImpl* self = Self(h);
    if (self == nullptr || self->closed_ || !self->connected_) return;
    CpgView view;
    view.members = ToMembers(members, n_members);
    view.left = ToMembers(left, n_left);
    view.joined = ToMembers(joined, n_joined);
    if (self->first_view_ && self->rejoining_) {
      // After a reconnect the caller has forgotten the group: everyone is new to it.
      std::vector<CpgMember> all = view.members;
      for (CpgMember& m : all) {
        auto it = std::find(view.joined.begin(), view.joined.end(), m);
        m.reason = it != view.joined.end() ? it->reason : uint32_t{CPG_REASON_JOIN};
      }
      view.joined = std::move(all);
    }
    self->first_view_ = false;
    self->rejoining_ = false;
    if (self->callbacks_.view) self->callbacks_.view(view);
  }

  // ---- loop handlers ----
  static int32_t OnFd(int32_t, int32_t, void* data) {
    auto* self = static_cast<CpgTransportImpl*>(data);
    self->in_fd_handler_ = true;
    if (self->Dispatch(/*poke=*/true) && !self->queue_.empty())
      self->Flush(/*drain=*/true);  // our own deliveries mean corosync made progress: push more
    self->in_fd_handler_ = false;
    self->delivered_ = false;
    if (self->connected() && self->callbacks_.dispatched) self->callbacks_.dispatched();
    return self->connected() ? 0 : -1;
  }

  static void OnRetryTimer(void* data) {
    auto* self = static_cast<CpgTransportImpl*>(data);
    self->retry_timer_.Fired();
    if (self->connected()) self->Flush(/*drain=*/true);
    if (std::exchange(self->delivered_, false) && self->connected() && self->callbacks_.dispatched)
      self->callbacks_.dispatched();
  }

  static void OnKickTimer(void* data) {
    auto* self = static_cast<CpgTransportImpl*>(data);
    self->kick_timer_.Fired();
    if (self->pending_loss_ && self->connected()) {
      self->pending_loss_ = false;
      self->Lose(self->pending_loss_status_);
    } else if (self->connected()) {
      self->MaybeDrained();
    }
  }

  static void OnReconnectTimer(void* data) {
    auto* self = static_cast<CpgTransportImpl*>(data);
    self->reconnect_timer_.Fired();
    if (self->closed_ || self->connected_) return;
    if (self->Open().ok()) {
      ++self->counters_.reconnects;
      self->rejoining_ = true;
      return;
    }
    self->reconnect_timer_.Arm(std::max<uint32_t>(self->options_.reconnect_ms, 1));
  }

  // ---- receiving ----
  // cpg_dispatch(CS_DISPATCH_ALL) from the loop: never inside Send() or a callback.  With `poke`,
  // a large delivery is followed by a wake-up request (kPokeAfterBytes).  false: the connection
  // ended here (Shutdown() from a callback, or corosync gone); the caller stops using it.
  bool Dispatch(bool poke) {
    in_dispatch_ = true;
    cs_error_t rc = cpg_dispatch(handle_, CS_DISPATCH_ALL);
    in_dispatch_ = false;
    if (closed_) {
      Finish();  // Shutdown() was called from a callback
      return false;
    }
    if (rc != CS_OK && rc != CS_ERR_TRY_AGAIN) {
      Lose(Err(Code::kUnavailable, "lost connection to corosync (CPG dispatch): " + CsText(rc)));
      return false;
    }
    if (poke && poke_) Poke();
    return connected();
  }

  // See kPokeAfterBytes: a request wakes corosync's loop, which then refills our ring.
  void Poke() {
    poke_ = false;
    unsigned int nodeid = 0;
    (void)cpg_local_get(handle_, &nodeid);
    ++counters_.pokes;
  }

  // ---- sending ----
  // Sends queued messages until the queue is empty or corosync answers TRY_AGAIN.  With `drain`
  // (loop context only), deliveries waiting in our ring are read after every message sent.
  // Why: corosync's ring to us holds about one 1 MiB message, and while it is full corosync
  // retries the next delivery in a busy loop (a real-time process, measured at 70,000-270,000
  // retries in one 64 MiB pull) that takes the CPU the rest of the node needs; a sender's own
  // messages come back to it, so a sender that only sends keeps that ring full.
  void Flush(bool drain = false) {
    while (!queue_.empty()) {
      std::vector<uint8_t>& front = queue_.front();
      iovec iov{front.data(), front.size()};
      cs_error_t rc = cpg_mcast_joined(handle_, CPG_TYPE_AGREED, &iov, 1);
      if (rc == CS_ERR_TRY_AGAIN) {
        ++counters_.try_again;
        if (!retry_timer_.armed()) {
          retry_timer_.Arm(backoff_ms_);
          backoff_ms_ = std::min(backoff_ms_ * 2, kMaxRetryMs);
        }
        return;  // the retry is a request too: it wakes corosync like a poke would
      }
      if (rc != CS_OK) {
        Status why = Err(Code::kUnavailable, "cpg_mcast_joined failed: " + CsText(rc));
        if (in_send_) {  // report from the loop, not from inside Send()
          pending_loss_ = true;
          pending_loss_status_ = std::move(why);
          kick_timer_.Arm(0);
        } else {
          Lose(std::move(why));
        }
        return;
      }
      ++counters_.messages_sent;
      counters_.bytes_sent += front.size();
      queued_bytes_ -= front.size();
      queue_.pop_front();
      backoff_ms_ = retry_ms_;
      if (drain && DeliveriesWaiting()) {
        delivered_ = true;
        // No poke here: the next send wakes corosync anyway; one is sent below if none follows.
        if (!Dispatch(/*poke=*/false)) return;
        ++counters_.drains;
      }
    }
    retry_timer_.Cancel();
    if (poke_) Poke();
    MaybeDrained();
  }

  bool DeliveriesWaiting() const {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }

  void MaybeDrained() {
    if (!want_drained_ || queued_bytes_ * 2 >= max_queue_) return;
    if (in_send_) {  // Send() only flushes an empty queue, so this is rare: report from the loop
      kick_timer_.Arm(0);
      return;
    }
    want_drained_ = false;
    if (callbacks_.drained) callbacks_.drained();
  }

  // ---- teardown ----
  // Closes the CPG handle; the fd handler removes its own poll entry by returning -1.
  void CloseHandle(bool leave) {
    if (!connected_) return;
    if (!in_fd_handler_) qb_loop_poll_del(loop_, fd_);
    if (leave) cpg_leave(handle_, &group_);
    cpg_finalize(handle_);
    handle_ = 0;
    fd_ = -1;
    connected_ = false;
    retry_timer_.Cancel();
    backoff_ms_ = retry_ms_;
    counters_.dropped_at_loss += queue_.size();
    queue_.clear();
    queued_bytes_ = 0;
    want_drained_ = false;
  }

  void Lose(Status why) {
    CloseHandle(/*leave=*/false);
    reconnect_timer_.Arm(std::max<uint32_t>(options_.reconnect_ms, 1));
    if (callbacks_.lost) callbacks_.lost(why);  // may call Shutdown(), which cancels the timer
  }

  void Finish() {
    CloseHandle(/*leave=*/true);
    retry_timer_.Cancel();
    reconnect_timer_.Cancel();
    kick_timer_.Cancel();
    pending_loss_ = false;
  }

  qb_loop_t* loop_;
  Options options_;
  Callbacks callbacks_;
  cpg_name group_;
  cpg_handle_t handle_ = 0;
  int fd_ = -1;
  uint32_t nodeid_ = 0;
  size_t max_message_ = 0;
  size_t max_queue_ = 0;
  bool connected_ = false;
  bool closed_ = false;
  bool in_fd_handler_ = false;  // OnFd is running: its poll entry is removed by returning -1
  bool in_dispatch_ = false;    // inside cpg_dispatch(): libcpg callbacks may run
  bool in_send_ = false;
  bool first_view_ = false;
  bool rejoining_ = false;
  bool want_drained_ = false;
  bool pending_loss_ = false;
  bool poke_ = false;  // a large message was delivered and no request followed (kPokeAfterBytes)
  bool delivered_ = false;  // Flush() dispatched deliveries: `dispatched` is due
  Status pending_loss_status_;

  std::deque<std::vector<uint8_t>> queue_;
  size_t queued_bytes_ = 0;
  uint32_t retry_ms_ = 1;
  uint32_t backoff_ms_ = 1;
  LoopTimer retry_timer_, reconnect_timer_, kick_timer_;
  CpgCounters counters_;
};

}  // namespace

Result<std::unique_ptr<CpgTransport>> CpgTransport::Connect(qb_loop_t* loop, const Options& options,
                                                            Callbacks callbacks) {
  if (loop == nullptr) return Err(Code::kInvalid, "CpgTransport: no qb_loop");
  if (options.group.empty() || options.group.size() + 1 > CPG_MAX_NAME_LENGTH) {
    return Err(Code::kInvalid,
               "CPG group name must be 1.." + std::to_string(CPG_MAX_NAME_LENGTH - 1) + " bytes");
  }
  auto impl = std::make_unique<CpgTransportImpl>(loop, options, std::move(callbacks));
  CKPT_RETURN_IF_ERROR(impl->Open());
  return std::unique_ptr<CpgTransport>(std::move(impl));
}

}  // namespace ckpt
