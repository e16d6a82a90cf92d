// Fuzzes the wire protocol's frame decoder and Request parsing with
// arbitrary byte streams delivered in arbitrary read sizes.
//
// The first input byte picks the read size (1..256 bytes per read) and the
// second the maximum frame size, so the decoder sees every split of a
// stream and every length relative to its limit. Invariants checked:
//   - a returned frame never exceeds the limit and lies inside the stream;
//   - kTooLarge is reported exactly when the announced length is over it;
//   - the bytes buffered never exceed the limit plus one read plus a header;
//   - a frame that parses as a Request re-encodes into a frame that
//     decodes and parses to the same message.
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "daemon/frame.h"
#include "daemon/protocol.pb.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Invalid UTF-8 in string fields is expected here; do not log each one.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t chunk = 1 + data[0];
  const size_t max_frame = size_t{16} << (data[1] % 12);  // 16 B .. 32 KiB
  std::span<const uint8_t> stream(data + 2, size - 2);

  ternd::wire::FrameDecoder decoder(max_frame);
  ternd::wire::Request request;
  size_t fed = 0;
  while (fed < stream.size()) {
    const size_t n = std::min(chunk, stream.size() - fed);
    decoder.Feed(stream.subspan(fed, n));
    fed += n;
    Check(decoder.buffered() <=
          max_frame + chunk + ternd::wire::kFrameHeaderBytes);
    for (;;) {
      std::span<const uint8_t> payload;
      uint32_t announced = 0;
      const auto next = decoder.TakeFrame(&payload, &announced);
      if (next == ternd::wire::FrameDecoder::Next::kNeedMore) break;
      if (next == ternd::wire::FrameDecoder::Next::kTooLarge) {
        Check(announced > max_frame);
        return 0;  // the daemon closes the connection here
      }
      Check(payload.size() == announced && payload.size() <= max_frame);
      if (!request.ParseFromArray(payload.data(),
                                  static_cast<int>(payload.size()))) {
        continue;  // the daemon answers INVALID_ARGUMENT and closes
      }
      std::vector<uint8_t> again;
      if (!ternd::wire::AppendFrame(request, SIZE_MAX, &again)) std::abort();
      ternd::wire::FrameDecoder redecoder(again.size());
      redecoder.Feed(again);
      std::span<const uint8_t> round;
      Check(redecoder.TakeFrame(&round, nullptr) ==
            ternd::wire::FrameDecoder::Next::kFrame);
      ternd::wire::Request back;
      Check(back.ParseFromArray(round.data(), static_cast<int>(round.size())));
      Check(back.SerializeAsString() == request.SerializeAsString());
    }
    decoder.ReleaseIfEmpty(64);  // as the daemon does after each read
  }
  return 0;
}
