// Round trips through the lazycrypt format with real trees and real tools:
//  - a layer (busybox rootfs, and a tree with every tar feature) tarred by GNU tar, as tar,
//    tar+gzip and tar+zstd: encrypt -> eager decrypt gives back the tar byte for byte (SHA-256 ==
//    diff_id), GNU tar extracts original and decrypted tars into identical trees (content and
//    metadata), identical to the source tree; every file read lazily equals the source;
//  - whole images through the CLI: `lazycrypt encrypt` then `lazycrypt decrypt`, then
//    `umoci unpack` of both images gives the same rootfs;
//  - the same through a real docker-registry (docker://, plain HTTP, basic auth from an authfile),
//    with inspect, verify and recipients on the registry image.
#include <sys/stat.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "format/toc.h"
#include "format/writer.h"
#include "image/convert.h"
#include "image/envelope.h"
#include "image/layer.h"
#include "image/layout.h"
#include "keywrap/keys.h"
#include "tests/harness/registry_process.h"
#include "tests/integration_util.h"
#include "tests/tree_compare.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

void MakeTree(const std::string& kind, const fs::path& dir) {
  std::string script = kind == "busybox" ? "make-busybox-image.sh --rootfs" : "make-feature-tree.sh";
  auto words = script.find(' ');
  std::string file = script.substr(0, words);
  std::string flags = words == std::string::npos ? "" : script.substr(words);
  auto r = RunCommand("bash " + ShellQuote(DataScript(file).string()) + flags + " " +
                      ShellQuote(dir.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

void GnuTar(const fs::path& tree, const fs::path& tar) {
  auto r = RunCommand("tar --format=pax --xattrs --xattrs-include='*' --numeric-owner -C " +
                      ShellQuote(tree.string()) + " -cf " + ShellQuote(tar.string()) + " .");
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

void GnuUntar(const fs::path& tar, const fs::path& dir) {
  fs::create_directory(dir);
  auto r = RunCommand("tar --xattrs --xattrs-include='*' --same-owner -p --numeric-owner -C " +
                      ShellQuote(dir.string()) + " -xf " + ShellQuote(tar.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

void ExpectNoDifferences(const std::vector<std::string>& diffs, const std::string& what) {
  EXPECT_TRUE(diffs.empty()) << what << ": " << diffs.size() << " differences, e.g.:\n"
                             << (diffs.empty() ? "" : diffs[0]) << "\n"
                             << (diffs.size() > 1 ? diffs[1] : "") << "\n"
                             << (diffs.size() > 2 ? diffs[2] : "");
}

std::string Oci(const fs::path& dir, const std::string& tag = "") {
  return ShellQuote("oci:" + dir.string() + (tag.empty() ? "" : ":" + tag));
}

class LayerRoundTrip
    : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(LayerRoundTrip, EagerDecryptionReproducesTarAndTree) {
  const auto& [tree_kind, compression] = GetParam();
  TempDir tmp;
  fs::path tree = tmp / "tree";
  MakeTree(tree_kind, tree);
  GnuTar(tree, tmp / "layer.tar");
  const std::string diff_id = FileSha256(tmp / "layer.tar");
  const uint64_t tar_size = fs::file_size(tmp / "layer.tar");
  fs::path layer_file = tmp / "layer.tar";
  if (compression == "gzip") {
    layer_file = tmp / "layer.tar.gz";
    ASSERT_EQ(RunCommand("gzip -c " + ShellQuote((tmp / "layer.tar").string()) + " > " +
                         ShellQuote(layer_file.string())).exit_code, 0);
  } else if (compression == "zstd") {
    layer_file = tmp / "layer.tar.zst";
    ZstdCompressFile(tmp / "layer.tar", layer_file);
  }
  KeyPair key = GenerateKeyPair(tmp.path(), "ec256");
  auto pub = keywrap::PublicKey::Load(key.pub);
  ASSERT_TRUE(pub.ok());
  std::vector<keywrap::PublicKey> recipients;
  recipients.push_back(std::move(pub).value());
  std::vector<keywrap::PrivateKey> keys;
  keys.push_back(std::move(keywrap::PrivateKey::Load(key.priv.string())).value());

  // Encrypt with small chunks so that files span chunks and chunks hold many files.
  image::LazycryptEncryptResult encrypted;
  {
    auto in = FdInputStream::Open(layer_file);
    ASSERT_TRUE(in.ok());
    auto out = AtomicFileOutputStream::Create(tmp / "blob");
    ASSERT_TRUE(out.ok());
    format::WriterOptions options;
    options.chunk_size_bytes = 64 << 10;
    auto result = image::EncryptLazycryptLayer(**in, **out, recipients, options);
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    ASSERT_TRUE((*out)->Close().ok());
    encrypted = std::move(result).value();
  }
  // The blob's tar stream is its salt header (docs/FORMAT.md §5.1), then the source tar: a
  // diff_id of its own.
  EXPECT_EQ(crypto::OciDigest(encrypted.write.source_diff_id), diff_id);
  EXPECT_NE(crypto::OciDigest(encrypted.write.diff_id), diff_id);
  const std::string enc_diff_id = crypto::OciDigest(encrypted.write.diff_id);
  EXPECT_EQ(encrypted.write.source_tar_size, tar_size);
  EXPECT_EQ(encrypted.write.tar_size, tar_size + format::kLayerSaltHeaderSize);
  EXPECT_GT(encrypted.write.chunk_count, 3u);
  EXPECT_EQ(encrypted.descriptor.digest, FileSha256(tmp / "blob"));
  EXPECT_EQ(encrypted.descriptor.size, fs::file_size(tmp / "blob"));

  // Eager decryption, tar: byte for byte the uncompressed input.
  {
    auto blob = FileBlobSource::Open(tmp / "blob");
    ASSERT_TRUE(blob.ok());
    auto out = AtomicFileOutputStream::Create(tmp / "decrypted.tar");
    ASSERT_TRUE(out.ok());
    auto result = image::DecryptLazycryptLayer(**blob, encrypted.descriptor, keys, **out,
                                               format::DecryptOutput::kTar);
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    ASSERT_TRUE((*out)->Close().ok());
    EXPECT_EQ(crypto::OciDigest(result->diff_id), enc_diff_id);
  }
  EXPECT_EQ(FileSha256(tmp / "decrypted.tar"), enc_diff_id);
  EXPECT_EQ(SourceTarSha256(tmp / "decrypted.tar"), diff_id);
  EXPECT_TRUE(ReadFileString(tmp / "decrypted.tar").substr(format::kLayerSaltHeaderSize) ==
              ReadFileString(tmp / "layer.tar"));

  // Eager decryption, tar+zstd: decompresses to the same tar.
  {
    auto blob = FileBlobSource::Open(tmp / "blob");
    ASSERT_TRUE(blob.ok());
    auto out = AtomicFileOutputStream::Create(tmp / "decrypted.tar.zst");
    ASSERT_TRUE(out.ok());
    auto result = image::DecryptLazycryptLayer(**blob, encrypted.descriptor, keys, **out,
                                               format::DecryptOutput::kTarZstd);
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    ASSERT_TRUE((*out)->Close().ok());
  }
  EXPECT_EQ(DecompressedSha256(tmp / "decrypted.tar.zst"), enc_diff_id);

  // GNU tar extracts both into identical trees, identical to the source tree.
  GnuUntar(tmp / "layer.tar", tmp / "x-original");
  GnuUntar(tmp / "decrypted.tar", tmp / "x-decrypted");
  ExpectNoDifferences(CompareTrees(tmp / "x-original", tmp / "x-decrypted"), "original vs decrypted");
  ExpectNoDifferences(CompareTrees(tree, tmp / "x-decrypted"), "source tree vs decrypted");
  TreeCensus census = CountTree(tmp / "x-decrypted");
  EXPECT_GE(census.regular, 5u);
  EXPECT_GT(census.symlinks, 2u);
  EXPECT_GT(census.dirs, 3u);
  if (tree_kind == "features") {
    // The comparison covered every feature the tree was built with.
    EXPECT_GE(census.char_devices, 1u);
    EXPECT_GE(census.block_devices, 1u);
    EXPECT_GE(census.fifos, 1u);
    EXPECT_GE(census.hardlinked, 4u);
    EXPECT_GE(census.with_xattrs, 4u);
    EXPECT_GE(census.nonzero_nsec_mtimes, 4u);
  }

  // Lazy reads: every regular file through the index, in odd piece sizes, equals the source, and
  // its metadata equals lstat of the source.
  auto blob = FileBlobSource::Open(tmp / "blob");
  ASSERT_TRUE(blob.ok());
  auto opened = image::OpenedLayer::Open(std::move(blob).value(), encrypted.descriptor, keys);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  const format::LayerIndex& index = (*opened)->index();
  EXPECT_EQ(index.tar_size(), tar_size + format::kLayerSaltHeaderSize);
  size_t files_checked = 0;
  for (format::EntryView view : index.entries()) {
    const format::Entry e = view.Materialize();
    fs::path source = e.name == "." ? tree : tree / e.name;
    struct stat st {};
    ASSERT_EQ(::lstat(source.c_str(), &st), 0) << e.name;
    EXPECT_EQ(e.mode, st.st_mode & 07777) << e.name;
    EXPECT_EQ(e.uid, st.st_uid) << e.name;
    EXPECT_EQ(e.gid, st.st_gid) << e.name;
    EXPECT_EQ(e.mtime_sec, st.st_mtim.tv_sec) << e.name;
    EXPECT_EQ(e.mtime_nsec, static_cast<uint32_t>(st.st_mtim.tv_nsec)) << e.name;
    if (e.type != format::EntryType::kRegular) continue;
    std::string expected = ReadFileString(source);
    ASSERT_EQ(e.size, expected.size()) << e.name;
    std::string actual;
    std::vector<uint8_t> buf(4093);  // a prime: reads straddle chunk boundaries
    uint64_t offset = 0;
    while (offset < e.size) {
      auto n = (*opened)->reader().ReadFile(view, offset, buf);
      ASSERT_TRUE(n.ok()) << e.name << ": " << n.status().ToString();
      ASSERT_GT(*n, 0u) << e.name;
      actual.append(reinterpret_cast<const char*>(buf.data()), *n);
      offset += *n;
    }
    EXPECT_TRUE(actual == expected) << e.name;
    ++files_checked;
  }
  EXPECT_GE(files_checked, 5u);
}

INSTANTIATE_TEST_SUITE_P(
    TreesAndCompressions, LayerRoundTrip,
    ::testing::Combine(::testing::Values("busybox", "features"),
                       ::testing::Values("tar", "gzip", "zstd")),
    [](const auto& info) { return std::get<0>(info.param) + "_" + std::get<1>(info.param); });

// The whole image path: encrypt and decrypt with the CLI, unpack both with umoci.
void EncryptDecryptAndUnpack(const fs::path& tmp, const fs::path& src, size_t min_symlinks) {
  KeyPair rsa = GenerateKeyPair(tmp, "rsa2048");
  KeyPair ec = GenerateKeyPair(tmp, "ec384");
  auto enc = Lazycrypt("encrypt --chunk-size 128KiB -r " + ShellQuote("jwe:" + rsa.pub.string()) +
                       " -r " + ShellQuote("jwe:" + ec.pub.string()) + " " + Oci(src) + " " +
                       Oci(tmp / "enc", "v1"));
  ASSERT_EQ(enc.exit_code, 0) << enc.output;

  image::LoadedImage source = LoadLayoutImage(src);
  image::LoadedImage encrypted = LoadLayoutImage(tmp / "enc", "v1");
  // A new config: the lazycrypt layers' diff_ids are their own (docs/FORMAT.md §5.1).
  EXPECT_NE(encrypted.manifest.config.digest, source.manifest.config.digest);
  ASSERT_EQ(encrypted.manifest.layers.size(), source.manifest.layers.size());
  for (const image::Descriptor& l : encrypted.manifest.layers) {
    EXPECT_EQ(l.media_type, std::string(image::kMediaTypeLazycryptLayer));
    EXPECT_FALSE(l.Annotation(image::kAnnotationEncKeysJwe).empty());
    EXPECT_FALSE(l.Annotation(image::kAnnotationEncPubopts).empty());
    EXPECT_TRUE(l.Annotation(image::kAnnotationLazycryptTocDigest).starts_with("sha256:"));
    auto recipients = image::ListJweRecipients(l.Annotation(image::kAnnotationEncKeysJwe));
    ASSERT_TRUE(recipients.ok());
    ASSERT_EQ(recipients->size(), 2u);
    EXPECT_EQ((*recipients)[0].alg, "RSA-OAEP");
    EXPECT_EQ((*recipients)[1].alg, "ECDH-ES+A256KW");
    EXPECT_EQ((*recipients)[1].crv, "P-384");
  }

  // Decrypt with either key: gzip layers for umoci 0.4, and the default zstd.
  auto dec = Lazycrypt("decrypt --key " + ShellQuote(ec.priv.string()) +
                       " --layer-compression gzip " + Oci(tmp / "enc", "v1") + " " + Oci(tmp / "dec"));
  ASSERT_EQ(dec.exit_code, 0) << dec.output;
  auto decz = Lazycrypt("decrypt --key " + ShellQuote(rsa.priv.string()) + " " +
                        Oci(tmp / "enc", "v1") + " " + Oci(tmp / "decz"));
  ASSERT_EQ(decz.exit_code, 0) << decz.output;
  image::LoadedImage decrypted = LoadLayoutImage(tmp / "decz");
  for (size_t i = 0; i < decrypted.manifest.layers.size(); ++i) {
    const image::Descriptor& l = decrypted.manifest.layers[i];
    EXPECT_EQ(l.media_type, std::string(image::kMediaTypeOciLayerTarZstd));
    EXPECT_TRUE(l.annotations.empty());
    // The salt header (docs/FORMAT.md §5.1), then the source layer's tar.
    EXPECT_NE(decrypted.config.diff_ids[i], source.config.diff_ids[i]);
    EXPECT_EQ(DecompressedSha256(BlobPath(tmp / "decz", l.digest)), decrypted.config.diff_ids[i]);
    EXPECT_EQ(SourceTarSha256(BlobPath(tmp / "decz", l.digest)), source.config.diff_ids[i]);
  }

  fs::create_directory(tmp / "bundles");
  auto u1 = RunCommand("umoci unpack --image " + ShellQuote(src.string() + ":latest") + " " +
                       ShellQuote((tmp / "bundles" / "original").string()));
  ASSERT_EQ(u1.exit_code, 0) << u1.output;
  auto u2 = RunCommand("umoci unpack --image " + ShellQuote((tmp / "dec").string() + ":latest") +
                       " " + ShellQuote((tmp / "bundles" / "decrypted").string()));
  if (u2.exit_code != 0) {
    // umoci 0.4.7 refuses the PAX global header in front of a decrypted lazycrypt layer (its
    // unpacker knows no typeflag 'g'; GNU tar, Go's archive/tar users and containerd skip it,
    // docs/FORMAT.md §5.1). Then GNU tar unpacks the layers of both images, in order, instead
    // (GNU tar keeps whiteout files as files: compare like with like).
    // umoci's error path can also panic instead of naming the header: on the failed unpack it
    // drains the blob through its digest verifier while pgzip's read-ahead goroutine still feeds
    // it, and Go's sha256 panics "d.nx != 0" (a race in umoci 0.4.7, seen once in CI). Either is
    // umoci refusing the layer; the tree comparison below is what this test asserts.
    const bool named_the_header = u2.output.find("pax_global_header") != std::string::npos;
    const bool raced_in_its_verifier = u2.output.find("panic: d.nx != 0") != std::string::npos &&
                                       u2.output.find("VerifiedReadCloser") != std::string::npos;
    EXPECT_TRUE(named_the_header || raced_in_its_verifier) << u2.output;
    auto untar = [&](const fs::path& layout, const fs::path& rootfs) {
      fs::remove_all(rootfs.parent_path());
      fs::create_directories(rootfs);
      image::LoadedImage image = LoadLayoutImage(layout);
      for (const image::Descriptor& l : image.manifest.layers) {
        auto x = RunCommand("gzip -dcf " + ShellQuote(BlobPath(layout, l.digest).string()) +
                            " | tar --xattrs --xattrs-include='*' --same-owner -p --numeric-owner"
                            " --warning=no-timestamp -C " + ShellQuote(rootfs.string()) +
                            " -xf - 2>&1");
        ASSERT_EQ(x.exit_code, 0) << x.output;
        EXPECT_EQ(x.output, "") << "GNU tar warned";
      }
    };
    untar(tmp / "dec", tmp / "bundles" / "decrypted" / "rootfs");
    untar(src, tmp / "bundles" / "original" / "rootfs");
  }
  TreeCompareOptions options;
  options.compare_root_metadata = false;  // umoci creates rootfs/ itself
  ExpectNoDifferences(CompareTrees(tmp / "bundles" / "original" / "rootfs",
                                   tmp / "bundles" / "decrypted" / "rootfs", options),
                      "umoci unpack: original vs decrypted");
  EXPECT_GE(CountTree(tmp / "bundles" / "decrypted" / "rootfs").symlinks, min_symlinks);
}

TEST(ImageRoundTrip, BusyboxImageUnpacksToTheSameRootfs) {
  TempDir tmp;
  MakeBusyboxImage(tmp / "src");
  EncryptDecryptAndUnpack(tmp.path(), tmp / "src", /*min_symlinks=*/200);
}

TEST(ImageRoundTrip, FeatureTreeImageUnpacksToTheSameRootfs) {
  TempDir tmp;
  MakeTree("features", tmp / "tree");
  GnuTar(tmp / "tree", tmp / "layer.tar");
  auto r = RunCommand("cd " + ShellQuote(tmp.path().string()) +
                      " && umoci init --layout img && umoci new --image img:latest"
                      " && umoci raw add-layer --image img:latest layer.tar");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EncryptDecryptAndUnpack(tmp.path(), tmp / "img", /*min_symlinks=*/5);
}

// Layers generated by umoci itself end after their last entry, without the end-of-archive
// marker (umoci issue #436); GNU tar, Go's archive/tar and containerd read them. So must we, and
// the eager decryption must reproduce them exactly (their diff_id covers no marker).
TEST(ImageRoundTrip, UmociLayerWithoutEndOfArchiveMarker) {
  TempDir tmp;
  MakeBusyboxImage(tmp / "src", "--umoci-insert");
  image::LoadedImage source = LoadLayoutImage(tmp / "src");
  ASSERT_EQ(source.manifest.layers.size(), 1u);
  // The premise: the uncompressed layer does not end with a zero block.
  auto tail = RunCommand("zcat " + ShellQuote(BlobPath(tmp / "src", source.manifest.layers[0].digest).string()) +
                         " | tail -c 512 | tr -d '\\000' | wc -c");
  ASSERT_EQ(tail.exit_code, 0);
  EXPECT_NE(std::stoi(tail.output), 0) << "umoci now writes the marker; this test lost its point";

  KeyPair key = GenerateKeyPair(tmp.path(), "ec256");
  auto enc = Lazycrypt("encrypt -r " + ShellQuote("jwe:" + key.pub.string()) + " " + Oci(tmp / "src") +
                       " " + Oci(tmp / "enc"));
  ASSERT_EQ(enc.exit_code, 0) << enc.output;
  auto dec = Lazycrypt("decrypt -k " + ShellQuote(key.priv.string()) + " --layer-compression none " +
                       Oci(tmp / "enc") + " " + Oci(tmp / "dec"));
  ASSERT_EQ(dec.exit_code, 0) << dec.output;
  image::LoadedImage decrypted = LoadLayoutImage(tmp / "dec");
  ASSERT_EQ(decrypted.manifest.layers.size(), 1u);
  EXPECT_EQ(decrypted.manifest.layers[0].media_type, std::string(image::kMediaTypeOciLayerTar));
  EXPECT_EQ(decrypted.manifest.layers[0].digest, decrypted.config.diff_ids[0]);
  EXPECT_EQ(SourceTarSha256(BlobPath(tmp / "dec", decrypted.manifest.layers[0].digest)),
            source.config.diff_ids[0]);
}

TEST(ImageRoundTrip, TamperedLazycryptLayerFailsAndWritesNothing) {
  TempDir tmp;
  MakeBusyboxImage(tmp / "src");
  KeyPair key = GenerateKeyPair(tmp.path(), "ec256");
  auto enc = Lazycrypt("encrypt --chunk-size 64KiB -r " + ShellQuote("jwe:" + key.pub.string()) + " " +
                       Oci(tmp / "src") + " " + Oci(tmp / "enc"));
  ASSERT_EQ(enc.exit_code, 0) << enc.output;
  image::LoadedImage encrypted = LoadLayoutImage(tmp / "enc");
  image::Descriptor layer = encrypted.manifest.layers[0];
  std::string bytes = ReadFileString(BlobPath(tmp / "enc", layer.digest));

  // Flip a byte in a chunk record of bin/busybox, then give the layout a consistent digest for it
  // (as an attacker controlling the registry could): the record's pin in the TOC (and the GCM
  // tag) tell.
  {
    std::vector<keywrap::PrivateKey> keys;
    keys.push_back(std::move(keywrap::PrivateKey::Load(key.priv.string())).value());
    auto blob = FileBlobSource::Open(BlobPath(tmp / "enc", layer.digest));
    ASSERT_TRUE(blob.ok());
    auto opened = image::OpenedLayer::Open(std::move(blob).value(), layer, keys);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    std::optional<format::EntryView> busybox = (*opened)->index().Find("bin/busybox");
    ASSERT_TRUE(busybox);
    format::ChunkRange range = (*opened)->index().ChunksForRange(*busybox, 0, busybox->size());
    ASSERT_GT(range.count, 2u);
    uint64_t middle = ((*opened)->index().RecordsBegin(range) + (*opened)->index().RecordsEnd(range)) / 2;
    bytes[middle] ^= 0x20;
  }
  {
    auto writer = image::ImageWriter::Begin(tmp / "enc");
    ASSERT_TRUE(writer.ok());
    auto blob = (*writer)->PutBlob(layer.media_type, AsBytes(bytes));
    ASSERT_TRUE(blob.ok());
    image::Manifest m = encrypted.manifest;
    m.layers[0].digest = blob->digest;
    m.layers[0].size = blob->size;
    auto manifest = (*writer)->PutBlob(std::string(image::kMediaTypeOciManifest),
                                       AsBytes(image::SerializeManifest(m)));
    ASSERT_TRUE((*writer)->Commit("latest", *manifest).ok());
    layer = m.layers[0];
  }
  auto dec = Lazycrypt("decrypt -k " + ShellQuote(key.priv.string()) + " " + Oci(tmp / "enc") + " " +
                       Oci(tmp / "dec"));
  EXPECT_EQ(dec.exit_code, 1) << dec.output;
  EXPECT_THAT(dec.output, HasSubstr("lazycrypt: " + image::LayerName(0, layer) + ": "));
  // The record's SHA-256 pinned in the TOC is checked before GCM (docs/FORMAT.md §8).
  EXPECT_THAT(dec.output, HasSubstr("does not match the digest pinned in the TOC"));
  EXPECT_FALSE(fs::exists(tmp / "dec"));

  // Reading the file list needs only the TOC, which is intact; reading a file in the altered
  // chunk fails rather than return altered bytes.
  auto ls = Lazycrypt("layer ls -k " + ShellQuote(key.priv.string()) + " " + Oci(tmp / "enc"));
  EXPECT_EQ(ls.exit_code, 0) << ls.output;
  auto cat = Lazycrypt("layer cat -k " + ShellQuote(key.priv.string()) + " " + Oci(tmp / "enc") +
                       " bin/busybox > /dev/null");
  EXPECT_EQ(cat.exit_code, 1) << cat.output;
  EXPECT_THAT(cat.output, HasSubstr("does not match the digest pinned in the TOC"));
}

TEST(ImageRoundTrip, ThroughARegistryWithBasicAuth) {
  harness::RegistryOptions with_auth;
  with_auth.username = "pub";
  with_auth.password = "reg-pw-42";
  auto registry = harness::RegistryProcess::Start(with_auth);
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  TempDir tmp;
  MakeBusyboxImage(tmp / "src");
  KeyPair ec = GenerateKeyPair(tmp.path(), "ec256", "ec");
  KeyPair rsa = GenerateKeyPair(tmp.path(), "rsa2048", "rsa");
  auto auth = [&](const std::string& name, const std::string& userpass) {
    auto b64 = RunCommand("printf %s " + ShellQuote(userpass) + " | base64 -w0");
    WriteFileString(tmp / name, R"({"auths":{")" + (*registry)->host() + R"(":{"auth":")" + b64.output + R"("}}})");
    return "--plain-http --authfile " + ShellQuote((tmp / name).string());
  };
  const std::string good = auth("good.json", "pub:reg-pw-42");
  const std::string bad = auth("bad.json", "pub:not-the-pw");
  const std::string ref = "docker://" + (*registry)->host() + "/lazycrypt/busybox";

  auto denied = Lazycrypt("encrypt " + bad + " -r " + ShellQuote("jwe:" + ec.pub.string()) + " " +
                          Oci(tmp / "src") + " " + ref + ":v1");
  EXPECT_EQ(denied.exit_code, 1) << denied.output;
  EXPECT_THAT(denied.output, HasSubstr((*registry)->host()));
  EXPECT_THAT(denied.output, ::testing::Not(HasSubstr("not-the-pw")));

  auto enc = Lazycrypt("encrypt " + good + " -r " + ShellQuote("jwe:" + ec.pub.string()) + " " +
                       Oci(tmp / "src") + " " + ref + ":v1");
  ASSERT_EQ(enc.exit_code, 0) << enc.output;
  auto inspect = Lazycrypt("inspect " + good + " -k " + ShellQuote(ec.priv.string()) + " " + ref + ":v1");
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_THAT(inspect.output, HasSubstr("LAZYCRYPT_GCM_V1"));
  EXPECT_THAT(inspect.output, HasSubstr("opened with"));
  auto verify = Lazycrypt("verify " + good + " -k " + ShellQuote(ec.priv.string()) + " " + ref + ":v1");
  ASSERT_EQ(verify.exit_code, 0) << verify.output;

  // Add the RSA recipient in the registry (a new tag), then decrypt back to a layout with it.
  auto add = Lazycrypt("recipients add " + good + " -k " + ShellQuote(ec.priv.string()) + " -r " +
                       ShellQuote("jwe:" + rsa.pub.string()) + " " + ref + ":v1 " + ref + ":v2");
  ASSERT_EQ(add.exit_code, 0) << add.output;
  auto dec = Lazycrypt("decrypt " + good + " -k " + ShellQuote(rsa.priv.string()) + " " + ref + ":v2 " +
                       Oci(tmp / "dec"));
  ASSERT_EQ(dec.exit_code, 0) << dec.output;
  image::LoadedImage source = LoadLayoutImage(tmp / "src");
  image::LoadedImage decrypted = LoadLayoutImage(tmp / "dec");
  for (size_t i = 0; i < decrypted.manifest.layers.size(); ++i) {
    EXPECT_EQ(SourceTarSha256(BlobPath(tmp / "dec", decrypted.manifest.layers[i].digest)),
              source.config.diff_ids[i]);
  }
  // The old tag still opens only with the EC key.
  auto old = Lazycrypt("verify " + good + " -k " + ShellQuote(rsa.priv.string()) + " " + ref + ":v1");
  EXPECT_EQ(old.exit_code, 1) << old.output;
}

}  // namespace
}  // namespace lazycrypt::testing
