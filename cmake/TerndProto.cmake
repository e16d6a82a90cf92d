# ternd_proto_library(NAME path/to/schema.proto ...)
#
# Generates C++ for .proto files given relative to the project root, so that
# "runtime/model.proto" becomes "<build>/runtime/model.pb.h" and is included
# as "runtime/model.pb.h". Creates a static library NAME with the generated
# code, linked to libprotobuf.
function(ternd_proto_library name)
  set(srcs)
  foreach(proto IN LISTS ARGN)
    get_filename_component(dir "${proto}" DIRECTORY)
    get_filename_component(stem "${proto}" NAME_WE)
    set(out_cc "${PROJECT_BINARY_DIR}/${dir}/${stem}.pb.cc")
    set(out_h "${PROJECT_BINARY_DIR}/${dir}/${stem}.pb.h")
    add_custom_command(
      OUTPUT "${out_cc}" "${out_h}"
      COMMAND protobuf::protoc --cpp_out=${PROJECT_BINARY_DIR}
              -I${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/${proto}
      DEPENDS "${PROJECT_SOURCE_DIR}/${proto}" protobuf::protoc
      COMMENT "protoc ${proto}"
      VERBATIM)
    list(APPEND srcs "${out_cc}")
  endforeach()
  add_library(${name} STATIC ${srcs})
  target_include_directories(${name} PUBLIC ${PROJECT_BINARY_DIR})
  target_link_libraries(${name} PUBLIC protobuf::libprotobuf)
  # Generated code is not ours to fix.
  target_compile_options(${name} PRIVATE -w)
endfunction()
