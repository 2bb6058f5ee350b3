// `lazycrypt encrypt --format ocicrypt-estargz` against the real tools (issue 18, part 1):
//  (a) the real `skopeo copy --decryption-key` decrypts it (RSA and EC recipients) to a gzip
//      layer whose files equal the plain image's (plus eStargz's stargz.index.json and landmark)
//      and whose uncompressed SHA-256 is the diff_id the converted config names;
//  (b) containerd with imgcrypt's own ctd-decoder stream processor, pulled by imgcrypt's
//      `ctr-imgcrypt` (Debian 13's, tests/data/fetch-imgcrypt.sh), unpacks it eagerly to the same
//      files and runs it;
//  (c) lazycrypt's eStargz reader opens its TOC through AES-CTR ranges (footer and TOC member only)
//      against the pinned TOC digest, and every chunk reads back verified and equal to the file;
//      a flipped ciphertext byte in a chunk or a wrong pinned digest is refused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "common/file_io.h"
#include "estargz/reader.h"
#include "estargz/toc.h"
#include "image/layer.h"
#include "image/layout.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"
#include "tests/command_util.h"
#include "tests/harness/containerd_process.h"
#include "tests/harness/registry_process.h"
#include "tests/integration_util.h"
#include "tests/tree_compare.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Extracts a (gzip) layer blob with GNU tar, as root keeping owners and modes.
void Extract(const fs::path& blob, const fs::path& dir) {
  fs::create_directories(dir);
  auto r = RunCommand("tar --numeric-owner -xpzf " + ShellQuote(blob.string()) + " -C " +
                      ShellQuote(dir.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

keywrap::KeyRing LoadKeys(const fs::path& priv) {
  std::vector<keywrap::PrivateKey> keys;
  auto k = keywrap::PrivateKey::Load(priv.string());
  EXPECT_TRUE(k.ok()) << k.status().ToString();
  if (k.ok()) keys.push_back(std::move(k).value());
  return keywrap::KeyRing(std::move(keys));
}

// The differences CompareTrees reports, without eStargz's own files on the `b` side.
std::vector<std::string> DifferencesBesidesEstargzFiles(const fs::path& plain,
                                                        const fs::path& unpacked,
                                                        TreeCompareOptions options = {}) {
  std::vector<std::string> diffs;
  for (const std::string& d : CompareTrees(plain, unpacked, options)) {
    if (d.find(estargz::kTocTarName) != std::string::npos ||
        d.find(estargz::kNoPrefetchLandmark) != std::string::npos ||
        d.find(estargz::kPrefetchLandmark) != std::string::npos) {
      continue;
    }
    diffs.push_back(d);
  }
  return diffs;
}

class EstargzSkopeo : public ::testing::TestWithParam<std::string> {};

TEST_P(EstargzSkopeo, SkopeoDecryptsToThePlainFilesAndTheConfigDiffId) {
  TempDir tmp;
  MakeBusyboxImage(tmp / "src");
  KeyPair key = GenerateKeyPair(tmp.path(), GetParam());
  auto r = Lazycrypt("encrypt --format ocicrypt-estargz -r " + ShellQuote("jwe:" + key.pub.string()) +
                     " " + ShellQuote("oci:" + (tmp / "src").string()) + " " +
                     ShellQuote("oci:" + (tmp / "enc").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("encrypted (ocicrypt-estargz)"));

  image::LoadedImage src = LoadLayoutImage(tmp / "src");
  image::LoadedImage enc = LoadLayoutImage(tmp / "enc");
  ASSERT_EQ(enc.manifest.layers.size(), 1u);
  const image::Descriptor& layer = enc.manifest.layers[0];
  EXPECT_EQ(layer.media_type, std::string(image::kMediaTypeOcicryptLayerTarGzip));
  EXPECT_THAT(layer.Annotation(estargz::kAnnotationTocDigest), ::testing::StartsWith("sha256:"));
  EXPECT_FALSE(layer.Annotation(estargz::kAnnotationUncompressedSize).empty());
  EXPECT_FALSE(layer.annotations.contains(std::string(estargz::kAnnotationStargzTocDigest)));
  // A new diff_id (the eStargz tar stream, salted): no chain ID shared with the plain image.
  ASSERT_EQ(enc.config.diff_ids.size(), 1u);
  EXPECT_NE(enc.config.diff_ids[0], src.config.diff_ids[0]);

  auto s = RunCommand("skopeo copy -q --decryption-key " + ShellQuote(key.priv.string()) + " " +
                      ShellQuote("oci:" + (tmp / "enc").string() + ":latest") + " " +
                      ShellQuote("oci:" + (tmp / "dec").string() + ":latest"));
  ASSERT_EQ(s.exit_code, 0) << s.output;
  image::LoadedImage dec = LoadLayoutImage(tmp / "dec");
  ASSERT_EQ(dec.manifest.layers.size(), 1u);
  const image::Descriptor& plain_estargz = dec.manifest.layers[0];
  EXPECT_EQ(plain_estargz.media_type, std::string(image::kMediaTypeOciLayerTarGzip));
  fs::path blob = BlobPath(tmp / "dec", plain_estargz.digest);
  // What a decrypting node unpacks hashes to the config's diff_id, and has the announced size.
  EXPECT_EQ(PipelineSha256("gzip -dc " + ShellQuote(blob.string())), dec.config.diff_ids[0]);
  auto size = RunCommand("gzip -dc " + ShellQuote(blob.string()) + " | wc -c");
  EXPECT_EQ(std::stoull(size.output), std::stoull(layer.Annotation(estargz::kAnnotationUncompressedSize)));

  Extract(BlobPath(tmp / "src", src.manifest.layers[0].digest), tmp / "plain-tree");
  Extract(blob, tmp / "dec-tree");
  EXPECT_TRUE(fs::exists(tmp / "dec-tree" / "stargz.index.json"));
  EXPECT_TRUE(fs::exists(tmp / "dec-tree" / ".no.prefetch.landmark"));
  EXPECT_THAT(DifferencesBesidesEstargzFiles(tmp / "plain-tree", tmp / "dec-tree"),
              ::testing::IsEmpty());
  EXPECT_GT(CountTree(tmp / "plain-tree").symlinks, 100u);  // the comparison covered something
}

INSTANTIATE_TEST_SUITE_P(Keys, EstargzSkopeo, ::testing::Values("rsa2048", "ec256"));

// (c): the lazy side's view of the same image, through the ciphertext.
TEST(EstargzLazyReader, TocAndEveryChunkVerifyThroughCtrRanges) {
  TempDir tmp;
  MakeBusyboxImage(tmp / "src", "--umoci-insert");  // a layer without the end-of-archive marker
  KeyPair key = GenerateKeyPair(tmp.path(), "ec256");
  std::ofstream(tmp / "prefetch.txt") << "/bin/sh\n/etc/passwd\n";
  auto r = Lazycrypt("encrypt --format ocicrypt-estargz --prefetch-list " +
                     ShellQuote((tmp / "prefetch.txt").string()) + " -r " +
                     ShellQuote("jwe:" + key.pub.string()) + " " +
                     ShellQuote("oci:" + (tmp / "src").string()) + " " +
                     ShellQuote("oci:" + (tmp / "enc").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  image::LoadedImage enc = LoadLayoutImage(tmp / "enc");
  const image::Descriptor& layer = enc.manifest.layers[0];
  keywrap::KeyRing keys = LoadKeys(key.priv);
  auto cipher = image::UnwrapOcicryptLayer(layer, keys);
  ASSERT_TRUE(cipher.ok()) << cipher.status().ToString();
  auto pinned = crypto::ParseOciDigest(layer.Annotation(estargz::kAnnotationTocDigest));
  ASSERT_TRUE(pinned.ok());

  auto file = FileBlobSource::Open(BlobPath(tmp / "enc", layer.digest));
  ASSERT_TRUE(file.ok());
  image::CountingBlobSource counting(std::move(*file));
  auto view = estargz::CtrPlaintextView::Create(counting, cipher->key.span(), cipher->nonce);
  ASSERT_TRUE(view.ok());
  auto index = estargz::OpenIndex(**view, *pinned);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  // Opening read the footer and the TOC member only, in two reads.
  EXPECT_EQ(counting.read_calls(), 2u);
  EXPECT_EQ(counting.bytes_read(),
            estargz::kFooterSize +
                std::stoull(layer.Annotation(estargz::kAnnotationTocSize)));
  EXPECT_LT(counting.bytes_read(), layer.size / 10);

  // Every chunk verifies, and every file equals the plain tree's.
  ASSERT_EQ(RunCommand("bash " + ShellQuote(DataScript("make-busybox-image.sh").string()) +
                       " --rootfs " + ShellQuote((tmp / "rootfs").string()))
                .exit_code,
            0);
  const estargz::Index& ix = **index;
  size_t files = 0;
  for (uint32_t i = 0; i < ix.entries().size(); ++i) {
    const estargz::Entry& e = ix.entries()[i];
    if (e.type != estargz::EntryType::kRegular || e.size == 0) continue;
    std::string content;
    for (const estargz::ChunkRef& c : ix.ChunksOf(i)) {
      std::vector<uint8_t> buf(c.size);
      Status st = estargz::ReadChunk(**view, c, buf);
      ASSERT_TRUE(st.ok()) << st.ToString();
      content.append(buf.begin(), buf.end());
    }
    EXPECT_EQ(crypto::Sha256::Of(AsBytes(content)), e.file_digest);
    if (estargz::Index::IsEstargzMetadataName(e.name)) continue;
    EXPECT_EQ(content, ReadFileString(tmp / "rootfs" / e.name)) << "entry " << i;
    ++files;
  }
  EXPECT_GE(files, 3u);
  // The prefetch list: /bin/sh resolves to bin/busybox, then etc/passwd, before the landmark.
  EXPECT_TRUE(ix.has_prefetch_landmark());
  std::vector<std::string> prefetch;
  for (uint32_t i : ix.prefetch_entries()) prefetch.push_back(ix.entries()[i].name);
  EXPECT_THAT(prefetch, ::testing::ElementsAre("bin/busybox", "etc/passwd"));

  // A wrong pin is refused before the TOC is parsed.
  crypto::Sha256Digest other = *pinned;
  other[31] ^= 1;
  auto refused = estargz::OpenIndex(**view, other);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kAuthFailed);

  // A flipped ciphertext bit inside a chunk's member (AES-CTR flips the same plaintext bit):
  // that chunk fails to read; it never returns different bytes.
  const estargz::ChunkRef& busybox = ix.ChunksOf(ix.prefetch_entries()[0])[0];
  std::string bytes = ReadFileString(BlobPath(tmp / "enc", layer.digest));
  bytes[busybox.compressed_offset + busybox.compressed_size / 2] ^= 0x04;
  MemoryBlobSource tampered(std::vector<uint8_t>(bytes.begin(), bytes.end()));
  auto tampered_view = estargz::CtrPlaintextView::Create(tampered, cipher->key.span(), cipher->nonce);
  ASSERT_TRUE(tampered_view.ok());
  std::vector<uint8_t> buf(busybox.size);
  Status st = estargz::ReadChunk(**tampered_view, busybox, buf);
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(st.code() == StatusCode::kAuthFailed || st.code() == StatusCode::kCorruption)
      << st.ToString();
}

// (b): containerd + imgcrypt's ctd-decoder, pulled with imgcrypt's ctr.
class EstargzImgcrypt : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: containerd, overlayfs snapshots and runc";
    auto fetched = harness::RunCommand(
        {(SourceDir() / "tests/data/fetch-imgcrypt.sh").string(), LAZYCRYPT_IMGCRYPT_CACHE},
        std::chrono::seconds(300));
    ASSERT_TRUE(fetched.ok()) << fetched.status().ToString();
    ASSERT_EQ(fetched->exit_code, 0) << "fetching Debian 13's imgcrypt failed: " << Describe(*fetched);
    bin_dir_ = fetched->stdout_text;
    while (!bin_dir_.empty() && (bin_dir_.back() == '\n' || bin_dir_.back() == '\r')) {
      bin_dir_.pop_back();
    }
    auto registry = harness::RegistryProcess::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(*registry);
  }

  std::string bin_dir_;
  std::unique_ptr<harness::RegistryProcess> registry_;
};

TEST_F(EstargzImgcrypt, CtrImgcryptPullsUnpacksAndRunsIt) {
  TempDir tmp;
  MakeBusyboxImage(tmp / "src");
  KeyPair key = GenerateKeyPair(tmp.path(), "rsa2048", "node");
  auto r = Lazycrypt("encrypt --format ocicrypt-estargz -r " + ShellQuote("jwe:" + key.pub.string()) +
                     " " + ShellQuote("oci:" + (tmp / "src").string()) + " " +
                     ShellQuote("oci:" + (tmp / "enc").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string ref = registry_->host() + "/lazycrypt/estargz:enc";
  MustRun({"skopeo", "copy", "--quiet", "--dest-tls-verify=false",
           "oci:" + (tmp / "enc").string() + ":latest", "docker://" + ref});
  ASSERT_FALSE(HasFailure()) << registry_->Log();

  // imgcrypt's decoder, configured as imgcrypt's docs say, for ocicrypt's gzip media type.
  harness::ContainerdOptions options;
  options.stream_processors.push_back(harness::StreamProcessorConfig{
      "io.containerd.ocicrypt.decoder.v1.tar.gzip",
      {std::string(image::kMediaTypeOcicryptLayerTarGzip)},
      std::string(image::kMediaTypeOciLayerTarGzip),
      bin_dir_ + "/ctd-decoder",
      {"--decryption-keys-path", (tmp / "no-keys").string()}});
  fs::create_directories(tmp / "no-keys");
  auto ctd = harness::ContainerdProcess::Start(options);
  ASSERT_TRUE(ctd.ok()) << ctd.status().ToString();

  auto denied = (*ctd)->Client(bin_dir_ + "/ctr-imgcrypt", {"images", "pull", "--plain-http", ref});
  ASSERT_TRUE(denied.ok());
  EXPECT_NE(denied->exit_code, 0) << Describe(*denied);  // no key: nothing unpacked

  auto pulled = (*ctd)->Client(bin_dir_ + "/ctr-imgcrypt",
                               {"images", "pull", "--plain-http", "--key", key.priv.string(), ref});
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  ASSERT_EQ(pulled->exit_code, 0) << Describe(*pulled) << "\ncontainerd log:\n" << (*ctd)->Log();

  const std::string id = "lc-estargz-" + std::to_string(getpid());
  auto run = (*ctd)->Ctr({"run", "--rm", ref, id, "/bin/busybox", "cat", "/etc/passwd"});
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->exit_code, 0) << Describe(*run) << "\ncontainerd log:\n" << (*ctd)->Log();
  EXPECT_THAT(run->stdout_text, HasSubstr("root:"));

  // The unpacked snapshot, read-only, against the plain layer extracted by GNU tar.
  image::LoadedImage src = LoadLayoutImage(tmp / "src");
  Extract(BlobPath(tmp / "src", src.manifest.layers[0].digest), tmp / "plain-tree");
  fs::create_directories(tmp / "mnt");
  auto mounted = (*ctd)->Ctr({"images", "mount", ref, (tmp / "mnt").string()});
  ASSERT_TRUE(mounted.ok());
  ASSERT_EQ(mounted->exit_code, 0) << Describe(*mounted);
  TreeCompareOptions compare;
  compare.compare_root_metadata = false;
  auto diffs = DifferencesBesidesEstargzFiles(tmp / "plain-tree", tmp / "mnt", compare);
  bool has_toc = fs::exists(tmp / "mnt" / "stargz.index.json");
  auto unmounted = (*ctd)->Ctr({"images", "unmount", (tmp / "mnt").string()});
  EXPECT_TRUE(unmounted.ok() && unmounted->exit_code == 0);
  EXPECT_THAT(diffs, ::testing::IsEmpty());
  EXPECT_TRUE(has_toc);  // eStargz's TOC file is part of the layer for an eager node
}

}  // namespace
}  // namespace lazycrypt::testing
