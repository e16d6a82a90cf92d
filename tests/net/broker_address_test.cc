// Broker addresses and password files, as the daemon and ternctl read them.
#include "net/broker_address.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/support/test_env.h"

namespace ternd::net {
namespace {

TEST(BrokerAddressTest, HostPortAndDefaults) {
  std::string host;
  int port = 0;
  ASSERT_TRUE(ParseBrokerAddress("fleet.example", 8883, &host, &port).ok());
  EXPECT_EQ(host, "fleet.example");
  EXPECT_EQ(port, 8883);
  ASSERT_TRUE(ParseBrokerAddress("10.0.0.5:1884", 8883, &host, &port).ok());
  EXPECT_EQ(host, "10.0.0.5");
  EXPECT_EQ(port, 1884);
  ASSERT_TRUE(ParseBrokerAddress("[::1]:8884", 1883, &host, &port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 8884);
  ASSERT_TRUE(ParseBrokerAddress("[::1]", 1883, &host, &port).ok());
  EXPECT_EQ(port, 1883);
}

TEST(BrokerAddressTest, BadAddressesSayWhy) {
  std::string host;
  int port = 0;
  auto error = [&](const char* text) {
    Status s = ParseBrokerAddress(text, 8883, &host, &port);
    EXPECT_FALSE(s.ok()) << text;
    return std::string(s.message());
  };
  EXPECT_EQ(error("host:99999"), "'host:99999': port '99999' is not 1..65535");
  EXPECT_EQ(error("host:"), "'host:': port '' is not 1..65535");
  EXPECT_EQ(error(":1883"), "':1883' has no host");
  EXPECT_EQ(error("[::1"), "'[::1': missing ']'");
  EXPECT_EQ(error("[::1]x"), "'[::1]x' is not HOST:PORT");
}

TEST(BrokerAddressTest, PasswordIsTheFirstLine) {
  testing::TempDir dir;
  const std::string path = dir.File("secret");
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("s3cret\r\nsecond line\n", f);
  std::fclose(f);
  Result<std::string> p = ReadPasswordFile(path);
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(*p, "s3cret");
  Result<std::string> missing = ReadPasswordFile(dir.File("missing"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("missing"),
            std::string::npos);
}

}  // namespace
}  // namespace ternd::net
