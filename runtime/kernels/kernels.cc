#include "runtime/kernels/kernels.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/ops.h"
#include "runtime/ternary_pack.h"

namespace ternd::runtime {
namespace {

// Best first: the order "auto" tries the 2-bit ones in.
const TernaryKernel* const kAll[] = {
#if defined(__x86_64__)
    &kTernaryKernelAvx512Vnni,    &kTernaryKernelAvxVnni,
    &kTernaryKernelAvx2,          &kTernaryKernelSsse3,
    &kTernaryKernelAvx512VnniTq1, &kTernaryKernelAvx2Tq1,
#elif defined(__aarch64__)
    &kTernaryKernelNeonDot,    &kTernaryKernelNeon,
    &kTernaryKernelNeonDotTq1, &kTernaryKernelNeonTq1,
#endif
    &kTernaryKernelRefTq1,        &kTernaryKernelRef,
};

// (2-bit variant, its 1.6-bit counterpart).
const TernaryKernel* const kTq1Pairs[][2] = {
#if defined(__x86_64__)
    {&kTernaryKernelAvx512Vnni, &kTernaryKernelAvx512VnniTq1},
    {&kTernaryKernelAvxVnni, &kTernaryKernelAvx2Tq1},
    {&kTernaryKernelAvx2, &kTernaryKernelAvx2Tq1},
#elif defined(__aarch64__)
    {&kTernaryKernelNeonDot, &kTernaryKernelNeonDotTq1},
    {&kTernaryKernelNeon, &kTernaryKernelNeonTq1},
#endif
    {&kTernaryKernelRef, &kTernaryKernelRefTq1},
};

struct AlignedBuffer {
  explicit AlignedBuffer(size_t bytes)
      : data(static_cast<uint8_t*>(
            std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64))) {
    std::memset(data, 0, (bytes + 63) / 64 * 64 + 64);
  }
  ~AlignedBuffer() { std::free(data); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  uint8_t* data;
};

}  // namespace

std::span<const TernaryKernel* const> AllTernaryKernels() { return kAll; }

bool IsTq1Kernel(const TernaryKernel& kernel) {
  for (const auto& pair : kTq1Pairs) {
    if (pair[1] == &kernel) return true;
  }
  return false;
}

const TernaryKernel* Tq1Counterpart(const TernaryKernel& kernel) {
  for (const auto& pair : kTq1Pairs) {
    if (pair[0] == &kernel || pair[1] == &kernel) return pair[1];
  }
  return nullptr;
}

Status SelfTestTernaryKernel(const TernaryKernel& kernel) {
  struct Shape {
    size_t n, k;
    int batch;
  };
  // Awkward sizes around block edges, with extreme activations.
  static constexpr Shape kShapes[] = {
      {1, 1, 1}, {67, 300, 3}, {33, 1029, 16}, {9, 641, 1}};
  uint32_t seed = 12345;
  auto next = [&seed]() {
    seed = seed * 1664525u + 1013904223u;
    return seed >> 8;
  };
  for (const Shape& s : kShapes) {
    std::vector<int8_t> w(s.n * s.k);
    for (int8_t& v : w)
      v = static_cast<int8_t>(static_cast<int>(next() % 3) - 1);
    std::vector<uint8_t> canonical(s.n * TernaryRowBytes(s.k));
    PackTernary(w.data(), s.n, s.k, canonical.data());
    const size_t stride = ActivationStride(s.k);
    AlignedBuffer q(stride * s.batch);
    std::vector<int32_t> sums(s.batch);
    for (int b = 0; b < s.batch; ++b) {
      int8_t* row = reinterpret_cast<int8_t*>(q.data) + b * stride;
      int32_t sum = 0;
      for (size_t c = 0; c < s.k; ++c) {
        uint32_t r = next() % 8;
        row[c] = r == 0 ? -128 : r == 1 ? 127 : static_cast<int8_t>(next());
        sum += row[c];
      }
      sums[b] = sum;
    }
    QuantizedActivations x{reinterpret_cast<const int8_t*>(q.data), stride,
                           sums.data(), s.batch, s.k};
    AlignedBuffer packed(kernel.packed_size(s.n, s.k));
    kernel.pack(canonical.data(), s.n, s.k, packed.data);
    std::vector<int32_t> got(s.n * s.batch), want(s.n * s.batch);
    kernel.gemm(packed.data, s.n, s.k, x, got.data(), s.n);
    ternary_gemm__ref(canonical.data(), s.n, s.k, x, want.data(), s.n);
    for (size_t i = 0; i < got.size(); ++i) {
      if (got[i] != want[i]) {
        return Internal(
            "ternary kernel '%s' failed its self-test on N=%zu K=%zu batch=%d: "
            "y[%zu] = %d, reference gives %d",
            kernel.name, s.n, s.k, s.batch, i, got[i], want[i]);
      }
    }
  }
  // The quantizer: bytes, row sums and scales as QuantizeActivations gives.
  for (size_t k : {size_t{1}, size_t{17}, size_t{300}}) {
    const int batch = 3;
    const size_t stride = ActivationStride(k);
    std::vector<float> x(batch * k);
    for (size_t i = 0; i < x.size(); ++i) {
      // Ties (x.5 after scaling), zeros and an all-zero row.
      x[i] = i < k ? 0.0f
                   : static_cast<float>(static_cast<int>(next() % 512) - 256) *
                         0.5f;
    }
    AlignedBuffer got_q(stride * batch), want_q(stride * batch);
    std::memset(got_q.data, 0x7f, stride * batch);
    std::vector<int32_t> got_sums(batch), want_sums(batch);
    std::vector<float> got_scale(batch), want_scale(batch);
    kernel.quantize(x.data(), k, batch, k,
                    reinterpret_cast<int8_t*>(got_q.data), stride,
                    got_sums.data(), got_scale.data());
    QuantizeActivations(x.data(), k, batch, k,
                        reinterpret_cast<int8_t*>(want_q.data), stride,
                        want_sums.data(), want_scale.data());
    if (std::memcmp(got_q.data, want_q.data, stride * batch) != 0 ||
        got_sums != want_sums ||
        std::memcmp(got_scale.data(), want_scale.data(), 4 * batch) != 0) {
      return Internal(
          "ternary kernel '%s' failed its self-test: its quantizer differs "
          "from QuantizeActivations at K=%zu",
          kernel.name, k);
    }
  }
  return Status::Ok();
}

Result<const TernaryKernel*> SelectTernaryKernel(std::string_view name) {
  if (name == "auto") {
    const char* forced = std::getenv(kKernelEnvVar);
    if (forced != nullptr && forced[0] != '\0' &&
        std::string_view(forced) != "auto") {
      name = forced;
    }
  }
  std::string available;
  for (const TernaryKernel* k : kAll) {
    if (!available.empty()) available += ", ";
    available += k->name;
    if (!k->supported()) {
      available += " (needs ";
      available += k->isa;
      available += ", which this CPU lacks)";
    }
  }
  if (name == "auto") {
    for (const TernaryKernel* k : kAll) {
      if (!k->supported() || IsTq1Kernel(*k)) continue;
      if (SelfTestTernaryKernel(*k).ok()) return k;
    }
    return Internal("no ternary kernel passed its self-test (have: %s)",
                    available.c_str());
  }
  for (const TernaryKernel* k : kAll) {
    if (name != k->name) continue;
    if (!k->supported()) {
      return FailedPrecondition(
          "ternary kernel '%s' needs %s, which this CPU lacks (available: %s)",
          k->name, k->isa, available.c_str());
    }
    TERND_RETURN_IF_ERROR(SelfTestTernaryKernel(*k));
    return k;
  }
  return InvalidArgument("unknown ternary kernel '%.*s' (available: auto, %s)",
                         static_cast<int>(name.size()), name.data(),
                         available.c_str());
}

}  // namespace ternd::runtime
