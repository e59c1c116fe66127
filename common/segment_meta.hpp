// What every holder stores about a segment besides its bytes (persisted by store/, carried in
// catalog sync messages by replication/).
#pragma once

#include <cstdint>
#include <string>

#include "common/version.hpp"

namespace ckpt {

struct SegmentMeta {
  std::string name;
  uint64_t size = 0;
  uint32_t uid = 0, gid = 0, mode = 0600;
  uint32_t replicas = 1;       // R: replicas besides the owner
  uint32_t versions_kept = 1;  // versions each holder keeps
  uint32_t durability = 1;     // ckpt_durability (resolved: MEMORY or FSYNC)
  uint32_t compression = 0;    // ckpt_compression: how DATA messages of this segment travel
  uint64_t epoch = 0;          // ownership epoch (see Version)
  uint32_t owner_nodeid = 0;   // 0 = released / none
  bool operator==(const SegmentMeta&) const = default;
};

}  // namespace ckpt
