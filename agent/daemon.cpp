#include "agent/daemon.hpp"

#include <fcntl.h>
#include <qb/qbipc_common.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <memory>

#include "agent/log.hpp"
#include "agent/logging.hpp"
#include "common/ipc_messages.hpp"
#include "store/block_arena.hpp"

namespace ckpt::agent {
namespace {

constexpr size_t kSendReserveBytes = 2u << 20;  // kept free in the transport for control messages
// DATA is encoded only while the transport holds less than this (corosync's own queue holds
// about 4 MiB more).  Chunks encoded further ahead only wait in memory, and a transport full of
// them (send-queue-bytes, 64 MiB) made every large transfer fault in fresh pages for its
// messages, since the heap it freed the time before was handed back to the kernel
// (M_TRIM_THRESHOLD, main.cpp): 16,000 page faults per 64 MiB on the owner, a quarter of its CPU.
constexpr size_t kDataAheadBytes = 8u << 20;
constexpr uint64_t kTickMs = 100;
constexpr uint64_t kConnectRetryMs = 1000;
constexpr uint64_t kAttributeRetryMs = 10000;
constexpr int kMaxPumpRounds = 4;  // then yield to the loop and continue from a timer
constexpr size_t kPumpSendSliceBytes = 4u << 20;  // DATA generated per TakeReady
// libqb reads up to 50 queued requests of a connection per dispatch at FAST (5 at NORMAL), so a
// stream of commits reaches the engine in batches and its DATA leaves in few bundles (64 KiB
// segments, R=2: ~1.45 -> ~1.23 s per 64 MiB round in the lab).  IPC then has the priority of
// CPG deliveries (both HIGH).
constexpr qb_ipcs_rate_limit kClientRate = QB_IPCS_RATE_FAST;
constexpr size_t kOverflowWarnBytes = 16u << 20;
// Store backlog above which client requests pause (the queued ops pin their snapshots).
constexpr uint64_t kMaxStoreBacklogBytes = 256ull << 20;
constexpr uint64_t kMaxStoreBacklogOps = 4096;
// Stand-in self nodeid while corosync has not told us ours (the engine needs a nonzero one; knet
// node ids are < 65536, so this never collides).  The engine is rebuilt once the real one is known.
constexpr uint32_t kUnknownNodeid = 0xffffffffu;

uint64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

// ---- qb_loop adapters for the IPC server (libqb passes no user data: one loop per process) ----
qb_loop_t* g_loop = nullptr;
// Runs after every IPC fd dispatch (libqb hands over up to 50 requests per dispatch at the FAST
// rate, see kClientRate): the daemon pumps once for all of them.
std::function<void()> g_after_ipc_dispatch;

// libqb's handler and its data for one IPC fd, so the loop calls IpcFdTrampoline instead.
struct IpcFd {
  qb_ipcs_dispatch_fn_t fn = nullptr;
  void* data = nullptr;
};
std::map<int32_t, std::unique_ptr<IpcFd>> g_ipc_fds;

int32_t IpcFdTrampoline(int32_t fd, int32_t revents, void* p) {
  auto* e = static_cast<IpcFd*>(p);
  int32_t rc = e->fn(fd, revents, e->data);
  if (g_after_ipc_dispatch) g_after_ipc_dispatch();
  return rc;
}
IpcFd* IpcFdEntry(int32_t fd, void* data, qb_ipcs_dispatch_fn_t fn) {
  auto& e = g_ipc_fds[fd];
  if (!e) e = std::make_unique<IpcFd>();
  e->fn = fn;
  e->data = data;
  return e.get();
}
int32_t DispatchAdd(enum qb_loop_priority p, int32_t fd, int32_t events, void* data,
                    qb_ipcs_dispatch_fn_t fn) {
  return qb_loop_poll_add(g_loop, p, fd, events, IpcFdEntry(fd, data, fn), IpcFdTrampoline);
}
int32_t DispatchMod(enum qb_loop_priority p, int32_t fd, int32_t events, void* data,
                    qb_ipcs_dispatch_fn_t fn) {
  return qb_loop_poll_mod(g_loop, p, fd, events, IpcFdEntry(fd, data, fn), IpcFdTrampoline);
}
// The entry stays (reused if the fd number comes back): libqb may still be inside its handler.
int32_t DispatchDel(int32_t fd) { return qb_loop_poll_del(g_loop, fd); }
// libqb also runs IPC work from jobs (e.g. requests left after a dispatch): pump after those too.
struct IpcJob {
  qb_loop_job_dispatch_fn fn;
  void* data;
};
void IpcJobTrampoline(void* p) {
  std::unique_ptr<IpcJob> job(static_cast<IpcJob*>(p));
  job->fn(job->data);
  if (g_after_ipc_dispatch) g_after_ipc_dispatch();
}
int32_t JobAdd(enum qb_loop_priority p, void* data, qb_loop_job_dispatch_fn fn) {
  auto job = std::make_unique<IpcJob>(IpcJob{fn, data});
  int32_t rc = qb_loop_job_add(g_loop, p, job.get(), IpcJobTrampoline);
  if (rc == 0) job.release();  // freed by the trampoline
  return rc;
}

Daemon* DaemonOf(qb_ipcs_connection_t* c) {
  return static_cast<Daemon*>(qb_ipcs_connection_service_context_get(c));
}
int32_t IpcAccept(qb_ipcs_connection_t* c, uid_t uid, gid_t gid) {
  return DaemonOf(c)->OnAccept(c, uid, gid);
}
void IpcCreated(qb_ipcs_connection_t* c) { DaemonOf(c)->OnCreated(c); }
int32_t IpcMessage(qb_ipcs_connection_t* c, void* data, size_t size) {
  return DaemonOf(c)->OnMessage(c, data, size);
}
int32_t IpcClosed(qb_ipcs_connection_t*) { return 0; }
void IpcDestroyed(qb_ipcs_connection_t* c) { DaemonOf(c)->OnDestroyed(c); }

void TickTrampoline(void* data) { static_cast<Daemon*>(data)->OnTimerTick(); }
void ConnectTrampoline(void* data) { static_cast<Daemon*>(data)->OnConnectTimer(); }
int32_t SignalTrampoline(int32_t sig, void* data) {
  static_cast<Daemon*>(data)->OnSignal(sig);
  return 0;
}

const char* StoreOpName(repl::StoreOp::Kind k) {
  switch (k) {
    case repl::StoreOp::kPutMeta:
      return "put-meta";
    case repl::StoreOp::kPutFull:
      return "put-full";
    case repl::StoreOp::kPutDelta:
      return "put-delta";
    case repl::StoreOp::kPrune:
      return "prune";
    case repl::StoreOp::kDropSegment:
      return "drop-segment";
    case repl::StoreOp::kPutGlobal:
      return "put-global";
    case repl::StoreOp::kLoadGlobal:
      return "load-global";
    case repl::StoreOp::kInstallLocal:
      return "install-local";
    case repl::StoreOp::kEnsureLocal:
      return "ensure-local";
    case repl::StoreOp::kRemoveLocal:
      return "remove-local";
    case repl::StoreOp::kStreamBegin:
      return "stream-begin";
    case repl::StoreOp::kStreamAppend:
      return "stream-append";
    case repl::StoreOp::kStreamFinish:
      return "stream-finish";
    case repl::StoreOp::kStreamAbort:
      return "stream-abort";
    case repl::StoreOp::kLocalBegin:
      return "local-begin";
    case repl::StoreOp::kLocalAppend:
      return "local-append";
    case repl::StoreOp::kLocalFinish:
      return "local-finish";
    case repl::StoreOp::kLocalAbort:
      return "local-abort";
  }
  return "?";
}

}  // namespace

Daemon::Daemon(Config config) : config_(std::move(config)) {}

Daemon::~Daemon() { Shutdown(); }

// ---- startup / shutdown -----------------------------------------------------------------------

int Daemon::Run(const std::function<void(int)>& started) {
  Status st = Startup();
  if (!st.ok()) {
    CKPT_LOG_ERROR("startup failed: %s", st.ToString().c_str());
    if (started) started(kExitFailure);
    Shutdown();
    return kExitFailure;
  }
  if (started) started(kExitOk);
  CKPT_LOG_NOTICE("ckptd running (node %s, group %s)", config_.node_name.c_str(),
                  config_.cpg_group.c_str());
  qb_loop_run(loop_);
  CKPT_LOG_NOTICE("ckptd stopping (exit code %d)", exit_code_);
  Shutdown();
  return exit_code_;
}

Status Daemon::Startup() {
  loop_ = qb_loop_create();
  if (!loop_) return Err(Code::kNoMemory, "qb_loop_create failed");
  g_loop = loop_;
  g_after_ipc_dispatch = [this] { PumpIfRequested(); };

  for (int sig : {SIGTERM, SIGINT, SIGUSR2, SIGCHLD}) {
    qb_loop_signal_handle h = nullptr;
    if (qb_loop_signal_add(loop_, QB_LOOP_HIGH, sig, this, SignalTrampoline, &h) == 0)
      signals_.push_back(h);
  }
  signal(SIGPIPE, SIG_IGN);

  // Store.
  StoreOptions so;
  so.state_dir = config_.state_dir;
  so.global_dir = config_.global_dir;
  so.shm_dir = config_.shm_dir;
  auto store = SegmentStore::Open(so);
  if (!store.ok())
    return Err(store.status().code(),
               "cannot open the store in " + config_.state_dir + ": " + store.status().ToString());
  store_ = std::move(store.value());
  auto loaded = store_->LoadAll();
  if (!loaded.ok())
    return Err(loaded.status().code(), "loading segments: " + loaded.status().ToString());
  size_t versions = 0, empty = 0;
  for (const auto& s : *loaded) {
    versions += s.versions.size();
    if (s.versions.empty()) ++empty;
  }
  const StoreCounters sc = store_->counters();
  CKPT_LOG_INFO(
      "store %s: %zu segments, %zu versions, %zu without an intact version, "
      "%llu corrupt files quarantined",
      config_.state_dir.c_str(), loaded->size(), versions, empty,
      static_cast<unsigned long long>(sc.corrupt_files));
  if (sc.corrupt_files > 0)
    CKPT_LOG_WARN("%llu damaged store files were renamed *.corrupt under %s",
                  static_cast<unsigned long long>(sc.corrupt_files), config_.state_dir.c_str());
  loaded_ = std::move(loaded.value());
  auto worker =
      StoreWorker::Start(store_.get(), loop_, [this](auto& done) { OnStoreCompletions(done); });
  if (!worker.ok()) return worker.status();
  store_worker_ = std::move(worker.value());

  if (config_.attributes) attributes_ = std::make_unique<AttributePublisher>(config_.attrd_updater);

  // Try corosync once before building the engine, so it knows its nodeid in the common case.
  TryConnectCpg();
  if (!engine_) CreateEngine(kUnknownNodeid);

  CKPT_RETURN_IF_ERROR(StartIpc());
  if (!transport_) ArmConnectRetry();
  ArmTick();
  Pump();
  return Status::Ok();
}

void Daemon::CreateEngine(uint32_t self_nodeid) {
  repl::EngineConfig ec;
  ec.self_nodeid = self_nodeid;
  ec.node_name = config_.node_name;
  ec.eligible = config_.eligible;
  ec.default_replicas = config_.replicas;
  ec.default_versions_kept = config_.versions_kept;
  ec.default_durability = config_.durability;
  ec.default_compression = config_.compression;
  ec.max_segment_bytes = config_.max_segment_bytes;
  ec.max_total_bytes = config_.max_total_bytes;
  ec.chunk_bytes = config_.chunk_bytes;
  ec.has_global_dir = !config_.global_dir.empty();
  ec.shm_dir = config_.shm_dir;

  if (engine_) {
    // The engine was serving IPC (cluster ops UNAVAILABLE) before corosync told us our nodeid.
    // Rebuild it; clients reconnect (libckpt treats a lost connection as UNAVAILABLE).
    CKPT_LOG_INFO(
        "corosync reachable: rebuilding the engine with nodeid %u, "
        "disconnecting %zu early IPC clients",
        self_nodeid, conns_.size());
    for (auto& [id, conn] : conns_) ScheduleDisconnect(conn->qb);
    // Completions carry the old engine's tokens: hand them to it before it goes.
    if (store_worker_) store_worker_->Drain();
    deferred_ipc_.clear();
  }
  engine_ = std::make_unique<repl::Engine>(ec);
  engine_->OnTick(NowMs());  // set its clock before any input (the first timer tick is 100 ms away)
  engine_nodeid_ = self_nodeid;
  CKPT_ASSERT(loaded_.has_value());
  if (self_nodeid != kUnknownNodeid) {
    engine_->LoadFromStore(std::move(*loaded_));
    loaded_.reset();
  } else {
    engine_->LoadFromStore(*loaded_);  // BlockImage copies share blocks: cheap
  }
}

Status Daemon::StartIpc() {
  static struct qb_ipcs_service_handlers handlers = {
      .connection_accept = IpcAccept,
      .connection_created = IpcCreated,
      .msg_process = IpcMessage,
      .connection_closed = IpcClosed,
      .connection_destroyed = IpcDestroyed,
  };
  static struct qb_ipcs_poll_handlers poll = {
      .job_add = JobAdd,
      .dispatch_add = DispatchAdd,
      .dispatch_mod = DispatchMod,
      .dispatch_del = DispatchDel,
  };
  ipcs_ = qb_ipcs_create(ipc::kServiceName, 0, QB_IPC_NATIVE, &handlers);
  if (!ipcs_) return Err(Code::kInternal, "qb_ipcs_create failed");
  qb_ipcs_service_context_set(ipcs_, this);
  qb_ipcs_enforce_buffer_size(ipcs_, ipc::kMaxMessageBytes);
  qb_ipcs_poll_handlers_set(ipcs_, &poll);
  int32_t rc = qb_ipcs_run(ipcs_);
  if (rc != 0) {
    qb_ipcs_destroy(ipcs_);
    ipcs_ = nullptr;
    return Err(Code::kIo, std::string("cannot start the IPC server '") + ipc::kServiceName +
                              "': " + std::strerror(-rc) + " (is another ckptd running?)");
  }
  qb_ipcs_request_rate_limit(ipcs_, kClientRate);
  CKPT_LOG_INFO("IPC server '%s' listening", ipc::kServiceName);
  return Status::Ok();
}

void Daemon::TryConnectCpg() {
  CpgTransport::Options opts;
  opts.group = config_.cpg_group;
  opts.max_queue_bytes = config_.send_queue_bytes;
  CpgTransport::Callbacks cb;
  cb.deliver = [this](uint32_t nodeid, uint32_t pid, std::span<const uint8_t> msg) {
    engine_->OnDeliver(nodeid, pid, msg);
    pump_requested_ = true;  // pumped once the whole dispatch is in (outputs bundled)
  };
  cb.dispatched = [this] { PumpIfRequested(); };
  cb.view = [this](const CpgView& view) {
    corosync_away_since_ms_ = 0;
    CKPT_LOG_INFO("CPG view: %zu members (+%zu -%zu)", view.members.size(), view.joined.size(),
                  view.left.size());
    for (const auto& m : view.left)
      CKPT_LOG_DEBUG("  left: node %u pid %u reason %u", m.nodeid, m.pid, m.reason);
    engine_->OnView(view);
    Pump();
  };
  cb.lost = [this](const Status& why) {
    CKPT_LOG_WARN("lost corosync: %s; reconnecting", why.ToString().c_str());
    if (corosync_away_since_ms_ == 0) corosync_away_since_ms_ = NowMs();
    overflow_.clear();  // like the transport's queue: the protocol re-sends from state
    overflow_bytes_ = 0;
    engine_->OnDisconnected();
    Pump();
  };
  cb.drained = [this] {
    FlushOverflow();
    Pump();
  };

  auto t = CpgTransport::Connect(loop_, opts, std::move(cb));
  if (!t.ok()) {
    if (corosync_away_since_ms_ == 0) corosync_away_since_ms_ = NowMs();
    if (!connect_failed_logged_) {
      CKPT_LOG_WARN(
          "cannot join CPG group '%s': %s; retrying every %llu ms (IPC is served "
          "meanwhile, cluster operations answer UNAVAILABLE)",
          config_.cpg_group.c_str(), t.status().ToString().c_str(),
          static_cast<unsigned long long>(kConnectRetryMs));
      connect_failed_logged_ = true;
    } else {
      CKPT_LOG_DEBUG("CPG connect failed: %s", t.status().ToString().c_str());
    }
    return;
  }
  transport_ = std::move(t.value());
  corosync_away_since_ms_ = 0;
  const uint32_t nodeid = transport_->local_nodeid();
  CKPT_LOG_INFO("joined CPG group '%s' as nodeid %u", config_.cpg_group.c_str(), nodeid);
  if (!engine_ || engine_nodeid_ != nodeid) CreateEngine(nodeid);
}

void Daemon::Shutdown() {
  if (stopping_ && !loop_) return;
  stopping_ = true;
  if (engine_) {
    const auto& c = engine_->counters();
    CKPT_LOG_INFO(
        "engine counters: sent %llu B, received %llu B, dropped %llu msgs, "
        "versions stored %llu",
        static_cast<unsigned long long>(c.payload_bytes_sent),
        static_cast<unsigned long long>(c.payload_bytes_received),
        static_cast<unsigned long long>(c.messages_dropped),
        static_cast<unsigned long long>(c.versions_stored));
  }
  if (transport_) {
    const CpgCounters t = transport_->counters();
    CKPT_LOG_INFO(
        "CPG counters: sent %llu msgs (%llu B), delivered %llu msgs (%llu B), "
        "TRY_AGAIN %llu, queue full %llu, reconnects %llu, pokes %llu, drains %llu",
        static_cast<unsigned long long>(t.messages_sent),
        static_cast<unsigned long long>(t.bytes_sent),
        static_cast<unsigned long long>(t.messages_delivered),
        static_cast<unsigned long long>(t.bytes_delivered),
        static_cast<unsigned long long>(t.try_again), static_cast<unsigned long long>(t.queue_full),
        static_cast<unsigned long long>(t.reconnects), static_cast<unsigned long long>(t.pokes),
        static_cast<unsigned long long>(t.drains));
    transport_->Shutdown();
    transport_.reset();
  }
  if (ipcs_) {
    qb_ipcs_destroy(ipcs_);  // disconnects clients: OnDestroyed runs for each
    ipcs_ = nullptr;
  }
  // Finish the queued store ops (a replica's last versions reach the disk), then stop the thread.
  store_worker_.reset();
  deferred_ipc_.clear();
  if (loop_) {
    if (tick_armed_) qb_loop_timer_del(loop_, tick_timer_);
    if (connect_armed_) qb_loop_timer_del(loop_, connect_timer_);
    if (pump_timer_armed_) qb_loop_timer_del(loop_, pump_timer_);
    tick_armed_ = connect_armed_ = pump_timer_armed_ = false;
    for (auto h : signals_) qb_loop_signal_del(loop_, h);
    signals_.clear();
    qb_loop_destroy(loop_);
    loop_ = nullptr;
    g_loop = nullptr;
    g_after_ipc_dispatch = nullptr;
  }
  engine_.reset();
  store_.reset();
}

void Daemon::Stop(int exit_code) {
  if (exit_code > exit_code_) exit_code_ = exit_code;
  if (loop_) qb_loop_stop(loop_);
}

// ---- timers and signals -----------------------------------------------------------------------

void Daemon::ArmTick() {
  tick_armed_ = qb_loop_timer_add(loop_, QB_LOOP_MED, kTickMs * QB_TIME_NS_IN_MSEC, this,
                                  TickTrampoline, &tick_timer_) == 0;
}

void Daemon::ArmConnectRetry() {
  connect_armed_ = qb_loop_timer_add(loop_, QB_LOOP_LOW, kConnectRetryMs * QB_TIME_NS_IN_MSEC, this,
                                     ConnectTrampoline, &connect_timer_) == 0;
}

void Daemon::OnTimerTick() {
  tick_armed_ = false;
  const uint64_t now = NowMs();
  engine_->OnTick(now);
  if (now - last_arena_trim_ms_ >= block_arena::kTrimIntervalMs) {
    last_arena_trim_ms_ = now;
    block_arena::TrimIdle();
    engine_->CheckInvariants();  // O(segments): every 10 s, not every tick
  }
  FlushOverflow();  // normally done on drained; cheap safety net
  Pump();
  if (attributes_ && attributes_->has_failed() && now - last_attr_retry_ms_ >= kAttributeRetryMs) {
    last_attr_retry_ms_ = now;
    attributes_->RetryFailed();
  }
  if (config_.corosync_lost_exit_s > 0 && corosync_away_since_ms_ != 0 &&
      now - corosync_away_since_ms_ >= uint64_t{config_.corosync_lost_exit_s} * 1000) {
    CKPT_LOG_ERROR("corosync unreachable for %u s (corosync-lost-exit-s): exiting",
                   config_.corosync_lost_exit_s);
    Stop(kExitFailure);
    return;
  }
  ArmTick();
}

void Daemon::OnConnectTimer() {
  connect_armed_ = false;
  TryConnectCpg();
  if (transport_) {
    Pump();
  } else {
    ArmConnectRetry();
  }
}

void Daemon::OnSignal(int sig) {
  switch (sig) {
    case SIGTERM:
    case SIGINT:
      CKPT_LOG_NOTICE("received %s: shutting down", strsignal(sig));
      Stop(kExitOk);
      break;
    case SIGUSR2:
      DumpBlackbox("SIGUSR2");
      break;
    case SIGCHLD:
      if (attributes_) attributes_->Reap();
      break;
    default:
      break;
  }
}

// ---- IPC --------------------------------------------------------------------------------------

int32_t Daemon::OnAccept(qb_ipcs_connection_t* c, uid_t uid, gid_t gid) {
  auto allowed = [](const std::vector<uint32_t>& list, uint32_t id) {
    return std::find(list.begin(), list.end(), id) != list.end();
  };
  bool ok = uid == 0 || (config_.ipc_allow_uids.empty() && config_.ipc_allow_gids.empty()) ||
            allowed(config_.ipc_allow_uids, uid) || allowed(config_.ipc_allow_gids, gid);
  if (!ok) {
    CKPT_LOG_WARN("refused IPC connection from uid %u gid %u (ipc-allow-uid/ipc-allow-gid)",
                  static_cast<unsigned>(uid), static_cast<unsigned>(gid));
    return -EACCES;
  }
  if (stopping_) return -ESHUTDOWN;
  // The shm ring files belong to the client only.
  qb_ipcs_connection_auth_set(c, uid, gid, S_IRUSR | S_IWUSR);
  auto* conn = new Conn;
  conn->uid = uid;
  conn->gid = gid;
  conn->qb = c;
  qb_ipcs_context_set(c, conn);
  return 0;
}

void Daemon::OnCreated(qb_ipcs_connection_t* c) {
  auto* conn = static_cast<Conn*>(qb_ipcs_context_get(c));
  if (!conn) return;
  struct qb_ipcs_connection_stats stats;
  std::memset(&stats, 0, sizeof(stats));
  if (qb_ipcs_connection_stats_get(c, &stats, 0) == 0) conn->pid = stats.client_pid;
  conn->id = next_conn_id_++;
  conns_[conn->id] = conn;
  CKPT_LOG_DEBUG("IPC connection %llu: pid %u uid %u gid %u",
                 static_cast<unsigned long long>(conn->id), conn->pid, conn->uid, conn->gid);
}

int32_t Daemon::OnMessage(qb_ipcs_connection_t* c, const void* data, size_t size) {
  auto* conn = static_cast<Conn*>(qb_ipcs_context_get(c));
  if (!conn || conn->id == 0) return 0;
  struct qb_ipc_request_header hdr;
  if (size < sizeof(hdr)) {
    CKPT_LOG_WARN("IPC connection %llu (pid %u): short message (%zu bytes); disconnecting",
                  static_cast<unsigned long long>(conn->id), conn->pid, size);
    ScheduleDisconnect(c);
    return 0;
  }
  std::memcpy(&hdr, data, sizeof(hdr));
  if (hdr.size < 0 || static_cast<size_t>(hdr.size) != size) {
    CKPT_LOG_WARN(
        "IPC connection %llu (pid %u): header size %d but %zu bytes received; "
        "disconnecting",
        static_cast<unsigned long long>(conn->id), conn->pid, hdr.size, size);
    ScheduleDisconnect(c);
    return 0;
  }
  repl::Caller caller;
  caller.conn_id = conn->id;
  caller.uid = conn->uid;
  caller.gid = conn->gid;
  caller.pid = conn->pid;
  const auto* body = static_cast<const uint8_t*>(data) + sizeof(hdr);
  CKPT_LOG_TRACE("IPC %llu: op %d, %zu bytes", static_cast<unsigned long long>(conn->id), hdr.id,
                 size - sizeof(hdr));
  engine_->OnClient(caller, hdr.id, std::span<const uint8_t>(body, size - sizeof(hdr)));
  pump_requested_ = true;  // pumped after this dispatch's requests (g_after_ipc_dispatch)
  return 0;
}

void Daemon::OnDestroyed(qb_ipcs_connection_t* c) {
  auto* conn = static_cast<Conn*>(qb_ipcs_context_get(c));
  if (!conn) return;
  qb_ipcs_context_set(c, nullptr);
  if (conn->id != 0) {
    conns_.erase(conn->id);
    CKPT_LOG_DEBUG("IPC connection %llu (pid %u) gone", static_cast<unsigned long long>(conn->id),
                   conn->pid);
    if (engine_) {
      engine_->OnClientGone(conn->id);
      if (!stopping_) Pump();
    }
  }
  delete conn;
}

void Daemon::ScheduleDisconnect(qb_ipcs_connection_t* c) {
  qb_ipcs_connection_ref(c);
  qb_loop_job_add(loop_, QB_LOOP_HIGH, c, [](void* data) {
    auto* qc = static_cast<qb_ipcs_connection_t*>(data);
    qb_ipcs_disconnect(qc);
    qb_ipcs_connection_unref(qc);
  });
}

void Daemon::SendIpc(uint64_t conn_id, int32_t id, const std::vector<uint8_t>& body, bool event) {
  auto it = conns_.find(conn_id);
  if (it == conns_.end()) return;  // client went away meanwhile
  struct qb_ipc_response_header hdr;
  std::memset(&hdr, 0, sizeof(hdr));
  hdr.id = id;
  hdr.size = static_cast<int32_t>(sizeof(hdr) + body.size());
  hdr.error = 0;
  struct iovec iov[2] = {{&hdr, sizeof(hdr)}, {const_cast<uint8_t*>(body.data()), body.size()}};
  const size_t n = body.empty() ? 1 : 2;
  ssize_t rc = event ? qb_ipcs_event_sendv(it->second->qb, iov, n)
                     : qb_ipcs_response_sendv(it->second->qb, iov, n);
  if (rc < 0) {
    CKPT_LOG_WARN("IPC connection %llu (pid %u): cannot send %s %d (%zu bytes): %s",
                  static_cast<unsigned long long>(conn_id), it->second->pid,
                  event ? "event" : "reply", id, body.size(), std::strerror(static_cast<int>(-rc)));
  }
}

// ---- the pump ---------------------------------------------------------------------------------

size_t Daemon::SendBudget() const {
  if (!transport_ || !transport_->connected() || !overflow_.empty()) return 0;
  const size_t free_bytes = transport_->free_bytes();
  const size_t queued = transport_->queued_bytes();
  if (free_bytes <= kSendReserveBytes || queued >= kDataAheadBytes) return 0;
  return std::min(free_bytes - kSendReserveBytes, kDataAheadBytes - queued);
}

void Daemon::Pump() {
  if (!engine_ || stopping_) return;
  if (pumping_) {  // an output re-entered us (e.g. a disconnect during a send)
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  pump_requested_ = false;
  int rounds = 0;
  for (;;) {
    pump_again_ = false;
    // DATA in slices, so the first chunks reach corosync while later ones are still being built.
    repl::Ready ready = engine_->TakeReady(std::min(SendBudget(), kPumpSendSliceBytes));
    const bool produced = !ready.empty();
    Execute(ready);
    if (pump_again_) continue;
    if (!produced && !(engine_->wants_to_send() && SendBudget() > 0)) break;
    // Yield after a few rounds: store completions (which release replies and ACKs), CPG
    // deliveries and client requests must not wait while a large transfer is being built.
    if (++rounds >= kMaxPumpRounds) {
      // Let the loop breathe (IPC, corosync dispatch); continue from a timer.
      SchedulePump();
      break;
    }
  }
  pumping_ = false;
  ThrottleClients();
}

void Daemon::PumpIfRequested() {
  if (pump_requested_) Pump();
}

// A zero-delay timer, not a qb_loop job: with only jobs pending, qb_loop_run polls the fds with
// a 50 ms timeout before it runs them (an idle daemon would sit on a half-built transfer).
void Daemon::SchedulePump() {
  if (pump_timer_armed_) return;
  pump_timer_armed_ = qb_loop_timer_add(
                          loop_, QB_LOOP_LOW, 0, this,
                          [](void* data) {
                            auto* self = static_cast<Daemon*>(data);
                            self->pump_timer_armed_ = false;
                            self->Pump();
                          },
                          &pump_timer_) == 0;
}

// Back-pressure: while the engine has replication data waiting for room in the corosync send
// queue, or the store worker is far behind, stop reading client requests (libqb's request rate
// limit), so commits cannot outrun the cluster and memory stays bounded in ckptd and corosync
// alike; clients then wait on their full request ring.  Reading resumes once the engine has nothing
// waiting.
void Daemon::ThrottleClients() {
  if (!ipcs_) return;
  const bool cluster_behind = engine_ && engine_->wants_to_send() && SendBudget() == 0;
  const bool disk_behind =
      store_worker_ && (store_worker_->backlog_bytes() > kMaxStoreBacklogBytes ||
                        store_worker_->backlog_ops() > kMaxStoreBacklogOps);
  const bool behind = cluster_behind || disk_behind;
  if (behind == ipc_throttled_) return;
  ipc_throttled_ = behind;
  qb_ipcs_request_rate_limit(ipcs_, behind ? QB_IPCS_RATE_OFF : kClientRate);
  CKPT_LOG_DEBUG("client requests %s", !behind          ? "resumed"
                                       : cluster_behind ? "paused (replication behind)"
                                                        : "paused (store behind)");
}

void Daemon::Execute(repl::Ready& ready) {
  CKPT_ASSERT(pumping_);  // completions delivered below re-enter Pump(), which then loops once more
  for (auto& op : ready.store_ops) store_worker_->Submit(std::move(op));
  // Small ops ran inline: their completions reach the engine now (it answers in the next round).
  store_worker_->DeliverInline();
  for (auto& msg : ready.sends) SendToCluster(std::move(msg));
  // A reply may only leave once the store ops before it are done (and after earlier replies).
  const uint64_t seq = store_worker_->submitted_seq();
  const bool hold = !deferred_ipc_.empty() || store_worker_->completed_seq() < seq;
  auto ipc = [&](uint64_t conn_id, int32_t id, std::vector<uint8_t>& body, bool event) {
    if (hold)
      deferred_ipc_.push_back({seq, conn_id, id, std::move(body), event});
    else
      SendIpc(conn_id, id, body, event);
  };
  for (auto& r : ready.replies) ipc(r.conn_id, r.op, r.body, /*event=*/false);
  for (auto& e : ready.events) ipc(e.conn_id, e.event, e.body, /*event=*/true);
  if (attributes_) {
    for (const auto& a : ready.attributes) attributes_->Set(a.name, a.value);
  }
}

void Daemon::OnStoreCompletions(std::vector<StoreWorker::Completion>& done) {
  for (StoreWorker::Completion& c : done) {
    if (!c.status.ok()) {
      CKPT_LOG_WARN("store %s %s (version %s): %s", StoreOpName(c.kind), c.name.c_str(),
                    c.version.ToString().c_str(), c.status.ToString().c_str());
    } else {
      CKPT_LOG_TRACE("store %s %s (version %s) ok", StoreOpName(c.kind), c.name.c_str(),
                     c.version.ToString().c_str());
    }
    if (!engine_) continue;
    if (c.kind == repl::StoreOp::kLoadGlobal) {
      engine_->OnGlobalLoaded(c.token, std::move(*c.loaded));
    } else if (c.token != 0) {
      engine_->OnStoreDone(c.token, c.status);
    }
  }
  FlushDeferredIpc();
  if (!stopping_) Pump();
}

void Daemon::FlushDeferredIpc() {
  while (!deferred_ipc_.empty() && (!store_worker_ || deferred_ipc_.front().after_store_seq <=
                                                          store_worker_->completed_seq())) {
    DeferredIpc& d = deferred_ipc_.front();
    SendIpc(d.conn_id, d.id, d.body, d.event);
    deferred_ipc_.pop_front();
  }
}

void Daemon::SendToCluster(std::vector<uint8_t> message) {
  if (!transport_ || !transport_->connected()) {
    CKPT_LOG_TRACE("not connected: dropping a %zu-byte message", message.size());
    return;
  }
  // Behind earlier overflow (order), or no room now: keep it locally until drained.
  if (!overflow_.empty() || transport_->free_bytes() < message.size()) {
    overflow_bytes_ += message.size();
    overflow_.push_back(std::move(message));
    if (overflow_bytes_ > kOverflowWarnBytes)
      CKPT_LOG_WARN("send overflow holds %zu messages (%zu bytes)", overflow_.size(),
                    overflow_bytes_);
    return;
  }
  const size_t len = message.size();
  Status st = transport_->Send(std::move(message));
  if (!st.ok()) CKPT_LOG_ERROR("lost a %zu-byte message: %s", len, st.ToString().c_str());
}

void Daemon::FlushOverflow() {
  while (!overflow_.empty() && transport_ && transport_->connected() &&
         transport_->free_bytes() >= overflow_.front().size()) {
    const size_t len = overflow_.front().size();
    Status st = transport_->Send(std::move(overflow_.front()));
    overflow_.pop_front();
    overflow_bytes_ -= len;
    if (!st.ok()) CKPT_LOG_ERROR("lost a %zu-byte message: %s", len, st.ToString().c_str());
  }
}

// ---- daemonize / pid file ---------------------------------------------------------------------

Result<int> Daemonize() {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return Err(Code::kIo, std::string("pipe: ") + strerror(errno));
  pid_t pid = fork();
  if (pid < 0) return Err(Code::kIo, std::string("fork: ") + strerror(errno));
  if (pid > 0) {
    close(p[1]);
    int status = 0;
    waitpid(pid, &status, 0);  // the intermediate child exits at once
    unsigned char code = kExitFailure;
    ssize_t n;
    do {
      n = read(p[0], &code, 1);
    } while (n < 0 && errno == EINTR);
    _exit(n == 1 ? code : kExitFailure);
  }
  close(p[0]);
  setsid();
  pid = fork();
  if (pid < 0) _exit(kExitFailure);
  if (pid > 0) _exit(kExitOk);
  if (chdir("/") != 0) { /* cannot fail for "/" in practice */
  }
  umask(022);
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);
    dup2(null, STDERR_FILENO);
    if (null > STDERR_FILENO) close(null);
  }
  return p[1];
}

void ReportStartup(int fd, int code) {
  if (fd < 0) return;
  unsigned char c = static_cast<unsigned char>(code);
  ssize_t n = write(fd, &c, 1);
  (void)n;
  close(fd);
}

Result<int> WritePidFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Err(Code::kIo, "cannot open pid file " + path + ": " + strerror(errno));
  if (lockf(fd, F_TLOCK, 0) != 0) {
    close(fd);
    return Err(Code::kBusy, "pid file " + path + " is locked: another ckptd is running");
  }
  std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd, 0) != 0 ||
      write(fd, pid.data(), pid.size()) != static_cast<ssize_t>(pid.size())) {
    close(fd);
    return Err(Code::kIo, "cannot write pid file " + path + ": " + strerror(errno));
  }
  return fd;
}

}  // namespace ckpt::agent
