// Shadow validation's pure parts: the manifest's fields checked, the rows
// compared, the counters and the verdict (daemon/shadow_validator.h). The
// sampler and the shadow job run end to end in shadow_update_test.cc.
#include "daemon/shadow_validator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace ternd::daemon {
namespace {

using ::testing::HasSubstr;

ota::ShadowValidation Valid() {
  ota::ShadowValidation v;
  v.set_sample_rate(0.5);
  v.set_min_requests(100);
  v.set_min_agreement(0.95);
  v.set_time_limit_s(600);
  return v;
}

std::string ErrorOf(const ota::ShadowValidation& v) {
  Result<ShadowSpec> s = ShadowSpecFromRelease(v);
  return s.ok() ? "<ok>" : s.status().message();
}

TEST(ShadowSpecTest, ValidManifestIsTakenAsSigned) {
  ota::ShadowValidation v = Valid();
  v.set_metric("relative_l2");
  v.set_max_relative_l2(0.05);
  v.set_output("probs");
  Result<ShadowSpec> s = ShadowSpecFromRelease(v);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->sample_rate, 0.5);
  EXPECT_EQ(s->min_requests, 100u);
  EXPECT_EQ(s->min_agreement, 0.95);
  EXPECT_EQ(s->metric, ShadowMetric::kRelativeL2);
  EXPECT_EQ(s->max_relative_l2, 0.05);
  EXPECT_EQ(s->time_limit_s, 600u);
  EXPECT_EQ(s->output, "probs");
  // No metric: resolved from the output when validation begins.
  EXPECT_FALSE(ShadowSpecFromRelease(Valid())->metric.has_value());
}

TEST(ShadowSpecTest, BadRatesAndThresholdsNameTheFieldAndValue) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (double rate : {0.0, -0.1, 1.5, nan}) {
    ota::ShadowValidation v = Valid();
    v.set_sample_rate(rate);
    EXPECT_THAT(ErrorOf(v), HasSubstr("shadow_validation.sample_rate is "))
        << rate;
    EXPECT_THAT(ErrorOf(v),
                HasSubstr("expected a share of requests in (0, 1]"));
  }
  ota::ShadowValidation v = Valid();
  v.set_sample_rate(1.0);
  EXPECT_EQ(ErrorOf(v), "<ok>");

  v = Valid();
  v.set_min_requests(0);
  EXPECT_THAT(ErrorOf(v), HasSubstr("shadow_validation.min_requests is 0"));

  for (double a : {-0.01, 1.01, nan}) {
    v = Valid();
    v.set_min_agreement(a);
    EXPECT_THAT(ErrorOf(v), HasSubstr("shadow_validation.min_agreement is "))
        << a;
    EXPECT_THAT(ErrorOf(v), HasSubstr("[0, 1]"));
  }
  v = Valid();
  v.set_min_agreement(0);  // a bound of 0 accepts any agreement: allowed
  EXPECT_EQ(ErrorOf(v), "<ok>");

  v = Valid();
  v.set_time_limit_s(0);
  EXPECT_THAT(ErrorOf(v), HasSubstr("shadow_validation.time_limit_s is 0"));

  v = Valid();
  v.set_max_relative_l2(-1);
  EXPECT_THAT(ErrorOf(v),
              HasSubstr("shadow_validation.max_relative_l2 is -1; expected"));
  v = Valid();
  v.set_metric("relative_l2");
  EXPECT_THAT(ErrorOf(v),
              HasSubstr("max_relative_l2 is 0 with metric relative_l2"));

  v = Valid();
  v.set_metric("cosine");
  EXPECT_THAT(ErrorOf(v),
              HasSubstr("shadow_validation.metric is \"cosine\"; expected "
                        "\"argmax\", \"relative_l2\""));
  v = Valid();
  v.set_metric("next_token");
  Result<ShadowSpec> lm = ShadowSpecFromRelease(v);
  ASSERT_FALSE(lm.ok());
  EXPECT_EQ(lm.status().code(), StatusCode::kUnimplemented);
  EXPECT_THAT(lm.status().message(), HasSubstr("language models"));

  v = Valid();
  v.set_output(std::string(64, 'o'));
  EXPECT_THAT(ErrorOf(v), HasSubstr("shadow_validation.output is 64 bytes"));
}

// Every combination of awkward values: an accepted spec is always within
// range, a refusal always names a shadow_validation field.
TEST(ShadowSpecTest, AwkwardValuesAreAcceptedOnlyWithinRange) {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double reals[] = {-inf, -1, -0.0,      0,   1e-300,
                          0.5,  1,  1.0000001, inf, nan};
  const uint64_t counts[] = {0, 1, ~uint64_t{0}};
  const uint32_t seconds[] = {0, 1, ~uint32_t{0}};
  const char* metrics[] = {"", "argmax", "relative_l2", "ARGMAX", "l2"};
  int accepted = 0;
  for (double rate : reals) {
    for (double agreement : reals) {
      for (double bound : reals) {
        for (uint64_t n : counts) {
          for (uint32_t t : seconds) {
            for (const char* metric : metrics) {
              ota::ShadowValidation v;
              v.set_sample_rate(rate);
              v.set_min_agreement(agreement);
              v.set_max_relative_l2(bound);
              v.set_min_requests(n);
              v.set_time_limit_s(t);
              v.set_metric(metric);
              Result<ShadowSpec> s = ShadowSpecFromRelease(v);
              if (!s.ok()) {
                ASSERT_THAT(s.status().message(),
                            ::testing::StartsWith("shadow_validation."));
                continue;
              }
              ++accepted;
              ASSERT_TRUE(s->sample_rate > 0 && s->sample_rate <= 1);
              ASSERT_TRUE(s->min_agreement >= 0 && s->min_agreement <= 1);
              ASSERT_TRUE(std::isfinite(s->max_relative_l2) &&
                          s->max_relative_l2 >= 0);
              ASSERT_GE(s->min_requests, 1u);
              ASSERT_GE(s->time_limit_s, 1u);
              if (s->metric == ShadowMetric::kRelativeL2) {
                ASSERT_GT(s->max_relative_l2, 0);
              }
            }
          }
        }
      }
    }
  }
  EXPECT_GT(accepted, 0);
}

TEST(CompareRowsTest, ArgmaxCountsRowsWithTheSameIndex) {
  // Three rows of four: same winner, other winner, a tie (first wins).
  const float serving[] = {0.1f, 0.7f, 0.1f, 0.1f,  //
                           0.4f, 0.3f, 0.2f, 0.1f,  //
                           0.5f, 0.5f, 0.0f, 0.0f};
  const float staged[] = {0.0f, 0.9f, 0.05f, 0.05f,  //
                          0.1f, 0.2f, 0.6f,  0.1f,   //
                          0.5f, 0.4f, 0.1f,  0.0f};
  double worst = 0;
  EXPECT_EQ(
      CompareRows(ShadowMetric::kArgmax, 0, serving, staged, 3, 4, &worst), 2u);
  EXPECT_EQ(worst, 0);  // argmax measures no distance
  EXPECT_EQ(
      CompareRows(ShadowMetric::kArgmax, 0, serving, serving, 3, 4, &worst),
      3u);
}

TEST(CompareRowsTest, RelativeL2AgreesWithinTheBoundOnly) {
  const float serving[] = {3.0f, 4.0f,  //
                           3.0f, 4.0f,  //
                           0.0f, 0.0f,  //
                           0.0f, 0.0f};
  const float staged[] = {3.0f, 4.1f,   // 0.1 / 5 = 0.02
                          3.0f, 5.0f,   // 1 / 5 = 0.2
                          0.0f, 0.0f,   // both zero: agrees
                          0.0f, 1.0f};  // zero serving row: never within
  double worst = 0;
  EXPECT_EQ(CompareRows(ShadowMetric::kRelativeL2, 0.05, serving, staged, 4, 2,
                        &worst),
            2u);
  EXPECT_TRUE(std::isinf(worst));
  worst = 0;
  EXPECT_EQ(CompareRows(ShadowMetric::kRelativeL2, 0.05, serving, staged, 2, 2,
                        &worst),
            1u);
  EXPECT_NEAR(worst, 0.2, 1e-6);
  worst = 0;
  EXPECT_EQ(CompareRows(ShadowMetric::kRelativeL2, 0.25, serving, staged, 2, 2,
                        &worst),
            2u);
}

TEST(CompareRowsTest, IntegerOutputsCompareExactly) {
  const int32_t serving[] = {1, 2, 3};
  const int32_t staged[] = {1, 0, 3};
  EXPECT_EQ(CompareRowsExact(serving, staged, 3, 1), 2u);
  EXPECT_EQ(CompareRowsExact(serving, staged, 1, 3), 0u);
}

TEST(AgreementStatsTest, PendingUntilMinRequestsThenDecidedByRows) {
  AgreementStats s;
  s.progress().required = 4;
  s.progress().min_agreement = 0.75;
  s.progress().output = "probs";
  s.Add(1, 1, 0);
  s.Add(2, 2, 0);
  s.Add(1, 0, 0);
  EXPECT_EQ(s.Decide(), AgreementStats::Verdict::kPending);
  EXPECT_EQ(s.progress().requests, 3u);
  EXPECT_EQ(s.progress().rows, 4u);
  s.Add(4, 3, 0);  // 6 of 8 rows: exactly the bound
  EXPECT_EQ(s.Decide(), AgreementStats::Verdict::kAgrees);
  EXPECT_DOUBLE_EQ(s.progress().agreement(), 0.75);
  s.Add(1, 0, 0);  // 6 of 9
  EXPECT_EQ(s.Decide(), AgreementStats::Verdict::kDisagrees);
  EXPECT_THAT(s.Summary(),
              HasSubstr("agreement 0.667 (6 of 9 rows agree by argmax on "
                        "output 'probs', 5 requests compared; required 0.750 "
                        "over 4 requests)"));
  s.Drop();
  EXPECT_EQ(s.progress().dropped, 1u);
}

TEST(AgreementStatsTest, RelativeL2SummaryNamesTheWorstDistance) {
  AgreementStats s;
  s.progress().metric = ShadowMetric::kRelativeL2;
  s.progress().required = 1;
  s.progress().min_agreement = 1.0;
  s.progress().output = "y";
  s.Add(2, 1, 0.5);
  s.Add(1, 1, 0.01);
  EXPECT_EQ(s.Decide(), AgreementStats::Verdict::kDisagrees);
  EXPECT_THAT(s.Summary(), HasSubstr("by relative_l2"));
  EXPECT_THAT(s.Summary(), HasSubstr("worst relative L2 0.5"));
}

TEST(AgreementStatsTest, NoRowsIsNoAgreement) {
  AgreementStats s;
  EXPECT_EQ(s.progress().agreement(), 0.0);
}

}  // namespace
}  // namespace ternd::daemon
