#include "daemon/frame.h"

#include <cstring>

namespace ternd::wire {

std::span<uint8_t> FrameDecoder::WritableSpace(size_t min_bytes) {
  if (begin_ == end_) {
    begin_ = end_ = 0;
  } else if (begin_ > 0 && buffer_.size() - end_ < min_bytes) {
    // Move the partial frame to the front before growing.
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (buffer_.size() - end_ < min_bytes) buffer_.resize(end_ + min_bytes);
  return std::span<uint8_t>(buffer_.data() + end_, buffer_.size() - end_);
}

void FrameDecoder::Commit(size_t bytes) { end_ += bytes; }

void FrameDecoder::ReleaseIfEmpty(size_t keep_bytes) {
  if (begin_ != end_ || buffer_.capacity() <= keep_bytes) return;
  std::vector<uint8_t>().swap(buffer_);
  begin_ = end_ = 0;
}

void FrameDecoder::Feed(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return;
  std::span<uint8_t> space = WritableSpace(bytes.size());
  std::memcpy(space.data(), bytes.data(), bytes.size());
  Commit(bytes.size());
}

FrameDecoder::Next FrameDecoder::TakeFrame(std::span<const uint8_t>* payload,
                                           uint32_t* announced) {
  const size_t available = end_ - begin_;
  if (available < kFrameHeaderBytes) return Next::kNeedMore;
  const uint8_t* p = buffer_.data() + begin_;
  const uint32_t length =
      static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
      static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
  if (announced) *announced = length;
  if (length > max_frame_bytes_) return Next::kTooLarge;
  if (available - kFrameHeaderBytes < length) return Next::kNeedMore;
  *payload = std::span<const uint8_t>(p + kFrameHeaderBytes, length);
  begin_ += kFrameHeaderBytes + length;
  return Next::kFrame;
}

bool AppendFrame(const google::protobuf::MessageLite& message,
                 size_t max_frame_bytes, std::vector<uint8_t>* out) {
  const size_t length = message.ByteSizeLong();
  if (length > max_frame_bytes || length > UINT32_MAX) return false;
  const size_t at = out->size();
  out->resize(at + kFrameHeaderBytes + length);
  uint8_t* p = out->data() + at;
  p[0] = static_cast<uint8_t>(length);
  p[1] = static_cast<uint8_t>(length >> 8);
  p[2] = static_cast<uint8_t>(length >> 16);
  p[3] = static_cast<uint8_t>(length >> 24);
  message.SerializeWithCachedSizesToArray(p + kFrameHeaderBytes);
  return true;
}

}  // namespace ternd::wire
