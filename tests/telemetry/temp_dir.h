// A temporary directory under $TMPDIR (or /tmp), removed with its contents
// when the object goes out of scope.
#ifndef TERND_TESTS_TELEMETRY_TEMP_DIR_H_
#define TERND_TESTS_TELEMETRY_TEMP_DIR_H_

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace ternd::telemetry::testing {

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string t =
        std::string(base && *base ? base : "/tmp") + "/ternd-telemetry-XXXXXX";
    std::vector<char> buf(t.begin(), t.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const {
    return path_ + "/" + name;
  }

 private:
  std::string path_;
};

}  // namespace ternd::telemetry::testing

#endif  // TERND_TESTS_TELEMETRY_TEMP_DIR_H_
