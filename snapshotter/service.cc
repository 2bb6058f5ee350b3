#include "snapshotter/service.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <mutex>

#include <google/protobuf/empty.pb.h>
#include <grpcpp/grpcpp.h>

#include "common/file_io.h"
#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"

namespace lazycrypt::snapshotter {
namespace fs = std::filesystem;
namespace pb = ::containerd::services::snapshots::v1;

grpc::Status ToGrpcStatus(const Status& status) {
  grpc::StatusCode code;
  switch (status.code()) {
    case StatusCode::kOk: return grpc::Status::OK;
    case StatusCode::kInvalidArgument: code = grpc::StatusCode::INVALID_ARGUMENT; break;
    case StatusCode::kNotFound: code = grpc::StatusCode::NOT_FOUND; break;
    case StatusCode::kAlreadyExists: code = grpc::StatusCode::ALREADY_EXISTS; break;
    case StatusCode::kFailedPrecondition: code = grpc::StatusCode::FAILED_PRECONDITION; break;
    case StatusCode::kUnavailable: code = grpc::StatusCode::UNAVAILABLE; break;
    case StatusCode::kDeadlineExceeded: code = grpc::StatusCode::DEADLINE_EXCEEDED; break;
    case StatusCode::kPermissionDenied:
    case StatusCode::kAuthFailed: code = grpc::StatusCode::PERMISSION_DENIED; break;
    case StatusCode::kUnsupported: code = grpc::StatusCode::UNIMPLEMENTED; break;
    default: code = grpc::StatusCode::UNKNOWN; break;
  }
  return grpc::Status(code, status.message());
}

namespace {

void ToProto(const std::vector<Mount>& mounts,
             google::protobuf::RepeatedPtrField<::containerd::types::Mount>* out) {
  for (const auto& m : mounts) {
    auto* pm = out->Add();
    pm->set_type(m.type);
    pm->set_source(m.source);
    for (const auto& o : m.options) pm->add_options(o);
  }
}

void ToProto(TimePoint t, google::protobuf::Timestamp* out) {
  int64_t ns = t.time_since_epoch().count();
  int64_t secs = ns / 1000000000;
  int64_t nanos = ns % 1000000000;
  if (nanos < 0) {
    nanos += 1000000000;
    secs -= 1;
  }
  out->set_seconds(secs);
  out->set_nanos(static_cast<int32_t>(nanos));
}

TimePoint FromProto(const google::protobuf::Timestamp& t) {
  return TimePoint(std::chrono::nanoseconds(t.seconds() * 1000000000 + t.nanos()));
}

void ToProto(const SnapshotInfo& info, pb::Info* out) {
  out->set_name(info.name);
  out->set_parent(info.parent);
  out->set_kind(static_cast<pb::Kind>(static_cast<int>(info.kind)));
  ToProto(info.created, out->mutable_created_at());
  ToProto(info.updated, out->mutable_updated_at());
  for (const auto& [k, v] : info.labels) (*out->mutable_labels())[k] = v;
}

Labels FromProto(const google::protobuf::Map<std::string, std::string>& labels) {
  return Labels(labels.begin(), labels.end());
}

class SnapshotsServiceImpl final : public pb::Snapshots::Service {
 public:
  SnapshotsServiceImpl(Snapshotter* sn, const ServerOptions& options)
      : sn_(sn), log_(options.log), batch_(options.list_batch_size ? options.list_batch_size : 100) {}

  grpc::Status Prepare(grpc::ServerContext*, const pb::PrepareSnapshotRequest* req,
                       pb::PrepareSnapshotResponse* resp) override {
    auto mounts = sn_->Prepare(req->key(), req->parent(), FromProto(req->labels()));
    if (!mounts.ok()) return Fail("prepare " + req->key(), mounts.status());
    ToProto(*mounts, resp->mutable_mounts());
    return grpc::Status::OK;
  }

  grpc::Status View(grpc::ServerContext*, const pb::ViewSnapshotRequest* req,
                    pb::ViewSnapshotResponse* resp) override {
    auto mounts = sn_->View(req->key(), req->parent(), FromProto(req->labels()));
    if (!mounts.ok()) return Fail("view " + req->key(), mounts.status());
    ToProto(*mounts, resp->mutable_mounts());
    return grpc::Status::OK;
  }

  grpc::Status Mounts(grpc::ServerContext*, const pb::MountsRequest* req,
                      pb::MountsResponse* resp) override {
    auto mounts = sn_->Mounts(req->key());
    if (!mounts.ok()) return Fail("mounts " + req->key(), mounts.status());
    ToProto(*mounts, resp->mutable_mounts());
    return grpc::Status::OK;
  }

  grpc::Status Commit(grpc::ServerContext*, const pb::CommitSnapshotRequest* req,
                      google::protobuf::Empty*) override {
    Status s = sn_->Commit(req->name(), req->key(), FromProto(req->labels()));
    return s.ok() ? grpc::Status::OK : Fail("commit " + req->key(), s);
  }

  grpc::Status Remove(grpc::ServerContext*, const pb::RemoveSnapshotRequest* req,
                      google::protobuf::Empty*) override {
    Status s = sn_->Remove(req->key());
    return s.ok() ? grpc::Status::OK : Fail("remove " + req->key(), s);
  }

  grpc::Status Stat(grpc::ServerContext*, const pb::StatSnapshotRequest* req,
                    pb::StatSnapshotResponse* resp) override {
    auto info = sn_->Stat(req->key());
    if (!info.ok()) return Fail("stat " + req->key(), info.status());
    ToProto(*info, resp->mutable_info());
    return grpc::Status::OK;
  }

  grpc::Status Update(grpc::ServerContext*, const pb::UpdateSnapshotRequest* req,
                      pb::UpdateSnapshotResponse* resp) override {
    SnapshotInfo info;
    info.name = req->info().name();
    info.parent = req->info().parent();
    info.kind = static_cast<SnapshotKind>(req->info().kind());
    info.labels = FromProto(req->info().labels());
    info.created = FromProto(req->info().created_at());
    info.updated = FromProto(req->info().updated_at());
    std::vector<std::string> paths(req->update_mask().paths().begin(),
                                   req->update_mask().paths().end());
    auto updated = sn_->Update(info, paths);
    if (!updated.ok()) return Fail("update " + info.name, updated.status());
    ToProto(*updated, resp->mutable_info());
    return grpc::Status::OK;
  }

  grpc::Status List(grpc::ServerContext* ctx, const pb::ListSnapshotsRequest* req,
                    grpc::ServerWriter<pb::ListSnapshotsResponse>* writer) override {
    std::vector<std::string> filters(req->filters().begin(), req->filters().end());
    pb::ListSnapshotsResponse batch;
    Status s = sn_->Walk(filters, [&](const SnapshotInfo& info) -> Status {
      if (ctx->IsCancelled()) return Status::Unavailable("list cancelled by the client");
      ToProto(info, batch.add_info());
      if (static_cast<size_t>(batch.info_size()) >= batch_) {
        if (!writer->Write(batch)) return Status::Unavailable("list: client went away");
        batch.Clear();
      }
      return Status::Ok();
    });
    if (!s.ok()) return Fail("list", s);
    if (batch.info_size() > 0 && !writer->Write(batch)) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "list: client went away");
    }
    return grpc::Status::OK;
  }

  grpc::Status Usage(grpc::ServerContext*, const pb::UsageRequest* req,
                     pb::UsageResponse* resp) override {
    auto usage = sn_->Usage(req->key());
    if (!usage.ok()) return Fail("usage " + req->key(), usage.status());
    resp->set_size(usage->size_bytes);
    resp->set_inodes(usage->inodes);
    return grpc::Status::OK;
  }

  grpc::Status Cleanup(grpc::ServerContext*, const pb::CleanupRequest*,
                       google::protobuf::Empty*) override {
    Status s = sn_->Cleanup();
    return s.ok() ? grpc::Status::OK : Fail("cleanup", s);
  }

 private:
  grpc::Status Fail(const std::string& what, const Status& s) {
    // Expected answers (containerd probes with Stat, gets AlreadyExists for remote layers) are
    // debug; the rest is worth a warning.
    bool expected = s.code() == StatusCode::kNotFound || s.code() == StatusCode::kAlreadyExists;
    log_(expected ? LogLevel::kDebug : LogLevel::kWarn, what + ": " + s.ToString());
    return ToGrpcStatus(s);
  }

  Snapshotter* sn_;
  LogSink log_;
  size_t batch_;
};

// Something accepts connections at `path`.
bool SocketAnswers(const fs::path& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

class SnapshotServerImpl final : public SnapshotServer {
 public:
  SnapshotServerImpl(std::unique_ptr<SnapshotsServiceImpl> service,
                     std::unique_ptr<grpc::Server> server, fs::path socket)
      : service_(std::move(service)), server_(std::move(server)), socket_(std::move(socket)) {}
  ~SnapshotServerImpl() override { Shutdown(); }

  void Shutdown() override {
    std::lock_guard lock(mu_);
    if (!server_) return;
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server_->Wait();
    server_.reset();
    ::unlink(socket_.c_str());
  }

 private:
  std::mutex mu_;
  std::unique_ptr<SnapshotsServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  fs::path socket_;
};

}  // namespace

Result<std::unique_ptr<SnapshotServer>> SnapshotServer::Start(Snapshotter* snapshotter,
                                                              const ServerOptions& options) {
  const fs::path& path = options.socket_path;
  if (path.empty() || !path.is_absolute()) {
    return Status::InvalidArgument("socket path must be absolute, got \"" + path.string() + "\"");
  }
  if (path.string().size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::InvalidArgument("socket path too long for a unix socket: " + path.string());
  }
  const fs::path dir = path.parent_path();
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return ErrnoStatus("socket directory " + dir.string());
    std::error_code ec;
    fs::create_directories(dir.parent_path(), ec);
    if (ec) return Status::IoError("creating " + dir.parent_path().string() + ": " + ec.message());
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoStatus("mkdir " + dir.string());
    if (::chmod(dir.c_str(), 0700) != 0) return ErrnoStatus("chmod " + dir.string());
  }
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::AlreadyExists(path.string() + " exists and is not a socket");
    }
    if (SocketAnswers(path)) {
      return Status::AlreadyExists("another server is listening on " + path.string());
    }
    options.log(LogLevel::kInfo, "removing stale socket " + path.string());
    if (::unlink(path.c_str()) != 0) return ErrnoStatus("removing stale socket " + path.string());
  }

  auto service = std::make_unique<SnapshotsServiceImpl>(snapshotter, options);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + path.string(), grpc::InsecureServerCredentials());
  builder.RegisterService(service.get());
  // containerd sends labels up to 4 KiB each; allow generous messages.
  builder.SetMaxReceiveMessageSize(16 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) return Status::Unavailable("cannot serve gRPC on unix:" + path.string());
  if (::chmod(path.c_str(), options.socket_mode) != 0) {
    server->Shutdown();
    return ErrnoStatus("chmod " + path.string());
  }
  options.log(LogLevel::kInfo, "serving containerd.services.snapshots.v1.Snapshots on " +
                                   path.string());
  return std::unique_ptr<SnapshotServer>(
      new SnapshotServerImpl(std::move(service), std::move(server), path));
}

}  // namespace lazycrypt::snapshotter
