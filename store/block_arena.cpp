#include "store/block_arena.hpp"

#include <sys/mman.h>

#include <bit>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "common/checksum.hpp"  // kBlockSize
#include "common/status.hpp"    // CKPT_ASSERT

namespace ckpt::block_arena {
namespace {

constexpr size_t kSlots = kChunkBytes / kBlockSize;
static_assert(kSlots == 32, "the free mask is 32 bits");
constexpr uint32_t kAllFree = 0xffffffffu;

struct Arena {
  std::mutex mu;
  std::unordered_map<uintptr_t, uint32_t> free_mask;  // chunk base -> bit i set = slot i free
  // Chunks that have free slots; Allocate() uses the last one.  May hold stale entries (chunks
  // since filled or unmapped): they are skipped and dropped when met.
  std::vector<uintptr_t> with_free;
  size_t fully_free = 0;  // chunks whose mask is kAllFree
  uint64_t free_blocks = 0;
  // Fully free chunks -> the TrimIdle() generation in which they became fully free.
  std::unordered_map<uintptr_t, uint64_t> idle_since;
  uint64_t generation = 0;
};

Arena& TheArena() {
  static Arena* arena = new Arena;  // never destroyed: blocks may be freed during exit
  return *arena;
}

uintptr_t MapChunk() {
  // Map twice the size to find a 2 MiB-aligned chunk inside, then trim the rest.
  const size_t span = 2 * kChunkBytes;
  void* p = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t raw = reinterpret_cast<uintptr_t>(p);
  const uintptr_t base = (raw + kChunkBytes - 1) & ~(uintptr_t{kChunkBytes} - 1);
  if (base > raw) munmap(p, base - raw);
  const uintptr_t end = raw + span, chunk_end = base + kChunkBytes;
  if (end > chunk_end) munmap(reinterpret_cast<void*>(chunk_end), end - chunk_end);
  madvise(reinterpret_cast<void*>(base), kChunkBytes, MADV_HUGEPAGE);  // a hint; may be refused
  return base;
}

}  // namespace

uint8_t* Allocate() {
  Arena& a = TheArena();
  std::lock_guard<std::mutex> lock(a.mu);
  while (!a.with_free.empty()) {
    auto it = a.free_mask.find(a.with_free.back());
    if (it == a.free_mask.end() || it->second == 0) {
      a.with_free.pop_back();  // stale entry
      continue;
    }
    uint32_t& mask = it->second;
    if (mask == kAllFree) {
      a.fully_free--;
      a.idle_since.erase(it->first);
    }
    const int slot = std::countr_zero(mask);
    mask &= ~(uint32_t{1} << slot);
    if (mask == 0) a.with_free.pop_back();
    a.free_blocks--;
    return reinterpret_cast<uint8_t*>(it->first + static_cast<uintptr_t>(slot) * kBlockSize);
  }
  const uintptr_t base = MapChunk();
  a.free_mask[base] = kAllFree & ~uint32_t{1};
  a.with_free.push_back(base);
  a.free_blocks += kSlots - 1;
  return reinterpret_cast<uint8_t*>(base);
}

void Free(uint8_t* block) {
  Arena& a = TheArena();
  const uintptr_t p = reinterpret_cast<uintptr_t>(block);
  const uintptr_t base = p & ~(uintptr_t{kChunkBytes} - 1);
  const uint32_t bit = uint32_t{1} << ((p - base) / kBlockSize);
  std::lock_guard<std::mutex> lock(a.mu);
  auto it = a.free_mask.find(base);
  CKPT_ASSERT(it != a.free_mask.end() && (p - base) % kBlockSize == 0);
  uint32_t& mask = it->second;
  CKPT_ASSERT((mask & bit) == 0);  // double free
  if (mask == 0) a.with_free.push_back(base);
  mask |= bit;
  a.free_blocks++;
  if (mask != kAllFree) return;
  a.fully_free++;
  a.idle_since[base] = a.generation;
}

size_t TrimIdle() {
  Arena& a = TheArena();
  std::lock_guard<std::mutex> lock(a.mu);
  size_t unmapped = 0;
  for (auto it = a.idle_since.begin();
       it != a.idle_since.end() && a.fully_free > kKeepFreeChunks;) {
    if (it->second == a.generation) {  // became free only in this interval: may be reused soon
      ++it;
      continue;
    }
    munmap(reinterpret_cast<void*>(it->first), kChunkBytes);
    a.free_mask.erase(it->first);  // its with_free entry turns stale
    a.fully_free--;
    a.free_blocks -= kSlots;
    unmapped++;
    it = a.idle_since.erase(it);
  }
  a.generation++;
  return unmapped;
}

Stats GetStats() {
  Arena& a = TheArena();
  std::lock_guard<std::mutex> lock(a.mu);
  return {a.free_mask.size(), a.free_blocks};
}

}  // namespace ckpt::block_arena
