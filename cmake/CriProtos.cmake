# C++ protobuf + gRPC code for the Kubernetes CRI API (runtime.v1), generated at build time from
# the api.proto that Debian 13's golang-github-kubernetes-cri-api-dev ships. The package is
# fetched into the build tree with tests/data/fetch-trixie-package.sh (private apt + dpkg -x; the
# system's apt sources are never touched) on the first build and cached there. Test-only: the CRI
# client drives containerd's CRI plugin like the kubelet does.
#
#   include(${CMAKE_SOURCE_DIR}/cmake/CriProtos.cmake)
#   lazycrypt_cri_protos(<target>)
#
# defines a static library <target> (linked PUBLIC to gRPC++ and protobuf) whose generated header
# is "k8s.io/cri-api/pkg/apis/runtime/v1/api.grpc.pb.h". The proto package is kept (runtime.v1), so
# method paths are the ones containerd serves (/runtime.v1.RuntimeService/RunPodSandbox).
#
# api.proto imports gogoproto (a plain, not weak, import) for Go-only options: the import line and
# every (gogoproto.*) option are stripped (cmake/strip-gogoproto.sed plus one expression here).
include_guard(GLOBAL)

find_package(gRPC CONFIG REQUIRED)
find_program(LAZYCRYPT_PROTOC protoc REQUIRED)
find_program(LAZYCRYPT_SED sed REQUIRED)

set(LAZYCRYPT_CRI_API_CACHE "${CMAKE_BINARY_DIR}/cache/cri-api"
    CACHE PATH "where the trixie golang-github-kubernetes-cri-api-dev package is unpacked")

function(lazycrypt_cri_protos target)
  set(rel k8s.io/cri-api/pkg/apis/runtime/v1)
  set(pkg_dir usr/share/gocode/src/${rel})
  set(root ${CMAKE_CURRENT_BINARY_DIR}/${target}_protos)
  set(stripped ${root}/src/${rel}/api.proto)
  set(gen ${root}/gen/${rel})
  set(generated ${gen}/api.pb.cc ${gen}/api.pb.h ${gen}/api.grpc.pb.cc ${gen}/api.grpc.pb.h)
  # fetch-trixie-package.sh checks that its last argument is executable: the proto's directory is.
  add_custom_command(
    OUTPUT ${stripped}
    COMMAND bash ${CMAKE_SOURCE_DIR}/tests/data/fetch-trixie-package.sh ${LAZYCRYPT_CRI_API_CACHE}
            golang-github-kubernetes-cri-api-dev ${pkg_dir}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${root}/src/${rel}
    COMMAND sh -c "\"$0\" -E -f \"$1\" -e '/^[[:space:]]*import[[:space:]]+\"github.com\\/gogo\\/protobuf\\/gogoproto\\/gogo.proto\";/d' \"$2\" > \"$3\""
            ${LAZYCRYPT_SED} ${CMAKE_SOURCE_DIR}/cmake/strip-gogoproto.sed
            ${LAZYCRYPT_CRI_API_CACHE}/root/${pkg_dir}/api.proto ${stripped}
    DEPENDS ${CMAKE_SOURCE_DIR}/cmake/strip-gogoproto.sed
            ${CMAKE_SOURCE_DIR}/tests/data/fetch-trixie-package.sh
    COMMENT "Fetching (trixie) and stripping gogoproto from the CRI api.proto"
    VERBATIM)
  add_custom_command(
    OUTPUT ${generated}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${root}/gen
    COMMAND ${LAZYCRYPT_PROTOC} -I ${root}/src --cpp_out=${root}/gen --grpc_out=${root}/gen
            --plugin=protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin> ${rel}/api.proto
    DEPENDS ${stripped}
    COMMENT "Generating C++/gRPC code for the CRI api.proto"
    VERBATIM)
  add_library(${target} STATIC ${generated})
  target_include_directories(${target} SYSTEM PUBLIC ${root}/gen)
  target_link_libraries(${target} PUBLIC gRPC::grpc++ protobuf::libprotobuf)
  target_compile_options(${target} PRIVATE -w)
endfunction()
