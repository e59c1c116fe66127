// ckptd option parsing: defaults, file + command-line precedence, size suffixes, bad values.
#include "agent/config.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace ckpt::agent {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ckptd-config-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/ckptd.conf";
  }
  void TearDown() override {
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  void WriteFile(const std::string& text) { std::ofstream(path_) << text; }

  // Parses with --config pointing at our file (or a missing one when no file was written).
  Result<ParsedArgs> Parse(std::vector<std::string> args, bool with_config = true) {
    std::vector<std::string> all = {"ckptd"};
    if (with_config) {
      all.push_back("--config");
      all.push_back(path_);
    }
    all.insert(all.end(), args.begin(), args.end());
    std::vector<const char*> argv;
    for (auto& a : all) argv.push_back(a.c_str());
    return ParseArgs(static_cast<int>(argv.size()), argv.data(), "testnode");
  }

  std::string dir_, path_;
};

TEST_F(ConfigTest, Defaults) {
  WriteFile("");
  auto r = Parse({});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Config& c = r->config;
  EXPECT_EQ(r->action, ParsedArgs::kRun);
  EXPECT_EQ(c.node_name, "testnode");
  EXPECT_TRUE(c.eligible);
  EXPECT_FALSE(c.foreground);
  EXPECT_EQ(c.replicas, 1u);
  EXPECT_EQ(c.versions_kept, 1u);
  EXPECT_EQ(c.durability, static_cast<uint32_t>(CKPT_DURABILITY_MEMORY));
  EXPECT_EQ(c.compression, static_cast<uint32_t>(CKPT_COMPRESSION_NONE));
  EXPECT_EQ(c.state_dir, "/var/lib/ckpt");
  EXPECT_EQ(c.global_dir, "");
  EXPECT_EQ(c.shm_dir, "/dev/shm/ckpt");
  EXPECT_EQ(c.max_segment_bytes, 4ull << 30);
  EXPECT_EQ(c.max_total_bytes, 64ull << 30);
  EXPECT_EQ(c.chunk_bytes, 1020u << 10);
  EXPECT_EQ(c.cpg_group, "ckpt");
  EXPECT_EQ(c.send_queue_bytes, 64ull << 20);
  EXPECT_EQ(c.log_level, LogLevel::kInfo);
  EXPECT_TRUE(c.attributes);
  EXPECT_EQ(c.attrd_updater, "attrd_updater");
  EXPECT_TRUE(c.ipc_allow_uids.empty());
  EXPECT_TRUE(c.ipc_allow_gids.empty());
  EXPECT_EQ(c.blackbox_dir, "/var/lib/ckpt/blackbox");
  EXPECT_EQ(c.corosync_lost_exit_s, 0u);
}

TEST_F(ConfigTest, FileValuesAndCommandLineWins) {
  WriteFile(
      "# comment\n"
      "replicas = 2\n"
      "durability = fsync\n"
      "state-dir = /srv/ckpt\n"
      "chunk-size = 256K\n"
      "eligible = no\n"
      "log-level = debug\n"
      "ipc-allow-uid = 0, 1000\n");
  auto r = Parse({"--replicas=3", "-f", "--eligible=true", "--chunk-size", "64k"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Config& c = r->config;
  EXPECT_EQ(c.replicas, 3u);  // command line beats the file
  EXPECT_TRUE(c.eligible);
  EXPECT_EQ(c.chunk_bytes, 64u << 10);
  EXPECT_TRUE(c.foreground);
  EXPECT_EQ(c.durability, static_cast<uint32_t>(CKPT_DURABILITY_FSYNC));  // from the file
  EXPECT_EQ(c.state_dir, "/srv/ckpt");
  EXPECT_EQ(c.blackbox_dir, "/srv/ckpt/blackbox");  // follows state-dir
  EXPECT_EQ(c.log_level, LogLevel::kDebug);
  EXPECT_EQ(c.ipc_allow_uids, (std::vector<uint32_t>{0, 1000}));
}

TEST_F(ConfigTest, BareBoolFlagMeansTrue) {
  WriteFile("syslog = false\nattributes = off\n");
  auto r = Parse({"--syslog"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->config.syslog);
  EXPECT_FALSE(r->config.attributes);
}

TEST_F(ConfigTest, ByteSizes) {
  EXPECT_EQ(*ParseByteSize("0"), 0u);
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("4K"), 4096u);
  EXPECT_EQ(*ParseByteSize("4k"), 4096u);
  EXPECT_EQ(*ParseByteSize("1M"), 1u << 20);
  EXPECT_EQ(*ParseByteSize("1MiB"), 1u << 20);
  EXPECT_EQ(*ParseByteSize("1MB"), 1u << 20);
  EXPECT_EQ(*ParseByteSize("4G"), 4ull << 30);
  EXPECT_EQ(*ParseByteSize("2T"), 2ull << 40);
  EXPECT_EQ(*ParseByteSize("12B"), 12u);
  for (const char* bad :
       {"", "K", "-1", "1.5G", "4X", "4 G", "4GiBx", "99999999999999999999", "16777216T"})
    EXPECT_FALSE(ParseByteSize(bad).ok()) << bad;

  WriteFile("max-segment-size = 512M\nmax-total-bytes = 2G\nsend-queue-bytes = 8M\n");
  auto r = Parse({});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->config.max_segment_bytes, 512ull << 20);
  EXPECT_EQ(r->config.max_total_bytes, 2ull << 30);
  EXPECT_EQ(r->config.send_queue_bytes, 8ull << 20);
}

// The error names the key and the value.
void ExpectBad(Result<ParsedArgs> r, const std::string& key, const std::string& value) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalid);
  const std::string& m = r.status().message();
  EXPECT_NE(m.find(key), std::string::npos) << m;
  EXPECT_NE(m.find(value), std::string::npos) << m;
}

TEST_F(ConfigTest, BadValues) {
  WriteFile("");
  ExpectBad(Parse({"--replicas=-1"}), "replicas", "-1");
  ExpectBad(Parse({"--replicas=0"}), "replicas", "0");  // R >= 1: a segment always has a replica
  ExpectBad(Parse({"-f", "stray"}), "unexpected argument", "stray");  // no positionals
  {
    auto r = Parse({"--eligible", "false"});  // a separate value token is the value
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_FALSE(r->config.eligible);
  }
  ExpectBad(Parse({"--replicas=two"}), "replicas", "two");
  ExpectBad(Parse({"--replicas=500"}), "replicas", "500");
  ExpectBad(Parse({"--versions-kept=0"}), "versions-kept", "0");
  ExpectBad(Parse({"--durability=disk"}), "durability", "disk");
  ExpectBad(Parse({"--compression=lz4"}), "compression", "lz4");
  {
    auto r = Parse({"--compression=zstd"});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->config.compression, static_cast<uint32_t>(CKPT_COMPRESSION_ZSTD));
  }
  ExpectBad(Parse({"--chunk-size=2M"}), "chunk-size", "2M");
  ExpectBad(Parse({"--chunk-size=1K"}), "chunk-size", "1K");
  ExpectBad(Parse({"--max-segment-size=4Q"}), "max-segment-size", "4Q");
  ExpectBad(Parse({"--max-segment-size=8G", "--max-total-bytes=4G"}), "max-segment-size",
            "8589934592");
  ExpectBad(Parse({"--eligible=maybe"}), "eligible", "maybe");
  ExpectBad(Parse({"--log-level=verbose"}), "log-level", "verbose");
  ExpectBad(Parse({"--state-dir=relative/dir"}), "state-dir", "relative/dir");
  ExpectBad(Parse({"--cpg-group=" + std::string(200, 'g')}), "cpg-group", "ggg");
  ExpectBad(Parse({"--send-queue-bytes=1M"}), "send-queue-bytes", "1M");
  ExpectBad(Parse({"--ipc-allow-uid=no-such-user-ckpt"}), "ipc-allow-uid", "no-such-user-ckpt");
  ExpectBad(Parse({"--node-name=a b"}), "node-name", "a b");
}

TEST_F(ConfigTest, BadValueInFileNamesKey) {
  WriteFile("replicas = lots\n");
  ExpectBad(Parse({}), "replicas", "lots");
}

TEST_F(ConfigTest, UnknownKeyInFileIsAnError) {
  WriteFile("replicas = 2\nreplica = 3\n");
  auto r = Parse({});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("replica"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find(path_), std::string::npos) << r.status().message();
}

TEST_F(ConfigTest, UnknownFlagIsAnError) {
  WriteFile("");
  auto r = Parse({"--no-such-flag"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no-such-flag"), std::string::npos);
  // No abbreviations: --rep must not silently mean --replicas.
  EXPECT_FALSE(Parse({"--rep=2"}).ok());
}

TEST_F(ConfigTest, CommandLineOnlyKeysAreRejectedInFile) {
  WriteFile("foreground = true\n");
  EXPECT_FALSE(Parse({}).ok());
}

TEST_F(ConfigTest, MissingExplicitConfigIsAnError) {
  auto r = Parse({});  // --config points to a file we never wrote
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(path_), std::string::npos);
}

TEST_F(ConfigTest, HelpAndVersion) {
  auto h = Parse({"--help"}, false);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->action, ParsedArgs::kHelp);
  EXPECT_NE(h->text.find("--max-segment-size"), std::string::npos);
  auto v = Parse({"--version"}, false);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->action, ParsedArgs::kVersion);
  EXPECT_EQ(v->text.rfind("ckptd ", 0), 0u);
}

}  // namespace
}  // namespace ckpt::agent
