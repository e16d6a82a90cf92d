// What every MQTT client of the project (the daemon, ternctl publish and
// watch) reads the same way: a broker address and a password file.
#ifndef TERND_NET_BROKER_ADDRESS_H_
#define TERND_NET_BROKER_ADDRESS_H_

#include <string>
#include <string_view>

#include "base/status.h"

namespace ternd::net {

// Parses "HOST", "HOST:PORT" or "[IPV6]:PORT"; without a port, `*port` is
// `default_port` (8883 with TLS, 1883 without). The error says what is
// wrong (callers prepend the flag or key).
Status ParseBrokerAddress(std::string_view text, int default_port,
                          std::string* host, int* port);

// The password in `path`: its first line, without the line ending. Errors
// name the file; the password itself is never in a message.
Result<std::string> ReadPasswordFile(const std::string& path);

}  // namespace ternd::net

#endif  // TERND_NET_BROKER_ADDRESS_H_
