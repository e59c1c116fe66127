// libckpt without a daemon: connection errors, NULL/argument checks, ckpt_strerror.
#include <ckpt/ckpt.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <set>
#include <string>

namespace {

// A service name no daemon listens on, so the tests never meet a real ckptd.
struct NoDaemon : ::testing::Test {
  void SetUp() override { setenv("CKPT_IPC_SERVICE", "ckptd-unit-test-nobody-listens", 1); }
  void TearDown() override { unsetenv("CKPT_IPC_SERVICE"); }
};

TEST_F(NoDaemon, ConnectIsUnavailableWithClearMessage) {
  ckpt_client_t* c = reinterpret_cast<ckpt_client_t*>(0x1);
  EXPECT_EQ(ckpt_connect(&c), CKPT_ERR_UNAVAILABLE);
  EXPECT_EQ(c, nullptr);
  std::string msg = ckpt_last_error(nullptr);
  EXPECT_NE(msg.find("cannot connect to ckptd: is it running?"), std::string::npos) << msg;
}

TEST(Api, ConnectNullOut) {
  EXPECT_EQ(ckpt_connect(nullptr), CKPT_ERR_INVALID);
  EXPECT_STRNE(ckpt_last_error(nullptr), "");
}

TEST(Api, NullHandlesNeverCrash) {
  ckpt_version_t v{};
  char buf[8];
  ckpt_segment_info_t info;
  ckpt_segment_info_t* infos = nullptr;
  ckpt_version_info_t* versions = nullptr;
  ckpt_cluster_info_t cl;
  size_t n = 0;
  ckpt_segment_t* seg = nullptr;
  ckpt_disconnect(nullptr);
  ckpt_close(nullptr);
  EXPECT_EQ(ckpt_open(nullptr, "a", nullptr, &seg), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_segment_data(nullptr), nullptr);
  EXPECT_EQ(ckpt_segment_size(nullptr), 0u);
  EXPECT_EQ(ckpt_segment_version(nullptr).epoch, 0u);
  EXPECT_EQ(ckpt_write(nullptr, 0, buf, 1), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_mark_dirty(nullptr, 0, 1), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_commit(nullptr, 0, 0, &v), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_flush(nullptr, 0), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_flush_all(nullptr, 0), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_pull(nullptr, "a", 0, &v), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_release(nullptr, "a", 0), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_read(nullptr, "a", nullptr, 0, buf, 1, &v), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_delete(nullptr, "a"), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_stat(nullptr, "a", &info), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_list(nullptr, &infos, &n), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_versions(nullptr, "a", &versions, &n), CKPT_ERR_INVALID);
  EXPECT_EQ(ckpt_cluster_status(nullptr, &cl), CKPT_ERR_INVALID);
}

TEST(Api, StrerrorCoversEveryCode) {
  std::set<std::string> seen;
  for (int code = CKPT_ERR_INTERNAL; code <= CKPT_NO_CHECKPOINT; code++) {
    const char* s = ckpt_strerror(code);
    ASSERT_NE(s, nullptr);
    EXPECT_STRNE(s, "unknown ckpt status") << code;
    EXPECT_TRUE(seen.insert(s).second) << "duplicate text for " << code << ": " << s;
  }
  EXPECT_STREQ(ckpt_strerror(CKPT_ERR_INTERNAL - 1), "unknown ckpt status");
  EXPECT_STREQ(ckpt_strerror(2), "unknown ckpt status");
  EXPECT_STREQ(ckpt_strerror(-1000000), "unknown ckpt status");
}

}  // namespace
