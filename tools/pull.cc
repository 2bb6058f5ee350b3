#include "tools/pull.h"

#include "ctrdclient/pull.h"
#include "image/transport.h"

namespace lazycrypt::tools {

std::string PullSummary(const ctrdclient::PullReport& report, const std::string& snapshotter) {
  size_t remote = 0, applied = 0, present = 0;
  for (const auto& l : report.layers) {
    remote += l.outcome == ctrdclient::LayerOutcome::kRemote;
    applied += l.outcome == ctrdclient::LayerOutcome::kApplied;
    present += l.outcome == ctrdclient::LayerOutcome::kPresent;
  }
  std::string out = "pulled " + report.image_name + " (" + report.manifest_digest.substr(0, 19) +
                    ") in " + std::to_string(report.duration.count()) + " ms: " +
                    std::to_string(remote) + " layers mounted lazily by " + snapshotter + ", " +
                    std::to_string(applied) + " downloaded and unpacked, " +
                    std::to_string(present) + " already present; " +
                    FormatBytes(report.bytes_fetched) + " fetched now";
  // A lazy layer costs almost nothing here: its files come when a container reads them, and
  // that cost shows up later, per layer, in the snapshotter's status.
  if (remote > 0) {
    out += "; the files of the lazily mounted layers are fetched as the container reads them "
           "(see `lazycrypt status` for the bytes fetched since)";
  }
  return out;
}

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
  std::fprintf(io.out, "%s\n", PullSummary(report, flags.snapshotter).c_str());
  return Status::Ok();
}

}  // namespace lazycrypt::tools
