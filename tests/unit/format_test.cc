// The .tern reader must refuse every malformed file with a message that names
// what is wrong, and never crash on any input.
#include "runtime/format.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>

#include "runtime/graph_builder.h"
#include "runtime/ternary_pack.h"
#include "tests/support/test_models.h"

namespace ternd::runtime {
namespace {

using testing::Rng;

std::vector<uint8_t> SmallModel(bool golden = true) {
  Rng rng(7);
  GraphBuilder b("small", 3, 4);
  b.Input("x", 10);
  b.TernaryLinear("x", "fc1", 6, rng.Ternary(60), rng.Floats(6, 0.1f, 1.0f),
                  rng.Floats(6, -1, 1));
  b.Unary(model::RELU, "fc1", "a");
  b.Linear("a", "head", 3, rng.Floats(18, -1, 1));
  b.Unary(model::ARGMAX, "head", "cls");
  b.Output("head");
  b.Output("cls");
  auto bytes = golden ? b.FinishWithGolden({rng.Floats(20, -1, 1)}, 2, 1e-6f)
                      : b.Finish();
  EXPECT_TRUE(bytes.ok()) << bytes.status().message();
  return *bytes;
}

uint32_t U32(const std::vector<uint8_t>& b, size_t at) {
  uint32_t v;
  std::memcpy(&v, b.data() + at, 4);
  return v;
}

void PutU32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  std::memcpy(b.data() + at, &v, 4);
}

// Re-encodes `bytes` with a header changed by `edit`, keeping the data.
std::vector<uint8_t> WithHeader(
    const std::vector<uint8_t>& bytes,
    const std::function<void(model::ModelHeader&)>& edit) {
  const uint32_t hlen = U32(bytes, 8);
  model::ModelHeader h;
  EXPECT_TRUE(h.ParseFromArray(bytes.data() + 16, hlen));
  const size_t data_off = (16 + hlen + 63) / 64 * 64;
  std::vector<uint8_t> data(bytes.begin() + data_off, bytes.end());
  edit(h);
  std::string hs = h.SerializeAsString();
  const size_t new_off = (16 + hs.size() + 63) / 64 * 64;
  std::vector<uint8_t> out(new_off, 0);
  std::memcpy(out.data(), bytes.data(), 16);
  PutU32(out, 8, static_cast<uint32_t>(hs.size()));
  std::memcpy(out.data() + 16, hs.data(), hs.size());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Parses and expects failure with every fragment of `want` in the message.
void ExpectError(std::vector<uint8_t> bytes, std::vector<std::string> want) {
  Result<ModelFile> f = ModelFile::Parse(std::move(bytes), "bad.tern");
  ASSERT_FALSE(f.ok()) << "expected an error containing " << want[0];
  std::string msg = f.status().message();
  EXPECT_EQ(msg.rfind("bad.tern: ", 0), 0u) << msg;
  for (const std::string& w : want) {
    EXPECT_NE(msg.find(w), std::string::npos)
        << "message \"" << msg << "\" lacks \"" << w << "\"";
  }
}

TEST(FormatTest, RoundTrip) {
  std::vector<uint8_t> bytes = SmallModel();
  Result<ModelFile> f = ModelFile::Parse(bytes, "ok.tern");
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->header().name(), "small");
  EXPECT_EQ(f->header().version(), 3u);
  ASSERT_NE(f->FindTensor("fc1.weight"), nullptr);
  EXPECT_EQ(f->FindTensor("fc1.weight")->bytes.size(),
            6u * TernaryRowBytes(10));
  EXPECT_EQ(f->FindValue("head")->features, 3u);
  EXPECT_EQ(f->FindValue("cls")->dtype, model::I32);
  for (const TensorView& t : f->tensors()) {
    EXPECT_EQ(t.info->offset() % kTensorAlignment, 0u) << t.info->name();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.bytes.data()) -
                  reinterpret_cast<uintptr_t>(t.bytes.data()) % 1,
              reinterpret_cast<uintptr_t>(t.bytes.data()));
  }
  EXPECT_EQ(std::memcmp(bytes.data(), "TERN", 4), 0);
  // A graph model needs nothing of version 2, so it is written as version 1
  // and older readers keep loading it.
  EXPECT_EQ(U32(bytes, 4), 1u);
  EXPECT_EQ(U32(bytes, 12), 0u);
  // The data section starts 64-byte aligned after the header.
  const size_t data_off = (16 + U32(bytes, 8) + 63) / 64 * 64;
  EXPECT_EQ(bytes.size(), data_off + f->header().data_length());
}

TEST(FormatTest, TernaryWeightsDecodeToWhatWasWritten) {
  Rng rng(3);
  std::vector<int8_t> w = rng.Ternary(7 * 13);
  GraphBuilder b("w", 1, 1);
  b.Input("x", 13);
  b.TernaryLinear("x", "fc", 7, w, std::vector<float>{0.5f});
  b.Output("fc");
  auto bytes = b.Finish();
  ASSERT_TRUE(bytes.ok());
  auto f = ModelFile::Parse(*bytes, "w");
  ASSERT_TRUE(f.ok());
  Eigen::MatrixXi m = testing::TernaryMatrix(*f->FindTensor("fc.weight"));
  for (int r = 0; r < 7; ++r) {
    for (int c = 0; c < 13; ++c) EXPECT_EQ(m(r, c), w[r * 13 + c]);
  }
}

TEST(FormatTest, RefusesEveryTruncation) {
  std::vector<uint8_t> bytes = SmallModel();
  for (size_t len = 0; len < bytes.size(); ++len) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + len);
    EXPECT_FALSE(ModelFile::Parse(std::move(cut), "cut").ok()) << len;
  }
  ExpectError({bytes.begin(), bytes.begin() + 10},
              {"shorter than the 16-byte"});
  ExpectError({bytes.begin(), bytes.end() - 1}, {"truncated"});
}

TEST(FormatTest, RefusesTrailingBytes) {
  std::vector<uint8_t> bytes = SmallModel();
  bytes.push_back(0);
  ExpectError(bytes, {"1 bytes after the end of the data section"});
}

TEST(FormatTest, RefusesBadPreamble) {
  std::vector<uint8_t> bytes = SmallModel();
  auto b = bytes;
  b[0] = 'X';
  ExpectError(b, {"not a ternd model", "expected \"TERN\""});
  b = bytes;
  PutU32(b, 4, 4);
  ExpectError(b, {"format version 4", "versions 1 to 3", "upgrade ternd"});
  b = bytes;
  PutU32(b, 4, 0);
  ExpectError(b, {"format version 0"});
  b = bytes;
  PutU32(b, 4, 2);  // a graph model may also say version 2
  EXPECT_TRUE(ModelFile::Parse(b, "v2.tern").ok());
  b = bytes;
  PutU32(b, 12, 1);
  ExpectError(b, {"flags at offset 12"});
  b = bytes;
  PutU32(b, 8, 0);
  ExpectError(b, {"header length 0"});
  b = bytes;
  PutU32(b, 8, 0xfffffff0u);
  ExpectError(b, {"header length"});
  b = bytes;
  PutU32(b, 8, static_cast<uint32_t>(bytes.size()));
  ExpectError(b, {"runs past the end"});
}

TEST(FormatTest, RefusesGarbageHeader) {
  std::vector<uint8_t> bytes = SmallModel();
  for (size_t i = 16; i < 40; ++i) bytes[i] = 0xff;
  ExpectError(bytes, {"not a valid ModelHeader protobuf"});
}

TEST(FormatTest, RefusesBadTensorTable) {
  const std::vector<uint8_t> bytes = SmallModel();
  ExpectError(
      WithHeader(bytes, [](auto& h) { h.mutable_tensors(0)->set_offset(8); }),
      {"tensor 'fc1.weight' (#0)", "offset 8 is not a multiple of 64"});
  ExpectError(
      WithHeader(bytes, [](auto& h) { h.mutable_tensors(0)->set_length(5); }),
      {"'fc1.weight'", "length is 5 bytes", "needs 18"});
  ExpectError(WithHeader(bytes,
                         [](auto& h) {
                           h.mutable_tensors(1)->set_offset(h.data_length());
                         }),
              {"'fc1.bias'", "outside the"});
  ExpectError(
      WithHeader(bytes,
                 [](auto& h) {
                   h.mutable_tensors(1)->set_offset(h.tensors(0).offset());
                 }),
      {"overlap"});
  ExpectError(
      WithHeader(bytes,
                 [](auto& h) {
                   h.mutable_tensors(1)->set_offset(0xffffffffffffffc0ull);
                 }),
      {"'fc1.bias'", "outside the"});
  ExpectError(WithHeader(bytes,
                         [](auto& h) {
                           h.mutable_tensors(0)->set_dtype(
                               static_cast<model::DType>(9));
                         }),
              {"unknown dtype 9"});
  ExpectError(WithHeader(bytes,
                         [](auto& h) {
                           auto* t = h.mutable_tensors(1);
                           t->clear_shape();
                           t->add_shape(1ull << 20);
                           t->add_shape(1ull << 20);
                           t->add_shape(1ull << 20);
                         }),
              {"more than 2^40 elements"});
  ExpectError(
      WithHeader(bytes, [](auto& h) { h.mutable_tensors(1)->add_shape(0); }),
      {"dimension outside"});
  ExpectError(
      WithHeader(bytes, [](auto& h) { h.mutable_tensors(1)->clear_shape(); }),
      {"0 dimensions"});
  ExpectError(
      WithHeader(bytes, [](auto& h) { h.mutable_tensors(0)->add_scale(1.0f); }),
      {"7 scales, expected 1 (per tensor) or 6 (per row)"});
  ExpectError(
      WithHeader(bytes,
                 [](auto& h) { h.mutable_tensors(0)->set_scale(2, NAN); }),
      {"scale #2 is nan"});
  ExpectError(
      WithHeader(bytes, [](auto& h) { h.mutable_tensors(1)->add_scale(1.0f); }),
      {"only TERNARY2 and I8 tensors have scales"});
  ExpectError(
      WithHeader(bytes,
                 [](auto& h) { h.mutable_tensors(1)->set_name("fc1.weight"); }),
      {"'fc1.weight' is used twice"});
  ExpectError(
      WithHeader(bytes,
                 [](auto& h) { h.mutable_tensors(1)->set_name("bad name\n"); }),
      {"tensor #1: name 'bad name\\x0a'"});
  ExpectError(
      WithHeader(bytes,
                 [](auto& h) { h.set_data_length(h.data_length() + 64); }),
      {"truncated"});
}

TEST(FormatTest, RefusesBadGraph) {
  const std::vector<uint8_t> bytes = SmallModel(false);
  ExpectError(WithHeader(bytes, [](auto& h) { h.set_architecture("llama"); }),
              {"architecture is 'llama'"});
  ExpectError(
      WithHeader(bytes, [](auto& h) { h.mutable_graph()->set_max_batch(0); }),
      {"max_batch is 0"});
  ExpectError(WithHeader(bytes,
                         [](auto& h) {
                           h.mutable_graph()->mutable_ops(1)->set_inputs(
                               0, "nope");
                         }),
              {"op #1 (RELU) reads value 'nope'"});
  ExpectError(
      WithHeader(bytes,
                 [](auto& h) {
                   h.mutable_graph()->mutable_ops(0)->set_weight("head.weight");
                 }),
      {"op #0 (TERNARY_LINEAR) weight 'head.weight' is F32 [3, 6]",
       "expected TERNARY2 [N, 10]"});
  ExpectError(
      WithHeader(bytes,
                 [](auto& h) {
                   h.mutable_graph()->mutable_ops(0)->set_weight("missing");
                 }),
      {"weight tensor 'missing'"});
  ExpectError(WithHeader(bytes,
                         [](auto& h) {
                           h.mutable_graph()->mutable_ops(2)->set_output("fc1");
                         }),
              {"defines value 'fc1' a second time"});
  ExpectError(WithHeader(bytes,
                         [](auto& h) {
                           h.mutable_graph()->mutable_ops(1)->set_type(
                               static_cast<model::OpType>(77));
                         }),
              {"unknown type 77"});
  ExpectError(
      WithHeader(bytes,
                 [](auto& h) {
                   h.mutable_graph()->mutable_ops(1)->set_weight("fc1.bias");
                 }),
      {"op #1 (RELU) takes no weight or bias"});
  ExpectError(
      WithHeader(bytes,
                 [](auto& h) {
                   h.mutable_graph()->mutable_outputs(0)->set_shape(0, 4);
                 }),
      {"output 'head' is declared F32 with 4 features", "computes F32 with 3"});
  ExpectError(WithHeader(bytes,
                         [](auto& h) {
                           auto* op = h.mutable_graph()->add_ops();
                           op->set_type(model::RELU);
                           op->add_inputs("cls");
                           op->set_output("z");
                         }),
              {"reads value 'cls' of dtype I32"});
  ExpectError(WithHeader(bytes,
                         [](auto& h) {
                           auto* op = h.mutable_graph()->add_ops();
                           op->set_type(model::RMS_NORM);
                           op->add_inputs("head");
                           op->set_output("n");
                           op->set_weight("fc1.bias");
                           op->set_eps(1e-5f);
                         }),
              {"gain tensor 'fc1.bias' is F32 [6], expected F32 [3]"});
  ExpectError(WithHeader(bytes,
                         [](auto& h) {
                           auto* op = h.mutable_graph()->add_ops();
                           op->set_type(model::ADD);
                           op->add_inputs("head");
                           op->add_inputs("fc1");
                           op->set_output("s");
                         }),
              {"adds 'head' (3 features) and 'fc1' (6 features)"});
  ExpectError(WithHeader(bytes,
                         [](auto& h) {
                           h.mutable_graph()->mutable_inputs(0)->set_shape(0,
                                                                           0);
                         }),
              {"value 'x' has 0 features"});
}

TEST(FormatTest, RefusesBadGolden) {
  const std::vector<uint8_t> bytes = SmallModel(true);
  ExpectError(WithHeader(bytes,
                         [](auto& h) {
                           h.mutable_golden()->set_input_tensors(0, "fc1.bias");
                         }),
              {"golden input tensor 'fc1.bias' is F32 [6]", "[batch, 10]"});
  ExpectError(WithHeader(bytes,
                         [](auto& h) {
                           h.mutable_golden()->add_output_tensors("fc1.bias");
                         }),
              {"golden pair has 1 input and 3 output tensors"});
  ExpectError(
      WithHeader(bytes, [](auto& h) { h.mutable_golden()->set_tolerance(-1); }),
      {"tolerance is -1"});
  ExpectError(WithHeader(bytes,
                         [](auto& h) {
                           h.mutable_golden()->set_output_tensors(
                               1, "golden.out.head");
                         }),
              {"golden output tensor 'golden.out.head' is F32"});
}

TEST(FormatTest, RandomCorruptionNeverCrashes) {
  const std::vector<uint8_t> bytes = SmallModel();
  Rng rng(99);
  int parsed = 0;
  for (int i = 0; i < 3000; ++i) {
    std::vector<uint8_t> b = bytes;
    const int flips = rng.Int(1, 4);
    for (int j = 0; j < flips; ++j) {
      b[rng.Int(0, static_cast<int>(b.size()) - 1)] ^=
          static_cast<uint8_t>(1 << rng.Int(0, 7));
    }
    Result<ModelFile> f = ModelFile::Parse(std::move(b), "fuzz");
    if (!f.ok()) {
      EXPECT_GT(std::strlen(f.status().message()), 6u);
      continue;
    }
    ++parsed;
    // Whatever parses must also load (or be refused) and run without harm.
    auto rt = Runtime::Create({size_t{8} << 20, 1, 1, "ref"});
    ASSERT_TRUE(rt.ok());
    auto m = (*rt)->Load(0, *f);
    if (m.ok() && (*m)->has_golden()) (*m)->CheckGolden(0).IgnoreError();
  }
  // Flips in tensor data leave the file parseable: make sure that case ran.
  EXPECT_GT(parsed, 100);
}

// A small CNN: conv (stride, padding), pool, conv1d-free 2-D chain.
std::vector<uint8_t> SmallCnn() {
  Rng rng(8);
  GraphBuilder b("cnn", 1, 2);
  b.Input("img", std::vector<uint32_t>{6, 6, 2});
  b.Conv(model::CONV2D, "img", "c1", 4, {{3, 3}, {1, 1}, {1, 1}},
         rng.Ternary(4 * 18), rng.Floats(4, 0.1f, 1), rng.Floats(4, -1, 1));
  b.Pool(model::MAX_POOL, "c1", "p1", {{2, 2}, {2, 2}});
  b.Reshape("p1", "flat", {36});
  b.TernaryLinear("flat", "fc", 3, rng.Ternary(3 * 36), rng.Floats(1, 0.1f, 1));
  b.Output("fc");
  auto bytes = b.Finish();
  EXPECT_TRUE(bytes.ok()) << bytes.status().message();
  return *bytes;
}

TEST(FormatTest, ConvolutionalGraphsAreVersion3WithShapes) {
  Result<ModelFile> f = ModelFile::Parse(SmallCnn(), "cnn.tern");
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->format_version(), 3u);
  EXPECT_EQ(f->FindValue("c1")->dims, (std::vector<uint32_t>{6, 6, 4}));
  EXPECT_EQ(f->FindValue("p1")->dims, (std::vector<uint32_t>{3, 3, 4}));
  EXPECT_EQ(f->FindValue("flat")->dims, (std::vector<uint32_t>{36}));
  EXPECT_EQ(f->geometry(0).patch(), 18u);
  EXPECT_EQ(f->geometry(0).out_c, 4u);
  // Graphs without the new ops stay version 1.
  Result<ModelFile> mlp = ModelFile::Parse(SmallModel(), "mlp.tern");
  ASSERT_TRUE(mlp.ok());
  EXPECT_EQ(mlp->format_version(), 1u);
}

TEST(FormatTest, RefusesBadConvolutionAttributes) {
  const std::vector<uint8_t> cnn = SmallCnn();
  auto op0 = [&](const std::function<void(model::Op&)>& edit) {
    return WithHeader(cnn, [&](model::ModelHeader& h) {
      edit(*h.mutable_graph()->mutable_ops(0));
    });
  };
  // The preamble must say version 3 for these ops.
  auto v1 = cnn;
  PutU32(v1, 4, 1);
  ExpectError(v1,
              {"op #0 (CONV2D) needs format version 3", "the preamble says 1"});
  ExpectError(op0([](model::Op& op) { op.clear_kernel(); }),
              {"op #0 (CONV2D) kernel has 0 entries, expected 2"});
  ExpectError(op0([](model::Op& op) { op.set_kernel(1, 0); }),
              {"op #0 (CONV2D) kernel[1] is 0, expected 1..65535"});
  ExpectError(op0([](model::Op& op) { op.add_stride(1); }),
              {"op #0 (CONV2D) stride has 3 entries, expected 2"});
  ExpectError(op0([](model::Op& op) { op.set_stride(0, 0); }),
              {"op #0 (CONV2D) stride[0] is 0"});
  ExpectError(op0([](model::Op& op) {
                op.add_dilation(70000);
                op.add_dilation(1);
              }),
              {"op #0 (CONV2D) dilation[0] is 70000"});
  ExpectError(op0([](model::Op& op) {
                op.add_dilation(9);
                op.add_dilation(1);
              }),
              {"op #0 (CONV2D) kernel[0] = 3 (dilation 9) spans 19",
               "height of 'img' (6) plus padding 1"});
  // Weight columns must be kernel x input channels.
  ExpectError(op0([](model::Op& op) { op.set_kernel(0, 2); }),
              {"op #0 (CONV2D) weight 'c1.weight' is TERNARY2 [4, 18]",
               "expected TERNARY2 [C_out, 12]"});
  // A 2-D convolution of a flat value.
  ExpectError(WithHeader(cnn,
                         [](model::ModelHeader& h) {
                           h.mutable_graph()->mutable_inputs(0)->clear_shape();
                           h.mutable_graph()->mutable_inputs(0)->add_shape(72);
                         }),
              {"op #0 (CONV2D) reads 'img' of shape [72], expected [H, W, C]"});
  // Pools: padding over half the window, dilation, a weight.
  auto op1 = [&](const std::function<void(model::Op&)>& edit) {
    return WithHeader(cnn, [&](model::ModelHeader& h) {
      edit(*h.mutable_graph()->mutable_ops(1));
    });
  };
  ExpectError(op1([](model::Op& op) {
                op.add_padding(2);
                op.add_padding(0);
              }),
              {"op #1 (MAX_POOL) padding[0] is 2, at most half the kernel"});
  ExpectError(op1([](model::Op& op) {
                op.add_dilation(1);
                op.add_dilation(1);
              }),
              {"op #1 (MAX_POOL) has a dilation"});
  ExpectError(op1([](model::Op& op) { op.set_weight("c1.weight"); }),
              {"op #1 (MAX_POOL) takes no weight or bias"});
  // Reshape to the wrong size; attributes on ops that take none.
  auto op2 = [&](const std::function<void(model::Op&)>& edit) {
    return WithHeader(cnn, [&](model::ModelHeader& h) {
      edit(*h.mutable_graph()->mutable_ops(2));
    });
  };
  ExpectError(
      op2([](model::Op& op) { op.set_shape(0, 35); }),
      {"op #2 (RESHAPE) shape [35] holds 35 features", "input 'p1' has 36"});
  ExpectError(op2([](model::Op& op) { op.clear_shape(); }),
              {"op #2 (RESHAPE) has shape with 0 dimensions"});
  ExpectError(op2([](model::Op& op) { op.add_kernel(2); }),
              {"op #2 (RESHAPE) has kernel, stride, padding or dilation"});
  ExpectError(WithHeader(cnn,
                         [](model::ModelHeader& h) {
                           h.mutable_graph()->mutable_ops(3)->add_shape(3);
                         }),
              {"op #3 (TERNARY_LINEAR) has a shape attribute"});
}

TEST(FormatTest, RefusesBadConcat) {
  Rng rng(9);
  GraphBuilder b("cat", 1, 1);
  b.Input("a", std::vector<uint32_t>{2, 3, 4});
  b.Input("b", std::vector<uint32_t>{2, 3, 5});
  b.Concat({"a", "b"}, "ab");
  b.Output("ab");
  auto bytes = b.Finish();
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  ExpectError(WithHeader(*bytes,
                         [](model::ModelHeader& h) {
                           auto* in = h.mutable_graph()->mutable_inputs(1);
                           in->set_shape(0, 3);
                           in->set_shape(1, 2);
                         }),
              {"op #0 (CONCAT) joins 'a' of shape [2, 3, 4] and 'b' of shape "
               "[3, 2, 5]"});
  ExpectError(
      WithHeader(
          *bytes,
          [](model::ModelHeader& h) {
            h.mutable_graph()->mutable_ops(0)->mutable_inputs()->RemoveLast();
          }),
      {"op #0 (CONCAT) has 1 inputs, expected 2..64"});
}

TEST(FormatTest, RefusesBadAudioAttributes) {
  model::AudioFeatures a;
  a.set_sample_rate(16000);
  a.set_frame_length(400);
  a.set_frame_step(160);
  a.set_fft_length(512);
  a.set_mel_bins(40);
  a.set_lower_hz(20);
  a.set_upper_hz(8000);
  a.set_log_offset(1e-6f);
  GraphBuilder b("audio", 1, 1);
  b.Input("pcm", 16000);
  b.AudioFeatures("pcm", "mel", a);
  b.Output("mel");
  auto bytes = b.Finish();
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  Result<ModelFile> f = ModelFile::Parse(*bytes, "audio.tern");
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->format_version(), 3u);
  EXPECT_EQ(f->FindValue("mel")->dims, (std::vector<uint32_t>{98, 40}));
  auto edit = [&](const std::function<void(model::AudioFeatures&)>& e) {
    return WithHeader(*bytes, [&](model::ModelHeader& h) {
      e(*h.mutable_graph()->mutable_ops(0)->mutable_audio());
    });
  };
  ExpectError(edit([](model::AudioFeatures& x) { x.set_fft_length(500); }),
              {"op #0 (AUDIO_FEATURES) audio.fft_length is 500, expected a "
               "power of two"});
  ExpectError(edit([](model::AudioFeatures& x) { x.set_fft_length(256); }),
              {"audio.fft_length is 256, expected 400..65536"});
  ExpectError(edit([](model::AudioFeatures& x) { x.set_frame_length(16001); }),
              {"audio.frame_length is 16001, expected 1..16000"});
  ExpectError(edit([](model::AudioFeatures& x) { x.set_frame_step(0); }),
              {"audio.frame_step is 0"});
  ExpectError(
      edit([](model::AudioFeatures& x) { x.set_upper_hz(9000); }),
      {"audio.lower_hz 20 and upper_hz 9000", "sample_rate / 2 (8000)"});
  ExpectError(edit([](model::AudioFeatures& x) { x.set_log_offset(0); }),
              {"audio.log_offset is 0, expected a finite value > 0"});
  ExpectError(edit([](model::AudioFeatures& x) { x.set_mel_bins(0); }),
              {"audio.mel_bins is 0, expected 1..257"});
  ExpectError(
      WithHeader(*bytes,
                 [&](model::ModelHeader& h) {
                   h.mutable_graph()->mutable_ops(0)->set_type(model::RELU);
                 }),
      {"op #0 (RELU) has audio attributes"});
}

TEST(FormatTest, OpensAModelFile) {
  // Through ReadFile's default size limit, which must not be 0 where
  // size_t is 32 bits (armhf).
  const std::vector<uint8_t> bytes = SmallModel();
  char path[] = "/tmp/ternd-format-test-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()),
            static_cast<ssize_t>(bytes.size()));
  close(fd);
  Result<ModelFile> f = ModelFile::Open(path);
  unlink(path);
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->header().name(), "small");
}

TEST(FormatTest, OpenNamesTheFile) {
  Result<ModelFile> f = ModelFile::Open("/nonexistent/dir/m.tern");
  ASSERT_FALSE(f.ok());
  EXPECT_NE(std::string(f.status().message()).find("/nonexistent/dir/m.tern"),
            std::string::npos);
  EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace ternd::runtime
