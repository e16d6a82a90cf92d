// Shadow validation as a release asks for it (Release.shadow_validation,
// ota/metadata.proto; docs/ota.md, "Shadow validation"): the signed
// fields, checked. The device refuses a release whose fields are out of
// range before it downloads anything, and `ternctl sign` refuses to sign
// one; the validation itself runs in the daemon
// (daemon/shadow_validator.h).
#ifndef TERND_OTA_SHADOW_VALIDATION_H_
#define TERND_OTA_SHADOW_VALIDATION_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "base/status.h"
#include "ota/metadata.pb.h"

namespace ternd::ota {

// The longest output name a model file may carry (runtime/format.h
// kMaxNameLength; the daemon checks they agree).
inline constexpr size_t kMaxShadowOutputName = 63;

enum class ShadowMetric {
  // A row agrees when both models pick the same index (the first of equal
  // maxima, runtime/ops.h Argmax) of the compared output: classifiers.
  kArgmax,
  // A row agrees when ||staged - serving|| <= max_relative_l2 *
  // ||serving|| (L2 over the row; a zero serving row needs a zero staged
  // row): regressors, embeddings, anything else.
  kRelativeL2,
};
const char* ShadowMetricName(ShadowMetric metric);  // "argmax", ...

// The manifest's request, checked (ShadowSpecFromRelease).
struct ShadowSpec {
  double sample_rate = 1.0;
  uint64_t min_requests = 1;
  double min_agreement = 1.0;
  // Named by the manifest, or resolved from the compared output at
  // BeginValidation (argmax for more than one value per row).
  std::optional<ShadowMetric> metric;
  double max_relative_l2 = 0;
  uint32_t time_limit_s = 1;
  std::string output;  // empty: the first output
};

// Checks every field of a release's shadow_validation: rates and shares in
// range, a known metric, a bound where relative_l2 needs one, a time
// limit. The error names the field, the value found and what is expected.
Result<ShadowSpec> ShadowSpecFromRelease(const ShadowValidation& v);

}  // namespace ternd::ota

#endif  // TERND_OTA_SHADOW_VALIDATION_H_
