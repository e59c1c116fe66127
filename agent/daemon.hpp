// Daemon: ckptd's shell around repl::Engine — the qb_loop, the libqb IPC server for libckpt, the
// CPG transport, the segment store, Pacemaker attributes and signals.  No replication logic here.
//
// Every input (IPC request or disconnect, CPG deliver/view/lost, the 100 ms tick, transport
// drained, store completions) is handed to the engine and followed by Pump(), which performs the
// engine's outputs in the documented order: store ops (handed to the StoreWorker thread, which
// reports tokens back through the loop), CPG sends (with a local overflow queue for kNoSpace so
// control messages are never lost), IPC replies and events (held until the store ops submitted
// before them completed), attribute updates.  Acknowledgements never overtake their store op:
// the engine only produces an ACK from the op's completion.  DATA generation is bounded by the
// transport's free queue bytes minus a reserve, so the engine never produces more than corosync
// admits.
#pragma once

#include <qb/qbipcs.h>
#include <qb/qbloop.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "agent/attributes.hpp"
#include "agent/config.hpp"
#include "agent/store_worker.hpp"
#include "cpg_transport/cpg_transport.hpp"
#include "replication/engine.hpp"
#include "store/segment_store.hpp"

namespace ckpt::agent {

// Exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // runtime failure (store, IPC, corosync gone too long)
inline constexpr int kExitUsage = 2;    // bad command line or config

class Daemon {
 public:
  explicit Daemon(Config config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Starts everything and runs the loop until SIGTERM/SIGINT or a fatal error; returns the exit
  // code.  `started(code)` is called once: with kExitOk when the IPC server is up, or with the
  // failure code if startup failed (used by the daemonize handshake).
  int Run(const std::function<void(int code)>& started = {});

  // Asks the loop to stop with `exit_code` (safe from loop callbacks).
  void Stop(int exit_code);

  // Connection bookkeeping (public for the C trampolines in daemon.cpp).
  struct Conn {
    uint64_t id = 0;
    uint32_t uid = 0, gid = 0, pid = 0;
    qb_ipcs_connection_t* qb = nullptr;
  };
  int32_t OnAccept(qb_ipcs_connection_t* c, uid_t uid, gid_t gid);
  void OnCreated(qb_ipcs_connection_t* c);
  int32_t OnMessage(qb_ipcs_connection_t* c, const void* data, size_t size);
  void OnDestroyed(qb_ipcs_connection_t* c);
  void OnTimerTick();
  void OnConnectTimer();
  void OnSignal(int sig);

 private:
  Status Startup();
  Status StartIpc();
  void TryConnectCpg();
  void CreateEngine(uint32_t self_nodeid);
  void ThrottleClients();
  void Pump();
  // Pump again soon from the loop (after other events had their turn).
  void SchedulePump();
  // At the end of a CPG or IPC dispatch: Pump() once if an input of it reached the engine.
  void PumpIfRequested();
  size_t SendBudget() const;
  void Execute(repl::Ready& ready);
  void OnStoreCompletions(std::vector<StoreWorker::Completion>& done);
  void FlushDeferredIpc();
  void SendToCluster(std::vector<uint8_t> message);
  void FlushOverflow();
  void SendIpc(uint64_t conn_id, int32_t id, const std::vector<uint8_t>& body, bool event);
  void ScheduleDisconnect(qb_ipcs_connection_t* c);
  void ArmTick();
  void ArmConnectRetry();
  void Shutdown();

  Config config_;
  qb_loop_t* loop_ = nullptr;
  std::unique_ptr<SegmentStore> store_;
  std::unique_ptr<StoreWorker> store_worker_;  // the only user of store_ once started
  // Replies and events wait until every store op submitted before them has completed (a client
  // told "done" may look at the files at once), in their original order.
  struct DeferredIpc {
    uint64_t after_store_seq = 0;
    uint64_t conn_id = 0;
    int32_t id = 0;
    std::vector<uint8_t> body;
    bool event = false;
  };
  std::deque<DeferredIpc> deferred_ipc_;
  std::unique_ptr<repl::Engine> engine_;
  uint32_t engine_nodeid_ = 0;  // self_nodeid the engine was built with
  // Kept until the engine has been built with the real nodeid (see CreateEngine).
  std::optional<std::vector<LoadedSegment>> loaded_;
  std::unique_ptr<CpgTransport> transport_;
  qb_ipcs_service_t* ipcs_ = nullptr;
  std::map<uint64_t, Conn*> conns_;
  uint64_t next_conn_id_ = 1;
  std::deque<std::vector<uint8_t>> overflow_;  // sends refused with kNoSpace, in order
  size_t overflow_bytes_ = 0;
  std::unique_ptr<AttributePublisher> attributes_;

  qb_loop_timer_handle tick_timer_{};
  qb_loop_timer_handle connect_timer_{};
  qb_loop_timer_handle pump_timer_{};
  bool tick_armed_ = false, connect_armed_ = false;
  std::vector<qb_loop_signal_handle> signals_;
  bool pumping_ = false, pump_again_ = false, pump_timer_armed_ = false;
  // An input reached the engine (CPG delivery, IPC request): Pump() once at the end of that fd's
  // dispatch, so the outputs of the whole batch are taken together (and bundled).
  bool pump_requested_ = false;
  bool ipc_throttled_ = false;  // libqb stops reading client requests while replication is behind
  bool connect_failed_logged_ = false;
  bool stopping_ = false;
  int exit_code_ = kExitOk;
  uint64_t corosync_away_since_ms_ = 0;  // 0 = connected
  uint64_t last_attr_retry_ms_ = 0;
  uint64_t last_arena_trim_ms_ = 0;  // block_arena::TrimIdle()
};

// Detaches from the terminal (double fork, setsid, chdir /, stdio to /dev/null).  Returns in the
// daemon with a write fd for ReportStartup(); the original process waits for that report and exits
// with its code (1 if the daemon died first).  Errors: kIo.
Result<int> Daemonize();
void ReportStartup(int fd, int code);

// Creates and locks the pid file (held for the life of the process).  Errors: kBusy when another
// process holds it, kIo otherwise.
Result<int> WritePidFile(const std::string& path);

}  // namespace ckpt::agent
