// CPG wire messages between ckptd daemons (see PROTOCOL.md for the rules that use them).
//
// Every message = 24-byte little-endian header + body:
//   u32 magic 'CKPT' (0x54504b43) | u16 wire version (1) | u16 type | u32 body length |
//   u32 reserved (0) | u64 XXH3-64 over header bytes [0,16) followed by the body.
// Bodies are the fields() below in order (common/codec.hpp encodings: strings u16-length
// prefixed, vectors u32-count prefixed).  DATA bodies end with raw pieces.
// Decode() rejects anything malformed: bad magic/version/length/checksum, unknown type, truncated or
// trailing bytes; the engine drops and counts such messages and carries on.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "common/ipc_messages.hpp"  // FieldWriter/FieldReader visitors
#include "common/status.hpp"
#include "common/version.hpp"

namespace ckpt::repl {

inline constexpr uint32_t kWireMagic = 0x54504b43;
inline constexpr uint16_t kWireVersion = 3;  // 2: segment compression, DATA encoding; 3: BUNDLE
inline constexpr size_t kWireHeaderBytes = 24;

enum class MsgType : uint16_t {
  kNodeInfo = 1,
  kCatalog = 2,
  kClaim = 3,
  kRelease = 4,
  kDelete = 5,
  kData = 6,
  kAck = 7,
  kFetch = 8,
  kFetchFail = 9,
  kBundle = 10,
};

// corosync's largest unfragmented CPG message (cpg_max_atomic_msgsize_get): no message we
// multicast is larger, so libcpg never fragments one (it sleeps while it does).
inline constexpr size_t kMaxWireMessageBytes = 1047552;

struct NodeInfoMsg {
  static constexpr MsgType kType = MsgType::kNodeInfo;
  std::string name;
  uint8_t eligible = 1;
  template <class F> void fields(F& f) { f(name); f(eligible); }
};

struct HolderEntry {
  uint32_t nodeid = 0;
  Version version;
  template <class F> void fields(F& f) { f(nodeid); f(version); }
};

// One catalog record.  Merging two records is a join (see Catalog::Merge): higher epoch wins the
// metadata; latest and per-holder versions take the maximum.
struct CatalogEntry {
  std::string name;
  uint64_t size = 0;
  uint32_t uid = 0, gid = 0, mode = 0600, replicas = 1, versions_kept = 1, durability = 1;
  uint32_t compression = 0;  // ckpt_compression
  uint64_t epoch = 0;
  uint32_t owner = 0;
  uint8_t deleted = 0;
  Version latest;
  std::vector<HolderEntry> holders;
  template <class F> void fields(F& f) {
    f(name); f(size); f(uid); f(gid); f(mode); f(replicas); f(versions_kept); f(durability);
    f(compression); f(epoch); f(owner); f(deleted); f(latest); f(holders);
  }
};

// After a confchg with joiners every member sends its whole catalog; its last CATALOG message has
// final=1 and names the membership (sorted nodeids) it answers.  CLAIM/RELEASE/DELETE delivered
// before every member's final message are applied only after it (the sync barrier).
struct CatalogMsg {
  static constexpr MsgType kType = MsgType::kCatalog;
  std::vector<CatalogEntry> entries;
  uint8_t final = 0;
  std::vector<uint32_t> view_members;
  template <class F> void fields(F& f) { f(entries); f(final); f(view_members); }
};

// Ownership compare-and-swap, applied in total order: succeeds iff the catalog's epoch for the
// segment equals expected_epoch (0 = absent).  The new epoch is
// ((max(expected_epoch, min_epoch) >> 32) + 1) << 32 | claimer nodeid: unique per claimer.
struct ClaimMsg {
  static constexpr MsgType kType = MsgType::kClaim;
  std::string name;
  uint64_t expected_epoch = 0, min_epoch = 0;
  uint8_t reset = 0;  // 1: start from zeros with the parameters below (create / start fresh)
  uint64_t size = 0;
  uint32_t uid = 0, gid = 0, mode = 0600, replicas = 1, versions_kept = 1, durability = 1;
  uint32_t compression = 0;
  uint32_t request_id = 0;
  template <class F> void fields(F& f) {
    f(name); f(expected_epoch); f(min_epoch); f(reset); f(size); f(uid); f(gid); f(mode);
    f(replicas); f(versions_kept); f(durability); f(compression); f(request_id);
  }
};

struct ReleaseMsg {
  static constexpr MsgType kType = MsgType::kRelease;
  std::string name;
  uint64_t epoch = 0;
  template <class F> void fields(F& f) { f(name); f(epoch); }
};

struct DeleteMsg {
  static constexpr MsgType kType = MsgType::kDelete;
  std::string name;
  uint64_t expected_epoch = 0;
  template <class F> void fields(F& f) { f(name); f(expected_epoch); }
};

enum class DataKind : uint8_t { kReplicate = 0, kFetch = 1 };

// Header of a DATA message; the body continues with n_pieces raw pieces:
//   u64 segment offset | u32 length | bytes.
struct DataHeader {
  static constexpr MsgType kType = MsgType::kData;
  std::string name;
  uint32_t xfer_id = 0;  // per-sender transfer number
  Version version;       // version the receiver holds after applying the transfer
  Version base;          // (0,0): full copy; else the version the pieces apply on top of
  uint64_t size = 0;     // segment size
  uint64_t checksum = 0; // segment checksum of `version`
  uint8_t kind = 0;      // DataKind
  uint32_t request_id = 0;
  std::vector<uint32_t> targets;  // nodes that must store it
  uint32_t chunk_index = 0, chunk_count = 1;
  uint32_t n_pieces = 0;
  // How the pieces block (n_pieces x {u64 offset, u32 length, bytes}) follows this header:
  // kRaw as is; kZstd as one zstd frame that inflates to exactly raw_len bytes (<= kMaxDataRaw).
  uint8_t encoding = 0;
  uint32_t raw_len = 0;
  template <class F> void fields(F& f) {
    f(name); f(xfer_id); f(version); f(base); f(size); f(checksum); f(kind); f(request_id);
    f(targets); f(chunk_index); f(chunk_count); f(n_pieces); f(encoding); f(raw_len);
  }
};

struct DataPiece {
  uint64_t offset = 0;
  std::span<const uint8_t> bytes;
};

enum class AckStatus : uint32_t { kStored = 0, kNeedFull = 1, kFailed = 2 };

struct AckMsg {
  static constexpr MsgType kType = MsgType::kAck;
  std::string name;
  Version version;
  uint32_t status = 0;  // AckStatus
  template <class F> void fields(F& f) { f(name); f(version); f(status); }
};

// Asks `holder` to send `version` of the segment to the sender (DATA kind kFetch).
struct FetchMsg {
  static constexpr MsgType kType = MsgType::kFetch;
  std::string name;
  Version version;
  uint32_t holder = 0;
  uint32_t request_id = 0;
  template <class F> void fields(F& f) { f(name); f(version); f(holder); f(request_id); }
};

struct FetchFailMsg {
  static constexpr MsgType kType = MsgType::kFetchFail;
  std::string name;
  uint32_t requester = 0, request_id = 0;
  template <class F> void fields(F& f) { f(name); f(requester); f(request_id); }
};

using AnyMsg = std::variant<NodeInfoMsg, CatalogMsg, ClaimMsg, ReleaseMsg, DeleteMsg, AckMsg,
                            FetchMsg, FetchFailMsg>;

// Encodes a control message with its header.
template <class T> std::vector<uint8_t> Encode(const T& msg);
enum class DataEncoding : uint8_t { kRaw = 0, kZstd = 1 };
// Largest pieces block a DATA message may carry (inflated): a whole chunk, which stays below the
// unfragmented CPG message size.  A compressed block claiming more is rejected, never inflated.
inline constexpr uint32_t kMaxDataRaw = 1024 * 1024;

// Encodes a DATA message: header fields, then pieces copied from `pieces`.  With `compress`, the
// pieces block is sent zstd-compressed (fast level) when that saves at least 1/16 of it, else raw:
// incompressible state costs only the attempt.  header.encoding/raw_len are set here.
std::vector<uint8_t> EncodeData(const DataHeader& header, std::span<const DataPiece> pieces,
                                bool compress = false);
// The same with each piece's bytes appended straight to the message by read(i, out), which must
// append exactly pieces[i].length bytes to *out (one copy from the source, and no zero-filling
// of the message first).
struct PieceSpec {
  uint64_t offset = 0;
  uint64_t length = 0;
};
using PieceReader = std::function<void(size_t index, std::vector<uint8_t>* out)>;
std::vector<uint8_t> EncodeData(const DataHeader& header, std::span<const PieceSpec> pieces,
                                const PieceReader& read, bool compress = false);

// BUNDLE: complete messages (each with its own header and checksum) that one sender multicast
// back to back, carried in one CPG message.  Body: u32 count (>= 2), then count x (u32 length,
// message bytes); an inner message is never a BUNDLE.  A receiver applies the inner messages in
// order, exactly as if they had been delivered one after the other (they were consecutive in
// the sender's stream, and CPG delivers every member the same stream).  Every CPG message costs
// each member's corosync and ckptd a delivery and a wake-up, so the small messages one output
// batch holds (ACKs, DATA of small segments committed together) travel in bundles.
//
// Packs consecutive messages of `msgs` into bundles of at most `max_bytes` each, in order; a
// message that would travel alone (or does not fit in a bundle with another) is left as is.
std::vector<std::vector<uint8_t>> PackBundles(std::vector<std::vector<uint8_t>> msgs,
                                              size_t max_bytes = kMaxWireMessageBytes);
// The messages `message` carries: the inner messages of a valid BUNDLE (views into `message`),
// else `message` itself.  For tests and tools; the engine uses Decode().
std::vector<std::span<const uint8_t>> Unbundle(std::span<const uint8_t> message);

struct Decoded {
  MsgType type{};
  AnyMsg control;                 // valid when type != kData
  DataHeader data;                // valid when type == kData
  std::vector<DataPiece> pieces;  // views into the input buffer (or into `inflated`)
  std::vector<uint8_t> inflated;  // the decompressed pieces block of a kZstd DATA message
  std::vector<std::span<const uint8_t>> bundle;  // type == kBundle: inner messages (views)
};
// Validates header and checksum and decodes the body.  Errors: kProtocol (with a reason).
Status Decode(std::span<const uint8_t> message, Decoded* out);
// Decode of an inner message of a BUNDLE that Decode() accepted: every check but the inner
// checksum, which guards bytes the bundle's checksum has just verified (one hash pass less over
// every delivered byte, on every member).
Status DecodeBundled(std::span<const uint8_t> inner, Decoded* out);

}  // namespace ckpt::repl
