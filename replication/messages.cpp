#include "replication/messages.hpp"

#include "common/checksum.hpp"
#include "common/codec.hpp"

namespace ckpt::repl {
namespace {

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

template <class T> std::vector<uint8_t> Encode(const T& msg) {
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

std::vector<uint8_t> EncodeData(const DataHeader& header, std::span<const DataPiece> pieces) {
  size_t payload = 0;
  for (const auto& p : pieces) payload += 12 + p.bytes.size();
  std::vector<uint8_t> out;
  out.reserve(kWireHeaderBytes + 256 + header.name.size() + 4 * header.targets.size() + payload);
  out.resize(kWireHeaderBytes);
  ipc::FieldWriter fw{Writer(&out)};
  DataHeader h = header;
  h.n_pieces = static_cast<uint32_t>(pieces.size());
  fw(h);
  for (const auto& p : pieces) {
    fw.w.u64(p.offset);
    fw.w.u32(static_cast<uint32_t>(p.bytes.size()));
    fw.w.bytes(p.bytes.data(), p.bytes.size());
  }
  FinishHeader(&out, MsgType::kData);
  return out;
}

namespace {
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

Status Decode(std::span<const uint8_t> message, Decoded* out) {
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
  uint64_t sum = Checksum64Concat({h, 16}, body);
  if (sum != load_le64(h + 16)) return Err(Code::kProtocol, "checksum mismatch");
  out->type = static_cast<MsgType>(type);
  switch (out->type) {
    case MsgType::kNodeInfo: return DecodeControl<NodeInfoMsg>(body, out);
    case MsgType::kCatalog: return DecodeControl<CatalogMsg>(body, out);
    case MsgType::kClaim: return DecodeControl<ClaimMsg>(body, out);
    case MsgType::kRelease: return DecodeControl<ReleaseMsg>(body, out);
    case MsgType::kDelete: return DecodeControl<DeleteMsg>(body, out);
    case MsgType::kAck: return DecodeControl<AckMsg>(body, out);
    case MsgType::kFetch: return DecodeControl<FetchMsg>(body, out);
    case MsgType::kFetchFail: return DecodeControl<FetchFailMsg>(body, out);
    case MsgType::kData: {
      ipc::FieldReader fr{Reader(body)};
      fr(out->data);
      if (!fr.r.ok()) return Err(Code::kProtocol, "malformed DATA header");
      if (out->data.n_pieces > fr.r.remaining() / 12)
        return Err(Code::kProtocol, "DATA piece count exceeds message");
      out->pieces.clear();
      out->pieces.reserve(out->data.n_pieces);
      for (uint32_t i = 0; i < out->data.n_pieces; i++) {
        uint64_t off = fr.r.u64();
        uint32_t len = fr.r.u32();
        auto bytes = fr.r.bytes(len);
        if (!fr.r.ok()) return Err(Code::kProtocol, "truncated DATA piece");
        if (off > out->data.size || len > out->data.size - off)
          return Err(Code::kProtocol, "DATA piece outside the segment");
        out->pieces.push_back({off, bytes});
      }
      if (fr.r.remaining() != 0) return Err(Code::kProtocol, "trailing bytes after DATA pieces");
      return Status::Ok();
    }
  }
  return Err(Code::kProtocol, "unknown message type " + std::to_string(type));
}

}  // namespace ckpt::repl
