// `lazycrypt mount`, `lazycrypt umount` and `lazycrypt stats`: one lazycrypt layer of an image
// mounted read-only with FUSE (lazylayer::MountedLayer), for inspection and debugging.
//
// A mount process serves until SIGINT/SIGTERM or until the mount is unmounted from outside, and
// writes its statistics as JSON (atomically: temp file + rename) every second and at exit to a
// stats file, by default DefaultStatsFile(mountpoint). `stats` reads that file; `umount` unmounts
// and waits for the process the file names to exit.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/io.h"
#include "common/status.h"
#include "image/layout.h"
#include "image/transport.h"
#include "tools/commands.h"

namespace lazycrypt::tools {

// Where mount processes write their statistics unless --stats-file says otherwise.
inline constexpr const char* kStatsDir = "/run/lazycrypt/mounts";

// kStatsDir/<first 16 hex digits of sha256(absolute, normalized mountpoint)>.json. The mountpoint
// is made absolute and symlink-resolved when it exists (lexically normalized otherwise).
std::filesystem::path DefaultStatsFile(const std::filesystem::path& mountpoint);

struct MountFlags {
  std::vector<std::string> keys;
  int layer = -1;                 // manifest layer index; -1 = the only lazycrypt layer
  std::string platform;           // "os/arch[/variant]" for an index; "" = linux/amd64
  std::string cache_dir;          // "" = memory-only cache
  std::string cache_size;         // cap of the disk cache ("" = 10GiB)
  bool no_prefetch = false;
  bool no_verify = false;         // no background verification (FORMAT.md §8.4)
  // FUSE allow_other: other users (than the one mounting) may read the mount. Off by default:
  // the plaintext is then readable by the mounting user (and root) only.
  bool allow_other = false;
  bool log_file_names = false;    // debugging: decrypted paths in log lines (warns)
  std::string background_rate;    // "SIZE/s" or "SIZE"; "" = no background fetch (needs cache_dir)
  bool daemon = false;
  std::string log_file;           // --daemon: the child's stdout/stderr ("" = /dev/null)
  std::string stats_file;         // "" = DefaultStatsFile(mountpoint)
  // Registry read tuning (hidden flags, for tests): per-attempt timeout and attempts per request
  // of blob reads; 0 = the registry client's defaults.
  double registry_timeout_sec = 0;
  int registry_attempts = 0;
  std::string record_file;         // --record: the accessed-files list ("" = not recorded)
  // What the layer's TOC may hold (format::TocLimits); 0 = the format's maximum.
  std::string toc_max_bytes;       // SIZE, e.g. 64MiB
  uint64_t toc_max_chunks = 0;
  uint64_t toc_max_entries = 0;
  std::string src, mountpoint;
  TransportFlags transport;
};
// Foreground: returns once the mount is gone (OK) or when mounting failed.
// With `record_file`: the files read through the mount, first access order, one absolute path per
// line (the `encrypt --prefetch-list` format), written atomically (mode 0600) when it ends.
// Daemon: forks before anything else; the child mounts and serves, the parent waits for the
// child's report, prints "mounted ... at ..." and returns OK, or returns the child's error.
Status RunMount(const MountFlags& flags, const Output& io);

// Shared with `lazycrypt record` (tools/record.cc):
// The image of `root` for `platform_text` ("os/arch[/variant]"; "" = linux/amd64) when it is an
// index, or its only image.
Result<const image::LoadedImage*> PickImage(const image::LoadedRoot& root,
                                            const std::string& platform_text);
// What a mount reads a layer blob through, and what must stay alive for it.
struct OpenedBlob {
  std::shared_ptr<BlobSource> source;
  std::shared_ptr<void> keepalive;
};
// Random access to layer `d` of the image `ref` names: `src`'s blob for a layout, a registry
// client of its own (multi-range reads, the registry_* tuning of `flags`) for docker://.
Result<OpenedBlob> OpenLayerBlob(const image::ImageReference& ref, image::ImageSource& src,
                                 const image::TransportOptions& transport,
                                 const MountFlags& flags, const image::Descriptor& d);

struct UmountFlags {
  std::string mountpoint;
  std::string stats_file;     // "" = DefaultStatsFile(mountpoint)
  double wait_seconds = 30;   // for the serving process to exit
};
// Unmounts (umount2 as root, fusermount3 -u otherwise); FailedPrecondition "busy" while in use.
// Then waits for the process named by the stats file to exit (DeadlineExceeded after
// wait_seconds).
Status RunUmount(const UmountFlags& flags, const Output& io);

struct StatsFlags {
  bool json = false;
  std::string mountpoint;
  std::string stats_file;  // "" = DefaultStatsFile(mountpoint)
};
// Prints the stats file as a table (or the JSON, with "running" updated), and says whether the
// mount process is still running. NotFound when there is no stats file for the mountpoint.
Status RunStats(const StatsFlags& flags, const Output& io);

}  // namespace lazycrypt::tools
