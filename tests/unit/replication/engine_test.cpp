// Scenario tests of replication::Engine over the simulated cluster (sim.hpp).
#include <gtest/gtest.h>

#include <random>

#include "common/checksum.hpp"
#include "common/codec.hpp"
#include "tests/unit/replication/test_util.hpp"

namespace ckpt::repl::sim {
namespace {

constexpr uint32_t kCreate = CKPT_OPEN_CREATE;

std::unique_ptr<Sim> Cluster(uint32_t n, SimOptions o = {}) {
  o.nodes = n;
  auto s = std::make_unique<Sim>(o);
  s->StartAll();
  EXPECT_TRUE(s->Pump());
  return s;
}

// Creates `name` on `node` and returns the writer.
Client Create(Sim& s, uint32_t node, uint64_t conn, const std::string& name, uint64_t size,
              OpenOpts o = {}) {
  Client c(s, node, conn);
  ipc::OpenResp resp;
  Status st = c.Open(name, size, kCreate, o, &resp);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(resp.size, size);
  EXPECT_EQ(resp.version.seq, 0u);
  return c;
}

TEST(EngineTest, CreateCommitReplicatesToTargets) {
  auto s = Cluster(4);
  Client c = Create(*s, 1, 11, "seg-a", 10000, {.replicas = 2});
  auto meta = s->engine(1).Meta("seg-a");
  ASSERT_TRUE(meta);
  EXPECT_EQ(meta->owner_nodeid, 1u);
  EXPECT_GE(meta->epoch, 1u);
  EXPECT_EQ(meta->replicas, 2u);
  EXPECT_EQ(meta->size, 10000u);
  EXPECT_EQ(s->node(1).store.local.count("seg-a"), 1u) << "local storage installed";

  std::vector<uint8_t> model(10000, 0);
  std::vector<Piece> p1 = {{0, Pattern(3000, 1)}, {7000, Pattern(2500, 2)}};
  ASSERT_TRUE(c.Commit(p1, /*sync=*/false).ok());
  ApplyPieces(model, p1);
  ExpectReplicated(*s, "seg-a", model, {meta->epoch, 1}, 2);
  EXPECT_TRUE(c.AsyncErrors().empty());

  std::vector<Piece> p2 = {{5000, Pattern(4000, 3)}};
  Version v;
  Status st = c.Commit(p2, /*sync=*/true, &v);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(v, (Version{meta->epoch, 2}));
  ApplyPieces(model, p2);
  ExpectReplicated(*s, "seg-a", model, v, 2);
  // Sync commit returned only after both targets acknowledged.
  for (uint32_t t : s->engine(1).ReplicaTargets("seg-a"))
    EXPECT_EQ(s->engine(1).HolderVersion("seg-a", t), v);
  EXPECT_EQ(s->engine(1).HolderVersion("seg-a", 1), v);
  for (uint32_t id = 1; id <= 4; id++) EXPECT_EQ(s->node(id).acks_without_persist, 0u);
}

// A coalesced commit (libckpt's batch of async commits) is labelled with the seq of the last
// commit in it, which may skip seqs; without the flag, or behind ckptd, a seq is refused.
TEST(EngineTest, CoalescedCommitTakesItsSeqAndOthersMustBeNext) {
  auto s = Cluster(2);
  Client c = Create(*s, 1, 11, "seg-c", 4096, {.replicas = 1});
  uint64_t epoch = s->engine(1).Meta("seg-c")->epoch;
  std::vector<uint8_t> model(4096, 0);
  std::vector<Piece> p1 = {{0, Pattern(100, 1)}};
  c.SendCommit(p1, ipc::kCommitCoalesced, 0, /*expected_seq=*/7);
  ASSERT_TRUE(s->Pump());
  ApplyPieces(model, p1);
  ExpectReplicated(*s, "seg-c", model, {epoch, 7}, 1);
  EXPECT_TRUE(c.AsyncErrors().empty());
  // Not coalesced: must be exactly the next seq.
  c.SendCommit({{0, Pattern(10, 2)}}, 0, 0, /*expected_seq=*/9);
  ASSERT_TRUE(s->Pump());
  EXPECT_EQ(c.AsyncErrors().size(), 1u) << "seq 9 after 7 is a mismatch without the flag";
  EXPECT_EQ(s->engine(1).LocalVersion("seg-c"), (Version{epoch, 7}));
}

TEST(EngineTest, ChunkReassemblyAndAtomicMultiPartCommit) {
  SimOptions o;
  o.send_budget = 8 * 1024;  // two chunks per TakeReady: transfers span many pumps
  auto s = Cluster(3, o);
  const uint64_t size = 150001;  // not a multiple of the chunk size nor of the block size
  Client c = Create(*s, 1, 11, "chunky", size, {.replicas = 2});
  std::vector<uint8_t> model(size, 0);
  std::vector<Piece> all = {{0, Pattern(size, 7)}};
  Version v1;
  ASSERT_TRUE(c.Commit(all, true, &v1).ok());
  ApplyPieces(model, all);
  ExpectReplicated(*s, "chunky", model, v1, 2);
  // One multicast full transfer serves both targets.
  EXPECT_EQ(s->engine(1).counters().payload_bytes_sent, size);
  EXPECT_EQ(s->engine(1).counters().full_transfers_sent, 1u);

  // Multi-range, multi-part commit: part 1 must never become visible alone.
  std::vector<Piece> part1 = {{1, Pattern(9000, 8)}, {70000, Pattern(5, 9)}};
  std::vector<Piece> part2 = {{140000, Pattern(10001, 10)}, {65530, Pattern(20, 11)}};
  c.SendCommit(part1, ipc::kCommitMorePartsFollow);
  ASSERT_TRUE(s->Pump());
  for (uint32_t id = 1; id <= 3; id++) {
    EXPECT_EQ(s->engine(id).LocalVersion("chunky"), std::optional<Version>(v1)) << id;
    EXPECT_TRUE(ImageOf(*s, id, "chunky") == model) << id;
  }
  EXPECT_FALSE(c.HasReply());
  std::vector<uint8_t> next = model;
  ApplyPieces(next, part1);
  ApplyPieces(next, part2);
  c.SendCommit(part2, ipc::kCommitSync);
  // Step by step: every node holds either v1 or v2, each byte-exact.
  Version v2{v1.epoch, v1.seq + 1};
  for (int i = 0; i < 10000 && s->Step(); i++) {
    for (uint32_t id = 1; id <= 3; id++) {
      auto lv = s->engine(id).LocalVersion("chunky");
      ASSERT_TRUE(lv);
      if (*lv == v1)
        ASSERT_TRUE(ImageOf(*s, id, "chunky") == model) << "node " << id << " step " << i;
      else if (*lv == v2)
        ASSERT_TRUE(ImageOf(*s, id, "chunky") == next) << "node " << id << " step " << i;
      else
        FAIL() << "unexpected version " << lv->ToString();
      for (auto& [ver, img] : s->node(id).store.segs["chunky"].versions) {
        if (ver == v2) {
          ASSERT_TRUE(Bytes(img) == next);
        }
        if (ver == v1) {
          ASSERT_TRUE(Bytes(img) == model);
        }
      }
    }
  }
  ipc::CommitResp r;
  ASSERT_TRUE(c.Take(&r).ok());
  EXPECT_EQ(r.version, v2);
  ExpectReplicated(*s, "chunky", next, v2, 2);
}

TEST(EngineTest, DeltaAfterFirstFullCopyAndFullCopyForNewTarget) {
  auto s = Cluster(4);
  const uint64_t size = 256 * 1024;
  Client c = Create(*s, 1, 11, "delta", size, {.replicas = 1});
  std::vector<uint8_t> model(size, 0);
  std::vector<Piece> all = {{0, Pattern(size, 1)}};
  Version v;
  ASSERT_TRUE(c.Commit(all, true, &v).ok());
  ApplyPieces(model, all);
  ExpectReplicated(*s, "delta", model, v, 1);
  const EngineCounters c1 = s->engine(1).counters();
  EXPECT_EQ(c1.full_transfers_sent, 1u);
  EXPECT_EQ(c1.delta_transfers_sent, 0u);
  EXPECT_EQ(c1.payload_bytes_sent, size);

  std::vector<Piece> small = {{1000, Pattern(100, 2)}, {200000, Pattern(28, 3)}};
  ASSERT_TRUE(c.Commit(small, true, &v).ok());
  ApplyPieces(model, small);
  ExpectReplicated(*s, "delta", model, v, 1);
  const EngineCounters c2 = s->engine(1).counters();
  EXPECT_EQ(c2.delta_transfers_sent, 1u);
  EXPECT_EQ(c2.full_transfers_sent, 1u);
  EXPECT_EQ(c2.payload_bytes_sent - c1.payload_bytes_sent, 128u) << "only the dirty bytes";

  // The target goes away: the next node in hash order lacks any base and gets a full copy.
  uint32_t old_target = s->engine(1).ReplicaTargets("delta").at(0);
  s->Crash(old_target);
  ASSERT_TRUE(s->Pump());
  auto tg = s->engine(1).ReplicaTargets("delta");
  ASSERT_EQ(tg.size(), 1u);
  EXPECT_NE(tg[0], old_target);
  const EngineCounters c3 = s->engine(1).counters();
  EXPECT_EQ(c3.full_transfers_sent, 2u);
  EXPECT_EQ(c3.payload_bytes_sent - c2.payload_bytes_sent, size);
  ExpectReplicated(*s, "delta", model, v, 1);
}

// While a transfer is still in corosync (its last chunk not yet delivered back to the owner),
// further commits do not each become a message: they coalesce into one delta of their union.
// The owner's own store writes coalesce the same way while one is in flight.
TEST(EngineTest, CommitsCoalesceWhileATransferIsOnTheWire) {
  auto s = Cluster(3);
  const uint64_t size = 256 * 1024;
  Client c = Create(*s, 1, 11, "burst", size, {.replicas = 2});
  std::vector<uint8_t> model(size, 0);
  std::vector<Piece> all = {{0, Pattern(size, 1)}};
  Version v;
  ASSERT_TRUE(c.Commit(all, true, &v).ok());
  ApplyPieces(model, all);
  const EngineCounters before = s->engine(1).counters();
  auto data_messages = [&] {
    size_t n = 0;
    for (auto& m : s->captured) {
      for (std::span<const uint8_t> inner : Unbundle(m)) {
        Decoded d;
        if (Decode(inner, &d).ok() && d.type == MsgType::kData) n++;
      }
    }
    return n;
  };
  s->capture = true;
  s->hold_deliveries = true;
  s->node(1).store.stall = true;  // the owner's disk is slow too
  const size_t store_ops_before = s->node(1).store.log.size();
  for (int i = 0; i < 20; i++) {
    std::vector<Piece> p = {{uint64_t(i) * 1000, Pattern(100, 10 + i)}};
    c.SendCommit(p, 0, 0);
    ApplyPieces(model, p);
    s->Step();
  }
  EXPECT_EQ(data_messages(), 1u) << "only the first commit went out while it was on the wire";
  EXPECT_LE(s->node(1).store.log.size() - store_ops_before, 2u)
      << "one owner write (and its prune) in flight, the rest waits";
  s->hold_deliveries = false;
  s->Unstall(1);
  ASSERT_TRUE(s->Pump());
  EXPECT_EQ(data_messages(), 2u) << "then one delta carrying the other 19 commits";
  const EngineCounters after = s->engine(1).counters();
  EXPECT_EQ(after.payload_bytes_sent - before.payload_bytes_sent, 2000u)
      << "first commit (100 B) + union of 19 (1900 B): nothing twice";
  Version latest = *s->engine(1).LocalVersion("burst");
  EXPECT_EQ(latest.seq, v.seq + 20);
  ExpectReplicated(*s, "burst", model, latest, 2);
  ASSERT_TRUE(s->node(1).store.Latest("burst").has_value());
  EXPECT_EQ(*s->node(1).store.Latest("burst"), latest) << "the owner's store caught up";
  EXPECT_EQ(s->node(1).store.delta_without_base, 0u);
}

TEST(EngineTest, ReplicaCrashRestoresReplicaCount) {
  auto s = Cluster(4);
  Client c = Create(*s, 1, 11, "rc", 20000, {.replicas = 2});
  std::vector<uint8_t> model(20000, 0);
  std::vector<Piece> p = {{100, Pattern(19000, 5)}};
  Version v;
  ASSERT_TRUE(c.Commit(p, true, &v).ok());
  ApplyPieces(model, p);
  auto before = s->engine(1).ReplicaTargets("rc");
  ASSERT_EQ(before.size(), 2u);
  s->Crash(before[0]);
  ASSERT_TRUE(s->Pump());
  auto after = s->engine(1).ReplicaTargets("rc");
  ASSERT_EQ(after.size(), 2u);
  EXPECT_TRUE(std::find(after.begin(), after.end(), before[1]) != after.end());
  EXPECT_TRUE(std::find(after.begin(), after.end(), before[0]) == after.end());
  ExpectReplicated(*s, "rc", model, v, 2);
  // Flush confirms R copies of the latest version.
  c.SendRaw(ipc::kFlush, ipc::EncodeRequest(ipc::HandleReq{c.handle, 0}));
  EXPECT_TRUE(c.WaitStatus().ok());
}

TEST(EngineTest, OwnerCrashPullReturnsLastAckedVersion) {
  auto s = Cluster(4);
  Client c = Create(*s, 1, 11, "oc", 30000, {.replicas = 2});
  std::vector<uint8_t> model(30000, 0);
  Version v;
  for (int i = 0; i < 3; i++) {
    std::vector<Piece> p = {{uint64_t(i) * 9000, Pattern(9000, 20 + i)}};
    ASSERT_TRUE(c.Commit(p, true, &v).ok());
    ApplyPieces(model, p);
  }
  uint64_t old_epoch = s->engine(2).Meta("oc")->epoch;
  auto targets = s->engine(2).ReplicaTargets("oc");
  s->Crash(1);
  ASSERT_TRUE(s->Pump());
  // Pull on the node that is not a holder.
  uint32_t other = 0;
  for (uint32_t id = 2; id <= 4; id++)
    if (std::find(targets.begin(), targets.end(), id) == targets.end()) other = id;
  ASSERT_NE(other, 0u);
  Client p(*s, other, 21);
  Version got;
  Status st = p.Pull("oc", &got);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(got, (Version{s->engine(other).Meta("oc")->epoch, v.seq}));  // relabelled
  EXPECT_TRUE(ImageOf(*s, other, "oc") == model);
  EXPECT_TRUE(Bytes(s->node(other).store.local.at("oc")) == model) << "local storage installed";
  for (uint32_t id : s->LiveIds()) {
    auto m = s->engine(id).Meta("oc");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->owner_nodeid, other);
    EXPECT_GT(m->epoch, old_epoch);
  }
  // The new owner can open and commit; the epoch of new versions is the new one.
  Client w(*s, other, 22);
  ASSERT_TRUE(w.Open("oc", 0, 0).ok());
  std::vector<Piece> np = {{0, Pattern(10, 99)}};
  Version nv;
  ASSERT_TRUE(w.Commit(np, true, &nv).ok());
  ApplyPieces(model, np);
  EXPECT_EQ(nv.epoch, s->engine(other).Meta("oc")->epoch);
  EXPECT_EQ(nv.seq, v.seq + 1);
  ExpectReplicated(*s, "oc", model, nv, 2);
}

// ckptd sends a reply only once the store ops submitted before it completed, so the restored
// version's persistence (a whole-segment write) must be handed out after the pull's reply, not
// together with the install the reply waits for.  A restore of stream_store_min_bytes or more is
// written to the local storage as it arrives (kLocalBegin/Append, then kLocalFinish replaces
// it); a smaller one is installed whole (kInstallLocal).
void ExpectRestorePersistedAfterReply(uint64_t size, StoreOp::Kind install_kind) {
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "pr", size, {.replicas = 1});
  Version v;
  const std::vector<uint8_t> model = Pattern(size, 5);
  ASSERT_TRUE(c.Commit({{0, model}}, true, &v).ok());
  const uint32_t holder = s->engine(2).ReplicaTargets("pr").at(0);
  const uint32_t puller = holder == 2 ? 3 : 2;
  s->Crash(1);
  ASSERT_TRUE(s->Pump());
  s->node(puller).outputs.clear();
  s->node(puller).store.log.clear();
  Client p(*s, puller, 21);
  ASSERT_TRUE(p.Pull("pr").ok());
  const auto& out = s->node(puller).outputs;
  auto at = [&](const std::string& what) {
    return std::find(out.begin(), out.end(), what) - out.begin();
  };
  const auto install = at("store " + std::to_string(install_kind));
  const auto reply = at("reply " + std::to_string(ipc::kPull));
  const auto persist = at("store " + std::to_string(StoreOp::kPutFull));
  ASSERT_LT(install, static_cast<long>(out.size()));
  ASSERT_LT(reply, static_cast<long>(out.size()));
  ASSERT_LT(persist, static_cast<long>(out.size())) << "the restored version is persisted";
  EXPECT_LT(install, reply);
  EXPECT_LT(reply, persist);
  EXPECT_TRUE(s->node(puller).store.Latest("pr").has_value());
  EXPECT_TRUE(Bytes(s->node(puller).store.local.at("pr")) == model) << "local storage installed";
  const auto& log = s->node(puller).store.log;
  auto count = [&](StoreOp::Kind k) { return std::count(log.begin(), log.end(), k); };
  const bool streamed = install_kind == StoreOp::kLocalFinish;
  EXPECT_EQ(count(StoreOp::kInstallLocal), streamed ? 0 : 1);
  EXPECT_EQ(count(StoreOp::kLocalBegin), streamed ? 1 : 0);
  EXPECT_EQ(count(StoreOp::kLocalFinish), streamed ? 1 : 0);
  EXPECT_EQ(count(StoreOp::kLocalAbort), 0);
  if (streamed) {
    EXPECT_GE(count(StoreOp::kLocalAppend), int64_t(size / 4096));  // ~one per chunk
  }
  EXPECT_TRUE(s->node(puller).store.violations.empty());
  EXPECT_TRUE(s->node(puller).store.local_writes.empty());
}
TEST(EngineTest, RestoredVersionIsPersistedAfterThePullReply) {
  ExpectRestorePersistedAfterReply(30000, StoreOp::kLocalFinish);
  ExpectRestorePersistedAfterReply(8000, StoreOp::kInstallLocal);
}

// The holder serving a pull dies mid-transfer: the local storage written so far is dropped
// (kLocalAbort; the application's file is untouched) and the pull completes from the other holder.
TEST(EngineTest, PullWhoseHolderDiesMidTransferRestartsTheLocalWrite) {
  SimOptions o;
  o.send_budget = 8 * 1024;  // a few chunks per pump, so the transfer is in flight for a while
  auto s = Cluster(4, o);
  Client c = Create(*s, 1, 11, "mid", 200000, {.replicas = 2});
  const std::vector<uint8_t> model = Pattern(200000, 6);
  ASSERT_TRUE(c.Commit({{0, model}}, true).ok());
  auto holders = s->engine(2).ReplicaTargets("mid");
  ASSERT_EQ(holders.size(), 2u);
  uint32_t puller = 0;
  for (uint32_t id = 2; id <= 4; id++)
    if (std::find(holders.begin(), holders.end(), id) == holders.end()) puller = id;
  s->Crash(1);
  ASSERT_TRUE(s->Pump());
  Client p(*s, puller, 21);
  p.SendPull("mid");
  // Step until the puller has begun writing its local storage, then kill the serving holder.
  for (int i = 0; i < 400 && s->node(puller).store.local_writes.empty(); i++) s->Step();
  ASSERT_FALSE(s->node(puller).store.local_writes.empty()) << "no local write was begun";
  uint32_t serving = 0;
  for (uint32_t h : holders)
    if (s->node(h).engine && s->engine(h).counters().payload_bytes_sent > 0) serving = h;
  ASSERT_NE(serving, 0u);
  s->Crash(serving);
  Version got;
  Status st = p.Wait(&got);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(Bytes(s->node(puller).store.local.at("mid")) == model);
  const auto& log = s->node(puller).store.log;
  auto count = [&](StoreOp::Kind k) { return std::count(log.begin(), log.end(), k); };
  EXPECT_EQ(count(StoreOp::kLocalBegin), 2);
  EXPECT_EQ(count(StoreOp::kLocalAbort), 1);
  EXPECT_EQ(count(StoreOp::kLocalFinish), 1);
  EXPECT_TRUE(s->node(puller).store.local_writes.empty());
  EXPECT_TRUE(s->node(puller).store.violations.empty());
}

TEST(EngineTest, PullOnBestReplicaIsALocalRestore) {
  // R=2 on 3 nodes: after the owner's crash both survivors hold the latest version, so neither
  // the pull nor the re-replication by the new owner moves any byte.
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "lr", 40000, {.replicas = 2});
  std::vector<uint8_t> model(40000, 0);
  Version v;
  std::vector<Piece> p = {{0, Pattern(40000, 4)}};
  ASSERT_TRUE(c.Commit(p, true, &v).ok());
  ApplyPieces(model, p);
  auto targets = s->engine(1).ReplicaTargets("lr");
  s->Crash(1);
  ASSERT_TRUE(s->Pump());
  uint64_t sent_before = TotalPayloadSent(*s);
  uint32_t t = targets[0];
  uint64_t restores = s->engine(t).counters().local_restores;
  Client puller(*s, t, 31);
  Version got;
  Status st = puller.Pull("lr", &got);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(got, (Version{s->engine(t).Meta("lr")->epoch, v.seq}));  // relabelled, same bytes
  EXPECT_EQ(TotalPayloadSent(*s), sent_before) << "no DATA for a local restore";
  EXPECT_EQ(s->engine(t).counters().local_restores, restores + 1);
  EXPECT_EQ(s->engine(t).Meta("lr")->owner_nodeid, t);
  EXPECT_TRUE(Bytes(s->node(t).store.local.at("lr")) == model);
}

TEST(EngineTest, ClaimByAnotherNodeFencesTheWriter) {
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "fence", 8192, {.replicas = 1});
  std::vector<Piece> p = {{0, Pattern(100, 1)}};
  Version v;
  ASSERT_TRUE(c.Commit(p, true, &v).ok());
  Client p2(*s, 2, 21);
  ASSERT_TRUE(p2.Pull("fence").ok());
  EXPECT_EQ(s->engine(1).Meta("fence")->owner_nodeid, 2u);
  // Sync commit: reply.
  Status st = c.Commit(p, true);
  EXPECT_EQ(st.code(), Code::kFenced) << st.ToString();
  // Async commit: event.
  ASSERT_TRUE(c.Commit(p, false).ok());
  std::vector<Status> sts;
  auto evs = c.AsyncErrors(&sts);
  ASSERT_EQ(sts.size(), 1u);
  EXPECT_EQ(sts[0].code(), Code::kFenced);
  EXPECT_EQ(s->engine(1).LocalVersion("fence"), std::optional<Version>(v));
}

TEST(EngineTest, PartitionedOldOwnerIsFencedAndItsDataRejected) {
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "part", 50000, {.replicas = 1});
  std::vector<uint8_t> model(50000, 0);
  std::vector<Piece> p = {{0, Pattern(50000, 1)}};
  Version v;
  ASSERT_TRUE(c.Commit(p, true, &v).ok());
  ApplyPieces(model, p);
  s->Partition({{1}, {2, 3}});
  ASSERT_TRUE(s->Pump());
  Client p2(*s, 2, 21);
  Version got;
  ASSERT_TRUE(p2.Pull("part", &got).ok());
  uint64_t new_epoch = s->engine(2).Meta("part")->epoch;
  EXPECT_EQ(got, (Version{new_epoch, v.seq}));  // restored bytes, relabelled into the new epoch
  EXPECT_GT(new_epoch, v.epoch);
  // n1, alone, keeps committing (asynchronously: it has no eligible peer for sync commits).
  for (int i = 0; i < 5; i++) ASSERT_TRUE(c.Commit({{0, Pattern(50000, 100 + i)}}, false).ok());
  EXPECT_TRUE(c.AsyncErrors().empty());
  EXPECT_EQ(c.Commit({{0, Pattern(10, 3)}}, true).code(), Code::kNotEnoughReplicas);
  // n2 commits in the majority.
  Client w(*s, 2, 22);
  ASSERT_TRUE(w.Open("part", 0, 0).ok());
  std::vector<Piece> q = {{40000, Pattern(5000, 9)}};
  Version nv;
  ASSERT_TRUE(w.Commit(q, true, &nv).ok());
  ApplyPieces(model, q);
  uint64_t stale_before =
      s->engine(2).counters().stale_rejected + s->engine(3).counters().stale_rejected;
  s->HealAll();
  ASSERT_TRUE(s->Pump());
  for (uint32_t id = 1; id <= 3; id++) {
    auto m = s->engine(id).Meta("part");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->owner_nodeid, 2u) << id;
    EXPECT_EQ(m->epoch, new_epoch) << id;
  }
  ExpectReplicated(*s, "part", model, nv, 1);
  // The old owner sent nothing to the others at the heal (no DATA before the sync round's
  // catalogs, and after them it knows it is fenced); DATA of its old epoch that does arrive (here
  // forged, full copy of its partition-side bytes) is rejected and changes nothing.
  uint64_t stale_after =
      s->engine(2).counters().stale_rejected + s->engine(3).counters().stale_rejected;
  EXPECT_EQ(stale_after, stale_before);
  {
    std::vector<uint8_t> old_bytes = Pattern(50000, 104);
    DataHeader h;
    h.name = "part";
    h.xfer_id = 999;
    h.version = {v.epoch, v.seq + 5};
    h.size = 50000;
    h.checksum = SegmentChecksum(old_bytes.data(), old_bytes.size());
    h.kind = uint8_t(DataKind::kReplicate);
    h.targets = {2, 3};
    std::vector<DataPiece> pieces = {{0, old_bytes}};
    s->Inject(1, EncodeData(h, pieces));
    ASSERT_TRUE(s->Pump());
  }
  stale_after = s->engine(2).counters().stale_rejected + s->engine(3).counters().stale_rejected;
  EXPECT_EQ(stale_after, stale_before + 2) << "the old owner's DATA was rejected by n2 and n3";
  ExpectReplicated(*s, "part", model, nv, 1);
  EXPECT_EQ(c.Commit({{0, Pattern(10, 3)}}, true).code(), Code::kFenced);
  ASSERT_TRUE(c.Commit({{0, Pattern(10, 3)}}, false).ok());
  std::vector<Status> sts;
  c.AsyncErrors(&sts);
  ASSERT_FALSE(sts.empty());
  EXPECT_EQ(sts.back().code(), Code::kFenced);
  ExpectReplicated(*s, "part", model, nv, 1);
}

// Design problem pinned down: during a partition each side can claim the same epoch number, so
// two different contents get the same Version, and after the heal the catalog believes a node
// holds the winner's version while it holds the loser's bytes.
TEST(EngineTest, SplitBrainClaimsDoNotShareVersions) {
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "sb", 4096, {.replicas = 1});
  ASSERT_TRUE(c.Commit({{0, Pattern(4096, 1)}}, true).ok());
  ASSERT_TRUE(c.Close().ok());
  s->Partition({{1, 2}, {3}});
  ASSERT_TRUE(s->Pump());
  // Both sides take the segment over and commit different bytes.
  Client a(*s, 2, 21), b(*s, 3, 31);
  ASSERT_TRUE(a.Open("sb", 0, CKPT_OPEN_PULL).ok());
  ASSERT_TRUE(b.Open("sb", 0, CKPT_OPEN_PULL).ok());
  ASSERT_TRUE(a.Commit({{0, Pattern(4096, 2)}}, false).ok());
  ASSERT_TRUE(b.Commit({{0, Pattern(4096, 3)}}, false).ok());
  Version va = *s->engine(2).LocalVersion("sb"), vb = *s->engine(3).LocalVersion("sb");
  EXPECT_NE(va, vb) << "two different contents carry the same version " << va.ToString();
  s->HealAll();
  ASSERT_TRUE(s->Pump());
  auto m = s->engine(1).Meta("sb");
  ASSERT_TRUE(m);
  uint32_t owner = m->owner_nodeid;
  ASSERT_TRUE(owner == 2 || owner == 3);
  ExpectReplicated(*s, "sb", ImageOf(*s, owner, "sb"), *s->engine(owner).LocalVersion("sb"), 1);
}

TEST(EngineTest, ConcurrentPullsOneWins) {
  auto s = Cluster(4);
  Client c = Create(*s, 1, 11, "race", 9000, {.replicas = 2});
  Version v;
  ASSERT_TRUE(c.Commit({{0, Pattern(9000, 1)}}, true, &v).ok());
  s->Crash(1);
  ASSERT_TRUE(s->Pump());
  Client a(*s, 2, 21), b(*s, 3, 31);
  a.SendPull("race");
  b.SendPull("race");
  ASSERT_TRUE(s->Pump());
  ipc::VersionResp ra, rb;
  Status sa = a.Take(&ra), sb = b.Take(&rb);
  EXPECT_NE(sa.ok(), sb.ok()) << sa.ToString() << " / " << sb.ToString();
  Status& loser = sa.ok() ? sb : sa;
  EXPECT_EQ(loser.code(), Code::kConflict) << loser.ToString();
  uint32_t winner = sa.ok() ? 2 : 3;
  // The winner relabels the restored bytes into its own (new) epoch, same seq.
  EXPECT_EQ(sa.ok() ? ra.version : rb.version,
            (Version{s->engine(winner).Meta("race")->epoch, v.seq}));
  EXPECT_GT(s->engine(winner).Meta("race")->epoch, v.epoch);
  for (uint32_t id : s->LiveIds()) EXPECT_EQ(s->engine(id).Meta("race")->owner_nodeid, winner);
}

TEST(EngineTest, PullWithoutCheckpoint) {
  auto s = Cluster(3);
  Client c(*s, 2, 21);
  Version v{9, 9};
  Status st = c.Pull("nothing", &v);
  EXPECT_EQ(st.code(), Code::kNoCheckpoint) << st.ToString();
  EXPECT_EQ(st.c_code(), 1);
  EXPECT_EQ(v, Version{});
  for (uint32_t id = 1; id <= 3; id++) {
    EXPECT_TRUE(s->engine(id).SegmentNames().empty()) << id;
    EXPECT_TRUE(s->node(id).store.segs.empty());
  }
  // Open without CREATE: not found.
  EXPECT_EQ(c.Open("nothing", 0, CKPT_OPEN_PULL).code(), Code::kNotFound);
  EXPECT_TRUE(s->engine(1).SegmentNames().empty());
}

TEST(EngineTest, PullRestoresFromGlobalCopy) {
  SimOptions o;
  o.has_global_dir = true;
  auto s = Cluster(3, o);
  SegmentMeta m;
  m.name = "glob";
  m.size = 70000;
  m.replicas = 1;
  m.epoch = 7;
  m.owner_nodeid = 9;
  auto data = Pattern(70000, 42);
  s->global["glob"] = LoadedSegment{m, {StoredVersion{{7, 3}, BlockImage::FromBytes(data), 0}}};
  Client c(*s, 2, 21);
  Version v;
  Status st = c.Pull("glob", &v);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(v.seq, 3u);
  EXPECT_GT(v.epoch, 7u);  // a new epoch above the global copy's
  EXPECT_EQ(v.epoch, s->engine(2).Meta("glob")->epoch);
  EXPECT_TRUE(ImageOf(*s, 2, "glob") == data);
  EXPECT_TRUE(Bytes(s->node(2).store.local.at("glob")) == data);
  for (uint32_t id = 1; id <= 3; id++) {
    auto meta = s->engine(id).Meta("glob");
    ASSERT_TRUE(meta) << id;
    EXPECT_GT(meta->epoch, 7u);
    EXPECT_EQ(meta->owner_nodeid, 2u);
  }
  // It is replicated like any other segment.
  ExpectReplicated(*s, "glob", data, v, 1);
}

// A replica that restarts with the latest version in its store gets nothing sent again: its
// holdings arrive with its catalog in the sync round after it joins, and no DATA goes to a member
// before that.  (Scheduling at the confchg, when the joiner's holdings were still unknown, sent
// every segment whole: in the lab, a restart of all three ckptds re-sent ~350 MB, and a commit
// right after it waited behind that for up to 6 s.)
TEST(EngineTest, RestartedReplicaThatHoldsTheLatestIsNotSentItAgain) {
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "rr", 40000, {.replicas = 2});
  ASSERT_TRUE(c.Commit({{0, Pattern(40000, 5)}}, true).ok());
  Version v = *s->engine(1).LocalVersion("rr");
  const EngineCounters before = s->engine(1).counters();
  for (uint32_t id : {2u, 3u}) {
    s->Crash(id);
    ASSERT_TRUE(s->Pump());
    s->Restart(id);
    ASSERT_TRUE(s->Pump());
  }
  const EngineCounters& after = s->engine(1).counters();
  EXPECT_EQ(after.full_transfers_sent, before.full_transfers_sent);
  EXPECT_EQ(after.delta_transfers_sent, before.delta_transfers_sent);
  EXPECT_EQ(after.payload_bytes_sent, before.payload_bytes_sent);
  ExpectReplicated(*s, "rr", Pattern(40000, 5), v, 2);
  // A restarted replica that lost its copy still gets it.
  s->Crash(2);
  ASSERT_TRUE(s->Pump());
  s->node(2).store.segs.clear();
  s->Restart(2);
  ASSERT_TRUE(s->Pump());
  EXPECT_EQ(s->engine(1).counters().full_transfers_sent, before.full_transfers_sent + 1);
  ExpectReplicated(*s, "rr", Pattern(40000, 5), v, 2);
}

TEST(EngineTest, JoiningNodeLearnsCatalogOfThousandSegmentsAndRestartRecovers) {
  SimOptions o;
  o.nodes = 4;
  Sim s(o);
  s.Start({1, 2, 3});
  ASSERT_TRUE(s.Pump());
  const int kSegs = 1000;
  std::vector<Client> writers;
  writers.reserve(kSegs);
  for (int i = 0; i < kSegs; i++) {
    writers.emplace_back(s, 1 + i % 3, 100 + i);
    writers.back().SendOpen("s" + std::to_string(i), 100 + i, kCreate, {.replicas = 1});
  }
  ASSERT_TRUE(s.Pump());
  for (auto& w : writers) {
    ipc::OpenResp r;
    ASSERT_TRUE(w.Take(&r).ok());
    w.handle = r.handle;
  }
  std::map<std::string, std::vector<uint8_t>> model;
  for (int i = 0; i < kSegs; i++) {
    std::string name = "s" + std::to_string(i);
    model[name] = Pattern(100 + i, i);
    writers[i].SendCommit({{0, model[name]}}, 0);
  }
  ASSERT_TRUE(s.Pump());
  s.Start({4});
  ASSERT_TRUE(s.Pump());
  auto names = s.engine(4).SegmentNames();
  EXPECT_EQ(names.size(), size_t(kSegs));
  EXPECT_EQ(names, s.engine(1).SegmentNames());
  for (auto& [name, bytes] : model) {
    auto m1 = s.engine(1).Meta(name);
    ASSERT_TRUE(m1);
    EXPECT_EQ(s.engine(4).Meta(name), m1);
    for (uint32_t h = 1; h <= 4; h++)
      ASSERT_EQ(s.engine(4).HolderVersion(name, h), s.engine(1).HolderVersion(name, h))
          << name << " holder " << h;
    ExpectReplicated(s, name, bytes, {m1->epoch, 1}, 1);
    if (::testing::Test::HasFailure()) return;
  }
  // Everybody restarts from their stores.
  for (uint32_t id = 1; id <= 4; id++) s.Crash(id);
  ASSERT_TRUE(s.Pump());
  s.StartAll();
  ASSERT_TRUE(s.Pump());
  for (uint32_t id = 1; id <= 4; id++) EXPECT_EQ(s.engine(id).SegmentNames().size(), size_t(kSegs));
  for (auto& [name, bytes] : model) {
    auto m = s.engine(1).Meta(name);
    ASSERT_TRUE(m);
    for (uint32_t id = 2; id <= 4; id++) ASSERT_EQ(s.engine(id).Meta(name), m) << name;
    uint32_t owner = m->owner_nodeid;
    ASSERT_NE(owner, 0u);
    EXPECT_TRUE(ImageOf(s, owner, name) == bytes) << name;
    // Pull on the restarted owner: it re-claims (a restarted owner never continues its old
    // epoch) and restores its own copy locally, relabelled into the new epoch.
    Client p(s, owner, 5000);
    Version v;
    ASSERT_TRUE(p.Pull(name, &v).ok()) << name;
    EXPECT_EQ(v.seq, 1u);
    EXPECT_GT(v.epoch, m->epoch);
    EXPECT_EQ(v.epoch, s.engine(owner).Meta(name)->epoch);
    ExpectReplicated(s, name, bytes, v, 1);
    if (::testing::Test::HasFailure()) return;
    break;  // one pull is enough to show it; data checks for all follow
  }
  for (auto& [name, bytes] : model) {
    auto m = s.engine(1).Meta(name);
    auto tg = s.engine(1).ReplicaTargets(name);
    for (uint32_t t : tg) ASSERT_TRUE(ImageOf(s, t, name) == bytes) << name << " on " << t;
  }
}

// ---- garbage ---------------------------------------------------------------------------------

std::vector<uint8_t> Reseal(std::vector<uint8_t> msg) {
  if (msg.size() < kWireHeaderBytes) return msg;
  store_le32(msg.data() + 8, static_cast<uint32_t>(msg.size() - kWireHeaderBytes));
  store_le64(msg.data() + 16, 0);
  uint64_t sum = Checksum64Concat({msg.data(), 16},
                                  {msg.data() + kWireHeaderBytes, msg.size() - kWireHeaderBytes});
  store_le64(msg.data() + 16, sum);
  return msg;
}

struct Snapshot {
  std::map<uint32_t, std::map<std::string, std::vector<uint8_t>>> images;
  std::map<uint32_t, std::map<std::string, std::vector<Version>>> stored;
};
Snapshot Take(Sim& s, const std::vector<std::string>& names) {
  Snapshot snap;
  for (uint32_t id : s.LiveIds()) {
    for (auto& n : names) snap.images[id][n] = ImageOf(s, id, n);
    for (auto& [n, seg] : s.node(id).store.segs)
      for (auto& [v, img] : seg.versions) snap.stored[id][n].push_back(v);
  }
  return snap;
}
bool operator==(const Snapshot& a, const Snapshot& b) {
  return a.images == b.images && a.stored == b.stored;
}

TEST(EngineTest, GarbageFromPeersIsDroppedAndCounted) {
  auto s = Cluster(3);
  s->capture = true;
  Client c = Create(*s, 1, 11, "g", 20000, {.replicas = 2});
  ASSERT_TRUE(c.Commit({{0, Pattern(20000, 1)}}, true).ok());
  ASSERT_TRUE(c.Commit({{10, Pattern(100, 2)}}, true).ok());
  auto captured = s->captured;
  ASSERT_GT(captured.size(), 5u);
  Snapshot before = Take(*s, {"g"});
  std::vector<uint64_t> dropped0;
  for (uint32_t id = 1; id <= 3; id++)
    dropped0.push_back(s->engine(id).counters().messages_dropped);

  std::vector<std::vector<uint8_t>> bad;
  std::mt19937_64 rng(1234);
  bad.push_back(Pattern(100, 5));     // random bytes
  bad.push_back({});                  // empty
  bad.push_back({0x43, 0x4b, 0x50});  // shorter than a header
  for (auto& m : captured) {
    std::vector<uint8_t> t(m.begin(), m.begin() + m.size() / 2);  // truncated
    bad.push_back(t);
    std::vector<uint8_t> f = m;  // flipped byte
    f[rng() % f.size()] ^= uint8_t(1 + rng() % 255);
    bad.push_back(f);
  }
  {
    std::vector<uint8_t> u = captured[0];  // unknown type
    u[6] = 77;
    bad.push_back(Reseal(u));
    std::vector<uint8_t> v = captured[0];  // bad wire version
    v[4] = 9;
    bad.push_back(Reseal(v));
    std::vector<uint8_t> l = captured[0];  // absurd body length
    store_le32(l.data() + 8, 0xfffffff0u);
    bad.push_back(l);
    std::vector<uint8_t> magic = Reseal(captured[0]);
    magic[0] ^= 1;
    bad.push_back(magic);
    // Valid header, body with an absurd vector count (catalog) / piece count (data).
    std::vector<uint8_t> cat(kWireHeaderBytes);
    cat[6] = uint8_t(MsgType::kCatalog);
    Writer w(&cat);
    w.u32(0x7fffffff);
    bad.push_back(Reseal(cat));
    std::vector<uint8_t> trailing = captured[0];
    trailing.push_back(0);
    bad.push_back(Reseal(trailing));
  }
  for (auto& b : bad) s->Inject(2, b);
  ASSERT_TRUE(s->Pump());
  for (uint32_t id = 1; id <= 3; id++)
    EXPECT_EQ(s->engine(id).counters().messages_dropped, dropped0[id - 1] + bad.size()) << id;
  EXPECT_TRUE(Take(*s, {"g"}) == before);
  EXPECT_EQ(s->engine(3).Meta("g")->owner_nodeid, 1u);

  // Fuzz: 10,000 random mutations of real messages.  Those with a broken checksum must be
  // dropped without effect; re-sealed ones (valid checksum, garbage inside) must not crash.
  uint64_t d3 = s->engine(3).counters().messages_dropped;
  int broken = 0;
  for (int i = 0; i < 10000; i++) {
    std::vector<uint8_t> m = captured[rng() % captured.size()];
    int kind = int(rng() % 4);
    int flips = 1 + int(rng() % 4);
    for (int f = 0; f < flips && !m.empty(); f++) m[rng() % m.size()] ^= uint8_t(1 + rng() % 255);
    if (kind == 1 && !m.empty()) m.resize(rng() % m.size());
    if (kind == 2) {
      size_t extra = rng() % 16;
      for (size_t e = 0; e < extra; e++) m.push_back(uint8_t(rng()));
    }
    if (kind == 3 && m.size() >= kWireHeaderBytes) {
      // Keep magic/version/type valid so the body decoder runs.
      std::vector<uint8_t> orig = captured[rng() % captured.size()];
      for (int k = 0; k < 8; k++) m[k] = orig[k];
      m = Reseal(m);
      Decoded d;
      if (Decode(m, &d).ok()) continue;  // a valid message with odd content: see below
    }
    Decoded d;
    bool valid = Decode(m, &d).ok();
    if (valid) continue;
    broken++;
    s->engine(3).OnDeliver(2, s->node(2).pid, m);
  }
  ASSERT_TRUE(s->Pump());
  EXPECT_EQ(s->engine(3).counters().messages_dropped, d3 + broken);
  EXPECT_TRUE(Take(*s, {"g"}) == before);

  // Valid-checksum garbage straight into one engine of a scratch cluster: no crash, and the
  // cluster still works afterwards.
  auto t = Cluster(3);
  Client tc = Create(*t, 1, 11, "g", 20000, {.replicas = 2});
  ASSERT_TRUE(tc.Commit({{0, Pattern(20000, 1)}}, true).ok());
  for (int i = 0; i < 10000; i++) {
    std::vector<uint8_t> m = captured[rng() % captured.size()];
    if (m.size() <= kWireHeaderBytes) continue;
    int flips = 1 + int(rng() % 3);
    for (int f = 0; f < flips; f++) {
      size_t pos = kWireHeaderBytes + rng() % (m.size() - kWireHeaderBytes);
      m[pos] ^= uint8_t(1 + rng() % 255);
    }
    if (rng() % 4 == 0) m.resize(kWireHeaderBytes + rng() % (m.size() - kWireHeaderBytes));
    t->engine(3).OnDeliver(1 + uint32_t(rng() % 2), 1, Reseal(m));
    if (i % 500 == 0) t->engine(3).TakeReady(64 * 1024);  // outputs are dropped
  }
  (void)t->engine(3).TakeReady(1 << 20);
  ASSERT_TRUE(t->Pump());
  Client tc2(*t, 2, 22);
  EXPECT_TRUE(tc2.Open("after-fuzz", 4096, kCreate).ok());
}

TEST(EngineTest, GarbageIpcBodies) {
  auto s = Cluster(3);
  Client c(*s, 1, 11);
  const int32_t ops[] = {ipc::kHello, ipc::kOpen,     ipc::kCommit,  ipc::kFlush,  ipc::kClose,
                         ipc::kPull,  ipc::kRelease,  ipc::kRead,    ipc::kDelete, ipc::kStat,
                         ipc::kList,  ipc::kVersions, ipc::kFlushAll};
  std::mt19937_64 rng(7);
  for (int32_t op : ops) {
    std::vector<std::vector<uint8_t>> bodies = {{}, {1}, {2, 0}, Pattern(50, op)};
    for (auto& b : bodies) {
      c.SendRaw(op, b);
      ASSERT_TRUE(s->Pump());
      ASSERT_TRUE(c.HasReply() || op == ipc::kCommit) << op;
      if (op == ipc::kCommit && !c.HasReply()) continue;
      ipc::EmptyMsg m;
      Status st = c.Take(&m);
      EXPECT_EQ(st.code(), Code::kProtocol) << "op " << op << ": " << st.ToString();
    }
  }
  c.SendRaw(999, std::vector<uint8_t>{1, 0});
  EXPECT_EQ(c.WaitStatus().code(), Code::kProtocol);
  // Valid header then junk fields for every op: never a crash, always some reply (but commit).
  for (int i = 0; i < 2000; i++) {
    int32_t op = ops[rng() % std::size(ops)];
    std::vector<uint8_t> b = Pattern(rng() % 64, i);
    if (b.size() >= 2) b[0] = 1, b[1] = 0;
    c.SendRaw(op, b);
    s->Pump();
    while (c.HasReply()) {
      ipc::EmptyMsg m;
      (void)c.Take(&m);
    }
  }
  // Invalid names.
  for (std::string bad : {std::string(""), std::string(".hidden"), std::string("-x"),
                          std::string("a/b"), std::string(129, 'a'), std::string("sp ace")}) {
    EXPECT_EQ(c.Open(bad, 100, kCreate).code(), Code::kBadName) << bad;
    EXPECT_EQ(c.Pull(bad).code(), Code::kBadName) << bad;
    EXPECT_EQ(c.Delete(bad).code(), Code::kBadName) << bad;
  }
  EXPECT_TRUE(s->engine(1).SegmentNames().empty());
}

TEST(EngineTest, LimitsAndPermissions) {
  SimOptions o;
  o.max_segment_bytes = 1 << 20;
  auto s = Cluster(3, o);
  Client root(*s, 1, 11, 0, 0);
  EXPECT_EQ(root.Open("big", (1 << 20) + 1, kCreate).code(), Code::kTooLarge);
  EXPECT_TRUE(s->engine(2).SegmentNames().empty());
  ASSERT_TRUE(root.Open("priv", 4096, kCreate, {.mode = 0600}).ok());
  ASSERT_TRUE(root.Commit({{0, Pattern(4096, 1)}}, true).ok());
  ASSERT_TRUE(root.Close().ok());
  Client user(*s, 1, 12, 1000, 1000);
  EXPECT_EQ(user.Open("priv", 0, 0).code(), Code::kPermission);
  EXPECT_EQ(user.Delete("priv").code(), Code::kPermission);
  Client user2(*s, 2, 21, 1000, 1000);
  EXPECT_EQ(user2.Pull("priv").code(), Code::kPermission);
  EXPECT_EQ(user2.Delete("priv").code(), Code::kPermission);
  ipc::ReadResp rr;
  EXPECT_EQ(user2.Read("priv", 0, 10, &rr).code(), Code::kPermission);
  for (uint32_t id = 1; id <= 3; id++) EXPECT_EQ(s->engine(id).Meta("priv")->owner_nodeid, 1u);
  // Root may.
  Client root2(*s, 2, 22, 0, 0);
  EXPECT_TRUE(root2.Read("priv", 0, 10, &rr).ok());
  EXPECT_TRUE(root2.Delete("priv").ok());
}

// A replica whose store fails acknowledges kFailed and gets the version again, whether it writes
// it whole after the last chunk (small segments) or while it arrives (streamed).
void ReplicaStoreFailureGetsFullResend(uint64_t stream_min_bytes, StoreOp::Kind failing) {
  SimOptions o;
  o.stream_store_min_bytes = stream_min_bytes;
  auto s = Cluster(3, o);
  s->capture = true;
  Client c = Create(*s, 1, 11, "sf", 30000, {.replicas = 1});
  uint32_t t = s->engine(1).ReplicaTargets("sf").at(0);
  s->node(t).store.fault = {1, Code::kIo, failing};
  std::vector<uint8_t> model(30000, 0);
  std::vector<Piece> p = {{0, Pattern(30000, 3)}};
  ASSERT_TRUE(c.Commit(p, false).ok());
  ApplyPieces(model, p);
  Version v = *s->engine(1).LocalVersion("sf");
  EXPECT_EQ(s->node(t).store.failed_ops, 1u);
  // ACKs from t: first Failed, then Stored.
  std::vector<uint32_t> acks;
  for (auto& m : s->captured) {
    for (std::span<const uint8_t> inner : Unbundle(m)) {
      Decoded d;
      if (!Decode(inner, &d).ok() || d.type != MsgType::kAck) continue;
      auto& a = std::get<AckMsg>(d.control);
      if (a.name == "sf" && a.version == v) acks.push_back(a.status);
    }
  }
  ASSERT_EQ(acks.size(), 2u);
  EXPECT_EQ(acks[0], uint32_t(AckStatus::kFailed));
  EXPECT_EQ(acks[1], uint32_t(AckStatus::kStored));
  EXPECT_EQ(s->engine(1).counters().full_transfers_sent, 2u);
  ExpectReplicated(*s, "sf", model, v, 1);
  EXPECT_TRUE(s->node(t).store.violations.empty()) << s->node(t).store.violations.front();
  EXPECT_TRUE(s->node(t).store.streams.empty());  // nothing left open
}
TEST(EngineTest, ReplicaStoreFailureGetsFullResend) {
  ReplicaStoreFailureGetsFullResend(1u << 20, StoreOp::kPutFull);
}
TEST(EngineTest, ReplicaStreamAppendFailureGetsFullResend) {
  ReplicaStoreFailureGetsFullResend(16 * 1024, StoreOp::kStreamAppend);
}
TEST(EngineTest, ReplicaStreamFinishFailureGetsFullResend) {
  ReplicaStoreFailureGetsFullResend(16 * 1024, StoreOp::kStreamFinish);
}

// A large full copy is written by the replica while it arrives: Begin at chunk 0, one Append per
// chunk in offset order covering the segment, Finish before the ACK; small ones are written whole.
TEST(EngineTest, LargeFullCopyIsStreamedToTheReplicaStore) {
  SimOptions o;
  o.stream_store_min_bytes = 16 * 1024;
  auto s = Cluster(3, o);
  Client big = Create(*s, 1, 11, "big", 40000, {.replicas = 2});
  Client small = Create(*s, 1, 12, "small", 8000, {.replicas = 2});
  std::vector<uint8_t> model(40000, 0), small_model(8000, 0);
  for (uint32_t id = 1; id <= 3; id++) s->node(id).store.log.clear();
  std::vector<Piece> p = {{0, Pattern(40000, 7)}};
  ASSERT_TRUE(big.Commit(p, true).ok());
  ApplyPieces(model, p);
  std::vector<Piece> q = {{0, Pattern(8000, 8)}};
  ASSERT_TRUE(small.Commit(q, true).ok());
  ApplyPieces(small_model, q);
  ExpectReplicated(*s, "big", model, *s->engine(1).LocalVersion("big"), 2);
  ExpectReplicated(*s, "small", small_model, *s->engine(1).LocalVersion("small"), 2);
  for (uint32_t t : s->engine(1).ReplicaTargets("big")) {
    const auto& log = s->node(t).store.log;
    auto count = [&](StoreOp::Kind k) { return std::count(log.begin(), log.end(), k); };
    EXPECT_EQ(count(StoreOp::kStreamBegin), 1);
    EXPECT_GE(count(StoreOp::kStreamAppend), 40000 / 4096);  // ~one per chunk
    EXPECT_EQ(count(StoreOp::kStreamFinish), 1);
    EXPECT_EQ(count(StoreOp::kStreamAbort), 0);
    EXPECT_EQ(count(StoreOp::kPutFull), 1);  // the small segment, written whole
    EXPECT_TRUE(s->node(t).store.violations.empty());
  }
}

// A replica whose sender leaves mid-transfer aborts the stream it opened; the new owner's copy
// is stored later as usual.
TEST(EngineTest, StreamOfADepartedSenderIsAborted) {
  SimOptions o;
  o.stream_store_min_bytes = 16 * 1024;
  o.send_budget = 8 * 1024;  // a few chunks per pump, so the transfer is in flight for a while
  auto s = Cluster(3, o);
  Client c = Create(*s, 1, 11, "gone", 200000, {.replicas = 2});
  std::vector<Piece> p = {{0, Pattern(200000, 9)}};
  c.SendCommit(p, 0);  // async, and the sim is stepped by hand below
  // Deliver only part of the transfer, then node 1 dies.
  size_t open = 0;
  for (int i = 0; i < 40 && open == 0; i++) {
    s->Step();
    open = s->node(2).store.streams.size() + s->node(3).store.streams.size();
  }
  ASSERT_GT(open, 0u) << "no replica had begun writing the transfer";
  s->Crash(1);
  ASSERT_TRUE(s->Pump());
  for (uint32_t id = 2; id <= 3; id++) {
    EXPECT_TRUE(s->node(id).store.streams.empty()) << "node " << id;
    EXPECT_TRUE(s->node(id).store.violations.empty());
  }
}

TEST(EngineTest, ReplicaStoreNoSpaceIsNotAcknowledgedAsStored) {
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "ns", 30000, {.replicas = 1});
  uint32_t t = s->engine(1).ReplicaTargets("ns").at(0);
  ASSERT_TRUE(c.Commit({{0, Pattern(30000, 3)}}, true).ok());
  // Next delta fails twice on the replica (no space), then succeeds.
  s->node(t).store.fault = {2, Code::kNoSpace, std::nullopt};
  std::vector<uint8_t> model = Pattern(30000, 3);
  std::vector<Piece> p = {{5, Pattern(10, 4)}};
  Version v;
  ASSERT_TRUE(c.Commit(p, true, &v).ok());
  ApplyPieces(model, p);
  ExpectReplicated(*s, "ns", model, v, 1);
  EXPECT_EQ(s->node(t).acks_without_persist, 0u);
}

TEST(EngineTest, SyncCommitNeedsEnoughEligibleNodes) {
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "r3", 4096, {.replicas = 3});
  Status st = c.Commit({{0, Pattern(10, 1)}}, true);
  EXPECT_EQ(st.code(), Code::kNotEnoughReplicas) << st.ToString();
  // Ineligible nodes do not count.
  SimOptions o;
  o.nodes = 3;
  Sim s2(o);
  s2.configure = [](EngineConfig& c) { c.eligible = c.self_nodeid == 1; };
  s2.StartAll();
  ASSERT_TRUE(s2.Pump());
  Client c2(s2, 1, 11);
  ASSERT_TRUE(c2.Open("r1", 4096, kCreate, {.replicas = 1}).ok());
  EXPECT_EQ(c2.Commit({{0, Pattern(10, 1)}}, true).code(), Code::kNotEnoughReplicas);
  EXPECT_TRUE(s2.engine(1).ReplicaTargets("r1").empty());
}

TEST(EngineTest, SyncCommitTimesOut) {
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "to", 4096, {.replicas = 1});
  uint32_t t = s->engine(1).ReplicaTargets("to").at(0);
  s->node(t).store.stall = true;
  c.SendCommit({{0, Pattern(100, 1)}}, ipc::kCommitSync, 5000);
  ASSERT_TRUE(s->Pump());
  EXPECT_FALSE(c.HasReply());
  s->Tick(4000);
  ASSERT_TRUE(s->Pump());
  EXPECT_FALSE(c.HasReply());
  s->Tick(1500);
  ASSERT_TRUE(s->Pump());
  ipc::CommitResp r;
  EXPECT_EQ(c.Take(&r).code(), Code::kTimeout);
  // The disk recovers: the ack arrives and the version is replicated after all.
  s->Unstall(t);
  ASSERT_TRUE(s->Pump());
  std::vector<uint8_t> model(4096, 0);
  ApplyPieces(model, {{0, Pattern(100, 1)}});
  ExpectReplicated(*s, "to", model, *s->engine(1).LocalVersion("to"), 1);
}

// Flow control: while a target has not acknowledged a version, newer commits wait (and coalesce)
// for up to 10 s (kAckWaitMs) from that transfer; then the owner stops waiting and sends the
// latest.  Idle ticks afterwards send nothing.
TEST(EngineTest, UnacknowledgedTargetIsWaitedForOnlyUntilTheAckWaitEnds) {
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "aw", 4096, {.replicas = 1});
  uint32_t t = s->engine(1).ReplicaTargets("aw").at(0);
  s->node(t).store.stall = true;  // t receives but never acknowledges
  c.SendCommit({{0, Pattern(100, 1)}}, 0, 0);
  ASSERT_TRUE(s->Pump());
  auto transfers = [&] {
    const EngineCounters& k = s->engine(1).counters();
    return k.full_transfers_sent + k.delta_transfers_sent;
  };
  const uint64_t first = transfers();
  c.SendCommit({{200, Pattern(100, 2)}}, 0, 0);
  ASSERT_TRUE(s->Pump());
  s->Tick(9000);
  ASSERT_TRUE(s->Pump());
  EXPECT_EQ(transfers(), first) << "sent while the target had not acknowledged";
  s->Tick(1500);  // past kAckWaitMs
  ASSERT_TRUE(s->Pump());
  EXPECT_EQ(transfers(), first + 1);
  s->Unstall(t);
  ASSERT_TRUE(s->Pump());
  std::vector<uint8_t> model(4096, 0);
  ApplyPieces(model, {{0, Pattern(100, 1)}, {200, Pattern(100, 2)}});
  ExpectReplicated(*s, "aw", model, *s->engine(1).LocalVersion("aw"), 1);
  const uint64_t settled = transfers();
  for (int i = 0; i < 5; i++) {
    s->Tick(11000);
    ASSERT_TRUE(s->Pump());
  }
  EXPECT_EQ(transfers(), settled);
}

// ckpt_flush_all: one request, one answer once every segment the connection has open has R
// copies of its latest version.
TEST(EngineTest, FlushAllWaitsForEverySegmentOfTheConnection) {
  auto s = Cluster(3);
  std::vector<Client> cs;
  for (int i = 0; i < 3; i++)
    cs.push_back(Create(*s, 1, 11, "fa" + std::to_string(i), 4096, {.replicas = 1}));
  Client other = Create(*s, 1, 12, "fa-other", 4096, {.replicas = 1});  // another connection
  uint32_t slow = s->engine(1).ReplicaTargets("fa1").at(0);
  s->node(slow).store.stall = true;
  for (size_t i = 0; i < cs.size(); i++)
    ASSERT_TRUE(cs[i].Commit({{0, Pattern(1000, uint8_t(i + 1))}}, false).ok());
  cs[0].SendRaw(ipc::kFlushAll, ipc::EncodeRequest(ipc::FlushAllReq{0}));
  ASSERT_TRUE(s->Pump());
  EXPECT_FALSE(cs[0].HasReply());  // fa1's replica has not stored it yet
  s->Unstall(slow);
  ASSERT_TRUE(s->Pump());
  EXPECT_TRUE(cs[0].WaitStatus().ok());
  EXPECT_EQ(cs[0].last_op, ipc::kFlushAll);
  EXPECT_FALSE(cs[0].HasReply());  // exactly one answer
  for (size_t i = 0; i < cs.size(); i++) {
    std::vector<uint8_t> model(4096, 0);
    ApplyPieces(model, {{0, Pattern(1000, uint8_t(i + 1))}});
    std::string name = "fa" + std::to_string(i);
    ExpectReplicated(*s, name, model, *s->engine(1).LocalVersion(name), 1);
  }
  EXPECT_FALSE(other.HasReply());
}

TEST(EngineTest, FlushAllWithNothingOpenOrNothingCommittedAnswersAtOnce) {
  auto s = Cluster(3);
  Client none(*s, 1, 11);
  none.SendRaw(ipc::kFlushAll, ipc::EncodeRequest(ipc::FlushAllReq{0}));
  EXPECT_TRUE(none.WaitStatus().ok());
  Client fresh = Create(*s, 1, 12, "fa-fresh", 4096, {.replicas = 2});
  fresh.SendRaw(ipc::kFlushAll, ipc::EncodeRequest(ipc::FlushAllReq{0}));
  EXPECT_TRUE(fresh.WaitStatus().ok());
}

TEST(EngineTest, FlushAllTimesOutOnceNamingALateSegment) {
  auto s = Cluster(3);
  Client a = Create(*s, 1, 11, "ft-a", 4096, {.replicas = 1});
  Client b = Create(*s, 1, 11, "ft-b", 4096, {.replicas = 1});
  s->node(2).store.stall = true;  // both segments' replicas stay unacknowledged
  s->node(3).store.stall = true;
  ASSERT_TRUE(a.Commit({{0, Pattern(100, 1)}}, false).ok());
  ASSERT_TRUE(b.Commit({{0, Pattern(100, 2)}}, false).ok());
  a.SendRaw(ipc::kFlushAll, ipc::EncodeRequest(ipc::FlushAllReq{2000}));
  ASSERT_TRUE(s->Pump());
  EXPECT_FALSE(a.HasReply());
  s->Tick(1500);
  ASSERT_TRUE(s->Pump());
  EXPECT_FALSE(a.HasReply());
  s->Tick(1000);
  ASSERT_TRUE(s->Pump());
  ipc::EmptyMsg m;
  Status st = a.Take(&m);
  EXPECT_EQ(st.code(), Code::kTimeout);
  EXPECT_NE(st.ToString().find("of 'ft-"), std::string::npos) << st.ToString();
  EXPECT_FALSE(a.HasReply());  // one answer for the group, though both members timed out
  s->Unstall(2);
  s->Unstall(3);
  ASSERT_TRUE(s->Pump());
  EXPECT_FALSE(a.HasReply());
}

TEST(EngineTest, FlushAllFailsWhenASegmentIsFencedOrLacksEligibleNodes) {
  auto s = Cluster(3);
  Client a = Create(*s, 1, 11, "ff-a", 4096, {.replicas = 1});
  Client b = Create(*s, 1, 11, "ff-b", 4096, {.replicas = 1});
  ASSERT_TRUE(a.Commit({{0, Pattern(100, 1)}}, true).ok());
  ASSERT_TRUE(b.Commit({{0, Pattern(100, 2)}}, true).ok());
  Client d(*s, 2, 21);
  ASSERT_TRUE(d.Delete("ff-b").ok());  // fences n1's writer of ff-b
  a.SendRaw(ipc::kFlushAll, ipc::EncodeRequest(ipc::FlushAllReq{0}));
  EXPECT_EQ(a.WaitStatus().code(), Code::kFenced);

  auto s2 = Cluster(2);
  Client c = Create(*s2, 1, 11, "ff-r", 4096, {.replicas = 1});
  ASSERT_TRUE(c.Commit({{0, Pattern(100, 1)}}, true).ok());
  s2->Crash(2);
  ASSERT_TRUE(s2->Pump());
  c.SendRaw(ipc::kFlushAll, ipc::EncodeRequest(ipc::FlushAllReq{0}));
  EXPECT_EQ(c.WaitStatus().code(), Code::kNotEnoughReplicas);
}

TEST(EngineTest, FlushAllOfAVanishedClientAnswersNobody) {
  auto s = Cluster(3);
  Client a = Create(*s, 1, 11, "fg-a", 4096, {.replicas = 1});
  uint32_t t = s->engine(1).ReplicaTargets("fg-a").at(0);
  s->node(t).store.stall = true;
  ASSERT_TRUE(a.Commit({{0, Pattern(100, 1)}}, false).ok());
  a.SendRaw(ipc::kFlushAll, ipc::EncodeRequest(ipc::FlushAllReq{0}));
  ASSERT_TRUE(s->Pump());
  s->engine(1).OnClientGone(11);
  s->Unstall(t);
  ASSERT_TRUE(s->Pump());
  EXPECT_FALSE(a.HasReply());
  // A new connection with the same handle space works normally afterwards.
  Client b = Create(*s, 1, 12, "fg-b", 4096, {.replicas = 1});
  ASSERT_TRUE(b.Commit({{0, Pattern(100, 2)}}, false).ok());
  b.SendRaw(ipc::kFlushAll, ipc::EncodeRequest(ipc::FlushAllReq{0}));
  EXPECT_TRUE(b.WaitStatus().ok());
}

TEST(EngineTest, DeleteRemovesEverywhere) {
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "del", 4096, {.replicas = 2});
  ASSERT_TRUE(c.Commit({{0, Pattern(4096, 1)}}, true).ok());
  // BUSY: a process on the deleting node has it open for writing.
  Client d1(*s, 1, 12);
  EXPECT_EQ(d1.Delete("del").code(), Code::kBusy);
  EXPECT_TRUE(s->engine(2).Meta("del"));
  // From another node the delete goes through and fences n1's writer.
  Client d(*s, 2, 21);
  Status st = d.Delete("del");
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_FALSE(c.Commit({{0, Pattern(10, 1)}}, true).ok());
  for (uint32_t id = 1; id <= 3; id++) {
    EXPECT_TRUE(s->engine(id).SegmentNames().empty()) << id;
    EXPECT_FALSE(s->engine(id).Meta("del")) << id;
    EXPECT_FALSE(s->engine(id).LocalImage("del")) << id;
    EXPECT_EQ(s->node(id).store.segs.count("del"), 0u) << id;
    EXPECT_EQ(s->node(id).store.local.count("del"), 0u) << id;
  }
  EXPECT_EQ(d.Delete("del").code(), Code::kNotFound);
  EXPECT_EQ(d.Pull("del").code(), Code::kNoCheckpoint);
  // Re-create with the same name: fresh zeros.
  Client c2 = Create(*s, 3, 31, "del", 8192, {.replicas = 1});
  Version v;
  ASSERT_TRUE(c2.Commit({{0, Pattern(1, 1)}}, true, &v).ok());
  std::vector<uint8_t> model(8192, 0);
  ApplyPieces(model, {{0, Pattern(1, 1)}});
  ExpectReplicated(*s, "del", model, v, 1);
}

TEST(EngineTest, ReleaseThenPullElsewhere) {
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "rel", 12000, {.replicas = 1});
  std::vector<uint8_t> model = Pattern(12000, 5);
  Version v;
  ASSERT_TRUE(c.Commit({{0, model}}, true, &v).ok());
  EXPECT_EQ(c.Release("rel").code(), Code::kBusy);
  ASSERT_TRUE(c.Close().ok());
  ASSERT_TRUE(c.Release("rel").ok());
  for (uint32_t id = 1; id <= 3; id++) EXPECT_EQ(s->engine(id).Meta("rel")->owner_nodeid, 0u);
  uint32_t other = 2;
  Client p(*s, other, 21);
  Version got;
  ASSERT_TRUE(p.Pull("rel", &got).ok());
  EXPECT_EQ(got, (Version{s->engine(other).Meta("rel")->epoch, v.seq}));
  EXPECT_GT(got.epoch, v.epoch);
  EXPECT_TRUE(ImageOf(*s, other, "rel") == model);
  for (uint32_t id = 1; id <= 3; id++) EXPECT_EQ(s->engine(id).Meta("rel")->owner_nodeid, other);
  ExpectReplicated(*s, "rel", model, got, 1);
}

TEST(EngineTest, KeptVersionsAreReadable) {
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "kv", 9000, {.replicas = 1, .versions_kept = 3});
  std::vector<std::vector<uint8_t>> models;
  std::vector<Version> versions;
  std::vector<uint8_t> model(9000, 0);
  for (int i = 0; i < 5; i++) {
    std::vector<Piece> p = {{uint64_t(i) * 1000, Pattern(1500, i)}};
    Version v;
    ASSERT_TRUE(c.Commit(p, true, &v).ok());
    ApplyPieces(model, p);
    models.push_back(model);
    versions.push_back(v);
  }
  uint32_t t = s->engine(1).ReplicaTargets("kv").at(0);
  uint32_t third = 6 - 1 - t;
  for (uint32_t reader : {1u, t, third}) {
    Client r(*s, reader, 50 + reader);
    for (int i = 0; i < 5; i++) {
      ipc::ReadResp resp;
      Status st = r.Read("kv", 0, 9000, &resp, versions[i]);
      if (i < 2) {
        EXPECT_EQ(st.code(), Code::kNotFound) << "pruned version " << i << " on " << reader;
        continue;
      }
      ASSERT_TRUE(st.ok()) << st.ToString() << " version " << i << " on " << reader;
      EXPECT_EQ(resp.version, versions[i]);
      EXPECT_EQ(resp.segment_size, 9000u);
      EXPECT_TRUE(resp.data == models[i]) << "version " << i << " on node " << reader;
    }
    ipc::ReadResp latest;
    ASSERT_TRUE(r.Read("kv", 100, 200, &latest).ok());
    EXPECT_EQ(latest.version, versions[4]);
    EXPECT_TRUE(std::equal(latest.data.begin(), latest.data.end(), models[4].begin() + 100));
  }
  // The stores keep exactly three versions.
  for (uint32_t h : {1u, t}) EXPECT_EQ(s->node(h).store.segs["kv"].versions.size(), 3u) << h;
}

TEST(EngineTest, DisconnectAndReconnect) {
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "dc", 16384, {.replicas = 2});
  std::vector<uint8_t> model(16384, 0);
  Version v;
  ASSERT_TRUE(c.Commit({{0, Pattern(16384, 1)}}, true, &v).ok());
  ApplyPieces(model, {{0, Pattern(16384, 1)}});
  s->Disconnect(3);
  ASSERT_TRUE(s->Pump());
  Client p(*s, 3, 31);
  EXPECT_EQ(p.Pull("dc").code(), Code::kUnavailable);
  ASSERT_TRUE(c.Commit({{0, Pattern(10, 2)}}, false).ok());
  ApplyPieces(model, {{0, Pattern(10, 2)}});
  s->Reconnect(3);
  ASSERT_TRUE(s->Pump());
  ExpectReplicated(*s, "dc", model, *s->engine(1).LocalVersion("dc"), 2);
}

}  // namespace
}  // namespace ckpt::repl::sim

// ---- compression ------------------------------------------------------------------------------

namespace ckpt::repl::sim {
namespace {

// A DATA message carrying `block` as its pieces block with the given encoding fields.
std::vector<uint8_t> DataWithBlock(uint8_t encoding, uint32_t raw_len, uint32_t n_pieces,
                                   const std::vector<uint8_t>& block) {
  DataHeader h;
  h.name = "z";
  h.size = 1 << 20;
  h.n_pieces = n_pieces;
  h.encoding = encoding;
  h.raw_len = raw_len;
  std::vector<uint8_t> out(kWireHeaderBytes);
  ipc::FieldWriter fw{Writer(&out)};
  fw(h);
  fw.w.bytes(block.data(), block.size());
  std::vector<uint8_t> msg = Encode(NodeInfoMsg{});  // borrow a valid wire header, then retype
  std::copy(msg.begin(), msg.begin() + kWireHeaderBytes, out.begin());
  out[6] = static_cast<uint8_t>(MsgType::kData);
  out[7] = 0;
  return Reseal(std::move(out));
}

TEST(WireTest, CompressedDataRoundTripsAndIncompressibleStaysRaw) {
  DataHeader h;
  h.name = "z";
  h.size = 1 << 20;
  std::vector<uint8_t> text(200000);
  for (size_t i = 0; i < text.size(); i++) text[i] = "checkpoint state "[i % 17];
  std::vector<uint8_t> noise = Pattern(200000, 7);
  std::vector<DataPiece> pieces = {{0, text}, {300000, noise}};
  std::vector<uint8_t> raw = EncodeData(h, pieces, false);
  std::vector<uint8_t> packed = EncodeData(h, pieces, true);
  EXPECT_LT(packed.size(), raw.size() * 3 / 4) << "the text half compresses";
  Decoded d;
  ASSERT_TRUE(Decode(packed, &d).ok());
  EXPECT_EQ(d.data.encoding, uint8_t(DataEncoding::kZstd));
  ASSERT_EQ(d.pieces.size(), 2u);
  EXPECT_EQ(d.pieces[0].offset, 0u);
  EXPECT_TRUE(
      std::equal(d.pieces[0].bytes.begin(), d.pieces[0].bytes.end(), text.begin(), text.end()));
  EXPECT_EQ(d.pieces[1].offset, 300000u);
  EXPECT_TRUE(
      std::equal(d.pieces[1].bytes.begin(), d.pieces[1].bytes.end(), noise.begin(), noise.end()));
  // Random bytes do not shrink: sent raw, the same bytes as without compression.
  std::vector<DataPiece> only_noise = {{0, noise}};
  std::vector<uint8_t> n1 = EncodeData(h, only_noise, true);
  EXPECT_EQ(n1, EncodeData(h, only_noise, false));
  ASSERT_TRUE(Decode(n1, &d).ok());
  EXPECT_EQ(d.data.encoding, uint8_t(DataEncoding::kRaw));
}

TEST(WireTest, MalformedCompressedDataIsRejected) {
  DataHeader h;
  h.name = "z";
  h.size = 1 << 20;
  std::vector<uint8_t> zeros(100000, 0);
  std::vector<DataPiece> pieces = {{0, zeros}};
  std::vector<uint8_t> good = EncodeData(h, pieces, true);
  Decoded d;
  ASSERT_TRUE(Decode(good, &d).ok());
  const uint32_t raw_len = d.data.raw_len;
  ASSERT_EQ(raw_len, 12u + 100000u);
  std::vector<uint8_t> frame;
  // Re-extract the frame: everything after the header fields of the good message.
  {
    Reader r(std::span<const uint8_t>(good).subspan(kWireHeaderBytes));
    ipc::FieldReader fr{r};
    DataHeader tmp;
    fr(tmp);
    frame.assign(good.end() - static_cast<long>(fr.r.remaining()), good.end());
  }
  ASSERT_TRUE(Decode(DataWithBlock(1, raw_len, 1, frame), &d).ok())
      << "the rebuilt message is valid";
  std::vector<uint8_t> garbage = Pattern(frame.size(), 3);
  EXPECT_FALSE(Decode(DataWithBlock(1, raw_len, 1, garbage), &d).ok()) << "not a zstd frame";
  EXPECT_FALSE(Decode(DataWithBlock(1, raw_len + 1, 1, frame), &d).ok()) << "declared length lies";
  EXPECT_FALSE(Decode(DataWithBlock(1, kMaxDataRaw + 1, 1, frame), &d).ok()) << "over the cap";
  EXPECT_FALSE(Decode(DataWithBlock(1, 0, 1, frame), &d).ok());
  EXPECT_FALSE(Decode(DataWithBlock(7, 0, 1, frame), &d).ok()) << "unknown encoding";
  std::vector<uint8_t> cut(frame.begin(), frame.end() - 4);
  EXPECT_FALSE(Decode(DataWithBlock(1, raw_len, 1, cut), &d).ok()) << "truncated frame";
  EXPECT_FALSE(Decode(DataWithBlock(1, raw_len, 2, frame), &d).ok()) << "pieces do not match";
}

// ---- BUNDLE
// --------------------------------------------------------------------------------------

std::vector<uint8_t> Msg(size_t body_bytes, uint8_t fill) {
  NodeInfoMsg m;
  m.name.assign(body_bytes, char('a' + fill % 26));
  return Encode(m);
}

TEST(WireTest, BundlesKeepOrderAndFitTheCpgLimit) {
  std::vector<std::vector<uint8_t>> msgs;
  // Small ones, one that fills most of a message, more small ones, one alone between big ones.
  for (int i = 0; i < 30; i++) msgs.push_back(Msg(100 + 37 * i, uint8_t(i)));
  msgs.push_back(Msg(60000, 1));
  std::vector<uint8_t> big(kMaxWireMessageBytes - 100);  // a DATA-sized message, never bundled
  big[0] = 1;
  msgs.push_back(big);
  msgs.push_back(Msg(50, 2));
  msgs.push_back(big);
  for (int i = 0; i < 40; i++) msgs.push_back(Msg(30000, uint8_t(i)));  // > 1 bundle's worth
  auto packed = PackBundles(msgs);
  EXPECT_LT(packed.size(), 10u);
  std::vector<std::vector<uint8_t>> flat;
  size_t bundles = 0;
  for (auto& m : packed) {
    EXPECT_LE(m.size(), kMaxWireMessageBytes);
    Decoded d;
    if (Decode(m, &d).ok() && d.type == MsgType::kBundle) {
      bundles++;
      EXPECT_GE(d.bundle.size(), 2u);
    }
    for (auto inner : Unbundle(m)) flat.emplace_back(inner.begin(), inner.end());
  }
  EXPECT_GE(bundles, 3u);
  EXPECT_EQ(flat, msgs) << "the same messages in the same order";
  // A lone message is never wrapped.
  auto one = PackBundles({Msg(10, 1)});
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0], Msg(10, 1));
}

std::vector<uint8_t> RawBundle(const std::vector<std::vector<uint8_t>>& inner, uint32_t count,
                               size_t trailing = 0) {
  std::vector<uint8_t> out(kWireHeaderBytes);
  Writer w(&out);
  w.u32(count);
  for (auto& m : inner) {
    w.u32(static_cast<uint32_t>(m.size()));
    w.bytes(m.data(), m.size());
  }
  for (size_t i = 0; i < trailing; i++) w.u8(0);
  std::vector<uint8_t> hdr = Encode(NodeInfoMsg{});
  std::copy(hdr.begin(), hdr.begin() + kWireHeaderBytes, out.begin());
  out[6] = static_cast<uint8_t>(MsgType::kBundle);
  out[7] = 0;
  return Reseal(std::move(out));
}

TEST(EngineTest, BadBundlesAreDroppedAndGoodInnerMessagesApplied) {
  auto s = Cluster(3);
  Client c = Create(*s, 1, 11, "b", 5000, {.replicas = 2});
  ASSERT_TRUE(c.Commit({{0, Pattern(5000, 1)}}, true).ok());
  Snapshot before = Take(*s, {"b"});
  const uint64_t d0 = s->engine(3).counters().messages_dropped;
  std::vector<uint8_t> good = Msg(8, 3);
  std::vector<uint8_t> broken = good;
  broken[kWireHeaderBytes] ^= 0x55;  // checksum no longer matches
  auto valid = PackBundles({good, good});
  ASSERT_EQ(valid.size(), 1u);
  std::vector<std::vector<uint8_t>> bad = {
      RawBundle({good}, 1),        // a bundle of one
      RawBundle({good, good}, 3),  // count larger than what follows
      RawBundle({good, good}, 2, /*trailing=*/3),
      RawBundle({good, std::vector<uint8_t>(10)}, 2),  // inner shorter than a header
      RawBundle({good, valid[0]}, 2),                  // nested
      RawBundle({good, good}, 0xffffffffu),
  };
  for (auto& b : bad) s->engine(3).OnDeliver(2, s->node(2).pid, b);
  EXPECT_EQ(s->engine(3).counters().messages_dropped, d0 + bad.size());
  // A sealed bundle with one malformed inner message (its own checksum is not re-verified: the
  // bundle's covers its bytes, but its framing is): that one is dropped, the others apply.
  std::vector<uint8_t> malformed = good;
  malformed[4] ^= 0x7f;  // wire version
  s->engine(3).OnDeliver(2, s->node(2).pid, RawBundle({good, malformed, good}, 3));
  EXPECT_EQ(s->engine(3).counters().messages_dropped, d0 + bad.size() + 1);
  // Any byte of a bundle changed after sealing, an inner message's included: the whole bundle
  // fails its checksum and is dropped.
  std::vector<uint8_t> sealed = RawBundle({good, broken, good}, 3);
  Decoded sealed_ok;
  ASSERT_TRUE(Decode(sealed, &sealed_ok).ok());
  for (size_t at : {size_t{0}, kWireHeaderBytes, sealed.size() / 2, sealed.size() - 1}) {
    std::vector<uint8_t> flipped = sealed;
    flipped[at] ^= 0x01;
    s->engine(3).OnDeliver(2, s->node(2).pid, flipped);
  }
  EXPECT_EQ(s->engine(3).counters().messages_dropped, d0 + bad.size() + 1 + 4);
  ASSERT_TRUE(s->Pump());
  EXPECT_TRUE(Take(*s, {"b"}) == before);
}

// Many small segments committed together: their DATA and the replicas' ACKs travel in a few
// bundles, not one CPG message each, and every copy is still stored and acknowledged.
TEST(EngineTest, SmallSegmentsTravelInBundles) {
  auto s = Cluster(3);
  constexpr int kSegs = 40;
  std::vector<Client> writers;
  std::vector<std::vector<uint8_t>> models;
  for (int i = 0; i < kSegs; i++) {
    writers.push_back(Create(*s, 1, 100 + i, "small-" + std::to_string(i), 1000, {.replicas = 2}));
    models.emplace_back(1000, 0);
  }
  s->capture = true;
  for (int i = 0; i < kSegs; i++) {
    std::vector<Piece> p = {{0, Pattern(1000, uint8_t(i))}};
    writers[i].SendCommit(p, 0);
    ApplyPieces(models[i], p);
  }
  ASSERT_TRUE(s->Pump());
  for (int i = 0; i < kSegs; i++) {
    const std::string name = "small-" + std::to_string(i);
    ExpectReplicated(*s, name, models[i], *s->engine(1).LocalVersion(name), 2);
  }
  size_t cpg = s->captured.size(), data = 0, acks = 0;
  for (auto& m : s->captured) {
    for (auto inner : Unbundle(m)) {
      Decoded d;
      ASSERT_TRUE(Decode(inner, &d).ok());
      data += d.type == MsgType::kData;
      acks += d.type == MsgType::kAck;
    }
  }
  EXPECT_EQ(data, size_t(kSegs));
  EXPECT_EQ(acks, size_t(2 * kSegs));
  EXPECT_LE(cpg, size_t(kSegs) / 2) << "DATA and ACKs bundled";
  for (uint32_t id = 1; id <= 3; id++) EXPECT_EQ(s->node(id).acks_without_persist, 0u);
}

TEST(EngineTest, CompressedSegmentReplicatesSmallerEverywhere) {
  auto s = Cluster(3);
  const uint64_t size = 512 * 1024;
  Client c(*s, 1, 11);
  ipc::OpenResp resp;
  ASSERT_TRUE(c.Open("zs", size, kCreate | CKPT_OPEN_COMPRESS, {.replicas = 2}, &resp).ok());
  for (uint32_t id = 1; id <= 3; id++) {
    auto m = s->engine(id).Meta("zs");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->compression, uint32_t(CKPT_COMPRESSION_ZSTD)) << "node " << id;
  }
  std::vector<uint8_t> model(size, 0);
  std::vector<uint8_t> text(size);
  for (size_t i = 0; i < size; i++) text[i] = "ab"[(i / 64) % 2];
  std::vector<Piece> all = {{0, text}};
  Version v;
  s->capture = true;
  ASSERT_TRUE(c.Commit(all, true, &v).ok());
  ApplyPieces(model, all);
  ExpectReplicated(*s, "zs", model, v, 2);
  size_t wire = 0, compressed = 0;
  for (auto& m : s->captured) {
    for (std::span<const uint8_t> inner : Unbundle(m)) {
      Decoded d;
      if (Decode(inner, &d).ok() && d.type == MsgType::kData) {
        wire += inner.size();
        compressed += d.data.encoding == uint8_t(DataEncoding::kZstd);
      }
    }
  }
  EXPECT_GT(compressed, 0u);
  EXPECT_LT(wire, size / 10) << "repetitive state travels compressed";
  // The parameter survives in the store (a restarted node still compresses).
  auto stored = s->node(2).store.Dump();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].meta.compression, uint32_t(CKPT_COMPRESSION_ZSTD));
}

}  // namespace
}  // namespace ckpt::repl::sim

// ---- the engine's clock -----------------------------------------------------------------------

namespace ckpt::repl {
namespace {

// Every deadline is the engine's clock plus a timeout, and the clock is the last tick: an input
// before the first tick would get deadlines relative to 0, which all expire at that tick (ckptd
// once answered calls made in its first 100 ms with "operation timed out").  The caller ticks
// first; anything else is a bug and stops the daemon.
TEST(EngineClockTest, InputsBeforeTheFirstTickAreABug) {
  EngineConfig c;
  c.self_nodeid = 1;
  c.node_name = "n1";
  EXPECT_DEATH(Engine(c).OnView(CpgView{}), "assertion failed");
  EXPECT_DEATH(Engine(c).OnClient(Caller{}, 0, {}), "assertion failed");
  EXPECT_DEATH(Engine(c).OnDeliver(2, 1, {}), "assertion failed");
  Engine e(c);
  e.OnTick(5000);
  EXPECT_DEATH(e.OnTick(4999), "assertion failed");  // monotonic
  e.OnView(CpgView{});                               // fine once the clock is set
}

}  // namespace
}  // namespace ckpt::repl
