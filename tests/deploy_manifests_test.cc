// The Kubernetes manifests in deploy/kubernetes/ parse as YAML (yaml-cpp) and carry every field
// the Kubernetes API requires for their kinds (apiVersion/kind/metadata.name; RuntimeClass
// handler as a DNS label; DaemonSet selector matching its template's labels, containers with
// name and image, volume mounts naming declared volumes; Pod containers; ...), so that a typo
// is caught here and not by `kubectl apply` on a cluster. The systemd unit keeps core dumps off
// and hardens the daemon without a private mount namespace. The snapshotter's DaemonSet mounts
// what the sample config (deploy/containerd/lazycrypt-snapshotter.toml, the image's config)
// names, with the privileges and propagation FUSE layers need. The fd holder runs in its own
// DaemonSet that outlives snapshotter rollouts, on the socket the snapshotter's config names.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "common/version.h"
#include "snapshotter/config.h"
#include "tests/test_util.h"

namespace lazycrypt {
namespace {

namespace fs = std::filesystem;

fs::path ManifestDir() { return testing::SourceDir() / "deploy" / "kubernetes"; }

struct Doc {
  std::string file;
  YAML::Node node;
};

std::vector<Doc> LoadAll() {
  std::vector<Doc> docs;
  for (const auto& entry : fs::directory_iterator(ManifestDir())) {
    if (entry.path().extension() != ".yaml") continue;
    std::vector<YAML::Node> nodes;
    try {
      nodes = YAML::LoadAllFromFile(entry.path().string());
    } catch (const YAML::Exception& e) {
      ADD_FAILURE() << entry.path() << " does not parse: " << e.what();
      continue;
    }
    for (auto& n : nodes) {
      if (!n.IsNull()) docs.push_back({entry.path().filename().string(), n});
    }
  }
  return docs;
}

bool IsDnsLabel(const std::string& s) {
  static const std::regex re("[a-z0-9]([-a-z0-9]*[a-z0-9])?");
  return s.size() <= 63 && std::regex_match(s, re);
}

bool IsDnsSubdomain(const std::string& s) {
  static const std::regex re("[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*");
  return s.size() <= 253 && std::regex_match(s, re);
}

std::string Str(const YAML::Node& n) { return n && n.IsScalar() ? n.as<std::string>() : ""; }

// A container (Pod/DaemonSet template; init containers too): name, image; each volumeMount
// names a volume declared in `volumes`.
void CheckContainers(const std::string& where, const YAML::Node& pod_spec) {
  const YAML::Node containers = pod_spec["containers"];
  ASSERT_TRUE(containers && containers.IsSequence() && containers.size() > 0)
      << where << ": spec.containers is required";
  if (pod_spec["initContainers"]) {
    ASSERT_TRUE(pod_spec["initContainers"].IsSequence()) << where << ": initContainers";
  }
  std::set<std::string> volumes;
  if (pod_spec["volumes"]) {
    for (const auto& v : pod_spec["volumes"]) {
      EXPECT_TRUE(IsDnsLabel(Str(v["name"]))) << where << ": volume name " << Str(v["name"]);
      volumes.insert(Str(v["name"]));
    }
  }
  std::vector<YAML::Node> all;
  for (const auto& c : containers) all.push_back(c);
  for (const auto& c : pod_spec["initContainers"]) all.push_back(c);
  std::set<std::string> names;
  for (const auto& c : all) {
    const std::string name = Str(c["name"]);
    EXPECT_TRUE(IsDnsLabel(name)) << where << ": container name \"" << name << "\"";
    EXPECT_TRUE(names.insert(name).second) << where << ": duplicate container " << name;
    EXPECT_FALSE(Str(c["image"]).empty()) << where << ": container " << name << " has no image";
    if (c["volumeMounts"]) {
      for (const auto& m : c["volumeMounts"]) {
        EXPECT_TRUE(volumes.count(Str(m["name"])))
            << where << ": volumeMount " << Str(m["name"]) << " names no volume";
        EXPECT_EQ(Str(m["mountPath"]).rfind('/', 0), 0u) << where << ": mountPath must be absolute";
      }
    }
  }
}

void CheckDoc(const Doc& d) {
  const YAML::Node& n = d.node;
  ASSERT_TRUE(n.IsMap()) << d.file << ": a document is not a mapping";
  const std::string api = Str(n["apiVersion"]);
  const std::string kind = Str(n["kind"]);
  const std::string where = d.file + " " + kind + "/" + Str(n["metadata"]["name"]);
  ASSERT_FALSE(api.empty()) << d.file << ": apiVersion is required";
  ASSERT_FALSE(kind.empty()) << d.file << ": kind is required";
  ASSERT_TRUE(n["metadata"] && n["metadata"].IsMap()) << where << ": metadata is required";
  EXPECT_TRUE(IsDnsSubdomain(Str(n["metadata"]["name"]))) << where << ": metadata.name";
  if (n["metadata"]["namespace"]) {
    EXPECT_TRUE(IsDnsLabel(Str(n["metadata"]["namespace"]))) << where << ": metadata.namespace";
  }
  if (kind == "RuntimeClass") {
    EXPECT_EQ(api, "node.k8s.io/v1") << where;
    EXPECT_TRUE(IsDnsLabel(Str(n["handler"]))) << where << ": handler is required (DNS label)";
    if (n["scheduling"]) {
      EXPECT_TRUE(n["scheduling"]["nodeSelector"].IsMap()) << where << ": scheduling.nodeSelector";
    }
  } else if (kind == "DaemonSet") {
    EXPECT_EQ(api, "apps/v1") << where;
    const YAML::Node spec = n["spec"];
    ASSERT_TRUE(spec && spec.IsMap()) << where << ": spec is required";
    const YAML::Node match = spec["selector"]["matchLabels"];
    ASSERT_TRUE(match && match.IsMap() && match.size() > 0)
        << where << ": spec.selector is required (apps/v1)";
    const YAML::Node labels = spec["template"]["metadata"]["labels"];
    ASSERT_TRUE(labels && labels.IsMap()) << where << ": spec.template.metadata.labels";
    for (const auto& kv : match) {
      EXPECT_EQ(Str(labels[kv.first.as<std::string>()]), kv.second.as<std::string>())
          << where << ": selector does not match the template's labels";
    }
    CheckContainers(where, spec["template"]["spec"]);
  } else if (kind == "Pod") {
    EXPECT_EQ(api, "v1") << where;
    CheckContainers(where, n["spec"]);
  } else if (kind == "ConfigMap") {
    EXPECT_EQ(api, "v1") << where;
    ASSERT_TRUE(n["data"] && n["data"].IsMap()) << where << ": data";
    for (const auto& kv : n["data"]) {
      EXPECT_TRUE(kv.second.IsScalar()) << where << ": data values are strings";
    }
  } else if (kind == "Namespace" || kind == "ServiceAccount") {
    EXPECT_EQ(api, "v1") << where;
    if (kind == "Namespace") EXPECT_TRUE(IsDnsLabel(Str(n["metadata"]["name"]))) << where;
  } else {
    ADD_FAILURE() << where << ": kind " << kind << " is not checked by this test; add it";
  }
}

TEST(DeployManifests, ParseAndCarryTheRequiredFields) {
  auto docs = LoadAll();
  ASSERT_FALSE(docs.empty()) << "no manifests in " << ManifestDir();
  std::set<std::string> kinds;
  for (const auto& d : docs) {
    SCOPED_TRACE(d.file);
    CheckDoc(d);
    kinds.insert(Str(d.node["kind"]));
  }
  EXPECT_THAT(kinds, ::testing::IsSupersetOf({"RuntimeClass", "DaemonSet", "Pod"}));
}

TEST(DeployManifests, RuntimeClassIsLazycryptAndPodsAndKeysUseIt) {
  std::string handler, node_selector_value, pod_class, pod_annotation, host_path;
  int64_t secret_mode = -1;
  for (const auto& d : LoadAll()) {
    const std::string kind = Str(d.node["kind"]);
    if (kind == "RuntimeClass") {
      handler = Str(d.node["handler"]);
      node_selector_value = Str(d.node["scheduling"]["nodeSelector"]["lazycrypt.io/node"]);
    } else if (kind == "Pod") {
      pod_class = Str(d.node["spec"]["runtimeClassName"]);
      pod_annotation = Str(d.node["metadata"]["annotations"]["io.containerd.cri.runtime-handler"]);
    } else if (kind == "DaemonSet" && Str(d.node["metadata"]["name"]) == "lazycrypt-node-keys") {
      for (const auto& v : d.node["spec"]["template"]["spec"]["volumes"]) {
        if (v["hostPath"]) host_path = Str(v["hostPath"]["path"]);
        if (v["secret"]) secret_mode = v["secret"]["defaultMode"].as<int64_t>();
      }
    }
  }
  EXPECT_EQ(handler, "lazycrypt");
  EXPECT_EQ(node_selector_value, "true");
  EXPECT_EQ(pod_class, "lazycrypt");
  EXPECT_EQ(pod_annotation, "lazycrypt");
  // The node key directory of deploy/containerd/lazycrypt-snapshotter.toml's [keys] dirs.
  EXPECT_EQ(host_path, "/etc/containerd/ocicrypt/keys");
  EXPECT_EQ(secret_mode, 0400);  // YAML 1.2 core schema: "0400" is octal
}

// deploy/systemd/lazycrypt-snapshotter.service: [Service] key=value pairs (later ones win, as
// in systemd for these single-valued settings).
std::map<std::string, std::string> ServiceSettings() {
  std::ifstream in(testing::SourceDir() / "deploy" / "systemd" / "lazycrypt-snapshotter.service");
  std::map<std::string, std::string> settings;
  std::string line, section;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      section = line;
      continue;
    }
    const size_t eq = line.find('=');
    if (section == "[Service]" && eq != std::string::npos) {
      settings[line.substr(0, eq)] = line.substr(eq + 1);
    }
  }
  return settings;
}

TEST(DeploySystemdUnit, NoCoreDumpsAndHardeningThatKeepsMountsShared) {
  const auto settings = ServiceSettings();
  ASSERT_TRUE(settings.count("ExecStart")) << "the unit did not parse";
  // Keys and plaintext never reach a core file.
  ASSERT_TRUE(settings.count("LimitCORE"));
  EXPECT_EQ(settings.at("LimitCORE"), "0");
  EXPECT_EQ(settings.count("NoNewPrivileges") ? settings.at("NoNewPrivileges") : "", "yes");
  // Each of these gives the service a mount namespace of its own (or a device policy that hides
  // /dev/fuse): the FUSE mounts it makes would then be invisible to containerd and runc.
  for (const char* breaks_mounts :
       {"PrivateTmp", "ProtectSystem", "ProtectHome", "PrivateDevices", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
        "ProtectHostname", "ProtectProc", "ProcSubset", "ReadOnlyPaths", "ReadWritePaths",
        "InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths",
        "PrivateMounts", "MountFlags", "RootDirectory", "RootImage", "DeviceAllow",
        "DevicePolicy", "PrivateUsers", "PrivateNetwork"}) {
    EXPECT_EQ(settings.count(breaks_mounts), 0u) << breaks_mounts << " would hide the mounts";
  }
}

// The document of `kind` named `name` in deploy/kubernetes/, or a null node.
YAML::Node FindDoc(const std::string& kind, const std::string& name) {
  for (const auto& d : LoadAll()) {
    if (Str(d.node["kind"]) == kind && Str(d.node["metadata"]["name"]) == name) return d.node;
  }
  return YAML::Node();
}

// The config the snapshotter DaemonSet's container runs with: its --config file, from the
// ConfigMap volume mounted at that file's directory.
Result<snapshotter::Config> PodConfig(const YAML::Node& ds) {
  const YAML::Node pod = ds["spec"]["template"]["spec"];
  const YAML::Node c = pod["containers"][0];
  std::vector<std::string> args;
  for (const auto& a : c["args"]) args.push_back(a.as<std::string>());
  auto flag = std::find(args.begin(), args.end(), "--config");
  if (flag == args.end() || flag + 1 == args.end()) {
    return Status::InvalidArgument("the snapshotter container has no --config");
  }
  const fs::path file = *(flag + 1);
  std::string volume;
  for (const auto& m : c["volumeMounts"]) {
    if (Str(m["mountPath"]) == file.parent_path().string()) volume = Str(m["name"]);
  }
  std::string config_map;
  for (const auto& v : pod["volumes"]) {
    if (Str(v["name"]) == volume && v["configMap"]) config_map = Str(v["configMap"]["name"]);
  }
  if (config_map.empty()) {
    return Status::InvalidArgument(file.parent_path().string() +
                                   " is not a ConfigMap volume in the snapshotter container");
  }
  const YAML::Node cm = FindDoc("ConfigMap", config_map);
  if (!cm) return Status::InvalidArgument("no ConfigMap " + config_map);
  if (Str(cm["metadata"]["namespace"]) != Str(ds["metadata"]["namespace"])) {
    return Status::InvalidArgument("ConfigMap " + config_map + " is in another namespace");
  }
  const std::string text = Str(cm["data"][file.filename().string()]);
  if (text.empty()) {
    return Status::InvalidArgument("ConfigMap " + config_map + " has no key " +
                                   file.filename().string());
  }
  return snapshotter::ParseConfig(text, "ConfigMap " + config_map);
}

// The host path behind `path` in `container` of `pod_spec` (through the hostPath volume mounted at
// the longest mountPath prefix of `path`), or "" when `path` is not on a hostPath volume.
std::string HostPathOf(const YAML::Node& pod_spec, const YAML::Node& container,
                       const fs::path& path) {
  std::string best_mount, best_host;
  for (const auto& m : container["volumeMounts"]) {
    const std::string mount_path = Str(m["mountPath"]);
    const fs::path rel = path.lexically_relative(mount_path);
    if (rel.empty() || rel.string().starts_with("..")) continue;
    if (mount_path.size() <= best_mount.size()) continue;
    for (const auto& v : pod_spec["volumes"]) {
      if (Str(v["name"]) == Str(m["name"])) {
        best_mount = mount_path;
        best_host = v["hostPath"] ? (fs::path(Str(v["hostPath"]["path"])) / rel)
                                        .lexically_normal()
                                        .string()
                                  : "";
      }
    }
  }
  if (!best_host.empty() && best_host.ends_with("/.")) best_host.resize(best_host.size() - 2);
  return best_host;
}

std::vector<std::string> Argv(const YAML::Node& container) {
  std::vector<std::string> argv;
  for (const auto& a : container["command"]) argv.push_back(a.as<std::string>());
  for (const auto& a : container["args"]) argv.push_back(a.as<std::string>());
  return argv;
}

// Issue 17: a holder started by the snapshotter would live in the snapshotter's pod and die with
// it at every rollout, aborting every running container's FUSE mounts. The holder runs in its own
// DaemonSet that the controller never replaces, on the socket the snapshotter's config names, in a
// host directory both pods see; the snapshotter pod waits for it before starting.
TEST(DeployManifests, FdHolderDaemonSetOutlivesSnapshotterRollouts) {
  const YAML::Node ds = FindDoc("DaemonSet", "lazycrypt-snapshotter");
  const YAML::Node holder_ds = FindDoc("DaemonSet", "lazycrypt-fdholder");
  ASSERT_TRUE(ds) << "no DaemonSet lazycrypt-snapshotter";
  ASSERT_TRUE(holder_ds) << "no DaemonSet lazycrypt-fdholder in deploy/kubernetes/";
  auto config = PodConfig(ds);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  const fs::path socket = config->restart.holder_socket;
  ASSERT_FALSE(socket.empty())
      << "the snapshotter's config has no [restart] holder_socket: it would start a holder in "
         "its own pod";
  EXPECT_EQ(socket, "/run/lazycrypt/fdholder/fdholder.sock");

  // On the same nodes, in the same namespace, from the same image.
  EXPECT_EQ(Str(holder_ds["metadata"]["namespace"]), Str(ds["metadata"]["namespace"]));
  const YAML::Node pod = ds["spec"]["template"]["spec"];
  const YAML::Node holder_pod = holder_ds["spec"]["template"]["spec"];
  EXPECT_EQ(Str(holder_pod["nodeSelector"]["lazycrypt.io/node"]),
            Str(pod["nodeSelector"]["lazycrypt.io/node"]));
  EXPECT_TRUE(holder_pod["tolerations"]) << "the holder must run wherever the snapshotter does";
  ASSERT_EQ(holder_pod["containers"].size(), 1u);
  const YAML::Node holder = holder_pod["containers"][0];
  EXPECT_EQ(Str(holder["image"]), Str(pod["containers"][0]["image"]));

  // Never replaced by the controller, never evicted, never OOM-killed: stopping it aborts the
  // mounts it alone holds.
  EXPECT_EQ(Str(holder_ds["spec"]["updateStrategy"]["type"]), "OnDelete");
  EXPECT_EQ(Str(holder_pod["priorityClassName"]), "system-node-critical");
  EXPECT_TRUE(holder["resources"]["requests"]) << "tiny requests, so that it always schedules";
  const YAML::Node limits = holder["resources"]["limits"];
  EXPECT_FALSE(limits && limits["memory"]) << "a memory limit can OOM-kill it";

  // The holder serves the config's socket, and never exits for being idle (a snapshotter
  // starting while the kubelet restarts an idle holder would start a holder in its own pod)...
  EXPECT_THAT(Argv(holder), ::testing::ElementsAre("/usr/bin/lazycrypt-fdholder", "--socket",
                                                   socket.string(), "--idle-exit", "0"));
  // ...in a host directory the snapshotter's pod sees at the same path.
  const std::string holder_host = HostPathOf(holder_pod, holder, socket);
  EXPECT_EQ(holder_host, socket.string()) << "the holder's socket is not on a hostPath volume "
                                             "at the same path on the host";
  EXPECT_EQ(HostPathOf(pod, pod["containers"][0], socket), holder_host)
      << "the snapshotter's pod does not see the holder's socket directory";
  // The kubelet creates a missing hostPath directory 0755, which the holder refuses (its
  // socket's directory must be 0700): the holder creates that directory itself, in a mounted
  // parent.
  for (const auto& m : holder["volumeMounts"]) {
    EXPECT_NE(Str(m["mountPath"]), socket.parent_path().string())
        << "mount the parent of the socket's directory: the kubelet would make it 0755";
  }

  // The snapshotter starts only once that holder answers, never one of its own in its pod.
  ASSERT_TRUE(pod["initContainers"] && pod["initContainers"].size() == 1u)
      << "the snapshotter pod has no init container waiting for the holder";
  const YAML::Node wait = pod["initContainers"][0];
  EXPECT_EQ(Str(wait["image"]), Str(holder["image"]));
  EXPECT_THAT(Argv(wait), ::testing::ElementsAre("/usr/bin/lazycrypt-fdholder", "--socket",
                                                 socket.string(), "--wait"));
  EXPECT_EQ(HostPathOf(pod, wait, socket), holder_host);
}

TEST(DeployManifests, SnapshotterDaemonSetRunsTheImageLikeTheSystemdUnit) {
  const YAML::Node ds = FindDoc("DaemonSet", "lazycrypt-snapshotter");
  ASSERT_TRUE(ds) << "no DaemonSet lazycrypt-snapshotter in deploy/kubernetes/";
  const YAML::Node keys_ds = FindDoc("DaemonSet", "lazycrypt-node-keys");
  ASSERT_TRUE(keys_ds) << "the node-key DaemonSet is gone";
  // Beside the node-key DaemonSet, on the nodes the RuntimeClass schedules lazycrypt pods onto.
  EXPECT_EQ(Str(ds["metadata"]["namespace"]), Str(keys_ds["metadata"]["namespace"]));
  const YAML::Node pod = ds["spec"]["template"]["spec"];
  EXPECT_EQ(Str(pod["nodeSelector"]["lazycrypt.io/node"]), "true");
  EXPECT_EQ(Str(FindDoc("RuntimeClass", "lazycrypt")["scheduling"]["nodeSelector"]["lazycrypt.io/node"]),
            "true");
  // The next pod resumes the mounts the fd holder kept: rolled out by the controller, one node
  // at a time (the old pod is gone before the new one starts).
  EXPECT_EQ(Str(ds["spec"]["updateStrategy"]["type"]), "RollingUpdate");
  EXPECT_EQ(Str(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"]), "1");
  EXPECT_FALSE(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"])
      << "two snapshotters on one node would serve the same socket and mounts";

  // What the pod's config (the ConfigMap mounted at /etc/lazycrypt) names.
  auto config = PodConfig(ds);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  ASSERT_FALSE(config->keys.dirs.empty());

  ASSERT_EQ(pod["containers"].size(), 1u);
  const YAML::Node c = pod["containers"][0];
  EXPECT_TRUE(c["securityContext"]["privileged"].as<bool>(false)) << "FUSE and overlay mounts";
  // The image scripts/build-image.sh tags with the release (CMake's project version).
  const std::string image = Str(c["image"]);
  EXPECT_TRUE(image.ends_with("/lazycrypt-snapshotter:" + std::string(Version())))
      << image << " is not this release's lazycrypt-snapshotter image (" << Version() << ")";
  std::vector<std::string> argv;
  for (const auto& a : c["command"]) argv.push_back(a.as<std::string>());
  for (const auto& a : c["args"]) argv.push_back(a.as<std::string>());
  EXPECT_THAT(argv, ::testing::ElementsAre("/usr/bin/lazycrypt-snapshotter", "--config",
                                           "/etc/lazycrypt/config.toml"));

  std::map<std::string, YAML::Node> volumes;
  for (const YAML::Node& v : pod["volumes"]) volumes.emplace(Str(v["name"]), v);
  struct Mount {
    std::string host_path, type, propagation;
    bool read_only = false;
  };
  std::map<std::string, Mount> mounts;  // by mountPath
  for (const auto& m : c["volumeMounts"]) {
    const YAML::Node v = volumes[Str(m["name"])];
    if (v && v["configMap"]) continue;  // the config, checked by PodConfig
    ASSERT_TRUE(v && v["hostPath"]) << "volumeMount " << Str(m["name"]) << " is not a hostPath";
    mounts[Str(m["mountPath"])] = {Str(v["hostPath"]["path"]), Str(v["hostPath"]["type"]),
                                   Str(m["mountPropagation"]), m["readOnly"].as<bool>(false)};
  }
  const auto expect_mount = [&](const std::string& path, const std::string& what) -> const Mount* {
    auto it = mounts.find(path);
    EXPECT_NE(it, mounts.end()) << what << " (" << path << ") is not mounted from the host";
    if (it == mounts.end()) return nullptr;
    EXPECT_EQ(it->second.host_path, path) << what << ": the host path must be the same path";
    return &it->second;
  };
  if (const Mount* fuse = expect_mount("/dev/fuse", "/dev/fuse")) {
    EXPECT_EQ(fuse->type, "CharDevice");
  }
  // The socket's directory: containerd's proxy plugin dials the config's address on the host.
  expect_mount(config->address.parent_path().string(), "the socket directory");
  // The layers' FUSE mounts are made under root; containerd and runc on the host must see them.
  if (const Mount* state = expect_mount(config->root.string(), "the state directory")) {
    EXPECT_EQ(state->propagation, "Bidirectional");
    EXPECT_FALSE(state->read_only);
  }
  // The node keys the node-key DaemonSet writes.
  if (const Mount* keys = expect_mount(config->keys.dirs.front().string(), "the key directory")) {
    EXPECT_TRUE(keys->read_only) << "the snapshotter only reads the node keys";
    std::string keys_ds_path;
    for (const auto& v : keys_ds["spec"]["template"]["spec"]["volumes"]) {
      if (v["hostPath"]) keys_ds_path = Str(v["hostPath"]["path"]);
    }
    EXPECT_EQ(keys_ds_path, keys->host_path) << "the node-key DaemonSet fills another directory";
  }
}

TEST(DeployManifests, ABrokenManifestIsReported) {
  EXPECT_THROW(YAML::Load("apiVersion: v1\nkind: [unclosed\n"), YAML::Exception);
}

}  // namespace
}  // namespace lazycrypt
