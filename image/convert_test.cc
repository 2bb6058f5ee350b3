#include "image/convert.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/file_io.h"
#include "compress/compress.h"
#include "crypto/digest.h"
#include "format/writer.h"
#include "image/envelope.h"
#include "image/layout.h"
#include "image/image_testing.h"
#include "tests/test_util.h"

namespace lazycrypt::image {
namespace {

using namespace testing_util;  // image/image_testing.h

namespace fs = std::filesystem;
using ::lazycrypt::testing::ListFiles;
using ::lazycrypt::testing::ReadFileString;
using ::lazycrypt::testing::RunCommand;
using ::lazycrypt::testing::ShellQuote;
using ::lazycrypt::testing::TempDir;
using ::lazycrypt::testing::WriteFileString;
using ::testing::HasSubstr;

// The decompressed content of a layer blob (tar, gzip or zstd).
std::vector<uint8_t> Uncompressed(const std::string& blob) {
  MemoryInputStream in(AsBytes(blob));
  auto decompressed = compress::NewDecompressingStream(in);
  EXPECT_TRUE(decompressed.ok());
  MemoryOutputStream out;
  EXPECT_TRUE(CopyStream(**decompressed, out).ok());
  return out.Take();
}

// SHA-256 of the decompressed content of a layer blob.
std::string UncompressedSha(const std::string& blob) {
  return crypto::OciDigest(crypto::Sha256::Of(Uncompressed(blob)));
}

// SHA-256 of a decrypted lazycrypt layer's tar without its salt header (FORMAT.md §5.1): the
// source layer's diff_id. Expects the header (a PAX global header) to be there.
std::string UnsaltedSha(const std::string& blob) {
  std::vector<uint8_t> tar = Uncompressed(blob);
  EXPECT_GT(tar.size(), format::kLayerSaltHeaderSize);
  if (tar.size() <= format::kLayerSaltHeaderSize) return "";
  EXPECT_EQ(tar[156], 'g');
  EXPECT_NE(std::string(tar.begin() + 512, tar.begin() + 1024).find(" comment=lazycrypt-layer-salt:"),
            std::string::npos);
  return crypto::OciDigest(
      crypto::Sha256::Of(ByteSpan(tar).subspan(format::kLayerSaltHeaderSize)));
}

struct TestImage {
  std::vector<std::string> layer_tars;  // uncompressed
  Descriptor manifest;
};

// A two-layer image made with GNU tar: layer 0 gzip-compressed, layer 1 uncompressed, in an OCI
// (or Docker schema 2) manifest, tagged "latest".
TestImage MakeImage(const TempDir& tmp, const fs::path& dir, bool docker = false,
                    bool wrong_diff_id = false) {
  TestImage image;
  for (int i = 0; i < 2; ++i) {
    fs::path tree = tmp / ("tree" + std::to_string(i));
    fs::create_directories(tree / "etc");
    WriteFileString(tree / "etc" / ("file" + std::to_string(i)), std::string(70000 + i, 'a' + i));
    WriteFileString(tree / "small", "layer " + std::to_string(i) + "\n");
    fs::path tar = tmp / ("layer" + std::to_string(i) + ".tar");
    auto r = RunCommand("tar --format=pax --numeric-owner -C " + ShellQuote(tree.string()) + " -cf " +
                        ShellQuote(tar.string()) + " .");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    image.layer_tars.push_back(ReadFileString(tar));
  }
  auto writer = ImageWriter::Begin(dir);
  EXPECT_TRUE(writer.ok()) << writer.status().ToString();
  std::string gz;
  {
    MemoryOutputStream out;
    auto gzip = compress::NewGzipOutputStream(out);
    EXPECT_TRUE(gzip->Write(AsBytes(image.layer_tars[0])).ok());
    EXPECT_TRUE(gzip->Close().ok());
    gz.assign(out.bytes().begin(), out.bytes().end());
  }
  Manifest m;
  m.media_type = std::string(docker ? kMediaTypeDockerManifest : kMediaTypeOciManifest);
  auto l0 = (*writer)->PutBlob(std::string(docker ? kMediaTypeDockerLayerTarGzip : kMediaTypeOciLayerTarGzip),
                               AsBytes(gz));
  auto l1 = (*writer)->PutBlob(std::string(kMediaTypeOciLayerTar), AsBytes(image.layer_tars[1]));
  l0->annotations["org.example.kept"] = "yes";
  m.layers = {*l0, *l1};
  std::string diff1 = wrong_diff_id ? Sha("something else") : Sha(image.layer_tars[1]);
  std::string config = R"({"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},)"
                       R"("rootfs":{"type":"layers","diff_ids":[")" + Sha(image.layer_tars[0]) + R"(",")" +
                       diff1 + R"("]}})";
  m.config = *(*writer)->PutBlob(std::string(docker ? kMediaTypeDockerConfig : kMediaTypeOciConfig),
                                 AsBytes(config));
  image.manifest = *(*writer)->PutBlob(m.media_type, AsBytes(SerializeManifest(m)));
  EXPECT_TRUE((*writer)->Commit("latest", image.manifest).ok());
  return image;
}

TEST(Convert, LazycryptEncryptThenDecryptRestoresEveryLayer) {
  TempDir tmp;
  TestImage src = MakeImage(tmp, tmp / "src");
  Keys keys = MakeKey(tmp, "k");
  std::vector<size_t> seen;
  EncryptOptions options;
  options.writer.chunk_size_bytes = 64 << 10;
  options.on_layer = [&](const LayerReport& l) { seen.push_back(l.index); };
  auto report = EncryptImage(OciRef(tmp / "src"), OciRef(tmp / "enc", "v1"), keys.pub, options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(seen, (std::vector<size_t>{0, 1}));
  EXPECT_EQ(report->tag, "v1");
  ASSERT_EQ(report->layers.size(), 2u);
  EXPECT_EQ(report->layers[0].action, "encrypted (lazycrypt)");
  EXPECT_GE(report->layers[0].chunk_count, 2u);

  auto layout = OciLayout::Open(tmp / "enc");
  ASSERT_TRUE(layout.ok());
  auto enc = LoadImage(**layout, "v1");
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  auto source = LoadImage(*OciLayout::Open(tmp / "src").value(), "");
  // A new config: the lazycrypt layers' diff_ids are their own (FORMAT.md §5.1); the rest is kept.
  EXPECT_NE(enc->manifest.config.digest, source->manifest.config.digest);
  EXPECT_EQ(enc->manifest.config.media_type, source->manifest.config.media_type);
  ASSERT_EQ(enc->config.diff_ids.size(), 2u);
  for (size_t i = 0; i < 2; ++i) EXPECT_NE(enc->config.diff_ids[i], source->config.diff_ids[i]);
  EXPECT_EQ(enc->config.architecture, source->config.architecture);
  EXPECT_EQ(enc->config.os, source->config.os);
  EXPECT_EQ(report->layers[1].diff_id, enc->config.diff_ids[1]);
  EXPECT_EQ(enc->manifest.layers[0].Annotation("org.example.kept"), "yes");
  for (const Descriptor& l : enc->manifest.layers) {
    EXPECT_EQ(l.media_type, std::string(kMediaTypeLazycryptLayer));
    EXPECT_EQ(l.Annotation(kAnnotationLazycryptTocDigest).size(), 71u);
  }

  auto dec = DecryptImage(OciRef(tmp / "enc", "v1"), OciRef(tmp / "dec"), keys.priv);
  ASSERT_TRUE(dec.ok()) << dec.status().ToString();
  EXPECT_EQ(dec->tag, "latest");
  auto plain = LoadImage(*OciLayout::Open(tmp / "dec").value(), "");
  ASSERT_TRUE(plain.ok());
  for (size_t i = 0; i < 2; ++i) {
    const Descriptor& l = plain->manifest.layers[i];
    EXPECT_EQ(l.media_type, std::string(kMediaTypeOciLayerTarZstd));
    std::string blob = ReadFileString(tmp / "dec" / "blobs" / "sha256" / l.digest.substr(7));
    EXPECT_EQ(compress::DetectCompression(AsBytes(blob)), compress::Compression::kZstd);
    // The decrypted tar is the encrypted image's diff_id: the salt header, then the source tar.
    EXPECT_EQ(UncompressedSha(blob), enc->config.diff_ids[i]);
    EXPECT_EQ(UnsaltedSha(blob), source->config.diff_ids[i]);
    EXPECT_EQ(l.Annotation(kAnnotationLazycryptTocDigest), "");
  }
  EXPECT_EQ(plain->manifest.layers[0].Annotation("org.example.kept"), "yes");
  EXPECT_EQ(dec->layers[0].key_name, (tmp / "k.pem").string());

  // Other compressions of the decrypted layers.
  DecryptOptions gzip;
  gzip.compression = LayerCompression::kGzip;
  ASSERT_TRUE(DecryptImage(OciRef(tmp / "enc", "v1"), OciRef(tmp / "decgz"), keys.priv, gzip).ok());
  auto gz = LoadImage(*OciLayout::Open(tmp / "decgz").value(), "");
  EXPECT_EQ(gz->manifest.layers[1].media_type, std::string(kMediaTypeOciLayerTarGzip));
  EXPECT_EQ(UncompressedSha(ReadFileString(tmp / "decgz" / "blobs" / "sha256" /
                                           gz->manifest.layers[1].digest.substr(7))),
            enc->config.diff_ids[1]);
  DecryptOptions none;
  none.compression = LayerCompression::kNone;
  ASSERT_TRUE(DecryptImage(OciRef(tmp / "enc", "v1"), OciRef(tmp / "dectar"), keys.priv, none).ok());
  auto tar = LoadImage(*OciLayout::Open(tmp / "dectar").value(), "");
  EXPECT_EQ(tar->manifest.layers[0].media_type, std::string(kMediaTypeOciLayerTar));
  EXPECT_EQ(tar->manifest.layers[0].digest, enc->config.diff_ids[0]);
}

// Issue 15, 1(a): two encryptions of one image never share a layer's diff_id (so never a chain
// ID), with each other or with the plain original; each decrypts to the source's files.
TEST(Convert, EveryEncryptionHasItsOwnDiffIds) {
  TempDir tmp;
  MakeImage(tmp, tmp / "src");
  Keys keys = MakeKey(tmp, "k");
  ASSERT_TRUE(EncryptImage(OciRef(tmp / "src"), OciRef(tmp / "a"), keys.pub, {}).ok());
  ASSERT_TRUE(EncryptImage(OciRef(tmp / "src"), OciRef(tmp / "b"), keys.pub, {}).ok());
  auto source = LoadImage(*OciLayout::Open(tmp / "src").value(), "");
  auto a = LoadImage(*OciLayout::Open(tmp / "a").value(), "");
  auto b = LoadImage(*OciLayout::Open(tmp / "b").value(), "");
  ASSERT_TRUE(source.ok() && a.ok() && b.ok());
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_NE(a->config.diff_ids[i], source->config.diff_ids[i]) << i;
    EXPECT_NE(b->config.diff_ids[i], source->config.diff_ids[i]) << i;
    EXPECT_NE(a->config.diff_ids[i], b->config.diff_ids[i]) << i;
  }
  EXPECT_NE(a->manifest.config.digest, b->manifest.config.digest);
  for (const char* name : {"a", "b"}) {
    const fs::path dec = tmp / (std::string(name) + "-dec");
    ASSERT_TRUE(DecryptImage(OciRef(tmp / name), OciRef(dec), keys.priv).ok());
    auto plain = LoadImage(*OciLayout::Open(dec).value(), "");
    ASSERT_TRUE(plain.ok());
    for (size_t i = 0; i < 2; ++i) {
      std::string blob = ReadFileString(dec / "blobs" / "sha256" /
                                        plain->manifest.layers[i].digest.substr(7));
      EXPECT_EQ(UncompressedSha(blob), plain->config.diff_ids[i]);
      EXPECT_EQ(UnsaltedSha(blob), source->config.diff_ids[i]);
    }
  }
}

TEST(Convert, OcicryptEncryptThenDecryptGivesBackTheOriginalBlobs) {
  TempDir tmp;
  MakeImage(tmp, tmp / "src");
  Keys keys = MakeKey(tmp, "k");
  EncryptOptions options;
  options.format = EncryptionFormat::kOcicrypt;
  auto report = EncryptImage(OciRef(tmp / "src"), OciRef(tmp / "enc"), keys.pub, options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  auto source = LoadImage(*OciLayout::Open(tmp / "src").value(), "");
  auto enc = LoadImage(*OciLayout::Open(tmp / "enc").value(), "");
  EXPECT_EQ(enc->manifest.layers[0].media_type, std::string(kMediaTypeOcicryptLayerTarGzip));
  EXPECT_EQ(enc->manifest.layers[1].media_type, std::string(kMediaTypeOcicryptLayerTar));
  EXPECT_EQ(enc->manifest.layers[0].size, source->manifest.layers[0].size);  // CTR: same length
  auto dec = DecryptImage(OciRef(tmp / "enc"), OciRef(tmp / "dec"), keys.priv);
  ASSERT_TRUE(dec.ok()) << dec.status().ToString();
  auto plain = LoadImage(*OciLayout::Open(tmp / "dec").value(), "");
  EXPECT_EQ(plain->manifest.layers, source->manifest.layers);
}

TEST(Convert, MixedFormatsInOneImage) {
  TempDir tmp;
  TestImage src = MakeImage(tmp, tmp / "src");
  Keys keys = MakeKey(tmp, "k");
  EncryptOptions lazy;
  lazy.layers = std::vector<size_t>{0};
  ASSERT_TRUE(EncryptImage(OciRef(tmp / "src"), OciRef(tmp / "mid"), keys.pub, lazy).ok());
  EncryptOptions ctr;
  ctr.format = EncryptionFormat::kOcicrypt;  // only layer 1 is still plain
  auto report = EncryptImage(OciRef(tmp / "mid"), OciRef(tmp / "enc"), keys.pub, ctr);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->layers[0].action, "copied");
  auto info = InspectImage(OciRef(tmp / "enc"), keys.priv, {.list_files = true});
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->layers[0].kind, LayerKind::kLazycrypt);
  EXPECT_EQ(info->layers[1].kind, LayerKind::kOcicrypt);
  EXPECT_TRUE(info->layers[0].opened);
  EXPECT_FALSE(info->layers[1].opened);
  EXPECT_EQ(info->layers[1].cipher, "AES_256_CTR_HMAC_SHA256");
  EXPECT_EQ(info->layers[0].cipher, "LAZYCRYPT_GCM_V1");
  // lazycrypt names each recipient by the SHA-256 of its public key (image/envelope.h).
  auto kid = RecipientKeyId(keys.pub[0]);
  ASSERT_TRUE(kid.ok());
  EXPECT_EQ(info->layers[0].recipients,
            std::vector<std::string>{"ECDH-ES+A256KW (P-256) kid=" + *kid});
  bool has_file = false;
  for (const FileInfo& f : info->layers[0].files) has_file = has_file || f.name == "etc/file0";
  EXPECT_TRUE(has_file);

  auto dec = DecryptImage(OciRef(tmp / "enc"), OciRef(tmp / "dec"), keys.priv);
  ASSERT_TRUE(dec.ok()) << dec.status().ToString();
  EXPECT_EQ(dec->layers[0].action, "decrypted (lazycrypt)");
  EXPECT_EQ(dec->layers[1].action, "decrypted (ocicrypt)");
  auto plain = LoadImage(*OciLayout::Open(tmp / "dec").value(), "");
  EXPECT_EQ(plain->manifest.layers[1].digest, Sha(src.layer_tars[1]));
}

TEST(Convert, DockerManifestIsWrittenBackAsOci) {
  TempDir tmp;
  MakeImage(tmp, tmp / "src", /*docker=*/true);
  Keys keys = MakeKey(tmp, "k");
  EncryptOptions options;
  options.format = EncryptionFormat::kOcicrypt;
  options.layers = std::vector<size_t>{0};
  ASSERT_TRUE(EncryptImage(OciRef(tmp / "src"), OciRef(tmp / "enc"), keys.pub, options).ok());
  auto enc = LoadImage(*OciLayout::Open(tmp / "enc").value(), "");
  ASSERT_TRUE(enc.ok());
  EXPECT_EQ(enc->manifest.media_type, std::string(kMediaTypeOciManifest));
  EXPECT_EQ(enc->manifest.config.media_type, std::string(kMediaTypeOciConfig));
  EXPECT_EQ(enc->manifest.layers[0].media_type, std::string(kMediaTypeOcicryptLayerTarGzip));
  auto dec = DecryptImage(OciRef(tmp / "enc"), OciRef(tmp / "dec"), keys.priv);
  ASSERT_TRUE(dec.ok()) << dec.status().ToString();
  auto plain = LoadImage(*OciLayout::Open(tmp / "dec").value(), "");
  EXPECT_EQ(plain->manifest.layers[0].media_type, std::string(kMediaTypeOciLayerTarGzip));
}

TEST(Convert, DiffIdMismatchIsNamedAndWritesNothing) {
  TempDir tmp;
  TestImage src = MakeImage(tmp, tmp / "src", false, /*wrong_diff_id=*/true);
  Keys keys = MakeKey(tmp, "k");
  auto report = EncryptImage(OciRef(tmp / "src"), OciRef(tmp / "enc"), keys.pub, {});
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(report.status().message(), HasSubstr("layer 1 (sha256:"));
  EXPECT_THAT(report.status().message(), HasSubstr("has diff_id " + Sha(src.layer_tars[1])));
  EXPECT_THAT(report.status().message(), HasSubstr("the config says " + Sha("something else")));
  EXPECT_FALSE(fs::exists(tmp / "enc"));
}

// Layer 1 is stored uncompressed: its digest is checked through the writer's diff_id rather than
// by a second hash of the stream, with the same errors.
TEST(Convert, TamperedUncompressedLayerIsRejectedAndWritesNothing) {
  TempDir tmp;
  TestImage src = MakeImage(tmp, tmp / "src");
  Keys keys = MakeKey(tmp, "k");
  auto source = LoadImage(*OciLayout::Open(tmp / "src").value(), "");
  ASSERT_TRUE(source.ok());
  fs::path blob = tmp / "src" / "blobs" / "sha256" / source->manifest.layers[1].digest.substr(7);
  const std::string original = src.layer_tars[1];
  size_t content = original.find("bbbbbbbb");
  ASSERT_NE(content, std::string::npos);

  std::string flipped = original;
  flipped[content + 100] = 'c';  // still a valid tar: only a file's content changes
  WriteFileString(blob, flipped);
  auto report = EncryptImage(OciRef(tmp / "src"), OciRef(tmp / "enc"), keys.pub, {});
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), StatusCode::kAuthFailed) << report.status().ToString();
  EXPECT_THAT(report.status().message(), HasSubstr("layer 1 (sha256:"));
  EXPECT_THAT(report.status().message(), HasSubstr("digest mismatch: descriptor says " +
                                                   source->manifest.layers[1].digest));
  EXPECT_FALSE(fs::exists(tmp / "enc"));

  WriteFileString(blob, original + std::string(512, '\0'));  // longer than its descriptor
  report = EncryptImage(OciRef(tmp / "src"), OciRef(tmp / "enc"), keys.pub, {});
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), StatusCode::kCorruption) << report.status().ToString();
  // (The layout source checks the file's size first; a registry source's stream is checked by
  // the size-checking stream that replaces the verifying one.)
  EXPECT_THAT(report.status().message(), HasSubstr("layer 1 (sha256:"));
  EXPECT_THAT(report.status().message(), HasSubstr("its descriptor says " +
                                                   std::to_string(original.size())));
  EXPECT_FALSE(fs::exists(tmp / "enc"));

  WriteFileString(blob, original.substr(0, original.size() - 1024));  // shorter
  report = EncryptImage(OciRef(tmp / "src"), OciRef(tmp / "enc"), keys.pub, {});
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), StatusCode::kCorruption) << report.status().ToString();
  EXPECT_THAT(report.status().message(), HasSubstr("layer 1 (sha256:"));
  EXPECT_THAT(report.status().message(), HasSubstr("its descriptor says " +
                                                   std::to_string(original.size())));
  EXPECT_FALSE(fs::exists(tmp / "enc"));

  WriteFileString(blob, original);  // and the untouched image converts
  report = EncryptImage(OciRef(tmp / "src"), OciRef(tmp / "enc"), keys.pub, {});
  EXPECT_TRUE(report.ok()) << report.status().ToString();
}

TEST(Convert, MissingLayerBlobIsNamed) {
  TempDir tmp;
  MakeImage(tmp, tmp / "src");
  Keys keys = MakeKey(tmp, "k");
  auto source = LoadImage(*OciLayout::Open(tmp / "src").value(), "");
  fs::remove(tmp / "src" / "blobs" / "sha256" / source->manifest.layers[1].digest.substr(7));
  auto report = EncryptImage(OciRef(tmp / "src"), OciRef(tmp / "enc"), keys.pub, {});
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(report.status().message(), HasSubstr("layer 1 (sha256:"));
  EXPECT_THAT(report.status().message(), HasSubstr("is missing"));
  EXPECT_FALSE(fs::exists(tmp / "enc"));
}

TEST(Convert, RequiresRecipientsAndKeys) {
  TempDir tmp;
  MakeImage(tmp, tmp / "src");
  Keys keys = MakeKey(tmp, "k");
  EXPECT_EQ(EncryptImage(OciRef(tmp / "src"), OciRef(tmp / "enc"), {}, {}).status().code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(EncryptImage(OciRef(tmp / "src"), OciRef(tmp / "enc"), keys.pub, {}).ok());
  auto no_keys = DecryptImage(OciRef(tmp / "enc"), OciRef(tmp / "dec"), {});
  ASSERT_FALSE(no_keys.ok());
  EXPECT_THAT(no_keys.status().message(), HasSubstr("layer 0 (sha256:"));
  EXPECT_FALSE(fs::exists(tmp / "dec"));
  // A plain image decrypts (copies) without keys.
  auto plain = DecryptImage(OciRef(tmp / "src"), OciRef(tmp / "copy"), {});
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(plain->layers[1].action, "copied");
}

TEST(Convert, SourceAndDestinationMayBeOneLayout) {
  TempDir tmp;
  MakeImage(tmp, tmp / "img");
  Keys keys = MakeKey(tmp, "k");
  ASSERT_TRUE(EncryptImage(OciRef(tmp / "img"), OciRef(tmp / "img", "encrypted"), keys.pub, {}).ok());
  ASSERT_TRUE(DecryptImage(OciRef(tmp / "img", "encrypted"), OciRef(tmp / "img", "decrypted"), keys.priv).ok());
  auto layout = OciLayout::Open(tmp / "img");
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ((*layout)->ReadIndex()->manifests.size(), 3u);
  EXPECT_TRUE(LoadImage(**layout, "latest").ok());
  EXPECT_TRUE(LoadImage(**layout, "encrypted").ok());
  EXPECT_TRUE(LoadImage(**layout, "decrypted").ok());
}

}  // namespace
}  // namespace lazycrypt::image
