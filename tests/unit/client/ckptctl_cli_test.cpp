// ckptctl's argument handling and daemon-less exit codes (runs the real binary).
#include <gtest/gtest.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <string>

namespace {

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};

RunResult Ckptctl(const std::string& args) {
  std::string cmd =
      "CKPT_IPC_SERVICE=ckptd-unit-test-nobody-listens " CKPTCTL_PATH " " + args + " 2>&1";
  RunResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

void ExpectUsage(const std::string& args) {
  RunResult r = Ckptctl(args);
  EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
  EXPECT_NE(r.output.find("ckptctl: "), std::string::npos) << args << "\n" << r.output;
  EXPECT_NE(r.output.find("sage: ckptctl"), std::string::npos) << args << "\n" << r.output;
}

TEST(Ckptctl, UsageErrorsExit2) {
  ExpectUsage("");
  ExpectUsage("frobnicate");
  ExpectUsage("--bogus status");
  ExpectUsage("show");
  ExpectUsage("show a b");
  ExpectUsage("list --bogus");
  ExpectUsage("put seg");
  ExpectUsage("put seg file --mode 999");
  ExpectUsage("put seg file --sync --no-sync");
  ExpectUsage("pull seg --timeout -3");
  ExpectUsage("pull seg --timeout abc");
  ExpectUsage("get seg --version 12");
  ExpectUsage("get seg --version x.1");
  ExpectUsage("delete 'bad/name'");
  ExpectUsage("release .hidden");
}

TEST(Ckptctl, HelpEverywhere) {
  RunResult r = Ckptctl("--help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("Exit codes:"), std::string::npos);
  for (const char* cmd : {"status", "list", "show", "pull", "put", "get", "versions", "delete",
                          "release", "flush", "monitor"}) {
    EXPECT_NE(r.output.find(std::string("  ") + cmd + " "), std::string::npos) << cmd;
    RunResult h = Ckptctl(std::string(cmd) + " --help");
    EXPECT_EQ(h.exit_code, 0) << cmd;
    EXPECT_NE(h.output.find(std::string("Usage: ckptctl ") + cmd), std::string::npos) << h.output;
  }
}

TEST(Ckptctl, NoDaemonExit5) {
  for (const char* args : {"status", "list --json", "show seg", "pull seg", "get seg -",
                           "versions seg", "delete seg", "release seg", "flush seg"}) {
    RunResult r = Ckptctl(args);
    EXPECT_EQ(r.exit_code, 5) << args << "\n" << r.output;
    EXPECT_NE(r.output.find("ckptctl: cannot connect to ckptd: is it running?"), std::string::npos)
        << r.output;
  }
}

TEST(Ckptctl, MonitorUsesOcfCodes) {
  EXPECT_EQ(Ckptctl("monitor seg").exit_code, 1);   // PCMK_OCF_UNKNOWN_ERROR: ckptd unreachable
  EXPECT_EQ(Ckptctl("monitor .bad").exit_code, 6);  // PCMK_OCF_NOT_CONFIGURED
}

}  // namespace
