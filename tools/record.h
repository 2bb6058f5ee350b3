// `lazycrypt record`: which files does a container read at start? Mounts every lazycrypt layer of
// an image with FUSE, recording first opens (fusefs::AccessLog), unpacks its plain layers, stacks
// them with overlayfs (upper directory on a private tmpfs), runs the image's entrypoint (or a
// given command) with runc for a bounded period, then kills it, unmounts everything and writes
// the files read: one absolute path per line, first access order, no duplicates, the format
// `lazycrypt encrypt --prefetch-list` reads. (stargz-snapshotter's `ctr-remote image optimize`
// does the same for eStargz.)
//
// Needs root, /dev/fuse, overlayfs and runc. Nothing stays mounted on any return path: every
// mount is held by a guard that unmounts it (lazily when busy), the container is killed and
// deleted by one.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "tools/commands.h"

namespace lazycrypt::tools {

struct RecordFlags {
  std::vector<std::string> keys;
  std::string platform;            // for an index; "" = linux/amd64
  std::string period = "10s";      // how long the container may run: "10s", "500ms", "2m", "30"
  std::string output;              // the list's path
  std::string runc = "runc";       // runc executable (looked up in PATH unless it holds a '/')
  std::string src;
  std::vector<std::string> command;  // replaces the image's Entrypoint + Cmd when not empty
  TransportFlags transport;
};
Status RunRecord(const RecordFlags& flags, const Output& io);

// "10s", "1.5s", "500ms", "2m", or a plain number of seconds → milliseconds (> 0).
// InvalidArgument naming the text otherwise.
Result<int64_t> ParseDurationMs(std::string_view text);

}  // namespace lazycrypt::tools
