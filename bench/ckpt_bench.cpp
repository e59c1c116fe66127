// ckpt_bench: the libckpt side of the ckpt benchmark (bench/README.md).  Runs inside a lab node
// next to that node's ckptd and prints one JSON line per measurement on stdout.
//
//   ckpt_bench replicate --size B --replicas R [--segments N] [--rounds K] [--repeat K]
//                        [--timeout S] [--name N] [--keep] [--compress]
//                        [--pattern fill|text|random]
//   ckpt_bench latency   --dirty B --mode async|sync --count N [--replicas R] [--name N]
//   ckpt_bench delta     --segment-size B --dirty B [--replicas R] [--repeat K] [--keep]
//   ckpt_bench prep      --name N --size B --replicas R      (create + full sync commit)
//   ckpt_bench pull      --name N [--timeout S]             (time ckpt_pull)
//   ckpt_bench catalog   --count N [--size B] [--replicas R] [--prefix P]
//   ckpt_bench wait      [--segments N] [--members M] [--replicated] [--timeout S]
//   ckpt_bench status                                       (cluster counters)
//   ckpt_bench delete    NAME...
// Sizes take K/M/G suffixes (powers of 1024).  MB/s are 10^6 bytes per second.
#include <ckpt/ckpt.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

[[noreturn]] void Die(const std::string& what, int rc, ckpt_client_t* c = nullptr) {
  const char* detail = c ? ckpt_last_error(c) : ckpt_last_error(nullptr);
  std::fprintf(stderr, "ckpt_bench: %s: %s (%d)%s%s\n", what.c_str(), ckpt_strerror(rc), rc,
               detail && *detail ? ": " : "", detail ? detail : "");
  std::exit(1);
}

uint64_t ParseSize(const std::string& s) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  uint64_t mul = 1;
  if (end && *end) {
    switch (*end) {
      case 'k':
      case 'K':
        mul = 1ull << 10;
        break;
      case 'm':
      case 'M':
        mul = 1ull << 20;
        break;
      case 'g':
      case 'G':
        mul = 1ull << 30;
        break;
      default:
        std::fprintf(stderr, "ckpt_bench: bad size '%s'\n", s.c_str());
        std::exit(2);
    }
  }
  return static_cast<uint64_t>(v * mul);
}

struct Args {
  std::map<std::string, std::string> opt;
  std::vector<std::string> pos;
  bool has(const std::string& k) const { return opt.count(k) != 0; }
  std::string str(const std::string& k, const std::string& d) const {
    auto it = opt.find(k);
    return it == opt.end() ? d : it->second;
  }
  uint64_t size(const std::string& k, uint64_t d) const {
    return has(k) ? ParseSize(opt.at(k)) : d;
  }
  double num(const std::string& k, double d) const {
    return has(k) ? std::strtod(opt.at(k).c_str(), nullptr) : d;
  }
};

ckpt_client_t* Connect(double timeout_s = 10) {
  ckpt_client_t* c = nullptr;
  double end = Now() + timeout_s;
  int rc;
  while ((rc = ckpt_connect(&c)) == CKPT_ERR_UNAVAILABLE && Now() < end) usleep(20000);
  if (rc < 0) Die("connect", rc);
  return c;
}

ckpt_cluster_info_t Status(ckpt_client_t* c) {
  ckpt_cluster_info_t info;
  if (int rc = ckpt_cluster_status(c, &info); rc < 0) Die("cluster_status", rc, c);
  return info;
}

std::string Unique(const std::string& base) {
  return base + "-" + std::to_string(getpid()) + "-" + std::to_string(time(nullptr));
}

ckpt_segment_t* Create(ckpt_client_t* c, const std::string& name, uint64_t size, uint32_t r,
                       bool compress = false) {
  ckpt_open_options_t o{};
  o.size = size;
  o.replicas = r;
  o.versions_kept = 1;
  o.durability = CKPT_DURABILITY_MEMORY;
  o.flags = CKPT_OPEN_CREATE | (compress ? uint32_t{CKPT_OPEN_COMPRESS} : 0u);
  ckpt_segment_t* s = nullptr;
  if (int rc = ckpt_open(c, name.c_str(), &o, &s); rc < 0) Die("open " + name, rc, c);
  return s;
}

// Writes a pattern that differs per round into [off, off+len) so every version is new bytes.
// kFill: one byte value per round plus an 8-byte stamp per 4 KiB (the content does not matter
// without compression).  kText: application-like records (key=value lines with counters and
// names; zstd -1 shrinks them ~4-6x).  kRandom: incompressible bytes.
enum class Pattern { kFill, kText, kRandom };

Pattern ParsePattern(const std::string& p) {
  if (p == "fill") return Pattern::kFill;
  if (p == "text") return Pattern::kText;
  if (p == "random") return Pattern::kRandom;
  std::fprintf(stderr, "ckpt_bench: --pattern must be fill, text or random\n");
  std::exit(2);
}
const char* PatternName(Pattern p) {
  return p == Pattern::kFill ? "fill" : p == Pattern::kText ? "text" : "random";
}

void Fill(ckpt_segment_t* s, uint64_t off, uint64_t len, uint64_t round,
          Pattern pattern = Pattern::kFill) {
  auto* p = static_cast<unsigned char*>(ckpt_segment_data(s)) + off;
  if (pattern == Pattern::kRandom) {
    uint64_t x = round * 0x9e3779b97f4a7c15ull ^ (off + 1);
    for (uint64_t i = 0; i < len; i += 8) {
      x ^= x >> 12, x ^= x << 25, x ^= x >> 27;  // xorshift64*
      uint64_t v = x * 0x2545f4914f6cdd1dull;
      std::memcpy(p + i, &v, std::min<uint64_t>(8, len - i));
    }
    return;
  }
  if (pattern == Pattern::kText) {
    static const char* const kStates[] = {"running", "idle", "draining", "stopped", "degraded"};
    uint64_t i = 0, rec = round * 7919;
    char line[160];
    while (i < len) {
      rec++;
      int n = std::snprintf(line, sizeof line,
                            "id=%08llu node=n%llu state=%s counter=%010llu ts=%llu "
                            "owner=svc-%03llu\n",
                            static_cast<unsigned long long>(rec),
                            static_cast<unsigned long long>(rec % 16), kStates[(rec / 3) % 5],
                            static_cast<unsigned long long>(rec * 2654435761ull % 10000000000ull),
                            static_cast<unsigned long long>(1795580000000ull + rec * 13),
                            static_cast<unsigned long long>((rec * 31) % 977));
      uint64_t k = std::min<uint64_t>(static_cast<uint64_t>(n), len - i);
      std::memcpy(p + i, line, k);
      i += k;
    }
    return;
  }
  std::memset(p, static_cast<int>(round * 37 + 11), len);
  for (uint64_t i = 0; i + 8 <= len; i += 4096) {
    uint64_t v = round * 0x9e3779b97f4a7c15ull ^ (off + i);
    std::memcpy(p + i, &v, 8);
  }
}

double Commit(ckpt_client_t* c, ckpt_segment_t* s, uint32_t flags, uint32_t timeout_ms = 600000) {
  double t0 = Now();
  if (int rc = ckpt_commit(s, flags, timeout_ms, nullptr); rc < 0) Die("commit", rc, c);
  return Now() - t0;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double Pct(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(std::ceil(p / 100.0 * sorted.size()));
  if (i > 0) i--;
  return sorted[std::min(i, sorted.size() - 1)];
}

std::string List(const std::vector<double>& v, int prec) {
  std::string s = "[";
  char b[64];
  for (size_t i = 0; i < v.size(); i++) {
    std::snprintf(b, sizeof b, "%s%.*f", i ? "," : "", prec, v[i]);
    s += b;
  }
  return s + "]";
}

void Delete(ckpt_client_t* c, const std::string& name) {
  int rc = ckpt_delete(c, name.c_str());
  if (rc < 0 && rc != CKPT_ERR_NOT_FOUND) Die("delete " + name, rc, c);
}

// ---- subcommands ------------------------------------------------------------------------------

// Two measurements of full-copy replication (bench/README.md, figure 1):
//  - single commit: `repeat` synchronous whole-segment commits of segment 0, one after the other;
//    each is timed from the call until it returns (= R replicas acknowledged).  Latency-bound for
//    small sizes.
//  - stream: `segments` segments are filled with new bytes (not timed), then committed whole and
//    asynchronously back to back, then one ckpt_flush_all waits until R replicas acknowledged
//    each one's latest version.  Time = from the first commit call until it returns; `rounds`
//    rounds, fresh bytes every round.  `MBps` = segments * size / median round time.  The issue
//    time (until the last asynchronous commit call returned) is reported too: it grows when
//    ckptd's back-pressure makes the commit calls wait for room in the request ring.
int Replicate(const Args& a) {
  uint64_t size = a.size("size", 1 << 20);
  uint32_t r = static_cast<uint32_t>(a.num("replicas", 1));
  int repeat = static_cast<int>(a.num("repeat", 3));
  int n_segments = std::max(1, static_cast<int>(a.num("segments", 1)));
  int rounds = std::max(1, static_cast<int>(a.num("rounds", 3)));
  uint32_t timeout_ms = static_cast<uint32_t>(a.num("timeout", 600) * 1000);
  std::string name = a.str("name", Unique("bench-repl"));
  const bool compress = a.has("compress");
  const Pattern pattern = ParsePattern(a.str("pattern", "fill"));
  ckpt_client_t* c = Connect();
  std::vector<std::string> names;
  std::vector<ckpt_segment_t*> segs;
  for (int i = 0; i < n_segments; i++) {
    names.push_back(n_segments == 1 ? name : name + "-" + std::to_string(i));
    segs.push_back(Create(c, names.back(), size, r, compress));
  }
  uint64_t fill_round = 0;  // a new pattern for every fill of every segment

  std::vector<double> single_secs;
  uint64_t sent0 = Status(c).bytes_sent;
  for (int i = 0; i < repeat; i++) {
    Fill(segs[0], 0, size, ++fill_round, pattern);
    single_secs.push_back(Commit(c, segs[0], CKPT_COMMIT_SYNC | CKPT_COMMIT_ALL, timeout_ms));
  }
  uint64_t single_sent = Status(c).bytes_sent - sent0;

  std::vector<double> stream_secs, issue_secs;
  sent0 = Status(c).bytes_sent;
  const uint64_t wire0 = Status(c).data_wire_bytes_sent;
  for (int k = 0; k < rounds; k++) {
    for (ckpt_segment_t* s : segs) Fill(s, 0, size, ++fill_round, pattern);
    double t0 = Now();
    for (int i = 0; i < n_segments; i++) {
      if (int rc = ckpt_commit(segs[i], CKPT_COMMIT_ALL, timeout_ms, nullptr); rc < 0)
        Die("async commit " + names[i], rc, c);
    }
    issue_secs.push_back(Now() - t0);
    if (int rc = ckpt_flush_all(c, timeout_ms); rc < 0) Die("flush all", rc, c);
    stream_secs.push_back(Now() - t0);
  }
  uint64_t stream_sent = Status(c).bytes_sent - sent0;
  uint64_t stream_wire = Status(c).data_wire_bytes_sent - wire0;

  const uint64_t stream_bytes = size * static_cast<uint64_t>(n_segments);
  double med = Median(stream_secs);
  double best = *std::min_element(stream_secs.begin(), stream_secs.end());
  double single_med = Median(single_secs);
  // null when no single commit was measured (--repeat 0).
  char single_med_s[32] = "null", single_mbps_s[32] = "null", single_sent_s[32] = "null";
  if (repeat > 0) {
    std::snprintf(single_med_s, sizeof single_med_s, "%.6f", single_med);
    std::snprintf(single_mbps_s, sizeof single_mbps_s, "%.1f", size / single_med / 1e6);
    std::snprintf(single_sent_s, sizeof single_sent_s, "%" PRIu64,
                  single_sent / static_cast<uint64_t>(repeat));
  }
  std::printf("{\"bench\":\"replicate\",\"size_bytes\":%" PRIu64
              ",\"replicas\":%u,\"segments\":%d,\"rounds\":%d,\"stream_bytes\":%" PRIu64
              ",\"stream_seconds\":%s,\"stream_seconds_median\":%.6f,"
              "\"stream_issue_seconds_median\":%.6f,\"MBps\":%.1f,\"MBps_best\":%.1f,"
              "\"bytes_sent_per_segment_commit\":%" PRIu64
              ",\"single_commit_repeat\":%d,\"single_commit_seconds\":%s,"
              "\"single_commit_seconds_median\":%s,\"single_commit_MBps\":%s,"
              "\"single_commit_bytes_sent\":%s,\"compression\":\"%s\",\"pattern\":\"%s\","
              "\"wire_bytes_per_segment_commit\":%" PRIu64 "}\n",
              size, r, n_segments, rounds, stream_bytes, List(stream_secs, 6).c_str(), med,
              Median(issue_secs), stream_bytes / med / 1e6, stream_bytes / best / 1e6,
              stream_sent / (static_cast<uint64_t>(rounds) * n_segments), repeat,
              List(single_secs, 6).c_str(), single_med_s, single_mbps_s, single_sent_s,
              compress ? "zstd" : "none", PatternName(pattern),
              stream_wire / (static_cast<uint64_t>(rounds) * n_segments));
  for (size_t i = 0; i < segs.size(); i++) {
    ckpt_close(segs[i]);
    if (!a.has("keep")) Delete(c, names[i]);
  }
  ckpt_disconnect(c);
  return 0;
}

int Latency(const Args& a) {
  uint64_t dirty = a.size("dirty", 4096);
  std::string mode = a.str("mode", "async");
  bool sync = mode == "sync";
  if (!sync && mode != "async") {
    std::fprintf(stderr, "ckpt_bench: --mode async|sync\n");
    return 2;
  }
  int count = static_cast<int>(a.num("count", sync ? 1000 : 10000));
  int warmup = static_cast<int>(a.num("warmup", std::min(100, count / 10)));
  uint32_t r = static_cast<uint32_t>(a.num("replicas", 1));
  uint64_t seg_size = std::max<uint64_t>(dirty * 4, 1 << 20);
  std::string name = a.str("name", Unique("bench-lat"));
  ckpt_client_t* c = Connect();
  ckpt_segment_t* s = Create(c, name, seg_size, r);
  Fill(s, 0, seg_size, 0);
  Commit(c, s, CKPT_COMMIT_SYNC | CKPT_COMMIT_ALL);
  const uint32_t flags = sync ? CKPT_COMMIT_SYNC : 0;
  std::vector<double> us;
  us.reserve(count);
  uint64_t slots = seg_size / dirty;
  double t_start = Now();
  for (int i = 0; i < warmup + count; i++) {
    uint64_t off = (i % slots) * dirty;
    Fill(s, off, dirty, i + 1);  // not timed: the application writing its state
    if (int rc = ckpt_mark_dirty(s, off, dirty); rc < 0) Die("mark_dirty", rc, c);
    double t = Commit(c, s, flags, 60000);
    if (i >= warmup) us.push_back(t * 1e6);
  }
  double t_loop = Now() - t_start;
  // The backlog the async commits left behind: reported, not fatal (the latencies stand).
  double t0 = Now();
  int flush_rc = ckpt_flush(s, static_cast<uint32_t>(a.num("flush-timeout", 120) * 1000));
  double flush = Now() - t0;
  if (flush_rc < 0)
    std::fprintf(stderr, "ckpt_bench: flush after the commits: %s: %s\n", ckpt_strerror(flush_rc),
                 ckpt_last_error(c));
  std::vector<double> sorted = us;
  std::sort(sorted.begin(), sorted.end());
  double mean = 0;
  for (double v : us) mean += v;
  mean /= us.empty() ? 1 : us.size();
  std::printf("{\"bench\":\"latency\",\"mode\":\"%s\",\"dirty_bytes\":%" PRIu64
              ",\"segment_bytes\":%" PRIu64
              ",\"replicas\":%u,\"count\":%d,\"warmup\":%d,"
              "\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,\"mean\":%.1f,"
              "\"commits_per_s\":%.0f,\"final_flush_ms\":%.1f,\"final_flush_rc\":%d}\n",
              mode.c_str(), dirty, seg_size, r, count, warmup, Pct(sorted, 50), Pct(sorted, 90),
              Pct(sorted, 99), Pct(sorted, 99.9), sorted.empty() ? 0 : sorted.back(), mean,
              (warmup + count) / t_loop, flush * 1e3, flush_rc);
  ckpt_close(s);
  if (!a.has("keep")) Delete(c, name);
  ckpt_disconnect(c);
  return 0;
}

int DeltaBench(const Args& a) {
  uint64_t big = a.size("segment-size", 1ull << 30);
  uint64_t dirty = a.size("dirty", 1 << 20);
  uint32_t r = static_cast<uint32_t>(a.num("replicas", 1));
  int repeat = static_cast<int>(a.num("repeat", 5));
  std::string big_name = a.str("name", Unique("bench-delta-big"));
  std::string small_name = Unique("bench-delta-small");
  ckpt_client_t* c = Connect();
  std::mt19937_64 rng(42);

  ckpt_segment_t* b = Create(c, big_name, big, r);
  Fill(b, 0, big, 1);
  double initial = Commit(c, b, CKPT_COMMIT_SYNC | CKPT_COMMIT_ALL);
  std::vector<double> big_secs;
  uint64_t sent0 = Status(c).bytes_sent;
  for (int i = 0; i < repeat; i++) {
    uint64_t blocks = (big - dirty) / 65536;
    uint64_t off = (blocks ? rng() % blocks : 0) * 65536;
    Fill(b, off, dirty, i + 2);
    if (int rc = ckpt_mark_dirty(b, off, dirty); rc < 0) Die("mark_dirty", rc, c);
    big_secs.push_back(Commit(c, b, CKPT_COMMIT_SYNC));
  }
  uint64_t big_sent = (Status(c).bytes_sent - sent0) / repeat;
  ckpt_close(b);

  ckpt_segment_t* s = Create(c, small_name, dirty, r);
  Fill(s, 0, dirty, 1);
  Commit(c, s, CKPT_COMMIT_SYNC | CKPT_COMMIT_ALL);
  std::vector<double> small_secs;
  for (int i = 0; i < repeat; i++) {
    Fill(s, 0, dirty, i + 2);
    small_secs.push_back(Commit(c, s, CKPT_COMMIT_SYNC | CKPT_COMMIT_ALL));
  }
  ckpt_close(s);
  Delete(c, small_name);
  double mb = Median(big_secs), ms = Median(small_secs);
  std::printf("{\"bench\":\"delta\",\"segment_bytes\":%" PRIu64 ",\"dirty_bytes\":%" PRIu64
              ",\"replicas\":%u,\"repeat\":%d,\"initial_full_seconds\":%.3f,"
              "\"initial_full_MBps\":%.1f,\"delta_seconds\":%s,\"delta_ms_median\":%.3f,"
              "\"delta_bytes_sent\":%" PRIu64
              ",\"small_whole_seconds\":%s,"
              "\"small_whole_ms_median\":%.3f,\"ratio\":%.3f,\"big_name\":\"%s\"}\n",
              big, dirty, r, repeat, initial, big / initial / 1e6, List(big_secs, 6).c_str(),
              mb * 1e3, big_sent, List(small_secs, 6).c_str(), ms * 1e3, ms > 0 ? mb / ms : 0,
              big_name.c_str());
  if (!a.has("keep")) Delete(c, big_name);
  ckpt_disconnect(c);
  return 0;
}

int Prep(const Args& a) {
  std::string name = a.str("name", "");
  if (name.empty()) return 2;
  uint64_t size = a.size("size", 64 << 20);
  uint32_t r = static_cast<uint32_t>(a.num("replicas", 1));
  ckpt_client_t* c = Connect();
  ckpt_segment_t* s = Create(c, name, size, r);
  Fill(s, 0, size, 1);
  double secs = Commit(c, s, CKPT_COMMIT_SYNC | CKPT_COMMIT_ALL);
  ckpt_close(s);
  ckpt_segment_info_t info;
  if (int rc = ckpt_stat(c, name.c_str(), &info); rc < 0) Die("stat", rc, c);
  std::string holders = "[";
  bool first = true;
  for (uint32_t i = 0; i < info.n_holders && i < 16; i++) {
    const auto& h = info.holders[i];
    if (h.version.epoch == info.latest.epoch && h.version.seq == info.latest.seq && !h.is_owner) {
      holders += (first ? "" : ",") + std::to_string(h.nodeid);
      first = false;
    }
  }
  holders += "]";
  std::printf("{\"bench\":\"prep\",\"name\":\"%s\",\"size_bytes\":%" PRIu64
              ",\"owner\":%u,\"replica_holders\":%s,\"seconds\":%.3f}\n",
              name.c_str(), size, info.owner_nodeid, holders.c_str(), secs);
  ckpt_disconnect(c);
  return 0;
}

int Pull(const Args& a) {
  std::string name = a.str("name", "");
  if (name.empty()) return 2;
  uint32_t timeout_ms = static_cast<uint32_t>(a.num("timeout", 120) * 1000);
  ckpt_client_t* c = Connect();
  uint64_t recv0 = Status(c).bytes_received;
  ckpt_version_t v{};
  double t0 = Now();
  int rc = ckpt_pull(c, name.c_str(), timeout_ms, &v);
  double secs = Now() - t0;
  if (rc < 0) Die("pull " + name, rc, c);
  uint64_t recv = Status(c).bytes_received - recv0;
  ckpt_segment_info_t info;
  uint64_t size = 0;
  if (ckpt_stat(c, name.c_str(), &info) == 0) size = info.size;
  std::printf("{\"bench\":\"pull\",\"name\":\"%s\",\"rc\":%d,\"size_bytes\":%" PRIu64
              ",\"seconds\":%.6f,\"ms\":%.3f,\"bytes_received\":%" PRIu64 ",\"version\":\"%" PRIu64
              ".%" PRIu64 "\"}\n",
              name.c_str(), rc, size, secs, secs * 1e3, recv, v.epoch >> 32, v.seq);
  ckpt_disconnect(c);
  return 0;
}

int Catalog(const Args& a) {
  int count = static_cast<int>(a.num("count", 1000));
  uint64_t size = a.size("size", 4096);
  uint32_t r = static_cast<uint32_t>(a.num("replicas", 1));
  std::string prefix = a.str("prefix", "bench-cat");
  ckpt_client_t* c = Connect();
  double t0 = Now();
  for (int i = 0; i < count; i++) {
    std::string name = prefix + "-" + std::to_string(i);
    ckpt_segment_t* s = Create(c, name, size, r);
    Fill(s, 0, size, i + 1);
    if (int rc = ckpt_commit(s, CKPT_COMMIT_ALL, 0, nullptr); rc < 0) Die("commit " + name, rc, c);
    ckpt_close(s);
  }
  double secs = Now() - t0;
  std::printf("{\"bench\":\"catalog\",\"segments\":%d,\"size_bytes\":%" PRIu64
              ",\"replicas\":%u,\"create_seconds\":%.3f,\"creates_per_s\":%.0f}\n",
              count, size, r, secs, count / secs);
  ckpt_disconnect(c);
  return 0;
}

// Polls the local ckptd (20 ms) until the conditions hold; connects as soon as ckptd is up.
int Wait(const Args& a) {
  double timeout = a.num("timeout", 300);
  uint64_t segs = static_cast<uint64_t>(a.num("segments", 0));
  uint32_t members = static_cast<uint32_t>(a.num("members", 0));
  bool replicated = a.has("replicated");
  double t0 = Now(), end = t0 + timeout;
  ckpt_client_t* c = Connect(timeout);
  double t_conn = Now() - t0;
  ckpt_cluster_info_t info{};
  bool ok = false;
  while (true) {
    if (int rc = ckpt_cluster_status(c, &info); rc < 0) Die("cluster_status", rc, c);
    ok = info.joined && info.segments >= segs && (members == 0 || info.n_members == members) &&
         (!replicated || info.under_replicated == 0);
    if (ok || Now() > end) break;
    usleep(20000);
  }
  std::printf(
      "{\"bench\":\"wait\",\"ok\":%s,\"seconds\":%.3f,\"connect_seconds\":%.3f,"
      "\"segments\":%" PRIu64 ",\"members\":%u,\"under_replicated\":%" PRIu64 "}\n",
      ok ? "true" : "false", Now() - t0, t_conn, info.segments, info.n_members,
      info.under_replicated);
  ckpt_disconnect(c);
  return ok ? 0 : 1;
}

int StatusCmd(const Args&) {
  ckpt_client_t* c = Connect();
  ckpt_cluster_info_t i = Status(c);
  std::printf(
      "{\"bench\":\"status\",\"self_nodeid\":%u,\"joined\":%s,\"members\":%u,"
      "\"segments\":%" PRIu64 ",\"segments_owned\":%" PRIu64 ",\"segments_held\":%" PRIu64
      ",\"bytes_held\":%" PRIu64 ",\"bytes_sent\":%" PRIu64 ",\"bytes_received\":%" PRIu64
      ",\"under_replicated\":%" PRIu64 "}\n",
      i.self_nodeid, i.joined ? "true" : "false", i.n_members, i.segments, i.segments_owned,
      i.segments_held, i.bytes_held, i.bytes_sent, i.bytes_received, i.under_replicated);
  ckpt_disconnect(c);
  return 0;
}

int DeleteCmd(const Args& a) {
  ckpt_client_t* c = Connect();
  for (const auto& n : a.pos) Delete(c, n);
  ckpt_disconnect(c);
  return 0;
}

int Usage() {
  std::fprintf(stderr,
               "usage: ckpt_bench replicate --size B --replicas R [--segments N] [--rounds K] "
               "[--repeat K] [--timeout S] [--compress] [--pattern fill|text|random]\n"
               "       ckpt_bench latency --dirty B --mode async|sync --count N [--replicas R]\n"
               "       ckpt_bench delta --segment-size B --dirty B [--replicas R] [--repeat K] "
               "[--keep] [--name N]\n"
               "       ckpt_bench prep --name N --size B --replicas R\n"
               "       ckpt_bench pull --name N [--timeout S]\n"
               "       ckpt_bench catalog --count N [--size B] [--replicas R] [--prefix P]\n"
               "       ckpt_bench wait [--segments N] [--members M] [--replicated] [--timeout S]\n"
               "       ckpt_bench status | delete NAME...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  std::string cmd = argv[1];
  Args a;
  for (int i = 2; i < argc; i++) {
    std::string s = argv[i];
    if (s.rfind("--", 0) == 0) {
      std::string k = s.substr(2);
      if (k == "keep" || k == "replicated" || k == "compress")
        a.opt[k] = "1";
      else if (i + 1 < argc)
        a.opt[k] = argv[++i];
      else
        return Usage();
    } else {
      a.pos.push_back(s);
    }
  }
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (cmd == "replicate") return Replicate(a);
  if (cmd == "latency") return Latency(a);
  if (cmd == "delta") return DeltaBench(a);
  if (cmd == "prep") return Prep(a);
  if (cmd == "pull") return Pull(a);
  if (cmd == "catalog") return Catalog(a);
  if (cmd == "wait") return Wait(a);
  if (cmd == "status") return StatusCmd(a);
  if (cmd == "delete") return DeleteCmd(a);
  return Usage();
}
