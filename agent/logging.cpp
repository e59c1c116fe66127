#include "agent/logging.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "agent/log.hpp"

namespace ckpt::agent {
namespace {

constexpr size_t kBlackboxBytes = 8u << 20;
char g_blackbox_prefix[4096];  // "<dir>/ckptd-<pid>-"; fixed at init, read by crash handlers
std::atomic<unsigned> g_dump_count{0};
bool g_initialized = false;

int QbPriority(LogLevel level) {
  switch (level) {
    case LogLevel::kInfo:
      return LOG_INFO;
    case LogLevel::kDebug:
      return LOG_DEBUG;
    case LogLevel::kTrace:
      return LOG_TRACE;
  }
  return LOG_INFO;
}

// mkdir -p with mode 0700 for the created components.
void MakeDirs(const std::string& path) {
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') mkdir(path.substr(0, i).c_str(), 0700);
  }
}

bool WriteBlackbox(const char* reason, char* out, size_t out_len) {
  unsigned n = g_dump_count.fetch_add(1);
  std::snprintf(out, out_len, "%s%u.fdata", g_blackbox_prefix, n);
  return qb_log_blackbox_write_to_file(out) >= 0;
}

void CrashHandler(int sig) {
  // Best effort: libqb's writer is not formally async-signal-safe, but the process is dying anyway
  // (Pacemaker does the same).  SA_RESETHAND restores the default action for the re-raise.
  char path[sizeof(g_blackbox_prefix) + 32];
  WriteBlackbox("crash", path, sizeof(path));
  const char msg[] = "ckptd: fatal signal, blackbox written to ";
  ssize_t ignored = write(STDERR_FILENO, msg, sizeof(msg) - 1);
  ignored = write(STDERR_FILENO, path, std::strlen(path));
  ignored = write(STDERR_FILENO, "\n", 1);
  (void)ignored;
  raise(sig);
}

void InstallCrashHandlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = CrashHandler;
  sa.sa_flags = SA_RESETHAND | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGILL, SIGFPE}) sigaction(sig, &sa, nullptr);
}

void Filter(int32_t target, int priority) {
  qb_log_filter_ctl(target, QB_LOG_FILTER_CLEAR_ALL, QB_LOG_FILTER_FILE, "*", LOG_TRACE);
  qb_log_filter_ctl(target, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*", priority);
}

}  // namespace

Status InitLogging(const Config& config) {
  const int priority = QbPriority(config.log_level);
  qb_log_init("ckptd", LOG_DAEMON, priority);
  g_initialized = true;

  bool syslog = config.syslog || (!config.foreground && config.log_file.empty());
  qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, syslog ? QB_TRUE : QB_FALSE);
  if (syslog) Filter(QB_LOG_SYSLOG, priority);

  qb_log_ctl(QB_LOG_STDERR, QB_LOG_CONF_ENABLED, config.foreground ? QB_TRUE : QB_FALSE);
  if (config.foreground) {
    Filter(QB_LOG_STDERR, priority);
    qb_log_format_set(QB_LOG_STDERR, "%t %N[%P] %4g %p: %b");
  }

  Status st;
  if (!config.log_file.empty()) {
    int32_t t = qb_log_file_open(config.log_file.c_str());
    if (t < 0) {
      st = Err(Code::kIo, "cannot open log file " + config.log_file + ": " + std::strerror(-t));
    } else {
      qb_log_ctl(t, QB_LOG_CONF_ENABLED, QB_TRUE);
      Filter(t, priority);
      qb_log_format_set(t, "%t %N[%P] %p: %b");
    }
  }

  // Blackbox: everything down to trace, in memory, dumped on crash or SIGUSR2.
  qb_log_ctl(QB_LOG_BLACKBOX, QB_LOG_CONF_SIZE, kBlackboxBytes);
  Filter(QB_LOG_BLACKBOX, LOG_TRACE);
  qb_log_ctl(QB_LOG_BLACKBOX, QB_LOG_CONF_ENABLED, QB_TRUE);
  MakeDirs(config.blackbox_dir);
  std::snprintf(g_blackbox_prefix, sizeof(g_blackbox_prefix), "%s/ckptd-%d-",
                config.blackbox_dir.c_str(), static_cast<int>(getpid()));
  InstallCrashHandlers();
  return st;
}

std::string DumpBlackbox(const char* reason) {
  char path[sizeof(g_blackbox_prefix) + 32];
  if (!WriteBlackbox(reason, path, sizeof(path))) {
    CKPT_LOG_WARN("could not write the blackbox to %s (%s)", path, reason);
    return "";
  }
  CKPT_LOG_NOTICE("blackbox written to %s (%s)", path, reason);
  return path;
}

void ShutdownLogging() {
  if (g_initialized) qb_log_fini();
  g_initialized = false;
}

}  // namespace ckpt::agent
