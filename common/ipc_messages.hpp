// Messages between libckpt and ckptd over libqb IPC (service name "ckptd").
//
// Frame: libqb's own header (qb_ipc_request_header {int32 id, int32 size} / qb_ipc_response_header
// {id, size, error}) followed by our body, little-endian:
//   u16 kIpcVersion, then the message's fields in declaration order (see fields()).
// Responses start with i32 status (a ckpt_status_t) and str message, then the typed fields.
// Local shared memory, so no checksum: the kernel protects it; the version protects against skew.
// COMMIT is special: after its fields comes the raw data of its ranges, concatenated in order, so
// libckpt can sendv() straight from the application's mapping (one copy into libqb's ring).
// Requests marked "one-way" get no response; their failures come back as an kAsyncError event.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/codec.hpp"
#include "common/status.hpp"
#include "common/version.hpp"

namespace ckpt::ipc {

inline constexpr uint16_t kIpcVersion = 3;  // 2: SegmentInfo.compression; 3: kCommitCoalesced
inline constexpr const char* kServiceName = "ckptd";
// libqb ring size asked by libckpt; COMMITs larger than this are sent in parts.
inline constexpr uint32_t kMaxMessageBytes = 4u << 20;
inline constexpr uint32_t kMaxCommitPartBytes = kMaxMessageBytes - 64 * 1024;

enum Op : int32_t {
  kHello = 1,
  kOpen = 2,
  kCommit = 3,  // one-way unless kCommitSync is set on the last part
  kFlush = 4,
  kClose = 5,
  kPull = 6,
  kRelease = 7,
  kRead = 8,
  kDelete = 9,
  kStat = 10,
  kList = 11,
  kVersions = 12,
  kClusterStatus = 13,
  kFlushAll = 14,  // added after v3's layouts; an older ckptd answers "unknown IPC request"
};
enum Event : int32_t { kAsyncError = 100 };

// Commit flags on the wire (CKPT_COMMIT_* plus framing).
inline constexpr uint32_t kCommitSync = 1u << 0;
inline constexpr uint32_t kCommitMorePartsFollow = 1u << 16;
// The commit carries the union of several asynchronous commits libckpt deferred while the request
// ring was full (client/deferred_commit.hpp): expected_seq is the seq libckpt gave the last of
// them, and may be ahead of the next seq; the seqs in between never exist as versions.
inline constexpr uint32_t kCommitCoalesced = 1u << 17;

struct Range {
  uint64_t offset = 0;
  uint64_t length = 0;
  template <class F> void fields(F& f) { f(offset); f(length); }
};

struct HelloReq {
  uint32_t client_pid = 0;
  template <class F> void fields(F& f) { f(client_pid); }
};
struct HelloResp {
  uint32_t self_nodeid = 0;
  uint32_t max_message_bytes = 0;
  template <class F> void fields(F& f) { f(self_nodeid); f(max_message_bytes); }
};

struct OpenReq {
  std::string name;
  uint64_t size = 0;
  uint32_t replicas = 0, versions_kept = 0, durability = 0, mode = 0, flags = 0;
  uint32_t pull_timeout_ms = 0;
  template <class F> void fields(F& f) {
    f(name); f(size); f(replicas); f(versions_kept); f(durability); f(mode); f(flags);
    f(pull_timeout_ms);
  }
};
struct OpenResp {
  uint64_t handle = 0;  // names this open writer in COMMIT/FLUSH/CLOSE
  std::string shm_path; // the local storage file to mmap (MAP_SHARED, read/write)
  uint64_t size = 0;
  Version version;      // version the local storage holds now
  // The segment's versions_kept.  1: every version replaces the previous one, so libckpt may
  // coalesce asynchronous commits (kCommitCoalesced); otherwise each commit stays a version.
  uint32_t versions_kept = 0;
  template <class F> void fields(F& f) { f(handle); f(shm_path); f(size); f(version); f(versions_kept); }
};

struct CommitReq {
  uint64_t handle = 0;
  uint32_t flags = 0;
  uint32_t timeout_ms = 0;
  uint64_t expected_seq = 0;  // seq this commit becomes (libckpt counts; ckptd checks)
  std::vector<Range> ranges;  // followed by the raw bytes of the ranges
  template <class F> void fields(F& f) { f(handle); f(flags); f(timeout_ms); f(expected_seq); f(ranges); }
};
struct CommitResp {
  Version version;
  template <class F> void fields(F& f) { f(version); }
};

struct HandleReq {  // FLUSH, CLOSE
  uint64_t handle = 0;
  uint32_t timeout_ms = 0;
  template <class F> void fields(F& f) { f(handle); f(timeout_ms); }
};

struct FlushAllReq {  // FLUSH_ALL: every segment the connection has open
  uint32_t timeout_ms = 0;
  template <class F> void fields(F& f) { f(timeout_ms); }
};

struct NameReq {  // PULL, RELEASE, DELETE, STAT, VERSIONS
  std::string name;
  uint32_t timeout_ms = 0;
  template <class F> void fields(F& f) { f(name); f(timeout_ms); }
};
struct VersionResp {  // PULL
  Version version;
  template <class F> void fields(F& f) { f(version); }
};

struct ReadReq {
  std::string name;
  uint8_t has_version = 0;
  Version version;
  uint64_t offset = 0, length = 0;  // length <= kMaxMessageBytes - 64 KiB
  uint32_t timeout_ms = 0;
  template <class F> void fields(F& f) {
    f(name); f(has_version); f(version); f(offset); f(length); f(timeout_ms);
  }
};
struct ReadResp {
  Version version;
  uint64_t segment_size = 0;
  std::vector<uint8_t> data;
  template <class F> void fields(F& f) { f(version); f(segment_size); f(data); }
};

struct HolderInfo {
  uint32_t nodeid = 0;
  std::string node_name;
  Version version;
  uint8_t live = 0, is_owner = 0, is_target = 0;
  template <class F> void fields(F& f) { f(nodeid); f(node_name); f(version); f(live); f(is_owner); f(is_target); }
};
struct SegmentInfo {
  std::string name;
  uint64_t size = 0;
  uint32_t owner_nodeid = 0;
  std::string owner_name;
  Version latest;
  uint64_t epoch = 0;
  uint32_t replicas = 0, versions_kept = 0, durability = 0, uid = 0, gid = 0, mode = 0;
  uint32_t compression = 0;
  uint32_t acked_replicas = 0;
  std::vector<HolderInfo> holders;
  template <class F> void fields(F& f) {
    f(name); f(size); f(owner_nodeid); f(owner_name); f(latest); f(epoch); f(replicas); f(versions_kept);
    f(durability); f(uid); f(gid); f(mode); f(compression); f(acked_replicas); f(holders);
  }
};
struct StatResp {
  SegmentInfo info;
  template <class F> void fields(F& f) { f(info); }
};

struct ListReq {
  std::string start_after;  // paging: names sort bytewise; "" = from the start
  uint32_t max_entries = 0;
  template <class F> void fields(F& f) { f(start_after); f(max_entries); }
};
struct ListResp {
  std::vector<SegmentInfo> segments;
  uint8_t more = 0;
  template <class F> void fields(F& f) { f(segments); f(more); }
};

struct VersionInfo {
  Version version;
  uint64_t size = 0, checksum = 0, stored_unix_ms = 0;
  template <class F> void fields(F& f) { f(version); f(size); f(checksum); f(stored_unix_ms); }
};
struct VersionsResp {
  std::vector<VersionInfo> versions;
  template <class F> void fields(F& f) { f(versions); }
};

struct MemberInfo {
  uint32_t nodeid = 0;
  std::string node_name;
  uint8_t eligible = 0, is_self = 0;
  template <class F> void fields(F& f) { f(nodeid); f(node_name); f(eligible); f(is_self); }
};
struct ClusterStatusResp {
  uint32_t self_nodeid = 0;
  uint8_t joined = 0;
  std::vector<MemberInfo> members;
  uint64_t segments = 0, segments_owned = 0, segments_held = 0, bytes_held = 0;
  uint64_t bytes_sent = 0, bytes_received = 0, messages_dropped = 0, under_replicated = 0;
  uint64_t data_wire_bytes_sent = 0;
  template <class F> void fields(F& f) {
    f(self_nodeid); f(joined); f(members); f(segments); f(segments_owned); f(segments_held);
    f(bytes_held); f(bytes_sent); f(bytes_received); f(messages_dropped); f(under_replicated);
    f(data_wire_bytes_sent);
  }
};

struct EmptyMsg {
  template <class F> void fields(F&) {}
};

struct AsyncErrorEvent {
  uint64_t handle = 0;
  int32_t status = 0;
  std::string message;
  template <class F> void fields(F& f) { f(handle); f(status); f(message); }
};

// ---- codec ----------------------------------------------------------------------------------

struct FieldWriter {
  Writer w;
  void operator()(uint8_t v) { w.u8(v); }
  void operator()(uint16_t v) { w.u16(v); }
  void operator()(uint32_t v) { w.u32(v); }
  void operator()(int32_t v) { w.u32(static_cast<uint32_t>(v)); }
  void operator()(uint64_t v) { w.u64(v); }
  void operator()(const std::string& s) { w.str(s); }
  void operator()(const Version& v) { w.u64(v.epoch); w.u64(v.seq); }
  void operator()(const std::vector<uint8_t>& b) { w.blob(b); }
  template <class T> void operator()(const std::vector<T>& v) {
    w.u32(static_cast<uint32_t>(v.size()));
    for (auto& x : v) (*this)(x);
  }
  template <class T> void operator()(const T& m) requires requires(T& t) { t.fields(*this); } {
    const_cast<T&>(m).fields(*this);
  }
};

struct FieldReader {
  Reader r;
  // Upper bound on decoded vector lengths, so garbage cannot make us allocate gigabytes.
  static constexpr uint32_t kMaxElems = 1u << 20;
  void operator()(uint8_t& v) { v = r.u8(); }
  void operator()(uint16_t& v) { v = r.u16(); }
  void operator()(uint32_t& v) { v = r.u32(); }
  void operator()(int32_t& v) { v = static_cast<int32_t>(r.u32()); }
  void operator()(uint64_t& v) { v = r.u64(); }
  void operator()(std::string& s) { s = r.str(); }
  void operator()(Version& v) { v.epoch = r.u64(); v.seq = r.u64(); }
  void operator()(std::vector<uint8_t>& b) {
    auto s = r.blob();
    b.assign(s.begin(), s.end());
  }
  template <class T> void operator()(std::vector<T>& v) {
    uint32_t n = r.u32();
    if (n > kMaxElems || n > r.remaining()) {  // every element takes >= 1 byte
      r.fail();
      return;
    }
    v.resize(n);
    for (auto& x : v) {
      (*this)(x);
      if (!r.ok()) return;
    }
  }
  template <class T> void operator()(T& m) requires requires(T& t) { t.fields(*this); } {
    m.fields(*this);
  }
};

// Request body: u16 version + fields.
template <class T> std::vector<uint8_t> EncodeRequest(const T& msg) {
  std::vector<uint8_t> out;
  FieldWriter fw{Writer(&out)};
  fw.w.u16(kIpcVersion);
  fw(msg);
  return out;
}

// Decodes a request body.  Returns kProtocol on a version mismatch or malformed/truncated input.
// `trailing` (optional) receives whatever follows the fields (COMMIT data); without it, trailing
// bytes are an error.
template <class T>
Status DecodeRequest(std::span<const uint8_t> body, T* msg,
                     std::span<const uint8_t>* trailing = nullptr) {
  FieldReader fr{Reader(body)};
  uint16_t v = fr.r.u16();
  if (!fr.r.ok()) return Err(Code::kProtocol, "truncated IPC request");
  if (v != kIpcVersion)
    return Err(Code::kProtocol, "IPC version " + std::to_string(v) + " not supported (want " +
                                    std::to_string(kIpcVersion) + ")");
  fr(*msg);
  if (!fr.r.ok()) return Err(Code::kProtocol, "malformed or truncated IPC request");
  if (trailing) {
    *trailing = body.subspan(fr.r.position());
  } else if (fr.r.remaining() != 0) {
    return Err(Code::kProtocol, "IPC request has trailing bytes");
  }
  return Status::Ok();
}

// Response body: u16 version, i32 status, str message, fields (only when status >= 0).
template <class T> std::vector<uint8_t> EncodeResponse(const Status& st, const T& msg) {
  std::vector<uint8_t> out;
  FieldWriter fw{Writer(&out)};
  fw.w.u16(kIpcVersion);
  fw(static_cast<int32_t>(st.c_code()));
  fw(st.message());
  if (st.c_code() >= 0) fw(msg);
  return out;
}

// Decodes a response; returns the daemon's status (with its message) or kProtocol.
template <class T> Status DecodeResponse(std::span<const uint8_t> body, T* msg) {
  FieldReader fr{Reader(body)};
  uint16_t v = fr.r.u16();
  int32_t code = 0;
  std::string message;
  fr(code);
  fr(message);
  if (!fr.r.ok() || v != kIpcVersion) return Err(Code::kProtocol, "malformed IPC response");
  if (code < 0) return Status(static_cast<Code>(code), message);
  fr(*msg);
  if (!fr.r.ok()) return Err(Code::kProtocol, "malformed IPC response");
  return Status(static_cast<Code>(code), message);
}

// Sum of range lengths, or nullopt on overflow.
std::optional<uint64_t> TotalRangeBytes(const std::vector<Range>& ranges);

}  // namespace ckpt::ipc
