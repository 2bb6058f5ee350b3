// Tests of lazycrypt-decoder: the payload wire format (bytes as containerd's Go code marshals
// them), key directories as ctd-decoder reads them, Decode() in memory on hostile blobs, and the
// real binary spawned like containerd spawns it (stdin = blob, stdout read back, payload on fd 3,
// STREAM_PROCESSOR_MEDIATYPE in the environment).
#include "decoder/decoder.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/io.h"
#include "compress/compress.h"
#include "crypto/digest.h"
#include "decoder/payload.h"
#include "format/layout.h"
#include "format/writer.h"
#include "image/layer.h"
#include "image/oci.h"
#include "keywrap/base64.h"
#include "keywrap/keyprovider.h"
#include "keywrap/test_util.h"
#include "tar/tar_writer.h"

namespace lazycrypt::decoder {
namespace {

namespace fs = std::filesystem;
using keywrap::testing::KeyPairFiles;
using keywrap::testing::OtherRsaKeyFiles;
using keywrap::testing::RsaKeyFiles;
using keywrap::testing::EcKeyFiles;
using keywrap::testing::TempDir;
using ::testing::HasSubstr;

std::vector<uint8_t> MakeTar() {
  MemoryOutputStream out;
  tar::TarWriter writer(out);
  std::mt19937 rng(42);
  auto add_file = [&](const std::string& name, size_t size, bool random) {
    std::vector<uint8_t> data(size);
    for (size_t i = 0; i < size; ++i) data[i] = random ? uint8_t(rng()) : uint8_t('a' + i % 7);
    tar::Entry e;
    e.name = name;
    e.mode = 0644;
    e.size = size;
    EXPECT_TRUE(writer.AppendEntry(e, data).ok());
  };
  tar::Entry dir;
  dir.name = "etc/";
  dir.type = tar::EntryType::kDirectory;
  dir.mode = 0755;
  EXPECT_TRUE(writer.AppendEntry(dir).ok());
  add_file("etc/hello.txt", 1000, false);
  add_file("bin/random.bin", 300 * 1024, true);       // several 64 KiB chunks, incompressible
  add_file("usr/share/text.txt", 200 * 1024, false);  // compressible
  EXPECT_TRUE(writer.Finish().ok());
  return out.Take();
}

keywrap::PublicKey LoadPublic(const KeyPairFiles& files) {
  auto key = keywrap::PublicKey::Load(files.public_pem);
  EXPECT_TRUE(key.ok()) << key.status().ToString();
  return std::move(*key);
}
std::vector<keywrap::PublicKey> Recipients(const KeyPairFiles& a,
                                           const KeyPairFiles* b = nullptr) {
  std::vector<keywrap::PublicKey> out;
  out.push_back(LoadPublic(a));
  if (b) out.push_back(LoadPublic(*b));
  return out;
}
keywrap::PrivateKey LoadPrivate(const KeyPairFiles& files) {
  auto key = keywrap::PrivateKey::Load(files.private_pem.string());
  EXPECT_TRUE(key.ok()) << key.status().ToString();
  return std::move(*key);
}

struct EncryptedLayer {
  std::vector<uint8_t> tar;
  std::vector<uint8_t> blob;
  image::Descriptor descriptor;
};

EncryptedLayer Encrypt(const keywrap::Recipients& recipients) {
  EncryptedLayer layer;
  layer.tar = MakeTar();
  MemoryInputStream in(layer.tar);
  MemoryOutputStream blob;
  format::WriterOptions options;
  options.chunk_size_bytes = format::kMinChunkSizeBytes;
  auto result = image::EncryptLazycryptLayer(in, blob, recipients, options);
  EXPECT_TRUE(result.ok()) << result.status().ToString();
  layer.blob = blob.Take();
  layer.descriptor = result->descriptor;
  // What the blob decrypts to: its salt header (docs/FORMAT.md §5.1), then the source tar.
  auto header = format::ParseBlobHeader(ByteSpan(layer.blob).first(format::kBlobHeaderSize));
  EXPECT_TRUE(header.ok());
  std::vector<uint8_t> salted = format::LayerSaltTarHeader(header->salt);
  salted.insert(salted.end(), layer.tar.begin(), layer.tar.end());
  layer.tar = std::move(salted);
  return layer;
}

const EncryptedLayer& RsaLayer() {
  static const EncryptedLayer layer = Encrypt(Recipients(RsaKeyFiles(2048)));
  return layer;
}

std::vector<uint8_t> ZstdDecompress(ByteSpan data) {
  MemoryInputStream in(data);
  auto dec = compress::NewZstdInputStream(in);
  MemoryOutputStream out;
  auto n = CopyStream(*dec, out);
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  return out.Take();
}

StreamPayload PayloadFor(const image::Descriptor& d) {
  StreamPayload p;
  p.descriptor = d;
  return p;
}

Result<DecodeResult> DecodeBlob(ByteSpan blob, const std::optional<StreamPayload>& payload,
                                const std::vector<keywrap::PrivateKey>& keys,
                                std::vector<uint8_t>* output = nullptr,
                                std::string media_type = std::string(image::kMediaTypeLazycryptLayer)) {
  DecodeRequest request;
  request.media_type = media_type;
  if (payload) request.payload = PayloadFor(payload->descriptor);
  MemoryInputStream in(blob);
  MemoryOutputStream out;
  auto result = Decode(request, keys, in, out);
  if (output) *output = out.Take();
  return result;
}

// --- payload wire format -------------------------------------------------------------------------

// Protobuf bytes of an Any written field by field, as Go's proto.Marshal lays them out:
// field 1 (type_url, wire type 2) then field 2 (value, wire type 2), lengths as varints.
std::string HandMadeAny(std::string_view type_url, std::string_view value) {
  auto varint = [](std::string& out, size_t v) {
    while (v >= 0x80) {
      out.push_back(char(0x80 | (v & 0x7f)));
      v >>= 7;
    }
    out.push_back(char(v));
  };
  std::string out;
  out.push_back(0x0a);
  varint(out, type_url.size());
  out.append(type_url);
  out.push_back(0x12);
  varint(out, value.size());
  out.append(value);
  return out;
}

TEST(Payload, ParsesGoMarshalledBytes) {
  const std::string pem = keywrap::testing::ReadFile(RsaKeyFiles(2048).private_pem);
  // What encoding/json makes of imgcrypt.Payload{DecryptConfig{Parameters}, Descriptor}.
  std::string json =
      R"({"DecryptConfig":{"Parameters":{"privkeys":[")" + keywrap::Base64Encode(AsBytes(pem)) +
      R"("],"privkeys-passwords":[null]}},"Descriptor":{"mediaType":")" +
      std::string(image::kMediaTypeLazycryptLayer) +
      R"(","digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","size":1234,"annotations":{"a":"b"}}})";
  auto payload = ParseStreamPayload(AsBytes(HandMadeAny(kPayloadTypeUrl, json)));
  ASSERT_TRUE(payload.ok()) << payload.status().ToString();
  EXPECT_EQ(payload->descriptor.media_type, image::kMediaTypeLazycryptLayer);
  EXPECT_EQ(payload->descriptor.size, 1234u);
  EXPECT_EQ(payload->descriptor.Annotation("a"), "b");
  ASSERT_EQ(payload->private_keys.size(), 1u);
  EXPECT_EQ(AsStringView(payload->private_keys[0].key_bytes.span()), pem);
  EXPECT_FALSE(payload->private_keys[0].password.has_value());
  auto keys = LoadPayloadKeys(*payload);
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_EQ((*keys)[0].name(), "payload key 1");
}

TEST(Payload, CriNodeKeyModelPayloadHasNoKeys) {
  // CRI with key_model "node" sends imgcrypt.Payload{} with only the Descriptor filled in.
  std::string json =
      R"({"DecryptConfig":{"Parameters":null},"Descriptor":{"mediaType":"x","digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","size":1}})";
  auto payload = ParseStreamPayload(AsBytes(HandMadeAny(kPayloadTypeUrl, json)));
  ASSERT_TRUE(payload.ok()) << payload.status().ToString();
  EXPECT_TRUE(payload->private_keys.empty());
}

TEST(Payload, SerializeRoundTripsAndMatchesGoLayout) {
  const auto& layer = RsaLayer();
  std::vector<PayloadPrivateKey> keys(1);
  keys[0].key_bytes = crypto::SecureBuffer(AsBytes("not really a key"));
  keys[0].password = crypto::SecureBuffer(AsBytes("pw"));
  auto bytes = SerializeStreamPayload(layer.descriptor, keys);
  ASSERT_TRUE(bytes.ok());
  // Same framing as the hand-made encoding: tag 0x0a, varint length, the type URL.
  ASSERT_GT(bytes->size(), 2 + kPayloadTypeUrl.size());
  EXPECT_EQ((*bytes)[0], 0x0a);
  EXPECT_EQ(size_t((*bytes)[1]), kPayloadTypeUrl.size());
  EXPECT_EQ(bytes->substr(2, kPayloadTypeUrl.size()), kPayloadTypeUrl);
  auto parsed = ParseStreamPayload(AsBytes(*bytes));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->descriptor, layer.descriptor);
  ASSERT_EQ(parsed->private_keys.size(), 1u);
  EXPECT_EQ(AsStringView(parsed->private_keys[0].key_bytes.span()), "not really a key");
  ASSERT_TRUE(parsed->private_keys[0].password.has_value());
  EXPECT_EQ(AsStringView(parsed->private_keys[0].password->span()), "pw");
}

TEST(Payload, RejectsHostileBytes) {
  auto not_any = ParseStreamPayload(AsBytes(std::string("\xff\xff\xff", 3)));
  ASSERT_FALSE(not_any.ok());
  EXPECT_THAT(not_any.status().message(), HasSubstr("not a protobuf"));

  auto wrong_type = ParseStreamPayload(AsBytes(HandMadeAny("io.example.Other", "{}")));
  ASSERT_FALSE(wrong_type.ok());
  EXPECT_EQ(wrong_type.status().code(), StatusCode::kUnsupported);
  EXPECT_THAT(wrong_type.status().message(), HasSubstr("io.example.Other"));

  auto not_json = ParseStreamPayload(AsBytes(HandMadeAny(kPayloadTypeUrl, "{\"Descr")));
  ASSERT_FALSE(not_json.ok());
  EXPECT_THAT(not_json.status().message(), HasSubstr("not a JSON object"));

  auto no_desc = ParseStreamPayload(AsBytes(HandMadeAny(kPayloadTypeUrl, "{}")));
  ASSERT_FALSE(no_desc.ok());
  EXPECT_THAT(no_desc.status().message(), HasSubstr("Descriptor"));

  auto bad_digest = ParseStreamPayload(AsBytes(HandMadeAny(
      kPayloadTypeUrl, R"({"Descriptor":{"mediaType":"x","digest":"sha256:zz","size":1}})")));
  ASSERT_FALSE(bad_digest.ok());
  EXPECT_THAT(bad_digest.status().message(), HasSubstr("payload: Descriptor:"));

  auto bad_b64 = ParseStreamPayload(AsBytes(HandMadeAny(
      kPayloadTypeUrl,
      R"({"DecryptConfig":{"Parameters":{"privkeys":["!!!"]}},"Descriptor":{"mediaType":"x","digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","size":1}})")));
  ASSERT_FALSE(bad_b64.ok());
  EXPECT_THAT(bad_b64.status().message(), HasSubstr("privkeys\"][0]"));

  auto wrong_kind = ParseStreamPayload(AsBytes(HandMadeAny(
      kPayloadTypeUrl,
      R"({"DecryptConfig":{"Parameters":{"privkeys":"abc"}},"Descriptor":{"mediaType":"x","digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","size":1}})")));
  ASSERT_FALSE(wrong_kind.ok());
  EXPECT_THAT(wrong_kind.status().message(), HasSubstr("not an array"));
}

// --- key directories ----------------------------------------------------------------------------

TEST(KeysDir, LoadsEveryFileRecursivelyInNameOrder) {
  TempDir dir;
  fs::create_directories(dir / "sub");
  fs::copy_file(RsaKeyFiles(2048).private_pem, dir / "b-rsa.pem");
  fs::copy_file(EcKeyFiles("P-256").private_pem, dir / "sub" / "a-ec.pem");
  auto keys = LoadDecryptionKeysDir(dir.path());
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  ASSERT_EQ(keys->size(), 2u);
  EXPECT_EQ((*keys)[0].kind(), keywrap::KeyKind::kRsa);
  EXPECT_EQ((*keys)[1].kind(), keywrap::KeyKind::kEc);
  EXPECT_EQ((*keys)[1].name(), (dir / "sub" / "a-ec.pem").string());
}

TEST(KeysDir, RejectsSymlinksJunkAndMissingDirs) {
  TempDir dir;
  fs::copy_file(RsaKeyFiles(2048).private_pem, dir / "key.pem");
  fs::create_symlink(dir / "key.pem", dir / "link.pem");
  auto with_link = LoadDecryptionKeysDir(dir.path());
  ASSERT_FALSE(with_link.ok());
  EXPECT_THAT(with_link.status().message(), HasSubstr("link.pem"));
  EXPECT_THAT(with_link.status().message(), HasSubstr("symbolic links"));
  fs::remove(dir / "link.pem");

  keywrap::testing::WriteFile(dir / "README", "these are keys\n");
  auto with_junk = LoadDecryptionKeysDir(dir.path());
  ASSERT_FALSE(with_junk.ok());
  EXPECT_THAT(with_junk.status().message(), HasSubstr("README"));
  fs::remove(dir / "README");

  // A password-protected key cannot be used from the directory (ctd-decoder refuses it too).
  ASSERT_TRUE(keywrap::testing::RunOk({"openssl", "pkey", "-in",
                                       RsaKeyFiles(2048).private_pem.string(), "-aes256",
                                       "-passout", "pass:secret", "-out",
                                       (dir / "locked.pem").string()}));
  auto locked = LoadDecryptionKeysDir(dir.path());
  ASSERT_FALSE(locked.ok());
  EXPECT_THAT(locked.status().message(), HasSubstr("locked.pem"));
  EXPECT_THAT(locked.status().message(), HasSubstr("password"));
  fs::remove(dir / "locked.pem");

  // A certificate (for PKCS#7 in ctd-decoder) is skipped, not refused.
  ASSERT_TRUE(keywrap::testing::RunOk({"openssl", "req", "-x509", "-key",
                                       RsaKeyFiles(2048).private_pem.string(), "-subj", "/CN=node",
                                       "-days", "1", "-out", (dir / "node.crt").string()}));
  auto with_cert = LoadDecryptionKeysDir(dir.path());
  ASSERT_TRUE(with_cert.ok()) << with_cert.status().ToString();
  EXPECT_EQ(with_cert->size(), 1u);

  auto missing = LoadDecryptionKeysDir(dir / "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);

  auto ok = LoadDecryptionKeysDir(dir.path());
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->size(), 1u);
}

TEST(KeysDir, PasswordProtectedKeysWithConfiguredPasswordFiles) {
  TempDir dir, secrets;
  fs::copy_file(EcKeyFiles("P-256").private_pem, dir / "a-plain.pem");
  ASSERT_TRUE(keywrap::testing::RunOk({"openssl", "pkey", "-in",
                                       RsaKeyFiles(2048).private_pem.string(), "-aes256",
                                       "-passout", "pass:s3cret", "-out",
                                       (dir / "b-locked.pem").string()}));
  // Without a password: skipped with a warning naming the file; the other key still loads.
  std::vector<std::string> warnings;
  auto skipped = LoadDecryptionKeysDir(dir.path(), {}, &warnings);
  ASSERT_TRUE(skipped.ok()) << skipped.status().ToString();
  EXPECT_EQ(skipped->size(), 1u);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("b-locked.pem"));

  // With a 0600 password file (a trailing newline is dropped).
  const fs::path pass = secrets / "b.pass";
  keywrap::testing::WriteFile(pass, "s3cret\n");
  fs::permissions(pass, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  KeyPasswordFiles passwords{{(dir / "b-locked.pem").lexically_normal(), pass}};
  warnings.clear();
  auto both = LoadDecryptionKeysDir(dir.path(), passwords, &warnings);
  ASSERT_TRUE(both.ok()) << both.status().ToString();
  ASSERT_EQ(both->size(), 2u);
  EXPECT_EQ((*both)[1].kind(), keywrap::KeyKind::kRsa);
  EXPECT_TRUE(warnings.empty());

  // A password file others can read is refused, naming it.
  fs::permissions(pass, fs::perms::group_read | fs::perms::others_read, fs::perm_options::add);
  auto exposed = LoadDecryptionKeysDir(dir.path(), passwords, &warnings);
  ASSERT_FALSE(exposed.ok());
  EXPECT_EQ(exposed.status().code(), StatusCode::kPermissionDenied);
  EXPECT_THAT(exposed.status().message(), HasSubstr(pass.string()));
  EXPECT_THAT(exposed.status().message(), HasSubstr("0644"));

  // A wrong password names the key.
  keywrap::testing::WriteFile(pass, "wrong");
  fs::permissions(pass, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  auto wrong = LoadDecryptionKeysDir(dir.path(), passwords, &warnings);
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(wrong.status().message(), HasSubstr("b-locked.pem"));
  EXPECT_THAT(wrong.status().message(), HasSubstr("wrong password"));
}

// --- Decode in memory ---------------------------------------------------------------------------

std::vector<keywrap::PrivateKey> RsaKeys() {
  std::vector<keywrap::PrivateKey> keys;
  keys.push_back(LoadPrivate(RsaKeyFiles(2048)));
  return keys;
}

TEST(Decode, EmitsZstdOfTheOriginalTarWithVerifiedDiffId) {
  const auto& layer = RsaLayer();
  std::vector<uint8_t> output;
  auto result = DecodeBlob(layer.blob, PayloadFor(layer.descriptor), RsaKeys(), &output);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->output_media_type, image::kMediaTypeOciLayerTarZstd);
  EXPECT_EQ(result->key_name, RsaKeyFiles(2048).private_pem.string());
  ASSERT_TRUE(result->diff_id.has_value());
  EXPECT_EQ(*result->diff_id, crypto::Sha256::Of(layer.tar));
  EXPECT_EQ(ZstdDecompress(output), layer.tar);
}

TEST(Decode, EcRecipientAmongSeveral) {
  auto layer = Encrypt(Recipients(OtherRsaKeyFiles(), &EcKeyFiles("P-384")));
  std::vector<keywrap::PrivateKey> keys;
  keys.push_back(LoadPrivate(RsaKeyFiles(2048)));  // not a recipient: skipped
  keys.push_back(LoadPrivate(EcKeyFiles("P-384")));
  std::vector<uint8_t> output;
  auto result = DecodeBlob(layer.blob, PayloadFor(layer.descriptor), keys, &output);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(ZstdDecompress(output), layer.tar);
}

TEST(Decode, EveryFlippedByteClassFails) {
  const auto& layer = RsaLayer();
  const size_t n = layer.blob.size();
  // Header (magic, salt, commitment), first record, middle, last record area, TOC, footer.
  for (size_t pos : {size_t{0}, size_t{20}, size_t{60}, size_t{100}, n / 3, n / 2, n - 400,
                     n - 150, n - 50, n - 1}) {
    auto blob = layer.blob;
    blob[pos] ^= 0x01;
    auto result = DecodeBlob(blob, PayloadFor(layer.descriptor), RsaKeys());
    EXPECT_FALSE(result.ok()) << "flip at " << pos << " of " << n << " was accepted";
    if (!result.ok()) {
      EXPECT_THAT(result.status().message(), HasSubstr(layer.descriptor.digest)) << pos;
    }
  }
}

TEST(Decode, TruncatedAndExtendedBlobsFail) {
  const auto& layer = RsaLayer();
  for (size_t keep : {size_t{0}, size_t{40}, size_t{80}, layer.blob.size() / 2,
                      layer.blob.size() - 1}) {
    std::vector<uint8_t> blob(layer.blob.begin(), layer.blob.begin() + keep);
    auto result = DecodeBlob(blob, PayloadFor(layer.descriptor), RsaKeys());
    EXPECT_FALSE(result.ok()) << "truncated to " << keep << " was accepted";
  }
  auto longer = layer.blob;
  longer.push_back(0);
  EXPECT_FALSE(DecodeBlob(longer, PayloadFor(layer.descriptor), RsaKeys()).ok());
}

TEST(Decode, MissingKeyIsNamed) {
  const auto& layer = RsaLayer();
  std::vector<keywrap::PrivateKey> keys;
  keys.push_back(LoadPrivate(OtherRsaKeyFiles()));
  std::vector<uint8_t> output;
  auto result = DecodeBlob(layer.blob, PayloadFor(layer.descriptor), keys, &output);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(result.status().message(), HasSubstr("is a recipient"));
  EXPECT_TRUE(output.empty());  // nothing decrypted, nothing written

  auto none = DecodeBlob(layer.blob, PayloadFor(layer.descriptor), {});
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.status().message(), HasSubstr("no decryption keys"));
}

TEST(Decode, NoPayloadExplainsWhichProcessorNamesGetOne) {
  const auto& layer = RsaLayer();
  auto result = DecodeBlob(layer.blob, std::nullopt, RsaKeys());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(result.status().message(), HasSubstr("io.containerd.ocicrypt.decoder.v1.tar.gzip"));
}

TEST(Decode, MediaTypeMismatchAndUnknownTypes) {
  const auto& layer = RsaLayer();
  auto mismatch = DecodeBlob(layer.blob, PayloadFor(layer.descriptor), RsaKeys(), nullptr,
                             std::string(image::kMediaTypeOciLayerTarGzip));
  ASSERT_FALSE(mismatch.ok());
  EXPECT_THAT(mismatch.status().message(), HasSubstr("STREAM_PROCESSOR_MEDIATYPE"));

  auto desc = layer.descriptor;
  desc.media_type = std::string(image::kMediaTypeOciLayerTarGzip);
  auto unknown = DecodeBlob(layer.blob, PayloadFor(desc), RsaKeys(), nullptr, "");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kUnsupported);
}

TEST(Decode, AnnotationsOfAnotherLayerAreRefused) {
  // Same recipient, another layer: its JWE unwraps fine, but the key, TOC digest and commitment
  // belong to the other blob.
  const auto& layer = RsaLayer();
  auto other = Encrypt(Recipients(RsaKeyFiles(2048)));
  auto desc = layer.descriptor;
  desc.annotations = other.descriptor.annotations;
  auto result = DecodeBlob(layer.blob, PayloadFor(desc), RsaKeys());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kAuthFailed);
  EXPECT_THAT(result.status().message(), HasSubstr("commitment"));

  // Only the TOC digest annotation swapped: privopts and annotation disagree.
  desc = layer.descriptor;
  desc.annotations[std::string(image::kAnnotationLazycryptTocDigest)] =
      other.descriptor.Annotation(image::kAnnotationLazycryptTocDigest);
  auto toc = DecodeBlob(layer.blob, PayloadFor(desc), RsaKeys());
  EXPECT_FALSE(toc.ok());
}

TEST(Decode, OcicryptLayersAreDecodedToo) {
  std::vector<uint8_t> tar = MakeTar();
  MemoryOutputStream gz_out;
  {
    auto gz = compress::NewGzipOutputStream(gz_out);
    ASSERT_TRUE(gz->Write(tar).ok());
    ASSERT_TRUE(gz->Close().ok());
  }
  std::vector<uint8_t> gz = gz_out.Take();
  image::Descriptor original;
  original.media_type = std::string(image::kMediaTypeOciLayerTarGzip);
  original.digest = crypto::OciDigest(crypto::Sha256::Of(gz));
  original.size = gz.size();
  MemoryInputStream plain(gz);
  MemoryOutputStream enc_out;
  auto enc = image::EncryptOcicryptLayer(plain, original, enc_out,
                                         Recipients(RsaKeyFiles(2048)));
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  std::vector<uint8_t> blob = enc_out.Take();
  std::vector<uint8_t> output;
  auto result = DecodeBlob(blob, PayloadFor(*enc), RsaKeys(), &output, enc->media_type);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->output_media_type, image::kMediaTypeOciLayerTarGzip);
  EXPECT_EQ(output, gz);

  blob[blob.size() / 2] ^= 0x80;
  auto tampered = DecodeBlob(blob, PayloadFor(*enc), RsaKeys(), nullptr, enc->media_type);
  EXPECT_FALSE(tampered.ok());
}

// --- the real binary, spawned as containerd spawns it --------------------------------------------

struct ProcessResult {
  int exit_code = -1;
  std::vector<uint8_t> stdout_bytes;
  std::string stderr_text;
};

// Runs lazycrypt-decoder with `stdin_bytes` on a pipe, `payload` (if any) on a pipe at fd 3, and
// STREAM_PROCESSOR_MEDIATYPE set; reads stdout and stderr concurrently.
ProcessResult RunDecoder(const std::vector<std::string>& args, ByteSpan stdin_bytes,
                         const std::optional<std::string>& payload, const std::string& media_type,
                         std::string extra_env = "") {
  int in_pipe[2], out_pipe[2], err_pipe[2], payload_pipe[2] = {-1, -1};
  EXPECT_EQ(pipe2(in_pipe, O_CLOEXEC), 0);
  EXPECT_EQ(pipe2(out_pipe, O_CLOEXEC), 0);
  EXPECT_EQ(pipe2(err_pipe, O_CLOEXEC), 0);
  if (payload) {
    EXPECT_EQ(pipe2(payload_pipe, O_CLOEXEC), 0);
  }
  std::vector<std::string> argv_s = {LAZYCRYPT_DECODER_BIN};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string env_mt = std::string(kMediaTypeEnvVar) + "=" + media_type;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    if (payload) {
      dup2(payload_pipe[0], 3);  // dup2 clears FD_CLOEXEC on the new descriptor
    } else {
      close(3);
    }
    char* envp[] = {env_mt.data(), extra_env.empty() ? nullptr : extra_env.data(), nullptr};
    execve(argv[0], argv.data(), envp);
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (payload) {
    close(payload_pipe[0]);
    std::string copy = *payload;
    std::thread([fd = payload_pipe[1], copy] {
      (void)!write(fd, copy.data(), copy.size());  // small: fits the pipe buffer
      close(fd);
    }).join();
  }
  std::thread writer([fd = in_pipe[1], stdin_bytes] {
    signal(SIGPIPE, SIG_IGN);
    size_t off = 0;
    while (off < stdin_bytes.size()) {
      ssize_t n = write(fd, stdin_bytes.data() + off, stdin_bytes.size() - off);
      if (n <= 0) break;  // the decoder may stop reading early on an error
      off += size_t(n);
    }
    close(fd);
  });
  ProcessResult result;
  std::thread err_reader([&] {
    char buf[4096];
    ssize_t n;
    while ((n = read(err_pipe[0], buf, sizeof buf)) > 0) result.stderr_text.append(buf, size_t(n));
  });
  uint8_t buf[65536];
  ssize_t n;
  while ((n = read(out_pipe[0], buf, sizeof buf)) > 0) {
    result.stdout_bytes.insert(result.stdout_bytes.end(), buf, buf + n);
  }
  writer.join();
  err_reader.join();
  close(out_pipe[0]);
  close(err_pipe[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string PayloadBytes(const image::Descriptor& d, std::vector<PayloadPrivateKey> keys = {}) {
  auto bytes = SerializeStreamPayload(d, keys);
  EXPECT_TRUE(bytes.ok());
  return *bytes;
}

class DecoderProcess : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(keys_dir_.path() / "keys");
    fs::copy_file(RsaKeyFiles(2048).private_pem, keys_dir_.path() / "keys" / "node.pem");
  }
  std::vector<std::string> KeyArgs() {
    return {"--decryption-keys-path", (keys_dir_.path() / "keys").string()};
  }
  TempDir keys_dir_;
};

TEST_F(DecoderProcess, DecodesWithNodeKeysLikeCriKeyModelNode) {
  const auto& layer = RsaLayer();
  auto r = RunDecoder(KeyArgs(), layer.blob, PayloadBytes(layer.descriptor),
                      std::string(image::kMediaTypeLazycryptLayer));
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  EXPECT_EQ(r.stderr_text, "");
  EXPECT_EQ(ZstdDecompress(r.stdout_bytes), layer.tar);
}

TEST_F(DecoderProcess, DecodesWithKeysInThePayloadLikeCtrEnc) {
  const auto& layer = RsaLayer();
  std::vector<PayloadPrivateKey> keys(1);
  std::string pem = keywrap::testing::ReadFile(RsaKeyFiles(2048).private_pem);
  keys[0].key_bytes = crypto::SecureBuffer(AsBytes(pem));
  auto r = RunDecoder({}, layer.blob, PayloadBytes(layer.descriptor, std::move(keys)),
                      std::string(image::kMediaTypeLazycryptLayer));
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  EXPECT_EQ(ZstdDecompress(r.stdout_bytes), layer.tar);
}

// As ctd-decoder through ocicrypt: every provider of $OCICRYPT_KEYPROVIDER_CONFIG is tried.
TEST_F(DecoderProcess, DecodesWithAKeyProviderFromTheEnvironment) {
  std::ofstream(keys_dir_.path() / "kek", std::ios::binary) << std::string(32, '\x11');
  const fs::path conf = keys_dir_.path() / "kp.conf";
  keywrap::testing::WriteFile(conf, R"({"key-providers":{"test":{"cmd":{"path":")" +
                                        std::string(TEST_KEY_PROVIDER) + R"(","args":["--key-file",")" +
                                        (keys_dir_.path() / "kek").string() + "\"]}}}}");
  auto config = keywrap::LoadKeyProviderConfig(conf);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  auto provider = keywrap::MakeKeyProvider(*config, {"test", "Enabled"});
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  keywrap::Recipients recipients;
  recipients.AddProvider(*provider);
  EncryptedLayer layer = Encrypt(recipients);
  ASSERT_FALSE(layer.descriptor.Annotation(keywrap::KeyProviderAnnotation("test")).empty());
  const std::string env = std::string(keywrap::kKeyProviderConfigEnv) + "=" + conf.string();
  auto r = RunDecoder({}, layer.blob, PayloadBytes(layer.descriptor),
                      std::string(image::kMediaTypeLazycryptLayer), env);
  ASSERT_EQ(r.exit_code, 0) << r.stderr_text;
  EXPECT_EQ(ZstdDecompress(r.stdout_bytes), layer.tar);
  // Without the variable: refused, naming the provider the layer is wrapped for.
  auto without = RunDecoder(KeyArgs(), layer.blob, PayloadBytes(layer.descriptor),
                            std::string(image::kMediaTypeLazycryptLayer));
  EXPECT_EQ(without.exit_code, 1);
  EXPECT_THAT(without.stderr_text, HasSubstr("provider:test"));
  EXPECT_TRUE(without.stdout_bytes.empty());
}

TEST_F(DecoderProcess, TamperedBlobFailsWithNamedError) {
  const auto& layer = RsaLayer();
  auto blob = layer.blob;
  blob[blob.size() / 2] ^= 0x10;
  auto r = RunDecoder(KeyArgs(), blob, PayloadBytes(layer.descriptor),
                      std::string(image::kMediaTypeLazycryptLayer));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.stderr_text, HasSubstr("lazycrypt-decoder: "));
  EXPECT_THAT(r.stderr_text, HasSubstr(layer.descriptor.digest));
  EXPECT_THAT(r.stderr_text, HasSubstr("chunk"));
}

TEST_F(DecoderProcess, MissingKeyFailsBeforeOutput) {
  const auto& layer = RsaLayer();
  fs::remove(keys_dir_.path() / "keys" / "node.pem");
  fs::copy_file(OtherRsaKeyFiles().private_pem, keys_dir_.path() / "keys" / "other.pem");
  auto r = RunDecoder(KeyArgs(), layer.blob, PayloadBytes(layer.descriptor),
                      std::string(image::kMediaTypeLazycryptLayer));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.stderr_text, HasSubstr("is a recipient"));
  EXPECT_THAT(r.stderr_text, HasSubstr("other.pem"));
  EXPECT_TRUE(r.stdout_bytes.empty());
}

TEST_F(DecoderProcess, NoPayloadOnFd3IsExplained) {
  const auto& layer = RsaLayer();
  auto r = RunDecoder(KeyArgs(), layer.blob, std::nullopt,
                      std::string(image::kMediaTypeLazycryptLayer));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.stderr_text, HasSubstr("no payload on fd 3"));
}

TEST_F(DecoderProcess, GarbagePayloadAndBadFlags) {
  const auto& layer = RsaLayer();
  auto r = RunDecoder(KeyArgs(), layer.blob, std::string("\x0a\x05hi"),
                      std::string(image::kMediaTypeLazycryptLayer));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.stderr_text, HasSubstr("payload"));

  auto missing_dir = RunDecoder({"--decryption-keys-path", "/nonexistent/lazycrypt-keys"},
                                layer.blob, PayloadBytes(layer.descriptor),
                                std::string(image::kMediaTypeLazycryptLayer));
  EXPECT_EQ(missing_dir.exit_code, 1);
  EXPECT_THAT(missing_dir.stderr_text, HasSubstr("/nonexistent/lazycrypt-keys"));

  auto bad_flag = RunDecoder({"--no-such-flag"}, {}, std::nullopt, "");
  EXPECT_NE(bad_flag.exit_code, 0);
}

}  // namespace
}  // namespace lazycrypt::decoder
