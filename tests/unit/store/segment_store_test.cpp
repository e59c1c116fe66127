#include "store/segment_store.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "common/codec.hpp"
#include "tests/unit/store/test_util.hpp"

namespace ckpt {
namespace {

namespace fs = std::filesystem;
using testing::Bytes;
using testing::RandomBytes;
using testing::TempDir;

// Byte offsets inside a record (see segment_store.cpp): 16-byte prefix, str name, then u64 epoch,
// seq, base epoch, base seq, size, segment checksum, stored ms, payload length.
size_t PayloadLenOffset(const std::string& name) { return 16 + 2 + name.size() + 7 * 8; }
size_t PayloadOffset(const std::string& name) { return PayloadLenOffset(name) + 8; }

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}
void WriteFile(const std::string& path, const std::vector<uint8_t>& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}
void FlipByte(const std::string& path, size_t offset) {
  std::vector<uint8_t> d = ReadFile(path);
  ASSERT_LT(offset, d.size());
  d[offset] ^= 0x5A;
  WriteFile(path, d);
}
// Recomputes the record trailer, so only the deeper checks can catch a change.
void ResealRecord(const std::string& path) {
  std::vector<uint8_t> d = ReadFile(path);
  ASSERT_GE(d.size(), 8u);
  store_le64(d.data() + d.size() - 8, Checksum64(d.data(), d.size() - 8));
  WriteFile(path, d);
}

SegmentMeta Meta(const std::string& name, uint64_t size) {
  SegmentMeta m;
  m.name = name;
  m.size = size;
  m.uid = 1000;
  m.gid = 1001;
  m.mode = 0640;
  m.replicas = 2;
  m.versions_kept = 3;
  m.durability = 2;
  m.epoch = 4;
  m.owner_nodeid = 7;
  return m;
}

class SegmentStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    opts_.state_dir = dir_.path() + "/state/nested";
    opts_.global_dir = dir_.path() + "/global";
    opts_.shm_dir = dir_.path() + "/shm";
    store_ = Open();
  }
  std::unique_ptr<SegmentStore> Open() {
    auto s = SegmentStore::Open(opts_);
    EXPECT_TRUE(s.ok()) << s.status().message();
    return s.ok() ? std::move(s).value() : nullptr;
  }
  std::string SegDir(const std::string& name) { return opts_.state_dir + "/segments/" + name; }
  std::string VFile(const std::string& name, Version v, const char* ext) {
    return SegDir(name) + "/" + std::to_string(v.epoch) + "-" + std::to_string(v.seq) + ext;
  }
  // Reloads with a fresh store object ("restart").
  std::vector<LoadedSegment> Reload(StoreCounters* counters = nullptr) {
    store_ = Open();
    auto r = store_->LoadAll();
    EXPECT_TRUE(r.ok()) << r.status().message();
    if (counters) *counters = store_->counters();
    return r.ok() ? std::move(r).value() : std::vector<LoadedSegment>{};
  }
  // Reloads and expects exactly one segment holding only version v with these bytes, and no
  // file found damaged.
  void ExpectReloadsAsOnly(Version v, const std::vector<uint8_t>& bytes) {
    StoreCounters counters;
    auto segs = Reload(&counters);
    ASSERT_EQ(segs.size(), 1u);
    ASSERT_EQ(VersionsOf(segs[0]), (std::vector<Version>{v}));
    EXPECT_EQ(Bytes(segs[0].versions[0].image), bytes);
    EXPECT_EQ(counters.corrupt_files, 0u);
  }
  static const LoadedSegment* Find(const std::vector<LoadedSegment>& segs, const std::string& n) {
    for (auto& s : segs)
      if (s.meta.name == n) return &s;
    return nullptr;
  }
  static std::vector<Version> VersionsOf(const LoadedSegment& s) {
    std::vector<Version> v;
    for (auto& sv : s.versions) v.push_back(sv.version);
    return v;
  }
  // Stores a segment with a full v(1,1) and deltas v(1,2..n); returns every version's bytes.
  std::vector<std::vector<uint8_t>> PutChain(const std::string& name, uint64_t size, int n) {
    std::vector<std::vector<uint8_t>> out;
    EXPECT_TRUE(store_->PutMeta(Meta(name, size), false).ok());
    BlockImage img = BlockImage::FromBytes(RandomBytes(size, 1));
    EXPECT_TRUE(store_->PutFull(name, {1, 1}, img, false).ok());
    out.push_back(Bytes(img));
    for (int s = 2; s <= n; s++) {
      std::vector<ByteRange> ranges = {{static_cast<uint64_t>(s) * 10, 20}, {size - 5, 5}};
      for (auto& r : ranges) img.Write(r.offset, RandomBytes(r.length, s * 100 + r.offset));
      Status st = store_->PutDelta(name, {1, static_cast<uint64_t>(s)},
                                   {1, static_cast<uint64_t>(s - 1)}, ranges, img, false);
      EXPECT_TRUE(st.ok()) << st.message();
      out.push_back(Bytes(img));
    }
    return out;
  }

  TempDir dir_;
  StoreOptions opts_;
  std::unique_ptr<SegmentStore> store_;
};

TEST_F(SegmentStoreTest, OpenCreatesDirectories) {
  struct stat st;
  ASSERT_EQ(::stat((opts_.state_dir + "/segments").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat(opts_.shm_dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  EXPECT_TRUE(fs::is_directory(opts_.global_dir));
  EXPECT_TRUE(store_->has_global());
  auto segs = store_->LoadAll();
  ASSERT_TRUE(segs.ok());
  EXPECT_TRUE(segs->empty());
}

// Directories are made parent first, however many are missing, each with the store's mode, also
// when local storage is made again under a running store (LocalStorageDirectoryIsRecreated).
TEST_F(SegmentStoreTest, MissingDirectoriesAreMadeAtAnyDepth) {
  StoreOptions deep;
  deep.state_dir = dir_.path() + "/a/b/c/state";
  deep.shm_dir = dir_.path() + "/x/y/shm";
  auto s = SegmentStore::Open(deep);
  ASSERT_TRUE(s.ok()) << s.status().message();
  struct stat st;
  for (const std::string& d : {dir_.path() + "/a", dir_.path() + "/a/b/c", deep.state_dir}) {
    ASSERT_EQ(::stat(d.c_str(), &st), 0) << d;
    EXPECT_EQ(st.st_mode & 0777, 0700u) << d;
  }
  ASSERT_EQ(::stat((dir_.path() + "/x").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);

  fs::remove_all(dir_.path() + "/x");
  BlockImage img = BlockImage::FromBytes(RandomBytes(100, 3));
  ASSERT_TRUE((*s)->InstallLocal("loc", img, ::geteuid(), ::getegid(), 0600).ok());
  ASSERT_EQ(::stat((dir_.path() + "/x/y").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  EXPECT_EQ(ReadFile(deep.shm_dir + "/loc"), Bytes(img));
}

TEST_F(SegmentStoreTest, OpenFailsWithPathInMessage) {
  WriteFile(dir_.path() + "/plainfile", {1});
  StoreOptions bad;
  bad.state_dir = dir_.path() + "/plainfile/state";
  auto s = SegmentStore::Open(bad);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kIo);
  EXPECT_NE(s.status().message().find(dir_.path() + "/plainfile"), std::string::npos)
      << s.status().message();
  EXPECT_FALSE(SegmentStore::Open(StoreOptions{}).ok());  // state_dir is required
}

TEST_F(SegmentStoreTest, PutFullAndLoad) {
  SegmentMeta meta = Meta("seg-a", 3 * kBlockSize + 5);
  ASSERT_TRUE(store_->PutMeta(meta, true).ok());
  BlockImage img = BlockImage::FromBytes(RandomBytes(meta.size, 3));
  ASSERT_TRUE(store_->PutFull("seg-a", {4, 9}, img, true).ok());
  EXPECT_EQ(store_->counters().files_written, 2u);
  EXPECT_GT(store_->counters().bytes_written, meta.size);
  EXPECT_TRUE(fs::exists(VFile("seg-a", {4, 9}, ".full")));

  StoreCounters c;
  auto segs = Reload(&c);
  ASSERT_EQ(segs.size(), 1u);
  EXPECT_EQ(segs[0].meta, meta);
  ASSERT_EQ(segs[0].versions.size(), 1u);
  EXPECT_EQ(segs[0].versions[0].version, (Version{4, 9}));
  EXPECT_EQ(Bytes(segs[0].versions[0].image), Bytes(img));
  EXPECT_EQ(segs[0].versions[0].image.checksum(), img.checksum());
  EXPECT_GT(segs[0].versions[0].stored_unix_ms, 0u);
  EXPECT_EQ(c.corrupt_files, 0u);
}

TEST_F(SegmentStoreTest, ZeroSizeAndSparseSegments) {
  ASSERT_TRUE(store_->PutMeta(Meta("empty", 0), false).ok());
  ASSERT_TRUE(store_->PutFull("empty", {1, 1}, BlockImage::Zero(0), false).ok());
  // A mostly-zero segment reloads without allocating its zero blocks.
  BlockImage sparse = BlockImage::Zero(64 * kBlockSize);
  sparse.Write(5 * kBlockSize, RandomBytes(10, 1));
  ASSERT_TRUE(store_->PutMeta(Meta("sparse", sparse.size()), false).ok());
  ASSERT_TRUE(store_->PutFull("sparse", {1, 1}, sparse, false).ok());

  auto segs = Reload();
  const LoadedSegment* e = Find(segs, "empty");
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(e->versions.size(), 1u);
  EXPECT_EQ(e->versions[0].image.size(), 0u);
  const LoadedSegment* s = Find(segs, "sparse");
  ASSERT_NE(s, nullptr);
  ASSERT_EQ(s->versions.size(), 1u);
  EXPECT_EQ(Bytes(s->versions[0].image), Bytes(sparse));
  EXPECT_EQ(s->versions[0].image.allocated_bytes(), kBlockSize);
}

TEST_F(SegmentStoreTest, DeltaChainRebuildsEveryVersion) {
  auto expected = PutChain("chain", 5 * kBlockSize + 3, 5);
  for (uint64_t s = 2; s <= 5; s++) EXPECT_TRUE(fs::exists(VFile("chain", {1, s}, ".delta")));
  auto segs = Reload();
  ASSERT_EQ(segs.size(), 1u);
  ASSERT_EQ(segs[0].versions.size(), 5u);
  for (size_t i = 0; i < 5; i++) {
    EXPECT_EQ(segs[0].versions[i].version, (Version{1, i + 1}));
    EXPECT_EQ(Bytes(segs[0].versions[i].image), expected[i]) << i;
  }
  // Unchanged blocks are shared between the rebuilt versions.
  EXPECT_EQ(segs[0].versions[0].image.block(2).data(), segs[0].versions[4].image.block(2).data());
}

TEST_F(SegmentStoreTest, DeltaWithManyRangesAndContinueAfterRestart) {
  const uint64_t size = 8 * kBlockSize;
  ASSERT_TRUE(store_->PutMeta(Meta("many", size), false).ok());
  BlockImage img = BlockImage::FromBytes(RandomBytes(size, 5));
  ASSERT_TRUE(store_->PutFull("many", {1, 1}, img, false).ok());
  // 3000 ranges: more iovecs than one writev() takes.
  std::vector<ByteRange> ranges;
  for (uint64_t i = 0; i < 3000; i++) ranges.push_back({i * 97 % (size - 3), 3});
  for (auto& r : ranges) img.Write(r.offset, RandomBytes(3, r.offset));
  ASSERT_TRUE(store_->PutDelta("many", {1, 2}, {1, 1}, ranges, img, false).ok());
  EXPECT_TRUE(fs::exists(VFile("many", {1, 2}, ".delta")));

  auto segs = Reload();
  ASSERT_EQ(segs.size(), 1u);
  ASSERT_EQ(segs[0].versions.size(), 2u);
  EXPECT_EQ(Bytes(segs[0].versions[1].image), Bytes(img));
  // The restarted store continues the chain (its index came from LoadAll).
  img.Write(0, RandomBytes(8, 9));
  ASSERT_TRUE(store_->PutDelta("many", {2, 3}, {1, 2}, {{0, 8}}, img, false).ok());
  EXPECT_TRUE(fs::exists(VFile("many", {2, 3}, ".delta")));
  segs = Reload();
  ASSERT_EQ(segs[0].versions.size(), 3u);
  EXPECT_EQ(Bytes(segs[0].versions[2].image), Bytes(img));
}

TEST_F(SegmentStoreTest, DeltasAreCompactedIntoFullFiles) {
  const uint64_t size = 4 * kBlockSize;  // 256 KiB
  const uint64_t chunk = 100 * 1024;
  ASSERT_TRUE(store_->PutMeta(Meta("compact", size), false).ok());
  BlockImage img = BlockImage::Zero(size);
  ASSERT_TRUE(store_->PutFull("compact", {1, 1}, img, false).ok());
  const uint64_t record = 4 + 16 + chunk;  // range count, the range's header, its bytes
  for (uint64_t s = 2; s <= 5; s++) {
    img.Write(0, RandomBytes(chunk, static_cast<uint32_t>(s)));
    // DeltaWriteBytes says beforehand which of the two PutDelta writes.
    EXPECT_EQ(store_->DeltaWriteBytes("compact", {1, s - 1}, {{0, chunk}}, size),
              s == 4 ? size : record)
        << s;
    ASSERT_TRUE(store_->PutDelta("compact", {1, s}, {1, s - 1}, {{0, chunk}}, img, false).ok());
  }
  // Chain bytes: 100K, 200K, then 300K > 256K -> full; then a new chain starts.
  EXPECT_TRUE(fs::exists(VFile("compact", {1, 2}, ".delta")));
  EXPECT_TRUE(fs::exists(VFile("compact", {1, 3}, ".delta")));
  EXPECT_TRUE(fs::exists(VFile("compact", {1, 4}, ".full")));
  EXPECT_FALSE(fs::exists(VFile("compact", {1, 4}, ".delta")));
  EXPECT_TRUE(fs::exists(VFile("compact", {1, 5}, ".delta")));
  auto segs = Reload();
  ASSERT_EQ(segs[0].versions.size(), 5u);
  EXPECT_EQ(Bytes(segs[0].versions[4].image), Bytes(img));
}

TEST_F(SegmentStoreTest, DeltaOnUnknownBaseIsStoredFull) {
  ASSERT_TRUE(store_->PutMeta(Meta("nobase", 1000), false).ok());
  BlockImage img = BlockImage::FromBytes(RandomBytes(1000, 1));
  EXPECT_EQ(store_->DeltaWriteBytes("nobase", {1, 4}, {{0, 10}}, 1000), 1000u);
  ASSERT_TRUE(store_->PutDelta("nobase", {1, 5}, {1, 4}, {{0, 10}}, img, false).ok());
  // Stored at another size than the delta's image: a whole version too.
  EXPECT_EQ(store_->DeltaWriteBytes("nobase", {1, 5}, {{0, 10}}, 2000), 2000u);
  EXPECT_EQ(store_->DeltaWriteBytes("nobase", {1, 5}, {{0, 10}}, 1000), 4u + 16 + 10);
  EXPECT_TRUE(fs::exists(VFile("nobase", {1, 5}, ".full")));
  auto segs = Reload();
  ASSERT_EQ(segs[0].versions.size(), 1u);
  EXPECT_EQ(Bytes(segs[0].versions[0].image), Bytes(img));
}

TEST_F(SegmentStoreTest, InvalidArgumentsAreRejected) {
  BlockImage img = BlockImage::Zero(100);
  EXPECT_EQ(store_->PutDelta("x", {1, 2}, {1, 1}, {{90, 11}}, img, false).code(), Code::kInvalid);
  EXPECT_EQ(store_->PutDelta("x", {1, 2}, {1, 2}, {}, img, false).code(), Code::kInvalid);
  EXPECT_EQ(store_->PutFull("../evil", {1, 1}, img, false).code(), Code::kBadName);
  EXPECT_EQ(store_->PutMeta(Meta(".hidden", 1), false).code(), Code::kBadName);
  EXPECT_EQ(store_->InstallLocal("a/b", img, 0, 0, 0600).code(), Code::kBadName);
}

TEST_F(SegmentStoreTest, WriteErrorsNameThePath) {
  WriteFile(opts_.state_dir + "/segments/blocked", {1});  // a file where the dir should be
  Status st = store_->PutMeta(Meta("blocked", 1), false);
  EXPECT_EQ(st.code(), Code::kIo);
  EXPECT_NE(st.message().find(opts_.state_dir + "/segments/blocked"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find(std::strerror(ENOTDIR)), std::string::npos) << st.message();

  // The final name is taken by a directory: rename fails, the temporary file is removed.
  ASSERT_TRUE(store_->PutMeta(Meta("ren", 10), false).ok());
  fs::create_directory(VFile("ren", {1, 1}, ".full"));
  fs::create_directory(VFile("ren", {1, 1}, ".full") +
                       "/x");  // non-empty: rename cannot replace it
  st = store_->PutFull("ren", {1, 1}, BlockImage::Zero(10), true);
  EXPECT_EQ(st.code(), Code::kIo);
  EXPECT_NE(st.message().find(VFile("ren", {1, 1}, ".full")), std::string::npos) << st.message();
  std::vector<std::string> files;
  for (auto& e : fs::directory_iterator(SegDir("ren"))) files.push_back(e.path().filename());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"1-1.full", "meta"}));
  EXPECT_EQ(store_->counters().files_written, 1u);
}

// ENOSPC must surface as kNoSpace and leave no temporary files.  Needs a private mount namespace
// for a tiny tmpfs (root or CAP_SYS_ADMIN); skipped otherwise.
TEST_F(SegmentStoreTest, FullDiskIsNoSpace) {
  std::string small = dir_.path() + "/small";
  fs::create_directory(small);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=256k") != 0)
      ::_exit(77);
    StoreOptions o{small + "/state", "", small + "/shm"};
    auto s = SegmentStore::Open(o);
    if (!s.ok()) ::_exit(10);
    BlockImage img = BlockImage::FromBytes(RandomBytes(1 << 20, 1));
    if ((*s)->PutFull("x", {1, 1}, img, true).code() != Code::kNoSpace) ::_exit(11);
    if ((*s)->InstallLocal("x", img, 0, 0, 0600).code() != Code::kNoSpace) ::_exit(12);
    if (!fs::is_empty(small + "/state/segments/x") || !fs::is_empty(small + "/shm")) ::_exit(13);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "cannot mount a private tmpfs here";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10 open, 11 PutFull, 12 InstallLocal, 13 leftovers";
}

TEST_F(SegmentStoreTest, PruneKeepsWhatKeptVersionsDependOn) {
  const uint64_t size = 4 * kBlockSize;
  ASSERT_TRUE(store_->PutMeta(Meta("p", size), false).ok());
  BlockImage img = BlockImage::FromBytes(RandomBytes(size, 1));
  ASSERT_TRUE(store_->PutFull("p", {1, 1}, img, false).ok());
  img.Write(0, RandomBytes(10, 2));
  ASSERT_TRUE(store_->PutDelta("p", {1, 2}, {1, 1}, {{0, 10}}, img, false).ok());
  ASSERT_TRUE(store_->PutFull("p", {1, 3}, img, false).ok());
  img.Write(20, RandomBytes(10, 4));
  ASSERT_TRUE(store_->PutDelta("p", {1, 4}, {1, 3}, {{20, 10}}, img, false).ok());
  img.Write(40, RandomBytes(10, 5));
  ASSERT_TRUE(store_->PutDelta("p", {1, 5}, {1, 4}, {{40, 10}}, img, false).ok());
  auto v5 = Bytes(img);

  ASSERT_TRUE(store_->Prune("p", {1, 5}).ok());
  EXPECT_FALSE(fs::exists(VFile("p", {1, 1}, ".full")));
  EXPECT_FALSE(fs::exists(VFile("p", {1, 2}, ".delta")));
  EXPECT_TRUE(fs::exists(VFile("p", {1, 3}, ".full")));   // base of 4
  EXPECT_TRUE(fs::exists(VFile("p", {1, 4}, ".delta")));  // base of 5
  auto segs = Reload();
  ASSERT_EQ(VersionsOf(segs[0]), (std::vector<Version>{{1, 3}, {1, 4}, {1, 5}}));
  EXPECT_EQ(Bytes(segs[0].versions[2].image), v5);

  // A new store object (no LoadAll) prunes from the files' headers.
  store_ = Open();
  ASSERT_TRUE(store_->PutFull("p", {1, 6}, img, false).ok());
  ASSERT_TRUE(store_->Prune("p", {1, 6}).ok());
  std::vector<std::string> left, spares;
  for (auto& e : fs::directory_iterator(SegDir("p"))) {
    std::string f = e.path().filename();
    (f.starts_with(".spare.tmp-") ? spares : left).push_back(f);
  }
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"1-6.full", "meta"}));
  EXPECT_EQ(spares.size(), 3u);  // the three retired files, kept for the next records
  EXPECT_TRUE(store_->Prune("never-stored", {1, 1}).ok());
}

// A stream of versions reuses the retired files instead of creating one per version; the
// spares never show up as versions and a restart deletes them.
TEST_F(SegmentStoreTest, RetiredFilesAreReusedAndNeverLoaded) {
  const uint64_t size = 3 * kBlockSize + 100;
  ASSERT_TRUE(store_->PutMeta(Meta("r", size), false).ok());
  BlockImage img;
  for (uint64_t seq = 1; seq <= 20; seq++) {
    img = BlockImage::FromBytes(RandomBytes(size, seq));
    ASSERT_TRUE(store_->PutFull("r", {1, seq}, img, false).ok());
    ASSERT_TRUE(store_->Prune("r", {1, seq}).ok());
  }
  // A small delta lands in a spare that held a whole version: it is cut to the delta's length.
  img.Write(7, RandomBytes(5, 100));
  ASSERT_TRUE(store_->PutDelta("r", {1, 21}, {1, 20}, {{7, 5}}, img, false).ok());
  ASSERT_TRUE(store_->Prune("r", {1, 21}).ok());
  EXPECT_LT(fs::file_size(VFile("r", {1, 21}, ".delta")), size);
  img.Write(9, RandomBytes(5, 101));
  ASSERT_TRUE(store_->PutFull("r", {1, 22}, img, false).ok());
  ASSERT_TRUE(store_->Prune("r", {1, 22}).ok());
  auto last = Bytes(img);
  EXPECT_GT(store_->counters().spares_reused, 0u);
  size_t files = 0;
  for (auto& e : fs::directory_iterator(SegDir("r"))) {
    (void)e;
    files++;
  }
  EXPECT_LE(files, 1u + 1u + 2u);  // meta, the kept version, at most two spares
  ExpectReloadsAsOnly({1, 22}, last);
  for (auto& e : fs::directory_iterator(SegDir("r")))
    EXPECT_FALSE(std::string(e.path().filename()).starts_with(".spare.tmp-"));
}

// Prune retires what is older than the root (full version) of every kept version's chain, and
// nothing the kept chains rest on; a delta off the chain (on an older base than its predecessor)
// stays until a compaction moves the root past it.
TEST_F(SegmentStoreTest, PruneRetiresWhatIsOlderThanTheKeptChainsRoot) {
  const uint64_t size = 4 * kBlockSize;
  ASSERT_TRUE(store_->PutMeta(Meta("off", size), false).ok());
  BlockImage img = BlockImage::FromBytes(RandomBytes(size, 1));
  ASSERT_TRUE(store_->PutFull("off", {1, 1}, img, false).ok());
  BlockImage v2 = img;
  v2.Write(0, RandomBytes(10, 2));
  ASSERT_TRUE(store_->PutDelta("off", {1, 2}, {1, 1}, {{0, 10}}, v2, false).ok());
  img.Write(100, RandomBytes(10, 3));  // v3 rests on v1, not on v2
  ASSERT_TRUE(store_->PutDelta("off", {1, 3}, {1, 1}, {{100, 10}}, img, false).ok());
  ASSERT_TRUE(store_->Prune("off", {1, 3}).ok());
  EXPECT_TRUE(fs::exists(VFile("off", {1, 1}, ".full")));   // v3's base
  EXPECT_TRUE(fs::exists(VFile("off", {1, 2}, ".delta")));  // off the chain: kept for now
  auto segs = Reload();
  ASSERT_EQ(segs.size(), 1u);
  ASSERT_EQ(VersionsOf(segs[0]), (std::vector<Version>{{1, 1}, {1, 2}, {1, 3}}));
  EXPECT_EQ(Bytes(segs[0].versions[1].image), Bytes(v2));
  EXPECT_EQ(Bytes(segs[0].versions[2].image), Bytes(img));
  store_ = Open();
  ASSERT_TRUE(store_->PutFull("off", {1, 4}, img, false).ok());
  ASSERT_TRUE(store_->Prune("off", {1, 4}).ok());
  ExpectReloadsAsOnly({1, 4}, Bytes(img));
}

// A compaction retires its whole delta chain; the next chain's deltas are written into those
// files (no new inodes), each into a retired delta's file rather than the whole version retired
// with them, and the segment's directory never holds more files than one chain needed.
TEST_F(SegmentStoreTest, DeltaChainsReuseTheFilesTheirCompactionRetired) {
  const uint64_t size = 4 * kBlockSize;  // 256 KiB: a chain of 10 KiB deltas has 25 files
  const uint64_t dirty = 10 * 1024;
  ASSERT_TRUE(store_->PutMeta(Meta("chain", size), false).ok());
  BlockImage img = BlockImage::FromBytes(RandomBytes(size, 1));
  ASSERT_TRUE(store_->PutFull("chain", {1, 1}, img, false).ok());
  auto dir_files = [&] {
    size_t n = 0;
    for (auto& e : fs::directory_iterator(SegDir("chain"))) n += e.is_regular_file();
    return n;
  };
  auto largest_spare = [&] {
    uint64_t n = 0;
    for (auto& e : fs::directory_iterator(SegDir("chain")))
      if (std::string(e.path().filename()).starts_with(".spare.tmp-"))
        n = std::max<uint64_t>(n, fs::file_size(e.path()));
    return n;
  };
  uint64_t seq = 1;
  size_t most_files = 0;
  // Commits until the second compaction; count the files written into spares meanwhile.
  uint64_t fulls = 0, reused_in_second_chain = 0, deltas_in_second_chain = 0;
  while (fulls < 2) {
    seq++;
    img.Write((seq * 4096) % (size - dirty), RandomBytes(dirty, static_cast<uint32_t>(seq)));
    const bool compacts =
        store_->DeltaWriteBytes("chain", {1, seq - 1}, {{0, dirty}}, size) == size;
    const uint64_t reused_before = store_->counters().spares_reused;
    ASSERT_TRUE(store_
                    ->PutDelta("chain", {1, seq}, {1, seq - 1},
                               {{(seq * 4096) % (size - dirty), dirty}}, img, false)
                    .ok());
    if (compacts) {
      fulls++;
      EXPECT_TRUE(fs::exists(VFile("chain", {1, seq}, ".full"))) << seq;
      ASSERT_TRUE(store_->Prune("chain", {1, seq}).ok());  // retires the chain before it
      if (fulls == 1) {
        EXPECT_GE(largest_spare(), size);  // the old whole version is a spare
      }
    } else if (fulls == 1) {
      deltas_in_second_chain++;
      reused_in_second_chain += store_->counters().spares_reused - reused_before;
      // Each delta took a retired delta's file: the whole version's file is still a spare.
      EXPECT_GE(largest_spare(), size) << seq;
    }
    most_files = std::max(most_files, dir_files());
  }
  EXPECT_GT(deltas_in_second_chain, 20u);
  EXPECT_EQ(reused_in_second_chain, deltas_in_second_chain);
  EXPECT_LE(most_files, 2u + deltas_in_second_chain + 2u);  // meta, full, chain, spares
  ExpectReloadsAsOnly({1, seq}, Bytes(img));
}

// Retired files keep their bytes up to the store's spare budget; beyond it a retired file keeps
// only its inode.  Either way the next version written into it is intact.
TEST_F(SegmentStoreTest, SpareBytesStayWithinTheBudget) {
  opts_.spare_budget_bytes = 3 * kBlockSize;
  store_ = Open();
  const uint64_t size = 2 * kBlockSize;
  auto spare_bytes = [&] {
    uint64_t n = 0;
    for (const char* seg : {"a", "b"})
      if (fs::exists(SegDir(seg)))
        for (auto& e : fs::directory_iterator(SegDir(seg)))
          if (std::string(e.path().filename()).starts_with(".spare.tmp-"))
            n += fs::file_size(e.path());
    return n;
  };
  std::map<std::string, std::vector<uint8_t>> latest;
  for (uint64_t seq = 1; seq <= 4; seq++)
    for (const char* seg : {"a", "b"}) {
      if (seq == 1) {
        ASSERT_TRUE(store_->PutMeta(Meta(seg, size), false).ok());
      }
      latest[seg] = RandomBytes(size, seq * 10 + seg[0]);
      ASSERT_TRUE(store_->PutFull(seg, {1, seq}, BlockImage::FromBytes(latest[seg]), false).ok());
      ASSERT_TRUE(store_->Prune(seg, {1, seq}).ok());
      EXPECT_LE(spare_bytes(), opts_.spare_budget_bytes) << seg << " seq " << seq;
    }
  // One segment's spare holds a whole version (8 KiB + header), the other's was emptied.
  EXPECT_GT(spare_bytes(), 0u);
  EXPECT_GT(store_->counters().spares_reused, 0u);
  auto segs = Reload();
  ASSERT_EQ(segs.size(), 2u);
  for (auto& seg : segs) {
    ASSERT_EQ(VersionsOf(seg), (std::vector<Version>{{1, 4}}));
    EXPECT_EQ(Bytes(seg.versions[0].image), latest[seg.meta.name]);
  }
}

TEST_F(SegmentStoreTest, NewStoreContinuesChainFromHeaders) {
  PutChain("lazy", 2 * kBlockSize, 2);
  store_ = Open();  // no LoadAll: the index is rebuilt from headers on demand
  BlockImage img = BlockImage::Zero(2 * kBlockSize);
  ASSERT_TRUE(store_->PutDelta("lazy", {1, 3}, {1, 2}, {{0, 1}}, img, false).ok());
  EXPECT_TRUE(fs::exists(VFile("lazy", {1, 3}, ".delta")));
}

// ---- streamed full versions (BeginFull / AppendFull / FinishFull) ------------------------------

TEST_F(SegmentStoreTest, StreamedFullIsStoredLikePutFull) {
  const uint64_t size = 5 * kBlockSize + 321;
  ASSERT_TRUE(store_->PutMeta(Meta("st", size), false).ok());
  ASSERT_TRUE(
      store_->PutFull("st", {1, 1}, BlockImage::FromBytes(RandomBytes(size, 1)), false).ok());
  auto bytes = RandomBytes(size, 2);
  BlockImage img = BlockImage::FromBytes(bytes);
  ASSERT_TRUE(store_->BeginFull("st", {1, 2}, size, img.checksum()).ok());
  uint64_t off = 0;
  for (uint64_t len : {uint64_t{1000}, uint64_t{kBlockSize}, uint64_t{3 * kBlockSize + 7}}) {
    ASSERT_TRUE(store_->AppendFull("st", {1, 2}, img, off, len).ok());
    off += len;
  }
  EXPECT_EQ(store_->FinishFull("st", {1, 2}, false).code(), Code::kInvalid);  // not all there
  // That failure abandoned the stream: start again and finish it.
  ASSERT_TRUE(store_->BeginFull("st", {1, 2}, size, img.checksum()).ok());
  ASSERT_TRUE(store_->AppendFull("st", {1, 2}, img, 0, size).ok());
  ASSERT_TRUE(store_->FinishFull("st", {1, 2}, true).ok());
  ASSERT_TRUE(store_->Prune("st", {1, 2}).ok());
  ExpectReloadsAsOnly({1, 2}, bytes);
  // A delta on a streamed version works like on any full file.
  img.Write(3, RandomBytes(4, 3));
  ASSERT_TRUE(store_->PutDelta("st", {1, 3}, {1, 2}, {{3, 4}}, img, false).ok());
  auto segs = Reload();
  EXPECT_EQ(Bytes(segs[0].versions.back().image), Bytes(img));
}

TEST_F(SegmentStoreTest, BadStreamOpsFailAndKeepTheStoredVersion) {
  const uint64_t size = 2 * kBlockSize;
  ASSERT_TRUE(store_->PutMeta(Meta("bad", size), false).ok());
  auto v1 = RandomBytes(size, 1);
  ASSERT_TRUE(store_->PutFull("bad", {1, 1}, BlockImage::FromBytes(v1), false).ok());
  BlockImage img = BlockImage::FromBytes(RandomBytes(size, 2));
  EXPECT_EQ(store_->AppendFull("bad", {1, 2}, img, 0, 10).code(), Code::kNotFound);  // no Begin
  EXPECT_EQ(store_->FinishFull("bad", {1, 2}, false).code(), Code::kNotFound);
  ASSERT_TRUE(store_->BeginFull("bad", {1, 2}, size, img.checksum()).ok());
  EXPECT_EQ(store_->AppendFull("bad", {1, 3}, img, 0, 10).code(), Code::kNotFound);  // other v
  EXPECT_EQ(store_->AppendFull("bad", {1, 2}, img, 10, 10).code(), Code::kInvalid);  // a gap
  EXPECT_EQ(store_->FinishFull("bad", {1, 2}, false).code(), Code::kNotFound);       // abandoned
  ASSERT_TRUE(store_->BeginFull("bad", {1, 2}, size, img.checksum()).ok());
  EXPECT_EQ(store_->AppendFull("bad", {1, 2}, BlockImage::Zero(size + 1), 0, 1).code(),
            Code::kInvalid);  // image of another size
  ASSERT_TRUE(store_->BeginFull("bad", {1, 2}, size, img.checksum()).ok());
  ASSERT_TRUE(store_->AppendFull("bad", {1, 2}, img, 0, 100).ok());
  store_->AbortFull("bad", {1, 2});
  EXPECT_EQ(store_->FinishFull("bad", {1, 2}, false).code(), Code::kNotFound);
  store_->AbortFull("bad", {1, 2});  // nothing open: a no-op
  // A stream left open when the store goes away (a crash) is never loaded as a version.
  ASSERT_TRUE(store_->BeginFull("bad", {1, 4}, size, img.checksum()).ok());
  ASSERT_TRUE(store_->AppendFull("bad", {1, 4}, img, 0, size).ok());
  auto segs = Reload();
  ASSERT_EQ(VersionsOf(segs[0]), (std::vector<Version>{{1, 1}}));
  EXPECT_EQ(Bytes(segs[0].versions[0].image), v1);
  for (auto& e : fs::directory_iterator(SegDir("bad")))
    EXPECT_FALSE(std::string(e.path().filename()).find(".tmp-") != std::string::npos) << e.path();
}

TEST_F(SegmentStoreTest, NewStreamOrDropEndsAnOpenOne) {
  const uint64_t size = kBlockSize + 5;
  ASSERT_TRUE(store_->PutMeta(Meta("re", size), false).ok());
  BlockImage a = BlockImage::FromBytes(RandomBytes(size, 1));
  BlockImage b = BlockImage::FromBytes(RandomBytes(size, 2));
  ASSERT_TRUE(store_->BeginFull("re", {1, 1}, size, a.checksum()).ok());
  ASSERT_TRUE(store_->AppendFull("re", {1, 1}, a, 0, 100).ok());
  ASSERT_TRUE(store_->BeginFull("re", {1, 2}, size, b.checksum()).ok());  // replaces it
  EXPECT_EQ(store_->AppendFull("re", {1, 1}, a, 100, 100).code(), Code::kNotFound);
  ASSERT_TRUE(store_->AppendFull("re", {1, 2}, b, 0, size).ok());
  ASSERT_TRUE(store_->FinishFull("re", {1, 2}, false).ok());
  auto segs = Reload();
  ASSERT_EQ(VersionsOf(segs[0]), (std::vector<Version>{{1, 2}}));
  EXPECT_EQ(Bytes(segs[0].versions[0].image), Bytes(b));
  ASSERT_TRUE(store_->BeginFull("re", {1, 3}, size, a.checksum()).ok());
  ASSERT_TRUE(store_->DropSegment("re", false).ok());
  EXPECT_FALSE(fs::exists(SegDir("re")));
  EXPECT_EQ(store_->AppendFull("re", {1, 3}, a, 0, 1).code(), Code::kNotFound);
}

TEST_F(SegmentStoreTest, DropSegmentRemovesEverything) {
  PutChain("gone", 1000, 3);
  PutChain("stays", 1000, 1);
  ASSERT_TRUE(store_->PutGlobal(Meta("gone", 1000), {1, 1}, BlockImage::Zero(1000)).ok());
  ASSERT_TRUE(store_->DropSegment("gone", true).ok());
  EXPECT_FALSE(fs::exists(SegDir("gone")));
  EXPECT_FALSE(fs::exists(opts_.global_dir + "/gone.ckpt"));
  EXPECT_TRUE(store_->DropSegment("gone", true).ok());  // idempotent
  auto segs = Reload();
  ASSERT_EQ(segs.size(), 1u);
  EXPECT_EQ(segs[0].meta.name, "stays");
}

// ---- damaged files -----------------------------------------------------------------------------

TEST_F(SegmentStoreTest, FlippedByteInFullIsQuarantinedWithItsDependents) {
  const uint64_t size = 2 * kBlockSize;
  auto good = PutChain("good", 3000, 3);
  ASSERT_TRUE(store_->PutMeta(Meta("bad", size), false).ok());
  BlockImage img = BlockImage::FromBytes(RandomBytes(size, 1));
  ASSERT_TRUE(store_->PutFull("bad", {1, 1}, img, false).ok());
  ASSERT_TRUE(store_->PutDelta("bad", {1, 2}, {1, 1}, {{0, 1}}, img, false).ok());
  img.Write(5, RandomBytes(3, 3));
  ASSERT_TRUE(store_->PutFull("bad", {1, 3}, img, false).ok());
  ASSERT_TRUE(store_->PutDelta("bad", {1, 4}, {1, 3}, {{5, 3}}, img, false).ok());

  FlipByte(VFile("bad", {1, 1}, ".full"), PayloadOffset("bad") + 12345);
  StoreCounters c;
  auto segs = Reload(&c);
  EXPECT_EQ(c.corrupt_files, 1u);
  EXPECT_TRUE(fs::exists(VFile("bad", {1, 1}, ".full.corrupt")));
  EXPECT_FALSE(fs::exists(VFile("bad", {1, 1}, ".full")));
  EXPECT_FALSE(fs::exists(VFile("bad", {1, 2}, ".delta")));  // orphaned delta removed
  const LoadedSegment* bad = Find(segs, "bad");
  ASSERT_NE(bad, nullptr);
  EXPECT_EQ(VersionsOf(*bad), (std::vector<Version>{{1, 3}, {1, 4}}));
  EXPECT_EQ(Bytes(bad->versions[1].image), Bytes(img));
  const LoadedSegment* g = Find(segs, "good");
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(g->versions.size(), 3u);
  EXPECT_EQ(Bytes(g->versions[2].image), good[2]);

  // Quarantined files are not looked at again.
  auto again = Reload(&c);
  EXPECT_EQ(c.corrupt_files, 0u);
  EXPECT_EQ(VersionsOf(*Find(again, "bad")), (std::vector<Version>{{1, 3}, {1, 4}}));
}

TEST_F(SegmentStoreTest, TruncatedDeltaDropsTheRestOfTheChain) {
  auto expected = PutChain("t", 4000, 4);
  std::string d2 = VFile("t", {1, 2}, ".delta");
  fs::resize_file(d2, fs::file_size(d2) - 3);
  StoreCounters c;
  auto segs = Reload(&c);
  EXPECT_EQ(c.corrupt_files, 1u);
  EXPECT_TRUE(fs::exists(d2 + ".corrupt"));
  ASSERT_EQ(segs.size(), 1u);
  ASSERT_EQ(VersionsOf(segs[0]), (std::vector<Version>{{1, 1}}));
  EXPECT_EQ(Bytes(segs[0].versions[0].image), expected[0]);
}

TEST_F(SegmentStoreTest, GarbageMetaSkipsOnlyThatSegment) {
  PutChain("good", 100, 2);
  PutChain("bad", 100, 2);
  WriteFile(SegDir("bad") + "/meta", RandomBytes(300, 9));
  StoreCounters c;
  auto segs = Reload(&c);
  EXPECT_EQ(c.corrupt_files, 1u);
  EXPECT_TRUE(fs::exists(SegDir("bad") + "/meta.corrupt"));
  ASSERT_EQ(segs.size(), 1u);
  EXPECT_EQ(segs[0].meta.name, "good");
  EXPECT_EQ(segs[0].versions.size(), 2u);
}

TEST_F(SegmentStoreTest, ZeroLengthAndGarbageFilesAreQuarantined) {
  auto expected = PutChain("z", 5000, 2);
  WriteFile(VFile("z", {1, 2}, ".delta"), {});                      // zero-length
  WriteFile(VFile("z", {1, 7}, ".full"), RandomBytes(1 << 16, 1));  // random bytes
  WriteFile(VFile("z", {1, 8}, ".full"), {'C', 'K', 'P', 'T'});     // shorter than a header
  WriteFile(SegDir("z") + "/.1-9.full.tmp-abcdef", {1, 2, 3});      // crash leftover
  WriteFile(SegDir("z") + "/unrelated.txt", {1});                   // ignored
  StoreCounters c;
  auto segs = Reload(&c);
  EXPECT_EQ(c.corrupt_files, 3u);
  EXPECT_TRUE(fs::exists(VFile("z", {1, 2}, ".delta.corrupt")));
  EXPECT_TRUE(fs::exists(VFile("z", {1, 7}, ".full.corrupt")));
  EXPECT_TRUE(fs::exists(VFile("z", {1, 8}, ".full.corrupt")));
  EXPECT_FALSE(fs::exists(SegDir("z") + "/.1-9.full.tmp-abcdef"));
  EXPECT_TRUE(fs::exists(SegDir("z") + "/unrelated.txt"));
  ASSERT_EQ(segs.size(), 1u);
  ASSERT_EQ(VersionsOf(segs[0]), (std::vector<Version>{{1, 1}}));
  EXPECT_EQ(Bytes(segs[0].versions[0].image), expected[0]);
}

TEST_F(SegmentStoreTest, HugeLengthsInHeadersAreRejectedWithoutAllocating) {
  PutChain("h", 1000, 1);
  std::string full = VFile("h", {1, 1}, ".full");
  std::vector<uint8_t> orig = ReadFile(full);
  struct Patch {
    size_t offset;
    uint64_t value;
    int width;
  } patches[] = {
      {PayloadLenOffset("h"), 1ull << 60, 8},  // payload length
      {PayloadLenOffset("h"), ~0ull, 8},
      {12, 0xFFFFFFFFu, 4},  // header length
      {12, 3, 4},
      {16, 0xFFFF, 2},  // name length
      {8, 2, 2},        // format version
      {10, 99, 2},      // kind
  };
  for (const Patch& p : patches) {
    SCOPED_TRACE(p.offset);
    std::vector<uint8_t> d = orig;
    for (int i = 0; i < p.width; i++) d[p.offset + i] = static_cast<uint8_t>(p.value >> (8 * i));
    WriteFile(full, d);
    ResealRecord(full);  // only the structural checks can catch it
    StoreCounters c;
    auto segs = Reload(&c);
    EXPECT_EQ(c.corrupt_files, 1u);
    ASSERT_EQ(segs.size(), 1u);
    EXPECT_TRUE(segs[0].versions.empty());
    ASSERT_TRUE(fs::exists(full + ".corrupt"));
    fs::remove(full + ".corrupt");
  }
}

TEST_F(SegmentStoreTest, IntactRecordWithWrongImageIsCorrupt) {
  // A payload change with a recomputed record checksum: only the segment checksum catches it.
  auto expected = PutChain("w", 3 * kBlockSize, 2);
  std::string d2 = VFile("w", {1, 2}, ".delta");
  FlipByte(d2, fs::file_size(d2) - 9);  // last payload byte
  ResealRecord(d2);
  StoreCounters c;
  auto segs = Reload(&c);
  EXPECT_EQ(c.corrupt_files, 1u);
  EXPECT_TRUE(fs::exists(d2 + ".corrupt"));
  ASSERT_EQ(VersionsOf(segs[0]), (std::vector<Version>{{1, 1}}));
}

TEST_F(SegmentStoreTest, MisnamedFileIsCorrupt) {
  PutChain("m", 100, 1);
  fs::copy_file(VFile("m", {1, 1}, ".full"), VFile("m", {1, 5}, ".full"));
  StoreCounters c;
  auto segs = Reload(&c);
  EXPECT_EQ(c.corrupt_files, 1u);
  EXPECT_EQ(VersionsOf(segs[0]), (std::vector<Version>{{1, 1}}));
}

TEST_F(SegmentStoreTest, SegmentWithoutIntactVersionIsReturnedEmpty) {
  PutChain("novers", 100, 1);
  FlipByte(VFile("novers", {1, 1}, ".full"), PayloadOffset("novers"));
  auto segs = Reload();
  ASSERT_EQ(segs.size(), 1u);
  EXPECT_EQ(segs[0].meta, Meta("novers", 100));
  EXPECT_TRUE(segs[0].versions.empty());
}

// ---- global copies -----------------------------------------------------------------------------

TEST_F(SegmentStoreTest, GlobalRoundTrip) {
  SegmentMeta meta = Meta("glob", 2 * kBlockSize + 1);
  BlockImage img = BlockImage::FromBytes(RandomBytes(meta.size, 4));
  auto none = store_->LoadGlobal("glob");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(store_->PutGlobal(meta, {4, 2}, img).ok());
  img.Write(0, RandomBytes(5, 5));
  ASSERT_TRUE(store_->PutGlobal(meta, {4, 3}, img).ok());  // replaces
  std::vector<std::string> files;
  for (auto& e : fs::directory_iterator(opts_.global_dir)) files.push_back(e.path().filename());
  EXPECT_EQ(files, (std::vector<std::string>{"glob.ckpt"}));  // no temp files left

  auto got = Open()->LoadGlobal("glob");
  ASSERT_TRUE(got.ok()) << got.status().message();
  ASSERT_TRUE(got->has_value());
  const LoadedSegment& seg = **got;
  EXPECT_EQ(seg.meta, meta);
  ASSERT_EQ(seg.versions.size(), 1u);
  EXPECT_EQ(seg.versions[0].version, (Version{4, 3}));
  EXPECT_EQ(Bytes(seg.versions[0].image), Bytes(img));
}

TEST_F(SegmentStoreTest, CorruptGlobalIsReported) {
  SegmentMeta meta = Meta("glob", 1000);
  ASSERT_TRUE(store_->PutGlobal(meta, {1, 1}, BlockImage::FromBytes(RandomBytes(1000, 1))).ok());
  std::string path = opts_.global_dir + "/glob.ckpt";
  std::vector<uint8_t> orig = ReadFile(path);
  FlipByte(path, orig.size() - 100);
  auto r = store_->LoadGlobal("glob");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorrupt);
  EXPECT_NE(r.status().message().find(path), std::string::npos);
  fs::resize_file(path, orig.size() / 2);
  EXPECT_EQ(store_->LoadGlobal("glob").status().code(), Code::kCorrupt);
  WriteFile(path, {});
  EXPECT_EQ(store_->LoadGlobal("glob").status().code(), Code::kCorrupt);
  // A version file is not a global record.
  PutChain("glob", 1000, 1);
  fs::copy_file(VFile("glob", {1, 1}, ".full"), path, fs::copy_options::overwrite_existing);
  EXPECT_EQ(store_->LoadGlobal("glob").status().code(), Code::kCorrupt);
}

TEST_F(SegmentStoreTest, NoGlobalDirectory) {
  opts_.global_dir.clear();
  store_ = Open();
  EXPECT_FALSE(store_->has_global());
  EXPECT_EQ(store_->PutGlobal(Meta("g", 1), {1, 1}, BlockImage::Zero(1)).code(), Code::kInvalid);
  auto r = store_->LoadGlobal("g");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
}

// ---- local storage -----------------------------------------------------------------------------

TEST_F(SegmentStoreTest, InstallLocalReplacesAtomically) {
  const uint64_t size = 4 * kBlockSize + 10;
  BlockImage v1 = BlockImage::FromBytes(RandomBytes(size, 1));
  BlockImage v2 = BlockImage::Zero(size);  // zero blocks become holes
  v2.Write(kBlockSize + 3, RandomBytes(2 * kBlockSize, 2));
  std::string path = store_->LocalPath("loc");
  EXPECT_EQ(path, opts_.shm_dir + "/loc");

  ASSERT_TRUE(store_->InstallLocal("loc", v1, 1234, 2345, 0640).ok());
  EXPECT_EQ(ReadFile(path), Bytes(v1));
  // An application mapping of v1 keeps seeing v1 in full: the new file replaces it by rename.
  int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(map, MAP_FAILED);
  ::close(fd);

  ASSERT_TRUE(store_->InstallLocal("loc", v2, 1234, 2345, 0604).ok());
  EXPECT_EQ(ReadFile(path), Bytes(v2));
  {  // runs longer than one pwritev batch, a hole in the middle, a short tail block
    BlockImage big = BlockImage::FromBytes(RandomBytes(200 * kBlockSize + 77, 3));
    big.Write(130 * kBlockSize, std::vector<uint8_t>(kBlockSize, 0));  // data, not a hole
    BlockImage holes = BlockImage::Zero(big.size());
    holes.Write(0, RandomBytes(90 * kBlockSize, 4));
    holes.Write(100 * kBlockSize, RandomBytes(100 * kBlockSize + 77, 5));
    for (const BlockImage* img : {&big, &holes}) {
      ASSERT_TRUE(store_->InstallLocal("loc-big", *img, 0, 0, 0600).ok());
      EXPECT_TRUE(ReadFile(store_->LocalPath("loc-big")) == Bytes(*img));
    }
    ASSERT_TRUE(store_->RemoveLocal("loc-big").ok());
  }
  EXPECT_EQ(0, std::memcmp(map, Bytes(v1).data(), size));
  ::munmap(map, size);

  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0604u);
  if (::geteuid() == 0) {
    EXPECT_EQ(st.st_uid, 1234u);
    EXPECT_EQ(st.st_gid, 2345u);
  }
  std::vector<std::string> files;
  for (auto& e : fs::directory_iterator(opts_.shm_dir)) files.push_back(e.path().filename());
  EXPECT_EQ(files, (std::vector<std::string>{"loc"}));  // no temp files left

  ASSERT_TRUE(store_->RemoveLocal("loc").ok());
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(store_->RemoveLocal("loc").ok());  // already gone
}

// A pull's restore written while it arrives: appends at chunk (not block) boundaries, holes kept,
// the application's file untouched until FinishLocal replaces it.
TEST_F(SegmentStoreTest, LocalWriteReplacesOnlyAtFinish) {
  const uint64_t size = 70 * kBlockSize + 123;
  BlockImage img = BlockImage::Zero(size);
  img.Write(0, RandomBytes(20 * kBlockSize + 5, 1));
  img.Write(40 * kBlockSize + 7, RandomBytes(30 * kBlockSize + 116, 2));  // to the end
  BlockImage old = BlockImage::FromBytes(RandomBytes(size, 3));
  const std::string path = store_->LocalPath("lw");
  ASSERT_TRUE(store_->InstallLocal("lw", old, 0, 0, 0600).ok());

  ASSERT_TRUE(store_->BeginLocal("lw", size).ok());
  const uint64_t chunk = 1044480;  // ckptd's default chunk: not a multiple of the block size
  for (uint64_t off = 0; off < size; off += chunk) {
    ASSERT_TRUE(store_->AppendLocal("lw", img, off, std::min(chunk, size - off)).ok()) << off;
    EXPECT_EQ(ReadFile(path), Bytes(old));  // not replaced yet
  }
  ASSERT_TRUE(store_->FinishLocal("lw", 1234, 2345, 0640).ok());
  EXPECT_EQ(ReadFile(path), Bytes(img));
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  if (::geteuid() == 0) {
    EXPECT_EQ(st.st_uid, 1234u);
  }
  std::vector<std::string> files;
  for (auto& e : fs::directory_iterator(opts_.shm_dir)) files.push_back(e.path().filename());
  EXPECT_EQ(files, (std::vector<std::string>{"lw"}));  // no temp files left
}

// A daemon that crashed during a pull's local write left its temporary file (tmpfs memory): the
// next start removes it, and nothing else.
TEST_F(SegmentStoreTest, StartupRemovesLeftoverLocalTempFiles) {
  ASSERT_TRUE(
      store_->InstallLocal("keep", BlockImage::FromBytes(RandomBytes(100, 1)), 0, 0, 0600).ok());
  ASSERT_TRUE(store_->BeginLocal("crashed", 4 * kBlockSize).ok());
  auto names = [&] {
    std::set<std::string> n;
    for (auto& e : fs::directory_iterator(opts_.shm_dir)) n.insert(e.path().filename());
    return n;
  };
  ASSERT_EQ(names().size(), 2u);
  { std::ofstream(opts_.shm_dir + "/.app-file") << "not ours"; }  // no ".tmp-": kept
  auto fresh = SegmentStore::Open(opts_);                         // what a restarted ckptd opens
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE((*fresh)->LoadAll().ok());
  EXPECT_EQ(names(), (std::set<std::string>{"keep", ".app-file"}));
}

TEST_F(SegmentStoreTest, BadLocalWritesFailAndKeepTheFile) {
  const uint64_t size = 3 * kBlockSize;
  BlockImage img = BlockImage::FromBytes(RandomBytes(size, 4));
  BlockImage old = BlockImage::FromBytes(RandomBytes(size, 5));
  const std::string path = store_->LocalPath("bw");
  ASSERT_TRUE(store_->InstallLocal("bw", old, 0, 0, 0600).ok());
  auto temp_files = [&] {
    size_t n = 0;
    for (auto& e : fs::directory_iterator(opts_.shm_dir)) n += e.path().filename() != "bw";
    return n;
  };

  EXPECT_EQ(store_->AppendLocal("bw", img, 0, 10).code(), Code::kNotFound);  // nothing open
  EXPECT_EQ(store_->FinishLocal("bw", 0, 0, 0600).code(), Code::kNotFound);
  EXPECT_EQ(store_->BeginLocal("../x", size).code(), Code::kBadName);

  ASSERT_TRUE(store_->BeginLocal("bw", size).ok());
  EXPECT_EQ(temp_files(), 1u);
  ASSERT_TRUE(store_->AppendLocal("bw", img, 0, kBlockSize).ok());
  EXPECT_EQ(store_->FinishLocal("bw", 0, 0, 0600).code(), Code::kInvalid);  // short
  EXPECT_EQ(temp_files(), 0u);                                              // abandoned
  EXPECT_EQ(store_->AppendLocal("bw", img, kBlockSize, kBlockSize).code(), Code::kNotFound);

  ASSERT_TRUE(store_->BeginLocal("bw", size).ok());
  EXPECT_EQ(store_->AppendLocal("bw", img, kBlockSize, 10).code(), Code::kInvalid);  // a gap
  EXPECT_EQ(store_->AppendLocal("bw", img, 0, 10).code(), Code::kNotFound);          // abandoned
  ASSERT_TRUE(store_->BeginLocal("bw", size).ok());
  BlockImage other = BlockImage::Zero(size + 1);
  EXPECT_EQ(store_->AppendLocal("bw", other, 0, 10).code(), Code::kInvalid);  // wrong size

  ASSERT_TRUE(store_->BeginLocal("bw", size).ok());
  ASSERT_TRUE(store_->BeginLocal("bw", size).ok());  // a new one drops the unfinished one
  EXPECT_EQ(temp_files(), 1u);
  store_->AbortLocal("bw");
  store_->AbortLocal("bw");  // no-op
  EXPECT_EQ(temp_files(), 0u);
  EXPECT_EQ(ReadFile(path), Bytes(old));
}

TEST_F(SegmentStoreTest, EnsureLocalCreatesOrKeeps) {
  std::string path = store_->LocalPath("e");
  uid_t uid = ::geteuid();
  gid_t gid = ::getegid();
  ASSERT_TRUE(store_->EnsureLocal("e", 3000, uid, gid, 0600).ok());
  EXPECT_EQ(ReadFile(path), std::vector<uint8_t>(3000, 0));
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);

  // Right size: the content stays (the application's working copy), mode is updated.
  std::vector<uint8_t> data = RandomBytes(3000, 3);
  WriteFile(path, data);
  ASSERT_TRUE(store_->EnsureLocal("e", 3000, uid, gid, 0660).ok());
  EXPECT_EQ(ReadFile(path), data);
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);

  // Wrong size: replaced by a zero file of the right size.
  ASSERT_TRUE(store_->EnsureLocal("e", 5000, uid, gid, 0600).ok());
  EXPECT_EQ(ReadFile(path), std::vector<uint8_t>(5000, 0));
  // Size zero works too.
  ASSERT_TRUE(store_->EnsureLocal("e0", 0, uid, gid, 0600).ok());
  EXPECT_TRUE(fs::exists(store_->LocalPath("e0")));
  EXPECT_EQ(fs::file_size(store_->LocalPath("e0")), 0u);
}

TEST_F(SegmentStoreTest, LocalStorageDirectoryIsRecreated) {
  fs::remove_all(opts_.shm_dir);  // e.g. /dev/shm/ckpt removed by a reboot or an admin
  ASSERT_TRUE(store_
                  ->InstallLocal("r", BlockImage::FromBytes(RandomBytes(10, 1)), ::geteuid(),
                                 ::getegid(), 0600)
                  .ok());
  EXPECT_EQ(fs::file_size(store_->LocalPath("r")), 10u);
}

}  // namespace
}  // namespace ckpt
