// A segment version (epoch, seq), ordered lexicographically.  epoch grows with every change of
// owner (claim) or delete and is unique per claimer: generation << 32 | claiming nodeid.  seq grows
// with every commit and never restarts across epochs.  (0,0) means "no version".
#pragma once

#include <compare>
#include <cstdint>
#include <string>

namespace ckpt {

struct Version {
  uint64_t epoch = 0;
  uint64_t seq = 0;
  auto operator<=>(const Version&) const = default;
  bool empty() const { return epoch == 0 && seq == 0; }
  uint64_t generation() const { return epoch >> 32; }
  uint32_t claimer() const { return static_cast<uint32_t>(epoch); }
  // "generation.seq", the form users see (ckptctl, logs).
  std::string ToString() const {
    return std::to_string(generation()) + "." + std::to_string(seq);
  }
};

}  // namespace ckpt
