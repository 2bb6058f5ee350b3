// Helpers for the integration tests: running the real `lazycrypt` binary, the test-data scripts,
// openssl key generation, and reading OCI layouts through lc_image. Header-only; tests only.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "common/file_io.h"
#include "compress/compress.h"
#include "crypto/digest.h"
#include "image/layout.h"
#include "tests/command_util.h"
#include "tests/harness/subprocess.h"
#include "tests/test_util.h"

namespace lazycrypt::testing {

#ifndef LAZYCRYPT_BIN
#error "LAZYCRYPT_BIN must name the lazycrypt executable"
#endif

inline std::string LazycryptBin() { return LAZYCRYPT_BIN; }

// Runs `lazycrypt <args>` (args already shell-quoted as needed).
inline CommandResult Lazycrypt(const std::string& args) {
  return RunCommand(ShellQuote(LazycryptBin()) + " " + args);
}

inline std::filesystem::path DataScript(const std::string& name) {
  return SourceDir() / "tests" / "data" / name;
}

// Builds the busybox sample image at dir (tag "latest"). Fails the test on error.
inline void MakeBusyboxImage(const std::filesystem::path& dir, const std::string& extra_flags = "") {
  auto r = RunCommand("bash " + ShellQuote(DataScript("make-busybox-image.sh").string()) + " " +
                      extra_flags + " " + ShellQuote(dir.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

struct KeyPair {
  std::filesystem::path priv;
  std::filesystem::path pub;
};

// kind: "rsa2048", "rsa4096", "ec256", "ec384", "ec521". Files <dir>/<name>.pem and .pub.pem.
inline KeyPair GenerateKeyPair(const std::filesystem::path& dir, const std::string& kind,
                               const std::string& name = "") {
  std::string base = name.empty() ? kind : name;
  KeyPair k{dir / (base + ".pem"), dir / (base + ".pub.pem")};
  std::string algo;
  if (kind == "rsa2048") algo = "-algorithm RSA -pkeyopt rsa_keygen_bits:2048";
  if (kind == "rsa4096") algo = "-algorithm RSA -pkeyopt rsa_keygen_bits:4096";
  if (kind == "ec256") algo = "-algorithm EC -pkeyopt ec_paramgen_curve:P-256";
  if (kind == "ec384") algo = "-algorithm EC -pkeyopt ec_paramgen_curve:P-384";
  if (kind == "ec521") algo = "-algorithm EC -pkeyopt ec_paramgen_curve:P-521";
  EXPECT_FALSE(algo.empty()) << kind;
  auto r = RunCommand("openssl genpkey " + algo + " -out " + ShellQuote(k.priv.string()) +
                      " && openssl pkey -in " + ShellQuote(k.priv.string()) + " -pubout -out " +
                      ShellQuote(k.pub.string()));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return k;
}

inline std::string FileSha256(const std::filesystem::path& path) {
  auto in = FdInputStream::Open(path);
  EXPECT_TRUE(in.ok()) << in.status().ToString();
  if (!in.ok()) return "";
  crypto::Sha256 sha;
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    auto n = (*in)->Read(buf);
    EXPECT_TRUE(n.ok());
    if (!n.ok() || *n == 0) break;
    sha.Update(std::span<const uint8_t>(buf.data(), *n));
  }
  return crypto::OciDigest(sha.Finish());
}

// SHA-256 of a layer file's uncompressed content (tar, gzip or zstd; decoded by zlib/libzstd).
inline std::string DecompressedSha256(const std::filesystem::path& path) {
  auto in = FdInputStream::Open(path);
  EXPECT_TRUE(in.ok()) << in.status().ToString();
  if (!in.ok()) return "";
  auto plain = compress::NewDecompressingStream(**in);
  EXPECT_TRUE(plain.ok()) << plain.status().ToString();
  if (!plain.ok()) return "";
  crypto::Sha256 sha;
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    auto n = (*plain)->Read(buf);
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    if (!n.ok() || *n == 0) break;
    sha.Update(std::span<const uint8_t>(buf.data(), *n));
  }
  return crypto::OciDigest(sha.Finish());
}

// SHA-256 of a layer file's uncompressed content without the lazycrypt salt header in front, if
// it has one (a decrypted lazycrypt layer, docs/FORMAT.md §5.1): the diff_id of the layer it was
// encrypted from. Equals DecompressedSha256 for any other layer.
inline std::string SourceTarSha256(const std::filesystem::path& path) {
  auto in = FdInputStream::Open(path);
  EXPECT_TRUE(in.ok()) << in.status().ToString();
  if (!in.ok()) return "";
  auto plain = compress::NewDecompressingStream(**in);
  EXPECT_TRUE(plain.ok()) << plain.status().ToString();
  if (!plain.ok()) return "";
  MemoryOutputStream tar;
  EXPECT_TRUE(CopyStream(**plain, tar).ok());
  std::span<const uint8_t> bytes(tar.bytes());
  constexpr size_t kSaltHeader = 1024;  // format::kLayerSaltHeaderSize
  if (bytes.size() > kSaltHeader && bytes[156] == 'g' &&
      std::string_view(reinterpret_cast<const char*>(bytes.data()) + 512, 512)
              .find(" comment=lazycrypt-layer-salt:") != std::string_view::npos) {
    bytes = bytes.subspan(kSaltHeader);
  }
  return crypto::OciDigest(crypto::Sha256::Of(bytes));
}

// Writes the zstd compression of `from` (libzstd) to `to`.
inline void ZstdCompressFile(const std::filesystem::path& from, const std::filesystem::path& to) {
  auto in = FdInputStream::Open(from);
  ASSERT_TRUE(in.ok());
  auto out = AtomicFileOutputStream::Create(to);
  ASSERT_TRUE(out.ok());
  auto zstd = compress::NewZstdOutputStream(**out, 3);
  ASSERT_TRUE(CopyStream(**in, *zstd).ok());
  ASSERT_TRUE(zstd->Close().ok());
  ASSERT_TRUE((*out)->Close().ok());
}

// SHA-256 of what a shell pipeline prints (e.g. "zstd -dc FILE").
inline std::string PipelineSha256(const std::string& command) {
  auto r = RunCommand("bash -o pipefail -c " + ShellQuote(command + " | sha256sum"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return "sha256:" + r.output.substr(0, 64);
}

// The image a layout's tag names (tag "" = the default), loaded and verified.
inline image::LoadedImage LoadLayoutImage(const std::filesystem::path& dir,
                                          const std::string& tag = "") {
  auto layout = image::OciLayout::Open(dir);
  EXPECT_TRUE(layout.ok()) << layout.status().ToString();
  if (!layout.ok()) return {};
  auto loaded = image::LoadImage(**layout, tag);
  EXPECT_TRUE(loaded.ok()) << loaded.status().ToString();
  if (!loaded.ok()) return {};
  return std::move(loaded).value();
}

inline std::filesystem::path BlobPath(const std::filesystem::path& layout_dir,
                                      const std::string& digest) {
  return layout_dir / "blobs" / "sha256" / digest.substr(7);
}

// Where docker-registry's filesystem driver keeps a blob (storage_dir: RegistryProcess's).
inline std::filesystem::path RegistryBlobPath(const std::filesystem::path& storage_dir,
                                              const std::string& digest) {
  const std::string hex = digest.substr(7);
  return storage_dir / "docker/registry/v2/blobs/sha256" / hex.substr(0, 2) / hex / "data";
}

}  // namespace lazycrypt::testing
