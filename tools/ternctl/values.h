// Parsing numeric input for ternctl: "1, 2.5 -3e2" from a file, stdin or the
// command line.
#ifndef TERND_TOOLS_TERNCTL_VALUES_H_
#define TERND_TOOLS_TERNCTL_VALUES_H_

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace ternd::ternctl {

// Numbers separated by commas, spaces, tabs or newlines; '#' starts a comment
// that runs to the end of the line. The error names `origin`, the line and
// the text that is not a number.
Result<std::vector<float>> ParseValues(std::string_view text,
                                       const std::string& origin);

// Reads the text of FILE, or of stdin when path is "-".
Result<std::string> ReadText(const std::string& path);

}  // namespace ternd::ternctl

#endif  // TERND_TOOLS_TERNCTL_VALUES_H_
