// FileSegmentStore: SegmentStore on a POSIX file system.
//
// Record format (every file under the state and global directories), little-endian:
//   header:  magic "CKPTREC\0" (8) | u16 format version (1) | u16 kind | u32 header_len
//            str name | u64 epoch | u64 seq | u64 base_epoch | u64 base_seq
//            u64 segment_size | u64 segment_checksum | u64 stored_unix_ms | u64 payload_len
//   payload: meta:   SegmentMeta (EncodeMeta)
//            full:   the segment bytes (segment_size)
//            delta:  u32 count, then count x (u64 offset, u64 length, length bytes)
//            global: u32 meta_len, SegmentMeta (meta_len bytes), the segment bytes
//   trailer: u64 XXH3-64 of header and payload
// header_len counts the whole header; header_len + payload_len + 8 == file size exactly.
// Readers bound every length by the file size before allocating or reading.
#include "store/segment_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "common/codec.hpp"
#include "common/names.hpp"

namespace ckpt {
namespace {

constexpr uint8_t kMagic[8] = {'C', 'K', 'P', 'T', 'R', 'E', 'C', 0};
constexpr uint16_t kFormatVersion = 1;
enum class Kind : uint16_t { kMeta = 1, kFull = 2, kDelta = 3, kGlobal = 4 };
constexpr size_t kPrefixBytes = 8 + 2 + 2 + 4;
constexpr uint32_t kMaxHeaderBytes = 4096;
constexpr uint32_t kMaxMetaBytes = 4096;
constexpr uint64_t kTrailerBytes = 8;
constexpr size_t kMaxIov = 1024;               // Linux UIO_MAXIOV
constexpr uint64_t kReadChunkBytes = 1 << 20;  // read-ahead buffer
constexpr mode_t kStateDirMode = 0700;
constexpr mode_t kShmDirMode = 0755;

// ---- small POSIX helpers -----------------------------------------------------------------------

Status ErrnoStatus(const char* what, const std::string& path, int err) {
  Code code = (err == ENOSPC || err == EDQUOT) ? Code::kNoSpace : Code::kIo;
  return Err(code, std::string(what) + " " + path + ": " + std::strerror(err));
}

Status Corrupt(const std::string& path, const std::string& why) {
  return Err(Code::kCorrupt, path + ": " + why);
}

class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Closes and reports the close() error (which may be a delayed write error).
  int close() { return ::close(std::exchange(fd_, -1)); }

 private:
  int fd_;
};

uint64_t NowUnixMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

// mkdir -p: creates missing components with `mode`.  *created is set when the last one was made.
// Tries the whole path first and walks up only on ENOENT, so the usual cases cost one mkdir (the
// parent exists) or a mkdir and a stat (the path exists), not two syscalls per component: this
// runs for every new segment and before every write of local storage.
Status MkdirAll(const std::string& path, mode_t mode, bool* created = nullptr) {
  if (created) *created = false;
  if (path.empty()) return Err(Code::kInvalid, "empty directory path");
  int err = ::mkdir(path.c_str(), mode) == 0 ? 0 : errno;
  if (err == ENOENT) {  // a parent is missing: make it, then try again
    const size_t slash = path.find_last_of('/');
    if (slash == std::string::npos || slash == 0) return ErrnoStatus("mkdir", path, err);
    CKPT_RETURN_IF_ERROR(MkdirAll(path.substr(0, slash), mode));
    err = ::mkdir(path.c_str(), mode) == 0 ? 0 : errno;
  }
  if (err == 0) {
    if (created) *created = true;
    return Status::Ok();
  }
  if (err != EEXIST) return ErrnoStatus("mkdir", path, err);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus("stat", path, errno);
  if (!S_ISDIR(st.st_mode)) return ErrnoStatus("mkdir", path, ENOTDIR);
  return Status::Ok();
}

Status FsyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus("open directory", dir, errno);
  if (::fsync(fd.get()) != 0) return ErrnoStatus("fsync directory", dir, errno);
  return Status::Ok();
}

Result<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus("opendir", dir, errno);
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
    errno = 0;
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return ErrnoStatus("readdir", dir, err);
  std::sort(names.begin(), names.end());
  return names;
}

bool AllZero(const uint8_t* p, size_t n) {
  return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

// Creates a temporary file next to `final_name` in `dir`: "<dir>/.<final_name>.tmp-XXXXXX".
Result<UniqueFd> MakeTemp(const std::string& dir, const std::string& final_name,
                          std::string* tmp_path) {
  std::string tmpl = dir + "/." + final_name + ".tmp-XXXXXX";
  int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("create temporary file", tmpl, errno);
  *tmp_path = tmpl;
  return UniqueFd(fd);
}

bool IsTempName(const std::string& n) {
  return !n.empty() && n[0] == '.' && n.find(".tmp-") != std::string::npos;
}

// ---- record header -----------------------------------------------------------------------------

struct RecordHeader {
  Kind kind = Kind::kMeta;
  std::string name;
  Version version, base;
  uint64_t segment_size = 0, segment_checksum = 0, stored_unix_ms = 0, payload_len = 0;
};

std::vector<uint8_t> EncodeHeader(const RecordHeader& h) {
  std::vector<uint8_t> out;
  Writer w(&out);
  w.bytes(kMagic, sizeof(kMagic));
  w.u16(kFormatVersion);
  w.u16(static_cast<uint16_t>(h.kind));
  size_t len_pos = w.size();
  w.u32(0);
  w.str(h.name);
  w.u64(h.version.epoch);
  w.u64(h.version.seq);
  w.u64(h.base.epoch);
  w.u64(h.base.seq);
  w.u64(h.segment_size);
  w.u64(h.segment_checksum);
  w.u64(h.stored_unix_ms);
  w.u64(h.payload_len);
  w.patch_u32(len_pos, static_cast<uint32_t>(out.size()));
  return out;
}

std::vector<uint8_t> EncodeMeta(const SegmentMeta& m) {
  std::vector<uint8_t> out;
  Writer w(&out);
  w.str(m.name);
  w.u64(m.size);
  w.u32(m.uid);
  w.u32(m.gid);
  w.u32(m.mode);
  w.u32(m.replicas);
  w.u32(m.versions_kept);
  w.u32(m.durability);
  w.u64(m.epoch);
  w.u32(m.owner_nodeid);
  // Added after format 1 shipped: written only when set, so records of uncompressed segments
  // stay readable by older ckptd; a record without it means "none".
  if (m.compression != 0) w.u32(m.compression);
  return out;
}

bool DecodeMeta(std::span<const uint8_t> b, SegmentMeta* m) {
  Reader r(b);
  m->name = r.str();
  m->size = r.u64();
  m->uid = r.u32();
  m->gid = r.u32();
  m->mode = r.u32();
  m->replicas = r.u32();
  m->versions_kept = r.u32();
  m->durability = r.u32();
  m->epoch = r.u64();
  m->owner_nodeid = r.u32();
  m->compression = r.remaining() >= 4 ? r.u32() : 0;
  return r.ok() && r.remaining() == 0 && m->compression <= CKPT_COMPRESSION_ZSTD &&
         ValidateSegmentName(m->name).ok();
}

uint64_t DeltaPayloadLen(const std::vector<ByteRange>& ranges) {
  uint64_t n = 4;
  for (const ByteRange& r : ranges) n += 16 + r.length;
  return n;
}

// ---- writing -----------------------------------------------------------------------------------

// Streams a record into a file: hashes as bytes are added and writes them with writev() in
// batches, so payloads are written straight from the image's blocks (never one big buffer).
class RecordSink {
 public:
  RecordSink(int fd, const std::string& path) : fd_(fd), path_(path) {}

  // `p` must stay valid until the next Flush (i.e. until Finish).
  void Add(const void* p, size_t n) {
    if (n == 0 || !status_.ok()) return;
    hash_.Update(p, n);
    iov_.push_back({const_cast<void*>(p), n});
    bytes_ += n;
    if (iov_.size() == kMaxIov) status_ = Flush();
  }
  void AddOwned(std::vector<uint8_t> b) {
    owned_.push_back(std::move(b));  // moving keeps the data pointer stable
    Add(owned_.back().data(), owned_.back().size());
  }
  // Adds [offset, offset+length) of `image`, block by block.
  void AddImageRange(const BlockImage& image, uint64_t offset, uint64_t length) {
    uint64_t end = offset + length;
    while (offset < end) {
      size_t i = static_cast<size_t>(offset / kBlockSize);
      auto b = image.block(i);
      size_t in_block = static_cast<size_t>(offset % kBlockSize);
      size_t n = static_cast<size_t>(std::min<uint64_t>(b.size() - in_block, end - offset));
      Add(b.data() + in_block, n);
      offset += n;
    }
  }
  // Appends the trailer checksum and writes everything out.
  Status Finish() {
    if (!status_.ok()) return status_;
    std::vector<uint8_t> trailer(8);
    store_le64(trailer.data(), hash_.Digest());
    owned_.push_back(std::move(trailer));
    iov_.push_back({owned_.back().data(), 8});
    bytes_ += 8;
    return Flush();
  }
  // Writes out what was added (so the caller's buffers may go) without finishing the record.
  Status Drain() {
    if (!status_.ok()) return status_;
    return status_ = Flush();
  }
  uint64_t bytes() const { return bytes_; }

 private:
  Status Flush() {
    size_t idx = 0;
    while (idx < iov_.size()) {
      int cnt = static_cast<int>(std::min(kMaxIov, iov_.size() - idx));
      ssize_t w = ::writev(fd_, iov_.data() + idx, cnt);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return ErrnoStatus("write", path_, errno);
      if (w == 0) return ErrnoStatus("write", path_, EIO);
      size_t left = static_cast<size_t>(w);
      while (idx < iov_.size() && left >= iov_[idx].iov_len) left -= iov_[idx++].iov_len;
      if (left > 0) {
        iov_[idx].iov_base = static_cast<uint8_t*>(iov_[idx].iov_base) + left;
        iov_[idx].iov_len -= left;
      }
    }
    iov_.clear();
    owned_.clear();
    return Status::Ok();
  }

  int fd_;
  const std::string& path_;
  Checksum64Stream hash_;
  std::vector<iovec> iov_;
  std::vector<std::vector<uint8_t>> owned_;
  uint64_t bytes_ = 0;
  Status status_;
};

// A retired record file kept for reuse (FileSegmentStore::Retire): its path and size.
struct SpareFile {
  std::string path;  // "" = none
  uint64_t bytes = 0;
};

// Opens the temporary file a record of <dir>/<file> is written to: `spare` when it can be opened,
// else a new one.  *tmp_path names it, *tmp_bytes is its current size.
Result<UniqueFd> OpenRecordTemp(const std::string& dir, const std::string& file, SpareFile spare,
                                std::string* tmp_path, uint64_t* tmp_bytes) {
  *tmp_bytes = 0;
  if (!spare.path.empty()) {
    int raw = ::open(spare.path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (raw >= 0) {
      *tmp_path = std::move(spare.path);
      *tmp_bytes = spare.bytes;
      return UniqueFd(raw);
    }
    ::unlink(spare.path.c_str());
  }
  return MakeTemp(dir, file, tmp_path);
}

// Completes a record written through `sink` into the temporary `tmp` (fd, `tmp_bytes` long before
// the record overwrote it): trailer, cut to length (a spare may be longer), [fsync], close,
// rename to <dir>/<file>.  The caller unlinks tmp on error.
Status FinishRecordFile(RecordSink& sink, UniqueFd& fd, const std::string& tmp, uint64_t tmp_bytes,
                        const std::string& dir, const std::string& file, bool fsync) {
  CKPT_RETURN_IF_ERROR(sink.Finish());
  if (tmp_bytes > sink.bytes() && ::ftruncate(fd.get(), static_cast<off_t>(sink.bytes())) != 0)
    return ErrnoStatus("truncate", tmp, errno);
  if (fsync && ::fsync(fd.get()) != 0) return ErrnoStatus("fsync", tmp, errno);
  if (fd.close() != 0) return ErrnoStatus("close", tmp, errno);
  std::string final_path = dir + "/" + file;
  if (::rename(tmp.c_str(), final_path.c_str()) != 0)
    return ErrnoStatus("rename", tmp + " -> " + final_path, errno);
  if (fsync) return FsyncDir(dir);
  return Status::Ok();
}

// Writes <dir>/<file> atomically: temp file, `fill`, [fsync], rename, [fsync dir].  With a
// `spare` (a temporary file of the same directory, see FileSegmentStore::Retire) the record
// overwrites it from offset 0 and cuts it to the record's length instead of creating a file.
template <class Fill>
Status WriteRecordFile(const std::string& dir, const std::string& file, bool fsync, Fill fill,
                       uint64_t* bytes_written, SpareFile spare = {}) {
  std::string tmp;
  uint64_t tmp_bytes = 0;
  auto fd = OpenRecordTemp(dir, file, std::move(spare), &tmp, &tmp_bytes);
  if (!fd.ok()) return fd.status();
  RecordSink sink(fd->get(), tmp);
  fill(sink);
  Status st = FinishRecordFile(sink, *fd, tmp, tmp_bytes, dir, file, fsync);
  if (!st.ok()) {
    fd->reset();
    // After a rename (a failed directory fsync) tmp is gone and the record stays in place.
    ::unlink(tmp.c_str());
    return st;
  }
  *bytes_written = sink.bytes();
  return Status::Ok();
}

// ---- reading -----------------------------------------------------------------------------------

// Reads one record file sequentially, hashing header and payload, never past the sizes the
// header declared (which ReadHeader checked against the file size).
class RecordSource {
 public:
  RecordSource(UniqueFd fd, std::string path, uint64_t file_size, uint64_t read_ahead)
      : fd_(std::move(fd)),
        path_(std::move(path)),
        file_size_(file_size),
        read_ahead_(read_ahead) {}

  // Opens `path`.  ENOENT -> kNotFound; other errors -> kIo.  `read_ahead`: bytes per read()
  // (kMaxHeaderBytes when only the header is wanted: a whole-chunk read-ahead would read a small
  // version file in full to learn its header).
  static Result<RecordSource> Open(const std::string& path, uint64_t read_ahead = kReadChunkBytes) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
      int err = errno;
      if (err == ENOENT) return Err(Code::kNotFound, path + ": no such file");
      return ErrnoStatus("open", path, err);
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("stat", path, errno);
    if (!S_ISREG(st.st_mode)) return Corrupt(path, "not a regular file");
    return RecordSource(std::move(fd), path, static_cast<uint64_t>(st.st_size), read_ahead);
  }

  const std::string& path() const { return path_; }

  Status ReadHeader(RecordHeader* h) {
    if (file_size_ < kPrefixBytes + kTrailerBytes)
      return Corrupt(path_, "file too short (" + std::to_string(file_size_) + " bytes)");
    uint8_t prefix[kPrefixBytes];
    CKPT_RETURN_IF_ERROR(ReadRaw(prefix, sizeof(prefix), true));
    if (std::memcmp(prefix, kMagic, sizeof(kMagic)) != 0) return Corrupt(path_, "bad magic");
    Reader pr(prefix + 8, kPrefixBytes - 8);
    uint16_t format = pr.u16();
    uint16_t kind = pr.u16();
    uint32_t header_len = pr.u32();
    if (format != kFormatVersion)
      return Corrupt(path_, "unsupported format version " + std::to_string(format));
    if (kind < static_cast<uint16_t>(Kind::kMeta) || kind > static_cast<uint16_t>(Kind::kGlobal))
      return Corrupt(path_, "unknown record kind " + std::to_string(kind));
    if (header_len < kPrefixBytes || header_len > kMaxHeaderBytes ||
        header_len > file_size_ - kTrailerBytes)
      return Corrupt(path_, "bad header length " + std::to_string(header_len));
    std::vector<uint8_t> rest(header_len - kPrefixBytes);
    CKPT_RETURN_IF_ERROR(ReadRaw(rest.data(), rest.size(), true));
    Reader r(rest.data(), rest.size());
    h->kind = static_cast<Kind>(kind);
    h->name = r.str();
    h->version = {r.u64(), r.u64()};
    h->base = {r.u64(), r.u64()};
    h->segment_size = r.u64();
    h->segment_checksum = r.u64();
    h->stored_unix_ms = r.u64();
    h->payload_len = r.u64();
    if (!r.ok() || r.remaining() != 0) return Corrupt(path_, "malformed header");
    if (h->payload_len != file_size_ - header_len - kTrailerBytes)
      return Corrupt(path_, "payload length " + std::to_string(h->payload_len) +
                                " does not match file size " + std::to_string(file_size_));
    if (!ValidateSegmentName(h->name).ok()) return Corrupt(path_, "bad segment name in header");
    payload_left_ = h->payload_len;
    return Status::Ok();
  }

  uint64_t payload_left() const { return payload_left_; }

  // Reads n payload bytes (n <= payload_left()).
  Status Read(void* buf, size_t n) {
    if (n > payload_left_) return Corrupt(path_, "record payload overrun");
    payload_left_ -= n;
    return ReadRaw(buf, n, true);
  }

  // Reads [offset, offset+length) of the payload into `image`, straight from the read buffer.
  // With `skip_zero` (a fresh Zero() image), all-zero pieces are not written: sparse stays sparse.
  Status ReadInto(BlockImage* image, uint64_t offset, uint64_t length, bool skip_zero) {
    if (length > payload_left_) return Corrupt(path_, "range longer than the payload");
    payload_left_ -= length;
    while (length > 0) {
      if (pos_ == len_) CKPT_RETURN_IF_ERROR(Refill());
      size_t n = std::min<size_t>(kBlockSize - offset % kBlockSize, len_ - pos_);
      n = static_cast<size_t>(std::min<uint64_t>(n, length));
      const uint8_t* p = buf_.data() + pos_;
      hash_.Update(p, n);
      if (!skip_zero || !AllZero(p, n)) image->Write(offset, {p, n});
      pos_ += n;
      offset += n;
      length -= n;
    }
    return Status::Ok();
  }

  // After the whole payload: compares the trailer with the running hash.
  Status VerifyTrailer() {
    if (payload_left_ != 0) return Corrupt(path_, "trailing bytes in payload");
    uint8_t t[8];
    CKPT_RETURN_IF_ERROR(ReadRaw(t, 8, false));
    if (load_le64(t) != hash_.Digest()) return Corrupt(path_, "record checksum mismatch");
    return Status::Ok();
  }

 private:
  Status Refill() {
    if (buf_.empty()) {
      buf_.resize(static_cast<size_t>(std::clamp<uint64_t>(file_size_, 1, read_ahead_)));
    }
    for (;;) {
      ssize_t r = ::read(fd_.get(), buf_.data(), buf_.size());
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return ErrnoStatus("read", path_, errno);
      if (r == 0) return Corrupt(path_, "file truncated while reading");
      pos_ = 0;
      len_ = static_cast<size_t>(r);
      return Status::Ok();
    }
  }

  Status ReadRaw(void* buf, size_t n, bool hash) {
    auto* out = static_cast<uint8_t*>(buf);
    while (n > 0) {
      if (pos_ == len_) CKPT_RETURN_IF_ERROR(Refill());
      size_t k = std::min(n, len_ - pos_);
      std::memcpy(out, buf_.data() + pos_, k);
      if (hash) hash_.Update(out, k);
      pos_ += k;
      out += k;
      n -= k;
    }
    return Status::Ok();
  }

  UniqueFd fd_;
  std::string path_;
  uint64_t file_size_;
  uint64_t read_ahead_;
  Checksum64Stream hash_;
  uint64_t payload_left_ = 0;
  std::vector<uint8_t> buf_;  // read-ahead: buf_[pos_, len_) not consumed yet
  size_t pos_ = 0, len_ = 0;
};

// Reads a whole image of `size` bytes (a full payload or the tail of a global one).
Status ReadImage(RecordSource& src, uint64_t size, BlockImage* out) {
  *out = BlockImage::Zero(size);
  return src.ReadInto(out, 0, size, /*skip_zero=*/true);
}

Status CheckImageSum(const std::string& path, const BlockImage& image, const RecordHeader& h) {
  if (image.checksum() != h.segment_checksum)
    return Corrupt(
        path, "rebuilt version " + h.version.ToString() + " does not match its segment checksum");
  return Status::Ok();
}

// Applies a delta payload to `image` (a copy of the base version).
Status ApplyDelta(RecordSource& src, BlockImage* image) {
  uint8_t b[16];
  CKPT_RETURN_IF_ERROR(src.Read(b, 4));
  uint32_t count = load_le32(b);
  if (count > src.payload_left() / 16) return Corrupt(src.path(), "bad delta range count");
  for (uint32_t i = 0; i < count; i++) {
    CKPT_RETURN_IF_ERROR(src.Read(b, 16));
    uint64_t off = load_le64(b), len = load_le64(b + 8);
    if (off > image->size() || len > image->size() - off)
      return Corrupt(src.path(), "delta range outside the segment");
    CKPT_RETURN_IF_ERROR(src.ReadInto(image, off, len, /*skip_zero=*/false));
  }
  return Status::Ok();
}

Status ReadMetaPayload(RecordSource& src, uint64_t len, SegmentMeta* meta) {
  if (len > kMaxMetaBytes || len > src.payload_left())
    return Corrupt(src.path(), "bad meta length");
  std::vector<uint8_t> buf(len);
  CKPT_RETURN_IF_ERROR(src.Read(buf.data(), buf.size()));
  if (!DecodeMeta(buf, meta)) return Corrupt(src.path(), "malformed segment meta");
  return Status::Ok();
}

// "<epoch>-<seq>.full|.delta" -> version and kind.
bool ParseVersionFile(const std::string& n, Version* v, Kind* kind) {
  std::string_view s(n);
  if (s.ends_with(".full")) {
    *kind = Kind::kFull;
    s.remove_suffix(5);
  } else if (s.ends_with(".delta")) {
    *kind = Kind::kDelta;
    s.remove_suffix(6);
  } else {
    return false;
  }
  size_t dash = s.find('-');
  if (dash == std::string_view::npos || dash == 0 || dash + 1 == s.size()) return false;
  auto parse = [](std::string_view d, uint64_t* out) {
    auto [p, ec] = std::from_chars(d.data(), d.data() + d.size(), *out);
    return ec == std::errc() && p == d.data() + d.size();
  };
  return parse(s.substr(0, dash), &v->epoch) && parse(s.substr(dash + 1), &v->seq);
}

std::string VersionFile(Version v, Kind kind) {
  return std::to_string(v.epoch) + "-" + std::to_string(v.seq) +
         (kind == Kind::kFull ? ".full" : ".delta");
}

// ---- the store ---------------------------------------------------------------------------------

// The checks of an append to a write in progress (a streamed version file, a local write): the
// image has the write's size and [offset, +length) continues where the write stands.  `what`
// names the write in the message.
Status CheckAppend(const std::string& what, uint64_t size, uint64_t appended,
                   const BlockImage& image, uint64_t offset, uint64_t length) {
  if (image.size() != size)
    return Err(Code::kInvalid, "append to " + what + ": image size differs from the write's");
  if (offset != appended || length > size - offset)
    return Err(Code::kInvalid, "append to " + what + " at " + std::to_string(offset) + "+" +
                                   std::to_string(length) + ", expected offset " +
                                   std::to_string(appended));
  return Status::Ok();
}

// Writes image bytes [offset, +length) at the same offsets of fd (a file that starts as a hole of
// the image's size, so all-zero blocks are skipped).  Consecutive non-zero blocks go out in one
// pwritev of up to kRunBlocks pieces: a 64 MiB restore is 16 syscalls, not 1024.
Status WriteImageRange(int fd, const std::string& path, const BlockImage& image, uint64_t offset,
                       uint64_t length) {
  constexpr size_t kRunBlocks = 64;
  const uint64_t end = offset + length;
  CKPT_ASSERT(end >= offset && end <= image.size());
  size_t i = offset / kBlockSize;
  while (i * kBlockSize < end) {
    if (image.is_zero_block(i)) {
      i++;
      continue;
    }
    iovec iov[kRunBlocks];
    size_t k = 0, bytes = 0;
    const uint64_t run_start = std::max<uint64_t>(offset, i * kBlockSize);
    for (; k < kRunBlocks && (i + k) * kBlockSize < end && !image.is_zero_block(i + k); k++) {
      auto b = image.block(i + k);
      const uint64_t b_start = (i + k) * kBlockSize;
      const uint64_t from = std::max(offset, b_start) - b_start;
      const uint64_t to = std::min<uint64_t>(end, b_start + b.size()) - b_start;
      iov[k] = {const_cast<uint8_t*>(b.data()) + from, static_cast<size_t>(to - from)};
      bytes += to - from;
    }
    // pwritev may write less than asked (rare): continue from where it stopped.
    size_t done = 0, first = 0;
    while (done < bytes) {
      ssize_t w = ::pwritev(fd, iov + first, static_cast<int>(k - first),
                            static_cast<off_t>(run_start + done));
      if (w < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus("write", path, errno);
      }
      done += static_cast<size_t>(w);
      for (size_t left = static_cast<size_t>(w); first < k && left > 0;) {
        const size_t take = std::min(left, iov[first].iov_len);
        iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + take;
        iov[first].iov_len -= take;
        left -= take;
        if (iov[first].iov_len == 0) first++;
      }
    }
    i += k;
  }
  return Status::Ok();
}

class FileSegmentStore final : public SegmentStore {
 public:
  explicit FileSegmentStore(StoreOptions o) : opt_(std::move(o)) {}

  Status Init() {
    if (opt_.state_dir.empty()) return Err(Code::kInvalid, "store: state_dir is required");
    CKPT_RETURN_IF_ERROR(MkdirAll(SegmentsDir(), kStateDirMode));
    if (!opt_.global_dir.empty()) CKPT_RETURN_IF_ERROR(MkdirAll(opt_.global_dir, kStateDirMode));
    if (!opt_.shm_dir.empty()) CKPT_RETURN_IF_ERROR(MkdirAll(opt_.shm_dir, kShmDirMode));
    return Status::Ok();
  }

  Result<std::vector<LoadedSegment>> LoadAll() override {
    std::lock_guard lock(mu_);
    auto names = ListDir(SegmentsDir());
    if (!names.ok()) return names.status();
    std::vector<LoadedSegment> out;
    for (const std::string& name : *names) {
      if (!ValidateSegmentName(name).ok()) continue;
      struct stat st;
      if (::stat(SegDir(name).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
      std::optional<LoadedSegment> seg = LoadSegment(name);
      if (seg) out.push_back(std::move(*seg));
    }
    RemoveLocalLeftovers();
    return out;
  }

  Status PutMeta(const SegmentMeta& meta, bool fsync) override {
    CKPT_RETURN_IF_ERROR(ValidateSegmentName(meta.name));
    std::lock_guard lock(mu_);
    CKPT_RETURN_IF_ERROR(EnsureSegDir(meta.name, fsync));
    std::vector<uint8_t> payload = EncodeMeta(meta);
    RecordHeader h{.kind = Kind::kMeta,
                   .name = meta.name,
                   .version = {meta.epoch, 0},
                   .base = {},
                   .segment_size = meta.size,
                   .segment_checksum = 0,
                   .stored_unix_ms = NowUnixMs(),
                   .payload_len = payload.size()};
    return Write(meta.name, "meta", /*bytes=*/0, fsync, [&](RecordSink& s) {
      s.AddOwned(EncodeHeader(h));
      s.Add(payload.data(), payload.size());
    });
  }

  Status PutFull(const std::string& name, Version v, const BlockImage& image, bool fsync) override {
    CKPT_RETURN_IF_ERROR(ValidateSegmentName(name));
    std::lock_guard lock(mu_);
    return PutFullLocked(name, v, image, fsync);
  }

  Status PutDelta(const std::string& name, Version v, Version base,
                  const std::vector<ByteRange>& ranges, const BlockImage& image,
                  bool fsync) override {
    CKPT_RETURN_IF_ERROR(ValidateSegmentName(name));
    if (!(base < v)) {
      return Err(Code::kInvalid, "delta " + v.ToString() + " of " + name +
                                     " must be newer than its base " + base.ToString());
    }
    for (const ByteRange& r : ranges) {
      if (r.offset > image.size() || r.length > image.size() - r.offset)
        return Err(Code::kInvalid, "delta range outside segment " + name);
    }
    std::lock_guard lock(mu_);
    auto& idx = Index(name);
    uint64_t payload_len = DeltaPayloadLen(ranges);
    // Compaction (and the fallback when the base is not stored): write a full file instead.
    const Entry* base_entry = ChainBase(idx, base, payload_len, image.size());
    if (!base_entry) return PutFullLocked(name, v, image, fsync);
    uint64_t chain_bytes = base_entry->chain_bytes + payload_len;
    CKPT_RETURN_IF_ERROR(EnsureSegDir(name, fsync));
    RecordHeader h{.kind = Kind::kDelta,
                   .name = name,
                   .version = v,
                   .base = base,
                   .segment_size = image.size(),
                   .segment_checksum = image.checksum(),
                   .stored_unix_ms = NowUnixMs(),
                   .payload_len = payload_len};
    CKPT_RETURN_IF_ERROR(
        Write(name, VersionFile(v, Kind::kDelta), payload_len, fsync, [&](RecordSink& s) {
          s.AddOwned(EncodeHeader(h));
          std::vector<uint8_t> count(4);
          store_le32(count.data(), static_cast<uint32_t>(ranges.size()));
          s.AddOwned(std::move(count));
          for (const ByteRange& r : ranges) {
            std::vector<uint8_t> rh(16);
            store_le64(rh.data(), r.offset);
            store_le64(rh.data() + 8, r.length);
            s.AddOwned(std::move(rh));
            s.AddImageRange(image, r.offset, r.length);
          }
        }));
    RetireReplaced(name, v, Kind::kFull);
    idx[v] = {Kind::kDelta, base, chain_bytes, image.size(), base_entry->root};
    return Status::Ok();
  }

  uint64_t DeltaWriteBytes(const std::string& name, Version base,
                           const std::vector<ByteRange>& ranges, uint64_t segment_size) override {
    if (!ValidateSegmentName(name).ok()) return segment_size;
    std::lock_guard lock(mu_);
    uint64_t payload_len = DeltaPayloadLen(ranges);
    return ChainBase(Index(name), base, payload_len, segment_size) ? payload_len : segment_size;
  }

  Status BeginFull(const std::string& name, Version v, uint64_t size,
                   uint64_t segment_checksum) override {
    CKPT_RETURN_IF_ERROR(ValidateSegmentName(name));
    std::lock_guard lock(mu_);
    CloseStream(name);
    CKPT_RETURN_IF_ERROR(EnsureSegDir(name, false));
    auto st = std::make_unique<Stream>();
    st->version = v;
    st->size = size;
    auto fd = OpenRecordTemp(SegDir(name), VersionFile(v, Kind::kFull), TakeSpare(name, size),
                             &st->tmp, &st->tmp_bytes);
    if (!fd.ok()) return fd.status();
    st->fd = std::move(*fd);
    st->sink = std::make_unique<RecordSink>(st->fd.get(), st->tmp);
    RecordHeader h{.kind = Kind::kFull,
                   .name = name,
                   .version = v,
                   .base = {},
                   .segment_size = size,
                   .segment_checksum = segment_checksum,
                   .stored_unix_ms = NowUnixMs(),
                   .payload_len = size};
    st->sink->AddOwned(EncodeHeader(h));
    Status drained = st->sink->Drain();
    streams_[name] = std::move(st);
    if (!drained.ok()) CloseStream(name);
    return drained;
  }

  Status AppendFull(const std::string& name, Version v, const BlockImage& image, uint64_t offset,
                    uint64_t length) override {
    std::lock_guard lock(mu_);
    auto it = streams_.find(name);
    if (it == streams_.end() || it->second->version != v)
      return Err(Code::kNotFound, "no open write of " + name + " " + v.ToString());
    Stream& st = *it->second;
    Status bad = CheckAppend(name, st.size, st.appended, image, offset, length);
    if (bad.ok()) {
      st.sink->AddImageRange(image, offset, length);
      bad = st.sink->Drain();
      st.appended += length;
    }
    if (!bad.ok()) CloseStream(name);
    return bad;
  }

  Status FinishFull(const std::string& name, Version v, bool fsync) override {
    std::lock_guard lock(mu_);
    auto it = streams_.find(name);
    if (it == streams_.end() || it->second->version != v)
      return Err(Code::kNotFound, "no open write of " + name + " " + v.ToString());
    Stream& st = *it->second;
    Status done = st.appended == st.size
                      ? FinishRecordFile(*st.sink, st.fd, st.tmp, st.tmp_bytes, SegDir(name),
                                         VersionFile(v, Kind::kFull), fsync)
                      : Err(Code::kInvalid, "write of " + name + " finished after " +
                                                std::to_string(st.appended) + " of " +
                                                std::to_string(st.size) + " bytes");
    if (!done.ok()) {
      CloseStream(name);
      return done;
    }
    CountWritten(st.sink->bytes());
    const uint64_t size = st.size;
    streams_.erase(it);
    RetireReplaced(name, v, Kind::kDelta);
    Index(name)[v] = {Kind::kFull, {}, 0, size, v};
    return Status::Ok();
  }

  void AbortFull(const std::string& name, Version v) override {
    std::lock_guard lock(mu_);
    auto it = streams_.find(name);
    if (it != streams_.end() && it->second->version == v) CloseStream(name);
  }

  Status Prune(const std::string& name, Version keep_from) override {
    CKPT_RETURN_IF_ERROR(ValidateSegmentName(name));
    std::lock_guard lock(mu_);
    auto& idx = Index(name);
    // A kept version rests on its chain of bases down to its root (a full version), and a base
    // is always older than its delta: nothing older than the oldest root of a kept version is
    // needed.  Cost O(kept + retired), not O(chain): a 4 KiB delta into a 1 GiB segment may have
    // a chain of 262,144 versions, which walking on every prune made each commit slower than the
    // last.  A version between that root and keep_from which no kept chain passes through (a
    // delta on an older base than its predecessor) stays until a compaction moves the root.
    Version oldest_root = keep_from;
    for (auto it = idx.lower_bound(keep_from); it != idx.end(); ++it)
      oldest_root = std::min(oldest_root, it->second.root);
    Status result;
    for (auto it = idx.begin(); it != idx.end() && it->first < oldest_root;) {
      Status st = Retire(name, SegDir(name) + "/" + VersionFile(it->first, it->second.kind));
      if (result.ok()) result = st;
      it = idx.erase(it);
    }
    return result;
  }

  Status DropSegment(const std::string& name, bool global) override {
    CKPT_RETURN_IF_ERROR(ValidateSegmentName(name));
    std::lock_guard lock(mu_);
    index_.erase(name);
    dirs_made_.erase(name);
    ForgetSpares(name);    // their files go with the directory below
    streams_.erase(name);  // closes an open write; its file goes with the directory too
    std::string dir = SegDir(name);
    struct stat st;
    if (::lstat(dir.c_str(), &st) == 0) {
      auto files = ListDir(dir);
      if (!files.ok()) return files.status();
      for (const std::string& f : *files) {
        std::string p = dir + "/" + f;
        if (::unlink(p.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("unlink", p, errno);
      }
      if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("rmdir", dir, errno);
    } else if (errno != ENOENT) {
      return ErrnoStatus("stat", dir, errno);
    }
    if (global && has_global()) {
      std::string p = GlobalPath(name);
      if (::unlink(p.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("unlink", p, errno);
    }
    return Status::Ok();
  }

  bool has_global() const override { return !opt_.global_dir.empty(); }

  Status PutGlobal(const SegmentMeta& meta, Version v, const BlockImage& image) override {
    CKPT_RETURN_IF_ERROR(ValidateSegmentName(meta.name));
    if (!has_global()) return Err(Code::kInvalid, "no global directory configured");
    std::lock_guard lock(mu_);
    std::vector<uint8_t> m = EncodeMeta(meta);
    std::vector<uint8_t> mlen(4);
    store_le32(mlen.data(), static_cast<uint32_t>(m.size()));
    RecordHeader h{.kind = Kind::kGlobal,
                   .name = meta.name,
                   .version = v,
                   .base = {},
                   .segment_size = image.size(),
                   .segment_checksum = image.checksum(),
                   .stored_unix_ms = NowUnixMs(),
                   .payload_len = 4 + m.size() + image.size()};
    // The global copy is the last resort, so it is always fsync'ed.
    return WriteIn(opt_.global_dir, meta.name + ".ckpt", /*fsync=*/true, {}, [&](RecordSink& s) {
      s.AddOwned(EncodeHeader(h));
      s.Add(mlen.data(), mlen.size());
      s.Add(m.data(), m.size());
      s.AddImageRange(image, 0, image.size());
    });
  }

  Result<std::optional<LoadedSegment>> LoadGlobal(const std::string& name) override {
    CKPT_RETURN_IF_ERROR(ValidateSegmentName(name));
    if (!has_global()) return std::optional<LoadedSegment>();
    auto src = RecordSource::Open(GlobalPath(name));
    if (!src.ok()) {
      if (src.status().code() == Code::kNotFound) return std::optional<LoadedSegment>();
      return src.status();
    }
    LoadedSegment seg;
    StoredVersion sv;
    RecordHeader h;
    Status st = [&]() -> Status {
      CKPT_RETURN_IF_ERROR(src->ReadHeader(&h));
      if (h.kind != Kind::kGlobal || h.name != name)
        return Corrupt(src->path(), "not the global record of " + name);
      uint8_t b[4];
      CKPT_RETURN_IF_ERROR(src->Read(b, 4));
      CKPT_RETURN_IF_ERROR(ReadMetaPayload(*src, load_le32(b), &seg.meta));
      if (seg.meta.name != name || src->payload_left() != h.segment_size)
        return Corrupt(src->path(), "global record is inconsistent");
      CKPT_RETURN_IF_ERROR(ReadImage(*src, h.segment_size, &sv.image));
      CKPT_RETURN_IF_ERROR(src->VerifyTrailer());
      return CheckImageSum(src->path(), sv.image, h);
    }();
    if (!st.ok()) return st;
    sv.version = h.version;
    sv.stored_unix_ms = h.stored_unix_ms;
    seg.versions.push_back(std::move(sv));
    return std::optional<LoadedSegment>(std::move(seg));
  }

  std::string LocalPath(const std::string& name) const override {
    return opt_.shm_dir + "/" + name;
  }

  Status InstallLocal(const std::string& name, const BlockImage& image, uint32_t uid, uint32_t gid,
                      uint32_t mode) override {
    CKPT_RETURN_IF_ERROR(ValidateSegmentName(name));
    if (opt_.shm_dir.empty()) return Err(Code::kInvalid, "no local storage directory configured");
    CKPT_RETURN_IF_ERROR(MkdirAll(opt_.shm_dir, kShmDirMode));
    return ReplaceLocal(name, image.size(), uid, gid, mode, [&](int fd, const std::string& tmp) {
      return WriteImageRange(fd, tmp, image, 0, image.size());
    });
  }

  Status BeginLocal(const std::string& name, uint64_t size) override {
    CKPT_RETURN_IF_ERROR(ValidateSegmentName(name));
    if (opt_.shm_dir.empty()) return Err(Code::kInvalid, "no local storage directory configured");
    CKPT_RETURN_IF_ERROR(MkdirAll(opt_.shm_dir, kShmDirMode));
    std::lock_guard lock(mu_);
    DropLocalWrite(name);
    LocalWrite w;
    w.size = size;
    auto fd = MakeTemp(opt_.shm_dir, name, &w.tmp);
    if (!fd.ok()) return fd.status();
    w.fd = std::move(*fd);
    if (::ftruncate(w.fd.get(), static_cast<off_t>(size)) != 0) {
      Status st = ErrnoStatus("ftruncate", w.tmp, errno);
      ::unlink(w.tmp.c_str());
      return st;
    }
    local_writes_[name] = std::move(w);
    return Status::Ok();
  }

  Status AppendLocal(const std::string& name, const BlockImage& image, uint64_t offset,
                     uint64_t length) override {
    std::lock_guard lock(mu_);
    auto it = local_writes_.find(name);
    if (it == local_writes_.end())
      return Err(Code::kNotFound, "no open write of local storage " + name);
    LocalWrite& w = it->second;
    Status st = CheckAppend("local " + name, w.size, w.appended, image, offset, length);
    if (st.ok()) {
      st = WriteImageRange(w.fd.get(), w.tmp, image, offset, length);
      w.appended += length;
    }
    if (!st.ok()) DropLocalWrite(name);
    return st;
  }

  Status FinishLocal(const std::string& name, uint32_t uid, uint32_t gid, uint32_t mode) override {
    std::lock_guard lock(mu_);
    auto it = local_writes_.find(name);
    if (it == local_writes_.end())
      return Err(Code::kNotFound, "no open write of local storage " + name);
    LocalWrite& w = it->second;
    const std::string path = LocalPath(name);
    Status st = [&]() -> Status {
      if (w.appended != w.size)
        return Err(Code::kInvalid, "write of local " + name + " finished after " +
                                       std::to_string(w.appended) + " of " +
                                       std::to_string(w.size) + " bytes");
      if (::fchown(w.fd.get(), uid, gid) != 0) return ErrnoStatus("fchown", w.tmp, errno);
      if (::fchmod(w.fd.get(), mode & 07777) != 0) return ErrnoStatus("fchmod", w.tmp, errno);
      if (w.fd.close() != 0) return ErrnoStatus("close", w.tmp, errno);
      if (::rename(w.tmp.c_str(), path.c_str()) != 0)
        return ErrnoStatus("rename", w.tmp + " -> " + path, errno);
      return Status::Ok();
    }();
    if (st.ok()) {
      local_writes_.erase(it);
    } else {
      DropLocalWrite(name);
    }
    return st;
  }

  void AbortLocal(const std::string& name) override {
    std::lock_guard lock(mu_);
    DropLocalWrite(name);
  }

  Status EnsureLocal(const std::string& name, uint64_t size, uint32_t uid, uint32_t gid,
                     uint32_t mode) override {
    CKPT_RETURN_IF_ERROR(ValidateSegmentName(name));
    if (opt_.shm_dir.empty()) return Err(Code::kInvalid, "no local storage directory configured");
    CKPT_RETURN_IF_ERROR(MkdirAll(opt_.shm_dir, kShmDirMode));
    std::string path = LocalPath(name);
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        static_cast<uint64_t>(st.st_size) == size) {
      if ((st.st_uid != uid || st.st_gid != gid) && ::chown(path.c_str(), uid, gid) != 0)
        return ErrnoStatus("chown", path, errno);
      if ((st.st_mode & 07777) != (mode & 07777) && ::chmod(path.c_str(), mode & 07777) != 0)
        return ErrnoStatus("chmod", path, errno);
      return Status::Ok();
    }
    return ReplaceLocal(name, size, uid, gid, mode,
                        [](int, const std::string&) { return Status::Ok(); });
  }

  Status RemoveLocal(const std::string& name) override {
    CKPT_RETURN_IF_ERROR(ValidateSegmentName(name));
    if (opt_.shm_dir.empty()) return Status::Ok();
    std::string path = LocalPath(name);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("unlink", path, errno);
    return Status::Ok();
  }

  StoreCounters counters() const override {
    std::lock_guard lock(mu_);
    return counters_;
  }

 private:
  // What the store knows about each stored version file (for compaction and pruning).
  struct Entry {
    Kind kind = Kind::kFull;
    Version base;              // deltas only
    uint64_t chain_bytes = 0;  // delta payload bytes since the full file this version rests on
    uint64_t size = 0;         // segment size
    Version root;              // the full version this one rests on (itself when full)
  };
  using SegIndex = std::map<Version, Entry>;

  std::string SegmentsDir() const { return opt_.state_dir + "/segments"; }
  std::string SegDir(const std::string& name) const { return SegmentsDir() + "/" + name; }
  std::string GlobalPath(const std::string& name) const {
    return opt_.global_dir + "/" + name + ".ckpt";
  }

  // The entry of `base` when a delta of payload_len bytes on it is appended to its chain, else
  // null (PutDelta writes a whole version): the base is stored at this size and the chain stays
  // smaller than a whole version.
  static const Entry* ChainBase(const SegIndex& idx, Version base, uint64_t payload_len,
                                uint64_t segment_size) {
    auto it = idx.find(base);
    if (it == idx.end() || it->second.size != segment_size ||
        it->second.chain_bytes + payload_len > segment_size)
      return nullptr;
    return &it->second;
  }

  // Creates the segment's directory once per process (this runs before every version file, and
  // an existing directory would cost a mkdir and a stat each time).  DropSegment forgets it.
  Status EnsureSegDir(const std::string& name, bool fsync) {
    if (dirs_made_.count(name)) return Status::Ok();
    bool created = false;
    CKPT_RETURN_IF_ERROR(MkdirAll(SegDir(name), kStateDirMode, &created));
    if (created && fsync) CKPT_RETURN_IF_ERROR(FsyncDir(SegmentsDir()));
    dirs_made_.insert(name);
    return Status::Ok();
  }

  // Writes a record file of segment `name`, into one of its spares when it has one.
  // `bytes`: no more than the record's size (what TakeSpare matches spares against).
  template <class Fill>
  Status Write(const std::string& name, const std::string& file, uint64_t bytes, bool fsync,
               Fill fill) {
    return WriteIn(SegDir(name), file, fsync, TakeSpare(name, bytes), fill);
  }
  template <class Fill>
  Status WriteIn(const std::string& dir, const std::string& file, bool fsync, SpareFile spare,
                 Fill fill) {
    uint64_t bytes = 0;
    CKPT_RETURN_IF_ERROR(WriteRecordFile(dir, file, fsync, fill, &bytes, std::move(spare)));
    CountWritten(bytes);
    return Status::Ok();
  }
  void CountWritten(uint64_t bytes) {
    counters_.files_written++;
    counters_.bytes_written += bytes;
  }

  // Retires a version file of segment `name`: renamed to a spare (a temporary name, so a
  // restart deletes it) for the next record of the segment to overwrite, or unlinked when the
  // segment has kMaxSparesPerSegment already (or the store kMaxSpareFiles).  Creating a file per
  // version costs ext4 an inode allocation that scans past recently deleted inodes (with many
  // small segments that scan was a third of ckptd's CPU), and writing into fresh page cache
  // costs a page allocation per 4 KiB (a 256 MiB version streamed ~15% slower that way).  A
  // compaction retires a whole delta chain at once; kept as spares, its files take the next
  // chain's deltas instead of new files.
  Status Retire(const std::string& name, const std::string& path) {
    if (HasRoomForSpare(name)) {
      std::string spare = SegDir(name) + "/.spare.tmp-" + std::to_string(++spare_seq_);
      if (::rename(path.c_str(), spare.c_str()) == 0) {
        AddSpare(name, std::move(spare));
        return Status::Ok();
      }
      if (errno == ENOENT) return Status::Ok();
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("unlink", path, errno);
    return Status::Ok();
  }

  // After version v of `name` was written as the other kind: retires the record it replaced, if
  // the index has one (no rename attempt, which fails, for the usual case of a new version).
  void RetireReplaced(const std::string& name, Version v, Kind replaced_kind) {
    auto& idx = Index(name);
    auto it = idx.find(v);
    if (it != idx.end() && it->second.kind == replaced_kind)
      (void)Retire(name, SegDir(name) + "/" + VersionFile(v, replaced_kind));
  }

  // Keeps `path` (a temporary file of `name`) as a spare.  Its bytes count against
  // StoreOptions::spare_budget_bytes; beyond it the file is emptied (only the inode is reused).
  void AddSpare(const std::string& name, std::string path) {
    if (!HasRoomForSpare(name)) {
      ::unlink(path.c_str());
      return;
    }
    std::vector<SpareFile>& spares = spares_[name];
    struct stat st;
    uint64_t bytes = ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
    if (bytes > 0 && spare_bytes_ + bytes > opt_.spare_budget_bytes) {
      // A failed truncate only keeps the bytes until the spare is reused or deleted.
      bytes = ::truncate(path.c_str(), 0) == 0 ? 0 : bytes;
    }
    spare_bytes_ += bytes;
    spare_files_++;
    spares.push_back({std::move(path), bytes});
  }

  bool HasRoomForSpare(const std::string& name) const {
    if (spare_files_ >= kMaxSpareFiles) return false;
    auto it = spares_.find(name);
    return it == spares_.end() || it->second.size() < kMaxSparesPerSegment;
  }

  // A spare of `name` to write a record of at least `bytes` into (path "" if none): the smallest
  // that holds it, since writing into a larger one truncates the rest (a synchronous discard on
  // a file system mounted with `discard`), else the largest (it grows the least).  So a delta
  // takes a retired delta's file, not the whole version a compaction retired with them.
  SpareFile TakeSpare(const std::string& name, uint64_t bytes) {
    auto it = spares_.find(name);
    if (it == spares_.end() || it->second.empty()) return {};
    std::vector<SpareFile>& spares = it->second;
    size_t best = 0;
    for (size_t i = 1; i < spares.size(); i++) {
      const uint64_t have = spares[i].bytes, chosen = spares[best].bytes;
      const bool fits = have >= bytes, chosen_fits = chosen >= bytes;
      if (fits ? (!chosen_fits || have < chosen) : (!chosen_fits && have > chosen)) best = i;
    }
    SpareFile sp = std::move(spares[best]);
    if (best + 1 != spares.size()) spares[best] = std::move(spares.back());
    spares.pop_back();
    spare_bytes_ -= sp.bytes;
    spare_files_--;
    counters_.spares_reused++;
    return sp;
  }

  void ForgetSpares(const std::string& name) {
    auto it = spares_.find(name);
    if (it == spares_.end()) return;
    for (const SpareFile& sp : it->second) spare_bytes_ -= sp.bytes;
    spare_files_ -= it->second.size();
    spares_.erase(it);
  }

  Status PutFullLocked(const std::string& name, Version v, const BlockImage& image, bool fsync) {
    CKPT_RETURN_IF_ERROR(EnsureSegDir(name, fsync));
    RecordHeader h{.kind = Kind::kFull,
                   .name = name,
                   .version = v,
                   .base = {},
                   .segment_size = image.size(),
                   .segment_checksum = image.checksum(),
                   .stored_unix_ms = NowUnixMs(),
                   .payload_len = image.size()};
    CKPT_RETURN_IF_ERROR(
        Write(name, VersionFile(v, Kind::kFull), image.size(), fsync, [&](RecordSink& s) {
          s.AddOwned(EncodeHeader(h));
          s.AddImageRange(image, 0, image.size());
        }));
    RetireReplaced(name, v, Kind::kDelta);
    Index(name)[v] = {Kind::kFull, {}, 0, image.size(), v};
    return Status::Ok();
  }

  // The index of `name`, built from the file headers when this store has not seen it yet
  // (LoadAll not called, or a segment created by another store object).
  SegIndex& Index(const std::string& name) {
    auto it = index_.find(name);
    if (it != index_.end()) return it->second;
    SegIndex& idx = index_[name];
    auto files = ListDir(SegDir(name));
    if (!files.ok()) return idx;
    for (const std::string& f : *files) {  // ascending names; chains are resolved below
      Version v;
      Kind kind;
      if (!ParseVersionFile(f, &v, &kind)) continue;
      // Headers only: the first write of a segment indexes its directory, which then holds the
      // file just written (a 1 MiB version was read back whole for its ~100-byte header).
      auto src = RecordSource::Open(SegDir(name) + "/" + f, kMaxHeaderBytes);
      RecordHeader h;
      if (!src.ok() || !src->ReadHeader(&h).ok() || h.kind != kind || h.version != v) continue;
      if (idx.count(v) && kind == Kind::kDelta) continue;  // a full file wins
      idx[v] = {kind, h.base, kind == Kind::kDelta ? h.payload_len : 0, h.segment_size, v};
    }
    for (auto e = idx.begin(); e != idx.end();) {  // ascending: bases come first
      if (e->second.kind == Kind::kDelta) {
        auto b = idx.find(e->second.base);
        if (!(e->second.base < e->first) || b == idx.end()) {
          e = idx.erase(e);  // orphan: never a valid base
          continue;
        }
        e->second.chain_bytes += b->second.chain_bytes;
        e->second.root = b->second.root;
      }
      ++e;
    }
    return idx;
  }

  // Builds a new local storage file (a hole of `size` bytes, then `fill`), applies owner and
  // mode, and renames it over <shm_dir>/<name>: mappers see the old file or the new one.
  template <class Fill>
  Status ReplaceLocal(const std::string& name, uint64_t size, uint32_t uid, uint32_t gid,
                      uint32_t mode, Fill fill) {
    std::string tmp;
    auto fd = MakeTemp(opt_.shm_dir, name, &tmp);
    if (!fd.ok()) return fd.status();
    std::string path = LocalPath(name);
    Status st = [&]() -> Status {
      if (::ftruncate(fd->get(), static_cast<off_t>(size)) != 0)
        return ErrnoStatus("ftruncate", tmp, errno);
      CKPT_RETURN_IF_ERROR(fill(fd->get(), tmp));
      if (::fchown(fd->get(), uid, gid) != 0) return ErrnoStatus("fchown", tmp, errno);
      if (::fchmod(fd->get(), mode & 07777) != 0) return ErrnoStatus("fchmod", tmp, errno);
      if (fd->close() != 0) return ErrnoStatus("close", tmp, errno);
      if (::rename(tmp.c_str(), path.c_str()) != 0)
        return ErrnoStatus("rename", tmp + " -> " + path, errno);
      return Status::Ok();
    }();
    if (!st.ok()) ::unlink(tmp.c_str());
    return st;
  }

  void Quarantine(const std::string& path) {
    counters_.corrupt_files++;
    ::rename(path.c_str(), (path + ".corrupt").c_str());
  }

  // Loads one segment directory; nullopt when its meta is missing or damaged.
  std::optional<LoadedSegment> LoadSegment(const std::string& name) {
    std::string dir = SegDir(name);
    auto files = ListDir(dir);
    if (!files.ok()) return std::nullopt;
    LoadedSegment seg;
    {
      auto src = RecordSource::Open(dir + "/meta");
      if (!src.ok()) {
        if (src.status().code() == Code::kCorrupt) Quarantine(dir + "/meta");
        return std::nullopt;
      }
      RecordHeader h;
      Status st = src->ReadHeader(&h);
      if (st.ok() && (h.kind != Kind::kMeta || h.name != name))
        st = Corrupt(src->path(), "not the meta record of " + name);
      if (st.ok()) st = ReadMetaPayload(*src, h.payload_len, &seg.meta);
      if (st.ok()) st = src->VerifyTrailer();
      if (st.ok() && seg.meta.name != name) st = Corrupt(src->path(), "meta names another segment");
      if (!st.ok()) {
        if (st.code() == Code::kCorrupt) Quarantine(dir + "/meta");
        return std::nullopt;
      }
    }
    std::map<Version, Kind> found;
    for (const std::string& f : *files) {
      Version v;
      Kind kind;
      if (IsTempName(f)) {
        auto open = streams_.find(name);
        if (open != streams_.end() && open->second->tmp == dir + "/" + f) continue;  // in use
        ::unlink((dir + "/" + f).c_str());  // left by a crash before rename
      } else if (ParseVersionFile(f, &v, &kind)) {
        auto [it, inserted] = found.emplace(v, kind);
        if (!inserted && kind == Kind::kFull) it->second = kind;  // a full file wins
      }
    }
    SegIndex& idx = index_[name];
    idx.clear();
    std::map<Version, BlockImage> images;  // blocks are shared between versions (COW)
    for (auto [v, kind] : found) {
      std::string path = dir + "/" + VersionFile(v, kind);
      auto src = RecordSource::Open(path);
      if (!src.ok()) {
        if (src.status().code() == Code::kCorrupt) Quarantine(path);
        continue;
      }
      RecordHeader h;
      Status st = src->ReadHeader(&h);
      if (st.ok() && (h.kind != kind || h.name != name || h.version != v))
        st = Corrupt(path, "header does not match the file name");
      if (st.ok() && kind == Kind::kDelta && !(h.base < v))
        st = Corrupt(path, "delta base is not older than the delta");
      if (!st.ok()) {
        if (st.code() == Code::kCorrupt) Quarantine(path);
        continue;
      }
      BlockImage image;
      Entry entry{kind, h.base, 0, h.segment_size, v};
      if (kind == Kind::kDelta) {
        auto base = images.find(h.base);
        auto base_entry = idx.find(h.base);
        if (base == images.end()) {
          ::unlink(path.c_str());  // its base is gone for good: the delta is useless
          continue;
        }
        if (base->second.size() != h.segment_size) {
          st = Corrupt(path, "delta size differs from its base");
        } else {
          image = base->second;
          entry.chain_bytes = base_entry->second.chain_bytes + h.payload_len;
          entry.root = base_entry->second.root;
          st = ApplyDelta(*src, &image);
        }
      } else {
        if (h.payload_len != h.segment_size) st = Corrupt(path, "full payload is not the segment");
        if (st.ok()) st = ReadImage(*src, h.segment_size, &image);
      }
      if (st.ok()) st = src->VerifyTrailer();
      if (st.ok()) st = CheckImageSum(path, image, h);
      if (!st.ok()) {
        if (st.code() == Code::kCorrupt) Quarantine(path);
        continue;
      }
      if (kind == Kind::kFull)  // a delta of the same version may linger next to it
        ::unlink((dir + "/" + VersionFile(v, Kind::kDelta)).c_str());
      idx[v] = entry;
      seg.versions.push_back({v, image, h.stored_unix_ms});
      images.emplace(v, std::move(image));
    }
    return seg;
  }

  const StoreOptions opt_;
  mutable std::mutex mu_;  // guards index_, counters_ and serializes file operations
  std::map<std::string, SegIndex> index_;
  std::set<std::string> dirs_made_;  // segment directories known to exist (EnsureSegDir)
  // Spare files per segment (Retire), reused by Write.  A restart forgets them and LoadSegment
  // deletes them with the other temporary files.
  // At most opt_.spare_budget_bytes of their bytes are kept (disk space, and page cache the next
  // write overwrites instead of allocating).
  // At most kMaxSparesPerSegment per segment (a delta chain of 4 KiB records in a 1 MiB segment
  // has 256 files) and kMaxSpareFiles in all (their paths are in memory).
  static constexpr size_t kMaxSparesPerSegment = 256;
  static constexpr size_t kMaxSpareFiles = 65536;
  // A spare's bytes: its size when retired (counted in spare_bytes_).
  std::map<std::string, std::vector<SpareFile>> spares_;
  uint64_t spare_bytes_ = 0;
  size_t spare_files_ = 0;
  uint64_t spare_seq_ = 0;
  // Open BeginFull writes, at most one per segment.  Their temporary files are never deleted by
  // LoadSegment's clean-up while open.
  struct Stream {
    Version version;
    uint64_t size = 0, appended = 0;
    std::string tmp;
    uint64_t tmp_bytes = 0;  // size of tmp before this write (a spare's old record)
    UniqueFd fd;
    std::unique_ptr<RecordSink> sink;  // refers to tmp: a Stream never moves (unique_ptr)
  };
  std::map<std::string, std::unique_ptr<Stream>> streams_;

  // Drops the open write of `name`, if any; its temporary file becomes a spare.
  void CloseStream(const std::string& name) {
    auto it = streams_.find(name);
    if (it == streams_.end()) return;
    std::unique_ptr<Stream> st = std::move(it->second);
    streams_.erase(it);
    st->sink.reset();
    st->fd.reset();
    AddSpare(name, st->tmp);
  }
  // Temporary files in the local storage directory are a crashed daemon's unfinished installs or
  // pull writes (up to a segment's size of tmpfs memory each): removed at startup (LoadAll).
  void RemoveLocalLeftovers() {
    if (opt_.shm_dir.empty()) return;
    auto files = ListDir(opt_.shm_dir);
    if (!files.ok()) return;  // no directory yet
    for (const std::string& f : *files) {
      const std::string path = opt_.shm_dir + "/" + f;
      bool in_use = false;
      for (const auto& [name, w] : local_writes_) in_use |= w.tmp == path;
      if (IsTempName(f) && !in_use) ::unlink(path.c_str());
    }
  }
  // Local storage being written while a pull arrives (BeginLocal..FinishLocal), by segment.
  struct LocalWrite {
    uint64_t size = 0, appended = 0;
    std::string tmp;
    UniqueFd fd;
  };
  std::map<std::string, LocalWrite> local_writes_;
  // Drops the unfinished local write of `name`, if any, and its temporary file.
  void DropLocalWrite(const std::string& name) {
    auto it = local_writes_.find(name);
    if (it == local_writes_.end()) return;
    ::unlink(it->second.tmp.c_str());
    local_writes_.erase(it);
  }
  StoreCounters counters_;
};

}  // namespace

Result<std::unique_ptr<SegmentStore>> SegmentStore::Open(const StoreOptions& options) {
  auto store = std::make_unique<FileSegmentStore>(options);
  CKPT_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<SegmentStore>(std::move(store));
}

}  // namespace ckpt
