#include "runtime/gguf/gguf_decode.h"

#include <cmath>
#include <cstring>

#include "runtime/ternary_pack.h"

namespace ternd::gguf {
namespace {

using ull = unsigned long long;
using runtime::TernaryRowBytes;

uint16_t U16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

float BitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Sets weight `i` (row-major over the whole tensor) of a canonical packing
// to code `c` (0: -1, 1: 0, 2: +1).
void PutCode(TernaryTensor* out, uint64_t i, int c) {
  const uint64_t n = i / out->cols, k = i % out->cols;
  uint8_t& byte = out->packed[n * TernaryRowBytes(out->cols) + k / 4];
  byte = static_cast<uint8_t>((byte & ~(3u << (2 * (k % 4)))) |
                              (static_cast<unsigned>(c) << (2 * (k % 4))));
}

Status TensorError(const TensorInfo& t, Status s) {
  char ctx[128];
  std::snprintf(ctx, sizeof(ctx), "tensor '%.*s' (%s %s)",
                static_cast<int>(t.name.size()), t.name.data(),
                TensorTypeName(t.type), DimsString(t).c_str());
  return s.Prepend(ctx);
}

// Tracks the one scale of a TQ tensor across its blocks.
struct BlockScale {
  bool have = false;
  uint16_t bits = 0;
  uint64_t block = 0;

  // `all_zero`: every code of the block is 1 (weight 0).
  Status Check(uint16_t d, uint64_t b, bool all_zero) {
    if (all_zero) return Status::Ok();
    if (!have) {
      have = true;
      bits = d;
      block = b;
      return Status::Ok();
    }
    if (d == bits) return Status::Ok();
    return Unimplemented(
        "block %llu has scale %g but block %llu has %g; ternd keeps one "
        "scale per ternary tensor and refuses differing block scales",
        static_cast<ull>(b), static_cast<double>(HalfToFloat(d)),
        static_cast<ull>(block), static_cast<double>(HalfToFloat(bits)));
  }
  float Scale() const { return have ? HalfToFloat(bits) : 0.0f; }
};

Status DecodeI2S(const TensorInfo& t, TernaryTensor* out) {
  const uint8_t* p = t.data.data();
  for (uint64_t b = 0; b < t.elems / kI2SBlock; ++b) {
    const uint8_t* q = p + b * (kI2SBlock / 4);
    for (uint32_t j = 0; j < kI2SBlock; ++j) {
      // Byte j % 32 of the block holds elements j % 32 + 32 * g, g = 0..3,
      // the first in its top two bits.
      const int g = static_cast<int>(j / 32);
      const int c = (q[j % 32] >> (6 - 2 * g)) & 3;
      if (c == 3) {
        return InvalidArgument("element %llu has the invalid I2_S code 3",
                               static_cast<ull>(b * kI2SBlock + j));
      }
      PutCode(out, b * kI2SBlock + j, c);
    }
  }
  const uint8_t* s = p + t.elems / 4;
  const uint32_t bits = uint32_t{s[0]} | (uint32_t{s[1]} << 8) |
                        (uint32_t{s[2]} << 16) | (uint32_t{s[3]} << 24);
  out->scale = BitsToFloat(bits);
  return Status::Ok();
}

Status DecodeTQ2(const TensorInfo& t, TernaryTensor* out) {
  BlockScale scale;
  for (uint64_t b = 0; b < t.elems / 256; ++b) {
    const uint8_t* q = t.data.data() + b * 66;
    bool all_zero = true;
    for (int half = 0; half < 2; ++half) {
      for (int m = 0; m < 32; ++m) {
        for (int n = 0; n < 4; ++n) {
          const int c = (q[32 * half + m] >> (2 * n)) & 3;
          const uint64_t i = b * 256 + 128 * half + 32 * n + m;
          if (c == 3) {
            return InvalidArgument("element %llu has the invalid TQ2_0 code 3",
                                   static_cast<ull>(i));
          }
          all_zero &= c == 1;
          PutCode(out, i, c);
        }
      }
    }
    TERND_RETURN_IF_ERROR(scale.Check(U16(q + 64), b, all_zero));
  }
  out->scale = scale.Scale();
  return Status::Ok();
}

// The n-th most significant of the five base-3 digits held in byte q
// (q = ceil(v * 256 / 243) for the five-digit value v).
int Trit(uint8_t q, int n) {
  static constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};
  const uint8_t shifted = static_cast<uint8_t>(q * kPow3[n]);
  return (shifted * 3) >> 8;
}

Status DecodeTQ1(const TensorInfo& t, TernaryTensor* out) {
  BlockScale scale;
  for (uint64_t b = 0; b < t.elems / 256; ++b) {
    const uint8_t* q = t.data.data() + b * 54;
    const uint64_t base = b * 256;
    bool all_zero = true;
    auto put = [&](uint64_t i, int c) {
      all_zero &= c == 1;
      PutCode(out, base + i, c);
    };
    // qs[0..32): elements 32n + m; qs[32..48): 160 + 16n + m; qh[0..4):
    // 240 + 4n + j (four digits, the fifth is padding).
    for (int n = 0; n < 5; ++n) {
      for (int m = 0; m < 32; ++m) put(32 * n + m, Trit(q[m], n));
      for (int m = 0; m < 16; ++m) put(160 + 16 * n + m, Trit(q[32 + m], n));
    }
    for (int n = 0; n < 4; ++n) {
      for (int j = 0; j < 4; ++j) put(240 + 4 * n + j, Trit(q[48 + j], n));
    }
    TERND_RETURN_IF_ERROR(scale.Check(U16(q + 52), b, all_zero));
  }
  out->scale = scale.Scale();
  return Status::Ok();
}

void DecodeQ8_0(const uint8_t* p, uint64_t blocks, float* y) {
  for (uint64_t b = 0; b < blocks; ++b, p += 34, y += 32) {
    const float d = HalfToFloat(U16(p));
    for (int l = 0; l < 32; ++l) {
      y[l] = d * static_cast<float>(static_cast<int8_t>(p[2 + l]));
    }
  }
}

// The 6-bit scale and min of sub-block j of a Q4_K block.
void Q4KScaleMin(int j, const uint8_t* s, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

void DecodeQ4_K(const uint8_t* p, uint64_t blocks, float* y) {
  for (uint64_t b = 0; b < blocks; ++b, p += 144) {
    const float d = HalfToFloat(U16(p));
    const float dmin = HalfToFloat(U16(p + 2));
    const uint8_t* scales = p + 4;
    const uint8_t* q = p + 16;
    for (int j = 0; j < 8; j += 2, q += 32) {
      int sc, m;
      Q4KScaleMin(j, scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc);
      const float m1 = dmin * static_cast<float>(m);
      Q4KScaleMin(j + 1, scales, &sc, &m);
      const float d2 = d * static_cast<float>(sc);
      const float m2 = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) {
        const float v = d1 * static_cast<float>(q[l] & 0xF);
        *y++ = v - m1;
      }
      for (int l = 0; l < 32; ++l) {
        const float v = d2 * static_cast<float>(q[l] >> 4);
        *y++ = v - m2;
      }
    }
  }
}

void DecodeQ6_K(const uint8_t* p, uint64_t blocks, float* y) {
  for (uint64_t b = 0; b < blocks; ++b, p += 210) {
    const uint8_t* ql = p;
    const uint8_t* qh = p + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(p + 192);
    const float d = HalfToFloat(U16(p + 208));
    for (int half = 0; half < 2;
         ++half, ql += 64, qh += 32, sc += 8, y += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q[4] = {
            ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32,
            ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32,
            ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32,
            ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32,
        };
        for (int k = 0; k < 4; ++k) {
          const float ds = d * static_cast<float>(sc[is + 2 * k]);
          y[l + 32 * k] = ds * static_cast<float>(q[k]);
        }
      }
    }
  }
}

}  // namespace

float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  const uint32_t mant = h & 0x3FF;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in float.
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return BitsToFloat(sign | 0x7F800000u | (mant << 13));
  return BitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

float BFloat16ToFloat(uint16_t h) { return BitsToFloat(uint32_t{h} << 16); }

bool IsTernaryType(uint32_t type) {
  return type == static_cast<uint32_t>(TensorType::kI2_S) ||
         type == static_cast<uint32_t>(TensorType::kTQ2_0) ||
         type == static_cast<uint32_t>(TensorType::kTQ1_0);
}

bool IsFloatDecodableType(uint32_t type) {
  switch (static_cast<TensorType>(type)) {
    case TensorType::kF32:
    case TensorType::kF16:
    case TensorType::kBF16:
    case TensorType::kQ8_0:
    case TensorType::kQ6_K:
    case TensorType::kQ4_K:
      return true;
    default:
      return false;
  }
}

Result<TernaryTensor> DecodeTernary(const TensorInfo& t) {
  if (!IsTernaryType(t.type)) {
    return TensorError(
        t, Unimplemented("is not a ternary type (expected I2_S, TQ2_0 or "
                         "TQ1_0)"));
  }
  TernaryTensor out;
  out.cols = t.dims[0];
  out.rows = t.elems / t.dims[0];
  // Every code starts as 1 (weight 0), which is also the canonical padding.
  out.packed.assign(out.rows * TernaryRowBytes(out.cols), 0x55);
  Status s;
  switch (static_cast<TensorType>(t.type)) {
    case TensorType::kI2_S:
      s = DecodeI2S(t, &out);
      break;
    case TensorType::kTQ2_0:
      s = DecodeTQ2(t, &out);
      break;
    default:
      s = DecodeTQ1(t, &out);
      break;
  }
  if (s.ok() && (!std::isfinite(out.scale) || out.scale < 0)) {
    s = InvalidArgument("scale is %g, expected a finite value >= 0",
                        static_cast<double>(out.scale));
  }
  if (!s.ok()) return TensorError(t, s);
  return out;
}

Result<std::vector<float>> DecodeFloat(const TensorInfo& t) {
  if (!IsFloatDecodableType(t.type)) {
    return TensorError(
        t, Unimplemented("cannot be decoded to float (supported: F32, F16, "
                         "BF16, Q8_0, Q6_K, Q4_K)"));
  }
  std::vector<float> y(t.elems);
  const uint8_t* p = t.data.data();
  switch (static_cast<TensorType>(t.type)) {
    case TensorType::kF32:
      for (uint64_t i = 0; i < t.elems; ++i) {
        const uint8_t* e = p + 4 * i;
        y[i] = BitsToFloat(uint32_t{e[0]} | (uint32_t{e[1]} << 8) |
                           (uint32_t{e[2]} << 16) | (uint32_t{e[3]} << 24));
      }
      break;
    case TensorType::kF16:
      for (uint64_t i = 0; i < t.elems; ++i) y[i] = HalfToFloat(U16(p + 2 * i));
      break;
    case TensorType::kBF16:
      for (uint64_t i = 0; i < t.elems; ++i) {
        y[i] = BFloat16ToFloat(U16(p + 2 * i));
      }
      break;
    case TensorType::kQ8_0:
      DecodeQ8_0(p, t.elems / 32, y.data());
      break;
    case TensorType::kQ4_K:
      DecodeQ4_K(p, t.elems / 256, y.data());
      break;
    default:
      DecodeQ6_K(p, t.elems / 256, y.data());
      break;
  }
  for (uint64_t i = 0; i < t.elems; ++i) {
    if (!std::isfinite(y[i])) {
      return TensorError(
          t, InvalidArgument(
                 "element %llu (row %llu, column %llu) is %g, "
                 "expected a finite value",
                 static_cast<ull>(i), static_cast<ull>(i / t.dims[0]),
                 static_cast<ull>(i % t.dims[0]), static_cast<double>(y[i])));
    }
  }
  return y;
}

}  // namespace ternd::gguf
