// GGUF import: the reader, the architecture checks and the decoders, on
// files made at test time by python/ternd/gguf_writer.py (random weights,
// with the values a correct decoder must produce written next to them) and
// on hostile files built byte by byte here.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "base/file.h"
#include "runtime/gguf/gguf_arch.h"
#include "runtime/gguf/gguf_decode.h"
#include "runtime/gguf/gguf_reader.h"
#include "runtime/ternary_pack.h"
#include "tests/support/test_env.h"

namespace ternd::gguf {
namespace {

using ternd::testing::TempDir;

// Runs the writer with `args`; the file it writes is returned.
std::vector<uint8_t> Write(const TempDir& dir, const std::string& name,
                           const std::string& args,
                           const std::string& expected_dir = "") {
  const std::string out = dir / name;
  std::string cmd = std::string(PYTHON_PATH) + " " + GGUF_WRITER_PATH + " " +
                    args + " -o " + out;
  if (!expected_dir.empty()) cmd += " --expected " + expected_dir;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  Result<std::vector<uint8_t>> bytes = ReadFile(out);
  EXPECT_TRUE(bytes.ok()) << bytes.status().message();
  return bytes.ok() ? *bytes : std::vector<uint8_t>();
}

template <typename T>
std::vector<T> ReadRaw(const std::string& path) {
  Result<std::vector<uint8_t>> bytes = ReadFile(path);
  EXPECT_TRUE(bytes.ok()) << bytes.status().message();
  std::vector<T> out(bytes.ok() ? bytes->size() / sizeof(T) : 0);
  if (!out.empty())
    std::memcpy(out.data(), bytes->data(), out.size() * sizeof(T));
  return out;
}

std::string Message(const Status& s) { return s.message(); }

// ---------------------------------------------------------------------------
// Decoders, bit for bit against the writer's expected values.

class GgufTypesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bytes_ = Write(dir_, "types.gguf", "--types", dir_ / "expected");
    Result<GgufFile> f = GgufFile::Parse(bytes_, "types.gguf");
    ASSERT_TRUE(f.ok()) << f.status().message();
    file_.emplace(std::move(*f));
  }
  std::string Expected(const std::string& file) const {
    return dir_ / ("expected/" + file);
  }
  TempDir dir_;
  std::vector<uint8_t> bytes_;
  std::optional<GgufFile> file_;
};

TEST_F(GgufTypesTest, HeaderAndTensorInfos) {
  EXPECT_EQ(file_->version(), 3u);
  EXPECT_EQ(file_->alignment(), 32u);
  EXPECT_EQ(file_->data_offset() % 32, 0u);
  ASSERT_EQ(file_->tensors().size(), 9u);
  const TensorInfo* q4 = file_->FindTensor("q4_k");
  ASSERT_NE(q4, nullptr);
  EXPECT_EQ(q4->type, static_cast<uint32_t>(TensorType::kQ4_K));
  EXPECT_EQ(q4->n_dims, 2);
  EXPECT_EQ(q4->dims[0], 256u);
  EXPECT_EQ(q4->dims[1], 2u);
  EXPECT_EQ(q4->size, 2u * 144);
  const TensorInfo* i2 = file_->FindTensor("i2_s");
  ASSERT_NE(i2, nullptr);
  EXPECT_EQ(i2->size, 128u * 3 / 4 + 32);
  EXPECT_EQ(DimsString(*i2), "[128, 3]");
}

TEST_F(GgufTypesTest, FloatDecodersAreBitExact) {
  for (const char* name : {"f32", "f16", "bf16", "q8_0", "q4_k", "q6_k"}) {
    SCOPED_TRACE(name);
    const TensorInfo* t = file_->FindTensor(name);
    ASSERT_NE(t, nullptr);
    Result<std::vector<float>> got = DecodeFloat(*t);
    ASSERT_TRUE(got.ok()) << got.status().message();
    std::vector<float> want =
        ReadRaw<float>(Expected(std::string(name) + ".f32"));
    ASSERT_EQ(got->size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      uint32_t a, b;
      std::memcpy(&a, &(*got)[i], 4);
      std::memcpy(&b, &want[i], 4);
      ASSERT_EQ(a, b) << "element " << i << ": " << (*got)[i] << " vs "
                      << want[i];
    }
  }
}

TEST_F(GgufTypesTest, TernaryDecodersAreBitExact) {
  for (const char* name : {"i2_s", "tq2_0", "tq1_0"}) {
    SCOPED_TRACE(name);
    const TensorInfo* t = file_->FindTensor(name);
    ASSERT_NE(t, nullptr);
    Result<TernaryTensor> got = DecodeTernary(*t);
    ASSERT_TRUE(got.ok()) << got.status().message();
    std::vector<int8_t> codes =
        ReadRaw<int8_t>(Expected(std::string(name) + ".codes"));
    std::vector<float> scale =
        ReadRaw<float>(Expected(std::string(name) + ".scale"));
    std::vector<float> values =
        ReadRaw<float>(Expected(std::string(name) + ".f32"));
    ASSERT_EQ(scale.size(), 1u);
    EXPECT_EQ(std::memcmp(&got->scale, &scale[0], 4), 0)
        << got->scale << " vs " << scale[0];
    ASSERT_EQ(got->rows * got->cols, codes.size());
    std::vector<int8_t> unpacked(codes.size());
    size_t bad_row = 0, bad_col = 0;
    ASSERT_TRUE(runtime::UnpackTernary(got->packed.data(), got->rows, got->cols,
                                       unpacked.data(), &bad_row, &bad_col))
        << bad_row << "," << bad_col;
    EXPECT_EQ(unpacked, codes);
    for (size_t i = 0; i < codes.size(); ++i) {
      const float v = static_cast<float>(unpacked[i]) * got->scale;
      ASSERT_EQ(std::memcmp(&v, &values[i], 4), 0) << "element " << i;
    }
  }
}

TEST_F(GgufTypesTest, DecoderRefusesTheOtherKind) {
  Result<TernaryTensor> t = DecodeTernary(*file_->FindTensor("f16"));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(Message(t.status()).find("'f16' (F16 [8, 3])"), std::string::npos)
      << t.status().message();
  Result<std::vector<float>> f = DecodeFloat(*file_->FindTensor("tq2_0"));
  ASSERT_FALSE(f.ok());
  EXPECT_NE(Message(f.status()).find("cannot be decoded to float"),
            std::string::npos);
}

TEST_F(GgufTypesTest, DifferingBlockScalesAreRefused) {
  const TensorInfo* t = file_->FindTensor("tq2_0");
  std::vector<uint8_t> bytes = bytes_;
  // Block 1's fp16 scale: 1.0 (0x3c00), unlike the random one of block 0.
  bytes[t->offset + 66 + 64] = 0x00;
  bytes[t->offset + 66 + 65] = 0x3c;
  Result<GgufFile> f = GgufFile::Parse(bytes, "types.gguf");
  ASSERT_TRUE(f.ok());
  Result<TernaryTensor> d = DecodeTernary(*f->FindTensor("tq2_0"));
  ASSERT_FALSE(d.ok());
  EXPECT_NE(Message(d.status()).find("block 1 has scale 1 but block 0"),
            std::string::npos)
      << d.status().message();
}

TEST_F(GgufTypesTest, AllZeroBlocksMayCarryAnyScale) {
  const TensorInfo* t = file_->FindTensor("tq2_0");
  std::vector<uint8_t> bytes = bytes_;
  // Block 1: every code 1 (weight 0), scale 1.0.
  std::memset(&bytes[t->offset + 66], 0x55, 64);
  bytes[t->offset + 66 + 64] = 0x00;
  bytes[t->offset + 66 + 65] = 0x3c;
  Result<GgufFile> f = GgufFile::Parse(bytes, "types.gguf");
  ASSERT_TRUE(f.ok());
  Result<TernaryTensor> d = DecodeTernary(*f->FindTensor("tq2_0"));
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->scale, DecodeTernary(*t)->scale);
  EXPECT_NE(d->scale, 1.0f);
}

TEST(GgufDecodeTest, HalfAndBFloat16) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
  EXPECT_EQ(HalfToFloat(0xfc00), -INFINITY);
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  EXPECT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0xc0a0), -5.0f);
}

TEST_F(GgufTypesTest, InvalidTernaryCodesAreRefused) {
  std::vector<uint8_t> bytes = bytes_;
  bytes[file_->FindTensor("i2_s")->offset + 5] = 0xFF;
  bytes[file_->FindTensor("tq2_0")->offset + 7] = 0xFF;
  Result<GgufFile> f = GgufFile::Parse(bytes, "types.gguf");
  ASSERT_TRUE(f.ok());
  Result<TernaryTensor> i2 = DecodeTernary(*f->FindTensor("i2_s"));
  ASSERT_FALSE(i2.ok());
  EXPECT_NE(Message(i2.status()).find("element 5 has the invalid I2_S code 3"),
            std::string::npos)
      << i2.status().message();
  Result<TernaryTensor> tq = DecodeTernary(*f->FindTensor("tq2_0"));
  ASSERT_FALSE(tq.ok());
  EXPECT_NE(Message(tq.status()).find("invalid TQ2_0 code 3"),
            std::string::npos);
}

TEST_F(GgufTypesTest, MetadataOfEveryType) {
  const GgufFile& f = *file_;
  EXPECT_EQ(*f.GetUint("ternd.test.u8"), 200u);
  EXPECT_EQ(*f.GetU32("ternd.test.u16"), 60000u);
  EXPECT_EQ(*f.GetU32("ternd.test.u32"), 4000000000u);
  EXPECT_EQ(*f.GetUint("ternd.test.u64"), (uint64_t{1} << 63) + 5);
  EXPECT_EQ(f.FindKey("ternd.test.i8")->value.i, -100);
  EXPECT_EQ(f.FindKey("ternd.test.i16")->value.i, -30000);
  EXPECT_EQ(f.FindKey("ternd.test.i32")->value.i, -2000000000);
  EXPECT_EQ(f.FindKey("ternd.test.i64")->value.i, -(int64_t{1} << 62));
  EXPECT_EQ(*f.GetF32("ternd.test.f32"), 0.25f);
  EXPECT_EQ(*f.GetF32("ternd.test.f64"), 1.5f);
  EXPECT_TRUE(*f.GetBool("ternd.test.bool"));
  EXPECT_EQ(*f.GetString("ternd.test.string"), "h\xc3\xa9llo");
  std::vector<std::string_view> strings =
      *f.GetStringArray("ternd.test.strings");
  EXPECT_EQ(strings, (std::vector<std::string_view>{"a", "", "bc"}));
  EXPECT_EQ(*f.GetFloatArray("ternd.test.floats"),
            (std::vector<double>{0.5, -2.0}));
  EXPECT_EQ(*f.GetArrayLength("ternd.test.nested"), 2u);
  EXPECT_EQ(f.FindKey("ternd.test.nested")->value.elem_type, ValueType::kArray);

  Result<uint32_t> neg = f.GetU32("ternd.test.i8");
  ASSERT_FALSE(neg.ok());
  EXPECT_NE(Message(neg.status()).find("key 'ternd.test.i8'"),
            std::string::npos);
  Result<std::string_view> wrong = f.GetString("ternd.test.floats");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(Message(wrong.status()).find("is array of f32, expected string"),
            std::string::npos)
      << wrong.status().message();
  Result<uint32_t> big = f.GetU32("ternd.test.u64");
  EXPECT_FALSE(big.ok());
  Result<float> missing = f.GetF32("ternd.test.nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST_F(GgufTypesTest, EveryTruncationIsAnErrorNotACrash) {
  uint64_t end_of_data = 0;
  for (const TensorInfo& t : file_->tensors()) {
    end_of_data = std::max(end_of_data, t.offset + t.size);
  }
  for (size_t n = 0; n < bytes_.size(); ++n) {
    std::vector<uint8_t> prefix(bytes_.begin(), bytes_.begin() + n);
    Result<GgufFile> f = GgufFile::Parse(std::move(prefix), "cut.gguf");
    if (n < end_of_data) {
      ASSERT_FALSE(f.ok()) << "prefix of " << n << " bytes parsed";
      ASSERT_EQ(Message(f.status()).rfind("cut.gguf: ", 0), 0u)
          << f.status().message();
    }
  }
}

TEST_F(GgufTypesTest, EverySingleByteCorruptionIsHandled) {
  // Header and infos: flip each byte to 0xFF; parse and, when it still
  // parses, decode everything. Only crashes (or sanitizer reports) fail.
  const size_t header = static_cast<size_t>(file_->data_offset());
  for (size_t i = 0; i < header; ++i) {
    std::vector<uint8_t> bytes = bytes_;
    bytes[i] ^= 0xFF;
    Result<GgufFile> f = GgufFile::Parse(std::move(bytes), "x.gguf");
    if (!f.ok()) {
      ASSERT_GT(std::strlen(f.status().message()), 10u);
      continue;
    }
    for (const TensorInfo& t : f->tensors()) {
      if (IsTernaryType(t.type)) DecodeTernary(t).status().IgnoreError();
      if (IsFloatDecodableType(t.type)) DecodeFloat(t).status().IgnoreError();
    }
    ValidateModel(*f).status().IgnoreError();
  }
}

// ---------------------------------------------------------------------------
// Hostile files built byte by byte.

class Bytes {
 public:
  Bytes& U32(uint32_t v) { return Raw(&v, 4); }
  Bytes& U64(uint64_t v) { return Raw(&v, 8); }
  Bytes& Str(std::string_view s) {
    U64(s.size());
    return Raw(s.data(), s.size());
  }
  Bytes& Raw(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    v_.insert(v_.end(), b, b + n);
    return *this;
  }
  Bytes& Header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    Raw("GGUF", 4);
    U32(version);
    U64(tensors);
    return U64(kvs);
  }
  // A tensor info: name, dims, type, offset.
  Bytes& Tensor(std::string_view name, std::vector<uint64_t> dims,
                uint32_t type, uint64_t offset) {
    Str(name);
    U32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) U64(d);
    U32(type);
    return U64(offset);
  }
  Bytes& PadTo(size_t alignment) {
    while (v_.size() % alignment) v_.push_back(0);
    return *this;
  }
  Bytes& Zeros(size_t n) {
    v_.resize(v_.size() + n);
    return *this;
  }
  std::vector<uint8_t> Take() { return v_; }

 private:
  std::vector<uint8_t> v_;
};

std::string ParseError(std::vector<uint8_t> bytes) {
  Result<GgufFile> f = GgufFile::Parse(std::move(bytes), "bad.gguf");
  return f.ok() ? "(parsed)" : f.status().message();
}

#define EXPECT_ERROR(bytes, text)                          \
  do {                                                     \
    const std::string msg_ = ParseError(bytes);            \
    EXPECT_NE(msg_.find(text), std::string::npos) << msg_; \
    EXPECT_EQ(msg_.rfind("bad.gguf: ", 0), 0u) << msg_;    \
  } while (0)

TEST(GgufHostileTest, SmallestValidFile) {
  Result<GgufFile> f = GgufFile::Parse(Bytes().Header(0, 0).Take(), "e.gguf");
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->version(), 3u);
  Result<GgufFile> v2 =
      GgufFile::Parse(Bytes().Header(0, 0, 2).Take(), "e.gguf");
  EXPECT_TRUE(v2.ok());
}

TEST(GgufHostileTest, MagicAndVersion) {
  EXPECT_ERROR(Bytes().Raw("GGML", 4).U32(3).U64(0).U64(0).Take(),
               "not a GGUF file");
  EXPECT_ERROR(Bytes().Header(0, 0, 1).Take(), "GGUF version 1");
  EXPECT_ERROR(Bytes().Header(0, 0, 0x03000000).Take(), "big-endian");
  EXPECT_ERROR(Bytes().Raw("GGUF", 4).Take(), "shorter than the 24-byte");
}

TEST(GgufHostileTest, HugeCountsAreRefusedBeforeAllocating) {
  EXPECT_ERROR(Bytes().Header(uint64_t{1} << 60, 0).Take(), "tensor count");
  EXPECT_ERROR(Bytes().Header(0, ~uint64_t{0}).Take(), "metadata count");
  EXPECT_ERROR(
      Bytes().Header(0, 1).Str("k").U32(9).U32(4).U64(uint64_t{1} << 61).Take(),
      "array at offset");
  EXPECT_ERROR(Bytes().Header(0, 1).Str("k").U32(8).U64(~uint64_t{0}).Take(),
               "string at offset");
  EXPECT_ERROR(Bytes().Header(0, 1).U64(uint64_t{1} << 40).Zeros(16).Take(),
               "key at offset 24 has length");
}

TEST(GgufHostileTest, KeysAndValues) {
  EXPECT_ERROR(
      Bytes().Header(0, 2).Str("a").U32(4).U32(1).Str("a").U32(4).U32(2).Take(),
      "key 'a' at offset 41 appears twice");
  EXPECT_ERROR(Bytes().Header(0, 1).Str("a").U32(13).U32(0).Take(),
               "value type at offset 33 is 13");
  EXPECT_ERROR(Bytes().Header(0, 1).Str("a").U32(7).Raw("\x02", 1).Take(),
               "bool at offset 37 is 2");
  // Arrays nested five deep.
  Bytes deep;
  deep.Header(0, 1).Str("a").U32(9);
  for (int i = 0; i < 5; ++i) deep.U32(9).U64(1);
  deep.U32(4).U64(0);
  EXPECT_ERROR(deep.Take(), "nested more than 4 deep");
  EXPECT_ERROR(
      Bytes().Header(0, 1).Str("general.alignment").U32(4).U32(24).Take(),
      "general.alignment at offset 24 is u32 24");
}

TEST(GgufHostileTest, TensorInfos) {
  auto one = [](std::vector<uint64_t> dims, uint32_t type, uint64_t offset,
                size_t data) {
    return Bytes()
        .Header(1, 0)
        .Tensor("w", dims, type, offset)
        .PadTo(32)
        .Zeros(data)
        .Take();
  };
  EXPECT_TRUE(ParseError(one({8, 2}, 0, 0, 64)) == "(parsed)");
  EXPECT_ERROR(one({8, 0}, 0, 0, 64), "dimension 1 at offset");
  EXPECT_ERROR(one({}, 0, 0, 64), "dimension count at offset 33 is 0");
  EXPECT_ERROR(one({1, 1, 1, 1, 1}, 0, 0, 64), "is 5, expected 1..4");
  EXPECT_ERROR(one({uint64_t{1} << 40, uint64_t{1} << 40}, 0, 0, 64),
               "more than 2^48 elements");
  EXPECT_ERROR(one({8}, 99, 0, 64), "tensor type 99");
  EXPECT_ERROR(one({100, 2}, 8, 0, 4096), "multiple of its block size 32");
  EXPECT_ERROR(one({8, 2}, 0, 16, 64), "not a multiple of the alignment 32");
  EXPECT_ERROR(one({8, 2}, 0, 32, 64), "truncated");
  EXPECT_ERROR(one({8, 2}, 0, ~uint64_t{0} - 31, 64), "truncated");
  EXPECT_ERROR(Bytes()
                   .Header(2, 0)
                   .Tensor("w", {8}, 0, 0)
                   .Tensor("w", {8}, 0, 32)
                   .PadTo(32)
                   .Zeros(64)
                   .Take(),
               "appears twice");
  EXPECT_ERROR(Bytes()
                   .Header(2, 0)
                   .Tensor("a", {16}, 0, 0)
                   .Tensor("b", {8}, 0, 32)
                   .PadTo(32)
                   .Zeros(96)
                   .Take(),
               "tensor 'a' (#0) at bytes");
  EXPECT_ERROR(Bytes()
                   .Header(1, 0)
                   .Tensor(std::string(64, 'x'), {8}, 0, 0)
                   .PadTo(32)
                   .Zeros(32)
                   .Take(),
               "has length 64, more than 63");
}

// ---------------------------------------------------------------------------
// Architectures and hyper-parameters.

TEST(GgufArchTest, EverySupportedArchitectureAndTernaryType) {
  struct Case {
    const char* args;
    const char* arch;
    bool sub_norms;
    bool tied;
  };
  const Case cases[] = {
      {"--arch bitnet-b1.58 --ternary i2_s --hidden 64 --ffn 128 --heads 4 "
       "--kv-heads 2 --vocab 300",
       "bitnet-b1.58", true, true},
      {"--arch bitnet --ternary tq2_0 --head-type q8_0", "bitnet", true, false},
      {"--arch bitnet --ternary tq1_0 --embd-type q6_k --head-type q4_k",
       "bitnet", true, false},
      {"--arch bitnet-25 --ternary tq2_0 --embd-type bf16 --norm-type f16",
       "bitnet-25", true, true},
      {"--arch llama --ternary i2_s --hidden 128 --ffn 256 --head-type f16",
       "llama", false, false},
      {"--arch llama --ternary tq2_0 --rope-freqs", "llama", false, true},
  };
  TempDir dir;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.args);
    Result<GgufFile> f =
        GgufFile::Parse(Write(dir, "m.gguf", c.args), "m.gguf");
    ASSERT_TRUE(f.ok()) << f.status().message();
    Result<HyperParams> hp = ValidateModel(*f);
    ASSERT_TRUE(hp.ok()) << hp.status().message();
    EXPECT_EQ(hp->arch, c.arch);
    EXPECT_EQ(hp->sub_norms, c.sub_norms);
    EXPECT_EQ(hp->tied_output, c.tied);
    EXPECT_EQ(hp->layers, 2u);
    EXPECT_EQ(hp->vocab, 300u);
    EXPECT_EQ(hp->context, 256u);
    EXPECT_EQ(hp->rope_freq_base, 500000.0f);
    EXPECT_EQ(hp->rms_eps, 1e-5f);
    for (const TensorInfo& t : f->tensors()) {
      Status s = IsTernaryType(t.type) ? DecodeTernary(t).status()
                                       : DecodeFloat(t).status();
      EXPECT_TRUE(s.ok()) << s.message();
    }
  }
  Result<GgufFile> f = GgufFile::Parse(
      Write(dir, "m.gguf",
            "--hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 300"),
      "m.gguf");
  ASSERT_TRUE(f.ok());
  Result<HyperParams> hp = ValidateModel(*f);
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->embd, 64u);
  EXPECT_EQ(hp->ffn, 128u);
  EXPECT_EQ(hp->heads, 4u);
  EXPECT_EQ(hp->kv_heads, 2u);
  EXPECT_EQ(hp->head_dim, 16u);
}

// Replaces the first occurrence of `from` in `bytes` by `to` (same length).
void Patch(std::vector<uint8_t>& bytes, std::string_view from,
           std::string_view to) {
  ASSERT_EQ(from.size(), to.size());
  auto it = std::search(bytes.begin(), bytes.end(), from.begin(), from.end());
  ASSERT_NE(it, bytes.end()) << from;
  std::copy(to.begin(), to.end(), it);
}

// The u32 value of metadata key `key` (written as a u32).
void PatchU32(std::vector<uint8_t>& bytes, std::string_view key, uint32_t v) {
  auto it = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
  ASSERT_NE(it, bytes.end()) << key;
  std::memcpy(&*(it + key.size() + 4), &v, 4);
}

std::string ModelError(std::vector<uint8_t> bytes) {
  Result<GgufFile> f = GgufFile::Parse(std::move(bytes), "m.gguf");
  if (!f.ok()) return std::string("parse: ") + f.status().message();
  Result<HyperParams> hp = ValidateModel(*f);
  return hp.ok() ? "(valid)" : hp.status().message();
}

TEST(GgufArchTest, WrongShapesAndArchitecturesAreNamed) {
  TempDir dir;
  const std::vector<uint8_t> good =
      Write(dir, "m.gguf",
            "--hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 300");
  ASSERT_EQ(ModelError(good), "(valid)");

  std::vector<uint8_t> b = good;
  Patch(b, "bitnet-b1.58", "bitnet-b1.59");
  EXPECT_NE(ModelError(b).find("architecture 'bitnet-b1.59' is not supported"),
            std::string::npos)
      << ModelError(b);

  b = good;
  PatchU32(b, "bitnet-b1.58.feed_forward_length", 256);
  EXPECT_NE(ModelError(b).find("tensor 'blk.0.ffn_gate.weight' (#"),
            std::string::npos)
      << ModelError(b);
  EXPECT_NE(ModelError(b).find("has dims [64, 128], expected [64, 256]"),
            std::string::npos);

  b = good;
  PatchU32(b, "bitnet-b1.58.attention.head_count_kv", 4);
  EXPECT_NE(ModelError(b).find("'blk.0.attn_k.weight' (#"), std::string::npos)
      << ModelError(b);

  b = good;
  PatchU32(b, "bitnet-b1.58.attention.head_count", 3);
  EXPECT_NE(ModelError(b).find("do not divide evenly"), std::string::npos)
      << ModelError(b);

  b = good;
  PatchU32(b, "bitnet-b1.58.block_count", 3);
  EXPECT_NE(ModelError(b).find("tensor 'blk.2.attn_q.weight' [64, 64] is "
                               "missing"),
            std::string::npos)
      << ModelError(b);

  b = good;
  PatchU32(b, "bitnet-b1.58.block_count", 1);
  EXPECT_NE(ModelError(b).find("'blk.1.attn_norm.weight' (#"),
            std::string::npos)
      << ModelError(b);
  EXPECT_NE(ModelError(b).find("is not part of a bitnet-b1.58 model with 1 "
                               "layers"),
            std::string::npos);

  b = good;
  Patch(b, "bitnet-b1.58.attention.layer_norm_rms_epsilon",
        "bitnet-b1.58.attention.layer_norm_rms_epsilom");
  EXPECT_NE(ModelError(b).find(
                "key 'bitnet-b1.58.attention.layer_norm_rms_epsilon' is "
                "missing"),
            std::string::npos)
      << ModelError(b);

  // A llama file (no sub-norms) with a linear layer missing.
  b = Write(dir, "l.gguf", "--arch llama --hidden 128 --ffn 256");
  ASSERT_EQ(ModelError(b), "(valid)");
  Patch(b, "blk.0.attn_q.weight", "blk.0.attn_X.weight");
  EXPECT_NE(ModelError(b).find("'blk.0.attn_q.weight' [128, 128] is missing"),
            std::string::npos)
      << ModelError(b);
}

// ---------------------------------------------------------------------------
// ternctl gguf-info.

// Runs `ternctl gguf-info ARGS`; returns stdout and sets `*rc`.
std::string GgufInfo(const TempDir& dir, const std::string& args, int* rc) {
  const std::string out = dir / "info.out";
  const std::string cmd = std::string(TERNCTL_PATH) + " gguf-info " + args +
                          " > " + out + " 2> " + dir / "info.err";
  const int status = std::system(cmd.c_str());
  *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  Result<std::vector<uint8_t>> bytes = ReadFile(out);
  return bytes.ok() ? std::string(bytes->begin(), bytes->end()) : "";
}

TEST(GgufInfoTest, ReportsModelAndErrors) {
  TempDir dir;
  Write(dir, "m.gguf", "--arch bitnet --ternary tq1_0 --head-type q8_0");
  int rc = -1;
  std::string text = GgufInfo(dir, dir / "m.gguf", &rc);
  EXPECT_EQ(rc, 0) << text;
  EXPECT_NE(text.find("architecture  bitnet\n"), std::string::npos) << text;
  EXPECT_NE(text.find("heads         4 (kv 4, head dim 64)"), std::string::npos)
      << text;
  EXPECT_NE(text.find("output head   output.weight Q8_0"), std::string::npos);
  EXPECT_NE(text.find("tensors       25: F16 1 F32 9 Q8_0 1 TQ1_0 14"),
            std::string::npos)
      << text;
  std::string json =
      GgufInfo(dir, dir / "m.gguf" + " --json --check-data", &rc);
  EXPECT_EQ(rc, 0) << json;
  EXPECT_NE(json.find("\"vocab_size\":300"), std::string::npos) << json;
  EXPECT_NE(json.find("\"data_checked\":true,\"valid\":true,\"error\":null"),
            std::string::npos)
      << json;

  Result<std::vector<uint8_t>> bytes = ReadFile(dir / "m.gguf");
  ASSERT_TRUE(bytes.ok());
  bytes->resize(bytes->size() / 2);
  ASSERT_TRUE(WriteFileAtomically(dir / "cut.gguf", *bytes).ok());
  json = GgufInfo(dir, dir / "cut.gguf" + " --json", &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(json.find("\"valid\":false"), std::string::npos) << json;
  EXPECT_NE(json.find("truncated?"), std::string::npos) << json;
}

}  // namespace
}  // namespace ternd::gguf
