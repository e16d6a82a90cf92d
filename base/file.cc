#include "base/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "base/fd.h"

namespace ternd {
namespace {

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

Result<std::vector<uint8_t>> ReadFd(int fd, const std::string& what,
                                    size_t max_bytes) {
  std::vector<uint8_t> data;
  uint8_t buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "cannot read %s", what.c_str());
    }
    if (n == 0) break;
    if (data.size() + static_cast<size_t>(n) > max_bytes) {
      return ResourceExhausted("%s is larger than the limit of %zu bytes",
                               what.c_str(), max_bytes);
    }
    data.insert(data.end(), buf, buf + n);
  }
  return data;
}

Result<std::vector<uint8_t>> ReadFile(const std::string& path,
                                      size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, "cannot open %s", path.c_str());
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return ErrnoError(errno, "cannot stat %s", path.c_str());
  }
  if (S_ISDIR(st.st_mode)) {
    return InvalidArgument("%s is a directory, expected a file", path.c_str());
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return ResourceExhausted("%s is %lld bytes, larger than the limit of %zu",
                             path.c_str(), static_cast<long long>(st.st_size),
                             max_bytes);
  }
  return ReadFd(fd.get(), path, max_bytes);
}

Status WriteFileAtomically(const std::string& path,
                           std::span<const uint8_t> data, int mode) {
  std::string tmp = path + ".tmp";
  UniqueFd fd(
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (fd.get() < 0) return ErrnoError(errno, "cannot create %s", tmp.c_str());
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      Status s = ErrnoError(errno, "cannot write %s", tmp.c_str());
      ::unlink(tmp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) {
    Status s = ErrnoError(errno, "cannot fsync %s", tmp.c_str());
    ::unlink(tmp.c_str());
    return s;
  }
  ::close(fd.release());
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status s =
        ErrnoError(errno, "cannot rename %s to %s", tmp.c_str(), path.c_str());
    ::unlink(tmp.c_str());
    return s;
  }
  UniqueFd dir(
      ::open(DirName(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() >= 0) ::fsync(dir.get());
  return Status::Ok();
}

}  // namespace ternd
