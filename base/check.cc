#include "base/check.h"

#include <cstdio>
#include <cstdlib>

namespace ternd {

void CheckFailed(const char* file, int line, const char* what) {
  std::fprintf(stderr, "<2>ternd: internal check failed at %s:%d: %s\n", file,
               line, what);
  std::fflush(stderr);
  std::abort();
}

}  // namespace ternd
