// lazycrypt-decoder: containerd stream processor for lazycrypt (and ocicrypt) layers. A thin main:
// flags, fd 3, stdin/stdout; the work is in decoder/decoder.h.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <openssl/crypto.h>

#include "common/file_io.h"
#include "common/version.h"
#include "crypto/process_hardening.h"
#include "decoder/decoder.h"
#include "keywrap/keyprovider.h"
#include "decoder/payload.h"

namespace {

using namespace lazycrypt;

constexpr int kPayloadFd = 3;
constexpr size_t kMaxPayloadBytes = 16 << 20;

// fd 3 when containerd passed a payload; nullopt when the descriptor is not open or not
// readable (containerd passes no fd 3 without a payload, but a descriptor leaked down from
// containerd's own parent may sit there, e.g. a write-only pipe).
Result<std::optional<decoder::StreamPayload>> ReadPayload() {
  const int flags = fcntl(kPayloadFd, F_GETFL);
  if (flags == -1 || (flags & O_ACCMODE) == O_WRONLY || (flags & O_PATH) != 0) {
    return std::optional<decoder::StreamPayload>();
  }
  FdInputStream in{UniqueFd(kPayloadFd)};
  // The payload may carry private keys: both buffers are wiped on every way out. (Payloads are a
  // few KiB; the reserve avoids reallocations that would leave unwiped copies.)
  std::vector<uint8_t> bytes;
  bytes.reserve(256 * 1024);
  std::vector<uint8_t> buf(64 * 1024);
  struct Wipe {
    std::vector<uint8_t>& a;
    std::vector<uint8_t>& b;
    ~Wipe() {
      OPENSSL_cleanse(a.data(), a.size());
      OPENSSL_cleanse(b.data(), b.size());
    }
  } wipe{bytes, buf};
  for (;;) {
    auto n = in.Read(buf);
    if (!n.ok()) {
      return Status(n.status().code(), "reading the payload on fd 3: " + n.status().message());
    }
    if (*n == 0) break;
    if (bytes.size() + *n > kMaxPayloadBytes) {
      return Status::InvalidArgument("payload on fd 3 is larger than " +
                                     std::to_string(kMaxPayloadBytes) + " bytes");
    }
    bytes.insert(bytes.end(), buf.begin(), buf.begin() + *n);
  }
  auto payload = decoder::ParseStreamPayload(bytes);
  if (!payload.ok()) return payload.status();
  return std::optional<decoder::StreamPayload>(std::move(*payload));
}

// containerd 1.6 (diff/apply + diff/stream_unix.go) consults a processor's exit status only if
// its wait goroutine has already finished when the layer stream ends; a decoder that fails before
// writing anything ends the stream and exits at the same moment, so its message is often lost
// behind "wrong diff id calculated on extraction" (fixed in later containerd by waiting). A
// short-lived child that keeps only stdout open makes the exit (and so the message) visible
// first. Only when stdout is a pipe, i.e. when a stream-processor host reads it.
void HoldStdoutOpenBriefly() {
  struct stat st;
  if (fstat(STDOUT_FILENO, &st) != 0 || !S_ISFIFO(st.st_mode)) return;
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    close(STDIN_FILENO);   // the host's stdin copier must not wait for us
    close(STDERR_FILENO);  // nor its stderr reader (cmd.Wait waits for both)
    struct timespec delay = {0, 300 * 1000 * 1000};
    nanosleep(&delay, nullptr);
    _exit(0);
  }
}

Status Run(const std::vector<std::string>& key_paths, int threads) {
  LC_ASSIGN_OR_RETURN(auto payload, ReadPayload());
  std::vector<keywrap::PrivateKey> keys;
  if (payload) {
    LC_ASSIGN_OR_RETURN(keys, decoder::LoadPayloadKeys(*payload));
  }
  for (const auto& path : key_paths) {
    auto dir_keys = decoder::LoadDecryptionKeysDir(path);
    if (!dir_keys.ok()) {
      return Status(dir_keys.status().code(),
                    "unable to get decryption keys in provided key path: " +
                        dir_keys.status().message());
    }
    for (auto& key : *dir_keys) keys.push_back(std::move(key));
  }
  // As ctd-decoder (through ocicrypt): every provider of the file named by
  // OCICRYPT_KEYPROVIDER_CONFIG is tried on a layer carrying its annotation, after the keys.
  keywrap::KeyRing ring(std::move(keys));
  if (auto config_path = keywrap::KeyProviderConfigPathFromEnv()) {
    LC_ASSIGN_OR_RETURN(keywrap::KeyProviderConfig config, keywrap::LoadKeyProviderConfig(*config_path));
    for (auto& provider : keywrap::MakeAllKeyProviders(config)) ring.AddProvider(std::move(provider));
  }
  decoder::DecodeRequest request;
  if (const char* mt = std::getenv(std::string(decoder::kMediaTypeEnvVar).c_str())) {
    request.media_type = mt;
  }
  request.payload = std::move(payload);
  request.threads = threads;
  FdInputStream in(STDIN_FILENO);
  FdOutputStream out(STDOUT_FILENO);
  LC_ASSIGN_OR_RETURN(auto result, decoder::Decode(request, ring, in, out));
  return out.Close();
}

}  // namespace

int main(int argc, char** argv) {
  lazycrypt::crypto::HardenProcess("lazycrypt-decoder");  // before any key or plaintext
  CLI::App app{
      "lazycrypt-decoder: containerd stream processor that decrypts lazycrypt (and ocicrypt) "
      "layers.\nReads the blob on stdin, writes the decoded layer on stdout, the layer "
      "descriptor comes in containerd's payload on fd 3, STREAM_PROCESSOR_MEDIATYPE names the "
      "blob's media type.",
      "lazycrypt-decoder"};
  app.set_version_flag("--version", VersionLine("lazycrypt-decoder"));
  std::vector<std::string> key_paths;
  int threads = 0;
  app.add_option("--decryption-keys-path", key_paths,
                 "Directory (searched recursively) or file of unencrypted private keys; "
                 "repeatable")
      ->take_all()
      ->allow_extra_args(false);
  app.add_option("--threads", threads, "Chunk-opening threads (0 = one per core)")
      ->check(CLI::NonNegativeNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  Status status = Run(key_paths, threads);
  if (!status.ok()) {
    std::fprintf(stderr, "lazycrypt-decoder: %s\n", status.ToString().c_str());
    HoldStdoutOpenBriefly();
    return 1;
  }
  return 0;
}
