// The replication protocol, in one place (PROTOCOL.md has the message layouts).
//
// All ckptd daemons join one CPG group.  CPG delivers every message to every member in one total
// order (AGREED), and every member sees the same membership changes at the same point of that
// order.  The engine builds on exactly that:
//
// CATALOG.  Every member keeps the same catalog: per segment its parameters, ownership epoch,
// owner, latest version and, per holder node, the newest version that node acknowledged.  Catalog
// changes are messages (CLAIM, RELEASE, DELETE, ACK, DATA headers) applied by every member at the
// same point of the order, so catalogs stay identical without a coordinator.
//
// JOIN / MERGE.  At a confchg with joined members, every member publishes NODE_INFO (its name and
// whether it may hold replicas), clears the holder records of the joined nodes, and republishes
// its whole catalog (sent before any DATA of the new view, so a joined node with a stale catalog
// learns the owner and epoch before that owner's transfers reach it; otherwise it would reject
// them as stale while the owner counts them as sent).  Merging a CATALOG entry is a
// join-semilattice: the higher epoch wins the metadata, latest and per-holder versions take the
// maximum, so sync messages may interleave freely with ordinary traffic, and two partitions that
// heal converge on the side with the higher epoch.
//
// SYNC BARRIER.  Compare-and-swaps (CLAIM, RELEASE, DELETE) are not order-independent: from the
// confchg until every member's final CATALOG of that round is delivered they are held, then
// applied in delivery order, as are client calls that decide from the catalog.  Every member ends
// the barrier at the same point of the total order with the same catalog.
//
// RESTARTS.  Ownership loaded from the store is provisional: a restarted ckptd never continues its
// old epoch (commits it made just before dying may never have left it); its owner re-claims.
//
// OWNERSHIP.  Ownership changes only by CLAIM, a compare-and-swap applied in total order: it wins
// iff the catalog's epoch equals the claim's expected epoch, and then the epoch grows.  Two
// concurrent pulls therefore resolve the same way everywhere: the first claim delivered wins, the
// second finds a newer epoch and fails with CKPT_ERR_CONFLICT.  The previous owner, on seeing the
// claim, fences its writer (CKPT_ERR_FENCED); holders accept DATA only from the catalog owner at
// the catalog epoch, so a stale owner's writes are dropped and counted.
//
// REPLICATION.  The owner chooses R targets by rendezvous hashing XXH3(name, nodeid) over live
// eligible members other than itself: every member computes the same set.  It multicasts versions
// as transfers of DATA chunks (<= chunk_bytes of payload each), generated lazily within the send
// budget given to TakeReady.  A target whose acknowledged-or-sent version is a recent base gets a
// delta (the union of ranges committed since); any other gets a full copy.  Receivers reassemble a
// transfer (chunks of one sender arrive in order), apply it copy-on-write to their base version,
// verify the segment checksum, persist, and only then multicast ACK.  NeedFull/Failed acks make
// the owner send a full copy.  When a target leaves, the next node in hash order becomes a target
// and is brought up to date, restoring R copies.  Flow control: per segment at most one transfer
// in corosync (until our own last chunk comes back) and one unacknowledged version per target;
// commits made meanwhile coalesce into the next transfer's delta (see Segment::wire_xfer).
//
// PULL.  A node that wants a segment checks the catalog for live holders; none (and no global
// copy) means CKPT_NO_CHECKPOINT.  Otherwise it CLAIMs; once the claim is delivered it picks the
// newest version among live holders (itself first: a local restore moves no bytes), FETCHes it
// from that holder (a full transfer addressed to it), verifies it, persists it, installs it
// atomically in local storage, and continues as owner.
//
// Invariants (asserted where cheap): a segment's local versions are strictly increasing; the
// owner's latest local version is the catalog latest; an ACK is emitted only after the store op
// that wrote the version completed successfully.

#include "replication/engine.hpp"

#include <algorithm>
#include <deque>
#include <unordered_map>

#include "common/checksum.hpp"
#include "common/ipc_messages.hpp"
#include "common/names.hpp"
#include "replication/messages.hpp"

namespace ckpt::repl {
namespace {

constexpr size_t kMaxCatalogMessageBytes = 256 * 1024;
constexpr size_t kMaxHistoryEntries = 256;
constexpr uint64_t kFetchTimeoutMs = 30000;
constexpr uint64_t kReadCacheTtlMs = 30000;
constexpr uint32_t kListPageMax = 512;
constexpr size_t kMaxDeferredCalls = 4096;    // client calls held during a sync
constexpr uint64_t kPieceOverheadBytes = 12;  // u64 offset + u32 length per DATA piece
constexpr uint64_t kWireTimeoutMs = 30000;    // see Segment::wire_xfer
constexpr uint64_t kAckWaitMs = 10000;        // see Segment::last_transfer_ms

// Epochs are unique per claimer: generation in the high 32 bits, the claiming node's id in the low
// 32.  Two partitions that both claim from the same epoch therefore never label different bytes
// with the same version, and the merge (higher epoch wins) picks one line deterministically.
uint64_t NextEpoch(uint64_t above, uint32_t claimer) {
  return (((above >> 32) + 1) << 32) | claimer;
}

uint64_t RendezvousScore(const std::string& name, uint32_t nodeid) {
  uint8_t id[4];
  store_le32(id, nodeid);
  return Checksum64Concat({reinterpret_cast<const uint8_t*>(name.data()), name.size()}, {id, 4});
}

std::vector<ByteRange> MergeRanges(std::vector<ByteRange> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const ByteRange& a, const ByteRange& b) { return a.offset < b.offset; });
  std::vector<ByteRange> out;
  for (const ByteRange& r : ranges) {
    if (r.length == 0) continue;
    if (!out.empty() && r.offset <= out.back().offset + out.back().length) {
      uint64_t end = std::max(out.back().offset + out.back().length, r.offset + r.length);
      out.back().length = end - out.back().offset;
    } else {
      out.push_back(r);
    }
  }
  return out;
}

uint64_t TotalBytes(const std::vector<ByteRange>& ranges) {
  uint64_t n = 0;
  for (auto& r : ranges) n += r.length;
  return n;
}

}  // namespace

struct LocalCopy {
  Version version;
  BlockImage image;
  bool persisted = false;  // the store holds it (a base for PutDelta)
};

// An outgoing transfer: a snapshot and a cursor over its ranges.
struct Transfer {
  DataHeader header;
  BlockImage snapshot;
  std::vector<ByteRange> ranges;
  size_t range_index = 0;
  uint64_t range_offset = 0;
  bool compress = false;  // the segment's compression is zstd
};

// An incoming transfer being reassembled.
struct Inbound {
  bool ignore = false;
  DataHeader header;
  BlockImage image;
  std::vector<ByteRange> ranges;  // what the pieces covered (for delta persistence)
  uint32_t next_chunk = 0;
  // A large full copy is written to the store as it arrives (StoreOp::kStreamBegin): `streamed`
  // bytes from offset 0 were handed to the store.  Every way an Inbound ends (completion, a
  // newer transfer, the sender leaving, an epoch change, a disconnect) finishes or aborts it.
  bool streaming = false;
  uint64_t streamed = 0;
  // The stream writes the local storage instead (a pull's restore: StoreOp::kLocalBegin...), and
  // its Finish is the install the client waits for.
  bool stream_local = false;
};

struct Waiter {  // a client waiting for R acknowledgements of a version (of its key's segment)
  uint64_t conn_id = 0;
  int32_t op = 0;
  Version version;
  uint64_t deadline_ms = 0;
  bool release_after = false;  // ckpt_release: send RELEASE when satisfied
  uint64_t group = 0;          // != 0: one segment of a ckpt_flush_all (see WaiterGroup)
};

// A ckpt_flush_all: one waiter per segment, one answer: the first failure, or OK once the last
// segment is satisfied.  Members that finish after a failure was answered finish silently.
struct WaiterGroup {
  uint64_t conn_id = 0;
  size_t waiting = 0;  // members not finished yet
  bool answered = false;
};

struct Segment {
  CatalogEntry cat;             // replicated catalog state
  std::deque<LocalCopy> local;  // versions held here, oldest first
  uint64_t held_counted = 0;    // what this segment adds to Impl::held_bytes (see sync_held)
  bool meta_persisted = false;
  SegmentMeta persisted_meta;    // what the store's meta record says (valid if meta_persisted)
  bool local_installed = false;  // shm file written since this ckptd started
  // Owner state (cat.owner == self).
  // Recent commits as a chain: history[0] applies on top of history_base, history[i] on top of
  // history[i-1].  A target holding history_base or any history version can get a delta.
  std::deque<std::pair<Version, std::vector<ByteRange>>> history;
  Version history_base;
  std::map<uint32_t, Version> sent;  // per target: newest version queued to it
  std::set<uint32_t> force_full;     // targets that asked for a full copy
  bool xfer_active = false;          // a replicate transfer is queued in `outgoing` (being emitted)
  // The last replicate transfer's final chunk is emitted but not yet delivered back to us: it is
  // still in corosync.  Only one transfer per segment is on the wire at a time, so commits that
  // arrive meanwhile coalesce into the next transfer (one delta of the union of their ranges)
  // instead of one CPG message each.  Cleared by our own delivery of that chunk, on disconnect,
  // on losing ownership, or after kWireTimeoutMs (a lost message must not stall the segment).
  uint32_t wire_xfer = 0;
  uint64_t wire_since_ms = 0;
  // Flow control towards the replicas: no new transfer while a target has not acknowledged the
  // previous one (for up to kAckWaitMs from when it was scheduled), so a replica's store never
  // queues more than one version per segment; commits meanwhile coalesce as above.
  uint64_t last_transfer_ms = 0;
  uint64_t writer_handle = 0;  // 0 = no open writer
  bool global_dirty = false;
  // cat.owner == self was established by our own CLAIM in this incarnation.  Ownership loaded
  // from the store is not: the cluster may have moved on while this node was down, and commits
  // this node made just before it died may never have left it, so continuing the old epoch could
  // give different bytes a version number already handed out.  A restarted owner re-claims (a new
  // epoch; its own copy is restored locally when it is the newest).
  bool owner_confirmed = false;
  // In-place owner persistence (versions_kept == 1), coalesced: at most one store op in flight;
  // commits that arrive meanwhile are written together as one delta on `owner_stored` (the
  // version the store holds or will hold once the in-flight op completes; empty = unknown).
  // The store may briefly lag what was replicated; a restarted owner re-claims and restores the
  // newest copy among the live holders (see RESTARTS), so the lag never loses a version.
  Version owner_stored;
  uint64_t owner_persist_token = 0;  // nonzero while an owner persist op is in flight
};

struct Handle {
  uint64_t conn_id = 0;
  std::string name;
  uint64_t epoch = 0;
  bool fenced = false;
  Status async_error;
  // A multi-part commit in progress: the parts so far, written copy-on-write onto the latest
  // image (untouched blocks stay shared); it becomes one version with the final part.
  std::optional<BlockImage> pending;
  std::vector<ByteRange> pending_ranges;
};

// A client operation that spans messages (pull, open with create/pull, delete, read).
struct Pending {
  enum Kind { kPull, kOpen, kDelete, kRead } kind = kPull;
  enum Stage { kClaiming, kFetching, kInstalling, kGlobal } stage = kClaiming;
  Caller caller;
  int32_t op = 0;
  std::string name;
  uint64_t deadline_ms = 0;
  ipc::OpenReq open;  // kOpen
  ipc::ReadReq read;  // kRead
  std::set<uint32_t> tried;
  Version want;
  uint32_t fetch_from = 0;
  uint64_t fetch_deadline_ms = 0;
  int tokens_outstanding = 0;
  Status store_status;
  std::optional<LoadedSegment> global;  // kGlobal
  bool checksum_failed = false;  // a fetched copy failed its checksum (kCorrupt, not kNotFound)
};

struct Engine::Impl {
  EngineConfig cfg;
  EngineCounters counters;
  uint64_t now_ms = 0;  // the last OnTick's clock; 0 until the first (OnTick asserts > 0)
  bool joined = false;
  std::map<uint32_t, std::set<uint32_t>> members;  // nodeid -> pids
  struct NodeRecord {
    std::string name;
    bool eligible = false;
    bool known = false;
  };
  std::map<uint32_t, NodeRecord> nodes;
  std::map<std::string, Segment> segs;
  std::map<uint64_t, Handle> handles;
  uint64_t next_handle = 1;
  uint32_t next_request = 1;
  uint32_t next_xfer = 1;
  uint64_t next_token = 1;
  std::map<uint32_t, Pending> pending;            // request_id -> op
  std::map<uint64_t, uint32_t> token_to_request;  // store token -> pending request
  struct AckAfterStore {
    std::string name;
    Version version;
    bool is_fetch = false;
    uint32_t request_id = 0;
  };
  std::map<uint64_t, AckAfterStore> token_to_ack;
  std::map<uint64_t, std::string> token_to_owner_persist;  // store token -> segment
  // ACK(kStored) of completed store ops, multicast at the next TakeReady only if the copy is still
  // held then: a delete or fresh-start claim delivered in between dropped it (and the store op
  // that removes it precedes the ACK), so acknowledging it would count a copy that is gone.
  std::vector<AckMsg> staged_acks;
  // Store ops that must not delay the reply a client waits for (ckptd holds a reply until the
  // store ops before it completed): the persistence of a restored version.  The restore is safe
  // without it: the bytes are in local storage, in memory here, and still on the holder that
  // served them.  Flushed by the next TakeReady without replies while no restore is installing,
  // or before any later store op.
  std::vector<StoreOp> after_reply_ops;
  bool route_after_reply = false;
  std::map<std::pair<uint32_t, uint32_t>, Inbound> inbound;  // (sender, xfer) -> state
  std::deque<Transfer> outgoing;
  // By segment name, so an ACK checks only its segment's waiters (a ckpt_flush_all of thousands
  // of segments would otherwise rescan all of them per ACK).
  std::map<std::string, std::vector<Waiter>> waiters;
  std::map<uint64_t, WaiterGroup> waiter_groups;
  uint64_t next_waiter_group = 1;
  struct CachedRead {
    Version version;
    BlockImage image;
    uint64_t expires_ms = 0;
  };
  std::map<std::string, CachedRead> read_cache;
  std::map<std::string, std::string> published_attrs;
  // Sync barrier (see syncing()).
  std::set<uint32_t> sync_waiting;   // members whose final CATALOG for this round is pending
  std::vector<uint32_t> sync_round;  // membership of the confchg that started the round
  std::vector<std::pair<uint32_t, std::variant<ClaimMsg, ReleaseMsg, DeleteMsg>>> deferred_msgs;
  struct DeferredCall {
    Caller caller;
    int32_t op = 0;
    std::vector<uint8_t> body;
  };
  std::vector<DeferredCall> deferred_calls;
  std::set<std::string> attr_dirty;
  Ready ready;  // accumulating outputs

  explicit Impl(EngineConfig c) : cfg(std::move(c)) {
    nodes[cfg.self_nodeid] = {cfg.node_name, cfg.eligible, true};
  }

  // ---- helpers ------------------------------------------------------------------------------

  bool live(uint32_t nodeid) const { return members.count(nodeid) != 0; }
  uint32_t self() const { return cfg.self_nodeid; }
  std::string node_name(uint32_t id) const {
    auto it = nodes.find(id);
    return it != nodes.end() && it->second.known ? it->second.name : "node" + std::to_string(id);
  }

  Segment* find(const std::string& name) {
    auto it = segs.find(name);
    return it == segs.end() ? nullptr : &it->second;
  }
  Segment* find_live(const std::string& name) {
    Segment* s = find(name);
    return s && !s->cat.deleted ? s : nullptr;
  }

  static SegmentMeta MetaOf(const CatalogEntry& c) {
    SegmentMeta m;
    m.name = c.name;
    m.size = c.size;
    m.uid = c.uid;
    m.gid = c.gid;
    m.mode = c.mode;
    m.replicas = c.replicas;
    m.versions_kept = c.versions_kept;
    m.durability = c.durability;
    m.compression = c.compression;
    m.epoch = c.epoch;
    m.owner_nodeid = c.owner;
    return m;
  }

  static CatalogEntry EntryOf(const SegmentMeta& m) {
    CatalogEntry c;
    c.name = m.name;
    c.size = m.size;
    c.uid = m.uid;
    c.gid = m.gid;
    c.mode = m.mode;
    c.replicas = m.replicas;
    c.versions_kept = m.versions_kept;
    c.durability = m.durability;
    c.compression = m.compression;
    c.epoch = m.epoch;
    c.owner = m.owner_nodeid;
    return c;
  }

  Version holder_version(const Segment& s, uint32_t node) const {
    for (auto& h : s.cat.holders)
      if (h.nodeid == node) return h.version;
    return {};
  }
  void set_holder(Segment& s, uint32_t node, Version v) {
    for (auto& h : s.cat.holders) {
      if (h.nodeid == node) {
        if (v > h.version) h.version = v;
        attr_dirty.insert(s.cat.name);
        return;
      }
    }
    s.cat.holders.push_back({node, v});
    attr_dirty.insert(s.cat.name);
  }
  void clear_holder(Segment& s, uint32_t node) {
    std::erase_if(s.cat.holders, [&](const HolderEntry& h) { return h.nodeid == node; });
    attr_dirty.insert(s.cat.name);
  }

  std::vector<uint32_t> targets(const Segment& s) const {
    std::vector<std::pair<uint64_t, uint32_t>> cands;
    for (auto& [id, pids] : members) {
      if (id == s.cat.owner) continue;
      auto it = nodes.find(id);
      if (it == nodes.end() || !it->second.known || !it->second.eligible) continue;
      cands.push_back({RendezvousScore(s.cat.name, id), id});
    }
    std::sort(cands.begin(), cands.end(), std::greater<>());
    std::vector<uint32_t> out;
    for (size_t i = 0; i < cands.size() && i < s.cat.replicas; i++) out.push_back(cands[i].second);
    std::sort(out.begin(), out.end());
    return out;
  }
  uint32_t eligible_peers(const Segment& s) const {
    uint32_t n = 0;
    for (auto& [id, pids] : members) {
      if (id == s.cat.owner) continue;
      auto it = nodes.find(id);
      if (it != nodes.end() && it->second.known && it->second.eligible) n++;
    }
    return n;
  }
  // Live nodes other than the owner whose acknowledged version is >= v.
  uint32_t copies_at_least(const Segment& s, Version v) const {
    uint32_t n = 0;
    for (auto& h : s.cat.holders)
      if (h.nodeid != s.cat.owner && live(h.nodeid) && h.version >= v) n++;
    return n;
  }

  bool permitted(const Caller& c, const CatalogEntry& e, bool write) const {
    if (c.uid == 0 || c.uid == e.uid) return true;
    uint32_t bit = write ? 2 : 4;
    if (c.gid == e.gid && (e.mode & (bit << 3))) return true;
    return (e.mode & bit) != 0;
  }

  // Bytes of the segments held here (cat.size of each with a local copy): the max-total-bytes
  // admission check runs on every create and every first replica version, so it is a running
  // total, not a scan of the catalog (with 10,000 segments the scans were over half of ckptd's
  // CPU while creating them).  Invariant (check_invariants): held_bytes == the sum over segs of
  // (local.empty() ? 0 : cat.size), which holds because sync_held(s) runs after every change to
  // s.local's emptiness or s.cat.size.
  uint64_t held_bytes = 0;
  uint64_t bytes_held() const { return held_bytes; }
  void sync_held(Segment& s) {
    uint64_t now = s.local.empty() ? 0 : s.cat.size;
    held_bytes = held_bytes - s.held_counted + now;
    s.held_counted = now;
  }

  // Segments whose wire_xfer or last_transfer_ms timer may be running (a superset): tick() looks
  // at these only, so an idle catalog costs nothing per tick (scanning all 8,000 segments every
  // 100 ms, and rescheduling every owned one whose last transfer was over kAckWaitMs ago, kept
  // an idle owner's ckptd at 10% of a CPU).  Added where a transfer starts; tick() drops a
  // segment once both of its timers are off.
  std::set<std::string> timed;

  // O(catalog) consistency checks of derived state; the daemon runs them every few seconds, the
  // simulator after every store completion and tick.
  void check_invariants() const {
    uint64_t held = 0;
    for (auto& [name, s] : segs) {
      if (!s.local.empty()) held += s.cat.size;
      CKPT_ASSERT((s.wire_xfer == 0 && s.last_transfer_ms == 0) || timed.count(name));
    }
    CKPT_ASSERT(held == held_bytes);
  }

  // Registers a client operation that spans messages; timeout_ms 0 = the pull default.
  uint32_t new_pending(Pending::Kind kind, Pending::Stage stage, const Caller& c, int32_t op,
                       const std::string& name, uint64_t timeout_ms) {
    uint32_t rid = next_request++;
    Pending& p = pending[rid];
    p.kind = kind;
    p.stage = stage;
    p.caller = c;
    p.op = op;
    p.name = name;
    p.deadline_ms = now_ms + (timeout_ms ? timeout_ms : cfg.default_pull_timeout_ms);
    return rid;
  }

  uint64_t token_for(uint32_t request_id) {
    uint64_t t = next_token++;
    token_to_request[t] = request_id;
    pending[request_id].tokens_outstanding++;
    return t;
  }

  std::string local_path(const std::string& name) const { return cfg.shm_dir + "/" + name; }

  // ---- outputs ------------------------------------------------------------------------------

  template <class T>
  void send(const T& msg) {
    ready.sends.push_back(Encode(msg));
  }

  template <class T>
  void reply(uint64_t conn, int32_t op, const Status& st, const T& body) {
    ready.replies.push_back({conn, op, ipc::EncodeResponse(st, body)});
  }
  void reply_status(uint64_t conn, int32_t op, const Status& st) {
    reply(conn, op, st, ipc::EmptyMsg{});
  }
  void async_error(const Handle& h, uint64_t handle, const Status& st) {
    // The event's own fields carry the failure; the response status is OK so they are encoded.
    ipc::AsyncErrorEvent ev{handle, st.c_code(), st.ToString()};
    ready.events.push_back({h.conn_id, ipc::kAsyncError, ipc::EncodeResponse(Status::Ok(), ev)});
  }

  void store_op(StoreOp op) {
    if (route_after_reply) return after_reply_ops.push_back(std::move(op));
    flush_after_reply_ops();  // keeps the store's order: deferred ops precede any later one
    ready.store_ops.push_back(std::move(op));
  }
  bool restore_installing() const {
    return std::any_of(pending.begin(), pending.end(),
                       [](const auto& kv) { return kv.second.stage == Pending::kInstalling; });
  }
  void flush_after_reply_ops() {
    for (StoreOp& op : after_reply_ops) ready.store_ops.push_back(std::move(op));
    after_reply_ops.clear();
  }

  // ---- stream-stored transfers (Inbound::streaming) -------------------------------------------
  // The store op of a stream step, given as its version-file kind (kStreamBegin..kStreamAbort);
  // a local-storage stream gets the kLocal* twin.
  StoreOp stream_op(StoreOp::Kind kind, const Inbound& in) const {
    StoreOp op;
    op.kind = kind;
    if (in.stream_local) {
      CKPT_ASSERT(kind >= StoreOp::kStreamBegin && kind <= StoreOp::kStreamAbort);
      op.kind = StoreOp::Kind(StoreOp::kLocalBegin + (kind - StoreOp::kStreamBegin));
    }
    op.meta.name = in.header.name;
    op.meta.size = in.header.size;
    op.version = in.header.version;
    return op;
  }
  // Local storage is independent of the version files: its ops, like install_local's, do not
  // wait behind a restored version's deferred persistence (after_reply_ops).
  void submit_stream_op(StoreOp op, const Inbound& in) {
    if (in.stream_local) return ready.store_ops.push_back(std::move(op));
    store_op(std::move(op));
  }
  // Called for chunk 0 of an accepted transfer: a replica's large full copy streams into its
  // version file, a pull's (or an open's) large restore into the local storage.
  void maybe_begin_stream(Inbound& in) {
    const DataHeader& h = in.header;
    const bool fetch = h.kind == uint8_t(DataKind::kFetch);
    if ((h.kind != uint8_t(DataKind::kReplicate) && !fetch) || !h.base.empty() ||
        h.chunk_count < 2 || h.size < cfg.stream_store_min_bytes)
      return;
    if (fetch) {
      auto pit = pending.find(h.request_id);
      if (pit == pending.end() || pit->second.kind == Pending::kRead) return;  // kept in memory
      in.stream_local = true;
    }
    StoreOp op = stream_op(StoreOp::kStreamBegin, in);
    op.checksum = h.checksum;
    submit_stream_op(std::move(op), in);
    in.streaming = true;
    in.streamed = 0;
  }
  // After a chunk's pieces were written into in.image: hands the store the new contiguous bytes
  // from offset 0; pieces out of order end the stream (the version is then written whole).
  void stream_received(Inbound& in) {
    if (!in.streaming) return;
    if (in.ranges.size() != 1 || in.ranges[0].offset != 0) return abort_stream(in);
    uint64_t upto = in.ranges[0].length;
    if (upto <= in.streamed) return;
    StoreOp op = stream_op(StoreOp::kStreamAppend, in);
    op.image = in.image;  // a snapshot: later chunks clone the blocks they write
    op.offset = in.streamed;
    op.length = upto - in.streamed;
    submit_stream_op(std::move(op), in);
    in.streamed = upto;
  }
  void abort_stream(Inbound& in) {
    if (!in.streaming) return;
    submit_stream_op(stream_op(StoreOp::kStreamAbort, in), in);
    in.streaming = false;
  }
  template <class Pred>
  void drop_inbound_if(Pred pred) {
    for (auto it = inbound.begin(); it != inbound.end();) {
      if (pred(*it)) {
        abort_stream(it->second);
        it = inbound.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Writes the segment's meta record when it changed since the last write (or a token asks).
  void persist_meta(Segment& s, uint64_t token = 0) {
    SegmentMeta meta = MetaOf(s.cat);
    if (token == 0 && s.meta_persisted && s.persisted_meta == meta) return;
    s.persisted_meta = meta;
    StoreOp op;
    op.kind = StoreOp::kPutMeta;
    op.meta = MetaOf(s.cat);
    op.fsync = s.cat.durability == CKPT_DURABILITY_FSYNC;
    op.token = token;
    store_op(std::move(op));
    s.meta_persisted = true;
  }

  // Stores local copy `idx` of s (full, or delta on the previous persisted copy).
  void persist_version(Segment& s, size_t idx, const std::vector<ByteRange>* ranges,
                       uint64_t token) {
    LocalCopy& c = s.local[idx];
    StoreOp op;
    op.meta.name = s.cat.name;
    op.version = c.version;
    op.image = c.image;
    op.fsync = s.cat.durability == CKPT_DURABILITY_FSYNC;
    op.token = token;
    if (ranges && idx > 0 && s.local[idx - 1].persisted) {
      op.kind = StoreOp::kPutDelta;
      op.base = s.local[idx - 1].version;
      op.ranges = *ranges;
    } else {
      op.kind = StoreOp::kPutFull;
    }
    store_op(std::move(op));
    c.persisted = true;  // optimistic; a failed store op clears it (see OnStoreDone)
  }

  // Union of the ranges committed after `base` up to the latest version, if the history chain
  // reaches back to `base`.
  static std::optional<std::vector<ByteRange>> RangesSince(const Segment& s, Version base) {
    std::optional<size_t> pos = base.empty() ? std::nullopt : ChainPosition(s, base);
    if (!pos) return std::nullopt;
    std::vector<ByteRange> ranges;
    for (size_t i = *pos; i < s.history.size(); i++)
      ranges.insert(ranges.end(), s.history[i].second.begin(), s.history[i].second.end());
    return MergeRanges(std::move(ranges));
  }

  // Writes the owner's in-place copy (local.back()) to the store unless an op is in flight: a
  // delta on owner_stored when the history reaches it, else whole; then prunes older files.
  void persist_owner_latest(Segment& s) {
    if (s.owner_persist_token != 0 || s.local.empty()) return;
    LocalCopy& c = s.local.back();
    if (c.persisted) return;
    StoreOp op;
    op.meta.name = s.cat.name;
    op.version = c.version;
    op.image = c.image;
    op.fsync = s.cat.durability == CKPT_DURABILITY_FSYNC;
    std::optional<std::vector<ByteRange>> ranges = RangesSince(s, s.owner_stored);
    if (ranges) {
      op.kind = StoreOp::kPutDelta;
      op.base = s.owner_stored;
      op.ranges = std::move(*ranges);
    } else {
      op.kind = StoreOp::kPutFull;
    }
    op.token = next_token++;
    s.owner_persist_token = op.token;
    token_to_owner_persist[op.token] = s.cat.name;
    store_op(std::move(op));
    StoreOp prune;
    prune.kind = StoreOp::kPrune;
    prune.meta.name = s.cat.name;
    prune.version = c.version;
    store_op(std::move(prune));
    c.persisted = true;  // optimistic, as persist_version; a failure clears it
    s.owner_stored = c.version;
  }

  void owner_persist_done(const std::string& name, uint64_t token, const Status& st) {
    auto it = segs.find(name);
    if (it == segs.end() || it->second.owner_persist_token != token) return;
    Segment& s = it->second;
    s.owner_persist_token = 0;
    if (!st.ok()) {
      // The store's state for this segment is unknown: the next write is whole.  No retry loop
      // here (a full disk would spin): the next commit tries again.
      s.owner_stored = Version{};
      if (!s.local.empty()) s.local.back().persisted = false;
      return;
    }
    persist_owner_latest(s);  // commits that arrived meanwhile
  }

  void trim_local(Segment& s) {
    size_t keep = std::max<uint32_t>(1, s.cat.versions_kept);
    if (s.local.size() <= keep) return;
    while (s.local.size() > keep) s.local.pop_front();
    StoreOp op;
    op.kind = StoreOp::kPrune;
    op.meta.name = s.cat.name;
    op.version = s.local.front().version;
    store_op(std::move(op));
  }

  void drop_local(Segment& s, bool remove_global) {
    if (!s.local.empty() || s.meta_persisted) {
      StoreOp op;
      op.kind = StoreOp::kDropSegment;
      op.meta.name = s.cat.name;
      op.fsync = remove_global;
      store_op(std::move(op));
    }
    s.local.clear();
    sync_held(s);
    s.meta_persisted = false;
    s.history.clear();
    s.sent.clear();
    s.force_full.clear();
    attr_dirty.insert(s.cat.name);
  }

  // This node stops being the owner of s (claim by another node, merge, delete, release).
  void lose_ownership(Segment& s, const Status& why) {
    s.history.clear();
    s.sent.clear();
    s.force_full.clear();
    std::erase_if(outgoing, [&](const Transfer& t) {
      return t.header.name == s.cat.name && t.header.kind == uint8_t(DataKind::kReplicate);
    });
    s.xfer_active = false;
    s.wire_xfer = 0;
    if (s.writer_handle) {
      auto it = handles.find(s.writer_handle);
      if (it != handles.end()) it->second.fenced = true;
    }
    if (auto it = waiters.find(s.cat.name); it != waiters.end())
      for (const Waiter& w : take_waiters(it, [](const Waiter&) { return true; })) answer(w, why);
  }

  // ---- catalog ------------------------------------------------------------------------------

  // Join of a catalog entry from a peer into ours (see the header comment).
  void merge(const CatalogEntry& in, uint32_t from) {
    Status st = ValidateSegmentName(in.name);
    if (!st.ok() || in.size > cfg.max_segment_bytes || in.replicas == 0) {
      counters.messages_dropped++;
      return;
    }
    auto [it, inserted] = segs.try_emplace(in.name);
    Segment& s = it->second;
    if (inserted) {
      s.cat = in;
      s.cat.holders.clear();
      sync_held(s);
    } else if (in.epoch > s.cat.epoch || (in.epoch == s.cat.epoch && in.owner != s.cat.owner &&
                                          (in.latest > s.cat.latest || (in.latest == s.cat.latest &&
                                                                        in.owner > s.cat.owner)))) {
      bool was_owner = s.cat.owner == self();
      std::vector<HolderEntry> holders = std::move(s.cat.holders);
      Version latest = std::max(s.cat.latest, in.latest);
      s.cat = in;
      s.cat.holders = std::move(holders);
      s.cat.latest = in.deleted ? Version{} : latest;
      sync_held(s);
      if (was_owner && s.cat.owner != self())
        lose_ownership(s, Err(Code::kFenced, "segment '" + in.name + "' is owned by " +
                                                 node_name(s.cat.owner) + " now"));
      if (s.cat.deleted) {
        s.cat.holders.clear();
        drop_local(s, false);
        return;
      }
    } else if (in.epoch == s.cat.epoch) {
      s.cat.latest = std::max(s.cat.latest, in.latest);
    }
    if (s.cat.deleted) return;
    for (auto& h : in.holders)
      if (h.nodeid != self()) set_holder(s, h.nodeid, h.version);
    attr_dirty.insert(in.name);
  }

  CatalogEntry entry_for_sync(const Segment& s) const {
    CatalogEntry e = s.cat;
    // Our own holdings are reported from local truth.
    std::erase_if(e.holders, [&](const HolderEntry& h) { return h.nodeid == self(); });
    if (!s.local.empty() && !s.local.back().version.empty() &&
        !(s.cat.owner == self() && s.local.back().version.seq == 0 && s.local.size() == 1 &&
          !s.local.back().persisted))
      e.holders.push_back({self(), s.local.back().version});
    return e;
  }

  std::vector<uint32_t> member_ids() const {
    std::vector<uint32_t> ids;
    for (auto& [id, pids] : members) ids.push_back(id);
    return ids;
  }

  // The whole catalog in messages of <= kMaxCatalogMessageBytes; the last one is final.
  void send_catalog() {
    CatalogMsg msg;
    size_t bytes = 0;
    for (auto& [name, s] : segs) {
      msg.entries.push_back(entry_for_sync(s));
      bytes += 128 + name.size() + 24 * msg.entries.back().holders.size();
      if (bytes >= kMaxCatalogMessageBytes) {
        send(msg);
        msg.entries.clear();
        bytes = 0;
      }
    }
    msg.final = 1;
    msg.view_members = member_ids();
    send(msg);
  }

  // ---- sync barrier -------------------------------------------------------------------------
  // Between a confchg with joiners and the delivery of every member's final CATALOG, catalogs may
  // differ (a joiner knows only its disk, two merged partitions know only their side).  Ownership
  // compare-and-swaps (CLAIM, RELEASE, DELETE) are deferred until then and replayed in delivery
  // order, so every member evaluates them on the same merged catalog; client operations that
  // read the catalog to decide (open, pull, release, delete, read) wait too.
  bool syncing() const { return !sync_waiting.empty(); }

  template <class T>
  bool defer_if_syncing(uint32_t from, const T& m) {
    if (!syncing()) return false;
    deferred_msgs.push_back({from, m});
    return true;
  }

  void finish_sync() {
    auto msgs = std::move(deferred_msgs);
    deferred_msgs.clear();
    for (auto& [from, m] : msgs) std::visit([&](auto& x) { on_msg(from, x); }, m);
    auto calls = std::move(deferred_calls);
    deferred_calls.clear();
    for (auto& d : calls) client(d.caller, d.op, d.body);
    schedule_all();
    check_waiters();
  }

  // ---- replication (owner side) -------------------------------------------------------------

  bool is_owner(const Segment& s) const {
    return !s.cat.deleted && s.cat.owner == self() && !s.local.empty();
  }
  // The owner's initial zero version before the first commit is not a checkpoint.
  static bool has_checkpoint(const Segment& s) {
    return !s.local.empty() && s.local.back().version.seq > 0;
  }

  // Index of the first history entry a holder of `v` still lacks, if `v` is on the chain and
  // behind its end.
  static std::optional<size_t> ChainPosition(const Segment& s, Version v) {
    if (s.history.empty()) return std::nullopt;
    if (v == s.history_base) return 0;
    for (size_t i = 0; i + 1 < s.history.size(); i++)
      if (s.history[i].first == v) return i + 1;
    return std::nullopt;
  }

  void push_history(Segment& s, Version base, Version v, std::vector<ByteRange> ranges) {
    if (s.history.empty() || s.history.back().first != base) {
      s.history.clear();
      s.history_base = base;
    }
    s.history.push_back({v, std::move(ranges)});
    while (s.history.size() > kMaxHistoryEntries) {
      s.history_base = s.history.front().first;
      s.history.pop_front();
    }
  }

  // After a claim restored `local.back()` here (pull, local restore, global copy): relabel it
  // into this owner's epoch.  The new owner's line is then distinguishable from anything the
  // previous owner committed later under the old epoch (e.g. in another partition): holders of
  // exactly the restored version get a zero-byte delta, every other holder a full copy.
  // Its store ops wait until after the restore's reply (see after_reply_ops).
  void adopt_restored(Segment& s) {
    route_after_reply = true;
    relabel_restored(s);
    route_after_reply = false;
  }
  void relabel_restored(Segment& s) {
    LocalCopy& c = s.local.back();
    const Version old = c.version;
    const Version nv{s.cat.epoch, old.seq};
    s.history.clear();
    s.sent.clear();
    if (nv <= old) {  // already labelled in (or above) this epoch: nothing to relabel
      s.cat.latest = std::max(s.cat.latest, old);
      set_holder(s, self(), old);
      if (!c.persisted) persist_version(s, s.local.size() - 1, nullptr, /*token=*/0);
      return;
    }
    c.version = nv;
    StoreOp op;
    op.meta.name = s.cat.name;
    op.version = nv;
    op.image = c.image;
    op.fsync = s.cat.durability == CKPT_DURABILITY_FSYNC;
    op.kind = c.persisted ? StoreOp::kPutDelta : StoreOp::kPutFull;
    if (c.persisted) op.base = old;
    store_op(std::move(op));
    c.persisted = true;
    push_history(s, old, nv, {});
    s.cat.latest = std::max(s.cat.latest, nv);
    set_holder(s, self(), nv);
  }

  void schedule(Segment& s) {
    if (!joined || !is_owner(s) || s.xfer_active || s.wire_xfer != 0 || !has_checkpoint(s)) return;
    const LocalCopy& latest = s.local.back();
    std::vector<uint32_t> tg = targets(s);
    std::erase_if(s.sent,
                  [&](auto& kv) { return std::find(tg.begin(), tg.end(), kv.first) == tg.end(); });
    if (now_ms < s.last_transfer_ms + kAckWaitMs) {
      for (uint32_t t : tg) {
        auto it = s.sent.find(t);
        if (it != s.sent.end() && it->second > holder_version(s, t)) return;  // unacknowledged
      }
    }
    std::map<Version, std::vector<uint32_t>> by_base;  // current version -> targets
    std::vector<uint32_t> need_full;
    for (uint32_t t : tg) {
      // A member whose CATALOG for this sync round is still on its way may hold the latest
      // already (a restarted replica announces its store there): nothing is sent to it before
      // then; the catalog's delivery schedules again.
      if (sync_waiting.count(t)) continue;
      Version cur = std::max(s.sent[t], holder_version(s, t));
      if (s.force_full.count(t)) cur = s.sent[t];
      if (cur >= latest.version) continue;
      bool delta_ok = !cur.empty() && ChainPosition(s, cur).has_value();
      if (delta_ok)
        by_base[cur].push_back(t);
      else
        need_full.push_back(t);
    }
    Transfer x;
    x.header.name = s.cat.name;
    x.header.xfer_id = next_xfer++;
    x.header.version = latest.version;
    x.header.size = s.cat.size;
    x.header.checksum = latest.image.checksum();
    x.header.kind = uint8_t(DataKind::kReplicate);
    x.snapshot = latest.image;
    x.compress = s.cat.compression == CKPT_COMPRESSION_ZSTD;
    if (!by_base.empty()) {
      auto best = std::max_element(by_base.begin(), by_base.end(), [](auto& a, auto& b) {
        return a.second.size() < b.second.size() ||
               (a.second.size() == b.second.size() && a.first < b.first);
      });
      std::vector<ByteRange> ranges;
      for (size_t i = *ChainPosition(s, best->first); i < s.history.size(); i++)
        ranges.insert(ranges.end(), s.history[i].second.begin(), s.history[i].second.end());
      ranges = MergeRanges(std::move(ranges));
      if (TotalBytes(ranges) < s.cat.size) {
        x.header.base = best->first;
        x.header.targets = best->second;
        x.ranges = std::move(ranges);
        counters.delta_transfers_sent++;
      } else {
        need_full.insert(need_full.end(), best->second.begin(), best->second.end());
      }
    }
    if (x.header.targets.empty()) {
      if (need_full.empty()) return;
      x.header.targets = need_full;
      x.ranges = {{0, s.cat.size}};
      counters.full_transfers_sent++;
    }
    std::sort(x.header.targets.begin(), x.header.targets.end());
    x.header.chunk_count = ChunkCount(x.ranges);
    for (uint32_t t : x.header.targets) {
      s.sent[t] = latest.version;
      if (x.header.base.empty()) s.force_full.erase(t);
    }
    s.xfer_active = true;
    s.wire_xfer = x.header.xfer_id;
    s.wire_since_ms = now_ms;
    s.last_transfer_ms = now_ms;
    timed.insert(s.cat.name);
    outgoing.push_back(std::move(x));
  }

  void schedule_all() {
    for (auto& [name, s] : segs) schedule(s);
  }

  // Chunks emit_chunk() will produce for `ranges` (same packing rule: pieces of one range up to
  // chunk_bytes of payload plus kPieceOverheadBytes each).
  uint32_t ChunkCount(const std::vector<ByteRange>& ranges) const {
    uint64_t chunks = 1, budget = cfg.chunk_bytes;
    for (const ByteRange& r : ranges) {
      uint64_t left = r.length;
      while (left > 0) {
        if (budget <= kPieceOverheadBytes) {
          chunks++;
          budget = cfg.chunk_bytes;
        }
        uint64_t n = std::min(budget - kPieceOverheadBytes, left);
        left -= n;
        budget -= n + kPieceOverheadBytes;
      }
    }
    return static_cast<uint32_t>(chunks);
  }

  // Emits the next chunk of `x`; returns true when the transfer is complete.
  bool emit_chunk(Transfer& x) {
    std::vector<PieceSpec> pieces;
    uint64_t budget = cfg.chunk_bytes, total = 0;
    // Gather up to chunk_bytes of pieces (ChunkCount's rule).
    while (budget > 0 && x.range_index < x.ranges.size()) {
      const ByteRange& r = x.ranges[x.range_index];
      uint64_t off = r.offset + x.range_offset;
      if (budget <= kPieceOverheadBytes) break;
      uint64_t n = std::min(budget - kPieceOverheadBytes, r.length - x.range_offset);
      pieces.push_back({off, n});
      total += n;
      budget -= n + kPieceOverheadBytes;
      x.range_offset += n;
      if (x.range_offset == r.length) {
        x.range_index++;
        x.range_offset = 0;
      }
    }
    // The snapshot's bytes go straight into the message (no intermediate buffer).
    ready.sends.push_back(EncodeData(
        x.header, pieces,
        [&](size_t i, std::vector<uint8_t>* out) {
          x.snapshot.AppendTo(pieces[i].offset, pieces[i].length, out);
        },
        x.compress));
    counters.data_wire_bytes_sent += ready.sends.back().size();
    counters.payload_bytes_sent += total;
    x.header.chunk_index++;
    return x.header.chunk_index >= x.header.chunk_count;
  }

  void finish_transfer(const Transfer& x) {
    if (x.header.kind != uint8_t(DataKind::kReplicate)) return;
    Segment* s = find_live(x.header.name);
    if (!s) return;
    s->xfer_active = false;
    s->wire_since_ms = now_ms;  // the wire timeout runs from the last chunk's emission
    schedule(*s);
  }

  void fill_sends(size_t budget) {
    size_t used = 0;
    while (!outgoing.empty() && used < budget) {
      Transfer x = std::move(outgoing.front());
      outgoing.pop_front();
      size_t before = ready.sends.size();
      bool done = emit_chunk(x);
      used += ready.sends[before].size();
      if (done) {
        finish_transfer(x);
      } else {
        outgoing.push_back(std::move(x));  // round-robin between transfers
      }
    }
  }

  // ---- waiters ------------------------------------------------------------------------------

  // Answers a finished waiter (satisfied: `st` OK; failed or timed out): directly, or through its
  // ckpt_flush_all group.
  void answer(const Waiter& w, const Status& st) {
    if (w.group == 0) {
      if (st.ok() && w.op == ipc::kCommit)
        reply(w.conn_id, w.op, st, ipc::CommitResp{w.version});
      else
        reply_status(w.conn_id, w.op, st);
      return;
    }
    auto g = waiter_groups.find(w.group);
    if (g == waiter_groups.end()) return;  // its client went away
    CKPT_ASSERT(g->second.waiting > 0);
    g->second.waiting--;
    if (!g->second.answered && (!st.ok() || g->second.waiting == 0)) {
      reply_status(w.conn_id, w.op, st);
      g->second.answered = true;
    }
    if (g->second.waiting == 0) waiter_groups.erase(g);
  }

  using WaiterMap = std::map<std::string, std::vector<Waiter>>;
  // Takes the waiters of `entry` for which `finished` holds out of the map (the entry goes once
  // empty), in their order.
  template <class Pred>
  std::vector<Waiter> take_waiters(WaiterMap::iterator entry, Pred finished) {
    std::vector<Waiter> done;
    std::erase_if(entry->second, [&](Waiter& w) {
      if (!finished(w)) return false;
      done.push_back(std::move(w));
      return true;
    });
    if (entry->second.empty()) waiters.erase(entry);
    return done;
  }

  void check_waiters() {
    for (auto it = waiters.begin(); it != waiters.end();) {
      auto next = std::next(it);
      check_waiters_of(it);  // may erase `it`, nothing else
      it = next;
    }
  }
  void check_waiters_of(const std::string& name) {
    if (auto it = waiters.find(name); it != waiters.end()) check_waiters_of(it);
  }
  void check_waiters_of(WaiterMap::iterator entry) {
    const std::string name = entry->first;  // a copy: the entry may go below
    Segment* s = find_live(name);
    const bool owned = s && s->cat.owner == self();
    auto done = take_waiters(entry, [&](const Waiter& w) {
      return !owned || copies_at_least(*s, w.version) >= s->cat.replicas;
    });
    for (const Waiter& w : done) {
      if (!owned) {
        answer(w, Err(Code::kFenced, "segment '" + name + "' is no longer owned here"));
      } else if (w.release_after) {
        send(ReleaseMsg{s->cat.name, s->cat.epoch});
        // The reply is sent when the RELEASE is delivered.
        release_waiters[s->cat.name].push_back({w.conn_id, w.op});
      } else {
        answer(w, Status::Ok());
      }
    }
  }
  std::map<std::string, std::vector<std::pair<uint64_t, int32_t>>> release_waiters;

  // Whether enough eligible members exist for s's R acknowledgements to be possible at all.
  Status replicas_available(const Segment& s) {
    if (eligible_peers(s) >= s.cat.replicas) return Status::Ok();
    return Err(Code::kNotEnoughReplicas,
               "segment '" + s.cat.name + "' wants " + std::to_string(s.cat.replicas) +
                   " replicas but only " + std::to_string(eligible_peers(s)) +
                   " eligible nodes are members");
  }

  // `group`: a ckpt_flush_all's (op_flush_all checked replicas_available beforehand).
  void add_waiter(const Caller& c, int32_t op, Segment& s, Version v, uint32_t timeout_ms,
                  bool release_after, uint64_t group = 0) {
    if (Status st = replicas_available(s); !st.ok() && !release_after)
      return reply_status(c.conn_id, op, st);
    uint64_t t = timeout_ms ? timeout_ms : cfg.default_sync_timeout_ms;
    waiters[s.cat.name].push_back({c.conn_id, op, v, now_ms + t, release_after, group});
    check_waiters_of(s.cat.name);
  }

  // The live segment `h` writes, while it is owned here and `h` is not fenced; else nullptr.
  Segment* owned_by(const Handle& h) {
    Segment* s = find_live(h.name);
    return s && !h.fenced && s->cat.owner == self() ? s : nullptr;
  }

  // ---- client operations --------------------------------------------------------------------

  Status unavailable() const {
    return Err(Code::kUnavailable, "ckptd is not connected to the cluster (corosync CPG)");
  }

  // The live segment `name`, or nullptr after replying CKPT_ERR_NOT_FOUND.
  Segment* FindOrReply(const Caller& c, int32_t op, const std::string& name) {
    Segment* s = find_live(name);
    if (!s) reply_status(c.conn_id, op, Err(Code::kNotFound, "no segment named '" + name + "'"));
    return s;
  }

  // Decodes a request that names a segment and checks the name; on failure replies and returns
  // false.
  template <class Req>
  bool DecodeNamed(const Caller& c, int32_t op, std::span<const uint8_t> body, Req* req) {
    Status st = ipc::DecodeRequest(body, req);
    if (st.ok()) st = ValidateSegmentName(req->name);
    if (!st.ok()) reply_status(c.conn_id, op, st);
    return st.ok();
  }

  void client(const Caller& c, int32_t op, std::span<const uint8_t> body) {
    bool reads_catalog_to_decide = op == ipc::kOpen || op == ipc::kPull || op == ipc::kRelease ||
                                   op == ipc::kDelete || op == ipc::kRead;
    if (syncing() && reads_catalog_to_decide) {
      if (deferred_calls.size() >= kMaxDeferredCalls)
        return reply_status(c.conn_id, op,
                            Err(Code::kUnavailable, "ckptd is synchronizing with the cluster"));
      deferred_calls.push_back({c, op, std::vector<uint8_t>(body.begin(), body.end())});
      return;
    }
    switch (op) {
      case ipc::kHello: {
        ipc::HelloReq req;
        Status st = ipc::DecodeRequest(body, &req);
        reply(c.conn_id, op, st, ipc::HelloResp{self(), ipc::kMaxMessageBytes});
        return;
      }
      case ipc::kOpen:
        return op_open(c, body);
      case ipc::kCommit:
        return op_commit(c, body);
      case ipc::kFlush:
        return op_flush(c, body);
      case ipc::kFlushAll:
        return op_flush_all(c, body);
      case ipc::kClose:
        return op_close(c, body);
      case ipc::kPull:
        return op_pull(c, body);
      case ipc::kRelease:
        return op_release(c, body);
      case ipc::kRead:
        return op_read(c, body);
      case ipc::kDelete:
        return op_delete(c, body);
      case ipc::kStat:
        return op_stat(c, body);
      case ipc::kList:
        return op_list(c, body);
      case ipc::kVersions:
        return op_versions(c, body);
      case ipc::kClusterStatus:
        return op_cluster_status(c, body);
      default:
        reply_status(c.conn_id, op,
                     Err(Code::kProtocol, "unknown IPC request " + std::to_string(op)));
    }
  }

  // Grants a writer handle on an owned segment whose local storage is installed.
  void grant_open(const Caller& c, Segment& s) {
    if (c.conn_id == 0) return;  // the client went away while its open was in flight
    if (s.writer_handle) {
      reply_status(c.conn_id, ipc::kOpen,
                   Err(Code::kBusy, "segment '" + s.cat.name + "' is already open for writing"));
      return;
    }
    uint64_t h = next_handle++;
    Handle& hd = handles[h];
    hd.conn_id = c.conn_id;
    hd.name = s.cat.name;
    hd.epoch = s.cat.epoch;
    s.writer_handle = h;
    reply(c.conn_id, ipc::kOpen, Status::Ok(),
          ipc::OpenResp{h, local_path(s.cat.name), s.cat.size, s.local.back().version,
                        s.cat.versions_kept});
  }

  void op_open(const Caller& c, std::span<const uint8_t> body) {
    ipc::OpenReq req;
    if (!DecodeNamed(c, ipc::kOpen, body, &req)) return;
    Segment* s = find_live(req.name);
    if (s) {
      if (req.size && req.size != s->cat.size)
        return reply_status(c.conn_id, ipc::kOpen,
                            Err(Code::kExists, "segment '" + req.name + "' exists with size " +
                                                   std::to_string(s->cat.size)));
      if (!permitted(c, s->cat, true))
        return reply_status(c.conn_id, ipc::kOpen,
                            Err(Code::kPermission, "no write permission on '" + req.name + "'"));
      if (is_owner(*s) && s->owner_confirmed) {
        if (s->local_installed) return grant_open(c, *s);
        uint32_t rid =
            new_pending(Pending::kOpen, Pending::kInstalling, c, ipc::kOpen, req.name, 0);
        pending[rid].open = req;
        install_local(*s, token_for(rid));
        return;
      }
      bool holders_live = false;
      for (auto& h : s->cat.holders)
        if (live(h.nodeid) && !h.version.empty()) holders_live = true;
      if (req.flags & CKPT_OPEN_PULL)
        return start_pull(c, ipc::kOpen, req.name, req.pull_timeout_ms, &req);
      bool owner_gone = s->cat.owner == 0 || !live(s->cat.owner) || s->cat.owner == self();
      if ((req.flags & CKPT_OPEN_CREATE) && owner_gone && !holders_live)
        return start_claim(c, req, s->cat.epoch);
      return reply_status(c.conn_id, ipc::kOpen,
                          Err(Code::kNotOwner, "segment '" + req.name + "' is owned by " +
                                                   (s->cat.owner ? node_name(s->cat.owner)
                                                                 : std::string("no node")) +
                                                   "; pull it first"));
    }
    if (!(req.flags & CKPT_OPEN_CREATE)) {
      if (req.flags & CKPT_OPEN_PULL)
        return start_pull(c, ipc::kOpen, req.name, req.pull_timeout_ms, &req);
      return reply_status(c.conn_id, ipc::kOpen,
                          Err(Code::kNotFound, "no segment named '" + req.name + "'"));
    }
    if (req.size == 0)
      return reply_status(c.conn_id, ipc::kOpen,
                          Err(Code::kInvalid, "a new segment needs a size > 0"));
    Segment* tomb = find(req.name);
    start_claim(c, req, tomb ? tomb->cat.epoch : 0);
  }

  Status check_limits(uint64_t size) const {
    if (size > cfg.max_segment_bytes)
      return Err(Code::kTooLarge, "segment size " + std::to_string(size) +
                                      " is above max-segment-size " +
                                      std::to_string(cfg.max_segment_bytes));
    if (bytes_held() + size > cfg.max_total_bytes)
      return Err(Code::kNoSpace,
                 "max-total-bytes (" + std::to_string(cfg.max_total_bytes) + ") would be exceeded");
    return Status::Ok();
  }

  // Create or start fresh: CLAIM with reset.
  void start_claim(const Caller& c, const ipc::OpenReq& req, uint64_t expected_epoch) {
    if (!joined) return reply_status(c.conn_id, ipc::kOpen, unavailable());
    uint64_t size = req.size;
    if (size == 0) {
      Segment* s = find(req.name);
      size = s ? s->cat.size : 0;
    }
    if (size == 0)
      return reply_status(c.conn_id, ipc::kOpen, Err(Code::kInvalid, "a new segment needs a size"));
    Status st = check_limits(size);
    if (!st.ok()) return reply_status(c.conn_id, ipc::kOpen, st);
    if (req.durability > CKPT_DURABILITY_FSYNC)
      return reply_status(c.conn_id, ipc::kOpen, Err(Code::kInvalid, "unknown durability"));
    uint32_t rid = new_pending(Pending::kOpen, Pending::kClaiming, c, ipc::kOpen, req.name, 0);
    Pending& p = pending[rid];
    p.open = req;
    p.open.size = size;
    ClaimMsg m;
    m.name = req.name;
    m.expected_epoch = expected_epoch;
    m.reset = 1;
    m.size = size;
    m.uid = c.uid;
    m.gid = c.gid;
    m.mode = req.mode ? (req.mode & 0777) : 0600;
    m.replicas = req.replicas ? req.replicas : cfg.default_replicas;
    m.versions_kept = req.versions_kept ? req.versions_kept : cfg.default_versions_kept;
    m.durability = req.durability ? req.durability : cfg.default_durability;
    m.compression = (req.flags & CKPT_OPEN_COMPRESS) ? uint32_t{CKPT_COMPRESSION_ZSTD}
                                                     : cfg.default_compression;
    m.request_id = rid;
    send(m);
  }

  void op_commit(const Caller& c, std::span<const uint8_t> body) {
    ipc::CommitReq req;
    std::span<const uint8_t> data;
    Status st = ipc::DecodeRequest(body, &req, &data);
    bool sync_reply =
        st.ok() ? (req.flags & ipc::kCommitSync) && !(req.flags & ipc::kCommitMorePartsFollow)
                : true;
    auto fail = [&](Status why, Handle* h) {
      if (sync_reply) return reply_status(c.conn_id, ipc::kCommit, why);
      if (h) {
        h->pending.reset();
        h->pending_ranges.clear();
        if (h->async_error.ok()) h->async_error = why;
        async_error(*h, req.handle, why);
      }
    };
    if (!st.ok()) return fail(st, nullptr);
    auto hit = handles.find(req.handle);
    if (hit == handles.end() || hit->second.conn_id != c.conn_id)
      return fail(Err(Code::kInvalid, "unknown segment handle"), nullptr);
    Handle& h = hit->second;
    Segment* s = find_live(h.name);
    if (!s) return fail(Err(Code::kNotFound, "segment '" + h.name + "' was deleted"), &h);
    if (h.fenced || s->cat.epoch != h.epoch || s->cat.owner != self())
      return fail(Err(Code::kFenced, "segment '" + h.name + "' is owned by " +
                                         node_name(s->cat.owner) + " now (newer epoch)"),
                  &h);
    auto total = ipc::TotalRangeBytes(req.ranges);
    if (!total || *total != data.size())
      return fail(Err(Code::kProtocol, "commit data does not match its ranges"), &h);
    // This message's ranges, viewed in the IPC buffer and written straight into the image.
    std::vector<std::pair<ByteRange, std::span<const uint8_t>>> part;
    uint64_t pos = 0;
    for (auto& r : req.ranges) {
      if (r.offset > s->cat.size || r.length > s->cat.size - r.offset)
        return fail(Err(Code::kInvalid, "commit range outside the segment"), &h);
      part.push_back({{r.offset, r.length}, data.subspan(pos, r.length)});
      pos += r.length;
    }
    if (req.flags & ipc::kCommitMorePartsFollow) {
      if (!h.pending) h.pending = s->local.back().image;
      for (auto& [r, bytes] : part) {
        h.pending->Write(r.offset, bytes);
        h.pending_ranges.push_back(r);
      }
      return;
    }
    LocalCopy& base = s->local.back();
    Version v{s->cat.epoch, std::max(base.version.seq, s->cat.latest.seq) + 1};
    if ((req.flags & ipc::kCommitCoalesced) && req.expected_seq > v.seq) v.seq = req.expected_seq;
    if (req.expected_seq && req.expected_seq != v.seq) {
      return fail(Err(Code::kProtocol, "commit sequence mismatch (expected " +
                                           std::to_string(req.expected_seq) + ", ckptd at " +
                                           std::to_string(v.seq) + ")"),
                  &h);
    }
    std::vector<ByteRange> ranges = std::move(h.pending_ranges);
    h.pending_ranges.clear();
    bool in_place = s->cat.versions_kept <= 1 && s->local.size() == 1 && base.version.seq > 0;
    LocalCopy next{v, BlockImage(), false};
    if (!in_place) next.image = h.pending ? std::move(*h.pending) : base.image;
    if (in_place && h.pending) base.image = std::move(*h.pending);
    h.pending.reset();
    BlockImage& img = in_place ? base.image : next.image;
    for (auto& [r, bytes] : part) {
      img.Write(r.offset, bytes);
      ranges.push_back(r);
    }
    ranges = MergeRanges(std::move(ranges));
    // What the store holds of the version being replaced (its own truth, per local copy).
    const Version replaced = base.version;
    const bool replaced_stored = base.persisted;
    if (in_place) {
      base.version = v;
    } else {
      s->local.push_back(std::move(next));
    }
    // Persist the owner's copy (delta on the previous stored version when possible).
    size_t idx = s->local.size() - 1;
    push_history(*s, replaced, v, ranges);
    if (in_place) {
      // The previous version was replaced in memory; the store catches up (coalesced).
      // With no op in flight the store holds the replaced version iff it was persisted.
      if (s->owner_persist_token == 0) s->owner_stored = replaced_stored ? replaced : Version{};
      s->local.back().persisted = false;
      persist_owner_latest(*s);
    } else {
      persist_version(*s, idx, &ranges, 0);
      trim_local(*s);
    }
    s->cat.latest = v;
    set_holder(*s, self(), v);
    s->global_dirty = cfg.has_global_dir;
    schedule(*s);
    if (sync_reply) add_waiter(c, ipc::kCommit, *s, v, req.timeout_ms, false);
  }

  void op_flush(const Caller& c, std::span<const uint8_t> body) {
    ipc::HandleReq req;
    Status st = ipc::DecodeRequest(body, &req);
    if (!st.ok()) return reply_status(c.conn_id, ipc::kFlush, st);
    auto it = handles.find(req.handle);
    if (it == handles.end() || it->second.conn_id != c.conn_id)
      return reply_status(c.conn_id, ipc::kFlush, Err(Code::kInvalid, "unknown segment handle"));
    Segment* s = owned_by(it->second);
    if (!s)
      return reply_status(c.conn_id, ipc::kFlush,
                          Err(Code::kFenced, "segment is no longer owned here"));
    if (!has_checkpoint(*s)) return reply_status(c.conn_id, ipc::kFlush, Status::Ok());
    add_waiter(c, ipc::kFlush, *s, s->local.back().version, req.timeout_ms, false);
  }

  // ckpt_flush_all: waits for every segment the client has open here, each up to its latest
  // version, as one group (one answer).  A handle ckpt_flush would refuse fails the whole call.
  void op_flush_all(const Caller& c, std::span<const uint8_t> body) {
    ipc::FlushAllReq req;
    Status st = ipc::DecodeRequest(body, &req);
    if (!st.ok()) return reply_status(c.conn_id, ipc::kFlushAll, st);
    std::vector<Segment*> wait_for;
    for (auto& [h, hd] : handles) {
      if (hd.conn_id != c.conn_id) continue;
      Segment* s = owned_by(hd);
      if (!s)
        return reply_status(
            c.conn_id, ipc::kFlushAll,
            Err(Code::kFenced, "segment '" + hd.name + "' is no longer owned here"));
      if (!has_checkpoint(*s)) continue;
      if (Status r = replicas_available(*s); !r.ok())
        return reply_status(c.conn_id, ipc::kFlushAll, r);
      wait_for.push_back(s);
    }
    if (wait_for.empty()) return reply_status(c.conn_id, ipc::kFlushAll, Status::Ok());
    // The whole group exists before its first member can finish (add_waiter checks at once).
    const uint64_t group = next_waiter_group++;
    waiter_groups[group] = {c.conn_id, wait_for.size(), false};
    for (Segment* s : wait_for)
      add_waiter(c, ipc::kFlushAll, *s, s->local.back().version, req.timeout_ms, false, group);
  }

  void close_handle(uint64_t handle) {
    auto it = handles.find(handle);
    if (it == handles.end()) return;
    Segment* s = find(it->second.name);
    if (s && s->writer_handle == handle) s->writer_handle = 0;
    handles.erase(it);
  }

  void op_close(const Caller& c, std::span<const uint8_t> body) {
    ipc::HandleReq req;
    Status st = ipc::DecodeRequest(body, &req);
    if (st.ok()) {
      auto it = handles.find(req.handle);
      if (it == handles.end() || it->second.conn_id != c.conn_id)
        st = Err(Code::kInvalid, "unknown segment handle");
      else
        close_handle(req.handle);
    }
    reply_status(c.conn_id, ipc::kClose, st);
  }

  // Newest version among live holders (self included); 0 = none.
  std::pair<Version, std::vector<uint32_t>> best_holders(const Segment& s,
                                                         const std::set<uint32_t>& skip) const {
    Version best;
    std::vector<uint32_t> who;
    for (auto& h : s.cat.holders) {
      if (!live(h.nodeid) || h.version.empty() || skip.count(h.nodeid)) continue;
      if (h.version > best) {
        best = h.version;
        who = {h.nodeid};
      } else if (h.version == best) {
        who.push_back(h.nodeid);
      }
    }
    if (!skip.count(self()) && !s.local.empty() && has_checkpoint(s) &&
        s.local.back().version >= best) {
      if (s.local.back().version > best) who.clear();
      best = s.local.back().version;
      if (std::find(who.begin(), who.end(), self()) == who.end()) who.insert(who.begin(), self());
    }
    std::sort(who.begin(), who.end(), [&](uint32_t a, uint32_t b) {
      if (a == self()) return true;
      if (b == self()) return false;
      return a < b;
    });
    return {best, who};
  }

  void start_pull(const Caller& c, int32_t op, const std::string& name, uint32_t timeout_ms,
                  const ipc::OpenReq* open) {
    uint32_t rid = new_pending(open ? Pending::kOpen : Pending::kPull, Pending::kClaiming, c, op,
                               name, timeout_ms);
    Pending& p = pending[rid];
    if (open) p.open = *open;
    Segment* s = find_live(name);
    if (s && !permitted(c, s->cat, true))
      return finish_pending(rid, Err(Code::kPermission, "no write permission on '" + name + "'"));
    if (s && is_owner(*s) && s->owner_confirmed && has_checkpoint(*s)) {
      // Already the owner: restore the committed version into local storage (no network).
      if (s->writer_handle)
        return finish_pending(
            rid, Err(Code::kBusy, "segment '" + name + "' is open for writing by a process"));
      p.stage = Pending::kInstalling;
      p.want = s->local.back().version;
      counters.local_restores++;
      install_local(*s, token_for(rid));
      return;
    }
    if (!joined) return finish_pending(rid, unavailable());
    if (s && s->writer_handle)
      return finish_pending(rid, Err(Code::kBusy, "segment '" + name + "' is open for writing"));
    bool any = s && !best_holders(*s, {}).second.empty();
    if (!any) {
      if (cfg.has_global_dir) {
        p.stage = Pending::kGlobal;
        StoreOp lg;
        lg.kind = StoreOp::kLoadGlobal;
        lg.meta.name = name;
        lg.token = next_token++;
        token_to_request[lg.token] = rid;
        store_op(std::move(lg));
        return;
      }
      return finish_pending(rid, Status(Code::kNoCheckpoint,
                                        "no checkpoint of '" + name + "' exists on any live node"));
    }
    send_claim(rid, s->cat, s->cat.epoch, 0);
  }

  // CLAIM of the segment with `params`' parameters for pending request `rid`.
  void send_claim(uint32_t rid, const CatalogEntry& params, uint64_t expected_epoch,
                  uint64_t min_epoch) {
    pending[rid].stage = Pending::kClaiming;
    ClaimMsg m;
    m.name = params.name;
    m.expected_epoch = expected_epoch;
    m.min_epoch = min_epoch;
    m.size = params.size;
    m.uid = params.uid;
    m.gid = params.gid;
    m.mode = params.mode;
    m.replicas = params.replicas;
    m.versions_kept = params.versions_kept;
    m.durability = params.durability;
    m.compression = params.compression;
    m.request_id = rid;
    send(m);
  }

  void install_local(Segment& s, uint64_t token) {
    StoreOp op;
    op.kind = StoreOp::kInstallLocal;
    op.meta = MetaOf(s.cat);
    op.image = s.local.back().image;
    op.token = token;
    // Local storage is independent of the version files, so the install may overtake a restored
    // version's deferred persistence (after_reply_ops): the application waits for this one.
    ready.store_ops.push_back(std::move(op));
  }

  // Ends a pending operation with `st` (OK: op-specific success reply).
  void finish_pending(uint32_t rid, const Status& st) {
    auto it = pending.find(rid);
    if (it == pending.end()) return;
    Pending p = std::move(it->second);
    pending.erase(it);
    std::erase_if(token_to_request, [&](auto& kv) { return kv.second == rid; });
    Segment* s = find_live(p.name);
    // A restore is installed first and re-protected after: re-replicating the restored version to
    // the new targets competes for CPU and memory with the install the application waits for.
    if (s && is_owner(*s) && p.stage == Pending::kInstalling) schedule(*s);
    if (p.kind == Pending::kOpen) {
      if (st.code() == Code::kNoCheckpoint && (p.open.flags & CKPT_OPEN_CREATE)) {
        Segment* tomb = find(p.name);
        ipc::OpenReq req = p.open;
        req.flags &= ~uint32_t(CKPT_OPEN_PULL);
        return start_claim(p.caller, req, tomb ? tomb->cat.epoch : 0);
      }
      if (!st.ok() || !s || !is_owner(*s)) {
        Status why = st.ok() ? Err(Code::kInternal, "open finished without ownership") : st;
        if (st.code() == Code::kNoCheckpoint)
          why = Err(Code::kNotFound, "no checkpoint of '" + p.name + "' exists on any live node");
        return reply_status(p.caller.conn_id, p.op, why);
      }
      s->local_installed = true;
      return grant_open(p.caller, *s);
    }
    if (p.kind == Pending::kPull) {
      if (st.ok() && s) s->local_installed = true;
      if (!st.ok() && st.code() != Code::kNoCheckpoint)
        return reply_status(p.caller.conn_id, p.op, st);
      return reply(p.caller.conn_id, p.op, st,
                   ipc::VersionResp{st.ok() && s ? s->local.back().version : Version{}});
    }
    if (p.kind == Pending::kDelete) return reply_status(p.caller.conn_id, p.op, st);
    if (p.kind == Pending::kRead) {
      if (!st.ok()) return reply_status(p.caller.conn_id, p.op, st);
      return serve_read(p.caller, p.read);
    }
  }

  void op_pull(const Caller& c, std::span<const uint8_t> body) {
    ipc::NameReq req;
    if (!DecodeNamed(c, ipc::kPull, body, &req)) return;
    start_pull(c, ipc::kPull, req.name, req.timeout_ms, nullptr);
  }

  void op_release(const Caller& c, std::span<const uint8_t> body) {
    ipc::NameReq req;
    if (!DecodeNamed(c, ipc::kRelease, body, &req)) return;
    Segment* s = find_live(req.name);
    if (!s || s->cat.owner != self()) return reply_status(c.conn_id, ipc::kRelease, Status::Ok());
    if (!permitted(c, s->cat, true))
      return reply_status(c.conn_id, ipc::kRelease, Err(Code::kPermission, "permission denied"));
    if (s->writer_handle)
      return reply_status(c.conn_id, ipc::kRelease,
                          Err(Code::kBusy, "segment '" + req.name + "' is open for writing"));
    if (!joined) return reply_status(c.conn_id, ipc::kRelease, unavailable());
    Version v = has_checkpoint(*s) ? s->local.back().version : Version{};
    if (v.empty()) {
      send(ReleaseMsg{s->cat.name, s->cat.epoch});
      release_waiters[s->cat.name].push_back({c.conn_id, ipc::kRelease});
      return;
    }
    if (eligible_peers(*s) < s->cat.replicas)
      return reply_status(c.conn_id, ipc::kRelease,
                          Err(Code::kNotEnoughReplicas,
                              "cannot release '" + req.name + "': fewer eligible nodes than " +
                                  std::to_string(s->cat.replicas) + " replicas"));
    add_waiter(c, ipc::kRelease, *s, v, req.timeout_ms, true);
  }

  void op_delete(const Caller& c, std::span<const uint8_t> body) {
    ipc::NameReq req;
    if (!DecodeNamed(c, ipc::kDelete, body, &req)) return;
    Segment* s = FindOrReply(c, ipc::kDelete, req.name);
    if (!s) return;
    if (c.uid != 0 && c.uid != s->cat.uid)
      return reply_status(
          c.conn_id, ipc::kDelete,
          Err(Code::kPermission, "only the segment's owner uid or root may delete"));
    if (s->writer_handle)
      return reply_status(c.conn_id, ipc::kDelete,
                          Err(Code::kBusy, "segment '" + req.name + "' is open for writing"));
    if (!joined) return reply_status(c.conn_id, ipc::kDelete, unavailable());
    uint32_t rid = new_pending(Pending::kDelete, Pending::kClaiming, c, ipc::kDelete, req.name,
                               cfg.default_sync_timeout_ms);
    delete_requests_[req.name].push_back(rid);
    send(DeleteMsg{req.name, s->cat.epoch});
  }
  std::map<std::string, std::vector<uint32_t>> delete_requests_;

  void serve_read(const Caller& c, const ipc::ReadReq& req) {
    Segment* s = find_live(req.name);
    if (!s) return reply_status(c.conn_id, ipc::kRead, Err(Code::kNotFound, "no such segment"));
    const BlockImage* img = nullptr;
    Version v;
    for (auto it = s->local.rbegin(); it != s->local.rend(); ++it) {
      if (it->version.seq == 0) continue;
      if (req.has_version ? it->version == req.version : it->version >= s->cat.latest) {
        img = &it->image;
        v = it->version;
        break;
      }
    }
    auto cit = read_cache.find(req.name);
    if (!img && cit != read_cache.end() &&
        (req.has_version ? cit->second.version == req.version
                         : cit->second.version >= best_holders(*s, {}).first)) {
      img = &cit->second.image;
      v = cit->second.version;
    }
    if (!img) return reply_status(c.conn_id, ipc::kRead, Err(Code::kNotFound, "version not held"));
    if (req.offset > img->size() || req.length > img->size() - req.offset ||
        req.length > ipc::kMaxMessageBytes - 65536)
      return reply_status(c.conn_id, ipc::kRead, Err(Code::kInvalid, "read range invalid"));
    ipc::ReadResp resp;
    resp.version = v;
    resp.segment_size = img->size();
    resp.data.resize(req.length);
    img->Read(req.offset, resp.data);
    reply(c.conn_id, ipc::kRead, Status::Ok(), resp);
  }

  void op_read(const Caller& c, std::span<const uint8_t> body) {
    ipc::ReadReq req;
    if (!DecodeNamed(c, ipc::kRead, body, &req)) return;
    Segment* s = FindOrReply(c, ipc::kRead, req.name);
    if (!s) return;
    if (!permitted(c, s->cat, false))
      return reply_status(c.conn_id, ipc::kRead, Err(Code::kPermission, "no read permission"));
    // Held here (or cached)?
    for (auto& lc : s->local)
      if (lc.version.seq > 0 &&
          (req.has_version ? lc.version == req.version : lc.version >= s->cat.latest))
        return serve_read(c, req);
    auto cit = read_cache.find(req.name);
    auto [best, who] = best_holders(*s, {});
    if (cit != read_cache.end() &&
        (req.has_version ? cit->second.version == req.version : cit->second.version >= best))
      return serve_read(c, req);
    if (!req.has_version && best.empty()) {
      if (!s->local.empty() && has_checkpoint(*s)) return serve_read(c, req);
      return reply(c.conn_id, ipc::kRead,
                   Status(Code::kNoCheckpoint, "no live holder has a version"), ipc::ReadResp{});
    }
    if (!req.has_version && !s->local.empty() && s->local.back().version >= best &&
        has_checkpoint(*s))
      return serve_read(c, req);
    if (!joined) return reply_status(c.conn_id, ipc::kRead, unavailable());
    // Fetch from a holder of the wanted version.
    Version want = req.has_version ? req.version : best;
    std::vector<uint32_t> from;
    for (auto& h : s->cat.holders)
      if (live(h.nodeid) && h.nodeid != self() &&
          (req.has_version ? h.version >= want : h.version == want))
        from.push_back(h.nodeid);
    if (from.empty())
      return reply_status(c.conn_id, ipc::kRead,
                          Err(Code::kNotFound, "no live node holds version " + want.ToString()));
    uint32_t rid =
        new_pending(Pending::kRead, Pending::kFetching, c, ipc::kRead, req.name, req.timeout_ms);
    Pending& p = pending[rid];
    p.read = req;
    p.want = want;
    send_fetch(rid, from.front(), req.has_version ? want : Version{});
  }

  void send_fetch(uint32_t rid, uint32_t holder, Version v) {
    Pending& p = pending[rid];
    p.stage = Pending::kFetching;
    p.fetch_from = holder;
    p.fetch_deadline_ms = now_ms + kFetchTimeoutMs;
    p.tried.insert(holder);
    send(FetchMsg{p.name, v, holder, rid});
  }

  ipc::SegmentInfo info_of(const Segment& s) const {
    ipc::SegmentInfo i;
    i.name = s.cat.name;
    i.size = s.cat.size;
    i.owner_nodeid = s.cat.owner;
    i.owner_name = s.cat.owner ? node_name(s.cat.owner) : "";
    i.latest = s.cat.latest;
    i.epoch = s.cat.epoch;
    i.replicas = s.cat.replicas;
    i.versions_kept = s.cat.versions_kept;
    i.durability = s.cat.durability;
    i.compression = s.cat.compression;
    i.uid = s.cat.uid;
    i.gid = s.cat.gid;
    i.mode = s.cat.mode;
    auto tg = targets(s);
    for (uint32_t t : tg)
      if (holder_version(s, t) >= s.cat.latest && !s.cat.latest.empty()) i.acked_replicas++;
    std::set<uint32_t> listed;
    auto add = [&](uint32_t id, Version v) {
      if (!listed.insert(id).second) return;
      ipc::HolderInfo h;
      h.nodeid = id;
      h.node_name = node_name(id);
      h.version = v;
      h.live = live(id);
      h.is_owner = id == s.cat.owner;
      h.is_target = std::find(tg.begin(), tg.end(), id) != tg.end();
      i.holders.push_back(h);
    };
    if (s.cat.owner) add(s.cat.owner, holder_version(s, s.cat.owner));
    for (uint32_t t : tg) add(t, holder_version(s, t));
    for (auto& h : s.cat.holders) add(h.nodeid, h.version);
    return i;
  }

  void op_stat(const Caller& c, std::span<const uint8_t> body) {
    ipc::NameReq req;
    if (!DecodeNamed(c, ipc::kStat, body, &req)) return;
    Segment* s = FindOrReply(c, ipc::kStat, req.name);
    if (!s) return;
    reply(c.conn_id, ipc::kStat, Status::Ok(), ipc::StatResp{info_of(*s)});
  }

  void op_list(const Caller& c, std::span<const uint8_t> body) {
    ipc::ListReq req;
    Status st = ipc::DecodeRequest(body, &req);
    if (!st.ok()) return reply_status(c.conn_id, ipc::kList, st);
    uint32_t max = req.max_entries ? std::min(req.max_entries, kListPageMax) : kListPageMax;
    ipc::ListResp resp;
    for (auto it = segs.upper_bound(req.start_after); it != segs.end(); ++it) {
      if (it->second.cat.deleted) continue;
      if (resp.segments.size() >= max) {
        resp.more = 1;
        break;
      }
      resp.segments.push_back(info_of(it->second));
    }
    reply(c.conn_id, ipc::kList, Status::Ok(), resp);
  }

  void op_versions(const Caller& c, std::span<const uint8_t> body) {
    ipc::NameReq req;
    if (!DecodeNamed(c, ipc::kVersions, body, &req)) return;
    Segment* s = FindOrReply(c, ipc::kVersions, req.name);
    if (!s) return;
    ipc::VersionsResp resp;
    for (auto it = s->local.rbegin(); it != s->local.rend(); ++it)
      if (it->version.seq > 0)
        resp.versions.push_back({it->version, it->image.size(), it->image.checksum(), 0});
    reply(c.conn_id, ipc::kVersions, Status::Ok(), resp);
  }

  void op_cluster_status(const Caller& c, std::span<const uint8_t> body) {
    ipc::ClusterStatusResp r;
    r.self_nodeid = self();
    r.joined = joined;
    for (auto& [id, pids] : members) {
      auto it = nodes.find(id);
      r.members.push_back({id, node_name(id),
                           uint8_t(it != nodes.end() && it->second.known && it->second.eligible),
                           uint8_t(id == self())});
    }
    for (auto& [name, s] : segs) {
      if (s.cat.deleted) continue;
      r.segments++;
      if (s.cat.owner == self()) {
        r.segments_owned++;
        if (has_checkpoint(s) && copies_at_least(s, s.local.back().version) < s.cat.replicas)
          r.under_replicated++;
      }
      if (has_checkpoint(s)) {
        r.segments_held++;
        r.bytes_held += s.cat.size;
      }
    }
    r.bytes_sent = counters.payload_bytes_sent;
    r.data_wire_bytes_sent = counters.data_wire_bytes_sent;
    r.bytes_received = counters.payload_bytes_received;
    r.messages_dropped = counters.messages_dropped;
    reply(c.conn_id, ipc::kClusterStatus, Status::Ok(), r);
  }

  // ---- peer messages ------------------------------------------------------------------------

  // `bundled`: an inner message of a BUNDLE whose checksum (covering these bytes) was verified.
  void deliver(uint32_t from, std::span<const uint8_t> bytes, bool bundled = false) {
    Decoded d;
    Status st = bundled ? DecodeBundled(bytes, &d) : Decode(bytes, &d);
    if (!st.ok()) {
      counters.messages_dropped++;
      return;
    }
    if (d.type == MsgType::kBundle) {
      // The sender's consecutive messages, applied in order (Decode rejected nested bundles).
      for (std::span<const uint8_t> inner : d.bundle) deliver(from, inner, /*bundled=*/true);
      return;
    }
    if (d.type == MsgType::kData) return on_data(from, d);
    std::visit([&](auto& m) { on_msg(from, m); }, d.control);
  }

  void on_msg(uint32_t from, const NodeInfoMsg& m) {
    nodes[from] = {m.name, m.eligible != 0, true};
    schedule_all();
  }

  void on_msg(uint32_t from, const CatalogMsg& m) {
    if (from != self())
      for (auto& e : m.entries) merge(e, from);
    if (m.final && m.view_members == sync_round && sync_waiting.erase(from) && !syncing())
      return finish_sync();
    schedule_all();
    check_waiters();
  }

  void on_msg(uint32_t from, const ClaimMsg& m) {
    if (defer_if_syncing(from, m)) return;
    if (!ValidateSegmentName(m.name).ok() || m.replicas == 0 || m.size == 0) {
      counters.messages_dropped++;
      return;
    }
    Segment* s = find(m.name);
    uint64_t cur = s ? s->cat.epoch : 0;
    bool mine = from == self();
    if (cur != m.expected_epoch) {
      if (mine)
        finish_pending(m.request_id,
                       Err(Code::kConflict, "segment '" + m.name + "' was taken by " +
                                                (s ? node_name(s->cat.owner) : "another node") +
                                                " at the same time"));
      return;
    }
    if (!s) {
      s = &segs[m.name];
      s->cat.name = m.name;
    }
    bool was_owner = s->cat.owner == self() && !s->cat.deleted;
    uint64_t epoch = NextEpoch(std::max(m.expected_epoch, m.min_epoch), from);
    bool reset = m.reset || s->cat.deleted || s->cat.size == 0;
    if (reset) {
      s->cat.size = m.size;
      sync_held(*s);
      s->cat.uid = m.uid;
      s->cat.gid = m.gid;
      s->cat.mode = m.mode;
      s->cat.replicas = m.replicas;
      s->cat.versions_kept = m.versions_kept;
      s->cat.durability = m.durability;
      s->cat.compression = m.compression <= CKPT_COMPRESSION_ZSTD ? m.compression : 0;
    }
    s->cat.epoch = epoch;
    s->cat.owner = from;
    s->owner_confirmed = mine;
    s->cat.deleted = 0;
    attr_dirty.insert(m.name);
    if (m.reset) {
      s->cat.holders.clear();
      s->cat.latest = {};
      // Earlier history is discarded everywhere ("start fresh").
      if (!mine) drop_local(*s, false);
    }
    if (was_owner && !mine)
      lose_ownership(
          *s, Err(Code::kFenced, "segment '" + m.name + "' was taken over by " + node_name(from)));
    // Abort inbound transfers of the old epoch.
    drop_inbound_if([&](auto& kv) {
      return kv.second.header.name == m.name &&
             kv.second.header.kind == uint8_t(DataKind::kReplicate);
    });
    if (!mine) return;
    auto pit = pending.find(m.request_id);
    if (pit == pending.end()) return;  // client went away; we own it anyway
    Pending& p = pit->second;
    if (m.reset) {
      drop_local(*s, false);
      s->local.push_back({Version{epoch, 0}, BlockImage::Zero(s->cat.size), false});
      sync_held(*s);
      persist_meta(*s);
      p.stage = Pending::kInstalling;
      install_local(*s, token_for(m.request_id));
      return;
    }
    if (p.stage == Pending::kGlobal || p.global) {
      // Install the global copy.
      LoadedSegment g = std::move(*p.global);
      p.global.reset();
      const StoredVersion& sv = g.versions.back();
      s->local.clear();
      s->local.push_back({sv.version, sv.image, false});
      sync_held(*s);
      persist_meta(*s);
      adopt_restored(*s);
      p.stage = Pending::kInstalling;
      install_local(*s, token_for(m.request_id));
      return;  // finish_pending() then brings the replica targets up to date
    }
    choose_source(m.request_id);
  }

  // After a successful claim: restore from self or fetch from the best live holder.
  void choose_source(uint32_t rid) {
    Pending& p = pending[rid];
    Segment* s = find_live(p.name);
    if (!s) return finish_pending(rid, Err(Code::kNotFound, "segment vanished"));
    auto [best, who] = best_holders(*s, p.tried);
    if (who.empty()) {
      if (!s->local.empty() && has_checkpoint(*s)) {
        who = {self()};
      } else {
        return finish_pending(
            rid, Err(Code::kUnavailable, "no live holder of '" + p.name + "' could provide it"));
      }
    }
    if (who.front() == self()) {
      // Local restore: this node holds the newest version; no bytes cross the network.
      counters.local_restores++;
      persist_meta(*s);
      p.stage = Pending::kInstalling;
      adopt_restored(*s);
      p.want = s->local.back().version;
      install_local(*s, token_for(rid));
      return;  // re-replication starts in finish_pending(), after the install
    }
    p.want = best;
    send_fetch(rid, who.front(), best);
  }

  void on_msg(uint32_t from, const ReleaseMsg& m) {
    if (defer_if_syncing(from, m)) return;
    Segment* s = find_live(m.name);
    if (s && s->cat.epoch == m.epoch && s->cat.owner == from) {
      if (from == self()) lose_ownership(*s, Err(Code::kFenced, "released"));
      s->cat.owner = 0;
      attr_dirty.insert(m.name);
    }
    if (from == self()) {
      auto it = release_waiters.find(m.name);
      if (it != release_waiters.end()) {
        for (auto& [conn, op] : it->second) reply_status(conn, op, Status::Ok());
        release_waiters.erase(it);
      }
    }
  }

  void on_msg(uint32_t from, const DeleteMsg& m) {
    if (defer_if_syncing(from, m)) return;
    Segment* s = find(m.name);
    bool applied = false;
    if (s && !s->cat.deleted && s->cat.epoch == m.expected_epoch) {
      if (s->cat.owner == self() && from != self())
        lose_ownership(*s, Err(Code::kNotFound, "segment '" + m.name + "' was deleted"));
      if (s->writer_handle) {
        auto it = handles.find(s->writer_handle);
        if (it != handles.end()) it->second.fenced = true;
      }
      s->cat.deleted = 1;
      s->cat.epoch = NextEpoch(s->cat.epoch, from);
      s->cat.owner = 0;
      s->cat.holders.clear();
      s->cat.latest = {};
      drop_local(*s, from == self());
      StoreOp rm;
      rm.kind = StoreOp::kRemoveLocal;
      rm.meta.name = m.name;
      store_op(std::move(rm));
      applied = true;
    }
    if (from == self()) {
      auto it = delete_requests_.find(m.name);
      if (it != delete_requests_.end() && !it->second.empty()) {
        uint32_t rid = it->second.front();
        it->second.erase(it->second.begin());
        finish_pending(rid, applied ? Status::Ok()
                                    : Err(Code::kConflict,
                                          "segment '" + m.name + "' changed owner during delete"));
      }
    }
  }

  void on_msg(uint32_t from, const AckMsg& m) {
    Segment* s = find_live(m.name);
    if (!s) return;
    if (m.status == uint32_t(AckStatus::kStored)) {
      set_holder(*s, from, m.version);
    } else if (s->cat.owner == self()) {
      s->force_full.insert(from);
      s->sent.erase(from);
    }
    if (s->cat.owner == self()) {
      schedule(*s);
      check_waiters_of(s->cat.name);
    }
  }

  void on_msg(uint32_t from, const FetchMsg& m) {
    if (m.holder != self()) return;
    Segment* s = find_live(m.name);
    const LocalCopy* copy = nullptr;
    if (s)
      for (auto it = s->local.rbegin(); it != s->local.rend(); ++it)
        if (it->version.seq > 0 && (m.version.empty() || it->version == m.version)) {
          copy = &*it;
          break;
        }
    if (!copy) {
      send(FetchFailMsg{m.name, from, m.request_id});
      return;
    }
    Transfer x;
    x.header.name = m.name;
    x.header.xfer_id = next_xfer++;
    x.header.version = copy->version;
    x.header.size = copy->image.size();
    x.header.checksum = copy->image.checksum();
    x.header.kind = uint8_t(DataKind::kFetch);
    x.compress = s->cat.compression == CKPT_COMPRESSION_ZSTD;
    x.header.request_id = m.request_id;
    x.header.targets = {from};
    x.snapshot = copy->image;
    x.ranges = {{0, copy->image.size()}};
    x.header.chunk_count = ChunkCount(x.ranges);
    outgoing.push_front(std::move(x));  // a failover waits on it: serve before replication
  }

  void on_msg(uint32_t from, const FetchFailMsg& m) {
    if (m.requester != self()) return;
    retry_fetch(m.request_id);
  }

  void retry_fetch(uint32_t rid) {
    auto it = pending.find(rid);
    if (it == pending.end() || it->second.stage != Pending::kFetching) return;
    Pending& p = it->second;
    Segment* s = find_live(p.name);
    if (!s) return finish_pending(rid, Err(Code::kNotFound, "segment vanished"));
    if (p.kind == Pending::kRead) {
      for (auto& h : s->cat.holders)
        if (live(h.nodeid) && h.nodeid != self() && !p.tried.count(h.nodeid) && h.version >= p.want)
          return send_fetch(rid, h.nodeid, p.read.has_version ? p.want : Version{});
      if (!p.checksum_failed)
        return finish_pending(
            rid, Err(Code::kNotFound, "no live node holds version " + p.want.ToString()));
      return finish_pending(
          rid, Err(Code::kCorrupt, "no holder could serve version " + p.want.ToString()));
    }
    auto [best, who] = best_holders(*s, p.tried);
    if (who.empty())
      return finish_pending(
          rid, Err(Code::kCorrupt,
                   "every copy of '" + p.name + "' was unavailable or failed its checksum"));
    if (who.front() == self()) return choose_source(rid);
    p.want = best;
    send_fetch(rid, who.front(), best);
  }

  void on_data(uint32_t from, const Decoded& d) {
    apply_data(from, d);
    const DataHeader& h = d.data;
    if (from == self() && h.kind == uint8_t(DataKind::kReplicate) &&
        h.chunk_index + 1 == h.chunk_count) {
      Segment* s = find_live(h.name);
      if (s && s->wire_xfer == h.xfer_id) {  // our transfer left corosync: send what queued up
        s->wire_xfer = 0;
        schedule(*s);
      }
    }
  }

  void apply_data(uint32_t from, const Decoded& d) {
    const DataHeader& h = d.data;
    auto key = std::make_pair(from, h.xfer_id);
    if (h.chunk_index == 0) {
      if (auto old = inbound.find(key); old != inbound.end()) abort_stream(old->second);
      Inbound in;
      in.header = h;
      in.ignore = !accept_transfer(from, h, &in.image);
      if (!in.ignore) maybe_begin_stream(in);
      auto [it, fresh] = inbound.insert_or_assign(key, std::move(in));
      if (it->second.ignore) {
        if (h.chunk_count == 1) inbound.erase(it);
        return;
      }
    }
    auto it = inbound.find(key);
    if (it == inbound.end()) return;  // started before we joined, or aborted
    Inbound& in = it->second;
    if (in.ignore) {
      if (h.chunk_index + 1 >= in.header.chunk_count) inbound.erase(it);
      return;
    }
    if (h.chunk_index != in.next_chunk || h.xfer_id != in.header.xfer_id ||
        h.version != in.header.version || h.size != in.header.size) {
      counters.messages_dropped++;
      abort_stream(in);
      inbound.erase(it);
      return;
    }
    for (auto& p : d.pieces) {
      in.image.Write(p.offset, p.bytes);
      counters.payload_bytes_received += p.bytes.size();
      if (!in.ranges.empty() && in.ranges.back().offset + in.ranges.back().length == p.offset)
        in.ranges.back().length += p.bytes.size();
      else
        in.ranges.push_back({p.offset, p.bytes.size()});
    }
    in.next_chunk++;
    stream_received(in);
    if (in.next_chunk < in.header.chunk_count) return;
    Inbound done = std::move(in);
    inbound.erase(it);
    complete_transfer(from, std::move(done));
  }

  // Chunk 0 of a transfer: decides whether this node stores it and prepares *image (the base the
  // pieces are written onto).
  bool accept_transfer(uint32_t from, const DataHeader& h, BlockImage* image) {
    Segment* s = find_live(h.name);
    if (h.kind == uint8_t(DataKind::kFetch)) {
      if (h.targets.size() != 1 || h.targets[0] != self()) return false;
      auto pit = pending.find(h.request_id);
      if (pit == pending.end() || pit->second.stage != Pending::kFetching ||
          pit->second.fetch_from != from || !s || h.size != s->cat.size)
        return false;
      *image = BlockImage::Zero(h.size);
      return true;
    }
    // The sender must be the catalog owner.  The version may predate its epoch: a new owner
    // re-replicates the version it inherited (pull, global restore) until its first commit.
    if (!s || s->cat.owner != from || h.version.epoch > s->cat.epoch || h.size != s->cat.size) {
      if (from != self()) counters.stale_rejected++;
      return false;
    }
    if (h.version > s->cat.latest) s->cat.latest = h.version;
    set_holder(*s, from, h.version);
    if (from == self() || std::find(h.targets.begin(), h.targets.end(), self()) == h.targets.end())
      return false;
    if (!cfg.eligible) return false;
    if (h.base.empty()) {
      if (s->local.empty() && bytes_held() + h.size > cfg.max_total_bytes) {
        send(AckMsg{h.name, h.version, uint32_t(AckStatus::kFailed)});
        return false;
      }
      *image = BlockImage::Zero(h.size);
      return true;
    }
    if (s->local.empty() || s->local.back().version != h.base) {
      send(AckMsg{h.name, h.version, uint32_t(AckStatus::kNeedFull)});
      return false;
    }
    *image = s->local.back().image;
    return true;
  }

  void complete_transfer(uint32_t from, Inbound in) {
    const DataHeader& h = in.header;
    Segment* s = find_live(h.name);
    bool fetch = h.kind == uint8_t(DataKind::kFetch);
    // A stream not finished below (the version is not stored after all) is aborted.
    struct AbortUnfinished {
      Impl* impl;
      Inbound* in;
      ~AbortUnfinished() { impl->abort_stream(*in); }
    } abort_unfinished{this, &in};
    if (in.image.checksum() != h.checksum) {
      counters.messages_dropped++;
      if (fetch) {
        if (auto pit = pending.find(h.request_id); pit != pending.end())
          pit->second.checksum_failed = true;
        return retry_fetch(h.request_id);
      }
      send(AckMsg{h.name, h.version, uint32_t(AckStatus::kFailed)});
      return;
    }
    if (fetch) {
      auto pit = pending.find(h.request_id);
      if (pit == pending.end()) return;
      Pending& p = pit->second;
      if (p.kind == Pending::kRead) {
        read_cache[h.name] = {h.version, std::move(in.image), now_ms + kReadCacheTtlMs};
        return finish_pending(h.request_id, Status::Ok());
      }
      if (!s || s->cat.owner != self())
        return finish_pending(h.request_id,
                              Err(Code::kConflict, "ownership changed during the pull"));
      s->local.clear();
      s->local.push_back({h.version, std::move(in.image), false});
      sync_held(*s);
      persist_meta(*s);
      adopt_restored(*s);
      p.stage = Pending::kInstalling;
      if (in.streaming && in.stream_local && in.streamed == h.size) {
        // The local storage was written as the chunks arrived: replacing it is the install.
        StoreOp op = stream_op(StoreOp::kStreamFinish, in);
        op.meta = MetaOf(s->cat);
        op.token = token_for(h.request_id);
        submit_stream_op(std::move(op), in);
        in.streaming = false;
        return;  // re-replication starts in finish_pending(), after the install
      }
      install_local(*s, token_for(h.request_id));
      return;  // re-replication starts in finish_pending(), after the install
    }
    if (!s || s->cat.owner != from || h.version.epoch > s->cat.epoch) {
      counters.stale_rejected++;
      return;
    }
    if (!s->local.empty() && s->local.back().version >= h.version) return;  // duplicate
    s->local.push_back({h.version, std::move(in.image), false});
    sync_held(*s);
    persist_meta(*s);
    uint64_t token = next_token++;
    token_to_ack[token] = {h.name, h.version, false, 0};
    if (in.streaming && in.streamed == h.size) {
      StoreOp op = stream_op(StoreOp::kStreamFinish, in);
      op.fsync = s->cat.durability == CKPT_DURABILITY_FSYNC;
      op.token = token;
      store_op(std::move(op));
      in.streaming = false;
      s->local.back().persisted = true;  // optimistic, as in persist_version
    } else {
      abort_stream(in);
      persist_version(*s, s->local.size() - 1, h.base.empty() ? nullptr : &in.ranges, token);
    }
    trim_local(*s);
    counters.versions_stored++;
    // Global copy: the first target writes it (rate-limited in tick()).
    if (cfg.has_global_dir && !h.targets.empty() && h.targets.front() == self())
      s->global_dirty = true;
  }

  void flush_acks() {
    for (AckMsg& a : staged_acks) {
      Segment* s = find_live(a.name);
      if (s && std::any_of(s->local.begin(), s->local.end(),
                           [&](const LocalCopy& c) { return c.version == a.version; }))
        send(a);
    }
    staged_acks.clear();
  }

  void store_done(uint64_t token, const Status& st) {
    if (auto it = token_to_owner_persist.find(token); it != token_to_owner_persist.end()) {
      std::string name = std::move(it->second);
      token_to_owner_persist.erase(it);
      owner_persist_done(name, token, st);
      return;
    }
    if (auto it = token_to_ack.find(token); it != token_to_ack.end()) {
      AckAfterStore a = it->second;
      token_to_ack.erase(it);
      Segment* s = find_live(a.name);
      if (!st.ok()) {
        if (s && !s->local.empty() && s->local.back().version == a.version) {
          s->local.pop_back();
          sync_held(*s);
        }
        send(AckMsg{a.name, a.version, uint32_t(AckStatus::kFailed)});
        return;
      }
      if (s) set_holder(*s, self(), a.version);
      staged_acks.push_back({a.name, a.version, uint32_t(AckStatus::kStored)});
      return;
    }
    auto it = token_to_request.find(token);
    if (it == token_to_request.end()) return;
    uint32_t rid = it->second;
    token_to_request.erase(it);
    auto pit = pending.find(rid);
    if (pit == pending.end()) return;
    Pending& p = pit->second;
    if (!st.ok() && p.store_status.ok()) p.store_status = st;
    if (--p.tokens_outstanding > 0) return;
    finish_pending(rid, p.store_status);
  }

  void global_loaded(uint64_t token, Result<std::optional<LoadedSegment>> loaded) {
    auto it = token_to_request.find(token);
    if (it == token_to_request.end()) return;
    uint32_t rid = it->second;
    token_to_request.erase(it);
    auto pit = pending.find(rid);
    if (pit == pending.end()) return;
    Pending& p = pit->second;
    if (!loaded.ok())
      return finish_pending(
          rid, Err(loaded.status().code(), "global copy unusable: " + loaded.status().ToString()));
    if (!loaded.value() || loaded.value()->versions.empty())
      return finish_pending(
          rid, Status(Code::kNoCheckpoint, "no checkpoint of '" + p.name +
                                               "' on any live node or in the global directory"));
    if (!joined) return finish_pending(rid, unavailable());
    LoadedSegment g = std::move(*loaded.value());
    Segment* s = find(p.name);
    CatalogEntry e = s ? s->cat : EntryOf(g.meta);
    if (e.size != g.meta.size || g.versions.back().image.size() != g.meta.size)
      return finish_pending(rid, Err(Code::kCorrupt, "global copy has the wrong size"));
    Version global_version = g.versions.back().version;
    p.global = std::move(g);
    send_claim(rid, e, s ? s->cat.epoch : 0, global_version.epoch);
  }

  // ---- membership ---------------------------------------------------------------------------

  void view(const CpgView& v) {
    std::set<uint32_t> prev;
    for (auto& [id, pids] : members) prev.insert(id);
    members.clear();
    for (auto& m : v.members) members[m.nodeid].insert(m.pid);
    bool was_joined = joined;
    joined = members.count(self()) != 0;
    std::set<uint32_t> joined_nodes;
    for (auto& m : v.joined) joined_nodes.insert(m.nodeid);
    if (!was_joined && joined) {
      joined_nodes.clear();
      for (auto& [id, pids] : members) joined_nodes.insert(id);
      prev = {self()};
    }
    // Inbound transfers from departed senders can never complete.
    drop_inbound_if([&](auto& kv) { return !live(kv.first.first); });
    // Joined nodes re-announce their own holdings, and nothing we sent them before is theirs.
    for (uint32_t id : joined_nodes)
      if (id != self())
        for (auto& [name, s] : segs) {
          clear_holder(s, id);
          s.sent.erase(id);
        }
    if (!joined_nodes.empty()) {
      // Every member re-publishes its catalog, before any DATA it sends in the new view: CPG keeps
      // one sender's messages in order, so a joined node whose catalog is stale (it restarted
      // with metadata naming an older epoch, or itself, as owner) learns the current owner and
      // epoch before the owner's replicate transfer reaches it, instead of rejecting that
      // transfer as stale (the owner would consider it sent and never resend).
      send(NodeInfoMsg{cfg.node_name, uint8_t(cfg.eligible)});
      send_catalog();
      sync_round = member_ids();  // finals answering an earlier round do not count
      sync_waiting = {sync_round.begin(), sync_round.end()};
    } else {
      std::erase_if(sync_waiting, [&](uint32_t id) { return !live(id); });
      if (joined && sync_waiting.empty() && (!deferred_msgs.empty() || !deferred_calls.empty()))
        finish_sync();
    }
    // Fetches from departed holders: try the next one.
    std::vector<uint32_t> retry;
    for (auto& [rid, p] : pending)
      if (p.stage == Pending::kFetching && !live(p.fetch_from)) retry.push_back(rid);
    for (uint32_t rid : retry) retry_fetch(rid);
    for (auto& [name, s] : segs) attr_dirty.insert(name);
    schedule_all();
    check_waiters();
  }

  void disconnected() {
    members.clear();
    joined = false;
    sync_waiting.clear();
    deferred_msgs.clear();
    for (auto& d : deferred_calls) reply_status(d.caller.conn_id, d.op, unavailable());
    deferred_calls.clear();
    drop_inbound_if([](auto&) { return true; });
    outgoing.clear();
    staged_acks.clear();
    for (auto& [name, s] : segs) {
      s.xfer_active = false;
      s.wire_xfer = 0;
      s.sent.clear();
    }
    std::vector<uint32_t> ids;
    for (auto& [rid, p] : pending)
      if (p.stage != Pending::kInstalling) ids.push_back(rid);
    for (uint32_t rid : ids) finish_pending(rid, unavailable());
  }

  void client_gone(uint64_t conn) {
    std::vector<uint64_t> hs;
    for (auto& [h, st] : handles)
      if (st.conn_id == conn) hs.push_back(h);
    for (uint64_t h : hs) close_handle(h);
    for (auto it = waiters.begin(); it != waiters.end();) {
      std::erase_if(it->second, [&](const Waiter& w) { return w.conn_id == conn; });
      it = it->second.empty() ? waiters.erase(it) : std::next(it);
    }
    std::erase_if(waiter_groups, [&](const auto& g) { return g.second.conn_id == conn; });
    std::erase_if(deferred_calls, [&](const DeferredCall& d) { return d.caller.conn_id == conn; });
    // Operations in flight complete (a claim must), but grant nothing to a vanished client.
    for (auto& [rid, p] : pending)
      if (p.caller.conn_id == conn) p.caller.conn_id = 0;
    // Pending operations continue (a claim in flight must complete) but reply to nobody.
  }

  void tick(uint64_t now) {
    now_ms = now;
    for (auto it = waiters.begin(); it != waiters.end();) {
      auto next = std::next(it);
      const std::string name = it->first;  // a copy: the entry may go
      auto expired = take_waiters(it, [&](const Waiter& w) { return now >= w.deadline_ms; });
      for (const Waiter& w : expired)
        answer(w, Err(Code::kTimeout, "replicas did not acknowledge version " +
                                          w.version.ToString() + " of '" + name + "' in time"));
      it = next;
    }
    std::vector<std::pair<uint32_t, bool>> expired;  // (rid, whole op expired)
    for (auto& [rid, p] : pending) {
      if (p.stage == Pending::kInstalling) continue;
      if (now >= p.deadline_ms)
        expired.push_back({rid, true});
      else if (p.stage == Pending::kFetching && now >= p.fetch_deadline_ms)
        expired.push_back({rid, false});
    }
    for (auto [rid, whole] : expired) {
      if (whole)
        finish_pending(rid, Err(Code::kTimeout, "operation timed out"));
      else
        retry_fetch(rid);
    }
    std::erase_if(read_cache, [&](auto& kv) { return now >= kv.second.expires_ms; });
    for (auto it = timed.begin(); it != timed.end();) {
      auto sit = segs.find(*it);
      if (sit == segs.end()) {
        it = timed.erase(it);
        continue;
      }
      Segment& s = sit->second;
      if (s.wire_xfer != 0 && !s.xfer_active && now >= s.wire_since_ms + kWireTimeoutMs) {
        s.wire_xfer = 0;  // its final chunk never came back (a message lost by the transport)
        schedule(s);
      } else if (s.last_transfer_ms != 0 && now >= s.last_transfer_ms + kAckWaitMs) {
        s.last_transfer_ms = 0;        // the wait is over (and moot if no longer the owner)
        if (is_owner(s)) schedule(s);  // a target never acknowledged: stop waiting for it
      }
      if (s.wire_xfer == 0 && s.last_transfer_ms == 0)
        it = timed.erase(it);
      else
        ++it;
    }
    if (cfg.has_global_dir && now >= next_global_ms_) {
      next_global_ms_ = now + 1000;
      for (auto& [name, s] : segs) {
        if (!s.global_dirty || s.cat.deleted || !has_checkpoint(s)) continue;
        s.global_dirty = false;
        auto tg = targets(s);
        bool writer =
            (!tg.empty() && tg.front() == self()) || (tg.empty() && s.cat.owner == self());
        if (!writer) continue;
        StoreOp op;
        op.kind = StoreOp::kPutGlobal;
        op.meta = MetaOf(s.cat);
        op.version = s.local.back().version;
        op.image = s.local.back().image;
        store_op(std::move(op));
      }
    }
  }
  uint64_t next_global_ms_ = 0;

  void publish_attributes() {
    for (const std::string& name : attr_dirty) {
      Segment* s = find_live(name);
      std::string want;
      if (s && joined && !s->cat.deleted) {
        Version mine =
            !s->local.empty() && has_checkpoint(*s) ? s->local.back().version : Version{};
        if (!mine.empty() && mine.epoch == s->cat.epoch) want = "100";
      }
      auto it = published_attrs.find(name);
      std::string have = it == published_attrs.end() ? "" : it->second;
      if (want == have) continue;
      ready.attributes.push_back({"ckpt-" + name, want});
      if (want.empty())
        published_attrs.erase(name);
      else
        published_attrs[name] = want;
    }
    attr_dirty.clear();
  }

  void load(std::vector<LoadedSegment> loaded) {
    for (auto& l : loaded) {
      if (!ValidateSegmentName(l.meta.name).ok() || l.meta.replicas == 0) continue;
      Segment& s = segs[l.meta.name];
      s.cat = EntryOf(l.meta);
      s.meta_persisted = true;
      for (auto& v : l.versions) {
        if (v.image.size() != l.meta.size) continue;
        s.local.push_back({v.version, std::move(v.image), true});
        s.cat.latest = std::max(s.cat.latest, v.version);
      }
      sync_held(s);
      if (!s.local.empty()) {
        set_holder(s, self(), s.local.back().version);
      }
    }
  }
};

// ---- public shell ------------------------------------------------------------------------------

Engine::Engine(EngineConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {
  CKPT_ASSERT(impl_->cfg.chunk_bytes >= 4096 && impl_->cfg.chunk_bytes <= kMaxChunkBytes);
  CKPT_ASSERT(impl_->cfg.self_nodeid != 0);
}
Engine::~Engine() = default;

void Engine::LoadFromStore(std::vector<LoadedSegment> segments) {
  impl_->load(std::move(segments));
}
// Deadlines are the last tick's now_ms plus a timeout: before the first tick they would be
// relative to 0 and all expire at it (a call made in a new daemon's first 100 ms timed out at
// once).  The caller ticks first (engine.hpp).
void Engine::OnView(const CpgView& view) {
  CKPT_ASSERT(impl_->now_ms > 0);  // ticked
  impl_->view(view);
}
void Engine::OnDeliver(uint32_t nodeid, uint32_t, std::span<const uint8_t> message) {
  CKPT_ASSERT(impl_->now_ms > 0);  // ticked
  impl_->deliver(nodeid, message);
}
void Engine::OnDisconnected() { impl_->disconnected(); }
void Engine::OnClient(const Caller& caller, int32_t op, std::span<const uint8_t> body) {
  CKPT_ASSERT(impl_->now_ms > 0);  // ticked
  impl_->client(caller, op, body);
}
void Engine::OnClientGone(uint64_t conn_id) { impl_->client_gone(conn_id); }
void Engine::OnStoreDone(uint64_t token, const Status& status) { impl_->store_done(token, status); }
void Engine::OnGlobalLoaded(uint64_t token, Result<std::optional<LoadedSegment>> loaded) {
  impl_->global_loaded(token, std::move(loaded));
}
void Engine::OnTick(uint64_t now_ms) {
  CKPT_ASSERT(now_ms > 0 && now_ms >= impl_->now_ms);  // a monotonic clock
  impl_->tick(now_ms);
}

void Engine::CheckInvariants() const { impl_->check_invariants(); }

Ready Engine::TakeReady(size_t send_budget_bytes) {
  impl_->flush_acks();
  // Replies first: generating up to a transport's worth of DATA (copies, allocations) must not
  // delay the answer a client waits for (e.g. a restore's reply, followed by re-replication).
  // wants_to_send() stays true, so the caller comes back for the DATA at once.
  if (impl_->ready.replies.empty() && impl_->ready.events.empty()) {
    // Not while a restore is installing: its reply comes with the install's completion, and a
    // reply waits for the store ops submitted before it (a 64 MiB persist: ~50 ms).
    if (!impl_->restore_installing()) impl_->flush_after_reply_ops();
    impl_->fill_sends(send_budget_bytes);
  }
  impl_->publish_attributes();
  Ready r = std::move(impl_->ready);
  impl_->ready = Ready{};
  // One CPG message per run of small messages (see BUNDLE in messages.hpp); the order is kept.
  if (r.sends.size() > 1) r.sends = PackBundles(std::move(r.sends));
  return r;
}
bool Engine::wants_to_send() const { return !impl_->outgoing.empty(); }
const EngineCounters& Engine::counters() const { return impl_->counters; }

std::vector<std::string> Engine::SegmentNames() const {
  std::vector<std::string> out;
  for (auto& [name, s] : impl_->segs)
    if (!s.cat.deleted) out.push_back(name);
  return out;
}
std::optional<SegmentMeta> Engine::Meta(const std::string& name) const {
  auto it = impl_->segs.find(name);
  if (it == impl_->segs.end() || it->second.cat.deleted) return std::nullopt;
  return Impl::MetaOf(it->second.cat);
}
Version Engine::HolderVersion(const std::string& name, uint32_t holder) const {
  auto it = impl_->segs.find(name);
  return it == impl_->segs.end() ? Version{} : impl_->holder_version(it->second, holder);
}
std::vector<uint32_t> Engine::ReplicaTargets(const std::string& name) const {
  auto it = impl_->segs.find(name);
  return it == impl_->segs.end() ? std::vector<uint32_t>{} : impl_->targets(it->second);
}
std::optional<Version> Engine::LocalVersion(const std::string& name) const {
  auto it = impl_->segs.find(name);
  if (it == impl_->segs.end() || it->second.local.empty()) return std::nullopt;
  return it->second.local.back().version;
}
std::optional<BlockImage> Engine::LocalImage(const std::string& name) const {
  auto it = impl_->segs.find(name);
  if (it == impl_->segs.end() || it->second.local.empty()) return std::nullopt;
  return it->second.local.back().image;
}

}  // namespace ckpt::repl
