// The call metadata containerd reads, checked on the wire with an in-process fake Leases server
// on a unix socket; status mapping; the generated API keeps containerd's names and field numbers.
#include "ctrdclient/grpc_util.h"

#include <grpcpp/grpcpp.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "github.com/containerd/containerd/api/services/content/v1/content.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/diff/v1/diff.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/images/v1/images.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/leases/v1/leases.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"

namespace lazycrypt::ctrdclient {
namespace {

namespace leases_api = ::containerd::services::leases::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

TEST(CallMetadata, NamespaceAlwaysLeaseWhenSet) {
  EXPECT_THAT(CallMetadata({"k8s.io", ""}), ElementsAre(Pair("containerd-namespace", "k8s.io")));
  EXPECT_THAT(CallMetadata({"default", "lease-1"}),
              ElementsAre(Pair("containerd-namespace", "default"),
                          Pair("containerd-lease", "lease-1")));
}

// Records the metadata of each Create and answers with the requested ID.
class RecordingLeases final : public leases_api::Leases::Service {
 public:
  grpc::Status Create(grpc::ServerContext* ctx, const leases_api::CreateRequest* req,
                      leases_api::CreateResponse* resp) override {
    std::lock_guard<std::mutex> lock(mu_);
    seen_.clear();
    for (const auto& [k, v] : ctx->client_metadata()) {
      seen_.emplace(std::string(k.data(), k.size()), std::string(v.data(), v.size()));
    }
    if (req->id() == "exists") return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "lease exists");
    resp->mutable_lease()->set_id(req->id());
    return grpc::Status::OK;
  }
  std::multimap<std::string, std::string> seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

 private:
  std::mutex mu_;
  std::multimap<std::string, std::string> seen_;
};

class FakeServer : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/lc-ctrdclient-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    socket_ = (dir_ / "fake.sock").string();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket_, grpc::InsecureServerCredentials());
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_);
    stub_ = leases_api::Leases::NewStub(
        grpc::CreateChannel("unix:" + socket_, grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::filesystem::path dir_;
  std::string socket_;
  RecordingLeases service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<leases_api::Leases::Stub> stub_;
};

TEST_F(FakeServer, ContextCarriesNamespaceAndLeaseOnTheWire) {
  leases_api::CreateRequest req;
  req.set_id("abc");
  leases_api::CreateResponse resp;
  auto ctx = NewCallContext({"lazy-ns", "lease-42"}, std::chrono::seconds(10));
  grpc::Status st = stub_->Create(ctx.get(), req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.lease().id(), "abc");
  auto seen = service_.seen();
  EXPECT_EQ(seen.count("containerd-namespace"), 1u);
  EXPECT_EQ(seen.find("containerd-namespace")->second, "lazy-ns");
  ASSERT_EQ(seen.count("containerd-lease"), 1u);
  EXPECT_EQ(seen.find("containerd-lease")->second, "lease-42");

  auto no_lease = NewCallContext({"other", ""}, std::chrono::seconds(10));
  ASSERT_TRUE(stub_->Create(no_lease.get(), req, &resp).ok());
  seen = service_.seen();
  EXPECT_EQ(seen.find("containerd-namespace")->second, "other");
  EXPECT_EQ(seen.count("containerd-lease"), 0u);
}

TEST_F(FakeServer, ServerErrorsBecomeStatusesNamingTheCall) {
  leases_api::CreateRequest req;
  req.set_id("exists");
  leases_api::CreateResponse resp;
  auto ctx = NewCallContext({"default", ""}, std::chrono::seconds(10));
  Status st = FromGrpcStatus(stub_->Create(ctx.get(), req, &resp), "create lease");
  EXPECT_EQ(st.code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(st.message(), "create lease: lease exists");
}

TEST(FromGrpcStatus, MapsTheCodesContainerdUses) {
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK, "x").ok());
  struct Case {
    grpc::StatusCode in;
    StatusCode out;
  } cases[] = {
      {grpc::StatusCode::NOT_FOUND, StatusCode::kNotFound},
      {grpc::StatusCode::ALREADY_EXISTS, StatusCode::kAlreadyExists},
      {grpc::StatusCode::FAILED_PRECONDITION, StatusCode::kFailedPrecondition},
      {grpc::StatusCode::INVALID_ARGUMENT, StatusCode::kInvalidArgument},
      {grpc::StatusCode::UNAVAILABLE, StatusCode::kUnavailable},
      {grpc::StatusCode::DEADLINE_EXCEEDED, StatusCode::kDeadlineExceeded},
      {grpc::StatusCode::PERMISSION_DENIED, StatusCode::kPermissionDenied},
      {grpc::StatusCode::UNAUTHENTICATED, StatusCode::kPermissionDenied},
      {grpc::StatusCode::INTERNAL, StatusCode::kIoError},
  };
  for (const auto& c : cases) {
    Status st = FromGrpcStatus(grpc::Status(c.in, "boom"), "stat snapshot");
    EXPECT_EQ(st.code(), c.out) << static_cast<int>(c.in);
    EXPECT_THAT(st.message(), HasSubstr("stat snapshot: boom"));
  }
}

TEST(UnreachableServer, IsUnavailable) {
  char tmpl[] = "/tmp/lc-ctrdclient-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string socket = std::string(tmpl) + "/nobody.sock";
  auto stub = leases_api::Leases::NewStub(
      grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
  leases_api::CreateRequest req;
  leases_api::CreateResponse resp;
  auto ctx = NewCallContext({"default", ""}, std::chrono::seconds(5));
  Status st = FromGrpcStatus(stub->Create(ctx.get(), req, &resp), "create lease");
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  std::filesystem::remove_all(tmpl);
}

// The stripped protos keep containerd's packages (gRPC paths) and field numbers.
TEST(GeneratedApi, KeepsServiceNamesAndFieldNumbers) {
  EXPECT_STREQ(::containerd::services::content::v1::Content::service_full_name(),
               "containerd.services.content.v1.Content");
  EXPECT_STREQ(::containerd::services::snapshots::v1::Snapshots::service_full_name(),
               "containerd.services.snapshots.v1.Snapshots");
  EXPECT_STREQ(::containerd::services::diff::v1::Diff::service_full_name(),
               "containerd.services.diff.v1.Diff");
  EXPECT_STREQ(::containerd::services::images::v1::Images::service_full_name(),
               "containerd.services.images.v1.Images");
  EXPECT_STREQ(leases_api::Leases::service_full_name(), "containerd.services.leases.v1.Leases");

  // WriteContentRequest.expected is field 4 (string): tag byte (4 << 3) | 2 = 0x22.
  ::containerd::services::content::v1::WriteContentRequest w;
  w.set_expected("sha256:x");
  EXPECT_EQ(w.SerializeAsString(), std::string("\x22\x08sha256:x", 10));
  // WriteAction values: STAT = 0, WRITE = 1, COMMIT = 2.
  EXPECT_EQ(::containerd::services::content::v1::COMMIT, 2);
  // Snapshot Kind: COMMITTED = 3. Descriptor.size is field 3 (varint): tag 0x18.
  EXPECT_EQ(::containerd::services::snapshots::v1::COMMITTED, 3);
  ::containerd::types::Descriptor d;
  d.set_size(5);
  EXPECT_EQ(d.SerializeAsString(), std::string("\x18\x05", 2));
}

}  // namespace
}  // namespace lazycrypt::ctrdclient
