#include "agent/attributes.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cstring>
#include <vector>

#include "agent/log.hpp"

extern char** environ;

namespace ckpt::agent {

AttributePublisher::AttributePublisher(std::string program, size_t max_children)
    : program_(std::move(program)), max_children_(max_children) {}

void AttributePublisher::Set(const std::string& name, const std::string& value) {
  auto pub = published_.find(name);
  bool same_as_published = pub != published_.end() && pub->second == value;
  if (same_as_published && !running_by_name_.count(name)) {
    wanted_.erase(name);
    return;
  }
  wanted_[name] = value;
  failed_.erase(name);
  StartPending();
}

void AttributePublisher::StartPending() {
  for (auto it = wanted_.begin(); it != wanted_.end() && running_.size() < max_children_;) {
    if (running_by_name_.count(it->first)) {
      ++it;
      continue;
    }
    std::string name = it->first, value = it->second;
    it = wanted_.erase(it);
    Spawn(name, value);
  }
}

bool AttributePublisher::Spawn(const std::string& name, const std::string& value) {
  std::vector<std::string> args = {program_, "-n", name};
  if (value.empty()) {
    args.push_back("-D");
  } else {
    args.push_back("-U");
    args.push_back(value);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);  // no corosync/IPC fds in the child
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, program_.c_str(), &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    if (!warned_spawn_failure_) {
      CKPT_LOG_WARN("cannot run %s to publish node attributes: %s", program_.c_str(),
                    std::strerror(rc));
      warned_spawn_failure_ = true;
    } else {
      CKPT_LOG_DEBUG("cannot run %s for %s: %s", program_.c_str(), name.c_str(), std::strerror(rc));
    }
    return false;
  }
  CKPT_LOG_DEBUG("attrd_updater pid %d: %s = '%s'", static_cast<int>(pid), name.c_str(),
                 value.c_str());
  running_[pid] = {name, value};
  running_by_name_[name] = pid;
  return true;
}

void AttributePublisher::RetryFailed() {
  for (auto& [name, value] : failed_) wanted_.emplace(name, value);  // newer wanted values win
  failed_.clear();
  StartPending();
}

void AttributePublisher::Reap() {
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) break;
    auto it = running_.find(pid);
    if (it == running_.end()) continue;  // not ours (should not happen: ckptd has no others)
    auto [name, value] = it->second;
    running_.erase(it);
    running_by_name_.erase(name);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      published_[name] = value;
    } else {
      // Pacemaker not running (yet) is normal on a corosync-only node: debug, not warning.
      CKPT_LOG_DEBUG("%s -n %s failed (%s %d); will retry", program_.c_str(), name.c_str(),
                     WIFEXITED(status) ? "exit" : "signal",
                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
      published_.erase(name);
      if (!wanted_.count(name)) failed_[name] = value;
    }
    auto w = wanted_.find(name);
    if (w != wanted_.end() && published_.count(name) && published_[name] == w->second)
      wanted_.erase(w);
  }
  StartPending();
}

}  // namespace ckpt::agent
