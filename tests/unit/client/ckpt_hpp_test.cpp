// The C++ wrapper without a daemon: move semantics, the error rule, Version.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <ckpt/ckpt.hpp>
#include <type_traits>

namespace {

static_assert(!std::is_copy_constructible_v<ckpt::Client>);
static_assert(!std::is_copy_assignable_v<ckpt::Client>);
static_assert(std::is_nothrow_move_constructible_v<ckpt::Client>);
static_assert(std::is_nothrow_move_assignable_v<ckpt::Client>);
static_assert(!std::is_copy_constructible_v<ckpt::Segment>);
static_assert(!std::is_copy_assignable_v<ckpt::Segment>);
static_assert(std::is_nothrow_move_constructible_v<ckpt::Segment>);
static_assert(std::is_nothrow_move_assignable_v<ckpt::Segment>);
static_assert(std::is_base_of_v<std::runtime_error, ckpt::Error>);

struct CppNoDaemon : ::testing::Test {
  void SetUp() override { setenv("CKPT_IPC_SERVICE", "ckptd-unit-test-nobody-listens", 1); }
  void TearDown() override { unsetenv("CKPT_IPC_SERVICE"); }
};

TEST_F(CppNoDaemon, ConstructorThrowsUnavailable) {
  try {
    ckpt::Client c;
    FAIL() << "connected without a daemon";
  } catch (const ckpt::Error& e) {
    EXPECT_EQ(e.code(), CKPT_ERR_UNAVAILABLE);
    EXPECT_NE(e.message().find("is it running?"), std::string::npos) << e.message();
    EXPECT_NE(std::string(e.what()).find(e.message()), std::string::npos);
  }
}

TEST(CppWrapper, EmptyHandlesMoveAndThrowInvalid) {
  ckpt::Client a(nullptr);
  EXPECT_FALSE(a);
  ckpt::Client b(std::move(a));
  EXPECT_FALSE(b);
  a = std::move(b);
  EXPECT_FALSE(a);
  try {
    a.stat("x");
    FAIL();
  } catch (const ckpt::Error& e) {
    EXPECT_EQ(e.code(), CKPT_ERR_INVALID);
  }
  ckpt::Segment s;
  EXPECT_FALSE(s);
  ckpt::Segment t(std::move(s));
  EXPECT_FALSE(t);
  EXPECT_EQ(t.data(), nullptr);
  EXPECT_EQ(t.size(), 0u);
  EXPECT_THROW(t.commit(), ckpt::Error);
  EXPECT_THROW(t.mark_dirty(0, 1), ckpt::Error);
  t.close();  // idempotent, no throw
}

TEST(CppWrapper, ErrorCarriesCodeMessageAndContext) {
  ckpt::Error e(CKPT_ERR_FENCED, "node 2 owns it now", "commit app");
  EXPECT_EQ(e.code(), CKPT_ERR_FENCED);
  EXPECT_EQ(e.message(), "node 2 owns it now");
  EXPECT_STREQ(e.what(), "commit app: node 2 owns it now");
  // detail::check: >= 0 passes through (CKPT_NO_CHECKPOINT is not an error), < 0 throws with the
  // generic text when there is no client message.
  EXPECT_EQ(ckpt::detail::check(CKPT_NO_CHECKPOINT, nullptr, "x"), CKPT_NO_CHECKPOINT);
  ckpt_client_t* none = nullptr;
  ckpt_connect(nullptr);  // sets the thread's connect error, which check() uses for NULL clients
  try {
    ckpt::detail::check(CKPT_ERR_TIMEOUT, none, "pull x");
    FAIL();
  } catch (const ckpt::Error& err) {
    EXPECT_EQ(err.code(), CKPT_ERR_TIMEOUT);
    EXPECT_FALSE(err.message().empty());
  }
  EXPECT_THROW(ckpt::detail::to_ms(std::chrono::milliseconds(-1)), ckpt::Error);
  EXPECT_EQ(ckpt::detail::to_ms(std::chrono::hours(24 * 365 * 200)), UINT32_MAX);
}

TEST(CppWrapper, VersionOrderingAndText) {
  ckpt::Version a(1, 9), b(2, 3), c(ckpt_version_t{2, 3});
  EXPECT_LT(a, b);
  EXPECT_EQ(b, c);
  EXPECT_NE(a, c);
  EXPECT_GE(b, a);
  EXPECT_EQ(b.to_string(), "0.3");  // generation.seq: epoch 2 is generation 0
  EXPECT_EQ(ckpt::Version((uint64_t{2} << 32) | 7, 3).to_string(), "2.3");
  EXPECT_TRUE(ckpt::Version().empty());
  EXPECT_EQ(b.c().seq, 3u);
}

TEST(CppWrapper, OpenOptionsToC) {
  ckpt::OpenOptions o;
  o.size = 4096;
  o.create = true;
  o.durability = ckpt::Durability::kFsync;
  o.pull_timeout = std::chrono::seconds(2);
  ckpt_open_options_t c = o.c();
  EXPECT_EQ(c.size, 4096u);
  EXPECT_EQ(c.flags, static_cast<uint32_t>(CKPT_OPEN_CREATE));
  EXPECT_EQ(c.durability, static_cast<uint32_t>(CKPT_DURABILITY_FSYNC));
  EXPECT_EQ(c.pull_timeout_ms, 2000u);
}

}  // namespace
