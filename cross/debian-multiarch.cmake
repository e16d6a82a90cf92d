# Shared part of the Debian cross toolchains: compilers named after
# TERND_CROSS_TRIPLET, libraries and headers from the multiarch directories
# (/usr/lib/<triplet>, /usr/include), programs (protoc) from the host.
set(CMAKE_C_COMPILER ${TERND_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${TERND_CROSS_TRIPLET}-g++)
set(CMAKE_LIBRARY_ARCHITECTURE ${TERND_CROSS_TRIPLET})

# Debian's multiarch layout keeps the target's libraries in the host's root,
# so the root is "/" and the library architecture picks the directory.
set(CMAKE_FIND_ROOT_PATH /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)  # protoc runs on the host
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_IGNORE_PATH /usr/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/cmake)

# pkg-config (libsystemd, libmosquitto, libzstd, libcurl) reads the target's
# .pc files only, so that -L and -I flags never point at the host's copies.
set(ENV{PKG_CONFIG_LIBDIR}
    "/usr/lib/${TERND_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# Test binaries run under qemu-user with the target's loader and libraries.
find_program(TERND_QEMU_PROGRAM ${TERND_QEMU})
if(TERND_QEMU_PROGRAM)
  set(CMAKE_CROSSCOMPILING_EMULATOR
      ${TERND_QEMU_PROGRAM};-L;/usr/${TERND_CROSS_TRIPLET})
endif()
