// The audio front end op (AUDIO_FEATURES): PCM samples to log-mel frames.
//
// docs/model-format.md ("Audio features") is the definition; the NumPy
// reference (python/ternd/audio.py) follows it and tests/unit/
// audio_features_test.cc checks this code against it. Everything a call
// needs is prepared at Load (window, filterbank, the FFT plan): Compute
// allocates nothing.
//
// Thread-safety: an AudioFft keeps work buffers: one per worker. Plans and
// filterbanks are read-only after Load.
#ifndef TERND_RUNTIME_AUDIO_FEATURES_H_
#define TERND_RUNTIME_AUDIO_FEATURES_H_

#include <complex>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/status.h"
#include "runtime/model.pb.h"

namespace ternd::runtime {

// A real-input FFT (Eigen's FFT module, kissfft backend) with its plans
// and work buffers made by Prepare, so Forward allocates nothing.
class AudioFft {
 public:
  AudioFft();
  ~AudioFft();
  AudioFft(const AudioFft&) = delete;
  AudioFft& operator=(const AudioFft&) = delete;
  // Makes the plan for `n` points (a power of two >= 4). May allocate.
  void Prepare(uint32_t n);
  // out[0 .. n/2] = the DFT of in[0 .. n) (non-negative frequencies).
  // REQUIRES: Prepare(n) was called.
  void Forward(const float* in, uint32_t n, std::complex<float>* out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The geometry and tables of one AUDIO_FEATURES op, placed in the arena.
struct AudioPlan {
  uint32_t samples;  // input features
  uint32_t frames;   // 1 + (samples - frame_length) / frame_step
  uint32_t frame_length, frame_step, fft_length, bins;  // bins = fft/2 + 1
  uint32_t mel_bins;
  float log_offset;
  const float* window;    // [frame_length], periodic Hann
  const float* filters;   // [mel_bins, bins], triangular mel weights
  const uint32_t* first;  // [mel_bins]: first bin with a non-zero weight
  const uint32_t* end;    // [mel_bins]: one past the last such bin
  const float* gain;      // [mel_bins] or null
  const float* bias;      // [mel_bins] or null

  // Float32 scratch one call needs: a frame, the spectrum, the power.
  size_t scratch_bytes() const {
    return sizeof(float) * fft_length + sizeof(std::complex<float>) * bins +
           sizeof(float) * bins + 3 * 64;
  }
};

// Table sizes of a plan for `a` (window, filters, first, end), in bytes.
size_t AudioTableBytes(const model::AudioFeatures& a);
// Fills a plan for `a` reading `samples` inputs, its tables at `tables`
// (AudioTableBytes(a) bytes, 64-byte aligned).
AudioPlan MakeAudioPlan(const model::AudioFeatures& a, uint32_t samples,
                        uint8_t* tables, const float* gain, const float* bias);

// One sample: x [samples] -> y [frames, mel_bins].
void ComputeAudioFeatures(const AudioPlan& plan, const float* x, AudioFft& fft,
                          uint8_t* scratch, float* y);

}  // namespace ternd::runtime

#endif  // TERND_RUNTIME_AUDIO_FEATURES_H_
