# CMake toolchain for 32-bit ARM Linux (Debian armhf: armv7-a, VFPv3-D16,
# NEON optional) with g++-arm-linux-gnueabihf and multiarch libraries.
# armhf builds only the reference ternary kernel (see docs/kernels.md).
# The runtime and its tests build against a sysroot (no armhf multiarch
# packages needed; cross/setup.sh --sysroot):
#   cmake -S . -B build-armhf -G Ninja \
#     -DCMAKE_TOOLCHAIN_FILE=cross/arm-linux-gnueabihf.cmake -DTERND_BUILD_BENCH=OFF \
#     -DTERND_RUNTIME_ONLY=ON -DTERND_SYSROOT=$PWD/build-armhf-sysroot
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(TERND_CROSS_TRIPLET arm-linux-gnueabihf)
set(TERND_QEMU qemu-arm)
include(${CMAKE_CURRENT_LIST_DIR}/debian-multiarch.cmake)
