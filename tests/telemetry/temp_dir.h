// A temporary directory under $TMPDIR (or /tmp), removed with its contents
// when the object goes out of scope.
#ifndef TERND_TESTS_TELEMETRY_TEMP_DIR_H_
#define TERND_TESTS_TELEMETRY_TEMP_DIR_H_

#include "tests/support/test_env.h"

namespace ternd::telemetry::testing {

using TempDir = ::ternd::testing::TempDir;  // tests/support/test_env.h

}  // namespace ternd::telemetry::testing

#endif  // TERND_TESTS_TELEMETRY_TEMP_DIR_H_
