// Helpers shared by the replication engine tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/unit/replication/sim.hpp"

namespace ckpt::repl::sim {

inline std::vector<uint8_t> ImageOf(Sim& s, uint32_t id, const std::string& name) {
  auto img = s.engine(id).LocalImage(name);
  return img ? Bytes(*img) : std::vector<uint8_t>{};
}

inline void ApplyPieces(std::vector<uint8_t>& model, const std::vector<Piece>& pieces) {
  for (auto& p : pieces) std::copy(p.bytes.begin(), p.bytes.end(), model.begin() + p.offset);
}

inline uint64_t TotalPayloadSent(Sim& s) {
  uint64_t n = 0;
  for (uint32_t id = 1; id <= s.size(); id++)
    if (s.node(id).up) n += s.engine(id).counters().payload_bytes_sent;
  return n;
}

// Every live node agrees on the catalog record and the replica set of `name`; the owner and each
// of exactly `replicas` targets (never the owner) hold version `v` byte-exact, in memory and in
// their store; every live node's catalog records `v` for each target.
inline void ExpectReplicated(Sim& s, const std::string& name, const std::vector<uint8_t>& model,
                             Version v, uint32_t replicas) {
  SCOPED_TRACE("segment " + name + " version " + v.ToString());
  auto live = s.LiveIds();
  ASSERT_FALSE(live.empty());
  auto meta = s.engine(live[0]).Meta(name);
  ASSERT_TRUE(meta.has_value());
  auto targets = s.engine(live[0]).ReplicaTargets(name);
  for (uint32_t id : live) {
    SCOPED_TRACE("node " + std::to_string(id));
    auto m = s.engine(id).Meta(name);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(*m, *meta);
    EXPECT_EQ(s.engine(id).ReplicaTargets(name), targets);
  }
  uint32_t owner = meta->owner_nodeid;
  EXPECT_EQ(targets.size(), replicas);
  EXPECT_EQ(std::count(targets.begin(), targets.end(), owner), 0);
  std::vector<uint32_t> holders = targets;
  if (owner && s.node(owner).up) holders.push_back(owner);
  for (uint32_t t : holders) {
    SCOPED_TRACE("holder " + std::to_string(t));
    EXPECT_EQ(s.engine(t).LocalVersion(name), std::optional<Version>(v));
    EXPECT_TRUE(ImageOf(s, t, name) == model) << "bytes differ";
    EXPECT_TRUE(s.node(t).store.Has(name, v)) << "version not in the store";
    auto it = s.node(t).store.segs.find(name);
    if (it != s.node(t).store.segs.end() && it->second.versions.count(v)) {
      EXPECT_TRUE(Bytes(it->second.versions.at(v)) == model) << "stored bytes differ";
    }
  }
  for (uint32_t id : live)
    for (uint32_t t : targets)
      EXPECT_EQ(s.engine(id).HolderVersion(name, t), v) << "node " << id << " target " << t;
}

}  // namespace ckpt::repl::sim
