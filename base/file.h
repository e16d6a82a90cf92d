// Whole-file reading and crash-safe writing.
//
// WriteFileAtomically writes to a temporary file in the same directory,
// fsyncs it, renames it over the target and fsyncs the directory, so after a
// power cut the target holds either the old or the new contents, never a mix.
#ifndef TERND_BASE_FILE_H_
#define TERND_BASE_FILE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace ternd {

// ReadFile's default limit: 4 GiB, or all a 32-bit size_t can hold.
inline constexpr size_t kMaxReadFileBytes =
    sizeof(size_t) > 4 ? static_cast<size_t>(uint64_t{1} << 32) : SIZE_MAX;

// Reads the whole file. Refuses files larger than `max_bytes` with an error
// naming the path and both sizes.
Result<std::vector<uint8_t>> ReadFile(const std::string& path,
                                      size_t max_bytes = kMaxReadFileBytes);

// Reads all of standard input (or any fd) up to `max_bytes`.
Result<std::vector<uint8_t>> ReadFd(int fd, const std::string& what,
                                    size_t max_bytes);

Status WriteFileAtomically(const std::string& path,
                           std::span<const uint8_t> data, int mode = 0644);

}  // namespace ternd

#endif  // TERND_BASE_FILE_H_
