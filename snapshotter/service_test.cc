// Drives every containerd.services.snapshots.v1.Snapshots method over a real unix socket through
// the generated client stub, including the codes containerd depends on.
#include "snapshotter/service.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <fstream>

#include <google/protobuf/empty.pb.h>
#include <grpcpp/grpcpp.h>

#include "common/file_io.h"
#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"
#include "snapshotter/test_util.h"

namespace lazycrypt::snapshotter {
namespace {

namespace fs = std::filesystem;
namespace pb = ::containerd::services::snapshots::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class FakeRemote final : public RemoteLayerHandler {
 public:
  Result<bool> TryMount(const PrepareRequest& info) override {
    if (!info.labels.count("test/remote")) return false;
    std::ofstream(info.target_dir / "marker") << "remote";
    return true;
  }
  Status Unmount(int64_t, const fs::path&) override { return Status::Ok(); }
  Status Restore(const RestoreRequest&) override { return Status::Ok(); }
  Status Check(const CheckRequest&) override { return Status::Ok(); }
};

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty());
    SnapshotterOptions o;
    o.root = tmp_.path() / "root";
    o.remote = std::make_shared<FakeRemote>();
    o.overlay_index_off = false;
    auto sn = Snapshotter::Open(o);
    ASSERT_TRUE(sn.ok()) << sn.status().ToString();
    sn_ = std::move(*sn);
    socket_ = tmp_.path() / "run" / "snapshotter.sock";
    StartServer();
  }
  void StartServer(size_t batch = 100) {
    ServerOptions so;
    so.socket_path = socket_;
    so.list_batch_size = batch;
    auto server = SnapshotServer::Start(sn_.get(), so);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
    auto channel = grpc::CreateChannel("unix:" + socket_.string(),
                                       grpc::InsecureChannelCredentials());
    stub_ = pb::Snapshots::NewStub(channel);
  }
  void TearDown() override {
    stub_.reset();
    if (server_) server_->Shutdown();
  }
  fs::path Fs(int id) const {
    return tmp_.path() / "root" / "snapshots" / std::to_string(id) / "fs";
  }

  grpc::Status Prepare(const std::string& key, const std::string& parent,
                       const std::map<std::string, std::string>& labels,
                       pb::PrepareSnapshotResponse* resp) {
    grpc::ClientContext ctx;
    pb::PrepareSnapshotRequest req;
    req.set_snapshotter("lazycrypt");
    req.set_key(key);
    req.set_parent(parent);
    for (const auto& [k, v] : labels) (*req.mutable_labels())[k] = v;
    return stub_->Prepare(&ctx, req, resp);
  }
  grpc::Status Commit(const std::string& name, const std::string& key) {
    grpc::ClientContext ctx;
    pb::CommitSnapshotRequest req;
    req.set_name(name);
    req.set_key(key);
    (*req.mutable_labels())["committed"] = "yes";
    google::protobuf::Empty e;
    return stub_->Commit(&ctx, req, &e);
  }
  grpc::Status Stat(const std::string& key, pb::StatSnapshotResponse* resp) {
    grpc::ClientContext ctx;
    pb::StatSnapshotRequest req;
    req.set_key(key);
    return stub_->Stat(&ctx, req, resp);
  }
  grpc::Status Remove(const std::string& key) {
    grpc::ClientContext ctx;
    pb::RemoveSnapshotRequest req;
    req.set_key(key);
    google::protobuf::Empty e;
    return stub_->Remove(&ctx, req, &e);
  }
  std::vector<std::string> List(const std::vector<std::string>& filters, int* batches = nullptr,
                                grpc::Status* status = nullptr) {
    grpc::ClientContext ctx;
    pb::ListSnapshotsRequest req;
    for (const auto& f : filters) req.add_filters(f);
    auto reader = stub_->List(&ctx, req);
    pb::ListSnapshotsResponse resp;
    std::vector<std::string> names;
    int n = 0;
    while (reader->Read(&resp)) {
      ++n;
      for (const auto& i : resp.info()) names.push_back(i.name());
    }
    grpc::Status s = reader->Finish();
    if (batches) *batches = n;
    if (status) *status = s;
    return names;
  }

  testing::ScopedTempDir tmp_;
  std::unique_ptr<Snapshotter> sn_;
  fs::path socket_;
  std::unique_ptr<SnapshotServer> server_;
  std::unique_ptr<pb::Snapshots::Stub> stub_;
};

TEST_F(ServiceTest, SocketIsPrivate) {
  struct stat st;
  ASSERT_EQ(lstat(socket_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat(socket_.parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(ServiceTest, EveryMethodAndItsErrorCodes) {
  // Prepare: bind mount of a fresh snapshot.
  pb::PrepareSnapshotResponse p;
  ASSERT_TRUE(Prepare("a", "", {{"l", "1"}}, &p).ok());
  ASSERT_EQ(p.mounts_size(), 1);
  EXPECT_EQ(p.mounts(0).type(), "bind");
  EXPECT_EQ(p.mounts(0).source(), Fs(1).string());
  EXPECT_THAT(std::vector<std::string>(p.mounts(0).options().begin(), p.mounts(0).options().end()),
              ElementsAre("rw", "rbind"));
  EXPECT_EQ(p.mounts(0).target(), "");
  EXPECT_EQ(Prepare("a", "", {}, &p).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Prepare("b", "missing", {}, &p).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Prepare("b", "a", {}, &p).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // Mounts.
  {
    grpc::ClientContext ctx;
    pb::MountsRequest req;
    req.set_key("a");
    pb::MountsResponse resp;
    ASSERT_TRUE(stub_->Mounts(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.mounts(0).source(), Fs(1).string());
  }
  {
    grpc::ClientContext ctx;
    pb::MountsRequest req;
    req.set_key("nope");
    pb::MountsResponse resp;
    EXPECT_EQ(stub_->Mounts(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }

  // Usage of an active snapshot is its live disk use.
  std::ofstream(Fs(1) / "f") << std::string(50000, 'x');
  {
    grpc::ClientContext ctx;
    pb::UsageRequest req;
    req.set_key("a");
    pb::UsageResponse resp;
    ASSERT_TRUE(stub_->Usage(&ctx, req, &resp).ok());
    EXPECT_GE(resp.size(), 50000);
    EXPECT_EQ(resp.inodes(), 2);
  }

  // Commit.
  EXPECT_EQ(Commit("x", "nope").error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(Commit("base", "a").ok());
  EXPECT_EQ(Commit("base", "base").error_code(), grpc::StatusCode::ALREADY_EXISTS);
  {
    grpc::ClientContext ctx;
    pb::MountsRequest req;
    req.set_key("base");
    pb::MountsResponse resp;
    EXPECT_EQ(stub_->Mounts(&ctx, req, &resp).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }

  // Stat.
  pb::StatSnapshotResponse st;
  ASSERT_TRUE(Stat("base", &st).ok());
  EXPECT_EQ(st.info().name(), "base");
  EXPECT_EQ(st.info().kind(), pb::COMMITTED);
  EXPECT_EQ(st.info().labels().at("committed"), "yes");
  EXPECT_EQ(st.info().labels().count("l"), 0u);
  EXPECT_GT(st.info().created_at().seconds(), 1600000000);
  EXPECT_EQ(Stat("a", &st).error_code(), grpc::StatusCode::NOT_FOUND);

  // View and an active child: overlay with exact options.
  {
    grpc::ClientContext ctx;
    pb::ViewSnapshotRequest req;
    req.set_key("v");
    req.set_parent("base");
    pb::ViewSnapshotResponse resp;
    ASSERT_TRUE(stub_->View(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.mounts_size(), 1);
    EXPECT_EQ(resp.mounts(0).type(), "bind");
    EXPECT_EQ(resp.mounts(0).source(), Fs(1).string());
    EXPECT_EQ(resp.mounts(0).options(0), "ro");
  }
  ASSERT_TRUE(Prepare("c", "base", {}, &p).ok());
  EXPECT_EQ(p.mounts(0).type(), "overlay");
  EXPECT_EQ(p.mounts(0).source(), "overlay");
  EXPECT_THAT(std::vector<std::string>(p.mounts(0).options().begin(), p.mounts(0).options().end()),
              ElementsAre("workdir=" + (Fs(3).parent_path() / "work").string(),
                          "upperdir=" + Fs(3).string(), "lowerdir=" + Fs(1).string()));

  // Update with a field mask.
  {
    grpc::ClientContext ctx;
    pb::UpdateSnapshotRequest req;
    req.mutable_info()->set_name("base");
    (*req.mutable_info()->mutable_labels())["added"] = "1";
    (*req.mutable_info()->mutable_labels())["ignored"] = "2";
    req.mutable_update_mask()->add_paths("labels.added");
    pb::UpdateSnapshotResponse resp;
    ASSERT_TRUE(stub_->Update(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.info().labels().size(), 2);
    EXPECT_EQ(resp.info().labels().at("added"), "1");
    EXPECT_EQ(resp.info().labels().at("committed"), "yes");
  }
  {
    grpc::ClientContext ctx;
    pb::UpdateSnapshotRequest req;
    req.mutable_info()->set_name("base");
    req.mutable_update_mask()->add_paths("name");
    pb::UpdateSnapshotResponse resp;
    EXPECT_EQ(stub_->Update(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }

  // List with and without filters.
  EXPECT_THAT(List({}), ElementsAre("base", "c", "v"));
  EXPECT_THAT(List({"parent==base,kind==active"}), ElementsAre("c"));
  EXPECT_THAT(List({"labels.added==1"}), ElementsAre("base"));
  grpc::Status ls;
  List({"name=="}, nullptr, &ls);
  EXPECT_EQ(ls.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // Remove: a parent with children is refused.
  EXPECT_EQ(Remove("base").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Remove("nope").error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(Remove("c").ok());
  ASSERT_TRUE(Remove("v").ok());
  ASSERT_TRUE(Remove("base").ok());
  EXPECT_THAT(List({}), ElementsAre());

  // Cleanup removes orphan directories.
  fs::create_directories(tmp_.path() / "root" / "snapshots" / "77" / "fs");
  {
    grpc::ClientContext ctx;
    pb::CleanupRequest req;
    google::protobuf::Empty e;
    ASSERT_TRUE(stub_->Cleanup(&ctx, req, &e).ok());
  }
  EXPECT_FALSE(fs::exists(tmp_.path() / "root" / "snapshots" / "77"));
}

TEST_F(ServiceTest, RemotePrepareAnswersAlreadyExists) {
  pb::PrepareSnapshotResponse p;
  grpc::Status s = Prepare("extract-1", "",
                           {{"containerd.io/snapshot.ref", "sha256:chain"}, {"test/remote", "1"}},
                           &p);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(s.error_message(), "target snapshot \"sha256:chain\"");
  pb::StatSnapshotResponse st;
  ASSERT_TRUE(Stat("sha256:chain", &st).ok());
  EXPECT_EQ(st.info().kind(), pb::COMMITTED);
  EXPECT_EQ(st.info().labels().at("containerd.io/snapshot/lazycrypt.remote"), "true");
  EXPECT_EQ(Stat("extract-1", &st).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(fs::exists(Fs(1) / "marker"));
}

TEST_F(ServiceTest, ListStreamsInBatches) {
  server_->Shutdown();
  StartServer(/*batch=*/3);
  for (int i = 0; i < 7; ++i) {
    pb::PrepareSnapshotResponse p;
    ASSERT_TRUE(Prepare("k" + std::to_string(i), "", {}, &p).ok());
  }
  int batches = 0;
  auto names = List({}, &batches);
  EXPECT_EQ(names.size(), 7u);
  EXPECT_EQ(batches, 3);
}

TEST_F(ServiceTest, StaleSocketIsReplacedLiveOneRefused) {
  // A second server on a live socket is refused.
  ServerOptions so;
  so.socket_path = socket_;
  auto second = SnapshotServer::Start(sn_.get(), so);
  EXPECT_EQ(second.status().code(), StatusCode::kAlreadyExists);
  server_->Shutdown();
  EXPECT_FALSE(fs::exists(socket_));
  // A stale socket file (nobody listening) is removed and replaced.
  {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket_.c_str());
    ASSERT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  ASSERT_TRUE(fs::exists(socket_));
  StartServer();
  pb::StatSnapshotResponse st;
  EXPECT_EQ(Stat("x", &st).error_code(), grpc::StatusCode::NOT_FOUND);
  // A regular file at the path is not touched.
  server_->Shutdown();
  server_.reset();
  std::ofstream(socket_) << "not a socket";
  auto refused = SnapshotServer::Start(sn_.get(), so);
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("not a socket"));
  EXPECT_TRUE(fs::is_regular_file(socket_));
}

TEST(ToGrpcStatus, MapsTheCodesContainerdChecks) {
  EXPECT_TRUE(ToGrpcStatus(Status::Ok()).ok());
  EXPECT_EQ(ToGrpcStatus(Status::NotFound("x")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(Status::AlreadyExists("x")).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(ToGrpcStatus(Status::FailedPrecondition("x")).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ToGrpcStatus(Status::InvalidArgument("x")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ToGrpcStatus(Status::IoError("disk")).error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(ToGrpcStatus(Status::IoError("disk")).error_message(), "disk");
}

}  // namespace
}  // namespace lazycrypt::snapshotter
