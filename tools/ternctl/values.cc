#include "tools/ternctl/values.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "base/file.h"

namespace ternd::ternctl {

Result<std::vector<float>> ParseValues(std::string_view text,
                                       const std::string& origin) {
  std::vector<float> out;
  size_t line = 1;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '\n') {
      ++line;
      ++i;
    } else if (c == ' ' || c == '\t' || c == '\r' || c == ',') {
      ++i;
    } else if (c == '#') {
      while (i < text.size() && text[i] != '\n') ++i;
    } else {
      size_t end = i;
      while (end < text.size() && text[end] != ' ' && text[end] != ',' &&
             text[end] != '\n' && text[end] != '\t' && text[end] != '\r') {
        ++end;
      }
      std::string token(text.substr(i, end - i));
      char* stop = nullptr;
      errno = 0;
      float v = std::strtof(token.c_str(), &stop);
      if (stop != token.c_str() + token.size() || errno == ERANGE ||
          !std::isfinite(v)) {
        return InvalidArgument("%s:%zu: '%.40s' is not a finite number",
                               origin.c_str(), line, token.c_str());
      }
      out.push_back(v);
      i = end;
    }
  }
  return out;
}

Result<std::string> ReadText(const std::string& path) {
  Result<std::vector<uint8_t>> bytes =
      path == "-" ? ReadFd(STDIN_FILENO, "stdin", size_t{256} << 20)
                  : ReadFile(path, size_t{256} << 20);
  if (!bytes.ok()) return bytes.status();
  return std::string(bytes->begin(), bytes->end());
}

}  // namespace ternd::ternctl
