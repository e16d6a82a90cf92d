#include "net/broker_address.h"

#include <cstdlib>
#include <vector>

#include "base/file.h"

namespace ternd::net {

Status ParseBrokerAddress(std::string_view text, int default_port,
                          std::string* host, int* port) {
  const std::string t(text);
  *port = default_port;
  std::string rest = t;
  if (!rest.empty() && rest[0] == '[') {  // [v6]:port
    const size_t close = rest.find(']');
    if (close == std::string::npos) {
      return InvalidArgument("'%s': missing ']'", t.c_str());
    }
    *host = rest.substr(1, close - 1);
    rest = rest.substr(close + 1);
    if (!rest.empty() && rest[0] != ':') {
      return InvalidArgument("'%s' is not HOST:PORT", t.c_str());
    }
  } else {
    const size_t colon = rest.rfind(':');
    *host = rest.substr(0, colon);
    rest = colon == std::string::npos ? "" : rest.substr(colon);
  }
  if (!rest.empty()) {
    char* end = nullptr;
    const long p = std::strtol(rest.c_str() + 1, &end, 10);
    if (end == rest.c_str() + 1 || *end != '\0' || p < 1 || p > 65535) {
      return InvalidArgument("'%s': port '%s' is not 1..65535", t.c_str(),
                             rest.c_str() + 1);
    }
    *port = static_cast<int>(p);
  }
  if (host->empty()) return InvalidArgument("'%s' has no host", t.c_str());
  return Status::Ok();
}

Result<std::string> ReadPasswordFile(const std::string& path) {
  TERND_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFile(path, 4096));
  std::string password(bytes.begin(), bytes.end());
  const size_t eol = password.find_first_of("\r\n");
  if (eol != std::string::npos) password.resize(eol);
  return password;
}

}  // namespace ternd::net
