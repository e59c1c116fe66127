// libckpt against an in-process fake ckptd (a libqb IPC server thread): framing, commit parts
// and iovecs, asynchronous errors and resync, read pieces, list paging, error messages.
#include <ckpt/ckpt.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <qb/qbipcs.h>
#include <qb/qbloop.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/ipc_messages.hpp"

namespace {

using namespace ckpt;

constexpr uint64_t kHandle = 42;
constexpr uint64_t kEpoch = 3;
constexpr uint32_t kSelf = 7;

struct CommitRecord {
  uint32_t flags = 0;
  uint64_t expected_seq = 0;
  std::vector<ipc::Range> ranges;
  std::vector<uint8_t> data;
};

class FakeDaemon {
 public:
  explicit FakeDaemon(std::string service) : service_(std::move(service)) {
    shm_path_ = "/dev/shm/ckpt-unit-" + std::to_string(getpid()) + "-seg";
    thread_ = std::thread([this] { Run(); });
    while (!ready_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeDaemon() {
    stop_ = true;
    thread_.join();
    unlink(shm_path_.c_str());
  }

  std::mutex mu;
  std::vector<CommitRecord> commits;
  std::vector<ipc::ReadReq> reads;
  std::vector<int32_t> ops;
  uint64_t applied_seq = 0;
  uint64_t fail_seq = 0;         // async FENCED event for the commit with this expected_seq
  uint64_t wrong_file_size = 0;  // OPEN reports a size different from the file
  uint32_t versions_kept = 0;    // OPEN reports it (1 lets libckpt batch async commits)
  std::vector<uint8_t> applied;  // the segment as the applied commits left it
  std::vector<uint8_t> image;    // what READ serves

  std::string shm_path_;

 private:
  static FakeDaemon* self_;
  std::string service_;
  std::thread thread_;
  std::atomic<bool> ready_{false}, stop_{false};
  qb_loop_t* loop_ = nullptr;
  qb_loop_timer_handle timer_{};

  template <class Resp>
  static void Reply(qb_ipcs_connection_t* c, int32_t op, const Status& st, const Resp& resp) {
    std::vector<uint8_t> body = ipc::EncodeResponse(st, resp);
    std::vector<uint8_t> msg(sizeof(qb_ipc_response_header));
    msg.insert(msg.end(), body.begin(), body.end());
    qb_ipc_response_header h{};
    h.id = op;
    h.size = static_cast<int32_t>(msg.size());
    std::memcpy(msg.data(), &h, sizeof h);
    ASSERT_GT(qb_ipcs_response_send(c, msg.data(), msg.size()), 0);
  }
  static void Event(qb_ipcs_connection_t* c, const ipc::AsyncErrorEvent& ev) {
    std::vector<uint8_t> body = ipc::EncodeResponse(Status::Ok(), ev);
    std::vector<uint8_t> msg(sizeof(qb_ipc_response_header));
    msg.insert(msg.end(), body.begin(), body.end());
    qb_ipc_response_header h{};
    h.id = ipc::kAsyncError;
    h.size = static_cast<int32_t>(msg.size());
    std::memcpy(msg.data(), &h, sizeof h);
    ASSERT_GT(qb_ipcs_event_send(c, msg.data(), msg.size()), 0);
  }

  static int32_t OnMsg(qb_ipcs_connection_t* c, void* data, size_t size) {
    FakeDaemon* d = self_;
    qb_ipc_request_header h;
    std::memcpy(&h, data, sizeof h);
    EXPECT_EQ(static_cast<size_t>(h.size), size);
    std::span<const uint8_t> body(static_cast<uint8_t*>(data) + sizeof h, size - sizeof h);
    std::lock_guard<std::mutex> lock(d->mu);
    d->ops.push_back(h.id);
    switch (h.id) {
      case ipc::kHello: {
        ipc::HelloReq req;
        EXPECT_TRUE(ipc::DecodeRequest(body, &req).ok());
        EXPECT_EQ(req.client_pid, static_cast<uint32_t>(getpid()));
        Reply(c, h.id, Status::Ok(), ipc::HelloResp{kSelf, 0});
        break;
      }
      case ipc::kOpen: {
        ipc::OpenReq req;
        EXPECT_TRUE(ipc::DecodeRequest(body, &req).ok());
        int fd = open(d->shm_path_.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
        EXPECT_EQ(ftruncate(fd, req.size), 0);
        close(fd);
        ipc::OpenResp resp{
            kHandle, d->shm_path_, req.size + d->wrong_file_size, {kEpoch, 0}, d->versions_kept};
        d->applied_seq = 0;
        d->applied.assign(req.size, 0);
        Reply(c, h.id, Status::Ok(), resp);
        break;
      }
      case ipc::kCommit: {
        ipc::CommitReq req;
        std::span<const uint8_t> trailing;
        EXPECT_TRUE(ipc::DecodeRequest(body, &req, &trailing).ok());
        EXPECT_EQ(req.handle, kHandle);
        EXPECT_EQ(ipc::TotalRangeBytes(req.ranges).value(), trailing.size());
        d->commits.push_back({req.flags, req.expected_seq, req.ranges,
                              std::vector<uint8_t>(trailing.begin(), trailing.end())});
        if (req.flags & ipc::kCommitMorePartsFollow) break;
        if (req.expected_seq == d->fail_seq) {
          Event(c, {kHandle, CKPT_ERR_NO_SPACE, "disk full on node3"});
          break;  // not applied
        }
        if (req.flags & ipc::kCommitCoalesced)
          EXPECT_GT(req.expected_seq, d->applied_seq);
        else
          EXPECT_EQ(req.expected_seq, d->applied_seq + 1);
        d->applied_seq = req.expected_seq;
        for (size_t i = 0, pos = 0; i < req.ranges.size(); pos += req.ranges[i].length, i++) {
          if (req.ranges[i].offset + req.ranges[i].length <= d->applied.size())
            std::memcpy(d->applied.data() + req.ranges[i].offset, trailing.data() + pos,
                        req.ranges[i].length);
        }
        if (req.flags & ipc::kCommitSync)
          Reply(c, h.id, Status::Ok(), ipc::CommitResp{{kEpoch, req.expected_seq}});
        break;
      }
      case ipc::kFlushAll: {
        ipc::FlushAllReq req;
        EXPECT_TRUE(ipc::DecodeRequest(body, &req).ok());
        Reply(c, h.id, Status::Ok(), ipc::EmptyMsg{});
        break;
      }
      case ipc::kFlush:
      case ipc::kClose:
      case ipc::kRelease:
      case ipc::kDelete:
        Reply(c, h.id, Status::Ok(), ipc::EmptyMsg{});
        break;
      case ipc::kPull: {
        ipc::NameReq req;
        EXPECT_TRUE(ipc::DecodeRequest(body, &req).ok());
        if (req.name == "fresh")
          Reply(c, h.id, Status(Code::kNoCheckpoint, ""), ipc::VersionResp{});
        else
          Reply(c, h.id, Status::Ok(), ipc::VersionResp{{kEpoch + 1, 9}});
        break;
      }
      case ipc::kStat: {
        ipc::NameReq req;
        EXPECT_TRUE(ipc::DecodeRequest(body, &req).ok());
        if (req.name != "seg") {
          Reply(c, h.id, Status(Code::kNotFound, "no segment '" + req.name + "' in the catalog"),
                ipc::StatResp{});
          break;
        }
        ipc::StatResp resp;
        resp.info.name = "seg";
        resp.info.owner_nodeid = kSelf;
        resp.info.owner_name = std::string(100, 'n');  // longer than node_name[64]
        resp.info.latest = {kEpoch, d->applied_seq};
        for (uint32_t i = 0; i < 20; i++) {
          ipc::HolderInfo hi;
          hi.nodeid = i + 1;
          hi.node_name = "h";
          hi.version = {kEpoch, 1};
          resp.info.holders.push_back(hi);
        }
        Reply(c, h.id, Status::Ok(), resp);
        break;
      }
      case ipc::kRead: {
        ipc::ReadReq req;
        EXPECT_TRUE(ipc::DecodeRequest(body, &req).ok());
        d->reads.push_back(req);
        ipc::ReadResp resp;
        resp.version = req.has_version ? req.version : Version{kEpoch, 5};
        resp.segment_size = d->image.size();
        resp.data.assign(d->image.begin() + req.offset, d->image.begin() + req.offset + req.length);
        Reply(c, h.id, Status::Ok(), resp);
        break;
      }
      case ipc::kList: {
        ipc::ListReq req;
        EXPECT_TRUE(ipc::DecodeRequest(body, &req).ok());
        ipc::ListResp resp;  // 5 segments "s0".."s4", two per page
        int start = req.start_after.empty() ? 0 : req.start_after[1] - '0' + 1;
        for (int i = start; i < 5 && i < start + 2; i++) {
          ipc::SegmentInfo info;
          info.name = "s" + std::to_string(i);
          info.size = 100u + i;
          resp.segments.push_back(info);
        }
        resp.more = start + 2 < 5;
        Reply(c, h.id, Status::Ok(), resp);
        break;
      }
      case ipc::kClusterStatus: {
        ipc::ClusterStatusResp resp;
        resp.self_nodeid = kSelf;
        resp.joined = 1;
        for (uint32_t i = 1; i <= 130; i++)
          resp.members.push_back({i, "node" + std::to_string(i), 1, uint8_t(i == kSelf ? 1 : 0)});
        resp.segments = 5;
        Reply(c, h.id, Status::Ok(), resp);
        break;
      }
      default:
        ADD_FAILURE() << "unexpected op " << h.id;
    }
    return 0;
  }

  static void Tick(void* data) {
    auto* d = static_cast<FakeDaemon*>(data);
    if (d->stop_) {
      qb_loop_stop(d->loop_);
      return;
    }
    qb_loop_timer_add(d->loop_, QB_LOOP_HIGH, 5000000ull, d, Tick, &d->timer_);
  }

  void Run() {
    self_ = this;
    loop_ = qb_loop_create();
    static qb_loop_t* loop;
    loop = loop_;
    qb_ipcs_service_handlers sh{};
    sh.connection_accept = [](qb_ipcs_connection_t*, uid_t, gid_t) -> int32_t { return 0; };
    sh.msg_process = OnMsg;
    qb_ipcs_poll_handlers ph{};
    ph.job_add = [](qb_loop_priority p, void* data, qb_loop_job_dispatch_fn fn) {
      return qb_loop_job_add(loop, p, data, fn);
    };
    ph.dispatch_add = [](qb_loop_priority p, int32_t fd, int32_t ev, void* data,
                         qb_ipcs_dispatch_fn_t fn) {
      return qb_loop_poll_add(loop, p, fd, ev, data, fn);
    };
    ph.dispatch_mod = [](qb_loop_priority p, int32_t fd, int32_t ev, void* data,
                         qb_ipcs_dispatch_fn_t fn) {
      return qb_loop_poll_mod(loop, p, fd, ev, data, fn);
    };
    ph.dispatch_del = [](int32_t fd) { return qb_loop_poll_del(loop, fd); };
    qb_ipcs_service_t* s = qb_ipcs_create(service_.c_str(), 0, QB_IPC_SHM, &sh);
    qb_ipcs_enforce_buffer_size(s, ipc::kMaxMessageBytes);
    qb_ipcs_poll_handlers_set(s, &ph);
    EXPECT_EQ(qb_ipcs_run(s), 0);
    qb_loop_timer_add(loop_, QB_LOOP_HIGH, 5000000ull, this, Tick, &timer_);
    ready_ = true;
    qb_loop_run(loop_);
    qb_ipcs_destroy(s);
    qb_loop_destroy(loop_);
  }
};
FakeDaemon* FakeDaemon::self_ = nullptr;

class WithFake : public ::testing::Test {
 protected:
  void SetUp() override {
    service_ = "ckptd-unit-fake-" + std::to_string(getpid());
    setenv("CKPT_IPC_SERVICE", service_.c_str(), 1);
    fake_ = std::make_unique<FakeDaemon>(service_);
    ASSERT_EQ(ckpt_connect(&c_), CKPT_OK) << ckpt_last_error(nullptr);
  }
  void TearDown() override {
    ckpt_disconnect(c_);
    fake_.reset();
    unsetenv("CKPT_IPC_SERVICE");
  }
  ckpt_segment_t* Open(uint64_t size) {
    ckpt_open_options_t o{};
    o.size = size;
    o.flags = CKPT_OPEN_CREATE;
    ckpt_segment_t* s = nullptr;
    EXPECT_EQ(ckpt_open(c_, "seg", &o, &s), CKPT_OK) << ckpt_last_error(c_);
    return s;
  }
  // Waits until the fake saw `n` commits (one-way messages are processed asynchronously).
  void WaitCommits(size_t n) {
    for (int i = 0; i < 5000; i++) {
      {
        std::lock_guard<std::mutex> lock(fake_->mu);
        if (fake_->commits.size() >= n) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    FAIL() << "fake daemon did not get " << n << " commits";
  }
  std::string service_;
  std::unique_ptr<FakeDaemon> fake_;
  ckpt_client_t* c_ = nullptr;
};

TEST_F(WithFake, OpenWriteCommitAsyncAndSync) {
  ckpt_segment_t* s = Open(4096);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(ckpt_segment_size(s), 4096u);
  EXPECT_EQ(ckpt_segment_version(s).epoch, kEpoch);
  EXPECT_EQ(ckpt_write(s, 10, "hello", 5), CKPT_OK);
  EXPECT_EQ(ckpt_write(s, 15, "world", 5), CKPT_OK);  // adjacent: one range
  std::memcpy(static_cast<char*>(ckpt_segment_data(s)) + 100, "xyz", 3);
  EXPECT_EQ(ckpt_mark_dirty(s, 100, 3), CKPT_OK);
  EXPECT_EQ(ckpt_write(s, 4095, "ab", 2), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_mark_dirty(s, 4097, 0), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_write(s, 0, nullptr, 1), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_commit(s, 1u << 7, 0, nullptr), CKPT_ERR_INVALID);

  ckpt_version_t v{};
  ASSERT_EQ(ckpt_commit(s, 0, 0, &v), CKPT_OK);
  EXPECT_EQ(v.epoch, kEpoch);
  EXPECT_EQ(v.seq, 1u);
  WaitCommits(1);
  {
    std::lock_guard<std::mutex> lock(fake_->mu);
    const auto& c = fake_->commits[0];
    EXPECT_EQ(c.flags, 0u);
    EXPECT_EQ(c.expected_seq, 1u);
    ASSERT_EQ(c.ranges.size(), 2u);
    EXPECT_EQ(c.ranges[0].offset, 10u);
    EXPECT_EQ(c.ranges[0].length, 10u);
    EXPECT_EQ(std::string(c.data.begin(), c.data.end()), "helloworldxyz");
  }
  // Nothing dirty: async is a no-op with the current version.
  ASSERT_EQ(ckpt_commit(s, 0, 0, &v), CKPT_OK);
  EXPECT_EQ(v.seq, 1u);
  ASSERT_EQ(ckpt_write(s, 0, "Z", 1), CKPT_OK);
  ASSERT_EQ(ckpt_commit(s, CKPT_COMMIT_SYNC, 1000, &v), CKPT_OK) << ckpt_last_error(c_);
  EXPECT_EQ(v.seq, 2u);
  EXPECT_EQ(ckpt_segment_version(s).seq, 2u);
  {
    std::lock_guard<std::mutex> lock(fake_->mu);
    ASSERT_EQ(fake_->commits.size(), 2u);
    EXPECT_EQ(fake_->commits[1].flags, ipc::kCommitSync);
  }
  EXPECT_EQ(ckpt_flush(s, 0), CKPT_OK);
  ckpt_close(s);
  std::lock_guard<std::mutex> lock(fake_->mu);
  EXPECT_EQ(fake_->ops.back(), ipc::kClose);
}

TEST_F(WithFake, LargeCommitGoesInParts) {
  const uint64_t size = 10ull << 20;
  ckpt_segment_t* s = Open(size);
  ASSERT_NE(s, nullptr);
  auto* p = static_cast<uint8_t*>(ckpt_segment_data(s));
  for (uint64_t i = 0; i < size; i++) p[i] = static_cast<uint8_t>(i * 7 + (i >> 12));
  ckpt_version_t v{};
  ASSERT_EQ(ckpt_commit(s, CKPT_COMMIT_ALL | CKPT_COMMIT_SYNC, 0, &v), CKPT_OK)
      << ckpt_last_error(c_);
  EXPECT_EQ(v.seq, 1u);
  std::lock_guard<std::mutex> lock(fake_->mu);
  ASSERT_EQ(fake_->commits.size(), 3u);
  std::vector<uint8_t> all;
  for (size_t i = 0; i < 3; i++) {
    const auto& c = fake_->commits[i];
    EXPECT_EQ(c.expected_seq, 1u);
    EXPECT_EQ(c.flags, i < 2 ? ipc::kCommitMorePartsFollow : ipc::kCommitSync);
    EXPECT_LE(c.data.size(), ipc::kMaxCommitPartBytes);
    all.insert(all.end(), c.data.begin(), c.data.end());
  }
  ASSERT_EQ(all.size(), size);
  EXPECT_EQ(std::memcmp(all.data(), p, size), 0);
}

// versions_kept == 1: small asynchronous commits are copied into the deferred buffer and sent
// by the flusher thread as coalesced commits; the last one carries the last seq, the bytes ckptd
// applies equal the mapping, and a flush sends what is still deferred before FLUSH.
TEST_F(WithFake, SmallAsyncCommitsAreBatched) {
  fake_->versions_kept = 1;
  ckpt_segment_t* s = Open(64 * 1024);
  ASSERT_NE(s, nullptr);
  constexpr uint64_t kCommits = 2000;
  for (uint64_t i = 0; i < kCommits; i++) {
    uint32_t v = static_cast<uint32_t>(i * 2654435761u);
    ASSERT_EQ(ckpt_write(s, (i * 4) % (64 * 1024 - 4), &v, 4), CKPT_OK);
    ckpt_version_t ver{};
    ASSERT_EQ(ckpt_commit(s, 0, 0, &ver), CKPT_OK);
    ASSERT_EQ(ver.seq, i + 1);
  }
  ASSERT_EQ(ckpt_flush(s, 1000), CKPT_OK) << ckpt_last_error(c_);
  std::lock_guard<std::mutex> lock(fake_->mu);
  ASSERT_FALSE(fake_->commits.empty());
  EXPECT_LE(fake_->commits.size(), kCommits);
  for (auto& c : fake_->commits) EXPECT_EQ(c.flags, ipc::kCommitCoalesced) << c.expected_seq;
  EXPECT_EQ(fake_->commits.back().expected_seq, kCommits);
  EXPECT_EQ(fake_->applied_seq, kCommits);
  EXPECT_EQ(std::memcmp(fake_->applied.data(), ckpt_segment_data(s), 64 * 1024), 0);
  // FLUSH came after the last commit.
  EXPECT_EQ(fake_->ops.back(), ipc::kFlush);
}

// ckpt_flush_all sends what is deferred first, then one FLUSH_ALL; a pending asynchronous error
// of a segment is its answer (and is reported once).
TEST_F(WithFake, FlushAllSendsDeferredCommitsFirstAndReportsPendingErrors) {
  fake_->versions_kept = 1;
  ckpt_segment_t* s = Open(64 * 1024);
  ASSERT_NE(s, nullptr);
  for (uint64_t i = 0; i < 100; i++) {
    ASSERT_EQ(ckpt_write(s, i * 8, &i, sizeof i), CKPT_OK);
    ASSERT_EQ(ckpt_commit(s, 0, 0, nullptr), CKPT_OK);
  }
  ASSERT_EQ(ckpt_flush_all(c_, 1000), CKPT_OK) << ckpt_last_error(c_);
  {
    std::lock_guard<std::mutex> lock(fake_->mu);
    EXPECT_EQ(fake_->applied_seq, 100u);
    EXPECT_EQ(std::memcmp(fake_->applied.data(), ckpt_segment_data(s), 64 * 1024), 0);
    EXPECT_EQ(fake_->ops.back(), ipc::kFlushAll);
  }
  size_t sent = 0;
  {
    std::lock_guard<std::mutex> lock(fake_->mu);
    sent = fake_->commits.size();
  }
  fake_->fail_seq = 101;
  ASSERT_EQ(ckpt_write(s, 0, "z", 1), CKPT_OK);
  ASSERT_EQ(ckpt_commit(s, CKPT_COMMIT_ALL, 0, nullptr), CKPT_OK);  // fails asynchronously
  WaitCommits(sent + 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  fake_->fail_seq = 0;
  EXPECT_EQ(ckpt_flush_all(c_, 1000), CKPT_ERR_NO_SPACE);
  EXPECT_STREQ(ckpt_last_error(c_), "disk full on node3");
  EXPECT_EQ(ckpt_flush_all(c_, 1000), CKPT_OK);  // reported once
}

// A commit larger than the batch limit, or a sync one, sends what is deferred first (in order).
TEST_F(WithFake, LargeOrSyncCommitNeverOvertakesDeferred) {
  fake_->versions_kept = 1;
  ckpt_segment_t* s = Open(1 << 20);
  ASSERT_NE(s, nullptr);
  ASSERT_EQ(ckpt_write(s, 0, "a", 1), CKPT_OK);
  ASSERT_EQ(ckpt_commit(s, 0, 0, nullptr), CKPT_OK);  // small: batched
  std::vector<uint8_t> big(256 * 1024, 'b');
  ASSERT_EQ(ckpt_write(s, 1000, big.data(), big.size()), CKPT_OK);
  ASSERT_EQ(ckpt_commit(s, 0, 0, nullptr), CKPT_OK);  // large: direct, after the batch
  ASSERT_EQ(ckpt_write(s, 1, "c", 1), CKPT_OK);
  ASSERT_EQ(ckpt_commit(s, 0, 0, nullptr), CKPT_OK);  // small again
  ckpt_version_t v{};
  ASSERT_EQ(ckpt_write(s, 2, "d", 1), CKPT_OK);
  ASSERT_EQ(ckpt_commit(s, CKPT_COMMIT_SYNC, 1000, &v), CKPT_OK) << ckpt_last_error(c_);
  EXPECT_EQ(v.seq, 4u);
  std::lock_guard<std::mutex> lock(fake_->mu);
  uint64_t last = 0;
  for (auto& c : fake_->commits) {
    EXPECT_GT(c.expected_seq, last);  // the fake also checks seq order as it applies them
    last = c.expected_seq;
  }
  EXPECT_EQ(fake_->applied_seq, 4u);
  EXPECT_EQ(std::memcmp(fake_->applied.data(), ckpt_segment_data(s), 1 << 20), 0);
}

TEST_F(WithFake, AsyncErrorIsReturnedByNextCallThenResyncs) {
  ckpt_segment_t* s = Open(64);
  ASSERT_NE(s, nullptr);
  fake_->fail_seq = 2;
  ckpt_version_t v{};
  ASSERT_EQ(ckpt_write(s, 0, "a", 1), CKPT_OK);
  ASSERT_EQ(ckpt_commit(s, 0, 0, &v), CKPT_OK);  // seq 1 applied
  ASSERT_EQ(ckpt_write(s, 1, "b", 1), CKPT_OK);
  ASSERT_EQ(ckpt_commit(s, 0, 0, &v), CKPT_OK);  // seq 2 queued, fails asynchronously
  WaitCommits(2);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  fake_->fail_seq = 0;
  ASSERT_EQ(ckpt_write(s, 2, "c", 1), CKPT_OK);
  EXPECT_EQ(ckpt_commit(s, 0, 0, &v), CKPT_ERR_NO_SPACE);
  EXPECT_STREQ(ckpt_last_error(c_), "disk full on node3");
  // Next commit: STAT gives seq 1, so it carries seq 2 and the whole segment.
  ASSERT_EQ(ckpt_commit(s, CKPT_COMMIT_SYNC, 0, &v), CKPT_OK) << ckpt_last_error(c_);
  EXPECT_EQ(v.seq, 2u);
  std::lock_guard<std::mutex> lock(fake_->mu);
  ASSERT_EQ(fake_->commits.size(), 3u);
  EXPECT_EQ(fake_->commits[2].expected_seq, 2u);
  ASSERT_EQ(fake_->commits[2].ranges.size(), 1u);
  EXPECT_EQ(fake_->commits[2].ranges[0].length, 64u);
}

TEST_F(WithFake, OpenFailsWithIoWhenSizesDiffer) {
  fake_->wrong_file_size = 1;
  ckpt_segment_t* s = nullptr;
  ckpt_open_options_t o{};
  o.size = 100;
  o.flags = CKPT_OPEN_CREATE;
  EXPECT_EQ(ckpt_open(c_, "seg", &o, &s), CKPT_ERR_IO);
  EXPECT_EQ(s, nullptr);
  EXPECT_NE(std::string(ckpt_last_error(c_)).find(fake_->shm_path_), std::string::npos);
  std::lock_guard<std::mutex> lock(fake_->mu);
  EXPECT_EQ(fake_->ops.back(), ipc::kClose);
}

TEST_F(WithFake, LargeReadInPiecesOfOneVersion) {
  fake_->image.resize(9ull << 20);
  for (size_t i = 0; i < fake_->image.size(); i++) fake_->image[i] = uint8_t(i % 251);
  std::vector<uint8_t> buf(fake_->image.size() - 10);
  ckpt_version_t v{};
  ASSERT_EQ(ckpt_read(c_, "seg", nullptr, 10, buf.data(), buf.size(), &v), CKPT_OK)
      << ckpt_last_error(c_);
  EXPECT_EQ(v.epoch, kEpoch);
  EXPECT_EQ(v.seq, 5u);
  EXPECT_EQ(std::memcmp(buf.data(), fake_->image.data() + 10, buf.size()), 0);
  std::lock_guard<std::mutex> lock(fake_->mu);
  ASSERT_GE(fake_->reads.size(), 3u);
  EXPECT_FALSE(fake_->reads[0].has_version);
  for (size_t i = 1; i < fake_->reads.size(); i++) {
    EXPECT_TRUE(fake_->reads[i].has_version);
    EXPECT_EQ(fake_->reads[i].version, (Version{kEpoch, 5}));
  }
  for (auto& r : fake_->reads) EXPECT_LE(r.length, ipc::kMaxMessageBytes - 64 * 1024);
}

TEST_F(WithFake, InspectionAndErrors) {
  ckpt_segment_info_t* infos = nullptr;
  size_t n = 0;
  ASSERT_EQ(ckpt_list(c_, &infos, &n), CKPT_OK);
  ASSERT_EQ(n, 5u);
  EXPECT_STREQ(infos[4].name, "s4");
  EXPECT_EQ(infos[4].size, 104u);
  free(infos);

  ckpt_segment_info_t info;
  ASSERT_EQ(ckpt_stat(c_, "seg", &info), CKPT_OK);
  EXPECT_EQ(info.n_holders, 16u);
  EXPECT_EQ(std::strlen(info.owner_name), 63u);
  EXPECT_EQ(ckpt_stat(c_, "other", &info), CKPT_ERR_NOT_FOUND);
  EXPECT_STREQ(ckpt_last_error(c_), "no segment 'other' in the catalog");
  EXPECT_EQ(ckpt_stat(c_, "bad/name", &info), CKPT_ERR_NAME);
  EXPECT_EQ(ckpt_stat(c_, nullptr, &info), CKPT_ERR_INVALID);

  ckpt_cluster_info_t cl;
  ASSERT_EQ(ckpt_cluster_status(c_, &cl), CKPT_OK);
  EXPECT_EQ(cl.n_members, 128u);
  EXPECT_EQ(cl.self_nodeid, kSelf);
  EXPECT_TRUE(cl.members[kSelf - 1].is_self);
  EXPECT_STREQ(cl.members[127].node_name, "node128");

  ckpt_version_t v{};
  EXPECT_EQ(ckpt_pull(c_, "fresh", 0, &v), CKPT_NO_CHECKPOINT);
  EXPECT_EQ(ckpt_pull(c_, "seg", 0, &v), CKPT_OK);
  EXPECT_EQ(v.epoch, kEpoch + 1);
  EXPECT_EQ(ckpt_release(c_, "seg", 0), CKPT_OK);
  EXPECT_EQ(ckpt_delete(c_, "seg"), CKPT_OK);
}

TEST_F(WithFake, DaemonGoneIsUnavailable) {
  ckpt_segment_t* s = Open(64);
  ASSERT_NE(s, nullptr);
  fake_.reset();
  ckpt_segment_info_t info;
  EXPECT_EQ(ckpt_stat(c_, "seg", &info), CKPT_ERR_UNAVAILABLE);
  EXPECT_EQ(ckpt_write(s, 0, "x", 1), CKPT_OK);  // local only
  EXPECT_EQ(ckpt_commit(s, 0, 0, nullptr), CKPT_ERR_UNAVAILABLE);
  EXPECT_NE(std::string(ckpt_last_error(c_)).find("ckptd"), std::string::npos);
  ckpt_close(s);
}

}  // namespace
