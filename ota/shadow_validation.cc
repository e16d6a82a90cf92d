#include "ota/shadow_validation.h"

#include <cmath>

namespace ternd::ota {
namespace {

bool InUnitInterval(double x) { return std::isfinite(x) && x >= 0 && x <= 1; }

}  // namespace

const char* ShadowMetricName(ShadowMetric metric) {
  switch (metric) {
    case ShadowMetric::kArgmax:
      return "argmax";
    case ShadowMetric::kRelativeL2:
      return "relative_l2";
  }
  return "unknown";
}

Result<ShadowSpec> ShadowSpecFromRelease(const ShadowValidation& v) {
  ShadowSpec s;
  if (!std::isfinite(v.sample_rate()) || v.sample_rate() <= 0 ||
      v.sample_rate() > 1) {
    return InvalidArgument(
        "shadow_validation.sample_rate is %g; expected a share of requests "
        "in (0, 1]",
        v.sample_rate());
  }
  s.sample_rate = v.sample_rate();
  if (v.min_requests() == 0) {
    return InvalidArgument(
        "shadow_validation.min_requests is 0; expected at least 1 request "
        "to compare");
  }
  s.min_requests = v.min_requests();
  if (!InUnitInterval(v.min_agreement())) {
    return InvalidArgument(
        "shadow_validation.min_agreement is %g; expected a share of rows in "
        "[0, 1]",
        v.min_agreement());
  }
  s.min_agreement = v.min_agreement();
  if (v.metric() == "argmax") {
    s.metric = ShadowMetric::kArgmax;
  } else if (v.metric() == "relative_l2") {
    s.metric = ShadowMetric::kRelativeL2;
  } else if (v.metric() == "next_token") {
    return Unimplemented(
        "shadow_validation.metric \"next_token\" (language models) is not "
        "supported by this daemon; expected \"argmax\" or \"relative_l2\"");
  } else if (!v.metric().empty()) {
    return InvalidArgument(
        "shadow_validation.metric is \"%.64s\"; expected \"argmax\", "
        "\"relative_l2\" or empty (argmax for outputs of more than one value "
        "per row)",
        v.metric().c_str());
  }
  if (!std::isfinite(v.max_relative_l2()) || v.max_relative_l2() < 0) {
    return InvalidArgument(
        "shadow_validation.max_relative_l2 is %g; expected a distance >= 0",
        v.max_relative_l2());
  }
  if (s.metric == ShadowMetric::kRelativeL2 && v.max_relative_l2() == 0) {
    return InvalidArgument(
        "shadow_validation.max_relative_l2 is 0 with metric relative_l2; "
        "expected the largest relative L2 distance of an agreeing row, > 0");
  }
  s.max_relative_l2 = v.max_relative_l2();
  if (v.time_limit_s() == 0) {
    return InvalidArgument(
        "shadow_validation.time_limit_s is 0; expected the seconds allowed "
        "to see min_requests requests, > 0");
  }
  s.time_limit_s = v.time_limit_s();
  if (v.output().size() > kMaxShadowOutputName) {
    return InvalidArgument(
        "shadow_validation.output is %zu bytes; expected an output name of "
        "at most %d",
        v.output().size(), static_cast<int>(kMaxShadowOutputName));
  }
  s.output = v.output();
  return s;
}

}  // namespace ternd::ota
