// The WAV reader of `ternctl infer --wav` (tools/ternctl/wav.h): what it
// takes and, for each refusal, the offset and the expected/found values in
// the message. The daemon round trip is in tests/daemon/ternctl_daemon_test.
#include "tools/ternctl/wav.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ternd::ternctl {
namespace {

using ::testing::HasSubstr;

void Put16(std::string* s, uint16_t v) {
  s->push_back(static_cast<char>(v & 255));
  s->push_back(static_cast<char>(v >> 8));
}
void Put32(std::string* s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s->push_back(static_cast<char>(v >> (8 * i)));
}

struct Fmt {
  uint16_t format = 1, channels = 1;
  uint32_t rate = 16000;
  uint16_t block = 2, bits = 16;
  bool extensible = false;
  uint16_t sub_format = 1;
};

std::string Chunk(const char* id, const std::string& body) {
  std::string c(id, 4);
  Put32(&c, static_cast<uint32_t>(body.size()));
  c += body;
  if (body.size() % 2) c.push_back('\0');
  return c;
}

std::string FmtChunk(const Fmt& f) {
  std::string b;
  Put16(&b, f.extensible ? 0xFFFE : f.format);
  Put16(&b, f.channels);
  Put32(&b, f.rate);
  Put32(&b, f.rate * f.block);
  Put16(&b, f.block);
  Put16(&b, f.bits);
  if (f.extensible) {
    Put16(&b, 22);
    Put16(&b, f.bits);
    Put32(&b, 4);
    Put16(&b, f.sub_format);
    b += std::string("\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71",
                     14);
  }
  return Chunk("fmt ", b);
}

std::string Riff(const std::string& chunks) {
  std::string w = "RIFF";
  Put32(&w, static_cast<uint32_t>(4 + chunks.size()));
  return w + "WAVE" + chunks;
}

std::string Pcm(std::vector<int16_t> v) {
  std::string s;
  for (int16_t x : v) Put16(&s, static_cast<uint16_t>(x));
  return s;
}

Result<WavAudio> Parse(const std::string& bytes) {
  return ParseWav(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()),
                               bytes.size()),
      "in.wav");
}

TEST(WavTest, ReadsMono16BitPcmAsInt16Values) {
  Result<WavAudio> w =
      Parse(Riff(FmtChunk({}) + Chunk("data", Pcm({0, 1, -1, 32767, -32768}))));
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_EQ(w->sample_rate, 16000u);
  EXPECT_EQ(w->samples, (std::vector<float>{0, 1, -1, 32767, -32768}));
}

TEST(WavTest, SkipsOtherChunksWithTheirPadding) {
  Fmt f;
  f.rate = 8000;
  Result<WavAudio> w =
      Parse(Riff(Chunk("LIST", "INFOabc") + FmtChunk(f) +
                 Chunk("fact", "1234") + Chunk("data", Pcm({5, -5}))));
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_EQ(w->sample_rate, 8000u);
  EXPECT_EQ(w->samples, (std::vector<float>{5, -5}));
}

TEST(WavTest, AcceptsExtensiblePcmOnly) {
  Fmt f;
  f.extensible = true;
  Result<WavAudio> w = Parse(Riff(FmtChunk(f) + Chunk("data", Pcm({7}))));
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_EQ(w->samples, std::vector<float>{7});
  f.sub_format = 3;  // IEEE float
  w = Parse(Riff(FmtChunk(f) + Chunk("data", Pcm({7}))));
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(),
              HasSubstr("in.wav: offset 20: audio format 3 (IEEE float), "
                        "expected 1 (integer PCM)"));
}

TEST(WavTest, RefusalsNameTheFileOffsetAndWhatWasFound) {
  Fmt stereo, bits8, bits24, block, zero_rate;
  stereo.channels = 2;
  stereo.block = 4;
  bits8.bits = 8;
  bits8.block = 1;
  bits24.bits = 24;
  block.block = 3;
  zero_rate.rate = 0;
  const std::string data = Chunk("data", Pcm({1, 2}));
  const std::string good = Riff(FmtChunk({}) + data);
  struct Case {
    std::string bytes;
    const char* says;
  } cases[] = {
      {"", "in.wav: 0 bytes; a WAV file starts with a 12-byte RIFF/WAVE"},
      {std::string("RIFF\x10\0\0\0AVI LIST", 16),
       "in.wav: offset 0: expected a RIFF/WAVE "
       "header, found 'RIFF' ... 'AVI '"},
      {Riff(FmtChunk(stereo) + data), "offset 22: 2 channels, expected 1"},
      {Riff(FmtChunk(bits8) + data),
       "offset 34: 8 bits per sample, expected 16"},
      {Riff(FmtChunk(bits24) + data), "24 bits per sample, expected 16"},
      {Riff(FmtChunk(block) + data), "offset 32: block align 3, expected 2"},
      {Riff(FmtChunk(zero_rate) + data), "offset 24: sample rate 0"},
      {Riff(data + FmtChunk({})), "offset 12: 'data' chunk before any 'fmt '"},
      {Riff(FmtChunk({})), "in.wav: no 'data' chunk in 36 bytes"},
      {Riff(""), "no 'data' chunk in 12 bytes (and no 'fmt ' chunk)"},
      {good.substr(0, good.size() - 1),
       "offset 36: chunk 'data' declares 4 bytes, but only 3 follow"},
      {good.substr(0, 40), "offset 36: truncated chunk header (4 bytes left"},
      {Riff(Chunk("fmt ", "12345678")),
       "'fmt ' chunk of 8 bytes, expected at "
       "least 16"},
      {Riff(FmtChunk({}) + Chunk("data", "abc")),
       "'data' chunk of 3 bytes, not a whole number of 16-bit samples"},
  };
  for (const Case& c : cases) {
    Result<WavAudio> w = Parse(c.bytes);
    ASSERT_FALSE(w.ok()) << c.says;
    EXPECT_THAT(w.status().message(), HasSubstr(c.says));
    EXPECT_THAT(w.status().message(), HasSubstr("in.wav"));
  }
}

}  // namespace
}  // namespace ternd::ternctl
