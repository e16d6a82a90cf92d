// ternctl's `--json` outputs. Every command builds its object as a Json
// value (nlohmann::ordered_json: keys print in the order they are added,
// which is the order docs/ternctl.md shows) and prints it with PrintJson, so
// the text is valid JSON whatever the values: strings from the daemon, files
// or the network are escaped, and numbers that JSON cannot hold are null.
#ifndef TERND_TOOLS_TERNCTL_JSON_OUTPUT_H_
#define TERND_TOOLS_TERNCTL_JSON_OUTPUT_H_

#include <nlohmann/json.hpp>
#include <string>

namespace ternd::ternctl {

using Json = nlohmann::ordered_json;

// A floating-point value for a JSON output, rounded to `significant_digits`
// as printf's "%.*g" rounds it (the digits the text outputs show). Integral
// values print without a fraction ("2", not "2.0"). JSON has no infinity or
// NaN: inf, -inf and nan become null, as in the daemon's metrics JSON.
Json JsonNumber(double v, int significant_digits);

// `j` as compact JSON text, without a newline. Bytes that are not UTF-8 are
// replaced by U+FFFD (JSON text is UTF-8); the rest of a string is kept.
std::string JsonText(const Json& j);

// Prints JsonText(j) and a newline on stdout and flushes it: one object per
// line, also when stdout is a pipe (`watch --json`).
void PrintJson(const Json& j);

}  // namespace ternd::ternctl

#endif  // TERND_TOOLS_TERNCTL_JSON_OUTPUT_H_
