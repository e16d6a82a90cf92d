#include "tools/ternctl/wav.h"

#include <cstring>

namespace ternd::ternctl {
namespace {

uint16_t U16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
uint32_t U32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

// A chunk id for messages: printable ASCII as is, anything else as '?'.
std::string Tag(const uint8_t* p) {
  std::string s(4, '?');
  for (int i = 0; i < 4; ++i) {
    if (p[i] >= 0x20 && p[i] < 0x7f) s[i] = static_cast<char>(p[i]);
  }
  return s;
}

constexpr uint16_t kFormatPcm = 1;
constexpr uint16_t kFormatExtensible = 0xFFFE;

}  // namespace

Result<WavAudio> ParseWav(std::span<const uint8_t> bytes,
                          const std::string& origin) {
  const char* o = origin.c_str();
  const size_t size = bytes.size();
  const uint8_t* b = bytes.data();
  if (size < 12) {
    return InvalidArgument(
        "%s: %zu bytes; a WAV file starts with a 12-byte RIFF/WAVE header", o,
        size);
  }
  if (std::memcmp(b, "RIFF", 4) != 0 || std::memcmp(b + 8, "WAVE", 4) != 0) {
    return InvalidArgument(
        "%s: offset 0: expected a RIFF/WAVE header, found '%s' ... '%s'", o,
        Tag(b).c_str(), Tag(b + 8).c_str());
  }
  bool have_fmt = false;
  uint32_t rate = 0;
  size_t pos = 12;
  while (pos < size) {
    if (size - pos < 8) {
      return InvalidArgument(
          "%s: offset %zu: truncated chunk header (%zu bytes left, 8 needed)",
          o, pos, size - pos);
    }
    const std::string tag = Tag(b + pos);
    const uint32_t len = U32(b + pos + 4);
    const size_t body = pos + 8;
    const bool is_data = std::memcmp(b + pos, "data", 4) == 0;
    if (len > size - body) {
      return InvalidArgument(
          "%s: offset %zu: chunk '%s' declares %u bytes, but only %zu follow "
          "(truncated file?)",
          o, pos, tag.c_str(), len, size - body);
    }
    if (std::memcmp(b + pos, "fmt ", 4) == 0) {
      if (len < 16) {
        return InvalidArgument(
            "%s: offset %zu: 'fmt ' chunk of %u bytes, expected at least 16", o,
            pos, len);
      }
      const uint8_t* f = b + body;
      uint16_t format = U16(f);
      const uint16_t channels = U16(f + 2);
      rate = U32(f + 4);
      const uint16_t block = U16(f + 12);
      const uint16_t bits = U16(f + 14);
      if (format == kFormatExtensible) {
        // cbSize(2) valid bits(2) channel mask(4), then the sub-format GUID
        // whose first two bytes are the format tag.
        if (len < 40) {
          return InvalidArgument(
              "%s: offset %zu: WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk of %u "
              "bytes, expected 40",
              o, pos, len);
        }
        format = U16(f + 24);
      }
      if (format != kFormatPcm) {
        return InvalidArgument(
            "%s: offset %zu: audio format %u (%s), expected 1 (integer PCM)", o,
            body, format, format == 3 ? "IEEE float" : "compressed or unknown");
      }
      if (channels != 1) {
        return InvalidArgument(
            "%s: offset %zu: %u channels, expected 1 (mono); mix the file "
            "down first (e.g. sox IN.wav -c 1 OUT.wav)",
            o, body + 2, channels);
      }
      if (bits != 16) {
        return InvalidArgument(
            "%s: offset %zu: %u bits per sample, expected 16-bit PCM", o,
            body + 14, bits);
      }
      if (block != 2) {
        return InvalidArgument(
            "%s: offset %zu: block align %u, expected 2 (one 16-bit mono "
            "sample)",
            o, body + 12, block);
      }
      if (rate == 0) {
        return InvalidArgument("%s: offset %zu: sample rate 0", o, body + 4);
      }
      have_fmt = true;
    } else if (is_data) {
      if (!have_fmt) {
        return InvalidArgument(
            "%s: offset %zu: 'data' chunk before any 'fmt ' chunk", o, pos);
      }
      if (len % 2 != 0) {
        return InvalidArgument(
            "%s: offset %zu: 'data' chunk of %u bytes, not a whole number of "
            "16-bit samples",
            o, pos, len);
      }
      WavAudio audio;
      audio.sample_rate = rate;
      audio.samples.resize(len / 2);
      for (size_t i = 0; i < audio.samples.size(); ++i) {
        audio.samples[i] = static_cast<int16_t>(U16(b + body + 2 * i));
      }
      return audio;
    }
    pos = body + len + (len & 1);  // chunks are padded to even sizes
  }
  return InvalidArgument("%s: no 'data' chunk in %zu bytes%s", o, size,
                         have_fmt ? "" : " (and no 'fmt ' chunk)");
}

}  // namespace ternd::ternctl
