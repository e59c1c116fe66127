// ckpt-demo: a small application that keeps its whole state in a ckpt segment, to show (and test)
// what survives a Pacemaker failover.  See demo/README.md for the command line (kept stable: the
// cluster tests and scripts/demo use it).
//
// The state is one fixed-layout struct at offset 0 of the segment: magic and format version, a
// counter incremented every tick, when and on which node it was last committed, the node and time
// of every start (the last kStarts), the last kEvents events as text records, and a checksum of
// all of it.  Every tick commits asynchronously; every --sync-every-ms a commit waits until the
// replicas acknowledged it.  SIGTERM/SIGINT: a final synchronous commit, then exit 0.
#include <ckpt/ckpt.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>

namespace {

// ---- the state kept in the segment ----------------------------------------------------------

constexpr uint32_t kMagic = 0x4d454443;  // "CDEM" little-endian
constexpr uint32_t kFormat = 1;
constexpr uint64_t kSegmentSize = 64 * 1024;  // fixed: an open with another size fails
constexpr int kEvents = 16;
constexpr int kStarts = 8;
constexpr int kText = 64;
constexpr int kNode = 32;

struct StartRecord {
  char node[kNode];
  int64_t unix_ms;
  uint64_t counter;  // the counter it started from
};

struct State {
  uint32_t magic;
  uint32_t format;
  uint64_t counter;              // ticks so far, over all runs
  int64_t last_commit_unix_ms;   // when the last commit was taken
  char last_node[kNode];         // node that took it
  uint64_t starts;               // starts so far; start_log[(starts-1) % kStarts] is the latest
  StartRecord start_log[kStarts];
  uint64_t events;               // events so far; event_log[(events-1) % kEvents] is the latest
  char event_log[kEvents][kText];
  uint64_t checksum;             // FNV-1a 64 of every byte before this field
};
static_assert(std::is_trivially_copyable_v<State>);
static_assert(sizeof(State) <= kSegmentSize);

uint64_t Checksum(const State& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(&s);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < offsetof(State, checksum); ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

bool AllZero(const State& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(&s);
  for (size_t i = 0; i < sizeof s; ++i)
    if (p[i]) return false;
  return true;
}

enum class Validity { kEmpty, kValid, kBadMagic, kBadFormat, kBadChecksum };

Validity Validate(const State& s) {
  if (AllZero(s)) return Validity::kEmpty;
  if (s.magic != kMagic) return Validity::kBadMagic;
  if (s.format != kFormat) return Validity::kBadFormat;
  if (s.checksum != Checksum(s)) return Validity::kBadChecksum;
  return Validity::kValid;
}

const char* ValidityText(Validity v) {
  switch (v) {
    case Validity::kEmpty: return "empty";
    case Validity::kValid: return "valid";
    case Validity::kBadMagic: return "not ckpt-demo state (bad magic)";
    case Validity::kBadFormat: return "unsupported format version";
    case Validity::kBadChecksum: return "checksum mismatch (corrupt)";
  }
  return "?";
}

// ---- small helpers ------------------------------------------------------------------------------

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "2024-11-25 12:00:01.234" (with_date) or "12:00:01.234", local time.
std::string FormatTime(int64_t unix_ms, bool with_date) {
  if (unix_ms <= 0) return "never";
  time_t t = static_cast<time_t>(unix_ms / 1000);
  struct tm tm {};
  localtime_r(&t, &tm);
  char buf[64];
  strftime(buf, sizeof buf, with_date ? "%Y-%m-%d %H:%M:%S" : "%H:%M:%S", &tm);
  char out[80];
  snprintf(out, sizeof out, "%s.%03d", buf, static_cast<int>(unix_ms % 1000));
  return out;
}

std::string NodeName() {
  struct utsname u {};
  if (uname(&u) == 0) return u.nodename;
  return "unknown";
}

void CopyText(char* dst, size_t n, const std::string& s) {
  std::memset(dst, 0, n);
  std::memcpy(dst, s.data(), std::min(s.size(), n - 1));
}

// As ckptctl shows versions: "generation.seq" (the generation is the epoch's high 32 bits).
std::string VersionStr(const ckpt::Version& v) {
  return std::to_string(v.epoch >> 32) + "." + std::to_string(v.seq);
}

std::string Text(const char* s, size_t n) { return std::string(s, strnlen(s, n)); }

std::string JsonEscape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else {
      o += c;
    }
  }
  return o;
}

// The log: one line per write(2) on an O_APPEND fd, so that a crash loses no line already logged.
int g_log_fd = STDOUT_FILENO;
std::string g_node;

void Log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Log(const char* fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  std::string line = FormatTime(NowUnixMs(), true) + " " + g_node + " ckpt-demo[" +
                     std::to_string(getpid()) + "]: " + msg + "\n";
  ssize_t r = write(g_log_fd, line.data(), line.size());
  (void)r;
}

// ---- options ------------------------------------------------------------------------------------

struct Options {
  std::string segment = "demo";
  long interval_ms = 200;
  long sync_every_ms = 5000;
  long sync_timeout_ms = 10000;
  uint32_t replicas = 0;
  bool pull = false;
  bool status = false;
  bool json = false;
  std::string log_file;
  std::string pid_file;
};

constexpr const char* kUsage =
    "Usage: ckpt-demo [--segment NAME] [--interval-ms MS] [--sync-every-ms MS]\n"
    "                 [--sync-timeout-ms MS] [--replicas R] [--pull] [--log FILE] [--pid-file FILE]\n"
    "       ckpt-demo --status [--json] [--segment NAME]\n"
    "\n"
    "Runs a counter whose whole state lives in the ckpt segment NAME (default \"demo\"), opened\n"
    "with CKPT_OPEN_CREATE: every tick (--interval-ms, default 200) it increments the counter,\n"
    "records the event and commits asynchronously; every --sync-every-ms (default 5000) it\n"
    "commits synchronously (waits, up to --sync-timeout-ms, default 10000, for the replicas).\n"
    "At start it validates the restored state and says what it found.  SIGTERM/SIGINT: a final\n"
    "synchronous commit, then exit 0.  --pull pulls the segment here first (without the\n"
    "ocf:ckpt:checkpoint agent).  --log appends the log to FILE (default stdout); --pid-file is\n"
    "written once the segment is open and the first commit is taken (removed at exit).\n"
    "\n"
    "--status prints the newest replicated state (ckpt_read; does not take ownership).\n"
    "Exit codes: 0 ok, 1 error (or invalid state with --status), 2 usage, 4 no checkpoint\n"
    "(--status), 5 ckptd unreachable, 8 fenced (another node took the segment over).\n";

bool ParseLong(const char* s, long lo, long hi, long* out) {
  char* end = nullptr;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

[[noreturn]] void Usage(const std::string& msg) {
  fprintf(stderr, "ckpt-demo: %s\n%s", msg.c_str(), kUsage);
  exit(2);
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string val;
    bool has_val = false;
    if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      val = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_val = true;
    }
    auto need = [&]() -> std::string {
      if (has_val) return val;
      if (i + 1 >= argc) Usage(a + " needs a value");
      return argv[++i];
    };
    auto num = [&](long lo, long hi) {
      std::string v = need();
      long n;
      if (!ParseLong(v.c_str(), lo, hi, &n))
        Usage(a + ": '" + v + "' is not a number in " + std::to_string(lo) + ".." +
              std::to_string(hi));
      return n;
    };
    if (a == "-h" || a == "--help") {
      fputs(kUsage, stdout);
      exit(0);
    } else if (a == "--segment") {
      o.segment = need();
    } else if (a == "--interval-ms") {
      o.interval_ms = num(10, 3600000);
    } else if (a == "--sync-every-ms") {
      o.sync_every_ms = num(0, 86400000);
    } else if (a == "--sync-timeout-ms") {
      o.sync_timeout_ms = num(1, 3600000);
    } else if (a == "--replicas") {
      o.replicas = static_cast<uint32_t>(num(0, 127));
    } else if (a == "--pull") {
      o.pull = true;
    } else if (a == "--status") {
      o.status = true;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--log") {
      o.log_file = need();
    } else if (a == "--pid-file") {
      o.pid_file = need();
    } else {
      Usage("unknown argument '" + std::string(argv[i]) + "'");
    }
  }
  if (o.segment.empty()) Usage("--segment must not be empty");
  if (o.json && !o.status) Usage("--json goes with --status");
  return o;
}

int ExitCodeFor(const ckpt::Error& e) {
  switch (e.code()) {
    case CKPT_ERR_UNAVAILABLE: return 5;
    case CKPT_ERR_FENCED:
    case CKPT_ERR_NOT_OWNER: return 8;
    case CKPT_ERR_NOT_FOUND: return 4;
    default: return 1;
  }
}

// ---- --status -------------------------------------------------------------------------------------

int Status(const Options& o) {
  State s{};
  ckpt::Version v;
  try {
    ckpt::Client client;
    if (!client.read_into(o.segment, 0, &s, sizeof s, std::nullopt, &v)) {
      if (o.json) printf("{\"segment\":\"%s\",\"checkpoint\":false}\n", JsonEscape(o.segment).c_str());
      else printf("segment %s: no checkpoint yet\n", o.segment.c_str());
      return 4;
    }
  } catch (const ckpt::Error& e) {
    if (e.code() == CKPT_ERR_NOT_FOUND) {
      if (o.json) printf("{\"segment\":\"%s\",\"checkpoint\":false}\n", JsonEscape(o.segment).c_str());
      else printf("segment %s does not exist\n", o.segment.c_str());
      return 4;
    }
    fprintf(stderr, "ckpt-demo: %s\n", e.what());
    return ExitCodeFor(e);
  }
  Validity val = Validate(s);
  bool ok = val == Validity::kValid;
  if (o.json) {
    printf("{\"segment\":\"%s\",\"checkpoint\":true,\"version\":\"%s\",\"valid\":%s,\"state\":\"%s\"",
           JsonEscape(o.segment).c_str(), VersionStr(v).c_str(), ok ? "true" : "false",
           ValidityText(val));
    if (ok) {
      printf(",\"counter\":%llu,\"last_commit_unix_ms\":%lld,\"last_node\":\"%s\",\"starts\":%llu",
             static_cast<unsigned long long>(s.counter), static_cast<long long>(s.last_commit_unix_ms),
             JsonEscape(Text(s.last_node, kNode)).c_str(), static_cast<unsigned long long>(s.starts));
      printf(",\"start_log\":[");
      uint64_t first = s.starts > kStarts ? s.starts - kStarts : 0;
      for (uint64_t i = first; i < s.starts; ++i) {
        const StartRecord& r = s.start_log[i % kStarts];
        printf("%s{\"node\":\"%s\",\"unix_ms\":%lld,\"counter\":%llu}", i == first ? "" : ",",
               JsonEscape(Text(r.node, kNode)).c_str(), static_cast<long long>(r.unix_ms),
               static_cast<unsigned long long>(r.counter));
      }
      printf("],\"events\":[");
      first = s.events > kEvents ? s.events - kEvents : 0;
      for (uint64_t i = first; i < s.events; ++i)
        printf("%s\"%s\"", i == first ? "" : ",", JsonEscape(Text(s.event_log[i % kEvents], kText)).c_str());
      printf("]");
    }
    printf("}\n");
    return ok ? 0 : 1;
  }
  if (!ok) {
    printf("segment %s version %s: the state is %s\n", o.segment.c_str(), VersionStr(v).c_str(),
           ValidityText(val));
    return 1;
  }
  printf("segment %s version %s: counter=%llu, last committed at %s by %s\n", o.segment.c_str(),
         VersionStr(v).c_str(), static_cast<unsigned long long>(s.counter),
         FormatTime(s.last_commit_unix_ms, true).c_str(), Text(s.last_node, kNode).c_str());
  printf("starts (%llu in all):\n", static_cast<unsigned long long>(s.starts));
  uint64_t first = s.starts > kStarts ? s.starts - kStarts : 0;
  for (uint64_t i = first; i < s.starts; ++i) {
    const StartRecord& r = s.start_log[i % kStarts];
    printf("  on %s at %s from counter=%llu\n", Text(r.node, kNode).c_str(),
           FormatTime(r.unix_ms, true).c_str(), static_cast<unsigned long long>(r.counter));
  }
  printf("last events:\n");
  first = s.events > kEvents ? s.events - kEvents : 0;
  for (uint64_t i = first; i < s.events; ++i) printf("  %s\n", Text(s.event_log[i % kEvents], kText).c_str());
  return 0;
}

// ---- the application ----------------------------------------------------------------------------

void AddEvent(State* s, const std::string& text) {
  CopyText(s->event_log[s->events % kEvents], kText, text);
  s->events++;
}

int Run(const Options& o) {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigprocmask(SIG_BLOCK, &sigs, nullptr);  // taken with sigtimedwait() between ticks

  ckpt::Client client;
  ckpt::OpenOptions oo;
  oo.size = kSegmentSize;
  oo.create = true;
  oo.pull = o.pull;
  oo.replicas = o.replicas;
  ckpt::Segment seg = client.open(o.segment, oo);
  auto* st = reinterpret_cast<State*>(seg.data());
  ckpt::Version opened = seg.version();

  Validity val = Validate(*st);
  const int64_t start_ms = NowUnixMs();
  switch (val) {
    case Validity::kValid:
      Log("restored counter=%llu (last committed at %s, by node %s; version %s)",
          static_cast<unsigned long long>(st->counter),
          FormatTime(st->last_commit_unix_ms, true).c_str(), Text(st->last_node, kNode).c_str(),
          VersionStr(opened).c_str());
      break;
    case Validity::kEmpty:
      Log("no checkpoint: starting fresh (segment %s, version %s)", o.segment.c_str(),
          VersionStr(opened).c_str());
      *st = State{};
      st->magic = kMagic;
      st->format = kFormat;
      break;
    default:
      // Never overwrite state we do not understand: refuse, and let the operator decide.
      Log("error: segment %s version %s holds invalid state: %s; refusing to start (delete the "
          "segment with 'ckptctl delete %s' to start over)",
          o.segment.c_str(), VersionStr(opened).c_str(), ValidityText(val), o.segment.c_str());
      return 1;
  }

  StartRecord& r = st->start_log[st->starts % kStarts];
  std::memset(&r, 0, sizeof r);
  CopyText(r.node, kNode, g_node);
  r.unix_ms = start_ms;
  r.counter = st->counter;
  st->starts++;
  AddEvent(st, "start " + std::to_string(st->starts) + " on " + g_node + " at " +
                   FormatTime(start_ms, false) + " counter=" + std::to_string(st->counter));

  auto commit = [&](bool sync) -> ckpt::Version {
    st->last_commit_unix_ms = NowUnixMs();
    CopyText(st->last_node, kNode, g_node);
    st->checksum = Checksum(*st);
    seg.mark_dirty(0, sizeof(State));
    return sync ? seg.commit_sync(std::chrono::milliseconds(o.sync_timeout_ms)) : seg.commit();
  };

  // A sync commit that times out (replicas missing or slow) is not fatal: the version is
  // committed locally and ckptd keeps replicating it.  Fencing is fatal: another node owns it now.
  auto sync_commit = [&](const char* why) {
    try {
      ckpt::Version v = commit(true);
      Log("synced counter=%llu version=%s (%s; acknowledged by the replicas)",
          static_cast<unsigned long long>(st->counter), VersionStr(v).c_str(), why);
      return true;
    } catch (const ckpt::Error& e) {
      if (e.code() == CKPT_ERR_TIMEOUT || e.code() == CKPT_ERR_REPLICAS) {
        Log("warning: counter=%llu is committed here but not acknowledged by the replicas: %s",
            static_cast<unsigned long long>(st->counter), e.what());
        return false;
      }
      throw;
    }
  };

  sync_commit("start");
  if (!o.pid_file.empty()) {
    std::string tmp = o.pid_file + ".tmp";
    FILE* f = fopen(tmp.c_str(), "w");
    if (!f || fprintf(f, "%d\n", static_cast<int>(getpid())) < 0 || fclose(f) != 0 ||
        rename(tmp.c_str(), o.pid_file.c_str()) != 0) {
      Log("error: cannot write the pid file %s: %s", o.pid_file.c_str(), strerror(errno));
      return 1;
    }
  }
  Log("running: segment %s, a tick every %ld ms, a synchronous commit every %ld ms",
      o.segment.c_str(), o.interval_ms, o.sync_every_ms);

  using Clock = std::chrono::steady_clock;
  const auto interval = std::chrono::milliseconds(o.interval_ms);
  auto next_tick = Clock::now() + interval;
  auto next_sync = Clock::now() + std::chrono::milliseconds(o.sync_every_ms);
  int rc = 0;
  for (;;) {
    auto left = next_tick - Clock::now();
    if (left.count() < 0) left = Clock::duration::zero();
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    struct timespec ts = {static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    int sig = sigtimedwait(&sigs, nullptr, &ts);
    if (sig == SIGTERM || sig == SIGINT) {
      Log("got %s: final synchronous commit", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      AddEvent(st, "stop on " + g_node + " at " + FormatTime(NowUnixMs(), false) +
                       " counter=" + std::to_string(st->counter));
      sync_commit("stop");  // a timeout is still a clean stop: ckptd keeps replicating it
      break;
    }
    if (sig < 0 && errno != EAGAIN && errno != EINTR) {
      Log("error: sigtimedwait: %s", strerror(errno));
      rc = 1;
      break;
    }
    if (Clock::now() < next_tick) continue;
    next_tick += interval;
    if (next_tick < Clock::now()) next_tick = Clock::now() + interval;  // fell behind: no burst

    st->counter++;
    int64_t now = NowUnixMs();
    AddEvent(st, "tick " + std::to_string(st->counter) + " on " + g_node + " at " +
                     FormatTime(now, false));
    if (o.sync_every_ms > 0 && Clock::now() >= next_sync) {
      next_sync = Clock::now() + std::chrono::milliseconds(o.sync_every_ms);
      sync_commit("periodic");
    } else {
      ckpt::Version v = commit(false);
      Log("tick counter=%llu version=%s", static_cast<unsigned long long>(st->counter),
          VersionStr(v).c_str());
    }
  }
  if (!o.pid_file.empty()) unlink(o.pid_file.c_str());
  Log("exiting (counter=%llu)", static_cast<unsigned long long>(st->counter));
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = ParseArgs(argc, argv);
  g_node = NodeName();
  if (o.status) return Status(o);
  if (!o.log_file.empty()) {
    g_log_fd = open(o.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (g_log_fd < 0) {
      fprintf(stderr, "ckpt-demo: cannot open the log %s: %s\n", o.log_file.c_str(), strerror(errno));
      return 1;
    }
  }
  try {
    return Run(o);
  } catch (const ckpt::Error& e) {
    if (e.code() == CKPT_ERR_FENCED)
      Log("error: fenced: another node took the segment over; stopping (%s)", e.what());
    else
      Log("error: %s", e.what());
    if (!o.pid_file.empty()) unlink(o.pid_file.c_str());
    return ExitCodeFor(e);
  }
}
