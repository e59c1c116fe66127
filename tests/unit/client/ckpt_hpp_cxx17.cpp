// ckpt.hpp must compile as C++17 (applications may not use C++20).
#include <ckpt/ckpt.hpp>

static_assert(__cplusplus == 201703L, "this file checks C++17 compatibility");

int main() {
  ckpt::Client empty(nullptr);
  ckpt::Segment seg;
  return (!empty && !seg && ckpt::Version(1, 2) < ckpt::Version(1, 3)) ? 0 : 1;
}
