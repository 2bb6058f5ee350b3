#include "ctrdclient/pull.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <memory>
#include <optional>

#include "crypto/digest.h"
#include "crypto/random.h"
#include "ctrdclient/grpc_util.h"
#include "ctrdclient/labels.h"
#include "github.com/containerd/containerd/api/services/content/v1/content.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/diff/v1/diff.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/images/v1/images.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/leases/v1/leases.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"

namespace lazycrypt::ctrdclient {
namespace {

namespace content_api = ::containerd::services::content::v1;
namespace diff_api = ::containerd::services::diff::v1;
namespace images_api = ::containerd::services::images::v1;
namespace leases_api = ::containerd::services::leases::v1;
namespace snapshots_api = ::containerd::services::snapshots::v1;

using Clock = std::chrono::steady_clock;

// Bytes per content.Write message (containerd's server accepts up to 4 MiB per message).
constexpr size_t kWriteChunkBytes = 1 << 20;
// Manifests, indexes and configs are read whole into memory; anything larger is refused.
constexpr uint64_t kMaxMetadataBytes = 8u << 20;

std::chrono::milliseconds Since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

std::string Short(std::string_view digest) {
  return std::string(digest.substr(0, std::min<size_t>(digest.size(), 19)));
}

void SetLabels(google::protobuf::Map<std::string, std::string>* out,
               const std::map<std::string, std::string>& labels) {
  for (const auto& [k, v] : labels) (*out)[k] = v;
}

void ToProto(const image::Descriptor& d, ::containerd::types::Descriptor* out) {
  out->set_media_type(d.media_type);
  out->set_digest(d.digest);
  out->set_size(static_cast<int64_t>(d.size));
  SetLabels(out->mutable_annotations(), d.annotations);
}

// One pull's view of containerd: stubs over one channel, the namespace and (once created) the lease.
class Session {
 public:
  Session(std::shared_ptr<grpc::Channel> channel, const PullOptions& options)
      : content(content_api::Content::NewStub(channel)),
        diff(diff_api::Diff::NewStub(channel)),
        images(images_api::Images::NewStub(channel)),
        leases(leases_api::Leases::NewStub(channel)),
        snapshots(snapshots_api::Snapshots::NewStub(channel)),
        options_(options) {
    scope.ns = options.ns;
  }

  std::unique_ptr<grpc::ClientContext> Call() const {
    return NewCallContext(scope, options_.call_timeout);
  }
  std::unique_ptr<grpc::ClientContext> Transfer() const {
    return NewCallContext(scope, options_.transfer_timeout);
  }
  const std::string& snapshotter() const { return options_.snapshotter; }

  std::unique_ptr<content_api::Content::Stub> content;
  std::unique_ptr<diff_api::Diff::Stub> diff;
  std::unique_ptr<images_api::Images::Stub> images;
  std::unique_ptr<leases_api::Leases::Stub> leases;
  std::unique_ptr<snapshots_api::Snapshots::Stub> snapshots;
  CallScope scope;

 private:
  const PullOptions& options_;
};

// Deletes the pull's lease when the pull ends, however it ends (best effort: the lease expires
// by itself after PullOptions::lease_expiry anyway).
class LeaseGuard {
 public:
  LeaseGuard(Session& session, std::string id) : session_(session), id_(std::move(id)) {}
  ~LeaseGuard() {
    leases_api::DeleteRequest req;
    req.set_id(id_);
    google::protobuf::Empty resp;
    CallScope scope = session_.scope;
    scope.lease.clear();  // the delete itself must not run inside the lease
    (void)session_.leases->Delete(NewCallContext(scope, std::chrono::seconds(30)).get(), req, &resp);
  }
  LeaseGuard(const LeaseGuard&) = delete;
  LeaseGuard& operator=(const LeaseGuard&) = delete;

 private:
  Session& session_;
  std::string id_;
};

Result<std::string> CreateLease(Session& s, std::chrono::seconds expiry) {
  std::array<uint8_t, 8> random{};
  LC_RETURN_IF_ERROR(crypto::RandomBytes(random));
  leases_api::CreateRequest req;
  req.set_id("lazycrypt-pull-" + crypto::HexEncode(random));
  (*req.mutable_labels())[std::string(kLabelGcExpire)] = ExpiryTimestamp(expiry.count());
  leases_api::CreateResponse resp;
  grpc::Status st = s.leases->Create(s.Call().get(), req, &resp);
  if (!st.ok()) return FromGrpcStatus(st, "create lease");
  return resp.lease().id();
}

// Puts a resource that may already exist (content another image brought, a committed snapshot)
// into the pull's lease, so that the garbage collector keeps it for as long as the pull runs:
// containerd adds what a call creates inside a lease by itself, but not what it only reads or
// labels. Safe for a resource that does not exist (yet): the lease then names nothing.
// `type` is "content" or "snapshots/<snapshotter>" (containerd's leases.Resource types).
Status HoldInLease(Session& s, const std::string& type, const std::string& id) {
  if (s.scope.lease.empty()) return Status::Ok();
  leases_api::AddResourceRequest req;
  req.set_id(s.scope.lease);
  req.mutable_resource()->set_id(id);
  req.mutable_resource()->set_type(type);
  google::protobuf::Empty resp;
  return FromGrpcStatus(s.leases->AddResource(s.Call().get(), req, &resp),
                        "add " + type + " " + Short(id) + " to the pull's lease");
}

// NotFound when the content store lacks the blob.
Status ContentInfo(Session& s, const std::string& digest) {
  content_api::InfoRequest req;
  req.set_digest(digest);
  content_api::InfoResponse resp;
  return FromGrpcStatus(s.content->Info(s.Call().get(), req, &resp), "content info " + Short(digest));
}

// Sets (adds or replaces) these labels on a blob, leaving its other labels alone.
Status UpdateContentLabels(Session& s, const std::string& digest,
                           const std::map<std::string, std::string>& labels) {
  if (labels.empty()) return Status::Ok();
  content_api::UpdateRequest req;
  req.mutable_info()->set_digest(digest);
  SetLabels(req.mutable_info()->mutable_labels(), labels);
  for (const auto& [k, v] : labels) req.mutable_update_mask()->add_paths("labels." + k);
  content_api::UpdateResponse resp;
  return FromGrpcStatus(s.content->Update(s.Call().get(), req, &resp),
                        "content update labels of " + Short(digest));
}

// A content.Write session for one blob: STAT, WRITE at increasing offsets, COMMIT with the
// expected digest and size (containerd verifies both). Not thread-safe.
class ContentWriter final : public OutputStream {
 public:
  // AlreadyExists when the store has the blob already.
  static Result<std::unique_ptr<ContentWriter>> Open(Session& s, std::string ref,
                                                     const image::Descriptor& desc,
                                                     std::map<std::string, std::string> labels) {
    std::unique_ptr<ContentWriter> w(new ContentWriter(s, std::move(ref), desc, std::move(labels)));
    w->stream_ = s.content->Write(w->ctx_.get());
    content_api::WriteContentRequest req;
    req.set_action(content_api::STAT);
    req.set_ref(w->ref_);
    req.set_total(static_cast<int64_t>(desc.size));
    req.set_expected(desc.digest);
    content_api::WriteContentResponse resp;
    if (!w->stream_->Write(req) || !w->stream_->Read(&resp)) return w->Fail("stat");
    return w;
  }

  ~ContentWriter() override {
    if (!finished_) {
      // A stream is always finished before it is destroyed.
      ctx_->TryCancel();
      (void)stream_->Finish();
    }
    if (!done_) {
      // Drop the partial ingest so it does not linger until the lease expires.
      content_api::AbortRequest req;
      req.set_ref(ref_);
      google::protobuf::Empty resp;
      (void)session_.content->Abort(session_.Call().get(), req, &resp);
    }
  }

  Status Write(ByteSpan data) override {
    while (!data.empty()) {
      const size_t n = std::min(data.size(), kWriteChunkBytes);
      content_api::WriteContentRequest req;
      req.set_action(content_api::WRITE);
      req.set_offset(static_cast<int64_t>(offset_));
      req.set_data(data.data(), n);
      content_api::WriteContentResponse resp;
      if (!stream_->Write(req) || !stream_->Read(&resp)) return Fail("write");
      if (resp.offset() != static_cast<int64_t>(offset_ + n)) {
        return Status::IoError("content write " + ref_ + ": containerd is at offset " +
                               std::to_string(resp.offset()) + ", expected " +
                               std::to_string(offset_ + n));
      }
      offset_ += n;
      data = data.subspan(n);
    }
    return Status::Ok();
  }

  // Commits: containerd checks size and digest against the descriptor.
  Status Close() override {
    content_api::WriteContentRequest req;
    req.set_action(content_api::COMMIT);
    req.set_offset(static_cast<int64_t>(offset_));
    req.set_total(static_cast<int64_t>(desc_.size));
    req.set_expected(desc_.digest);
    SetLabels(req.mutable_labels(), labels_);
    content_api::WriteContentResponse resp;
    if (!stream_->Write(req) || !stream_->Read(&resp)) return Fail("commit");
    // containerd answers COMMIT only after committing: the blob is in. Its stream does not
    // reliably end with a status here (the client's Finish was seen blocking), so the call is
    // cancelled instead of waited for.
    ctx_->TryCancel();
    (void)stream_->Finish();
    finished_ = true;
    done_ = true;
    if (resp.digest() != desc_.digest) {
      return Status::AuthFailed("content commit " + ref_ + ": containerd computed " +
                                resp.digest() + ", expected " + desc_.digest);
    }
    return Status::Ok();
  }

  uint64_t offset() const { return offset_; }

 private:
  ContentWriter(Session& s, std::string ref, const image::Descriptor& desc,
                std::map<std::string, std::string> labels)
      : session_(s), ctx_(s.Transfer()), ref_(std::move(ref)), desc_(desc),
        labels_(std::move(labels)) {}

  // The stream broke: its final status says why.
  Status Fail(std::string_view step) {
    stream_->WritesDone();
    grpc::Status st = stream_->Finish();
    finished_ = true;
    done_ = st.error_code() == grpc::StatusCode::ALREADY_EXISTS;  // nothing left to abort
    if (st.ok()) st = grpc::Status(grpc::StatusCode::INTERNAL, "stream ended early");
    return FromGrpcStatus(st, "content " + std::string(step) + " " + ref_);
  }

  Session& session_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<content_api::WriteContentRequest,
                                           content_api::WriteContentResponse>> stream_;
  std::string ref_;
  image::Descriptor desc_;
  std::map<std::string, std::string> labels_;
  uint64_t offset_ = 0;
  bool finished_ = false;  // stream_->Finish() was called
  bool done_ = false;      // committed, or nothing to abort
};

// Ensures the store holds `bytes` as `desc` with `labels` (added to an existing blob's).
Status PutBlob(Session& s, const std::string& ref, const image::Descriptor& desc, ByteSpan bytes,
               const std::map<std::string, std::string>& labels) {
  LC_RETURN_IF_ERROR(HoldInLease(s, "content", desc.digest));  // before it is found present
  Status info = ContentInfo(s, desc.digest);
  if (info.ok()) return UpdateContentLabels(s, desc.digest, labels);
  if (info.code() != StatusCode::kNotFound) return info;
  auto writer = ContentWriter::Open(s, ref, desc, labels);
  if (!writer.ok()) {
    if (writer.status().code() == StatusCode::kAlreadyExists) {
      return UpdateContentLabels(s, desc.digest, labels);
    }
    return writer.status();
  }
  LC_RETURN_IF_ERROR((*writer)->Write(bytes));
  return (*writer)->Close();
}

// Ensures the store holds the registry blob `desc`; returns the bytes fetched (0 if present).
Result<uint64_t> FetchBlob(Session& s, registry::Client& reg, const registry::Reference& repo,
                           const std::string& ref, const image::Descriptor& desc,
                           const std::map<std::string, std::string>& labels) {
  LC_RETURN_IF_ERROR(HoldInLease(s, "content", desc.digest));  // before it is found present
  Status info = ContentInfo(s, desc.digest);
  if (info.ok()) return uint64_t{0};
  if (info.code() != StatusCode::kNotFound) return info;
  auto writer = ContentWriter::Open(s, ref, desc, labels);
  if (!writer.ok()) {
    if (writer.status().code() == StatusCode::kAlreadyExists) return uint64_t{0};
    return writer.status();
  }
  LC_RETURN_IF_ERROR(reg.GetBlob(repo, desc.digest, **writer).WithContext("fetch from registry"));
  const uint64_t fetched = (*writer)->offset();
  LC_RETURN_IF_ERROR((*writer)->Close());
  return fetched;
}

Result<std::vector<uint8_t>> FetchSmallBlob(registry::Client& reg, const registry::Reference& repo,
                                            const image::Descriptor& desc) {
  if (desc.size > kMaxMetadataBytes) {
    return Status::Unsupported("blob " + desc.digest + " is " + std::to_string(desc.size) +
                               " bytes; configs over " + std::to_string(kMaxMetadataBytes) +
                               " bytes are refused");
  }
  MemoryOutputStream out;
  LC_RETURN_IF_ERROR(reg.GetBlob(repo, desc.digest, out));
  if (out.bytes().size() != desc.size) {
    return Status::Corruption("blob " + desc.digest + ": " + std::to_string(out.bytes().size()) +
                              " bytes, the manifest says " + std::to_string(desc.size));
  }
  return out.Take();
}

image::Descriptor DescriptorOf(const registry::Manifest& m) {
  image::Descriptor d;
  d.media_type = m.media_type;
  d.digest = m.digest;
  d.size = m.bytes.size();
  return d;
}

// The image's manifest for the platform, and the index it came from (if any).
struct Resolved {
  std::optional<registry::Manifest> index;
  registry::Manifest manifest;
  image::Manifest parsed;
};

Result<Resolved> Resolve(registry::Client& reg, const registry::Reference& ref,
                         const image::Platform& platform) {
  Resolved r;
  LC_ASSIGN_OR_RETURN(registry::Manifest top, reg.GetManifest(ref));
  if (image::IsIndexMediaType(top.media_type)) {
    LC_ASSIGN_OR_RETURN(image::Index index, image::ParseIndex(top.bytes));
    const image::Descriptor* chosen = nullptr;
    for (const auto& m : index.manifests) {
      if (m.platform ? PlatformMatches(platform, *m.platform) : index.manifests.size() == 1) {
        chosen = &m;
        break;
      }
    }
    if (!chosen) {
      std::string have;
      for (const auto& m : index.manifests) {
        if (!have.empty()) have += ", ";
        have += m.platform ? m.platform->os + "/" + m.platform->architecture : "unknown";
      }
      return Status::NotFound(ref.ToString() + ": no manifest for platform " + platform.os + "/" +
                              platform.architecture + " in the index (it has: " + have + ")");
    }
    LC_ASSIGN_OR_RETURN(r.manifest, reg.GetManifest(ref.WithDigest(chosen->digest)));
    r.index = std::move(top);
  } else {
    r.manifest = std::move(top);
  }
  if (!image::IsManifestMediaType(r.manifest.media_type)) {
    return Status::Unsupported(ref.ToString() + ": manifest media type \"" +
                               r.manifest.media_type + "\" is not an image manifest");
  }
  LC_ASSIGN_OR_RETURN(r.parsed, image::ParseManifest(r.manifest.bytes));
  return r;
}

struct LayerJob {
  size_t index;
  const image::Descriptor* desc;
  std::string diff_id;
  std::string parent;  // chain ID of the layers below ("" for the first)
  std::string chain_id;
  std::map<std::string, std::string> labels;
};

// Stat → Prepare → (ALREADY_EXISTS: remote | fetch, apply, verify, commit).
Result<LayerPullReport> PullLayer(Session& s, registry::Client& reg,
                                  const registry::Reference& repo, const LayerJob& job,
                                  const std::map<std::string, std::string>& blob_labels) {
  const auto start = Clock::now();
  LayerPullReport report;
  report.index = job.index;
  report.digest = job.desc->digest;
  report.media_type = job.desc->media_type;
  report.size = job.desc->size;
  report.diff_id = job.diff_id;
  report.chain_id = job.chain_id;

  auto stat = [&]() -> Status {
    snapshots_api::StatSnapshotRequest req;
    req.set_snapshotter(s.snapshotter());
    req.set_key(job.chain_id);
    snapshots_api::StatSnapshotResponse resp;
    return FromGrpcStatus(s.snapshots->Stat(s.Call().get(), req, &resp),
                          "stat snapshot " + job.chain_id);
  };
  // A snapshot found present must outlive the pull too (the next layer's parent, the config's
  // gc.ref.snapshot label).
  LC_RETURN_IF_ERROR(HoldInLease(s, "snapshots/" + s.snapshotter(), job.chain_id));
  Status present = stat();
  if (present.ok()) {
    report.outcome = LayerOutcome::kPresent;
    report.duration = Since(start);
    return report;
  }
  if (present.code() != StatusCode::kNotFound) return present;

  std::string key;
  snapshots_api::PrepareSnapshotResponse prepared;
  Status prepare_status;
  for (int attempt = 0; attempt < 3; ++attempt) {
    key = UnpackKey(NewUniquePart(), job.chain_id);
    snapshots_api::PrepareSnapshotRequest req;
    req.set_snapshotter(s.snapshotter());
    req.set_key(key);
    req.set_parent(job.parent);
    SetLabels(req.mutable_labels(), job.labels);
    prepared.Clear();
    prepare_status = FromGrpcStatus(s.snapshots->Prepare(s.Call().get(), req, &prepared),
                                    "prepare snapshot \"" + key + "\"");
    if (prepare_status.code() != StatusCode::kAlreadyExists) break;
    // The snapshotter has the chain ID now (it mounted the layer remotely, or a concurrent pull
    // committed it); an ALREADY_EXISTS for the key alone means retry with a new key.
    if (stat().ok()) {
      report.outcome = LayerOutcome::kRemote;
      report.duration = Since(start);
      return report;
    }
  }
  LC_RETURN_IF_ERROR(prepare_status);

  // An ordinary layer: from here on, a failure removes the active snapshot.
  auto remove_active = [&]() {
    snapshots_api::RemoveSnapshotRequest req;
    req.set_snapshotter(s.snapshotter());
    req.set_key(key);
    google::protobuf::Empty resp;
    (void)s.snapshots->Remove(s.Call().get(), req, &resp);
  };
  auto fetched = FetchBlob(s, reg, repo, "layer-" + job.desc->digest, *job.desc, blob_labels);
  if (!fetched.ok()) {
    remove_active();
    return fetched.status().WithContext("fetch blob");
  }
  report.bytes_fetched = *fetched;

  diff_api::ApplyRequest apply_req;
  ToProto(*job.desc, apply_req.mutable_diff());
  *apply_req.mutable_mounts() = prepared.mounts();
  diff_api::ApplyResponse applied;
  Status apply_status = FromGrpcStatus(s.diff->Apply(s.Transfer().get(), apply_req, &applied),
                                       "apply (containerd diff service)");
  if (!apply_status.ok()) {
    remove_active();
    return apply_status;
  }
  if (applied.applied().digest() != job.diff_id) {
    remove_active();
    return Status::AuthFailed("apply: the layer unpacks to diff ID " + applied.applied().digest() +
                              ", the image config says " + job.diff_id);
  }

  snapshots_api::CommitSnapshotRequest commit;
  commit.set_snapshotter(s.snapshotter());
  commit.set_name(job.chain_id);
  commit.set_key(key);
  SetLabels(commit.mutable_labels(), job.labels);
  google::protobuf::Empty empty;
  Status commit_status = FromGrpcStatus(s.snapshots->Commit(s.Call().get(), commit, &empty),
                                        "commit snapshot " + job.chain_id);
  if (!commit_status.ok()) {
    remove_active();
    if (commit_status.code() != StatusCode::kAlreadyExists) return commit_status;
    report.outcome = LayerOutcome::kPresent;  // a concurrent pull committed it first
  } else {
    report.outcome = LayerOutcome::kApplied;
  }
  // As containerd's unpacker: the uncompressed digest, once apply has verified it.
  LC_RETURN_IF_ERROR(UpdateContentLabels(s, job.desc->digest,
                                         {{std::string(kLabelUncompressed), job.diff_id}}));
  report.duration = Since(start);
  return report;
}

Status PutImageRecord(Session& s, const std::string& name, const image::Descriptor& target) {
  images_api::Image img;
  img.set_name(name);
  ToProto(target, img.mutable_target());
  images_api::CreateImageRequest create;
  *create.mutable_image() = img;
  images_api::CreateImageResponse created;
  Status st = FromGrpcStatus(s.images->Create(s.Call().get(), create, &created),
                             "create image " + name);
  if (st.code() != StatusCode::kAlreadyExists) return st;
  images_api::UpdateImageRequest update;
  *update.mutable_image() = img;
  update.mutable_update_mask()->add_paths("target");
  images_api::UpdateImageResponse updated;
  return FromGrpcStatus(s.images->Update(s.Call().get(), update, &updated),
                        "update image " + name);
}

void Emit(const PullOptions& o, std::string stage, const LayerPullReport* layer,
          std::string message) {
  if (!o.progress) return;
  PullEvent e;
  e.stage = std::move(stage);
  e.layer = layer;
  e.message = std::move(message);
  o.progress(e);
}

Result<PullReport> Pull(const PullOptions& o) {
  const auto start = Clock::now();
  if (o.ref.empty()) return Status::InvalidArgument("pull: no image reference given");
  if (o.snapshotter.empty()) return Status::InvalidArgument("pull: no snapshotter given");
  if (o.ns.empty()) return Status::InvalidArgument("pull: no containerd namespace given");
  LC_ASSIGN_OR_RETURN(registry::Reference ref, registry::Reference::Parse(o.ref));
  LC_ASSIGN_OR_RETURN(image::Platform platform, ParsePlatform(o.platform));
  LC_ASSIGN_OR_RETURN(auto reg, registry::Client::Create(o.registry));

  std::string address = o.address;
  if (address.starts_with("unix://")) address = address.substr(7);
  if (address.empty()) return Status::InvalidArgument("pull: no containerd address given");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  auto channel = grpc::CreateCustomChannel("unix:" + address, grpc::InsecureChannelCredentials(),
                                           args);
  Session s(channel, o);

  LC_ASSIGN_OR_RETURN(std::string lease, CreateLease(s, o.lease_expiry));
  LeaseGuard lease_guard(s, lease);
  s.scope.lease = lease;

  PullReport report;
  report.image_name = ref.ToString();
  LC_ASSIGN_OR_RETURN(Resolved resolved, Resolve(*reg, ref, platform));
  const image::Manifest& manifest = resolved.parsed;
  report.manifest_digest = resolved.manifest.digest;
  report.config_digest = manifest.config.digest;
  report.bytes_fetched += resolved.manifest.bytes.size();
  if (resolved.index) report.bytes_fetched += resolved.index->bytes.size();
  Emit(o, "resolved", nullptr,
       ref.ToString() + ": manifest " + resolved.manifest.digest + ", " +
           std::to_string(manifest.layers.size()) + " layer(s)");

  LC_ASSIGN_OR_RETURN(std::vector<uint8_t> config_bytes,
                      FetchSmallBlob(*reg, ref, manifest.config));
  report.bytes_fetched += config_bytes.size();
  LC_ASSIGN_OR_RETURN(image::ImageConfig config, image::ParseImageConfig(config_bytes));
  if (config.diff_ids.size() != manifest.layers.size()) {
    return Status::Corruption("config " + manifest.config.digest + " has " +
                              std::to_string(config.diff_ids.size()) + " diff_ids for " +
                              std::to_string(manifest.layers.size()) + " layers");
  }

  // Children first, each with the labels that keep its own children.
  const std::map<std::string, std::string> source_label = {
      {std::string(kLabelDistributionSourcePrefix) + ref.registry, ref.repository}};
  LC_RETURN_IF_ERROR(PutBlob(s, "config-" + manifest.config.digest, manifest.config,
                             config_bytes, source_label)
                         .WithContext("store config"));
  auto manifest_labels = ManifestGcLabels(manifest);
  manifest_labels.insert(source_label.begin(), source_label.end());
  const image::Descriptor manifest_desc = DescriptorOf(resolved.manifest);
  LC_RETURN_IF_ERROR(PutBlob(s, "manifest-" + manifest_desc.digest, manifest_desc,
                             resolved.manifest.bytes, manifest_labels)
                         .WithContext("store manifest"));
  report.target = manifest_desc;
  if (resolved.index) {
    auto index_labels = IndexGcLabels({manifest_desc.digest});
    index_labels.insert(source_label.begin(), source_label.end());
    const image::Descriptor index_desc = DescriptorOf(*resolved.index);
    LC_RETURN_IF_ERROR(PutBlob(s, "index-" + index_desc.digest, index_desc,
                               resolved.index->bytes, index_labels)
                           .WithContext("store index"));
    report.target = index_desc;
  }

  const std::vector<std::string> chain = ChainIds(config.diff_ids);
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    LayerJob job;
    job.index = i;
    job.desc = &manifest.layers[i];
    job.diff_id = config.diff_ids[i];
    job.parent = i == 0 ? "" : chain[i - 1];
    job.chain_id = chain[i];
    job.labels = SnapshotLabels(ref.ToString(), manifest.layers, i, chain[i],
                                resolved.manifest.digest);
    auto layer = PullLayer(s, *reg, ref, job, source_label);
    if (!layer.ok()) {
      return layer.status().WithContext("layer " + std::to_string(i) + " (" +
                                        manifest.layers[i].digest + ")");
    }
    report.bytes_fetched += layer->bytes_fetched;
    report.layers.push_back(std::move(*layer));
    const LayerPullReport& l = report.layers.back();
    Emit(o, "layer", &l,
         "layer " + std::to_string(i + 1) + "/" + std::to_string(manifest.layers.size()) + " " +
             Short(l.digest) + ": " + std::string(LayerOutcomeName(l.outcome)) + " (" +
             std::to_string(l.bytes_fetched) + " bytes fetched, " +
             std::to_string(l.duration.count()) + " ms)");
  }

  if (!chain.empty()) {
    report.chain_id = chain.back();
    LC_RETURN_IF_ERROR(UpdateContentLabels(
        s, manifest.config.digest,
        {{std::string(kLabelGcRefSnapshotPrefix) + o.snapshotter, chain.back()}}));
  }
  LC_RETURN_IF_ERROR(PutImageRecord(s, report.image_name, report.target));
  report.duration = Since(start);
  Emit(o, "image", nullptr,
       "image " + report.image_name + " -> " + report.target.digest + " (" +
           std::to_string(report.bytes_fetched) + " bytes fetched in " +
           std::to_string(report.duration.count()) + " ms)");
  return report;
}

}  // namespace

std::string_view LayerOutcomeName(LayerOutcome outcome) {
  switch (outcome) {
    case LayerOutcome::kPresent:
      return "present";
    case LayerOutcome::kRemote:
      return "remote";
    case LayerOutcome::kApplied:
      return "applied";
  }
  return "unknown";
}

Result<PullReport> PullImage(const PullOptions& options) {
  auto r = Pull(options);
  if (!r.ok()) return r.status().WithContext("pull " + options.ref);
  return r;
}

}  // namespace lazycrypt::ctrdclient
