# Shared part of the Debian cross toolchains: compilers named after
# TERND_CROSS_TRIPLET, libraries and headers from the multiarch directories
# (/usr/lib/<triplet>, /usr/include), programs (protoc) from the host.
#
# -DTERND_SYSROOT=DIR takes the target's libraries and headers from DIR
# first, a tree unpacked by `cross/setup.sh --sysroot DIR ARCH` (the
# runtime's libraries only: use with -DTERND_RUNTIME_ONLY=ON), and runs the
# test binaries with DIR's loader and libraries.
set(CMAKE_C_COMPILER ${TERND_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${TERND_CROSS_TRIPLET}-g++)
set(CMAKE_LIBRARY_ARCHITECTURE ${TERND_CROSS_TRIPLET})
# try_compile projects read this file again and need the same value.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES TERND_SYSROOT)

# Debian's multiarch layout keeps the target's libraries in the host's root,
# so the root is "/" and the library architecture picks the directory.
# Header-only dependencies (Eigen) always come from the host's /usr/include.
if(TERND_SYSROOT)
  set(CMAKE_FIND_ROOT_PATH ${TERND_SYSROOT} /)
  # The linker looks for the libraries of libraries (libprotobuf's libz) in
  # the sysroot too.
  set(rpath_link "-Wl,-rpath-link,${TERND_SYSROOT}/usr/lib/${TERND_CROSS_TRIPLET}:${TERND_SYSROOT}/lib/${TERND_CROSS_TRIPLET}")
  set(CMAKE_EXE_LINKER_FLAGS_INIT "${rpath_link}")
  set(CMAKE_SHARED_LINKER_FLAGS_INIT "${rpath_link}")
  set(CMAKE_MODULE_LINKER_FLAGS_INIT "${rpath_link}")
else()
  set(CMAKE_FIND_ROOT_PATH /)
endif()
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)  # protoc runs on the host
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_IGNORE_PATH /usr/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/cmake)

# pkg-config (libsystemd, libmosquitto, libzstd, libcurl) reads the target's
# .pc files only, so that -L and -I flags never point at the host's copies.
if(TERND_SYSROOT)
  set(ENV{PKG_CONFIG_LIBDIR}
      "${TERND_SYSROOT}/usr/lib/${TERND_CROSS_TRIPLET}/pkgconfig:${TERND_SYSROOT}/usr/share/pkgconfig")
  set(ENV{PKG_CONFIG_SYSROOT_DIR} "${TERND_SYSROOT}")
else()
  set(ENV{PKG_CONFIG_LIBDIR}
      "/usr/lib/${TERND_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig")
endif()
set(ENV{PKG_CONFIG_PATH} "")

# Test binaries run under qemu-user with the target's loader and libraries,
# both from one glibc build: the multiarch libc6:<arch> (/lib/ld-linux-*,
# /lib/<triplet>), so the prefix is "/", or the sysroot's. Not
# /usr/<triplet>: that holds the cross compiler's own glibc
# (libc6-<arch>-cross), usually an older build than libc6:<arch>, and qemu
# falls back to "/" for files the prefix lacks, so that loader would run
# with the multiarch libc.so.6 (found through the host's /etc/ld.so.cache).
# A loader and a libc.so.6 of different builds disagree on their private
# interface: the first pthread_create then spins forever.
find_program(TERND_QEMU_PROGRAM ${TERND_QEMU})
if(TERND_QEMU_PROGRAM)
  if(TERND_SYSROOT)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${TERND_QEMU_PROGRAM};-L;${TERND_SYSROOT})
  else()
    set(CMAKE_CROSSCOMPILING_EMULATOR ${TERND_QEMU_PROGRAM};-L;/)
  endif()
endif()
