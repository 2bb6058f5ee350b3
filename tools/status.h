// `lazycrypt status`: what the running lazycrypt-snapshotter has mounted, from its metrics
// endpoint's GET /status (snapshotter/metrics.h): per layer the digest, image, mountpoint, share
// present on local disk, bytes fetched, cache hits/misses and authentication failures.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "tools/commands.h"

namespace lazycrypt::tools {

// Where the daemon's endpoint is when neither --address nor --config is given.
inline constexpr const char* kDefaultSnapshotterConfig = "/etc/lazycrypt/config.toml";

struct StatusFlags {
  std::string address;  // HOST:PORT of the metrics endpoint; wins over --config
  std::string config;   // the daemon's config file ([metrics] address); "" = the default file
  bool json = false;    // print the daemon's JSON as it is
};
Status RunStatus(const StatusFlags& flags, const Output& io);

// GET http://ADDRESS<path> (ADDRESS as in the config: HOST:PORT or [IPV6]:PORT) with a few
// seconds' timeout; the body of a 200 answer. Unavailable naming the address when nothing answers
// there; NotFound/IoError for other HTTP statuses.
Result<std::string> HttpGetFromDaemon(std::string_view address, std::string_view path);

// The /status JSON as the table `lazycrypt status` prints ("no remote layers mounted" when
// empty), then the total: "2 layers mounted lazily: 1.5 MiB fetched from the registry since they
// were mounted". Corruption when the text is not the expected JSON.
Result<std::string> FormatStatusTable(std::string_view status_json);

}  // namespace lazycrypt::tools
