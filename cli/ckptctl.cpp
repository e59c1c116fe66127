// ckptctl: command-line client of ckptd (git-style subcommands), built on libckpt only.
//
// Exit codes (also printed by `ckptctl --help`):
//   0 success                 1 operation failed          2 usage error (bad option/argument/name)
//   3 not found               4 no checkpoint exists (pull, get)
//   5 ckptd unavailable       6 timeout                   7 permission denied
//   8 conflict or fenced (another node won / owns the segment now)
// `ckptctl monitor NAME` is for the OCF agent and exits with OCF codes instead
// (pacemaker's enum ocf_exitcode): PCMK_OCF_OK when this node owns NAME and ckptd is healthy,
// PCMK_OCF_NOT_RUNNING when it is not owned here (or does not exist), PCMK_OCF_UNKNOWN_ERROR when
// ckptd is unreachable or not in the cluster, PCMK_OCF_NOT_CONFIGURED for an invalid name.
//
// Messages: one line each, on stderr, prefixed "ckptctl: ".  Results go to stdout (aligned
// tables, or JSON with --json).
#include <ckpt/ckpt.h>
#include <crm/common/results.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/names.hpp"  // header-only: the segment name rule

namespace po = boost::program_options;

namespace {

enum Exit : int {
  kExitOk = 0,
  kExitFailed = 1,
  kExitUsage = 2,
  kExitNotFound = 3,
  kExitNoCheckpoint = 4,
  kExitUnavailable = 5,
  kExitTimeout = 6,
  kExitPermission = 7,
  kExitConflict = 8,
};

constexpr const char* kExitTable =
    "Exit codes:\n"
    "  0  success\n"
    "  1  operation failed\n"
    "  2  usage error (bad option, argument or segment name)\n"
    "  3  segment or version not found\n"
    "  4  no checkpoint exists (pull, get): start fresh\n"
    "  5  ckptd unavailable (not running, not reachable or not in the cluster)\n"
    "  6  timeout\n"
    "  7  permission denied\n"
    "  8  conflict or fenced (another node won or owns the segment)\n"
    "  monitor exits with OCF codes: 0 owned here, 7 not owned here, 1 ckptd unreachable,\n"
    "  6 invalid segment name.\n";

int ExitFor(int rc) {
  switch (rc) {
    case CKPT_OK:
      return kExitOk;
    case CKPT_NO_CHECKPOINT:
      return kExitNoCheckpoint;
    case CKPT_ERR_NAME:
      return kExitUsage;
    case CKPT_ERR_NOT_FOUND:
      return kExitNotFound;
    case CKPT_ERR_UNAVAILABLE:
      return kExitUnavailable;
    case CKPT_ERR_TIMEOUT:
      return kExitTimeout;
    case CKPT_ERR_PERMISSION:
      return kExitPermission;
    case CKPT_ERR_CONFLICT:
    case CKPT_ERR_FENCED:
      return kExitConflict;
    default:
      return kExitFailed;
  }
}

void Msg(const std::string& text) { std::cerr << "ckptctl: " << text << "\n"; }

// Prints "ckptctl: what: detail" for a failed call and returns the exit code.
int Report(int rc, const ckpt_client_t* c, const std::string& what) {
  const char* detail = ckpt_last_error(c);
  Msg(what + ": " + ((detail && *detail) ? detail : ckpt_strerror(rc)));
  return ExitFor(rc);
}

struct ClientDeleter {
  void operator()(ckpt_client_t* c) const { ckpt_disconnect(c); }
};
using ClientPtr = std::unique_ptr<ckpt_client_t, ClientDeleter>;

// Connects or reports; *exit_code receives the failure's exit code.
ClientPtr Connect(int* exit_code) {
  ckpt_client_t* c = nullptr;
  int rc = ckpt_connect(&c);
  if (rc < 0) {
    const char* detail = ckpt_last_error(nullptr);
    Msg((detail && *detail) ? detail : ckpt_strerror(rc));
    *exit_code = ExitFor(rc);
    return nullptr;
  }
  return ClientPtr(c);
}

// ---- output helpers -------------------------------------------------------------------------

std::string JsonStr(const std::string& s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (ch < 0x20 || ch == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", ch);
          out += buf;
        } else {
          out += static_cast<char>(ch);  // UTF-8 passes through
        }
    }
  }
  return out + "\"";
}

// Users see GENERATION.SEQ: an epoch is generation << 32 | claiming nodeid (see PROTOCOL.md).
std::string VersionStr(const ckpt_version_t& v) {
  return std::to_string(v.epoch >> 32) + "." + std::to_string(v.seq);
}
std::string JsonVersion(const ckpt_version_t& v) {
  return "{\"epoch\":" + std::to_string(v.epoch) + ",\"seq\":" + std::to_string(v.seq) + "}";
}
std::string Octal(uint32_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0%03o", mode);
  return buf;
}
const char* DurabilityName(uint32_t d) {
  switch (d) {
    case CKPT_DURABILITY_MEMORY:
      return "memory";
    case CKPT_DURABILITY_FSYNC:
      return "fsync";
    case CKPT_DURABILITY_DEFAULT:
      return "default";
    default:
      return "unknown";
  }
}
std::string NodeStr(uint32_t nodeid, const char* name) {
  if (nodeid == 0) return "-";
  return (name && *name) ? std::string(name) : "node " + std::to_string(nodeid);
}
std::string TimeStr(uint64_t unix_ms) {
  if (unix_ms == 0) return "-";
  time_t t = static_cast<time_t>(unix_ms / 1000);
  struct tm tm {};
  localtime_r(&t, &tm);
  char buf[64];
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

// Aligned text table: columns separated by two spaces, last column not padded.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print(std::ostream& os, const std::string& indent = "") const {
    std::vector<size_t> w;
    for (auto& r : rows_)
      for (size_t i = 0; i < r.size(); i++) {
        if (w.size() <= i) w.push_back(0);
        w[i] = std::max(w[i], r[i].size());
      }
    for (auto& r : rows_) {
      std::string line = indent;
      for (size_t i = 0; i < r.size(); i++) {
        line += r[i];
        if (i + 1 < r.size()) line += std::string(w[i] - r[i].size() + 2, ' ');
      }
      os << line << "\n";
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

// ---- commands -------------------------------------------------------------------------------

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Command {
  const char* name;
  const char* args;     // usage after the name
  const char* summary;  // one line
  std::function<void(po::options_description&)> options;
  std::vector<std::pair<const char*, int>> positional;  // name, max count (-1 = unlimited)
  std::function<int(const po::variables_map&)> run;
};

uint32_t TimeoutMs(const po::variables_map& vm) {
  if (!vm.count("timeout")) return 0;
  double s = vm["timeout"].as<double>();
  if (!(s >= 0) || s > 4294967.0)
    throw UsageError("--timeout must be between 0 and 4294967 seconds");
  return static_cast<uint32_t>(std::llround(s * 1000));
}

// The NAME argument, checked locally (same rule as ckptd) so a bad name is a usage error.
std::string Name(const po::variables_map& vm) {
  if (!vm.count("name")) throw UsageError("missing segment NAME");
  std::string name = vm["name"].as<std::string>();
  if (ckpt::Status st = ckpt::ValidateSegmentName(name); !st.ok())
    throw UsageError("invalid segment name '" + name + "': " + st.message());
  return name;
}

void AddTimeout(po::options_description& d, const char* what) {
  d.add_options()("timeout", po::value<double>()->value_name("S"), what);
}
void AddJson(po::options_description& d) {
  d.add_options()("json", po::bool_switch(), "print JSON");
}

int CmdStatus(const po::variables_map& vm) {
  int ec = 0;
  ClientPtr c = Connect(&ec);
  if (!c) return ec;
  ckpt_cluster_info_t info;
  if (int rc = ckpt_cluster_status(c.get(), &info); rc < 0) return Report(rc, c.get(), "status");
  std::string self_name;
  for (uint32_t i = 0; i < info.n_members; i++)
    if (info.members[i].is_self) self_name = info.members[i].node_name;
  if (vm["json"].as<bool>()) {
    std::ostringstream o;
    o << "{\"self_nodeid\":" << info.self_nodeid << ",\"self_name\":" << JsonStr(self_name)
      << ",\"joined\":" << (info.joined ? "true" : "false") << ",\"members\":[";
    for (uint32_t i = 0; i < info.n_members; i++) {
      const auto& m = info.members[i];
      o << (i ? "," : "") << "{\"nodeid\":" << m.nodeid << ",\"name\":" << JsonStr(m.node_name)
        << ",\"eligible\":" << (m.eligible ? "true" : "false")
        << ",\"self\":" << (m.is_self ? "true" : "false") << "}";
    }
    o << "],\"segments\":" << info.segments << ",\"segments_owned\":" << info.segments_owned
      << ",\"segments_held\":" << info.segments_held << ",\"bytes_held\":" << info.bytes_held
      << ",\"bytes_sent\":" << info.bytes_sent << ",\"bytes_received\":" << info.bytes_received
      << ",\"messages_dropped\":" << info.messages_dropped
      << ",\"under_replicated\":" << info.under_replicated << "}\n";
    std::cout << o.str();
    return kExitOk;
  }
  Table t({"this node:", NodeStr(info.self_nodeid, self_name.c_str()) + " (id " +
                             std::to_string(info.self_nodeid) + ")"});
  t.Add({"joined:", info.joined ? "yes" : "no (ckptd is not in the CPG group)"});
  t.Add({"members:", std::to_string(info.n_members)});
  t.Add({"segments:", std::to_string(info.segments) + " in catalog, " +
                          std::to_string(info.segments_owned) + " owned here, " +
                          std::to_string(info.segments_held) + " held here"});
  t.Add({"under-replicated:", std::to_string(info.under_replicated)});
  t.Add({"bytes held:", std::to_string(info.bytes_held)});
  t.Add({"bytes sent:", std::to_string(info.bytes_sent)});
  t.Add({"bytes received:", std::to_string(info.bytes_received)});
  t.Add({"messages dropped:", std::to_string(info.messages_dropped)});
  t.Print(std::cout);
  if (info.n_members) {
    std::cout << "\n";
    Table m({"NODEID", "NAME", "ELIGIBLE", "SELF"});
    for (uint32_t i = 0; i < info.n_members; i++) {
      const auto& x = info.members[i];
      m.Add({std::to_string(x.nodeid), x.node_name[0] ? x.node_name : "-",
             x.eligible ? "yes" : "no", x.is_self ? "*" : ""});
    }
    m.Print(std::cout, "  ");
  }
  return kExitOk;
}

std::string SegmentJson(const ckpt_segment_info_t& s) {
  std::ostringstream o;
  o << "{\"name\":" << JsonStr(s.name) << ",\"size\":" << s.size
    << ",\"owner_nodeid\":" << s.owner_nodeid << ",\"owner_name\":" << JsonStr(s.owner_name)
    << ",\"latest\":" << JsonVersion(s.latest) << ",\"epoch\":" << s.epoch
    << ",\"replicas\":" << s.replicas << ",\"versions_kept\":" << s.versions_kept
    << ",\"durability\":" << JsonStr(DurabilityName(s.durability))
    << ",\"compression\":" << JsonStr(s.compression == CKPT_COMPRESSION_ZSTD ? "zstd" : "none")
    << ",\"uid\":" << s.uid << ",\"gid\":" << s.gid << ",\"mode\":" << JsonStr(Octal(s.mode))
    << ",\"acked_replicas\":" << s.acked_replicas << ",\"holders\":[";
  for (uint32_t i = 0; i < s.n_holders && i < 16; i++) {
    const auto& h = s.holders[i];
    o << (i ? "," : "") << "{\"nodeid\":" << h.nodeid << ",\"name\":" << JsonStr(h.node_name)
      << ",\"version\":" << JsonVersion(h.version);
    if (h.version.seq <= s.latest.seq) o << ",\"lag\":" << (s.latest.seq - h.version.seq);
    o << ",\"live\":" << (h.live ? "true" : "false")
      << ",\"owner\":" << (h.is_owner ? "true" : "false")
      << ",\"target\":" << (h.is_target ? "true" : "false") << "}";
  }
  o << "]}";
  return o.str();
}

int CmdList(const po::variables_map& vm) {
  int ec = 0;
  ClientPtr c = Connect(&ec);
  if (!c) return ec;
  ckpt_segment_info_t* infos = nullptr;
  size_t n = 0;
  if (int rc = ckpt_list(c.get(), &infos, &n); rc < 0) return Report(rc, c.get(), "list");
  std::unique_ptr<ckpt_segment_info_t, decltype(&free)> guard(infos, &free);
  if (vm["json"].as<bool>()) {
    std::cout << "[";
    for (size_t i = 0; i < n; i++) std::cout << (i ? "," : "") << SegmentJson(infos[i]);
    std::cout << "]\n";
    return kExitOk;
  }
  Table t({"NAME", "SIZE", "VERSION", "OWNER", "REPLICAS", "ACKED"});
  for (size_t i = 0; i < n; i++) {
    const auto& s = infos[i];
    t.Add({s.name, std::to_string(s.size), VersionStr(s.latest),
           NodeStr(s.owner_nodeid, s.owner_name), std::to_string(s.replicas),
           std::to_string(s.acked_replicas)});
  }
  t.Print(std::cout);
  return kExitOk;
}

int CmdShow(const po::variables_map& vm) {
  std::string name = Name(vm);
  int ec = 0;
  ClientPtr c = Connect(&ec);
  if (!c) return ec;
  ckpt_segment_info_t s;
  if (int rc = ckpt_stat(c.get(), name.c_str(), &s); rc < 0)
    return Report(rc, c.get(), "show " + name);
  if (vm["json"].as<bool>()) {
    std::cout << SegmentJson(s) << "\n";
    return kExitOk;
  }
  std::string targets;
  for (uint32_t i = 0; i < s.n_holders && i < 16; i++)
    if (s.holders[i].is_target)
      targets +=
          (targets.empty() ? "" : ", ") + NodeStr(s.holders[i].nodeid, s.holders[i].node_name);
  Table t({"name:", s.name});
  t.Add({"size:", std::to_string(s.size) + " bytes"});
  t.Add({"version:", VersionStr(s.latest)});
  t.Add({"epoch:", "generation " + std::to_string(s.epoch >> 32) + ", claimed by node " +
                       std::to_string(s.epoch & 0xffffffffu)});
  t.Add({"owner:", s.owner_nodeid ? NodeStr(s.owner_nodeid, s.owner_name) + " (id " +
                                        std::to_string(s.owner_nodeid) + ")"
                                  : "none (released)"});
  t.Add({"replicas:", std::to_string(s.replicas) + " wanted, " + std::to_string(s.acked_replicas) +
                          " hold the latest version"});
  t.Add({"targets:", targets.empty() ? "-" : targets});
  t.Add({"versions kept:", std::to_string(s.versions_kept)});
  t.Add({"durability:", DurabilityName(s.durability)});
  t.Add({"compression:", s.compression == CKPT_COMPRESSION_ZSTD ? "zstd" : "none"});
  t.Add({"access:", "uid " + std::to_string(s.uid) + ", gid " + std::to_string(s.gid) + ", mode " +
                        Octal(s.mode)});
  t.Print(std::cout);
  if (s.n_holders) {
    std::cout << "\n";
    Table h({"HOLDER", "NODEID", "VERSION", "LAG", "LIVE", "ROLE"});
    for (uint32_t i = 0; i < s.n_holders && i < 16; i++) {
      const auto& x = s.holders[i];
      std::string role = x.is_owner ? "owner" : (x.is_target ? "replica" : "stale copy");
      std::string lag =
          x.version.seq <= s.latest.seq ? std::to_string(s.latest.seq - x.version.seq) : "-";
      h.Add({NodeStr(x.nodeid, x.node_name), std::to_string(x.nodeid), VersionStr(x.version), lag,
             x.live ? "yes" : "no", role});
    }
    h.Print(std::cout, "  ");
  }
  return kExitOk;
}

int CmdPull(const po::variables_map& vm) {
  std::string name = Name(vm);
  uint32_t t = TimeoutMs(vm);
  int ec = 0;
  ClientPtr c = Connect(&ec);
  if (!c) return ec;
  ckpt_version_t v{};
  int rc = ckpt_pull(c.get(), name.c_str(), t, &v);
  if (rc < 0) return Report(rc, c.get(), "pull " + name);
  if (rc == CKPT_NO_CHECKPOINT) {
    std::cout << "no checkpoint: start fresh\n";
    return kExitNoCheckpoint;
  }
  std::cout << "restored " << name << " version " << VersionStr(v) << " (owned by this node)\n";
  return kExitOk;
}

// Reads all of fd into out (for stdin and other non-regular files).
bool ReadAll(int fd, std::vector<char>* out) {
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    out->insert(out->end(), buf, buf + n);
  }
}

int CmdPut(const po::variables_map& vm) {
  std::string name = Name(vm);
  if (!vm.count("file")) throw UsageError("missing FILE");
  std::string file = vm["file"].as<std::string>();
  if (vm["sync"].as<bool>() && vm["no-sync"].as<bool>())
    throw UsageError("--sync and --no-sync exclude each other");
  const bool sync = !vm["no-sync"].as<bool>();
  ckpt_open_options_t o{};
  o.flags = CKPT_OPEN_CREATE;
  if (vm.count("replicas")) o.replicas = vm["replicas"].as<uint32_t>();
  if (vm.count("versions-kept")) o.versions_kept = vm["versions-kept"].as<uint32_t>();
  if (vm["fsync"].as<bool>()) o.durability = CKPT_DURABILITY_FSYNC;
  if (vm["compress"].as<bool>()) o.flags |= CKPT_OPEN_COMPRESS;
  if (vm.count("mode")) {
    const std::string& m = vm["mode"].as<std::string>();
    char* end = nullptr;
    errno = 0;
    unsigned long v = std::strtoul(m.c_str(), &end, 8);
    if (m.empty() || *end || errno || v > 0777)
      throw UsageError("--mode must be octal, at most 0777");
    o.mode = static_cast<uint32_t>(v);
  }
  uint32_t t = TimeoutMs(vm);

  // The data: regular files are read straight into the mapping; anything else is buffered.
  int fd = file == "-" ? STDIN_FILENO : open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    Msg("put " + name + ": cannot open " + file + ": " + strerror(errno));
    return kExitFailed;
  }
  struct FdCloser {
    int fd;
    ~FdCloser() {
      if (fd > STDIN_FILENO) close(fd);
    }
  } closer{fd};
  struct stat sb {};
  if (fstat(fd, &sb) != 0) {
    Msg("put " + name + ": cannot stat " + file + ": " + strerror(errno));
    return kExitFailed;
  }
  std::vector<char> buffered;
  const bool regular = S_ISREG(sb.st_mode);
  if (!regular && !ReadAll(fd, &buffered)) {
    Msg("put " + name + ": cannot read " + file + ": " + strerror(errno));
    return kExitFailed;
  }
  o.size = regular ? static_cast<uint64_t>(sb.st_size) : buffered.size();
  if (o.size == 0) {
    Msg("put " + name + ": " + file + " is empty (a segment needs at least one byte)");
    return kExitFailed;
  }

  int ec = 0;
  ClientPtr c = Connect(&ec);
  if (!c) return ec;
  ckpt_segment_t* seg = nullptr;
  if (int rc = ckpt_open(c.get(), name.c_str(), &o, &seg); rc < 0) {
    if (rc == CKPT_ERR_EXISTS) {
      ckpt_segment_info_t info;
      if (ckpt_stat(c.get(), name.c_str(), &info) == CKPT_OK && info.size != o.size) {
        Msg("put " + name + ": segment exists with " + std::to_string(info.size) + " bytes, " +
            file + " has " + std::to_string(o.size));
        return kExitFailed;
      }
    }
    return Report(rc, c.get(), "put " + name);
  }
  auto* data = static_cast<char*>(ckpt_segment_data(seg));
  if (regular) {
    uint64_t done = 0;
    while (done < o.size) {
      ssize_t n = read(fd, data + done, o.size - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        Msg("put " + name + ": " + file +
            (n < 0 ? ": " + std::string(strerror(errno)) : " shrank while reading"));
        ckpt_close(seg);
        return kExitFailed;
      }
      done += static_cast<uint64_t>(n);
    }
  } else {
    std::memcpy(data, buffered.data(), buffered.size());
  }
  ckpt_version_t v{};
  uint32_t flags = CKPT_COMMIT_ALL | (sync ? static_cast<uint32_t>(CKPT_COMMIT_SYNC) : 0u);
  int rc = ckpt_commit(seg, flags, t, &v);
  if (rc < 0) {
    int code = Report(rc, c.get(), "put " + name);
    ckpt_close(seg);
    return code;
  }
  ckpt_close(seg);  // waits for ckptd, so an asynchronous commit is queued before we exit
  std::cout << "put " << name << ": " << o.size << " bytes, version " << VersionStr(v)
            << (sync ? " (replicated)" : " (queued)") << "\n";
  return kExitOk;
}

std::optional<ckpt_version_t> ParseVersion(const std::string& s) {
  auto dot = s.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == s.size()) return std::nullopt;
  auto num = [](const std::string& p, uint64_t* out) {
    if (p.empty() || p.find_first_not_of("0123456789") != std::string::npos) return false;
    errno = 0;
    *out = std::strtoull(p.c_str(), nullptr, 10);
    return errno == 0;
  };
  ckpt_version_t v{};
  if (!num(s.substr(0, dot), &v.epoch) || !num(s.substr(dot + 1), &v.seq)) return std::nullopt;
  return v;
}

bool WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

int CmdGet(const po::variables_map& vm) {
  std::string name = Name(vm);
  std::string file = vm.count("file") ? vm["file"].as<std::string>() : "-";
  std::optional<ckpt_version_t> want;
  if (vm.count("version")) {
    want = ParseVersion(vm["version"].as<std::string>());
    if (!want)
      throw UsageError("--version must be GENERATION.SEQ as `versions` prints it, e.g. 3.17");
  }
  int ec = 0;
  ClientPtr c = Connect(&ec);
  if (!c) return ec;
  if (want) {  // GENERATION.SEQ -> the full epoch of a version this node holds
    ckpt_version_info_t* vs = nullptr;
    size_t n = 0;
    if (ckpt_versions(c.get(), name.c_str(), &vs, &n) == CKPT_OK) {
      for (size_t i = 0; i < n; i++)
        if ((vs[i].version.epoch >> 32) == want->epoch && vs[i].version.seq == want->seq)
          *want = vs[i].version;
      free(vs);
    }
  }
  ckpt_segment_info_t info;
  if (int rc = ckpt_stat(c.get(), name.c_str(), &info); rc < 0)
    return Report(rc, c.get(), "get " + name);
  std::vector<char> data;
  try {
    data.resize(info.size);
  } catch (const std::bad_alloc&) {
    Msg("get " + name + ": out of memory for " + std::to_string(info.size) + " bytes");
    return kExitFailed;
  }
  ckpt_version_t got{};
  int rc =
      ckpt_read(c.get(), name.c_str(), want ? &*want : nullptr, 0, data.data(), data.size(), &got);
  if (rc < 0) return Report(rc, c.get(), "get " + name);
  if (rc == CKPT_NO_CHECKPOINT) {
    Msg("get " + name + ": no checkpoint exists (no node holds a version)");
    return kExitNoCheckpoint;
  }
  int fd = file == "-" ? STDOUT_FILENO
                       : open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    Msg("get " + name + ": cannot create " + file + ": " + strerror(errno));
    return kExitFailed;
  }
  bool ok = WriteAll(fd, data.data(), data.size());
  int err = errno;
  if (fd != STDOUT_FILENO && close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    Msg("get " + name + ": cannot write " + file + ": " + strerror(err));
    return kExitFailed;
  }
  if (file != "-")
    std::cout << "got " << name << " version " << VersionStr(got) << ": " << data.size()
              << " bytes written to " << file << "\n";
  return kExitOk;
}

int CmdVersions(const po::variables_map& vm) {
  std::string name = Name(vm);
  int ec = 0;
  ClientPtr c = Connect(&ec);
  if (!c) return ec;
  ckpt_version_info_t* v = nullptr;
  size_t n = 0;
  if (int rc = ckpt_versions(c.get(), name.c_str(), &v, &n); rc < 0)
    return Report(rc, c.get(), "versions " + name);
  std::unique_ptr<ckpt_version_info_t, decltype(&free)> guard(v, &free);
  if (vm["json"].as<bool>()) {
    std::cout << "[";
    for (size_t i = 0; i < n; i++) {
      char sum[32];
      std::snprintf(sum, sizeof sum, "%016" PRIx64, v[i].checksum);
      std::cout << (i ? "," : "") << "{\"version\":" << JsonVersion(v[i].version)
                << ",\"size\":" << v[i].size << ",\"checksum\":" << JsonStr(sum)
                << ",\"stored_unix_ms\":" << v[i].stored_unix_ms << "}";
    }
    std::cout << "]\n";
    return kExitOk;
  }
  Table t({"VERSION", "SIZE", "CHECKSUM", "STORED"});
  for (size_t i = 0; i < n; i++) {
    char sum[32];
    std::snprintf(sum, sizeof sum, "%016" PRIx64, v[i].checksum);
    t.Add({VersionStr(v[i].version), std::to_string(v[i].size), sum, TimeStr(v[i].stored_unix_ms)});
  }
  t.Print(std::cout);
  return kExitOk;
}

int CmdDelete(const po::variables_map& vm) {
  std::string name = Name(vm);
  int ec = 0;
  ClientPtr c = Connect(&ec);
  if (!c) return ec;
  if (int rc = ckpt_delete(c.get(), name.c_str()); rc < 0)
    return Report(rc, c.get(), "delete " + name);
  std::cout << "deleted " << name << "\n";
  return kExitOk;
}

int CmdRelease(const po::variables_map& vm) {
  std::string name = Name(vm);
  uint32_t t = TimeoutMs(vm);
  int ec = 0;
  ClientPtr c = Connect(&ec);
  if (!c) return ec;
  if (int rc = ckpt_release(c.get(), name.c_str(), t); rc < 0)
    return Report(rc, c.get(), "release " + name);
  std::cout << "released " << name << "\n";
  return kExitOk;
}

int CmdFlush(const po::variables_map& vm) {
  std::string name = Name(vm);
  uint32_t t = TimeoutMs(vm);
  int ec = 0;
  ClientPtr c = Connect(&ec);
  if (!c) return ec;
  ckpt_segment_t* seg = nullptr;
  if (int rc = ckpt_open(c.get(), name.c_str(), nullptr, &seg); rc < 0) {
    if (rc == CKPT_ERR_NOT_OWNER) {
      Msg("flush " + name + ": not owned by this node; flush on the owner (see 'ckptctl show " +
          name + "')");
      return kExitFailed;
    }
    if (rc == CKPT_ERR_BUSY) {
      Msg("flush " + name +
          ": the segment is open by its writer on this node; flush from that "
          "process, or use 'ckptctl release'");
      return kExitFailed;
    }
    return Report(rc, c.get(), "flush " + name);
  }
  ckpt_version_t v = ckpt_segment_version(seg);
  int rc = ckpt_flush(seg, t);
  int code = rc < 0 ? Report(rc, c.get(), "flush " + name) : kExitOk;
  ckpt_close(seg);
  if (rc == CKPT_OK)
    std::cout << "flushed " << name << ": version " << VersionStr(v) << " is replicated\n";
  return code;
}

// OCF monitor: see the top of this file.
int CmdMonitor(const po::variables_map& vm) {
  if (!vm.count("name")) throw UsageError("missing segment NAME");
  std::string name = vm["name"].as<std::string>();
  if (ckpt::Status st = ckpt::ValidateSegmentName(name); !st.ok()) {
    Msg("monitor: invalid segment name '" + name + "': " + st.message());
    return PCMK_OCF_NOT_CONFIGURED;
  }
  ckpt_client_t* raw = nullptr;
  int rc = ckpt_connect(&raw);
  if (rc < 0) {
    Msg("monitor " + name + ": " + ckpt_last_error(nullptr));
    return PCMK_OCF_UNKNOWN_ERROR;
  }
  ClientPtr c(raw);
  ckpt_cluster_info_t cl;
  if ((rc = ckpt_cluster_status(c.get(), &cl)) < 0) {
    Report(rc, c.get(), "monitor " + name);
    return PCMK_OCF_UNKNOWN_ERROR;
  }
  if (!cl.joined) {
    Msg("monitor " + name + ": ckptd is not in the cluster (CPG group not joined)");
    return PCMK_OCF_UNKNOWN_ERROR;
  }
  ckpt_segment_info_t s;
  rc = ckpt_stat(c.get(), name.c_str(), &s);
  if (rc == CKPT_ERR_NOT_FOUND) {
    std::cout << name << ": no such segment (not running here)\n";
    return PCMK_OCF_NOT_RUNNING;
  }
  if (rc == CKPT_ERR_NAME) {
    Report(rc, c.get(), "monitor " + name);
    return PCMK_OCF_NOT_CONFIGURED;
  }
  if (rc < 0) {
    Report(rc, c.get(), "monitor " + name);
    return PCMK_OCF_UNKNOWN_ERROR;
  }
  if (s.owner_nodeid != 0 && s.owner_nodeid == cl.self_nodeid) {
    std::cout << name << ": owned by this node, version " << VersionStr(s.latest) << "\n";
    return PCMK_OCF_OK;
  }
  std::cout << name << ": not owned by this node (owner: "
            << (s.owner_nodeid ? NodeStr(s.owner_nodeid, s.owner_name) : "none") << ")\n";
  return PCMK_OCF_NOT_RUNNING;
}

std::vector<Command> Commands() {
  auto none = [](po::options_description&) {};
  auto json = [](po::options_description& d) { AddJson(d); };
  auto timeout = [](po::options_description& d) {
    AddTimeout(d, "seconds to wait (default 30; 60 for pull)");
  };
  return {
      {"status", "[--json]", "ckptd's membership and counters on this node", json, {}, CmdStatus},
      {"list", "[--json]", "list the segments of the cluster", json, {}, CmdList},
      {"show",
       "NAME [--json]",
       "a segment's owner, version, replicas and their lag",
       json,
       {{"name", 1}},
       CmdShow},
      {"pull",
       "NAME [--timeout S]",
       "bring the newest version here and make this node the owner (exit 4: none exists)",
       timeout,
       {{"name", 1}},
       CmdPull},
      {"put",
       "NAME FILE|- [options]",
       "create/overwrite a segment from a file (sized to the file) and commit it",
       [](po::options_description& d) {
         d.add_options()("replicas", po::value<uint32_t>()->value_name("R"),
                         "replicas besides the owner (when creating; default: ckptd's)")(
             "versions-kept", po::value<uint32_t>()->value_name("N"),
             "versions each holder keeps (when creating)")(
             "fsync", po::bool_switch(), "replicas fsync each version (when creating)")(
             "compress", po::bool_switch(), "replicate zstd-compressed (when creating)")(
             "mode", po::value<std::string>()->value_name("OCTAL"),
             "group/other permissions, e.g. 0640 (when creating; default 0600)")(
             "sync", po::bool_switch(), "wait for the replicas' acknowledgements (default)")(
             "no-sync", po::bool_switch(), "return once the version is queued");
         AddTimeout(d, "seconds to wait for the replicas (default 30)");
       },
       {{"name", 1}, {"file", 1}},
       CmdPut},
      {"get",
       "NAME [--version G.S] [FILE|-]",
       "write a version (default: the newest) to FILE or stdout (exit 4: none exists)",
       [](po::options_description& d) {
         d.add_options()("version", po::value<std::string>()->value_name("G.S"),
                         "a version this node keeps, GENERATION.SEQ as `versions` prints it");
       },
       {{"name", 1}, {"file", 1}},
       CmdGet},
      {"versions",
       "NAME [--json]",
       "versions of a segment kept by this node's store",
       json,
       {{"name", 1}},
       CmdVersions},
      {"delete", "NAME", "delete a segment on every node", none, {{"name", 1}}, CmdDelete},
      {"release",
       "NAME [--timeout S]",
       "wait for the replicas, then give up ownership of a segment",
       timeout,
       {{"name", 1}},
       CmdRelease},
      {"flush",
       "NAME [--timeout S]",
       "wait until the replicas acknowledged the latest version (owner only)",
       timeout,
       {{"name", 1}},
       CmdFlush},
      {"monitor",
       "NAME",
       "OCF monitor: exit 0 if owned here, 7 if not, 1 if ckptd is unreachable",
       none,
       {{"name", 1}},
       CmdMonitor},
  };
}

constexpr const char* kGlobalUsage = "Usage: ckptctl [--help] [--version] COMMAND [ARGS...]";

void GlobalHelp(std::ostream& os, const std::vector<Command>& cmds) {
  os << kGlobalUsage
     << "\n"
        "Control and inspect ckpt, the replicated checkpoint service (talks to the local ckptd).\n"
        "\nCommands:\n";
  size_t w = 0;
  for (auto& c : cmds) w = std::max(w, std::strlen(c.name));
  for (auto& c : cmds)
    os << "  " << c.name << std::string(w - std::strlen(c.name) + 2, ' ') << c.summary << "\n";
  os << "\nRun 'ckptctl COMMAND --help' for a command's options.\n\n" << kExitTable;
}

std::string CommandUsage(const Command& c) {
  return std::string("Usage: ckptctl ") + c.name + " " + c.args;
}

int RunCommand(const Command& cmd, const std::vector<std::string>& args) {
  po::options_description visible("Options");
  visible.add_options()("help,h", "show this help");
  cmd.options(visible);
  po::options_description hidden;
  po::positional_options_description pos;
  for (auto& [pname, count] : cmd.positional) {
    hidden.add_options()(pname, po::value<std::string>());
    pos.add(pname, count);
  }
  po::options_description all;
  all.add(visible).add(hidden);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << CommandUsage(cmd) << "\n" << cmd.summary << ".\n\n" << visible << "\n";
      if (std::strcmp(cmd.name, "monitor") != 0) std::cout << kExitTable;
      return kExitOk;
    }
    return cmd.run(vm);
  } catch (const po::error& e) {
    Msg(std::string(cmd.name) + ": " + e.what());
  } catch (const UsageError& e) {
    Msg(std::string(cmd.name) + ": " + e.what());
  }
  std::cerr << CommandUsage(cmd) << "\nTry 'ckptctl " << cmd.name << " --help'.\n";
  return kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<Command> cmds = Commands();
  std::vector<std::string> args(argv + 1, argv + argc);
  // Global options come before the command; everything after it belongs to the command.
  po::options_description global("Global options");
  global.add_options()("help,h", "show this help")("version", "show the version");
  size_t first = 0;
  while (first < args.size() && !args[first].empty() && args[first][0] == '-') first++;
  std::vector<std::string> global_args(args.begin(), args.begin() + first);
  po::variables_map gvm;
  try {
    po::store(po::command_line_parser(global_args).options(global).run(), gvm);
  } catch (const po::error& e) {
    Msg(e.what());
    std::cerr << kGlobalUsage << "\nTry 'ckptctl --help'.\n";
    return kExitUsage;
  }
  if (gvm.count("help")) {
    GlobalHelp(std::cout, cmds);
    return kExitOk;
  }
  if (gvm.count("version")) {
    std::cout << "ckptctl " << CKPT_VERSION_STRING << "\n";
    return kExitOk;
  }
  if (first == args.size()) {
    Msg("missing COMMAND");
    GlobalHelp(std::cerr, cmds);
    return kExitUsage;
  }
  const std::string& name = args[first];
  for (const auto& c : cmds) {
    if (name == c.name)
      return RunCommand(c, std::vector<std::string>(args.begin() + first + 1, args.end()));
  }
  Msg("unknown command '" + name + "'");
  std::cerr << kGlobalUsage << "\nTry 'ckptctl --help'.\n";
  return kExitUsage;
}
