// A deterministic simulation of a ckptd cluster for unit tests of replication::Engine.
//
// No corosync, no threads, no clock: N engines (nodeids 1..N, names n1..nN) exchange messages over
// a simulated CPG bus, execute their StoreOps against an in-memory FakeStore, and talk to fake
// libckpt clients through encoded IPC bodies.
//
// CPG model.  Nodes are grouped into rings (one ring normally; several while partitioned).  Each
// ring has one FIFO of events (messages and membership views) delivered to every current member
// of the ring in the same order, sender included.  A view event changes who receives the events
// after it, so every member sees a confchg at the same point of the order.  Partition: the ring's
// queue is first delivered completely (the old ring finishes), then each part gets its own ring
// with a view whose left list names the other parts.  Heal: both rings finish their queues, then
// become one ring with a view whose joined list, per member, names the other side (as CPG does on
// a merge).  Crash: the engine is destroyed at once (its FakeStore survives for Restart) and a
// view without it is queued.  Disconnect: OnDisconnected, then a view without it; Reconnect
// rejoins with the same engine.
//
// Pump(): TakeReady on every live node (store ops executed at once, completions reported after
// all nodes ran, unless the node's store is stalled), then every queued event is delivered;
// repeated until nothing happens anymore (quiescence) or the iteration bound is hit.
// With a seeded RNG (SetShuffle), node order and the number of events delivered per round vary:
// different but legal interleavings.  CPG is reliable, so messages are never dropped.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/ipc_messages.hpp"
#include "replication/engine.hpp"
#include "replication/messages.hpp"

namespace ckpt::repl::sim {

std::vector<uint8_t> Bytes(const BlockImage& image);
// Deterministic pseudo-random bytes.
std::vector<uint8_t> Pattern(size_t n, uint64_t seed);

// Executes StoreOps in memory.  Versions are stored as whole images (the op carries the image of
// the version in both PutFull and PutDelta); a PutDelta whose base is not stored is counted.
class FakeStore {
 public:
  struct Seg {
    SegmentMeta meta;
    bool has_meta = false;
    std::map<Version, BlockImage> versions;
  };
  // Fault injection: the next `count` ops (of `kind`, when set) fail with `code` and change
  // nothing.
  struct Fault {
    int count = 0;
    Code code = Code::kIo;
    std::optional<StoreOp::Kind> kind;
  };

  std::map<std::string, Seg> segs;
  std::map<std::string, BlockImage> local;  // local storage (the owner application's file)
  struct Stream {                           // an open kStreamBegin (or kLocalBegin) write
    Version version;                        // unused for a local write
    uint64_t appended = 0;
    BlockImage image;
    // Copies op's image bytes [offset, +length) in; false (nothing copied) when they do not
    // continue where the write stands or the image is not the write's size.
    bool AppendInOrder(const StoreOp& op);
  };
  std::map<std::string, Stream> streams;
  std::map<std::string, Stream> local_writes;  // open kLocalBegin writes
  Fault fault;
  bool stall = false;  // completions are held until un-stalled (a hung disk)
  uint64_t ops = 0, failed_ops = 0, delta_without_base = 0;
  std::vector<std::string> violations;  // PutDelta without base, stream ops out of order
  std::vector<StoreOp::Kind> log;

  Status Apply(const StoreOp& op, std::map<std::string, LoadedSegment>& global);
  // What SegmentStore::LoadAll would return after a restart.
  std::vector<LoadedSegment> Dump() const;
  bool Has(const std::string& name, Version v) const;
  std::optional<Version> Latest(const std::string& name) const;
};

struct SimOptions {
  uint32_t nodes = 3;
  uint32_t chunk_bytes = 4096;
  uint64_t stream_store_min_bytes = 16 * 1024;  // small, so simulations stream-store too
  size_t send_budget = 64 * 1024;
  uint32_t default_replicas = 1;
  uint32_t default_versions_kept = 1;
  uint64_t max_segment_bytes = 1ull << 32;
  uint64_t max_total_bytes = 1ull << 36;
  bool has_global_dir = false;
  int max_iterations = 200000;
};

struct Completion {
  uint64_t token = 0;
  bool global = false;
  Status status;
  std::optional<LoadedSegment> loaded;  // global load result (when status ok)
};

struct Node {
  uint32_t id = 0;
  EngineConfig cfg;
  std::unique_ptr<Engine> engine;
  FakeStore store;
  bool up = false;         // engine exists
  bool connected = false;  // member (or joining) of a ring
  bool in_view = false;    // received a view of its ring since it (re)connected
  int ring = -1;
  uint32_t pid = 0;
  std::deque<Completion> completions;
  std::map<std::string, std::string> attributes;
  uint64_t acks_without_persist = 0;  // ACK(kStored) multicast for a version the store lacks
  // What TakeReady handed out, in order: "store <kind>" and "reply <op>" (for ordering tests).
  std::vector<std::string> outputs;
};

struct Event {
  bool view = false;
  // message
  uint32_t from = 0, pid = 0;
  std::vector<uint8_t> bytes;
  // view
  std::vector<uint32_t> members;
  std::vector<uint32_t> pids;                        // of members, same order
  std::map<uint32_t, std::vector<uint32_t>> joined;  // per recipient
  std::vector<uint32_t> left;
};

struct Ring {
  std::set<uint32_t> members;    // as of the newest queued view
  std::set<uint32_t> delivered;  // as of the newest delivered view
  std::deque<Event> queue;
};

class Sim {
 public:
  explicit Sim(SimOptions options = {});
  ~Sim();

  const SimOptions& options() const { return opt_; }
  Node& node(uint32_t id) { return *nodes_.at(id); }
  Engine& engine(uint32_t id);
  uint32_t size() const { return static_cast<uint32_t>(nodes_.size()); }
  // Called on every EngineConfig before an engine is created (tests tweak eligibility etc.).
  std::function<void(EngineConfig&)> configure;

  // Starts nodes (engine + LoadFromStore(store contents)) and joins them to a ring in one view.
  // ring < 0: the ring of the lowest live connected node (or a new ring).
  void Start(std::vector<uint32_t> ids, int ring = -1);
  void StartAll();
  void Crash(uint32_t id);
  void Restart(uint32_t id, int ring = -1) { Start({id}, ring); }
  void Disconnect(uint32_t id);
  void Reconnect(uint32_t id, int ring = -1);
  // Splits the ring holding parts' nodes into one ring per part.  Returns the ring ids.
  std::vector<int> Partition(const std::vector<std::vector<uint32_t>>& parts);
  // Merges every ring into one.
  void HealAll();
  int RingOf(uint32_t id) const { return nodes_.at(id)->ring; }
  std::vector<uint32_t> LiveIds() const;  // up and connected
  std::vector<uint32_t> RingMembers(int ring) const;

  // Multicasts raw bytes as if `from` had sent them (to from's ring).
  void Inject(uint32_t from, std::vector<uint8_t> bytes);

  // Runs until quiescent; false when max_iterations were not enough.
  bool Pump();
  // One round: TakeReady everywhere, completions, deliveries.  Returns whether anything happened.
  bool Step();
  void Tick(uint64_t advance_ms);
  uint64_t now() const { return now_ms_; }

  void SetShuffle(uint64_t seed) { rng_.emplace(seed); }
  // While set, Step() sends and completes but delivers nothing (messages wait in corosync).
  bool hold_deliveries = false;
  // Every message multicast so far (for fuzzing), if capturing.
  bool capture = false;
  std::vector<std::vector<uint8_t>> captured;

  // Client plumbing.
  void Request(uint32_t node, const Caller& c, int32_t op, std::span<const uint8_t> body);
  std::optional<Reply> TakeReply(uint32_t node, uint64_t conn);
  std::vector<ClientEvent> TakeEvents(uint32_t node, uint64_t conn);
  size_t PendingReplies(uint32_t node, uint64_t conn) const;

  // Releases a stalled node's completions.
  void Unstall(uint32_t id);

  std::map<std::string, LoadedSegment> global;  // the shared global directory

 private:
  bool Flush(Node& n);
  bool Complete(Node& n);
  bool DeliverSome(int ring);
  void Deliver(Ring& r, const Event& e);
  void EnqueueView(int ring, std::vector<uint32_t> joined, std::vector<uint32_t> left,
                   const std::map<uint32_t, std::vector<uint32_t>>* per_node_joined = nullptr);
  void DrainRing(int ring);
  CpgMember member(uint32_t id) const { return {id, nodes_.at(id)->pid, 0}; }

  SimOptions opt_;
  std::map<uint32_t, std::unique_ptr<Node>> nodes_;
  std::map<int, Ring> rings_;
  std::map<int, std::map<uint32_t, uint32_t>> delivered_pids_;  // ring -> member -> pid
  int next_ring_ = 0;
  uint64_t now_ms_ = 1000;
  std::optional<std::mt19937_64> rng_;
  std::map<std::pair<uint32_t, uint64_t>, std::deque<Reply>> replies_;
  std::map<std::pair<uint32_t, uint64_t>, std::vector<ClientEvent>> events_;
};

struct Piece {
  uint64_t offset;
  std::vector<uint8_t> bytes;
};
struct OpenOpts {
  uint32_t replicas = 0, versions_kept = 0, durability = 0, mode = 0, pull_timeout_ms = 0;
};

// A fake libckpt connection on one node.
class Client {
 public:
  Client(Sim& sim, uint32_t node, uint64_t conn_id, uint32_t uid = 0, uint32_t gid = 0)
      : sim_(sim), node_(node), caller_{conn_id, uid, gid, 4000 + static_cast<uint32_t>(conn_id)} {}

  uint32_t node() const { return node_; }
  const Caller& caller() const { return caller_; }
  uint64_t handle = 0;

  // Sends a request; the reply is collected later (Wait*).
  void SendOpen(const std::string& name, uint64_t size, uint32_t flags, OpenOpts o = {});
  void SendCommit(const std::vector<Piece>& pieces, uint32_t flags, uint32_t timeout_ms = 0,
                  uint64_t expected_seq = 0);
  void SendPull(const std::string& name, uint32_t timeout_ms = 0);
  void SendName(int32_t op, const std::string& name, uint32_t timeout_ms = 0);
  void SendRead(const std::string& name, uint64_t offset, uint64_t length,
                std::optional<Version> version = std::nullopt);
  void SendRaw(int32_t op, std::span<const uint8_t> body);

  // Pumps until quiescent and decodes the oldest reply (status kInternal "no reply" if none).
  template <class T>
  Status Wait(T* out) {
    sim_.Pump();
    return Take(out);
  }
  template <class T>
  Status Take(T* out) {
    auto r = sim_.TakeReply(node_, caller_.conn_id);
    if (!r) return Err(Code::kInternal, "no reply");
    last_op = r->op;
    return ipc::DecodeResponse(r->body, out);
  }
  Status WaitStatus() {
    ipc::EmptyMsg m;
    return Wait(&m);
  }
  bool HasReply() const { return sim_.PendingReplies(node_, caller_.conn_id) != 0; }
  int32_t last_op = 0;

  // Synchronous conveniences (send + pump + decode).
  Status Open(const std::string& name, uint64_t size, uint32_t flags, OpenOpts o = {},
              ipc::OpenResp* resp = nullptr);
  // Sync commit: waits for the reply.  Async: pumps, no reply expected.
  Status Commit(const std::vector<Piece>& pieces, bool sync, Version* v = nullptr,
                uint32_t timeout_ms = 0);
  Status Pull(const std::string& name, Version* v = nullptr, uint32_t timeout_ms = 0);
  Status Release(const std::string& name);
  Status Delete(const std::string& name);
  Status Close();
  Status Read(const std::string& name, uint64_t offset, uint64_t length, ipc::ReadResp* out,
              std::optional<Version> version = std::nullopt);
  std::vector<ipc::AsyncErrorEvent> AsyncErrors(std::vector<Status>* statuses = nullptr);

 private:
  Sim& sim_;
  uint32_t node_;
  Caller caller_;
};

}  // namespace ckpt::repl::sim
