// Framing of ternd's wire protocol: each frame is a 4-byte little-endian
// payload length followed by that many bytes (one protobuf message).
//
// FrameDecoder turns a byte stream into frames without trusting it: a length
// above the configured maximum is reported before any of the payload is
// buffered, so a peer can never make the decoder hold more than
// max_frame_bytes + one read's worth of bytes.
//
// Thread-safety: a FrameDecoder is used by one thread at a time.
#ifndef TERND_DAEMON_FRAME_H_
#define TERND_DAEMON_FRAME_H_

#include <google/protobuf/message_lite.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace ternd::wire {

inline constexpr size_t kFrameHeaderBytes = 4;

class FrameDecoder {
 public:
  enum class Next {
    kFrame,     // *payload is the next frame's payload
    kNeedMore,  // no complete frame buffered yet
    kTooLarge,  // the next frame announces more than max_frame_bytes
  };

  explicit FrameDecoder(size_t max_frame_bytes)
      : max_frame_bytes_(max_frame_bytes) {}

  // Space for at least `min_bytes` more input; write into it, then Commit()
  // how many bytes were written (the client reads in place this way).
  std::span<uint8_t> WritableSpace(size_t min_bytes);
  void Commit(size_t bytes);
  // Copies `bytes` in. The daemon reads every connection into one shared
  // buffer and feeds each decoder only what it read, so an idle connection
  // holds its unfinished frame, not a read-sized buffer.
  void Feed(std::span<const uint8_t> bytes);

  // The next complete frame. The payload stays valid until the next call to
  // WritableSpace, Feed or Reset. After kTooLarge the stream cannot be
  // resynchronized; the length is in *announced.
  Next TakeFrame(std::span<const uint8_t>* payload, uint32_t* announced);

  // Frees the buffer when nothing is buffered and it has grown beyond
  // `keep_bytes` (after a large frame), so idle connections stay small.
  void ReleaseIfEmpty(size_t keep_bytes);

  // Bytes buffered and not yet returned as frames.
  size_t buffered() const { return end_ - begin_; }
  void set_max_frame_bytes(size_t max) { max_frame_bytes_ = max; }
  size_t max_frame_bytes() const { return max_frame_bytes_; }

 private:
  size_t max_frame_bytes_;
  std::vector<uint8_t> buffer_;
  size_t begin_ = 0;  // first unconsumed byte
  size_t end_ = 0;    // one past the last byte written
};

// Appends `message` as one frame to `out`. Returns false (appending nothing)
// when the message is larger than max_frame_bytes.
bool AppendFrame(const google::protobuf::MessageLite& message,
                 size_t max_frame_bytes, std::vector<uint8_t>* out);

}  // namespace ternd::wire

#endif  // TERND_DAEMON_FRAME_H_
