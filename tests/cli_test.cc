// The `lazycrypt` command line: --help everywhere; errors are "lazycrypt: <message naming the
// problem>" with exit code 1 and leave nothing half-written; the layer debugging commands work;
// plus unit tests of the flag parsers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "image/convert.h"
#include "image/layout.h"
#include "tests/harness/registry_process.h"
#include "tests/harness/subprocess.h"
#include "tests/integration_util.h"
#include "tools/commands.h"

namespace lazycrypt::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

std::string Q(const fs::path& p) { return ShellQuote(p.string()); }
std::string Oci(const fs::path& dir, const std::string& tag = "") {
  return ShellQuote("oci:" + dir.string() + (tag.empty() ? "" : ":" + tag));
}

// An error run: exit code 1, and the message line starts with "lazycrypt: ".
void ExpectError(const CommandResult& r, const std::string& needle) {
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("lazycrypt: ")) << r.output;
  EXPECT_THAT(r.output, HasSubstr(needle)) << r.output;
}

// --- flag parsers ----------------------------------------------------------------------------

TEST(CliFlags, ParsesByteSizes) {
  EXPECT_EQ(*tools::ParseByteSize("1MiB"), 1u << 20);
  EXPECT_EQ(*tools::ParseByteSize("64KiB"), 64u << 10);
  EXPECT_EQ(*tools::ParseByteSize("64K"), 64u << 10);
  EXPECT_EQ(*tools::ParseByteSize("4M"), 4u << 20);
  EXPECT_EQ(*tools::ParseByteSize("1048576"), 1u << 20);
  EXPECT_EQ(*tools::ParseByteSize("2GiB"), 2ull << 30);
  for (std::string bad : {"", "MiB", "1.5MiB", "-1", "1 MiB", "1Mb", "12x", "99999999999999999999"}) {
    auto r = tools::ParseByteSize(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("'" + bad + "'"));
  }
}

TEST(CliFlags, ParsesLayerLists) {
  EXPECT_EQ(*tools::ParseLayerList("0"), (std::vector<size_t>{0}));
  EXPECT_EQ(*tools::ParseLayerList("2,0,2,5"), (std::vector<size_t>{2, 0, 5}));
  for (std::string bad : {"", "1,", ",1", "a", "1;2", "-1", "1, 2"}) {
    auto r = tools::ParseLayerList(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("--layers")) << bad;
  }
}

TEST(CliFlags, RecipientSchemes) {
  auto pgp = tools::LoadRecipient("pgp:someone@example.com");
  ASSERT_FALSE(pgp.ok());
  EXPECT_EQ(pgp.status().code(), StatusCode::kUnsupported);
  EXPECT_THAT(pgp.status().message(), HasSubstr("scheme 'pgp:' is not supported (only jwe:)"));
  auto bare = tools::LoadRecipient("key.pem");
  ASSERT_FALSE(bare.ok());
  EXPECT_THAT(bare.status().message(), HasSubstr("must be jwe:PUBLIC_KEY.pem"));
  auto empty = tools::LoadRecipient("jwe:");
  ASSERT_FALSE(empty.ok());
  auto missing = tools::LoadRecipient("jwe:/nonexistent/key.pem");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/key.pem"));
}

TEST(CliFlags, ParsesPrefetchLists) {
  auto list = tools::ParsePrefetchList(
      "# files the entrypoint reads first\n"
      "/bin/busybox\n"
      "\n"
      "   etc/passwd  \r\n"
      "\t# indented comment\n"
      "./usr//lib/x.so/\n"
      "bin/busybox\n"          // duplicate (after normalization) of line 2
      "dir with spaces/a#b");   // '#' inside a path is not a comment; no final newline
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_EQ(*list, (std::vector<std::string>{"bin/busybox", "etc/passwd", "usr/lib/x.so",
                                             "dir with spaces/a#b"}));
  EXPECT_TRUE(tools::ParsePrefetchList("").value().empty());
  EXPECT_TRUE(tools::ParsePrefetchList("# only\n\n  \n").value().empty());

  auto dotdot = tools::ParsePrefetchList("ok\n# c\n../etc/shadow\n");
  ASSERT_FALSE(dotdot.ok());
  EXPECT_EQ(dotdot.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(dotdot.status().message(), HasSubstr("line 3: name has a '..' component"));
  auto root = tools::ParsePrefetchList("a\n/\n");
  ASSERT_FALSE(root.ok());
  EXPECT_THAT(root.status().message(), HasSubstr("line 2: names the root directory"));
  auto nul = tools::ParsePrefetchList(std::string("a\0b\n", 4));
  ASSERT_FALSE(nul.ok());
  EXPECT_THAT(nul.status().message(), HasSubstr("line 1: name contains a NUL byte"));
  auto longname = tools::ParsePrefetchList("x/" + std::string(300, 'n'));
  ASSERT_FALSE(longname.ok());
  EXPECT_THAT(longname.status().message(), HasSubstr("line 1: name has a 300-byte component"));
}

TEST(CliFlags, ResolvesTheHostsDir) {
  TempDir tmp;
  fs::create_directories(tmp / "certs.d");
  tools::TransportFlags flags;
  // Not given: the system default when it exists, else none.
  EXPECT_EQ(tools::ResolveHostsDir(flags, (tmp / "certs.d").string()).value(),
            (tmp / "certs.d").string());
  EXPECT_EQ(tools::ResolveHostsDir(flags, (tmp / "absent").string()).value(), "");
  // Given: used as is; "" turns the default off; a missing directory is an error naming it.
  flags.hosts_dir_given = true;
  flags.hosts_dir = (tmp / "certs.d").string();
  EXPECT_EQ(tools::ResolveHostsDir(flags, "/nonexistent").value(), (tmp / "certs.d").string());
  flags.hosts_dir = "";
  EXPECT_EQ(tools::ResolveHostsDir(flags, (tmp / "certs.d").string()).value(), "");
  flags.hosts_dir = (tmp / "absent").string();
  auto missing = tools::ResolveHostsDir(flags, (tmp / "certs.d").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(),
              HasSubstr("--hosts-dir " + (tmp / "absent").string() + ": not a directory"));
}

TEST(CliFlags, FormatsBytes) {
  EXPECT_EQ(tools::FormatBytes(0), "0 B");
  EXPECT_EQ(tools::FormatBytes(1023), "1023 B");
  EXPECT_EQ(tools::FormatBytes(1024), "1 KiB");
  EXPECT_EQ(tools::FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(tools::FormatBytes(16u << 20), "16 MiB");
}

// --- the binary ------------------------------------------------------------------------------

TEST(Cli, HelpWorksForEveryCommand) {
  struct Case {
    std::string command;
    std::vector<std::string> mentions;
  };
  std::vector<Case> cases = {
      {"", {"encrypt", "decrypt", "inspect", "verify", "recipients", "layer", "--quiet"}},
      {"encrypt", {"--recipient", "--layers", "--chunk-size", "--format", "--plain-http",
                   "--tls-verify", "--authfile", "--hosts-dir", "/etc/containerd/certs.d",
                   "--prefetch-list", "docker://", "SRC", "DST"}},
      {"decrypt", {"--key", "--layer-compression", "--plain-http", "--hosts-dir", "SRC", "DST"}},
      {"inspect", {"--key", "--json", "--files", "--plain-http", "--hosts-dir", "SRC"}},
      {"verify", {"--key", "--plain-http", "--tls-verify", "--authfile", "--hosts-dir", "SRC"}},
      {"index", {"--key", "--span-size", "--force", "--json", "--plain-http", "--hosts-dir", "IMAGE"}},
      {"recipients", {"add", "remove"}},
      {"recipients add", {"--key", "--recipient", "--plain-http", "--hosts-dir", "SRC", "DST"}},
      {"recipients remove", {"--key", "--recipient", "last", "--hosts-dir", "SRC", "DST"}},
      {"layer", {"encrypt", "decrypt", "ls", "cat"}},
      {"layer encrypt", {"--recipient", "--chunk-size", "INPUT", "OUTPUT"}},
      {"layer decrypt", {"--key", "--layer", "--descriptor", "--zstd", "OUTPUT"}},
      {"layer ls", {"--key", "--long", "SOURCE"}},
      {"layer cat", {"--key", "--stats", "SOURCE", "PATH"}},
  };
  for (const Case& c : cases) {
    for (std::string flag : {"--help", "-h"}) {
      auto r = Lazycrypt(c.command + " " + flag);
      EXPECT_EQ(r.exit_code, 0) << c.command << " " << flag << ": " << r.output;
      EXPECT_THAT(r.output, HasSubstr("Usage:")) << c.command;
      for (const std::string& m : c.mentions) EXPECT_THAT(r.output, HasSubstr(m)) << c.command;
    }
  }
  auto version = Lazycrypt("--version");
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_THAT(version.output, HasSubstr("lazycrypt 0.1.0"));
}

TEST(Cli, UsageErrorsExitOneWithAMessage) {
  ExpectError(Lazycrypt(""), "A subcommand is required");
  ExpectError(Lazycrypt("layer"), "A subcommand is required");
  ExpectError(Lazycrypt("frobnicate"),
              "unknown command 'frobnicate' (commands: encrypt, decrypt, inspect, verify, index, recipients, "
              "layer, mount, umount, stats, pull, record, status)");
  ExpectError(Lazycrypt("recipients"), "A subcommand is required");
  ExpectError(Lazycrypt("recipients frob"), "unknown command 'frob' (commands: add, remove)");
  ExpectError(Lazycrypt("verify oci:a"), "--key is required");
  ExpectError(Lazycrypt("verify --key k.pem"), "SRC is required");
  ExpectError(Lazycrypt("recipients add --key k.pem oci:a oci:b"), "--recipient is required");
  ExpectError(Lazycrypt("recipients remove -r jwe:p.pem oci:a oci:b"), "--key is required");
  ExpectError(Lazycrypt("recipients add --key k.pem -r jwe:p.pem oci:a"), "DST is required");
  ExpectError(Lazycrypt("layer frob"), "unknown command 'frob' (commands: encrypt, decrypt, ls, cat)");
  ExpectError(Lazycrypt("encrypt oci:a oci:b"), "--recipient is required");
  ExpectError(Lazycrypt("decrypt --key k.pem oci:a"), "DST is required");
  ExpectError(Lazycrypt("encrypt --bogus -r jwe:x.pem oci:a oci:b"), "--bogus");
}

class CliWithImage : public ::testing::Test {
 protected:
  void SetUp() override {
    MakeBusyboxImage(tmp_ / "src");
    key_ = GenerateKeyPair(tmp_.path(), "ec256", "ec");
    other_ = GenerateKeyPair(tmp_.path(), "rsa2048", "other");
  }
  std::string Recipient(const KeyPair& k) const { return "-r " + ShellQuote("jwe:" + k.pub.string()); }
  void EncryptTo(const fs::path& dst, const std::string& extra = "") {
    auto r = Lazycrypt("encrypt " + Recipient(key_) + " " + extra + " " + Oci(tmp_ / "src") + " " + Oci(dst));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }

  TempDir tmp_;
  KeyPair key_;
  KeyPair other_;
};

TEST_F(CliWithImage, MissingFilesAreNamed) {
  ExpectError(Lazycrypt("encrypt -r jwe:/nonexistent/pub.pem " + Oci(tmp_ / "src") + " " + Oci(tmp_ / "dst")),
              "/nonexistent/pub.pem");
  ExpectError(Lazycrypt("encrypt " + Recipient(key_) + " " + Oci(tmp_ / "missing") + " " + Oci(tmp_ / "dst")),
              (tmp_ / "missing").string() + " does not exist");
  ExpectError(Lazycrypt("encrypt " + Recipient(key_) + " " + Oci(tmp_ / "src", "nosuchtag") + " " +
                        Oci(tmp_ / "dst")),
              "tag 'nosuchtag' not found");
  ExpectError(Lazycrypt("decrypt --key /nonexistent/priv.pem " + Oci(tmp_ / "src") + " " + Oci(tmp_ / "dst")),
              "/nonexistent/priv.pem");
  EXPECT_FALSE(fs::exists(tmp_ / "dst"));
}

TEST_F(CliWithImage, BadTransportsAreNamed) {
  // Nothing listens on 127.0.0.1:1: the registry is named, nothing is written.
  ExpectError(Lazycrypt("encrypt --plain-http " + Recipient(key_) + " docker://127.0.0.1:1/busybox:1 " +
                        Oci(tmp_ / "dst")),
              "127.0.0.1:1");
  ExpectError(Lazycrypt("encrypt " + Recipient(key_) + " docker:busybox " + Oci(tmp_ / "dst")),
              "docker://HOST/REPO[:TAG]");
  ExpectError(Lazycrypt("encrypt " + Recipient(key_) + " " + Oci(tmp_ / "src") + " docker://r.example/x:bad!tag"),
              "bad!tag");
  ExpectError(Lazycrypt("encrypt " + Recipient(key_) + " " + Oci(tmp_ / "src") + " docker://r.example/x@sha256:" +
                        std::string(64, 'a')),
              "a destination needs a tag");
  ExpectError(Lazycrypt("layer ls --plain-http -k " + Q(key_.priv) + " docker://127.0.0.1:1/x:1"),
              "127.0.0.1:1");  // docker:// is read like everywhere else (cli_rough_edges_test)
  ExpectError(Lazycrypt("inspect " + Q(tmp_ / "src")), "has no transport; use oci:DIR[:TAG]");
  ExpectError(Lazycrypt("inspect oci-archive:/tmp/x.tar"), "transport 'oci-archive:' is not supported");
  EXPECT_FALSE(fs::exists(tmp_ / "dst"));
}

TEST_F(CliWithImage, BadKeysAreNamed) {
  EncryptTo(tmp_ / "enc");
  WriteFileString(tmp_ / "garbage.pem", "this is not a key\n");
  ExpectError(Lazycrypt("decrypt --key " + Q(tmp_ / "garbage.pem") + " " + Oci(tmp_ / "enc") + " " + Oci(tmp_ / "dec")),
              (tmp_ / "garbage.pem").string());
  ExpectError(Lazycrypt("decrypt --key " + Q(key_.pub) + " " + Oci(tmp_ / "enc") + " " + Oci(tmp_ / "dec")),
              key_.pub.string());
  ExpectError(Lazycrypt("encrypt -r " + ShellQuote("jwe:" + key_.priv.string()) + " " + Oci(tmp_ / "src") +
                        " " + Oci(tmp_ / "dst")),
              key_.priv.string());
  ExpectError(Lazycrypt("encrypt -r " + Q(key_.pub) + " " + Oci(tmp_ / "src") + " " + Oci(tmp_ / "dst")),
              "must be jwe:PUBLIC_KEY.pem");
  ExpectError(Lazycrypt("encrypt -r pgp:me@example.com " + Oci(tmp_ / "src") + " " + Oci(tmp_ / "dst")),
              "scheme 'pgp:' is not supported");
  EXPECT_FALSE(fs::exists(tmp_ / "dec"));
  EXPECT_FALSE(fs::exists(tmp_ / "dst"));
}

TEST_F(CliWithImage, EncryptedPrivateKeyNeedsItsPasswordAndNeverPrintsIt) {
  EncryptTo(tmp_ / "enc");
  fs::path locked = tmp_ / "locked.pem";
  auto r = RunCommand("openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:s3cr3t-pw -in " + Q(key_.priv) +
                      " -out " + Q(locked));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto no_password = Lazycrypt("decrypt --key " + Q(locked) + " " + Oci(tmp_ / "enc") + " " + Oci(tmp_ / "dec"));
  ExpectError(no_password, "password");
  auto wrong = Lazycrypt("decrypt --key " + ShellQuote(locked.string() + ":wrong-pw-123") + " " +
                         Oci(tmp_ / "enc") + " " + Oci(tmp_ / "dec"));
  ExpectError(wrong, "password");
  EXPECT_THAT(wrong.output, Not(HasSubstr("wrong-pw-123")));
  EXPECT_FALSE(fs::exists(tmp_ / "dec"));
  auto right = Lazycrypt("decrypt --key " + ShellQuote(locked.string() + ":s3cr3t-pw") + " " +
                         Oci(tmp_ / "enc") + " " + Oci(tmp_ / "dec"));
  EXPECT_EQ(right.exit_code, 0) << right.output;
  EXPECT_THAT(right.output, Not(HasSubstr("s3cr3t-pw")));
}

TEST_F(CliWithImage, WrongKeyNamesTheLayerAndWritesNothing) {
  EncryptTo(tmp_ / "enc");
  image::LoadedImage enc = LoadLayoutImage(tmp_ / "enc");
  auto r = Lazycrypt("decrypt -k " + Q(other_.priv) + " " + Oci(tmp_ / "enc") + " " + Oci(tmp_ / "dec"));
  ExpectError(r, "lazycrypt: " + image::LayerName(0, enc.manifest.layers[0]) + ": none of the keys [" +
                     other_.priv.string() + "] is a recipient");
  EXPECT_FALSE(fs::exists(tmp_ / "dec"));
  auto ls = Lazycrypt("layer ls -k " + Q(other_.priv) + " " + Oci(tmp_ / "enc"));
  ExpectError(ls, "is a recipient");
  auto out = tmp_ / "layer.tar";
  auto layer_decrypt = Lazycrypt("layer decrypt -k " + Q(other_.priv) + " " + Oci(tmp_ / "enc") + " " + Q(out));
  ExpectError(layer_decrypt, "is a recipient");
  EXPECT_FALSE(fs::exists(out));
  for (const auto& f : ListFiles(tmp_.path())) EXPECT_THAT(f, Not(HasSubstr(".tmp"))) << f;
}

TEST_F(CliWithImage, BadOptionsAreNamedAndWriteNothing) {
  ExpectError(Lazycrypt("encrypt " + Recipient(key_) + " --layers 5 " + Oci(tmp_ / "src") + " " + Oci(tmp_ / "dst")),
              "layer 5 does not exist (the image has 1 layers");
  ExpectError(Lazycrypt("encrypt " + Recipient(key_) + " --layers x " + Oci(tmp_ / "src") + " " + Oci(tmp_ / "dst")),
              "'x' is not a layer index");
  ExpectError(Lazycrypt("encrypt " + Recipient(key_) + " --chunk-size 1KiB " + Oci(tmp_ / "src") + " " +
                        Oci(tmp_ / "dst")),
              "--chunk-size 1KiB: must be between 64 KiB and 16 MiB");
  ExpectError(Lazycrypt("encrypt " + Recipient(key_) + " --format zip " + Oci(tmp_ / "src") + " " + Oci(tmp_ / "dst")),
              "unknown format 'zip'");
  ExpectError(Lazycrypt("decrypt -k " + Q(key_.priv) + " --layer-compression lz4 " + Oci(tmp_ / "src") + " " +
                        Oci(tmp_ / "dst")),
              "unknown layer compression 'lz4'");
  ExpectError(Lazycrypt("encrypt " + Recipient(key_) + " " + Oci(tmp_ / "src") + " " + Oci(tmp_ / "dst", ".bad")),
              "invalid tag '.bad'");
  EXPECT_FALSE(fs::exists(tmp_ / "dst"));

  // Encrypting an encrypted layer is refused by name.
  EncryptTo(tmp_ / "enc");
  ExpectError(Lazycrypt("encrypt " + Recipient(key_) + " --layers 0 " + Oci(tmp_ / "enc") + " " + Oci(tmp_ / "dst")),
              "cannot encrypt a lazycrypt-encrypted layer");
  ExpectError(Lazycrypt("encrypt " + Recipient(key_) + " " + Oci(tmp_ / "enc") + " " + Oci(tmp_ / "dst")),
              "no plain layer to encrypt");
  EXPECT_FALSE(fs::exists(tmp_ / "dst"));
}

TEST_F(CliWithImage, CorruptSourceLeavesExistingDestinationUntouched) {
  // A destination layout with an image in it already.
  EncryptTo(tmp_ / "dst");
  std::string index_before = ReadFileString(tmp_ / "dst" / "index.json");
  auto files_before = ListFiles(tmp_ / "dst");
  // Corrupt the source layer: the encryption notices only at the end of the layer.
  image::LoadedImage src = LoadLayoutImage(tmp_ / "src");
  const image::Descriptor& layer = src.manifest.layers[0];
  FlipBit(BlobPath(tmp_ / "src", layer.digest), layer.size - 30);
  for (std::string format : {"lazycrypt", "ocicrypt"}) {
    auto r = Lazycrypt("encrypt --format " + format + " " + Recipient(key_) + " " + Oci(tmp_ / "src") + " " +
                       Oci(tmp_ / "dst", "second"));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_THAT(r.output, HasSubstr("lazycrypt: " + image::LayerName(0, layer) + ": ")) << format;
    EXPECT_EQ(ReadFileString(tmp_ / "dst" / "index.json"), index_before) << format;
    EXPECT_EQ(ListFiles(tmp_ / "dst"), files_before) << format;
  }
  auto r = Lazycrypt("encrypt " + Recipient(key_) + " " + Oci(tmp_ / "src") + " " + Oci(tmp_ / "new"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_FALSE(fs::exists(tmp_ / "new"));
}

TEST_F(CliWithImage, InspectShowsLayersRecipientsAndContents) {
  auto r = Lazycrypt("encrypt " + Recipient(key_) + " " + Recipient(other_) + " --chunk-size 256KiB " +
                     Oci(tmp_ / "src") + " " + Oci(tmp_ / "enc"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  image::LoadedImage enc = LoadLayoutImage(tmp_ / "enc");

  auto plain = Lazycrypt("inspect --json " + Oci(tmp_ / "enc"));
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  auto j = nlohmann::json::parse(plain.output);
  ASSERT_EQ(j["layers"].size(), 1u);
  auto& l = j["layers"][0];
  EXPECT_EQ(l["kind"], "lazycrypt");
  EXPECT_EQ(l["mediaType"], std::string(image::kMediaTypeLazycryptLayer));
  EXPECT_EQ(l["digest"], enc.manifest.layers[0].digest);
  EXPECT_EQ(l["cipher"], "LAZYCRYPT_GCM_V1");
  // Each recipient is named by the SHA-256 of its DER SubjectPublicKeyInfo (the JWE "kid").
  auto kid = [](const fs::path& pub) {
    auto r = RunCommand("openssl pkey -pubin -in " + Q(pub) + " -outform DER | sha256sum");
    return "sha256:" + r.output.substr(0, 64);
  };
  EXPECT_EQ(l["recipients"], nlohmann::json::array({"ECDH-ES+A256KW (P-256) kid=" + kid(key_.pub),
                                                    "RSA-OAEP kid=" + kid(other_.pub)}));
  EXPECT_EQ(l["tocDigest"], enc.manifest.layers[0].Annotation(image::kAnnotationLazycryptTocDigest));
  EXPECT_FALSE(l.contains("chunkCount"));
  EXPECT_EQ(j["manifest"]["digest"], enc.manifest_descriptor.digest);

  auto keyed = Lazycrypt("inspect --json --files -k " + Q(other_.priv) + " " + Oci(tmp_ / "enc"));
  ASSERT_EQ(keyed.exit_code, 0) << keyed.output;
  auto k = nlohmann::json::parse(keyed.output)["layers"][0];
  EXPECT_EQ(k["openedWith"], other_.priv.string());
  EXPECT_GE(k["chunkCount"].get<int>(), 8);  // ~2.3 MiB of tar in 256 KiB chunks
  EXPECT_EQ(k["targetChunkSize"], 256 * 1024);
  EXPECT_EQ(k["fileCount"], k["files"].size());
  EXPECT_GT(k["fileCount"].get<int>(), 250);
  // Opening the index read the footer and TOC only, a small part of the blob.
  EXPECT_LT(k["blobBytesRead"].get<uint64_t>(), enc.manifest.layers[0].size / 10);
  bool found = false;
  for (const auto& f : k["files"]) {
    if (f["name"] == "bin/busybox") {
      found = true;
      EXPECT_EQ(f["type"], "regular file");
      EXPECT_EQ(f["mode"], 0755);
      EXPECT_EQ(f["size"], fs::file_size("/usr/bin/busybox"));
    }
  }
  EXPECT_TRUE(found);

  // A key that is not a recipient: reported per layer, not a failure.
  KeyPair stranger = GenerateKeyPair(tmp_.path(), "ec256", "stranger");
  auto strange = Lazycrypt("inspect --json -k " + Q(stranger.priv) + " " + Oci(tmp_ / "enc"));
  ASSERT_EQ(strange.exit_code, 0) << strange.output;
  EXPECT_THAT(nlohmann::json::parse(strange.output)["layers"][0]["openError"].get<std::string>(),
              HasSubstr("is a recipient"));

  auto human = Lazycrypt("inspect -k " + Q(key_.priv) + " " + Oci(tmp_ / "enc"));
  ASSERT_EQ(human.exit_code, 0) << human.output;
  EXPECT_THAT(human.output, HasSubstr("opened with " + key_.priv.string()));
  EXPECT_THAT(human.output, HasSubstr("LAZYCRYPT_GCM_V1"));
}

TEST_F(CliWithImage, LayerCommandsOnABlobFile) {
  image::LoadedImage src = LoadLayoutImage(tmp_ / "src");
  // The uncompressed layer as a plain tar file.
  ASSERT_EQ(RunCommand("zcat " + Q(BlobPath(tmp_ / "src", src.manifest.layers[0].digest)) + " > " +
                       Q(tmp_ / "layer.tar")).exit_code, 0);
  auto enc = Lazycrypt("layer encrypt " + Recipient(key_) + " --chunk-size 64KiB -o " + Q(tmp_ / "blob.json") +
                       " " + Q(tmp_ / "layer.tar") + " " + Q(tmp_ / "blob"));
  ASSERT_EQ(enc.exit_code, 0) << enc.output;
  auto descriptor = nlohmann::json::parse(ReadFileString(tmp_ / "blob.json"));
  EXPECT_EQ(descriptor["mediaType"], std::string(image::kMediaTypeLazycryptLayer));
  EXPECT_EQ(descriptor["digest"], FileSha256(tmp_ / "blob"));
  EXPECT_EQ(descriptor["size"], fs::file_size(tmp_ / "blob"));

  std::string source = Q(tmp_ / "blob") + " --descriptor " + Q(tmp_ / "blob.json");
  auto ls = Lazycrypt("layer ls -k " + Q(key_.priv) + " " + source);
  ASSERT_EQ(ls.exit_code, 0) << ls.output;
  EXPECT_THAT(ls.output, HasSubstr("\nbin/busybox\n"));
  EXPECT_THAT(ls.output, HasSubstr("\netc/os-release\n"));
  auto ls_long = Lazycrypt("layer ls --long -k " + Q(key_.priv) + " " + source);
  EXPECT_THAT(ls_long.output, HasSubstr("lrwxrwxrwx 0/0"));
  EXPECT_THAT(ls_long.output, HasSubstr("bin/sh -> busybox"));

  auto cat = RunCommand(ShellQuote(LazycryptBin()) + " layer cat --stats -k " + Q(key_.priv) + " " + source +
                        " /etc/os-release 2>" + Q(tmp_ / "stats.txt"));
  ASSERT_EQ(cat.exit_code, 0) << cat.output;
  EXPECT_THAT(cat.output, StartsWith("NAME=\"lazycrypt busybox sample\"\n"));
  std::string stats = ReadFileString(tmp_ / "stats.txt");
  EXPECT_THAT(stats, HasSubstr("footer + TOC"));

  auto busybox = RunCommand(ShellQuote(LazycryptBin()) + " layer cat -k " + Q(key_.priv) + " " + source +
                            " bin/busybox | cmp - /usr/bin/busybox");
  EXPECT_EQ(busybox.exit_code, 0) << busybox.output;
  ExpectError(Lazycrypt("layer cat -k " + Q(key_.priv) + " " + source + " bin/sh"), "is a symlink to 'busybox'");
  ExpectError(Lazycrypt("layer cat -k " + Q(key_.priv) + " " + source + " etc"), "is a directory");
  ExpectError(Lazycrypt("layer cat -k " + Q(key_.priv) + " " + source + " nope"), "'nope' is not in");
  ExpectError(Lazycrypt("layer cat -k " + Q(key_.priv) + " " + Q(tmp_ / "blob") + " bin/busybox"),
              "needs --descriptor");

  auto dec = Lazycrypt("layer decrypt -k " + Q(key_.priv) + " " + source + " " + Q(tmp_ / "out.tar"));
  ASSERT_EQ(dec.exit_code, 0) << dec.output;
  // The salt header (FORMAT.md §5.1), then the source tar.
  EXPECT_EQ(SourceTarSha256(tmp_ / "out.tar"), src.config.diff_ids[0]);
  EXPECT_NE(FileSha256(tmp_ / "out.tar"), src.config.diff_ids[0]);
  auto decz = Lazycrypt("layer decrypt --zstd -k " + Q(key_.priv) + " " + source + " " + Q(tmp_ / "out.tar.zst"));
  ASSERT_EQ(decz.exit_code, 0) << decz.output;
  EXPECT_EQ(SourceTarSha256(tmp_ / "out.tar.zst"), src.config.diff_ids[0]);

  // A descriptor whose TOC digest was changed: refused before anything is decrypted.
  descriptor["annotations"][std::string(image::kAnnotationLazycryptTocDigest)] =
      "sha256:" + std::string(64, '0');
  WriteFileString(tmp_ / "bad.json", descriptor.dump());
  auto bad = Lazycrypt("layer decrypt -k " + Q(key_.priv) + " " + Q(tmp_ / "blob") + " -d " + Q(tmp_ / "bad.json") +
                       " " + Q(tmp_ / "bad.tar"));
  ExpectError(bad, "disagrees with the wrapped TOC digest");
  EXPECT_FALSE(fs::exists(tmp_ / "bad.tar"));
}

TEST_F(CliWithImage, EncryptsOnlyTheChosenLayers) {
  // A second layer on top of busybox.
  fs::create_directories(tmp_ / "extra" / "opt" / "app");
  WriteFileString(tmp_ / "extra" / "opt" / "app" / "data.txt", std::string(200000, 'z'));
  ASSERT_EQ(RunCommand("tar --format=pax -C " + Q(tmp_ / "extra") + " -cf " + Q(tmp_ / "extra.tar") +
                       " . && umoci raw add-layer --image " + Q(tmp_ / "src") + " " + Q(tmp_ / "extra.tar"))
                .exit_code,
            0);
  image::LoadedImage src = LoadLayoutImage(tmp_ / "src");
  ASSERT_EQ(src.manifest.layers.size(), 2u);
  auto r = Lazycrypt("encrypt " + Recipient(key_) + " --layers 1 " + Oci(tmp_ / "src") + " " + Oci(tmp_ / "enc", "v2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  image::LoadedImage enc = LoadLayoutImage(tmp_ / "enc", "v2");
  EXPECT_EQ(enc.manifest.layers[0], src.manifest.layers[0]);  // untouched
  EXPECT_EQ(enc.manifest.layers[1].media_type, std::string(image::kMediaTypeLazycryptLayer));
  // The encrypted layer has a diff_id of its own (FORMAT.md §5.1); the copied one keeps its.
  const image::LoadedImage enc_config = LoadLayoutImage(tmp_ / "enc", "v2");
  EXPECT_EQ(enc_config.config.diff_ids[0], src.config.diff_ids[0]);
  EXPECT_NE(enc_config.config.diff_ids[1], src.config.diff_ids[1]);

  auto dec = Lazycrypt("decrypt -k " + Q(key_.priv) + " --layer-compression gzip " + Oci(tmp_ / "enc", "v2") +
                       " " + Oci(tmp_ / "enc", "plain"));
  ASSERT_EQ(dec.exit_code, 0) << dec.output;
  image::LoadedImage plain = LoadLayoutImage(tmp_ / "enc", "plain");
  EXPECT_EQ(plain.manifest.layers[0], src.manifest.layers[0]);
  EXPECT_EQ(plain.manifest.layers[1].media_type, std::string(image::kMediaTypeOciLayerTarGzip));
  EXPECT_EQ(DecompressedSha256(BlobPath(tmp_ / "enc", plain.manifest.layers[1].digest)),
            enc_config.config.diff_ids[1]);
  EXPECT_EQ(SourceTarSha256(BlobPath(tmp_ / "enc", plain.manifest.layers[1].digest)),
            src.config.diff_ids[1]);
  // Both tags live in the one layout.
  EXPECT_EQ(image::OciLayout::Open(tmp_ / "enc").value()->ReadIndex()->manifests.size(), 2u);
}

TEST_F(CliWithImage, VerifyAcceptsIntactImagesAndNamesATamperedChunk) {
  EncryptTo(tmp_ / "enc", "--chunk-size 64KiB");
  auto ok = Lazycrypt("verify -k " + Q(key_.priv) + " " + Oci(tmp_ / "enc"));
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_THAT(ok.output, HasSubstr("verified oci:"));
  EXPECT_THAT(ok.output, HasSubstr("chunks authenticated with " + key_.priv.string()));
  // In a pipe: summary lines, but no live progress line (no carriage returns, no escapes).
  EXPECT_THAT(ok.output, Not(HasSubstr("\r")));
  EXPECT_THAT(ok.output, Not(HasSubstr("\033[")));
  auto quiet = Lazycrypt("verify --quiet -k " + Q(key_.priv) + " " + Oci(tmp_ / "enc"));
  ASSERT_EQ(quiet.exit_code, 0) << quiet.output;
  EXPECT_THAT(quiet.output, Not(HasSubstr("chunks authenticated")));
  EXPECT_THAT(quiet.output, HasSubstr("verified oci:"));

  ExpectError(Lazycrypt("verify -k " + Q(other_.priv) + " " + Oci(tmp_ / "enc")), "is a recipient");

  // On a terminal: a live progress line.
  // script(1) gives the command a pseudo-terminal as stderr.
  std::string command = ShellQuote(LazycryptBin()) + " verify -k " + Q(key_.priv) + " " + Oci(tmp_ / "enc");
  auto tty = RunCommand("script -qec " + ShellQuote(command) + " /dev/null");
  ASSERT_EQ(tty.exit_code, 0) << tty.output;
  EXPECT_THAT(tty.output, HasSubstr("\r\033[K  layer 0 (sha256:"));
  EXPECT_THAT(tty.output, HasSubstr("100%"));
  auto tty_quiet = RunCommand("script -qec " + ShellQuote(command + " --quiet") + " /dev/null");
  ASSERT_EQ(tty_quiet.exit_code, 0) << tty_quiet.output;
  EXPECT_THAT(tty_quiet.output, Not(HasSubstr("\033[K")));

  image::LoadedImage enc = LoadLayoutImage(tmp_ / "enc");
  const image::Descriptor& layer = enc.manifest.layers[0];
  fs::path blob = BlobPath(tmp_ / "enc", layer.digest);
  std::string bytes = ReadFileString(blob);
  bytes[bytes.size() / 3] ^= 0x01;
  fs::remove(blob);
  WriteFileString(blob, bytes);
  auto bad = Lazycrypt("verify -k " + Q(key_.priv) + " " + Oci(tmp_ / "enc"));
  ExpectError(bad, "lazycrypt: oci:" + (tmp_ / "enc").string() + ": " + image::LayerName(0, layer) + ": chunk ");
  EXPECT_THAT(bad.output, Not(HasSubstr("verified oci:")));
}

TEST_F(CliWithImage, RecipientsAddAndRemoveWithoutReencrypting) {
  EncryptTo(tmp_ / "enc");
  auto add = Lazycrypt("recipients add -k " + Q(key_.priv) + " " + Recipient(other_) + " " + Oci(tmp_ / "enc") +
                       " " + Oci(tmp_ / "two"));
  ASSERT_EQ(add.exit_code, 0) << add.output;
  EXPECT_THAT(add.output, HasSubstr("recipients added"));
  image::LoadedImage enc = LoadLayoutImage(tmp_ / "enc"), two = LoadLayoutImage(tmp_ / "two");
  EXPECT_EQ(enc.manifest.layers[0].digest, two.manifest.layers[0].digest);
  EXPECT_EQ(enc.manifest.config.digest, two.manifest.config.digest);
  for (const KeyPair* k : {&key_, &other_}) {
    auto v = Lazycrypt("verify -k " + Q(k->priv) + " " + Oci(tmp_ / "two"));
    EXPECT_EQ(v.exit_code, 0) << v.output;
  }
  ExpectError(Lazycrypt("recipients add -k " + Q(key_.priv) + " " + Recipient(other_) + " " + Oci(tmp_ / "two") +
                        " " + Oci(tmp_ / "x")),
              "is already a recipient");

  auto remove = Lazycrypt("recipients remove -k " + Q(other_.priv) + " " + Recipient(key_) + " " +
                          Oci(tmp_ / "two") + " " + Oci(tmp_ / "one"));
  ASSERT_EQ(remove.exit_code, 0) << remove.output;
  ExpectError(Lazycrypt("verify -k " + Q(key_.priv) + " " + Oci(tmp_ / "one")), "is a recipient");
  auto still = Lazycrypt("decrypt -k " + Q(other_.priv) + " " + Oci(tmp_ / "one") + " " + Oci(tmp_ / "dec"));
  EXPECT_EQ(still.exit_code, 0) << still.output;
  ExpectError(Lazycrypt("recipients remove -k " + Q(other_.priv) + " " + Recipient(other_) + " " +
                        Oci(tmp_ / "one") + " " + Oci(tmp_ / "y")),
              "refusing to remove the last recipient");
  EXPECT_FALSE(fs::exists(tmp_ / "x"));
  EXPECT_FALSE(fs::exists(tmp_ / "y"));
  ExpectError(Lazycrypt("recipients add -k " + Q(key_.priv) + " " + Recipient(other_) + " " + Oci(tmp_ / "src") +
                        " " + Oci(tmp_ / "z")),
              "no encrypted layer");
}


// --- prefetch marks (`encrypt --prefetch-list`) -----------------------------------------------

TEST_F(CliWithImage, PrefetchListMarksFilesWhereTheMergedImageHasThem) {
  // A second layer that replaces /etc/passwd and adds a file; bin/busybox only in layer 0.
  fs::create_directories(tmp_ / "extra" / "etc");
  fs::create_directories(tmp_ / "extra" / "opt" / "app");
  WriteFileString(tmp_ / "extra" / "etc" / "passwd", "root:x:0:0::/root:/bin/sh\n");
  WriteFileString(tmp_ / "extra" / "opt" / "app" / "data.txt", std::string(100000, 'z'));
  ASSERT_EQ(RunCommand("tar --format=pax -C " + Q(tmp_ / "extra") + " -cf " + Q(tmp_ / "extra.tar") +
                       " . && umoci raw add-layer --image " + Q(tmp_ / "src") + " " + Q(tmp_ / "extra.tar"))
                .exit_code,
            0);
  image::LoadedImage src = LoadLayoutImage(tmp_ / "src");
  ASSERT_EQ(src.manifest.layers.size(), 2u);
  WriteFileString(tmp_ / "prefetch.txt",
                  "# entrypoint and what it reads\n"
                  "/bin/busybox\n"
                  "etc/passwd\n"
                  "  /opt/app/data.txt\n"
                  "/bin/sh\n"              // a symlink to busybox: marks bin/busybox
                  "/etc\n"                 // a directory: marks nothing
                  "/not/in/the/image\n");
  auto enc = Lazycrypt("encrypt " + Recipient(key_) + " --prefetch-list " + Q(tmp_ / "prefetch.txt") +
                       " " + Oci(tmp_ / "src") + " " + Oci(tmp_ / "enc"));
  ASSERT_EQ(enc.exit_code, 0) << enc.output;
  EXPECT_THAT(enc.output, HasSubstr("resolving 6 paths from " + (tmp_ / "prefetch.txt").string()));
  EXPECT_THAT(enc.output, HasSubstr("prefetch: 4 of 6 paths marked"));

  auto r = Lazycrypt("inspect --json --files -k " + Q(key_.priv) + " " + Oci(tmp_ / "enc"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j["layers"].size(), 2u);
  auto marked = [](const nlohmann::json& layer) {
    std::vector<std::string> names;
    for (const auto& f : layer["files"]) {
      if (f.value("prefetch", false)) names.push_back(f["name"]);
    }
    return names;
  };
  // etc/passwd is marked only where the merged image has it: in layer 1, which replaces layer 0's.
  EXPECT_EQ(j["layers"][0]["prefetchCount"], 1);
  EXPECT_EQ(marked(j["layers"][0]), (std::vector<std::string>{"bin/busybox"}));
  EXPECT_EQ(j["layers"][1]["prefetchCount"], 2);
  EXPECT_EQ(marked(j["layers"][1]), (std::vector<std::string>{"etc/passwd", "opt/app/data.txt"}));

  auto human = Lazycrypt("inspect -k " + Q(key_.priv) + " " + Oci(tmp_ / "enc"));
  ASSERT_EQ(human.exit_code, 0) << human.output;
  EXPECT_THAT(human.output, HasSubstr("files (2 marked for prefetch)"));

  auto ls = Lazycrypt("layer ls -k " + Q(key_.priv) + " --layer 1 " + Oci(tmp_ / "enc"));
  ASSERT_EQ(ls.exit_code, 0) << ls.output;
  EXPECT_THAT(ls.output, HasSubstr("\nopt/app/data.txt  [prefetch]\n"));
  EXPECT_THAT(ls.output, HasSubstr("\nopt/app\n"));  // not marked
  auto ls_long = Lazycrypt("layer ls --long -k " + Q(key_.priv) + " --layer 0 " + Oci(tmp_ / "enc"));
  ASSERT_EQ(ls_long.exit_code, 0) << ls_long.output;
  EXPECT_THAT(ls_long.output, HasSubstr(" bin/busybox  [prefetch]\n"));
  EXPECT_THAT(ls_long.output, HasSubstr(" bin/sh -> busybox\n"));

  // The marks change no data: the decrypted layers have the original diff_ids.
  auto dec = Lazycrypt("decrypt -k " + Q(key_.priv) + " " + Oci(tmp_ / "enc") + " " + Oci(tmp_ / "dec"));
  ASSERT_EQ(dec.exit_code, 0) << dec.output;
  image::LoadedImage plain = LoadLayoutImage(tmp_ / "dec");
  ASSERT_EQ(plain.manifest.layers.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(SourceTarSha256(BlobPath(tmp_ / "dec", plain.manifest.layers[i].digest)),
              src.config.diff_ids[i]) << "layer " << i;
  }

  // Without a list: nothing marked.
  EncryptTo(tmp_ / "unmarked");
  auto none = Lazycrypt("inspect --json -k " + Q(key_.priv) + " " + Oci(tmp_ / "unmarked"));
  ASSERT_EQ(none.exit_code, 0) << none.output;
  EXPECT_EQ(nlohmann::json::parse(none.output)["layers"][0]["prefetchCount"], 0);
}

TEST_F(CliWithImage, BadPrefetchListsAreNamedAndWriteNothing) {
  ExpectError(Lazycrypt("encrypt " + Recipient(key_) + " --prefetch-list " + Q(tmp_ / "nope.txt") + " " +
                        Oci(tmp_ / "src") + " " + Oci(tmp_ / "dst")),
              (tmp_ / "nope.txt").string());
  WriteFileString(tmp_ / "bad.txt", "bin/busybox\n../../etc/shadow\n");
  ExpectError(Lazycrypt("encrypt " + Recipient(key_) + " --prefetch-list " + Q(tmp_ / "bad.txt") + " " +
                        Oci(tmp_ / "src") + " " + Oci(tmp_ / "dst")),
              "--prefetch-list " + (tmp_ / "bad.txt").string() + ": line 2: name has a '..' component");
  WriteFileString(tmp_ / "good.txt", "bin/busybox\n");
  ExpectError(Lazycrypt("encrypt --format ocicrypt " + Recipient(key_) + " --prefetch-list " +
                        Q(tmp_ / "good.txt") + " " + Oci(tmp_ / "src") + " " + Oci(tmp_ / "dst")),
              "--prefetch-list needs --format lazycrypt");
  EXPECT_FALSE(fs::exists(tmp_ / "dst"));
}

// --- --hosts-dir: containerd's hosts.toml layout ------------------------------------------------

TEST_F(CliWithImage, HostsDirMirrorServesAnImageWhoseRegistryIsDown) {
  auto mirror = harness::RegistryProcess::Start();
  ASSERT_TRUE(mirror.ok()) << mirror.status().ToString();
  // The registry the image is named by: a free port where nothing listens.
  const int down_port = harness::PickFreePort().value();
  const std::string down = "127.0.0.1:" + std::to_string(down_port);
  const std::string name = "/lazycrypt/busybox:enc";

  // Push the encrypted image to the mirror directly.
  auto push = Lazycrypt("encrypt --plain-http " + Recipient(key_) + " " + Oci(tmp_ / "src") +
                        " docker://" + (*mirror)->host() + name);
  ASSERT_EQ(push.exit_code, 0) << push.output << (*mirror)->Log();

  // hosts.toml for the down registry: the mirror first, the server (down) as the fallback.
  fs::create_directories(tmp_ / "certs.d" / down);
  WriteFileString(tmp_ / "certs.d" / down / "hosts.toml",
                  "server = \"http://" + down + "\"\n\n[host.\"" + (*mirror)->url() +
                      "\"]\n  capabilities = [\"pull\", \"resolve\"]\n");
  const std::string via = " --plain-http --hosts-dir " + Q(tmp_ / "certs.d") + " docker://" + down + name;

  auto inspect = Lazycrypt("inspect --json -k " + Q(key_.priv) + via);
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  auto j = nlohmann::json::parse(inspect.output);
  EXPECT_EQ(j["layers"][0]["kind"], "lazycrypt");
  EXPECT_EQ(j["layers"][0]["openedWith"], key_.priv.string());
  auto verify = Lazycrypt("verify -k " + Q(key_.priv) + via);
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  auto dec = Lazycrypt("decrypt -k " + Q(key_.priv) + via + " " + Oci(tmp_ / "dec"));
  ASSERT_EQ(dec.exit_code, 0) << dec.output;
  {
    image::LoadedImage dec_image = LoadLayoutImage(tmp_ / "dec");
    image::LoadedImage src_image = LoadLayoutImage(tmp_ / "src");
    ASSERT_EQ(dec_image.manifest.layers.size(), src_image.config.diff_ids.size());
    for (size_t i = 0; i < dec_image.manifest.layers.size(); ++i) {
      EXPECT_EQ(SourceTarSha256(BlobPath(tmp_ / "dec", dec_image.manifest.layers[i].digest)),
                src_image.config.diff_ids[i]);
    }
  }

  // Without the hosts dir the down registry is all there is: a clear error naming it.
  auto direct = Lazycrypt("inspect --plain-http --hosts-dir '' docker://" + down + name);
  EXPECT_EQ(direct.exit_code, 1) << direct.output;
  EXPECT_THAT(direct.output, HasSubstr(down));
  // A hosts dir that does not exist is named.
  ExpectError(Lazycrypt("inspect --plain-http --hosts-dir " + Q(tmp_ / "absent") + " docker://" + down + name),
              "--hosts-dir " + (tmp_ / "absent").string() + ": not a directory");
  // Pushing goes to the server only (the mirror lacks the push capability): it is down.
  auto push_down = Lazycrypt("encrypt" + std::string(" ") + Recipient(key_) + " " + Oci(tmp_ / "src") + via);
  EXPECT_EQ(push_down.exit_code, 1) << push_down.output;
}


}  // namespace
}  // namespace lazycrypt::testing
