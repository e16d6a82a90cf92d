// Reading 16-bit PCM WAV files for `ternctl infer --wav`: the RIFF/WAVE
// container, its "fmt " and "data" chunks, nothing else. Every error names
// the origin (the file), the byte offset where the parser looked, and what
// it expected against what it found. Pure functions; any thread.
#ifndef TERND_TOOLS_TERNCTL_WAV_H_
#define TERND_TOOLS_TERNCTL_WAV_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace ternd::ternctl {

struct WavAudio {
  uint32_t sample_rate = 0;
  // The samples as their int16 values (-32768..32767) in float, as audio
  // models built on AUDIO_FEATURES take them.
  std::vector<float> samples;
};

// Parses a mono 16-bit PCM WAV (format tag 1, or WAVE_FORMAT_EXTENSIBLE
// with the PCM sub-format). Chunks other than "fmt " and "data" are skipped
// (LIST, fact, ...). Refuses, with the offset and what was found: a file
// that is not RIFF/WAVE, a chunk that runs past the end, a missing or short
// "fmt " chunk, no "data" chunk, a "data" chunk before "fmt ", compressed or
// float formats, more than one channel, a sample size other than 16 bits,
// an inconsistent block size, and a "data" size that is not a whole number
// of samples.
Result<WavAudio> ParseWav(std::span<const uint8_t> bytes,
                          const std::string& origin);

}  // namespace ternd::ternctl

#endif  // TERND_TOOLS_TERNCTL_WAV_H_
