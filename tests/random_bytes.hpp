// Deterministic pseudo-random test data, shared by the unit, integration and cluster tests: the
// same (n, seed) always gives the same bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace ckpt::testing {

inline std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = static_cast<uint8_t>(rng());
  return v;
}

}  // namespace ckpt::testing
