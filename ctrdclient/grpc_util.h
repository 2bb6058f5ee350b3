// The edge between gRPC and lazycrypt for containerd clients: per-call metadata (namespace,
// lease), deadlines, and grpc::Status → lazycrypt::Status. Thread-safe (no state).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>

#include "common/status.h"

namespace lazycrypt::ctrdclient {

// gRPC metadata keys containerd reads (namespaces.GRPCHeader, leases' grpc header).
inline constexpr std::string_view kNamespaceHeader = "containerd-namespace";
inline constexpr std::string_view kLeaseHeader = "containerd-lease";

// What every call of a session carries. An empty lease sends no lease header.
struct CallScope {
  std::string ns = "default";
  std::string lease;
};

// The (key, value) metadata pairs for a scope, in the order they are sent.
std::vector<std::pair<std::string, std::string>> CallMetadata(const CallScope& scope);

// A fresh context with the scope's metadata and a deadline `timeout` from now.
std::unique_ptr<grpc::ClientContext> NewCallContext(const CallScope& scope,
                                                    std::chrono::milliseconds timeout);

// NOT_FOUND → NotFound, ALREADY_EXISTS → AlreadyExists, FAILED_PRECONDITION → FailedPrecondition,
// INVALID_ARGUMENT → InvalidArgument, UNAVAILABLE → Unavailable, DEADLINE_EXCEEDED →
// DeadlineExceeded, PERMISSION_DENIED/UNAUTHENTICATED → PermissionDenied, anything else →
// IoError; message "what: <grpc message>".
Status FromGrpcStatus(const grpc::Status& status, std::string_view what);

}  // namespace lazycrypt::ctrdclient
