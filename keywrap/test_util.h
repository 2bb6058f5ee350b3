// Helpers shared by keywrap's tests: temp dirs, running tools without a shell, and key files
// generated once per test process with the openssl CLI.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace lazycrypt::keywrap::testing {

// A fresh directory from mkdtemp, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Runs argv[0] (looked up in PATH) with the arguments, without a shell. Returns the exit status
// (-1 if it could not run or died by a signal); stdout and stderr, merged, go to *output.
int Run(const std::vector<std::string>& argv, std::string* output = nullptr);

// Runs and fails the current test (ADD_FAILURE) with the output if the exit status is not 0.
bool RunOk(const std::vector<std::string>& argv, std::string* output = nullptr);

void WriteFile(const std::filesystem::path& path, std::string_view contents);
std::string ReadFile(const std::filesystem::path& path);

// keywrap's source directory (for the committed fuzz corpus).
std::filesystem::path SourceDir();

struct KeyPairFiles {
  std::filesystem::path private_pem;  // RSA: PKCS#8 PEM; EC: SEC1 PEM ("EC PRIVATE KEY")
  std::filesystem::path public_pem;   // SubjectPublicKeyInfo PEM
};

// Generated on first use in this process, then reused; removed at exit.
const KeyPairFiles& RsaKeyFiles(int bits);
const KeyPairFiles& EcKeyFiles(std::string_view jose_curve);  // "P-256", "P-384", "P-521"
// A second, different pair of the same kind (for wrong-key tests).
const KeyPairFiles& OtherRsaKeyFiles();
const KeyPairFiles& OtherEcKeyFiles();

// The process-wide directory holding generated keys.
const std::filesystem::path& KeyDir();

}  // namespace lazycrypt::keywrap::testing
