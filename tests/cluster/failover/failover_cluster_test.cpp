// Pacemaker failover of an application that keeps its state in ckpt, on a real 3-node Corosync +
// Pacemaker cluster built from namespaces (tests/lab/lab).  Every node runs ckptd (publishing the
// ckpt-<segment> node attribute); Pacemaker runs a group [ocf:ckpt:checkpoint segment=S,
// ocf:ckpt:demo segment=S] with a location rule that turns ckpt-S into a placement score.
//
//   FirstStartEver...          no checkpoint: start-empty starts fresh; fail fails the start
//                               cleanly (crm_mon shows the failed start with its exit reason)
//   OwnerCrash...              crash the app's node: it restarts on the replica with a state at
//                               least as new as the last acknowledged version, byte-exact
//   PlannedMove...             crm_resource --move: the final commit at stop is not lost, the
//                               counter continues exactly
//   AllCopiesGone...           owner and every replica gone: a global-dir copy restores it;
//                               without one, on_missing=fail fails and start-empty starts fresh
//   FailoverOntoReplica...     R=2: the failover moves no segment bytes over CPG (counters)
//   PartitionedOwner...        lab cut: the app moves; the old owner's commit loses; after heal
//                               every node agrees on the new owner and version, byte-exact
//
// One cluster for the suite; each test has its own group and segment and leaves the cluster
// whole (nodes up, links healed, its resources and segment deleted), also when it fails.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "support/lab_cluster.hpp"

namespace fs = std::filesystem;
using ckpt::test::CmdResult;
using ckpt::test::LabCluster;
using ckpt::test::Quote;
using ckpt::test::Shell;
using ckpt::test::WaitFor;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kLabName = "fo";
constexpr int kNodes = 3;
constexpr uint64_t kDemoSegmentSize = 64 * 1024;  // ckpt-demo's fixed segment size

LabCluster* g_lab = nullptr;
fs::path g_tmp;          // host-only scratch files (/tmp is shared with the nodes)
fs::path g_global;       // ckptd --global-dir, shared by all nodes (under /var/tmp)
std::set<int> g_down;    // crashed nodes (lab crash), restarted by RestoreCluster()
std::set<int> g_cut;     // nodes whose link is cut (lab cut), healed by RestoreCluster()

std::string N(int n) { return "n" + std::to_string(n); }

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream o;
  o << in.rdbuf();
  return o.str();
}

std::string Tail(const std::string& s, size_t lines) {
  size_t pos = s.size();
  for (size_t i = 0; i <= lines; i++) {
    if (pos == 0) return s;
    pos = s.rfind('\n', pos - 1);
    if (pos == std::string::npos) return s;
  }
  return s.substr(pos + 1);
}

std::optional<uint64_t> JsonU64(const std::string& json, const std::string& key) {
  std::smatch m;
  if (std::regex_search(json, m, std::regex("\"" + key + "\":(\\d+)"))) return std::stoull(m[1]);
  return std::nullopt;
}

std::string JsonStr(const std::string& json, const std::string& key) {
  std::smatch m;
  if (std::regex_search(json, m, std::regex("\"" + key + "\":\"([^\"]*)\""))) return m[1];
  return "";
}

struct Ver {
  uint64_t epoch = 0, seq = 0;
  std::string Label() const { return std::to_string(epoch >> 32) + "." + std::to_string(seq); }
  bool operator==(const Ver&) const = default;
};

// ---- lab, nodes, ckptd ---------------------------------------------------------------------

std::string LabRoot() {
  const char* e = std::getenv("CKPT_LAB_ROOT");
  return e && *e ? e : "/var/tmp/ckpt-lab";
}
// A node's private file systems as seen from the host (readable also while the node is down).
fs::path NodeFs(int n) { return fs::path(LabRoot()) / kLabName / N(n) / "fs"; }

std::vector<int> UpNodes() {
  std::vector<int> v;
  for (int i = 1; i <= kNodes; i++)
    if (!g_down.count(i)) v.push_back(i);
  return v;
}
// A node of the quorate partition, to ask Pacemaker from.
int RefNode(std::initializer_list<int> avoid = {}) {
  for (int i = 1; i <= kNodes; i++)
    if (!g_down.count(i) && !g_cut.count(i) && std::find(avoid.begin(), avoid.end(), i) == avoid.end())
      return i;
  return 1;
}

CmdResult Ctl(int n, const std::string& args) { return g_lab->Ctl(n, args); }

CmdResult StartCkptd(int n) {
  return g_lab->Lab("ckptd start " + N(n) + " --bin " + g_lab->bin() +
                    " --attributes=true --versions-kept 128 --global-dir " + g_global.string());
}

bool CkptdSeesMembers(int n, int members) {
  CmdResult r = Ctl(n, "status --json");
  return r.code == 0 && r.out.find("\"joined\":true") != std::string::npos &&
         std::count(r.out.begin(), r.out.end(), '{') == members + 1;
}

bool AllCkptdSee(const std::vector<int>& nodes) {
  for (int n : nodes)
    if (!CkptdSeesMembers(n, static_cast<int>(nodes.size()))) return false;
  return true;
}

void CrashNode(int n) {
  CmdResult r = g_lab->Lab("crash " + N(n));
  ASSERT_EQ(r.code, 0) << r.out;
  g_down.insert(n);
}

void CutNode(int n) {
  CmdResult r = g_lab->Lab("cut " + N(n));
  ASSERT_EQ(r.code, 0) << r.out;
  g_cut.insert(n);
}

void HealNode(int n) {
  CmdResult r = g_lab->Lab("heal " + N(n));
  ASSERT_EQ(r.code, 0) << r.out;
  g_cut.erase(n);
}

// Brings every node back (healed, booted, ckptd running) and waits until Corosync, Pacemaker
// and ckptd all see three members.
void RestoreCluster() {
  for (int n : std::set<int>(g_cut)) HealNode(n);
  for (int n : std::set<int>(g_down)) {
    CmdResult r = g_lab->Lab("start " + N(n) + " --timeout 180");
    ASSERT_EQ(r.code, 0) << r.out;
    g_down.erase(n);
    r = StartCkptd(n);
    ASSERT_EQ(r.code, 0) << r.out;
  }
  CmdResult w = g_lab->Lab("wait --timeout 180");
  ASSERT_EQ(w.code, 0) << w.out;
  ASSERT_TRUE(WaitFor([] { return AllCkptdSee({1, 2, 3}); }, 90s)) << Ctl(1, "status").out;
}

// ---- ckptctl ---------------------------------------------------------------------------------

struct Holder {
  int node = 0;
  Ver version;
  bool live = false, owner = false, target = false;
};
struct SegInfo {
  bool exists = false;
  int owner = 0;
  uint64_t epoch = 0;
  Ver latest;
  uint64_t acked_replicas = 0;
  std::vector<Holder> holders;
  std::string raw;
};

SegInfo Show(int n, const std::string& seg) {
  SegInfo s;
  CmdResult r = Ctl(n, "show " + seg + " --json");
  s.raw = r.out;
  if (r.code != 0) return s;
  s.exists = true;
  s.owner = static_cast<int>(JsonU64(r.out, "owner_nodeid").value_or(0));
  s.epoch = JsonU64(r.out, "epoch").value_or(0);
  std::smatch m;
  if (std::regex_search(r.out, m, std::regex(R"("latest":\{"epoch":(\d+),"seq":(\d+)\})")))
    s.latest = {std::stoull(m[1]), std::stoull(m[2])};
  s.acked_replicas = JsonU64(r.out, "acked_replicas").value_or(0);
  std::regex h(
      R"(\{"nodeid":(\d+),"name":"[^"]*","version":\{"epoch":(\d+),"seq":(\d+)\}(?:,"lag":\d+)?,"live":(true|false),"owner":(true|false),"target":(true|false)\})");
  for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), h); it != std::sregex_iterator();
       ++it) {
    const auto& x = *it;
    s.holders.push_back({std::stoi(x[1]), {std::stoull(x[2]), std::stoull(x[3])}, x[4] == "true",
                         x[5] == "true", x[6] == "true"});
  }
  return s;
}

// Versions this node's store keeps (ckptctl versions), oldest first.
std::vector<Ver> StoredVersions(int n, const std::string& seg) {
  std::vector<Ver> v;
  CmdResult r = Ctl(n, "versions " + seg + " --json");
  std::regex e(R"("version":\{"epoch":(\d+),"seq":(\d+)\})");
  for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), e); it != std::sregex_iterator();
       ++it)
    v.push_back({std::stoull((*it)[1]), std::stoull((*it)[2])});
  std::sort(v.begin(), v.end(), [](const Ver& a, const Ver& b) {
    return a.seq != b.seq ? a.seq < b.seq : a.epoch < b.epoch;
  });
  return v;
}

// ckptctl get [--version] on node n into a host file; returns the file's bytes (nullopt: failed).
std::optional<std::string> Get(int n, const std::string& seg, const std::optional<Ver>& v,
                               const std::string& tag) {
  fs::path out = g_tmp / (seg + "-" + tag + "-" + N(n) + ".bin");
  fs::remove(out);
  CmdResult r = Ctl(n, "get " + seg + (v ? " --version " + v->Label() : "") + " " + out.string());
  if (r.code != 0) {
    std::cerr << "get " << seg << " on " << N(n) << ": " << r.out;
    return std::nullopt;
  }
  return ReadFile(out);
}

struct Counters {
  uint64_t sent = 0, received = 0;
};
Counters CkptdCounters(int n) {
  CmdResult r = Ctl(n, "status --json");
  EXPECT_EQ(r.code, 0) << r.out;
  return {JsonU64(r.out, "bytes_sent").value_or(~0ull), JsonU64(r.out, "bytes_received").value_or(~0ull)};
}

// ---- ckpt-demo -------------------------------------------------------------------------------

// The demo's counter inside a segment image (struct State: u32 magic "CDEM", u32 format,
// u64 counter, ...), or nullopt when the bytes are not a demo state.
std::optional<uint64_t> CounterInImage(const std::string& img, size_t at = 0) {
  if (img.size() < at + 16 || img.compare(at, 4, "CDEM") != 0) return std::nullopt;
  uint64_t c = 0;
  std::memcpy(&c, img.data() + at + 8, 8);  // little-endian host
  return c;
}

struct DemoState {
  bool ok = false;
  uint64_t counter = 0;
  std::string last_node;
  uint64_t starts = 0;
  std::string raw;
};
// ckpt-demo --status on node n: the newest replicated state (read on the owner: local).
DemoState DemoStatus(int n, const std::string& seg) {
  DemoState d;
  CmdResult r = g_lab->Exec(n, g_lab->bin() + "/ckpt-demo --status --json --segment " + seg);
  d.raw = r.out;
  if (r.code != 0 || r.out.find("\"valid\":true") == std::string::npos) return d;
  d.ok = true;
  d.counter = JsonU64(r.out, "counter").value_or(0);
  d.last_node = JsonStr(r.out, "last_node");
  d.starts = JsonU64(r.out, "starts").value_or(0);
  return d;
}

fs::path DemoLogPath(int n, const std::string& seg) {
  return NodeFs(n) / "var/log/ckpt" / ("ckpt-demo-" + seg + ".log");
}

// Marks of every node's demo log, to look only at what was logged after the mark.
using LogMark = std::map<int, size_t>;
LogMark MarkLogs(const std::string& seg) {
  LogMark m;
  for (int i = 1; i <= kNodes; i++) {
    std::error_code ec;
    auto sz = fs::file_size(DemoLogPath(i, seg), ec);
    m[i] = ec ? 0 : sz;
  }
  return m;
}
std::string DemoLogSince(int n, const std::string& seg, const LogMark& mark) {
  std::string all = ReadFile(DemoLogPath(n, seg));
  auto it = mark.find(n);
  size_t from = it == mark.end() ? 0 : it->second;
  return from <= all.size() ? all.substr(from) : all;
}

// The last match of `re` in `text` (group 1.. as strings), empty when none.
std::vector<std::string> LastMatch(const std::string& text, const std::string& re) {
  std::vector<std::string> out;
  std::regex e(re);
  for (auto it = std::sregex_iterator(text.begin(), text.end(), e); it != std::sregex_iterator(); ++it) {
    out.clear();
    for (size_t i = 0; i < it->size(); i++) out.push_back((*it)[i]);
  }
  return out;
}

struct Restored {
  bool found = false;
  uint64_t counter = 0;
  uint64_t generation = 0, seq = 0;  // the version installed, as ckptctl prints it
};
// "restored counter=N (last committed at ..., by node ...; version GENERATION.SEQ)"
Restored RestoredFromLog(const std::string& log) {
  Restored r;
  auto m = LastMatch(log, R"(restored counter=(\d+) \(.*; version (\d+)\.(\d+)\))");
  if (m.empty()) return r;
  r.found = true;
  r.counter = std::stoull(m[1]);
  r.generation = std::stoull(m[2]);
  r.seq = std::stoull(m[3]);
  return r;
}

// Failed start actions of resource `rsc` in `crm_mon -1` text, one per node ("* RSC start on
// nK returned 'error' (REASON) at ..."), and whether REASON is shown.
int FailedStarts(const std::string& mon, const std::string& rsc) {
  int n = 0;
  for (size_t p = 0; (p = mon.find("* " + rsc + " start on n", p)) != std::string::npos; p++) n++;
  return n;
}
bool ShowsReason(const std::string& mon, const std::string& rsc, const std::string& reason) {
  return mon.find(rsc + " start on n") != std::string::npos &&
         mon.find("'error' (" + reason + ")") != std::string::npos;
}

// ---- Pacemaker -------------------------------------------------------------------------------

CmdResult Pcmk(const std::string& cmdline, int node = 0) {
  return g_lab->Exec(node ? node : RefNode(), cmdline);
}

// Nodes where resource `id` is active with role Started (or "Starting" etc. when role given
// empty: any active role), per crm_mon on `from`.
std::vector<int> ResourceNodes(const std::string& id, int from = 0, bool started_only = true) {
  CmdResult r = Pcmk("crm_mon -1 --output-as=xml", from);
  std::vector<int> nodes;
  std::smatch m;
  std::regex e("<resource id=\"" + id + "\"([^>]*)>((?:\\s*<node [^>]*/>)*)");
  if (!std::regex_search(r.out, m, e)) return nodes;
  std::string attrs = m[1], body = m[2];
  if (attrs.find("active=\"true\"") == std::string::npos) return nodes;
  if (started_only && attrs.find("role=\"Started\"") == std::string::npos) return nodes;
  std::regex ne(R"re(name="n(\d+)")re");
  for (auto it = std::sregex_iterator(body.begin(), body.end(), ne); it != std::sregex_iterator(); ++it)
    nodes.push_back(std::stoi((*it)[1]));
  return nodes;
}

// The node where both members of group g are Started (0: none).
int GroupNode(const std::string& g, int from = 0) {
  auto a = ResourceNodes(g + "-ckpt", from), b = ResourceNodes(g + "-app", from);
  if (a.size() == 1 && b.size() == 1 && a[0] == b[0]) return a[0];
  return 0;
}

bool GroupStopped(const std::string& g, int from = 0) {
  return ResourceNodes(g + "-ckpt", from, false).empty() && ResourceNodes(g + "-app", from, false).empty();
}

struct GroupSpec {
  std::string id, seg, on_missing = "start-empty";
};

void CreateGroup(const GroupSpec& g) {
  const std::string& id = g.id;
  auto nv = [&](const std::string& owner, const std::string& name, const std::string& value) {
    return "<nvpair id=\"" + owner + "-" + name + "\" name=\"" + name + "\" value=\"" + value + "\"/>";
  };
  auto op = [&](const std::string& owner, const std::string& name, const std::string& interval,
                const std::string& timeout) {
    return "<op id=\"" + owner + "-" + name + "-" + interval + "\" name=\"" + name +
           "\" interval=\"" + interval + "\" timeout=\"" + timeout + "\"/>";
  };
  std::string ck = id + "-ckpt", app = id + "-app";
  std::string xml =
      "<group id=\"" + id + "\">"
      "<meta_attributes id=\"" + id + "-meta\">" + nv(id, "target-role", "Stopped") + "</meta_attributes>"
      "<primitive id=\"" + ck + "\" class=\"ocf\" provider=\"ckpt\" type=\"checkpoint\">"
      "<instance_attributes id=\"" + ck + "-ia\">" + nv(ck, "segment", g.seg) +
      nv(ck, "on_missing", g.on_missing) + nv(ck, "ckptctl", g_lab->bin() + "/ckptctl") +
      "</instance_attributes><operations>" + op(ck, "start", "0", "90s") + op(ck, "stop", "0", "60s") +
      op(ck, "monitor", "5s", "20s") + "</operations></primitive>"
      "<primitive id=\"" + app + "\" class=\"ocf\" provider=\"ckpt\" type=\"demo\">"
      "<instance_attributes id=\"" + app + "-ia\">" + nv(app, "segment", g.seg) +
      nv(app, "binary", g_lab->bin() + "/ckpt-demo") + "</instance_attributes><operations>" +
      op(app, "start", "0", "60s") + op(app, "stop", "0", "45s") + op(app, "monitor", "3s", "20s") +
      "</operations></primitive></group>";
  CmdResult r = Pcmk("cibadmin --create -o resources -X " + Quote(xml));
  ASSERT_EQ(r.code, 0) << r.out;
  // Prefer the nodes holding the current version (ckptd sets ckpt-<segment>=100 there).
  std::string attr = "ckpt-" + g.seg;
  std::string loc = "<rsc_location id=\"" + id + "-on-replica\" rsc=\"" + id + "\">"
                    "<rule id=\"" + id + "-on-replica-rule\" score-attribute=\"" + attr + "\">"
                    "<expression id=\"" + id + "-on-replica-expr\" attribute=\"" + attr +
                    "\" operation=\"defined\"/></rule></rsc_location>";
  r = Pcmk("cibadmin --create -o constraints -X " + Quote(loc));
  ASSERT_EQ(r.code, 0) << r.out;
}

void SetTargetRole(const std::string& g, const std::string& role) {
  CmdResult r = Pcmk("crm_resource -r " + g + " --meta -p target-role -v " + role);
  ASSERT_EQ(r.code, 0) << r.out;
}

void SetParam(const std::string& rsc, const std::string& name, const std::string& value) {
  CmdResult r = Pcmk("crm_resource -r " + rsc + " -p " + name + " -v " + value);
  ASSERT_EQ(r.code, 0) << r.out;
}

// Waits until group g runs (both members Started) on a node other than `not_on`; returns it.
int WaitGroupRunning(const std::string& g, std::chrono::seconds timeout, int not_on = 0, int from = 0) {
  int where = 0;
  WaitFor([&] {
    where = GroupNode(g, from);
    return where != 0 && where != not_on;
  }, timeout);
  return where != not_on ? where : 0;
}

// Waits until the demo of `seg` on node n has committed on n and its counter reached `min`.
bool WaitDemoCounter(int n, const std::string& seg, uint64_t min, std::chrono::seconds timeout,
                     DemoState* out = nullptr) {
  DemoState d;
  bool ok = WaitFor([&] {
    d = DemoStatus(n, seg);
    return d.ok && d.last_node == N(n) && d.counter >= min;
  }, timeout);
  if (out) *out = d;
  return ok;
}

std::string Diagnostics(const std::string& g, const std::string& seg) {
  std::ostringstream o;
  o << "===== diagnostics for group " << g << ", segment " << seg << " (down:";
  for (int n : g_down) o << " " << N(n);
  o << "; cut:";
  for (int n : g_cut) o << " " << N(n);
  o << ")\n";
  for (int n : UpNodes()) {
    o << "--- crm_mon -1 --show-detail on " << N(n) << ":\n" << Pcmk("crm_mon -1 -A -f", n).out;
    o << "--- ckptctl show " << seg << " on " << N(n) << ":\n" << Ctl(n, "show " + seg).out;
    o << "--- ckptctl status on " << N(n) << ":\n" << Ctl(n, "status").out;
  }
  for (int n = 1; n <= kNodes; n++) {
    o << "--- ckptd log of " << N(n) << " (last 40 lines):\n"
      << Tail(g_lab->Lab("logs " + N(n) + " ckptd").out, 40);
    o << "--- demo log of " << N(n) << " (last 25 lines):\n" << Tail(ReadFile(DemoLogPath(n, seg)), 25);
    std::string pl = ReadFile(NodeFs(n) / "var/log/pacemaker/pacemaker.log");
    std::string lines, line;
    std::istringstream in(pl);
    while (std::getline(in, line))
      if (line.find(g + "-") != std::string::npos &&
          (line.find("ckpt") != std::string::npos || line.find("demo") != std::string::npos))
        lines += line + "\n";
    o << "--- pacemaker log of " << N(n) << " about " << g << " (last 30 lines):\n" << Tail(lines, 30);
  }
  return o.str();
}

// Stops group g (its stop flushes and releases), deletes its resources and constraints and the
// segment.  Best effort: used for cleanup after failures too.
void RemoveGroup(const std::string& g, const std::string& seg) {
  Pcmk("crm_resource -r " + g + " --meta -p target-role -v Stopped");
  if (!WaitFor([&] { return GroupStopped(g); }, 120s))
    std::cerr << "cleanup: group " << g << " did not stop\n" << Pcmk("crm_mon -1").out;
  Pcmk("crm_resource --clear -r " + g);
  Pcmk("cibadmin --delete -o constraints -X " + Quote("<rsc_location id=\"" + g + "-on-replica\"/>"));
  Pcmk("cibadmin --delete -o resources -X " + Quote("<group id=\"" + g + "\"/>"));
  Pcmk("crm_resource --cleanup");
  CmdResult d = Ctl(RefNode(), "delete " + seg);
  if (d.code != 0 && d.code != 3) std::cerr << "cleanup: ckptctl delete " << seg << ": " << d.out;
}

// ---- the fixture -----------------------------------------------------------------------------

class FailoverCluster : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/ckpt-fo-XXXXXX";
    g_tmp = mkdtemp(tmpl);
    char gtmpl[] = "/var/tmp/ckpt-fo-global-XXXXXX";  // /var/tmp: the same directory in every node
    g_global = mkdtemp(gtmpl);
    g_lab = new LabCluster(LAB_SCRIPT, kLabName, BIN_DIR);
    g_lab->Lab("down");  // leftovers of an interrupted run
    auto t0 = Clock::now();
    // With the corosync setting ckptd(8) recommends (CPG TUNING); the replication cluster test
    // runs with corosync's defaults.
    CmdResult up =
        g_lab->Lab("up 3 --pacemaker --ckptd " + std::string(BIN_DIR) + " --ocf " +
                   std::string(OCF_DIR) + " --totem seqno_unchanged_const=3 --timeout 180");
    ASSERT_EQ(up.code, 0) << up.out;
    for (int i = 1; i <= kNodes; i++) ASSERT_EQ(StartCkptd(i).code, 0);
    ASSERT_TRUE(WaitFor([] { return AllCkptdSee({1, 2, 3}); }, 90s)) << Ctl(1, "status").out;
    // A little stickiness: equal ckpt-<segment> scores never move a running group.
    CmdResult r = g_lab->Exec(1, "crm_attribute --type rsc_defaults --name resource-stickiness --update 50");
    ASSERT_EQ(r.code, 0) << r.out;
    std::cout << "[ cluster  ] lab '" << kLabName << "' up with pacemaker and ckptd in "
              << Since(t0) << " s\n";
  }

  static void TearDownTestSuite() {
    if (g_lab) g_lab->Lab("down");
    delete g_lab;
    g_lab = nullptr;
    std::error_code ec;
    fs::remove_all(g_tmp, ec);
    fs::remove_all(g_global, ec);
  }

  void SetUp() override {
    if (!g_lab) GTEST_SKIP() << "no cluster";
    t0_ = Clock::now();
  }

  void TearDown() override {
    if (HasFailure() && !group_.empty()) std::cerr << Diagnostics(group_, seg_);
    RestoreCluster();
    if (!group_.empty()) RemoveGroup(group_, seg_);
    for (const auto& [g, s] : extra_) RemoveGroup(g, s);
    std::cout << "[  timing  ] " << ::testing::UnitTest::GetInstance()->current_test_info()->name()
              << ": " << Since(t0_) << " s including cleanup\n";
  }

  // Creates and starts group g for segment s; returns the node it runs on (0: did not start).
  int StartNewGroup(const std::string& g, const std::string& s, const std::string& on_missing = "start-empty") {
    if (group_.empty()) {
      group_ = g;
      seg_ = s;
    } else {
      extra_.emplace_back(g, s);
    }
    CreateGroup({g, s, on_missing});
    if (HasFatalFailure()) return 0;
    SetTargetRole(g, "Started");
    return WaitGroupRunning(g, 120s);
  }

  void Phase(const std::string& what) {
    std::cout << "[   ....   ] " << Since(t0_) << " s: " << what << std::endl;
  }

  std::string group_, seg_;
  std::vector<std::pair<std::string, std::string>> extra_;
  Clock::time_point t0_;
};

// 3. First start ever: no checkpoint anywhere.
TEST_F(FailoverCluster, FirstStartEverStartsFreshOrFailsAsOnMissingSays) {
  // on_missing=start-empty: the application starts fresh and creates the segment.
  int a = StartNewGroup("g3", "s3");
  ASSERT_NE(a, 0) << "group g3 did not start";
  Phase("g3 runs on " + N(a));
  DemoState d;
  ASSERT_TRUE(WaitDemoCounter(a, "s3", 3, 60s, &d)) << d.raw;
  std::string log = ReadFile(DemoLogPath(a, "s3"));
  EXPECT_NE(log.find("no checkpoint: starting fresh"), std::string::npos) << log;
  EXPECT_FALSE(RestoredFromLog(log).found) << log;
  EXPECT_EQ(d.starts, 1u) << d.raw;
  EXPECT_NE(d.raw.find("\"start_log\":[{\"node\":\"" + N(a) + "\",\"unix_ms\":"), std::string::npos) << d.raw;
  EXPECT_NE(d.raw.find(",\"counter\":0}]"), std::string::npos) << "the first start began at 0: " << d.raw;
  // The agent logged the fresh start, and the application's segment is now owned here.
  SegInfo si = Show(a, "s3");
  EXPECT_EQ(si.owner, a) << si.raw;
  EXPECT_EQ(Pcmk("crm_mon -1 | grep -c 'Failed Resource Actions'").out.substr(0, 1), "0");

  // on_missing=fail: the checkpoint resource fails to start, with the reason; the application
  // never starts; nothing is created.
  std::string g = "g3f", s = "s3f";
  extra_.emplace_back(g, s);
  CreateGroup({g, s, "fail"});
  ASSERT_FALSE(HasFatalFailure());
  LogMark mark = MarkLogs(s);
  SetTargetRole(g, "Started");
  std::string mon;
  std::string reason = "no checkpoint of " + s + " exists and on_missing=fail";
  // start-failure-is-fatal: one failed start per node, then the group stays stopped.
  bool failed_everywhere = WaitFor([&] {
    mon = Pcmk("crm_mon -1").out;
    return FailedStarts(mon, g + "-ckpt") == kNodes && GroupStopped(g);
  }, 120s);
  EXPECT_TRUE(failed_everywhere) << mon;
  EXPECT_TRUE(ShowsReason(mon, g + "-ckpt", reason)) << mon;
  EXPECT_TRUE(ResourceNodes(g + "-app", 0, false).empty()) << mon;
  for (int n = 1; n <= kNodes; n++)
    EXPECT_EQ(DemoLogSince(n, s, mark), "") << "the demo must not start on " << N(n);
  CmdResult show = Ctl(RefNode(), "show " + s);
  EXPECT_EQ(show.code, 3) << "nothing may be created: " << show.out;
  std::cout << "[   info   ] crm_mon shows:\n" << mon.substr(mon.find("Failed Resource Actions") == std::string::npos ? 0 : mon.find("Failed Resource Actions"));
}

// 1. Crash the node running the application.
TEST_F(FailoverCluster, OwnerCrashRestartsAppOnReplicaWithLastAcknowledgedState) {
  const std::string g = "g1", s = "s1";
  int a = StartNewGroup(g, s);
  ASSERT_NE(a, 0) << "group did not start";
  ASSERT_TRUE(WaitDemoCounter(a, s, 15, 60s));
  // The replica (R=1): the only other holder of the current version.
  int b = 0;
  ASSERT_TRUE(WaitFor([&] {
    SegInfo si = Show(a, s);
    for (auto& h : si.holders)
      if (h.target && h.live && h.node != a) b = h.node;
    return b != 0 && si.acked_replicas >= 1;
  }, 60s)) << Show(a, s).raw;
  Phase("app on " + N(a) + ", replica " + N(b));

  // The last acknowledged version: the newest version the replica stores, read from its store.
  std::vector<Ver> vs = StoredVersions(b, s);
  ASSERT_FALSE(vs.empty());
  Ver acked = vs.back();
  auto acked_bytes = Get(b, s, acked, "acked");
  ASSERT_TRUE(acked_bytes.has_value());
  ASSERT_EQ(acked_bytes->size(), kDemoSegmentSize);
  auto acked_counter = CounterInImage(*acked_bytes);
  ASSERT_TRUE(acked_counter.has_value());

  auto t_crash = Clock::now();
  CrashNode(a);
  Phase("crashed " + N(a) + " (acknowledged: version " + acked.Label() + ", counter " +
        std::to_string(*acked_counter) + ")");
  int c = WaitGroupRunning(g, 120s, a, b);
  ASSERT_NE(c, 0) << "the group did not restart elsewhere";
  Phase("group restarted on " + N(c) + " " + std::to_string(Since(t_crash)) + " s after the crash");
  EXPECT_EQ(c, b) << "the location rule should put it on the replica";

  // What the restarted application found: at least the acknowledged state.
  Restored r;
  ASSERT_TRUE(WaitFor([&] { return (r = RestoredFromLog(ReadFile(DemoLogPath(c, s)))).found; }, 30s))
      << ReadFile(DemoLogPath(c, s));
  EXPECT_GE(r.counter, *acked_counter);
  EXPECT_GE(r.seq, acked.seq);
  EXPECT_GT(r.generation, acked.epoch >> 32) << "the pull claims a new epoch";
  // Byte-exact: the acknowledged version (relabelled into the new epoch, same seq) is what the
  // replica stored; if it is the one restored, the application started from exactly those bytes.
  std::vector<Ver> after = StoredVersions(c, s);
  auto same_seq = std::find_if(after.begin(), after.end(), [&](const Ver& v) { return v.seq == acked.seq; });
  ASSERT_NE(same_seq, after.end()) << "version seq " << acked.seq << " is gone from " << N(c);
  auto bytes = Get(c, s, *same_seq, "after");
  ASSERT_TRUE(bytes.has_value());
  EXPECT_TRUE(*bytes == *acked_bytes) << "version " << same_seq->Label() << " differs from "
                                      << acked.Label() << " read before the crash";
  auto restored_it = std::find_if(after.begin(), after.end(), [&](const Ver& v) { return v.seq == r.seq; });
  if (restored_it != after.end()) {
    auto rb = Get(c, s, *restored_it, "restored");
    ASSERT_TRUE(rb.has_value());
    EXPECT_EQ(CounterInImage(*rb), std::optional<uint64_t>(r.counter)) << "restored bytes vs the demo's log";
  }
  // It keeps running from there.
  EXPECT_TRUE(WaitDemoCounter(c, s, r.counter + 5, 30s));
  SegInfo si = Show(c, s);
  EXPECT_EQ(si.owner, c) << si.raw;
}

// 2. Planned move: the final commit at stop is handed over.
TEST_F(FailoverCluster, PlannedMoveLosesNothingAndCounterContinuesExactly) {
  const std::string g = "g2", s = "s2";
  int a = StartNewGroup(g, s);
  ASSERT_NE(a, 0);
  ASSERT_TRUE(WaitDemoCounter(a, s, 10, 60s));
  // Move to a node that holds no replica: the pull must fetch the released version.
  SegInfo si = Show(a, s);
  int t = 0;
  for (int n = 1; n <= kNodes && !t; n++) {
    bool holds = false;
    for (auto& h : si.holders) holds |= h.node == n;
    if (!holds) t = n;
  }
  if (!t) t = a % kNodes + 1;
  LogMark mark = MarkLogs(s);
  auto t_move = Clock::now();
  CmdResult mv = Pcmk("crm_resource --move -r " + g + " -N " + N(t));
  ASSERT_EQ(mv.code, 0) << mv.out;
  int now_on = WaitGroupRunning(g, 120s, a);
  ASSERT_EQ(now_on, t) << "the group did not move to " << N(t);
  Phase("moved " + N(a) + " -> " + N(t) + " in " + std::to_string(Since(t_move)) + " s");

  std::string old_log = DemoLogSince(a, s, mark);
  auto exited = LastMatch(old_log, R"(exiting \(counter=(\d+)\))");
  ASSERT_FALSE(exited.empty()) << old_log;
  uint64_t stop_counter = std::stoull(exited[1]);
  // The final commit at SIGTERM was synchronous and acknowledged by the replicas.
  auto synced = LastMatch(old_log, R"(synced counter=(\d+) version=\S+ \(stop; acknowledged)");
  ASSERT_FALSE(synced.empty()) << "final synchronous commit not acknowledged:\n" << old_log;
  EXPECT_EQ(std::stoull(synced[1]), stop_counter);

  Restored r;
  ASSERT_TRUE(WaitFor([&] { return (r = RestoredFromLog(DemoLogSince(t, s, mark))).found; }, 30s))
      << DemoLogSince(t, s, mark);
  EXPECT_EQ(r.counter, stop_counter) << "the counter must continue exactly where it stopped";
  EXPECT_TRUE(WaitDemoCounter(t, s, stop_counter + 3, 30s));
  si = Show(t, s);
  EXPECT_EQ(si.owner, t) << si.raw;

  // --clear removes the move constraint; the group stays where it is.
  CmdResult clr = Pcmk("crm_resource --clear -r " + g);
  ASSERT_EQ(clr.code, 0) << clr.out;
  EXPECT_EQ(Pcmk("cibadmin -Q -o constraints").out.find("cli-prefer-" + g), std::string::npos);
  EXPECT_EQ(WaitGroupRunning(g, 30s), t);
}

// 4. Owner and every replica gone.
TEST_F(FailoverCluster, AllCopiesGoneRestoresFromGlobalDirElseFollowsOnMissing) {
  const std::string g = "g4", s = "s4";
  int a = StartNewGroup(g, s);
  ASSERT_NE(a, 0);
  ASSERT_TRUE(WaitDemoCounter(a, s, 10, 60s));
  LogMark mark = MarkLogs(s);
  SetTargetRole(g, "Stopped");
  ASSERT_TRUE(WaitFor([&] { return GroupStopped(g); }, 90s));
  auto exited = LastMatch(DemoLogSince(a, s, mark), R"(exiting \(counter=(\d+)\))");
  ASSERT_FALSE(exited.empty()) << DemoLogSince(a, s, mark);
  uint64_t stop_counter = std::stoull(exited[1]);

  // The global copy (written by the first replica, at most once a second) reaches that state.
  fs::path global_copy = g_global / (s + ".ckpt");
  std::optional<uint64_t> global_counter;
  ASSERT_TRUE(WaitFor([&] {
    std::string img = ReadFile(global_copy);
    size_t at = img.find(std::string("CDEM\x01\0\0\0", 8));
    global_counter = at == std::string::npos ? std::nullopt : CounterInImage(img, at);
    return global_counter == stop_counter;
  }, 30s)) << global_copy << ": counter " << (global_counter ? std::to_string(*global_counter) : "none")
           << ", want " << stop_counter;

  // Every holder loses its copies: ckptd stopped everywhere, the segment's files deleted,
  // ckptd started again (the catalog is rebuilt from what the nodes still hold: nothing).
  auto wipe = [&](bool global) {
    CmdResult r = g_lab->Lab("ckptd stop all");
    ASSERT_EQ(r.code, 0) << r.out;
    for (int n = 1; n <= kNodes; n++) {
      r = g_lab->Exec(n, "rm -rf /var/lib/ckpt/segments/" + s + " /dev/shm/ckpt/" + s);
      ASSERT_EQ(r.code, 0) << r.out;
    }
    if (global) fs::remove(global_copy);
    for (int n = 1; n <= kNodes; n++) ASSERT_EQ(StartCkptd(n).code, 0);
    ASSERT_TRUE(WaitFor([] { return AllCkptdSee({1, 2, 3}); }, 90s));
    for (int n = 1; n <= kNodes; n++) {
      CmdResult show = Ctl(n, "show " + s);
      ASSERT_EQ(show.code, 3) << N(n) << " still knows " << s << ": " << show.out;
    }
  };
  wipe(false);
  ASSERT_FALSE(HasFatalFailure());
  Phase("all copies of " + s + " deleted; the global copy holds counter " + std::to_string(stop_counter));

  // on_missing=fail, so the start succeeds only if the checkpoint is really restored.
  SetParam(g + "-ckpt", "on_missing", "fail");
  mark = MarkLogs(s);
  SetTargetRole(g, "Started");
  int b = WaitGroupRunning(g, 120s);
  ASSERT_NE(b, 0) << "the pull did not restore from the global copy";
  Restored r;
  ASSERT_TRUE(WaitFor([&] { return (r = RestoredFromLog(DemoLogSince(b, s, mark))).found; }, 30s))
      << DemoLogSince(b, s, mark);
  EXPECT_EQ(r.counter, stop_counter) << "restored from " << global_copy;
  EXPECT_TRUE(WaitDemoCounter(b, s, stop_counter + 3, 30s));
  Phase("restored from the global copy on " + N(b) + " at counter " + std::to_string(r.counter));

  // Again without the global copy: on_missing=fail fails the start with its reason ...
  SetTargetRole(g, "Stopped");
  ASSERT_TRUE(WaitFor([&] { return GroupStopped(g); }, 90s));
  wipe(true);
  ASSERT_FALSE(HasFatalFailure());
  mark = MarkLogs(s);
  SetTargetRole(g, "Started");
  std::string mon;
  std::string reason = "no checkpoint of " + s + " exists and on_missing=fail";
  EXPECT_TRUE(WaitFor([&] {
    mon = Pcmk("crm_mon -1").out;
    return FailedStarts(mon, g + "-ckpt") == kNodes && ShowsReason(mon, g + "-ckpt", reason) &&
           GroupStopped(g);
  }, 120s)) << mon;
  for (int n = 1; n <= kNodes; n++) EXPECT_EQ(DemoLogSince(n, s, mark), "") << N(n);
  Phase("on_missing=fail: start failed");

  // ... and start-empty starts the application fresh.
  SetParam(g + "-ckpt", "on_missing", "start-empty");
  CmdResult cl = Pcmk("crm_resource --cleanup -r " + g);
  ASSERT_EQ(cl.code, 0) << cl.out;
  int c = WaitGroupRunning(g, 120s);
  ASSERT_NE(c, 0);
  ASSERT_TRUE(WaitFor([&] { return DemoLogSince(c, s, mark).find("no checkpoint: starting fresh") != std::string::npos; }, 30s))
      << DemoLogSince(c, s, mark);
  DemoState d;
  EXPECT_TRUE(WaitDemoCounter(c, s, 1, 30s, &d));
  // A fresh state has starts == 1 (a restored one would count this start too).  The counter is
  // no proof: on a loaded machine the demo may tick past stop_counter before the first poll.
  EXPECT_EQ(d.starts, 1u) << "a fresh start, not a restore: " << d.raw;
}

// 5. Failover onto a node that holds a replica: no segment bytes over CPG.
//
// R=2, so that both survivors hold the version.  The application is stopped (its final commit
// acknowledged by both replicas) while the checkpoint resource keeps the segment owned on its
// node; that node crashes and the checkpoint fails over.  From the crash until the new owner has
// relabelled the other replica's copy into its epoch, every ckptd's payload counters stay put:
// the pull restores the local copy and the relabel is a zero-byte delta.  (With the application
// running, its commits would move bytes in that window: the demo's sync commits fail with
// CKPT_ERR_REPLICAS while a replica is missing, after which libckpt sends the whole segment.)
TEST_F(FailoverCluster, FailoverOntoReplicaTransfersNoSegmentBytes) {
  const std::string g = "g5", s = "s5";
  // Created by ckptctl (all zeroes, which the demo takes as "no state yet") with --replicas 2,
  // then released for the group to pull.
  std::string zeros = (g_tmp / "zeros.bin").string();
  std::ofstream(zeros, std::ios::binary).write(std::string(kDemoSegmentSize, '\0').data(), kDemoSegmentSize);
  CmdResult put = Ctl(1, "put " + s + " " + zeros + " --replicas 2");
  ASSERT_EQ(put.code, 0) << put.out;
  ASSERT_EQ(Ctl(1, "release " + s).code, 0);
  int a = StartNewGroup(g, s);
  ASSERT_NE(a, 0);
  ASSERT_TRUE(WaitDemoCounter(a, s, 10, 60s));

  LogMark mark = MarkLogs(s);
  CmdResult stop_app = Pcmk("crm_resource -r " + g + "-app --meta -p target-role -v Stopped");
  ASSERT_EQ(stop_app.code, 0) << stop_app.out;
  ASSERT_TRUE(WaitFor([&] { return ResourceNodes(g + "-app", 0, false).empty(); }, 60s));
  auto synced = LastMatch(DemoLogSince(a, s, mark), R"(synced counter=(\d+) version=\S+ \(stop; acknowledged)");
  ASSERT_FALSE(synced.empty()) << DemoLogSince(a, s, mark);
  uint64_t stop_counter = std::stoull(synced[1]);
  SegInfo si;
  ASSERT_TRUE(WaitFor([&] {
    si = Show(a, s);
    int copies = 0;
    for (auto& h : si.holders) copies += h.live && h.version == si.latest;
    return si.owner == a && copies == 3;
  }, 60s)) << si.raw;
  auto holders = [&](const SegInfo& x) {
    std::string out = "latest " + x.latest.Label() + ", owner " + N(x.owner) + ", holders:";
    for (auto& h : x.holders) out += " " + N(h.node) + "=" + h.version.Label() + (h.live ? "" : "(down)");
    return out;
  };
  std::cout << "[   info   ] before the crash: " << holders(si) << "\n";

  std::map<int, Counters> before;
  for (int n = 1; n <= kNodes; n++) before[n] = CkptdCounters(n);
  auto t_crash = Clock::now();
  CrashNode(a);
  int b = 0;
  ASSERT_TRUE(WaitFor([&] {
    auto on = ResourceNodes(g + "-ckpt", RefNode());
    b = on.size() == 1 && on[0] != a ? on[0] : 0;
    return b != 0;
  }, 120s)) << "the checkpoint resource did not fail over";
  int o = 0;
  for (int n : UpNodes())
    if (n != b) o = n;
  SegInfo after_si;
  EXPECT_TRUE(WaitFor([&] {
    after_si = Show(b, s);
    bool relabelled = false;
    for (auto& h : after_si.holders)
      if (h.node == o && h.version.epoch == after_si.epoch && h.version.seq == si.latest.seq) relabelled = true;
    return after_si.owner == b && relabelled;
  }, 30s)) << "the other replica's copy was not relabelled: " << after_si.raw;
  Phase("checkpoint failed over " + N(a) + " -> " + N(b) + " in " + std::to_string(Since(t_crash)) + " s");
  std::cout << "[   info   ] after the failover: " << holders(after_si) << "\n";
  std::map<int, Counters> after;
  for (int n : UpNodes()) after[n] = CkptdCounters(n);
  std::ostringstream counts;
  for (int n : UpNodes())
    counts << N(n) << ": sent " << after[n].sent - before[n].sent << ", received "
           << after[n].received - before[n].received << " payload bytes; ";
  std::cout << "[   info   ] failover window: " << counts.str() << "\n";
  EXPECT_EQ(after_si.latest.seq, si.latest.seq) << "nothing was committed in between";
  for (int n : UpNodes()) {
    EXPECT_EQ(after[n].sent, before[n].sent) << N(n) << ": " << counts.str();
    EXPECT_EQ(after[n].received, before[n].received) << N(n) << ": " << counts.str();
  }

  // The application starts on the new owner from exactly where it stopped.
  mark = MarkLogs(s);
  CmdResult start_app = Pcmk("crm_resource -r " + g + "-app --meta -p target-role -v Started");
  ASSERT_EQ(start_app.code, 0) << start_app.out;
  ASSERT_EQ(WaitGroupRunning(g, 60s), b);
  Restored r;
  ASSERT_TRUE(WaitFor([&] { return (r = RestoredFromLog(DemoLogSince(b, s, mark))).found; }, 30s))
      << DemoLogSince(b, s, mark);
  EXPECT_EQ(r.counter, stop_counter);
  EXPECT_EQ(r.seq, si.latest.seq);
}

// 6. Partition: the owner's link is cut.
TEST_F(FailoverCluster, PartitionedOwnerIsFencedAndClusterConvergesOnNewOwner) {
  const std::string g = "g6", s = "s6";
  int a = StartNewGroup(g, s);
  ASSERT_NE(a, 0);
  ASSERT_TRUE(WaitDemoCounter(a, s, 10, 60s));
  SegInfo before = Show(a, s);
  LogMark mark = MarkLogs(s);
  auto t_cut = Clock::now();
  CutNode(a);
  int ref = RefNode({a});
  int b = WaitGroupRunning(g, 120s, a, ref);
  ASSERT_NE(b, 0) << "the majority did not restart the group";
  Phase("cut " + N(a) + "; group restarted on " + N(b) + " after " + std::to_string(Since(t_cut)) + " s");
  SegInfo nb;
  ASSERT_TRUE(WaitFor([&] { nb = Show(b, s); return nb.owner == b && nb.epoch > before.epoch; }, 30s)) << nb.raw;

  // The cut node lost quorum: its Pacemaker stopped the group there (the demo exited).
  ASSERT_TRUE(WaitFor([&] { return DemoLogSince(a, s, mark).find("exiting (counter=") != std::string::npos; }, 90s))
      << DemoLogSince(a, s, mark);
  EXPECT_TRUE(WaitFor([&] { return GroupStopped(g, a); }, 60s)) << Pcmk("crm_mon -1", a).out;
  std::string old_log = DemoLogSince(a, s, mark);
  EXPECT_EQ(old_log.find("(stop; acknowledged"), std::string::npos)
      << "nobody could acknowledge the old owner's final commit:\n" << old_log;

  // A stale writer on the old owner commits once more while cut off (its ckptd still believes it
  // owns the segment): the marked bytes must never reach the cluster.
  const std::string marker = "STALE-COMMIT-FROM-THE-OLD-OWNER";
  std::optional<std::string> img = Get(a, s, std::nullopt, "old-owner");
  ASSERT_TRUE(img.has_value());
  img->replace(40000, marker.size(), marker);
  std::string stale = (g_tmp / "stale.bin").string();
  std::ofstream(stale, std::ios::binary).write(img->data(), img->size());
  CmdResult stale_put = Ctl(a, "put " + s + " " + stale + " --no-sync");
  std::cout << "[   info   ] put on the cut-off old owner: exit " << stale_put.code << ": " << stale_put.out;
  SegInfo on_a = Show(a, s);
  std::cout << "[   info   ] the old owner's view while cut off: owner " << on_a.owner << ", latest "
            << on_a.latest.Label() << "\n";

  HealNode(a);
  CmdResult w = g_lab->Lab("wait --timeout 180");
  ASSERT_EQ(w.code, 0) << w.out;
  ASSERT_TRUE(WaitFor([] { return AllCkptdSee({1, 2, 3}); }, 90s));
  Phase("healed " + N(a));
  // Every node agrees: owner b, b's epoch.
  std::map<int, SegInfo> views;
  EXPECT_TRUE(WaitFor([&] {
    bool same = true;
    for (int n = 1; n <= kNodes; n++) {
      views[n] = Show(n, s);
      same &= views[n].owner == b && views[n].epoch == nb.epoch;
    }
    return same;
  }, 60s)) << views[1].raw << "\n" << views[2].raw << "\n" << views[3].raw;
  EXPECT_EQ(GroupNode(g), b) << "the group must stay on the new owner";
  // The old owner is fenced: ckptctl on it can no longer write the segment.
  CmdResult again = Ctl(a, "put " + s + " " + stale);
  EXPECT_NE(again.code, 0) << again.out;
  std::cout << "[   info   ] put on the old owner after heal: exit " << again.code << ": " << again.out;
  EXPECT_EQ(ReadFile(DemoLogPath(b, s)).find("fenced"), std::string::npos) << "the new owner must not be fenced";
  DemoState db = DemoStatus(b, s);
  EXPECT_TRUE(db.ok) << db.raw;
  EXPECT_TRUE(WaitDemoCounter(b, s, db.counter + 3, 30s)) << "the new owner keeps committing";

  // Stop the application (final commit, release) so that the version stands still; then every
  // node reports the same version and every holder has it byte-exact, without the stale bytes.
  SetTargetRole(g, "Stopped");
  ASSERT_TRUE(WaitFor([&] { return GroupStopped(g); }, 90s));
  Ver final_v;
  EXPECT_TRUE(WaitFor([&] {
    bool same = true;
    for (int n = 1; n <= kNodes; n++) {
      views[n] = Show(n, s);
      same &= views[n].latest == views[1].latest && views[n].epoch == nb.epoch;
    }
    final_v = views[1].latest;
    return same;
  }, 60s)) << views[1].raw << "\n" << views[2].raw << "\n" << views[3].raw;
  EXPECT_EQ(final_v.epoch, nb.epoch) << "the old owner's epoch must not win";
  auto ref_bytes = Get(b, s, final_v, "final");
  ASSERT_TRUE(ref_bytes.has_value());
  EXPECT_EQ(ref_bytes->find(marker), std::string::npos);
  int holders_checked = 0;
  for (auto& h : views[b].holders) {
    if (!h.live || !(h.version == final_v)) continue;
    auto got = Get(h.node, s, final_v, "holder");
    ASSERT_TRUE(got.has_value()) << N(h.node);
    EXPECT_TRUE(*got == *ref_bytes) << N(h.node) << " holds different bytes for " << final_v.Label();
    holders_checked++;
  }
  EXPECT_GE(holders_checked, 2) << "owner and at least one replica hold the final version: " << views[b].raw;
  for (int n = 1; n <= kNodes; n++) {
    auto latest = Get(n, s, std::nullopt, "latest");
    ASSERT_TRUE(latest.has_value()) << N(n);
    EXPECT_TRUE(*latest == *ref_bytes) << N(n) << " serves other bytes as the latest version";
  }
}

}  // namespace
