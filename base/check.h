// Checks for invariants that can never fail once the program has started
// correctly (programming errors). A failed check prints the condition and its
// location and aborts. Never use these for input, the environment or the
// network: those get a Status.
#ifndef TERND_BASE_CHECK_H_
#define TERND_BASE_CHECK_H_

namespace ternd {
[[noreturn]] void CheckFailed(const char* file, int line, const char* what);
}  // namespace ternd

#define TERND_CHECK(cond)                              \
  do {                                                 \
    if (__builtin_expect(!(cond), 0)) {                \
      ::ternd::CheckFailed(__FILE__, __LINE__, #cond); \
    }                                                  \
  } while (0)

#ifdef NDEBUG
#define TERND_DCHECK(cond) \
  do {                     \
  } while (0)
#else
#define TERND_DCHECK(cond) TERND_CHECK(cond)
#endif

#endif  // TERND_BASE_CHECK_H_
