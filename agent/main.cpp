// ckptd: the replicated checkpoint daemon.  See agent/daemon.hpp and ckptd(8).
#include <malloc.h>
#include <unistd.h>

#include <cstdio>

#include "agent/config.hpp"
#include "agent/daemon.hpp"
#include "agent/log.hpp"
#include "agent/logging.hpp"

int main(int argc, char** argv) {
  using namespace ckpt::agent;
  // ckptd allocates and frees the same sizes over and over (64 KiB image blocks, ~1 MiB DATA
  // messages, commit parts of up to 4 MiB).  glibc's defaults hand such memory back to the kernel
  // and fault it in again on the next commit; page faults dominate the cost of a copy on
  // virtual machines.  Keep up to 32 MiB of freed memory and serve blocks below 16 MiB from the
  // heap (fixed thresholds also stop glibc's dynamic mmap threshold from drifting).
  mallopt(M_MMAP_THRESHOLD, 16 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
  auto parsed = ParseArgs(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "ckptd: %s\n", parsed.status().ToString().c_str());
    return kExitUsage;
  }
  if (parsed->action != ParsedArgs::kRun) {
    std::fputs(parsed->text.c_str(), stdout);
    return kExitOk;
  }
  Config& config = parsed->config;

  int startup_fd = -1;
  int pid_fd = -1;
  if (!config.foreground) {
    auto fd = Daemonize();
    if (!fd.ok()) {
      std::fprintf(stderr, "ckptd: %s\n", fd.status().ToString().c_str());
      return kExitFailure;
    }
    startup_fd = *fd;
  }

  ckpt::Status st = InitLogging(config);
  if (!st.ok()) {
    std::fprintf(stderr, "ckptd: %s\n", st.ToString().c_str());
    ReportStartup(startup_fd, kExitUsage);
    return kExitUsage;
  }
  CKPT_LOG_INFO(
      "ckptd starting: node %s, state %s, replicas %u, versions-kept %u, "
      "durability %s, chunk %u B, log-level %s",
      config.node_name.c_str(), config.state_dir.c_str(), config.replicas, config.versions_kept,
      config.durability == CKPT_DURABILITY_FSYNC ? "fsync" : "memory", config.chunk_bytes,
      LogLevelName(config.log_level));

  if (!config.foreground) {
    auto fd = WritePidFile(config.pid_file);
    if (!fd.ok()) {
      CKPT_LOG_ERROR("%s", fd.status().ToString().c_str());
      ReportStartup(startup_fd, kExitFailure);
      ShutdownLogging();
      return kExitFailure;
    }
    pid_fd = *fd;
  }

  int code;
  {
    Daemon daemon(config);
    code = daemon.Run([&](int c) {
      ReportStartup(startup_fd, c);
      startup_fd = -1;
    });
  }
  if (pid_fd >= 0) {
    unlink(config.pid_file.c_str());
    close(pid_fd);
  }
  ShutdownLogging();
  return code;
}
