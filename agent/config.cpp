#include "agent/config.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include <boost/program_options.hpp>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include "replication/engine.hpp"  // kMaxChunkBytes

#ifndef CKPT_VERSION_STRING
#define CKPT_VERSION_STRING "unknown"
#endif

namespace po = boost::program_options;

namespace ckpt::agent {
namespace {

constexpr uint32_t kMinChunkBytes = 4u << 10;
constexpr uint32_t kMaxChunkBytes = repl::kMaxChunkBytes;
constexpr uint32_t kMaxReplicas = 127;  // CPG: at most 128 members
constexpr uint32_t kMaxVersionsKept = 1024;
constexpr size_t kMaxCpgGroupLen = 127;              // 128 bytes including the trailing NUL
constexpr uint64_t kMinSendQueueBytes = 4ull << 20;  // one chunk plus the 2 MiB reserve

Status Bad(const std::string& key, const std::string& value, const std::string& why) {
  return Err(Code::kInvalid, "invalid value '" + value + "' for " + key + ": " + why);
}

Result<uint64_t> ParseUnsigned(const std::string& key, const std::string& text, uint64_t min,
                               uint64_t max) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size() || v < min || v > max)
    return Bad(key, text,
               "expected an integer in " + std::to_string(min) + ".." + std::to_string(max));
  return v;
}

Result<bool> ParseBool(const std::string& key, const std::string& text) {
  std::string t;
  for (char c : text) t += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (t == "true" || t == "yes" || t == "on" || t == "1") return true;
  if (t == "false" || t == "no" || t == "off" || t == "0") return false;
  return Bad(key, text, "expected true/false, yes/no, on/off or 1/0");
}

Result<uint64_t> ParseSize(const std::string& key, const std::string& text, uint64_t min,
                           uint64_t max) {
  auto r = ParseByteSize(text);
  if (!r.ok()) return Bad(key, text, "expected a byte count with an optional K/M/G/T suffix");
  if (*r < min || *r > max)
    return Bad(key, text,
               "must be between " + std::to_string(min) + " and " + std::to_string(max) + " bytes");
  return r;
}

Status CheckPath(const std::string& key, const std::string& value, bool allow_empty) {
  if (value.empty()) return allow_empty ? Status::Ok() : Bad(key, value, "must not be empty");
  if (value[0] != '/') return Bad(key, value, "must be an absolute path");
  return Status::Ok();
}

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : text + ",") {
    if (c == ',' || c == ' ' || c == '\t') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

// Comma-separated numeric ids or names; `lookup` resolves a name (nullopt-like: returns false).
Result<std::vector<uint32_t>> ParseIdList(
    const std::string& key, const std::string& text,
    const std::function<bool(const std::string&, uint32_t*)>& lookup) {
  std::vector<uint32_t> ids;
  for (const auto& item : SplitList(text)) {
    uint32_t id = 0;
    auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
    if (ec == std::errc() && p == item.data() + item.size()) {
      ids.push_back(id);
    } else if (lookup(item, &id)) {
      ids.push_back(id);
    } else {
      return Bad(key, text, "unknown name '" + item + "'");
    }
  }
  if (ids.empty()) return Bad(key, text, "expected a comma-separated list of ids or names");
  return ids;
}

bool LookupUser(const std::string& name, uint32_t* id) {
  struct passwd pw, *res = nullptr;
  std::vector<char> buf(16384);
  if (getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &res) != 0 || !res) return false;
  *id = pw.pw_uid;
  return true;
}

bool LookupGroup(const std::string& name, uint32_t* id) {
  struct group gr, *res = nullptr;
  std::vector<char> buf(65536);
  if (getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &res) != 0 || !res) return false;
  *id = gr.gr_gid;
  return true;
}

void AddFileOptions(po::options_description& d) {
  auto str = [] { return po::value<std::string>(); };
  auto flag = [] { return po::value<std::string>()->implicit_value("true"); };
  // clang-format off
  d.add_options()
    ("node-name", str(), "name this node publishes (default: uname nodename)")
    ("eligible", flag(), "may this node hold replicas (default true)")
    ("replicas", str(), "default replicas besides the owner, R (default 1)")
    ("versions-kept", str(), "default versions each holder keeps (default 1)")
    ("durability", str(), "default durability: memory|fsync (default memory)")
    ("compression", str(), "default compression of new segments: none|zstd (default none)")
    ("state-dir", str(), "replica state directory (default /var/lib/ckpt)")
    ("global-dir", str(), "shared directory for global copies (default none)")
    ("shm-dir", str(), "owners' local storage (default /dev/shm/ckpt)")
    ("max-segment-size", str(), "largest segment, K/M/G suffixes (default 4G)")
    ("max-total-bytes", str(), "bytes of segments this node holds (default 64G)")
    ("chunk-size", str(), "payload per replication message, 4K..1020K (default 1020K)")
    ("cpg-group", str(), "corosync CPG group name (default ckpt)")
    ("send-queue-bytes", str(), "bound on bytes queued for corosync (default 64M)")
    ("corosync-lost-exit-s", str(), "exit 1 when corosync stays away this long (0 = never)")
    ("log-file", str(), "log file (default none)")
    ("log-level", str(), "info|debug|trace (default info)")
    ("syslog", flag(), "log to syslog (default false; on when daemonized without log-file)")
    ("blackbox-dir", str(), "where blackbox dumps go (default <state-dir>/blackbox)")
    ("attributes", flag(), "publish Pacemaker node attributes (default true)")
    ("attrd-updater", str(), "attrd_updater program (default attrd_updater)")
    ("ipc-allow-uid", str(), "users allowed to connect, ids or names (default all)")
    ("ipc-allow-gid", str(), "groups allowed to connect, ids or names (default all)")
    ("pid-file", str(), "pid file when daemonized (default /run/ckptd.pid)");
  // clang-format on
}

Status Extract(const po::variables_map& vm, Config* c) {
  auto get = [&](const char* key, auto&& apply) -> Status {
    if (!vm.count(key)) return Status::Ok();
    return apply(std::string(key), vm[key].as<std::string>());
  };
  auto set_str = [](std::string* out) {
    return [out](const std::string&, const std::string& v) {
      *out = v;
      return Status::Ok();
    };
  };
  auto set_bool = [](bool* out) {
    return [out](const std::string& k, const std::string& v) -> Status {
      auto r = ParseBool(k, v);
      if (!r.ok()) return r.status();
      *out = *r;
      return Status::Ok();
    };
  };
  auto set_u32 = [](uint32_t* out, uint64_t min, uint64_t max) {
    return [=](const std::string& k, const std::string& v) -> Status {
      auto r = ParseUnsigned(k, v, min, max);
      if (!r.ok()) return r.status();
      *out = static_cast<uint32_t>(*r);
      return Status::Ok();
    };
  };
  auto set_size = [](auto* out, uint64_t min, uint64_t max) {
    return [=](const std::string& k, const std::string& v) -> Status {
      auto r = ParseSize(k, v, min, max);
      if (!r.ok()) return r.status();
      *out = static_cast<std::remove_pointer_t<decltype(out)>>(*r);
      return Status::Ok();
    };
  };
  // One of a fixed set of words (the first two are named in the error: "expected a or b").
  auto set_choice = [](uint32_t* out, std::vector<std::pair<std::string, uint32_t>> words) {
    return [=](const std::string& k, const std::string& v) -> Status {
      for (const auto& [word, value] : words) {
        if (v == word) {
          *out = value;
          return Status::Ok();
        }
      }
      return Bad(k, v, "expected " + words[0].first + " or " + words[1].first);
    };
  };
  auto set_path = [](std::string* out, bool allow_empty) {
    return [=](const std::string& k, const std::string& v) -> Status {
      CKPT_RETURN_IF_ERROR(CheckPath(k, v, allow_empty));
      *out = v;
      return Status::Ok();
    };
  };

  constexpr uint64_t kMaxBytes = 1ull << 50;
  CKPT_RETURN_IF_ERROR(get("node-name", set_str(&c->node_name)));
  CKPT_RETURN_IF_ERROR(get("eligible", set_bool(&c->eligible)));
  CKPT_RETURN_IF_ERROR(get("replicas", set_u32(&c->replicas, 1, kMaxReplicas)));
  CKPT_RETURN_IF_ERROR(get("versions-kept", set_u32(&c->versions_kept, 1, kMaxVersionsKept)));
  CKPT_RETURN_IF_ERROR(
      get("durability", set_choice(&c->durability, {{"memory", CKPT_DURABILITY_MEMORY},
                                                    {"fsync", CKPT_DURABILITY_FSYNC}})));
  CKPT_RETURN_IF_ERROR(
      get("compression", set_choice(&c->compression, {{"none", CKPT_COMPRESSION_NONE},
                                                      {"zstd", CKPT_COMPRESSION_ZSTD}})));
  CKPT_RETURN_IF_ERROR(get("state-dir", set_path(&c->state_dir, false)));
  CKPT_RETURN_IF_ERROR(get("global-dir", set_path(&c->global_dir, true)));
  CKPT_RETURN_IF_ERROR(get("shm-dir", set_path(&c->shm_dir, false)));
  CKPT_RETURN_IF_ERROR(get("max-segment-size", set_size(&c->max_segment_bytes, 1, kMaxBytes)));
  CKPT_RETURN_IF_ERROR(get("max-total-bytes", set_size(&c->max_total_bytes, 1, kMaxBytes)));
  CKPT_RETURN_IF_ERROR(
      get("chunk-size", set_size(&c->chunk_bytes, kMinChunkBytes, kMaxChunkBytes)));
  CKPT_RETURN_IF_ERROR(get("cpg-group", [&](const std::string& k, const std::string& v) {
    if (v.empty() || v.size() > kMaxCpgGroupLen)
      return Bad(k, v, "must be 1.." + std::to_string(kMaxCpgGroupLen) + " bytes");
    c->cpg_group = v;
    return Status::Ok();
  }));
  CKPT_RETURN_IF_ERROR(
      get("send-queue-bytes", set_size(&c->send_queue_bytes, kMinSendQueueBytes, 1ull << 40)));
  CKPT_RETURN_IF_ERROR(
      get("corosync-lost-exit-s", set_u32(&c->corosync_lost_exit_s, 0, 7 * 24 * 3600)));
  CKPT_RETURN_IF_ERROR(get("log-file", set_path(&c->log_file, true)));
  CKPT_RETURN_IF_ERROR(get("log-level", [&](const std::string& k, const std::string& v) {
    if (v == "info") {
      c->log_level = LogLevel::kInfo;
    } else if (v == "debug") {
      c->log_level = LogLevel::kDebug;
    } else if (v == "trace") {
      c->log_level = LogLevel::kTrace;
    } else {
      return Bad(k, v, "expected info, debug or trace");
    }
    return Status::Ok();
  }));
  CKPT_RETURN_IF_ERROR(get("syslog", set_bool(&c->syslog)));
  CKPT_RETURN_IF_ERROR(get("blackbox-dir", set_path(&c->blackbox_dir, true)));
  CKPT_RETURN_IF_ERROR(get("attributes", set_bool(&c->attributes)));
  CKPT_RETURN_IF_ERROR(get("attrd-updater", [&](const std::string& k, const std::string& v) {
    if (v.empty()) return Bad(k, v, "must not be empty");
    c->attrd_updater = v;
    return Status::Ok();
  }));
  CKPT_RETURN_IF_ERROR(get("ipc-allow-uid", [&](const std::string& k, const std::string& v) {
    auto r = ParseIdList(k, v, LookupUser);
    if (!r.ok()) return r.status();
    c->ipc_allow_uids = *r;
    return Status::Ok();
  }));
  CKPT_RETURN_IF_ERROR(get("ipc-allow-gid", [&](const std::string& k, const std::string& v) {
    auto r = ParseIdList(k, v, LookupGroup);
    if (!r.ok()) return r.status();
    c->ipc_allow_gids = *r;
    return Status::Ok();
  }));
  CKPT_RETURN_IF_ERROR(get("pid-file", set_path(&c->pid_file, false)));

  // Cross-key checks.
  if (c->node_name.empty()) return Bad("node-name", c->node_name, "must not be empty");
  for (char ch : c->node_name)
    if (std::isspace(static_cast<unsigned char>(ch)) ||
        !std::isprint(static_cast<unsigned char>(ch)))
      return Bad("node-name", c->node_name, "must not contain spaces or control characters");
  if (c->max_segment_bytes > c->max_total_bytes)
    return Bad("max-segment-size", std::to_string(c->max_segment_bytes),
               "must not exceed max-total-bytes (" + std::to_string(c->max_total_bytes) + ")");
  if (c->blackbox_dir.empty()) c->blackbox_dir = c->state_dir + "/blackbox";
  return Status::Ok();
}

std::string Usage(const po::options_description& all) {
  std::ostringstream out;
  out << "Usage: ckptd [options]\n"
         "Replicated checkpoint daemon for Pacemaker/Corosync clusters.\n"
         "Every option except --config/--foreground/--version/--help may also be set in the\n"
         "config file as `key = value`; command-line flags override the file.\n\n"
      << all;
  return out.str();
}

}  // namespace

Result<uint64_t> ParseByteSize(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0) return Err(Code::kInvalid, "not a byte size");
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + i, v);
  if (ec != std::errc()) return Err(Code::kInvalid, "not a byte size");
  std::string suffix;
  for (char c : text.substr(i))
    suffix += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  unsigned shift = 0;
  if (!suffix.empty()) {
    switch (suffix[0]) {
      case 'K':
        shift = 10;
        break;
      case 'M':
        shift = 20;
        break;
      case 'G':
        shift = 30;
        break;
      case 'T':
        shift = 40;
        break;
      case 'B':
        shift = 0;
        break;
      default:
        return Err(Code::kInvalid, "unknown size suffix");
    }
    std::string rest = suffix.substr(1);
    bool ok = suffix[0] == 'B' ? rest.empty() : (rest.empty() || rest == "B" || rest == "IB");
    if (!ok) return Err(Code::kInvalid, "unknown size suffix");
  }
  if (shift && v > (std::numeric_limits<uint64_t>::max() >> shift))
    return Err(Code::kInvalid, "byte size overflows");
  return v << shift;
}

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kTrace:
      return "trace";
  }
  return "?";
}

Result<ParsedArgs> ParseArgs(int argc, const char* const argv[],
                             const std::string& default_node_name) {
  po::options_description generic("Command-line only");
  // clang-format off
  generic.add_options()
    ("help,h", "show this help and exit")
    ("version", "show the version and exit")
    ("config", po::value<std::string>(), "config file (default /etc/ckpt/ckptd.conf)")
    ("foreground,f", "stay in the foreground (no fork, no pid file; for systemd)");
  // clang-format on
  po::options_description file_opts("Options (command line or config file)");
  AddFileOptions(file_opts);
  po::options_description all;
  all.add(generic).add(file_opts);

  ParsedArgs out;
  Config& c = out.config;
  if (!default_node_name.empty()) {
    c.node_name = default_node_name;
  } else {
    struct utsname u;
    if (uname(&u) == 0) c.node_name = u.nodename;
  }

  po::variables_map vm;
  try {
    po::parsed_options parsed =
        po::command_line_parser(argc, argv)
            .options(all)
            .style(po::command_line_style::default_style & ~po::command_line_style::allow_guessing)
            .run();
    // ckptd takes no positional arguments: "--eligible false" must not silently mean true.
    for (const std::string& extra :
         po::collect_unrecognized(parsed.options, po::include_positional))
      return Err(Code::kInvalid, "unexpected argument '" + extra +
                                     "' (use --key=value for values; see ckptd --help)");
    po::store(parsed, vm);
  } catch (const po::error& e) {
    return Err(Code::kInvalid, std::string(e.what()) + " (see ckptd --help)");
  }
  if (vm.count("help")) {
    out.action = ParsedArgs::kHelp;
    out.text = Usage(all);
    return out;
  }
  if (vm.count("version")) {
    out.action = ParsedArgs::kVersion;
    out.text = std::string("ckptd ") + CKPT_VERSION_STRING + "\n";
    return out;
  }
  c.foreground = vm.count("foreground") > 0;
  if (vm.count("config")) {
    c.config_path = vm["config"].as<std::string>();
    c.config_path_explicit = true;
    if (c.config_path.empty()) return Bad("config", c.config_path, "must not be empty");
  }

  struct stat st;
  bool exists = stat(c.config_path.c_str(), &st) == 0;
  if (!exists && (c.config_path_explicit || errno != ENOENT))
    return Err(Code::kInvalid,
               "cannot read config file " + c.config_path + ": " + std::strerror(errno));
  if (exists) {
    std::ifstream file(c.config_path);
    if (!file) return Err(Code::kInvalid, "cannot read config file " + c.config_path);
    try {
      // store() keeps values already present, so the command line wins over the file.
      po::store(po::parse_config_file(file, file_opts, /*allow_unregistered=*/false), vm);
    } catch (const po::error& e) {
      return Err(Code::kInvalid, "config file " + c.config_path + ": " + e.what());
    }
  }
  po::notify(vm);
  CKPT_RETURN_IF_ERROR(Extract(vm, &c));
  return out;
}

}  // namespace ckpt::agent
