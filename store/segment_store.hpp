// SegmentStore: the only code that touches segment bytes on disk or in shared memory.
//
// Layout under the state directory (one directory per segment, name validated by the caller):
//   <state>/segments/<name>/meta                 SegmentMeta record
//   <state>/segments/<name>/<epoch>-<seq>.full   a whole version
//   <state>/segments/<name>/<epoch>-<seq>.delta  ranges on top of a base version (named inside)
// Every file is one record: a versioned little-endian header (magic, format version, kind, lengths)
// and an XXH3-64 checksum over header and payload; the version's segment checksum
// (common/checksum.hpp) is stored too and verified when the version is rebuilt.  Files are written
// to a temporary name, fsync'ed when `fsync` is true, renamed into place, and the directory
// fsync'ed.  A retired version file becomes a spare (a temporary name) that the segment's next
// record overwrites, so a stream of versions does not create and delete a file each; a delta
// takes the smallest spare that holds it.  The files its prunes retire (a compaction retires a
// whole delta chain) stay as spares, at most 256 per segment and 65,536 in the store;
// spare_budget_bytes of them in all keep their bytes.  So a segment uses up to versions_kept
// plus its longest delta chain plus 256 files of disk.  A file
// that fails any check is renamed to *.corrupt, counted, and never served; the versions that
// depend on it are dropped (another holder's copy is used instead).
// Deltas are compacted: when the chain since the last full file grows past the segment size,
// PutDelta writes a full file instead.
//
// Global directory (optional, e.g. a shared mount): <global>/<name>.ckpt holds the latest full
// version plus its meta, written atomically; used by pull when no holder is reachable.
//
// Local storage: <shm_dir>/<name> is the owner application's working copy, a plain file on tmpfs
// that libckpt maps MAP_SHARED.  InstallLocal writes a temporary file and renames it, so the
// application sees the old or the new version, never a mix; BeginLocal..FinishLocal does the same
// with a file written while a pull's chunks arrive.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/segment_meta.hpp"
#include "common/status.hpp"
#include "common/version.hpp"
#include "store/block_image.hpp"

namespace ckpt {

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct StoredVersion {
  Version version;
  BlockImage image;
  uint64_t stored_unix_ms = 0;
};

struct LoadedSegment {
  SegmentMeta meta;
  std::vector<StoredVersion> versions;  // oldest first; verified against their checksums
};

struct StoreOptions {
  std::string state_dir;   // required
  std::string global_dir;  // "" = none
  std::string shm_dir;     // local storage for owners, e.g. /dev/shm/ckpt
  // Bytes of retired version files kept for the next versions to overwrite (see the layout
  // above); beyond it a retired file keeps only its inode.
  uint64_t spare_budget_bytes = 1ull << 30;
};

struct StoreCounters {
  uint64_t corrupt_files = 0;  // files found damaged (renamed *.corrupt)
  uint64_t files_written = 0;
  uint64_t bytes_written = 0;
  uint64_t spares_reused = 0;  // record files written over a retired version file
};

class SegmentStore {
 public:
  // Creates the directories if needed.  Errors: kIo.
  static Result<std::unique_ptr<SegmentStore>> Open(const StoreOptions& options);
  virtual ~SegmentStore() = default;

  // Rebuilds every segment found under the state directory (startup).  Damaged files are
  // quarantined and counted; a segment with no intact version is returned with no versions.
  virtual Result<std::vector<LoadedSegment>> LoadAll() = 0;

  virtual Status PutMeta(const SegmentMeta& meta, bool fsync) = 0;
  virtual Status PutFull(const std::string& name, Version v, const BlockImage& image,
                         bool fsync) = 0;
  // Stores v as `ranges` of `image` (which is version v) on top of `base`, which must be stored.
  virtual Status PutDelta(const std::string& name, Version v, Version base,
                          const std::vector<ByteRange>& ranges, const BlockImage& image,
                          bool fsync) = 0;
  // The bytes PutDelta(name, _, base, ranges, an image of segment_size bytes, _) would write if
  // called now: the delta record's payload, or segment_size when it would write a whole version
  // instead (the base is not stored, its size differs, or the delta chain would outgrow a whole
  // version: compaction).  Lets a caller tell a small delta from a whole-version write before
  // choosing where to run it.
  virtual uint64_t DeltaWriteBytes(const std::string& name, Version base,
                                   const std::vector<ByteRange>& ranges, uint64_t segment_size) = 0;
  // A full version written in pieces as it arrives: BeginFull opens a temporary record (and
  // aborts an unfinished one of the segment), AppendFull adds image bytes [offset, +length) where
  // offset is what was appended so far, FinishFull (once `size` bytes were appended) completes
  // it like PutFull.  A failed append abandons the stream, so FinishFull then fails; AbortFull
  // drops an open stream (no-op without one).  Errors: kInvalid (order, sizes), kNotFound (no
  // stream of that version), kIo.
  virtual Status BeginFull(const std::string& name, Version v, uint64_t size,
                           uint64_t segment_checksum) = 0;
  virtual Status AppendFull(const std::string& name, Version v, const BlockImage& image,
                            uint64_t offset, uint64_t length) = 0;
  virtual Status FinishFull(const std::string& name, Version v, bool fsync) = 0;
  virtual void AbortFull(const std::string& name, Version v) = 0;
  // Drops stored versions older than `keep_from` (files a kept version depends on stay).
  virtual Status Prune(const std::string& name, Version keep_from) = 0;
  // Removes the segment's directory (and its global copy when `global` is true).
  virtual Status DropSegment(const std::string& name, bool global) = 0;

  virtual bool has_global() const = 0;
  virtual Status PutGlobal(const SegmentMeta& meta, Version v, const BlockImage& image) = 0;
  // nullopt when no global copy exists; kCorrupt when it fails its checksum.
  virtual Result<std::optional<LoadedSegment>> LoadGlobal(const std::string& name) = 0;

  // Local storage for the owner application.
  virtual std::string LocalPath(const std::string& name) const = 0;
  // Atomically replaces the local storage with `image`, owned by uid/gid with `mode`.
  virtual Status InstallLocal(const std::string& name, const BlockImage& image, uint32_t uid,
                              uint32_t gid, uint32_t mode) = 0;
  // Creates a zero-filled local storage file if none exists (or none of the right size).
  virtual Status EnsureLocal(const std::string& name, uint64_t size, uint32_t uid, uint32_t gid,
                             uint32_t mode) = 0;
  virtual Status RemoveLocal(const std::string& name) = 0;
  // Local storage written while a restore arrives (a pull), so the install does not start only
  // after the last chunk.  BeginLocal creates a temporary file of `size` bytes (a hole) in the
  // local storage directory, dropping an unfinished one of the segment; AppendLocal writes image
  // bytes [offset, +length) where offset is what was appended so far; FinishLocal (once `size`
  // bytes were appended) gives the file uid/gid/mode and renames it over the local storage, like
  // InstallLocal.  A failed append abandons the write, so FinishLocal then fails; AbortLocal
  // removes an unfinished one (no-op without one).  Until FinishLocal the application's file is
  // untouched.  Errors: kInvalid (order, sizes), kNotFound (no write open), kIo.
  virtual Status BeginLocal(const std::string& name, uint64_t size) = 0;
  virtual Status AppendLocal(const std::string& name, const BlockImage& image, uint64_t offset,
                             uint64_t length) = 0;
  virtual Status FinishLocal(const std::string& name, uint32_t uid, uint32_t gid,
                             uint32_t mode) = 0;
  virtual void AbortLocal(const std::string& name) = 0;

  virtual StoreCounters counters() const = 0;
};

}  // namespace ckpt
