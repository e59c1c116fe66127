// Publishes transient Pacemaker node attributes by running `attrd_updater -n NAME -U VALUE`
// (or `-D` to delete) asynchronously: never blocks the loop.  Updates are coalesced per name: at
// most one child per name runs; while it runs only the latest wanted value is remembered and
// published when it exits.  The owner calls Reap() on SIGCHLD.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <map>
#include <optional>
#include <string>

namespace ckpt::agent {

class AttributePublisher {
 public:
  // `program`: path or name (PATH lookup) of attrd_updater.
  explicit AttributePublisher(std::string program, size_t max_children = 8);
  // value "" deletes the attribute.
  void Set(const std::string& name, const std::string& value);
  // Collects exited children (waitpid WNOHANG) and starts pending updates.
  void Reap();
  // Re-queues updates whose attrd_updater failed (e.g. Pacemaker was not up yet).
  void RetryFailed();
  bool has_failed() const { return !failed_.empty(); }
  size_t running() const { return running_.size(); }
  size_t pending() const { return wanted_.size(); }

 private:
  void StartPending();
  bool Spawn(const std::string& name, const std::string& value);

  std::string program_;
  size_t max_children_;
  std::map<std::string, std::string> wanted_;     // name -> value still to publish
  std::map<std::string, std::string> published_;  // name -> last value published successfully
  std::map<std::string, std::string> failed_;     // name -> value whose update failed
  std::map<pid_t, std::pair<std::string, std::string>> running_;  // pid -> (name, value)
  std::map<std::string, pid_t> running_by_name_;
  bool warned_spawn_failure_ = false;
};

}  // namespace ckpt::agent
