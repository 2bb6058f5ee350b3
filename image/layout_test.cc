#include "image/layout.h"

#include <signal.h>
#include <sys/resource.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "crypto/digest.h"
#include "tests/test_util.h"

namespace lazycrypt::image {
namespace {

namespace fs = std::filesystem;
using ::lazycrypt::testing::FlipBit;
using ::lazycrypt::testing::ListFiles;
using ::lazycrypt::testing::ReadFileString;
using ::lazycrypt::testing::TempDir;
using ::lazycrypt::testing::WriteFileString;
using ::testing::HasSubstr;

std::string DigestOf(std::string_view data) {
  return crypto::OciDigest(crypto::Sha256::Of(AsBytes(data)));
}

// Writes a one-layer image (config + layer + manifest) and tags it. Returns the manifest
// descriptor.
Descriptor WriteImage(ImageWriter& writer, const std::string& layer_bytes, const std::string& tag) {
  auto layer = writer.PutBlob(std::string(kMediaTypeOciLayerTar), AsBytes(layer_bytes));
  EXPECT_TRUE(layer.ok()) << layer.status().ToString();
  std::string config = R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[")" +
                       DigestOf(layer_bytes) + R"("]}})";
  auto config_desc = writer.PutBlob(std::string(kMediaTypeOciConfig), AsBytes(config));
  EXPECT_TRUE(config_desc.ok());
  Manifest m;
  m.media_type = std::string(kMediaTypeOciManifest);
  m.config = *config_desc;
  m.layers = {*layer};
  auto manifest = writer.PutBlob(std::string(kMediaTypeOciManifest), AsBytes(SerializeManifest(m)));
  EXPECT_TRUE(manifest.ok());
  Status s = writer.Commit(tag, *manifest);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return *manifest;
}

// Limits the size of files this process may write; restores the limit on destruction.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    signal(SIGXFSZ, SIG_IGN);  // write() fails with EFBIG instead of killing the process
    getrlimit(RLIMIT_FSIZE, &saved_);
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() { setrlimit(RLIMIT_FSIZE, &saved_); }

 private:
  rlimit saved_{};
};

TEST(ImageReference, ParsesOciReferences) {
  auto a = ImageReference::Parse("oci:/tmp/x:v1.0");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->dir, fs::path("/tmp/x"));
  EXPECT_EQ(a->tag, "v1.0");
  EXPECT_EQ(a->ToString(), "oci:/tmp/x:v1.0");
  auto b = ImageReference::Parse("oci:relative/dir");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->dir, fs::path("relative/dir"));
  EXPECT_EQ(b->tag, "");
}

TEST(ImageReference, ParsesRegistryReferences) {
  auto docker = ImageReference::Parse("docker://registry.example/busybox:latest");
  ASSERT_TRUE(docker.ok()) << docker.status().ToString();
  EXPECT_TRUE(docker->is_registry());
  EXPECT_EQ(docker->docker, "registry.example/busybox:latest");
  EXPECT_EQ(docker->ToString(), "docker://registry.example/busybox:latest");
  EXPECT_FALSE(ImageReference::Parse("oci:/x")->is_registry());
  auto local = ImageReference::Parse("docker://127.0.0.1:5000/team/app@sha256:" + std::string(64, 'a'));
  ASSERT_TRUE(local.ok()) << local.status().ToString();
  auto bad_tag = ImageReference::Parse("docker://127.0.0.1:5000/app:bad!tag");
  ASSERT_FALSE(bad_tag.ok());
  EXPECT_THAT(bad_tag.status().message(), HasSubstr("bad!tag"));
  auto no_slashes = ImageReference::Parse("docker:busybox");
  ASSERT_FALSE(no_slashes.ok());
  EXPECT_THAT(no_slashes.status().message(), HasSubstr("docker://"));
}

TEST(ImageReference, RejectsOtherTransportsByName) {
  auto archive = ImageReference::Parse("oci-archive:/tmp/a.tar");
  ASSERT_FALSE(archive.ok());
  EXPECT_THAT(archive.status().message(), HasSubstr("transport 'oci-archive:'"));
  auto bare = ImageReference::Parse("/tmp/dir");
  ASSERT_FALSE(bare.ok());
  EXPECT_EQ(bare.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bare.status().message(), HasSubstr("has no transport"));
  EXPECT_FALSE(ImageReference::Parse("oci:").ok());
  EXPECT_FALSE(ImageReference::Parse("oci::tag").ok());
  auto bad_tag = ImageReference::Parse("oci:/tmp/x:-bad");
  ASSERT_FALSE(bad_tag.ok());
  EXPECT_THAT(bad_tag.status().message(), HasSubstr("invalid tag '-bad'"));
  EXPECT_FALSE(ImageReference::Parse("oci:/tmp/x:").ok());
  EXPECT_FALSE(ImageReference::Parse("oci:/tmp/x:a/b").ok());
}

TEST(ValidateTag, AcceptsAndRejects) {
  EXPECT_TRUE(ValidateTag("latest").ok());
  EXPECT_TRUE(ValidateTag("v1.2.3-rc_1").ok());
  EXPECT_TRUE(ValidateTag(std::string(128, 'a')).ok());
  EXPECT_FALSE(ValidateTag(std::string(129, 'a')).ok());
  EXPECT_FALSE(ValidateTag("").ok());
  EXPECT_FALSE(ValidateTag(".hidden").ok());
  EXPECT_FALSE(ValidateTag("a b").ok());
  EXPECT_FALSE(ValidateTag("a:b").ok());
}

TEST(OciLayout, WriteThenReadRoundTrip) {
  TempDir tmp;
  fs::path dir = tmp / "layout";
  Descriptor manifest;
  {
    auto writer = ImageWriter::Begin(dir);
    ASSERT_TRUE(writer.ok()) << writer.status().ToString();
    EXPECT_TRUE((*writer)->created_layout());
    manifest = WriteImage(**writer, "layer bytes", "v1");
  }
  EXPECT_EQ(ReadFileString(dir / "oci-layout"), R"({"imageLayoutVersion":"1.0.0"})");
  auto layout = OciLayout::Open(dir);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  auto resolved = (*layout)->ResolveManifest("v1");
  ASSERT_TRUE(resolved.ok()) << resolved.status().ToString();
  EXPECT_EQ(resolved->digest, manifest.digest);
  EXPECT_EQ(resolved->size, manifest.size);
  EXPECT_EQ(resolved->Annotation(kAnnotationRefName), "v1");
  // No tag: the only manifest.
  auto only = (*layout)->ResolveManifest("");
  ASSERT_TRUE(only.ok());
  EXPECT_EQ(only->digest, manifest.digest);
  auto image = LoadImage(**layout, "v1");
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  ASSERT_EQ(image->manifest.layers.size(), 1u);
  EXPECT_EQ(image->manifest.layers[0].digest, DigestOf("layer bytes"));
  EXPECT_EQ(image->config.diff_ids[0], DigestOf("layer bytes"));
  EXPECT_EQ(DigestOf(std::string(image->config_bytes.begin(), image->config_bytes.end())),
            image->manifest.config.digest);
  // Blob files are named by their content.
  EXPECT_EQ(ReadFileString((*layout)->BlobPath(DigestOf("layer bytes"))), "layer bytes");
  // No temporary files are left behind.
  for (const std::string& f : ListFiles(dir)) EXPECT_THAT(f, ::testing::Not(HasSubstr("tmp"))) << f;
}

TEST(OciLayout, TagsAreReplacedAndKept) {
  TempDir tmp;
  fs::path dir = tmp / "layout";
  auto w1 = ImageWriter::Begin(dir);
  ASSERT_TRUE(w1.ok());
  Descriptor first = WriteImage(**w1, "one", "a");
  auto w2 = ImageWriter::Begin(dir);
  ASSERT_TRUE(w2.ok());
  EXPECT_FALSE((*w2)->created_layout());
  Descriptor second = WriteImage(**w2, "two", "b");
  auto w3 = ImageWriter::Begin(dir);
  ASSERT_TRUE(w3.ok());
  Descriptor third = WriteImage(**w3, "three", "a");  // re-points "a"

  auto layout = OciLayout::Open(dir);
  ASSERT_TRUE(layout.ok());
  auto index = (*layout)->ReadIndex();
  ASSERT_TRUE(index.ok());
  EXPECT_EQ(index->manifests.size(), 2u);
  EXPECT_EQ((*layout)->ResolveManifest("a")->digest, third.digest);
  EXPECT_EQ((*layout)->ResolveManifest("b")->digest, second.digest);
  EXPECT_NE(first.digest, third.digest);
  // Two manifests, no tag, none is "latest": a named NotFound listing the tags.
  auto ambiguous = (*layout)->ResolveManifest("");
  ASSERT_FALSE(ambiguous.ok());
  EXPECT_EQ(ambiguous.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(ambiguous.status().message(), HasSubstr("tags: b, a"));
  auto missing = (*layout)->ResolveManifest("nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("tag 'nope' not found"));
  // "latest" is the default among several.
  auto w4 = ImageWriter::Begin(dir);
  ASSERT_TRUE(w4.ok());
  Descriptor latest = WriteImage(**w4, "four", "latest");
  EXPECT_EQ((*layout)->ResolveManifest("")->digest, latest.digest);
}

TEST(OciLayout, AbortedWriterRemovesNewLayout) {
  TempDir tmp;
  fs::path dir = tmp / "new-layout";
  {
    auto writer = ImageWriter::Begin(dir);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->PutBlob("a/b", AsBytes("some blob")).ok());
    auto pending = (*writer)->NewBlob();
    ASSERT_TRUE(pending.ok());
    ASSERT_TRUE((*pending)->Write(AsBytes("half written")).ok());
    // Destroyed without Close(): its temporary file goes; then the writer without Commit().
  }
  EXPECT_FALSE(fs::exists(dir));
}

TEST(OciLayout, AbortedWriterLeavesExistingLayoutUntouched) {
  TempDir tmp;
  fs::path dir = tmp / "layout";
  {
    auto writer = ImageWriter::Begin(dir);
    ASSERT_TRUE(writer.ok());
    WriteImage(**writer, "original", "latest");
  }
  std::string index_before = ReadFileString(dir / "index.json");
  auto files_before = ListFiles(dir);
  {
    auto writer = ImageWriter::Begin(dir);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->PutBlob("a/b", AsBytes("new blob")).ok());
    ASSERT_TRUE((*writer)->PutBlob("a/b", AsBytes("original")).ok());  // present: not owned
    EXPECT_EQ(ListFiles(dir).size(), files_before.size() + 1);
  }
  EXPECT_EQ(ReadFileString(dir / "index.json"), index_before);
  EXPECT_EQ(ListFiles(dir), files_before);
}

TEST(OciLayout, FailedIndexWriteLeavesOldIndexIntact) {
  TempDir tmp;
  fs::path dir = tmp / "layout";
  {
    auto writer = ImageWriter::Begin(dir);
    ASSERT_TRUE(writer.ok());
    WriteImage(**writer, "original", "latest");
  }
  std::string index_before = ReadFileString(dir / "index.json");
  auto files_before = ListFiles(dir);
  {
    auto writer = ImageWriter::Begin(dir);
    ASSERT_TRUE(writer.ok());
    auto manifest = (*writer)->PutBlob(std::string(kMediaTypeOciManifest), AsBytes("{}"));
    ASSERT_TRUE(manifest.ok());
    Status s;
    {
      // index.json is ~300 bytes: writing the new one fails part way (EFBIG).
      FileSizeLimit limit(64);
      s = (*writer)->Commit("v2", *manifest);
    }
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kIoError) << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr("index.json"));
    EXPECT_EQ(ReadFileString(dir / "index.json"), index_before);
  }
  // The aborted writer also removed its manifest blob and left no temporary file.
  EXPECT_EQ(ListFiles(dir), files_before);
}

TEST(OciLayout, FailedBlobWriteLeavesNothing) {
  TempDir tmp;
  fs::path dir = tmp / "layout";
  auto writer = ImageWriter::Begin(dir);
  ASSERT_TRUE(writer.ok());
  auto files_before = ListFiles(dir);
  {
    FileSizeLimit limit(100);
    auto blob = (*writer)->PutBlob("a/b", AsBytes(std::string(1000, 'x')));
    ASSERT_FALSE(blob.ok());
    EXPECT_EQ(blob.status().code(), StatusCode::kIoError);
  }
  EXPECT_EQ(ListFiles(dir), files_before);
}

TEST(OciLayout, CommitRequiresManifestBlobAndValidTag) {
  TempDir tmp;
  fs::path dir = tmp / "layout";
  auto writer = ImageWriter::Begin(dir);
  ASSERT_TRUE(writer.ok());
  std::string index_before = ReadFileString(dir / "index.json");
  Descriptor absent;
  absent.media_type = std::string(kMediaTypeOciManifest);
  absent.digest = DigestOf("not written");
  absent.size = 11;
  Status s = (*writer)->Commit("v1", absent);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  auto manifest = (*writer)->PutBlob(std::string(kMediaTypeOciManifest), AsBytes("{}"));
  ASSERT_TRUE(manifest.ok());
  s = (*writer)->Commit("bad tag", *manifest);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadFileString(dir / "index.json"), index_before);
}

TEST(OciLayout, ReadBlobVerifiesSizeAndDigest) {
  TempDir tmp;
  fs::path dir = tmp / "layout";
  auto writer = ImageWriter::Begin(dir);
  ASSERT_TRUE(writer.ok());
  auto d = (*writer)->PutBlob("a/b", AsBytes("0123456789"));
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE((*writer)->Commit("t", *(*writer)->PutBlob(std::string(kMediaTypeOciManifest),
                                                          AsBytes("{}"))).ok());
  const OciLayout& layout = (*writer)->layout();
  ASSERT_TRUE(layout.ReadBlob(*d).ok());
  ASSERT_TRUE(layout.VerifyBlob(*d).ok());

  Descriptor wrong_size = *d;
  wrong_size.size = 11;
  auto s1 = layout.ReadBlob(wrong_size);
  ASSERT_FALSE(s1.ok());
  EXPECT_EQ(s1.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(s1.status().message(), HasSubstr("file has 10 bytes, its descriptor says 11"));

  Descriptor too_big = *d;
  too_big.size = kMaxMetadataBlobBytes + 1;
  auto s2 = layout.ReadBlob(too_big);
  ASSERT_FALSE(s2.ok());
  EXPECT_THAT(s2.status().message(), HasSubstr("exceeds the limit"));

  Descriptor missing = *d;
  missing.digest = DigestOf("missing");
  auto s3 = layout.ReadBlob(missing);
  ASSERT_FALSE(s3.ok());
  EXPECT_EQ(s3.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(s3.status().message(), HasSubstr("is missing"));

  FlipBit(layout.BlobPath(d->digest), 3);
  auto s4 = layout.ReadBlob(*d);
  ASSERT_FALSE(s4.ok());
  EXPECT_EQ(s4.status().code(), StatusCode::kAuthFailed);
  EXPECT_THAT(s4.status().message(), HasSubstr("digest mismatch"));
  Status s5 = layout.VerifyBlob(*d);
  EXPECT_EQ(s5.code(), StatusCode::kAuthFailed);
  EXPECT_THAT(s5.message(), HasSubstr(d->digest));
}

TEST(OciLayout, VerifyingStreamRejectsLongShortAndTampered) {
  Descriptor d;
  d.digest = DigestOf("abcdef");
  d.size = 6;
  auto drain = [&](std::string_view data) -> Status {
    MemoryInputStream in(AsBytes(data));
    auto v = NewVerifyingInputStream(in, d, "layer 0");
    MemoryOutputStream out;
    return CopyStream(*v, out).status();
  };
  EXPECT_TRUE(drain("abcdef").ok());
  Status longer = drain("abcdefg");
  EXPECT_EQ(longer.code(), StatusCode::kCorruption);
  EXPECT_THAT(longer.message(), HasSubstr("layer 0: longer than the 6 bytes"));
  Status shorter = drain("abcde");
  EXPECT_EQ(shorter.code(), StatusCode::kCorruption);
  EXPECT_THAT(shorter.message(), HasSubstr("has 5 bytes"));
  Status tampered = drain("abcdeF");
  EXPECT_EQ(tampered.code(), StatusCode::kAuthFailed);
  EXPECT_THAT(tampered.message(), HasSubstr("layer 0: digest mismatch"));
}

TEST(OciLayout, CopyBlobVerifiesSource) {
  TempDir tmp;
  auto src = ImageWriter::Begin(tmp / "src");
  ASSERT_TRUE(src.ok());
  auto d = (*src)->PutBlob("a/b", AsBytes("payload bytes"));
  ASSERT_TRUE(d.ok());
  auto dst = ImageWriter::Begin(tmp / "dst");
  ASSERT_TRUE(dst.ok());
  ASSERT_TRUE((*dst)->CopyBlob((*src)->layout(), *d).ok());
  EXPECT_EQ(ReadFileString((*dst)->layout().BlobPath(d->digest)), "payload bytes");

  auto d2 = (*src)->PutBlob("a/b", AsBytes("second payload"));
  ASSERT_TRUE(d2.ok());
  FlipBit((*src)->layout().BlobPath(d2->digest), 0);
  Status s = (*dst)->CopyBlob((*src)->layout(), *d2);
  EXPECT_EQ(s.code(), StatusCode::kAuthFailed);
  EXPECT_FALSE((*dst)->layout().HasBlob(d2->digest));
  for (const std::string& f : ListFiles(tmp / "dst")) EXPECT_THAT(f, ::testing::Not(HasSubstr("tmp")));
}

TEST(OciLayout, OpenRejectsNonLayouts) {
  TempDir tmp;
  auto missing = OciLayout::Open(tmp / "missing");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);

  fs::create_directory(tmp / "plain");
  auto plain = OciLayout::Open(tmp / "plain");
  ASSERT_FALSE(plain.ok());
  EXPECT_THAT(plain.status().message(), HasSubstr("no oci-layout file"));

  fs::create_directory(tmp / "v2");
  WriteFileString(tmp / "v2" / "oci-layout", R"({"imageLayoutVersion":"2.0.0"})");
  WriteFileString(tmp / "v2" / "index.json", R"({"schemaVersion":2,"manifests":[]})");
  auto v2 = OciLayout::Open(tmp / "v2");
  ASSERT_FALSE(v2.ok());
  EXPECT_EQ(v2.status().code(), StatusCode::kUnsupported);

  fs::create_directory(tmp / "badindex");
  WriteFileString(tmp / "badindex" / "oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  WriteFileString(tmp / "badindex" / "index.json", R"({"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:zz","size":1}]})");
  auto badindex = OciLayout::Open(tmp / "badindex");
  ASSERT_FALSE(badindex.ok());
  EXPECT_EQ(badindex.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(badindex.status().message(), HasSubstr("index.json"));
  EXPECT_THAT(badindex.status().message(), HasSubstr("manifests[0].digest"));

  // Begin refuses to turn a non-empty directory into a layout.
  WriteFileString(tmp / "plain" / "file", "x");
  auto begin = ImageWriter::Begin(tmp / "plain");
  ASSERT_FALSE(begin.ok());
  EXPECT_EQ(begin.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(fs::exists(tmp / "plain" / "file"));
  auto no_parent = ImageWriter::Begin(tmp / "a" / "b");
  ASSERT_FALSE(no_parent.ok());
  EXPECT_THAT(no_parent.status().message(), HasSubstr("parent directory"));
}

TEST(OciLayout, LoadImageRejectsDiffIdCountMismatch) {
  TempDir tmp;
  auto writer = ImageWriter::Begin(tmp / "l");
  ASSERT_TRUE(writer.ok());
  auto layer = (*writer)->PutBlob(std::string(kMediaTypeOciLayerTar), AsBytes("x"));
  auto config = (*writer)->PutBlob(std::string(kMediaTypeOciConfig),
                                   AsBytes(R"({"rootfs":{"type":"layers","diff_ids":[]}})"));
  Manifest m;
  m.config = *config;
  m.layers = {*layer};
  auto manifest = (*writer)->PutBlob(std::string(kMediaTypeOciManifest), AsBytes(SerializeManifest(m)));
  ASSERT_TRUE((*writer)->Commit("latest", *manifest).ok());
  auto image = LoadImage((*writer)->layout(), "");
  ASSERT_FALSE(image.ok());
  EXPECT_THAT(image.status().message(), HasSubstr("0 diff_ids for the manifest's 1 layers"));
}

TEST(OciLayout, ResolvesPlatformFromNestedIndex) {
  TempDir tmp;
  auto writer = ImageWriter::Begin(tmp / "l");
  ASSERT_TRUE(writer.ok());
  auto arm = (*writer)->PutBlob(std::string(kMediaTypeOciManifest), AsBytes(R"({"arm":1})"));
  auto host = (*writer)->PutBlob(std::string(kMediaTypeOciManifest), AsBytes(R"({"host":1})"));
  Index nested;
  nested.media_type = std::string(kMediaTypeOciIndex);
  Descriptor a = *arm, h = *host;
  a.platform = Platform{"arm64", "linux", "", {}, "v8"};
#if defined(__aarch64__)
  a.platform = Platform{"amd64", "linux", "", {}, ""};
  h.platform = Platform{"arm64", "linux", "", {}, ""};
#else
  h.platform = Platform{"amd64", "linux", "", {}, ""};
#endif
  nested.manifests = {a, h};
  auto index = (*writer)->PutBlob(std::string(kMediaTypeOciIndex), AsBytes(SerializeIndex(nested)));
  ASSERT_TRUE((*writer)->Commit("multi", *index).ok());
  auto resolved = (*writer)->layout().ResolveManifest("multi");
  ASSERT_TRUE(resolved.ok()) << resolved.status().ToString();
  EXPECT_EQ(resolved->digest, host->digest);
}

}  // namespace
}  // namespace lazycrypt::image
