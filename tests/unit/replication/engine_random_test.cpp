// Seeded randomized scenarios: random commits, crashes, restarts, pulls, partitions and heals with
// random (legal) interleavings; invariants are checked after the cluster quiesces.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "tests/unit/replication/test_util.hpp"

namespace ckpt::repl::sim {
namespace {

struct Scenario {
  Scenario(uint64_t seed, bool partitions) : rng(seed), with_partitions(partitions) {
    SimOptions o;
    o.nodes = 5;
    o.send_budget = 16 * 1024;
    sim = std::make_unique<Sim>(o);
    sim->SetShuffle(seed);
    sim->StartAll();
    EXPECT_TRUE(sim->Pump());
    for (int i = 0; i < 4; i++) {
      names.push_back("seg" + std::to_string(i));
      sizes.push_back(1 + rng() % 40000);
      replicas.push_back(1 + uint32_t(rng() % 2));
    }
  }

  std::mt19937_64 rng;
  bool with_partitions;
  std::unique_ptr<Sim> sim;
  std::vector<std::string> names;
  std::vector<uint64_t> sizes;
  std::vector<uint32_t> replicas;
  uint64_t next_conn = 100;
  struct Writer {
    std::unique_ptr<Client> client;
    std::vector<uint8_t> model;
  };
  std::map<std::pair<uint32_t, std::string>, Writer> writers;  // (node, segment)
  // Every version any node ever produced by a commit, with its bytes.
  std::map<std::string, std::map<Version, std::vector<uint8_t>>> history;
  std::vector<std::string> log;

  uint32_t Pick(const std::vector<uint32_t>& v) { return v[rng() % v.size()]; }
  std::vector<uint32_t> Down() {
    std::vector<uint32_t> out;
    for (uint32_t id = 1; id <= sim->size(); id++)
      if (!sim->node(id).up) out.push_back(id);
    return out;
  }

  void Record(const std::string& name, Version v, std::vector<uint8_t> bytes) {
    auto& h = history[name];
    auto it = h.find(v);
    if (it != h.end()) {
      if (it->second != bytes)
        ADD_FAILURE() << "version " << v.ToString() << " of " << name
                      << " exists with two different contents";
      return;
    }
    h[v] = std::move(bytes);
  }

  // A pull relabels the restored version into the new owner's epoch (same seq, same bytes):
  // accept `v` if it is known, or a relabel of a known version with its seq, then record it.
  bool KnownOrRelabel(const std::string& name, Version v, const std::vector<uint8_t>& bytes) {
    auto& h = history[name];
    if (auto it = h.find(v); it != h.end()) return it->second == bytes;
    for (auto& [old, content] : h)
      if (old.seq == v.seq && old.epoch < v.epoch && content == bytes) {
        h[v] = bytes;
        return true;
      }
    return false;
  }

  void Settle() {
    if (rng() % 2) {
      ASSERT_TRUE(sim->Pump()) << "no quiescence";
    } else {
      int k = int(rng() % 6);
      for (int i = 0; i < k; i++) sim->Step();
    }
  }

  void DoCommit() {
    auto live = sim->LiveIds();
    if (live.empty()) return;
    size_t si = rng() % names.size();
    const std::string& name = names[si];
    // Reuse a writer if one exists.
    Writer* w = nullptr;
    for (auto& [key, wr] : writers)
      if (key.second == name && sim->node(key.first).up) w = &wr;
    if (!w || rng() % 8 == 0) {
      uint32_t node = Pick(live);
      auto key = std::make_pair(node, name);
      if (writers.count(key)) return;
      auto c = std::make_unique<Client>(*sim, node, next_conn++);
      ipc::OpenResp resp;
      Status st = c->Open(name, sizes[si], CKPT_OPEN_CREATE | CKPT_OPEN_PULL,
                          {.replicas = replicas[si]}, &resp);
      log.push_back("open " + name + " on n" + std::to_string(node) + ": " + st.ToString());
      if (!st.ok()) return;
      auto img = sim->engine(node).LocalImage(name);
      if (!img) {
        ADD_FAILURE() << "open OK without a local image";
        return;
      }
      Writer nw{std::move(c), Bytes(*img)};
      if (resp.version.seq > 0 && !KnownOrRelabel(name, resp.version, nw.model))
        ADD_FAILURE() << "open installed unknown version or wrong bytes: "
                      << resp.version.ToString();
      writers[key] = std::move(nw);
      w = &writers[key];
    }
    uint32_t node = w->client->node();
    uint64_t size = w->model.size();
    std::vector<Piece> pieces;
    int n = 1 + int(rng() % 3);
    for (int i = 0; i < n; i++) {
      uint64_t off = rng() % size;
      uint64_t len = 1 + rng() % std::min<uint64_t>(size - off, 12000);
      pieces.push_back({off, Pattern(len, rng())});
    }
    auto before = sim->engine(node).LocalVersion(name);
    bool sync = rng() % 3 == 0;
    w->client->SendCommit(pieces, sync ? ipc::kCommitSync : 0, 0);
    auto after = sim->engine(node).LocalVersion(name);
    if (after && (!before || *after > *before)) {
      ApplyPieces(w->model, pieces);
      std::vector<uint8_t> got = ImageOf(*sim, node, name);
      if (got != w->model) ADD_FAILURE() << "commit applied wrongly on n" << node;
      Record(name, *after, got);
      log.push_back("commit " + name + " on n" + std::to_string(node) + " -> " + after->ToString());
    } else {
      log.push_back("commit " + name + " on n" + std::to_string(node) + " rejected");
      writers.erase({node, name});  // fenced or gone: the application would reopen
    }
  }

  void DoPull() {
    auto live = sim->LiveIds();
    if (live.empty()) return;
    uint32_t node = Pick(live);
    const std::string& name = names[rng() % names.size()];
    if (writers.count({node, name})) return;
    Client c(*sim, node, next_conn++);
    Version v;
    Status st = c.Pull(name, &v);
    log.push_back("pull " + name + " on n" + std::to_string(node) + ": " + st.ToString() + " " +
                  v.ToString());
    if (st.ok() && st.code() == Code::kOk) {
      if (!KnownOrRelabel(name, v, ImageOf(*sim, node, name)))
        ADD_FAILURE() << "pull returned unknown version or wrong bytes: " << v.ToString();
    }
  }

  void Crash() {
    auto live = sim->LiveIds();
    if (live.size() <= 2) return;
    uint32_t id = Pick(live);
    sim->Crash(id);
    std::erase_if(writers, [&](auto& kv) { return kv.first.first == id; });
    log.push_back("crash n" + std::to_string(id));
  }

  void Restart() {
    auto down = Down();
    if (down.empty()) return;
    uint32_t id = Pick(down);
    sim->Restart(id);
    log.push_back("restart n" + std::to_string(id));
  }

  bool partitioned = false;
  void PartitionOrHeal() {
    if (partitioned) {
      sim->HealAll();
      partitioned = false;
      log.push_back("heal");
      return;
    }
    auto live = sim->LiveIds();
    if (live.size() < 2) return;
    std::shuffle(live.begin(), live.end(), rng);
    size_t cut = 1 + rng() % (live.size() - 1);
    std::vector<uint32_t> a(live.begin(), live.begin() + cut), b(live.begin() + cut, live.end());
    sim->Partition({a, b});
    partitioned = true;
    std::string s = "partition";
    for (uint32_t x : a) s += " " + std::to_string(x);
    s += " |";
    for (uint32_t x : b) s += " " + std::to_string(x);
    log.push_back(s);
  }

  void Step() {
    int r = int(rng() % 100);
    if (r < 45)
      DoCommit();
    else if (r < 60)
      DoPull();
    else if (r < 68)
      Crash();
    else if (r < 78)
      Restart();
    else if (r < 83) {
      if (with_partitions) PartitionOrHeal();
    } else if (r < 88)
      sim->Tick(1000 + rng() % 5000);
    Settle();
  }

  void Finish() {
    sim->HealAll();
    ASSERT_TRUE(sim->Pump());
    sim->Tick(120000);
    ASSERT_TRUE(sim->Pump());
  }

  void Check() {
    auto live = sim->LiveIds();
    ASSERT_FALSE(live.empty());
    uint32_t ref = live[0];
    auto seg_names = sim->engine(ref).SegmentNames();
    for (uint32_t id : live) EXPECT_EQ(sim->engine(id).SegmentNames(), seg_names) << "node " << id;
    for (const std::string& name : seg_names) {
      SCOPED_TRACE(name);
      auto meta = sim->engine(ref).Meta(name);
      ASSERT_TRUE(meta);
      for (uint32_t id : live) {
        EXPECT_EQ(sim->engine(id).Meta(name), meta) << "catalog differs on node " << id;
        EXPECT_EQ(sim->engine(id).ReplicaTargets(name), sim->engine(ref).ReplicaTargets(name));
      }
      int owners = 0;
      for (uint32_t id : live) {
        auto m = sim->engine(id).Meta(name);
        if (m && m->owner_nodeid == id) owners++;
      }
      EXPECT_LE(owners, 1);
      // Every copy anywhere is a version that was committed, byte-exact.
      for (uint32_t id : live) {
        auto lv = sim->engine(id).LocalVersion(name);
        if (!lv || lv->seq == 0) continue;
        auto it = history[name].find(*lv);
        if (it == history[name].end()) {
          ADD_FAILURE() << "node " << id << " holds unknown version " << lv->ToString();
          continue;
        }
        EXPECT_TRUE(ImageOf(*sim, id, name) == it->second)
            << "node " << id << " version " << lv->ToString() << " bytes differ";
      }
      uint32_t owner = meta->owner_nodeid;
      if (!owner || std::find(live.begin(), live.end(), owner) == live.end()) continue;
      auto ov = sim->engine(owner).LocalVersion(name);
      if (!ov || ov->seq == 0) continue;
      std::vector<uint8_t> ob = ImageOf(*sim, owner, name);
      for (uint32_t t : sim->engine(ref).ReplicaTargets(name)) {
        EXPECT_EQ(sim->engine(t).LocalVersion(name), ov) << "target n" << t << " is behind";
        EXPECT_TRUE(ImageOf(*sim, t, name) == ob) << "target n" << t << " bytes differ";
        for (uint32_t id : live)
          EXPECT_EQ(sim->engine(id).HolderVersion(name, t), *ov)
              << "node " << id << " records target " << t;
      }
    }
    for (uint32_t id = 1; id <= sim->size(); id++) {
      EXPECT_EQ(sim->node(id).acks_without_persist, 0u) << id;
      EXPECT_EQ(sim->node(id).store.delta_without_base, 0u)
          << "node " << id << ": "
          << (sim->node(id).store.violations.empty() ? std::string()
                                                     : sim->node(id).store.violations[0]);
    }
  }
};

// CKPT_SIM_SEEDS=N runs seeds 1..N (default 20; CI keeps the default, soak runs use more).
void RunSeeds(bool partitions) {
  uint64_t last = 20;
  if (const char* env = std::getenv("CKPT_SIM_SEEDS")) last = std::strtoull(env, nullptr, 10);
  for (uint64_t seed = 1; seed <= last; seed++) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Scenario sc(seed, partitions);
    for (int i = 0; i < 200; i++) {
      sc.Step();
      if (::testing::Test::HasFatalFailure()) break;
    }
    sc.Finish();
    sc.Check();
    if (::testing::Test::HasFailure()) {
      std::string all;
      for (auto& l : sc.log) all += "  " + l + "\n";
      ADD_FAILURE() << "seed " << seed << " steps:\n" << all;
      return;
    }
  }
}

TEST(EngineRandomTest, SeededScenariosKeepInvariants) { RunSeeds(false); }

TEST(EngineRandomTest, SeededScenariosWithPartitionsKeepInvariants) { RunSeeds(true); }

}  // namespace
}  // namespace ckpt::repl::sim
