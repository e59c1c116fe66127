#include "tests/unit/replication/sim.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace ckpt::repl::sim {

namespace {
void Die(const char* what) {
  std::fprintf(stderr, "sim: %s\n", what);
  std::abort();
}
}  // namespace

std::vector<uint8_t> Bytes(const BlockImage& image) {
  std::vector<uint8_t> out(image.size());
  if (!out.empty()) image.Read(0, out);
  return out;
}

std::vector<uint8_t> Pattern(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed * 0x9e3779b97f4a7c15ull + 1);
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; i++) out[i] = static_cast<uint8_t>(g() >> 56);
  return out;
}

// ---- FakeStore -------------------------------------------------------------------------------

bool FakeStore::Stream::AppendInOrder(const StoreOp& op) {
  if (op.offset != appended || op.image.size() != image.size() ||
      op.length > image.size() - op.offset)
    return false;
  std::vector<uint8_t> buf(op.length);
  op.image.Read(op.offset, buf);
  image.Write(op.offset, buf);
  appended += op.length;
  return true;
}

Status FakeStore::Apply(const StoreOp& op, std::map<std::string, LoadedSegment>& global) {
  ops++;
  log.push_back(op.kind);
  if (fault.count > 0 && (!fault.kind || *fault.kind == op.kind)) {
    fault.count--;
    failed_ops++;
    if (op.kind == StoreOp::kStreamAppend) streams.erase(op.meta.name);  // as the real store
    if (op.kind == StoreOp::kLocalAppend || op.kind == StoreOp::kLocalFinish)
      local_writes.erase(op.meta.name);
    return Err(fault.code, "injected store failure");
  }
  const std::string& name = op.meta.name;
  switch (op.kind) {
    case StoreOp::kPutMeta: {
      Seg& s = segs[name];
      s.meta = op.meta;
      s.has_meta = true;
      break;
    }
    case StoreOp::kPutFull:
      segs[name].versions[op.version] = op.image;
      break;
    case StoreOp::kPutDelta: {
      Seg& s = segs[name];
      if (!s.versions.count(op.base)) {
        delta_without_base++;
        std::string have;
        for (auto& [v, img] : s.versions) have += " " + v.ToString();
        violations.push_back("PutDelta " + name + " " + op.version.ToString() + " on base " +
                             op.base.ToString() + " (stored:" + have + ")");
      }
      s.versions[op.version] = op.image;
      break;
    }
    case StoreOp::kPrune: {
      auto it = segs.find(name);
      if (it != segs.end())
        std::erase_if(it->second.versions, [&](auto& kv) { return kv.first < op.version; });
      break;
    }
    case StoreOp::kDropSegment:
      segs.erase(name);
      streams.erase(name);
      if (op.fsync) global.erase(name);
      break;
    case StoreOp::kPutGlobal:
      global[name] = LoadedSegment{op.meta, {StoredVersion{op.version, op.image, 0}}};
      break;
    case StoreOp::kLoadGlobal:
      break;  // answered by the Sim
    case StoreOp::kInstallLocal:
      local[name] = op.image;
      break;
    case StoreOp::kEnsureLocal: {
      auto it = local.find(name);
      if (it == local.end() || it->second.size() != op.meta.size)
        local[name] = BlockImage::Zero(op.meta.size);
      break;
    }
    case StoreOp::kRemoveLocal:
      local.erase(name);
      break;
    case StoreOp::kStreamBegin:
      streams[name] = {op.version, 0, BlockImage::Zero(op.meta.size)};
      break;
    case StoreOp::kStreamAppend: {
      auto it = streams.find(name);
      if (it == streams.end() || it->second.version != op.version)
        return Err(Code::kNotFound, "no open write");
      if (!it->second.AppendInOrder(op)) {
        violations.push_back("StreamAppend " + name + " " + op.version.ToString() + " at " +
                             std::to_string(op.offset) + " after " +
                             std::to_string(it->second.appended));
        streams.erase(it);
        return Err(Code::kInvalid, "append out of order");
      }
      break;
    }
    case StoreOp::kStreamFinish: {
      auto it = streams.find(name);
      if (it == streams.end() || it->second.version != op.version)
        return Err(Code::kNotFound, "no open write");
      if (it->second.appended != it->second.image.size()) {
        violations.push_back("StreamFinish " + name + " " + op.version.ToString() + " after " +
                             std::to_string(it->second.appended) + " bytes");
        streams.erase(it);
        return Err(Code::kInvalid, "finish before the end");
      }
      segs[name].versions[op.version] = std::move(it->second.image);
      streams.erase(it);
      break;
    }
    case StoreOp::kStreamAbort:
      if (auto it = streams.find(name); it != streams.end() && it->second.version == op.version)
        streams.erase(it);
      break;
    case StoreOp::kLocalBegin:
      local_writes[name] = {{}, 0, BlockImage::Zero(op.meta.size)};
      break;
    case StoreOp::kLocalAppend: {
      auto it = local_writes.find(name);
      if (it == local_writes.end()) return Err(Code::kNotFound, "no open local write");
      if (!it->second.AppendInOrder(op)) {
        violations.push_back("LocalAppend " + name + " at " + std::to_string(op.offset) +
                             " after " + std::to_string(it->second.appended));
        local_writes.erase(it);
        return Err(Code::kInvalid, "append out of order");
      }
      break;
    }
    case StoreOp::kLocalFinish: {
      auto it = local_writes.find(name);
      if (it == local_writes.end()) return Err(Code::kNotFound, "no open local write");
      if (it->second.appended != it->second.image.size()) {
        violations.push_back("LocalFinish " + name + " after " +
                             std::to_string(it->second.appended) + " bytes");
        local_writes.erase(it);
        return Err(Code::kInvalid, "finish before the end");
      }
      local[name] = std::move(it->second.image);
      local_writes.erase(it);
      break;
    }
    case StoreOp::kLocalAbort:
      local_writes.erase(name);
      break;
  }
  return Status::Ok();
}

std::vector<LoadedSegment> FakeStore::Dump() const {
  std::vector<LoadedSegment> out;
  for (auto& [name, s] : segs) {
    if (!s.has_meta) continue;
    LoadedSegment l;
    l.meta = s.meta;
    for (auto& [v, img] : s.versions) l.versions.push_back({v, img, 0});
    out.push_back(std::move(l));
  }
  return out;
}

bool FakeStore::Has(const std::string& name, Version v) const {
  auto it = segs.find(name);
  return it != segs.end() && it->second.versions.count(v) != 0;
}

std::optional<Version> FakeStore::Latest(const std::string& name) const {
  auto it = segs.find(name);
  if (it == segs.end() || it->second.versions.empty()) return std::nullopt;
  return it->second.versions.rbegin()->first;
}

// ---- Sim -------------------------------------------------------------------------------------

Sim::Sim(SimOptions options) : opt_(options) {
  for (uint32_t id = 1; id <= opt_.nodes; id++) {
    auto n = std::make_unique<Node>();
    n->id = id;
    nodes_[id] = std::move(n);
  }
}

Sim::~Sim() = default;

Engine& Sim::engine(uint32_t id) {
  Node& n = node(id);
  if (!n.engine) Die("engine of a node that is down");
  return *n.engine;
}

void Sim::StartAll() {
  std::vector<uint32_t> ids;
  for (auto& [id, n] : nodes_) ids.push_back(id);
  Start(ids);
}

void Sim::Start(std::vector<uint32_t> ids, int ring) {
  for (uint32_t id : ids) {
    Node& n = node(id);
    if (n.up) Die("Start of a node that is up");
    EngineConfig c;
    c.self_nodeid = id;
    c.node_name = "n" + std::to_string(id);
    c.default_replicas = opt_.default_replicas;
    c.default_versions_kept = opt_.default_versions_kept;
    c.max_segment_bytes = opt_.max_segment_bytes;
    c.max_total_bytes = opt_.max_total_bytes;
    c.chunk_bytes = opt_.chunk_bytes;
    c.stream_store_min_bytes = opt_.stream_store_min_bytes;
    c.has_global_dir = opt_.has_global_dir;
    c.shm_dir = "/dev/shm/ckpt-sim";
    if (configure) configure(c);
    n.cfg = c;
    n.engine = std::make_unique<Engine>(c);
    n.engine->LoadFromStore(n.store.Dump());
    n.engine->OnTick(now_ms_);
    n.up = true;
    n.in_view = false;
    n.completions.clear();
  }
  for (uint32_t id : ids) Reconnect(id, ring);
}

void Sim::Reconnect(uint32_t id, int ring) {
  Node& n = node(id);
  if (!n.up || n.connected) Die("Reconnect of a node that is down or connected");
  if (ring < 0) {
    for (auto& [oid, o] : nodes_)
      if (o->up && o->connected && o->ring >= 0) {
        ring = o->ring;
        break;
      }
  }
  if (ring < 0) {
    ring = next_ring_++;
    rings_[ring];
  }
  n.connected = true;
  n.in_view = false;
  n.pid = n.id * 1000 + (n.pid + 1) % 1000;  // a new CPG incarnation
  n.ring = ring;
  rings_.at(ring).members.insert(id);
  // Coalesce with a view queued last for this ring by the same Start call.
  EnqueueView(ring, {id}, {});
}

void Sim::Crash(uint32_t id) {
  Node& n = node(id);
  if (!n.up) Die("Crash of a node that is down");
  int ring = n.ring;
  n.engine.reset();
  n.up = false;
  n.in_view = false;
  n.completions.clear();
  n.store.stall = false;
  if (n.connected) {
    n.connected = false;
    n.ring = -1;
    rings_.at(ring).members.erase(id);
    EnqueueView(ring, {}, {id});
  }
}

void Sim::Disconnect(uint32_t id) {
  Node& n = node(id);
  if (!n.up || !n.connected) Die("Disconnect of a node that is not connected");
  int ring = n.ring;
  n.engine->OnDisconnected();
  n.connected = false;
  n.in_view = false;
  n.ring = -1;
  rings_.at(ring).members.erase(id);
  EnqueueView(ring, {}, {id});
}

void Sim::EnqueueView(int ring, std::vector<uint32_t> joined, std::vector<uint32_t> left,
                      const std::map<uint32_t, std::vector<uint32_t>>* per_node_joined) {
  Ring& r = rings_.at(ring);
  // Several nodes starting together join in one view: merge into a trailing view of this ring
  // that nobody has received yet.
  if (!per_node_joined && left.empty() && !r.queue.empty() && r.queue.back().view &&
      r.queue.back().left.empty() && !joined.empty()) {
    Event& e = r.queue.back();
    bool simple = true;
    for (auto& [m, j] : e.joined)
      if (j != e.joined.begin()->second) simple = false;
    if (simple) {
      std::vector<uint32_t> all = e.joined.begin()->second;
      all.insert(all.end(), joined.begin(), joined.end());
      std::sort(all.begin(), all.end());
      joined = all;
      r.queue.pop_back();
    }
  }
  Event e;
  e.view = true;
  for (uint32_t m : r.members) e.members.push_back(m);
  for (uint32_t m : r.members) {
    if (per_node_joined) {
      auto it = per_node_joined->find(m);
      if (it != per_node_joined->end()) e.joined[m] = it->second;
    } else {
      e.joined[m] = joined;
    }
  }
  e.left = left;
  for (uint32_t m : e.members) e.pids.push_back(node(m).pid);
  r.queue.push_back(std::move(e));
}

void Sim::Deliver(Ring& r, const Event& e) {
  int ring_id = -1;
  for (auto& [id, rr] : rings_)
    if (&rr == &r) ring_id = id;
  if (e.view) {
    std::map<uint32_t, uint32_t> pids;
    for (size_t i = 0; i < e.members.size(); i++) pids[e.members[i]] = e.pids[i];
    r.delivered = {};
    for (auto& [m, p] : pids) r.delivered.insert(m);
    delivered_pids_[ring_id] = pids;
    for (uint32_t m : e.members) {
      Node& n = node(m);
      if (!n.up || !n.connected || n.ring != ring_id || n.pid != pids[m]) continue;
      CpgView v;
      for (auto& [id, p] : pids) v.members.push_back({id, p, 0});
      auto jit = e.joined.find(m);
      if (jit != e.joined.end())
        for (uint32_t j : jit->second) v.joined.push_back({j, pids.count(j) ? pids[j] : 0, 1});
      for (uint32_t l : e.left) v.left.push_back({l, 0, 3});
      n.in_view = true;
      n.engine->OnView(v);
    }
    return;
  }
  auto pit = delivered_pids_.find(ring_id);
  for (uint32_t m : r.delivered) {
    Node& n = node(m);
    if (!n.up || !n.connected || !n.in_view || n.ring != ring_id) continue;
    if (pit == delivered_pids_.end() || pit->second[m] != n.pid) continue;
    n.engine->OnDeliver(e.from, e.pid, e.bytes);
  }
}

bool Sim::DeliverSome(int ring) {
  Ring& r = rings_.at(ring);
  size_t n = r.queue.size();
  if (n == 0) return false;
  if (rng_) n = std::uniform_int_distribution<size_t>(1, n)(*rng_);
  for (size_t i = 0; i < n && !r.queue.empty(); i++) {
    Event e = std::move(r.queue.front());
    r.queue.pop_front();
    Deliver(r, e);
  }
  return true;
}

void Sim::DrainRing(int ring) {
  while (!rings_.at(ring).queue.empty()) {
    Ring& r = rings_.at(ring);
    Event e = std::move(r.queue.front());
    r.queue.pop_front();
    Deliver(r, e);
  }
}

std::vector<int> Sim::Partition(const std::vector<std::vector<uint32_t>>& parts) {
  if (parts.empty()) Die("Partition without parts");
  int g = node(parts[0][0]).ring;
  if (g < 0) Die("Partition of a disconnected node");
  DrainRing(g);
  std::set<uint32_t> all = rings_.at(g).members;
  std::vector<std::set<uint32_t>> sets;
  std::set<uint32_t> listed;
  for (auto& p : parts) {
    std::set<uint32_t> s;
    for (uint32_t id : p) {
      if (!all.count(id)) continue;  // down or elsewhere
      s.insert(id);
      listed.insert(id);
    }
    sets.push_back(s);
  }
  for (uint32_t id : all)
    if (!listed.count(id)) sets[0].insert(id);
  std::vector<int> out;
  for (size_t i = 0; i < sets.size(); i++) {
    int rid = i == 0 ? g : next_ring_++;
    Ring& r = rings_[rid];
    r.members = sets[i];
    if (i != 0) {
      r.delivered = rings_.at(g).delivered;
      delivered_pids_[rid] = delivered_pids_[g];
    }
    for (uint32_t id : sets[i]) node(id).ring = rid;
    out.push_back(rid);
  }
  for (size_t i = 0; i < sets.size(); i++) {
    std::vector<uint32_t> left;
    for (uint32_t id : all)
      if (!sets[i].count(id)) left.push_back(id);
    EnqueueView(out[i], {}, left);
  }
  return out;
}

void Sim::HealAll() {
  std::vector<int> ids;
  for (auto& [id, r] : rings_)
    if (!r.members.empty() || !r.queue.empty()) ids.push_back(id);
  for (int id : ids) DrainRing(id);
  std::vector<int> live;
  for (int id : ids)
    if (!rings_.at(id).members.empty()) live.push_back(id);
  if (live.size() <= 1) return;
  int target = live[0];
  std::map<uint32_t, std::vector<uint32_t>> joined;
  std::set<uint32_t> all;
  for (int id : live)
    for (uint32_t m : rings_.at(id).members) all.insert(m);
  for (int id : live) {
    for (uint32_t m : rings_.at(id).members) {
      for (uint32_t o : all)
        if (!rings_.at(id).members.count(o)) joined[m].push_back(o);
    }
  }
  for (int id : live) {
    if (id == target) continue;
    for (uint32_t m : rings_.at(id).members) node(m).ring = target;
    rings_.erase(id);
    delivered_pids_.erase(id);
  }
  rings_.at(target).members = all;
  EnqueueView(target, {}, {}, &joined);
}

std::vector<uint32_t> Sim::LiveIds() const {
  std::vector<uint32_t> out;
  for (auto& [id, n] : nodes_)
    if (n->up && n->connected) out.push_back(id);
  return out;
}

std::vector<uint32_t> Sim::RingMembers(int ring) const {
  auto it = rings_.find(ring);
  if (it == rings_.end()) return {};
  return {it->second.members.begin(), it->second.members.end()};
}

void Sim::Inject(uint32_t from, std::vector<uint8_t> bytes) {
  Node& n = node(from);
  if (n.ring < 0) Die("Inject from a disconnected node");
  Event e;
  e.from = from;
  e.pid = n.pid;
  e.bytes = std::move(bytes);
  rings_.at(n.ring).queue.push_back(std::move(e));
}

bool Sim::Flush(Node& n) {
  Ready r = n.engine->TakeReady(opt_.send_budget);
  if (r.empty()) return false;
  for (const StoreOp& op : r.store_ops) n.outputs.push_back("store " + std::to_string(op.kind));
  for (const Reply& rep : r.replies) n.outputs.push_back("reply " + std::to_string(rep.op));
  for (StoreOp& op : r.store_ops) {
    if (op.kind == StoreOp::kLoadGlobal) {
      n.store.ops++;
      n.store.log.push_back(op.kind);
      Completion c;
      c.token = op.token;
      c.global = true;
      if (n.store.fault.count > 0 &&
          (!n.store.fault.kind || *n.store.fault.kind == StoreOp::kLoadGlobal)) {
        n.store.fault.count--;
        n.store.failed_ops++;
        c.status = Err(n.store.fault.code, "injected global load failure");
      } else if (auto it = global.find(op.meta.name); it != global.end()) {
        c.loaded = it->second;
      }
      n.completions.push_back(std::move(c));
      continue;
    }
    Status st = n.store.Apply(op, global);
    if (op.token) n.completions.push_back({op.token, false, st, std::nullopt});
  }
  for (auto& msg : r.sends) {
    for (std::span<const uint8_t> inner : Unbundle(msg)) {
      Decoded d;
      if (Decode(inner, &d).ok() && d.type == MsgType::kAck) {
        auto& ack = std::get<AckMsg>(d.control);
        if (ack.status == uint32_t(AckStatus::kStored)) {
          auto latest = n.store.Latest(ack.name);
          if (!latest || *latest < ack.version) n.acks_without_persist++;
        }
      }
    }
    if (capture) captured.push_back(msg);
    if (n.connected && n.ring >= 0) {
      Event e;
      e.from = n.id;
      e.pid = n.pid;
      e.bytes = std::move(msg);
      rings_.at(n.ring).queue.push_back(std::move(e));
    }
  }
  for (auto& rep : r.replies) replies_[{n.id, rep.conn_id}].push_back(std::move(rep));
  for (auto& ev : r.events) events_[{n.id, ev.conn_id}].push_back(std::move(ev));
  for (auto& a : r.attributes) {
    if (a.value.empty())
      n.attributes.erase(a.name);
    else
      n.attributes[a.name] = a.value;
  }
  return true;
}

bool Sim::Complete(Node& n) {
  if (n.store.stall || n.completions.empty() || !n.engine) return false;
  std::deque<Completion> done = std::move(n.completions);
  n.completions.clear();
  for (auto& c : done) {
    if (!n.engine) break;
    if (c.global) {
      if (!c.status.ok())
        n.engine->OnGlobalLoaded(c.token, c.status);
      else
        n.engine->OnGlobalLoaded(c.token, std::optional<LoadedSegment>(std::move(c.loaded)));
    } else {
      n.engine->OnStoreDone(c.token, c.status);
    }
  }
  if (n.engine) n.engine->CheckInvariants();  // store results change held bytes, timers
  return true;
}

bool Sim::Step() {
  std::vector<uint32_t> order;
  for (auto& [id, n] : nodes_)
    if (n->up) order.push_back(id);
  if (rng_) std::shuffle(order.begin(), order.end(), *rng_);
  bool progress = false;
  for (uint32_t id : order) progress |= Flush(node(id));
  for (uint32_t id : order) progress |= Complete(node(id));
  std::vector<int> rings;
  for (auto& [id, r] : rings_) rings.push_back(id);
  if (hold_deliveries) return progress;
  for (int id : rings)
    if (rings_.count(id)) progress |= DeliverSome(id);
  return progress;
}

bool Sim::Pump() {
  for (int i = 0; i < opt_.max_iterations; i++)
    if (!Step()) return true;
  return false;
}

void Sim::Tick(uint64_t advance_ms) {
  now_ms_ += advance_ms;
  for (auto& [id, n] : nodes_)
    if (n->up) {
      n->engine->OnTick(now_ms_);
      n->engine->CheckInvariants();
    }
}

void Sim::Unstall(uint32_t id) { node(id).store.stall = false; }

void Sim::Request(uint32_t node_id, const Caller& c, int32_t op, std::span<const uint8_t> body) {
  engine(node_id).OnClient(c, op, body);
}

std::optional<Reply> Sim::TakeReply(uint32_t node_id, uint64_t conn) {
  auto it = replies_.find({node_id, conn});
  if (it == replies_.end() || it->second.empty()) return std::nullopt;
  Reply r = std::move(it->second.front());
  it->second.pop_front();
  return r;
}

std::vector<ClientEvent> Sim::TakeEvents(uint32_t node_id, uint64_t conn) {
  auto it = events_.find({node_id, conn});
  if (it == events_.end()) return {};
  std::vector<ClientEvent> out = std::move(it->second);
  events_.erase(it);
  return out;
}

size_t Sim::PendingReplies(uint32_t node_id, uint64_t conn) const {
  auto it = replies_.find({node_id, conn});
  return it == replies_.end() ? 0 : it->second.size();
}

// ---- Client ----------------------------------------------------------------------------------

void Client::SendRaw(int32_t op, std::span<const uint8_t> body) {
  sim_.Request(node_, caller_, op, body);
}

void Client::SendOpen(const std::string& name, uint64_t size, uint32_t flags, OpenOpts o) {
  ipc::OpenReq req;
  req.name = name;
  req.size = size;
  req.replicas = o.replicas;
  req.versions_kept = o.versions_kept;
  req.durability = o.durability;
  req.mode = o.mode;
  req.flags = flags;
  req.pull_timeout_ms = o.pull_timeout_ms;
  SendRaw(ipc::kOpen, ipc::EncodeRequest(req));
}

void Client::SendCommit(const std::vector<Piece>& pieces, uint32_t flags, uint32_t timeout_ms,
                        uint64_t expected_seq) {
  ipc::CommitReq req;
  req.handle = handle;
  req.flags = flags;
  req.timeout_ms = timeout_ms;
  req.expected_seq = expected_seq;
  for (auto& p : pieces) req.ranges.push_back({p.offset, p.bytes.size()});
  std::vector<uint8_t> body = ipc::EncodeRequest(req);
  for (auto& p : pieces) body.insert(body.end(), p.bytes.begin(), p.bytes.end());
  SendRaw(ipc::kCommit, body);
}

void Client::SendPull(const std::string& name, uint32_t timeout_ms) {
  SendName(ipc::kPull, name, timeout_ms);
}

void Client::SendName(int32_t op, const std::string& name, uint32_t timeout_ms) {
  SendRaw(op, ipc::EncodeRequest(ipc::NameReq{name, timeout_ms}));
}

void Client::SendRead(const std::string& name, uint64_t offset, uint64_t length,
                      std::optional<Version> version) {
  ipc::ReadReq req;
  req.name = name;
  req.has_version = version.has_value();
  if (version) req.version = *version;
  req.offset = offset;
  req.length = length;
  SendRaw(ipc::kRead, ipc::EncodeRequest(req));
}

Status Client::Open(const std::string& name, uint64_t size, uint32_t flags, OpenOpts o,
                    ipc::OpenResp* resp) {
  SendOpen(name, size, flags, o);
  ipc::OpenResp r;
  Status st = Wait(&r);
  if (st.ok()) handle = r.handle;
  if (resp) *resp = r;
  return st;
}

Status Client::Commit(const std::vector<Piece>& pieces, bool sync, Version* v,
                      uint32_t timeout_ms) {
  SendCommit(pieces, sync ? ipc::kCommitSync : 0, timeout_ms);
  if (!sync) {
    sim_.Pump();
    return Status::Ok();
  }
  ipc::CommitResp r;
  Status st = Wait(&r);
  if (v) *v = r.version;
  return st;
}

Status Client::Pull(const std::string& name, Version* v, uint32_t timeout_ms) {
  SendPull(name, timeout_ms);
  ipc::VersionResp r;
  Status st = Wait(&r);
  if (v) *v = r.version;
  return st;
}

Status Client::Release(const std::string& name) {
  SendName(ipc::kRelease, name);
  return WaitStatus();
}

Status Client::Delete(const std::string& name) {
  SendName(ipc::kDelete, name);
  return WaitStatus();
}

Status Client::Close() {
  SendRaw(ipc::kClose, ipc::EncodeRequest(ipc::HandleReq{handle, 0}));
  return WaitStatus();
}

Status Client::Read(const std::string& name, uint64_t offset, uint64_t length, ipc::ReadResp* out,
                    std::optional<Version> version) {
  SendRead(name, offset, length, version);
  return Wait(out);
}

std::vector<ipc::AsyncErrorEvent> Client::AsyncErrors(std::vector<Status>* statuses) {
  std::vector<ipc::AsyncErrorEvent> out;
  for (auto& ev : sim_.TakeEvents(node_, caller_.conn_id)) {
    ipc::AsyncErrorEvent e;
    Status st = ipc::DecodeResponse(ev.body, &e);
    // The event's fields carry the failure (older encodings used the response status).
    if (st.ok() && e.status != 0) st = Status(static_cast<Code>(e.status), e.message);
    if (statuses) statuses->push_back(st);
    out.push_back(e);
  }
  return out;
}

}  // namespace ckpt::repl::sim
