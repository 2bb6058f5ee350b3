// The daemon's configuration: one TOML file (tomlplusplus), loaded once into Config. Unknown keys
// are errors naming the key; bad values name the key and the value.
//
//   address = "/run/lazycrypt/snapshotter.sock"   # unix socket for containerd
//   root = "/var/lib/lazycrypt"                   # state dir (metadata, snapshots)
//   log_level = "info"                            # debug | info | warn | error
//   log_file_names = false                        # debugging: decrypted paths in log lines
//   socket_mode = "0600"                          # octal, the socket's permissions
//   [keys]     dirs = ["/etc/containerd/ocicrypt/keys"]
//              provider_config = "/etc/lazycrypt/ocicrypt_keyprovider.conf"  # default: $OCICRYPT_KEYPROVIDER_CONFIG
//   [keys.passwords]  "/etc/containerd/ocicrypt/keys/node.pem" = "/etc/lazycrypt/node.pem.pass"
//   [cache]    max_bytes = 10737418240            # ciphertext chunk cache bound
//              plaintext_budget = 268435456       # opened (decrypted) chunks kept in memory,
//                                                 # one budget for every layer; 0 = none kept
//   [fetch]    prefetch = true                    # fetch the prefetch list on mount
//              whole_layer_bytes = 2097152        # a layer this small (bytes) is read whole
//                                                 # by its mount's one request; 0 = never
//              background_rate = 0                # bytes/s of background fetch; 0 = off
//              verify_delay_ms = 10000            # the full verification of a mounted layer
//                                                 # starts this long after its mount
//              verify_rate = 0                    # bytes/s it may fetch; 0 = as fast as the
//                                                 # link allows, yielding to on-demand reads
//              verify_deadline_s = 1800           # a layer still unverified this long after
//                                                 # its mount is refused to new uses; 0 = never
//              open_ahead = 4                     # the later layers of an image opened in
//                                                 # parallel ahead of their Prepares; 0 = off
//   [ocicrypt] unpack = true                      # standard ocicrypt layers unpacked by the
//                                                 # snapshotter (false: left to containerd)
//              lazy_index = true                  # ... or mounted lazily when `lazycrypt index`
//                                                 # made an index for them (FORMAT.md §11)
//              index_max_bytes = 67108864         # largest index core (TOC and span
//                                                 # table) fetched at mount and kept on disk
//   [registry] hosts_dir = "/etc/containerd/certs.d"
//   [metrics]  address = ""                       # host:port of /metrics and /status; "" = off;
//                                                 # ":9187" = 127.0.0.1:9187 (never all interfaces)
//   [limits]   toc_max_bytes = 268435456          # largest serialized TOC a layer may have
//              toc_max_chunks = 1048576           # most chunks per layer (format: 16 Mi)
//              toc_max_entries = 1048576          # most files (TOC entries, eStargz TOC or
//                                                 # index entries) per layer (format: 8 Mi)
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "snapshotter/log.h"

namespace lazycrypt::snapshotter {

struct Config {
  std::filesystem::path address = "/run/lazycrypt/snapshotter.sock";
  std::filesystem::path root = "/var/lib/lazycrypt";
  LogLevel log_level = LogLevel::kInfo;
  // Debugging only: log lines about a file in a layer name its path, not just its inode. The
  // paths are decrypted data (FORMAT.md §4); the daemon warns at start when this is on.
  bool log_file_names = false;
  mode_t socket_mode = 0600;
  struct Keys {
    std::vector<std::filesystem::path> dirs = {"/etc/containerd/ocicrypt/keys"};
    // ocicrypt key provider config (JSON); empty = $OCICRYPT_KEYPROVIDER_CONFIG, as ocicrypt.
    std::filesystem::path provider_config;
    // Password-protected keys in `dirs`: key file → password file (0600, owned by the daemon user).
    std::map<std::filesystem::path, std::filesystem::path> passwords;
  } keys;
  struct Cache {
    uint64_t max_bytes = uint64_t{10} << 30;
    // Plaintext of opened chunks kept in memory for the whole daemon, every mounted layer
    // together (cache/opened_chunk_cache.h): the daemon's RSS is its metadata plus about this.
    // 0 = none kept (every read opens its chunks again).
    uint64_t plaintext_budget_bytes = uint64_t{256} << 20;
  } cache;
  struct Fetch {
    bool prefetch = true;
    // A lazycrypt layer whose blob is at most this many bytes is read whole by its mount's one
    // request (footer, TOC and every chunk), so its files' first reads wait for no fetch.
    uint64_t whole_layer_bytes = uint64_t{2} << 20;
    uint64_t background_rate_bytes_per_sec = 0;  // 0 = no background fetch
    // Every lazily mounted layer is fetched and verified in full against its diff_id (FORMAT.md
    // §8.4); it cannot be turned off here. The delay keeps a starting container's first reads
    // off its way (they usually come in the first seconds); it adds to the window in which a
    // layer whose image lied about its diff_id is served before it is quarantined (§9.2).
    uint32_t verify_delay_ms = 10000;
    uint64_t verify_rate_bytes_per_sec = 0;  // 0 = unlimited (it yields to on-demand reads)
    // New uses of a layer still unverified this long after its mount are refused until its
    // verification ends (a source that keeps failing cannot keep it usable forever); 0 = never.
    uint64_t verify_deadline_s = 1800;
    // A container's read of a chunk that cannot be fetched (registry unreachable) waits and is
    // tried again this long before it fails with EIO.
    uint64_t read_retry_s = 30;
    // Workers opening an image's later lazycrypt layers while containerd prepares them one by
    // one (lazylayer/layer_warmup.h); 0 = each Prepare opens its own layer.
    uint64_t open_ahead = 4;
  } fetch;
  struct Registry {
    std::filesystem::path hosts_dir = "/etc/containerd/certs.d";
  } registry;
  struct Metrics {
    std::string address;  // "host:port", or ":port" for loopback; empty = no metrics endpoint
  } metrics;
  // What a layer's TOC may hold (format::TocLimits; also an eStargz TOC's and a zindex core's
  // entries); 0 = the format's maximum. They bound the memory one hostile layer's metadata can
  // make the daemon build before it is refused: an image author may seal a TOC of empty entries
  // up to the limit (a few KiB of zstd), and parsing builds an object per entry and chunk. At the
  // format's maxima (8 Mi entries, 16 Mi chunks) that is GiBs per layer, and a pull prepares its
  // layers in parallel; at the defaults, 1 Mi of each (a layer of a million files, or 64 GiB in
  // the smallest chunks), a few hundred MiB. A layer over a limit fails to mount with an error
  // naming the limit.
  struct Limits {
    uint64_t toc_max_bytes = 0;
    uint64_t toc_max_chunks = uint64_t{1} << 20;
    uint64_t toc_max_entries = uint64_t{1} << 20;
  } limits;
  // Standard ocicrypt layers (skopeo, buildah, ctr-imgcrypt; not lazycrypt's format).
  struct Ocicrypt {
    // The snapshotter fetches, authenticates (HMAC), decrypts and unpacks them itself, so they
    // run on any containerd and pull path (2.x's transfer service gives imgcrypt no keys). Costs
    // one manifest request per pull of an image that is not lazycrypt's. false: containerd pulls
    // them (its stream processor, imgcrypt's ctd-decoder, must decrypt them).
    bool unpack = true;
    // With unpack: a layer that `lazycrypt index` indexed (a sealed zindex referrer of the image
    // manifest, docs/FORMAT.md §11) is mounted lazily instead, and verified in the background;
    // without a usable index it is unpacked. Costs one referrers request per pull of an image
    // with ocicrypt layers. false: always unpacked.
    bool lazy_index = true;
    // The largest index core (header, TOC and span table: zindex::SealedCoreBytes) fetched at
    // mount and kept on disk (bytes; at most 256 MiB). The whole index blob, whose windows are
    // fetched by range with their spans, is bounded by zindex::kMaxSealedIndexBytes (256 MiB)
    // only, so a large layer with small spans is still served lazily.
    uint64_t index_max_bytes = uint64_t{64} << 20;
  } ocicrypt;
  // Restarts (README "Restarts and upgrades"): each lazy layer's FUSE connection is kept in an fd
  // store (systemd's, or lazycrypt-fdholder's) so that the next daemon resumes the same mounts and
  // running containers keep reading.
  struct Restart {
    // A clean stop (SIGTERM) unmounts every lazy layer instead of leaving it to the next daemon
    // (containers still using one then fail their reads). --unmount-on-exit sets it.
    bool unmount_on_exit = false;
    // The fd holder's socket when not run under a systemd unit with an fd store; empty =
    // <root>/fdholder/fdholder.sock.
    std::filesystem::path holder_socket;
    // A resumed layer whose restore keeps failing (registry unreachable) is retried in the
    // background this long, its uncached reads waiting; then its reads fail with EIO.
    uint64_t restore_retry_s = 300;
  } restart;
};

// Parses TOML text (`source` names it in messages, e.g. the file path). Missing keys keep their
// defaults. InvalidArgument for syntax errors, unknown keys, wrong types and bad values.
Result<Config> ParseConfig(std::string_view toml_text, std::string_view source = "config");
// Reads and parses a file. NotFound if it does not exist.
Result<Config> LoadConfig(const std::filesystem::path& path);

}  // namespace lazycrypt::snapshotter
