// CpgTransport against a real single-node corosync (run under tests/integration/with_corosync.sh).
//
// Two members of one group are this process and a forked child (same nodeid, different pids).
// Each process builds its own qb_loop and transport after the fork, so no libcpg state is shared.
#include "cpg_transport/cpg_transport.hpp"

#include <corosync/cpg.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/checksum.hpp"

namespace ckpt {
namespace {

using Clock = std::chrono::steady_clock;

// ---- event loop helper ----

class Loop {
 public:
  Loop() : loop_(qb_loop_create()) { CKPT_ASSERT(loop_ != nullptr); }
  ~Loop() { qb_loop_destroy(loop_); }
  qb_loop_t* get() const { return loop_; }

  // Runs the loop until pred() holds (checked every millisecond) or timeout_ms passes.
  bool RunUntil(const std::function<bool()>& pred, int timeout_ms = 60000) {
    if (pred()) return true;
    State st{this, &pred, Clock::now() + std::chrono::milliseconds(timeout_ms)};
    Arm(&st);
    qb_loop_run(loop_);
    qb_loop_timer_del(loop_, st.handle);
    return pred();
  }

 private:
  struct State {
    Loop* self;
    const std::function<bool()>* pred;
    Clock::time_point deadline;
    qb_loop_timer_handle handle = 0;
  };
  void Arm(State* st) { qb_loop_timer_add(loop_, QB_LOOP_LOW, 1000000, st, &Tick, &st->handle); }
  static void Tick(void* data) {
    auto* st = static_cast<State*>(data);
    if ((*st->pred)() || Clock::now() >= st->deadline) {
      qb_loop_stop(st->self->loop_);
    } else {
      st->self->Arm(st);
    }
  }
  qb_loop_t* loop_;
};

// ---- test messages: [tag u32][seq u32][checksum u64][payload] ----

constexpr size_t kHeader = 16;

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

// Mixed sizes: 90% up to 4 KiB, 9% up to 64 KiB, 1% up to `max` (the CPG atomic size).
size_t MixedSize(uint32_t tag, uint32_t seq, size_t max) {
  uint64_t r = Mix((uint64_t{tag} << 32) | seq);
  size_t lo = kHeader, hi = 4096;
  if (r % 100 == 0) {
    lo = 64 * 1024, hi = max;
  } else if (r % 10 == 0) {
    lo = 4096, hi = 64 * 1024;
  }
  return lo + (r >> 8) % (hi - lo + 1);
}

std::vector<uint8_t> MakeMessage(uint32_t tag, uint32_t seq, size_t size) {
  std::vector<uint8_t> m(std::max(size, kHeader));
  uint64_t x = Mix((uint64_t{tag} << 32) ^ seq ^ 0x9e3779b97f4a7c15ULL);
  for (size_t i = kHeader; i < m.size(); i += 8) {
    x = Mix(x + i);
    std::memcpy(&m[i], &x, std::min<size_t>(8, m.size() - i));
  }
  uint64_t sum = Checksum64(m.data() + kHeader, m.size() - kHeader);
  std::memcpy(&m[0], &tag, 4);
  std::memcpy(&m[4], &seq, 4);
  std::memcpy(&m[8], &sum, 8);
  return m;
}

// Checks a delivered message; returns (tag << 32 | seq) or nullopt when corrupt.
std::optional<uint64_t> CheckMessage(std::span<const uint8_t> m) {
  if (m.size() < kHeader) return std::nullopt;
  uint32_t tag, seq;
  uint64_t sum;
  std::memcpy(&tag, &m[0], 4);
  std::memcpy(&seq, &m[4], 4);
  std::memcpy(&sum, &m[8], 8);
  if (Checksum64(m.data() + kHeader, m.size() - kHeader) != sum) return std::nullopt;
  return (uint64_t{tag} << 32) | seq;
}

// ---- one member: loop + transport + recorded events + a sender that honours back-pressure ----

struct Member {
  Loop loop;
  std::unique_ptr<CpgTransport> t;
  std::vector<CpgView> views;
  std::vector<uint64_t> order;            // (tag << 32 | seq) in delivery order
  std::map<uint32_t, uint32_t> next_seq;  // per tag: expected next seq (FIFO, no loss)
  uint64_t corrupt = 0, out_of_order = 0, drained = 0, lost = 0;
  Clock::time_point last_delivery;
  // Sender state.
  uint32_t tag = 0, to_send = 0, sent = 0, refusals = 0;
  std::function<size_t(uint32_t seq)> size_of;

  Status Connect(CpgTransport::Options opts = {}) {
    CpgTransport::Callbacks cb;
    cb.deliver = [this](uint32_t, uint32_t, std::span<const uint8_t> m) {
      last_delivery = Clock::now();
      auto id = CheckMessage(m);
      if (!id) {
        ++corrupt;
        return;
      }
      order.push_back(*id);
      uint32_t& want = next_seq[uint32_t(*id >> 32)];
      if (uint32_t(*id) != want) ++out_of_order;
      want = uint32_t(*id) + 1;
    };
    cb.view = [this](const CpgView& v) { views.push_back(v); };
    cb.drained = [this] {
      ++drained;
      Pump();
    };
    cb.lost = [this](const Status&) { ++lost; };
    auto r = CpgTransport::Connect(loop.get(), opts, std::move(cb));
    if (!r.ok()) return r.status();
    t = std::move(r.value());
    return Status::Ok();
  }

  // Sends until done or the queue refuses; drained resumes it.
  void Pump() {
    while (sent < to_send) {
      Status st = t->Send(MakeMessage(tag, sent, size_of(sent)));
      if (st.code() == Code::kNoSpace) {
        ++refusals;
        return;
      }
      CKPT_ASSERT(st.ok());
      ++sent;
    }
  }

  size_t members() const { return views.empty() ? 0 : views.back().members.size(); }
};

// ---- child process plumbing ----

struct Child {
  pid_t pid = -1;
  int to_child = -1, from_child = -1;
};

// Forks; the child waits for one byte on its pipe, runs body(read_fd, write_fd) and _exits with
// its result.  Nothing of the parent's libcpg state exists yet when this is called.
Child Fork(const std::function<int(int rfd, int wfd)>& body) {
  int p2c[2], c2p[2];
  CKPT_ASSERT(pipe(p2c) == 0 && pipe(c2p) == 0);
  Child c;
  c.pid = fork();
  CKPT_ASSERT(c.pid >= 0);
  if (c.pid == 0) {
    close(p2c[1]);
    close(c2p[0]);
    char go;
    if (read(p2c[0], &go, 1) != 1) _exit(90);
    _exit(body(p2c[0], c2p[1]));
  }
  close(p2c[0]);
  close(c2p[1]);
  c.to_child = p2c[1];
  c.from_child = c2p[0];
  return c;
}

bool WriteAll(int fd, const void* p, size_t n) {
  auto* b = static_cast<const uint8_t*>(p);
  while (n > 0) {
    ssize_t w = write(fd, b, n);
    if (w <= 0) return false;
    b += w, n -= size_t(w);
  }
  return true;
}

bool ReadAll(int fd, void* p, size_t n) {
  auto* b = static_cast<uint8_t*>(p);
  while (n > 0) {
    ssize_t r = read(fd, b, n);
    if (r <= 0) return false;
    b += r, n -= size_t(r);
  }
  return true;
}

int WaitExit(pid_t pid) {
  int status = 0;
  CKPT_ASSERT(waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool Contains(const std::vector<CpgMember>& list, uint32_t nodeid, uint32_t pid, uint32_t reason) {
  for (const CpgMember& m : list) {
    if (m.nodeid == nodeid && m.pid == pid && m.reason == reason) return true;
  }
  return false;
}

// ---- tests ----

TEST(CpgTransport, ConnectFailsClearlyWithoutCorosync) {
  // A fresh network namespace cannot reach corosync's abstract IPC socket.
  Child c = Fork([](int, int wfd) {
    if (unshare(CLONE_NEWNET) != 0) return 77;
    Loop loop;
    auto r = CpgTransport::Connect(loop.get(), {}, {});
    if (r.ok()) return 1;
    std::string msg = r.status().message();
    WriteAll(wfd, msg.data(), msg.size());
    return r.status().code() == Code::kUnavailable ? 0 : 2;
  });
  ASSERT_EQ(write(c.to_child, "g", 1), 1);
  close(c.to_child);
  char buf[512] = {};
  ssize_t n = read(c.from_child, buf, sizeof(buf) - 1);
  close(c.from_child);
  int rc = WaitExit(c.pid);
  if (rc == 77) GTEST_SKIP() << "cannot unshare a network namespace";
  EXPECT_EQ(rc, 0);
  ASSERT_GT(n, 0);
  std::printf("  Connect() without corosync: %s\n", buf);
  EXPECT_EQ(std::string(buf).rfind("cannot connect to corosync (CPG): ", 0), 0u) << buf;
}

TEST(CpgTransport, RejectsBadGroupNames) {
  Loop loop;
  CpgTransport::Options o;
  o.group = "";
  EXPECT_EQ(CpgTransport::Connect(loop.get(), o, {}).status().code(), Code::kInvalid);
  o.group = std::string(128, 'x');
  EXPECT_EQ(CpgTransport::Connect(loop.get(), o, {}).status().code(), Code::kInvalid);
}

// Views, total order and integrity with two members, then a clean leave.
TEST(CpgTransport, TwoMembersAgreeOnViewsAndOrder) {
  constexpr uint32_t kPerSender = 10000;
  CpgTransport::Options opts;
  opts.group = "ckpt-test-order";
  opts.max_queue_bytes = 8u << 20;

  Child c = Fork([&](int rfd, int wfd) {
    Member m;
    if (!m.Connect(opts).ok()) return 10;
    if (!m.loop.RunUntil([&] { return m.members() == 2; })) return 11;
    m.tag = 2, m.to_send = kPerSender;
    size_t max = m.t->max_message_bytes();
    m.size_of = [&](uint32_t seq) { return MixedSize(2, seq, max); };
    m.Pump();
    if (!m.loop.RunUntil([&] { return m.order.size() == 2 * kPerSender; }, 240000)) return 12;
    if (m.corrupt || m.out_of_order) return 13;
    const CpgView& first = m.views.front();  // our own join: both members, we joined
    if (first.members.size() != 2 || first.joined.size() != 1 ||
        !Contains(first.joined, m.t->local_nodeid(), getpid(), CPG_REASON_JOIN)) {
      return 14;
    }
    uint64_t n = m.order.size();
    if (!WriteAll(wfd, &n, 8) || !WriteAll(wfd, m.order.data(), n * 8)) return 15;
    char bye;
    if (read(rfd, &bye, 1) != 1) return 16;
    m.t->Shutdown();  // clean leave: the parent sees CPG_REASON_LEAVE
    return 0;
  });

  Member m;
  ASSERT_TRUE(m.Connect(opts).ok());
  const uint32_t self = m.t->local_nodeid();
  EXPECT_GT(self, 0u);
  ASSERT_TRUE(m.loop.RunUntil([&] { return m.members() == 1; }));
  EXPECT_TRUE(Contains(m.views[0].joined, self, getpid(), CPG_REASON_JOIN));

  ASSERT_EQ(write(c.to_child, "g", 1), 1);
  ASSERT_TRUE(m.loop.RunUntil([&] { return m.members() == 2; }));
  const CpgView& join = m.views.back();
  ASSERT_EQ(join.joined.size(), 1u);
  EXPECT_TRUE(Contains(join.joined, self, uint32_t(c.pid), CPG_REASON_JOIN));
  EXPECT_TRUE(join.left.empty());
  ASSERT_EQ(join.members.size(), 2u);  // sorted by nodeid, then pid
  EXPECT_EQ(join.members[0].pid, std::min<uint32_t>(getpid(), c.pid));
  EXPECT_EQ(join.members[1].pid, std::max<uint32_t>(getpid(), c.pid));

  m.tag = 1, m.to_send = kPerSender;
  size_t max = m.t->max_message_bytes();
  m.size_of = [&](uint32_t seq) { return MixedSize(1, seq, max); };
  auto start = Clock::now();
  m.Pump();
  ASSERT_TRUE(m.loop.RunUntil([&] { return m.order.size() == 2 * kPerSender; }, 240000))
      << "delivered " << m.order.size();
  double secs = std::chrono::duration<double>(m.last_delivery - start).count();
  EXPECT_EQ(m.corrupt, 0u);
  EXPECT_EQ(m.out_of_order, 0u);

  uint64_t n = 0;
  ASSERT_TRUE(ReadAll(c.from_child, &n, 8));
  std::vector<uint64_t> child_order(n);
  ASSERT_TRUE(ReadAll(c.from_child, child_order.data(), n * 8));
  EXPECT_TRUE(child_order == m.order) << "members saw different delivery orders";

  CpgCounters k = m.t->counters();
  uint64_t bytes = 0;
  for (uint32_t s = 0; s < kPerSender; ++s) bytes += std::max(kHeader, MixedSize(1, s, max));
  EXPECT_EQ(k.messages_sent, kPerSender);
  EXPECT_EQ(k.bytes_sent, bytes);
  EXPECT_EQ(k.messages_delivered, 2 * kPerSender);
  std::printf(
      "  2 members x %u mixed messages (%.1f MiB sent here): %.2f s, try_again=%llu, "
      "refusals=%u, drained=%llu\n",
      kPerSender, bytes / 1048576.0, secs, (unsigned long long)k.try_again, m.refusals,
      (unsigned long long)m.drained);

  // The child leaves cleanly.
  ASSERT_EQ(write(c.to_child, "x", 1), 1);
  ASSERT_TRUE(m.loop.RunUntil([&] { return m.members() == 1; }));
  EXPECT_TRUE(Contains(m.views.back().left, self, uint32_t(c.pid), CPG_REASON_LEAVE));
  EXPECT_EQ(WaitExit(c.pid), 0);
  close(c.to_child);
  close(c.from_child);
  m.t->Shutdown();
  EXPECT_FALSE(m.t->connected());
  EXPECT_EQ(m.t->Send({1, 2, 3}).code(), Code::kUnavailable);
}

TEST(CpgTransport, DeadProcessIsReportedAsProcdown) {
  CpgTransport::Options opts;
  opts.group = "ckpt-test-procdown";
  Child c = Fork([&](int, int) {
    Member m;
    if (!m.Connect(opts).ok()) return 10;
    m.loop.RunUntil([&] { return m.members() == 2; });
    _exit(0);  // no leave, no finalize
  });
  Member m;
  ASSERT_TRUE(m.Connect(opts).ok());
  ASSERT_EQ(write(c.to_child, "g", 1), 1);
  // Own join, child join, child death (the last two may come in one dispatch).
  ASSERT_TRUE(m.loop.RunUntil([&] { return m.views.size() == 3; }));
  EXPECT_EQ(m.views[1].members.size(), 2u);
  EXPECT_TRUE(Contains(m.views[1].joined, m.t->local_nodeid(), uint32_t(c.pid), CPG_REASON_JOIN));
  EXPECT_EQ(m.views[2].members.size(), 1u);
  EXPECT_TRUE(Contains(m.views[2].left, m.t->local_nodeid(), uint32_t(c.pid), CPG_REASON_PROCDOWN));
  EXPECT_EQ(WaitExit(c.pid), 0);
  close(c.to_child);
  close(c.from_child);
}

TEST(CpgTransport, BoundedQueueRefusesThenDrains) {
  CpgTransport::Options opts;
  opts.group = "ckpt-test-queue";
  opts.max_queue_bytes = 4u << 20;
  Member m;
  ASSERT_TRUE(m.Connect(opts).ok());
  ASSERT_TRUE(m.loop.RunUntil([&] { return m.members() == 1; }));
  EXPECT_EQ(m.t->Send(std::vector<uint8_t>(m.t->max_message_bytes() + 1)).code(), Code::kTooLarge);

  // Without running the loop, the queue fills once corosync answers TRY_AGAIN.
  m.tag = 1, m.to_send = 200000;
  m.size_of = [](uint32_t) { return size_t{64} << 10; };
  m.Pump();
  ASSERT_GT(m.refusals, 0u) << "queue never filled; sent " << m.sent;
  EXPECT_LE(m.t->queued_bytes(), opts.max_queue_bytes);
  EXPECT_LT(m.t->free_bytes(), size_t{64} << 10);
  EXPECT_GT(m.t->counters().try_again, 0u);
  EXPECT_EQ(m.t->counters().queue_full, 1u);
  const uint32_t accepted_at_refusal = m.sent;

  // Stop refilling: drained must fire and everything accepted must be delivered.
  m.to_send = m.sent;
  ASSERT_TRUE(m.loop.RunUntil([&] { return m.order.size() == m.sent; }));
  EXPECT_GE(m.drained, 1u);
  EXPECT_EQ(m.t->queued_bytes(), 0u);
  EXPECT_EQ(m.corrupt + m.out_of_order, 0u);
  EXPECT_EQ(m.t->counters().messages_sent, accepted_at_refusal);
  std::printf("  queue test: %u x 64 KiB accepted before the first refusal, try_again=%llu\n",
              accepted_at_refusal, (unsigned long long)m.t->counters().try_again);
}

// The engine sends from inside deliver callbacks and may shut down from one.
TEST(CpgTransport, SendAndShutdownFromCallbacks) {
  Loop loop;
  std::unique_ptr<CpgTransport> t;
  int delivered = 0;
  CpgTransport::Callbacks cb;
  cb.deliver = [&](uint32_t, uint32_t, std::span<const uint8_t> m) {
    ++delivered;
    if (m[0] == 'a') {
      EXPECT_TRUE(t->Send({'b'}).ok());
    } else {
      t->Shutdown();  // deferred until cpg_dispatch() returns
      EXPECT_FALSE(t->connected());
    }
  };
  CpgTransport::Options opts;
  opts.group = "ckpt-test-reentry";
  auto r = CpgTransport::Connect(loop.get(), opts, std::move(cb));
  ASSERT_TRUE(r.ok()) << r.status().message();
  t = std::move(r.value());
  ASSERT_TRUE(t->Send({'a'}).ok());
  ASSERT_TRUE(loop.RunUntil([&] { return !t->connected(); }));
  EXPECT_EQ(delivered, 2);
  // The loop stays usable: a new transport on it works.
  Member m;
  ASSERT_TRUE(m.Connect(opts).ok());
  EXPECT_TRUE(m.loop.RunUntil([&] { return m.members() == 1; }));
  t.reset();
}

// A sender's own messages come back while its queue is flushed: Flush() reads them between two
// sends, so a deliver callback may shut the transport down from there (or from the fd handler:
// which one depends on timing).
TEST(CpgTransport, ShutdownFromCallbackWhileQueueFlushes) {
  Loop loop;
  std::unique_ptr<CpgTransport> t;
  uint32_t delivered = 0;
  CpgTransport::Callbacks cb;
  cb.deliver = [&](uint32_t, uint32_t, std::span<const uint8_t>) {
    if (++delivered == 40) t->Shutdown();  // deferred until cpg_dispatch() returns
  };
  CpgTransport::Options opts;
  opts.group = "ckpt-test-drain";
  auto r = CpgTransport::Connect(loop.get(), opts, std::move(cb));
  ASSERT_TRUE(r.ok()) << r.status().message();
  t = std::move(r.value());
  // 60 MiB queued at once: corosync answers TRY_AGAIN long before the end, so most of the queue
  // leaves from the loop (fd handler, retry timer), with our deliveries read in between.
  const size_t size = t->max_message_bytes();
  for (uint32_t i = 0; i < 60; ++i) ASSERT_TRUE(t->Send(MakeMessage(1, i, size)).ok());
  ASSERT_TRUE(loop.RunUntil([&] { return !t->connected(); }, 60000));
  EXPECT_EQ(delivered, 40u);  // nothing after the shutdown
  EXPECT_EQ(t->queued_bytes(), 0u);
  // The loop stays usable: a new transport on it works.
  Member m;
  ASSERT_TRUE(m.Connect(opts).ok());
  EXPECT_TRUE(m.loop.RunUntil([&] { return m.members() == 1; }));
  t.reset();
}

// Prints throughput of one member sending to itself over loopback, and checks the wake-up rule:
// corosync is poked after deliveries of 256 KiB or more, never after smaller ones.  Also that a
// sender reads its own large deliveries between sends (counters().drains).
TEST(CpgTransport, Throughput) {
  CpgTransport::Options opts;
  opts.group = "ckpt-test-bench";
  Member m;
  ASSERT_TRUE(m.Connect(opts).ok());
  ASSERT_TRUE(m.loop.RunUntil([&] { return m.members() == 1; }));
  uint32_t tag = 0;
  for (size_t size : {size_t{64} << 10, m.t->max_message_bytes()}) {
    const uint32_t count = uint32_t((size_t{512} << 20) / size);  // 512 MiB per size
    m.tag = ++tag, m.to_send = count, m.sent = 0;
    m.order.clear();
    m.size_of = [size](uint32_t) { return size; };
    uint64_t try_again0 = m.t->counters().try_again, pokes0 = m.t->counters().pokes,
             drains0 = m.t->counters().drains;
    auto start = Clock::now();
    m.Pump();
    ASSERT_TRUE(m.loop.RunUntil([&] { return m.order.size() == count; }, 120000));
    if (size < (size_t{256} << 10)) {
      EXPECT_EQ(m.t->counters().pokes, pokes0);
    } else {
      EXPECT_GT(m.t->counters().pokes, pokes0);
      // 512 sends from the loop with our own deliveries coming back: some are read in between.
      EXPECT_GT(m.t->counters().drains, drains0);
    }
    double secs = std::chrono::duration<double>(m.last_delivery - start).count();
    std::printf(
        "  throughput %7zu-byte messages: %8.0f msgs/s  %7.1f MB/s  (%u msgs, "
        "try_again=%llu)\n",
        size, count / secs, count * double(size) / secs / 1e6, count,
        (unsigned long long)(m.t->counters().try_again - try_again0));
  }
  EXPECT_EQ(m.corrupt + m.out_of_order, 0u);
}

// Last: kills corosync, expects on_lost, restarts corosync and expects a rejoin whose first
// view lists every member as joined.  Needs with_corosync.sh (CKPT_COROSYNC_PID).
TEST(CpgTransport, ReconnectsAfterCorosyncRestart) {
  const char* cs = std::getenv("CKPT_COROSYNC_PID");
  if (cs == nullptr) GTEST_SKIP() << "not running under with_corosync.sh";
  CpgTransport::Options opts;
  opts.group = "ckpt-test-reconnect";
  opts.reconnect_ms = 100;
  Member m;
  ASSERT_TRUE(m.Connect(opts).ok());
  ASSERT_TRUE(m.loop.RunUntil([&] { return m.members() == 1; }));

  ASSERT_EQ(kill(pid_t(std::atoi(cs)), SIGKILL), 0);
  ASSERT_TRUE(m.loop.RunUntil([&] { return m.lost == 1; }, 10000));
  EXPECT_FALSE(m.t->connected());
  EXPECT_EQ(m.t->Send({1}).code(), Code::kUnavailable);

  // Restart corosync (still inside the namespace); the old PID no longer exists.
  m.loop.RunUntil([] { return false; }, 500);  // a few failed reconnect attempts
  ASSERT_EQ(std::system("corosync -f >/dev/null 2>&1 & echo $! > \"$CKPT_COROSYNC_DIR\"/pid2"), 0);
  ASSERT_TRUE(m.loop.RunUntil([&] { return m.t->connected() && m.views.size() >= 2; }, 30000));
  EXPECT_EQ(m.t->counters().reconnects, 1u);
  const CpgView& v = m.views.back();
  ASSERT_EQ(v.members.size(), 1u);
  EXPECT_EQ(v.joined, v.members);
  m.tag = 7, m.to_send = 10, m.sent = 0;
  m.order.clear();
  m.size_of = [](uint32_t) { return size_t{100}; };
  m.Pump();
  EXPECT_TRUE(m.loop.RunUntil([&] { return m.order.size() == 10; }));
  m.t->Shutdown();
}

}  // namespace
}  // namespace ckpt
