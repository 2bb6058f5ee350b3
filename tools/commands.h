// The `lazycrypt` commands, as functions from parsed flags to a Status (tools/main.cc parses the
// command line with CLI11 and prints a failed Status as "lazycrypt: <message>", exit code 1).
// Human output goes to `out`; progress to `err`. Nothing here prints key material.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "format/layout.h"
#include "image/prefetch_plan.h"
#include "image/transport.h"
#include "keywrap/keyring.h"
#include "keywrap/keys.h"

namespace lazycrypt::tools {

// --- Flag parsing helpers (unit-tested in tests/cli_test.cc) -----------------------------------

// "1MiB", "512KiB", "64K", "4M", "1048576" (binary units; "B" optional). InvalidArgument naming
// the text otherwise.
Result<uint64_t> ParseByteSize(std::string_view text);
// "0,2,5" → {0, 2, 5}; duplicates removed, order kept. InvalidArgument naming the bad item.
Result<std::vector<size_t>> ParseLayerList(std::string_view text);
// "jwe:PATH" → the public key at PATH. Other ocicrypt schemes are Unsupported by name.
Result<keywrap::PublicKey> LoadRecipient(std::string_view spec);
// "PATH" or "PATH:PASSWORD" (ocicrypt's spelling) → the private key.
Result<keywrap::PrivateKey> LoadKey(std::string_view spec);
// "provider:NAME[:params]" (skopeo's spelling) → that provider of the key provider config file
// named by OCICRYPT_KEYPROVIDER_CONFIG (keywrap/keyprovider.h).
Result<std::shared_ptr<const keywrap::KeyProvider>> LoadKeyProvider(std::string_view spec);
// Every --key value, key files and providers, in the order given. InvalidArgument when `required`
// and there are none.
Result<keywrap::KeyRing> LoadKeyRing(const std::vector<std::string>& specs, bool required);
// "1.5 MiB"
std::string FormatBytes(uint64_t bytes);
// The text of an `encrypt --prefetch-list` file → normalized entry names (format::
// NormalizeEntryName), duplicates removed, order kept. One path per line as in the image tree,
// leading "/" optional; blank lines and lines starting with '#' (after leading blanks) skipped;
// surrounding blanks and a trailing '\r' trimmed. InvalidArgument naming the line number for an
// unsafe path ('..', NUL, too long) or the root directory.
Result<std::vector<std::string>> ParsePrefetchList(std::string_view text);

// The report of an `encrypt --prefetch-list` resolution, one line per listed path and a summary:
//   "prefetch /bin/sh: marked /bin/busybox in layer 0 (via symlink)"
//   "prefetch /etc: not marked: a directory"
//   "prefetch: 3 of 5 paths marked"
std::vector<std::string> PrefetchPlanLines(const image::PrefetchPlan& plan);

// --- Commands ------------------------------------------------------------------------------------

struct Output {
  FILE* out = stdout;
  FILE* err = stderr;
  // A live progress line on `err` (rewritten in place with \r); main sets it when stderr is a
  // terminal. Off, nothing but one summary line per layer is written to `err` (pipes, logs).
  bool progress = false;
  bool quiet = false;  // no per-layer summary lines either (errors still go to main)
};

// docker:// settings, for source and destination alike.
struct TransportFlags {
  bool plain_http = false;
  bool tls_verify = true;
  std::string authfile;
  // containerd hosts directory (<DIR>/<host>/hosts.toml, e.g. a mirror in front of the registry).
  // Not given: kDefaultHostsDir when that directory exists, else none. Given as "": none.
  std::string hosts_dir;
  bool hosts_dir_given = false;
};

// Where containerd keeps hosts.toml files when its registry config_path points there (the
// containerd docs' convention).
inline constexpr const char* kDefaultHostsDir = "/etc/containerd/certs.d";

// The hosts directory the registry client uses for `flags` (see TransportFlags::hosts_dir), with
// `system_default` standing for kDefaultHostsDir. InvalidArgument when a given non-empty
// directory does not exist or is not a directory.
Result<std::string> ResolveHostsDir(const TransportFlags& flags,
                                    const std::string& system_default = kDefaultHostsDir);

// The transport settings `flags` stand for (hosts directory resolved as ResolveHostsDir does).
Result<image::TransportOptions> TransportOptionsFrom(const TransportFlags& flags);

struct EncryptFlags {
  std::vector<std::string> recipients;
  std::string layers;      // "" = all
  std::string chunk_size;  // "" = the format's default
  std::string format = "lazycrypt";
  int threads = 0;
  int zstd_level = format::kDefaultZstdLevel;
  std::string prefetch_list;  // file of paths to mark for prefetch (ParsePrefetchList); "" = none
  std::string src, dst;
  TransportFlags transport;
};
Status RunEncrypt(const EncryptFlags& flags, const Output& io);

struct DecryptFlags {
  std::vector<std::string> keys;
  std::string layer_compression = "zstd";
  std::string src, dst;
  TransportFlags transport;
};
Status RunDecrypt(const DecryptFlags& flags, const Output& io);

struct InspectFlags {
  std::vector<std::string> keys;
  bool json = false;
  bool files = false;
  std::string src;
  TransportFlags transport;
};
Status RunInspect(const InspectFlags& flags, const Output& io);

// `lazycrypt verify`: every blob fetched and authenticated (image/verify.h); prints one line per
// layer and "verified" on success; the first failure is the Status.
struct VerifyFlags {
  std::vector<std::string> keys;
  std::string src;
  TransportFlags transport;
};
Status RunVerify(const VerifyFlags& flags, const Output& io);

// `lazycrypt recipients add|remove` (image/recipients.h).
struct RecipientsFlags {
  bool remove = false;
  std::vector<std::string> keys;
  std::vector<std::string> recipients;
  std::string src, dst;
  TransportFlags transport;
};
Status RunRecipients(const RecipientsFlags& flags, const Output& io);

// `lazycrypt layer ...`: a layer is named either as an image (oci:DIR[:TAG] or
// docker://HOST/REPO[:TAG]) with --layer N (default: the image's only lazycrypt layer) or as a
// blob file with --descriptor FILE (the descriptor JSON `layer encrypt` writes, annotations
// included).
struct LayerSourceFlags {
  std::string source;      // oci:DIR[:TAG], docker://HOST/REPO[:TAG] or a blob path
  int layer = -1;          // with an image
  std::string platform;    // with an image index: "os/arch[/variant]" ("" = linux/amd64)
  std::string descriptor;  // with a blob path
  TransportFlags transport;  // with docker://
};

struct LayerEncryptFlags {
  std::vector<std::string> recipients;
  std::string chunk_size;
  int threads = 0;
  int zstd_level = format::kDefaultZstdLevel;
  std::string input, output;
  std::string descriptor_out;  // "" = print the descriptor JSON to stdout
};
Status RunLayerEncrypt(const LayerEncryptFlags& flags, const Output& io);

struct LayerDecryptFlags {
  std::vector<std::string> keys;
  LayerSourceFlags layer;
  bool zstd = false;
  std::string output;
};
Status RunLayerDecrypt(const LayerDecryptFlags& flags, const Output& io);

struct LayerLsFlags {
  std::vector<std::string> keys;
  LayerSourceFlags layer;
  bool long_format = false;
};
Status RunLayerLs(const LayerLsFlags& flags, const Output& io);

struct LayerCatFlags {
  std::vector<std::string> keys;
  LayerSourceFlags layer;
  std::string path;
  bool stats = false;  // report to stderr how much of the blob was read
};
Status RunLayerCat(const LayerCatFlags& flags, const Output& io);

}  // namespace lazycrypt::tools
