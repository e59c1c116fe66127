// LabCluster: drives tests/lab/lab from GoogleTest (cluster-label tests).
// Every call runs `lab --name NAME ...` and returns exit code and combined output; helpers wait
// for conditions with a deadline instead of sleeping fixed times.
#pragma once

#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>

namespace ckpt::test {

struct CmdResult {
  int code = -1;
  std::string out;
};

inline CmdResult Shell(const std::string& cmd) {
  CmdResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) r.out.append(buf, n);
  int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

inline std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

class LabCluster {
 public:
  LabCluster(std::string lab_script, std::string name, std::string bin_dir)
      : lab_(std::move(lab_script)), name_(std::move(name)), bin_(std::move(bin_dir)) {}

  CmdResult Lab(const std::string& args) const {
    return Shell(lab_ + " --name " + name_ + " -q " + args);
  }
  // Runs a shell command line inside node n (1-based).
  CmdResult Exec(int n, const std::string& cmdline) const {
    return Lab("exec n" + std::to_string(n) + " sh -c " + Quote(cmdline));
  }
  CmdResult Ctl(int n, const std::string& args) const {
    return Exec(n, bin_ + "/ckptctl " + args);
  }
  CmdResult StartCkptd(int n, const std::string& extra = "") const {
    return Lab("ckptd start n" + std::to_string(n) + " --bin " + bin_ +
               " --attributes=false --log-file /var/log/ckpt/ckptd.log " + extra);
  }
  const std::string& bin() const { return bin_; }
  const std::string& name() const { return name_; }

 private:
  std::string lab_, name_, bin_;
};

// Polls `cond` every 200 ms until it holds or `timeout` passes.
inline bool WaitFor(const std::function<bool()>& cond, std::chrono::seconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return cond();
}

}  // namespace ckpt::test
