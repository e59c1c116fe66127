// BlockArena: memory for full-size image blocks (kBlockSize bytes), carved from 2 MiB chunks that
// the kernel may back with transparent huge pages (madvise MADV_HUGEPAGE).
//
// Why: a fresh 4 KiB page costs a page fault, and on virtual machines a fault costs ~10 us, so
// faulting in a 64 MiB image took ~200 ms (40 times its memcpy) and dominated replicas receiving
// new versions, pulls and fresh segments.  One huge-page fault covers 32 blocks.
//
// Contract: Allocate() returns kBlockSize uninitialized bytes aligned to kBlockSize (throws
// std::bad_alloc when the kernel has no memory, like operator new); Free() takes back exactly
// such a pointer.  Thread-safe: snapshots are dropped by the store worker thread too.  Chunks that
// become entirely free stay mapped for reuse (a stream of large versions frees and allocates the
// same amount per version; handing it back and faulting it in again cost ~3 ms per MiB here).
// TrimIdle() (ckptd calls it every kTrimIntervalMs) returns to the kernel the free chunks beyond
// kKeepFreeChunks that stayed free since the previous call, so idle memory goes back within two
// intervals.
// Blocks shorter than kBlockSize (the tail of an image) do not come from here: a 4 KiB segment
// must not pin 64 KiB.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ckpt::block_arena {

inline constexpr size_t kChunkBytes = 2u << 20;
inline constexpr size_t kKeepFreeChunks = 16;       // 32 MiB of free chunks kept for good
inline constexpr uint64_t kTrimIntervalMs = 10000;  // how often ckptd calls TrimIdle()

uint8_t* Allocate();
void Free(uint8_t* block);
// Unmaps fully free chunks beyond kKeepFreeChunks that were not reused since the previous call.
// Returns the number of chunks unmapped.
size_t TrimIdle();

struct Stats {
  uint64_t chunks = 0;       // mapped chunks
  uint64_t free_blocks = 0;  // free slots in them
};
Stats GetStats();

}  // namespace ckpt::block_arena
