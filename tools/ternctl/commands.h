// ternctl's subcommands. Each Add*Commands registers its subcommands on the
// app; each command returns the process exit code.
#ifndef TERND_TOOLS_TERNCTL_COMMANDS_H_
#define TERND_TOOLS_TERNCTL_COMMANDS_H_

#include <CLI/CLI.hpp>

namespace ternd::ternctl {

// `inspect` and `run`: work on a model file, no daemon needed.
void AddModelCommands(CLI::App& app, int* exit_code);

// `bench`: measures a model file on this machine, no daemon needed
// (bench_command.cc).
void AddBenchCommand(CLI::App& app, int* exit_code);

// `gguf-info`: checks a GGUF language model file and prints what the
// importer sees in it (gguf_command.cc).
void AddGgufCommand(CLI::App& app, int* exit_code);

// `infer`, `info`, `health` and `stats`: talk to a running daemon over its
// unix socket (daemon_commands.cc).
void AddDaemonCommands(CLI::App& app, int* exit_code);

// `keygen`, `root`, `sign`, `timestamp`, `bundle`, `publish`: the fleet
// operator's side of signed updates (fleet_commands.cc).
void AddFleetCommands(CLI::App& app, int* exit_code);

// `watch`: follows a fleet's presence, telemetry and update states on the
// broker (watch_command.cc).
void AddWatchCommand(CLI::App& app, int* exit_code);

}  // namespace ternd::ternctl

#endif  // TERND_TOOLS_TERNCTL_COMMANDS_H_
