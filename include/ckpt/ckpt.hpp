// ckpt.hpp: header-only C++ wrapper of libckpt (include/ckpt/ckpt.h).  C++17 or later.
//
// THE ERROR RULE: every failure throws ckpt::Error (code() is the ckpt_status_t, message() the
// daemon's detail).  "No checkpoint exists" is not a failure: pull() and read() return
// std::nullopt for it, meaning "start fresh".  Nothing else returns an empty optional.
//
// Lifetimes: Client and Segment are move-only RAII handles.  A Segment must be destroyed (or
// closed) before the Client that opened it: ckpt_disconnect() frees the segments it still has.
// Threads: as ckpt.h: one thread at a time per Client and its Segments.
//
//   ckpt::Client client;                                   // throws if ckptd is unreachable
//   if (auto v = client.pull("app-state")) { ... restored version *v ... }
//   ckpt::OpenOptions o; o.size = 1 << 20; o.create = true;
//   ckpt::Segment seg = client.open("app-state", o);
//   std::memcpy(seg.data(), state, n); seg.mark_dirty(0, n);
//   ckpt::Version v = seg.commit();                        // asynchronous; seg.commit_sync() waits
//
// Names: ckpt::Version here lives in the inline namespace ckpt::v0; a translation unit that also
// includes ckptd's internal common/version.hpp must spell it ckpt::v0::Version.
#ifndef CKPT_CKPT_HPP
#define CKPT_CKPT_HPP

#include <ckpt/ckpt.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>
#if __cplusplus >= 202002L
#include <span>
#endif

namespace ckpt {
inline namespace v0 {

// A committed version: epoch grows with every change of owner, seq with every commit.
struct Version {
  uint64_t epoch = 0;
  uint64_t seq = 0;

  Version() = default;
  Version(uint64_t e, uint64_t s) : epoch(e), seq(s) {}
  explicit Version(const ckpt_version_t& v) : epoch(v.epoch), seq(v.seq) {}
  ckpt_version_t c() const { return ckpt_version_t{epoch, seq}; }
  bool empty() const { return epoch == 0 && seq == 0; }
  // "generation.seq" as ckptctl prints it (an epoch is generation << 32 | claiming nodeid).
  std::string to_string() const {
    return std::to_string(epoch >> 32) + "." + std::to_string(seq);
  }

  friend bool operator==(const Version& a, const Version& b) {
    return a.epoch == b.epoch && a.seq == b.seq;
  }
  friend bool operator!=(const Version& a, const Version& b) { return !(a == b); }
  friend bool operator<(const Version& a, const Version& b) {
    return a.epoch != b.epoch ? a.epoch < b.epoch : a.seq < b.seq;
  }
  friend bool operator>(const Version& a, const Version& b) { return b < a; }
  friend bool operator<=(const Version& a, const Version& b) { return !(b < a); }
  friend bool operator>=(const Version& a, const Version& b) { return !(a < b); }
};

// A failed libckpt call.  what() = "<context>: <message>".
class Error : public std::runtime_error {
 public:
  Error(int code, std::string message, const std::string& context = "")
      : std::runtime_error(context.empty() ? message : context + ": " + message),
        code_(code),
        message_(std::move(message)) {}
  // The ckpt_status_t (always negative).
  int code() const noexcept { return code_; }
  // ckptd's message, or ckpt_strerror(code()) when there was none.
  const std::string& message() const noexcept { return message_; }

 private:
  int code_;
  std::string message_;
};

namespace detail {
// Throws for rc < 0 with the client's last error (or the generic text); returns rc otherwise.
inline int check(int rc, const ckpt_client_t* client, const char* context) {
  if (rc >= 0) return rc;
  const char* msg = ckpt_last_error(client);
  throw Error(rc, (msg && *msg) ? std::string(msg) : std::string(ckpt_strerror(rc)), context);
}
inline uint32_t to_ms(std::chrono::milliseconds t) {
  if (t.count() < 0) throw Error(CKPT_ERR_INVALID, "negative timeout");
  if (t.count() > static_cast<int64_t>(UINT32_MAX)) return UINT32_MAX;
  return static_cast<uint32_t>(t.count());
}
}  // namespace detail

enum class Durability : uint32_t {
  kDefault = CKPT_DURABILITY_DEFAULT,
  kMemory = CKPT_DURABILITY_MEMORY,
  kFsync = CKPT_DURABILITY_FSYNC,
};

// Options of Client::open(); zero/false fields take ckptd's defaults (see ckpt_open_options_t).
struct OpenOptions {
  uint64_t size = 0;  // required with create
  uint32_t replicas = 0;
  uint32_t versions_kept = 0;
  Durability durability = Durability::kDefault;
  uint32_t mode = 0;    // group/other permission bits; 0 = 0600
  bool create = false;  // CKPT_OPEN_CREATE
  bool pull = false;    // CKPT_OPEN_PULL
  bool compress = false;  // CKPT_OPEN_COMPRESS (with create)
  std::chrono::milliseconds pull_timeout{0};

  ckpt_open_options_t c() const {
    ckpt_open_options_t o{};
    o.size = size;
    o.replicas = replicas;
    o.versions_kept = versions_kept;
    o.durability = static_cast<uint32_t>(durability);
    o.mode = mode;
    o.flags = (create ? static_cast<uint32_t>(CKPT_OPEN_CREATE) : 0u) |
              (pull ? static_cast<uint32_t>(CKPT_OPEN_PULL) : 0u) |
              (compress ? static_cast<uint32_t>(CKPT_OPEN_COMPRESS) : 0u);
    o.pull_timeout_ms = detail::to_ms(pull_timeout);
    return o;
  }
};

using SegmentInfo = ckpt_segment_info_t;
using HolderInfo = ckpt_holder_info_t;
using VersionInfo = ckpt_version_info_t;
using ClusterInfo = ckpt_cluster_info_t;
using MemberInfo = ckpt_member_info_t;

// The owner's open segment (ckpt_open).  Closed by the destructor.
class Segment {
 public:
  Segment() = default;
  // Takes ownership of an open handle; `client` is used for error messages only.
  Segment(ckpt_segment_t* segment, const ckpt_client_t* client) noexcept
      : seg_(segment), client_(client) {}
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  Segment(Segment&& o) noexcept : seg_(std::exchange(o.seg_, nullptr)), client_(o.client_) {}
  Segment& operator=(Segment&& o) noexcept {
    if (this != &o) {
      close();
      seg_ = std::exchange(o.seg_, nullptr);
      client_ = o.client_;
    }
    return *this;
  }
  ~Segment() { close(); }

  explicit operator bool() const noexcept { return seg_ != nullptr; }
  ckpt_segment_t* handle() const noexcept { return seg_; }

  // The writable mapping (size() bytes).
  std::byte* data() const noexcept { return static_cast<std::byte*>(ckpt_segment_data(seg_)); }
  uint64_t size() const noexcept { return ckpt_segment_size(seg_); }
#if __cplusplus >= 202002L
  std::span<std::byte> span() const noexcept { return {data(), static_cast<size_t>(size())}; }
#endif
  // The version opened, or the last one committed through this handle.
  Version version() const noexcept { return Version(ckpt_segment_version(seg_)); }

  void write(uint64_t offset, const void* buf, uint64_t len) {
    detail::check(ckpt_write(need(), offset, buf, len), client_, "ckpt_write");
  }
  void mark_dirty(uint64_t offset, uint64_t len) {
    detail::check(ckpt_mark_dirty(need(), offset, len), client_, "ckpt_mark_dirty");
  }
  // flags: CKPT_COMMIT_SYNC | CKPT_COMMIT_ALL.  timeout 0 = 30 s (sync only).
  Version commit(uint32_t flags = 0, std::chrono::milliseconds timeout = {}) {
    ckpt_version_t v{};
    detail::check(ckpt_commit(need(), flags, detail::to_ms(timeout), &v), client_, "ckpt_commit");
    return Version(v);
  }
  // Waits for R acknowledgements of the new version.
  Version commit_sync(std::chrono::milliseconds timeout = {}, bool all = false) {
    return commit(CKPT_COMMIT_SYNC | (all ? static_cast<uint32_t>(CKPT_COMMIT_ALL) : 0u), timeout);
  }
  void flush(std::chrono::milliseconds timeout = {}) {
    detail::check(ckpt_flush(need(), detail::to_ms(timeout)), client_, "ckpt_flush");
  }
  // Unmaps and closes (idempotent).  The segment stays owned by this node.
  void close() noexcept {
    if (seg_) ckpt_close(std::exchange(seg_, nullptr));
  }

 private:
  ckpt_segment_t* need() const {
    if (!seg_) throw Error(CKPT_ERR_INVALID, "segment is closed");
    return seg_;
  }
  ckpt_segment_t* seg_ = nullptr;
  const ckpt_client_t* client_ = nullptr;
};

// A connection to the local ckptd.  The constructor connects (throws Error on failure).
class Client {
 public:
  Client() {
    ckpt_client_t* c = nullptr;
    detail::check(ckpt_connect(&c), nullptr, "cannot connect to ckptd");
    c_ = c;
  }
  // Takes ownership of a connected handle (or nullptr for an empty Client).
  explicit Client(ckpt_client_t* adopt) noexcept : c_(adopt) {}
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  Client(Client&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  Client& operator=(Client&& o) noexcept {
    if (this != &o) {
      ckpt_disconnect(c_);
      c_ = std::exchange(o.c_, nullptr);
    }
    return *this;
  }
  ~Client() { ckpt_disconnect(c_); }

  explicit operator bool() const noexcept { return c_ != nullptr; }
  ckpt_client_t* handle() const noexcept { return c_; }
  std::string last_error() const { return ckpt_last_error(c_); }

  Segment open(const std::string& name, const OpenOptions& options = {}) {
    ckpt_open_options_t o = options.c();
    ckpt_segment_t* s = nullptr;
    detail::check(ckpt_open(need(), name.c_str(), &o, &s), c_, context("open", name).c_str());
    return Segment(s, c_);
  }

  // Makes this node the owner with the newest version; nullopt = no checkpoint (start fresh).
  std::optional<Version> pull(const std::string& name, std::chrono::milliseconds timeout = {}) {
    ckpt_version_t v{};
    int rc = detail::check(ckpt_pull(need(), name.c_str(), detail::to_ms(timeout), &v), c_,
                           context("pull", name).c_str());
    if (rc == CKPT_NO_CHECKPOINT) return std::nullopt;
    return Version(v);
  }

  // Segment::flush() of every segment open on this client, in one round trip.
  void flush_all(std::chrono::milliseconds timeout = {}) {
    detail::check(ckpt_flush_all(need(), detail::to_ms(timeout)), c_, "ckpt_flush_all");
  }

  void release(const std::string& name, std::chrono::milliseconds timeout = {}) {
    detail::check(ckpt_release(need(), name.c_str(), detail::to_ms(timeout)), c_,
                  context("release", name).c_str());
  }

  struct ReadResult {
    Version version;
    std::vector<std::byte> data;
  };
  // Reads [offset, offset+length) of `version` (nullopt = newest); nullopt = no checkpoint.
  std::optional<ReadResult> read(const std::string& name, uint64_t offset, uint64_t length,
                                 std::optional<Version> version = std::nullopt) {
    ReadResult r;
    r.data.resize(static_cast<size_t>(length));
    if (!read_into(name, offset, r.data.data(), length, version, &r.version)) return std::nullopt;
    return r;
  }
  // As read(), into buf; returns false for "no checkpoint".
  bool read_into(const std::string& name, uint64_t offset, void* buf, uint64_t length,
                 std::optional<Version> version = std::nullopt, Version* version_out = nullptr) {
    ckpt_version_t want{}, got{};
    if (version) want = version->c();
    int rc = detail::check(
        ckpt_read(need(), name.c_str(), version ? &want : nullptr, offset, buf, length, &got), c_,
        context("read", name).c_str());
    if (rc == CKPT_NO_CHECKPOINT) return false;
    if (version_out) *version_out = Version(got);
    return true;
  }

  // ckpt_delete (delete is a keyword).
  void remove(const std::string& name) {
    detail::check(ckpt_delete(need(), name.c_str()), c_, context("delete", name).c_str());
  }

  SegmentInfo stat(const std::string& name) {
    SegmentInfo info{};
    detail::check(ckpt_stat(need(), name.c_str(), &info), c_, context("stat", name).c_str());
    return info;
  }

  std::vector<SegmentInfo> list() {
    SegmentInfo* infos = nullptr;
    size_t n = 0;
    detail::check(ckpt_list(need(), &infos, &n), c_, "list");
    std::vector<SegmentInfo> out(infos, infos + n);
    std::free(infos);
    return out;
  }

  std::vector<VersionInfo> versions(const std::string& name) {
    VersionInfo* v = nullptr;
    size_t n = 0;
    detail::check(ckpt_versions(need(), name.c_str(), &v, &n), c_,
                  context("versions", name).c_str());
    std::vector<VersionInfo> out(v, v + n);
    std::free(v);
    return out;
  }

  ClusterInfo status() {
    ClusterInfo info{};
    detail::check(ckpt_cluster_status(need(), &info), c_, "cluster status");
    return info;
  }

 private:
  ckpt_client_t* need() const {
    if (!c_) throw Error(CKPT_ERR_INVALID, "client is not connected");
    return c_;
  }
  static std::string context(const char* op, const std::string& name) {
    return std::string(op) + " " + name;
  }
  ckpt_client_t* c_ = nullptr;
};

}  // namespace v0
}  // namespace ckpt

#endif  // CKPT_CKPT_HPP
