#include "daemon/frame.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "daemon/protocol.pb.h"

namespace ternd::wire {
namespace {

std::vector<uint8_t> Frame(const std::string& payload) {
  std::vector<uint8_t> f(4 + payload.size());
  for (int i = 0; i < 4; ++i) {
    f[i] = static_cast<uint8_t>(payload.size() >> (8 * i));
  }
  for (size_t i = 0; i < payload.size(); ++i) {
    f[4 + i] = static_cast<uint8_t>(payload[i]);
  }
  return f;
}

std::string Str(std::span<const uint8_t> s) {
  return std::string(s.begin(), s.end());
}

TEST(FrameDecoderTest, ReturnsFramesFedByteByByte) {
  FrameDecoder d(1024);
  std::vector<uint8_t> bytes = Frame("hello");
  const std::vector<uint8_t> second = Frame("");
  bytes.insert(bytes.end(), second.begin(), second.end());
  std::vector<std::string> got;
  for (uint8_t b : bytes) {
    d.Feed(std::span<const uint8_t>(&b, 1));
    std::span<const uint8_t> payload;
    while (d.TakeFrame(&payload, nullptr) == FrameDecoder::Next::kFrame) {
      got.push_back(Str(payload));
    }
  }
  EXPECT_EQ(got, (std::vector<std::string>{"hello", ""}));
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(FrameDecoderTest, ReturnsSeveralFramesFromOneRead) {
  FrameDecoder d(1024);
  std::vector<uint8_t> bytes;
  for (const char* p : {"a", "bb", "ccc"}) {
    const std::vector<uint8_t> f = Frame(p);
    bytes.insert(bytes.end(), f.begin(), f.end());
  }
  bytes.push_back(9);  // start of a fourth frame's length
  d.Feed(bytes);
  std::span<const uint8_t> payload;
  ASSERT_EQ(d.TakeFrame(&payload, nullptr), FrameDecoder::Next::kFrame);
  EXPECT_EQ(Str(payload), "a");
  ASSERT_EQ(d.TakeFrame(&payload, nullptr), FrameDecoder::Next::kFrame);
  EXPECT_EQ(Str(payload), "bb");
  ASSERT_EQ(d.TakeFrame(&payload, nullptr), FrameDecoder::Next::kFrame);
  EXPECT_EQ(Str(payload), "ccc");
  EXPECT_EQ(d.TakeFrame(&payload, nullptr), FrameDecoder::Next::kNeedMore);
  EXPECT_EQ(d.buffered(), 1u);
}

TEST(FrameDecoderTest, RefusesOversizedLengthBeforeBufferingPayload) {
  FrameDecoder d(16);
  const uint8_t header[4] = {17, 0, 0, 0};
  d.Feed(header);
  std::span<const uint8_t> payload;
  uint32_t announced = 0;
  EXPECT_EQ(d.TakeFrame(&payload, &announced), FrameDecoder::Next::kTooLarge);
  EXPECT_EQ(announced, 17u);
}

TEST(FrameDecoderTest, AcceptsFrameOfExactlyTheLimit) {
  FrameDecoder d(16);
  d.Feed(Frame(std::string(16, 'x')));
  std::span<const uint8_t> payload;
  EXPECT_EQ(d.TakeFrame(&payload, nullptr), FrameDecoder::Next::kFrame);
  EXPECT_EQ(payload.size(), 16u);
}

TEST(FrameDecoderTest, HugeLengthIsTooLargeNotAnAllocation) {
  FrameDecoder d(1 << 20);
  const uint8_t header[4] = {0xff, 0xff, 0xff, 0xff};
  d.Feed(header);
  std::span<const uint8_t> payload;
  uint32_t announced = 0;
  EXPECT_EQ(d.TakeFrame(&payload, &announced), FrameDecoder::Next::kTooLarge);
  EXPECT_EQ(announced, 0xffffffffu);
}

TEST(FrameDecoderTest, WritableSpaceReadsInPlace) {
  FrameDecoder d(1024);
  const std::vector<uint8_t> f = Frame("xyz");
  std::span<uint8_t> space = d.WritableSpace(f.size());
  ASSERT_GE(space.size(), f.size());
  std::copy(f.begin(), f.end(), space.begin());
  d.Commit(f.size());
  std::span<const uint8_t> payload;
  ASSERT_EQ(d.TakeFrame(&payload, nullptr), FrameDecoder::Next::kFrame);
  EXPECT_EQ(Str(payload), "xyz");
}

TEST(FrameDecoderTest, ReleaseIfEmptyKeepsPartialFrames) {
  FrameDecoder d(1 << 20);
  std::vector<uint8_t> big = Frame(std::string(100000, 'b'));
  d.Feed(std::span<const uint8_t>(big).first(50000));
  d.ReleaseIfEmpty(1024);  // a partial frame is kept
  EXPECT_EQ(d.buffered(), 50000u);
  d.Feed(std::span<const uint8_t>(big).subspan(50000));
  std::span<const uint8_t> payload;
  ASSERT_EQ(d.TakeFrame(&payload, nullptr), FrameDecoder::Next::kFrame);
  EXPECT_EQ(payload.size(), 100000u);
  d.ReleaseIfEmpty(1024);
  EXPECT_EQ(d.buffered(), 0u);
  d.Feed(Frame("after"));
  ASSERT_EQ(d.TakeFrame(&payload, nullptr), FrameDecoder::Next::kFrame);
  EXPECT_EQ(Str(payload), "after");
}

TEST(AppendFrameTest, RoundTripsAMessage) {
  Request r;
  r.set_id(42);
  Tensor* t = r.mutable_infer()->add_inputs();
  t->set_name("x");
  t->set_data(std::string(100, '\1'));
  std::vector<uint8_t> out = {0xaa};  // appends after what is there
  ASSERT_TRUE(AppendFrame(r, 1 << 20, &out));
  EXPECT_EQ(out[0], 0xaa);
  FrameDecoder d(1 << 20);
  d.Feed(std::span<const uint8_t>(out).subspan(1));
  std::span<const uint8_t> payload;
  ASSERT_EQ(d.TakeFrame(&payload, nullptr), FrameDecoder::Next::kFrame);
  Request back;
  ASSERT_TRUE(
      back.ParseFromArray(payload.data(), static_cast<int>(payload.size())));
  EXPECT_EQ(back.id(), 42u);
  EXPECT_EQ(back.infer().inputs(0).data().size(), 100u);
}

TEST(AppendFrameTest, RefusesMessageOverTheLimit) {
  Request r;
  r.mutable_infer()->add_inputs()->set_data(std::string(200, 'x'));
  std::vector<uint8_t> out;
  EXPECT_FALSE(AppendFrame(r, 100, &out));
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace ternd::wire
