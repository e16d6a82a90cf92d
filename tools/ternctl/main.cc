// ternctl: the command-line tool for ternd models and daemons.
#include <CLI/CLI.hpp>

#include "tools/ternctl/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"ternctl: inspect and run ternd models"};
  app.set_version_flag("--version", "ternctl " TERND_VERSION);
  app.require_subcommand(1);
  int exit_code = 0;
  ternd::ternctl::AddModelCommands(app, &exit_code);
  ternd::ternctl::AddBenchCommand(app, &exit_code);
  ternd::ternctl::AddGgufCommand(app, &exit_code);
  ternd::ternctl::AddDaemonCommands(app, &exit_code);
  ternd::ternctl::AddFleetCommands(app, &exit_code);
  ternd::ternctl::AddWatchCommand(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
