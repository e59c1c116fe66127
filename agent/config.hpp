// ckptd configuration: /etc/ckpt/ckptd.conf (Boost.Program_options config-file syntax,
// `key = value`) overridden by command-line flags of the same name (--key=value).
//
// Every key is validated here; a bad key or value is a usage error (ckptd exits 2) whose message
// names the key and the value.  Unknown keys in the file are errors too.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.hpp"

namespace ckpt::agent {

inline constexpr const char* kDefaultConfigPath = "/etc/ckpt/ckptd.conf";

enum class LogLevel { kInfo, kDebug, kTrace };

struct Config {
  std::string config_path = kDefaultConfigPath;
  bool config_path_explicit = false;  // --config given: a missing file is an error
  bool foreground = false;
  std::string pid_file = "/run/ckptd.pid";  // used only when daemonizing

  std::string node_name;  // default: uname nodename
  bool eligible = true;
  uint32_t replicas = 1;
  uint32_t versions_kept = 1;
  uint32_t durability = 1;   // CKPT_DURABILITY_MEMORY or CKPT_DURABILITY_FSYNC
  uint32_t compression = 0;  // CKPT_COMPRESSION_NONE or CKPT_COMPRESSION_ZSTD (new segments)
  std::string state_dir = "/var/lib/ckpt";
  std::string global_dir;  // "" = none
  std::string shm_dir = "/dev/shm/ckpt";
  uint64_t max_segment_bytes = 4ull << 30;
  uint64_t max_total_bytes = 64ull << 30;
  uint32_t chunk_bytes = 1020 * 1024;  // repl::kMaxChunkBytes
  std::string cpg_group = "ckpt";
  uint64_t send_queue_bytes = 64ull << 20;
  uint32_t corosync_lost_exit_s = 0;  // 0 = never exit while corosync is away

  std::string log_file;  // "" = none
  LogLevel log_level = LogLevel::kInfo;
  bool syslog = false;       // forced on when daemonized without a log file
  std::string blackbox_dir;  // "" = <state_dir>/blackbox

  bool attributes = true;
  std::string attrd_updater = "attrd_updater";

  // Empty = every user/group may connect (segment permissions are checked per segment by the
  // engine).  Root (uid 0) is always allowed.
  std::vector<uint32_t> ipc_allow_uids;
  std::vector<uint32_t> ipc_allow_gids;
};

struct ParsedArgs {
  enum Action { kRun, kHelp, kVersion };
  Action action = kRun;
  Config config;
  std::string text;  // help or version text for kHelp / kVersion
};

// Parses argv and then the config file (argv wins).  `default_node_name` replaces uname's nodename
// when non-empty (tests).  Errors: kInvalid with a message naming the key and value.
Result<ParsedArgs> ParseArgs(int argc, const char* const argv[],
                             const std::string& default_node_name = "");

// "4G" -> 4294967296; accepts decimal digits with an optional K/M/G/T suffix (powers of 1024,
// case-insensitive, optionally followed by "B" or "iB").  nullopt-like error on garbage/overflow.
Result<uint64_t> ParseByteSize(const std::string& text);

const char* LogLevelName(LogLevel level);

}  // namespace ckpt::agent
