#include "ctrdclient/grpc_util.h"

namespace lazycrypt::ctrdclient {

std::vector<std::pair<std::string, std::string>> CallMetadata(const CallScope& scope) {
  std::vector<std::pair<std::string, std::string>> md;
  md.emplace_back(std::string(kNamespaceHeader), scope.ns);
  if (!scope.lease.empty()) md.emplace_back(std::string(kLeaseHeader), scope.lease);
  return md;
}

std::unique_ptr<grpc::ClientContext> NewCallContext(const CallScope& scope,
                                                    std::chrono::milliseconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  for (const auto& [key, value] : CallMetadata(scope)) ctx->AddMetadata(key, value);
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

Status FromGrpcStatus(const grpc::Status& status, std::string_view what) {
  if (status.ok()) return Status::Ok();
  std::string message = std::string(what) + ": " + status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::NOT_FOUND:
      return Status::NotFound(std::move(message));
    case grpc::StatusCode::ALREADY_EXISTS:
      return Status::AlreadyExists(std::move(message));
    case grpc::StatusCode::FAILED_PRECONDITION:
      return Status::FailedPrecondition(std::move(message));
    case grpc::StatusCode::INVALID_ARGUMENT:
      return Status::InvalidArgument(std::move(message));
    case grpc::StatusCode::UNAVAILABLE:
      return Status::Unavailable(std::move(message));
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return Status::DeadlineExceeded(std::move(message));
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
      return Status::PermissionDenied(std::move(message));
    default:
      return Status::IoError(std::move(message) + " (gRPC code " +
                             std::to_string(static_cast<int>(status.error_code())) + ")");
  }
}

}  // namespace lazycrypt::ctrdclient
