// CpgTransport: the only code that calls libcpg.
//
// Joins one CPG group (name length counts the trailing NUL, like Pacemaker and dlm), delivers
// messages and membership changes to callbacks from the qb_loop, and multicasts AGREED messages
// from a bounded queue: cpg_mcast_joined() returning CS_ERR_TRY_AGAIN leaves the message queued and
// retries from a loop timer (never spins, never blocks a callback).  While the queue is flushed
// from the loop, deliveries waiting in corosync's ring to us are read between two sends (a
// sender's own messages come back to it; a full ring makes corosync busy-retry them).  When the queue is full Send()
// refuses with kNoSpace; on_drained tells the caller when room is back.
// If corosync goes away (dispatch error other than TRY_AGAIN) the transport finalizes, reports
// on_lost, and reconnects every reconnect_ms; after rejoining, the first view lists every member
// as joined.  Messages queued at loss are dropped (the caller's protocol re-sends from state).
// Messages are never fragmented: libcpg's own fragmentation of messages above the CPG atomic size
// (1047552 bytes on corosync 3.1) blocks with sleeps, so such messages are refused (kTooLarge).
// Callbacks run only from the loop (inside the fd handler or a timer), never from inside Send().
// Shutdown() may be called from a callback; destroying the transport from a callback may not.
#pragma once

#include <qb/qbloop.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.hpp"

namespace ckpt {

struct CpgMember {
  uint32_t nodeid = 0;
  uint32_t pid = 0;
  uint32_t reason = 0;  // CPG_REASON_* for joined/left entries (NODEDOWN vs PROCDOWN...)
  bool operator==(const CpgMember& o) const { return nodeid == o.nodeid && pid == o.pid; }
};

struct CpgView {
  std::vector<CpgMember> members;  // sorted by nodeid, then pid
  std::vector<CpgMember> joined;
  std::vector<CpgMember> left;
};

struct CpgCounters {
  uint64_t messages_sent = 0, bytes_sent = 0;
  uint64_t messages_delivered = 0, bytes_delivered = 0;
  uint64_t try_again = 0;  // CS_ERR_TRY_AGAIN answers from cpg_mcast_joined
  uint64_t reconnects = 0;
  uint64_t queue_full = 0;       // Send() refused for lack of room
  uint64_t dropped_at_loss = 0;  // queued messages discarded when corosync went away
  uint64_t pokes = 0;            // wake-up requests sent after large deliveries
  uint64_t drains = 0;           // deliveries read between two sends (Flush)
};

class CpgTransport {
 public:
  struct Options {
    std::string group = "ckpt";
    size_t max_queue_bytes = 64u << 20;            // queued-bytes bound; >= 2 x max message
    size_t max_message_bytes = (1u << 20) + 4096;  // capped at the CPG atomic size (see above)
    uint32_t retry_ms = 1;                         // TRY_AGAIN retry delay (doubles up to 50 ms)
    uint32_t reconnect_ms = 1000;                  // delay between reconnect attempts
  };
  struct Callbacks {
    std::function<void(uint32_t nodeid, uint32_t pid, std::span<const uint8_t> msg)> deliver;
    std::function<void(const CpgView& view)> view;
    std::function<void(const Status& why)> lost;  // corosync connection gone; reconnecting
    std::function<void()> drained;                // queue fell below half of max_queue_bytes
    // After each batch of callbacks (one cpg_dispatch of everything corosync had ready), while
    // connected: the caller can act once on the whole batch (e.g. send its outputs together).
    std::function<void()> dispatched;
  };

  // Connects and joins; the fd is polled from `loop`.  Errors: kUnavailable (corosync not
  // running, or access refused), kInvalid (empty group name or longer than 127 bytes).
  static Result<std::unique_ptr<CpgTransport>> Connect(qb_loop_t* loop, const Options& options,
                                                       Callbacks callbacks);
  virtual ~CpgTransport() = default;

  virtual uint32_t local_nodeid() const = 0;
  // Largest message Send() accepts: min(options.max_message_bytes, CPG atomic message size).
  virtual size_t max_message_bytes() const = 0;
  virtual bool connected() const = 0;
  // Queues one message (whole: it is sent as one CPG message); an empty queue admits any message
  // up to max_message_bytes().  Errors: kTooLarge (above max_message_bytes()), kNoSpace (queue
  // full; wait for drained), kUnavailable (not connected).  A hard multicast error found here is
  // reported later through `lost`.
  virtual Status Send(std::vector<uint8_t> message) = 0;
  virtual size_t queued_bytes() const = 0;
  virtual size_t free_bytes() const = 0;
  virtual CpgCounters counters() const = 0;
  // Leaves the group and finalizes (clean shutdown).
  virtual void Shutdown() = 0;
};

}  // namespace ckpt
