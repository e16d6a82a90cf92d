#include "runtime/audio_features.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unsupported/Eigen/FFT>

namespace ternd::runtime {

struct AudioFft::Impl {
  Eigen::FFT<float> fft;
};

AudioFft::AudioFft() : impl_(std::make_unique<Impl>()) {
  impl_->fft.SetFlag(Eigen::FFT<float>::HalfSpectrum);
}

AudioFft::~AudioFft() = default;

void AudioFft::Prepare(uint32_t n) {
  // One transform makes the plan, the twiddles and the work buffers for n.
  std::vector<float> in(n, 0.0f);
  std::vector<std::complex<float>> out(n / 2 + 1);
  impl_->fft.fwd(out.data(), in.data(), static_cast<Eigen::Index>(n));
}

void AudioFft::Forward(const float* in, uint32_t n, std::complex<float>* out) {
  impl_->fft.fwd(out, in, static_cast<Eigen::Index>(n));
}

namespace {

size_t Align64(size_t v) { return (v + 63) / 64 * 64; }

double HzToMel(double hz) { return 2595.0 * std::log10(1.0 + hz / 700.0); }
double MelToHz(double mel) {
  return 700.0 * (std::pow(10.0, mel / 2595.0) - 1.0);
}

}  // namespace

size_t AudioTableBytes(const model::AudioFeatures& a) {
  const size_t bins = a.fft_length() / 2 + 1;
  return Align64(sizeof(float) * a.frame_length()) +
         Align64(sizeof(float) * a.mel_bins() * bins) +
         2 * Align64(sizeof(uint32_t) * a.mel_bins());
}

AudioPlan MakeAudioPlan(const model::AudioFeatures& a, uint32_t samples,
                        uint8_t* tables, const float* gain, const float* bias) {
  AudioPlan p{};
  p.samples = samples;
  p.frame_length = a.frame_length();
  p.frame_step = a.frame_step();
  p.frames = 1 + (samples - a.frame_length()) / a.frame_step();
  p.fft_length = a.fft_length();
  p.bins = a.fft_length() / 2 + 1;
  p.mel_bins = a.mel_bins();
  p.log_offset = a.log_offset();
  p.gain = gain;
  p.bias = bias;
  float* window = reinterpret_cast<float*>(tables);
  tables += Align64(sizeof(float) * p.frame_length);
  float* filters = reinterpret_cast<float*>(tables);
  tables += Align64(sizeof(float) * p.mel_bins * p.bins);
  uint32_t* first = reinterpret_cast<uint32_t*>(tables);
  tables += Align64(sizeof(uint32_t) * p.mel_bins);
  uint32_t* end = reinterpret_cast<uint32_t*>(tables);
  // Periodic Hann: w[i] = 0.5 - 0.5 cos(2 pi i / frame_length), in double.
  const double kPi = 3.14159265358979323846;
  for (uint32_t i = 0; i < p.frame_length; ++i) {
    window[i] = static_cast<float>(
        0.5 - 0.5 * std::cos(2.0 * kPi * i / p.frame_length));
  }
  // mel_bins + 2 edges equally spaced in mel from lower_hz to upper_hz;
  // filter m rises from edge m to m + 1 and falls to m + 2; bin k is at
  // k * sample_rate / fft_length Hz. Weights in double, stored as float.
  const double lo = HzToMel(a.lower_hz()), hi = HzToMel(a.upper_hz());
  for (uint32_t m = 0; m < p.mel_bins; ++m) {
    const double left = MelToHz(lo + (hi - lo) * m / (p.mel_bins + 1));
    const double center = MelToHz(lo + (hi - lo) * (m + 1) / (p.mel_bins + 1));
    const double right = MelToHz(lo + (hi - lo) * (m + 2) / (p.mel_bins + 1));
    first[m] = p.bins;
    end[m] = 0;
    for (uint32_t k = 0; k < p.bins; ++k) {
      const double f = static_cast<double>(k) * a.sample_rate() / p.fft_length;
      const double up = (f - left) / (center - left);
      const double down = (right - f) / (right - center);
      const double w = std::max(0.0, std::min(up, down));
      filters[static_cast<size_t>(m) * p.bins + k] = static_cast<float>(w);
      if (w > 0) {
        first[m] = std::min(first[m], k);
        end[m] = k + 1;
      }
    }
    if (end[m] == 0) first[m] = 0;  // an empty filter: energy 0
  }
  p.window = window;
  p.filters = filters;
  p.first = first;
  p.end = end;
  return p;
}

void ComputeAudioFeatures(const AudioPlan& p, const float* x, AudioFft& fft,
                          uint8_t* scratch, float* y) {
  float* frame = reinterpret_cast<float*>(scratch);
  auto* spectrum = reinterpret_cast<std::complex<float>*>(
      scratch + Align64(sizeof(float) * p.fft_length));
  float* power =
      reinterpret_cast<float*>(scratch + Align64(sizeof(float) * p.fft_length) +
                               Align64(sizeof(std::complex<float>) * p.bins));
  std::memset(frame + p.frame_length, 0,
              sizeof(float) * (p.fft_length - p.frame_length));
  for (uint32_t t = 0; t < p.frames; ++t) {
    const float* xt = x + static_cast<size_t>(t) * p.frame_step;
    for (uint32_t i = 0; i < p.frame_length; ++i)
      frame[i] = xt[i] * p.window[i];
    fft.Forward(frame, p.fft_length, spectrum);
    for (uint32_t k = 0; k < p.bins; ++k) {
      const float re = spectrum[k].real(), im = spectrum[k].imag();
      power[k] = re * re + im * im;
    }
    float* yt = y + static_cast<size_t>(t) * p.mel_bins;
    for (uint32_t m = 0; m < p.mel_bins; ++m) {
      const float* w = p.filters + static_cast<size_t>(m) * p.bins;
      float e = 0.0f;
      for (uint32_t k = p.first[m]; k < p.end[m]; ++k) e += w[k] * power[k];
      float v = std::log(e + p.log_offset);
      if (p.gain) v *= p.gain[m];
      if (p.bias) v += p.bias[m];
      yt[m] = v;
    }
  }
}

}  // namespace ternd::runtime
