// The request codec alone, with no socket: what an Infer request becomes
// (and every way it can be refused), the answer made from a job run on a
// real runtime, ModelInfo and UpdateStatus.
#include "daemon/request_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "daemon/client/client.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/tq1_pack.h"
#include "tests/daemon/daemon_test_models.h"

namespace ternd::daemon {
namespace {

using daemon_testing::BuildTestModel;
using daemon_testing::FastModel;
using daemon_testing::TestInput;
using daemon_testing::TestModelSpec;
using ::testing::HasSubstr;

class RequestCodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<std::vector<uint8_t>> bytes = BuildTestModel(spec_);
    ASSERT_TRUE(bytes.ok());
    Result<runtime::ModelFile> f =
        runtime::ModelFile::Parse(std::move(*bytes), "codec test");
    ASSERT_TRUE(f.ok());
    file_ = std::make_unique<runtime::ModelFile>(std::move(*f));
    runtime::RuntimeOptions o;
    o.slots = 1;
    o.arena_bytes = 16 << 20;
    runtime_ = std::move(runtime::Runtime::Create(o).value());
    model_ = *runtime_->Load(0, *file_);
  }

  wire::InferRequest F32Request(uint32_t rows, uint32_t seed = 1) {
    wire::InferRequest r;
    client::AddF32Input(&r, "x", rows, spec_.inputs,
                        TestInput(spec_, rows, seed));
    return r;
  }

  // PrepareInfer's refusal message (or "ok").
  std::string Refusal(const wire::InferRequest& r) {
    InferJob job;
    Status s = PrepareInfer(r, *model_, &job);
    if (s.ok()) return "ok";
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    return s.message();
  }

  TestModelSpec spec_ = FastModel();  // x[16] -> probs[4], class[1]
  std::unique_ptr<runtime::ModelFile> file_;
  std::unique_ptr<runtime::Runtime> runtime_;
  const runtime::LoadedModel* model_ = nullptr;
};

TEST(CallOfTest, EveryCallHasItsName) {
  wire::Request r;
  EXPECT_EQ(CallNames()[CallOf(r)], "invalid");
  r.mutable_infer();
  EXPECT_EQ(CallNames()[CallOf(r)], "infer");
  r.mutable_model_info();
  EXPECT_EQ(CallNames()[CallOf(r)], "model_info");
  r.mutable_health();
  EXPECT_EQ(CallNames()[CallOf(r)], "health");
  r.mutable_stats();
  EXPECT_EQ(CallNames()[CallOf(r)], "stats");
  r.mutable_generate();
  EXPECT_EQ(CallNames()[CallOf(r)], "generate");
  r.mutable_install();
  EXPECT_EQ(CallNames()[CallOf(r)], "install");
  r.mutable_update_status();
  EXPECT_EQ(CallNames()[CallOf(r)], "update_status");
}

TEST_F(RequestCodecTest, F32RequestBecomesAJobAndItsAnswerIsTheModels) {
  const std::vector<float> x = TestInput(spec_, 3, 5);
  wire::InferRequest r = F32Request(3, 5);
  InferJob job;
  ASSERT_TRUE(PrepareInfer(r, *model_, &job).ok());
  EXPECT_EQ(job.batch, 3);
  EXPECT_EQ(job.inputs, x);
  EXPECT_EQ(job.outputs, (std::vector<int>{0, 1}));  // every output

  // Run it as a worker does, and compare with the runtime run directly.
  job.model = model_;
  WorkerPool::Run(0, &job);
  ASSERT_TRUE(job.status.ok()) << job.status.message();
  wire::InferResponse answer;
  FinishInfer(job, &answer);
  EXPECT_EQ(answer.model(), spec_.name);
  EXPECT_EQ(answer.model_version(), spec_.version);
  ASSERT_EQ(answer.outputs_size(), 2);
  EXPECT_EQ(answer.outputs(0).name(), "probs");
  EXPECT_EQ(answer.outputs(0).dtype(), wire::F32);
  EXPECT_THAT(answer.outputs(0).shape(), ::testing::ElementsAre(3, 4));
  EXPECT_EQ(answer.outputs(1).dtype(), wire::I32);

  runtime::Executor ex = model_->executor(0);
  std::copy(x.begin(), x.end(), ex.input(0));
  ASSERT_TRUE(ex.Invoke(3).ok());
  const std::string& probs = answer.outputs(0).data();
  ASSERT_EQ(probs.size(), 3 * 4 * sizeof(float));
  EXPECT_EQ(std::memcmp(probs.data(), ex.output_f32(0), probs.size()), 0);
}

TEST_F(RequestCodecTest, Int8ShapelessInputsAndChosenOutputs) {
  wire::InferRequest r;
  wire::Tensor* t = r.add_inputs();  // unnamed: the model's only input
  t->set_dtype(wire::I8);
  std::string data(2 * 16, '\0');
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = static_cast<char>(static_cast<int>(i) - 16);
  }
  t->set_data(data);
  r.add_outputs("class");
  InferJob job;
  ASSERT_TRUE(PrepareInfer(r, *model_, &job).ok());
  EXPECT_EQ(job.batch, 2);
  ASSERT_EQ(job.inputs.size(), 32u);
  EXPECT_EQ(job.inputs[0], -16.0f);
  EXPECT_EQ(job.inputs[31], 15.0f);
  EXPECT_EQ(job.outputs, (std::vector<int>{1}));
}

TEST_F(RequestCodecTest, RefusalsNameWhatIsWrong) {
  wire::InferRequest r = F32Request(1);
  r.mutable_inputs(0)->set_name("y");
  EXPECT_THAT(Refusal(r), HasSubstr("'y' is not an input of model 'testnet' "
                                    "(inputs: x)"));

  r = F32Request(1);
  *r.add_inputs() = r.inputs(0);
  EXPECT_THAT(Refusal(r), HasSubstr("input 'x' is given twice"));

  r.Clear();
  EXPECT_THAT(Refusal(r),
              HasSubstr("input 'x' (16 values per row) is missing"));

  r = F32Request(1);
  r.mutable_inputs(0)->set_dtype(wire::I32);
  EXPECT_THAT(Refusal(r), HasSubstr("inputs take F32 (1) or I8 (2)"));

  r = F32Request(1);
  r.mutable_inputs(0)->clear_shape();
  r.mutable_inputs(0)->mutable_data()->append(4, '\0');
  EXPECT_THAT(Refusal(r), HasSubstr("not a whole number of 16-value rows"));

  r = F32Request(2);
  r.mutable_inputs(0)->set_shape(1, 8);
  EXPECT_THAT(Refusal(r), HasSubstr("has 8 values per row"));

  r = F32Request(2);
  r.mutable_inputs(0)->set_shape(0, 3);
  EXPECT_THAT(Refusal(r), HasSubstr("shape says 3 rows"));

  r = F32Request(spec_.max_batch + 1);
  EXPECT_THAT(Refusal(r), HasSubstr("takes 1..16 per call"));

  r = F32Request(1);
  r.add_outputs("logits");
  EXPECT_THAT(Refusal(r), HasSubstr("'logits' is not an output"));

  EXPECT_EQ(Refusal(F32Request(16)), "ok");
}

// A runtime that packs every matrix in the 1.6-bit layout: ModelInfo says
// so for each.
TEST_F(RequestCodecTest, ModelInfoNamesTheOnePointSixBitLayout) {
  runtime::RuntimeOptions o;
  o.slots = 1;
  o.arena_bytes = 16 << 20;
  o.weight_layout = "1.6bit";
  Result<std::unique_ptr<runtime::Runtime>> rt = runtime::Runtime::Create(o);
  if (!rt.ok()) {
    GTEST_SKIP() << "no 1.6-bit variant for this CPU's kernel: "
                 << rt.status().message();
  }
  Result<const runtime::LoadedModel*> m = (*rt)->Load(0, *file_);
  ASSERT_TRUE(m.ok()) << m.status().message();
  wire::ModelInfoResponse info;
  FillModelInfo(**m, HostInfo{}, &info);
  ASSERT_GT(info.ternary_matrices_size(), 0);
  for (const wire::TernaryMatrix& t : info.ternary_matrices()) {
    EXPECT_EQ(t.layout(), "1.6bit") << t.op();
    EXPECT_THAT(t.kernel(), ::testing::EndsWith("-1.6")) << t.op();
    EXPECT_EQ(t.packed_bytes(), runtime::Tq1PackedSize(t.rows(), t.cols()));
  }
}

TEST_F(RequestCodecTest, ModelInfoAndUpdateStatus) {
  HostInfo host;
  host.arena_bytes = 1 << 20;
  host.slot_bytes = 1 << 19;
  host.workers = 3;
  host.swap = "cold";
  wire::ModelInfoResponse info;
  FillModelInfo(*model_, host, &info);
  EXPECT_EQ(info.name(), "testnet");
  ASSERT_EQ(info.inputs_size(), 1);
  EXPECT_EQ(info.inputs(0).features(), 16u);
  ASSERT_EQ(info.outputs_size(), 2);
  EXPECT_EQ(info.outputs(1).dtype(), wire::I32);
  EXPECT_EQ(info.max_batch(), 16u);
  EXPECT_EQ(info.workers(), 3u);
  EXPECT_EQ(info.swap(), "cold");
  EXPECT_EQ(info.slot_bytes(), 1u << 19);
  EXPECT_GT(info.slot_bytes_used(), 0u);
  // Every ternary matrix with the variant and layout it got at load.
  int ternary = 0;
  for (int i = 0; i < model_->num_ops(); ++i) {
    const runtime::OpInfo op = model_->op_info(i);
    if (op.kernel == nullptr) continue;
    ASSERT_LT(ternary, info.ternary_matrices_size());
    const wire::TernaryMatrix& t = info.ternary_matrices(ternary++);
    EXPECT_EQ(t.op(), static_cast<uint32_t>(i));
    EXPECT_EQ(t.rows(), op.out_features);
    EXPECT_EQ(t.cols(), op.in_features);
    EXPECT_EQ(t.kernel(), op.kernel->name);
    EXPECT_EQ(t.layout(), runtime::IsTq1Kernel(*op.kernel) ? "1.6bit" : "2bit");
    EXPECT_EQ(t.packed_bytes(),
              op.kernel->packed_size(op.out_features, op.in_features));
  }
  EXPECT_GT(ternary, 0);
  EXPECT_EQ(info.ternary_matrices_size(), ternary);

  UpdateStatus st;
  st.record.state = ota::UpdateState::kRejected;
  st.record.reason = "bad_signature: ...";
  st.record.model_version = 4;
  ota::InstalledModel active;
  active.model_name = "upnet";
  active.model_version = 3;
  st.active = active;
  wire::UpdateStatusResponse out;
  FillUpdateStatus(st, "", "/etc/ternd/m.tern", &out);
  EXPECT_TRUE(out.enabled());
  EXPECT_EQ(out.state(), "rejected");
  EXPECT_EQ(out.state_code(), 2);
  EXPECT_EQ(out.reason(), "bad_signature: ...");
  EXPECT_EQ(out.active().version(), 3u);
  EXPECT_FALSE(out.has_previous());
  // No previous update: the rollback target is the configured model.
  EXPECT_EQ(out.previous_configured(), "/etc/ternd/m.tern");
  ota::InstalledModel previous;
  previous.model_name = "upnet";
  previous.model_version = 2;
  st.previous = previous;
  wire::UpdateStatusResponse with_previous;
  FillUpdateStatus(st, "", "/etc/ternd/m.tern", &with_previous);
  EXPECT_EQ(with_previous.previous().version(), 2u);
  EXPECT_TRUE(with_previous.previous_configured().empty());
  wire::UpdateStatusResponse off;
  FillUpdateStatus(UpdateStatus(), "ota.enabled is false", "/etc/ternd/m.tern",
                   &off);
  EXPECT_FALSE(off.enabled());
  EXPECT_TRUE(off.previous_configured().empty());  // nothing installed
  EXPECT_EQ(off.disabled_reason(), "ota.enabled is false");
}

}  // namespace
}  // namespace ternd::daemon
