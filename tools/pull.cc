#include "tools/pull.h"

#include "ctrdclient/pull.h"
#include "image/transport.h"

namespace lazycrypt::tools {

Status RunPull(const PullFlags& flags, const Output& io) {
  ctrdclient::PullOptions options;
  options.address = flags.address;
  options.ns = flags.ns;
  options.snapshotter = flags.snapshotter;
  options.platform = flags.platform;
  options.ref = flags.ref;
  if (options.ref.rfind("docker://", 0) == 0) options.ref = options.ref.substr(9);
  LC_ASSIGN_OR_RETURN(image::TransportOptions transport, TransportOptionsFrom(flags.transport));
  options.registry = image::RegistryClientOptions(transport);
  options.progress = [&](const ctrdclient::PullEvent& event) {
    if (event.stage != "layer" || event.layer == nullptr || io.quiet) return;
    const ctrdclient::LayerPullReport& l = *event.layer;
    std::fprintf(io.err, "layer %zu %s: %s (%s, %lld ms)\n", l.index, l.digest.substr(0, 19).c_str(),
                 std::string(ctrdclient::LayerOutcomeName(l.outcome)).c_str(),
                 FormatBytes(l.size).c_str(), static_cast<long long>(l.duration.count()));
  };
  LC_ASSIGN_OR_RETURN(ctrdclient::PullReport report, ctrdclient::PullImage(options));
  size_t remote = 0, applied = 0, present = 0;
  for (const auto& l : report.layers) {
    remote += l.outcome == ctrdclient::LayerOutcome::kRemote;
    applied += l.outcome == ctrdclient::LayerOutcome::kApplied;
    present += l.outcome == ctrdclient::LayerOutcome::kPresent;
  }
  std::fprintf(io.out,
               "pulled %s (%s) in %lld ms: %zu layers mounted lazily by %s, %zu downloaded and "
               "unpacked, %zu already present; %s fetched from the registry\n",
               report.image_name.c_str(), report.manifest_digest.substr(0, 19).c_str(),
               static_cast<long long>(report.duration.count()), remote,
               flags.snapshotter.c_str(), applied, present,
               FormatBytes(report.bytes_fetched).c_str());
  return Status::Ok();
}

}  // namespace lazycrypt::tools
