// Placeholder: filled in by the work that adds these commands.
#include "tools/ternctl/commands.h"

namespace ternd::ternctl {

void AddWatchCommand(CLI::App& /*app*/, int* /*exit_code*/) {}

}  // namespace ternd::ternctl
