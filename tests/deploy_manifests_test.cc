// The Kubernetes manifests in deploy/kubernetes/ parse as YAML (yaml-cpp) and carry every field
// the Kubernetes API requires for their kinds (apiVersion/kind/metadata.name; RuntimeClass
// handler as a DNS label; DaemonSet selector matching its template's labels, containers with
// name and image, volume mounts naming declared volumes; Pod containers; ...), so that a typo
// is caught here and not by `kubectl apply` on a cluster. The systemd unit keeps core dumps off
// and hardens the daemon without a private mount namespace. The snapshotter's DaemonSet mounts
// what the sample config (deploy/containerd/lazycrypt-snapshotter.toml, the image's config)
// names, with the privileges and propagation FUSE layers need.
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

// A container (Pod/DaemonSet template): name, image; each volumeMount names a volume declared in
// `volumes`.
void CheckContainers(const std::string& where, const YAML::Node& pod_spec) {
  const YAML::Node containers = pod_spec["containers"];
  ASSERT_TRUE(containers && containers.IsSequence() && containers.size() > 0)
      << where << ": spec.containers is required";
  std::set<std::string> volumes;
  if (pod_spec["volumes"]) {
    for (const auto& v : pod_spec["volumes"]) {
      EXPECT_TRUE(IsDnsLabel(Str(v["name"]))) << where << ": volume name " << Str(v["name"]);
      volumes.insert(Str(v["name"]));
    }
  }
  std::set<std::string> names;
  for (const auto& c : containers) {
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
  // Stopping the daemon ends running containers' FUSE mounts: never rolled by the controller.
  EXPECT_EQ(Str(ds["spec"]["updateStrategy"]["type"]), "OnDelete");

  // What the image's config (the sample config) names.
  auto config = snapshotter::LoadConfig(testing::SourceDir() / "deploy" / "containerd" /
                                        "lazycrypt-snapshotter.toml");
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
