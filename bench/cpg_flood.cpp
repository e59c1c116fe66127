// cpg_flood: the raw Corosync CPG baseline of the ckpt benchmark (bench/README.md).
//
// Uses only the public libcpg API (not ckpt's cpg_transport/), so that its figures say what CPG
// itself can do on this cluster, in the same run as ckpt's.
//
//   cpg_flood --send --size S --count N [--group G] [--members M] [--run ID] [--timeout S]
//       joins G, waits until M members are in the group, multicasts N messages of S bytes
//       (AGREED), handling CS_ERR_TRY_AGAIN by polling the cpg fd (1 ms), dispatching and
//       retrying; exits once its own last message has been delivered back to it.  With
//       --burst K --gap-ms G it pauses G ms (dispatching) after every K messages: a sender that
//       hands corosync its data in batches, like ckptd does, for comparing how the ring behaves
//       (bench/README.md, "What limits the replication rows"); scripts/bench does not use it.
//   cpg_flood --recv --count N [--group G] [--run ID] [--timeout S]
//       joins G, counts the messages of run ID until it has N of them and prints one JSON line:
//       bytes, messages, seconds between the first and the last delivery, and MB/s measured at
//       the receiver = bytes after the first message / that time (10^6 bytes per MB).
//
// Messages are at most 1047552 bytes (cpg_max_atomic_msgsize_get()): larger ones would be
// fragmented synchronously by libcpg, which is not what ckpt does (it chunks to <= 1 MiB).
#include <corosync/cpg.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr uint32_t kMagic = 0x444f4c46;  // "FLOD"
constexpr size_t kMaxMsg = 1047552;

struct Header {
  uint32_t magic;
  uint32_t run;
  uint64_t seq;    // 0..count-1
  uint64_t count;  // messages in the run
};

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct State {
  bool recv = false;
  uint32_t run = 1;
  uint32_t self_nodeid = 0;
  uint32_t self_pid = 0;
  size_t members = 0;
  // receiver
  uint64_t got = 0, expect = 0, bytes = 0, first_bytes = 0, bad = 0;
  double t_first = 0, t_last = 0;
  uint32_t sender_nodeid = 0;
  // sender: own messages delivered back
  uint64_t own_delivered = 0;
  bool own_last = false;
};
State g;

void Deliver(cpg_handle_t, const cpg_name*, uint32_t nodeid, uint32_t pid, void* msg, size_t len) {
  if (len < sizeof(Header)) return;
  Header h;
  std::memcpy(&h, msg, sizeof h);
  if (h.magic != kMagic || h.run != g.run) return;
  if (!g.recv) {
    if (nodeid == g.self_nodeid && pid == g.self_pid) {
      g.own_delivered++;
      if (h.seq + 1 == h.count) g.own_last = true;
    }
    return;
  }
  double t = Now();
  if (g.got == 0) {
    g.t_first = t;
    g.first_bytes = len;
    g.expect = g.expect ? g.expect : h.count;
    g.sender_nodeid = nodeid;
  }
  if (h.seq != g.got) g.bad++;  // AGREED order: a gap or reordering would be a CPG bug
  g.got++;
  g.bytes += len;
  g.t_last = t;
}

void Confchg(cpg_handle_t, const cpg_name*, const cpg_address* members, size_t n_members,
             const cpg_address*, size_t, const cpg_address*, size_t) {
  g.members = n_members;
}

int Usage() {
  std::fprintf(stderr,
               "usage: cpg_flood --send --size BYTES --count N [--group G] [--members M] "
               "[--run ID] [--timeout S] [--burst K --gap-ms G]\n"
               "       cpg_flood --recv --count N [--group G] [--run ID] [--timeout S]\n");
  return 2;
}

// Dispatches whatever is pending, waiting at most timeout_ms for the fd.  false: connection lost.
bool PollDispatch(cpg_handle_t h, int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int r = poll(&p, 1, timeout_ms);
  if (r < 0 && errno != EINTR) return false;
  if (r > 0) {
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return false;
    cs_error_t e = cpg_dispatch(h, CS_DISPATCH_ALL);
    if (e != CS_OK && e != CS_ERR_TRY_AGAIN) {
      std::fprintf(stderr, "cpg_flood: cpg_dispatch: error %d (corosync gone)\n", e);
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  bool send = false;
  size_t size = 65536, members = 2;
  uint64_t count = 0, burst = 0;
  double gap_ms = 0;
  double timeout = 120;
  std::string group = "ckpt-bench-flood";
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "cpg_flood: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    // clang-format off
    if (a == "--send") send = true;
    else if (a == "--recv") g.recv = true;
    else if (a == "--size") size = std::strtoull(next(), nullptr, 0);
    else if (a == "--count") count = std::strtoull(next(), nullptr, 0);
    else if (a == "--group") group = next();
    else if (a == "--members") members = std::strtoull(next(), nullptr, 0);
    else if (a == "--run") g.run = static_cast<uint32_t>(std::strtoul(next(), nullptr, 0));
    else if (a == "--timeout") timeout = std::strtod(next(), nullptr);
    else if (a == "--burst") burst = std::strtoull(next(), nullptr, 0);
    else if (a == "--gap-ms") gap_ms = std::strtod(next(), nullptr);
    else return Usage();
    // clang-format on
  }
  if (send == g.recv || count == 0) return Usage();
  if (size < sizeof(Header) || size > kMaxMsg) {
    std::fprintf(stderr, "cpg_flood: --size must be %zu..%zu bytes\n", sizeof(Header), kMaxMsg);
    return 2;
  }
  if (group.size() + 1 > CPG_MAX_NAME_LENGTH) {
    std::fprintf(stderr, "cpg_flood: group name too long\n");
    return 2;
  }
  if (g.recv) g.expect = count;

  cpg_model_v1_data_t model{};
  model.model = CPG_MODEL_V1;
  model.cpg_deliver_fn = Deliver;
  model.cpg_confchg_fn = Confchg;
  cpg_handle_t h;
  cs_error_t e;
  for (int tries = 0;; tries++) {
    e = cpg_model_initialize(&h, CPG_MODEL_V1, reinterpret_cast<cpg_model_data_t*>(&model),
                             nullptr);
    if (e != CS_ERR_TRY_AGAIN || tries > 50) break;
    usleep(100000);
  }
  if (e != CS_OK) {
    std::fprintf(stderr, "cpg_flood: cpg_model_initialize: error %d (is corosync running?)\n", e);
    return 1;
  }
  unsigned int nodeid = 0;
  cpg_local_get(h, &nodeid);
  g.self_nodeid = nodeid;
  g.self_pid = static_cast<uint32_t>(getpid());
  size_t max_atomic = 0;
  uint32_t m32 = 0;
  if (cpg_max_atomic_msgsize_get(h, &m32) == CS_OK) max_atomic = m32;
  if (max_atomic && size > max_atomic) {
    std::fprintf(stderr, "cpg_flood: --size %zu above cpg_max_atomic_msgsize %zu\n", size,
                 max_atomic);
    return 2;
  }
  int fd = -1;
  cpg_fd_get(h, &fd);
  cpg_name name{};
  name.length = static_cast<uint32_t>(group.size() + 1);  // counts the NUL, as ckpt does
  std::memcpy(name.value, group.c_str(), group.size() + 1);
  for (int tries = 0;; tries++) {
    e = cpg_join(h, &name);
    if (e != CS_ERR_TRY_AGAIN || tries > 100) break;
    PollDispatch(h, fd, 100);
  }
  if (e != CS_OK) {
    std::fprintf(stderr, "cpg_flood: cpg_join: error %d\n", e);
    return 1;
  }
  const double deadline = Now() + timeout;
  int rc = 0;

  if (g.recv) {
    std::fprintf(stderr, "cpg_flood: receiver ready in %s (node %u)\n", group.c_str(), nodeid);
    while (g.got < g.expect && Now() < deadline) {
      if (!PollDispatch(h, fd, 200)) {
        rc = 1;
        break;
      }
    }
    double secs = g.t_last - g.t_first;
    double mbps = secs > 0 ? (g.bytes - g.first_bytes) / secs / 1e6 : 0;
    bool complete = g.got == g.expect && g.bad == 0;
    std::printf("{\"mode\":\"recv\",\"node\":%u,\"sender\":%u,\"run\":%u,\"messages\":%" PRIu64
                ",\"expected\":%" PRIu64 ",\"bytes\":%" PRIu64
                ",\"seconds\":%.6f,\"MBps\":%.1f,"
                "\"out_of_order\":%" PRIu64 ",\"complete\":%s}\n",
                nodeid, g.sender_nodeid, g.run, g.got, g.expect, g.bytes, secs, mbps, g.bad,
                complete ? "true" : "false");
    if (!complete) rc = 1;
  } else {
    // Wait for the receivers: the confchg callback counts the group's members.
    while (g.members < members && Now() < deadline) {
      if (!PollDispatch(h, fd, 100)) return 1;
    }
    if (g.members < members) {
      std::fprintf(stderr, "cpg_flood: only %zu of %zu members joined\n", g.members, members);
      return 1;
    }
    std::vector<char> buf(size, 'x');
    for (size_t i = 0; i < size; i++) buf[i] = static_cast<char>(i * 131 + 7);
    uint64_t try_again = 0;
    double t0 = Now();
    for (uint64_t seq = 0; seq < count && rc == 0;) {
      Header hd{kMagic, g.run, seq, count};
      std::memcpy(buf.data(), &hd, sizeof hd);
      iovec iov{buf.data(), size};
      e = cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1);
      if (e == CS_OK) {
        seq++;
        // Keep our own deliveries flowing so corosync never queues them without bound.
        if ((seq & 15) == 0 && !PollDispatch(h, fd, 0)) rc = 1;
        if (burst > 0 && seq % burst == 0 && seq < count) {
          for (double until = Now() + gap_ms / 1e3; rc == 0 && Now() < until;) {
            int wait_ms = static_cast<int>((until - Now()) * 1e3) + 1;
            if (!PollDispatch(h, fd, wait_ms)) rc = 1;
          }
        }
      } else if (e == CS_ERR_TRY_AGAIN) {
        // Back-pressure: corosync's queue is full.  Wait on the fd (short), dispatch, retry.
        try_again++;
        if (!PollDispatch(h, fd, 1)) rc = 1;
      } else {
        std::fprintf(stderr, "cpg_flood: cpg_mcast_joined: error %d\n", e);
        rc = 1;
      }
      if (Now() > deadline) {
        std::fprintf(stderr, "cpg_flood: timeout after %" PRIu64 " messages\n", seq);
        rc = 1;
      }
    }
    double t_sent = Now();
    while (rc == 0 && !g.own_last && Now() < deadline) {
      if (!PollDispatch(h, fd, 100)) rc = 1;
    }
    double t_done = Now();
    double secs = t_done - t0;
    std::printf("{\"mode\":\"send\",\"node\":%u,\"run\":%u,\"messages\":%" PRIu64
                ",\"size\":%zu,\"bytes\":%" PRIu64
                ",\"send_seconds\":%.6f,"
                "\"seconds\":%.6f,\"MBps\":%.1f,\"try_again\":%" PRIu64 ",\"complete\":%s}\n",
                nodeid, g.run, count, size, count * static_cast<uint64_t>(size), t_sent - t0, secs,
                secs > 0 ? count * static_cast<double>(size) / secs / 1e6 : 0.0, try_again,
                g.own_last ? "true" : "false");
    if (!g.own_last) rc = 1;
  }
  cpg_leave(h, &name);
  cpg_finalize(h);
  return rc;
}
