# C++ protobuf + gRPC code for containerd's API, generated at build time from the protos that
# Debian's golang-github-containerd-containerd-dev installs (never hand-copied).
#
#   include(${CMAKE_SOURCE_DIR}/cmake/ContainerdProtos.cmake)
#   lazycrypt_containerd_protos(<target>
#     PROTOS services/content/v1/content.proto types/descriptor.proto ...)
#
# PROTOS are paths relative to the API directory (LAZYCRYPT_CONTAINERD_API_DIR); list every proto
# the others import (e.g. types/descriptor.proto, types/mount.proto). The function defines a static
# library <target> holding the generated code, linked PUBLIC to gRPC++ and protobuf, whose include
# directory makes the generated headers available under their Go import paths:
#   #include "github.com/containerd/containerd/api/services/content/v1/content.grpc.pb.h"
# The proto packages are kept (containerd.services.content.v1, ...), so gRPC method paths are the
# ones containerd serves (/containerd.services.content.v1.Content/Write).
#
# protoc's C++ generator rejects `import weak "gogoproto/gogo.proto"`; each proto is first copied
# into the build tree with that import and every (gogoproto.*) option removed (strip-gogoproto.sed).
#
# One binary must link at most one target generated for a given proto: two libraries holding the
# same generated messages would register the same descriptors twice.
include_guard(GLOBAL)

set(LAZYCRYPT_CONTAINERD_API_DIR "/usr/share/gocode/src/github.com/containerd/containerd/api"
    CACHE PATH "containerd's API protos (Debian: golang-github-containerd-containerd-dev)")

find_package(gRPC CONFIG REQUIRED)
find_program(LAZYCRYPT_PROTOC protoc REQUIRED)
find_program(LAZYCRYPT_SED sed REQUIRED)
set(LAZYCRYPT_STRIP_GOGOPROTO_SED ${CMAKE_CURRENT_LIST_DIR}/strip-gogoproto.sed)

function(lazycrypt_containerd_protos target)
  cmake_parse_arguments(P "" "" "PROTOS" ${ARGN})
  if(NOT P_PROTOS)
    message(FATAL_ERROR "lazycrypt_containerd_protos(${target}): no PROTOS given")
  endif()
  if(NOT EXISTS ${LAZYCRYPT_CONTAINERD_API_DIR})
    message(FATAL_ERROR "containerd API protos not found in ${LAZYCRYPT_CONTAINERD_API_DIR}: "
                        "apt-get install golang-github-containerd-containerd-dev")
  endif()
  # Go import path of the API dir: the include root is the directory above github.com/...
  set(import_prefix github.com/containerd/containerd/api)
  set(root ${CMAKE_CURRENT_BINARY_DIR}/${target}_protos)
  set(src_root ${root}/src)
  set(gen_root ${root}/gen)

  set(stripped_all)
  foreach(proto IN LISTS P_PROTOS)
    set(in ${LAZYCRYPT_CONTAINERD_API_DIR}/${proto})
    if(NOT EXISTS ${in})
      message(FATAL_ERROR "lazycrypt_containerd_protos(${target}): ${in} does not exist")
    endif()
    set(out ${src_root}/${import_prefix}/${proto})
    get_filename_component(out_dir ${out} DIRECTORY)
    add_custom_command(
      OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
      COMMAND sh -c "\"$0\" -E -f \"$1\" \"$2\" > \"$3\"" ${LAZYCRYPT_SED}
              ${LAZYCRYPT_STRIP_GOGOPROTO_SED} ${in} ${out}
      DEPENDS ${in} ${LAZYCRYPT_STRIP_GOGOPROTO_SED}
      COMMENT "Stripping gogoproto from containerd ${proto}"
      VERBATIM)
    list(APPEND stripped_all ${out})
  endforeach()

  set(generated_all)
  foreach(proto IN LISTS P_PROTOS)
    string(REGEX REPLACE "\\.proto$" "" stem ${proto})
    set(stem ${gen_root}/${import_prefix}/${stem})
    set(generated ${stem}.pb.cc ${stem}.pb.h ${stem}.grpc.pb.cc ${stem}.grpc.pb.h)
    add_custom_command(
      OUTPUT ${generated}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${gen_root}
      COMMAND ${LAZYCRYPT_PROTOC} -I ${src_root} --cpp_out=${gen_root} --grpc_out=${gen_root}
              --plugin=protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin>
              ${import_prefix}/${proto}
      # Imports between the protos: regenerate when any stripped copy changes.
      DEPENDS ${stripped_all}
      COMMENT "Generating C++/gRPC code for containerd ${proto}"
      VERBATIM)
    list(APPEND generated_all ${generated})
  endforeach()

  add_library(${target} STATIC ${generated_all})
  target_include_directories(${target} SYSTEM PUBLIC ${gen_root})
  target_link_libraries(${target} PUBLIC gRPC::grpc++ protobuf::libprotobuf)
  # Generated code: our warning flags are not its concern.
  target_compile_options(${target} PRIVATE -w)
endfunction()
