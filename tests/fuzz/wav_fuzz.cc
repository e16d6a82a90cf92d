// Fuzzes the WAV reader of `ternctl infer --wav` (tools/ternctl/wav.h): any
// bytes either parse into 16-bit mono samples that fit in the input, or
// give an error that names the file.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "tools/ternctl/wav.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ternd;
  Result<ternctl::WavAudio> wav =
      ternctl::ParseWav(std::span<const uint8_t>(data, size), "fuzz.wav");
  if (wav.ok()) {
    if (wav->sample_rate == 0 || wav->samples.size() * 2 > size) {
      __builtin_trap();
    }
    for (float s : wav->samples) {
      if (!(s >= -32768.0f && s <= 32767.0f)) __builtin_trap();
    }
  } else if (std::strstr(wav.status().message(), "fuzz.wav") == nullptr) {
    __builtin_trap();
  }
  return 0;
}
