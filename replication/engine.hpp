// Engine: ckptd's replication logic as a pure state machine (no I/O, no clock, no corosync).
//
// The caller (agent/) feeds inputs and performs outputs, like etcd/raft's Step/Ready/Advance:
//   inputs : LoadFromStore (startup), OnView (CPG confchg), OnDeliver (CPG message),
//            OnDisconnected (corosync gone), OnClient / OnClientGone (libckpt IPC),
//            OnStoreDone (completion of a StoreOp that carried a token), OnTick (time).
//            The engine's clock is the last OnTick's now_ms (a monotonic clock in ms, > 0):
//            call OnTick once before the first OnView, OnDeliver or OnClient (asserted), since
//            every deadline is that clock plus a timeout.
//   outputs: TakeReady(budget) returns what to do, in this order:
//            1. store_ops   perform in order; report each op with a token via OnStoreDone.
//            2. sends       multicast in order (CPG AGREED).  Persist-before-ack holds by
//                           construction: an ACK is only produced after OnStoreDone(ok) of the
//                           store op that wrote the version.
//            3. replies     to libckpt connections (encoded IPC response bodies).
//            4. events      asynchronous errors for libckpt connections.
// Data chunks are generated lazily inside TakeReady, at most `send_budget_bytes` of them per call,
// so a slow corosync never makes the engine buffer more than the transport admits, and only in a
// call that has no replies or events to hand out (those go first; wants_to_send() tells the
// caller to call again).  Control messages (acks, claims, catalog sync) are small and always
// emitted.
// The replication protocol itself is described at the top of engine.cpp and in PROTOCOL.md.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "common/segment_meta.hpp"
#include "common/status.hpp"
#include "common/version.hpp"
#include "cpg_transport/cpg_transport.hpp"  // CpgView / CpgMember (plain structs)
#include "store/segment_store.hpp"          // LoadedSegment, ByteRange, BlockImage

namespace ckpt::repl {

// Largest DATA payload: a whole DATA message (payload + header <= 4 KiB) must stay under
// corosync's largest unfragmented CPG message (1047552 bytes), so libcpg never fragments it.
inline constexpr uint32_t kMaxChunkBytes = 1020 * 1024;

struct EngineConfig {
  uint32_t self_nodeid = 0;
  std::string node_name;
  bool eligible = true;  // may this node hold replicas?
  uint32_t default_replicas = 1;
  uint32_t default_versions_kept = 1;
  uint32_t default_durability = CKPT_DURABILITY_MEMORY;
  uint32_t default_compression = CKPT_COMPRESSION_NONE;  // for segments created without a choice
  uint64_t max_segment_bytes = 1ull << 32;
  uint64_t max_total_bytes = 1ull << 36;
  uint32_t chunk_bytes = kMaxChunkBytes;  // DATA message payload incl. 12 B per piece
  // A replica writes a full copy of at least this size while it arrives (kStreamBegin...), so
  // its acknowledgement does not wait for a whole-version write after the last chunk.
  uint64_t stream_store_min_bytes = 4u << 20;
  bool has_global_dir = false;
  std::string shm_dir = "/dev/shm/ckpt";  // must match the store's local storage directory
  uint32_t default_pull_timeout_ms = 60000;
  uint32_t default_sync_timeout_ms = 30000;
};

struct Caller {
  uint64_t conn_id = 0;
  uint32_t uid = 0, gid = 0, pid = 0;
};

struct StoreOp {
  enum Kind {
    kPutMeta,       // meta
    kPutFull,       // meta.name, version, image, fsync
    kPutDelta,      // meta.name, version, base, ranges, image, fsync
    kPrune,         // meta.name, version = oldest to keep
    kDropSegment,   // meta.name (+ global copy)
    kPutGlobal,     // meta, version, image
    kLoadGlobal,    // meta.name -> engine.OnGlobalLoaded
    kInstallLocal,  // meta (name, uid, gid, mode), image
    kEnsureLocal,   // meta (name, size, uid, gid, mode)
    kRemoveLocal,   // meta.name
    // A whole version written while its transfer arrives (a replica's large full copy), so the
    // write does not start only after the last chunk.  Begin, Appends in offset order covering
    // [0, size), then Finish (which, like kPutFull, makes the version stored) or Abort.  A new
    // Begin for the segment aborts an unfinished one.
    kStreamBegin,   // meta.name, meta.size, version, checksum (the version's segment checksum)
    kStreamAppend,  // meta.name, version, image, offset, length: image bytes [offset, +length)
    kStreamFinish,  // meta.name, version, fsync
    kStreamAbort,   // meta.name, version
    // The same for a pull's restore into local storage (a fetch of 4 MiB or more), so the
    // install does not start only after the last chunk; Finish replaces the local storage like
    // kInstallLocal (meta: name, uid, gid, mode) and is the restore's completion.
    kLocalBegin,   // meta.name, meta.size
    kLocalAppend,  // meta.name, image, offset, length
    kLocalFinish,  // meta (name, uid, gid, mode)
    kLocalAbort,   // meta.name
  };
  static_assert(kLocalAbort - kLocalBegin == kStreamAbort - kStreamBegin &&
                    kLocalAppend - kLocalBegin == kStreamAppend - kStreamBegin &&
                    kLocalFinish - kLocalBegin == kStreamFinish - kStreamBegin,
                "the kLocal* steps mirror the kStream* steps, in the same order");
  Kind kind = kPutMeta;
  SegmentMeta meta;
  Version version, base;
  std::vector<ByteRange> ranges;
  BlockImage image;
  uint64_t offset = 0, length = 0, checksum = 0;  // stream ops
  bool fsync = false;
  uint64_t token = 0;  // nonzero: report completion with OnStoreDone(token, status)
};

struct Reply {
  uint64_t conn_id = 0;
  int32_t op = 0;             // ipc::Op it answers
  std::vector<uint8_t> body;  // ipc::EncodeResponse output
};

struct ClientEvent {
  uint64_t conn_id = 0;
  int32_t event = 0;          // ipc::Event
  std::vector<uint8_t> body;  // ipc::EncodeResponse(status, AsyncErrorEvent)
};

// A transient Pacemaker node attribute change this node should publish (attrd_updater).
struct AttributeUpdate {
  std::string name;   // "ckpt-<segment>"
  std::string value;  // "" = delete
};

struct Ready {
  std::vector<StoreOp> store_ops;
  std::vector<std::vector<uint8_t>> sends;
  std::vector<Reply> replies;
  std::vector<ClientEvent> events;
  std::vector<AttributeUpdate> attributes;
  bool empty() const {
    return store_ops.empty() && sends.empty() && replies.empty() && events.empty() &&
           attributes.empty();
  }
};

struct EngineCounters {
  uint64_t payload_bytes_sent = 0;      // segment bytes in DATA messages we multicast
  uint64_t data_wire_bytes_sent = 0;    // size of those DATA messages (headers, compression)
  uint64_t payload_bytes_received = 0;  // segment bytes from DATA messages we stored
  uint64_t messages_dropped = 0;        // malformed, unknown-type or bad-checksum peer messages
  uint64_t stale_rejected = 0;          // DATA refused for an old epoch or a non-owner sender
  uint64_t full_transfers_sent = 0, delta_transfers_sent = 0;
  uint64_t versions_stored = 0;
  uint64_t local_restores = 0;  // pulls served from this node's own store
};

class Engine {
 public:
  explicit Engine(EngineConfig config);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Startup: segments rebuilt by the store.  Call before the first OnView.
  void LoadFromStore(std::vector<LoadedSegment> segments);

  void OnView(const CpgView& view);
  void OnDeliver(uint32_t nodeid, uint32_t pid, std::span<const uint8_t> message);
  void OnDisconnected();

  // One IPC request (body after libqb's header).  Malformed bodies get a kProtocol reply.
  void OnClient(const Caller& caller, int32_t op, std::span<const uint8_t> body);
  void OnClientGone(uint64_t conn_id);

  void OnStoreDone(uint64_t token, const Status& status);
  // Result of a kLoadGlobal op (nullopt: none; error: unreadable/corrupt).
  void OnGlobalLoaded(uint64_t token, Result<std::optional<LoadedSegment>> loaded);
  // now_ms: a monotonic clock, never smaller than the last tick's.
  void OnTick(uint64_t now_ms);
  // Asserts the consistency of the engine's derived state (running totals, timer index) with a
  // scan of the whole catalog: O(segments), so callers run it now and then, not per input.
  void CheckInvariants() const;

  // Collects pending outputs; generates at most send_budget_bytes of DATA messages.
  Ready TakeReady(size_t send_budget_bytes);
  // True when DATA is waiting for send budget (call TakeReady again when the transport drains).
  bool wants_to_send() const;

  const EngineCounters& counters() const;
  // For tests and ckptctl: catalog views.
  std::vector<std::string> SegmentNames() const;
  std::optional<SegmentMeta> Meta(const std::string& name) const;
  // Version `holder` acknowledged for `name` ((0,0) if none).
  Version HolderVersion(const std::string& name, uint32_t holder) const;
  // The replica set the engine computes for `name` under the current membership.
  std::vector<uint32_t> ReplicaTargets(const std::string& name) const;
  // Latest version in this node's memory/store for `name`, if any.
  std::optional<Version> LocalVersion(const std::string& name) const;
  std::optional<BlockImage> LocalImage(const std::string& name) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ckpt::repl
