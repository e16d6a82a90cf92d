// A JSON string literal for any bytes: quotes, backslash and control
// characters escaped (the rest passes as is, so UTF-8 stays UTF-8). For the
// `--json` outputs of the tools and the metrics' JSON exposition.
#ifndef TERND_BASE_JSON_H_
#define TERND_BASE_JSON_H_

#include <cstdio>
#include <string>
#include <string_view>

namespace ternd {

inline std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

}  // namespace ternd

#endif  // TERND_BASE_JSON_H_
