# CMake toolchain for 64-bit ARM Linux (Debian arm64) with the Debian cross
# compiler g++-aarch64-linux-gnu and multiarch libraries (cross/setup.sh).
#   cmake -S . -B build-aarch64 -G Ninja \
#     -DCMAKE_TOOLCHAIN_FILE=cross/aarch64-linux-gnu.cmake -DTERND_BUILD_BENCH=OFF
# Test binaries run under qemu-aarch64 (CMAKE_CROSSCOMPILING_EMULATOR), so
# ctest and gtest_discover_tests work unchanged.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(TERND_CROSS_TRIPLET aarch64-linux-gnu)
set(TERND_QEMU qemu-aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/debian-multiarch.cmake)
