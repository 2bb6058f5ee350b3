// Fixtures shared by the image/ tests: digests of strings, freshly generated key pairs, OCI
// references and platforms. Test-only.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/io.h"
#include "crypto/digest.h"
#include "image/layout.h"
#include "image/oci.h"
#include "keywrap/keys.h"
#include "tests/test_util.h"

namespace lazycrypt::image::testing_util {

inline std::string Sha(std::string_view data) {
  return crypto::OciDigest(crypto::Sha256::Of(AsBytes(data)));
}

struct Keys {
  std::vector<keywrap::PublicKey> pub;
  std::vector<keywrap::PrivateKey> priv;
};

// A new key pair (EC P-256, or RSA-2048) written to tmp/NAME.pem and tmp/NAME.pub, loaded.
inline Keys MakeKey(const lazycrypt::testing::TempDir& tmp, const std::string& name,
                    bool rsa = false) {
  using lazycrypt::testing::ShellQuote;
  std::string priv = (tmp / (name + ".pem")).string(), pub = (tmp / (name + ".pub")).string();
  std::string gen = rsa ? "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "
                        : "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ";
  auto r = lazycrypt::testing::RunCommand(gen + ShellQuote(priv) + " && openssl pkey -in " +
                                          ShellQuote(priv) + " -pubout -out " + ShellQuote(pub));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  Keys keys;
  keys.pub.push_back(std::move(keywrap::PublicKey::Load(pub)).value());
  keys.priv.push_back(std::move(keywrap::PrivateKey::Load(priv)).value());
  return keys;
}

// oci:DIR[:TAG]
inline ImageReference OciRef(const std::filesystem::path& dir, std::string tag = "") {
  ImageReference ref;
  ref.dir = dir;
  ref.tag = std::move(tag);
  return ref;
}

inline Platform LinuxPlatform(std::string arch, std::string variant = "") {
  Platform p;
  p.os = "linux";
  p.architecture = std::move(arch);
  p.variant = std::move(variant);
  return p;
}

}  // namespace lazycrypt::image::testing_util
