#include "replication/messages.hpp"

#include <zstd.h>

#include <cstring>
#include <memory>

#include "common/checksum.hpp"
#include "common/codec.hpp"

namespace ckpt::repl {
namespace {

constexpr size_t kBundleFrameBytes = 4;  // u32 length before each inner message in a BUNDLE

void FinishHeader(std::vector<uint8_t>* out, MsgType type) {
  uint8_t* h = out->data();
  store_le32(h + 0, kWireMagic);
  h[4] = kWireVersion & 0xff;
  h[5] = kWireVersion >> 8;
  h[6] = static_cast<uint8_t>(static_cast<uint16_t>(type) & 0xff);
  h[7] = static_cast<uint8_t>(static_cast<uint16_t>(type) >> 8);
  store_le32(h + 8, static_cast<uint32_t>(out->size() - kWireHeaderBytes));
  store_le32(h + 12, 0);
  store_le64(h + 16, 0);
  uint64_t sum = Checksum64Concat({h, 16}, {h + kWireHeaderBytes, out->size() - kWireHeaderBytes});
  store_le64(h + 16, sum);
}

}  // namespace

template <class T>
std::vector<uint8_t> Encode(const T& msg) {
  std::vector<uint8_t> out(kWireHeaderBytes);
  ipc::FieldWriter fw{Writer(&out)};
  fw(msg);
  FinishHeader(&out, T::kType);
  return out;
}

template std::vector<uint8_t> Encode(const NodeInfoMsg&);
template std::vector<uint8_t> Encode(const CatalogMsg&);
template std::vector<uint8_t> Encode(const ClaimMsg&);
template std::vector<uint8_t> Encode(const ReleaseMsg&);
template std::vector<uint8_t> Encode(const DeleteMsg&);
template std::vector<uint8_t> Encode(const AckMsg&);
template std::vector<uint8_t> Encode(const FetchMsg&);
template std::vector<uint8_t> Encode(const FetchFailMsg&);

std::vector<uint8_t> EncodeData(const DataHeader& header, std::span<const DataPiece> pieces,
                                bool compress) {
  std::vector<PieceSpec> specs;
  specs.reserve(pieces.size());
  for (const auto& p : pieces) specs.push_back({p.offset, p.bytes.size()});
  return EncodeData(
      header, specs,
      [&](size_t i, std::vector<uint8_t>* out) {
        out->insert(out->end(), pieces[i].bytes.begin(), pieces[i].bytes.end());
      },
      compress);
}

std::vector<uint8_t> EncodeData(const DataHeader& header, std::span<const PieceSpec> pieces,
                                const PieceReader& read, bool compress) {
  size_t payload = 0;
  for (const auto& p : pieces) payload += 12 + p.length;
  DataHeader h = header;
  h.n_pieces = static_cast<uint32_t>(pieces.size());
  h.encoding = static_cast<uint8_t>(DataEncoding::kRaw);
  h.raw_len = 0;
  std::vector<uint8_t> out;
  out.reserve(kWireHeaderBytes + 256 + header.name.size() + 4 * header.targets.size() + payload);
  out.resize(kWireHeaderBytes);
  // Appends the pieces block (u64 offset | u32 length | bytes, per piece) to `w`'s buffer; the
  // bytes are read in place, so each is copied once.
  auto write_pieces = [&](std::vector<uint8_t>* buf) {
    Writer w(buf);
    for (size_t i = 0; i < pieces.size(); i++) {
      w.u64(pieces[i].offset);
      w.u32(static_cast<uint32_t>(pieces[i].length));
      size_t at = buf->size();
      read(i, buf);  // appends in place: the capacity was reserved, nothing is zero-filled
      CKPT_ASSERT(buf->size() - at == pieces[i].length);
    }
  };
  if (compress && payload > 0 && payload <= kMaxDataRaw) {
    std::vector<uint8_t> raw;
    raw.reserve(payload);
    write_pieces(&raw);
    // One compression context per thread, reused (creating one per message costs more than a
    // small chunk's compression).
    thread_local std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx(ZSTD_createCCtx(),
                                                                         ZSTD_freeCCtx);
    std::vector<uint8_t> packed(ZSTD_compressBound(raw.size()));
    size_t n = cctx ? ZSTD_compressCCtx(cctx.get(), packed.data(), packed.size(), raw.data(),
                                        raw.size(), /*level=*/1)
                    : 0;
    ipc::FieldWriter fw{Writer(&out)};
    if (cctx && !ZSTD_isError(n) && n <= raw.size() - raw.size() / 16) {
      h.encoding = static_cast<uint8_t>(DataEncoding::kZstd);
      h.raw_len = static_cast<uint32_t>(raw.size());
      fw(h);
      fw.w.bytes(packed.data(), n);
    } else {
      fw(h);
      fw.w.bytes(raw.data(), raw.size());  // not worth it: the raw block, without reading again
    }
    FinishHeader(&out, MsgType::kData);
    return out;
  }
  ipc::FieldWriter fw{Writer(&out)};
  fw(h);
  write_pieces(&out);
  FinishHeader(&out, MsgType::kData);
  return out;
}

std::vector<std::vector<uint8_t>> PackBundles(std::vector<std::vector<uint8_t>> msgs,
                                              size_t max_bytes) {
  const size_t base = kWireHeaderBytes + 4;  // header + count
  std::vector<std::vector<uint8_t>> out;
  out.reserve(msgs.size());
  size_t i = 0;
  while (i < msgs.size()) {
    // The longest run [i, j) of messages that fits in one bundle.
    size_t j = i, bytes = base;
    while (j < msgs.size() && bytes + kBundleFrameBytes + msgs[j].size() <= max_bytes) {
      bytes += kBundleFrameBytes + msgs[j].size();
      j++;
    }
    if (j - i < 2) {
      out.push_back(std::move(msgs[i]));
      i++;
      continue;
    }
    std::vector<uint8_t> b;
    b.reserve(bytes);
    b.resize(kWireHeaderBytes);
    Writer w(&b);
    w.u32(static_cast<uint32_t>(j - i));
    for (; i < j; i++) {
      w.u32(static_cast<uint32_t>(msgs[i].size()));
      w.bytes(msgs[i].data(), msgs[i].size());
    }
    FinishHeader(&b, MsgType::kBundle);
    out.push_back(std::move(b));
  }
  return out;
}

std::vector<std::span<const uint8_t>> Unbundle(std::span<const uint8_t> message) {
  Decoded d;
  if (Decode(message, &d).ok() && d.type == MsgType::kBundle) return d.bundle;
  return {message};
}

namespace {
Status DecodeBundle(std::span<const uint8_t> body, Decoded* out) {
  Reader r(body);
  uint32_t count = r.u32();
  if (!r.ok() || count < 2 || count > body.size() / (kBundleFrameBytes + kWireHeaderBytes))
    return Err(Code::kProtocol, "bad BUNDLE message count");
  out->bundle.clear();
  out->bundle.reserve(count);
  for (uint32_t k = 0; k < count; k++) {
    uint32_t len = r.u32();
    auto inner = r.bytes(len);
    if (!r.ok()) return Err(Code::kProtocol, "truncated BUNDLE");
    if (len < kWireHeaderBytes) return Err(Code::kProtocol, "BUNDLE message shorter than header");
    if (uint16_t(inner[6] | (inner[7] << 8)) == uint16_t(MsgType::kBundle))
      return Err(Code::kProtocol, "BUNDLE inside a BUNDLE");
    out->bundle.push_back(inner);
  }
  if (r.remaining() != 0) return Err(Code::kProtocol, "trailing bytes after BUNDLE");
  return Status::Ok();
}

template <class T>
Status DecodeControl(std::span<const uint8_t> body, Decoded* out) {
  T msg;
  ipc::FieldReader fr{Reader(body)};
  fr(msg);
  if (!fr.r.ok()) return Err(Code::kProtocol, "truncated or malformed message body");
  if (fr.r.remaining() != 0) return Err(Code::kProtocol, "trailing bytes after message body");
  out->control = std::move(msg);
  return Status::Ok();
}
}  // namespace

namespace {
Status DecodeMessage(std::span<const uint8_t> message, Decoded* out, bool verify_checksum) {
  if (message.size() < kWireHeaderBytes) return Err(Code::kProtocol, "message shorter than header");
  const uint8_t* h = message.data();
  if (load_le32(h) != kWireMagic) return Err(Code::kProtocol, "bad magic");
  uint16_t version = static_cast<uint16_t>(h[4] | (h[5] << 8));
  if (version != kWireVersion)
    return Err(Code::kProtocol, "unsupported wire version " + std::to_string(version));
  uint16_t type = static_cast<uint16_t>(h[6] | (h[7] << 8));
  uint32_t body_len = load_le32(h + 8);
  if (body_len != message.size() - kWireHeaderBytes)
    return Err(Code::kProtocol, "body length does not match message size");
  auto body = message.subspan(kWireHeaderBytes);
  if (verify_checksum && Checksum64Concat({h, 16}, body) != load_le64(h + 16))
    return Err(Code::kProtocol, "checksum mismatch");
  out->type = static_cast<MsgType>(type);
  switch (out->type) {
    case MsgType::kNodeInfo:
      return DecodeControl<NodeInfoMsg>(body, out);
    case MsgType::kCatalog:
      return DecodeControl<CatalogMsg>(body, out);
    case MsgType::kClaim:
      return DecodeControl<ClaimMsg>(body, out);
    case MsgType::kRelease:
      return DecodeControl<ReleaseMsg>(body, out);
    case MsgType::kDelete:
      return DecodeControl<DeleteMsg>(body, out);
    case MsgType::kAck:
      return DecodeControl<AckMsg>(body, out);
    case MsgType::kFetch:
      return DecodeControl<FetchMsg>(body, out);
    case MsgType::kFetchFail:
      return DecodeControl<FetchFailMsg>(body, out);
    case MsgType::kBundle:
      return DecodeBundle(body, out);
    case MsgType::kData: {
      ipc::FieldReader fr{Reader(body)};
      fr(out->data);
      if (!fr.r.ok()) return Err(Code::kProtocol, "malformed DATA header");
      std::span<const uint8_t> block = body.subspan(fr.r.position());
      out->inflated.clear();
      if (out->data.encoding == static_cast<uint8_t>(DataEncoding::kZstd)) {
        // Never trust the peer's sizes: the frame must declare exactly raw_len, within bounds.
        const uint32_t raw_len = out->data.raw_len;
        if (raw_len == 0 || raw_len > kMaxDataRaw)
          return Err(Code::kProtocol, "compressed DATA declares a bad raw length");
        unsigned long long declared = ZSTD_getFrameContentSize(block.data(), block.size());
        if (declared != raw_len)
          return Err(Code::kProtocol, "compressed DATA frame does not match its raw length");
        out->inflated.resize(raw_len);
        thread_local std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(),
                                                                             ZSTD_freeDCtx);
        if (!dctx) return Err(Code::kNoMemory, "cannot create a zstd context");
        size_t n = ZSTD_decompressDCtx(dctx.get(), out->inflated.data(), raw_len, block.data(),
                                       block.size());
        if (ZSTD_isError(n) || n != raw_len)
          return Err(Code::kProtocol, "compressed DATA does not decompress");
        block = out->inflated;
      } else if (out->data.encoding != static_cast<uint8_t>(DataEncoding::kRaw) ||
                 out->data.raw_len != 0) {
        return Err(Code::kProtocol, "unknown DATA encoding");
      }
      Reader pr(block);
      if (out->data.n_pieces > pr.remaining() / 12)
        return Err(Code::kProtocol, "DATA piece count exceeds message");
      out->pieces.clear();
      out->pieces.reserve(out->data.n_pieces);
      for (uint32_t i = 0; i < out->data.n_pieces; i++) {
        uint64_t off = pr.u64();
        uint32_t len = pr.u32();
        auto bytes = pr.bytes(len);
        if (!pr.ok()) return Err(Code::kProtocol, "truncated DATA piece");
        if (off > out->data.size || len > out->data.size - off)
          return Err(Code::kProtocol, "DATA piece outside the segment");
        out->pieces.push_back({off, bytes});
      }
      if (pr.remaining() != 0) return Err(Code::kProtocol, "trailing bytes after DATA pieces");
      return Status::Ok();
    }
  }
  return Err(Code::kProtocol, "unknown message type " + std::to_string(type));
}
}  // namespace

Status Decode(std::span<const uint8_t> message, Decoded* out) {
  return DecodeMessage(message, out, /*verify_checksum=*/true);
}
Status DecodeBundled(std::span<const uint8_t> inner, Decoded* out) {
  return DecodeMessage(inner, out, /*verify_checksum=*/false);
}

}  // namespace ckpt::repl
