// libckpt + ckptctl against a real ckptd and a real (single-node) corosync.
// Runs inside with_corosync.sh: fresh /dev/shm and /run, loopback only.  Each test gets a fresh
// ckptd with its own state directory (started and killed by PID here).
#include <ckpt/ckpt.h>
#include <ckpt/ckpt.hpp>
#include <gtest/gtest.h>
#include <qb/qbipcc.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/random_bytes.hpp"

namespace fs = std::filesystem;

namespace {

using ckpt::testing::RandomBytes;

int RunCommand(const std::string& cmd, std::string* out = nullptr) {
  std::string full = cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  std::string o;
  while (size_t n = fread(buf, 1, sizeof buf, p)) o.append(buf, n);
  int st = pclose(p);
  if (out) *out = o;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

class Daemon {
 public:
  explicit Daemon(fs::path state, std::vector<std::string> extra = {})
      : state_(std::move(state)), extra_(std::move(extra)) {}
  ~Daemon() { Stop(); }

  void Start() {
    fs::create_directories(state_);
    pid_ = fork();
    if (pid_ == 0) {
      std::vector<std::string> args = {CKPTD_PATH,  "-f", "--state-dir", state_.string(),
                                       "--attributes=false", "--log-file",
                                       (state_ / "ckptd.log").string(), "--shm-dir",
                                       (state_ / "shm").string()};
      args.insert(args.end(), extra_.begin(), extra_.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 2);
      execv(argv[0], argv.data());
      _exit(127);
    }
    // Wait until ckptd joined the CPG group.
    for (int i = 0; i < 200; i++) {
      ckpt_client_t* c = nullptr;
      if (ckpt_connect(&c) == CKPT_OK) {
        ckpt_cluster_info_t info{};
        int rc = ckpt_cluster_status(c, &info);
        ckpt_disconnect(c);
        if (rc == CKPT_OK && info.joined) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL() << "ckptd did not join within 10 s";
  }
  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int st = 0;
      waitpid(pid_, &st, 0);
      pid_ = -1;
    }
  }
  void Kill() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  bool Alive() const { return pid_ > 0 && kill(pid_, 0) == 0; }
  const fs::path& state() const { return state_; }

 private:
  fs::path state_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
};

class CkptdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ckptd-api-XXXXXX";
    dir_ = mkdtemp(tmpl);
    daemon_ = std::make_unique<Daemon>(dir_ / "state");
    daemon_->Start();
    ASSERT_EQ(ckpt_connect(&client_), CKPT_OK);
  }
  void TearDown() override {
    if (client_) ckpt_disconnect(client_);
    daemon_.reset();
    fs::remove_all(dir_);
  }
  void Reconnect() {
    if (client_) ckpt_disconnect(client_);
    client_ = nullptr;
    ASSERT_EQ(ckpt_connect(&client_), CKPT_OK);
  }
  ckpt_segment_t* Create(const char* name, uint64_t size, uint32_t flags = 0) {
    ckpt_open_options_t o{};
    o.size = size;
    o.flags = CKPT_OPEN_CREATE | flags;
    ckpt_segment_t* seg = nullptr;
    int rc = ckpt_open(client_, name, &o, &seg);
    EXPECT_EQ(rc, CKPT_OK) << ckpt_last_error(client_);
    return seg;
  }
  std::vector<uint8_t> ReadAll(const char* name, uint64_t size, ckpt_version_t* v = nullptr,
                               const ckpt_version_t* want = nullptr) {
    std::vector<uint8_t> out(size);
    int rc = ckpt_read(client_, name, want, 0, out.data(), size, v);
    EXPECT_EQ(rc, CKPT_OK) << ckpt_last_error(client_);
    return out;
  }

  fs::path dir_;
  std::unique_ptr<Daemon> daemon_;
  ckpt_client_t* client_ = nullptr;
};

TEST_F(CkptdTest, CommitAsyncThenReadBackByteExact) {
  const uint64_t size = 3 * 65536 + 123;
  ckpt_segment_t* seg = Create("app.state", size);
  ASSERT_NE(seg, nullptr);
  ASSERT_EQ(ckpt_segment_size(seg), size);
  auto data = RandomBytes(size, 1);
  ASSERT_EQ(ckpt_write(seg, 0, data.data(), size), CKPT_OK);
  ckpt_version_t v1{};
  ASSERT_EQ(ckpt_commit(seg, 0, 0, &v1), CKPT_OK);
  EXPECT_EQ(v1.seq, 1u);
  // A second commit of a small range through the mapping.
  auto* map = static_cast<uint8_t*>(ckpt_segment_data(seg));
  std::memset(map + 70000, 0xAB, 5000);
  std::memset(data.data() + 70000, 0xAB, 5000);
  ASSERT_EQ(ckpt_mark_dirty(seg, 70000, 5000), CKPT_OK);
  ckpt_version_t v2{};
  ASSERT_EQ(ckpt_commit(seg, 0, 0, &v2), CKPT_OK);
  EXPECT_EQ(v2.seq, 2u);
  EXPECT_EQ(v2.epoch, v1.epoch);
  // Written after the commit returned: must not appear in the committed version.
  std::memset(map, 0xFF, 4096);
  ckpt_version_t got{};
  auto back = ReadAll("app.state", size, &got);
  EXPECT_EQ(got.seq, 2u);
  EXPECT_EQ(back, data);
  ckpt_close(seg);
}

TEST_F(CkptdTest, SyncCommitOnSingleNodeReportsNotEnoughReplicas) {
  ckpt_segment_t* seg = Create("lonely", 4096);
  ASSERT_NE(seg, nullptr);
  ASSERT_EQ(ckpt_write(seg, 0, "x", 1), CKPT_OK);
  ckpt_version_t v{};
  EXPECT_EQ(ckpt_commit(seg, CKPT_COMMIT_SYNC, 2000, &v), CKPT_ERR_REPLICAS);
  EXPECT_NE(std::string(ckpt_last_error(client_)).find("replicas"), std::string::npos);
  ckpt_close(seg);
}

TEST_F(CkptdTest, FlushAllAnswersForEveryOpenSegment) {
  EXPECT_EQ(ckpt_flush_all(client_, 2000), CKPT_OK);  // nothing open
  ckpt_segment_t* a = Create("fa-a", 4096);
  ckpt_segment_t* b = Create("fa-b", 4096);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(ckpt_flush_all(client_, 2000), CKPT_OK);  // open, nothing committed yet
  ASSERT_EQ(ckpt_write(b, 0, "x", 1), CKPT_OK);
  ASSERT_EQ(ckpt_commit(b, 0, 0, nullptr), CKPT_OK);
  // One node: b's version can never get its replica, and the call says so (naming it).
  EXPECT_EQ(ckpt_flush_all(client_, 2000), CKPT_ERR_REPLICAS);
  EXPECT_NE(std::string(ckpt_last_error(client_)).find("fa-b"), std::string::npos)
      << ckpt_last_error(client_);
  EXPECT_EQ(ckpt_flush_all(nullptr, 0), CKPT_ERR_INVALID);
  ckpt_close(a);
  ckpt_close(b);
}

TEST_F(CkptdTest, LargeCommitIsSentInPartsAndAppliedWhole) {
  const uint64_t size = 20ull << 20;  // > the 4 MiB IPC ring: several parts
  ckpt_segment_t* seg = Create("big", size);
  ASSERT_NE(seg, nullptr);
  auto data = RandomBytes(size, 7);
  std::memcpy(ckpt_segment_data(seg), data.data(), size);
  ckpt_version_t v{};
  ASSERT_EQ(ckpt_commit(seg, CKPT_COMMIT_ALL, 0, &v), CKPT_OK) << ckpt_last_error(client_);
  ckpt_version_t got{};
  EXPECT_EQ(ReadAll("big", size, &got), data);
  EXPECT_EQ(got.seq, v.seq);
  ckpt_close(seg);
}

TEST_F(CkptdTest, PullOnOwnerRestoresLastCommitAndUnknownIsNoCheckpoint) {
  ckpt_segment_t* seg = Create("restore", 8192);
  ASSERT_NE(seg, nullptr);
  ASSERT_EQ(ckpt_write(seg, 0, "committed", 9), CKPT_OK);
  ASSERT_EQ(ckpt_commit(seg, 0, 0, nullptr), CKPT_OK);
  ASSERT_EQ(ckpt_write(seg, 0, "UNCOMMIT!", 9), CKPT_OK);  // never committed
  ckpt_close(seg);
  ckpt_version_t v{};
  ASSERT_EQ(ckpt_pull(client_, "restore", 5000, &v), CKPT_OK) << ckpt_last_error(client_);
  EXPECT_EQ(v.seq, 1u);
  ckpt_open_options_t o{};
  ASSERT_EQ(ckpt_open(client_, "restore", &o, &seg), CKPT_OK) << ckpt_last_error(client_);
  EXPECT_EQ(std::memcmp(ckpt_segment_data(seg), "committed", 9), 0);
  ckpt_close(seg);
  EXPECT_EQ(ckpt_pull(client_, "never-created", 5000, &v), CKPT_NO_CHECKPOINT);
  // The C++ wrapper maps "no checkpoint" to nullopt, errors to exceptions.
  ckpt::Client cxx;
  EXPECT_FALSE(cxx.pull("never-created").has_value());
  EXPECT_THROW(cxx.pull("bad/name"), ckpt::Error);
}

TEST_F(CkptdTest, BadInputGetsClearErrors) {
  ckpt_open_options_t o{};
  o.size = 4096;
  o.flags = CKPT_OPEN_CREATE;
  ckpt_segment_t* seg = nullptr;
  EXPECT_EQ(ckpt_open(client_, "", &o, &seg), CKPT_ERR_NAME);
  EXPECT_EQ(ckpt_open(client_, "has space", &o, &seg), CKPT_ERR_NAME);
  EXPECT_EQ(ckpt_open(client_, std::string(129, 'a').c_str(), &o, &seg), CKPT_ERR_NAME);
  EXPECT_EQ(ckpt_open(client_, ".hidden", &o, &seg), CKPT_ERR_NAME);
  o.size = 1ull << 40;
  EXPECT_EQ(ckpt_open(client_, "huge", &o, &seg), CKPT_ERR_TOO_LARGE);
  o.size = 0;
  EXPECT_EQ(ckpt_open(client_, "zero", &o, &seg), CKPT_ERR_INVALID);
  o.flags = 0;
  o.size = 0;
  EXPECT_EQ(ckpt_open(client_, "absent", &o, &seg), CKPT_ERR_NOT_FOUND);
  seg = Create("ranges", 4096);
  ASSERT_NE(seg, nullptr);
  EXPECT_EQ(ckpt_write(seg, 4000, "0123456789012345678901234567890123456789", 100),
            CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_mark_dirty(seg, 4097, 1), CKPT_ERR_INVALID);
  // Second writer on the same node.
  ckpt_client_t* other = nullptr;
  ASSERT_EQ(ckpt_connect(&other), CKPT_OK);
  ckpt_segment_t* seg2 = nullptr;
  o.size = 4096;
  EXPECT_EQ(ckpt_open(other, "ranges", &o, &seg2), CKPT_ERR_BUSY);
  ckpt_disconnect(other);
  ckpt_close(seg);
  EXPECT_EQ(ckpt_delete(client_, "absent"), CKPT_ERR_NOT_FOUND);
  ckpt_segment_info_t info{};
  EXPECT_EQ(ckpt_stat(client_, "absent", &info), CKPT_ERR_NOT_FOUND);
}

TEST_F(CkptdTest, OtherUsersCannotWriteOrDeleteAPrivateSegment) {
  ckpt_segment_t* seg = Create("private", 4096);
  ASSERT_NE(seg, nullptr);
  ASSERT_EQ(ckpt_write(seg, 0, "secret", 6), CKPT_OK);
  ASSERT_EQ(ckpt_commit(seg, 0, 0, nullptr), CKPT_OK);
  ckpt_close(seg);
  pid_t child = fork();
  if (child == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(10);
    ckpt_client_t* c = nullptr;
    if (ckpt_connect(&c) != CKPT_OK) _exit(11);
    ckpt_open_options_t o{};
    ckpt_segment_t* s = nullptr;
    if (ckpt_open(c, "private", &o, &s) != CKPT_ERR_PERMISSION) _exit(12);
    if (ckpt_delete(c, "private") != CKPT_ERR_PERMISSION) _exit(13);
    char buf[6];
    if (ckpt_read(c, "private", nullptr, 0, buf, 6, nullptr) != CKPT_ERR_PERMISSION) _exit(14);
    if (ckpt_pull(c, "private", 1000, nullptr) != CKPT_ERR_PERMISSION) _exit(15);
    ckpt_segment_info_t info{};
    if (ckpt_stat(c, "private", &info) != CKPT_OK) _exit(16);  // metadata is visible
    ckpt_disconnect(c);
    _exit(0);
  }
  int st = 0;
  waitpid(child, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0) << "child step failed (see exit code in the test)";
  EXPECT_EQ(ReadAll("private", 6), std::vector<uint8_t>({'s', 'e', 'c', 'r', 'e', 't'}));
}

TEST_F(CkptdTest, GarbageIpcRequestsAreRefusedAndDaemonSurvives) {
  ckpt_segment_t* seg = Create("survivor", 4096);
  ASSERT_NE(seg, nullptr);
  ASSERT_EQ(ckpt_write(seg, 0, "alive", 5), CKPT_OK);
  ASSERT_EQ(ckpt_commit(seg, 0, 0, nullptr), CKPT_OK);
  ckpt_close(seg);
  qb_ipcc_connection_t* raw = qb_ipcc_connect("ckptd", 1 << 20);
  ASSERT_NE(raw, nullptr);
  std::mt19937 rng(42);
  for (int i = 0; i < 2000; i++) {
    std::vector<uint8_t> msg(sizeof(qb_ipc_request_header) + rng() % 300);
    for (auto& b : msg) b = static_cast<uint8_t>(rng());
    auto* h = reinterpret_cast<qb_ipc_request_header*>(msg.data());
    h->id = static_cast<int32_t>(rng() % 16);
    h->size = static_cast<int32_t>(msg.size());
    if (i % 3 == 0 && msg.size() > 10) {  // a valid version prefix, garbage after
      msg[sizeof(qb_ipc_request_header)] = 1;
      msg[sizeof(qb_ipc_request_header) + 1] = 0;
    }
    char resp[1 << 16];
    // Requests the daemon does not answer (one-way commit) time out quickly; that is fine.
    qb_ipcc_send(raw, msg.data(), msg.size());
    qb_ipcc_recv(raw, resp, sizeof resp, h->id == 3 ? 0 : 2000);
  }
  qb_ipcc_disconnect(raw);
  EXPECT_TRUE(daemon_->Alive());
  Reconnect();
  EXPECT_EQ(ReadAll("survivor", 5), std::vector<uint8_t>({'a', 'l', 'i', 'v', 'e'}));
}

TEST_F(CkptdTest, RestartReloadsSegmentsAndQuarantinesCorruptFiles) {
  auto a = RandomBytes(100000, 3);
  auto b = RandomBytes(5000, 4);
  ckpt_segment_t* sa = Create("keep-a", a.size());
  ckpt_segment_t* sb = Create("keep-b", b.size());
  ASSERT_NE(sa, nullptr);
  ASSERT_NE(sb, nullptr);
  ASSERT_EQ(ckpt_write(sa, 0, a.data(), a.size()), CKPT_OK);
  ASSERT_EQ(ckpt_commit(sa, 0, 0, nullptr), CKPT_OK);
  ASSERT_EQ(ckpt_write(sb, 0, b.data(), b.size()), CKPT_OK);
  ASSERT_EQ(ckpt_commit(sb, 0, 0, nullptr), CKPT_OK);
  ckpt_close(sa);
  ckpt_close(sb);
  ckpt_disconnect(client_);
  client_ = nullptr;
  daemon_->Stop();
  // Damage every version file of keep-b.
  int damaged = 0;
  for (auto& e : fs::recursive_directory_iterator(daemon_->state())) {
    if (!e.is_regular_file() || e.path().string().find("keep-b") == std::string::npos) continue;
    if (e.path().filename() == "meta") continue;
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(e.file_size() / 2));
    f.put('\x5a');
    damaged++;
  }
  ASSERT_GT(damaged, 0);
  daemon_->Start();
  Reconnect();
  ckpt_version_t v{};
  EXPECT_EQ(ReadAll("keep-a", a.size(), &v), a);
  EXPECT_EQ(v.seq, 1u);
  // keep-b's only copy was corrupt: it is not served.
  std::vector<uint8_t> out(b.size());
  int rc = ckpt_read(client_, "keep-b", nullptr, 0, out.data(), out.size(), nullptr);
  EXPECT_NE(rc, CKPT_OK);
  bool quarantined = false;
  for (auto& e : fs::recursive_directory_iterator(daemon_->state()))
    if (e.path().extension() == ".corrupt") quarantined = true;
  EXPECT_TRUE(quarantined);
}

TEST_F(CkptdTest, DeleteRemovesTheSegment) {
  ckpt_segment_t* seg = Create("doomed", 4096);
  ASSERT_NE(seg, nullptr);
  ASSERT_EQ(ckpt_commit(seg, CKPT_COMMIT_ALL, 0, nullptr), CKPT_OK);
  EXPECT_EQ(ckpt_delete(client_, "doomed"), CKPT_ERR_BUSY);  // still open
  ckpt_close(seg);
  EXPECT_EQ(ckpt_delete(client_, "doomed"), CKPT_OK) << ckpt_last_error(client_);
  ckpt_segment_info_t info{};
  EXPECT_EQ(ckpt_stat(client_, "doomed", &info), CKPT_ERR_NOT_FOUND);
  // Re-creating after delete works and starts from zeros.
  seg = Create("doomed", 4096);
  ASSERT_NE(seg, nullptr);
  EXPECT_EQ(static_cast<uint8_t*>(ckpt_segment_data(seg))[0], 0);
  ckpt_close(seg);
}

TEST_F(CkptdTest, VersionsKeptAreReadable) {
  ckpt_open_options_t o{};
  o.size = 4096;
  o.flags = CKPT_OPEN_CREATE;
  o.versions_kept = 3;
  ckpt_segment_t* seg = nullptr;
  ASSERT_EQ(ckpt_open(client_, "history", &o, &seg), CKPT_OK);
  std::vector<ckpt_version_t> vs;
  for (char c : std::string("ABCD")) {
    ASSERT_EQ(ckpt_write(seg, 0, &c, 1), CKPT_OK);
    ckpt_version_t v{};
    ASSERT_EQ(ckpt_commit(seg, 0, 0, &v), CKPT_OK);
    vs.push_back(v);
  }
  ckpt_close(seg);
  ckpt_version_info_t* infos = nullptr;
  size_t n = 0;
  ASSERT_EQ(ckpt_versions(client_, "history", &infos, &n), CKPT_OK);
  EXPECT_EQ(n, 3u);
  free(infos);
  char got = 0;
  ASSERT_EQ(ckpt_read(client_, "history", &vs[1], 0, &got, 1, nullptr), CKPT_OK)
      << ckpt_last_error(client_);
  EXPECT_EQ(got, 'B');
  EXPECT_EQ(ckpt_read(client_, "history", &vs[0], 0, &got, 1, nullptr), CKPT_ERR_NOT_FOUND);
}

TEST_F(CkptdTest, CkptctlEndToEnd) {
  auto data = RandomBytes(1 << 20, 9);
  fs::path in = dir_ / "in.bin", out = dir_ / "out.bin";
  std::ofstream(in, std::ios::binary).write(reinterpret_cast<char*>(data.data()), data.size());
  std::string o;
  const std::string ctl = CKPTCTL_PATH;
  EXPECT_EQ(RunCommand(ctl + " put cli-seg " + in.string() + " --no-sync", &o), 0) << o;
  EXPECT_EQ(RunCommand(ctl + " get cli-seg " + out.string(), &o), 0) << o;
  std::ifstream f(out, std::ios::binary);
  std::vector<uint8_t> back((std::istreambuf_iterator<char>(f)), {});
  EXPECT_EQ(back, data);
  EXPECT_EQ(RunCommand(ctl + " list --json", &o), 0) << o;
  EXPECT_NE(o.find("\"cli-seg\""), std::string::npos) << o;
  EXPECT_EQ(RunCommand(ctl + " show cli-seg", &o), 0) << o;
  EXPECT_NE(o.find("1048576"), std::string::npos) << o;
  EXPECT_EQ(RunCommand(ctl + " versions cli-seg", &o), 0) << o;
  EXPECT_EQ(RunCommand(ctl + " status", &o), 0) << o;
  EXPECT_EQ(RunCommand(ctl + " pull nothing-here", &o), 4) << o;
  EXPECT_EQ(RunCommand(ctl + " get nothing-here -", &o), 3) << o;
  EXPECT_EQ(RunCommand(ctl + " show 'bad name'", &o), 2) << o;
  EXPECT_EQ(RunCommand(ctl + " frobnicate", &o), 2) << o;
  EXPECT_EQ(RunCommand(ctl + " delete cli-seg", &o), 0) << o;
  EXPECT_EQ(RunCommand(ctl + " show cli-seg", &o), 3) << o;
}

}  // namespace
