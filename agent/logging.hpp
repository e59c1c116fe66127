// ckptd's logging setup (libqb): stderr when in the foreground, syslog, an optional file, and an
// always-on blackbox (trace level, in memory) dumped to <blackbox_dir> on SIGSEGV/SIGABRT/SIGBUS
// (crash handlers) and on demand (DumpBlackbox(), wired to SIGUSR2 by the daemon).
#pragma once

#include <string>

#include "agent/config.hpp"
#include "common/status.hpp"

namespace ckpt::agent {

// Call once, after daemonizing.  Errors: kIo when the log file cannot be opened.
Status InitLogging(const Config& config);
// Writes the blackbox to <blackbox_dir>/ckptd-<pid>-<n>.fdata (read it with qb-blackbox).
// Returns the file name, or "" on failure.
std::string DumpBlackbox(const char* reason);
void ShutdownLogging();

}  // namespace ckpt::agent
