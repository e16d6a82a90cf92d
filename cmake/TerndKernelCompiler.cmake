# Which compiler builds each x86 SIMD kernel source (runtime/kernels/).
#
# Neither compiler is faster on every kernel (docs/performance.md, "g++ and
# clang", measured side by side): clang 19 keeps the batched avx512vnni
# product's accumulators in registers (batch 8 at 0.92-0.94 of the
# vpdpbusd peak against g++ 12's 0.74), while g++ 12 is faster on the
# batch-1 streams from memory and on the AVX2, SSSE3 and 1.6-bit loops. So
# the sources measured faster with clang are marked CLANG and compiled with
# it when it is installed (scripts/deps.sh installs clang-19); the rest of
# the kernels and of the project keep the main compiler:
#
#   TERND_KERNEL_COMPILER=auto     (default) clang++-19 for the CLANG
#                                  sources when found, unless the main
#                                  compiler is clang already, the build is
#                                  a sanitizer or fuzz build (the kernels
#                                  stay instrumented), or it cross compiles
#   TERND_KERNEL_COMPILER=clang    clang++-19 (TERND_KERNEL_CLANG) for every
#                                  kernel source; an error when missing
#   TERND_KERNEL_COMPILER=default  the main compiler for everything
#
# ternd_kernel_sources(TARGET [CLANG] FLAGS <flags...> SOURCES <files...>)
# adds SIMD sources to TARGET with their ISA flags, through clang (as
# objects built by a custom command with the target's include paths, the
# build type's flags, -Wall -Wextra and -Werror when TERND_WERROR) or
# through the main compiler.
set(TERND_KERNEL_COMPILER "auto" CACHE STRING
    "Compiler of the SIMD kernels: auto, clang or default (the main compiler)")
set_property(CACHE TERND_KERNEL_COMPILER PROPERTY STRINGS auto clang default)
find_program(TERND_KERNEL_CLANG NAMES clang++-19
             DOC "clang++ used for the SIMD kernels (TERND_KERNEL_COMPILER)")

set(TERND_KERNELS_WITH_CLANG OFF)
set(TERND_KERNELS_ALL_CLANG OFF)
if(TERND_KERNEL_COMPILER STREQUAL "clang")
  if(NOT TERND_KERNEL_CLANG)
    message(FATAL_ERROR
      "TERND_KERNEL_COMPILER=clang but clang++-19 was not found: install "
      "clang-19 (scripts/deps.sh does) or set TERND_KERNEL_CLANG to a "
      "clang++ of version 19 or later")
  endif()
  set(TERND_KERNELS_WITH_CLANG ON)
  set(TERND_KERNELS_ALL_CLANG ON)
elseif(TERND_KERNEL_COMPILER STREQUAL "auto")
  if(TERND_KERNEL_CLANG AND NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang"
     AND NOT TERND_SANITIZE AND NOT TERND_FUZZ AND NOT CMAKE_CROSSCOMPILING)
    set(TERND_KERNELS_WITH_CLANG ON)
  endif()
elseif(NOT TERND_KERNEL_COMPILER STREQUAL "default")
  message(FATAL_ERROR "TERND_KERNEL_COMPILER='${TERND_KERNEL_COMPILER}': "
                      "expected auto, clang or default")
endif()
if(TERND_KERNELS_WITH_CLANG)
  execute_process(COMMAND ${TERND_KERNEL_CLANG} --version
                  OUTPUT_VARIABLE _clang_version ERROR_QUIET)
  string(REGEX MATCH "version [0-9.]+" _clang_version "${_clang_version}")
  if(TERND_KERNELS_ALL_CLANG)
    message(STATUS "SIMD kernels: ${TERND_KERNEL_CLANG} (${_clang_version})")
  else()
    message(STATUS "SIMD kernels: ${TERND_KERNEL_CLANG} (${_clang_version}) "
                   "for the sources marked CLANG, the main compiler for the "
                   "others")
  endif()
else()
  message(STATUS "SIMD kernels: the main compiler (${CMAKE_CXX_COMPILER_ID} "
                 "${CMAKE_CXX_COMPILER_VERSION})")
endif()

function(ternd_kernel_sources target)
  cmake_parse_arguments(K "CLANG" "" "FLAGS;SOURCES" ${ARGN})
  if(NOT (TERND_KERNELS_ALL_CLANG OR (TERND_KERNELS_WITH_CLANG AND K_CLANG)))
    target_sources(${target} PRIVATE ${K_SOURCES})
    set_source_files_properties(${K_SOURCES} TARGET_DIRECTORY ${target}
                                PROPERTIES COMPILE_OPTIONS "${K_FLAGS}")
    return()
  endif()
  string(TOUPPER "${CMAKE_BUILD_TYPE}" _type)
  separate_arguments(_type_flags UNIX_COMMAND
                     "${CMAKE_CXX_FLAGS} ${CMAKE_CXX_FLAGS_${_type}}")
  set(_warn -Wall -Wextra)
  if(TERND_WERROR)
    list(APPEND _warn -Werror)
  endif()
  set(_launcher)
  if(CCACHE_PROGRAM)
    set(_launcher ${CCACHE_PROGRAM})
  endif()
  set(_objs)
  # (without /usr/include: an explicit -I of it breaks #include_next)
  set(_incs
      "$<FILTER:$<TARGET_PROPERTY:${target},INCLUDE_DIRECTORIES>,EXCLUDE,^/usr/include/?$>")
  set(_defs "$<TARGET_PROPERTY:${target},COMPILE_DEFINITIONS>")
  foreach(src ${K_SOURCES})
    get_filename_component(_name ${src} NAME_WE)
    file(RELATIVE_PATH _rel ${PROJECT_SOURCE_DIR} ${src})
    set(_obj ${CMAKE_CURRENT_BINARY_DIR}/clang/${_name}.o)
    add_custom_command(
      OUTPUT ${_obj}
      COMMAND ${_launcher} ${TERND_KERNEL_CLANG} -std=c++20 -fPIC
              ${_type_flags} ${_warn} ${K_FLAGS}
              "$<$<BOOL:${_defs}>:-D$<JOIN:${_defs},;-D>>"
              "$<$<BOOL:${_incs}>:-I$<JOIN:${_incs},;-I>>"
              -MD -MF ${_obj}.d -c ${src} -o ${_obj}
      DEPENDS ${src}
      DEPFILE ${_obj}.d
      COMMENT "Building CXX object ${_rel} with clang"
      COMMAND_EXPAND_LISTS
      VERBATIM)
    list(APPEND _objs ${_obj})
  endforeach()
  # The rules live with a target of this directory; TARGET (maybe in the
  # parent directory) links the objects and builds after it.
  list(GET K_SOURCES 0 _first)
  get_filename_component(_first ${_first} NAME_WE)
  add_custom_target(${target}_clang_${_first} DEPENDS ${_objs})
  add_dependencies(${target} ${target}_clang_${_first})
  target_sources(${target} PRIVATE ${_objs})
  set_source_files_properties(${_objs} TARGET_DIRECTORY ${target}
                              PROPERTIES EXTERNAL_OBJECT TRUE GENERATED TRUE)
endfunction()
